//! [`Snapshotter`]: takes state-machine snapshots off the driver thread.
//!
//! When the core asks for a snapshot at position `index`
//! ([`SnapshotAction::Take`](synod_core::protocol::SnapshotAction::Take)),
//! the driver hands [`Snapshotter::take`] a *point-in-time copy* of its
//! [`Machine`] as of `index` (a clone: the key space's maps and version
//! lists are copied, values are shared [`Bytes`], nothing is encoded or
//! written). A background thread then encodes it straight into the
//! [`SnapshotStore`]'s temporary file in chunks of
//! [`synod_kv::SNAPSHOT_CHUNK_BYTES`] (the encoded snapshot is never whole
//! in memory), fsyncs it, renames it into place and fsyncs the directory,
//! while the driver goes on applying, persisting and answering. Only when
//! the snapshot is durable does the driver learn of it
//! ([`Snapshotter::finished`] / [`Snapshotter::try_finished`]) and tell the
//! core (`snapshot_taken`), which then compacts the log. When it fails the
//! driver learns that too ([`TakeFailed`]) and tells the core, which asks
//! again later.
//!
//! At most one snapshot is written at a time. A take that arrives while one
//! is in flight is kept (only the newest such copy: the core waits for no
//! other) and started when the one in flight is done; it is counted in
//! [`Snapshotter::deferred`].
//!
//! Older snapshots are deleted only when the driver says the core has
//! durably adopted a newer one ([`Snapshotter::remove_older_than`]), and
//! then on a thread of their own too: unlinking a file of tens of
//! megabytes and fsyncing the directory is disk work the driver's
//! heartbeats must not wait for. Deleting later than allowed is always
//! safe; a fatal error there (a failed directory fsync) stops the node
//! ([`Snapshotter::poll_removal`]).
//!
//! A crash at any point leaves the previous snapshot whole (the store's
//! temporary-file, fsync, rename, fsync-directory protocol).
//!
//! The other two ways snapshot bytes move are streamed here too, so no path
//! holds a whole snapshot in memory: [`Incoming`] writes the chunks a peer
//! sends straight into the store's temporary file (made durable only when
//! the core installs it: a partial snapshot is never renamed into place),
//! and [`ChunkReader`] reads the chunks sent to peers from the durable file,
//! one open reader per peer. [`read_machine`] rebuilds the state machine
//! from a snapshot file as it reads it.

use crate::error::NodeError;
use crate::machine::Machine;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write as _};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use synod_core::NodeId;
use synod_kv::KvConfig;
use synod_storage::{SnapshotReader, SnapshotStore, SnapshotWriter};
use tokio::sync::oneshot;

/// A snapshot made durable in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakenSnapshot {
    /// Its position.
    pub index: u64,
    /// Its size in bytes (the machine's encoding, without the file header).
    pub size_bytes: u64,
    /// The SHA-256 of those bytes — exactly what [`ChunkReader`] serves
    /// from the file, in order — when the snapshotter hashes
    /// ([`Snapshotter::hash_snapshots`]).
    pub sha256: Option<[u8; 32]>,
}

/// A snapshot that could not be made durable.
#[derive(Debug)]
pub struct TakeFailed {
    /// The position it was for.
    pub index: u64,
    /// Why.
    pub error: NodeError,
}

impl TakeFailed {
    /// Whether the node must stop: the storage is poisoned (a failed fsync:
    /// nothing it believes about the disk can be trusted) or the writer
    /// panicked (a bug). Anything else (a full disk, a file that could not
    /// be created) left the older snapshots as they were, and the core may
    /// ask again.
    pub fn is_fatal(&self) -> bool {
        match &self.error {
            NodeError::Storage(e) => e.is_fatal(),
            NodeError::Startup(_) => true,
            _ => false,
        }
    }
}

/// What a snapshot writer ends with.
pub type Outcome = Result<TakenSnapshot, TakeFailed>;

struct InFlight {
    index: u64,
    done: oneshot::Receiver<Outcome>,
    thread: JoinHandle<()>,
}

/// Older snapshots being deleted in the background.
struct Removal {
    below: u64,
    thread: JoinHandle<Result<usize, synod_storage::Error>>,
}

