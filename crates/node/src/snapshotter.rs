//! [`Snapshotter`]: takes state-machine snapshots off the driver thread.
//!
//! When the core asks for a snapshot at position `index`
//! ([`SnapshotAction::Take`](synod_core::protocol::SnapshotAction::Take)),
//! the driver hands [`Snapshotter::take`] a *point-in-time copy* of its
//! [`Machine`] as of `index` (a clone: the key space's maps and version
//! lists are copied, values are shared [`Bytes`], nothing is encoded or
//! written). A background thread then encodes it, writes it to the
//! [`SnapshotStore`], fsyncs it, renames it into place and fsyncs the
//! directory, while the driver goes on applying, persisting and answering.
//! Only when the snapshot is durable does the driver learn of it
//! ([`Snapshotter::finished`] / [`Snapshotter::try_finished`]) and tell the
//! core (`snapshot_taken`), which then compacts the log.
//!
//! At most one snapshot is written at a time. A take that arrives while one
//! is in flight is kept (only the newest such copy: the core waits for no
//! other) and started when the one in flight is done; it is counted in
//! [`Snapshotter::deferred`]. Older snapshots are never deleted here: the
//! driver removes them once the core has durably adopted a newer one.
//!
//! A crash at any point leaves the previous snapshot whole (the store's
//! temporary-file, fsync, rename, fsync-directory protocol).

use crate::error::NodeError;
use crate::machine::Machine;
use bytes::Bytes;
use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use synod_storage::SnapshotStore;
use tokio::sync::oneshot;

/// A snapshot made durable in the background.
#[derive(Debug)]
pub struct TakenSnapshot {
    /// Its position.
    pub index: u64,
    /// Its bytes (kept for sending it to peers).
    pub data: Bytes,
}

type Outcome = Result<TakenSnapshot, NodeError>;

struct InFlight {
    index: u64,
    done: oneshot::Receiver<Outcome>,
    thread: JoinHandle<()>,
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

    fn wait(&self) {
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
        Snapshotter { store, in_flight: None, waiting: None, gate: None, deferred: 0 }
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
    /// or keeps it until the snapshot in flight is done.
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
        let (tx, done) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("synod-snapshot-{index}"))
            .spawn(move || {
                if let Some(gate) = gate {
                    gate.wait();
                }
                let _ = tx.send(write(&store, index, &view));
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
            _ => Err(NodeError::Startup(format!("the snapshot writer for {} panicked", job.index))),
        };
        Some(outcome)
    }

    fn complete(&mut self, outcome: Option<Outcome>) -> Outcome {
        let job = self.in_flight.take().expect("called with a job in flight");
        // It sent its outcome (or died): it is about to exit.
        let panicked = job.thread.join().is_err();
        let outcome = match outcome {
            Some(o) if !panicked => o,
            _ => Err(NodeError::Startup(format!("the snapshot writer for {} panicked", job.index))),
        };
        if outcome.is_ok()
            && let Some(view) = self.waiting.take()
            && view.applied_index() > job.index
        {
            self.start(view)?;
        }
        outcome
    }
}

/// Encodes `view` and makes it the durable snapshot `index` (keeping older
/// ones).
fn write(store: &SnapshotStore, index: u64, view: &Machine) -> Outcome {
    let data = view.snapshot();
    let mut writer = store.begin(index, &[])?;
    writer.write_all(&data).map_err(|e| {
        NodeError::Storage(synod_storage::Error::InvalidArgument(format!(
            "writing snapshot {index}: {e}"
        )))
    })?;
    writer.finish_keeping_older()?;
    Ok(TakenSnapshot { index, data })
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
            m.apply(&Committed { index, command: Some(Command::new(ClientId(1), index, op)) });
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
        let restored = Machine::restore(KvConfig::default(), &second.data).expect("restore");
        assert_eq!(restored.applied_index(), 5);
        assert_eq!(restored.kv().held_keys(), 5);
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
