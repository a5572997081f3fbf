//! One node's proof-of-stake view (a fork-choice store): the block tree,
//! each validator's latest message (LMD), Casper FFG links, justified and
//! finalized checkpoints, and slashing detection.
//!
//! - **Blocks** are accepted when signed by the proposer the RANDAO seed of
//!   their own chain selects, with a valid reveal, a slot after their
//!   parent's, the finalized checkpoint among their ancestors (finalized
//!   blocks never revert), and transfers that all apply, in order, on the
//!   parent's ledger (signature, next nonce, balance: a double spend or a
//!   forged transfer makes the whole block invalid). Each stored block keeps
//!   the ledger after it; ledgers of blocks below the finalized checkpoint
//!   are dropped (no valid block can build on them).
//! - **Attestations** count once per validator and target epoch. A link
//!   `source → target` (source an ancestor of target) with at least 2/3 of
//!   the total stake from a justified source justifies the target; when the
//!   target is the very next epoch, the source is finalized (Casper FFG,
//!   k = 1).
//! - **Fork choice** is LMD-GHOST from the highest justified checkpoint:
//!   descend to the child whose subtree carries the most stake of latest
//!   votes (ties: the higher hash).
//! - **Slashing**: conflicting votes (double or surround) and double
//!   proposals produce [`Evidence`], verified like anyone else's; a slashed
//!   validator loses its fork-choice weight and its later votes are ignored.
//!
//! Simplifications (documented in the crate README section): FFG is computed
//! over the votes the node has seen (gossip or included in blocks) rather
//! than by a per-block state transition; the denominator is the total
//! registered stake; no inactivity leak, deposits, withdrawals or proposer
//! boost; surround detection looks back [`PosParams::max_vote_history`]
//! votes per validator.

use super::slashing::{Evidence, MIN_SLASHING_PENALTY_QUOTIENT, is_slashable};
use super::types::{
    Aggregate, Checkpoint, PosBlock, SignedAttestation, SignedHeader, ValidatorIndex,
    randao_message,
};
use super::validators::{Registry, epoch_seed, mix_in};
use crate::hash::Hash32;
use crate::ledger::{Ledger, SigCache, TxError};
use crate::tx::Tx;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Protocol constants of the PoS chain.
#[derive(Clone, Debug)]
pub struct PosParams {
    /// Slots per epoch (Ethereum: 32).
    pub slots_per_epoch: u64,
    /// Blocks waiting for their parent, at most.
    pub max_pending_blocks: usize,
    /// Aggregates waiting for their blocks, at most.
    pub max_pending_aggregates: usize,
    /// Votes remembered per validator for surround detection.
    pub max_vote_history: usize,
    /// Transfers a block may carry at most.
    pub max_block_txs: usize,
}

impl Default for PosParams {
    fn default() -> Self {
        PosParams {
            slots_per_epoch: 32,
            max_pending_blocks: 512,
            max_pending_aggregates: 4096,
            max_vote_history: 32,
            max_block_txs: 1024,
        }
    }
}

/// Why a block was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PosError {
    /// Already stored.
    #[error("known block")]
    Known,
    /// The header signature, body root or RANDAO reveal does not verify.
    #[error("bad signature or body")]
    BadSignature,
    /// Not the proposer the seed selects for the slot.
    #[error("wrong proposer {got}, expected {expected}")]
    WrongProposer {
        /// The header's proposer.
        got: ValidatorIndex,
        /// The selected proposer.
        expected: ValidatorIndex,
    },
    /// The slot does not follow the parent's.
    #[error("slot not after parent")]
    BadSlot,
    /// The block does not descend from the finalized checkpoint.
    #[error("conflicts with the finalized checkpoint")]
    ConflictsWithFinalized,
    /// More transfers than [`PosParams::max_block_txs`].
    #[error("{count} transfers, at most {max}")]
    TooManyTxs {
        /// Transfers in the block.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A transaction does not apply on the parent's ledger after the ones
    /// before it (bad signature, reused nonce = double spend, overdraft; or
    /// a coinbase, which this chain does not have).
    #[error("transaction {index}: {error}")]
    BadTx {
        /// Position in the block.
        index: usize,
        /// Why it does not apply.
        error: TxError,
    },
}

