//! What a leader knows about one follower's log, and how fast it may send
//! to it (the flow control of etcd-raft's `Progress`).
//!
//! A follower is in one of two modes:
//!
//! - **Probe**: the leader does not know where the follower's log matches
//!   its own. It sends one AppendEntries and waits for the answer (or the
//!   next heartbeat) before sending another, backing `next_index` off with
//!   the follower's conflict hint after each rejection.
//! - **Replicate**: the leader knows a match and streams entries
//!   optimistically, advancing `next_index` as it sends, with at most
//!   `max_inflight_appends` messages unacknowledged ([`Inflights`]).
//!
//! - **Snapshot**: the entries the follower needs were purged; the leader
//!   streams its snapshot one chunk at a time ([`SnapshotTransfer`]), from
//!   the offset the follower last asked for, and goes back to Probe right
//!   after the snapshot once the follower installed it.
//!
//! A rejection always drops back to Probe; the first acknowledgement in
//! Probe moves to Replicate. Besides flow control, a `Progress` records when
//! the follower was last heard from (check-quorum) and the highest ReadIndex
//! round it confirmed.

use std::collections::VecDeque;
use synod_core::protocol::SnapshotMeta;
use synod_core::{NodeId, Time};

/// The replication mode of one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// One message in flight until a match is learned.
    Probe,
    /// Optimistic pipelining within the in-flight window.
    Replicate,
    /// Sending the snapshot, one chunk at a time.
    Snapshot,
}

/// A snapshot being sent to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotTransfer {
    /// The snapshot being sent.
    pub meta: SnapshotMeta,
    /// The offset the follower asked for last (its bytes received).
    pub offset: u64,
}

/// The in-flight window of one follower in Replicate mode: the last index
/// carried by each unacknowledged AppendEntries, oldest first.
#[derive(Clone, Debug)]
pub struct Inflights {
    last_indexes: VecDeque<u64>,
    capacity: usize,
}

impl Inflights {
    /// An empty window of `capacity` messages (allocated once).
    pub fn new(capacity: usize) -> Inflights {
        assert!(capacity > 0, "an in-flight window needs room for one message");
        Inflights { last_indexes: VecDeque::with_capacity(capacity), capacity }
    }

    /// True when no more messages may be sent.
    pub fn is_full(&self) -> bool {
        self.last_indexes.len() >= self.capacity
    }

    /// Messages in flight.
    pub fn len(&self) -> usize {
        self.last_indexes.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.last_indexes.is_empty()
    }

    /// Records a message carrying entries up to `last_index`.
    ///
    /// # Panics
    /// If the window is full or indexes go backwards (the caller must check).
    pub fn add(&mut self, last_index: u64) {
        assert!(!self.is_full(), "in-flight window overflow");
        if let Some(&back) = self.last_indexes.back() {
            assert!(back < last_index, "in-flight indexes must increase");
        }
        self.last_indexes.push_back(last_index);
    }

    /// Forgets every message whose entries are all at or below `index`.
    pub fn free_to(&mut self, index: u64) {
        while self.last_indexes.front().is_some_and(|&last| last <= index) {
            self.last_indexes.pop_front();
        }
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.last_indexes.clear();
    }
}

/// A leader's view of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The follower.
    pub id: NodeId,
    /// Highest index known to match the leader's log.
    pub match_index: u64,
    /// Next index to send.
    pub next_index: u64,
    /// The replication mode.
    pub state: ProgressState,
    /// In Probe mode: a probe is out and unanswered.
    pub probe_sent: bool,
    /// In Replicate mode: the unacknowledged messages.
    pub inflights: Inflights,
    /// When the follower last answered anything in the leader's term.
    pub last_heard: Time,
    /// The highest ReadIndex round the follower acknowledged.
    pub read_round_acked: u64,
    /// In Snapshot mode: the transfer.
    pub snapshot: Option<SnapshotTransfer>,
}

impl Progress {
    /// A follower the leader knows nothing about yet.
    pub fn new(id: NodeId, max_inflight_appends: usize) -> Progress {
        Progress {
            id,
            match_index: 0,
            next_index: 1,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(max_inflight_appends),
            last_heard: Time::ZERO,
            read_round_acked: 0,
            snapshot: None,
        }
    }

    /// Starts a new leadership: probe from just after the leader's last entry.
    pub fn reset(&mut self, leader_last_index: u64, now: Time) {
        self.match_index = 0;
        self.next_index = leader_last_index + 1;
        self.last_heard = now;
        self.read_round_acked = 0;
        self.become_probe();
    }

