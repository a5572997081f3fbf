//! Whole runs: [`run_seed`] runs one seed from start to verdict, and
//! [`run_seeds`] runs a range of seeds on several threads and sums them up.
//!
//! A run has three phases. The *fault window* (`fault_window_ms`, or until
//! just after the last scenario step): clients work while faults strike.
//! Then everything heals (network, crashed and paused nodes) and the
//! *liveness probe* starts: a fresh command must commit within
//! `liveness_bound_ms`. Then every client must finish its operations
//! before `max_time_ms`. With [`SimOptions::check_views_converge`], for a
//! protocol whose views must converge
//! ([`SimProtocol::views_converge`], PBFT), every correct replica must
//! then be in one view under one leader within `liveness_bound_ms` (a
//! correct replica left alone in another view is reported as a liveness
//! failure: the cluster lost a replica's worth of margin). Safety checkers
//! run throughout; the first violation
//! ends the run. At the end the client history is checked for
//! linearizability (an undecided check counts as a failure).

use crate::client::{Client, Workload};
use crate::metrics::Metrics;
use crate::options::{ProtocolKind, SimOptions};
use crate::protocol::SimProtocol;
use crate::sim::Sim;
use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};
use synod_core::kv::KvOp;
use synod_core::{NodeId, Time};
use synod_lincheck::CheckResult;

/// The property a run that used up its event budget
/// ([`SimOptions::event_budget`]) fails with: it was stopped before its
/// verdict, and says so instead of running on.
pub const EVENT_BUDGET_PROPERTY: &str = "event budget";

/// The property a run fails with when a node's core panicked (an
/// assertion inside a protocol core stopped it).
pub const PANIC_PROPERTY: &str = "panic";

/// Why a run failed.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// The broken property: an invariant's name, `"linearizability"`,
    /// `"linearizability (unknown)"`, `"liveness"`, `"options"`,
    /// [`EVENT_BUDGET_PROPERTY`] or [`PANIC_PROPERTY`].
    pub property: String,
    /// The node it was seen at, if one.
    pub node: Option<u64>,
    /// What exactly went wrong.
    pub detail: String,
    /// Virtual time at which it was seen, in microseconds.
    pub at_us: u64,
    /// The last events before it (oldest first).
    pub recent_events: Vec<String>,
    /// The command that replays this run.
    pub replay: String,
}

/// The outcome of one seed.
#[derive(Clone, Debug)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// No violation, linearizable, live.
    pub passed: bool,
    /// The first failure, if any.
    pub violation: Option<Failure>,
    /// The run's metrics.
    pub metrics: Metrics,
    /// Hash of the full event trace (equal for equal options and seed).
    pub trace_hash: u64,
}

/// Runs one seed with the protocol named in `opts`.
pub fn run_seed(opts: &SimOptions, seed: u64) -> SeedReport {
    if opts.attack.as_deref() == Some(crate::byzantine::ALL) {
        return crate::byzantine::run_every_attack(opts, seed);
    }
    match opts.protocol {
        ProtocolKind::Raft => run_seed_for::<synod_raft::RaftNode>(opts, seed),
        ProtocolKind::Paxos => run_seed_for::<synod_paxos::PaxosNode>(opts, seed),
        ProtocolKind::Pbft => run_seed_for::<synod_pbft::PbftNode>(opts, seed),
    }
}

/// Runs one seed with protocol `P` (whatever `opts.protocol` says).
pub fn run_seed_for<P: SimProtocol>(opts: &SimOptions, seed: u64) -> SeedReport {
    let started = Instant::now();
    let fail = |property: &str, detail: String| SeedReport {
        seed,
        passed: false,
        violation: Some(Failure {
            property: property.to_string(),
            node: None,
            detail,
            at_us: 0,
            recent_events: Vec::new(),
            replay: opts.replay_command(seed),
        }),
        metrics: Metrics::default(),
        trace_hash: 0,
    };
    if let Err(e) = opts.validate() {
        return fail("options", e);
    }
    let mut sim = match Sim::<P>::new(opts, seed) {
        Ok(s) => s,
        Err(e) => return fail("options", e),
    };
    // A core that stops on a broken assertion (with more Byzantine
    // replicas than it tolerates, a NEW-VIEW may contradict what it
    // executed) fails this seed with the message; the other seeds run on.
    let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.run_to_verdict()));
    let violation = verdict.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        Some(sim.failure(PANIC_PROPERTY, None, format!("a node panicked: {message}"), sim.now))
    });
    let mut metrics = sim.metrics();
    metrics.wall_secs = started.elapsed().as_secs_f64();
    SeedReport {
        seed,
        passed: violation.is_none(),
        violation,
        metrics,
        trace_hash: sim.trace_hash(),
    }
}

impl<P: SimProtocol> Sim<P> {
    fn failure(&self, property: &str, node: Option<u64>, detail: String, at: Time) -> Failure {
        Failure {
            property: property.to_string(),
            node,
            detail,
            at_us: at.0,
            recent_events: self.recent_events(),
            replay: self.opts.replay_command(self.seed),
        }
    }

