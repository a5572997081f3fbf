//! Snapshots of the whole store: deterministic bytes (two replicas with the
//! same state produce the same bytes) and a restore that yields an equal
//! store.
//!
//! Layout (all through [`codec`](crate::codec)'s primitives): the magic
//! `SYNODKV1`; current and compaction revisions; every held key in key order
//! with its versions; the change log as `(revision, key number)`; every lease
//! as `(id, ttl, deadline)`. Lease-to-key attachments are not stored: they
//! are rebuilt from each key's current version. The [`KvConfig`] is not
//! stored either: it is configuration every replica is started with.
//!
//! Both directions stream: [`KvStore::write_snapshot`] encodes into a
//! buffer of [`SNAPSHOT_CHUNK_BYTES`] handed to an [`io::Write`] whenever it
//! fills, and [`KvStore::read_snapshot`] decodes from an [`io::Read`] one
//! field at a time, so neither holds the encoded snapshot in memory (a
//! store of 100,000 keys of 256 bytes encodes to about 32 MB).

use crate::codec::Wire;
use crate::command::KvConfig;
use crate::error::KvError;
use crate::lease::{Lease, Leases};
use crate::mvcc::{Mvcc, Version};
use crate::store::KvStore;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;
use synod_core::Time;

const MAGIC: &[u8; 8] = b"SYNODKV1";

/// Encoded bytes gathered before they are handed to the writer.
pub const SNAPSHOT_CHUNK_BYTES: usize = 64 << 10;
/// Buffer of the reader a snapshot is decoded from.
const READ_BUFFER_BYTES: usize = 64 << 10;
/// Most elements reserved ahead for a list whose length the input claims
/// (the rest grow as they are read: a corrupt length cannot allocate much).
const MAX_RESERVE: usize = 1 << 16;

fn malformed(why: impl Into<String>) -> KvError {
    KvError::Malformed(format!("snapshot: {}", why.into()))
}

impl KvStore {
    /// The whole store as bytes (see the module doc for the layout). Holds
    /// the encoding in memory: the node streams it with
    /// [`KvStore::write_snapshot`] instead.
    pub fn snapshot(&self) -> Bytes {
        let mut out = Vec::new();
        self.write_snapshot(&mut out).expect("writing to memory cannot fail");
        Bytes::from(out)
    }

    /// Writes the bytes of [`KvStore::snapshot`] to `w` in pieces of at
    /// most about [`SNAPSHOT_CHUNK_BYTES`] and returns how many it wrote.
    /// Besides that buffer it needs one pointer per key (to number the keys
    /// the change log names).
    pub fn write_snapshot<W: io::Write + ?Sized>(&self, w: &mut W) -> io::Result<u64> {
        let mut out = Chunked { buf: BytesMut::with_capacity(2 * SNAPSHOT_CHUNK_BYTES), w, len: 0 };
        out.buf.put_slice(MAGIC);
        self.mvcc.current_revision.put(&mut out.buf);
        self.mvcc.compact_revision.put(&mut out.buf);
        out.buf.put_u32_le(self.mvcc.keys.len() as u32);
        // Keys in key order: a key's number is its position here.
        let mut keys: Vec<&Bytes> = Vec::with_capacity(self.mvcc.keys.len());
        for (key, history) in &self.mvcc.keys {
            keys.push(key);
            key.put(&mut out.buf);
            out.buf.put_u32_le(history.len() as u32);
            for v in history.iter() {
                v.mod_revision.put(&mut out.buf);
                v.create_revision.put(&mut out.buf);
                v.version.put(&mut out.buf);
                v.lease.put(&mut out.buf);
                v.value.put(&mut out.buf);
                out.spill()?;
            }
        }
        out.buf.put_u32_le(self.mvcc.changes.len() as u32);
        for (rev, key) in self.mvcc.changes.iter() {
            let number = keys
                .binary_search_by(|k| k.as_ref().cmp(key.as_ref()))
                .expect("the change log names held keys");
            rev.put(&mut out.buf);
            out.buf.put_u32_le(number as u32);
            out.spill()?;
        }
        out.buf.put_u32_le(self.leases.by_id.len() as u32);
        for (id, lease) in &self.leases.by_id {
            id.put(&mut out.buf);
            lease.ttl_secs.put(&mut out.buf);
            lease.deadline.put(&mut out.buf);
            out.spill()?;
        }
        out.finish()
    }

    /// Rebuilds a store from [`KvStore::snapshot`] bytes, checking that they
    /// describe a consistent store.
    pub fn restore(config: KvConfig, bytes: &[u8]) -> Result<KvStore, KvError> {
        KvStore::read_snapshot(config, bytes, bytes.len() as u64)
    }

