//! Multi-Paxos in the simulator: cluster configuration, injectable bugs and
//! the Paxos checkers.

use crate::invariant::Invariant;
use crate::protocol::SimProtocol;
use std::time::Duration;
use synod_core::NodeId;
use synod_paxos::{Config, InjectedBug, PaxosNode, PaxosOutput};

/// Bug names accepted by `--bug` for Paxos, and what they break.
pub const PAXOS_BUGS: &[(&str, InjectedBug)] =
    &[("ignore-promised-values", InjectedBug::IgnorePromisedValues)];

impl SimProtocol for PaxosNode {
    fn name() -> &'static str {
        "paxos"
    }

    /// `Config::new(voters)` with timeouts for a ~1 ms network: elections
    /// after 150–300 ms of silence, heartbeats every 50 ms; a snapshot every
    /// 64 chosen slots with 16 trailing slots kept, sent in 128-byte chunks
    /// (as for Raft: even short runs compact, and transfers take several
    /// chunks).
    fn sim_config(voters: &[NodeId]) -> Config {
        let mut c = Config::new(voters.to_vec());
        c.election_timeout_min = Duration::from_millis(150);
        c.election_timeout_max = Duration::from_millis(300);
        c.heartbeat_interval = Duration::from_millis(50);
        c.snapshot_interval_slots = 64;
        c.snapshot_trailing_slots = 16;
        c.snapshot_chunk_bytes = 128;
        c
    }

    fn bugs() -> &'static [&'static str] {
        &["ignore-promised-values"]
    }

    fn inject_bug(config: &mut Config, bug: &str) -> Result<(), String> {
        match PAXOS_BUGS.iter().find(|(name, _)| *name == bug) {
            Some((_, b)) => {
                config.bug = *b;
                Ok(())
            }
            None => Err(format!(
                "unknown paxos bug `{bug}` (expected one of: {})",
                Self::bugs().join(", ")
            )),
        }
    }

    fn invariants() -> Vec<Box<dyn Invariant<Self>>> {
        crate::invariants::paxos_invariants()
    }

    fn trigger_snapshot(&mut self, out: &mut PaxosOutput) -> bool {
        PaxosNode::trigger_snapshot(self, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FaultProfile, ProtocolKind, SimOptions, run_seed};

    #[test]
    fn bug_names_map_to_injected_bugs() {
        let mut c = PaxosNode::sim_config(&[NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(c.validate(), Ok(()));
        PaxosNode::inject_bug(&mut c, "ignore-promised-values").expect("known bug");
        assert_eq!(c.bug, InjectedBug::IgnorePromisedValues);
        let e = PaxosNode::inject_bug(&mut c, "nope").unwrap_err();
        assert!(e.contains("nope") && e.contains("ignore-promised-values"));
        assert_eq!(PAXOS_BUGS.len(), PaxosNode::bugs().len());
    }

    fn opts(faults: FaultProfile) -> SimOptions {
        SimOptions {
            protocol: ProtocolKind::Paxos,
            faults,
            ops_per_client: 40,
            fault_window_ms: 5_000,
            ..SimOptions::default()
        }
    }

    #[test]
    fn paxos_passes_without_faults() {
        let r = run_seed(&opts(FaultProfile::None), 1);
        assert!(r.passed, "{:#?}", r.violation);
        assert_eq!(r.metrics.committed_ops, 5 * 40);
    }

    #[test]
    fn paxos_passes_under_every_fault() {
        for faults in
            [FaultProfile::Net, FaultProfile::Crash, FaultProfile::Snapshot, FaultProfile::All]
        {
            for seed in 1..=3 {
                let r = run_seed(&opts(faults), seed);
                if let Some(v) = &r.violation {
                    panic!(
                        "{faults:?} seed {seed}: {} {}\n{}\nreplay: {}",
                        v.property,
                        v.detail,
                        v.recent_events.join("\n"),
                        v.replay
                    );
                }
            }
        }
    }
}
