//! The `v3lockpb.Lock` service (Lock, Unlock), built as etcd builds it: the
//! `concurrency.Mutex` recipe run inside the server over its own KV, lease
//! and watch services, plus the recipe steps the election service shares.
//!
//! Lock(name, lease): the caller's key is `name/<lease in hex>`, put with
//! the lease if absent (a txn on its create revision). Holders are ordered
//! by create revision: the lock is held once no key under `name/` with a
//! smaller create revision is left; until then the server waits for the
//! deletion of the key just before it (by create revision), one at a time,
//! as etcd's `waitDeletes` does. The answer carries the key, the handle
//! Unlock takes.
//!
//! **Fencing token.** The key's create revision is the token: it increases
//! with every acquisition, so a resource that remembers the largest token it
//! has seen can refuse a holder whose lease expired while it was paused and
//! whose lock is now someone else's (a lease bounds how long a lock is
//! held, not how long a holder *believes* it holds it).
//!
//! A caller that goes away while waiting (its request is dropped) has its
//! key deleted, as etcd's recipe does when the wait fails. A key whose lease
//! expired while waiting answers etcd 3.5's `mutex: session is expired`.

use crate::service::Service;
use crate::watch::LocalWatch;
use std::time::Duration;
use synod_etcdpb::etcdserverpb as pb;
use synod_etcdpb::etcdserverpb::kv_server::Kv;
use synod_etcdpb::mvccpb;
use synod_etcdpb::v3lockpb;
use synod_etcdpb::v3lockpb::lock_server::Lock;
use tonic::{Request, Response, Status};

/// etcd's `ErrSessionExpired` (3.5).
pub const SESSION_EXPIRED: &str = "mutex: session is expired";
/// How long one wait for a predecessor's deletion lasts before the holders
/// are listed again (a wait has no overall bound: the caller decides).
pub const WAIT_RECHECK: Duration = Duration::from_secs(30);

/// `name/`.
pub(crate) fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// `prefix<lease in hex>`, as etcd's `fmt.Sprintf("%s%x", pfx, lease)`.
pub(crate) fn key_for(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("{lease:x}").as_bytes());
    k
}

pub(crate) async fn txn(service: &Service, t: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
    Ok(Kv::txn(service, Request::new(t)).await?.into_inner())
}

pub(crate) async fn range(
    service: &Service,
    r: pb::RangeRequest,
) -> Result<pb::RangeResponse, Status> {
    Ok(Kv::range(service, Request::new(r)).await?.into_inner())
}

/// The oldest key under `prefix` (etcd's `WithFirstCreate`).
pub(crate) fn first_create(prefix: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: prefix.to_vec(),
        range_end: synod_kv::prefix_end(prefix).to_vec(),
        limit: 1,
        sort_order: pb::range_request::SortOrder::Ascend as i32,
        sort_target: pb::range_request::SortTarget::Create as i32,
        ..pb::RangeRequest::default()
    }
}

/// The newest key under `prefix` created at or before `max_create_revision`
/// (etcd's `WithLastCreate` + `WithMaxCreateRev`).
fn last_create(prefix: &[u8], max_create_revision: i64) -> pb::RangeRequest {
    pb::RangeRequest {
        key: prefix.to_vec(),
        range_end: synod_kv::prefix_end(prefix).to_vec(),
        limit: 1,
        sort_order: pb::range_request::SortOrder::Descend as i32,
        sort_target: pb::range_request::SortTarget::Create as i32,
        max_create_revision,
        ..pb::RangeRequest::default()
    }
}

pub(crate) fn compare_create(key: &[u8], revision: i64) -> pb::Compare {
    pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(pb::compare::TargetUnion::CreateRevision(revision)),
        range_end: Vec::new(),
    }
}

pub(crate) fn op(r: pb::request_op::Request) -> pb::RequestOp {
    pb::RequestOp { request: Some(r) }
}

/// The range answer of a txn's `i`-th op.
pub(crate) fn range_at(t: &pb::TxnResponse, i: usize) -> Option<&pb::RangeResponse> {
    match t.responses.get(i)?.response.as_ref()? {
        pb::response_op::Response::ResponseRange(r) => Some(r),
        _ => None,
    }
}

/// Waits until `key` is deleted after revision `revision`.
pub(crate) async fn wait_delete(
    service: &Service,
    key: &[u8],
    revision: i64,
) -> Result<(), Status> {
    let mut w = LocalWatch::start(service, key, &[], revision, true);
    loop {
        let r = w.next().await?;
        if r.events.iter().any(|e| e.r#type == mvccpb::event::EventType::Delete as i32) {
            return Ok(());
        }
    }
}

