//! The account ledger: balances and transfer nonces, applied transaction by
//! transaction with undo records so a reorganisation can roll blocks back.
//!
//! Signature checks go through a [`SigCache`]: verifying is a pure function
//! of the transaction bytes, so a cache shared by all simulated nodes
//! changes nothing but cost (each signature is verified once per run, not
//! once per node).

use crate::hash::Hash32;
use crate::tx::{AccountId, Tx};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// One account's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// Spendable balance.
    pub balance: u64,
    /// The nonce the next transfer from this account must carry.
    pub nonce: u64,
}

/// Why a transaction does not apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The signature is not the payer's.
    #[error("bad signature")]
    BadSignature,
    /// The nonce is not the payer's next one (already used: a double spend
    /// or replay; or from the future).
    #[error("nonce {got}, expected {expected}")]
    BadNonce {
        /// The transaction's nonce.
        got: u64,
        /// The payer's next nonce.
        expected: u64,
    },
    /// The payer cannot afford it.
    #[error("balance {balance} < amount {amount}")]
    InsufficientFunds {
        /// The payer's balance.
        balance: u64,
        /// The amount.
        amount: u64,
    },
    /// A coinbase outside its place or with the wrong amount.
    #[error("misplaced or wrong coinbase")]
    BadCoinbase,
    /// The payee's balance would overflow.
    #[error("balance overflow")]
    Overflow,
}

/// Verified signatures by txid, shareable between nodes.
#[derive(Clone, Debug, Default)]
pub struct SigCache {
    verified: Arc<Mutex<HashSet<Hash32>>>,
}

impl SigCache {
    /// Bound on remembered signatures; the cache is cleared when full.
    pub const MAX_ENTRIES: usize = 1 << 20;

    /// True when `tx`'s signature is valid (coinbases have none).
    pub fn check(&self, tx: &Tx, txid: &Hash32) -> bool {
        let Tx::Transfer(t) = tx else { return true };
        let mut set = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if set.contains(txid) {
            return true;
        }
        let ok = t.verify_signature();
        if ok {
            if set.len() >= Self::MAX_ENTRIES {
                set.clear();
            }
            set.insert(*txid);
        }
        ok
    }
}

/// What applying one transaction changed: the previous state of every
/// touched account (`None` = it did not exist).
#[derive(Clone, Debug, Default)]
pub struct Undo(Vec<(AccountId, Option<Account>)>);

/// Balances and nonces of every account.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    accounts: HashMap<AccountId, Account>,
}

impl Ledger {
    /// A ledger with initial balances (the genesis allocation).
    pub fn with_balances(balances: &[(AccountId, u64)]) -> Ledger {
        let accounts =
            balances.iter().map(|(a, b)| (*a, Account { balance: *b, nonce: 0 })).collect();
        Ledger { accounts }
    }

    /// The account's state (zero when unknown).
    pub fn account(&self, id: &AccountId) -> Account {
        self.accounts.get(id).copied().unwrap_or_default()
    }

    /// Checks `tx` against the current state without changing it.
    /// Coinbases are checked by the block rules, not here.
    pub fn check(&self, tx: &Tx, txid: &Hash32, sigs: &SigCache) -> Result<(), TxError> {
        let Tx::Transfer(t) = tx else { return Ok(()) };
        let payer = self.account(&t.from);
        if t.nonce != payer.nonce {
            return Err(TxError::BadNonce { got: t.nonce, expected: payer.nonce });
        }
        if payer.balance < t.amount {
            return Err(TxError::InsufficientFunds { balance: payer.balance, amount: t.amount });
        }
        if t.from != t.to && self.account(&t.to).balance.checked_add(t.amount).is_none() {
            return Err(TxError::Overflow);
        }
        if !sigs.check(tx, txid) {
            return Err(TxError::BadSignature);
        }
        Ok(())
    }

    /// Applies `tx` (checked first) and returns how to undo it.
    pub fn apply(&mut self, tx: &Tx, txid: &Hash32, sigs: &SigCache) -> Result<Undo, TxError> {
        self.check(tx, txid, sigs)?;
        let mut undo = Undo::default();
        match tx {
            Tx::Coinbase { to, amount, .. } => {
                let before = self.accounts.get(to).copied();
                let acc = self.accounts.entry(*to).or_default();
                acc.balance = acc.balance.checked_add(*amount).ok_or(TxError::Overflow)?;
                undo.0.push((*to, before));
            }
            Tx::Transfer(t) => {
                undo.0.push((t.from, self.accounts.get(&t.from).copied()));
                undo.0.push((t.to, self.accounts.get(&t.to).copied()));
                let payer = self.accounts.entry(t.from).or_default();
                payer.balance -= t.amount;
                payer.nonce += 1;
                let payee = self.accounts.entry(t.to).or_default();
                payee.balance += t.amount;
            }
        }
        Ok(undo)
    }

    /// Reverts one [`Ledger::apply`]; undos must be reverted in reverse
    /// order of application.
    pub fn revert(&mut self, undo: Undo) {
        for (id, before) in undo.0.into_iter().rev() {
            match before {
                Some(a) => {
                    self.accounts.insert(id, a);
                }
                None => {
                    self.accounts.remove(&id);
                }
            }
        }
    }

    /// A digest of the whole state, for comparing ledgers in tests.
    pub fn digest(&self) -> Vec<(AccountId, Account)> {
        let mut v: Vec<_> = self.accounts.iter().map(|(k, a)| (*k, *a)).collect();
        v.sort();
        v
    }
}

impl PartialOrd for Account {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Account {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.balance, self.nonce).cmp(&(other.balance, other.nonce))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tx::{Transfer, key_from_seed};

    #[test]
    fn double_spend_and_overdraft_are_rejected_and_undo_restores() {
        let k = key_from_seed(9, 0);
        let alice = k.verifying_key().to_bytes();
        let bob = [2u8; 32];
        let mut l = Ledger::with_balances(&[(alice, 100)]);
        let before = l.digest();
        let sigs = SigCache::default();
        let t1 = Tx::Transfer(Transfer::new(&k, bob, 60, 0));
        let t2 = Tx::Transfer(Transfer::new(&k, [3; 32], 10, 0));
        let u1 = l.apply(&t1, &t1.txid(), &sigs).unwrap();
        assert_eq!(l.account(&bob).balance, 60);
        // Same nonce again: the double spend.
        assert_eq!(
            l.apply(&t2, &t2.txid(), &sigs).unwrap_err(),
            TxError::BadNonce { got: 0, expected: 1 }
        );
        let t3 = Tx::Transfer(Transfer::new(&k, bob, 60, 1));
        assert!(matches!(l.apply(&t3, &t3.txid(), &sigs), Err(TxError::InsufficientFunds { .. })));
        l.revert(u1);
        assert_eq!(l.digest(), before);
        assert!(l.apply(&t2, &t2.txid(), &sigs).is_ok(), "after undo the other spend applies");
    }
}
