//! The proof-of-work simulation: N miners over [`ChainNet`], a transfer
//! workload, optional partition and crash, and the private-chain attack.
//!
//! **Mining model.** Real hashing at a realistic difficulty would make a
//! 1,000-block run take hours, so *when* a miner finds a block is drawn
//! from an exponential distribution with rate `hashrate / work(next
//! target)` (memoryless, so it is simply redrawn whenever the miner's tip
//! changes), and *then* the miner produces a real header by nonce search at
//! the chain's low simulation difficulty (about 16 hashes per block with
//! [`PowParams::sim`]). Every block is therefore fully valid — proof of
//! work included — and retargeting acts on the simulated rate exactly as on
//! a real one, since the rate depends on the target.
//!
//! **Gossip.** A node relays every block and transfer it accepts to all
//! peers. A block with an unknown parent is held as an orphan and the node
//! asks the sender for the blocks after its locator (one round trip syncs
//! any gap, including after a partition heals or a crash).

use super::events::EventQueue;
use super::net::ChainNet;
use crate::hash::Hash32;
use crate::ledger::SigCache;
use crate::pow::compact::{target_from_compact, work_for_target};
use crate::pow::{Accepted, Block, PowChain, PowParams, genesis_block, mine};
use crate::tx::{AccountId, Transfer, Tx, key_from_seed};
use ed25519_dalek::SigningKey;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Blocks a sync reply carries at most.
const MAX_SYNC_BLOCKS: usize = 500;

/// The private-chain (double-spend) attack.
#[derive(Clone, Debug)]
pub struct PrivateChainAttack {
    /// The attacker's share of all hash power.
    pub hashpower: f64,
    /// Confirmations the merchant waits for before delivering.
    pub confirmations: u64,
}

/// A PoW simulation's settings.
#[derive(Clone, Debug)]
pub struct PowSimConfig {
    /// Honest miners (equal hash power); the attacker, if any, is extra.
    pub nodes: usize,
    /// The seed everything derives from.
    pub seed: u64,
    /// Stop when honest node 0's best chain reaches this height...
    pub blocks: u64,
    /// ...or at this virtual time.
    pub max_time_ms: u64,
    /// One-way latency.
    pub latency_ms: u64,
    /// Latency jitter.
    pub jitter_ms: u64,
    /// Transfers submitted per second (to a random node).
    pub tx_per_sec: f64,
    /// Funded user accounts.
    pub accounts: usize,
    /// Depth at which a block counts as final.
    pub confirmations: u64,
    /// Consensus parameters.
    pub params: PowParams,
    /// Cut the first half of the honest nodes off during `[start, end)` ms.
    pub partition_ms: Option<(u64, u64)>,
    /// Crash honest node 0... `(node, start, end)` ms.
    pub crash_ms: Option<(usize, u64, u64)>,
    /// The attack, if any.
    pub attack: Option<PrivateChainAttack>,
}

impl Default for PowSimConfig {
    fn default() -> Self {
        PowSimConfig {
            nodes: 10,
            seed: 1,
            blocks: 200,
            max_time_ms: u64::MAX,
            latency_ms: 100,
            jitter_ms: 100,
            tx_per_sec: 1.0,
            accounts: 50,
            confirmations: 6,
            params: PowParams::sim(),
            partition_ms: None,
            crash_ms: None,
            attack: None,
        }
    }
}

/// What a PoW run measured and checked.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PowReport {
    /// Virtual time simulated.
    pub sim_time_ms: u64,
    /// Height of honest node 0's best chain.
    pub height: u64,
    /// Blocks mined in total (all branches).
    pub blocks_mined: u64,
    /// Best-chain blocks per simulated minute.
    pub blocks_per_min: f64,
    /// Mined blocks not on the final best chain, as a fraction.
    pub stale_rate: f64,
    /// Reorganisation depth → count, over all honest nodes.
    pub reorg_depths: BTreeMap<u64, u64>,
    /// Mean time from a transfer's submission to its block being
    /// `confirmations` deep.
    pub finality_ms_mean: f64,
    /// Transfers `confirmations` deep per simulated second.
    pub tx_per_sec: f64,
    /// Network messages sent.
    pub messages: u64,
    /// Network bytes sent.
    pub bytes: u64,
    /// Messages per best-chain block.
    pub messages_per_block: f64,
    /// Real hashes spent mining headers.
    pub hashes: u64,
    /// The attack: did the merchant's payment get reversed on honest node
    /// 0's chain, and how deep was the reorganisation.
    pub attack_succeeded: Option<bool>,
    /// Depth of the attack's reorganisation (0 when it failed).
    pub attack_reorg_depth: u64,
    /// Checker violations (empty: all checks passed).
    pub violations: Vec<String>,
}

