//! The PBFT replica: [`PbftNode`], the [`Protocol`] implementation.
//!
//! Normal case (OSDI'99 §4.2): the primary of view `v` (`v mod n`) assigns
//! the next sequence number in the window `(h, h+L]` to a batch of queued
//! requests and multicasts PRE-PREPARE; a backup that accepts it multicasts
//! PREPARE; pre-prepare plus `q−1` matching PREPAREs from backups make the
//! request *prepared*, and the replica multicasts COMMIT; `q` matching
//! COMMITs make it *committed-local*; batches execute strictly in sequence
//! order (`q` = [`quorum::byzantine_quorum`], 2f+1 for n = 3f+1).
//!
//! Every K sequence numbers a replica multicasts a signed CHECKPOINT of its
//! state digest; `q` matching ones make it stable: the low watermark moves
//! there and the per-sequence state below is discarded. A replica that sees
//! a stable checkpoint beyond what it executed fetches the batches and
//! checks them against the checkpoint's digest (state transfer). Every
//! [`Config::snapshot_interval`] sequence numbers the checkpoint signs a
//! snapshot of the state machine instead; once stable, the executed
//! history below it is discarded, and a replica that needs state below a
//! peer's snapshot fetches the snapshot (see `node/snapshots.rs`).
//!
//! View change (see [`crate::view_change`]): a backup whose pending request
//! is not executed in time *suspects* the primary: it multicasts a signed
//! SUSPECT for its view `v`, sends its requests to the primary again, and
//! stays in `v`. A replica leaves `v` with a signed VIEW-CHANGE for `v+1`
//! once f+1 replicas want out of `v` (each sent a SUSPECT for `v` or a
//! VIEW-CHANGE for a higher view, its own suspicion included: at least one
//! is correct), relaying the SUSPECTs it counted so that every correct
//! replica leaves with it; a replica changing view joins once f+1 replicas
//! asked for higher views (timeouts double on consecutive view changes);
//! the new primary sends NEW-VIEW with the VIEW-CHANGEs and O, and each
//! backup recomputes O before accepting it. A correct backup whose timer
//! expired alone (its request reached nobody else, its forward was lost)
//! thus stays in the view the others work in, instead of waiting alone in
//! `v+1` for a NEW-VIEW nobody sends. Leaving `v` later than the paper's
//! backup would is safe: a replica that has not sent VIEW-CHANGE for
//! `v+1` may keep working in `v` (the paper's backups do, until their own
//! timers expire), and a SUSPECT commits its sender to nothing; the
//! liveness argument keeps its shape, with SUSPECT in the place of the
//! paper's first VIEW-CHANGE: a faulty primary leaves the requests of the
//! 2f+1 correct replicas unexecuted, their timers expire, and f+1 of them
//! suspect. A backup suspects its primary only when its peers' recent
//! STATUS messages show its view is current (`Standing`): one that lags
//! (f+1 peers ahead) or cannot hear 2f peers (just restarted, cut off)
//! waits and obtains the current NEW-VIEW or the missing requests.
//!
//! Retransmission: every replica multicasts a STATUS periodically; a peer
//! that sees the sender stuck retransmits what it misses (pre-prepares with
//! the primary's authenticator, its own votes, the NEW-VIEW, its
//! VIEW-CHANGE, its stable checkpoint proof).
//!
//! Agreed clock (non-determinism, OSDI'99 §4.6 / TOCS §5.4): the primary
//! stamps each batch with its clock (the latest `now` it was called with);
//! the timestamp is part of the batch and of its digest, so every
//! certificate, VIEW-CHANGE, NEW-VIEW re-proposal and state transfer
//! carries it unchanged (the null request carries ZERO). A backup PREPAREs
//! a fresh PRE-PREPARE only if its timestamp is within δ
//! ([`Config::max_clock_skew`]) of its own clock, either way; one it
//! refuses is counted (`AuthStats::bad_timestamp`), reported to the host
//! ([`Event::TimestampRefused`], once per view and sequence number), kept
//! out of its Q and
//! its journal, and prepared there only if `q − 1` backups PREPARE it
//! anyway (then at least one correct replica found it in bounds: this
//! replica's clock is off, or the message was late), or once f+1 peers
//! report its sequence number executed: it is committed then, and the
//! replica PREPAREs it after all, so that a replica that lags, whose
//! retransmitted PRE-PREPAREs are all late, does not need every other
//! backup's vote to catch up (`prepare_refused_upto`). A primary whose
//! timestamps no quorum accepts leaves its requests unexecuted, and the
//! view-change timer replaces it. Re-proposals in a NEW-VIEW are not
//! checked against the clock: O is recomputed from V, and a batch in it
//! was pre-prepared by a correct replica. Monotonicity is enforced at
//! execution, where it is simple and deterministic: [`Committed::time`] is
//! the largest timestamp of any non-null batch up to this sequence number,
//! so it never goes back, and it is the same on every correct replica.
//! Hence an agreed time is never more than δ ahead of the clock of a
//! correct replica when it accepted the batch that set it.
//!
//! Positions: [`Committed::index`] counts commands, not sequence numbers: a
//! batch of k requests at sequence number n occupies k consecutive positions
//! (a null request one), so positions are consecutive from 1 as the
//! interface requires and identical on every replica.
//!
//! Client requests arrive through [`Protocol::propose`] at every replica
//! (clients multicast, [`ClientRouting::All`]). A request already ordered
//! and in flight is not ordered again; a retry of a client's latest executed
//! request is ordered again, so that the session layer answers it from its
//! reply cache (the core itself has no reply path); an older one is refused.
//!
//! Client requests are signed envelopes ([`crate::request`]): a replica
//! refuses a badly signed request from a client and rejects whole any
//! PRE-PREPARE, FORWARD or VIEW-CHANGE that carries one; each envelope is
//! verified once. Ordering, digests and checkpoints cover envelopes; the
//! state machine receives the inner op.

use crate::auth::{AuthStats, Keyring};
use crate::config::{Config, InjectedBug};
use crate::digest::{Digest, batch_digest, chain, requests_digest};
use crate::message::{
    Batch, Checkpoint, Message, NewView, PrePrepare, PreparedEntry, SnapshotCheckpoint,
    SnapshotManifest, StableCheckpoint, Suspect, ViewChange, Vote,
};
use crate::request::{RequestCheck, inner_op};
use crate::storage::{Durable, Write, note_q};
use crate::view_change;

mod snapshots;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use synod_core::{
    ClientId, ClientRouting, Command, Committed, Event, NodeId, Output, ProposeError, Protocol,
    ReadId, ReadState, Role, Status, Time, quorum,
};

/// Output type of the PBFT core.
pub type PbftOutput = Output<Message, Write>;

/// Signatures remembered as verified before the cache is cleared.
const MAX_VERIFIED: usize = 4096;

/// Per sequence number in the window.
#[derive(Clone, Debug, Default)]
struct Slot {
    /// The view the fields below belong to.
    view: u64,
    /// The accepted pre-prepare of `view`: digest, batch, and the primary's
    /// authenticator when it came in a PRE-PREPARE (for relaying).
    pre_prepare: Option<(Digest, Batch, Option<crate::auth::Auth>)>,
    /// PREPARE votes of `view`: digest and a bitmask of voters.
    prepares: Vec<(Digest, u64)>,
    /// COMMIT votes of `view`.
    commits: Vec<(Digest, u64)>,
    sent_prepare: bool,
    sent_commit: bool,
    committed: bool,
    /// The pre-prepare's timestamp was further than δ from this replica's
    /// clock: it is kept (so that a quorum's PREPAREs can still prepare it
    /// here) but this replica neither PREPAREs it nor counts it in Q.
    timestamp_refused: bool,
    /// The latest prepared certificate (any view): P.
    prepared: Option<PreparedEntry>,
    /// Q.
    pre_prepared: Vec<crate::message::PrePreparedEntry>,
}

impl Slot {
    fn enter_view(&mut self, view: u64) {
        if self.view != view {
            self.view = view;
            self.pre_prepare = None;
            self.prepares.clear();
            self.commits.clear();
            self.sent_prepare = false;
            self.sent_commit = false;
            self.committed = false;
            self.timestamp_refused = false;
        }
    }
}

fn add_vote(votes: &mut Vec<(Digest, u64)>, digest: Digest, voter: usize) -> u32 {
    let bit = 1u64 << voter;
    match votes.iter_mut().find(|(d, _)| *d == digest) {
        Some((_, mask)) => {
            *mask |= bit;
            mask.count_ones()
        }
        None => {
            votes.push((digest, bit));
            1
        }
    }
}

fn count_votes(votes: &[(Digest, u64)], digest: &Digest) -> u32 {
    votes.iter().find(|(d, _)| d == digest).map_or(0, |(_, m)| m.count_ones())
}

/// A peer's latest STATUS, as it claimed it: its MAC was checked, but a
/// faulty sender may lie, so a decision takes f+1 of them at least.
#[derive(Clone, Copy, Debug)]
struct PeerStatus {
    view: u64,
    active: bool,
    executed: u64,
    /// When it arrived (local time).
    at: Time,
}

/// What the peers' recent STATUS messages say about this replica's view
/// ([`PbftNode::view_standing`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    /// Fewer than `q − 1` peers were heard from recently (a restart, a
    /// partition): this replica cannot tell whether its view is current.
    Unknown,
    /// f+1 peers recently reported a view above this replica's that they
    /// are active in, or this view with more executed: at least one correct
    /// replica is ahead, so the primary is making progress and this replica
    /// is the one that lags (it obtains the NEW-VIEW, or the missing
    /// requests, from them).
    Behind,
    /// Otherwise: a stalled request is the primary's fault.
    Current,
}

/// A read barrier waiting for its index.
#[derive(Clone, Debug)]
struct PendingRead {
    id: ReadId,
    nonce: u64,
    /// Replicas whose READ-INDEX was counted (this one included).
    voters: u64,
    /// Their claimed sequence numbers ([`PbftNode::read_seq`]), one each.
    claims: Vec<u64>,
    /// The sequence number to execute before answering:
    /// [`read_target`] of `claims` once `resolved`.
    max_seq: u64,
    resolved: bool,
    deadline: Time,
}

/// The sequence number a read must wait for, given the claims of `k =
/// claims.len()` distinct replicas of `n` (`k >= q`), or `None` with fewer.
///
/// A write that completed before the read began committed at some sequence
/// number s: `q` replicas sent COMMIT, so at least `q − f` correct ones
/// prepared it and each claims at least s. At most `n − k` of them are
/// missing from the claims, so at least `j = k + q − n − f` claims are at
/// least s (`j >= 1` at `k = q` by quorum intersection), and so is the j-th
/// highest claim. With `k = q` that is the maximum; each further answer
/// moves j one rank down, so up to f Byzantine replicas claiming a sequence
/// number that is never executed stall a read only while a correct replica
/// is silent.
fn read_target(claims: &mut [u64], n: usize, q: usize) -> Option<u64> {
    let k = claims.len();
    if k < q {
        return None;
    }
    let f = quorum::byzantine_f(n);
    let j = (k + q).saturating_sub(n + f).max(1);
    claims.sort_unstable_by(|a, b| b.cmp(a));
    Some(claims[j - 1])
}

/// One PBFT replica.
#[derive(Debug)]
pub struct PbftNode {
    id: NodeId,
    me: usize,
    n: usize,
    q: usize,
    config: Config,
    keys: std::sync::Arc<Keyring>,

    view: u64,
    active: bool,
    slots: BTreeMap<u64, Slot>,
    stable: StableCheckpoint,
    /// Received CHECKPOINTs above the low watermark: seq → signer → message.
    checkpoints: BTreeMap<u64, BTreeMap<usize, Checkpoint>>,
    /// This replica's state digest at its own checkpoints above h.
    own_checkpoints: BTreeMap<u64, Digest>,

    // Execution.
    executed: u64,
    state: Digest,
    /// `history[i]` is the batch executed at `history_base + i + 1`.
    history: Vec<Batch>,
    /// `history_digests[i]` is the digest of `history[i]`.
    history_digests: Vec<Digest>,
    /// The executed history below this was discarded (the adopted
    /// snapshot's sequence number, or 0).
    history_base: u64,
    /// The snapshot adopted last (durable at the host and proved).
    snapshot: Option<Arc<SnapshotCheckpoint>>,
    /// Snapshots asked of the host and not reported yet, by position.
    taking: BTreeMap<u64, snapshots::PendingTake>,
    /// Snapshots durable at the host and not adopted yet, by sequence
    /// number.
    own_snapshots: BTreeMap<u64, Arc<SnapshotManifest>>,
    /// Stable checkpoints at snapshot sequence numbers above the adopted
    /// snapshot (waiting for this replica's own snapshot there).
    snapshot_proofs: BTreeMap<u64, StableCheckpoint>,
    /// The snapshot being fetched.
    transfer: Option<snapshots::Transfer>,
    /// Snapshots fetched and installed in this incarnation.
    installed_snapshots: u64,
    /// History entries already emitted in this incarnation.
    emitted: u64,
    /// The agreed clock after the last emitted batch: the largest timestamp
    /// of a non-null batch emitted so far (execution clamps, so it never
    /// goes back; see [`PbftNode::emit`]).
    agreed_time: Time,
    /// The latest `now` a call passed in (the primary stamps batches with
    /// it; a backup checks PRE-PREPARE timestamps against it).
    clock: Time,
    applied_positions: u64,
    last_executed: HashMap<ClientId, u64>,

    // Requests.
    next_seq: u64,
    queue: VecDeque<Command>,
    /// Requests queued or pre-prepared here and not executed.
    ordering: HashSet<(ClientId, u64)>,
    /// Requests known to this replica and not executed: when they arrived.
    pending: HashMap<(ClientId, u64), Command>,
    request_deadline: Time,

    // View change.
    vc_timeout: std::time::Duration,
    vc_deadline: Time,
    /// Each replica's latest (highest-view) VIEW-CHANGE.
    view_changes: BTreeMap<usize, Arc<ViewChange>>,
    my_view_change: Option<Arc<ViewChange>>,
    /// Each replica's latest (highest-view) verified SUSPECT, this one's
    /// included; those below the view before this replica's are dropped.
    suspicions: BTreeMap<usize, Suspect>,
    last_new_view: Option<Arc<NewView>>,
    announce_view_change: bool,

    // Retransmission and state transfer.
    status_deadline: Time,
    peer_executed: Vec<u64>,
    /// Each peer's latest STATUS (`None` until one arrives in this
    /// incarnation).
    peer_status: Vec<Option<PeerStatus>>,
    fetch_deadline: Time,
    fetch_peer: usize,
    /// The peer the last FETCH went to: only its SNAPSHOT-OFFER is taken
    /// (an unasked offer from a faulty peer could otherwise capture every
    /// transfer and stall it).
    fetch_asked: Option<usize>,

    // Reads.
    reads: VecDeque<PendingRead>,
    next_nonce: u64,

    stats: AuthStats,
    verified: HashSet<(usize, Digest)>,
    requests: RequestCheck,
    /// Request timeouts on which this replica did not suspect its primary
    /// because it lagged or could not tell ([`Standing`]).
    suspicions_deferred: u64,
    /// The view and last executed sequence number when this replica last
    /// held back because it was [`Standing::Behind`].
    deferred_behind: Option<(u64, u64)>,
    /// Role, view and primary last reported in events (`None` until the
    /// first call of this incarnation).
    announced: Option<(Role, u64, Option<NodeId>)>,
}

