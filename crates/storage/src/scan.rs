//! Reading a segment back on open: checking its header, walking its records
//! with bounded memory, and telling a torn tail (a write cut short by a
//! crash) from corruption (anything else).

use crate::error::{Error, Result};
use crate::format::{
    MAX_PAYLOAD_BYTES, RECORD_HEADER_LEN, RecordHeader, SEGMENT_HEADER_LEN, decode_segment_header,
};
use crate::vfs::{VfsFile, read_exact_at};
use std::io;
use std::path::Path;

/// A sliding read buffer over a file: sequential reads of small pieces cost
/// one `read_at` per `chunk_bytes`. Memory: at most
/// `max(chunk_bytes, largest piece asked for)`.
pub(crate) struct Window<'a> {
    file: &'a dyn VfsFile,
    file_len: u64,
    chunk_bytes: u64,
    start: u64,
    buf: Vec<u8>,
}

impl<'a> Window<'a> {
    pub(crate) fn new(file: &'a dyn VfsFile, file_len: u64, chunk_bytes: u64) -> Window<'a> {
        Window { file, file_len, chunk_bytes: chunk_bytes.max(64), start: 0, buf: Vec::new() }
    }

    /// The bytes `offset..offset + len`, or `None` if they run past the end
    /// of the file.
    pub(crate) fn get(&mut self, offset: u64, len: u64) -> io::Result<Option<&[u8]>> {
        let Some(end) = offset.checked_add(len) else { return Ok(None) };
        if end > self.file_len {
            return Ok(None);
        }
        let buffered_end = self.start + self.buf.len() as u64;
        if offset < self.start || end > buffered_end {
            let want = len.max(self.chunk_bytes).min(self.file_len - offset);
            self.buf.resize(want as usize, 0);
            read_exact_at(self.file, &mut self.buf, offset)?;
            self.start = offset;
        }
        let from = (offset - self.start) as usize;
        Ok(Some(&self.buf[from..from + len as usize]))
    }

    /// The bytes `offset..offset + len`, which the caller knows are within
    /// the length the window was opened with: a read error, or a file that
    /// has become shorter since, is an error naming `path`.
    fn get_within(&mut self, offset: u64, len: u64, path: &Path) -> Result<&[u8]> {
        self.get(offset, len)
            .map_err(|e| Error::io("read", path, e))?
            .ok_or_else(|| Error::corrupt(path, offset, "file shrank while being read"))
    }
}

/// Reads and checks a segment's header; returns its first index.
pub(crate) fn read_segment_header(file: &dyn VfsFile, path: &Path) -> Result<u64> {
    let file_len = file.len().map_err(|e| Error::io("stat", path, e))?;
    let mut header = vec![0u8; SEGMENT_HEADER_LEN.min(file_len) as usize];
    read_exact_at(file, &mut header, 0).map_err(|e| Error::io("read", path, e))?;
    decode_segment_header(&header).map_err(|(offset, reason)| Error::corrupt(path, offset, reason))
}

/// Why a segment's records stop before the end of the file.
#[derive(Debug)]
pub(crate) struct Fault {
    /// Offset of the first bad record.
    pub offset: u64,
    /// What is wrong with it.
    pub reason: String,
    /// True if a crash in the middle of writing could explain it (a short
    /// or checksum-failing record); false if not (a record with a valid
    /// checksum but the wrong index).
    pub could_be_torn: bool,
}

/// The records found in a segment.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// Byte offset of each good record.
    pub offsets: Vec<u32>,
    /// Offset just past the last good record.
    pub end: u64,
    /// The file's length.
    pub file_len: u64,
    /// Why the scan stopped before `file_len`, if it did.
    pub fault: Option<Fault>,
}

