//! Signed client requests: nobody but a client can make a request in its
//! name (OSDI'99 §4.1; issue 5 §5).
//!
//! A client puts an *envelope* in [`Command::op`]: its Ed25519 signature
//! (64 bytes) followed by the operation itself (the *inner* op). The
//! signature covers [`body_digest`]: the client id, the request's sequence
//! number and the inner op, so a replica can neither change the operation
//! nor move a signed operation to another sequence number or client.
//!
//! Replicas order and digest envelopes (batch digests cover the
//! signature); the state machine receives the inner op
//! ([`inner_op`]). A replica checks a request once, however it arrives
//! (from the client, in a PRE-PREPARE, a FORWARD or a VIEW-CHANGE's
//! prepared batch); [`RequestCheck`] remembers the envelopes it verified.
//! A PRE-PREPARE, FORWARD or VIEW-CHANGE carrying one badly signed request
//! is rejected whole.

use crate::auth::client_signing_key;
use crate::auth_meter::{AuthMeter, AuthOp, metered};
use crate::digest::{BodyHasher, Digest};
use crate::shared_checks::SharedChecks;
use bytes::Bytes;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use std::collections::HashMap;
use synod_core::{ClientId, Command};

/// Bytes of the signature at the front of an envelope.
pub const SIGNATURE_BYTES: usize = 64;

/// Verified envelopes remembered before the cache is cleared (well above
/// the requests in flight: `max_inflight_batches × max_batch`).
pub const MAX_VERIFIED_REQUESTS: usize = 16_384;

/// Client verifying keys cached before the cache is cleared.
pub const MAX_CLIENT_KEYS: usize = 65_536;

/// The digest a client signs: its id, the request's sequence number and
/// the inner op.
pub fn body_digest(client: ClientId, seq: u64, inner: &[u8]) -> Digest {
    let mut h = BodyHasher::new(b"request");
    h.u64(client.0).u64(seq).u64(inner.len() as u64).bytes(inner);
    h.finish()
}

/// The envelope of request `seq` of `client` with operation `inner`,
/// signed with `key`.
pub fn seal(key: &SigningKey, client: ClientId, seq: u64, inner: &[u8]) -> Bytes {
    let sig = key.sign(&body_digest(client, seq, inner).0);
    let mut op = Vec::with_capacity(SIGNATURE_BYTES + inner.len());
    op.extend_from_slice(&sig.to_bytes());
    op.extend_from_slice(inner);
    Bytes::from(op)
}

/// `command` with its op sealed by `key` (the client side).
pub fn sign_command(key: &SigningKey, command: Command) -> Command {
    let op = seal(key, command.client, command.seq, &command.op);
    Command { op, ..command }
}

/// The inner op of an envelope (zero-copy); empty if `op` is too short to
/// be one.
pub fn inner_op(op: &Bytes) -> Bytes {
    if op.len() < SIGNATURE_BYTES { Bytes::new() } else { op.slice(SIGNATURE_BYTES..) }
}

/// Where a replica finds clients' verifying keys.
#[derive(Clone, Debug)]
pub enum ClientKeys {
    /// Derived from a seed with [`client_signing_key`] (simulator, tests).
    Derived {
        /// The cluster key seed.
        seed: u64,
    },
    /// A fixed registry (a deployment).
    Listed(std::sync::Arc<HashMap<ClientId, VerifyingKey>>),
}

impl ClientKeys {
    fn lookup(&self, client: ClientId) -> Option<VerifyingKey> {
        match self {
            ClientKeys::Derived { seed } => {
                Some(client_signing_key(*seed, client.0).verifying_key())
            }
            ClientKeys::Listed(map) => map.get(&client).copied(),
        }
    }
}

/// A replica's request checker: verifies envelopes, each once, and caches
/// client keys. Both caches are bounded (cleared when full).
#[derive(Clone, Debug)]
pub struct RequestCheck {
    keys: ClientKeys,
    client_keys: HashMap<ClientId, Option<VerifyingKey>>,
    /// Envelopes verified, by (client, seq): a request is known good when
    /// its op equals the one stored (a byte comparison, no hashing).
    verified: HashMap<(ClientId, u64), Bytes>,
    /// Successes shared with the other replicas of this process, with the
    /// key seed they hold for (derived keys only).
    shared: Option<(SharedChecks, u64)>,
    /// Counts and times verifications, when set.
    meter: Option<AuthMeter>,
}

impl RequestCheck {
    /// A checker finding keys in `keys`.
    pub fn new(keys: ClientKeys) -> Self {
        RequestCheck {
            keys,
            client_keys: HashMap::new(),
            verified: HashMap::new(),
            shared: None,
            meter: None,
        }
    }

    /// This checker counting and timing its verifications in `meter`.
    pub fn with_meter(mut self, meter: Option<AuthMeter>) -> Self {
        self.meter = meter;
        self
    }

    /// This checker, also consulting and filling `shared` (see
    /// [`SharedChecks`]); only with derived keys, whose seed keys the memo.
    pub fn with_shared(mut self, shared: Option<SharedChecks>) -> Self {
        self.shared = match (&self.keys, shared) {
            (ClientKeys::Derived { seed }, Some(s)) => Some((s, *seed)),
            _ => None,
        };
        self
    }

