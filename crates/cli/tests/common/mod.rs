//! The test harness the service tests share: a 3-node cluster of real
//! `synod serve` processes on loopback ports, configured as `synod up` does,
//! killed (even on a failed test) when dropped. Every wait is bounded.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use synod_etcdpb::etcdserverpb::kv_client::KvClient;
use synod_etcdpb::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_etcdpb::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};
use tonic::transport::{Channel, Endpoint};

/// Nodes in a test cluster.
pub const NODES: usize = 3;
/// Upper bound on electing a leader: many election timeouts (150–300 ms).
pub const LEADER_WAIT: Duration = Duration::from_secs(10);
/// The `synod` binary under test.
pub fn synod() -> &'static str {
    env!("CARGO_BIN_EXE_synod")
}

mod ports;
pub use ports::free_port;
#[allow(unused_imports)] // Only some test binaries take a block.
pub use ports::free_port_block;

/// `tool` if it is on PATH.
pub fn on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file())
}

/// A cluster of `synod serve` processes on loopback; killed on drop.
pub struct Cluster {
    /// Configs, data and logs.
    pub dir: tempfile::TempDir,
    /// Each node's client (etcd API) port.
    pub client_ports: Vec<u16>,
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
    /// Starts `NODES` nodes (it does not wait for a leader).
    pub fn start() -> Cluster {
        Cluster::start_with("")
    }

    /// Starts `NODES` nodes whose configs also hold the top-level settings
    /// `extra` (TOML lines, e.g. `protocol = "paxos"\n`).
    pub fn start_with(extra: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..NODES).map(|_| (free_port(), free_port())).collect();
        std::fs::write(dir.path().join("secret"), "0123456789abcdef0123456789abcdef")
            .expect("secret");
        let mut cluster = Cluster {
            client_ports: ports.iter().map(|p| p.0).collect(),
            children: (0..NODES).map(|_| None).collect(),
            dir,
        };
        for i in 1..=NODES {
            let mut s = format!(
                "node_id = {i}\ndata_dir = \"n{i}\"\nsecret_file = \"secret\"\n{extra}\
                 [timeouts]\nrequest_ms = 3000\n"
            );
            for (j, (client, peer)) in ports.iter().enumerate() {
                s.push_str(&format!(
                    "[[members]]\nid = {}\npeer_addr = \"127.0.0.1:{peer}\"\n\
                     client_addr = \"127.0.0.1:{client}\"\n",
                    j + 1
                ));
            }
            std::fs::write(cluster.dir.path().join(format!("n{i}.toml")), s).expect("config");
        }
        for i in 0..NODES {
            cluster.spawn(i);
        }
        cluster
    }

    /// (Re)starts node `i`.
    pub fn spawn(&mut self, i: usize) {
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

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reap");
        }
    }

    /// `127.0.0.1:<client port>` of node `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.client_ports[i])
    }

    /// The nodes running now.
    pub fn live(&self) -> Vec<usize> {
        (0..NODES).filter(|&i| self.children[i].is_some()).collect()
    }

    /// Waits until every live node names the same live leader; returns its
    /// index in the cluster.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let mut leaders = Vec::new();
            for i in self.live() {
                leaders.push(status(&self.endpoint(i)).await.map(|s| s.leader));
            }
            if let Some(Some(l)) = leaders.first()
                && *l != 0
                && leaders.iter().all(|x| *x == Some(*l))
                && self.live().contains(&(*l as usize - 1))
            {
                return *l as usize - 1;
            }
            assert!(Instant::now() < deadline, "no leader agreed: {leaders:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs(&self) -> String {
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

/// A lazily connecting channel to `endpoint`.
pub fn channel(endpoint: &str) -> Channel {
    Endpoint::from_shared(format!("http://{endpoint}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy()
}

/// A lazily connecting channel to `endpoint` whose every request gives up
/// after 5 s (for unary calls; watches and keep-alives use [`channel`]).
pub fn rpc_channel(endpoint: &str) -> Channel {
    Endpoint::from_shared(format!("http://{endpoint}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// What a node's Maintenance.Status says about it.
#[derive(Clone, Copy, Debug)]
pub struct Status {
    /// The node's member id.
    pub member_id: u64,
    /// The leader it knows of (0: none).
    pub leader: u64,
    /// etcd's `raft_term`: Raft's term, Multi-Paxos's ballot round.
    pub term: u64,
    /// etcd's `raft_index`: the commit index.
    pub commit_index: u64,
    /// etcd's `raft_applied_index`.
    pub applied_index: u64,
}

/// The node's status, if it answers.
pub async fn status(endpoint: &str) -> Option<Status> {
    let mut c = MaintenanceClient::new(rpc_channel(endpoint));
    let s = c.status(StatusRequest {}).await.ok()?.into_inner();
    Some(Status {
        member_id: s.header?.member_id,
        leader: s.leader,
        term: s.raft_term,
        commit_index: s.raft_index,
        applied_index: s.raft_applied_index,
    })
}

/// Puts `key` = `value` through `endpoint`; returns the revision.
pub async fn put(endpoint: &str, key: &str, value: &str) -> Result<i64, tonic::Status> {
    let mut kv = KvClient::new(rpc_channel(endpoint));
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

/// The value of `key` through `endpoint` (linearizable unless
/// `serializable`).
pub async fn get(
    endpoint: &str,
    key: &str,
    serializable: bool,
) -> Result<Option<String>, tonic::Status> {
    let mut kv = KvClient::new(rpc_channel(endpoint));
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

/// Puts `count` keys from `first` round-robin over the live nodes,
/// retrying a refused put a bounded number of times; records each
/// acknowledged one.
pub async fn put_many(
    cluster: &Cluster,
    acked: &mut BTreeMap<String, String>,
    first: usize,
    count: usize,
) {
    let endpoints: Vec<String> = cluster.live().into_iter().map(|i| cluster.endpoint(i)).collect();
    put_rotating(&endpoints, acked, first, count, 20, || cluster.logs()).await;
}

/// Puts keys `key<k>` = `value<k>` for `k` in `first..first + count`, key
/// `k` through `endpoints[k % len]` and, after each refusal (at most
/// `max_attempts - 1`, 100 ms apart), through the next endpoint; records
/// each acknowledged one. A put refused `max_attempts - 1` times fails the
/// test, with `logs()`.
pub async fn put_rotating(
    endpoints: &[String],
    acked: &mut BTreeMap<String, String>,
    first: usize,
    count: usize,
    max_attempts: usize,
    logs: impl Fn() -> String,
) {
    for k in first..first + count {
        let (key, value) = (format!("key{k:03}"), format!("value{k}"));
        let mut attempts = 0;
        loop {
            match put(&endpoints[(k + attempts) % endpoints.len()], &key, &value).await {
                Ok(_) => break,
                Err(e) => {
                    attempts += 1;
                    assert!(attempts < max_attempts, "put {key} kept failing: {e:?}\n{}", logs());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        acked.insert(key, value);
    }
}

/// Every acknowledged key reads back (linearizably) through `endpoint`.
pub async fn check_all(cluster: &Cluster, endpoint: &str, acked: &BTreeMap<String, String>) {
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
