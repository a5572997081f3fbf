//! What Raft makes durable, and what it recovers from.
//!
//! Raft persists its hard state (current term and vote) and its log
//! (Figure 2, "Persistent state on all servers"), and, once it compacts, the
//! metadata of its latest snapshot (thesis §5.1) with the log tail after the
//! purged prefix. The snapshot's *data* lives in the host's snapshot store
//! (see `synod_core::protocol`'s snapshot contract); a [`Write::Snapshot`] is
//! only emitted once the data it names is durable there. Every change
//! reaches the driver as a [`Write`]; applying the synced writes in order to
//! a [`Durable`] gives exactly what a restarted node recovers from.

use crate::entry::Entry;
use crate::membership::Membership;
use synod_core::NodeId;
use synod_core::protocol::SnapshotMeta;

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
    /// A snapshot (`meta.index`, `meta.epoch` = last included term) is
    /// durable in the host's store and is now the one to recover from. If
    /// the log holds the entry (`meta.index`, `meta.epoch`), entries up to
    /// `purge_index` (≤ `meta.index`) are deleted and the rest kept;
    /// otherwise (an installed snapshot the log disagrees with) every entry
    /// is deleted and the log continues after `meta.index`.
    Snapshot {
        /// The snapshot.
        meta: SnapshotMeta,
        /// The last entry to delete from the log's head.
        purge_index: u64,
        /// The configuration in effect at `meta.index` (configuration
        /// entries in the purged prefix are gone; this one is kept).
        membership: Membership,
    },
}

/// Everything a Raft node recovers from after a crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// Current term.
    pub term: u64,
    /// Vote cast in `term`.
    pub voted_for: Option<NodeId>,
    /// The latest snapshot (index 0: none).
    pub snapshot: SnapshotMeta,
    /// The configuration in effect at `snapshot.index` (`None`: no
    /// snapshot yet, the bootstrap configuration `Config::voters` applies).
    pub snapshot_membership: Option<Membership>,
    /// The last purged index (0: nothing purged).
    pub purged_index: u64,
    /// The term of the entry at `purged_index`.
    pub purged_term: u64,
    /// The log after the purged prefix, `log[i]` holding index
    /// `purged_index + i + 1`.
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
                let last_index = self.last_index();
                assert!(
                    first.index > self.purged_index && first.index <= last_index + 1,
                    "append at {} would leave a gap after {last_index} or rewrite the purged \
                     prefix to {}",
                    first.index,
                    self.purged_index
                );
                self.log.truncate((first.index - self.purged_index) as usize - 1);
                self.log.extend_from_slice(entries);
            }
            Write::Snapshot { meta, purge_index, membership } => {
                assert!(*purge_index <= meta.index, "purge beyond the snapshot");
                self.snapshot = *meta;
                self.snapshot_membership = Some(membership.clone());
                if self.term_at(meta.index) == Some(meta.epoch) {
                    if *purge_index > self.purged_index {
                        let purged_term = self.term_at(*purge_index).expect("held: below index");
                        self.log.drain(..(*purge_index - self.purged_index) as usize);
                        self.purged_index = *purge_index;
                        self.purged_term = purged_term;
                    }
                } else {
                    self.log.clear();
                    self.purged_index = meta.index;
                    self.purged_term = meta.epoch;
                }
            }
        }
    }

    /// Index of the last entry (the purged index when none is held).
    pub fn last_index(&self) -> u64 {
        self.purged_index + self.log.len() as u64
    }

    /// Term of the entry at `index`, if known (the purged one or a held one).
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.purged_index {
            return Some(self.purged_term);
        }
        if index < self.purged_index {
            return None;
        }
        self.log.get((index - self.purged_index) as usize - 1).map(|e| e.term)
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
    fn a_snapshot_purges_a_matching_prefix_or_replaces_a_disagreeing_log() {
        let mut d = Durable::default();
        d.apply(&Write::Append { entries: vec![e(1, 1), e(1, 2), e(2, 3)] });
        let meta = SnapshotMeta { index: 2, epoch: 1, size_bytes: 10 };
        d.apply(&Write::Snapshot { meta, purge_index: 1, membership: Membership::default() });
        assert_eq!((d.purged_index, d.purged_term, d.log.clone()), (1, 1, vec![e(1, 2), e(2, 3)]));
        assert_eq!(d.snapshot, meta);
        d.apply(&Write::Append { entries: vec![e(3, 3)] });
        assert_eq!(d.log, vec![e(1, 2), e(3, 3)]);
        let meta = SnapshotMeta { index: 5, epoch: 4, size_bytes: 10 };
        d.apply(&Write::Snapshot { meta, purge_index: 5, membership: Membership::default() });
        assert_eq!((d.purged_index, d.purged_term, d.last_index()), (5, 4, 5));
        assert!(d.log.is_empty());
        d.apply(&Write::Append { entries: vec![e(4, 6)] });
        assert_eq!(d.term_at(6), Some(4));
    }

    #[test]
    #[should_panic(expected = "gap")]
    fn an_append_past_the_end_is_an_invariant_violation() {
        let mut d = Durable::default();
        d.apply(&Write::Append { entries: vec![e(1, 2)] });
    }
}
