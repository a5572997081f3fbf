//! Test helpers shared by the checkers' tests: a fake Raft state, log and
//! output builders, and generic `Status` / `Committed` values.

use super::raft_view::RaftView;
use synod_core::{ClientId, Command, Committed, NodeId, Role, Status};
use synod_raft::{Entry, Payload, RaftOutput};

/// A Raft replica's state, set field by field.
#[derive(Clone, Debug)]
pub(crate) struct FakeRaft {
    pub(crate) term: u64,
    pub(crate) role: Role,
    pub(crate) voted_for: Option<NodeId>,
    pub(crate) commit_index: u64,
    /// `log[i]` holds index `i + 1`.
    pub(crate) log: Vec<Entry>,
}

impl FakeRaft {
    /// A follower in `term` holding `log`.
    pub(crate) fn new(term: u64, log: Vec<Entry>) -> FakeRaft {
        FakeRaft { term, role: Role::Follower, voted_for: None, commit_index: 0, log }
    }

    /// The same state as leader.
    pub(crate) fn leader(mut self) -> FakeRaft {
        self.role = Role::Leader;
        self
    }
}

impl RaftView for FakeRaft {
    fn term(&self) -> u64 {
        self.term
    }
    fn role(&self) -> Role {
        self.role
    }
    fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }
    fn commit_index(&self) -> u64 {
        self.commit_index
    }
    fn last_index(&self) -> u64 {
        self.log.len() as u64
    }
    fn term_at(&self, index: u64) -> Option<u64> {
        if index == 0 {
            return Some(0);
        }
        self.entry(index).map(|e| e.term)
    }
    fn entry(&self, index: u64) -> Option<&Entry> {
        self.log.get(usize::try_from(index).ok()?.checked_sub(1)?)
    }
}

/// An entry of `term` at `index` carrying `op` (a no-op when `op` is empty).
pub(crate) fn entry(term: u64, index: u64, op: &'static str) -> Entry {
    let payload = if op.is_empty() {
        Payload::Noop
    } else {
        Payload::Command(Command::new(ClientId(1), index, op))
    };
    Entry { term, index, payload }
}

/// A log whose entry `i + 1` has term `terms[i]` and op `"op<i+1>"`.
pub(crate) fn log(terms: &[u64]) -> Vec<Entry> {
    const OPS: [&str; 8] = ["op1", "op2", "op3", "op4", "op5", "op6", "op7", "op8"];
    terms
        .iter()
        .zip(1..)
        .map(|(&term, index)| entry(term, index, OPS[index as usize - 1]))
        .collect()
}

/// An empty Raft output.
pub(crate) fn output() -> RaftOutput {
    RaftOutput::new()
}

/// A `Status` of node 1 with the given epoch, commit index and applied index.
pub(crate) fn status(epoch: u64, commit_index: u64, applied_index: u64) -> Status {
    Status {
        id: NodeId(1),
        role: Role::Follower,
        epoch,
        leader: None,
        commit_index,
        applied_index,
        last_index: commit_index,
    }
}

/// A committed no-op at `index`.
pub(crate) fn noop(index: u64) -> Committed {
    Committed { index, command: None, time: None }
}
