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
    start_with(dir, gate, AutoCompaction::Off).await
}

async fn start_with(dir: &Path, gate: SnapshotGate, compaction: AutoCompaction) -> TestNode {
    let (disk, saved) = Disk::open(dir).expect("open the data directory");
    start_on(disk, saved, gate, compaction).await
}

async fn start_on(
    disk: Disk,
    saved: Option<Vec<u8>>,
    gate: SnapshotGate,
    compaction: AutoCompaction,
) -> TestNode {
    start_protocol::<RaftNode>(disk, saved, gate, compaction).await
}

/// The driver's configuration of a one-node cluster (node 1).
fn one_node_config() -> DriverConfig {
    DriverConfig {
        node_id: NodeId(1),
        voters: vec![NodeId(1)],
        settings: ProtocolSettings {
            election_timeout_min: Duration::from_millis(20),
            election_timeout_max: Duration::from_millis(40),
            heartbeat_interval: Duration::from_millis(5),
            max_clock_skew: Duration::from_secs(1),
            snapshot_interval_entries: SNAPSHOT_EVERY,
            pbft_keys: None,
            pbft_snapshot_interval: None,
        },
        kv: KvConfig::default(),
        directory: crate::members::Directory::default(),
    }
}

/// Why a one-node Raft driver refuses to open on `dir`.
async fn refusal_to_open(dir: &Path) -> NodeError {
    let (disk, saved) = Disk::open(dir).expect("the data directory opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let transport_config =
        TransportConfig::new(NodeId(1), "test", b"secret".to_vec(), addr, vec![]);
    let (transport, _inbound) = Transport::start_on(transport_config, listener).expect("transport");
    let metrics = Arc::new(Metrics::default());
    match Driver::<RaftNode>::open(&one_node_config(), disk, saved, transport, metrics) {
        Ok(_) => panic!("the driver opened on {}", dir.display()),
        Err(e) => e,
    }
}

/// A one-node cluster of protocol `P` on `disk`.
async fn start_protocol<P: NodeProtocol + Reconfigure>(
    disk: Disk,
    saved: Option<Vec<u8>>,
    gate: SnapshotGate,
    compaction: AutoCompaction,
) -> TestNode
where
    P::Message: Send,
    P::Write: Send,
    P::Config: Send + Sync,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let transport_config =
        TransportConfig::new(NodeId(1), "test", b"secret".to_vec(), addr, vec![]);
    let (transport, inbound) = Transport::start_on(transport_config, listener).expect("transport");
    let config = one_node_config();
    let metrics = Arc::new(Metrics::default());
    let (driver, status) =
        Driver::<P>::open(&config, disk, saved, transport, metrics.clone()).expect("open");
    let driver = driver.with_snapshot_gate(gate).with_auto_compaction(compaction);
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

#[test]
fn only_a_leaders_replication_leaves_before_the_fsync() {
    use synod_paxos::Ballot;
    use synod_paxos::multi::{Message as Px, PaxosNode};
    use synod_raft::Message as Rf;
    let b = Ballot::new(3, NodeId(1));
    let accept =
        |values| Px::Accept { ballot: b, first_slot: 4, values, chosen_slot: 3, read_round: 1 };
    // A Paxos leader's Phase 2a (with values, or empty: a heartbeat) may.
    assert!(<PaxosNode as NodeProtocol>::leaves_before_sync(&accept(vec![
        synod_paxos::multi::Value::Noop
    ])));
    assert!(<PaxosNode as NodeProtocol>::leaves_before_sync(&accept(vec![])));
    // A Phase 2b vote, a promise, a refusal and a candidate's prepare wait.
    let accepted = Px::Accepted {
        ballot: b,
        first_slot: 4,
        last_slot: 4,
        chosen_slot: 3,
        leader_chosen_slot: 3,
        read_round: 1,
    };
    let promise =
        Px::Promise { ballot: b, first_slot: 4, from_slot: 4, accepted: vec![], more: false };
    let prepare = Px::Prepare { ballot: b, first_slot: 4, from_slot: 4 };
    let nack = Px::Nack { ballot: b, promised: Ballot::new(4, NodeId(2)) };
    for m in [accepted, promise, prepare, nack] {
        assert!(!<PaxosNode as NodeProtocol>::leaves_before_sync(&m), "{m:?}");
    }
    // Raft: AppendEntries leaves early, its answer and votes do not.
    let append = Rf::AppendEntries {
        term: 2,
        prev_log_index: 0,
        prev_log_term: 0,
        entries: vec![],
        leader_commit: 0,
        read_round: 0,
    };
    assert!(<RaftNode as NodeProtocol>::leaves_before_sync(&append));
    let vote = Rf::RequestVoteResponse { term: 2, granted: true };
    assert!(!<RaftNode as NodeProtocol>::leaves_before_sync(&vote));
}

#[tokio::test]
async fn a_leader_with_revision_auto_compaction_compacts_through_the_log() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        // Keep 5 revisions, looking every millisecond (the config's is 5 min).
        let keep = 5;
        let check_interval = Duration::from_millis(1);
        let policy = AutoCompaction::Revision { retention: keep, check_interval };
        let node = start_with(dir.path(), open_gate(), policy).await;
        for i in 0..20 {
            node.put(&format!("k{i}"), &value(i)).await;
        }
        let at = |revision: i64| {
            let query = KvQuery::Range(RangeRequest {
                key: Bytes::from_static(b"k0"),
                revision,
                ..RangeRequest::default()
            })
            .encode();
            let requests = node.requests.clone();
            async move {
                let (reply, answer) = oneshot::channel();
                let read = ClientRequest::Read { query, linearizable: true, reply };
                requests.send(read).await.expect("driver running");
                let answer = answer.await.expect("answered").expect("served");
                decode_result(&answer).expect("decodes")
            }
        };
        // The leader proposes the compaction by itself, soon.
        let mut compacted = false;
        for _ in 0..2000 {
            if at(2).await == Err(synod_kv::KvError::Compacted) {
                compacted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(compacted, "revision 2 was compacted");
        // 21 = 1 + 20 puts: the last `keep` revisions are still readable,
        // and no client write was lost to the compactions.
        assert!(matches!(at(21 - keep + 1).await, Ok(KvResponse::Range(_))));
        assert_eq!(node.get("k19").await, Some(Bytes::from(value(19))));
        assert_eq!(node.status.borrow().revision, 21, "compactions write no revision");
        node.stop().await;
    })
    .await;
}

