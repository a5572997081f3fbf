//! Monotonic state: a node's epoch (Raft term, Paxos ballot round, PBFT view)
//! never decreases, not even across a crash once it was durable; its commit
//! index and applied index never decrease within an incarnation.
//!
//! The epoch is persistent state (Raft paper Figure 2: `currentTerm` is
//! "latest term server has seen (initialized to 0 on first boot, increases
//! monotonically)"); commit and applied indexes are volatile, so a restart
//! may begin them again from what was recovered. An epoch counts as durable
//! once every write the node emitted up to the step that reached it has been
//! synced (a crash before that loses it legitimately, and no message that
//! depended on it left the node). This assumes a core emits the write that
//! persists a new epoch in the same step that adopts it, as Raft does.
//! Works for any protocol.

use super::node_map::NodeMap;
use super::sync_queue::SyncQueue;
use crate::invariant::{Invariant, StepView, Violation};
use synod_core::{NodeId, Protocol, Status};

/// The property's name in violations.
pub const PROPERTY: &str = "monotonic state";

/// What a live node last reported.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    epoch: u64,
    commit_index: u64,
    applied_index: u64,
}

/// Checks that epochs, commit indexes and applied indexes only grow.
#[derive(Debug, Default)]
pub struct Monotonic {
    /// Per live node, its state after its last step in this incarnation.
    seen: NodeMap<Seen>,
    /// Per node, the highest epoch known durable (survives crashes).
    durable_epoch: NodeMap<u64>,
    /// Epochs reached but not yet durable.
    pending_epochs: SyncQueue<u64>,
}

impl Monotonic {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node` took a step emitting `writes` writes and now reports `status`.
    pub fn check(&mut self, node: NodeId, status: &Status, writes: usize) -> Result<(), Violation> {
        let seen = self.seen.entry(node);
        let decreased = [
            ("epoch", seen.epoch, status.epoch),
            ("commit index", seen.commit_index, status.commit_index),
            ("applied index", seen.applied_index, status.applied_index),
        ]
        .into_iter()
        .find(|(_, before, after)| after < before);
        if let Some((what, before, after)) = decreased {
            let detail = format!("{what} went from {before} down to {after}");
            return Err(Violation::new(PROPERTY, Some(node), detail));
        }
        let new_epoch = status.epoch > seen.epoch;
        *seen = Seen {
            epoch: status.epoch,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
        };
        self.pending_epochs.emitted(node, writes);
        if new_epoch {
            self.pending_epochs.hold(node, status.epoch);
            self.settle(node);
        }
        Ok(())
    }

    /// `writes` more writes of `node` became durable.
    pub fn synced(&mut self, node: NodeId, writes: usize) {
        self.pending_epochs.synced(node, writes);
        self.settle(node);
    }

    /// `node` crashed: volatile indexes and unsynced epochs are gone.
    pub fn crashed(&mut self, node: NodeId) {
        self.seen.remove(node);
        self.pending_epochs.crash(node);
    }

    /// `node` restarted and its rebuilt core reports `status`.
    pub fn restarted(&mut self, node: NodeId, status: &Status) -> Result<(), Violation> {
        self.seen.insert(
            node,
            Seen {
                epoch: status.epoch,
                commit_index: status.commit_index,
                applied_index: status.applied_index,
            },
        );
        let durable_epoch = self.durable_epoch.get(node).copied().unwrap_or(0);
        if status.epoch < durable_epoch {
            let detail = format!(
                "restarted in epoch {}, but epoch {} had been made durable",
                status.epoch, durable_epoch
            );
            return Err(Violation::new(PROPERTY, Some(node), detail));
        }
        Ok(())
    }

    /// Moves `node`'s epochs whose writes are all synced into `durable_epoch`.
    fn settle(&mut self, node: NodeId) {
        let durable_epoch = self.durable_epoch.entry(node);
        self.pending_epochs.release(node, |epoch| *durable_epoch = (*durable_epoch).max(epoch));
    }
}

impl<P: Protocol> Invariant<P> for Monotonic {
    fn name(&self) -> &'static str {
        PROPERTY
    }

    fn after_step(&mut self, step: &StepView<'_, P>) -> Result<(), Violation> {
        self.check(step.node, &step.core.status(), step.output.writes.len())
    }

    fn on_synced(&mut self, node: NodeId, writes: &[P::Write]) -> Result<(), Violation> {
        self.synced(node, writes.len());
        Ok(())
    }

    fn on_crash(&mut self, node: NodeId) {
        self.crashed(node);
    }

    fn on_restart(&mut self, node: NodeId, core: &P) -> Result<(), Violation> {
        self.restarted(node, &core.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::testing::status;

    const N: NodeId = NodeId(1);

    #[test]
    fn growing_state_and_a_restart_at_the_durable_epoch_pass() {
        let mut checker = Monotonic::new();
        checker.check(N, &status(1, 0, 0), 1).unwrap();
        checker.check(N, &status(2, 3, 1), 1).unwrap();
        checker.check(N, &status(2, 3, 3), 0).unwrap();
        checker.synced(N, 2);
        checker.crashed(N);
        // Volatile indexes start again; the epoch is what was durable.
        checker.restarted(N, &status(2, 0, 0)).unwrap();
        checker.check(N, &status(2, 1, 0), 0).unwrap();
    }

    #[test]
    fn an_epoch_lost_before_its_write_synced_may_be_lost() {
        let mut checker = Monotonic::new();
        checker.check(N, &status(4, 0, 0), 1).unwrap();
        checker.synced(N, 1);
        checker.check(N, &status(5, 0, 0), 1).unwrap();
        checker.crashed(N);
        checker.restarted(N, &status(4, 0, 0)).unwrap();
    }

    #[test]
    fn the_term_decreasing_across_a_restart_fires() {
        let mut checker = Monotonic::new();
        checker.check(N, &status(5, 0, 0), 1).unwrap();
        checker.synced(N, 1);
        checker.crashed(N);
        let violation = checker.restarted(N, &status(3, 0, 0)).unwrap_err();
        assert_eq!(violation.property, PROPERTY);
        assert!(violation.detail.contains("epoch 5 had been made durable"), "{violation}");
    }

    #[test]
    fn an_epoch_adopted_without_pending_writes_is_durable_at_once() {
        let mut checker = Monotonic::new();
        checker.check(N, &status(5, 0, 0), 0).unwrap();
        checker.crashed(N);
        assert!(checker.restarted(N, &status(4, 0, 0)).is_err());
    }

    #[test]
    fn the_epoch_decreasing_within_an_incarnation_fires() {
        let mut checker = Monotonic::new();
        checker.check(N, &status(3, 0, 0), 1).unwrap();
        let violation = checker.check(N, &status(2, 0, 0), 0).unwrap_err();
        assert!(violation.detail.contains("epoch went from 3 down to 2"), "{violation}");
    }

    #[test]
    fn the_commit_index_decreasing_fires() {
        let mut checker = Monotonic::new();
        checker.check(N, &status(1, 4, 0), 0).unwrap();
        let violation = checker.check(N, &status(1, 3, 0), 0).unwrap_err();
        assert!(violation.detail.contains("commit index went from 4 down to 3"), "{violation}");
    }

    #[test]
    fn the_applied_index_decreasing_fires() {
        let mut checker = Monotonic::new();
        checker.check(N, &status(1, 4, 4), 0).unwrap();
        assert!(checker.check(N, &status(1, 4, 2), 0).is_err());
    }
}
