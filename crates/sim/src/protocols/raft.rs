//! Raft in the simulator: cluster configuration, injectable bugs and the
//! Raft checkers.

use crate::faults::{MAX_VOTERS, SimMembership};
use crate::invariant::Invariant;
use crate::protocol::SimProtocol;
use std::collections::BTreeSet;
use std::time::Duration;
use synod_core::{NodeId, Time};
use synod_raft::{Config, Durable, InjectedBug, Message, RaftNode, RaftOutput, ReadMode, Write};

/// Bug names accepted by `--bug` for Raft, and what they break.
pub const RAFT_BUGS: &[(&str, InjectedBug)] = &[
    ("commit-previous-term-by-count", InjectedBug::CommitPreviousTermByCount),
    ("vote-twice-in-term", InjectedBug::VoteTwiceInTerm),
    ("count-unsynced-leader-appends", InjectedBug::CountUnsyncedLeaderAppends),
];

impl SimProtocol for RaftNode {
    fn name() -> &'static str {
        "raft"
    }

    /// `Config::new(voters)` with timeouts for a ~1 ms network: elections
    /// after 150–300 ms of silence, heartbeats every 50 ms; a snapshot every
    /// 64 entries with 16 trailing entries kept, sent in 128-byte chunks (so
    /// that even short runs compact, and transfers take several chunks).
    fn sim_config(voters: &[NodeId]) -> Config {
        let mut c = Config::new(voters.to_vec());
        c.election_timeout_min = Duration::from_millis(150);
        c.election_timeout_max = Duration::from_millis(300);
        c.heartbeat_interval = Duration::from_millis(50);
        c.snapshot_interval_entries = 64;
        c.snapshot_trailing_entries = 16;
        c.snapshot_chunk_bytes = 128;
        c
    }

    fn bugs() -> &'static [&'static str] {
        &["commit-previous-term-by-count", "vote-twice-in-term", "count-unsynced-leader-appends"]
    }

    fn inject_bug(config: &mut Config, bug: &str) -> Result<(), String> {
        match RAFT_BUGS.iter().find(|(name, _)| *name == bug) {
            Some((_, b)) => {
                config.bug = *b;
                if *b == InjectedBug::CommitPreviousTermByCount {
                    // One entry per append: a new leader then replicates an
                    // old term's entries before its own no-op, which is
                    // exactly when counting them is wrong (Figure 8).
                    config.max_entries_per_append = 1;
                }
                Ok(())
            }
            None => Err(format!(
                "unknown raft bug `{bug}` (expected one of: {})",
                Self::bugs().join(", ")
            )),
        }
    }

    fn invariants() -> Vec<Box<dyn Invariant<Self>>> {
        crate::invariants::raft_invariants()
    }

    fn transfer_leadership(&mut self, now: Time, to: NodeId, out: &mut RaftOutput) -> bool {
        RaftNode::transfer_leadership(self, now, to, out).is_ok()
    }

    fn change_membership(
        &mut self,
        now: Time,
        voters: &BTreeSet<NodeId>,
        learners: &BTreeSet<NodeId>,
        out: &mut RaftOutput,
    ) -> Result<(), String> {
        RaftNode::change_membership(self, now, voters.clone(), learners.clone(), out)
            .map_err(|e| e.to_string())
    }

    fn trigger_snapshot(&mut self, out: &mut RaftOutput) -> bool {
        RaftNode::trigger_snapshot(self, out)
    }

    /// `ReadMode::Lease` (with the default clock assumption, far above the
    /// simulated drift) and `follower_reads`.
    fn configure_reads(config: &mut Config, lease: bool, follower: bool) -> Result<(), String> {
        if lease {
            config.read_mode = ReadMode::Lease;
        }
        config.follower_reads = follower;
        config.validate()
    }

    fn configure_parallel_write(config: &mut Config) -> Result<(), String> {
        config.leader_parallel_write = true;
        config.validate()
    }

    /// A leader's AppendEntries (entries or heartbeat): the thesis's §10.2.1
    /// lets it leave before the leader's own append is durable.
    fn leaves_before_sync(msg: &Message) -> bool {
        matches!(msg, Message::AppendEntries { .. })
    }

    /// The durable log's last index, lowered below the first position an
    /// unsynced write replaces: until that write syncs, the durable entries
    /// from there on may differ from the core's.
    fn persisted_index(durable: &Durable, unsynced: &[Write]) -> Option<u64> {
        let mut index = durable.log.last().map_or(durable.purged_index, |e| e.index);
        for w in unsynced {
            match w {
                Write::Append { entries } => {
                    if let Some(first) = entries.first() {
                        index = index.min(first.index - 1);
                    }
                }
                Write::Snapshot { meta, .. } => index = index.min(meta.index),
                Write::HardState { .. } => {}
            }
        }
        Some(index)
    }

    /// `snapshot_interval_entries`, keeping a tenth of it (at most 100) as
    /// trailing entries.
    fn configure_snapshots(config: &mut Config, every_entries: u64) -> Result<(), String> {
        config.snapshot_interval_entries = every_entries;
        config.snapshot_trailing_entries = (every_entries / 10).min(100);
        config.validate()
    }

    /// Enough spares to grow to seven voters and replace a few removed
    /// ones (removed ids never come back).
    fn membership_spares(nodes: usize) -> usize {
        MAX_VOTERS.saturating_sub(nodes) + 2
    }

    fn membership(&self) -> Option<SimMembership> {
        let m = RaftNode::membership(self);
        Some(SimMembership {
            voters: m.voters.clone(),
            outgoing: m.outgoing.clone(),
            learners: m.learners.clone(),
            removed: m.removed.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bug_names_map_to_injected_bugs() {
        let mut c = RaftNode::sim_config(&[NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(c.validate(), Ok(()));
        RaftNode::inject_bug(&mut c, "vote-twice-in-term").expect("known bug");
        assert_eq!(c.bug, InjectedBug::VoteTwiceInTerm);
        let e = RaftNode::inject_bug(&mut c, "nope").unwrap_err();
        assert!(e.contains("nope") && e.contains("commit-previous-term-by-count"));
        assert_eq!(RAFT_BUGS.len(), RaftNode::bugs().len());
    }
}

#[cfg(test)]
mod integration {
    use crate::{FaultProfile, SimOptions, run_seed};

    fn opts(faults: FaultProfile) -> SimOptions {
        SimOptions { faults, ops_per_client: 40, fault_window_ms: 5_000, ..SimOptions::default() }
    }

    #[test]
    fn raft_passes_without_faults() {
        let r = run_seed(&opts(FaultProfile::None), 1);
        eprintln!("{}", r.metrics.render());
        assert!(r.passed, "{:#?}", r.violation);
        assert_eq!(r.metrics.committed_ops, 5 * 40);
    }

    #[test]
    fn raft_passes_under_every_fault() {
        for faults in [
            FaultProfile::Net,
            FaultProfile::Crash,
            FaultProfile::Snapshot,
            FaultProfile::Membership,
            FaultProfile::All,
        ] {
            for seed in 1..=3 {
                let r = run_seed(&opts(faults), seed);
                eprintln!(
                    "{faults:?} seed {seed}: {} events, {} ops",
                    r.metrics.events, r.metrics.committed_ops
                );
                if let Some(v) = &r.violation {
                    panic!(
                        "{faults:?} seed {seed}: {} {}\n{}",
                        v.property,
                        v.detail,
                        v.recent_events.join("\n")
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod sweep {
    use crate::{FaultProfile, SimOptions, run_seeds};

    /// `SWEEP_SEEDS=200 cargo test --release -p synod-sim sweep -- --ignored --nocapture`
    /// (`SWEEP_FAULTS=membership` for one profile, `SWEEP_FIRST=101` to
    /// start elsewhere, `SWEEP_LEASE=1` / `SWEEP_FOLLOWER=1` for lease /
    /// follower reads).
    #[test]
    #[ignore]
    fn sweep_many_seeds() {
        let n: u64 = std::env::var("SWEEP_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
        let first: u64 =
            std::env::var("SWEEP_FIRST").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
        let only = std::env::var("SWEEP_FAULTS").ok();
        let bug = std::env::var("SWEEP_BUG").ok();
        for faults in [
            FaultProfile::Net,
            FaultProfile::Crash,
            FaultProfile::Snapshot,
            FaultProfile::Membership,
            FaultProfile::All,
        ] {
            if only.as_deref().is_some_and(|f| f != faults.name()) {
                continue;
            }
            let o = SimOptions {
                faults,
                bug: bug.clone(),
                lease_reads: std::env::var("SWEEP_LEASE").is_ok(),
                follower_reads: std::env::var("SWEEP_FOLLOWER").is_ok(),
                ..SimOptions::default()
            };
            let s = run_seeds(&o, first..first + n, 2);
            eprintln!("{faults:?}\n{}", s.render());
        }
    }
}

#[cfg(test)]
mod harness_tests {
    use crate::{FaultProfile, Sim, SimOptions, run_seed, run_seeds};
    use bytes::Bytes;
    use std::time::Duration;
    use synod_core::kv::{KvOp, KvResult};
    use synod_core::{NodeId, Role};
    use synod_raft::RaftNode;

    fn opts(faults: FaultProfile) -> SimOptions {
        SimOptions { faults, ops_per_client: 40, fault_window_ms: 5_000, ..SimOptions::default() }
    }

    #[test]
    fn raft_runs_are_deterministic() {
        let o = opts(FaultProfile::All);
        let a = run_seed(&o, 11);
        let b = run_seed(&o, 11);
        let c = run_seed(&o, 12);
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a.metrics.events, b.metrics.events);
        assert_eq!(a.metrics.elections, b.metrics.elections);
        assert_ne!(a.trace_hash, c.trace_hash);
    }

    #[test]
    fn run_seeds_does_not_depend_on_the_thread_count() {
        let o = SimOptions {
            faults: FaultProfile::All,
            ops_per_client: 20,
            fault_window_ms: 3_000,
            ..SimOptions::default()
        };
        let one = run_seeds(&o, 1..7, 1);
        let three = run_seeds(&o, 1..7, 3);
        assert_eq!(one.seeds, 6);
        assert_eq!((one.passed, one.metrics.events), (three.passed, three.metrics.events));
        assert_eq!(one.metrics.committed_ops, three.metrics.committed_ops);
        assert_eq!(one.violations, three.violations);
        let j = one.to_json();
        for field in [
            "seeds",
            "passed",
            "violations",
            "committed_ops",
            "messages_per_op",
            "events_per_sec",
            "throughput_ops_per_sec",
            "latency_us",
            "elections",
        ] {
            assert!(j.get(field).is_some(), "missing {field}");
        }
        assert_eq!(j["seeds"], 6);
        assert!(one.render().contains("of 6 seeds passed"));
    }

    #[test]
    fn an_injected_bug_is_caught_and_the_replay_names_it() {
        let o = SimOptions { bug: Some("vote-twice-in-term".into()), ..opts(FaultProfile::Net) };
        let s = run_seeds(&o, 1..40, 2);
        assert!(!s.violations.is_empty(), "two votes per term must be caught");
        let v = &s.violations[0];
        assert!(v.failure.replay.contains("--bug vote-twice-in-term"), "{}", v.failure.replay);
        assert!(v.failure.replay.contains(&format!("--seed {}", v.seed)));
        assert!(!v.failure.recent_events.is_empty());
    }

    /// The write §10.2.1 can lose if a parallel-writing leader counts itself
    /// too early: the leader's disk is stalled, its append reaches one
    /// follower (A) only, and A acknowledges. The leader then crashes
    /// (losing its unsynced append), A is cut off, and the other follower
    /// (B), which never had the entry, is elected with the restarted
    /// leader's vote and overwrites A. Returns whether the put was
    /// acknowledged before the crash, and whether A holds it at the end (an
    /// unacknowledged put is retried by its client, so it may be there).
    fn parallel_write_crash(bug: Option<&str>) -> (bool, bool) {
        let mut o = SimOptions {
            nodes: 3,
            clients: 0,
            leader_parallel_write: true,
            bug: bug.map(String::from),
            ..SimOptions::default()
        };
        o.fault_config.torn_write_probability = 0.0;
        let mut sim = Sim::<RaftNode>::new(&o, 7).expect("valid");
        assert!(sim.run_until(|s| s.leader().is_some(), Duration::from_secs(3)), "election");
        let put = sim.submit(KvOp::Put { key: Bytes::from("warm"), value: Bytes::from("1") });
        assert_eq!(sim.wait(put, Duration::from_secs(3)), Some(KvResult::Done));
        let leader = sim.leader().expect("a leader");
        let others: Vec<NodeId> = (1..=3).map(NodeId).filter(|&n| n != leader).collect();
        let (a, b) = (others[0], others[1]);
        sim.block(leader, b);
        sim.stall_disk(leader, Duration::from_secs(1));
        let put =
            sim.submit_to(leader, KvOp::Put { key: Bytes::from("x"), value: Bytes::from("1") });
        sim.run_for(Duration::from_millis(20));
        let acked = sim.result(put) == Some(&KvResult::Done);
        sim.crash(leader);
        sim.isolate(a);
        sim.unblock(leader, b);
        sim.restart(leader);
        assert!(
            sim.run_until(|s| s.leader().is_some_and(|l| l != a), Duration::from_secs(5)),
            "the restarted leader and B elect one of them"
        );
        sim.heal_all();
        sim.run_for(Duration::from_secs(2));
        (acked, sim.kv_get(a, b"x").is_some())
    }

    #[test]
    fn a_parallel_writing_leader_acknowledges_only_what_survives_its_crash() {
        let (acked, _) = parallel_write_crash(None);
        assert!(!acked, "acknowledged while only A held it durably");
    }

    #[test]
    fn a_leader_counting_its_unsynced_appends_loses_an_acknowledged_write() {
        let (acked, kept) = parallel_write_crash(Some("count-unsynced-leader-appends"));
        assert!(acked && !kept, "the bug acknowledges a write the cluster then loses");
    }

    /// A disk much slower than the network, every fault: a parallel-writing
    /// leader's followers acknowledge long before its own fsync completes.
    #[test]
    fn a_parallel_writing_leader_survives_every_fault_on_a_slow_disk() {
        let mut o = SimOptions {
            nodes: 3,
            leader_parallel_write: true,
            fsync_min_us: 5_000,
            fsync_max_us: 40_000,
            ..opts(FaultProfile::All)
        };
        o.net.latency_us = 100;
        o.net.jitter_us = 200;
        let s = run_seeds(&o, 1..101, 2);
        assert_eq!(s.passed, 100, "{}", s.render());
    }

    #[test]
    fn harness_elects_reelects_and_serves_clients() {
        let o = SimOptions { clients: 0, ..SimOptions::default() };
        let mut sim = Sim::<RaftNode>::new(&o, 3).expect("valid");
        assert!(
            sim.run_until(|s| s.leader().is_some(), Duration::from_secs(3)),
            "initial election"
        );
        let first = sim.leader().expect("a leader");
        let epoch = sim.status(first).expect("up").epoch;
        let put = sim.submit(KvOp::Put { key: Bytes::from("x"), value: Bytes::from("1") });
        assert_eq!(sim.wait(put, Duration::from_secs(3)), Some(KvResult::Done));
        sim.isolate(first);
        let new_leader =
            |s: &Sim<RaftNode>| s.leaders().iter().any(|&(n, e)| n != first && e > epoch);
        assert!(sim.run_until(new_leader, Duration::from_secs(5)), "re-election");
        let get = sim.submit(KvOp::Get { key: Bytes::from("x") });
        let one = Some(KvResult::Value(Some(Bytes::from("1"))));
        assert_eq!(sim.wait(get, Duration::from_secs(5)), one);
        sim.heal();
        sim.run_for(Duration::from_secs(1));
        assert_eq!(sim.leaders().len(), 1, "the old leader stepped down");
        assert_ne!(sim.status(first).map(|s| s.role), Some(Role::Leader));
        let l = sim.leader().expect("leader");
        sim.crash(l);
        assert!(sim.run_until(|s| s.leader().is_some(), Duration::from_secs(3)));
        sim.heal_all();
        sim.run_for(Duration::from_secs(1));
        for n in 1..=5 {
            assert_eq!(sim.kv_get(NodeId(n), b"x"), Some(Bytes::from("1")), "n{n}");
        }
        assert!(sim.check_linearizable().is_ok());
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
        assert!(sim.metrics().elections >= 3);
    }

    #[test]
    fn transfer_leader_moves_leadership() {
        let o = SimOptions { clients: 0, ..SimOptions::default() };
        let mut sim = Sim::<RaftNode>::new(&o, 5).expect("valid");
        assert!(sim.run_until(|s| s.leader().is_some(), Duration::from_secs(3)));
        sim.run_for(Duration::from_millis(200));
        let l = sim.leader().expect("leader");
        let to = NodeId(l.0 % 5 + 1);
        assert!(sim.transfer_leader(to));
        assert!(sim.run_until(|s| s.leader() == Some(to), Duration::from_secs(2)));
    }
}
