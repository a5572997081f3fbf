//! PBFT-agreed blocks: n = 3f+1 [`PbftNode`] replicas over [`ChainNet`]
//! order a transfer workload, and each replica cuts blocks out of what
//! PBFT executed. Finality is immediate and deterministic: a block exists
//! only once its batch is committed, so it can never be reverted.
//!
//! **Block rule.** One block per executed PBFT sequence number whose batch
//! carries at least one transfer that is valid on the ledger at that point
//! (a PRE-PREPARE batch is the unit PBFT agrees on, so a block is exactly
//! one agreed batch; null requests from view changes make no block).
//! Transfers are taken in batch order; one that fails the ledger (a double
//! spend: a second transfer with a nonce already used; or insufficient
//! funds) is dropped by every replica alike, so every correct replica
//! builds the same block from the same batch. The header holds the height,
//! the previous block's hash, the Merkle root of the txids and the PBFT
//! sequence number; its hash is [`sha256d`] of the encoding.
//!
//! **Clients.** A transfer is a PBFT request (`op` = [`Tx::encode`]) sent
//! by its client to every replica (PBFT's client routing), from outside any
//! partition. Each user keeps at most one transfer in flight; a tenth of
//! the transfers is followed by a conflicting double spend (same payer and
//! nonce, another payee) from a second client, which the block rule must
//! drop. Finality time is the commit latency: submission until `f + 1`
//! replicas appended the transfer (what a PBFT client waits for).
//!
//! **Checkers.** Every time a replica appends a block it is compared with
//! the block every other replica appended at that height (prefix
//! consistency at all times, hence no finalized block ever reverts); at the
//! end every replica's chain is replayed from genesis (links, heights,
//! Merkle roots, every transfer valid, no spend and no txid twice).

use super::events::EventQueue;
use super::net::ChainNet;
use crate::hash::{Hash32, merkle_root, sha256d};
use crate::ledger::{Ledger, SigCache};
use crate::tx::{AccountId, Transfer, Tx, key_from_seed};
use ed25519_dalek::SigningKey;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use synod_core::{ClientId, Command, NodeId, Output, Protocol, Time};
use synod_pbft::{Config, Durable, Message, PbftNode, Write};

/// Bound on resends of one transfer by its client (a user with a transfer
/// in flight submits nothing new).
const MAX_CLIENT_RETRIES: u32 = 4;

/// PBFT's K for the chain: a checkpoint every this many sequence numbers.
pub const CHECKPOINT_INTERVAL: u64 = 32;

/// A PBFT-chain simulation's settings.
#[derive(Clone, Debug)]
pub struct PbftSimConfig {
    /// Replicas (n = 3f + 1 tolerates f faulty ones).
    pub nodes: usize,
    /// The seed everything derives from.
    pub seed: u64,
    /// Stop when the longest replica chain reaches this height...
    pub blocks: u64,
    /// ...or at this virtual time.
    pub max_time_ms: u64,
    /// One-way latency.
    pub latency_ms: u64,
    /// Latency jitter.
    pub jitter_ms: u64,
    /// Transfers submitted per second.
    pub tx_per_sec: f64,
    /// Funded user accounts.
    pub accounts: usize,
    /// Requests per PRE-PREPARE at most.
    pub max_batch: usize,
    /// Cut these replicas off from the rest during `[start, end)` ms.
    pub partition: Option<(Vec<usize>, u64, u64)>,
    /// Crash replica `node` during `[start, end)` ms (its disk survives).
    pub crash_ms: Option<(usize, u64, u64)>,
}

impl Default for PbftSimConfig {
    fn default() -> Self {
        PbftSimConfig {
            nodes: 4,
            seed: 1,
            blocks: 200,
            max_time_ms: u64::MAX,
            latency_ms: 100,
            jitter_ms: 100,
            tx_per_sec: 1.0,
            accounts: 50,
            max_batch: 64,
            partition: None,
            crash_ms: None,
        }
    }
}

