//! # synod-node
//!
//! A Synod node (DESIGN.md §3): the same sans-IO protocol core the simulator
//! runs, driven against a real disk ([`synod_storage`]), real peers
//! ([`synod_transport`]) and real timers, replicating the etcd-style
//! key-value store ([`synod_kv`]) and serving it over the etcd v3 gRPC API
//! ([`synod_etcdpb`]).
//!
//! - [`driver`]: the loop that feeds the core and carries out its outputs
//!   (persist with group commit before sending, apply, answer clients,
//!   snapshots); [`snapshotter`] writes the snapshots it takes on a
//!   background thread;
//! - [`glue`]: [`NodeProtocol`], the per-protocol part (wire format, disk
//!   mapping, recovery); [`raft_glue`] implements it for Raft,
//!   [`paxos_glue`] for Multi-Paxos, [`pbft_glue`] for PBFT (with
//!   [`pbft_keys`], its key files, and PBFT's client path: [`pbft_service`]
//!   orders requests clients signed themselves, [`pbft_reply`] signs the
//!   answers and counts f+1 matching ones on the client side);
//! - [`machine`]: the replicated state (store + exactly-once sessions) and
//!   its snapshots;
//! - [`service`] and [`convert`]: the etcd `KV`, `Maintenance.Status` and
//!   `Cluster.MemberList` services, with forwarding to the leader;
//!   [`watch`] (the `Watch` service and the node's watch hub) and [`lease`]
//!   (the `Lease` service and the leader's lease expiry); [`lock`] and
//!   [`election`] (etcd's server-side Lock and Election recipes);
//!   [`gateway`] (etcd's JSON gateway, sharing the client port with gRPC);
//! - [`config`]: the `synod serve` TOML file; [`server`]: everything wired
//!   together ([`serve`]), plus `/metrics` and `/health`;
//! - [`disk`], [`wire`], [`metrics`], [`error`]: the pieces.
//!
//! It owns no protocol logic and no state-machine semantics: those belong to
//! the protocol crates and to `synod-kv`.
#![deny(missing_docs)]

pub mod clock;
pub mod cluster;
pub mod compactor;
pub mod config;
pub mod convert;
pub mod disk;
pub mod driver;
pub mod election;
pub mod error;
pub mod gateway;
pub mod glue;
pub mod health;
pub mod lease;
pub mod lock;
pub mod machine;
pub mod maintenance;
pub mod members;
pub mod metrics;
pub mod paxos_glue;
pub mod pbft_glue;
pub mod pbft_keys;
pub mod pbft_refusal;
pub mod pbft_reply;
pub mod pbft_service;
pub mod raft_glue;
pub mod server;
pub mod service;
pub mod snapshotter;
pub mod watch;
pub mod wire;

pub use config::{ConfigError, NodeConfig};
pub use driver::{ClientError, ClientRequest, Driver, DriverConfig, NodeStatus};
pub use error::NodeError;
pub use glue::{NodeProtocol, ProtocolSettings};
pub use server::{serve, shutdown_signal};
