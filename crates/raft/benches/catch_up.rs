//! A follower 1,000,000 entries behind catches up in bounded memory
//! (issue 3, Performance).
//!
//! A 3-node cluster runs in process over a zero-latency FIFO network with
//! synchronous disks. Node 3 is cut off while the leader commits
//! 1,000,000 single-command entries (batches of 64, with node 2 as the
//! quorum); then the link heals and the run measures node 3's catch-up:
//! the largest number of message bytes in flight, the largest message,
//! the longest in-memory log any node held, and the time it took.
//!
//! Two policies:
//! - `log`: no snapshots. The follower is repaired by AppendEntries alone;
//!   in flight at once: at most `max_inflight_appends` messages of at most
//!   `max_bytes_per_append` (or `max_entries_per_append` entries) each.
//! - `snapshot`: a snapshot every 10,000 entries on every node. The
//!   follower is behind the leader's purged prefix and is caught up with
//!   InstallSnapshot: one chunk of at most `snapshot_chunk_bytes` in
//!   flight, then the log tail; no node's log exceeds the interval plus the
//!   trailing entries plus one batch.
//!
//! Every bound is asserted; the figures are printed. Run with
//! `cargo bench -p synod-raft --bench catch_up` (`BEHIND=100000` for a
//! shorter run).

use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Instant;
use synod_core::protocol::{SnapshotAction, SnapshotMeta};
use synod_core::{ClientId, Command, NodeId, Protocol, Role, Time};
use synod_raft::{Config, Durable, Message, RaftNode, RaftOutput};

const BATCH: u64 = 64;
const SNAPSHOT_INTERVAL: u64 = 10_000;
/// Bytes of the stand-in state machine's snapshot per index it covers.
const SNAPSHOT_BYTES_PER_INDEX: u64 = 8;

/// Wire size of a message, as the node's codec would send it (headers
/// approximated by a fixed 48 bytes).
fn message_bytes(m: &Message) -> usize {
    48 + match m {
        Message::AppendEntries { entries, .. } => entries.iter().map(|e| e.size_bytes()).sum(),
        Message::InstallSnapshot { data, .. } => data.len(),
        _ => 0,
    }
}

#[derive(Default, Debug)]
struct Peaks {
    inflight_bytes: usize,
    message_bytes: usize,
    log_len: usize,
    messages: u64,
    snapshot_chunks: u64,
}

struct Driver {
    nodes: Vec<RaftNode>,
    queue: VecDeque<(NodeId, NodeId, Message, usize)>,
    inflight_bytes: usize,
    out: RaftOutput,
    now: Time,
    seq: u64,
    /// Whether node 3's links drop messages.
    isolated: bool,
    /// Each node's latest snapshot: (index, size in bytes). The bytes are
    /// generated on demand, so the driver's own memory stays flat too.
    snapshots: Vec<Option<SnapshotMeta>>,
    /// Bytes of the partial incoming snapshot per node.
    partial: Vec<u64>,
    peaks: Peaks,
}

impl Driver {
    fn new(config: &Config) -> Driver {
        let nodes = config
            .voters
            .iter()
            .map(|&id| RaftNode::recover(id, config, &Durable::default(), id.0, Time::ZERO))
            .collect::<Vec<_>>();
        let n = nodes.len();
        let mut d = Driver {
            nodes,
            queue: VecDeque::new(),
            inflight_bytes: 0,
            out: RaftOutput::new(),
            now: Time::ZERO,
            seq: 0,
            isolated: false,
            snapshots: vec![None; n],
            partial: vec![0; n],
            peaks: Peaks::default(),
        };
        d.now = d.nodes[0].next_deadline();
        d.nodes[0].tick(d.now, &mut d.out);
        d.flush(0);
        d.deliver_all();
        assert_eq!(d.nodes[0].role(), Role::Leader, "node 1 campaigned first");
        d
    }

    fn cut(&self, from: NodeId, to: NodeId) -> bool {
        self.isolated && (from == NodeId(3) || to == NodeId(3))
    }

    fn flush(&mut self, from: usize) {
        let from_id = self.nodes[from].id();
        let mut out = std::mem::take(&mut self.out);
        for (to, msg) in out.messages.drain(..) {
            if self.cut(from_id, to) {
                continue;
            }
            let size = message_bytes(&msg);
            self.peaks.message_bytes = self.peaks.message_bytes.max(size);
            self.inflight_bytes += size;
            self.peaks.inflight_bytes = self.peaks.inflight_bytes.max(self.inflight_bytes);
            self.queue.push_back((from_id, to, msg, size));
        }
        let actions: Vec<SnapshotAction> = out.snapshots.drain(..).collect();
        out.clear();
        self.out = out;
        for action in actions {
            self.snapshot(from, action);
        }
        self.peaks.log_len = self.peaks.log_len.max(self.nodes[from].log_len());
    }

