//! Membership changes by joint consensus, end to end on the test cluster:
//! learners catch up, promotion waits for them, C_new follows C_old,new by
//! itself, a removed leader steps down, changes are serialized, removed ids
//! stay removed, and the configuration survives snapshots and restarts.

use crate::testing::{Cluster, cmd};
use crate::{ConfigChangeError, Payload};
use std::collections::BTreeSet;
use std::time::Duration;
use synod_core::{NodeId, Protocol, Role};

fn ids(v: &[u64]) -> BTreeSet<NodeId> {
    v.iter().map(|&x| NodeId(x)).collect()
}

/// Five nodes of which only 1..=3 are bootstrap voters; 4 and 5 are spares.
fn three_of_five() -> Cluster {
    Cluster::new(5, |c| {
        c.voters = vec![NodeId(1), NodeId(2), NodeId(3)];
        c.max_promotion_lag_entries = 5;
    })
}

fn settle(c: &mut Cluster) {
    c.run_for(Duration::from_millis(300));
}

#[test]
fn spares_are_learners_that_never_campaign() {
    let mut c = three_of_five();
    let leader = c.elect();
    assert!(leader.0 <= 3);
    assert_eq!(c.node(NodeId(4)).role(), Role::Learner);
    assert_eq!(c.node(NodeId(4)).last_index(), 0, "not a member: nothing replicated");
}

#[test]
fn a_learner_catches_up_and_is_promoted_through_a_joint_configuration() {
    let mut c = three_of_five();
    let leader = c.elect();
    for seq in 1..=20 {
        c.propose(leader, vec![cmd(seq)]).expect("leader");
    }
    settle(&mut c);
    // Straight to voter: 4 is 21+ entries behind, more than allowed.
    let lagging = c.change_membership(leader, &[1, 2, 3, 4], &[]);
    assert!(
        matches!(lagging, Err(ConfigChangeError::NotCaughtUp { id: NodeId(4), .. })),
        "{lagging:?}"
    );
    c.change_membership(leader, &[1, 2, 3], &[4]).expect("add learner");
    assert_eq!(
        c.change_membership(leader, &[1, 2, 3], &[4, 5]),
        Err(ConfigChangeError::InProgress),
        "a second change while one is in flight"
    );
    settle(&mut c);
    assert_eq!(c.node(NodeId(4)).last_index(), c.node(leader).last_index(), "learner caught up");
    assert_eq!(c.node(NodeId(4)).role(), Role::Learner);
    c.change_membership(leader, &[1, 2, 3, 4], &[]).expect("promote");
    assert!(c.node(leader).membership().is_joint(), "C_old,new first");
    settle(&mut c);
    for id in 1..=4 {
        let m = c.node(NodeId(id)).membership();
        assert!(!m.is_joint(), "n{id}: C_new followed by itself");
        assert_eq!(m.voters, ids(&[1, 2, 3, 4]), "n{id}");
    }
    assert_eq!(c.node(NodeId(4)).role(), Role::Follower);
    // The log holds C_old,new then C_new.
    let l = c.node(leader);
    let configs: Vec<bool> = (1..=l.last_index())
        .filter_map(|i| match &l.entry(i)?.payload {
            Payload::Config(m) => Some(m.is_joint()),
            _ => None,
        })
        .collect();
    assert_eq!(configs, vec![false, true, false], "learner, joint, final");
}

#[test]
fn the_leader_removes_itself_and_steps_down_once_c_new_commits() {
    let mut c = three_of_five();
    let leader = c.elect();
    settle(&mut c);
    let rest: Vec<u64> = (1..=3).filter(|&i| i != leader.0).collect();
    c.change_membership(leader, &rest, &[]).expect("remove the leader");
    settle(&mut c);
    assert_ne!(c.node(leader).role(), Role::Leader, "stepped down");
    assert_eq!(c.node(leader).role(), Role::Learner, "not a voter any more");
    c.run_for(Duration::from_secs(1));
    let new = c.leader().expect("the rest elect a leader");
    assert!(rest.contains(&new.0));
    c.propose(new, vec![cmd(1)]).expect("leader");
    settle(&mut c);
    let removed = c.node(new).membership();
    assert!(removed.is_removed(leader));
    assert_eq!(
        c.change_membership(new, &[1, 2, 3], &[]),
        Err(ConfigChangeError::Removed { id: leader }),
        "a removed id cannot come back"
    );
}

