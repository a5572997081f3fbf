//! The etcd v3 client API of a node: `KV` (Range, Put, DeleteRange, Txn,
//! Compact) (`Maintenance` is in [`crate::maintenance`]) and
//! `Cluster` (in [`crate::cluster`]), over the driver.
//!
//! Routing. Writes, txns, compactions and linearizable ranges are served by
//! the leader: on the leader they go to the local driver (writes through the
//! log; linearizable ranges through the core's read barrier); on a follower
//! they are **forwarded** to the leader's client address over gRPC (marked
//! with the `synod-forwarded` metadata key, so a request is forwarded at
//! most once), never refused for being on a follower. With no leader known
//! the request waits for one up to the request timeout, then fails with
//! etcd's `Unavailable: etcdserver: no leader`. A request that found the
//! leader gone before it was proposed is routed again (at most
//! [`MAX_ROUTE_ATTEMPTS`] times). Serializable ranges are answered from the
//! local state on any member.
//!
//! Errors are `tonic::Status` with the store's etcd code and message
//! ([`KvError::grpc_code`], [`KvError::message`]); a request whose encoding
//! exceeds the 1.5 MiB limit gets etcd's `InvalidArgument: etcdserver:
//! request is too large`.

use crate::convert::{self, HeaderStamp};
use crate::driver::{ClientError, ClientRequest, NodeStatus};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synod_core::{NodeId, Role, Time};
use synod_etcdpb::etcdserverpb as pb;
use synod_etcdpb::etcdserverpb::kv_client::KvClient;
use synod_etcdpb::etcdserverpb::kv_server::Kv;
use synod_etcdpb::etcdserverpb::lease_client::LeaseClient;
use synod_kv::{KvCommand, KvConfig, KvError, KvQuery, KvResponse, decode_result};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// The metadata key that marks a forwarded request.
pub const FORWARDED: &str = "synod-forwarded";
/// Times one request is routed (to the local driver or a leader) at most.
pub const MAX_ROUTE_ATTEMPTS: usize = 5;
/// The etcd version `Maintenance.Status` reports.
pub const ETCD_VERSION: &str = "3.5.0";
/// gRPC overhead etcd allows above its request limit when decoding.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

const LEADER_CHANGED: &str = "etcdserver: leader changed";
const NO_LEADER: &str = "etcdserver: no leader";
const TIMED_OUT: &str = "etcdserver: request timed out";

/// One member of the cluster, as `MemberList` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Its id.
    pub id: NodeId,
    /// Its peer address (`host:port`).
    pub peer_addr: String,
    /// Its client address (`host:port`).
    pub client_addr: String,
}

/// What the service is built from.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// This member.
    pub node_id: NodeId,
    /// The cluster's id in response headers.
    pub cluster_id: u64,
    /// Every member, including this one.
    pub members: Vec<MemberInfo>,
    /// Store limits (the request size limit).
    pub kv: KvConfig,
    /// How long a request may wait for a leader and an answer.
    pub request_timeout: Duration,
    /// Every replica orders the requests it receives itself, leader or not
    /// (PBFT: the core hands them to the primary); nothing is forwarded.
    pub serve_locally: bool,
    /// The protocol agrees on time (PBFT): lease commands execute at the
    /// agreed time, not at the `now` stamped into them, so this node's
    /// lease clock reads the same wall-anchored scale as the core's
    /// ([`crate::clock`]).
    pub agreed_clock: bool,
}

/// The gRPC services of a node. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ServiceConfig,
    pub(crate) requests: mpsc::Sender<ClientRequest>,
    pub(crate) status: watch::Receiver<NodeStatus>,
    channels: Mutex<HashMap<NodeId, Channel>>,
    /// The leader's in-memory lease keep-alives ([`crate::lease`]).
    pub(crate) lessor: crate::lease::Lessor,
    /// The clock this node stamps lease commands with.
    clock: crate::clock::NodeClock,
    /// The node's watch hub.
    pub(crate) hub: Arc<crate::watch::WatchHub>,
    /// The live membership, when the driver publishes it
    /// ([`Service::with_members`]); else `config.members` is the list.
    pub(crate) members: std::sync::OnceLock<watch::Receiver<Arc<crate::members::MembersView>>>,
}

/// A request, in the two forms it may travel in.
pub(crate) enum Op {
    Write(KvCommand),
    Read(KvQuery),
}

