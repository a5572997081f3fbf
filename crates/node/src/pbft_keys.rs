//! PBFT key files: the real keys a PBFT node runs with (the simulator
//! derives its keys from a seed; a node must not, or any replica could
//! forge any other's messages).
//!
//! One TOML file per node (`pbft_keys` in `node.toml`), secret to that node:
//!
//! ```toml
//! node_id = 2
//! signing_key = "<64 hex digits>"         # this replica's Ed25519 secret
//! client_id = 9223372036854775810         # its proxy client (requests it receives)
//! client_signing_key = "<64 hex digits>"  # that client's Ed25519 secret
//!
//! [[replicas]]                            # every replica, this one included
//! id = 1
//! verifying_key = "<64 hex digits>"       # its Ed25519 public key
//! pairwise_key = "<64 hex digits>"        # HMAC key shared with it (absent for itself)
//!
//! [[clients]]                             # every client replicas accept requests from
//! id = 9223372036854775809
//! verifying_key = "<64 hex digits>"
//! ```
//!
//! Each pairwise key is in exactly the two files of its pair; each secret
//! signing key in one file only. [`generate`] makes a consistent set for a
//! cluster; [`load`] checks a file against the cluster it is for, naming
//! the field at fault.
//!
//! A *client key file* ([`ClientKeyFile`], `c<i>.keys`) is what one of
//! Synod's own clients (`synod kv`) needs to talk PBFT itself: its id and
//! Ed25519 secret (it signs its requests; every replica file lists its
//! public key under `[[clients]]`) and every replica's public key (it
//! checks the replicas' signed replies, [`crate::pbft_reply`]). Client ids
//! are small numbers (1, 2, ...), never a proxy's (top bit set).
//!
//! ```toml
//! client_id = 1
//! signing_key = "<64 hex digits>"
//!
//! [[replicas]]
//! id = 1
//! verifying_key = "<64 hex digits>"
//! ```

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use synod_core::{ClientId, NodeId};
use synod_pbft::{ClientKeys, Keyring, LoadedKeys};

/// The proxy client of node `id` (the client a PBFT replica signs the
/// requests it receives as): the top bit marks replica proxies.
pub fn proxy_client_id(node: u64) -> ClientId {
    ClientId((1 << 63) | node)
}

/// One `[[replicas]]` entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReplicaEntry {
    /// The replica's node id.
    pub id: u64,
    /// Its Ed25519 verifying key (hex).
    pub verifying_key: String,
    /// The HMAC key this node shares with it (hex); absent for itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairwise_key: Option<String>,
}

/// One `[[clients]]` entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// The client id.
    pub id: u64,
    /// Its Ed25519 verifying key (hex).
    pub verifying_key: String,
}

/// A key file, as written.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// The node the file belongs to.
    pub node_id: u64,
    /// Its replica signing key (hex).
    pub signing_key: String,
    /// Its proxy client's id.
    pub client_id: u64,
    /// Its proxy client's signing key (hex).
    pub client_signing_key: String,
    /// Every replica.
    pub replicas: Vec<ReplicaEntry>,
    /// Every client.
    pub clients: Vec<ClientEntry>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(field: &str, s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return Err(format!("{field}: expected 64 hex digits"));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("{field}: expected 64 hex digits"))?;
    }
    Ok(out)
}

fn public_key(field: &str, s: &str) -> Result<VerifyingKey, String> {
    VerifyingKey::from_bytes(&unhex32(field, s)?)
        .map_err(|_| format!("{field}: not an Ed25519 public key"))
}

/// A fresh, consistent set of key files for the replicas `nodes`, by node
/// (no clients of their own: see [`generate_with_clients`]).
pub fn generate(nodes: &[u64]) -> Vec<KeyFile> {
    generate_with_clients(nodes, 0).0
}

