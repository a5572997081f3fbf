//! etcd's Maintenance service and gRPC health on a real 3-process cluster:
//! HashKV agrees on every member for the same revision (and gives etcd's
//! errors below the compaction point and above the present), Snapshot
//! streams the store as etcd streams its database (counting down, then a
//! 32-byte digest), Defragment succeeds, MoveLeader gives etcd's errors and
//! really moves leadership (over gRPC and with `etcdctl move-leader`, seen
//! by Status and `synod status`), and `grpc.health.v1.Health` reports
//! SERVING.

mod common;

use common::{Cluster, NODES, put, rpc_channel};
use std::time::{Duration, Instant};
use synod_etcdpb::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_etcdpb::etcdserverpb::{
    CompactionRequest, DefragmentRequest, HashKvRequest, HashKvResponse, MoveLeaderRequest,
    SnapshotRequest, kv_client::KvClient,
};
use synod_etcdpb::health::HealthCheckRequest;
use synod_etcdpb::health::health_check_response::ServingStatus;
use synod_etcdpb::health::health_client::HealthClient;

/// Bound on a member catching up to a revision.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// HashKV at `revision` on `endpoint`, waiting while the member has not
/// applied it yet (etcd's future-revision error).
async fn hash_kv(endpoint: &str, revision: i64) -> HashKvResponse {
    let deadline = Instant::now() + APPLY_WAIT;
    loop {
        let mut m = MaintenanceClient::new(rpc_channel(endpoint));
        match m.hash_kv(HashKvRequest { revision }).await {
            Ok(r) => return r.into_inner(),
            Err(s) if s.message().contains("future revision") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(s) => panic!("hash_kv({revision}) on {endpoint}: {s}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_hash_kv_snapshot_defragment_move_leader_and_health() {
    let cluster = Cluster::start();
    let leader = cluster.leader().await;
    let leader_ep = cluster.endpoint(leader);
    let follower_ep = cluster.endpoint((leader + 1) % NODES);

    // --- HashKV: every member, same revision, same answer.
    let mut last = 0;
    for i in 0..20 {
        last = put(&follower_ep, &format!("hk/{}", i % 7), &format!("v{i}")).await.expect("put");
    }
    let mid = last - 10;
    let mut by_member = Vec::new();
    for i in 0..NODES {
        let ep = cluster.endpoint(i);
        by_member.push((hash_kv(&ep, mid).await, hash_kv(&ep, last).await));
    }
    for (i, (at_mid, at_last)) in by_member.iter().enumerate() {
        assert_eq!(at_mid.hash, by_member[0].0.hash, "member {i} hashes revision {mid} alike");
        assert_eq!(at_last.hash, by_member[0].1.hash, "member {i} hashes revision {last} alike");
        assert_eq!(at_mid.hash_revision, mid);
        assert_eq!(at_mid.compact_revision, by_member[0].0.compact_revision);
        assert_eq!(at_last.hash_revision, last);
    }
    assert_ne!(by_member[0].0.hash, by_member[0].1.hash, "ten more writes change the hash");
    // Later writes leave an old revision's hash alone.
    put(&leader_ep, "hk/later", "x").await.expect("put");
    assert_eq!(hash_kv(&follower_ep, mid).await.hash, by_member[0].0.hash);
    // Compaction: below it etcd's compacted error, at it the same on all.
    let mut kv = KvClient::new(rpc_channel(&leader_ep));
    kv.compact(CompactionRequest { revision: mid, physical: true }).await.expect("compact");
    let after: Vec<HashKvResponse> = {
        let mut v = Vec::new();
        for i in 0..NODES {
            // The compaction is applied when a later write is.
            let rev = put(&leader_ep, "hk/after", &i.to_string()).await.expect("put");
            let _ = hash_kv(&cluster.endpoint(i), rev).await;
            v.push(hash_kv(&cluster.endpoint(i), mid).await);
        }
        v
    };
    assert!(
        after.iter().all(|h| h.compact_revision == mid && h.hash == after[0].hash),
        "{after:?}"
    );
    let mut m = MaintenanceClient::new(rpc_channel(&follower_ep));
    let below = m.hash_kv(HashKvRequest { revision: mid - 1 }).await.expect_err("compacted");
    assert_eq!(below.code(), tonic::Code::OutOfRange);
    assert_eq!(below.message(), "etcdserver: mvcc: required revision has been compacted");
    let future = m.hash_kv(HashKvRequest { revision: last + 1000 }).await.expect_err("future");
    assert_eq!(future.code(), tonic::Code::OutOfRange);
    assert_eq!(future.message(), "etcdserver: mvcc: required revision is a future revision");

    // --- Snapshot: blobs counting down to 0, then the 32-byte SHA-256.
    let mut stream = m.snapshot(SnapshotRequest {}).await.expect("snapshot").into_inner();
    let mut messages = Vec::new();
    while let Some(msg) = stream.message().await.expect("snapshot message") {
        messages.push(msg);
    }
    assert!(messages.len() >= 2, "data and a digest: {} messages", messages.len());
    let (digest, data) = messages.split_last().expect("non-empty");
    assert_eq!((digest.blob.len(), digest.remaining_bytes), (32, 0), "the SHA-256 trailer");
    let bytes: Vec<u8> = data.iter().flat_map(|m| m.blob.clone()).collect();
    assert!(bytes.starts_with(b"SYNODKV1"), "Synod's store snapshot");
    assert_eq!(bytes.len() % 512, 0, "padded, so etcdctl finds the trailer by length");
    let mut sent = 0;
    for msg in data {
        sent += msg.blob.len();
        assert_eq!(msg.remaining_bytes as usize, bytes.len() - sent, "remaining_bytes counts down");
    }
    assert!(
        bytes.windows(b"hk/later".len()).any(|w| w == b"hk/later"),
        "the snapshot holds the keys"
    );

    // etcdctl (when installed) saves that stream to a file.
    if let Some(etcdctl) = common::on_path("etcdctl") {
        let file = cluster.dir.path().join("snap.db");
        let out = std::process::Command::new(etcdctl)
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &follower_ep, "snapshot", "save"])
            .arg(&file)
            .output()
            .expect("run etcdctl");
        assert!(out.status.success(), "etcdctl snapshot save: {out:?}");
        let saved = std::fs::read(&file).expect("the saved file");
        assert!(saved.starts_with(b"SYNODKV1") && saved.len() % 512 == 32, "{}", saved.len());
    } else {
        eprintln!("SKIPPED the etcdctl snapshot save check: no etcdctl on PATH");
    }

    // --- Defragment: a success that changes nothing.
    let before = hash_kv(&follower_ep, 0).await;
    m.defragment(DefragmentRequest {}).await.expect("defragment");
    assert_eq!(hash_kv(&follower_ep, before.hash_revision).await.hash, before.hash);

    // --- MoveLeader: etcd's errors; to the leader itself a success.
    let leader_id = (leader + 1) as u64;
    let follower_id = ((leader + 1) % NODES + 1) as u64;
    let e =
        m.move_leader(MoveLeaderRequest { target_id: follower_id }).await.expect_err("follower");
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::FailedPrecondition, "etcdserver: not leader")
    );
    let mut lm = MaintenanceClient::new(rpc_channel(&leader_ep));
    let e = lm.move_leader(MoveLeaderRequest { target_id: 99 }).await.expect_err("not a member");
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::FailedPrecondition, "etcdserver: bad leader transferee")
    );
    lm.move_leader(MoveLeaderRequest { target_id: leader_id }).await.expect("to itself");
    // To a follower: answered once it leads, and every member agrees.
    lm.move_leader(MoveLeaderRequest { target_id: follower_id }).await.expect("move leader");
    assert_eq!(cluster.leader().await + 1, follower_id as usize, "the chosen member leads");
    let e = lm.move_leader(MoveLeaderRequest { target_id: leader_id }).await.expect_err("old");
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::FailedPrecondition, "etcdserver: not leader"),
        "the old leader no longer leads"
    );
    let all: Vec<String> = (0..NODES).map(|i| cluster.endpoint(i)).collect();
    let out = std::process::Command::new(common::synod())
        .args(["status", "--endpoints", &all.join(",")])
        .output()
        .expect("run synod status");
    let text = String::from_utf8_lossy(&out.stdout);
    let leaders: Vec<&str> =
        text.lines().filter(|l| l.split_whitespace().nth(2) == Some("leader")).collect();
    assert_eq!(leaders.len(), 1, "{text}");
    assert!(leaders[0].starts_with(&cluster.endpoint(follower_id as usize - 1)), "{text}");
    // etcdctl (when installed) finds the leader and moves it on (hex id).
    let third = (0..NODES).find(|&i| i != leader && i + 1 != follower_id as usize).expect("3");
    if let Some(etcdctl) = common::on_path("etcdctl") {
        let out = std::process::Command::new(etcdctl)
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &all.join(","), "move-leader", &format!("{:x}", third + 1)])
            .output()
            .expect("run etcdctl");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "etcdctl move-leader: {out:?}");
        assert!(
            said.contains(&format!(
                "Leadership transferred from {follower_id:x} to {:x}",
                third + 1
            )),
            "{said}"
        );
        assert_eq!(cluster.leader().await, third, "etcdctl's choice leads");
    } else {
        eprintln!("SKIPPED the etcdctl move-leader check: no etcdctl on PATH");
    }

    // --- gRPC health on every member.
    for i in 0..NODES {
        let mut h = HealthClient::new(rpc_channel(&cluster.endpoint(i)));
        for service in ["", "etcdserverpb.KV"] {
            let r = h
                .check(HealthCheckRequest { service: service.into() })
                .await
                .expect("check")
                .into_inner();
            assert_eq!(r.status, ServingStatus::Serving as i32, "member {i} service {service:?}");
        }
        let unknown = h.check(HealthCheckRequest { service: "nope".into() }).await;
        assert_eq!(unknown.expect_err("unknown").code(), tonic::Code::NotFound);
        let mut watch = h.watch(HealthCheckRequest::default()).await.expect("watch").into_inner();
        let first = watch.message().await.expect("watch message").expect("one");
        assert_eq!(first.status, ServingStatus::Serving as i32);
    }
}
