//! A fixed-size set of small integers (operation ids within one partition),
//! one bit each, with an incrementally maintained hash.

/// The set of operations linearized so far, plus a Zobrist hash of it (the
/// XOR of a random 64-bit key per member), updated in O(1) per change so
/// memo lookups never rehash the whole set.
///
/// Members created "unhashed" (operations that never returned) have key 0:
/// they do not change the hash, so sets differing only in them collide on
/// purpose and the memo can compare them for dominance.
#[derive(Clone, Debug)]
pub(crate) struct Bitset {
    words: Vec<u64>,
    keys: Vec<u64>,
    hash: u64,
}

/// The random-looking key of member `id` (SplitMix64's output function).
pub(crate) fn zobrist(id: usize) -> u64 {
    let mut z = (id as u64).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Bitset {
    /// An empty set able to hold `0..hashed.len()`; member `id` counts in
    /// the hash iff `hashed[id]`.
    pub(crate) fn new(hashed: &[bool]) -> Self {
        let keys = hashed.iter().enumerate().map(|(id, &h)| if h { zobrist(id) } else { 0 });
        Bitset { words: vec![0; hashed.len().div_ceil(64)], keys: keys.collect(), hash: 0 }
    }

    /// The words of a set holding exactly the ids in `members`, for `len` ids.
    pub(crate) fn mask(len: usize, members: impl Iterator<Item = usize>) -> Vec<u64> {
        let mut words = vec![0; len.div_ceil(64)];
        for id in members {
            words[id / 64] |= 1u64 << (id % 64);
        }
        words
    }

    /// Adds `id`, which must be absent.
    pub(crate) fn insert(&mut self, id: usize) {
        let (word, bit) = (id / 64, 1u64 << (id % 64));
        assert!(self.words[word] & bit == 0, "bitset: {id} already present");
        self.words[word] |= bit;
        self.hash ^= self.keys[id];
    }

    /// Removes `id`, which must be present.
    pub(crate) fn remove(&mut self, id: usize) {
        let (word, bit) = (id / 64, 1u64 << (id % 64));
        assert!(self.words[word] & bit != 0, "bitset: {id} absent");
        self.words[word] &= !bit;
        self.hash ^= self.keys[id];
    }

    /// True if `id` is present.
    #[cfg(test)]
    pub(crate) fn contains(&self, id: usize) -> bool {
        self.words[id / 64] & (1u64 << (id % 64)) != 0
    }

    /// The Zobrist hash of the hashed members: equal sets have equal hashes.
    #[cfg(test)]
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    /// The hash the set would have with `id` added (`id` absent).
    pub(crate) fn hash_with(&self, id: usize) -> u64 {
        self.hash ^ self.keys[id]
    }

    /// The raw words, least significant member first.
    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    /// True if `words` is a subset of this set with `id` added (`id` absent
    /// here) that lacks only members of `optional` (a mask of the same
    /// length): the set `words` *dominates* this one plus `id`.
    pub(crate) fn dominated_by(&self, words: &[u64], id: usize, optional: &[u64]) -> bool {
        let (word, bit) = (id / 64, 1u64 << (id % 64));
        assert!(words.len() == self.words.len() && optional.len() == self.words.len());
        self.words.iter().zip(words).zip(optional).enumerate().all(
            |(i, ((&mine, &theirs), &optional))| {
                let mine = if i == word { mine | bit } else { mine };
                // theirs ⊆ mine, and what mine has beyond theirs is optional.
                theirs & !mine == 0 && (mine & !theirs) & !optional == 0
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_and_hash_track_the_members() {
        let mut set = Bitset::new(&[true; 130]);
        assert_eq!(set.words().len(), 3);
        assert_eq!(set.hash(), 0);
        let predicted = set.hash_with(129);
        set.insert(129);
        assert_eq!(set.hash(), predicted);
        set.insert(0);
        set.insert(64);
        assert!(set.contains(0) && set.contains(64) && set.contains(129));
        assert!(!set.contains(1));
        // The hash depends on the members, not on the order they came in.
        let mut other = Bitset::new(&[true; 130]);
        for id in [64, 0, 129] {
            other.insert(id);
        }
        assert_eq!(other.hash(), set.hash());
        set.remove(64);
        assert!(!set.contains(64));
        assert_ne!(other.hash(), set.hash());
        let none = Bitset::mask(130, std::iter::empty());
        assert!(set.dominated_by(other.words(), 64, &none));
        assert!(!set.dominated_by(other.words(), 63, &none));
    }

    #[test]
    fn unhashed_members_leave_the_hash_alone_and_may_be_extra() {
        let hashed: Vec<bool> = (0..70).map(|id| id != 5 && id != 66).collect();
        let optional = Bitset::mask(70, [5, 66].into_iter());
        let mut set = Bitset::new(&hashed);
        set.insert(1);
        let explored = set.clone();
        set.insert(66);
        assert_eq!(set.hash(), explored.hash());
        // {1, 66} + 5 is dominated by {1}: only optional members are extra.
        assert!(set.dominated_by(explored.words(), 5, &optional));
        // {1, 66} + 2 is not: 2 is not optional.
        assert!(!set.dominated_by(explored.words(), 2, &optional));
        // {1} + 5 is not dominated by {1, 66}: a subset never dominates a superset.
        assert!(!explored.dominated_by(set.words(), 5, &optional));
    }

    #[test]
    #[should_panic(expected = "already present")]
    fn inserting_twice_is_a_bug() {
        let mut set = Bitset::new(&[true; 8]);
        set.insert(3);
        set.insert(3);
    }
}
