//! The segmented write-ahead log: records of opaque bytes, each with a u64
//! index (a Raft entry, a Paxos slot, a PBFT sequence number), appended in
//! order, made durable in groups, truncated at the tail after a conflict
//! and purged at the head after a snapshot. The byte layout is in
//! [`crate::format`].
//!
//! # Group commit
//!
//! [`Wal::append`] writes a batch of records (to the OS, not yet durably)
//! and [`Wal::sync`] makes *everything appended so far* durable with one
//! `fdatasync`, returning the durable index. A driver thread therefore
//! collects the proposals of many clients, calls `append` once or many
//! times, then `sync` once, and acknowledges exactly the records with an
//! index `<=` the index `sync` returned:
//!
//! ```
//! # fn main() -> Result<(), synod_storage::Error> {
//! # let dir = tempfile::tempdir().map_err(|e| synod_storage::Error::InvalidArgument(e.to_string()))?;
//! use synod_storage::{Wal, WalOptions};
//! let (mut wal, recovered) = Wal::open(dir.path(), WalOptions::default())?;
//! let next = recovered.last_index + 1;
//! wal.append(next, &[b"put a=1".as_slice(), b"put b=2".as_slice()])?;
//! wal.append(next + 2, &[b"put c=3"])?;
//! let durable_index = wal.sync()?; // one fsync for three records
//! assert_eq!(durable_index, next + 2);
//! # Ok(()) }
//! ```
//!
//! To overlap the fsync with the next append (the leader writing its next
//! batch while the previous one is being made durable), split `sync` in
//! three: [`Wal::begin_sync`] (cheap), [`PendingSync::run`] (the fsync, on
//! any thread), [`Wal::finish_sync`] (returns the durable index).
//!
//! # Failures
//!
//! A failed fsync is fatal: the error's [`Error::is_fatal`] is true, the log
//! is poisoned and every later call fails; the caller must stop and recover
//! from disk (never retry an fsync: the kernel may already have dropped the
//! pages it failed to write). New bytes are only ever written past the end
//! of the log; a failed write (a full disk, say) is cut off again and made
//! durable before the error returns, so what was acknowledged is never
//! damaged and the log can go on once space is freed.
//!
//! # Recovery
//!
//! [`Wal::open`] reads every segment, checking headers, checksums and index
//! continuity. A bad record at the very end of the last segment, with no
//! valid record after it, is a write torn by a crash: it is cut off and
//! reported in [`Recovered::torn_tail`]. Anything else — a bad record
//! followed by good ones, a bad header, a gap between segments, a segment
//! whose name and header disagree — is an [`Error::Corrupt`] naming the
//! file and byte offset; nothing is ever skipped. (A bit flip inside the
//! last record of the log cannot be told from a torn write; that record is
//! cut off like one.) Whether the records cut were ever synced — and so
//! may have been acknowledged — the log cannot know; the caller must check
//! [`Recovered::last_index`] against a durable point of its own (the node
//! does: `synod-node`'s `disk` module).
//!
//! # Preallocation
//!
//! The last segment is kept zero-filled up to
//! [`WalOptions::preallocate_bytes`] past its last record (the zeros are
//! written with the records that reach the end of the filled part; the
//! next sync makes them durable). An `fdatasync` after an append that grew
//! the file must also commit the new size and blocks to the filesystem's
//! journal; one after an append into bytes already written need not, which
//! here made syncs about a quarter faster and cheaper in CPU (ext4 on a
//! virtio disk; `fallocate` does not do it, since its unwritten extents
//! change state on the first write). On open, zeros from the end of the last
//! segment's records to the end of its file are this padding: the log ends
//! there, nothing is reported torn, and the padding is kept for the next
//! appends. A segment is cut back to its last record before a new one is
//! started, so only the last segment is ever padded.
//!
//! Two limits follow. Records whose bytes all read back as zeros with only
//! zeros after them (a lost write of synced sectors) cannot be told from
//! padding: the log ends before them and nothing is reported (without
//! padding the same loss was reported as a torn tail). And since appends no
//! longer change the file's size, a crash may keep a later sector of
//! unsynced appends without an earlier one (a disk's volatile cache
//! reorders them): a valid record after the hole is refused as corruption,
//! never cut as a torn tail, since it could as well be acknowledged data
//! after damage. The first needs a disk that lost synced writes, which no
//! checksum at the end of a log can detect; the second may stop a node
//! after a power loss until an operator cuts the log.
//!
//! Memory: the log keeps only a 4-byte offset per record (no payloads);
//! reads go to the file in chunks of [`WalOptions::read_chunk_bytes`].

