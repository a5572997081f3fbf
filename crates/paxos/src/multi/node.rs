//! The Multi-Paxos node: the [`Protocol`] implementation. Every node is an
//! acceptor and a learner; one at a time leads as the distinguished
//! proposer.
//!
//! ## Leadership
//!
//! A follower that hears no leader for a randomized election timeout
//! becomes a candidate: it picks a ballot above any it has seen, promises it
//! to itself, and sends one `Prepare` for every slot from its first
//! unchosen slot (Phase 1 once for all slots). With promises from a
//! majority it leads: for each slot from there to the highest slot any
//! promise reported it adopts the value of the highest-ballot acceptance
//! reported, fills the holes with no-ops, and re-proposes them all in its
//! ballot, followed by one no-op of its own (chosen at once, it shows that
//! the new leader commits). From then on each proposal costs only Phase 2
//! (`Accept` / `Accepted`): two message delays from the leader.
//!
//! A leader sends heartbeats (empty accepts) and steps down when it has not
//! heard from a majority for `election_timeout_min` (check-quorum);
//! followers that heard from their leader that recently ignore other
//! candidates' prepares, so a rejoining node does not depose a healthy
//! leader. A leader refused by an acceptor that promised a higher ballot
//! runs Phase 1 again at once, above it.
//!
//! ## Partial connectivity
//!
//! Two rules keep leader election live when only some servers reach a
//! quorum (the OmniPaxos quorum-loss, constrained-election and chained
//! topologies, `synod sim --faults quorum-loss` etc.):
//!
//! - promising a candidate's prepare does not restart this node's own
//!   election timer (only a leader's accept does), so servers that can
//!   never win — they reach only one other server — cannot keep postponing
//!   the campaign of the quorum-connected server they reach;
//! - a node whose campaigns fewer than a majority answer (promise or nack)
//!   is not quorum-connected: it doubles its election timeout per such
//!   campaign (up to 16 times), so it rarely disturbs the servers that are,
//!   and returns to the usual pace once it hears from a majority again
//!   within an election timeout.
//!
//! ## Replication, commit and catch-up
//!
//! Proposals are batched (all commands of one `propose` call share one
//! slot) and pipelined (up to `max_inflight_slots` slots in flight). Every
//! accept and heartbeat carries the leader's chosen slot; a follower marks a
//! slot chosen once it is at or below that slot and holds a value accepted
//! in the *leader's* ballot (that value is the leader's, hence the chosen
//! one). Each answer carries the follower's own chosen slot; a follower
//! behind the leader's is sent the chosen values it misses, as accepts in
//! the leader's ballot (the leader would propose exactly those values).
//! Unchosen slots a follower has not acknowledged are sent again with each
//! heartbeat.
//!
//! ## Phase 1 promises are bounded
//!
//! A promise reports only the acceptances at or after the candidate's
//! first unchosen slot, and at most `max_values_per_promise` of them per
//! message: an acceptor holding more answers with the first part and
//! `more`, and the candidate asks for the next part with a `Prepare` from
//! the slot after it (one part in flight per acceptor; a lost part costs
//! the campaign, like a lost promise). The promise counts once its last
//! part is in. Compaction bounds what an acceptor holds after the
//! candidate's first unchosen slot — unless that slot lies inside the
//! acceptor's purged prefix, where it can no longer report what it
//! accepted. Then the candidate is behind a snapshot: the acceptor sends
//! it its snapshot instead of a promise (below), and the candidate, once it
//! installed it, campaigns again from its new first unchosen slot. (We
//! chose this over reporting the purged slots as "chosen" because the
//! values are gone; and over letting the candidate give up, because under
//! partial connectivity the lagging node may be the only one that can
//! reach a majority.)
//!
//! ## Snapshots and compaction
//!
//! Once `snapshot_interval_slots` slots were chosen since the last snapshot
//! the core emits [`SnapshotAction::Take`] at the position ending its
//! chosen slot (a snapshot covers whole slots: a slot's batch is one
//! decision); once the host calls [`snapshot_taken`](Protocol::snapshot_taken)
//! the core records the snapshot and purges every slot up to the
//! snapshot's minus `snapshot_trailing_slots` ([`Write::Snapshot`]); if the
//! host could not take it ([`PaxosNode::snapshot_failed`]), the core asks
//! again one minimum election timeout later, from a tick. Purged
//! slots are chosen, so nobody needs their acceptances again — except a
//! peer that has not learned them: a follower whose chosen slot lies in
//! the leader's purged prefix, or a candidate whose Phase 1 starts in an
//! acceptor's. That peer is sent the sender's snapshot in chunks of
//! `snapshot_chunk_bytes`, one in flight ([`SnapshotAction::Read`], then
//! [`Message::Snapshot`]); it stores each in-order chunk
//! ([`SnapshotAction::Write`]) and answers with the offset it wants next
//! ([`Message::SnapshotAck`]), so a lost chunk is resent from there (by the
//! leader with its next heartbeat, by an acceptor when the candidate
//! prepares again). After the last chunk it installs the snapshot
//! ([`SnapshotAction::Install`] plus [`Write::Snapshot`]): every slot up to
//! the snapshot's is chosen, the acceptances after it are kept (they are
//! still votes). Its partial snapshot is volatile: a crash restarts the
//! transfer. After a restart the chosen slot starts at the durable
//! snapshot's. Between calls `purged <= snapshot <= chosen <= last` slot
//! holds.
//!
//! ## Output order and durability
//!
//! Promises and acceptances are pushed to `out.writes` before any message
//! that reveals them; the leader counts its own acceptance at once (nothing
//! leaves before it is durable). Chosen slots are emitted in
//! [`Output::committed`] in order, one position per command of the slot's
//! batch (one for a no-op), so positions are consecutive from 1 on every
//! node. After a restart ([`recover`](Protocol::recover)) the chosen slot
//! starts at the durable snapshot's (0 without one) and the node learns the
//! rest again from the leader.

