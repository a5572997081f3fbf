//! Seed sweeps of Multi-Paxos under every fault, and the injected bug being
//! caught. `PAXOS_SEEDS=1000 cargo test --release -p synod-sim --test
//! paxos_sweep -- --ignored --nocapture` runs a longer sweep (also
//! `PAXOS_NODES`, `PAXOS_FAULTS`, `PAXOS_BUG`).

use synod_sim::{FaultProfile, ProtocolKind, SimOptions, run_seeds};

fn opts(faults: FaultProfile) -> SimOptions {
    SimOptions { protocol: ProtocolKind::Paxos, nodes: 5, faults, ..SimOptions::default() }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(4)
}

#[test]
fn one_seed_reports_its_metrics() {
    let s = run_seeds(&opts(FaultProfile::All), 1..2, 1);
    eprintln!("{}", s.render());
    assert!(s.all_passed(), "{}", s.render());
    assert!(s.metrics.committed_ops >= 500, "{}", s.metrics.committed_ops);
}

#[test]
#[ignore]
fn sweep_all_faults() {
    let env = |name: &str| std::env::var(name).ok();
    let n: u64 = env("PAXOS_SEEDS").and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut o = opts(FaultProfile::All);
    o.nodes = env("PAXOS_NODES").and_then(|s| s.parse().ok()).unwrap_or(5);
    o.bug = env("PAXOS_BUG");
    if let Some(f) = env("PAXOS_FAULTS") {
        o.faults = FaultProfile::parse(&f).expect("a fault profile name");
    }
    let s = run_seeds(&o, 1..n + 1, threads());
    eprintln!("{}", s.render());
    assert!(s.all_passed(), "{} of {} passed", s.passed, s.seeds);
}

/// The leader that ignores promised values is caught within the first
/// `WITHIN_SEEDS` seeds of a faulty sweep.
#[test]
fn ignoring_promised_values_is_caught() {
    const WITHIN_SEEDS: u64 = 20;
    let o = SimOptions { bug: Some("ignore-promised-values".into()), ..opts(FaultProfile::All) };
    let caught = (1..=WITHIN_SEEDS).find(|&seed| !run_seeds(&o, seed..seed + 1, 1).all_passed());
    let seed = caught.expect("the broken leader must be caught");
    let s = run_seeds(&o, seed..seed + 1, 1);
    let v = &s.violations[0];
    eprintln!("caught at seed {seed}: {} — {}", v.failure.property, v.failure.detail);
    assert!(v.failure.replay.contains("--bug ignore-promised-values"), "{}", v.failure.replay);
}

/// Simulator speed with Multi-Paxos against Raft on the same workload and
/// faults, without the linearizability check (events per wall second).
#[test]
#[ignore]
fn events_per_second_against_raft() {
    for protocol in [ProtocolKind::Paxos, ProtocolKind::Raft] {
        let o = SimOptions {
            protocol,
            check_linearizability: false,
            ops_per_client: 400,
            ..opts(FaultProfile::All)
        };
        let started = std::time::Instant::now();
        let s = run_seeds(&o, 1..21, 1);
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{}: {} events in {secs:.2} s = {:.0} events/s ({} of {} passed)",
            s.protocol,
            s.metrics.events,
            s.metrics.events as f64 / secs,
            s.passed,
            s.seeds
        );
    }
}
