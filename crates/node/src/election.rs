//! The `v3electionpb.Election` service (Campaign, Proclaim, Leader, Observe,
//! Resign), etcd's `concurrency.Election` recipe run inside the server over
//! its KV, lease and watch services (the steps it shares with the lock are
//! in [`crate::lock`]).
//!
//! A candidate's key is `name/<lease in hex>` holding its value, attached to
//! its lease; the leader is the key with the smallest create revision. A
//! campaign puts the key (or, if it exists, proclaims the new value) and
//! waits until every older key is gone. The returned `LeaderKey` (name, key,
//! create revision, lease) is the handle for Proclaim and Resign, which act
//! only while that exact key is still there (a txn on its create revision),
//! and its `rev` is the leader's fencing token (see [`crate::lock`]).
//! Observe streams the leader's value: every change of the current leader's
//! key, then the next leader when it is deleted.

use crate::lock::{
    DeleteOnDrop, compare_create, first_create, key_for, op, prefix_of, range, range_at, txn,
    wait_deletes,
};
use crate::service::Service;
use crate::watch::{LocalWatch, STREAM_BUFFER};
use synod_etcdpb::etcdserverpb as pb;
use synod_etcdpb::mvccpb;
use synod_etcdpb::v3electionpb as ev;
use synod_etcdpb::v3electionpb::election_server::Election;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// etcd's `ErrElectionNotLeader`.
pub const NOT_LEADER: &str = "election: not leader";
/// etcd's `ErrElectionNoLeader`.
pub const NO_LEADER: &str = "election: no leader";
/// etcd's `ErrMissingLeaderKey`.
pub const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";

use pb::request_op::Request as R;

async fn proclaim(
    service: &Service,
    leader: &ev::LeaderKey,
    value: Vec<u8>,
) -> Result<pb::TxnResponse, Status> {
    let put = pb::PutRequest {
        key: leader.key.clone(),
        value,
        ignore_lease: true,
        ..pb::PutRequest::default()
    };
    let t = txn(
        service,
        pb::TxnRequest {
            compare: vec![compare_create(&leader.key, leader.rev)],
            success: vec![op(R::RequestPut(put))],
            failure: Vec::new(),
        },
    )
    .await?;
    if !t.succeeded {
        return Err(Status::unknown(NOT_LEADER));
    }
    Ok(t)
}

async fn resign(service: &Service, leader: &ev::LeaderKey) -> Result<pb::TxnResponse, Status> {
    let del = pb::DeleteRangeRequest { key: leader.key.clone(), ..Default::default() };
    txn(
        service,
        pb::TxnRequest {
            compare: vec![compare_create(&leader.key, leader.rev)],
            success: vec![op(R::RequestDeleteRange(del))],
            failure: Vec::new(),
        },
    )
    .await
}

/// One pass of Observe: sends the current leader (waiting for one), then
/// its changes until its key is deleted. `Err` ends the stream.
async fn observe_once(
    service: &Service,
    prefix: &[u8],
    out: &mpsc::Sender<Result<ev::LeaderResponse, Status>>,
) -> Result<(), Status> {
    let r = range(service, first_create(prefix)).await?;
    let (mut header, kv) = match r.kvs.into_iter().next() {
        Some(kv) => (r.header.unwrap_or_default(), kv),
        None => {
            // Wait for the first candidate.
            let from = r.header.map_or(0, |h| h.revision);
            let end = synod_kv::prefix_end(prefix);
            let mut w = LocalWatch::start(service, prefix, &end, from, false);
            loop {
                let resp = w.next().await?;
                let put = resp
                    .events
                    .into_iter()
                    .find(|e| e.r#type == mvccpb::event::EventType::Put as i32)
                    .and_then(|e| e.kv);
                if let Some(kv) = put {
                    break (resp.header.unwrap_or_default(), kv);
                }
            }
        }
    };
    let key = kv.key.clone();
    let send = |header: pb::ResponseHeader, kv| {
        out.send(Ok(ev::LeaderResponse { header: Some(header), kv: Some(kv) }))
    };
    if send(header, kv).await.is_err() {
        return Err(Status::cancelled("observer gone"));
    }
    let mut w = LocalWatch::start(service, &key, &[], header.revision + 1, false);
    loop {
        let resp = w.next().await?;
        if let Some(h) = resp.header {
            header = h;
        }
        for e in resp.events {
            if e.r#type == mvccpb::event::EventType::Delete as i32 {
                return Ok(());
            }
            if let Some(kv) = e.kv
                && send(header, kv).await.is_err()
            {
                return Err(Status::cancelled("observer gone"));
            }
        }
    }
}

