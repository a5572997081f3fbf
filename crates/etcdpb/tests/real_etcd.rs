//! The generated clients against a real etcd 3.4 (Debian `etcd-server`): every
//! service's answers decode into the fields etcd means, which checks the
//! response-side field numbers that etcdctl's put/get/del do not reach (Watch,
//! Lease, Cluster, Maintenance, Txn with nested ops and `Compare.range_end`,
//! Lock, Election). Skipped with a message when `etcd` is not on PATH (install it
//! with `scripts/install-test-deps`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use synod_etcdpb::etcdserverpb::cluster_client::ClusterClient;
use synod_etcdpb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use synod_etcdpb::etcdserverpb::kv_client::KvClient;
use synod_etcdpb::etcdserverpb::lease_client::LeaseClient;
use synod_etcdpb::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_etcdpb::etcdserverpb::request_op::Request as Op;
use synod_etcdpb::etcdserverpb::response_op::Response as OpResponse;
use synod_etcdpb::etcdserverpb::watch_client::WatchClient;
use synod_etcdpb::etcdserverpb::watch_request::RequestUnion;
use synod_etcdpb::etcdserverpb::{
    AlarmRequest, AuthStatusRequest, Compare, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, MemberListRequest, PutRequest,
    RangeRequest, RequestOp, StatusRequest, TxnRequest, WatchCancelRequest, WatchCreateRequest,
    WatchRequest, auth_client::AuthClient,
};
use synod_etcdpb::mvccpb::event::EventType;
use synod_etcdpb::v3electionpb::election_client::ElectionClient;
use synod_etcdpb::v3electionpb::{CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest};
use synod_etcdpb::v3lockpb::lock_client::LockClient;
use synod_etcdpb::v3lockpb::{LockRequest, UnlockRequest};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::StreamExt;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Bound on etcd's start and on the whole client session.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Name of the single etcd member.
const MEMBER_NAME: &str = "synod-wire-test";

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

#[path = "../../cli/tests/common/ports.rs"]
mod ports;
use ports::free_port;

