//! Tests of the Multi-Paxos node over a tiny deterministic cluster: calls
//! in, exact messages and commits out. The cluster is also a snapshot host:
//! a node's "state machine" is the list of positions it applied, and a
//! snapshot's bytes are that list encoded, so a transfer that loses,
//! repeats or reorders bytes shows up as a wrong state after install.

use super::*;
use crate::multi::message::Value;
use bytes::Bytes;
use std::collections::VecDeque;
use synod_core::ClientId;
use synod_core::protocol::SnapshotAction;

pub(super) struct Cluster {
    pub(super) config: Config,
    pub(super) nodes: Vec<Option<PaxosNode>>,
    pub(super) disks: Vec<Durable>,
    pub(super) queue: VecDeque<(NodeId, NodeId, Message)>,
    /// Per node, every position applied (the state machine).
    pub(super) committed: Vec<Vec<Committed>>,
    pub(super) reads: Vec<Vec<synod_core::ReadState>>,
    pub(super) now: Time,
    pub(super) sent: Vec<&'static str>,
    /// Per node, the durable snapshot store: (position, bytes).
    pub(super) snapshots: Vec<Vec<(u64, Bytes)>>,
    /// Per node, the partial snapshot being received (volatile).
    pub(super) partial: Vec<Option<(u64, Vec<u8>)>>,
    /// While set, every `Take` fails (the host calls `snapshot_failed`).
    pub(super) fail_takes: bool,
    /// Per node, how many `Take`s the core asked for.
    pub(super) takes: Vec<u64>,
}

