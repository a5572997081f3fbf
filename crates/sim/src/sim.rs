//! The discrete-event engine: [`Sim`] runs a cluster of protocol cores over
//! the simulated network, disks and clocks, with clients, faults and
//! checkers, all from one seed.
//!
//! One event at a time is popped from the queue (earliest virtual time
//! first, ties in insertion order) and handed to the node, client or fault
//! injector it concerns. After a node's core handles an event, every
//! [`Invariant`] sees the output, and the output is carried out in contract
//! order: writes go to the disk (an fsync completes after a simulated
//! latency), messages wait for their batch's writes to sync, committed
//! commands are applied to the node's state machine (answering the clients
//! waiting there), read barriers are served once applied, events are
//! counted. Finally the node's next timer deadline is scheduled as a tick.
//!
//! Snapshot actions ([`SnapshotAction`]) are carried out as the protocol's
//! snapshot contract says: received chunks and installs reach the node's
//! snapshot store before the output's writes; `Take` and `Install` run at
//! their position among the committed entries; `snapshot_taken` and
//! `snapshot_chunk` calls back into the core happen after the output is
//! carried out. Every snapshot at one index must hold the same key-value
//! state ("snapshot agreement"), and a restarted node loads exactly the
//! snapshot its core names.
//!
//! The harness methods (crash, partition, submit, …) live in
//! [`harness`](crate::harness); the end-to-end run in [`crate::run`].

use crate::client::{self, Answer, Client, InFlight, Request, Workload};
use crate::faults::{self, ClusterView, FaultAction, FaultProfile};
use crate::invariant::{Invariant, StepView, Violation};
use crate::metrics::Metrics;
use crate::net::{Fate, Network};
use crate::node::{
    Batch, MAX_PARKED, MAX_PENDING_READS, Parked, PendingRead, SimNode, StoredSnapshot,
    snapshot_bytes, snapshot_size,
};
use crate::options::SimOptions;
use crate::protocol::SimProtocol;
use crate::queue::EventQueue;
use crate::rng::SimRng;
use crate::trace::{Trace, TraceKind, TraceRecord};
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;
use synod_core::kv::{KvOp, KvResult, KvStore};
use synod_core::protocol::{SnapshotAction, SnapshotMeta};
use synod_core::{
    ClientId, ClientRouting, Command, Event, Message, NodeId, Output, ProposeError, ReadId, Role,
    Time,
};
use synod_core::{Protocol, Sessions};
use synod_lincheck::Operation;

/// One scheduled event.
pub(crate) enum Ev<M> {
    Peer { from: NodeId, to: NodeId, msg: M },
    Request { to: NodeId, req: Request },
    Reply { client: u32, from: NodeId, seq: u64, answer: Answer },
    Tick { node: u32, generation: u64 },
    Synced { node: u32, incarnation: u64, upto: u64 },
    ClientWake { client: u32, generation: u64 },
    FaultTick,
    Script { step: u32 },
    Undo { action: FaultAction },
}

/// Each node's clock starts up to this far (µs) ahead of global time.
pub const MAX_CLOCK_OFFSET_US: u64 = 1_000_000;

/// Message delay a bound on clock skew allows for, besides the clocks
/// themselves (a PRE-PREPARE held by the `slow` attack, jitter, queues).
pub const CLOCK_SKEW_DELAY_MARGIN: Duration = Duration::from_millis(500);

/// How far apart two nodes' clocks can read in a run of `opts`: the spread
/// of their start offsets, plus both drifting apart at the fault profile's
/// largest rate for the whole run, plus [`CLOCK_SKEW_DELAY_MARGIN`].
pub fn max_clock_skew(opts: &SimOptions) -> Duration {
    let drift_ppm = crate::faults::FaultConfig::default().max_drift_ppm.unsigned_abs();
    let drift_us = 2 * drift_ppm * opts.max_time_ms * 1000 / 1_000_000;
    Duration::from_micros(MAX_CLOCK_OFFSET_US + drift_us) + CLOCK_SKEW_DELAY_MARGIN
}

/// A deterministic simulation of a cluster of `P` cores.
pub struct Sim<P: SimProtocol> {
    pub(crate) opts: SimOptions,
    pub(crate) seed: u64,
    pub(crate) config: P::Config,
    pub(crate) routing: ClientRouting,
    pub(crate) rng: SimRng,
    pub(crate) now: Time,
    pub(crate) queue: EventQueue<Ev<P::Message>>,
    pub(crate) nodes: Vec<SimNode<P>>,
    pub(crate) net: Network,
    pub(crate) clients: Vec<Client>,
    pub(crate) keys: Vec<Bytes>,
    pub(crate) history: Vec<Operation<KvOp, KvResult>>,
    pub(crate) invariants: Vec<Box<dyn Invariant<P>>>,
    pub(crate) violations: Vec<(Time, Violation)>,
    pub(crate) metrics: Metrics,
    pub(crate) trace: Trace,
    pub(crate) out: Output<P::Message, P::Write>,
    pub(crate) next_read_id: u64,
    pub(crate) leaders: usize,
    pub(crate) fault_window_end: Time,
    /// Every snapshot's state machine, by snapshot id.
    pub(crate) snapshot_registry: HashMap<u64, Sessions<KvStore>>,
    /// The first snapshot registered at each index (its uid): every other
    /// one there must hold the same key-value state.
    pub(crate) snapshot_states: HashMap<u64, u64>,
    /// SHA-256 of each registered snapshot's bytes, for cores that sign
    /// them ([`synod_core::Protocol::SNAPSHOT_DIGESTS`]).
    pub(crate) snapshot_digests: HashMap<u64, [u8; 32]>,
    pub(crate) next_snapshot_uid: u64,
    /// Per node: true when an adversary controls it (checkers skip it).
    pub(crate) byzantine: Vec<bool>,
    /// The strategy of the Byzantine nodes, if any ([`crate::byzantine`]).
    pub(crate) adversary: Option<Box<dyn crate::byzantine::Adversary<P>>>,
    /// Events taken from the queue so far (the run's event budget,
    /// [`SimOptions::event_budget`], counts these).
    pub(crate) events_handled: u64,
}

/// The snapshot property's name in violations.
pub(crate) const SNAPSHOT_PROPERTY: &str = "snapshot agreement";

impl<P: SimProtocol> Sim<P> {
    /// Builds the cluster for `opts` and `seed`: every node recovers from an
    /// empty disk, the clients of `opts` are scheduled, and so are the
    /// random faults of `opts.faults` and the steps of `opts.scenario`.
    ///
    /// Unlike [`SimOptions::validate`], zero clients is allowed here (a
    /// harness test then issues operations itself with
    /// [`submit`](Sim::submit)).
    /// With a fault profile that changes the membership, the protocol's
    /// [`membership_spares`](SimProtocol::membership_spares) are added.
    pub fn new(opts: &SimOptions, seed: u64) -> Result<Sim<P>, String> {
        let spares =
            if opts.faults.includes_membership() { P::membership_spares(opts.nodes) } else { 0 };
        Sim::with_spares(opts, seed, spares)
    }

