//! The on-disk byte layout of the write-ahead log. All integers are
//! little-endian; CRC is CRC-32C (Castagnoli).
//!
//! # Directory
//!
//! One directory per log, holding segment files named
//! `{first_index:020}.wal` (the index of their first record, zero-padded to
//! 20 digits so names sort by index). A segment is created as
//! `{first_index:020}.wal.tmp`, its header written and fsynced, then
//! renamed into place and the directory fsynced, so a `.wal` file always
//! has a complete header; leftover `.wal.tmp` files are deleted on open.
//! Other file names are ignored.
//!
//! # Segment file
//!
//! ```text
//! offset  size  field
//!      0     8  magic          b"SYNODWAL"
//!      8     4  format_version 1
//!     12     4  flags          0 (reserved)
//!     16     8  first_index    index of the first record (>= 1); equals the name
//!     24     4  reserved       0
//!     28     4  header_crc     CRC-32C of bytes 0..28
//!     32     -  records, back to back, up to the end of the file
//! ```
//!
//! # Record
//!
//! ```text
//! offset  size  field
//!      0     4  payload_len    bytes of payload (<= MAX_PAYLOAD_BYTES)
//!      4     8  index          the record's index (>= 1)
//!     12     4  crc            CRC-32C of bytes 0..12 followed by the payload
//!     16     n  payload        opaque bytes
//! ```
//!
//! The checksum covers the length and the index as well as the payload, so
//! a flipped length or index is caught. A run of zeros (a file extended but
//! never written) is never a valid record: its index would be 0.
//!
//! Records are consecutive: a segment's records have indexes
//! `first_index, first_index + 1, ...`, and each segment starts right after
//! the previous one's last record. A segment other than the last is never
//! empty.

/// The first bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SYNODWAL";
/// The layout version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes in a segment header.
pub const SEGMENT_HEADER_LEN: u64 = 32;
/// Bytes in a record header (before the payload).
pub const RECORD_HEADER_LEN: u64 = 16;
/// The largest payload a record may carry (64 MiB).
pub const MAX_PAYLOAD_BYTES: u64 = 64 << 20;

/// Extension of a segment file.
pub const SEGMENT_EXT: &str = "wal";
/// Suffix of a segment being created.
pub const TEMP_SUFFIX: &str = ".tmp";

/// The file name of the segment whose first record is `first_index`.
pub fn segment_file_name(first_index: u64) -> String {
    format!("{first_index:020}.{SEGMENT_EXT}")
}

/// Parses a segment file name: `Some(Ok(first_index))` for a segment,
/// `Some(Err(()))` for a `.wal` file with a malformed name, `None` for any
/// other file.
pub fn parse_segment_file_name(name: &str) -> Option<Result<u64, ()>> {
    let stem = name.strip_suffix(&format!(".{SEGMENT_EXT}"))?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Err(()));
    }
    Some(stem.parse().map_err(|_| ()))
}

/// Encodes a segment header.
pub fn encode_segment_header(first_index: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Decodes a segment header: the first index, or what is wrong and at which
/// byte offset.
pub fn decode_segment_header(header: &[u8]) -> Result<u64, (u64, String)> {
    if header.len() < SEGMENT_HEADER_LEN as usize {
        return Err((
            0,
            format!("file is {} bytes, shorter than the segment header", header.len()),
        ));
    }
    if header[0..8] != SEGMENT_MAGIC {
        return Err((0, "bad magic: not a Synod log segment".into()));
    }
    let stored_crc = u32::from_le_bytes(read4(&header[28..32]));
    let crc = crc32c::crc32c(&header[0..28]);
    if stored_crc != crc {
        return Err((
            28,
            format!(
                "segment header checksum mismatch (stored {stored_crc:#010x}, computed {crc:#010x})"
            ),
        ));
    }
    let version = u32::from_le_bytes(read4(&header[8..12]));
    if version != FORMAT_VERSION {
        return Err((
            8,
            format!("unsupported format version {version} (this build reads {FORMAT_VERSION})"),
        ));
    }
    let first_index = u64::from_le_bytes(read8(&header[16..24]));
    if first_index == 0 {
        return Err((16, "first index 0 (indexes start at 1)".into()));
    }
    Ok(first_index)
}

/// Bytes a record with `payload_len` bytes of payload takes.
pub fn record_len(payload_len: usize) -> u64 {
    RECORD_HEADER_LEN + payload_len as u64
}

/// Appends the encoding of one record to `out`.
pub fn encode_record(index: u64, payload: &[u8], out: &mut Vec<u8>) {
    assert!(payload.len() as u64 <= MAX_PAYLOAD_BYTES, "payload over MAX_PAYLOAD_BYTES");
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..start + 12]), payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload bytes that follow.
    pub payload_len: u64,
    /// The record's index.
    pub index: u64,
    /// The stored checksum.
    pub crc: u32,
}

