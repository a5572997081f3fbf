//! Fast backup (the lab's TestBackup): followers whose logs diverge from
//! the leader's by 50 entries are repaired in a few round trips, thanks to
//! the conflict term and index in rejections (thesis §5.3).

use crate::common::*;
use synod_core::NodeId;
use synod_core::kv::KvOp;

/// Proposes `count` puts from client session `client` directly on `leader`
/// (which must lead), and returns them.
fn propose_many(sim: &mut RaftSim, leader: NodeId, client: u64, count: u64) -> Vec<KvOp> {
    let ops: Vec<KvOp> = (1..=count).map(|i| put(&format!("c{client}"), &i.to_string())).collect();
    for (seq, op) in (1..).zip(&ops) {
        sim.propose(leader, command(client, seq, op)).expect("leads");
    }
    ops
}

/// The value of the key client session `client`'s puts write, on `node`.
fn value_of(sim: &RaftSim, node: NodeId, client: u64) -> Option<String> {
    let v = sim.kv_get(node, format!("c{client}").as_bytes())?;
    Some(String::from_utf8_lossy(&v).into_owned())
}

/// Five nodes. (1) The leader and one follower are cut off and the leader
/// takes 50 entries that cannot commit. (2) The other three elect a leader
/// and commit 50 entries. (3) That leader and one follower are cut off from
/// the third and the leader takes 50 entries that cannot commit. (4) The
/// first pair rejoins the third node, which alone holds the committed
/// entries, so it leads and must repair two followers 50 divergent entries
/// deep; 50 more entries commit. (5) Everything heals; the second pair's 50
/// divergent entries are repaired.
///
/// Each repair must take a handful of rejected appends, not one per
/// divergent entry. The network keeps each link in order (no jitter) so
/// that every rejection counted comes from a divergent log, not from a
/// pipelined append overtaking an earlier one (which a follower also
/// rejects, as it must not accept a gap).
#[test]
fn fast_backup_over_50_divergent_entries() {
    for seed in seeds(3) {
        let mut sim = cluster(5, seed);
        sim.set_latency(ms(1), ms(0));
        let counter = RejectionCounter::install(&mut sim);
        let l1 = elect(&mut sim);
        submit_wait(&mut sim, put("start", "0"), secs(2));
        sim.run_for(ms(100));
        let f = others(&sim, &[l1]);
        let (f1, three) = (f[0], [f[1], f[2], f[3]]);

        // (1)
        sim.partition(&[&[l1.0, f1.0], &raw(&three)]);
        propose_many(&mut sim, l1, 901, 50);
        // (2)
        let l2 = elect_in(&mut sim, &three, secs(3));
        propose_many(&mut sim, l2, 902, 50);
        let target = sim.status(l2).expect("up").last_index;
        assert!(run_until_applied(&mut sim, &three, target, secs(2)), "seed {seed}: (2) commits");
        assert!(sim.status(f1).expect("up").last_index >= 50, "seed {seed}: f1 got the 50");
        // (3)
        let pair: Vec<NodeId> = three.iter().copied().filter(|&n| n != l2).collect();
        let (o, x) = (pair[0], pair[1]);
        sim.partition(&[&[l2.0, o.0], &[x.0], &[l1.0, f1.0]]);
        propose_many(&mut sim, l2, 903, 50);
        sim.run_for(ms(500));
        assert!(sim.status(o).expect("up").last_index >= target + 50, "seed {seed}: o got 50");

        // (4)
        let rejected_before = counter.rejected();
        let snapshots_before = sent(&sim.metrics(), "install_snapshot");
        let group = [l1, f1, x];
        sim.partition(&[&raw(&group), &[l2.0, o.0]]);
        let l3 = elect_in(&mut sim, &group, secs(3));
        assert_eq!(l3, x, "seed {seed}: only x holds every committed entry");
        propose_many(&mut sim, l3, 904, 50);
        let target = sim.status(l3).expect("up").last_index;
        assert!(run_until_applied(&mut sim, &group, target, secs(2)), "seed {seed}: (4) commits");
        let rejected_mid = counter.rejected();
        let repair_4 = rejected_mid - rejected_before;
        let snapshots = sent(&sim.metrics(), "install_snapshot") - snapshots_before;
        assert_eq!(snapshots, 0, "seed {seed}: (4) repaired the logs, not by a snapshot");

        // (5)
        sim.heal();
        submit_wait(&mut sim, put("end", "1"), secs(3));
        assert!(all_catch_up(&mut sim, secs(2)), "seed {seed}: (5)");
        let rejected_end = counter.rejected();
        let repair_5 = rejected_end - rejected_mid;
        assert!(repair_4 <= 6, "seed {seed}: repairing 2 followers took {repair_4} rejections");
        assert!(repair_5 <= 6, "seed {seed}: repairing 2 followers took {repair_5} rejections");
        assert!(rejected_end < 20, "seed {seed}: {rejected_end} rejected appends in all");

        for n in all(&sim) {
            let fifty = Some("50".to_string());
            assert_eq!(value_of(&sim, n, 901), None, "seed {seed}: {n} applied (1)'s entries");
            assert_eq!(value_of(&sim, n, 902), fifty, "seed {seed}: {n} lacks (2)'s entries");
            assert_eq!(value_of(&sim, n, 903), None, "seed {seed}: {n} applied (3)'s entries");
            assert_eq!(value_of(&sim, n, 904), fifty, "seed {seed}: {n} lacks (4)'s entries");
        }
        assert_converged(&sim, &all(&sim));
        assert_safe(&sim);
    }
}
