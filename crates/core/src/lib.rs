//! # synod-core
//!
//! The vocabulary every Synod protocol shares, and nothing else:
//!
//! - [`protocol`]: the sans-IO [`Protocol`] interface (step / tick / propose /
//!   read) and the ordered [`Output`] batch a driver must carry out;
//! - [`command`]: client commands with their request ids ([`ClientId`], `seq`);
//! - [`quorum`]: quorum arithmetic for crash-fault (majority) and Byzantine
//!   (3f+1) clusters — the only place in Synod where quorum sizes are computed;
//! - [`state_machine`]: the [`StateMachine`] trait and [`Sessions`], the
//!   exactly-once layer that applies a retried command once and replays its
//!   cached response;
//! - [`kv`]: the small key-value register map the simulator and benchmarks
//!   replicate (put / get / append / compare-and-set);
//! - [`time`]: [`Time`], a point in (virtual or real) time in microseconds.
//!
//! This crate owns no I/O, no clocks, no threads and no randomness. Protocol
//! crates depend on it and on nothing else of Synod's.
#![deny(missing_docs)]

pub mod command;
pub mod kv;
pub mod protocol;
pub mod quorum;
pub mod state_machine;
pub mod time;

pub use command::{ClientId, Command, NodeId};
pub use protocol::{
    ClientRouting, Committed, Event, Message, Output, ProposeError, Protocol, ReadId, ReadState,
    Role, SnapshotAction, SnapshotMeta, Status,
};
pub use state_machine::{Sessions, StateMachine};
pub use time::Time;
