//! Snapshot and compaction scenarios for Multi-Paxos in the simulator (the
//! Paxos counterpart of `raft_snapshot.rs`): compaction keeps every log
//! bounded over thousands of commands; a crashed or disconnected follower
//! behind the leader's purged prefix catches up by chunked snapshot on a
//! reliable and a lossy network; a stale node behind every acceptor's purged
//! prefix campaigns, is sent a snapshot instead of promises, and leads;
//! every node crashes and recovers from snapshot plus log tail with the
//! applied position never going back. Every checker (snapshot agreement,
//! apply order, one value per slot, …) runs after every event.

use bytes::Bytes;
use std::time::Duration;
use synod_core::NodeId;
use synod_core::kv::{KvOp, KvResult};
use synod_paxos::PaxosNode;
use synod_sim::{FaultProfile, ProtocolKind, Sim, SimOptions, run_seeds};

fn quiet(nodes: usize) -> SimOptions {
    SimOptions { protocol: ProtocolKind::Paxos, nodes, clients: 0, ..SimOptions::default() }
}

fn put(sim: &mut Sim<PaxosNode>, key: &str, value: String) {
    let op = sim.submit(KvOp::Put { key: Bytes::from(key.to_string()), value: Bytes::from(value) });
    assert_eq!(sim.wait(op, Duration::from_secs(10)), Some(KvResult::Done), "put {key}");
}

fn core(sim: &Sim<PaxosNode>, n: NodeId) -> &PaxosNode {
    sim.core(n).expect("up")
}

fn assert_clean(sim: &Sim<PaxosNode>) {
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    assert!(sim.check_linearizable().is_ok(), "history not linearizable");
}

/// 64 slots between snapshots (`sim_config`), 16 trailing, and what is in
/// flight.
const MAX_LOG_SLOTS: usize = 64 + 16 + 32;

#[test]
fn compaction_keeps_every_log_bounded_over_5000_commands() {
    let o = SimOptions {
        protocol: ProtocolKind::Paxos,
        nodes: 3,
        clients: 5,
        ops_per_client: 1000,
        ..SimOptions::default()
    };
    let mut sim = Sim::<PaxosNode>::new(&o, 3).expect("valid");
    let (mut max_log, mut max_disk) = (0, 0);
    let done = sim.run_until(
        |s| {
            for n in 1..=3 {
                max_log = max_log.max(s.core(NodeId(n)).map_or(0, |c| c.log_len()));
                max_disk = max_disk.max(s.durable(NodeId(n)).log.len());
            }
            s.clients_done()
        },
        Duration::from_secs(600),
    );
    assert!(done, "5,000 commands complete");
    assert_eq!(sim.metrics().committed_ops, 5000);
    for n in 1..=3 {
        let c = core(&sim, NodeId(n));
        assert!(c.chosen_slot() >= 5000 / 5, "n{n} chose {}", c.chosen_slot());
        assert!(c.snapshot_point().slot + 64 > c.chosen_slot(), "n{n} snapshots as it goes");
        assert!(c.purged_slot() > 0, "n{n} purged");
    }
    assert!(max_log < MAX_LOG_SLOTS, "a log held {max_log} slots in memory");
    assert!(max_disk < MAX_LOG_SLOTS, "a log held {max_disk} slots on disk");
    assert_clean(&sim);
}

