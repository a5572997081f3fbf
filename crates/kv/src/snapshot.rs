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

use crate::codec::{Decoder, Wire};
use crate::command::KvConfig;
use crate::error::KvError;
use crate::lease::{Lease, Leases};
use crate::mvcc::{Mvcc, Version};
use crate::store::KvStore;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use synod_core::Time;

const MAGIC: &[u8; 8] = b"SYNODKV1";

fn malformed(why: impl Into<String>) -> KvError {
    KvError::Malformed(format!("snapshot: {}", why.into()))
}

impl KvStore {
    /// The whole store as bytes (see the module doc for the layout).
    pub fn snapshot(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_slice(MAGIC);
        self.mvcc.current_revision.put(&mut out);
        self.mvcc.compact_revision.put(&mut out);
        out.put_u32_le(self.mvcc.keys.len() as u32);
        let mut number = BTreeMap::new();
        for (i, (key, history)) in self.mvcc.keys.iter().enumerate() {
            number.insert(key.clone(), i as u32);
            key.put(&mut out);
            out.put_u32_le(history.len() as u32);
            for v in history {
                v.mod_revision.put(&mut out);
                v.create_revision.put(&mut out);
                v.version.put(&mut out);
                v.lease.put(&mut out);
                v.value.put(&mut out);
            }
        }
        out.put_u32_le(self.mvcc.changes.len() as u32);
        for (rev, key) in &self.mvcc.changes {
            rev.put(&mut out);
            out.put_u32_le(number[key]);
        }
        out.put_u32_le(self.leases.by_id.len() as u32);
        for (id, lease) in &self.leases.by_id {
            id.put(&mut out);
            lease.ttl_secs.put(&mut out);
            lease.deadline.put(&mut out);
        }
        out.freeze()
    }

    /// Rebuilds a store from [`KvStore::snapshot`] bytes, checking that they
    /// describe a consistent store.
    pub fn restore(config: KvConfig, bytes: &[u8]) -> Result<KvStore, KvError> {
        let mut d = Decoder::new(bytes);
        let mut magic = [0u8; 8];
        for b in &mut magic {
            *b = d.u8()?;
        }
        if &magic != MAGIC {
            return Err(malformed("not a Synod kv snapshot"));
        }
        let mut mvcc = Mvcc {
            current_revision: i64::get(&mut d)?,
            compact_revision: i64::get(&mut d)?,
            keys: BTreeMap::new(),
            changes: VecDeque::new(),
        };
        let key_count = d.len()?;
        let mut keys = Vec::with_capacity(key_count);
        for _ in 0..key_count {
            let key = Bytes::get(&mut d)?;
            let n = d.len()?;
            let mut history = Vec::with_capacity(n);
            for _ in 0..n {
                history.push(Version {
                    mod_revision: Wire::get(&mut d)?,
                    create_revision: Wire::get(&mut d)?,
                    version: Wire::get(&mut d)?,
                    lease: Wire::get(&mut d)?,
                    value: Wire::get(&mut d)?,
                });
            }
            if keys.last().is_some_and(|prev| prev >= &key) {
                return Err(malformed("keys out of order"));
            }
            keys.push(key.clone());
            mvcc.keys.insert(key, history);
        }
        let change_count = d.len()?;
        for _ in 0..change_count {
            let rev = i64::get(&mut d)?;
            let i = d.u32()? as usize;
            let key = keys.get(i).ok_or_else(|| malformed("change names no key"))?;
            mvcc.changes.push_back((rev, key.clone()));
        }
        mvcc.check().map_err(malformed)?;
        let lease_count = d.len()?;
        let mut leases = BTreeMap::new();
        for _ in 0..lease_count {
            let id = i64::get(&mut d)?;
            let ttl_secs = i64::get(&mut d)?;
            let deadline = Time::get(&mut d)?;
            let lease = Lease { ttl_secs, deadline, keys: BTreeSet::new() };
            if leases.insert(id, lease).is_some() {
                return Err(malformed("lease listed twice"));
            }
        }
        d.finish()?;
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