    /// [`KvStore::restore`] from the next `len` bytes of `r` (all of them
    /// must belong to the snapshot), read in pieces: memory beyond the
    /// store being built stays bounded. An error reading `r` is reported
    /// as a malformed snapshot naming it.
    pub fn read_snapshot<R: io::Read>(
        config: KvConfig,
        r: R,
        len: u64,
    ) -> Result<KvStore, KvError> {
        let mut d = Source { r: io::BufReader::with_capacity(READ_BUFFER_BYTES, r), left: len };
        let mut magic = [0u8; 8];
        d.fill(&mut magic)?;
        if &magic != MAGIC {
            return Err(malformed("not a Synod kv snapshot"));
        }
        let mut mvcc = Mvcc {
            current_revision: d.u64()? as i64,
            compact_revision: d.u64()? as i64,
            keys: BTreeMap::new(),
            changes: Default::default(),
        };
        let key_count = d.len()?;
        let mut keys = Vec::with_capacity(key_count.min(MAX_RESERVE));
        for _ in 0..key_count {
            let key = d.bytes()?;
            let n = d.len()?;
            let mut history = Vec::with_capacity(n.min(MAX_RESERVE));
            for _ in 0..n {
                history.push(Version {
                    mod_revision: d.u64()? as i64,
                    create_revision: d.u64()? as i64,
                    version: d.u64()? as i64,
                    lease: d.u64()? as i64,
                    value: d.bytes()?,
                });
            }
            if keys.last().is_some_and(|prev| prev >= &key) {
                return Err(malformed("keys out of order"));
            }
            keys.push(key.clone());
            mvcc.keys.insert(key, Arc::new(history));
        }
        let change_count = d.len()?;
        for _ in 0..change_count {
            let rev = d.u64()? as i64;
            let i = d.u32()? as usize;
            let key = keys.get(i).ok_or_else(|| malformed("change names no key"))?;
            mvcc.changes.push_back(rev, key.clone());
        }
        drop(keys);
        mvcc.check().map_err(malformed)?;
        let lease_count = d.len()?;
        let mut leases = BTreeMap::new();
        for _ in 0..lease_count {
            let id = d.u64()? as i64;
            let ttl_secs = d.u64()? as i64;
            let deadline = Time(d.u64()?);
            let lease = Lease { ttl_secs, deadline, keys: BTreeSet::new() };
            if leases.insert(id, lease).is_some() {
                return Err(malformed("lease listed twice"));
            }
        }
        if d.left > 0 {
            return Err(malformed("trailing bytes"));
        }
        for (key, history) in &mvcc.keys {
            let current = history.last().expect("checked: histories are non-empty");
            // A key on a missing lease is caught by the check below.
            if !current.is_tombstone()
                && let Some(lease) = leases.get_mut(&current.lease)
            {
                lease.keys.insert(key.clone());
            }
        }
        let store = KvStore { config, mvcc, leases: Leases::from_parts(leases) };
        store.check().map_err(malformed)?;
        Ok(store)
    }
}

/// The encoding buffer of [`KvStore::write_snapshot`] and where it goes.
struct Chunked<'w, W: io::Write + ?Sized> {
    buf: BytesMut,
    w: &'w mut W,
    /// Bytes handed to `w` so far.
    len: u64,
}

impl<W: io::Write + ?Sized> Chunked<'_, W> {
    /// Hands the buffer over once it holds a chunk.
    fn spill(&mut self) -> io::Result<()> {
        if self.buf.len() >= SNAPSHOT_CHUNK_BYTES { self.drain() } else { Ok(()) }
    }

    fn drain(&mut self) -> io::Result<()> {
        self.w.write_all(&self.buf)?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> io::Result<u64> {
        self.drain()?;
        Ok(self.len)
    }
}

/// The snapshot's bytes as [`KvStore::read_snapshot`] decodes them: the
/// same primitives as [`codec`](crate::codec)'s decoder, read from a stream
/// with `left` bytes to go (a length is never trusted beyond them).
struct Source<R: io::Read> {
    r: io::BufReader<R>,
    left: u64,
}

