//! Snapshot, compaction and bounded-promise tests of the Multi-Paxos node,
//! over the snapshot-hosting test cluster of `node_tests`.

use super::tests::{Cluster, cmd};
use super::*;
use crate::multi::message::Value;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use synod_core::command::{ClientId, Command};
use synod_core::protocol::{SnapshotAction, SnapshotMeta};

/// A snapshot every 4 chosen slots, 2 trailing slots kept, chunks of 16
/// bytes (two positions of the test state machine).
fn config(n: u64) -> Config {
    let mut c = Config::new((1..=n).map(NodeId).collect());
    c.snapshot_interval_slots = 4;
    c.snapshot_trailing_slots = 2;
    c.snapshot_chunk_bytes = 16;
    c
}

/// A cluster of `n` where n1 leads.
fn led_by_1(config: Config) -> Cluster {
    let mut c = Cluster::with_config(config);
    c.campaign(1);
    c.deliver_all();
    assert_eq!(c.node(1).role(), Role::Leader);
    c
}

/// n1 proposes commands `seqs`, one slot each, delivering after each.
fn commit(c: &mut Cluster, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        c.call(1, |n, now, out| n.propose(now, vec![cmd(seq)], out)).expect("n1 leads");
        c.deliver_all();
    }
}

fn kinds(c: &Cluster, kind: &str) -> usize {
    c.sent.iter().filter(|k| **k == kind).count()
}

#[test]
fn every_node_snapshots_every_n_slots_and_keeps_only_the_trailing_ones() {
    let mut c = led_by_1(config(3));
    let mut max_log = 0;
    for seq in 1..=40 {
        commit(&mut c, seq..=seq);
        for id in 1..=3 {
            max_log = max_log.max(c.node(id).log_len());
        }
    }
    c.advance(60);
    c.deliver_all();
    for id in 1..=3 {
        let n = c.node(id);
        let snap = n.snapshot_point();
        assert!(snap.slot >= 36 && snap.slot % 4 <= 1, "n{id} snapshot at {}", snap.slot);
        assert_eq!(n.purged_slot(), snap.slot - 2, "n{id} keeps two trailing slots");
        assert_eq!(c.disks[id as usize - 1].purged_slot, n.purged_slot(), "n{id} disk");
        assert_eq!(c.disks[id as usize - 1].snapshot, snap);
        assert_eq!(
            snap.meta.index,
            c.committed[id as usize - 1][..snap.meta.index as usize].len() as u64
        );
    }
    // 4 between snapshots, 2 trailing, one in flight.
    assert!(max_log <= 4 + 2 + 1, "a log held {max_log} slots");
    assert_eq!(c.client_commands(3), (1..=40).collect::<Vec<_>>());
}

#[test]
fn a_restart_starts_from_the_snapshot_and_the_log_tail() {
    let mut c = led_by_1(config(3));
    commit(&mut c, 1..=10);
    let before = c.commands(2);
    let snap = c.node(2).snapshot_point();
    assert!(snap.exists());
    c.crash(2);
    c.restart(2);
    let n = c.node(2);
    assert_eq!(n.chosen_slot(), snap.slot);
    assert_eq!(n.status().applied_index, snap.meta.index);
    assert_eq!(n.purged_slot(), snap.slot - 2);
    assert!(n.entry(snap.slot + 1).is_some(), "the tail after the snapshot is kept");
    assert_eq!(c.commands(2), before[..snap.meta.index as usize].to_vec());
    // The rest is learned again from the leader.
    commit(&mut c, 11..=11);
    c.advance(60);
    c.deliver_all();
    assert_eq!(c.client_commands(2), (1..=11).collect::<Vec<_>>());
}

#[test]
fn a_crashed_follower_behind_the_purged_prefix_catches_up_by_chunked_snapshot() {
    let mut c = led_by_1(config(3));
    c.crash(3);
    commit(&mut c, 1..=20);
    let leader_snapshot = c.node(1).snapshot_point();
    assert!(c.node(1).purged_slot() > 1, "the leader purged what n3 misses");
    c.restart(3);
    c.sent.clear();
    c.advance(60);
    c.deliver_all();
    let n3 = c.node(3);
    assert_eq!(n3.snapshot_point(), leader_snapshot, "n3 installed the leader's snapshot");
    assert_eq!(n3.chosen_slot(), c.node(1).chosen_slot(), "and caught up on the rest");
    assert_eq!(c.commands(3), c.commands(1));
    let chunks = leader_snapshot.meta.size_bytes.div_ceil(16) as usize;
    assert_eq!(kinds(&c, "snapshot"), chunks, "one message per chunk");
    assert_eq!(kinds(&c, "snapshot_ack"), chunks);
    // The installed snapshot is durable: a restart keeps it.
    c.crash(3);
    c.restart(3);
    assert_eq!(c.node(3).snapshot_point(), leader_snapshot);
    assert_eq!(c.disks[2].purged_slot, leader_snapshot.slot);
}

