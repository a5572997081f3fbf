//! Unit tests of the log on the fault-injecting file system, plus the
//! model-based crash property test, the random-bytes reader test and the
//! SIGKILL child-process test in their own modules.

mod crash_model;
mod kill9;
mod padding;
mod random_bytes;

use super::*;
use crate::FaultFs;

pub(super) fn dir() -> PathBuf {
    PathBuf::from("/node/wal")
}

/// Default options without preallocation.
fn unpadded() -> WalOptions {
    WalOptions { preallocate_bytes: 0, ..WalOptions::default() }
}

pub(super) fn small_segments() -> WalOptions {
    WalOptions {
        segment_size_bytes: 256,
        max_batch_bytes: 64 << 10,
        read_chunk_bytes: 100,
        preallocate_bytes: 96,
    }
}

pub(super) fn open(fs: &FaultFs, options: &WalOptions) -> Result<(Wal, Recovered)> {
    Wal::open_with(Arc::new(fs.clone()), dir(), options.clone())
}

pub(super) fn payload(index: u64, salt: u64) -> Vec<u8> {
    let len = ((index * 7 + salt) % 40) as usize;
    (0..len).map(|i| (index as usize + i + salt as usize) as u8).collect()
}

pub(super) fn read_all(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
    wal.entries(..)
        .expect("range")
        .map(|r| r.map(|(i, p)| (i, p.to_vec())))
        .collect::<Result<_>>()
        .expect("read")
}

pub(super) fn append_range(wal: &mut Wal, from: u64, to: u64) {
    let payloads: Vec<Vec<u8>> = (from..=to).map(|i| payload(i, 0)).collect();
    assert_eq!(wal.append(from, &payloads).expect("append"), to);
}

/// One append per record, so small segments rotate.
pub(super) fn append_each(wal: &mut Wal, from: u64, to: u64) {
    for i in from..=to {
        append_range(wal, i, i);
    }
}

pub(super) fn expected(from: u64, to: u64) -> Vec<(u64, Vec<u8>)> {
    (from..=to).map(|i| (i, payload(i, 0))).collect()
}

#[test]
fn appended_records_read_back_across_segments_and_after_reopen() {
    let fs = FaultFs::new();
    let (mut wal, recovered) = open(&fs, &small_segments()).expect("open");
    assert_eq!((recovered.first_index, recovered.last_index), (0, 0));
    for i in 1..=60 {
        append_range(&mut wal, i, i);
    }
    assert_eq!(wal.sync().expect("sync"), 60);
    assert!(wal.segment_count() > 3, "small segments rotate");
    assert_eq!(read_all(&wal), expected(1, 60));
    assert_eq!(wal.entry(33).expect("entry").to_vec(), payload(33, 0));
    drop(wal);
    let (wal, recovered) = open(&fs, &small_segments()).expect("reopen");
    assert_eq!((recovered.first_index, recovered.last_index), (1, 60));
    assert_eq!(recovered.torn_tail, None);
    assert_eq!(read_all(&wal), expected(1, 60));
    assert_eq!(wal.entries(10..20).expect("range").count(), 10);
}

#[test]
fn one_sync_covers_many_appends() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &WalOptions::default()).expect("open");
    append_range(&mut wal, 1, 1);
    wal.sync().expect("sync");
    let before = fs.data_sync_count();
    for i in 2..=100 {
        append_range(&mut wal, i, i);
    }
    assert_eq!(wal.durable_index(), 1, "nothing acknowledged before the sync");
    assert_eq!(wal.sync().expect("sync"), 100);
    assert_eq!(fs.data_sync_count() - before, 1, "one fdatasync for 99 appends");
    assert_eq!(wal.sync().expect("sync"), 100);
    assert_eq!(fs.data_sync_count() - before, 1, "nothing pending: no fdatasync");
}

#[test]
fn appends_must_be_contiguous() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &WalOptions::default()).expect("open");
    assert!(matches!(wal.append(0, &[b"x"]), Err(Error::InvalidArgument(_))));
    append_range(&mut wal, 5, 6);
    assert!(matches!(wal.append(8, &[b"x"]), Err(Error::InvalidArgument(_))));
    assert!(matches!(wal.append(6, &[b"x"]), Err(Error::InvalidArgument(_))));
    assert_eq!(wal.append(7, &[b"x"]).expect("append"), 7);
    assert!(!wal.is_poisoned());
}

