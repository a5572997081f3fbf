//! Multi-Paxos configuration.

use std::time::Duration;
use synod_core::NodeId;

/// A deliberately broken behaviour, for proving that the simulator's checkers
/// catch real protocol bugs. Never set outside tests and `synod sim --bug`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InjectedBug {
    /// Correct Multi-Paxos.
    #[default]
    None,
    /// A new leader ignores the accepted values reported in promises and
    /// fills every slot it recovers with a no-op (breaks P2c).
    IgnorePromisedValues,
}

/// Configuration of a Multi-Paxos core.
#[derive(Clone, Debug)]
pub struct Config {
    /// Every acceptor of the cluster, including this node (at most 64).
    pub voters: Vec<NodeId>,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound (exclusive) of the randomized election timeout.
    pub election_timeout_max: Duration,
    /// How often an idle leader sends heartbeats (empty accepts).
    pub heartbeat_interval: Duration,
    /// Followers that heard from a leader within `election_timeout_min`
    /// ignore prepares from other nodes, and a leader that has not heard
    /// from a majority for that long steps down (the analogue of Raft's
    /// check-quorum).
    pub check_quorum: bool,
    /// Most values (slots) in one accept message.
    pub max_values_per_accept: usize,
    /// Most commands in one slot (one proposal batch).
    pub max_commands_per_slot: usize,
    /// Most bytes of commands in one slot.
    pub max_bytes_per_slot: usize,
    /// Most bytes of values in one accept or promise (one value always
    /// goes, however large: `max_bytes_per_slot` bounds it). Keep it well
    /// under the transport's frame limit.
    pub max_bytes_per_message: usize,
    /// Most slots a leader keeps in flight (proposed, not yet chosen): the
    /// pipeline window; proposals beyond it are refused as busy.
    pub max_inflight_slots: usize,
    /// Most read barriers waiting at once.
    pub max_pending_reads: usize,
    /// Most accepted values one `Promise` carries; an acceptor holding more
    /// after the candidate's first unchosen slot answers in parts, each
    /// asked for by the candidate (one in flight).
    pub max_values_per_promise: usize,
    /// Take a snapshot once this many slots were chosen since the last one
    /// (0: never by count). The log up to the snapshot's slot minus
    /// `snapshot_trailing_slots` is then purged.
    pub snapshot_interval_slots: u64,
    /// Chosen slots kept before a new snapshot's slot when purging, so that
    /// a follower slightly behind catches up with accepts, not a snapshot.
    pub snapshot_trailing_slots: u64,
    /// Largest snapshot chunk. One chunk per peer is in flight at a time,
    /// so a sender holds at most `snapshot_chunk_bytes` per peer.
    pub snapshot_chunk_bytes: usize,
    /// A bug to inject (tests only).
    pub bug: InjectedBug,
}

impl Config {
    /// A configuration with the defaults for `voters`: election timeout
    /// 150–300 ms, heartbeats every 50 ms, check-quorum on, 256 values per
    /// promise, at most 4 MiB of values per accept or promise, no automatic snapshots (set `snapshot_interval_slots`), 100
    /// trailing slots kept after a purge, 64 KiB snapshot chunks.
    pub fn new(voters: Vec<NodeId>) -> Config {
        Config {
            voters,
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(50),
            check_quorum: true,
            max_values_per_accept: 256,
            max_commands_per_slot: 1024,
            max_bytes_per_slot: 1 << 20,
            max_bytes_per_message: 4 << 20,
            max_inflight_slots: 1024,
            max_pending_reads: 4096,
            max_values_per_promise: 256,
            snapshot_interval_slots: 0,
            snapshot_trailing_slots: 100,
            snapshot_chunk_bytes: 64 * 1024,
            bug: InjectedBug::None,
        }
    }

    /// Checks the configuration, naming the first problem found.
    pub fn validate(&self) -> Result<(), String> {
        if self.voters.is_empty() || self.voters.len() > 64 {
            return Err("a cluster needs 1 to 64 voters".into());
        }
        let mut ids = self.voters.clone();
        ids.sort();
        ids.dedup();
        if ids.len() != self.voters.len() {
            return Err("voter ids must be unique".into());
        }
        if ids.first() == Some(&NodeId(0)) {
            return Err("node id 0 is reserved (Ballot::ZERO)".into());
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
        if self.max_values_per_accept == 0
            || self.max_commands_per_slot == 0
            || self.max_bytes_per_slot == 0
            || self.max_bytes_per_message == 0
            || self.max_inflight_slots == 0
            || self.max_pending_reads == 0
            || self.max_values_per_promise == 0
            || self.snapshot_chunk_bytes == 0
        {
            return Err("batch and window limits must be positive".into());
        }
        Ok(())
    }
}
