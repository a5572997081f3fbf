//! A Synod node: one acceptor, one proposer and one learner behind a
//! sans-IO interface (`propose` / `step` / `tick` filling a
//! [`synod_core::Output`]).
//!
//! Messages a node sends to itself are handled at once, inside the same
//! call, so its own acceptor's writes land in the same output ahead of every
//! message — the driver syncs them before anything leaves.

use super::acceptor::{Acceptor, AcceptorState};
use super::learner::Learner;
use super::proposer::Proposer;
use super::{InjectedBug, Message, Value, Write};
use crate::timer::RandomTimer;
use std::time::Duration;
use synod_core::{NodeId, Output, Time};

/// What a Synod node's calls fill.
pub type SynodOutput = Output<Message, Write>;

/// Messages handled locally per call, at most (a bound on the self-loop).
const MAX_LOCAL_MESSAGES: usize = 1024;

/// Configuration of a Synod node.
#[derive(Clone, Debug)]
pub struct SynodConfig {
    /// Every node (each is acceptor, proposer and learner).
    pub nodes: Vec<NodeId>,
    /// Lower bound of the retry / back-off delay.
    pub retry_min: Duration,
    /// Upper bound (exclusive) of the retry / back-off delay.
    pub retry_max: Duration,
    /// A bug to inject (tests only).
    pub bug: InjectedBug,
}

impl SynodConfig {
    /// Defaults for `nodes`: retries after 20–40 ms.
    pub fn new(nodes: Vec<NodeId>) -> SynodConfig {
        SynodConfig {
            nodes,
            retry_min: Duration::from_millis(20),
            retry_max: Duration::from_millis(40),
            bug: InjectedBug::None,
        }
    }
}

/// One node of single-decree Paxos.
#[derive(Clone, Debug)]
pub struct SynodNode {
    id: NodeId,
    acceptor: Acceptor,
    proposer: Proposer,
    learner: Learner,
    sends: Vec<(NodeId, Message)>,
}

impl SynodNode {
    /// Builds (or rebuilds after a crash) node `id` from its durable acceptor
    /// state. `seed` drives its back-off delays.
    pub fn recover(
        id: NodeId,
        config: &SynodConfig,
        durable: &AcceptorState,
        seed: u64,
        now: Time,
    ) -> SynodNode {
        let seed = seed ^ id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let timer = RandomTimer::new(seed, config.retry_min, config.retry_max, now);
        SynodNode {
            id,
            acceptor: Acceptor::new(durable.clone()),
            proposer: Proposer::new(id, config.nodes.clone(), durable.promised, timer, config.bug),
            learner: Learner::new(config.nodes.clone()),
            sends: Vec::new(),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The value this node learned was chosen.
    pub fn chosen(&self) -> Option<&Value> {
        self.learner.chosen()
    }

    /// The acceptor's state.
    pub fn acceptor(&self) -> &AcceptorState {
        self.acceptor.state()
    }

    /// The proposer.
    pub fn proposer(&self) -> &Proposer {
        &self.proposer
    }

    /// When [`tick`](Self::tick) has work to do.
    pub fn next_deadline(&self) -> Time {
        self.proposer.deadline()
    }

    /// Asks this node to get `value` chosen (or learn what was).
    pub fn propose(&mut self, now: Time, value: Value, out: &mut SynodOutput) {
        if self.learner.chosen().is_none() {
            self.proposer.propose(now, value, &mut self.sends);
        }
        self.flush(now, out);
    }

    /// Time passed.
    pub fn tick(&mut self, now: Time, out: &mut SynodOutput) {
        self.proposer.tick(now, &mut self.sends);
        self.flush(now, out);
    }

    /// A message arrived from `from`.
    pub fn step(&mut self, now: Time, from: NodeId, msg: Message, out: &mut SynodOutput) {
        self.handle(now, from, msg, out);
        self.flush(now, out);
    }

    fn handle(&mut self, now: Time, from: NodeId, msg: Message, out: &mut SynodOutput) {
        match msg {
            Message::Prepare { ballot } => {
                self.proposer.saw(ballot);
                let reply = self.acceptor.on_prepare(ballot, &mut out.writes);
                self.sends.push((from, reply));
            }
            Message::Accept { ballot, value } => {
                self.proposer.saw(ballot);
                match self.acceptor.on_accept(ballot, &value, &mut out.writes) {
                    accepted @ Message::Accepted { .. } => {
                        for &to in self.learner.acceptors() {
                            self.sends.push((to, accepted.clone()));
                        }
                    }
                    nack => self.sends.push((from, nack)),
                }
            }
            Message::Promise { ballot, accepted } => {
                self.proposer.on_promise(from, ballot, accepted, &mut self.sends)
            }
            Message::Nack { ballot, promised } => self.proposer.on_nack(now, ballot, promised),
            Message::Accepted { ballot, value } => {
                if self.learner.on_accepted(from, ballot, &value).is_some() {
                    self.proposer.on_chosen();
                }
            }
        }
    }

    /// Sends what the roles queued; messages to this node are handled here
    /// and now (bounded by [`MAX_LOCAL_MESSAGES`]).
    fn flush(&mut self, now: Time, out: &mut SynodOutput) {
        let mut local = 0;
        while let Some((to, msg)) = self.sends.pop() {
            if to != self.id {
                out.send(to, msg);
                continue;
            }
            local += 1;
            assert!(local <= MAX_LOCAL_MESSAGES, "self-messages do not converge");
            self.handle(now, self.id, msg, out);
        }
    }
}