/// The snapshot store's file layer with injected faults: creating a
/// snapshot file fails while `fail_creates` is set, and deleting one waits
/// until `removals` opens. Each counter is a watch the test awaits.
#[derive(Debug)]
struct SnapshotFs {
    fail_creates: std::sync::atomic::AtomicBool,
    creates_failed: watch::Sender<u64>,
    removals: SnapshotGate,
    removals_started: watch::Sender<u64>,
}

impl SnapshotFs {
    fn new() -> Arc<SnapshotFs> {
        SnapshotFs::with_removals(open_gate())
    }

    fn with_removals(removals: SnapshotGate) -> Arc<SnapshotFs> {
        Arc::new(SnapshotFs {
            fail_creates: false.into(),
            creates_failed: watch::Sender::new(0),
            removals,
            removals_started: watch::Sender::new(0),
        })
    }

    /// A Raft node whose snapshot store is on this file layer.
    async fn start(self: &Arc<Self>, dir: &Path) -> TestNode {
        self.start_protocol::<RaftNode>(dir).await
    }

    /// A node of protocol `P` whose snapshot store is on this file layer.
    async fn start_protocol<P: NodeProtocol + Reconfigure>(self: &Arc<Self>, dir: &Path) -> TestNode
    where
        P::Message: Send,
        P::Write: Send,
        P::Config: Send + Sync,
    {
        let (mut disk, saved) = Disk::open(dir).expect("open the data directory");
        disk.snapshots = synod_storage::SnapshotStore::open_with(self.clone(), dir.join("snap"))
            .expect("snapshot store");
        start_protocol::<P>(disk, saved, open_gate(), AutoCompaction::Off).await
    }
}

impl synod_storage::Vfs for SnapshotFs {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        synod_storage::StdFs.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        synod_storage::StdFs.list_dir(dir)
    }
    fn open_file(&self, path: &Path) -> std::io::Result<Arc<dyn synod_storage::VfsFile>> {
        synod_storage::StdFs.open_file(path)
    }
    fn create_file(&self, path: &Path) -> std::io::Result<Arc<dyn synod_storage::VfsFile>> {
        if self.fail_creates.load(std::sync::atomic::Ordering::SeqCst) {
            self.creates_failed.send_modify(|n| *n += 1);
            return Err(std::io::Error::other("injected: cannot create"));
        }
        synod_storage::StdFs.create_file(path)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        if path.extension().is_some_and(|e| e == "snap") {
            self.removals_started.send_modify(|n| *n += 1);
            self.removals.wait();
        }
        synod_storage::StdFs.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        synod_storage::StdFs.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        synod_storage::StdFs.sync_dir(dir)
    }
}

