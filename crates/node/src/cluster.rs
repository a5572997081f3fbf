//! etcd's `Cluster` service: `MemberList` (the live membership, learners
//! marked), `MemberAdd`, `MemberRemove` and `MemberPromote`, mapped onto the
//! core's membership changes (Raft: joint consensus and learners; see
//! [`crate::members`]), and `MemberUpdate` (new peer URLs, registered
//! through the log without a membership change).
//!
//! Changes are carried out by the leader; a follower forwards them (once,
//! marked like the KV requests). Errors carry etcd's codes and messages:
//!
//! | condition | code | message |
//! |---|---|---|
//! | unknown id | NotFound | `etcdserver: member not found` |
//! | promote of a voter | FailedPrecondition | `etcdserver: can only promote a learner member` |
//! | promote of a lagging learner | FailedPrecondition | `etcdserver: can only promote a learner member which is in sync with leader` |
//! | peer URL in use | FailedPrecondition | `etcdserver: Peer URLs already exists` |
//! | bad peer URL | InvalidArgument | `etcdserver: given member URLs are invalid` |
//! | another change in flight | Unavailable | `etcdserver: unhealthy cluster` |
//! | protocol without changes | Unimplemented | `synod: membership changes are not supported by the paxos protocol` |
//!
//! etcd's `MemberAdd` carries peer URLs only: like an etcd member, a node
//! publishes its own client URL once it runs ([`publish_client_url`]: a
//! `MemberUpdate` for itself with the [`CLIENT_URL`] metadata key), so
//! `MemberList` shows it. `synod member add` may pass it up front in the
//! same key.

use crate::driver::ClientRequest;
use crate::members::{MemberChange, MemberError};
use crate::service::{FORWARDED, MAX_ROUTE_ATTEMPTS, Service, is_forwarded};
use std::net::SocketAddr;
use std::time::Duration;
use synod_core::Role;
use synod_etcdpb::etcdserverpb as pb;
use synod_etcdpb::etcdserverpb::cluster_client::ClusterClient;
use synod_etcdpb::etcdserverpb::cluster_server::Cluster;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// The metadata key carrying a new member's client URL on `MemberAdd`.
pub const CLIENT_URL: &str = "synod-client-url";

/// etcd's messages.
pub const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
/// Promote of a member that is not a learner.
pub const NOT_A_LEARNER: &str = "etcdserver: can only promote a learner member";
/// Promote of a learner that has not caught up.
pub const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";
/// Another change is in flight.
pub const UNHEALTHY_CLUSTER: &str = "etcdserver: unhealthy cluster";
/// A peer URL already used by a member.
pub const PEER_URL_EXISTS: &str = "etcdserver: Peer URLs already exists";
/// A peer URL that is not `http://ip:port`.
pub const BAD_URLS: &str = "etcdserver: given member URLs are invalid";

/// The gRPC status for a refused change.
pub fn member_status(e: &MemberError) -> Status {
    match e {
        MemberError::Unsupported(protocol) => Status::unimplemented(format!(
            "synod: membership changes are not supported by the {protocol} protocol"
        )),
        MemberError::NotLeader { .. } => Status::unavailable("etcdserver: no leader"),
        MemberError::InProgress => Status::unavailable(UNHEALTHY_CLUSTER),
        MemberError::NotFound | MemberError::Removed => Status::not_found(MEMBER_NOT_FOUND),
        MemberError::NotLearner => Status::failed_precondition(NOT_A_LEARNER),
        MemberError::NotCaughtUp => Status::failed_precondition(LEARNER_NOT_READY),
        MemberError::PeerAddrExists => Status::failed_precondition(PEER_URL_EXISTS),
        MemberError::Invalid(why) => Status::invalid_argument(format!("synod: {why}")),
        MemberError::LeaderChanged => Status::unavailable("etcdserver: leader changed"),
        MemberError::Stopped => Status::unavailable("etcdserver: server stopped"),
    }
}

/// `http://host:port` (or `host:port`) as a socket address; hosts must be
/// IP addresses.
pub fn parse_url(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).unwrap_or(url);
    rest.trim_end_matches('/').parse().ok()
}