use crate::error::{Error, Poison, Result};
use crate::format::{
    MAX_PAYLOAD_BYTES, RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN, TEMP_SUFFIX,
    encode_record, encode_segment_header, parse_segment_file_name, segment_file_name,
};
use crate::scan;
use crate::vfs::{StdFs, Vfs, VfsFile, read_exact_at};
use bytes::Bytes;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The source of the padding's zeros. Never written, so it stays on the
/// kernel's shared zero page: a fresh zeroed buffer per padding (calloc,
/// memset, page faults) was about 2% of a follower's CPU under load.
static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// The largest segment size or batch size accepted (1 GiB): offsets are
/// stored in 32 bits, and a segment holds at most one size plus one batch.
pub const MAX_SEGMENT_OR_BATCH_BYTES: u64 = 1 << 30;

/// Tuning for a [`Wal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A new segment is started before an append that would take the
    /// current one past this size (a segment holding a single large batch
    /// may exceed it). Default 64 MiB; at most 1 GiB.
    pub segment_size_bytes: u64,
    /// The most bytes (encoded) one [`Wal::append`] call may write. Default
    /// 64 MiB + 4 KiB (one largest record); at most 1 GiB.
    pub max_batch_bytes: u64,
    /// Bytes read per `read` call when scanning or reading records.
    /// Default 1 MiB.
    pub read_chunk_bytes: u64,
    /// How far past its last record the last segment is kept zero-filled
    /// (see the module docs; never past `segment_size_bytes` unless one
    /// batch is larger). Default 1 MiB; 0 turns preallocation off.
    pub preallocate_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_size_bytes: 64 << 20,
            max_batch_bytes: MAX_PAYLOAD_BYTES + 4096,
            read_chunk_bytes: 1 << 20,
            preallocate_bytes: 1 << 20,
        }
    }
}

impl WalOptions {
    fn validate(&self) -> Result<()> {
        let min_segment = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN;
        if !(min_segment..=MAX_SEGMENT_OR_BATCH_BYTES).contains(&self.segment_size_bytes) {
            return Err(Error::InvalidArgument(format!(
                "segment_size_bytes {} is outside {min_segment}..={MAX_SEGMENT_OR_BATCH_BYTES}",
                self.segment_size_bytes
            )));
        }
        if !(RECORD_HEADER_LEN..=MAX_SEGMENT_OR_BATCH_BYTES).contains(&self.max_batch_bytes) {
            return Err(Error::InvalidArgument(format!(
                "max_batch_bytes {} is outside {RECORD_HEADER_LEN}..={MAX_SEGMENT_OR_BATCH_BYTES}",
                self.max_batch_bytes
            )));
        }
        if self.preallocate_bytes > MAX_SEGMENT_OR_BATCH_BYTES {
            return Err(Error::InvalidArgument(format!(
                "preallocate_bytes {} is over {MAX_SEGMENT_OR_BATCH_BYTES}",
                self.preallocate_bytes
            )));
        }
        if self.read_chunk_bytes == 0 || self.read_chunk_bytes > MAX_SEGMENT_OR_BATCH_BYTES {
            return Err(Error::InvalidArgument(format!(
                "read_chunk_bytes {} is outside 1..={MAX_SEGMENT_OR_BATCH_BYTES}",
                self.read_chunk_bytes
            )));
        }
        Ok(())
    }
}

/// What [`Wal::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Index of the first record (0: the log is empty).
    pub first_index: u64,
    /// Index of the last record (0: the log is empty). Everything in
    /// `first_index..=last_index` is present and now durable.
    pub last_index: u64,
    /// Segment files in the log.
    pub segment_count: usize,
    /// The torn write cut off the end of the log, if there was one.
    pub torn_tail: Option<TornTail>,
    /// Half-created segment files (`.wal.tmp`) that were deleted, and an
    /// empty last segment if one was.
    pub removed_files: Vec<PathBuf>,
}

/// A torn write found and cut off at the end of the log on open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub path: PathBuf,
    /// Where the torn record began (the file now ends here).
    pub offset: u64,
    /// Bytes cut off.
    pub dropped_bytes: u64,
    /// What was wrong with the record.
    pub reason: String,
}

/// One segment file and the offsets of its records.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: Arc<dyn VfsFile>,
    first_index: u64,
    /// `offsets[i]` is where the record with index `first_index + i` starts.
    offsets: Vec<u32>,
    /// Bytes in use (the end of the last record).
    len: u64,
    /// How far the file may extend: `len` plus the zero padding after it
    /// (only the last segment has any; a padding write that failed may have
    /// left less).
    allocated: u64,
}

