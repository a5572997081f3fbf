//! Raft's messages (Raft paper Figure 2, thesis §4.2.3 pre-vote, §3.10
//! leadership transfer, §6.4 ReadIndex).

use crate::entry::Entry;
use crate::membership::Membership;
use bytes::Bytes;

/// A message between Raft peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Pre-vote (thesis §9.6): "would you vote for me in `term`?" — sent
    /// without incrementing the sender's own term.
    PreVote {
        /// The term the sender would campaign in (its term + 1).
        term: u64,
        /// Index of the sender's last log entry.
        last_log_index: u64,
        /// Term of the sender's last log entry.
        last_log_term: u64,
    },
    /// Answer to [`Message::PreVote`].
    PreVoteResponse {
        /// The term the pre-vote asked about when granted; the responder's
        /// current term when refused.
        term: u64,
        /// Whether the responder would vote.
        granted: bool,
    },
    /// RequestVote RPC.
    RequestVote {
        /// The candidate's term.
        term: u64,
        /// Index of the candidate's last log entry.
        last_log_index: u64,
        /// Term of the candidate's last log entry.
        last_log_term: u64,
        /// Set when the election follows a leadership transfer (TimeoutNow):
        /// voters then ignore their check-quorum lease on the old leader.
        transfer: bool,
    },
    /// Answer to [`Message::RequestVote`].
    RequestVoteResponse {
        /// The responder's current term.
        term: u64,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries RPC; with no entries it is a heartbeat.
    AppendEntries {
        /// The leader's term.
        term: u64,
        /// Index of the entry immediately preceding `entries`.
        prev_log_index: u64,
        /// Term of the entry at `prev_log_index`.
        prev_log_term: u64,
        /// Entries to store (empty for a heartbeat).
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: u64,
        /// The leader's read round; echoed in the response so the leader
        /// learns which ReadIndex rounds a follower has confirmed.
        read_round: u64,
    },
    /// Answer to [`Message::AppendEntries`].
    AppendEntriesResponse {
        /// The responder's current term.
        term: u64,
        /// Whether the entries matched and were stored.
        success: bool,
        /// On success: the index up to which the responder's log now matches
        /// the leader's. On failure: the `prev_log_index` that was rejected,
        /// so the leader can tell a stale rejection from the answer to its
        /// latest probe.
        match_index: u64,
        /// On failure: a hint for fast backtracking — the term of the
        /// responder's conflicting entry at `prev_log_index` (0 when its log
        /// is shorter) and the first index it holds with that term (or its
        /// last index + 1 when shorter).
        conflict_term: u64,
        /// See `conflict_term`.
        conflict_index: u64,
        /// The `read_round` of the request answered.
        read_round: u64,
    },
    /// Leadership transfer (thesis §3.10): the leader tells a caught-up
    /// follower to start an election at once.
    TimeoutNow {
        /// The leader's term.
        term: u64,
    },
    /// One chunk of the leader's snapshot (InstallSnapshot RPC, thesis §5.1,
    /// Figure 5.3), for a follower that needs entries the leader purged.
    /// Chunks go one at a time; the follower's answer names the offset it
    /// wants next, so a lost chunk is re-sent from there.
    InstallSnapshot {
        /// The leader's term.
        term: u64,
        /// The snapshot's last included index.
        index: u64,
        /// The term of the entry at `index`.
        last_term: u64,
        /// The snapshot's total size.
        size_bytes: u64,
        /// Where `data` starts in the snapshot.
        offset: u64,
        /// The chunk (the last one ends at `size_bytes`).
        data: Bytes,
        /// The configuration in effect at `index` (thesis §5.1: the
        /// snapshot's metadata includes the latest configuration). Boxed, so
        /// that this rare message does not make every message twice as big.
        membership: Box<Membership>,
    },
    /// "You were removed from the cluster": the answer to any message from
    /// an id the responder's configuration lists as removed (a node wiped
    /// and restarted under a removed id would otherwise campaign forever
    /// against a cluster that ignores it). The receiver stops campaigning
    /// and reports it ([`RaftNode::removed_from_cluster`](crate::RaftNode::removed_from_cluster)).
    Removed {
        /// The responder's current term.
        term: u64,
    },
    /// Follower read (thesis §6.4): a follower asks the leader for a read
    /// index for its read `id`.
    ReadIndex {
        /// The follower's term.
        term: u64,
        /// The follower's read id (echoed).
        id: u64,
    },
    /// Answer to [`Message::ReadIndex`].
    ReadIndexResponse {
        /// The leader's term.
        term: u64,
        /// The read.
        id: u64,
        /// The index to apply up to before serving the read; `None` when
        /// the responder cannot give one (not the leader, or leadership
        /// lost): the read fails.
        index: Option<u64>,
    },
    /// Answer to [`Message::InstallSnapshot`].
    InstallSnapshotResponse {
        /// The responder's current term.
        term: u64,
        /// The snapshot answered about.
        index: u64,
        /// The offset the follower expects next (bytes received so far).
        offset: u64,
        /// The follower holds everything up to `index` (installed now, or
        /// already committed).
        done: bool,
    },
}

impl Message {
    /// The term the message carries.
    pub fn term(&self) -> u64 {
        match self {
            Message::PreVote { term, .. }
            | Message::PreVoteResponse { term, .. }
            | Message::RequestVote { term, .. }
            | Message::RequestVoteResponse { term, .. }
            | Message::AppendEntries { term, .. }
            | Message::AppendEntriesResponse { term, .. }
            | Message::TimeoutNow { term }
            | Message::Removed { term }
            | Message::ReadIndex { term, .. }
            | Message::ReadIndexResponse { term, .. }
            | Message::InstallSnapshot { term, .. }
            | Message::InstallSnapshotResponse { term, .. } => *term,
        }
    }
}

impl synod_core::Message for Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::PreVote { .. } => "pre_vote",
            Message::PreVoteResponse { .. } => "pre_vote_response",
            Message::RequestVote { .. } => "request_vote",
            Message::RequestVoteResponse { .. } => "request_vote_response",
            Message::AppendEntries { entries, .. } if entries.is_empty() => "heartbeat",
            Message::AppendEntries { .. } => "append_entries",
            Message::AppendEntriesResponse { .. } => "append_entries_response",
            Message::TimeoutNow { .. } => "timeout_now",
            Message::Removed { .. } => "removed",
            Message::ReadIndex { .. } => "read_index",
            Message::ReadIndexResponse { .. } => "read_index_response",
            Message::InstallSnapshot { .. } => "install_snapshot",
            Message::InstallSnapshotResponse { .. } => "install_snapshot_response",
        }
    }

    fn size_bytes(&self) -> usize {
        const HEADER: usize = 48;
        match self {
            Message::AppendEntries { entries, .. } => {
                HEADER + entries.iter().map(Entry::size_bytes).sum::<usize>()
            }
            Message::InstallSnapshot { data, .. } => HEADER + data.len(),
            _ => HEADER,
        }
    }
}
