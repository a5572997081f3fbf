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

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use synod_etcdpb::etcdserverpb::kv_client::KvClient;
use synod_etcdpb::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_etcdpb::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, StatusRequest};
use tonic::transport::{Channel, Endpoint};

const NODES: usize = 3;
/// Upper bound on electing a leader: many election timeouts (150–300 ms).
const LEADER_WAIT: Duration = Duration::from_secs(10);

fn synod() -> &'static str {
    env!("CARGO_BIN_EXE_synod")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The processes of a Paxos cluster; killed when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    client_ports: Vec<u16>,
    children: Vec<Option<Child>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..NODES).map(|_| (free_port(), free_port())).collect();
        std::fs::write(dir.path().join("secret"), "0123456789abcdef0123456789abcdef")
            .expect("secret");
        for i in 1..=NODES {
            let mut s = format!(
                "node_id = {i}\nprotocol = \"paxos\"\ndata_dir = \"n{i}\"\n\
                 secret_file = \"secret\"\nsnapshot_interval_entries = 16\n\
                 [timeouts]\nrequest_ms = 3000\n"
            );
            for (j, (client, peer)) in ports.iter().enumerate() {
                s.push_str(&format!(
                    "[[members]]\nid = {}\npeer_addr = \"127.0.0.1:{peer}\"\n\
                     client_addr = \"127.0.0.1:{client}\"\n",
                    j + 1
                ));
            }
            std::fs::write(dir.path().join(format!("n{i}.toml")), s).expect("config");
        }
        Cluster {
            dir,
            client_ports: ports.iter().map(|p| p.0).collect(),
            children: (0..NODES).map(|_| None).collect(),
        }
    }

    fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.client_ports[i])
    }

    fn start(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("n{}.log", i + 1)))
            .expect("log");
        let child = Command::new(synod())
            .arg("serve")
            .arg("--config")
            .arg(self.dir.path().join(format!("n{}.toml", i + 1)))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn synod serve");
        self.children[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reap");
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..NODES).filter(|&i| self.children[i].is_some()).collect()
    }

    fn logs(&self) -> String {
        (1..=NODES)
            .map(|i| {
                let p = self.dir.path().join(format!("n{i}.log"));
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!("--- n{i} ---\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

async fn channel(endpoint: &str) -> Channel {
    Endpoint::from_shared(format!("http://{endpoint}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// A node's status, if it answers.
#[derive(Clone, Copy, Debug)]
struct Status {
    leader: u64,
    /// The ballot round (etcd's `raft_term`).
    ballot_round: u64,
    commit_index: u64,
    applied_index: u64,
}

async fn status(endpoint: &str) -> Option<Status> {
    let mut c = MaintenanceClient::new(channel(endpoint).await);
    let s = c.status(StatusRequest {}).await.ok()?.into_inner();
    Some(Status {
        leader: s.leader,
        ballot_round: s.raft_term,
        commit_index: s.raft_index,
        applied_index: s.raft_applied_index,
    })
}

/// Waits until every live node names the same live leader; returns its
/// index in the cluster.
async fn wait_for_leader(cluster: &Cluster) -> usize {
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let mut leaders = Vec::new();
        for i in cluster.live() {
            leaders.push(status(&cluster.endpoint(i)).await.map(|s| s.leader));
        }
        if let Some(Some(l)) = leaders.first()
            && *l != 0
            && leaders.iter().all(|x| *x == Some(*l))
            && cluster.live().contains(&(*l as usize - 1))
        {
            return *l as usize - 1;
        }
        assert!(Instant::now() < deadline, "no leader agreed: {leaders:?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put(endpoint: &str, key: &str, value: &str) -> Result<i64, tonic::Status> {
    let mut kv = KvClient::new(channel(endpoint).await);
    let r = kv
        .put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..PutRequest::default()
        })
        .await?
        .into_inner();
    Ok(r.header.map_or(0, |h| h.revision))
}

async fn get(
    endpoint: &str,
    key: &str,
    serializable: bool,
) -> Result<Option<String>, tonic::Status> {
    let mut kv = KvClient::new(channel(endpoint).await);
    let r = kv
        .range(RangeRequest {
            key: key.as_bytes().to_vec(),
            serializable,
            ..RangeRequest::default()
        })
        .await?
        .into_inner();
    Ok(r.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// Puts `count` keys from `first`, round-robin over the live nodes, retrying
/// a refused put a bounded number of times; records each acknowledged one.
async fn put_many(
    cluster: &Cluster,
    acked: &mut BTreeMap<String, String>,
    first: usize,
    count: usize,
) {
    let live = cluster.live();
    for k in first..first + count {
        let (key, value) = (format!("key{k:03}"), format!("value{k}"));
        let mut attempts = 0;
        loop {
            let endpoint = cluster.endpoint(live[(k + attempts) % live.len()]);
            match put(&endpoint, &key, &value).await {
                Ok(_) => break,
                Err(e) => {
                    attempts += 1;
                    assert!(attempts < 20, "put {key} kept failing: {e:?}\n{}", cluster.logs());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        acked.insert(key, value);
    }
}

/// Every acknowledged key reads back (linearizably) through `endpoint`.
async fn check_all(cluster: &Cluster, endpoint: &str, acked: &BTreeMap<String, String>) {
    for (key, value) in acked {
        let got = get(endpoint, key, false).await;
        assert_eq!(
            got.as_ref().ok(),
            Some(&Some(value.clone())),
            "{key} via {endpoint}\n{}",
            cluster.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paxos_cluster_serves_survives_its_leader_and_restarts_with_every_acknowledged_write() {
    let mut cluster = Cluster::new();
    for i in 0..NODES {
        cluster.start(i);
    }
    let leader = wait_for_leader(&cluster).await;
    let log = std::fs::read_to_string(cluster.dir.path().join("n1.log")).expect("log");
    assert!(log.contains("paxos"), "the node runs Multi-Paxos:\n{log}");
    let first_ballot = status(&cluster.endpoint(leader)).await.expect("status").ballot_round;
    assert!(first_ballot > 0, "a leader leads in a ballot");
    let mut acked = BTreeMap::new();

    // put/get/del on every member: followers forward to the leader.
    put_many(&cluster, &mut acked, 0, 30).await;
    for i in 0..NODES {
        check_all(&cluster, &cluster.endpoint(i), &acked).await;
    }
    let mut kv = KvClient::new(channel(&cluster.endpoint((leader + 1) % NODES)).await);
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
    let prefix = KvClient::new(channel(&cluster.endpoint(leader)).await)
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
    let new_leader = wait_for_leader(&cluster).await;
    assert_ne!(new_leader, leader);
    assert!(killed_at.elapsed() < Duration::from_secs(5), "took {:?}", killed_at.elapsed());
    let ballot = status(&cluster.endpoint(new_leader)).await.expect("status").ballot_round;
    assert!(ballot > first_ballot, "new leader's ballot {ballot} not above {first_ballot}");
    check_all(&cluster, &cluster.endpoint(new_leader), &acked).await;
    put_many(&cluster, &mut acked, 30, 30).await;

    // The killed node restarts and catches up (by accepts or by snapshot).
    let target = status(&cluster.endpoint(new_leader)).await.expect("status").commit_index;
    cluster.start(leader);
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
        cluster.start(i);
    }
    let leader = wait_for_leader(&cluster).await;
    check_all(&cluster, &cluster.endpoint(leader), &acked).await;
    check_all(&cluster, &cluster.endpoint((leader + 1) % NODES), &acked).await;
    put_many(&cluster, &mut acked, 60, 5).await;
    check_all(&cluster, &cluster.endpoint((leader + 2) % NODES), &acked).await;
}
