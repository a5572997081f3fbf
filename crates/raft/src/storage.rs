//! What Raft makes durable, and what it recovers from.
//!
//! Raft persists its hard state (current term and vote) and its log
//! (Figure 2, "Persistent state on all servers"). Every change reaches the
//! driver as a [`Write`]; applying the synced writes in order to a
//! [`Durable`] gives exactly what a restarted node recovers from.

use crate::entry::Entry;
use synod_core::NodeId;

/// One durable write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// The current term and the vote cast in it.
    HardState {
        /// Current term.
        term: u64,
        /// The candidate voted for in `term`, if any.
        voted_for: Option<NodeId>,
    },
    /// Store `entries` (consecutive, non-empty) starting at `entries[0].index`,
    /// first deleting every stored entry at or after that index.
    Append {
        /// The entries.
        entries: Vec<Entry>,
    },
}

/// Everything a Raft node recovers from after a crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// Current term.
    pub term: u64,
    /// Vote cast in `term`.
    pub voted_for: Option<NodeId>,
    /// The log, `log[i]` holding index `i + 1`.
    pub log: Vec<Entry>,
}

impl Durable {
    /// Applies one synced write.
    ///
    /// # Panics
    /// If an append would leave a gap in the log (an invariant of the core's
    /// writes, never of outside input).
    pub fn apply(&mut self, write: &Write) {
        match write {
            Write::HardState { term, voted_for } => {
                self.term = *term;
                self.voted_for = *voted_for;
            }
            Write::Append { entries } => {
                let Some(first) = entries.first() else { return };
                assert!(
                    first.index >= 1 && first.index <= self.log.len() as u64 + 1,
                    "append at {} would leave a gap after {}",
                    first.index,
                    self.log.len()
                );
                self.log.truncate(first.index as usize - 1);
                self.log.extend_from_slice(entries);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Payload;

    fn e(term: u64, index: u64) -> Entry {
        Entry { term, index, payload: Payload::Noop }
    }

    #[test]
    fn append_truncates_the_conflicting_suffix() {
        let mut d = Durable::default();
        d.apply(&Write::Append { entries: vec![e(1, 1), e(1, 2), e(1, 3)] });
        d.apply(&Write::Append { entries: vec![e(2, 2)] });
        assert_eq!(d.log, vec![e(1, 1), e(2, 2)]);
        d.apply(&Write::HardState { term: 2, voted_for: Some(NodeId(3)) });
        assert_eq!((d.term, d.voted_for), (2, Some(NodeId(3))));
    }

    #[test]
    #[should_panic(expected = "gap")]
    fn an_append_past_the_end_is_an_invariant_violation() {
        let mut d = Durable::default();
        d.apply(&Write::Append { entries: vec![e(1, 2)] });
    }
}