/// The same request as etcd's protobuf, for forwarding.
#[derive(Clone)]
pub(crate) enum PbRequest {
    Range(pb::RangeRequest),
    /// Kept as the store's request (its key and value shared with the
    /// command, not copied); turned back into protobuf only if forwarded.
    Put(synod_kv::PutRequest),
    Delete(pb::DeleteRangeRequest),
    Txn(pb::TxnRequest),
    Compact(pb::CompactionRequest),
    LeaseGrant(pb::LeaseGrantRequest),
    LeaseRevoke(pb::LeaseRevokeRequest),
    LeaseKeepAlive(pb::LeaseKeepAliveRequest),
    LeaseTimeToLive(pb::LeaseTimeToLiveRequest),
    LeaseLeases(pb::LeaseLeasesRequest),
}

pub(crate) enum PbResponse {
    Range(pb::RangeResponse),
    Put(pb::PutResponse),
    Delete(pb::DeleteRangeResponse),
    Txn(pb::TxnResponse),
    Compact(pb::CompactionResponse),
    LeaseGrant(pb::LeaseGrantResponse),
    LeaseRevoke(pb::LeaseRevokeResponse),
    LeaseKeepAlive(pb::LeaseKeepAliveResponse),
    LeaseTimeToLive(pb::LeaseTimeToLiveResponse),
    LeaseLeases(pb::LeaseLeasesResponse),
}

pub(crate) enum Answer {
    Local(KvResponse, HeaderStamp),
    Remote(PbResponse),
}

enum Route {
    Local,
    Forward(NodeId),
}

pub(crate) fn kv_status(e: KvError) -> Status {
    Status::new(tonic::Code::from_i32(e.grpc_code().as_i32()), e.message())
}

pub(crate) fn unexpected(what: &str) -> Status {
    Status::internal(format!("synod: unexpected answer to {what}"))
}

pub(crate) fn is_forwarded<T>(req: &Request<T>) -> bool {
    req.metadata().contains_key(FORWARDED)
}

