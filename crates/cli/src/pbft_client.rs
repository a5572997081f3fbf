//! Synod's own PBFT client (issue 7 §7): on a PBFT cluster `synod kv`
//! accepts a result only when f+1 replicas sent the same one, so at least
//! one correct replica vouches for it (a plain etcd client talking to one
//! replica gets that replica's answer, which a faulty replica can make up).
//!
//! The client needs a PBFT client key file (`c<i>.keys`, from `synod
//! pbft-keys` or `synod up --protocol pbft`): its id and secret, and every
//! replica's public key. For each request it builds the signed envelope
//! itself (client id, sequence number, the encoded store command), sends
//! the same bytes to every replica (`synodpb.Pbft/Submit`), and counts the
//! signed replies ([`synod_node::pbft_reply::Tally`]). A call that fails or
//! takes longer than [`ATTEMPT_TIMEOUT`] is sent again to that replica (a
//! retry of an executed request is answered from the replicas' session
//! cache, never executed twice) until `--timeout-ms` runs out, unless the
//! replica refused the request for good (bad signature, stale, malformed:
//! the refusal's kind, [`Refusal`], carried in the error's metadata, says
//! which): once every replica answered or refused, the client stops. Reads go
//! through the same ordered path (a store range ordered like a write), so a
//! linearizable get is as trustworthy as a put; `--consistency=s` reads one
//! replica's local state, through the plain etcd API.
//!
//! Which replicas: the `--endpoints` given, plus the client addresses the
//! first of them lists in `MemberList` when fewer than n were given. A lying
//! member list can only make the client wait: replies are checked against
//! the replicas' public keys in the key file, not against addresses.
//!
//! Sequence numbers start from the clock (microseconds since the epoch) so
//! that consecutive commands with one key never reuse one; commands run
//! *concurrently* with one key may have one of them refused as superseded
//! (a client session orders its requests): give concurrent clients their
//! own keys (`synod pbft-keys --clients N`).

use crate::client::{ClientOpts, Failure};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use synod_etcdpb::etcdserverpb as pb;
use synod_etcdpb::etcdserverpb::cluster_client::ClusterClient;
use synod_etcdpb::synodpb::pbft_client::PbftClient as PbftRpc;
use synod_etcdpb::synodpb::{SubmitReply, SubmitRequest};
use synod_kv::{KvCommand, KvConfig, KvResponse, decode_result};
use synod_node::convert::{self, HeaderStamp};
use synod_node::pbft_keys::{ClientIdentity, load_client};
use synod_node::pbft_refusal::Refusal;
use synod_node::pbft_reply::Tally;
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

/// Where `synod up` (default data directory) writes the client key.
pub const DEFAULT_KEY: &str = "synod-data/c1.keys";
/// Where `synod up` writes a second client key, which `synod watch` uses by
/// default: a watch is a client session of its own, and a write with the
/// key a running watch polls with may be refused as superseded.
pub const DEFAULT_WATCH_KEY: &str = "synod-data/c2.keys";
/// One call to one replica waits at most this long before it is sent again.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before a failed call to a replica is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Calls per replica for one request, at most.
const MAX_ATTEMPTS_PER_REPLICA: u32 = 50;

/// One call's outcome: the reply, or how the replica refused it (or the
/// call failed: [`Refusal::Unavailable`], [`Refusal::TimedOut`]) and why.
type Attempt = Result<SubmitReply, (Refusal, String)>;

/// Why a request got no result f+1 replicas agree on.
#[derive(Debug)]
struct NoResult {
    /// How the replicas that refused it refused it (the last refusal of
    /// each).
    refusals: Vec<Refusal>,
    /// What to tell the user.
    failure: Failure,
}

impl NoResult {
    /// Some replica refused the request as older than its client's
    /// session (stale, or superseded by a newer one): a read-only request
    /// may be sent again with a newer sequence number.
    fn outdated(&self) -> bool {
        self.refusals.iter().any(|r| r.is_outdated())
    }
}

