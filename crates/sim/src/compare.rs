//! `synod sim --compare`: the same workload and the same fault schedule,
//! seed for seed, on several protocols, summed up in one table (text or
//! JSON).
//!
//! Every protocol runs the options given (clients, operations, faults,
//! fault window, network) with the same seeds. Only the cluster size may
//! differ, as the comparison's [`CompareBy`] says ([`nodes_for`]):
//!
//! - **same f**: crash-tolerant protocols (Raft, Multi-Paxos) run `--nodes
//!   n` servers and tolerate `f = (n - 1) / 2` crashes; PBFT runs `3f + 1`
//!   servers for the *same* `f` (Byzantine faults), so every column
//!   survives the same number of faulty servers (n = 3 beside n = 4 for
//!   f = 1);
//! - **same n**: every protocol runs the same number of servers (each then
//!   tolerates what its quorums allow).
//!
//! [`CompareMode::Both`] (the CLI's default) runs the same-f comparison and
//! then a same-n one at PBFT's size from it (`3f + 1`: 4, 4, 4 for f = 1),
//! so both tables describe clusters that survive at least f faults
//! ([`plan`]).
//!
//! What each row means:
//!
//! - **messages / command**: replica-to-replica messages (heartbeats,
//!   retransmissions and elections included) over client commands answered,
//!   in the compared run;
//! - **message delays to commit**: measured in a separate calibration run
//!   per protocol — fault-free, one client issuing one operation at a time
//!   with no think time, every link exactly 1 ms one way (no jitter), fsync
//!   instant, every operation through the log. A client operation then takes
//!   `(k + 2)` one-way delays: the request, `k` delays inside the cluster
//!   until the command is committed and applied where the answer comes
//!   from, and the reply. The row shows `k = median latency / 1 ms − 2`,
//!   over the operations after the first ten (the first ones find the
//!   leader). Raft and Multi-Paxos: 2 (accept, accepted); PBFT: 3
//!   (pre-prepare, prepare, commit);
//! - **throughput, latency**: committed client operations per second of
//!   virtual time, and client-observed latency percentiles (first call to
//!   answer, retries included), over every seed;
//! - **elections**: times any server became leader (primary), summed and
//!   per seed; **leaderless**: virtual time during which no live server
//!   believed it led, per seed;
//! - **recovery** (partial-connectivity profiles only, see
//!   [`crate::partial`]): in how many seeds the cluster committed a new
//!   position while the partial topology held, and how long after the
//!   strike, in election timeouts of [`ELECTION_TIMEOUT_MS`] (the lower
//!   bound of the Raft and Multi-Paxos election timeouts in the simulator;
//!   PBFT's view-change timeout is 300 ms). A seed that never recovers
//!   during the window is reported as such: that protocol deadlocked or
//!   livelocked in the schedule (the run still heals at the end and checks
//!   liveness then);
//! - **authentication** (PBFT): MACs computed and verified, Ed25519
//!   signatures made and verified by replicas, client request signatures
//!   made (by clients) and verified (by replicas), per command answered,
//!   and the CPU time those calls took, *measured* in the compared run
//!   itself: the simulating thread's CPU-time clock read around each call,
//!   less the clock's own cost measured when the run starts
//!   ([`synod_pbft::auth_meter`], [`crate::protocols::pbft::thread_cpu_ns`]);
//!   CPU time, so other processes on a shared machine do not inflate it.
//!   Replicas' figures cover MACs, replica signatures and the verification
//!   of client requests; clients' signing is its own row. Every replica
//!   verifies every signature
//!   it relies on, as a deployment does: the simulator's shared memo of
//!   verifications ([`synod_pbft::shared_checks`]) is off in comparisons
//!   ([`SimOptions::measure_auth`]). Raft and Multi-Paxos authenticate no
//!   message (0, scheme `none`): in a deployment their TCP transport
//!   authenticates a peer once, when it connects (an HMAC challenge over
//!   the cluster secret, `crates/transport/src/handshake.rs`), and the
//!   messages after that carry no MAC. *Not counted*: replies to clients.
//!   The simulated clients accept f+1 matching replies without
//!   authenticating them (the core has no reply path); `synod serve` signs
//!   each reply with Ed25519 and its clients verify them
//!   (`crates/node/src/pbft_reply.rs`), one more signature per replica and
//!   at least f+1 verifications at the client per command.

use crate::metrics::{Histogram, Metrics};
use crate::net::NetConfig;
use crate::options::{ProtocolKind, SimOptions};
use crate::partial;
use crate::protocol::SimProtocol;
use crate::run::{Failure, SeedFailure, SeedReport, Summary};
use crate::sim::Sim;
use std::ops::Range;
use std::time::Instant;
use synod_core::{NodeId, Time};
use synod_pbft::AuthWork;

/// The unit of recovery times: the lower bound of the election timeout of
/// Raft and Multi-Paxos in the simulator.
pub const ELECTION_TIMEOUT_MS: u64 = 150;

/// Client operations in the calibration run that measures message delays.
const CALIBRATION_OPS: usize = 60;
/// Calibration operations skipped at the start (finding the leader).
const CALIBRATION_WARMUP: usize = 10;
/// The one-way delay of every link in the calibration run.
const CALIBRATION_LATENCY_US: u64 = 1_000;