/// Walks the records of a segment whose header said `first_index`.
pub(crate) fn scan_records(
    file: &dyn VfsFile,
    path: &Path,
    first_index: u64,
    chunk_bytes: u64,
) -> Result<Scanned> {
    let file_len = file.len().map_err(|e| Error::io("stat", path, e))?;
    if file_len > u64::from(u32::MAX) {
        return Err(Error::corrupt(path, 0, format!("segment is {file_len} bytes, over 4 GiB")));
    }
    let mut window = Window::new(file, file_len, chunk_bytes);
    let mut offsets = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN;
    let mut expected_index = first_index;
    let fault = loop {
        if offset == file_len {
            break None;
        }
        match check_record(&mut window, offset, path)? {
            Err(reason) => break Some(Fault { offset, reason, could_be_torn: true }),
            Ok((index, _)) if index != expected_index => {
                break Some(Fault {
                    offset,
                    reason: format!(
                        "record has a valid checksum but index {index} where {expected_index} was expected"
                    ),
                    could_be_torn: false,
                });
            }
            Ok((_, record_len)) => {
                offsets.push(offset as u32);
                offset += record_len;
                expected_index += 1;
            }
        }
    };
    Ok(Scanned { offsets, end: offset, file_len, fault })
}

/// Checks the record at `offset`: `Ok(Ok((index, bytes)))` if it is whole
/// and its checksum matches, `Ok(Err(reason))` if not.
fn check_record(
    window: &mut Window<'_>,
    offset: u64,
    path: &Path,
) -> Result<Result<(u64, u64), String>> {
    let left = window.file_len - offset;
    let header =
        match window.get(offset, RECORD_HEADER_LEN).map_err(|e| Error::io("read", path, e))? {
            Some(bytes) => RecordHeader::decode(bytes),
            None => return Ok(Err(format!("record header cut short ({left} bytes left)"))),
        };
    if header.payload_len > MAX_PAYLOAD_BYTES {
        return Ok(Err(format!("implausible payload length {}", header.payload_len)));
    }
    let record_len = RECORD_HEADER_LEN + header.payload_len;
    if record_len > left {
        return Ok(Err(format!("record of {record_len} bytes cut short ({left} bytes left)")));
    }
    let record = match window.get(offset, record_len).map_err(|e| Error::io("read", path, e))? {
        Some(bytes) => bytes,
        None => return Ok(Err("record cut short".into())),
    };
    if header.index == 0 || !header.checksum_matches(record) {
        return Ok(Err("record checksum mismatch".into()));
    }
    Ok(Ok((header.index, record_len)))
}

/// Looks for any valid record with an index of at least `min_index`
/// starting at or after `from`: its offset and index. Used to tell a torn
/// tail (nothing valid follows) from damage in the middle of the log.
pub(crate) fn find_record_after(
    file: &dyn VfsFile,
    path: &Path,
    from: u64,
    min_index: u64,
    chunk_bytes: u64,
) -> Result<Option<(u64, u64)>> {
    let file_len = file.len().map_err(|e| Error::io("stat", path, e))?;
    let mut window = Window::new(file, file_len, chunk_bytes);
    let mut offset = from;
    while offset + RECORD_HEADER_LEN <= file_len {
        let header = RecordHeader::decode(window.get_within(offset, RECORD_HEADER_LEN, path)?);
        // A record cannot claim an index further ahead than there are bytes.
        let plausible = header.index >= min_index
            && header.index - min_index <= file_len
            && header.payload_len <= file_len - offset - RECORD_HEADER_LEN;
        if plausible && let Ok(Ok((index, _))) = check_record(&mut window, offset, path) {
            return Ok(Some((offset, index)));
        }
        offset += 1;
    }
    Ok(None)
}

/// Whether every byte of the file from `from` to its end is zero (the
/// preallocated padding of a last segment, see [`crate::wal`]).
pub(crate) fn all_zero(
    file: &dyn VfsFile,
    path: &Path,
    from: u64,
    chunk_bytes: u64,
) -> Result<bool> {
    let file_len = file.len().map_err(|e| Error::io("stat", path, e))?;
    let mut window = Window::new(file, file_len, chunk_bytes);
    let step = chunk_bytes.max(64);
    let mut offset = from;
    while offset < file_len {
        let len = step.min(file_len - offset);
        if window.get_within(offset, len, path)?.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        offset += len;
    }
    Ok(true)
}
