//! [`NodeError`]: why a node stopped (or refused to start).

use crate::wire::WireError;

/// A fatal node error. Storage errors carry the file and offset; a node that
/// hits one stops rather than vote or acknowledge from state it cannot trust.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The write-ahead log, hard state or snapshot store failed.
    #[error("storage: {0}")]
    Storage(#[from] synod_storage::Error),
    /// Bytes on disk decode to something impossible.
    #[error("corrupt data directory: {0}")]
    Corrupt(String),
    /// The log recovered from disk ends before a position the node durably
    /// recorded having reached (records it synced, and may have
    /// acknowledged, are gone): the node must not run on it.
    #[error("lost log records: {0}")]
    LostLog(String),
    /// A record on disk does not decode.
    #[error("corrupt data directory: {0}")]
    Wire(#[from] WireError),
    /// The configuration is unusable.
    #[error("config: {0}")]
    Config(String),
    /// Starting a listener or the transport failed.
    #[error("{0}")]
    Startup(String),
}
