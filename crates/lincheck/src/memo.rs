//! Lowe's memoization: the set of configurations — (operations linearized,
//! model state) — the search has already reached. A configuration reached
//! twice has the same future, so the search never explores it again.
//!
//! One refinement beyond Porcupine: an operation that never returned is
//! optional (it may never take effect) and no return of it constrains the
//! order. So a configuration is also skipped if one already reached has the
//! same state and the same returned operations linearized, and differs only
//! in linearizing *fewer* never-returned ones: any way to finish from the
//! new configuration finishes from the old one too (the same operations,
//! with the extra pending ones simply never taking effect). Without this,
//! refuting a history with `p` pending writes costs up to `2^p` times more.
//! The hash covers only the returned operations and the state, so such
//! configurations share a hash chain.
//!
//! Bitsets live back to back in one arena (no allocation per entry); a hash
//! map from the configuration's hash to the newest entry with that hash,
//! chained through the entries, resolves collisions by full comparison.

use crate::bitset::Bitset;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Marks the end of a collision chain.
const NONE: u32 = u32::MAX;

/// A memoized configuration's state and the previous entry with its hash.
struct Entry<S> {
    state: S,
    next_same_hash: u32,
}

/// The configurations seen by the search of one partition.
pub(crate) struct Memo<S> {
    heads: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    entries: Vec<Entry<S>>,
    bits: Vec<u64>,
    words_per_set: usize,
    /// The operations that never returned, as bitset words.
    optional: Vec<u64>,
}

impl<S: Eq + Hash> Memo<S> {
    /// An empty memo; `optional` marks the operations that never returned
    /// (bitset words, as from [`Bitset::mask`]), which must be exactly the
    /// members the bitsets given to it leave out of their hash.
    pub(crate) fn new(optional: Vec<u64>) -> Self {
        let words_per_set = optional.len();
        Memo {
            heads: HashMap::default(),
            entries: Vec::new(),
            bits: Vec::new(),
            words_per_set,
            optional,
        }
    }

    /// Records the configuration (`linearized` plus `id`, `state`) and
    /// returns true, or returns false if it, or one that dominates it (see
    /// the module doc), was already recorded.
    pub(crate) fn insert_if_new(&mut self, linearized: &Bitset, id: usize, state: &S) -> bool
    where
        S: Clone,
    {
        assert_eq!(linearized.words().len(), self.words_per_set, "memo: bitset of the wrong size");
        let hash = mix(linearized.hash_with(id) ^ fx_hash(state));
        let head = self.heads.get(&hash).copied().unwrap_or(NONE);
        let mut at = head;
        while at != NONE {
            let entry = &self.entries[at as usize];
            let start = at as usize * self.words_per_set;
            let words = &self.bits[start..start + self.words_per_set];
            if entry.state == *state && linearized.dominated_by(words, id, &self.optional) {
                return false;
            }
            at = entry.next_same_hash;
        }
        assert!(self.entries.len() < NONE as usize, "memo: too many entries");
        let index = self.entries.len() as u32;
        self.entries.push(Entry { state: state.clone(), next_same_hash: head });
        self.bits.extend_from_slice(linearized.words());
        let (word, bit) = (id / 64, 1u64 << (id % 64));
        self.bits[index as usize * self.words_per_set + word] |= bit;
        self.heads.insert(hash, index);
        true
    }

    /// Number of configurations recorded.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Approximate heap bytes held, not counting what states point to.
    pub(crate) fn approx_bytes(&self) -> usize {
        self.bits.capacity() * 8
            + self.entries.capacity() * std::mem::size_of::<Entry<S>>()
            + self.heads.capacity() * (8 + 4 + 1)
    }
}

/// Hashes `value` with the Fx hash (rustc's; fast, not DoS-resistant —
/// histories are not adversarial).
fn fx_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = FxHasher(0);
    value.hash(&mut hasher);
    hasher.finish()
}

/// A final avalanche so every bit of the key depends on every input bit
/// (MurmurHash3's finalizer).
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// The Fx hash function.
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7C_C1_B7_27_22_0A_95);
    }

    fn write_u8(&mut self, byte: u8) {
        self.write_u64(u64::from(byte));
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hasher for keys that are already well-mixed 64-bit hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else in case that changes.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_is_new_once() {
        let mut memo = Memo::new(Bitset::mask(100, std::iter::empty()));
        let mut linearized = Bitset::new(&[true; 100]);
        assert!(memo.insert_if_new(&linearized, 70, &"a"));
        assert!(!memo.insert_if_new(&linearized, 70, &"a"));
        // Same set, other state; same state, other set: both new.
        assert!(memo.insert_if_new(&linearized, 70, &"b"));
        assert!(memo.insert_if_new(&linearized, 3, &"a"));
        // {3} + 70 is a different set from {} + 70 ...
        linearized.insert(3);
        assert!(memo.insert_if_new(&linearized, 70, &"a"));
        // ... and the same as {70} + 3.
        let mut other = Bitset::new(&[true; 100]);
        other.insert(70);
        assert!(!memo.insert_if_new(&other, 3, &"a"));
        assert_eq!(memo.len(), 4);
        assert!(memo.approx_bytes() >= 4 * 2 * 8);
    }

    #[test]
    fn extra_optional_operations_are_dominated() {
        // Operation 9 never returned; the others did.
        let hashed: Vec<bool> = (0..10).map(|id| id != 9).collect();
        let mut memo = Memo::new(Bitset::mask(10, [9].into_iter()));
        let mut linearized = Bitset::new(&hashed);
        assert!(memo.insert_if_new(&linearized, 0, &"s"));
        // {9} + 0 with the same state: dominated by {0}.
        linearized.insert(9);
        assert!(!memo.insert_if_new(&linearized, 0, &"s"));
        // Another state is not.
        assert!(memo.insert_if_new(&linearized, 0, &"t"));
        // {} + 9 lacks returned operation 0: not dominated.
        linearized.remove(9);
        assert!(memo.insert_if_new(&linearized, 9, &"s"));
        // {0} + 1 is new; {0, 9} + 1 is then dominated by it.
        linearized.insert(0);
        assert!(memo.insert_if_new(&linearized, 1, &"u"));
        linearized.insert(9);
        assert!(!memo.insert_if_new(&linearized, 1, &"u"));
        assert_eq!(memo.len(), 4);
    }

    #[test]
    fn fx_hash_separates_byte_strings_of_different_lengths() {
        assert_ne!(fx_hash(&b"a"[..]), fx_hash(&b"a\0"[..]));
        assert_eq!(fx_hash(&Some(b"xyz".to_vec())), fx_hash(&Some(b"xyz".to_vec())));
    }
}
