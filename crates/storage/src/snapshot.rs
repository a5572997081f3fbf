//! Snapshots: opaque metadata plus data that may be large, streamed to and
//! from disk. Each snapshot is written to a temporary file, fsynced, renamed
//! to `{index:020}.snap` and the directory fsynced; only then are older
//! snapshots deleted, so a crash at any point leaves at least one whole
//! snapshot (the new one or the previous one). [`SnapshotStore::latest`]
//! opens the one with the highest index, [`SnapshotStore::open_at`] a given
//! one.
//!
//! A host whose protocol must keep the previous snapshot until it has
//! durably adopted the new one finishes with
//! [`SnapshotWriter::finish_keeping_older`] and later calls
//! [`SnapshotStore::remove_older_than`]. A writer may be finished on
//! another thread than the one that began it (everything here is `Send`).
//!
//! Layout of a snapshot file (little-endian, CRC-32C):
//!
//! ```text
//! offset      size      field
//!      0         8      magic       b"SYNODSNP"
//!      8         4      version     1
//!     12         4      meta_len    metadata bytes (<= 64 MiB)
//!     16         8      index       the snapshot's index (as in the file name)
//!     24         8      data_len    data bytes
//!     32         4      data_crc    CRC-32C of the data
//!     36         4      header_crc  CRC-32C of bytes 0..36 followed by the metadata
//!     40  meta_len      metadata
//!      -  data_len      data
//! ```
//!
//! The header is written last (the data length and checksum are known only
//! at the end), before the fsync that precedes the rename.
//!
//! A large snapshot is also synced in pieces while it is written (every
//! [`SYNC_EVERY_BYTES`] by default, [`SnapshotStore::with_sync_every`]),
//! so its dirty pages never pile up: on a file system that commits data
//! before the metadata that names it (ext4's `data=ordered`), one fsync of
//! tens of megabytes at the end makes every other fsync on the disk — the
//! write-ahead log's group commits, the hard state's — wait behind its
//! writeback. Synced as it goes, the final fsync has only the last piece
//! left. (A failed piece fsync is fatal, as any failed fsync.)

use crate::atomic::commit_temp;
use crate::error::{Error, Poison, Result};
use crate::vfs::{StdFs, Vfs, VfsFile, read_exact_at};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: [u8; 8] = *b"SYNODSNP";
const VERSION: u32 = 1;
const HEADER_LEN: u64 = 40;
/// The largest metadata accepted.
const MAX_META_BYTES: usize = 64 << 20;
/// Data is written to the file in pieces of this size.
const WRITE_BUFFER_BYTES: usize = 1 << 20;
/// By default a snapshot being written is synced every this many bytes.
pub const SYNC_EVERY_BYTES: u64 = 4 << 20;
const EXT: &str = "snap";

fn file_name(index: u64) -> String {
    format!("{index:020}.{EXT}")
}

fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(&format!(".{EXT}"))?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

/// The snapshots in one directory.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    fs: Arc<dyn Vfs>,
    dir: PathBuf,
    poison: Arc<Poison>,
    /// A writer syncs its file every this many bytes (0: only at the end).
    sync_every_bytes: u64,
}

impl SnapshotStore {
    /// Opens the store in `dir` on the real file system (creating it),
    /// deleting half-written snapshots left by a crash.
    pub fn open(dir: impl AsRef<Path>) -> Result<SnapshotStore> {
        SnapshotStore::open_with(Arc::new(StdFs), dir)
    }

    /// [`SnapshotStore::open`] on any file layer.
    pub fn open_with(fs: Arc<dyn Vfs>, dir: impl AsRef<Path>) -> Result<SnapshotStore> {
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        for name in fs.list_dir(&dir).map_err(|e| Error::io("list directory", &dir, e))? {
            if name.ends_with(&format!(".{EXT}.tmp")) {
                let path = dir.join(name);
                fs.remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            }
        }
        Ok(SnapshotStore {
            fs,
            dir,
            poison: Arc::new(Poison::default()),
            sync_every_bytes: SYNC_EVERY_BYTES,
        })
    }

