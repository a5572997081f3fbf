//! One node's view of a proof-of-work chain: every block it has seen (a
//! tree), the active (best) chain, the ledger at its tip with undo records,
//! the transaction pool, and a bounded orphan pool.
//!
//! Rules enforced on every block ([`PowChain::submit`]): proof of work at or
//! below a target that decodes and respects the pow limit; the expected
//! retarget bits; Merkle root; no duplicate transactions; one coinbase,
//! first, paying exactly the reward at the right height; timestamp above the
//! median of the previous 11 and at most `max_future_secs` ahead of the
//! node's clock; every transfer valid against the ledger when connected.
//!
//! Fork choice: the valid chain with the most cumulative work (not the most
//! blocks); ties go to the chain seen first. Switching chains disconnects
//! the old branch (undoing its ledger changes and returning its transfers
//! to the pool) and connects the new one; if a block of the new branch turns
//! out invalid it is marked so, with its descendants, and the old chain is
//! restored.

use super::block::{Block, Header};
use super::compact::{target_from_compact, work_for_target};
use super::mempool::{Mempool, PoolError};
use super::params::PowParams;
use super::retarget::retarget;
use crate::hash::Hash32;
use crate::ledger::{Ledger, SigCache, TxError, Undo};
use crate::tx::{AccountId, Tx};
use crate::u256::U256;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Why a block was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Already stored (or held as an orphan).
    #[error("already known")]
    Known,
    /// The hash is above the target, or the target is invalid or above the
    /// pow limit.
    #[error("proof of work")]
    BadProofOfWork,
    /// Not the target the retarget rule demands.
    #[error("bits {got:#x}, expected {expected:#x}")]
    BadBits {
        /// Bits in the header.
        got: u32,
        /// Bits the rule demands.
        expected: u32,
    },
    /// The Merkle root does not match the transactions.
    #[error("merkle root mismatch")]
    BadMerkleRoot,
    /// A transaction appears twice.
    #[error("duplicate transaction")]
    DuplicateTx,
    /// No coinbase first, a coinbase elsewhere, or a wrong amount or height.
    #[error("bad coinbase")]
    BadCoinbase,
    /// More transfers than the block limit.
    #[error("too many transactions")]
    TooManyTxs,
    /// Timestamp not above the median time past.
    #[error("time {time} <= median time past {median}")]
    TimeTooOld {
        /// The header's time.
        time: u32,
        /// The median of the previous blocks' times.
        median: u32,
    },
    /// Timestamp too far in the future (not invalid forever: may be
    /// resubmitted later).
    #[error("time {time} > now + bound {max}")]
    TimeTooNew {
        /// The header's time.
        time: u32,
        /// The latest acceptable time.
        max: u64,
    },
    /// The parent (or an ancestor) is invalid.
    #[error("descends from an invalid block")]
    InvalidParent,
    /// A transfer does not apply on the parent's ledger.
    #[error("transaction {index}: {error}")]
    BadTx {
        /// Position in the block.
        index: usize,
        /// Why.
        error: TxError,
    },
}

/// What a stored block did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// It is the new best tip; `reorg_depth` blocks of the old chain were
    /// disconnected (0: it simply extended the tip).
    NewTip {
        /// Blocks disconnected.
        reorg_depth: u64,
        /// Transfers returned to the pool from disconnected blocks.
        returned_txs: usize,
    },
    /// Stored on a branch with no more work than the best.
    SideChain,
    /// Held until its parent arrives.
    Orphan {
        /// The missing parent.
        missing: Hash32,
    },
}

/// A stored block and what the tree knows about it.
#[derive(Clone, Debug)]
pub struct BlockEntry {
    /// The block.
    pub block: Block,
    /// Distance from genesis.
    pub height: u64,
    /// Work of this block and all its ancestors.
    pub chain_work: U256,
    /// Failed validation when connected (and so did its descendants).
    pub invalid: bool,
}