/// What a PBFT-chain run measured and checked.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PbftReport {
    /// Virtual time simulated.
    pub sim_time_ms: u64,
    /// Height of the longest replica chain.
    pub height: u64,
    /// Every replica's height at the end.
    pub height_by_replica: Vec<u64>,
    /// Blocks per simulated minute.
    pub blocks_per_min: f64,
    /// Always 0: a PBFT block is never abandoned (kept for the comparison).
    pub stale_rate: f64,
    /// Mean commit latency: submission until `f + 1` replicas appended the
    /// transfer.
    pub finality_ms_mean: f64,
    /// Final transfers per simulated second.
    pub tx_per_sec: f64,
    /// Double-spend attempts submitted (all must be dropped).
    pub double_spends_submitted: u64,
    /// Transfers dropped by the block rule (double spends among them).
    pub txs_dropped: u64,
    /// Highest view reached by any replica (view changes happened if > 0).
    pub max_view: u64,
    /// Network messages sent (replica-to-replica and client requests).
    pub messages: u64,
    /// Network bytes sent.
    pub bytes: u64,
    /// Messages per block.
    pub messages_per_block: f64,
    /// Checker violations (empty: all checks passed).
    pub violations: Vec<String>,
}

/// A block header of the PBFT chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PbftBlockHeader {
    /// Height (genesis is 0).
    pub height: u64,
    /// The previous block's hash (zero for genesis).
    pub prev_hash: Hash32,
    /// Merkle root of the txids.
    pub merkle_root: Hash32,
    /// The PBFT sequence number whose batch the block holds.
    pub pbft_seq: u64,
}

impl PbftBlockHeader {
    /// The header's hash: [`sha256d`] of height, previous hash, Merkle root
    /// and sequence number.
    pub fn hash(&self) -> Hash32 {
        let mut b = Vec::with_capacity(80);
        b.extend_from_slice(&self.height.to_le_bytes());
        b.extend_from_slice(&self.prev_hash.0);
        b.extend_from_slice(&self.merkle_root.0);
        b.extend_from_slice(&self.pbft_seq.to_le_bytes());
        sha256d(&b)
    }
}

/// A block: header and transfers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PbftBlock {
    /// The header.
    pub header: PbftBlockHeader,
    /// The transfers, in agreed order.
    pub txs: Vec<Tx>,
}

/// One replica's chain: blocks from genesis, the ledger after them, and the
/// last PBFT sequence number turned into blocks.
#[derive(Clone, Debug)]
pub struct PbftChain {
    blocks: Vec<PbftBlock>,
    hashes: Vec<Hash32>,
    ledger: Ledger,
    last_seq: u64,
}

impl PbftChain {
    /// A chain holding only the genesis block, over `balances`.
    pub fn new(balances: &[(AccountId, u64)]) -> PbftChain {
        let genesis = PbftBlock {
            header: PbftBlockHeader {
                height: 0,
                prev_hash: Hash32::default(),
                merkle_root: merkle_root(&[]),
                pbft_seq: 0,
            },
            txs: Vec::new(),
        };
        let h = genesis.header.hash();
        PbftChain {
            blocks: vec![genesis],
            hashes: vec![h],
            ledger: Ledger::with_balances(balances),
            last_seq: 0,
        }
    }

    /// Height of the tip.
    pub fn height(&self) -> u64 {
        self.blocks.len() as u64 - 1
    }

    /// The blocks, genesis first.
    pub fn blocks(&self) -> &[PbftBlock] {
        &self.blocks
    }

    /// The hash of the block at `height`.
    pub fn hash_at(&self, height: u64) -> Option<Hash32> {
        self.hashes.get(height as usize).copied()
    }

