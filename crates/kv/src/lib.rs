//! # synod-kv
//!
//! The replicated multi-version key-value state machine behind Synod's etcd
//! v3 API (DESIGN.md §4, issue 7 §1). It owns the *deterministic* part of
//! the service: given the same commands in the same order, every replica
//! computes the same keys, revisions, leases, answers and events. It owns no
//! I/O, no clocks, no randomness and no gRPC; the service maps etcd's
//! protobufs onto [`api`]'s plain types, proposes [`KvCommand`]s through a
//! consensus core, serves [`KvQuery`]s, and feeds watchers from
//! [`KvStore::events_since`].
//!
//! - [`api`]: Rust mirrors of etcd's `etcdserverpb` / `mvccpb` messages;
//! - [`error`]: [`KvError`], with etcd's exact gRPC codes and messages;
//! - [`range`]: etcd's `(key, range_end)` conventions and [`prefix_end`];
//! - [`command`]: [`KvCommand`] (through the log), [`KvQuery`] (local),
//!   [`KvResponse`], [`KvConfig`] limits, and etcd's pre-proposal checks;
//! - `mvcc`: key histories, revisions, the change log, compaction;
//! - `lease`: lease ids, TTLs, deadlines (stamped by the leader), attachments;
//! - [`store`]: [`KvStore`], etcd's apply semantics, and the
//!   [`StateMachine`](synod_core::StateMachine) implementation;
//! - [`hash`]: `Maintenance.HashKV`, a checksum of the history up to a
//!   revision that every replica computes alike;
//! - `codec` / `snapshot`: deterministic bytes for commands, answers and
//!   whole-store snapshots.
#![deny(missing_docs)]

pub mod api;
mod change_log;
mod codec;
pub mod command;
pub mod error;
pub mod hash;
mod lease;
mod mvcc;
pub mod range;
mod snapshot;
pub mod store;

pub use api::*;
pub use codec::{KvResult, decode_result, encode_result};
pub use command::{
    EventsResponse, KvCommand, KvConfig, KvQuery, KvResponse, LeaseExpireResponse,
    MAX_EVENT_BYTES_PER_COMMAND, MAX_EVENTS_PER_COMMAND, MAX_TXN_DEPTH,
};
pub use error::{GrpcCode, KvError};
pub use hash::HashKvResponse;
pub use lease::MAX_LEASE_TTL_SECS;
pub use mvcc::EventBatch;
pub use range::{KeyRange, prefix_end};
pub use snapshot::SNAPSHOT_CHUNK_BYTES;
pub use store::{KvApplied, KvStore};
