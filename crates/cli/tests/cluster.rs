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

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
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

/// The processes of a cluster; killed when dropped.
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
                "node_id = {i}\ndata_dir = \"n{i}\"\nsecret_file = \"secret\"\n\
                 snapshot_interval_entries = 16\n[timeouts]\nrequest_ms = 3000\n"
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

/// (member id, leader id, raft_index, applied index) of a node, if it answers.
async fn status(endpoint: &str) -> Option<(u64, u64, u64, u64)> {
    let mut c = MaintenanceClient::new(channel(endpoint).await);
    let s = c.status(StatusRequest {}).await.ok()?.into_inner();
    Some((s.header?.member_id, s.leader, s.raft_index, s.raft_applied_index))
}

/// Waits until every live node names the same leader (a live one); returns
/// its index in the cluster.
async fn wait_for_leader(cluster: &Cluster) -> usize {
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let mut leaders = Vec::new();
        for i in cluster.live() {
            leaders.push(status(&cluster.endpoint(i)).await.map(|s| s.1));
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
    Ok(r.header.expect("header").revision)
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
/// a refused put a few times; records each acknowledged one.
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

fn etcdctl() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("etcdctl")).find(|p| p.is_file())
}

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
    let mut cluster = Cluster::new();
    for i in 0..NODES {
        cluster.start(i);
    }
    let leader = wait_for_leader(&cluster).await;
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
    assert_eq!(get(&cluster.endpoint(leader), "key000", false).await.expect("get"), None);
    let too_large = put(&cluster.endpoint(leader), "big", &"x".repeat(1_600_000)).await;
    let err = too_large.expect_err("over the request limit");
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::InvalidArgument, "etcdserver: request is too large")
    );

    if let Some(bin) = etcdctl() {
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
    let new_leader = wait_for_leader(&cluster).await;
    assert_ne!(new_leader, leader);
    assert!(killed_at.elapsed() < Duration::from_secs(5), "took {:?}", killed_at.elapsed());
    check_all(&cluster, &cluster.endpoint(new_leader), &acked).await;
    put_many(&cluster, &mut acked, 30, 30).await;

    // The killed node restarts and catches up (by log or by snapshot).
    cluster.start(leader);
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let lead = status(&cluster.endpoint(new_leader)).await.map(|s| s.2);
        let back = status(&cluster.endpoint(leader)).await.map(|s| s.3);
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
        cluster.start(i);
    }
    let leader = wait_for_leader(&cluster).await;
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
    let mut cluster = Cluster::new();
    for i in 0..NODES {
        cluster.start(i);
    }
    let leader = wait_for_leader(&cluster).await;
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

    // Errors: the server's message and exit 1; bad usage exits 2.
    let (code, _, err) = synod_kv(&all, &["put", "", "x"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("etcdserver: key is not provided"), "{err}");
    let (code, _, err) = synod_kv("127.0.0.1:1", &["get", "x", "--timeout-ms", "500"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot connect"), "{err}");
    assert_eq!(synod_kv(&all, &["get", "x", "--consistency", "q"]).0, Some(2));
}