    /// Writers of this store sync their file every `bytes` written (0:
    /// only when finished). Default [`SYNC_EVERY_BYTES`].
    pub fn with_sync_every(mut self, bytes: u64) -> SnapshotStore {
        self.sync_every_bytes = bytes;
        self
    }

    fn snapshot_indexes(&self) -> Result<Vec<u64>> {
        let names =
            self.fs.list_dir(&self.dir).map_err(|e| Error::io("list directory", &self.dir, e))?;
        let mut indexes: Vec<u64> = names.iter().filter_map(|n| parse_file_name(n)).collect();
        indexes.sort_unstable();
        Ok(indexes)
    }

    /// The newest snapshot, if any, open for reading. Its header and
    /// metadata are checked now; its data is checked as it is read.
    pub fn latest(&self) -> Result<Option<SnapshotReader>> {
        self.poison.check()?;
        let Some(&index) = self.snapshot_indexes()?.last() else { return Ok(None) };
        SnapshotReader::open(&*self.fs, &self.dir.join(file_name(index)), index).map(Some)
    }

    /// The snapshot `index`, if the store holds it, open for reading (see
    /// [`SnapshotStore::latest`] for what is checked when).
    pub fn open_at(&self, index: u64) -> Result<Option<SnapshotReader>> {
        self.poison.check()?;
        if !self.snapshot_indexes()?.contains(&index) {
            return Ok(None);
        }
        SnapshotReader::open(&*self.fs, &self.dir.join(file_name(index)), index).map(Some)
    }

    /// [`Error::Poisoned`] once a failed fsync (a writer's piece sync,
    /// say) poisoned the store; Ok otherwise.
    pub fn check_poisoned(&self) -> Result<()> {
        self.poison.check()
    }

    /// The indexes of the snapshots held, ascending.
    pub fn indexes(&self) -> Result<Vec<u64>> {
        self.snapshot_indexes()
    }

    /// Deletes every snapshot below `index` (durably: the directory is
    /// fsynced when something went). Returns how many went.
    pub fn remove_older_than(&self, index: u64) -> Result<usize> {
        self.poison.check()?;
        let mut removed = 0;
        for old in self.snapshot_indexes()?.into_iter().filter(|&i| i < index) {
            let path = self.dir.join(file_name(old));
            self.fs.remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            removed += 1;
        }
        if removed > 0 {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| self.poison.taint(Error::fatal("fsync", &self.dir, e)))?;
        }
        Ok(removed)
    }

    /// Starts writing the snapshot `index` with `meta`; write the data to
    /// the returned writer and call [`SnapshotWriter::finish`]. Dropping the
    /// writer unfinished discards it.
    pub fn begin(&self, index: u64, meta: &[u8]) -> Result<SnapshotWriter> {
        self.poison.check()?;
        if meta.len() > MAX_META_BYTES {
            return Err(Error::InvalidArgument(format!(
                "snapshot metadata of {} bytes is over the {MAX_META_BYTES}-byte limit",
                meta.len()
            )));
        }
        let temp = self.dir.join(format!("{}.tmp", file_name(index)));
        let file = self.fs.create_file(&temp).map_err(|e| Error::io("create", &temp, e))?;
        let mut writer = SnapshotWriter {
            store: self.clone(),
            file,
            temp,
            index,
            meta: meta.to_vec(),
            buffer: Vec::with_capacity(WRITE_BUFFER_BYTES),
            written: HEADER_LEN,
            synced: 0,
            data_len: 0,
            data_crc: 0,
            done: false,
        };
        // The header is rewritten at the end; the metadata goes in now.
        let mut head = vec![0u8; HEADER_LEN as usize];
        head.extend_from_slice(meta);
        writer.file.write_all_at(&head, 0).map_err(|e| Error::io("write", &writer.temp, e))?;
        writer.written = head.len() as u64;
        Ok(writer)
    }
}

