//! The transaction pool: unconfirmed transfers waiting for a block, with
//! duplicate and double-spend rejection against both the pool and the
//! ledger at the best tip. Bounded by [`PowParams::max_pool_txs`].
//!
//! [`PowParams::max_pool_txs`]: super::params::PowParams::max_pool_txs

use crate::hash::Hash32;
use crate::ledger::{Ledger, SigCache, TxError};
use crate::tx::{AccountId, Tx};
use std::collections::{BTreeMap, HashMap};

/// How far ahead of an account's next nonce the pool accepts transfers.
pub const MAX_NONCE_GAP: u64 = 64;

/// Why the pool refused a transaction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Already in the pool.
    #[error("duplicate transaction")]
    Duplicate,
    /// Another pool transaction makes the same spend (payer, nonce).
    #[error("double spend of a pooled transaction")]
    DoubleSpend,
    /// The nonce is already used on the best chain (a double spend of a
    /// confirmed transfer, or a replay).
    #[error("nonce already spent on the best chain")]
    AlreadySpent,
    /// The nonce is too far ahead.
    #[error("nonce too far in the future")]
    NonceGap,
    /// Coinbases never enter the pool.
    #[error("coinbase outside a block")]
    Coinbase,
    /// The signature or the amount is wrong.
    #[error("invalid: {0}")]
    Invalid(TxError),
    /// The pool is full.
    #[error("pool full")]
    Full,
}

/// Unconfirmed transactions, keyed by txid and by spend.
#[derive(Clone, Debug, Default)]
pub struct Mempool {
    by_txid: HashMap<Hash32, (u64, Tx)>,
    by_spend: BTreeMap<(AccountId, u64), Hash32>,
    next_seq: u64,
    max_txs: usize,
}

impl Mempool {
    /// An empty pool holding at most `max_txs`.
    pub fn new(max_txs: usize) -> Mempool {
        Mempool { max_txs, ..Mempool::default() }
    }

    /// Transactions held.
    pub fn len(&self) -> usize {
        self.by_txid.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.by_txid.is_empty()
    }

    /// True when `txid` is pooled.
    pub fn contains(&self, txid: &Hash32) -> bool {
        self.by_txid.contains_key(txid)
    }

    /// Admits `tx` if it is new, signed, not a double spend of a pooled or
    /// confirmed transfer, and affordable at the tip when its nonce is next.
    pub fn add(&mut self, tx: Tx, ledger: &Ledger, sigs: &SigCache) -> Result<Hash32, PoolError> {
        let Some((payer, nonce)) = tx.spend() else { return Err(PoolError::Coinbase) };
        let txid = tx.txid();
        if self.by_txid.contains_key(&txid) {
            return Err(PoolError::Duplicate);
        }
        if self.by_spend.contains_key(&(payer, nonce)) {
            return Err(PoolError::DoubleSpend);
        }
        let next = ledger.account(&payer).nonce;
        if nonce < next {
            return Err(PoolError::AlreadySpent);
        }
        if nonce >= next + MAX_NONCE_GAP {
            return Err(PoolError::NonceGap);
        }
        if nonce == next {
            ledger.check(&tx, &txid, sigs).map_err(PoolError::Invalid)?;
        } else if !sigs.check(&tx, &txid) {
            return Err(PoolError::Invalid(TxError::BadSignature));
        }
        if self.by_txid.len() >= self.max_txs {
            return Err(PoolError::Full);
        }
        self.by_spend.insert((payer, nonce), txid);
        self.by_txid.insert(txid, (self.next_seq, tx));
        self.next_seq += 1;
        Ok(txid)
    }

    /// Removes `tx` and any pooled transaction making the same spend.
    pub fn remove_spend(&mut self, tx: &Tx) {
        self.by_txid.remove(&tx.txid());
        if let Some(spend) = tx.spend()
            && let Some(other) = self.by_spend.remove(&spend)
        {
            self.by_txid.remove(&other);
        }
    }

    /// Drops transfers whose nonce the ledger has passed (confirmed or
    /// conflicting with a confirmed one).
    pub fn prune(&mut self, ledger: &Ledger) {
        let stale: Vec<(AccountId, u64)> = self
            .by_spend
            .keys()
            .filter(|(payer, nonce)| *nonce < ledger.account(payer).nonce)
            .copied()
            .collect();
        for spend in stale {
            if let Some(txid) = self.by_spend.remove(&spend) {
                self.by_txid.remove(&txid);
            }
        }
    }

    /// Up to `max` transactions that apply in order on `ledger`, oldest
    /// first (nonce order within a payer). `ledger` is left unchanged.
    pub fn select(&self, ledger: &mut Ledger, max: usize, sigs: &SigCache) -> Vec<Tx> {
        let mut candidates: Vec<&(u64, Tx)> = self.by_txid.values().collect();
        candidates.sort_by_key(|(seq, tx)| (tx.spend().map_or(0, |s| s.1), *seq));
        let mut chosen = Vec::new();
        let mut undos = Vec::new();
        for (_, tx) in candidates {
            if chosen.len() >= max {
                break;
            }
            if let Ok(u) = ledger.apply(tx, &tx.txid(), sigs) {
                undos.push(u);
                chosen.push(tx.clone());
            }
        }
        for u in undos.into_iter().rev() {
            ledger.revert(u);
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tx::{Transfer, key_from_seed};

    #[test]
    fn pool_rejects_duplicates_double_spends_and_spent_nonces() {
        let k = key_from_seed(3, 0);
        let alice = k.verifying_key().to_bytes();
        let mut ledger = Ledger::with_balances(&[(alice, 100)]);
        let sigs = SigCache::default();
        let mut pool = Mempool::new(10);
        let pay_bob = Tx::Transfer(Transfer::new(&k, [1; 32], 30, 0));
        let pay_carol = Tx::Transfer(Transfer::new(&k, [2; 32], 30, 0));
        pool.add(pay_bob.clone(), &ledger, &sigs).unwrap();
        assert_eq!(pool.add(pay_bob.clone(), &ledger, &sigs), Err(PoolError::Duplicate));
        assert_eq!(pool.add(pay_carol.clone(), &ledger, &sigs), Err(PoolError::DoubleSpend));
        let next = Tx::Transfer(Transfer::new(&k, [2; 32], 30, 1));
        pool.add(next, &ledger, &sigs).unwrap();
        assert_eq!(pool.select(&mut ledger, 10, &sigs).len(), 2, "nonce 0 then 1");
        // Confirm pay_bob: carol's conflicting spend is now AlreadySpent.
        ledger.apply(&pay_bob, &pay_bob.txid(), &sigs).unwrap();
        pool.prune(&ledger);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.add(pay_carol, &ledger, &sigs), Err(PoolError::AlreadySpent));
        let mut forged = Transfer::new(&k, [1; 32], 5, 2);
        forged.amount = 6;
        assert_eq!(
            pool.add(Tx::Transfer(forged), &ledger, &sigs),
            Err(PoolError::Invalid(TxError::BadSignature))
        );
    }
}