#[test]
fn truncate_suffix_removes_the_conflict_durably() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &small_segments()).expect("open");
    append_each(&mut wal, 1, 40);
    wal.sync().expect("sync");
    wal.truncate_suffix(15).expect("truncate");
    assert_eq!(wal.last_index(), 14);
    assert_eq!(wal.durable_index(), 14);
    let replacement: Vec<Vec<u8>> = (15..=20).map(|i| payload(i, 9)).collect();
    wal.append(15, &replacement).expect("append");
    fs.crash(3);
    let (wal, _) = open(&fs, &small_segments()).expect("reopen");
    let got = read_all(&wal);
    assert_eq!(got[..14], expected(1, 14)[..]);
    for (index, bytes) in &got[14..] {
        assert_eq!(*bytes, payload(*index, 9), "old conflicting record {index} came back");
    }
}

#[test]
fn truncating_everything_lets_the_log_restart_anywhere() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &small_segments()).expect("open");
    append_each(&mut wal, 1, 30);
    wal.truncate_suffix(1).expect("truncate");
    assert_eq!((wal.first_index(), wal.last_index()), (0, 0));
    append_range(&mut wal, 100, 110);
    assert_eq!(wal.sync().expect("sync"), 110);
    drop(wal);
    let (wal, recovered) = open(&fs, &small_segments()).expect("reopen");
    assert_eq!((recovered.first_index, recovered.last_index), (100, 110));
    assert_eq!(read_all(&wal), expected(100, 110));
}

#[test]
fn purge_prefix_deletes_whole_segments_only() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &small_segments()).expect("open");
    append_each(&mut wal, 1, 60);
    wal.sync().expect("sync");
    let segments = wal.segment_count();
    wal.purge_prefix(30).expect("purge");
    assert!(wal.segment_count() < segments);
    assert!(wal.first_index() > 1 && wal.first_index() <= 31, "first index {}", wal.first_index());
    assert!(matches!(wal.entry(1), Err(Error::OutOfRange { .. })));
    let first = wal.first_index();
    assert_eq!(read_all(&wal), expected(first, 60));
    // Purging past the end empties the log; it continues after the snapshot.
    wal.purge_prefix(1000).expect("purge");
    assert_eq!((wal.first_index(), wal.last_index(), wal.segment_count()), (0, 0, 0));
    append_range(&mut wal, 1001, 1005);
    wal.sync().expect("sync");
    drop(wal);
    let (wal, _) = open(&fs, &small_segments()).expect("reopen");
    assert_eq!(read_all(&wal), expected(1001, 1005));
}

#[test]
fn a_failed_fsync_is_fatal_and_poisons_the_log() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &WalOptions::default()).expect("open");
    append_range(&mut wal, 1, 3);
    fs.fail_next_syncs(1);
    let err = wal.sync().expect_err("fsync fails");
    assert!(err.is_fatal(), "{err}");
    assert!(err.to_string().contains("fsync"), "{err}");
    assert!(wal.is_poisoned());
    assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })), "never retried");
    assert!(matches!(wal.append(4, &[b"x"]), Err(Error::Poisoned { .. })));
    assert!(matches!(wal.entries(1..2), Err(Error::Poisoned { .. })));
    assert!(matches!(wal.truncate_suffix(1), Err(Error::Poisoned { .. })));
    assert!(matches!(wal.purge_prefix(1), Err(Error::Poisoned { .. })));
    assert_eq!(wal.durable_index(), 0, "nothing reported durable");
}

#[test]
fn a_full_disk_fails_the_append_without_damaging_acknowledged_records() {
    let fs = FaultFs::new();
    // Without padding: preallocated zeros would already hold the records.
    let (mut wal, _) = open(&fs, &unpadded()).expect("open");
    append_range(&mut wal, 1, 10);
    assert_eq!(wal.sync().expect("sync"), 10);
    append_range(&mut wal, 11, 12); // written, not yet synced
    fs.set_space_limit(Some(fs.used_bytes() + 30));
    let big = vec![vec![1u8; 100]; 3];
    let err = wal.append(13, &big).expect_err("disk full");
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    assert!(!err.is_fatal());
    assert_eq!(wal.last_index(), 12);
    // The log goes on once there is room; the partial write is gone.
    fs.set_space_limit(None);
    append_range(&mut wal, 13, 14);
    assert_eq!(wal.sync().expect("sync"), 14);
    fs.crash(11);
    let (wal, recovered) = open(&fs, &WalOptions::default()).expect("reopen");
    assert_eq!(recovered.torn_tail, None);
    assert_eq!(read_all(&wal), expected(1, 14));
}

