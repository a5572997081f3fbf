//! Facts that become true only once a node's writes are durable.
//!
//! The persistence contract lets a driver sync a node's writes after the
//! step that produced them, and a crash loses whatever was not yet synced.
//! So a term a node moved to, or a vote it granted, binds it across a crash
//! only once every write it emitted up to that step is synced. A
//! [`SyncQueue`] counts each node's emitted and synced writes and releases
//! held facts when the synced count catches up.
//!
//! Assumes the simulator reports a node's synced writes in the order the core
//! emitted them (as `Invariant::on_synced` promises) and never reports writes
//! of an incarnation after it crashed.

use super::node_map::NodeMap;
use std::collections::VecDeque;
use synod_core::NodeId;

/// Held facts of one node in its current incarnation.
#[derive(Debug)]
struct Pending<T> {
    /// Writes emitted by this incarnation.
    emitted_writes: u64,
    /// Writes of this incarnation reported synced.
    synced_writes: u64,
    /// Facts, each with the emitted-write count that must be synced first.
    held: VecDeque<(u64, T)>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending { emitted_writes: 0, synced_writes: 0, held: VecDeque::new() }
    }
}

/// Per-node facts waiting for their writes to become durable.
#[derive(Debug)]
pub(crate) struct SyncQueue<T> {
    nodes: NodeMap<Pending<T>>,
}

impl<T> Default for SyncQueue<T> {
    fn default() -> Self {
        SyncQueue { nodes: NodeMap::default() }
    }
}

impl<T> SyncQueue<T> {
    /// `node` emitted `writes` more writes (call before [`hold`](Self::hold)
    /// for facts of the same step).
    pub(crate) fn emitted(&mut self, node: NodeId, writes: usize) {
        if writes > 0 {
            self.nodes.entry(node).emitted_writes += writes as u64;
        }
    }

    /// Holds `fact` until every write `node` emitted so far is synced.
    pub(crate) fn hold(&mut self, node: NodeId, fact: T) {
        let pending = self.nodes.entry(node);
        pending.held.push_back((pending.emitted_writes, fact));
    }

    /// `writes` more writes of `node` are synced.
    pub(crate) fn synced(&mut self, node: NodeId, writes: usize) {
        let pending = self.nodes.entry(node);
        pending.synced_writes = (pending.synced_writes + writes as u64).min(pending.emitted_writes);
    }

    /// Hands every fact of `node` that is now durable to `release`, in order.
    pub(crate) fn release(&mut self, node: NodeId, mut release: impl FnMut(T)) {
        let pending = self.nodes.entry(node);
        while pending.held.front().is_some_and(|(needed, _)| *needed <= pending.synced_writes) {
            if let Some((_, fact)) = pending.held.pop_front() {
                release(fact);
            }
        }
    }

    /// `node` crashed: unsynced writes are lost, and with them held facts.
    pub(crate) fn crash(&mut self, node: NodeId) {
        self.nodes.remove(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(queue: &mut SyncQueue<u64>, node: NodeId) -> Vec<u64> {
        let mut facts = Vec::new();
        queue.release(node, |fact| facts.push(fact));
        facts
    }

    #[test]
    fn facts_wait_for_every_earlier_write() {
        let n = NodeId(1);
        let mut queue = SyncQueue::default();
        queue.emitted(n, 2);
        queue.hold(n, 10);
        queue.emitted(n, 1);
        queue.hold(n, 11);
        queue.synced(n, 1);
        assert_eq!(released(&mut queue, n), Vec::<u64>::new());
        queue.synced(n, 1);
        assert_eq!(released(&mut queue, n), vec![10]);
        queue.synced(n, 1);
        assert_eq!(released(&mut queue, n), vec![11]);
    }

    #[test]
    fn a_fact_with_nothing_pending_is_durable_at_once() {
        let n = NodeId(1);
        let mut queue = SyncQueue::default();
        queue.hold(n, 7);
        assert_eq!(released(&mut queue, n), vec![7]);
    }

    #[test]
    fn a_crash_drops_unsynced_facts() {
        let n = NodeId(1);
        let mut queue = SyncQueue::default();
        queue.emitted(n, 1);
        queue.hold(n, 10);
        queue.crash(n);
        queue.synced(n, 1);
        assert_eq!(released(&mut queue, n), Vec::<u64>::new());
    }
}