impl PbftNode {
    /// The current view.
    pub fn view(&self) -> u64 {
        self.view
    }
    /// False while changing to [`view`](Self::view).
    pub fn is_active(&self) -> bool {
        self.active
    }
    /// The primary of the current view.
    pub fn primary(&self) -> NodeId {
        self.config.replicas[(self.view % self.n as u64) as usize]
    }
    /// Last sequence number executed.
    pub fn executed_seq(&self) -> u64 {
        self.executed
    }
    /// The batch executed at `seq`, if executed.
    /// `None` below [`PbftNode::history_base`] (discarded).
    pub fn executed_batch(&self, seq: u64) -> Option<&Batch> {
        seq.checked_sub(self.history_base + 1).and_then(|i| self.history.get(i as usize))
    }
    /// The digest of the batch executed at `seq`, if executed and still
    /// held.
    pub fn executed_digest(&self, seq: u64) -> Option<Digest> {
        let i = seq.checked_sub(self.history_base + 1)?;
        self.history_digests.get(i as usize).copied()
    }
    /// Snapshots fetched from peers and installed in this incarnation.
    pub fn installed_snapshots(&self) -> u64 {
        self.installed_snapshots
    }
    /// The low watermark h (the last stable checkpoint).
    pub fn low_watermark(&self) -> u64 {
        self.stable.seq
    }
    /// The state digest after the last executed batch.
    pub fn state_digest(&self) -> Digest {
        self.state
    }
    /// Messages dropped because a check failed.
    pub fn auth_stats(&self) -> AuthStats {
        self.stats
    }
    /// Request timeouts on which this replica did not suspect its primary
    /// because it lagged behind its peers or could not hear enough of them
    /// to know its view is current.
    pub fn suspicions_deferred(&self) -> u64 {
        self.suspicions_deferred
    }
    /// Sequence numbers held in the log window.
    pub fn log_len(&self) -> usize {
        self.slots.len()
    }
    /// A one-line summary of the replica's state, for debugging.
    pub fn summary(&self) -> String {
        format!(
            "{} view {}{} h {} executed {} next_seq {} queue {} pending {} ordering {} slots {:?} vcs {:?} req_deadline {:?} vc_deadline {:?} reads {:?} stats {:?}",
            self.id,
            self.view,
            if self.active { "" } else { " (changing)" },
            self.stable.seq,
            self.executed,
            self.next_seq,
            self.queue.len(),
            self.pending.len(),
            self.ordering.len(),
            self.slots
                .iter()
                .filter(|(s, _)| **s > self.executed)
                .take(4)
                .map(|(s, sl)| (
                    *s,
                    sl.view,
                    sl.pre_prepare.is_some(),
                    sl.sent_commit,
                    sl.committed
                ))
                .collect::<Vec<_>>(),
            self.view_changes.iter().map(|(p, v)| (*p, v.view)).collect::<Vec<_>>(),
            self.request_deadline,
            self.vc_deadline,
            self.reads
                .iter()
                .take(4)
                .map(|r| (r.voters.count_ones(), r.max_seq, r.resolved))
                .collect::<Vec<_>>(),
            self.stats,
        )
    }
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn is_primary(&self) -> bool {
        (self.view % self.n as u64) as usize == self.me
    }
    fn primary_position(&self, view: u64) -> usize {
        (view % self.n as u64) as usize
    }
    fn high_watermark(&self) -> u64 {
        self.stable.seq + self.config.log_window
    }
    fn in_window(&self, seq: u64) -> bool {
        seq > self.stable.seq && seq <= self.high_watermark()
    }
    fn f(&self) -> usize {
        quorum::byzantine_f(self.n)
    }

    // ----- output helpers ---------------------------------------------------

    fn broadcast(&self, msg: Message, out: &mut PbftOutput) {
        for (j, &r) in self.config.replicas.iter().enumerate() {
            if j != self.me {
                out.send(r, msg.clone());
            }
        }
    }

    fn send_to(&self, j: usize, msg: Message, out: &mut PbftOutput) {
        out.send(self.config.replicas[j], msg);
    }

    fn current_role(&self) -> Role {
        if !self.active {
            Role::Candidate
        } else if self.is_primary() {
            Role::Leader
        } else {
            Role::Follower
        }
    }

    /// Emits role and leader events when they changed (and on the first
    /// call of an incarnation, so a driver learns who is primary of view
    /// 0); called at the end of every entry point.
    fn finish(&mut self, out: &mut PbftOutput) {
        let (role, view) = (self.current_role(), self.view);
        let leader = self.active.then(|| self.primary());
        let now = (role, view, leader);
        if self.announced != Some(now) {
            let before = self.announced.replace(now);
            if before.is_none_or(|(r, v, _)| r != role || v != view) {
                out.events.push(Event::RoleChanged { role, epoch: view });
            }
            if before.is_none_or(|(_, v, l)| l != leader || v != view) {
                out.events.push(Event::LeaderChanged { leader, epoch: view });
            }
        }
        debug_assert!(self.executed >= self.emitted || self.emitted == 0);
        assert_eq!(
            self.executed,
            self.history_base + self.history.len() as u64,
            "the history holds every batch executed above its base"
        );
    }

    /// Emits history recovered from disk that this incarnation has not
    /// applied yet, and re-announces a pending view change.
    fn flush(&mut self, out: &mut PbftOutput) {
        while self.emitted < self.executed {
            let seq = self.emitted + 1;
            let batch = self.history[(seq - self.history_base) as usize - 1].clone();
            self.emit(seq, &batch, out);
        }
        if self.announce_view_change {
            self.announce_view_change = false;
            if let Some(vc) = self.my_view_change.clone() {
                self.broadcast(Message::ViewChange(vc), out);
            }
        }
    }

    /// Emits the batch executed at `seq` with the agreed time: the largest
    /// timestamp of any non-null batch up to `seq`. Emission runs over the
    /// whole history from 1 in every incarnation, and every correct replica
    /// executes the same batches (with the same timestamps: the digest
    /// covers them) in the same order, so every one emits the same time for
    /// each position, and it never goes back even if a primary's clock did.
    fn emit(&mut self, seq: u64, batch: &Batch, out: &mut PbftOutput) {
        assert_eq!(seq, self.emitted + 1, "sequence numbers are applied in order, once");
        self.emitted = seq;
        if seq == 1 {
            self.agreed_time = Time::ZERO;
        }
        let before = self.agreed_time;
        if !batch.is_empty() {
            self.agreed_time = self.agreed_time.max(batch.timestamp);
        }
        assert!(self.agreed_time >= before, "the agreed clock never goes back");
        let time = Some(self.agreed_time);
        if batch.is_empty() {
            self.applied_positions += 1;
            out.committed.push(Committed { index: self.applied_positions, command: None, time });
        }
        for c in batch.iter() {
            self.applied_positions += 1;
            let command = Command { client: c.client, seq: c.seq, op: inner_op(&c.op) };
            out.committed.push(Committed {
                index: self.applied_positions,
                command: Some(command),
                time,
            });
        }
    }

    /// The agreed clock after the last batch emitted (ZERO before any).
    pub fn agreed_time(&self) -> Time {
        self.agreed_time
    }

    /// Whether a backup may PREPARE a batch stamped `timestamp`: within δ
    /// of its own clock either way. The null request is never checked (its
    /// timestamp is not used). [`InjectedBug::SkipClockCheck`] accepts any.
    fn timestamp_in_bounds(&self, batch: &Batch) -> bool {
        batch.is_empty()
            || self.config.bug == InjectedBug::SkipClockCheck
            || batch.timestamp.as_micros().abs_diff(self.clock.as_micros())
                <= self.config.max_clock_skew.as_micros().min(u64::MAX as u128) as u64
    }

    // ----- requests ----------------------------------------------------------

    /// Whether a request should be ordered: not older than the client's
    /// latest executed one, not already queued or in flight.
    fn wants(&self, c: &Command) -> Result<bool, ProposeError> {
        let last = self.last_executed.get(&c.client).copied().unwrap_or(0);
        if c.seq < last {
            return Err(ProposeError::Stale);
        }
        Ok(!self.ordering.contains(&(c.client, c.seq)))
    }

    fn accept_request(
        &mut self,
        now: Time,
        c: Command,
        forward: bool,
        out: &mut PbftOutput,
    ) -> Result<(), ProposeError> {
        if !self.wants(&c)? {
            return Ok(());
        }
        if self.active && self.is_primary() {
            if self.queue.len() >= self.config.max_pending_requests {
                return Err(ProposeError::Busy("request queue full"));
            }
            self.ordering.insert((c.client, c.seq));
            self.queue.push_back(c);
            return Ok(());
        }
        let key = (c.client, c.seq);
        if self.pending.contains_key(&key) {
            return Ok(());
        }
        if self.pending.len() >= self.config.max_pending_requests {
            return Err(ProposeError::Busy("too many pending requests"));
        }
        if forward && self.active {
            let requests: crate::message::Requests = Arc::from(vec![c.clone()]);
            let d = requests_digest(&requests);
            let p = self.primary_position(self.view);
            let auth = self.keys.mac(p, Message::forward_header(&d).as_bytes());
            self.send_to(p, Message::Forward { requests, auth }, out);
        }
        self.pending.insert(key, c);
        if self.request_deadline == Time::MAX {
            self.request_deadline = now + self.vc_timeout;
        }
        Ok(())
    }