impl From<Failure> for NoResult {
    fn from(failure: Failure) -> NoResult {
        NoResult { refusals: Vec::new(), failure }
    }
}

/// A PBFT client: its keys and a channel to every replica.
pub struct PbftClient {
    keys: ClientIdentity,
    replicas: Vec<(String, PbftRpc<Channel>)>,
    next_seq: u64,
    timeout: Duration,
    /// Replies dropped (bad signature, unknown replica, another request).
    pub dropped: u64,
}

fn channel(endpoint: &str, timeout: Duration) -> Result<Channel, Failure> {
    let url =
        if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") };
    Endpoint::from_shared(url)
        .map(|ep| ep.connect_timeout(timeout.min(ATTEMPT_TIMEOUT)).connect_lazy())
        .map_err(|e| Failure::Usage(format!("bad endpoint `{endpoint}`: {e}")))
}

/// Whether `endpoint` serves `synodpb.Pbft` (a PBFT replica): `None` if it
/// cannot be reached.
async fn serves_pbft(endpoint: &str, timeout: Duration) -> Option<bool> {
    let mut rpc = PbftRpc::new(channel(endpoint, timeout).ok()?);
    match tokio::time::timeout(timeout, rpc.submit(SubmitRequest::default())).await {
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => Some(false),
        Ok(Err(s)) if s.code() == tonic::Code::Unavailable => None,
        Ok(_) => Some(true),
        Err(_) => None,
    }
}

/// The PBFT client `synod kv` should use with `opts`: `None` for a cluster
/// that is not PBFT (the plain etcd path). A key given with
/// `--pbft-client-key` is always used; without it, [`DEFAULT_KEY`] is used
/// if it exists and the cluster runs PBFT; a PBFT cluster without a key is
/// an error that says what is missing.
pub async fn choose(opts: &ClientOpts) -> Result<Option<PbftClient>, Failure> {
    choose_among(opts, &[DEFAULT_KEY]).await
}

/// [`choose`] for `synod watch`: its default key is [`DEFAULT_WATCH_KEY`],
/// or [`DEFAULT_KEY`] where there is none (a data directory from before).
pub async fn choose_for_watch(opts: &ClientOpts) -> Result<Option<PbftClient>, Failure> {
    choose_among(opts, &[DEFAULT_WATCH_KEY, DEFAULT_KEY]).await
}

/// [`choose`] with the first of `defaults` that exists as the default key.
async fn choose_among(opts: &ClientOpts, defaults: &[&str]) -> Result<Option<PbftClient>, Failure> {
    let timeout = opts.timeout();
    if let Some(path) = &opts.pbft_client_key {
        return PbftClient::connect(path, &opts.endpoints, timeout).await.map(Some);
    }
    let mut pbft = None;
    for e in &opts.endpoints {
        if let Some(found) = serves_pbft(e, timeout).await {
            pbft = Some(found);
            break;
        }
    }
    if pbft != Some(true) {
        return Ok(None);
    }
    let Some(default) = defaults.iter().map(PathBuf::from).find(|p| p.exists()) else {
        return Err(Failure::Usage(format!(
            "the cluster runs PBFT: synod's client accepts a result only when f+1 replicas \
             agree, and needs a PBFT client key for that: pass --pbft-client-key FILE \
             (`synod up --protocol pbft` writes DATA_DIR/c1.keys, `synod pbft-keys` writes \
             c<i>.keys); none given, and no {} here. (etcdctl talks to one replica \
             and trusts its answer.)",
            defaults.join(" or ")
        )));
    };
    PbftClient::connect(&default, &opts.endpoints, timeout).await.map(Some)
}

