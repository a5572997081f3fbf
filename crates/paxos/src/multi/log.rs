//! The slot log: what this acceptor accepted, slot by slot, with holes,
//! after the compacted prefix.
//!
//! Slots up to `purged_slot` are gone: they are chosen and inside a durable
//! snapshot (see [`node`](crate::multi::node), "Snapshots"). The log holds
//! the slots after it; `last_slot` is never below `purged_slot`.

use crate::multi::message::SlotEntry;

/// Slots after `purged_slot`; `entries[i]` is slot `purged_slot + i + 1`.
#[derive(Clone, Debug, Default)]
pub struct SlotLog {
    purged_slot: u64,
    entries: Vec<Option<SlotEntry>>,
}

impl SlotLog {
    /// A log holding `entries` after `purged_slot` (`entries[i]` is slot
    /// `purged_slot + i + 1`).
    pub fn from_parts(purged_slot: u64, entries: Vec<Option<SlotEntry>>) -> SlotLog {
        SlotLog { purged_slot, entries }
    }

    /// Every slot up to this one is compacted away (0: none).
    pub fn purged_slot(&self) -> u64 {
        self.purged_slot
    }

    /// The highest slot holding something, or the purged slot when none
    /// after it does.
    pub fn last_slot(&self) -> u64 {
        self.purged_slot + self.entries.len() as u64
    }

    /// Slots held after the purged prefix (holes included): what the log
    /// costs in memory.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no slot after the purged prefix is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry at `slot` (`None` for holes and purged slots).
    pub fn get(&self, slot: u64) -> Option<&SlotEntry> {
        let i = slot.checked_sub(self.purged_slot + 1)?;
        self.entries.get(usize::try_from(i).ok()?)?.as_ref()
    }

    /// Stores `entry` at `slot` (after the purged prefix), growing the log
    /// with holes.
    pub fn set(&mut self, slot: u64, entry: SlotEntry) {
        assert!(slot > self.purged_slot, "slot {slot} is purged (up to {})", self.purged_slot);
        let i = (slot - self.purged_slot - 1) as usize;
        if self.entries.len() <= i {
            self.entries.resize(i + 1, None);
        }
        self.entries[i] = Some(entry);
    }

    /// Forgets every slot up to `upto` (inside a durable snapshot now). A
    /// `upto` beyond the last slot empties the log, which then continues
    /// after `upto`.
    pub fn purge(&mut self, upto: u64) {
        if upto <= self.purged_slot {
            return;
        }
        let drop = ((upto - self.purged_slot) as usize).min(self.entries.len());
        self.entries.drain(..drop);
        self.purged_slot = upto;
    }

    /// Every entry at `first_slot` or later, as `(slot, entry)`.
    pub fn entries_from(&self, first_slot: u64) -> Vec<(u64, SlotEntry)> {
        self.entries_bounded(first_slot, usize::MAX, usize::MAX).0
    }

    /// At most `max` entries at `first_slot` or later, in slot order, and
    /// whether more entries follow the last one returned.
    pub fn entries_bounded(
        &self,
        first_slot: u64,
        max: usize,
        max_bytes: usize,
    ) -> (Vec<(u64, SlotEntry)>, bool) {
        let start = first_slot.max(self.purged_slot + 1) - self.purged_slot - 1;
        let mut out = Vec::new();
        let mut held = self
            .entries
            .iter()
            .enumerate()
            .skip(usize::try_from(start).unwrap_or(usize::MAX))
            .filter_map(|(i, e)| e.as_ref().map(|e| (self.purged_slot + i as u64 + 1, e)));
        let mut bytes = 0usize;
        for (slot, entry) in held.by_ref() {
            bytes = bytes.saturating_add(entry.value.size_bytes());
            if out.len() == max || (bytes > max_bytes && !out.is_empty()) {
                return (out, true);
            }
            out.push((slot, entry.clone()));
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ballot::Ballot;
    use crate::multi::message::Value;

    fn e() -> SlotEntry {
        SlotEntry { ballot: Ballot::ZERO, value: Value::Noop }
    }

    #[test]
    fn holes_are_absent_and_entries_from_skips_them() {
        let mut log = SlotLog::default();
        log.set(2, e());
        log.set(4, e());
        assert_eq!(log.last_slot(), 4);
        assert!(log.get(1).is_none() && log.get(0).is_none() && log.get(5).is_none());
        assert_eq!(log.entries_from(3).iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![4]);
        assert_eq!(log.entries_from(0).len(), 2);
    }

    #[test]
    fn purging_keeps_the_tail_and_slot_numbers() {
        let mut log = SlotLog::default();
        for slot in 1..=6 {
            log.set(slot, e());
        }
        log.purge(4);
        assert_eq!((log.purged_slot(), log.last_slot(), log.len()), (4, 6, 2));
        assert!(log.get(4).is_none() && log.get(5).is_some());
        assert_eq!(log.entries_from(1).iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![5, 6]);
        log.purge(3);
        assert_eq!(log.purged_slot(), 4, "purging never goes back");
        log.purge(10);
        assert_eq!((log.purged_slot(), log.last_slot(), log.len()), (10, 10, 0));
        log.set(12, e());
        assert_eq!(log.last_slot(), 12);
    }

    #[test]
    #[should_panic(expected = "is purged")]
    fn a_purged_slot_cannot_be_set() {
        let mut log = SlotLog::default();
        log.purge(3);
        log.set(3, e());
    }

    #[test]
    fn entries_bounded_says_whether_more_follow() {
        let mut log = SlotLog::default();
        for slot in [2, 3, 5, 9] {
            log.set(slot, e());
        }
        let slots = |v: Vec<(u64, SlotEntry)>| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        let (first, more) = log.entries_bounded(1, 2, usize::MAX);
        assert_eq!((slots(first), more), (vec![2, 3], true));
        let (rest, more) = log.entries_bounded(4, 2, usize::MAX);
        assert_eq!((slots(rest), more), (vec![5, 9], false));
        let (none, more) = log.entries_bounded(10, 2, usize::MAX);
        assert!(none.is_empty() && !more);
    }
}
