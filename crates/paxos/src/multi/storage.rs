//! What a Multi-Paxos acceptor makes durable, and what it recovers from:
//! the promised ballot, the snapshot it starts from, and, per slot after
//! the compacted prefix, the proposal accepted there.
//!
//! The snapshot's *data* lives in the host's snapshot store (the snapshot
//! contract of `synod_core::protocol`); a [`Write::Snapshot`] is emitted
//! only once the data it names is durable there. Every change reaches the
//! driver as a [`Write`]; applying the synced writes in order to a
//! [`Durable`] gives exactly what a restarted node recovers from.

use crate::ballot::Ballot;
use crate::multi::message::{SlotEntry, Value};
use crate::multi::snapshot::SnapshotPoint;

/// One durable write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// The acceptor promised `ballot` (never lower than before).
    Promise {
        /// The ballot.
        ballot: Ballot,
    },
    /// The acceptor accepted `values` in `ballot` at the consecutive slots
    /// from `first_slot` (non-empty, after the purged prefix), replacing
    /// what it held there.
    Accept {
        /// The ballot.
        ballot: Ballot,
        /// Slot of `values[0]`.
        first_slot: u64,
        /// The values.
        values: Vec<Value>,
    },
    /// The snapshot `point` (taken here or installed from a peer) is
    /// durable in the host's store and is the one to recover from; every
    /// slot up to `purge_slot` (≤ `point.slot`) is deleted from the log.
    Snapshot {
        /// The snapshot.
        point: SnapshotPoint,
        /// The last slot to delete.
        purge_slot: u64,
    },
}

/// Everything a Multi-Paxos node recovers from after a crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// The highest ballot promised.
    pub promised: Ballot,
    /// The latest snapshot (slot 0: none).
    pub snapshot: SnapshotPoint,
    /// Every slot up to this one is purged (0: nothing purged).
    pub purged_slot: u64,
    /// `log[i]` is what was accepted at slot `purged_slot + i + 1`.
    pub log: Vec<Option<SlotEntry>>,
}

impl Durable {
    /// Applies one synced write.
    ///
    /// # Panics
    /// If a write would lower the promise, accept below it, accept into the
    /// purged prefix, move the snapshot back or purge beyond it (invariants
    /// of the core's writes, never of outside input).
    pub fn apply(&mut self, write: &Write) {
        match write {
            Write::Promise { ballot } => {
                assert!(*ballot >= self.promised, "promise {ballot} below {}", self.promised);
                self.promised = *ballot;
            }
            Write::Accept { ballot, first_slot, values } => {
                assert!(*ballot >= self.promised, "accept in {ballot} below {}", self.promised);
                assert!(
                    *first_slot > self.purged_slot,
                    "accept at {first_slot} inside the purged prefix {}",
                    self.purged_slot
                );
                self.promised = *ballot;
                let start = (*first_slot - self.purged_slot - 1) as usize;
                let end = start + values.len();
                if self.log.len() < end {
                    self.log.resize(end, None);
                }
                for (i, value) in values.iter().enumerate() {
                    self.log[start + i] = Some(SlotEntry { ballot: *ballot, value: value.clone() });
                }
            }
            Write::Snapshot { point, purge_slot } => {
                assert!(*purge_slot <= point.slot, "purge beyond the snapshot");
                assert!(
                    point.slot > self.snapshot.slot && point.meta.index > self.snapshot.meta.index,
                    "snapshot {point:?} not after {:?}",
                    self.snapshot
                );
                self.snapshot = *point;
                if *purge_slot > self.purged_slot {
                    let drop = ((*purge_slot - self.purged_slot) as usize).min(self.log.len());
                    self.log.drain(..drop);
                    self.purged_slot = *purge_slot;
                }
            }
        }
    }

    /// The highest slot held (the purged slot when none after it is).
    pub fn last_slot(&self) -> u64 {
        self.purged_slot + self.log.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::NodeId;
    use synod_core::protocol::SnapshotMeta;

    fn point(slot: u64, index: u64) -> SnapshotPoint {
        SnapshotPoint { slot, meta: SnapshotMeta { index, epoch: 1, size_bytes: 300 } }
    }

    #[test]
    fn accepts_fill_slots_and_leave_holes() {
        let b1 = Ballot::new(1, NodeId(1));
        let b2 = Ballot::new(2, NodeId(2));
        let mut d = Durable::default();
        d.apply(&Write::Promise { ballot: b1 });
        d.apply(&Write::Accept { ballot: b1, first_slot: 3, values: vec![Value::Noop] });
        assert_eq!(d.log.len(), 3);
        assert!(d.log[0].is_none() && d.log[1].is_none());
        d.apply(&Write::Accept { ballot: b2, first_slot: 3, values: vec![Value::Noop; 2] });
        assert_eq!(d.promised, b2);
        assert_eq!(d.log[2].as_ref().map(|e| e.ballot), Some(b2));
        assert_eq!(d.log.len(), 4);
    }

    #[test]
    fn a_snapshot_purges_the_head_and_the_tail_keeps_its_slots() {
        let b1 = Ballot::new(1, NodeId(1));
        let mut d = Durable::default();
        d.apply(&Write::Accept { ballot: b1, first_slot: 1, values: vec![Value::Noop; 6] });
        d.apply(&Write::Snapshot { point: point(5, 9), purge_slot: 3 });
        assert_eq!((d.purged_slot, d.log.len(), d.last_slot()), (3, 3, 6));
        d.apply(&Write::Accept { ballot: b1, first_slot: 8, values: vec![Value::Noop] });
        assert_eq!(d.last_slot(), 8);
        assert!(d.log[3].is_none() && d.log[4].is_some());
        // An installed snapshot beyond the log empties it.
        d.apply(&Write::Snapshot { point: point(20, 40), purge_slot: 20 });
        assert_eq!((d.purged_slot, d.log.len(), d.last_slot()), (20, 0, 20));
        assert_eq!(d.snapshot, point(20, 40));
    }

    #[test]
    #[should_panic(expected = "inside the purged prefix")]
    fn an_accept_into_the_purged_prefix_is_a_bug() {
        let mut d = Durable::default();
        d.apply(&Write::Snapshot { point: point(5, 5), purge_slot: 5 });
        d.apply(&Write::Accept { ballot: Ballot::ZERO, first_slot: 5, values: vec![Value::Noop] });
    }

    #[test]
    #[should_panic(expected = "below")]
    fn a_promise_never_goes_back() {
        let mut d = Durable::default();
        d.apply(&Write::Promise { ballot: Ballot::new(2, NodeId(1)) });
        d.apply(&Write::Promise { ballot: Ballot::new(1, NodeId(1)) });
    }
}
