//! The Raft node: the [`Protocol`] implementation. (Stub: the bodies are
//! being written; the signatures and accessors are the contract the simulator
//! and its checkers rely on.)

use crate::config::Config;
use crate::entry::Entry;
use crate::message::Message;
use crate::storage::{Durable, Write};
use synod_core::{
    ClientRouting, Command, NodeId, Output, ProposeError, Protocol, ReadId, Role, Status, Time,
};

/// Output type of the Raft core.
pub type RaftOutput = Output<Message, Write>;

/// One Raft replica's protocol state.
#[derive(Debug)]
pub struct RaftNode {
    id: NodeId,
}

impl RaftNode {
    /// The current term.
    pub fn term(&self) -> u64 {
        todo!()
    }
    /// The vote cast in the current term.
    pub fn voted_for(&self) -> Option<NodeId> {
        todo!()
    }
    /// The role.
    pub fn role(&self) -> Role {
        todo!()
    }
    /// The leader this node knows of in its current term.
    pub fn leader(&self) -> Option<NodeId> {
        todo!()
    }
    /// Highest index known committed.
    pub fn commit_index(&self) -> u64 {
        todo!()
    }
    /// Highest index emitted in `Output::committed`.
    pub fn applied_index(&self) -> u64 {
        todo!()
    }
    /// Index of the last log entry (0 when empty).
    pub fn last_index(&self) -> u64 {
        todo!()
    }
    /// Term of the entry at `index` (`Some(0)` for index 0, `None` when absent).
    pub fn term_at(&self, index: u64) -> Option<u64> {
        let _ = index;
        todo!()
    }
    /// The entry at `index`, if held.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        let _ = index;
        todo!()
    }
    /// Asks the leader to hand leadership to `to` (thesis §3.10).
    pub fn transfer_leadership(
        &mut self,
        now: Time,
        to: NodeId,
        out: &mut RaftOutput,
    ) -> Result<(), ProposeError> {
        let _ = (now, to, out);
        todo!()
    }
}

impl Protocol for RaftNode {
    type Config = Config;
    type Message = Message;
    type Write = Write;
    type Durable = Durable;

    fn recover(id: NodeId, config: &Config, durable: &Durable, seed: u64, now: Time) -> Self {
        let _ = (config, durable, seed, now);
        RaftNode { id }
    }
    fn apply_write(durable: &mut Durable, write: &Write) {
        durable.apply(write)
    }
    fn id(&self) -> NodeId {
        self.id
    }
    fn tick(&mut self, now: Time, out: &mut RaftOutput) {
        let _ = (now, out);
        todo!()
    }
    fn next_deadline(&self) -> Time {
        todo!()
    }
    fn step(&mut self, now: Time, from: NodeId, msg: Message, out: &mut RaftOutput) {
        let _ = (now, from, msg, out);
        todo!()
    }
    fn propose(
        &mut self,
        now: Time,
        commands: Vec<Command>,
        out: &mut RaftOutput,
    ) -> Result<(), ProposeError> {
        let _ = (now, commands, out);
        todo!()
    }
    fn read(&mut self, now: Time, id: ReadId, out: &mut RaftOutput) -> Result<(), ProposeError> {
        let _ = (now, id, out);
        todo!()
    }
    fn status(&self) -> Status {
        todo!()
    }
    fn client_routing(_config: &Config) -> ClientRouting {
        ClientRouting::Leader
    }
}
