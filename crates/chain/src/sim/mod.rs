//! The chain simulator: a small deterministic event loop ([`events`]) over
//! a simulated network ([`net`]: latency, partition, crashes), driving
//! proof-of-work miners ([`pow`]), proof-of-stake validators ([`pos`]) or
//! PBFT replicas cutting blocks from agreed batches ([`pbft`]), with metrics
//! and checkers; plus the private-chain race ([`race`]) that measures
//! double-spend success against Nakamoto's formula. One `u64` seed drives
//! everything, so a run replays exactly.

pub mod events;
pub mod net;
pub mod pbft;
pub mod pos;
pub mod pow;
pub mod race;