/// A snapshot being written: an [`io::Write`] for its data.
#[derive(Debug)]
pub struct SnapshotWriter {
    store: SnapshotStore,
    file: Arc<dyn VfsFile>,
    temp: PathBuf,
    index: u64,
    meta: Vec<u8>,
    buffer: Vec<u8>,
    /// Bytes in the file so far.
    written: u64,
    /// Bytes in the file when it was last synced.
    synced: u64,
    data_len: u64,
    data_crc: u32,
    done: bool,
}

impl SnapshotWriter {
    fn flush_buffer(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            self.file.write_all_at(&self.buffer, self.written)?;
            self.written += self.buffer.len() as u64;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Syncs what was written since the last piece once it reaches the
    /// store's piece size (see the module doc).
    fn sync_piece(&mut self) -> io::Result<()> {
        let every = self.store.sync_every_bytes;
        if every > 0 && self.written - self.synced >= every {
            if let Err(e) = self.file.sync_data() {
                let error = self.store.poison.taint(Error::fatal("fsync", &self.temp, e));
                return Err(io::Error::other(error));
            }
            self.synced = self.written;
        }
        Ok(())
    }

    /// Completes the snapshot: writes the header, fsyncs, renames it into
    /// place, fsyncs the directory, and then deletes older snapshots. When
    /// this returns Ok the snapshot is durable and is what
    /// [`SnapshotStore::latest`] opens. (Failing to delete an older
    /// snapshot is not an error; the next `finish` tries again.)
    pub fn finish(self) -> Result<()> {
        let store = self.store.clone();
        let index = self.index;
        self.finish_keeping_older()?;
        let mut removed = false;
        for other in store.snapshot_indexes()? {
            if other != index {
                removed |= store.fs.remove_file(&store.dir.join(file_name(other))).is_ok();
            }
        }
        if removed {
            store
                .fs
                .sync_dir(&store.dir)
                .map_err(|e| store.poison.taint(Error::fatal("fsync", &store.dir, e)))?;
        }
        Ok(())
    }

    /// [`SnapshotWriter::finish`] without deleting any other snapshot: when
    /// this returns Ok the snapshot is durable under its name, and every
    /// snapshot held before is still there (delete them with
    /// [`SnapshotStore::remove_older_than`] once they are no longer needed).
    pub fn finish_keeping_older(mut self) -> Result<()> {
        self.store.poison.check()?;
        self.flush_buffer().map_err(|e| Error::io("write", &self.temp, e))?;
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&(self.meta.len() as u32).to_le_bytes());
        header.extend_from_slice(&self.index.to_le_bytes());
        header.extend_from_slice(&self.data_len.to_le_bytes());
        header.extend_from_slice(&self.data_crc.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header), &self.meta);
        header.extend_from_slice(&crc.to_le_bytes());
        self.file.write_all_at(&header, 0).map_err(|e| Error::io("write", &self.temp, e))?;
        let store = self.store.clone();
        let path = store.dir.join(file_name(self.index));
        commit_temp(&*store.fs, &*self.file, &self.temp, &path, &store.dir, &store.poison)?;
        self.done = true;
        Ok(())
    }
}

impl io::Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(buf);
        self.data_len += buf.len() as u64;
        self.data_crc = crc32c::crc32c_append(self.data_crc, buf);
        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.flush_buffer()?;
            self.sync_piece()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buffer()
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.store.fs.remove_file(&self.temp);
        }
    }
}

/// A snapshot open for reading: its metadata, and an [`io::Read`] over its
/// data that fails with `InvalidData` if the data does not match its
/// checksum once read to the end.
#[derive(Debug)]
pub struct SnapshotReader {
    file: Arc<dyn VfsFile>,
    path: PathBuf,
    index: u64,
    meta: Vec<u8>,
    data_start: u64,
    data_len: u64,
    data_crc: u32,
    position: u64,
    running_crc: u32,
}

