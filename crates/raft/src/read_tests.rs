//! Lease reads and follower reads, end to end on the test cluster: a lease
//! read needs no round trip while the lease holds, lapses on time when the
//! leader is cut off, waits for the new leader's first commit, and dies
//! with a leadership transfer; follower reads get the leader's read index
//! and fail when the leader goes away.

use crate::config::ReadMode;
use crate::testing::{Cluster, cmd};
use std::time::Duration;
use synod_core::{Event, NodeId, ProposeError, Protocol, ReadId, ReadState};

fn lease_cluster() -> Cluster {
    Cluster::new(3, |c| c.read_mode = ReadMode::Lease)
}

fn reads_of(c: &Cluster, id: NodeId) -> Vec<ReadState> {
    c.reads[id.0 as usize - 1].clone()
}

fn failed(c: &Cluster, id: NodeId, read: ReadId) -> bool {
    c.events[id.0 as usize - 1].contains(&Event::ReadFailed { id: read })
}

#[test]
fn a_lease_read_is_answered_without_a_round_trip() {
    let mut c = lease_cluster();
    let leader = c.elect();
    c.propose(leader, vec![cmd(1)]).expect("leader");
    c.run_for(Duration::from_millis(60)); // a heartbeat round acknowledged
    let sent = c.sent_by_kind.values().sum::<usize>();
    c.read(leader, ReadId(7)).expect("leader");
    let commit_index = c.node(leader).commit_index();
    assert_eq!(reads_of(&c, leader), vec![ReadState { id: ReadId(7), index: commit_index }]);
    assert_eq!(c.sent_by_kind.values().sum::<usize>(), sent, "no message for a lease read");
    let now = c.now;
    let expiry = c.nodes[leader.0 as usize - 1].lease_expiry(now).expect("holds a lease");
    assert!(expiry > c.now, "the lease runs past now");
    assert!(
        expiry <= c.now + Duration::from_millis(135),
        "at most election_timeout_min × (1 − 0.1) from a round sent by now"
    );
}

#[test]
fn read_index_mode_always_takes_a_round_trip() {
    let mut c = Cluster::new(3, |_| {});
    let leader = c.elect();
    c.run_for(Duration::from_millis(60));
    let sent = c.sent_by_kind.get("heartbeat").copied().unwrap_or(0);
    c.read(leader, ReadId(7)).expect("leader");
    assert!(reads_of(&c, leader).is_empty(), "waits for the round");
    assert!(c.sent_by_kind.get("heartbeat").copied().unwrap_or(0) > sent);
    c.deliver_all();
    assert_eq!(reads_of(&c, leader).len(), 1);
}

#[test]
fn an_isolated_leader_loses_its_lease_before_anyone_else_can_lead() {
    let mut c = lease_cluster();
    let leader = c.elect();
    c.run_for(Duration::from_millis(60));
    c.isolate(leader);
    // 136 ms later no round sent before the cut can still hold a lease
    // (135 ms), while the followers still refuse to vote (150 ms).
    c.run_for(Duration::from_millis(136));
    let now = c.now;
    assert_eq!(c.nodes[leader.0 as usize - 1].lease_expiry(now), None);
    c.read(leader, ReadId(1)).expect("still leader by its own count");
    assert!(reads_of(&c, leader).is_empty(), "falls back to ReadIndex, which cannot complete");
    c.run_for(Duration::from_secs(1));
    assert!(reads_of(&c, leader).is_empty());
    assert!(failed(&c, leader, ReadId(1)), "fails once check-quorum deposes it");
}

#[test]
fn a_new_leader_serves_lease_reads_only_after_committing_in_its_term() {
    let mut c = lease_cluster();
    let first = c.elect();
    c.run_for(Duration::from_millis(60));
    c.isolate(first);
    let second = loop {
        c.run_for(Duration::from_millis(10));
        if let Some(l) = c.leader().filter(|&l| l != first) {
            break l;
        }
    };
    // Elected, but its no-op is not known committed before acks arrive:
    // cut it off right away so that none does.
    let i = second.0 as usize - 1;
    if c.node(second).commit_index() < c.node(second).last_index() {
        c.read(second, ReadId(3)).expect("leader");
        assert!(reads_of(&c, second).is_empty(), "no lease before the term's first commit");
    }
    c.heal();
    c.run_for(Duration::from_millis(60));
    let now = c.now;
    assert!(c.nodes[i].lease_expiry(now).is_some());
    c.read(second, ReadId(4)).expect("leader");
    assert!(reads_of(&c, second).iter().any(|r| r.id == ReadId(4)));
}