#[tonic::async_trait]
impl Election for Service {
    async fn campaign(
        &self,
        request: Request<ev::CampaignRequest>,
    ) -> Result<Response<ev::CampaignResponse>, Status> {
        let r = request.into_inner();
        let prefix = prefix_of(&r.name);
        let key = key_for(&prefix, r.lease);
        let put = pb::PutRequest {
            key: key.clone(),
            value: r.value.clone(),
            lease: r.lease,
            ..pb::PutRequest::default()
        };
        let get = pb::RangeRequest { key: key.clone(), ..pb::RangeRequest::default() };
        let t = txn(
            self,
            pb::TxnRequest {
                compare: vec![compare_create(&key, 0)],
                success: vec![op(R::RequestPut(put))],
                failure: vec![op(R::RequestRange(get))],
            },
        )
        .await?;
        let header = t.header;
        let mut leader = ev::LeaderKey {
            name: r.name,
            key: key.clone(),
            rev: header.as_ref().map_or(0, |h| h.revision),
            lease: r.lease,
        };
        let guard = DeleteOnDrop::new(self, key.clone());
        if !t.succeeded {
            let Some(kv) = range_at(&t, 0).and_then(|g| g.kvs.first()) else {
                return Err(Status::unknown(NOT_LEADER));
            };
            leader.rev = kv.create_revision;
            if kv.value != r.value
                && let Err(e) = proclaim(self, &leader, r.value).await
            {
                let _ = resign(self, &leader).await;
                guard.disarm();
                return Err(e);
            }
        }
        wait_deletes(self, &prefix, leader.rev - 1).await?;
        guard.disarm();
        Ok(Response::new(ev::CampaignResponse { header, leader: Some(leader) }))
    }

    async fn proclaim(
        &self,
        request: Request<ev::ProclaimRequest>,
    ) -> Result<Response<ev::ProclaimResponse>, Status> {
        let r = request.into_inner();
        let leader = r.leader.ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let t = proclaim(self, &leader, r.value).await?;
        Ok(Response::new(ev::ProclaimResponse { header: t.header }))
    }

    async fn leader(
        &self,
        request: Request<ev::LeaderRequest>,
    ) -> Result<Response<ev::LeaderResponse>, Status> {
        let prefix = prefix_of(&request.into_inner().name);
        let r = range(self, first_create(&prefix)).await?;
        match r.kvs.into_iter().next() {
            Some(kv) => Ok(Response::new(ev::LeaderResponse { header: r.header, kv: Some(kv) })),
            None => Err(Status::unknown(NO_LEADER)),
        }
    }

    async fn observe(
        &self,
        request: Request<ev::LeaderRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<ev::LeaderResponse>>, Status> {
        let prefix = prefix_of(&request.into_inner().name);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                let pass = tokio::select! {
                    r = observe_once(&service, &prefix, &tx) => r,
                    _ = tx.closed() => return,
                };
                if let Err(e) = pass {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(
        &self,
        request: Request<ev::ResignRequest>,
    ) -> Result<Response<ev::ResignResponse>, Status> {
        let leader =
            request.into_inner().leader.ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let t = resign(self, &leader).await?;
        Ok(Response::new(ev::ResignResponse { header: t.header }))
    }
}
