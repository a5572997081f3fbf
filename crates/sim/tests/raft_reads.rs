//! Lease reads and follower reads in the simulator: the simulated clocks
//! stay within the lease's drift assumption, and with either mode on,
//! runs under faults stay linearizable while lease reads save the round
//! trips and follower reads really reach the leader for a read index.

use synod_raft::{RaftNode, ReadMode};
use synod_sim::{FaultConfig, FaultProfile, SimOptions, SimProtocol, run_seed};

fn messages(r: &synod_sim::SeedReport, kind: &str) -> u64 {
    r.metrics.by_kind.iter().filter(|k| k.kind == kind).map(|k| k.messages).sum()
}

#[test]
fn the_simulated_clock_drift_is_within_the_lease_assumption() {
    let mut config = RaftNode::sim_config(&[synod_core::NodeId(1)]);
    RaftNode::configure_reads(&mut config, true, false).expect("valid");
    assert_eq!(config.read_mode, ReadMode::Lease);
    // Two clocks drift apart by at most twice the largest drift.
    let worst = 2.0 * FaultConfig::default().max_drift_ppm as f64 / 1e6;
    assert!(worst <= config.max_clock_drift, "{worst} > {}", config.max_clock_drift);
}

#[test]
fn lease_reads_stay_linearizable_under_every_fault_and_save_round_trips() {
    for faults in [FaultProfile::None, FaultProfile::Net, FaultProfile::Crash, FaultProfile::All] {
        for seed in 1..=4 {
            let base = SimOptions { faults, ..SimOptions::default() };
            let lease = SimOptions { lease_reads: true, ..base.clone() };
            let r = run_seed(&lease, seed);
            assert!(r.passed, "{faults:?} seed {seed}: {:?}", r.violation);
            if faults == FaultProfile::None {
                let read_index = run_seed(&base, seed);
                assert!(read_index.passed);
                assert!(
                    r.metrics.messages_per_op() < read_index.metrics.messages_per_op(),
                    "lease {} vs ReadIndex {} messages per op",
                    r.metrics.messages_per_op(),
                    read_index.metrics.messages_per_op()
                );
            }
        }
    }
}

#[test]
fn follower_reads_stay_linearizable_and_ask_the_leader() {
    let mut asked = 0;
    for faults in [FaultProfile::Net, FaultProfile::Crash, FaultProfile::All] {
        for seed in 1..=4 {
            for lease_reads in [false, true] {
                let o = SimOptions {
                    faults,
                    follower_reads: true,
                    lease_reads,
                    ..SimOptions::default()
                };
                let r = run_seed(&o, seed);
                assert!(r.passed, "{faults:?} seed {seed} lease {lease_reads}: {:?}", r.violation);
                asked += messages(&r, "read_index");
            }
        }
    }
    assert!(asked > 0, "some reads reached a follower");
}