    /// Like [`new`](Sim::new), plus `spares` nodes (ids `nodes + 1 ..=
    /// nodes + spares`) that run but are not in the bootstrap configuration:
    /// membership changes can add them.
    pub fn with_spares(opts: &SimOptions, seed: u64, spares: usize) -> Result<Sim<P>, String> {
        let mut check = opts.clone();
        check.clients = check.clients.max(1);
        check.validate()?;
        let voters: Vec<NodeId> = (1..=opts.nodes as u64).map(NodeId).collect();
        let mut config = P::sim_config(&voters);
        if let Some(bug) = &opts.bug {
            P::inject_bug(&mut config, bug)?;
        }
        if opts.lease_reads || opts.follower_reads {
            P::configure_reads(&mut config, opts.lease_reads, opts.follower_reads)?;
        }
        if let Some(every) = opts.snapshot_interval_entries {
            P::configure_snapshots(&mut config, every)?;
        }
        if opts.leader_parallel_write {
            P::configure_parallel_write(&mut config)?;
        }
        P::configure_clock_skew(&mut config, max_clock_skew(opts));
        if opts.measure_auth {
            P::configure_auth_metering(&mut config);
        }
        let mut rng = SimRng::new(seed);
        let ids = (1..=(opts.nodes + spares) as u64).map(NodeId);
        let nodes = ids.map(|id| SimNode::new(id, rng.below(MAX_CLOCK_OFFSET_US) as i64)).collect();
        let keys = client::key_names(opts.keys);
        let mut sim = Sim {
            opts: opts.clone(),
            seed,
            routing: P::client_routing(&config),
            config,
            rng,
            now: Time::ZERO,
            queue: EventQueue::new(),
            nodes,
            net: Network::new(opts.nodes + spares, opts.net.clone()),
            clients: Vec::new(),
            keys,
            history: Vec::new(),
            invariants: P::invariants(),
            violations: Vec::new(),
            metrics: Metrics::default(),
            trace: Trace::new(),
            out: Output::new(),
            next_read_id: 1,
            leaders: 0,
            snapshot_registry: HashMap::new(),
            snapshot_states: HashMap::new(),
            snapshot_digests: HashMap::new(),
            next_snapshot_uid: 1,
            byzantine: vec![false; opts.nodes + spares],
            adversary: None,
            events_handled: 0,
            fault_window_end: Time::from_millis(if opts.faults == FaultProfile::None {
                0
            } else {
                opts.fault_window_ms
            }),
        };
        crate::byzantine::install(&mut sim)?;
        for i in 0..sim.nodes.len() {
            sim.boot(i);
        }
        for c in 0..opts.clients {
            let target = sim.rng.index(opts.nodes);
            let workload = Workload::Random { remaining: opts.ops_per_client };
            sim.clients.push(Client::new(c, workload, target, opts.keys));
            let think = 1000 * sim.rng.between(0, opts.think_ms);
            sim.wake_client_at(c, Time(think), false);
        }
        if opts.faults != FaultProfile::None {
            sim.schedule_fault_tick();
        }
        for (ms, action) in crate::partial::timeline(opts.faults) {
            sim.queue.push(Time::from_millis(ms), Ev::Undo { action });
        }
        if let Some(s) = &opts.scenario {
            for (i, step) in s.steps.iter().enumerate() {
                sim.queue.push(Time::from_millis(step.time_ms), Ev::Script { step: i as u32 });
            }
        }
        Ok(sim)
    }

    // ----- the event loop -------------------------------------------------

    /// Handles the next event. Returns false when nothing is scheduled.
    pub fn step(&mut self) -> bool {
        let Some((t, ev)) = self.queue.pop() else { return false };
        self.events_handled += 1;
        self.advance_to(t);
        self.dispatch(ev);
        true
    }

    pub(crate) fn advance_to(&mut self, t: Time) {
        debug_assert!(t >= self.now, "time never goes back");
        if self.leaders == 0 {
            self.metrics.leaderless_us += t.0 - self.now.0;
        }
        self.now = t;
    }

    fn dispatch(&mut self, ev: Ev<P::Message>) {
        match ev {
            Ev::Peer { from, to, msg } => self.deliver_peer(from, to, msg),
            Ev::Request { to, req } => self.deliver_request(to, req),
            Ev::Reply { client, from, seq, answer } => {
                self.on_reply(client as usize, from, seq, answer)
            }
            Ev::Tick { node, generation } => self.on_tick(node as usize, generation),
            Ev::Synced { node, incarnation, upto } => {
                let n = &mut self.nodes[node as usize];
                if n.incarnation != incarnation {
                    return;
                }
                if n.paused {
                    n.parked.push_back(Parked::Synced { upto });
                    return;
                }
                self.on_synced(node as usize, upto);
            }
            Ev::ClientWake { client, generation } => {
                self.on_client_wake(client as usize, generation)
            }
            Ev::FaultTick => self.on_fault_tick(),
            Ev::Script { step } => {
                let action =
                    self.opts.scenario.as_ref().map(|s| s.steps[step as usize].action.clone());
                if let Some(a) = action {
                    self.apply_fault(&a);
                }
            }
            Ev::Undo { action } => self.apply_fault(&action),
        }
    }

    fn record(&mut self, kind: TraceKind, node: u64, peer: u64, label: &'static str, value: u64) {
        self.trace.record(TraceRecord { time: self.now, kind, node, peer, label, value });
    }

    fn deliver_peer(&mut self, from: NodeId, to: NodeId, msg: P::Message) {
        let i = to.0 as usize - 1;
        let n = &mut self.nodes[i];
        if n.core.is_none() || self.net.is_blocked(from, to) {
            self.record(TraceKind::Drop, to.0, from.0, msg.kind(), 0);
            return;
        }
        if n.paused {
            if n.parked.len() < MAX_PARKED {
                n.parked.push_back(Parked::Peer { from, msg });
            }
            return;
        }
        if self.byzantine[i]
            && let Some(mut adv) = self.adversary.take()
        {
            let mut forged = Vec::new();
            let keep = adv.incoming(self.now, to, from, &msg, &mut forged);
            self.adversary = Some(adv);
            self.send_forged(forged);
            if !keep {
                return;
            }
        }
        let n = &mut self.nodes[i];
        self.metrics.events += 1;
        let rec = TraceRecord {
            time: self.now,
            kind: TraceKind::Deliver,
            node: to.0,
            peer: from.0,
            label: msg.kind(),
            value: 0,
        };
        self.trace.record(rec);
        let local = n.local_time(self.now);
        let core = n.core.as_mut().expect("checked above");
        core.step(local, from, msg, &mut self.out);
        self.after_call(i);
    }

    fn on_tick(&mut self, i: usize, generation: u64) {
        let n = &mut self.nodes[i];
        if n.tick_gen != generation || n.paused {
            return;
        }
        n.tick_at = None;
        let local = n.local_time(self.now);
        let Some(core) = n.core.as_mut() else { return };
        self.metrics.events += 1;
        if core.next_deadline() > local {
            self.schedule_tick(i);
            return;
        }
        self.trace.record(TraceRecord {
            time: self.now,
            kind: TraceKind::Tick,
            node: i as u64 + 1,
            peer: 0,
            label: "",
            value: 0,
        });
        core.tick(local, &mut self.out);
        self.after_call(i);
    }

