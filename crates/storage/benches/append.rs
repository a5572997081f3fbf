//! Append + sync throughput of the write-ahead log, for batches of 1 and 64
//! records of 256 bytes: one `fdatasync` per batch, so batch 64 shows what
//! group commit buys. The log lives in a temporary directory (`$TMPDIR`,
//! else /tmp): on tmpfs fsync is nearly free and the numbers measure only
//! encoding and `write`; on a real disk they are bound by fsync latency.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use synod_storage::{Wal, WalOptions};

fn append_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_append_sync_256B");
    group.sample_size(20);
    for batch in [1usize, 64] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path(), WalOptions::default()).expect("open");
        let payloads = vec![vec![0xAB_u8; 256]; batch];
        let mut next = 1u64;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch_{batch}"), |b| {
            b.iter(|| {
                next = wal.append(next, &payloads).expect("append") + 1;
                wal.sync().expect("sync")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, append_sync);
criterion_main!(benches);
