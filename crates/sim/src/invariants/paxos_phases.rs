//! Paxos's phase order ("Paxos Made Simple" §2.2, P2c): a leader sends
//! Phase 2 accepts in its ballot only after a majority of acceptors (itself
//! included) promised that ballot in Phase 1.
//!
//! Promises are read from the `Promise` messages acceptors emit (to the
//! ballot's owner); every `Accept` a node emits in its own ballot is checked
//! against them. A promise counts once emitted — the leader can only have
//! received fewer — so the check never fires on a correct run.

use crate::invariant::{Invariant, StepView, Violation};
use std::collections::HashMap;
use synod_core::{NodeId, quorum};
use synod_paxos::multi::Message;
use synod_paxos::{Ballot, PaxosNode, PaxosOutput};

/// The property's name in violations.
pub const PROPERTY: &str = "paxos: phase 2 after a phase 1 majority";

/// Per ballot: who promised it, and whether its Phase 2 was already
/// checked.
#[derive(Clone, Copy, Debug, Default)]
struct BallotRecord {
    promised: u64,
    checked: bool,
}

/// Checks that every ballot's accepts follow a majority of promises.
#[derive(Debug, Default)]
pub struct PhaseOrder {
    ballots: HashMap<Ballot, BallotRecord>,
}

impl PhaseOrder {
    /// A checker that has seen no promise.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node`, in a cluster of `voters`, produced `output`.
    pub fn check(
        &mut self,
        node: NodeId,
        voters: usize,
        output: &PaxosOutput,
    ) -> Result<(), Violation> {
        if node.0 == 0 || node.0 > 64 {
            return Ok(());
        }
        for (_, message) in &output.messages {
            match message {
                Message::Promise { ballot, .. } => {
                    self.ballots.entry(*ballot).or_default().promised |= 1 << (node.0 - 1);
                }
                Message::Accept { ballot, .. } if ballot.node == node => {
                    let record = self.ballots.entry(*ballot).or_default();
                    if record.checked {
                        continue;
                    }
                    let promised = (record.promised | 1 << (node.0 - 1)).count_ones() as usize;
                    if !quorum::is_majority(promised, voters) {
                        let detail = format!(
                            "accepts in {ballot} after promises from only {promised} of {voters}"
                        );
                        return Err(Violation::new(PROPERTY, Some(node), detail));
                    }
                    record.checked = true;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Invariant<PaxosNode> for PhaseOrder {
    fn name(&self) -> &'static str {
        PROPERTY
    }

    fn after_step(&mut self, step: &StepView<'_, PaxosNode>) -> Result<(), Violation> {
        self.check(step.node, step.core.config().voters.len(), step.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_paxos::multi::Value;

    fn b(round: u64, node: u64) -> Ballot {
        Ballot::new(round, NodeId(node))
    }

    fn promise(ballot: Ballot) -> PaxosOutput {
        let mut out = PaxosOutput::new();
        let promise = Message::Promise {
            ballot,
            first_slot: 1,
            from_slot: 1,
            accepted: Vec::new(),
            more: false,
        };
        out.send(ballot.node, promise);
        out
    }

    fn accept(ballot: Ballot) -> PaxosOutput {
        let mut out = PaxosOutput::new();
        let msg = Message::Accept {
            ballot,
            first_slot: 1,
            values: vec![Value::Noop],
            chosen_slot: 0,
            read_round: 0,
        };
        out.send(NodeId(2), msg);
        out
    }

    #[test]
    fn accepts_after_a_majority_of_promises_pass() {
        let mut c = PhaseOrder::new();
        c.check(NodeId(2), 5, &promise(b(1, 1))).unwrap();
        c.check(NodeId(3), 5, &promise(b(1, 1))).unwrap();
        c.check(NodeId(1), 5, &accept(b(1, 1))).unwrap();
        c.check(NodeId(1), 5, &accept(b(1, 1))).unwrap();
        // Another node relaying nothing in its own ballot is not checked.
        c.check(NodeId(4), 5, &accept(b(1, 1))).unwrap();
    }

    #[test]
    fn accepts_without_a_phase_1_majority_fire() {
        let mut c = PhaseOrder::new();
        c.check(NodeId(2), 5, &promise(b(1, 1))).unwrap();
        c.check(NodeId(2), 5, &promise(b(2, 1))).unwrap();
        c.check(NodeId(3), 5, &promise(b(2, 3))).unwrap();
        let v = c.check(NodeId(1), 5, &accept(b(2, 1))).unwrap_err();
        assert_eq!(v.property, PROPERTY);
        assert!(v.detail.contains("only 2 of 5"), "{v}");
    }
}
