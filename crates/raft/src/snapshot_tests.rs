//! Snapshot and compaction scenarios (thesis §5) on the test
//! [`Cluster`](crate::testing::Cluster), which is every node's snapshot host
//! and checks each output for the persistence contract, state machine safety
//! and snapshot integrity (a snapshot arriving with a missing or misplaced
//! chunk fails the test).

use super::*;
use crate::node::tests::{SEEDS, check_caught_up, run_faults_configured};
use crate::testing::{Cluster, SNAPSHOT_BYTES_PER_INDEX, cmd, snapshot_bytes};
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Snapshots every 10 entries, 3 trailing entries, 7-byte chunks (so a
/// snapshot of 100 entries takes about 43 chunks).
fn snapshotting(cfg: &mut Config) {
    cfg.snapshot_interval_entries = 10;
    cfg.snapshot_trailing_entries = 3;
    cfg.snapshot_chunk_bytes = 7;
}

fn propose_n(c: &mut Cluster, from_seq: u64, n: u64) {
    for seq in from_seq..from_seq + n {
        let leader = c.elect();
        c.propose(leader, vec![cmd(seq)]).expect("the leader accepts");
        c.run_for(ms(5));
    }
}

#[test]
fn snapshots_keep_the_log_bounded_and_hold_the_compaction_invariant() {
    let mut c = Cluster::new(3, snapshotting);
    c.record_outputs = false;
    propose_n(&mut c, 1, 200);
    c.run_for(ms(200));
    for id in c.ids() {
        let node = c.node(id);
        assert_eq!(node.applied_index(), 201, "{id}: 200 commands and the no-op");
        assert!(node.snapshot_meta().index >= 190, "{id} snapshots as it applies");
        assert!(node.purged_index() <= node.snapshot_meta().index);
        assert!(node.purged_index() >= node.snapshot_meta().index - 3, "{id} purged");
        assert_eq!(c.applied_commands(id).len(), 200, "{id}");
    }
    assert!(c.max_log_len <= 10 + 3 + 2, "log held {} entries", c.max_log_len);
}

#[test]
fn a_disconnected_follower_catches_up_by_install_snapshot_in_chunks() {
    let mut c = Cluster::new(3, snapshotting);
    let leader = c.elect();
    let lagging = NodeId(leader.0 % 3 + 1);
    c.isolate(lagging);
    propose_n(&mut c, 1, 60);
    assert!(c.node(leader).purged_index() > c.node(lagging).last_index());
    c.heal();
    c.run_for(ms(500));
    let installed = &c.installs[(lagging.0 - 1) as usize];
    assert_eq!(installed.len(), 1, "one snapshot installed");
    assert_eq!(installed[0].size_bytes, SNAPSHOT_BYTES_PER_INDEX * installed[0].index);
    let chunks = c.outputs[(lagging.0 - 1) as usize]
        .iter()
        .flat_map(|o| &o.snapshots)
        .filter(|a| matches!(a, SnapshotAction::Write { .. }))
        .count() as u64;
    assert_eq!(chunks, installed[0].size_bytes.div_ceil(7), "every chunk written once, in order");
    assert_eq!(c.node(lagging).applied_index(), c.node(leader).applied_index());
    // It keeps replicating by AppendEntries afterwards.
    propose_n(&mut c, 61, 3);
    c.run_for(ms(100));
    assert_eq!(c.node(lagging).commit_index(), c.node(leader).commit_index());
    assert!(c.applied_commands(lagging).ends_with(&[cmd(61), cmd(62), cmd(63)]));
}

#[test]
fn a_lost_chunk_is_resent_from_the_offset_the_follower_asked_for() {
    let mut c = Cluster::new(3, snapshotting);
    let leader = c.elect();
    let lagging = NodeId(leader.0 % 3 + 1);
    c.isolate(lagging);
    propose_n(&mut c, 1, 40);
    c.heal();
    // Deliver the first exchanges, then lose whatever is in flight (a chunk
    // or its answer) a few times over.
    for _ in 0..5 {
        c.tick(leader);
        c.deliver(6);
        c.drop_in_flight();
        c.now = c.now + ms(50);
    }
    let received = c.partial[(lagging.0 - 1) as usize].as_ref().map_or(0, |(_, b)| b.len());
    assert!(received > 0, "some chunks arrived before the losses");
    c.run_for(ms(1000));
    assert_eq!(c.installs[(lagging.0 - 1) as usize].len(), 1);
    assert_eq!(c.node(lagging).applied_index(), c.node(leader).applied_index());
}

#[test]
fn a_follower_crashing_mid_install_restarts_the_transfer_and_loses_nothing() {
    let mut c = Cluster::new(3, snapshotting);
    let leader = c.elect();
    let lagging = NodeId(leader.0 % 3 + 1);
    propose_n(&mut c, 1, 5);
    c.isolate(lagging);
    propose_n(&mut c, 6, 50);
    c.heal();
    let i = (lagging.0 - 1) as usize;
    for _ in 0..20 {
        if c.partial[i].is_some() {
            break;
        }
        c.now = c.now + ms(50);
        c.tick(leader);
        c.deliver(4);
    }
    assert!(c.partial[i].is_some(), "a transfer started");
    assert!(c.installs[i].is_empty(), "and is not complete");
    let durable_before = c.durables[i].clone();
    c.restart(lagging, 7);
    assert_eq!(c.durables[i], durable_before, "a partial snapshot is not durable state");
    assert_eq!(c.node(lagging).snapshot_meta().index, durable_before.snapshot.index);
    c.run_for(ms(1000));
    assert_eq!(c.installs[i].len(), 1);
    assert_eq!(c.node(lagging).applied_index(), c.node(leader).applied_index());
}

#[test]
fn all_nodes_restart_from_snapshot_plus_tail_and_applied_never_goes_back() {
    let mut c = Cluster::new(3, snapshotting);
    propose_n(&mut c, 1, 37);
    c.run_for(ms(100));
    let applied: Vec<u64> = c.ids().iter().map(|&id| c.node(id).applied_index()).collect();
    for (k, id) in c.ids().into_iter().enumerate() {
        c.restart(id, 100 + k as u64);
        let node = c.node(id);
        assert!(node.snapshot_meta().index > 0, "{id} has a snapshot");
        assert_eq!(node.applied_index(), node.snapshot_meta().index, "{id} starts at it");
        assert!(node.last_index() >= applied[k], "{id} kept its tail");
    }
    propose_n(&mut c, 38, 3);
    c.run_for(ms(200));
    for (k, id) in c.ids().into_iter().enumerate() {
        assert!(c.node(id).applied_index() >= applied[k] + 3, "{id} moved on");
    }
}

/// A node restarting as the sole member replays its committed entries
/// (openraft#1246): with a snapshot, from the snapshot on.
#[test]
fn regression_a_sole_member_restarting_replays_its_committed_entries() {
    let mut c = Cluster::new(1, snapshotting);
    let id = NodeId(1);
    propose_n(&mut c, 1, 25);
    let applied = c.node(id).applied_index();
    c.restart(id, 3);
    let snapshot = c.node(id).snapshot_meta().index;
    assert!(snapshot > 0 && snapshot < applied);
    c.run_for(ms(10));
    assert_eq!(c.node(id).role(), Role::Leader);
    assert_eq!(c.node(id).applied_index(), applied + 1, "the tail replayed, plus a new no-op");
    let replayed: Vec<u64> = c.applied[0]
        .iter()
        .rev()
        .take((applied + 1 - snapshot) as usize)
        .map(|c| c.index)
        .collect();
    assert_eq!(replayed.len() as u64, applied + 1 - snapshot);
}

#[test]
fn a_snapshot_taken_after_a_newer_install_is_ignored() {
    let mut c = Cluster::new(1, |_| {});
    let id = NodeId(1);
    propose_n(&mut c, 1, 5);
    let mut out = RaftOutput::new();
    let node = &mut c.nodes[0];
    assert!(node.trigger_snapshot(&mut out));
    assert!(!node.trigger_snapshot(&mut out), "one at a time");
    assert_eq!(out.snapshots, vec![SnapshotAction::Take { index: 6 }]);
    node.snapshot_taken(Time::ZERO, 9, 10, &mut out);
    assert!(out.writes.is_empty(), "an index beyond applied is not ours");
    node.snapshot_taken(Time::ZERO, 6, 10, &mut out);
    assert_eq!(out.writes.len(), 1);
    node.snapshot_taken(Time::ZERO, 6, 10, &mut out);
    assert_eq!(out.writes.len(), 1, "stale");
    assert_eq!(c.node(id).snapshot_meta().index, 6);
}

#[test]
fn a_snapshot_later_than_requested_answers_the_request() {
    let mut c = Cluster::new(1, |_| {});
    propose_n(&mut c, 1, 5);
    let mut out = RaftOutput::new();
    assert!(c.nodes[0].trigger_snapshot(&mut out));
    assert_eq!(out.snapshots, vec![SnapshotAction::Take { index: 6 }]);
    // The host is slow: by the time it snapshots, 3 more are applied, and it
    // snapshots what it has.
    propose_n(&mut c, 6, 3);
    assert_eq!(c.nodes[0].applied_index(), 9);
    let bytes = snapshot_bytes(9);
    let meta = SnapshotMeta { index: 9, epoch: 0, size_bytes: bytes.len() as u64 };
    c.snapshots[0] = Some((meta, bytes));
    let mut out = RaftOutput::new();
    c.nodes[0].snapshot_taken(c.now, 9, meta.size_bytes, &mut out);
    assert_eq!(c.nodes[0].snapshot_meta().index, 9);
    c.handle_output(NodeId(1), out);
    propose_n(&mut c, 9, 1);
    let mut out = RaftOutput::new();
    assert!(c.nodes[0].trigger_snapshot(&mut out), "the request at 6 was answered by 9");
    // An answer older than the request does not answer it.
    let node = &mut c.nodes[0];
    node.snapshot_taken(Time::ZERO, 9, 10, &mut out);
    assert!(!node.trigger_snapshot(&mut out), "the request at 10 is still out");
}

#[test]
fn a_failed_snapshot_is_asked_for_again_after_a_backoff() {
    let mut c = Cluster::new(1, |cfg| cfg.snapshot_interval_entries = 5);
    c.fail_takes = true;
    propose_n(&mut c, 1, 4);
    assert_eq!(c.takes[0], 1, "the policy asked at 5");
    assert_eq!(c.node(NodeId(1)).snapshot_meta().index, 0);
    // The snapshotter keeps failing: the core asks again about once per
    // minimum election timeout (150 ms), even with nothing applied.
    c.run_for(ms(1_000));
    assert!((5..=8).contains(&c.takes[0]), "{} takes in 1 s", c.takes[0]);
    assert_eq!(c.node(NodeId(1)).snapshot_meta().index, 0);
    // It recovers: the next retry succeeds, and the log is compacted.
    c.fail_takes = false;
    c.run_for(ms(200));
    let node = c.node(NodeId(1));
    assert_eq!(node.snapshot_meta().index, node.applied_index());
    assert!(node.snapshot_meta().index >= 5);
    // A failure reported for an index never requested changes nothing.
    let takes = c.takes[0];
    c.nodes[0].snapshot_failed(c.now, 3);
    c.run_for(ms(1_000));
    assert_eq!(c.takes[0], takes);
}

#[test]
fn random_faults_with_frequent_snapshots_stay_safe_and_live() {
    for seed in 0..SEEDS / 2 {
        let c = run_faults_configured(seed, false, InjectedBug::None, snapshotting);
        check_caught_up(seed, &c);
    }
}

#[test]
fn reordered_and_duplicated_chunks_stay_safe_and_live() {
    for seed in 0..SEEDS / 2 {
        let c = run_faults_configured(seed, true, InjectedBug::None, snapshotting);
        check_caught_up(seed, &c);
    }
}