impl PbftClient {
    /// A client with the key file at `key`, talking to `endpoints` (plus the
    /// members the first of them lists, when fewer than n are given).
    pub async fn connect(
        key: &Path,
        endpoints: &[String],
        timeout: Duration,
    ) -> Result<PbftClient, Failure> {
        let keys = load_client(key).map_err(Failure::Usage)?;
        let mut all: Vec<String> = endpoints.to_vec();
        if all.len() < keys.replicas.len() {
            for e in endpoints {
                let Ok(ch) = channel(e, timeout) else { continue };
                let listed = tokio::time::timeout(
                    timeout,
                    ClusterClient::new(ch).member_list(pb::MemberListRequest::default()),
                )
                .await;
                if let Ok(Ok(r)) = listed {
                    for m in r.into_inner().members {
                        if let Some(url) = m.client_ur_ls.first() {
                            let addr = url.trim_start_matches("http://").to_string();
                            if !all.contains(&addr) && !all.contains(url) {
                                all.push(addr);
                            }
                        }
                    }
                    break;
                }
            }
        }
        let mut replicas = Vec::with_capacity(all.len());
        for e in all {
            let rpc = PbftRpc::new(channel(&e, timeout)?);
            replicas.push((e, rpc));
        }
        Ok(PbftClient { keys, replicas, next_seq: now_micros(), timeout, dropped: 0 })
    }

    /// How many replicas the key file names (n).
    pub fn replica_count(&self) -> usize {
        self.keys.replicas.len()
    }

    /// Orders `command` and returns its result once f+1 replicas agree.
    pub async fn execute(&mut self, command: &KvCommand) -> Result<KvResponse, Failure> {
        self.try_execute(command).await.map_err(|e| e.failure)
    }

