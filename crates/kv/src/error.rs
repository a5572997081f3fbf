//! The errors the store answers with, with etcd's exact gRPC codes and
//! messages.
//!
//! etcd clients map errors back to typed errors by their message string
//! (`clientv3`'s `rpctypes.ErrorDesc`), so each variant's [`KvError::message`]
//! is byte-for-byte etcd 3.4's text (`etcdserver/api/v3rpc/rpctypes/error.go`)
//! and [`KvError::grpc_code`] its status code. The gRPC layer turns a
//! `KvError` into `tonic::Status::new(code, message)`.

/// A gRPC status code, numbered as in `google.rpc.Code` (and `tonic::Code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum GrpcCode {
    /// The argument is invalid whatever the state.
    InvalidArgument = 3,
    /// The entity does not exist.
    NotFound = 5,
    /// The system is not in the state the operation needs.
    FailedPrecondition = 9,
    /// The operation was attempted past the valid range.
    OutOfRange = 11,
}

impl GrpcCode {
    /// The numeric code.
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

/// Everything the store can refuse, as etcd refuses it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum KvError {
    /// A request (or a compare) has an empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` together with a non-empty value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a non-zero lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A txn with more compares, success ops or failure ops than
    /// [`KvConfig::max_txn_ops`](crate::KvConfig::max_txn_ops).
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A txn writes the same key twice (or puts a key it also deletes).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A sort order or target etcd does not define (only the gRPC mapping
    /// can produce it: the Rust enums have no invalid values).
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// A read (or compaction, or watch) at a revision below the compaction
    /// revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A read (or compaction) at a revision above the current one.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// The lease does not exist (never granted, revoked or expired).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant with an id that is already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant with a TTL above [`MAX_LEASE_TTL_SECS`](crate::MAX_LEASE_TTL_SECS).
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// The encoded request exceeds
    /// [`KvConfig::max_request_bytes`](crate::KvConfig::max_request_bytes).
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// The command or query bytes could not be decoded (not an etcd error:
    /// only a buggy or hostile proposer produces it).
    #[error("synod: malformed kv request: {0}")]
    Malformed(String),
}

impl KvError {
    /// etcd's gRPC status code for this error.
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            KvError::EmptyKey
            | KvError::KeyNotFound
            | KvError::ValueProvided
            | KvError::LeaseProvided
            | KvError::TooManyOps
            | KvError::DuplicateKey
            | KvError::InvalidSortOption
            | KvError::RequestTooLarge
            | KvError::Malformed(_) => GrpcCode::InvalidArgument,
            KvError::Compacted | KvError::FutureRevision | KvError::LeaseTtlTooLarge => {
                GrpcCode::OutOfRange
            }
            KvError::LeaseNotFound => GrpcCode::NotFound,
            KvError::LeaseExists => GrpcCode::FailedPrecondition,
        }
    }

    /// etcd's status message for this error, exactly.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_are_etcds() {
        let cases = [
            (KvError::EmptyKey, 3, "etcdserver: key is not provided"),
            (KvError::KeyNotFound, 3, "etcdserver: key not found"),
            (KvError::TooManyOps, 3, "etcdserver: too many operations in txn request"),
            (KvError::DuplicateKey, 3, "etcdserver: duplicate key given in txn request"),
            (KvError::Compacted, 11, "etcdserver: mvcc: required revision has been compacted"),
            (
                KvError::FutureRevision,
                11,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (KvError::LeaseNotFound, 5, "etcdserver: requested lease not found"),
            (KvError::LeaseExists, 9, "etcdserver: lease already exists"),
            (KvError::LeaseTtlTooLarge, 11, "etcdserver: too large lease TTL"),
            (KvError::RequestTooLarge, 3, "etcdserver: request is too large"),
            (KvError::ValueProvided, 3, "etcdserver: value is provided"),
            (KvError::LeaseProvided, 3, "etcdserver: lease is provided"),
            (KvError::InvalidSortOption, 3, "etcdserver: invalid sort option"),
        ];
        for (e, code, msg) in cases {
            assert_eq!(e.grpc_code().as_i32(), code, "{e:?}");
            assert_eq!(e.message(), msg);
        }
    }
}