/// A gate the background writer waits at before writing (tests hold it
/// closed to observe the node while a snapshot is in flight).
#[derive(Clone, Debug, Default)]
pub struct SnapshotGate {
    open: Arc<(Mutex<bool>, Condvar)>,
}

impl SnapshotGate {
    /// A closed gate.
    pub fn closed() -> SnapshotGate {
        SnapshotGate::default()
    }

    /// Lets every writer through, now and later.
    pub fn open(&self) {
        let (lock, cv) = &*self.open;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }

    /// Blocks until the gate is open.
    pub(crate) fn wait(&self) {
        let (lock, cv) = &*self.open;
        let mut open = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = cv.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// What [`Snapshotter::take`] did with a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeStart {
    /// Its writer started.
    Started,
    /// One is in flight: it waits for it (replacing an older waiting copy).
    Deferred,
}

/// The background snapshot writer of one node.
pub struct Snapshotter {
    store: SnapshotStore,
    in_flight: Option<InFlight>,
    waiting: Option<Machine>,
    gate: Option<SnapshotGate>,
    deferred: u64,
    removal: Option<Removal>,
    /// A removal asked for while one runs (the highest bound).
    removal_waiting: Option<u64>,
    /// Whether each snapshot's SHA-256 is computed as it is written.
    hash: bool,
}

impl std::fmt::Debug for Snapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshotter")
            .field("in_flight", &self.in_flight.as_ref().map(|j| j.index))
            .field("waiting", &self.waiting.as_ref().map(Machine::applied_index))
            .field("deferred", &self.deferred)
            .finish()
    }
}

impl Snapshotter {
    /// A snapshotter writing to `store`.
    pub fn new(store: SnapshotStore) -> Snapshotter {
        Snapshotter {
            store,
            in_flight: None,
            waiting: None,
            gate: None,
            deferred: 0,
            removal: None,
            removal_waiting: None,
            hash: false,
        }
    }

    /// Computes each snapshot's SHA-256 while writing it (a protocol that
    /// signs snapshot digests, `Protocol::SNAPSHOT_DIGESTS`: PBFT), in
    /// [`TakenSnapshot::sha256`].
    pub fn hash_snapshots(&mut self) {
        self.hash = true;
    }

    /// Makes every writer wait at `gate` before writing.
    pub fn set_gate(&mut self, gate: SnapshotGate) {
        self.gate = Some(gate);
    }

    /// Whether a snapshot is being written.
    pub fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The position of the snapshot being written, if any.
    pub fn in_flight_index(&self) -> Option<u64> {
        self.in_flight.as_ref().map(|j| j.index)
    }

    /// Takes that arrived while another was in flight.
    pub fn deferred(&self) -> u64 {
        self.deferred
    }

    /// Writes `view` (the state as of its applied index) in the background,
    /// or keeps it until the snapshot in flight is done. Fails (fatally)
    /// only when no thread can be started for it.
    pub fn take(&mut self, view: Machine) -> Result<TakeStart, NodeError> {
        if self.in_flight.is_some() {
            self.deferred += 1;
            self.waiting = Some(view);
            return Ok(TakeStart::Deferred);
        }
        self.start(view)?;
        Ok(TakeStart::Started)
    }

