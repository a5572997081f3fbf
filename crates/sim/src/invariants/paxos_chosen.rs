//! Paxos's safety at each slot ("Paxos Made Simple" §2.2): at most one value
//! is chosen per slot (P2), and a chosen value never changes — every value
//! accepted at that slot in the ballot it was chosen in or any higher ballot
//! is the chosen value (P2b), across crashes and leader changes.
//!
//! The checker watches *durable* acceptances: each synced
//! `Write::Accept` (and each torn write kept by a crash) is one acceptor
//! accepting a value in a ballot. A value is chosen at a slot once a
//! majority of acceptors durably accepted it in one ballot. Per slot it
//! keeps the chosen `(ballot, digest)` and a tally per ballot; commands are
//! remembered as 8-byte digests.

use super::digest::command_digest;
use crate::invariant::{Invariant, StepView, Violation};
use synod_core::{NodeId, quorum};
use synod_paxos::multi::{Value, Write};
use synod_paxos::{Ballot, PaxosNode};

/// The name of "at most one value chosen per slot" in violations.
pub const ONE_VALUE_PROPERTY: &str = "paxos: one value chosen per slot";
/// The name of "chosen values never change" in violations.
pub const STABLE_PROPERTY: &str = "paxos: chosen values never change";

/// Most slots tracked (a bound on the record; beyond it slots are ignored).
const MAX_SLOTS: u64 = 1 << 22;

/// A value's fingerprint: the digests of its commands folded in order.
pub(crate) fn value_digest(value: &Value) -> u64 {
    match value {
        Value::Noop => command_digest(None),
        Value::Batch(commands) => commands.iter().fold(0x9E37_79B9_7F4A_7C15, |h: u64, c| {
            (h.rotate_left(5) ^ command_digest(Some(c))).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
        }),
    }
}

#[derive(Clone, Debug, Default)]
struct SlotRecord {
    /// The lowest ballot the slot's value was chosen in, and the value.
    chosen: Option<(Ballot, u64)>,
    /// Per ballot: the value accepted and a bitmask of acceptors.
    tallies: Vec<(Ballot, u64, u64)>,
}

/// Checks one value chosen per slot, and that it never changes.
#[derive(Debug, Default)]
pub struct ChosenValues {
    voters: usize,
    slots: Vec<SlotRecord>,
}

impl ChosenValues {
    /// A checker that has seen nothing accepted.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cluster has `voters` acceptors.
    pub fn set_voters(&mut self, voters: usize) {
        self.voters = voters;
    }

    /// `node` durably accepted the value with fingerprint `digest` at `slot`
    /// in `ballot`.
    pub fn accepted(
        &mut self,
        node: NodeId,
        slot: u64,
        ballot: Ballot,
        digest: u64,
    ) -> Result<(), Violation> {
        if slot == 0 || slot > MAX_SLOTS || node.0 == 0 || node.0 > 64 || self.voters == 0 {
            return Ok(());
        }
        let i = slot as usize - 1;
        if self.slots.len() <= i {
            self.slots.resize(i + 1, SlotRecord::default());
        }
        let record = &mut self.slots[i];
        if let Some((chosen_ballot, chosen)) = record.chosen
            && ballot >= chosen_ballot
            && digest != chosen
        {
            let detail = format!(
                "slot {slot} was chosen in {chosen_ballot}, but {node} accepted another value in {ballot}"
            );
            return Err(Violation::new(STABLE_PROPERTY, Some(node), detail));
        }
        let bit = 1u64 << (node.0 - 1);
        let tally = match record.tallies.iter().position(|(b, _, _)| *b == ballot) {
            Some(t) => t,
            None => {
                record.tallies.push((ballot, digest, 0));
                record.tallies.len() - 1
            }
        };
        let (_, tally_digest, mask) = &mut record.tallies[tally];
        if *tally_digest != digest {
            let detail = format!("two values accepted at slot {slot} in {ballot}");
            return Err(Violation::new(ONE_VALUE_PROPERTY, Some(node), detail));
        }
        *mask |= bit;
        if !quorum::is_majority(mask.count_ones() as usize, self.voters) {
            return Ok(());
        }
        match record.chosen {
            Some((chosen_ballot, chosen)) if chosen != digest => {
                let detail = format!(
                    "slot {slot}: one value was chosen in {chosen_ballot} and another in {ballot}"
                );
                Err(Violation::new(ONE_VALUE_PROPERTY, Some(node), detail))
            }
            Some((chosen_ballot, _)) if chosen_ballot <= ballot => Ok(()),
            _ => {
                record.chosen = Some((ballot, digest));
                Ok(())
            }
        }
    }

