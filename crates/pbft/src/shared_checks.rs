//! [`SharedChecks`]: a memo of successful Ed25519 verifications shared by
//! replicas that run in one process (the simulator).
//!
//! Verification is a pure function of (key, message, signature): a
//! signature that verified for one replica verifies for every other, so a
//! memo of exact successes changes no decision, only how often the same
//! signature is checked. Entries are inserted only after a successful
//! verification and looked up by every byte that verification covered (the
//! whole client envelope; the signer, body digest and signature bytes), so
//! nothing unverified — a Byzantine node's forgery included — is ever taken
//! from it. A deployment has one replica per process and no use for it
//! ([`crate::Config::shared_checks`] is `None` by default).
//!
//! Both memos are bounded: cleared when full.

use crate::digest::Digest;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use synod_core::ClientId;

/// Entries per memo before it is cleared.
pub const MAX_SHARED_ENTRIES: usize = 65_536;

/// The memo; clones share it. Always compares equal (it is a cache, not
/// configuration).
#[derive(Clone, Default)]
pub struct SharedChecks(Arc<Mutex<Memo>>);

#[derive(Default)]
struct Memo {
    /// Client envelopes verified: (key seed, client, request seq) → op.
    requests: HashMap<(u64, ClientId, u64), Bytes>,
    /// Replica signatures verified: (key seed, signer, body, signature).
    signatures: HashSet<(u64, usize, Digest, [u8; 64])>,
}

impl std::fmt::Debug for SharedChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedChecks")
    }
}

impl PartialEq for SharedChecks {
    fn eq(&self, _: &SharedChecks) -> bool {
        true
    }
}

impl Eq for SharedChecks {}

impl SharedChecks {
    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether envelope `op` of request `seq` of `client` (keys from
    /// `seed`) verified before.
    pub fn request_verified(&self, seed: u64, client: ClientId, seq: u64, op: &Bytes) -> bool {
        self.memo().requests.get(&(seed, client, seq)).is_some_and(|o| o == op)
    }

    /// Records that envelope `op` verified.
    pub fn note_request(&self, seed: u64, client: ClientId, seq: u64, op: &Bytes) {
        let mut m = self.memo();
        if m.requests.len() >= MAX_SHARED_ENTRIES {
            m.requests.clear();
        }
        m.requests.insert((seed, client, seq), op.clone());
    }

    /// Whether `sig` by replica `signer` (keys from `seed`) over `digest`
    /// verified before.
    pub fn signature_verified(
        &self,
        seed: u64,
        signer: usize,
        digest: &Digest,
        sig: &[u8; 64],
    ) -> bool {
        self.memo().signatures.contains(&(seed, signer, *digest, *sig))
    }

    /// Records that `sig` by `signer` over `digest` verified.
    pub fn note_signature(&self, seed: u64, signer: usize, digest: &Digest, sig: &[u8; 64]) {
        let mut m = self.memo();
        if m.signatures.len() >= MAX_SHARED_ENTRIES {
            m.signatures.clear();
        }
        m.signatures.insert((seed, signer, *digest, *sig));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bytes_recorded_are_known() {
        let s = SharedChecks::default();
        let op = Bytes::from_static(b"envelope");
        assert!(!s.request_verified(1, ClientId(2), 3, &op));
        s.clone().note_request(1, ClientId(2), 3, &op);
        assert!(s.request_verified(1, ClientId(2), 3, &op), "clones share");
        assert!(!s.request_verified(1, ClientId(2), 3, &Bytes::from_static(b"envelopf")));
        assert!(!s.request_verified(9, ClientId(2), 3, &op), "another key seed");
        assert!(!s.request_verified(1, ClientId(2), 4, &op));
        let d = Digest::of(b"body");
        s.note_signature(1, 0, &d, &[7; 64]);
        assert!(s.signature_verified(1, 0, &d, &[7; 64]));
        assert!(!s.signature_verified(1, 0, &d, &[8; 64]), "another signature");
        assert!(!s.signature_verified(1, 1, &d, &[7; 64]), "another signer");
    }
}