    /// Whether `c` carries a valid signature of its client over its
    /// client id, sequence number and inner op.
    pub fn check(&mut self, c: &Command) -> bool {
        if self.verified.get(&(c.client, c.seq)).is_some_and(|op| *op == c.op) {
            return true;
        }
        if c.op.len() < SIGNATURE_BYTES {
            return false;
        }
        let shared_hit = self
            .shared
            .as_ref()
            .is_some_and(|(s, seed)| s.request_verified(*seed, c.client, c.seq, &c.op));
        if shared_hit && let Some(m) = &self.meter {
            m.memo_hit();
        }
        if !shared_hit {
            let Some(key) = self.client_key(c.client) else { return false };
            let sig_bytes: &[u8; SIGNATURE_BYTES] =
                c.op[..SIGNATURE_BYTES].try_into().expect("length checked");
            let sig = Signature::from_bytes(sig_bytes);
            let good = metered(self.meter.as_ref(), AuthOp::ClientVerify, 1, || {
                let body = body_digest(c.client, c.seq, &c.op[SIGNATURE_BYTES..]);
                key.verify_strict(&body.0, &sig).is_ok()
            });
            if !good {
                return false;
            }
            if let Some((s, seed)) = &self.shared {
                s.note_request(*seed, c.client, c.seq, &c.op);
            }
        }
        if self.verified.len() >= MAX_VERIFIED_REQUESTS {
            self.verified.clear();
        }
        self.verified.insert((c.client, c.seq), c.op.clone());
        true
    }

    /// Whether every request of `batch` is well signed.
    pub fn check_all(&mut self, batch: &[Command]) -> bool {
        batch.iter().all(|c| self.check(c))
    }

    fn client_key(&mut self, client: ClientId) -> Option<VerifyingKey> {
        if let Some(k) = self.client_keys.get(&client) {
            return *k;
        }
        if self.client_keys.len() >= MAX_CLIENT_KEYS {
            self.client_keys.clear();
        }
        let k = self.keys.lookup(client);
        self.client_keys.insert(client, k);
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(seed: u64, client: u64, seq: u64, op: &'static [u8]) -> Command {
        let c = Command::new(ClientId(client), seq, op);
        sign_command(&client_signing_key(seed, client), c)
    }

    #[test]
    fn a_sealed_request_verifies_and_opens_to_its_inner_op() {
        let mut check = RequestCheck::new(ClientKeys::Derived { seed: 3 });
        let c = signed(3, 7, 1, b"put x");
        assert_eq!(c.op.len(), SIGNATURE_BYTES + 5);
        assert!(check.check(&c));
        assert!(check.check(&c), "cached");
        assert_eq!(&inner_op(&c.op)[..], b"put x");
        assert!(inner_op(&Bytes::from_static(b"short")).is_empty());
    }

    #[test]
    fn tampered_moved_or_forged_requests_are_rejected() {
        let mut check = RequestCheck::new(ClientKeys::Derived { seed: 3 });
        let good = signed(3, 7, 1, b"put x");
        // Another op under the same signature.
        let mut op = good.op.to_vec();
        *op.last_mut().expect("non-empty") ^= 1;
        assert!(!check.check(&Command { op: Bytes::from(op), ..good.clone() }));
        // The signed op moved to another sequence number or client.
        assert!(!check.check(&Command { seq: 2, ..good.clone() }));
        assert!(!check.check(&Command { client: ClientId(8), ..good.clone() }));
        // Signed without the client's key, or not an envelope at all.
        assert!(!check.check(&signed(4, 7, 1, b"put x")));
        assert!(!check.check(&Command::new(ClientId(7), 1, &b"put x"[..])));
        // A verified (client, seq) does not vouch for a different op.
        assert!(check.check(&good));
        let other = signed(4, 7, 1, b"put y");
        assert!(!check.check(&other));
        assert!(check.check_all(std::slice::from_ref(&good)));
        assert!(!check.check_all(&[good, other]));
    }

    #[test]
    fn a_shared_memo_vouches_only_for_what_one_checker_verified() {
        let shared = SharedChecks::default();
        let mut a =
            RequestCheck::new(ClientKeys::Derived { seed: 3 }).with_shared(Some(shared.clone()));
        let mut b =
            RequestCheck::new(ClientKeys::Derived { seed: 3 }).with_shared(Some(shared.clone()));
        let good = signed(3, 7, 1, b"put x");
        assert!(!b.check(&signed(4, 7, 1, b"put x")), "a forgery is verified, and fails");
        assert!(a.check(&good));
        assert!(shared.request_verified(3, ClientId(7), 1, &good.op), "a's success is shared");
        assert!(b.check(&good));
        // The same (client, seq) with another envelope is verified afresh.
        let mut op = good.op.to_vec();
        op[0] ^= 1;
        assert!(!b.check(&Command { op: Bytes::from(op), ..good.clone() }));
        // Checkers of another key seed do not use the memo.
        let mut c = RequestCheck::new(ClientKeys::Derived { seed: 4 }).with_shared(Some(shared));
        assert!(!c.check(&good));
    }

    #[test]
    fn a_listed_registry_knows_only_its_clients() {
        let key = client_signing_key(9, 1);
        let map = HashMap::from([(ClientId(1), key.verifying_key())]);
        let mut check = RequestCheck::new(ClientKeys::Listed(std::sync::Arc::new(map)));
        assert!(check.check(&signed(9, 1, 1, b"op")));
        assert!(!check.check(&signed(9, 2, 1, b"op")), "unknown client");
    }
}
