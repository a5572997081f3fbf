//! The in-memory Raft log: entries by index, their terms, and the questions
//! elections and replication ask of them (Raft paper §5.3–§5.4).
//!
//! Owns the copy of the log a core works on; the durable copy is the
//! driver's, kept in step by the [`Write::Append`](crate::Write::Append)s the
//! core emits. Entries are held in a `Vec` so that every lookup by index is
//! O(1); terms never decrease along a log, so the questions about terms
//! ("first index of term T", "last index of term T") are binary searches.
//!
//! Compaction (thesis §5): the prefix up to [`purged_index`](RaftLog::purged_index)
//! is gone (it is inside a durable snapshot); the log remembers only the
//! term of its last purged entry, so that an AppendEntries right after it
//! can still be checked. Index `i` lives at `entries[i - purged_index - 1]`.

use crate::entry::Entry;

/// The entries a node holds, from `purged_index + 1` to
/// [`last_index`](RaftLog::last_index).
#[derive(Clone, Debug, Default)]
pub struct RaftLog {
    purged_index: u64,
    purged_term: u64,
    entries: Vec<Entry>,
}

impl RaftLog {
    /// A log holding `entries`, which must be numbered 1, 2, 3, … with terms
    /// that never decrease (what a core ever writes).
    ///
    /// # Panics
    /// If the entries are not numbered from 1 without gaps, or a term
    /// decreases: the durable log is corrupt and the node must not run.
    pub fn from_entries(entries: Vec<Entry>) -> RaftLog {
        RaftLog::from_parts(0, 0, entries)
    }