use crate::ballot::Ballot;
use crate::multi::config::{Config, InjectedBug};
use crate::multi::log::SlotLog;
use crate::multi::message::{Message, SlotEntry, Value};
use crate::multi::reads::ReadQueue;
use crate::multi::snapshot::{Incoming, SnapshotPoint, Transfer};
use crate::multi::storage::{Durable, Write};
use crate::multi::window::AckWindow;
use crate::timer::RandomTimer;
use bytes::Bytes;
use std::sync::Arc;
#[cfg(doc)]
use synod_core::protocol::SnapshotAction;
use synod_core::protocol::SnapshotMeta;
use synod_core::{
    ClientRouting, Command, Committed, Event, NodeId, Output, ProposeError, Protocol, ReadId, Role,
    Status, Time, quorum,
};

/// Most doublings of the election timeout of a node whose campaigns fewer
/// than a majority answer (16 times the usual timeout at most).
const MAX_BACKOFF_DOUBLINGS: u32 = 4;

/// Output type of the Multi-Paxos core.
pub type PaxosOutput = Output<Message, Write>;

/// The leader's view of one other acceptor.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The acceptor.
    pub id: NodeId,
    /// Its bit in acknowledgement masks.
    pub bit: u64,
    /// The chosen slot it last reported.
    pub chosen_slot: u64,
    /// True when its last answer said it misses chosen values.
    pub behind: bool,
    /// The last slot sent to it as catch-up and not yet confirmed chosen.
    pub catch_up_slot: u64,
    /// When it was last heard from in this ballot.
    pub last_heard: Time,
    /// The newest read round it echoed.
    pub read_round_acked: u64,
    /// The snapshot being sent to it, if any.
    pub transfer: Option<Transfer>,
}

/// Phase 1 in progress.
#[derive(Clone, Debug, Default)]
struct Phase1 {
    /// The first slot prepared.
    first_slot: u64,
    /// Bits of the acceptors that promised (this node included).
    promised: u64,
    /// Per slot from `first_slot`, the highest-ballot acceptance reported.
    adopted: Vec<Option<SlotEntry>>,
    /// Per peer (by position in `peers`), the `from_slot` of the promise
    /// part wanted next.
    next_from: Vec<u64>,
}

impl Phase1 {
    fn merge(&mut self, slot: u64, entry: SlotEntry) {
        if slot < self.first_slot {
            return;
        }
        let i = (slot - self.first_slot) as usize;
        if self.adopted.len() <= i {
            self.adopted.resize(i + 1, None);
        }
        if self.adopted[i].as_ref().is_none_or(|e| entry.ballot > e.ballot) {
            self.adopted[i] = Some(entry);
        }
    }
}

/// One Multi-Paxos replica's protocol state.
#[derive(Debug)]
pub struct PaxosNode {
    id: NodeId,
    config: Config,
    /// This node's bit in acknowledgement masks (0 if not a voter).
    bit: u64,

    // Durable acceptor state, mirrored by the writes emitted.
    promised: Ballot,
    log: SlotLog,
    /// The snapshot the state starts from (slot 0: none).
    snapshot: SnapshotPoint,

    // Volatile state.
    role: Role,
    leader: Option<NodeId>,
    /// The ballot this node leads or campaigns in (ZERO otherwise).
    ballot: Ballot,
    /// The highest round seen in any message.
    max_round_seen: u64,
    /// Every slot up to this one is chosen and emitted.
    chosen_slot: u64,
    /// Positions emitted so far (the last `Committed::index`).
    applied_position: u64,
    /// The leader's chosen slot, as told in the ballot `promised`.
    leader_chosen_slot: u64,
    timer: RandomTimer,
    leader_contact: Time,

    // Candidate state.
    phase1: Phase1,
    /// Acceptors that answered (promise or nack) this node's latest
    /// campaign, this node included.
    campaign_heard: u64,
    /// Campaigns in a row, with no leader heard in between, that fewer
    /// than a majority answered: this node is not quorum-connected and
    /// backs off (its election timeout doubles, up to 16 times).
    quiet_campaigns: u32,
    /// True from a campaign until a leader is heard (or this node leads).
    campaigned: bool,
    /// The ballot of this node's latest campaign.
    campaign_ballot: Ballot,
    /// When each peer (by position in `peers`) was last heard from, by any
    /// message: a node that hears from a majority within an election
    /// timeout is connected again and ends its back-off.
    heard_at: Vec<Time>,

    // Leader state.
    peers: Vec<Peer>,
    acks: AckWindow,
    /// The last slot recovered in Phase 1: reads wait until it is chosen.
    recovery_slot: u64,
    heartbeat_deadline: Time,
    check_quorum_deadline: Time,
    reads: ReadQueue,

    // Snapshot state.
    /// The (position, slot) of the [`SnapshotAction::Take`] the host is
    /// working on.
    snapshot_requested: Option<(u64, u64)>,
    /// After [`PaxosNode::snapshot_failed`]: the policy may ask again from
    /// this time on (a tick then checks it, so an idle node retries too).
    snapshot_retry_at: Option<Time>,
    /// The snapshot being received, if any.
    incoming: Option<Incoming>,
}

