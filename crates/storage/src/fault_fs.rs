//! An in-memory file system that injects the faults real disks have, for
//! tests: a crash loses unsynced data (or keeps some of it, possibly torn
//! mid-write), directory changes are lost unless the directory was synced,
//! writes can hit a full disk, fsync can fail, and bits can rot.
//!
//! The model of a crash: each file keeps the content it had at its last
//! successful `sync_data`, plus an ordered list of the writes and truncates
//! made since. A crash keeps a random prefix of that list, the write after
//! the prefix possibly torn (only its first bytes land). Directory changes
//! (create, remove, rename) are likewise an ordered list: `sync_dir` makes
//! the ones in that directory durable; a crash keeps a random prefix of the
//! rest. Handles opened before a crash fail afterwards. Randomness comes
//! from the seed given to [`FaultFs::crash`], so runs are deterministic.

use crate::vfs::{Vfs, VfsFile};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A fault-injecting in-memory file system. Clones share the same disk.
#[derive(Clone, Debug, Default)]
pub struct FaultFs {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// What a process sees now.
    live: BTreeMap<PathBuf, u64>,
    /// What survives a crash for sure.
    durable: BTreeMap<PathBuf, u64>,
    /// Directory changes not yet made durable, in order.
    ns_pending: Vec<NsOp>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    dirs: BTreeSet<PathBuf>,
    /// Bumped by every crash; older handles fail.
    generation: u64,
    /// Total bytes all live files may hold; writes beyond fail with ENOSPC.
    space_limit_bytes: Option<u64>,
    /// How many of the next syncs (file or directory) fail with EIO.
    failing_syncs: u32,
    /// Syncs that succeed before `failing_syncs` start failing.
    syncs_before_failing: u32,
    /// Successful `sync_data` calls, for tests of group commit.
    data_syncs: u64,
}

#[derive(Debug, Default, Clone)]
struct Inode {
    data: Vec<u8>,
    synced: Vec<u8>,
    pending: Vec<DataOp>,
}

#[derive(Debug, Clone)]
enum DataOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone)]
enum NsOp {
    Link(PathBuf, u64),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf),
}

impl NsOp {
    fn touches(&self, dir: &Path) -> bool {
        match self {
            NsOp::Link(p, _) | NsOp::Unlink(p) => p.parent() == Some(dir),
            NsOp::Rename(a, b) => a.parent() == Some(dir) || b.parent() == Some(dir),
        }
    }

    fn apply(&self, ns: &mut BTreeMap<PathBuf, u64>) {
        match self {
            NsOp::Link(p, id) => {
                ns.insert(p.clone(), *id);
            }
            NsOp::Unlink(p) => {
                ns.remove(p);
            }
            NsOp::Rename(from, to) => {
                if let Some(id) = ns.remove(from) {
                    ns.insert(to.clone(), id);
                }
            }
        }
    }
}

fn apply_data_op(data: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write { offset, bytes } => write_into(data, *offset, bytes),
        DataOp::SetLen(len) => data.resize(*len as usize, 0),
    }
}

fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset as usize + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset as usize..end].copy_from_slice(bytes);
}

/// splitmix64: a tiny deterministic generator for crash choices.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    fn upto(&mut self, max: usize) -> usize {
        (self.next() % (max as u64 + 1)) as usize
    }
}

impl FaultFs {
    /// An empty disk.
    pub fn new() -> FaultFs {
        FaultFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock only happens in a failing test.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Simulates power loss: every file keeps its synced content plus a
    /// random prefix of the later writes (the next one possibly torn);
    /// directory changes keep a random prefix of the unsynced ones. Handles
    /// opened before fail from now on. Injected faults are cleared.
    pub fn crash(&self, seed: u64) {
        let mut rng = SplitMix(seed);
        let mut inner = self.lock();
        let mut ids: Vec<u64> = inner.inodes.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let keep_draw = rng.next();
            let torn = rng.next();
            let Some(inode) = inner.inodes.get_mut(&id) else { continue };
            let keep = (keep_draw % (inode.pending.len() as u64 + 1)) as usize;
            let mut data = inode.synced.clone();
            for op in &inode.pending[..keep] {
                apply_data_op(&mut data, op);
            }
            if let Some(DataOp::Write { offset, bytes }) = inode.pending.get(keep)
                && !bytes.is_empty()
            {
                let cut = (torn % bytes.len() as u64) as usize;
                write_into(&mut data, *offset, &bytes[..cut]);
            }
            inode.synced = data.clone();
            inode.data = data;
            inode.pending.clear();
        }
        let keep = rng.upto(inner.ns_pending.len());
        let ops: Vec<NsOp> = inner.ns_pending.drain(..).take(keep).collect();
        let mut durable = std::mem::take(&mut inner.durable);
        for op in &ops {
            op.apply(&mut durable);
        }
        inner.live = durable.clone();
        inner.durable = durable;
        let referenced: BTreeSet<u64> = inner.live.values().copied().collect();
        inner.inodes.retain(|id, _| referenced.contains(id));
        inner.generation += 1;
        inner.space_limit_bytes = None;
        inner.failing_syncs = 0;
        inner.syncs_before_failing = 0;
    }