/// A state's bytes: per position 8 bytes, the command's seq (or all ones
/// for a no-op).
pub(super) fn encode(state: &[Committed]) -> Bytes {
    state
        .iter()
        .flat_map(|c| c.command.as_ref().map_or(u64::MAX, |c| c.seq).to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

fn decode(bytes: &[u8]) -> Vec<Committed> {
    bytes
        .chunks(8)
        .enumerate()
        .map(|(i, b)| {
            let seq = u64::from_le_bytes(b.try_into().expect("8 bytes"));
            let command = (seq != u64::MAX).then(|| cmd(seq));
            Committed { index: i as u64 + 1, command, time: None }
        })
        .collect()
}

pub(super) fn cmd(seq: u64) -> Command {
    Command::new(ClientId(1), seq, Bytes::from(format!("op{seq}")))
}

#[allow(dead_code)]
impl Cluster {
    pub(super) fn new(n: u64) -> Cluster {
        Cluster::with_config(Config::new((1..=n).map(NodeId).collect()))
    }

    pub(super) fn with_config(config: Config) -> Cluster {
        let n = config.voters.len();
        let nodes = config
            .voters
            .iter()
            .map(|&id| Some(PaxosNode::recover(id, &config, &Durable::default(), 7, Time::ZERO)))
            .collect();
        Cluster {
            config,
            nodes,
            disks: vec![Durable::default(); n],
            queue: VecDeque::new(),
            committed: vec![Vec::new(); n],
            reads: vec![Vec::new(); n],
            now: Time::ZERO,
            sent: Vec::new(),
            snapshots: vec![Vec::new(); n],
            partial: vec![None; n],
            fail_takes: false,
            takes: vec![0; n],
        }
    }

    pub(super) fn node(&self, id: u64) -> &PaxosNode {
        self.nodes[id as usize - 1].as_ref().expect("live")
    }

    /// Calls into node `id` and carries out the output (with the snapshot
    /// contract of `synod_core::protocol`).
    pub(super) fn call<R>(
        &mut self,
        id: u64,
        f: impl FnOnce(&mut PaxosNode, Time, &mut PaxosOutput) -> R,
    ) -> R {
        let i = id as usize - 1;
        let mut out = PaxosOutput::new();
        let now = self.now;
        let r = f(self.nodes[i].as_mut().expect("live"), now, &mut out);
        self.carry_out(id, out);
        r
    }

    fn carry_out(&mut self, id: u64, out: PaxosOutput) {
        let i = id as usize - 1;
        let now = self.now;
        // 0. Received chunks and installs reach the snapshot store first.
        for a in &out.snapshots {
            match a {
                SnapshotAction::Write { index, offset, data, .. } => {
                    if *offset == 0 {
                        self.partial[i] = Some((*index, Vec::new()));
                    }
                    let (at, bytes) = self.partial[i].as_mut().expect("a partial snapshot");
                    assert_eq!((*at, bytes.len() as u64), (*index, *offset), "chunk out of order");
                    bytes.extend_from_slice(data);
                }
                SnapshotAction::Install { meta } => {
                    let (at, bytes) = self.partial[i].take().expect("chunks before install");
                    assert_eq!((at, bytes.len() as u64), (meta.index, meta.size_bytes));
                    self.snapshots[i].push((meta.index, bytes.into()));
                }
                _ => {}
            }
        }
        // 1. Writes (durable at once here), 2. messages.
        for w in &out.writes {
            self.disks[i].apply(w);
        }
        for (to, msg) in out.messages {
            self.sent.push(synod_core::Message::kind(&msg));
            self.queue.push_back((NodeId(id), to, msg));
        }
        // 3. Committed positions, snapshot actions at theirs.
        let mut taken = Vec::new();
        let mut positioned = out.snapshots.iter().filter(|a| a.position().is_some()).peekable();
        for c in out.committed {
            while let Some(a) = positioned.next_if(|a| a.position() < Some(c.index)) {
                taken.extend(self.at_position(i, a));
            }
            assert_eq!(c.index, self.committed[i].len() as u64 + 1, "positions are consecutive");
            self.committed[i].push(c);
        }
        for a in positioned {
            taken.extend(self.at_position(i, a));
        }
        self.reads[i].extend(out.reads);
        // Calls back into the core.
        for (index, size) in taken {
            let mut out = PaxosOutput::new();
            let node = self.nodes[i].as_mut().expect("live");
            match size {
                Some(size) => node.snapshot_taken(now, index, size, &mut out),
                None => node.snapshot_failed(now, index),
            }
            self.carry_out(id, out);
        }
        for a in out.snapshots {
            if let SnapshotAction::Read { to, index, offset, max_bytes } = a {
                let Some((_, bytes)) = self.snapshots[i].iter().rev().find(|s| s.0 == index) else {
                    continue;
                };
                let end = (offset as usize + max_bytes).min(bytes.len());
                let data = bytes.slice(offset as usize..end);
                let mut out = PaxosOutput::new();
                let node = self.nodes[i].as_mut().expect("live");
                node.snapshot_chunk(now, to, index, offset, data, &mut out);
                self.carry_out(id, out);
            }
        }
    }

    /// A `Take` or `Install` at its position: returns a snapshot taken
    /// (its position and size; no size if the take failed).
    fn at_position(&mut self, i: usize, a: &SnapshotAction) -> Option<(u64, Option<u64>)> {
        match a {
            SnapshotAction::Take { index } => {
                assert_eq!(*index, self.committed[i].len() as u64, "take at the applied position");
                self.takes[i] += 1;
                if self.fail_takes {
                    return Some((*index, None));
                }
                let bytes = encode(&self.committed[i]);
                let size = bytes.len() as u64;
                self.snapshots[i].push((*index, bytes));
                Some((*index, Some(size)))
            }
            SnapshotAction::Install { meta } => {
                let (_, bytes) = self.snapshots[i].iter().rev().find(|s| s.0 == meta.index)?;
                let state = decode(bytes);
                assert!(state.len() >= self.committed[i].len(), "an install never goes back");
                assert_eq!(&state[..self.committed[i].len()], &self.committed[i][..]);
                self.committed[i] = state;
                None
            }
            _ => None,
        }
    }

    pub(super) fn campaign(&mut self, id: u64) {
        let deadline = self.node(id).next_deadline();
        self.now = self.now.max(deadline);
        self.call(id, |n, now, out| n.tick(now, out));
    }

    /// Delivers queued messages (dropping those `drop` selects) until none
    /// is left.
    pub(super) fn deliver(&mut self, drop: impl Fn(NodeId, NodeId, &Message) -> bool) {
        for _ in 0..10_000 {
            let Some((from, to, msg)) = self.queue.pop_front() else { return };
            if drop(from, to, &msg) || self.nodes[to.0 as usize - 1].is_none() {
                continue;
            }
            self.call(to.0, |n, now, out| n.step(now, from, msg, out));
        }
        panic!("messages do not quiesce");
    }

    pub(super) fn deliver_all(&mut self) {
        self.deliver(|_, _, _| false);
    }

    pub(super) fn crash(&mut self, id: u64) {
        self.nodes[id as usize - 1] = None;
        self.committed[id as usize - 1].clear();
        self.partial[id as usize - 1] = None;
    }

    /// Restarts `id` from its disk, loading the snapshot its core names.
    pub(super) fn restart(&mut self, id: u64) {
        let i = id as usize - 1;
        let node = PaxosNode::recover(NodeId(id), &self.config, &self.disks[i], 9, self.now);
        if let Some(meta) = node.snapshot() {
            let (_, bytes) = self.snapshots[i]
                .iter()
                .rev()
                .find(|s| s.0 == meta.index)
                .expect("the snapshot the core recovers from is stored");
            self.committed[i] = decode(bytes);
        }
        self.nodes[i] = Some(node);
    }

    /// Time passes by `ms`; every live node ticks (once).
    pub(super) fn advance(&mut self, ms: u64) {
        self.now = self.now + std::time::Duration::from_millis(ms);
        for id in 1..=self.nodes.len() as u64 {
            if self.nodes[id as usize - 1].is_some() {
                self.call(id, |n, now, out| n.tick(now, out));
            }
        }
    }

    pub(super) fn commands(&self, id: u64) -> Vec<Option<u64>> {
        self.committed[id as usize - 1].iter().map(|c| c.command.as_ref().map(|c| c.seq)).collect()
    }

    /// The client commands committed at `id`, without no-ops.
    pub(super) fn client_commands(&self, id: u64) -> Vec<u64> {
        self.commands(id).into_iter().flatten().collect()
    }
}

#[test]
fn a_single_node_leads_and_commits_at_once() {
    let mut c = Cluster::new(1);
    c.campaign(1);
    assert_eq!(c.node(1).role(), Role::Leader);
    c.call(1, |n, now, out| n.propose(now, vec![cmd(1), cmd(2)], out)).expect("leader");
    assert_eq!(
        c.commands(1),
        vec![None, Some(1), Some(2)],
        "the leader's own no-op, then one position per command of the batch"
    );
    assert_eq!(c.committed[0].iter().map(|c| c.index).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(c.node(1).chosen_slot(), 2, "the no-op's slot and the batch's");
}

#[test]
fn steady_state_costs_one_accept_and_one_accepted_per_follower() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    assert_eq!(c.node(1).role(), Role::Candidate);
    c.deliver_all();
    assert_eq!(c.node(1).role(), Role::Leader);
    assert_eq!(c.node(2).leader(), Some(NodeId(1)), "the first heartbeat announces the leader");
    c.sent.clear();
    c.call(1, |n, now, out| n.propose(now, vec![cmd(1)], out)).expect("leader");
    c.deliver_all();
    assert_eq!(c.sent, vec!["accept", "accept", "accepted", "accepted"]);
    assert_eq!(c.client_commands(1), vec![1]);
    // Followers learn the choice from the next message of the leader.
    assert!(c.client_commands(2).is_empty());
    c.call(1, |n, now, out| n.propose(now, vec![cmd(2)], out)).expect("leader");
    c.deliver_all();
    assert_eq!(c.client_commands(2), vec![1], "chosen notification piggybacked on the accept");
    c.now = c.now + std::time::Duration::from_millis(60);
    c.call(1, |n, now, out| n.tick(now, out));
    c.deliver_all();
    assert_eq!(c.commands(3), vec![None, Some(1), Some(2)], "and on the heartbeat");
}

#[test]
fn a_new_leader_adopts_an_accepted_value_and_fills_holes_with_noops() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.deliver_all();
    // Slot 1 is n1's no-op. Slot 2 reaches only n2; slot 3 reaches
    // nobody; slot 4 reaches n2.
    c.call(1, |n, now, out| n.propose(now, vec![cmd(1)], out)).unwrap();
    c.call(1, |n, now, out| n.propose(now, vec![cmd(2)], out)).unwrap();
    c.call(1, |n, now, out| n.propose(now, vec![cmd(3)], out)).unwrap();
    c.deliver(|from, to, msg| {
        from == NodeId(1)
            && (to == NodeId(3)
                || matches!(msg, Message::Accept { first_slot: 3, values, .. } if !values.is_empty()))
    });
    assert!(c.client_commands(1).len() <= 1);
    c.crash(1);
    c.campaign(2);
    c.deliver_all();
    assert_eq!(c.node(2).role(), Role::Leader);
    c.call(2, |n, now, out| n.propose(now, vec![cmd(4)], out)).unwrap();
    c.deliver_all();
    // n1's no-op, the adopted command, the filled hole, the adopted
    // command, n2's own no-op, the new command.
    assert_eq!(c.commands(2), vec![None, Some(1), None, Some(3), None, Some(4)]);
    assert_eq!(c.node(2).entry(3).map(|e| e.value.clone()), Some(Value::Noop));
}

#[test]
fn the_broken_leader_replaces_accepted_values_with_noops() {
    let mut config = Config::new((1..=3).map(NodeId).collect());
    config.bug = InjectedBug::IgnorePromisedValues;
    let mut c = Cluster::with_config(config);
    c.campaign(1);
    c.deliver_all();
    c.call(1, |n, now, out| n.propose(now, vec![cmd(1)], out)).unwrap();
    c.deliver(|from, to, _| from == NodeId(1) && to == NodeId(3));
    assert_eq!(c.client_commands(1), vec![1], "chosen by n1 and n2");
    c.crash(1);
    c.campaign(2);
    c.deliver_all();
    c.call(2, |n, now, out| n.propose(now, vec![cmd(2)], out)).unwrap();
    c.deliver_all();
    assert_eq!(c.commands(2), vec![None, None, None, Some(2)], "the chosen command was lost");
}

#[test]
fn a_restarted_follower_catches_up_on_chosen_slots() {
    let mut config = Config::new((1..=3).map(NodeId).collect());
    config.max_values_per_accept = 2;
    let mut c = Cluster::with_config(config);
    c.campaign(1);
    c.deliver_all();
    c.crash(3);
    for seq in 1..=5 {
        c.call(1, |n, now, out| n.propose(now, vec![cmd(seq)], out)).unwrap();
    }
    c.deliver_all();
    assert_eq!(c.node(1).chosen_slot(), 6, "the leader's no-op and five commands");
    c.restart(3);
    c.now = c.now + std::time::Duration::from_millis(60);
    c.call(1, |n, now, out| n.tick(now, out));
    c.deliver_all();
    assert_eq!(c.client_commands(3), (1..=5).collect::<Vec<_>>());
}

#[test]
fn a_stale_leader_is_refused_and_the_new_one_keeps_the_chosen_prefix() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.deliver_all();
    c.call(1, |n, now, out| n.propose(now, vec![cmd(1)], out)).unwrap();
    c.deliver_all();
    // n2 takes over while n1 is cut off.
    c.now = c.now + std::time::Duration::from_secs(1);
    c.campaign(2);
    c.deliver(|_, to, _| to == NodeId(1));
    assert_eq!(c.node(2).role(), Role::Leader);
    c.call(1, |n, now, out| n.propose(now, vec![cmd(2)], out)).unwrap();
    c.deliver(|from, to, _| from == NodeId(2) && to == NodeId(1));
    assert_ne!(c.node(1).role(), Role::Leader, "refused by a higher promise");
    c.call(2, |n, now, out| n.propose(now, vec![cmd(3)], out)).unwrap();
    c.deliver_all();
    assert_eq!(c.client_commands(2), vec![1, 3]);
}

