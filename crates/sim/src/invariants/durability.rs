//! The persistence contract, seen from outside (Raft paper Figure 2,
//! "Persistent state on all servers … updated on stable storage before
//! responding to RPCs"; `synod_core::protocol`'s output order).
//!
//! A message leaves a node only after the writes of its step (and of every
//! earlier step) are durable, so the core must have *written* — in this step
//! or before — everything the message promises. The checker follows each
//! node's written hard state and last log index, and checks every message:
//! - its term is written (pre-vote messages excepted: they carry a term the
//!   sender has not adopted, by design);
//! - a granted vote in term t for candidate c is written as (t, c), or the
//!   node has moved to a higher term;
//! - a successful append response's `match_index` is within the written log.
//!
//! It also follows the *synced* hard state, and checks on restart that the
//! rebuilt core's term is at least the synced term, with the synced vote if
//! the term is the same — so every vote granted before a crash still binds.

use super::node_map::NodeMap;
use super::raft_view::RaftView;
use crate::invariant::{Invariant, StepView, Violation};
use synod_core::NodeId;
use synod_raft::{Message, RaftNode, RaftOutput, Write};

/// The property's name in violations.
pub const PROPERTY: &str = "persistence contract";

/// What a node's writes say its disk holds.
#[derive(Clone, Copy, Debug, Default)]
struct DiskState {
    term: u64,
    voted_for: Option<NodeId>,
    last_index: u64,
}

impl DiskState {
    fn apply(&mut self, write: &Write) {
        match write {
            Write::HardState { term, voted_for } => {
                (self.term, self.voted_for) = (*term, *voted_for)
            }
            Write::Append { entries } => {
                if let Some(last) = entries.last() {
                    self.last_index = last.index;
                }
            }
            // A snapshot keeps a matching tail or replaces the log up to its
            // index; either way the log reaches at least that far.
            Write::Snapshot { meta, .. } => self.last_index = self.last_index.max(meta.index),
        }
    }
}

/// Checks that no message promises more than the node has written.
#[derive(Debug, Default)]
pub struct Durability {
    /// Per node, the state its writes so far describe, synced or not.
    written: NodeMap<DiskState>,
    /// Per node, the state its synced writes describe.
    synced: NodeMap<DiskState>,
}

impl Durability {
    /// A checker that has seen no writes.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node` produced `output`.
    pub fn check(&mut self, node: NodeId, output: &RaftOutput) -> Result<(), Violation> {
        let written = self.written.entry(node);
        output.writes.iter().for_each(|write| written.apply(write));
        for (to, message) in &output.messages {
            let broken = match *message {
                Message::PreVote { .. } | Message::PreVoteResponse { .. } => None,
                _ if message.term() > written.term => {
                    Some(format!("its written term is {}", written.term))
                }
                Message::RequestVoteResponse { term, granted: true }
                    if term == written.term && written.voted_for != Some(*to) =>
                {
                    Some(format!("its written vote is {:?}", written.voted_for))
                }
                Message::AppendEntriesResponse { success: true, match_index, .. }
                    if match_index > written.last_index =>
                {
                    Some(format!("its written log ends at {}", written.last_index))
                }
                _ => None,
            };
            if let Some(why) = broken {
                let detail = format!("sent {message:?} to {to}, but {why}");
                return Err(Violation::new(PROPERTY, Some(node), detail));
            }
        }
        Ok(())
    }

    /// `writes` of `node` became durable, in this order.
    pub fn synced(&mut self, node: NodeId, writes: &[Write]) {
        let synced = self.synced.entry(node);
        writes.iter().for_each(|write| synced.apply(write));
    }

    /// `node` crashed: only its synced writes survive.
    pub fn crashed(&mut self, node: NodeId) {
        let synced = *self.synced.entry(node);
        self.written.insert(node, synced);
    }

    /// `node` restarted in state `view`.
    pub fn restarted(&mut self, node: NodeId, view: &impl RaftView) -> Result<(), Violation> {
        let synced = *self.synced.entry(node);
        let recovered = DiskState {
            term: view.term(),
            voted_for: view.voted_for(),
            last_index: view.last_index(),
        };
        self.written.insert(node, recovered);
        self.synced.insert(node, recovered);
        let vote_lost = recovered.term == synced.term
            && synced.voted_for.is_some()
            && recovered.voted_for != synced.voted_for;
        if recovered.term < synced.term || vote_lost {
            let detail = format!(
                "restarted with term {} and vote {:?}, but term {} and vote {:?} were synced",
                recovered.term, recovered.voted_for, synced.term, synced.voted_for
            );
            return Err(Violation::new(PROPERTY, Some(node), detail));
        }
        Ok(())
    }
}

