//! Driver tests on a real data directory: a one-node Raft cluster (its
//! transport listens on a loopback port but has no peers), snapshots every
//! 10 entries, and a gate that holds the background snapshot writer.

use super::*;
use crate::disk::Disk;
use crate::snapshotter::SnapshotGate;
use std::path::Path;
use synod_kv::{KvCommand, KvQuery, KvResponse, PutRequest, RangeRequest, decode_result};
use synod_raft::RaftNode;
use synod_transport::{Transport, TransportConfig};

const SNAPSHOT_EVERY: u64 = 10;

struct TestNode {
    requests: mpsc::Sender<ClientRequest>,
    status: watch::Receiver<NodeStatus>,
    stop: watch::Sender<bool>,
    run: tokio::task::JoinHandle<Result<(), NodeError>>,
    metrics: Arc<Metrics>,
}

async fn start(dir: &Path, gate: SnapshotGate) -> TestNode {
    let (disk, saved) = Disk::open(dir).expect("open the data directory");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let transport_config =
        TransportConfig::new(NodeId(1), "test", b"secret".to_vec(), addr, vec![]);
    let (transport, inbound) = Transport::start_on(transport_config, listener).expect("transport");
    let config = DriverConfig {
        node_id: NodeId(1),
        voters: vec![NodeId(1)],
        settings: ProtocolSettings {
            election_timeout_min: Duration::from_millis(20),
            election_timeout_max: Duration::from_millis(40),
            heartbeat_interval: Duration::from_millis(5),
            snapshot_interval_entries: SNAPSHOT_EVERY,
        },
        kv: KvConfig::default(),
    };
    let metrics = Arc::new(Metrics::default());
    let (driver, status) =
        Driver::<RaftNode>::open(&config, disk, saved, transport, metrics.clone()).expect("open");
    let driver = driver.with_snapshot_gate(gate);
    let (requests, requests_rx) = mpsc::channel(64);
    let (stop, stop_rx) = watch::channel(false);
    let run = tokio::spawn(driver.run(inbound, requests_rx, stop_rx));
    let mut node = TestNode { requests, status, stop, run, metrics };
    node.status.wait_for(|s| s.role == Role::Leader).await.expect("driver running");
    node
}

impl TestNode {
    async fn put(&self, key: &str, value: &str) {
        let op = KvCommand::Put(PutRequest {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(value.to_string()),
            ..PutRequest::default()
        })
        .encode();
        let (reply, answer) = oneshot::channel();
        self.requests.send(ClientRequest::Write { op, reply }).await.expect("driver running");
        let answer = answer.await.expect("answered").expect("applied");
        assert!(matches!(decode_result(&answer), Ok(Ok(KvResponse::Put(_)))), "{answer:?}");
    }

    async fn get(&self, key: &str) -> Option<Bytes> {
        let query = KvQuery::Range(RangeRequest {
            key: Bytes::from(key.to_string()),
            ..RangeRequest::default()
        })
        .encode();
        let (reply, answer) = oneshot::channel();
        let read = ClientRequest::Read { query, linearizable: true, reply };
        self.requests.send(read).await.expect("driver running");
        let answer = answer.await.expect("answered").expect("served");
        match decode_result(&answer) {
            Ok(Ok(KvResponse::Range(r))) => r.kvs.first().map(|kv| kv.value.clone()),
            other => panic!("not a range answer: {other:?}"),
        }
    }

    async fn snapshot_reaches(&mut self, index: u64) -> u64 {
        let s = self.status.wait_for(|s| s.snapshot_index >= index).await.expect("running");
        s.snapshot_index
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.run.await.expect("driver task").expect("driver stopped cleanly");
    }
}

fn count(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(std::sync::atomic::Ordering::Relaxed)
}

fn open_gate() -> SnapshotGate {
    let gate = SnapshotGate::closed();
    gate.open();
    gate
}

fn value(i: u32) -> String {
    format!("value-{i}")
}

