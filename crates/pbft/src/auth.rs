//! Keys and authentication: who may say what.
//!
//! Every replica has an Ed25519 key pair and shares one HMAC-SHA256 key with
//! every other replica (OSDI'99 §5.2, TM-589). Normal-case messages
//! (PRE-PREPARE, PREPARE, COMMIT, and the small point-to-point messages)
//! carry a MAC *authenticator*: one truncated HMAC per receiver, each keyed
//! with the pairwise key of sender and receiver, so one vector serves a
//! multicast and a receiver checks only its own entry. Messages a third
//! party must check later — CHECKPOINT (the stable-checkpoint proof),
//! VIEW-CHANGE and NEW-VIEW — are signed with Ed25519 (`verify_strict`; no
//! batch verification, so every replica applies one acceptance rule).
//!
//! [`NormalCaseAuth::Signatures`] signs the normal-case messages too
//! (an [`Auth::Signed`] instead of an [`Auth::Macs`]), to measure what MAC
//! authenticators save; point-to-point messages (STATUS, FETCH, FORWARD,
//! read queries) keep their MACs in both modes.
//!
//! For the simulator every key is derived deterministically from one
//! cluster seed ([`Keyring::derive`]); a real deployment hands real keys to
//! [`Keyring::new`]. Client key pairs are derived the same way
//! ([`client_signing_key`]).
//!
//! A message failing a check is dropped and counted in [`AuthStats`]; the
//! core never acts on it.

use crate::auth_meter::{AuthMeter, AuthOp, metered};
use crate::digest::Digest;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;

/// Bytes of a truncated HMAC-SHA256 (TOCS used 10-byte UMACs).
pub const MAC_BYTES: usize = 16;

/// One message authentication code.
pub type Mac = [u8; MAC_BYTES];

/// A MAC authenticator: entry `j` authenticates the message to replica `j`
/// (by position in the replica list). Cheap to clone.
pub type Authenticator = Arc<[Mac]>;

/// How PRE-PREPARE, PREPARE and COMMIT are authenticated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NormalCaseAuth {
    /// MAC authenticators (OSDI'99 §5.2; the default).
    #[default]
    Macs,
    /// Ed25519 signatures (the OSDI'99 §4 baseline).
    Signatures,
}

/// The authentication a normal-case message carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// One MAC per receiver.
    Macs(Authenticator),
    /// The sender's signature over the header.
    Signed(Signature),
}

impl Auth {
    /// Bytes on the wire.
    pub fn size_bytes(&self) -> usize {
        match self {
            Auth::Macs(a) => a.len() * MAC_BYTES,
            Auth::Signed(_) => 64,
        }
    }
}

/// Counters of messages dropped because a check failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthStats {
    /// A MAC (or authenticator entry) did not verify.
    pub bad_mac: u64,
    /// A signature did not verify.
    pub bad_signature: u64,
    /// A digest did not match the content it names.
    pub bad_digest: u64,
    /// The claimed sender is not who sent it, or not a replica.
    pub bad_sender: u64,
    /// Well authenticated but malformed (outside the window, a certificate
    /// that does not add up, a NEW-VIEW whose O does not recompute…).
    pub invalid: u64,
    /// A PRE-PREPARE whose timestamp was further than δ
    /// ([`crate::Config::max_clock_skew`]) from this replica's clock: not
    /// prepared by this replica (kept, and prepared only if a quorum's
    /// PREPAREs vouch for it).
    pub bad_timestamp: u64,
}

impl AuthStats {
    /// Every message dropped.
    pub fn total(&self) -> u64 {
        self.bad_mac
            + self.bad_signature
            + self.bad_digest
            + self.bad_sender
            + self.invalid
            + self.bad_timestamp
    }
}

fn derive_bytes(seed: u64, label: &[u8], a: u64, b: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"synod-pbft-key");
    h.update(seed.to_le_bytes());
    h.update(label);
    h.update(a.to_le_bytes());
    h.update(b.to_le_bytes());
    h.finalize().into()
}

/// The signing key of replica at `position`, derived from `seed`
/// (simulator and tests only).
pub fn replica_signing_key(seed: u64, position: usize) -> SigningKey {
    SigningKey::from_bytes(&derive_bytes(seed, b"replica", position as u64, 0))
}

/// The signing key of client `client`, derived from `seed` (simulator and
/// tests only).
pub fn client_signing_key(seed: u64, client: u64) -> SigningKey {
    SigningKey::from_bytes(&derive_bytes(seed, b"client", client, 0))
}

/// The pairwise MAC key of replicas at positions `a` and `b` (symmetric).
pub fn pairwise_key(seed: u64, a: usize, b: usize) -> [u8; 32] {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    derive_bytes(seed, b"pairwise", lo as u64, hi as u64)
}

/// One replica's keys: its signing key, every replica's verifying key, and
/// its pairwise MAC keys.
#[derive(Clone)]
pub struct Keyring {
    position: usize,
    signing: SigningKey,
    verifying: Vec<VerifyingKey>,
    /// HMAC states already keyed with the pairwise key to each replica
    /// (cloned per MAC: the key schedule is paid once).
    macs: Vec<Hmac<Sha256>>,
    normal_case: NormalCaseAuth,
    /// Counts and times every MAC and signature, when set.
    meter: Option<AuthMeter>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring(replica {} of {})", self.position, self.verifying.len())
    }
}

