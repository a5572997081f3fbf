//! Adversarial tests of preallocation (the zero padding kept after the last
//! segment's records): crashes at each step of starting a segment, truncates
//! into and across padded segments, empty and full segments, records that
//! look like zeros, bit flips in and before the padding, and logs written
//! with other `preallocate_bytes` settings.

use super::{append_each, append_range, dir, expected, open, payload, read_all, small_segments};
use crate::format::{encode_record, encode_segment_header, segment_file_name};
use crate::{Error, FaultFs, Wal, WalOptions};

fn file_len(fs: &FaultFs, path: &std::path::Path) -> u64 {
    fs.read(path).expect("file").len() as u64
}

/// Every record the recovered log holds is `payload(i, salt)` for one of
/// `salts`, the log is contiguous, and it holds at least `1..=durable`.
fn check_recovered(wal: &Wal, durable: u64, salts: &[u64], what: &str) {
    let got = read_all(wal);
    for (k, (index, bytes)) in got.iter().enumerate() {
        assert_eq!(*index, got[0].0 + k as u64, "{what}: not contiguous");
        assert!(
            salts.iter().any(|&s| *bytes == payload(*index, s)),
            "{what}: record {index} was never appended"
        );
    }
    if durable > 0 {
        assert!(got.first().is_some_and(|r| r.0 == 1), "{what}: the log lost its start");
        assert!(got.len() as u64 >= durable, "{what}: synced record lost ({} left)", got.len());
        assert_eq!(got[..durable as usize], expected(1, durable)[..], "{what}");
    }
}

#[test]
fn a_crash_at_each_sync_of_starting_a_segment_keeps_every_synced_record() {
    // skip 0: the fsync of the cut of the padded segment fails; 1: the new
    // segment's header fsync; 2: the directory fsync; 3: none of them.
    for skip in 0..4 {
        for seed in 0..40 {
            let what = format!("skip {skip} seed {seed}");
            let fs = FaultFs::new();
            let (mut wal, _) = open(&fs, &small_segments()).expect("open");
            append_range(&mut wal, 1, 2);
            wal.sync().expect("sync");
            let first = dir().join(segment_file_name(1));
            assert!(file_len(&fs, &first) > wal.segments[0].len, "{what}: padded");
            // Unsynced records, then the append that starts segment 2.
            let mut next = 3;
            fs.fail_syncs_after(skip, 1);
            let mut durable = wal.durable_index();
            while wal.segment_count() == 1 {
                match wal.append(next, &[payload(next, 0)]) {
                    Ok(_) => next += 1,
                    Err(e) => {
                        assert!(e.is_fatal(), "{what}: {e}");
                        break;
                    }
                }
                durable = wal.durable_index();
            }
            if !wal.is_poisoned() {
                // The failure is the next sync's.
                assert!(wal.sync().is_err(), "{what}");
            }
            drop(wal);
            fs.crash(seed);
            let (mut wal, recovered) = open(&fs, &small_segments())
                .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
            check_recovered(&wal, durable, &[0], &what);
            assert!(fs.file_names(&dir()).iter().all(|n| !n.ends_with(".tmp")), "{what}");
            // Only the last segment may be padded, and the log goes on.
            for s in &wal.segments[..wal.segments.len() - 1] {
                assert_eq!(file_len(&fs, &s.path), s.len, "{what}: padded middle segment");
            }
            let next = recovered.last_index + 1;
            append_each(&mut wal, next, next + 10);
            wal.sync().expect("sync");
            drop(wal);
            let (wal, recovered) = open(&fs, &small_segments()).expect("reopen");
            assert_eq!(recovered.torn_tail, None, "{what}");
            check_recovered(&wal, next + 10, &[0], &what);
        }
    }
}