#[test]
fn a_lost_chunk_is_resent_from_where_the_follower_stopped() {
    let mut c = led_by_1(config(3));
    c.crash(3);
    commit(&mut c, 1..=20);
    c.restart(3);
    c.advance(60);
    // Lose the third chunk.
    let seen = RefCell::new(0);
    c.deliver(|_, _, m| {
        matches!(m, Message::Snapshot { .. }) && {
            *seen.borrow_mut() += 1;
            *seen.borrow() == 3
        }
    });
    assert!(c.node(3).snapshot_point().slot == 0, "stalled on the lost chunk");
    c.sent.clear();
    c.advance(60);
    c.deliver_all();
    let snap = c.node(1).snapshot_point();
    assert_eq!(c.node(3).snapshot_point(), snap);
    assert_eq!(c.commands(3), c.commands(1));
    let chunks = snap.meta.size_bytes.div_ceil(16) as usize;
    assert_eq!(kinds(&c, "snapshot"), chunks - 2, "resumed at the third chunk");
}

#[test]
fn a_crash_mid_install_restarts_the_transfer() {
    let mut c = led_by_1(config(3));
    c.crash(3);
    commit(&mut c, 1..=20);
    c.restart(3);
    c.advance(60);
    // Deliver two chunks to n3, then crash it.
    let seen = RefCell::new(0);
    c.deliver(|_, to, m| {
        to == NodeId(3) && matches!(m, Message::Snapshot { .. }) && {
            *seen.borrow_mut() += 1;
            *seen.borrow() > 2
        }
    });
    assert!(c.partial[2].is_some(), "n3 holds a partial snapshot");
    c.crash(3);
    c.restart(3);
    assert_eq!(c.node(3).snapshot_point().slot, 0, "a partial snapshot is not recovered");
    for _ in 0..3 {
        c.advance(60);
        c.deliver_all();
    }
    assert_eq!(c.node(3).snapshot_point(), c.node(1).snapshot_point());
    assert_eq!(c.commands(3), c.commands(1));
}

#[test]
fn a_candidate_behind_an_acceptors_purged_prefix_gets_its_snapshot_and_wins() {
    let mut c = led_by_1(config(3));
    c.crash(3);
    commit(&mut c, 1..=20);
    let chosen = c.commands(1);
    let n2_snapshot = c.node(2).snapshot_point();
    assert!(c.node(2).purged_slot() > 0);
    c.crash(1);
    c.restart(3);
    c.sent.clear();
    c.campaign(3);
    c.deliver_all();
    assert_eq!(kinds(&c, "promise"), 1, "only the campaign after the install is promised");
    assert!(kinds(&c, "snapshot") > 1, "n2 sent its snapshot in chunks");
    assert_eq!(c.node(3).role(), Role::Leader);
    assert_eq!(c.node(3).snapshot_point(), n2_snapshot);
    c.call(3, |n, now, out| n.propose(now, vec![cmd(99)], out)).expect("n3 leads");
    c.deliver_all();
    c.advance(60);
    c.deliver_all();
    let mut expected: Vec<u64> = chosen.iter().flatten().copied().collect();
    expected.push(99);
    assert_eq!(c.client_commands(3), expected, "every chosen command kept");
    assert_eq!(c.client_commands(2), expected);
}

