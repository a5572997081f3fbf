//! PBFT snapshot checkpoints (OSDI'99 §4.3, TOCS §6): replicas discard the
//! executed history below a stable snapshot checkpoint, a replica that
//! fell behind it fetches the snapshot itself (checked byte for byte
//! against the SHA-256 a quorum signed), and a faulty peer serving wrong
//! bytes is caught and another one serves.
//!
//! The simulator's PBFT takes a snapshot at every checkpoint (K = 128).

mod pbft_common;

use pbft_common::{core, put, summaries};
use std::time::Duration;
use synod_core::NodeId;
use synod_pbft::PbftNode;
use synod_sim::{ProtocolKind, Sim, SimOptions};

fn options() -> SimOptions {
    SimOptions { protocol: ProtocolKind::Pbft, nodes: 4, clients: 0, ..SimOptions::default() }
}

/// `count` writes one after another (each its own batch: one sequence
/// number each), keys `k{first}`..
fn writes(sim: &mut Sim<PbftNode>, first: u64, count: u64) {
    for i in first..first + count {
        let op = sim.submit(put(&format!("k{i}"), &i.to_string()));
        assert!(sim.wait(op, Duration::from_secs(10)).is_some(), "write {i}:\n{}", summaries(sim));
    }
}

/// Every replica in `nodes` holds the same value as n2 for every key
/// written.
fn same_state(sim: &Sim<PbftNode>, nodes: &[u64], keys: u64) {
    for i in 0..keys {
        let key = format!("k{i}");
        let want = sim.kv_get(NodeId(2), key.as_bytes());
        assert!(want.is_some(), "n2 lacks {key}");
        for &n in nodes {
            assert_eq!(sim.kv_get(NodeId(n), key.as_bytes()), want, "n{n} at {key}");
        }
    }
}

