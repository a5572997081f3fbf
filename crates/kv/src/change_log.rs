//! [`ChangeLog`]: the `(revision, key)` of every held version, in apply
//! order (the `changes` of [`Mvcc`](crate::mvcc)), kept in chunks of at
//! most [`CHUNK_LEN`] entries, each behind an [`Arc`] and copied on write.
//! Cloning the store (the point-in-time copy a background snapshot is
//! written from) then copies one pointer per chunk instead of bumping a
//! count per change: at 100,000 writes that is 25 pointers, not 100,000
//! key handles. Only the last chunk is ever written to, so a copy alive
//! while the store goes on costs at most one chunk's copy.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;

/// Entries per chunk.
pub(crate) const CHUNK_LEN: usize = 4096;

/// A change: the revision and the key's handle (shared with the key map).
pub(crate) type Change = (i64, Bytes);

/// See the module doc.
#[derive(Clone, Debug, Default)]
pub(crate) struct ChangeLog {
    /// Every chunk but the last is full; none is empty.
    chunks: VecDeque<Arc<Vec<Change>>>,
    len: usize,
}

impl ChangeLog {
    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends a change.
    pub(crate) fn push_back(&mut self, rev: i64, key: Bytes) {
        match self.chunks.back_mut() {
            Some(last) if last.len() < CHUNK_LEN => Arc::make_mut(last).push((rev, key)),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK_LEN);
                chunk.push((rev, key));
                self.chunks.push_back(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    /// The newest change.
    pub(crate) fn back(&self) -> Option<&Change> {
        self.chunks.back().and_then(|c| c.last())
    }

    /// The number of leading entries for which `pred` holds (`pred` must
    /// hold for a prefix and fail for the rest, as for
    /// [`slice::partition_point`]).
    pub(crate) fn partition_point(&self, pred: impl Fn(&Change) -> bool) -> usize {
        let mut skipped = 0;
        for chunk in &self.chunks {
            if chunk.last().is_some_and(&pred) {
                skipped += chunk.len();
            } else {
                return skipped + chunk.partition_point(&pred);
            }
        }
        skipped
    }

    /// The entries from position `from` on, in order.
    pub(crate) fn iter_from(&self, mut from: usize) -> impl Iterator<Item = &Change> {
        let mut first = 0;
        while first < self.chunks.len() && from >= self.chunks[first].len() {
            from -= self.chunks[first].len();
            first += 1;
        }
        self.chunks
            .range(first..)
            .enumerate()
            .flat_map(move |(i, c)| c[if i == 0 { from } else { 0 }..].iter())
    }

    /// Every entry, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Change> {
        self.iter_from(0)
    }

    /// Drops the first `n` entries (at most `len()`).
    pub(crate) fn drain_front(&mut self, mut n: usize) {
        assert!(n <= self.len, "draining {n} of {} changes", self.len);
        self.len -= n;
        while let Some(first) = self.chunks.front_mut() {
            if n >= first.len() {
                n -= first.len();
                self.chunks.pop_front();
            } else {
                if n > 0 {
                    let first = Arc::make_mut(first);
                    first.drain(..n);
                    first.shrink_to_fit();
                }
                break;
            }
        }
        self.chunks.shrink_to_fit();
    }
}

impl PartialEq for ChangeLog {
    /// Equal content, however it is chunked.
    fn eq(&self, other: &ChangeLog) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for ChangeLog {}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> Bytes {
        Bytes::from(format!("k{}", i % 7))
    }

    fn model(from: u64, to: u64) -> Vec<Change> {
        (from..to).map(|i| (i as i64, key(i))).collect()
    }

    #[test]
    fn it_behaves_as_a_deque_across_chunks_and_copies() {
        let total = 2 * CHUNK_LEN as u64 + 100;
        let mut log = ChangeLog::default();
        for i in 0..total {
            log.push_back(i as i64, key(i));
        }
        assert_eq!(log.len(), total as usize);
        assert_eq!(log.iter().cloned().collect::<Vec<_>>(), model(0, total));
        assert_eq!(log.back(), Some(&((total - 1) as i64, key(total - 1))));
        for at in [0, 1, CHUNK_LEN - 1, CHUNK_LEN, CHUNK_LEN + 1, total as usize] {
            assert_eq!(log.partition_point(|(r, _)| (*r as usize) < at), at);
            let tail: Vec<_> = log.iter_from(at).cloned().collect();
            assert_eq!(tail, model(at as u64, total), "from {at}");
        }
        // A copy shares the chunks; writes after it leave it as it was.
        let copy = log.clone();
        log.push_back(total as i64, key(total));
        log.drain_front(CHUNK_LEN + 3);
        assert_eq!(copy.iter().cloned().collect::<Vec<_>>(), model(0, total));
        assert_eq!(log.iter().cloned().collect::<Vec<_>>(), model(CHUNK_LEN as u64 + 3, total + 1));
        assert_eq!(log.partition_point(|(r, _)| *r < total as i64), log.len() - 1);
        // Equality is by content, not chunking.
        let mut rebuilt = ChangeLog::default();
        for (r, k) in log.iter() {
            rebuilt.push_back(*r, k.clone());
        }
        assert_eq!(rebuilt, log);
        assert_ne!(rebuilt, copy);
        log.drain_front(log.len());
        assert_eq!((log.len(), log.back(), log.iter().count()), (0, None, 0));
        assert_eq!(log, ChangeLog::default());
    }
}
