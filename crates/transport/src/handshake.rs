//! The connection handshake: both ends prove, with the cluster secret, that
//! they belong to the same cluster and are the node they claim to be.
//!
//! ```text
//! initiator I                                   acceptor A
//!   Hello { cluster_id, from: I, to: A, nonce_i }  ──▶  checks cluster id, that I is a
//!                                                       known peer and that `to` is A
//!   ◀──  Challenge { nonce_a }
//!   Proof { mac_i }  ──▶                                verifies mac_i (constant time)
//!   ◀──  Welcome { mac_a }
//! verifies mac_a; the connection now carries Data frames from I to A only.
//!
//! mac_r = HMAC-SHA256(secret, "synod-transport/v1 handshake" || r ||
//!                     len(cluster_id) || cluster_id || I (u64 BE) || A (u64 BE) ||
//!                     nonce_i || nonce_a)        with r = b'I' or b'A'
//! ```
//!
//! Both nonces are 32 fresh random bytes, so a recorded handshake cannot be
//! replayed; the role byte keeps one side's MAC from being reflected as the
//! other's; the initiator proves itself first, so the acceptor reveals no MAC
//! to a stranger. Payload layouts (all integers big-endian):
//!
//! - Hello: `cluster_len: u8, cluster_id, from: u64, to: u64, nonce: [u8; 32]`
//! - Challenge: `nonce: [u8; 32]`
//! - Proof, Welcome: `mac: [u8; 32]`
//!
//! A refusal is a closed connection (the refused side learns nothing about
//! why); the refusing side logs the reason with `tracing::warn!`.

use crate::frame::{FrameError, FrameKind, FrameReader, ReadError, write_frame};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::fmt;
use std::io;
use synod_core::NodeId;
use tokio::io::{AsyncRead, AsyncWrite};

/// Bytes of a challenge nonce.
pub const NONCE_BYTES: usize = 32;

/// Bytes of an HMAC-SHA256 tag.
pub const MAC_BYTES: usize = 32;

/// The largest frame accepted before a connection is authenticated: a
/// stranger cannot make this node buffer more than this.
pub const HANDSHAKE_MAX_FRAME_BYTES: u32 = 1024;

const MAC_DOMAIN: &[u8] = b"synod-transport/v1 handshake";
const ROLE_INITIATOR: u8 = b'I';
const ROLE_ACCEPTOR: u8 = b'A';

type HmacSha256 = Hmac<Sha256>;
type Nonce = [u8; NONCE_BYTES];

/// What a node proves itself with.
#[derive(Clone)]
pub struct Credentials {
    /// This node's id.
    pub node_id: NodeId,
    /// The cluster id, at most 255 bytes.
    pub cluster_id: Vec<u8>,
    /// The cluster secret.
    pub secret: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("node_id", &self.node_id)
            .field("cluster_id", &String::from_utf8_lossy(&self.cluster_id))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// A frame was malformed or oversized.
    #[error("malformed frame: {0}")]
    Frame(FrameError),
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The other side closed the connection (a refusal looks like this).
    #[error("connection closed during the handshake")]
    Closed,
    /// The handshake did not finish in time.
    #[error("handshake timed out after {0} ms")]
    Timeout(u64),
    /// A well-formed frame of the wrong kind for this step.
    #[error("expected a {expected:?} frame, got {got:?}")]
    UnexpectedKind {
        /// The kind this step needs.
        expected: FrameKind,
        /// The kind received.
        got: FrameKind,
    },
    /// A handshake payload of the wrong shape.
    #[error("malformed {0} payload")]
    Malformed(&'static str),
    /// The peer belongs to another cluster.
    #[error("wrong cluster id {got:?}")]
    WrongCluster {
        /// The cluster id the peer sent (lossy UTF-8).
        got: String,
    },
    /// The peer's node id is not a member.
    #[error("unknown node id {0}")]
    UnknownNode(NodeId),
    /// The peer meant to reach another node.
    #[error("hello addressed to {0}, not to this node")]
    WrongTarget(NodeId),
    /// The peer's MAC did not verify: it does not know the secret.
    #[error("{0} failed to prove the cluster secret (wrong secret?)")]
    BadMac(NodeId),
}

/// How a failed handshake is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Bytes that are not a valid frame: counted as a bad frame.
    BadFrame,
    /// The peer was refused (wrong cluster, unknown node, wrong secret, a
    /// protocol violation): counted as a refused handshake, logged as a warning.
    Refused,
    /// The connection broke or stalled: counted as a failed handshake.
    Broken,
}

