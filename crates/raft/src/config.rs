//! Raft configuration.

use std::time::Duration;
use synod_core::NodeId;

/// A deliberately broken behaviour, for proving that the simulator's checkers
/// catch real protocol bugs. Never set outside tests and `synod sim --bug`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InjectedBug {
    /// Correct Raft.
    #[default]
    None,
    /// Commit entries of earlier terms by counting replicas (ignores §5.4.2;
    /// the Figure 8 bug).
    CommitPreviousTermByCount,
    /// Grant a vote to every candidate of the current term, even after voting
    /// for another (two leaders in one term).
    VoteTwiceInTerm,
    /// With `leader_parallel_write`: the leader counts its own appends toward
    /// a quorum before they are durable (an acknowledged write is lost when
    /// the leader crashes before its fsync and a node without it is elected).
    CountUnsyncedLeaderAppends,
}

/// How a leader confirms it still leads before answering a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// ReadIndex (thesis §6.4): every read waits for a heartbeat round
    /// acknowledged by a quorum. Safe whatever the clocks do.
    #[default]
    ReadIndex,
    /// Lease reads (thesis §6.4.1, see [`crate::lease`]): while the lease
    /// from the last quorum-acknowledged heartbeat round lasts, the leader
    /// answers at once. **Assumes** clock rates differ by at most
    /// [`Config::max_clock_drift`]; needs `check_quorum`. Falls back to
    /// ReadIndex when the lease has lapsed.
    Lease,
}

/// Configuration of a Raft core.
#[derive(Clone, Debug)]
pub struct Config {
    /// The bootstrap voters: the configuration in effect until the log (or
    /// a snapshot) holds another one (see [`crate::membership`]). Every
    /// node of a cluster, including nodes added later, starts from the same
    /// list.
    pub voters: Vec<NodeId>,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound (exclusive) of the randomized election timeout.
    pub election_timeout_max: Duration,
    /// How often an idle leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// Run a pre-vote round before a real election (thesis §9.6).
    pub pre_vote: bool,
    /// Leaders step down after an election timeout without hearing from a
    /// quorum; followers that heard from a leader within the minimum election
    /// timeout ignore votes (thesis §6.2 / §9.6).
    pub check_quorum: bool,
    /// Most entries in one AppendEntries message.
    pub max_entries_per_append: usize,
    /// Most payload bytes in one AppendEntries message (at least one entry is
    /// always sent).
    pub max_bytes_per_append: usize,
    /// Most AppendEntries messages in flight to one follower in replicate mode.
    pub max_inflight_appends: usize,
    /// Most uncommitted entries a leader accepts before refusing proposals
    /// with [`ProposeError::Busy`](synod_core::ProposeError::Busy).
    pub max_uncommitted_entries: usize,
    /// Most read barriers waiting at once.
    pub max_pending_reads: usize,
    /// Take a snapshot once this many entries were applied since the last
    /// one (0: never by count). The log prefix up to the snapshot (minus
    /// `snapshot_trailing_entries`) is then purged.
    pub snapshot_interval_entries: u64,
    /// Take a snapshot once this many payload bytes were applied since the
    /// last one (0: never by size).
    pub snapshot_interval_bytes: u64,
    /// Entries kept before a new snapshot's index when purging, so that a
    /// follower slightly behind still catches up by AppendEntries.
    pub snapshot_trailing_entries: u64,
    /// Largest InstallSnapshot chunk. One chunk per follower is in flight at
    /// a time, so a leader holds at most `snapshot_chunk_bytes` per follower
    /// and a follower at most one chunk.
    pub snapshot_chunk_bytes: usize,
    /// How far (in entries) a new voter's log may lag the leader's when a
    /// membership change promotes it; further behind, the change is refused
    /// with `ConfigChangeError::NotCaughtUp` (add it as a learner first).
    pub max_promotion_lag_entries: u64,
    /// How the leader confirms leadership for reads.
    pub read_mode: ReadMode,
    /// The clock assumption of [`ReadMode::Lease`]: any two nodes' clocks
    /// advance at rates that differ by at most this fraction (0.1: while
    /// the leader's clock measures 1 s, a follower's measures at least
    /// 0.9 s). A lease lasts `election_timeout_min × (1 −
    /// max_clock_drift)` from the send time of the last heartbeat round a
    /// quorum acknowledged. In `[0, 1)`.
    pub max_clock_drift: f64,
    /// Followers (and learners) serve reads: they ask the leader for a read
    /// index ([`Message::ReadIndex`](crate::Message::ReadIndex)), and the
    /// read is released once they applied up to it. Off: they answer
    /// `NotLeader`.
    pub follower_reads: bool,
    /// The leader writes its own log in parallel with replicating it
    /// (thesis §10.2.1): it counts its own entries toward a quorum only
    /// once the host reported them durable with
    /// [`persisted`](synod_core::Protocol::persisted), so the host may send
    /// a leader's AppendEntries and keep calling the core while the
    /// leader's appends are still syncing. Off: the leader counts its
    /// entries as soon as their write is emitted, and the host must sync
    /// every output's writes before anything that depends on them.
    pub leader_parallel_write: bool,
    /// A bug to inject (tests only).
    pub bug: InjectedBug,
}

