//! Leader Completeness (Raft paper §5.4, Figure 3): if a log entry is
//! committed in a given term, that entry will be present in the logs of the
//! leaders for all higher-numbered terms.
//!
//! The checker learns committed entries from every node's commit index (the
//! entries of its own log up to it), remembering per index the entry's term,
//! its payload digest and the *commit term* — the term of the node that
//! first reported it committed, which is at least the term in which it was
//! really committed (a node learns a commit only from a leader of its own
//! term). A leader of term t must hold every entry whose commit term is ≤ t;
//! a stale leader of a lower term need not. Each leader is checked against
//! the whole committed prefix in the first step it leads a term (elections
//! are rare), and after that only against entries committed since, so a
//! step costs O(newly committed entries).

use super::digest::payload_digest;
use super::node_map::NodeMap;
use super::raft_view::RaftView;
use crate::invariant::{Invariant, StepView, Violation};
use synod_core::{NodeId, Role};
use synod_raft::RaftNode;

/// The property's name in violations.
pub const PROPERTY: &str = "leader completeness";

/// An entry known committed.
#[derive(Clone, Copy, Debug)]
struct CommittedEntry {
    term: u64,
    payload_digest: u64,
    /// The term of the node that first reported it committed.
    commit_term: u64,
}

/// How far a leader was checked.
#[derive(Clone, Copy, Debug, Default)]
struct LeaderProgress {
    term: u64,
    checked_index: u64,
}

/// Checks that leaders hold every entry committed before or in their term.
#[derive(Debug, Default)]
pub struct LeaderCompleteness {
    /// `committed[i - 1]`: the committed entry at index `i`.
    committed: Vec<CommittedEntry>,
    leaders: NodeMap<LeaderProgress>,
}

impl LeaderCompleteness {
    /// A checker that knows nothing committed.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node` is now in state `view`.
    pub fn check(&mut self, node: NodeId, view: &impl RaftView) -> Result<(), Violation> {
        while (self.committed.len() as u64) < view.commit_index() {
            let Some(entry) = view.entry(self.committed.len() as u64 + 1) else { break };
            self.committed.push(CommittedEntry {
                term: entry.term,
                payload_digest: payload_digest(&entry.payload),
                commit_term: view.term(),
            });
        }
        if view.role() != Role::Leader {
            return Ok(());
        }
        let progress = self.leaders.entry(node);
        if progress.term != view.term() {
            *progress = LeaderProgress { term: view.term(), checked_index: 0 };
        }
        for (index, committed) in
            (progress.checked_index + 1..).zip(&self.committed[progress.checked_index as usize..])
        {
            if committed.commit_term > progress.term || index <= view.purged_index() {
                // Purged entries live in the leader's snapshot, which holds
                // only committed state (checked by snapshot agreement).
                continue;
            }
            let held = view.entry(index);
            if held.is_none_or(|e| {
                e.term != committed.term || payload_digest(&e.payload) != committed.payload_digest
            }) {
                let detail = format!(
                    "leader of term {} lacks entry {index} (term {}) committed by term {}; it holds {:?}",
                    progress.term, committed.term, committed.commit_term, held
                );
                return Err(Violation::new(PROPERTY, Some(node), detail));
            }
        }
        progress.checked_index = self.committed.len() as u64;
        Ok(())
    }

    /// `node` crashed; it must win a new election to lead again.
    pub fn crashed(&mut self, node: NodeId) {
        self.leaders.remove(node);
    }
}

impl Invariant<RaftNode> for LeaderCompleteness {
    fn name(&self) -> &'static str {
        PROPERTY
    }

    fn after_step(&mut self, step: &StepView<'_, RaftNode>) -> Result<(), Violation> {
        self.check(step.node, step.core)
    }

    fn on_crash(&mut self, node: NodeId) {
        self.crashed(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::testing::{FakeRaft, entry, log};

    fn committed_up_to(mut view: FakeRaft, commit_index: u64) -> FakeRaft {
        view.commit_index = commit_index;
        view
    }

    #[test]
    fn a_new_leader_holding_every_committed_entry_passes() {
        let mut checker = LeaderCompleteness::new();
        checker
            .check(NodeId(1), &committed_up_to(FakeRaft::new(1, log(&[1, 1, 1])), 2).leader())
            .unwrap();
        // Node 2 holds the committed prefix, and a different uncommitted entry 3.
        let mut log2 = log(&[1, 1]);
        log2.push(entry(2, 3, "x"));
        checker.check(NodeId(2), &FakeRaft::new(2, log2).leader()).unwrap();
    }

    #[test]
    fn a_new_leader_missing_a_committed_entry_fires() {
        let mut checker = LeaderCompleteness::new();
        checker
            .check(NodeId(1), &committed_up_to(FakeRaft::new(1, log(&[1, 1, 1])), 3).leader())
            .unwrap();
        let violation =
            checker.check(NodeId(2), &FakeRaft::new(2, log(&[1, 1])).leader()).unwrap_err();
        assert_eq!(violation.property, PROPERTY);
        assert_eq!(violation.node, Some(NodeId(2)));
        assert!(violation.detail.contains("lacks entry 3"), "{violation}");
    }

    #[test]
    fn a_new_leader_with_another_entry_at_a_committed_index_fires() {
        let mut checker = LeaderCompleteness::new();
        checker.check(NodeId(1), &committed_up_to(FakeRaft::new(1, log(&[1, 1])), 2)).unwrap();
        let other = vec![entry(1, 1, "op1"), entry(1, 2, "not op2")];
        assert!(checker.check(NodeId(2), &FakeRaft::new(2, other).leader()).is_err());
    }

    #[test]
    fn a_commit_after_the_election_is_checked_on_the_leaders_next_step() {
        // Figure 8: the term-3 leader commits index 2 by counting after the
        // term-4 leader was elected without it.
        let mut checker = LeaderCompleteness::new();
        let new_leader = FakeRaft::new(4, vec![entry(1, 1, "op1"), entry(4, 2, "y")]).leader();
        checker.check(NodeId(2), &new_leader).unwrap();
        checker
            .check(NodeId(1), &committed_up_to(FakeRaft::new(3, log(&[1, 2])), 2).leader())
            .unwrap();
        assert!(checker.check(NodeId(2), &new_leader).is_err());
    }

    #[test]
    fn a_stale_leader_need_not_hold_later_commits() {
        let mut checker = LeaderCompleteness::new();
        let stale = FakeRaft::new(1, log(&[1])).leader();
        checker.check(NodeId(1), &stale).unwrap();
        checker
            .check(
                NodeId(2),
                &committed_up_to(FakeRaft::new(2, vec![entry(1, 1, "op1"), entry(2, 2, "z")]), 2)
                    .leader(),
            )
            .unwrap();
        checker.check(NodeId(1), &stale).unwrap();
    }
}