#[test]
fn a_promise_comes_in_bounded_parts_and_every_part_is_adopted() {
    let mut config = Config::new((1..=3).map(NodeId).collect());
    config.max_values_per_promise = 2;
    let mut c = led_by_1(config);
    // Slots 2..=6 reach only n2.
    for seq in 1..=5 {
        c.call(1, |n, now, out| n.propose(now, vec![cmd(seq)], out)).expect("n1 leads");
    }
    c.deliver(|_, to, _| to == NodeId(3));
    c.crash(1);
    let parts = RefCell::new(Vec::new());
    c.campaign(3);
    c.deliver(|from, _, m| {
        if let Message::Promise { accepted, more, .. } = m
            && from == NodeId(2)
        {
            parts.borrow_mut().push((accepted.len(), *more));
        }
        false
    });
    assert_eq!(
        parts.into_inner(),
        vec![(2, true), (2, true), (2, false)],
        "n2's six slots in parts of at most two"
    );
    assert_eq!(c.node(3).role(), Role::Leader);
    assert_eq!(c.client_commands(3), vec![1, 2, 3, 4, 5], "adopted from every part");
}

/// A command of `bytes` bytes.
fn big(seq: u64, bytes: usize) -> Command {
    Command::new(ClientId(1), seq, Bytes::from(vec![seq as u8; bytes]))
}

#[test]
fn a_promise_of_large_slots_is_split_by_bytes_as_well_as_by_count() {
    let mut config = Config::new((1..=3).map(NodeId).collect());
    config.max_bytes_per_message = 2_500;
    let mut c = led_by_1(config);
    // Slots 2..=6 (1,000-byte commands) reach only n2.
    for seq in 1..=5 {
        c.call(1, |n, now, out| n.propose(now, vec![big(seq, 1_000)], out)).expect("n1 leads");
    }
    c.deliver(|_, to, _| to == NodeId(3));
    c.crash(1);
    let parts = RefCell::new(Vec::new());
    c.campaign(3);
    c.deliver(|from, _, m| {
        if let Message::Promise { accepted, more, .. } = m
            && from == NodeId(2)
        {
            let bytes: usize = accepted.iter().map(|(_, e)| e.value.size_bytes()).sum();
            assert!(bytes <= 2_500 || accepted.len() == 1, "a promise of {bytes} bytes");
            parts.borrow_mut().push((accepted.len(), *more));
        }
        false
    });
    let parts = parts.into_inner();
    assert!(parts.len() >= 3, "six slots of ~1 KiB in parts of at most 2,500 bytes: {parts:?}");
    assert_eq!(parts.iter().map(|(n, _)| n).sum::<usize>(), 6, "every slot reported once");
    assert_eq!(c.node(3).role(), Role::Leader);
    assert_eq!(c.client_commands(3), vec![1, 2, 3, 4, 5], "adopted from every part");
}

#[test]
fn catch_up_accepts_of_large_slots_are_split_by_bytes() {
    let mut config = Config::new((1..=3).map(NodeId).collect());
    config.max_bytes_per_message = 2_500;
    let mut c = led_by_1(config);
    c.crash(3);
    for seq in 1..=8 {
        c.call(1, |n, now, out| n.propose(now, vec![big(seq, 1_000)], out)).expect("n1 leads");
    }
    c.deliver_all();
    c.restart(3);
    let largest = Cell::new(0usize);
    for _ in 0..20 {
        c.now = c.now + std::time::Duration::from_millis(60);
        c.call(1, |n, now, out| n.tick(now, out));
        c.deliver(|_, _, m| {
            if let Message::Accept { values, .. } = m {
                let bytes: usize = values.iter().map(Value::size_bytes).sum();
                assert!(bytes <= 2_500 || values.len() == 1, "an accept of {bytes} bytes");
                largest.set(largest.get().max(values.len()));
            }
            false
        });
    }
    assert_eq!(c.client_commands(3), (1..=8).collect::<Vec<_>>(), "caught up in bounded parts");
    assert_eq!(largest.get(), 2, "two ~1 KiB slots fit in 2,500 bytes, three do not");
}

#[test]
fn accepts_into_the_purged_prefix_are_acknowledged_but_not_stored() {
    let mut c = led_by_1(config(3));
    commit(&mut c, 1..=10);
    let purged = c.node(2).purged_slot();
    assert!(purged >= 3);
    let ballot = c.node(1).ballot();
    let disk_before = c.disks[1].clone();
    let accept = Message::Accept {
        ballot,
        first_slot: 1,
        values: vec![Value::Noop; purged as usize + 1],
        chosen_slot: 0,
        read_round: 0,
    };
    let count = c.queue.len();
    c.call(2, |n, now, out| n.step(now, NodeId(1), accept, out));
    assert_eq!(c.disks[1].purged_slot, disk_before.purged_slot);
    assert_eq!(c.disks[1].log.len(), disk_before.log.len(), "only slot {} rewritten", purged + 1);
    let answer = c.queue.get(count).map(|(_, _, m)| m.clone());
    assert!(
        matches!(answer, Some(Message::Accepted { first_slot: 1, last_slot, .. }) if last_slot == purged + 1),
        "{answer:?}"
    );
}