impl Keyring {
    /// A keyring from explicit keys: this replica's `position`, its signing
    /// key, every replica's verifying key and the pairwise keys (entry `j`
    /// shared with replica `j`).
    pub fn new(
        position: usize,
        signing: SigningKey,
        verifying: Vec<VerifyingKey>,
        pairwise: &[[u8; 32]],
    ) -> Keyring {
        assert_eq!(verifying.len(), pairwise.len(), "one pairwise key per replica");
        assert!(position < verifying.len(), "position {position} is not a replica");
        let macs = pairwise
            .iter()
            .map(|k| Hmac::<Sha256>::new_from_slice(k).expect("HMAC takes any key length"))
            .collect();
        Keyring {
            position,
            signing,
            verifying,
            macs,
            normal_case: NormalCaseAuth::Macs,
            meter: None,
        }
    }

    /// This keyring counting and timing its MACs and signatures in `meter`.
    pub fn with_meter(mut self, meter: AuthMeter) -> Keyring {
        self.meter = Some(meter);
        self
    }

    /// This keyring authenticating normal-case messages with `mode`.
    pub fn with_normal_case(mut self, mode: NormalCaseAuth) -> Keyring {
        self.normal_case = mode;
        self
    }

    /// The authentication of a normal-case message with `header`, for
    /// every receiver.
    pub fn auth(&self, header: &[u8]) -> Auth {
        match self.normal_case {
            NormalCaseAuth::Macs => Auth::Macs(self.authenticator(header)),
            NormalCaseAuth::Signatures => Auth::Signed(self.sign_bytes(header)),
        }
    }

    /// The authentication of a normal-case message with `header` for
    /// replica `to` only (a retransmission).
    pub fn auth_for(&self, to: usize, header: &[u8]) -> Auth {
        match self.normal_case {
            NormalCaseAuth::Macs => Auth::Macs(self.authenticator_for(to, header)),
            NormalCaseAuth::Signatures => Auth::Signed(self.sign_bytes(header)),
        }
    }

    /// Checks a normal-case message's authentication by replica `from`
    /// (of the kind this keyring's mode expects).
    pub fn check_auth(&self, from: usize, header: &[u8], auth: &Auth) -> bool {
        match (self.normal_case, auth) {
            (NormalCaseAuth::Macs, Auth::Macs(a)) => self.check_authenticator(from, header, a),
            (NormalCaseAuth::Signatures, Auth::Signed(sig)) => self.verify_bytes(from, header, sig),
            _ => false,
        }
    }

    /// The keyring of replica `position` of `n`, every key derived from
    /// `seed`.
    pub fn derive(seed: u64, position: usize, n: usize) -> Keyring {
        let verifying = (0..n).map(|j| replica_signing_key(seed, j).verifying_key()).collect();
        let pairwise: Vec<_> = (0..n).map(|j| pairwise_key(seed, position, j)).collect();
        Keyring::new(position, replica_signing_key(seed, position), verifying, &pairwise)
    }

    /// This replica's position.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Replicas known.
    pub fn replicas(&self) -> usize {
        self.verifying.len()
    }

    /// The MAC of `header` from this replica to replica `to`.
    pub fn mac(&self, to: usize, header: &[u8]) -> Mac {
        metered(self.meter.as_ref(), AuthOp::MacCompute, 1, || self.mac_unmetered(to, header))
    }

    fn mac_unmetered(&self, to: usize, header: &[u8]) -> Mac {
        let mut m = self.macs[to].clone();
        m.update(header);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_BYTES];
        out.copy_from_slice(&full[..MAC_BYTES]);
        out
    }

    /// Checks a MAC of `header` sent by replica `from` to this replica.
    pub fn check_mac(&self, from: usize, header: &[u8], mac: &Mac) -> bool {
        if from >= self.macs.len() {
            return false;
        }
        metered(self.meter.as_ref(), AuthOp::MacVerify, 1, || {
            let mut m = self.macs[from].clone();
            m.update(header);
            m.verify_truncated_left(mac).is_ok()
        })
    }

    /// An authenticator of `header` for every replica (this replica's own
    /// entry is zero).
    pub fn authenticator(&self, header: &[u8]) -> Authenticator {
        let others = self.macs.len().saturating_sub(1) as u64;
        metered(self.meter.as_ref(), AuthOp::MacCompute, others, || {
            (0..self.macs.len())
                .map(|j| {
                    if j == self.position { [0; MAC_BYTES] } else { self.mac_unmetered(j, header) }
                })
                .collect()
        })
    }

    /// An authenticator with only replica `to`'s entry filled in (for a
    /// point-to-point retransmission).
    pub fn authenticator_for(&self, to: usize, header: &[u8]) -> Authenticator {
        (0..self.macs.len())
            .map(|j| if j == to { self.mac(j, header) } else { [0; MAC_BYTES] })
            .collect()
    }

    /// Checks this replica's entry of an authenticator of `header` from
    /// replica `from`.
    pub fn check_authenticator(&self, from: usize, header: &[u8], auth: &[Mac]) -> bool {
        auth.len() == self.macs.len() && self.check_mac(from, header, &auth[self.position])
    }

    /// Signs `digest`.
    pub fn sign(&self, digest: &Digest) -> Signature {
        self.sign_bytes(&digest.0)
    }

    fn sign_bytes(&self, bytes: &[u8]) -> Signature {
        metered(self.meter.as_ref(), AuthOp::Sign, 1, || self.signing.sign(bytes))
    }

    fn verify_bytes(&self, signer: usize, bytes: &[u8], sig: &Signature) -> bool {
        let Some(k) = self.verifying.get(signer) else { return false };
        metered(self.meter.as_ref(), AuthOp::Verify, 1, || k.verify_strict(bytes, sig).is_ok())
    }

    /// Checks replica `signer`'s signature over `digest` (strict: rejects
    /// small-order keys and non-canonical signatures).
    pub fn check_signature(&self, signer: usize, digest: &Digest, sig: &Signature) -> bool {
        self.verify_bytes(signer, &digest.0, sig)
    }
}

