//! The service on Multi-Paxos (issue 7 §7, issue 6 §3): real `synod serve`
//! processes with `protocol = "paxos"` on loopback ports, talked to through
//! the generated etcd gRPC clients.
//!
//! One scenario: a 3-node cluster elects a leader and serves put/get/del on
//! every member (followers forward); the leader is killed with SIGKILL and a
//! new one serves within a few election timeouts with no acknowledged write
//! lost; the killed node restarts and catches up (snapshots every 16 slots,
//! so by accepts or by a snapshot); the whole cluster is killed and
//! restarted and keeps every acknowledged write. Every wait is bounded; a
//! Drop guard kills the processes even on failure.

mod common;

use common::{Cluster, LEADER_WAIT, NODES, check_all, get, put_many, rpc_channel, status};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use synod_etcdpb::etcdserverpb::kv_client::KvClient;
use synod_etcdpb::etcdserverpb::{DeleteRangeRequest, RangeRequest};

/// Multi-Paxos, with snapshots every 16 slots.
const CONFIG: &str = "protocol = \"paxos\"\nsnapshot_interval_entries = 16\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paxos_cluster_serves_survives_its_leader_and_restarts_with_every_acknowledged_write() {
    let mut cluster = Cluster::start_with(CONFIG);
    let leader = cluster.leader().await;
    let log = std::fs::read_to_string(cluster.dir.path().join("n1.log")).expect("log");
    assert!(log.contains("paxos"), "the node runs Multi-Paxos:\n{log}");
    let first_ballot = status(&cluster.endpoint(leader)).await.expect("status").term;
    assert!(first_ballot > 0, "a leader leads in a ballot");
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
    for i in 0..NODES {
        assert_eq!(get(&cluster.endpoint(i), "key000", false).await.expect("get"), None);
    }
    let prefix = KvClient::new(rpc_channel(&cluster.endpoint(leader)))
        .range(RangeRequest {
            key: b"key0".to_vec(),
            range_end: b"key1".to_vec(),
            count_only: true,
            ..RangeRequest::default()
        })
        .await
        .expect("prefix range")
        .into_inner();
    assert_eq!(prefix.count, 29, "key001..=key029 are left");

    // SIGKILL the leader: a new one, in a higher ballot, within a few
    // election timeouts, holding every acknowledged write.
    cluster.kill(leader);
    let killed_at = Instant::now();
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    assert!(killed_at.elapsed() < Duration::from_secs(5), "took {:?}", killed_at.elapsed());
    let ballot = status(&cluster.endpoint(new_leader)).await.expect("status").term;
    assert!(ballot > first_ballot, "new leader's ballot {ballot} not above {first_ballot}");
    check_all(&cluster, &cluster.endpoint(new_leader), &acked).await;
    put_many(&cluster, &mut acked, 30, 30).await;

    // The killed node restarts and catches up (by accepts or by snapshot).
    let target = status(&cluster.endpoint(new_leader)).await.expect("status").commit_index;
    cluster.spawn(leader);
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let back = status(&cluster.endpoint(leader)).await.map(|s| s.applied_index);
        if back.is_some_and(|b| b >= target) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node did not catch up: {back:?} < {target}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (key, value) in &acked {
        let got = get(&cluster.endpoint(leader), key, true).await.expect("serializable get");
        assert_eq!(got.as_deref(), Some(value.as_str()), "{key} on the restarted node");
    }
    assert_eq!(get(&cluster.endpoint(leader), "key000", true).await.expect("get"), None);

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
    check_all(&cluster, &cluster.endpoint((leader + 2) % NODES), &acked).await;
}
