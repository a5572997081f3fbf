//! Snapshot and compaction scenarios for Raft in the simulator, in the
//! spirit of MIT 6.5840's 3D/4B tests: snapshots keep the log bounded; a
//! disconnected or crashed follower catches up by InstallSnapshot on a
//! reliable and an unreliable network; every node crashes and recovers from
//! snapshot plus log with the applied index never going back; key-value
//! workloads under partitions and crashes with snapshots on stay
//! linearizable. Every checker (including the compaction invariant and
//! snapshot agreement) runs after every event.

use bytes::Bytes;
use std::time::Duration;
use synod_core::NodeId;
use synod_core::kv::{KvOp, KvResult};
use synod_raft::RaftNode;
use synod_sim::{FaultProfile, Sim, SimOptions, run_seeds};

fn quiet(nodes: usize) -> SimOptions {
    SimOptions { nodes, clients: 0, ..SimOptions::default() }
}

fn put(sim: &mut Sim<RaftNode>, key: &str, value: String) {
    let op = sim.submit(KvOp::Put { key: Bytes::from(key.to_string()), value: Bytes::from(value) });
    assert_eq!(sim.wait(op, Duration::from_secs(10)), Some(KvResult::Done), "put {key}");
}

fn core(sim: &Sim<RaftNode>, n: NodeId) -> &RaftNode {
    sim.core(n).expect("up")
}

fn assert_clean(sim: &Sim<RaftNode>) {
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    assert!(sim.check_linearizable().is_ok(), "history not linearizable");
}

#[test]
fn snapshot_basic_keeps_every_log_bounded() {
    let mut sim = Sim::<RaftNode>::new(&quiet(3), 1).expect("valid");
    assert!(sim.run_until(|s| s.leader().is_some(), Duration::from_secs(3)));
    let mut max_log = 0;
    for k in 0..400 {
        put(&mut sim, &format!("k{}", k % 7), k.to_string());
        for n in 1..=3 {
            max_log = max_log.max(core(&sim, NodeId(n)).log_len());
        }
    }
    sim.run_for(Duration::from_millis(500));
    for n in 1..=3 {
        let c = core(&sim, NodeId(n));
        assert!(c.snapshot_meta().index >= 64 * 5, "n{n} snapshots");
        assert!(c.purged_index() > 0, "n{n} purged");
    }
    // 64 between snapshots, 16 trailing, plus what is in flight.
    assert!(max_log < 64 + 16 + 32, "a log held {max_log} entries");
    assert_clean(&sim);
}

fn catch_up_by_snapshot(seed: u64, unreliable: bool, crash: bool) {
    let mut sim = Sim::<RaftNode>::new(&quiet(3), seed).expect("valid");
    assert!(sim.run_until(|s| s.leader().is_some(), Duration::from_secs(3)));
    let leader = sim.leader().expect("leader");
    let lagging = NodeId(leader.0 % 3 + 1);
    if crash {
        sim.crash(lagging);
    } else {
        sim.isolate(lagging);
    }
    if unreliable {
        sim.set_loss(0.1);
        sim.set_duplication(0.05);
    }
    for k in 0..200 {
        put(&mut sim, &format!("k{}", k % 5), k.to_string());
    }
    let leader_core = core(&sim, sim.leader().expect("leader"));
    let purged = leader_core.purged_index();
    assert!(purged > 100, "the leader purged past the lagging node");
    if crash {
        sim.restart(lagging);
    } else {
        sim.heal();
    }
    let caught_up = |s: &Sim<RaftNode>| {
        let l = s.leader().and_then(|l| s.status(l)).map(|st| st.commit_index);
        s.status(lagging).map(|st| st.applied_index) >= l.filter(|&c| c > 200)
    };
    assert!(sim.run_until(caught_up, Duration::from_secs(20)), "seed {seed}: caught up");
    assert!(core(&sim, lagging).snapshot_meta().index >= purged, "it installed a snapshot");
    for k in 0..5 {
        let key = format!("k{k}");
        let on_leader = sim.kv_get(sim.leader().expect("leader"), key.as_bytes());
        assert_eq!(sim.kv_get(lagging, key.as_bytes()), on_leader, "{key}");
    }
    sim.heal_all();
    put(&mut sim, "after", "1".into());
    assert_clean(&sim);
}

#[test]
fn a_disconnected_follower_catches_up_by_install_snapshot() {
    for seed in 1..=3 {
        catch_up_by_snapshot(seed, false, false);
    }
}

#[test]
fn a_disconnected_follower_catches_up_by_install_snapshot_unreliable() {
    for seed in 1..=3 {
        catch_up_by_snapshot(seed, true, false);
    }
}

#[test]
fn a_crashed_follower_catches_up_by_install_snapshot() {
    for seed in 1..=3 {
        catch_up_by_snapshot(seed, false, true);
    }
}

/// Was ignored: with one of three nodes crashed and 10% loss a harness
/// client (seed 1) went 10 s without an answer while the two live nodes were
/// healthy. The cause was the simulated client, not Raft: every lost
/// request or reply cost a full 1.5 s client timeout, after which the client
/// moved on to the next replica (the crashed one included, another 1.5 s),
/// so four or five losses in a row outlasted the test's patience. A client
/// now retransmits after an eighth of the timeout once an attempt went
/// unanswered, and resends once to a replica just named leader before
/// moving on.
#[test]
fn a_crashed_follower_catches_up_by_install_snapshot_unreliable() {
    for seed in 1..=3 {
        catch_up_by_snapshot(seed, true, true);
    }
}

#[test]
fn all_nodes_crash_and_recover_from_snapshot_plus_log() {
    let mut sim = Sim::<RaftNode>::new(&quiet(3), 5).expect("valid");
    assert!(sim.run_until(|s| s.leader().is_some(), Duration::from_secs(3)));
    let mut last_applied = [0u64; 3];
    for round in 0..5 {
        for k in 0..90 {
            put(&mut sim, &format!("k{}", k % 4), format!("{round}-{k}"));
        }
        sim.run_for(Duration::from_millis(300));
        for n in 1..=3 {
            let applied = sim.status(NodeId(n)).expect("up").applied_index;
            assert!(applied >= last_applied[n as usize - 1], "n{n} applied went back");
            last_applied[n as usize - 1] = applied;
            sim.crash(NodeId(n));
        }
        for n in 1..=3 {
            sim.restart(NodeId(n));
            let st = sim.status(NodeId(n)).expect("up");
            let snapshot = core(&sim, NodeId(n)).snapshot_meta().index;
            assert_eq!(st.applied_index, snapshot, "n{n} starts from its snapshot");
            assert!(snapshot > 0 || round == 0);
        }
        assert!(sim.run_until(|s| s.leader().is_some(), Duration::from_secs(5)));
    }
    let get = sim.submit(KvOp::Get { key: Bytes::from("k1") });
    assert_eq!(sim.wait(get, Duration::from_secs(5)), Some(KvResult::Value(Some("4-89".into()))));
    assert_clean(&sim);
}

#[test]
fn kv_workloads_with_snapshots_under_faults_stay_linearizable() {
    for faults in [FaultProfile::Snapshot, FaultProfile::All] {
        let o = SimOptions { faults, ops_per_client: 150, ..SimOptions::default() };
        let s = run_seeds(&o, 1..9, 2);
        assert!(
            s.violations.is_empty(),
            "{faults:?}: {:?}",
            s.violations.iter().map(|v| (&v.failure.replay, &v.failure.detail)).collect::<Vec<_>>()
        );
    }
}