    pub(crate) fn schedule_tick(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let Some(core) = n.core.as_ref() else { return };
        if n.paused {
            return;
        }
        let deadline = core.next_deadline();
        if deadline == Time::MAX {
            return;
        }
        let at = n.global_time(deadline, self.now);
        if n.tick_at.is_some_and(|t| t <= at) {
            return; // the pending tick fires first and reschedules
        }
        n.tick_gen += 1;
        n.tick_at = Some(at);
        self.queue.push(at, Ev::Tick { node: i as u32, generation: n.tick_gen });
    }

    /// Carries out `self.out`, the output of a call into node `i`'s core.
    pub(crate) fn after_call(&mut self, i: usize) {
        let mut out = std::mem::take(&mut self.out);
        if !self.invariants.is_empty() && !self.byzantine[i] {
            let n = &self.nodes[i];
            let core = n.core.as_ref().expect("a core that just ran exists");
            let view = StepView { now: self.now, node: n.id, core, output: &out };
            for inv in self.invariants.iter_mut() {
                if let Err(v) = inv.after_step(&view) {
                    self.violations.push((self.now, v));
                }
            }
        }
        let actions = std::mem::take(&mut out.snapshots);
        // 0. Received chunks and installs reach the snapshot store first.
        let mut installed = None;
        for a in &actions {
            if let Some(index) = self.snapshot_receive(i, a) {
                installed = Some(index);
            }
        }
        // 1. Writes go to the disk; an fsync completes later.
        if !out.writes.is_empty() {
            let lat = self.rng.between(self.opts.fsync_min_us, self.opts.fsync_max_us);
            let n = &mut self.nodes[i];
            n.written += out.writes.len() as u64;
            n.unsynced.extend(out.writes.drain(..));
            let at = Time((self.now.0 + lat).max(n.last_sync_at.0));
            n.last_sync_at = at;
            let ev = Ev::Synced { node: i as u32, incarnation: n.incarnation, upto: n.written };
            self.queue.push(at, ev);
        }
        if let Some(index) = installed {
            let n = &mut self.nodes[i];
            n.snapshot_prunes.push((n.written, index));
        }
        // A core may adopt a snapshot in any call (PBFT: once its
        // checkpoint is stable): older ones go once these writes sync.
        let n = &mut self.nodes[i];
        if let Some(index) = core_snapshot_index(n).filter(|&x| x > n.prune_requested) {
            n.prune_requested = index;
            n.snapshot_prunes.push((n.written, index));
        }
        // 2. Messages leave once every write so far is synced.
        if !out.messages.is_empty() {
            let n = &mut self.nodes[i];
            if n.written == n.synced {
                let from = n.id;
                for (to, msg) in out.messages.drain(..) {
                    self.send_peer(from, to, msg);
                }
            } else if self.opts.leader_parallel_write
                && out.messages.iter().any(|(_, m)| P::leaves_before_sync(m))
            {
                let from = n.id;
                let (early, waiting): (Vec<_>, Vec<_>) =
                    out.messages.drain(..).partition(|(_, m)| P::leaves_before_sync(m));
                for (to, msg) in early {
                    self.send_peer(from, to, msg);
                }
                if !waiting.is_empty() {
                    let n = &mut self.nodes[i];
                    n.batches.push_back(Batch { upto: n.written, messages: waiting });
                }
            } else {
                let spare = n.spare.pop().unwrap_or_default();
                let messages = std::mem::replace(&mut out.messages, spare);
                n.batches.push_back(Batch { upto: n.written, messages });
            }
        }
        // 3. Committed positions are applied, snapshot actions at theirs.
        let mut positioned = actions.iter().filter(|a| a.position().is_some()).peekable();
        let mut taken = Vec::new();
        if !out.committed.is_empty() {
            for c in out.committed.drain(..) {
                while let Some(a) = positioned.next_if(|a| a.position() < Some(c.index)) {
                    taken.extend(self.snapshot_at_position(i, a));
                }
                self.apply_committed(i, c);
            }
            let applied = self.nodes[i].sessions.applied_index();
            self.record(TraceKind::Commit, i as u64 + 1, 0, "", applied);
            if !self.nodes[i].waiting_reads.is_empty() {
                self.serve_waiting_reads(i);
            }
        }
        for a in positioned {
            taken.extend(self.snapshot_at_position(i, a));
            if !self.nodes[i].waiting_reads.is_empty() {
                self.serve_waiting_reads(i);
            }
        }
        // 4. Read barriers and events.
        for rs in out.reads.drain(..) {
            let n = &mut self.nodes[i];
            if let Some(pr) = n.pending_reads.remove(&rs.id) {
                if n.sessions.applied_index() >= rs.index {
                    let answer = n.sessions.query(&pr.op);
                    self.send_reply(i, pr.client, pr.seq, Answer::Value(answer));
                } else {
                    n.waiting_reads.push((rs.index, pr));
                }
            }
        }
        for e in out.events.drain(..) {
            self.on_core_event(i, e);
        }
        out.clear();
        self.out = out;
        self.schedule_tick(i);
        // Calls back into the core, after this output is carried out.
        for (index, size_bytes, sha256) in taken {
            self.call_snapshot_taken(i, index, size_bytes, sha256);
        }
        for a in actions {
            if let SnapshotAction::Read { to, index, offset, max_bytes } = a {
                self.call_snapshot_chunk(i, to, index, offset, max_bytes);
            }
        }
    }

    // ----- the snapshot host ------------------------------------------------

    fn snapshot_violation(&mut self, i: usize, detail: String) {
        let node = Some(self.nodes[i].id);
        self.violations.push((self.now, Violation::new(SNAPSHOT_PROPERTY, node, detail)));
    }

    /// Step 0 of an output: store a received chunk; make a complete
    /// snapshot durable. Returns the index of a snapshot installed.
    fn snapshot_receive(&mut self, i: usize, a: &SnapshotAction) -> Option<u64> {
        match a {
            SnapshotAction::Write { index, epoch, offset, data } => {
                let n = &mut self.nodes[i];
                if *offset == 0 {
                    n.partial = Some((*index, *epoch, Vec::new()));
                }
                let ok = match n.partial.as_mut() {
                    Some((at, ep, bytes))
                        if (*at, *ep, bytes.len() as u64) == (*index, *epoch, *offset) =>
                    {
                        bytes.extend_from_slice(data);
                        true
                    }
                    _ => false,
                };
                if !ok {
                    let detail = format!("chunk of snapshot {index} at {offset} out of order");
                    self.snapshot_violation(i, detail);
                }
                None
            }
            SnapshotAction::Install { meta } => {
                let partial = self.nodes[i].partial.take();
                let Some((index, epoch, bytes)) = partial.filter(|p| p.0 == meta.index) else {
                    self.snapshot_violation(i, format!("install of {meta:?} without its chunks"));
                    return None;
                };
                let uid = bytes
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                    .unwrap_or(0);
                let expected = snapshot_bytes(uid, 0, meta.size_bytes);
                if epoch != meta.epoch
                    || bytes[..] != expected[..]
                    || !self.snapshot_registry.contains_key(&uid)
                {
                    let detail = format!("snapshot {index} arrived corrupted or incomplete");
                    self.snapshot_violation(i, detail);
                    return None;
                }
                self.nodes[i].snapshots.push(StoredSnapshot { meta: *meta, uid });
                Some(meta.index)
            }
            SnapshotAction::Take { .. } | SnapshotAction::Read { .. } => None,
        }
    }