/// A fixed-size message header for MACs: a kind tag and up to four numbers
/// and one digest, laid out without allocation.
pub struct Header {
    bytes: [u8; 1 + 8 * 4 + 32],
}

impl Header {
    /// The header of a message of kind `tag` with numbers `nums` and digest
    /// `d`.
    pub fn new(tag: u8, nums: [u64; 4], d: &Digest) -> Header {
        let mut bytes = [0u8; 1 + 8 * 4 + 32];
        bytes[0] = tag;
        for (i, v) in nums.iter().enumerate() {
            bytes[1 + 8 * i..9 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        bytes[33..].copy_from_slice(&d.0);
        Header { bytes }
    }

    /// The bytes to MAC.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_verifies_only_for_its_pair_and_content() {
        let k0 = Keyring::derive(7, 0, 4);
        let k1 = Keyring::derive(7, 1, 4);
        let k2 = Keyring::derive(7, 2, 4);
        let h = Header::new(1, [1, 2, 3, 0], &Digest::of(b"m"));
        let mac = k0.mac(1, h.as_bytes());
        assert!(k1.check_mac(0, h.as_bytes(), &mac));
        // Another receiver, a claimed other sender, tampered content: rejected.
        assert!(!k2.check_mac(0, h.as_bytes(), &mac));
        assert!(!k1.check_mac(2, h.as_bytes(), &mac));
        let tampered = Header::new(1, [1, 2, 4, 0], &Digest::of(b"m"));
        assert!(!k1.check_mac(0, tampered.as_bytes(), &mac));
        // A different cluster seed (a forger without the keys): rejected.
        let forger = Keyring::derive(8, 0, 4);
        assert!(!k1.check_mac(0, h.as_bytes(), &forger.mac(1, h.as_bytes())));
    }

    #[test]
    fn an_authenticator_serves_every_receiver() {
        let ks: Vec<_> = (0..4).map(|i| Keyring::derive(3, i, 4)).collect();
        let h = Header::new(2, [5, 6, 0, 0], &Digest::of(b"x"));
        let auth = ks[2].authenticator(h.as_bytes());
        for (j, k) in ks.iter().enumerate().filter(|(j, _)| *j != 2) {
            assert!(k.check_authenticator(2, h.as_bytes(), &auth), "receiver {j}");
        }
        let one = ks[2].authenticator_for(3, h.as_bytes());
        assert!(ks[3].check_authenticator(2, h.as_bytes(), &one));
        assert!(!ks[1].check_authenticator(2, h.as_bytes(), &one));
        assert!(!ks[1].check_authenticator(2, h.as_bytes(), &auth[..3]), "short vector");
    }

    #[test]
    fn signatures_are_third_party_verifiable_and_unforgeable() {
        let k0 = Keyring::derive(1, 0, 4);
        let k3 = Keyring::derive(1, 3, 4);
        let d = Digest::of(b"view-change");
        let sig = k0.sign(&d);
        assert!(k3.check_signature(0, &d, &sig));
        assert!(!k3.check_signature(1, &d, &sig), "claimed another signer");
        assert!(!k3.check_signature(0, &Digest::of(b"other"), &sig), "tampered");
        assert!(!k3.check_signature(9, &d, &sig), "unknown signer");
        let forged = Keyring::derive(2, 0, 4).sign(&d);
        assert!(!k3.check_signature(0, &d, &forged));
    }

    #[test]
    fn derived_keys_are_deterministic_and_distinct() {
        assert_eq!(pairwise_key(1, 0, 2), pairwise_key(1, 2, 0));
        assert_ne!(pairwise_key(1, 0, 2), pairwise_key(1, 0, 3));
        assert_eq!(
            client_signing_key(5, 9).verifying_key(),
            client_signing_key(5, 9).verifying_key()
        );
        assert_ne!(
            replica_signing_key(5, 1).verifying_key(),
            replica_signing_key(5, 2).verifying_key()
        );
    }
}
