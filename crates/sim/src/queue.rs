//! The event queue: events ordered by (virtual time, insertion order).
//!
//! Ties in time are broken by a sequence number assigned at insertion, so the
//! order never depends on anything but the run itself. Events live in a slab;
//! the queue orders small fixed-size keys, so it never moves message
//! payloads around.
//!
//! The keys are kept in a radix heap (Ahuja et al., "Faster algorithms for
//! the shortest path problem", 1990): a simulation only schedules events at
//! or after the present, so every key pushed is at least the last key popped,
//! and a key can live in the bucket named by the highest bit in which it
//! differs from that last key. Popping empties the lowest non-empty bucket
//! into lower ones; each key moves down a few times in its life instead of
//! being sifted through a binary heap at every push and pop. The order is
//! exactly the (time, seq) order of a binary heap: a key pushed into the
//! past (nothing does, but the queue does not rely on that) rebuilds the
//! buckets around it.

use synod_core::Time;

/// Bucket 0 holds the key equal to `last`; bucket `1 + b` (b < 64) keys
/// whose time equals `last`'s and whose seq differs first (highest) at bit
/// b; bucket `65 + b` keys whose time differs first at bit b. Every key in
/// a lower bucket is earlier than every key in a higher one.
const BUCKETS: usize = 129;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Key {
    time: u64,
    seq: u64,
    slot: u32,
}

impl Key {
    fn order(&self) -> (u64, u64) {
        (self.time, self.seq)
    }
}

/// The bucket of a key `(time, seq)` relative to the last key popped.
fn bucket_of(last: (u64, u64), time: u64, seq: u64) -> usize {
    if time != last.0 {
        64 + (64 - (time ^ last.0).leading_zeros()) as usize
    } else {
        (64 - (seq ^ last.1).leading_zeros()) as usize
    }
}

/// A deterministic priority queue of events of type `E`.
pub struct EventQueue<E> {
    /// Every key is at least `last` and sits in `bucket_of(last, key)`.
    buckets: Vec<Vec<Key>>,
    /// Bit `b` set when bucket `b` is not empty.
    occupied: u128,
    /// The last key popped (or the earliest key, right after a rebuild).
    last: (u64, u64),
    /// The earliest key waiting, when the queue is not empty.
    earliest: (u64, u64),
    len: usize,
    slab: Vec<Option<E>>,
    free: Vec<u32>,
    next_seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            occupied: 0,
            last: (0, 0),
            earliest: (0, 0),
            len: 0,
            slab: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `event` at `time`, after every event already scheduled at
    /// the same time.
    pub fn push(&mut self, time: Time, event: E) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s as usize] = Some(event);
                s
            }
            None => {
                self.slab.push(Some(event));
                u32::try_from(self.slab.len() - 1).expect("fewer than 2^32 pending events")
            }
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = Key { time: time.0, seq, slot };
        if self.len == 0 || key.order() < self.earliest {
            self.earliest = key.order();
        }
        self.len += 1;
        if key.order() < self.last {
            self.rebuild(key);
        } else {
            self.put(bucket_of(self.last, key.time, key.seq), key);
        }
    }

    /// Removes and returns the earliest event.
    pub fn pop(&mut self) -> Option<(Time, E)> {
        if self.len == 0 {
            return None;
        }
        if self.occupied & 1 == 0 {
            self.redistribute();
        }
        let key = self.buckets[0].pop().expect("the earliest key is in bucket 0");
        debug_assert!(self.buckets[0].is_empty(), "keys are unique");
        debug_assert_eq!(key.order(), self.earliest);
        self.occupied &= !1;
        self.len -= 1;
        if self.occupied != 0 {
            let lowest = &self.buckets[self.occupied.trailing_zeros() as usize];
            self.earliest = lowest.iter().map(Key::order).min().expect("occupied");
        }
        let event = self.slab[key.slot as usize].take().expect("a queued slot holds an event");
        self.free.push(key.slot);
        Some((Time(key.time), event))
    }

    /// The time of the earliest event.
    pub fn peek_time(&self) -> Option<Time> {
        (self.len > 0).then_some(Time(self.earliest.0))
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn put(&mut self, bucket: usize, key: Key) {
        self.buckets[bucket].push(key);
        self.occupied |= 1 << bucket;
    }

    /// Bucket 0 is empty: the earliest key becomes `last`, and the keys of
    /// the lowest non-empty bucket (which holds it) move down, each to a
    /// strictly lower bucket, the earliest to bucket 0.
    fn redistribute(&mut self) {
        let from = self.occupied.trailing_zeros() as usize;
        let mut keys = std::mem::take(&mut self.buckets[from]);
        self.occupied &= !(1 << from);
        self.last = self.earliest;
        for k in keys.drain(..) {
            let b = bucket_of(self.last, k.time, k.seq);
            debug_assert!(b < from);
            self.put(b, k);
        }
        self.buckets[from] = keys; // keeps its capacity
    }

    /// A key earlier than the last one popped: re-buckets every key around
    /// the new earliest one.
    fn rebuild(&mut self, key: Key) {
        let mut all = vec![key];
        for b in self.buckets.iter_mut() {
            all.append(b);
        }
        self.occupied = 0;
        self.last = self.earliest;
        for k in all {
            self.put(bucket_of(self.last, k.time, k.seq), k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SimRng;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    #[test]
    fn earliest_first_and_ties_in_insertion_order() {
        let mut q = EventQueue::new();
        q.push(Time(5), "c");
        q.push(Time(1), "a");
        q.push(Time(5), "d");
        q.push(Time(1), "b");
        assert_eq!(q.peek_time(), Some(Time(1)));
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).map(|(_, e)| e).collect();
        assert_eq!(order, vec!["a", "b", "c", "d"]);
        assert!(q.is_empty());
    }

    #[test]
    fn slots_are_reused() {
        let mut q = EventQueue::new();
        for i in 0..100u64 {
            q.push(Time(i), i);
            assert_eq!(q.pop(), Some((Time(i), i)));
        }
        assert_eq!(q.slab.len(), 1);
    }

    /// Random pushes (mostly at or after the present, some into the past,
    /// many ties) and pops give exactly a binary heap's (time, seq) order.
    #[test]
    fn same_order_as_a_binary_heap_on_time_then_insertion() {
        for seed in 0..20 {
            let mut rng = SimRng::new(seed);
            let mut q = EventQueue::new();
            let mut reference = BinaryHeap::new();
            let mut now = 0u64;
            let mut seq = 0u64;
            for _ in 0..20_000 {
                if rng.below(100) < 55 {
                    let time = match rng.below(20) {
                        0 => now.saturating_sub(rng.below(1_000)), // the past
                        1..=5 => now,                              // a tie
                        6 => now + (1 << 40) + rng.below(1 << 40),
                        _ => now + rng.below(5_000),
                    };
                    q.push(Time(time), seq);
                    reference.push(Reverse((time, seq)));
                    seq += 1;
                } else {
                    let want = reference.pop().map(|Reverse((t, s))| (Time(t), s));
                    assert_eq!(q.pop(), want, "seed {seed}");
                    if let Some((t, _)) = want {
                        now = now.max(t.0);
                    }
                }
                assert_eq!(q.peek_time(), reference.peek().map(|Reverse((t, _))| Time(*t)));
                assert_eq!(q.len(), reference.len());
            }
        }
    }
}
