//! Leader election: the lab's TestInitialElection, TestReElection and
//! TestManyElections, plus "no leader without a quorum".

use crate::common::*;
use synod_core::{NodeId, Role};

/// Initial election without faults, then a stable term: the leader and
/// the term do not change over ten maximum election timeouts, every node
/// knows the leader, and there was exactly one election.
#[test]
fn initial_election_and_a_stable_term() {
    for (nodes, seed) in [(3, 1), (3, 2), (5, 3), (5, 4), (7, 5)] {
        let mut sim = cluster(nodes, seed);
        let leader = elect(&mut sim);
        let first_term = term(&sim, leader);
        assert!(first_term >= 1);
        sim.run_for(secs(3));
        assert_eq!(sim.leaders(), vec![(leader, first_term)], "seed {seed}: same leader");
        for n in all(&sim) {
            let s = sim.status(n).expect("up");
            assert_eq!(s.epoch, first_term, "seed {seed}: {n}'s term moved");
            assert_eq!(s.leader, Some(leader), "seed {seed}: {n} knows the leader");
        }
        assert_eq!(sim.metrics().elections, 1, "seed {seed}: one election only");
        assert_safe(&sim);
    }
}

/// The leader is cut off: the others elect a new leader in a higher term;
/// the old leader steps down (check-quorum) and, on rejoining, adopts the
/// new term as a follower and converges on the new leader's log. Then a
/// quorum is cut off (no leader), and restored (a leader again).
#[test]
fn reelection_after_the_leader_is_cut_off_and_rejoins_as_follower() {
    for seed in 1..=3 {
        let mut sim = cluster(3, seed);
        let old = elect(&mut sim);
        let old_term = term(&sim, old);
        assert_eq!(submit_wait(&mut sim, put("a", "1"), secs(2)), synod_core::kv::KvResult::Done);

        sim.isolate(old);
        let rest = others(&sim, &[old]);
        let new = elect_in(&mut sim, &rest, secs(3));
        assert!(term(&sim, new) > old_term, "seed {seed}: the new leader's term is higher");
        sim.run_for(ms(400));
        assert_ne!(role(&sim, old), Some(Role::Leader), "seed {seed}: cut-off leader stepped down");
        assert_eq!(term(&sim, old), old_term, "seed {seed}: pre-vote kept the cut-off term");
        submit_wait(&mut sim, put("b", "2"), secs(3));

        sim.heal();
        sim.run_for(ms(500));
        let new_term = term(&sim, new);
        assert_eq!(sim.leaders(), vec![(new, new_term)], "seed {seed}: the new leader stays");
        assert_eq!(term(&sim, old), new_term, "seed {seed}: the old leader adopted the term");
        assert_eq!(role(&sim, old), Some(Role::Follower));
        assert_eq!(sim.status(old).map(|s| s.leader), Some(Some(new)));
        assert_converged(&sim, &all(&sim));
        assert_eq!(sim.kv_get(old, b"b"), Some(bytes::Bytes::from("2")));

        // No quorum: no leader anywhere.
        let cut = others(&sim, &[new]);
        let lone = cut[0];
        sim.partition(&[&[new.0]]);
        sim.run_for(secs(2));
        assert!(sim.leaders().is_empty(), "seed {seed}: leaders without a quorum");
        // A quorum again: a leader.
        sim.partition(&[&[new.0, lone.0]]);
        elect_in(&mut sim, &[new, lone], secs(3));
        sim.heal();
        sim.run_for(secs(1));
        assert_eq!(sim.leaders().len(), 1, "seed {seed}: one leader after healing");
        assert_safe(&sim);
    }
}

/// With 3 of 5 nodes cut off, the leader (with one follower) steps down and
/// nobody leads for many election timeouts; a proposal made just before
/// never commits; terms do not inflate (pre-vote). Healed, a leader is
/// elected and new commands commit.
#[test]
fn no_leader_without_a_quorum() {
    for seed in 1..=3 {
        let mut sim = cluster(5, seed);
        let leader = elect(&mut sim);
        let rest = others(&sim, &[leader]);
        let buddy = rest[0];
        let commit_before = sim.status(leader).expect("up").commit_index;
        let terms_before: Vec<u64> = all(&sim).iter().map(|&n| term(&sim, n)).collect();
        let last_before = sim.status(leader).expect("up").last_index;
        sim.partition(&[&[leader.0, buddy.0]]);
        sim.propose(leader, command(900, 1, &put("lost", "x"))).expect("still leads");
        sim.run_for(secs(3));
        assert!(sim.leaders().is_empty(), "seed {seed}: a leader without a quorum");
        for (i, n) in all(&sim).into_iter().enumerate() {
            let s = sim.status(n).expect("up");
            assert!(s.commit_index <= commit_before, "seed {seed}: {n} committed");
            assert_eq!(s.epoch, terms_before[i], "seed {seed}: {n}'s term inflated");
        }
        assert_eq!(
            sim.status(buddy).expect("up").last_index,
            last_before + 1,
            "seed {seed}: the proposal reached the leader's partner"
        );

        sim.heal();
        elect(&mut sim);
        submit_wait(&mut sim, put("k", "v"), secs(3));
        assert!(all_catch_up(&mut sim, secs(1)), "seed {seed}");
        assert_converged(&sim, &all(&sim));
        assert_safe(&sim);
    }
}

/// The lab's TestManyElections: 7 nodes, and 15 times in a row a random 3
/// of them are cut off. At every event at most one leader per term; after
/// each cut, the connected 4 (a majority) elect a leader among themselves.
#[test]
fn many_elections_with_3_of_7_cut_off() {
    for seed in seeds(4) {
        let mut sim = cluster(7, seed);
        let mut rng = TestRng::new(seed);
        elect(&mut sim);
        let everyone = all(&sim);
        for round in 0..15 {
            let cut = rng.choose(&everyone, 3);
            let connected: Vec<NodeId> =
                everyone.iter().copied().filter(|n| !cut.contains(n)).collect();
            sim.partition(&[&raw(&connected)]);
            let ok = sim.run_until(
                |s| {
                    assert_one_leader_per_term(s);
                    leader_in(s, &connected).is_some_and(|l| in_office(s, l))
                },
                secs(5),
            );
            assert!(ok, "seed {seed} round {round}: no leader among {connected:?}");
            // Hold the partition a while: the cut-off nodes never lead.
            sim.run_until(
                |s| {
                    assert_one_leader_per_term(s);
                    false
                },
                ms(500),
            );
            let leaders = sim.leaders();
            assert_eq!(leaders.len(), 1, "seed {seed} round {round}: {leaders:?}");
            assert!(connected.contains(&leaders[0].0), "seed {seed} round {round}");
        }
        sim.heal();
        sim.run_for(secs(1));
        assert_eq!(sim.leaders().len(), 1, "seed {seed}: one leader after healing");
        assert_safe(&sim);
    }
}
