//! The Raft node: the [`Protocol`] implementation that glues the parts
//! together — [`election`] (timer, votes, lease), [`replication`] and
//! [`progress`](crate::progress) (AppendEntries and per-follower flow
//! control), [`commit`] (§5.4.2), [`read_index`](crate::read_index)
//! (ReadIndex) and [`transfer`](crate::transfer) (leadership transfer) — and
//! owns the role
//! transitions and the term rules between them.
//!
//! ## Output order
//!
//! Every change to the term or vote pushes a [`Write::HardState`], and every
//! log change a [`Write::Append`], into `out.writes` *before* any message
//! that depends on it is pushed to `out.messages`; the driver syncs the
//! writes of an output before sending its messages. A leader counts its own
//! entries toward commit as soon as their write is in `out.writes`: nothing
//! leaves the node until it is durable. With
//! [`leader_parallel_write`](Config::leader_parallel_write) (thesis
//! §10.2.1) a leader's AppendEntries may leave, and the core be called
//! again, before its appends are synced: it counts its own log toward a
//! quorum only up to what the host reported with
//! [`persisted`](Protocol::persisted). After a restart
//! ([`recover`](Protocol::recover)) the commit and applied indexes start at
//! 0 and the node learns the commit index again from a leader.
//!
//! ## Snapshots and compaction (thesis §5)
//!
//! When `snapshot_interval_entries` (or `_bytes`) were applied since the last
//! snapshot the core emits [`SnapshotAction::Take`] at its applied index; once
//! the host calls [`snapshot_taken`](Protocol::snapshot_taken) the core
//! records the snapshot and purges its log up to the snapshot index minus
//! `snapshot_trailing_entries` ([`Write::Snapshot`]). A follower that needs
//! purged entries gets the snapshot in chunks (see [`replication`]); the
//! follower asks the host to store each chunk in order
//! ([`SnapshotAction::Write`]), installs the snapshot after the last one
//! ([`SnapshotAction::Install`] plus [`Write::Snapshot`]) and answers `done`.
//! Its partial snapshot is volatile: a crash restarts the transfer. After a
//! restart the commit and applied indexes start at the durable snapshot's.
//! Between calls `purged <= snapshot <= applied <= committed <= last` holds.
//!
//! ## Terms
//!
//! A message with a higher term turns the node into a follower of that term
//! (persisted), except: a pre-vote and a granted pre-vote answer never change
//! a term, and a vote request inside the check-quorum lease (not a transfer)
//! is ignored. A message with a lower term is answered with the node's own
//! term (so a stale leader or candidate steps down) or dropped.

use crate::commit;
use crate::config::{Config, InjectedBug, ReadMode};
use crate::election::{self, ElectionTimer, VoteResult, VoteTally, VoterState};
use crate::entry::{Entry, Payload};
use crate::lease::Lease;
use crate::log::RaftLog;
use crate::membership::{ConfigChangeError, ConfigLog, Membership};
use crate::message::Message;
use crate::progress::{Progress, ProgressState, SnapshotTransfer};
use crate::read_index::ReadQueue;
use crate::replication::{self, AppendContext};
use crate::storage::{Durable, Write};
use crate::transfer::Transfer;
use bytes::Bytes;
use std::collections::BTreeSet;
use synod_core::protocol::{SnapshotAction, SnapshotMeta};
use synod_core::{
    ClientRouting, Command, Committed, Event, NodeId, Output, ProposeError, Protocol, ReadId,
    ReadState, Role, Status, Time,
};

/// Output type of the Raft core.
pub type RaftOutput = Output<Message, Write>;

/// The [`AppendContext`] of `$node`, borrowing only its log (so that its
/// `peers` stay free to borrow mutably).
macro_rules! append_context {
    ($node:expr) => {
        AppendContext {
            log: &$node.log,
            term: $node.term,
            commit_index: $node.commit_index,
            read_round: $node.reads.round(),
            max_entries: $node.config.max_entries_per_append,
            max_bytes: $node.config.max_bytes_per_append,
            snapshot: $node.snapshot,
            chunk_bytes: $node.config.snapshot_chunk_bytes,
        }
    };
}

/// Bytes of an entry besides its command (see [`Entry::size_bytes`]).
const ENTRY_HEADER_BYTES: usize = 24;

/// A snapshot being received from the leader (volatile: a crash drops it and
/// the transfer restarts).
#[derive(Clone, Debug, PartialEq, Eq)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    /// The configuration at the snapshot's index, as the leader sent it.
    membership: Membership,
    /// Bytes received in order so far.
    received: u64,
}

/// One Raft replica's protocol state.
#[derive(Debug)]
pub struct RaftNode {
    id: NodeId,
    config: Config,
    /// Whether this node votes in the configuration in effect (only voters
    /// campaign).
    is_voter: bool,
    /// The configurations in the log; the latest is in effect.
    configs: ConfigLog,
    /// The latest time the driver handed in.
    now: Time,

    // Persistent state (Figure 2), mirrored by the writes emitted.
    term: u64,
    voted_for: Option<NodeId>,
    log: RaftLog,

    /// The latest snapshot taken or installed (index 0: none).
    snapshot: SnapshotMeta,

    // Volatile state.
    role: Role,
    leader: Option<NodeId>,
    commit_index: u64,
    applied_index: u64,
    timer: ElectionTimer,
    /// When the current leader was last heard from (the check-quorum lease).
    leader_contact: Time,
    votes: VoteTally,

    // Leader state.
    /// One per member (voter or learner) other than this node, ascending by
    /// id; kept on every node (followers use it to know their peers).
    peers: Vec<Progress>,
    heartbeat_deadline: Time,
    check_quorum_deadline: Time,
    reads: ReadQueue,
    transfer: Option<Transfer>,
    /// Index of this leader's no-op: commit reaching it means the leader has
    /// committed an entry of its term.
    term_start_index: u64,
    /// With `leader_parallel_write`: the host reported this node's log
    /// durable up to here ([`Protocol::persisted`]); a leader counts its
    /// own log toward a quorum only this far. Lowered when a conflicting
    /// suffix is replaced or a snapshot replaces the log.
    persisted_index: u64,
    /// Reused for quorum computations.
    scratch: Vec<u64>,

    // Snapshot state.
    /// The index of the [`SnapshotAction::Take`] the host is working on.
    snapshot_requested: Option<u64>,
    /// After [`RaftNode::snapshot_failed`]: the policy may ask again from
    /// this time on (a tick then checks it, so an idle node retries too).
    snapshot_retry_at: Option<Time>,
    /// Payload bytes applied since the last snapshot.
    applied_bytes_since_snapshot: u64,
    /// The snapshot being received, if any.
    incoming: Option<IncomingSnapshot>,
    /// A member told this node it was removed from the cluster
    /// ([`Message::Removed`]): it stops campaigning until a leader
    /// replicates to it again. Volatile: after a restart it learns again.
    told_removed: Option<NodeId>,

    // Lease and follower reads.
    /// Send times of this term's read rounds (leader, lease mode).
    lease: Lease,
    /// This leader sent `TimeoutNow` in its term: the target may be elected
    /// past the followers' leases, so no lease reads for the rest of it.
    timeout_now_sent: bool,
    /// In lease mode a node refuses votes until then after it boots: it
    /// forgot when it last heard from a leader whose lease it backs.
    boot_lease_until: Time,
    /// Reads this follower forwarded to its leader, with when to give up.
    forwarded_reads: Vec<(ReadId, Time)>,
}