    /// Step 3: a `Take` or `Install` at its position. Returns the snapshot
    /// taken (index, size) for [`call_snapshot_taken`](Self::call_snapshot_taken).
    fn snapshot_at_position(
        &mut self,
        i: usize,
        a: &SnapshotAction,
    ) -> Option<(u64, u64, [u8; 32])> {
        match a {
            SnapshotAction::Take { index } => {
                let applied = self.nodes[i].sessions.applied_index();
                if applied != *index {
                    let detail = format!("take at {index} while the state machine is at {applied}");
                    self.snapshot_violation(i, detail);
                    return None;
                }
                let sessions = &self.nodes[i].sessions;
                let size_bytes = snapshot_size(sessions.machine().len());
                // A state equal (sessions included) to the one first
                // registered at this index is shared, not copied: five nodes
                // snapshotting one index keep one copy.
                let first = self.snapshot_states.get(index).copied();
                let shared = first.filter(|uid| {
                    self.snapshot_registry.get(uid).is_some_and(|state| state == sessions)
                });
                let uid = match shared {
                    Some(uid) => uid,
                    None => {
                        let uid = self.next_snapshot_uid;
                        self.next_snapshot_uid += 1;
                        self.snapshot_registry.insert(uid, sessions.clone());
                        self.check_snapshot_state(i, *index, uid);
                        uid
                    }
                };
                let meta = SnapshotMeta { index: *index, epoch: 0, size_bytes };
                self.nodes[i].snapshots.push(StoredSnapshot { meta, uid });
                let sha256 = if P::SNAPSHOT_DIGESTS {
                    self.snapshot_sha256(uid, size_bytes)
                } else {
                    [0; 32]
                };
                Some((*index, size_bytes, sha256))
            }
            SnapshotAction::Install { meta } => {
                let Some(stored) = self.nodes[i].stored_snapshot(meta.index) else {
                    return None; // already reported by snapshot_receive
                };
                self.load_snapshot(i, stored);
                None
            }
            SnapshotAction::Read { .. } | SnapshotAction::Write { .. } => None,
        }
    }

    /// Replaces node `i`'s state machine with a stored snapshot.
    fn load_snapshot(&mut self, i: usize, stored: StoredSnapshot) {
        let Some(state) = self.snapshot_registry.get(&stored.uid).cloned() else {
            self.snapshot_violation(i, format!("snapshot {} lost its state", stored.meta.index));
            return;
        };
        if state.applied_index() != stored.meta.index {
            let detail = format!(
                "snapshot {} holds the state at {}",
                stored.meta.index,
                state.applied_index()
            );
            self.snapshot_violation(i, detail);
            return;
        }
        let previous = self.nodes[i].sessions.applied_index();
        if previous > stored.meta.index {
            let detail = format!("installing {} would undo applied {previous}", stored.meta.index);
            self.snapshot_violation(i, detail);
        }
        self.check_snapshot_state(i, stored.meta.index, stored.uid);
        self.nodes[i].sessions = state;
        self.record(TraceKind::Commit, i as u64 + 1, 0, "snapshot", stored.meta.index);
    }

    /// Every snapshot at `index`, on any node, holds the same state: the
    /// registered snapshot `uid` against the first one registered there.
    fn check_snapshot_state(&mut self, i: usize, index: u64, uid: u64) {
        match self.snapshot_states.get(&index) {
            Some(&first) if first != uid => {
                let registry = &self.snapshot_registry;
                let same = match (registry.get(&first), registry.get(&uid)) {
                    (Some(a), Some(b)) => a.machine() == b.machine(),
                    _ => false,
                };
                if !same {
                    let detail = format!("the state at {index} differs from another node's");
                    self.snapshot_violation(i, detail);
                }
            }
            Some(_) => {}
            None => {
                self.snapshot_states.insert(index, uid);
            }
        }
    }

    /// SHA-256 of the bytes of registered snapshot `uid` (computed once).
    fn snapshot_sha256(&mut self, uid: u64, size_bytes: u64) -> [u8; 32] {
        use sha2::Digest as _;
        *self
            .snapshot_digests
            .entry(uid)
            .or_insert_with(|| sha2::Sha256::digest(snapshot_bytes(uid, 0, size_bytes)).into())
    }

    fn call_snapshot_taken(&mut self, i: usize, index: u64, size_bytes: u64, sha256: [u8; 32]) {
        let n = &mut self.nodes[i];
        let local = n.local_time(self.now);
        let Some(core) = n.core.as_mut() else { return };
        if P::SNAPSHOT_DIGESTS {
            core.snapshot_taken_with_digest(local, index, size_bytes, sha256, &mut self.out);
        } else {
            core.snapshot_taken(local, index, size_bytes, &mut self.out);
        }
        self.after_call(i);
        let n = &mut self.nodes[i];
        if core_snapshot_index(n) == Some(index) {
            n.snapshot_prunes.push((n.written, index));
        }
    }

    fn call_snapshot_chunk(&mut self, i: usize, to: NodeId, index: u64, offset: u64, max: usize) {
        let n = &mut self.nodes[i];
        let Some(stored) = n.stored_snapshot(index) else { return };
        let len = stored.meta.size_bytes.saturating_sub(offset).min(max as u64);
        let data = snapshot_bytes(stored.uid, offset, len);
        let local = n.local_time(self.now);
        let Some(core) = n.core.as_mut() else { return };
        core.snapshot_chunk(local, to, index, offset, data, &mut self.out);
        self.after_call(i);
    }

    /// After a restart: load the snapshot the core names, drop older ones.
    fn load_recovered_snapshot(&mut self, i: usize) {
        let Some(index) = core_snapshot_index(&self.nodes[i]) else { return };
        match self.nodes[i].stored_snapshot(index) {
            Some(stored) => {
                self.nodes[i].snapshots.retain(|s| s.meta.index >= index);
                self.load_snapshot(i, stored);
            }
            None => {
                let detail = format!("the core recovers from snapshot {index}, which is gone");
                self.snapshot_violation(i, detail);
            }
        }
    }

    fn apply_committed(&mut self, i: usize, c: synod_core::Committed) {
        let n = &mut self.nodes[i];
        if c.index != n.sessions.applied_index() + 1 {
            let detail = format!(
                "core emitted position {} after {}: positions must be consecutive",
                c.index,
                n.sessions.applied_index()
            );
            self.violations
                .push((self.now, Violation::new("apply order (driver)", Some(n.id), detail)));
            return;
        }
        match &c.command {
            None => n.sessions.apply_noop(c.index),
            Some(cmd) => {
                let applied = n.sessions.apply(c.index, cmd);
                if let Some(resp) = applied.response()
                    && n.pending_writes.get(&cmd.client) == Some(&cmd.seq)
                {
                    n.pending_writes.remove(&cmd.client);
                    let client = (cmd.client.0 - 1) as u32;
                    let (seq, answer) = (cmd.seq, Answer::Value(resp.clone()));
                    self.send_reply(i, client, seq, answer);
                }
            }
        }
        if self.opts.keep_applied_log {
            self.nodes[i].applied_log.push(c);
        }
    }