impl PaxosNode {
    /// The highest ballot promised.
    pub fn promised(&self) -> Ballot {
        self.promised
    }
    /// The ballot this node leads or campaigns in (`Ballot::ZERO` otherwise).
    pub fn ballot(&self) -> Ballot {
        self.ballot
    }
    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// Every slot up to this one is chosen and was emitted.
    pub fn chosen_slot(&self) -> u64 {
        self.chosen_slot
    }
    /// The highest slot holding an accepted value (or the purged slot).
    pub fn last_slot(&self) -> u64 {
        self.log.last_slot()
    }
    /// Every slot up to this one is compacted into the snapshot.
    pub fn purged_slot(&self) -> u64 {
        self.log.purged_slot()
    }
    /// Slots held in memory after the purged prefix (holes included).
    pub fn log_len(&self) -> usize {
        self.log.len()
    }
    /// The latest snapshot taken or installed (slot 0 when none).
    pub fn snapshot_point(&self) -> SnapshotPoint {
        self.snapshot
    }
    /// Asks the host for a snapshot at the chosen slot now, whatever the
    /// policy says. Returns false when one is already being taken or
    /// nothing was chosen since the last.
    pub fn trigger_snapshot(&mut self, out: &mut PaxosOutput) -> bool {
        if self.snapshot_requested.is_some() || self.chosen_slot <= self.snapshot.slot {
            return false;
        }
        self.request_snapshot(out);
        true
    }
    /// The host could not take the snapshot at position `index` it was
    /// asked for (its write failed without poisoning the storage: a full
    /// disk, say). The core forgets the request and asks again, at its
    /// chosen slot then, once the policy still says so and one minimum
    /// election timeout has passed (a tick checks, so an idle node retries
    /// too). An answer about any other position is ignored.
    pub fn snapshot_failed(&mut self, now: Time, index: u64) {
        if self.snapshot_requested.is_some_and(|(position, _)| position == index) {
            self.snapshot_requested = None;
            self.snapshot_retry_at = Some(now + self.config.election_timeout_min);
        }
    }
    /// What this acceptor accepted at `slot`.
    pub fn entry(&self, slot: u64) -> Option<&SlotEntry> {
        self.log.get(slot)
    }
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// Read barriers waiting on this leader.
    pub fn pending_reads(&self) -> usize {
        self.reads.len()
    }
    /// The leader's view of `peer` (leaders only).
    pub fn peer(&self, peer: NodeId) -> Option<&Peer> {
        if self.role != Role::Leader {
            return None;
        }
        self.peers.iter().find(|p| p.id == peer)
    }

    // ----- helpers -------------------------------------------------------

    fn voters(&self) -> usize {
        self.config.voters.len()
    }

    fn peer_position(&self, id: NodeId) -> Option<usize> {
        self.peers.iter().position(|p| p.id == id)
    }

    fn set_role(&mut self, role: Role, out: &mut PaxosOutput) {
        if self.role != role {
            self.role = role;
            out.events.push(Event::RoleChanged { role, epoch: self.promised.round });
        }
    }

    fn set_leader(&mut self, leader: Option<NodeId>, out: &mut PaxosOutput) {
        if self.leader != leader {
            self.leader = leader;
            out.events.push(Event::LeaderChanged { leader, epoch: self.promised.round });
        }
    }

    /// Promises `ballot` (above the current promise), durably.
    fn promise(&mut self, ballot: Ballot, out: &mut PaxosOutput) {
        assert!(ballot > self.promised, "promise {ballot} not above {}", self.promised);
        self.promised = ballot;
        self.leader_chosen_slot = 0;
        self.max_round_seen = self.max_round_seen.max(ballot.round);
        out.writes.push(Write::Promise { ballot });
    }

    /// Followers that heard from their leader within `election_timeout_min`
    /// (and leaders) ignore prepares from anyone else.
    fn in_lease(&self, now: Time, from: NodeId) -> bool {
        if !self.config.check_quorum {
            return false;
        }
        match self.role {
            Role::Leader => true,
            _ => {
                self.leader.is_some_and(|l| l != from)
                    && now.saturating_since(self.leader_contact) < self.config.election_timeout_min
            }
        }
    }

    fn check_invariants(&self) {
        assert!(self.chosen_slot <= self.log.last_slot(), "chosen beyond the log");
        assert!(
            self.log.purged_slot() <= self.snapshot.slot && self.snapshot.slot <= self.chosen_slot,
            "compaction invariant: purged {} <= snapshot {} <= chosen {}",
            self.log.purged_slot(),
            self.snapshot.slot,
            self.chosen_slot
        );
        assert!(self.snapshot.meta.index <= self.applied_position, "snapshot beyond applied");
        match self.role {
            Role::Leader => {
                assert_eq!(self.leader, Some(self.id), "a leader knows it leads");
                assert_eq!(self.ballot, self.promised, "a leader leads in its promise");
                assert_eq!(self.acks.last_slot(), self.log.last_slot(), "every slot tallied");
                assert!(
                    quorum::is_majority(self.phase1.promised.count_ones() as usize, self.voters()),
                    "a leader ran Phase 1 with a majority"
                );
            }
            Role::Candidate => {
                assert_eq!(self.ballot, self.promised, "a candidate promised itself")
            }
            _ => assert!(self.ballot.is_zero() && self.reads.is_empty(), "leader state left over"),
        }
    }

