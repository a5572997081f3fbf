//! The etcd `Lease` service (Grant, Revoke, KeepAlive stream, TimeToLive,
//! Leases) and the leader's lease expiry.
//!
//! Time. Every lease command is stamped with the clock of the leader that
//! proposes it ([`Service::now`]); applying never reads a clock, so every
//! replica agrees on each lease's deadline. Requests reaching a follower are
//! forwarded to the leader (keep-alives one message at a time), so only the
//! leader's clock is ever used. A node that becomes leader first proposes
//! `LeasePromote` (every TTL restarts from its own clock, as etcd's
//! `lessor.Promote` does); only once that is applied does it look for
//! expired leases, so a deadline set by another node's clock is never
//! compared with this one's.
//!
//! Expiry ([`run_expiry`]): every [`EXPIRY_CHECK_INTERVAL`] the leader reads
//! the leases expired at its `now` ([`KvQuery::ExpiredLeases`], at most
//! [`MAX_EXPIRED_PER_ROUND`]) and proposes one `LeaseExpire` for them; the
//! store revokes each one still expired when the command applies (a
//! keep-alive ordered first wins), so expiry is replicated through the log
//! and survives leader changes like any other write.
//!
//! etcd's answers kept: a keep-alive for an unknown lease answers TTL 0, a
//! TimeToLive for one answers TTL -1; a revoke of one is `NotFound:
//! etcdserver: requested lease not found`.

use crate::service::{
    Answer, Op, PbRequest, PbResponse, Service, is_forwarded, kv_status, unexpected,
};
use std::time::Duration;
use synod_core::Role;
use synod_etcdpb::etcdserverpb as pb;
use synod_etcdpb::etcdserverpb::lease_server::Lease;
use synod_kv::{KvCommand, KvError, KvQuery, KvResponse, api};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// How often the leader looks for expired leases.
pub const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Leases expired in one `LeaseExpire` at most.
pub const MAX_EXPIRED_PER_ROUND: u64 = 256;
/// Keep-alive answers queued per stream.
pub const KEEP_ALIVE_BUFFER: usize = 64;

/// The leader's lease duties, until the driver stops: promote once per term
/// of leadership, then expire what is due.
pub async fn run_expiry(service: Service) {
    let me = service.inner().config.node_id;
    let mut promoted_term: Option<u64> = None;
    let mut tick = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if service.inner().status.has_changed().is_err() {
            return;
        }
        let st = *service.inner().status.borrow();
        if st.role != Role::Leader || st.leader != Some(me) {
            promoted_term = None;
            continue;
        }
        if promoted_term != Some(st.term) {
            let cmd = KvCommand::LeasePromote { now: service.now() };
            match service.local_write(&cmd).await {
                Ok(Some(_)) => {
                    tracing::info!(term = st.term, "leases promoted: every TTL restarts now");
                    promoted_term = Some(st.term);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "lease promotion failed; retrying"),
            }
            continue;
        }
        let now = service.now();
        let q = KvQuery::ExpiredLeases { now, max: MAX_EXPIRED_PER_ROUND };
        let ids = match service.serializable(q).await {
            Ok((KvResponse::ExpiredLeases(ids), _)) => ids,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read expired leases");
                continue;
            }
        };
        if ids.is_empty() {
            continue;
        }
        match service.local_write(&KvCommand::LeaseExpire { ids, now }).await {
            Ok(Some(KvResponse::LeaseExpire(r))) if !r.revoked.is_empty() => {
                tracing::debug!(revoked = ?r.revoked, "leases expired");
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "lease expiry failed; retrying"),
        }
    }
}

impl Service {
    /// One keep-alive, routed to the leader.
    pub(crate) async fn keep_alive_once(
        &self,
        forwarded: bool,
        r: pb::LeaseKeepAliveRequest,
    ) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let id = r.id;
        let op = move |now| {
            Op::Write(KvCommand::LeaseKeepAlive { request: api::LeaseKeepAliveRequest { id }, now })
        };
        match self.execute_at(forwarded, op, PbRequest::LeaseKeepAlive(r)).await {
            Ok(Answer::Remote(PbResponse::LeaseKeepAlive(r))) => Ok(r),
            Ok(Answer::Local(KvResponse::LeaseKeepAlive(k), stamp)) => {
                Ok(pb::LeaseKeepAliveResponse {
                    header: Some(stamp.header(k.header.revision)),
                    id: k.id,
                    ttl: k.ttl,
                })
            }
            Ok(_) => Err(unexpected("keep-alive")),
            Err(s) if s.code() == tonic::Code::NotFound => {
                let revision = self.inner().status.borrow().revision;
                Ok(pb::LeaseKeepAliveResponse {
                    header: Some(self.stamp().header(revision)),
                    id,
                    ttl: 0,
                })
            }
            Err(s) => Err(s),
        }
    }
}