    fn serve_waiting_reads(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let applied = n.sessions.applied_index();
        let mut waiting = std::mem::take(&mut n.waiting_reads);
        let mut ready = Vec::new();
        waiting.retain(|(index, pr)| {
            if *index <= applied {
                ready.push((n.sessions.query(&pr.op), pr.client, pr.seq));
                false
            } else {
                true
            }
        });
        n.waiting_reads = waiting;
        for (answer, client, seq) in ready {
            self.send_reply(i, client, seq, Answer::Value(answer));
        }
    }

    fn on_core_event(&mut self, i: usize, e: Event) {
        match e {
            Event::RoleChanged { role, epoch } => {
                let n = &mut self.nodes[i];
                let leader = role == Role::Leader;
                if leader != n.is_leader {
                    n.is_leader = leader;
                    if leader {
                        self.leaders += 1;
                    } else {
                        self.leaders -= 1;
                    }
                }
                if leader {
                    self.metrics.elections += 1;
                    self.record(TraceKind::Leader, i as u64 + 1, 0, "", epoch);
                }
                if role == Role::Candidate && !self.byzantine[i] {
                    *self.metrics.defence.entry("candidacies").or_insert(0) += 1;
                }
            }
            Event::LeaderChanged { .. } | Event::TimestampRefused { .. } => {}
            Event::ReadFailed { id } => {
                if let Some(pr) = self.nodes[i].pending_reads.remove(&id) {
                    self.send_reply(i, pr.client, pr.seq, Answer::NotLeader(None));
                }
            }
        }
    }

    fn on_synced(&mut self, i: usize, upto: u64) {
        let n = &mut self.nodes[i];
        if upto <= n.synced {
            return;
        }
        self.metrics.events += 1;
        let k = (upto - n.synced) as usize;
        let writes = n.unsynced.make_contiguous();
        for w in &writes[..k] {
            P::apply_write(&mut n.durable, w);
        }
        for inv in self.invariants.iter_mut().filter(|_| !self.byzantine[i]) {
            if let Err(v) = inv.on_synced(n.id, &writes[..k]) {
                self.violations.push((self.now, v));
            }
        }
        n.unsynced.drain(..k);
        n.synced = upto;
        if !n.snapshot_prunes.is_empty() {
            n.prune_snapshots();
        }
        self.record(TraceKind::Synced, i as u64 + 1, 0, "", upto);
        self.release_batches(i);
        if self.opts.leader_parallel_write {
            let n = &mut self.nodes[i];
            if let Some(index) = P::persisted_index(&n.durable, n.unsynced.make_contiguous()) {
                let local = n.local_time(self.now);
                if let Some(core) = n.core.as_mut() {
                    core.persisted(local, index, &mut self.out);
                    self.after_call(i);
                }
            }
        }
    }

    fn release_batches(&mut self, i: usize) {
        loop {
            let n = &mut self.nodes[i];
            match n.batches.front() {
                Some(b) if b.upto <= n.synced => {}
                _ => return,
            }
            let mut b = n.batches.pop_front().expect("front exists");
            let from = n.id;
            for (to, msg) in b.messages.drain(..) {
                self.send_peer(from, to, msg);
            }
            self.nodes[i].spare.push(b.messages);
        }
    }

    #[inline]
    fn send_peer(&mut self, from: NodeId, to: NodeId, msg: P::Message) {
        if to.0 == 0 || to.0 as usize > self.nodes.len() || to == from {
            return;
        }
        if self.byzantine[from.0 as usize - 1]
            && let Some(mut adv) = self.adversary.take()
        {
            let mut forged = Vec::new();
            adv.outgoing(self.now, from, to, msg, &mut forged);
            self.adversary = Some(adv);
            self.send_forged(forged);
            return;
        }
        self.route_peer(from, from, to, msg, 0);
    }

    /// Sends what an adversary produced, physically from `via`.
    fn send_forged(&mut self, forged: Vec<crate::byzantine::Forged<P::Message>>) {
        for f in forged {
            let n = self.nodes.len() as u64;
            if (1..=n).contains(&f.to.0) && (1..=n).contains(&f.via.0) && f.to != f.via {
                self.route_peer(f.via, f.from, f.to, f.msg, f.delay_us);
            }
        }
    }

    /// Puts `msg` (claiming to be from `from`, sent by `via`) on the wire,
    /// `delay_us` after now plus the network's delay.
    fn route_peer(
        &mut self,
        via: NodeId,
        from: NodeId,
        to: NodeId,
        msg: P::Message,
        delay_us: u64,
    ) {
        self.net.count(msg.kind(), msg.size_bytes());
        let now = self.now.0 + delay_us;
        match self.net.route(&mut self.rng, Some((via, to))) {
            Fate::Drop => self.record(TraceKind::Drop, to.0, from.0, msg.kind(), 1),
            Fate::Deliver(d) => self.queue.push(Time(now + d), Ev::Peer { from, to, msg }),
            Fate::Twice(a, b) => {
                self.queue.push(Time(now + a), Ev::Peer { from, to, msg: msg.clone() });
                self.queue.push(Time(now + b), Ev::Peer { from, to, msg });
            }
        }
    }

    // ----- clients --------------------------------------------------------

    fn deliver_request(&mut self, to: NodeId, req: Request) {
        let i = to.0 as usize - 1;
        let n = &mut self.nodes[i];
        if n.core.is_none() {
            self.record(TraceKind::Drop, to.0, 0, "request", req.seq);
            return;
        }
        if n.paused {
            if n.parked.len() < MAX_PARKED {
                n.parked.push_back(Parked::Request(req));
            }
            return;
        }
        self.metrics.events += 1;
        let label = if req.read { "get" } else { "write" };
        let rec = TraceRecord {
            time: self.now,
            kind: TraceKind::Request,
            node: to.0,
            peer: req.client as u64 + 1,
            label,
            value: req.seq,
        };
        self.trace.record(rec);
        let local = n.local_time(self.now);
        let core = n.core.as_mut().expect("checked above");
        let mut forged = Vec::new();
        let result = if req.read && !self.opts.reads_through_log {
            if n.pending_reads.len() >= MAX_PENDING_READS {
                Err(ProposeError::Busy("too many pending reads"))
            } else {
                let id = ReadId(self.next_read_id);
                self.next_read_id += 1;
                let r = core.read(local, id, &mut self.out);
                if r.is_ok() {
                    n.pending_reads
                        .insert(id, PendingRead { client: req.client, seq: req.seq, op: req.op });
                }
                r
            }
        } else {
            let client = ClientId(req.client as u64 + 1);
            let cmd = Command { client, seq: req.seq, op: req.op };
            if self.byzantine[i]
                && let Some(adv) = self.adversary.as_mut()
            {
                adv.request(self.now, to, &cmd, &mut forged);
            }
            let r = core.propose(local, vec![cmd], &mut self.out);
            if r.is_ok() {
                n.pending_writes.insert(client, req.seq);
            }
            r
        };
        if let Err(e) = result {
            let answer = match e {
                ProposeError::NotLeader { hint } => Answer::NotLeader(hint),
                _ => Answer::Busy,
            };
            self.send_reply(i, req.client, req.seq, answer);
        }
        self.after_call(i);
        if !forged.is_empty() {
            self.send_forged(forged);
        }
    }