impl HandshakeError {
    /// How this error is counted.
    pub fn failure(&self) -> Failure {
        match self {
            HandshakeError::Frame(_) => Failure::BadFrame,
            HandshakeError::Io(_) | HandshakeError::Closed | HandshakeError::Timeout(_) => {
                Failure::Broken
            }
            HandshakeError::UnexpectedKind { .. }
            | HandshakeError::Malformed(_)
            | HandshakeError::WrongCluster { .. }
            | HandshakeError::UnknownNode(_)
            | HandshakeError::WrongTarget(_)
            | HandshakeError::BadMac(_) => Failure::Refused,
        }
    }
}

impl From<ReadError> for HandshakeError {
    fn from(error: ReadError) -> HandshakeError {
        match error {
            ReadError::Frame(frame) => HandshakeError::Frame(frame),
            ReadError::Io(io) => HandshakeError::Io(io),
        }
    }
}

/// The first message, initiator → acceptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The initiator's cluster id.
    pub cluster_id: Vec<u8>,
    /// The initiator.
    pub from: NodeId,
    /// The node the initiator means to reach.
    pub to: NodeId,
    /// The initiator's challenge.
    pub nonce: Nonce,
}

impl Hello {
    /// The wire payload. Panics if the cluster id is over 255 bytes (the
    /// configuration is validated first).
    pub fn encode(&self) -> Vec<u8> {
        let cluster_len =
            u8::try_from(self.cluster_id.len()).expect("cluster id validated to 255 bytes");
        let mut out = Vec::with_capacity(1 + self.cluster_id.len() + 16 + NONCE_BYTES);
        out.push(cluster_len);
        out.extend_from_slice(&self.cluster_id);
        out.extend_from_slice(&self.from.0.to_be_bytes());
        out.extend_from_slice(&self.to.0.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out
    }

    /// Parses a payload; the layout must match exactly.
    pub fn parse(payload: &[u8]) -> Result<Hello, HandshakeError> {
        let (&cluster_len, rest) =
            payload.split_first().ok_or(HandshakeError::Malformed("Hello"))?;
        let cluster_len = cluster_len as usize;
        if rest.len() != cluster_len + 16 + NONCE_BYTES {
            return Err(HandshakeError::Malformed("Hello"));
        }
        let (cluster_id, rest) = rest.split_at(cluster_len);
        let (from, rest) = rest.split_at(8);
        let (to, nonce) = rest.split_at(8);
        let from: [u8; 8] = from.try_into().map_err(|_| HandshakeError::Malformed("Hello"))?;
        let to: [u8; 8] = to.try_into().map_err(|_| HandshakeError::Malformed("Hello"))?;
        Ok(Hello {
            cluster_id: cluster_id.to_vec(),
            from: NodeId(u64::from_be_bytes(from)),
            to: NodeId(u64::from_be_bytes(to)),
            nonce: nonce.try_into().map_err(|_| HandshakeError::Malformed("Hello"))?,
        })
    }
}

/// The transcript both MACs cover, differing only in the role byte.
struct Transcript<'a> {
    cluster_id: &'a [u8],
    initiator: NodeId,
    acceptor: NodeId,
    nonce_initiator: &'a Nonce,
    nonce_acceptor: &'a Nonce,
}

impl Transcript<'_> {
    fn mac(&self, secret: &[u8], role: u8) -> HmacSha256 {
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        mac.update(MAC_DOMAIN);
        mac.update(&[role]);
        mac.update(&[self.cluster_id.len() as u8]);
        mac.update(self.cluster_id);
        mac.update(&self.initiator.0.to_be_bytes());
        mac.update(&self.acceptor.0.to_be_bytes());
        mac.update(self.nonce_initiator);
        mac.update(self.nonce_acceptor);
        mac
    }

    fn tag(&self, secret: &[u8], role: u8) -> [u8; MAC_BYTES] {
        self.mac(secret, role).finalize().into_bytes().into()
    }

    /// Constant-time check of a received tag.
    fn verify(&self, secret: &[u8], role: u8, tag: &[u8]) -> bool {
        self.mac(secret, role).verify_slice(tag).is_ok()
    }
}

fn fresh_nonce() -> Nonce {
    let mut nonce = [0; NONCE_BYTES];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

async fn expect_frame<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    expected: FrameKind,
) -> Result<bytes::Bytes, HandshakeError> {
    match reader.next_frame().await? {
        None => Err(HandshakeError::Closed),
        Some(frame) if frame.kind == expected => Ok(frame.payload),
        Some(frame) => Err(HandshakeError::UnexpectedKind { expected, got: frame.kind }),
    }
}