/// The [`CLIENT_URL`] metadata of `request`, if any.
fn client_url_of<T>(request: &Request<T>) -> Option<String> {
    request.metadata().get(CLIENT_URL).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The peer address of a `MemberAdd` / `MemberUpdate` (exactly one URL) and
/// the client address its metadata names, if any.
fn addresses(
    peer_urls: &[String],
    client_url: Option<&str>,
) -> Result<(SocketAddr, Option<SocketAddr>), Status> {
    let bad = || Status::invalid_argument(BAD_URLS);
    let peer_addr = match peer_urls {
        [one] => parse_url(one).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    let client_addr = match client_url {
        Some(u) => Some(parse_url(u).ok_or_else(bad)?),
        None => None,
    };
    Ok((peer_addr, client_addr))
}

/// `request` carrying `client_url` in its [`CLIENT_URL`] metadata.
fn with_client_url<T>(mut request: Request<T>, client_url: Option<&str>) -> Request<T> {
    if let Some(u) = client_url.and_then(|u| u.parse().ok()) {
        request.metadata_mut().insert(CLIENT_URL, u);
    }
    request
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

impl Service {
    /// Publishes the live membership for `MemberList` and for forwarding to
    /// members added at runtime (the driver's [`crate::Driver::members`]).
    /// Without it the configured members are listed.
    pub fn with_members(
        self,
        members: tokio::sync::watch::Receiver<std::sync::Arc<crate::members::MembersView>>,
    ) -> Service {
        let _ = self.inner().members.set(members);
        self
    }

    /// The members as etcd reports them.
    fn pb_members(&self) -> Vec<pb::Member> {
        let live = self.inner().members.get().map(|m| m.borrow().clone());
        match live {
            Some(view) if !view.members.is_empty() => view
                .members
                .iter()
                .map(|m| pb::Member {
                    id: m.id,
                    name: m.name.clone(),
                    peer_ur_ls: m.peer_addr.map(url).into_iter().collect(),
                    client_ur_ls: m.client_addr.map(url).into_iter().collect(),
                    is_learner: m.is_learner,
                })
                .collect(),
            _ => self
                .inner()
                .config
                .members
                .iter()
                .map(|m| pb::Member {
                    id: m.id.0,
                    name: format!("n{}", m.id.0),
                    peer_ur_ls: vec![format!("http://{}", m.peer_addr)],
                    client_ur_ls: vec![format!("http://{}", m.client_addr)],
                    is_learner: false,
                })
                .collect(),
        }
    }

    fn header(&self) -> pb::ResponseHeader {
        let st = *self.inner().status.borrow();
        self.stamp().header(st.revision)
    }

    /// Carries out `change` on the leader: locally, or forwarded (once) by
    /// `forward`, whose answer is the leader's.
    async fn change<R, F, Fut>(
        &self,
        forwarded: bool,
        change: MemberChange,
        forward: F,
    ) -> Result<Changed<R>, Status>
    where
        F: Fn(ClusterClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<R, Status>>,
    {
        let me = self.inner().config.node_id;
        let timeout = self.inner().config.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut status = self.inner().status.clone();
        for _ in 0..MAX_ROUTE_ATTEMPTS {
            let st = *status.borrow_and_update();
            match st.leader {
                Some(l) if l != me && !forwarded => {
                    let client = ClusterClient::new(self.channel(l)?);
                    return Ok(Changed::Forwarded(forward(client).await?));
                }
                Some(l) if l == me && st.role == Role::Leader => {
                    let (reply, rx) = oneshot::channel();
                    let request = ClientRequest::Member { change: change.clone(), reply };
                    let stopped = || Status::unavailable("etcdserver: server stopped");
                    self.inner().requests.send(request).await.map_err(|_| stopped())?;
                    match tokio::time::timeout_at(deadline, rx).await {
                        Err(_) => return Err(Status::unavailable("etcdserver: request timed out")),
                        Ok(Err(_)) => return Err(stopped()),
                        Ok(Ok(Ok(id))) => return Ok(Changed::Here(id)),
                        Ok(Ok(Err(MemberError::NotLeader { .. }))) => {}
                        Ok(Ok(Err(e))) => return Err(member_status(&e)),
                    }
                }
                _ => {}
            }
            // No leader known (or it just changed): wait for news.
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Status::unavailable("etcdserver: server stopped")),
                Err(_) => return Err(Status::unavailable("etcdserver: no leader")),
            }
        }
        Err(Status::unavailable("etcdserver: leader changed"))
    }

    /// Waits (briefly) until this node's published view agrees that `id`
    /// is (or is no longer) a member, so the answer lists the new
    /// membership.
    async fn members_after(&self, id: u64, present: bool) -> Vec<pb::Member> {
        let Some(rx) = self.inner().members.get() else { return self.pb_members() };
        let mut rx = rx.clone();
        let settled =
            |v: &crate::members::MembersView| v.members.iter().any(|m| m.id == id) == present;
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|v| settled(v))).await;
        self.pb_members()
    }
}