/// Parses `raft,paxos[,pbft]`: known names, no repeats, at least two.
pub fn parse_list(s: &str) -> Result<Vec<ProtocolKind>, String> {
    if s.trim().is_empty() {
        return Err("empty list: name at least two protocols, e.g. raft,paxos,pbft".into());
    }
    let mut kinds = Vec::new();
    for name in s.split(',').map(str::trim) {
        let kind = ProtocolKind::parse(name)?;
        if kinds.contains(&kind) {
            return Err(format!("`{name}` is listed twice"));
        }
        kinds.push(kind);
    }
    if kinds.len() < 2 {
        return Err(format!("name at least two protocols to compare (got `{s}`)"));
    }
    Ok(kinds)
}

/// How the protocols' cluster sizes are matched in one comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareBy {
    /// The same number of faults tolerated: `n` servers for Raft and
    /// Multi-Paxos (`f = (n - 1) / 2` crashes), `3f + 1` for PBFT (`f`
    /// Byzantine).
    SameF,
    /// The same number of servers for every protocol.
    SameN,
}

impl CompareBy {
    /// `"f"` or `"n"`.
    pub fn name(self) -> &'static str {
        match self {
            CompareBy::SameF => "f",
            CompareBy::SameN => "n",
        }
    }
}

/// Which comparisons `synod sim --compare` runs (`--compare-by`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompareMode {
    /// Same f only.
    F,
    /// Same n only.
    N,
    /// Same f, then same n at PBFT's size (the default).
    #[default]
    Both,
}

impl CompareMode {
    /// Parses `f`, `n` or `both`.
    pub fn parse(s: &str) -> Result<CompareMode, String> {
        match s {
            "f" => Ok(CompareMode::F),
            "n" => Ok(CompareMode::N),
            "both" => Ok(CompareMode::Both),
            _ => Err(format!("unknown comparison `{s}` (expected f, n or both)")),
        }
    }
}

/// The comparisons `mode` runs for `--nodes nodes`, in order: `(how,
/// nodes)` to hand to [`compare`]. `Both` runs the same-n comparison at
/// the largest cluster of the same-f one (PBFT's `3f + 1`), so that every
/// protocol in it also tolerates at least `f` faults.
///
/// ```
/// use synod_sim::compare::{CompareBy, CompareMode, plan};
/// assert_eq!(plan(CompareMode::Both, 3), [(CompareBy::SameF, 3), (CompareBy::SameN, 4)]);
/// assert_eq!(plan(CompareMode::N, 5), [(CompareBy::SameN, 5)]);
/// ```
pub fn plan(mode: CompareMode, nodes: usize) -> Vec<(CompareBy, usize)> {
    match mode {
        CompareMode::F => vec![(CompareBy::SameF, nodes)],
        CompareMode::N => vec![(CompareBy::SameN, nodes)],
        CompareMode::Both => vec![
            (CompareBy::SameF, nodes),
            (CompareBy::SameN, nodes_for(ProtocolKind::Pbft, nodes, CompareBy::SameF)),
        ],
    }
}

/// Servers that `kind` runs with in a comparison `by` with `--nodes
/// nodes`: `nodes` for everyone with [`CompareBy::SameN`]; with
/// [`CompareBy::SameF`], `nodes` for Raft and Multi-Paxos and `3f + 1` for
/// PBFT with the same `f = (nodes - 1) / 2`.
pub fn nodes_for(kind: ProtocolKind, nodes: usize, by: CompareBy) -> usize {
    match (kind, by) {
        (ProtocolKind::Pbft, CompareBy::SameF) => 3 * (nodes.saturating_sub(1) / 2) + 1,
        _ => nodes,
    }
}

/// Faulty servers `kind` survives with `nodes` servers, and of which kind.
pub fn tolerates(kind: ProtocolKind, nodes: usize) -> (usize, &'static str) {
    match kind {
        ProtocolKind::Pbft => (nodes.saturating_sub(1) / 3, "byzantine"),
        ProtocolKind::Raft | ProtocolKind::Paxos => (nodes.saturating_sub(1) / 2, "crash"),
    }
}

/// Recovery under a partial-connectivity schedule, over seeds.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds in which the cluster committed while the topology held.
    pub recovered: u64,
    /// Time from the strike to that commit, in microseconds.
    pub after_strike: Histogram,
}

impl Recovery {
    /// A recovery time in election timeouts.
    fn timeouts(us: u64) -> f64 {
        us as f64 / (ELECTION_TIMEOUT_MS * 1000) as f64
    }

