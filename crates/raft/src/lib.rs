//! # synod-raft
//!
//! The Raft consensus core (Ongaro & Ousterhout 2014; Ongaro's thesis 2014)
//! as a sans-IO [`Protocol`](synod_core::Protocol): it owns the protocol's
//! state and decisions, and nothing else — no I/O, no clock, no threads. The
//! simulator, the tests and the real node drive it.
//!
//! What it does: leader election with randomized timeouts, pre-vote and
//! check-quorum; log replication with batching, a bounded pipeline per
//! follower (probe and replicate modes) and fast conflict backtracking; the
//! §5.4.2 commit rule with a no-op at the start of each term; the persistence
//! contract (hard state and entries are written before any message that
//! depends on them); linearizable reads through ReadIndex; leadership
//! transfer with TimeoutNow; snapshots and log compaction (thesis §5) with a
//! policy (every N entries or M bytes), chunked InstallSnapshot with one chunk
//! in flight per follower, resumable from the offset the follower asks for,
//! and restart from snapshot plus log tail, through the host snapshot seam of
//! `synod_core::protocol`.
//!
//! Where things live (one job per module):
//!
//! - [`node`]: [`RaftNode`], the [`Protocol`](synod_core::Protocol)
//!   implementation — role transitions, term rules, and the glue;
//! - [`election`]: randomized election timer, vote tally, (pre-)vote and
//!   lease rules;
//! - [`log`]: the in-memory log and its term queries;
//! - [`replication`]: AppendEntries on both sides and conflict backtracking;
//! - [`progress`]: per-follower Probe/Replicate flow control and in-flight
//!   window;
//! - [`commit`]: the majority-match index and the §5.4.2 commit rule;
//! - [`read_index`]: ReadIndex reads (also for followers' reads);
//! - [`lease`]: the leader lease for lease reads and its clock assumption;
//! - [`transfer`]: leadership transfer;
//! - [`membership`]: configurations, joint quorums, the configurations in
//!   the log;
//! - [`config`], [`entry`], [`message`], [`storage`]: the types.
//!
//! Membership changes by joint consensus ([`membership`], thesis §4.3):
//! [`RaftNode::change_membership`] replaces any voter set with any other in
//! one call (C_old,new, then C_new appended by the leader once the joint
//! configuration commits), with learners that receive the log (by snapshot
//! if needed) and are promoted only once caught up. The configuration in
//! effect is the latest in the log; it travels in snapshot metadata. A node
//! outside the configuration (a spare, a learner, a removed node) is a
//! [`Role::Learner`](synod_core::Role::Learner) that never campaigns.
//!
//! May depend on `synod-core` only.
#![deny(missing_docs)]

pub mod commit;
pub mod config;
pub mod election;
pub mod entry;
pub mod lease;
pub mod log;
pub mod membership;
pub mod message;
pub mod progress;
pub mod read_index;
pub mod replication;
pub mod storage;
pub mod transfer;

#[cfg(test)]
mod testing;

pub use config::{Config, InjectedBug, ReadMode};
pub use entry::{Entry, Payload};
pub use membership::{ConfigChangeError, ConfigLog, Membership};
pub use message::Message;
pub use progress::{Progress, ProgressState};
pub use storage::{Durable, Write};
pub mod node;
pub use node::{RaftNode, RaftOutput};
