//! [`Disk`]: a node's data directory — `wal/` (the write-ahead log),
//! `hardstate`, and `snap/` (state-machine snapshots) — opened together,
//! and locked: `LOCK` holds an exclusive advisory lock (`flock`) for as long
//! as the [`Disk`] lives, so a second process (or a second open in this
//! one) on the same directory fails at once with a clear error instead of
//! corrupting the log. The lock goes with the process, even on SIGKILL.
//!
//! The log's head is purged off the driver thread: the glue detaches the
//! segments a snapshot made obsolete ([`Wal::detach_prefix`]: no disk work)
//! and [`Disk::sync`], once its fsync made the round's writes durable,
//! hands them to a thread that unlinks them and fsyncs the directory (one
//! at a time; work found meanwhile waits for the next sync). Unlinking
//! files of 64 MiB and the directory fsync used to run inline after each
//! snapshot, where they queued behind the snapshot's own writeback. A
//! crash before the files go leaves a log that starts earlier than the
//! hard state's purge point, which recovery reads as before; an error
//! there stops the node (at the next sync), as an inline one did.
//!
//! # A log that ends too early
//!
//! Opening the log cuts off a torn tail: a damaged last record with
//! nothing valid after it ([`synod_storage::Wal`]'s recovery; so do zeros
//! where synced records were, which read as padding). That is right for a
//! record that was never synced, hence never acknowledged. It is not for
//! one the node had made durable and acted on — acknowledged to a leader,
//! counted toward a commit, voted on, answered to a client: a replica that
//! goes on from such a log lies about it, and a quorum built on the lie can
//! lose committed data (Alagappan et al., "Protocol-Aware Recovery for
//! Consensus-Based Storage", FAST '18; etcd raft's "tocommit is out of
//! range" panic). The log alone cannot tell the two apart: its end is what
//! was lost. So each protocol keeps, in its hard-state file, a point its
//! log must reach — raised to the log's durable index whenever that file is
//! saved anyway, so no fsync is added per entry, which makes it a lower
//! bound — and its recovery calls [`Disk::check_log_reaches`]: a log that
//! ends before it is [`NodeError::LostLog`], naming the data directory, the
//! cut (file and byte offset, when this open made it), the lost range and
//! what an operator can do; the node does not start (nor on any later try:
//! the cut is made, the hard state still says what is missing).
//!
//! - Raft ([`crate::raft_glue`]): `synced_index`, raised at each save of the
//!   term, vote or snapshot, and lowered (durably, first) before a conflict
//!   or a disagreeing snapshot cuts the log below it — only uncommitted
//!   entries are ever cut, and those may go. The snapshot's index is
//!   checked too (the core cannot start from a snapshot beyond its log).
//! - Multi-Paxos ([`crate::paxos_glue`]): `synced_record`, raised at each
//!   promise or snapshot save; the journal of acceptances is never cut, and
//!   records below `purged_record` (obsolete) may be gone.
//! - PBFT ([`crate::pbft_glue`]): `synced_record`, raised when the file is
//!   saved — before the first record, at each view change and stable
//!   checkpoint; the journal loses only records before a durable
//!   restatement (compaction) and a restatement a crash tore (which
//!   restates records before it).
//!
//! Entries made durable after the last save are not covered: losing them
//! is reported as a torn tail and the node starts, as before.

use crate::error::NodeError;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use synod_storage::{HardStateFile, SnapshotStore, TornTail, Wal, WalOptions, WalPurger};

/// The durable state of one node.
#[derive(Debug)]
pub struct Disk {
    /// The log.
    pub wal: Wal,
    /// The hard-state file.
    pub hard_state: HardStateFile,
    /// The snapshot store.
    pub snapshots: SnapshotStore,
    dir: PathBuf,
    /// Deletes the log segments purged by [`Wal::detach_prefix`].
    purger: WalPurger,
    /// The purger's run in flight, if any.
    purging: Option<JoinHandle<synod_storage::Result<usize>>>,
    /// The damaged end this open cut off the log, if any.
    torn_tail: Option<TornTail>,
    /// Holds the directory's lock while open (after the purger's thread is
    /// joined: fields drop in order, and `Drop` joins it first).
    _lock: File,
}

/// The lock file in a data directory.
pub const LOCK_FILE: &str = "LOCK";

fn lock(dir: &Path) -> Result<File, NodeError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| NodeError::Startup(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(NodeError::Startup(format!(
            "data directory {} is in use by another synod process (it holds the lock on {})",
            dir.display(),
            path.display()
        ))),
        Err(TryLockError::Error(e)) => {
            Err(NodeError::Startup(format!("cannot lock {}: {e}", path.display())))
        }
    }
}

