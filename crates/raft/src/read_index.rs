//! Linearizable reads through ReadIndex (thesis §6.4), on the leader.
//!
//! A read is safe at index `i` once (1) `i` is at least the commit index at
//! the time the read arrived, and (2) the leader has proved, after the read
//! arrived, that it was still the leader. For (1) the leader needs to know
//! the latest commit index, which it does only after it committed an entry
//! of its own term (its no-op); until then a read waits without an index.
//! For (2) every read starts a *read round*: the leader bumps its round
//! number and sends heartbeats carrying it; a follower echoes the round in
//! its answer, and once a majority (the leader included) confirmed a round
//! at least as new as the read's, the read is released as a
//! [`ReadState`].
//!
//! A read may also come from a follower (follower reads): it is queued the
//! same way and, once released, its index goes back to that follower, which
//! serves the read after applying up to it.
//!
//! The caller's responsibilities: serve the read only after the state
//! machine applied up to its index; call [`ReadQueue::fail_all`] when
//! leadership is lost. The queue is bounded by `max_pending_reads`.

use std::collections::VecDeque;
use synod_core::{Event, NodeId, ReadId, ReadState};

/// One read waiting for its index and its round's confirmation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PendingRead {
    id: ReadId,
    /// The follower that asked, for a follower read.
    from: Option<NodeId>,
    round: u64,
    /// The commit index it must wait for; `None` until the leader committed
    /// an entry of its term.
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
    /// An empty queue holding at most `max_pending` reads.
    pub fn new(max_pending: usize) -> ReadQueue {
        ReadQueue { pending: VecDeque::new(), max_pending, round: 0 }
    }

    /// The latest read round started.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Reads waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when no read waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// True when another read would exceed the bound.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= self.max_pending
    }

    /// Queues read `id` under a new round (returned: the caller sends the
    /// heartbeats carrying it). `index` is the commit index if the leader
    /// already committed in its term, else `None`.
    ///
    /// # Panics
    /// If the queue is full (the caller checks [`is_full`](Self::is_full)).
    pub fn push(&mut self, id: ReadId, index: Option<u64>) -> u64 {
        self.push_from(None, id, index)
    }

    /// Like [`push`](Self::push), for read `id` of follower `from` when
    /// `from` is set.
    ///
    /// # Panics
    /// If the queue is full.
    pub fn push_from(&mut self, from: Option<NodeId>, id: ReadId, index: Option<u64>) -> u64 {
        assert!(!self.is_full(), "read queue overflow");
        self.round += 1;
        self.pending.push_back(PendingRead { id, from, round: self.round, index });
        self.round
    }

    /// Starts a read round without a read (a lease heartbeat).
    pub fn start_round(&mut self) -> u64 {
        self.round += 1;
        self.round
    }

    /// The leader committed its first entry of the term at `commit_index`:
    /// every read still without an index waits for that one.
    pub fn assign_index(&mut self, commit_index: u64) {
        for read in self.pending.iter_mut().rev() {
            if read.index.is_some() {
                break;
            }
            read.index = Some(commit_index);
        }
    }

    /// Releases, in order, every read whose round a majority confirmed
    /// (`confirmed_round`) and whose index is known.
    /// Local reads go to `reads`, follower reads to `remote`.
    pub fn release(
        &mut self,
        confirmed_round: u64,
        reads: &mut Vec<ReadState>,
        remote: &mut Vec<(NodeId, ReadState)>,
    ) {
        while let Some(read) = self.pending.front() {
            let (Some(index), true) = (read.index, read.round <= confirmed_round) else {
                break;
            };
            let state = ReadState { id: read.id, index };
            match read.from {
                None => reads.push(state),
                Some(from) => remote.push((from, state)),
            }
            self.pending.pop_front();
        }
    }

    /// Leadership was lost: every pending read fails (local ones as
    /// events; the followers of follower reads are returned, to be told).
    pub fn fail_all(&mut self, events: &mut Vec<Event>) -> Vec<(NodeId, ReadId)> {
        let mut remote = Vec::new();
        for read in self.pending.drain(..) {
            match read.from {
                None => events.push(Event::ReadFailed { id: read.id }),
                Some(from) => remote.push((from, read.id)),
            }
        }
        remote
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_waits_for_its_round_to_be_confirmed() {
        let mut queue = ReadQueue::new(8);
        let round = queue.push(ReadId(1), Some(5));
        let mut reads = Vec::new();
        queue.release(round - 1, &mut reads, &mut Vec::new());
        assert!(reads.is_empty());
        queue.release(round, &mut reads, &mut Vec::new());
        assert_eq!(reads, vec![ReadState { id: ReadId(1), index: 5 }]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_read_without_index_waits_for_the_term_commit() {
        let mut queue = ReadQueue::new(8);
        queue.push(ReadId(1), None);
        queue.push(ReadId(2), None);
        let mut reads = Vec::new();
        queue.release(10, &mut reads, &mut Vec::new());
        assert!(reads.is_empty(), "no index yet");
        queue.assign_index(7);
        queue.release(10, &mut reads, &mut Vec::new());
        assert_eq!(
            reads.iter().map(|r| (r.id.0, r.index)).collect::<Vec<_>>(),
            vec![(1, 7), (2, 7)]
        );
    }

    #[test]
    fn reads_are_released_in_order_and_bounded() {
        let mut queue = ReadQueue::new(2);
        let first = queue.push(ReadId(1), Some(1));
        queue.push(ReadId(2), Some(2));
        assert!(queue.is_full());
        let mut reads = Vec::new();
        queue.release(first, &mut reads, &mut Vec::new());
        assert_eq!(reads.len(), 1);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn losing_leadership_fails_every_pending_read() {
        let mut queue = ReadQueue::new(8);
        queue.push(ReadId(3), Some(1));
        queue.push(ReadId(4), None);
        queue.push_from(Some(NodeId(2)), ReadId(5), None);
        let mut events = Vec::new();
        assert_eq!(queue.fail_all(&mut events), vec![(NodeId(2), ReadId(5))]);
        assert_eq!(
            events,
            vec![Event::ReadFailed { id: ReadId(3) }, Event::ReadFailed { id: ReadId(4) }]
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn follower_reads_are_released_to_their_follower() {
        let mut queue = ReadQueue::new(8);
        queue.push(ReadId(1), Some(3));
        let round = queue.push_from(Some(NodeId(4)), ReadId(9), Some(3));
        assert_eq!(queue.start_round(), round + 1);
        let (mut reads, mut remote) = (Vec::new(), Vec::new());
        queue.release(round, &mut reads, &mut remote);
        assert_eq!(reads, vec![ReadState { id: ReadId(1), index: 3 }]);
        assert_eq!(remote, vec![(NodeId(4), ReadState { id: ReadId(9), index: 3 })]);
    }
}
