//! A tiny test-only protocol for testing the engine without Raft: a
//! fixed-leader sequencer. Node 1 orders every command, replicates it to the
//! others and commits it once a majority stored it; followers learn the
//! commit index from the leader. There are no elections (node 1 leads in
//! epoch 1 forever), so it is only live while node 1 is up.
//!
//! `SeqBug::StaleReads` makes followers serve reads at once from whatever
//! they have applied — the kind of bug linearizability checking must catch.
//! Every core records the last Append/Ack it received, so a test invariant
//! can check the persistence contract from the receiving side.

use crate::invariant::Invariant;
use crate::protocol::SimProtocol;
use std::time::Duration;
use synod_core::{
    ClientRouting, Command, Committed, Event, NodeId, Output, ProposeError, Protocol, ReadId,
    ReadState, Role, Status, Time, quorum,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum SeqBug {
    #[default]
    None,
    StaleReads,
}

#[derive(Clone, Debug)]
pub(crate) struct SeqConfig {
    pub voters: Vec<NodeId>,
    pub heartbeat: Duration,
    pub bug: SeqBug,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SeqMsg {
    Append { index: u64, command: Option<Command>, commit: u64 },
    Heartbeat { commit: u64 },
    Ack { index: u64 },
}

impl synod_core::Message for SeqMsg {
    fn kind(&self) -> &'static str {
        match self {
            SeqMsg::Append { .. } => "append",
            SeqMsg::Heartbeat { .. } => "heartbeat",
            SeqMsg::Ack { .. } => "ack",
        }
    }
    fn size_bytes(&self) -> usize {
        match self {
            SeqMsg::Append { command: Some(c), .. } => 24 + c.size_bytes(),
            _ => 24,
        }
    }
}

/// One appended log position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SeqWrite {
    pub index: u64,
    pub command: Option<Command>,
}

pub(crate) type SeqOut = Output<SeqMsg, SeqWrite>;

#[derive(Debug)]
pub(crate) struct Seq {
    id: NodeId,
    config: SeqConfig,
    log: Vec<Option<Command>>,
    commit: u64,
    applied: u64,
    match_index: Vec<u64>,
    reads: Vec<(ReadId, u64)>,
    next_heartbeat: Time,
    announced: bool,
    /// The last Append or Ack this node received: (from, index).
    pub last_received: Option<(NodeId, u64)>,
}

impl Seq {
    fn is_leader(&self) -> bool {
        self.id == NodeId(1)
    }

    fn append(&mut self, command: Option<Command>, out: &mut SeqOut) -> u64 {
        let index = self.log.len() as u64 + 1;
        self.log.push(command.clone());
        out.writes.push(SeqWrite { index, command });
        index
    }

    fn advance_commit(&mut self, out: &mut SeqOut) {
        if self.is_leader() {
            let mut m = self.match_index.clone();
            m[0] = self.log.len() as u64;
            self.commit = self.commit.max(quorum::majority_index(&mut m));
        }
        while self.applied < self.commit.min(self.log.len() as u64) {
            self.applied += 1;
            out.committed.push(Committed {
                index: self.applied,
                command: self.log[self.applied as usize - 1].clone(),
                time: None,
            });
        }
        let applied = self.applied;
        self.reads.retain(|&(id, index)| {
            if index <= applied {
                out.reads.push(ReadState { id, index });
                false
            } else {
                true
            }
        });
    }

    fn send_entry(&self, to: NodeId, index: u64, out: &mut SeqOut) {
        let command = self.log[index as usize - 1].clone();
        out.send(to, SeqMsg::Append { index, command, commit: self.commit });
    }
}

impl Protocol for Seq {
    type Config = SeqConfig;
    type Message = SeqMsg;
    type Write = SeqWrite;
    type Durable = Vec<Option<Command>>;

    fn recover(
        id: NodeId,
        config: &SeqConfig,
        durable: &Self::Durable,
        _seed: u64,
        now: Time,
    ) -> Self {
        Seq {
            id,
            config: config.clone(),
            log: durable.clone(),
            commit: 0,
            applied: 0,
            match_index: vec![0; config.voters.len()],
            reads: Vec::new(),
            next_heartbeat: now,
            announced: false,
            last_received: None,
        }
    }