    fn start(&mut self, view: Machine) -> Result<(), NodeError> {
        let index = view.applied_index();
        let store = self.store.clone();
        let gate = self.gate.clone();
        let hash = self.hash;
        let (tx, done) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("synod-snapshot-{index}"))
            .spawn(move || {
                if let Some(gate) = gate {
                    gate.wait();
                }
                let _ = tx.send(write(&store, index, &view, hash));
            })
            .map_err(|e| NodeError::Startup(format!("cannot start a snapshot thread: {e}")))?;
        self.in_flight = Some(InFlight { index, done, thread });
        Ok(())
    }

    /// Waits for the snapshot in flight to be durable (forever when none
    /// is), then starts the waiting one, if any. Cancel-safe.
    pub async fn finished(&mut self) -> Outcome {
        let Some(job) = self.in_flight.as_mut() else {
            return std::future::pending().await;
        };
        let outcome = (&mut job.done).await;
        self.complete(outcome.ok())
    }

    /// The outcome of the snapshot in flight, if it is done.
    pub fn try_finished(&mut self) -> Option<Outcome> {
        let job = self.in_flight.as_mut()?;
        match job.done.try_recv() {
            Ok(outcome) => Some(self.complete(Some(outcome))),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(self.complete(None)),
        }
    }

    /// Forgets the copy waiting for the one in flight (a newer snapshot was
    /// installed).
    pub fn discard_waiting(&mut self) {
        self.waiting = None;
    }

    /// Blocks until the snapshot in flight (if any) is done and returns its
    /// outcome; the waiting copy is dropped (used before installing a
    /// snapshot from the leader, and at shutdown).
    pub fn wait_idle(&mut self) -> Option<Outcome> {
        self.waiting = None;
        let mut job = self.in_flight.take()?;
        let joined = job.thread.join();
        let outcome = match (joined, job.done.try_recv()) {
            (_, Ok(outcome)) => outcome,
            _ => Err(panicked(job.index)),
        };
        Some(outcome)
    }

    fn complete(&mut self, outcome: Option<Outcome>) -> Outcome {
        let job = self.in_flight.take().expect("called with a job in flight");
        // It sent its outcome (or died): it is about to exit.
        let panicked = job.thread.join().is_err();
        let outcome = match outcome {
            Some(o) if !panicked => o,
            _ => Err(self::panicked(job.index)),
        };
        // A failed one does not hold back the next (unless the node stops).
        if outcome.as_ref().map_or_else(|f| !f.is_fatal(), |_| true)
            && let Some(view) = self.waiting.take()
            && view.applied_index() > job.index
        {
            let index = view.applied_index();
            // Out of threads: fatal (a `Startup` error), as in `take`.
            self.start(view).map_err(|error| TakeFailed { index, error })?;
        }
        outcome
    }

    /// Deletes, in the background, every snapshot below `index` (the
    /// driver calls it once the core's adoption of snapshot `index` is
    /// durable). One deletion runs at a time; a bound asked for meanwhile
    /// is kept (the highest) and deleted next.
    pub fn remove_older_than(&mut self, index: u64) -> Result<(), NodeError> {
        self.poll_removal()?;
        if self.removal.is_some() {
            self.removal_waiting = self.removal_waiting.max(Some(index));
            return Ok(());
        }
        let store = self.store.clone();
        let thread = std::thread::Builder::new()
            .name(format!("synod-snapshot-rm-{index}"))
            .spawn(move || store.remove_older_than(index))
            .map_err(|e| NodeError::Startup(format!("cannot start a snapshot thread: {e}")))?;
        self.removal = Some(Removal { below: index, thread });
        Ok(())
    }

    /// Collects a finished deletion (starting the waiting one, if any).
    /// An error is fatal: deleting failed only if the directory fsync did
    /// (the store is poisoned) or a file could not be unlinked.
    pub fn poll_removal(&mut self) -> Result<(), NodeError> {
        if !self.removal.as_ref().is_some_and(|r| r.thread.is_finished()) {
            return Ok(());
        }
        self.join_removal()?;
        if let Some(index) = self.removal_waiting.take() {
            self.remove_older_than(index)?;
        }
        Ok(())
    }

    /// Waits for the deletion in flight and the waiting one, if any.
    pub fn wait_removals(&mut self) -> Result<(), NodeError> {
        while self.removal.is_some() {
            self.join_removal()?;
            if let Some(index) = self.removal_waiting.take() {
                self.remove_older_than(index)?;
            }
        }
        Ok(())
    }

    fn join_removal(&mut self) -> Result<(), NodeError> {
        let Some(job) = self.removal.take() else { return Ok(()) };
        match job.thread.join() {
            Ok(Ok(removed)) => {
                tracing::debug!(below = job.below, removed, "deleted older snapshots");
                Ok(())
            }
            Ok(Err(e)) => Err(NodeError::Storage(e)),
            Err(_) => Err(NodeError::Startup(format!(
                "the deletion of snapshots below {} panicked",
                job.below
            ))),
        }
    }
}

