//! Linearizable reads on the leader, through a round that confirms it still
//! leads (the read-index technique of Raft thesis §6.4, in Paxos terms).
//!
//! A read is safe at position `p` once (1) `p` is at least the committed
//! position when the read arrived, and (2) a majority accepted a heartbeat
//! of the leader's ballot sent after the read arrived: no higher ballot
//! could have chosen anything before that. For (1) the leader must know
//! every value chosen before it led, which it does once its chosen slot
//! reached the end of what it recovered in Phase 1; until then a read waits
//! without an index. Every read starts a new *read round*: heartbeats carry
//! it, acceptors echo it, and a read is released once a majority (the
//! leader included) echoed a round at least as new as its own.
//!
//! The caller's duties: serve the read once the state machine applied up to
//! its index; call [`ReadQueue::fail_all`] on losing leadership. The queue
//! holds at most `max_pending` reads.

use std::collections::VecDeque;
use synod_core::{Event, ReadId, ReadState};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PendingRead {
    id: ReadId,
    round: u64,
    index: Option<u64>,
}

/// The leader's pending reads, in arrival order.
#[derive(Clone, Debug)]
pub struct ReadQueue {
    pending: VecDeque<PendingRead>,
    max_pending: usize,
    round: u64,
}

impl ReadQueue {
    /// An empty queue of at most `max_pending` reads.
    pub fn new(max_pending: usize) -> ReadQueue {
        ReadQueue { pending: VecDeque::new(), max_pending, round: 0 }
    }

    /// The latest round started.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// True when no read waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Reads waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when another read would exceed the bound.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= self.max_pending
    }

    /// Queues read `id` in a new round (returned); `index` is the committed
    /// position if the leader knows it, else `None`.
    ///
    /// # Panics
    /// If full (the caller checks [`is_full`](Self::is_full)).
    pub fn push(&mut self, id: ReadId, index: Option<u64>) -> u64 {
        assert!(!self.is_full(), "read queue overflow");
        self.round += 1;
        self.pending.push_back(PendingRead { id, round: self.round, index });
        self.round
    }

    /// The leader now knows the committed position `index`: reads without
    /// an index wait for it.
    pub fn assign_index(&mut self, index: u64) {
        for read in self.pending.iter_mut().rev() {
            if read.index.is_some() {
                break;
            }
            read.index = Some(index);
        }
    }

    /// Releases, in order, every read whose round a majority confirmed and
    /// whose index is known.
    pub fn release(&mut self, confirmed_round: u64, reads: &mut Vec<ReadState>) {
        while let Some(read) = self.pending.front() {
            let (Some(index), true) = (read.index, read.round <= confirmed_round) else { break };
            reads.push(ReadState { id: read.id, index });
            self.pending.pop_front();
        }
    }

    /// Leadership was lost: every pending read fails.
    pub fn fail_all(&mut self, events: &mut Vec<Event>) {
        events.extend(self.pending.drain(..).map(|r| Event::ReadFailed { id: r.id }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wait_for_their_round_and_index() {
        let mut q = ReadQueue::new(2);
        let r1 = q.push(ReadId(1), None);
        q.push(ReadId(2), None);
        assert!(q.is_full());
        let mut out = Vec::new();
        q.release(r1, &mut out);
        assert!(out.is_empty(), "no index yet");
        q.assign_index(7);
        q.release(r1, &mut out);
        assert_eq!(out, vec![ReadState { id: ReadId(1), index: 7 }]);
        let mut events = Vec::new();
        q.fail_all(&mut events);
        assert_eq!(events, vec![Event::ReadFailed { id: ReadId(2) }]);
    }
}
