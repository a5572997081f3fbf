//! The slot log: what this acceptor accepted, slot by slot, with holes.

use crate::multi::message::SlotEntry;

/// Slots from 1; `entries[i]` is slot `i + 1`.
#[derive(Clone, Debug, Default)]
pub struct SlotLog {
    entries: Vec<Option<SlotEntry>>,
}

impl SlotLog {
    /// A log holding `entries` (`entries[i]` is slot `i + 1`).
    pub fn from_entries(entries: Vec<Option<SlotEntry>>) -> SlotLog {
        SlotLog { entries }
    }

    /// The highest slot holding something (0 when empty).
    pub fn last_slot(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The entry at `slot`.
    pub fn get(&self, slot: u64) -> Option<&SlotEntry> {
        let i = usize::try_from(slot).ok()?.checked_sub(1)?;
        self.entries.get(i)?.as_ref()
    }

    /// Stores `entry` at `slot` (from 1), growing the log with holes.
    pub fn set(&mut self, slot: u64, entry: SlotEntry) {
        assert!(slot >= 1, "slots start at 1");
        let i = slot as usize - 1;
        if self.entries.len() <= i {
            self.entries.resize(i + 1, None);
        }
        self.entries[i] = Some(entry);
    }

    /// Every entry at `first_slot` or later, as `(slot, entry)`.
    pub fn entries_from(&self, first_slot: u64) -> Vec<(u64, SlotEntry)> {
        let start = first_slot.max(1) as usize - 1;
        self.entries
            .iter()
            .enumerate()
            .skip(start)
            .filter_map(|(i, e)| e.as_ref().map(|e| (i as u64 + 1, e.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ballot::Ballot;
    use crate::multi::message::Value;

    #[test]
    fn holes_are_absent_and_entries_from_skips_them() {
        let mut log = SlotLog::default();
        let e = SlotEntry { ballot: Ballot::ZERO, value: Value::Noop };
        log.set(2, e.clone());
        log.set(4, e.clone());
        assert_eq!(log.last_slot(), 4);
        assert!(log.get(1).is_none() && log.get(0).is_none() && log.get(5).is_none());
        assert_eq!(log.entries_from(3).iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![4]);
        assert_eq!(log.entries_from(0).len(), 2);
    }
}
