//! Transactions over the account ledger: a coinbase paying the block reward
//! and Ed25519-signed transfers with per-account nonces (the nonce is what
//! makes a spend unique: two transfers from one account with one nonce are a
//! double spend).

use crate::hash::{Hash32, sha256d};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// An account: the bytes of its Ed25519 verifying key.
pub type AccountId = [u8; 32];

/// Domain separation for transfer signatures.
const TRANSFER_DOMAIN: &[u8] = b"synod-chain/transfer/v1";

/// A signed transfer of `amount` from `from` to `to`; valid only as the
/// `nonce`-th transfer of `from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Payer (and signer).
    pub from: AccountId,
    /// Payee.
    pub to: AccountId,
    /// Amount moved.
    pub amount: u64,
    /// The payer's transfer sequence number (starts at 0).
    pub nonce: u64,
    /// Ed25519 signature by `from` over [`Transfer::signing_bytes`].
    pub signature: [u8; 64],
}

/// A transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tx {
    /// The block reward; the first transaction of a block and only there.
    /// `height` makes every coinbase unique (as BIP 34).
    Coinbase {
        /// Who receives the reward.
        to: AccountId,
        /// The reward.
        amount: u64,
        /// Height of the block carrying it.
        height: u64,
    },
    /// A signed transfer.
    Transfer(Transfer),
}

impl Transfer {
    /// Signs a new transfer with `key`.
    pub fn new(key: &SigningKey, to: AccountId, amount: u64, nonce: u64) -> Transfer {
        let from = key.verifying_key().to_bytes();
        let mut t = Transfer { from, to, amount, nonce, signature: [0; 64] };
        t.signature = key.sign(&t.signing_bytes()).to_bytes();
        t
    }

    /// The signed bytes: domain, payer, payee, amount, nonce.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(TRANSFER_DOMAIN.len() + 80);
        b.extend_from_slice(TRANSFER_DOMAIN);
        b.extend_from_slice(&self.from);
        b.extend_from_slice(&self.to);
        b.extend_from_slice(&self.amount.to_le_bytes());
        b.extend_from_slice(&self.nonce.to_le_bytes());
        b
    }

    /// True when the signature is `from`'s over the transfer.
    pub fn verify_signature(&self) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.from) else { return false };
        key.verify(&self.signing_bytes(), &Signature::from_bytes(&self.signature)).is_ok()
    }
}

impl Tx {
    /// The canonical encoding (what the txid hashes).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Tx::Coinbase { to, amount, height } => {
                let mut b = vec![0u8];
                b.extend_from_slice(to);
                b.extend_from_slice(&amount.to_le_bytes());
                b.extend_from_slice(&height.to_le_bytes());
                b
            }
            Tx::Transfer(t) => {
                let mut b = vec![1u8];
                b.extend_from_slice(&t.signing_bytes());
                b.extend_from_slice(&t.signature);
                b
            }
        }
    }

    /// The transaction id: [`sha256d`] of the encoding.
    pub fn txid(&self) -> Hash32 {
        sha256d(&self.encode())
    }

    /// Encoded size in bytes (message cost accounting).
    pub fn size_bytes(&self) -> usize {
        match self {
            Tx::Coinbase { .. } => 49,
            Tx::Transfer(_) => 1 + TRANSFER_DOMAIN.len() + 80 + 64,
        }
    }

    /// The spend this transaction makes, `(payer, nonce)`; two different
    /// transactions with one spend conflict.
    pub fn spend(&self) -> Option<(AccountId, u64)> {
        match self {
            Tx::Coinbase { .. } => None,
            Tx::Transfer(t) => Some((t.from, t.nonce)),
        }
    }
}

/// A deterministic signing key for tests and simulations.
pub fn key_from_seed(seed: u64, index: u64) -> SigningKey {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&seed.to_le_bytes());
    b[8..].copy_from_slice(&index.to_le_bytes());
    SigningKey::from_bytes(&crate::hash::sha256(&b).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tampered_transfer_fails_verification() {
        let k = key_from_seed(1, 0);
        let t = Transfer::new(&k, [7; 32], 10, 0);
        assert!(t.verify_signature());
        let mut bad = t.clone();
        bad.amount = 11;
        assert!(!bad.verify_signature());
        let mut forged = t.clone();
        forged.from = key_from_seed(1, 1).verifying_key().to_bytes();
        assert!(!forged.verify_signature());
        assert_ne!(Tx::Transfer(t).txid(), Tx::Transfer(bad).txid());
    }
}
