//! A PBFT replica that is behind in view learns the current view from its
//! peers instead of suspecting the primary and running ahead alone (TOCS'02
//! §5, Castro's thesis: STATUS messages, and a replica learning the current
//! view from its peers).
//!
//! The scenario seen on real processes (`crates/cli/tests/pbft_cluster.rs`):
//! the primary of view 0 is killed, the other three move to view 1 and run
//! past a stable checkpoint; the old primary restarts from its durable state
//! in view 0, receives requests, and for a while hears only some of the
//! others (on a node: their connections to it come back one by one). Before
//! the fix its request timer expired while it could not catch up and it
//! asked for view 2 alone, where it stayed (views never go back; nobody
//! joins a lone VIEW-CHANGE), serving no write and no linearizable read.

mod pbft_common;

use pbft_common::{core, put, summaries};
use std::time::Duration;
use synod_core::{ClientId, Command, NodeId};
use synod_pbft::PbftNode;
use synod_sim::{ProtocolKind, Sim, SimOptions};

/// A fault-free 4-replica cluster (f = 1) with no workload clients.
fn quiet(seed: u64) -> Sim<PbftNode> {
    let o =
        SimOptions { protocol: ProtocolKind::Pbft, nodes: 4, clients: 0, ..SimOptions::default() };
    Sim::<PbftNode>::new(&o, seed).expect("valid options")
}

/// A request of the test's own client (as a node's proxy client would
/// send it to its own replica only).
fn request(seq: u64) -> Command {
    Command::new(ClientId(1_000), seq, put(&format!("p{seq}"), "x").encode())
}

/// Kills the primary of view 0, has the others change view and order 300
/// writes (past the stable checkpoint at 256), and restarts it with only
/// the new primary (n2) able to reach it, proposing a request at it.
fn restart_old_primary_behind(seed: u64) -> Sim<PbftNode> {
    let mut sim = quiet(seed);
    let op = sim.submit(put("a", "0"));
    assert!(sim.wait(op, Duration::from_secs(5)).is_some(), "{}", summaries(&sim));
    sim.crash(NodeId(1));
    for i in 0..300 {
        let op = sim.submit(put("b", &i.to_string()));
        assert!(sim.wait(op, Duration::from_secs(10)).is_some(), "{}", summaries(&sim));
    }
    for n in 2..=4 {
        assert_eq!((core(&sim, n).view(), core(&sim, n).is_active()), (1, true));
    }
    sim.block(NodeId(3), NodeId(1));
    sim.block(NodeId(4), NodeId(1));
    sim.restart(NodeId(1));
    sim.propose(NodeId(1), request(1)).expect("accepted");
    sim
}

#[test]
fn a_restarted_primary_learns_the_current_view_and_executes_new_requests() {
    for seed in 1..=4 {
        restarted_primary_rejoins(seed);
    }
}

fn restarted_primary_rejoins(seed: u64) {
    let mut sim = restart_old_primary_behind(seed);
    // Several request timeouts (300 ms) while it hears only n2: it learns
    // view 1 from n2's NEW-VIEW, cannot execute (n3's and n4's votes do not
    // reach it), and must not suspect n2 for that.
    sim.run_for(Duration::from_secs(3));
    sim.propose(NodeId(1), request(2)).expect("accepted");
    sim.run_for(Duration::from_secs(1));
    let n1 = core(&sim, 1);
    assert_eq!(
        (n1.view(), n1.is_active()),
        (1, true),
        "seed {seed}: ran ahead:\n{}",
        summaries(&sim)
    );
    assert!(n1.suspicions_deferred() > 0, "its request timer never fired");
    sim.heal();
    // Within a bounded time it is in the others' view and executes new
    // requests proposed at it, and writes of the others.
    sim.propose(NodeId(1), request(3)).expect("accepted");
    let op = sim.submit(put("c", "after"));
    let caught_up = sim.run_until(
        |s| {
            let n1 = core(s, 1);
            let others = core(s, 2).executed_seq();
            n1.view() == core(s, 2).view()
                && n1.is_active()
                && n1.executed_seq() >= others
                && s.kv_get(NodeId(1), b"p3").is_some()
                && s.kv_get(NodeId(1), b"c").is_some()
        },
        Duration::from_secs(5),
    );
    assert!(caught_up, "seed {seed}: n1 did not rejoin:\n{}", summaries(&sim));
    assert!(sim.result(op).is_some(), "the write through the others completed");
    for key in [&b"p1"[..], b"p2", b"p3"] {
        assert!(sim.kv_get(NodeId(2), key).is_some(), "{key:?} proposed at n1 never executed");
    }
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    assert!(sim.check_linearizable().is_ok());
}

