//! Beyond the lab: a leader that stalls (a paused process) and a leader
//! behind a one-way link — the cases that pre-vote, check-quorum and
//! ReadIndex exist for.

use crate::common::*;
use bytes::Bytes;
use synod_core::Role;
use synod_core::kv::KvResult;

/// The leader is paused (a long GC, a stopped VM) while the others elect a
/// new leader and overwrite a key; nothing from them reaches it (links into
/// it are blocked). A read and a write sent to it during the pause are
/// handled the moment it resumes — while it still believes it leads — and
/// the read must not return the old value: ReadIndex has to confirm
/// leadership with a quorum first, which it cannot; check-quorum then makes
/// it step down and the client retries at the new leader.
#[test]
fn a_paused_leader_resumes_without_serving_stale_reads() {
    for seed in seeds(5) {
        let mut sim = cluster(5, seed);
        let old = elect(&mut sim);
        submit_wait(&mut sim, put("x", "1"), secs(2));
        sim.run_for(ms(50));
        sim.pause(old);
        let rest = others(&sim, &[old]);
        for &n in &rest {
            sim.block(n, old);
        }
        let new = elect_in(&mut sim, &rest, secs(3));
        assert_eq!(submit_wait(&mut sim, put("x", "2"), secs(3)), KvResult::Done);
        let read = sim.submit_to(old, get("x"));
        let write = sim.submit_to(old, put("y", "1"));
        sim.run_for(ms(500));
        sim.resume(old);
        assert_eq!(role(&sim, old), Some(Role::Leader), "seed {seed}: it believes it leads");
        let two = KvResult::Value(Some(Bytes::from("2")));
        assert_eq!(sim.wait(read, secs(5)), Some(two), "seed {seed}: a stale read");
        assert_eq!(sim.wait(write, secs(5)), Some(KvResult::Done), "seed {seed}");
        assert_ne!(role(&sim, old), Some(Role::Leader), "seed {seed}: the old leader stepped down");
        sim.heal();
        sim.run_for(ms(300));
        assert_eq!(sim.leader(), Some(new), "seed {seed}: the resumed node did not disrupt");
        assert!(all_catch_up(&mut sim, secs(1)));
        assert_converged(&sim, &all(&sim));
        let check = sim.check_linearizable();
        assert!(check.is_ok(), "seed {seed}: {check}");
        assert_safe(&sim);
    }
}

/// The leader can still send but hears nothing back (every link into it is
/// blocked). Check-quorum makes it step down; once the followers' lease on
/// it runs out they elect a new leader and commit; the old leader, which
/// still cannot hear, neither leads again nor disrupts. When the links come
/// back, it follows.
#[test]
fn a_leader_that_cannot_hear_steps_down_and_the_rest_move_on() {
    for seed in seeds(5) {
        let mut sim = cluster(5, seed);
        let old = elect(&mut sim);
        let rest = others(&sim, &[old]);
        for &f in &rest {
            sim.block(f, old);
        }
        let new = elect_in(&mut sim, &rest, secs(3));
        assert_ne!(role(&sim, old), Some(Role::Leader), "seed {seed}: check-quorum");
        assert_eq!(submit_wait(&mut sim, put("k", "v"), secs(3)), KvResult::Done);
        let new_term = term(&sim, new);
        sim.run_until(
            |s| {
                assert_one_leader_per_term(s);
                false
            },
            secs(2),
        );
        assert_eq!(sim.leader(), Some(new), "seed {seed}: the deaf node disrupted");
        assert_eq!(term(&sim, new), new_term, "seed {seed}: terms stayed put");
        sim.heal();
        sim.run_for(ms(300));
        assert_eq!(sim.leaders(), vec![(new, new_term)], "seed {seed}");
        assert_eq!(role(&sim, old), Some(Role::Follower), "seed {seed}");
        assert!(all_catch_up(&mut sim, secs(1)));
        assert_eq!(sim.kv_get(old, b"k"), Some(Bytes::from("v")));
        assert_converged(&sim, &all(&sim));
        assert_safe(&sim);
    }
}

/// A follower that can send but not hear keeps campaigning (pre-vote) and
/// must never unseat the healthy leader or inflate anyone's term.
#[test]
fn a_follower_that_cannot_hear_does_not_disrupt() {
    for seed in seeds(5) {
        let mut sim = cluster(5, seed);
        let leader = elect(&mut sim);
        let deaf = others(&sim, &[leader])[0];
        for n in others(&sim, &[deaf]) {
            sim.block(n, deaf);
        }
        let leader_term = term(&sim, leader);
        for i in 0..10 {
            submit_wait(&mut sim, put("k", &i.to_string()), secs(2));
            sim.run_for(ms(200));
        }
        assert_eq!(sim.leaders(), vec![(leader, leader_term)], "seed {seed}");
        for n in others(&sim, &[deaf]) {
            assert_eq!(term(&sim, n), leader_term, "seed {seed}: {n}'s term moved");
        }
        sim.heal();
        assert!(all_catch_up(&mut sim, secs(1)), "seed {seed}");
        assert_eq!(sim.kv_get(deaf, b"k"), Some(Bytes::from("9")));
        assert_eq!(sim.leaders(), vec![(leader, leader_term)], "seed {seed}");
        assert_converged(&sim, &all(&sim));
        assert_safe(&sim);
    }
}