#[tokio::test]
async fn a_failed_snapshot_is_asked_for_again_and_then_taken() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = SnapshotFs::new();
        fs.fail_creates.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut node = fs.start(dir.path()).await;
        for i in 0..12 {
            node.put(&format!("k{i}"), &value(i)).await;
        }
        // The first attempt fails; the core hears of it and asks again
        // after its backoff (without that it would wait forever: this
        // awaits a second attempt).
        let mut failures = fs.creates_failed.subscribe();
        failures.wait_for(|n| *n >= 2).await.expect("watching");
        assert_eq!(node.status.borrow().snapshot_index, 0, "none durable yet");
        assert_eq!(node.get("k11").await, Some(Bytes::from(value(11))), "still serving");
        fs.fail_creates.store(false, std::sync::atomic::Ordering::SeqCst);
        let taken = node.snapshot_reaches(1).await;
        assert!(taken >= SNAPSHOT_EVERY, "{taken}");
        node.stop().await;
        let (snapshot, purged, files) = on_disk(dir.path());
        assert_eq!(snapshot, taken, "adopted once durable");
        assert!(purged > 0 && files.first() == Some(&taken), "compacted: {purged} {files:?}");
    })
    .await;
}

#[tokio::test]
async fn a_leader_deletes_purged_log_segments_while_it_runs() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        // Segments of a few entries, so every snapshot purges some.
        let small = synod_storage::WalOptions { segment_size_bytes: 1024, ..Default::default() };
        let (disk, saved) = Disk::open_with(dir.path(), small).expect("open");
        let node = start_on(disk, saved, open_gate(), AutoCompaction::Off).await;
        let segments = || {
            let names = std::fs::read_dir(dir.path().join("wal")).expect("list");
            names
                .filter(|e| {
                    e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "wal"))
                })
                .count()
        };
        // The leader syncs its log off the driver thread; the segments its
        // snapshots purge are deleted while it runs, not only at shutdown.
        let mut most = 0;
        let mut i = 0;
        while i < 300 {
            node.put(&format!("k{i}"), &value(i)).await;
            most = most.max(segments());
            i += 1;
        }
        assert!(most > 0);
        let mut left = segments();
        while left > 8 && i < 2000 {
            node.put(&format!("k{i}"), &value(i)).await;
            left = segments();
            i += 1;
        }
        assert!(left <= 8, "{left} segments after {i} puts (at most {most} before)");
        node.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_failed_paxos_snapshot_is_asked_for_again_and_then_taken() {
    use synod_paxos::multi::PaxosNode;
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = SnapshotFs::new();
        fs.fail_creates.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut node = fs.start_protocol::<PaxosNode>(dir.path()).await;
        for i in 0..12 {
            node.put(&format!("k{i}"), &value(i)).await;
        }
        // As for Raft: the core hears of the failure and asks again after
        // its back-off (without `snapshot_failed` it waits forever).
        let mut failures = fs.creates_failed.subscribe();
        failures.wait_for(|n| *n >= 2).await.expect("watching");
        assert_eq!(node.status.borrow().snapshot_index, 0, "none durable yet");
        assert_eq!(node.get("k11").await, Some(Bytes::from(value(11))), "still serving");
        fs.fail_creates.store(false, std::sync::atomic::Ordering::SeqCst);
        let taken = node.snapshot_reaches(1).await;
        assert!(taken >= SNAPSHOT_EVERY, "{taken}");
        node.stop().await;
        let (mut disk, saved) = Disk::open(dir.path()).expect("reopen");
        let (_, durable) =
            PaxosNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        assert_eq!(durable.snapshot.meta.index, taken, "adopted once durable");
        assert_eq!(disk.snapshots.indexes().expect("list").first(), Some(&taken));
        // A restart starts from it and serves every write.
        let node = start_protocol::<PaxosNode>(disk, saved, open_gate(), AutoCompaction::Off).await;
        assert!(node.status.borrow().snapshot_index >= taken);
        for i in [0, 11] {
            assert_eq!(node.get(&format!("k{i}")).await, Some(Bytes::from(value(i))), "k{i}");
        }
        node.stop().await;
    })
    .await;
}

