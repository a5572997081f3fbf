//! What goes through the log ([`KvCommand`]), what is served locally
//! ([`KvQuery`]), what comes back ([`KvResponse`]), and the checks etcd runs
//! on a request before proposing it.
//!
//! Time enters only as a `now` the leader stamps into a command (lease grant,
//! keep-alive, expiry, promote, ordered time-to-live) or a reader passes
//! into a query: applying a command never reads a clock, so every replica
//! computes the same state. A protocol that agrees on time (PBFT) applies
//! lease commands at the agreed time instead ([`KvCommand::at_agreed_time`],
//! [`crate::KvStore::apply_at`]).

use crate::api::*;
use crate::error::KvError;
use crate::range::KeyRange;
use bytes::Bytes;
use std::collections::BTreeSet;
use synod_core::Time;

/// Deepest txn nesting accepted (a Synod bound; etcd has none, but the
/// store recurses over it). Deeper txns are refused with
/// [`KvError::TooManyOps`].
pub const MAX_TXN_DEPTH: usize = 32;

/// Limits every replica must agree on (etcd's server flags and defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvConfig {
    /// `--max-txn-ops`: most compares, success ops or failure ops per txn
    /// level (default 128).
    pub max_txn_ops: usize,
    /// `--max-request-bytes`: largest encoded command (default 1.5 MiB).
    pub max_request_bytes: usize,
    /// Shortest lease TTL in seconds; shorter grants are raised to it
    /// (etcd: ceil(1.5 × election timeout) = 2 s by default).
    pub min_lease_ttl_secs: i64,
}

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig { max_txn_ops: 128, max_request_bytes: 1536 * 1024, min_lease_ttl_secs: 2 }
    }
}

/// A write (or a read the service chose to order through the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvCommand {
    /// `KV.Range` through the log (a "log read"; changes nothing).
    Range(RangeRequest),
    /// `KV.Put`.
    Put(PutRequest),
    /// `KV.DeleteRange`.
    DeleteRange(DeleteRangeRequest),
    /// `KV.Txn`.
    Txn(TxnRequest),
    /// `KV.Compact`.
    Compact(CompactionRequest),
    /// `Lease.LeaseGrant`; the lease expires `ttl` seconds after `now`.
    LeaseGrant {
        /// The request.
        request: LeaseGrantRequest,
        /// The proposing leader's clock.
        now: Time,
    },
    /// `Lease.LeaseRevoke`: deletes the attached keys in one revision.
    LeaseRevoke(LeaseRevokeRequest),
    /// One `Lease.LeaseKeepAlive` message: restarts the TTL from `now`.
    LeaseKeepAlive {
        /// The request.
        request: LeaseKeepAliveRequest,
        /// The proposing leader's clock.
        now: Time,
    },
    /// The leader found these leases expired at `now` ([`crate::KvStore::expired_leases`]).
    /// Each one still expired at `now` when applied (a keep-alive may have
    /// been ordered first) is revoked, each in its own revision, as etcd's
    /// leader proposes one revoke per lease.
    LeaseExpire {
        /// The leases, in the order to revoke them.
        ids: Vec<i64>,
        /// The proposing leader's clock.
        now: Time,
    },
    /// A new leader took office: every lease's TTL restarts from `now`
    /// (etcd's `lessor.Promote`).
    LeasePromote {
        /// The new leader's clock.
        now: Time,
    },
    /// The changes on `[key, range_end)` from `start_revision` on (0: from
    /// the next revision), ordered through the log like `Range` and
    /// changing nothing: a PBFT client's watch. Every replica answers the
    /// same batch at the same position, so f+1 matching answers vouch for
    /// it. At most [`MAX_EVENTS_PER_COMMAND`] events and about
    /// [`MAX_EVENT_BYTES_PER_COMMAND`] bytes (a revision is never split); a start below the compaction revision is answered with no
    /// events and the compaction revision, as etcd cancels such a watch.
    Events {
        /// First key.
        key: Bytes,
        /// Exclusive end (etcd's conventions; empty: `key` alone).
        range_end: Bytes,
        /// First revision wanted (0: the next one).
        start_revision: i64,
        /// About this many events at most (capped at
        /// [`MAX_EVENTS_PER_COMMAND`]).
        max_events: u64,
    },
    /// `Lease.LeaseTimeToLive` ordered through the log like `Range`
    /// (changes nothing), remaining time measured at `now`: a PBFT
    /// client's TimeToLive, answered identically by every replica because
    /// `now` is the batch's agreed time there.
    LeaseTimeToLive {
        /// The request.
        request: LeaseTimeToLiveRequest,
        /// The proposer's clock (replaced by the agreed time on PBFT).
        now: Time,
    },
    /// `Lease.LeaseLeases` ordered through the log like `Range` (changes
    /// nothing): a PBFT client's lease list, which every correct replica
    /// answers identically because it answers at the same position.
    LeaseLeases(LeaseLeasesRequest),
}