    /// The verdict as a short phrase.
    pub fn verdict(&self) -> String {
        if self.recovered == 0 {
            format!("never (0/{} seeds: deadlock or livelock)", self.seeds)
        } else {
            let p = self.after_strike.summary();
            format!(
                "{}/{} seeds, p50 {:.1} max {:.1} ET",
                self.recovered,
                self.seeds,
                Self::timeouts(p.p50_us),
                Self::timeouts(p.max_us)
            )
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let p = self.after_strike.summary();
        serde_json::json!({
            "seeds": self.seeds,
            "recovered": self.recovered,
            "after_strike_us": p,
            "p50_election_timeouts": Self::timeouts(p.p50_us),
            "max_election_timeouts": Self::timeouts(p.max_us),
        })
    }
}

/// One protocol's column.
#[derive(Clone, Debug)]
pub struct ProtocolRow {
    /// The protocol.
    pub protocol: ProtocolKind,
    /// Servers it ran with.
    pub nodes: usize,
    /// Faulty servers it survives.
    pub tolerates: usize,
    /// `"crash"` or `"byzantine"`.
    pub fault_model: &'static str,
    /// The seeds' verdicts and summed metrics.
    pub summary: Summary,
    /// Message delays from the request's arrival to commit (see the module
    /// doc); `None` when the calibration run did not finish.
    pub delays_to_commit: Option<f64>,
    /// Recovery, for the partial-connectivity profiles.
    pub recovery: Option<Recovery>,
}

impl ProtocolRow {
    fn leaderless_ms_per_seed(&self) -> f64 {
        let s = self.summary.seeds.max(1) as f64;
        self.summary.metrics.leaderless_us as f64 / 1000.0 / s
    }

    fn elections_per_seed(&self) -> f64 {
        self.summary.metrics.elections as f64 / self.summary.seeds.max(1) as f64
    }

    /// The authentication scheme: PBFT's MAC authenticators and Ed25519
    /// signatures, or none.
    pub fn auth_scheme(&self) -> &'static str {
        match self.protocol {
            ProtocolKind::Pbft => "MAC+Ed25519",
            ProtocolKind::Raft | ProtocolKind::Paxos => "none",
        }
    }

    /// The authentication work measured (zero for protocols without).
    pub fn auth(&self) -> AuthWork {
        self.summary.metrics.auth.unwrap_or_default()
    }

    /// `count` per client command answered.
    fn per_command(&self, count: u64) -> f64 {
        count as f64 / self.summary.metrics.committed_ops.max(1) as f64
    }

    /// Microseconds of replica authentication CPU per command answered.
    pub fn auth_replica_us_per_command(&self) -> f64 {
        self.per_command(self.auth().replica_ns()) / 1000.0
    }

    /// Microseconds of client signing per command answered.
    pub fn auth_client_us_per_command(&self) -> f64 {
        self.per_command(self.auth().client_sign_ns) / 1000.0
    }

    fn auth_json(&self) -> serde_json::Value {
        let a = self.auth();
        let us = |ns: u64| ns as f64 / 1000.0;
        serde_json::json!({
            "scheme": self.auth_scheme(),
            "verification": if self.protocol == ProtocolKind::Pbft {
                "every-replica"
            } else {
                "none (TCP transport: peer authenticated at connect only)"
            },
            "macs_computed": a.macs_computed,
            "macs_verified": a.macs_verified,
            "replica_signatures_made": a.signatures_made,
            "replica_signatures_verified": a.signatures_verified,
            "client_signatures_made": a.client_signatures_made,
            "client_signatures_verified": a.client_signatures_verified,
            "shared_memo_hits": a.shared_memo_hits,
            "not_counted": if self.protocol == ProtocolKind::Pbft {
                "reply signatures (made by replicas, checked by clients in synod serve)"
            } else {
                ""
            },
            "mac_cpu_us": us(a.mac_ns),
            "replica_signature_cpu_us": us(a.signature_ns),
            "client_verify_cpu_us": us(a.client_verify_ns),
            "client_sign_cpu_us": us(a.client_sign_ns),
            "replica_cpu_us": us(a.replica_ns()),
            "sim_wall_us": self.summary.metrics.wall_secs * 1e6,
            "per_command": {
                "macs_computed": self.per_command(a.macs_computed),
                "macs_verified": self.per_command(a.macs_verified),
                "replica_signatures_made": self.per_command(a.signatures_made),
                "replica_signatures_verified": self.per_command(a.signatures_verified),
                "client_signatures_made": self.per_command(a.client_signatures_made),
                "client_signatures_verified": self.per_command(a.client_signatures_verified),
                "replica_cpu_us": self.auth_replica_us_per_command(),
                "client_cpu_us": self.auth_client_us_per_command(),
            },
        })
    }
}

/// The outcome of a comparison.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// How cluster sizes were matched.
    pub by: CompareBy,
    /// The options every protocol ran with (`protocol` and, for PBFT with
    /// [`CompareBy::SameF`], `nodes` replaced).
    pub options: SimOptions,
    /// The seeds.
    pub seeds: Range<u64>,
    /// One column per protocol, in the order asked.
    pub rows: Vec<ProtocolRow>,
}