/// Runs the initiator's side against `peer`. On success the connection is
/// authenticated both ways. The caller bounds it with a timeout.
pub async fn initiate<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut W,
    local: &Credentials,
    peer: NodeId,
) -> Result<(), HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let nonce_initiator = fresh_nonce();
    let hello = Hello {
        cluster_id: local.cluster_id.clone(),
        from: local.node_id,
        to: peer,
        nonce: nonce_initiator,
    };
    write_frame(writer, FrameKind::Hello, &hello.encode()).await?;

    let challenge = expect_frame(reader, FrameKind::Challenge).await?;
    let nonce_acceptor: Nonce =
        challenge[..].try_into().map_err(|_| HandshakeError::Malformed("Challenge"))?;
    let transcript = Transcript {
        cluster_id: &local.cluster_id,
        initiator: local.node_id,
        acceptor: peer,
        nonce_initiator: &nonce_initiator,
        nonce_acceptor: &nonce_acceptor,
    };
    write_frame(writer, FrameKind::Proof, &transcript.tag(&local.secret, ROLE_INITIATOR)).await?;

    let welcome = expect_frame(reader, FrameKind::Welcome).await?;
    if welcome.len() != MAC_BYTES {
        return Err(HandshakeError::Malformed("Welcome"));
    }
    if !transcript.verify(&local.secret, ROLE_ACCEPTOR, &welcome) {
        return Err(HandshakeError::BadMac(peer));
    }
    Ok(())
}