impl Segment {
    fn count(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// Index of the last record. Only meaningful if `count() > 0`.
    fn last_index(&self) -> u64 {
        self.first_index + self.count() - 1
    }

    fn holds(&self, index: u64) -> bool {
        index >= self.first_index && index - self.first_index < self.count()
    }

    /// Byte range of record `index`, which the segment must hold.
    fn span(&self, index: u64) -> (u64, u64) {
        let i = (index - self.first_index) as usize;
        let start = u64::from(self.offsets[i]);
        let end = self.offsets.get(i + 1).map_or(self.len, |&o| u64::from(o));
        (start, end)
    }
}

/// A segmented write-ahead log. See the module doc.
#[derive(Debug)]
pub struct Wal {
    fs: Arc<dyn Vfs>,
    dir: PathBuf,
    options: WalOptions,
    /// In index order; the last one is appended to. Only the last may be
    /// empty.
    segments: Vec<Segment>,
    /// Every record with an index `<=` this is durable.
    durable_index: u64,
    /// The last segment has writes not yet synced.
    unsynced: bool,
    /// Counts successful appends, so a pipelined sync knows whether more
    /// was written after it started.
    write_count: u64,
    /// Bumped by every truncate and purge: a pipelined sync started before
    /// one must not raise the durable index (the records it covered may be
    /// gone or replaced).
    epoch: u64,
    poison: Poison,
    encode_buf: Vec<u8>,
    /// Segments [`Wal::detach_prefix`] took out, until the purger deletes
    /// them.
    detached: Arc<purge::Detached>,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir` on the real file system,
    /// recovering what is there. See the module doc for what recovery does.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<(Wal, Recovered)> {
        Wal::open_with(Arc::new(StdFs), dir, options)
    }

    /// [`Wal::open`] on any file layer (e.g. [`crate::FaultFs`] in tests).
    pub fn open_with(
        fs: Arc<dyn Vfs>,
        dir: impl AsRef<Path>,
        options: WalOptions,
    ) -> Result<(Wal, Recovered)> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let names = fs.list_dir(&dir).map_err(|e| Error::io("list directory", &dir, e))?;
        let mut removed_files = Vec::new();
        let mut firsts = Vec::new();
        for name in names {
            let path = dir.join(&name);
            if name.ends_with(&format!(".{}{TEMP_SUFFIX}", crate::format::SEGMENT_EXT)) {
                fs.remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
                removed_files.push(path);
                continue;
            }
            match parse_segment_file_name(&name) {
                None => {}
                Some(Ok(first_index)) => firsts.push(first_index),
                Some(Err(())) => {
                    return Err(Error::corrupt(&path, 0, "malformed segment file name"));
                }
            }
        }
        firsts.sort_unstable();

        let mut segments: Vec<Segment> = Vec::with_capacity(firsts.len());
        let mut torn_tail = None;
        for (k, &first_index) in firsts.iter().enumerate() {
            let is_last = k + 1 == firsts.len();
            let path = dir.join(segment_file_name(first_index));
            let file = fs.open_file(&path).map_err(|e| Error::io("open", &path, e))?;
            let segment = recover_segment(
                &path,
                file,
                first_index,
                segments.last(),
                is_last,
                options.read_chunk_bytes,
                &mut torn_tail,
            )?;
            segments.push(segment);
        }
        if segments.last().is_some_and(|s| s.count() == 0) {
            // A crash right after the segment was created; nothing in it was
            // ever acknowledged.
            let empty = segments.pop().expect("checked non-empty");
            fs.remove_file(&empty.path).map_err(|e| Error::io("remove", &empty.path, e))?;
            removed_files.push(empty.path);
        }
        // What we recovered may sit only in the page cache (the previous
        // process was killed before its fsync): make it durable before
        // calling it so. Earlier segments were synced before the next one
        // was created.
        if let Some(last) = segments.last() {
            last.file.sync_data().map_err(|e| Error::fatal("fsync", &last.path, e))?;
        }
        fs.sync_dir(&dir).map_err(|e| Error::fatal("fsync", &dir, e))?;

        let mut wal = Wal {
            fs,
            dir,
            options,
            segments,
            durable_index: 0,
            unsynced: false,
            write_count: 0,
            epoch: 0,
            poison: Poison::default(),
            encode_buf: Vec::new(),
            detached: Arc::default(),
        };
        wal.durable_index = wal.last_index();
        let recovered = Recovered {
            first_index: wal.first_index(),
            last_index: wal.last_index(),
            segment_count: wal.segments.len(),
            torn_tail,
            removed_files,
        };
        Ok((wal, recovered))
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Index of the first record (0: empty).
    pub fn first_index(&self) -> u64 {
        self.segments.iter().find(|s| s.count() > 0).map_or(0, |s| s.first_index)
    }

    /// Index of the last record (0: empty).
    pub fn last_index(&self) -> u64 {
        self.segments.iter().rev().find(|s| s.count() > 0).map_or(0, Segment::last_index)
    }

    /// Every record with an index `<=` this is durable (0: none known).
    pub fn durable_index(&self) -> u64 {
        self.durable_index
    }

    /// Segment files in use.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// True once a fatal error poisoned the log.
    pub fn is_poisoned(&self) -> bool {
        self.poison.is_set()
    }

    /// Appends `payloads` as records `first_index, first_index + 1, ...` and
    /// returns the index of the last one. The records are written but not
    /// yet durable: call [`Wal::sync`] before acknowledging them.
    ///
    /// `first_index` must be `last_index() + 1`, or anything `>= 1` when the
    /// log is empty (e.g. after a snapshot purged everything). Errors
    /// without writing anything if the batch is malformed
    /// ([`Error::InvalidArgument`]); on a write error (e.g.
    /// [`Error::NoSpace`]) the partial write is cut off and made durable
    /// again, so the log is as it was before the call.
    pub fn append<P: AsRef<[u8]>>(&mut self, first_index: u64, payloads: &[P]) -> Result<u64> {
        self.poison.check()?;
        if payloads.is_empty() {
            return Ok(self.last_index());
        }
        self.check_append(first_index, payloads.len() as u64)?;
        let mut buf = std::mem::take(&mut self.encode_buf);
        buf.clear();
        let mut starts = Vec::with_capacity(payloads.len());
        for (i, payload) in payloads.iter().enumerate() {
            let payload = payload.as_ref();
            if payload.len() as u64 > MAX_PAYLOAD_BYTES {
                return Err(Error::InvalidArgument(format!(
                    "record {} has {} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit",
                    first_index + i as u64,
                    payload.len()
                )));
            }
            starts.push(buf.len() as u64);
            encode_record(first_index + i as u64, payload, &mut buf);
            if buf.len() as u64 > self.options.max_batch_bytes {
                return Err(Error::InvalidArgument(format!(
                    "batch is over max_batch_bytes ({}); split it",
                    self.options.max_batch_bytes
                )));
            }
        }
        let result = self.write_batch(first_index, &buf, &starts);
        self.encode_buf = buf;
        result
    }

    fn check_append(&self, first_index: u64, count: u64) -> Result<()> {
        if first_index == 0 {
            return Err(Error::InvalidArgument("record indexes start at 1".into()));
        }
        if first_index.checked_add(count).is_none() {
            return Err(Error::InvalidArgument("record index overflows u64".into()));
        }
        let last_index = self.last_index();
        if last_index != 0 && first_index != last_index + 1 {
            return Err(Error::InvalidArgument(format!(
                "append at index {first_index} does not follow the last index {last_index} \
                 (truncate_suffix first to overwrite, or purge_prefix to skip ahead)"
            )));
        }
        Ok(())
    }

    fn write_batch(&mut self, first_index: u64, buf: &[u8], starts: &[u64]) -> Result<u64> {
        if let Some(last) = self.segments.last()
            && last.count() == 0
            && last.first_index != first_index
        {
            // An empty segment left by a failed append into an empty log,
            // now appended to at another index.
            let empty = self.segments.pop().expect("checked non-empty");
            self.fs
                .remove_file(&empty.path)
                .map_err(|e| self.poison.taint(Error::fatal("remove", &empty.path, e)))?;
        }
        let needs_segment = match self.segments.last() {
            None => true,
            Some(s) => s.count() > 0 && s.len + buf.len() as u64 > self.options.segment_size_bytes,
        };
        if needs_segment {
            self.start_segment(first_index)?;
        }
        let segment = self.segments.last_mut().expect("a segment to append to");
        let at = segment.len;
        if let Err(e) = segment.file.write_all_at(buf, at) {
            return Err(self.roll_back(at, e));
        }
        assert!(at + buf.len() as u64 <= u64::from(u32::MAX), "segment offsets fit in 32 bits");
        segment.offsets.extend(starts.iter().map(|&s| (at + s) as u32));
        segment.len = at + buf.len() as u64;
        self.unsynced = true;
        // Past the padding (or at its very end): pad again, once per
        // `preallocate_bytes`, so the file grows in steps, not per append.
        let target = (segment.len + self.options.preallocate_bytes)
            .min(self.options.segment_size_bytes)
            .min(u64::from(u32::MAX));
        if segment.len >= segment.allocated {
            if target > segment.len {
                // Padding is an optimisation: if it cannot be written (a
                // full disk), the records stand, and appends past what was
                // written extend the file as they would without it. The file
                // may now end anywhere up to `target` (zeros written in part
                // are padding like any other), which is what `allocated`
                // bounds.
                let mut from = segment.len;
                while from < target {
                    let n = (target - from).min(ZEROS.len() as u64);
                    if segment.file.write_all_at(&ZEROS[..n as usize], from).is_err() {
                        break;
                    }
                    from += n;
                }
                segment.allocated = target;
            } else {
                // At the segment's size cap: no padding past it.
                segment.allocated = segment.len;
            }
        }
        self.write_count += 1;
        Ok(first_index + starts.len() as u64 - 1)
    }

    /// After a failed write at `len` in the last segment: cut the file back
    /// to `len` and make that durable, or poison the log if that fails.
    fn roll_back(&mut self, len: u64, cause: std::io::Error) -> Error {
        let segment = self.segments.last_mut().expect("a segment was written");
        segment.allocated = len;
        let segment = self.segments.last().expect("a segment was written");
        if let Err(e) = segment.file.set_len(len) {
            return self.poison.taint(Error::fatal(
                "truncate (rolling back a failed write)",
                &segment.path,
                e,
            ));
        }
        if let Err(e) = segment.file.sync_data() {
            return self.poison.taint(Error::fatal("fsync", &segment.path, e));
        }
        self.unsynced = false;
        self.durable_index = self.last_index();
        Error::io("write", &segment.path, cause)
    }

    /// Seals the last segment (syncing it, so that a later segment never
    /// exists while an earlier one has a torn tail) and creates a new one
    /// whose first record will be `first_index`: temp file, header, fsync,
    /// rename, directory fsync.
    fn start_segment(&mut self, first_index: u64) -> Result<()> {
        // Only the last segment may be padded: cut this one back to its last
        // record, durably (with the sync below) before the next one exists.
        if let Some(last) = self.segments.last_mut()
            && last.allocated > last.len
        {
            last.file
                .set_len(last.len)
                .map_err(|e| self.poison.taint(Error::fatal("truncate", &last.path, e)))?;
            last.allocated = last.len;
            self.unsynced = true;
        }
        self.sync_last()?;
        if self.segments.is_empty() {
            // Detached segments (see `purge`) go first; this segment's
            // directory fsync makes that durable.
            self.detached.remove_all(&*self.fs)?;
        }
        let name = segment_file_name(first_index);
        let temp = self.dir.join(format!("{name}{TEMP_SUFFIX}"));
        let path = self.dir.join(name);
        let file = self.fs.create_file(&temp).map_err(|e| Error::io("create", &temp, e))?;
        if let Err(e) = file.write_all_at(&encode_segment_header(first_index), 0) {
            let _ = self.fs.remove_file(&temp);
            return Err(Error::io("write", &temp, e));
        }
        file.sync_data().map_err(|e| self.poison.taint(Error::fatal("fsync", &temp, e)))?;
        if let Err(e) = self.fs.rename(&temp, &path) {
            let _ = self.fs.remove_file(&temp);
            return Err(Error::io("rename", &temp, e));
        }
        self.sync_dir()?;
        self.segments.push(Segment {
            path,
            file,
            first_index,
            offsets: Vec::new(),
            len: SEGMENT_HEADER_LEN,
            allocated: SEGMENT_HEADER_LEN,
        });
        Ok(())
    }

    fn sync_last(&mut self) -> Result<()> {
        if self.unsynced {
            let segment = self.segments.last().expect("unsynced writes are in a segment");
            segment
                .file
                .sync_data()
                .map_err(|e| self.poison.taint(Error::fatal("fsync", &segment.path, e)))?;
            self.unsynced = false;
        }
        self.durable_index = self.last_index();
        Ok(())
    }

    fn sync_dir(&self) -> Result<()> {
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| self.poison.taint(Error::fatal("fsync", &self.dir, e)))
    }

    /// Makes every record appended so far durable with one `fdatasync`
    /// (none if nothing is pending) and returns the durable index: every
    /// record with an index `<=` it is on disk and may be acknowledged.
    ///
    /// An error here is fatal (see [`Error::is_fatal`]): the log is
    /// poisoned; stop and recover from disk. Never retry.
    pub fn sync(&mut self) -> Result<u64> {
        let pending = self.begin_sync()?;
        self.finish_sync(pending.run())
    }

    /// Starts a sync that can run on another thread while this log keeps
    /// appending (the leader writing its next batch while the previous one
    /// is being made durable): call [`PendingSync::run`] anywhere (it is the
    /// `fdatasync`), then hand its result to [`Wal::finish_sync`], which
    /// returns the durable index. It covers what was appended before this
    /// call ([`PendingSync::index`]); appends made meanwhile need a later
    /// sync. `sync()` is `begin_sync`, `run`, `finish_sync` in a row.
    pub fn begin_sync(&mut self) -> Result<PendingSync> {
        self.poison.check()?;
        let file = match self.segments.last() {
            Some(segment) if self.unsynced => Some((segment.file.clone(), segment.path.clone())),
            _ => None,
        };
        Ok(PendingSync {
            file,
            index: self.last_index(),
            write_count: self.write_count,
            epoch: self.epoch,
        })
    }

    /// Completes a sync started by [`Wal::begin_sync`]; returns the durable
    /// index. A failed fsync is fatal (see [`Wal::sync`]) and poisons the
    /// log.
    pub fn finish_sync(&mut self, done: SyncDone) -> Result<u64> {
        self.poison.check()?;
        if let Err((path, e)) = done.outcome {
            return Err(self.poison.taint(Error::fatal("fsync", &path, e)));
        }
        self.detached.release_through(done.epoch);
        if done.epoch == self.epoch {
            self.durable_index = self.durable_index.max(done.index.min(self.last_index()));
            if done.write_count == self.write_count {
                self.unsynced = false;
            }
        }
        Ok(self.durable_index)
    }

    /// Deletes every record with an index `>= from_index` (a conflicting
    /// suffix), durably before returning (it also makes every record left
    /// durable). A no-op if there is no such record.
    pub fn truncate_suffix(&mut self, from_index: u64) -> Result<()> {
        self.poison.check()?;
        self.epoch += 1;
        if self.last_index() == 0 || from_index > self.last_index() {
            return Ok(());
        }
        // Before anything is deleted: if a step below fails, the durable
        // index must not name records that are gone.
        self.durable_index = self.durable_index.min(from_index - 1);
        // Newest first, so a crash part-way leaves a contiguous log.
        let mut removed = false;
        while let Some(segment) = self.segments.last()
            && (segment.count() == 0 || segment.first_index >= from_index)
        {
            self.fs
                .remove_file(&segment.path)
                .map_err(|e| self.poison.taint(Error::fatal("remove", &segment.path, e)))?;
            self.segments.pop();
            self.unsynced = false;
            removed = true;
        }
        if self.segments.is_empty() {
            // Emptied: detached older segments go too (see `purge`).
            self.detached.remove_all(&*self.fs)?;
        }
        if removed {
            self.sync_dir()?;
        }
        if let Some(segment) = self.segments.last_mut()
            && segment.holds(from_index)
        {
            let (cut, _) = segment.span(from_index);
            segment
                .file
                .set_len(cut)
                .map_err(|e| self.poison.taint(Error::fatal("truncate", &segment.path, e)))?;
            segment.offsets.truncate((from_index - segment.first_index) as usize);
            segment.len = cut;
            segment.allocated = cut;
            self.unsynced = true;
        }
        self.sync_last()
    }

    /// Deletes the segments whose records all have indexes `<= up_to_index`
    /// (after a snapshot covering them is durable). Whole segments only: a
    /// record `<= up_to_index` may remain readable ([`Wal::first_index`]
    /// says what is left). If `up_to_index >= last_index()` every segment
    /// goes and the next append may start at any index.
    ///
    /// Segments are deleted oldest first, so a crash part-way leaves a
    /// contiguous log holding more than was purged; after a restart, call
    /// this again with the snapshot's index (it is idempotent). To leave
    /// the deleting and the directory fsync to another thread, see
    /// [`Wal::detach_prefix`].
    pub fn purge_prefix(&mut self, up_to_index: u64) -> Result<()> {
        self.poison.check()?;
        self.epoch += 1;
        // Older segments detached earlier go first, so that the log stays
        // contiguous on disk.
        let detached = self.detached.remove_all(&*self.fs)?;
        let mut removed = detached > 0;
        while let Some(segment) = self.segments.first()
            && segment.count() > 0
            && segment.last_index() <= up_to_index
        {
            self.fs
                .remove_file(&segment.path)
                .map_err(|e| Error::io("remove", &segment.path, e))?;
            self.segments.remove(0);
            removed = true;
        }
        if self.segments.is_empty() {
            self.unsynced = false;
        }
        if removed {
            // Before the fsync, which may fail.
            self.durable_index = self.durable_index.min(self.last_index());
            self.sync_dir()?;
        }
        Ok(())
    }

    /// The records with indexes in `range`, read lazily in chunks of
    /// [`WalOptions::read_chunk_bytes`]. Errors with [`Error::OutOfRange`]
    /// if `range` reaches outside `first_index()..=last_index()`. A record
    /// that fails its checksum when read is an [`Error::Corrupt`] (fatal:
    /// the log is poisoned).
    pub fn entries(&self, range: impl RangeBounds<u64>) -> Result<Entries<'_>> {
        self.poison.check()?;
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => self.first_index().max(1),
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => self.last_index() + 1,
        };
        if start < end {
            let (first_index, last_index) = (self.first_index(), self.last_index());
            let bad = if last_index == 0 || start < first_index {
                Some(start)
            } else if end - 1 > last_index {
                Some(end - 1)
            } else {
                None
            };
            if let Some(index) = bad {
                return Err(Error::OutOfRange { index, first_index, last_index });
            }
        }
        Ok(Entries { wal: self, next: start, end, chunk: None })
    }

    /// The payload of record `index`.
    pub fn entry(&self, index: u64) -> Result<Bytes> {
        match self.entries(index..=index)?.next() {
            Some(result) => result.map(|(_, payload)| payload),
            None => Err(Error::OutOfRange {
                index,
                first_index: self.first_index(),
                last_index: self.last_index(),
            }),
        }
    }

    fn segment_holding(&self, index: u64) -> &Segment {
        let k = self.segments.partition_point(|s| s.first_index <= index);
        let segment = &self.segments[k.checked_sub(1).expect("index is in the log")];
        assert!(segment.holds(index), "index {index} is in the log");
        segment
    }

    /// Reads the records `from..` of one segment, up to `end` (exclusive)
    /// and about `read_chunk_bytes`, in one read.
    fn read_chunk(&self, from: u64, end: u64) -> Result<Chunk> {
        let segment = self.segment_holding(from);
        let (start_offset, mut end_offset) = segment.span(from);
        let mut last = from;
        let stop = end.min(segment.last_index() + 1);
        while last + 1 < stop {
            let (_, next_end) = segment.span(last + 1);
            if next_end - start_offset > self.options.read_chunk_bytes {
                break;
            }
            last += 1;
            end_offset = next_end;
        }
        let mut buf = vec![0u8; (end_offset - start_offset) as usize];
        read_exact_at(&*segment.file, &mut buf, start_offset).map_err(|e| {
            self.poison.taint(Error::corrupt(
                &segment.path,
                start_offset,
                format!("cannot read back records: {e}"),
            ))
        })?;
        let offsets = (from..=last)
            .map(|i| segment.span(i))
            .map(|(s, e)| (s - start_offset, e - start_offset))
            .collect();
        Ok(Chunk {
            bytes: Bytes::from(buf),
            first_index: from,
            offsets,
            path: segment.path.clone(),
            base: start_offset,
        })
    }
}

/// A sync started by [`Wal::begin_sync`]; `Send`, so it can run on another
/// thread.
#[derive(Debug)]
#[must_use = "run it and pass the result to Wal::finish_sync"]
pub struct PendingSync {
    /// The segment to fsync, if anything is unsynced.
    file: Option<(Arc<dyn VfsFile>, PathBuf)>,
    index: u64,
    write_count: u64,
    epoch: u64,
}

impl PendingSync {
    /// The index this sync makes durable (every record `<=` it).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The `fdatasync`. Blocks; call it from any thread.
    pub fn run(self) -> SyncDone {
        let outcome = match self.file {
            Some((file, path)) => file.sync_data().map_err(|e| (path, e)),
            None => Ok(()),
        };
        SyncDone { outcome, index: self.index, write_count: self.write_count, epoch: self.epoch }
    }
}

/// The result of [`PendingSync::run`], for [`Wal::finish_sync`].
#[derive(Debug)]
#[must_use = "pass it to Wal::finish_sync: a failed fsync must poison the log"]
pub struct SyncDone {
    outcome: std::result::Result<(), (PathBuf, std::io::Error)>,
    index: u64,
    write_count: u64,
    epoch: u64,
}

/// Records read in one go.
struct Chunk {
    bytes: Bytes,
    first_index: u64,
    /// Byte range in `bytes` of each record, from `first_index` on.
    offsets: Vec<(u64, u64)>,
    path: PathBuf,
    /// File offset of `bytes[0]`.
    base: u64,
}

/// An iterator over records, from [`Wal::entries`]: yields `(index,
/// payload)`. Payloads share their read buffer (at most about
/// `read_chunk_bytes`, or one record if larger).
#[derive(Debug)]
pub struct Entries<'a> {
    wal: &'a Wal,
    next: u64,
    end: u64,
    chunk: Option<ChunkDebug>,
}

/// `Chunk` wrapped so `Entries` can derive `Debug` without dumping bytes.
struct ChunkDebug(Chunk);

impl std::fmt::Debug for ChunkDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chunk({} records from {})", self.0.offsets.len(), self.0.first_index)
    }
}