#[test]
fn a_snapshot_of_later_slots_ending_before_the_applied_position_is_refused() {
    let mut c = led_by_1(Config::new((1..=3).map(NodeId).collect()));
    commit(&mut c, 1..=3);
    let (ballot, chosen) = (c.node(1).ballot(), c.node(2).chosen_slot());
    assert!(chosen >= 2, "n2 learned the no-op and a command chosen: {chosen}");
    // Slots beyond n2's, but positions it already applied: no correct
    // leader sends this (every slot holds at least one position).
    let meta = SnapshotMeta { index: 1, epoch: 1, size_bytes: 4 };
    let point = SnapshotPoint { slot: chosen + 5, meta };
    let bogus = Message::Snapshot { ballot, point, offset: 0, data: Bytes::from_static(b"abcd") };
    let count = c.queue.len();
    c.call(2, |n, now, out| n.step(now, NodeId(1), bogus, out));
    assert_eq!(c.node(2).snapshot_point(), SnapshotPoint::default(), "nothing installed");
    assert_eq!(c.node(2).chosen_slot(), chosen);
    assert_eq!(c.queue.len(), count, "not acknowledged either");
    commit(&mut c, 4..=4);
    c.advance(60);
    c.deliver_all();
    assert_eq!(c.client_commands(2), vec![1, 2, 3, 4], "n2 goes on following n1");
}

#[test]
fn trigger_snapshot_asks_once_and_only_with_something_new() {
    let mut c = led_by_1(Config::new((1..=3).map(NodeId).collect()));
    commit(&mut c, 1..=3);
    let mut out = PaxosOutput::new();
    let n = c.nodes[0].as_mut().expect("live");
    assert!(n.trigger_snapshot(&mut out));
    assert!(!n.trigger_snapshot(&mut out), "one at a time");
    assert_eq!(out.snapshots, vec![SnapshotAction::Take { index: 4 }]);
    n.snapshot_taken(Time::ZERO, 4, 32, &mut out);
    assert_eq!(n.snapshot_point().slot, 4);
    assert!(!n.trigger_snapshot(&mut out), "nothing chosen since");
}

/// Time passes by `ms` in steps of 10 ms, every message delivered.
fn run_for(c: &mut Cluster, ms: u64) {
    for _ in 0..ms / 10 {
        c.advance(10);
        c.deliver_all();
    }
}

#[test]
fn a_failed_snapshot_is_asked_for_again_after_a_back_off() {
    let mut c = led_by_1(config(3));
    c.fail_takes = true;
    // The no-op and three commands: slot 4 is chosen, the policy asks.
    commit(&mut c, 1..=3);
    assert_eq!(c.takes[0], 1, "the policy asked at slot 4");
    assert!(!c.node(1).snapshot_point().exists());
    // While it backs off, newly chosen slots do not ask again at once.
    commit(&mut c, 4..=8);
    assert_eq!(c.takes[0], 1, "no retry before the back-off ends");
    // The host keeps failing: the core asks again about once per minimum
    // election timeout (150 ms), each node on its own, even when idle.
    run_for(&mut c, 1_000);
    for i in 0..3 {
        assert!((6..=8).contains(&c.takes[i]), "n{}: {} takes in 1 s", i + 1, c.takes[i]);
    }
    assert!(!c.node(1).snapshot_point().exists());
    // It recovers: the next retry succeeds, and the log is purged.
    c.fail_takes = false;
    run_for(&mut c, 200);
    for id in 1..=3 {
        let n = c.node(id);
        assert_eq!(n.snapshot_point().slot, n.chosen_slot(), "n{id}");
        assert_eq!(n.purged_slot(), n.chosen_slot() - 2, "n{id} keeps two trailing slots");
    }
    // A failure reported for a position never asked for changes nothing.
    let takes = c.takes.clone();
    c.call(1, |n, now, _| n.snapshot_failed(now, 3));
    run_for(&mut c, 1_000);
    assert_eq!(c.takes, takes);
    assert_eq!(c.client_commands(3), (1..=8).collect::<Vec<_>>());
}
