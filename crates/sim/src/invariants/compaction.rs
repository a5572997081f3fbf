//! The compaction invariant (Raft thesis §5.1): a node's log is purged only
//! into a snapshot, a snapshot holds only applied state, and applied state
//! only committed entries — `purged <= snapshot <= applied <= committed <=
//! last` after every step. The core asserts the same between calls; this
//! checker reports it as a violation (with a replayable seed) instead of a
//! crash, and also catches a snapshot moving backwards within an
//! incarnation.

use super::node_map::NodeMap;
use super::raft_view::RaftView;
use crate::invariant::{Invariant, StepView, Violation};
use synod_core::NodeId;
use synod_raft::RaftNode;

/// The property's name in violations.
pub const PROPERTY: &str = "compaction invariant";

/// Checks `purged <= snapshot <= applied <= committed <= last`.
#[derive(Debug, Default)]
pub struct Compaction {
    /// The snapshot index each live node last reported.
    snapshot_index: NodeMap<u64>,
}

impl Compaction {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node` is now in state `view`.
    pub fn check(&mut self, node: NodeId, view: &impl RaftView) -> Result<(), Violation> {
        let chain = [
            ("purged", view.purged_index()),
            ("snapshot", view.snapshot_index()),
            ("applied", view.applied_index()),
            ("committed", view.commit_index()),
            ("last", view.last_index()),
        ];
        if let Some(pair) = chain.windows(2).find(|w| w[0].1 > w[1].1) {
            let detail = format!(
                "{} index {} is beyond {} index {} ({chain:?})",
                pair[0].0, pair[0].1, pair[1].0, pair[1].1
            );
            return Err(Violation::new(PROPERTY, Some(node), detail));
        }
        let previous = std::mem::replace(self.snapshot_index.entry(node), view.snapshot_index());
        if view.snapshot_index() < previous {
            let detail = format!("snapshot went back from {previous} to {}", view.snapshot_index());
            return Err(Violation::new(PROPERTY, Some(node), detail));
        }
        Ok(())
    }
}

impl Invariant<RaftNode> for Compaction {
    fn name(&self) -> &'static str {
        PROPERTY
    }

    fn after_step(&mut self, step: &StepView<'_, RaftNode>) -> Result<(), Violation> {
        self.check(step.node, step.core)
    }

    fn on_crash(&mut self, node: NodeId) {
        self.snapshot_index.remove(node);
    }

    fn on_restart(&mut self, node: NodeId, core: &RaftNode) -> Result<(), Violation> {
        self.check(node, core)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::Role;
    use synod_raft::Entry;

    struct Indexes([u64; 5]);

    impl RaftView for Indexes {
        fn term(&self) -> u64 {
            1
        }
        fn role(&self) -> Role {
            Role::Follower
        }
        fn voted_for(&self) -> Option<NodeId> {
            None
        }
        fn commit_index(&self) -> u64 {
            self.0[3]
        }
        fn last_index(&self) -> u64 {
            self.0[4]
        }
        fn term_at(&self, _index: u64) -> Option<u64> {
            None
        }
        fn entry(&self, _index: u64) -> Option<&Entry> {
            None
        }
        fn purged_index(&self) -> u64 {
            self.0[0]
        }
        fn snapshot_index(&self) -> u64 {
            self.0[1]
        }
        fn applied_index(&self) -> u64 {
            self.0[2]
        }
    }

    #[test]
    fn an_ordered_chain_passes_and_each_inversion_is_named() {
        let mut c = Compaction::new();
        assert!(c.check(NodeId(1), &Indexes([3, 5, 5, 7, 9])).is_ok());
        let e = c.check(NodeId(2), &Indexes([6, 5, 5, 7, 9])).unwrap_err();
        assert!(e.detail.starts_with("purged index 6 is beyond snapshot"), "{}", e.detail);
        let e = c.check(NodeId(2), &Indexes([0, 8, 5, 7, 9])).unwrap_err();
        assert!(e.detail.starts_with("snapshot index 8 is beyond applied"), "{}", e.detail);
        let e = c.check(NodeId(2), &Indexes([0, 0, 5, 7, 6])).unwrap_err();
        assert!(e.detail.starts_with("committed index 7 is beyond last"), "{}", e.detail);
    }

    #[test]
    fn a_snapshot_going_back_is_caught_until_a_crash() {
        let mut c = Compaction::new();
        assert!(c.check(NodeId(1), &Indexes([0, 5, 5, 5, 5])).is_ok());
        assert!(c.check(NodeId(1), &Indexes([0, 4, 5, 5, 5])).is_err());
        c.snapshot_index.remove(NodeId(1));
        assert!(c.check(NodeId(1), &Indexes([0, 2, 2, 2, 2])).is_ok());
    }
}
