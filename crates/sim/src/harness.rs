//! The programmatic harness: what scenario tests call to drive a [`Sim`]
//! by hand — advance time, inject faults, issue operations and look inside.
//!
//! ```no_run
//! use std::time::Duration;
//! use synod_core::kv::KvOp;
//! use synod_raft::RaftNode;
//! use synod_sim::{Sim, SimOptions};
//!
//! let opts = SimOptions { clients: 0, ..SimOptions::default() };
//! let mut sim = Sim::<RaftNode>::new(&opts, 42).unwrap();
//! assert!(sim.run_until(|s| s.leader().is_some(), Duration::from_secs(5)));
//! let leader = sim.leader().unwrap();
//! sim.isolate(leader);
//! let op = sim.submit(KvOp::Put { key: "x".into(), value: "1".into() });
//! assert!(sim.wait(op, Duration::from_secs(10)).is_some());
//! assert!(sim.check_linearizable().is_ok());
//! assert!(sim.violations().is_empty());
//! ```

use crate::client::{Client, Workload};
use crate::faults::FaultAction;
use crate::invariant::Violation;
use crate::metrics::Metrics;
use crate::protocol::SimProtocol;
use crate::sim::Sim;
use std::collections::VecDeque;
use std::time::Duration;
use synod_core::kv::{KvOp, KvResult};
use synod_core::{Command, Committed, NodeId, ProposeError, Status, Time};
use synod_lincheck::{Budget, CheckResult, KvModel, Operation};

/// A handle on an operation issued with [`Sim::submit`]: its position in the
/// history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId(pub usize);

impl<P: SimProtocol> Sim<P> {
    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The options the simulation was built with.
    pub fn options(&self) -> &SimOptions {
        &self.opts
    }

    /// Current global virtual time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Number of replicas (ids `1..=nodes()`).
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Runs every event up to `now + d` (a violation does not stop it; see
    /// [`violations`](Sim::violations)).
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until_time(end);
    }

    /// Runs every event up to global time `end`, then sets the clock to `end`.
    pub fn run_until_time(&mut self, end: Time) {
        while self.queue.peek_time().is_some_and(|t| t <= end) {
            self.step();
        }
        if end > self.now {
            self.advance_to(end);
        }
    }

    /// Runs until `cond` holds (checked before each event) or `timeout` of
    /// virtual time passes. Returns whether `cond` held.
    pub fn run_until(&mut self, mut cond: impl FnMut(&Sim<P>) -> bool, timeout: Duration) -> bool {
        let end = self.now + timeout;
        loop {
            if cond(self) {
                return true;
            }
            match self.queue.peek_time() {
                Some(t) if t <= end => {
                    self.step();
                }
                _ => {
                    if end > self.now {
                        self.advance_to(end);
                    }
                    return cond(self);
                }
            }
        }
    }

    fn index(&self, node: NodeId) -> usize {
        assert!(
            node.0 >= 1 && node.0 as usize <= self.nodes.len(),
            "{node} is not a node of this {}-node cluster",
            self.nodes.len()
        );
        node.0 as usize - 1
    }

    /// Crashes `node`: its core and volatile state are dropped, unsynced
    /// writes lost (or a random prefix kept, per
    /// `fault_config.torn_write_probability`).
    pub fn crash(&mut self, node: NodeId) {
        let _ = self.index(node);
        self.apply_fault(&FaultAction::Crash(node));
    }

    /// Restarts a crashed `node` from its durable state.
    pub fn restart(&mut self, node: NodeId) {
        let _ = self.index(node);
        self.apply_fault(&FaultAction::Restart(node));
    }

    /// Splits the replicas into `groups` (a replica in no group is cut off).
    pub fn partition(&mut self, groups: &[&[u64]]) {
        let groups = groups.iter().map(|g| g.iter().map(|&x| NodeId(x)).collect()).collect();
        self.apply_fault(&FaultAction::Partition(groups));
    }

    /// Cuts `node` off from every other replica, both ways.
    pub fn isolate(&mut self, node: NodeId) {
        let _ = self.index(node);
        self.apply_fault(&FaultAction::Isolate(node));
    }

