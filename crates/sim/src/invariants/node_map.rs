//! Per-node checker state in a small vector.
//!
//! Clusters have a handful of nodes, so a linear scan over `(NodeId, T)`
//! pairs is faster than hashing on the hot path (every simulated event).

use synod_core::NodeId;

/// A map from node to `T`, for the few nodes of one cluster.
#[derive(Debug)]
pub(crate) struct NodeMap<T> {
    slots: Vec<(NodeId, T)>,
}

impl<T> Default for NodeMap<T> {
    fn default() -> Self {
        NodeMap { slots: Vec::new() }
    }
}

impl<T: Default> NodeMap<T> {
    /// The state of `node`, created with `T::default()` on first use.
    pub(crate) fn entry(&mut self, node: NodeId) -> &mut T {
        let position = match self.slots.iter().position(|(id, _)| *id == node) {
            Some(position) => position,
            None => {
                self.slots.push((node, T::default()));
                self.slots.len() - 1
            }
        };
        &mut self.slots[position].1
    }
}

impl<T> NodeMap<T> {
    /// The state of `node`, if it has any.
    pub(crate) fn get(&self, node: NodeId) -> Option<&T> {
        self.slots.iter().find(|(id, _)| *id == node).map(|(_, state)| state)
    }

    /// Forgets `node`'s state (its volatile state died with it).
    pub(crate) fn remove(&mut self, node: NodeId) -> Option<T> {
        let position = self.slots.iter().position(|(id, _)| *id == node)?;
        Some(self.slots.swap_remove(position).1)
    }

    /// Every node's state, in no particular order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|(_, state)| state)
    }

    /// Replaces `node`'s state.
    pub(crate) fn insert(&mut self, node: NodeId, state: T) {
        match self.slots.iter_mut().find(|(id, _)| *id == node) {
            Some(slot) => slot.1 = state,
            None => self.slots.push((node, state)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_per_node_and_removable() {
        let mut map: NodeMap<u64> = NodeMap::default();
        *map.entry(NodeId(1)) += 5;
        *map.entry(NodeId(2)) += 7;
        *map.entry(NodeId(1)) += 1;
        assert_eq!(map.get(NodeId(1)), Some(&6));
        assert_eq!(map.remove(NodeId(1)), Some(6));
        assert_eq!(map.get(NodeId(1)), None);
        map.insert(NodeId(2), 9);
        assert_eq!(map.get(NodeId(2)), Some(&9));
    }
}
