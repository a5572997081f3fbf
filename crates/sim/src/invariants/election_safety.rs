//! Election Safety (Raft paper §5.2, Figure 3): at most one leader can be
//! elected in a given term — and the rule that makes it so: each server
//! votes for at most one candidate in a given term (§5.2, Figure 2
//! `votedFor`), even across crashes.
//!
//! Leaders are recorded in a global map term → leader. Votes are read from
//! what a node grants (`RequestVoteResponse { granted: true }` messages it
//! emits) and from its `voted_for`. A grant binds the node across a crash
//! once its step's writes are synced (only then may the message leave); an
//! unsynced grant dies with the node, which may then vote afresh.

use super::node_map::NodeMap;
use super::raft_view::RaftView;
use super::sync_queue::SyncQueue;
use crate::invariant::{Invariant, StepView, Violation};
use std::collections::HashMap;
use synod_core::{NodeId, Role};
use synod_raft::{Message, RaftNode, RaftOutput};

/// The name of the one-leader-per-term property in violations.
pub const LEADER_PROPERTY: &str = "election safety";
/// The name of the one-vote-per-term property in violations.
pub const VOTE_PROPERTY: &str = "one vote per term";

/// A vote: the term and the candidate.
type Vote = (u64, NodeId);

/// What one node did in elections.
#[derive(Debug, Default)]
struct Voter {
    /// The term in which it was last recorded as leader (0: never).
    led_term: u64,
    /// Its latest grant in this incarnation, durable or not.
    granted: Option<Vote>,
    /// Its latest grant known durable.
    durable: Option<Vote>,
}

/// Checks one leader per term and one vote per node per term.
#[derive(Debug, Default)]
pub struct ElectionSafety {
    leaders: HashMap<u64, NodeId>,
    voters: NodeMap<Voter>,
    pending_votes: SyncQueue<Vote>,
}

impl ElectionSafety {
    /// A checker that has seen no election.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node`, now in state `view`, produced `output`.
    pub fn check(
        &mut self,
        node: NodeId,
        view: &impl RaftView,
        output: &RaftOutput,
    ) -> Result<(), Violation> {
        let term = view.term();
        let voter = self.voters.entry(node);
        if view.role() == Role::Leader && voter.led_term != term {
            let leader = *self.leaders.entry(term).or_insert(node);
            if leader != node {
                let detail = format!("leader in term {term}, but {leader} already led it");
                return Err(Violation::new(LEADER_PROPERTY, Some(node), detail));
            }
            voter.led_term = term;
        }
        self.pending_votes.emitted(node, output.writes.len());
        for (to, message) in &output.messages {
            if let Message::RequestVoteResponse { term: vote_term, granted: true } = *message {
                grant(voter, node, (vote_term, *to))?;
                self.pending_votes.hold(node, (vote_term, *to));
            }
        }
        if let (Some((vote_term, candidate)), Some(voted_for)) = (voter.granted, view.voted_for())
            && vote_term == term
            && voted_for != candidate
        {
            let detail =
                format!("granted its term-{term} vote to {candidate}, but votedFor is {voted_for}");
            return Err(Violation::new(VOTE_PROPERTY, Some(node), detail));
        }
        self.settle(node);
        Ok(())
    }

    /// `writes` more writes of `node` became durable.
    pub fn synced(&mut self, node: NodeId, writes: usize) {
        self.pending_votes.synced(node, writes);
        self.settle(node);
    }

    /// `node` crashed: grants whose writes were not synced never left it.
    pub fn crashed(&mut self, node: NodeId) {
        self.pending_votes.crash(node);
        let voter = self.voters.entry(node);
        voter.granted = voter.durable;
    }

    /// Moves `node`'s grants whose writes are synced into `durable`.
    fn settle(&mut self, node: NodeId) {
        let voter = self.voters.entry(node);
        self.pending_votes.release(node, |vote| {
            if voter.durable.is_none_or(|(term, _)| term <= vote.0) {
                voter.durable = Some(vote);
            }
        });
    }
}

/// Records that `node` grants `vote`, unless it already granted another
/// candidate the same term.
fn grant(voter: &mut Voter, node: NodeId, vote: Vote) -> Result<(), Violation> {
    match voter.granted {
        Some((term, candidate)) if term == vote.0 && candidate != vote.1 => {
            let detail = format!("voted for {candidate} and then for {} in term {term}", vote.1);
            Err(Violation::new(VOTE_PROPERTY, Some(node), detail))
        }
        Some((term, _)) if term > vote.0 => Ok(()),
        _ => {
            voter.granted = Some(vote);
            Ok(())
        }
    }
}

