//! What the Raft checkers read of a Raft core.
//!
//! The Raft-specific checkers are written against [`RaftView`] rather than
//! [`RaftNode`] so that their tests can feed hand-made (and deliberately
//! violating) states through a fake.

use synod_core::{NodeId, Role};
use synod_raft::{Entry, RaftNode};

/// A read-only view of a Raft replica's protocol state.
pub trait RaftView {
    /// The current term.
    fn term(&self) -> u64;
    /// The role.
    fn role(&self) -> Role;
    /// The vote cast in the current term.
    fn voted_for(&self) -> Option<NodeId>;
    /// Highest index known committed.
    fn commit_index(&self) -> u64;
    /// Index of the last log entry (0 when empty).
    fn last_index(&self) -> u64;
    /// Term of the entry at `index` (`Some(0)` for index 0, `None` when absent).
    fn term_at(&self, index: u64) -> Option<u64>;
    /// The entry at `index`, if held.
    fn entry(&self, index: u64) -> Option<&Entry>;
    /// The last index purged from the log into a snapshot (0: none).
    fn purged_index(&self) -> u64 {
        0
    }
    /// The index of the latest snapshot (0: none).
    fn snapshot_index(&self) -> u64 {
        0
    }
    /// Highest index applied.
    fn applied_index(&self) -> u64 {
        self.commit_index()
    }
}

impl RaftView for RaftNode {
    fn term(&self) -> u64 {
        RaftNode::term(self)
    }
    fn role(&self) -> Role {
        RaftNode::role(self)
    }
    fn voted_for(&self) -> Option<NodeId> {
        RaftNode::voted_for(self)
    }
    fn commit_index(&self) -> u64 {
        RaftNode::commit_index(self)
    }
    fn last_index(&self) -> u64 {
        RaftNode::last_index(self)
    }
    fn term_at(&self, index: u64) -> Option<u64> {
        RaftNode::term_at(self, index)
    }
    fn entry(&self, index: u64) -> Option<&Entry> {
        RaftNode::entry(self, index)
    }
    fn purged_index(&self) -> u64 {
        RaftNode::purged_index(self)
    }
    fn snapshot_index(&self) -> u64 {
        RaftNode::snapshot_meta(self).index
    }
    fn applied_index(&self) -> u64 {
        RaftNode::applied_index(self)
    }
}
