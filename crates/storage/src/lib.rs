//! # synod-storage
//!
//! Durable storage for a Synod node (DESIGN.md §3), independent of the
//! protocol: records are opaque bytes with a u64 index, so the same log
//! holds Raft entries, Paxos acceptor slots or a PBFT log.
//!
//! - [`Wal`]: a segmented, checksummed write-ahead log with group commit
//!   (many appends, one fsync), truncate-suffix, purge-prefix, bounded-memory
//!   reads, and crash recovery that cuts off a torn tail and refuses any
//!   other corruption. Byte layout: [`format`](mod@format).
//! - [`HardStateFile`]: a small opaque value (term and vote), replaced
//!   atomically.
//! - [`SnapshotStore`]: snapshots (metadata + streamed data), each written
//!   atomically; the previous one is kept until the new one is durable.
//! - [`Vfs`]: the file layer, with [`StdFs`] (real) and [`FaultFs`]
//!   (in-memory, injects crashes, torn writes, ENOSPC, fsync failure, bit
//!   flips).
//!
//! Errors say which file and byte offset; [`Error::is_fatal`] tells the
//! caller when it must stop (a failed fsync, corruption).
//!
//! A node's data directory is suggested to be `wal/` (the log),
//! `hardstate` (a file in the top directory) and `snap/` (snapshots).
//! This crate does not lock the directory against a second process.
//!
//! It touches nothing but the files under the directories it is given.
#![deny(missing_docs)]

mod atomic;
mod error;
mod fault_fs;
pub mod format;
mod hard_state;
mod scan;
mod snapshot;
mod vfs;
mod wal;

pub use error::{Error, Result};
pub use fault_fs::FaultFs;
pub use hard_state::HardStateFile;
pub use snapshot::{SYNC_EVERY_BYTES, SnapshotReader, SnapshotStore, SnapshotWriter};
pub use vfs::{StdFs, Vfs, VfsFile};
pub use wal::{
    Entries, MAX_SEGMENT_OR_BATCH_BYTES, PendingSync, Recovered, SyncDone, TornTail, Wal,
    WalOptions, WalPurger,
};
