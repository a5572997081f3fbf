//! The multi-version key space: every key's history of versions, the
//! revision counter, the change log that watches read, and compaction.
//!
//! This module knows revisions and keys, not requests, leases or errors of
//! the API: the [`store`](crate::store) drives it. Layout, chosen for memory
//! (issue 6: 100,000 keys of 256 bytes in well under 100 MiB):
//!
//! - `keys`: key → its versions, oldest first. A version holds the value as
//!   [`Bytes`] (shared, never copied per revision). A deletion appends a
//!   *tombstone* (version 0). Histories start with capacity 1, so a key
//!   written once costs one version. Each history is behind an [`Arc`],
//!   copied on write ([`Arc::make_mut`]): cloning the store (the
//!   point-in-time copy a background snapshot is written from) copies the
//!   map's nodes and bumps one count per key instead of copying every
//!   history, and only a key written while that copy is alive has its
//!   history copied.
//! - `changes`: `(revision, key)` for every version with revision ≥ the
//!   compaction revision, in apply order (the order of events within a txn).
//!   The key is a clone of the map's key handle (a reference count, not a
//!   copy). It is a [`ChangeLog`]: chunks shared copy-on-write, so the
//!   point-in-time copy copies a pointer per chunk, not a handle per change.
//!
//! Compaction at `C` keeps, per key, every version above `C` and the newest
//! version at or below `C` unless it is a tombstone older than `C`. Keeping a
//! tombstone *at* `C` means a watch from `C` (which etcd allows) still sees
//! that delete, the bug etcd #19179 had.

use crate::api::{Event, EventType, KeyValue};
use crate::change_log::ChangeLog;
use crate::range::KeyRange;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

/// One version of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) mod_revision: i64,
    pub(crate) create_revision: i64,
    /// 0 for a tombstone.
    pub(crate) version: i64,
    pub(crate) lease: i64,
    pub(crate) value: Bytes,
}

impl Version {
    pub(crate) fn is_tombstone(&self) -> bool {
        self.version == 0
    }

    fn to_kv(&self, key: &Bytes) -> KeyValue {
        KeyValue {
            key: key.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
        }
    }
}

/// A batch of historical events (see [`KvStore::events_since`](crate::KvStore::events_since)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventBatch {
    /// Events in revision order (within a revision, in apply order), each
    /// with its `prev_kv` when that version is still held.
    pub events: Vec<Event>,
    /// The revision to ask from next: the current revision + 1 when the batch
    /// reached the present.
    pub next_revision: i64,
}

/// The key space with its history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mvcc {
    pub(crate) keys: BTreeMap<Bytes, Arc<Vec<Version>>>,
    pub(crate) changes: ChangeLog,
    /// The revision of the last write; an empty store is at 1 (etcd).
    pub(crate) current_revision: i64,
    /// The last compaction revision; -1 before any (etcd's `compactMainRev`).
    pub(crate) compact_revision: i64,
}

impl Default for Mvcc {
    fn default() -> Self {
        Mvcc {
            keys: BTreeMap::new(),
            changes: ChangeLog::default(),
            current_revision: 1,
            compact_revision: -1,
        }
    }
}

/// The index of the version visible at `rev`, if any (it may be a tombstone).
fn visible_at(history: &[Version], rev: i64) -> Option<usize> {
    history.partition_point(|v| v.mod_revision <= rev).checked_sub(1)
}

impl Mvcc {
    /// The live version of `key` at `rev`.
    pub(crate) fn get_at(&self, key: &[u8], rev: i64) -> Option<KeyValue> {
        let (k, history) = self.keys.get_key_value(key)?;
        let v = &history[visible_at(history, rev)?];
        (!v.is_tombstone()).then(|| v.to_kv(k))
    }

