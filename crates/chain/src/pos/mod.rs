//! Ethereum-style proof of stake: [`types`] (checkpoints, attestations,
//! blocks), [`validators`] (registry, RANDAO seeds, stake-proportional
//! proposers, committees), [`slashing`] (verifiable evidence) and [`store`]
//! (LMD-GHOST fork choice and Casper FFG justification and finality).

pub mod slashing;
pub mod store;
pub mod types;
pub mod validators;

pub use slashing::Evidence;
pub use store::{BlockStatus, PosError, PosParams, Store};
pub use types::{Aggregate, AttestationData, Checkpoint, PosBlock, ValidatorIndex};
