//! Steady-state cost of the Raft core: a 3-node cluster driven in process
//! (no faults, zero-latency FIFO network, writes discarded), proposing
//! batches of 64 commands at the leader and delivering every message until
//! the network is quiet (the leader has committed the batch; followers learn
//! it with the next batch). Reports time per committed command.
//!
//! A second case proposes single commands to a 5-node cluster and reports
//! time per event (a proposal or a message delivery), the unit the
//! simulator's speed is measured in.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};
use synod_core::{ClientId, Command, NodeId, Protocol, Role, Time};
use synod_raft::{Config, Durable, Message, RaftNode, RaftOutput};

const BATCH: u64 = 64;
/// Rebuild the cluster after this many entries so memory stays bounded.
const MAX_LOG_ENTRIES: u64 = 200_000;

struct Driver {
    nodes: Vec<RaftNode>,
    queue: VecDeque<(NodeId, NodeId, Message)>,
    out: RaftOutput,
    now: Time,
    committed: u64,
    events: u64,
    seq: u64,
    leader: usize,
}

impl Driver {
    fn new(nodes: u64) -> Driver {
        let voters = (1..=nodes).map(NodeId).collect::<Vec<_>>();
        let mut config = Config::new(voters.clone());
        config.pre_vote = false;
        let nodes = voters
            .iter()
            .map(|&id| RaftNode::recover(id, &config, &Durable::default(), id.0, Time::ZERO))
            .collect();
        let mut driver = Driver {
            nodes,
            queue: VecDeque::new(),
            out: RaftOutput::new(),
            now: Time::ZERO,
            committed: 0,
            events: 0,
            seq: 0,
            leader: 0,
        };
        driver.now = driver.nodes[0].next_deadline();
        driver.nodes[0].tick(driver.now, &mut driver.out);
        driver.flush(0);
        driver.deliver_all();
        assert_eq!(driver.nodes[0].role(), Role::Leader, "node 1 campaigned first");
        driver
    }

    fn flush(&mut self, from: usize) {
        let from_id = self.nodes[from].id();
        for (to, msg) in self.out.messages.drain(..) {
            self.queue.push_back((from_id, to, msg));
        }
        self.committed += self.out.committed.len() as u64;
        self.out.clear();
    }

    fn deliver_all(&mut self) {
        while let Some((from, to, msg)) = self.queue.pop_front() {
            self.events += 1;
            let i = to.0 as usize - 1;
            self.nodes[i].step(self.now, from, msg, &mut self.out);
            self.flush(i);
        }
    }

    fn round(&mut self, batch: u64) {
        self.events += 1;
        let commands = (0..batch)
            .map(|_| {
                self.seq += 1;
                Command::new(ClientId(1), self.seq, Bytes::from_static(b"put key value"))
            })
            .collect();
        self.nodes[self.leader]
            .propose(self.now, commands, &mut self.out)
            .expect("the leader accepts");
        self.flush(self.leader);
        self.deliver_all();
        let leader = &self.nodes[self.leader];
        assert_eq!(leader.commit_index(), leader.last_index(), "the batch committed");
    }
}

fn steady_state(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft");
    group.throughput(Throughput::Elements(BATCH));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("steady_state_3_nodes_batch_64", |b| {
        b.iter_custom(|iters| {
            let mut driver = Driver::new(3);
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                if driver.seq >= MAX_LOG_ENTRIES {
                    driver = Driver::new(3);
                }
                let start = Instant::now();
                driver.round(BATCH);
                elapsed += start.elapsed();
            }
            black_box(driver.committed);
            elapsed
        })
    });
    // One proposal of one command is 1 + 4 appends + 4 acks = 9 events.
    group.throughput(Throughput::Elements(9));
    group.bench_function("events_5_nodes_single_commands", |b| {
        b.iter_custom(|iters| {
            let mut driver = Driver::new(5);
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                if driver.seq >= MAX_LOG_ENTRIES {
                    driver = Driver::new(5);
                }
                let events = driver.events;
                let start = Instant::now();
                driver.round(1);
                elapsed += start.elapsed();
                assert_eq!(driver.events - events, 9, "one event per message");
            }
            black_box(driver.committed);
            elapsed
        })
    });
    group.finish();
}

criterion_group!(benches, steady_state);
criterion_main!(benches);