#[test]
fn a_full_disk_while_starting_a_segment_fails_cleanly() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &small_segments()).expect("open");
    append_range(&mut wal, 1, 8);
    wal.sync().expect("sync");
    fs.set_space_limit(Some(fs.used_bytes()));
    let mut last_ok = 8;
    for i in 9..40 {
        match wal.append(i, &[payload(i, 0)]) {
            Ok(_) => last_ok = i,
            Err(e) => {
                assert!(matches!(e, Error::NoSpace { .. }), "{e}");
                break;
            }
        }
    }
    assert!(!wal.is_poisoned());
    fs.set_space_limit(None);
    append_range(&mut wal, last_ok + 1, last_ok + 20);
    wal.sync().expect("sync");
    drop(wal);
    let (wal, _) = open(&fs, &small_segments()).expect("reopen");
    assert_eq!(read_all(&wal), expected(1, last_ok + 20));
}

#[test]
fn a_torn_final_record_is_cut_off_and_reported() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &unpadded()).expect("open");
    append_range(&mut wal, 1, 5);
    wal.sync().expect("sync");
    let path = dir().join(segment_file_name(1));
    let full = fs.read(&path).expect("segment");
    // Simulate a torn append: half of record 6 made it to disk.
    let mut torn = full.clone();
    let mut record = Vec::new();
    encode_record(6, b"half written", &mut record);
    torn.extend_from_slice(&record[..record.len() / 2]);
    fs.write_durable(&path, &torn);
    drop(wal);
    let (wal, recovered) = open(&fs, &unpadded()).expect("reopen");
    let tail = recovered.torn_tail.expect("a torn tail");
    assert_eq!((tail.path, tail.offset), (path.clone(), full.len() as u64));
    assert_eq!(tail.dropped_bytes, (record.len() / 2) as u64);
    assert_eq!(read_all(&wal), expected(1, 5));
    assert_eq!(fs.read(&path).expect("segment"), full, "the file was cut back");
}

#[test]
fn zeros_after_the_last_record_are_padding_kept_for_the_next_appends() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &WalOptions::default()).expect("open");
    append_range(&mut wal, 1, 5);
    wal.sync().expect("sync");
    let path = dir().join(segment_file_name(1));
    let records_end = wal.segments[0].len;
    let padded = fs.read(&path).expect("segment");
    assert_eq!(padded.len() as u64, records_end + WalOptions::default().preallocate_bytes);
    assert!(padded[records_end as usize..].iter().all(|&b| b == 0), "the padding is zeros");
    drop(wal);
    let (mut wal, recovered) = open(&fs, &WalOptions::default()).expect("reopen");
    assert_eq!(recovered.torn_tail, None, "padding is not a torn write");
    assert_eq!(read_all(&wal), expected(1, 5));
    assert_eq!(fs.read(&path).expect("segment"), padded, "the padding stays");
    append_range(&mut wal, 6, 8);
    wal.sync().expect("sync");
    assert_eq!(fs.read(&path).expect("segment").len(), padded.len(), "written into the padding");
    drop(wal);
    let (wal, recovered) = open(&fs, &WalOptions::default()).expect("reopen");
    assert_eq!(recovered.torn_tail, None);
    assert_eq!(read_all(&wal), expected(1, 8));
}