#[test]
fn a_leadership_transfer_voids_the_lease_for_the_term() {
    let mut c = lease_cluster();
    let leader = c.elect();
    c.run_for(Duration::from_millis(60));
    let to = c.ids().into_iter().find(|&id| id != leader).expect("a follower");
    // Cut the target off so that TimeoutNow is sent but lost.
    c.isolate(to);
    c.transfer(leader, to).expect("leader");
    let i = leader.0 as usize - 1;
    let now = c.now;
    assert_eq!(c.nodes[i].lease_expiry(now), None, "no lease while transferring");
    c.heal();
    c.run_for(Duration::from_millis(20));
    let now = c.now;
    if c.leader() == Some(leader) && c.node(leader).transfer_target().is_none() {
        assert_eq!(c.nodes[i].lease_expiry(now), None, "TimeoutNow was sent in this term");
    }
}

#[test]
fn lease_reads_need_check_quorum_and_a_sane_drift() {
    let mut config = crate::Config::new(vec![NodeId(1)]);
    config.read_mode = ReadMode::Lease;
    config.check_quorum = false;
    assert!(config.validate().unwrap_err().contains("check_quorum"));
    config.check_quorum = true;
    config.max_clock_drift = 1.0;
    assert!(config.validate().unwrap_err().contains("max_clock_drift"));
    config.max_clock_drift = 0.1;
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn a_follower_read_waits_for_the_leaders_read_index() {
    let mut c = Cluster::new(3, |c| c.follower_reads = true);
    let leader = c.elect();
    for seq in 1..=5 {
        c.propose(leader, vec![cmd(seq)]).expect("leader");
    }
    c.run_for(Duration::from_millis(60));
    let follower = c.ids().into_iter().find(|&id| id != leader).expect("a follower");
    let commit_index = c.node(leader).commit_index();
    c.read(follower, ReadId(9)).expect("forwarded");
    assert!(reads_of(&c, follower).is_empty(), "needs the leader's index first");
    assert_eq!(c.sent_by_kind.get("read_index"), Some(&1));
    c.deliver_all();
    assert_eq!(reads_of(&c, follower), vec![ReadState { id: ReadId(9), index: commit_index }]);
    assert!(c.node(follower).applied_index() >= commit_index);
}

#[test]
fn follower_reads_off_answer_not_leader_and_fail_when_the_leader_goes() {
    let mut c = Cluster::new(3, |_| {});
    let leader = c.elect();
    c.run_for(Duration::from_millis(60));
    let follower = c.ids().into_iter().find(|&id| id != leader).expect("a follower");
    assert_eq!(c.read(follower, ReadId(1)), Err(ProposeError::NotLeader { hint: Some(leader) }));
    let mut c = Cluster::new(3, |c| c.follower_reads = true);
    let leader = c.elect();
    c.run_for(Duration::from_millis(60));
    let follower = c.ids().into_iter().find(|&id| id != leader).expect("a follower");
    c.isolate(leader);
    c.read(follower, ReadId(2)).expect("forwarded into the void");
    c.run_for(Duration::from_secs(2));
    assert!(failed(&c, follower, ReadId(2)), "given up on, not left hanging");
    assert!(reads_of(&c, follower).is_empty());
}

#[test]
fn a_restarted_node_in_lease_mode_refuses_votes_for_the_minimum_election_timeout() {
    let mut c = lease_cluster();
    let leader = c.elect();
    c.run_for(Duration::from_millis(60));
    let follower = c.ids().into_iter().find(|&id| id != leader).expect("a follower");
    c.restart(follower, 5);
    let term = c.node(follower).term();
    // A vote request for a higher term right after the restart is ignored.
    let mut out = crate::RaftOutput::new();
    let other = c.ids().into_iter().find(|&id| id != leader && id != follower).expect("third");
    let vote = crate::Message::RequestVote {
        term: term + 1,
        last_log_index: 100,
        last_log_term: term + 1,
        transfer: false,
    };
    let now = c.now;
    c.nodes[follower.0 as usize - 1].step(now, other, vote, &mut out);
    assert!(out.messages.is_empty(), "{:?}", out.messages);
    assert_eq!(c.node(follower).term(), term);
}
