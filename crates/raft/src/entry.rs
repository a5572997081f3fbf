//! Log entries.

use crate::membership::Membership;
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
    /// A cluster configuration (joint consensus, thesis §4.3): in effect
    /// on a node as soon as it is in its log. Applied as a no-op. Boxed:
    /// configurations are rare, and unboxed they would double the size of
    /// every entry (log, messages, writes).
    Config(Box<Membership>),
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
            Payload::Config(m) => 8 * (m.members().len() + m.outgoing.len() + m.removed.len()),
        }
    }

    /// The command, if this is not a no-op.
    pub fn command(&self) -> Option<&Command> {
        match &self.payload {
            Payload::Noop | Payload::Config(_) => None,
            Payload::Command(c) => Some(c),
        }
    }

    /// The configuration, if this is a configuration entry.
    pub fn membership(&self) -> Option<&Membership> {
        match &self.payload {
            Payload::Config(m) => Some(m),
            Payload::Noop | Payload::Command(_) => None,
        }
    }

    /// The command's operation bytes, or empty for a no-op.
    pub fn op(&self) -> Bytes {
        self.command().map(|c| c.op.clone()).unwrap_or_default()
    }
}