    /// Limits the total bytes of all files: a write that would exceed it
    /// writes what fits and fails with ENOSPC. `None`: unlimited.
    pub fn set_space_limit(&self, limit_bytes: Option<u64>) {
        self.lock().space_limit_bytes = limit_bytes;
    }

    /// Bytes held by all live files.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }

    /// Makes the next `count` syncs (of files or directories) fail with EIO,
    /// leaving the unsynced data unsynced.
    pub fn fail_next_syncs(&self, count: u32) {
        self.fail_syncs_after(0, count);
    }

    /// Lets the next `skip` syncs (of files or directories) succeed, then
    /// makes `count` fail with EIO: a failure in the middle of an operation
    /// that syncs more than once (starting a segment, a truncate).
    pub fn fail_syncs_after(&self, skip: u32, count: u32) {
        let mut inner = self.lock();
        inner.syncs_before_failing = skip;
        inner.failing_syncs = count;
    }

    /// Successful `sync_data` calls so far.
    pub fn data_sync_count(&self) -> u64 {
        self.lock().data_syncs
    }

    /// Flips bit `bit` of file `path` (in memory and on "disk"): bit rot.
    /// Returns false if there is no such file or bit.
    pub fn flip_bit(&self, path: &Path, bit: u64) -> bool {
        let mut inner = self.lock();
        let Some(id) = inner.live.get(path).copied() else { return false };
        let Some(inode) = inner.inodes.get_mut(&id) else { return false };
        let byte = (bit / 8) as usize;
        if byte >= inode.data.len() {
            return false;
        }
        inode.data[byte] ^= 1 << (bit % 8);
        if byte < inode.synced.len() {
            inode.synced[byte] ^= 1 << (bit % 8);
        }
        true
    }

    /// The current content of `path`, if it exists.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let inner = self.lock();
        let id = inner.live.get(path)?;
        inner.inodes.get(id).map(|inode| inode.data.clone())
    }

    /// Creates (or replaces) `path` with `bytes`, durably, as if written and
    /// synced long ago. Creates the parent directory.
    pub fn write_durable(&self, path: &Path, bytes: &[u8]) {
        let mut inner = self.lock();
        if let Some(parent) = path.parent() {
            inner.add_dirs(parent);
        }
        let id = inner.new_inode();
        if let Some(inode) = inner.inodes.get_mut(&id) {
            inode.data = bytes.to_vec();
            inode.synced = bytes.to_vec();
        }
        inner.live.insert(path.to_path_buf(), id);
        inner.durable.insert(path.to_path_buf(), id);
    }

    /// The names of the live files in `dir`, sorted.
    pub fn file_names(&self, dir: &Path) -> Vec<String> {
        let inner = self.lock();
        inner.names_in(dir)
    }
}

impl Inner {
    fn used_bytes(&self) -> u64 {
        let live: BTreeSet<u64> = self.live.values().copied().collect();
        live.iter().filter_map(|id| self.inodes.get(id)).map(|i| i.data.len() as u64).sum()
    }

    fn new_inode(&mut self) -> u64 {
        self.next_inode += 1;
        self.inodes.insert(self.next_inode, Inode::default());
        self.next_inode
    }

    fn add_dirs(&mut self, dir: &Path) {
        for ancestor in dir.ancestors() {
            self.dirs.insert(ancestor.to_path_buf());
        }
    }

