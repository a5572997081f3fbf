//! [`NodeConfig`]: the TOML file `synod serve --config` reads. Unknown keys
//! are errors; every error names its field. Relative paths are relative to
//! the config file's directory.
//!
//! ```toml
//! node_id = 1
//! cluster_name = "synod-local"        # optional; peers must agree
//! protocol = "raft"                   # optional: raft (default), paxos or pbft
//! pbft_keys = "n1.keys"               # PBFT only: this node's key file
//! data_dir = "n1"
//! secret_file = "secret"              # the cluster secret (>= 16 bytes)
//! metrics_addr = "127.0.0.1:2381"     # optional: /metrics and /health
//!
//! auto_compaction_mode = "periodic"   # optional (default off): revision or periodic
//! auto_compaction_retention = "1h"    # revisions kept, or how long (etcd's flags)
//!
//! [timeouts]                          # optional, these are the defaults
//! election_min_ms = 150
//! election_max_ms = 300
//! heartbeat_ms = 50
//! request_ms = 5000
//! max_clock_skew_ms = 1000            # PBFT only: δ of the agreed clock (below)
//!
//! [[members]]                         # every member, this node included
//! id = 1
//! peer_addr = "127.0.0.1:2380"
//! client_addr = "127.0.0.1:2379"
//! ```
//!
//! A node added to a running Raft cluster (`synod member add`; etcd's
//! `initial-cluster-state=existing`) sets `join = true` and lists itself
//! with the id `member add` printed plus at least one existing member: it
//! starts as a non-voting, non-campaigning node with an empty log and learns
//! the real membership (and every member's address) from the leader's log or
//! snapshot. Once it has data, `join` changes nothing.
//!
//! `timeouts.max_clock_skew_ms` (PBFT only; an error with another protocol)
//! is δ of PBFT's agreed clock ([`synod_pbft::Config::max_clock_skew`]): a
//! backup PREPAREs a batch only if the primary's timestamp is within δ of
//! its own clock. It must cover the skew between the replicas' (NTP
//! synchronised) wall clocks plus a PRE-PREPARE's delay, so it may not be
//! below `heartbeat_ms` (a PRE-PREPARE a backup missed is retransmitted
//! after a STATUS, one heartbeat later: with a smaller δ every
//! retransmitted one would be refused). A Byzantine primary can move the
//! agreed clock δ ahead of a correct replica's, expiring a lease up to δ
//! early, so δ must be below the shortest lease TTL (2 s): every lease then
//! lives a while. δ is not tied to the view-change timeout (twice
//! `election_max_ms`): a backup's check compares a timestamp with its own
//! clock and involves no timer, and a primary whose batches are refused is
//! replaced when that timeout expires, whatever δ is.

use crate::glue::ProtocolSettings;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The protocols `protocol` accepts.
pub const PROTOCOLS: &[&str] = &["raft", "paxos", "pbft"];

/// A config that does not parse or does not make sense; names its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The config file.
    pub path: String,
    /// What is wrong, naming the field.
    pub message: String,
}

/// `[timeouts]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Lower bound of the randomized election timeout.
    pub election_min_ms: u64,
    /// Upper bound (exclusive) of the election timeout.
    pub election_max_ms: u64,
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// How long a client request may wait for a leader and an answer.
    pub request_ms: u64,
    /// PBFT only: δ, how far a primary's batch timestamp may be from a
    /// backup's clock for the backup to PREPARE it (absent:
    /// [`DEFAULT_MAX_CLOCK_SKEW_MS`]).
    pub max_clock_skew_ms: Option<u64>,
}

/// δ when `timeouts.max_clock_skew_ms` is absent: the PBFT core's default.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 1000;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            election_min_ms: 150,
            election_max_ms: 300,
            heartbeat_ms: 50,
            request_ms: 5000,
            max_clock_skew_ms: None,
        }
    }
}

/// One `[[members]]` entry.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// The member's id (> 0, unique).
    pub id: u64,
    /// Where it listens for peers.
    pub peer_addr: SocketAddr,
    /// Where it listens for clients (etcd v3 gRPC).
    pub client_addr: SocketAddr,
}

