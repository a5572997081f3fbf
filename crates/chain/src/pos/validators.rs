//! The validator registry (keys and stakes), signature checks with a shared
//! verification cache, RANDAO seeds, stake-proportional proposer selection
//! and per-slot committees.
//!
//! **Proposer selection** follows `compute_proposer_index`: walk candidates
//! drawn from `hash(seed ‖ slot ‖ round)` and accept candidate `i` when
//! `stake_i × 255 ≥ max_stake × random_byte` — rejection sampling, so each
//! validator is chosen with probability proportional to its stake.
//! **Seeds**: the RANDAO mix is `xor` of `hash(reveal)` over the chain's
//! blocks, where a reveal is the proposer's (deterministic) Ed25519
//! signature of the epoch; the seed of epoch `e` hashes `e` with the mix as
//! of the end of epoch `e − 2`, so it is fixed one epoch ahead (lookahead)
//! and no single proposer chooses it (the last proposer of an epoch can
//! only withhold, a 1-bit bias, as on Ethereum).

use super::types::ValidatorIndex;
use crate::hash::{Hash32, sha256};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// One validator.
#[derive(Clone, Debug)]
pub struct Validator {
    /// Its public key.
    pub key: VerifyingKey,
    /// Its stake.
    pub stake: u64,
}

/// Verified (validator, digest, signature) triples, shared by simulated
/// nodes: verification is a pure function, so sharing only saves time.
#[derive(Clone, Debug, Default)]
pub struct VerifyCache(Arc<Mutex<HashSet<Hash32>>>);

/// Entries the cache holds at most before it is cleared.
const MAX_CACHE: usize = 1 << 21;

/// All validators.
#[derive(Clone, Debug)]
pub struct Registry {
    /// Validators by index.
    pub validators: Vec<Validator>,
    /// Sum of stakes.
    pub total_stake: u64,
    max_stake: u64,
    cache: VerifyCache,
}

impl Registry {
    /// A registry of `keys` with `stakes`.
    pub fn new(keys: &[SigningKey], stakes: &[u64]) -> Registry {
        assert_eq!(keys.len(), stakes.len());
        assert!(!keys.is_empty(), "no validators");
        assert!(stakes.iter().all(|s| *s > 0), "stakes must be positive");
        let validators: Vec<Validator> = keys
            .iter()
            .zip(stakes)
            .map(|(k, s)| Validator { key: k.verifying_key(), stake: *s })
            .collect();
        Registry {
            total_stake: stakes.iter().sum(),
            max_stake: stakes.iter().copied().max().unwrap_or(1),
            validators,
            cache: VerifyCache::default(),
        }
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.validators.len()
    }

    /// True when empty (never: [`Registry::new`] refuses).
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// Stake of `v`.
    pub fn stake(&self, v: ValidatorIndex) -> u64 {
        self.validators.get(v as usize).map_or(0, |x| x.stake)
    }

    /// True when `signature` is `v`'s over `message`.
    pub fn verify(&self, v: ValidatorIndex, message: &[u8], signature: &[u8; 64]) -> bool {
        let Some(val) = self.validators.get(v as usize) else { return false };
        let mut b = Vec::with_capacity(4 + message.len() + 64);
        b.extend_from_slice(&v.to_le_bytes());
        b.extend_from_slice(message);
        b.extend_from_slice(signature);
        let id = sha256(&b);
        let mut set = self.cache.0.lock().unwrap_or_else(|e| e.into_inner());
        if set.contains(&id) {
            return true;
        }
        let ok = val.key.verify(message, &Signature::from_bytes(signature)).is_ok();
        if ok {
            if set.len() >= MAX_CACHE {
                set.clear();
            }
            set.insert(id);
        }
        ok
    }