    /// The primary cuts batches from its queue while the window and the
    /// in-flight limit allow.
    fn send_batches(&mut self, out: &mut PbftOutput) {
        if !self.active || !self.is_primary() {
            return;
        }
        while !self.queue.is_empty()
            && self.next_seq <= self.high_watermark()
            && self.next_seq - 1 - self.executed.min(self.next_seq - 1)
                < self.config.max_inflight_batches
        {
            let mut batch = Vec::with_capacity(self.queue.len().min(self.config.max_batch));
            while batch.len() < self.config.max_batch {
                let Some(c) = self.queue.pop_front() else { break };
                let last = self.last_executed.get(&c.client).copied().unwrap_or(0);
                if c.seq < last {
                    self.ordering.remove(&(c.client, c.seq));
                    continue;
                }
                batch.push(c);
            }
            if batch.is_empty() {
                break;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let batch = Batch::new(self.clock, batch);
            let digest = batch_digest(&batch);
            let auth = self.keys.auth(PrePrepare::header(self.view, seq, &digest).as_bytes());
            let view = self.view;
            let slot = self.slots.entry(seq).or_default();
            slot.enter_view(view);
            assert!(
                slot.pre_prepare.is_none(),
                "the primary assigns seq {seq} twice in view {view}"
            );
            slot.pre_prepare = Some((digest, batch.clone(), Some(auth.clone())));
            note_q(&mut slot.pre_prepared, seq, view, digest);
            out.writes.push(Write::PrePrepared { seq, view, digest, batch: batch.clone() });
            self.broadcast(Message::PrePrepare(PrePrepare { view, seq, digest, batch, auth }), out);
        }
    }

    // ----- normal case -------------------------------------------------------

    fn on_pre_prepare(&mut self, pp: PrePrepare, out: &mut PbftOutput) {
        let p = self.primary_position(pp.view);
        if p == self.me {
            return; // our own pre-prepare, relayed back
        }
        let header = PrePrepare::header(pp.view, pp.seq, &pp.digest);
        if !self.keys.check_auth(p, header.as_bytes(), &pp.auth) {
            self.stats.bad_mac += 1;
            return;
        }
        if pp.view != self.view || !self.active || p == self.me {
            return;
        }
        if !self.in_window(pp.seq) {
            self.stats.invalid += 1;
            return;
        }
        if pp.seq <= self.executed
            && self.slots.get(&pp.seq).is_some_and(|s| s.view == pp.view && s.pre_prepare.is_some())
        {
            return;
        }
        if batch_digest(&pp.batch) != pp.digest {
            self.stats.bad_digest += 1;
            return;
        }
        if !self.requests.check_all(&pp.batch) {
            self.stats.bad_signature += 1;
            return;
        }
        // A sequence number f+1 peers report executed is committed (one of
        // them is correct): its timestamp is no longer this replica's to
        // check ([`PbftNode::prepare_refused_upto`]).
        let in_bounds =
            self.timestamp_in_bounds(&pp.batch) || pp.seq <= self.executed_by_a_correct_peer();
        let view = self.view;
        let slot = self.slots.entry(pp.seq).or_default();
        slot.enter_view(view);
        match &slot.pre_prepare {
            Some((d, _, _)) if *d != pp.digest => {
                // The primary equivocates: keep the first.
                self.stats.invalid += 1;
                return;
            }
            Some(_) => return,
            None => {}
        }
        slot.pre_prepare = Some((pp.digest, pp.batch.clone(), Some(pp.auth)));
        if !in_bounds {
            // Not prepared by this replica (TOCS §5.4: a backup checks the
            // primary's non-deterministic choice before it prepares). Kept
            // without a durable record or a place in Q: if `q − 1` backups
            // PREPARE it anyway (at least one correct, whose clock was close
            // enough: this replica's is off, or the pre-prepare was late),
            // it prepares here then; otherwise the request stalls and the
            // view-change timer moves on from this primary.
            slot.timestamp_refused = true;
            self.stats.bad_timestamp += 1;
            // Once per (view, seq): a slot takes one pre-prepare per view.
            out.events.push(Event::TimestampRefused {
                epoch: view,
                seq: pp.seq,
                proposed: pp.batch.timestamp,
                local: self.clock,
            });
            self.check_prepared(pp.seq, out);
            return;
        }
        note_q(&mut slot.pre_prepared, pp.seq, view, pp.digest);
        out.writes.push(Write::PrePrepared {
            seq: pp.seq,
            view,
            digest: pp.digest,
            batch: pp.batch,
        });
        self.send_prepare(pp.seq, out);
        self.check_prepared(pp.seq, out);
    }

    fn send_prepare(&mut self, seq: u64, out: &mut PbftOutput) {
        let (view, me, id) = (self.view, self.me, self.id);
        let Some(slot) = self.slots.get_mut(&seq) else { return };
        let Some((digest, _, _)) = slot.pre_prepare else { return };
        if slot.sent_prepare || slot.view != view || slot.timestamp_refused {
            return;
        }
        slot.sent_prepare = true;
        add_vote(&mut slot.prepares, digest, me);
        let auth = self.keys.auth(Vote::header(false, view, seq, &digest, id).as_bytes());
        self.broadcast(Message::Prepare(Vote { view, seq, digest, replica: id, auth }), out);
    }

    /// Checks a vote's sender, view and window; returns the voter position.
    fn check_vote(&mut self, from: NodeId, commit: bool, v: &Vote) -> Option<usize> {
        let Some(pos) = self.config.position(v.replica).filter(|_| v.replica == from) else {
            self.stats.bad_sender += 1;
            return None;
        };
        let header = Vote::header(commit, v.view, v.seq, &v.digest, v.replica);
        if !self.keys.check_auth(pos, header.as_bytes(), &v.auth) {
            self.stats.bad_mac += 1;
            return None;
        }
        if v.view != self.view || !self.active {
            return None;
        }
        if !self.in_window(v.seq) {
            self.stats.invalid += 1;
            return None;
        }
        Some(pos)
    }

    fn on_prepare(&mut self, from: NodeId, v: Vote, out: &mut PbftOutput) {
        let Some(pos) = self.check_vote(from, false, &v) else { return };
        if pos == self.primary_position(v.view) {
            self.stats.invalid += 1; // the primary's vote is its pre-prepare
            return;
        }
        let slot = self.slots.entry(v.seq).or_default();
        slot.enter_view(v.view);
        add_vote(&mut slot.prepares, v.digest, pos);
        self.check_prepared(v.seq, out);
    }

    fn on_commit(&mut self, from: NodeId, v: Vote, out: &mut PbftOutput) {
        let Some(pos) = self.check_vote(from, true, &v) else { return };
        let slot = self.slots.entry(v.seq).or_default();
        slot.enter_view(v.view);
        add_vote(&mut slot.commits, v.digest, pos);
        self.check_committed(v.seq, out);
    }

    /// Pre-prepare plus `q − 1` matching PREPAREs from backups: prepared.
    fn check_prepared(&mut self, seq: u64, out: &mut PbftOutput) {
        let (view, me, id, q) = (self.view, self.me, self.id, self.q);
        let Some(slot) = self.slots.get_mut(&seq) else { return };
        let Some((digest, batch, _)) = &slot.pre_prepare else { return };
        if slot.sent_commit || slot.view != view {
            return;
        }
        if (count_votes(&slot.prepares, digest) as usize) < q - 1 {
            return;
        }
        let (digest, batch) = (*digest, batch.clone());
        if slot.timestamp_refused {
            // A quorum vouches for the timestamp this replica refused: record
            // the pre-prepare now, before the certificate (storage order).
            slot.timestamp_refused = false;
            note_q(&mut slot.pre_prepared, seq, view, digest);
            out.writes.push(Write::PrePrepared { seq, view, digest, batch: batch.clone() });
        }
        slot.prepared = Some(PreparedEntry { seq, view, digest, batch });
        slot.sent_commit = true;
        add_vote(&mut slot.commits, digest, me);
        out.writes.push(Write::Prepared { seq, view, digest });
        let auth = self.keys.auth(Vote::header(true, view, seq, &digest, id).as_bytes());
        self.broadcast(Message::Commit(Vote { view, seq, digest, replica: id, auth }), out);
        self.check_committed(seq, out);
    }

    /// The highest sequence number that at least f+1 peers claim, in their
    /// latest STATUS, to have executed (0 with fewer than f+1 STATUS): one
    /// of them is correct, so every sequence number up to it is committed.
    /// A correct replica's claim stays true (it reports only what it
    /// executed and made durable, and executed sequence numbers never
    /// change), so a claim counts however old it is; f faulty peers
    /// claiming more cannot raise it.
    fn executed_by_a_correct_peer(&self) -> u64 {
        let f = self.f();
        let mut claims: Vec<u64> = self.peer_status.iter().flatten().map(|s| s.executed).collect();
        if claims.len() <= f {
            return 0;
        }
        claims.sort_unstable_by(|a, b| b.cmp(a));
        claims[f]
    }

    /// PREPAREs the pre-prepares of this view whose timestamps this replica
    /// refused, up to the sequence number f+1 peers executed
    /// ([`executed_by_a_correct_peer`](Self::executed_by_a_correct_peer)).
    ///
    /// A replica that lags gets the PRE-PREPAREs it missed by
    /// retransmission, seconds after the primary stamped them, and refuses
    /// their timestamps: further than δ from its clock only because they
    /// are late. Without its own PREPARE, preparing one takes every other
    /// backup's (`q − 1` of the `n − 2` others), so one peer it cannot
    /// hear stalls it; its request timer then makes it suspect a correct
    /// primary and ask, alone, for a view nobody joins (seen on real
    /// processes: a primary of view 0 started late under load, and one
    /// peer's connection to it still in reconnect backoff).
    ///
    /// The δ check (OSDI'99 §4.6, TOCS §5.4) is a backup's check of the
    /// primary's *proposal*: it makes a prepared batch's timestamp one a
    /// correct backup found within δ of its clock. Once a correct replica
    /// executed the sequence number, the batch there is decided and its
    /// certificates carry such a check already, without this replica:
    ///
    /// - if the pre-prepare held here is that batch, this PREPARE adds a
    ///   vote to a decided outcome (the agreed clock is unchanged by it);
    /// - if it is not (a faulty primary equivocated), it cannot become
    ///   prepared in this view: the committed batch was prepared with
    ///   `q − 1` backups' PREPAREs, which meet any other `q − 1` in a
    ///   correct backup, and a correct backup votes once per view and
    ///   sequence number, as this replica still does (one pre-prepare per
    ///   slot and view, one PREPARE). Nor can it be in a later NEW-VIEW's
    ///   O, which re-proposes the committed batch.
    ///
    /// So agreement and the agreed-clock bound hold as before; only a
    /// correct primary's batches, committed without this replica, are
    /// prepared here sooner. f faulty peers claiming executions that never
    /// happened do not reach f+1 claims.
    fn prepare_refused_upto(&mut self, out: &mut PbftOutput) {
        if !self.active {
            return;
        }
        let upto = self.executed_by_a_correct_peer().min(self.high_watermark());
        if upto <= self.executed {
            return;
        }
        let view = self.view;
        let refused: Vec<u64> = self
            .slots
            .range(self.executed + 1..=upto)
            .filter(|(_, s)| s.view == view && s.timestamp_refused && s.pre_prepare.is_some())
            .map(|(&seq, _)| seq)
            .collect();
        for seq in refused {
            let Some(slot) = self.slots.get_mut(&seq) else { continue };
            let Some((digest, batch, _)) = &slot.pre_prepare else { continue };
            let (digest, batch) = (*digest, batch.clone());
            slot.timestamp_refused = false;
            note_q(&mut slot.pre_prepared, seq, view, digest);
            out.writes.push(Write::PrePrepared { seq, view, digest, batch });
            self.send_prepare(seq, out);
            self.check_prepared(seq, out);
        }
    }

    /// Prepared plus `q` matching COMMITs: committed-local.
    fn check_committed(&mut self, seq: u64, out: &mut PbftOutput) {
        let q = self.q;
        let Some(slot) = self.slots.get_mut(&seq) else { return };
        let Some((digest, _, _)) = &slot.pre_prepare else { return };
        if slot.committed || !slot.sent_commit || (count_votes(&slot.commits, digest) as usize) < q
        {
            return;
        }
        slot.committed = true;
        if seq == self.executed + 1 {
            self.execute_committed(out);
        }
    }

    fn execute_committed(&mut self, out: &mut PbftOutput) {
        let before = self.executed;
        loop {
            let seq = self.executed + 1;
            let Some(slot) = self.slots.get(&seq) else { break };
            if !slot.committed {
                break;
            }
            let (digest, batch, _) =
                slot.pre_prepare.clone().expect("committed slots are pre-prepared");
            self.execute(seq, batch, digest, true, out);
        }
        if self.executed > before {
            self.on_progress(out);
        }
    }

    /// Executes `batch`, whose digest is `digest` (checked when it was
    /// accepted), at `seq` (the next sequence number).
    fn execute(
        &mut self,
        seq: u64,
        batch: Batch,
        digest: Digest,
        checkpoint: bool,
        out: &mut PbftOutput,
    ) {
        assert_eq!(seq, self.executed + 1, "execution is strictly in sequence order");
        debug_assert_eq!(digest, batch_digest(&batch));
        self.state = chain(&self.state, seq, &digest);
        self.executed = seq;
        self.history.push(batch.clone());
        self.history_digests.push(digest);
        out.writes.push(Write::Executed { seq, batch: batch.clone() });
        for c in batch.iter() {
            let last = self.last_executed.entry(c.client).or_insert(0);
            *last = (*last).max(c.seq);
            self.pending.remove(&(c.client, c.seq));
            self.ordering.remove(&(c.client, c.seq));
        }
        // A request older than its client's latest executed one is never
        // ordered (the client moved on: OSDI'99 §4.1, one outstanding
        // request per client), so a backup no longer waits for it. Such a
        // request becomes pending when a copy arrives late, after it
        // executed (a retry or a duplicate), and its client then moves on:
        // left pending, it would run the request timer for ever and have
        // this replica suspect a primary with nothing left to order.
        if !batch.is_empty() {
            let last = &self.last_executed;
            self.pending.retain(|(client, seq), _| last.get(client).is_none_or(|l| seq >= l));
        }
        self.emit(seq, &batch, out);
        if self.is_snapshot_seq(seq) {
            // Its CHECKPOINT signs the snapshot's digest: it leaves when
            // the host reports the snapshot durable.
            if checkpoint {
                self.take_snapshot(seq, out);
            }
        } else if seq.is_multiple_of(self.config.checkpoint_interval) {
            self.own_checkpoints.insert(seq, self.state);
            if checkpoint {
                let d = Checkpoint::digest(seq, &self.state, self.id);
                let cp = Checkpoint {
                    seq,
                    state: self.state,
                    replica: self.id,
                    sig: self.keys.sign(&d),
                };
                self.broadcast(Message::Checkpoint(cp.clone()), out);
                self.record_checkpoint(self.me, cp, out);
            }
        }
    }

    /// After execution advanced: timers, batches, reads.
    fn on_progress(&mut self, out: &mut PbftOutput) {
        self.vc_timeout = self.config.view_change_timeout;
        self.request_deadline = Time::MAX; // re-armed below by the caller's `now`
        self.send_batches(out);
        self.release_reads(out);
    }

    // ----- checkpoints and state transfer -------------------------------------

    fn on_checkpoint(&mut self, cp: Checkpoint, out: &mut PbftOutput) {
        let Some(pos) = self.config.position(cp.replica) else {
            self.stats.bad_sender += 1;
            return;
        };
        if cp.seq <= self.stable.seq || !cp.seq.is_multiple_of(self.config.checkpoint_interval) {
            return;
        }
        if self.checkpoints.get(&cp.seq).is_some_and(|m| m.contains_key(&pos)) {
            return;
        }
        // Far beyond the window (this replica lags, e.g. after a long
        // partition): each sender keeps only its latest such CHECKPOINT, so
        // memory stays bounded (n entries) while a quorum's proof can still
        // assemble and start a state transfer.
        let far = self.high_watermark() + 4 * self.config.log_window;
        let older_far: Vec<u64> = if cp.seq > far {
            let mine: Vec<u64> = self
                .checkpoints
                .range(far + 1..)
                .filter(|(_, m)| m.contains_key(&pos))
                .map(|(&seq, _)| seq)
                .collect();
            if mine.iter().any(|&seq| seq > cp.seq) {
                self.stats.invalid += 1;
                return;
            }
            mine
        } else {
            Vec::new()
        };
        if !self.check_signed(pos, &Checkpoint::digest(cp.seq, &cp.state, cp.replica), &cp.sig) {
            return;
        }
        for seq in older_far {
            if let Some(m) = self.checkpoints.get_mut(&seq) {
                m.remove(&pos);
                if m.is_empty() {
                    self.checkpoints.remove(&seq);
                }
            }
        }
        self.record_checkpoint(pos, cp, out);
    }

    fn record_checkpoint(&mut self, pos: usize, cp: Checkpoint, out: &mut PbftOutput) {
        let (seq, state) = (cp.seq, cp.state);
        let set = self.checkpoints.entry(seq).or_default();
        set.entry(pos).or_insert(cp);
        let proof: Vec<Checkpoint> = set.values().filter(|c| c.state == state).cloned().collect();
        if proof.len() >= self.q {
            self.make_stable(StableCheckpoint { seq, state, proof: Arc::from(proof) }, out);
        }
    }

    /// Adopts a proved stable checkpoint: moves the window, discards below.
    fn make_stable(&mut self, s: StableCheckpoint, out: &mut PbftOutput) {
        if s.seq <= self.stable.seq {
            return;
        }
        if let Some(own) = self.own_checkpoints.get(&s.seq) {
            assert_eq!(
                *own, s.state,
                "{}: state at checkpoint {} diverged from a quorum's",
                self.id, s.seq
            );
        }
        out.writes.push(Write::Stable(s.clone()));
        let seq = s.seq;
        self.stable = s;
        self.slots = self.slots.split_off(&(seq + 1));
        self.checkpoints = self.checkpoints.split_off(&(seq + 1));
        self.own_checkpoints = self.own_checkpoints.split_off(&seq);
        if self.next_seq <= seq {
            self.next_seq = seq + 1;
        }
        if self.executed < seq {
            self.fetch_deadline = Time::ZERO; // fetch on the next tick
        }
        let stable = self.stable.clone();
        self.note_stable(&stable, out);
        self.send_batches(out);
    }

    fn fetch(&mut self, now: Time, out: &mut PbftOutput) {
        if self.executed >= self.stable.seq {
            self.fetch_deadline = Time::MAX;
            self.transfer = None;
            return;
        }
        if self.continue_transfer(now, out) {
            return;
        }
        let signers: Vec<usize> = self
            .stable
            .proof
            .iter()
            .filter_map(|c| self.config.position(c.replica))
            .filter(|&p| p != self.me)
            .collect();
        let peer = if signers.is_empty() {
            (self.me + 1 + self.fetch_peer % (self.n - 1).max(1)) % self.n
        } else {
            signers[self.fetch_peer % signers.len()]
        };
        self.fetch_peer += 1;
        self.fetch_asked = Some(peer);
        let (from, upto) = (self.executed + 1, self.stable.seq);
        let auth = self.keys.mac(peer, Message::fetch_header(from, upto).as_bytes());
        if peer != self.me {
            self.send_to(peer, Message::Fetch { from, upto, auth }, out);
        }
        self.fetch_deadline = now + self.config.status_interval * 2;
    }

    fn on_fetch(
        &mut self,
        pos: usize,
        from: u64,
        upto: u64,
        auth: &crate::Mac,
        out: &mut PbftOutput,
    ) {
        if !self.keys.check_mac(pos, Message::fetch_header(from, upto).as_bytes(), auth) {
            self.stats.bad_mac += 1;
            return;
        }
        if from == 0 || upto < from {
            return;
        }
        if from <= self.history_base {
            self.offer_snapshot(pos, from, out);
            return;
        }
        if upto > self.executed {
            return;
        }
        let count = ((upto - from + 1) as usize).min(self.config.max_state_transfer_batches);
        let first = (from - self.history_base) as usize - 1;
        let batches: Arc<[Batch]> = self.history[first..first + count].iter().cloned().collect();
        let target = from + count as u64 - 1;
        let manifest = self.manifest_at(target);
        self.send_to(pos, Message::State { first: from, batches, manifest }, out);
    }

    fn on_state(
        &mut self,
        first: u64,
        batches: &[Batch],
        manifest: Option<&SnapshotManifest>,
        out: &mut PbftOutput,
    ) {
        if first != self.executed + 1 || self.executed >= self.stable.seq {
            return;
        }
        let target = self.stable.seq;
        if first + batches.len() as u64 - 1 < target {
            self.stats.invalid += 1;
            return;
        }
        let mut state = self.state;
        let count = (target - first + 1) as usize;
        let digests: Vec<Digest> = batches[..count].iter().map(batch_digest).collect();
        for (i, d) in digests.iter().enumerate() {
            state = chain(&state, first + i as u64, d);
        }
        // A snapshot checkpoint's digest covers the chain inside its
        // manifest: the sender must supply the manifest.
        let proved = if self.is_snapshot_seq(target) {
            match manifest {
                None => return, // this peer has no manifest there; ask another
                Some(m) => m.seq == target && m.chain == state && m.state() == self.stable.state,
            }
        } else {
            state == self.stable.state
        };
        if !proved {
            self.stats.bad_digest += 1;
            return;
        }
        for (i, (b, d)) in batches.iter().zip(digests).enumerate() {
            self.execute(first + i as u64, b.clone(), d, false, out);
        }
        self.fetch_deadline = Time::MAX;
        // Continue with whatever already committed above the checkpoint.
        self.execute_committed(out);
        self.on_progress(out);
    }

    // ----- view change -------------------------------------------------------

    fn check_signed(
        &mut self,
        pos: usize,
        digest: &Digest,
        sig: &ed25519_dalek::Signature,
    ) -> bool {
        if self.verified.contains(&(pos, *digest)) {
            return true;
        }
        let seed = self.config.key_seed;
        let sig_bytes = sig.to_bytes();
        let shared_hit = self
            .config
            .shared_checks
            .as_ref()
            .is_some_and(|s| s.signature_verified(seed, pos, digest, &sig_bytes));
        if shared_hit && let Some(m) = &self.config.auth_meter {
            m.memo_hit();
        }
        if !shared_hit {
            if !self.keys.check_signature(pos, digest, sig) {
                self.stats.bad_signature += 1;
                return false;
            }
            if let Some(s) = &self.config.shared_checks {
                s.note_signature(seed, pos, digest, &sig_bytes);
            }
        }
        if self.verified.len() >= MAX_VERIFIED {
            self.verified.clear();
        }
        self.verified.insert((pos, *digest));
        true
    }

    /// Checks a stable checkpoint's proof.
    fn check_stable(&mut self, s: &StableCheckpoint) -> bool {
        if s.seq == 0 {
            return s.state == Digest::ZERO;
        }
        if !s.seq.is_multiple_of(self.config.checkpoint_interval) {
            return false;
        }
        let mut signers = 0u64;
        for c in s.proof.iter() {
            let Some(pos) = self.config.position(c.replica) else { return false };
            if c.seq != s.seq || c.state != s.state || signers & (1 << pos) != 0 {
                return false;
            }
            if !self.check_signed(pos, &Checkpoint::digest(c.seq, &c.state, c.replica), &c.sig) {
                return false;
            }
            signers |= 1 << pos;
        }
        signers.count_ones() as usize >= self.q
    }

    /// Checks a VIEW-CHANGE: signature, checkpoint proof, entries within
    /// its window, batches matching their digests. Returns the sender.
    fn check_view_change(&mut self, vc: &ViewChange) -> Option<usize> {
        let Some(pos) = self.config.position(vc.replica) else {
            self.stats.bad_sender += 1;
            return None;
        };
        if !self.check_signed(pos, &vc.digest(), &vc.sig) {
            return None;
        }
        let (lo, hi) = (vc.stable.seq, vc.stable.seq + self.config.log_window);
        let mut last = lo;
        for p in &vc.prepared {
            if p.seq <= last || p.seq > hi || p.view >= vc.view {
                self.stats.invalid += 1;
                return None;
            }
            last = p.seq;
            if batch_digest(&p.batch) != p.digest {
                self.stats.bad_digest += 1;
                return None;
            }
            if !self.requests.check_all(&p.batch) {
                self.stats.bad_signature += 1;
                return None;
            }
        }
        let q_ok = vc.pre_prepared.len() as u64
            <= self.config.log_window * crate::storage::MAX_Q_PER_SEQ as u64
            && vc.pre_prepared.iter().all(|e| e.seq > lo && e.seq <= hi && e.view < vc.view);
        if !q_ok {
            self.stats.invalid += 1;
            return None;
        }
        if !self.check_stable(&vc.stable) {
            self.stats.invalid += 1;
            return None;
        }
        Some(pos)
    }

    fn build_view_change(&self, view: u64) -> ViewChange {
        let mut prepared = Vec::new();
        let mut pre_prepared = Vec::new();
        for (&seq, slot) in self.slots.range(self.stable.seq + 1..) {
            if let Some(p) = &slot.prepared {
                debug_assert_eq!(p.seq, seq);
                prepared.push(p.clone());
            }
            pre_prepared.extend(slot.pre_prepared.iter().copied());
        }
        let mut vc = ViewChange {
            view,
            replica: self.id,
            stable: self.stable.clone(),
            prepared,
            pre_prepared,
            sig: ed25519_dalek::Signature::from_bytes(&[0; 64]),
        };
        vc.sig = self.keys.sign(&vc.digest());
        vc
    }

    /// Leaves the current view for `view`: persists, multicasts a signed
    /// VIEW-CHANGE, doubles the timeout.
    fn start_view_change(&mut self, now: Time, view: u64, out: &mut PbftOutput) {
        assert!(view > self.view || (view == self.view && !self.active));
        self.requeue_for_view_change();
        self.view = view;
        self.active = false;
        // Those for the view just left are kept: they are relayed to peers
        // still in it (`on_status`).
        self.suspicions.retain(|_, s| s.view + 1 >= view);
        out.writes.push(Write::View { view, changing: true });
        for slot in self.slots.values_mut() {
            slot.enter_view(view);
        }
        let vc = Arc::new(self.build_view_change(view));
        self.my_view_change = Some(vc.clone());
        self.view_changes.insert(self.me, vc.clone());
        self.broadcast(Message::ViewChange(vc), out);
        self.vc_deadline = Time::MAX;
        self.vc_timeout = (self.vc_timeout * 2).min(self.config.max_view_change_timeout);
        self.request_deadline = Time::MAX;
        self.maybe_start_vc_timer(now);
        self.try_new_view(now, out);
    }

    /// OSDI'99 §4.5.2: the timer for giving up on view `v` starts only once
    /// quorum-many replicas asked for `v`, so that a replica cut off from
    /// the others does not race through views alone. A replica that asked
    /// for a higher view has left `v` too and counts: otherwise, with a
    /// silent replica, two correct ones waiting in `v` and one that already
    /// moved to `v+1` would each wait forever (fewer than f+1 ask for
    /// `v+1`, fewer than quorum-many for `v`).
    fn maybe_start_vc_timer(&mut self, now: Time) {
        if self.active || self.vc_deadline != Time::MAX {
            return;
        }
        let asking = self.view_changes.values().filter(|vc| vc.view >= self.view).count();
        if asking >= self.q {
            self.vc_deadline = now + self.vc_timeout;
        }
    }

    /// Requests queued at a primary that leaves its view become pending (a
    /// later primary orders them), and so do those it pre-prepared in the
    /// view it leaves and has not executed: they reached it alone (a
    /// node's clients send to one replica), so if the new view does not
    /// re-propose them, nobody else would ever order them. Called before
    /// the view changes (it reads the view being left).
    fn requeue_for_view_change(&mut self) {
        for c in self.queue.drain(..) {
            self.ordering.remove(&(c.client, c.seq));
            self.pending.insert((c.client, c.seq), c);
        }
        if self.active && self.is_primary() {
            let view = self.view;
            for (_, slot) in self.slots.range(self.executed + 1..) {
                let Some((_, batch, _)) = slot.pre_prepare.as_ref().filter(|_| slot.view == view)
                else {
                    continue;
                };
                for c in batch.iter() {
                    let last = self.last_executed.get(&c.client).copied().unwrap_or(0);
                    if c.seq >= last {
                        self.pending.entry((c.client, c.seq)).or_insert_with(|| c.clone());
                    }
                }
            }
        }
        self.ordering.clear();
    }

    fn on_view_change(&mut self, now: Time, vc: Arc<ViewChange>, out: &mut PbftOutput) {
        let Some(pos) = self.config.position(vc.replica) else {
            self.stats.bad_sender += 1;
            return;
        };
        if self.view_changes.get(&pos).is_some_and(|old| old.view >= vc.view) {
            return;
        }
        if vc.view < self.view || (vc.view == self.view && self.active) {
            // A replica still changing to our view missed the NEW-VIEW.
            if vc.view == self.view
                && self.active
                && let Some(nv) = self.last_new_view.clone()
            {
                self.send_to(pos, Message::NewView(nv), out);
            }
            return;
        }
        if self.check_view_change(&vc).is_none() {
            return;
        }
        self.view_changes.insert(pos, vc);
        // Join: f+1 replicas asked for views above ours.
        let mut higher: Vec<u64> = self
            .view_changes
            .iter()
            .filter(|(p, v)| **p != self.me && (v.view > self.view))
            .map(|(_, v)| v.view)
            .collect();
        if higher.len() > self.f() {
            higher.sort_unstable();
            // The smallest view such that f+1 asked for it or more.
            let target = higher[higher.len() - 1 - self.f()];
            if target > self.view {
                self.start_view_change(now, target, out);
                return;
            }
        }
        if self.maybe_leave_view(now, out) {
            return;
        }
        self.maybe_start_vc_timer(now);
        self.try_new_view(now, out);
    }

    // ----- suspicion ---------------------------------------------------------

    /// The request timer expired and this replica suspects the primary of
    /// its view: it multicasts a signed SUSPECT (again on each later expiry
    /// of the same stall, for peers that lost it) and stays in its view;
    /// it leaves only with f+1 ([`maybe_leave_view`](Self::maybe_leave_view)).
    fn suspect(&mut self, now: Time, out: &mut PbftOutput) {
        debug_assert!(self.active && !self.is_primary());
        let view = self.view;
        let own = match self.suspicions.get(&self.me) {
            Some(s) if s.view == view => *s,
            _ => {
                let sig = self.keys.sign(&Suspect::digest(view, self.id));
                let s = Suspect { view, replica: self.id, sig };
                self.suspicions.insert(self.me, s);
                s
            }
        };
        self.broadcast(Message::Suspect(own), out);
        self.maybe_leave_view(now, out);
    }

    fn on_suspect(&mut self, now: Time, s: Suspect, out: &mut PbftOutput) {
        let Some(pos) = self.config.position(s.replica) else {
            self.stats.bad_sender += 1;
            return;
        };
        if pos == self.me
            || s.view < self.view
            || self.suspicions.get(&pos).is_some_and(|old| old.view >= s.view)
        {
            return;
        }
        if !self.check_signed(pos, &Suspect::digest(s.view, s.replica), &s.sig) {
            return;
        }
        self.suspicions.insert(pos, s);
        self.maybe_leave_view(now, out);
    }

    /// Leaves the active view `v` for `v+1` once f+1 replicas want out of
    /// it: each either suspects `v` (SUSPECT) or asked for a higher view
    /// (VIEW-CHANGE). At least one of them is correct, so f faulty replicas
    /// cannot move a correct one (the paper's join rule, OSDI'99 §4.5.2,
    /// with a suspicion counting as a request to leave); and a correct
    /// replica whose timer expired alone, while the primary serves the
    /// others, stays in `v` with them instead of waiting alone in `v+1`
    /// for a NEW-VIEW nobody sends. It relays the signed SUSPECTs it
    /// counted, so every correct replica that gets them counts f+1 too
    /// and leaves with it. Returns whether it left.
    ///
    /// Safety is the view change's own: a replica that has not sent a
    /// VIEW-CHANGE for `v+1` may keep working in `v` (nothing it does in
    /// `v` is ever contradicted by a NEW-VIEW it did not take part in
    /// beyond what the view-change rule already allows), and a SUSPECT
    /// commits its sender to nothing.
    fn maybe_leave_view(&mut self, now: Time, out: &mut PbftOutput) -> bool {
        if !self.active {
            return false;
        }
        let view = self.view;
        let suspecting = self.suspicions.iter().filter(|(_, s)| s.view == view).map(|(p, _)| *p);
        let asking = self.view_changes.iter().filter(|(_, vc)| vc.view > view).map(|(p, _)| *p);
        let wanting: HashSet<usize> = suspecting.chain(asking).collect();
        if wanting.len() <= self.f() {
            return false;
        }
        let relay: Vec<Suspect> =
            self.suspicions.values().filter(|s| s.view == view).copied().collect();
        for s in relay {
            self.broadcast(Message::Suspect(s), out);
        }
        self.start_view_change(now, view + 1, out);
        true
    }

    /// The new primary, once S decides, sends NEW-VIEW and installs it.
    fn try_new_view(&mut self, now: Time, out: &mut PbftOutput) {
        if self.active || !self.is_primary() {
            return;
        }
        let set: Vec<Arc<ViewChange>> =
            self.view_changes.values().filter(|vc| vc.view == self.view).cloned().collect();
        let Some(decision) = view_change::decide(&set, self.n) else { return };
        let mut nv = NewView {
            view: self.view,
            replica: self.id,
            view_changes: set,
            checkpoint_seq: decision.checkpoint.seq,
            checkpoint_state: decision.checkpoint.state,
            pre_prepares: decision.digests(),
            sig: ed25519_dalek::Signature::from_bytes(&[0; 64]),
        };
        nv.sig = self.keys.sign(&nv.digest());
        let nv = Arc::new(nv);
        self.broadcast(Message::NewView(nv.clone()), out);
        self.install_new_view(now, nv, decision, out);
    }

    fn on_new_view(&mut self, now: Time, nv: Arc<NewView>, out: &mut PbftOutput) {
        if nv.view < self.view || (nv.view == self.view && self.active) {
            return;
        }
        let p = self.primary_position(nv.view);
        if self.config.position(nv.replica) != Some(p) {
            self.stats.bad_sender += 1;
            return;
        }
        if !self.check_signed(p, &nv.digest(), &nv.sig) {
            return;
        }
        let mut senders = 0u64;
        for vc in &nv.view_changes {
            if vc.view != nv.view {
                self.stats.invalid += 1;
                return;
            }
            let Some(pos) = self.check_view_change(vc) else { return };
            if senders & (1 << pos) != 0 {
                self.stats.invalid += 1;
                return;
            }
            senders |= 1 << pos;
        }
        let Some(decision) = view_change::decide(&nv.view_changes, self.n) else {
            self.stats.invalid += 1;
            return;
        };
        if decision.checkpoint.seq != nv.checkpoint_seq
            || decision.checkpoint.state != nv.checkpoint_state
            || decision.digests() != nv.pre_prepares
        {
            self.stats.invalid += 1;
            return;
        }
        self.install_new_view(now, nv, decision, out);
    }

    fn install_new_view(
        &mut self,
        now: Time,
        nv: Arc<NewView>,
        decision: view_change::Decision,
        out: &mut PbftOutput,
    ) {
        let view = nv.view;
        if view > self.view {
            self.requeue_for_view_change();
        }
        self.view = view;
        self.active = true;
        // The NEW-VIEW first: a replica active in a view after a restart
        // (even one whose last writes were torn) holds that view's NEW-VIEW,
        // which peers behind it obtain from it.
        out.writes.push(Write::NewView(nv.clone()));
        out.writes.push(Write::View { view, changing: false });
        self.last_new_view = Some(nv);
        self.my_view_change = None;
        self.view_changes.retain(|_, vc| vc.view > view);
        self.suspicions.retain(|_, s| s.view >= view);
        self.vc_deadline = Time::MAX;
        for slot in self.slots.values_mut() {
            slot.enter_view(view);
        }
        self.make_stable(decision.checkpoint.clone(), out);
        let mut max_seq = self.stable.seq.max(decision.checkpoint.seq);
        let primary = self.is_primary();
        for (seq, digest, batch) in decision.pre_prepares {
            max_seq = max_seq.max(seq);
            if seq <= self.stable.seq {
                continue;
            }
            if let Some(done) = self.executed_batch(seq) {
                assert_eq!(
                    batch_digest(done),
                    digest,
                    "{}: NEW-VIEW {view} reorders executed seq {seq}",
                    self.id
                );
            }
            if seq > self.executed {
                for c in batch.iter() {
                    self.ordering.insert((c.client, c.seq));
                }
            }
            let slot = self.slots.entry(seq).or_default();
            slot.enter_view(view);
            slot.pre_prepare = Some((digest, batch.clone(), None));
            note_q(&mut slot.pre_prepared, seq, view, digest);
            out.writes.push(Write::PrePrepared { seq, view, digest, batch });
            if !primary {
                self.send_prepare(seq, out);
            }
        }
        self.next_seq = max_seq.max(self.executed) + 1;
        // Requests still pending go to the new primary's queue; a backup
        // forwards its own to the new primary, since the client may have
        // sent them to it alone (a replica acting as its clients' proxy, on
        // a node) and the primary they were forwarded to is gone.
        if !primary {
            self.forward_pending(out);
        }
        if primary {
            let mut pending: Vec<Command> = self.pending.drain().map(|(_, c)| c).collect();
            pending.sort_by_key(|c| (c.client, c.seq));
            for c in pending {
                if !self.ordering.contains(&(c.client, c.seq)) {
                    self.ordering.insert((c.client, c.seq));
                    self.queue.push_back(c);
                }
            }
            self.send_batches(out);
        }
        self.request_deadline =
            if self.pending.is_empty() { Time::MAX } else { now + self.vc_timeout };
        if self.executed < self.stable.seq {
            self.fetch_deadline = Time::ZERO;
        }
    }

    /// A backup sends every request it waits for to the primary of its
    /// view (in batches of at most `max_batch`).
    fn forward_pending(&mut self, out: &mut PbftOutput) {
        if self.pending.is_empty() || !self.active || self.is_primary() {
            return;
        }
        let mut pending: Vec<Command> = self.pending.values().cloned().collect();
        pending.sort_by_key(|c| (c.client, c.seq));
        let p = self.primary_position(self.view);
        for chunk in pending.chunks(self.config.max_batch) {
            let requests: crate::message::Requests = Arc::from(chunk.to_vec());
            let d = requests_digest(&requests);
            let auth = self.keys.mac(p, Message::forward_header(&d).as_bytes());
            self.send_to(p, Message::Forward { requests, auth }, out);
        }
    }

    // ----- retransmission ----------------------------------------------------

    fn send_status(&mut self, now: Time, out: &mut PbftOutput) {
        let h = Message::status_header(self.view, self.active, self.executed);
        for j in 0..self.n {
            if j != self.me {
                let auth = self.keys.mac(j, h.as_bytes());
                let msg = Message::Status {
                    view: self.view,
                    active: self.active,
                    executed: self.executed,
                    auth,
                };
                self.send_to(j, msg, out);
            }
        }
        self.status_deadline = now + self.config.status_interval;
    }

    fn on_status(
        &mut self,
        now: Time,
        pos: usize,
        view: u64,
        active: bool,
        executed: u64,
        out: &mut PbftOutput,
    ) {
        let stalled = self.peer_executed[pos] == executed;
        self.peer_executed[pos] = executed;
        self.peer_status[pos] = Some(PeerStatus { view, active, executed, at: now });
        self.prepare_refused_upto(out);
        if view < self.view || (view == self.view && !active) {
            if self.active {
                if let Some(nv) = self.last_new_view.clone() {
                    self.send_to(pos, Message::NewView(nv), out);
                }
            } else if let Some(vc) = self.my_view_change.clone() {
                self.send_to(pos, Message::ViewChange(vc), out);
                // A peer active in the view this replica left may lack the
                // suspicions it left on.
                if active && view + 1 == self.view {
                    let relay: Vec<Suspect> =
                        self.suspicions.values().filter(|s| s.view == view).copied().collect();
                    for s in relay {
                        self.send_to(pos, Message::Suspect(s), out);
                    }
                }
            }
        }
        // A stalled peer below the stable checkpoint gets its proof in any
        // view: checkpoints do not depend on views, so a replica left alone
        // in a higher view (its VIEW-CHANGE unsupported) still catches up by
        // state transfer.
        if stalled && executed < self.stable.seq {
            for cp in self.stable.proof.iter() {
                self.send_to(pos, Message::Checkpoint(cp.clone()), out);
            }
        }
        if view != self.view
            || !active
            || !self.active
            || !stalled
            || executed >= self.executed.max(self.last_pre_prepared())
        {
            return;
        }
        let from = executed.max(self.stable.seq) + 1;
        let upto = (from + self.config.max_retransmit_seqs).min(self.high_watermark());
        let (v, id) = (self.view, self.id);
        let mut msgs = Vec::new();
        for (&seq, slot) in self.slots.range(from..=upto) {
            if slot.view != v {
                continue;
            }
            let Some((digest, batch, auth)) = &slot.pre_prepare else { continue };
            if let Some(auth) = auth.as_ref().filter(|_| pos != self.primary_position(v)) {
                let pp = PrePrepare {
                    view: v,
                    seq,
                    digest: *digest,
                    batch: batch.clone(),
                    auth: auth.clone(),
                };
                msgs.push(Message::PrePrepare(pp));
            }
            if slot.sent_prepare {
                let auth =
                    self.keys.auth_for(pos, Vote::header(false, v, seq, digest, id).as_bytes());
                msgs.push(Message::Prepare(Vote {
                    view: v,
                    seq,
                    digest: *digest,
                    replica: id,
                    auth,
                }));
            }
            if slot.sent_commit {
                let auth =
                    self.keys.auth_for(pos, Vote::header(true, v, seq, digest, id).as_bytes());
                msgs.push(Message::Commit(Vote {
                    view: v,
                    seq,
                    digest: *digest,
                    replica: id,
                    auth,
                }));
            }
        }
        for m in msgs {
            self.send_to(pos, m, out);
        }
    }

    fn last_pre_prepared(&self) -> u64 {
        self.slots
            .iter()
            .rev()
            .find(|(_, s)| s.view == self.view && s.pre_prepare.is_some())
            .map_or(0, |(&seq, _)| seq)
    }

    // ----- reads -------------------------------------------------------------

    /// Highest sequence number executed, stable, or prepared here: this
    /// replica's claim in a READ-INDEX ([`read_target`] combines them). A
    /// request that committed at s was prepared at `q − f` correct
    /// replicas, and each of them keeps claiming at least s: it executed
    /// s, or a stable checkpoint covers s, or it still holds the prepared
    /// certificate (P survives view changes and restarts).
    ///
    /// Left out: certificates prepared in a view below that of the NEW-VIEW
    /// this replica entered its view with, above every sequence number that
    /// NEW-VIEW covers (its checkpoint and O). Such a request did not
    /// commit: had it committed at s in an earlier view, V's `q`
    /// VIEW-CHANGEs would include a correct replica that prepared it or
    /// whose proven stable checkpoint covers s, and NEW-VIEW's checkpoint is
    /// the highest proven one in V, so O or the checkpoint would reach s.
    /// It never executes at s; a read waiting for it would wait until new
    /// writes filled the gap. Replicas between views, or without the
    /// NEW-VIEW of their view (restarted), leave nothing out.
    fn read_seq(&self) -> u64 {
        let (floor_view, covered) = match &self.last_new_view {
            Some(nv) if self.active && nv.view == self.view => {
                (nv.view, nv.pre_prepares.last().map_or(nv.checkpoint_seq, |&(seq, _)| seq))
            }
            _ => (0, u64::MAX),
        };
        let prepared = self
            .slots
            .iter()
            .rev()
            .find(|&(&seq, s)| {
                s.prepared.as_ref().is_some_and(|p| p.view >= floor_view || seq <= covered)
            })
            .map_or(0, |(&seq, _)| seq);
        prepared.max(self.executed).max(self.stable.seq)
    }

    fn release_reads(&mut self, out: &mut PbftOutput) {
        let executed = self.executed;
        let applied = self.applied_positions;
        self.reads.retain(|r| {
            if r.resolved && r.max_seq <= executed {
                out.reads.push(ReadState { id: r.id, index: applied });
                false
            } else {
                true
            }
        });
    }

    fn on_read_index(&mut self, pos: usize, nonce: u64, seq: u64, out: &mut PbftOutput) {
        let q = self.q;
        let n = self.n;
        let Some(r) = self.reads.iter_mut().find(|r| r.nonce == nonce) else { return };
        if r.voters & (1 << pos) != 0 {
            return;
        }
        r.voters |= 1 << pos;
        r.claims.push(seq);
        if let Some(target) = read_target(&mut r.claims, n, q) {
            r.max_seq = target;
            r.resolved = true;
            self.release_reads(out);
        }
    }

    // ----- timers ------------------------------------------------------------

    fn fire_timers(&mut self, now: Time, out: &mut PbftOutput) {
        if now >= self.status_deadline {
            self.send_status(now, out);
        }
        if now >= self.fetch_deadline {
            self.fetch(now, out);
        }
        if !self.active && now >= self.vc_deadline {
            let next = self.view + 1;
            self.start_view_change(now, next, out);
        } else if self.active && now >= self.request_deadline {
            if !self.waiting_for_work() || self.is_primary() {
                self.request_deadline = Time::MAX;
            } else if self.may_suspect(now) {
                // It suspects the primary and waits in its view for f+1
                // (its own included), sending its requests to the
                // primary again meanwhile (the one it forwarded may have
                // been lost: then the primary was never at fault).
                self.request_deadline = now + self.vc_timeout;
                self.forward_pending(out);
                self.suspect(now, out);
            } else {
                // Not the primary's fault as far as this replica can tell:
                // it lags (its peers push the NEW-VIEW or the missing
                // requests on its STATUS, sent now) or cannot hear enough
                // of them to know its view. A VIEW-CHANGE now would be
                // joined by nobody, and views never go back: it would wait
                // alone in the next view. It waits another period instead,
                // and sends its requests to the primary again.
                self.suspicions_deferred += 1;
                self.request_deadline = now + self.vc_timeout;
                self.forward_pending(out);
                self.send_status(now, out);
            }
        }
        while let Some(r) = self.reads.front() {
            if r.deadline > now {
                break;
            }
            let id = r.id;
            self.reads.pop_front();
            out.events.push(Event::ReadFailed { id });
        }
    }

    /// Whether the request timer, expired, may start a view change.
    ///
    /// `Current`: yes. `Unknown`: no (fewer than 2f peers heard; every
    /// correct peer is eventually heard, so this does not stall a correct
    /// majority). `Behind`: once only per stall. The timer expires only
    /// after a whole period without executing anything, and a correct peer
    /// ahead may be unable to help (it cannot retransmit q COMMITs when the
    /// third correct replica has left the view: seed 387 of the
    /// `lying-new-view` sweep, where f lying STATUS messages plus that peer
    /// held a correct replica back for good). So if the next expiry finds
    /// the replica where the first left it (same view, same executed), it
    /// suspects.
    fn may_suspect(&mut self, now: Time) -> bool {
        match self.view_standing(now) {
            Standing::Current => true,
            Standing::Unknown => false,
            Standing::Behind => {
                let here = (self.view, self.executed);
                if self.deferred_behind == Some(here) {
                    true
                } else {
                    self.deferred_behind = Some(here);
                    false
                }
            }
        }
    }

    /// How long a peer's STATUS counts in [`view_standing`](Self::view_standing).
    fn status_freshness(&self) -> std::time::Duration {
        self.config.view_change_timeout.max(self.config.status_interval * 4)
    }

    /// Whether this replica may suspect its primary: what its peers' recent
    /// STATUS messages say about its view (TOCS'02 §5, Castro's thesis: a
    /// replica learns the current view from its peers before it acts on a
    /// timeout). f+1 peers active in a higher view, or in this view with
    /// more executed, include a correct one, so `f` faulty peers cannot make
    /// a correct replica hold back; nor can they push it anywhere: it moves
    /// only on a NEW-VIEW it verifies itself, or f+1 VIEW-CHANGEs.
    fn view_standing(&self, now: Time) -> Standing {
        let fresh = self.status_freshness();
        let (mut heard, mut ahead) = (0, 0);
        for s in self.peer_status.iter().flatten() {
            if now.saturating_since(s.at) > fresh {
                continue;
            }
            heard += 1;
            let later_view = s.view > self.view;
            let more_executed = s.view == self.view && s.executed > self.executed;
            if s.active && (later_view || more_executed) {
                ahead += 1;
            }
        }
        if ahead > self.f() {
            Standing::Behind
        } else if heard + 1 < self.q {
            Standing::Unknown
        } else {
            Standing::Current
        }
    }

    fn mac_sender(&mut self, from: NodeId) -> Option<usize> {
        let pos = self.config.position(from).filter(|&p| p != self.me);
        if pos.is_none() {
            self.stats.bad_sender += 1;
        }
        pos
    }

    /// Re-arms the request timer after progress (it must see `now`).
    fn rearm(&mut self, now: Time) {
        if self.request_deadline == Time::MAX && self.active && self.waiting_for_work() {
            self.request_deadline = now + self.vc_timeout;
        }
    }

    /// Whether this replica waits for the primary: a client request it
    /// knows is not executed, or a batch of this view is pre-prepared here
    /// above the last one executed. The second matters when only reads are
    /// outstanding: a faulty primary that skips sequence numbers (batches
    /// committed above a gap it never fills) must still lose its view.
    fn waiting_for_work(&self) -> bool {
        !self.pending.is_empty()
            || self
                .slots
                .range(self.executed + 1..)
                .any(|(_, s)| s.view == self.view && s.pre_prepare.is_some())
    }
}

impl Protocol for PbftNode {
    type Config = Config;
    type Message = Message;
    type Write = Write;
    type Durable = Durable;

