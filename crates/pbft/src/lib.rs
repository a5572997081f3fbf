//! # synod-pbft
//!
//! Practical Byzantine Fault Tolerance (Castro & Liskov, OSDI'99 / TOCS'02)
//! as a sans-IO core behind [`synod_core::Protocol`].
//!
//! Module map:
//! - [`auth`]: keys (Ed25519 per replica and client, pairwise HMAC-SHA256),
//!   MAC authenticators, signatures, and the counters of rejected messages;
//! - [`auth_meter`]: counts and CPU time of authentication work (off
//!   unless configured; for the simulator's comparison);
//! - [`digest`]: SHA-256 batch digests and the state hash chain;
//! - [`message`]: the messages and what each is authenticated over;
//! - [`request`]: signed client requests (envelopes) and their checker;
//! - [`shared_checks`]: a memo of verified signatures shared by replicas
//!   of one process (the simulator);
//! - [`config`]: cluster and knobs (K = 128, L = 256 by default);
//! - [`storage`]: what a replica persists and why;
//! - [`view_change`]: the NEW-VIEW decision (checkpoint and O) from a set
//!   of VIEW-CHANGEs, run by the new primary and re-run by every backup;
//! - [`node`]: [`PbftNode`], the replica (its snapshot checkpoints,
//!   garbage collection and snapshot transfer in `node/snapshots.rs`).
//!
//! Quorum sizes come from [`synod_core::quorum`] only.
#![deny(missing_docs)]

pub mod auth;
pub mod auth_meter;
pub mod config;
pub mod digest;
pub mod message;
pub mod node;
pub mod request;
pub mod shared_checks;
pub mod storage;
pub mod view_change;

pub use auth::{AuthStats, Authenticator, Keyring, Mac};
pub use auth_meter::{AuthMeter, AuthWork};
pub use config::{Config, InjectedBug, LoadedKeys};
pub use digest::Digest;
pub use message::{Batch, Message};
pub use node::{PbftNode, PbftOutput};
pub use request::ClientKeys;
pub use storage::{Durable, Write};