/// What happened to a submitted block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockStatus {
    /// Stored (with any pending descendants).
    Stored,
    /// Parent unknown; held.
    MissingParent(Hash32),
}

#[derive(Clone, Debug)]
struct Node {
    block: Arc<PosBlock>,
    slot: u64,
    parent: Hash32,
    mix: Hash32,
    /// The ledger after this block (`None` once below finality).
    ledger: Option<Arc<Ledger>>,
}

/// A node's PoS store.
#[derive(Debug)]
pub struct Store {
    params: PosParams,
    registry: Arc<Registry>,
    sigs: SigCache,
    genesis: Hash32,
    blocks: HashMap<Hash32, Node>,
    children: HashMap<Hash32, Vec<Hash32>>,
    pending_blocks: HashMap<Hash32, Vec<Arc<PosBlock>>>,
    pending_block_count: usize,
    pending_ids: HashSet<Hash32>,
    pending_aggs: HashMap<Hash32, Vec<Arc<Aggregate>>>,
    pending_agg_count: usize,
    latest: Vec<Option<(u64, Hash32)>>,
    weight: HashMap<Hash32, u64>,
    history: Vec<VecDeque<SignedAttestation>>,
    links: HashMap<Checkpoint, HashMap<Checkpoint, u64>>,
    justified: HashSet<Checkpoint>,
    best_justified: Checkpoint,
    finalized: Checkpoint,
    proposals: HashMap<(ValidatorIndex, u64), SignedHeader>,
    slashed: HashMap<ValidatorIndex, u64>,
    /// Evidence this node found (for the host to gossip); drained by
    /// [`Store::take_evidence`].
    new_evidence: Vec<Evidence>,
    /// Finalized checkpoints that did not descend from the previous one
    /// (a safety violation: must stay empty with < 1/3 slashable stake).
    pub finality_reversions: Vec<(Checkpoint, Checkpoint)>,
}