impl Invariant<RaftNode> for Durability {
    fn name(&self) -> &'static str {
        PROPERTY
    }

    fn after_step(&mut self, step: &StepView<'_, RaftNode>) -> Result<(), Violation> {
        self.check(step.node, step.output)
    }

    fn on_synced(&mut self, node: NodeId, writes: &[Write]) -> Result<(), Violation> {
        self.synced(node, writes);
        Ok(())
    }

    fn on_crash(&mut self, node: NodeId) {
        self.crashed(node);
    }

    fn on_restart(&mut self, node: NodeId, core: &RaftNode) -> Result<(), Violation> {
        self.restarted(node, core)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::testing::{FakeRaft, log, output};

    const N: NodeId = NodeId(1);

    fn hard_state(term: u64, voted_for: Option<u64>) -> Write {
        Write::HardState { term, voted_for: voted_for.map(NodeId) }
    }

    fn grant(term: u64) -> Message {
        Message::RequestVoteResponse { term, granted: true }
    }

    #[test]
    fn messages_backed_by_their_writes_pass() {
        let mut checker = Durability::new();
        let mut out = output();
        out.writes.push(hard_state(2, Some(2)));
        out.send(NodeId(2), grant(2));
        // Pre-vote carries a term the node has not adopted.
        out.send(NodeId(3), Message::PreVoteResponse { term: 3, granted: true });
        checker.check(N, &out).unwrap();
        let mut out = output();
        out.writes.push(Write::Append { entries: log(&[2, 2]) });
        out.send(
            NodeId(2),
            Message::AppendEntriesResponse {
                term: 2,
                success: true,
                match_index: 2,
                conflict_term: 0,
                conflict_index: 0,
                read_round: 0,
            },
        );
        checker.check(N, &out).unwrap();
    }

    #[test]
    fn a_vote_sent_without_writing_it_fires() {
        let mut checker = Durability::new();
        let mut out = output();
        out.writes.push(hard_state(2, None));
        out.send(NodeId(2), grant(2));
        let violation = checker.check(N, &out).unwrap_err();
        assert_eq!(violation.property, PROPERTY);
        assert!(violation.detail.contains("written vote is None"), "{violation}");
    }

    #[test]
    fn a_message_in_an_unwritten_term_fires() {
        let mut checker = Durability::new();
        let mut out = output();
        out.send(NodeId(2), Message::TimeoutNow { term: 1 });
        let violation = checker.check(N, &out).unwrap_err();
        assert!(violation.detail.contains("written term is 0"), "{violation}");
    }

    #[test]
    fn acknowledging_unwritten_entries_fires() {
        let mut checker = Durability::new();
        let mut out = output();
        out.writes.push(hard_state(1, None));
        out.send(
            NodeId(2),
            Message::AppendEntriesResponse {
                term: 1,
                success: true,
                match_index: 1,
                conflict_term: 0,
                conflict_index: 0,
                read_round: 0,
            },
        );
        assert!(checker.check(N, &out).is_err());
    }

    #[test]
    fn a_restart_below_the_synced_term_or_without_the_synced_vote_fires() {
        let mut checker = Durability::new();
        checker.synced(N, &[hard_state(3, Some(2))]);
        checker.crashed(N);
        let violation = checker.restarted(N, &FakeRaft::new(2, vec![])).unwrap_err();
        assert!(
            violation.detail.contains("term 3 and vote Some(NodeId(2)) were synced"),
            "{violation}"
        );
        checker.synced(N, &[hard_state(3, Some(2))]);
        assert!(checker.restarted(N, &FakeRaft::new(3, vec![])).is_err());
    }

    #[test]
    fn a_restart_that_lost_only_unsynced_writes_passes() {
        let mut checker = Durability::new();
        let mut out = output();
        out.writes.push(hard_state(3, Some(2)));
        checker.check(N, &out).unwrap();
        checker.synced(N, &[hard_state(2, Some(1))]);
        checker.crashed(N);
        let mut recovered = FakeRaft::new(2, vec![]);
        recovered.voted_for = Some(NodeId(1));
        checker.restarted(N, &recovered).unwrap();
        // After the crash, only the synced state backs messages.
        let mut out = output();
        out.send(NodeId(2), grant(3));
        assert!(checker.check(N, &out).is_err());
    }
}