/// The view-0 primary (n1) is cut off for longer than δ while the others
/// change view and order writes; it then hears n2 and n4 but not n3 for a
/// few request timeouts (on a node: a peer's reconnect backoff after the
/// replica started late), and finally everything heals.
///
/// The case seen on real processes under load: n1 learns view 1 from the
/// NEW-VIEW and receives, by retransmission, the PRE-PREPAREs n2 stamped
/// seconds ago. It refuses their timestamps (further than δ from its clock)
/// and so sends no PREPARE of its own: preparing them then takes both other
/// backups' PREPAREs, and n3's cannot reach it. Before the fix its request
/// timer expired twice without progress (`Behind` defers once) and it asked
/// for view 2 alone, where it stayed after the heal (nobody joins a lone
/// VIEW-CHANGE and views never go back): one correct replica out of the
/// quorum for good, the cluster's one fault of margin lost.
fn late_primary_refuses_old_timestamps(seed: u64) {
    let mut sim = quiet(seed);
    let op = sim.submit(put("a", "0"));
    assert!(sim.wait(op, Duration::from_secs(5)).is_some(), "{}", summaries(&sim));
    sim.isolate(NodeId(1));
    for i in 0..40 {
        let op = sim.submit(put("b", &i.to_string()));
        assert!(sim.wait(op, Duration::from_secs(10)).is_some(), "{}", summaries(&sim));
    }
    // Longer than δ (the simulator's clock-skew bound) since the last batch.
    sim.run_for(Duration::from_secs(3));
    for n in 2..=4 {
        assert_eq!((core(&sim, n).view(), core(&sim, n).is_active()), (1, true));
    }
    assert_eq!(core(&sim, 1).view(), 0, "n1 was cut off in view 0");
    // What n1 will receive was stamped more than δ before it can (no clock
    // here is behind global time in a run without drift): it refuses these
    // timestamps if nothing tells it they are committed.
    let delta = core(&sim, 2).config().max_clock_skew;
    let last = core(&sim, 2).executed_seq();
    let stamped = core(&sim, 2).executed_batch(last).expect("executed").timestamp;
    assert!(stamped + delta < sim.now(), "seed {seed}: stamped {stamped}, δ {delta:?}");
    sim.heal();
    sim.block(NodeId(3), NodeId(1));
    // Several request timeouts (300 ms) hearing n2 and n4 only.
    sim.run_for(Duration::from_secs(3));
    sim.heal();
    let converged = sim.run_until(
        |s| {
            let (n1, n2) = (core(s, 1), core(s, 2));
            (1..=4).all(|n| {
                let c = core(s, n);
                c.view() == n2.view() && c.is_active() && c.executed_seq() == n2.executed_seq()
            }) && n1.executed_seq() > 0
        },
        Duration::from_secs(5),
    );
    assert!(converged, "seed {seed}: the replicas did not converge:\n{}", summaries(&sim));
    // And n1 takes part in ordering new writes in that view.
    let view = core(&sim, 2).view();
    let op = sim.submit(put("c", "after"));
    assert!(sim.wait(op, Duration::from_secs(5)).is_some(), "{}", summaries(&sim));
    let done = sim.run_until(|s| s.kv_get(NodeId(1), b"c").is_some(), Duration::from_secs(5));
    assert!(done, "seed {seed}: n1 did not execute a new write:\n{}", summaries(&sim));
    for n in 1..=4 {
        assert_eq!(core(&sim, n).view(), view, "seed {seed}: n{n} left view {view}");
    }
    let first = core(&sim, 2).executed_seq().min(core(&sim, 1).executed_seq());
    for seq in 1..=first {
        let d = core(&sim, 2).executed_digest(seq);
        for n in [1, 3, 4] {
            assert_eq!(core(&sim, n).executed_digest(seq), d, "seed {seed}: n{n} at seq {seq}");
        }
    }
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    assert!(sim.check_linearizable().is_ok());
}

#[test]
fn a_late_primary_that_refuses_old_timestamps_does_not_run_ahead_alone() {
    for seed in 1..=4 {
        late_primary_refuses_old_timestamps(seed);
    }
}