impl Service {
    /// A service sending work to the driver through `requests` and reading
    /// its published `status`. Inside a tokio runtime it also starts its
    /// background tasks: the watch hub's feeder ([`crate::watch`]) and the
    /// leader's lease expiry ([`crate::lease`]); they stop when the driver
    /// does (its status channel closes).
    pub fn new(
        config: ServiceConfig,
        requests: mpsc::Sender<ClientRequest>,
        status: watch::Receiver<NodeStatus>,
    ) -> Service {
        let hub = Arc::new(crate::watch::WatchHub::new(status.borrow().revision + 1));
        let clock = crate::clock::NodeClock::new(config.agreed_clock);
        let service = Service {
            inner: Arc::new(Inner {
                config,
                requests,
                status,
                channels: Mutex::new(HashMap::new()),
                lessor: crate::lease::Lessor::default(),
                clock,
                hub,
                members: std::sync::OnceLock::new(),
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(crate::watch::feed(service.clone()));
            tokio::spawn(crate::lease::run_expiry(service.clone()));
        }
        service
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// This node's clock for lease commands (meaningful on the leader; a new
    /// leader restarts every lease from its own clock with `LeasePromote`).
    pub(crate) fn now(&self) -> Time {
        self.inner.clock.now()
    }

    /// The largest gRPC message the KV service decodes (etcd's request limit
    /// plus gRPC overhead).
    pub fn max_decoding_message_size(&self) -> usize {
        self.inner.config.kv.max_request_bytes + GRPC_OVERHEAD_BYTES
    }

    pub(crate) fn stamp(&self) -> HeaderStamp {
        let st = *self.inner.status.borrow();
        HeaderStamp {
            cluster_id: self.inner.config.cluster_id,
            member_id: self.inner.config.node_id.0,
            raft_term: st.term,
        }
    }

    /// Where a request goes now, waiting (up to the request timeout) for a
    /// leader to be known. A request `stamped` with the clock of the node
    /// that runs it (lease commands) goes to the leader even when every
    /// replica serves ([`ServiceConfig::serve_locally`]), so that one clock
    /// stamps every lease.
    async fn route(&self, forwarded: bool, stamped: bool) -> Result<Route, Status> {
        if self.inner.config.serve_locally && !stamped {
            return Ok(Route::Local);
        }
        let me = self.inner.config.node_id;
        let mut rx = self.inner.status.clone();
        let deadline = tokio::time::Instant::now() + self.inner.config.request_timeout;
        loop {
            let st = *rx.borrow_and_update();
            match st.leader {
                Some(l) if l == me && st.role == Role::Leader => return Ok(Route::Local),
                Some(l) if l != me && !forwarded => return Ok(Route::Forward(l)),
                Some(l) if l != me => return Err(Status::unavailable(LEADER_CHANGED)),
                _ => {}
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Status::unavailable("etcdserver: server stopped")),
                Err(_) => return Err(Status::unavailable(NO_LEADER)),
            }
        }
    }

    pub(crate) fn channel(&self, to: NodeId) -> Result<Channel, Status> {
        let mut channels = self.inner.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(&to) {
            return Ok(c.clone());
        }
        let live = self.inner.members.get().and_then(|m| m.borrow().client_addr(to));
        let client_addr = match live {
            Some(addr) => addr.to_string(),
            None => {
                let member =
                    self.inner.config.members.iter().find(|m| m.id == to).ok_or_else(|| {
                        Status::unavailable(format!("synod: leader {to} is not a member"))
                    })?;
                member.client_addr.clone()
            }
        };
        let endpoint = Endpoint::from_shared(format!("http://{client_addr}"))
            .map_err(|e| Status::internal(format!("synod: bad client address of {to}: {e}")))?
            .connect_timeout(Duration::from_secs(1));
        let channel = endpoint.connect_lazy();
        channels.insert(to, channel.clone());
        Ok(channel)
    }

    async fn forward(&self, to: NodeId, req: PbRequest) -> Result<PbResponse, Status> {
        let max = self.max_decoding_message_size();
        let channel = self.channel(to)?;
        let mut client = KvClient::new(channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(max);
        let mut lease = LeaseClient::new(channel);
        fn mark<T>(t: T, timeout: Duration) -> Request<T> {
            let mut r = Request::new(t);
            r.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
            r.set_timeout(timeout);
            r
        }
        let t = self.inner.config.request_timeout;
        Ok(match req {
            PbRequest::Range(r) => PbResponse::Range(client.range(mark(r, t)).await?.into_inner()),
            PbRequest::Put(r) => {
                let r = pb::PutRequest {
                    key: r.key.to_vec(),
                    value: r.value.to_vec(),
                    lease: r.lease,
                    prev_kv: r.prev_kv,
                    ignore_value: r.ignore_value,
                    ignore_lease: r.ignore_lease,
                };
                PbResponse::Put(client.put(mark(r, t)).await?.into_inner())
            }
            PbRequest::Delete(r) => {
                PbResponse::Delete(client.delete_range(mark(r, t)).await?.into_inner())
            }
            PbRequest::Txn(r) => PbResponse::Txn(client.txn(mark(r, t)).await?.into_inner()),
            PbRequest::Compact(r) => {
                PbResponse::Compact(client.compact(mark(r, t)).await?.into_inner())
            }
            PbRequest::LeaseGrant(r) => {
                PbResponse::LeaseGrant(lease.lease_grant(mark(r, t)).await?.into_inner())
            }
            PbRequest::LeaseRevoke(r) => {
                PbResponse::LeaseRevoke(lease.lease_revoke(mark(r, t)).await?.into_inner())
            }
            PbRequest::LeaseTimeToLive(r) => PbResponse::LeaseTimeToLive(
                lease.lease_time_to_live(mark(r, t)).await?.into_inner(),
            ),
            PbRequest::LeaseLeases(r) => {
                PbResponse::LeaseLeases(lease.lease_leases(mark(r, t)).await?.into_inner())
            }
            PbRequest::LeaseKeepAlive(r) => {
                let once = tonic::codegen::tokio_stream::once(r);
                let mut replies = lease.lease_keep_alive(mark(once, t)).await?.into_inner();
                let answer = match replies.message().await? {
                    Some(r) => r,
                    None => return Err(Status::unavailable(LEADER_CHANGED)),
                };
                // The stream is read to its end (the leader ends it once it
                // has seen ours end), off the answer's path and bounded by
                // the request timeout. Dropped open, it is reset instead:
                // one HTTP/2 reset per forwarded keep-alive, and under load
                // (64 clients) h2 soon reaches its limit of 1,024 locally
                // reset streams and fails the whole connection to the leader
                // ("h2 protocol error": every request forwarded on it fails).
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(t, replies.message()).await;
                });
                PbResponse::LeaseKeepAlive(answer)
            }
        })
    }

    /// Sends `request` to the driver and waits for its answer. `Ok(None)`:
    /// this node is not the leader after all (nothing was proposed).
    async fn local(
        &self,
        request: ClientRequest,
        rx: oneshot::Receiver<crate::driver::Reply>,
    ) -> Result<Option<KvResponse>, Status> {
        let stopped = || Status::unavailable("etcdserver: server stopped");
        self.inner.requests.send(request).await.map_err(|_| stopped())?;
        match tokio::time::timeout(self.inner.config.request_timeout, rx).await {
            Err(_) => Err(Status::unavailable(TIMED_OUT)),
            Ok(Err(_)) => Err(stopped()),
            Ok(Ok(Err(ClientError::NotLeader { .. }))) => Ok(None),
            Ok(Ok(Err(ClientError::Busy))) => {
                Err(Status::resource_exhausted("etcdserver: too many requests"))
            }
            Ok(Ok(Err(ClientError::Stopped))) => Err(stopped()),
            Ok(Ok(Err(ClientError::Rejected(why)))) => {
                Err(Status::invalid_argument(format!("synod: {why}")))
            }
            Ok(Ok(Err(e @ (ClientError::Stale | ClientError::Superseded)))) => {
                Err(crate::pbft_refusal::client_error_status(e))
            }
            Ok(Ok(Ok(bytes))) => {
                let result = decode_result(&bytes)
                    .map_err(|e| Status::internal(format!("synod: bad answer: {e}")))?;
                result.map(Some).map_err(kv_status)
            }
        }
    }

    /// Runs `op` where it belongs (locally or on the leader).
    pub(crate) async fn execute(
        &self,
        forwarded: bool,
        op: Op,
        pb: PbRequest,
    ) -> Result<Answer, Status> {
        self.execute_routed(forwarded, false, move |_| op, pb).await
    }

    /// [`Service::execute`] for a request the leader stamps with its clock:
    /// `op(now)` is built on the node that runs it.
    pub(crate) async fn execute_at(
        &self,
        forwarded: bool,
        op: impl FnOnce(Time) -> Op,
        pb: PbRequest,
    ) -> Result<Answer, Status> {
        self.execute_routed(forwarded, true, op, pb).await
    }

    async fn execute_routed(
        &self,
        forwarded: bool,
        stamped: bool,
        op: impl FnOnce(Time) -> Op,
        pb: PbRequest,
    ) -> Result<Answer, Status> {
        // Stamped (and checked) once, before routing: a stamp taken early
        // only makes a lease expire sooner, never later.
        let op = op(self.now());
        let encoded: Bytes = match &op {
            Op::Write(cmd) => cmd.encode_checked(&self.inner.config.kv).map_err(kv_status)?,
            Op::Read(q) => q.encode(),
        };
        for _ in 0..MAX_ROUTE_ATTEMPTS {
            match self.route(forwarded, stamped).await? {
                Route::Local => {
                    let (tx, rx) = oneshot::channel();
                    let request = match &op {
                        Op::Write(_) => ClientRequest::Write { op: encoded.clone(), reply: tx },
                        Op::Read(_) => ClientRequest::Read {
                            query: encoded.clone(),
                            linearizable: true,
                            reply: tx,
                        },
                    };
                    if let Some(r) = self.local(request, rx).await? {
                        return Ok(Answer::Local(r, self.stamp()));
                    }
                }
                // Boxed: a forward is rare, and its future (a gRPC client
                // call) would triple the size of every request's future.
                Route::Forward(to) => match Box::pin(self.forward(to, pb.clone())).await {
                    Ok(r) => return Ok(Answer::Remote(r)),
                    Err(s)
                        if s.code() == tonic::Code::Unavailable
                            && s.message() == LEADER_CHANGED =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(s) => return Err(s),
                },
            }
            if forwarded {
                break;
            }
        }
        Err(Status::unavailable(LEADER_CHANGED))
    }

    /// A write proposed by this node itself (lease promotion and expiry):
    /// `Ok(None)` when it is not the leader.
    pub(crate) async fn local_write(&self, cmd: &KvCommand) -> Result<Option<KvResponse>, Status> {
        let op = cmd.encode_checked(&self.inner.config.kv).map_err(kv_status)?;
        let (tx, rx) = oneshot::channel();
        self.local(ClientRequest::Write { op, reply: tx }, rx).await
    }

    /// A serializable read from the local state.
    pub(crate) async fn serializable(
        &self,
        q: KvQuery,
    ) -> Result<(KvResponse, HeaderStamp), Status> {
        let (tx, rx) = oneshot::channel();
        let req = ClientRequest::Read { query: q.encode(), linearizable: false, reply: tx };
        match self.local(req, rx).await? {
            Some(r) => Ok((r, self.stamp())),
            None => Err(Status::unavailable(LEADER_CHANGED)),
        }
    }
}

#[tonic::async_trait]
impl Kv for Service {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let pb_req = request.into_inner();
        let r = convert::range_request(pb_req.clone()).map_err(kv_status)?;
        synod_kv::command::check_range(&r).map_err(kv_status)?;
        let (resp, stamp) = if r.serializable {
            self.serializable(KvQuery::Range(r)).await?
        } else {
            match self
                .execute(forwarded, Op::Read(KvQuery::Range(r)), PbRequest::Range(pb_req))
                .await?
            {
                Answer::Remote(PbResponse::Range(r)) => return Ok(Response::new(r)),
                Answer::Remote(_) => return Err(unexpected("range")),
                Answer::Local(resp, stamp) => (resp, stamp),
            }
        };
        match resp {
            KvResponse::Range(r) => {
                let h = stamp.header(r.header.revision);
                Ok(Response::new(convert::range_response(r, h)))
            }
            _ => Err(unexpected("range")),
        }
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = convert::put_request(request.into_inner());
        let cmd = KvCommand::Put(req.clone());
        match self.execute(forwarded, Op::Write(cmd), PbRequest::Put(req)).await? {
            Answer::Remote(PbResponse::Put(r)) => Ok(Response::new(r)),
            Answer::Local(KvResponse::Put(r), stamp) => {
                let h = stamp.header(r.header.revision);
                Ok(Response::new(convert::put_response(r, h)))
            }
            _ => Err(unexpected("put")),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let pb_req = request.into_inner();
        let cmd = KvCommand::DeleteRange(convert::delete_request(pb_req.clone()));
        match self.execute(forwarded, Op::Write(cmd), PbRequest::Delete(pb_req)).await? {
            Answer::Remote(PbResponse::Delete(r)) => Ok(Response::new(r)),
            Answer::Local(KvResponse::DeleteRange(r), stamp) => {
                let h = stamp.header(r.header.revision);
                Ok(Response::new(convert::delete_response(r, h)))
            }
            _ => Err(unexpected("delete_range")),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let pb_req = request.into_inner();
        let cmd = KvCommand::Txn(convert::txn_request(pb_req.clone()).map_err(kv_status)?);
        match self.execute(forwarded, Op::Write(cmd), PbRequest::Txn(pb_req)).await? {
            Answer::Remote(PbResponse::Txn(r)) => Ok(Response::new(r)),
            Answer::Local(KvResponse::Txn(r), stamp) => {
                let h = stamp.header(r.header.revision);
                Ok(Response::new(convert::txn_response(r, h)))
            }
            _ => Err(unexpected("txn")),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let pb_req = request.into_inner();
        let cmd = KvCommand::Compact(convert::compact_request(pb_req));
        match self.execute(forwarded, Op::Write(cmd), PbRequest::Compact(pb_req)).await? {
            Answer::Remote(PbResponse::Compact(r)) => Ok(Response::new(r)),
            Answer::Local(KvResponse::Compact(r), stamp) => {
                let h = stamp.header(r.header.revision);
                Ok(Response::new(pb::CompactionResponse { header: Some(h) }))
            }
            _ => Err(unexpected("compact")),
        }
    }
}

#[cfg(test)]
mod future_size {
    use super::*;

    /// Every request's future is boxed (by tonic) and moved into its task: it
    /// stays small because the rare forward to the leader is boxed apart.
    #[tokio::test]
    async fn a_request_future_does_not_carry_the_forward() {
        let (requests, _rx) = mpsc::channel(1);
        let (_tx, status) = watch::channel(crate::driver::NodeStatus {
            id: NodeId(1),
            role: synod_core::Role::Follower,
            term: 0,
            leader: None,
            commit_index: 0,
            applied_index: 0,
            last_index: 0,
            revision: 1,
            snapshot_index: 0,
        });
        let config = ServiceConfig {
            node_id: NodeId(1),
            cluster_id: 1,
            members: vec![],
            kv: KvConfig::default(),
            request_timeout: Duration::from_secs(1),
            serve_locally: false,
            agreed_clock: false,
        };
        let service = Service::new(config, requests, status);
        let put = || PbRequest::Put(convert::put_request(pb::PutRequest::default()));
        let execute =
            service.execute(false, Op::Read(KvQuery::LeaseLeases(Default::default())), put());
        let forward = service.forward(NodeId(2), put());
        let (execute, forward) = (std::mem::size_of_val(&execute), std::mem::size_of_val(&forward));
        assert!(
            execute < forward && execute <= 2048,
            "execute's future is {execute} bytes (a forward's: {forward})"
        );
    }
}
