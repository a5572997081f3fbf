//! # synod-sim
//!
//! Synod's deterministic discrete-event simulator (DESIGN.md §2): N protocol
//! cores over a simulated network, disk and clock, with clients, faults and
//! checkers, all driven from one seed so that a seed replays bit for bit.
//!
//! Entry points:
//! - [`run_seed`] / [`run_seeds`] with [`SimOptions`]: whole runs with a
//!   verdict ([`SeedReport`], [`Summary`]) — what `synod sim` calls;
//! - [`Sim`]: the programmatic harness for scenario tests (advance time,
//!   crash, partition, submit operations, inspect cores).
//!
//! Module map: [`rng`] (the one random stream), [`queue`] (the event queue),
//! [`net`] (latency, loss, duplication, reordering, partitions), `node` (a
//! replica's core, disk, clock and state machine), `client` (workload and
//! retries), [`faults`] (fault actions and the random schedule),
//! [`scenario`] (TOML timelines), [`invariant`] (the checker hook),
//! [`invariants`] (the safety checkers),
//! [`byzantine`] (adversaries that take over replicas),
//! [`metrics`], [`trace`] (event hash and recent-events ring), `sim` (the
//! engine), [`harness`] (the test API), [`run`] (phases and verdicts),
//! [`protocols`] (per-protocol glue).
//!
//! Owns no protocol logic: cores are driven only through
//! [`synod_core::Protocol`] and [`SimProtocol`].
#![deny(missing_docs)]

pub mod byzantine;
mod client;
pub mod compare;
pub mod faults;
pub mod harness;
pub mod invariant;
pub mod invariants;
pub mod metrics;
pub mod net;
mod node;
pub mod options;
pub mod partial;
pub mod protocol;
pub mod protocols;
pub mod queue;
pub mod rng;
pub mod run;
pub mod scenario;
mod sim;
#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod testproto;
pub mod trace;

pub use faults::{FaultAction, FaultConfig, FaultProfile};
pub use harness::OpId;
pub use invariant::{Invariant, StepView, Violation};
pub use metrics::{Histogram, Metrics, Percentiles};
pub use net::{NetConfig, Network};
pub use options::{ProtocolKind, SimOptions};
pub use protocol::SimProtocol;
pub use run::{Failure, SeedFailure, SeedReport, Summary, run_seed, run_seed_for, run_seeds};
pub use scenario::{Scenario, ScenarioError, ScenarioStep};
pub use sim::Sim;