    fn names_in(&self, dir: &Path) -> Vec<String> {
        self.live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect()
    }

    fn take_sync_failure(&mut self) -> io::Result<()> {
        if self.failing_syncs > 0 && self.syncs_before_failing > 0 {
            self.syncs_before_failing -= 1;
        } else if self.failing_syncs > 0 {
            self.failing_syncs -= 1;
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        Ok(())
    }

    fn handle(&mut self, fs: &FaultFs, path: &Path, id: u64) -> io::Result<Arc<dyn VfsFile>> {
        Ok(Arc::new(FaultFile {
            fs: fs.clone(),
            inode: id,
            generation: self.generation,
            path: path.to_path_buf(),
        }))
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

fn parent_exists(inner: &Inner, path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) if inner.dirs.contains(parent) => Ok(()),
        _ => Err(not_found(path)),
    }
}

impl Vfs for FaultFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.lock().add_dirs(dir);
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let inner = self.lock();
        if !inner.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(inner.names_in(dir))
    }

    fn open_file(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        let mut inner = self.lock();
        let id = *inner.live.get(path).ok_or_else(|| not_found(path))?;
        inner.handle(self, path, id)
    }

    fn create_file(&self, path: &Path) -> io::Result<Arc<dyn VfsFile>> {
        let mut inner = self.lock();
        parent_exists(&inner, path)?;
        let id = inner.new_inode();
        inner.live.insert(path.to_path_buf(), id);
        inner.ns_pending.push(NsOp::Link(path.to_path_buf(), id));
        inner.handle(self, path, id)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        inner.live.remove(path).ok_or_else(|| not_found(path))?;
        inner.ns_pending.push(NsOp::Unlink(path.to_path_buf()));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        parent_exists(&inner, to)?;
        let id = inner.live.remove(from).ok_or_else(|| not_found(from))?;
        inner.live.insert(to.to_path_buf(), id);
        inner.ns_pending.push(NsOp::Rename(from.to_path_buf(), to.to_path_buf()));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut inner = self.lock();
        if !inner.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        inner.take_sync_failure()?;
        let pending = std::mem::take(&mut inner.ns_pending);
        let (now, later): (Vec<NsOp>, Vec<NsOp>) =
            pending.into_iter().partition(|op| op.touches(dir));
        for op in &now {
            op.apply(&mut inner.durable);
        }
        inner.ns_pending = later;
        Ok(())
    }
}

/// A handle to a [`FaultFs`] file.
#[derive(Debug)]
struct FaultFile {
    fs: FaultFs,
    inode: u64,
    generation: u64,
    path: PathBuf,
}

impl FaultFile {
    fn with<T>(&self, f: impl FnOnce(&mut Inner, u64) -> io::Result<T>) -> io::Result<T> {
        let mut inner = self.fs.lock();
        if inner.generation != self.generation || !inner.inodes.contains_key(&self.inode) {
            return Err(io::Error::other(format!(
                "{}: handle from before a simulated crash",
                self.path.display()
            )));
        }
        f(&mut inner, self.inode)
    }
}

fn inode(inner: &mut Inner, id: u64) -> &mut Inode {
    inner.inodes.get_mut(&id).expect("FaultFile::with checked the inode exists")
}