    /// Rebuilds replica `id` from `durable`: its view, its pre-prepared and
    /// prepared records, its stable checkpoint, and the executed history,
    /// which is applied again (emitted from position 1) on the first call.
    ///
    /// # Panics
    /// If `config` is invalid or `id` is not one of its replicas.
    fn recover(id: NodeId, config: &Config, durable: &Durable, _seed: u64, now: Time) -> Self {
        if let Err(e) = config.validate() {
            panic!("invalid PBFT configuration: {e}");
        }
        let me = config.position(id).unwrap_or_else(|| panic!("{id} is not a replica"));
        let n = config.replicas.len();
        let mut node = PbftNode {
            id,
            me,
            n,
            q: quorum::byzantine_quorum(n),
            keys: match &config.auth_meter {
                None => config.keyring(me),
                Some(m) => {
                    std::sync::Arc::new(Keyring::clone(&config.keyring(me)).with_meter(m.clone()))
                }
            },
            view: durable.view,
            active: !durable.changing,
            slots: BTreeMap::new(),
            stable: durable.stable.clone(),
            checkpoints: BTreeMap::new(),
            own_checkpoints: BTreeMap::new(),
            executed: 0,
            state: Digest::ZERO,
            history: Vec::with_capacity(durable.executed.len()),
            history_digests: Vec::with_capacity(durable.executed.len()),
            history_base: 0,
            snapshot: None,
            taking: BTreeMap::new(),
            own_snapshots: BTreeMap::new(),
            snapshot_proofs: BTreeMap::new(),
            transfer: None,
            installed_snapshots: 0,
            emitted: 0,
            agreed_time: Time::ZERO,
            clock: now,
            applied_positions: 0,
            last_executed: HashMap::new(),
            next_seq: 1,
            queue: VecDeque::new(),
            ordering: HashSet::new(),
            pending: HashMap::new(),
            request_deadline: Time::MAX,
            vc_timeout: config.view_change_timeout,
            vc_deadline: Time::MAX,
            view_changes: BTreeMap::new(),
            my_view_change: None,
            suspicions: BTreeMap::new(),
            last_new_view: durable.new_view.clone().filter(|nv| nv.view == durable.view),
            announce_view_change: false,
            status_deadline: now,
            peer_executed: vec![u64::MAX; n],
            peer_status: vec![None; n],
            fetch_deadline: if durable.executed_base() + durable.executed.len() as u64
                >= durable.stable.seq
            {
                Time::MAX
            } else {
                now
            },
            fetch_peer: me,
            fetch_asked: None,
            reads: VecDeque::new(),
            next_nonce: 1,
            stats: AuthStats::default(),
            verified: HashSet::new(),
            suspicions_deferred: 0,
            deferred_behind: None,
            requests: RequestCheck::new(config.client_keys())
                .with_shared(config.shared_checks.clone())
                .with_meter(config.auth_meter.clone()),
            announced: None,
            config: config.clone(),
        };
        if let Some(s) = &durable.snapshot {
            // The host loads this snapshot before anything is emitted.
            assert_eq!(
                s.proof.state,
                s.manifest.state(),
                "the durable snapshot's proof is its own"
            );
            node.start_from(s.clone());
        }
        for batch in &durable.executed {
            let seq = node.executed + 1;
            let digest = batch_digest(batch);
            node.state = chain(&node.state, seq, &digest);
            node.executed = seq;
            node.history.push(batch.clone());
            node.history_digests.push(digest);
            for c in batch.iter() {
                let last = node.last_executed.entry(c.client).or_insert(0);
                *last = (*last).max(c.seq);
            }
            // (At a snapshot sequence number the checkpoint signs the
            // snapshot's digest, which is not known again until a new one
            // is taken there: not recorded.)
            if seq.is_multiple_of(config.checkpoint_interval)
                && !seq.is_multiple_of(config.snapshot_interval)
                && seq >= node.stable.seq
            {
                node.own_checkpoints.insert(seq, node.state);
            }
        }
        if let Some(own) = node.own_checkpoints.get(&node.stable.seq) {
            assert_eq!(
                *own, node.stable.state,
                "durable history disagrees with the stable checkpoint"
            );
        }
        for (&seq, ds) in durable.slots.range(node.stable.seq + 1..) {
            let mut slot = Slot { view: node.view, ..Slot::default() };
            slot.prepared = ds.prepared.clone();
            slot.pre_prepared = ds.pre_prepared.clone();
            if let Some((v, d, b)) = &ds.latest
                && *v == node.view
                && node.active
            {
                slot.pre_prepare = Some((*d, b.clone(), None));
                slot.sent_prepare = node.primary_position(*v) != me;
                if slot.sent_prepare {
                    slot.prepares.push((*d, 1 << me));
                }
                if let Some(p) = &ds.prepared
                    && p.view == *v
                {
                    slot.sent_commit = true;
                    slot.commits.push((*d, 1 << me));
                }
                node.next_seq = node.next_seq.max(seq + 1);
                for c in b.iter().filter(|_| seq > node.executed) {
                    node.ordering.insert((c.client, c.seq));
                }
            }
            node.slots.insert(seq, slot);
        }
        node.next_seq = node.next_seq.max(node.stable.seq.max(node.executed) + 1);
        if !node.active {
            let vc = Arc::new(node.build_view_change(node.view));
            node.view_changes.insert(me, vc.clone());
            node.my_view_change = Some(vc);
            node.announce_view_change = true;
        }
        node
    }

