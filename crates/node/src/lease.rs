//! The etcd `Lease` service (Grant, Revoke, KeepAlive stream, TimeToLive,
//! Leases) and the leader's lease expiry.
//!
//! Time. Every lease command is stamped with the clock of the leader that
//! proposes it (`Service::now`); applying never reads a clock, so every
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
//! Keep-alives are leader-local ([`Lessor`]), as etcd's lessor renews on
//! the primary only: a keep-alive that reaches the leader (directly or
//! forwarded by a follower) restarts the lease's TTL in the leader's memory,
//! with no log entry and no fsync. The replicated deadline stays where the
//! last grant, promote or logged keep-alive put it; the leader's expiry
//! check skips a lease whose in-memory deadline is still ahead.
//!
//! Why this is safe. (1) A lease only ever expires by a `LeaseExpire` (or
//! `LeaseRevoke`) entry that a leader proposed and the log committed;
//! nothing else removes one, and every replica applies it at the same
//! position. (2) A leader that has lost leadership cannot commit anything,
//! so its in-memory renewals (or their loss) cannot make a lease expire on
//! its own: a deposed leader's expiry proposals never commit. (3) A new
//! leader does not know the old one's in-memory renewals, and needs not:
//! before it serves a local keep-alive or looks for expired leases it
//! commits a `LeasePromote`, which grants every lease a full TTL from its
//! own clock, so a lease the old leader renewed lives at least one full TTL
//! after the new leader took office (etcd 3.4 does the same). (4) On one
//! leader, a keep-alive and the expiry check serialise on the lessor's lock
//! and read the same monotonic clock: the check proposes a lease only if
//! both its replicated and its in-memory deadline are at or before the
//! check's `now`, and a keep-alive renews in memory only if a lower bound
//! of those deadlines is after its own `now`. A keep-alive that comes later
//! than the check that chose its lease therefore finds it expired and goes
//! through the log, ordered against the `LeaseExpire` (if it is applied
//! first, the store's own deadline check keeps the lease).
//!
//! PBFT. There the stamped `now` is not used: the state machine applies
//! every lease command at its batch's agreed time ([`synod_core::Committed::time`],
//! the primary's timestamp that correct backups checked against their own
//! clocks, never going back), and `Service::now` reads the same
//! wall-anchored scale ([`crate::clock`]), so the primary's expiry check
//! compares like with like. Clients may also send grant, keep-alive, revoke
//! and time-to-live signed through `synodpb.Pbft` ([`crate::pbft_service`]).
//!
//! etcd's answers kept: a keep-alive for an unknown lease answers TTL 0, a
//! TimeToLive for one answers TTL -1; a revoke of one is `NotFound:
//! etcdserver: requested lease not found`.

