//! [`Disk`]: a node's data directory — `wal/` (the write-ahead log),
//! `hardstate`, and `snap/` (state-machine snapshots) — opened together,
//! and locked: `LOCK` holds an exclusive advisory lock (`flock`) for as long
//! as the [`Disk`] lives, so a second process (or a second open in this
//! one) on the same directory fails at once with a clear error instead of
//! corrupting the log. The lock goes with the process, even on SIGKILL.

use crate::error::NodeError;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use synod_storage::{HardStateFile, SnapshotStore, Wal, WalOptions};

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
    /// Holds the directory's lock while open.
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
    /// the log (a torn tail is cut off and logged; other corruption is an
    /// error naming the file and offset). Returns the saved hard state, if
    /// any. A directory locked by someone else is an error.
    pub fn open(dir: &Path) -> Result<(Disk, Option<Vec<u8>>), NodeError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            NodeError::Startup(format!("cannot create data directory {}: {e}", dir.display()))
        })?;
        let lock = lock(dir)?;
        let (wal, recovered) = Wal::open(dir.join("wal"), WalOptions::default())?;
        if let Some(torn) = &recovered.torn_tail {
            tracing::warn!(
                file = %torn.path.display(), offset = torn.offset, bytes = torn.dropped_bytes,
                reason = %torn.reason, "cut off a torn write at the end of the log"
            );
        }
        let (hard_state, saved) = HardStateFile::open(dir)?;
        let snapshots = SnapshotStore::open(dir.join("snap"))?;
        Ok((Disk { wal, hard_state, snapshots, dir: dir.to_path_buf(), _lock: lock }, saved))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes every log append so far durable with one fsync (group commit).
    pub fn sync(&mut self) -> Result<u64, NodeError> {
        Ok(self.wal.sync()?)
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