impl VfsFile for FaultFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|inner, id| Ok(inode(inner, id).data.len() as u64))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|inner, id| {
            let data = &inode(inner, id).data;
            if offset >= data.len() as u64 {
                return Ok(0);
            }
            let n = buf.len().min(data.len() - offset as usize);
            buf[..n].copy_from_slice(&data[offset as usize..offset as usize + n]);
            Ok(n)
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|inner, id| {
            let used = inner.used_bytes();
            let limit = inner.space_limit_bytes;
            let node = inode(inner, id);
            let len = node.data.len() as u64;
            let growth = (offset + buf.len() as u64).saturating_sub(len);
            let mut bytes = buf;
            let mut full = false;
            if let Some(limit) = limit
                && used + growth > limit
            {
                let writable_end = len + limit.saturating_sub(used);
                let fits = writable_end.saturating_sub(offset).min(buf.len() as u64);
                bytes = &buf[..fits as usize];
                full = true;
            }
            if !bytes.is_empty() {
                write_into(&mut node.data, offset, bytes);
                node.pending.push(DataOp::Write { offset, bytes: bytes.to_vec() });
            }
            if full { Err(io::Error::from_raw_os_error(28)) } else { Ok(()) }
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|inner, id| {
            let node = inode(inner, id);
            node.data.resize(len as usize, 0);
            node.pending.push(DataOp::SetLen(len));
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|inner, id| {
            inner.take_sync_failure()?;
            inner.data_syncs += 1;
            let node = inode(inner, id);
            node.synced = node.data.clone();
            node.pending.clear();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/d")
    }

    #[test]
    fn a_crash_keeps_synced_data_and_may_lose_the_rest() {
        let fs = FaultFs::new();
        fs.create_dir_all(&dir()).expect("mkdir");
        let path = dir().join("f");
        let file = fs.create_file(&path).expect("create");
        file.write_all_at(b"durable", 0).expect("write");
        file.sync_data().expect("sync");
        fs.sync_dir(&dir()).expect("sync dir");
        file.write_all_at(b"-volatile", 7).expect("write");
        let mut seen_lost = false;
        let mut seen_kept = false;
        for seed in 0..64 {
            let copy = FaultFs { inner: Arc::new(Mutex::new(clone_inner(&fs))) };
            copy.crash(seed);
            let data = copy.read(&path).expect("file survives");
            assert!(data.starts_with(b"durable"), "synced bytes lost: {data:?}");
            assert!(b"durable-volatile".starts_with(&data), "garbage: {data:?}");
            seen_lost |= data.len() < 16;
            seen_kept |= data.len() == 16;
        }
        assert!(seen_lost && seen_kept);
        assert!(file.len().is_ok(), "the original disk did not crash");
    }

    #[test]
    fn an_unsynced_directory_entry_can_vanish_in_a_crash() {
        let fs = FaultFs::new();
        fs.create_dir_all(&dir()).expect("mkdir");
        let path = dir().join("f");
        let file = fs.create_file(&path).expect("create");
        file.write_all_at(b"x", 0).expect("write");
        file.sync_data().expect("sync");
        let vanished = (0..64).any(|seed| {
            let copy = FaultFs { inner: Arc::new(Mutex::new(clone_inner(&fs))) };
            copy.crash(seed);
            copy.read(&path).is_none()
        });
        assert!(vanished);
        fs.sync_dir(&dir()).expect("sync dir");
        fs.crash(1);
        assert_eq!(fs.read(&path), Some(b"x".to_vec()));
        assert!(file.len().is_err(), "a handle from before the crash must fail");
    }

    #[test]
    fn a_full_disk_writes_what_fits_and_fails() {
        let fs = FaultFs::new();
        fs.create_dir_all(&dir()).expect("mkdir");
        let file = fs.create_file(&dir().join("f")).expect("create");
        fs.set_space_limit(Some(4));
        let err = file.write_all_at(b"abcdef", 0).expect_err("disk is full");
        assert!(crate::error::is_no_space(&err));
        assert_eq!(fs.read(&dir().join("f")), Some(b"abcd".to_vec()));
    }

    #[test]
    fn a_failed_sync_leaves_data_unsynced() {
        let fs = FaultFs::new();
        fs.create_dir_all(&dir()).expect("mkdir");
        let file = fs.create_file(&dir().join("f")).expect("create");
        fs.sync_dir(&dir()).expect("sync dir");
        file.write_all_at(b"abc", 0).expect("write");
        fs.fail_next_syncs(1);
        assert!(file.sync_data().is_err());
        assert_eq!(fs.data_sync_count(), 0);
        assert!(file.sync_data().is_ok());
        assert_eq!(fs.data_sync_count(), 1);
    }

    fn clone_inner(fs: &FaultFs) -> Inner {
        let inner = fs.lock();
        Inner {
            live: inner.live.clone(),
            durable: inner.durable.clone(),
            ns_pending: inner.ns_pending.clone(),
            inodes: inner.inodes.clone(),
            next_inode: inner.next_inode,
            dirs: inner.dirs.clone(),
            generation: inner.generation,
            space_limit_bytes: inner.space_limit_bytes,
            failing_syncs: inner.failing_syncs,
            syncs_before_failing: inner.syncs_before_failing,
            data_syncs: inner.data_syncs,
        }
    }
}
