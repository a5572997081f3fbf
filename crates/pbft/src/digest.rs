//! Digests: SHA-256 of request batches, of message headers, and the hash
//! chain that stands for the replicated state in checkpoints.
//!
//! The core never sees the state machine, so a checkpoint's *state digest*
//! is a hash chain over the executed sequence:
//! `state(n) = SHA-256(state(n−1) ‖ n ‖ D(batch n))`, `state(0) = 0`. Two
//! replicas with equal chains applied the same requests in the same order,
//! so their state machines (and session/reply caches, which are part of
//! them) are equal; the batch digest covers the batch's timestamp, so they
//! also executed every request at the same agreed time. State transfer checks fetched batches by recomputing it.
//! At snapshot checkpoints the signed digest is a manifest's
//! ([`crate::message::SnapshotManifest::state`]), which holds the chain and
//! the SHA-256 of the state machine's snapshot.

use crate::message::Batch;
use sha2::{Digest as _, Sha256};
use std::fmt;
use synod_core::Command;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The all-zero digest (the state before any request, "no digest").
    pub const ZERO: Digest = Digest([0; 32]);

    /// SHA-256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// The first 8 bytes, for cheap hashing and display.
    pub fn prefix(&self) -> u64 {
        u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.prefix().swap_bytes())
    }
}

/// The digest of a batch, `D(m)`: its timestamp and its requests. The
/// empty batch is the null request; its digest is [`Digest::ZERO`] whatever
/// its timestamp, so that it is recognisable (a null request's timestamp is
/// never used).
pub fn batch_digest(batch: &Batch) -> Digest {
    if batch.is_empty() {
        return Digest::ZERO;
    }
    let mut h = Sha256::new();
    h.update(b"batch-v2");
    h.update(batch.timestamp.as_micros().to_le_bytes());
    hash_requests(&mut h, &batch.requests);
    Digest(h.finalize().into())
}

/// The digest of requests a backup forwards to the primary (no timestamp:
/// they are not ordered yet).
pub fn requests_digest(requests: &[Command]) -> Digest {
    let mut h = Sha256::new();
    hash_requests(&mut h, requests);
    Digest(h.finalize().into())
}

fn hash_requests(h: &mut Sha256, batch: &[Command]) {
    h.update((batch.len() as u64).to_le_bytes());
    for c in batch {
        h.update(c.client.0.to_le_bytes());
        h.update(c.seq.to_le_bytes());
        h.update((c.op.len() as u64).to_le_bytes());
        h.update(&c.op);
    }
}

/// One link of the state hash chain: the state after executing the batch
/// with digest `batch` at sequence number `seq` on top of `prev`.
pub fn chain(prev: &Digest, seq: u64, batch: &Digest) -> Digest {
    let mut h = Sha256::new();
    h.update(prev.0);
    h.update(seq.to_le_bytes());
    h.update(batch.0);
    Digest(h.finalize().into())
}

/// An incremental SHA-256 over the fields of a signed message body.
#[derive(Clone, Default)]
pub struct BodyHasher(Sha256);

impl BodyHasher {
    /// A hasher for a body of kind `tag` (domain separation between kinds).
    pub fn new(tag: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update((tag.len() as u8).to_le_bytes());
        h.update(tag);
        BodyHasher(h)
    }
    /// Adds a number.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.update(v.to_le_bytes());
        self
    }
    /// Adds bytes (the caller adds their length first where it matters).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.update(b);
        self
    }
    /// Adds a digest.
    pub fn digest(&mut self, d: &Digest) -> &mut Self {
        self.0.update(d.0);
        self
    }
    /// The final digest.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::ClientId;

    #[test]
    fn batch_digests_tell_batches_and_timestamps_apart() {
        use synod_core::Time;
        let at = |t: u64, c: Command| Batch::new(Time(t), vec![c]);
        let a = at(5, Command::new(ClientId(1), 1, &b"x"[..]));
        let b = at(5, Command::new(ClientId(1), 2, &b"x"[..]));
        let c = at(5, Command::new(ClientId(1), 1, &b"y"[..]));
        let later = at(6, Command::new(ClientId(1), 1, &b"x"[..]));
        assert_ne!(batch_digest(&a), batch_digest(&b));
        assert_ne!(batch_digest(&a), batch_digest(&c));
        assert_ne!(batch_digest(&a), batch_digest(&later), "the timestamp is digested");
        assert_eq!(batch_digest(&a), batch_digest(&a.clone()));
        assert_eq!(batch_digest(&Batch::null()), Digest::ZERO);
        assert_eq!(batch_digest(&Batch::new(Time(9), Vec::new())), Digest::ZERO);
        assert_ne!(requests_digest(&a), batch_digest(&a));
    }

    #[test]
    fn the_chain_depends_on_order_and_position() {
        let (x, y) = (Digest::of(b"x"), Digest::of(b"y"));
        let xy = chain(&chain(&Digest::ZERO, 1, &x), 2, &y);
        let yx = chain(&chain(&Digest::ZERO, 1, &y), 2, &x);
        assert_ne!(xy, yx);
        assert_ne!(chain(&Digest::ZERO, 1, &x), chain(&Digest::ZERO, 2, &x));
    }
}
