//! Helpers shared by the scenario modules: building a fault-free simulated
//! Raft cluster, electing, proposing, waiting, comparing what nodes applied,
//! counting messages, and a small seeded generator for random fault choices.

use bytes::Bytes;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
use synod_core::kv::{KvOp, KvResult};
use synod_core::{ClientId, Command, NodeId, Output, Role};
use synod_raft::{Message, RaftNode, Write};
use synod_sim::{Invariant, Metrics, Sim, SimOptions, StepView, Violation};

/// The simulated Raft cluster every scenario drives.
pub type RaftSim = Sim<RaftNode>;

/// Options for a cluster of `nodes` with no random faults and no workload
/// clients (the test issues every operation itself).
pub fn quiet(nodes: usize) -> SimOptions {
    SimOptions { nodes, clients: 0, ..SimOptions::default() }
}

/// A fault-free cluster of `nodes` for `seed`.
pub fn cluster(nodes: usize, seed: u64) -> RaftSim {
    Sim::<RaftNode>::new(&quiet(nodes), seed).expect("valid options")
}

/// Every node id of `sim`.
pub fn all(sim: &RaftSim) -> Vec<NodeId> {
    (1..=sim.nodes() as u64).map(NodeId).collect()
}

/// Every node id of `sim` except `but`.
pub fn others(sim: &RaftSim, but: &[NodeId]) -> Vec<NodeId> {
    all(sim).into_iter().filter(|n| !but.contains(n)).collect()
}

/// The raw ids of `nodes`, for [`Sim::partition`].
pub fn raw(nodes: &[NodeId]) -> Vec<u64> {
    nodes.iter().map(|n| n.0).collect()
}

/// A put of `key` = `value`.
pub fn put(key: &str, value: &str) -> KvOp {
    KvOp::Put { key: Bytes::from(key.to_string()), value: Bytes::from(value.to_string()) }
}

/// A get of `key`.
pub fn get(key: &str) -> KvOp {
    KvOp::Get { key: Bytes::from(key.to_string()) }
}

/// An append of `value` to `key`.
pub fn append(key: &str, value: &str) -> KvOp {
    KvOp::Append { key: Bytes::from(key.to_string()), value: Bytes::from(value.to_string()) }
}

/// A command from the test's own client session `client` (pick ids far
/// from the harness clients', which count from 1).
pub fn command(client: u64, seq: u64, op: &KvOp) -> Command {
    Command::new(ClientId(client), seq, op.encode())
}

/// The current term of `node` (panics if it is down).
pub fn term(sim: &RaftSim, node: NodeId) -> u64 {
    sim.core(node).unwrap_or_else(|| panic!("{node} is down")).term()
}

/// The role of `node`, `None` while down.
pub fn role(sim: &RaftSim, node: NodeId) -> Option<Role> {
    sim.status(node).map(|s| s.role)
}

/// The live leader with the highest term among `group`, if any.
pub fn leader_in(sim: &RaftSim, group: &[NodeId]) -> Option<NodeId> {
    sim.leaders()
        .into_iter()
        .filter(|(n, _)| group.contains(n))
        .max_by_key(|&(n, term)| (term, n))
        .map(|(n, _)| n)
}

/// True when `leader` leads and has committed an entry of its term (its
/// no-op), i.e. it is fully in office.
pub fn in_office(sim: &RaftSim, leader: NodeId) -> bool {
    sim.core(leader)
        .is_some_and(|c| c.role() == Role::Leader && c.term_at(c.commit_index()) == Some(c.term()))
}

/// Runs until some node of `group` leads and has committed its no-op;
/// returns it. Panics after `within`.
pub fn elect_in(sim: &mut RaftSim, group: &[NodeId], within: Duration) -> NodeId {
    let ok = sim.run_until(|s| leader_in(s, group).is_some_and(|l| in_office(s, l)), within);
    assert!(ok, "no leader in {group:?} within {within:?} (seed {})", sim.seed());
    leader_in(sim, group).expect("checked")
}

/// Runs until a leader is in office anywhere; returns it.
pub fn elect(sim: &mut RaftSim) -> NodeId {
    let everyone = all(sim);
    elect_in(sim, &everyone, Duration::from_secs(3))
}

/// Submits `op` through a harness client and waits up to `within` for its
/// answer, which must come.
pub fn submit_wait(sim: &mut RaftSim, op: KvOp, within: Duration) -> KvResult {
    let id = sim.submit(op.clone());
    sim.wait(id, within)
        .unwrap_or_else(|| panic!("{op:?} got no answer within {within:?} (seed {})", sim.seed()))
}

/// Runs until every node of `nodes` has applied up to `index`.
pub fn run_until_applied(
    sim: &mut RaftSim,
    nodes: &[NodeId],
    index: u64,
    within: Duration,
) -> bool {
    sim.run_until(
        |s| nodes.iter().all(|&n| s.status(n).is_some_and(|st| st.applied_index >= index)),
        within,
    )
}

/// Panics, with the recent events, if any safety checker fired.
pub fn assert_safe(sim: &RaftSim) {
    let v = sim.violations();
    if !v.is_empty() {
        let events = sim.recent_events();
        let tail = &events[events.len().saturating_sub(60)..];
        panic!(
            "seed {}: safety violations:\n{}\nlast events:\n{}",
            sim.seed(),
            v.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n"),
            tail.join("\n")
        );
    }
}

/// Panics when two live nodes lead the same term.
pub fn assert_one_leader_per_term(sim: &RaftSim) {
    let mut by_term = BTreeMap::new();
    for (n, term) in sim.leaders() {
        if let Some(other) = by_term.insert(term, n) {
            panic!("seed {}: {other} and {n} both lead term {term}", sim.seed());
        }
    }
}