/// Events answered to one [`KvCommand::Events`], at most (about: a revision
/// is never split).
pub const MAX_EVENTS_PER_COMMAND: u64 = 256;
/// Bytes of keys and values answered to one [`KvCommand::Events`], about
/// (the revision that passes it is the last one answered).
pub const MAX_EVENT_BYTES_PER_COMMAND: usize = 1 << 20;

/// A read served from one replica's state (after a read barrier for a
/// linearizable read, or directly for a serializable one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvQuery {
    /// `KV.Range`.
    Range(RangeRequest),
    /// `Lease.LeaseTimeToLive`; remaining time is measured at `now`.
    LeaseTimeToLive {
        /// The request.
        request: LeaseTimeToLiveRequest,
        /// The reader's clock (meaningful on the leader, whose clock set the
        /// deadlines).
        now: Time,
    },
    /// `Lease.LeaseLeases`.
    LeaseLeases(LeaseLeasesRequest),
    /// The changes on `(key, range_end)` from `start_revision` on, at most
    /// about `max_events` ([`crate::KvStore::events_since`]): what a watch
    /// hub feeds watchers from.
    Events {
        /// First key.
        key: Bytes,
        /// Exclusive end (etcd's conventions).
        range_end: Bytes,
        /// First revision wanted.
        start_revision: i64,
        /// About this many events at most (a revision is never split).
        max_events: u64,
    },
    /// The leases expired at `now`, earliest first, at most `max`
    /// ([`crate::KvStore::expired_leases`]).
    ExpiredLeases {
        /// The leader's clock.
        now: Time,
        /// Most ids answered.
        max: u64,
    },
    /// `Maintenance.HashKV` at `revision` (0: the current one;
    /// [`crate::KvStore::hash_kv`]).
    HashKv {
        /// The revision to hash up to.
        revision: i64,
    },
}

/// The answer to [`KvQuery::Events`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventsResponse {
    /// `revision` is the current store revision.
    pub header: ResponseHeader,
    /// The store's compaction revision; when it is above the requested
    /// start revision the history is gone and `events` is empty.
    pub compact_revision: i64,
    /// The events, in revision order.
    pub events: Vec<Event>,
    /// The revision to ask from next.
    pub next_revision: i64,
}

/// What the leader learns from a [`KvCommand::LeaseExpire`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseExpireResponse {
    /// `revision` is the store revision afterwards.
    pub header: ResponseHeader,
    /// The leases revoked (the others were kept alive or already gone).
    pub revoked: Vec<i64>,
}

/// The answer to a [`KvCommand`] or [`KvQuery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResponse {
    /// To `Range`.
    Range(RangeResponse),
    /// To `Put`.
    Put(PutResponse),
    /// To `DeleteRange`.
    DeleteRange(DeleteRangeResponse),
    /// To `Txn`.
    Txn(TxnResponse),
    /// To `Compact`.
    Compact(CompactionResponse),
    /// To `LeaseGrant`.
    LeaseGrant(LeaseGrantResponse),
    /// To `LeaseRevoke`.
    LeaseRevoke(LeaseRevokeResponse),
    /// To `LeaseKeepAlive`.
    LeaseKeepAlive(LeaseKeepAliveResponse),
    /// To `LeaseExpire`.
    LeaseExpire(LeaseExpireResponse),
    /// To `LeasePromote` (`revision` is the current store revision).
    LeasePromote(ResponseHeader),
    /// To `LeaseTimeToLive`.
    LeaseTimeToLive(LeaseTimeToLiveResponse),
    /// To `LeaseLeases`.
    LeaseLeases(LeaseLeasesResponse),
    /// To [`KvQuery::Events`].
    Events(EventsResponse),
    /// To [`KvQuery::ExpiredLeases`]: the lease ids.
    ExpiredLeases(Vec<i64>),
    /// To [`KvQuery::HashKv`].
    HashKv(crate::hash::HashKvResponse),
}