    /// `writes` of `node` became durable.
    pub fn synced(&mut self, node: NodeId, writes: &[Write]) -> Result<(), Violation> {
        for write in writes {
            if let Write::Accept { ballot, first_slot, values } = write {
                for (i, value) in values.iter().enumerate() {
                    self.accepted(node, first_slot + i as u64, *ballot, value_digest(value))?;
                }
            }
        }
        Ok(())
    }
}

impl Invariant<PaxosNode> for ChosenValues {
    fn name(&self) -> &'static str {
        ONE_VALUE_PROPERTY
    }

    fn after_step(&mut self, step: &StepView<'_, PaxosNode>) -> Result<(), Violation> {
        if self.voters == 0 {
            self.voters = step.core.config().voters.len();
        }
        Ok(())
    }

    fn on_synced(&mut self, node: NodeId, writes: &[Write]) -> Result<(), Violation> {
        self.synced(node, writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use synod_core::{ClientId, Command};

    fn b(round: u64, node: u64) -> Ballot {
        Ballot::new(round, NodeId(node))
    }

    fn value(op: &'static str) -> Value {
        Value::Batch(Arc::from(vec![Command::new(ClientId(1), 1, op)]))
    }

    fn accept(ballot: Ballot, slot: u64, v: Value) -> Write {
        Write::Accept { ballot, first_slot: slot, values: vec![v] }
    }

    fn checker() -> ChosenValues {
        let mut c = ChosenValues::new();
        c.set_voters(3);
        c
    }

    #[test]
    fn a_value_re_accepted_in_higher_ballots_passes() {
        let mut c = checker();
        c.synced(NodeId(1), &[accept(b(1, 1), 1, value("x"))]).unwrap();
        c.synced(NodeId(2), &[accept(b(1, 1), 1, value("x"))]).unwrap();
        // A later leader re-proposes the chosen value; a stale lower ballot
        // may still carry something else.
        c.synced(NodeId(3), &[accept(b(0, 3), 1, value("y"))]).unwrap();
        c.synced(NodeId(3), &[accept(b(2, 3), 1, value("x"))]).unwrap();
        c.synced(NodeId(1), &[accept(b(2, 3), 1, value("x"))]).unwrap();
        c.synced(NodeId(1), &[accept(b(1, 1), 2, Value::Noop)]).unwrap();
    }

    #[test]
    fn a_chosen_value_replaced_in_a_higher_ballot_fires() {
        // The ignore-promised-values bug: a new leader re-proposes slot 1
        // with a no-op although "x" was chosen there.
        let mut c = checker();
        c.synced(NodeId(1), &[accept(b(1, 1), 1, value("x"))]).unwrap();
        c.synced(NodeId(2), &[accept(b(1, 1), 1, value("x"))]).unwrap();
        let v = c.synced(NodeId(3), &[accept(b(2, 3), 1, Value::Noop)]).unwrap_err();
        assert_eq!(v.property, STABLE_PROPERTY);
        assert!(v.detail.contains("slot 1 was chosen in b1.1"), "{v}");
    }

    #[test]
    fn two_values_chosen_at_one_slot_fire() {
        let mut c = checker();
        // A lower ballot's value reaches a majority after a higher one's did
        // (only possible when acceptors break their promises).
        c.synced(NodeId(1), &[accept(b(2, 1), 1, value("x"))]).unwrap();
        c.synced(NodeId(2), &[accept(b(2, 1), 1, value("x"))]).unwrap();
        c.synced(NodeId(2), &[accept(b(1, 2), 1, value("y"))]).unwrap();
        let v = c.synced(NodeId(3), &[accept(b(1, 2), 1, value("y"))]).unwrap_err();
        assert_eq!(v.property, ONE_VALUE_PROPERTY);
        assert!(v.detail.contains("another in b1.2"), "{v}");
    }

    #[test]
    fn two_values_in_one_ballot_fire() {
        let mut c = checker();
        c.synced(NodeId(1), &[accept(b(1, 1), 4, value("x"))]).unwrap();
        let v = c.synced(NodeId(2), &[accept(b(1, 1), 4, value("y"))]).unwrap_err();
        assert_eq!(v.property, ONE_VALUE_PROPERTY);
    }
}
