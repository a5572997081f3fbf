//! Purging the head of the log off the caller's thread: [`Wal::detach_prefix`]
//! takes whole segments out of the log at once (so no append, truncate or
//! read ever touches them again), and a [`WalPurger`] deletes their files
//! later, on any thread, once they may go.
//!
//! A detached segment may be deleted only after a sync that *started after*
//! it was detached has completed ([`Wal::finish_sync`] releases it): the
//! caller's writes that made it obsolete (a hard state naming the snapshot,
//! later records of the same batch) are durable by then, as they are when
//! [`Wal::purge_prefix`] deletes inline. Until it is deleted a segment is
//! still on disk, so a crash (or a restart) in between finds a log that
//! starts earlier than the purge said: recovery reads it as before, and the
//! caller purges again after its next snapshot.
//!
//! The purger deletes released segments oldest first and then fsyncs the
//! directory once, so a crash part-way leaves a contiguous log. Detached
//! segments always precede the log's own, contiguously, except when the
//! log is emptied (by a purge of everything or a truncate) and restarts at
//! another index, or when [`Wal::purge_prefix`] deletes segments inline:
//! before it creates that first segment, or deletes its own, the log
//! deletes every detached file itself, under the list's lock (which the purger
//! holds while it unlinks), so a crash never finds an old segment beside
//! the new one with a gap between them, and the purger never deletes a
//! live segment of the same name.

use super::Wal;
use crate::error::{Error, Result};
use crate::vfs::Vfs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// Segment files out of the log, not yet deleted.
#[derive(Debug, Default)]
pub(super) struct Detached {
    files: Mutex<Vec<DetachedFile>>,
}

#[derive(Debug)]
struct DetachedFile {
    path: PathBuf,
    /// The log's epoch right after the purge that detached it: a sync
    /// begun at or after it covers every write made before the purge.
    epoch: u64,
    /// A sync covering the purge's cause completed: it may be deleted.
    released: bool,
}

impl Detached {
    fn lock(&self) -> MutexGuard<'_, Vec<DetachedFile>> {
        // A purger that panicked mid-list leaves a list still worth using.
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn push(&self, path: PathBuf, epoch: u64) {
        self.lock().push(DetachedFile { path, epoch, released: false });
    }

    /// A sync begun at `epoch` completed.
    pub(super) fn release_through(&self, epoch: u64) {
        for f in self.lock().iter_mut().filter(|f| f.epoch <= epoch) {
            f.released = true;
        }
    }

    /// Deletes every detached file now, released or not (as
    /// [`Wal::purge_prefix`] would have at the purge), oldest first, and
    /// returns how many. The log calls it before it deletes segments of its
    /// own inline, and when it is empty and about to start a segment at any
    /// index, so that a crash cannot leave an old segment beside a newer
    /// one with a gap (or a name) between them. The caller's directory
    /// fsync makes the unlinks durable.
    pub(super) fn remove_all(&self, fs: &dyn Vfs) -> Result<usize> {
        let mut files = self.lock();
        let mut removed = 0;
        while let Some(f) = files.first() {
            if let Err(e) = fs.remove_file(&f.path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                return Err(Error::io("remove", &f.path, e));
            }
            files.remove(0);
            removed += 1;
        }
        Ok(removed)
    }
}

/// Deletes the segment files [`Wal::detach_prefix`] took out of a log once
/// they are released. `Send + Sync` and cheap to clone: run it on a thread
/// of its own. See the module doc of `wal::purge`.
#[derive(Clone, Debug)]
pub struct WalPurger {
    fs: Arc<dyn Vfs>,
    dir: PathBuf,
    detached: Arc<Detached>,
}

impl WalPurger {
    /// Whether released segment files wait for [`WalPurger::run`].
    pub fn has_work(&self) -> bool {
        self.detached.lock().iter().any(|f| f.released)
    }

    /// Segment files detached and not yet deleted (released or not).
    pub fn detached_count(&self) -> usize {
        self.detached.lock().len()
    }

    /// Deletes every released segment file, oldest first, then fsyncs the
    /// directory (if it deleted any). Returns how many it deleted. Blocks
    /// on the disk. A failed unlink leaves that file (and the newer ones)
    /// on the list and is an ordinary error; a failed directory fsync is
    /// fatal ([`Error::is_fatal`]): the caller must stop, as after any
    /// failed fsync.
    pub fn run(&self) -> Result<usize> {
        let mut removed = 0;
        {
            let mut files = self.detached.lock();
            while let Some(k) = files.iter().position(|f| f.released) {
                let path = files[k].path.clone();
                if let Err(e) = self.fs.remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(Error::io("remove", &path, e));
                }
                files.remove(k);
                removed += 1;
            }
        }
        if removed > 0 {
            self.fs.sync_dir(&self.dir).map_err(|e| Error::fatal("fsync", &self.dir, e))?;
        }
        Ok(removed)
    }
}

impl Wal {
    /// [`Wal::purge_prefix`] without the disk work: the segments whose
    /// records all have indexes `<= up_to_index` leave the log now (reads,
    /// appends and truncates never see them again), and their files are
    /// deleted by [`Wal::purger`] once a sync begun after this call
    /// completed ([`Wal::sync`] or [`Wal::finish_sync`]). Until then a
    /// crash or a reopen finds them again: the log then starts earlier,
    /// which recovery reads as usual. Returns how many segments it took.
    pub fn detach_prefix(&mut self, up_to_index: u64) -> Result<usize> {
        self.poison.check()?;
        if self.unsynced && self.segments.last().is_some_and(|s| s.last_index() <= up_to_index) {
            // The segment appended to goes too: its tail must be whole on
            // disk before a later segment can exist beside it (see
            // `start_segment`), and its file stays until the purger runs.
            self.sync_last()?;
        }
        self.epoch += 1;
        let mut taken = 0;
        while let Some(segment) = self.segments.first()
            && segment.count() > 0
            && segment.last_index() <= up_to_index
        {
            let segment = self.segments.remove(0);
            self.detached.push(segment.path, self.epoch);
            taken += 1;
        }
        if taken > 0 {
            self.durable_index = self.durable_index.min(self.last_index());
        }
        Ok(taken)
    }

    /// The deleter of the segments [`Wal::detach_prefix`] takes out of this
    /// log (one for the log's life; clones share the list).
    pub fn purger(&self) -> WalPurger {
        WalPurger { fs: self.fs.clone(), dir: self.dir.clone(), detached: self.detached.clone() }
    }
}
