//! A small replicated register map: the workload of the simulator and the
//! protocol benchmarks.
//!
//! Operations are `get`, `put`, `append` and compare-and-set on byte-string
//! keys and values, encoded in a compact binary form so they travel as a
//! [`Command`](crate::Command)'s opaque `op`. The full etcd-compatible MVCC
//! store is a separate crate; this one is just enough to check
//! linearizability against (the [`KvOp`]/[`KvResult`] pair is the model the
//! linearizability checker replays).

use crate::state_machine::StateMachine;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::HashMap;

/// foldhash with a fixed seed: the simulator applies millions of operations,
/// and SipHash (std's default, built against hash flooding) was a tenth of
/// its time; these keys come from the replicated log, not from strangers.
type FastState = foldhash::fast::FixedState;

/// An operation on the register map.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Read a key.
    Get {
        /// The key.
        key: Bytes,
    },
    /// Set a key.
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Append to a key's value (an absent key counts as empty).
    Append {
        /// The key.
        key: Bytes,
        /// What to append.
        value: Bytes,
    },
    /// Set `key` to `new` only if its value is `expected` (`None`: absent).
    Cas {
        /// The key.
        key: Bytes,
        /// The value the key must hold, or `None` for "absent".
        expected: Option<Bytes>,
        /// The value to set on success.
        new: Bytes,
    },
}

/// The answer to a [`KvOp`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvResult {
    /// `get`: the value, or `None` when absent.
    Value(Option<Bytes>),
    /// `put` / `append` succeeded.
    Done,
    /// `cas`: whether it swapped.
    Swapped(bool),
    /// The operation could not be decoded.
    Invalid,
}

/// A [`KvOp`] or [`KvResult`] that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed key-value {what}: {why}")]
pub struct DecodeError {
    what: &'static str,
    why: &'static str,
}

const GET: u8 = 1;
const PUT: u8 = 2;
const APPEND: u8 = 3;
const CAS: u8 = 4;
const CAS_ABSENT: u8 = 5;

const VALUE_NONE: u8 = 1;
const VALUE_SOME: u8 = 2;
const DONE: u8 = 3;
const SWAPPED: u8 = 4;
const NOT_SWAPPED: u8 = 5;
const INVALID: u8 = 6;

fn put_field(buf: &mut BytesMut, b: &[u8]) {
    buf.put_u32_le(b.len() as u32);
    buf.put_slice(b);
}

fn get_field(buf: &mut &[u8], what: &'static str) -> Result<Bytes, DecodeError> {
    if buf.remaining() < 4 {
        return Err(DecodeError { what, why: "truncated length" });
    }
    let len = buf.get_u32_le() as usize;
    if buf.remaining() < len {
        return Err(DecodeError { what, why: "field longer than the buffer" });
    }
    let field = Bytes::copy_from_slice(&buf[..len]);
    buf.advance(len);
    Ok(field)
}

fn get_tag(buf: &mut &[u8], what: &'static str) -> Result<u8, DecodeError> {
    if buf.remaining() < 1 {
        return Err(DecodeError { what, why: "empty" });
    }
    Ok(buf.get_u8())
}

fn finish<T>(buf: &[u8], what: &'static str, v: T) -> Result<T, DecodeError> {
    if buf.is_empty() { Ok(v) } else { Err(DecodeError { what, why: "trailing bytes" }) }
}

impl KvOp {
    /// The key the operation touches.
    pub fn key(&self) -> &Bytes {
        match self {
            KvOp::Get { key } | KvOp::Put { key, .. } | KvOp::Append { key, .. } => key,
            KvOp::Cas { key, .. } => key,
        }
    }

    /// True for operations that do not change state.
    pub fn is_read_only(&self) -> bool {
        matches!(self, KvOp::Get { .. })
    }

    /// The binary form carried in a command.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(16 + self.key().len());
        match self {
            KvOp::Get { key } => {
                buf.put_u8(GET);
                put_field(&mut buf, key);
            }
            KvOp::Put { key, value } | KvOp::Append { key, value } => {
                buf.put_u8(if matches!(self, KvOp::Put { .. }) { PUT } else { APPEND });
                put_field(&mut buf, key);
                put_field(&mut buf, value);
            }
            KvOp::Cas { key, expected, new } => {
                buf.put_u8(if expected.is_some() { CAS } else { CAS_ABSENT });
                put_field(&mut buf, key);
                if let Some(e) = expected {
                    put_field(&mut buf, e);
                }
                put_field(&mut buf, new);
            }
        }
        buf.freeze()
    }

    /// Decodes the binary form.
    pub fn decode(mut buf: &[u8]) -> Result<KvOp, DecodeError> {
        const W: &str = "operation";
        let op = match get_tag(&mut buf, W)? {
            GET => KvOp::Get { key: get_field(&mut buf, W)? },
            PUT => KvOp::Put { key: get_field(&mut buf, W)?, value: get_field(&mut buf, W)? },
            APPEND => KvOp::Append { key: get_field(&mut buf, W)?, value: get_field(&mut buf, W)? },
            CAS => KvOp::Cas {
                key: get_field(&mut buf, W)?,
                expected: Some(get_field(&mut buf, W)?),
                new: get_field(&mut buf, W)?,
            },
            CAS_ABSENT => KvOp::Cas {
                key: get_field(&mut buf, W)?,
                expected: None,
                new: get_field(&mut buf, W)?,
            },
            _ => return Err(DecodeError { what: W, why: "unknown tag" }),
        };
        finish(buf, W, op)
    }
}