#[tonic::async_trait]
impl Lease for Service {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let r = request.into_inner();
        let grant = api::LeaseGrantRequest { ttl: r.ttl, id: r.id };
        let op = move |now| Op::Write(KvCommand::LeaseGrant { request: grant, now });
        match self.execute_at(forwarded, op, PbRequest::LeaseGrant(r)).await? {
            Answer::Remote(PbResponse::LeaseGrant(r)) => Ok(Response::new(r)),
            Answer::Local(KvResponse::LeaseGrant(g), stamp) => {
                Ok(Response::new(pb::LeaseGrantResponse {
                    header: Some(stamp.header(g.header.revision)),
                    id: g.id,
                    ttl: g.ttl,
                    error: g.error,
                }))
            }
            _ => Err(unexpected("lease grant")),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let r = request.into_inner();
        let cmd = KvCommand::LeaseRevoke(api::LeaseRevokeRequest { id: r.id });
        match self.execute(forwarded, Op::Write(cmd), PbRequest::LeaseRevoke(r)).await? {
            Answer::Remote(PbResponse::LeaseRevoke(r)) => Ok(Response::new(r)),
            Answer::Local(KvResponse::LeaseRevoke(g), stamp) => {
                Ok(Response::new(pb::LeaseRevokeResponse {
                    header: Some(stamp.header(g.header.revision)),
                }))
            }
            _ => Err(unexpected("lease revoke")),
        }
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::LeaseKeepAliveResponse>>, Status> {
        let forwarded = is_forwarded(&request);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEP_ALIVE_BUFFER);
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = inbound.message() => m,
                    _ = tx.closed() => return,
                };
                let Ok(Some(r)) = msg else { return };
                let answer = service.keep_alive_once(forwarded, r).await;
                let stop = answer.is_err();
                if tx.send(answer).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let r = request.into_inner();
        let (id, keys) = (r.id, r.keys);
        let op = move |now| {
            Op::Read(KvQuery::LeaseTimeToLive {
                request: api::LeaseTimeToLiveRequest { id, keys },
                now,
            })
        };
        match self.execute_at(forwarded, op, PbRequest::LeaseTimeToLive(r)).await {
            Ok(Answer::Remote(PbResponse::LeaseTimeToLive(r))) => Ok(Response::new(r)),
            Ok(Answer::Local(KvResponse::LeaseTimeToLive(t), stamp)) => {
                Ok(Response::new(pb::LeaseTimeToLiveResponse {
                    header: Some(stamp.header(t.header.revision)),
                    id: t.id,
                    ttl: t.ttl,
                    granted_ttl: t.granted_ttl,
                    keys: t.keys.into_iter().map(|k| k.to_vec()).collect(),
                }))
            }
            Ok(_) => Err(unexpected("lease time-to-live")),
            Err(s) if s.code() == tonic::Code::NotFound => {
                // etcd answers an unknown lease with TTL -1, not an error.
                let revision = self.inner().status.borrow().revision;
                Ok(Response::new(pb::LeaseTimeToLiveResponse {
                    header: Some(self.stamp().header(revision)),
                    id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: Vec::new(),
                }))
            }
            Err(s) => Err(s),
        }
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let r = request.into_inner();
        let q = KvQuery::LeaseLeases(api::LeaseLeasesRequest {});
        match self.execute(forwarded, Op::Read(q), PbRequest::LeaseLeases(r)).await? {
            Answer::Remote(PbResponse::LeaseLeases(r)) => Ok(Response::new(r)),
            Answer::Local(KvResponse::LeaseLeases(l), stamp) => {
                Ok(Response::new(pb::LeaseLeasesResponse {
                    header: Some(stamp.header(l.header.revision)),
                    leases: l.leases.into_iter().map(|s| pb::LeaseStatus { id: s.id }).collect(),
                }))
            }
            _ => Err(unexpected("lease leases")),
        }
    }
}

/// etcd's error for an unknown lease, as a status.
pub fn lease_not_found() -> Status {
    kv_status(KvError::LeaseNotFound)
}