    fn send_reply(&mut self, node: usize, client: u32, seq: u64, answer: Answer) {
        let from = NodeId(node as u64 + 1);
        let answer = match self.adversary.as_mut() {
            Some(adv) if self.byzantine[node] => match adv.reply(from, answer) {
                Some(a) => a,
                None => return,
            },
            _ => answer,
        };
        match self.net.route(&mut self.rng, None) {
            Fate::Drop => {}
            Fate::Deliver(d) => {
                self.queue.push(Time(self.now.0 + d), Ev::Reply { client, from, seq, answer })
            }
            Fate::Twice(a, b) => {
                let first = Ev::Reply { client, from, seq, answer: answer.clone() };
                self.queue.push(Time(self.now.0 + a), first);
                self.queue.push(Time(self.now.0 + b), Ev::Reply { client, from, seq, answer });
            }
        }
    }

    fn send_request(&mut self, to: usize, req: Request) {
        match self.net.route(&mut self.rng, None) {
            Fate::Drop => {}
            Fate::Deliver(d) => self
                .queue
                .push(Time(self.now.0 + d), Ev::Request { to: NodeId(to as u64 + 1), req }),
            Fate::Twice(a, b) => {
                let first = Ev::Request { to: NodeId(to as u64 + 1), req: req.clone() };
                self.queue.push(Time(self.now.0 + a), first);
                self.queue
                    .push(Time(self.now.0 + b), Ev::Request { to: NodeId(to as u64 + 1), req });
            }
        }
    }

    pub(crate) fn wake_client_at(&mut self, c: usize, at: Time, backoff: bool) {
        let cl = &mut self.clients[c];
        cl.generation += 1;
        cl.backing_off = backoff;
        self.queue.push(at, Ev::ClientWake { client: c as u32, generation: cl.generation });
    }

    fn on_client_wake(&mut self, c: usize, generation: u64) {
        let cl = &mut self.clients[c];
        if cl.generation != generation {
            return;
        }
        self.metrics.events += 1;
        if let Some(cur) = cl.current.as_mut() {
            if !cl.backing_off {
                cur.silent_timeouts += 1;
            }
            if cl.backing_off {
                // The backoff after an answer is over: resend.
            } else if std::mem::take(&mut cl.target_hinted) {
                // Silence from the named leader: resend there once.
                self.metrics.retries += 1;
                let seq = cl.current.as_ref().map_or(0, |f| f.seq);
                self.record(TraceKind::Retry, c as u64 + 1, 0, "timeout, same target", seq);
            } else {
                // Silence: try the next replica with the same request.
                cl.target = (cl.target + 1) % self.nodes.len();
                self.metrics.retries += 1;
                let seq = cl.current.as_ref().map_or(0, |f| f.seq);
                self.record(TraceKind::Retry, c as u64 + 1, 0, "timeout", seq);
            }
            self.client_send(c);
        } else {
            self.start_next_op(c);
        }
    }

    /// Starts client `c`'s next operation, if it has one.
    pub(crate) fn start_next_op(&mut self, c: usize) {
        let cl = &mut self.clients[c];
        let seq = cl.seq + 1;
        let (op, target, key_index) = match &mut cl.workload {
            Workload::Random { remaining } => {
                if *remaining == 0 {
                    return;
                }
                *remaining -= 1;
                let (op, k) = client::random_op(&mut self.rng, &self.clients[c], seq, &self.keys);
                (op, None, Some(k))
            }
            Workload::Manual(q) => match q.pop_front() {
                Some((op, target, hist)) => {
                    let encoded = self.request_op(c, seq, &op);
                    let cl = &mut self.clients[c];
                    cl.seq = seq;
                    let read = matches!(op, KvOp::Get { .. });
                    if let Some(t) = target {
                        cl.target = t.0 as usize - 1;
                        cl.target_hinted = false;
                    }
                    self.history[hist].call = self.now.0;
                    cl.current = Some(InFlight {
                        seq,
                        op,
                        encoded,
                        read,
                        hist,
                        key_index: None,
                        first_call: self.now,
                        attempts: 0,
                        silent_timeouts: 0,
                    });
                    self.client_send(c);
                    return;
                }
                None => return,
            },
        };
        let encoded = self.request_op(c, seq, &op);
        let cl = &mut self.clients[c];
        cl.seq = seq;
        if let Some(t) = target {
            cl.target = t;
        }
        let hist = self.history.len();
        self.history.push(Operation::pending(cl.id.0, op.clone(), self.now.0));
        if !cl.is_probe {
            self.metrics.issued_ops += 1;
        }
        let read = matches!(op, KvOp::Get { .. });
        cl.current = Some(InFlight {
            seq,
            op,
            encoded,
            read,
            hist,
            key_index,
            first_call: self.now,
            attempts: 0,
            silent_timeouts: 0,
        });
        self.client_send(c);
    }

    /// The op client `c` sends as request `seq`: sealed by the protocol
    /// ([`SimProtocol::wrap_request`]) unless it is a get answered by a
    /// read barrier, which never reaches the log.
    fn request_op(&self, c: usize, seq: u64, op: &KvOp) -> Bytes {
        let encoded = op.encode();
        if matches!(op, KvOp::Get { .. }) && !self.opts.reads_through_log {
            return encoded;
        }
        P::wrap_request(&self.config, Command::new(self.clients[c].id, seq, encoded)).op
    }

    fn client_send(&mut self, c: usize) {
        let cl = &mut self.clients[c];
        let Some(cur) = cl.current.as_mut() else { return };
        cur.attempts += 1;
        let req =
            Request { client: c as u32, seq: cur.seq, op: cur.encoded.clone(), read: cur.read };
        let timeout_ms =
            client::attempt_timeout_ms(self.opts.client_timeout_ms, cur.silent_timeouts);
        match self.routing {
            ClientRouting::Leader => {
                let t = cl.target;
                self.send_request(t, req);
            }
            ClientRouting::All { .. } => {
                for t in 0..self.nodes.len() {
                    self.send_request(t, req.clone());
                }
            }
        }
        let at = self.now + std::time::Duration::from_millis(timeout_ms);
        self.wake_client_at(c, at, false);
    }

