//! The acceptor ("Paxos Made Simple" §2.2, P1a and P2b): it promises the
//! highest ballot it has seen and accepts a proposal unless it promised a
//! higher ballot.
//!
//! Every state change is pushed as a [`Write`] before the answer that
//! depends on it: a promise or an acceptance must survive a crash once
//! anyone heard of it.

use super::{Message, Value, Write};
use crate::ballot::Ballot;

/// What an acceptor keeps on disk (and recovers from).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcceptorState {
    /// The highest ballot promised.
    pub promised: Ballot,
    /// The highest-ballot proposal accepted.
    pub accepted: Option<(Ballot, Value)>,
}

impl AcceptorState {
    /// Applies one synced write.
    pub fn apply(&mut self, write: &Write) {
        match write {
            Write::Promise { ballot } => self.promised = self.promised.max(*ballot),
            Write::Accept { ballot, value } => {
                self.promised = self.promised.max(*ballot);
                self.accepted = Some((*ballot, value.clone()));
            }
        }
    }
}

/// An acceptor.
#[derive(Clone, Debug, Default)]
pub struct Acceptor {
    state: AcceptorState,
}

impl Acceptor {
    /// An acceptor recovered from `state`.
    pub fn new(state: AcceptorState) -> Acceptor {
        Acceptor { state }
    }

    /// Its state.
    pub fn state(&self) -> &AcceptorState {
        &self.state
    }

    /// Phase 1b: promises `ballot` if it is at least the promised one
    /// (a repeated prepare gets the same promise again). Returns the answer;
    /// a new promise is pushed to `writes` first.
    pub fn on_prepare(&mut self, ballot: Ballot, writes: &mut Vec<Write>) -> Message {
        if ballot < self.state.promised {
            return Message::Nack { ballot, promised: self.state.promised };
        }
        if ballot > self.state.promised {
            self.state.promised = ballot;
            writes.push(Write::Promise { ballot });
        }
        Message::Promise { ballot, accepted: self.state.accepted.clone() }
    }

    /// Phase 2b: accepts `value` in `ballot` unless a higher ballot was
    /// promised. Returns the answer (an `Accepted` for every learner, or a
    /// `Nack` for the proposer); the acceptance is pushed to `writes` first.
    pub fn on_accept(&mut self, ballot: Ballot, value: &Value, writes: &mut Vec<Write>) -> Message {
        if ballot < self.state.promised {
            return Message::Nack { ballot, promised: self.state.promised };
        }
        let already = self.state.accepted.as_ref().is_some_and(|(b, v)| *b == ballot && v == value);
        if !already {
            self.state.promised = ballot;
            self.state.accepted = Some((ballot, value.clone()));
            writes.push(Write::Accept { ballot, value: value.clone() });
        }
        assert!(self.state.promised >= ballot, "accepted below the promise");
        Message::Accepted { ballot, value: value.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::NodeId;

    fn b(round: u64, node: u64) -> Ballot {
        Ballot::new(round, NodeId(node))
    }

    #[test]
    fn promises_only_upwards_and_reports_the_accepted_proposal() {
        let mut a = Acceptor::default();
        let mut writes = Vec::new();
        assert_eq!(
            a.on_prepare(b(2, 1), &mut writes),
            Message::Promise { ballot: b(2, 1), accepted: None }
        );
        assert_eq!(writes, vec![Write::Promise { ballot: b(2, 1) }]);
        writes.clear();
        assert_eq!(
            a.on_prepare(b(1, 3), &mut writes),
            Message::Nack { ballot: b(1, 3), promised: b(2, 1) }
        );
        assert!(writes.is_empty(), "a refusal changes nothing");
        let v = Value::from_static(b"x");
        assert!(matches!(a.on_accept(b(2, 1), &v, &mut writes), Message::Accepted { .. }));
        writes.clear();
        assert_eq!(
            a.on_prepare(b(3, 2), &mut writes),
            Message::Promise { ballot: b(3, 2), accepted: Some((b(2, 1), v.clone())) }
        );
        assert!(matches!(a.on_accept(b(2, 1), &v, &mut writes), Message::Nack { .. }));
    }

    #[test]
    fn the_state_rebuilt_from_writes_is_the_state() {
        let mut a = Acceptor::default();
        let mut writes = Vec::new();
        a.on_prepare(b(1, 1), &mut writes);
        a.on_accept(b(1, 1), &Value::from_static(b"v"), &mut writes);
        a.on_prepare(b(4, 2), &mut writes);
        let mut disk = AcceptorState::default();
        for w in &writes {
            disk.apply(w);
        }
        assert_eq!(&disk, a.state());
    }
}
