//! Single-decree Paxos — the Synod protocol of Lamport's "The Part-Time
//! Parliament" and "Paxos Made Simple": a set of nodes agrees on one value.
//!
//! Every [`SynodNode`] plays all three roles:
//!
//! - [`acceptor`]: promises (Phase 1b) and accepts (Phase 2b), with its state
//!   (promised ballot, accepted ballot and value) written durably *before*
//!   it answers — the writes come out in [`Output::writes`](synod_core::Output)
//!   ahead of the messages, the same persistence contract as every core;
//! - [`proposer`]: Phase 1a (prepare) with a fresh ballot, adoption of the
//!   highest-ballot accepted value among a majority of promises, Phase 2a
//!   (accept); duelling proposers back off for a random, growing delay;
//! - [`learner`]: a value is chosen once a majority of acceptors accepted it
//!   in one ballot; acceptors send their Phase 2b to every learner.
//!
//! The safety argument (P2c of "Paxos Made Simple") rests on the proposer
//! proposing the value of the highest-ballot acceptance reported in a
//! majority of promises. [`InjectedBug::IgnorePromisedValues`] breaks exactly
//! that; the deterministic mini-simulation in this module's tests catches it.

pub mod acceptor;
pub mod learner;
pub mod node;
pub mod proposer;

#[cfg(test)]
mod sim_tests;

pub use acceptor::{Acceptor, AcceptorState};
pub use learner::Learner;
pub use node::{SynodConfig, SynodNode, SynodOutput};
pub use proposer::Proposer;

use crate::ballot::Ballot;
use bytes::Bytes;

/// The value agreed on: opaque bytes.
pub type Value = Bytes;

/// A deliberately broken behaviour, to prove the checker catches it. Never
/// set outside tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InjectedBug {
    /// Correct Paxos.
    #[default]
    None,
    /// The proposer ignores the accepted values reported in promises and
    /// always proposes its own value (breaks P2c).
    IgnorePromisedValues,
}

/// A message between Synod nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Phase 1a: "promise not to accept anything below `ballot`".
    Prepare {
        /// The proposer's ballot.
        ballot: Ballot,
    },
    /// Phase 1b: the promise, with the highest-ballot proposal this acceptor
    /// accepted, if any.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// The acceptor's highest accepted proposal.
        accepted: Option<(Ballot, Value)>,
    },
    /// A refusal: the acceptor promised `promised`, above `ballot`.
    Nack {
        /// The ballot refused.
        ballot: Ballot,
        /// What the acceptor promised.
        promised: Ballot,
    },
    /// Phase 2a: "accept `value` in `ballot`".
    Accept {
        /// The proposer's ballot.
        ballot: Ballot,
        /// The value proposed.
        value: Value,
    },
    /// Phase 2b, sent to every learner: "I accepted `value` in `ballot`".
    Accepted {
        /// The ballot.
        ballot: Ballot,
        /// The value accepted.
        value: Value,
    },
}

impl synod_core::Message for Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::Prepare { .. } => "prepare",
            Message::Promise { .. } => "promise",
            Message::Nack { .. } => "nack",
            Message::Accept { .. } => "accept",
            Message::Accepted { .. } => "accepted",
        }
    }

    fn size_bytes(&self) -> usize {
        const HEADER: usize = 32;
        match self {
            Message::Promise { accepted: Some((_, v)), .. } => HEADER + 16 + v.len(),
            Message::Accept { value, .. } | Message::Accepted { value, .. } => HEADER + value.len(),
            _ => HEADER,
        }
    }
}

/// One durable write of an acceptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// The acceptor promised `ballot`.
    Promise {
        /// The ballot.
        ballot: Ballot,
    },
    /// The acceptor accepted `value` in `ballot` (which it also promised).
    Accept {
        /// The ballot.
        ballot: Ballot,
        /// The value.
        value: Value,
    },
}