/// A node's chain state.
#[derive(Debug)]
pub struct PowChain {
    params: PowParams,
    sigs: SigCache,
    entries: HashMap<Hash32, BlockEntry>,
    /// Active chain by height.
    active: Vec<Hash32>,
    /// Undo records of each active block, by height.
    undo: Vec<Vec<Undo>>,
    ledger: Ledger,
    genesis_balances: Vec<(AccountId, u64)>,
    pool: Mempool,
    orphans: HashMap<Hash32, (Block, u64)>,
    orphan_order: VecDeque<Hash32>,
    /// Depth of every reorganisation so far (bounded).
    pub reorg_depths: Vec<u64>,
}

/// Reorganisation depths remembered at most.
const MAX_REORG_LOG: usize = 100_000;
/// Orphans older than this are dropped.
pub const ORPHAN_EXPIRY_SECS: u64 = 20 * 60;

/// The genesis block of `params` (fixed: every node agrees on it).
pub fn genesis_block(params: &PowParams) -> Block {
    let txs = Arc::new(vec![Tx::Coinbase { to: [0; 32], amount: 0, height: 0 }]);
    let merkle_root = crate::hash::merkle_root(&[txs[0].txid()]);
    let header = Header {
        version: 1,
        prev_hash: Hash32::ZERO,
        merkle_root,
        time_secs: 0,
        bits: params.genesis_bits,
        nonce: 0,
    };
    let (mined, _) = super::block::mine(header, u64::MAX);
    Block { header: mined.unwrap_or(header), txs }
}