/// etcd's `checkRangeRequest`.
pub fn check_range(r: &RangeRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkPutRequest`.
pub fn check_put(p: &PutRequest) -> Result<(), KvError> {
    if p.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

/// etcd's `checkDeleteRequest`.
pub fn check_delete(d: &DeleteRangeRequest) -> Result<(), KvError> {
    if d.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` (op counts, keys, each op, recursively) followed
/// by its duplicate-key check on each branch.
///
/// The duplicate check is slightly stricter than etcd's `checkIntervals`:
/// it also refuses a put under a `"\0"` (from-key) delete and a nested txn
/// that deletes a key an earlier sibling txn puts. etcd accepts those and
/// writes the key twice in one revision; this store keeps one version per
/// key per revision and answers [`KvError::DuplicateKey`] instead.
pub fn check_txn(t: &TxnRequest, max_txn_ops: usize) -> Result<(), KvError> {
    check_txn_request(t, max_txn_ops, 0)?;
    check_writes(&t.success)?;
    check_writes(&t.failure)?;
    Ok(())
}

fn check_txn_request(t: &TxnRequest, max_txn_ops: usize, depth: usize) -> Result<(), KvError> {
    let ops = t.compare.len().max(t.success.len()).max(t.failure.len());
    if ops > max_txn_ops || depth >= MAX_TXN_DEPTH {
        return Err(KvError::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(KvError::EmptyKey);
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Range(r) => check_range(r)?,
            RequestOp::Put(p) => check_put(p)?,
            RequestOp::DeleteRange(d) => check_delete(d)?,
            RequestOp::Txn(nested) => check_txn_request(nested, max_txn_ops, depth + 1)?,
        }
    }
    Ok(())
}

/// The keys one op list may write: point puts and deleted ranges.
#[derive(Default)]
struct Writes {
    puts: BTreeSet<Bytes>,
    dels: Vec<(Bytes, Bytes)>,
}

impl Writes {
    fn deletes(&self, key: &[u8]) -> bool {
        self.dels.iter().any(|(k, end)| KeyRange::new(k, end).contains(key))
    }

    /// Refuses `other` if it writes a key `self` writes (two deletes of one
    /// key are fine: the second finds it gone).
    fn merge(&mut self, other: Writes) -> Result<(), KvError> {
        if other.puts.iter().any(|k| self.puts.contains(k) || self.deletes(k))
            || self.puts.iter().any(|k| other.deletes(k))
        {
            return Err(KvError::DuplicateKey);
        }
        self.puts.extend(other.puts);
        self.dels.extend(other.dels);
        Ok(())
    }
}

/// What an op list may write; an error if two of its ops write one key. A
/// nested txn may write what either branch writes (only one runs, so its
/// branches may overlap each other).
fn check_writes(ops: &[RequestOp]) -> Result<Writes, KvError> {
    let mut acc = Writes::default();
    for op in ops {
        let mut w = Writes::default();
        match op {
            RequestOp::Range(_) => continue,
            RequestOp::Put(p) => {
                w.puts.insert(p.key.clone());
            }
            RequestOp::DeleteRange(d) => w.dels.push((d.key.clone(), d.range_end.clone())),
            RequestOp::Txn(t) => {
                let then = check_writes(&t.success)?;
                let otherwise = check_writes(&t.failure)?;
                w.puts = then.puts.into_iter().chain(otherwise.puts).collect();
                w.dels = then.dels.into_iter().chain(otherwise.dels).collect();
            }
        }
        acc.merge(w)?;
    }
    Ok(acc)
}

impl KvCommand {
    /// This command with every `now` it carries replaced by `agreed`: how a
    /// protocol that agrees on time (PBFT's batch timestamps) executes
    /// lease commands, so that no proposer's clock enters the state.
    /// Commands without a `now` are unchanged.
    pub fn at_agreed_time(mut self, agreed: Time) -> KvCommand {
        match &mut self {
            KvCommand::LeaseGrant { now, .. }
            | KvCommand::LeaseKeepAlive { now, .. }
            | KvCommand::LeaseExpire { now, .. }
            | KvCommand::LeasePromote { now }
            | KvCommand::LeaseTimeToLive { now, .. } => *now = agreed,
            KvCommand::Range(_)
            | KvCommand::Put(_)
            | KvCommand::DeleteRange(_)
            | KvCommand::Txn(_)
            | KvCommand::Compact(_)
            | KvCommand::LeaseRevoke(_)
            | KvCommand::LeaseLeases(_)
            | KvCommand::Events { .. } => {}
        }
        self
    }

    /// The checks etcd's gRPC layer runs before proposing (empty keys,
    /// `ignore_*` conflicts, txn op counts and duplicate keys). The store
    /// runs them again when applying, so a command that skipped them is
    /// still refused identically on every replica.
    pub fn validate(&self, config: &KvConfig) -> Result<(), KvError> {
        match self {
            KvCommand::Range(r) => check_range(r),
            KvCommand::Put(p) => check_put(p),
            KvCommand::DeleteRange(d) => check_delete(d),
            KvCommand::Txn(t) => check_txn(t, config.max_txn_ops),
            KvCommand::Compact(_)
            | KvCommand::LeaseGrant { .. }
            | KvCommand::LeaseRevoke(_)
            | KvCommand::LeaseKeepAlive { .. }
            | KvCommand::LeaseExpire { .. }
            | KvCommand::LeasePromote { .. }
            | KvCommand::LeaseTimeToLive { .. }
            | KvCommand::LeaseLeases(_) => Ok(()),
            KvCommand::Events { key, start_revision, .. } => {
                if key.is_empty() {
                    Err(KvError::EmptyKey)
                } else if *start_revision < 0 {
                    Err(KvError::Malformed("negative start revision".into()))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Validates and encodes the command for proposing, refusing it with
    /// [`KvError::RequestTooLarge`] when the encoding exceeds
    /// [`KvConfig::max_request_bytes`] (etcd checks the marshalled request).
    pub fn encode_checked(&self, config: &KvConfig) -> Result<Bytes, KvError> {
        self.validate(config)?;
        let bytes = self.encode();
        if bytes.len() > config.max_request_bytes {
            return Err(KvError::RequestTooLarge);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn put(k: &str) -> RequestOp {
        RequestOp::Put(PutRequest { key: b(k), value: b("v"), ..PutRequest::default() })
    }

    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest { key: b(k), range_end: b(end), prev_kv: false })
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest { compare: vec![], success, failure }
    }

    #[test]
    fn duplicate_keys_are_refused_as_etcd_does() {
        let dup = |t: TxnRequest| check_txn(&t, 128);
        assert_eq!(dup(txn(vec![put("a"), put("a")], vec![])), Err(KvError::DuplicateKey));
        assert_eq!(dup(txn(vec![put("b"), del("a", "c")], vec![])), Err(KvError::DuplicateKey));
        assert_eq!(dup(txn(vec![put("a")], vec![put("a")])), Ok(()), "branches are exclusive");
        let nested = RequestOp::Txn(txn(vec![put("a")], vec![put("a")]));
        assert_eq!(dup(txn(vec![nested.clone()], vec![])), Ok(()));
        assert_eq!(dup(txn(vec![nested, put("a")], vec![])), Err(KvError::DuplicateKey));
        assert_eq!(dup(txn(vec![del("a", "c"), del("b", "d")], vec![])), Ok(()));
        // Stricter than etcd: a from-key delete covers later keys.
        assert_eq!(dup(txn(vec![put("z"), del("a", "\0")], vec![])), Err(KvError::DuplicateKey));
    }

    #[test]
    fn too_many_ops_counts_each_list_separately() {
        let t = txn((0..129).map(|i| put(&format!("k{i}"))).collect(), vec![]);
        assert_eq!(check_txn(&t, 128), Err(KvError::TooManyOps));
        let t = txn((0..128).map(|i| put(&format!("k{i}"))).collect(), vec![put("x")]);
        assert_eq!(check_txn(&t, 128), Ok(()));
        let mut deep = txn(vec![], vec![]);
        for _ in 0..MAX_TXN_DEPTH {
            deep = txn(vec![RequestOp::Txn(deep)], vec![]);
        }
        assert_eq!(check_txn(&deep, 128), Err(KvError::TooManyOps));
    }

    #[test]
    fn request_checks_mirror_etcd() {
        assert_eq!(check_put(&PutRequest::default()), Err(KvError::EmptyKey));
        let p = PutRequest { key: b("k"), value: b("v"), ignore_value: true, ..Default::default() };
        assert_eq!(check_put(&p), Err(KvError::ValueProvided));
        let p = PutRequest { key: b("k"), lease: 5, ignore_lease: true, ..Default::default() };
        assert_eq!(check_put(&p), Err(KvError::LeaseProvided));
        let t = TxnRequest { compare: vec![Compare::default()], ..Default::default() };
        assert_eq!(check_txn(&t, 128), Err(KvError::EmptyKey));
        let big = KvCommand::Put(PutRequest {
            key: b("k"),
            value: Bytes::from(vec![0u8; 1536 * 1024]),
            ..Default::default()
        });
        assert_eq!(big.encode_checked(&KvConfig::default()), Err(KvError::RequestTooLarge));
    }
}