    /// Marks chosen every slot up to `upto` (all held) and emits them.
    fn choose_up_to(&mut self, upto: u64, out: &mut PaxosOutput) {
        while self.chosen_slot < upto {
            let slot = self.chosen_slot + 1;
            let entry = self.log.get(slot).expect("a chosen slot is held");
            match &entry.value {
                Value::Noop => {
                    self.applied_position += 1;
                    out.committed.push(Committed {
                        index: self.applied_position,
                        command: None,
                        time: None,
                    });
                }
                Value::Batch(commands) => {
                    for command in commands.iter() {
                        self.applied_position += 1;
                        out.committed.push(Committed {
                            index: self.applied_position,
                            command: Some(command.clone()),
                            time: None,
                        });
                    }
                }
            }
            self.chosen_slot = slot;
        }
        self.maybe_request_snapshot(out);
    }

    /// A follower: marks chosen every slot up to the leader's chosen slot
    /// that holds a value accepted in the leader's ballot (that value is
    /// the leader's, hence the chosen one).
    fn choose_held(&mut self, out: &mut PaxosOutput) {
        let mut upto = self.chosen_slot;
        while upto < self.leader_chosen_slot
            && self.log.get(upto + 1).is_some_and(|e| e.ballot == self.promised)
        {
            upto += 1;
        }
        self.choose_up_to(upto, out);
    }

    /// An accept of `values` from `first_slot` in this leader's ballot.
    fn accept_message(&self, first_slot: u64, values: Vec<Value>) -> Message {
        Message::Accept {
            ballot: self.ballot,
            first_slot,
            values,
            chosen_slot: self.chosen_slot,
            read_round: self.reads.round(),
        }
    }

    /// The values of slots `first..=last` (all held).
    fn values(&self, first: u64, last: u64) -> Vec<Value> {
        (first..=last)
            .map(|s| self.log.get(s).expect("the leader holds every slot").value.clone())
            .collect()
    }

    /// The last slot of one accept starting at `first` (all held up to
    /// `last`): at most `max_values_per_accept` values and, past the
    /// first, at most `max_bytes_per_message` bytes of values, so that a
    /// catch-up of large slots never builds a message the transport would
    /// refuse as oversized.
    fn accept_end(&self, first: u64, last: u64) -> u64 {
        let last = last.min(first + self.config.max_values_per_accept as u64 - 1);
        if last == first {
            return last;
        }
        let mut bytes = 0usize;
        for slot in first..=last {
            let value = &self.log.get(slot).expect("the leader holds every slot").value;
            bytes = bytes.saturating_add(value.size_bytes());
            if bytes > self.config.max_bytes_per_message && slot > first {
                return slot - 1;
            }
        }
        last
    }

    /// Sends slots `first..=last` to `to` in accepts bounded by
    /// [`Self::accept_end`].
    fn send_slots(&self, to: NodeId, first: u64, last: u64, out: &mut PaxosOutput) {
        let mut from = first;
        while from <= last {
            let to_slot = self.accept_end(from, last);
            out.send(to, self.accept_message(from, self.values(from, to_slot)));
            from = to_slot + 1;
        }
    }

    /// Records a message from `from`; a backed-off node that now hears
    /// from a majority within `election_timeout_max` campaigns again at the
    /// usual pace.
    fn note_heard(&mut self, now: Time, from: NodeId) {
        let Some(position) = self.peer_position(from) else { return };
        if let Some(t) = self.heard_at.get_mut(position) {
            *t = now;
        }
        if self.quiet_campaigns == 0 {
            return;
        }
        let window = self.config.election_timeout_max;
        let heard = self.heard_at.iter().filter(|&&t| now.saturating_since(t) <= window).count();
        if quorum::is_majority(heard + 1, self.voters()) {
            self.quiet_campaigns = 0;
            if self.role != Role::Leader
                && self.timer.deadline() > now + self.config.election_timeout_max
            {
                self.timer.reset(now);
            }
        }
    }

    // ----- role transitions ---------------------------------------------

    fn become_follower(&mut self, now: Time, leader: Option<NodeId>, out: &mut PaxosOutput) {
        if self.role == Role::Leader {
            self.reads.fail_all(&mut out.events);
            self.peers.iter_mut().for_each(|p| p.transfer = None);
        }
        self.ballot = Ballot::ZERO;
        self.phase1 = Phase1::default();
        self.peers.iter_mut().for_each(|p| p.read_round_acked = 0);
        let role = if self.bit != 0 { Role::Follower } else { Role::Learner };
        self.set_role(role, out);
        self.set_leader(leader, out);
        if leader.is_some() {
            self.leader_contact = now;
        }
        self.timer.reset(now);
    }

    /// Phase 1a in a fresh ballot for every slot after the chosen one.
    fn campaign(&mut self, now: Time, out: &mut PaxosOutput) {
        if self.role == Role::Leader {
            self.reads.fail_all(&mut out.events);
        }
        let round = self.max_round_seen.max(self.promised.round) + 1;
        let ballot = Ballot::new(round, self.id);
        self.promise(ballot, out);
        self.ballot = ballot;
        // Re-announce the role even if already a candidate: a new epoch.
        self.role = Role::Follower;
        self.set_role(Role::Candidate, out);
        self.set_leader(None, out);
        let answered = self.campaign_heard.count_ones() as usize;
        if self.campaigned && !quorum::is_majority(answered, self.voters()) {
            self.quiet_campaigns = (self.quiet_campaigns + 1).min(MAX_BACKOFF_DOUBLINGS);
        } else {
            self.quiet_campaigns = 0;
        }
        self.campaigned = true;
        self.campaign_ballot = ballot;
        self.campaign_heard = self.bit;
        self.timer.reset_scaled(now, 1 << self.quiet_campaigns);
        let first_slot = self.chosen_slot + 1;
        let next_from = vec![first_slot; self.peers.len()];
        self.phase1 = Phase1 { first_slot, promised: self.bit, adopted: Vec::new(), next_from };
        for (slot, entry) in self.log.entries_from(first_slot) {
            self.phase1.merge(slot, entry);
        }
        if quorum::is_majority(1, self.voters()) {
            self.become_leader(now, out);
            return;
        }
        for p in &self.peers {
            out.send(p.id, Message::Prepare { ballot, first_slot, from_slot: first_slot });
        }
    }

