//! Model-based crash test: random sequences of append / sync / truncate /
//! purge / disk-full / fsync failure / crash / reopen on the fault-injecting
//! file system, checked against a model of what the caller was told.
//!
//! After every crash the recovered log must hold every record the log
//! reported durable, byte for byte; every record it holds must be one the
//! caller appended (and not truncated since); and `sync` must never report
//! an index as durable that a crash can lose.

use super::{dir, open, payload, read_all};
use crate::{Error, FaultFs, Wal, WalOptions};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Op {
    /// Append `count` records (content depends on `salt`).
    Append {
        count: u64,
        salt: u64,
    },
    Sync,
    /// A pipelined sync with `count` records appended while it runs.
    PipelinedSync {
        count: u64,
    },
    /// Truncate the last `back + 1` records.
    Truncate {
        back: u64,
    },
    /// Purge up to a point `fraction`/8 of the way through the log.
    Purge {
        fraction: u64,
    },
    /// The same, detached: the files go when the purger runs after a sync.
    Detach {
        fraction: u64,
    },
    /// The purger runs (on a thread of its own).
    RunPurger,
    /// The disk has `room` bytes left for one append.
    DiskFull {
        room: u64,
        count: u64,
    },
    /// The next fsync fails (the log must poison itself).
    FailSync,
    /// The next `skip` syncs succeed and the one after fails, inside
    /// `what`: 0 an append of `count` records (which may start a segment,
    /// cutting the padded one before it), 1 a truncate of the last `count`
    /// records, 2 a purge, 3 a detach, of `count`/8 of the log.
    FailSyncDuring {
        skip: u32,
        what: u8,
        count: u64,
    },
    Crash {
        seed: u64,
    },
    /// Reopen, with `preallocate_bytes` set to one of 0, 80 (the usual), 300
    /// from now on: a log written by a version without padding, or with
    /// another amount.
    Reopen {
        preallocate: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u64..6, 0u64..4).prop_map(|(count, salt)| Op::Append { count, salt }),
        4 => Just(Op::Sync),
        2 => (0u64..4).prop_map(|count| Op::PipelinedSync { count }),
        1 => (0u64..12).prop_map(|back| Op::Truncate { back }),
        1 => (0u64..9).prop_map(|fraction| Op::Purge { fraction }),
        1 => (0u64..9).prop_map(|fraction| Op::Detach { fraction }),
        1 => Just(Op::RunPurger),
        1 => (0u64..120, 1u64..6).prop_map(|(room, count)| Op::DiskFull { room, count }),
        1 => Just(Op::FailSync),
        2 => (0u32..4, 0u8..4, 1u64..12).prop_map(|(skip, what, count)| Op::FailSyncDuring { skip, what, count }),
        2 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
        1 => (0u8..3).prop_map(|preallocate| Op::Reopen { preallocate }),
    ]
}

fn options() -> WalOptions {
    WalOptions {
        segment_size_bytes: 200,
        max_batch_bytes: 64 << 10,
        read_chunk_bytes: 64,
        preallocate_bytes: 80,
    }
}

/// What the caller knows.
struct Model {
    fs: FaultFs,
    wal: Option<Wal>,
    options: WalOptions,
    /// Records a failed truncate was deleting: they may or may not be there.
    maybe: BTreeMap<u64, Vec<u8>>,
    /// The log's content as the caller appended it.
    records: BTreeMap<u64, Vec<u8>>,
    /// Records purged (they may come back after a crash: purge is lazy).
    purged: BTreeMap<u64, Vec<u8>>,
    /// The highest index `sync` reported durable.
    acked: u64,
}

impl Model {
    fn wal(&mut self) -> &mut Wal {
        self.wal.as_mut().expect("the log is open")
    }

    /// After a purge or detach (even a failed one): the records below the
    /// log's first index now are purged in the model.
    fn note_purged(&mut self) {
        let first_left = self.wal().first_index();
        let keep =
            if first_left == 0 { BTreeMap::new() } else { self.records.split_off(&first_left) };
        self.purged.extend(std::mem::replace(&mut self.records, keep));
    }