#[test]
fn truncating_into_a_padded_segment_then_crashing_keeps_the_prefix() {
    for skip in 0..2 {
        for seed in 0..40 {
            let what = format!("skip {skip} seed {seed}");
            let fs = FaultFs::new();
            let (mut wal, _) = open(&fs, &small_segments()).expect("open");
            append_range(&mut wal, 1, 3);
            wal.sync().expect("sync");
            append_range(&mut wal, 4, 4); // unsynced, in the padding
            fs.fail_syncs_after(skip, 1);
            let truncated = wal.truncate_suffix(2);
            let durable = match &truncated {
                Ok(()) => {
                    let replacement: Vec<Vec<u8>> = (2..=4).map(|i| payload(i, 9)).collect();
                    wal.append(2, &replacement).expect("append");
                    1
                }
                Err(e) => {
                    assert!(e.is_fatal(), "{what}: {e}");
                    1
                }
            };
            drop(wal);
            fs.crash(seed);
            let (wal, _) = open(&fs, &small_segments())
                .unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
            check_recovered(&wal, durable, &[0, 9], &what);
            let got = read_all(&wal);
            if truncated.is_ok() {
                for (index, bytes) in &got[1..] {
                    assert_eq!(*bytes, payload(*index, 9), "{what}: truncated record came back");
                }
            }
        }
    }
}

#[test]
fn truncating_whole_segments_leaves_an_unpadded_last_segment_that_pads_again() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &small_segments()).expect("open");
    append_each(&mut wal, 1, 40);
    wal.sync().expect("sync");
    assert!(wal.segment_count() >= 3);
    let cut_at = wal.segments[1].first_index;
    wal.truncate_suffix(cut_at).expect("truncate");
    assert_eq!((wal.segment_count(), wal.last_index()), (1, cut_at - 1));
    let only = wal.segments[0].path.clone();
    assert_eq!(file_len(&fs, &only), wal.segments[0].len, "it was cut when segment 2 began");
    drop(wal);
    let (mut wal, recovered) = open(&fs, &small_segments()).expect("reopen");
    assert_eq!(recovered.torn_tail, None);
    assert_eq!(read_all(&wal), expected(1, cut_at - 1));
    // The next append that fits pads it again (unless it is at the size cap).
    append_range(&mut wal, cut_at, cut_at);
    wal.sync().expect("sync");
    let s = &wal.segments[0];
    if wal.segment_count() == 1 && s.len < small_segments().segment_size_bytes {
        assert!(file_len(&fs, &only) > s.len, "padded again");
    }
    for seed in 0..20 {
        let next = wal.last_index() + 1;
        append_range(&mut wal, next, next);
        let durable = wal.sync().expect("sync");
        append_range(&mut wal, durable + 1, durable + 2);
        drop(wal);
        fs.crash(seed);
        let (reopened, _) = open(&fs, &small_segments()).expect("recover");
        check_recovered(&reopened, durable, &[0], &format!("seed {seed}"));
        wal = reopened;
    }
}

fn segment_bytes(first_index: u64, records: std::ops::RangeInclusive<u64>) -> Vec<u8> {
    let mut bytes = encode_segment_header(first_index).to_vec();
    for index in records {
        encode_record(index, &payload(index, 0), &mut bytes);
    }
    bytes
}

#[test]
fn an_empty_padded_last_segment_is_removed_with_or_without_a_torn_first_record() {
    for torn in [false, true] {
        let fs = FaultFs::new();
        fs.write_durable(&dir().join(segment_file_name(1)), &segment_bytes(1, 1..=3));
        let mut second = encode_segment_header(4).to_vec();
        if torn {
            let mut record = Vec::new();
            encode_record(4, &payload(4, 0), &mut record);
            second.extend_from_slice(&record[..record.len() / 2]);
        }
        second.extend_from_slice(&[0u8; 100]);
        let second_path = dir().join(segment_file_name(4));
        fs.write_durable(&second_path, &second);
        let (mut wal, recovered) = open(&fs, &small_segments()).expect("open");
        assert_eq!(recovered.removed_files, vec![second_path.clone()]);
        assert_eq!(recovered.torn_tail.is_some(), torn);
        assert_eq!(read_all(&wal), expected(1, 3));
        append_range(&mut wal, 4, 5);
        wal.sync().expect("sync");
        drop(wal);
        let (wal, recovered) = open(&fs, &small_segments()).expect("reopen");
        assert_eq!(recovered.torn_tail, None);
        assert_eq!(read_all(&wal), expected(1, 5));
    }
}