    fn first_violation(&self) -> Option<Failure> {
        self.violations
            .first()
            .map(|(t, v)| self.failure(v.property, v.node.map(|n| n.0), v.detail.clone(), *t))
    }

    /// Events taken from the queue so far in this run.
    pub fn events_handled(&self) -> u64 {
        self.events_handled
    }

    /// Runs until `end`, the first violation, or the end of the event
    /// budget (recorded as a violation of [`EVENT_BUDGET_PROPERTY`]).
    fn run_phase(&mut self, end: Time, mut done: impl FnMut(&Sim<P>) -> bool) -> bool {
        let budget = self.opts.event_budget();
        loop {
            if !self.violations.is_empty() {
                return false;
            }
            if self.events_handled >= budget {
                let detail = format!(
                    "stopped after {} simulated events at virtual time {} (bound {} ms): the \
                     event budget (--max-events) ran out before the run reached a verdict",
                    self.events_handled, self.now, self.opts.max_time_ms
                );
                let v = crate::invariant::Violation::new(EVENT_BUDGET_PROPERTY, None, detail);
                self.violations.push((self.now, v));
                return false;
            }
            if done(self) {
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
                    return done(self);
                }
            }
        }
    }

    /// `None` when every running correct (not Byzantine) node reports the
    /// same epoch and the same leader; otherwise each one's `(epoch,
    /// leader)`, for the report.
    fn view_split(&self) -> Option<String> {
        let views: Vec<(NodeId, u64, Option<NodeId>)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.byzantine.get(*i).copied().unwrap_or(false))
            .filter_map(|(_, n)| n.core.as_ref())
            .map(|c| c.status())
            .map(|s| (s.id, s.epoch, s.leader))
            .collect();
        let first = views.first()?;
        let one = first.2.is_some() && views.iter().all(|v| (v.1, v.2) == (first.1, first.2));
        (!one).then(|| {
            views
                .iter()
                .map(|(id, epoch, leader)| match leader {
                    Some(l) => format!("{id} in {epoch} under {l}"),
                    None => format!("{id} changing to {epoch}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    /// Runs the four phases (faults, liveness probe, completion, and for
    /// protocols whose views must converge, convergence) and the final
    /// linearizability check; returns the first failure.
    pub fn run_to_verdict(&mut self) -> Option<Failure> {
        let quiet = Time::from_millis(self.opts.quiet_from_ms());
        let max = Time::from_millis(self.opts.max_time_ms);
        self.run_phase(quiet, |_| false);
        if let Some(f) = self.first_violation() {
            return Some(f);
        }
        self.heal_everything();
        // Liveness: a leader and a fresh commit within the bound.
        let c = self.clients.len();
        let mut probe = Client::new(
            c,
            Workload::Random { remaining: 0 },
            self.rng.index(self.nodes.len()),
            self.keys.len(),
        );
        probe.is_probe = true;
        let hist = self.history.len();
        let op = KvOp::Put {
            key: bytes::Bytes::from_static(b"__probe"),
            value: bytes::Bytes::from(format!("{}", self.seed)),
        };
        self.history.push(synod_lincheck::Operation::pending(probe.id.0, op.clone(), self.now.0));
        probe.workload = Workload::Manual(VecDeque::from([(op, None, hist)]));
        self.clients.push(probe);
        self.start_next_op(c);
        let healed_at = self.now;
        let bound = (self.now + Duration::from_millis(self.opts.liveness_bound_ms)).min(max);
        let live = self.run_phase(bound, |s| s.history[hist].output.is_some());
        if let Some(f) = self.first_violation() {
            return Some(f);
        }
        if !live {
            let leader = match self.current_leader() {
                Some(l) => format!("leader {l}"),
                None => "no leader".to_string(),
            };
            let detail = format!(
                "no fresh command committed within {} ms after every fault healed at {healed_at} ({leader})",
                self.opts.liveness_bound_ms
            );
            return Some(self.failure("liveness", None, detail, self.now));
        }
        // Completion: every client finishes before the deadline.
        let finished = self.run_phase(max, |s| s.clients_done());
        if let Some(f) = self.first_violation() {
            return Some(f);
        }
        if !finished {
            let waiting = self.clients.iter().filter(|c| !c.is_done()).count();
            let detail = format!(
                "{waiting} client(s) still had operations outstanding at max time {} ms",
                self.opts.max_time_ms
            );
            return Some(self.failure("liveness", None, detail, self.now));
        }
        // One view: every correct replica active under the same leader.
        if P::views_converge() && self.opts.check_views_converge {
            let bound = self.now + Duration::from_millis(self.opts.liveness_bound_ms);
            let converged = self.run_phase(bound, |s| s.view_split().is_none());
            if let Some(f) = self.first_violation() {
                return Some(f);
            }
            if let Some(split) = self.view_split().filter(|_| !converged) {
                let detail = format!(
                    "correct replicas not in one view {} ms after the clients finished: {split}",
                    self.opts.liveness_bound_ms
                );
                return Some(self.failure("liveness", None, detail, self.now));
            }
        }
        if self.opts.check_linearizability {
            match self.check_linearizable() {
                CheckResult::Ok => {}
                CheckResult::Illegal(ce) => {
                    return Some(self.failure("linearizability", None, ce.to_string(), self.now));
                }
                CheckResult::Unknown(u) => {
                    return Some(self.failure(
                        "linearizability (unknown)",
                        None,
                        u.to_string(),
                        self.now,
                    ));
                }
            }
        }
        None
    }
}

/// A failed seed in a [`Summary`].
#[derive(Clone, Debug, PartialEq)]
pub struct SeedFailure {
    /// The seed.
    pub seed: u64,
    /// What failed.
    pub failure: Failure,
}

/// The outcome of many seeds.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The protocol.
    pub protocol: &'static str,
    /// Seeds run.
    pub seeds: u64,
    /// Seeds that passed.
    pub passed: u64,
    /// Every failed seed, in seed order.
    pub violations: Vec<SeedFailure>,
    /// Metrics summed over every seed.
    pub metrics: Metrics,
    /// Wall-clock seconds for the whole batch.
    pub wall_secs: f64,
}

/// Runs every seed of `seeds` on `threads` OS threads (at least one). The
/// result does not depend on the number of threads (except wall-clock
/// figures).
pub fn run_seeds(opts: &SimOptions, seeds: Range<u64>, threads: usize) -> Summary {
    let started = Instant::now();
    let count = seeds.end.saturating_sub(seeds.start) as usize;
    let threads = threads.clamp(1, count.max(1));
    let next = std::sync::atomic::AtomicU64::new(seeds.start);
    let mut reports: Vec<SeedReport> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let s = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if s >= seeds.end {
                            return mine;
                        }
                        mine.push(run_seed(opts, s));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a simulation thread panicked")).collect()
    });
    reports.sort_by_key(|r| r.seed);
    let mut metrics = Metrics::default();
    let mut violations = Vec::new();
    let mut passed = 0;
    for r in &reports {
        metrics.merge(&r.metrics);
        match &r.violation {
            None => passed += 1,
            Some(f) => violations.push(SeedFailure { seed: r.seed, failure: f.clone() }),
        }
    }
    Summary {
        protocol: opts.protocol.name(),
        seeds: reports.len() as u64,
        passed,
        violations,
        metrics,
        wall_secs: started.elapsed().as_secs_f64(),
    }
}

impl Summary {
    /// True when every seed passed.
    pub fn all_passed(&self) -> bool {
        self.passed == self.seeds
    }

    /// The summary as JSON: `seeds`, `passed`, `failed`, `violations` (each
    /// with `seed`, `property`, `node`, `detail`, `at_us`, `replay`,
    /// `recent_events`), `committed_ops`, `messages_per_op`, `bytes_per_op`,
    /// `throughput_ops_per_sec`, `latency_us` (`p50_us`, `p90_us`, `p99_us`,
    /// `max_us`), `elections`, `leaderless_ms`, `events`, `events_per_sec`
    /// (per core: events over summed per-seed wall time), `wall_secs`, and
    /// `metrics` (everything in [`Metrics::to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        let m = &self.metrics;
        let violations: Vec<_> = self
            .violations
            .iter()
            .map(|v| {
                serde_json::json!({
                    "seed": v.seed,
                    "property": v.failure.property,
                    "node": v.failure.node,
                    "detail": v.failure.detail,
                    "at_us": v.failure.at_us,
                    "replay": v.failure.replay,
                    "recent_events": v.failure.recent_events,
                })
            })
            .collect();
        serde_json::json!({
            "protocol": self.protocol,
            "seeds": self.seeds,
            "passed": self.passed,
            "failed": self.seeds - self.passed,
            "violations": violations,
            "committed_ops": m.committed_ops,
            "messages_per_op": m.messages_per_op(),
            "bytes_per_op": m.bytes_per_op(),
            "throughput_ops_per_sec": m.throughput_ops_per_sec(),
            "latency_us": m.latency.summary(),
            "elections": m.elections,
            "leaderless_ms": m.leaderless_us / 1000,
            "events": m.events,
            "events_per_sec": m.events_per_sec(),
            "wall_secs": self.wall_secs,
            "metrics": m.to_json(),
        })
    }

    /// The summary as human-readable text.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{}: {} of {} seeds passed ({:.2} s wall)\n",
            self.protocol, self.passed, self.seeds, self.wall_secs
        );
        for v in &self.violations {
            let f = &v.failure;
            s.push_str(&format!("\nFAIL seed {}: {} — {}\n", v.seed, f.property, f.detail));
            if !f.recent_events.is_empty() {
                s.push_str("  last events:\n");
                for e in f.recent_events.iter().rev().take(40).rev() {
                    s.push_str(&format!("    {e}\n"));
                }
            }
            s.push_str(&format!("  replay: {}\n", f.replay));
        }
        s.push('\n');
        s.push_str(&self.metrics.render());
        s
    }
}