/// Runs `seeds` of `opts` on every protocol of `protocols` (on `threads` OS
/// threads), with cluster sizes matched as `by` says, plus one calibration
/// run each for the message delays. Authentication work is measured
/// ([`SimOptions::measure_auth`]).
pub fn compare(
    opts: &SimOptions,
    protocols: &[ProtocolKind],
    seeds: Range<u64>,
    threads: usize,
    by: CompareBy,
) -> Comparison {
    let rows = protocols
        .iter()
        .map(|&kind| {
            let o = SimOptions {
                protocol: kind,
                nodes: nodes_for(kind, opts.nodes, by),
                measure_auth: true,
                ..opts.clone()
            };
            let (summary, recovery) = match kind {
                ProtocolKind::Raft => run_all::<synod_raft::RaftNode>(&o, seeds.clone(), threads),
                ProtocolKind::Paxos => {
                    run_all::<synod_paxos::PaxosNode>(&o, seeds.clone(), threads)
                }
                ProtocolKind::Pbft => run_all::<synod_pbft::PbftNode>(&o, seeds.clone(), threads),
            };
            let delays_to_commit = match kind {
                ProtocolKind::Raft => calibrate::<synod_raft::RaftNode>(&o),
                ProtocolKind::Paxos => calibrate::<synod_paxos::PaxosNode>(&o),
                ProtocolKind::Pbft => calibrate::<synod_pbft::PbftNode>(&o),
            };
            let (tolerates, fault_model) = tolerates(kind, o.nodes);
            ProtocolRow {
                protocol: kind,
                nodes: o.nodes,
                tolerates,
                fault_model,
                summary,
                delays_to_commit,
                recovery,
            }
        })
        .collect();
    Comparison { by, options: opts.clone(), seeds, rows }
}

/// Options as a protocol runs them (PBFT answers gets through the log, as
/// in [`crate::run_seed`]).
fn effective(opts: &SimOptions) -> SimOptions {
    let mut o = opts.clone();
    if o.protocol == ProtocolKind::Pbft {
        o.reads_through_log = true;
    }
    o
}

/// The highest position any live server has applied, and the highest it
/// holds or applied.
fn positions<P: SimProtocol>(sim: &Sim<P>) -> (u64, u64) {
    let mut applied = 0;
    let mut held = 0;
    for i in 1..=sim.nodes() as u64 {
        if let Some(s) = sim.status(NodeId(i)) {
            applied = applied.max(s.applied_index);
            held = held.max(s.applied_index).max(s.commit_index).max(s.last_index);
        }
    }
    (applied, held)
}

/// Runs one seed to its verdict; for a partial-connectivity profile also
/// measures the recovery (`Some(None)`: none while the topology held).
fn run_one<P: SimProtocol>(opts: &SimOptions, seed: u64) -> (SeedReport, Option<Option<u64>>) {
    let started = Instant::now();
    let opts = effective(opts);
    let mut sim = match opts.validate().and_then(|()| Sim::<P>::new(&opts, seed)) {
        Ok(s) => s,
        Err(e) => {
            let failure = Failure {
                property: "options".into(),
                node: None,
                detail: e,
                at_us: 0,
                recent_events: Vec::new(),
                replay: opts.replay_command(seed),
            };
            let report = SeedReport {
                seed,
                passed: false,
                violation: Some(failure),
                metrics: Metrics::default(),
                trace_hash: 0,
            };
            return (report, None);
        }
    };
    let recovery = partial::is_partial(opts.faults).then(|| {
        let strike = Time::from_millis(partial::STRIKE_MS);
        let quiet = Time::from_millis(opts.quiet_from_ms());
        // Run to the strike (events at the strike instant excluded).
        while sim.queue.peek_time().is_some_and(|t| t < strike) && sim.violations.is_empty() {
            sim.step();
        }
        let (_, baseline) = positions(&sim);
        let mut recovered = None;
        while sim.queue.peek_time().is_some_and(|t| t < quiet) && sim.violations.is_empty() {
            sim.step();
            if positions(&sim).0 > baseline && sim.now() >= strike {
                recovered = Some(sim.now().0 - strike.0);
                break;
            }
        }
        recovered
    });
    let violation = sim.run_to_verdict();
    let mut metrics = sim.metrics();
    metrics.wall_secs = started.elapsed().as_secs_f64();
    let report = SeedReport {
        seed,
        passed: violation.is_none(),
        violation,
        metrics,
        trace_hash: sim.trace_hash(),
    };
    (report, recovery)
}

/// Every seed of `seeds` with protocol `P`, on `threads` threads.
fn run_all<P: SimProtocol>(
    opts: &SimOptions,
    seeds: Range<u64>,
    threads: usize,
) -> (Summary, Option<Recovery>) {
    let started = Instant::now();
    let count = seeds.end.saturating_sub(seeds.start) as usize;
    let threads = threads.clamp(1, count.max(1));
    let next = std::sync::atomic::AtomicU64::new(seeds.start);
    let mut results: Vec<(SeedReport, Option<Option<u64>>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let s = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if s >= seeds.end {
                            return mine;
                        }
                        mine.push(run_one::<P>(opts, s));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a simulation thread panicked")).collect()
    });
    results.sort_by_key(|(r, _)| r.seed);
    let mut metrics = Metrics::default();
    let mut violations = Vec::new();
    let mut passed = 0;
    let mut recovery: Option<Recovery> = None;
    for (r, rec) in &results {
        metrics.merge(&r.metrics);
        match &r.violation {
            None => passed += 1,
            Some(f) => violations.push(SeedFailure { seed: r.seed, failure: f.clone() }),
        }
        if let Some(rec) = rec {
            let total = recovery.get_or_insert_with(Recovery::default);
            total.seeds += 1;
            if let Some(us) = rec {
                total.recovered += 1;
                total.after_strike.record(*us);
            }
        }
    }
    let summary = Summary {
        protocol: opts.protocol.name(),
        seeds: results.len() as u64,
        passed,
        violations,
        metrics,
        wall_secs: started.elapsed().as_secs_f64(),
    };
    (summary, recovery)
}

