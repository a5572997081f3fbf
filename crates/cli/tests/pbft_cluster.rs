//! The service on PBFT (issue 7 §7): four real `synod serve` processes
//! with `protocol = "pbft"` (n = 3f+1, f = 1) on loopback ports, each with
//! its own key file from `synod pbft-keys`, talked to through the generated
//! etcd gRPC clients.
//!
//! One scenario: every replica serves put/get/del/txn (each orders what it
//! receives through the primary, signing as its own proxy client); the
//! primary is killed with SIGKILL and the three others (2f+1) change view
//! and keep serving writes, readable from each of them; more than a
//! checkpoint interval of writes later, the killed replica restarts,
//! recovers its journal and catches up (by retransmission or state
//! transfer) to serve every acknowledged write. Every wait is bounded; a
//! Drop guard kills the processes even on failure.
//!
//! Two more: `synod kv` through Synod's own PBFT client path (f+1 matching
//! signed replies), with one replica lying on that path (fault injection)
//! and then one correct replica killed; and with the primary killed (the
//! client waits out the view change).

mod common;

use common::{free_port, get, put, rpc_channel, status, synod};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use synod_etcdpb::etcdserverpb as pb;
use synod_etcdpb::etcdserverpb::cluster_client::ClusterClient;
use synod_etcdpb::etcdserverpb::kv_client::KvClient;
use synod_etcdpb::etcdserverpb::lease_client::LeaseClient;
use synod_etcdpb::synodpb::SubmitRequest;
use synod_etcdpb::synodpb::pbft_client::PbftClient;

/// Replicas (f = 1).
const N: usize = 4;
/// Bound on every wait for the cluster (view changes take a few timeouts).
const WAIT: Duration = Duration::from_secs(15);

struct PbftCluster {
    dir: tempfile::TempDir,
    client_ports: Vec<u16>,
    children: Vec<Option<Child>>,
    /// The replica (index) started with the lying-replies fault injected.
    liar: Option<usize>,
}

impl Drop for PbftCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl PbftCluster {
    fn start() -> PbftCluster {
        PbftCluster::start_with_liar(None)
    }

    fn start_with_liar(liar: Option<usize>) -> PbftCluster {
        PbftCluster::start_with(liar, "")
    }

    /// `extra` goes into every node's config (top-level settings).
    fn start_with(liar: Option<usize>, extra: &str) -> PbftCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = Command::new(synod())
            .args(["pbft-keys", "--nodes", "4", "--clients", "2", "--out"])
            .arg(dir.path())
            .output()
            .expect("synod pbft-keys");
        assert!(keys.status.success(), "{}", String::from_utf8_lossy(&keys.stderr));
        std::fs::write(dir.path().join("secret"), "0123456789abcdef0123456789abcdef")
            .expect("secret");
        let ports: Vec<(u16, u16)> = (0..N).map(|_| (free_port(), free_port())).collect();
        for i in 1..=N {
            let mut s = format!(
                "node_id = {i}\nprotocol = \"pbft\"\npbft_keys = \"n{i}.keys\"\n\
                 data_dir = \"n{i}\"\nsecret_file = \"secret\"\n{extra}\
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
        let mut cluster = PbftCluster {
            dir,
            client_ports: ports.iter().map(|p| p.0).collect(),
            children: (0..N).map(|_| None).collect(),
            liar,
        };
        for i in 0..N {
            cluster.spawn(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("n{}.log", i + 1)))
            .expect("log");
        let mut command = Command::new(synod());
        if self.liar == Some(i) {
            command.env(synod_node::pbft_service::FAULT_WRONG_REPLIES, "1");
        }
        let child = command
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

    fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.client_ports[i])
    }

    fn live(&self) -> Vec<usize> {
        (0..N).filter(|&i| self.children[i].is_some()).collect()
    }

