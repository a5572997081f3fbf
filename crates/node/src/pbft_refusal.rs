//! [`Refusal`]: why a replica answered `synodpb.Pbft/Submit` with an error
//! instead of a signed result, as a type both ends share.
//!
//! The kind travels in the error's gRPC metadata ([`METADATA_KEY`], a
//! short name such as `stale`), next to the unchanged status code and
//! message: a client decides from the kind, not from the wording, whether
//! to send the request again (and a read-only poll whether to send it again
//! with a newer sequence number). Clients from before the metadata look
//! only at the code and the message, which stay as they were. A replica
//! from before it sends no metadata: [`Refusal::of`] then classifies by
//! code and by the two exact messages those replicas used for stale and
//! superseded requests.
//!
//! A Byzantine replica can claim any kind, as it could any message: the
//! kind only steers a client's retries, never a result (results need f+1
//! matching signed replies).

use crate::driver::ClientError;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// The metadata key carrying a refusal's kind.
pub const METADATA_KEY: &str = "synod-refusal";

/// Why a replica refused a request on the PBFT client path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not a signed envelope, or its command does not decode. Final.
    Malformed,
    /// Larger than the replica accepts. Final.
    TooLarge,
    /// A command only the primary proposes (lease expiry, promotion).
    /// Final.
    PrimaryOnly,
    /// Older than its client's latest executed request: never ordered.
    /// Final for this sequence number.
    Stale,
    /// Ordered after a newer request of its client, so skipped: it had no
    /// effect. Final for this sequence number.
    Superseded,
    /// Any other refusal that no retry changes (a bad client signature, a
    /// protocol without client-signed requests). Final.
    Rejected,
    /// Too much in flight at the replica. Worth retrying.
    Busy,
    /// The replica is stopping or cannot reach its protocol, or the call
    /// failed on the way. Worth retrying.
    Unavailable,
    /// Not executed within the replica's request timeout. Worth retrying
    /// (a retry of an executed request is answered from the session cache).
    TimedOut,
}

/// Every kind, for tests and documentation.
pub const ALL: [Refusal; 9] = [
    Refusal::Malformed,
    Refusal::TooLarge,
    Refusal::PrimaryOnly,
    Refusal::Stale,
    Refusal::Superseded,
    Refusal::Rejected,
    Refusal::Busy,
    Refusal::Unavailable,
    Refusal::TimedOut,
];

/// What replicas before the metadata said for [`Refusal::Stale`].
const LEGACY_STALE: &str = "synod: stale request";
/// What replicas before the metadata said for [`Refusal::Superseded`].
const LEGACY_SUPERSEDED: &str = "synod: superseded";

impl Refusal {
    /// The kind's name in the metadata.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::TooLarge => "too-large",
            Refusal::PrimaryOnly => "primary-only",
            Refusal::Stale => "stale",
            Refusal::Superseded => "superseded",
            Refusal::Rejected => "rejected",
            Refusal::Busy => "busy",
            Refusal::Unavailable => "unavailable",
            Refusal::TimedOut => "timed-out",
        }
    }

    /// The kind named `name`, if it is one.
    pub fn from_name(name: &str) -> Option<Refusal> {
        ALL.into_iter().find(|r| r.name() == name)
    }

    /// The status code it is sent with (as before the metadata, so older
    /// clients retry exactly what they retried).
    pub fn code(self) -> Code {
        match self {
            Refusal::Malformed
            | Refusal::TooLarge
            | Refusal::PrimaryOnly
            | Refusal::Stale
            | Refusal::Superseded
            | Refusal::Rejected => Code::InvalidArgument,
            Refusal::Busy => Code::ResourceExhausted,
            Refusal::Unavailable => Code::Unavailable,
            Refusal::TimedOut => Code::DeadlineExceeded,
        }
    }

    /// Whether sending the same request to that replica again is useless.
    pub fn is_final(self) -> bool {
        self.code() == Code::InvalidArgument
    }

    /// Whether the request lost to a newer one of its client (stale or
    /// superseded): a read-only request may be sent again with a newer
    /// sequence number.
    pub fn is_outdated(self) -> bool {
        matches!(self, Refusal::Stale | Refusal::Superseded)
    }

    /// The error status: this kind's code, `message`, and the kind in the
    /// metadata.
    pub fn status(self, message: impl Into<String>) -> Status {
        let mut status = Status::new(self.code(), message);
        status.metadata_mut().insert(METADATA_KEY, MetadataValue::from_static(self.name()));
        status
    }

    /// The kind of an error a replica answered (or a failed call): from
    /// the metadata; without it (a replica from before it, or the
    /// transport's own error), from the code and the two exact messages
    /// older replicas used.
    pub fn of(status: &Status) -> Refusal {
        let named = status.metadata().get(METADATA_KEY).and_then(|v| v.to_str().ok());
        if let Some(kind) = named.and_then(Refusal::from_name) {
            return kind;
        }
        match status.code() {
            Code::InvalidArgument => match status.message() {
                LEGACY_STALE => Refusal::Stale,
                LEGACY_SUPERSEDED => Refusal::Superseded,
                _ => Refusal::Rejected,
            },
            Code::ResourceExhausted => Refusal::Busy,
            Code::DeadlineExceeded => Refusal::TimedOut,
            _ => Refusal::Unavailable,
        }
    }
}