#[test]
fn zero_length_and_zero_filled_payloads_at_the_end_are_records_not_padding() {
    let cases: Vec<Vec<Vec<u8>>> = vec![
        vec![vec![]],
        vec![vec![0; 5000]],
        vec![vec![0; 1000], vec![]],
        vec![vec![], vec![], vec![0; 15]],
        vec![vec![7; 3], vec![0; 60_000]],
    ];
    for options in [WalOptions::default(), small_segments()] {
        for payloads in &cases {
            let fs = FaultFs::new();
            let (mut wal, _) = open(&fs, &options).expect("open");
            for (i, p) in payloads.iter().enumerate() {
                wal.append(i as u64 + 1, &[p]).expect("append");
            }
            wal.sync().expect("sync");
            drop(wal);
            let (wal, recovered) = open(&fs, &options).expect("reopen");
            assert_eq!(recovered.torn_tail, None, "{payloads:?}");
            let got: Vec<Vec<u8>> = read_all(&wal).into_iter().map(|(_, p)| p).collect();
            assert_eq!(&got, payloads);
        }
    }
}

#[test]
fn a_bit_flip_in_the_padding_is_cut_off_as_a_torn_tail_losing_no_record() {
    let fs0 = FaultFs::new();
    let (mut wal, _) = open(&fs0, &WalOptions::default()).expect("open");
    append_range(&mut wal, 1, 5);
    wal.sync().expect("sync");
    let records_end = wal.segments[0].len;
    drop(wal);
    let path = dir().join(segment_file_name(1));
    let padded = fs0.read(&path).expect("segment");
    let end = padded.len() as u64;
    for byte in [records_end, records_end + 1, records_end + 4, records_end + 16, end / 2, end - 1]
    {
        for bit in [0, 7] {
            let fs = FaultFs::new();
            fs.write_durable(&path, &padded);
            assert!(fs.flip_bit(&path, byte * 8 + bit));
            let (mut wal, recovered) = open(&fs, &WalOptions::default()).expect("open");
            let tail = recovered.torn_tail.expect("a nonzero byte after the records is torn");
            assert_eq!((tail.offset, tail.dropped_bytes), (records_end, end - records_end));
            assert_eq!(read_all(&wal), expected(1, 5));
            assert_eq!(file_len(&fs, &path), records_end);
            append_range(&mut wal, 6, 7);
            wal.sync().expect("sync");
            drop(wal);
            let (wal, recovered) = open(&fs, &WalOptions::default()).expect("reopen");
            assert_eq!(recovered.torn_tail, None);
            assert_eq!(read_all(&wal), expected(1, 7));
        }
    }
}

/// The documented limit, unchanged by preallocation: damage to the last
/// record of the log looks like a torn write of it, with padding after it or
/// without. It is reported (`torn_tail`), never silently kept.
#[test]
fn damage_to_the_last_record_is_cut_as_torn_with_padding_after_it_as_without() {
    for options in
        [WalOptions { preallocate_bytes: 0, ..WalOptions::default() }, WalOptions::default()]
    {
        for field_byte in [0u64, 5, 12, 15, 16, 20] {
            let fs = FaultFs::new();
            let (mut wal, _) = open(&fs, &options).expect("open");
            append_range(&mut wal, 1, 5);
            wal.sync().expect("sync");
            let (offset, _) = wal.segments[0].span(5);
            drop(wal);
            let path = dir().join(segment_file_name(1));
            assert!(fs.flip_bit(&path, (offset + field_byte) * 8 + 1));
            let (wal, recovered) = open(&fs, &options).expect("open");
            let tail = recovered.torn_tail.expect("reported");
            assert_eq!(tail.offset, offset, "byte {field_byte}");
            assert_eq!(read_all(&wal), expected(1, 4));
        }
    }
}

