//! Raft in the simulator: cluster configuration, injectable bugs and the
//! Raft checkers.

use crate::invariant::Invariant;
use crate::protocol::SimProtocol;
use std::time::Duration;
use synod_core::{NodeId, Time};
use synod_raft::{Config, InjectedBug, RaftNode, RaftOutput};

/// Bug names accepted by `--bug` for Raft, and what they break.
pub const RAFT_BUGS: &[(&str, InjectedBug)] = &[
    ("commit-previous-term-by-count", InjectedBug::CommitPreviousTermByCount),
    ("vote-twice-in-term", InjectedBug::VoteTwiceInTerm),
];

impl SimProtocol for RaftNode {
    fn name() -> &'static str {
        "raft"
    }

    /// `Config::new(voters)` with timeouts for a ~1 ms network: elections
    /// after 150–300 ms of silence, heartbeats every 50 ms.
    fn sim_config(voters: &[NodeId]) -> Config {
        let mut c = Config::new(voters.to_vec());
        c.election_timeout_min = Duration::from_millis(150);
        c.election_timeout_max = Duration::from_millis(300);
        c.heartbeat_interval = Duration::from_millis(50);
        c
    }

    fn bugs() -> &'static [&'static str] {
        &["commit-previous-term-by-count", "vote-twice-in-term"]
    }

    fn inject_bug(config: &mut Config, bug: &str) -> Result<(), String> {
        match RAFT_BUGS.iter().find(|(name, _)| *name == bug) {
            Some((_, b)) => {
                config.bug = *b;
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
        for faults in [FaultProfile::Net, FaultProfile::Crash, FaultProfile::All] {
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
    #[test]
    #[ignore]
    fn sweep_many_seeds() {
        let n: u64 = std::env::var("SWEEP_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
        let bug = std::env::var("SWEEP_BUG").ok();
        for faults in [FaultProfile::Net, FaultProfile::Crash, FaultProfile::All] {
            let o = SimOptions { faults, bug: bug.clone(), ..SimOptions::default() };
            let s = run_seeds(&o, 1..n + 1, 2);
            eprintln!("{faults:?}\n{}", s.render());
        }
    }
}