/// The status a driver's refusal is answered with (same codes and
/// messages as before the metadata).
pub fn client_error_status(e: ClientError) -> Status {
    match e {
        ClientError::Busy => Refusal::Busy.status(e.to_string()),
        ClientError::Stopped | ClientError::NotLeader { .. } => {
            Refusal::Unavailable.status(e.to_string())
        }
        ClientError::Rejected(why) => Refusal::Rejected.status(format!("synod: {why}")),
        ClientError::Stale => Refusal::Stale.status(LEGACY_STALE),
        ClientError::Superseded => Refusal::Superseded.status(LEGACY_SUPERSEDED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_a_status_with_its_code() {
        for kind in ALL {
            assert_eq!(Refusal::from_name(kind.name()), Some(kind));
            let status = kind.status("whatever the replica says");
            assert_eq!(status.code(), kind.code(), "{kind:?}");
            assert_eq!(Refusal::of(&status), kind, "{kind:?}");
            assert_eq!(kind.is_final(), kind.code() == Code::InvalidArgument);
        }
        let names: std::collections::HashSet<_> = ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), ALL.len(), "names are distinct");
        assert_eq!(Refusal::from_name("nope"), None);
    }

    /// The kind, not the message, decides: a stale refusal worded anyhow
    /// is stale, and a message that merely mentions "stale" is not.
    #[test]
    fn the_kind_not_the_wording_decides() {
        assert_eq!(Refusal::of(&Refusal::Stale.status("old")), Refusal::Stale);
        let mentions = Refusal::Rejected.status("synod: stale request");
        assert_eq!(Refusal::of(&mentions), Refusal::Rejected);
        assert!(Refusal::Stale.is_outdated() && Refusal::Superseded.is_outdated());
        let outdated: Vec<_> = ALL.into_iter().filter(|k| k.is_outdated()).collect();
        assert_eq!(outdated, [Refusal::Stale, Refusal::Superseded]);
        let retried: Vec<_> = ALL.into_iter().filter(|k| !k.is_final()).collect();
        assert_eq!(retried, [Refusal::Busy, Refusal::Unavailable, Refusal::TimedOut]);
    }

    /// Replicas from before the metadata: classified by code and by their
    /// two exact messages; an unknown name falls back the same way.
    #[test]
    fn a_status_without_the_metadata_is_classified_as_before() {
        let legacy = [
            (Status::invalid_argument("synod: stale request"), Refusal::Stale),
            (Status::invalid_argument("synod: superseded"), Refusal::Superseded),
            (Status::invalid_argument("synod: bad client signature"), Refusal::Rejected),
            (Status::invalid_argument("synod: stale request, or not"), Refusal::Rejected),
            (Status::resource_exhausted("etcdserver: too many requests"), Refusal::Busy),
            (Status::unavailable("etcdserver: server stopped"), Refusal::Unavailable),
            (Status::deadline_exceeded("etcdserver: request timed out"), Refusal::TimedOut),
            (Status::unknown("transport error"), Refusal::Unavailable),
        ];
        for (status, kind) in legacy {
            assert_eq!(Refusal::of(&status), kind, "{status:?}");
        }
        let mut future = Status::invalid_argument("synod: superseded");
        future.metadata_mut().insert(METADATA_KEY, MetadataValue::from_static("from-the-future"));
        assert_eq!(Refusal::of(&future), Refusal::Superseded);
    }

    /// The driver's refusals keep their codes and messages and gain kinds.
    #[test]
    fn driver_refusals_map_to_their_kinds() {
        let cases = [
            (ClientError::Busy, Refusal::Busy, "etcdserver: too many requests"),
            (ClientError::Stopped, Refusal::Unavailable, "etcdserver: server stopped"),
            (ClientError::NotLeader { leader: None }, Refusal::Unavailable, "not the leader"),
            (
                ClientError::Rejected("bad client signature".into()),
                Refusal::Rejected,
                "synod: bad client signature",
            ),
            (ClientError::Stale, Refusal::Stale, "synod: stale request"),
            (ClientError::Superseded, Refusal::Superseded, "synod: superseded"),
        ];
        for (error, kind, message) in cases {
            let status = client_error_status(error);
            assert_eq!((Refusal::of(&status), status.message()), (kind, message));
            assert_eq!(status.code(), kind.code());
        }
    }
}
