//! Multi-Paxos scenarios in the simulator: the steady-state cost of a
//! command, re-election with adoption of accepted values after the leader
//! crashes, and a partitioned minority that cannot make progress.

use bytes::Bytes;
use std::time::Duration;
use synod_core::kv::{KvOp, KvResult};
use synod_core::{ClientId, Command, NodeId, Role};
use synod_paxos::PaxosNode;
use synod_sim::{ProtocolKind, Sim, SimOptions};

fn sim(seed: u64) -> Sim<PaxosNode> {
    let o = SimOptions { protocol: ProtocolKind::Paxos, clients: 0, ..SimOptions::default() };
    let mut sim = Sim::<PaxosNode>::new(&o, seed).expect("valid options");
    assert!(sim.run_until(|s| s.leader().is_some(), Duration::from_secs(3)), "a leader");
    sim.run_for(Duration::from_millis(100));
    sim
}

fn count(sim: &Sim<PaxosNode>, kind: &str) -> u64 {
    sim.metrics().by_kind.iter().find(|k| k.kind == kind).map_or(0, |k| k.messages)
}

fn command(seq: u64, op: &'static str) -> Command {
    Command::new(ClientId(999), seq, Bytes::from_static(op.as_bytes()))
}

fn holds(sim: &Sim<PaxosNode>, node: NodeId, seq: u64) -> bool {
    sim.committed_on(node)
        .iter()
        .any(|c| c.command.as_ref().is_some_and(|c| c.client == ClientId(999) && c.seq == seq))
}

#[test]
fn steady_state_commits_in_two_message_delays_with_o_n_messages() {
    let mut sim = sim(1);
    let leader = sim.leader().expect("leader");
    let n = sim.nodes() as u64;
    let (accepts, accepteds) = (count(&sim, "accept"), count(&sim, "accepted"));
    for seq in 1..=10 {
        sim.propose(leader, command(seq, "put")).expect("the leader takes proposals");
        // One hop is 1–1.5 ms and an fsync 0.1–0.5 ms: two hops and two
        // fsyncs take at most 4 ms, and more than 2 ms.
        sim.run_for(Duration::from_millis(2));
        assert!(!holds(&sim, leader, seq), "chosen faster than two message delays?");
        sim.run_for(Duration::from_millis(2));
        assert!(holds(&sim, leader, seq), "command {seq} not chosen within two message delays");
        sim.run_for(Duration::from_millis(1));
    }
    let accepts = count(&sim, "accept") - accepts;
    let accepteds = count(&sim, "accepted") - accepteds;
    // One accept per follower per command, and one answer each (heartbeats
    // are counted apart, and their answers are at most one per heartbeat).
    assert_eq!(accepts, 10 * (n - 1), "accepts");
    assert!(accepteds >= 10 * (n - 1) && accepteds <= 10 * (n - 1) + 4 * (n - 1), "{accepteds}");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn a_new_leader_adopts_a_value_only_the_followers_accepted() {
    let mut sim = sim(2);
    let old = sim.leader().expect("leader");
    // The followers accept, but their answers never reach the leader, so no
    // one knows the value is chosen.
    for i in 1..=5 {
        if NodeId(i) != old {
            sim.block(NodeId(i), old);
        }
    }
    sim.propose(old, command(1, "adopt me")).expect("leader");
    sim.run_for(Duration::from_millis(10));
    assert!(!holds(&sim, old, 1));
    let epoch = sim.status(old).expect("up").epoch;
    sim.crash(old);
    sim.heal();
    let reelected = |s: &Sim<PaxosNode>| s.leaders().iter().any(|&(l, e)| l != old && e > epoch);
    assert!(sim.run_until(reelected, Duration::from_secs(3)), "re-election");
    sim.run_for(Duration::from_millis(100));
    for i in 1..=5 {
        if NodeId(i) != old {
            assert!(holds(&sim, NodeId(i), 1), "n{i} lacks the adopted command");
        }
    }
    sim.restart(old);
    sim.run_for(Duration::from_millis(500));
    assert!(holds(&sim, old, 1), "the old leader caught up after restarting");
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn a_partitioned_minority_makes_no_progress_and_catches_up_after() {
    let mut sim = sim(3);
    let old = sim.leader().expect("leader");
    let buddy = NodeId(old.0 % 5 + 1);
    let majority: Vec<u64> = (1..=5).filter(|&i| i != old.0 && i != buddy.0).collect();
    sim.partition(&[&[old.0, buddy.0], &majority]);
    let before = sim.committed_on(old).len();
    let _ = sim.propose(old, command(1, "lost"));
    let put = sim.submit_to(NodeId(majority[0]), KvOp::Put { key: "k".into(), value: "v".into() });
    assert_eq!(sim.wait(put, Duration::from_secs(5)), Some(KvResult::Done));
    assert_eq!(sim.committed_on(old).len(), before, "the minority chose nothing");
    assert_eq!(sim.committed_on(buddy).len(), before);
    assert_ne!(sim.status(old).map(|s| s.role), Some(Role::Leader), "check-quorum stepped down");
    sim.heal();
    sim.run_for(Duration::from_secs(1));
    for i in 1..=5 {
        assert_eq!(sim.kv_get(NodeId(i), b"k"), Some(Bytes::from("v")), "n{i}");
        assert!(!holds(&sim, NodeId(i), 1), "the minority's proposal was never chosen");
    }
    assert!(sim.check_linearizable().is_ok());
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}