    fn apply_write(durable: &mut Durable, write: &Write) {
        durable.apply(write)
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn tick(&mut self, now: Time, out: &mut PbftOutput) {
        self.clock = self.clock.max(now);
        self.flush(out);
        self.fire_timers(now, out);
        self.rearm(now);
        self.finish(out);
    }

    fn next_deadline(&self) -> Time {
        if self.emitted < self.executed || self.announce_view_change {
            return Time::ZERO;
        }
        let vc = if self.active { self.request_deadline } else { self.vc_deadline };
        let read = self.reads.front().map_or(Time::MAX, |r| r.deadline);
        self.status_deadline.min(self.fetch_deadline).min(vc).min(read)
    }

    fn step(&mut self, now: Time, from: NodeId, msg: Message, out: &mut PbftOutput) {
        self.clock = self.clock.max(now);
        self.flush(out);
        if from == self.id {
            return;
        }
        match msg {
            Message::PrePrepare(pp) => self.on_pre_prepare(pp, out),
            Message::Prepare(v) => self.on_prepare(from, v, out),
            Message::Commit(v) => self.on_commit(from, v, out),
            Message::Checkpoint(cp) => self.on_checkpoint(cp, out),
            Message::ViewChange(vc) => self.on_view_change(now, vc, out),
            Message::NewView(nv) => self.on_new_view(now, nv, out),
            Message::Suspect(sus) => self.on_suspect(now, sus, out),
            Message::Status { view, active, executed, auth } => {
                let Some(pos) = self.mac_sender(from) else { return };
                let h = Message::status_header(view, active, executed);
                if !self.keys.check_mac(pos, h.as_bytes(), &auth) {
                    self.stats.bad_mac += 1;
                } else {
                    self.on_status(now, pos, view, active, executed, out);
                }
            }
            Message::Forward { requests, auth } => {
                let Some(pos) = self.mac_sender(from) else { return };
                let d = requests_digest(&requests);
                if !self.keys.check_mac(pos, Message::forward_header(&d).as_bytes(), &auth) {
                    self.stats.bad_mac += 1;
                } else if !self.requests.check_all(&requests) {
                    self.stats.bad_signature += 1;
                } else if self.active && self.is_primary() {
                    for c in requests.iter().take(self.config.max_batch) {
                        let _ = self.accept_request(now, c.clone(), false, out);
                    }
                    self.send_batches(out);
                }
            }
            Message::Fetch { from: first, upto, auth } => {
                let Some(pos) = self.mac_sender(from) else { return };
                self.on_fetch(pos, first, upto, &auth, out);
            }
            Message::State { first, batches, manifest } => {
                if self.mac_sender(from).is_some() {
                    self.on_state(first, &batches, manifest.as_deref(), out);
                }
            }
            Message::SnapshotOffer(offer) => {
                let Some(pos) = self.mac_sender(from) else { return };
                self.on_snapshot_offer(now, pos, offer, out);
            }
            Message::SnapshotFetch { seq, offset, auth } => {
                let Some(pos) = self.mac_sender(from) else { return };
                self.on_snapshot_fetch(pos, seq, offset, &auth, out);
            }
            Message::SnapshotChunk { seq, offset, data, auth } => {
                let Some(pos) = self.mac_sender(from) else { return };
                let chunk = snapshots::Chunk { seq, offset, data, auth };
                self.on_snapshot_chunk(now, pos, chunk, out);
            }
            Message::ReadQuery { nonce, auth } => {
                let Some(pos) = self.mac_sender(from) else { return };
                if !self.keys.check_mac(
                    pos,
                    Message::read_header(false, nonce, 0).as_bytes(),
                    &auth,
                ) {
                    self.stats.bad_mac += 1;
                    return;
                }
                let seq = self.read_seq();
                let auth = self.keys.mac(pos, Message::read_header(true, nonce, seq).as_bytes());
                self.send_to(pos, Message::ReadIndex { nonce, seq, auth }, out);
            }
            Message::ReadIndex { nonce, seq, auth } => {
                let Some(pos) = self.mac_sender(from) else { return };
                if !self.keys.check_mac(
                    pos,
                    Message::read_header(true, nonce, seq).as_bytes(),
                    &auth,
                ) {
                    self.stats.bad_mac += 1;
                    return;
                }
                self.on_read_index(pos, nonce, seq, out);
            }
        }
        self.rearm(now);
        self.finish(out);
    }

    fn propose(
        &mut self,
        now: Time,
        commands: Vec<Command>,
        out: &mut PbftOutput,
    ) -> Result<(), ProposeError> {
        self.clock = self.clock.max(now);
        self.flush(out);
        if commands.is_empty() {
            return Err(ProposeError::Rejected("empty batch"));
        }
        let mut result = Ok(());
        for c in commands {
            if !self.requests.check(&c) {
                self.stats.bad_signature += 1;
                result = Err(ProposeError::Rejected("bad client signature"));
                continue;
            }
            if let Err(e) = self.accept_request(now, c, true, out) {
                result = Err(e);
            }
        }
        self.send_batches(out);
        self.rearm(now);
        self.finish(out);
        result
    }

    fn read(&mut self, now: Time, id: ReadId, out: &mut PbftOutput) -> Result<(), ProposeError> {
        self.clock = self.clock.max(now);
        self.flush(out);
        if self.reads.len() >= self.config.max_pending_reads {
            return Err(ProposeError::Busy("too many pending reads"));
        }
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        let mut claims = Vec::with_capacity(self.n);
        claims.push(self.read_seq());
        let target = read_target(&mut claims, self.n, self.q);
        self.reads.push_back(PendingRead {
            id,
            nonce,
            voters: 1 << self.me,
            max_seq: target.unwrap_or(u64::MAX),
            claims,
            resolved: target.is_some(),
            deadline: now + self.config.read_timeout,
        });
        for j in 0..self.n {
            if j != self.me {
                let auth = self.keys.mac(j, Message::read_header(false, nonce, 0).as_bytes());
                self.send_to(j, Message::ReadQuery { nonce, auth }, out);
            }
        }
        self.release_reads(out);
        self.finish(out);
        Ok(())
    }

    const SNAPSHOT_DIGESTS: bool = true;

    /// A host must report PBFT snapshots with their digest
    /// ([`Protocol::snapshot_taken_with_digest`]); without one the
    /// snapshot cannot be signed into a checkpoint and is ignored.
    fn snapshot_taken(&mut self, now: Time, index: u64, size_bytes: u64, out: &mut PbftOutput) {
        let _ = (now, index, size_bytes, out);
        debug_assert!(false, "PBFT hosts report snapshots with their digest");
    }

    fn snapshot_taken_with_digest(
        &mut self,
        now: Time,
        index: u64,
        size_bytes: u64,
        sha256: [u8; 32],
        out: &mut PbftOutput,
    ) {
        self.clock = self.clock.max(now);
        self.flush(out);
        self.on_snapshot_taken(index, size_bytes, sha256, out);
        self.rearm(now);
        self.finish(out);
    }

    fn snapshot_chunk(
        &mut self,
        now: Time,
        to: NodeId,
        index: u64,
        offset: u64,
        data: bytes::Bytes,
        out: &mut PbftOutput,
    ) {
        self.clock = self.clock.max(now);
        self.flush(out);
        self.send_chunk(to, index, offset, data, out);
        self.rearm(now);
        self.finish(out);
    }

    fn snapshot(&self) -> Option<synod_core::SnapshotMeta> {
        self.snapshot.as_ref().map(|s| synod_core::SnapshotMeta {
            index: s.manifest.position,
            epoch: s.manifest.seq,
            size_bytes: s.manifest.size_bytes,
        })
    }

    fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.current_role(),
            epoch: self.view,
            leader: self.active.then(|| self.primary()),
            commit_index: self.applied_positions,
            applied_index: self.applied_positions,
            last_index: self.applied_positions,
        }
    }

