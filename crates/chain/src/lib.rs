//! # synod-chain
//!
//! Blockchain consensus, built to be read and tested: Bitcoin-style proof of
//! work ([`pow`]) and Ethereum-style proof of stake with LMD-GHOST and Casper
//! FFG finality ([`pos`]), over a simple Ed25519-signed account ledger
//! ([`tx`], [`ledger`]), run under a deterministic chain simulator ([`sim`])
//! with latency, partitions, crashes, attacks, metrics and checkers; and
//! PBFT-agreed blocks ([`sim::pbft`]) with immediate finality, whose replicas
//! are `synod_pbft::PbftNode` cores.
//!
//! Uses no other Synod crate but the PBFT core (and `synod-core`, its
//! interface): the simulator here is a small event loop of its own (blocks,
//! slots and mining events differ enough from the request/response protocols
//! of `synod-sim` that its `SimProtocol` seam does not fit), seeded like
//! `synod-sim` from one `u64`.
#![deny(missing_docs)]

pub mod hash;
pub mod ledger;
pub mod pos;
pub mod pow;
pub mod sim;
pub mod tx;
pub mod u256;