    /// Phase 1 succeeded: adopt the highest-ballot values, fill holes with
    /// no-ops, and propose them all in this ballot.
    fn become_leader(&mut self, now: Time, out: &mut PaxosOutput) {
        assert_eq!(self.role, Role::Candidate, "only a candidate becomes leader");
        assert!(self.reads.is_empty());
        let first_slot = self.phase1.first_slot;
        assert_eq!(first_slot, self.chosen_slot + 1, "the chosen slot moved during Phase 1");
        let ballot = self.ballot;
        let adopted = std::mem::take(&mut self.phase1.adopted);
        let mut values: Vec<Value> = adopted
            .into_iter()
            .map(|entry| match (entry, self.config.bug) {
                (Some(e), InjectedBug::None) => {
                    assert!(e.ballot < ballot, "an acceptance at or above the new ballot");
                    e.value
                }
                _ => Value::Noop,
            })
            .collect();
        // One no-op of this ballot after the recovered slots: its choice
        // shows at once that the new leader commits (and fixes the read
        // index) without waiting for a client command.
        values.push(Value::Noop);
        self.set_role(Role::Leader, out);
        self.set_leader(Some(self.id), out);
        self.acks.reset(self.chosen_slot);
        for (i, value) in values.iter().enumerate() {
            self.log.set(first_slot + i as u64, SlotEntry { ballot, value: value.clone() });
            self.acks.push(self.bit);
        }
        let last_slot = first_slot + values.len() as u64 - 1;
        // Slots beyond the adopted ones that this node held were merged into
        // `adopted`; nothing of ours lies beyond.
        assert_eq!(self.log.last_slot().max(first_slot - 1), last_slot.max(first_slot - 1));
        if !values.is_empty() {
            out.writes.push(Write::Accept { ballot, first_slot, values });
        }
        self.recovery_slot = last_slot.max(self.chosen_slot);
        for p in &mut self.peers {
            p.chosen_slot = 0;
            p.behind = false;
            p.catch_up_slot = 0;
            p.last_heard = now;
            p.read_round_acked = 0;
            p.transfer = None;
        }
        self.heartbeat_deadline = now + self.config.heartbeat_interval;
        self.check_quorum_deadline = now + self.config.election_timeout_min;
        self.timer.stop();
        self.campaigned = false;
        self.quiet_campaigns = 0;
        for i in 0..self.peers.len() {
            let to = self.peers[i].id;
            if last_slot >= first_slot {
                self.send_slots(to, first_slot, last_slot, out);
            } else {
                out.send(to, self.accept_message(first_slot, Vec::new()));
            }
        }
        self.maybe_commit(out);
    }

    // ----- leader --------------------------------------------------------

    fn maybe_commit(&mut self, out: &mut PaxosOutput) {
        let chosen = self.acks.advance(self.voters());
        if chosen > self.chosen_slot {
            self.choose_up_to(chosen, out);
            if self.chosen_slot >= self.recovery_slot {
                self.reads.assign_index(self.applied_position);
            }
        }
        self.release_reads(out);
    }

    /// Releases the reads whose round a majority (this leader included)
    /// confirmed.
    fn release_reads(&mut self, out: &mut PaxosOutput) {
        if self.reads.is_empty() {
            return;
        }
        let mut rounds = [0u64; 64];
        rounds[0] = self.reads.round();
        for (i, p) in self.peers.iter().enumerate() {
            rounds[i + 1] = p.read_round_acked;
        }
        let confirmed_round = quorum::majority_index(&mut rounds[..self.peers.len() + 1]);
        self.reads.release(confirmed_round, &mut out.reads);
    }

    fn quorum_active(&self, now: Time) -> bool {
        let window = self.config.election_timeout_min;
        let heard =
            self.peers.iter().filter(|p| now.saturating_since(p.last_heard) <= window).count();
        quorum::is_majority(heard + 1, self.voters())
    }

    fn leader_tick(&mut self, now: Time, out: &mut PaxosOutput) {
        if self.config.check_quorum && now >= self.check_quorum_deadline {
            self.check_quorum_deadline = now + self.config.election_timeout_min;
            if !self.quorum_active(now) {
                self.become_follower(now, None, out);
                return;
            }
        }
        if now >= self.heartbeat_deadline {
            self.heartbeat_deadline = now + self.config.heartbeat_interval;
            self.broadcast_heartbeats(out);
        }
    }

    /// Heartbeats, and again every in-flight slot a follower has not
    /// acknowledged (it may have been lost); catch-up may be resent.
    fn broadcast_heartbeats(&mut self, out: &mut PaxosOutput) {
        let last_slot = self.log.last_slot();
        for i in 0..self.peers.len() {
            self.peers[i].catch_up_slot = 0;
            let (to, bit) = (self.peers[i].id, self.peers[i].bit);
            match self.acks.first_missing(bit) {
                Some(first) => {
                    let last = self.accept_end(first, last_slot);
                    out.send(to, self.accept_message(first, self.values(first, last)));
                }
                None => out.send(to, self.accept_message(last_slot + 1, Vec::new())),
            }
        }
        self.resend_snapshot_chunks(out);
    }