    /// Calls `f` for each live key in `range` at `rev`, in key order.
    fn for_each_live<'s>(
        &'s self,
        range: KeyRange<'_>,
        rev: i64,
        mut f: impl FnMut(&'s Bytes, &'s Version),
    ) {
        let Some(bounds) = range.bounds() else { return };
        for (k, history) in self.keys.range::<[u8], _>(bounds) {
            if let Some(i) = visible_at(history, rev)
                && !history[i].is_tombstone()
            {
                f(k, &history[i]);
            }
        }
    }

    /// The live kvs in `range` at `rev` (at most `limit`, 0 = all) and the
    /// number of live keys in the range. `rev` must be readable (the caller
    /// checked it against the compaction and current revisions).
    pub(crate) fn range(
        &self,
        range: KeyRange<'_>,
        rev: i64,
        limit: usize,
        count_only: bool,
    ) -> (Vec<KeyValue>, usize) {
        let mut kvs = Vec::new();
        let mut count = 0;
        self.for_each_live(range, rev, |k, v| {
            count += 1;
            if !count_only && (limit == 0 || kvs.len() < limit) {
                kvs.push(v.to_kv(k));
            }
        });
        (kvs, count)
    }

    /// The keys live now in `range`, in key order.
    pub(crate) fn live_keys(&self, range: KeyRange<'_>) -> Vec<Bytes> {
        let mut keys = Vec::new();
        self.for_each_live(range, i64::MAX, |k, _| keys.push(k.clone()));
        keys
    }

    /// Writes `key = value` (with `lease`) at revision `rev`, which must be
    /// the revision being written (current + 1). Returns the event.
    pub(crate) fn put(&mut self, key: &Bytes, value: Bytes, lease: i64, rev: i64) -> Event {
        assert_eq!(rev, self.current_revision + 1, "writes go to the next revision");
        // One lookup: the map's own key handle is kept (and shared by the
        // change log), the new one dropped.
        let (key, history) = match self.keys.entry(key.clone()) {
            Entry::Occupied(e) => (e.key().clone(), e.into_mut()),
            Entry::Vacant(e) => (e.key().clone(), e.insert(Arc::new(Vec::with_capacity(1)))),
        };
        let prev = history.last().filter(|v| !v.is_tombstone());
        assert!(
            history.last().is_none_or(|v| v.mod_revision < rev),
            "a key is written at most once per revision"
        );
        let prev_kv = prev.map(|v| v.to_kv(&key));
        let (create_revision, version) = match prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (rev, 1),
        };
        let new = Version { mod_revision: rev, create_revision, version, lease, value };
        let kv = new.to_kv(&key);
        Arc::make_mut(history).push(new);
        self.changes.push_back(rev, key);
        Event { r#type: EventType::Put, kv, prev_kv }
    }

    /// Deletes `key` at revision `rev` (current + 1) if it is live now.
    pub(crate) fn delete(&mut self, key: &[u8], rev: i64) -> Option<Event> {
        assert_eq!(rev, self.current_revision + 1, "writes go to the next revision");
        let (k, history) = self.keys.get_key_value(key)?;
        let k = k.clone();
        let last = history.last().filter(|v| !v.is_tombstone())?;
        assert!(last.mod_revision < rev, "a key is written at most once per revision");
        let prev_kv = last.to_kv(&k);
        let tombstone = Version {
            mod_revision: rev,
            create_revision: 0,
            version: 0,
            lease: 0,
            value: Bytes::new(),
        };
        Arc::make_mut(self.keys.get_mut(key).expect("looked up above")).push(tombstone);
        self.changes.push_back(rev, k.clone());
        let kv = KeyValue { key: k, mod_revision: rev, ..KeyValue::default() };
        Some(Event { r#type: EventType::Delete, kv, prev_kv: Some(prev_kv) })
    }

    /// Ends a write request: the revision advances iff it changed something.
    pub(crate) fn finish_write(&mut self, changed: bool) {
        if changed {
            self.current_revision += 1;
        }
    }

    /// Discards history at and below `rev` (checked by the caller: above the
    /// last compaction, at most the current revision).
    pub(crate) fn compact(&mut self, rev: i64) {
        assert!(
            rev > self.compact_revision && rev <= self.current_revision,
            "compaction at {rev} outside ({}, {}]",
            self.compact_revision,
            self.current_revision
        );
        self.keys.retain(|_, history| {
            if let Some(i) = visible_at(history, rev) {
                let keep_from = if history[i].is_tombstone() && history[i].mod_revision < rev {
                    i + 1
                } else {
                    i
                };
                if keep_from > 0 || history.capacity() > 2 * history.len() {
                    let history = Arc::make_mut(history);
                    history.drain(..keep_from);
                    if history.capacity() > 2 * history.len() {
                        history.shrink_to_fit();
                    }
                }
            }
            !history.is_empty()
        });
        let keep = self.changes.partition_point(|(r, _)| *r < rev);
        self.changes.drain_front(keep);
        self.compact_revision = rev;
    }

    /// Events for keys in `range` with revision ≥ `start_revision`, at most
    /// about `max_events` (a revision's events are never split, so a batch
    /// may exceed it by one revision's worth). The caller checked that
    /// `start_revision` ≥ the compaction revision.
    pub(crate) fn events_since(
        &self,
        range: KeyRange<'_>,
        start_revision: i64,
        max_events: usize,
    ) -> EventBatch {
        let mut events = Vec::new();
        let from = self.changes.partition_point(|(r, _)| *r < start_revision);
        let mut next_revision = self.current_revision + 1;
        let mut last_rev = None;
        for (rev, key) in self.changes.iter_from(from) {
            if events.len() >= max_events && last_rev != Some(*rev) {
                next_revision = *rev;
                break;
            }
            if !range.contains(key) {
                continue;
            }
            last_rev = Some(*rev);
            events.push(self.event_at(key, *rev));
        }
        EventBatch { events, next_revision: next_revision.max(start_revision) }
    }

    /// The event that wrote `key` at `rev` (which the change log holds).
    fn event_at(&self, key: &Bytes, rev: i64) -> Event {
        let history = self.keys.get(key).expect("the change log only names held keys");
        let i = history
            .binary_search_by_key(&rev, |v| v.mod_revision)
            .expect("the change log only names held versions");
        let prev_kv = i
            .checked_sub(1)
            .map(|p| &history[p])
            .filter(|p| !p.is_tombstone())
            .map(|p| p.to_kv(key));
        if history[i].is_tombstone() {
            let kv = KeyValue { key: key.clone(), mod_revision: rev, ..KeyValue::default() };
            Event { r#type: EventType::Delete, kv, prev_kv }
        } else {
            Event { r#type: EventType::Put, kv: history[i].to_kv(key), prev_kv }
        }
    }

    /// Checks the internal invariants (tests and snapshot restore): histories
    /// non-empty and strictly increasing, revisions within bounds, the change
    /// log ordered and naming held versions, and every held version at or
    /// above the compaction revision in the change log.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.current_revision < 1 || self.compact_revision > self.current_revision {
            return Err(format!(
                "revisions out of order: compact {} current {}",
                self.compact_revision, self.current_revision
            ));
        }
        let mut held = 0usize;
        for (k, history) in &self.keys {
            if k.is_empty() || history.is_empty() {
                return Err("empty key or history".into());
            }
            for pair in history.windows(2) {
                if pair[0].mod_revision >= pair[1].mod_revision {
                    return Err(format!("history of {k:?} not increasing"));
                }
            }
            for v in history.iter() {
                if v.mod_revision > self.current_revision {
                    return Err(format!("version of {k:?} from the future"));
                }
                if v.mod_revision >= self.compact_revision {
                    held += 1;
                }
                if !v.is_tombstone() && (v.create_revision > v.mod_revision || v.version < 1) {
                    return Err(format!("bad version of {k:?}"));
                }
            }
        }
        let mut prev = i64::MIN;
        for (rev, key) in self.changes.iter() {
            if *rev < prev || *rev < self.compact_revision || *rev > self.current_revision {
                return Err("change log out of order".into());
            }
            prev = *rev;
            let ok = self
                .keys
                .get(key)
                .is_some_and(|h| h.binary_search_by_key(rev, |v| v.mod_revision).is_ok());
            if !ok {
                return Err(format!("change log names a missing version of {key:?}"));
            }
        }
        if held != self.changes.len() {
            return Err("change log and histories disagree".into());
        }
        // The newest write is always held (compaction never goes above it
        // and keeps a tombstone at its own revision).
        let newest = self.changes.back().map_or(1, |(rev, _)| *rev);
        if newest != self.current_revision {
            return Err(format!(
                "current revision {} but the newest change is at {newest}",
                self.current_revision
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn put(m: &mut Mvcc, k: &str, v: &str) -> Event {
        let rev = m.current_revision + 1;
        let e = m.put(&b(k), b(v), 0, rev);
        m.finish_write(true);
        e
    }

    fn del(m: &mut Mvcc, k: &str) -> Option<Event> {
        let rev = m.current_revision + 1;
        let e = m.delete(k.as_bytes(), rev);
        m.finish_write(e.is_some());
        e
    }

    #[test]
    fn versions_and_revisions_follow_etcd() {
        let mut m = Mvcc::default();
        assert_eq!(m.current_revision, 1, "an empty store is at revision 1");
        let e = put(&mut m, "a", "1");
        assert_eq!((e.kv.create_revision, e.kv.mod_revision, e.kv.version), (2, 2, 1));
        assert_eq!(e.prev_kv, None);
        let e = put(&mut m, "a", "2");
        assert_eq!((e.kv.create_revision, e.kv.mod_revision, e.kv.version), (2, 3, 2));
        assert_eq!(e.prev_kv.map(|p| p.value), Some(b("1")));
        let e = del(&mut m, "a").expect("live");
        assert_eq!((e.kv.mod_revision, e.kv.version, e.kv.create_revision), (4, 0, 0));
        assert_eq!(del(&mut m, "a"), None, "deleting a missing key writes nothing");
        assert_eq!(m.current_revision, 4);
        let e = put(&mut m, "a", "3");
        assert_eq!((e.kv.create_revision, e.kv.version), (5, 1), "re-creation starts over");
        assert_eq!(m.get_at(b"a", 3).map(|kv| kv.value), Some(b("2")));
        assert_eq!(m.get_at(b"a", 4), None);
        m.check().unwrap();
    }

    #[test]
    fn compaction_keeps_the_newest_version_and_drops_old_tombstones() {
        let mut m = Mvcc::default();
        put(&mut m, "a", "1"); // 2
        put(&mut m, "a", "2"); // 3
        put(&mut m, "b", "1"); // 4
        del(&mut m, "b"); // 5
        put(&mut m, "c", "1"); // 6
        del(&mut m, "c"); // 7
        m.compact(7);
        assert_eq!(m.keys[&b("a")].len(), 1, "a keeps only its newest version");
        assert!(!m.keys.contains_key(b"b".as_slice()), "an older tombstone goes");
        assert_eq!(m.keys[&b("c")].len(), 1, "a tombstone at the compaction revision stays");
        assert_eq!(m.get_at(b"a", 7).map(|kv| kv.value), Some(b("2")));
        let batch = m.events_since(KeyRange::From(b"\0"), 7, 100);
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.events[0].r#type, EventType::Delete);
        assert_eq!(batch.events[0].prev_kv, None, "its previous version is compacted");
        m.check().unwrap();
    }

    #[test]
    fn events_since_never_splits_a_revision() {
        let mut m = Mvcc::default();
        let rev = m.current_revision + 1;
        m.put(&b("x"), b("1"), 0, rev);
        m.put(&b("y"), b("1"), 0, rev);
        m.finish_write(true);
        put(&mut m, "z", "1");
        let batch = m.events_since(KeyRange::From(b"\0"), 0, 1);
        assert_eq!(batch.events.len(), 2, "both events of revision 2");
        assert_eq!(batch.next_revision, 3);
        let rest = m.events_since(KeyRange::From(b"\0"), batch.next_revision, 1);
        assert_eq!(rest.events.len(), 1);
        assert_eq!(rest.next_revision, 4);
    }
}
