//! Simulator speed: events per wall-clock second for a 5-node Raft cluster
//! under every fault profile with every checker on (one seed, one core).
//!
//! `cargo bench -p synod-sim --bench events`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use synod_raft::RaftNode;
use synod_sim::{FaultProfile, Sim, SimOptions};

fn options() -> SimOptions {
    SimOptions {
        faults: FaultProfile::All,
        nodes: 5,
        clients: 5,
        ops_per_client: 100,
        ..SimOptions::default()
    }
}

/// Runs seed 42 to its verdict; returns the events simulated.
fn one_run() -> u64 {
    let mut sim = Sim::<RaftNode>::new(&options(), 42).expect("valid options");
    let failure = sim.run_to_verdict();
    assert!(failure.is_none(), "{failure:?}");
    sim.metrics().events
}

fn bench(c: &mut Criterion) {
    let events = one_run();
    let started = std::time::Instant::now();
    let rounds = 5;
    for _ in 0..rounds {
        black_box(one_run());
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "raft, 5 nodes, faults=all, all checkers: {events} events per run, {:.0} events/s",
        (events * rounds) as f64 / secs
    );
    let mut g = c.benchmark_group("sim");
    g.throughput(Throughput::Elements(events));
    g.sample_size(10);
    g.bench_function("raft_5_nodes_faults_all", |b| b.iter(|| black_box(one_run())));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