impl SnapshotReader {
    fn open(fs: &dyn Vfs, path: &Path, index: u64) -> Result<SnapshotReader> {
        let file = fs.open_file(path).map_err(|e| Error::io("open", path, e))?;
        let file_len = file.len().map_err(|e| Error::io("stat", path, e))?;
        if file_len < HEADER_LEN {
            return Err(Error::corrupt(path, 0, "snapshot file shorter than its header"));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        read_exact_at(&*file, &mut header, 0).map_err(|e| Error::io("read", path, e))?;
        if header[0..8] != MAGIC {
            return Err(Error::corrupt(path, 0, "bad magic: not a Synod snapshot"));
        }
        let u32_at = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let meta_len = u64::from(u32_at(12));
        let data_len = u64_at(24);
        if meta_len > MAX_META_BYTES as u64 || HEADER_LEN + meta_len > file_len {
            return Err(Error::corrupt(
                path,
                12,
                format!("metadata length {meta_len} does not fit the file"),
            ));
        }
        let mut meta = vec![0u8; meta_len as usize];
        read_exact_at(&*file, &mut meta, HEADER_LEN).map_err(|e| Error::io("read", path, e))?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header[0..36]), &meta);
        if crc != u32_at(36) {
            return Err(Error::corrupt(path, 36, "snapshot header checksum mismatch"));
        }
        if u32_at(8) != VERSION {
            return Err(Error::corrupt(
                path,
                8,
                format!("unsupported snapshot version {}", u32_at(8)),
            ));
        }
        if u64_at(16) != index {
            return Err(Error::corrupt(
                path,
                16,
                format!("header says index {} but the name says {index}", u64_at(16)),
            ));
        }
        if HEADER_LEN + meta_len + data_len != file_len {
            return Err(Error::corrupt(
                path,
                24,
                format!("data length {data_len} does not match the file's {file_len} bytes"),
            ));
        }
        Ok(SnapshotReader {
            file,
            path: path.to_path_buf(),
            index,
            meta,
            data_start: HEADER_LEN + meta_len,
            data_len,
            data_crc: u32_at(32),
            position: 0,
            running_crc: 0,
        })
    }

    /// The snapshot's index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The snapshot's metadata.
    pub fn meta(&self) -> &[u8] {
        &self.meta
    }

    /// Bytes of data.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl io::Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.data_len - self.position;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(left) as usize;
        let n = self.file.read_at(&mut buf[..want], self.data_start + self.position)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("snapshot {} ended early", self.path.display()),
            ));
        }
        self.running_crc = crc32c::crc32c_append(self.running_crc, &buf[..n]);
        self.position += n as u64;
        if self.position == self.data_len && self.running_crc != self.data_crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("corrupt snapshot {}: data checksum mismatch", self.path.display()),
            ));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FaultFs;
    use std::io::{Read, Write};

    fn dir() -> PathBuf {
        PathBuf::from("/node/snap")
    }

    fn write_snapshot(store: &SnapshotStore, index: u64, meta: &[u8], data: &[u8]) -> Result<()> {
        let mut writer = store.begin(index, meta)?;
        for piece in data.chunks(1000) {
            writer.write_all(piece).map_err(|e| Error::io("write", Path::new("test"), e))?;
        }
        writer.finish()
    }

    fn read_latest(store: &SnapshotStore) -> Option<(u64, Vec<u8>, Vec<u8>)> {
        let mut reader = store.latest().expect("latest")?;
        let mut data = Vec::new();
        reader.read_to_end(&mut data).expect("read data");
        Some((reader.index(), reader.meta().to_vec(), data))
    }

    #[test]
    fn a_snapshot_round_trips_and_replaces_the_previous_one() {
        let fs = FaultFs::new();
        let store = SnapshotStore::open_with(Arc::new(fs.clone()), dir()).expect("open");
        assert!(read_latest(&store).is_none());
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        write_snapshot(&store, 10, b"meta-10", &data).expect("write");
        write_snapshot(&store, 20, b"meta-20", &data[..5]).expect("write");
        assert_eq!(read_latest(&store), Some((20, b"meta-20".to_vec(), data[..5].to_vec())));
        assert_eq!(fs.file_names(&dir()), vec![file_name(20)], "the old snapshot is deleted");
    }

    #[test]
    fn finishing_keeping_older_keeps_the_previous_one_until_it_is_removed() {
        let fs = FaultFs::new();
        let store = SnapshotStore::open_with(Arc::new(fs.clone()), dir()).expect("open");
        write_snapshot(&store, 10, b"m10", b"ten").expect("write");
        // Begun here, finished on another thread, keeping snapshot 10.
        let mut writer = store.begin(20, b"m20").expect("begin");
        writer.write_all(b"twenty").expect("write");
        std::thread::spawn(move || writer.finish_keeping_older())
            .join()
            .expect("thread")
            .expect("finish");
        assert_eq!(store.indexes().expect("list"), vec![10, 20]);
        for seed in 0..10 {
            fs.crash(seed);
            let store = SnapshotStore::open_with(Arc::new(fs.clone()), dir()).expect("open");
            assert_eq!(store.indexes().expect("list"), vec![10, 20], "both survive a crash");
        }
        let mut ten = store.open_at(10).expect("open").expect("held");
        let mut data = Vec::new();
        ten.read_to_end(&mut data).expect("read");
        assert_eq!((ten.index(), ten.meta(), data.as_slice()), (10, &b"m10"[..], &b"ten"[..]));
        assert!(store.open_at(15).expect("open").is_none());
        assert_eq!(read_latest(&store).map(|s| s.0), Some(20));
        assert_eq!(store.remove_older_than(20).expect("remove"), 1);
        assert_eq!(store.remove_older_than(20).expect("remove"), 0);
        fs.crash(0);
        let store = SnapshotStore::open_with(Arc::new(fs.clone()), dir()).expect("open");
        assert_eq!(store.indexes().expect("list"), vec![20], "the removal was durable");
    }

    #[test]
    fn a_crash_during_a_new_snapshot_keeps_the_previous_one() {
        let fs = FaultFs::new();
        let store = SnapshotStore::open_with(Arc::new(fs.clone()), dir()).expect("open");
        write_snapshot(&store, 10, b"old", b"old data").expect("write");
        for seed in 0..20 {
            let mut writer = store.begin(20, b"new").expect("begin");
            writer.write_all(b"new data, never finished").expect("write");
            writer.flush().expect("flush");
            fs.crash(seed);
            drop(writer);
            let store = SnapshotStore::open_with(Arc::new(fs.clone()), dir()).expect("open");
            assert_eq!(read_latest(&store), Some((10, b"old".to_vec(), b"old data".to_vec())));
            assert_eq!(fs.file_names(&dir()), vec![file_name(10)], "the temp file is deleted");
        }
    }

    #[test]
    fn a_finished_snapshot_survives_a_crash_whole() {
        for seed in 0..20 {
            let fs = FaultFs::new();
            let store = SnapshotStore::open_with(Arc::new(fs.clone()), dir()).expect("open");
            write_snapshot(&store, 10, b"old", b"old data").expect("write");
            write_snapshot(&store, 20, b"new", b"new data").expect("write");
            fs.crash(seed);
            let store = SnapshotStore::open_with(Arc::new(fs.clone()), dir()).expect("open");
            assert_eq!(read_latest(&store), Some((20, b"new".to_vec(), b"new data".to_vec())));
        }
    }

    #[test]
    fn a_flipped_data_bit_fails_the_read_and_a_flipped_header_bit_fails_the_open() {
        let fs = FaultFs::new();
        let store = SnapshotStore::open_with(Arc::new(fs.clone()), dir()).expect("open");
        write_snapshot(&store, 7, b"m", b"some data").expect("write");
        let path = dir().join(file_name(7));
        for bit in 0..((HEADER_LEN + 1) * 8) {
            assert!(fs.flip_bit(&path, bit));
            assert!(matches!(store.latest(), Err(Error::Corrupt { .. })), "header bit {bit}");
            assert!(fs.flip_bit(&path, bit));
        }
        assert!(fs.flip_bit(&path, (HEADER_LEN + 1 + 3) * 8));
        let mut reader = store.latest().expect("open").expect("a snapshot");
        let err = reader.read_to_end(&mut Vec::new()).expect_err("checksum");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_full_disk_fails_the_snapshot_and_keeps_the_previous_one() {
        let fs = FaultFs::new();
        let store = SnapshotStore::open_with(Arc::new(fs.clone()), dir()).expect("open");
        write_snapshot(&store, 10, b"old", b"old data").expect("write");
        fs.set_space_limit(Some(fs.used_bytes() + 100));
        let err = write_snapshot(&store, 20, b"new", &[7u8; 5000]).expect_err("disk full");
        assert!(!err.is_fatal(), "{err}");
        fs.set_space_limit(None);
        assert_eq!(read_latest(&store), Some((10, b"old".to_vec(), b"old data".to_vec())));
        assert_eq!(fs.file_names(&dir()), vec![file_name(10)]);
    }

    #[test]
    fn a_large_snapshot_is_synced_in_pieces_as_it_is_written() {
        let fs = FaultFs::new();
        let store = SnapshotStore::open_with(Arc::new(fs.clone()), dir())
            .expect("open")
            .with_sync_every(2 << 20);
        let data: Vec<u8> = (0..9_000_000u32).map(|i| (i % 241) as u8).collect();
        let mut writer = store.begin(5, b"m").expect("begin");
        let mut syncs_before = Vec::new();
        for piece in data.chunks(1 << 20) {
            writer.write_all(piece).expect("write");
            syncs_before.push(fs.data_sync_count());
        }
        // One sync per 2 MiB written (the buffer goes out every 1 MiB),
        // while it is written: 9 MB makes 4 of them before the finish.
        assert_eq!(fs.data_sync_count(), 4, "{syncs_before:?}");
        assert!(syncs_before.windows(2).all(|w| w[1] - w[0] <= 1), "{syncs_before:?}");
        writer.finish().expect("finish");
        assert_eq!(fs.data_sync_count(), 5, "and one at the end");
        assert_eq!(read_latest(&store), Some((5, b"m".to_vec(), data.clone())));
        // Piece syncs off: only the final one.
        let store = store.with_sync_every(0);
        write_snapshot(&store, 6, b"", &data).expect("write");
        assert_eq!(fs.data_sync_count(), 6);
        // A crash right after a piece sync keeps the previous snapshot.
        let mut writer = store.clone().with_sync_every(1 << 20).begin(7, b"").expect("begin");
        writer.write_all(&data[..3 << 20]).expect("write");
        drop(writer);
        fs.crash(3);
        let store = SnapshotStore::open_with(Arc::new(fs.clone()), dir()).expect("reopen");
        assert_eq!(read_latest(&store).map(|(i, _, d)| (i, d.len())), Some((6, data.len())));
    }

    #[test]
    fn a_failed_piece_sync_is_fatal_and_poisons_the_store() {
        let fs = FaultFs::new();
        let store = SnapshotStore::open_with(Arc::new(fs.clone()), dir())
            .expect("open")
            .with_sync_every(1 << 20);
        let mut writer = store.begin(5, b"").expect("begin");
        fs.fail_next_syncs(1);
        let err = writer.write_all(&vec![7u8; 2 << 20]).expect_err("the piece sync fails");
        assert!(err.to_string().contains("fsync"), "{err}");
        assert!(store.check_poisoned().is_err());
        assert!(writer.finish().is_err_and(|e| e.is_fatal()));
        assert!(store.begin(6, b"").is_err_and(|e| e.is_fatal()), "poisoned");
    }
}