    /// Blocks the directed link `from → to`.
    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.apply_fault(&FaultAction::Block { from, to });
    }

    /// Unblocks the directed link `from → to`.
    pub fn unblock(&mut self, from: NodeId, to: NodeId) {
        self.net.unblock(from, to);
    }

    /// True when messages from `from` to `to` are blocked.
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.net.is_blocked(from, to)
    }

    /// Opens every link and restores the base loss, duplication and
    /// reordering rates (crashed and paused nodes stay so).
    pub fn heal(&mut self) {
        self.apply_fault(&FaultAction::Heal);
    }

    /// Heals everything: the network, and restarts crashed and resumes
    /// paused nodes.
    pub fn heal_all(&mut self) {
        self.heal_everything();
    }

    /// Sets the probability a message is lost.
    pub fn set_loss(&mut self, p: f64) {
        self.apply_fault(&FaultAction::Loss(p));
    }

    /// Sets the probability a message is delivered twice.
    pub fn set_duplication(&mut self, p: f64) {
        self.apply_fault(&FaultAction::Duplicate(p));
    }

    /// Sets the probability a message takes a long detour of up to
    /// `long_delay` (reordering it).
    pub fn set_reordering(&mut self, p: f64, long_delay: Duration) {
        self.net.config.long_delay_us = long_delay.as_micros() as u64;
        self.apply_fault(&FaultAction::Reorder(p));
    }

    /// Sets the base one-way latency and jitter.
    pub fn set_latency(&mut self, latency: Duration, jitter: Duration) {
        self.net.config.latency_us = latency.as_micros() as u64;
        self.net.config.jitter_us = jitter.as_micros() as u64;
    }

    /// Pauses `node`: it handles nothing until resumed.
    pub fn pause(&mut self, node: NodeId) {
        let _ = self.index(node);
        self.apply_fault(&FaultAction::Pause(node));
    }

    /// Resumes a paused `node`; what reached it meanwhile is delivered now.
    pub fn resume(&mut self, node: NodeId) {
        let _ = self.index(node);
        self.apply_fault(&FaultAction::Resume(node));
    }

    /// Stalls `node`'s disk for `d`: every write it issues from now on
    /// becomes durable no sooner than `d` from now (and so do the messages
    /// queued behind it); fsyncs already under way finish as planned.
    pub fn stall_disk(&mut self, node: NodeId, d: Duration) {
        let i = self.index(node);
        let until = self.now + d;
        let n = &mut self.nodes[i];
        n.last_sync_at = n.last_sync_at.max(until);
    }

    /// Sets `node`'s clock rate to `1 + ppm / 1e6`.
    pub fn set_drift(&mut self, node: NodeId, ppm: i64) {
        let _ = self.index(node);
        self.apply_fault(&FaultAction::Drift { node, ppm });
    }

    /// Asks the current leader to hand leadership to `to`. Returns whether a
    /// transfer started.
    pub fn transfer_leader(&mut self, to: NodeId) -> bool {
        match self.current_leader() {
            Some(l) => self.transfer(l, to),
            None => false,
        }
    }

    /// Asks the current leader to change the membership to `voters` and
    /// `learners` (ids of this simulation's nodes, spares included).
    pub fn change_membership(&mut self, voters: &[u64], learners: &[u64]) -> Result<(), String> {
        let leader = self.current_leader().ok_or("no leader")?;
        let i = self.index(leader);
        let voters = voters.iter().map(|&v| NodeId(v)).collect();
        let learners = learners.iter().map(|&v| NodeId(v)).collect();
        let n = &mut self.nodes[i];
        let local = n.local_time(self.now);
        let core = n.core.as_mut().ok_or("leader down")?;
        let r = core.change_membership(local, &voters, &learners, &mut self.out);
        self.after_call(i);
        r
    }

    /// The live node that is leader with the highest epoch, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.current_leader()
    }

    /// The live nodes that consider themselves leader, with their epochs.
    pub fn leaders(&self) -> Vec<(NodeId, u64)> {
        self.nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .map(|c| c.status())
            .filter(|s| s.role == synod_core::Role::Leader)
            .map(|s| (s.id, s.epoch))
            .collect()
    }

    /// `node`'s status, or `None` while it is crashed.
    pub fn status(&self, node: NodeId) -> Option<Status> {
        self.core(node).map(|c| c.status())
    }

    /// `node`'s core, or `None` while it is crashed.
    pub fn core(&self, node: NodeId) -> Option<&P> {
        self.nodes[self.index(node)].core.as_ref()
    }

    /// True when `node` is running (not crashed; it may be paused).
    pub fn is_up(&self, node: NodeId) -> bool {
        self.core(node).is_some()
    }

    /// True when `node` is paused.
    pub fn is_paused(&self, node: NodeId) -> bool {
        self.nodes[self.index(node)].paused
    }

    /// What `node` would recover from if it crashed now.
    pub fn durable(&self, node: NodeId) -> &P::Durable {
        &self.nodes[self.index(node)].durable
    }

    /// Writes `node` has issued that are not yet synced.
    pub fn unsynced_writes(&self, node: NodeId) -> usize {
        self.nodes[self.index(node)].unsynced.len()
    }

    /// Every position `node` applied since it last (re)started, in order.
    /// Needs [`SimOptions::keep_applied_log`](crate::SimOptions) (on by
    /// default).
    pub fn committed_on(&self, node: NodeId) -> &[Committed] {
        assert!(self.opts.keep_applied_log, "committed_on needs keep_applied_log");
        &self.nodes[self.index(node)].applied_log
    }

    /// The value of `key` in `node`'s copy of the state machine.
    pub fn kv_get(&self, node: NodeId, key: &[u8]) -> Option<bytes::Bytes> {
        self.nodes[self.index(node)].sessions.machine().get(key).cloned()
    }

    /// Asks `node`'s core directly (no network, no client) to order
    /// `command`. The answer, if it commits, goes to no client.
    pub fn propose(&mut self, node: NodeId, command: Command) -> Result<(), ProposeError> {
        let i = self.index(node);
        let n = &mut self.nodes[i];
        let local = n.local_time(self.now);
        let Some(core) = n.core.as_mut() else {
            return Err(ProposeError::NotLeader { hint: None });
        };
        let command = P::wrap_request(&self.config, command);
        let r = core.propose(local, vec![command], &mut self.out);
        self.after_call(i);
        r
    }

    /// Issues `op` from an idle harness client, routed like any client
    /// (leader first, following hints, retrying until answered).
    pub fn submit(&mut self, op: KvOp) -> OpId {
        self.submit_inner(op, None)
    }

    /// Like [`submit`](Sim::submit), but tries `node` first.
    pub fn submit_to(&mut self, node: NodeId, op: KvOp) -> OpId {
        let _ = self.index(node);
        self.submit_inner(op, Some(node))
    }

    fn submit_inner(&mut self, op: KvOp, target: Option<NodeId>) -> OpId {
        let idle = self.clients.iter().position(|c| {
            matches!(&c.workload, Workload::Manual(q) if q.is_empty()) && c.current.is_none()
        });
        let c = match idle {
            Some(c) => c,
            None => {
                let c = self.clients.len();
                let workload = Workload::Manual(VecDeque::new());
                self.clients.push(Client::new(c, workload, 0, self.keys.len()));
                c
            }
        };
        let hist = self.history.len();
        self.history.push(Operation::pending(self.clients[c].id.0, op.clone(), self.now.0));
        if let Workload::Manual(q) = &mut self.clients[c].workload {
            q.push_back((op, target, hist));
        }
        self.start_next_op(c);
        OpId(hist)
    }

    /// The operation's record: its input, call time and — once answered —
    /// output and return time.
    pub fn op(&self, id: OpId) -> &Operation<KvOp, KvResult> {
        &self.history[id.0]
    }

    /// The operation's answer, if it has one yet.
    pub fn result(&self, id: OpId) -> Option<&KvResult> {
        self.history[id.0].output.as_ref()
    }

    /// Runs until the operation is answered or `timeout` passes; returns the
    /// answer.
    pub fn wait(&mut self, id: OpId, timeout: Duration) -> Option<KvResult> {
        self.run_until(|s| s.history[id.0].output.is_some(), timeout);
        self.history[id.0].output.clone()
    }

    /// True when every client (workload and harness) has nothing left to do.
    pub fn clients_done(&self) -> bool {
        self.clients.iter().all(|c| c.is_done())
    }

    /// The client history so far (operations never answered have no output).
    pub fn history(&self) -> &[Operation<KvOp, KvResult>] {
        &self.history
    }

    /// Checks the history for linearizability against the key-value model.
    pub fn check_linearizable(&self) -> CheckResult {
        synod_lincheck::check(&KvModel, &self.history, Budget::steps(self.opts.lincheck_max_steps))
    }

    /// Adds a checker (e.g. a test's own property) to the ones running.
    pub fn add_invariant(&mut self, invariant: Box<dyn crate::invariant::Invariant<P>>) {
        self.invariants.push(invariant);
    }

    /// Every invariant violation seen so far.
    pub fn violations(&self) -> Vec<&Violation> {
        self.violations.iter().map(|(_, v)| v).collect()
    }

    /// The metrics so far (virtual time and message counts filled in).
    pub fn metrics(&self) -> Metrics {
        let mut m = self.metrics.clone();
        m.virtual_us = self.now.0;
        m.by_kind = self.net.by_kind().to_vec();
        m.dropped_messages = self.net.dropped;
        m.duplicated_messages = self.net.duplicated;
        m.auth = P::auth_work(&self.config);
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(core) = n.core.as_ref().filter(|_| !self.byzantine[i]) {
                for (k, v) in core.defence_counters() {
                    *m.defence.entry(k).or_insert(0) += v;
                }
            }
        }
        if let Some(adv) = &self.adversary {
            for (k, v) in adv.counters() {
                *m.attack.entry(k).or_insert(0) += v;
            }
        }
        m
    }

    /// A hash of every event so far: equal for equal (options, seed).
    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }

    /// The last events, oldest first, as text.
    pub fn recent_events(&self) -> Vec<String> {
        self.trace.recent_lines()
    }
}

use crate::options::SimOptions;
