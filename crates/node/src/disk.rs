//! [`Disk`]: a node's data directory — `wal/` (the write-ahead log),
//! `hardstate`, and `snap/` (state-machine snapshots) — opened together.

use crate::error::NodeError;
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
}

impl Disk {
    /// Opens (creating) the data directory `dir`, recovering the log (a
    /// torn tail is cut off and logged; other corruption is an error naming
    /// the file and offset). Returns the saved hard state, if any.
    pub fn open(dir: &Path) -> Result<(Disk, Option<Vec<u8>>), NodeError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            NodeError::Startup(format!("cannot create data directory {}: {e}", dir.display()))
        })?;
        let (wal, recovered) = Wal::open(dir.join("wal"), WalOptions::default())?;
        if let Some(torn) = &recovered.torn_tail {
            tracing::warn!(
                file = %torn.path.display(), offset = torn.offset, bytes = torn.dropped_bytes,
                reason = %torn.reason, "cut off a torn write at the end of the log"
            );
        }
        let (hard_state, saved) = HardStateFile::open(dir)?;
        let snapshots = SnapshotStore::open(dir.join("snap"))?;
        Ok((Disk { wal, hard_state, snapshots, dir: dir.to_path_buf() }, saved))
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
