//! The storage error type, and which errors are fatal.
//!
//! A *fatal* error ([`Error::is_fatal`]) means the process can no longer
//! trust what it believes is on disk: an fsync failed (the kernel may have
//! dropped the dirty pages it could not write, so retrying would report
//! success for data that is gone), a rollback after a failed write could not
//! be completed, or a record read back from disk is corrupt. The object that
//! returned it is *poisoned*: every later call returns [`Error::Poisoned`].
//! The caller must stop acknowledging anything (no votes, no replies) and
//! exit; a restart recovers from what is really on disk.
//!
//! Every other error leaves the on-disk state exactly as it was before the
//! failed call (new bytes are only ever written beyond the durable end and
//! are cut off again on failure), so the caller may report it and continue.

use std::io;
use std::path::{Path, PathBuf};

/// A storage result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with the file it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// FATAL. An operation whose failure leaves the disk state unknown
    /// (fsync, or the truncate that rolls back a failed write) failed. The
    /// object is poisoned. Never retry: stop the node and recover from disk.
    #[error(
        "fatal: {op} of {path} failed: {source}; storage is poisoned: stop the node and recover from disk (a failed fsync is never retried)"
    )]
    Fatal {
        /// The operation, e.g. `fsync`.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// FATAL. An earlier fatal error poisoned this object; `reason` is its
    /// message.
    #[error(
        "fatal: storage is poisoned by an earlier error ({reason}); stop the node and recover from disk"
    )]
    Poisoned {
        /// The message of the error that poisoned it.
        reason: String,
    },
    /// FATAL when returned by a read of an open log; on open it means the
    /// data directory cannot be trusted and the node must not start.
    /// Corruption is never skipped silently.
    #[error("corrupt storage: {path} at byte offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset in `path` where the damage was found.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// The device is full. The failed write was rolled back; everything
    /// acknowledged before is intact. Not fatal: free space and retry.
    #[error(
        "no space left on device while writing {path}: {source}; the write was rolled back and nothing acknowledged was damaged"
    )]
    NoSpace {
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another I/O error that was rolled back (not fatal).
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation, e.g. `write`.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A read asked for an index the log does not hold.
    #[error(
        "index {index} is outside the log (first index {first_index}, last index {last_index}; 0 = empty)"
    )]
    OutOfRange {
        /// The index asked for.
        index: u64,
        /// The log's first index (0 if empty).
        first_index: u64,
        /// The log's last index (0 if empty).
        last_index: u64,
    },
    /// The caller broke the API's contract (e.g. an append that would leave
    /// a gap). Nothing was written.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// True if the caller must stop: see the module doc. Fatal errors are
    /// [`Error::Fatal`], [`Error::Poisoned`] and [`Error::Corrupt`].
    pub fn is_fatal(&self) -> bool {
        matches!(self, Error::Fatal { .. } | Error::Poisoned { .. } | Error::Corrupt { .. })
    }

    /// Wraps an I/O error of a rolled-back operation, telling disk-full apart.
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Error {
        if is_no_space(&source) {
            Error::NoSpace { path: path.to_path_buf(), source }
        } else {
            Error::Io { op, path: path.to_path_buf(), source }
        }
    }

    /// Wraps an I/O error that leaves the disk state unknown.
    pub(crate) fn fatal(op: &'static str, path: &Path, source: io::Error) -> Error {
        Error::Fatal { op, path: path.to_path_buf(), source }
    }

    /// A corruption error.
    pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt { path: path.to_path_buf(), offset, reason: reason.into() }
    }
}

/// True for ENOSPC / EDQUOT.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(28) | Some(122))
}

/// A poison flag shared by the methods of one storage object: set once by
/// the first fatal error, checked by every call.
#[derive(Debug, Default)]
pub(crate) struct Poison(std::sync::OnceLock<String>);

impl Poison {
    /// Errors if poisoned.
    pub(crate) fn check(&self) -> Result<()> {
        match self.0.get() {
            Some(reason) => Err(Error::Poisoned { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    /// Poisons with `error` (if fatal) and returns it.
    pub(crate) fn taint(&self, error: Error) -> Error {
        if error.is_fatal() {
            let _ = self.0.set(error.to_string());
        }
        error
    }

    /// True once poisoned.
    pub(crate) fn is_set(&self) -> bool {
        self.0.get().is_some()
    }
}
