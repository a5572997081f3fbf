//! Apply order: each node applies positions 1, 2, 3, … consecutively, each
//! exactly once per incarnation, and never beyond what it knows committed.
//!
//! This is the `Committed` contract of `synod_core::protocol` ("a core emits
//! every position exactly once, in order, from 1"), which the state machine
//! relies on; it is also Raft's Figure 2 rule "if commitIndex > lastApplied:
//! increment lastApplied, apply log\[lastApplied\]". A restarted node starts
//! again from what its rebuilt core reports applied (0, or a snapshot), so
//! the expectation is reset on crash and restart. An installed snapshot
//! ([`SnapshotAction::Install`]) stands for every position up to its index:
//! application continues right after it, and it must move forward. Works
//! for any protocol.

use super::node_map::NodeMap;
use crate::invariant::{Invariant, StepView, Violation};
use synod_core::protocol::SnapshotAction;
use synod_core::{Committed, NodeId, Protocol, Status};

/// The property's name in violations.
pub const PROPERTY: &str = "apply order";

/// Checks that each node applies consecutive positions up to its commit index.
#[derive(Debug, Default)]
pub struct ApplyOrder {
    /// The last position each live node applied in this incarnation.
    applied_index: NodeMap<u64>,
}

impl ApplyOrder {
    /// A checker that has seen nothing applied.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node` applied `committed` in one step and now reports `status`.
    pub fn check(
        &mut self,
        node: NodeId,
        status: &Status,
        committed: &[Committed],
    ) -> Result<(), Violation> {
        self.check_with_snapshots(node, status, committed, &[])
    }

    /// [`check`](Self::check), with the step's snapshot actions: an install
    /// at index `i` runs after the committed entries up to `i`.
    pub fn check_with_snapshots(
        &mut self,
        node: NodeId,
        status: &Status,
        committed: &[Committed],
        snapshots: &[SnapshotAction],
    ) -> Result<(), Violation> {
        let applied_index = self.applied_index.entry(node);
        let mut installs = snapshots
            .iter()
            .filter_map(|a| match a {
                SnapshotAction::Install { meta } => Some(meta.index),
                _ => None,
            })
            .peekable();
        let mut install = |applied_index: &mut u64, upto: u64| -> Result<(), Violation> {
            while let Some(index) = installs.next_if(|&index| index < upto) {
                if index <= *applied_index {
                    let detail = format!("installed a snapshot at {index} after {applied_index}");
                    return Err(Violation::new(PROPERTY, Some(node), detail));
                }
                *applied_index = index;
            }
            Ok(())
        };
        for c in committed {
            install(applied_index, c.index)?;
            if c.index != *applied_index + 1 {
                let detail = format!("applied index {} right after {}", c.index, applied_index);
                return Err(Violation::new(PROPERTY, Some(node), detail));
            }
            *applied_index = c.index;
        }
        install(applied_index, u64::MAX)?;
        if *applied_index > status.commit_index {
            let detail = format!(
                "applied index {} beyond commit index {}",
                applied_index, status.commit_index
            );
            return Err(Violation::new(PROPERTY, Some(node), detail));
        }
        if status.applied_index != *applied_index {
            let detail = format!(
                "status reports applied index {}, but the outputs applied up to {}",
                status.applied_index, applied_index
            );
            return Err(Violation::new(PROPERTY, Some(node), detail));
        }
        Ok(())
    }

    /// `node` crashed: it will apply again from its recovered state.
    pub fn crashed(&mut self, node: NodeId) {
        self.applied_index.remove(node);
    }

    /// `node` restarted and its rebuilt core reports `status`.
    pub fn restarted(&mut self, node: NodeId, status: &Status) {
        self.applied_index.insert(node, status.applied_index);
    }
}

impl<P: Protocol> Invariant<P> for ApplyOrder {
    fn name(&self) -> &'static str {
        PROPERTY
    }

    fn after_step(&mut self, step: &StepView<'_, P>) -> Result<(), Violation> {
        let output = step.output;
        self.check_with_snapshots(
            step.node,
            &step.core.status(),
            &output.committed,
            &output.snapshots,
        )
    }

    fn on_crash(&mut self, node: NodeId) {
        self.crashed(node);
    }

    fn on_restart(&mut self, node: NodeId, core: &P) -> Result<(), Violation> {
        self.restarted(node, &core.status());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::testing::{noop, status};

    #[test]
    fn consecutive_application_up_to_the_commit_index_passes() {
        let mut checker = ApplyOrder::new();
        let n = NodeId(1);
        checker.check(n, &status(1, 3, 0), &[]).unwrap();
        checker.check(n, &status(1, 3, 2), &[noop(1), noop(2)]).unwrap();
        checker.check(n, &status(1, 3, 3), &[noop(3)]).unwrap();
        // Each node keeps its own count.
        checker.check(NodeId(2), &status(1, 1, 1), &[noop(1)]).unwrap();
    }

    #[test]
    fn applying_index_3_after_1_fires() {
        let mut checker = ApplyOrder::new();
        let n = NodeId(1);
        checker.check(n, &status(1, 5, 1), &[noop(1)]).unwrap();
        let violation = checker.check(n, &status(1, 5, 3), &[noop(3)]).unwrap_err();
        assert_eq!(violation.property, PROPERTY);
        assert!(violation.detail.contains("applied index 3 right after 1"), "{violation}");
    }

    #[test]
    fn applying_an_index_twice_fires() {
        let mut checker = ApplyOrder::new();
        let n = NodeId(1);
        checker.check(n, &status(1, 5, 1), &[noop(1)]).unwrap();
        assert!(checker.check(n, &status(1, 5, 1), &[noop(1)]).is_err());
    }

    #[test]
    fn applying_beyond_the_commit_index_fires() {
        let mut checker = ApplyOrder::new();
        let violation =
            checker.check(NodeId(1), &status(1, 1, 2), &[noop(1), noop(2)]).unwrap_err();
        assert!(violation.detail.contains("beyond commit index 1"), "{violation}");
    }

    #[test]
    fn a_status_that_disagrees_with_the_outputs_fires() {
        let mut checker = ApplyOrder::new();
        assert!(checker.check(NodeId(1), &status(1, 5, 2), &[noop(1)]).is_err());
    }

    #[test]
    fn a_restarted_node_applies_again_from_its_recovered_state() {
        let mut checker = ApplyOrder::new();
        let n = NodeId(1);
        checker.check(n, &status(1, 2, 2), &[noop(1), noop(2)]).unwrap();
        checker.crashed(n);
        checker.restarted(n, &status(1, 0, 0));
        checker.check(n, &status(1, 2, 1), &[noop(1)]).unwrap();
    }
}