/// Where a membership change was carried out.
enum Changed<R> {
    /// By this node, the leader: the member's id.
    Here(u64),
    /// By the leader this node forwarded it to: its answer.
    Forwarded(R),
}

fn mark<T>(t: T, timeout: Duration) -> Request<T> {
    let mut r = Request::new(t);
    r.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    r.set_timeout(timeout);
    r
}

#[tonic::async_trait]
impl Cluster for Service {
    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let mut members = self.pb_members();
        if self.inner().config.serve_locally
            && std::env::var(crate::pbft_service::FAULT_WRONG_REPLIES).is_ok_and(|v| v == "1")
        {
            // Fault injection (a lying PBFT replica, see `pbft_service`): a
            // member that does not exist (no client URL, so that a client
            // discovering replicas from this list does not call it).
            members.push(pb::Member {
                id: 0xbad,
                name: format!("forged by replica {}", self.inner().config.node_id.0),
                peer_ur_ls: vec!["http://127.0.0.1:1".into()],
                client_ur_ls: Vec::new(),
                is_learner: false,
            });
        }
        Ok(Response::new(pb::MemberListResponse { header: Some(self.header()), members }))
    }

    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let client_url = client_url_of(&request);
        let req = request.into_inner();
        let (peer_addr, client_addr) = addresses(&req.peer_ur_ls, client_url.as_deref())?;
        let change = MemberChange::Add { peer_addr, client_addr, learner: req.is_learner };
        let timeout = self.inner().config.request_timeout;
        let outcome = self
            .change(forwarded, change, |mut client| {
                let r = with_client_url(mark(req.clone(), timeout), client_url.as_deref());
                async move { Ok(client.member_add(r).await?.into_inner()) }
            })
            .await?;
        match outcome {
            Changed::Here(id) => {
                let members = self.members_after(id, true).await;
                let member = pb::Member {
                    id,
                    name: String::new(),
                    peer_ur_ls: vec![url(peer_addr)],
                    client_ur_ls: client_addr.map(url).into_iter().collect(),
                    is_learner: req.is_learner,
                };
                Ok(Response::new(pb::MemberAddResponse {
                    header: Some(self.header()),
                    member: Some(member),
                    members,
                }))
            }
            Changed::Forwarded(resp) => Ok(Response::new(resp)),
        }
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let timeout = self.inner().config.request_timeout;
        let outcome = self
            .change(forwarded, MemberChange::Remove { id: req.id }, |mut client| async move {
                Ok(client.member_remove(mark(req, timeout)).await?.into_inner())
            })
            .await?;
        match outcome {
            Changed::Here(id) => {
                let members = self.members_after(id, false).await;
                Ok(Response::new(pb::MemberRemoveResponse { header: Some(self.header()), members }))
            }
            Changed::Forwarded(resp) => Ok(Response::new(resp)),
        }
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let timeout = self.inner().config.request_timeout;
        let outcome = self
            .change(forwarded, MemberChange::Promote { id: req.id }, |mut client| async move {
                Ok(client.member_promote(mark(req, timeout)).await?.into_inner())
            })
            .await?;
        match outcome {
            Changed::Here(id) => {
                let mut rx = self.inner().members.get().cloned();
                if let Some(rx) = rx.as_mut() {
                    let voter = |v: &crate::members::MembersView| {
                        v.members.iter().any(|m| m.id == id && !m.is_learner)
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|v| voter(v)))
                        .await;
                }
                Ok(Response::new(pb::MemberPromoteResponse {
                    header: Some(self.header()),
                    members: self.pb_members(),
                }))
            }
            Changed::Forwarded(resp) => Ok(Response::new(resp)),
        }
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let client_url = client_url_of(&request);
        let req = request.into_inner();
        let (peer_addr, client_addr) = addresses(&req.peer_ur_ls, client_url.as_deref())?;
        let change = MemberChange::Update { id: req.id, peer_addr, client_addr };
        let timeout = self.inner().config.request_timeout;
        let outcome = self
            .change(forwarded, change, |mut client| {
                let r = with_client_url(mark(req.clone(), timeout), client_url.as_deref());
                async move { Ok(client.member_update(r).await?.into_inner()) }
            })
            .await?;
        match outcome {
            Changed::Here(id) => {
                let mut rx = self.inner().members.get().cloned();
                if let Some(rx) = rx.as_mut() {
                    let updated = |v: &crate::members::MembersView| {
                        v.members.iter().any(|m| m.id == id && m.peer_addr == Some(peer_addr))
                    };
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|v| updated(v)))
                            .await;
                }
                Ok(Response::new(pb::MemberUpdateResponse {
                    header: Some(self.header()),
                    members: self.pb_members(),
                }))
            }
            Changed::Forwarded(resp) => Ok(Response::new(resp)),
        }
    }
}

