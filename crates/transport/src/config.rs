//! [`TransportConfig`]: who this node is, who its peers are, and every bound
//! the transport enforces (frame size, queue lengths, timeouts, backoff).

use crate::frame::{DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_BYTES};
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use synod_core::NodeId;

/// The longest cluster id the handshake carries (it is length-prefixed by one
/// byte).
pub const MAX_CLUSTER_ID_BYTES: usize = 255;

/// The smallest `max_frame_bytes` accepted (room for a header and a small
/// payload).
pub const MIN_MAX_FRAME_BYTES: u32 = 64;

/// Configuration of one node's transport. Build it with
/// [`TransportConfig::new`] and adjust the bounds as needed; every field is
/// checked by [`TransportConfig::validate`] when the transport starts.
#[derive(Clone)]
pub struct TransportConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// The cluster's id; a peer with another cluster id is refused. At most
    /// [`MAX_CLUSTER_ID_BYTES`] bytes, not empty.
    pub cluster_id: String,
    /// The cluster secret every member shares; the handshake proves knowledge
    /// of it with HMAC-SHA256. Use at least 32 random bytes. Never logged.
    pub secret: Vec<u8>,
    /// The address peers connect to.
    pub listen_addr: SocketAddr,
    /// Every other member of the cluster and the address it listens on. Only
    /// these ids may connect; this node's own id must not be listed.
    pub peers: Vec<(NodeId, SocketAddr)>,
    /// The largest frame (version + kind + payload) sent or accepted.
    pub max_frame_bytes: u32,
    /// Messages waiting for one peer; beyond this the oldest is dropped.
    pub queue_len: usize,
    /// Bytes waiting for one peer; beyond this the oldest messages are
    /// dropped. At least `max_frame_bytes`.
    pub max_queue_bytes: usize,
    /// Received messages waiting for the node. When full, connections stop
    /// reading (TCP backpressure) until the node catches up.
    pub inbound_queue_len: usize,
    /// Connections accepted at once (authenticated or not); more are closed
    /// right away and counted.
    pub max_inbound_connections: usize,
    /// Time a handshake may take, on either side, before the connection is
    /// closed.
    pub handshake_timeout_ms: u64,
    /// Time an outbound TCP connect may take.
    pub connect_timeout_ms: u64,
    /// Time one write (or flush) to a peer may take before the connection is
    /// considered dead and reopened.
    pub write_timeout_ms: u64,
    /// First reconnect delay; doubled after each failure up to
    /// `backoff_max_ms`, each delay drawn uniformly from its upper half.
    pub backoff_initial_ms: u64,
    /// Cap on the reconnect delay.
    pub backoff_max_ms: u64,
}

/// A configuration field that is out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("transport config: `{field}` {reason}")]
pub struct ConfigError {
    /// The field's name.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl TransportConfig {
    /// A configuration with the default bounds: 16 MiB frames, 1024 queued
    /// messages (at most 64 MiB) per peer, 4096 inbound messages, 256 inbound
    /// connections, 5 s handshakes, 3 s connects, 10 s writes, reconnect
    /// backoff from 50 ms to 5 s.
    pub fn new(
        node_id: NodeId,
        cluster_id: impl Into<String>,
        secret: impl Into<Vec<u8>>,
        listen_addr: SocketAddr,
        peers: Vec<(NodeId, SocketAddr)>,
    ) -> TransportConfig {
        TransportConfig {
            node_id,
            cluster_id: cluster_id.into(),
            secret: secret.into(),
            listen_addr,
            peers,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            queue_len: 1024,
            max_queue_bytes: 64 * 1024 * 1024,
            inbound_queue_len: 4096,
            max_inbound_connections: 256,
            handshake_timeout_ms: 5_000,
            connect_timeout_ms: 3_000,
            write_timeout_ms: 10_000,
            backoff_initial_ms: 50,
            backoff_max_ms: 5_000,
        }
    }

