//! The Raft scenario suite (issue 2 §6): what the classic Raft lab tests
//! check, as deterministic simulations through the public
//! [`synod_sim::Sim`] harness, one module per theme.
//!
//! Every test fixes its seeds, so a failure replays exactly; every test ends
//! by asserting that the simulator's safety checkers (election safety, log
//! matching, leader completeness, state machine safety, commit rule,
//! durability, monotonicity), which run after every event, saw nothing.
//! The randomized scenarios take `SCENARIO_SEEDS=N` to run seeds `1..=N`
//! instead of their few defaults, for a longer hunt:
//! `SCENARIO_SEEDS=300 cargo test --release -p synod-sim --test raft_scenarios`.
//!
//! - [`election`]: initial election and a stable term, re-election, no
//!   leader without a quorum, many elections with 3 of 7 nodes cut off;
//! - [`agreement`]: basic agreement, progress with a follower gone, none
//!   with a majority gone, catching up, concurrent proposals, a partitioned
//!   old leader's log repaired;
//! - [`backup`]: fast backup over 50 divergent entries (the lab's
//!   TestBackup), bounded in rejected appends;
//! - [`messages`]: message counts of an election, an idle leader and a
//!   command;
//! - [`persistence`]: crash and restart of all nodes, the leader, a
//!   follower, and repeated partial crashes;
//! - [`figure8`]: leaders crash right after proposing, on a reliable and on
//!   an unreliable, reordering network;
//! - [`churn`]: concurrent clients while nodes crash, restart and
//!   partition, checked for linearizability and liveness;
//! - [`stalls`]: beyond the lab — a paused leader resuming (no stale
//!   reads), a leader or a follower that can send but not hear.

mod agreement;
mod backup;
mod churn;
mod common;
mod election;
mod figure8;
mod messages;
mod persistence;
mod stalls;
