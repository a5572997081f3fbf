//! Consensus parameters of a proof-of-work chain.

use super::compact::{target_from_compact, target_to_compact};
use crate::u256::U256;

/// Consensus constants (Bitcoin's in [`PowParams::bitcoin`], cheap ones for
/// tests and simulation in [`PowParams::sim`]).
#[derive(Clone, Debug)]
pub struct PowParams {
    /// Easiest allowed target, as compact bits (`powLimit`).
    pub pow_limit_bits: u32,
    /// Target of the genesis block.
    pub genesis_bits: u32,
    /// Blocks between retargets (Bitcoin: 2016).
    pub retarget_interval_blocks: u64,
    /// Intended seconds between blocks (Bitcoin: 600).
    pub target_spacing_secs: u64,
    /// How far ahead of local time a block's timestamp may be (Bitcoin: 2 h).
    pub max_future_secs: u64,
    /// Blocks in the median-time-past window (Bitcoin: 11).
    pub median_time_span: usize,
    /// Reward of each block's coinbase.
    pub block_reward: u64,
    /// Transfers per block at most (the block size limit).
    pub max_block_txs: usize,
    /// Orphan blocks held at most.
    pub max_orphans: usize,
    /// Transactions held in the pool at most.
    pub max_pool_txs: usize,
}

impl PowParams {
    /// Bitcoin mainnet's constants (pow limit 0x1d00ffff).
    pub fn bitcoin() -> PowParams {
        PowParams {
            pow_limit_bits: 0x1d00_ffff,
            genesis_bits: 0x1d00_ffff,
            retarget_interval_blocks: 2016,
            target_spacing_secs: 600,
            max_future_secs: 2 * 60 * 60,
            median_time_span: 11,
            block_reward: 50,
            max_block_txs: 4000,
            max_orphans: 100,
            max_pool_txs: 50_000,
        }
    }

    /// Cheap constants: a target of 2^252 (16 hashes per block expected) so
    /// tests mine real headers instantly; retarget every 10 blocks at a
    /// 10-second spacing.
    pub fn sim() -> PowParams {
        PowParams {
            pow_limit_bits: 0x2100_ffff,
            genesis_bits: target_to_compact(&U256::pow2(252)),
            retarget_interval_blocks: 10,
            target_spacing_secs: 10,
            max_future_secs: 2 * 60 * 60,
            median_time_span: 11,
            block_reward: 50,
            max_block_txs: 200,
            max_orphans: 64,
            max_pool_txs: 10_000,
        }
    }

    /// The easiest target.
    pub fn pow_limit(&self) -> U256 {
        target_from_compact(self.pow_limit_bits).unwrap_or(U256::MAX)
    }

    /// Seconds a retarget window should take.
    pub fn target_timespan_secs(&self) -> u64 {
        self.retarget_interval_blocks * self.target_spacing_secs
    }
}
