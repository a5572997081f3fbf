//! Plain Rust mirrors of etcd v3's request and response messages
//! (`etcdserverpb` in `rpc.proto`, `mvccpb` in `kv.proto`, etcd 3.4).
//!
//! Field names are prost's snake_case names for the proto fields (`TTL` is
//! `ttl`, `ID` is `id`), so the gRPC layer maps them one to one. Where the
//! proto has an `int32` enum the mirror is a Rust enum; the gRPC layer turns
//! an unknown number into [`KvError::InvalidSortOption`](crate::KvError) (for
//! sorts) as etcd does. Only what the state machine needs is here: no auth,
//! cluster or maintenance messages.

use bytes::Bytes;

/// `etcdserverpb.ResponseHeader`. The store fills `revision`; the service
/// fills `cluster_id`, `member_id` and `raft_term`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The id of the cluster that answered.
    pub cluster_id: u64,
    /// The id of the member that answered.
    pub member_id: u64,
    /// The store revision when the request was applied (see each response).
    pub revision: i64,
    /// The term (ballot, view) of the member that answered.
    pub raft_term: u64,
}

impl ResponseHeader {
    /// A header carrying only a store revision.
    pub fn at(revision: i64) -> ResponseHeader {
        ResponseHeader { revision, ..ResponseHeader::default() }
    }
}

/// `mvccpb.KeyValue`: one key at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key (never empty).
    pub key: Bytes,
    /// The revision of the key's last creation.
    pub create_revision: i64,
    /// The revision of the key's last modification.
    pub mod_revision: i64,
    /// 1 on creation, +1 per put; a deletion resets it to 0.
    pub version: i64,
    /// The value (empty with `keys_only`).
    pub value: Bytes,
    /// The attached lease, 0 for none.
    pub lease: i64,
}

/// `mvccpb.Event.EventType`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A put (creation when `kv.version == 1`).
    #[default]
    Put = 0,
    /// A deletion; `kv` holds only the key and `mod_revision`.
    Delete = 1,
}

/// `mvccpb.Event`: one change to one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub r#type: EventType,
    /// The key after the change (for a delete: key and `mod_revision` only,
    /// as etcd sends it).
    pub kv: KeyValue,
    /// The key before the change, when it existed and is not compacted.
    pub prev_kv: Option<KeyValue>,
}

/// `RangeRequest.SortOrder`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SortOrder {
    /// No sorting (key order, unless a non-key target is given).
    #[default]
    None = 0,
    /// Lowest first.
    Ascend = 1,
    /// Highest first.
    Descend = 2,
}

/// `RangeRequest.SortTarget`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SortTarget {
    /// By key.
    #[default]
    Key = 0,
    /// By version.
    Version = 1,
    /// By create revision.
    Create = 2,
    /// By mod revision.
    Mod = 3,
    /// By value bytes.
    Value = 4,
}

/// `etcdserverpb.RangeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// The first key (or the only key when `range_end` is empty).
    pub key: Bytes,
    /// Exclusive end; empty for the single `key`; `"\0"` for all keys ≥ `key`.
    pub range_end: Bytes,
    /// At most this many kvs (0: no limit); `more` tells whether there were more.
    pub limit: i64,
    /// Read at this revision (≤ 0: the current one).
    pub revision: i64,
    /// Sort order.
    pub sort_order: SortOrder,
    /// Sort target.
    pub sort_target: SortTarget,
    /// Serve locally without a read barrier (the service's concern).
    pub serializable: bool,
    /// Leave values out.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Drop kvs with a lower mod revision (0: no filter).
    pub min_mod_revision: i64,
    /// Drop kvs with a higher mod revision (0: no filter).
    pub max_mod_revision: i64,
    /// Drop kvs with a lower create revision (0: no filter).
    pub min_create_revision: i64,
    /// Drop kvs with a higher create revision (0: no filter).
    pub max_create_revision: i64,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// `revision` is the current store revision (also for historical reads).
    pub header: ResponseHeader,
    /// The kvs, after filters, sorting and the limit.
    pub kvs: Vec<KeyValue>,
    /// True when the limit cut the result.
    pub more: bool,
    /// The number of keys in the range at the read revision (before the
    /// revision filters and the limit, as etcd counts).
    pub count: i64,
}

