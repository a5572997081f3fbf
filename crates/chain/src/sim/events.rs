//! The event loop's queue: events ordered by (virtual time in ms, insertion
//! order), so equal times never depend on anything but the run.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// A deterministic priority queue of events of type `E`.
#[derive(Debug)]
pub struct EventQueue<E> {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, E>,
    next_seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue { heap: BinaryHeap::new(), events: HashMap::new(), next_seq: 0 }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `event` at `time_ms`, after any already scheduled then.
    pub fn push(&mut self, time_ms: u64, event: E) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse((time_ms, seq)));
        self.events.insert(seq, event);
    }

    /// The earliest event.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        let Reverse((t, seq)) = self.heap.pop()?;
        self.events.remove(&seq).map(|e| (t, e))
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_pop_in_insertion_order() {
        let mut q = EventQueue::default();
        q.push(5, 'b');
        q.push(1, 'a');
        q.push(5, 'c');
        let order: Vec<char> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, vec!['a', 'b', 'c']);
    }
}
