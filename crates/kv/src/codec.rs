//! The deterministic binary encoding of commands (for the log), queries,
//! responses (what [`StateMachine::apply`](synod_core::StateMachine::apply)
//! returns) and snapshots.
//!
//! Every value encodes to one byte string, fields in declaration order:
//! integers as fixed-width little-endian, byte strings and lists with a
//! `u32` length, enums and options with a one-byte tag. Decoding never
//! panics and never trusts a length: a list may not claim more elements than
//! bytes remain, nesting is bounded, and trailing bytes are an error.
//! Decoded byte strings are copied out of the input so a stored value never
//! pins a whole log entry or snapshot in memory.

use crate::api::*;
use crate::command::{
    EventsResponse, KvCommand, KvQuery, KvResponse, LeaseExpireResponse, MAX_TXN_DEPTH,
};
use crate::error::KvError;
use crate::hash::HashKvResponse;
use bytes::{BufMut, Bytes, BytesMut};
use synod_core::Time;

/// The answer to a command or query: what clients decode from the bytes a
/// replica returns.
pub type KvResult = Result<KvResponse, KvError>;

/// A reader over encoded bytes.
pub(crate) struct Decoder<'a> {
    buf: &'a [u8],
    depth: usize,
}

fn malformed(why: &str) -> KvError {
    KvError::Malformed(why.to_string())
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Decoder<'a> {
        Decoder { buf, depth: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], KvError> {
        if self.buf.len() < n {
            return Err(malformed("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, KvError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, KvError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, KvError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A list length, bounded by the bytes left (each element takes ≥ 1).
    pub(crate) fn len(&mut self) -> Result<usize, KvError> {
        let n = self.u32()? as usize;
        if n > self.buf.len() {
            return Err(malformed("length longer than the input"));
        }
        Ok(n)
    }

    pub(crate) fn finish(self) -> Result<(), KvError> {
        if self.buf.is_empty() { Ok(()) } else { Err(malformed("trailing bytes")) }
    }

    fn enter(&mut self) -> Result<(), KvError> {
        self.depth += 1;
        if self.depth > MAX_TXN_DEPTH + 2 {
            return Err(malformed("nested too deeply"));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }
}

/// A value with a binary form.
pub(crate) trait Wire: Sized {
    fn put(&self, out: &mut BytesMut);
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError>;
}

impl Wire for u64 {
    fn put(&self, out: &mut BytesMut) {
        out.put_u64_le(*self);
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        d.u64()
    }
}

impl Wire for u32 {
    fn put(&self, out: &mut BytesMut) {
        out.put_u32_le(*self);
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        d.u32()
    }
}

impl Wire for i64 {
    fn put(&self, out: &mut BytesMut) {
        out.put_i64_le(*self);
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        Ok(d.u64()? as i64)
    }
}

impl Wire for bool {
    fn put(&self, out: &mut BytesMut) {
        out.put_u8(u8::from(*self));
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        match d.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(malformed("bad bool")),
        }
    }
}

impl Wire for Time {
    fn put(&self, out: &mut BytesMut) {
        out.put_u64_le(self.as_micros());
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        Ok(Time(d.u64()?))
    }
}

impl Wire for Bytes {
    fn put(&self, out: &mut BytesMut) {
        out.put_u32_le(u32::try_from(self.len()).expect("byte strings are under 4 GiB"));
        out.put_slice(self);
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        let n = d.len()?;
        Ok(Bytes::copy_from_slice(d.take(n)?))
    }
}

impl Wire for String {
    fn put(&self, out: &mut BytesMut) {
        Bytes::copy_from_slice(self.as_bytes()).put(out);
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        let n = d.len()?;
        String::from_utf8(d.take(n)?.to_vec()).map_err(|_| malformed("bad utf-8"))
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn put(&self, out: &mut BytesMut) {
        out.put_u32_le(u32::try_from(self.len()).expect("lists are under 4G elements"));
        for x in self {
            x.put(out);
        }
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        let n = d.len()?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(T::get(d)?);
        }
        Ok(v)
    }
}

impl<T: Wire> Wire for Option<T> {
    fn put(&self, out: &mut BytesMut) {
        match self {
            None => out.put_u8(0),
            Some(x) => {
                out.put_u8(1);
                x.put(out);
            }
        }
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        match d.u8()? {
            0 => Ok(None),
            1 => Ok(Some(T::get(d)?)),
            _ => Err(malformed("bad option tag")),
        }
    }
}

/// Encodes a struct's fields in order.
macro_rules! wire_struct {
    ($t:ident { $($f:ident),* $(,)? }) => {
        impl Wire for $t {
            fn put(&self, _out: &mut BytesMut) {
                $( self.$f.put(_out); )*
            }
            fn get(_d: &mut Decoder<'_>) -> Result<Self, KvError> {
                Ok($t { $( $f: Wire::get(_d)?, )* })
            }
        }
    };
}

/// Encodes a fieldless enum as its one-byte discriminant.
macro_rules! wire_enum {
    ($t:ident { $($v:ident),* $(,)? }) => {
        impl Wire for $t {
            fn put(&self, out: &mut BytesMut) {
                out.put_u8(*self as u8);
            }
            fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
                let tag = d.u8()?;
                $( if tag == $t::$v as u8 { return Ok($t::$v); } )*
                Err(malformed(concat!("bad ", stringify!($t))))
            }
        }
    };
}

wire_enum!(SortOrder { None, Ascend, Descend });
wire_enum!(SortTarget { Key, Version, Create, Mod, Value });
wire_enum!(CompareResult { Equal, Greater, Less, NotEqual });
wire_enum!(CompareTarget { Version, Create, Mod, Value, Lease });
wire_enum!(EventType { Put, Delete });

wire_struct!(ResponseHeader { cluster_id, member_id, revision, raft_term });
wire_struct!(HashKvResponse { header, hash, compact_revision, hash_revision });
wire_struct!(KeyValue { key, create_revision, mod_revision, version, value, lease });
wire_struct!(Event { r#type, kv, prev_kv });
wire_struct!(RangeRequest {
    key,
    range_end,
    limit,
    revision,
    sort_order,
    sort_target,
    serializable,
    keys_only,
    count_only,
    min_mod_revision,
    max_mod_revision,
    min_create_revision,
    max_create_revision,
});
wire_struct!(RangeResponse { header, kvs, more, count });
wire_struct!(PutRequest { key, value, lease, prev_kv, ignore_value, ignore_lease });
wire_struct!(PutResponse { header, prev_kv });
wire_struct!(DeleteRangeRequest { key, range_end, prev_kv });
wire_struct!(DeleteRangeResponse { header, deleted, prev_kvs });
wire_struct!(Compare { result, target, key, target_union, range_end });
wire_struct!(TxnRequest { compare, success, failure });
wire_struct!(TxnResponse { header, succeeded, responses });
wire_struct!(CompactionRequest { revision, physical });
wire_struct!(CompactionResponse { header });
wire_struct!(LeaseGrantRequest { ttl, id });
wire_struct!(LeaseGrantResponse { header, id, ttl, error });
wire_struct!(LeaseRevokeRequest { id });
wire_struct!(LeaseRevokeResponse { header });
wire_struct!(LeaseKeepAliveRequest { id });
wire_struct!(LeaseKeepAliveResponse { header, id, ttl });
wire_struct!(LeaseTimeToLiveRequest { id, keys });
wire_struct!(LeaseTimeToLiveResponse { header, id, ttl, granted_ttl, keys });
wire_struct!(LeaseLeasesRequest {});
wire_struct!(LeaseStatus { id });
wire_struct!(LeaseLeasesResponse { header, leases });
wire_struct!(LeaseExpireResponse { header, revoked });
wire_struct!(EventsResponse { header, compact_revision, events, next_revision });

impl Wire for CompareTargetUnion {
    fn put(&self, out: &mut BytesMut) {
        match self {
            CompareTargetUnion::Version(x) => (0u8, x).put_tagged(out),
            CompareTargetUnion::CreateRevision(x) => (1u8, x).put_tagged(out),
            CompareTargetUnion::ModRevision(x) => (2u8, x).put_tagged(out),
            CompareTargetUnion::Value(v) => {
                out.put_u8(3);
                v.put(out);
            }
            CompareTargetUnion::Lease(x) => (4u8, x).put_tagged(out),
        }
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        Ok(match d.u8()? {
            0 => CompareTargetUnion::Version(Wire::get(d)?),
            1 => CompareTargetUnion::CreateRevision(Wire::get(d)?),
            2 => CompareTargetUnion::ModRevision(Wire::get(d)?),
            3 => CompareTargetUnion::Value(Wire::get(d)?),
            4 => CompareTargetUnion::Lease(Wire::get(d)?),
            _ => return Err(malformed("bad compare operand")),
        })
    }
}

/// A tag byte followed by a value.
trait PutTagged {
    fn put_tagged(&self, out: &mut BytesMut);
}

impl<T: Wire> PutTagged for (u8, &T) {
    fn put_tagged(&self, out: &mut BytesMut) {
        out.put_u8(self.0);
        self.1.put(out);
    }
}

impl Wire for RequestOp {
    fn put(&self, out: &mut BytesMut) {
        match self {
            RequestOp::Range(r) => (0u8, r).put_tagged(out),
            RequestOp::Put(p) => (1u8, p).put_tagged(out),
            RequestOp::DeleteRange(r) => (2u8, r).put_tagged(out),
            RequestOp::Txn(t) => (3u8, t).put_tagged(out),
        }
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        Ok(match d.u8()? {
            0 => RequestOp::Range(Wire::get(d)?),
            1 => RequestOp::Put(Wire::get(d)?),
            2 => RequestOp::DeleteRange(Wire::get(d)?),
            3 => {
                d.enter()?;
                let t = Wire::get(d)?;
                d.leave();
                RequestOp::Txn(t)
            }
            _ => return Err(malformed("bad request op")),
        })
    }
}

impl Wire for ResponseOp {
    fn put(&self, out: &mut BytesMut) {
        match self {
            ResponseOp::Range(r) => (0u8, r).put_tagged(out),
            ResponseOp::Put(p) => (1u8, p).put_tagged(out),
            ResponseOp::DeleteRange(r) => (2u8, r).put_tagged(out),
            ResponseOp::Txn(t) => (3u8, t).put_tagged(out),
        }
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        Ok(match d.u8()? {
            0 => ResponseOp::Range(Wire::get(d)?),
            1 => ResponseOp::Put(Wire::get(d)?),
            2 => ResponseOp::DeleteRange(Wire::get(d)?),
            3 => {
                d.enter()?;
                let t = Wire::get(d)?;
                d.leave();
                ResponseOp::Txn(t)
            }
            _ => return Err(malformed("bad response op")),
        })
    }
}

impl Wire for KvCommand {
    fn put(&self, out: &mut BytesMut) {
        match self {
            KvCommand::Range(r) => (0u8, r).put_tagged(out),
            KvCommand::Put(p) => (1u8, p).put_tagged(out),
            KvCommand::DeleteRange(r) => (2u8, r).put_tagged(out),
            KvCommand::Txn(t) => (3u8, t).put_tagged(out),
            KvCommand::Compact(c) => (4u8, c).put_tagged(out),
            KvCommand::LeaseGrant { request, now } => {
                (5u8, request).put_tagged(out);
                now.put(out);
            }
            KvCommand::LeaseRevoke(r) => (6u8, r).put_tagged(out),
            KvCommand::LeaseKeepAlive { request, now } => {
                (7u8, request).put_tagged(out);
                now.put(out);
            }
            KvCommand::LeaseExpire { ids, now } => {
                (8u8, ids).put_tagged(out);
                now.put(out);
            }
            KvCommand::LeasePromote { now } => (9u8, now).put_tagged(out),
            KvCommand::Events { key, range_end, start_revision, max_events } => {
                (10u8, key).put_tagged(out);
                range_end.put(out);
                start_revision.put(out);
                max_events.put(out);
            }
            KvCommand::LeaseTimeToLive { request, now } => {
                (11u8, request).put_tagged(out);
                now.put(out);
            }
            KvCommand::LeaseLeases(r) => (12u8, r).put_tagged(out),
        }
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        Ok(match d.u8()? {
            0 => KvCommand::Range(Wire::get(d)?),
            1 => KvCommand::Put(Wire::get(d)?),
            2 => KvCommand::DeleteRange(Wire::get(d)?),
            3 => KvCommand::Txn(Wire::get(d)?),
            4 => KvCommand::Compact(Wire::get(d)?),
            5 => KvCommand::LeaseGrant { request: Wire::get(d)?, now: Wire::get(d)? },
            6 => KvCommand::LeaseRevoke(Wire::get(d)?),
            7 => KvCommand::LeaseKeepAlive { request: Wire::get(d)?, now: Wire::get(d)? },
            8 => KvCommand::LeaseExpire { ids: Wire::get(d)?, now: Wire::get(d)? },
            9 => KvCommand::LeasePromote { now: Wire::get(d)? },
            10 => KvCommand::Events {
                key: Wire::get(d)?,
                range_end: Wire::get(d)?,
                start_revision: Wire::get(d)?,
                max_events: Wire::get(d)?,
            },
            11 => KvCommand::LeaseTimeToLive { request: Wire::get(d)?, now: Wire::get(d)? },
            12 => KvCommand::LeaseLeases(Wire::get(d)?),
            _ => return Err(malformed("bad command")),
        })
    }
}

impl Wire for KvQuery {
    fn put(&self, out: &mut BytesMut) {
        match self {
            KvQuery::Range(r) => (0u8, r).put_tagged(out),
            KvQuery::LeaseTimeToLive { request, now } => {
                (1u8, request).put_tagged(out);
                now.put(out);
            }
            KvQuery::LeaseLeases(r) => (2u8, r).put_tagged(out),
            KvQuery::Events { key, range_end, start_revision, max_events } => {
                (3u8, key).put_tagged(out);
                range_end.put(out);
                start_revision.put(out);
                max_events.put(out);
            }
            KvQuery::ExpiredLeases { now, max } => {
                (4u8, now).put_tagged(out);
                max.put(out);
            }
            KvQuery::HashKv { revision } => (5u8, revision).put_tagged(out),
        }
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        Ok(match d.u8()? {
            0 => KvQuery::Range(Wire::get(d)?),
            1 => KvQuery::LeaseTimeToLive { request: Wire::get(d)?, now: Wire::get(d)? },
            2 => KvQuery::LeaseLeases(Wire::get(d)?),
            3 => KvQuery::Events {
                key: Wire::get(d)?,
                range_end: Wire::get(d)?,
                start_revision: Wire::get(d)?,
                max_events: Wire::get(d)?,
            },
            4 => KvQuery::ExpiredLeases { now: Wire::get(d)?, max: Wire::get(d)? },
            5 => KvQuery::HashKv { revision: Wire::get(d)? },
            _ => return Err(malformed("bad query")),
        })
    }
}

impl Wire for KvResponse {
    fn put(&self, out: &mut BytesMut) {
        match self {
            KvResponse::Range(r) => (0u8, r).put_tagged(out),
            KvResponse::Put(r) => (1u8, r).put_tagged(out),
            KvResponse::DeleteRange(r) => (2u8, r).put_tagged(out),
            KvResponse::Txn(r) => (3u8, r).put_tagged(out),
            KvResponse::Compact(r) => (4u8, r).put_tagged(out),
            KvResponse::LeaseGrant(r) => (5u8, r).put_tagged(out),
            KvResponse::LeaseRevoke(r) => (6u8, r).put_tagged(out),
            KvResponse::LeaseKeepAlive(r) => (7u8, r).put_tagged(out),
            KvResponse::LeaseExpire(r) => (8u8, r).put_tagged(out),
            KvResponse::LeasePromote(r) => (9u8, r).put_tagged(out),
            KvResponse::LeaseTimeToLive(r) => (10u8, r).put_tagged(out),
            KvResponse::LeaseLeases(r) => (11u8, r).put_tagged(out),
            KvResponse::Events(r) => (12u8, r).put_tagged(out),
            KvResponse::ExpiredLeases(r) => (13u8, r).put_tagged(out),
            KvResponse::HashKv(r) => (14u8, r).put_tagged(out),
        }
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        Ok(match d.u8()? {
            0 => KvResponse::Range(Wire::get(d)?),
            1 => KvResponse::Put(Wire::get(d)?),
            2 => KvResponse::DeleteRange(Wire::get(d)?),
            3 => KvResponse::Txn(Wire::get(d)?),
            4 => KvResponse::Compact(Wire::get(d)?),
            5 => KvResponse::LeaseGrant(Wire::get(d)?),
            6 => KvResponse::LeaseRevoke(Wire::get(d)?),
            7 => KvResponse::LeaseKeepAlive(Wire::get(d)?),
            8 => KvResponse::LeaseExpire(Wire::get(d)?),
            9 => KvResponse::LeasePromote(Wire::get(d)?),
            10 => KvResponse::LeaseTimeToLive(Wire::get(d)?),
            11 => KvResponse::LeaseLeases(Wire::get(d)?),
            12 => KvResponse::Events(Wire::get(d)?),
            13 => KvResponse::ExpiredLeases(Wire::get(d)?),
            14 => KvResponse::HashKv(Wire::get(d)?),
            _ => return Err(malformed("bad response")),
        })
    }
}

impl Wire for KvError {
    fn put(&self, out: &mut BytesMut) {
        let tag: u8 = match self {
            KvError::EmptyKey => 0,
            KvError::KeyNotFound => 1,
            KvError::ValueProvided => 2,
            KvError::LeaseProvided => 3,
            KvError::TooManyOps => 4,
            KvError::DuplicateKey => 5,
            KvError::InvalidSortOption => 6,
            KvError::Compacted => 7,
            KvError::FutureRevision => 8,
            KvError::LeaseNotFound => 9,
            KvError::LeaseExists => 10,
            KvError::LeaseTtlTooLarge => 11,
            KvError::RequestTooLarge => 12,
            KvError::Malformed(why) => {
                out.put_u8(13);
                why.put(out);
                return;
            }
        };
        out.put_u8(tag);
    }
    fn get(d: &mut Decoder<'_>) -> Result<Self, KvError> {
        Ok(match d.u8()? {
            0 => KvError::EmptyKey,
            1 => KvError::KeyNotFound,
            2 => KvError::ValueProvided,
            3 => KvError::LeaseProvided,
            4 => KvError::TooManyOps,
            5 => KvError::DuplicateKey,
            6 => KvError::InvalidSortOption,
            7 => KvError::Compacted,
            8 => KvError::FutureRevision,
            9 => KvError::LeaseNotFound,
            10 => KvError::LeaseExists,
            11 => KvError::LeaseTtlTooLarge,
            12 => KvError::RequestTooLarge,
            13 => KvError::Malformed(Wire::get(d)?),
            _ => return Err(malformed("bad error")),
        })
    }
}

pub(crate) fn encode<T: Wire>(x: &T) -> Bytes {
    let mut out = BytesMut::new();
    x.put(&mut out);
    out.freeze()
}

pub(crate) fn decode<T: Wire>(bytes: &[u8]) -> Result<T, KvError> {
    let mut d = Decoder::new(bytes);
    let x = T::get(&mut d)?;
    d.finish()?;
    Ok(x)
}

impl KvCommand {
    /// The command's bytes for the log.
    pub fn encode(&self) -> Bytes {
        encode(self)
    }

    /// Decodes a command ([`KvError::Malformed`] if the bytes are not one).
    pub fn decode(bytes: &[u8]) -> Result<KvCommand, KvError> {
        decode(bytes)
    }
}

impl KvQuery {
    /// The query's bytes, for [`StateMachine::query`](synod_core::StateMachine::query).
    pub fn encode(&self) -> Bytes {
        encode(self)
    }

    /// Decodes a query ([`KvError::Malformed`] if the bytes are not one).
    pub fn decode(bytes: &[u8]) -> Result<KvQuery, KvError> {
        decode(bytes)
    }
}

/// Encodes an answer (the bytes a replica returns for a command or query).
pub fn encode_result(result: &KvResult) -> Bytes {
    let mut out = BytesMut::new();
    match result {
        Ok(r) => {
            out.put_u8(0);
            r.put(&mut out);
        }
        Err(e) => {
            out.put_u8(1);
            e.put(&mut out);
        }
    }
    out.freeze()
}

/// Decodes an answer; the outer error means the bytes were not one.
pub fn decode_result(bytes: &[u8]) -> Result<KvResult, KvError> {
    let mut d = Decoder::new(bytes);
    let result = match d.u8()? {
        0 => Ok(KvResponse::get(&mut d)?),
        1 => Err(KvError::get(&mut d)?),
        _ => return Err(malformed("bad result tag")),
    };
    d.finish()?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn sample_txn() -> TxnRequest {
        TxnRequest {
            compare: vec![Compare {
                result: CompareResult::NotEqual,
                target: CompareTarget::Value,
                key: b("k"),
                target_union: Some(CompareTargetUnion::Value(b("v"))),
                range_end: b("\0"),
            }],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: b("a"),
                    value: b("1"),
                    lease: 7,
                    prev_kv: true,
                    ..Default::default()
                }),
                RequestOp::Txn(TxnRequest {
                    compare: vec![],
                    success: vec![RequestOp::Range(RangeRequest {
                        key: b("a"),
                        sort_order: SortOrder::Descend,
                        sort_target: SortTarget::Mod,
                        limit: 3,
                        ..Default::default()
                    })],
                    failure: vec![],
                }),
            ],
            failure: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                key: b("x"),
                range_end: b("y"),
                prev_kv: true,
            })],
        }
    }

    #[test]
    fn every_command_round_trips() {
        let now = Time(123_456);
        let commands = [
            KvCommand::Range(RangeRequest { key: b("a"), count_only: true, ..Default::default() }),
            KvCommand::Put(PutRequest { key: b("a"), value: b("v"), ..Default::default() }),
            KvCommand::DeleteRange(DeleteRangeRequest {
                key: b("a"),
                range_end: b("b"),
                prev_kv: true,
            }),
            KvCommand::Txn(sample_txn()),
            KvCommand::Compact(CompactionRequest { revision: 9, physical: true }),
            KvCommand::LeaseGrant { request: LeaseGrantRequest { ttl: 5, id: 0 }, now },
            KvCommand::LeaseRevoke(LeaseRevokeRequest { id: 3 }),
            KvCommand::LeaseKeepAlive { request: LeaseKeepAliveRequest { id: 3 }, now },
            KvCommand::LeaseExpire { ids: vec![1, 2], now },
            KvCommand::LeasePromote { now },
            KvCommand::LeaseTimeToLive {
                request: LeaseTimeToLiveRequest { id: 3, keys: true },
                now,
            },
            KvCommand::LeaseLeases(LeaseLeasesRequest {}),
            KvCommand::Events {
                key: b("a"),
                range_end: b("b"),
                start_revision: 7,
                max_events: 100,
            },
        ];
        for c in commands {
            let bytes = c.encode();
            assert_eq!(KvCommand::decode(&bytes), Ok(c.clone()));
            assert_eq!(c.encode(), bytes, "encoding is deterministic");
        }
        let q =
            KvQuery::LeaseTimeToLive { request: LeaseTimeToLiveRequest { id: 1, keys: true }, now };
        assert_eq!(KvQuery::decode(&q.encode()), Ok(q));
        let queries = [
            KvQuery::Events { key: b("a"), range_end: b("b"), start_revision: 7, max_events: 100 },
            KvQuery::ExpiredLeases { now, max: 9 },
            KvQuery::HashKv { revision: 4 },
        ];
        for q in queries {
            assert_eq!(KvQuery::decode(&q.encode()), Ok(q));
        }
    }

    #[test]
    fn results_round_trip() {
        let results: Vec<KvResult> = vec![
            Err(KvError::Compacted),
            Err(KvError::Malformed("x".into())),
            Ok(KvResponse::Txn(TxnResponse {
                header: ResponseHeader::at(5),
                succeeded: true,
                responses: vec![ResponseOp::Put(PutResponse {
                    header: ResponseHeader::at(5),
                    prev_kv: Some(KeyValue { key: b("a"), version: 1, ..Default::default() }),
                })],
            })),
            Ok(KvResponse::LeaseExpire(LeaseExpireResponse {
                header: ResponseHeader::at(1),
                revoked: vec![4],
            })),
            Ok(KvResponse::HashKv(HashKvResponse {
                header: ResponseHeader::at(9),
                hash: 0xdead_beef,
                compact_revision: -1,
                hash_revision: 8,
            })),
        ];
        for r in results {
            assert_eq!(decode_result(&encode_result(&r)), Ok(r));
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(KvCommand::decode(&[]).is_err());
        assert!(KvCommand::decode(&[99]).is_err());
        assert!(KvCommand::decode(&[1, 255, 255, 255, 255]).is_err(), "length beyond the input");
        let mut trailing = KvCommand::LeasePromote { now: Time(1) }.encode().to_vec();
        trailing.push(0);
        assert!(KvCommand::decode(&trailing).is_err());
        let full = KvCommand::Txn(sample_txn()).encode();
        for cut in 0..full.len() {
            assert!(KvCommand::decode(&full[..cut]).is_err(), "truncated at {cut}");
        }
        // A txn nested far beyond the bound is refused, not a stack overflow.
        let mut deep = vec![3u8];
        for _ in 0..10_000 {
            deep.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0, 3]);
        }
        assert!(KvCommand::decode(&deep).is_err());
    }
}