/// Message delays from a request's arrival to its commit, measured as the
/// module doc says; `None` if too few operations finished.
fn calibrate<P: SimProtocol>(opts: &SimOptions) -> Option<f64> {
    let o = SimOptions {
        faults: crate::FaultProfile::None,
        scenario: None,
        bug: None,
        clients: 1,
        ops_per_client: CALIBRATION_OPS,
        think_ms: 0,
        net: NetConfig {
            latency_us: CALIBRATION_LATENCY_US,
            jitter_us: 0,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            ..opts.net.clone()
        },
        fsync_min_us: 0,
        fsync_max_us: 0,
        reads_through_log: true,
        check_linearizability: false,
        ..opts.clone()
    };
    let mut sim = Sim::<P>::new(&o, 1).ok()?;
    sim.run_to_verdict();
    let mut latencies: Vec<u64> = sim
        .history()
        .iter()
        .filter(|op| op.client <= o.clients as u64)
        .filter_map(|op| op.ret.map(|r| r - op.call))
        .skip(CALIBRATION_WARMUP)
        .collect();
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    let median = latencies[latencies.len() / 2];
    Some(median as f64 / CALIBRATION_LATENCY_US as f64 - 2.0)
}

/// Several comparisons (`--compare-by both`) as one JSON object:
/// `all_passed` and `comparisons`, one [`Comparison::to_json`] each.
pub fn to_json_all(comparisons: &[Comparison]) -> serde_json::Value {
    serde_json::json!({
        "all_passed": comparisons.iter().all(Comparison::all_passed),
        "comparisons": comparisons.iter().map(Comparison::to_json).collect::<Vec<_>>(),
    })
}

/// Several comparisons as text: each table in turn.
pub fn render_all(comparisons: &[Comparison]) -> String {
    comparisons.iter().map(Comparison::render).collect::<Vec<_>>().join("\n")
}

impl Comparison {
    /// True when every seed of every protocol passed.
    pub fn all_passed(&self) -> bool {
        self.rows.iter().all(|r| r.summary.all_passed())
    }