impl Invariant<RaftNode> for ElectionSafety {
    fn name(&self) -> &'static str {
        LEADER_PROPERTY
    }

    fn after_step(&mut self, step: &StepView<'_, RaftNode>) -> Result<(), Violation> {
        self.check(step.node, step.core, step.output)
    }

    fn on_synced(&mut self, node: NodeId, writes: &[synod_raft::Write]) -> Result<(), Violation> {
        self.synced(node, writes.len());
        Ok(())
    }

    fn on_crash(&mut self, node: NodeId) {
        self.crashed(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::testing::{FakeRaft, output};
    use synod_raft::Write;

    fn vote(to: u64, term: u64) -> RaftOutput {
        let mut out = output();
        out.writes.push(Write::HardState { term, voted_for: Some(NodeId(to)) });
        out.send(NodeId(to), Message::RequestVoteResponse { term, granted: true });
        out
    }

    #[test]
    fn two_leaders_in_different_terms_pass() {
        let mut checker = ElectionSafety::new();
        checker.check(NodeId(1), &FakeRaft::new(1, vec![]).leader(), &output()).unwrap();
        checker.check(NodeId(1), &FakeRaft::new(1, vec![]).leader(), &output()).unwrap();
        checker.check(NodeId(2), &FakeRaft::new(2, vec![]).leader(), &output()).unwrap();
        // A stale leader of term 1 stepping again is still the one leader of term 1.
        checker.check(NodeId(1), &FakeRaft::new(1, vec![]).leader(), &output()).unwrap();
    }

    #[test]
    fn two_leaders_in_one_term_fire() {
        let mut checker = ElectionSafety::new();
        checker.check(NodeId(1), &FakeRaft::new(3, vec![]).leader(), &output()).unwrap();
        let violation =
            checker.check(NodeId(2), &FakeRaft::new(3, vec![]).leader(), &output()).unwrap_err();
        assert_eq!(violation.property, LEADER_PROPERTY);
        assert_eq!(violation.node, Some(NodeId(2)));
        assert!(violation.detail.contains("n1 already led it"), "{violation}");
    }

    #[test]
    fn one_vote_per_term_and_repeated_grants_pass() {
        let mut checker = ElectionSafety::new();
        let mut voter = FakeRaft::new(2, vec![]);
        voter.voted_for = Some(NodeId(2));
        checker.check(NodeId(1), &voter, &vote(2, 2)).unwrap();
        checker.check(NodeId(1), &voter, &vote(2, 2)).unwrap();
        voter.term = 3;
        voter.voted_for = Some(NodeId(3));
        checker.check(NodeId(1), &voter, &vote(3, 3)).unwrap();
    }

    #[test]
    fn voting_twice_in_a_term_fires() {
        // InjectedBug::VoteTwiceInTerm: the second grant leaves votedFor alone.
        let mut checker = ElectionSafety::new();
        let mut voter = FakeRaft::new(2, vec![]);
        voter.voted_for = Some(NodeId(2));
        checker.check(NodeId(1), &voter, &vote(2, 2)).unwrap();
        let violation = checker.check(NodeId(1), &voter, &vote(3, 2)).unwrap_err();
        assert_eq!(violation.property, VOTE_PROPERTY);
        assert!(violation.detail.contains("voted for n2 and then for n3 in term 2"), "{violation}");
    }

    #[test]
    fn voted_for_disagreeing_with_the_grant_fires() {
        let mut checker = ElectionSafety::new();
        let mut voter = FakeRaft::new(2, vec![]);
        voter.voted_for = Some(NodeId(3));
        let violation = checker.check(NodeId(1), &voter, &vote(2, 2)).unwrap_err();
        assert_eq!(violation.property, VOTE_PROPERTY);
    }

    #[test]
    fn voting_again_after_a_restart_fires_once_the_first_vote_was_durable() {
        let mut checker = ElectionSafety::new();
        let mut voter = FakeRaft::new(2, vec![]);
        voter.voted_for = Some(NodeId(2));
        checker.check(NodeId(1), &voter, &vote(2, 2)).unwrap();
        checker.synced(NodeId(1), 1);
        checker.crashed(NodeId(1));
        voter.voted_for = Some(NodeId(3));
        let violation = checker.check(NodeId(1), &voter, &vote(3, 2)).unwrap_err();
        assert_eq!(violation.property, VOTE_PROPERTY);
    }

    #[test]
    fn a_grant_lost_before_its_write_synced_may_be_given_again() {
        let mut checker = ElectionSafety::new();
        let mut voter = FakeRaft::new(2, vec![]);
        voter.voted_for = Some(NodeId(2));
        checker.check(NodeId(1), &voter, &vote(2, 2)).unwrap();
        checker.crashed(NodeId(1));
        voter.voted_for = Some(NodeId(3));
        checker.check(NodeId(1), &voter, &vote(3, 2)).unwrap();
    }
}