enum Msg {
    Block(Block),
    Tx(Tx),
    GetBlocks(Vec<Hash32>),
    Blocks(Vec<Block>),
}

impl Msg {
    fn size_bytes(&self) -> usize {
        match self {
            Msg::Block(b) => b.size_bytes(),
            Msg::Tx(t) => t.size_bytes(),
            Msg::GetBlocks(l) => 32 * l.len(),
            Msg::Blocks(bs) => bs.iter().map(Block::size_bytes).sum(),
        }
    }
}

enum Event {
    Found { node: usize, token: u64 },
    Deliver { to: usize, from: usize, msg: Arc<Msg> },
    NewTx,
    PartitionStart,
    PartitionEnd,
    Crash(usize),
    Restart(usize),
}

struct Miner {
    chain: PowChain,
    account: AccountId,
    hashrate_per_ms: f64,
    token: u64,
}

struct Attacker {
    /// The attacker's private chain (fed only its own blocks).
    private: PowChain,
    payment: Tx,
    theft: Tx,
    published: bool,
}

/// Runs one PoW simulation.
pub fn run(cfg: &PowSimConfig) -> PowReport {
    Sim::new(cfg).run()
}

struct Sim<'a> {
    cfg: &'a PowSimConfig,
    rng: ChaCha8Rng,
    queue: EventQueue<Event>,
    net: ChainNet,
    miners: Vec<Miner>,
    users: Vec<SigningKey>,
    user_nonce: Vec<u64>,
    attacker: Option<Attacker>,
    now_ms: u64,
    mined_at: HashMap<Hash32, u64>,
    tx_submitted_at: HashMap<Hash32, u64>,
    hashes: u64,
}