    fn on_reply(&mut self, c: usize, from: NodeId, seq: u64, answer: Answer) {
        let cl = &mut self.clients[c];
        let Some(cur) = cl.current.as_ref() else { return };
        if cur.seq != seq {
            return;
        }
        self.metrics.events += 1;
        match answer {
            Answer::Value(bytes) => match self.routing {
                ClientRouting::Leader => self.complete(c, from, bytes),
                ClientRouting::All { replies } => {
                    // A replica's newer reply (to a retransmission: a read
                    // served again at a later position) replaces its older.
                    match cl.replies.iter_mut().find(|(n, _)| *n == from) {
                        Some((_, b)) => *b = bytes.clone(),
                        None => cl.replies.push((from, bytes.clone())),
                    }
                    let matching = cl.replies.iter().filter(|(_, b)| *b == bytes).count();
                    if matching >= replies {
                        // Answers that disagreed with the f+1 that decided.
                        let outvoted = (cl.replies.len() - matching) as u64;
                        if outvoted > 0 {
                            *self.metrics.defence.entry("replies outvoted").or_insert(0) +=
                                outvoted;
                        }
                        self.complete(c, from, bytes);
                    }
                }
            },
            Answer::NotLeader(hint) => {
                if self.routing != ClientRouting::Leader {
                    return;
                }
                let n = self.nodes.len();
                let (target, backoff_ms, hinted) = match hint {
                    Some(h) if h.0 >= 1 && h.0 as usize <= n && h != from => {
                        (h.0 as usize - 1, (1, 5), true)
                    }
                    _ => ((cl.target + 1) % n, (20, 60), false),
                };
                cl.target = target;
                cl.target_hinted = hinted;
                self.metrics.retries += 1;
                self.record(TraceKind::Retry, c as u64 + 1, from.0, "not leader", seq);
                let wait = 1000 * self.rng.between(backoff_ms.0, backoff_ms.1);
                self.wake_client_at(c, Time(self.now.0 + wait), true);
            }
            Answer::Busy => {
                self.metrics.retries += 1;
                self.record(TraceKind::Retry, c as u64 + 1, from.0, "busy", seq);
                let wait = 1000 * self.rng.between(10, 50);
                self.wake_client_at(c, Time(self.now.0 + wait), true);
            }
        }
    }

    fn complete(&mut self, c: usize, from: NodeId, bytes: Bytes) {
        let cl = &mut self.clients[c];
        let Some(cur) = cl.current.take() else { return };
        cl.replies.clear();
        let result = match KvResult::decode(&bytes) {
            Ok(r) => r,
            Err(e) => {
                let detail = format!("client {} got an undecodable answer from {from}: {e}", cl.id);
                self.violations
                    .push((self.now, Violation::new("client protocol", Some(from), detail)));
                return;
            }
        };
        let key_index =
            cur.key_index.or_else(|| self.keys.iter().position(|k| op_key(&cur.op) == k));
        if let Some(k) = key_index {
            debug_assert_eq!(op_key(&cur.op), &self.keys[k]);
            match (&cur.op, &result) {
                (KvOp::Get { .. }, KvResult::Value(v)) => cl.last_values[k] = v.clone(),
                (KvOp::Put { value, .. }, KvResult::Done) => {
                    cl.last_values[k] = Some(value.clone())
                }
                (KvOp::Cas { new, .. }, KvResult::Swapped(true)) => {
                    cl.last_values[k] = Some(new.clone())
                }
                _ => cl.last_values[k] = None,
            }
        }
        let h = &mut self.history[cur.hist];
        h.output = Some(result);
        h.ret = Some(self.now.0);
        if !cl.is_probe {
            self.metrics.committed_ops += 1;
            self.metrics.latency.record(self.now.0 - cur.first_call.0);
        }
        self.record(TraceKind::OpDone, c as u64 + 1, from.0, op_name(&cur.op), cur.seq);
        let think = 1000 * self.rng.between(0, self.opts.think_ms);
        self.wake_client_at(c, Time(self.now.0 + think), false);
    }

    // ----- nodes: boot, crash, restart, pause -------------------------------

    fn boot(&mut self, i: usize) {
        let seed = self.rng.next_u64();
        let n = &mut self.nodes[i];
        let local = n.local_time(self.now);
        let core = P::recover(n.id, &self.config, &n.durable, seed, local);
        n.core = Some(core);
        self.load_recovered_snapshot(i);
        self.schedule_tick(i);
    }

    pub(crate) fn crash_node(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.core.is_none() {
            return;
        }
        let pending = n.unsynced.len();
        let kept = if pending > 0 && self.rng.chance(self.opts.fault_config.torn_write_probability)
        {
            self.rng.below(pending as u64 + 1) as usize
        } else {
            0
        };
        let n = &mut self.nodes[i];
        if kept > 0 {
            let writes = n.unsynced.make_contiguous();
            for w in &writes[..kept] {
                P::apply_write(&mut n.durable, w);
            }
            for inv in self.invariants.iter_mut() {
                if let Err(v) = inv.on_synced(n.id, &writes[..kept]) {
                    self.violations.push((self.now, v));
                }
            }
        }
        if n.is_leader {
            self.leaders -= 1;
        }
        if let Some(core) = n.core.as_ref().filter(|_| !self.byzantine[i]) {
            // The counters die with the core's volatile state; keep them.
            for (k, v) in core.defence_counters() {
                *self.metrics.defence.entry(k).or_insert(0) += v;
            }
        }
        n.lose_volatile_state();
        let id = n.id;
        for inv in self.invariants.iter_mut() {
            inv.on_crash(id);
        }
        self.metrics.crashes += 1;
        self.record(TraceKind::Crash, id.0, 0, "", kept as u64);
    }

    pub(crate) fn restart_node(&mut self, i: usize) {
        if self.nodes[i].core.is_some() {
            return;
        }
        self.boot(i);
        let n = &self.nodes[i];
        let core = n.core.as_ref().expect("just booted");
        for inv in self.invariants.iter_mut() {
            if let Err(v) = inv.on_restart(n.id, core) {
                self.violations.push((self.now, v));
            }
        }
        self.record(TraceKind::Restart, i as u64 + 1, 0, "", 0);
    }

    pub(crate) fn pause_node(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.core.is_none() || n.paused {
            return;
        }
        n.paused = true;
        n.tick_gen += 1;
        n.tick_at = None;
    }

    pub(crate) fn resume_node(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if !n.paused {
            return;
        }
        n.paused = false;
        let parked = std::mem::take(&mut n.parked);
        let id = n.id;
        for p in parked {
            match p {
                Parked::Peer { from, msg } => self.deliver_peer(from, id, msg),
                Parked::Request(req) => self.deliver_request(id, req),
                Parked::Synced { upto } => self.on_synced(i, upto),
            }
        }
        self.schedule_tick(i);
    }

    // ----- faults -----------------------------------------------------------

    fn schedule_fault_tick(&mut self) {
        let mean = self.opts.fault_config.mean_interval_ms.max(1);
        let wait = 1000 * self.rng.between(mean / 2, mean + mean / 2);
        let at = Time(self.now.0 + wait);
        if at < self.fault_window_end {
            self.queue.push(at, Ev::FaultTick);
        }
    }

    fn on_fault_tick(&mut self) {
        if self.now >= self.fault_window_end {
            return;
        }
        let view = ClusterView {
            nodes: self.nodes.len(),
            down: self.nodes.iter().map(|n| n.core.is_none()).collect(),
            paused: self.nodes.iter().map(|n| n.paused).collect(),
            leader: self.current_leader(),
            voters: self.voters_in_effect(),
        };
        if let Some(p) =
            faults::next_fault(&mut self.rng, self.opts.faults, &self.opts.fault_config, &view)
        {
            self.apply_fault(&p.action);
            if let Some((after, undo)) = p.undo {
                self.queue.push(Time(self.now.0 + after), Ev::Undo { action: undo });
            }
        }
        self.schedule_fault_tick();
    }