/// Starts a one-member etcd on loopback and waits (bounded) until it logs that it
/// serves clients (no polling).
async fn start_etcd(
    program: &PathBuf,
    data_dir: &std::path::Path,
) -> (tokio::process::Child, String, String) {
    let client_url = format!("http://127.0.0.1:{}", free_port());
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let mut child = tokio::process::Command::new(program)
        .args(["--name", MEMBER_NAME, "--logger", "zap", "--log-outputs", "stderr"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("{MEMBER_NAME}={peer_url}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn etcd");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let ready = tokio::time::timeout(TIMEOUT, async {
        let mut log = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            // zap logs "serving client traffic ..."; capnslog "ready to serve client requests".
            if line.contains("serving client traffic")
                || line.contains("ready to serve client requests")
            {
                return Ok(());
            }
            log.push(line);
        }
        Err(log.join("\n"))
    })
    .await;
    match ready {
        Ok(Ok(())) => {}
        Ok(Err(log)) => panic!("etcd exited before serving clients:\n{log}"),
        Err(_) => panic!("etcd did not serve clients within {TIMEOUT:?}"),
    }
    // Keep draining etcd's log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, client_url, peer_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_clients_decode_real_etcd_answers() {
    let Some(program) = find_on_path("etcd") else {
        eprintln!(
            "SKIPPED generated_clients_decode_real_etcd_answers: etcd is not on PATH \
             (install it with scripts/install-test-deps)"
        );
        return;
    };
    let data_dir = tempfile::tempdir().expect("temp dir");
    let (mut etcd, client_url, peer_url) = start_etcd(&program, data_dir.path()).await;
    let channel = Channel::from_shared(client_url.clone())
        .expect("valid url")
        .connect()
        .await
        .expect("connect");

    tokio::time::timeout(TIMEOUT, session(channel, &client_url, &peer_url))
        .await
        .expect("session finishes in time");

    etcd.kill().await.expect("stop etcd");
}

async fn session(channel: Channel, client_url: &str, peer_url: &str) {
    // Maintenance.Status and Cluster.MemberList: one member that leads itself.
    let mut maintenance = MaintenanceClient::new(channel.clone());
    let status = maintenance.status(StatusRequest {}).await.expect("status").into_inner();
    let member_id = status.header.as_ref().expect("status header").member_id;
    assert!(status.version.starts_with("3."), "version {:?}", status.version);
    assert_eq!(status.leader, member_id);
    assert!(
        status.raft_term >= 2 && status.raft_index > 0 && status.raft_applied_index > 0,
        "{status:?}"
    );
    assert!(status.db_size > 0 && status.db_size_in_use > 0 && !status.is_learner, "{status:?}");
    let alarms = maintenance.alarm(AlarmRequest::default()).await.expect("alarm get").into_inner();
    assert!(alarms.alarms.is_empty());

    let members = ClusterClient::new(channel.clone())
        .member_list(MemberListRequest::default())
        .await
        .expect("member list")
        .into_inner();
    assert_eq!(members.members.len(), 1);
    let member = &members.members[0];
    assert_eq!((member.id, member.name.as_str()), (member_id, MEMBER_NAME));
    assert_eq!(
        (member.peer_ur_ls.as_slice(), member.client_ur_ls.as_slice()),
        (&[peer_url.to_string()][..], &[client_url.to_string()][..])
    );

    // KV: put, range, and a txn whose compare uses range_end (field 64) and a nested txn.
    let mut kv = KvClient::new(channel.clone());
    let put = kv
        .put(PutRequest { key: b"/w/a".to_vec(), value: b"1".to_vec(), ..Default::default() })
        .await
        .expect("put")
        .into_inner();
    let put_revision = put.header.expect("put header").revision;
    let range = kv
        .range(RangeRequest { key: b"/w/a".to_vec(), ..Default::default() })
        .await
        .expect("range")
        .into_inner();
    let a = &range.kvs[0];
    assert_eq!(
        (a.value.as_slice(), a.create_revision, a.mod_revision, a.version),
        (&b"1"[..], put_revision, put_revision, 1)
    );

    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Greater as i32,
            target: CompareTarget::Version as i32,
            key: b"/w/".to_vec(),
            range_end: b"/w0".to_vec(),
            target_union: Some(TargetUnion::Version(0)),
        }],
        success: vec![RequestOp {
            request: Some(Op::RequestTxn(TxnRequest {
                success: vec![RequestOp {
                    request: Some(Op::RequestPut(PutRequest {
                        key: b"/w/b".to_vec(),
                        value: b"2".to_vec(),
                        prev_kv: true,
                        ..Default::default()
                    })),
                }],
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    let txn = kv.txn(txn).await.expect("txn").into_inner();
    assert!(txn.succeeded, "every key under /w/ has version > 0");
    let txn_revision = txn.header.expect("txn header").revision;
    assert_eq!(txn_revision, put_revision + 1);
    let Some(OpResponse::ResponseTxn(nested)) = &txn.responses[0].response else {
        panic!("expected a nested txn response, got {:?}", txn.responses);
    };
    assert!(nested.succeeded);
    assert!(
        matches!(&nested.responses[0].response, Some(OpResponse::ResponsePut(p)) if p.prev_kv.is_none())
    );

    // Lease: grant, attach, time-to-live with keys, list, one keep-alive round, revoke.
    let mut lease = LeaseClient::new(channel.clone());
    let grant =
        lease.lease_grant(LeaseGrantRequest { ttl: 60, id: 0 }).await.expect("grant").into_inner();
    assert!(grant.id != 0 && grant.ttl == 60 && grant.error.is_empty(), "{grant:?}");
    kv.put(PutRequest {
        key: b"/w/leased".to_vec(),
        value: b"x".to_vec(),
        lease: grant.id,
        ..Default::default()
    })
    .await
    .expect("put with lease");
    let ttl = lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id: grant.id, keys: true })
        .await
        .expect("time to live")
        .into_inner();
    assert_eq!(
        (ttl.id, ttl.granted_ttl, ttl.keys.as_slice()),
        (grant.id, 60, &[b"/w/leased".to_vec()][..])
    );
    assert!(ttl.ttl > 0 && ttl.ttl <= 60);
    let leases = lease.lease_leases(LeaseLeasesRequest {}).await.expect("leases").into_inner();
    assert_eq!(leases.leases.iter().map(|l| l.id).collect::<Vec<_>>(), [grant.id]);
    let (keep_alive_tx, keep_alive_rx) = mpsc::channel(1);
    keep_alive_tx.send(LeaseKeepAliveRequest { id: grant.id }).await.expect("queue keep-alive");
    let mut keep_alives = lease
        .lease_keep_alive(ReceiverStream::new(keep_alive_rx))
        .await
        .expect("keep-alive stream")
        .into_inner();
    let renewed = keep_alives.next().await.expect("one keep-alive answer").expect("keep-alive ok");
    assert_eq!((renewed.id, renewed.ttl), (grant.id, 60));
    drop(keep_alive_tx);

    // Watch: created ack, a PUT event with prev_kv, then cancel.
    let (watch_tx, watch_rx) = mpsc::channel(4);
    // Queue the create request before opening the stream: grpc-go sends the
    // response headers (which the call awaits) only with the first answer.
    watch_tx
        .send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"/w/a".to_vec(),
                prev_kv: true,
                ..Default::default()
            })),
        })
        .await
        .expect("queue watch create");
    let mut events = WatchClient::new(channel.clone())
        .watch(ReceiverStream::new(watch_rx))
        .await
        .expect("watch stream")
        .into_inner();
    let created = events.next().await.expect("created answer").expect("watch ok");
    assert!(created.created && !created.canceled, "{created:?}");
    let put = kv
        .put(PutRequest { key: b"/w/a".to_vec(), value: b"3".to_vec(), ..Default::default() })
        .await
        .expect("put watched key")
        .into_inner();
    let notified = events.next().await.expect("event answer").expect("watch ok");
    assert_eq!(notified.watch_id, created.watch_id);
    let event = &notified.events[0];
    assert_eq!(event.r#type, EventType::Put as i32);
    let event_kv = event.kv.as_ref().expect("event kv");
    assert_eq!(
        (event_kv.value.as_slice(), event_kv.mod_revision, event_kv.version),
        (&b"3"[..], put.header.expect("header").revision, 2)
    );
    assert_eq!(event.prev_kv.as_ref().expect("prev kv").value, b"1");
    watch_tx
        .send(WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: created.watch_id,
            })),
        })
        .await
        .expect("queue watch cancel");
    let canceled = events.next().await.expect("cancel answer").expect("watch ok");
    assert!(canceled.canceled && canceled.watch_id == created.watch_id, "{canceled:?}");

    // Lock and Election (served by etcd 3.4 on the client port too).
    let mut lock = LockClient::new(channel.clone());
    let locked = lock
        .lock(LockRequest { name: b"/lock/x".to_vec(), lease: grant.id })
        .await
        .expect("lock")
        .into_inner();
    assert!(
        locked.key.starts_with(b"/lock/x/"),
        "lock key {:?}",
        String::from_utf8_lossy(&locked.key)
    );
    lock.unlock(UnlockRequest { key: locked.key }).await.expect("unlock");

    let mut election = ElectionClient::new(channel.clone());
    let campaign = election
        .campaign(CampaignRequest {
            name: b"/elect/x".to_vec(),
            lease: grant.id,
            value: b"me".to_vec(),
        })
        .await
        .expect("campaign")
        .into_inner();
    let leader_key = campaign.leader.expect("leader key");
    assert_eq!((leader_key.name.as_slice(), leader_key.lease), (&b"/elect/x"[..], grant.id));
    election
        .proclaim(ProclaimRequest { leader: Some(leader_key.clone()), value: b"still me".to_vec() })
        .await
        .expect("proclaim");
    let leader = election
        .leader(LeaderRequest { name: b"/elect/x".to_vec() })
        .await
        .expect("leader")
        .into_inner();
    let leader_kv = leader.kv.expect("leader kv");
    assert_eq!(
        (leader_kv.key.as_slice(), leader_kv.value.as_slice(), leader_kv.create_revision),
        (leader_key.key.as_slice(), &b"still me"[..], leader_key.rev)
    );
    election.resign(ResignRequest { leader: Some(leader_key) }).await.expect("resign");

    lease.lease_revoke(LeaseRevokeRequest { id: grant.id }).await.expect("revoke");
    let gone = kv
        .range(RangeRequest { key: b"/w/leased".to_vec(), ..Default::default() })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(gone.count, 0, "revoking the lease deletes its keys");

    // AuthStatus is new in 3.5: a 3.4 server answers Unimplemented; a 3.5+ one answers.
    match AuthClient::new(channel).auth_status(AuthStatusRequest {}).await {
        Ok(reply) => assert!(!reply.into_inner().enabled),
        Err(status) => assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}"),
    }
}