/// `etcdserverpb.PutRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// The lease to attach (0: none, which detaches any current lease).
    pub lease: i64,
    /// Return the previous kv.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist; `value` must be empty).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist; `lease` must be 0).
    pub ignore_lease: bool,
}

/// `etcdserverpb.PutResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// `revision` is the put's revision.
    pub header: ResponseHeader,
    /// The previous kv, if asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// `etcdserverpb.DeleteRangeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    /// The first key (or the only key when `range_end` is empty).
    pub key: Bytes,
    /// Exclusive end, with [`RangeRequest::range_end`]'s conventions.
    pub range_end: Bytes,
    /// Return the deleted kvs.
    pub prev_kv: bool,
}

/// `etcdserverpb.DeleteRangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    /// `revision` is the delete's revision, or the current one if nothing
    /// was deleted.
    pub header: ResponseHeader,
    /// How many keys were deleted.
    pub deleted: i64,
    /// The deleted kvs, if asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// `etcdserverpb.RequestOp`: one operation of a txn branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    /// A read.
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested txn (etcd ≥ 3.3).
    Txn(TxnRequest),
}

/// `etcdserverpb.ResponseOp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    /// The answer to a [`RequestOp::Range`].
    Range(RangeResponse),
    /// The answer to a [`RequestOp::Put`].
    Put(PutResponse),
    /// The answer to a [`RequestOp::DeleteRange`].
    DeleteRange(DeleteRangeResponse),
    /// The answer to a [`RequestOp::Txn`].
    Txn(TxnResponse),
}

/// `Compare.CompareResult`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CompareResult {
    /// `==`.
    #[default]
    Equal = 0,
    /// `>`.
    Greater = 1,
    /// `<`.
    Less = 2,
    /// `!=`.
    NotEqual = 3,
}

/// `Compare.CompareTarget`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CompareTarget {
    /// The key's version.
    #[default]
    Version = 0,
    /// The key's create revision.
    Create = 1,
    /// The key's mod revision.
    Mod = 2,
    /// The key's value.
    Value = 3,
    /// The key's lease.
    Lease = 4,
}

/// `Compare.target_union`: the operand. If it does not match `target`, etcd
/// compares against 0 (or the empty value), and so does this store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTargetUnion {
    /// Operand for [`CompareTarget::Version`].
    Version(i64),
    /// Operand for [`CompareTarget::Create`].
    CreateRevision(i64),
    /// Operand for [`CompareTarget::Mod`].
    ModRevision(i64),
    /// Operand for [`CompareTarget::Value`].
    Value(Bytes),
    /// Operand for [`CompareTarget::Lease`].
    Lease(i64),
}

/// `etcdserverpb.Compare`: one guard of a txn. Over a range, every key must
/// satisfy it; a missing key has version, revisions and lease 0, and a
/// value compare on a missing key is false.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compare {
    /// The relation.
    pub result: CompareResult,
    /// What is compared.
    pub target: CompareTarget,
    /// The key (or first key of the range).
    pub key: Bytes,
    /// The operand.
    pub target_union: Option<CompareTargetUnion>,
    /// Exclusive end, with [`RangeRequest::range_end`]'s conventions.
    pub range_end: Bytes,
}

/// `etcdserverpb.TxnRequest`: if every compare holds, `success`, else
/// `failure`; all writes share one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    /// The guards.
    pub compare: Vec<Compare>,
    /// Ops when all guards hold.
    pub success: Vec<RequestOp>,
    /// Ops otherwise.
    pub failure: Vec<RequestOp>,
}

