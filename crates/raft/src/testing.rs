//! A tiny deterministic network for tests (test builds only).
//!
//! [`Cluster`] holds N [`RaftNode`]s and a [`Durable`] per node. After every
//! call into a node it makes the output's writes durable (synchronously),
//! checks the persistence contract and a few cluster-wide safety properties
//! against them, and queues the output's messages; [`Cluster::deliver_all`]
//! delivers queued messages in FIFO order, dropping those on cut links.
//! Time only moves through [`Cluster::run_until`], which fires node timers in
//! deadline order. Messages take no time to arrive.
//!
//! Checked on every output:
//! - the durable state equals the node's term, vote and log (every write the
//!   node's state depends on was emitted, in this output or an earlier one);
//! - every vote request, granted vote, and acknowledgement of entries is
//!   backed by the durable state after this output's writes;
//! - election safety: at most one leader per term;
//! - the commit rule (§5.4.2): a leader's commit index only advances to an
//!   entry of its term;
//! - state machine safety: every node applies the same command at an index,
//!   each index once per incarnation, in order.
//!
//! The cluster is also each node's snapshot host: a snapshot at index `i`
//! is `SNAPSHOT_BYTES_PER_INDEX * i` bytes spelling `i` over and over, so a
//! receiver can check it got every chunk in order. Taking, reading,
//! receiving and installing follow `synod_core::protocol`'s contract.

use crate::config::Config;
use crate::message::Message;
use crate::node::{RaftNode, RaftOutput};
use crate::storage::Durable;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use synod_core::protocol::{SnapshotAction, SnapshotMeta};
use synod_core::{
    ClientId, Command, Committed, Event, NodeId, ProposeError, Protocol, ReadId, ReadState, Role,
    Time,
};

/// Bytes of the test snapshot per index it covers.
pub const SNAPSHOT_BYTES_PER_INDEX: u64 = 3;

/// The test snapshot at `index`: `index` in little-endian bytes, repeated.
pub fn snapshot_bytes(index: u64) -> Vec<u8> {
    let word = index.to_le_bytes();
    (0..SNAPSHOT_BYTES_PER_INDEX * index).map(|i| word[(i % 8) as usize]).collect()
}

/// Most messages one [`Cluster::deliver_all`] delivers before giving up
/// (a bound, so a livelock fails a test instead of hanging it).
const MAX_DELIVERIES: usize = 1_000_000;

/// N Raft nodes over an in-memory FIFO network with synchronous disks.
pub struct Cluster {
    /// The nodes, `nodes[i]` having id `i + 1`.
    pub nodes: Vec<RaftNode>,
    /// What each node has made durable.
    pub durables: Vec<Durable>,
    /// The configuration every node runs with.
    pub config: Config,
    /// The current time.
    pub now: Time,
    queue: VecDeque<(NodeId, NodeId, Message)>,
    /// Links that drop messages, as (from, to).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Everything each node applied, in order (across incarnations).
    pub applied: Vec<Vec<Committed>>,
    /// Reads each node released.
    pub reads: Vec<Vec<ReadState>>,
    /// Events each node reported.
    pub events: Vec<Vec<Event>>,
    /// Every output each node produced, in order.
    pub outputs: Vec<Vec<RaftOutput>>,
    /// Messages delivered so far.
    pub delivered: usize,
    /// Messages of each kind sent so far.
    pub sent_by_kind: BTreeMap<&'static str, usize>,
    leaders_by_term: BTreeMap<u64, NodeId>,
    committed_at: BTreeMap<u64, Option<Command>>,
    next_applied: Vec<u64>,
    last_commit: Vec<u64>,
    /// Record every output in `outputs` (off for long runs).
    pub record_outputs: bool,
    /// Assert election safety and state machine safety (off to count
    /// violations in `violations` instead, to watch an injected bug break
    /// them).
    pub check_safety: bool,
    /// Safety violations seen while `check_safety` is off.
    pub violations: usize,
    /// When set, the state of a generator that reorders and duplicates
    /// messages instead of delivering them in FIFO order.
    pub chaos: Option<u64>,
    /// Each node's durable snapshot store (the latest one).
    pub snapshots: Vec<Option<(SnapshotMeta, Vec<u8>)>>,
    /// Each node's partial incoming snapshot (volatile).
    pub partial: Vec<Option<(u64, Vec<u8>)>>,
    /// Snapshots each node installed from a leader.
    pub installs: Vec<Vec<SnapshotMeta>>,
    /// The largest number of log entries any node held in memory.
    pub max_log_len: usize,
    /// When set, the host fails every snapshot it is asked to take
    /// ([`RaftNode::snapshot_failed`] instead of `snapshot_taken`).
    pub fail_takes: bool,
    /// How many [`SnapshotAction::Take`]s each node emitted.
    pub takes: Vec<usize>,
}