/// The hard state's snapshot and purged index, and the snapshot files.
fn on_disk(dir: &Path) -> (u64, u64, Vec<u64>) {
    let (mut disk, saved) = Disk::open(dir).expect("reopen");
    let (_, durable) = RaftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
    (durable.snapshot.index, durable.purged_index, disk.snapshots.indexes().expect("list"))
}

/// Bounds a test that waits on real timers (elections) and threads.
async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(30), test).await.expect("the test finished in time");
}

#[tokio::test]
async fn the_node_keeps_applying_while_a_snapshot_is_written_then_compacts_and_recovers() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let gate = SnapshotGate::closed();
        let mut node = start(dir.path(), gate.clone()).await;
        // Enough writes for the core to ask for a snapshot; its writer is
        // held at the gate.
        for i in 0..12 {
            node.put(&format!("k{i}"), &value(i)).await;
        }
        // The driver goes on ordering, applying and answering meanwhile.
        for i in 12..40 {
            node.put(&format!("k{i}"), &value(i)).await;
        }
        assert_eq!(node.get("k39").await, Some(Bytes::from(value(39))));
        let s = *node.status.borrow();
        assert!(s.applied_index >= 40, "applied while the snapshot is held: {s:?}");
        assert_eq!(s.snapshot_index, 0, "not durable, so not reported");
        assert_eq!(count(&node.metrics.snapshots), 0);
        // Let it through: it becomes durable and the core adopts it.
        gate.open();
        let first = node.snapshot_reaches(1).await;
        assert!((SNAPSHOT_EVERY..40).contains(&first), "taken at its position: {first}");
        // The next snapshots come by themselves, each compacting the log.
        for i in 40..80 {
            node.put(&format!("k{i}"), &value(i)).await;
        }
        let later = node.snapshot_reaches(first + SNAPSHOT_EVERY).await;
        let applied = node.status.borrow().applied_index;
        assert!(count(&node.metrics.snapshots) >= 2);
        assert_eq!(count(&node.metrics.snapshots_skipped), 0);
        node.stop().await;

        let (snapshot, purged, files) = on_disk(dir.path());
        assert!(snapshot >= later, "the adopted snapshot is durable: {snapshot} < {later}");
        assert!(purged >= first, "the log was compacted up to {purged} only");
        assert_eq!(files.first(), Some(&snapshot), "older snapshot files went: {files:?}");

        // A restart loads the snapshot and replays the log tail.
        let node = start(dir.path(), open_gate()).await;
        let s = *node.status.borrow();
        assert!(s.snapshot_index >= snapshot, "started from snapshot {}", s.snapshot_index);
        assert!(s.applied_index >= applied, "recovered to {} of {applied}", s.applied_index);
        for i in [0, 11, 39, 40, 79] {
            assert_eq!(node.get(&format!("k{i}")).await, Some(Bytes::from(value(i))), "k{i}");
        }
        assert_eq!(node.get("k80").await, None);
        node.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_snapshot_in_flight_at_shutdown_is_finished_and_a_restart_is_whole() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let gate = SnapshotGate::closed();
        let node = start(dir.path(), gate.clone()).await;
        for i in 0..15 {
            node.put(&format!("k{i}"), &value(i)).await;
        }
        assert_eq!(node.status.borrow().snapshot_index, 0, "held at the gate");
        gate.open();
        node.stop().await;
        let (snapshot, purged, files) = on_disk(dir.path());
        // Written but never reported: the core's state still starts at 0
        // and nothing of the log is gone.
        assert_eq!((snapshot, purged), (0, 0));
        assert_eq!(files.len(), 1, "the snapshot finished on its own: {files:?}");
        let node = start(dir.path(), open_gate()).await;
        for i in 0..15 {
            assert_eq!(node.get(&format!("k{i}")).await, Some(Bytes::from(value(i))), "k{i}");
        }
        node.stop().await;
    })
    .await;
}
