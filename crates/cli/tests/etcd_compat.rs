//! The etcd-compatible service against real `synod serve` processes
//! (issue 7): Watch, Lease, Lock and Election through the generated etcd
//! clients, a lease surviving a leader change, and the etcdctl differential
//! (`scripts/etcdctl-differential`: the same etcdctl session against a real
//! etcd 3.4 and against Synod, outputs compared after normalising ids and
//! revisions). Tests needing etcd or etcdctl skip with a message when they
//! are not on PATH (`scripts/install-test-deps` installs them).
//!
//! Every wait is bounded; a Drop guard kills the processes even on failure.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use synod_etcdpb::etcdserverpb::kv_client::KvClient;
use synod_etcdpb::etcdserverpb::lease_client::LeaseClient;
use synod_etcdpb::etcdserverpb::watch_client::WatchClient;
use synod_etcdpb::etcdserverpb::{
    self as pb, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
    WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use synod_etcdpb::v3electionpb::election_client::ElectionClient;
use synod_etcdpb::v3electionpb::{CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest};
use synod_etcdpb::v3lockpb::lock_client::LockClient;
use synod_etcdpb::v3lockpb::{LockRequest, UnlockRequest};
use tokio::sync::mpsc;
use tonic::transport::Channel;

mod common;

use common::{Cluster, NODES, channel, on_path, synod};

/// Bound on any one expected answer.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

async fn put(ch: &Channel, key: &str, value: &str, lease: i64) -> i64 {
    let r = KvClient::new(ch.clone())
        .put(PutRequest { key: key.into(), value: value.into(), lease, ..PutRequest::default() })
        .await
        .expect("put")
        .into_inner();
    r.header.expect("header").revision
}

async fn get(ch: &Channel, key: &str) -> Option<synod_etcdpb::mvccpb::KeyValue> {
    let r = KvClient::new(ch.clone())
        .range(RangeRequest { key: key.into(), ..RangeRequest::default() })
        .await
        .expect("range")
        .into_inner();
    r.kvs.into_iter().next()
}

/// A watch stream: requests in, responses out.
struct WatchStream {
    tx: mpsc::Sender<WatchRequest>,
    rx: tonic::Streaming<WatchResponse>,
    /// Responses that arrived while `create` waited for its `created`
    /// answer (an earlier watcher's history replay may interleave with it,
    /// as on etcd); `next` hands them out first, in arrival order.
    early: VecDeque<WatchResponse>,
}

impl WatchStream {
    async fn open(ch: &Channel) -> WatchStream {
        let (tx, rx) = mpsc::channel(16);
        let stream = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
        let rx = WatchClient::new(ch.clone()).watch(stream).await.expect("watch").into_inner();
        WatchStream { tx, rx, early: VecDeque::new() }
    }

    async fn send(&self, r: pb::watch_request::RequestUnion) {
        self.tx.send(WatchRequest { request_union: Some(r) }).await.expect("send");
    }

    /// Creates a watcher and returns its id. Answers for other watchers that
    /// arrive before the `created` answer are kept for `next`.
    async fn create(&mut self, c: WatchCreateRequest) -> i64 {
        self.send(pb::watch_request::RequestUnion::CreateRequest(c)).await;
        loop {
            let r = self.receive().await;
            if r.created {
                return r.watch_id;
            }
            assert!(!r.canceled, "a create refused: {r:?}");
            self.early.push_back(r);
        }
    }

    async fn next(&mut self) -> WatchResponse {
        match self.early.pop_front() {
            Some(r) => r,
            None => self.receive().await,
        }
    }

    async fn receive(&mut self) -> WatchResponse {
        tokio::time::timeout(ANSWER_WAIT, self.rx.message())
            .await
            .expect("a watch answer in time")
            .expect("stream ok")
            .expect("stream open")
    }

    /// (type, key, value, prev value) of the next `n` events.
    async fn events(&mut self, n: usize) -> Vec<(i32, String, String, Option<String>, i64)> {
        let mut out = Vec::new();
        while out.len() < n {
            let r = self.next().await;
            for e in r.events {
                let kv = e.kv.expect("kv");
                let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                out.push((
                    e.r#type,
                    s(&kv.key),
                    s(&kv.value),
                    e.prev_kv.map(|p| s(&p.value)),
                    kv.mod_revision,
                ));
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_every_change_in_order_with_filters_cancel_progress_and_compaction() {
    let cluster = Cluster::start();
    let leader = cluster.leader().await;
    let follower = (leader + 1) % NODES;
    let lch = channel(&cluster.endpoint(leader));
    let fch = channel(&cluster.endpoint(follower));
    let first = put(&lch, "cfg/a", "1", 0).await;

    let mut w = WatchStream::open(&fch).await;
    // From a past revision, prefix, prev_kv: history then live events.
    let all = w
        .create(WatchCreateRequest {
            key: "cfg/".into(),
            range_end: "cfg0".into(),
            start_revision: first,
            prev_kv: true,
            ..WatchCreateRequest::default()
        })
        .await;
    // A second watcher on the same stream: deletes only.
    let dels = w
        .create(WatchCreateRequest {
            key: "cfg/".into(),
            range_end: "cfg0".into(),
            filters: vec![pb::watch_create_request::FilterType::Noput as i32],
            ..WatchCreateRequest::default()
        })
        .await;
    assert_ne!(all, dels);
    put(&fch, "cfg/a", "2", 0).await;
    put(&lch, "other", "x", 0).await;
    put(&fch, "cfg/b", "1", 0).await;
    KvClient::new(fch.clone())
        .delete_range(DeleteRangeRequest { key: "cfg/a".into(), ..Default::default() })
        .await
        .expect("delete");
    // Both watchers' responses interleave; split them by watch id.
    let mut seen_all = Vec::new();
    let mut seen_dels = Vec::new();
    while seen_all.len() < 4 || seen_dels.is_empty() {
        let r = w.next().await;
        for e in r.events {
            let kv = e.kv.expect("kv");
            let entry = (
                e.r#type,
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
                e.prev_kv.map(|p| String::from_utf8_lossy(&p.value).into_owned()),
                kv.mod_revision,
            );
            if r.watch_id == all { seen_all.push(entry) } else { seen_dels.push(entry) }
        }
    }
    let kinds: Vec<_> =
        seen_all.iter().map(|(t, k, v, p, _)| (*t, k.as_str(), v.as_str(), p.clone())).collect();
    assert_eq!(
        kinds,
        [
            (0, "cfg/a", "1", None),
            (0, "cfg/a", "2", Some("1".to_string())),
            (0, "cfg/b", "1", None),
            (1, "cfg/a", "", Some("2".to_string())),
        ],
        "every change under the prefix, in order, with prev_kv"
    );
    assert!(seen_all.windows(2).all(|p| p[0].4 < p[1].4), "revisions increase");
    assert_eq!(seen_dels.len(), 1, "NOPUT: the delete only");
    assert_eq!(seen_dels[0].0, 1);

    // Progress: answered with watch id -1 and a revision covering all.
    w.send(pb::watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {})).await;
    let p = w.next().await;
    assert_eq!(p.watch_id, -1);
    assert!(p.header.expect("header").revision >= seen_all[3].4);

    // Cancel: acknowledged, and no more events for it.
    w.send(pb::watch_request::RequestUnion::CancelRequest(WatchCancelRequest { watch_id: all }))
        .await;
    let c = w.next().await;
    assert!(c.canceled && c.watch_id == all, "{c:?}");
    put(&lch, "cfg/c", "1", 0).await;
    KvClient::new(lch.clone())
        .delete_range(DeleteRangeRequest { key: "cfg/c".into(), ..Default::default() })
        .await
        .expect("delete");
    let r = w.next().await;
    assert_eq!(r.watch_id, dels, "only the remaining watcher speaks: {r:?}");

    // Below the compaction point: created, then canceled with compact_revision.
    let now = put(&lch, "cfg/d", "1", 0).await;
    KvClient::new(lch.clone())
        .compact(CompactionRequest { revision: now, physical: true })
        .await
        .expect("compact");
    // (A member that has not applied the compaction yet still serves that
    // history, as etcd's would. `lch` may no longer lead, so read through it
    // linearizably first: that waits until it applied the compaction.)
    get(&lch, "cfg/d").await;
    let mut w2 = WatchStream::open(&lch).await;
    w2.create(WatchCreateRequest {
        key: "cfg/".into(),
        range_end: "cfg0".into(),
        start_revision: first,
        ..WatchCreateRequest::default()
    })
    .await;
    let c = w2.next().await;
    assert!(c.canceled, "{c:?}");
    assert_eq!(c.compact_revision, now);

    // Many writes: a watcher sees all of them, none twice.
    let mut w3 = WatchStream::open(&channel(&cluster.endpoint((leader + 2) % NODES))).await;
    w3.create(WatchCreateRequest {
        key: "bulk/".into(),
        range_end: "bulk0".into(),
        ..WatchCreateRequest::default()
    })
    .await;
    let writes = 300;
    let writer = {
        let lch = lch.clone();
        tokio::spawn(async move {
            for i in 0..writes {
                put(&lch, &format!("bulk/{:03}", i % 17), &i.to_string(), 0).await;
            }
        })
    };
    let got = w3.events(writes).await;
    writer.await.expect("writer");
    let values: Vec<String> = got.iter().map(|e| e.2.clone()).collect();
    let expected: Vec<String> = (0..writes).map(|i| i.to_string()).collect();
    assert_eq!(values, expected, "every write once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_keep_alive_and_survive_a_leader_change() {
    let mut cluster = Cluster::start();
    let leader = cluster.leader().await;
    let follower = (leader + 1) % NODES;
    let fch = channel(&cluster.endpoint(follower));
    let mut lease = LeaseClient::new(fch.clone());

    // A key on a 2 s lease disappears once it expires.
    let short = lease.lease_grant(LeaseGrantRequest { ttl: 2, id: 0 }).await.expect("grant");
    let short = short.into_inner();
    assert_eq!(short.ttl, 2);
    put(&fch, "eph", "v", short.id).await;
    let ttl = lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id: short.id, keys: true })
        .await
        .expect("ttl")
        .into_inner();
    assert_eq!(ttl.granted_ttl, 2);
    assert!(ttl.ttl > 0 && ttl.ttl <= 2, "{ttl:?}");
    assert_eq!(ttl.keys, vec![b"eph".to_vec()]);
    let deadline = Instant::now() + Duration::from_secs(6);
    while get(&fch, "eph").await.is_some() {
        assert!(Instant::now() < deadline, "the leased key outlived its lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id: short.id, keys: false })
        .await
        .expect("ttl of an expired lease")
        .into_inner();
    assert_eq!(gone.ttl, -1, "etcd answers -1 for an unknown lease");

    // Keep-alive keeps a key past its TTL, across a leader change.
    let kept = lease.lease_grant(LeaseGrantRequest { ttl: 3, id: 0 }).await.expect("grant");
    let kept = kept.into_inner().id;
    let survivor = (leader + 2) % NODES;
    let sch = channel(&cluster.endpoint(survivor));
    put(&sch, "kept", "v", kept).await;
    let (ka_tx, ka_rx) = mpsc::channel(4);
    let mut replies = LeaseClient::new(sch.clone())
        .lease_keep_alive(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(ka_rx))
        .await
        .expect("keep-alive stream")
        .into_inner();
    let keep_alive = |ka_tx: mpsc::Sender<LeaseKeepAliveRequest>| async move {
        ka_tx.send(LeaseKeepAliveRequest { id: kept }).await.expect("send");
    };
    cluster.kill(leader);
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        keep_alive(ka_tx.clone()).await;
        let r = tokio::time::timeout(ANSWER_WAIT, replies.message())
            .await
            .expect("keep-alive answer in time")
            .expect("ok")
            .expect("open");
        assert_eq!((r.id, r.ttl), (kept, 3), "renewed");
        assert!(get(&sch, "kept").await.is_some(), "kept alive past its TTL");
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let listed = LeaseClient::new(sch.clone())
        .lease_leases(LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner();
    assert!(listed.leases.iter().any(|l| l.id == kept));
    // Revoke deletes the key; a second revoke is etcd's NotFound.
    let mut l2 = LeaseClient::new(sch.clone());
    l2.lease_revoke(LeaseRevokeRequest { id: kept }).await.expect("revoke");
    assert!(get(&sch, "kept").await.is_none());
    let e = l2.lease_revoke(LeaseRevokeRequest { id: kept }).await.expect_err("twice");
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(e.message(), "etcdserver: requested lease not found");
    // A keep-alive for an unknown lease answers TTL 0.
    keep_alive(ka_tx.clone()).await;
    let r = replies.message().await.expect("ok").expect("open");
    assert_eq!(r.ttl, 0);
}

/// Keep-alives are renewed in the leader's memory (etcd's lessor): N of
/// them, direct and forwarded by a follower, add nothing to the log of an
/// otherwise idle cluster, and the lease still outlives its TTL several
/// times over; TimeToLive reports the leader's renewed TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_renew_in_the_leaders_memory_without_growing_the_log() {
    let cluster = Cluster::start();
    let leader = cluster.leader().await;
    let lch = channel(&cluster.endpoint(leader));
    let fch = channel(&cluster.endpoint((leader + 1) % NODES));
    let id = LeaseClient::new(lch.clone())
        .lease_grant(LeaseGrantRequest { ttl: 2, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id;
    put(&lch, "held", "v", id).await;
    let mut streams = Vec::new();
    for ch in [&lch, &fch] {
        let (tx, rx) = mpsc::channel(4);
        let replies = LeaseClient::new(ch.clone())
            .lease_keep_alive(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("keep-alive stream")
            .into_inner();
        streams.push((tx, replies));
    }
    let mut keep_alive = async |round: usize| {
        let (tx, replies) = &mut streams[round % 2];
        tx.send(LeaseKeepAliveRequest { id }).await.expect("send");
        let r = tokio::time::timeout(ANSWER_WAIT, replies.message())
            .await
            .expect("keep-alive answer in time")
            .expect("ok")
            .expect("open");
        assert_eq!((r.id, r.ttl), (id, 2), "renewed");
    };
    // The leader promotes leases once per term, a log entry of its own:
    // let it land before counting.
    keep_alive(0).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    keep_alive(1).await;
    let before = common::status(&cluster.endpoint(leader)).await.expect("status");
    const N: usize = 12;
    for round in 0..N {
        keep_alive(round).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // 6 s of keep-alives: three times the TTL.
    assert!(get(&fch, "held").await.is_some(), "kept alive past its TTL");
    let ttl = LeaseClient::new(fch.clone())
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false })
        .await
        .expect("ttl")
        .into_inner();
    assert!(ttl.ttl >= 1 && ttl.ttl <= 2, "the leader's renewed TTL: {ttl:?}");
    let after = common::status(&cluster.endpoint(leader)).await.expect("status");
    assert_eq!(after.term, before.term, "no leader change during the test");
    assert_eq!(
        (after.commit_index, after.applied_index),
        (before.commit_index, before.applied_index),
        "{N} keep-alives added no log entries"
    );
    // Without keep-alives the lease still expires, through the log.
    let deadline = Instant::now() + Duration::from_secs(6);
    while get(&fch, "held").await.is_some() {
        assert!(Instant::now() < deadline, "the lease outlived its last renewal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = common::status(&cluster.endpoint(leader)).await.expect("status");
    assert!(gone.commit_index > after.commit_index, "expiry is a log entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_election_services_order_holders_and_hand_out_fencing_tokens() {
    let cluster = Cluster::start();
    let leader = cluster.leader().await;
    let a = channel(&cluster.endpoint((leader + 1) % NODES));
    let b = channel(&cluster.endpoint((leader + 2) % NODES));
    let grant = |ch: Channel| async move {
        LeaseClient::new(ch)
            .lease_grant(LeaseGrantRequest { ttl: 30, id: 0 })
            .await
            .expect("grant")
            .into_inner()
            .id
    };
    let (la, lb) = (grant(a.clone()).await, grant(b.clone()).await);

    let first = LockClient::new(a.clone())
        .lock(LockRequest { name: "res".into(), lease: la })
        .await
        .expect("lock")
        .into_inner();
    assert_eq!(first.key, format!("res/{la:x}").into_bytes());
    let token_a =
        get(&a, &String::from_utf8_lossy(&first.key)).await.expect("held").create_revision;
    // The second locker waits until the first unlocks.
    let mut lock_b = LockClient::new(b.clone());
    let waiting =
        tokio::spawn(
            async move { lock_b.lock(LockRequest { name: "res".into(), lease: lb }).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the lock is held");
    LockClient::new(a.clone())
        .unlock(UnlockRequest { key: first.key.clone() })
        .await
        .expect("unlock");
    let second = tokio::time::timeout(ANSWER_WAIT, waiting)
        .await
        .expect("acquired in time")
        .expect("task")
        .expect("lock")
        .into_inner();
    let token_b =
        get(&b, &String::from_utf8_lossy(&second.key)).await.expect("held").create_revision;
    assert!(token_b > token_a, "fencing tokens increase: {token_a} then {token_b}");

    // Election: a leads, b waits; proclaim, observe, resign hands over.
    let mut ea = ElectionClient::new(a.clone());
    let won = ea
        .campaign(CampaignRequest { name: "svc".into(), lease: la, value: "a".into() })
        .await
        .expect("campaign")
        .into_inner()
        .leader
        .expect("leader key");
    let mut observe = ElectionClient::new(b.clone())
        .observe(LeaderRequest { name: "svc".into() })
        .await
        .expect("observe")
        .into_inner();
    let seen = observe.message().await.expect("ok").expect("open").kv.expect("kv");
    assert_eq!(seen.value, b"a");
    let mut eb = ElectionClient::new(b.clone());
    let b_campaign = tokio::spawn(async move {
        eb.campaign(CampaignRequest { name: "svc".into(), lease: lb, value: "b".into() }).await
    });
    ea.proclaim(ProclaimRequest { leader: Some(won.clone()), value: "a2".into() })
        .await
        .expect("proclaim");
    let seen = observe.message().await.expect("ok").expect("open").kv.expect("kv");
    assert_eq!(seen.value, b"a2");
    let leader_now = ea.leader(LeaderRequest { name: "svc".into() }).await.expect("leader");
    assert_eq!(leader_now.into_inner().kv.expect("kv").value, b"a2");
    assert!(!b_campaign.is_finished());
    ea.resign(ResignRequest { leader: Some(won.clone()) }).await.expect("resign");
    let b_won = tokio::time::timeout(ANSWER_WAIT, b_campaign)
        .await
        .expect("b elected in time")
        .expect("task")
        .expect("campaign")
        .into_inner()
        .leader
        .expect("leader key");
    assert!(b_won.rev > won.rev, "the new leader's token is larger");
    let seen = observe.message().await.expect("ok").expect("open").kv.expect("kv");
    assert_eq!(seen.value, b"b");
    let stale = ea.proclaim(ProclaimRequest { leader: Some(won), value: "late".into() }).await;
    assert_eq!(stale.expect_err("not leader any more").message(), "election: not leader");
}

/// The etcdctl differential (see `scripts/etcdctl-differential`).
#[test]
fn etcdctl_session_matches_etcd() {
    let (Some(_), Some(_)) = (on_path("etcd"), on_path("etcdctl")) else {
        eprintln!("SKIPPED: etcd and etcdctl (3.4) must be on PATH (scripts/install-test-deps)");
        return;
    };
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/etcdctl-differential");
    let out = Command::new("bash")
        .arg(&script)
        .env("SYNOD_BIN", synod())
        .output()
        .expect("run scripts/etcdctl-differential");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "etcdctl differential failed:\n{text}");
}

/// POSTs `body` to `path` on the client port (HTTP/1.1, one request per
/// connection); answers (status code, body).
fn http_post(endpoint: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(endpoint).expect("connect");
    s.set_read_timeout(Some(ANSWER_WAIT)).expect("timeout");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status");
    let body = out.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_gateway_serves_curl_on_the_client_port() {
    let cluster = Cluster::start();
    let leader = cluster.leader().await;
    let ep = cluster.endpoint((leader + 1) % NODES);
    let e = ep.clone();
    let (code, put) = tokio::task::spawn_blocking(move || {
        http_post(&e, "/v3/kv/put", r#"{"key": "Zm9v", "value": "YmFy"}"#)
    })
    .await
    .expect("task");
    assert_eq!(code, 200, "{put}");
    let put: serde_json::Value = serde_json::from_str(&put).expect("json");
    assert_eq!(put["header"]["revision"], "2", "64-bit integers are strings");
    let e = ep.clone();
    let (code, range) =
        tokio::task::spawn_blocking(move || http_post(&e, "/v3/kv/range", r#"{"key": "Zm9v"}"#))
            .await
            .expect("task");
    assert_eq!(code, 200);
    let range: serde_json::Value = serde_json::from_str(&range).expect("json");
    assert_eq!(range["kvs"][0]["value"], "YmFy", "values are base64");
    assert_eq!(range["count"], "1");
    let e = ep.clone();
    let (code, err) = tokio::task::spawn_blocking(move || {
        http_post(&e, "/v3/kv/range", r#"{"key": "Zm9v", "revision": "99"}"#)
    })
    .await
    .expect("task");
    assert_eq!(code, 400);
    let err: serde_json::Value = serde_json::from_str(&err).expect("json");
    assert_eq!(err["error"], "etcdserver: mvcc: required revision is a future revision");
    assert_eq!(err["code"], 11);
    let e = ep.clone();
    let (code, grant) =
        tokio::task::spawn_blocking(move || http_post(&e, "/v3/lease/grant", r#"{"TTL": 30}"#))
            .await
            .expect("task");
    assert_eq!(code, 200);
    let grant: serde_json::Value = serde_json::from_str(&grant).expect("json");
    assert_eq!(grant["TTL"], "30");
    // gRPC still works on the same port.
    assert_eq!(get(&channel(&ep), "foo").await.expect("foo").value, b"bar");
}