    /// Sends `peer` the next chosen values it misses, one accept at a time.
    fn maybe_catch_up(&mut self, position: usize, out: &mut PaxosOutput) {
        let p = &self.peers[position];
        if !p.behind || p.chosen_slot >= self.chosen_slot {
            return;
        }
        if p.chosen_slot < self.log.purged_slot() {
            // The slots it misses are only in our snapshot.
            if p.transfer.is_none() {
                self.send_snapshot(position, self.ballot, out);
            }
            return;
        }
        if p.catch_up_slot > p.chosen_slot {
            return;
        }
        let first = p.chosen_slot + 1;
        let (to, chosen_slot) = (p.id, self.chosen_slot);
        let last = self.accept_end(first, chosen_slot);
        self.peers[position].catch_up_slot = last;
        out.send(to, self.accept_message(first, self.values(first, last)));
    }

    // ----- message handlers ---------------------------------------------

    fn on_prepare(
        &mut self,
        now: Time,
        from: NodeId,
        ballot: Ballot,
        (first_slot, from_slot): (u64, u64),
        out: &mut PaxosOutput,
    ) {
        if first_slot == 0 || from_slot < first_slot {
            return; // malformed
        }
        if ballot < self.promised {
            out.send(from, Message::Nack { ballot, promised: self.promised });
            return;
        }
        if ballot > self.promised {
            if self.in_lease(now, from) {
                return;
            }
            // Promising does not restart this node's own election timer (a
            // leader's accept does): otherwise candidates that can never
            // win — servers that reach only this one, as in the
            // quorum-loss and constrained-election topologies — would keep
            // postponing the campaign of the one server that can.
            let deadline = self.timer.deadline();
            self.promise(ballot, out);
            self.become_follower(now, None, out);
            if deadline != Time::MAX {
                self.timer.fire_at(deadline);
            }
        }
        if ballot.node != from {
            return;
        }
        let Some(position) = self.peer_position(from) else { return };
        if first_slot <= self.log.purged_slot() {
            // The candidate asks about slots this acceptor compacted away:
            // they are chosen, and only in its snapshot. Send that instead
            // of a promise; the candidate campaigns again once installed.
            self.send_snapshot(position, ballot, out);
            return;
        }
        let (max, max_bytes) =
            (self.config.max_values_per_promise, self.config.max_bytes_per_message);
        let (accepted, more) = self.log.entries_bounded(from_slot, max, max_bytes);
        out.send(from, Message::Promise { ballot, first_slot, from_slot, accepted, more });
    }

    fn on_promise(
        &mut self,
        now: Time,
        from: NodeId,
        ballot: Ballot,
        (first_slot, from_slot): (u64, u64),
        (accepted, more): (Vec<(u64, SlotEntry)>, bool),
        out: &mut PaxosOutput,
    ) {
        if self.role != Role::Candidate
            || ballot != self.ballot
            || first_slot != self.phase1.first_slot
        {
            return;
        }
        let Some(position) = self.peer_position(from) else { return };
        let bit = self.peers[position].bit;
        if self.phase1.promised & bit != 0 || self.phase1.next_from[position] != from_slot {
            return; // a duplicate, or a part we did not ask for
        }
        let mut last_reported = from_slot;
        for (slot, entry) in accepted {
            assert!(entry.ballot < ballot, "{from} reports an acceptance at or above its promise");
            assert!(slot >= from_slot && slot >= last_reported, "{from} reports out of order");
            last_reported = slot;
            self.phase1.merge(slot, entry);
        }
        if more {
            // Ask for the next part, from the slot after this one's last.
            let next = last_reported + 1;
            self.phase1.next_from[position] = next;
            out.send(from, Message::Prepare { ballot, first_slot, from_slot: next });
            return;
        }
        self.phase1.promised |= bit;
        if quorum::is_majority(self.phase1.promised.count_ones() as usize, self.voters()) {
            self.become_leader(now, out);
        }
    }