#[test]
fn padding_larger_than_the_zero_buffer_is_written_in_full() {
    // Not a multiple of the zero buffer (1 MiB), so the last piece is short.
    let options = WalOptions { preallocate_bytes: (5 << 19) + 3, ..WalOptions::default() };
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &options).expect("open");
    append_range(&mut wal, 1, 3);
    wal.sync().expect("sync");
    let records_end = wal.segments[0].len;
    let padded = fs.read(&dir().join(segment_file_name(1))).expect("segment");
    assert_eq!(padded.len() as u64, records_end + options.preallocate_bytes);
    assert!(padded[records_end as usize..].iter().all(|&b| b == 0), "the padding is zeros");
    drop(wal);
    let (wal, recovered) = open(&fs, &options).expect("reopen");
    assert_eq!(recovered.torn_tail, None);
    assert_eq!(read_all(&wal), expected(1, 3));
}

#[test]
fn a_torn_record_in_the_padding_is_cut_off_and_reported() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &WalOptions::default()).expect("open");
    append_range(&mut wal, 1, 5);
    wal.sync().expect("sync");
    let records_end = wal.segments[0].len as usize;
    drop(wal);
    let path = dir().join(segment_file_name(1));
    let mut bytes = fs.read(&path).expect("segment");
    let mut record = Vec::new();
    encode_record(6, b"half written", &mut record);
    let half = record.len() / 2;
    bytes[records_end..records_end + half].copy_from_slice(&record[..half]);
    fs.write_durable(&path, &bytes);
    let (wal, recovered) = open(&fs, &WalOptions::default()).expect("reopen");
    let tail = recovered.torn_tail.expect("a torn tail");
    assert_eq!(tail.offset, records_end as u64);
    assert_eq!(tail.dropped_bytes, (bytes.len() - records_end) as u64);
    assert_eq!(read_all(&wal), expected(1, 5));
    assert_eq!(fs.read(&path).expect("segment").len(), records_end, "cut back to the records");
}

#[test]
fn only_the_last_segment_is_padded() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &small_segments()).expect("open");
    while wal.segment_count() < 3 {
        let next = wal.last_index() + 1;
        append_range(&mut wal, next, next);
    }
    wal.sync().expect("sync");
    for (k, segment) in wal.segments.iter().enumerate() {
        let on_disk = fs.read(&segment.path).expect("segment").len() as u64;
        if k + 1 < wal.segments.len() {
            assert_eq!(on_disk, segment.len, "segment {k} was cut back to its records");
        } else {
            assert!(on_disk > segment.len, "the last segment is padded");
        }
    }
    // Padding in a segment that is not the last is corruption.
    let first = wal.segments[0].path.clone();
    drop(wal);
    let mut bytes = fs.read(&first).expect("segment");
    bytes.extend_from_slice(&[0u8; 64]);
    fs.write_durable(&first, &bytes);
    let err = open(&fs, &small_segments()).expect_err("a padded middle segment");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn a_full_disk_while_padding_keeps_the_records() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &small_segments()).expect("open");
    append_range(&mut wal, 1, 1);
    wal.sync().expect("sync");
    // Room for record 2 past the padding written so far, not for more zeros.
    let path = dir().join(segment_file_name(1));
    let on_disk = fs.read(&path).expect("segment").len() as u64;
    fs.set_space_limit(Some(fs.used_bytes() + 8));
    let mut record = Vec::new();
    encode_record(2, &payload(2, 0), &mut record);
    assert!(wal.segments[0].len + (record.len() as u64) <= on_disk + 8);
    wal.append(2, &[payload(2, 0)]).expect("the record fits; its padding need not");
    fs.set_space_limit(None);
    assert_eq!(wal.sync().expect("sync"), 2);
    append_range(&mut wal, 3, 4);
    wal.sync().expect("sync");
    drop(wal);
    let (wal, recovered) = open(&fs, &small_segments()).expect("reopen");
    assert_eq!(recovered.torn_tail, None);
    assert_eq!(read_all(&wal), expected(1, 4));
}