impl Store {
    /// A store at genesis `genesis` (slot 0; justified and finalized) over
    /// the genesis `ledger`; `sigs` caches verified transfer signatures
    /// (shareable between nodes).
    ///
    /// # Panics
    /// If the genesis block carries transactions.
    pub fn new(
        params: PosParams,
        registry: Arc<Registry>,
        genesis: Arc<PosBlock>,
        ledger: Ledger,
        sigs: SigCache,
    ) -> Store {
        assert!(genesis.txs.is_empty(), "the genesis allocation is the ledger, not transfers");
        let g = genesis.hash();
        let cp = Checkpoint { epoch: 0, root: g };
        let n = registry.len();
        Store {
            params,
            registry,
            sigs,
            genesis: g,
            blocks: HashMap::from([(
                g,
                Node {
                    block: genesis,
                    slot: 0,
                    parent: Hash32::ZERO,
                    mix: Hash32::ZERO,
                    ledger: Some(Arc::new(ledger)),
                },
            )]),
            children: HashMap::new(),
            pending_blocks: HashMap::new(),
            pending_block_count: 0,
            pending_ids: HashSet::new(),
            pending_aggs: HashMap::new(),
            pending_agg_count: 0,
            latest: vec![None; n],
            weight: HashMap::new(),
            history: vec![VecDeque::new(); n],
            links: HashMap::new(),
            justified: HashSet::from([cp]),
            best_justified: cp,
            finalized: cp,
            proposals: HashMap::new(),
            slashed: HashMap::new(),
            new_evidence: Vec::new(),
            finality_reversions: Vec::new(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &PosParams {
        &self.params
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The genesis block id.
    pub fn genesis(&self) -> Hash32 {
        self.genesis
    }

    /// The highest justified checkpoint (the fork-choice root).
    pub fn justified(&self) -> Checkpoint {
        self.best_justified
    }

    /// The latest finalized checkpoint.
    pub fn finalized(&self) -> Checkpoint {
        self.finalized
    }

    /// Validators this node has verified evidence against, with penalties.
    pub fn slashed(&self) -> &HashMap<ValidatorIndex, u64> {
        &self.slashed
    }

    /// Evidence found since the last call.
    pub fn take_evidence(&mut self) -> Vec<Evidence> {
        std::mem::take(&mut self.new_evidence)
    }

    /// A stored block.
    pub fn block(&self, hash: &Hash32) -> Option<&Arc<PosBlock>> {
        self.blocks.get(hash).map(|n| &n.block)
    }

    /// Slot of a stored block.
    pub fn slot_of(&self, hash: &Hash32) -> Option<u64> {
        self.blocks.get(hash).map(|n| n.slot)
    }

    /// The ledger after a stored block (`None` when unknown, or dropped
    /// because the block is below the finalized checkpoint).
    pub fn ledger(&self, hash: &Hash32) -> Option<&Ledger> {
        self.blocks.get(hash).and_then(|n| n.ledger.as_deref())
    }

    /// The shared signature cache.
    pub fn sigs(&self) -> &SigCache {
        &self.sigs
    }

    /// Parent of a stored block.
    pub fn parent_of(&self, hash: &Hash32) -> Option<Hash32> {
        self.blocks.get(hash).map(|n| n.parent)
    }

    /// True when `hash` waits in the pending pool (its parent is missing).
    pub fn is_pending(&self, hash: &Hash32) -> bool {
        self.pending_ids.contains(hash)
    }

    /// True when `hash` is stored.
    pub fn contains(&self, hash: &Hash32) -> bool {
        self.blocks.contains_key(hash)
    }

    /// Blocks stored.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// The ancestor of `hash` (inclusive) at the latest slot `<= slot`.
    pub fn ancestor_at_slot(&self, hash: &Hash32, slot: u64) -> Hash32 {
        let mut cur = *hash;
        while let Some(n) = self.blocks.get(&cur) {
            if n.slot <= slot || cur == self.genesis {
                return cur;
            }
            cur = n.parent;
        }
        cur
    }

    /// True when `a` is `b` or an ancestor of `b`.
    pub fn is_ancestor(&self, a: &Hash32, b: &Hash32) -> bool {
        match self.blocks.get(a) {
            Some(n) => self.ancestor_at_slot(b, n.slot) == *a,
            None => false,
        }
    }

    /// The checkpoint of `epoch` on `head`'s chain.
    pub fn checkpoint(&self, head: &Hash32, epoch: u64) -> Checkpoint {
        Checkpoint { epoch, root: self.ancestor_at_slot(head, epoch * self.params.slots_per_epoch) }
    }

    /// The seed of `epoch` on the chain ending at `head`: the RANDAO mix
    /// as of the end of epoch `epoch − 2`.
    pub fn seed(&self, head: &Hash32, epoch: u64) -> Hash32 {
        if epoch < 2 {
            return epoch_seed(&Hash32::ZERO, epoch);
        }
        let boundary = (epoch - 1) * self.params.slots_per_epoch;
        let b = self.ancestor_at_slot(head, boundary.saturating_sub(1));
        epoch_seed(&self.blocks.get(&b).map_or(Hash32::ZERO, |n| n.mix), epoch)
    }

    /// The proposer of `slot` for a block on `parent`.
    pub fn proposer(&self, parent: &Hash32, slot: u64) -> ValidatorIndex {
        self.registry.proposer(&self.seed(parent, slot / self.params.slots_per_epoch), slot)
    }

    /// The committee attesting in `slot` on `head`'s chain.
    pub fn committee(&self, head: &Hash32, slot: u64) -> Vec<ValidatorIndex> {
        let s = self.params.slots_per_epoch;
        let mut all = self.registry.committees(&self.seed(head, slot / s), s);
        std::mem::take(&mut all[(slot % s) as usize])
    }

    /// Validates and stores `block`, then any pending descendants and
    /// waiting aggregates.
    pub fn on_block(&mut self, block: Arc<PosBlock>) -> Result<BlockStatus, PosError> {
        let hash = block.hash();
        if self.blocks.contains_key(&hash) {
            return Err(PosError::Known);
        }
        let h = block.signed.header;
        if block.body_root() != h.body_root
            || !self.registry.verify(h.proposer, &hash.0, &block.signed.signature)
        {
            return Err(PosError::BadSignature);
        }
        if block.txs.len() > self.params.max_block_txs {
            return Err(PosError::TooManyTxs {
                count: block.txs.len(),
                max: self.params.max_block_txs,
            });
        }
        self.check_double_proposal(&block.signed);
        let Some(parent) = self.blocks.get(&h.parent) else {
            if self.pending_block_count < self.params.max_pending_blocks
                && self.pending_ids.insert(hash)
            {
                self.pending_blocks.entry(h.parent).or_default().push(block);
                self.pending_block_count += 1;
            }
            return Ok(BlockStatus::MissingParent(h.parent));
        };
        if h.slot <= parent.slot {
            return Err(PosError::BadSlot);
        }
        let expected = self.proposer(&h.parent, h.slot);
        if expected != h.proposer {
            return Err(PosError::WrongProposer { got: h.proposer, expected });
        }
        let epoch = h.slot / self.params.slots_per_epoch;
        if !self.registry.verify(h.proposer, &randao_message(epoch), &block.randao_reveal) {
            return Err(PosError::BadSignature);
        }
        if self.ancestor_at_slot(&h.parent, self.blocks[&self.finalized.root].slot)
            != self.finalized.root
        {
            return Err(PosError::ConflictsWithFinalized);
        }
        let parent = &self.blocks[&h.parent];
        let Some(parent_ledger) = parent.ledger.as_deref() else {
            return Err(PosError::ConflictsWithFinalized);
        };
        let ledger = Arc::new(apply_txs(parent_ledger, &block.txs, &self.sigs)?);
        let mix = mix_in(&parent.mix, &block.randao_reveal);
        self.blocks.insert(
            hash,
            Node {
                block: block.clone(),
                slot: h.slot,
                parent: h.parent,
                mix,
                ledger: Some(ledger),
            },
        );
        self.children.entry(h.parent).or_default().push(hash);
        for agg in &block.attestations {
            self.on_aggregate(agg.clone());
        }
        if let Some(waiting) = self.pending_aggs.remove(&hash) {
            self.pending_agg_count -= waiting.len();
            for agg in waiting {
                self.on_aggregate(agg);
            }
        }
        if let Some(kids) = self.pending_blocks.remove(&hash) {
            self.pending_block_count -= kids.len();
            for k in kids {
                self.pending_ids.remove(&k.hash());
                let _ = self.on_block(k);
            }
        }
        Ok(BlockStatus::Stored)
    }

    fn check_double_proposal(&mut self, signed: &SignedHeader) {
        let key = (signed.header.proposer, signed.header.slot);
        match self.proposals.get(&key) {
            None => {
                self.proposals.insert(key, *signed);
            }
            Some(first) if first.header != signed.header => {
                let ev = Evidence::DoubleProposal(*first, *signed);
                self.on_evidence(ev.clone());
                if self.slashed.contains_key(&signed.header.proposer) {
                    self.new_evidence.push(ev);
                }
            }
            Some(_) => {}
        }
    }

    /// Processes every attestation of an aggregate (from gossip or a
    /// block). Aggregates for unknown blocks wait (bounded).
    pub fn on_aggregate(&mut self, agg: Arc<Aggregate>) {
        let d = agg.data;
        for root in [d.head, d.target.root, d.source.root] {
            if !self.blocks.contains_key(&root) {
                if self.pending_agg_count < self.params.max_pending_aggregates {
                    self.pending_aggs.entry(root).or_default().push(agg);
                    self.pending_agg_count += 1;
                }
                return;
            }
        }
        let s = self.params.slots_per_epoch;
        let well_formed = d.source.epoch < d.target.epoch
            && d.target.epoch == d.slot / s
            && self.is_ancestor(&d.source.root, &d.target.root)
            && self.is_ancestor(&d.target.root, &d.head)
            && self.checkpoint(&d.head, d.target.epoch).root == d.target.root;
        if !well_formed || agg.validators.len() != agg.signatures.len() {
            return;
        }
        for i in 0..agg.validators.len() {
            self.on_attestation(agg.get(i));
        }
    }

    fn on_attestation(&mut self, att: SignedAttestation) {
        let v = att.validator as usize;
        if v >= self.history.len() || self.slashed.contains_key(&att.validator) {
            return;
        }
        if self.history[v].iter().any(|p| p.data == att.data) {
            return; // seen
        }
        if !self.registry.verify(att.validator, &att.data.signing_root().0, &att.signature) {
            return;
        }
        if let Some(prev) = self.history[v].iter().find(|p| is_slashable(&p.data, &att.data)) {
            let ev = Evidence::Attester(*prev, att);
            self.on_evidence(ev.clone());
            self.new_evidence.push(ev);
            return;
        }
        if self.history[v].len() >= self.params.max_vote_history {
            self.history[v].pop_front();
        }
        self.history[v].push_back(att);
        let stake = self.registry.stake(att.validator);
        let d = att.data;
        // LMD: the latest vote by target epoch replaces the previous one.
        if self.latest[v].is_none_or(|(e, _)| d.target.epoch > e) {
            if let Some((_, old)) = self.latest[v]
                && let Some(w) = self.weight.get_mut(&old)
            {
                *w -= stake;
            }
            *self.weight.entry(d.head).or_insert(0) += stake;
            self.latest[v] = Some((d.target.epoch, d.head));
        }
        // FFG.
        *self.links.entry(d.source).or_default().entry(d.target).or_insert(0) += stake;
        if self.justified.contains(&d.source) {
            self.try_justify(d.source, d.target);
        }
    }

    fn try_justify(&mut self, source: Checkpoint, target: Checkpoint) {
        let finalized_before = self.finalized;
        let mut work = vec![(source, target)];
        while let Some((s, t)) = work.pop() {
            let stake = self.links.get(&s).and_then(|m| m.get(&t)).copied().unwrap_or(0);
            if self.justified.contains(&t) || stake * 3 < self.registry.total_stake * 2 {
                continue;
            }
            self.justified.insert(t);
            if t.epoch > self.best_justified.epoch
                && self.is_ancestor(&self.finalized.root, &t.root)
            {
                self.best_justified = t;
            }
            if t.epoch == s.epoch + 1 && s.epoch > self.finalized.epoch {
                if !self.is_ancestor(&self.finalized.root, &s.root) {
                    self.finality_reversions.push((self.finalized, s));
                }
                self.finalized = s;
            }
            if let Some(next) = self.links.get(&t) {
                work.extend(next.keys().map(|t2| (t, *t2)));
            }
        }
        if self.finalized != finalized_before {
            self.drop_ledgers_below_finality();
        }
    }

    /// Drops the ledgers of blocks below the finalized slot: no valid block
    /// can have such a parent.
    fn drop_ledgers_below_finality(&mut self) {
        let fin_slot = self.blocks.get(&self.finalized.root).map_or(0, |n| n.slot);
        for n in self.blocks.values_mut() {
            if n.slot < fin_slot {
                n.ledger = None;
            }
        }
    }

    /// Verifies evidence and slashes the offender; returns it when new.
    pub fn on_evidence(&mut self, ev: Evidence) -> Option<ValidatorIndex> {
        let v = ev.verify(&self.registry)?;
        if self.slashed.contains_key(&v) {
            return None;
        }
        self.slashed.insert(v, self.registry.stake(v) / MIN_SLASHING_PENALTY_QUOTIENT);
        if let Some((_, head)) = self.latest[v as usize].take()
            && let Some(w) = self.weight.get_mut(&head)
        {
            *w -= self.registry.stake(v);
        }
        Some(v)
    }

    /// LMD-GHOST from the highest justified checkpoint.
    pub fn head(&self) -> Hash32 {
        let root = self.best_justified.root;
        let mut order = vec![root];
        let mut i = 0;
        while i < order.len() {
            if let Some(kids) = self.children.get(&order[i]) {
                order.extend(kids.iter().copied());
            }
            i += 1;
        }
        let mut subtree: HashMap<Hash32, u64> = HashMap::with_capacity(order.len());
        for h in order.iter().rev() {
            let own = self.weight.get(h).copied().unwrap_or(0);
            let kids: u64 = self
                .children
                .get(h)
                .map_or(0, |k| k.iter().map(|c| subtree.get(c).copied().unwrap_or(0)).sum());
            subtree.insert(*h, own + kids);
        }
        let mut cur = root;
        while let Some(kids) = self.children.get(&cur) {
            let Some(best) =
                kids.iter().max_by_key(|c| (subtree.get(c).copied().unwrap_or(0), **c))
            else {
                break;
            };
            cur = *best;
        }
        assert!(
            self.is_ancestor(&self.finalized.root, &cur),
            "the head must descend from finality"
        );
        cur
    }
}

/// The ledger after `txs` applied in order on `parent`: every one a signed
/// transfer that applies (a coinbase, a bad signature, a reused nonce or an
/// overdraft is an error naming the transaction's position).
pub fn apply_txs(parent: &Ledger, txs: &[Tx], sigs: &SigCache) -> Result<Ledger, PosError> {
    let mut ledger = parent.clone();
    for (index, tx) in txs.iter().enumerate() {
        if !matches!(tx, Tx::Transfer(_)) {
            return Err(PosError::BadTx { index, error: TxError::BadCoinbase });
        }
        ledger.apply(tx, &tx.txid(), sigs).map_err(|error| PosError::BadTx { index, error })?;
    }
    Ok(ledger)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pos::types::{BlockHeader, SignedHeader};
    use crate::tx::{Transfer, key_from_seed};
    use ed25519_dalek::SigningKey;

    struct Setup {
        keys: Vec<SigningKey>,
        store: Store,
        alice: SigningKey,
        bob: [u8; 32],
    }

    fn setup() -> Setup {
        let keys: Vec<SigningKey> = (0..4).map(|i| key_from_seed(21, i)).collect();
        let registry = Arc::new(Registry::new(&keys, &[10, 10, 10, 10]));
        let genesis = Arc::new(PosBlock {
            signed: SignedHeader {
                header: BlockHeader {
                    slot: 0,
                    proposer: 0,
                    parent: Hash32::ZERO,
                    body_root: Hash32::ZERO,
                },
                signature: [0; 64],
            },
            randao_reveal: [0; 64],
            attestations: Vec::new(),
            txs: Vec::new(),
        });
        let alice = key_from_seed(22, 0);
        let ledger = Ledger::with_balances(&[(alice.verifying_key().to_bytes(), 100)]);
        let store = Store::new(
            PosParams { slots_per_epoch: 8, ..PosParams::default() },
            registry,
            genesis,
            ledger,
            SigCache::default(),
        );
        Setup { keys, store, alice, bob: key_from_seed(22, 1).verifying_key().to_bytes() }
    }

    /// A correctly signed block by the slot's proposer carrying `txs`.
    fn block(s: &Setup, parent: Hash32, slot: u64, txs: Vec<Tx>) -> Arc<PosBlock> {
        let p = s.store.proposer(&parent, slot);
        let epoch = slot / s.store.params().slots_per_epoch;
        Arc::new(PosBlock::propose(&s.keys[p as usize], p, slot, epoch, parent, Vec::new(), txs))
    }

    fn pay(s: &Setup, amount: u64, nonce: u64) -> Tx {
        Tx::Transfer(Transfer::new(&s.alice, s.bob, amount, nonce))
    }

    #[test]
    fn valid_transfers_are_applied_on_import() {
        let mut s = setup();
        let g = s.store.genesis();
        let b1 = block(&s, g, 1, vec![pay(&s, 30, 0), pay(&s, 20, 1)]);
        assert_eq!(s.store.on_block(b1.clone()), Ok(BlockStatus::Stored));
        let l = s.store.ledger(&b1.hash()).expect("stored");
        assert_eq!(l.account(&s.bob).balance, 50);
        assert_eq!(l.account(&s.alice.verifying_key().to_bytes()).nonce, 2);
        // The parent's state is untouched: each block has its own ledger.
        assert_eq!(s.store.ledger(&g).map(|l| l.account(&s.bob).balance), Some(0));
        // A block on b1 continues from b1's ledger (next nonce 2).
        let b2 = block(&s, b1.hash(), 2, vec![pay(&s, 50, 2)]);
        assert_eq!(s.store.on_block(b2.clone()), Ok(BlockStatus::Stored));
        assert_eq!(s.store.ledger(&b2.hash()).map(|l| l.account(&s.bob).balance), Some(100));
    }

    #[test]
    fn a_double_spend_or_a_forged_transfer_makes_the_block_invalid() {
        let mut s = setup();
        let g = s.store.genesis();
        // Two transfers of nonce 0 in one block: the second is a double spend.
        let double = pay(&s, 10, 0);
        let mut other = Transfer::new(&s.alice, [9; 32], 10, 0);
        let b = block(&s, g, 1, vec![double.clone(), Tx::Transfer(other.clone())]);
        assert_eq!(
            s.store.on_block(b.clone()),
            Err(PosError::BadTx { index: 1, error: TxError::BadNonce { got: 0, expected: 1 } })
        );
        assert!(!s.store.contains(&b.hash()));
        // A transfer whose amount was changed after signing.
        other.amount = 11;
        let b = block(&s, g, 1, vec![Tx::Transfer(other)]);
        assert_eq!(
            s.store.on_block(b),
            Err(PosError::BadTx { index: 0, error: TxError::BadSignature })
        );
        // An overdraft and a coinbase (this chain mints nothing).
        let b = block(&s, g, 1, vec![pay(&s, 101, 0)]);
        assert!(matches!(
            s.store.on_block(b),
            Err(PosError::BadTx { index: 0, error: TxError::InsufficientFunds { .. } })
        ));
        let mint = Tx::Coinbase { to: s.bob, amount: 5, height: 1 };
        let b = block(&s, g, 1, vec![mint]);
        assert_eq!(
            s.store.on_block(b),
            Err(PosError::BadTx { index: 0, error: TxError::BadCoinbase })
        );
        // A spend already made by an ancestor: a double spend across blocks.
        let b1 = block(&s, g, 1, vec![double.clone()]);
        assert_eq!(s.store.on_block(b1.clone()), Ok(BlockStatus::Stored));
        let b2 = block(&s, b1.hash(), 2, vec![double.clone()]);
        assert!(matches!(s.store.on_block(b2), Err(PosError::BadTx { index: 0, .. })));
        // On a competing branch from genesis the same spend is fine.
        let fork = block(&s, g, 2, vec![double]);
        assert_eq!(s.store.on_block(fork), Ok(BlockStatus::Stored));
        // Swapping the transfers of a signed block breaks its body root.
        let mut tampered = (*block(&s, g, 3, vec![pay(&s, 1, 0)])).clone();
        tampered.txs = vec![pay(&s, 2, 0)];
        assert_eq!(s.store.on_block(Arc::new(tampered)), Err(PosError::BadSignature));
    }

    #[test]
    fn a_block_with_too_many_transfers_is_refused() {
        let mut s = setup();
        s.store.params.max_block_txs = 1;
        let g = s.store.genesis();
        let b = block(&s, g, 1, vec![pay(&s, 1, 0), pay(&s, 1, 1)]);
        assert_eq!(s.store.on_block(b), Err(PosError::TooManyTxs { count: 2, max: 1 }));
    }
}