    /// `from` leads in `ballot` (it sent an accept or a snapshot chunk):
    /// promise it and follow it, or refuse it when we promised higher.
    /// Returns whether we follow it.
    fn follow(&mut self, now: Time, from: NodeId, ballot: Ballot, out: &mut PaxosOutput) -> bool {
        if ballot < self.promised || ballot.node != from {
            out.send(from, Message::Nack { ballot, promised: self.promised });
            return false;
        }
        if ballot > self.promised {
            self.promise(ballot, out);
        }
        assert!(
            self.role != Role::Leader || self.ballot != ballot,
            "{} leads {ballot} but {from} sent an accept in it",
            self.id
        );
        if self.role != Role::Follower && self.role != Role::Learner {
            self.become_follower(now, Some(from), out);
        } else if self.leader != Some(from) {
            self.set_leader(Some(from), out);
            self.timer.reset(now);
        }
        self.leader_contact = now;
        self.campaigned = false;
        self.quiet_campaigns = 0;
        self.timer.restart(now);
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn on_accept(
        &mut self,
        now: Time,
        from: NodeId,
        ballot: Ballot,
        first_slot: u64,
        values: Vec<Value>,
        chosen_slot: u64,
        read_round: u64,
        out: &mut PaxosOutput,
    ) {
        if first_slot == 0 && !values.is_empty() {
            return; // malformed
        }
        if !self.follow(now, from, ballot, out) {
            return;
        }
        let count = values.len() as u64;
        // Slots inside the purged prefix are chosen and in our snapshot:
        // nothing to store there (the leader's value is the chosen one).
        let skip = self.log.purged_slot().saturating_sub(first_slot - 1).min(count);
        if skip < count {
            let first = first_slot + skip;
            let mut values = values;
            values.drain(..skip as usize);
            for (i, value) in values.iter().enumerate() {
                self.log.set(first + i as u64, SlotEntry { ballot, value: value.clone() });
            }
            out.writes.push(Write::Accept { ballot, first_slot: first, values });
        }
        self.leader_chosen_slot = self.leader_chosen_slot.max(chosen_slot);
        self.choose_held(out);
        out.send(
            from,
            Message::Accepted {
                ballot,
                first_slot,
                last_slot: (first_slot + count).saturating_sub(1),
                chosen_slot: self.chosen_slot,
                leader_chosen_slot: self.leader_chosen_slot,
                read_round,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn on_accepted(
        &mut self,
        now: Time,
        from: NodeId,
        ballot: Ballot,
        first_slot: u64,
        last_slot: u64,
        (chosen_slot, leader_chosen_slot): (u64, u64),
        read_round: u64,
        out: &mut PaxosOutput,
    ) {
        if self.role != Role::Leader || ballot != self.ballot {
            return;
        }
        let Some(position) = self.peer_position(from) else { return };
        let round = self.reads.round();
        let p = &mut self.peers[position];
        p.last_heard = now;
        if chosen_slot >= p.chosen_slot {
            p.chosen_slot = chosen_slot;
            p.behind = chosen_slot < leader_chosen_slot;
        }
        p.read_round_acked = p.read_round_acked.max(read_round.min(round));
        let bit = p.bit;
        if first_slot <= last_slot {
            self.acks.mark(first_slot, last_slot, bit);
        }
        self.maybe_commit(out);
        self.maybe_catch_up(position, out);
    }

    fn on_nack(&mut self, now: Time, ballot: Ballot, promised: Ballot, out: &mut PaxosOutput) {
        self.max_round_seen = self.max_round_seen.max(promised.round);
        if ballot != self.ballot || promised <= ballot {
            return;
        }
        match self.role {
            // Refused by a higher promise: run Phase 1 again above it at
            // once, while the followers still follow this node.
            Role::Leader => self.campaign(now, out),
            Role::Candidate => self.become_follower(now, None, out),
            _ => {}
        }
    }
}

impl Protocol for PaxosNode {
    type Config = Config;
    type Message = Message;
    type Write = Write;
    type Durable = Durable;

    /// Rebuilds node `id` from exactly `durable`; the chosen slot starts at
    /// the durable snapshot's (0 without one). `seed` is mixed with `id`, so a driver handing every node the
    /// same seed still gets different timeouts.
    ///
    /// # Panics
    /// If `config` is invalid or `durable` holds an acceptance above its
    /// promise (a node must not run on state it cannot trust).
    fn recover(id: NodeId, config: &Config, durable: &Durable, seed: u64, now: Time) -> Self {
        if let Err(problem) = config.validate() {
            panic!("invalid Multi-Paxos configuration: {problem}");
        }
        assert!(
            durable.log.iter().flatten().all(|e| e.ballot <= durable.promised),
            "durable log holds an acceptance above the durable promise {}",
            durable.promised
        );
        let snapshot = durable.snapshot;
        assert!(
            durable.purged_slot <= snapshot.slot && snapshot.slot <= durable.last_slot(),
            "durable snapshot {snapshot:?} outside the durable log {}..={}",
            durable.purged_slot,
            durable.last_slot()
        );
        let position = config.voters.iter().position(|&v| v == id);
        let bit = position.map_or(0, |p| 1u64 << p);
        let seed = seed ^ id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut timer =
            RandomTimer::new(seed, config.election_timeout_min, config.election_timeout_max, now);
        if bit == 0 {
            timer.stop();
        } else if config.voters.len() == 1 {
            timer.fire_at(now);
        }
        let peers = config
            .voters
            .iter()
            .enumerate()
            .filter(|&(_, &v)| v != id)
            .map(|(i, &v)| Peer {
                id: v,
                bit: 1 << i,
                chosen_slot: 0,
                behind: false,
                catch_up_slot: 0,
                last_heard: Time::ZERO,
                read_round_acked: 0,
                transfer: None,
            })
            .collect();
        let node = PaxosNode {
            id,
            bit,
            promised: durable.promised,
            log: SlotLog::from_parts(durable.purged_slot, durable.log.clone()),
            snapshot,
            role: if bit != 0 { Role::Follower } else { Role::Learner },
            leader: None,
            ballot: Ballot::ZERO,
            max_round_seen: durable.promised.round,
            chosen_slot: snapshot.slot,
            applied_position: snapshot.meta.index,
            leader_chosen_slot: 0,
            timer,
            leader_contact: Time::ZERO,
            phase1: Phase1::default(),
            campaign_heard: 0,
            quiet_campaigns: 0,
            campaigned: false,
            campaign_ballot: Ballot::ZERO,
            heard_at: vec![Time::ZERO; config.voters.len().saturating_sub(1)],
            peers,
            acks: AckWindow::default(),
            recovery_slot: 0,
            heartbeat_deadline: Time::MAX,
            check_quorum_deadline: Time::MAX,
            reads: ReadQueue::new(config.max_pending_reads),
            snapshot_requested: None,
            snapshot_retry_at: None,
            incoming: None,
            config: config.clone(),
        };
        node.check_invariants();
        node
    }

    fn apply_write(durable: &mut Durable, write: &Write) {
        durable.apply(write)
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn tick(&mut self, now: Time, out: &mut PaxosOutput) {
        if self.role == Role::Leader {
            self.leader_tick(now, out);
        } else if self.bit != 0 && self.timer.expired(now) {
            self.campaign(now, out);
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
            self.heartbeat_deadline.min(check_quorum).min(retry)
        } else {
            self.timer.deadline().min(retry)
        }
    }

    fn step(&mut self, now: Time, from: NodeId, msg: Message, out: &mut PaxosOutput) {
        if from == self.id || self.peer_position(from).is_none() {
            return;
        }
        self.max_round_seen = self.max_round_seen.max(msg.ballot().round);
        self.note_heard(now, from);
        if self.campaigned
            && msg.ballot() == self.campaign_ballot
            && matches!(
                msg,
                Message::Promise { .. } | Message::Nack { .. } | Message::Snapshot { .. }
            )
            && let Some(p) = self.peers.iter().find(|p| p.id == from)
        {
            self.campaign_heard |= p.bit;
        }
        match msg {
            Message::Prepare { ballot, first_slot, from_slot } => {
                self.on_prepare(now, from, ballot, (first_slot, from_slot), out)
            }
            Message::Promise { ballot, first_slot, from_slot, accepted, more } => {
                self.on_promise(now, from, ballot, (first_slot, from_slot), (accepted, more), out)
            }
            Message::Accept { ballot, first_slot, values, chosen_slot, read_round } => {
                self.on_accept(now, from, ballot, first_slot, values, chosen_slot, read_round, out)
            }
            Message::Accepted {
                ballot,
                first_slot,
                last_slot,
                chosen_slot,
                leader_chosen_slot,
                read_round,
            } => self.on_accepted(
                now,
                from,
                ballot,
                first_slot,
                last_slot,
                (chosen_slot, leader_chosen_slot),
                read_round,
                out,
            ),
            Message::Nack { ballot, promised } => self.on_nack(now, ballot, promised, out),
            Message::Snapshot { ballot, point, offset, data } => {
                self.on_snapshot(now, from, ballot, point, (offset, data), out)
            }
            Message::SnapshotAck { ballot, index, offset, done } => {
                self.on_snapshot_ack(now, from, ballot, index, offset, done, out)
            }
        }
        self.check_invariants();
    }

    fn propose(
        &mut self,
        _now: Time,
        commands: Vec<Command>,
        out: &mut PaxosOutput,
    ) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            let hint = self.leader.filter(|&l| l != self.id);
            return Err(ProposeError::NotLeader { hint });
        }
        if commands.is_empty() {
            return Err(ProposeError::Rejected("empty batch"));
        }
        if commands.len() > self.config.max_commands_per_slot {
            return Err(ProposeError::Rejected("batch larger than max_commands_per_slot"));
        }
        if commands.iter().map(Command::size_bytes).sum::<usize>() > self.config.max_bytes_per_slot
        {
            return Err(ProposeError::Rejected("batch larger than max_bytes_per_slot"));
        }
        if self.acks.len() >= self.config.max_inflight_slots {
            return Err(ProposeError::Busy("too many slots in flight"));
        }
        let slot = self.log.last_slot() + 1;
        let value = Value::Batch(Arc::from(commands));
        self.log.set(slot, SlotEntry { ballot: self.ballot, value: value.clone() });
        self.acks.push(self.bit);
        out.writes.push(Write::Accept {
            ballot: self.ballot,
            first_slot: slot,
            values: vec![value.clone()],
        });
        for p in &self.peers {
            out.send(p.id, self.accept_message(slot, vec![value.clone()]));
        }
        self.maybe_commit(out);
        self.check_invariants();
        Ok(())
    }

    fn read(&mut self, _now: Time, id: ReadId, out: &mut PaxosOutput) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            let hint = self.leader.filter(|&l| l != self.id);
            return Err(ProposeError::NotLeader { hint });
        }
        if self.reads.is_full() {
            return Err(ProposeError::Busy("too many pending reads"));
        }
        let index = (self.chosen_slot >= self.recovery_slot).then_some(self.applied_position);
        self.reads.push(id, index);
        let heartbeat_slot = self.log.last_slot() + 1;
        for p in &self.peers {
            out.send(p.id, self.accept_message(heartbeat_slot, Vec::new()));
        }
        self.release_reads(out);
        self.check_invariants();
        Ok(())
    }

    fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            epoch: self.promised.round,
            leader: self.leader,
            commit_index: self.applied_position,
            applied_index: self.applied_position,
            last_index: self.log.last_slot(),
        }
    }

    fn client_routing(_config: &Config) -> ClientRouting {
        ClientRouting::Leader
    }

    fn snapshot_taken(&mut self, _now: Time, index: u64, size_bytes: u64, out: &mut PaxosOutput) {
        self.on_snapshot_taken(index, size_bytes, out);
        self.check_invariants();
    }

    fn snapshot_chunk(
        &mut self,
        _now: Time,
        to: NodeId,
        index: u64,
        offset: u64,
        data: Bytes,
        out: &mut PaxosOutput,
    ) {
        self.on_snapshot_chunk(to, index, offset, data, out);
    }

    fn snapshot(&self) -> Option<SnapshotMeta> {
        self.snapshot.exists().then_some(self.snapshot.meta)
    }
}

#[path = "node_snapshots.rs"]
mod snapshots;

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "node_snapshot_tests.rs"]
mod snapshot_tests;
