//! Multi-Paxos's compaction invariant (the Paxos form of Raft thesis §5.1):
//! slots are purged only into a snapshot, a snapshot holds only chosen
//! slots, and the log ends no earlier than the chosen slot —
//! `purged <= snapshot <= chosen <= last` slot after every step — and a
//! snapshot never covers more positions than were applied. The core
//! asserts the same between calls; this checker reports it as a violation
//! (with a replayable seed) instead of a crash, and also catches a snapshot
//! moving backwards within an incarnation.

use super::node_map::NodeMap;
use crate::invariant::{Invariant, StepView, Violation};
use synod_core::{NodeId, Protocol};
use synod_paxos::PaxosNode;

/// The property's name in violations.
pub const PROPERTY: &str = "paxos: compaction invariant";

/// What the checker reads of a node: its slots and positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slots {
    /// Every slot up to it is purged.
    pub purged: u64,
    /// The snapshot's last slot.
    pub snapshot: u64,
    /// Every slot up to it is chosen.
    pub chosen: u64,
    /// The last slot held.
    pub last: u64,
    /// The snapshot's position.
    pub snapshot_index: u64,
    /// The last position applied.
    pub applied_index: u64,
}

impl Slots {
    /// The slots of `core`.
    pub fn of(core: &PaxosNode) -> Slots {
        Slots {
            purged: core.purged_slot(),
            snapshot: core.snapshot_point().slot,
            chosen: core.chosen_slot(),
            last: core.last_slot(),
            snapshot_index: core.snapshot_point().meta.index,
            applied_index: core.status().applied_index,
        }
    }
}

/// Checks `purged <= snapshot <= chosen <= last` and that snapshots only
/// move forward.
#[derive(Debug, Default)]
pub struct PaxosCompaction {
    /// The snapshot slot each live node last reported.
    snapshot_slot: NodeMap<u64>,
}

impl PaxosCompaction {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node` is now in state `slots`.
    pub fn check(&mut self, node: NodeId, slots: Slots) -> Result<(), Violation> {
        let chain = [
            ("purged", slots.purged),
            ("snapshot", slots.snapshot),
            ("chosen", slots.chosen),
            ("last", slots.last),
        ];
        if let Some(pair) = chain.windows(2).find(|w| w[0].1 > w[1].1) {
            let detail = format!(
                "{} slot {} is beyond {} slot {} ({chain:?})",
                pair[0].0, pair[0].1, pair[1].0, pair[1].1
            );
            return Err(Violation::new(PROPERTY, Some(node), detail));
        }
        if slots.snapshot_index > slots.applied_index {
            let detail = format!(
                "snapshot at position {} beyond applied {}",
                slots.snapshot_index, slots.applied_index
            );
            return Err(Violation::new(PROPERTY, Some(node), detail));
        }
        let previous = std::mem::replace(self.snapshot_slot.entry(node), slots.snapshot);
        if slots.snapshot < previous {
            let detail = format!("snapshot went back from slot {previous} to {}", slots.snapshot);
            return Err(Violation::new(PROPERTY, Some(node), detail));
        }
        Ok(())
    }
}

impl Invariant<PaxosNode> for PaxosCompaction {
    fn name(&self) -> &'static str {
        PROPERTY
    }

    fn after_step(&mut self, step: &StepView<'_, PaxosNode>) -> Result<(), Violation> {
        self.check(step.node, Slots::of(step.core))
    }

    fn on_crash(&mut self, node: NodeId) {
        self.snapshot_slot.remove(node);
    }

    fn on_restart(&mut self, node: NodeId, core: &PaxosNode) -> Result<(), Violation> {
        self.check(node, Slots::of(core))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots([purged, snapshot, chosen, last]: [u64; 4]) -> Slots {
        Slots { purged, snapshot, chosen, last, snapshot_index: snapshot, applied_index: chosen }
    }

    #[test]
    fn an_ordered_chain_passes_and_each_inversion_is_named() {
        let mut c = PaxosCompaction::new();
        assert!(c.check(NodeId(1), slots([3, 5, 5, 9])).is_ok());
        let e = c.check(NodeId(2), slots([6, 5, 5, 9])).unwrap_err();
        assert!(e.detail.starts_with("purged slot 6 is beyond snapshot"), "{}", e.detail);
        let e = c.check(NodeId(2), slots([0, 8, 5, 9])).unwrap_err();
        assert!(e.detail.starts_with("snapshot slot 8 is beyond chosen"), "{}", e.detail);
        let e = c.check(NodeId(2), slots([0, 0, 7, 6])).unwrap_err();
        assert!(e.detail.starts_with("chosen slot 7 is beyond last"), "{}", e.detail);
        let mut s = slots([0, 5, 5, 5]);
        s.snapshot_index = 12;
        s.applied_index = 11;
        assert!(c.check(NodeId(3), s).unwrap_err().detail.contains("beyond applied 11"));
    }

    #[test]
    fn a_snapshot_going_back_is_caught_until_a_crash() {
        let mut c = PaxosCompaction::new();
        assert!(c.check(NodeId(1), slots([0, 5, 5, 5])).is_ok());
        assert!(c.check(NodeId(1), slots([0, 4, 5, 5])).is_err());
        c.on_crash(NodeId(1));
        assert!(c.check(NodeId(1), slots([0, 2, 2, 2])).is_ok());
    }
}
