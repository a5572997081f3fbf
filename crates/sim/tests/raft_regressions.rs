//! Regression scenarios for bugs that real Raft libraries shipped, each
//! named after the bug. The first two drive a core directly (the exact
//! message interleaving is the point); the last runs in the simulator.

use bytes::Bytes;
use std::collections::BTreeSet;
use std::time::Duration;
use synod_core::kv::{KvOp, KvResult};
use synod_core::{ClientId, Command, NodeId, Protocol, Role, Time};
use synod_raft::{Config, Durable, Message, RaftNode, RaftOutput};
use synod_sim::{Sim, SimOptions};

/// Node 1 of `n` voters, without pre-vote, driven by hand.
fn node_one(n: u64) -> RaftNode {
    let mut config = Config::new((1..=n).map(NodeId).collect());
    config.pre_vote = false;
    RaftNode::recover(NodeId(1), &config, &Durable::default(), 7, Time::ZERO)
}

/// Ticks `node` until its election timer fires: it is then a candidate.
fn campaign(node: &mut RaftNode) -> Time {
    let now = node.next_deadline();
    node.tick(now, &mut RaftOutput::new());
    assert_eq!(node.role(), Role::Candidate);
    now
}

fn vote(node: &mut RaftNode, now: Time, from: u64, term: u64, granted: bool) {
    let msg = Message::RequestVoteResponse { term, granted };
    node.step(now, NodeId(from), msg, &mut RaftOutput::new());
}

#[test]
fn a_candidate_must_not_count_a_higher_term_vote_as_granted() {
    let mut node = node_one(3);
    let now = campaign(&mut node);
    let term = node.term();
    // A grant carrying a later term (an answer to someone else's election,
    // or a voter that moved on) is not a vote for this candidate in this
    // term: with its own vote it would make 2 of 3.
    vote(&mut node, now, 2, term + 1, true);
    assert_ne!(node.role(), Role::Leader, "counted a vote from term {}", term + 1);
    assert_eq!(node.term(), term + 1, "the higher term is adopted");
    assert_eq!(node.role(), Role::Follower);
}

#[test]
fn a_candidate_must_not_count_a_stale_lower_term_vote_as_granted() {
    let mut node = node_one(3);
    let now = campaign(&mut node);
    let first_term = node.term();
    // Lose that election and start another.
    let now = now + Duration::from_secs(1);
    node.tick(now, &mut RaftOutput::new());
    assert_eq!(node.role(), Role::Candidate);
    assert_eq!(node.term(), first_term + 1);
    // A grant from the first election arrives late.
    vote(&mut node, now, 2, first_term, true);
    assert_eq!(node.role(), Role::Candidate, "a vote of term {first_term} does not count");
    vote(&mut node, now, 3, first_term + 1, true);
    assert_eq!(node.role(), Role::Leader, "a real grant of this term does");
}

fn command(seq: u64) -> Command {
    Command::new(ClientId(1), seq, Bytes::from(format!("op{seq}")))
}

fn ack(node: &mut RaftNode, now: Time, from: u64, term: u64, match_index: u64) {
    let msg = Message::AppendEntriesResponse {
        term,
        success: true,
        match_index,
        conflict_term: 0,
        conflict_index: 0,
        read_round: 0,
    };
    node.step(now, NodeId(from), msg, &mut RaftOutput::new());
}

#[test]
fn committing_without_a_real_quorum_when_progress_tracking_is_reordered() {
    let mut node = node_one(5);
    let now = campaign(&mut node);
    let term = node.term();
    vote(&mut node, now, 2, term, true);
    vote(&mut node, now, 3, term, true);
    assert_eq!(node.role(), Role::Leader);
    let noop_index = node.last_index();
    // Everyone has the no-op.
    for peer in 2..=5 {
        ack(&mut node, now, peer, term, noop_index);
    }
    assert_eq!(node.commit_index(), noop_index);
    node.propose(now, vec![command(1)], &mut RaftOutput::new()).expect("leader");
    let index = node.last_index();
    // Node 2's ack, duplicated three times: one follower, not three.
    for _ in 0..3 {
        ack(&mut node, now, 2, term, index);
    }
    assert_eq!(node.commit_index(), noop_index, "a duplicated ack counted more than once");
    // An ack from an earlier term (reordered from before this leadership)
    // for the same index says nothing about this term's entry.
    ack(&mut node, now, 3, term - 1, index);
    assert_eq!(node.commit_index(), noop_index, "a previous term's ack counted");
    // An ack claiming more than the leader holds is bogus.
    ack(&mut node, now, 4, term, index + 5);
    assert_eq!(node.commit_index(), noop_index, "an ack beyond the log counted");
    // A stale, reordered ack does not move node 2's match back either:
    // node 4's real ack now makes a quorum {1, 2, 4}.
    ack(&mut node, now, 2, term, noop_index);
    assert_eq!(node.progress(NodeId(2)).map(|p| p.match_index), Some(index));
    ack(&mut node, now, 4, term, index);
    assert_eq!(node.commit_index(), index, "a real quorum commits");
}

#[test]
fn a_leader_whose_disk_stalls_must_not_keep_followers_quiet_forever() {
    let o = SimOptions { clients: 0, ..SimOptions::default() };
    let mut sim = Sim::<RaftNode>::new(&o, 5).expect("valid");
    assert!(sim.run_until(|s| s.leader().is_some(), Duration::from_secs(3)));
    let put = |sim: &mut Sim<RaftNode>, key: &str| {
        let op = KvOp::Put { key: Bytes::from(key.to_string()), value: Bytes::from("v") };
        sim.submit(op)
    };
    let first = put(&mut sim, "before");
    assert_eq!(sim.wait(first, Duration::from_secs(3)), Some(KvResult::Done));
    let stalled = sim.leader().expect("leader");
    let epoch = sim.status(stalled).expect("up").epoch;
    // The leader's disk hangs for a minute; it is otherwise healthy (its
    // timers fire, it would happily send heartbeats).
    sim.stall_disk(stalled, Duration::from_secs(60));
    let during = put(&mut sim, "during");
    let moved_on = |s: &Sim<RaftNode>| s.leaders().iter().any(|&(n, e)| n != stalled && e > epoch);
    assert!(
        sim.run_until(moved_on, Duration::from_secs(3)),
        "the followers elect a new leader instead of listening to heartbeats forever"
    );
    assert_eq!(sim.wait(during, Duration::from_secs(10)), Some(KvResult::Done));
    let after = put(&mut sim, "after");
    assert_eq!(sim.wait(after, Duration::from_secs(10)), Some(KvResult::Done));
    let up: BTreeSet<NodeId> = (1..=5).map(NodeId).filter(|&n| n != stalled).collect();
    assert!(up.iter().any(|&n| sim.kv_get(n, b"after").is_some()));
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    assert!(sim.check_linearizable().is_ok());
}