/// A fresh, consistent set of key files for the replicas `nodes` and for
/// `clients` clients (ids 1..=clients), each listed in every replica file.
pub fn generate_with_clients(nodes: &[u64], clients: u64) -> (Vec<KeyFile>, Vec<ClientKeyFile>) {
    let fresh = || SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let signing: Vec<SigningKey> = nodes.iter().map(|_| fresh()).collect();
    let proxies: Vec<SigningKey> = nodes.iter().map(|_| fresh()).collect();
    let own: Vec<SigningKey> = (0..clients).map(|_| fresh()).collect();
    let mut pairwise = HashMap::new();
    for (i, &a) in nodes.iter().enumerate() {
        for &b in &nodes[i + 1..] {
            pairwise.insert((a.min(b), a.max(b)), rand::random::<[u8; 32]>());
        }
    }
    let mut client_entries: Vec<ClientEntry> = nodes
        .iter()
        .zip(&proxies)
        .map(|(&id, k)| ClientEntry {
            id: proxy_client_id(id).0,
            verifying_key: hex(k.verifying_key().as_bytes()),
        })
        .collect();
    client_entries.extend(
        (1..=clients)
            .zip(&own)
            .map(|(id, k)| ClientEntry { id, verifying_key: hex(k.verifying_key().as_bytes()) }),
    );
    let public: Vec<ReplicaEntry> = nodes
        .iter()
        .zip(&signing)
        .map(|(&id, k)| ReplicaEntry {
            id,
            verifying_key: hex(k.verifying_key().as_bytes()),
            pairwise_key: None,
        })
        .collect();
    let client_files = (1..=clients)
        .zip(&own)
        .map(|(id, k)| ClientKeyFile {
            client_id: id,
            signing_key: hex(&k.to_bytes()),
            replicas: public.clone(),
        })
        .collect();
    let replica_files = nodes
        .iter()
        .enumerate()
        .map(|(i, &me)| KeyFile {
            node_id: me,
            signing_key: hex(&signing[i].to_bytes()),
            client_id: proxy_client_id(me).0,
            client_signing_key: hex(&proxies[i].to_bytes()),
            replicas: nodes
                .iter()
                .zip(&signing)
                .map(|(&id, k)| ReplicaEntry {
                    id,
                    verifying_key: hex(k.verifying_key().as_bytes()),
                    pairwise_key: (id != me).then(|| hex(&pairwise[&(id.min(me), id.max(me))])),
                })
                .collect(),
            clients: client_entries.clone(),
        })
        .collect();
    (replica_files, client_files)
}

/// A client key file (see the module doc), as written.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientKeyFile {
    /// The client's id (listed in every replica's `[[clients]]`).
    pub client_id: u64,
    /// Its Ed25519 signing key (hex).
    pub signing_key: String,
    /// Every replica's public key (`pairwise_key` never set).
    pub replicas: Vec<ReplicaEntry>,
}

/// A client's keys, checked ([`ClientKeyFile::keys`]).
#[derive(Clone)]
pub struct ClientIdentity {
    /// The client's id.
    pub client: ClientId,
    /// Its signing key.
    pub signing: SigningKey,
    /// Every replica's verifying key, by node id.
    pub replicas: Arc<HashMap<NodeId, VerifyingKey>>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientIdentity({}, {} replicas)", self.client, self.replicas.len())
    }
}

impl ClientKeyFile {
    /// The file's text.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("a key file serializes");
        format!(
            "# PBFT keys of client {}: secret, for this client only (`synod pbft-keys`).\n{body}",
            self.client_id
        )
    }

    /// Writes the file (mode 0600 on Unix), refusing to overwrite one.
    pub fn write_new(&self, path: &Path) -> Result<(), String> {
        write_new(path, &self.to_toml())
    }

    /// The keys of this file, checked: a client id that is not a proxy's,
    /// a valid secret, n = 3f+1 replicas (at least 4) each listed once with
    /// a valid public key.
    pub fn keys(&self) -> Result<ClientIdentity, String> {
        if self.client_id == 0 || self.client_id & (1 << 63) != 0 {
            return Err(format!(
                "client_id: {} is not a client id (1 up to 2^63-1; larger ones are the replicas' proxies)",
                self.client_id
            ));
        }
        let signing = SigningKey::from_bytes(&unhex32("signing_key", &self.signing_key)?);
        let n = self.replicas.len();
        if n < 4 || !(n - 1).is_multiple_of(3) {
            return Err(format!("replicas: {n} listed; PBFT has n = 3f+1 replicas, at least 4"));
        }
        let mut replicas = HashMap::with_capacity(n);
        for (i, r) in self.replicas.iter().enumerate() {
            let key = public_key(&format!("replicas[{i}].verifying_key"), &r.verifying_key)?;
            if replicas.insert(NodeId(r.id), key).is_some() {
                return Err(format!("replicas[{i}].id: replica {} is listed twice", r.id));
            }
        }
        Ok(ClientIdentity {
            client: ClientId(self.client_id),
            signing,
            replicas: Arc::new(replicas),
        })
    }
}