fn catch_up_by_snapshot(seed: u64, lossy: bool, crash: bool) {
    let mut sim = Sim::<PaxosNode>::new(&quiet(3), seed).expect("valid");
    assert!(sim.run_until(|s| s.leader().is_some(), Duration::from_secs(3)));
    let leader = sim.leader().expect("leader");
    let lagging = NodeId(leader.0 % 3 + 1);
    if crash {
        sim.crash(lagging);
    } else {
        sim.isolate(lagging);
    }
    if lossy {
        sim.set_loss(0.1);
        sim.set_duplication(0.05);
    }
    for k in 0..200 {
        put(&mut sim, &format!("k{}", k % 5), k.to_string());
    }
    let leader = sim.leader().expect("leader");
    let purged = core(&sim, leader).purged_slot();
    assert!(purged > 100, "the leader purged past the lagging node ({purged})");
    if crash {
        sim.restart(lagging);
    } else {
        sim.heal();
    }
    let caught_up = |s: &Sim<PaxosNode>| match s.leader().and_then(|l| s.status(l)) {
        Some(l) if l.commit_index > 200 => {
            s.status(lagging).is_some_and(|st| st.applied_index >= l.commit_index)
        }
        _ => false,
    };
    assert!(sim.run_until(caught_up, Duration::from_secs(20)), "seed {seed}: caught up");
    let installed = core(&sim, lagging).snapshot_point();
    assert!(installed.slot > 100, "it installed a snapshot: {installed:?}, leader purged {purged}");
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
fn a_crashed_follower_catches_up_by_snapshot() {
    for seed in 1..=3 {
        catch_up_by_snapshot(seed, false, true);
    }
}

#[test]
fn a_crashed_follower_catches_up_by_snapshot_on_a_lossy_network() {
    for seed in 1..=3 {
        catch_up_by_snapshot(seed, true, true);
    }
}

#[test]
fn a_disconnected_follower_catches_up_by_snapshot() {
    for seed in 1..=3 {
        catch_up_by_snapshot(seed, false, false);
    }
}

#[test]
fn a_disconnected_follower_catches_up_by_snapshot_on_a_lossy_network() {
    for seed in 1..=3 {
        catch_up_by_snapshot(seed, true, false);
    }
}

/// n-stale (crashed, empty disk) misses 200 commands; then the leader
/// crashes as n-stale restarts, and whichever of n-stale and the other node
/// times out first campaigns. When n-stale does, its Phase 1 starts at slot
/// 1, inside the other's purged prefix: the other answers with its snapshot
/// instead of a promise, and n-stale leads once it installed it and
/// campaigned again. Either way nothing chosen is lost; over the seeds
/// n-stale wins at least once.
#[test]
fn a_stale_candidate_behind_a_purged_prefix_is_sent_a_snapshot_and_can_lead() {
    const SEEDS: u64 = 16;
    let mut stale_led = 0;
    for seed in 1..=SEEDS {
        let mut sim = Sim::<PaxosNode>::new(&quiet(3), seed).expect("valid");
        assert!(sim.run_until(|s| s.leader().is_some(), Duration::from_secs(3)));
        let leader = sim.leader().expect("leader");
        let stale = NodeId(leader.0 % 3 + 1);
        sim.crash(stale);
        for k in 0..200 {
            put(&mut sim, &format!("k{}", k % 5), k.to_string());
        }
        let leader = sim.leader().expect("leader");
        let other = NodeId(6 - leader.0 - stale.0);
        assert!(core(&sim, other).purged_slot() > 100, "the other node purged");
        sim.crash(leader);
        sim.restart(stale);
        let led = |s: &Sim<PaxosNode>| s.leader().is_some_and(|l| l != leader);
        assert!(sim.run_until(led, Duration::from_secs(10)), "seed {seed}: a leader");
        stale_led += usize::from(sim.leader() == Some(stale));
        let get =
            sim.submit_to(sim.leader().expect("leader"), KvOp::Get { key: Bytes::from("k4") });
        let last = Some(KvResult::Value(Some(Bytes::from("199"))));
        assert_eq!(sim.wait(get, Duration::from_secs(5)), last, "seed {seed}: nothing chosen lost");
        let now_leader = sim.leader().expect("leader");
        let caught_up = |s: &Sim<PaxosNode>| {
            let commit = s.status(now_leader).map_or(u64::MAX, |st| st.commit_index);
            s.status(stale).is_some_and(|st| st.applied_index >= commit)
        };
        assert!(sim.run_until(caught_up, Duration::from_secs(5)), "seed {seed}: caught up");
        assert!(core(&sim, stale).snapshot_point().slot > 100, "seed {seed}: installed a snapshot");
        sim.heal_all();
        put(&mut sim, "after", "1".into());
        assert_clean(&sim);
    }
    eprintln!("the stale node led in {stale_led} of {SEEDS} seeds");
    assert!(stale_led >= 1, "the stale node never won an election");
}

#[test]
fn all_nodes_crash_and_recover_from_snapshot_plus_log_tail() {
    let mut sim = Sim::<PaxosNode>::new(&quiet(3), 5).expect("valid");
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
            let snapshot = core(&sim, NodeId(n)).snapshot_point();
            assert_eq!(st.applied_index, snapshot.meta.index, "n{n} starts from its snapshot");
            assert_eq!(core(&sim, NodeId(n)).chosen_slot(), snapshot.slot);
            assert!(snapshot.exists() || round == 0);
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
        let o = SimOptions {
            protocol: ProtocolKind::Paxos,
            faults,
            ops_per_client: 150,
            ..SimOptions::default()
        };
        let s = run_seeds(&o, 1..9, 2);
        assert!(
            s.violations.is_empty(),
            "{faults:?}: {:?}",
            s.violations.iter().map(|v| (&v.failure.replay, &v.failure.detail)).collect::<Vec<_>>()
        );
    }
}
