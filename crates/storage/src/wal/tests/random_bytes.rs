//! The reader fed random and damaged bytes: it never panics, and a damaged
//! log is either refused as corrupt (naming the damaged file) or, when the
//! damage is confined to the last record, recovered without it.

use super::{dir, open, payload, read_all, small_segments};
use crate::format::{SEGMENT_HEADER_LEN, encode_record, encode_segment_header, segment_file_name};
use crate::{Error, FaultFs, Wal};
use proptest::prelude::*;

/// Opens a log whose only segment holds `bytes`; must not panic. If it
/// opens, every record must read back.
fn open_segment_bytes(bytes: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, Error> {
    let fs = FaultFs::new();
    fs.write_durable(&dir().join(segment_file_name(1)), bytes);
    let (wal, _) = open(&fs, &small_segments())?;
    Ok(read_all(&wal))
}

fn valid_segment(records: u64) -> Vec<u8> {
    let mut bytes = encode_segment_header(1).to_vec();
    for index in 1..=records {
        encode_record(index, &payload(index, 3), &mut bytes);
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = open_segment_bytes(&bytes);
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut bytes = encode_segment_header(1).to_vec();
        bytes.extend_from_slice(&tail);
        let _ = open_segment_bytes(&bytes);
    }

    #[test]
    fn random_bytes_after_valid_records_are_cut_off_or_refused(
        records in 0u64..10,
        tail in proptest::collection::vec(any::<u8>(), 1..300),
    ) {
        let mut bytes = valid_segment(records);
        bytes.extend_from_slice(&tail);
        match open_segment_bytes(&bytes) {
            Ok(got) => {
                let expected: Vec<_> = (1..=records).map(|i| (i, payload(i, 3))).collect();
                prop_assert_eq!(&got[..(records as usize).min(got.len())], &expected[..(records as usize).min(got.len())]);
                prop_assert!(got.len() as u64 >= records, "valid records lost");
            }
            Err(e) => prop_assert!(matches!(e, Error::Corrupt { .. }), "{}", e),
        }
    }

    #[test]
    fn any_flipped_bit_is_caught(records in 1u64..40, which in any::<prop::sample::Index>(), bit in any::<prop::sample::Index>()) {
        let fs = FaultFs::new();
        let (mut wal, _) = open(&fs, &small_segments()).expect("open");
        for i in 1..=records {
            wal.append(i, &[payload(i, 3)]).expect("append");
        }
        wal.sync().expect("sync");
        let segment = &wal.segments[which.index(wal.segments.len())];
        let is_last_segment = segment.path == wal.segments[wal.segments.len() - 1].path;
        let path = segment.path.clone();
        let bit = bit.index((segment.len * 8) as usize) as u64;
        let last_record_offset = u64::from(*segment.offsets.last().expect("segments are not empty"));
        drop(wal);
        prop_assert!(fs.flip_bit(&path, bit));
        let in_last_record = is_last_segment && bit / 8 >= last_record_offset;
        match Wal::open_with(std::sync::Arc::new(fs.clone()), dir(), small_segments()) {
            Ok((wal, recovered)) => {
                // Only damage to the very last record looks like a torn write.
                prop_assert!(in_last_record, "damage at bit {} of {} went unnoticed", bit, path.display());
                let tail = recovered.torn_tail.expect("reported as torn");
                prop_assert_eq!(tail.offset, last_record_offset);
                let expected: Vec<_> = (1..records).map(|i| (i, payload(i, 3))).collect();
                prop_assert_eq!(read_all(&wal), expected);
            }
            Err(Error::Corrupt { path: p, offset, .. }) => {
                prop_assert!(!in_last_record);
                prop_assert_eq!(p, path);
                prop_assert!(offset <= bit / 8 || bit / 8 < SEGMENT_HEADER_LEN, "offset {} after the flipped byte {}", offset, bit / 8);
            }
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }
}