impl<'a> Sim<'a> {
    fn new(cfg: &'a PowSimConfig) -> Sim<'a> {
        assert!(cfg.nodes >= 1, "at least one miner");
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let sigs = SigCache::default();
        let users: Vec<SigningKey> =
            (0..cfg.accounts).map(|i| key_from_seed(cfg.seed, i as u64)).collect();
        let attacker_key = key_from_seed(cfg.seed, 1 << 32);
        let mut balances: Vec<(AccountId, u64)> =
            users.iter().map(|k| (k.verifying_key().to_bytes(), 1_000_000)).collect();
        balances.push((attacker_key.verifying_key().to_bytes(), 1_000));
        let genesis = genesis_block(&cfg.params);
        let genesis_work = work_for_target(
            &target_from_compact(cfg.params.genesis_bits).unwrap_or(crate::u256::U256::MAX),
        )
        .to_f64();
        // Total hash rate such that blocks come at the target spacing.
        let total_per_ms = genesis_work / (cfg.params.target_spacing_secs as f64 * 1000.0);
        let q = cfg.attack.as_ref().map_or(0.0, |a| a.hashpower);
        assert!((0.0..1.0).contains(&q), "attacker hash power must be in [0, 1)");
        let n_total = cfg.nodes + cfg.attack.is_some() as usize;
        let miners = (0..n_total)
            .map(|i| {
                let share = if i < cfg.nodes { (1.0 - q) / cfg.nodes as f64 } else { q };
                Miner {
                    chain: PowChain::new(
                        cfg.params.clone(),
                        genesis.clone(),
                        &balances,
                        sigs.clone(),
                    ),
                    account: [i as u8 + 1; 32],
                    hashrate_per_ms: share * total_per_ms,
                    token: 0,
                }
            })
            .collect();
        let attacker = cfg.attack.as_ref().map(|_| {
            let payment = Tx::Transfer(Transfer::new(&attacker_key, [0xAA; 32], 900, 0));
            let theft = Tx::Transfer(Transfer::new(&attacker_key, [0xBB; 32], 900, 0));
            Attacker {
                private: PowChain::new(
                    cfg.params.clone(),
                    genesis.clone(),
                    &balances,
                    sigs.clone(),
                ),
                payment,
                theft,
                published: false,
            }
        });
        let _ = rng.random::<u64>();
        Sim {
            cfg,
            rng,
            queue: EventQueue::default(),
            net: ChainNet::new(n_total, cfg.latency_ms, cfg.jitter_ms),
            miners,
            user_nonce: vec![0; users.len()],
            users,
            attacker,
            now_ms: 0,
            mined_at: HashMap::new(),
            tx_submitted_at: HashMap::new(),
            hashes: 0,
        }
    }

    fn attacker_index(&self) -> Option<usize> {
        self.attacker.as_ref().map(|_| self.cfg.nodes)
    }

    fn exp_ms(&mut self, rate_per_ms: f64) -> u64 {
        let u: f64 = self.rng.random::<f64>();
        (-(1.0 - u).ln() / rate_per_ms).ceil() as u64
    }

    fn schedule_mining(&mut self, node: usize) {
        if self.net.down[node] {
            return;
        }
        let chain = match (&self.attacker, self.attacker_index()) {
            // Once published, the attack is over: the attacker stops.
            (Some(a), Some(ai)) if ai == node && a.published => return,
            (Some(a), Some(ai)) if ai == node => &a.private,
            _ => &self.miners[node].chain,
        };
        let bits = chain.next_bits(&chain.tip());
        let work = work_for_target(&target_from_compact(bits).unwrap_or(crate::u256::U256::MAX));
        let rate = self.miners[node].hashrate_per_ms / work.to_f64();
        if rate <= 0.0 {
            return;
        }
        self.miners[node].token += 1;
        let token = self.miners[node].token;
        let dt = self.exp_ms(rate).max(1);
        self.queue.push(self.now_ms + dt, Event::Found { node, token });
    }

    fn broadcast(&mut self, from: usize, msg: Msg, except: Option<usize>) {
        let msg = Arc::new(msg);
        let bytes = msg.size_bytes();
        for to in 0..self.miners.len() {
            if to == from || Some(to) == except {
                continue;
            }
            if let Some(d) = self.net.send(&mut self.rng, from, to, bytes) {
                self.queue.push(self.now_ms + d, Event::Deliver { to, from, msg: msg.clone() });
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        let bytes = msg.size_bytes();
        if let Some(d) = self.net.send(&mut self.rng, from, to, bytes) {
            self.queue.push(self.now_ms + d, Event::Deliver { to, from, msg: Arc::new(msg) });
        }
    }

    fn run(mut self) -> PowReport {
        for i in 0..self.miners.len() {
            self.schedule_mining(i);
        }
        if self.cfg.tx_per_sec > 0.0 {
            let dt = self.exp_ms(self.cfg.tx_per_sec / 1000.0);
            self.queue.push(dt, Event::NewTx);
        }
        if let Some((s, e)) = self.cfg.partition_ms {
            self.queue.push(s, Event::PartitionStart);
            self.queue.push(e, Event::PartitionEnd);
        }
        if let Some((n, s, e)) = self.cfg.crash_ms {
            self.queue.push(s, Event::Crash(n));
            self.queue.push(e, Event::Restart(n));
        }
        if let Some(a) = &self.attacker {
            // The merchant's payment goes public at once.
            let pay = a.payment.clone();
            self.tx_submitted_at.insert(pay.txid(), 0);
            for m in 0..self.cfg.nodes {
                let _ = self.miners[m].chain.submit_tx(pay.clone());
            }
            let ai = self.cfg.nodes;
            let _ = self.attacker.as_mut().map(|a| a.private.submit_tx(a.theft.clone()));
            let _ = ai;
        }
        while let Some((t, ev)) = self.queue.pop() {
            if t > self.cfg.max_time_ms {
                break;
            }
            self.now_ms = t;
            self.handle(ev);
            if self.miners[0].chain.height() >= self.cfg.blocks {
                break;
            }
        }
        self.report()
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Found { node, token } => {
                if token == self.miners[node].token && !self.net.down[node] {
                    self.found(node);
                }
            }
            Event::Deliver { to, from, msg } => {
                if !self.net.down[to] {
                    self.deliver(to, from, &msg);
                }
            }
            Event::NewTx => {
                self.new_tx();
                let dt = self.exp_ms(self.cfg.tx_per_sec / 1000.0);
                self.queue.push(self.now_ms + dt, Event::NewTx);
            }
            Event::PartitionStart => {
                let half: Vec<usize> = (0..self.cfg.nodes / 2).collect();
                self.net.partition(&half);
            }
            Event::PartitionEnd => {
                self.net.heal();
                // Reconnecting peers exchange locators.
                for i in 0..self.cfg.nodes {
                    let peer = (i + self.cfg.nodes / 2) % self.cfg.nodes;
                    let loc = self.miners[i].chain.locator();
                    self.send(i, peer, Msg::GetBlocks(loc));
                }
            }
            Event::Crash(n) => {
                self.net.down[n] = true;
                self.miners[n].token += 1;
            }
            Event::Restart(n) => {
                self.net.down[n] = false;
                let peer = (n + 1) % self.cfg.nodes;
                let loc = self.miners[n].chain.locator();
                self.send(n, peer, Msg::GetBlocks(loc));
                self.schedule_mining(n);
            }
        }
    }

    fn now_secs(&self) -> u64 {
        self.now_ms / 1000
    }

    fn found(&mut self, node: usize) {
        let now = self.now_secs();
        let account = self.miners[node].account;
        let is_attacker = self.attacker_index() == Some(node);
        let chain = match &mut self.attacker {
            Some(a) if is_attacker => &mut a.private,
            _ => &mut self.miners[node].chain,
        };
        let mut block = chain.template(account, now);
        let (header, tries) = loop {
            match mine(block.header, u32::MAX as u64) {
                (Some(h), t) => break (h, t),
                (None, _) => block.header.time_secs += 1,
            }
        };
        block.header = header;
        self.hashes += tries;
        let hash = block.hash();
        let r = chain.submit(block.clone(), now);
        assert!(
            matches!(r, Ok(Accepted::NewTip { .. })),
            "a miner's own block must extend its tip: {r:?}"
        );
        self.mined_at.insert(hash, self.now_ms);
        if is_attacker {
            self.maybe_publish();
        } else {
            self.broadcast(node, Msg::Block(block), None);
        }
        self.schedule_mining(node);
    }

    fn deliver(&mut self, to: usize, from: usize, msg: &Msg) {
        if self.attacker_index() == Some(to) {
            // The attacker watches the public chain through its miner
            // slot's chain; its private chain is separate.
            if let Msg::Block(b) = msg {
                let now = self.now_secs();
                let _ = self.miners[to].chain.submit(b.clone(), now);
                self.maybe_publish();
            }
            return;
        }
        match msg {
            Msg::Block(b) => self.on_block(to, from, b.clone()),
            Msg::Tx(tx) => {
                if self.miners[to].chain.submit_tx(tx.clone()).is_ok() {
                    self.broadcast(to, Msg::Tx(tx.clone()), Some(from));
                }
            }
            Msg::GetBlocks(loc) => {
                let blocks = self.miners[to].chain.blocks_after(loc, MAX_SYNC_BLOCKS);
                if !blocks.is_empty() {
                    self.send(to, from, Msg::Blocks(blocks));
                }
            }
            Msg::Blocks(bs) => {
                let before = self.miners[to].chain.tip();
                let mut orphan = false;
                let now = self.now_secs();
                for b in bs {
                    if let Ok(Accepted::Orphan { .. }) =
                        self.miners[to].chain.submit(b.clone(), now)
                    {
                        orphan = true;
                    }
                }
                if orphan {
                    let loc = self.miners[to].chain.locator();
                    self.send(to, from, Msg::GetBlocks(loc));
                }
                let tip = self.miners[to].chain.tip();
                if tip != before {
                    // Relay the new tip; peers sync the rest by locator.
                    if let Some(e) = self.miners[to].chain.entry(&tip) {
                        let blk = e.block.clone();
                        self.broadcast(to, Msg::Block(blk), Some(from));
                    }
                    self.schedule_mining(to);
                }
            }
        }
    }

    fn on_block(&mut self, to: usize, from: usize, b: Block) {
        let before = self.miners[to].chain.tip();
        let now = self.now_secs();
        match self.miners[to].chain.submit(b.clone(), now) {
            Ok(Accepted::Orphan { .. }) => {
                let loc = self.miners[to].chain.locator();
                self.send(to, from, Msg::GetBlocks(loc));
            }
            Ok(_) => self.broadcast(to, Msg::Block(b), Some(from)),
            Err(_) => {}
        }
        if self.miners[to].chain.tip() != before {
            self.schedule_mining(to);
        }
    }

    fn new_tx(&mut self) {
        let u = self.rng.random_range(0..self.users.len());
        let payee = self.rng.random_range(0..self.users.len());
        let to = self.users[payee].verifying_key().to_bytes();
        let tx = Tx::Transfer(Transfer::new(&self.users[u], to, 1, self.user_nonce[u]));
        self.user_nonce[u] += 1;
        self.tx_submitted_at.insert(tx.txid(), self.now_ms);
        let node = self.rng.random_range(0..self.cfg.nodes);
        if !self.net.down[node] && self.miners[node].chain.submit_tx(tx.clone()).is_ok() {
            self.broadcast(node, Msg::Tx(tx), None);
        }
    }

    /// Publishes the private chain once it has more work than the public
    /// chain the attacker sees and the merchant has delivered (the payment
    /// is `confirmations` deep publicly).
    fn maybe_publish(&mut self) {
        let Some(ai) = self.attacker_index() else { return };
        let Some(a) = self.attacker.as_ref() else { return };
        if a.published {
            return;
        }
        let public = &self.miners[ai].chain;
        let pay_id = a.payment.txid();
        let depth = public
            .best_chain()
            .iter()
            .position(|h| {
                public.entry(h).is_some_and(|e| e.block.txs.iter().any(|t| t.txid() == pay_id))
            })
            .map_or(0, |pos| public.height() + 1 - pos as u64);
        let z = self.cfg.attack.as_ref().map_or(0, |c| c.confirmations);
        if depth < z || a.private.tip_work() <= public.tip_work() {
            return;
        }
        let blocks: Vec<Block> = a.private.best_chain()[1..]
            .iter()
            .filter_map(|h| a.private.entry(h).map(|e| e.block.clone()))
            .collect();
        if let Some(a) = self.attacker.as_mut() {
            a.published = true;
        }
        self.broadcast(ai, Msg::Blocks(blocks), None);
    }

    fn report(self) -> PowReport {
        let c0 = &self.miners[0].chain;
        let k = self.cfg.confirmations;
        let height = c0.height();
        let best = c0.best_chain();
        let mut reorg_depths = BTreeMap::new();
        for m in &self.miners[..self.cfg.nodes] {
            for d in &m.chain.reorg_depths {
                *reorg_depths.entry(*d).or_insert(0) += 1;
            }
        }
        let on_best: HashSet<&Hash32> = best.iter().collect();
        let blocks_mined = self.mined_at.len() as u64;
        let stale = self.mined_at.keys().filter(|h| !on_best.contains(h)).count() as f64;
        let mut final_txs = 0u64;
        let mut finality_sum = 0.0;
        for (i, h) in best.iter().enumerate().skip(1) {
            let Some(deep) = best.get(i + k as usize) else { break };
            let deep_at = self.mined_at.get(deep).copied().unwrap_or(0);
            for tx in c0.entry(h).map(|e| e.block.txs.clone()).unwrap_or_default()[1..].iter() {
                if let Some(t0) = self.tx_submitted_at.get(&tx.txid()) {
                    final_txs += 1;
                    finality_sum += deep_at.saturating_sub(*t0) as f64;
                }
            }
        }
        let secs = self.now_ms.max(1) as f64 / 1000.0;
        let mut violations = Vec::new();
        for (i, m) in self.miners[..self.cfg.nodes].iter().enumerate() {
            if let Err(v) = check_chain(&m.chain, &self.cfg.params) {
                violations.push(format!("node {i}: {v}"));
            }
        }
        let (attack_succeeded, attack_reorg_depth) = match &self.attacker {
            None => (None, 0),
            Some(a) => {
                let theft = a.theft.txid();
                let ok = best.iter().any(|h| {
                    c0.entry(h).is_some_and(|e| e.block.txs.iter().any(|t| t.txid() == theft))
                });
                let depth = if ok { c0.reorg_depths.iter().copied().max().unwrap_or(0) } else { 0 };
                (Some(ok), depth)
            }
        };
        PowReport {
            sim_time_ms: self.now_ms,
            height,
            blocks_mined,
            blocks_per_min: height as f64 / (secs / 60.0),
            stale_rate: if blocks_mined == 0 { 0.0 } else { stale / blocks_mined as f64 },
            reorg_depths,
            finality_ms_mean: if final_txs == 0 { 0.0 } else { finality_sum / final_txs as f64 },
            tx_per_sec: final_txs as f64 / secs,
            messages: self.net.messages,
            bytes: self.net.bytes,
            messages_per_block: self.net.messages as f64 / height.max(1) as f64,
            hashes: self.hashes,
            attack_succeeded,
            attack_reorg_depth,
            violations,
        }
    }
}

/// The checker: replays `chain`'s best chain from genesis on a fresh node
/// (every rule re-checked: links, proof of work, bits, Merkle roots,
/// timestamps, coinbases, every transfer on the ledger) and independently
/// checks that no spend (payer, nonce) and no txid appears twice.
pub fn check_chain(chain: &PowChain, params: &PowParams) -> Result<(), String> {
    let best = chain.best_chain();
    let genesis = chain.entry(&best[0]).ok_or("no genesis")?.block.clone();
    let balances = chain.genesis_balances().to_vec();
    // The node's signature cache: each signature was verified once already.
    let mut fresh = PowChain::new(params.clone(), genesis, &balances, chain.sigs().clone());
    let mut spends = HashSet::new();
    let mut txids = HashSet::new();
    for (height, h) in best.iter().enumerate().skip(1) {
        let block = chain.entry(h).ok_or("missing block")?.block.clone();
        for tx in block.txs.iter() {
            if !txids.insert(tx.txid()) {
                return Err(format!("height {height}: transaction {:?} twice", tx.txid()));
            }
            if let Some(s) = tx.spend()
                && !spends.insert(s)
            {
                return Err(format!("height {height}: double spend of nonce {}", s.1));
            }
        }
        match fresh.submit(block, u64::MAX / 2) {
            Ok(Accepted::NewTip { .. }) => {}
            other => return Err(format!("height {height}: block {h:?} rejected: {other:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(seed: u64, blocks: u64) -> PowSimConfig {
        PowSimConfig { seed, blocks, nodes: 8, ..PowSimConfig::default() }
    }

    #[test]
    fn a_healthy_network_mines_at_the_target_rate_and_passes_the_checkers() {
        let r = run(&cfg(1, 300));
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.height, 300);
        // 10-second target spacing: about 6 blocks a minute.
        assert!((4.5..7.5).contains(&r.blocks_per_min), "{}", r.blocks_per_min);
        assert!(r.stale_rate < 0.1, "stale {}", r.stale_rate);
        assert!(r.tx_per_sec > 0.5, "tx/s {}", r.tx_per_sec);
        // Six blocks of 10 s plus the wait for the first: about a minute.
        assert!((40_000.0..120_000.0).contains(&r.finality_ms_mean), "{}", r.finality_ms_mean);
        assert!(r.hashes > 0);
        let again = run(&cfg(1, 300));
        assert_eq!(
            (again.sim_time_ms, again.messages, again.blocks_mined),
            (r.sim_time_ms, r.messages, r.blocks_mined)
        );
    }

    #[test]
    fn a_partition_forks_the_chain_and_the_heal_reorganises_one_side() {
        let c = PowSimConfig { partition_ms: Some((200_000, 800_000)), ..cfg(2, 200) };
        let r = run(&c);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        let deepest = r.reorg_depths.keys().max().copied().unwrap_or(0);
        assert!(deepest >= 5, "one side's minute-long branch was abandoned: {:?}", r.reorg_depths);
        assert!(r.stale_rate > 0.05, "the losing side's blocks are stale: {}", r.stale_rate);
    }

    #[test]
    fn a_crashed_miner_catches_up_after_restart() {
        let c = PowSimConfig { crash_ms: Some((3, 100_000, 900_000)), ..cfg(3, 150) };
        let r = run(&c);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
    }

    #[test]
    fn a_majority_attacker_reorganises_the_honest_chain() {
        for seed in 1..=3 {
            let c = PowSimConfig {
                attack: Some(PrivateChainAttack { hashpower: 0.51, confirmations: 2 }),
                tx_per_sec: 0.2,
                ..cfg(seed, 1500)
            };
            let r = run(&c);
            assert!(r.violations.is_empty(), "{:?}", r.violations);
            assert_eq!(r.attack_succeeded, Some(true), "seed {seed}");
            assert!(r.attack_reorg_depth >= 2, "seed {seed}: depth {}", r.attack_reorg_depth);
        }
    }
}