#[test]
fn a_bad_record_in_the_middle_is_corruption_naming_file_and_offset() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &WalOptions::default()).expect("open");
    append_range(&mut wal, 1, 10);
    wal.sync().expect("sync");
    let path = dir().join(segment_file_name(1));
    let (offset, _) = wal.segments[0].span(4);
    drop(wal);
    assert!(fs.flip_bit(&path, (offset + RECORD_HEADER_LEN) * 8 + 3));
    match open(&fs, &WalOptions::default()) {
        Err(Error::Corrupt { path: p, offset: o, reason }) => {
            assert_eq!((p, o), (path, offset));
            assert!(reason.contains("follows"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_bad_record_at_the_end_of_an_earlier_segment_is_corruption() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &small_segments()).expect("open");
    append_each(&mut wal, 1, 40);
    wal.sync().expect("sync");
    let segment = &wal.segments[0];
    let (path, last) = (segment.path.clone(), segment.last_index());
    let (offset, end) = segment.span(last);
    drop(wal);
    assert!(fs.flip_bit(&path, (end - 1) * 8));
    match open(&fs, &small_segments()) {
        Err(Error::Corrupt { path: p, offset: o, .. }) => assert_eq!((p, o), (path, offset)),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_missing_segment_is_a_gap() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &small_segments()).expect("open");
    append_each(&mut wal, 1, 60);
    wal.sync().expect("sync");
    let missing = wal.segments[1].path.clone();
    let after = wal.segments[2].path.clone();
    drop(wal);
    fs.remove_file(&missing).expect("remove");
    match open(&fs, &small_segments()) {
        Err(Error::Corrupt { path, reason, .. }) => {
            assert_eq!(path, after);
            assert!(reason.contains("gap"), "{reason}");
        }
        other => panic!("expected a gap, got {other:?}"),
    }
}

#[test]
fn a_bad_header_or_misnamed_segment_is_corruption() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &WalOptions::default()).expect("open");
    append_range(&mut wal, 1, 3);
    wal.sync().expect("sync");
    drop(wal);
    let path = dir().join(segment_file_name(1));
    assert!(fs.flip_bit(&path, 3));
    assert!(
        matches!(open(&fs, &WalOptions::default()), Err(Error::Corrupt { path: p, offset: 0, .. }) if p == path)
    );
    assert!(fs.flip_bit(&path, 3));
    let bytes = fs.read(&path).expect("segment");
    fs.remove_file(&path).expect("remove");
    let renamed = dir().join(segment_file_name(2));
    fs.write_durable(&renamed, &bytes);
    assert!(
        matches!(open(&fs, &WalOptions::default()), Err(Error::Corrupt { path: p, offset: 16, .. }) if p == renamed)
    );
    fs.remove_file(&renamed).expect("remove");
    fs.write_durable(&dir().join("7.wal"), b"");
    assert!(matches!(open(&fs, &WalOptions::default()), Err(Error::Corrupt { offset: 0, .. })));
}

#[test]
fn a_corrupt_record_found_by_a_read_poisons_the_log() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &WalOptions::default()).expect("open");
    append_range(&mut wal, 1, 10);
    wal.sync().expect("sync");
    let (offset, _) = wal.segments[0].span(7);
    assert!(fs.flip_bit(&dir().join(segment_file_name(1)), (offset + RECORD_HEADER_LEN) * 8));
    let results: Vec<_> = wal.entries(1..=10).expect("range").collect();
    assert_eq!(results.len(), 7, "six good records, then the error, then stop");
    assert!(matches!(results[6], Err(Error::Corrupt { offset: o, .. }) if o == offset));
    assert!(wal.is_poisoned());
}

#[test]
fn a_crash_after_creating_a_segment_leaves_no_empty_segment() {
    let fs = FaultFs::new();
    // Unpadded: the empty segment below is written by hand, without the
    // cut of the segment before it that `start_segment` makes first.
    let options = WalOptions { preallocate_bytes: 0, ..small_segments() };
    let (mut wal, _) = open(&fs, &options).expect("open");
    append_range(&mut wal, 1, 8);
    wal.sync().expect("sync");
    // Fill past the segment size, then start a segment whose first write
    // fails: an empty last segment exists on disk.
    while wal.segment_count() == 1 {
        let next = wal.last_index() + 1;
        append_range(&mut wal, next, next);
    }
    let last = wal.last_index();
    wal.sync().expect("sync");
    drop(wal);
    let empty = dir().join(segment_file_name(last + 1));
    fs.write_durable(&empty, &encode_segment_header(last + 1));
    let (wal, recovered) = open(&fs, &options).expect("reopen");
    assert_eq!(recovered.removed_files, vec![empty]);
    assert_eq!(read_all(&wal), expected(1, last));
}