/// Writes that land out of order (a later sector of an unsynced append
/// without an earlier one, which a disk's volatile cache allows and which
/// padding no longer hides behind an unchanged file size): a valid record
/// after a hole is refused as corruption, never cut as a torn tail, since
/// the scan cannot tell it from lost acknowledged data.
#[test]
fn a_valid_record_after_a_zeroed_one_in_the_padding_is_corruption() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &WalOptions::default()).expect("open");
    append_range(&mut wal, 1, 5);
    wal.sync().expect("sync");
    append_range(&mut wal, 6, 7);
    let (six, _) = wal.segments[0].span(6);
    let (seven, seven_end) = wal.segments[0].span(7);
    wal.sync().expect("sync");
    drop(wal);
    let path = dir().join(segment_file_name(1));
    let mut bytes = fs.read(&path).expect("segment");
    bytes[six as usize..seven as usize].fill(0);
    fs.write_durable(&path, &bytes);
    match open(&fs, &WalOptions::default()) {
        Err(Error::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, six);
            assert!(reason.contains("index 7"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(seven_end <= bytes.len() as u64);
}

/// The limit padding adds: an acknowledged record whose bytes all read back
/// as zeros (a lost write of synced sectors), with only zeros after it,
/// cannot be told from padding, so the log silently ends before it (without
/// padding it was reported as a torn tail; either way it is gone).
#[test]
fn a_zeroed_last_record_before_the_padding_reads_as_padding() {
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &WalOptions::default()).expect("open");
    append_range(&mut wal, 1, 5);
    wal.sync().expect("sync");
    let (five, five_end) = wal.segments[0].span(5);
    drop(wal);
    let path = dir().join(segment_file_name(1));
    let mut bytes = fs.read(&path).expect("segment");
    bytes[five as usize..five_end as usize].fill(0);
    fs.write_durable(&path, &bytes);
    let (wal, recovered) = open(&fs, &WalOptions::default()).expect("open");
    assert_eq!((recovered.last_index, recovered.torn_tail), (4, None));
    assert_eq!(read_all(&wal), expected(1, 4));
}

#[test]
fn a_segment_filled_exactly_to_its_size_is_not_padded_and_rotates_cleanly() {
    // 32 + 4 * (16 + 40) = 256 = the segment size.
    let options = small_segments();
    let big = vec![9u8; 40];
    for seed in 0..20 {
        let fs = FaultFs::new();
        let (mut wal, _) = open(&fs, &options).expect("open");
        for i in 1..=4 {
            wal.append(i, &[&big]).expect("append");
        }
        wal.sync().expect("sync");
        let first = dir().join(segment_file_name(1));
        assert_eq!(file_len(&fs, &first), options.segment_size_bytes, "no padding past the cap");
        assert_eq!(wal.segments[0].allocated, options.segment_size_bytes);
        wal.append(5, &[&big]).expect("append");
        assert_eq!(wal.segment_count(), 2);
        drop(wal);
        fs.crash(seed);
        let (wal, recovered) = open(&fs, &options).expect("recover");
        assert!(recovered.last_index >= 4);
        assert_eq!(file_len(&fs, &first), options.segment_size_bytes);
        assert!(read_all(&wal).iter().all(|(_, p)| *p == big));
    }
}

#[test]
fn a_partly_written_padding_then_a_crash_recovers_cleanly() {
    let options = WalOptions { preallocate_bytes: 4096, ..WalOptions::default() };
    for seed in 0..40 {
        let fs = FaultFs::new();
        let (mut wal, _) = open(&fs, &options).expect("open");
        append_range(&mut wal, 1, 1);
        wal.sync().expect("sync");
        // Room for record 2 and some of its padding, not all.
        let path = dir().join(segment_file_name(1));
        let on_disk = file_len(&fs, &path);
        let mut filled = wal.segments[0].len;
        while filled < on_disk {
            let i = wal.last_index() + 1;
            append_range(&mut wal, i, i);
            filled = wal.segments[0].len;
        }
        fs.set_space_limit(Some(fs.used_bytes() + 1000));
        let i = wal.last_index() + 1;
        append_range(&mut wal, i, i + 1);
        fs.set_space_limit(None);
        let durable = wal.sync().expect("sync");
        let len = file_len(&fs, &path);
        assert!(len > wal.segments[0].len && len < wal.segments[0].len + 4096, "partly padded");
        append_range(&mut wal, durable + 1, durable + 3);
        drop(wal);
        fs.crash(seed);
        let (wal, _) = open(&fs, &options).expect("recover");
        check_recovered(&wal, durable, &[0], &format!("seed {seed}"));
    }
}

#[test]
fn a_log_written_with_or_without_padding_reopens_under_the_other_setting() {
    let unpadded = WalOptions { preallocate_bytes: 0, ..small_segments() };
    let padded = small_segments();
    let fs = FaultFs::new();
    let mut last = 0;
    for (round, options) in [&unpadded, &padded, &unpadded, &padded, &unpadded].iter().enumerate() {
        let (mut wal, recovered) = open(&fs, options).expect("open");
        assert_eq!(recovered.torn_tail, None, "round {round}");
        assert_eq!(read_all(&wal), expected(1, last));
        append_each(&mut wal, last + 1, last + 13);
        last += 13;
        wal.sync().expect("sync");
        for s in &wal.segments[..wal.segments.len() - 1] {
            assert_eq!(file_len(&fs, &s.path), s.len, "round {round}: padded middle segment");
        }
    }
    // A torn tail left by a version without padding is still reported.
    let last_path = {
        let (wal, _) = open(&fs, &unpadded).expect("open");
        wal.segments.last().expect("a segment").path.clone()
    };
    let mut bytes = fs.read(&last_path).expect("segment");
    let mut record = Vec::new();
    encode_record(last + 1, &payload(last + 1, 0), &mut record);
    bytes.extend_from_slice(&record[..record.len() - 1]);
    fs.write_durable(&last_path, &bytes);
    let (wal, recovered) = open(&fs, &padded).expect("open");
    assert!(recovered.torn_tail.is_some());
    assert_eq!(read_all(&wal), expected(1, last));
}

#[test]
fn detaching_the_padded_last_segment_then_crashing_keeps_a_contiguous_log() {
    for seed in 0..40 {
        let what = format!("seed {seed}");
        let fs = FaultFs::new();
        let (mut wal, _) = open(&fs, &small_segments()).expect("open");
        append_each(&mut wal, 1, 20);
        wal.sync().expect("sync");
        let last = wal.segments.last().expect("segment").path.clone();
        assert!(file_len(&fs, &last) > wal.segments.last().expect("segment").len, "padded");
        wal.detach_prefix(1000).expect("detach all");
        if seed % 2 == 0 {
            // Continue right after it: the old files go first.
            append_range(&mut wal, 21, 22);
        }
        drop(wal);
        fs.crash(seed);
        let (wal, _) =
            open(&fs, &small_segments()).unwrap_or_else(|e| panic!("{what}: recovery failed: {e}"));
        let got = read_all(&wal);
        if seed % 2 == 1 {
            assert_eq!(got, expected(1, 20), "{what}: detached files stay until purged");
        } else {
            for (k, (index, bytes)) in got.iter().enumerate() {
                assert_eq!(*index, got[0].0 + k as u64, "{what}");
                assert_eq!(*bytes, payload(*index, 0), "{what}");
            }
        }
        for s in wal.segments.iter().rev().skip(1) {
            assert_eq!(file_len(&fs, &s.path), s.len, "{what}: padded middle segment");
        }
    }
}

#[test]
fn a_failed_truncate_or_purge_never_leaves_the_durable_index_past_the_log() {
    // skip 0 in a truncate within the last segment: the fsync of the cut;
    // across segments: the directory fsync, then the fsync of the cut.
    for (from, skip) in [(30, 0), (10, 0), (10, 1)] {
        let fs = FaultFs::new();
        let (mut wal, _) = open(&fs, &small_segments()).expect("open");
        append_each(&mut wal, 1, 31);
        wal.sync().expect("sync");
        fs.fail_syncs_after(skip, 1);
        let err = wal.truncate_suffix(from).expect_err("a sync fails");
        assert!(err.is_fatal() && wal.is_poisoned(), "{err}");
        assert!(
            wal.durable_index() < from,
            "from {from} skip {skip}: durable index {} names truncated records",
            wal.durable_index()
        );
    }
    let fs = FaultFs::new();
    let (mut wal, _) = open(&fs, &small_segments()).expect("open");
    append_each(&mut wal, 1, 31);
    wal.sync().expect("sync");
    fs.fail_next_syncs(1);
    wal.purge_prefix(1000).expect_err("the directory fsync fails");
    assert_eq!(wal.durable_index(), 0, "the log is empty");
}