/// Rebuilds the state machine from the snapshot `reader` is open on,
/// decoding as it reads (the file's checksum is checked when its last byte
/// is read, before this returns).
pub fn read_machine(mut reader: SnapshotReader, config: KvConfig) -> Result<Machine, NodeError> {
    let len = reader.data_len();
    let path = reader.path().to_path_buf();
    Machine::read_snapshot(config, &mut reader, len)
        .map_err(|e| NodeError::Corrupt(format!("{}: {e}", path.display())))
}

/// A snapshot being received from a peer: each chunk goes to the store's
/// temporary file as it arrives. Dropped unfinished, the file is deleted.
#[derive(Debug)]
pub struct Incoming {
    index: u64,
    epoch: u64,
    len: u64,
    writer: SnapshotWriter,
}

impl Incoming {
    /// Starts receiving snapshot (`index`, `epoch`) into `store`.
    pub fn begin(store: &SnapshotStore, index: u64, epoch: u64) -> Result<Incoming, NodeError> {
        Ok(Incoming { index, epoch, len: 0, writer: store.begin(index, &[])? })
    }

    /// Whether `data` at `offset` is the next chunk of snapshot (`index`,
    /// `epoch`) and keeps it within `max_bytes`.
    pub fn accepts(&self, index: u64, epoch: u64, offset: u64, len: usize, max_bytes: u64) -> bool {
        (self.index, self.epoch, self.len) == (index, epoch, offset)
            && offset.saturating_add(len as u64) <= max_bytes
    }

    /// Appends the next chunk (see [`Incoming::accepts`]).
    pub fn append(&mut self, data: &[u8]) -> Result<(), NodeError> {
        self.writer.write_all(data).map_err(|e| {
            NodeError::Storage(synod_storage::Error::InvalidArgument(format!(
                "writing received snapshot {}: {e}",
                self.index
            )))
        })?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// The snapshot's (`index`, `epoch`).
    pub fn id(&self) -> (u64, u64) {
        (self.index, self.epoch)
    }

    /// Makes it durable under its index (keeping older snapshots).
    pub fn finish(self) -> Result<(), NodeError> {
        Ok(self.writer.finish_keeping_older()?)
    }
}

/// Chunks of durable snapshots read for peers, from the file: one open
/// reader per peer, positioned where its last chunk ended, so a transfer
/// reads the file once in order (a chunk asked for again, or out of order,
/// reopens the file and skips to it).
#[derive(Debug)]
pub struct ChunkReader {
    store: SnapshotStore,
    cursors: HashMap<NodeId, Cursor>,
}

#[derive(Debug)]
struct Cursor {
    reader: SnapshotReader,
    position: u64,
}

impl ChunkReader {
    /// Reads from `store`.
    pub fn new(store: SnapshotStore) -> ChunkReader {
        ChunkReader { store, cursors: HashMap::new() }
    }