impl<R: io::Read> Source<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), KvError> {
        if (buf.len() as u64) > self.left {
            return Err(malformed("truncated"));
        }
        io::Read::read_exact(&mut self.r, buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => malformed("truncated"),
            _ => malformed(format!("reading: {e}")),
        })?;
        self.left -= buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, KvError> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, KvError> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A list length, bounded by the bytes left (each element takes ≥ 1).
    fn len(&mut self) -> Result<usize, KvError> {
        let n = self.u32()?;
        if u64::from(n) > self.left {
            return Err(malformed("length longer than the input"));
        }
        Ok(n as usize)
    }

    /// A length-prefixed byte string, in an allocation of its own.
    fn bytes(&mut self) -> Result<Bytes, KvError> {
        let n = self.len()?;
        let mut v = vec![0u8; n];
        self.fill(&mut v)?;
        Ok(Bytes::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CompactionRequest, DeleteRangeRequest, PutRequest};
    use crate::command::KvCommand;

    fn store(keys: usize) -> KvStore {
        let mut s = KvStore::new(KvConfig::default());
        for i in 0..keys {
            let op = KvCommand::Put(PutRequest {
                key: Bytes::from(format!("key{:06}", (i * 7919) % keys)),
                value: Bytes::from(vec![i as u8; 300]),
                ..PutRequest::default()
            })
            .encode();
            synod_core::StateMachine::apply(&mut s, i as u64 + 1, &op);
        }
        s
    }

    /// Counts the writes it gets and the largest.
    #[derive(Default)]
    struct Sink {
        bytes: Vec<u8>,
        writes: usize,
        largest: usize,
    }

    impl io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            self.largest = self.largest.max(buf.len());
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_streamed_snapshot_is_the_same_bytes_in_bounded_pieces() {
        let s = store(2000);
        let whole = s.snapshot();
        let mut sink = Sink::default();
        let n = s.write_snapshot(&mut sink).expect("write");
        assert_eq!(n, whole.len() as u64);
        assert_eq!(sink.bytes, whole, "the same bytes as the in-memory form");
        assert!(whole.len() > 8 * SNAPSHOT_CHUNK_BYTES, "the test spans many chunks");
        assert!(sink.writes >= whole.len() / (2 * SNAPSHOT_CHUNK_BYTES), "{}", sink.writes);
        assert!(sink.largest < SNAPSHOT_CHUNK_BYTES + 1024, "{} bytes at once", sink.largest);
    }

    #[test]
    fn a_snapshot_read_from_a_stream_is_the_store() {
        let s = store(500);
        let bytes = s.snapshot();
        // One byte per read call: nothing assumes a read fills its buffer.
        struct Trickle<'a>(&'a [u8]);
        impl io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some((&b, rest)) = self.0.split_first() else { return Ok(0) };
                if buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = b;
                self.0 = rest;
                Ok(1)
            }
        }
        let r = KvStore::read_snapshot(KvConfig::default(), Trickle(&bytes), bytes.len() as u64)
            .expect("restore");
        assert_eq!(r, s);
        // A stream with more bytes after the snapshot: only `len` are read.
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"next");
        let mut rest = &longer[..];
        let r = KvStore::read_snapshot(KvConfig::default(), &mut rest, bytes.len() as u64);
        assert_eq!(r.expect("restore"), s);
        // Too short a length, or a reader that fails, is an error.
        assert!(
            KvStore::read_snapshot(KvConfig::default(), &bytes[..], bytes.len() as u64 - 1)
                .is_err()
        );
        struct Broken;
        impl io::Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let e = KvStore::read_snapshot(KvConfig::default(), Broken, 100).expect_err("fails");
        assert!(e.to_string().contains("disk on fire"), "{e}");
    }

    #[test]
    fn a_copy_is_point_in_time_and_shares_histories_until_they_are_written() {
        let mut s = store(100);
        let copy = s.clone();
        let before = copy.snapshot();
        let shared = |a: &KvStore, b: &KvStore| {
            let pairs = a.mvcc.keys.values().zip(b.mvcc.keys.values());
            pairs.filter(|(x, y)| Arc::ptr_eq(x, y)).count()
        };
        assert_eq!(shared(&s, &copy), 100, "a copy shares every history");
        let apply = |s: &mut KvStore, index: u64, c: KvCommand| {
            synod_core::StateMachine::apply(s, index, &c.encode());
        };
        let key = |i: usize| Bytes::from(format!("key{i:06}"));
        let put =
            PutRequest { key: key(1), value: Bytes::from_static(b"new"), ..Default::default() };
        apply(&mut s, 101, KvCommand::Put(put));
        let del = DeleteRangeRequest { key: key(2), ..Default::default() };
        apply(&mut s, 102, KvCommand::DeleteRange(del));
        apply(&mut s, 103, KvCommand::Compact(CompactionRequest { revision: 50, physical: false }));
        assert_eq!(copy.snapshot(), before, "writes after the copy do not reach it");
        assert!(shared(&s, &copy) < 100, "written histories were copied");
        s.check().expect("the written store is consistent");
        let restored = KvStore::restore(KvConfig::default(), &s.snapshot()).expect("restore");
        assert_eq!(restored, s);
    }

    #[test]
    fn a_huge_claimed_length_reserves_little() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1i64.to_le_bytes());
        bytes.extend_from_slice(&(-1i64).to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        // Claims 4 billion keys in a 28-byte input, and the caller claims
        // an endless stream: it fails at the input's end having reserved
        // room for at most MAX_RESERVE keys.
        assert!(KvStore::read_snapshot(KvConfig::default(), &bytes[..], u64::MAX).is_err());
    }
}