/// `etcdserverpb.TxnResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// `revision` is the txn's revision (the current one if it wrote nothing).
    pub header: ResponseHeader,
    /// Whether the compares held.
    pub succeeded: bool,
    /// One answer per op of the branch taken.
    pub responses: Vec<ResponseOp>,
}

/// `etcdserverpb.CompactionRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionRequest {
    /// Discard history at and below this revision (the newest version of each
    /// live key survives).
    pub revision: i64,
    /// Wait for the backend (no effect here: compaction is immediate).
    pub physical: bool,
}

/// `etcdserverpb.CompactionResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionResponse {
    /// `revision` is the current store revision.
    pub header: ResponseHeader,
}

/// `etcdserverpb.LeaseGrantRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseGrantRequest {
    /// Requested TTL in seconds (raised to the minimum TTL).
    pub ttl: i64,
    /// The lease id; 0 lets the store choose one.
    pub id: i64,
}

/// `etcdserverpb.LeaseGrantResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseGrantResponse {
    /// `revision` is the current store revision.
    pub header: ResponseHeader,
    /// The lease id.
    pub id: i64,
    /// The granted TTL in seconds.
    pub ttl: i64,
    /// Unused by etcd 3.4 (always empty).
    pub error: String,
}

/// `etcdserverpb.LeaseRevokeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRevokeRequest {
    /// The lease.
    pub id: i64,
}

/// `etcdserverpb.LeaseRevokeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRevokeResponse {
    /// `revision` is the store revision after the attached keys were deleted.
    pub header: ResponseHeader,
}

/// `etcdserverpb.LeaseKeepAliveRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseKeepAliveRequest {
    /// The lease.
    pub id: i64,
}

/// `etcdserverpb.LeaseKeepAliveResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseKeepAliveResponse {
    /// `revision` is the current store revision.
    pub header: ResponseHeader,
    /// The lease.
    pub id: i64,
    /// The renewed TTL in seconds (etcd's stream answers 0 for an unknown
    /// lease; the store answers [`KvError::LeaseNotFound`](crate::KvError)
    /// and the service maps it).
    pub ttl: i64,
}

/// `etcdserverpb.LeaseTimeToLiveRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTimeToLiveRequest {
    /// The lease.
    pub id: i64,
    /// Also list the attached keys.
    pub keys: bool,
}

/// `etcdserverpb.LeaseTimeToLiveResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTimeToLiveResponse {
    /// `revision` is the current store revision.
    pub header: ResponseHeader,
    /// The lease.
    pub id: i64,
    /// Remaining seconds, truncated (etcd's `int64(Remaining().Seconds())`).
    /// etcd's service answers -1 for an unknown lease; the store answers
    /// [`KvError::LeaseNotFound`](crate::KvError) and the service maps it.
    pub ttl: i64,
    /// The TTL granted (or last refreshed with).
    pub granted_ttl: i64,
    /// The attached keys, in key order, when asked for.
    pub keys: Vec<Bytes>,
}

/// `etcdserverpb.LeaseLeasesRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseLeasesRequest {}

/// `etcdserverpb.LeaseStatus`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The lease id.
    pub id: i64,
}

/// `etcdserverpb.LeaseLeasesResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseLeasesResponse {
    /// `revision` is the current store revision.
    pub header: ResponseHeader,
    /// Every live lease, by id.
    pub leases: Vec<LeaseStatus>,
}

impl RequestOp {
    /// True for puts, deletes, and txns that contain either in any branch
    /// (etcd's `!isTxnReadonly`).
    pub fn is_write(&self) -> bool {
        match self {
            RequestOp::Range(_) => false,
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => true,
            RequestOp::Txn(t) => !t.is_read_only(),
        }
    }
}

impl TxnRequest {
    /// True when no branch, at any depth, holds a put or delete.
    pub fn is_read_only(&self) -> bool {
        !self.success.iter().chain(&self.failure).any(RequestOp::is_write)
    }
}