impl Entries<'_> {
    fn read_next(&mut self) -> Result<(u64, Bytes)> {
        let index = self.next;
        let in_chunk = self.chunk.as_ref().is_some_and(|c| {
            index >= c.0.first_index && index - c.0.first_index < c.0.offsets.len() as u64
        });
        if !in_chunk {
            self.chunk = Some(ChunkDebug(self.wal.read_chunk(index, self.end)?));
        }
        let chunk = &self.chunk.as_ref().expect("just read").0;
        let (start, end) = chunk.offsets[(index - chunk.first_index) as usize];
        let record = &chunk.bytes[start as usize..end as usize];
        let header = RecordHeader::decode(record);
        if header.index != index || !header.checksum_matches(record) {
            let reason = format!(
                "record {index} no longer matches its checksum (damaged on disk after it was written)"
            );
            return Err(self.wal.poison.taint(Error::corrupt(
                &chunk.path,
                chunk.base + start,
                reason,
            )));
        }
        Ok((index, chunk.bytes.slice((start + RECORD_HEADER_LEN) as usize..end as usize)))
    }
}

impl Iterator for Entries<'_> {
    type Item = Result<(u64, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let result = self.read_next();
        // Stop after an error.
        self.next = if result.is_ok() { self.next + 1 } else { self.end };
        Some(result)
    }
}