/// Panics unless the nodes' applied sequences agree position by position
/// (same command, or both a no-op, wherever both applied it).
pub fn assert_applied_agree(sim: &RaftSim) {
    let mut seen: BTreeMap<u64, (NodeId, Option<Command>)> = BTreeMap::new();
    for n in all(sim) {
        for c in sim.committed_on(n) {
            match seen.get(&c.index) {
                Some((m, cmd)) => assert_eq!(
                    cmd,
                    &c.command,
                    "seed {}: {m} and {n} applied different commands at {}",
                    sim.seed(),
                    c.index
                ),
                None => {
                    seen.insert(c.index, (n, c.command.clone()));
                }
            }
        }
    }
}

/// Panics unless `a` and `b` hold the same term at every index both still
/// hold (below a snapshot an index may be compacted away) and end at the
/// same index.
pub fn assert_logs_match(sim: &RaftSim, a: NodeId, b: NodeId) {
    let (ca, cb) = (sim.core(a).expect("up"), sim.core(b).expect("up"));
    assert_eq!(ca.last_index(), cb.last_index(), "seed {}: {a} and {b} logs end apart", sim.seed());
    let from = ca.purged_index().max(cb.purged_index()) + 1;
    for i in from..=ca.last_index() {
        assert_eq!(ca.term_at(i), cb.term_at(i), "seed {}: {a} and {b} differ at {i}", sim.seed());
    }
}

/// Panics unless the nodes of `nodes` have converged: whatever they applied
/// agrees position by position, they applied up to the same index, and
/// their logs match. (What a node applied one position at a time may be
/// partial: a snapshot installed from the leader skips ahead.)
pub fn assert_converged(sim: &RaftSim, nodes: &[NodeId]) {
    assert_applied_agree(sim);
    let applied = |n: NodeId| sim.status(n).expect("up").applied_index;
    for &n in &nodes[1..] {
        assert_eq!(
            applied(n),
            applied(nodes[0]),
            "seed {}: {n} and {} applied up to different indexes",
            sim.seed(),
            nodes[0]
        );
        assert_logs_match(sim, nodes[0], n);
    }
}

/// Commands (not no-ops) `node` applied, in order.
pub fn applied_commands(sim: &RaftSim, node: NodeId) -> Vec<Command> {
    sim.committed_on(node).iter().filter_map(|c| c.command.clone()).collect()
}

/// Messages of `kind` (see `synod_core::Message::kind`) sent so far.
pub fn sent(m: &Metrics, kind: &str) -> u64 {
    m.by_kind.iter().find(|k| k.kind == kind).map_or(0, |k| k.messages)
}

/// Messages of every kind sent so far.
pub fn sent_total(m: &Metrics) -> u64 {
    m.messages_and_bytes().0
}

/// Messages of each kind sent between two metric snapshots.
pub fn sent_between(before: &Metrics, after: &Metrics) -> BTreeMap<&'static str, u64> {
    after
        .by_kind
        .iter()
        .map(|k| (k.kind, k.messages - sent(before, k.kind)))
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// Counts the AppendEntries rejections (`AppendEntriesResponse { success:
/// false }`) nodes produce, as they produce them: a checker that never
/// fires, it only watches.
#[derive(Clone, Default)]
pub struct RejectionCounter(Rc<Cell<u64>>);

impl RejectionCounter {
    /// Installs a counter in `sim` and returns a handle on its count.
    pub fn install(sim: &mut RaftSim) -> RejectionCounter {
        let c = RejectionCounter::default();
        sim.add_invariant(Box::new(c.clone()));
        c
    }

    /// Rejections so far.
    pub fn rejected(&self) -> u64 {
        self.0.get()
    }
}

impl Invariant<RaftNode> for RejectionCounter {
    fn name(&self) -> &'static str {
        "rejection counter (test instrumentation)"
    }

    fn after_step(&mut self, step: &StepView<'_, RaftNode>) -> Result<(), Violation> {
        let out: &Output<Message, Write> = step.output;
        let rejections = out
            .messages
            .iter()
            .filter(|(_, m)| matches!(m, Message::AppendEntriesResponse { success: false, .. }))
            .count();
        self.0.set(self.0.get() + rejections as u64);
        Ok(())
    }
}

/// A small seeded generator (SplitMix64) for a test's random choices, so
/// that they are fixed by the test's seed and independent of the
/// simulator's own stream.
pub struct TestRng(u64);

impl TestRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> TestRng {
        TestRng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// `k` distinct elements of `from`, in a random order.
    pub fn choose<T: Copy>(&mut self, from: &[T], k: usize) -> Vec<T> {
        let mut v = from.to_vec();
        for i in 0..k.min(v.len()) {
            let j = i + self.below((v.len() - i) as u64) as usize;
            v.swap(i, j);
        }
        v.truncate(k);
        v
    }
}

/// Shorthand for milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Shorthand for seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Runs until every node has applied everything the current leader has
/// committed (as of the call). Returns whether that happened within
/// `within`; false when there is no leader.
pub fn all_catch_up(sim: &mut RaftSim, within: Duration) -> bool {
    let Some(leader) = sim.leader() else { return false };
    let target = sim.status(leader).expect("a leader is up").commit_index;
    let everyone = all(sim);
    run_until_applied(sim, &everyone, target, within)
}

/// The seeds a randomized scenario runs: `1..=default`, or `1..=N` when
/// the environment sets `SCENARIO_SEEDS=N` (for a longer hunt:
/// `SCENARIO_SEEDS=500 cargo test --release -p synod-sim --test
/// raft_scenarios`).
pub fn seeds(default: u64) -> std::ops::RangeInclusive<u64> {
    let n = std::env::var("SCENARIO_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    1..=n
}