use crate::service::{
    Answer, Op, PbRequest, PbResponse, Service, is_forwarded, kv_status, unexpected,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use synod_core::{Role, Time};
use synod_etcdpb::etcdserverpb as pb;
use synod_etcdpb::etcdserverpb::lease_server::Lease;
use synod_kv::{KvCommand, KvError, KvQuery, KvResponse, api};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// How often the leader looks for expired leases.
pub const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How long a keep-alive reaching a new leader waits for the leader's
/// `LeasePromote` to commit (one expiry check and a commit, normally)
/// before it is logged anyway.
pub const PROMOTION_WAIT: Duration = Duration::from_secs(2);
/// Leases expired in one `LeaseExpire` at most.
pub const MAX_EXPIRED_PER_ROUND: u64 = 256;
/// Keep-alive answers queued per stream.
pub const KEEP_ALIVE_BUFFER: usize = 64;
/// Expiry candidates (leases whose replicated deadline passed) read per
/// check at most. When a check reads this many, some may be leases kept
/// alive in memory hiding expired ones behind them, so the leader logs
/// their in-memory deadlines ([`MAX_EXPIRED_PER_ROUND`] a round) to move
/// them out of the way.
pub const MAX_EXPIRY_CANDIDATES: u64 = 65_536;

/// The leader's in-memory keep-alives (etcd's lessor on the primary): for
/// each lease kept alive since this node's leadership promoted leases, when
/// it was last renewed and its TTL. Empty and disabled on a non-leader.
#[derive(Debug, Default)]
pub struct Lessor {
    state: Mutex<LessorState>,
}

#[derive(Debug, Default)]
struct LessorState {
    /// The term in which this node, as leader, committed `LeasePromote`;
    /// local renewals are served only in that term.
    term: Option<u64>,
    /// Lease id → (renewed at, TTL in seconds), on this leader's clock.
    renewed: HashMap<i64, (Time, i64)>,
}

/// `at + ttl_secs`.
fn renewed_deadline(at: Time, ttl_secs: i64) -> Time {
    at + Duration::from_secs(ttl_secs.max(0) as u64)
}

impl Lessor {
    fn lock(&self) -> std::sync::MutexGuard<'_, LessorState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leadership of `term` has promoted every lease: local renewals start.
    fn promote(&self, term: u64) {
        let mut s = self.lock();
        s.term = Some(term);
        s.renewed.clear();
    }

    /// Not the leader (any more): forget every local renewal.
    fn demote(&self) {
        let mut s = self.lock();
        s.term = None;
        s.renewed.clear();
    }

    /// The term local renewals are served in, if any.
    fn term(&self) -> Option<u64> {
        self.lock().term
    }

    /// Renews lease `id` in memory if, at `now()` (read under the lock), it
    /// is certainly not yet expired: `replicated_floor` is a lower bound of
    /// its replicated deadline (if known). False: the caller must go through
    /// the log.
    fn renew(
        &self,
        term: u64,
        id: i64,
        ttl_secs: i64,
        replicated_floor: Option<Time>,
        now: impl FnOnce() -> Time,
    ) -> bool {
        let mut s = self.lock();
        if s.term != Some(term) {
            return false;
        }
        let now = now();
        let local = s.renewed.get(&id).map(|&(at, ttl)| renewed_deadline(at, ttl));
        let alive = replicated_floor.into_iter().chain(local).any(|d| d > now);
        if alive {
            s.renewed.insert(id, (now, ttl_secs));
        }
        alive
    }

    /// The lease's in-memory deadline, if it was renewed locally.
    fn deadline(&self, id: i64) -> Option<Time> {
        self.lock().renewed.get(&id).map(|&(at, ttl)| renewed_deadline(at, ttl))
    }

    /// Forgets lease `id` (revoked).
    fn forget(&self, id: i64) {
        self.lock().renewed.remove(&id);
    }

    /// Of `candidates` (leases whose replicated deadline is at or before
    /// `now`), those also expired in memory at `now()` (read under the lock;
    /// it must be at or after `now`), with that time; and the renewed ones
    /// (id, renewed at) among them. Drops renewals that have run out.
    fn expired(
        &self,
        candidates: &[i64],
        now: impl FnOnce() -> Time,
    ) -> (Vec<i64>, Vec<(i64, Time)>, Time) {
        let mut s = self.lock();
        let now = now();
        s.renewed.retain(|_, &mut (at, ttl)| renewed_deadline(at, ttl) > now);
        let mut expired = Vec::new();
        let mut kept = Vec::new();
        for &id in candidates {
            match s.renewed.get(&id) {
                Some(&(at, _)) => kept.push((id, at)),
                None => expired.push(id),
            }
        }
        (expired, kept, now)
    }
}

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
        let lessor = &service.inner().lessor;
        if st.role != Role::Leader || st.leader != Some(me) {
            promoted_term = None;
            lessor.demote();
            continue;
        }
        if promoted_term != Some(st.term) {
            let cmd = KvCommand::LeasePromote { now: service.now() };
            match service.local_write(&cmd).await {
                Ok(Some(_)) => {
                    tracing::info!(term = st.term, "leases promoted: every TTL restarts now");
                    promoted_term = Some(st.term);
                    lessor.promote(st.term);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "lease promotion failed; retrying"),
            }
            continue;
        }
        if lessor.term() != Some(st.term) {
            lessor.demote();
            promoted_term = None;
            continue;
        }
        let now = service.now();
        let q = KvQuery::ExpiredLeases { now, max: MAX_EXPIRY_CANDIDATES };
        let candidates = match service.serializable(q).await {
            Ok((KvResponse::ExpiredLeases(ids), _)) => ids,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read expired leases");
                continue;
            }
        };
        if candidates.is_empty() {
            continue;
        }
        // Filtered under the lessor's lock at a `now` no earlier than the
        // query's, so every candidate's replicated deadline has passed too.
        let (mut ids, kept, now) = lessor.expired(&candidates, || service.now());
        if candidates.len() as u64 >= MAX_EXPIRY_CANDIDATES {
            // Log some in-memory renewals, so that leases kept alive cannot
            // hide expired ones beyond the candidate bound for ever.
            for &(id, at) in kept.iter().take(MAX_EXPIRED_PER_ROUND as usize) {
                let cmd = KvCommand::LeaseKeepAlive {
                    request: api::LeaseKeepAliveRequest { id },
                    now: at,
                };
                if let Err(e) = service.local_write(&cmd).await {
                    tracing::debug!(error = %e, "lease checkpoint failed");
                    break;
                }
            }
        }
        ids.truncate(MAX_EXPIRED_PER_ROUND as usize);
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
    /// A keep-alive served by the leader from memory, or `None` when this
    /// node is not a promoted leader or the lease may have expired (the
    /// caller then routes it through the log). An unknown lease is `None`
    /// too: the logged path gives etcd's answer.
    async fn keep_alive_local(&self, id: i64) -> Option<pb::LeaseKeepAliveResponse> {
        let me = self.inner().config.node_id;
        let st = *self.inner().status.borrow();
        let lessor = &self.inner().lessor;
        if st.role != Role::Leader || st.leader != Some(me) || lessor.term() != Some(st.term) {
            return None;
        }
        // Asked after the promote of this term was applied, so the deadline
        // is on this leader's clock.
        let now = self.now();
        let q = KvQuery::LeaseTimeToLive {
            request: api::LeaseTimeToLiveRequest { id, keys: false },
            now,
        };
        let Ok((KvResponse::LeaseTimeToLive(t), stamp)) = self.serializable(q).await else {
            return None;
        };
        // `ttl` is whole seconds left, rounded toward zero: a floor only
        // when positive.
        let floor = (t.ttl > 0).then(|| now + Duration::from_secs(t.ttl as u64));
        if !lessor.renew(st.term, id, t.granted_ttl, floor, || self.now()) {
            return None;
        }
        Some(pb::LeaseKeepAliveResponse {
            header: Some(stamp.header(t.header.revision)),
            id,
            ttl: t.granted_ttl,
        })
    }

    /// While this node leads a term whose leases it has not yet promoted,
    /// waits (at most [`PROMOTION_WAIT`]) for [`run_expiry`] to commit the
    /// promote; true if it waited and the promote came. False at once when
    /// this node does not lead, or leads with its leases already promoted
    /// (nothing to wait for: the local path has answered already).
    async fn await_lease_promotion(&self) -> bool {
        let me = self.inner().config.node_id;
        let deadline = tokio::time::Instant::now() + PROMOTION_WAIT;
        let mut waited = false;
        loop {
            let st = *self.inner().status.borrow();
            if st.role != Role::Leader || st.leader != Some(me) {
                return false;
            }
            if self.inner().lessor.term() == Some(st.term) {
                return waited;
            }
            waited = true;
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// One keep-alive, routed to the leader.
    pub(crate) async fn keep_alive_once(
        &self,
        forwarded: bool,
        r: pb::LeaseKeepAliveRequest,
    ) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let id = r.id;
        if let Some(answer) = self.keep_alive_local(id).await {
            return Ok(answer);
        }
        // A new leader that has not yet committed its `LeasePromote` must
        // not log the keep-alive: applied before the promote, it would be
        // stamped with this node's clock and compared with a deadline the
        // old leader's clock set, and answer "expired" for a lease that is
        // not (and that the promote is about to give a full TTL). Wait for
        // the promote, as etcd's new primary renews only once promoted.
        if self.await_lease_promotion().await
            && let Some(answer) = self.keep_alive_local(id).await
        {
            return Ok(answer);
        }
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
        let id = r.id;
        let cmd = KvCommand::LeaseRevoke(api::LeaseRevokeRequest { id });
        match self.execute(forwarded, Op::Write(cmd), PbRequest::LeaseRevoke(r)).await? {
            Answer::Remote(PbResponse::LeaseRevoke(r)) => Ok(Response::new(r)),
            Answer::Local(KvResponse::LeaseRevoke(g), stamp) => {
                self.inner().lessor.forget(id);
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
                // The leader's in-memory renewal, when later than the log's.
                let renewed = self.inner().lessor.deadline(t.id).map(|d| {
                    let left_us = i128::from(d.as_micros()) - i128::from(self.now().as_micros());
                    (left_us / 1_000_000) as i64
                });
                Ok(Response::new(pb::LeaseTimeToLiveResponse {
                    header: Some(stamp.header(t.header.revision)),
                    id: t.id,
                    ttl: renewed.map_or(t.ttl, |r| r.max(t.ttl)),
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
                let mut leases: Vec<pb::LeaseStatus> =
                    l.leases.into_iter().map(|s| pb::LeaseStatus { id: s.id }).collect();
                if self.inner().config.serve_locally
                    && std::env::var(crate::pbft_service::FAULT_WRONG_REPLIES)
                        .is_ok_and(|v| v == "1")
                {
                    // Fault injection (a lying PBFT replica, see
                    // `pbft_service`): a lease that does not exist.
                    leases.push(pb::LeaseStatus { id: crate::pbft_service::FORGED_LEASE_ID });
                }
                Ok(Response::new(pb::LeaseLeasesResponse {
                    header: Some(stamp.header(l.header.revision)),
                    leases,
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
