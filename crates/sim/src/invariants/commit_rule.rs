//! The commit rule (Raft paper §5.4.2, Figure 8): a leader commits by
//! counting replicas only entries of its current term; earlier entries
//! become committed indirectly, as a prefix of those.
//!
//! So whenever a leader's commit index advances in a step, the entry at the
//! new commit index must carry the leader's current term. This fires on
//! `InjectedBug::CommitPreviousTermByCount` as soon as the bad commit
//! happens, even when no committed entry has been lost (yet).

use super::node_map::NodeMap;
use super::raft_view::RaftView;
use crate::invariant::{Invariant, StepView, Violation};
use synod_core::{NodeId, Role};
use synod_raft::RaftNode;

/// The property's name in violations.
pub const PROPERTY: &str = "commit rule";

/// Checks that leaders advance their commit index only to current-term entries.
#[derive(Debug, Default)]
pub struct CommitRule {
    /// Per live node, its commit index after its last step.
    commit_index: NodeMap<u64>,
}

impl CommitRule {
    /// A checker that has seen no commits.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node` is now in state `view`.
    pub fn check(&mut self, node: NodeId, view: &impl RaftView) -> Result<(), Violation> {
        let previous = std::mem::replace(self.commit_index.entry(node), view.commit_index());
        if view.role() != Role::Leader || view.commit_index() <= previous {
            return Ok(());
        }
        match view.term_at(view.commit_index()) {
            Some(term) if term == view.term() => Ok(()),
            term => {
                let detail = format!(
                    "leader of term {} advanced its commit index {} -> {} to an entry of term {:?}",
                    view.term(),
                    previous,
                    view.commit_index(),
                    term
                );
                Err(Violation::new(PROPERTY, Some(node), detail))
            }
        }
    }

    /// `node` crashed: its commit index was volatile.
    pub fn crashed(&mut self, node: NodeId) {
        self.commit_index.remove(node);
    }

    /// `node` restarted in state `view`.
    pub fn restarted(&mut self, node: NodeId, view: &impl RaftView) {
        self.commit_index.insert(node, view.commit_index());
    }
}

impl Invariant<RaftNode> for CommitRule {
    fn name(&self) -> &'static str {
        PROPERTY
    }

    fn after_step(&mut self, step: &StepView<'_, RaftNode>) -> Result<(), Violation> {
        self.check(step.node, step.core)
    }

    fn on_crash(&mut self, node: NodeId) {
        self.crashed(node);
    }

    fn on_restart(&mut self, node: NodeId, core: &RaftNode) -> Result<(), Violation> {
        self.restarted(node, core);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::testing::{FakeRaft, log};

    fn with_commit(mut view: FakeRaft, commit_index: u64) -> FakeRaft {
        view.commit_index = commit_index;
        view
    }

    #[test]
    fn a_leader_committing_its_own_terms_entry_passes() {
        let mut checker = CommitRule::new();
        let n = NodeId(1);
        checker.check(n, &with_commit(FakeRaft::new(3, log(&[1, 2, 3])), 1)).unwrap();
        // Entry 3 is of the leader's term; entry 2 commits with it.
        checker.check(n, &with_commit(FakeRaft::new(3, log(&[1, 2, 3])), 3).leader()).unwrap();
        // A follower's commit index may land on any term.
        checker.check(NodeId(2), &with_commit(FakeRaft::new(3, log(&[1, 2, 3])), 2)).unwrap();
    }

    #[test]
    fn a_leader_committing_an_old_terms_entry_by_count_fires() {
        let mut checker = CommitRule::new();
        let n = NodeId(1);
        // Committed up to 1 while following; then elected leader of term 4.
        checker.check(n, &with_commit(FakeRaft::new(4, log(&[1, 2, 4])), 1)).unwrap();
        let leader = FakeRaft::new(4, log(&[1, 2, 4])).leader();
        checker.check(n, &with_commit(leader.clone(), 1)).unwrap();
        let violation = checker.check(n, &with_commit(leader, 2)).unwrap_err();
        assert_eq!(violation.property, PROPERTY);
        assert!(
            violation.detail.contains("commit index 1 -> 2 to an entry of term Some(2)"),
            "{violation}"
        );
    }

    #[test]
    fn a_restarted_leader_is_judged_from_its_recovered_commit_index() {
        let mut checker = CommitRule::new();
        let n = NodeId(1);
        checker.check(n, &with_commit(FakeRaft::new(2, log(&[1, 2])), 2)).unwrap();
        checker.crashed(n);
        checker.restarted(n, &FakeRaft::new(2, log(&[1, 2])));
        let leader = FakeRaft::new(3, log(&[1, 2, 3])).leader();
        assert!(checker.check(n, &with_commit(leader, 2)).is_err());
    }
}
