//! Hashes: the 32-byte [`Hash32`], double SHA-256 ([`sha256d`]) and the
//! Bitcoin Merkle root ([`merkle_root`]).

use sha2::{Digest, Sha256};
use std::fmt;

/// A 32-byte hash (block id, transaction id, Merkle node).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// The all-zero hash (the genesis block's parent).
    pub const ZERO: Hash32 = Hash32([0; 32]);

    /// A short hex prefix for logs and reports.
    pub fn short(&self) -> String {
        self.0[..4].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.short())
    }
}

/// One SHA-256.
pub fn sha256(data: &[u8]) -> Hash32 {
    Hash32(Sha256::digest(data).into())
}

/// SHA-256 of SHA-256: Bitcoin's block and transaction hash.
pub fn sha256d(data: &[u8]) -> Hash32 {
    sha256(&Sha256::digest(data))
}

/// The Merkle root of `leaves` as Bitcoin computes it: pairs are hashed with
/// [`sha256d`] and an odd level duplicates its last hash. Because of that
/// duplication two different lists can share a root (CVE-2012-2459), so
/// block validation also rejects duplicate transactions. The root of an
/// empty list is [`Hash32::ZERO`].
pub fn merkle_root(leaves: &[Hash32]) -> Hash32 {
    if leaves.is_empty() {
        return Hash32::ZERO;
    }
    let mut level: Vec<Hash32> = leaves.to_vec();
    while level.len() > 1 {
        if level.len() % 2 == 1 {
            let last = level[level.len() - 1];
            level.push(last);
        }
        level = level
            .chunks(2)
            .map(|pair| {
                let mut buf = [0u8; 64];
                buf[..32].copy_from_slice(&pair[0].0);
                buf[32..].copy_from_slice(&pair[1].0);
                sha256d(&buf)
            })
            .collect();
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256d_of_empty_matches_the_known_vector() {
        // SHA-256(SHA-256("")) = 5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456
        let h = sha256d(b"");
        assert_eq!(h.0[0..4], [0x5d, 0xf6, 0xe0, 0xe2]);
        assert_eq!(h.0[28..32], [0x5d, 0x4c, 0x94, 0x56]);
    }

    #[test]
    fn merkle_root_duplicates_the_odd_leaf() {
        let (a, b, c) = (sha256d(b"a"), sha256d(b"b"), sha256d(b"c"));
        assert_eq!(merkle_root(&[a]), a);
        // [a, b, c] and [a, b, c, c] share a root: the CVE-2012-2459 mutation.
        assert_eq!(merkle_root(&[a, b, c]), merkle_root(&[a, b, c, c]));
        assert_ne!(merkle_root(&[a, b, c]), merkle_root(&[a, c, b]));
    }
}
