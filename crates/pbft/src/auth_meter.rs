//! [`AuthMeter`]: how much authentication work replicas did, and how much
//! CPU time it took — for `synod sim --compare` and benchmarks.
//!
//! A meter counts every MAC computed and verified, every Ed25519 signature
//! made and verified (replicas' own and clients' requests), and the
//! signature checks a replica skipped because another replica of the same
//! process had already verified the same bytes
//! ([`crate::shared_checks::SharedChecks`]). It times each of those calls
//! around the cryptography alone with the clock it is given, so the time is
//! *measured*, not derived from per-operation constants:
//!
//! - [`AuthMeter::new`] takes a [`Clock`]. The simulator hands it the
//!   calling thread's CPU-time clock, which does not advance while the
//!   thread is descheduled: on a shared machine a wall clock would charge
//!   other processes' time slices to whatever call they interrupted (on
//!   average dividing by the CPU share the thread got);
//! - a CPU-time clock is a system call (about 1 µs on a virtual machine),
//!   more than one MAC costs. The meter measures the clock's own cost when
//!   it is made — the median of back-to-back readings, [`AuthMeter::clock_overhead_ns`]
//!   — and subtracts it from every timed call;
//! - [`AuthMeter::default`] uses the monotonic wall clock ([`Instant`]):
//!   tens of nanoseconds per reading, but it counts preemption.
//!
//! The meter is the one place the core reads a clock. It is off unless
//! [`crate::Config::auth_meter`] is set, and what it reads never feeds a
//! decision, a message or the simulator's trace: the core stays
//! deterministic with or without it. Clones share the counters (every
//! replica of a simulated cluster, restarts included, adds to one meter).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A clock for [`AuthMeter`]: nanoseconds from any fixed origin,
/// never going backwards on one thread.
pub type Clock = fn() -> u64;

/// The monotonic wall clock, in nanoseconds since its first reading.
pub fn wall_clock_ns() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let origin = ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Back-to-back clock readings taken to measure the clock's own cost.
const OVERHEAD_SAMPLES: usize = 101;

/// Shared counters of authentication work; clones share them. Always
/// compares equal (it is instrumentation, not configuration).
#[derive(Clone)]
pub struct AuthMeter(Arc<Counters>);

impl Default for AuthMeter {
    /// A meter on the monotonic wall clock ([`wall_clock_ns`]).
    fn default() -> Self {
        AuthMeter::new(wall_clock_ns)
    }
}

struct Counters {
    clock: Clock,
    /// What one timed call adds by reading the clock twice (subtracted).
    overhead_ns: u64,
    macs_computed: AtomicU64,
    macs_verified: AtomicU64,
    mac_ns: AtomicU64,
    signatures_made: AtomicU64,
    signatures_verified: AtomicU64,
    signature_ns: AtomicU64,
    client_signatures_verified: AtomicU64,
    client_verify_ns: AtomicU64,
    client_signatures_made: AtomicU64,
    client_sign_ns: AtomicU64,
    shared_memo_hits: AtomicU64,
}

impl std::fmt::Debug for AuthMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthMeter({:?})", self.work())
    }
}

impl PartialEq for AuthMeter {
    fn eq(&self, _: &AuthMeter) -> bool {
        true
    }
}

impl Eq for AuthMeter {}

/// What an [`AuthMeter`] counted: operations and the nanoseconds they took
/// (wall time on the calling thread, see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthWork {
    /// HMAC-SHA256 MACs computed by replicas (one per authenticator entry).
    pub macs_computed: u64,
    /// MACs (authenticator entries) replicas verified.
    pub macs_verified: u64,
    /// Time in MAC computation and verification.
    pub mac_ns: u64,
    /// Ed25519 signatures replicas made (CHECKPOINT, VIEW-CHANGE,
    /// NEW-VIEW; normal-case messages too in signature mode).
    pub signatures_made: u64,
    /// Replica signatures replicas verified.
    pub signatures_verified: u64,
    /// Time in replica signing and verification.
    pub signature_ns: u64,
    /// Client request signatures replicas verified.
    pub client_signatures_verified: u64,
    /// Time in client request verification (body digest included).
    pub client_verify_ns: u64,
    /// Client requests signed (by the clients).
    pub client_signatures_made: u64,
    /// Time clients spent signing.
    pub client_sign_ns: u64,
    /// Signature checks skipped because another replica of this process
    /// had verified the same bytes (the simulator's shared memo).
    pub shared_memo_hits: u64,
}

impl AuthWork {
    /// Nanoseconds replicas spent authenticating (MACs, their own
    /// signatures and client request signatures; clients' signing not
    /// included).
    pub fn replica_ns(&self) -> u64 {
        self.mac_ns + self.signature_ns + self.client_verify_ns
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &AuthWork) {
        self.macs_computed += other.macs_computed;
        self.macs_verified += other.macs_verified;
        self.mac_ns += other.mac_ns;
        self.signatures_made += other.signatures_made;
        self.signatures_verified += other.signatures_verified;
        self.signature_ns += other.signature_ns;
        self.client_signatures_verified += other.client_signatures_verified;
        self.client_verify_ns += other.client_verify_ns;
        self.client_signatures_made += other.client_signatures_made;
        self.client_sign_ns += other.client_sign_ns;
        self.shared_memo_hits += other.shared_memo_hits;
    }
}