    /// [`execute`](Self::execute), saying how replicas refused it.
    async fn try_execute(&mut self, command: &KvCommand) -> Result<KvResponse, NoResult> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let inner = command.encode_checked(&KvConfig::default()).map_err(kv_failure)?;
        let op = synod_pbft::request::seal(&self.keys.signing, self.keys.client, seq, &inner);
        let request = SubmitRequest { client: self.keys.client.0, seq, op: op.to_vec() };
        let result = self.collect(seq, request).await?;
        match decode_result(&result) {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(Failure::Cluster(format!("error: {}", e.message())).into()),
            Err(e) => Err(Failure::Cluster(format!(
                "error: f+1 replicas agreed on a result that does not decode: {}",
                e.message()
            ))
            .into()),
        }
    }

    /// Sends `request` to every replica (again to one whose call failed)
    /// until f+1 matching signed replies came, or the timeout.
    async fn collect(&mut self, seq: u64, request: SubmitRequest) -> Result<Bytes, NoResult> {
        let deadline = Instant::now() + self.timeout;
        let mut tally = Tally::new(&self.keys, seq);
        let mut calls: JoinSet<(usize, Attempt)> = JoinSet::new();
        let mut attempts = vec![0u32; self.replicas.len()];
        let mut errors: Vec<Option<String>> = vec![None; self.replicas.len()];
        let mut refusals: Vec<Option<Refusal>> = vec![None; self.replicas.len()];
        let send = |calls: &mut JoinSet<_>, i: usize, pause: Duration, attempts: &mut [u32]| {
            attempts[i] += 1;
            let mut rpc = self.replicas[i].1.clone();
            let request = request.clone();
            let budget = deadline.saturating_duration_since(Instant::now()).min(ATTEMPT_TIMEOUT);
            calls.spawn(async move {
                tokio::time::sleep(pause).await;
                let answer = match tokio::time::timeout(budget, rpc.submit(request)).await {
                    Ok(Ok(r)) => Ok(r.into_inner()),
                    Ok(Err(s)) => {
                        Err((Refusal::of(&s), format!("{:?}: {}", s.code(), s.message())))
                    }
                    Err(_) => Err((
                        Refusal::TimedOut,
                        format!("no answer within {} ms", budget.as_millis()),
                    )),
                };
                (i, answer)
            });
        };
        for i in 0..self.replicas.len() {
            send(&mut calls, i, Duration::ZERO, &mut attempts);
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = tokio::time::timeout(left, calls.join_next()).await;
            let (i, answer) = match next {
                Ok(Some(Ok(done))) => done,
                Ok(Some(Err(e))) => return Err(Failure::Cluster(format!("error: {e}")).into()),
                Ok(None) | Err(_) => break,
            };
            match answer {
                Ok(reply) => match tally.add(&reply) {
                    Ok(Some(result)) => {
                        self.dropped += tally.dropped();
                        return Ok(result);
                    }
                    Ok(None) => {}
                    Err(why) => {
                        errors[i] = Some(format!("reply dropped ({why:?})"));
                    }
                },
                Err((refusal, e)) => {
                    errors[i] = Some(e);
                    refusals[i] = Some(refusal);
                    // A final refusal (malformed, stale, a bad signature...)
                    // stands at that replica; anything else is retried.
                    if !refusal.is_final()
                        && Instant::now() < deadline
                        && attempts[i] < MAX_ATTEMPTS_PER_REPLICA
                    {
                        send(&mut calls, i, RETRY_PAUSE, &mut attempts);
                    }
                }
            }
            if tally.hopeless() {
                break;
            }
        }
        self.dropped += tally.dropped();
        let why: Vec<String> = self
            .replicas
            .iter()
            .zip(&errors)
            .filter_map(|((e, _), err)| err.as_ref().map(|err| format!("{e}: {err}")))
            .collect();
        let failure = Failure::Cluster(format!(
            "error: no result that f+1 = {} replicas agree on after {} ms ({} valid answers, \
             {} dropped replies{}{})",
            tally.needed(),
            (self.timeout - deadline.saturating_duration_since(Instant::now())).as_millis(),
            tally.answers(),
            tally.dropped(),
            if why.is_empty() { "" } else { "; " },
            why.join("; ")
        ));
        Err(NoResult { refusals: refusals.into_iter().flatten().collect(), failure })
    }

    /// `KV.Put` through PBFT.
    pub async fn put(&mut self, r: pb::PutRequest) -> Result<pb::PutResponse, Failure> {
        match self.execute(&KvCommand::Put(convert::put_request(r))).await? {
            KvResponse::Put(p) => {
                let h = header(&p.header);
                Ok(convert::put_response(p, h))
            }
            _ => Err(unexpected("put")),
        }
    }

    /// `KV.Range` through PBFT (ordered: linearizable).
    pub async fn range(&mut self, r: pb::RangeRequest) -> Result<pb::RangeResponse, Failure> {
        let request = convert::range_request(r).map_err(kv_failure)?;
        match self.execute(&KvCommand::Range(request)).await? {
            KvResponse::Range(r) => {
                let h = header(&r.header);
                Ok(convert::range_response(r, h))
            }
            _ => Err(unexpected("range")),
        }
    }

    /// `KV.Compact` through PBFT.
    pub async fn compact(
        &mut self,
        r: pb::CompactionRequest,
    ) -> Result<pb::CompactionResponse, Failure> {
        match self.execute(&KvCommand::Compact(convert::compact_request(r))).await? {
            KvResponse::Compact(c) => {
                Ok(pb::CompactionResponse { header: Some(header(&c.header)) })
            }
            _ => Err(unexpected("compact")),
        }
    }

    /// `KV.DeleteRange` through PBFT.
    pub async fn delete_range(
        &mut self,
        r: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse, Failure> {
        match self.execute(&KvCommand::DeleteRange(convert::delete_request(r))).await? {
            KvResponse::DeleteRange(d) => {
                let h = header(&d.header);
                Ok(convert::delete_response(d, h))
            }
            _ => Err(unexpected("delete")),
        }
    }

    /// The changes on `[key, range_end)` from `start_revision` on (0: from
    /// the next revision), as f+1 replicas agree they are at one position
    /// of the log: at most `max_events` (about; capped by the store at
    /// [`synod_kv::MAX_EVENTS_PER_COMMAND`]). The answer's
    /// `compact_revision` above a non-zero `start_revision` means that
    /// history is gone.
    pub async fn events(
        &mut self,
        key: Bytes,
        range_end: Bytes,
        start_revision: i64,
        max_events: u64,
    ) -> Result<synod_kv::EventsResponse, Failure> {
        let command = KvCommand::Events { key, range_end, start_revision, max_events };
        let mut attempt = 0;
        loop {
            attempt += 1;
            // From the clock, so that a poll is not older than what another
            // process with this key sent meanwhile (`synod kv` while a watch
            // runs); if one was sent between this sequence number and its
            // arrival, the replicas refuse the poll as stale (before
            // ordering it) or superseded (ordered after the newer one, so
            // skipped), and since it reads only, asking again with a newer
            // number is harmless. (A write is never re-sent so: whether it
            // took effect earlier is not known.)
            self.next_seq = self.next_seq.max(now_micros());
            match self.try_execute(&command).await {
                Err(e) if e.outdated() && attempt < MAX_STALE_POLLS => continue,
                Err(e) => return Err(e.failure),
                Ok(KvResponse::Events(e)) => return Ok(e),
                Ok(_) => return Err(unexpected("events")),
            }
        }
    }
}