impl Cluster {
    /// A cluster of `n` nodes (ids 1..=n) with the default configuration
    /// changed by `configure`.
    pub fn new(n: u64, configure: impl FnOnce(&mut Config)) -> Cluster {
        Cluster::from_durables(vec![Durable::default(); n as usize], configure)
    }

    /// A cluster whose node `i + 1` recovers from `durables[i]`.
    pub fn from_durables(durables: Vec<Durable>, configure: impl FnOnce(&mut Config)) -> Cluster {
        let n = durables.len() as u64;
        let voters = (1..=n).map(NodeId).collect::<Vec<_>>();
        let mut config = Config::new(voters);
        configure(&mut config);
        let nodes = (1..=n)
            .map(|id| {
                RaftNode::recover(
                    NodeId(id),
                    &config,
                    &durables[id as usize - 1],
                    42 + id,
                    Time::ZERO,
                )
            })
            .collect();
        Cluster {
            nodes,
            durables,
            config,
            now: Time::ZERO,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            applied: vec![Vec::new(); n as usize],
            reads: vec![Vec::new(); n as usize],
            events: vec![Vec::new(); n as usize],
            outputs: vec![Vec::new(); n as usize],
            delivered: 0,
            sent_by_kind: BTreeMap::new(),
            leaders_by_term: BTreeMap::new(),
            committed_at: BTreeMap::new(),
            next_applied: vec![1; n as usize],
            last_commit: vec![0; n as usize],
            record_outputs: true,
            check_safety: true,
            chaos: None,
            violations: 0,
            snapshots: vec![None; n as usize],
            partial: vec![None; n as usize],
            installs: vec![Vec::new(); n as usize],
            max_log_len: 0,
            fail_takes: false,
            takes: vec![0; n as usize],
        }
    }

    fn idx(id: NodeId) -> usize {
        id.0 as usize - 1
    }

    /// Node `id`.
    pub fn node(&self, id: NodeId) -> &RaftNode {
        &self.nodes[Self::idx(id)]
    }

