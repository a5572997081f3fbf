//! The test harness the service tests share: a 3-node cluster of real
//! `synod serve` processes on loopback ports, configured as `synod up` does,
//! killed (even on a failed test) when dropped. Every wait is bounded.

#![allow(dead_code)] // each test binary uses part of it

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use synod_etcdpb::etcdserverpb::StatusRequest;
use synod_etcdpb::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::{Channel, Endpoint};

/// Nodes in a test cluster.
pub const NODES: usize = 3;
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// The `synod` binary under test.
pub fn synod() -> &'static str {
    env!("CARGO_BIN_EXE_synod")
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

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
                "node_id = {i}\ndata_dir = \"n{i}\"\nsecret_file = \"secret\"\n\
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

    /// Waits until every live node names the same live leader.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let mut leaders = Vec::new();
            for i in self.live() {
                let mut c = MaintenanceClient::new(channel(&self.endpoint(i)));
                leaders.push(c.status(StatusRequest {}).await.ok().map(|s| s.into_inner().leader));
            }
            if let Some(Some(l)) = leaders.first()
                && *l != 0
                && leaders.iter().all(|x| *x == Some(*l))
                && self.live().contains(&(*l as usize - 1))
            {
                return *l as usize - 1;
            }
            assert!(Instant::now() < deadline, "no leader agreed: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A lazily connecting channel to `endpoint`.
pub fn channel(endpoint: &str) -> Channel {
    Endpoint::from_shared(format!("http://{endpoint}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy()
}
