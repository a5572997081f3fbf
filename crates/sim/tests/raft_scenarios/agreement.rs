//! Log agreement: the lab's TestBasicAgree, TestFailAgree, TestFailNoAgree,
//! TestConcurrentStarts and TestRejoin, plus a cut-off follower catching up.

use crate::common::*;
use bytes::Bytes;
use synod_core::NodeId;
use synod_core::kv::{KvOp, KvResult};

/// The position at which `node` applied `op` (first occurrence).
fn applied_at(sim: &RaftSim, node: NodeId, op: &KvOp) -> Option<u64> {
    let encoded = op.encode();
    sim.committed_on(node)
        .iter()
        .find(|c| c.command.as_ref().is_some_and(|c| c.op == encoded))
        .map(|c| c.index)
}

/// Commands submitted one after another commit at increasing positions, the
/// same position on every node, and every node applies the same sequence.
#[test]
fn basic_agreement() {
    for (nodes, seed) in [(3, 1), (5, 2), (5, 3)] {
        let mut sim = cluster(nodes, seed);
        elect(&mut sim);
        let everyone = all(&sim);
        let mut last_index = 0;
        for i in 0..10 {
            let op = put(&format!("k{i}"), &i.to_string());
            assert_eq!(submit_wait(&mut sim, op.clone(), secs(2)), KvResult::Done);
            let leader = sim.leader().expect("a leader");
            let index = applied_at(&sim, leader, &op).expect("the leader applied it");
            assert!(index > last_index, "seed {seed}: positions increase");
            last_index = index;
            assert!(run_until_applied(&mut sim, &everyone, index, ms(500)), "seed {seed}");
            for &n in &everyone {
                assert_eq!(applied_at(&sim, n, &op), Some(index), "seed {seed}: {n}");
            }
        }
        assert_converged(&sim, &everyone);
        assert_eq!(applied_commands(&sim, NodeId(1)).len(), 10);
        assert_safe(&sim);
    }
}

/// With one follower cut off, the other two still commit; the follower
/// applies nothing meanwhile and catches up once reconnected.
#[test]
fn progress_with_one_follower_gone() {
    for seed in 1..=3 {
        let mut sim = cluster(3, seed);
        let leader = elect(&mut sim);
        let gone = others(&sim, &[leader])[0];
        submit_wait(&mut sim, put("a", "0"), secs(2));
        sim.run_for(ms(100));
        let applied_before = sim.committed_on(gone).len();
        sim.isolate(gone);
        for i in 1..=5 {
            let r = submit_wait(&mut sim, put("a", &i.to_string()), secs(2));
            assert_eq!(r, KvResult::Done, "seed {seed}: commits without {gone}");
        }
        assert_eq!(sim.committed_on(gone).len(), applied_before, "seed {seed}: {gone} is cut off");
        assert_eq!(sim.leader(), Some(leader), "seed {seed}: no election needed");
        sim.heal();
        submit_wait(&mut sim, put("b", "1"), secs(2));
        assert!(all_catch_up(&mut sim, secs(1)), "seed {seed}");
        assert_eq!(sim.kv_get(gone, b"a"), Some(Bytes::from("5")));
        assert_converged(&sim, &all(&sim));
        assert_safe(&sim);
    }
}

/// With 3 of 5 followers cut off, a command sent to the leader does not
/// commit however long the client waits and retries; once the network
/// heals it commits, exactly once.
#[test]
fn no_commit_with_a_majority_gone_then_commit_after_heal() {
    for seed in 1..=3 {
        let mut sim = cluster(5, seed);
        let leader = elect(&mut sim);
        let followers = others(&sim, &[leader]);
        for &f in &followers[..3] {
            sim.isolate(f);
        }
        let commit_before = sim.status(leader).expect("up").commit_index;
        let op = put("x", "1");
        let id = sim.submit_to(leader, op.clone());
        assert_eq!(sim.wait(id, secs(4)), None, "seed {seed}: answered without a majority");
        assert!(sim.status(leader).expect("up").last_index > commit_before, "seed {seed}");
        for n in all(&sim) {
            let commit = sim.status(n).expect("up").commit_index;
            assert!(commit <= commit_before, "seed {seed}: {n} committed up to {commit}");
            assert_eq!(sim.kv_get(n, b"x"), None, "seed {seed}: {n} applied it");
        }
        sim.heal();
        assert_eq!(sim.wait(id, secs(5)), Some(KvResult::Done), "seed {seed}: commits after heal");
        submit_wait(&mut sim, put("y", "2"), secs(2));
        assert!(all_catch_up(&mut sim, secs(1)), "seed {seed}");
        for n in all(&sim) {
            assert_eq!(sim.kv_get(n, b"x"), Some(Bytes::from("1")), "seed {seed}: {n}");
        }
        assert_converged(&sim, &all(&sim));
        assert!(sim.check_linearizable().is_ok());
        assert_safe(&sim);
    }
}