    /// At most `max_bytes` of snapshot `index` from byte `offset` for peer
    /// `to` (fewer only at its end); `None` when the store does not hold it.
    pub fn read(
        &mut self,
        to: NodeId,
        index: u64,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Option<Bytes>, NodeError> {
        let reusable = self
            .cursors
            .get(&to)
            .is_some_and(|c| c.reader.index() == index && c.position <= offset);
        if !reusable {
            self.cursors.remove(&to);
            let Some(reader) = self.store.open_at(index)? else { return Ok(None) };
            self.cursors.insert(to, Cursor { reader, position: 0 });
        }
        let cursor = self.cursors.get_mut(&to).expect("opened above");
        let len = cursor.reader.data_len();
        let corrupt = |c: &Cursor, e: std::io::Error| {
            NodeError::Corrupt(format!("snapshot {}: {e}", c.reader.path().display()))
        };
        let target = offset.min(len);
        let mut skip = [0u8; 8192];
        while cursor.position < target {
            let n = (target - cursor.position).min(skip.len() as u64) as usize;
            cursor.reader.read_exact(&mut skip[..n]).map_err(|e| corrupt(cursor, e))?;
            cursor.position += n as u64;
        }
        let want = (max_bytes as u64).min(len - target) as usize;
        let mut data = vec![0u8; want];
        cursor.reader.read_exact(&mut data).map_err(|e| corrupt(cursor, e))?;
        cursor.position += want as u64;
        if cursor.position == len {
            // The whole file was read (and its checksum checked).
            self.cursors.remove(&to);
        }
        Ok(Some(Bytes::from(data)))
    }

    /// Closes the readers of every snapshot but `index` (older files may
    /// be deleted: an open reader would keep their space in use).
    pub fn keep_only(&mut self, index: u64) {
        self.cursors.retain(|_, c| c.reader.index() == index);
    }

    /// Peers with a reader open.
    pub fn open_readers(&self) -> usize {
        self.cursors.len()
    }
}

fn panicked(index: u64) -> TakeFailed {
    TakeFailed {
        index,
        error: NodeError::Startup(format!("the snapshot writer for {index} panicked")),
    }
}

/// An [`io::Write`](std::io::Write) that hashes what it passes on: the
/// SHA-256 of exactly the bytes the inner writer accepted, in order (no
/// hasher: it only passes them on).
struct HashingWriter<W> {
    inner: W,
    hasher: Option<Sha256>,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Encodes `view` straight into the durable snapshot `index` (keeping older
/// ones): chunks of the encoding go to the store's temporary file as they
/// are produced (hashed on the way when `hash`), then it is fsynced and
/// renamed into place. The store's file header and metadata (empty) are
/// not part of the data: the hash covers exactly what a reader of the
/// snapshot gets ([`SnapshotReader`]'s `Read`, which [`ChunkReader`] serves).
fn write(store: &SnapshotStore, index: u64, view: &Machine, hash: bool) -> Outcome {
    let failed = |error| TakeFailed { index, error };
    let writer = store.begin(index, &[]).map_err(|e| failed(e.into()))?;
    let mut writer = HashingWriter { inner: writer, hasher: hash.then(Sha256::new) };
    let size_bytes = view.write_snapshot(&mut writer).map_err(|e| {
        // A failed piece fsync poisoned the store: that is fatal.
        let error = store.check_poisoned().err().unwrap_or_else(|| {
            synod_storage::Error::InvalidArgument(format!("writing snapshot {index}: {e}"))
        });
        failed(NodeError::Storage(error))
    })?;
    let HashingWriter { inner: writer, hasher } = writer;
    writer.finish_keeping_older().map_err(|e| failed(e.into()))?;
    let sha256 = hasher.map(|h| h.finalize().into());
    Ok(TakenSnapshot { index, size_bytes, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::{ClientId, Command, Committed};
    use synod_kv::{KvCommand, KvConfig, PutRequest};

    fn machine_at(n: u64) -> Machine {
        let mut m = Machine::new(KvConfig::default());
        for index in 1..=n {
            let op = KvCommand::Put(PutRequest {
                key: Bytes::from(format!("k{index}")),
                value: Bytes::from_static(b"v"),
                ..PutRequest::default()
            })
            .encode();
            m.apply(&Committed {
                index,
                command: Some(Command::new(ClientId(1), index, op)),
                time: None,
            });
        }
        m
    }

    #[test]
    fn one_write_at_a_time_and_the_newest_deferred_take_follows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("store");
        let gate = SnapshotGate::closed();
        let mut s = Snapshotter::new(store.clone());
        s.set_gate(gate.clone());
        assert_eq!(s.take(machine_at(3)).expect("take"), TakeStart::Started);
        assert_eq!(s.take(machine_at(4)).expect("take"), TakeStart::Deferred);
        assert_eq!(s.take(machine_at(5)).expect("take"), TakeStart::Deferred);
        assert_eq!((s.in_flight_index(), s.deferred()), (Some(3), 2));
        assert!(s.try_finished().is_none(), "held at the gate");
        assert!(store.indexes().expect("list").is_empty(), "nothing written yet");
        gate.open();
        let first = s.wait_for_test();
        assert_eq!(first.index, 3);
        assert_eq!(s.in_flight_index(), Some(5), "the newest waiting copy started");
        let second = s.wait_for_test();
        assert_eq!(second.index, 5);
        assert!(!s.busy());
        assert_eq!(store.indexes().expect("list"), vec![3, 5], "older ones are kept");
        let reader = store.open_at(5).expect("open").expect("held");
        assert_eq!(reader.data_len(), second.size_bytes);
        let restored = read_machine(reader, KvConfig::default()).expect("restore");
        assert_eq!(restored.applied_index(), 5);
        assert_eq!(restored.kv().held_keys(), 5);
        assert_eq!(restored.snapshot(), machine_at(5).snapshot(), "the state, as written");
    }

    #[test]
    fn a_failed_write_names_its_index_is_not_fatal_and_keeps_older_snapshots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = Arc::new(synod_storage::FaultFs::new());
        let store = SnapshotStore::open_with(fs.clone(), dir.path()).expect("store");
        let mut s = Snapshotter::new(store.clone());
        s.take(machine_at(2)).expect("take");
        assert_eq!(s.wait_idle().expect("in flight").expect("written").index, 2);
        // The disk fills up: the next write fails, and says which it was.
        fs.set_space_limit(Some(fs.used_bytes()));
        s.take(machine_at(40)).expect("take");
        let failed = s.wait_idle().expect("in flight").expect_err("no space");
        assert_eq!(failed.index, 40);
        assert!(!failed.is_fatal(), "{:?}", failed.error);
        assert_eq!(store.indexes().expect("list"), vec![2], "the older one is whole");
        // Space again: the retry the core asks for succeeds.
        fs.set_space_limit(None);
        s.take(machine_at(41)).expect("take");
        assert_eq!(s.wait_idle().expect("in flight").expect("written").index, 41);
        // A failed fsync poisons the store: fatal.
        fs.fail_next_syncs(1);
        s.take(machine_at(42)).expect("take");
        let failed = s.wait_idle().expect("in flight").expect_err("fsync failed");
        assert!(failed.is_fatal(), "{:?}", failed.error);
    }

    #[test]
    fn older_snapshots_are_deleted_in_the_background_one_deletion_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("store");
        let mut s = Snapshotter::new(store.clone());
        for n in [2, 3, 4, 5] {
            s.take(machine_at(n)).expect("take");
            s.wait_idle().expect("in flight").expect("written");
        }
        s.remove_older_than(3).expect("start");
        s.remove_older_than(5).expect("queued behind it");
        s.remove_older_than(4).expect("a lower bound changes nothing");
        s.wait_removals().expect("deleted");
        assert_eq!(store.indexes().expect("list"), vec![5]);
        s.poll_removal().expect("nothing left to collect");
    }

    /// Snapshot bytes of a machine with `n` keys of 1 KiB.
    fn big_snapshot(store: &SnapshotStore, n: u64) -> Vec<u8> {
        let mut m = Machine::new(KvConfig::default());
        for index in 1..=n {
            let op = KvCommand::Put(PutRequest {
                key: Bytes::from(format!("k{index}")),
                value: Bytes::from(vec![index as u8; 1024]),
                ..PutRequest::default()
            })
            .encode();
            m.apply(&Committed {
                index,
                command: Some(Command::new(ClientId(1), index, op)),
                time: None,
            });
        }
        let mut s = Snapshotter::new(store.clone());
        s.take(m.clone()).expect("take");
        s.wait_idle().expect("in flight").expect("written");
        m.snapshot().to_vec()
    }

    #[test]
    fn chunks_for_peers_are_read_from_the_file_in_order_or_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("store");
        let bytes = big_snapshot(&store, 200);
        let mut chunks = ChunkReader::new(store.clone());
        let (a, b) = (NodeId(2), NodeId(3));
        let chunk = 16 << 10;
        // Two peers interleaved, each in order.
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        while got_a.len() < bytes.len() {
            let at = got_a.len() as u64;
            got_a.extend_from_slice(&chunks.read(a, 200, at, chunk).expect("read").expect("held"));
            let at = got_b.len() as u64;
            got_b.extend_from_slice(&chunks.read(b, 200, at, chunk).expect("read").expect("held"));
            assert!(chunks.open_readers() <= 2);
        }
        assert!(got_a == bytes && got_b == bytes, "the file's bytes, whole");
        assert_eq!(chunks.open_readers(), 0, "a finished transfer closes its reader");
        // A chunk asked for again, one further back, one past the end.
        let first = chunks.read(a, 200, 0, chunk).expect("read").expect("held");
        let again = chunks.read(a, 200, 0, chunk).expect("read").expect("held");
        assert_eq!((&first[..], &again[..]), (&bytes[..chunk], &bytes[..chunk]));
        let mid = chunks.read(a, 200, 50_000, 100).expect("read").expect("held");
        assert_eq!(&mid[..], &bytes[50_000..50_100]);
        let end = chunks.read(a, 200, bytes.len() as u64 + 5, 100).expect("read").expect("held");
        assert!(end.is_empty());
        assert_eq!(chunks.read(a, 7, 0, 100).expect("read"), None, "not held");
        chunks.keep_only(201);
        assert_eq!(chunks.open_readers(), 0);
    }