    /// The proposer of `slot` given the epoch's `seed` (rejection sampling
    /// proportional to stake).
    pub fn proposer(&self, seed: &Hash32, slot: u64) -> ValidatorIndex {
        let n = self.validators.len() as u64;
        for round in 0u64.. {
            let mut b = seed.0.to_vec();
            b.extend_from_slice(&slot.to_le_bytes());
            b.extend_from_slice(&round.to_le_bytes());
            let h = sha256(&b);
            let mut idx = [0u8; 8];
            idx.copy_from_slice(&h.0[..8]);
            let candidate = u64::from_le_bytes(idx) % n;
            let random_byte = h.0[8] as u64;
            if self.validators[candidate as usize].stake * 255 >= self.max_stake * random_byte {
                return candidate as ValidatorIndex;
            }
        }
        unreachable!("the rounds never end")
    }

    /// The committees of an epoch: a seeded shuffle of all validators cut
    /// into `slots_per_epoch` parts; `committees[i]` attests in slot `i`.
    pub fn committees(&self, seed: &Hash32, slots_per_epoch: u64) -> Vec<Vec<ValidatorIndex>> {
        let mut order: Vec<ValidatorIndex> = (0..self.validators.len() as u32).collect();
        order.shuffle(&mut ChaCha8Rng::from_seed(seed.0));
        let s = slots_per_epoch as usize;
        (0..s).map(|i| order.iter().skip(i).step_by(s).copied().collect()).collect()
    }
}

/// Signs `message` with `key` (attestations, blocks, reveals).
pub fn sign(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    key.sign(message).to_bytes()
}

/// The seed of `epoch` from the RANDAO mix at the end of epoch `epoch − 2`.
pub fn epoch_seed(mix: &Hash32, epoch: u64) -> Hash32 {
    let mut b = mix.0.to_vec();
    b.extend_from_slice(&epoch.to_le_bytes());
    sha256(&b)
}

/// The mix after a block with `reveal`.
pub fn mix_in(mix: &Hash32, reveal: &[u8; 64]) -> Hash32 {
    let h = sha256(reveal);
    let mut out = [0u8; 32];
    for (o, (a, b)) in out.iter_mut().zip(mix.0.iter().zip(h.0.iter())) {
        *o = a ^ b;
    }
    Hash32(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tx::key_from_seed;

    /// 10,000 slots: proposals per validator match stake shares (χ² test,
    /// 4 degrees of freedom, threshold 18.47 = p 0.001).
    #[test]
    fn proposers_are_chosen_in_proportion_to_stake() {
        let stakes = [32u64, 16, 8, 4, 4];
        let keys: Vec<SigningKey> = (0..5).map(|i| key_from_seed(5, i)).collect();
        let reg = Registry::new(&keys, &stakes);
        let seed = sha256(b"seed");
        let mut counts = [0u64; 5];
        let slots = 10_000;
        for slot in 0..slots {
            counts[reg.proposer(&seed, slot) as usize] += 1;
        }
        let total: u64 = stakes.iter().sum();
        let chi2: f64 = counts
            .iter()
            .zip(stakes)
            .map(|(&c, s)| {
                let e = slots as f64 * s as f64 / total as f64;
                (c as f64 - e).powi(2) / e
            })
            .sum();
        assert!(chi2 < 18.47, "χ² = {chi2}, counts {counts:?}");
    }

    #[test]
    fn committees_cover_every_validator_once() {
        let keys: Vec<SigningKey> = (0..100).map(|i| key_from_seed(6, i)).collect();
        let reg = Registry::new(&keys, &[1; 100]);
        let c = reg.committees(&sha256(b"x"), 32);
        let mut all: Vec<u32> = c.concat();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_ne!(c, reg.committees(&sha256(b"y"), 32), "the seed reshuffles");
    }

    #[test]
    fn reveals_are_verifiable_and_move_the_mix() {
        let keys: Vec<SigningKey> = (0..2).map(|i| key_from_seed(7, i)).collect();
        let reg = Registry::new(&keys, &[1, 1]);
        let msg = crate::pos::types::randao_message(3);
        let reveal = sign(&keys[0], &msg);
        assert!(reg.verify(0, &msg, &reveal));
        assert!(!reg.verify(1, &msg, &reveal), "not validator 1's reveal");
        assert_ne!(mix_in(&Hash32::ZERO, &reveal), Hash32::ZERO);
    }
}