#[test]
fn options_out_of_bounds_are_refused() {
    let fs = FaultFs::new();
    let tiny = WalOptions { segment_size_bytes: 10, ..WalOptions::default() };
    assert!(matches!(open(&fs, &tiny), Err(Error::InvalidArgument(_))));
    let huge = WalOptions { max_batch_bytes: 2 << 30, ..WalOptions::default() };
    assert!(matches!(open(&fs, &huge), Err(Error::InvalidArgument(_))));
}

#[test]
fn the_real_file_system_round_trips() {
    let temp = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) = Wal::open(temp.path(), small_segments()).expect("open");
    append_each(&mut wal, 1, 50);
    assert_eq!(wal.sync().expect("sync"), 50);
    wal.truncate_suffix(45).expect("truncate");
    wal.purge_prefix(10).expect("purge");
    let first = wal.first_index();
    drop(wal);
    let (wal, recovered) = Wal::open(temp.path(), small_segments()).expect("reopen");
    assert_eq!((recovered.first_index, recovered.last_index), (first, 44));
    assert_eq!(read_all(&wal), expected(first, 44));
}

#[test]
fn a_pipelined_sync_covers_only_what_came_before_it() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &WalOptions::default()).expect("open");
    append_range(&mut wal, 1, 10);
    let pending = wal.begin_sync().expect("begin");
    assert_eq!(pending.index(), 10);
    append_range(&mut wal, 11, 20); // the next batch, written while the fsync runs
    let done = std::thread::spawn(move || pending.run()).join().expect("sync thread");
    assert_eq!(wal.finish_sync(done).expect("finish"), 10);
    assert_eq!(wal.durable_index(), 10);
    assert_eq!(wal.sync().expect("sync"), 20, "the later appends still need their own fsync");
}

#[test]
fn a_pipelined_sync_started_before_a_truncate_does_not_vouch_for_the_new_records() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &WalOptions::default()).expect("open");
    append_range(&mut wal, 1, 10);
    wal.sync().expect("sync");
    append_range(&mut wal, 11, 20);
    let pending = wal.begin_sync().expect("begin");
    wal.truncate_suffix(15).expect("truncate");
    let replacement: Vec<Vec<u8>> = (15..=20).map(|i| payload(i, 9)).collect();
    wal.append(15, &replacement).expect("append");
    assert_eq!(wal.finish_sync(pending.run()).expect("finish"), 14);
}

#[test]
fn a_failed_pipelined_fsync_is_fatal() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &WalOptions::default()).expect("open");
    append_range(&mut wal, 1, 3);
    let pending = wal.begin_sync().expect("begin");
    fs.fail_next_syncs(1);
    let err = wal.finish_sync(pending.run()).expect_err("fsync failed");
    assert!(err.is_fatal());
    assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
}

fn segment_files(fs: &FaultFs) -> usize {
    fs.file_names(&dir()).iter().filter(|n| n.ends_with(".wal")).count()
}

#[test]
fn a_detached_prefix_leaves_the_log_at_once_and_its_files_after_a_later_sync() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &small_segments()).expect("open");
    append_each(&mut wal, 1, 60);
    wal.sync().expect("sync");
    let (segments, purger) = (wal.segment_count(), wal.purger());
    append_range(&mut wal, 61, 61);
    // A sync begun before the detach does not release it.
    let early = wal.begin_sync().expect("begin");
    let taken = wal.detach_prefix(30).expect("detach");
    wal.finish_sync(early.run()).expect("finish");
    assert!(taken > 0 && wal.segment_count() == segments - taken);
    let first = wal.first_index();
    assert!(first > 1 && first <= 31, "first index {first}");
    assert!(matches!(wal.entry(1), Err(Error::OutOfRange { .. })));
    assert_eq!(read_all(&wal), expected(first, 61));
    assert_eq!(segment_files(&fs), segments);
    assert!(!purger.has_work());
    assert_eq!(purger.run().expect("nothing to do"), 0);
    assert_eq!(segment_files(&fs), segments);
    // One begun after it does.
    append_range(&mut wal, 62, 62);
    wal.sync().expect("sync");
    // Now it may go: the purger deletes exactly those files.
    assert!(purger.has_work());
    assert_eq!(purger.run().expect("purge"), taken);
    assert_eq!(segment_files(&fs), segments - taken);
    assert_eq!(purger.detached_count(), 0);
    // Appends go on as before; a reopen sees the log from `first`.
    append_range(&mut wal, 63, 70);
    wal.sync().expect("sync");
    drop(wal);
    let (wal, recovered) = open(&fs, &small_segments()).expect("reopen");
    assert_eq!((recovered.first_index, recovered.last_index), (first, 70));
    assert_eq!(read_all(&wal), expected(first, 70));
}

