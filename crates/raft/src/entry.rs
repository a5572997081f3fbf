//! Log entries.

use bytes::Bytes;
use synod_core::Command;

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// The entry a new leader appends at the start of its term (§5.4.2: it
    /// lets the leader commit entries of earlier terms without waiting for a
    /// client command).
    Noop,
    /// A client command.
    Command(Command),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: u64,
    /// Its position in the log, from 1.
    pub index: u64,
    /// What it carries.
    pub payload: Payload,
}

impl Entry {
    /// Bytes on the wire (header plus payload), for batching limits.
    pub fn size_bytes(&self) -> usize {
        24 + match &self.payload {
            Payload::Noop => 0,
            Payload::Command(c) => c.size_bytes(),
        }
    }

    /// The command, if this is not a no-op.
    pub fn command(&self) -> Option<&Command> {
        match &self.payload {
            Payload::Noop => None,
            Payload::Command(c) => Some(c),
        }
    }

    /// The command's operation bytes, or empty for a no-op.
    pub fn op(&self) -> Bytes {
        self.command().map(|c| c.op.clone()).unwrap_or_default()
    }
}