/// Runs the acceptor's side; `is_member` says whether a node id may connect.
/// Returns the authenticated peer's id. The caller bounds it with a timeout.
pub async fn accept<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut W,
    local: &Credentials,
    is_member: impl Fn(NodeId) -> bool,
) -> Result<NodeId, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let hello = Hello::parse(&expect_frame(reader, FrameKind::Hello).await?)?;
    if hello.cluster_id != local.cluster_id {
        return Err(HandshakeError::WrongCluster {
            got: String::from_utf8_lossy(&hello.cluster_id).into_owned(),
        });
    }
    if !is_member(hello.from) {
        return Err(HandshakeError::UnknownNode(hello.from));
    }
    if hello.to != local.node_id {
        return Err(HandshakeError::WrongTarget(hello.to));
    }

    let nonce_acceptor = fresh_nonce();
    write_frame(writer, FrameKind::Challenge, &nonce_acceptor).await?;
    let transcript = Transcript {
        cluster_id: &local.cluster_id,
        initiator: hello.from,
        acceptor: local.node_id,
        nonce_initiator: &hello.nonce,
        nonce_acceptor: &nonce_acceptor,
    };

    let proof = expect_frame(reader, FrameKind::Proof).await?;
    if proof.len() != MAC_BYTES {
        return Err(HandshakeError::Malformed("Proof"));
    }
    if !transcript.verify(&local.secret, ROLE_INITIATOR, &proof) {
        return Err(HandshakeError::BadMac(hello.from));
    }
    write_frame(writer, FrameKind::Welcome, &transcript.tag(&local.secret, ROLE_ACCEPTOR)).await?;
    Ok(hello.from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::{DuplexStream, ReadHalf, WriteHalf, split};

    fn credentials(node: u64, cluster: &str, secret: &[u8]) -> Credentials {
        Credentials {
            node_id: NodeId(node),
            cluster_id: cluster.as_bytes().to_vec(),
            secret: secret.to_vec(),
        }
    }

    type Ends = (FrameReader<ReadHalf<DuplexStream>>, WriteHalf<DuplexStream>);

    fn pipe() -> (Ends, Ends) {
        let (a, b) = tokio::io::duplex(4096);
        let (a_read, a_write) = split(a);
        let (b_read, b_write) = split(b);
        (
            (FrameReader::new(a_read, HANDSHAKE_MAX_FRAME_BYTES), a_write),
            (FrameReader::new(b_read, HANDSHAKE_MAX_FRAME_BYTES), b_write),
        )
    }

    /// Runs both sides; the acceptor knows nodes 1..=3.
    async fn run(
        initiator: Credentials,
        target: NodeId,
        acceptor: Credentials,
    ) -> (Result<(), HandshakeError>, Result<NodeId, HandshakeError>) {
        let ((mut ir, mut iw), (mut ar, mut aw)) = pipe();
        let accepting = async move {
            let result = accept(&mut ar, &mut aw, &acceptor, |id| (1..=3).contains(&id.0)).await;
            drop((ar, aw)); // a refusal closes the connection
            result
        };
        tokio::join!(initiate(&mut ir, &mut iw, &initiator, target), accepting)
    }

    #[tokio::test]
    async fn members_with_the_secret_authenticate_each_other() {
        let (i, a) = run(credentials(1, "c", b"s"), NodeId(2), credentials(2, "c", b"s")).await;
        assert!(i.is_ok(), "{i:?}");
        assert_eq!(a.unwrap(), NodeId(1));
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_by_the_acceptor() {
        let (i, a) = run(credentials(1, "c", b"bad"), NodeId(2), credentials(2, "c", b"s")).await;
        assert!(matches!(a, Err(HandshakeError::BadMac(NodeId(1)))), "{a:?}");
        assert_eq!(i.unwrap_err().failure(), Failure::Broken);
    }

    #[tokio::test]
    async fn wrong_cluster_unknown_node_and_wrong_target_are_refused() {
        let (_, a) = run(credentials(1, "other", b"s"), NodeId(2), credentials(2, "c", b"s")).await;
        assert!(
            matches!(a, Err(HandshakeError::WrongCluster { ref got }) if got == "other"),
            "{a:?}"
        );
        let (_, a) = run(credentials(9, "c", b"s"), NodeId(2), credentials(2, "c", b"s")).await;
        assert!(matches!(a, Err(HandshakeError::UnknownNode(NodeId(9)))), "{a:?}");
        let (_, a) = run(credentials(1, "c", b"s"), NodeId(3), credentials(2, "c", b"s")).await;
        assert!(matches!(a, Err(HandshakeError::WrongTarget(NodeId(3)))), "{a:?}");
        assert_eq!(a.unwrap_err().failure(), Failure::Refused);
    }

    #[tokio::test]
    async fn an_acceptor_without_the_secret_is_refused_by_the_initiator() {
        // An impostor acceptor that skips verification but cannot forge mac_a.
        let ((mut ir, mut iw), (mut ar, mut aw)) = pipe();
        let impostor = async {
            let _hello = expect_frame(&mut ar, FrameKind::Hello).await.unwrap();
            write_frame(&mut aw, FrameKind::Challenge, &[5; NONCE_BYTES]).await.unwrap();
            let _proof = expect_frame(&mut ar, FrameKind::Proof).await.unwrap();
            write_frame(&mut aw, FrameKind::Welcome, &[0; MAC_BYTES]).await.unwrap();
        };
        let initiator = credentials(1, "c", b"s");
        let (i, ()) = tokio::join!(initiate(&mut ir, &mut iw, &initiator, NodeId(2)), impostor);
        assert!(matches!(i, Err(HandshakeError::BadMac(NodeId(2)))), "{i:?}");
    }

    #[test]
    fn macs_depend_on_role_and_every_field() {
        let (ni, na) = ([1; NONCE_BYTES], [2; NONCE_BYTES]);
        let base = Transcript {
            cluster_id: b"c",
            initiator: NodeId(1),
            acceptor: NodeId(2),
            nonce_initiator: &ni,
            nonce_acceptor: &na,
        };
        let tag = base.tag(b"s", ROLE_INITIATOR);
        assert!(base.verify(b"s", ROLE_INITIATOR, &tag));
        assert!(!base.verify(b"s", ROLE_ACCEPTOR, &tag), "reflection");
        assert!(!base.verify(b"t", ROLE_INITIATOR, &tag), "secret");
        assert!(!base.verify(b"s", ROLE_INITIATOR, &tag[..31]), "truncated tag");
        let swapped = Transcript { nonce_initiator: &na, nonce_acceptor: &ni, ..base };
        assert!(!swapped.verify(b"s", ROLE_INITIATOR, &tag), "nonces");
    }

    proptest! {
        #[test]
        fn hello_roundtrips(cluster in prop::collection::vec(any::<u8>(), 0..=255),
                            from: u64, to: u64, nonce: [u8; 32]) {
            let hello = Hello { cluster_id: cluster, from: NodeId(from), to: NodeId(to), nonce };
            prop_assert_eq!(Hello::parse(&hello.encode()).unwrap(), hello);
        }

        #[test]
        fn hello_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = Hello::parse(&bytes);
        }
    }
}