#[test]
fn a_crash_between_detaching_and_purging_recovers_every_acknowledged_record() {
    for seed in 0..20 {
        let fs = FaultFs::new();
        let (mut wal, _) = open(&fs, &small_segments()).expect("open");
        append_each(&mut wal, 1, 60);
        wal.sync().expect("sync");
        let purger = wal.purger();
        wal.detach_prefix(30).expect("detach");
        append_each(&mut wal, 61, 65);
        if seed % 2 == 0 {
            // Released but never run; or not even released.
            wal.sync().expect("sync");
            assert!(purger.has_work());
        }
        drop(wal);
        fs.crash(seed);
        let (wal, recovered) = open(&fs, &small_segments()).expect("recover");
        // Every acknowledged record is there, the detached ones too.
        assert_eq!(recovered.first_index, 1, "seed {seed}");
        let last = if seed % 2 == 0 { 65 } else { recovered.last_index };
        assert!(last >= 60, "seed {seed}: {last}");
        assert_eq!(read_all(&wal), expected(1, last), "seed {seed}");
    }
}

#[test]
fn a_crash_after_the_purger_ran_leaves_a_contiguous_log() {
    for seed in 0..20 {
        let fs = FaultFs::new();
        let (mut wal, _) = open(&fs, &small_segments()).expect("open");
        append_each(&mut wal, 1, 60);
        wal.sync().expect("sync");
        let purger = wal.purger();
        wal.detach_prefix(45).expect("detach");
        let first = wal.first_index();
        wal.sync().expect("sync");
        // The purger runs on a thread of its own while the log appends.
        let running = {
            let purger = purger.clone();
            std::thread::spawn(move || purger.run())
        };
        append_each(&mut wal, 61, 80);
        wal.sync().expect("sync");
        assert!(running.join().expect("purger thread").expect("purge") > 0);
        drop(wal);
        fs.crash(seed);
        let (wal, recovered) = open(&fs, &small_segments()).expect("recover");
        assert_eq!(recovered.first_index, first, "seed {seed}");
        assert_eq!(read_all(&wal), expected(first, 80), "seed {seed}");
    }
}

#[test]
fn a_log_emptied_by_a_detach_restarts_anywhere_without_old_segments_beside_it() {
    for restart_at in [1, 7, 41, 1001] {
        let fs = FaultFs::new();
        let (mut wal, _) = open(&fs, &small_segments()).expect("open");
        append_each(&mut wal, 1, 60);
        // Unsynced records in the last segment, which goes too.
        append_range(&mut wal, 61, 62);
        let purger = wal.purger();
        wal.detach_prefix(1000).expect("detach everything");
        assert_eq!((wal.first_index(), wal.last_index(), wal.segment_count()), (0, 0, 0));
        append_range(&mut wal, restart_at, restart_at + 4);
        wal.sync().expect("sync");
        // The old files went before the new segment was made: nothing left
        // to purge, and the new segment (maybe of an old one's name) stays.
        assert_eq!(purger.detached_count(), 0, "restart at {restart_at}");
        assert_eq!(purger.run().expect("purge"), 0);
        drop(wal);
        fs.crash(restart_at);
        let (wal, _) = open(&fs, &small_segments()).expect("recover");
        assert_eq!(read_all(&wal), expected(restart_at, restart_at + 4), "at {restart_at}");
    }
}

#[test]
fn a_failed_directory_fsync_in_the_purger_is_fatal() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &small_segments()).expect("open");
    append_each(&mut wal, 1, 60);
    wal.detach_prefix(30).expect("detach");
    wal.sync().expect("sync");
    fs.fail_next_syncs(1);
    let err = wal.purger().run().expect_err("the directory fsync fails");
    assert!(err.is_fatal(), "{err}");
}
