//! Multi-process tests: real `synod serve` processes on loopback ports,
//! talked to through the generated etcd `KvClient` (and etcdctl when it is
//! on PATH; `scripts/install-test-deps` installs it).
//!
//! One scenario (issue 6 §6): a 3-node cluster elects a leader and serves
//! put/get/del on every member (followers forward); the leader is killed
//! with SIGKILL and a new one is elected within a few election timeouts with
//! no acknowledged write lost; the killed node restarts and catches up; the
//! whole cluster is killed and restarted and keeps every acknowledged write.
//! Every wait is bounded; a Drop guard kills the processes even on failure.

mod common;

use common::{
    Cluster, LEADER_WAIT, NODES, check_all, get, on_path, put, put_many, rpc_channel, status, synod,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use synod_etcdpb::etcdserverpb::DeleteRangeRequest;
use synod_etcdpb::etcdserverpb::kv_client::KvClient;

/// Snapshots every 16 entries, so a restarted node may catch up by one.
const CONFIG: &str = "snapshot_interval_entries = 16\n";

fn run_etcdctl(bin: &Path, endpoints: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints)
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .expect("run etcdctl");
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_survives_its_leader_and_restarts_with_every_acknowledged_write() {
    let mut cluster = Cluster::start_with(CONFIG);
    let leader = cluster.leader().await;
    let mut acked = BTreeMap::new();

    // put/get/del on every member: followers forward to the leader.
    put_many(&cluster, &mut acked, 0, 30).await;
    for i in 0..NODES {
        check_all(&cluster, &cluster.endpoint(i), &acked).await;
    }
    let mut kv = KvClient::new(rpc_channel(&cluster.endpoint((leader + 1) % NODES)));
    let deleted = kv
        .delete_range(DeleteRangeRequest { key: b"key000".to_vec(), ..Default::default() })
        .await
        .expect("delete through a follower")
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    acked.remove("key000");
    assert_eq!(get(&cluster.endpoint(leader), "key000", false).await.expect("get"), None);
    let too_large = put(&cluster.endpoint(leader), "big", &"x".repeat(1_600_000)).await;
    let err = too_large.expect_err("over the request limit");
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::InvalidArgument, "etcdserver: request is too large")
    );

    if let Some(bin) = on_path("etcdctl") {
        let endpoints: Vec<String> = (0..NODES).map(|i| cluster.endpoint(i)).collect();
        let endpoints = endpoints.join(",");
        assert_eq!(run_etcdctl(&bin, &endpoints, &["put", "foo", "bar"]).trim(), "OK");
        assert_eq!(run_etcdctl(&bin, &endpoints, &["get", "foo"]), "foo\nbar\n");
        assert_eq!(run_etcdctl(&bin, &endpoints, &["del", "foo"]).trim(), "1");
        assert_eq!(run_etcdctl(&bin, &endpoints, &["get", "foo"]), "");
        let status = run_etcdctl(&bin, &endpoints, &["endpoint", "status"]);
        assert_eq!(status.matches(", true, ").count(), 1, "one leader: {status}");
    } else {
        eprintln!("etcdctl not on PATH: skipping the etcdctl part (scripts/install-test-deps)");
    }

    // SIGKILL the leader: a new one within a few election timeouts.
    cluster.kill(leader);
    let killed_at = Instant::now();
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    assert!(killed_at.elapsed() < Duration::from_secs(5), "took {:?}", killed_at.elapsed());
    check_all(&cluster, &cluster.endpoint(new_leader), &acked).await;
    put_many(&cluster, &mut acked, 30, 30).await;

    // The killed node restarts and catches up (by log or by snapshot).
    cluster.spawn(leader);
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let lead = status(&cluster.endpoint(new_leader)).await.map(|s| s.commit_index);
        let back = status(&cluster.endpoint(leader)).await.map(|s| s.applied_index);
        if let (Some(lead), Some(back)) = (lead, back)
            && back >= lead
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node did not catch up: {back:?} < {lead:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (key, value) in &acked {
        let got = get(&cluster.endpoint(leader), key, true).await.expect("serializable get");
        assert_eq!(got.as_deref(), Some(value.as_str()), "{key} on the restarted node");
    }

    // Kill everything at once, restart: every acknowledged write is there.
    for i in 0..NODES {
        cluster.kill(i);
    }
    for i in 0..NODES {
        cluster.spawn(i);
    }
    let leader = cluster.leader().await;
    check_all(&cluster, &cluster.endpoint(leader), &acked).await;
    check_all(&cluster, &cluster.endpoint((leader + 1) % NODES), &acked).await;
    put_many(&cluster, &mut acked, 60, 5).await;
}