    /// Turns the batch executed at `seq` (the next sequence number) into a
    /// block if any of its transfers is valid; returns the block's height
    /// and the txids of the transfers dropped.
    ///
    /// # Panics
    /// If `seq` is not the next sequence number.
    pub fn extend(
        &mut self,
        seq: u64,
        commands: &[Command],
        sigs: &SigCache,
    ) -> (Option<u64>, Vec<Hash32>) {
        assert_eq!(seq, self.last_seq + 1, "batches become blocks in sequence order");
        self.last_seq = seq;
        let mut txs = Vec::new();
        let mut dropped = Vec::new();
        for c in commands {
            let Some(tx) = decode_transfer(&c.op) else { continue };
            let txid = tx.txid();
            match self.ledger.apply(&tx, &txid, sigs) {
                Ok(_) => txs.push(tx),
                Err(_) => dropped.push(txid),
            }
        }
        if txs.is_empty() {
            return (None, dropped);
        }
        let txids: Vec<Hash32> = txs.iter().map(Tx::txid).collect();
        let header = PbftBlockHeader {
            height: self.height() + 1,
            prev_hash: self.hashes[self.hashes.len() - 1],
            merkle_root: merkle_root(&txids),
            pbft_seq: seq,
        };
        self.hashes.push(header.hash());
        self.blocks.push(PbftBlock { header, txs });
        (Some(self.height()), dropped)
    }
}

/// Decodes a transfer from its [`Tx::encode`] bytes; `None` for anything
/// else (a request that is not a transfer is ignored by the block rule).
pub fn decode_transfer(op: &[u8]) -> Option<Tx> {
    let domain_len = op.len().checked_sub(1 + 80 + 64)?;
    if op.first() != Some(&1) {
        return None;
    }
    let body = &op[1 + domain_len..];
    let from: AccountId = body[0..32].try_into().ok()?;
    let to: AccountId = body[32..64].try_into().ok()?;
    let amount = u64::from_le_bytes(body[64..72].try_into().ok()?);
    let nonce = u64::from_le_bytes(body[72..80].try_into().ok()?);
    let signature: [u8; 64] = body[80..144].try_into().ok()?;
    let tx = Tx::Transfer(Transfer { from, to, amount, nonce, signature });
    // The encoding must round-trip (this also checks the domain).
    (tx.encode() == op).then_some(tx)
}

/// The checker: replays `chain` from genesis on a fresh ledger — links,
/// heights, Merkle roots, increasing sequence numbers, every transfer valid
/// — and independently rejects any spend `(payer, nonce)` or txid seen
/// twice.
pub fn check_chain(
    chain: &PbftChain,
    balances: &[(AccountId, u64)],
    sigs: &SigCache,
) -> Result<(), String> {
    let mut ledger = Ledger::with_balances(balances);
    let mut spends = HashSet::new();
    let mut txids = HashSet::new();
    let mut prev = chain.blocks[0].header.hash();
    let mut last_seq = 0;
    for (height, b) in chain.blocks.iter().enumerate().skip(1) {
        let h = &b.header;
        if h.height != height as u64 || h.prev_hash != prev || h.pbft_seq <= last_seq {
            return Err(format!("height {height}: bad link, height or sequence number"));
        }
        let ids: Vec<Hash32> = b.txs.iter().map(Tx::txid).collect();
        if merkle_root(&ids) != h.merkle_root {
            return Err(format!("height {height}: Merkle root mismatch"));
        }
        for (tx, id) in b.txs.iter().zip(&ids) {
            if !txids.insert(*id) {
                return Err(format!("height {height}: transaction {id:?} twice"));
            }
            if let Some(s) = tx.spend()
                && !spends.insert(s)
            {
                return Err(format!("height {height}: double spend of nonce {}", s.1));
            }
            ledger.apply(tx, id, sigs).map_err(|e| format!("height {height}: {e}"))?;
        }
        prev = h.hash();
        last_seq = h.pbft_seq;
    }
    Ok(())
}

enum Event {
    Deliver { to: usize, from: usize, msg: Message },
    Request { to: usize, cmd: Command },
    Tick { node: usize },
    NewTx,
    PartitionStart,
    PartitionEnd,
    Crash(usize),
    Restart(usize),
}

struct Replica {
    /// `None` while crashed.
    node: Option<PbftNode>,
    durable: Durable,
    chain: PbftChain,
    /// When the queued tick fires (`u64::MAX`: none queued).
    tick_at_ms: u64,
}

