//! Churn (the lab's TestReliableChurn / TestUnreliableChurn): workload
//! clients keep issuing operations while nodes crash, restart and are
//! partitioned at random; afterwards every operation is answered, the
//! history is linearizable, and a fresh command commits (liveness).

use crate::common::*;
use synod_core::NodeId;
use synod_core::kv::KvResult;
use synod_sim::SimOptions;

const CLIENTS: usize = 5;
const OPS_PER_CLIENT: usize = 60;

/// What besides crashes and partitions a churn run suffers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// Nothing else.
    Reliable,
    /// 5% loss, 5% duplication, 10% of the messages reordered by up to
    /// half a second.
    Unreliable,
    /// Slow disks (fsync 2–20 ms, so crashes often lose or tear unsynced
    /// writes), paused nodes and drifting clocks.
    SlowDisksAndStalls,
}

/// Six seconds of random faults every 50–300 ms: crash a node (at least
/// every fourth fault), restart one, split the cluster in two, cut one node
/// off, or heal the network — plus, per `flavor`, an unreliable network or
/// pauses and clock drift on slow disks.
fn churn(seed: u64, flavor: Flavor) {
    let slow = flavor == Flavor::SlowDisksAndStalls;
    let opts = SimOptions {
        nodes: 5,
        clients: CLIENTS,
        ops_per_client: OPS_PER_CLIENT,
        think_ms: 20,
        fsync_min_us: if slow { 2_000 } else { 100 },
        fsync_max_us: if slow { 20_000 } else { 500 },
        ..SimOptions::default()
    };
    let mut sim = RaftSim::new(&opts, seed).expect("valid options");
    let mut rng = TestRng::new(seed);
    let everyone = all(&sim);
    let set_rates = |sim: &mut RaftSim| {
        if flavor == Flavor::Unreliable {
            sim.set_loss(0.05);
            sim.set_duplication(0.05);
            sim.set_reordering(0.1, ms(500));
        }
    };
    set_rates(&mut sim);
    let mut faults = 0;
    while sim.now().as_millis() < 6_000 {
        let up: Vec<NodeId> = everyone.iter().copied().filter(|&n| sim.is_up(n)).collect();
        let down: Vec<NodeId> = everyone.iter().copied().filter(|&n| !sim.is_up(n)).collect();
        // Every fourth fault is a crash; the others are drawn at random.
        let pick = if faults % 4 == 0 { 0 } else { rng.below(if slow { 11 } else { 10 }) };
        match pick {
            0..=2 if !up.is_empty() => sim.crash(rng.choose(&up, 1)[0]),
            3..=5 if !down.is_empty() => sim.restart(rng.choose(&down, 1)[0]),
            6 | 7 => {
                let size = rng.between(1, 4) as usize;
                let side = rng.choose(&everyone, size);
                let rest: Vec<NodeId> =
                    everyone.iter().copied().filter(|n| !side.contains(n)).collect();
                sim.partition(&[&raw(&side), &raw(&rest)]);
            }
            8 => sim.isolate(rng.choose(&everyone, 1)[0]),
            9 if slow => {
                let n = rng.choose(&everyone, 1)[0];
                if sim.is_paused(n) {
                    sim.resume(n);
                } else if rng.below(2) == 0 {
                    sim.pause(n);
                } else {
                    sim.set_drift(n, rng.between(0, 4_000) as i64 - 2_000);
                }
            }
            _ => {
                sim.heal();
                set_rates(&mut sim);
            }
        }
        faults += 1;
        sim.run_for(ms(rng.between(50, 300)));
    }
    assert!(sim.metrics().crashes >= 5, "seed {seed}: the churn crashed nodes");
    sim.heal_all();
    assert!(sim.run_until(|s| s.clients_done(), secs(60)), "seed {seed}: clients finished");
    let probe = submit_wait(&mut sim, put("probe", "1"), secs(5));
    assert_eq!(probe, KvResult::Done, "seed {seed}: liveness");
    assert!(all_catch_up(&mut sim, secs(2)), "seed {seed}");
    assert_converged(&sim, &everyone);
    let m = sim.metrics();
    assert_eq!(m.committed_ops, (CLIENTS * OPS_PER_CLIENT) as u64 + 1, "seed {seed}");
    let check = sim.check_linearizable();
    assert!(check.is_ok(), "seed {seed} ({faults} faults): {check}");
    assert_safe(&sim);
}

#[test]
fn churn_on_a_reliable_network() {
    for seed in seeds(6) {
        churn(seed, Flavor::Reliable);
    }
}

#[test]
fn churn_on_an_unreliable_network() {
    for seed in seeds(6) {
        churn(seed + 1000, Flavor::Unreliable);
    }
}

#[test]
fn churn_with_slow_disks_pauses_and_clock_drift() {
    for seed in seeds(6) {
        churn(seed + 2000, Flavor::SlowDisksAndStalls);
    }
}
