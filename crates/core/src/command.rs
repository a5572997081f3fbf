//! Client commands and the ids that make them exactly-once.
//!
//! Every command carries the id of the client session that sent it and a
//! per-client sequence number. A client numbers its requests 1, 2, 3, … and
//! retries a request with the *same* number until it gets an answer, so the
//! replicated [`Sessions`](crate::Sessions) layer can apply each request once
//! and answer retries from its cache (Raft thesis §6.3; PBFT's reply cache).

use bytes::Bytes;
use std::fmt;

/// The id of a replica. Unique within a cluster; never reused for a node that
/// lost its disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// The id of a client session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// A command a client asks the cluster to order and apply.
///
/// `op` is opaque to the protocols; the state machine decodes it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Command {
    /// The client session that issued the command.
    pub client: ClientId,
    /// The client's sequence number for this request, starting at 1. A retry
    /// reuses the number of the request it retries.
    pub seq: u64,
    /// The operation, encoded by the state machine's client.
    pub op: Bytes,
}

impl Command {
    /// A command from `client` with sequence number `seq`.
    pub fn new(client: ClientId, seq: u64, op: impl Into<Bytes>) -> Command {
        Command { client, seq, op: op.into() }
    }

    /// Bytes this command occupies on the wire (ids plus payload), for size
    /// limits and metrics.
    pub fn size_bytes(&self) -> usize {
        16 + self.op.len()
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}({}B)", self.client, self.seq, self.op.len())
    }
}
