//! `synod sim --compare`: the same workload and the same fault schedule,
//! seed for seed, on several protocols, summed up in one table (text or
//! JSON).
//!
//! Every protocol runs the options given (clients, operations, faults,
//! fault window, network) with the same seeds. Only the cluster size may
//! differ: crash-tolerant protocols (Raft, Multi-Paxos) run `--nodes n`
//! servers and tolerate `f = (n - 1) / 2` crashes; PBFT runs `3f + 1`
//! servers for the *same* `f` (Byzantine faults), so every column survives
//! the same number of faulty servers ([`nodes_for`]).
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
//!   liveness then).

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

/// Servers that `kind` runs with when the crash-tolerant protocols run
/// `nodes`: the same number for Raft and Multi-Paxos, `3f + 1` for PBFT
/// with the same `f = (nodes - 1) / 2`.
pub fn nodes_for(kind: ProtocolKind, nodes: usize) -> usize {
    match kind {
        ProtocolKind::Pbft => 3 * (nodes.saturating_sub(1) / 2) + 1,
        ProtocolKind::Raft | ProtocolKind::Paxos => nodes,
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
}

/// The outcome of a comparison.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// The options every protocol ran with (`protocol` and, for PBFT,
    /// `nodes` replaced).
    pub options: SimOptions,
    /// The seeds.
    pub seeds: Range<u64>,
    /// One column per protocol, in the order asked.
    pub rows: Vec<ProtocolRow>,
}

/// Runs `seeds` of `opts` on every protocol of `protocols` (on `threads` OS
/// threads), plus one calibration run each for the message delays.
pub fn compare(
    opts: &SimOptions,
    protocols: &[ProtocolKind],
    seeds: Range<u64>,
    threads: usize,
) -> Comparison {
    let rows = protocols
        .iter()
        .map(|&kind| {
            let o =
                SimOptions { protocol: kind, nodes: nodes_for(kind, opts.nodes), ..opts.clone() };
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
    Comparison { options: opts.clone(), seeds, rows }
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

impl Comparison {
    /// True when every seed of every protocol passed.
    pub fn all_passed(&self) -> bool {
        self.rows.iter().all(|r| r.summary.all_passed())
    }

    /// The comparison as JSON: `faults`, `seeds` (`first`, `last`),
    /// `clients`, `ops_per_client`, `all_passed`, and `protocols`, one
    /// object per protocol with `protocol`, `nodes`, `tolerates_f`,
    /// `fault_model`, `seeds`, `passed`, `messages_per_command`,
    /// `message_delays_to_commit`, `throughput_ops_per_sec`, `latency_us`,
    /// `elections`, `elections_per_seed`, `leaderless_ms`,
    /// `leaderless_ms_per_seed`, `recovery` (null, or `seeds`,
    /// `recovered`, `after_strike_us`, `p50_election_timeouts`,
    /// `max_election_timeouts`) and `summary` ([`Summary::to_json`]).
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
                    "summary": r.summary.to_json(),
                })
            })
            .collect();
        serde_json::json!({
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
        let mut s = format!(
            "synod sim --compare: faults {}, {} clients x {} ops, seeds {}..{} ({} per protocol)\n\n",
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
             ET = election timeout ({ELECTION_TIMEOUT_MS} ms). PBFT runs 3f+1 servers for the same f.\n"
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
        assert_eq!(nodes_for(ProtocolKind::Pbft, 5), 7);
        assert_eq!(nodes_for(ProtocolKind::Paxos, 5), 5);
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
        let a = compare(&o, &[ProtocolKind::Raft, ProtocolKind::Paxos], 3..4, 1);
        let b = compare(&o, &[ProtocolKind::Raft, ProtocolKind::Paxos], 3..4, 1);
        for (x, y) in a.rows.iter().zip(&b.rows) {
            assert_eq!(x.summary.metrics.committed_ops, y.summary.metrics.committed_ops);
            assert_eq!(
                x.summary.metrics.messages_and_bytes(),
                y.summary.metrics.messages_and_bytes()
            );
        }
    }

    #[test]
    fn partial_profiles_report_recovery_per_seed() {
        let c = compare(
            &small(FaultProfile::QuorumLoss),
            &[ProtocolKind::Paxos, ProtocolKind::Raft],
            1..3,
            2,
        );
        for r in &c.rows {
            let rec = r.recovery.as_ref().expect("a partial profile measures recovery");
            assert_eq!(rec.seeds, 2);
        }
        assert!(c.render().contains("recovered in partial window"));
    }
}
