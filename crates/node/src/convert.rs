//! Conversions between etcd's protobuf messages ([`synod_etcdpb`]) and the
//! store's plain request and response types ([`synod_kv::api`]).
//!
//! Requests: an enum number etcd does not define is refused as etcd refuses
//! it (`etcdserver: invalid sort option` for sorts; a malformed request for
//! compares and empty txn ops). Responses: the store fills `revision`; the
//! service stamps `cluster_id`, `member_id` and `raft_term` on the top-level
//! header ([`HeaderStamp`]). Sub-responses of a txn carry only their
//! revision, as etcd's do.

use bytes::Bytes;
use synod_etcdpb::etcdserverpb as pb;
use synod_etcdpb::mvccpb;
use synod_kv::KvError;
use synod_kv::api;

/// What the service adds to a store header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderStamp {
    /// The cluster's id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
    /// The term (ballot, view) of this member.
    pub raft_term: u64,
}

impl HeaderStamp {
    /// A full header at store revision `revision`.
    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.raft_term,
        }
    }
}

fn b(v: Vec<u8>) -> Bytes {
    Bytes::from(v)
}

fn malformed(what: &str) -> KvError {
    KvError::Malformed(what.to_string())
}

/// `RangeRequest` → store request.
pub fn range_request(r: pb::RangeRequest) -> Result<api::RangeRequest, KvError> {
    let sort_order = match r.sort_order {
        0 => api::SortOrder::None,
        1 => api::SortOrder::Ascend,
        2 => api::SortOrder::Descend,
        _ => return Err(KvError::InvalidSortOption),
    };
    let sort_target = match r.sort_target {
        0 => api::SortTarget::Key,
        1 => api::SortTarget::Version,
        2 => api::SortTarget::Create,
        3 => api::SortTarget::Mod,
        4 => api::SortTarget::Value,
        _ => return Err(KvError::InvalidSortOption),
    };
    Ok(api::RangeRequest {
        key: b(r.key),
        range_end: b(r.range_end),
        limit: r.limit,
        revision: r.revision,
        sort_order,
        sort_target,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

/// `PutRequest` → store request.
pub fn put_request(p: pb::PutRequest) -> api::PutRequest {
    api::PutRequest {
        key: b(p.key),
        value: b(p.value),
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

/// `DeleteRangeRequest` → store request.
pub fn delete_request(d: pb::DeleteRangeRequest) -> api::DeleteRangeRequest {
    api::DeleteRangeRequest { key: b(d.key), range_end: b(d.range_end), prev_kv: d.prev_kv }
}

/// `CompactionRequest` → store request.
pub fn compact_request(c: pb::CompactionRequest) -> api::CompactionRequest {
    api::CompactionRequest { revision: c.revision, physical: c.physical }
}

fn compare(c: pb::Compare) -> Result<api::Compare, KvError> {
    use pb::compare::TargetUnion as U;
    let result = match c.result {
        0 => api::CompareResult::Equal,
        1 => api::CompareResult::Greater,
        2 => api::CompareResult::Less,
        3 => api::CompareResult::NotEqual,
        _ => return Err(malformed("unknown compare result")),
    };
    let target = match c.target {
        0 => api::CompareTarget::Version,
        1 => api::CompareTarget::Create,
        2 => api::CompareTarget::Mod,
        3 => api::CompareTarget::Value,
        4 => api::CompareTarget::Lease,
        _ => return Err(malformed("unknown compare target")),
    };
    let target_union = c.target_union.map(|u| match u {
        U::Version(v) => api::CompareTargetUnion::Version(v),
        U::CreateRevision(v) => api::CompareTargetUnion::CreateRevision(v),
        U::ModRevision(v) => api::CompareTargetUnion::ModRevision(v),
        U::Value(v) => api::CompareTargetUnion::Value(b(v)),
        U::Lease(v) => api::CompareTargetUnion::Lease(v),
    });
    Ok(api::Compare { result, target, key: b(c.key), target_union, range_end: b(c.range_end) })
}

fn request_op(op: pb::RequestOp) -> Result<api::RequestOp, KvError> {
    use pb::request_op::Request as R;
    Ok(match op.request.ok_or_else(|| malformed("empty txn operation"))? {
        R::RequestRange(r) => api::RequestOp::Range(range_request(r)?),
        R::RequestPut(p) => api::RequestOp::Put(put_request(p)),
        R::RequestDeleteRange(d) => api::RequestOp::DeleteRange(delete_request(d)),
        R::RequestTxn(t) => api::RequestOp::Txn(txn_request(t)?),
    })
}

/// `TxnRequest` → store request (nested txns included).
pub fn txn_request(t: pb::TxnRequest) -> Result<api::TxnRequest, KvError> {
    Ok(api::TxnRequest {
        compare: t.compare.into_iter().map(compare).collect::<Result<_, _>>()?,
        success: t.success.into_iter().map(request_op).collect::<Result<_, _>>()?,
        failure: t.failure.into_iter().map(request_op).collect::<Result<_, _>>()?,
    })
}

/// A store key-value → `mvccpb.KeyValue`.
pub fn key_value(kv: api::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key.to_vec(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value.to_vec(),
        lease: kv.lease,
    }
}

/// A store event → `mvccpb.Event`, with its previous key-value only if
/// `prev_kv` (a watch asks for it).
pub fn event(e: &api::Event, prev_kv: bool) -> mvccpb::Event {
    mvccpb::Event {
        r#type: e.r#type as i32,
        kv: Some(key_value(e.kv.clone())),
        prev_kv: if prev_kv { e.prev_kv.clone().map(key_value) } else { None },
    }
}

fn sub_header(h: &api::ResponseHeader) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader { revision: h.revision, ..pb::ResponseHeader::default() })
}

/// A store range answer → `RangeResponse`, with `header`.
pub fn range_response(r: api::RangeResponse, header: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

/// A store put answer → `PutResponse`, with `header`.
pub fn put_response(p: api::PutResponse, header: pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse { header: Some(header), prev_kv: p.prev_kv.map(key_value) }
}

/// A store delete answer → `DeleteRangeResponse`, with `header`.
pub fn delete_response(
    d: api::DeleteRangeResponse,
    header: pb::ResponseHeader,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(header),
        deleted: d.deleted,
        prev_kvs: d.prev_kvs.into_iter().map(key_value).collect(),
    }
}

fn response_op(op: api::ResponseOp) -> pb::ResponseOp {
    use pb::response_op::Response as R;
    let response = match op {
        api::ResponseOp::Range(r) => {
            let h = sub_header(&r.header);
            R::ResponseRange(pb::RangeResponse {
                header: h,
                ..range_response(r, Default::default())
            })
        }
        api::ResponseOp::Put(p) => {
            let h = sub_header(&p.header);
            R::ResponsePut(pb::PutResponse { header: h, ..put_response(p, Default::default()) })
        }
        api::ResponseOp::DeleteRange(d) => {
            let h = sub_header(&d.header);
            R::ResponseDeleteRange(pb::DeleteRangeResponse {
                header: h,
                ..delete_response(d, Default::default())
            })
        }
        api::ResponseOp::Txn(t) => {
            let h = sub_header(&t.header);
            R::ResponseTxn(pb::TxnResponse { header: h, ..txn_response(t, Default::default()) })
        }
    };
    pb::ResponseOp { response: Some(response) }
}

/// A store txn answer → `TxnResponse`, with `header`.
pub fn txn_response(t: api::TxnResponse, header: pb::ResponseHeader) -> pb::TxnResponse {
    pb::TxnResponse {
        header: Some(header),
        succeeded: t.succeeded,
        responses: t.responses.into_iter().map(response_op).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undefined_sort_order_is_etcds_invalid_sort_option() {
        let r = pb::RangeRequest { key: b"a".to_vec(), sort_order: 9, ..Default::default() };
        assert_eq!(range_request(r), Err(KvError::InvalidSortOption));
    }

    #[test]
    fn a_nested_txn_converts_both_ways() {
        use pb::request_op::Request as R;
        let put = pb::RequestOp {
            request: Some(R::RequestPut(pb::PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        };
        let t = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: 3,
                target: 3,
                key: b"k".to_vec(),
                target_union: Some(pb::compare::TargetUnion::Value(b"x".to_vec())),
                ..Default::default()
            }],
            success: vec![pb::RequestOp {
                request: Some(R::RequestTxn(pb::TxnRequest {
                    success: vec![put],
                    ..Default::default()
                })),
            }],
            failure: vec![],
        };
        let t = txn_request(t).expect("converts");
        assert_eq!(t.compare[0].result, api::CompareResult::NotEqual);
        assert_eq!(t.compare[0].target, api::CompareTarget::Value);
        assert!(matches!(&t.success[0], api::RequestOp::Txn(n) if n.success.len() == 1));

        let answer = api::TxnResponse {
            header: api::ResponseHeader::at(5),
            succeeded: true,
            responses: vec![api::ResponseOp::Put(api::PutResponse {
                header: api::ResponseHeader::at(5),
                prev_kv: None,
            })],
        };
        let stamp = HeaderStamp { cluster_id: 1, member_id: 2, raft_term: 3 };
        let pb = txn_response(answer, stamp.header(5));
        assert_eq!(pb.header, Some(stamp.header(5)));
        let Some(pb::response_op::Response::ResponsePut(p)) = &pb.responses[0].response else {
            panic!("a put response");
        };
        assert_eq!(p.header.map(|h| (h.revision, h.member_id)), Some((5, 0)));
    }

    #[test]
    fn an_empty_txn_op_is_refused() {
        let t =
            pb::TxnRequest { success: vec![pb::RequestOp { request: None }], ..Default::default() };
        assert!(matches!(txn_request(t), Err(KvError::Malformed(_))));
    }
}
