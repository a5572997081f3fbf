//! Issue 6's memory budget: 100,000 keys with 256-byte values must fit a node
//! in well under 100 MiB. Counts the bytes the store holds with a counting
//! allocator (its own test binary, so no other test disturbs the count).

use bytes::Bytes;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use synod_kv::{KvCommand, KvStore, PutRequest};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_hundred_thousand_256_byte_values_fit_in_well_under_100_mib() {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut store = KvStore::default();
    for i in 0..100_000u64 {
        // Encoded and decoded as through the log, so values are the store's
        // own copies, not slices of a shared buffer.
        let put = KvCommand::Put(PutRequest {
            key: Bytes::from(format!("/bench/key/{i:08}")),
            value: Bytes::from(vec![(i % 251) as u8; 256]),
            ..PutRequest::default()
        });
        let op = KvCommand::decode(&put.encode()).expect("round trip");
        assert!(store.apply_command(i + 1, &op).response.is_ok());
    }
    let held = LIVE_BYTES.load(Ordering::Relaxed) - before;
    let per_key = held / 100_000;
    println!("100,000 keys: {} MiB held, {per_key} B per key", held >> 20);
    assert!(held < 64 << 20, "{held} bytes held for 100,000 keys ({per_key} B per key)");
    assert_eq!(store.current_revision(), 100_001);
}