impl Config {
    /// A configuration with the defaults for `voters`: election timeout
    /// 150–300 ms, heartbeats every 50 ms, pre-vote and check-quorum on, no
    /// automatic snapshots (set `snapshot_interval_entries` / `_bytes`), 100
    /// trailing entries kept after a purge, 64 KiB snapshot chunks, new voters
    /// at most 100 entries behind, ReadIndex reads (lease reads assume a
    /// clock drift of at most 0.1), no follower reads.
    pub fn new(voters: Vec<NodeId>) -> Config {
        Config {
            voters,
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(50),
            pre_vote: true,
            check_quorum: true,
            max_entries_per_append: 256,
            max_bytes_per_append: 1 << 20,
            max_inflight_appends: 64,
            max_uncommitted_entries: 8192,
            max_pending_reads: 4096,
            snapshot_interval_entries: 0,
            snapshot_interval_bytes: 0,
            snapshot_trailing_entries: 100,
            snapshot_chunk_bytes: 64 * 1024,
            max_promotion_lag_entries: 100,
            read_mode: ReadMode::ReadIndex,
            max_clock_drift: 0.1,
            follower_reads: false,
            leader_parallel_write: false,
            bug: InjectedBug::None,
        }
    }

    /// Checks the configuration, naming the first problem found.
    pub fn validate(&self) -> Result<(), String> {
        if self.voters.is_empty() {
            return Err("a cluster needs at least one voter".into());
        }
        let mut ids = self.voters.clone();
        ids.sort();
        ids.dedup();
        if ids.len() != self.voters.len() {
            return Err("voter ids must be unique".into());
        }
        if self.election_timeout_min.is_zero()
            || self.election_timeout_max <= self.election_timeout_min
        {
            return Err("need 0 < election_timeout_min < election_timeout_max".into());
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.election_timeout_min
        {
            return Err("need 0 < heartbeat_interval < election_timeout_min".into());
        }
        if self.max_entries_per_append == 0
            || self.max_bytes_per_append == 0
            || self.max_inflight_appends == 0
            || self.max_uncommitted_entries == 0
            || self.max_pending_reads == 0
            || self.snapshot_chunk_bytes == 0
        {
            return Err("batch and window limits must be positive".into());
        }
        if !(0.0..1.0).contains(&self.max_clock_drift) {
            return Err("max_clock_drift must be in [0, 1)".into());
        }
        if self.read_mode == ReadMode::Lease && !self.check_quorum {
            return Err("lease reads need check_quorum".into());
        }
        Ok(())
    }
}
