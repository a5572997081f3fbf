//! Benchmarks: double SHA-256 header hashing (hashes per second on one
//! core).

use criterion::{Criterion, criterion_group, criterion_main};
use synod_chain::hash::Hash32;
use synod_chain::pow::{Header, mine};

fn hashing(c: &mut Criterion) {
    let header = Header {
        version: 1,
        prev_hash: Hash32::ZERO,
        merkle_root: Hash32([1; 32]),
        time_secs: 0,
        bits: 0x1d00_ffff,
        nonce: 0,
    };
    c.bench_function("sha256d_header_x1000", |b| b.iter(|| mine(header, 1000)));
}

criterion_group!(benches, hashing);
criterion_main!(benches);