    fn apply_write(durable: &mut Self::Durable, w: &SeqWrite) {
        assert_eq!(w.index, durable.len() as u64 + 1, "sequencer writes are consecutive");
        durable.push(w.command.clone());
    }

    fn id(&self) -> NodeId {
        self.id
    }

    fn tick(&mut self, now: Time, out: &mut SeqOut) {
        self.last_received = None;
        if !self.announced {
            self.announced = true;
            let role = if self.is_leader() { Role::Leader } else { Role::Follower };
            out.events.push(Event::RoleChanged { role, epoch: 1 });
        }
        if self.is_leader() && now >= self.next_heartbeat {
            self.next_heartbeat = now + self.config.heartbeat;
            for &v in &self.config.voters {
                if v != self.id {
                    out.send(v, SeqMsg::Heartbeat { commit: self.commit });
                }
            }
            self.advance_commit(out);
        }
    }

    fn next_deadline(&self) -> Time {
        if !self.announced {
            Time::ZERO
        } else if self.is_leader() {
            self.next_heartbeat
        } else {
            Time::MAX
        }
    }

    fn step(&mut self, _now: Time, from: NodeId, msg: SeqMsg, out: &mut SeqOut) {
        self.last_received = None;
        match msg {
            SeqMsg::Append { index, command, commit } => {
                self.last_received = Some((from, index));
                let len = self.log.len() as u64;
                if index == len + 1 {
                    self.append(command, out);
                }
                if index <= len + 1 {
                    out.send(from, SeqMsg::Ack { index: self.log.len() as u64 });
                }
                self.commit = self.commit.max(commit);
                self.advance_commit(out);
            }
            SeqMsg::Heartbeat { commit } => {
                self.commit = self.commit.max(commit);
                out.send(from, SeqMsg::Ack { index: self.log.len() as u64 });
                self.advance_commit(out);
            }
            SeqMsg::Ack { index } => {
                self.last_received = Some((from, index));
                let f = from.0 as usize - 1;
                self.match_index[f] = self.match_index[f].max(index);
                if self.match_index[f] < self.log.len() as u64 {
                    self.send_entry(from, self.match_index[f] + 1, out);
                }
                self.advance_commit(out);
            }
        }
    }

    fn propose(
        &mut self,
        _now: Time,
        commands: Vec<Command>,
        out: &mut SeqOut,
    ) -> Result<(), ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader { hint: Some(NodeId(1)) });
        }
        for c in commands {
            let index = self.append(Some(c), out);
            for &v in &self.config.voters {
                if v != self.id && self.match_index[v.0 as usize - 1] + 1 == index {
                    self.send_entry(v, index, out);
                }
            }
        }
        self.advance_commit(out);
        Ok(())
    }

    fn read(&mut self, _now: Time, id: ReadId, out: &mut SeqOut) -> Result<(), ProposeError> {
        if !self.is_leader() {
            if self.config.bug == SeqBug::StaleReads {
                out.reads.push(ReadState { id, index: self.applied });
                return Ok(());
            }
            return Err(ProposeError::NotLeader { hint: Some(NodeId(1)) });
        }
        // Every acknowledged write is in the leader's log: wait for it all.
        self.reads.push((id, self.log.len() as u64));
        self.advance_commit(out);
        Ok(())
    }

    fn status(&self) -> Status {
        Status {
            id: self.id,
            role: if self.is_leader() { Role::Leader } else { Role::Follower },
            epoch: 1,
            leader: Some(NodeId(1)),
            commit_index: self.commit,
            applied_index: self.applied,
            last_index: self.log.len() as u64,
        }
    }

    fn client_routing(_: &SeqConfig) -> ClientRouting {
        ClientRouting::Leader
    }
}

impl SimProtocol for Seq {
    fn name() -> &'static str {
        "seq"
    }
    fn sim_config(voters: &[NodeId]) -> SeqConfig {
        SeqConfig {
            voters: voters.to_vec(),
            heartbeat: Duration::from_millis(20),
            bug: SeqBug::None,
        }
    }
    fn inject_bug(config: &mut SeqConfig, bug: &str) -> Result<(), String> {
        match bug {
            "stale-reads" => {
                config.bug = SeqBug::StaleReads;
                Ok(())
            }
            _ => Err(format!("no bug `{bug}`")),
        }
    }
    fn invariants() -> Vec<Box<dyn Invariant<Self>>> {
        crate::invariants::generic_invariants::<Self>()
    }
}
