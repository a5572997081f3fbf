//! `synod bench` against a real 3-node cluster of `synod serve` processes
//! on loopback ports (the pattern of `cluster.rs`): small bounded loads of
//! puts, linearizable and serializable gets and a mixed load, and the txn,
//! watch fan-out and lease keep-alive loads, each checked through `--json`; `--plot` writes an SVG; an unreachable endpoint exits
//! 1 and bad usage exits 2; keep-alives forwarded by a follower are all
//! answered; a load whose node is killed mid-run counts a bounded number of
//! errors. A Drop guard kills the processes on failure.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use synod_etcdpb::etcdserverpb::lease_client::LeaseClient;
use synod_etcdpb::etcdserverpb::maintenance_client::MaintenanceClient;
use synod_etcdpb::etcdserverpb::{LeaseLeasesRequest, StatusRequest};
use tonic::transport::Endpoint;

const NODES: usize = 3;

fn synod() -> &'static str {
    env!("CARGO_BIN_EXE_synod")
}

#[path = "common/ports.rs"]
mod ports;
use ports::free_port;

/// The processes of a cluster; killed when dropped.
struct Cluster {
    _dir: tempfile::TempDir,
    endpoints: Vec<String>,
    children: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..NODES).map(|_| (free_port(), free_port())).collect();
        std::fs::write(dir.path().join("secret"), "0123456789abcdef0123456789abcdef")
            .expect("secret");
        let mut children = Vec::new();
        for i in 1..=NODES {
            let mut s = format!("node_id = {i}\ndata_dir = \"n{i}\"\nsecret_file = \"secret\"\n");
            for (j, (client, peer)) in ports.iter().enumerate() {
                s.push_str(&format!(
                    "[[members]]\nid = {}\npeer_addr = \"127.0.0.1:{peer}\"\n\
                     client_addr = \"127.0.0.1:{client}\"\n",
                    j + 1
                ));
            }
            let config = dir.path().join(format!("n{i}.toml"));
            std::fs::write(&config, s).expect("config");
            let child = Command::new(synod())
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn synod serve");
            children.push(child);
        }
        let endpoints = ports.iter().map(|p| format!("127.0.0.1:{}", p.0)).collect();
        Cluster { _dir: dir, endpoints, children }
    }

    /// Waits (bounded) until every node names the same leader.
    async fn wait_for_leader(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut leaders = Vec::new();
            for e in &self.endpoints {
                let channel = Endpoint::from_shared(format!("http://{e}"))
                    .expect("endpoint")
                    .timeout(Duration::from_secs(1))
                    .connect_lazy();
                let s = MaintenanceClient::new(channel).status(StatusRequest {}).await;
                leaders.push(s.ok().map(|s| s.into_inner().leader));
            }
            if leaders[0].is_some_and(|l| l != 0) && leaders.iter().all(|l| *l == leaders[0]) {
                return;
            }
            assert!(Instant::now() < deadline, "no leader agreed: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn bench(args: &[&str]) -> Output {
    Command::new(synod()).arg("bench").args(args).output().expect("run synod bench")
}

fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = bench(args);
    assert!(out.status.success(), "synod bench {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn assert_sane(report: &serde_json::Value, requests: u64) {
    assert_eq!(report["ok"], requests, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let l = &report["latency_ms"];
    let p = |k: &str| l[k].as_f64().expect("a number");
    assert!(0.0 < p("min") && p("min") <= p("p50"), "{l}");
    assert!(p("p50") <= p("p90") && p("p90") <= p("p99"), "{l}");
    assert!(p("p99") <= p("p99.9") && p("p99.9") <= p("max"), "{l}");
    assert!(report["throughput_rps"].as_f64().expect("throughput") > 0.0);
    let per_second: u64 =
        report["per_second"].as_array().expect("array").iter().filter_map(|v| v.as_u64()).sum();
    assert_eq!(per_second, requests, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_a_cluster_and_reports_every_request() {
    let cluster = Cluster::start();
    cluster.wait_for_leader().await;
    let all = cluster.endpoints.join(",");
    let svg = cluster._dir.path().join("latency.svg");

    let put = bench_json(&[
        "put",
        "--endpoints",
        &all,
        "--clients",
        "8",
        "--conns",
        "3",
        "--key-space",
        "50",
        "--total",
        "300",
        "--json",
        "--plot",
        svg.to_str().expect("utf-8"),
    ]);
    assert_sane(&put, 300);
    assert_eq!(put["workload"], "put");
    let plot = std::fs::read_to_string(&svg).expect("the plot was written");
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"), "{plot}");

    for consistency in ["l", "s"] {
        let get = bench_json(&[
            "get",
            "--endpoints",
            &all,
            "--clients",
            "4",
            "--key-space",
            "50",
            "--total",
            "200",
            "--consistency",
            consistency,
            "--json",
        ]);
        assert_sane(&get, 200);
        assert_eq!(get["consistency"], consistency);
    }
    let mixed = bench_json(&[
        "mixed",
        "--endpoints",
        &all,
        "--clients",
        "4",
        "--conns",
        "2",
        "--total",
        "200",
        "--rate",
        "2000",
        "--json",
    ]);
    assert_sane(&mixed, 200);

    // Text output names the workload and the percentiles.
    let out = bench(&["put", "--endpoints", &cluster.endpoints[0], "--total", "20"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("20 ok, 0 failed") && text.contains("p99.9"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_txn_watch_and_lease_loads_count_every_request() {
    let cluster = Cluster::start();
    cluster.wait_for_leader().await;
    let all = cluster.endpoints.join(",");

    let txn = bench_json(&[
        "txn",
        "--endpoints",
        &all,
        "--clients",
        "4",
        "--key-space",
        "20",
        "--total",
        "100",
        "--json",
    ]);
    assert_sane(&txn, 100);
    assert_eq!(txn["workload"], "txn");

    // 20 watchers see every one of 30 puts: 600 events, each with a
    // delivery latency.
    let watch = bench_json(&[
        "watch",
        "--endpoints",
        &all,
        "--watchers",
        "20",
        "--conns",
        "2",
        "--rate",
        "300",
        "--total",
        "30",
        "--json",
    ]);
    assert_eq!(watch["watches_created"], 20, "{watch}");
    assert_eq!(watch["puts_acked"], 30, "{watch}");
    assert_eq!(watch["events_expected"], 600, "{watch}");
    assert_sane(&watch, 600);

    // Keep-alives of 4 leases; the leases are revoked at the end (a failed
    // revoke would be an error).
    let lease = bench_json(&[
        "lease-keepalive",
        "--endpoints",
        &all,
        "--clients",
        "4",
        "--conns",
        "2",
        "--total",
        "120",
        "--json",
    ]);
    assert_sane(&lease, 120);
    assert_eq!(lease["workload"], "lease-keepalive");
    let channel = Endpoint::from_shared(format!("http://{}", cluster.endpoints[0]))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let leases = LeaseClient::new(channel)
        .lease_leases(LeaseLeasesRequest {})
        .await
        .expect("list leases")
        .into_inner();
    assert!(leases.leases.is_empty(), "every lease was revoked: {:?}", leases.leases);

    // The watch load needs room for the send time in the value.
    let out = bench(&["watch", "--total", "5", "--value-size", "8"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--value-size"));
}

/// Keep-alives sent to a follower are forwarded to the leader one at a
/// time; 100,000 of them from 64 clients (more than h2's 1,024 locally reset streams, which
/// the forwarding used to leave behind, one per keep-alive, until the
/// connection to the leader failed with "h2 protocol error") are all
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_forwarded_by_a_follower_are_all_answered() {
    let cluster = Cluster::start();
    cluster.wait_for_leader().await;
    let mut follower = None;
    for e in &cluster.endpoints {
        let channel = Endpoint::from_shared(format!("http://{e}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let s = MaintenanceClient::new(channel).status(StatusRequest {}).await.expect("status");
        let s = s.into_inner();
        if s.header.is_some_and(|h| h.member_id != s.leader) {
            follower = Some(e.clone());
            break;
        }
    }
    let follower = follower.expect("a follower");
    let lease = bench_json(&[
        "lease-keepalive",
        "--endpoints",
        &follower,
        "--clients",
        "64",
        "--conns",
        "8",
        "--total",
        "100000",
        "--json",
    ]);
    assert_sane(&lease, 100_000);
}

/// The node every client talks to dies mid-run: each client's keep-alive
/// stream fails, and reopening it fails until the run ends. Every failed
/// request counts once and the clients back off, so the errors stay a
/// handful per client per second (the bench used to count a closed stream
/// in a tight loop: millions of errors in seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_load_whose_node_dies_reports_a_bounded_number_of_errors() {
    let mut cluster = Cluster::start();
    cluster.wait_for_leader().await;
    let bench = Command::new(synod())
        .args(["bench", "lease-keepalive", "--endpoints", &cluster.endpoints[0]])
        .args(["--clients", "4", "--duration", "4", "--timeout-ms", "1000", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn synod bench");
    // Once the 4 leases are granted (the keep-alives have begun), kill the
    // node the bench talks to.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let channel = Endpoint::from_shared(format!("http://{}", cluster.endpoints[1]))
            .expect("endpoint")
            .timeout(Duration::from_secs(1))
            .connect_lazy();
        let leases = LeaseClient::new(channel).lease_leases(LeaseLeasesRequest {}).await;
        if leases.is_ok_and(|l| l.into_inner().leases.len() >= 4) {
            break;
        }
        assert!(Instant::now() < deadline, "the bench granted no leases");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The leases are committed before the bench's clients open their
    // keep-alive streams; give the streams time to be answered (the test
    // asserts that some were) before the kill.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    cluster.children[0].kill().expect("kill the bench's node");
    let out = bench.wait_with_output().expect("the bench ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "keep-alives were answered before the kill: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let errors = report["errors"].as_u64().expect("errors");
    // At most ~10 failures per client in 4 s with the backoff (10 ms
    // doubling to 1 s), plus a failed revoke each.
    assert!((4..=4 * 20).contains(&errors), "{errors} errors: {report}");
    assert!(report["ok"].as_u64().expect("ok") > 0, "{report}");
    // Each kind of error is also on stderr.
    assert!(stderr.contains("synod bench lease-keepalive: "), "{stderr}");
}

#[test]
fn an_unreachable_endpoint_exits_1_and_bad_usage_exits_2() {
    let port = free_port(); // bound then released: nothing listens there
    let endpoint = format!("127.0.0.1:{port}");
    let out = bench(&["put", "--endpoints", &endpoint, "--total", "5", "--timeout-ms", "500"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
    let out = bench(&["put", "--total", "5", "--duration", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let out = bench(&["get", "--total", "5", "--key-size", "1", "--key-space", "11"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key-space"));
}