    /// The comparison as JSON: `compare_by` (`"f"` or `"n"`), `nodes`
    /// (`--nodes`), `faults`, `seeds` (`first`, `last`), `clients`,
    /// `ops_per_client`, `all_passed`, and `protocols`, one object per
    /// protocol with `protocol`, `nodes`, `tolerates_f`, `fault_model`,
    /// `seeds`, `passed`, `messages_per_command`,
    /// `message_delays_to_commit`, `throughput_ops_per_sec`, `latency_us`,
    /// `elections`, `elections_per_seed`, `leaderless_ms`,
    /// `leaderless_ms_per_seed`, `recovery` (null, or `seeds`,
    /// `recovered`, `after_strike_us`, `p50_election_timeouts`,
    /// `max_election_timeouts`), `authentication` (`scheme`,
    /// `verification`, the counts `macs_computed`, `macs_verified`,
    /// `replica_signatures_made`, `replica_signatures_verified`,
    /// `client_signatures_made`, `client_signatures_verified`,
    /// `shared_memo_hits`, the measured times `mac_cpu_us`,
    /// `replica_signature_cpu_us`, `client_verify_cpu_us`,
    /// `client_sign_cpu_us`, `replica_cpu_us`, the simulation's
    /// `sim_wall_us`, and `per_command` ratios) and `summary`
    /// ([`Summary::to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        let protocols: Vec<_> = self
            .rows
            .iter()
            .map(|r| {
                let m = &r.summary.metrics;
                serde_json::json!({
                    "protocol": r.protocol.name(),
                    "nodes": r.nodes,
                    "tolerates_f": r.tolerates,
                    "fault_model": r.fault_model,
                    "seeds": r.summary.seeds,
                    "passed": r.summary.passed,
                    "messages_per_command": m.messages_per_op(),
                    "message_delays_to_commit": r.delays_to_commit,
                    "throughput_ops_per_sec": m.throughput_ops_per_sec(),
                    "latency_us": m.latency.summary(),
                    "elections": m.elections,
                    "elections_per_seed": r.elections_per_seed(),
                    "leaderless_ms": m.leaderless_us / 1000,
                    "leaderless_ms_per_seed": r.leaderless_ms_per_seed(),
                    "recovery": r.recovery.as_ref().map(Recovery::to_json),
                    "authentication": r.auth_json(),
                    "summary": r.summary.to_json(),
                })
            })
            .collect();
        serde_json::json!({
            "compare_by": self.by.name(),
            "nodes": self.options.nodes,
            "faults": self.options.faults.name(),
            "seeds": { "first": self.seeds.start, "last": self.seeds.end.saturating_sub(1) },
            "clients": self.options.clients,
            "ops_per_client": self.options.ops_per_client,
            "election_timeout_ms": ELECTION_TIMEOUT_MS,
            "all_passed": self.all_passed(),
            "protocols": protocols,
        })
    }

    /// The comparison as a text table, one column per protocol, then every
    /// failed seed with its replay command.
    pub fn render(&self) -> String {
        let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
        let mut lines: Vec<(&str, Vec<String>)> = vec![
            ("", self.rows.iter().map(|r| r.protocol.name().to_string()).collect()),
            (
                "servers (faults tolerated)",
                self.rows
                    .iter()
                    .map(|r| format!("{} (f={} {})", r.nodes, r.tolerates, r.fault_model))
                    .collect(),
            ),
            (
                "seeds passed",
                self.rows
                    .iter()
                    .map(|r| format!("{}/{}", r.summary.passed, r.summary.seeds))
                    .collect(),
            ),
            (
                "messages / command",
                self.rows
                    .iter()
                    .map(|r| format!("{:.1}", r.summary.metrics.messages_per_op()))
                    .collect(),
            ),
            (
                "message delays to commit",
                self.rows
                    .iter()
                    .map(|r| r.delays_to_commit.map_or("-".into(), |d| format!("{d:.1}")))
                    .collect(),
            ),
            (
                "throughput (ops/s virtual)",
                self.rows
                    .iter()
                    .map(|r| format!("{:.1}", r.summary.metrics.throughput_ops_per_sec()))
                    .collect(),
            ),
        ];
        for (name, pick) in [
            ("latency p50 (ms)", 0usize),
            ("latency p90 (ms)", 1),
            ("latency p99 (ms)", 2),
            ("latency max (ms)", 3),
        ] {
            let cells = self
                .rows
                .iter()
                .map(|r| {
                    let p = r.summary.metrics.latency.summary();
                    ms([p.p50_us, p.p90_us, p.p99_us, p.max_us][pick])
                })
                .collect();
            lines.push((name, cells));
        }
        lines.push((
            "elections (per seed)",
            self.rows
                .iter()
                .map(|r| format!("{} ({:.1})", r.summary.metrics.elections, r.elections_per_seed()))
                .collect(),
        ));
        lines.push((
            "leaderless ms per seed",
            self.rows.iter().map(|r| format!("{:.1}", r.leaderless_ms_per_seed())).collect(),
        ));
        lines.push((
            "authentication",
            self.rows.iter().map(|r| r.auth_scheme().to_string()).collect(),
        ));
        let pair = |r: &ProtocolRow, a: u64, b: u64, digits: usize| {
            format!("{:.digits$} / {:.digits$}", r.per_command(a), r.per_command(b))
        };
        lines.push((
            "MACs made / checked per cmd",
            self.rows
                .iter()
                .map(|r| pair(r, r.auth().macs_computed, r.auth().macs_verified, 1))
                .collect(),
        ));
        lines.push((
            "replica sigs made / checked per cmd",
            self.rows
                .iter()
                .map(|r| pair(r, r.auth().signatures_made, r.auth().signatures_verified, 2))
                .collect(),
        ));
        lines.push((
            "client sigs made / checked per cmd",
            self.rows
                .iter()
                .map(|r| {
                    let a = r.auth();
                    pair(r, a.client_signatures_made, a.client_signatures_verified, 2)
                })
                .collect(),
        ));
        lines.push((
            "auth CPU us per cmd, replicas",
            self.rows.iter().map(|r| format!("{:.1}", r.auth_replica_us_per_command())).collect(),
        ));
        lines.push((
            "auth CPU us per cmd, client",
            self.rows.iter().map(|r| format!("{:.1}", r.auth_client_us_per_command())).collect(),
        ));
        if self.rows.iter().any(|r| r.recovery.is_some()) {
            lines.push((
                "recovered in partial window",
                self.rows
                    .iter()
                    .map(|r| r.recovery.as_ref().map_or("-".into(), Recovery::verdict))
                    .collect(),
            ));
        }
        let label = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let width: Vec<usize> = (0..self.rows.len())
            .map(|c| lines.iter().map(|(_, cells)| cells[c].len()).max().unwrap_or(0))
            .collect();
        let sizes = match self.by {
            CompareBy::SameF => format!(
                "same f (f={}: Raft and Multi-Paxos {} servers, PBFT 3f+1 = {})",
                (self.options.nodes.saturating_sub(1)) / 2,
                self.options.nodes,
                nodes_for(ProtocolKind::Pbft, self.options.nodes, CompareBy::SameF)
            ),
            CompareBy::SameN => format!("same n ({} servers each)", self.options.nodes),
        };
        let mut s = format!(
            "synod sim --compare, {sizes}: faults {}, {} clients x {} ops, seeds {}..{} ({} per protocol)\n\n",
            self.options.faults.name(),
            self.options.clients,
            self.options.ops_per_client,
            self.seeds.start,
            self.seeds.end.saturating_sub(1),
            self.seeds.end.saturating_sub(self.seeds.start),
        );
        for (name, cells) in &lines {
            s.push_str(&format!("{name:<label$}"));
            for (c, cell) in cells.iter().enumerate() {
                s.push_str(&format!("  {cell:>w$}", w = width[c]));
            }
            s.push('\n');
        }
        s.push_str(&format!(
            "\nmessage delays: fault-free calibration, 1 client, 1 ms links, no jitter, \
             instant fsync: median latency / 1 ms - 2 (request and reply).\n\
             ET = election timeout ({ELECTION_TIMEOUT_MS} ms).\n\
             auth: counts per command answered; CPU time measured in this run (thread CPU clock \
             around each MAC and signature call, the clock's own cost subtracted); every replica \
             verifies every signature (no shared memo). Raft and Multi-Paxos authenticate no \
             message: deployed, their TCP transport authenticates a peer at connect only.\n\
             not counted: reply signatures (simulated clients count f+1 matching replies without \
             them; `synod serve` adds one Ed25519 signature per reply and f+1 checks per client).\n"
        ));
        for r in &self.rows {
            for v in &r.summary.violations {
                let f = &v.failure;
                s.push_str(&format!(
                    "\nFAIL {} seed {}: {} — {}\n  replay: {}\n",
                    r.protocol.name(),
                    v.seed,
                    f.property,
                    f.detail,
                    f.replay
                ));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FaultProfile;

    fn small(faults: FaultProfile) -> SimOptions {
        SimOptions { faults, clients: 3, ops_per_client: 20, ..SimOptions::default() }
    }

    #[test]
    fn lists_parse_and_pbft_gets_3f_plus_1() {
        assert_eq!(parse_list("raft,paxos"), Ok(vec![ProtocolKind::Raft, ProtocolKind::Paxos]));
        assert!(parse_list("raft").unwrap_err().contains("at least two"));
        assert!(parse_list("raft,raft").unwrap_err().contains("twice"));
        assert!(parse_list("raft,zab").unwrap_err().contains("zab"));
        assert!(parse_list("").unwrap_err().contains("empty list"));
        assert!(parse_list("raft,").unwrap_err().contains("unknown protocol"));
        assert_eq!(nodes_for(ProtocolKind::Pbft, 5, CompareBy::SameF), 7);
        assert_eq!(nodes_for(ProtocolKind::Pbft, 3, CompareBy::SameF), 4);
        assert_eq!(nodes_for(ProtocolKind::Paxos, 5, CompareBy::SameF), 5);
        assert_eq!(nodes_for(ProtocolKind::Pbft, 5, CompareBy::SameN), 5);
        assert_eq!(plan(CompareMode::F, 3), [(CompareBy::SameF, 3)]);
        assert_eq!(plan(CompareMode::Both, 5), [(CompareBy::SameF, 5), (CompareBy::SameN, 7)]);
        assert_eq!(CompareMode::parse("both"), Ok(CompareMode::Both));
        assert!(CompareMode::parse("x").unwrap_err().contains("f, n or both"));
        assert_eq!(tolerates(ProtocolKind::Pbft, 7), (2, "byzantine"));
        assert_eq!(tolerates(ProtocolKind::Raft, 5), (2, "crash"));
    }

    #[test]
    fn fault_free_comparison_shows_two_delays_for_raft_and_paxos() {
        let c = compare(
            &small(FaultProfile::None),
            &[ProtocolKind::Raft, ProtocolKind::Paxos],
            1..3,
            2,
            CompareBy::SameF,
        );
        assert!(c.all_passed(), "{}", c.render());
        for r in &c.rows {
            let d = r.delays_to_commit.expect("calibrated");
            assert!((1.9..2.6).contains(&d), "{}: {d} delays\n{}", r.protocol.name(), c.render());
            assert_eq!(r.summary.metrics.committed_ops, 2 * 3 * 20);
            assert!(r.recovery.is_none());
        }
        let text = c.render();
        assert!(text.contains("message delays to commit") && text.contains("paxos"), "{text}");
        let j = c.to_json();
        assert_eq!(j["protocols"][1]["protocol"], "paxos");
        assert_eq!(j["protocols"][0]["tolerates_f"], 2);
        assert!(j["protocols"][0]["messages_per_command"].as_f64().is_some_and(|m| m > 0.0));
    }

    #[test]
    fn the_same_seed_gives_the_same_comparison() {
        let o = small(FaultProfile::Net);
        let kinds = [ProtocolKind::Raft, ProtocolKind::Paxos, ProtocolKind::Pbft];
        let a = compare(&o, &kinds, 3..4, 1, CompareBy::SameF);
        let b = compare(&o, &kinds, 3..4, 1, CompareBy::SameF);
        for (x, y) in a.rows.iter().zip(&b.rows) {
            assert_eq!(x.summary.metrics.committed_ops, y.summary.metrics.committed_ops);
            assert_eq!(
                x.summary.metrics.messages_and_bytes(),
                y.summary.metrics.messages_and_bytes()
            );
            // Authentication counts are deterministic; only their times vary.
            let (ax, ay) = (x.auth(), y.auth());
            assert_eq!(
                (ax.macs_computed, ax.signatures_verified, ax.client_signatures_verified),
                (ay.macs_computed, ay.signatures_verified, ay.client_signatures_verified)
            );
        }
    }

    const ALL: [ProtocolKind; 3] = [ProtocolKind::Raft, ProtocolKind::Paxos, ProtocolKind::Pbft];

    /// Both comparisons of the default `--compare-by both` for f = 1: PBFT
    /// at 4 beside 3, then everyone at 4; PBFT pays for authentication and
    /// Raft does not; at the same n PBFT's all-to-all phases send more
    /// messages per command than Raft's leader-to-followers round.
    #[test]
    fn pbft_joins_both_comparisons_with_its_authentication_cost() {
        let o = SimOptions { nodes: 3, ..small(FaultProfile::None) };
        let runs: Vec<Comparison> = plan(CompareMode::Both, o.nodes)
            .into_iter()
            .map(|(by, nodes)| compare(&SimOptions { nodes, ..o.clone() }, &ALL, 1..3, 2, by))
            .collect();
        let text = render_all(&runs);
        for (c, sizes) in runs.iter().zip([[3, 3, 4], [4, 4, 4]]) {
            assert!(c.all_passed(), "{text}");
            assert_eq!(c.rows.iter().map(|r| r.nodes).collect::<Vec<_>>(), sizes, "{text}");
            let [raft, paxos, pbft] = [&c.rows[0], &c.rows[1], &c.rows[2]];
            assert_eq!(pbft.tolerates, 1, "{text}");
            for crash in [raft, paxos] {
                assert_eq!(crash.auth(), AuthWork::default(), "{text}");
                assert_eq!(crash.auth_scheme(), "none");
            }
            let a = pbft.auth();
            assert!(a.macs_computed > 0 && a.macs_verified > 0, "{a:?}");
            assert!(a.client_signatures_verified > 0 && a.client_signatures_made > 0, "{a:?}");
            assert!(pbft.auth_replica_us_per_command() > 0.0, "{text}");
            assert_eq!(a.shared_memo_hits, 0, "every replica verifies itself");
            // Each of n replicas verifies each request's signature once.
            let ops = pbft.summary.metrics.committed_ops;
            assert!(a.client_signatures_verified >= ops * pbft.nodes as u64, "{a:?} for {ops}");
            let d = pbft.delays_to_commit.expect("calibrated");
            assert!((2.9..3.6).contains(&d), "pbft: {d} delays\n{text}");
        }
        let same_n = &runs[1];
        let (raft, pbft) = (&same_n.rows[0], &same_n.rows[2]);
        assert!(
            pbft.summary.metrics.messages_per_op() > 2.0 * raft.summary.metrics.messages_per_op(),
            "PBFT is all-to-all, Raft leader-to-followers:\n{text}"
        );
        assert!(text.contains("same f (f=1") && text.contains("same n (4 servers each)"), "{text}");
        assert!(text.contains("auth CPU us per cmd, replicas"), "{text}");
        let j = to_json_all(&runs);
        assert_eq!(j["all_passed"], true);
        assert_eq!(j["comparisons"][0]["compare_by"], "f");
        assert_eq!(j["comparisons"][1]["compare_by"], "n");
        let pbft_json = &j["comparisons"][0]["protocols"][2];
        assert_eq!(pbft_json["protocol"], "pbft");
        assert_eq!(pbft_json["nodes"], 4);
        assert_eq!(pbft_json["authentication"]["verification"], "every-replica");
        let cpu = &pbft_json["authentication"]["per_command"]["replica_cpu_us"];
        assert!(cpu.as_f64().is_some_and(|us| us > 0.0), "{pbft_json}");
        let raft_json = &j["comparisons"][1]["protocols"][0];
        assert_eq!(raft_json["authentication"]["scheme"], "none");
        assert_eq!(raft_json["authentication"]["replica_cpu_us"], 0.0);
    }

    /// Metering (and turning the shared memo off with it) changes no
    /// decision: the same seed has the same trace either way.
    #[test]
    fn measuring_authentication_changes_no_decision() {
        let o = SimOptions { protocol: ProtocolKind::Pbft, nodes: 4, ..small(FaultProfile::All) };
        let plain = crate::run_seed(&o, 5);
        let measured = crate::run_seed(&SimOptions { measure_auth: true, ..o }, 5);
        assert!(plain.passed && measured.passed);
        assert_eq!(plain.trace_hash, measured.trace_hash);
        assert!(plain.metrics.auth.is_none());
        assert!(measured.metrics.auth.is_some_and(|a| a.macs_computed > 0));
    }

    #[test]
    fn partial_profiles_report_recovery_per_seed() {
        let c = compare(
            &small(FaultProfile::QuorumLoss),
            &[ProtocolKind::Paxos, ProtocolKind::Raft],
            1..3,
            2,
            CompareBy::SameF,
        );
        for r in &c.rows {
            let rec = r.recovery.as_ref().expect("a partial profile measures recovery");
            assert_eq!(rec.seeds, 2);
        }
        assert!(c.render().contains("recovered in partial window"));
    }
}
