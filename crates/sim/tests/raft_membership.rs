//! Membership changes in the simulator: spares join as learners, are
//! promoted, the leader removes itself, and every checker stays quiet while
//! clients keep writing.

use bytes::Bytes;
use std::time::Duration;
use synod_core::NodeId;
use synod_core::kv::{KvOp, KvResult};
use synod_raft::RaftNode;
use synod_sim::{Sim, SimOptions};

fn put(sim: &mut Sim<RaftNode>, key: &str, value: &str) {
    let op = sim
        .submit(KvOp::Put { key: Bytes::from(key.to_string()), value: value.to_string().into() });
    assert_eq!(sim.wait(op, Duration::from_secs(10)), Some(KvResult::Done), "put {key}");
}

#[test]
fn grow_from_three_to_five_then_remove_the_leader() {
    for seed in 1..=3 {
        let o = SimOptions { nodes: 3, clients: 0, ..SimOptions::default() };
        let mut sim = Sim::<RaftNode>::with_spares(&o, seed, 2).expect("valid");
        assert!(sim.run_until(|s| s.leader().is_some(), Duration::from_secs(3)));
        for k in 0..100 {
            put(&mut sim, &format!("k{}", k % 5), &k.to_string());
        }
        sim.change_membership(&[1, 2, 3], &[4, 5]).expect("learners");
        sim.run_for(Duration::from_millis(500));
        sim.change_membership(&[1, 2, 3, 4, 5], &[]).expect("promote");
        sim.run_for(Duration::from_millis(500));
        put(&mut sim, "after-grow", "1");
        let leader = sim.leader().expect("leader");
        let rest: Vec<u64> = (1..=5).filter(|&i| i != leader.0).collect();
        sim.change_membership(&rest, &[]).expect("remove the leader");
        assert!(
            sim.run_until(|s| s.leader().is_some_and(|l| l != leader), Duration::from_secs(5)),
            "seed {seed}: a new leader among the rest"
        );
        put(&mut sim, "after-remove", "1");
        sim.run_for(Duration::from_millis(500));
        for &n in &rest {
            assert_eq!(sim.kv_get(NodeId(n), b"after-remove"), Some(Bytes::from("1")), "n{n}");
        }
        assert!(sim.violations().is_empty(), "seed {seed}: {:?}", sim.violations());
        assert!(sim.check_linearizable().is_ok());
    }
}

#[test]
fn random_membership_churn_changes_the_configuration_and_stays_safe() {
    use synod_core::Protocol;
    use synod_sim::FaultProfile;
    let mut changed = 0;
    for seed in 1..=4 {
        let o = SimOptions { faults: FaultProfile::Membership, ..SimOptions::default() };
        let mut sim = Sim::<RaftNode>::new(&o, seed).expect("valid");
        assert_eq!(sim.nodes(), 5 + 4, "spares to grow to seven and replace removed ids");
        let verdict = sim.run_to_verdict();
        assert!(verdict.is_none(), "seed {seed}: {verdict:?}");
        let leader = sim.leader().expect("a leader after the run");
        let core = sim.core(leader).expect("up");
        let m = core.membership();
        assert!((3..=7).contains(&m.voters.len()), "seed {seed}: {m:?}");
        let bootstrap: std::collections::BTreeSet<NodeId> = (1..=5).map(NodeId).collect();
        if m.voters != bootstrap || !m.learners.is_empty() {
            changed += 1;
        }
        assert!(core.status().commit_index > 0);
    }
    assert!(changed >= 3, "churn changed the configuration in {changed} of 4 seeds");
}
