//! What a Multi-Paxos acceptor makes durable, and what it recovers from:
//! the promised ballot and, per slot, the proposal accepted there.
//!
//! Every change reaches the driver as a [`Write`]; applying the synced
//! writes in order to a [`Durable`] gives exactly what a restarted node
//! recovers from.

use crate::ballot::Ballot;
use crate::multi::message::{SlotEntry, Value};

/// One durable write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// The acceptor promised `ballot` (never lower than before).
    Promise {
        /// The ballot.
        ballot: Ballot,
    },
    /// The acceptor accepted `values` in `ballot` at the consecutive slots
    /// from `first_slot` (non-empty), replacing what it held there.
    Accept {
        /// The ballot.
        ballot: Ballot,
        /// Slot of `values[0]`.
        first_slot: u64,
        /// The values.
        values: Vec<Value>,
    },
}

/// Everything a Multi-Paxos node recovers from after a crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// The highest ballot promised.
    pub promised: Ballot,
    /// `log[i]` is what was accepted at slot `i + 1`, if anything.
    pub log: Vec<Option<SlotEntry>>,
}

impl Durable {
    /// Applies one synced write.
    ///
    /// # Panics
    /// If a write would lower the promise or accept below it (invariants of
    /// the core's writes, never of outside input).
    pub fn apply(&mut self, write: &Write) {
        match write {
            Write::Promise { ballot } => {
                assert!(*ballot >= self.promised, "promise {ballot} below {}", self.promised);
                self.promised = *ballot;
            }
            Write::Accept { ballot, first_slot, values } => {
                assert!(*ballot >= self.promised, "accept in {ballot} below {}", self.promised);
                assert!(*first_slot >= 1, "slots start at 1");
                self.promised = *ballot;
                let end = (*first_slot as usize - 1) + values.len();
                if self.log.len() < end {
                    self.log.resize(end, None);
                }
                for (i, value) in values.iter().enumerate() {
                    self.log[*first_slot as usize - 1 + i] =
                        Some(SlotEntry { ballot: *ballot, value: value.clone() });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::NodeId;

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
    #[should_panic(expected = "below")]
    fn a_promise_never_goes_back() {
        let mut d = Durable::default();
        d.apply(&Write::Promise { ballot: Ballot::new(2, NodeId(1)) });
        d.apply(&Write::Promise { ballot: Ballot::new(1, NodeId(1)) });
    }
}
