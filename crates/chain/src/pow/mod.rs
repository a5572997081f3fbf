//! Bitcoin-style proof of work: [`block`] (header, double SHA-256, mining),
//! [`compact`] (nBits and work), [`params`], [`retarget`], [`mempool`] and
//! [`chain`] (validation, most-work fork choice, reorganisation, orphans).

pub mod block;
pub mod chain;
pub mod compact;
pub mod mempool;
pub mod params;
pub mod retarget;

pub use block::{Block, Header, mine};
pub use chain::{Accepted, BlockError, PowChain, genesis_block};
pub use params::PowParams;

#[cfg(test)]
mod tests;
