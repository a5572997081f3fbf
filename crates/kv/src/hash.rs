//! `Maintenance.HashKV`: a checksum of the multi-version key space up to a
//! revision, for comparing replicas (etcd's corruption check).
//!
//! The hash is CRC-32C over every held version with `mod_revision` ≤ the
//! hash revision, key by key in key order, each as its key, mod and create
//! revisions, version (0: a tombstone), lease and value, each field
//! length-prefixed or fixed-width so that no two histories encode alike.
//! It depends only on the replicated history, so every replica that applied
//! the same log computes the same hash for the same revision and compaction
//! revision; later writes never change the hash of an earlier revision, a
//! compaction may (etcd reports the compaction revision beside the hash for
//! this reason). The value differs from etcd's own (which hashes its bbolt
//! encoding): it is only comparable between Synod members.

use crate::api::ResponseHeader;
use crate::error::KvError;
use crate::store::KvStore;

/// The answer to [`KvQuery::HashKv`](crate::KvQuery::HashKv).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HashKvResponse {
    /// `revision` is the current store revision.
    pub header: ResponseHeader,
    /// CRC-32C of the history up to `hash_revision`.
    pub hash: u32,
    /// The store's compaction revision (-1: never compacted).
    pub compact_revision: i64,
    /// The revision hashed (the current one when 0 was asked).
    pub hash_revision: i64,
}

impl KvStore {
    /// etcd's `HashKV` at `revision` (0: the current revision). Below the
    /// compaction revision is [`KvError::Compacted`]; above the current one
    /// [`KvError::FutureRevision`].
    pub fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, KvError> {
        let current = self.current_revision();
        if revision > current {
            return Err(KvError::FutureRevision);
        }
        if revision > 0 && revision < self.mvcc.compact_revision {
            return Err(KvError::Compacted);
        }
        let hash_revision = if revision <= 0 { current } else { revision };
        let mut crc = 0u32;
        for (key, history) in &self.mvcc.keys {
            for v in history.iter().take_while(|v| v.mod_revision <= hash_revision) {
                crc = crc32c::crc32c_append(crc, &(key.len() as u64).to_le_bytes());
                crc = crc32c::crc32c_append(crc, key);
                for field in [v.mod_revision, v.create_revision, v.version, v.lease] {
                    crc = crc32c::crc32c_append(crc, &field.to_le_bytes());
                }
                crc = crc32c::crc32c_append(crc, &(v.value.len() as u64).to_le_bytes());
                crc = crc32c::crc32c_append(crc, &v.value);
            }
        }
        Ok(HashKvResponse {
            header: ResponseHeader::at(current),
            hash: crc,
            compact_revision: self.mvcc.compact_revision,
            hash_revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::api::{CompactionRequest, DeleteRangeRequest, PutRequest};
    use crate::command::{KvCommand, KvConfig};
    use crate::error::KvError;
    use crate::store::KvStore;
    use bytes::Bytes;

    fn put(s: &mut KvStore, index: u64, k: &str, v: &str) {
        let p = PutRequest {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
            ..PutRequest::default()
        };
        s.apply_command(index, &KvCommand::Put(p)).response.expect("put");
    }

    fn store_with_history() -> KvStore {
        let mut s = KvStore::new(KvConfig::default());
        put(&mut s, 1, "a", "1"); // rev 2
        put(&mut s, 2, "b", "1"); // rev 3
        put(&mut s, 3, "a", "2"); // rev 4
        let d = DeleteRangeRequest { key: Bytes::from_static(b"b"), ..Default::default() };
        s.apply_command(4, &KvCommand::DeleteRange(d)).response.expect("delete"); // rev 5
        s
    }

    #[test]
    fn replicas_with_the_same_history_agree_and_later_writes_keep_old_hashes() {
        let a = store_with_history();
        let mut b = store_with_history();
        for rev in 0..=5 {
            assert_eq!(a.hash_kv(rev), b.hash_kv(rev), "revision {rev}");
        }
        let at4 = a.hash_kv(4).expect("hash");
        assert_eq!(at4.hash_revision, 4);
        assert_eq!(at4.compact_revision, -1);
        assert_eq!(a.hash_kv(0).expect("hash").hash_revision, 5);
        put(&mut b, 5, "c", "1");
        assert_eq!(b.hash_kv(4).expect("hash").hash, at4.hash, "a later write changed rev 4");
        assert_ne!(b.hash_kv(6).expect("hash").hash, b.hash_kv(5).expect("hash").hash);
        // Restored from its snapshot, the store hashes the same.
        let restored = KvStore::restore(KvConfig::default(), &b.snapshot()).expect("restore");
        assert_eq!(restored.hash_kv(0), b.hash_kv(0));
        // The query answers what hash_kv does (header at b's revision 6).
        let via_query = b.query(&crate::KvQuery::HashKv { revision: 4 });
        assert_eq!(via_query, Ok(crate::KvResponse::HashKv(b.hash_kv(4).expect("hash"))));
        assert!(matches!(via_query, Ok(crate::KvResponse::HashKv(r)) if r.hash == at4.hash));
    }

    #[test]
    fn different_values_or_tombstones_give_different_hashes() {
        let a = store_with_history();
        let mut other = KvStore::new(KvConfig::default());
        put(&mut other, 1, "a", "1");
        put(&mut other, 2, "b", "1");
        put(&mut other, 3, "a", "X");
        assert_ne!(a.hash_kv(4).expect("hash").hash, other.hash_kv(4).expect("hash").hash);
        // Same keys, but "b" not deleted: rev 5 differs from a's tombstone.
        put(&mut other, 4, "c", "1");
        assert_ne!(a.hash_kv(5).expect("hash").hash, other.hash_kv(5).expect("hash").hash);
    }

    #[test]
    fn future_and_compacted_revisions_are_etcds_errors() {
        let mut s = store_with_history();
        assert_eq!(s.hash_kv(6), Err(KvError::FutureRevision));
        let c = CompactionRequest { revision: 4, physical: false };
        s.apply_command(5, &KvCommand::Compact(c)).response.expect("compact");
        assert_eq!(s.hash_kv(3), Err(KvError::Compacted));
        let h = s.hash_kv(4).expect("at the compaction revision");
        assert_eq!((h.compact_revision, h.hash_revision), (4, 4));
    }
}