#[tokio::test]
async fn deleting_an_older_snapshot_does_not_hold_up_the_driver() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = SnapshotGate::closed();
        let fs = SnapshotFs::with_removals(held.clone());
        let mut node = fs.start(dir.path()).await;
        let removals = fs.removals_started.subscribe();
        // Two snapshots: adopting the second deletes the first, which is
        // held inside its unlink.
        let mut i = 0;
        while *removals.borrow() == 0 {
            node.put(&format!("k{i}"), &value(i)).await;
            i += 1;
            assert!(i < 1000, "no deletion started");
        }
        let first = node.status.borrow().snapshot_index;
        // The driver goes on: it orders, applies, answers, and takes and
        // adopts more snapshots while the deletion is stuck.
        for j in i..i + 3 * SNAPSHOT_EVERY as u32 {
            node.put(&format!("k{j}"), &value(j)).await;
        }
        assert_eq!(node.get(&format!("k{i}")).await, Some(Bytes::from(value(i))));
        let later = node.snapshot_reaches(first + 2 * SNAPSHOT_EVERY).await;
        assert_eq!(*removals.borrow(), 1, "one deletion at a time");
        assert!(on_disk_files(dir.path()).len() >= 2, "the held one is still there");
        held.open();
        node.stop().await;
        let (snapshot, _, files) = on_disk(dir.path());
        assert!(snapshot >= later);
        // (A newer one may have been finished at shutdown, never reported.)
        assert_eq!(files.first(), Some(&snapshot), "every older one went by the end: {files:?}");
    })
    .await;
}

/// The names of the snapshot files in the data directory (read without
/// opening a store, which would delete a running writer's temporary file).
fn on_disk_files(dir: &Path) -> Vec<String> {
    let names = std::fs::read_dir(dir.join("snap")).expect("list");
    let names = names.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned());
    names.filter(|n| n.ends_with(".snap")).collect()
}

/// A one-node Raft cluster whose log is on `fs` (the rest on `dir`).
async fn start_on_fault_fs(dir: &Path, fs: &synod_storage::FaultFs) -> TestNode {
    let (mut disk, saved) = Disk::open(dir).expect("open the data directory");
    let options = synod_storage::WalOptions::default();
    disk.wal = synod_storage::Wal::open_with(Arc::new(fs.clone()), dir.join("wal"), options)
        .expect("the log on the fault-injecting layer")
        .0;
    start_protocol::<RaftNode>(disk, saved, open_gate(), AutoCompaction::Off).await
}

#[tokio::test]
async fn a_failed_fsync_off_the_drivers_thread_stops_the_node() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = synod_storage::FaultFs::new();
        let node = start_on_fault_fs(dir.path(), &fs).await;
        node.put("a", "1").await;
        // The next sync is the leader's own, off the driver's thread (a
        // one-node leader leads all round once elected).
        fs.fail_next_syncs(1);
        let op = KvCommand::Put(PutRequest {
            key: Bytes::from_static(b"b"),
            value: Bytes::from_static(b"2"),
            ..PutRequest::default()
        })
        .encode();
        let (reply, answer) = oneshot::channel();
        node.requests.send(ClientRequest::Write { op, reply }).await.expect("driver running");
        let answer = answer.await;
        assert!(!matches!(answer, Ok(Ok(_))), "a put whose fsync failed was answered: {answer:?}");
        let stopped = node.run.await.expect("driver task");
        let err = stopped.expect_err("a failed fsync is fatal, never retried");
        assert!(err.to_string().contains("fsync"), "{err}");
    })
    .await;
}

/// A file layer over [`synod_storage::FaultFs`] whose file syncs wait while
/// held (so a test can keep the leader's background log sync from
/// finishing).
#[derive(Debug, Default)]
struct HeldSyncs {
    fs: synod_storage::FaultFs,
    held: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl HeldSyncs {
    fn hold(&self, held: bool) {
        let (lock, cv) = &*self.held;
        *lock.lock().expect("lock") = held;
        cv.notify_all();
    }
}

#[derive(Debug)]
struct HeldFile {
    file: Arc<dyn synod_storage::VfsFile>,
    held: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl synod_storage::VfsFile for HeldFile {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.file.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        let (lock, cv) = &*self.held;
        let mut held = lock.lock().expect("lock");
        while *held {
            held = cv.wait(held).expect("lock");
        }
        drop(held);
        self.file.sync_data()
    }
}

impl synod_storage::Vfs for HeldSyncs {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.fs.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.fs.list_dir(dir)
    }
    fn open_file(&self, path: &Path) -> std::io::Result<Arc<dyn synod_storage::VfsFile>> {
        let file = self.fs.open_file(path)?;
        Ok(Arc::new(HeldFile { file, held: self.held.clone() }))
    }
    fn create_file(&self, path: &Path) -> std::io::Result<Arc<dyn synod_storage::VfsFile>> {
        let file = self.fs.create_file(path)?;
        Ok(Arc::new(HeldFile { file, held: self.held.clone() }))
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.fs.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.fs.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.fs.sync_dir(dir)
    }
}