#[test]
fn serve_refuses_a_bad_config_with_exit_2_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "node_id = 1\ndata_dir = \"d\"\nsecret_file = \"s\"\nelection_timeout = 5\n\
         [[members]]\nid = 1\npeer_addr = \"127.0.0.1:1\"\nclient_addr = \"127.0.0.1:2\"\n",
    )
    .expect("write");
    let out = Command::new(synod()).arg("serve").arg("--config").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("election_timeout"), "{stderr}");
}

/// Runs `synod kv ARGS` against `endpoints` and returns (exit code, stdout,
/// stderr).
fn synod_kv(endpoints: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(synod())
        .arg("kv")
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .output()
        .expect("synod kv runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synod_kv_puts_gets_and_deletes_through_any_member() {
    let cluster = Cluster::start_with(CONFIG);
    let leader = cluster.leader().await;
    let follower = cluster.endpoint((leader + 1) % NODES);
    let all: Vec<String> = (0..NODES).map(|i| cluster.endpoint(i)).collect();
    let all = all.join(",");

    assert_eq!(synod_kv(&follower, &["put", "app/a", "1"]).1, "OK\n");
    assert_eq!(synod_kv(&all, &["put", "app/b", "2"]).1, "OK\n");
    assert_eq!(synod_kv(&follower, &["put", "apple", "3"]).1, "OK\n");
    assert_eq!(synod_kv(&follower, &["get", "app/a"]).1, "app/a\n1\n");
    assert_eq!(synod_kv(&all, &["get", "app/", "--prefix"]).1, "app/a\n1\napp/b\n2\n");
    assert_eq!(synod_kv(&all, &["get", "app/", "--prefix", "--keys-only"]).1, "app/a\napp/b\n");
    assert_eq!(
        synod_kv(&follower, &["get", "app", "--prefix", "--limit", "1", "--consistency", "s"])
            .1
            .lines()
            .count(),
        2
    );
    assert_eq!(synod_kv(&all, &["put", "app/a", "9", "--prev-kv"]).1, "OK\napp/a\n1\n");
    assert_eq!(synod_kv(&follower, &["del", "app/", "--prefix"]).1, "2\n");
    assert_eq!(synod_kv(&all, &["get", "app/", "--prefix"]).1, "");
    assert_eq!(synod_kv(&all, &["get", "apple"]).1, "apple\n3\n");
    // Compaction: reads below it are refused afterwards, as etcd refuses them.
    assert_eq!(synod_kv(&follower, &["compact", "3"]).1, "compacted revision 3\n");
    let (code, _, err) = synod_kv(&all, &["get", "apple", "--rev", "2"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("etcdserver: mvcc: required revision has been compacted"), "{err}");
    let (code, _, err) = synod_kv(&all, &["compact", "1000"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("etcdserver: mvcc: required revision is a future revision"), "{err}");

    // Errors: the server's message and exit 1; bad usage exits 2.
    let (code, _, err) = synod_kv(&all, &["put", "", "x"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("etcdserver: key is not provided"), "{err}");
    let (code, _, err) = synod_kv("127.0.0.1:1", &["get", "x", "--timeout-ms", "500"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot connect"), "{err}");
    assert_eq!(synod_kv(&all, &["get", "x", "--consistency", "q"]).0, Some(2));
}