impl RaftNode {
    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }
    /// The vote cast in the current term.
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }
    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The leader this node knows of in its current term.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// Highest index known committed.
    pub fn commit_index(&self) -> u64 {
        self.commit_index
    }
    /// Highest index emitted in `Output::committed`.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }
    /// Index of the last log entry (0 when empty).
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }
    /// Term of the entry at `index` (`Some(0)` for index 0, `None` when absent).
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.log.term_at(index)
    }
    /// The entry at `index`, if held.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        self.log.entry(index)
    }
    /// The last purged index (entries up to it are only in the snapshot).
    pub fn purged_index(&self) -> u64 {
        self.log.purged_index()
    }
    /// The latest snapshot taken or installed (index 0 when none).
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot
    }
    /// Entries held in memory.
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// Asks the host for a snapshot at the applied index now, whatever the
    /// policy says. Returns false (and does nothing) when one is already
    /// being taken or nothing was applied since the last one.
    pub fn trigger_snapshot(&mut self, out: &mut RaftOutput) -> bool {
        if self.snapshot_requested.is_some() || self.applied_index <= self.snapshot.index {
            return false;
        }
        self.request_snapshot(out);
        true
    }

    /// The host could not take the snapshot at `index` it was asked for
    /// (its snapshotter failed or is busy). The core forgets the request
    /// and asks again, at its applied index then, once the policy still
    /// says so and one minimum election timeout has passed (a tick checks,
    /// so an idle node retries too). An answer about any other index is
    /// ignored.
    pub fn snapshot_failed(&mut self, now: Time, index: u64) {
        self.now = self.now.max(now);
        if self.snapshot_requested == Some(index) {
            self.snapshot_requested = None;
            self.snapshot_retry_at = Some(self.now + self.config.election_timeout_min);
        }
    }

    /// Whether this node is out of the cluster, and who said so: `Some(id)`
    /// when member `id` answered it with [`Message::Removed`] (a node
    /// wiped and re-added under a removed id ends up here instead of
    /// campaigning), `Some(self)` when its own log removes it. Such a node
    /// is a [`Role::Learner`]: it never campaigns, and a membership change
    /// cannot bring its id back ([`ConfigChangeError::Removed`]).
    pub fn removed_from_cluster(&self) -> Option<NodeId> {
        self.told_removed.or_else(|| self.membership().is_removed(self.id).then_some(self.id))
    }

    /// The configuration in effect (the latest in the log, committed or
    /// not).
    pub fn membership(&self) -> &Membership {
        self.configs.latest()
    }

    /// The index of the entry holding the configuration in effect (0 for
    /// the bootstrap configuration; the snapshot index when it came with a
    /// snapshot).
    pub fn membership_index(&self) -> u64 {
        self.configs.latest_index()
    }

    /// The configuration in effect at `index` (for a snapshot at `index`).
    pub fn membership_at(&self, index: u64) -> &Membership {
        self.configs.at(index)
    }

    /// The index of the configuration entry in effect at `index` (0 for
    /// the bootstrap configuration; the snapshot index for one that came
    /// with the snapshot). At the commit index this is the latest
    /// committed configuration.
    pub fn membership_index_at(&self, index: u64) -> u64 {
        self.configs.index_at(index)
    }

    /// True when a membership change is in flight: the configuration in
    /// effect is joint or not yet committed.
    pub fn membership_change_pending(&self) -> bool {
        self.membership().is_joint() || self.configs.latest_index() > self.commit_index
    }

    /// Replaces the voters and learners (joint consensus, thesis §4.3). The
    /// leader appends C_old,new now and C_new by itself once C_old,new
    /// commits (a change of learners alone skips the joint phase). A leader
    /// that is not in C_new keeps leading until C_new commits, then steps
    /// down.
    ///
    /// # Errors
    /// [`ConfigChangeError::NotLeader`] on a non-leader;
    /// [`ConfigChangeError::InProgress`] while another change is in flight
    /// (or before the leader committed an entry of its term);
    /// [`ConfigChangeError::NotCaughtUp`] when a new voter's log is more
    /// than `max_promotion_lag_entries` behind the leader's;
    /// [`ConfigChangeError::Removed`] for an id removed earlier;
    /// [`ConfigChangeError::Invalid`] / [`ConfigChangeError::Transferring`].
    pub fn change_membership(
        &mut self,
        now: Time,
        voters: BTreeSet<NodeId>,
        learners: BTreeSet<NodeId>,
        out: &mut RaftOutput,
    ) -> Result<(), ConfigChangeError> {
        self.now = self.now.max(now);
        if self.role != Role::Leader {
            return Err(ConfigChangeError::NotLeader { hint: self.leader_hint() });
        }
        if self.transfer.is_some() {
            return Err(ConfigChangeError::Transferring);
        }
        if self.membership_change_pending() || self.commit_index < self.term_start_index {
            return Err(ConfigChangeError::InProgress);
        }
        let next = self.membership().change(&voters, &learners)?;
        let last_index = self.log.last_index();
        for &id in &next.voters {
            if self.membership().is_voter(id) || id == self.id {
                continue;
            }
            let match_index = self.peer_position(id).map_or(0, |p| self.peers[p].match_index);
            if match_index + self.config.max_promotion_lag_entries < last_index {
                return Err(ConfigChangeError::NotCaughtUp { id, match_index, last_index });
            }
        }
        self.append_config(next, out);
        self.check_invariants();
        Ok(())
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The leader's view of follower `peer` (leaders only; `None` otherwise
    /// or for an unknown peer).
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        if self.role != Role::Leader {
            return None;
        }
        self.peers.iter().find(|pr| pr.id == peer)
    }
    /// Read barriers waiting on this leader.
    pub fn pending_reads(&self) -> usize {
        self.reads.len()
    }
    /// The target of the leadership transfer in progress, if any.
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|t| t.to)
    }
    /// When this node's election timer fires (meaningful when not leader).
    pub fn election_deadline(&self) -> Time {
        self.timer.deadline()
    }

    /// Asks the leader to hand leadership to `to` (thesis §3.10). Proposals
    /// are refused with [`ProposeError::Transferring`] until the transfer
    /// happens or is abandoned (after `election_timeout_min`).
    pub fn transfer_leadership(
        &mut self,
        now: Time,
        to: NodeId,
        out: &mut RaftOutput,
    ) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { hint: self.leader_hint() });
        }
        if to == self.id {
            return Ok(());
        }
        let Some(position) =
            self.peer_position(to).filter(|_| self.membership().voters.contains(&to))
        else {
            return Err(ProposeError::Rejected("transfer target is not a voter"));
        };
        if self.transfer.is_some_and(|t| t.to == to) {
            return Ok(());
        }
        self.transfer = Some(Transfer::new(to, now + self.config.election_timeout_min));
        let match_index = self.peers[position].match_index;
        if !self.maybe_hand_over(to, match_index, out) {
            let ctx = append_context!(self);
            let pr = &mut self.peers[position];
            if pr.state == ProgressState::Probe {
                replication::resend_probe(&ctx, pr, out);
            } else {
                replication::send_appends(&ctx, pr, out);
            }
        }
        self.check_invariants();
        Ok(())
    }

    // ----- helpers -------------------------------------------------------

    /// The leader to name in a `NotLeader` answer: the known leader, but
    /// only while it was heard from within the longest election timeout.
    /// A node cut off from the cluster (a learner never campaigns, so its
    /// term never moves on; a removed node is never contacted again) would
    /// otherwise keep pointing clients at a leader that is long gone.
    fn leader_hint(&self) -> Option<NodeId> {
        let fresh =
            self.now.saturating_since(self.leader_contact) <= self.config.election_timeout_max;
        self.leader.filter(|&l| l == self.id || fresh)
    }

    fn peer_position(&self, id: NodeId) -> Option<usize> {
        self.peers.iter().position(|pr| pr.id == id)
    }

    /// The match index of voter `id` as the leader counts it (its own last
    /// index for itself).
    fn match_of(&self, id: NodeId) -> u64 {
        if id == self.id {
            return self.own_durable_index();
        }
        self.peer_position(id).map_or(0, |p| self.peers[p].match_index)
    }

    /// How far this node's own log counts toward a quorum: all of it, or
    /// with `leader_parallel_write` what the host reported durable.
    fn own_durable_index(&self) -> u64 {
        if self.config.leader_parallel_write
            && self.config.bug != InjectedBug::CountUnsyncedLeaderAppends
        {
            self.persisted_index.min(self.log.last_index())
        } else {
            self.log.last_index()
        }
    }

    /// The configuration in effect changed (an entry appended or truncated,
    /// a snapshot installed, a restart): recompute whether this node votes,
    /// its role, and its peers (a leader starts probing new members).
    fn on_membership_changed(&mut self, out: &mut RaftOutput) {
        let now = self.now;
        let membership = self.configs.latest();
        let members = membership.members();
        let was_voter = self.is_voter;
        self.is_voter = membership.is_voter(self.id) && self.told_removed.is_none();
        let mut peers = Vec::with_capacity(members.len());
        let last_index = self.log.last_index();
        for id in members.into_iter().filter(|&id| id != self.id) {
            match self.peer_position(id) {
                Some(p) => peers.push(self.peers[p].clone()),
                None => {
                    let mut pr = Progress::new(id, self.config.max_inflight_appends);
                    if self.role == Role::Leader {
                        pr.reset(last_index, now);
                    }
                    peers.push(pr);
                }
            }
        }
        self.peers = peers;
        if self.transfer.is_some_and(|t| !self.configs.latest().voters.contains(&t.to)) {
            self.transfer = None;
        }
        match self.role {
            Role::Leader => {}
            Role::Learner if self.is_voter => {
                self.set_role(Role::Follower, false, out);
                self.timer.reset(now);
            }
            Role::Follower | Role::PreCandidate | Role::Candidate if !self.is_voter => {
                self.set_role(Role::Learner, false, out);
            }
            _ => {
                if self.is_voter && !was_voter {
                    self.timer.reset(now);
                }
            }
        }
    }

    /// The leader appends configuration `next` to its log and starts
    /// replicating it.
    fn append_config(&mut self, next: Membership, out: &mut RaftOutput) {
        assert_eq!(self.role, Role::Leader, "only a leader appends configurations");
        let entry = Entry {
            term: self.term,
            index: self.log.last_index() + 1,
            payload: Payload::Config(Box::new(next.clone())),
        };
        self.configs.push(entry.index, next);
        self.log.push(entry.clone());
        out.writes.push(Write::Append { entries: vec![entry] });
        self.on_membership_changed(out);
        self.broadcast_appends(out);
        self.maybe_commit(out);
    }

    /// A leader that is not a voter of the committed configuration in
    /// effect (it removed itself) steps down (thesis §4.2.2).
    fn maybe_step_down_removed(&mut self, out: &mut RaftOutput) {
        if self.role == Role::Leader
            && !self.is_voter
            && self.configs.latest_index() <= self.commit_index
        {
            self.become_follower(self.now, self.term, None, out);
        }
    }

    /// `out.writes[from..]` holds what a follower's AppendEntries changed:
    /// the configurations follow its log.
    /// The writes from `from` on may replace positions the host reported
    /// durable: those count again only once reported anew.
    fn forget_replaced_persistence(&mut self, from: usize, out: &RaftOutput) {
        for w in &out.writes[from..] {
            if let Write::Append { entries } = w
                && let Some(first) = entries.first()
            {
                self.persisted_index = self.persisted_index.min(first.index - 1);
            }
        }
    }

    fn track_appended_configs(&mut self, from: usize, out: &mut RaftOutput) {
        let mut changed = false;
        for w in &out.writes[from..] {
            if let Write::Append { entries } = w
                && let Some(first) = entries.first()
            {
                if self.configs.latest_index() >= first.index {
                    self.configs.truncate_from(first.index);
                    changed = true;
                }
                for e in entries {
                    if let Some(m) = e.membership() {
                        self.configs.push(e.index, m.clone());
                        changed = true;
                    }
                }
            }
        }
        if changed {
            self.on_membership_changed(out);
        }
    }

    fn in_lease(&self, now: Time) -> bool {
        now < self.boot_lease_until
            || election::in_lease(
                self.config.check_quorum,
                self.role == Role::Leader,
                self.leader,
                self.leader_contact,
                self.config.election_timeout_min,
                now,
            )
    }

    fn persist_hard_state(&self, out: &mut RaftOutput) {
        out.writes.push(Write::HardState { term: self.term, voted_for: self.voted_for });
    }

    fn set_leader(&mut self, leader: Option<NodeId>, out: &mut RaftOutput) {
        if self.leader != leader {
            self.leader = leader;
            self.fail_forwarded_reads(Time::MAX, out);
            out.events.push(Event::LeaderChanged { leader, epoch: self.term });
        }
    }

    fn set_role(&mut self, role: Role, term_changed: bool, out: &mut RaftOutput) {
        if self.role != role || term_changed {
            self.role = role;
            out.events.push(Event::RoleChanged { role, epoch: self.term });
        }
    }

    /// Invariants that hold between calls; a violation is a crash.
    fn check_invariants(&self) {
        assert!(
            self.log.purged_index() <= self.snapshot.index
                && self.snapshot.index <= self.applied_index,
            "compaction invariant: purged {} <= snapshot {} <= applied {}",
            self.log.purged_index(),
            self.snapshot.index,
            self.applied_index
        );
        assert!(
            self.commit_index <= self.log.last_index() || self.config.bug != InjectedBug::None,
            "commit_index {} beyond last_index {}",
            self.commit_index,
            self.log.last_index()
        );
        assert!(self.applied_index <= self.commit_index, "applied beyond commit");
        assert!(self.log.last_term() <= self.term, "log holds a term from the future");
        match self.role {
            Role::Leader => {
                assert_eq!(self.leader, Some(self.id), "a leader knows it leads");
                assert_eq!(self.voted_for, Some(self.id), "a leader voted for itself");
            }
            Role::Candidate => {
                assert_eq!(self.voted_for, Some(self.id), "a candidate votes for itself")
            }
            Role::PreCandidate | Role::Follower | Role::Learner => {
                assert!(self.transfer.is_none() && self.reads.is_empty(), "leader state left over");
            }
        }
    }

    /// Emits every committed, not yet applied entry, in order.
    fn apply(&mut self, out: &mut RaftOutput) {
        while self.applied_index < self.commit_index {
            let index = self.applied_index + 1;
            let Some(entry) = self.log.entry(index) else {
                // Only reachable with an injected bug that truncated a
                // committed entry; the checkers report it.
                break;
            };
            if let Payload::Command(c) = &entry.payload {
                self.applied_bytes_since_snapshot += c.size_bytes() as u64;
            }
            out.committed.push(Committed { index, command: entry.command().cloned(), time: None });
            self.applied_index = index;
        }
        self.maybe_request_snapshot(out);
    }

    // ----- snapshots -----------------------------------------------------

    /// The snapshot policy: every `snapshot_interval_entries` entries or
    /// `snapshot_interval_bytes` bytes applied.
    fn maybe_request_snapshot(&mut self, out: &mut RaftOutput) {
        if self.snapshot_requested.is_some() || self.applied_index <= self.snapshot.index {
            return;
        }
        if self.snapshot_retry_at.is_some_and(|t| self.now < t) {
            return; // the host failed the last one: back off
        }
        let entries = self.config.snapshot_interval_entries;
        let bytes = self.config.snapshot_interval_bytes;
        let by_count = entries > 0 && self.applied_index - self.snapshot.index >= entries;
        let by_size = bytes > 0 && self.applied_bytes_since_snapshot >= bytes;
        if by_count || by_size {
            self.request_snapshot(out);
        }
    }

    fn request_snapshot(&mut self, out: &mut RaftOutput) {
        self.snapshot_requested = Some(self.applied_index);
        self.snapshot_retry_at = None;
        out.snapshots.push(SnapshotAction::Take { index: self.applied_index });
    }

    /// Adopts the snapshot `meta` (taken here or installed from the leader):
    /// records it, purges the log up to `purge_index` (or replaces a log that
    /// disagrees with it) and persists that.
    fn adopt_snapshot(
        &mut self,
        meta: SnapshotMeta,
        purge_index: u64,
        membership: Membership,
        out: &mut RaftOutput,
    ) {
        assert!(meta.index > self.snapshot.index, "snapshots only move forward");
        self.snapshot = meta;
        self.applied_bytes_since_snapshot = 0;
        let keep_tail = self.log.matches(meta.index, meta.epoch);
        if !keep_tail {
            self.persisted_index = self.persisted_index.min(meta.index);
        }
        self.log.apply_snapshot(meta.index, meta.epoch, purge_index);
        self.configs.rebase(meta.index, membership.clone(), keep_tail);
        out.writes.push(Write::Snapshot { meta, purge_index, membership });
        if !keep_tail {
            self.on_membership_changed(out);
        }
    }

    /// The last chunk of the leader's snapshot arrived: install it.
    fn install_snapshot(
        &mut self,
        meta: SnapshotMeta,
        membership: Membership,
        out: &mut RaftOutput,
    ) {
        assert!(meta.index > self.commit_index, "installing a snapshot of committed entries");
        self.incoming = None;
        self.snapshot_requested = None;
        out.snapshots.push(SnapshotAction::Install { meta });
        self.adopt_snapshot(meta, meta.index, membership, out);
        self.commit_index = meta.index;
        self.applied_index = meta.index;
    }

    // ----- role transitions ---------------------------------------------

    /// Becomes a follower in `term` (>= the current term), following
    /// `leader` if known.
    fn become_follower(
        &mut self,
        now: Time,
        term: u64,
        leader: Option<NodeId>,
        out: &mut RaftOutput,
    ) {
        assert!(term >= self.term, "term would go back from {} to {term}", self.term);
        let term_changed = term > self.term;
        if term_changed {
            self.term = term;
            self.voted_for = None;
            self.persist_hard_state(out);
        }
        if self.role == Role::Leader {
            let term = self.term;
            for (to, id) in self.reads.fail_all(&mut out.events) {
                out.send(to, Message::ReadIndexResponse { term, id: id.0, index: None });
            }
            self.transfer = None;
        }
        let role = if self.is_voter { Role::Follower } else { Role::Learner };
        self.set_role(role, term_changed, out);
        self.set_leader(leader, out);
        if leader.is_some() {
            self.leader_contact = now;
        }
        self.timer.reset(now);
    }

    fn campaign(&mut self, now: Time, out: &mut RaftOutput) {
        if self.config.pre_vote {
            self.become_pre_candidate(now, out);
        } else {
            self.become_candidate(now, false, out);
        }
    }

    /// Pre-vote (thesis §9.6): asks whether an election for `term + 1` could
    /// succeed, changing neither term nor vote.
    fn become_pre_candidate(&mut self, now: Time, out: &mut RaftOutput) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        self.set_role(Role::PreCandidate, false, out);
        self.set_leader(None, out);
        self.votes.clear();
        self.votes.record(self.id, true);
        self.timer.reset(now);
        if self.votes.result_in(self.configs.latest()) == VoteResult::Won {
            self.become_candidate(now, false, out);
            return;
        }
        let msg = Message::PreVote {
            term: self.term + 1,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        };
        for id in self.configs.latest().all_voters().filter(|&id| id != self.id) {
            out.send(id, msg.clone());
        }
    }

    /// A real election: term + 1, vote for self, persisted before the
    /// RequestVotes are pushed.
    fn become_candidate(&mut self, now: Time, transfer: bool, out: &mut RaftOutput) {
        assert_ne!(self.role, Role::Leader, "a leader does not campaign");
        self.term += 1;
        self.voted_for = Some(self.id);
        self.persist_hard_state(out);
        self.set_role(Role::Candidate, true, out);
        self.set_leader(None, out);
        self.votes.clear();
        self.votes.record(self.id, true);
        self.timer.reset(now);
        if self.votes.result_in(self.configs.latest()) == VoteResult::Won {
            self.become_leader(now, out);
            return;
        }
        let msg = Message::RequestVote {
            term: self.term,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            transfer,
        };
        for id in self.configs.latest().all_voters().filter(|&id| id != self.id) {
            out.send(id, msg.clone());
        }
    }

    /// Leadership: reset every follower's progress, append the term's no-op
    /// (§5.4.2, thesis §6.4) and start replicating it.
    fn become_leader(&mut self, now: Time, out: &mut RaftOutput) {
        assert_eq!(self.role, Role::Candidate, "only a candidate becomes leader");
        assert!(self.reads.is_empty() && self.transfer.is_none());
        self.set_role(Role::Leader, false, out);
        self.set_leader(Some(self.id), out);
        let last_index = self.log.last_index();
        for pr in &mut self.peers {
            pr.reset(last_index, now);
        }
        self.heartbeat_deadline = now + self.config.heartbeat_interval;
        self.check_quorum_deadline = now + self.config.election_timeout_min;
        self.incoming = None;
        self.lease.clear();
        self.timeout_now_sent = false;
        let noop = Entry { term: self.term, index: last_index + 1, payload: Payload::Noop };
        self.term_start_index = noop.index;
        self.log.push(noop.clone());
        out.writes.push(Write::Append { entries: vec![noop] });
        self.broadcast_appends(out);
        self.maybe_commit(out);
    }

    // ----- leader: replication, commit, reads ----------------------------

    fn broadcast_appends(&mut self, out: &mut RaftOutput) {
        let ctx = append_context!(self);
        for pr in &mut self.peers {
            replication::send_appends(&ctx, pr, out);
        }
    }

    /// The periodic heartbeat: a follower in Probe mode gets its probe again
    /// (it may have been lost); one in Replicate mode an empty AppendEntries
    /// at its `next_index - 1`, which it rejects if an append was lost.
    fn broadcast_heartbeats(&mut self, out: &mut RaftOutput) {
        if self.config.read_mode == ReadMode::Lease {
            let round = self.reads.start_round();
            self.lease.record(round, self.now);
        }
        let ctx = append_context!(self);
        for pr in &mut self.peers {
            match pr.state {
                ProgressState::Probe => replication::resend_probe(&ctx, pr, out),
                ProgressState::Replicate | ProgressState::Snapshot => {
                    replication::send_heartbeat(&ctx, pr, out)
                }
            }
        }
    }

    fn maybe_commit(&mut self, out: &mut RaftOutput) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let quorum_index = self.configs.latest().quorum_value(|id| self.match_of(id), &mut scratch);
        self.scratch = scratch;
        let quorum_index = quorum_index.min(self.log.last_index());
        let new_commit = commit::advance_commit(
            &self.log,
            self.term,
            self.commit_index,
            quorum_index,
            self.config.bug,
        );
        if new_commit > self.commit_index {
            self.commit_index = new_commit;
            self.apply(out);
            if self.commit_index >= self.term_start_index {
                self.reads.assign_index(self.commit_index);
            }
            self.release_reads(out);
            // Joint consensus: once C_old,new is committed, C_new follows.
            if self.role == Role::Leader
                && self.membership().is_joint()
                && self.configs.latest_index() <= self.commit_index
            {
                let next = self.membership().leave_joint();
                self.append_config(next, out);
            }
        }
    }

    fn release_reads(&mut self, out: &mut RaftOutput) {
        if self.reads.is_empty() {
            return;
        }
        let confirmed_round = self.confirmed_round();
        let mut remote = Vec::new();
        self.reads.release(confirmed_round, &mut out.reads, &mut remote);
        let term = self.term;
        for (to, rs) in remote {
            out.send(to, Message::ReadIndexResponse { term, id: rs.id.0, index: Some(rs.index) });
        }
    }

    /// The newest read round a quorum acknowledged (this leader counts as
    /// acknowledging every round).
    fn confirmed_round(&mut self) -> u64 {
        let round = self.reads.round();
        let mut scratch = std::mem::take(&mut self.scratch);
        let acked = |id: NodeId| {
            if id == self.id {
                round
            } else {
                self.peer_position(id).map_or(0, |p| self.peers[p].read_round_acked)
            }
        };
        let confirmed_round = self.configs.latest().quorum_value(acked, &mut scratch).min(round);
        self.scratch = scratch;
        confirmed_round
    }

    /// True when this leader may answer a read at its commit index without
    /// a round trip (see [`crate::lease`]).
    fn lease_valid(&mut self, now: Time) -> bool {
        if self.config.read_mode != ReadMode::Lease
            || self.role != Role::Leader
            || self.transfer.is_some()
            || self.timeout_now_sent
            || self.commit_index < self.term_start_index
        {
            return false;
        }
        let confirmed_round = self.confirmed_round();
        self.lease.expiry(confirmed_round).is_some_and(|end| now < end)
    }

    /// When this leader's lease ends, if it holds one at `now` (lease
    /// mode).
    pub fn lease_expiry(&mut self, now: Time) -> Option<Time> {
        if !self.lease_valid(now) {
            return None;
        }
        let confirmed_round = self.confirmed_round();
        self.lease.expiry(confirmed_round)
    }

    /// Leader: queues read `id` (of follower `from`, if set) under a new
    /// read round and sends the heartbeats carrying it.
    fn queue_read(&mut self, from: Option<NodeId>, id: ReadId, out: &mut RaftOutput) {
        let index = (self.commit_index >= self.term_start_index).then_some(self.commit_index);
        let round = self.reads.push_from(from, id, index);
        if self.config.read_mode == ReadMode::Lease {
            self.lease.record(round, self.now);
        }
        let ctx = append_context!(self);
        for pr in &mut self.peers {
            replication::send_heartbeat(&ctx, pr, out);
        }
        self.release_reads(out);
    }

    /// Fails every forwarded read whose deadline is at or before `now`
    /// (`Time::MAX`: all of them).
    fn fail_forwarded_reads(&mut self, now: Time, out: &mut RaftOutput) {
        self.forwarded_reads.retain(|&(id, deadline)| {
            let keep = deadline > now;
            if !keep {
                out.events.push(Event::ReadFailed { id });
            }
            keep
        });
    }

    /// Leader: follower `from` asks for a read index for its read `id`.
    fn on_read_index(&mut self, now: Time, from: NodeId, id: u64, out: &mut RaftOutput) {
        let term = self.term;
        if self.role != Role::Leader || self.reads.is_full() {
            out.send(from, Message::ReadIndexResponse { term, id, index: None });
        } else if self.lease_valid(now) {
            let index = Some(self.commit_index);
            out.send(from, Message::ReadIndexResponse { term, id, index });
        } else {
            self.queue_read(Some(from), ReadId(id), out);
        }
    }

    /// Follower: the leader answered a forwarded read.
    fn on_read_index_response(&mut self, id: u64, index: Option<u64>, out: &mut RaftOutput) {
        let id = ReadId(id);
        let Some(position) = self.forwarded_reads.iter().position(|&(r, _)| r == id) else {
            return;
        };
        self.forwarded_reads.remove(position);
        match index {
            Some(index) => out.reads.push(ReadState { id, index }),
            None => out.events.push(Event::ReadFailed { id }),
        }
    }

    /// Sends `TimeoutNow` if a transfer to `peer` waits and `peer` caught up.
    fn maybe_hand_over(&mut self, peer: NodeId, match_index: u64, out: &mut RaftOutput) -> bool {
        let last_index = self.log.last_index();
        let ready = self
            .transfer
            .as_mut()
            .is_some_and(|t| t.ready_to_hand_over(peer, match_index, last_index));
        if ready {
            self.timeout_now_sent = true;
            out.send(peer, Message::TimeoutNow { term: self.term });
        }
        ready
    }

    fn quorum_active(&self, now: Time) -> bool {
        let window = self.config.election_timeout_min;
        let heard = |id: NodeId| {
            id == self.id
                || self
                    .peer_position(id)
                    .is_some_and(|p| now.saturating_since(self.peers[p].last_heard) <= window)
        };
        self.configs.latest().is_quorum(heard)
    }

    fn leader_tick(&mut self, now: Time, out: &mut RaftOutput) {
        if self.transfer.is_some_and(|t| t.expired(now)) {
            self.transfer = None;
        }
        if self.config.check_quorum && now >= self.check_quorum_deadline {
            self.check_quorum_deadline = now + self.config.election_timeout_min;
            if !self.quorum_active(now) {
                self.become_follower(now, self.term, None, out);
                return;
            }
        }
        if now >= self.heartbeat_deadline {
            self.heartbeat_deadline = now + self.config.heartbeat_interval;
            self.broadcast_heartbeats(out);
        }
    }

    // ----- message handlers ---------------------------------------------

    /// Answers a message from an older term with this node's term, so that a
    /// stale leader or candidate learns it is behind.
    fn answer_stale(&self, from: NodeId, msg: &Message, out: &mut RaftOutput) {
        let term = self.term;
        let reply = match msg {
            Message::AppendEntries { prev_log_index, read_round, .. } => {
                Message::AppendEntriesResponse {
                    term,
                    success: false,
                    match_index: *prev_log_index,
                    conflict_term: 0,
                    conflict_index: 0,
                    read_round: *read_round,
                }
            }
            Message::RequestVote { .. } => Message::RequestVoteResponse { term, granted: false },
            Message::InstallSnapshot { index, .. } => {
                Message::InstallSnapshotResponse { term, index: *index, offset: 0, done: false }
            }
            Message::PreVote { .. } => Message::PreVoteResponse { term, granted: false },
            Message::ReadIndex { id, .. } => {
                Message::ReadIndexResponse { term, id: *id, index: None }
            }
            _ => return,
        };
        out.send(from, reply);
    }

    fn voter_state(&self) -> VoterState {
        // The vote-twice bug is a follower's: candidates and leaders keep
        // their vote for themselves.
        let bug = if self.role == Role::Follower { self.config.bug } else { InjectedBug::None };
        VoterState { term: self.term, voted_for: self.voted_for, leader: self.leader, bug }
    }

    fn on_pre_vote(
        &mut self,
        now: Time,
        from: NodeId,
        term: u64,
        last_log_index: u64,
        last_log_term: u64,
        out: &mut RaftOutput,
    ) {
        let log_ok = self.log.is_up_to_date(last_log_index, last_log_term);
        let granted = !self.in_lease(now)
            && election::grants_vote(&self.voter_state(), from, term, true, log_ok);
        let term = if granted { term } else { self.term };
        out.send(from, Message::PreVoteResponse { term, granted });
    }

    fn on_pre_vote_response(
        &mut self,
        now: Time,
        from: NodeId,
        term: u64,
        granted: bool,
        out: &mut RaftOutput,
    ) {
        if self.role != Role::PreCandidate || (granted && term != self.term + 1) {
            return;
        }
        self.votes.record(from, granted);
        match self.votes.result_in(self.configs.latest()) {
            VoteResult::Won => self.become_candidate(now, false, out),
            VoteResult::Lost => self.become_follower(now, self.term, None, out),
            VoteResult::Pending => {}
        }
    }

    fn on_request_vote(
        &mut self,
        now: Time,
        from: NodeId,
        last_log_index: u64,
        last_log_term: u64,
        out: &mut RaftOutput,
    ) {
        let log_ok = self.log.is_up_to_date(last_log_index, last_log_term);
        let granted = election::grants_vote(&self.voter_state(), from, self.term, false, log_ok);
        if granted {
            if self.voted_for != Some(from) {
                self.voted_for = Some(from);
                self.persist_hard_state(out);
            }
            if self.role != Role::Leader {
                self.timer.reset(now);
            }
        }
        out.send(from, Message::RequestVoteResponse { term: self.term, granted });
    }

    fn on_vote_response(&mut self, now: Time, from: NodeId, granted: bool, out: &mut RaftOutput) {
        if self.role != Role::Candidate {
            return;
        }
        self.votes.record(from, granted);
        match self.votes.result_in(self.configs.latest()) {
            VoteResult::Won => self.become_leader(now, out),
            VoteResult::Lost => self.become_follower(now, self.term, None, out),
            VoteResult::Pending => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append(
        &mut self,
        now: Time,
        from: NodeId,
        prev_log_index: u64,
        prev_log_term: u64,
        entries: Vec<Entry>,
        leader_commit: u64,
        read_round: u64,
        out: &mut RaftOutput,
    ) {
        if !self.accept_leader(now, from, out) {
            return;
        }
        let writes_before = out.writes.len();
        let result = replication::accept_append(
            &mut self.log,
            self.term,
            self.commit_index,
            self.config.bug,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            read_round,
            &mut out.writes,
        );
        self.commit_index = result.commit_index;
        out.send(from, result.response);
        self.forget_replaced_persistence(writes_before, out);
        self.track_appended_configs(writes_before, out);
        self.apply(out);
    }

    /// `from` sent an AppendEntries or InstallSnapshot of this node's term:
    /// it leads. Follows it (a candidate steps down) and restarts the
    /// election timer. Returns false when this node leads the term itself
    /// (possible only with an injected bug).
    fn accept_leader(&mut self, now: Time, from: NodeId, out: &mut RaftOutput) -> bool {
        match self.role {
            Role::Leader => {
                // Two leaders in one term: impossible in correct Raft.
                assert!(
                    self.config.bug != InjectedBug::None,
                    "{} leads term {} but {from} sent AppendEntries in it",
                    self.id,
                    self.term
                );
                return false;
            }
            Role::Candidate | Role::PreCandidate => {
                self.become_follower(now, self.term, Some(from), out)
            }
            Role::Follower | Role::Learner => {
                assert!(
                    self.leader.is_none_or(|l| l == from) || self.config.bug != InjectedBug::None,
                    "{} knows leader {:?} in term {} but {from} sent AppendEntries",
                    self.id,
                    self.leader,
                    self.term
                );
                self.set_leader(Some(from), out);
            }
        }
        assert_ne!(self.role, Role::Leader, "a leader never truncates or overwrites its own log");
        if self.told_removed.take().is_some() {
            // A leader replicates to it: it is a member after all.
            self.on_membership_changed(out);
        }
        self.leader_contact = now;
        self.timer.restart(now);
        true
    }

    /// A chunk of the leader's snapshot (thesis §5.1, Figure 5.3). Chunks
    /// are taken only in order; anything else is answered with the offset
    /// wanted next, which is how the leader resumes after a lost chunk.
    #[allow(clippy::too_many_arguments)]
    fn on_install_snapshot(
        &mut self,
        now: Time,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        membership: Membership,
        out: &mut RaftOutput,
    ) {
        if !self.accept_leader(now, from, out) {
            return;
        }
        let term = self.term;
        let respond = |offset: u64, done: bool, out: &mut RaftOutput| {
            out.send(
                from,
                Message::InstallSnapshotResponse { term, index: meta.index, offset, done },
            )
        };
        if meta.index <= self.commit_index {
            // Already committed here, so already matching the leader.
            respond(meta.size_bytes, true, out);
            return;
        }
        if offset == 0 {
            self.incoming = Some(IncomingSnapshot { meta, membership, received: 0 });
        }
        let Some(incoming) = self.incoming.as_mut().filter(|i| i.meta == meta) else {
            respond(0, false, out);
            return;
        };
        let len = data.len() as u64;
        if offset != incoming.received || offset + len > meta.size_bytes {
            respond(incoming.received, false, out);
            return;
        }
        if offset == 0 || len > 0 {
            out.snapshots.push(SnapshotAction::Write {
                index: meta.index,
                epoch: meta.epoch,
                offset,
                data,
            });
            incoming.received += len;
        }
        if incoming.received == meta.size_bytes {
            let membership = incoming.membership.clone();
            self.install_snapshot(meta, membership, out);
            respond(meta.size_bytes, true, out);
        } else {
            let received = incoming.received;
            respond(received, false, out);
        }
    }

    fn on_install_snapshot_response(
        &mut self,
        now: Time,
        from: NodeId,
        index: u64,
        offset: u64,
        done: bool,
        out: &mut RaftOutput,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(position) = self.peer_position(from) else { return };
        let pr = &mut self.peers[position];
        pr.last_heard = now;
        let Some(transfer) = pr.snapshot.filter(|t| t.meta.index == index) else { return };
        if pr.state != ProgressState::Snapshot {
            return;
        }
        if done {
            pr.snapshot_done(index);
            self.maybe_commit(out);
            let Some(position) = self.peer_position(from) else { return };
            let match_index = self.peers[position].match_index;
            if !self.maybe_hand_over(from, match_index, out) {
                let ctx = append_context!(self);
                replication::send_appends(&ctx, &mut self.peers[position], out);
            }
        } else if offset != transfer.offset && offset <= transfer.meta.size_bytes {
            pr.snapshot = Some(SnapshotTransfer { offset, ..transfer });
            let ctx = append_context!(self);
            replication::request_chunk(&ctx, &self.peers[position], out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append_response(
        &mut self,
        now: Time,
        from: NodeId,
        success: bool,
        match_index: u64,
        conflict_term: u64,
        conflict_index: u64,
        read_round: u64,
        out: &mut RaftOutput,
    ) {
        if self.role != Role::Leader || match_index > self.log.last_index() {
            return;
        }
        let Some(position) = self.peer_position(from) else { return };
        let next_from_hint = replication::next_index_from_hint(
            &self.log,
            match_index,
            conflict_term,
            conflict_index,
        );
        let read_round = read_round.min(self.reads.round());
        let pr = &mut self.peers[position];
        pr.last_heard = now;
        pr.read_round_acked = pr.read_round_acked.max(read_round);
        if success {
            let advanced = pr.on_ack(match_index);
            let match_index = pr.match_index;
            if advanced {
                self.maybe_commit(out);
            }
            // Committing may have appended a configuration (and so rebuilt
            // the peers, or dropped `from`).
            let Some(position) = self.peer_position(from) else {
                self.release_reads(out);
                return;
            };
            if !self.maybe_hand_over(from, match_index, out) {
                let ctx = append_context!(self);
                replication::send_appends(&ctx, &mut self.peers[position], out);
            }
        } else if pr.on_reject(match_index, next_from_hint) {
            let ctx = append_context!(self);
            replication::send_appends(&ctx, &mut self.peers[position], out);
        }
        self.release_reads(out);
    }

    /// Follower read: asks the leader for a read index.
    fn forward_read(
        &mut self,
        now: Time,
        id: ReadId,
        out: &mut RaftOutput,
    ) -> Result<(), ProposeError> {
        let hint = self.leader_hint();
        let Some(leader) = hint.filter(|_| self.config.follower_reads) else {
            return Err(ProposeError::NotLeader { hint });
        };
        if self.forwarded_reads.len() >= self.config.max_pending_reads {
            return Err(ProposeError::Busy("too many pending reads"));
        }
        self.forwarded_reads.push((id, now + self.config.election_timeout_max));
        out.send(leader, Message::ReadIndex { term: self.term, id: id.0 });
        Ok(())
    }

    /// Member `from` says this node's id was removed from the cluster: stop
    /// campaigning (as a learner) until a leader replicates to it again.
    fn on_told_removed(&mut self, now: Time, from: NodeId, out: &mut RaftOutput) {
        if self.told_removed.is_some() {
            return;
        }
        self.told_removed = Some(from);
        if self.role == Role::Leader {
            self.become_follower(now, self.term, None, out);
        }
        self.on_membership_changed(out);
    }

    fn on_timeout_now(&mut self, now: Time, out: &mut RaftOutput) {
        if self.role != Role::Leader && self.is_voter {
            self.become_candidate(now, true, out);
        }
    }
}

impl Protocol for RaftNode {
    type Config = Config;
    type Message = Message;
    type Write = Write;
    type Durable = Durable;

    /// Rebuilds node `id` from exactly `durable`; the commit and applied
    /// indexes start at 0. `seed` is mixed with `id`, so a driver handing
    /// every node the same seed still gets different election timeouts.
    ///
    /// # Panics
    /// If `config` is invalid or `durable` is not a log a core could have
    /// written (a node must not run on state it cannot trust).
    fn recover(id: NodeId, config: &Config, durable: &Durable, seed: u64, now: Time) -> Self {
        if let Err(problem) = config.validate() {
            panic!("invalid Raft configuration: {problem}");
        }
        let log =
            RaftLog::from_parts(durable.purged_index, durable.purged_term, durable.log.clone());
        let snapshot = durable.snapshot;
        assert!(
            log.purged_index() <= snapshot.index && snapshot.index <= log.last_index(),
            "durable snapshot {} outside the durable log {}..={}",
            snapshot.index,
            log.purged_index(),
            log.last_index()
        );
        assert!(
            log.last_term() <= durable.term,
            "durable log holds term {} beyond the durable term {}",
            log.last_term(),
            durable.term
        );
        let base = durable
            .snapshot_membership
            .clone()
            .unwrap_or_else(|| Membership::initial(config.voters.iter().copied()));
        let mut configs = ConfigLog::new(snapshot.index, base);
        for e in log.entries().iter().filter(|e| e.index > snapshot.index) {
            if let Some(m) = e.membership() {
                configs.push(e.index, m.clone());
            }
        }
        let membership = configs.latest();
        let is_voter = membership.is_voter(id);
        let seed = seed ^ id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut timer =
            ElectionTimer::new(seed, config.election_timeout_min, config.election_timeout_max, now);
        if is_voter && !membership.is_joint() && membership.voters.len() == 1 {
            timer.fire_at(now);
        }
        let peers = Vec::new();
        let recovered_last_index = log.last_index();
        let mut node = RaftNode {
            id,
            is_voter,
            configs,
            now,
            term: durable.term,
            voted_for: durable.voted_for,
            log,
            role: if is_voter { Role::Follower } else { Role::Learner },
            leader: None,
            snapshot,
            commit_index: snapshot.index,
            applied_index: snapshot.index,
            timer,
            leader_contact: Time::ZERO,
            votes: VoteTally::default(),
            scratch: Vec::with_capacity(peers.len() + 1),
            peers,
            heartbeat_deadline: Time::MAX,
            check_quorum_deadline: Time::MAX,
            reads: ReadQueue::new(config.max_pending_reads),
            transfer: None,
            term_start_index: u64::MAX,
            // Everything recovered was durable.
            persisted_index: recovered_last_index,
            config: config.clone(),
            snapshot_requested: None,
            snapshot_retry_at: None,
            applied_bytes_since_snapshot: 0,
            incoming: None,
            told_removed: None,
            lease: Lease::new(config.election_timeout_min, config.max_clock_drift),
            timeout_now_sent: false,
            boot_lease_until: if config.read_mode == ReadMode::Lease {
                now + config.election_timeout_min
            } else {
                Time::ZERO
            },
            forwarded_reads: Vec::new(),
        };
        node.on_membership_changed(&mut RaftOutput::new());
        node.check_invariants();
        node
    }

    fn apply_write(durable: &mut Durable, write: &Write) {
        durable.apply(write)
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn tick(&mut self, now: Time, out: &mut RaftOutput) {
        self.now = self.now.max(now);
        if self.role == Role::Leader {
            self.leader_tick(now, out);
        } else {
            self.fail_forwarded_reads(now, out);
            if self.is_voter && now >= self.timer.deadline() {
                self.campaign(now, out);
            }
        }
        if self.snapshot_retry_at.is_some_and(|t| now >= t) {
            self.snapshot_retry_at = None;
            self.maybe_request_snapshot(out);
        }
        self.check_invariants();
    }

    fn next_deadline(&self) -> Time {
        let retry = self.snapshot_retry_at.unwrap_or(Time::MAX);
        if self.role == Role::Leader {
            let check_quorum =
                if self.config.check_quorum { self.check_quorum_deadline } else { Time::MAX };
            let transfer = self.transfer.map_or(Time::MAX, |t| t.deadline);
            self.heartbeat_deadline.min(check_quorum).min(transfer).min(retry)
        } else {
            let forwarded = self.forwarded_reads.iter().map(|&(_, d)| d).min();
            let timer = if self.is_voter { self.timer.deadline() } else { Time::MAX };
            forwarded.map_or(timer, |d| timer.min(d)).min(retry)
        }
    }

    fn step(&mut self, now: Time, from: NodeId, msg: Message, out: &mut RaftOutput) {
        self.now = self.now.max(now);
        if from == self.id || from.0 == 0 {
            return;
        }
        if self.membership().is_removed(from) {
            // Removed ids are never members again (a wiped node re-added
            // under one could vote twice in a term): tell it, and ignore
            // what it says.
            if !matches!(msg, Message::Removed { .. }) {
                out.send(from, Message::Removed { term: self.term });
            }
            return;
        }
        if let Message::Removed { .. } = msg {
            self.on_told_removed(now, from, out);
            self.check_invariants();
            return;
        }
        let msg_term = msg.term();
        if msg_term > self.term {
            match msg {
                Message::PreVote { .. } | Message::PreVoteResponse { granted: true, .. } => {}
                Message::RequestVote { transfer: false, .. } if self.in_lease(now) => return,
                Message::AppendEntries { .. }
                | Message::TimeoutNow { .. }
                | Message::InstallSnapshot { .. } => {
                    self.become_follower(now, msg_term, Some(from), out)
                }
                _ => self.become_follower(now, msg_term, None, out),
            }
        } else if msg_term < self.term {
            self.answer_stale(from, &msg, out);
            return;
        }
        match msg {
            Message::PreVote { term, last_log_index, last_log_term } => {
                self.on_pre_vote(now, from, term, last_log_index, last_log_term, out)
            }
            Message::PreVoteResponse { term, granted } => {
                self.on_pre_vote_response(now, from, term, granted, out)
            }
            Message::RequestVote { last_log_index, last_log_term, .. } => {
                self.on_request_vote(now, from, last_log_index, last_log_term, out)
            }
            Message::RequestVoteResponse { granted, .. } => {
                self.on_vote_response(now, from, granted, out)
            }
            Message::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_round,
                ..
            } => self.on_append(
                now,
                from,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_round,
                out,
            ),
            Message::AppendEntriesResponse {
                success,
                match_index,
                conflict_term,
                conflict_index,
                read_round,
                ..
            } => self.on_append_response(
                now,
                from,
                success,
                match_index,
                conflict_term,
                conflict_index,
                read_round,
                out,
            ),
            Message::TimeoutNow { .. } => self.on_timeout_now(now, out),
            Message::Removed { .. } => unreachable!("handled before the term rules"),
            Message::ReadIndex { id, .. } => self.on_read_index(now, from, id, out),
            Message::ReadIndexResponse { id, index, .. } => {
                self.on_read_index_response(id, index, out)
            }
            Message::InstallSnapshot {
                index,
                last_term,
                size_bytes,
                offset,
                data,
                membership,
                ..
            } => {
                let meta = SnapshotMeta { index, epoch: last_term, size_bytes };
                self.on_install_snapshot(now, from, meta, offset, data, *membership, out)
            }
            Message::InstallSnapshotResponse { index, offset, done, .. } => {
                self.on_install_snapshot_response(now, from, index, offset, done, out)
            }
        }
        self.maybe_step_down_removed(out);
        self.check_invariants();
    }

    fn propose(
        &mut self,
        now: Time,
        commands: Vec<Command>,
        out: &mut RaftOutput,
    ) -> Result<(), ProposeError> {
        self.now = self.now.max(now);
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { hint: self.leader_hint() });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::Transferring);
        }
        if commands.is_empty() {
            return Err(ProposeError::Rejected("empty batch"));
        }
        if commands
            .iter()
            .any(|c| ENTRY_HEADER_BYTES + c.size_bytes() > self.config.max_bytes_per_append)
        {
            return Err(ProposeError::Rejected("command larger than max_bytes_per_append"));
        }
        if commands.len() > self.config.max_uncommitted_entries {
            return Err(ProposeError::Rejected("batch larger than max_uncommitted_entries"));
        }
        let uncommitted = (self.log.last_index() - self.commit_index) as usize;
        if uncommitted + commands.len() > self.config.max_uncommitted_entries {
            return Err(ProposeError::Busy("too many uncommitted entries"));
        }
        let first_index = self.log.last_index() + 1;
        let term = self.term;
        let entries = commands
            .into_iter()
            .zip(first_index..)
            .map(|(command, index)| Entry { term, index, payload: Payload::Command(command) })
            .collect::<Vec<_>>();
        for entry in &entries {
            self.log.push(entry.clone());
        }
        out.writes.push(Write::Append { entries });
        self.broadcast_appends(out);
        self.maybe_commit(out);
        self.check_invariants();
        Ok(())
    }

    /// Leader: answered at once while its lease holds (lease mode), else
    /// by ReadIndex. Follower with `follower_reads`: forwarded to the
    /// leader, which returns a read index.
    fn read(&mut self, now: Time, id: ReadId, out: &mut RaftOutput) -> Result<(), ProposeError> {
        self.now = self.now.max(now);
        if self.role != Role::Leader {
            return self.forward_read(now, id, out);
        }
        if self.reads.is_full() {
            return Err(ProposeError::Busy("too many pending reads"));
        }
        if self.lease_valid(now) {
            out.reads.push(ReadState { id, index: self.commit_index });
            return Ok(());
        }
        self.queue_read(None, id, out);
        self.check_invariants();
        Ok(())
    }

    fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            epoch: self.term,
            leader: self.leader,
            commit_index: self.commit_index,
            applied_index: self.applied_index,
            last_index: self.log.last_index(),
        }
    }

    fn client_routing(_config: &Config) -> ClientRouting {
        ClientRouting::Leader
    }

    fn snapshot_taken(&mut self, now: Time, index: u64, size_bytes: u64, out: &mut RaftOutput) {
        self.now = self.now.max(now);
        // A snapshot at or after the requested index answers the request
        // (a host may snapshot a later applied state than it was asked for).
        if self.snapshot_requested.is_some_and(|r| r <= index) {
            self.snapshot_requested = None;
        }
        if index <= self.snapshot.index || index > self.applied_index {
            return; // stale (a newer snapshot was installed meanwhile) or not ours
        }
        let epoch = self.log.term_at(index).expect("applied entries after the snapshot are held");
        let meta = SnapshotMeta { index, epoch, size_bytes };
        let purge_index = index
            .saturating_sub(self.config.snapshot_trailing_entries)
            .max(self.log.purged_index());
        let membership = self.configs.at(index).clone();
        self.adopt_snapshot(meta, purge_index, membership, out);
        self.check_invariants();
    }

    fn persisted(&mut self, now: Time, index: u64, out: &mut RaftOutput) {
        self.now = self.now.max(now);
        let index = index.min(self.log.last_index());
        if index <= self.persisted_index {
            return;
        }
        self.persisted_index = index;
        if self.role == Role::Leader && self.config.leader_parallel_write {
            self.maybe_commit(out);
            self.check_invariants();
        }
    }

    fn snapshot_chunk(
        &mut self,
        _now: Time,
        to: NodeId,
        index: u64,
        offset: u64,
        data: Bytes,
        out: &mut RaftOutput,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(position) = self.peer_position(to) else { return };
        let pr = &self.peers[position];
        let Some(t) = pr.snapshot else { return };
        let len = data.len() as u64;
        let wanted = pr.state == ProgressState::Snapshot
            && t.meta == self.snapshot
            && t.meta.index == index
            && t.offset == offset
            && len <= self.config.snapshot_chunk_bytes as u64
            && offset + len <= t.meta.size_bytes
            && (len > 0 || offset == t.meta.size_bytes);
        if !wanted {
            return;
        }
        out.send(
            to,
            Message::InstallSnapshot {
                term: self.term,
                index,
                last_term: t.meta.epoch,
                size_bytes: t.meta.size_bytes,
                offset,
                data,
                membership: Box::new(self.configs.at(index).clone()),
            },
        );
    }

    fn snapshot(&self) -> Option<SnapshotMeta> {
        (self.snapshot.index > 0).then_some(self.snapshot)
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod snapshot_tests;

#[cfg(test)]
#[path = "membership_tests.rs"]
mod membership_tests;

#[cfg(test)]
#[path = "read_tests.rs"]
mod read_tests;
