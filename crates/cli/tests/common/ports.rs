//! Loopback ports for test processes to listen on.
//!
//! Binding port 0 and releasing it is racy: between the release and the
//! child's own bind, the kernel may hand that port to any outgoing connection
//! (a gRPC client, a peer link) as its ephemeral source port, and the child
//! then fails with "Address already in use" (CI saw exactly that). Ports here
//! come from below the kernel's ephemeral range, so no outgoing connection can
//! take them; each is handed out once per process, from a start that depends
//! on the process id so that two test processes rarely meet, and is checked
//! free before it is handed out.

use std::net::TcpListener;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// First port handed out (inclusive).
const LOW: u32 = 10_000;
/// Last port handed out (exclusive): Linux's default ephemeral range starts at
/// 32768; a machine configured lower is read from /proc.
const HIGH: u32 = 32_768;

/// Ports handed out so far in this process (offsets from its start).
static NEXT: AtomicU32 = AtomicU32::new(0);

/// This process's range: (the first port past it, its size, the offset of
/// this process's first port in it).
fn range() -> (u32, u32, u32) {
    let high = ephemeral_low().clamp(LOW + 1_000, HIGH);
    let span = high - LOW;
    (high, span, std::process::id().wrapping_mul(2_654_435_761) % span)
}

/// A loopback port nothing listens on, that no outgoing connection will take,
/// and that this process has not handed out before.
pub fn free_port() -> u16 {
    let (high, span, start) = range();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "every test port in {LOW}..{high} was handed out or in use");
        let port = u16::try_from(LOW + (start + n) % span).expect("below 32768");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `count` consecutive ports, each as [`free_port`]'s, taken in one step
/// so that no other caller in this process (tests run on parallel threads)
/// gets one of them; returns the first.
#[allow(dead_code)] // Not every test binary that includes `common` uses it.
pub fn free_port_block(count: u16) -> u16 {
    let (high, span, start) = range();
    loop {
        let n = NEXT.fetch_add(u32::from(count), Ordering::Relaxed);
        assert!(n + u32::from(count) <= span, "no block of {count} free ports in {LOW}..{high}");
        let first = LOW + (start + n) % span;
        if first + u32::from(count) > high {
            continue; // it would wrap around the range
        }
        let ports =
            (first..first + u32::from(count)).map(|p| u16::try_from(p).expect("below 32768"));
        if ports.clone().all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return u16::try_from(first).expect("below 32768");
        }
    }
}

/// The first port of the kernel's ephemeral range (32768 if unreadable),
/// read once per process.
fn ephemeral_low() -> u32 {
    static LOW_EPHEMERAL: OnceLock<u32> = OnceLock::new();
    *LOW_EPHEMERAL.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(HIGH)
    })
}

#[test]
fn ports_are_distinct_and_below_the_ephemeral_range() {
    // (Each was free when handed out: `free_port` checks. Whether it still
    // is a moment later depends on what else runs meanwhile.)
    let mut ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
    let block = free_port_block(31);
    ports.extend(block..block + 31);
    let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
    let low = ephemeral_low();
    for p in ports {
        assert!(
            u32::from(p) >= LOW && u32::from(p) < low.max(LOW + 1_000),
            "{p} outside {LOW}..{low}"
        );
    }
}