/// etcd's `waitDeletes`: waits until no key under `prefix` with a create
/// revision ≤ `max_create_revision` is left; answers the last range header.
pub(crate) async fn wait_deletes(
    service: &Service,
    prefix: &[u8],
    max_create_revision: i64,
) -> Result<pb::ResponseHeader, Status> {
    loop {
        let r = range(service, last_create(prefix, max_create_revision)).await?;
        let Some(last) = r.kvs.first() else {
            return Ok(r.header.unwrap_or_default());
        };
        let revision = r.header.as_ref().map_or(0, |h| h.revision);
        // Bounded waits: list the holders again now and then (a deletion
        // is never missed; this only bounds a single watch's life).
        let _ = tokio::time::timeout(WAIT_RECHECK, wait_delete(service, &last.key, revision)).await;
    }
}

/// Deletes a key when dropped unless disarmed: the clean-up of a caller
/// that went away mid-wait.
pub(crate) struct DeleteOnDrop {
    service: Service,
    key: Option<Vec<u8>>,
}

impl DeleteOnDrop {
    pub(crate) fn new(service: &Service, key: Vec<u8>) -> DeleteOnDrop {
        DeleteOnDrop { service: service.clone(), key: Some(key) }
    }

    pub(crate) fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let service = self.service.clone();
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(async move {
                let req = pb::DeleteRangeRequest { key, ..pb::DeleteRangeRequest::default() };
                let _ = Kv::delete_range(&service, Request::new(req)).await;
            });
        }
    }
}

#[tonic::async_trait]
impl Lock for Service {
    async fn lock(
        &self,
        request: Request<v3lockpb::LockRequest>,
    ) -> Result<Response<v3lockpb::LockResponse>, Status> {
        let r = request.into_inner();
        let prefix = prefix_of(&r.name);
        let key = key_for(&prefix, r.lease);
        use pb::request_op::Request as R;
        let put = pb::PutRequest { key: key.clone(), lease: r.lease, ..pb::PutRequest::default() };
        let get = pb::RangeRequest { key: key.clone(), ..pb::RangeRequest::default() };
        let t = txn(
            self,
            pb::TxnRequest {
                compare: vec![compare_create(&key, 0)],
                success: vec![op(R::RequestPut(put)), op(R::RequestRange(first_create(&prefix)))],
                failure: vec![op(R::RequestRange(get)), op(R::RequestRange(first_create(&prefix)))],
            },
        )
        .await?;
        let mut header = t.header.unwrap_or_default();
        let my_revision = if t.succeeded {
            header.revision
        } else {
            range_at(&t, 0).and_then(|r| r.kvs.first()).map_or(0, |kv| kv.create_revision)
        };
        let owner = range_at(&t, 1).and_then(|r| r.kvs.first()).map(|kv| kv.create_revision);
        if owner.is_some_and(|rev| rev != my_revision) {
            let guard = DeleteOnDrop::new(self, key.clone());
            header = wait_deletes(self, &prefix, my_revision - 1).await?;
            let mine =
                range(self, pb::RangeRequest { key: key.clone(), ..Default::default() }).await?;
            guard.disarm();
            if mine.kvs.is_empty() {
                return Err(Status::unknown(SESSION_EXPIRED));
            }
        }
        Ok(Response::new(v3lockpb::LockResponse { header: Some(header), key }))
    }

    async fn unlock(
        &self,
        request: Request<v3lockpb::UnlockRequest>,
    ) -> Result<Response<v3lockpb::UnlockResponse>, Status> {
        let key = request.into_inner().key;
        let req = pb::DeleteRangeRequest { key, ..pb::DeleteRangeRequest::default() };
        let r = Kv::delete_range(self, Request::new(req)).await?.into_inner();
        Ok(Response::new(v3lockpb::UnlockResponse { header: r.header }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_as_etcds_recipe_names_them() {
        let p = prefix_of(b"mylock");
        assert_eq!(p, b"mylock/");
        assert_eq!(key_for(&p, 0x694d7a1b2c3d4e5f), b"mylock/694d7a1b2c3d4e5f");
        let first = first_create(&p);
        assert_eq!(first.range_end, b"mylock0", "the prefix's range");
        assert_eq!(first.limit, 1);
        assert_eq!(last_create(&p, 9).max_create_revision, 9);
    }
}