impl RecordHeader {
    /// Decodes the first [`RECORD_HEADER_LEN`] bytes of `bytes`.
    ///
    /// # Panics
    /// If `bytes` is shorter than a record header (a caller bug).
    pub fn decode(bytes: &[u8]) -> RecordHeader {
        RecordHeader {
            payload_len: u64::from(u32::from_le_bytes(read4(&bytes[0..4]))),
            index: u64::from_le_bytes(read8(&bytes[4..12])),
            crc: u32::from_le_bytes(read4(&bytes[12..16])),
        }
    }

    /// True if `record` (header and payload, as on disk) has a matching
    /// checksum. `record` must be exactly `RECORD_HEADER_LEN +
    /// payload_len` bytes.
    pub fn checksum_matches(&self, record: &[u8]) -> bool {
        record.len() as u64 == RECORD_HEADER_LEN + self.payload_len
            && crc32c::crc32c_append(
                crc32c::crc32c(&record[0..12]),
                &record[RECORD_HEADER_LEN as usize..],
            ) == self.crc
    }
}

fn read4(bytes: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    out.copy_from_slice(&bytes[..4]);
    out
}

fn read8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_header_round_trips_and_rejects_any_flipped_bit() {
        let header = encode_segment_header(42);
        assert_eq!(decode_segment_header(&header), Ok(42));
        for bit in 0..(SEGMENT_HEADER_LEN * 8) {
            let mut bad = header;
            bad[(bit / 8) as usize] ^= 1 << (bit % 8);
            assert!(decode_segment_header(&bad).is_err(), "bit {bit} flip not caught");
        }
    }

    #[test]
    fn record_checksum_covers_length_index_and_payload() {
        let mut buf = Vec::new();
        encode_record(7, b"hello", &mut buf);
        assert_eq!(buf.len() as u64, record_len(5));
        let header = RecordHeader::decode(&buf);
        assert_eq!((header.payload_len, header.index), (5, 7));
        assert!(header.checksum_matches(&buf));
        for bit in 0..(buf.len() * 8) {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let h = RecordHeader::decode(&bad);
            let ok = bad.len() as u64 == RECORD_HEADER_LEN + h.payload_len
                && h.checksum_matches(&bad)
                && h.index == 7;
            assert!(!ok, "bit {bit} flip not caught");
        }
    }

    #[test]
    fn zeros_are_never_a_valid_record() {
        let zeros = [0u8; 16];
        let header = RecordHeader::decode(&zeros);
        assert_eq!(header.index, 0);
        assert!(!header.checksum_matches(&zeros));
    }

    #[test]
    fn segment_names_sort_by_index_and_parse_back() {
        assert_eq!(segment_file_name(5), "00000000000000000005.wal");
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), Some(Ok(u64::MAX)));
        assert_eq!(parse_segment_file_name("12.wal"), Some(Err(())));
        assert_eq!(parse_segment_file_name("99999999999999999999.wal"), Some(Err(())));
        assert_eq!(parse_segment_file_name("00000000000000000005.wal.tmp"), None);
        assert_eq!(parse_segment_file_name("hardstate"), None);
    }
}