    /// Waits until every live replica names the same live primary; returns
    /// its index and the view.
    async fn primary(&self) -> (usize, u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut seen = Vec::new();
            for i in self.live() {
                seen.push(status(&self.endpoint(i)).await.map(|s| (s.leader, s.term)));
            }
            if let Some(Some((l, view))) = seen.first().copied()
                && l != 0
                && seen.iter().all(|x| *x == Some((l, view)))
                && self.live().contains(&(l as usize - 1))
            {
                return (l as usize - 1, view);
            }
            assert!(Instant::now() < deadline, "no primary agreed: {seen:?}\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `synod kv ARGS` with the client key `c1.keys` through `endpoints`,
    /// which must succeed: its output.
    fn kv(&self, endpoints: &str, args: &[&str]) -> String {
        let (ok, out, err) = synod_kv(self.dir.path(), endpoints, true, args);
        assert!(ok, "synod kv {args:?}: {err}\n{}", self.logs());
        out
    }

    fn logs(&self) -> String {
        (1..=N)
            .map(|i| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("n{i}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(12).collect();
                format!("--- n{i} ---\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Puts `count` keys from `first`, round-robin over the live replicas,
    /// retrying a refused put a bounded number of times.
    async fn put_many(&self, acked: &mut BTreeMap<String, String>, first: usize, count: usize) {
        let endpoints: Vec<String> = self.live().into_iter().map(|i| self.endpoint(i)).collect();
        common::put_rotating(&endpoints, acked, first, count, 20, || self.logs()).await;
    }

    /// Puts `count` keys from `first` through `replicas` in turn, each of
    /// which must answer (they stayed up).
    async fn put_through(
        &self,
        replicas: &[usize],
        acked: &mut BTreeMap<String, String>,
        first: usize,
        count: usize,
    ) {
        for k in first..first + count {
            let (key, value) = (format!("key{k:03}"), format!("value{k}"));
            put(&self.endpoint(replicas[k % replicas.len()]), &key, &value)
                .await
                .expect("put through a replica that stayed up");
            acked.insert(key, value);
        }
    }

    /// Every acknowledged key reads back through replica `i`.
    async fn check(&self, i: usize, acked: &BTreeMap<String, String>, serializable: bool) {
        for (key, value) in acked {
            let got = get(&self.endpoint(i), key, serializable).await;
            assert_eq!(
                got.as_ref().ok(),
                Some(&Some(value.clone())),
                "{key} via replica {}\n{}",
                i + 1,
                self.logs()
            );
        }
    }
}

/// A child process killed (and reaped) when dropped, even by a failed test.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn put_op(key: &str, value: &str) -> pb::RequestOp {
    let put = pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..pb::PutRequest::default()
    };
    pb::RequestOp { request: Some(pb::request_op::Request::RequestPut(put)) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbft_cluster_serves_through_every_replica_survives_a_killed_primary_and_catches_it_up() {
    let mut cluster = PbftCluster::start();
    let (primary, view) = cluster.primary().await;
    let log = std::fs::read_to_string(cluster.dir.path().join("n1.log")).expect("log");
    assert!(log.contains("pbft"), "the node runs PBFT:\n{log}");
    let mut acked = BTreeMap::new();

    // put/get through every replica; a write at one is read at the others.
    cluster.put_many(&mut acked, 0, 12).await;
    for i in 0..N {
        cluster.check(i, &acked, false).await;
    }
    let backup = (primary + 1) % N;
    let mut kv = KvClient::new(rpc_channel(&cluster.endpoint(backup)));
    let deleted = kv
        .delete_range(pb::DeleteRangeRequest { key: b"key000".to_vec(), ..Default::default() })
        .await
        .expect("delete through a backup")
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    acked.remove("key000");
    // A transaction through another backup: key001 is at version 1.
    let compare = pb::Compare {
        result: pb::compare::CompareResult::Equal as i32,
        target: pb::compare::CompareTarget::Version as i32,
        key: b"key001".to_vec(),
        target_union: Some(pb::compare::TargetUnion::Version(1)),
        range_end: Vec::new(),
    };
    let txn = KvClient::new(rpc_channel(&cluster.endpoint((primary + 2) % N)))
        .txn(pb::TxnRequest {
            compare: vec![compare],
            success: vec![put_op("key001", "txn"), put_op("txnkey", "yes")],
            failure: vec![],
        })
        .await
        .expect("txn")
        .into_inner();
    assert!(txn.succeeded, "the compare holds");
    acked.insert("key001".into(), "txn".into());
    acked.insert("txnkey".into(), "yes".into());
    for i in 0..N {
        assert_eq!(get(&cluster.endpoint(i), "key000", false).await.expect("get"), None);
        cluster.check(i, &acked, false).await;
    }
    // A lease granted through a backup (the primary's clock stamps it) is
    // known at every replica.
    let lease = LeaseClient::new(rpc_channel(&cluster.endpoint(backup)))
        .lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("lease grant through a backup")
        .into_inner();
    assert!(lease.id != 0 && lease.error.is_empty(), "{lease:?}");
    for i in 0..N {
        let ttl = LeaseClient::new(rpc_channel(&cluster.endpoint(i)))
            .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: lease.id, keys: false })
            .await
            .expect("time to live")
            .into_inner();
        assert!(ttl.ttl > 0 && ttl.granted_ttl == 60, "replica {}: {ttl:?}", i + 1);
    }

    // SIGKILL the primary: the other three (2f+1) move to a new view and
    // keep serving; what each acknowledges is readable at the others.
    cluster.kill(primary);
    let killed_at = Instant::now();
    cluster.put_many(&mut acked, 100, 10).await;
    let (new_primary, new_view) = cluster.primary().await;
    assert_ne!(new_primary, primary);
    assert!(new_view > view, "view {new_view} after view {view}");
    assert!(killed_at.elapsed() < WAIT, "took {:?}", killed_at.elapsed());
    for i in cluster.live() {
        cluster.check(i, &acked, false).await;
    }
    // More than a checkpoint interval (K = 128) of writes while it is down.
    cluster.put_many(&mut acked, 200, 140).await;

    // The killed replica restarts and catches up: it learns the others'
    // view from their NEW-VIEW (it does not suspect a primary while it
    // lags or cannot hear enough peers to know its view), then catches up
    // by state transfer to their stable checkpoint and retransmission.
    let target = status(&cluster.endpoint(new_primary)).await.expect("status").applied_index;
    cluster.spawn(primary);
    let others: Vec<usize> = cluster.live().into_iter().filter(|&i| i != primary).collect();
    let deadline = Instant::now() + 2 * WAIT;
    let mut next_key = 500;
    loop {
        let back = status(&cluster.endpoint(primary)).await.map(|s| s.applied_index);
        if back.is_some_and(|b| b >= target) {
            break;
        }
        assert!(
            Instant::now() < deadline && next_key < 800,
            "replica {} did not catch up: {back:?} < {target}\n{}",
            primary + 1,
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.put_through(&others, &mut acked, next_key, 20).await;
        next_key += 20;
    }
    // Writes made while it caught up may still be on their way to it, and a
    // serializable read there is as fresh as what it has applied. So: note
    // what the others have applied and what was acknowledged by then, keep
    // writing until it has applied that much, and check those keys.
    let target = status(&cluster.endpoint(others[0])).await.expect("status").applied_index;
    let acked_by_then = acked.clone();
    loop {
        let back = status(&cluster.endpoint(primary)).await.map(|s| s.applied_index);
        if back.is_some_and(|b| b >= target) {
            break;
        }
        assert!(
            Instant::now() < deadline && next_key < 1000,
            "replica {} stays behind: {back:?} < {target}\n{}",
            primary + 1,
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        cluster.put_through(&others, &mut acked, next_key, 20).await;
        next_key += 20;
    }
    cluster.check(primary, &acked_by_then, true).await;
    assert_eq!(get(&cluster.endpoint(primary), "key000", true).await.expect("get"), None);
    // It is in the others' view (every live replica names the same live
    // primary), and linearizable reads through it, as through the others,
    // reflect every acknowledged write.
    let (_, back_view) = cluster.primary().await;
    assert!(back_view >= new_view, "view {back_view} after view {new_view}");
    cluster.check(others[0], &acked, false).await;
    cluster.check(primary, &acked, false).await;
    // And a write through it is served (forwarded to the primary).
    put(&cluster.endpoint(primary), "through-restarted", "yes").await.expect("put through it");
    acked.insert("through-restarted".into(), "yes".into());
    for i in 0..N {
        cluster.check(i, &acked, false).await;
    }
}

/// Snapshots every 128 sequence numbers (the checkpoint interval): a
/// backup is killed, the others order more than two snapshot intervals, so
/// they adopt snapshots and drop the batches the backup misses (and
/// compact their journals). Restarted, it asks for batches, is offered a
/// snapshot, fetches and checks it chunk by chunk, installs it and catches
/// up from there; restarted again, it recovers from that snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_for_two_snapshot_intervals_catches_up_by_installing_a_snapshot() {
    let mut cluster = PbftCluster::start_with(None, "pbft_snapshot_interval = 128\n");
    let (primary, _) = cluster.primary().await;
    let mut acked = BTreeMap::new();
    cluster.put_many(&mut acked, 0, 10).await;
    let down = (primary + 1) % N;
    cluster.kill(down);
    // Past two snapshot intervals (2 × 128 sequence numbers, one put each
    // at least) and the checkpoint after.
    cluster.put_many(&mut acked, 100, 300).await;
    let others: Vec<usize> = cluster.live();
    let dir = cluster.dir.path().to_path_buf();
    let log =
        |i: usize| std::fs::read_to_string(dir.join(format!("n{}.log", i + 1))).unwrap_or_default();
    for &i in &others {
        assert!(log(i).contains("took a snapshot"), "replica {}\n{}", i + 1, cluster.logs());
    }
    let target = status(&cluster.endpoint(others[0])).await.expect("status").applied_index;
    cluster.spawn(down);
    let deadline = Instant::now() + 2 * WAIT;
    let mut next_key = 1000;
    loop {
        let back = status(&cluster.endpoint(down)).await.map(|s| s.applied_index);
        if back.is_some_and(|b| b >= target) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica {} did not catch up: {back:?} < {target}\n{}",
            down + 1,
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.put_through(&others, &mut acked, next_key, 5).await;
        next_key += 5;
    }
    assert!(
        log(down).contains("installed a snapshot from a peer"),
        "replica {} caught up without a snapshot\n{}",
        down + 1,
        cluster.logs()
    );
    // Every acknowledged write reads back through it (linearizably).
    cluster.check(down, &acked, false).await;
    // Restarted again, it starts from the snapshot it installed.
    cluster.kill(down);
    cluster.spawn(down);
    let deadline = Instant::now() + WAIT;
    while status(&cluster.endpoint(down)).await.is_none() {
        assert!(Instant::now() < deadline, "it did not restart\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(log(down).contains("loaded snapshot"), "{}", cluster.logs());
    cluster.check(down, &acked, false).await;
}

/// `synod kv ARGS` through `endpoints` with the client key `c1.keys`, run in
/// `cwd`: (success, stdout, stderr).
/// `command` sealed with the client's key and submitted to one replica
/// alone (no f+1), with a fresh sequence number (the clock's microseconds:
/// above any the CLI took before); its answer as that replica gives it.
async fn submit_alone(
    keys: &synod_node::pbft_keys::ClientIdentity,
    endpoint: &str,
    command: &synod_kv::KvCommand,
) -> Result<synod_kv::KvResult, synod_kv::KvError> {
    let seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64;
    let op = synod_pbft::request::seal(&keys.signing, keys.client, seq, &command.encode());
    let reply = PbftClient::new(rpc_channel(endpoint))
        .submit(SubmitRequest { client: keys.client.0, seq, op: op.to_vec() })
        .await
        .expect("the replica answers")
        .into_inner();
    synod_kv::decode_result(&reply.result)
}

fn synod_kv(
    cwd: &std::path::Path,
    endpoints: &str,
    key: bool,
    args: &[&str],
) -> (bool, String, String) {
    let mut command = Command::new(synod());
    command.current_dir(cwd).args(["kv", "--endpoints", endpoints, "--timeout-ms", "15000"]);
    if key {
        command.arg("--pbft-client-key").arg(cwd.join("c1.keys"));
    }
    let out = command.args(args).output().expect("synod kv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synod_kv_takes_f_plus_1_matching_replies_outvoting_a_liar_with_a_replica_down() {
    let liar = 3;
    let mut cluster = PbftCluster::start_with_liar(Some(liar));
    let (primary, _) = cluster.primary().await;
    let dir = cluster.dir.path().to_path_buf();
    let all: Vec<String> = (0..N).map(|i| cluster.endpoint(i)).collect();
    let all = all.join(",");

    assert_eq!(cluster.kv(&all, &["put", "k1", "v1"]), "OK\n");
    assert_eq!(cluster.kv(&all, &["get", "k1"]), "k1\nv1\n");
    assert_eq!(cluster.kv(&all, &["put", "k1", "v1b", "--prev-kv"]), "OK\nk1\nv1\n");
    assert_eq!(cluster.kv(&all, &["put", "k1", "v1"]), "OK\n");
    assert_eq!(cluster.kv(&all, &["get", "k", "--prefix", "--keys-only"]), "k1\n");
    let (ok, _, err) = synod_kv(cluster.dir.path(), &all, true, &["put", "", "x"]);
    assert!(!ok && err.contains("etcdserver: key is not provided"), "{err}");

    // The liar does lie on this path: asked alone, it answers a made-up
    // value, validly signed; a plain etcd client of it would take that.
    let keys = synod_node::pbft_keys::load_client(&dir.join("c1.keys")).expect("client key");
    let range = synod_kv::KvCommand::Range(synod_kv::RangeRequest {
        key: bytes::Bytes::from_static(b"k1"),
        ..Default::default()
    });
    // Above the sequence numbers `synod kv` took from the clock so far.
    let seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64;
    let op = synod_pbft::request::seal(&keys.signing, keys.client, seq, &range.encode());
    let reply = PbftClient::new(rpc_channel(&cluster.endpoint(liar)))
        .submit(SubmitRequest { client: keys.client.0, seq, op: op.to_vec() })
        .await
        .expect("the liar answers")
        .into_inner();
    let text = String::from_utf8_lossy(&reply.result).into_owned();
    assert!(text.contains("forged by replica 4"), "{text:?}\n{}", cluster.logs());
    let mut tally = synod_node::pbft_reply::Tally::new(&keys, seq);
    assert_eq!(tally.add(&reply), Ok(None), "validly signed, yet one reply is not enough");

    // Given only the liar's endpoint, the client finds the others
    // (MemberList) and is not fooled.
    assert_eq!(cluster.kv(&cluster.endpoint(liar), &["get", "k1"]), "k1\nv1\n");

    // A retransmission to a correct replica is answered from the session
    // cache: the same result bytes (the same revision), executed once.
    let honest = cluster.endpoint((liar + 1) % N);
    let put = synod_kv::KvCommand::Put(synod_kv::PutRequest {
        key: bytes::Bytes::from_static(b"k3"),
        value: bytes::Bytes::from_static(b"v3"),
        ..Default::default()
    });
    let seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64;
    let op = synod_pbft::request::seal(&keys.signing, keys.client, seq, &put.encode());
    let request = SubmitRequest { client: keys.client.0, seq, op: op.to_vec() };
    let mut rpc = PbftClient::new(rpc_channel(&honest));
    let first = rpc.submit(request.clone()).await.expect("put").into_inner();
    let again = rpc.submit(request).await.expect("retransmitted put").into_inner();
    assert_eq!(first.result, again.result);
    let revision = |r: &[u8]| match synod_kv::decode_result(r) {
        Ok(Ok(synod_kv::KvResponse::Put(p))) => p.header.revision,
        other => panic!("not a put result: {other:?}"),
    };
    assert_eq!(revision(&first.result), revision(&again.result));
    assert_eq!(cluster.kv(&all, &["get", "k3"]), "k3\nv3\n");

    // One correct replica down (a backup, so no view change is needed):
    // the two correct ones left still make f+1 = 2 against the liar.
    let victim = (0..N).find(|&i| i != primary && i != liar).expect("a correct backup");
    cluster.kill(victim);
    assert_eq!(cluster.kv(&all, &["put", "k2", "v2"]), "OK\n");
    assert_eq!(cluster.kv(&all, &["get", "k2"]), "k2\nv2\n");
    assert_eq!(cluster.kv(&all, &["del", "k1"]), "1\n");
    assert_eq!(cluster.kv(&all, &["get", "k1"]), "");
    // A plain etcd read through a correct replica agrees.
    let survivor = (0..N).find(|&i| i != victim && i != liar).expect("a correct replica");
    assert_eq!(
        get(&cluster.endpoint(survivor), "k2", false).await.expect("get"),
        Some("v2".into())
    );

    // `synod watch` on PBFT: the history as f+1 replicas agree on it (the
    // liar forges every event's value, and is outvoted)... A watch is a
    // client session of its own: it has its own key, as concurrent clients
    // must (the writes below use c1.keys meanwhile).
    let watch = |args: &[&str]| {
        let mut c = Command::new(synod());
        c.current_dir(&dir)
            .args(["watch", "--endpoints", &all, "--timeout-ms", "15000"])
            .arg("--pbft-client-key")
            .arg(dir.join("c2.keys"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let out = watch(&["k", "--prefix", "--rev", "1", "--count", "6"]).output().expect("watch");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "PUT\nk1\nv1\nPUT\nk1\nv1b\nPUT\nk1\nv1\nPUT\nk3\nv3\nPUT\nk2\nv2\nDELETE\nk1\n\n"
    );
    // ...and new events from now on: keep writing until the watcher has
    // printed one (its first poll fixes where "now" is), bounded.
    let mut live = KillOnDrop(Some(watch(&["k4", "--count", "1"]).spawn().expect("watch")));
    let mut written = Vec::new();
    let deadline = Instant::now() + WAIT;
    while live.child().try_wait().expect("poll the watcher").is_none() {
        assert!(Instant::now() < deadline, "the watcher printed nothing\n{}", cluster.logs());
        let value = format!("v4-{}", written.len());
        assert_eq!(cluster.kv(&all, &["put", "k4", &value]), "OK\n");
        written.push(value);
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = live.0.take().expect("running").wait_with_output().expect("watcher output");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        written.iter().any(|v| text == format!("PUT\nk4\n{v}\n")),
        "{text:?} is none of {written:?}"
    );

    // Compacted through f+1 as well; a watch from before it is cancelled
    // with etcd's reason.
    assert_eq!(cluster.kv(&all, &["compact", "3"]), "compacted revision 3\n");
    let out = watch(&["k", "--prefix", "--rev", "1"]).output().expect("watch");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("required revision has been compacted"), "{err}");

    // Leases through f+1 (the liar forges every lease answer: ids and TTLs
    // shifted, validly signed). Each lease command executes at its batch's
    // agreed time, so the correct replicas' answers match exactly.
    let lease = |args: &[&str]| {
        let out = Command::new(synod())
            .current_dir(&dir)
            .args(["lease", "--endpoints", &all, "--timeout-ms", "15000"])
            .arg("--pbft-client-key")
            .arg(dir.join("c1.keys"))
            .args(args)
            .output()
            .expect("synod lease");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = lease(&["grant", "30"]);
    assert!(ok && out.ends_with(" granted with TTL(30s)\n"), "{out}{err}\n{}", cluster.logs());
    let id = out.trim_start_matches("lease ").split(' ').next().expect("an id").to_string();
    let (ok, out, err) = lease(&["keep-alive", &id, "--once"]);
    assert_eq!(
        (ok, out.as_str()),
        (true, format!("lease {id} keepalived with TTL(30)\n").as_str()),
        "{err}"
    );
    assert_eq!(cluster.kv(&all, &["put", "k5", "v5", "--lease", &id]), "OK\n");
    let (ok, out, err) = lease(&["timetolive", &id, "--keys"]);
    let prefix = format!("lease {id} granted with TTL(30s), remaining(");
    assert!(
        ok && out.starts_with(&prefix) && out.ends_with("s), attached keys([k5])\n"),
        "{out}{err}"
    );
    let remaining: i64 =
        out[prefix.len()..].split('s').next().and_then(|r| r.parse().ok()).expect("remaining");
    assert!((20..=30).contains(&remaining), "{out}");
    // The liar, asked alone, does forge a lease answer.
    let lease_id = i64::from_str_radix(&id, 16).expect("hex id");
    let ttl = synod_kv::KvCommand::LeaseTimeToLive {
        request: synod_kv::LeaseTimeToLiveRequest { id: lease_id, keys: false },
        now: synod_core::Time(0),
    };
    match submit_alone(&keys, &cluster.endpoint(liar), &ttl).await {
        Ok(Ok(synod_kv::KvResponse::LeaseTimeToLive(t))) => {
            assert!(t.ttl >= synod_node::pbft_service::FORGED_TTL_SECS, "{t:?}")
        }
        other => panic!("not a forged time-to-live: {other:?}"),
    }
    // Listed through f+1: the one live lease. The liar adds a lease that
    // does not exist to every list, on the PBFT path and on etcd's
    // LeaseLeases: with it first among the endpoints, a list that trusted
    // one replica (the first that answers) would print it.
    let liar_first: Vec<String> = std::iter::once(liar)
        .chain((0..N).filter(|&i| i != liar))
        .map(|i| cluster.endpoint(i))
        .collect();
    let out = Command::new(synod())
        .current_dir(&dir)
        .args(["lease", "--endpoints", &liar_first.join(","), "--timeout-ms", "15000"])
        .arg("--pbft-client-key")
        .arg(dir.join("c1.keys"))
        .arg("list")
        .output()
        .expect("synod lease list");
    let (ok, text) = (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned());
    assert_eq!(
        (ok, text.as_str()),
        (true, format!("found 1 leases\n{id}\n").as_str()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let liar_leases = LeaseClient::new(rpc_channel(&cluster.endpoint(liar)))
        .lease_leases(pb::LeaseLeasesRequest {})
        .await
        .expect("the liar answers")
        .into_inner();
    assert!(
        liar_leases.leases.iter().any(|l| l.id == synod_node::pbft_service::FORGED_LEASE_ID),
        "the liar lists no forged lease to etcd clients: {liar_leases:?}"
    );
    let list = synod_kv::KvCommand::LeaseLeases(synod_kv::LeaseLeasesRequest {});
    match submit_alone(&keys, &cluster.endpoint(liar), &list).await {
        Ok(Ok(synod_kv::KvResponse::LeaseLeases(l))) => assert!(
            l.leases.iter().any(|s| s.id == synod_node::pbft_service::FORGED_LEASE_ID),
            "{l:?}"
        ),
        other => panic!("not a forged lease list: {other:?}"),
    }
    // Revoked through f+1: the attached key goes, the lease is gone.
    let (ok, out, err) = lease(&["revoke", &id]);
    assert_eq!((ok, out.as_str()), (true, format!("lease {id} revoked\n").as_str()), "{err}");
    assert_eq!(cluster.kv(&all, &["get", "k5"]), "");
    let (ok, out, err) = lease(&["timetolive", &id]);
    assert_eq!(
        (ok, out.as_str()),
        (true, format!("lease {id} already expired\n").as_str()),
        "{err}"
    );
    let (ok, out, _) = lease(&["keep-alive", &id, "--once"]);
    assert!(!ok && out.contains("expired or revoked"), "{out}");

    // `synod lock` on PBFT: etcd's recipe through f+1 (lease, put, polls).
    // A holder (key c2) runs a command for a while; a second locker (key
    // c1) waits for it, then runs with a larger fencing token; both
    // release their keys.
    let lock = |key: &str, script: &str| {
        let mut c = Command::new(synod());
        c.current_dir(&dir)
            .args(["lock", "--endpoints", &all, "--timeout-ms", "15000", "--ttl", "10"])
            .arg("--pbft-client-key")
            .arg(dir.join(key))
            .args(["L", "--", "sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let mut first = KillOnDrop(Some(
        lock("c2.keys", "echo \"$ETCD_LOCK_REV\"; sleep 2; touch first-done")
            .spawn()
            .expect("lock"),
    ));
    let deadline = Instant::now() + WAIT;
    while cluster.kv(&all, &["get", "L/", "--prefix", "--keys-only"]).is_empty() {
        assert!(Instant::now() < deadline, "the first locker never held L\n{}", cluster.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The first holder's command ends (first-done) before it releases, so
    // the second command finds the file only if it waited.
    let second_script = "test -e first-done && echo \"$ETCD_LOCK_KEY $ETCD_LOCK_REV\"";
    let out = lock("c1.keys", second_script).output().expect("lock");
    assert!(out.status.success(), "ran too early? {}", String::from_utf8_lossy(&out.stderr));
    let first = first.0.take().expect("ran").wait_with_output().expect("first locker");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let first_token: i64 =
        String::from_utf8_lossy(&first.stdout).trim().parse().expect("the first token");
    let second = String::from_utf8_lossy(&out.stdout).into_owned();
    let (second_key, second_token) = second.trim().split_once(' ').expect("key and token");
    assert!(second_key.starts_with("L/"), "{second}");
    assert!(second_token.parse::<i64>().expect("token") > first_token, "{second}");
    assert_eq!(cluster.kv(&all, &["get", "L/", "--prefix"]), "", "both released");

    // `synod elect` on PBFT: a candidate (key c2) leads and prints its key
    // and proposal; a listener (key c1) sees it through f+1; on Ctrl-C the
    // candidate resigns (its key is gone).
    let elect = |key: &str, args: &[&str]| {
        let mut c = Command::new(synod());
        c.current_dir(&dir)
            .args(["elect", "--endpoints", &all, "--timeout-ms", "15000", "--ttl", "10"])
            .arg("--pbft-client-key")
            .arg(dir.join(key))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        KillOnDrop(Some(c.spawn().expect("synod elect")))
    };
    // The first two lines a child prints, within WAIT.
    let first_lines = |child: &mut KillOnDrop| {
        use std::io::BufRead;
        let stdout = child.child().stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let two: Vec<String> = lines.by_ref().take(2).map_while(Result::ok).collect();
            let _ = tx.send(two);
        });
        rx.recv_timeout(WAIT).unwrap_or_default()
    };
    let interrupt = |child: &mut KillOnDrop| {
        let pid = child.child().id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().expect("kill");
        assert!(sent.success());
        let out = child.0.take().expect("running").wait_with_output().expect("exit");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let mut candidate = elect("c2.keys", &["E", "alice"]);
    let led = first_lines(&mut candidate);
    assert!(led.len() == 2 && led[0].starts_with("E/") && led[1] == "alice", "{led:?}");
    let mut listener = elect("c1.keys", &["E", "--listen"]);
    assert_eq!(first_lines(&mut listener), led, "the listener sees the leader");
    interrupt(&mut listener);
    interrupt(&mut candidate);
    assert_eq!(cluster.kv(&all, &["get", "E/", "--prefix"]), "", "resigned");

    // `synod member list`: the list f+1 replicas return alike. The liar
    // lists a member that does not exist; asked alone (a plain etcd
    // client) it shows it, through f+1 it is outvoted. (One correct
    // replica is down: the liar's list and the two correct ones' are the
    // only answers, and the correct ones make f+1.)
    let member_list = |endpoints: &str| {
        Command::new(synod())
            .current_dir(&dir)
            .args(["member", "--endpoints", endpoints, "--timeout-ms", "5000"])
            .arg("--pbft-client-key")
            .arg(dir.join("c1.keys"))
            .arg("list")
            .output()
            .expect("synod member list")
    };
    let out = member_list(&all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.lines().count(), N, "{text}");
    assert!(!text.contains("forged"), "{text}");
    let liar_list = ClusterClient::new(rpc_channel(&cluster.endpoint(liar)))
        .member_list(pb::MemberListRequest::default())
        .await
        .expect("the liar answers")
        .into_inner();
    assert!(liar_list.members.iter().any(|m| m.name.starts_with("forged")), "{liar_list:?}");
    // One endpoint is not enough to outvote anyone.
    let out = member_list(&cluster.endpoint(liar));
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));

    // `synod up`'s default key location is found without the flag...
    let cwd = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(cwd.path().join("synod-data")).expect("mkdir");
    std::fs::copy(dir.join("c1.keys"), cwd.path().join("synod-data/c1.keys")).expect("copy");
    let (ok, out, err) = synod_kv(cwd.path(), &all, false, &["get", "k2"]);
    assert!(ok && out == "k2\nv2\n", "{out}{err}");
    // `synod watch` finds its own default key (c2.keys, which `synod up`
    // writes for watches) where `synod kv` finds none.
    let watch_only = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(watch_only.path().join("synod-data")).expect("mkdir");
    std::fs::copy(dir.join("c2.keys"), watch_only.path().join("synod-data/c2.keys")).expect("copy");
    let out = Command::new(synod())
        .current_dir(watch_only.path())
        .args(["watch", "--endpoints", &all, "k2", "--rev", "3", "--count", "1"])
        .output()
        .expect("watch");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PUT\nk2\nv2\n");
    let (ok, _, err) = synod_kv(watch_only.path(), &all, false, &["get", "k2"]);
    assert!(!ok && err.contains("synod-data/c1.keys"), "{err}");
    // ...and without any key a PBFT cluster is refused, saying what is missing.
    let empty = tempfile::tempdir().expect("tempdir");
    let (ok, _, err) = synod_kv(empty.path(), &all, false, &["get", "k2"]);
    assert!(!ok && err.contains("--pbft-client-key"), "{err}");
    // `synod lease` takes the same f+1 path (so it needs a key too; the
    // answers above were outvoted, not one replica's).
    let out = Command::new(synod())
        .current_dir(empty.path())
        .args(["lease", "--endpoints", &all, "timetolive", &id])
        .output()
        .expect("synod lease");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--pbft-client-key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synod_kv_keeps_working_through_the_view_change_after_the_primary_is_killed() {
    let mut cluster = PbftCluster::start();
    let (primary, view) = cluster.primary().await;
    let all: Vec<String> = (0..N).map(|i| cluster.endpoint(i)).collect();
    let all = all.join(",");
    assert_eq!(cluster.kv(&all, &["put", "a", "1"]), "OK\n");
    cluster.kill(primary);
    // The backups forward the request to the dead primary, suspect it,
    // change view, and the new primary orders it; the client waits.
    assert_eq!(cluster.kv(&all, &["put", "b", "2"]), "OK\n");
    assert_eq!(cluster.kv(&all, &["get", "a", "--from-key"]), "a\n1\nb\n2\n");
    let (new_primary, new_view) = cluster.primary().await;
    assert!(new_primary != primary && new_view > view, "view {new_view} after {view}");
}