    /// Every node id.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id()).collect()
    }

    /// Makes `out` (produced by `id`) durable, checks it, and queues its
    /// messages.
    pub(crate) fn handle_output(&mut self, id: NodeId, mut out: RaftOutput) {
        let i = Self::idx(id);
        let actions = std::mem::take(&mut out.snapshots);
        // Receiving side first: chunks and installs are durable before the
        // output's writes (which name the installed snapshot).
        for action in &actions {
            self.host_receive(i, action);
        }
        for write in &out.writes {
            RaftNode::apply_write(&mut self.durables[i], write);
        }
        self.check_durable_mirrors_node(id);
        for (to, msg) in &out.messages {
            self.check_message_is_backed(id, *to, msg);
            *self.sent_by_kind.entry(synod_core::Message::kind(msg)).or_default() += 1;
            if !self.cut.contains(&(id, *to)) {
                self.queue.push_back((id, *to, msg.clone()));
            }
        }
        let install = actions.iter().find_map(|a| match a {
            SnapshotAction::Install { meta } => Some(meta.index),
            _ => None,
        });
        for c in &out.committed {
            if install.is_some_and(|at| c.index > at && self.next_applied[i] <= at) {
                self.next_applied[i] = install.unwrap_or_default() + 1;
            }
            assert_eq!(c.index, self.next_applied[i], "{id} applied out of order");
            self.next_applied[i] += 1;
            match self.committed_at.get(&c.index) {
                Some(cmd) if cmd != &c.command => {
                    assert!(!self.check_safety, "{id} applied a different command at {}", c.index);
                    self.violations += 1;
                }
                Some(_) => {}
                None => {
                    self.committed_at.insert(c.index, c.command.clone());
                }
            }
        }
        let node = &self.nodes[i];
        let previous_commit = std::mem::replace(&mut self.last_commit[i], node.commit_index());
        if node.role() == Role::Leader
            && node.commit_index() > previous_commit
            && node.term_at(node.commit_index()) != Some(node.term())
        {
            assert!(!self.check_safety, "{id} committed an earlier-term entry by counting");
            self.violations += 1;
        }
        if node.role() == Role::Leader {
            let previous = self.leaders_by_term.insert(node.term(), id);
            if previous.is_some_and(|p| p != id) {
                assert!(
                    !self.check_safety,
                    "two leaders in term {}: {previous:?} and {id}",
                    node.term()
                );
                self.violations += 1;
            }
        }
        if let Some(at) = install
            && self.next_applied[i] <= at
        {
            self.next_applied[i] = at + 1;
        }
        self.max_log_len = self.max_log_len.max(self.nodes[i].log_len());
        self.applied[i].extend(out.committed.iter().cloned());
        self.reads[i].extend(out.reads.iter().copied());
        self.events[i].extend(out.events.iter().cloned());
        if self.record_outputs {
            out.snapshots = actions.clone();
            self.outputs[i].push(out);
        }
        for action in actions {
            self.host_send(i, action);
        }
    }

    /// The host's receiving side: store chunks, install complete snapshots.
    fn host_receive(&mut self, i: usize, action: &SnapshotAction) {
        match action {
            SnapshotAction::Write { index, offset, data, .. } => {
                if *offset == 0 {
                    self.partial[i] = Some((*index, Vec::new()));
                }
                let (at, bytes) = self.partial[i].as_mut().expect("a chunk after offset 0");
                assert_eq!((*at, bytes.len() as u64), (*index, *offset), "chunk out of order");
                bytes.extend_from_slice(data);
            }
            SnapshotAction::Install { meta } => {
                let (at, bytes) = self.partial[i].take().expect("install after chunks");
                assert_eq!(at, meta.index);
                assert_eq!(bytes, snapshot_bytes(meta.index), "snapshot arrived corrupted");
                self.snapshots[i] = Some((*meta, bytes));
                self.installs[i].push(*meta);
            }
            SnapshotAction::Take { .. } | SnapshotAction::Read { .. } => {}
        }
    }

    /// The host's taking and sending side; calls back into the node.
    fn host_send(&mut self, i: usize, action: SnapshotAction) {
        let now = self.now;
        let mut out = RaftOutput::new();
        match action {
            SnapshotAction::Take { index } => {
                self.takes[i] += 1;
                if self.fail_takes {
                    self.nodes[i].snapshot_failed(now, index);
                    return;
                }
                let bytes = snapshot_bytes(index);
                let size = bytes.len() as u64;
                let meta = SnapshotMeta { index, epoch: 0, size_bytes: size };
                self.snapshots[i] = Some((meta, bytes));
                self.nodes[i].snapshot_taken(now, index, size, &mut out);
            }
            SnapshotAction::Read { to, index, offset, max_bytes } => {
                let Some((meta, bytes)) = &self.snapshots[i] else { return };
                if meta.index != index {
                    return;
                }
                let end = (offset as usize + max_bytes).min(bytes.len());
                let data = Bytes::copy_from_slice(&bytes[offset as usize..end]);
                self.nodes[i].snapshot_chunk(now, to, index, offset, data, &mut out);
            }
            SnapshotAction::Write { .. } | SnapshotAction::Install { .. } => return,
        }
        self.handle_output(NodeId(i as u64 + 1), out);
    }

    fn check_durable_mirrors_node(&self, id: NodeId) {
        let node = self.node(id);
        let d = &self.durables[Self::idx(id)];
        assert_eq!(
            (d.term, d.voted_for),
            (node.term(), node.voted_for()),
            "{id} hard state not persisted"
        );
        assert_eq!(d.last_index(), node.last_index(), "{id} log length not persisted");
        assert_eq!(d.purged_index, node.purged_index(), "{id} purge not persisted");
        assert_eq!(d.snapshot, node.snapshot_meta(), "{id} snapshot not persisted");
        if let Some(last) = d.log.last() {
            assert_eq!(Some(last.term), node.term_at(last.index), "{id} last entry not persisted");
        }
    }

    fn check_message_is_backed(&self, from: NodeId, to: NodeId, msg: &Message) {
        let d = &self.durables[Self::idx(from)];
        match msg {
            Message::RequestVote { term, .. } => {
                assert_eq!(
                    (d.term, d.voted_for),
                    (*term, Some(from)),
                    "{from} asked for votes unpersisted"
                );
            }
            Message::RequestVoteResponse { term, granted: true } => {
                assert_eq!(
                    (d.term, d.voted_for),
                    (*term, Some(to)),
                    "{from} granted a vote unpersisted"
                );
            }
            Message::AppendEntriesResponse { term, success: true, match_index, .. } => {
                assert_eq!(d.term, *term);
                assert!(d.last_index() >= *match_index, "{from} acked entries not durable");
            }
            Message::InstallSnapshotResponse { term, index, done: true, .. } => {
                assert_eq!(d.term, *term);
                assert!(d.snapshot.index >= *index || d.last_index() >= *index);
            }
            Message::PreVote { .. } | Message::PreVoteResponse { .. } => {}
            other => assert!(other.term() <= d.term, "{from} sent a term it has not persisted"),
        }
    }

    /// Delivers queued messages in FIFO order until none is left.
    pub fn deliver_all(&mut self) {
        let mut deliveries = 0;
        while let Some((from, to, msg)) = self.next_message() {
            deliveries += 1;
            assert!(deliveries <= MAX_DELIVERIES, "message storm: livelock?");
            if self.cut.contains(&(from, to)) {
                continue;
            }
            self.delivered += 1;
            let mut out = RaftOutput::new();
            let now = self.now;
            self.nodes[Self::idx(to)].step(now, from, msg, &mut out);
            self.handle_output(to, out);
        }
    }

    /// The next message to deliver: the oldest, or under chaos a random
    /// one, sometimes duplicated.
    fn next_message(&mut self) -> Option<(NodeId, NodeId, Message)> {
        let Some(state) = self.chaos.as_mut() else { return self.queue.pop_front() };
        if self.queue.is_empty() {
            return None;
        }
        *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let draw = (*state >> 33) as usize;
        let picked = self.queue.swap_remove_back(draw % self.queue.len())?;
        if draw.is_multiple_of(16) {
            self.queue.push_back(picked.clone());
        }
        Some(picked)
    }

    /// Delivers at most `n` queued messages (FIFO); returns how many.
    pub fn deliver(&mut self, n: usize) -> usize {
        let mut done = 0;
        while done < n {
            let Some((from, to, msg)) = self.queue.pop_front() else { break };
            done += 1;
            if self.cut.contains(&(from, to)) {
                continue;
            }
            self.delivered += 1;
            let mut out = RaftOutput::new();
            let now = self.now;
            self.nodes[Self::idx(to)].step(now, from, msg, &mut out);
            self.handle_output(to, out);
        }
        done
    }

    /// Drops every queued message.
    pub fn drop_in_flight(&mut self) {
        self.queue.clear();
    }

    /// Ticks node `id` at the current time.
    pub fn tick(&mut self, id: NodeId) {
        let mut out = RaftOutput::new();
        let now = self.now;
        self.nodes[Self::idx(id)].tick(now, &mut out);
        self.handle_output(id, out);
    }

    /// Fires timers in deadline order (delivering every message after each)
    /// until `until`; leaves `now` at `until`.
    pub fn run_until(&mut self, until: Time) {
        self.deliver_all();
        loop {
            let next = self
                .nodes
                .iter()
                .map(|n| (n.next_deadline(), n.id()))
                .min()
                .filter(|&(t, _)| t <= until);
            let Some((t, id)) = next else { break };
            self.now = self.now.max(t);
            self.tick(id);
            self.deliver_all();
        }
        self.now = self.now.max(until);
    }

    /// Runs for `span` of time.
    pub fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        self.run_until(until);
    }

    /// The leader of the highest term among live leaders, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
            .map(|n| n.id())
    }

    /// Runs until some node leads (bounded: panics after 10 s of time).
    pub fn elect(&mut self) -> NodeId {
        let give_up = self.now + Duration::from_secs(10);
        while self.now < give_up {
            if let Some(id) = self.leader() {
                return id;
            }
            self.run_for(Duration::from_millis(10));
        }
        panic!("no leader elected within 10 s");
    }

    /// Proposes `commands` at `id`.
    pub fn propose(&mut self, id: NodeId, commands: Vec<Command>) -> Result<(), ProposeError> {
        let mut out = RaftOutput::new();
        let now = self.now;
        let result = self.nodes[Self::idx(id)].propose(now, commands, &mut out);
        self.handle_output(id, out);
        result
    }

    /// Asks `id` for read barrier `read`.
    pub fn read(&mut self, id: NodeId, read: ReadId) -> Result<(), ProposeError> {
        let mut out = RaftOutput::new();
        let now = self.now;
        let result = self.nodes[Self::idx(id)].read(now, read, &mut out);
        self.handle_output(id, out);
        result
    }

    /// Asks leader `id` to change the membership.
    pub fn change_membership(
        &mut self,
        id: NodeId,
        voters: &[u64],
        learners: &[u64],
    ) -> Result<(), crate::ConfigChangeError> {
        let mut out = RaftOutput::new();
        let now = self.now;
        let voters = voters.iter().map(|&v| NodeId(v)).collect();
        let learners = learners.iter().map(|&v| NodeId(v)).collect();
        let result = self.nodes[Self::idx(id)].change_membership(now, voters, learners, &mut out);
        self.handle_output(id, out);
        result
    }

    /// Asks leader `id` to transfer leadership to `to`.
    pub fn transfer(&mut self, id: NodeId, to: NodeId) -> Result<(), ProposeError> {
        let mut out = RaftOutput::new();
        let now = self.now;
        let result = self.nodes[Self::idx(id)].transfer_leadership(now, to, &mut out);
        self.handle_output(id, out);
        result
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Crashes `id` and restarts it from its durable state.
    pub fn restart(&mut self, id: NodeId, seed: u64) {
        let i = Self::idx(id);
        self.nodes[i] = RaftNode::recover(id, &self.config, &self.durables[i], seed, self.now);
        let snapshot = self.durables[i].snapshot;
        if snapshot.index > 0 {
            let held = self.snapshots[i].as_ref().map(|(m, _)| m.index);
            assert_eq!(held, Some(snapshot.index), "{id} restarts from a snapshot it lacks");
        }
        self.partial[i] = None;
        self.next_applied[i] = snapshot.index + 1;
        self.last_commit[i] = snapshot.index;
    }

    /// Commands applied by `id`, without no-ops.
    pub fn applied_commands(&self, id: NodeId) -> Vec<Command> {
        self.applied[Self::idx(id)].iter().filter_map(|c| c.command.clone()).collect()
    }
}

/// A command from client 1 with sequence number `seq`.
pub fn cmd(seq: u64) -> Command {
    Command::new(ClientId(1), seq, Bytes::from(seq.to_le_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_elects_and_replicates() {
        let mut c = Cluster::new(3, |_| {});
        let leader = c.elect();
        c.propose(leader, vec![cmd(1), cmd(2)]).expect("leader accepts");
        c.run_for(Duration::from_millis(100));
        for id in c.ids() {
            assert_eq!(c.applied_commands(id), vec![cmd(1), cmd(2)], "{id}");
        }
    }

    #[test]
    fn cut_links_drop_messages() {
        let mut c = Cluster::new(3, |_| {});
        let leader = c.elect();
        let other = c.ids().into_iter().find(|&id| id != leader).expect("three nodes");
        c.isolate(other);
        c.propose(leader, vec![cmd(1)]).expect("leader accepts");
        c.deliver_all();
        assert!(c.applied_commands(other).is_empty());
        assert_eq!(c.applied_commands(leader), vec![cmd(1)]);
    }
}