/// First pause between attempts to publish a client URL; doubled up to
/// [`PUBLISH_MAX_BACKOFF`].
const PUBLISH_BACKOFF: Duration = Duration::from_millis(200);
const PUBLISH_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Makes the membership list this node's client address, as an etcd member
/// publishes its client URLs when it starts: while the live membership has
/// an entry for this node without `client_addr` (a member added by
/// `etcdctl member add`, which carries peer URLs only), sends a
/// `MemberUpdate` for itself (routed to the leader), retrying with backoff.
/// Ends once the address is listed or when `stop` fires; while the view
/// does not list this node (not a member yet, or a protocol that reports no
/// membership) it only waits for the view to change.
pub async fn publish_client_url(
    service: Service,
    peer_addr: SocketAddr,
    client_addr: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(mut members) = service.inner().members.get().cloned() else { return };
    let me = service.inner().config.node_id;
    let mut backoff = PUBLISH_BACKOFF;
    loop {
        let listed = {
            let view = members.borrow_and_update();
            view.members.iter().find(|m| m.id == me.0).map(|m| m.client_addr)
        };
        match listed {
            Some(Some(_)) => return,
            // Not a member (yet, or any more): wait for the view to change.
            None => {
                tokio::select! {
                    r = members.changed() => if r.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
            Some(None) => {}
        }
        let update = pb::MemberUpdateRequest { id: me.0, peer_ur_ls: vec![url(peer_addr)] };
        let request = with_client_url(Request::new(update), Some(&url(client_addr)));
        match service.member_update(request).await {
            Ok(_) => tracing::info!(node = %me, client = %client_addr, "client URL published"),
            Err(e) => tracing::debug!(node = %me, error = %e, "client URL not published yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(PUBLISH_MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_parse_as_etcd_writes_them() {
        let addr: SocketAddr = "127.0.0.1:2480".parse().expect("addr");
        assert_eq!(parse_url("http://127.0.0.1:2480"), Some(addr));
        assert_eq!(parse_url("http://127.0.0.1:2480/"), Some(addr));
        assert_eq!(parse_url("127.0.0.1:2480"), Some(addr));
        assert_eq!(parse_url("http://example.com:2480"), None);
        assert_eq!(parse_url("http://127.0.0.1"), None);
    }

    #[test]
    fn refusals_carry_etcds_codes_and_messages() {
        let cases = [
            (MemberError::NotFound, tonic::Code::NotFound, MEMBER_NOT_FOUND),
            (MemberError::NotLearner, tonic::Code::FailedPrecondition, NOT_A_LEARNER),
            (MemberError::NotCaughtUp, tonic::Code::FailedPrecondition, LEARNER_NOT_READY),
            (MemberError::InProgress, tonic::Code::Unavailable, UNHEALTHY_CLUSTER),
        ];
        for (e, code, message) in cases {
            let s = member_status(&e);
            assert_eq!((s.code(), s.message()), (code, message), "{e:?}");
        }
        let s = member_status(&MemberError::Unsupported("paxos"));
        assert_eq!(s.code(), tonic::Code::Unimplemented);
        assert!(s.message().contains("paxos"), "{}", s.message());
    }
}