impl Disk {
    /// Opens (creating) the data directory `dir` and locks it, recovering
    /// the log (a torn tail is cut off, logged and kept in
    /// [`Disk::torn_tail`]; other corruption is an error naming the file
    /// and offset). Returns the saved hard state, if any. A directory
    /// locked by someone else is an error. Whether the log still reaches
    /// what the hard state vouches for is the protocol's recovery to check
    /// (see the module doc).
    pub fn open(dir: &Path) -> Result<(Disk, Option<Vec<u8>>), NodeError> {
        Disk::open_with(dir, WalOptions::default())
    }

    /// [`Disk::open`] with the log's `options` (tests use small segments).
    pub fn open_with(
        dir: &Path,
        options: WalOptions,
    ) -> Result<(Disk, Option<Vec<u8>>), NodeError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            NodeError::Startup(format!("cannot create data directory {}: {e}", dir.display()))
        })?;
        let lock = lock(dir)?;
        let (wal, recovered) = Wal::open(dir.join("wal"), options)?;
        if let Some(torn) = &recovered.torn_tail {
            tracing::warn!(
                file = %torn.path.display(), offset = torn.offset, bytes = torn.dropped_bytes,
                reason = %torn.reason, "cut off a torn write at the end of the log"
            );
        }
        let (hard_state, saved) = HardStateFile::open(dir)?;
        let snapshots = SnapshotStore::open(dir.join("snap"))?;
        let purger = wal.purger();
        let disk = Disk {
            wal,
            hard_state,
            snapshots,
            dir: dir.to_path_buf(),
            purger,
            purging: None,
            torn_tail: recovered.torn_tail,
            _lock: lock,
        };
        Ok((disk, saved))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The damaged end of the log this open cut off (a torn write), if any.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }

    /// Refuses a log that ends before a position this node durably recorded
    /// having reached: `log_end` is where the recovered log ends (in the
    /// protocol's own numbering: a Raft index, a journal record), `needed`
    /// the position a durable fact outside the log vouches for, and `fact`
    /// names that fact ("the hard state's synced index"). The error names
    /// the data directory, where the log now ends (and the cut, if this
    /// open made one), the lost range, and what an operator can do. See
    /// the module doc.
    pub fn check_log_reaches(
        &self,
        unit: &str,
        log_end: u64,
        needed: u64,
        fact: &str,
    ) -> Result<(), NodeError> {
        if log_end >= needed {
            return Ok(());
        }
        let lost = if log_end + 1 == needed {
            format!("{unit} {needed} is")
        } else {
            let units = if unit.ends_with('x') { "es" } else { "s" };
            format!("{unit}{units} {}..={needed} are", log_end + 1)
        };
        let cut = match &self.torn_tail {
            Some(torn) => format!(
                "; this start cut the log at byte offset {} of {} ({})",
                torn.offset,
                torn.path.display(),
                torn.reason
            ),
            None => String::new(),
        };
        Err(NodeError::LostLog(format!(
            "the write-ahead log in {wal} ends at {unit} {log_end}, but {fact} is {needed}: \
             {lost} lost{cut}. This node made them durable and may have acknowledged or voted \
             on them, so it refuses to start rather than vote or acknowledge from a log it \
             cannot trust. To bring it back: remove it from the cluster (`synod member \
             remove`), move its data directory {dir} aside, and add it back as a new member \
             (`synod member add`) so that it catches up from its peers",
            wal = self.wal.dir().display(),
            dir = self.dir.display(),
        )))
    }

    /// Makes every log append so far durable with one fsync (group
    /// commit), then starts deleting the log segments purged before it, if
    /// no deletion is running (an error of a finished one is returned here:
    /// the node stops).
    pub fn sync(&mut self) -> Result<u64, NodeError> {
        let durable = self.wal.sync()?;
        self.poll_purge()?;
        Ok(durable)
    }

    /// Collects a finished deletion of purged log segments and starts the
    /// next when there is work and none runs.
    pub fn poll_purge(&mut self) -> Result<(), NodeError> {
        if self.purging.as_ref().is_some_and(JoinHandle::is_finished) {
            self.join_purge()?;
        }
        if self.purging.is_none() && self.purger.has_work() {
            let purger = self.purger.clone();
            let thread = std::thread::Builder::new()
                .name("synod-wal-purge".into())
                .spawn(move || purger.run())
                .map_err(|e| NodeError::Startup(format!("cannot start a purge thread: {e}")))?;
            self.purging = Some(thread);
        }
        Ok(())
    }

    /// Waits for the deletion of purged log segments in flight, if any.
    pub fn wait_purge(&mut self) -> Result<(), NodeError> {
        self.join_purge()
    }

    /// Log segments purged and not yet deleted.
    pub fn purged_segments_left(&self) -> usize {
        self.purger.detached_count()
    }

    fn join_purge(&mut self) -> Result<(), NodeError> {
        let Some(thread) = self.purging.take() else { return Ok(()) };
        match thread.join() {
            Ok(Ok(removed)) => {
                tracing::debug!(removed, "deleted purged log segments");
                Ok(())
            }
            Ok(Err(e)) => Err(NodeError::Storage(e)),
            Err(_) => Err(NodeError::Startup("the purge of log segments panicked".into())),
        }
    }
}