    /// The voters in effect (C_old ∪ C_new) on the live node that knows
    /// the most committed entries; every bootstrap node for protocols
    /// without membership changes.
    fn voters_in_effect(&self) -> Vec<NodeId> {
        let best = self
            .nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .max_by_key(|c| (c.status().commit_index, c.status().id))
            .and_then(|c| c.membership());
        match best {
            Some(m) => m.voters.union(&m.outgoing).copied().collect(),
            None => (1..=self.opts.nodes as u64).map(NodeId).collect(),
        }
    }

    /// Asks leader `l` for the random membership `change`.
    fn churn_membership(&mut self, l: NodeId, change: faults::MembershipChange, pick: u64) {
        let i = l.0 as usize - 1;
        let ids = self.nodes.len();
        let n = &mut self.nodes[i];
        if n.paused {
            return;
        }
        let local = n.local_time(self.now);
        let Some(core) = n.core.as_mut() else { return };
        let Some(m) = core.membership() else { return };
        let Some((voters, learners)) = faults::plan_membership_change(change, &m, l, ids, pick)
        else {
            return;
        };
        let result = core.change_membership(local, &voters, &learners, &mut self.out);
        self.after_call(i);
        let label = if result.is_ok() { "membership change" } else { "membership refused" };
        self.record(TraceKind::Fault, l.0, voters.len() as u64, label, learners.len() as u64);
    }

    /// The live node that is leader in the highest epoch.
    pub(crate) fn current_leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .map(|c| c.status())
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| (s.epoch, s.id))
            .map(|s| s.id)
    }

    /// Carries out one fault or repair.
    pub(crate) fn apply_fault(&mut self, action: &FaultAction) {
        let idx = |n: NodeId| n.0 as usize - 1;
        let (mut a, mut b) = (0, 0);
        match action {
            FaultAction::Crash(n) => {
                a = n.0;
                self.crash_node(idx(*n));
            }
            FaultAction::Restart(n) => {
                a = n.0;
                self.restart_node(idx(*n));
            }
            FaultAction::CrashLeader => {
                if let Some(l) = self.current_leader() {
                    a = l.0;
                    self.crash_node(idx(l));
                }
            }
            FaultAction::Partition(groups) => self.net.partition(groups),
            FaultAction::Isolate(n) => {
                a = n.0;
                self.net.isolate(*n);
            }
            FaultAction::IsolateLeader => {
                if let Some(l) = self.current_leader() {
                    a = l.0;
                    self.net.isolate(l);
                }
            }
            FaultAction::Block { from, to } => {
                (a, b) = (from.0, to.0);
                self.net.block(*from, *to);
            }
            FaultAction::Heal => self.net.heal(),
            FaultAction::HealLinks => self.net.heal_links(),
            FaultAction::Loss(p) => self.net.config.loss = *p,
            FaultAction::Duplicate(p) => self.net.config.duplicate = *p,
            FaultAction::Reorder(p) => self.net.config.reorder = *p,
            FaultAction::Pause(n) => {
                a = n.0;
                self.pause_node(idx(*n));
            }
            FaultAction::Resume(n) => {
                a = n.0;
                self.resume_node(idx(*n));
            }
            FaultAction::Drift { node, ppm } => {
                a = node.0;
                let now = self.now;
                self.nodes[idx(*node)].set_drift(now, *ppm);
                self.nodes[idx(*node)].tick_at = None;
                self.nodes[idx(*node)].tick_gen += 1;
                self.schedule_tick(idx(*node));
            }
            FaultAction::TransferLeader { to } => {
                if let Some(l) = self.current_leader() {
                    let target = to.or_else(|| {
                        let others: Vec<NodeId> = self
                            .nodes
                            .iter()
                            .filter(|n| n.id != l && n.core.is_some())
                            .map(|n| n.id)
                            .collect();
                        (!others.is_empty()).then(|| others[self.rng.index(others.len())])
                    });
                    if let Some(t) = target {
                        (a, b) = (l.0, t.0);
                        self.transfer(l, t);
                    }
                }
            }
            FaultAction::Snapshot(n) => {
                a = n.0;
                let i = idx(*n);
                if !self.nodes[i].paused
                    && let Some(core) = self.nodes[i].core.as_mut()
                {
                    core.trigger_snapshot(&mut self.out);
                    self.after_call(i);
                }
            }
            FaultAction::Partial(step) => {
                let n = self.nodes.len();
                let cut_off = (1..=n as u64).map(NodeId).find(|&x| {
                    (1..=n as u64).all(|y| y == x.0 || self.net.is_blocked(x, NodeId(y)))
                });
                let open = crate::partial::open_links(*step, n, self.current_leader(), cut_off);
                for x in 1..=n as u64 {
                    self.net.isolate(NodeId(x));
                }
                for (x, y) in open {
                    self.net.unblock(x, y);
                    self.net.unblock(y, x);
                }
                self.record(TraceKind::Fault, 0, 0, step.name(), 0);
            }
            FaultAction::ChangeMembership { change, pick } => {
                if let Some(l) = self.current_leader() {
                    a = l.0;
                    self.churn_membership(l, *change, *pick);
                }
            }
        }
        self.record(TraceKind::Fault, a, b, action.name(), 0);
    }

    pub(crate) fn transfer(&mut self, from: NodeId, to: NodeId) -> bool {
        let i = from.0 as usize - 1;
        let n = &mut self.nodes[i];
        if n.paused {
            return false;
        }
        let local = n.local_time(self.now);
        let Some(core) = n.core.as_mut() else { return false };
        let started = core.transfer_leadership(local, to, &mut self.out);
        self.after_call(i);
        started
    }

    /// Heals everything: network, crashed and paused nodes.
    pub(crate) fn heal_everything(&mut self) {
        self.net.heal();
        for i in 0..self.nodes.len() {
            if self.nodes[i].core.is_none() {
                self.restart_node(i);
            }
            if self.nodes[i].paused {
                self.resume_node(i);
            }
        }
        self.record(TraceKind::Fault, 0, 0, "heal everything", 0);
    }
}

fn op_key(op: &KvOp) -> &Bytes {
    match op {
        KvOp::Get { key }
        | KvOp::Put { key, .. }
        | KvOp::Append { key, .. }
        | KvOp::Cas { key, .. } => key,
    }
}

fn op_name(op: &KvOp) -> &'static str {
    match op {
        KvOp::Get { .. } => "get",
        KvOp::Put { .. } => "put",
        KvOp::Append { .. } => "append",
        KvOp::Cas { .. } => "cas",
    }
}

/// The snapshot index node `n`'s core starts from, if any.
fn core_snapshot_index<P: Protocol>(n: &SimNode<P>) -> Option<u64> {
    n.core.as_ref().and_then(|c| c.snapshot()).map(|m| m.index)
}