/// A follower cut off while 100 commands commit catches up within a
/// second of reconnecting (by appends, or by a snapshot once the leader
/// compacted what it missed) and ends with the same state.
#[test]
fn a_cut_off_follower_catches_up() {
    for seed in 1..=3 {
        let mut sim = cluster(5, seed);
        let leader = elect(&mut sim);
        let behind = others(&sim, &[leader])[1];
        sim.isolate(behind);
        for seq in 1..=100 {
            let op = put(&format!("k{}", seq % 7), &seq.to_string());
            sim.propose(leader, command(900, seq, &op)).expect("leads");
            if seq % 10 == 0 {
                sim.run_for(ms(5));
            }
        }
        let target = sim.status(leader).expect("up").last_index;
        let connected = others(&sim, &[behind]);
        assert!(run_until_applied(&mut sim, &connected, target, secs(1)), "seed {seed}");
        assert!(sim.status(behind).expect("up").last_index < target - 90);
        sim.heal();
        assert!(run_until_applied(&mut sim, &[behind], target, secs(1)), "seed {seed}: caught up");
        for k in 0..7 {
            let key = format!("k{k}");
            let value = sim.kv_get(leader, key.as_bytes());
            assert!(value.is_some());
            assert_eq!(sim.kv_get(behind, key.as_bytes()), value, "seed {seed}: {key}");
        }
        assert_converged(&sim, &all(&sim));
        assert_safe(&sim);
    }
}

/// Twenty clients append to one key at once: every append is answered,
/// applied exactly once, in one order on every node, and the history is
/// linearizable.
#[test]
fn concurrent_proposals() {
    for (nodes, seed) in [(3, 1), (5, 2)] {
        let mut sim = cluster(nodes, seed);
        elect(&mut sim);
        let ids: Vec<_> = (0..20).map(|i| sim.submit(append("log", &format!("<{i}>")))).collect();
        assert!(sim.run_until(|s| ids.iter().all(|&id| s.result(id).is_some()), secs(3)));
        for &id in &ids {
            assert_eq!(sim.result(id), Some(&KvResult::Done), "seed {seed}");
        }
        sim.run_for(ms(200));
        let value = sim.kv_get(NodeId(1), b"log").expect("appended");
        let value = String::from_utf8(value.to_vec()).expect("utf8");
        for i in 0..20 {
            assert_eq!(value.matches(&format!("<{i}>")).count(), 1, "seed {seed}: {value}");
        }
        for n in all(&sim) {
            assert_eq!(sim.kv_get(n, b"log").map(|v| v.to_vec()), Some(value.clone().into_bytes()));
        }
        assert_converged(&sim, &all(&sim));
        assert!(sim.check_linearizable().is_ok());
        assert_safe(&sim);
    }
}

/// The lab's TestRejoin: a leader cut off with three uncommitted entries; the
/// others move on; that second leader is cut off too, and the old leader
/// rejoins the third node, which holds newer entries and so leads. The old
/// leader's uncommitted entries are replaced, never applied, and every log
/// ends up the same.
#[test]
fn a_partitioned_old_leader_has_its_log_repaired() {
    for seed in 1..=3 {
        let mut sim = cluster(3, seed);
        let first = elect(&mut sim);
        submit_wait(&mut sim, put("a", "1"), secs(2));
        sim.run_for(ms(100));

        sim.isolate(first);
        let base = sim.status(first).expect("up").last_index;
        let stale: Vec<KvOp> = (1..=3).map(|i| put("stale", &i.to_string())).collect();
        for (seq, op) in (1..).zip(&stale) {
            sim.propose(first, command(901, seq, op)).expect("still leads");
        }
        let first_term = term(&sim, first);
        let rest = others(&sim, &[first]);
        let second = elect_in(&mut sim, &rest, secs(3));
        submit_wait(&mut sim, put("b", "2"), secs(3));

        let third = rest.iter().copied().find(|&n| n != second).expect("three nodes");
        sim.partition(&[&[first.0, third.0]]);
        let leader = elect_in(&mut sim, &[first, third], secs(3));
        assert_eq!(leader, third, "seed {seed}: only the node with the newer log can lead");
        submit_wait(&mut sim, put("c", "3"), secs(3));
        sim.heal();
        submit_wait(&mut sim, put("d", "4"), secs(3));
        assert!(all_catch_up(&mut sim, secs(1)), "seed {seed}");

        let core = |n| sim.core(n).expect("up");
        for i in base + 1..=base + 3 {
            assert_ne!(core(first).term_at(i), Some(first_term), "seed {seed}: stale entry {i}");
        }
        for n in all(&sim) {
            assert_logs_match(&sim, leader, n);
            assert_eq!(sim.kv_get(n, b"stale"), None, "seed {seed}: {n} applied a stale entry");
            for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")] {
                assert_eq!(sim.kv_get(n, k.as_bytes()), Some(Bytes::from(v)), "seed {seed}: {n}");
            }
        }
        assert_converged(&sim, &all(&sim));
        assert_safe(&sim);
    }
}