    /// A log whose prefix up to (`purged_index`, `purged_term`) was purged,
    /// holding `entries` from `purged_index + 1`.
    ///
    /// # Panics
    /// As [`from_entries`](RaftLog::from_entries), with numbering from
    /// `purged_index + 1` and terms from `purged_term`.
    pub fn from_parts(purged_index: u64, purged_term: u64, entries: Vec<Entry>) -> RaftLog {
        let mut previous_term = purged_term;
        for (position, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                purged_index + position as u64 + 1,
                "durable log entry at position {position} has index {}",
                entry.index
            );
            assert!(
                entry.term >= previous_term && entry.term > 0,
                "durable log term goes from {previous_term} to {} at index {}",
                entry.term,
                entry.index
            );
            previous_term = entry.term;
        }
        RaftLog { purged_index, purged_term, entries }
    }

    /// The last purged index (0 when nothing was purged).
    pub fn purged_index(&self) -> u64 {
        self.purged_index
    }

    /// The term of the entry at [`purged_index`](RaftLog::purged_index).
    pub fn purged_term(&self) -> u64 {
        self.purged_term
    }

    /// Entries held in memory.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Index of the last entry (the purged index when none is held).
    pub fn last_index(&self) -> u64 {
        self.purged_index + self.entries.len() as u64
    }

    /// Term of the last entry (the purged term when none is held).
    pub fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.purged_term, |e| e.term)
    }

    /// Term of the entry at `index`: known for the purged index (`Some(0)`
    /// for index 0) and the held entries, `None` before or past them.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.purged_index {
            return Some(self.purged_term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.purged_index {
            return None;
        }
        self.entries.get((index - self.purged_index) as usize - 1)
    }

    /// Forgets the entries up to `index` (inside a durable snapshot now).
    /// Purging at or below the current purged index does nothing.
    ///
    /// # Panics
    /// If `index` is beyond the last entry.
    pub fn purge(&mut self, index: u64) {
        if index <= self.purged_index {
            return;
        }
        let term = self.term_at(index).unwrap_or_else(|| {
            panic!("purge to {index} beyond the last index {}", self.last_index())
        });
        self.entries.drain(..(index - self.purged_index) as usize);
        self.purged_index = index;
        self.purged_term = term;
    }

    /// Applies a snapshot at (`index`, `term`): when the log holds that
    /// entry, it purges up to `purge_index` (at most `index`) and keeps the
    /// rest; otherwise every entry goes and the log restarts right after the
    /// snapshot (thesis §5.3, "if existing log entry has same index and term
    /// as snapshot's last included entry, retain log entries following it").
    /// The meaning of [`Write::Snapshot`](crate::Write::Snapshot).
    pub fn apply_snapshot(&mut self, index: u64, term: u64, purge_index: u64) {
        assert!(purge_index <= index, "purge {purge_index} beyond the snapshot {index}");
        if self.term_at(index) == Some(term) {
            self.purge(purge_index);
        } else {
            assert!(index > self.purged_index, "a snapshot at {index} below the purged prefix");
            self.entries.clear();
            self.purged_index = index;
            self.purged_term = term;
        }
    }

    /// True when the entry at `index` has `term` (index 0 matches term 0).
    pub fn matches(&self, index: u64, term: u64) -> bool {
        self.term_at(index) == Some(term)
    }

    /// The entries from `from_index` to `to_index`, both inclusive.
    ///
    /// # Panics
    /// If the range is not held.
    pub fn slice(&self, from_index: u64, to_index: u64) -> &[Entry] {
        assert!(
            from_index > self.purged_index
                && from_index <= to_index + 1
                && to_index <= self.last_index(),
            "slice {from_index}..={to_index} outside the log {}..={}",
            self.purged_index + 1,
            self.last_index()
        );
        let base = self.purged_index as usize + 1;
        &self.entries[from_index as usize - base..to_index as usize + 1 - base]
    }

    /// The last index of a batch starting at `from_index` that holds at most
    /// `max_entries` entries and `max_bytes` bytes, but always at least one
    /// entry. Returns `from_index - 1` (an empty batch) when `from_index` is
    /// past the end.
    pub fn batch_end(&self, from_index: u64, max_entries: usize, max_bytes: usize) -> u64 {
        let last = self.last_index();
        if from_index > last {
            return from_index - 1;
        }
        let limit = last.min(from_index.saturating_add(max_entries.max(1) as u64 - 1));
        let mut bytes = 0usize;
        let mut end = from_index - 1;
        for entry in self.slice(from_index, limit) {
            bytes += entry.size_bytes();
            if bytes > max_bytes && end >= from_index {
                break;
            }
            end = entry.index;
        }
        end
    }

    /// Appends one entry at `last_index() + 1`.
    ///
    /// # Panics
    /// If the entry's index or term would break the log's shape.
    pub fn push(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "push would leave a gap");
        assert!(entry.term >= self.last_term(), "push would decrease the term");
        self.entries.push(entry);
    }

    /// Stores `entries` from `entries[0].index`, first deleting every held
    /// entry at or after that index (the meaning of a
    /// [`Write::Append`](crate::Write::Append)). Returns how many held entries
    /// were deleted.
    ///
    /// # Panics
    /// If `entries` is empty, not consecutive, would leave a gap, or would
    /// make a term decrease.
    pub fn truncate_and_append(&mut self, entries: &[Entry]) -> u64 {
        let first = entries.first().expect("an append carries at least one entry");
        assert!(
            first.index > self.purged_index && first.index <= self.last_index() + 1,
            "append at {} would leave a gap after {} or rewrite the purged prefix to {}",
            first.index,
            self.last_index(),
            self.purged_index
        );
        let deleted = self.last_index() + 1 - first.index;
        self.entries.truncate((first.index - self.purged_index) as usize - 1);
        for entry in entries {
            self.push(entry.clone());
        }
        deleted
    }

    /// The position in `entries` of the first one this log does not already
    /// hold (a missing index or a different term), or `None` when every one
    /// of them is already held. `entries` must be consecutive.
    pub fn find_conflict(&self, entries: &[Entry]) -> Option<usize> {
        entries.iter().position(|e| !self.matches(e.index, e.term))
    }

    /// The first index holding `term` at or before `upto_index` (which must
    /// hold `term`). Terms never decrease, so this is a binary search.
    /// Entries purged are not searched: the answer is then at least
    /// `purged_index + 1`.
    pub fn first_index_of_term(&self, term: u64, upto_index: u64) -> u64 {
        let upto = (upto_index.saturating_sub(self.purged_index) as usize).min(self.entries.len());
        self.entries[..upto].partition_point(|e| e.term < term) as u64 + self.purged_index + 1
    }

    /// The last index holding `term`, if any entry has it (the purged index
    /// counts when no held entry has the term).
    pub fn last_index_of_term(&self, term: u64) -> Option<u64> {
        let end = self.entries.partition_point(|e| e.term <= term);
        if end > 0 && self.entries[end - 1].term == term {
            return Some(self.purged_index + end as u64);
        }
        (end == 0 && self.purged_index > 0 && self.purged_term == term).then_some(self.purged_index)
    }

    /// The hint a follower returns when the entry at `prev_log_index` does not
    /// match: `(conflict_term, conflict_index)` — the term it holds there and
    /// the first index of that term, or `(0, last_index + 1)` when its log is
    /// shorter (thesis §5.3's optimization).
    pub fn conflict_hint(&self, prev_log_index: u64) -> (u64, u64) {
        match self.term_at(prev_log_index) {
            None => (0, self.last_index() + 1),
            Some(term) => (term, self.first_index_of_term(term, prev_log_index)),
        }
    }

    /// True when a candidate whose log ends at (`last_log_index`,
    /// `last_log_term`) is at least as up to date as this log (§5.4.1).
    pub fn is_up_to_date(&self, last_log_index: u64, last_log_term: u64) -> bool {
        let my_term = self.last_term();
        last_log_term > my_term || (last_log_term == my_term && last_log_index >= self.last_index())
    }

    /// Every entry held, index `purged_index + 1` first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Payload;
    use synod_core::{ClientId, Command};

    fn log_of_terms(terms: &[u64]) -> RaftLog {
        RaftLog::from_entries(
            terms
                .iter()
                .enumerate()
                .map(|(i, &term)| Entry { term, index: i as u64 + 1, payload: Payload::Noop })
                .collect(),
        )
    }

    fn e(term: u64, index: u64) -> Entry {
        Entry { term, index, payload: Payload::Noop }
    }

    #[test]
    fn term_at_and_entry_cover_zero_and_the_end() {
        let log = log_of_terms(&[1, 1, 2]);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(4), None);
        assert!(log.entry(0).is_none());
        assert_eq!(log.entry(2).map(|e| e.index), Some(2));
        assert_eq!((log.last_index(), log.last_term()), (3, 2));
    }

    #[test]
    fn truncate_and_append_deletes_only_from_the_first_new_index() {
        let mut log = log_of_terms(&[1, 1, 1]);
        assert_eq!(log.truncate_and_append(&[e(2, 2)]), 2);
        assert_eq!(log.entries(), &[e(1, 1), e(2, 2)]);
        assert_eq!(log.truncate_and_append(&[e(2, 3), e(3, 4)]), 0);
        assert_eq!(log.last_index(), 4);
    }

    #[test]
    #[should_panic(expected = "gap")]
    fn an_append_past_the_end_panics() {
        log_of_terms(&[1]).truncate_and_append(&[e(1, 3)]);
    }

    #[test]
    fn find_conflict_skips_what_is_already_held() {
        let log = log_of_terms(&[1, 1, 2, 2]);
        assert_eq!(log.find_conflict(&[e(1, 2), e(2, 3)]), None);
        assert_eq!(log.find_conflict(&[e(2, 3), e(3, 4)]), Some(1));
        assert_eq!(log.find_conflict(&[e(2, 4), e(2, 5)]), Some(1));
    }

    #[test]
    fn term_searches_are_exact() {
        let log = log_of_terms(&[1, 1, 3, 3, 3, 5]);
        assert_eq!(log.first_index_of_term(3, 5), 3);
        assert_eq!(log.first_index_of_term(1, 2), 1);
        assert_eq!(log.last_index_of_term(3), Some(5));
        assert_eq!(log.last_index_of_term(2), None);
        assert_eq!(log.last_index_of_term(5), Some(6));
        assert_eq!(log.last_index_of_term(7), None);
    }

    #[test]
    fn conflict_hint_names_the_conflicting_term_or_the_end() {
        let log = log_of_terms(&[1, 2, 2, 2]);
        assert_eq!(log.conflict_hint(9), (0, 5));
        assert_eq!(log.conflict_hint(4), (2, 2));
        assert_eq!(log.conflict_hint(1), (1, 1));
    }

    #[test]
    fn up_to_date_compares_last_term_then_length() {
        let log = log_of_terms(&[1, 2, 2]);
        assert!(log.is_up_to_date(3, 2));
        assert!(log.is_up_to_date(1, 3));
        assert!(!log.is_up_to_date(2, 2));
        assert!(!log.is_up_to_date(9, 1));
    }

    #[test]
    fn batch_end_respects_count_and_bytes_but_sends_at_least_one() {
        let cmd = |n: usize| Payload::Command(Command::new(ClientId(1), 1, vec![0u8; n]));
        let entries =
            (1..=10).map(|index| Entry { term: 1, index, payload: cmd(60) }).collect::<Vec<_>>();
        let log = RaftLog::from_entries(entries);
        // Each entry is 24 + 16 + 60 = 100 bytes.
        assert_eq!(log.batch_end(1, 4, 1 << 20), 4);
        assert_eq!(log.batch_end(1, 100, 250), 2);
        assert_eq!(log.batch_end(3, 100, 10), 3, "at least one entry");
        assert_eq!(log.batch_end(11, 4, 1000), 10, "empty past the end");
        assert_eq!(log.batch_end(9, 100, 1 << 20), 10);
    }

    #[test]
    fn a_purged_log_answers_from_its_offset() {
        let mut log = log_of_terms(&[1, 1, 2, 2, 3]);
        log.purge(3);
        assert_eq!((log.purged_index(), log.purged_term(), log.len()), (3, 2, 2));
        assert_eq!(log.term_at(3), Some(2), "the purged entry's term is kept");
        assert_eq!(log.term_at(2), None);
        assert!(log.entry(3).is_none());
        assert_eq!(log.entry(4), Some(&e(2, 4)));
        assert_eq!(log.slice(4, 5), &[e(2, 4), e(3, 5)]);
        assert_eq!((log.last_index(), log.last_term()), (5, 3));
        assert_eq!(log.first_index_of_term(2, 5), 4);
        assert_eq!(log.last_index_of_term(2), Some(4));
        assert_eq!(log.batch_end(4, 10, 1 << 20), 5);
        log.purge(2);
        assert_eq!(log.purged_index(), 3, "purging backwards does nothing");
        log.purge(5);
        assert!(log.is_empty());
        assert_eq!((log.last_index(), log.last_term()), (5, 3));
        assert_eq!(log.last_index_of_term(3), Some(5));
        log.push(e(4, 6));
        assert_eq!(log.truncate_and_append(&[e(5, 6)]), 1);
        assert_eq!(log.entries(), &[e(5, 6)]);
    }

    #[test]
    fn a_snapshot_keeps_a_matching_tail_and_drops_a_conflicting_log() {
        let mut log = log_of_terms(&[1, 1, 2, 2]);
        log.apply_snapshot(3, 2, 3);
        assert_eq!((log.purged_index(), log.entries()), (3, &[e(2, 4)][..]));
        let mut log = log_of_terms(&[1, 1, 2, 2]);
        log.apply_snapshot(3, 3, 3);
        assert_eq!((log.purged_index(), log.purged_term(), log.len()), (3, 3, 0));
        let mut log = log_of_terms(&[1, 1]);
        log.apply_snapshot(9, 4, 9);
        assert_eq!((log.last_index(), log.last_term()), (9, 4));
        let mut log = log_of_terms(&[1, 1, 1, 1]);
        log.apply_snapshot(4, 1, 2);
        assert_eq!((log.purged_index(), log.len()), (2, 2), "trailing entries stay");
    }

    #[test]
    #[should_panic(expected = "purged prefix")]
    fn rewriting_the_purged_prefix_panics() {
        let mut log = log_of_terms(&[1, 1, 1]);
        log.purge(2);
        log.truncate_and_append(&[e(1, 2)]);
    }

    #[test]
    #[should_panic(expected = "term goes from")]
    fn a_durable_log_with_decreasing_terms_is_refused() {
        log_of_terms(&[2, 1]);
    }
}