/// Runs one PBFT-chain simulation.
///
/// # Panics
/// If `cfg.nodes` is 0 or more than 64.
pub fn run(cfg: &PbftSimConfig) -> PbftReport {
    Sim::new(cfg).run()
}

/// Virtual time allowed per block of the target before a run counts as stalled.
const STALL_MS_PER_BLOCK: u64 = 60_000;

struct Sim<'a> {
    cfg: &'a PbftSimConfig,
    pbft: Config,
    rng: ChaCha8Rng,
    queue: EventQueue<Event>,
    net: ChainNet,
    replicas: Vec<Replica>,
    sigs: SigCache,
    balances: Vec<(AccountId, u64)>,
    users: Vec<SigningKey>,
    user_nonce: Vec<u64>,
    /// The user's transfer in flight: (txid, last sent at, resends, request).
    user_busy: Vec<Option<(Hash32, u64, u32, Command)>>,
    next_client: u64,
    now_ms: u64,
    /// txid → (submitted at ms, replicas that appended it).
    submitted: HashMap<Hash32, (u64, usize)>,
    /// txid → owning user, for transfers whose outcome frees the user.
    owner: HashMap<Hash32, usize>,
    /// The block hash every replica appended at each height (first wins).
    canonical: Vec<Hash32>,
    commit_latencies_ms: Vec<u64>,
    double_spends: u64,
    dropped: HashSet<Hash32>,
    violations: Vec<String>,
}

