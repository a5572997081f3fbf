//! Persistence (the lab's TestPersist1/2/3): crash and restart of all
//! nodes, of the leader, of a follower, and repeated partial crashes —
//! committed data survives, and a restarted node comes back with exactly
//! the term, vote and log it had made durable.

use crate::common::*;
use bytes::Bytes;
use synod_core::NodeId;
use synod_core::kv::KvResult;

/// What a node had made durable: term, vote, last log index.
fn hard_state(sim: &RaftSim, n: NodeId) -> (u64, Option<NodeId>, u64) {
    let c = sim.core(n).expect("up");
    (c.term(), c.voted_for(), c.last_index())
}

fn assert_value_everywhere(sim: &RaftSim, key: &str, value: &str) {
    for n in all(sim) {
        assert_eq!(
            sim.kv_get(n, key.as_bytes()),
            Some(Bytes::from(value.to_string())),
            "seed {}: {n}'s {key}",
            sim.seed()
        );
    }
}

/// Three times: commit a put, crash every node at once, restart them all.
/// Each comes back with the term, vote and log it had (nothing was left
/// unsynced), a leader is elected, and every earlier put is still there.
/// Once more without waiting: crash everything the instant a put is
/// answered — an answered put is durable on a majority.
#[test]
fn crash_and_restart_of_all_nodes() {
    for (nodes, seed) in [(3, 1), (3, 2), (5, 3), (5, 4)] {
        let mut sim = cluster(nodes, seed);
        elect(&mut sim);
        for round in 0..3 {
            let value = round.to_string();
            assert_eq!(
                submit_wait(&mut sim, put(&format!("k{round}"), &value), secs(3)),
                KvResult::Done
            );
            assert!(all_catch_up(&mut sim, secs(1)));
            sim.run_for(ms(20));
            let before: Vec<_> = all(&sim).iter().map(|&n| hard_state(&sim, n)).collect();
            for n in all(&sim) {
                assert_eq!(sim.unsynced_writes(n), 0, "seed {seed}: {n} is idle");
                sim.crash(n);
            }
            for n in all(&sim) {
                sim.restart(n);
            }
            let after: Vec<_> = all(&sim).iter().map(|&n| hard_state(&sim, n)).collect();
            assert_eq!(before, after, "seed {seed} round {round}: recovered term, vote, log");
            elect(&mut sim);
            assert!(all_catch_up(&mut sim, secs(2)), "seed {seed} round {round}");
            for r in 0..=round {
                assert_value_everywhere(&sim, &format!("k{r}"), &r.to_string());
            }
        }
        // Crash everything the instant a put is answered.
        assert_eq!(submit_wait(&mut sim, put("last", "x"), secs(3)), KvResult::Done);
        for n in all(&sim) {
            sim.crash(n);
        }
        sim.run_for(ms(300));
        sim.heal_all();
        elect(&mut sim);
        assert_eq!(submit_wait(&mut sim, get("last"), secs(3)), KvResult::Value(Some("x".into())));
        assert!(all_catch_up(&mut sim, secs(2)));
        assert_value_everywhere(&sim, "last", "x");
        assert_converged(&sim, &all(&sim));
        assert!(sim.check_linearizable().is_ok());
        assert_safe(&sim);
    }
}

/// The leader crashes: the others elect a leader of a higher term and
/// commit; the old leader restarts with its term and log, follows, and
/// catches up.
#[test]
fn crash_and_restart_of_the_leader() {
    for seed in 1..=4 {
        let mut sim = cluster(5, seed);
        let old = elect(&mut sim);
        submit_wait(&mut sim, put("a", "1"), secs(2));
        sim.run_for(ms(50));
        let before = hard_state(&sim, old);
        sim.crash(old);
        let rest = others(&sim, &[old]);
        let new = elect_in(&mut sim, &rest, secs(3));
        assert!(term(&sim, new) > before.0, "seed {seed}");
        submit_wait(&mut sim, put("b", "2"), secs(3));
        sim.restart(old);
        assert_eq!(hard_state(&sim, old), before, "seed {seed}: recovered from its disk");
        assert!(all_catch_up(&mut sim, secs(2)), "seed {seed}");
        assert_eq!(term(&sim, old), term(&sim, new), "seed {seed}: adopted the new term");
        assert_eq!(sim.leader(), Some(new), "seed {seed}: the restarted node did not disrupt");
        assert_value_everywhere(&sim, "a", "1");
        assert_value_everywhere(&sim, "b", "2");
        assert_converged(&sim, &all(&sim));
        assert_safe(&sim);
    }
}

/// A follower crashes while commands commit, restarts with the log it had,
/// and catches up; the leader never changes.
#[test]
fn crash_and_restart_of_a_follower() {
    for seed in 1..=4 {
        let mut sim = cluster(3, seed);
        let leader = elect(&mut sim);
        let f = others(&sim, &[leader])[0];
        submit_wait(&mut sim, put("a", "1"), secs(2));
        sim.run_for(ms(50));
        let before = hard_state(&sim, f);
        sim.crash(f);
        for i in 0..5 {
            submit_wait(&mut sim, put("b", &i.to_string()), secs(2));
        }
        sim.restart(f);
        assert_eq!(hard_state(&sim, f), before, "seed {seed}: recovered from its disk");
        assert!(all_catch_up(&mut sim, secs(2)), "seed {seed}");
        assert_eq!(sim.leader(), Some(leader), "seed {seed}");
        assert_value_everywhere(&sim, "a", "1");
        assert_value_everywhere(&sim, "b", "4");
        assert_converged(&sim, &all(&sim));
        assert_safe(&sim);
    }
}

/// The lab's TestPersist2, randomized from the seed: 12 rounds on 5 nodes.
/// In each, two nodes crash (sometimes the leader) and a put still commits
/// on the other three; then a majority is down (three crashed) and a put
/// cannot commit until one restarts. Everything committed survives on every
/// node at the end.
#[test]
fn repeated_partial_crashes() {
    for seed in seeds(4) {
        let mut sim = cluster(5, seed);
        let mut rng = TestRng::new(seed);
        elect(&mut sim);
        let everyone = all(&sim);
        for round in 0..12 {
            let key = format!("r{round}");
            // Two down: the other three still commit.
            let down = rng.choose(&everyone, 2);
            for &n in &down {
                sim.crash(n);
            }
            let r = submit_wait(&mut sim, put(&key, "two-down"), secs(5));
            assert_eq!(r, KvResult::Done, "seed {seed} round {round}: {down:?} down");
            // A third down: no quorum, nothing commits...
            let up: Vec<NodeId> = everyone.iter().copied().filter(|n| !down.contains(n)).collect();
            let third = rng.choose(&up, 1)[0];
            sim.crash(third);
            let op = sim.submit(put(&key, "three-down"));
            assert_eq!(sim.wait(op, secs(1)), None, "seed {seed} round {round}: no quorum");
            // ...until one of them restarts.
            sim.restart(down[0]);
            assert_eq!(sim.wait(op, secs(5)), Some(KvResult::Done), "seed {seed} round {round}");
            sim.restart(down[1]);
            sim.restart(third);
        }
        elect(&mut sim);
        assert!(all_catch_up(&mut sim, secs(2)), "seed {seed}");
        for round in 0..12 {
            assert_value_everywhere(&sim, &format!("r{round}"), "three-down");
        }
        assert_converged(&sim, &everyone);
        assert!(sim.check_linearizable().is_ok());
        assert!(sim.metrics().crashes >= 36);
        assert_safe(&sim);
    }
}