/// Reads and checks the client key file at `path`. Errors name the file
/// and the field (`pbft client key: <path>: <field>: …`).
pub fn load_client(path: &Path) -> Result<ClientIdentity, String> {
    let at = |m: String| format!("pbft client key: {}: {m}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
    let file: ClientKeyFile = toml::from_str(&text).map_err(|e| at(e.message().to_string()))?;
    file.keys().map_err(at)
}

/// Creates `path` with `text` (mode 0600 on Unix), refusing to overwrite.
fn write_new(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl KeyFile {
    /// The file's text.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("a key file serializes");
        format!(
            "# PBFT keys of node {}: secret, for this node only (`synod pbft-keys`).\n{body}",
            self.node_id
        )
    }

    /// Writes the file (mode 0600 on Unix), refusing to overwrite one.
    pub fn write_new(&self, path: &Path) -> Result<(), String> {
        write_new(path, &self.to_toml())
    }

    /// The keys of this file for node `me` of the cluster `replicas` (in
    /// the core's order), checked: every replica listed once with its key,
    /// a pairwise key for every other, this node's public key matching its
    /// secret, its proxy client listed with a matching key.
    pub fn keys(&self, me: NodeId, replicas: &[NodeId]) -> Result<LoadedKeys, String> {
        if self.node_id != me.0 {
            return Err(format!("node_id: the keys are node {}'s, not {me}'s", self.node_id));
        }
        let position = replicas
            .iter()
            .position(|&r| r == me)
            .ok_or_else(|| format!("node_id: {me} is not a replica"))?;
        let signing = SigningKey::from_bytes(&unhex32("signing_key", &self.signing_key)?);
        let mut verifying = Vec::with_capacity(replicas.len());
        let mut pairwise = Vec::with_capacity(replicas.len());
        for (j, &r) in replicas.iter().enumerate() {
            let mut found = self.replicas.iter().enumerate().filter(|(_, e)| e.id == r.0);
            let Some((i, entry)) = found.next() else {
                return Err(format!("replicas: replica {} is missing", r.0));
            };
            if found.next().is_some() {
                return Err(format!("replicas: replica {} is listed twice", r.0));
            }
            let key = public_key(&format!("replicas[{i}].verifying_key"), &entry.verifying_key)?;
            if j == position {
                if key != signing.verifying_key() {
                    return Err(format!("replicas[{i}].verifying_key: does not match signing_key"));
                }
                pairwise.push([0; 32]);
            } else {
                let field = format!("replicas[{i}].pairwise_key");
                let Some(k) = &entry.pairwise_key else {
                    return Err(format!("{field}: missing"));
                };
                pairwise.push(unhex32(&field, k)?);
            }
            verifying.push(key);
        }
        if self.replicas.len() != replicas.len() {
            return Err(format!(
                "replicas: {} listed, the cluster has {}",
                self.replicas.len(),
                replicas.len()
            ));
        }
        let mut clients = HashMap::with_capacity(self.clients.len());
        for (i, c) in self.clients.iter().enumerate() {
            let key = public_key(&format!("clients[{i}].verifying_key"), &c.verifying_key)?;
            if clients.insert(ClientId(c.id), key).is_some() {
                return Err(format!("clients[{i}].id: {} is listed twice", c.id));
            }
        }
        let client_key =
            SigningKey::from_bytes(&unhex32("client_signing_key", &self.client_signing_key)?);
        if clients.get(&ClientId(self.client_id)) != Some(&client_key.verifying_key()) {
            return Err(format!(
                "client_id: client {} is not listed in clients with client_signing_key's public key",
                self.client_id
            ));
        }
        Ok(LoadedKeys {
            keyring: Arc::new(Keyring::new(position, signing, verifying, &pairwise)),
            clients: ClientKeys::Listed(Arc::new(clients)),
            proxy: Some((ClientId(self.client_id), client_key)),
        })
    }
}

/// Reads and checks the key file at `path` for node `me` of `replicas`.
/// Errors name the file and the field (`pbft_keys: <path>: <field>: …`).
pub fn load(path: &Path, me: NodeId, replicas: &[NodeId]) -> Result<LoadedKeys, String> {
    let at = |m: String| format!("pbft_keys: {}: {m}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
    let file: KeyFile = toml::from_str(&text).map_err(|e| at(e.message().to_string()))?;
    file.keys(me, replicas).map_err(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_pbft::Digest;

    fn ids() -> Vec<NodeId> {
        (1..=4).map(NodeId).collect()
    }

    #[test]
    fn a_generated_set_loads_and_its_pairs_agree() {
        let files = generate(&[1, 2, 3, 4]);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rings = Vec::new();
        for f in &files {
            let path = dir.path().join(format!("n{}.toml", f.node_id));
            f.write_new(&path).expect("write");
            assert!(f.write_new(&path).is_err(), "never overwritten");
            rings.push(load(&path, NodeId(f.node_id), &ids()).expect("load"));
        }
        let header = [7u8; 65];
        // Replica 0's MAC to 2 verifies at 2, and only there.
        let mac = rings[0].keyring.mac(2, &header);
        assert!(rings[2].keyring.check_mac(0, &header, &mac));
        assert!(!rings[3].keyring.check_mac(0, &header, &mac));
        // Signatures verify everywhere; one replica cannot sign as another.
        let d = Digest::of(b"x");
        let sig = rings[1].keyring.sign(&d);
        assert!(rings[3].keyring.check_signature(1, &d, &sig));
        assert!(!rings[3].keyring.check_signature(0, &d, &sig));
        // Each file knows every proxy client; the secrets differ.
        assert_eq!(rings[0].proxy.as_ref().map(|p| p.0), Some(proxy_client_id(1)));
        assert_ne!(files[0].signing_key, files[1].signing_key);
        assert!(files[0].replicas[0].pairwise_key.is_none());
        assert_eq!(files[0].replicas[1].pairwise_key, files[1].replicas[0].pairwise_key);
        assert_ne!(files[0].replicas[2].pairwise_key, files[1].replicas[2].pairwise_key);
    }

    #[test]
    fn client_files_sign_what_every_replica_accepts_and_know_every_replica() {
        let (replicas, clients) = generate_with_clients(&[1, 2, 3, 4], 2);
        assert_eq!(clients.len(), 2);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c2.keys");
        clients[1].write_new(&path).expect("write");
        assert!(clients[1].write_new(&path).is_err(), "never overwritten");
        let c = load_client(&path).expect("load");
        assert_eq!(c.client, ClientId(2));
        let ring = replicas[2].keys(NodeId(3), &ids()).expect("replica keys");
        let mut check = synod_pbft::request::RequestCheck::new(ring.clients.clone());
        let signed = synod_pbft::request::sign_command(
            &c.signing,
            synod_core::Command::new(c.client, 7, &b"op"[..]),
        );
        assert!(check.check(&signed), "every replica knows the client's public key");
        let d = Digest::of(b"reply");
        assert!(c.replicas[&NodeId(3)].verify_strict(&d.0, &ring.keyring.sign(&d)).is_ok());
        assert_eq!(c.replicas.len(), 4);
        assert!(clients[0].replicas.iter().all(|r| r.pairwise_key.is_none()), "no secrets");
        // A bad client file names its field.
        let bad = [
            (ClientKeyFile { client_id: 1 << 63, ..clients[0].clone() }, "client_id"),
            (ClientKeyFile { signing_key: "x".into(), ..clients[0].clone() }, "signing_key"),
            (
                ClientKeyFile { replicas: clients[0].replicas[..3].to_vec(), ..clients[0].clone() },
                "3f+1",
            ),
        ];
        for (file, want) in bad {
            let err = file.keys().expect_err(want);
            assert!(err.contains(want), "{err} (wanted {want})");
        }
        let err = load_client(&dir.path().join("missing.keys")).expect_err("no file");
        assert!(err.starts_with("pbft client key: ") && err.contains("missing.keys"), "{err}");
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_field() {
        let f = generate(&[1, 2, 3, 4]).remove(1);
        let cases: Vec<(KeyFile, &str)> = vec![
            (KeyFile { node_id: 3, ..f.clone() }, "node_id"),
            (KeyFile { signing_key: "zz".into(), ..f.clone() }, "signing_key: expected"),
            (
                KeyFile { signing_key: generate(&[2])[0].signing_key.clone(), ..f.clone() },
                "does not match",
            ),
            (
                KeyFile { replicas: f.replicas[..3].to_vec(), ..f.clone() },
                "replicas: replica 4 is missing",
            ),
            (
                {
                    let mut g = f.clone();
                    g.replicas[0].pairwise_key = None;
                    g
                },
                "replicas[0].pairwise_key: missing",
            ),
            (KeyFile { client_id: 5, ..f.clone() }, "client_id"),
        ];
        for (file, want) in cases {
            let err = file.keys(NodeId(2), &ids()).expect_err(want);
            assert!(err.contains(want), "{err} (wanted {want})");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "node_id = 1\nbogus = 2\n").expect("write");
        let err = load(&path, NodeId(1), &ids()).expect_err("unknown field");
        assert!(err.starts_with("pbft_keys: ") && err.contains("bogus"), "{err}");
    }
}