impl KvResult {
    /// The binary form returned to clients.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            KvResult::Value(None) => buf.put_u8(VALUE_NONE),
            KvResult::Value(Some(v)) => {
                buf.put_u8(VALUE_SOME);
                put_field(&mut buf, v);
            }
            KvResult::Done => buf.put_u8(DONE),
            KvResult::Swapped(true) => buf.put_u8(SWAPPED),
            KvResult::Swapped(false) => buf.put_u8(NOT_SWAPPED),
            KvResult::Invalid => buf.put_u8(INVALID),
        }
        buf.freeze()
    }

    /// Decodes the binary form.
    pub fn decode(mut buf: &[u8]) -> Result<KvResult, DecodeError> {
        const W: &str = "result";
        let r = match get_tag(&mut buf, W)? {
            VALUE_NONE => KvResult::Value(None),
            VALUE_SOME => KvResult::Value(Some(get_field(&mut buf, W)?)),
            DONE => KvResult::Done,
            SWAPPED => KvResult::Swapped(true),
            NOT_SWAPPED => KvResult::Swapped(false),
            INVALID => KvResult::Invalid,
            _ => return Err(DecodeError { what: W, why: "unknown tag" }),
        };
        finish(buf, W, r)
    }
}

/// The register map: a [`StateMachine`] over [`KvOp`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    map: HashMap<Bytes, Bytes, FastState>,
}

impl KvStore {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a decoded operation.
    pub fn apply_op(&mut self, op: &KvOp) -> KvResult {
        match op {
            KvOp::Get { key } => KvResult::Value(self.map.get(key).cloned()),
            KvOp::Put { key, value } => {
                self.map.insert(key.clone(), value.clone());
                KvResult::Done
            }
            KvOp::Append { key, value } => {
                let slot = self.map.entry(key.clone()).or_default();
                let mut joined = BytesMut::with_capacity(slot.len() + value.len());
                joined.put_slice(slot);
                joined.put_slice(value);
                *slot = joined.freeze();
                KvResult::Done
            }
            KvOp::Cas { key, expected, new } => {
                if self.map.get(key) == expected.as_ref() {
                    self.map.insert(key.clone(), new.clone());
                    KvResult::Swapped(true)
                } else {
                    KvResult::Swapped(false)
                }
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.map.get(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no key is set.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl StateMachine for KvStore {
    fn apply(&mut self, _index: u64, op: &[u8]) -> Bytes {
        match KvOp::decode(op) {
            Ok(op) => self.apply_op(&op).encode(),
            Err(_) => KvResult::Invalid.encode(),
        }
    }

    fn query(&self, op: &[u8]) -> Bytes {
        match KvOp::decode(op) {
            Ok(KvOp::Get { key }) => KvResult::Value(self.map.get(&key).cloned()).encode(),
            _ => KvResult::Invalid.encode(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn every_op_and_result_round_trips() {
        let ops = [
            KvOp::Get { key: b("k") },
            KvOp::Put { key: b("k"), value: b("v") },
            KvOp::Append { key: b(""), value: b("xyz") },
            KvOp::Cas { key: b("k"), expected: Some(b("")), new: b("n") },
            KvOp::Cas { key: b("k"), expected: None, new: b("n") },
        ];
        for op in ops {
            assert_eq!(KvOp::decode(&op.encode()), Ok(op));
        }
        let results = [
            KvResult::Value(None),
            KvResult::Value(Some(b("v"))),
            KvResult::Done,
            KvResult::Swapped(true),
            KvResult::Swapped(false),
            KvResult::Invalid,
        ];
        for r in results {
            assert_eq!(KvResult::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn malformed_bytes_are_errors_not_panics() {
        assert!(KvOp::decode(&[]).is_err());
        assert!(KvOp::decode(&[99]).is_err());
        assert!(KvOp::decode(&[PUT, 255, 255, 255, 255]).is_err());
        let mut trailing = KvOp::Get { key: b("k") }.encode().to_vec();
        trailing.push(0);
        assert!(KvOp::decode(&trailing).is_err());
        // The state machine answers Invalid instead of panicking.
        let mut kv = KvStore::new();
        assert_eq!(KvResult::decode(&kv.apply(1, &[PUT, 1])), Ok(KvResult::Invalid));
        assert!(kv.is_empty());
    }

    #[test]
    fn semantics_of_each_op() {
        let mut kv = KvStore::new();
        assert_eq!(kv.apply_op(&KvOp::Get { key: b("a") }), KvResult::Value(None));
        let cas_absent = KvOp::Cas { key: b("a"), expected: None, new: b("1") };
        assert_eq!(kv.apply_op(&cas_absent), KvResult::Swapped(true));
        assert_eq!(kv.apply_op(&cas_absent), KvResult::Swapped(false));
        kv.apply_op(&KvOp::Append { key: b("a"), value: b("2") });
        assert_eq!(kv.get(b"a"), Some(&b("12")));
        let cas = KvOp::Cas { key: b("a"), expected: Some(b("12")), new: b("3") };
        assert_eq!(kv.apply_op(&cas), KvResult::Swapped(true));
        kv.apply_op(&KvOp::Put { key: b("a"), value: b("4") });
        assert_eq!(kv.apply_op(&KvOp::Get { key: b("a") }), KvResult::Value(Some(b("4"))));
    }
}