/// The whole file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id; must be one of `members`.
    pub node_id: u64,
    /// The cluster's name; the peer handshake refuses another.
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,
    /// The consensus protocol.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// The data directory (log, hard state, snapshots).
    pub data_dir: PathBuf,
    /// A file holding the cluster secret.
    pub secret_file: PathBuf,
    /// PBFT: this node's key file ([`crate::pbft_keys`]).
    #[serde(default)]
    pub pbft_keys: Option<PathBuf>,
    /// PBFT: a snapshot (and a compaction of the journal) every this many
    /// sequence numbers, a multiple of 128 (absent: 1024). Raft and Paxos
    /// use `snapshot_interval_entries`.
    #[serde(default)]
    pub pbft_snapshot_interval: Option<u64>,
    /// Address of the HTTP `/metrics` and `/health` endpoint, if any.
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    /// Take a snapshot every this many applied entries (0: never).
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval_entries: u64,
    /// etcd's `--auto-compaction-mode`: `"revision"` or `"periodic"`
    /// (absent: no auto-compaction, etcd 3.4's default); see
    /// [`crate::compactor`].
    #[serde(default)]
    pub auto_compaction_mode: Option<String>,
    /// etcd's `--auto-compaction-retention`: revisions kept (revision
    /// mode), or how long (periodic: `"1h"`, `"30m"`, or a number of hours).
    #[serde(default)]
    pub auto_compaction_retention: Option<crate::compactor::Retention>,
    /// This node joins a running cluster (added with `member add`) rather
    /// than founding one with `members` as its voters.
    #[serde(default)]
    pub join: bool,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Every member, this node included.
    pub members: Vec<MemberConfig>,
}

fn default_cluster_name() -> String {
    "synod".to_string()
}

fn default_protocol() -> String {
    "raft".to_string()
}

fn default_snapshot_interval() -> u64 {
    10_000
}