#[test]
fn replacing_every_voter_at_once_keeps_committing() {
    let mut c = Cluster::new(6, |c| c.voters = vec![NodeId(1), NodeId(2), NodeId(3)]);
    let leader = c.elect();
    c.change_membership(leader, &[1, 2, 3], &[4, 5, 6]).expect("learners");
    settle(&mut c);
    c.change_membership(leader, &[4, 5, 6], &[]).expect("swap all voters");
    settle(&mut c);
    c.run_for(Duration::from_secs(1));
    let new = c.leader().expect("a leader among the new voters");
    assert!(new.0 >= 4, "{new}");
    c.propose(new, vec![cmd(7)]).expect("leader");
    settle(&mut c);
    for id in 4..=6 {
        assert!(c.applied_commands(NodeId(id)).contains(&cmd(7)), "n{id}");
    }
}

#[test]
fn the_configuration_survives_snapshots_and_restarts() {
    let mut c = Cluster::new(4, |c| {
        c.voters = vec![NodeId(1), NodeId(2), NodeId(3)];
        c.snapshot_interval_entries = 8;
        c.snapshot_trailing_entries = 0;
    });
    let leader = c.elect();
    c.change_membership(leader, &[1, 2, 3], &[4]).expect("learner");
    settle(&mut c);
    c.change_membership(leader, &[1, 2, 3, 4], &[]).expect("promote");
    settle(&mut c);
    for seq in 1..=40 {
        c.propose(c.leader().expect("leader"), vec![cmd(seq)]).expect("leader");
        c.run_for(Duration::from_millis(5));
    }
    settle(&mut c);
    for id in 1..=4 {
        let n = c.node(NodeId(id));
        assert!(n.purged_index() > 10, "n{id} compacted past the configuration entries");
        c.restart(NodeId(id), 7 + id);
        let n = c.node(NodeId(id));
        assert_eq!(n.membership().voters, ids(&[1, 2, 3, 4]), "n{id} after restart");
        assert!(n.snapshot().is_some());
    }
}

#[test]
fn a_wiped_node_re_added_under_a_removed_id_is_told_and_stops_campaigning() {
    let mut c = Cluster::new(3, |_| {});
    let leader = c.elect();
    let victim = c.ids().into_iter().find(|&id| id != leader).expect("a follower");
    let rest: Vec<u64> = c.ids().into_iter().filter(|&id| id != victim).map(|id| id.0).collect();
    c.change_membership(leader, &rest, &[]).expect("remove the victim");
    settle(&mut c);
    assert!(c.node(leader).membership().is_removed(victim));
    // The victim's disk is wiped: it restarts with the bootstrap
    // configuration, in which it is a voter, and campaigns.
    let i = victim.0 as usize - 1;
    c.durables[i] = crate::Durable::default();
    c.restart(victim, 99);
    assert_eq!(c.node(victim).role(), Role::Follower);
    assert_eq!(c.node(victim).removed_from_cluster(), None);
    let term = c.node(leader).term();
    c.run_for(Duration::from_secs(2));
    let told = c.node(victim).removed_from_cluster();
    assert!(told.is_some_and(|by| by != victim), "told by a member: {told:?}");
    assert_eq!(c.node(victim).role(), Role::Learner, "it reports itself out of the cluster");
    assert_eq!(c.node(victim).next_deadline(), synod_core::Time::MAX, "no election timer");
    assert_eq!(c.leader(), Some(leader), "the cluster was not disturbed");
    assert_eq!(c.node(leader).term(), term);
    assert!(c.sent_by_kind.get("removed").is_some_and(|&n| n >= 1));
    assert_eq!(
        c.change_membership(leader, &[1, 2, 3], &[]),
        Err(ConfigChangeError::Removed { id: victim }),
        "and its id cannot be re-added"
    );
    // The leader's own log says who is out.
    assert_eq!(c.node(leader).removed_from_cluster(), None);
}