impl Drop for Disk {
    /// Waits for a deletion in flight, so that nothing touches the
    /// directory once its lock is released.
    fn drop(&mut self) {
        if let Err(e) = self.join_purge() {
            tracing::warn!(error = %e, "deleting purged log segments failed");
        }
    }
}

/// Helpers for tests that damage a data directory.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::{Path, PathBuf};

    use synod_storage::format::{RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN};

    /// A [`Disk`] on `dir` (for its lock and snapshots) whose log and hard
    /// state live on `fs` under `/node`, so that a test can crash it.
    pub fn open_on_fault_fs(
        dir: &Path,
        fs: &synod_storage::FaultFs,
    ) -> Result<(super::Disk, Option<Vec<u8>>), crate::error::NodeError> {
        open_on_fault_fs_with(dir, fs, synod_storage::WalOptions::default())
    }

    /// [`open_on_fault_fs`] with the log's `options` (small segments).
    pub fn open_on_fault_fs_with(
        dir: &Path,
        fs: &synod_storage::FaultFs,
        options: synod_storage::WalOptions,
    ) -> Result<(super::Disk, Option<Vec<u8>>), crate::error::NodeError> {
        use std::sync::Arc;
        let (mut disk, _) = super::Disk::open(dir)?;
        let root = Path::new("/node");
        let (wal, recovered) =
            synod_storage::Wal::open_with(Arc::new(fs.clone()), root.join("wal"), options)?;
        let (hard_state, saved) =
            synod_storage::HardStateFile::open_with(Arc::new(fs.clone()), root)?;
        disk.purger = wal.purger();
        disk.wal = wal;
        disk.hard_state = hard_state;
        disk.torn_tail = recovered.torn_tail;
        Ok((disk, saved))
    }

    /// Asserts that `err` is a [`NodeError::LostLog`] naming the data
    /// directory `dir`, the segment and byte offset of the cut (`cut`), and
    /// every one of `also`; returns its message.
    ///
    /// [`NodeError::LostLog`]: crate::error::NodeError::LostLog
    pub fn assert_lost_log(
        err: &crate::error::NodeError,
        dir: &Path,
        cut: &(PathBuf, u64),
        also: &[&str],
    ) -> String {
        assert!(matches!(err, crate::error::NodeError::LostLog(_)), "{err:?}");
        let message = err.to_string();
        let (segment, offset) = cut;
        let named = [
            dir.display().to_string(),
            segment.display().to_string(),
            format!("byte offset {offset}"),
        ];
        for needle in named.iter().map(String::as_str).chain(also.iter().copied()) {
            assert!(message.contains(needle), "{needle:?} not in {message}");
        }
        message
    }

    /// Damages the log in `dir` from record `index` on, as a crash (or a
    /// disk losing writes) could: that record's checksum no longer
    /// matches and every byte after it in its segment, the last, reads as
    /// zeros. Returns the segment's path and the record's byte offset,
    /// where recovery cuts the log.
    pub fn tear_log_from(dir: &Path, index: u64) -> (PathBuf, u64) {
        let wal = dir.join("wal");
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&wal)
            .expect("list the log")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .collect();
        segments.sort();
        let last = segments.pop().expect("a segment");
        let mut bytes = std::fs::read(&last).expect("read the segment");
        let mut at = SEGMENT_HEADER_LEN as usize;
        loop {
            let header = RecordHeader::decode(&bytes[at..at + RECORD_HEADER_LEN as usize]);
            assert!(header.index != 0, "record {index} is not in the last segment");
            if header.index == index {
                break;
            }
            at += (RECORD_HEADER_LEN + header.payload_len) as usize;
        }
        // The checksum field: the record no longer matches it.
        bytes[at + 12] ^= 0xff;
        bytes[at + RECORD_HEADER_LEN as usize..].fill(0);
        std::fs::write(&last, bytes).expect("write the segment back");
        (last, at as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_a_locked_directory_fails_until_the_first_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, _) = Disk::open(dir.path()).expect("open");
        let err = Disk::open(dir.path()).expect_err("locked");
        let message = err.to_string();
        assert!(message.contains("in use by another synod process"), "{message}");
        assert!(message.contains(&dir.path().display().to_string()), "{message}");
        drop(first);
        Disk::open(dir.path()).expect("free again once the first is closed");
    }
}