#[tokio::test]
async fn a_leader_answers_a_put_only_once_its_own_log_holds_it_durably() {
    bounded(async {
        // One node: its own copy is the whole quorum, so a put commits only
        // when the sync off the driver's thread reports it durable.
        let dir = tempfile::tempdir().expect("tempdir");
        let layer = Arc::new(HeldSyncs::default());
        let (mut disk, saved) = Disk::open(dir.path()).expect("open the data directory");
        let options = synod_storage::WalOptions::default();
        disk.wal = synod_storage::Wal::open_with(layer.clone(), dir.path().join("wal"), options)
            .expect("the log on the held layer")
            .0;
        let node = start_protocol::<RaftNode>(disk, saved, open_gate(), AutoCompaction::Off).await;
        node.put("a", "1").await;
        layer.hold(true);
        let op = KvCommand::Put(PutRequest {
            key: Bytes::from_static(b"b"),
            value: Bytes::from_static(b"2"),
            ..PutRequest::default()
        })
        .encode();
        let (reply, mut answer) = oneshot::channel();
        node.requests.send(ClientRequest::Write { op, reply }).await.expect("driver running");
        // The driver keeps serving while its sync is held, but cannot
        // answer the put: not durable yet.
        assert_eq!(node.get("a").await, Some(Bytes::from_static(b"1")), "still serving");
        let early = tokio::time::timeout(Duration::from_millis(300), &mut answer).await;
        assert!(early.is_err(), "answered before its log was durable: {early:?}");
        layer.hold(false);
        let answer = answer.await.expect("answered").expect("applied");
        assert!(matches!(decode_result(&answer), Ok(Ok(KvResponse::Put(_)))), "{answer:?}");
        assert_eq!(node.get("b").await, Some(Bytes::from_static(b"2")));
        node.stop().await;
    })
    .await;
}

/// The last index of the log in `dir`.
fn last_log_index(dir: &Path) -> u64 {
    let (disk, _) = Disk::open(dir).expect("open");
    disk.wal.last_index()
}

/// Puts `k0..k4` on a node in `dir` (each acknowledged), stops it, and
/// starts and stops it once more: its election saves the hard state, which
/// then vouches for every entry. Returns the index of the last acknowledged
/// put (the restart's term adds an entry after it).
async fn put_five_and_restart(dir: &std::path::Path) -> u64 {
    let node = start(dir, open_gate()).await;
    for i in 0..5 {
        node.put(&format!("k{i}"), &value(i)).await;
    }
    node.stop().await;
    let acknowledged = last_log_index(dir);
    start(dir, open_gate()).await.stop().await;
    assert!(last_log_index(dir) > acknowledged, "the new term's entry");
    acknowledged
}

/// A node wrote puts, acknowledged them, and restarted (its election saved
/// the hard state, vouching for every entry recovered); then the end of
/// its log was lost. It must not start: it acknowledged entries it no
/// longer has. Before, recovery cut the damaged tail, logged a warning and
/// went on.
#[tokio::test]
async fn a_node_that_lost_acknowledged_entries_refuses_to_start() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let acknowledged = put_five_and_restart(dir.path()).await;
        let cut = crate::disk::test_support::tear_log_from(dir.path(), acknowledged);
        let err = refusal_to_open(dir.path()).await;
        let lost = format!("index {acknowledged} is lost");
        crate::disk::test_support::assert_lost_log(&err, dir.path(), &cut, &[&lost]);
        // And on every later start (the cut is made, the hard state stays).
        let err = refusal_to_open(dir.path()).await;
        assert!(err.to_string().contains(&format!("index {acknowledged} is lost")), "{err}");
    })
    .await;
}

/// A torn entry the node never vouched for (written after its last hard
/// state save) is cut off as before, and the node starts with the rest.
#[tokio::test]
async fn a_node_with_a_torn_unvouched_tail_starts_without_it() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let acknowledged = put_five_and_restart(dir.path()).await;
        crate::disk::test_support::tear_log_from(dir.path(), acknowledged + 1);
        let node = start(dir.path(), open_gate()).await;
        assert_eq!(node.get("k4").await, Some(Bytes::from(value(4))));
        node.stop().await;
    })
    .await;
}