/// Lease requests through PBFT. Each is ordered and executed at its
/// batch's agreed time (the `now` sent here is ignored by the replicas), so
/// f+1 replicas answer alike, and none of them alone picks a deadline.
impl PbftClient {
    /// `Lease.LeaseGrant`: the lease id and its TTL in seconds.
    pub async fn lease_grant(&mut self, ttl: i64, id: i64) -> Result<(i64, i64), Failure> {
        let request = synod_kv::LeaseGrantRequest { ttl, id };
        match self.execute(&KvCommand::LeaseGrant { request, now: stamp() }).await? {
            KvResponse::LeaseGrant(g) => Ok((g.id, g.ttl)),
            _ => Err(unexpected("lease grant")),
        }
    }

    /// `Lease.LeaseRevoke`.
    pub async fn lease_revoke(&mut self, id: i64) -> Result<(), Failure> {
        let request = synod_kv::LeaseRevokeRequest { id };
        match self.execute(&KvCommand::LeaseRevoke(request)).await? {
            KvResponse::LeaseRevoke(_) => Ok(()),
            _ => Err(unexpected("lease revoke")),
        }
    }

    /// One `Lease.LeaseKeepAlive`: the renewed TTL, 0 when the lease is
    /// gone (as etcd answers).
    pub async fn lease_keep_alive(&mut self, id: i64) -> Result<i64, Failure> {
        let request = synod_kv::LeaseKeepAliveRequest { id };
        match self.execute(&KvCommand::LeaseKeepAlive { request, now: stamp() }).await {
            Ok(KvResponse::LeaseKeepAlive(k)) => Ok(k.ttl),
            Ok(_) => Err(unexpected("lease keep-alive")),
            Err(Failure::Cluster(why)) if why == LEASE_NOT_FOUND => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// `Lease.LeaseTimeToLive`, ordered: remaining TTL (-1 when the lease
    /// is gone, as etcd answers), granted TTL, and the attached keys.
    pub async fn lease_time_to_live(
        &mut self,
        id: i64,
        keys: bool,
    ) -> Result<(i64, i64, Vec<Vec<u8>>), Failure> {
        let request = synod_kv::LeaseTimeToLiveRequest { id, keys };
        match self.execute(&KvCommand::LeaseTimeToLive { request, now: stamp() }).await {
            Ok(KvResponse::LeaseTimeToLive(t)) => {
                Ok((t.ttl, t.granted_ttl, t.keys.iter().map(|k| k.to_vec()).collect()))
            }
            Ok(_) => Err(unexpected("lease time-to-live")),
            Err(Failure::Cluster(why)) if why == LEASE_NOT_FOUND => Ok((-1, 0, Vec::new())),
            Err(e) => Err(e),
        }
    }

    /// `Lease.LeaseLeases`, ordered: the ids of every live lease, as f+1
    /// replicas list them at the same position of the log.
    pub async fn lease_leases(&mut self) -> Result<Vec<i64>, Failure> {
        let request = synod_kv::LeaseLeasesRequest {};
        match self.execute(&KvCommand::LeaseLeases(request)).await? {
            KvResponse::LeaseLeases(l) => Ok(l.leases.iter().map(|s| s.id).collect()),
            _ => Err(unexpected("lease list")),
        }
    }
}

/// A session lease on PBFT (for `synod lock` and `synod elect`), renewed
/// through f+1 every third of its TTL by whoever holds the client, between
/// its other requests (one client key orders its requests one at a time).
pub struct LeaseKeeper {
    /// The lease id.
    pub lease: i64,
    every: Duration,
    /// When the next renewal is due.
    pub renew_at: Instant,
}

impl LeaseKeeper {
    /// Grants a lease of `ttl_s` seconds through `pbft`.
    pub async fn grant(pbft: &mut PbftClient, ttl_s: i64) -> Result<LeaseKeeper, Failure> {
        let (lease, ttl) = pbft.lease_grant(ttl_s, 0).await?;
        let every = Duration::from_millis((ttl.max(1) as u64 * 1000 / 3).max(500));
        Ok(LeaseKeeper { lease, every, renew_at: Instant::now() + every })
    }

    /// Renews the lease if it is due; fails if it is gone.
    pub async fn renew_if_due(&mut self, pbft: &mut PbftClient) -> Result<(), Failure> {
        if Instant::now() < self.renew_at {
            return Ok(());
        }
        if pbft.lease_keep_alive(self.lease).await? <= 0 {
            return Err(Failure::Cluster("lost the session lease".into()));
        }
        self.renew_at = Instant::now() + self.every;
        Ok(())
    }
}

/// A Ctrl-C future with its handler installed now (tokio installs it when
/// the future is first polled): a SIGINT that arrives after this returns is
/// caught, never the default (fatal) action, even before the caller first
/// waits on it.
pub async fn armed_ctrl_c() -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> {
    let mut f: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
        Box::pin(tokio::signal::ctrl_c());
    let fired = tokio::select! {
        biased;
        r = &mut f => Some(r),
        _ = std::future::ready(()) => None,
    };
    match fired {
        Some(r) => Box::pin(std::future::ready(r)),
        None => f,
    }
}

/// The `now` a client writes into a lease command: its own clock, which
/// PBFT replicas replace with the batch's agreed time.
fn stamp() -> synod_core::Time {
    synod_core::Time(now_micros())
}

/// How [`PbftClient::execute`] reports an unknown lease that f+1 replicas
/// agree on (`KvError::LeaseNotFound`); compared whole, so that a replica's
/// own error text (which may be a lie) never passes for it.
const LEASE_NOT_FOUND: &str = "error: etcdserver: requested lease not found";

/// Times a read-only poll is sent again after being refused as stale or
/// superseded.
const MAX_STALE_POLLS: u32 = 5;

/// Microseconds since the Unix epoch (1 if the clock is before it).
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
        .max(1)
}

/// The header of an answer f+1 replicas agreed on: the store revision
/// (member id and term differ by replica and are left out).
fn header(h: &synod_kv::ResponseHeader) -> pb::ResponseHeader {
    HeaderStamp::default().header(h.revision)
}

fn kv_failure(e: synod_kv::KvError) -> Failure {
    Failure::Cluster(format!("error: {}", e.message()))
}

fn unexpected(what: &str) -> Failure {
    Failure::Cluster(format!("error: unexpected answer to {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_node::pbft_refusal::ALL;

    /// A read-only poll is sent again with a newer sequence number only
    /// when some replica refused it as stale or superseded, whatever the
    /// messages said.
    #[test]
    fn only_stale_or_superseded_refusals_make_a_poll_outdated() {
        let no_result = |refusals: Vec<Refusal>| NoResult {
            refusals,
            failure: Failure::Cluster("error: synod: stale request".into()),
        };
        for kind in ALL {
            let outdated = no_result(vec![Refusal::Busy, kind]).outdated();
            assert_eq!(outdated, matches!(kind, Refusal::Stale | Refusal::Superseded), "{kind:?}");
        }
        assert!(!no_result(Vec::new()).outdated(), "the wording alone does not count");
    }
}