impl PowChain {
    /// A chain holding only `genesis`, with the allocation `balances`.
    pub fn new(
        params: PowParams,
        genesis: Block,
        balances: &[(AccountId, u64)],
        sigs: SigCache,
    ) -> PowChain {
        let hash = genesis.hash();
        let work = work_for_target(&target_from_compact(genesis.header.bits).unwrap_or(U256::MAX));
        let entry = BlockEntry { block: genesis, height: 0, chain_work: work, invalid: false };
        let pool = Mempool::new(params.max_pool_txs);
        PowChain {
            params,
            sigs,
            entries: HashMap::from([(hash, entry)]),
            active: vec![hash],
            undo: vec![Vec::new()],
            ledger: Ledger::with_balances(balances),
            genesis_balances: balances.to_vec(),
            pool,
            orphans: HashMap::new(),
            orphan_order: VecDeque::new(),
            reorg_depths: Vec::new(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &PowParams {
        &self.params
    }

    /// Hash of the best tip.
    pub fn tip(&self) -> Hash32 {
        self.active[self.active.len() - 1]
    }

    /// Height of the best tip.
    pub fn height(&self) -> u64 {
        self.active.len() as u64 - 1
    }

    /// The active chain, genesis first.
    pub fn best_chain(&self) -> &[Hash32] {
        &self.active
    }

    /// A stored block.
    pub fn entry(&self, hash: &Hash32) -> Option<&BlockEntry> {
        self.entries.get(hash)
    }

    /// Cumulative work of the best tip.
    pub fn tip_work(&self) -> U256 {
        self.entries[&self.tip()].chain_work
    }

    /// The ledger at the best tip.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The signature cache this node uses.
    pub fn sigs(&self) -> &SigCache {
        &self.sigs
    }

    /// The genesis allocation.
    pub fn genesis_balances(&self) -> &[(AccountId, u64)] {
        &self.genesis_balances
    }

    /// The transaction pool.
    pub fn pool(&self) -> &Mempool {
        &self.pool
    }

    /// Orphans held.
    pub fn orphan_count(&self) -> usize {
        self.orphans.len()
    }

    /// True when `hash` is stored or held as an orphan.
    pub fn knows(&self, hash: &Hash32) -> bool {
        self.entries.contains_key(hash) || self.orphans.contains_key(hash)
    }

    /// True when `hash` is on the active chain.
    pub fn is_active(&self, hash: &Hash32) -> bool {
        self.entries.get(hash).is_some_and(|e| self.active.get(e.height as usize) == Some(hash))
    }

    /// Submits a transfer to the pool.
    pub fn submit_tx(&mut self, tx: Tx) -> Result<Hash32, PoolError> {
        self.pool.add(tx, &self.ledger, &self.sigs)
    }

    /// The bits a child of `parent` must carry.
    pub fn next_bits(&self, parent: &Hash32) -> u32 {
        let p = &self.entries[parent];
        let height = p.height + 1;
        let interval = self.params.retarget_interval_blocks;
        if !height.is_multiple_of(interval) {
            return p.block.header.bits;
        }
        let first = self.ancestor(parent, height - interval);
        let first_time = self.entries[&first].block.header.time_secs as i64;
        let actual = p.block.header.time_secs as i64 - first_time;
        retarget(&self.params, p.block.header.bits, actual)
    }

    /// The ancestor of `hash` at `height` (asserts it exists).
    pub fn ancestor(&self, hash: &Hash32, height: u64) -> Hash32 {
        let mut cur = *hash;
        loop {
            let e = &self.entries[&cur];
            assert!(e.height >= height, "no ancestor at height {height}");
            if e.height == height {
                return cur;
            }
            if self.active.get(e.height as usize) == Some(&cur) {
                return self.active[height as usize];
            }
            cur = e.block.header.prev_hash;
        }
    }

    /// Median time of `hash` and up to `median_time_span − 1` ancestors.
    pub fn median_time_past(&self, hash: &Hash32) -> u32 {
        let mut times = Vec::with_capacity(self.params.median_time_span);
        let mut cur = Some(*hash);
        while let Some(h) = cur {
            if times.len() == self.params.median_time_span {
                break;
            }
            let e = &self.entries[&h];
            times.push(e.block.header.time_secs);
            cur = (e.height > 0).then_some(e.block.header.prev_hash);
        }
        times.sort_unstable();
        times[times.len() / 2]
    }

    /// A block template on the best tip paying `miner`: header with the
    /// right bits, a valid time (`now_secs`, or just above the median time
    /// past), and pool transfers. The nonce is left for mining.
    pub fn template(&mut self, miner: AccountId, now_secs: u64) -> Block {
        let tip = self.tip();
        let height = self.height() + 1;
        let mut txs = vec![Tx::Coinbase { to: miner, amount: self.params.block_reward, height }];
        txs.extend(self.pool.select(&mut self.ledger, self.params.max_block_txs, &self.sigs));
        let merkle_root = crate::hash::merkle_root(&txs.iter().map(Tx::txid).collect::<Vec<_>>());
        let time_secs = (now_secs.min(u32::MAX as u64) as u32).max(self.median_time_past(&tip) + 1);
        let header = Header {
            version: 1,
            prev_hash: tip,
            merkle_root,
            time_secs,
            bits: self.next_bits(&tip),
            nonce: 0,
        };
        Block { header, txs: Arc::new(txs) }
    }

    /// Checks that need nothing but the block itself.
    fn check_context_free(&self, block: &Block) -> Result<(), BlockError> {
        let target =
            target_from_compact(block.header.bits).map_err(|_| BlockError::BadProofOfWork)?;
        if target > self.params.pow_limit() || !block.header.meets_target() {
            return Err(BlockError::BadProofOfWork);
        }
        if !matches!(block.txs.first(), Some(Tx::Coinbase { .. }))
            || block.txs[1..].iter().any(|t| matches!(t, Tx::Coinbase { .. }))
        {
            return Err(BlockError::BadCoinbase);
        }
        if block.txs.len() - 1 > self.params.max_block_txs {
            return Err(BlockError::TooManyTxs);
        }
        let ids: Vec<Hash32> = block.txs.iter().map(Tx::txid).collect();
        let unique: HashSet<&Hash32> = ids.iter().collect();
        if unique.len() != ids.len() {
            return Err(BlockError::DuplicateTx);
        }
        if crate::hash::merkle_root(&ids) != block.header.merkle_root {
            return Err(BlockError::BadMerkleRoot);
        }
        Ok(())
    }

    /// Checks against the parent: bits, timestamps, coinbase.
    fn check_contextual(&self, block: &Block, now_secs: u64) -> Result<(), BlockError> {
        let parent = &block.header.prev_hash;
        let expected = self.next_bits(parent);
        if block.header.bits != expected {
            return Err(BlockError::BadBits { got: block.header.bits, expected });
        }
        let median = self.median_time_past(parent);
        if block.header.time_secs <= median {
            return Err(BlockError::TimeTooOld { time: block.header.time_secs, median });
        }
        let max = now_secs + self.params.max_future_secs;
        if block.header.time_secs as u64 > max {
            return Err(BlockError::TimeTooNew { time: block.header.time_secs, max });
        }
        let height = self.entries[parent].height + 1;
        match block.txs[0] {
            Tx::Coinbase { amount, height: h, .. }
                if amount == self.params.block_reward && h == height => {}
            _ => return Err(BlockError::BadCoinbase),
        }
        Ok(())
    }

    /// Validates and stores `block` at local time `now_secs`, switching to
    /// it if it makes the heaviest chain, then connects any orphans that
    /// were waiting for it.
    pub fn submit(&mut self, block: Block, now_secs: u64) -> Result<Accepted, BlockError> {
        let hash = block.hash();
        if self.knows(&hash) {
            return Err(BlockError::Known);
        }
        self.check_context_free(&block)?;
        let parent = block.header.prev_hash;
        let Some(parent_entry) = self.entries.get(&parent) else {
            self.add_orphan(hash, block, now_secs);
            return Ok(Accepted::Orphan { missing: parent });
        };
        if parent_entry.invalid {
            return Err(BlockError::InvalidParent);
        }
        self.check_contextual(&block, now_secs)?;
        let result = self.store(hash, block)?;
        self.connect_orphans(hash, now_secs);
        Ok(result)
    }

    fn store(&mut self, hash: Hash32, block: Block) -> Result<Accepted, BlockError> {
        let parent = &self.entries[&block.header.prev_hash];
        let target =
            target_from_compact(block.header.bits).map_err(|_| BlockError::BadProofOfWork)?;
        let chain_work = parent
            .chain_work
            .checked_add(&work_for_target(&target))
            .ok_or(BlockError::BadProofOfWork)?;
        let height = parent.height + 1;
        self.entries.insert(hash, BlockEntry { block, height, chain_work, invalid: false });
        if chain_work > self.tip_work() { self.activate(hash) } else { Ok(Accepted::SideChain) }
    }

    fn add_orphan(&mut self, hash: Hash32, block: Block, now_secs: u64) {
        while let Some(old) = self.orphan_order.front() {
            let expired =
                self.orphans.get(old).is_none_or(|(_, t)| *t + ORPHAN_EXPIRY_SECS < now_secs);
            if !expired && self.orphans.len() < self.params.max_orphans {
                break;
            }
            if let Some(old) = self.orphan_order.pop_front() {
                self.orphans.remove(&old);
            }
        }
        self.orphans.insert(hash, (block, now_secs));
        self.orphan_order.push_back(hash);
    }

    fn connect_orphans(&mut self, parent: Hash32, now_secs: u64) {
        let mut ready = vec![parent];
        let mut budget = self.params.max_orphans;
        while let Some(p) = ready.pop() {
            let children: Vec<Hash32> = self
                .orphans
                .iter()
                .filter(|(_, (b, _))| b.header.prev_hash == p)
                .map(|(h, _)| *h)
                .collect();
            for child in children {
                if budget == 0 {
                    return;
                }
                budget -= 1;
                let Some((block, _)) = self.orphans.remove(&child) else { continue };
                self.orphan_order.retain(|h| *h != child);
                let ok = self.check_contextual(&block, now_secs).is_ok()
                    && self.store(child, block).is_ok();
                if ok {
                    ready.push(child);
                }
            }
        }
    }

    /// Makes `new_tip` the active tip (it has more work than the current).
    fn activate(&mut self, new_tip: Hash32) -> Result<Accepted, BlockError> {
        let old_tip = self.tip();
        // The branch to connect, fork point exclusive.
        let mut branch = Vec::new();
        let mut cur = new_tip;
        while !self.is_active(&cur) {
            branch.push(cur);
            cur = self.entries[&cur].block.header.prev_hash;
        }
        branch.reverse();
        let fork_height = self.entries[&cur].height;
        let mut returned = Vec::new();
        let mut disconnected = Vec::new();
        while self.height() > fork_height {
            let h = self.disconnect_tip();
            disconnected.push(h);
            returned.extend(self.entries[&h].block.txs[1..].iter().cloned());
        }
        for (i, h) in branch.iter().enumerate() {
            if let Err(e) = self.connect(*h) {
                for bad in &branch[i..] {
                    if let Some(entry) = self.entries.get_mut(bad) {
                        entry.invalid = true;
                    }
                }
                while self.height() > fork_height {
                    self.disconnect_tip();
                }
                for h in disconnected.iter().rev() {
                    let r = self.connect(*h);
                    assert!(r.is_ok(), "reconnecting the old best chain failed: {r:?}");
                }
                assert_eq!(self.tip(), old_tip);
                return Err(e);
            }
        }
        for h in &branch {
            let txs = self.entries[h].block.txs.clone();
            for tx in txs[1..].iter() {
                self.pool.remove_spend(tx);
            }
        }
        let depth = disconnected.len() as u64;
        let mut back = 0;
        for tx in returned {
            if self.pool.add(tx, &self.ledger, &self.sigs).is_ok() {
                back += 1;
            }
        }
        self.pool.prune(&self.ledger);
        if depth > 0 && self.reorg_depths.len() < MAX_REORG_LOG {
            self.reorg_depths.push(depth);
        }
        Ok(Accepted::NewTip { reorg_depth: depth, returned_txs: back })
    }

    fn connect(&mut self, hash: Hash32) -> Result<(), BlockError> {
        let entry = &self.entries[&hash];
        assert_eq!(entry.block.header.prev_hash, self.tip(), "connect must extend the tip");
        let txs = entry.block.txs.clone();
        let mut undos = Vec::with_capacity(txs.len());
        for (index, tx) in txs.iter().enumerate() {
            match self.ledger.apply(tx, &tx.txid(), &self.sigs) {
                Ok(u) => undos.push(u),
                Err(error) => {
                    for u in undos.into_iter().rev() {
                        self.ledger.revert(u);
                    }
                    return Err(BlockError::BadTx { index, error });
                }
            }
        }
        self.active.push(hash);
        self.undo.push(undos);
        Ok(())
    }

    fn disconnect_tip(&mut self) -> Hash32 {
        assert!(self.active.len() > 1, "never disconnect genesis");
        let hash = self.active.pop().unwrap_or_default();
        for u in self.undo.pop().unwrap_or_default().into_iter().rev() {
            self.ledger.revert(u);
        }
        hash
    }

    /// A block locator: the tip, then ancestors at exponentially growing
    /// distances, ending at genesis.
    pub fn locator(&self) -> Vec<Hash32> {
        let mut out = Vec::new();
        let mut height = self.height() as i64;
        let mut step = 1;
        while height > 0 {
            out.push(self.active[height as usize]);
            if out.len() >= 10 {
                step *= 2;
            }
            height -= step;
        }
        out.push(self.active[0]);
        out
    }

    /// Up to `max` active blocks after the first `locator` hash that is on
    /// the active chain (what a peer sends to sync us).
    pub fn blocks_after(&self, locator: &[Hash32], max: usize) -> Vec<Block> {
        let start = locator
            .iter()
            .find(|h| self.is_active(h))
            .map_or(0, |h| self.entries[h].height as usize + 1);
        self.active[start.min(self.active.len())..]
            .iter()
            .take(max)
            .map(|h| self.entries[h].block.clone())
            .collect()
    }
}
