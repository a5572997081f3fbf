//! Steady-state CPU cost of the PBFT core per committed request: a 4-replica
//! cluster (f = 1) driven in process (no faults, zero-latency FIFO network,
//! writes discarded, no timers). Each round a client's signed requests are
//! proposed at every replica (clients multicast) and every message is
//! delivered until the network is quiet; the round's requests are then
//! executed everywhere. Reported: time per committed request, all four
//! replicas' work summed (requests are signed before the clock starts: that
//! is client CPU). The clock is the thread's CPU time (Linux
//! `/proc/thread-self/schedstat`, wall time elsewhere), so that figures hold
//! on a shared machine.
//!
//! Cases: batches of 1 and 64 requests per PRE-PREPARE, with MAC
//! authenticators (the default) and with signatures on PRE-PREPARE,
//! PREPARE and COMMIT. A last case measures one client-signature check, of
//! which each request costs one per replica.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};
use synod_core::{ClientId, Command, NodeId, Protocol, Time};
use synod_pbft::auth::NormalCaseAuth;
use synod_pbft::request::{ClientKeys, RequestCheck, sign_command};
use synod_pbft::{Config, Durable, Message, PbftNode, PbftOutput};

const N: u64 = 4;
/// Client-signature checks per iteration of `client_signature_check`.
const CHECKS_PER_ITER: usize = 256;
/// Rebuild the cluster after this many requests so memory stays bounded
/// (every replica keeps its executed history).
const MAX_REQUESTS: u64 = 50_000;

struct Driver {
    config: Config,
    nodes: Vec<PbftNode>,
    queue: VecDeque<(NodeId, NodeId, Message)>,
    out: PbftOutput,
    now: Time,
    /// Requests executed at replica 1.
    committed: u64,
    seq: u64,
}

impl Driver {
    fn new(mode: NormalCaseAuth) -> Driver {
        let mut config = Config::new((1..=N).map(NodeId).collect());
        config.normal_case_auth = mode;
        let nodes = (1..=N)
            .map(|i| PbftNode::recover(NodeId(i), &config, &Durable::default(), i, Time::ZERO))
            .collect();
        Driver {
            config,
            nodes,
            queue: VecDeque::new(),
            out: PbftOutput::new(),
            now: Time::ZERO,
            committed: 0,
            seq: 0,
        }
    }

    /// `count` requests of client 1 from sequence number `first`, signed.
    fn requests(&self, first: u64, count: u64) -> Vec<Command> {
        let key = self.config.client_key(1);
        (first..first + count)
            .map(|seq| {
                let c = Command::new(ClientId(1), seq, Bytes::from_static(b"put key value"));
                sign_command(&key, c)
            })
            .collect()
    }

    fn flush(&mut self, from: usize) {
        let from_id = self.nodes[from].id();
        for (to, msg) in self.out.messages.drain(..) {
            self.queue.push_back((from_id, to, msg));
        }
        if from == 0 {
            self.committed += self.out.committed.len() as u64;
        }
        self.out.clear();
    }

    /// Proposes `requests` at every replica and delivers until quiet.
    fn round(&mut self, requests: Vec<Command>) {
        self.seq += requests.len() as u64;
        let expected = self.committed + requests.len() as u64;
        for i in (0..N as usize).rev() {
            let _ = self.nodes[i].propose(self.now, requests.clone(), &mut self.out);
            self.flush(i);
        }
        while let Some((from, to, msg)) = self.queue.pop_front() {
            let i = to.0 as usize - 1;
            self.nodes[i].step(self.now, from, msg, &mut self.out);
            self.flush(i);
        }
        assert_eq!(self.committed, expected, "the round's requests executed");
    }
}

/// The calling thread's CPU time where Linux tells it, else wall time.
enum CpuClock {
    Cpu(u64),
    Wall(Instant),
}

impl CpuClock {
    fn thread_cpu_ns() -> Option<u64> {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        s.split_whitespace().next()?.parse().ok()
    }

    fn now() -> CpuClock {
        match Self::thread_cpu_ns() {
            Some(ns) => CpuClock::Cpu(ns),
            None => CpuClock::Wall(Instant::now()),
        }
    }

    fn elapsed(&self) -> Duration {
        match self {
            CpuClock::Cpu(start) => {
                Duration::from_nanos(Self::thread_cpu_ns().unwrap_or(*start).saturating_sub(*start))
            }
            CpuClock::Wall(start) => start.elapsed(),
        }
    }
}

fn case(c: &mut Criterion, name: &str, mode: NormalCaseAuth, batch: u64) {
    let mut group = c.benchmark_group("pbft");
    group.throughput(Throughput::Elements(batch));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(20);
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut driver = Driver::new(mode);
            let rounds: Vec<Vec<Command>> =
                (0..iters).map(|r| driver.requests(1 + r * batch, batch)).collect();
            let start = CpuClock::now();
            for requests in rounds {
                if driver.seq >= MAX_REQUESTS {
                    driver = Driver::new(mode);
                }
                driver.round(requests);
            }
            black_box(driver.committed);
            start.elapsed()
        })
    });
    group.finish();
}

fn steady_state(c: &mut Criterion) {
    case(c, "4_replicas_batch_1_macs", NormalCaseAuth::Macs, 1);
    case(c, "4_replicas_batch_64_macs", NormalCaseAuth::Macs, 64);
    case(c, "4_replicas_batch_1_signatures", NormalCaseAuth::Signatures, 1);
    case(c, "4_replicas_batch_64_signatures", NormalCaseAuth::Signatures, 64);

    // 256 checks an iteration: the CPU clock is updated at scheduler ticks.
    let mut group = c.benchmark_group("pbft");
    group.throughput(Throughput::Elements(CHECKS_PER_ITER as u64));
    group.sample_size(20);
    let config = Config::new((1..=N).map(NodeId).collect());
    let key = config.client_key(1);
    let requests: Vec<Command> = (1..=4096)
        .map(|s| sign_command(&key, Command::new(ClientId(1), s, &b"put key value"[..])))
        .collect();
    group.bench_function("client_signature_check", |b| {
        let mut i = 0;
        b.iter_custom(|iters| {
            let mut check = RequestCheck::new(ClientKeys::Derived { seed: config.key_seed });
            let start = CpuClock::now();
            for _ in 0..iters * CHECKS_PER_ITER as u64 {
                // A fresh checker every 4096 requests: every check verifies.
                if i == requests.len() {
                    i = 0;
                    check = RequestCheck::new(ClientKeys::Derived { seed: config.key_seed });
                }
                assert!(check.check(&requests[i]));
                i += 1;
            }
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, steady_state);
criterion_main!(benches);