    fn next_index(&self) -> u64 {
        let last = self.records.keys().next_back().copied();
        let purged = self.purged.keys().next_back().copied();
        last.or(purged).unwrap_or(0) + 1
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let poisoned = self.wal.as_ref().is_none_or(Wal::is_poisoned);
        match *op {
            Op::Crash { seed } => return self.crash_and_recover(seed),
            Op::Reopen { preallocate } => {
                self.options.preallocate_bytes = [0, 80, 300][usize::from(preallocate)];
                return self.reopen();
            }
            _ if poisoned => return Ok(()),
            Op::Append { count, salt } => {
                let first = self.next_index();
                let payloads: Vec<Vec<u8>> =
                    (first..first + count).map(|i| payload(i, salt)).collect();
                prop_assert_eq!(
                    self.wal().append(first, &payloads).expect("append"),
                    first + count - 1
                );
                for (i, p) in (first..).zip(payloads) {
                    self.records.insert(i, p);
                }
            }
            Op::Sync => {
                let durable = self.wal().sync().expect("sync");
                prop_assert_eq!(durable, self.records.keys().next_back().copied().unwrap_or(0));
                self.acked = durable;
            }
            Op::PipelinedSync { count } => {
                let pending = self.wal().begin_sync().expect("begin sync");
                let covered = pending.index();
                prop_assert_eq!(covered, self.records.keys().next_back().copied().unwrap_or(0));
                let first = self.next_index();
                let payloads: Vec<Vec<u8>> =
                    (first..first + count).map(|i| payload(i, 5)).collect();
                if count > 0 {
                    self.wal().append(first, &payloads).expect("append");
                }
                for (i, p) in (first..).zip(payloads) {
                    self.records.insert(i, p);
                }
                let done = std::thread::spawn(move || pending.run()).join().expect("sync thread");
                let durable = self.wal().finish_sync(done).expect("finish sync");
                prop_assert_eq!(
                    durable,
                    covered,
                    "only what was appended before begin_sync is durable"
                );
                self.acked = durable;
            }
            Op::Truncate { back } => {
                let Some(&last) = self.records.keys().next_back() else { return Ok(()) };
                let from = last.saturating_sub(back).max(1);
                self.wal().truncate_suffix(from).expect("truncate");
                self.records.split_off(&from);
                self.acked = self.acked.min(from - 1);
                prop_assert_eq!(self.wal().durable_index(), self.wal().last_index());
            }
            Op::RunPurger => {
                let purger = self.wal().purger();
                let run = std::thread::spawn(move || purger.run()).join().expect("purger");
                run.expect("purge");
            }
            Op::Purge { fraction } | Op::Detach { fraction } => {
                let (Some(&first), Some(&last)) =
                    (self.records.keys().next(), self.records.keys().next_back())
                else {
                    return Ok(());
                };
                let up_to = first + (last - first + 1) * fraction / 8;
                if matches!(op, Op::Purge { .. }) {
                    self.wal().purge_prefix(up_to).expect("purge");
                } else {
                    self.wal().detach_prefix(up_to).expect("detach");
                }
                self.note_purged();
            }
            Op::DiskFull { room, count } => {
                self.fs.set_space_limit(Some(self.fs.used_bytes() + room));
                let first = self.next_index();
                let payloads: Vec<Vec<u8>> =
                    (first..first + count).map(|i| payload(i, 7)).collect();
                let result = self.wal().append(first, &payloads);
                self.fs.set_space_limit(None);
                match result {
                    Ok(_) => {
                        for (i, p) in (first..).zip(payloads) {
                            self.records.insert(i, p);
                        }
                    }
                    Err(Error::NoSpace { .. }) => prop_assert!(!self.wal().is_poisoned()),
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
            Op::FailSyncDuring { skip, what, count } => {
                self.fs.fail_syncs_after(skip, 1);
                let result = match what {
                    0 => {
                        let first = self.next_index();
                        let payloads: Vec<Vec<u8>> =
                            (first..first + count).map(|i| payload(i, 6)).collect();
                        let result = self.wal().append(first, &payloads).map(|_| ());
                        if result.is_ok() {
                            for (i, p) in (first..).zip(payloads) {
                                self.records.insert(i, p);
                            }
                        }
                        result
                    }
                    1 => {
                        let Some(&last) = self.records.keys().next_back() else {
                            self.fs.fail_syncs_after(0, 0);
                            return Ok(());
                        };
                        let from = last.saturating_sub(count).max(1);
                        let result = self.wal().truncate_suffix(from);
                        let gone = self.records.split_off(&from);
                        if result.is_err() {
                            self.maybe.extend(gone);
                        }
                        self.acked = self.acked.min(from - 1);
                        result
                    }
                    _ => {
                        let (Some(&first), Some(&last)) =
                            (self.records.keys().next(), self.records.keys().next_back())
                        else {
                            self.fs.fail_syncs_after(0, 0);
                            return Ok(());
                        };
                        let up_to = first + (last - first + 1) * (count % 9) / 8;
                        let result = if what == 2 {
                            self.wal().purge_prefix(up_to)
                        } else {
                            self.wal().detach_prefix(up_to).map(|_| ())
                        };
                        self.note_purged();
                        result
                    }
                };
                self.fs.fail_syncs_after(0, 0);
                if let Err(e) = result {
                    prop_assert!(e.is_fatal(), "{}", e);
                    prop_assert!(self.wal().is_poisoned());
                }
                // What the log calls durable, failed or not, must survive.
                let durable = self.wal().durable_index();
                prop_assert!(
                    durable <= self.records.keys().next_back().copied().unwrap_or(0)
                        || self.records.is_empty()
                );
                self.acked = self
                    .acked
                    .max(durable.min(self.records.keys().next_back().copied().unwrap_or(0)));
            }
            Op::FailSync => {
                self.fs.fail_next_syncs(1);
                let unsynced = self.wal().durable_index() != self.wal().last_index();
                let result = self.wal().sync();
                self.fs.fail_next_syncs(0);
                match result {
                    Ok(durable) => {
                        prop_assert!(!unsynced, "a sync with pending writes cannot succeed");
                        self.acked = durable;
                    }
                    Err(e) => {
                        prop_assert!(unsynced && e.is_fatal(), "{e}");
                        let still_poisoned =
                            matches!(self.wal().sync(), Err(Error::Poisoned { .. }));
                        prop_assert!(still_poisoned, "a failed fsync is never retried");
                    }
                }
            }
        }
        Ok(())
    }

    fn crash_and_recover(&mut self, seed: u64) -> Result<(), TestCaseError> {
        self.wal = None;
        self.fs.crash(seed);
        let (wal, recovered) = open(&self.fs, &self.options)
            .map_err(|e| TestCaseError::fail(format!("recovery failed: {e}")))?;
        let got: BTreeMap<u64, Vec<u8>> = read_all(&wal).into_iter().collect();
        prop_assert_eq!(recovered.last_index, got.keys().next_back().copied().unwrap_or(0));
        for (index, bytes) in &self.records {
            if *index <= self.acked {
                prop_assert_eq!(
                    got.get(index),
                    Some(bytes),
                    "acknowledged record {} lost or changed",
                    index
                );
            }
        }
        for (index, bytes) in &got {
            let expected = self
                .records
                .get(index)
                .or_else(|| self.maybe.get(index))
                .or_else(|| self.purged.get(index));
            prop_assert_eq!(
                Some(bytes),
                expected,
                "record {} was never appended (or was truncated)",
                index
            );
        }
        self.records = got;
        self.maybe.clear();
        self.purged.retain(|i, _| !self.records.contains_key(i));
        self.acked = wal.durable_index();
        prop_assert_eq!(self.acked, recovered.last_index, "open makes what it recovered durable");
        self.wal = Some(wal);
        Ok(())
    }

    fn reopen(&mut self) -> Result<(), TestCaseError> {
        self.wal = None;
        let (wal, recovered) = open(&self.fs, &self.options)
            .map_err(|e| TestCaseError::fail(format!("reopen failed: {e}")))?;
        prop_assert_eq!(recovered.torn_tail, None);
        let got: BTreeMap<u64, Vec<u8>> = read_all(&wal).into_iter().collect();
        // Exactly what was appended, and maybe detached segments the purger
        // has not deleted yet (before what is left).
        let first_left = self.records.keys().next().copied();
        for (index, bytes) in &got {
            let expected = match self.records.get(index).or_else(|| self.maybe.get(index)) {
                Some(r) => Some(r),
                None => {
                    prop_assert!(first_left.is_none_or(|f| *index < f), "{} came back", index);
                    self.purged.get(index)
                }
            };
            prop_assert_eq!(Some(bytes), expected, "record {} changed on reopen", index);
        }
        for index in self.records.keys() {
            prop_assert!(got.contains_key(index), "record {} lost on a clean reopen", index);
        }
        self.records = got;
        self.maybe.clear();
        self.purged.retain(|i, _| !self.records.contains_key(i));
        self.acked = wal.durable_index();
        self.wal = Some(wal);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_synced_record_survives_any_crash(ops in proptest::collection::vec(op(), 1..80), final_seed in any::<u64>()) {
        let fs = FaultFs::new();
        let (wal, _) = open(&fs, &options()).expect("open");
        let mut model = Model { fs, wal: Some(wal), options: options(), maybe: BTreeMap::new(), records: BTreeMap::new(), purged: BTreeMap::new(), acked: 0 };
        for op in &ops {
            model.apply(op)?;
        }
        model.crash_and_recover(final_seed)?;
        prop_assert!(model.fs.file_names(&dir()).iter().all(|n| !n.ends_with(".tmp")));
    }
}
