//! Blocks: the 80-byte header hashed with double SHA-256, the transaction
//! list it commits to through the Merkle root, and mining by nonce search.

use super::compact::target_from_compact;
use crate::hash::{Hash32, merkle_root, sha256d};
use crate::tx::Tx;
use crate::u256::U256;
use std::sync::Arc;

/// The 80-byte block header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u32,
    /// Hash of the parent block.
    pub prev_hash: Hash32,
    /// Merkle root of the transactions' ids.
    pub merkle_root: Hash32,
    /// Seconds since the epoch (virtual in simulation).
    pub time_secs: u32,
    /// The target, compact-encoded.
    pub bits: u32,
    /// What mining varies.
    pub nonce: u32,
}

impl Header {
    /// The 80 serialized bytes (little-endian integers, as Bitcoin).
    pub fn to_bytes(&self) -> [u8; 80] {
        let mut b = [0u8; 80];
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[4..36].copy_from_slice(&self.prev_hash.0);
        b[36..68].copy_from_slice(&self.merkle_root.0);
        b[68..72].copy_from_slice(&self.time_secs.to_le_bytes());
        b[72..76].copy_from_slice(&self.bits.to_le_bytes());
        b[76..80].copy_from_slice(&self.nonce.to_le_bytes());
        b
    }

    /// The block hash: [`sha256d`] of the header.
    pub fn hash(&self) -> Hash32 {
        sha256d(&self.to_bytes())
    }

    /// True when the hash, read as a little-endian number, is at or below
    /// the target the header claims (and the target decodes).
    pub fn meets_target(&self) -> bool {
        match target_from_compact(self.bits) {
            Ok(t) => U256::from_le_bytes(&self.hash().0) <= t,
            Err(_) => false,
        }
    }
}

/// A header and its transactions (shared: blocks travel between simulated
/// nodes without copying).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The header.
    pub header: Header,
    /// The transactions; the first is the coinbase.
    pub txs: Arc<Vec<Tx>>,
}

impl Block {
    /// The block hash.
    pub fn hash(&self) -> Hash32 {
        self.header.hash()
    }

    /// The Merkle root of this block's transactions.
    pub fn compute_merkle_root(&self) -> Hash32 {
        let ids: Vec<Hash32> = self.txs.iter().map(Tx::txid).collect();
        merkle_root(&ids)
    }

    /// Encoded size (header plus transactions).
    pub fn size_bytes(&self) -> usize {
        80 + self.txs.iter().map(Tx::size_bytes).sum::<usize>()
    }
}

/// Searches nonces from `header.nonce` for at most `max_tries` hashes;
/// returns the header with a winning nonce, or `None` (the caller changes the
/// time or the transactions and tries again). Returns the hashes spent too.
pub fn mine(mut header: Header, max_tries: u64) -> (Option<Header>, u64) {
    let Ok(target) = target_from_compact(header.bits) else { return (None, 0) };
    let mut bytes = header.to_bytes();
    for tries in 1..=max_tries {
        if U256::from_le_bytes(&sha256d(&bytes).0) <= target {
            return (Some(header), tries);
        }
        header.nonce = header.nonce.wrapping_add(1);
        if header.nonce == 0 {
            return (None, tries);
        }
        bytes[76..80].copy_from_slice(&header.nonce.to_le_bytes());
    }
    (None, max_tries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pow::compact::target_to_compact;

    #[test]
    fn mining_finds_a_nonce_that_meets_the_target() {
        let h = Header {
            version: 1,
            prev_hash: Hash32::ZERO,
            merkle_root: Hash32([5; 32]),
            time_secs: 1000,
            bits: target_to_compact(&U256::pow2(248)),
            nonce: 0,
        };
        let (found, tries) = mine(h, 1 << 20);
        let found = found.expect("2^-8 odds per hash");
        assert!(found.meets_target());
        assert!(tries >= 1);
        let mut bad = found;
        bad.bits = target_to_compact(&U256::pow2(200));
        assert!(!bad.meets_target() || bad.hash() != found.hash());
    }
}