    /// The host side of the snapshot seam: the snapshot of index `i` is
    /// `SNAPSHOT_BYTES_PER_INDEX * i` bytes, generated on demand.
    fn snapshot(&mut self, i: usize, action: SnapshotAction) {
        let now = self.now;
        match action {
            SnapshotAction::Take { index } => {
                let size = SNAPSHOT_BYTES_PER_INDEX * index;
                self.snapshots[i] = Some(SnapshotMeta { index, epoch: 0, size_bytes: size });
                self.nodes[i].snapshot_taken(now, index, size, &mut self.out);
            }
            SnapshotAction::Read { to, index, offset, max_bytes } => {
                let Some(meta) = self.snapshots[i].filter(|m| m.index == index) else { return };
                let len = (meta.size_bytes - offset).min(max_bytes as u64) as usize;
                self.peaks.snapshot_chunks += 1;
                let data = Bytes::from(vec![0xAB; len]);
                self.nodes[i].snapshot_chunk(now, to, index, offset, data, &mut self.out);
            }
            SnapshotAction::Write { offset, data, .. } => {
                assert_eq!(offset, self.partial[i], "chunks arrive in order");
                self.partial[i] += data.len() as u64;
                return;
            }
            SnapshotAction::Install { meta } => {
                assert_eq!(meta.size_bytes, self.partial[i], "the whole snapshot arrived");
                self.partial[i] = 0;
                self.snapshots[i] = Some(meta);
                return;
            }
        }
        self.flush(i);
    }

    fn deliver_all(&mut self) {
        while let Some((from, to, msg, size)) = self.queue.pop_front() {
            self.inflight_bytes -= size;
            self.peaks.messages += 1;
            let i = to.0 as usize - 1;
            self.nodes[i].step(self.now, from, msg, &mut self.out);
            self.flush(i);
        }
    }

    fn propose_batch(&mut self) {
        let commands = (0..BATCH)
            .map(|_| {
                self.seq += 1;
                Command::new(ClientId(1), self.seq, Bytes::from_static(b"put key value"))
            })
            .collect();
        self.nodes[0].propose(self.now, commands, &mut self.out).expect("the leader accepts");
        self.flush(0);
        self.deliver_all();
    }

    /// Heartbeats until node 3 has every entry the leader has; returns the
    /// heartbeat rounds it took.
    fn catch_up(&mut self) -> u64 {
        let mut rounds = 0;
        while self.nodes[2].last_index() < self.nodes[0].last_index()
            || self.nodes[2].commit_index() < self.nodes[0].commit_index()
        {
            rounds += 1;
            assert!(rounds < 1_000_000, "node 3 never caught up");
            self.now = self.now + self.nodes[0].config().heartbeat_interval;
            self.nodes[0].tick(self.now, &mut self.out);
            self.flush(0);
            self.deliver_all();
        }
        rounds
    }
}

fn run(name: &str, behind: u64, configure: impl FnOnce(&mut Config)) {
    let mut config = Config::new(vec![NodeId(1), NodeId(2), NodeId(3)]);
    config.pre_vote = false;
    configure(&mut config);
    let mut d = Driver::new(&config);
    d.isolated = true;
    let started = Instant::now();
    while d.seq < behind {
        d.propose_batch();
    }
    let fill = started.elapsed();
    assert!(d.nodes[0].commit_index() >= behind, "the leader committed every entry");
    let lag = d.nodes[0].last_index() - d.nodes[2].last_index();
    assert!(lag >= behind, "node 3 is {lag} entries behind");
    d.isolated = false;
    // The longest log counts the filling phase too; the rest is catch-up.
    d.peaks = Peaks { log_len: d.peaks.log_len, ..Peaks::default() };
    let started = Instant::now();
    let rounds = d.catch_up();
    let took = started.elapsed();
    let p = &d.peaks;
    println!(
        "catch_up/{name}: node 3 {lag} entries behind caught up in {:.2} s ({} heartbeat rounds, \
         {} messages, {} snapshot chunks); peak in flight {} KiB, largest message {} KiB, \
         longest in-memory log {} entries (filling the log took {:.2} s)",
        took.as_secs_f64(),
        rounds,
        p.messages,
        p.snapshot_chunks,
        p.inflight_bytes / 1024,
        p.message_bytes / 1024,
        p.log_len,
        fill.as_secs_f64(),
    );
    let c = d.nodes[0].config();
    let message_bound = 48 + c.max_bytes_per_append.max(c.snapshot_chunk_bytes) + 1024;
    assert!(p.message_bytes <= message_bound, "a message of {} bytes", p.message_bytes);
    // To the follower: a window of appends or one snapshot chunk; from it,
    // as many responses (headers only).
    // (This bench's entries are 53 bytes: a 24-byte header and a command.)
    let window = c.max_inflight_appends * (48 + c.max_entries_per_append * 64);
    let inflight_bound = window.max(message_bound) + c.max_inflight_appends * 48 + 4096;
    println!(
        "catch_up/{name}: bound on bytes in flight {} KiB (max_inflight_appends {} x max_entries_per_append {} or one {} KiB snapshot chunk)",
        inflight_bound / 1024,
        c.max_inflight_appends,
        c.max_entries_per_append,
        c.snapshot_chunk_bytes / 1024
    );
    assert!(p.inflight_bytes <= inflight_bound, "{} bytes in flight", p.inflight_bytes);
    if c.snapshot_interval_entries > 0 {
        let log_bound =
            (c.snapshot_interval_entries + c.snapshot_trailing_entries + 2 * BATCH) as usize;
        assert!(p.log_len <= log_bound, "a log of {} entries", p.log_len);
    }
    assert_eq!(d.nodes[2].commit_index(), d.nodes[0].commit_index());
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it too,
    // so keep that run short.
    let quick = std::env::args().all(|a| a != "--bench");
    let behind = std::env::var("BEHIND").ok().and_then(|s| s.parse().ok()).unwrap_or(if quick {
        20_000
    } else {
        1_000_000
    });
    run("log", behind, |_| {});
    run("snapshot", behind, |c| {
        c.snapshot_interval_entries = SNAPSHOT_INTERVAL;
    });
}