    /// PBFT signs the SHA-256 of a snapshot into its checkpoint, and a
    /// peer checks the bytes it fetches against it: the digest must cover
    /// exactly what `ChunkReader` serves (the machine's encoding, not the
    /// file's header).
    #[test]
    fn the_digest_covers_exactly_the_bytes_served_to_peers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("store");
        let mut s = Snapshotter::new(store.clone());
        s.take(machine_at(30)).expect("take");
        let plain = s.wait_idle().expect("in flight").expect("written");
        assert_eq!(plain.sha256, None, "no hashing unless asked");
        s.hash_snapshots();
        s.take(machine_at(31)).expect("take");
        let taken = s.wait_idle().expect("in flight").expect("written");
        let mut chunks = ChunkReader::new(store);
        let mut served = Vec::new();
        while (served.len() as u64) < taken.size_bytes {
            let at = served.len() as u64;
            let chunk = chunks.read(NodeId(2), 31, at, 100).expect("read").expect("held");
            served.extend_from_slice(&chunk);
        }
        assert_eq!(served, machine_at(31).snapshot().to_vec());
        assert_eq!(taken.sha256, Some(Sha256::digest(&served).into()));
    }

    #[test]
    fn a_received_snapshot_is_on_disk_as_it_comes_and_durable_only_when_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = SnapshotStore::open(dir.path().join("leader")).expect("store");
        let bytes = big_snapshot(&source, 100);
        let store = SnapshotStore::open(dir.path().join("follower")).expect("store");
        let mut incoming = Incoming::begin(&store, 100, 3).expect("begin");
        let mut offset = 0;
        for piece in bytes.chunks(10_000) {
            assert!(incoming.accepts(100, 3, offset, piece.len(), u64::MAX));
            assert!(!incoming.accepts(100, 3, offset + 1, piece.len(), u64::MAX), "a gap");
            assert!(!incoming.accepts(100, 4, offset, piece.len(), u64::MAX), "another epoch");
            assert!(!incoming.accepts(100, 3, offset, piece.len(), offset), "over the limit");
            incoming.append(piece).expect("append");
            offset += piece.len() as u64;
        }
        assert!(store.indexes().expect("list").is_empty(), "partial: not a snapshot");
        drop(incoming);
        assert!(store.indexes().expect("list").is_empty());
        let names = std::fs::read_dir(dir.path().join("follower")).expect("list").count();
        assert_eq!(names, 0, "a dropped partial leaves no file");
        let mut incoming = Incoming::begin(&store, 100, 3).expect("begin");
        incoming.append(&bytes).expect("append");
        incoming.finish().expect("durable");
        let reader = store.open_at(100).expect("open").expect("held");
        let m = read_machine(reader, KvConfig::default()).expect("restore");
        assert_eq!((m.applied_index(), m.kv().held_keys()), (100, 100));
    }

    #[test]
    fn wait_idle_finishes_the_write_and_drops_the_waiting_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("store");
        let mut s = Snapshotter::new(store.clone());
        s.take(machine_at(2)).expect("take");
        s.take(machine_at(3)).expect("take");
        let done = s.wait_idle().expect("one in flight").expect("written");
        assert_eq!(done.index, 2);
        assert!(!s.busy() && s.wait_idle().is_none());
        assert_eq!(store.indexes().expect("list"), vec![2]);
    }

    impl Snapshotter {
        /// Blocks on the job in flight through the async path.
        fn wait_for_test(&mut self) -> TakenSnapshot {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            rt.block_on(self.finished()).expect("written")
        }
    }
}