impl<'a> Sim<'a> {
    fn new(cfg: &'a PbftSimConfig) -> Sim<'a> {
        assert!((1..=64).contains(&cfg.nodes), "1..=64 replicas");
        let ids: Vec<NodeId> = (1..=cfg.nodes as u64).map(NodeId).collect();
        let mut pbft = Config::new(ids.clone());
        pbft.key_seed = cfg.seed;
        pbft.max_batch = cfg.max_batch.max(1);
        // Checkpoints every 32 sequence numbers: a replica that fell behind
        // (cut off, then stuck in a view change of its own) catches up by
        // state transfer at the next stable checkpoint, so a short interval
        // bounds its lag.
        pbft.checkpoint_interval = CHECKPOINT_INTERVAL;
        pbft.log_window = 2 * CHECKPOINT_INTERVAL;
        // Timeouts scaled to the network: a round trip is at most
        // 2 × (latency + jitter).
        let rtt_ms = 2 * (cfg.latency_ms + cfg.jitter_ms);
        pbft.view_change_timeout = Duration::from_millis((10 * rtt_ms).max(300));
        pbft.max_view_change_timeout = Duration::from_millis((80 * rtt_ms).max(2_000));
        pbft.status_interval = Duration::from_millis((2 * rtt_ms).max(50));
        let users: Vec<SigningKey> =
            (0..cfg.accounts.max(2)).map(|i| key_from_seed(cfg.seed, i as u64)).collect();
        let balances: Vec<(AccountId, u64)> =
            users.iter().map(|k| (k.verifying_key().to_bytes(), 1_000_000)).collect();
        let replicas = ids
            .iter()
            .map(|&id| Replica {
                node: Some(PbftNode::recover(id, &pbft, &Durable::default(), cfg.seed, Time::ZERO)),
                durable: Durable::default(),
                chain: PbftChain::new(&balances),
                tick_at_ms: u64::MAX,
            })
            .collect();
        let n_users = users.len();
        Sim {
            cfg,
            pbft,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            queue: EventQueue::default(),
            net: ChainNet::new(cfg.nodes, cfg.latency_ms, cfg.jitter_ms),
            replicas,
            sigs: SigCache::default(),
            balances,
            users,
            user_nonce: vec![0; n_users],
            user_busy: vec![None; n_users],
            next_client: 1,
            now_ms: 0,
            submitted: HashMap::new(),
            owner: HashMap::new(),
            canonical: Vec::new(),
            commit_latencies_ms: Vec::new(),
            double_spends: 0,
            dropped: HashSet::new(),
            violations: Vec::new(),
        }
    }

    fn f(&self) -> usize {
        (self.cfg.nodes - 1) / 3
    }

    fn exp_ms(&mut self, rate_per_ms: f64) -> u64 {
        let u: f64 = self.rng.random_range(f64::MIN_POSITIVE..1.0);
        (-u.ln() / rate_per_ms).ceil().max(1.0) as u64
    }

    fn height(&self) -> u64 {
        self.replicas.iter().map(|r| r.chain.height()).max().unwrap_or(0)
    }

    fn run(mut self) -> PbftReport {
        for i in 0..self.replicas.len() {
            self.schedule_tick(i);
        }
        if self.cfg.tx_per_sec > 0.0 {
            let dt = self.exp_ms(self.cfg.tx_per_sec / 1000.0);
            self.queue.push(dt, Event::NewTx);
        }
        if let Some((_, s, e)) = &self.cfg.partition {
            self.queue.push(*s, Event::PartitionStart);
            self.queue.push(*e, Event::PartitionEnd);
        }
        if let Some((n, s, e)) = self.cfg.crash_ms {
            self.queue.push(s, Event::Crash(n));
            self.queue.push(e, Event::Restart(n));
        }
        // A run with a block target stops by itself even if the replicas
        // stall: a block takes about a second at the default rate, so a
        // minute of virtual time per block is far beyond any healthy run.
        let deadline = self.cfg.max_time_ms.min(self.cfg.blocks.saturating_mul(STALL_MS_PER_BLOCK));
        while let Some((t, ev)) = self.queue.pop() {
            if t > deadline || self.height() >= self.cfg.blocks {
                break;
            }
            self.now_ms = t;
            match ev {
                Event::Deliver { to, from, msg } => {
                    let from_id = NodeId(from as u64 + 1);
                    self.call(to, |n, now, out| n.step(now, from_id, msg, out));
                }
                Event::Request { to, cmd } => {
                    self.call(to, |n, now, out| {
                        let _ = n.propose(now, vec![cmd], out);
                    });
                }
                Event::Tick { node } => {
                    if self.replicas[node].tick_at_ms == t {
                        self.replicas[node].tick_at_ms = u64::MAX;
                        self.call(node, |n, now, out| n.tick(now, out));
                    }
                }
                Event::NewTx => {
                    self.new_tx();
                    let dt = self.exp_ms(self.cfg.tx_per_sec / 1000.0);
                    self.queue.push(t + dt, Event::NewTx);
                }
                Event::PartitionStart => {
                    if let Some((side, _, _)) = &self.cfg.partition {
                        let side = side.clone();
                        self.net.partition(&side);
                    }
                }
                Event::PartitionEnd => self.net.heal(),
                Event::Crash(i) => {
                    self.net.down[i] = true;
                    self.replicas[i].node = None;
                    self.replicas[i].tick_at_ms = u64::MAX;
                }
                Event::Restart(i) => {
                    self.net.down[i] = false;
                    let id = NodeId(i as u64 + 1);
                    let node = PbftNode::recover(
                        id,
                        &self.pbft,
                        &self.replicas[i].durable,
                        self.cfg.seed ^ t,
                        Time::from_millis(t),
                    );
                    self.replicas[i].node = Some(node);
                    self.call(i, |n, now, out| n.tick(now, out));
                }
            }
        }
        self.report()
    }

    /// Calls into replica `i`, then carries out the output: writes become
    /// durable, messages leave, executed batches become blocks.
    fn call(&mut self, i: usize, f: impl FnOnce(&mut PbftNode, Time, &mut Output<Message, Write>)) {
        let now = Time::from_millis(self.now_ms);
        let mut out = Output::new();
        {
            let Some(node) = self.replicas[i].node.as_mut() else { return };
            f(node, now, &mut out);
        }
        for w in &out.writes {
            PbftNode::apply_write(&mut self.replicas[i].durable, w);
        }
        for (to, msg) in out.messages {
            let to = (to.0 - 1) as usize;
            let size = synod_core::Message::size_bytes(&msg);
            if let Some(delay) = self.net.send(&mut self.rng, i, to, size) {
                self.queue.push(self.now_ms + delay, Event::Deliver { to, from: i, msg });
            }
        }
        self.build_blocks(i);
        self.schedule_tick(i);
    }

    fn schedule_tick(&mut self, i: usize) {
        let Some(node) = self.replicas[i].node.as_ref() else { return };
        let due = node.next_deadline().as_millis().max(self.now_ms);
        if due < self.replicas[i].tick_at_ms {
            self.replicas[i].tick_at_ms = due;
            self.queue.push(due, Event::Tick { node: i });
        }
    }

    fn build_blocks(&mut self, i: usize) {
        let f = self.f();
        loop {
            let r = &mut self.replicas[i];
            let Some(node) = r.node.as_ref() else { return };
            let seq = r.chain.last_seq + 1;
            if seq > node.executed_seq() {
                return;
            }
            // Executed batches hold the clients' signed envelopes; a block
            // carries the transactions inside them.
            let batch: Vec<Command> = node
                .executed_batch(seq)
                .map(|b| {
                    b.iter()
                        .map(|c| Command { op: synod_pbft::request::inner_op(&c.op), ..c.clone() })
                        .collect()
                })
                .unwrap_or_default();
            let (height, dropped) = r.chain.extend(seq, &batch, &self.sigs);
            for id in dropped {
                if self.dropped.insert(id)
                    && let Some(u) = self.owner.remove(&id)
                {
                    self.user_busy[u] = None;
                }
            }
            let Some(height) = height else { continue };
            let hash = self.replicas[i].chain.hash_at(height).unwrap_or_default();
            match self.canonical.get(height as usize - 1) {
                None => self.canonical.push(hash),
                Some(h) if *h != hash => self.violations.push(format!(
                    "replica {i} appended {hash:?} at height {height}, another replica {h:?}"
                )),
                Some(_) => {}
            }
            let txids: Vec<Hash32> =
                self.replicas[i].chain.blocks[height as usize].txs.iter().map(Tx::txid).collect();
            for id in txids {
                if let Some(u) = self.owner.remove(&id) {
                    self.user_busy[u] = None;
                }
                if let Some((at, count)) = self.submitted.get_mut(&id) {
                    *count += 1;
                    if *count == f + 1 {
                        self.commit_latencies_ms.push(self.now_ms - *at);
                    }
                }
            }
        }
    }

    /// Sends `cmd` to every replica that is up.
    /// `cmd` sealed by its client (PBFT replicas refuse unsigned requests).
    fn signed(&self, cmd: Command) -> Command {
        synod_pbft::request::sign_command(&self.pbft.client_key(cmd.client.0), cmd)
    }

    fn broadcast_request(&mut self, cmd: Command) {
        for to in 0..self.replicas.len() {
            if self.net.down[to] {
                continue;
            }
            let size = cmd.size_bytes();
            self.net.messages += 1;
            self.net.bytes += size as u64;
            let delay = self.cfg.latency_ms + self.rng.random_range(0..=self.cfg.jitter_ms);
            self.queue.push(self.now_ms + delay, Event::Request { to, cmd: cmd.clone() });
        }
    }

    fn new_tx(&mut self) {
        let u = self.rng.random_range(0..self.users.len());
        let mut payee = self.rng.random_range(0..self.users.len());
        if payee == u {
            payee = (payee + 1) % self.users.len();
        }
        if let Some((id, at, retries, cmd)) = self.user_busy[u].clone() {
            // Still in flight: resend it after a while (a request sent
            // during a view change may have been lost), a bounded number of
            // times; PBFT executes a request id once.
            let stuck_ms = 20 * (self.cfg.latency_ms + self.cfg.jitter_ms) + 2_000;
            if self.now_ms - at > stuck_ms && retries < MAX_CLIENT_RETRIES {
                self.user_busy[u] = Some((id, self.now_ms, retries + 1, cmd.clone()));
                self.broadcast_request(cmd);
            }
            return;
        }
        let to = self.users[payee].verifying_key().to_bytes();
        let nonce = self.user_nonce[u];
        let tx = Tx::Transfer(Transfer::new(&self.users[u], to, 1, nonce));
        self.user_nonce[u] += 1;
        let id = tx.txid();
        self.submitted.insert(id, (self.now_ms, 0));
        self.owner.insert(id, u);
        let client = ClientId(self.next_client);
        self.next_client += 1;
        let cmd = self.signed(Command::new(client, 1, tx.encode()));
        self.user_busy[u] = Some((id, self.now_ms, 0, cmd.clone()));
        self.broadcast_request(cmd);
        if self.rng.random_bool(0.1) {
            // A double spend: the same nonce to someone else.
            let other =
                (payee + 1 + self.rng.random_range(0..self.users.len() - 1)) % self.users.len();
            let to2 = self.users[other].verifying_key().to_bytes();
            let ds = Tx::Transfer(Transfer::new(&self.users[u], to2, 1, nonce));
            self.double_spends += 1;
            let client = ClientId(self.next_client);
            self.next_client += 1;
            let cmd = self.signed(Command::new(client, 1, ds.encode()));
            self.broadcast_request(cmd);
        }
    }

    fn report(mut self) -> PbftReport {
        if self.cfg.blocks != u64::MAX && self.height() < self.cfg.blocks {
            self.violations.push(format!(
                "liveness: height {} of {} when the run stopped at {} ms virtual",
                self.height(),
                self.cfg.blocks,
                self.now_ms
            ));
        }
        for (i, r) in self.replicas.iter().enumerate() {
            if let Err(e) = check_chain(&r.chain, &self.balances, &self.sigs) {
                self.violations.push(format!("replica {i}: {e}"));
            }
            for h in 1..=r.chain.height() {
                if self.canonical.get(h as usize - 1).copied() != r.chain.hash_at(h) {
                    self.violations.push(format!("replica {i}: chains diverge at height {h}"));
                    break;
                }
            }
        }
        let height = self.height();
        let secs = (self.now_ms.max(1)) as f64 / 1000.0;
        let final_txs = self.commit_latencies_ms.len();
        PbftReport {
            sim_time_ms: self.now_ms,
            height,
            height_by_replica: self.replicas.iter().map(|r| r.chain.height()).collect(),
            blocks_per_min: height as f64 / secs * 60.0,
            stale_rate: 0.0,
            finality_ms_mean: if final_txs == 0 {
                0.0
            } else {
                self.commit_latencies_ms.iter().sum::<u64>() as f64 / final_txs as f64
            },
            tx_per_sec: final_txs as f64 / secs,
            double_spends_submitted: self.double_spends,
            txs_dropped: self.dropped.len() as u64,
            max_view: self
                .replicas
                .iter()
                .filter_map(|r| r.node.as_ref())
                .map(|n| n.view())
                .max()
                .unwrap_or(0),
            messages: self.net.messages,
            bytes: self.net.bytes,
            messages_per_block: self.net.messages as f64 / height.max(1) as f64,
            violations: self.violations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(seed: u64, blocks: u64) -> PbftSimConfig {
        PbftSimConfig { seed, blocks, tx_per_sec: 5.0, ..PbftSimConfig::default() }
    }

    #[test]
    fn a_healthy_cluster_agrees_on_one_chain_and_drops_every_double_spend() {
        let r = run(&cfg(1, 100));
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.height, 100);
        assert!(r.double_spends_submitted > 0, "the workload tried double spends");
        assert!(r.txs_dropped >= r.double_spends_submitted, "{r:?}");
        // Commit takes a few one-way hops of 100-200 ms.
        assert!((200.0..3_000.0).contains(&r.finality_ms_mean), "{}", r.finality_ms_mean);
        assert!(r.tx_per_sec > 2.0, "{}", r.tx_per_sec);
        assert_eq!(r.max_view, 0, "no view change without faults");
        let again = run(&cfg(1, 100));
        assert_eq!((again.sim_time_ms, again.messages), (r.sim_time_ms, r.messages));
    }

    #[test]
    fn a_partitioned_backup_does_not_stop_progress_and_catches_up() {
        let c = PbftSimConfig {
            partition: Some((vec![3], 5_000, 30_000)),
            max_time_ms: 60_000,
            blocks: u64::MAX,
            ..cfg(2, 0)
        };
        let r = run(&c);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        // 3 of 4 replicas (2f + 1) keep committing through the partition.
        assert!(r.height > 150, "{r:?}");
        let min = r.height_by_replica.iter().min().copied().unwrap_or(0);
        // A replica that missed batches catches up at stable checkpoints.
        assert!(
            r.height - min <= CHECKPOINT_INTERVAL,
            "the healed replica caught up: {:?}",
            r.height_by_replica
        );
    }

    #[test]
    fn a_partitioned_primary_is_replaced_by_a_view_change() {
        let c = PbftSimConfig {
            partition: Some((vec![0], 5_000, 30_000)),
            max_time_ms: 60_000,
            blocks: u64::MAX,
            ..cfg(3, 0)
        };
        let r = run(&c);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert!(r.max_view >= 1, "{r:?}");
        assert!(r.height > 150, "{r:?}");
    }

    #[test]
    fn a_crashed_replica_recovers_its_chain_from_disk_and_catches_up() {
        let c = PbftSimConfig {
            crash_ms: Some((2, 5_000, 20_000)),
            max_time_ms: 40_000,
            blocks: u64::MAX,
            ..cfg(4, 0)
        };
        let r = run(&c);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        let min = r.height_by_replica.iter().min().copied().unwrap_or(0);
        assert!(r.height > 100 && r.height - min <= 5, "{r:?}");
    }

    /// Two of four replicas cut off for good: no quorum, no block. The run
    /// stops by itself and says the target was not reached.
    #[test]
    fn a_stalled_cluster_stops_and_reports_a_liveness_violation() {
        let c =
            PbftSimConfig { blocks: 5, partition: Some((vec![0, 1], 0, u64::MAX)), ..cfg(4, 0) };
        let r = run(&c);
        assert_eq!(r.height, 0, "{r:?}");
        assert!(r.sim_time_ms <= 5 * STALL_MS_PER_BLOCK, "{r:?}");
        assert!(r.violations.iter().any(|v| v.starts_with("liveness: height 0 of 5")), "{r:?}");
    }

    #[test]
    fn the_checker_rejects_a_double_spend_and_a_broken_link() {
        let key = key_from_seed(9, 0);
        let balances = vec![(key.verifying_key().to_bytes(), 10)];
        let sigs = SigCache::default();
        let a = Tx::Transfer(Transfer::new(&key, [1; 32], 1, 0));
        let b = Tx::Transfer(Transfer::new(&key, [2; 32], 1, 0));
        let cmds = |t: &[&Tx]| -> Vec<Command> {
            t.iter().map(|x| Command::new(ClientId(1), 1, x.encode())).collect()
        };
        let mut chain = PbftChain::new(&balances);
        // The block rule keeps the first spend of nonce 0 and drops the second.
        let (h, dropped) = chain.extend(1, &cmds(&[&a, &b]), &sigs);
        assert_eq!((h, dropped), (Some(1), vec![b.txid()]));
        assert_eq!(chain.extend(2, &cmds(&[&b]), &sigs), (None, vec![b.txid()]));
        assert_eq!(check_chain(&chain, &balances, &sigs), Ok(()));
        // Forge a block carrying the double spend: the checker must object.
        let mut forged = chain.clone();
        forged.blocks[1].txs.push(b.clone());
        let ids: Vec<Hash32> = forged.blocks[1].txs.iter().map(Tx::txid).collect();
        forged.blocks[1].header.merkle_root = merkle_root(&ids);
        assert!(check_chain(&forged, &balances, &sigs).is_err());
        let mut unlinked = chain.clone();
        unlinked.blocks[1].header.prev_hash = Hash32([7; 32]);
        assert!(check_chain(&unlinked, &balances, &sigs).is_err());
        assert_eq!(decode_transfer(&a.encode()), Some(a));
        assert_eq!(decode_transfer(b"nope"), None);
    }
}