#[test]
fn every_replica_discards_its_history_below_a_stable_snapshot() {
    let mut sim = Sim::<PbftNode>::new(&options(), 1).expect("valid options");
    writes(&mut sim, 0, 420);
    sim.run_for(Duration::from_secs(1));
    let k = core(&sim, 1).config().checkpoint_interval;
    for n in 1..=4 {
        let c = core(&sim, n);
        let s =
            c.adopted_snapshot().unwrap_or_else(|| panic!("n{n} adopted none: {}", c.summary()));
        // Three snapshot checkpoints passed (128, 256, 384); the latest
        // stable one is adopted, and nothing below it is held.
        assert_eq!(s.manifest.seq, 3 * k, "n{n}");
        assert_eq!(c.history_base(), s.manifest.seq, "n{n}");
        assert_eq!(s.proof.seq, s.manifest.seq);
        assert_eq!(s.proof.state, s.manifest.state(), "the proof is of this manifest");
        assert!(c.executed_batch(s.manifest.seq).is_none(), "n{n} kept a discarded batch");
        assert!(c.executed_batch(s.manifest.seq + 1).is_some(), "n{n} lost a batch above it");
        // The durable state dropped the batches too.
        let d = sim.durable(NodeId(n));
        assert_eq!(d.executed_base(), s.manifest.seq, "n{n}: journal not compacted");
        assert_eq!(d.executed.len() as u64, c.executed_seq() - s.manifest.seq);
    }
    // All four took the same snapshot (one digest signed by all).
    let sha = core(&sim, 1).adopted_snapshot().expect("adopted").manifest.sha256;
    for n in 2..=4 {
        assert_eq!(core(&sim, n).adopted_snapshot().expect("adopted").manifest.sha256, sha);
    }
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

/// n4 is cut off while the others run past two snapshot checkpoints; after
/// the heal it must install a snapshot (the batches below are gone at every
/// peer), then execute the rest, then survive a restart from that state.
fn laggard_installs_a_snapshot(seed: u64) {
    let mut sim = Sim::<PbftNode>::new(&options(), seed).expect("valid options");
    writes(&mut sim, 0, 5);
    sim.isolate(NodeId(4));
    writes(&mut sim, 5, 300);
    assert!(core(&sim, 1).history_base() >= 256, "{}", summaries(&sim));
    assert!(core(&sim, 4).executed_seq() <= 5);
    sim.heal();
    let caught_up = sim.run_until(
        |s| core(s, 4).executed_seq() >= core(s, 1).executed_seq(),
        Duration::from_secs(10),
    );
    assert!(caught_up, "seed {seed}: n4 did not catch up:\n{}", summaries(&sim));
    let n4 = core(&sim, 4);
    assert!(n4.installed_snapshots() >= 1, "seed {seed}: caught up without a snapshot");
    assert!(n4.history_base() >= 256, "seed {seed}: {}", n4.summary());
    same_state(&sim, &[1, 3, 4], 305);
    // New writes execute at n4 too.
    writes(&mut sim, 305, 3);
    let done = sim.run_until(|s| s.kv_get(NodeId(4), b"k307").is_some(), Duration::from_secs(5));
    assert!(done, "seed {seed}: n4 did not execute a new write:\n{}", summaries(&sim));
    // And a restart rebuilds it from the installed snapshot plus the
    // batches above it.
    sim.crash(NodeId(4));
    sim.restart(NodeId(4));
    sim.run_for(Duration::from_millis(500));
    assert!(core(&sim, 4).adopted_snapshot().is_some(), "seed {seed}: snapshot lost in restart");
    same_state(&sim, &[4], 308);
    assert!(sim.violations().is_empty(), "seed {seed}: {:?}", sim.violations());
    assert!(sim.check_linearizable().is_ok(), "seed {seed}");
}

#[test]
fn a_replica_cut_off_past_two_snapshots_installs_one_and_catches_up() {
    for seed in 1..=4 {
        laggard_installs_a_snapshot(seed);
    }
}

/// Seven replicas (f = 2), n1 Byzantine (`wrong-digest`: among other lies
/// it flips a byte of every snapshot chunk it serves, under a valid MAC),
/// so that the others still make progress with n4 cut off. n4 falls behind;
/// after the partition heals it first hears n1 alone, which offers its
/// snapshot and serves wrong bytes: the SHA-256 over them does not match
/// the manifest a quorum signed, so nothing is installed (`bad_digest`).
/// Once n4 hears the others, a correct peer's bytes install.
#[test]
fn wrong_snapshot_bytes_from_a_byzantine_peer_are_caught() {
    for seed in 1..=3 {
        let o =
            SimOptions { byzantine: 1, attack: Some("wrong-digest".into()), nodes: 7, ..options() };
        let mut sim = Sim::<PbftNode>::new(&o, seed).expect("valid options");
        writes(&mut sim, 0, 5);
        sim.isolate(NodeId(4));
        writes(&mut sim, 5, 300);
        sim.heal();
        for n in [2, 3, 5, 6, 7] {
            sim.block(NodeId(n), NodeId(4));
        }
        sim.run_for(Duration::from_secs(3));
        let m = sim.metrics();
        let served = m.attack.get("wrong snapshot chunks").copied().unwrap_or(0);
        assert!(served > 0, "seed {seed}: n1 served no chunk: {:?}", m.attack);
        let n4 = core(&sim, 4);
        assert!(n4.auth_stats().bad_digest > 0, "seed {seed}: wrong bytes not caught");
        assert_eq!(n4.installed_snapshots(), 0, "seed {seed}: installed n1's bytes");
        assert!(n4.executed_seq() < 256, "seed {seed}: {}", n4.summary());
        sim.heal();
        let caught_up = sim.run_until(
            |s| core(s, 4).executed_seq() >= core(s, 2).executed_seq(),
            Duration::from_secs(20),
        );
        assert!(caught_up, "seed {seed}: n4 did not catch up:\n{}", summaries(&sim));
        assert!(core(&sim, 4).installed_snapshots() >= 1, "seed {seed}");
        same_state(&sim, &[3, 4], 305);
        assert!(sim.violations().is_empty(), "seed {seed}: {:?}", sim.violations());
    }
}
