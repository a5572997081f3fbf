//! Counters the transport keeps, and [`TransportStats`], the snapshot
//! [`TransportHandle::stats`](crate::TransportHandle::stats) returns.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use synod_core::NodeId;

/// A snapshot of the transport's counters (all since start).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Data frames received from authenticated peers.
    pub frames_in: u64,
    /// Payload bytes of those frames.
    pub bytes_in: u64,
    /// Data frames written to peers.
    pub frames_out: u64,
    /// Payload bytes of those frames.
    pub bytes_out: u64,
    /// Connections closed for a malformed, oversized or truncated frame (or a
    /// frame of a kind not allowed at that point).
    pub bad_frames: u64,
    /// Handshakes refused: wrong cluster id, unknown node id, wrong secret,
    /// or a handshake protocol violation (either side).
    pub handshakes_refused: u64,
    /// Handshakes that broke off: timeout, I/O error, closed by the other side.
    pub handshakes_failed: u64,
    /// Inbound connections closed at once because `max_inbound_connections`
    /// were open.
    pub connections_rejected: u64,
    /// Outbound connections that completed the handshake.
    pub outbound_connections: u64,
    /// Inbound connections that completed the handshake.
    pub inbound_connections: u64,
    /// Messages dropped from full send queues (oldest first).
    pub dropped_queue_full: u64,
    /// Messages taken from a queue whose write failed when the connection
    /// broke (messages already handed to the kernel are not counted: delivery
    /// is best effort).
    pub dropped_in_flight: u64,
    /// Per peer, ordered by node id.
    pub peers: Vec<PeerStats>,
}

/// One peer's outbound side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer.
    pub node_id: NodeId,
    /// Where it is dialled.
    pub addr: SocketAddr,
    /// Whether an authenticated outbound connection is up.
    pub connected: bool,
    /// Messages waiting in its send queue.
    pub queued_messages: usize,
    /// Payload bytes waiting in its send queue.
    pub queued_bytes: usize,
    /// Messages dropped from its full queue.
    pub dropped_queue_full: u64,
}

/// The live counters, shared by every task.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) frames_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) bad_frames: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) handshakes_failed: AtomicU64,
    pub(crate) connections_rejected: AtomicU64,
    pub(crate) outbound_connections: AtomicU64,
    pub(crate) inbound_connections: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_in_flight: AtomicU64,
}

/// Adds `amount` to a counter.
pub(crate) fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

impl Counters {
    /// The counters as a snapshot (without per-peer data).
    pub(crate) fn snapshot(&self) -> TransportStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TransportStats {
            frames_in: read(&self.frames_in),
            bytes_in: read(&self.bytes_in),
            frames_out: read(&self.frames_out),
            bytes_out: read(&self.bytes_out),
            bad_frames: read(&self.bad_frames),
            handshakes_refused: read(&self.handshakes_refused),
            handshakes_failed: read(&self.handshakes_failed),
            connections_rejected: read(&self.connections_rejected),
            outbound_connections: read(&self.outbound_connections),
            inbound_connections: read(&self.inbound_connections),
            dropped_queue_full: read(&self.dropped_queue_full),
            dropped_in_flight: read(&self.dropped_in_flight),
            peers: Vec::new(),
        }
    }
}