/// The kinds of work a meter times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthOp {
    /// MACs computed.
    MacCompute,
    /// MACs verified.
    MacVerify,
    /// Replica signatures made.
    Sign,
    /// Replica signatures verified.
    Verify,
    /// Client request signatures verified.
    ClientVerify,
    /// Client requests signed.
    ClientSign,
}

impl AuthMeter {
    /// A meter timing with `clock`, whose own cost it measures now (the
    /// median of back-to-back readings) and subtracts from every timed
    /// call.
    pub fn new(clock: Clock) -> AuthMeter {
        let mut deltas: Vec<u64> = (0..OVERHEAD_SAMPLES)
            .map(|_| {
                let a = clock();
                clock().saturating_sub(a)
            })
            .collect();
        deltas.sort_unstable();
        let overhead_ns = deltas[deltas.len() / 2];
        AuthMeter(Arc::new(Counters {
            clock,
            overhead_ns,
            macs_computed: AtomicU64::default(),
            macs_verified: AtomicU64::default(),
            mac_ns: AtomicU64::default(),
            signatures_made: AtomicU64::default(),
            signatures_verified: AtomicU64::default(),
            signature_ns: AtomicU64::default(),
            client_signatures_verified: AtomicU64::default(),
            client_verify_ns: AtomicU64::default(),
            client_signatures_made: AtomicU64::default(),
            client_sign_ns: AtomicU64::default(),
            shared_memo_hits: AtomicU64::default(),
        }))
    }

    /// What reading the clock twice costs, measured when the meter was
    /// made; subtracted from every timed call.
    pub fn clock_overhead_ns(&self) -> u64 {
        self.0.overhead_ns
    }

    /// Runs `work` (`count` operations of kind `op`), timing it.
    pub fn time<T>(&self, op: AuthOp, count: u64, work: impl FnOnce() -> T) -> T {
        let c = &self.0;
        let started = (c.clock)();
        let out = work();
        let ns = (c.clock)().saturating_sub(started).saturating_sub(c.overhead_ns);
        let (n, t) = match op {
            AuthOp::MacCompute => (&c.macs_computed, &c.mac_ns),
            AuthOp::MacVerify => (&c.macs_verified, &c.mac_ns),
            AuthOp::Sign => (&c.signatures_made, &c.signature_ns),
            AuthOp::Verify => (&c.signatures_verified, &c.signature_ns),
            AuthOp::ClientVerify => (&c.client_signatures_verified, &c.client_verify_ns),
            AuthOp::ClientSign => (&c.client_signatures_made, &c.client_sign_ns),
        };
        n.fetch_add(count, Ordering::Relaxed);
        t.fetch_add(ns, Ordering::Relaxed);
        out
    }

    /// Counts a signature check skipped thanks to the shared memo.
    pub fn memo_hit(&self) {
        self.0.shared_memo_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// The totals so far.
    pub fn work(&self) -> AuthWork {
        let c = &self.0;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AuthWork {
            macs_computed: get(&c.macs_computed),
            macs_verified: get(&c.macs_verified),
            mac_ns: get(&c.mac_ns),
            signatures_made: get(&c.signatures_made),
            signatures_verified: get(&c.signatures_verified),
            signature_ns: get(&c.signature_ns),
            client_signatures_verified: get(&c.client_signatures_verified),
            client_verify_ns: get(&c.client_verify_ns),
            client_signatures_made: get(&c.client_signatures_made),
            client_sign_ns: get(&c.client_sign_ns),
            shared_memo_hits: get(&c.shared_memo_hits),
        }
    }
}

/// Runs `work` through `meter` if there is one, untimed otherwise.
pub fn metered<T>(
    meter: Option<&AuthMeter>,
    op: AuthOp,
    count: u64,
    work: impl FnOnce() -> T,
) -> T {
    match meter {
        Some(m) => m.time(op, count, work),
        None => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_counts_and_time_is_measured() {
        let m = AuthMeter::default();
        let c = m.clone();
        let x = c.time(AuthOp::MacCompute, 3, || {
            std::thread::sleep(std::time::Duration::from_millis(1));
            7
        });
        assert_eq!(x, 7);
        m.time(AuthOp::ClientVerify, 1, || ());
        c.memo_hit();
        let w = m.work();
        assert_eq!((w.macs_computed, w.client_signatures_verified, w.shared_memo_hits), (3, 1, 1));
        assert!(w.mac_ns >= 1_000_000, "{w:?}");
        assert!(w.replica_ns() >= w.mac_ns);
        let mut sum = w;
        sum.merge(&w);
        assert_eq!(sum.macs_computed, 6);
        assert_eq!(metered(None, AuthOp::Sign, 1, || 5), 5);
        assert_eq!(m.work().signatures_made, 0, "unmetered work is not counted");
    }

    /// A clock that advances 1000 ns per reading: the meter measures that
    /// as its overhead and charges an empty call nothing.
    #[test]
    fn the_clock_overhead_is_measured_and_subtracted() {
        static TICKS: AtomicU64 = AtomicU64::new(0);
        fn clock() -> u64 {
            TICKS.fetch_add(1000, Ordering::Relaxed)
        }
        let m = AuthMeter::new(clock);
        assert_eq!(m.clock_overhead_ns(), 1000);
        m.time(AuthOp::MacVerify, 1, || ());
        assert_eq!(m.work().mac_ns, 0);
        m.time(AuthOp::MacVerify, 1, clock);
        assert_eq!(m.work().mac_ns, 1000, "one reading inside the call");
    }
}