    fn client_routing(config: &Config) -> ClientRouting {
        ClientRouting::All { replies: quorum::byzantine_reply_quorum(config.replicas.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> (Config, Vec<PbftNode>) {
        let config = Config::new((1..=4).map(NodeId).collect());
        let nodes = (1..=4)
            .map(|i| PbftNode::recover(NodeId(i), &config, &Durable::default(), 0, Time::ZERO))
            .collect();
        (config, nodes)
    }

    /// A STATUS from replica position `from` to position `to`, MAC'd with
    /// `from`'s keys.
    fn status(
        config: &Config,
        from: usize,
        to: usize,
        view: u64,
        active: bool,
        executed: u64,
    ) -> Message {
        let auth =
            config.keyring(from).mac(to, Message::status_header(view, active, executed).as_bytes());
        Message::Status { view, active, executed, auth }
    }

    /// Every other replica tells `nodes[to]` it is active in `view` with
    /// `executed` done.
    fn hear_peers(config: &Config, nodes: &mut [PbftNode], to: usize, now: Time, view: u64) {
        for from in (0..nodes.len()).filter(|&j| j != to) {
            let executed = nodes[to].executed;
            let m = status(config, from, to, view, true, executed);
            nodes[to].step(now, config.replicas[from], m, &mut PbftOutput::new());
        }
    }

    #[test]
    fn the_view_0_primary_announces_itself_on_its_first_call() {
        let (_, mut nodes) = cluster();
        let mut out = PbftOutput::new();
        nodes[0].tick(Time::ZERO, &mut out);
        let leader = Some(NodeId(1));
        assert_eq!(
            out.events,
            [
                Event::RoleChanged { role: Role::Leader, epoch: 0 },
                Event::LeaderChanged { leader, epoch: 0 }
            ]
        );
        let mut out = PbftOutput::new();
        nodes[1].tick(Time::ZERO, &mut out);
        assert_eq!(
            out.events,
            [
                Event::RoleChanged { role: Role::Follower, epoch: 0 },
                Event::LeaderChanged { leader, epoch: 0 }
            ]
        );
        let mut out = PbftOutput::new();
        nodes[0].tick(Time::ZERO, &mut out);
        assert!(out.events.is_empty(), "announced once: {:?}", out.events);
    }

    #[test]
    fn a_read_waits_for_the_highest_claim_of_a_quorum_and_lower_with_more_answers() {
        // n = 4, f = 1, q = 3.
        assert_eq!(read_target(&mut [5, 9], 4, 3), None);
        // Three answers: the maximum (only one correct preparer is sure to be in).
        assert_eq!(read_target(&mut [5, 9, 7], 4, 3), Some(9));
        // A Byzantine replica's huge claim is the maximum of three...
        assert_eq!(read_target(&mut [5, 1_000_000, 7], 4, 3), Some(1_000_000));
        // ...but with every replica answering, the second highest is enough:
        // two correct preparers of a committed write both claim its number.
        assert_eq!(read_target(&mut [5, 1_000_000, 7, 6], 4, 3), Some(7));
        // n = 7, f = 2, q = 5: the 1st, 2nd and 3rd highest of 5, 6 and 7.
        assert_eq!(read_target(&mut [1, 2, 3, 4, 9], 7, 5), Some(9));
        assert_eq!(read_target(&mut [1, 2, 3, 4, 9, 8], 7, 5), Some(8));
        assert_eq!(read_target(&mut [1, 2, 3, 4, 9, 8, 7], 7, 5), Some(7));
        // A single replica reads its own state.
        assert_eq!(read_target(&mut [4], 1, 1), Some(4));
    }

    /// Regression (synod chain sim --consensus pbft --attack partition,
    /// seed 1): a replica cut off for 1,200 s came back ~12,000 sequence
    /// numbers behind; CHECKPOINTs that far beyond its window were dropped,
    /// so it never assembled a stable proof and never caught up.
    #[test]
    fn a_replica_far_behind_adopts_a_quorums_checkpoint_and_fetches() {
        let (config, mut nodes) = cluster();
        let seq = 50 * config.log_window;
        let state = Digest::of(b"state far ahead");
        let cp = |signer: usize, seq: u64| {
            let replica = NodeId(signer as u64 + 1);
            let sig = config.keyring(signer).sign(&Checkpoint::digest(seq, &state, replica));
            Message::Checkpoint(Checkpoint { seq, state, replica, sig })
        };
        let mut out = PbftOutput::new();
        // Replica 2 first claims an older far checkpoint, then a newer one:
        // only the newer is kept, and an older one after it is refused.
        nodes[0].step(Time::ZERO, NodeId(3), cp(2, seq - config.checkpoint_interval), &mut out);
        for signer in 1..4 {
            nodes[0].step(Time::ZERO, NodeId(signer as u64 + 1), cp(signer, seq), &mut out);
        }
        nodes[0].step(Time::ZERO, NodeId(3), cp(2, seq - config.checkpoint_interval), &mut out);
        assert_eq!(nodes[0].stable.seq, seq, "{}", nodes[0].summary());
        assert!(nodes[0].checkpoints.is_empty(), "{:?}", nodes[0].checkpoints.keys());
        out.clear();
        nodes[0].tick(Time::ZERO + config.status_interval, &mut out);
        assert!(
            out.messages
                .iter()
                .any(|(_, m)| matches!(m, Message::Fetch { from: 1, upto, .. } if *upto == seq)),
            "no FETCH: {:?}",
            out.messages
        );
    }

    /// Regression (attack `random`, seed 78): a faulty primary that
    /// pre-prepares sequence number 2 and never 1, while clients only read,
    /// left backups with no pending request and so no timer: stuck for good.
    /// Now the timer runs and the backup suspects the primary.
    #[test]
    fn a_backup_suspects_a_primary_that_skips_a_sequence_number() {
        let (config, mut nodes) = cluster();
        let request = crate::request::sign_command(
            &config.client_key(1),
            Command::new(ClientId(1), 1, &b"put"[..]),
        );
        let batch = Batch::new(Time::ZERO, vec![request]);
        let digest = batch_digest(&batch);
        let auth = config.keyring(0).auth(PrePrepare::header(0, 2, &digest).as_bytes());
        let pp = PrePrepare { view: 0, seq: 2, digest, batch, auth };
        let mut out = PbftOutput::new();
        nodes[1].step(Time::ZERO, NodeId(1), Message::PrePrepare(pp), &mut out);
        assert!(out.messages.iter().any(|(_, m)| matches!(m, Message::Prepare(_))));
        let later = Time::ZERO + config.view_change_timeout;
        hear_peers(&config, &mut nodes, 1, later, 0);
        out.clear();
        nodes[1].tick(later, &mut out);
        assert!(suspects(&out, 0), "no SUSPECT after the timeout: {:?}", out.messages);
    }

    /// Delivers every message among the replicas in `up` (others' are
    /// dropped) and ticks them every 10 ms until `done` or `limit`.
    fn run_until(
        nodes: &mut [PbftNode],
        up: &[usize],
        mut now: Time,
        limit: Time,
        done: impl Fn(&[PbftNode]) -> bool,
    ) -> Time {
        let mut queue: std::collections::VecDeque<(NodeId, NodeId, Message)> =
            std::collections::VecDeque::new();
        while now < limit && !done(nodes) {
            for &i in up {
                let mut out = PbftOutput::new();
                nodes[i].tick(now, &mut out);
                let from = nodes[i].id;
                queue.extend(out.messages.drain(..).map(|(to, m)| (from, to, m)));
            }
            while let Some((from, to, m)) = queue.pop_front() {
                let Some(j) = up.iter().copied().find(|&j| nodes[j].id == to) else { continue };
                let mut out = PbftOutput::new();
                nodes[j].step(now, from, m, &mut out);
                queue.extend(out.messages.drain(..).map(|(t, m)| (to, t, m)));
            }
            now = now + std::time::Duration::from_millis(10);
        }
        now
    }

    /// §4.5.2 (TOCS'02): a replica that asked for view v+1 alone stays there
    /// (views never go back, and its timer waits for 2f+1 askers) while the
    /// other three make progress in v; once the primary of v fails, the two
    /// correct replicas left in v time out, their VIEW-CHANGEs and the lone
    /// one's make 2f+1 for v+1, and the cluster is live again in v+1.
    #[test]
    fn a_replica_alone_in_a_higher_view_rejoins_when_the_others_change_view() {
        let (config, mut nodes) = cluster();
        let all = [0, 1, 2, 3];
        let mut out = PbftOutput::new();
        nodes[3].tick(Time::ZERO, &mut out);
        nodes[3].start_view_change(Time::ZERO, 1, &mut out);
        let propose = |nodes: &mut [PbftNode], seq: u64, now: Time| {
            let c = crate::request::sign_command(
                &config.client_key(1),
                Command::new(ClientId(1), seq, &b"put"[..]),
            );
            for node in nodes.iter_mut().take(3) {
                let mut out = PbftOutput::new();
                node.propose(now, vec![c.clone()], &mut out).expect("well signed");
            }
        };
        // The other three still make progress in view 0 without it.
        propose(&mut nodes, 1, Time::ZERO);
        let limit = Time::ZERO + std::time::Duration::from_secs(1);
        let now = run_until(&mut nodes, &all, Time::ZERO, limit, |n| {
            n[..3].iter().all(|r| r.executed >= 1)
        });
        assert!(now < limit, "no progress in view 0: {}", nodes[0].summary());
        assert!(nodes[..3].iter().all(|r| r.view == 0 && r.active));
        assert_eq!((nodes[3].view, nodes[3].active), (1, false), "{}", nodes[3].summary());
        // The primary of view 0 crashes with a request pending.
        propose(&mut nodes, 2, now);
        let limit = now + std::time::Duration::from_secs(10);
        let end = run_until(&mut nodes, &[1, 2, 3], now, limit, |n| {
            n[1..].iter().all(|r| r.view >= 1 && r.active && r.executed >= 2)
        });
        assert!(
            end < limit,
            "not live after the primary failed: {:?}",
            nodes[1..].iter().map(PbftNode::summary).collect::<Vec<_>>()
        );
    }

    /// The primary (position 0) orders one request at its clock `at`;
    /// returns its PRE-PREPARE.
    fn pre_prepare_at(config: &Config, nodes: &mut [PbftNode], at: Time) -> PrePrepare {
        let c = crate::request::sign_command(
            &config.client_key(1),
            Command::new(ClientId(1), 1, &b"put"[..]),
        );
        let mut out = PbftOutput::new();
        nodes[0].propose(at, vec![c], &mut out).expect("well signed");
        out.messages
            .iter()
            .find_map(|(_, m)| match m {
                Message::PrePrepare(pp) => Some(pp.clone()),
                _ => None,
            })
            .expect("the primary pre-prepares at once")
    }

    fn prepares(out: &PbftOutput) -> Vec<Vote> {
        out.messages
            .iter()
            .filter_map(|(_, m)| match m {
                Message::Prepare(v) => Some(v.clone()),
                _ => None,
            })
            .collect()
    }

    /// TOCS §5.4: a backup PREPAREs a batch whose timestamp is within δ of
    /// its own clock, either way, and the timestamp is bound by the digest.
    #[test]
    fn a_backup_prepares_a_timestamp_within_the_clock_bound() {
        let (config, mut nodes) = cluster();
        let delta = config.max_clock_skew;
        let backup_clock = Time::from_millis(10_000);
        for primary_clock in [backup_clock + delta, backup_clock - delta, backup_clock] {
            let (_, mut nodes) = cluster();
            let pp = pre_prepare_at(&config, &mut nodes, primary_clock);
            assert_eq!(pp.batch.timestamp, primary_clock);
            assert_eq!(pp.digest, batch_digest(&pp.batch));
            let mut out = PbftOutput::new();
            nodes[1].step(backup_clock, NodeId(1), Message::PrePrepare(pp), &mut out);
            assert_eq!(prepares(&out).len(), 3, "prepared at {primary_clock}");
            assert_eq!(nodes[1].auth_stats().bad_timestamp, 0);
        }
        // A primary that changes the timestamp after signing is caught by
        // the digest.
        let mut pp = pre_prepare_at(&config, &mut nodes, backup_clock);
        pp.batch.timestamp = backup_clock + std::time::Duration::from_millis(1);
        let mut out = PbftOutput::new();
        nodes[1].step(backup_clock, NodeId(1), Message::PrePrepare(pp), &mut out);
        assert!(prepares(&out).is_empty());
        assert_eq!(nodes[1].auth_stats().bad_digest, 1);
    }

    /// A primary whose timestamp is further than δ from a backup's clock
    /// (in the future or in the past) gets no PREPARE from it, and the
    /// batch does not enter the backup's Q or its durable records.
    #[test]
    fn a_backup_refuses_a_timestamp_beyond_the_clock_bound() {
        let (config, _) = cluster();
        let delta = config.max_clock_skew;
        let backup_clock = Time::from_millis(10_000);
        let one = std::time::Duration::from_micros(1);
        for primary_clock in [backup_clock + delta + one, backup_clock - delta - one] {
            let (_, mut nodes) = cluster();
            let pp = pre_prepare_at(&config, &mut nodes, primary_clock);
            let mut out = PbftOutput::new();
            nodes[1].step(backup_clock, NodeId(1), Message::PrePrepare(pp), &mut out);
            assert!(prepares(&out).is_empty(), "prepared a timestamp {primary_clock} off");
            assert!(out.writes.is_empty(), "{:?}", out.writes);
            assert_eq!(nodes[1].auth_stats().bad_timestamp, 1);
            assert!(nodes[1].build_view_change(1).pre_prepared.is_empty(), "not in Q");
        }
    }

    /// A refusal is reported to the host (which logs and counts it) as
    /// an event naming the view, sequence number and both clocks, once:
    /// the same PRE-PREPARE again (a faulty primary repeating it, or a
    /// retransmission) reports nothing more. One in bounds reports nothing.
    #[test]
    fn a_refused_timestamp_is_reported_once_as_an_event() {
        let refusals = |out: &PbftOutput| -> Vec<Event> {
            let refused = |e: &&Event| matches!(e, Event::TimestampRefused { .. });
            out.events.iter().filter(refused).cloned().collect()
        };
        let (config, mut nodes) = cluster();
        let backup_clock = Time::from_millis(10_000);
        let primary_clock = backup_clock + config.max_clock_skew * 2;
        let pp = pre_prepare_at(&config, &mut nodes, primary_clock);
        let mut out = PbftOutput::new();
        nodes[1].step(backup_clock, NodeId(1), Message::PrePrepare(pp.clone()), &mut out);
        assert!(prepares(&out).is_empty());
        let expected = Event::TimestampRefused {
            epoch: 0,
            seq: pp.seq,
            proposed: primary_clock,
            local: backup_clock,
        };
        assert_eq!(refusals(&out), [expected]);
        let mut again = PbftOutput::new();
        nodes[1].step(backup_clock, NodeId(1), Message::PrePrepare(pp), &mut again);
        assert!(refusals(&again).is_empty(), "reported twice: {:?}", again.events);
        assert!(prepares(&again).is_empty());
        assert_eq!(nodes[1].auth_stats().bad_timestamp, 1);

        let (_, mut nodes) = cluster();
        let pp = pre_prepare_at(&config, &mut nodes, backup_clock + config.max_clock_skew);
        let mut out = PbftOutput::new();
        nodes[1].step(backup_clock, NodeId(1), Message::PrePrepare(pp), &mut out);
        assert_eq!(prepares(&out).len(), 3);
        assert!(refusals(&out).is_empty(), "{:?}", out.events);
    }

    /// `InjectedBug::SkipClockCheck` (the simulator's
    /// `pbft-skip-clock-check`) makes a backup PREPARE a batch stamped 2δ
    /// off, reporting no refusal: the check it breaks is the only one.
    #[test]
    fn the_skip_clock_check_bug_prepares_any_timestamp() {
        let (mut config, _) = cluster();
        config.bug = InjectedBug::SkipClockCheck;
        let mut nodes: Vec<PbftNode> = config
            .replicas
            .iter()
            .map(|&id| PbftNode::recover(id, &config, &Durable::default(), 0, Time::ZERO))
            .collect();
        let backup_clock = Time::from_millis(10_000);
        let pp = pre_prepare_at(&config, &mut nodes, backup_clock + config.max_clock_skew * 2);
        let mut out = PbftOutput::new();
        nodes[1].step(backup_clock, NodeId(1), Message::PrePrepare(pp), &mut out);
        assert_eq!(prepares(&out).len(), 3);
        assert_eq!(nodes[1].auth_stats().bad_timestamp, 0);
        assert!(!out.events.iter().any(|e| matches!(e, Event::TimestampRefused { .. })));
    }

    /// A backup whose clock is off (or that got the PRE-PREPARE late)
    /// refuses to PREPARE it, but a quorum's PREPAREs (so at least one
    /// correct replica vouched for the timestamp) prepare it there: it
    /// records the pre-prepare before the certificate and COMMITs.
    #[test]
    fn a_refused_timestamp_prepares_on_a_quorums_prepares() {
        let (config, mut nodes) = cluster();
        let at = Time::from_millis(10_000);
        let pp = pre_prepare_at(&config, &mut nodes, at);
        let mut votes = Vec::new();
        for i in [1, 2] {
            let mut out = PbftOutput::new();
            nodes[i].step(at, NodeId(1), Message::PrePrepare(pp.clone()), &mut out);
            votes.extend(prepares(&out).into_iter().take(1));
        }
        let late = at + config.max_clock_skew * 3;
        let mut out = PbftOutput::new();
        nodes[3].step(late, NodeId(1), Message::PrePrepare(pp), &mut out);
        assert!(prepares(&out).is_empty());
        for v in votes {
            let from = v.replica;
            nodes[3].step(late, from, Message::Prepare(v), &mut out);
        }
        assert!(prepares(&out).is_empty(), "it still does not vouch for it itself");
        assert!(out.messages.iter().any(|(_, m)| matches!(m, Message::Commit(_))));
        let kinds: Vec<&str> = out
            .writes
            .iter()
            .map(|w| match w {
                Write::PrePrepared { .. } => "pre-prepared",
                Write::Prepared { .. } => "prepared",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["pre-prepared", "prepared"]);
    }

    /// Regression (a view-0 primary started late refused the timestamps of
    /// PRE-PREPAREs retransmitted to it, could not prepare them without
    /// every other backup's PREPARE, and ran ahead to a view alone): a
    /// backup PREPAREs a batch whose timestamp it refused once f+1 peers
    /// report that sequence number executed (one of them is correct: it is
    /// committed), not on f such claims (they may all be lies). A
    /// PRE-PREPARE arriving after f+1 such claims is not refused at all.
    #[test]
    fn a_refused_timestamp_is_prepared_once_f_plus_1_peers_executed_it() {
        let (config, mut nodes) = cluster();
        let at = Time::from_millis(10_000);
        let pp = pre_prepare_at(&config, &mut nodes, at);
        let late = at + config.max_clock_skew * 3;
        let mut out = PbftOutput::new();
        nodes[3].step(late, NodeId(1), Message::PrePrepare(pp.clone()), &mut out);
        assert!(prepares(&out).is_empty());
        assert_eq!(nodes[3].auth_stats().bad_timestamp, 1);
        let mut out = PbftOutput::new();
        let m = status(&config, 1, 3, 0, true, pp.seq);
        nodes[3].step(late, NodeId(2), m, &mut out);
        assert!(prepares(&out).is_empty(), "one claim (f) is not enough");
        let m = status(&config, 2, 3, 0, true, pp.seq);
        nodes[3].step(late, NodeId(3), m, &mut out);
        let votes = prepares(&out);
        assert_eq!(votes.len(), 3, "a PREPARE to each peer: {:?}", out.messages);
        assert!(votes.iter().all(|v| v.seq == pp.seq && v.digest == pp.digest));
        assert!(
            matches!(out.writes.first(), Some(Write::PrePrepared { seq, .. }) if *seq == pp.seq),
            "recorded before it is sent: {:?}",
            out.writes
        );
        assert_eq!(nodes[3].build_view_change(1).pre_prepared.len(), 1, "in Q");

        // The claims first, then the late PRE-PREPARE: prepared at once.
        let (_, mut nodes) = cluster();
        let pp = pre_prepare_at(&config, &mut nodes, at);
        let mut out = PbftOutput::new();
        for from in [1, 2] {
            let m = status(&config, from, 3, 0, true, pp.seq);
            nodes[3].step(late, config.replicas[from], m, &mut out);
        }
        nodes[3].step(late, NodeId(1), Message::PrePrepare(pp), &mut out);
        assert_eq!(prepares(&out).len(), 3);
        assert_eq!(nodes[3].auth_stats().bad_timestamp, 0);
    }

    /// A batch prepared in view 0 with timestamp t0 and re-proposed in
    /// view 1's NEW-VIEW keeps t0 (its digest binds it), and a backup whose
    /// clock is now far past t0 + δ accepts it from the NEW-VIEW (it checks
    /// O against V, not the timestamp against its clock: prepared
    /// certificates vouch for it) and executes it at agreed time t0.
    #[test]
    fn a_re_proposed_batch_keeps_its_timestamp_through_a_view_change() {
        let (config, mut nodes) = cluster();
        let t0 = Time::from_millis(10_000);
        let pp = pre_prepare_at(&config, &mut nodes, t0);
        // Replicas 0, 1, 2 prepare it; COMMITs are lost; 3 never sees it.
        let mut votes = Vec::new();
        for i in [1, 2] {
            let mut out = PbftOutput::new();
            nodes[i].step(t0, NodeId(1), Message::PrePrepare(pp.clone()), &mut out);
            votes.extend(prepares(&out).into_iter().take(1));
        }
        for i in [0, 1, 2] {
            for v in &votes {
                if v.replica != nodes[i].id {
                    nodes[i].step(
                        t0,
                        v.replica,
                        Message::Prepare(v.clone()),
                        &mut PbftOutput::new(),
                    );
                }
            }
            assert_eq!(nodes[i].build_view_change(1).prepared.len(), 1, "replica {i} prepared");
        }
        // The primary fails; long after, the others change view.
        let later = t0 + config.max_clock_skew * 10;
        for i in [1, 2, 3] {
            give_request(&config, &mut nodes[i], 1, later);
            nodes[i].start_view_change(later, 1, &mut PbftOutput::new());
        }
        let limit = later + std::time::Duration::from_secs(10);
        let end = run_until(&mut nodes, &[1, 2, 3], later, limit, |n| {
            n[1..].iter().all(|r| r.executed >= 1)
        });
        assert!(end < limit, "{:?}", nodes[1..].iter().map(PbftNode::summary).collect::<Vec<_>>());
        for r in &nodes[1..] {
            assert!(r.view >= 1);
            let batch = r.executed_batch(1).expect("executed");
            assert_eq!(batch.timestamp, t0, "{}", r.summary());
            assert_eq!(r.agreed_time(), t0);
            assert_eq!(r.auth_stats().bad_timestamp, 0);
        }
    }

    /// Execution clamps: a batch stamped earlier than one executed before
    /// it runs at the earlier batch's time, and a null request does not
    /// move the clock.
    #[test]
    fn the_agreed_clock_never_goes_back() {
        let (_, mut nodes) = cluster();
        let node = &mut nodes[1];
        let cmd = |seq| Command::new(ClientId(1), seq, &b"x"[..]);
        let batches = [
            Batch::new(Time(500), vec![cmd(1)]),
            Batch::null(),
            Batch::new(Time(300), vec![cmd(2), cmd(3)]),
            Batch::new(Time(900), vec![cmd(4)]),
        ];
        let mut out = PbftOutput::new();
        for (i, b) in batches.iter().enumerate() {
            node.execute(i as u64 + 1, b.clone(), batch_digest(b), false, &mut out);
        }
        let times: Vec<u64> = out.committed.iter().map(|c| c.time.expect("timed").0).collect();
        assert_eq!(times, [500, 500, 500, 500, 900]);
    }

    /// Gives `nodes[i]` a pending client request (so its request timer runs).
    fn give_request(config: &Config, node: &mut PbftNode, seq: u64, now: Time) {
        let c = crate::request::sign_command(
            &config.client_key(1),
            Command::new(ClientId(1), seq, &b"put"[..]),
        );
        node.propose(now, vec![c], &mut PbftOutput::new()).expect("well signed");
    }

    fn asks_for_view(out: &PbftOutput, view: u64) -> bool {
        out.messages.iter().any(|(_, m)| matches!(m, Message::ViewChange(vc) if vc.view == view))
    }

    fn suspects(out: &PbftOutput, view: u64) -> bool {
        out.messages.iter().any(|(_, m)| matches!(m, Message::Suspect(s) if s.view == view))
    }

    /// `nodes[from]`'s SUSPECT of `view`, as it would sign it.
    fn suspicion(config: &Config, from: usize, view: u64) -> Message {
        let replica = config.replicas[from];
        let sig = config.keyring(from).sign(&Suspect::digest(view, replica));
        Message::Suspect(Suspect { view, replica, sig })
    }

    /// A Byzantine replica (position 3, the primary of view 7) claims in
    /// its STATUS to be active in view 7 far ahead, and sends a NEW-VIEW for
    /// view 7 whose other VIEW-CHANGEs it forged: the correct backup neither
    /// enters view 7 nor holds back its suspicion of a primary that does not
    /// order its request (f claims are not f+1).
    #[test]
    fn a_byzantine_replicas_higher_view_claims_do_not_move_a_correct_replica() {
        let (config, mut nodes) = cluster();
        let now = Time::ZERO;
        give_request(&config, &mut nodes[1], 1, now);
        let lie = status(&config, 3, 1, 7, true, 1_000);
        nodes[1].step(now, NodeId(4), lie, &mut PbftOutput::new());
        let own = nodes[3].build_view_change(7);
        let forged = |replica: u64| {
            let mut vc = own.clone();
            vc.replica = NodeId(replica);
            vc.sig = config.keyring(3).sign(&vc.digest());
            Arc::new(vc)
        };
        let mut nv = NewView {
            view: 7,
            replica: NodeId(4),
            view_changes: vec![Arc::new(own.clone()), forged(1), forged(2)],
            checkpoint_seq: 0,
            checkpoint_state: Digest::ZERO,
            pre_prepares: Vec::new(),
            sig: ed25519_dalek::Signature::from_bytes(&[0; 64]),
        };
        nv.sig = config.keyring(3).sign(&nv.digest());
        let mut out = PbftOutput::new();
        nodes[1].step(now, NodeId(4), Message::NewView(Arc::new(nv)), &mut out);
        assert_eq!((nodes[1].view, nodes[1].active), (0, true), "{}", nodes[1].summary());
        assert!(nodes[1].stats.bad_signature > 0, "the forged VIEW-CHANGEs were not caught");
        // The two other replicas report view 0 (the Byzantine one keeps
        // lying): the request timer expires and the backup suspects view 0's
        // primary, as it should.
        let later = now + config.view_change_timeout;
        for from in [0, 2] {
            let m = status(&config, from, 1, 0, true, 0);
            nodes[1].step(later, config.replicas[from], m, &mut PbftOutput::new());
        }
        let lie = status(&config, 3, 1, 9, true, 2_000);
        nodes[1].step(later, NodeId(4), lie, &mut PbftOutput::new());
        let mut out = PbftOutput::new();
        nodes[1].tick(later, &mut out);
        assert!(suspects(&out, 0), "no SUSPECT of view 0: {}", nodes[1].summary());
        assert_eq!(nodes[1].suspicions_deferred(), 0);
        // Its suspicion and the Byzantine replica's make f+1: it leaves.
        let mut out = PbftOutput::new();
        nodes[1].step(later, NodeId(4), suspicion(&config, 3, 0), &mut out);
        assert!(asks_for_view(&out, 1), "no VIEW-CHANGE for view 1: {}", nodes[1].summary());
        assert_eq!(nodes[1].view, 1);
    }

    /// A replica that hears fewer than 2f of its peers (a restart, a
    /// partition) cannot tell whether its view is current: its request
    /// timer does not send it into a view change alone. Once f+1 peers say
    /// they are active and ahead in its view, it waits one more period (it
    /// lags), then suspects the primary if it got nowhere.
    #[test]
    fn a_replica_suspects_its_primary_only_when_it_knows_its_view_is_current() {
        let (config, mut nodes) = cluster();
        let mut now = Time::ZERO;
        give_request(&config, &mut nodes[2], 1, now);
        for _ in 0..5 {
            now = now + config.view_change_timeout;
            let mut out = PbftOutput::new();
            nodes[2].tick(now, &mut out);
            assert!(!suspects(&out, 0), "suspected blind: {}", nodes[2].summary());
        }
        assert_eq!(nodes[2].suspicions_deferred(), 5);
        // Two peers active in view 0 with more executed: it lags.
        now = now + config.view_change_timeout;
        for from in [1, 3] {
            let m = status(&config, from, 2, 0, true, 5);
            nodes[2].step(now, config.replicas[from], m, &mut PbftOutput::new());
        }
        let mut out = PbftOutput::new();
        nodes[2].tick(now, &mut out);
        assert!(!suspects(&out, 0), "suspected while behind: {}", nodes[2].summary());
        assert!(
            out.messages.iter().any(|(_, m)| matches!(m, Message::Forward { .. })),
            "its request was not sent to the primary again"
        );
        // A whole period later it is still where it was, though the same
        // peers still claim to be ahead: being behind excuses one period
        // without progress, not more (the peer ahead may be unable to help,
        // and one of the two may lie).
        now = now + config.view_change_timeout;
        for from in [1, 3] {
            let m = status(&config, from, 2, 0, true, 5);
            nodes[2].step(now, config.replicas[from], m, &mut PbftOutput::new());
        }
        let mut out = PbftOutput::new();
        nodes[2].tick(now, &mut out);
        assert!(suspects(&out, 0), "no SUSPECT: {}", nodes[2].summary());
    }

    /// With its peers level with it (2f of them heard), a backup whose
    /// request is not ordered suspects the primary at the first expiry.
    #[test]
    fn a_replica_level_with_its_peers_suspects_at_once() {
        let (config, mut nodes) = cluster();
        give_request(&config, &mut nodes[2], 1, Time::ZERO);
        let now = Time::ZERO + config.view_change_timeout;
        hear_peers(&config, &mut nodes, 2, now, 0);
        let mut out = PbftOutput::new();
        nodes[2].tick(now, &mut out);
        assert!(suspects(&out, 0), "no SUSPECT: {}", nodes[2].summary());
        assert_eq!(nodes[2].suspicions_deferred(), 0);
        // Alone, it stays in its view (and active there).
        assert_eq!((nodes[2].view, nodes[2].active), (0, true), "{}", nodes[2].summary());
        assert!(!asks_for_view(&out, 1));
    }

    /// Regression (views-converge check, `--faults all` seeds 1, 18, 59,
    /// 154, ...): a backup held a request nobody else had (the client's
    /// multicast reached it alone, its forward to the primary was lost).
    /// Its timer expired and it sent VIEW-CHANGE for view 1 alone: nobody
    /// joined, and it stayed changing to view 1 while the others worked
    /// in view 0. Now it suspects, stays in view 0, sends the request to
    /// the primary again, and it is executed there in view 0.
    #[test]
    fn a_lone_suspicion_leaves_no_replica_alone_in_a_higher_view() {
        let (config, mut nodes) = cluster();
        // The forward to the primary is dropped with the output.
        give_request(&config, &mut nodes[2], 1, Time::ZERO);
        let limit = Time::ZERO + config.view_change_timeout * 4;
        let end = run_until(&mut nodes, &[0, 1, 2, 3], Time::ZERO, limit, |n| {
            n.iter().all(|r| r.executed >= 1)
        });
        let views: Vec<String> = nodes.iter().map(PbftNode::summary).collect();
        assert!(end < limit, "the request was not executed: {views:?}");
        assert!(nodes.iter().all(|r| r.view == 0 && r.active), "{views:?}");
        assert!(nodes[2].suspicions.get(&2).is_some_and(|s| s.view == 0), "{views:?}");
    }

    /// f+1 suspicions move a replica (its own and one peer's), and it
    /// relays them: a replica that suspects nothing itself and got only
    /// one of them directly leaves with it. f suspicions, or one forged
    /// in a correct replica's name, move nobody.
    #[test]
    fn f_plus_1_suspicions_change_view_and_are_relayed() {
        let (config, mut nodes) = cluster();
        let now = Time::ZERO;
        // The Byzantine replica (position 3) alone suspects: f, not f+1.
        let mut out = PbftOutput::new();
        nodes[1].step(now, NodeId(4), suspicion(&config, 3, 0), &mut out);
        assert_eq!((nodes[1].view, nodes[1].active), (0, true));
        // It forges replica 3's (position 2) suspicion with its own key.
        let Message::Suspect(mut forged) = suspicion(&config, 3, 0) else { unreachable!() };
        forged.replica = NodeId(3);
        let before = nodes[1].stats.bad_signature;
        nodes[1].step(now, NodeId(4), Message::Suspect(forged), &mut out);
        assert_eq!(nodes[1].stats.bad_signature, before + 1, "the forgery was not caught");
        assert_eq!((nodes[1].view, nodes[1].active), (0, true));
        // A correct replica's suspicion makes f+1: it leaves, relaying both.
        let mut out = PbftOutput::new();
        nodes[1].step(now, NodeId(3), suspicion(&config, 2, 0), &mut out);
        assert!(asks_for_view(&out, 1), "{}", nodes[1].summary());
        let relayed: Vec<Message> = out
            .messages
            .iter()
            .filter(|(to, m)| *to == NodeId(1) && matches!(m, Message::Suspect(_)))
            .map(|(_, m)| m.clone())
            .collect();
        assert_eq!(relayed.len(), 2, "{:?}", out.messages);
        // The primary of view 0 got neither directly; relayed, they move it.
        let mut out = PbftOutput::new();
        for m in relayed {
            nodes[0].step(now, NodeId(2), m, &mut out);
        }
        assert_eq!((nodes[0].view, nodes[0].active), (1, false), "{}", nodes[0].summary());
        assert!(asks_for_view(&out, 1));
    }

    #[test]
    fn a_view_change_is_announced_as_candidate_then_the_new_primary() {
        let (_, mut nodes) = cluster();
        let mut out = PbftOutput::new();
        nodes[1].tick(Time::ZERO, &mut out);
        out.clear();
        nodes[1].start_view_change(Time::ZERO, 1, &mut out);
        nodes[1].finish(&mut out);
        assert_eq!(
            out.events,
            [
                Event::RoleChanged { role: Role::Candidate, epoch: 1 },
                Event::LeaderChanged { leader: None, epoch: 1 }
            ]
        );
    }
}