#[test]
fn a_read_waits_for_a_majority_round_in_the_leaders_ballot() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.deliver_all();
    c.call(1, |n, now, out| n.propose(now, vec![cmd(1)], out)).unwrap();
    c.deliver_all();
    c.call(1, |n, now, out| n.read(now, ReadId(7), out)).unwrap();
    assert!(c.reads[0].is_empty(), "not before a majority confirmed");
    c.deliver(|_, to, _| to == NodeId(3));
    assert_eq!(c.reads[0], vec![synod_core::ReadState { id: ReadId(7), index: 2 }]);
    assert_eq!(
        c.call(2, |n, now, out| n.read(now, ReadId(8), out)),
        Err(ProposeError::NotLeader { hint: Some(NodeId(1)) })
    );
}

#[test]
fn the_pipeline_window_bounds_slots_in_flight() {
    let mut config = Config::new((1..=3).map(NodeId).collect());
    config.max_inflight_slots = 2;
    let mut c = Cluster::with_config(config);
    c.campaign(1);
    c.deliver_all();
    c.call(1, |n, now, out| n.propose(now, vec![cmd(1)], out)).unwrap();
    c.call(1, |n, now, out| n.propose(now, vec![cmd(2)], out)).unwrap();
    let busy = c.call(1, |n, now, out| n.propose(now, vec![cmd(3)], out));
    assert_eq!(busy, Err(ProposeError::Busy("too many slots in flight")));
    c.deliver_all();
    c.call(1, |n, now, out| n.propose(now, vec![cmd(3)], out)).unwrap();
}

#[test]
fn a_restarted_node_keeps_its_promise_and_acceptances() {
    let mut c = Cluster::new(3);
    c.campaign(1);
    c.deliver_all();
    c.call(1, |n, now, out| n.propose(now, vec![cmd(1)], out)).unwrap();
    c.deliver_all();
    let promised = c.node(2).promised();
    c.crash(2);
    c.restart(2);
    assert_eq!(c.node(2).promised(), promised);
    assert_eq!(c.node(2).entry(1).map(|e| e.ballot), Some(promised));
    assert_eq!(c.node(2).status().epoch, promised.round);
}
