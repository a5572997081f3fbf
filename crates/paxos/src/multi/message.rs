//! Multi-Paxos values and messages.
//!
//! Phase 1 runs once per leadership for every slot from the candidate's
//! first unchosen slot (`Prepare` / `Promise`, the promise in bounded parts);
//! Phase 2 runs per slot (`Accept` / `Accepted`). An `Accept` with no values
//! is the leader's heartbeat; every `Accept` carries the leader's chosen
//! slot (commit notifications ride on later accepts and heartbeats) and its
//! read round. `Snapshot` / `SnapshotAck` move a snapshot, one chunk at a
//! time, to a peer behind the sender's purged prefix.

use crate::ballot::Ballot;
use crate::multi::snapshot::SnapshotPoint;
use bytes::Bytes;
use std::sync::Arc;
use synod_core::Command;

/// What a slot holds: a batch of client commands, or a no-op (a hole a new
/// leader filled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Nothing (a hole filler).
    Noop,
    /// Commands in order; never empty. Shared, so that the log, the writes
    /// and the messages to every follower hold one copy.
    Batch(Arc<[Command]>),
}

impl Value {
    /// Positions this slot takes in the committed order: one per command,
    /// one for a no-op.
    pub fn positions(&self) -> u64 {
        match self {
            Value::Noop => 1,
            Value::Batch(commands) => commands.len() as u64,
        }
    }

    /// Bytes on the wire.
    pub fn size_bytes(&self) -> usize {
        8 + match self {
            Value::Noop => 0,
            Value::Batch(commands) => commands.iter().map(Command::size_bytes).sum(),
        }
    }
}

/// A value accepted in a ballot: an acceptor's state for one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotEntry {
    /// The ballot it was accepted in.
    pub ballot: Ballot,
    /// The value.
    pub value: Value,
}

/// A message between Multi-Paxos replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Phase 1a for every slot from `first_slot` on. `from_slot` is
    /// `first_slot`, or, asking for the next part of a promise, the slot
    /// after the previous part.
    Prepare {
        /// The candidate's ballot.
        ballot: Ballot,
        /// The candidate's first unchosen slot.
        first_slot: u64,
        /// Report accepted proposals from this slot on.
        from_slot: u64,
    },
    /// Phase 1b: the promise (or one part of it), with the proposals the
    /// acceptor accepted from `from_slot` on, as `(slot, entry)` in slot
    /// order, at most `max_values_per_promise` of them. With `more` the
    /// acceptor holds further ones after the last reported, and the
    /// candidate asks for them (the promise counts once the last part is in).
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// The `first_slot` of the prepare answered.
        first_slot: u64,
        /// The `from_slot` of the prepare answered.
        from_slot: u64,
        /// Accepted proposals at or after `from_slot`.
        accepted: Vec<(u64, SlotEntry)>,
        /// More accepted proposals follow the last one in `accepted`.
        more: bool,
    },
    /// Phase 2a for the slots `first_slot ..` (one per value); with no values
    /// a heartbeat.
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// The slot of `values[0]`.
        first_slot: u64,
        /// The values, for consecutive slots.
        values: Vec<Value>,
        /// Every slot up to this one is chosen (the leader's commit).
        chosen_slot: u64,
        /// The leader's read round, echoed in the answer.
        read_round: u64,
    },
    /// Phase 2b for the slots `first_slot ..= last_slot` (empty when
    /// answering a heartbeat).
    Accepted {
        /// The ballot accepted in.
        ballot: Ballot,
        /// First slot accepted.
        first_slot: u64,
        /// Last slot accepted (below `first_slot` when none).
        last_slot: u64,
        /// The acceptor's own chosen slot.
        chosen_slot: u64,
        /// The leader's chosen slot as the acceptor knows it: when above
        /// `chosen_slot`, the acceptor misses values (or holds them from an
        /// older ballot) and the leader sends it the chosen ones.
        leader_chosen_slot: u64,
        /// The `read_round` of the accept answered.
        read_round: u64,
    },
    /// A refusal: the acceptor promised `promised`, above `ballot`.
    Nack {
        /// The ballot refused.
        ballot: Ballot,
        /// What the acceptor promised.
        promised: Ballot,
    },
    /// One chunk of the sender's snapshot: from a leader (in its ballot) to
    /// a follower behind its purged prefix, or from an acceptor to a
    /// candidate (in the candidate's ballot) whose Phase 1 starts inside
    /// the acceptor's purged prefix.
    Snapshot {
        /// The ballot the transfer belongs to.
        ballot: Ballot,
        /// The snapshot.
        point: SnapshotPoint,
        /// Where `data` starts in the snapshot.
        offset: u64,
        /// The chunk.
        data: Bytes,
    },
    /// Answer to [`Message::Snapshot`]: the offset wanted next, or `done`
    /// once the snapshot is installed (or not needed).
    SnapshotAck {
        /// The ballot of the chunk answered.
        ballot: Ballot,
        /// The snapshot's position (`point.meta.index`).
        index: u64,
        /// The offset wanted next.
        offset: u64,
        /// The receiver holds everything up to the snapshot.
        done: bool,
    },
}

impl Message {
    /// The ballot the message is about.
    pub fn ballot(&self) -> Ballot {
        match self {
            Message::Prepare { ballot, .. }
            | Message::Promise { ballot, .. }
            | Message::Accept { ballot, .. }
            | Message::Accepted { ballot, .. }
            | Message::Nack { ballot, .. }
            | Message::Snapshot { ballot, .. }
            | Message::SnapshotAck { ballot, .. } => *ballot,
        }
    }
}

impl synod_core::Message for Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::Prepare { .. } => "prepare",
            Message::Promise { .. } => "promise",
            Message::Accept { values, .. } if values.is_empty() => "heartbeat",
            Message::Accept { .. } => "accept",
            Message::Accepted { .. } => "accepted",
            Message::Nack { .. } => "nack",
            Message::Snapshot { .. } => "snapshot",
            Message::SnapshotAck { .. } => "snapshot_ack",
        }
    }

    fn size_bytes(&self) -> usize {
        const HEADER: usize = 48;
        match self {
            Message::Promise { accepted, .. } => {
                HEADER + accepted.iter().map(|(_, e)| 24 + e.value.size_bytes()).sum::<usize>()
            }
            Message::Accept { values, .. } => {
                HEADER + values.iter().map(Value::size_bytes).sum::<usize>()
            }
            Message::Snapshot { data, .. } => HEADER + 24 + data.len(),
            _ => HEADER,
        }
    }
}
