//! A real process killed with SIGKILL in the middle of its write loop: every
//! record it acknowledged (printed after `sync` returned) is on disk after
//! a reopen.
//!
//! The test binary runs itself as the child (`std::env::current_exe`,
//! selecting the `child_writer` test with an environment variable naming
//! the directory); `child_writer` does nothing in a normal test run.

use crate::{Wal, WalOptions};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const DIR_VAR: &str = "SYNOD_STORAGE_KILL9_DIR";
/// Acknowledgements to read before killing the child.
const ACKS_BEFORE_KILL: u64 = 200;
/// Kill, reopen, resume: this many times.
const RUNS: u64 = 3;

fn options() -> WalOptions {
    WalOptions { segment_size_bytes: 32 << 10, ..WalOptions::default() }
}

fn record(index: u64) -> Vec<u8> {
    let len = (index * 131 % 2000) as usize;
    (0..len).map(|i| (index as usize).wrapping_mul(31).wrapping_add(i) as u8).collect()
}

/// The child: append batches, sync, print `ACK <durable index>`, forever
/// (bounded), until killed.
#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(DIR_VAR) else { return };
    let (mut wal, recovered) = Wal::open(&dir, options()).expect("child: open");
    let mut next = recovered.last_index + 1;
    let mut stdout = std::io::stdout().lock();
    for round in 0..1_000_000u64 {
        let batch: Vec<Vec<u8>> = (next..next + 1 + round % 8).map(record).collect();
        next = wal.append(next, &batch).expect("child: append") + 1;
        let durable = wal.sync().expect("child: sync");
        writeln!(stdout, "ACK {durable}").expect("child: stdout");
        stdout.flush().expect("child: flush");
    }
}

#[test]
fn sigkill_in_the_write_loop_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary path");
    let mut acked = 0;
    for run in 0..RUNS {
        let mut child = Command::new(&exe)
            .args(["--exact", "wal::tests::kill9::child_writer", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut acks = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("child stdout");
            if let Some(index) = line.strip_prefix("ACK ") {
                let index: u64 = index.parse().expect("an index");
                assert!(index >= acked, "durable index went back from {acked} to {index}");
                acked = index;
                acks += 1;
                if acks == ACKS_BEFORE_KILL {
                    break;
                }
            }
        }
        assert_eq!(acks, ACKS_BEFORE_KILL, "run {run}: the child stopped early");
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");

        let (wal, recovered) = Wal::open(dir.path(), options()).expect("reopen after SIGKILL");
        assert!(
            recovered.last_index >= acked,
            "run {run}: acknowledged {acked}, recovered only {}",
            recovered.last_index
        );
        assert_eq!(recovered.first_index, 1);
        for entry in wal.entries(..).expect("range") {
            let (index, payload) = entry.expect("read back");
            assert_eq!(payload.as_ref(), record(index).as_slice(), "record {index} damaged");
        }
        assert!(wal.segment_count() > 1, "the loop crossed segment boundaries");
    }
}