impl NodeConfig {
    /// Reads and checks the file at `path`; relative paths in it are
    /// resolved against its directory.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let err = |message: String| ConfigError { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let mut config = NodeConfig::parse(&text).map_err(err)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if config.data_dir.is_relative() {
            config.data_dir = base.join(&config.data_dir);
        }
        if config.secret_file.is_relative() {
            config.secret_file = base.join(&config.secret_file);
        }
        if let Some(keys) = config.pbft_keys.as_mut().filter(|k| k.is_relative()) {
            *keys = base.join(&*keys);
        }
        Ok(config)
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<NodeConfig, String> {
        let config: NodeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_id == 0 {
            return Err("node_id: must be at least 1".into());
        }
        if self.cluster_name.is_empty() || self.cluster_name.len() > 255 {
            return Err("cluster_name: must be 1 to 255 bytes".into());
        }
        if !PROTOCOLS.contains(&self.protocol.as_str()) {
            return Err(format!(
                "protocol: unknown protocol `{}` (expected one of: {})",
                self.protocol,
                PROTOCOLS.join(", ")
            ));
        }
        if self.members.is_empty() {
            return Err("members: at least one member is needed".into());
        }
        if self.protocol == "pbft" {
            let n = self.members.len();
            if n < 4 || !(n - 1).is_multiple_of(3) {
                return Err(format!(
                    "members: PBFT needs n = 3f+1 members, at least 4 ({n} listed)"
                ));
            }
            if self.pbft_keys.is_none() {
                return Err("pbft_keys: required with protocol = \"pbft\" (`synod pbft-keys` writes the files)".into());
            }
            if self.join {
                return Err("join: PBFT has no membership changes".into());
            }
        } else if self.pbft_keys.is_some() {
            return Err(format!(
                "pbft_keys: only for protocol = \"pbft\", not `{}`",
                self.protocol
            ));
        }
        let mut ids = std::collections::HashSet::new();
        let mut addrs = std::collections::HashSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if m.id == 0 {
                return Err(format!("members[{i}].id: must be at least 1"));
            }
            if !ids.insert(m.id) {
                return Err(format!("members[{i}].id: {} is listed twice", m.id));
            }
            for (field, addr) in [("peer_addr", m.peer_addr), ("client_addr", m.client_addr)] {
                if !addrs.insert(addr) {
                    return Err(format!("members[{i}].{field}: {addr} is used twice"));
                }
            }
        }
        if !ids.contains(&self.node_id) {
            return Err(format!("node_id: {} is not one of the members", self.node_id));
        }
        if self.join && self.members.len() < 2 {
            return Err("join: list at least one existing member besides this node".into());
        }
        let t = &self.timeouts;
        if t.election_min_ms == 0 {
            return Err("timeouts.election_min_ms: must be at least 1".into());
        }
        if t.election_max_ms <= t.election_min_ms {
            return Err("timeouts.election_max_ms: must exceed election_min_ms".into());
        }
        if t.heartbeat_ms == 0 || t.heartbeat_ms >= t.election_min_ms {
            return Err(
                "timeouts.heartbeat_ms: must be at least 1 and below election_min_ms".into()
            );
        }
        if t.request_ms == 0 {
            return Err("timeouts.request_ms: must be at least 1".into());
        }
        self.check_clock_skew()?;
        self.auto_compaction()?;
        Ok(())
    }

    /// Checks `timeouts.max_clock_skew_ms` (see the module doc for why
    /// these bounds).
    fn check_clock_skew(&self) -> Result<(), String> {
        let t = &self.timeouts;
        if self.protocol != "pbft" {
            if t.max_clock_skew_ms.is_some() {
                return Err(format!(
                    "timeouts.max_clock_skew_ms: only for protocol = \"pbft\", not `{}`",
                    self.protocol
                ));
            }
            return Ok(());
        }
        let skew_ms = t.max_clock_skew_ms.unwrap_or(DEFAULT_MAX_CLOCK_SKEW_MS);
        let which = if t.max_clock_skew_ms.is_some() { "" } else { " (the default)" };
        if skew_ms == 0 || skew_ms < t.heartbeat_ms {
            return Err(format!(
                "timeouts.max_clock_skew_ms: {skew_ms}{which} must be at least heartbeat_ms \
                 ({} ms): a retransmitted PRE-PREPARE arrives a heartbeat late",
                t.heartbeat_ms
            ));
        }
        let min_lease_ms = u64::try_from(synod_kv::KvConfig::default().min_lease_ttl_secs)
            .unwrap_or(0)
            .saturating_mul(1000);
        if skew_ms >= min_lease_ms {
            return Err(format!(
                "timeouts.max_clock_skew_ms: {skew_ms}{which} must be below the shortest \
                 lease TTL ({min_lease_ms} ms): a faulty primary can expire a lease δ early"
            ));
        }
        Ok(())
    }

    /// The auto-compaction policy (`auto_compaction_mode` and
    /// `auto_compaction_retention`).
    pub fn auto_compaction(&self) -> Result<crate::compactor::AutoCompaction, String> {
        let retention = self.auto_compaction_retention.as_ref().map(|r| r.text());
        crate::compactor::AutoCompaction::parse(
            self.auto_compaction_mode.as_deref(),
            retention.as_deref(),
        )
    }

    /// The voters the node starts from: every member, or, for a node that
    /// joins, every member but itself (so it never campaigns before the
    /// cluster's log tells it the membership).
    pub fn bootstrap_voters(&self) -> Vec<u64> {
        let me = self.node_id;
        self.members.iter().map(|m| m.id).filter(|&id| !self.join || id != me).collect()
    }

    /// This node's `[[members]]` entry.
    pub fn me(&self) -> &MemberConfig {
        self.members.iter().find(|m| m.id == self.node_id).expect("validated: node_id is a member")
    }

    /// The protocol settings.
    pub fn protocol_settings(&self) -> ProtocolSettings {
        let t = &self.timeouts;
        ProtocolSettings {
            election_timeout_min: Duration::from_millis(t.election_min_ms),
            election_timeout_max: Duration::from_millis(t.election_max_ms),
            heartbeat_interval: Duration::from_millis(t.heartbeat_ms),
            max_clock_skew: Duration::from_millis(
                t.max_clock_skew_ms.unwrap_or(DEFAULT_MAX_CLOCK_SKEW_MS),
            ),
            snapshot_interval_entries: self.snapshot_interval_entries,
            pbft_keys: self.pbft_keys.clone().map(|p| (synod_core::NodeId(self.node_id), p)),
            pbft_snapshot_interval: self.pbft_snapshot_interval,
        }
    }

    /// The cluster id in response headers: a stable hash of the name (FNV-1a).
    pub fn cluster_id(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.cluster_name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = 2
data_dir = "n2"
secret_file = "secret"
[[members]]
id = 1
peer_addr = "127.0.0.1:2380"
client_addr = "127.0.0.1:2379"
[[members]]
id = 2
peer_addr = "127.0.0.1:2390"
client_addr = "127.0.0.1:2389"
"#;

    #[test]
    fn a_minimal_config_gets_the_defaults() {
        let c = NodeConfig::parse(GOOD).expect("valid");
        assert_eq!(c.protocol, "raft");
        assert_eq!(c.timeouts, Timeouts::default());
        assert_eq!(c.me().client_addr, "127.0.0.1:2389".parse().expect("addr"));
        assert_eq!(c.cluster_id(), NodeConfig::parse(GOOD).expect("valid").cluster_id());
        assert_eq!(c.bootstrap_voters(), vec![1, 2]);
        let joining = NodeConfig::parse(&GOOD.replace("node_id = 2", "node_id = 2\njoin = true"))
            .expect("valid");
        assert_eq!(joining.bootstrap_voters(), vec![1], "a joining node is not a voter");
    }

    /// A four-member PBFT config, `timeouts` appended.
    fn pbft(timeouts: &str) -> String {
        let mut text = "node_id = 1\nprotocol = \"pbft\"\npbft_keys = \"n1.keys\"\n\
                        data_dir = \"n1\"\nsecret_file = \"secret\"\n"
            .to_string();
        for i in 1..=4 {
            text.push_str(&format!(
                "[[members]]\nid = {i}\npeer_addr = \"127.0.0.1:{}\"\n\
                 client_addr = \"127.0.0.1:{}\"\n",
                2380 + 10 * i,
                2379 + 10 * i
            ));
        }
        format!("{text}[timeouts]\n{timeouts}")
    }

    #[test]
    fn the_pbft_clock_skew_is_read_defaulted_and_bounded() {
        let skew =
            |text: &str| NodeConfig::parse(text).map(|c| c.protocol_settings().max_clock_skew);
        assert_eq!(skew(&pbft("")), Ok(Duration::from_millis(DEFAULT_MAX_CLOCK_SKEW_MS)));
        assert_eq!(skew(&pbft("max_clock_skew_ms = 250\n")), Ok(Duration::from_millis(250)));
        assert_eq!(skew(&pbft("max_clock_skew_ms = 50\n")), Ok(Duration::from_millis(50)));
        assert_eq!(skew(&pbft("max_clock_skew_ms = 1999\n")), Ok(Duration::from_millis(1999)));
        assert_eq!(
            DEFAULT_MAX_CLOCK_SKEW_MS,
            u64::try_from(synod_pbft::Config::new(vec![]).max_clock_skew.as_millis())
                .expect("small"),
            "the node's default is the core's"
        );
        let refused = [
            pbft("max_clock_skew_ms = 0\n"),
            pbft("max_clock_skew_ms = 49\n"),
            pbft("max_clock_skew_ms = 2000\n"),
            pbft("max_clock_skew_ms = 3600000\n"),
            pbft("max_clock_skew_ms = -5\n"),
            pbft("max_clock_skew_ms = \"1s\"\n"),
            // The default δ (1 s) is below a 1.5 s heartbeat: refused too.
            pbft("election_min_ms = 3000\nelection_max_ms = 6000\nheartbeat_ms = 1500\n"),
            format!("{GOOD}[timeouts]\nmax_clock_skew_ms = 500\n"),
        ];
        for text in refused {
            let err = NodeConfig::parse(&text).expect_err(&text);
            assert!(err.contains("max_clock_skew_ms"), "does not name the field: {err}");
        }
    }

    #[test]
    fn every_error_names_its_field() {
        let cases = [
            (GOOD.replace("node_id = 2", "node_id = 3"), "node_id"),
            (GOOD.replace("node_id = 2", "node_id = 2\nbogus = 1"), "bogus"),
            (GOOD.replace("data_dir = \"n2\"\n", ""), "data_dir"),
            (GOOD.replace("node_id = 2", "node_id = 2\nprotocol = \"zab\""), "protocol"),
            (GOOD.replace("id = 1\n", "id = 2\n"), "members[1].id"),
            (GOOD.replace("127.0.0.1:2390", "127.0.0.1:2380"), "members[1].peer_addr"),
            (GOOD.replace("127.0.0.1:2389", "nowhere"), "client_addr"),
            (format!("{GOOD}[timeouts]\nelection_max_ms = 100\n"), "timeouts.election_max_ms"),
            (format!("{GOOD}[timeouts]\nheartbeat_ms = 500\n"), "timeouts.heartbeat_ms"),
            (
                GOOD.replace("[[members]]\nid = 1\npeer_addr = \"127.0.0.1:2380\"\nclient_addr = \"127.0.0.1:2379\"\n", "")
                    .replace("node_id = 2", "node_id = 2\njoin = true"),
                "join",
            ),
        ];
        for (text, field) in cases {
            let err = NodeConfig::parse(&text).expect_err(field);
            assert!(err.contains(field), "error for {field} does not name it: {err}");
        }
    }
}
