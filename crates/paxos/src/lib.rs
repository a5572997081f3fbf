//! # synod-paxos
//!
//! Paxos as sans-IO cores: single-decree Paxos (the Synod protocol) and
//! Multi-Paxos behind [`synod_core::Protocol`]. Like every Synod core they
//! own no I/O, clocks or threads; a driver (the simulator, tests, the real
//! node) calls them and carries out their [`Output`](synod_core::Output).
//!
//! Where things live:
//!
//! - [`ballot`]: [`Ballot`], the totally ordered `(round, node)` proposal
//!   number both cores use;
//! - [`timer`]: the seeded randomized timer (election timeouts, back-off);
//! - [`single`]: single-decree Paxos — acceptor, proposer with randomized
//!   back-off, learner — and its deterministic mini-simulation in tests;
//! - [`multi`]: Multi-Paxos, [`PaxosNode`], on the common interface, with
//!   log compaction by snapshots, chunked snapshot catch-up and bounded
//!   Phase 1 promises.
//!
//! May depend on `synod-core` only.
#![deny(missing_docs)]

pub mod ballot;
pub mod multi;
pub mod single;
pub mod timer;

pub use ballot::Ballot;
pub use multi::{Config, InjectedBug, PaxosNode, PaxosOutput};