/// Opens one segment on recovery: header, records, continuity with the
/// segment before, and the torn-tail rule for the last segment.
fn recover_segment(
    path: &Path,
    file: Arc<dyn VfsFile>,
    first_index: u64,
    previous: Option<&Segment>,
    is_last: bool,
    chunk_bytes: u64,
    torn_tail: &mut Option<TornTail>,
) -> Result<Segment> {
    let header_first = scan::read_segment_header(&*file, path)?;
    if header_first != first_index {
        return Err(Error::corrupt(
            path,
            16,
            format!("header says first index {header_first} but the file name says {first_index}"),
        ));
    }
    if let Some(previous) = previous {
        if previous.count() == 0 {
            return Err(Error::corrupt(
                &previous.path,
                SEGMENT_HEADER_LEN,
                "segment has no records but is not the last",
            ));
        }
        if first_index != previous.last_index() + 1 {
            return Err(Error::corrupt(
                path,
                16,
                format!(
                    "gap in the log: first index {first_index} does not follow index {} (the last record of {})",
                    previous.last_index(),
                    previous.path.display()
                ),
            ));
        }
    }
    let scanned = scan::scan_records(&*file, path, first_index, chunk_bytes)?;
    let mut len = scanned.end;
    let mut allocated = len;
    match scanned.fault {
        None => {}
        Some(fault) if is_last && scan::all_zero(&*file, path, fault.offset, chunk_bytes)? => {
            // The last segment's preallocated padding: the log ends here.
            allocated = scanned.file_len;
        }
        Some(fault) => {
            if !is_last || !fault.could_be_torn {
                return Err(Error::corrupt(path, fault.offset, fault.reason));
            }
            let next_index = first_index + scanned.offsets.len() as u64;
            if let Some((at, index)) =
                scan::find_record_after(&*file, path, fault.offset + 1, next_index, chunk_bytes)?
            {
                return Err(Error::corrupt(
                    path,
                    fault.offset,
                    format!(
                        "{}, yet a valid record (index {index}) follows at byte {at}: not a torn write",
                        fault.reason
                    ),
                ));
            }
            file.set_len(fault.offset).map_err(|e| Error::io("truncate", path, e))?;
            file.sync_data().map_err(|e| Error::fatal("fsync", path, e))?;
            *torn_tail = Some(TornTail {
                path: path.to_path_buf(),
                offset: fault.offset,
                dropped_bytes: scanned.file_len - fault.offset,
                reason: fault.reason,
            });
            len = fault.offset;
            allocated = len;
        }
    }
    Ok(Segment {
        path: path.to_path_buf(),
        file,
        first_index,
        offsets: scanned.offsets,
        len,
        allocated,
    })
}

mod purge;
pub use purge::WalPurger;

#[cfg(test)]
mod tests;