    /// Switches to Probe mode, sending from `next_index` again.
    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.snapshot = None;
        self.inflights.reset();
    }

    /// Switches to Snapshot mode, sending `meta` from its start.
    pub fn become_snapshot(&mut self, meta: SnapshotMeta) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot = Some(SnapshotTransfer { meta, offset: 0 });
    }

    /// The follower holds everything up to `index` (it installed the
    /// snapshot): probe right after it.
    pub fn snapshot_done(&mut self, index: u64) {
        self.match_index = self.match_index.max(index);
        self.next_index = self.match_index + 1;
        self.become_probe();
    }

    /// Switches to Replicate mode, streaming from just after the match.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.probe_sent = false;
        self.snapshot = None;
        self.next_index = self.match_index + 1;
        self.inflights.reset();
    }

    /// True when nothing more may be sent now (heartbeats aside).
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot => true,
        }
    }

    /// Records that an AppendEntries with entries up to `last_sent_index`
    /// (and at least one entry) left for this follower.
    pub fn sent_entries(&mut self, last_sent_index: u64) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                self.inflights.add(last_sent_index);
                self.next_index = last_sent_index + 1;
            }
            ProgressState::Snapshot => unreachable!("no entries are sent during a snapshot"),
        }
    }

    /// The follower acknowledged a match up to `match_index`. Returns true
    /// when that is news (the match advanced). Any acknowledgement ends a
    /// probe and moves to Replicate.
    pub fn on_ack(&mut self, match_index: u64) -> bool {
        let advanced = match_index > self.match_index;
        if advanced {
            self.match_index = match_index;
            self.next_index = self.next_index.max(match_index + 1);
        }
        match self.state {
            ProgressState::Probe if match_index >= self.match_index => self.become_replicate(),
            ProgressState::Probe => self.probe_sent = false,
            ProgressState::Replicate => self.inflights.free_to(match_index),
            ProgressState::Snapshot => {}
        }
        advanced
    }

    /// The follower rejected an AppendEntries whose `prev_log_index` was
    /// `rejected_index`; `hinted_next` is where the leader's log and the
    /// follower's hint say to resume. Returns false (and changes nothing)
    /// when the rejection is stale: it answers a message older than what is
    /// already known to match, or than the probe now outstanding.
    pub fn on_reject(&mut self, rejected_index: u64, hinted_next: u64) -> bool {
        if rejected_index <= self.match_index || self.state == ProgressState::Snapshot {
            return false;
        }
        if self.state == ProgressState::Probe && rejected_index + 1 != self.next_index {
            // Not the answer to the probe now outstanding.
            return false;
        }
        self.next_index = hinted_next.clamp(self.match_index + 1, rejected_index);
        self.become_probe();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_free_in_order_and_bound_the_window() {
        let mut inflights = Inflights::new(3);
        inflights.add(5);
        inflights.add(9);
        inflights.add(12);
        assert!(inflights.is_full());
        inflights.free_to(9);
        assert_eq!(inflights.len(), 1);
        assert!(!inflights.is_full());
        inflights.free_to(100);
        assert!(inflights.is_empty());
    }

    #[test]
    #[should_panic(expected = "overflow")]
    fn inflights_overflow_is_an_invariant_violation() {
        let mut inflights = Inflights::new(1);
        inflights.add(1);
        inflights.add(2);
    }

    #[test]
    fn probe_sends_one_message_until_answered() {
        let mut pr = Progress::new(NodeId(2), 4);
        pr.reset(10, Time::ZERO);
        assert_eq!(pr.next_index, 11);
        assert!(!pr.is_paused());
        pr.sent_entries(11);
        assert!(pr.is_paused(), "one probe at a time");
        assert_eq!(pr.next_index, 11, "probe does not advance next optimistically");
        assert!(pr.on_ack(11));
        assert_eq!(pr.state, ProgressState::Replicate);
        assert_eq!((pr.match_index, pr.next_index), (11, 12));
    }

    #[test]
    fn replicate_pipelines_within_the_window() {
        let mut pr = Progress::new(NodeId(2), 2);
        pr.reset(0, Time::ZERO);
        pr.on_ack(0);
        assert_eq!(pr.state, ProgressState::Replicate);
        pr.sent_entries(4);
        pr.sent_entries(8);
        assert!(pr.is_paused());
        assert_eq!(pr.next_index, 9);
        pr.on_ack(4);
        assert!(!pr.is_paused());
        assert_eq!(pr.match_index, 4);
        assert_eq!(pr.next_index, 9, "ack does not pull next back");
    }

    #[test]
    fn a_rejection_backs_off_to_the_hint_and_probes() {
        let mut pr = Progress::new(NodeId(2), 4);
        pr.reset(60, Time::ZERO);
        assert!(pr.on_reject(60, 11));
        assert_eq!((pr.next_index, pr.state), (11, ProgressState::Probe));
        // A second answer to the same old probe is stale.
        assert!(!pr.on_reject(60, 5));
        assert_eq!(pr.next_index, 11);
    }

    #[test]
    fn a_snapshot_transfer_pauses_entries_and_ends_in_probe_after_it() {
        let mut pr = Progress::new(NodeId(2), 4);
        pr.reset(50, Time::ZERO);
        pr.become_snapshot(SnapshotMeta { index: 40, epoch: 2, size_bytes: 100 });
        assert!(pr.is_paused());
        assert!(!pr.on_reject(45, 1), "rejections do not interrupt a transfer");
        pr.snapshot_done(40);
        assert_eq!((pr.state, pr.match_index, pr.next_index), (ProgressState::Probe, 40, 41));
        assert!(pr.snapshot.is_none());
    }

    #[test]
    fn stale_rejections_below_the_match_are_ignored() {
        let mut pr = Progress::new(NodeId(2), 4);
        pr.reset(0, Time::ZERO);
        pr.on_ack(20);
        pr.sent_entries(30);
        assert!(!pr.on_reject(15, 3));
        assert_eq!((pr.state, pr.next_index), (ProgressState::Replicate, 31));
        // A real rejection beyond the match never backs off below it.
        assert!(pr.on_reject(30, 3));
        assert_eq!(pr.next_index, 21);
    }
}