    /// The largest payload [`send`](crate::TransportHandle::send) accepts.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_frame_bytes as usize - FRAME_HEADER_BYTES
    }

    /// Checks every field; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, reason: &str| Err(ConfigError { field, reason: reason.to_string() });
        if self.cluster_id.is_empty() || self.cluster_id.len() > MAX_CLUSTER_ID_BYTES {
            return fail("cluster_id", "must be 1 to 255 bytes");
        }
        if self.secret.is_empty() {
            return fail("secret", "must not be empty");
        }
        let mut seen = HashSet::new();
        for (id, _) in &self.peers {
            if *id == self.node_id {
                return fail("peers", &format!("lists this node's own id {id}"));
            }
            if !seen.insert(*id) {
                return fail("peers", &format!("lists {id} twice"));
            }
        }
        if self.max_frame_bytes < MIN_MAX_FRAME_BYTES {
            return fail("max_frame_bytes", &format!("must be at least {MIN_MAX_FRAME_BYTES}"));
        }
        if self.queue_len == 0 {
            return fail("queue_len", "must be at least 1");
        }
        if self.max_queue_bytes < self.max_frame_bytes as usize {
            return fail("max_queue_bytes", "must be at least max_frame_bytes");
        }
        if self.inbound_queue_len == 0 {
            return fail("inbound_queue_len", "must be at least 1");
        }
        if self.max_inbound_connections == 0 {
            return fail("max_inbound_connections", "must be at least 1");
        }
        for (field, value) in [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
            ("backoff_initial_ms", self.backoff_initial_ms),
        ] {
            if value == 0 {
                return fail(field, "must be at least 1");
            }
        }
        if self.backoff_max_ms < self.backoff_initial_ms {
            return fail("backoff_max_ms", "must be at least backoff_initial_ms");
        }
        Ok(())
    }
}

impl fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportConfig")
            .field("node_id", &self.node_id)
            .field("cluster_id", &self.cluster_id)
            .field("secret", &format_args!("<{} bytes redacted>", self.secret.len()))
            .field("listen_addr", &self.listen_addr)
            .field("peers", &self.peers)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("queue_len", &self.queue_len)
            .field("max_queue_bytes", &self.max_queue_bytes)
            .field("inbound_queue_len", &self.inbound_queue_len)
            .field("max_inbound_connections", &self.max_inbound_connections)
            .field("handshake_timeout_ms", &self.handshake_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("write_timeout_ms", &self.write_timeout_ms)
            .field("backoff_initial_ms", &self.backoff_initial_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TransportConfig {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        TransportConfig::new(NodeId(1), "c", b"secret".to_vec(), addr, vec![(NodeId(2), addr)])
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn errors_name_the_field() {
        let mut own_id = config();
        own_id.peers.push((NodeId(1), own_id.listen_addr));
        assert_eq!(own_id.validate().unwrap_err().field, "peers");

        let mut duplicate = config();
        duplicate.peers.push((NodeId(2), duplicate.listen_addr));
        assert_eq!(duplicate.validate().unwrap_err().field, "peers");

        let mut empty_secret = config();
        empty_secret.secret.clear();
        assert_eq!(empty_secret.validate().unwrap_err().field, "secret");

        let mut long_cluster = config();
        long_cluster.cluster_id = "x".repeat(256);
        assert_eq!(long_cluster.validate().unwrap_err().field, "cluster_id");

        let mut small_queue = config();
        small_queue.max_queue_bytes = 10;
        assert_eq!(small_queue.validate().unwrap_err().field, "max_queue_bytes");

        let mut backoff = config();
        backoff.backoff_max_ms = 1;
        assert_eq!(backoff.validate().unwrap_err().field, "backoff_max_ms");
    }

    #[test]
    fn debug_redacts_the_secret() {
        let text = format!("{:?}", config());
        assert!(!text.contains("115, 101, 99"), "{text}");
        assert!(text.contains("<6 bytes redacted>"), "{text}");
    }
}
