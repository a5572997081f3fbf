//! The replicated state machine, and the session layer that makes commands
//! exactly-once.
//!
//! A core emits committed commands; the driver hands each one to
//! [`Sessions::apply`], which applies it to the [`StateMachine`] unless the
//! same request (client id, sequence number) was applied before, in which
//! case it answers from its cache (Raft thesis §6.3, PBFT's reply cache). The
//! session table is itself replicated state: every replica applies the same
//! commands in the same order and so makes the same decisions, including
//! which idle session to evict when the table is full.

use crate::command::{ClientId, Command};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};

/// A deterministic state machine replicated by a consensus core.
pub trait StateMachine {
    /// Applies `op`, committed at position `index`, and returns the answer
    /// for the client. Must be deterministic: the same ops in the same order
    /// give the same state and answers on every replica. Must not panic on
    /// malformed `op` (it comes from a client): answer with an error instead.
    fn apply(&mut self, index: u64, op: &[u8]) -> Bytes;

    /// Serves a read-only query against the current state (after a read
    /// barrier, or locally for a serializable read). Must not change state.
    fn query(&self, op: &[u8]) -> Bytes;
}

/// What [`Sessions::apply`] did with a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// First time this request was seen: applied, with this answer.
    Fresh(Bytes),
    /// A retry of the client's latest request: not applied again; the cached
    /// answer.
    Duplicate(Bytes),
    /// Older than the client's latest request: the client already has its
    /// answer and moved on. Ignored.
    Stale,
}

impl Applied {
    /// The answer to send to the client, if any.
    pub fn response(&self) -> Option<&Bytes> {
        match self {
            Applied::Fresh(r) | Applied::Duplicate(r) => Some(r),
            Applied::Stale => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    last_seq: u64,
    last_response: Bytes,
    last_index: u64,
}

/// Exactly-once application: a [`StateMachine`] plus a per-client table of
/// the last request applied and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sessions<S> {
    machine: S,
    sessions: HashMap<ClientId, Session, foldhash::fast::FixedState>,
    /// Sessions by the index of their last command, oldest first, for
    /// deterministic eviction.
    by_index: BTreeMap<u64, ClientId>,
    max_sessions: usize,
    applied_index: u64,
}

impl<S: StateMachine> Sessions<S> {
    /// Wraps `machine`, keeping at most `max_sessions` client sessions (the
    /// least recently active one is evicted first; a client whose session was
    /// evicted may see a retried command applied twice, so size this well
    /// above the number of live clients).
    ///
    /// # Panics
    /// If `max_sessions` is zero.
    pub fn new(machine: S, max_sessions: usize) -> Self {
        assert!(max_sessions > 0, "a session table needs room for one client");
        Sessions {
            machine,
            sessions: HashMap::default(),
            by_index: BTreeMap::new(),
            max_sessions,
            applied_index: 0,
        }
    }

    /// The wrapped state machine.
    pub fn machine(&self) -> &S {
        &self.machine
    }

    /// The position of the last command (or no-op) applied.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Records that position `index` held a no-op.
    ///
    /// # Panics
    /// If `index` is not the next position (positions are applied in order,
    /// exactly once).
    pub fn apply_noop(&mut self, index: u64) {
        self.advance(index);
    }

    /// Applies `command`, committed at `index`, at most once per request id.
    ///
    /// # Panics
    /// If `index` is not the next position.
    pub fn apply(&mut self, index: u64, command: &Command) -> Applied {
        self.advance(index);
        if let Some(s) = self.sessions.get(&command.client) {
            if command.seq == s.last_seq {
                return Applied::Duplicate(s.last_response.clone());
            }
            if command.seq < s.last_seq {
                return Applied::Stale;
            }
        }
        let response = self.machine.apply(index, &command.op);
        if let Some(old) = self.sessions.insert(
            command.client,
            Session { last_seq: command.seq, last_response: response.clone(), last_index: index },
        ) {
            self.by_index.remove(&old.last_index);
        }
        self.by_index.insert(index, command.client);
        while self.sessions.len() > self.max_sessions {
            let (_, evicted) = self.by_index.pop_first().expect("sessions and index agree");
            self.sessions.remove(&evicted);
        }
        debug_assert_eq!(self.sessions.len(), self.by_index.len());
        Applied::Fresh(response)
    }

    /// Serves a read-only query.
    pub fn query(&self, op: &[u8]) -> Bytes {
        self.machine.query(op)
    }

    fn advance(&mut self, index: u64) {
        assert_eq!(
            index,
            self.applied_index + 1,
            "positions must be applied in order, exactly once (applied {}, got {index})",
            self.applied_index
        );
        self.applied_index = index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts applications; answers with the running count.
    #[derive(Default)]
    struct Counter(u64);

    impl StateMachine for Counter {
        fn apply(&mut self, _index: u64, _op: &[u8]) -> Bytes {
            self.0 += 1;
            Bytes::from(self.0.to_string())
        }
        fn query(&self, _op: &[u8]) -> Bytes {
            Bytes::from(self.0.to_string())
        }
    }

    fn cmd(client: u64, seq: u64) -> Command {
        Command::new(ClientId(client), seq, Bytes::new())
    }

    #[test]
    fn a_retried_command_is_applied_once_and_answered_from_the_cache() {
        let mut s = Sessions::new(Counter::default(), 16);
        assert_eq!(s.apply(1, &cmd(7, 1)), Applied::Fresh(Bytes::from("1")));
        assert_eq!(s.apply(2, &cmd(7, 1)), Applied::Duplicate(Bytes::from("1")));
        assert_eq!(s.apply(3, &cmd(7, 2)), Applied::Fresh(Bytes::from("2")));
        assert_eq!(s.apply(4, &cmd(7, 1)), Applied::Stale);
        assert_eq!(s.machine().0, 2);
        assert_eq!(s.applied_index(), 4);
    }

    #[test]
    fn clients_have_independent_sequences() {
        let mut s = Sessions::new(Counter::default(), 16);
        s.apply(1, &cmd(1, 1));
        assert!(matches!(s.apply(2, &cmd(2, 1)), Applied::Fresh(_)));
        assert_eq!(s.machine().0, 2);
    }

    #[test]
    fn the_least_recently_active_session_is_evicted_first() {
        let mut s = Sessions::new(Counter::default(), 2);
        s.apply(1, &cmd(1, 1));
        s.apply(2, &cmd(2, 1));
        s.apply(3, &cmd(1, 2)); // client 1 is now more recent than client 2
        s.apply(4, &cmd(3, 1)); // evicts client 2
        assert_eq!(s.apply(5, &cmd(1, 2)), Applied::Duplicate(Bytes::from("3")));
        // Client 2's session is gone: its retry is applied again.
        assert!(matches!(s.apply(6, &cmd(2, 1)), Applied::Fresh(_)));
    }

    #[test]
    #[should_panic(expected = "in order, exactly once")]
    fn applying_out_of_order_is_an_invariant_violation() {
        let mut s = Sessions::new(Counter::default(), 2);
        s.apply_noop(1);
        s.apply_noop(3);
    }
}
