//! etcd's key-range conventions: which keys a `(key, range_end)` pair names.
//!
//! - `range_end` empty: the single key `key`;
//! - `range_end == "\0"`: every key ≥ `key` (so `key = "\0"`, `range_end =
//!   "\0"` is every key);
//! - otherwise the half-open interval `[key, range_end)`, empty when
//!   `range_end <= key`.
//!
//! [`prefix_end`] builds the `range_end` of a prefix scan as etcd's clients
//! do (`clientv3.GetPrefixRangeEnd`).

use bytes::Bytes;
use std::ops::Bound;

/// Lower and upper bounds for `BTreeMap::range` over byte-string keys.
pub(crate) type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The keys a `(key, range_end)` pair names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRange<'a> {
    /// Exactly one key.
    Single(&'a [u8]),
    /// Every key ≥ the given one.
    From(&'a [u8]),
    /// Every key in `[start, end)` (empty when `end <= start`).
    Between(&'a [u8], &'a [u8]),
}

impl<'a> KeyRange<'a> {
    /// Interprets an etcd `(key, range_end)` pair.
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> KeyRange<'a> {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::From(key),
            end => KeyRange::Between(key, end),
        }
    }

    /// Whether `k` is in the range.
    pub fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeyRange::Single(key) => k == key,
            KeyRange::From(start) => k >= start,
            KeyRange::Between(start, end) => k >= start && k < end,
        }
    }

    /// The range as `BTreeMap::range` bounds, or `None` when it is empty
    /// (a `BTreeMap` panics on an inverted range).
    pub(crate) fn bounds(&self) -> Option<KeyBounds<'a>> {
        match *self {
            KeyRange::Single(key) => Some((Bound::Included(key), Bound::Included(key))),
            KeyRange::From(start) => Some((Bound::Included(start), Bound::Unbounded)),
            KeyRange::Between(start, end) if start < end => {
                Some((Bound::Included(start), Bound::Excluded(end)))
            }
            KeyRange::Between(..) => None,
        }
    }
}

/// The `range_end` that makes `(prefix, range_end)` name every key starting
/// with `prefix`: the prefix with trailing `0xff` bytes dropped and its last
/// byte incremented; `"\0"` (all keys from `prefix`) if it is all `0xff`.
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    for i in (0..prefix.len()).rev() {
        if prefix[i] < 0xff {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            return Bytes::from(end);
        }
    }
    Bytes::from_static(b"\0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_range_conventions() {
        assert!(KeyRange::new(b"a", b"").contains(b"a"));
        assert!(!KeyRange::new(b"a", b"").contains(b"ab"));
        let from = KeyRange::new(b"b", b"\0");
        assert!(from.contains(b"b") && from.contains(b"zzz") && !from.contains(b"a"));
        let all = KeyRange::new(b"\0", b"\0");
        assert!(all.contains(b"\0") && all.contains(b"a") && all.contains(b"\xff\xff"));
        let between = KeyRange::new(b"b", b"d");
        assert!(between.contains(b"b") && between.contains(b"cz") && !between.contains(b"d"));
        assert_eq!(KeyRange::new(b"d", b"b").bounds(), None);
        assert_eq!(KeyRange::new(b"d", b"d").bounds(), None);
    }

    #[test]
    fn prefix_end_matches_clientv3() {
        assert_eq!(prefix_end(b"aa"), Bytes::from_static(b"ab"));
        assert_eq!(prefix_end(b"a\xff"), Bytes::from_static(b"b"));
        assert_eq!(prefix_end(b"\xff\xff"), Bytes::from_static(b"\0"));
        let r = prefix_end(b"/foo/");
        let range = KeyRange::new(b"/foo/", &r);
        assert!(range.contains(b"/foo/") && range.contains(b"/foo/bar"));
        assert!(!range.contains(b"/foo0") && !range.contains(b"/fop"));
    }
}
