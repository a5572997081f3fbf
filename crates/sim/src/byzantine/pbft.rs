//! Attacks on PBFT ([`PbftAdversary`]): the catalogue of issue 5 §7.
//!
//! The Byzantine nodes are `1..=byzantine` (node 1 is the primary of view
//! 0, node 2 of view 1), except for `lying-new-view`, which takes
//! `2..=byzantine+1` so that the first new primary lies. The adversary
//! holds the Byzantine nodes' keys (it controls them) and none other.
//! Correct replicas are split into two groups X and Y (`X` the first half
//! by id) for the attacks that tell them different stories.
//!
//! | attack | what the Byzantine nodes do |
//! |---|---|
//! | `equivocate` | a Byzantine primary pre-prepares batch A to X and B to Y at every sequence number, and every Byzantine node votes (PREPARE, COMMIT) for A towards X and for B towards Y |
//! | `forge` | besides their own messages, send votes, PRE-PREPAREs, CHECKPOINTs and VIEW-CHANGEs claiming (and spoofing) a correct replica, authenticated with their own keys |
//! | `replay` | re-send old messages they received, spoofing their original senders (valid MACs, stale content) |
//! | `out-of-window` | add copies of their PRE-PREPAREs, votes and CHECKPOINTs at sequence numbers beyond the high watermark and at old ones |
//! | `wrong-digest` | PRE-PREPAREs, votes and state-transfer replies whose digest does not match the batch |
//! | `silent` | send nothing, answer no client |
//! | `slow` | hold every PRE-PREPARE for 90% of the view-change timeout |
//! | `vc-flood` | signed VIEW-CHANGEs for ever higher views, and signed SUSPECTs of the latest view seen (a fresh view for each at most every [`FLOOD_VIEW_PERIOD`] of virtual time), with half of their messages |
//! | `lying-checkpoint` | signed CHECKPOINTs with wrong state digests, also for sequence numbers not reached |
//! | `lying-new-view` | NEW-VIEWs whose O or checkpoint is not what V decides (re-signed), NEW-VIEWs with too few VIEW-CHANGEs, VIEW-CHANGEs claiming a prepared certificate for an invented batch, STATUS claiming to be active in a higher view far ahead (a true one while it changes to a view it leads, so that it gets the VIEW-CHANGEs it needs to lie in that view's NEW-VIEW) |
//! | `bad-client-auth` | a Byzantine primary adds requests no client made to its batches: invented clients' requests sealed with the wrong key, or a real client's signature over another operation and sequence number |
//! | `lying-replies` | every client reply says the same wrong value; READ-INDEX answers claim a sequence number never reached, or 0 |
//! | `twins` | node 1 runs twice with one identity and one key set: the original talks to X, a second correct core (the twin) to Y |
//! | `random` | mutates about half of what they send: fields bumped, digests flipped, stale or fresh authenticators, duplicates, drops, old messages |
//! | `bad-timestamp` | a Byzantine primary stamps its batches an hour in the future or in the past (the same forged batch to every replica, validly authenticated): backups must refuse to prepare them, change view, and stay safe and live |

use super::{Adversary, Forged};
use crate::client::Answer;
use crate::rng::SimRng;
use crate::sim::Sim;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use synod_core::kv::{KvOp, KvResult};
use synod_core::{ClientId, Command, NodeId, Output, Protocol, Time};
use synod_pbft::auth::client_signing_key;
use synod_pbft::digest::batch_digest;
use synod_pbft::message::{
    Checkpoint, NewView, PrePrepare, PreparedEntry, Signature, StableCheckpoint, Suspect,
    ViewChange, Vote,
};
use synod_pbft::request::{SIGNATURE_BYTES, seal};
use synod_pbft::{Batch, Config, Digest, Keyring, Message, PbftNode, PbftOutput};

/// `vc-flood` asks for a fresh view at most this often (virtual time). A
/// real attacker is bounded by bandwidth and by the signatures it makes;
/// here, asking for a fresh view with half of all messages made every
/// message cost a signature, and with f+1 Byzantine replicas (whose
/// VIEW-CHANGEs correct ones must join) the cluster changed view ~100
/// times a virtual second, each VIEW-CHANGE carrying the whole log window:
/// one seed of `--byzantine 2 --attack vc-flood` took minutes. Between
/// fresh views the flood re-sends the same signed VIEW-CHANGE, so the
/// number of flood messages is unchanged.
pub const FLOOD_VIEW_PERIOD: std::time::Duration = std::time::Duration::from_millis(100);

/// Old messages kept for replays.
const MAX_RECORDED: usize = 512;
/// Equivocations remembered (per view and sequence number).
const MAX_ALT: usize = 4096;
/// The first client id of invented requests (no simulated client has it).
const FORGED_CLIENT: u64 = 1 << 40;

/// One attack of [`super::ATTACKS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// `equivocate`.
    Equivocate,
    /// `forge`.
    Forge,
    /// `replay`.
    Replay,
    /// `out-of-window`.
    OutOfWindow,
    /// `wrong-digest`.
    WrongDigest,
    /// `silent`.
    Silent,
    /// `slow`.
    Slow,
    /// `vc-flood`.
    VcFlood,
    /// `lying-checkpoint`.
    LyingCheckpoint,
    /// `lying-new-view`.
    LyingNewView,
    /// `bad-client-auth`.
    BadClientAuth,
    /// `lying-replies`.
    LyingReplies,
    /// `twins`.
    Twins,
    /// `random`.
    Random,
    /// `bad-timestamp`.
    BadTimestamp,
}

impl Attack {
    /// Parses an attack name.
    pub fn parse(name: &str) -> Option<Attack> {
        Some(match name {
            "equivocate" => Attack::Equivocate,
            "forge" => Attack::Forge,
            "replay" => Attack::Replay,
            "out-of-window" => Attack::OutOfWindow,
            "wrong-digest" => Attack::WrongDigest,
            "silent" => Attack::Silent,
            "slow" => Attack::Slow,
            "vc-flood" => Attack::VcFlood,
            "lying-checkpoint" => Attack::LyingCheckpoint,
            "lying-new-view" => Attack::LyingNewView,
            "bad-client-auth" => Attack::BadClientAuth,
            "lying-replies" => Attack::LyingReplies,
            "twins" => Attack::Twins,
            "random" => Attack::Random,
            "bad-timestamp" => Attack::BadTimestamp,
            _ => return None,
        })
    }
}

/// The ids of the Byzantine nodes for `attack` with `count` of `n`.
pub fn byzantine_nodes(attack: Attack, count: usize, n: usize) -> Vec<NodeId> {
    let first = if attack == Attack::LyingNewView && count < n { 2 } else { 1 };
    (first..first + count as u64).map(NodeId).collect()
}

/// Installs the adversary its options name on a PBFT simulation.
pub(crate) fn install(sim: &mut Sim<PbftNode>) -> Result<(), String> {
    let name = sim.opts.attack.clone().unwrap_or_default();
    let Some(attack) = Attack::parse(&name) else {
        return Err(format!(
            "--attack {name}: run it through run_seed (it expands to each attack)"
        ));
    };
    let n = sim.nodes.len();
    let ids = byzantine_nodes(attack, sim.opts.byzantine, n);
    for id in &ids {
        sim.byzantine[id.0 as usize - 1] = true;
    }
    let key = sim.keys.first().cloned().unwrap_or_else(|| Bytes::from_static(b"k"));
    let adv = PbftAdversary::new(attack, &sim.config, &ids, sim.seed, key);
    sim.adversary = Some(Box::new(adv));
    Ok(())
}

/// A correct core sharing a Byzantine node's identity (the `twins` attack).
struct Twin {
    core: PbftNode,
    out: PbftOutput,
}

/// The Byzantine nodes' strategy for one run.
pub struct PbftAdversary {
    attack: Attack,
    config: Config,
    /// By position: Byzantine.
    byz: Vec<bool>,
    /// By position: the Byzantine nodes' keys.
    keys: Vec<Option<Arc<Keyring>>>,
    /// By position: a correct replica of group Y.
    group_y: Vec<bool>,
    rng: SimRng,
    /// The second story told at (view, seq): digest and batch.
    alt: HashMap<(u64, u64), (Digest, Batch)>,
    /// (view, seq, receiver) already sent the Byzantine votes.
    fabricated: HashSet<(u64, u64, usize)>,
    recorded: VecDeque<(NodeId, Message)>,
    /// The highest view seen in a Byzantine node's messages.
    view_hint: u64,
    /// The view the `vc-flood` VIEW-CHANGEs ask for now.
    flood_view: u64,
    /// When `vc-flood` may ask for a fresh view again.
    flood_next: Time,
    /// By position: the Byzantine node's signed VIEW-CHANGE for
    /// `flood_view` (re-sent until the view moves on).
    flood_sent: Vec<Option<Message>>,
    /// The view the `vc-flood` SUSPECTs accuse now: the latest view seen
    /// when `flood_view` last moved (so a fresh one at most every
    /// [`FLOOD_VIEW_PERIOD`] too).
    flood_suspected: u64,
    /// The key invented requests write.
    key: Bytes,
    forged_seq: u64,
    twin: Option<Twin>,
    /// What the attack did, by kind ([`Adversary::counters`]): proof that
    /// it happened, for tests that check the defence fired too.
    did: BTreeMap<&'static str, u64>,
}

impl PbftAdversary {
    /// The adversary for `attack` controlling `ids` in a cluster
    /// configured by `config`; `seed` drives its random choices.
    pub fn new(attack: Attack, config: &Config, ids: &[NodeId], seed: u64, key: Bytes) -> Self {
        let n = config.replicas.len();
        let mut byz = vec![false; n];
        let mut keys: Vec<Option<Arc<Keyring>>> = (0..n).map(|_| None).collect();
        for id in ids {
            if let Some(p) = config.position(*id) {
                byz[p] = true;
                keys[p] = Some(config.keyring(p));
            }
        }
        let correct: Vec<usize> = (0..n).filter(|&p| !byz[p]).collect();
        let mut group_y = vec![false; n];
        for &p in &correct[correct.len() / 2..] {
            group_y[p] = true;
        }
        let twin = (attack == Attack::Twins).then(|| ids.first()).flatten().map(|&id| Twin {
            core: PbftNode::recover(id, config, &Default::default(), seed, Time::ZERO),
            out: Output::new(),
        });
        PbftAdversary {
            attack,
            config: config.clone(),
            byz,
            keys,
            group_y,
            rng: SimRng::new(seed ^ 0xb12a_2717_ad7e_5a11),
            alt: HashMap::new(),
            fabricated: HashSet::new(),
            recorded: VecDeque::new(),
            view_hint: 0,
            flood_view: 0,
            flood_next: Time::ZERO,
            flood_sent: vec![None; n],
            flood_suspected: 0,
            key,
            forged_seq: 0,
            twin,
            did: BTreeMap::new(),
        }
    }

    /// Counts one thing the attack did.
    fn note(&mut self, what: &'static str) {
        *self.did.entry(what).or_insert(0) += 1;
    }

    fn pos(&self, id: NodeId) -> usize {
        self.config.position(id).expect("simulated nodes are replicas")
    }

    fn id(&self, pos: usize) -> NodeId {
        self.config.replicas[pos]
    }

    fn keys(&self, pos: usize) -> &Keyring {
        self.keys[pos].as_ref().expect("the adversary holds only Byzantine keys")
    }

    fn pre_prepare(&self, b: usize, view: u64, seq: u64, digest: Digest, batch: Batch) -> Message {
        let auth = self.keys(b).auth(PrePrepare::header(view, seq, &digest).as_bytes());
        Message::PrePrepare(PrePrepare { view, seq, digest, batch, auth })
    }

    fn vote(&self, b: usize, commit: bool, view: u64, seq: u64, digest: Digest) -> Message {
        let replica = self.id(b);
        let header = Vote::header(commit, view, seq, &digest, replica);
        let auth = self.keys(b).auth(header.as_bytes());
        let v = Vote { view, seq, digest, replica, auth };
        if commit { Message::Commit(v) } else { Message::Prepare(v) }
    }

    fn checkpoint(&self, b: usize, seq: u64, state: Digest) -> Message {
        let replica = self.id(b);
        let sig = self.keys(b).sign(&Checkpoint::digest(seq, &state, replica));
        Message::Checkpoint(Checkpoint { seq, state, replica, sig })
    }

    fn view_change(&self, b: usize, view: u64, prepared: Vec<PreparedEntry>) -> Message {
        let mut vc = ViewChange {
            view,
            replica: self.id(b),
            stable: StableCheckpoint::default(),
            prepared,
            pre_prepared: Vec::new(),
            sig: ed25519_dalek_signature(),
        };
        vc.sig = self.keys(b).sign(&vc.digest());
        Message::ViewChange(Arc::new(vc))
    }

    /// The operation of requests no client made: a put of a value no
    /// client writes.
    fn forged_op(&self) -> Bytes {
        KvOp::Put { key: self.key.clone(), value: Bytes::from_static(b"forged;") }.encode()
    }

    /// A request nobody made, sealed with a key that is not its client's
    /// (the adversary holds no client keys).
    fn invented_request(&mut self) -> Command {
        self.forged_seq += 1;
        let client = ClientId(FORGED_CLIENT + self.forged_seq);
        let key = client_signing_key(!self.config.key_seed, client.0);
        Command { client, seq: 1, op: seal(&key, client, 1, &self.forged_op()) }
    }

    /// A real client's request `c` moved to the client's next sequence
    /// number with another operation, under `c`'s signature.
    fn tampered_request(&self, c: &Command) -> Command {
        let mut op = c.op[..SIGNATURE_BYTES.min(c.op.len())].to_vec();
        op.extend_from_slice(&self.forged_op());
        Command { client: c.client, seq: c.seq + 1, op: Bytes::from(op) }
    }

    /// The other story for a batch: reversed, or the null request.
    fn alter(batch: &Batch) -> Batch {
        if batch.len() >= 2 {
            Batch::new(batch.timestamp, batch.iter().rev().cloned().collect::<Vec<_>>())
        } else {
            Batch::null()
        }
    }

    fn note_view(&mut self, msg: &Message) {
        let v = match msg {
            Message::PrePrepare(p) => p.view,
            Message::Prepare(v) | Message::Commit(v) => v.view,
            Message::ViewChange(vc) => vc.view,
            Message::NewView(nv) => nv.view,
            Message::Status { view, .. } => *view,
            Message::Suspect(s) => s.view,
            _ => return,
        };
        self.view_hint = self.view_hint.max(v);
    }

    fn record(&mut self, from: NodeId, msg: &Message) {
        if self.recorded.len() >= MAX_RECORDED {
            self.recorded.pop_front();
        }
        self.recorded.push_back((from, msg.clone()));
    }

    /// An old recorded message for `to`, spoofed from its sender.
    fn replayed(&mut self, via: NodeId, to: NodeId) -> Option<Forged<Message>> {
        if self.recorded.is_empty() {
            return None;
        }
        let half = self.recorded.len().div_ceil(2);
        let (from, msg) = self.recorded[self.rng.index(half)].clone();
        (from != to).then_some(Forged { via, from, to, msg, delay_us: 0 })
    }

    // ----- attacks ----------------------------------------------------------

    fn equivocate(
        &mut self,
        from: NodeId,
        to: NodeId,
        msg: Message,
        out: &mut Vec<Forged<Message>>,
    ) {
        let (b, t) = (self.pos(from), self.pos(to));
        if self.byz[t] {
            out.push(Forged::plain(from, to, msg));
            return;
        }
        let y = self.group_y[t];
        match msg {
            Message::PrePrepare(pp) => {
                let key = (pp.view, pp.seq);
                if self.alt.len() >= MAX_ALT && !self.alt.contains_key(&key) {
                    self.alt.clear();
                }
                let (d, batch) = self
                    .alt
                    .entry(key)
                    .or_insert_with(|| {
                        let b2 = Self::alter(&pp.batch);
                        (batch_digest(&b2), b2)
                    })
                    .clone();
                let (d, batch) = if y { (d, batch) } else { (pp.digest, pp.batch.clone()) };
                if d != pp.digest {
                    self.note("equivocating pre-prepares");
                }
                out.push(Forged::plain(from, to, self.pre_prepare(b, pp.view, pp.seq, d, batch)));
                // Every Byzantine node backs the story this receiver heard.
                if self.fabricated.len() >= MAX_ALT {
                    self.fabricated.clear();
                }
                if self.fabricated.insert((pp.view, pp.seq, t)) {
                    let primary = (pp.view % self.config.replicas.len() as u64) as usize;
                    for o in (0..self.byz.len()).filter(|&o| self.byz[o]) {
                        if o != primary {
                            let m = self.vote(o, false, pp.view, pp.seq, d);
                            out.push(Forged::plain(self.id(o), to, m));
                        }
                        let m = self.vote(o, true, pp.view, pp.seq, d);
                        out.push(Forged::plain(self.id(o), to, m));
                    }
                }
            }
            Message::Prepare(ref v) | Message::Commit(ref v)
                if y && self.alt.contains_key(&(v.view, v.seq)) =>
            {
                let commit = matches!(msg, Message::Commit(_));
                let d = self.alt[&(v.view, v.seq)].0;
                self.note("equivocating votes");
                out.push(Forged::plain(from, to, self.vote(b, commit, v.view, v.seq, d)));
            }
            other => out.push(Forged::plain(from, to, other)),
        }
    }

    fn forge(&mut self, from: NodeId, to: NodeId, msg: Message, out: &mut Vec<Forged<Message>>) {
        let (b, t) = (self.pos(from), self.pos(to));
        out.push(Forged::plain(from, to, msg));
        if !self.rng.chance(0.3) {
            return;
        }
        let n = self.byz.len();
        let victims: Vec<usize> = (0..n).filter(|&p| !self.byz[p] && p != t).collect();
        if victims.is_empty() {
            return;
        }
        let v = victims[self.rng.index(victims.len())];
        let (victim, view) = (self.id(v), self.view_hint);
        let (mut kind, commit) = (self.rng.below(4), self.rng.chance(0.5));
        if kind == 1 && self.byz[(view % n as u64) as usize] {
            kind = 0; // a PRE-PREPARE of its own view would not be a forgery
        }
        let invented = self.invented_request();
        let keys = self.keys(b);
        let forged = match kind {
            0 => {
                let d = Digest::of(b"forged vote");
                let header = Vote::header(commit, view, 1, &d, victim);
                let auth = keys.auth(header.as_bytes());
                let vote = Vote { view, seq: 1, digest: d, replica: victim, auth };
                if commit { Message::Commit(vote) } else { Message::Prepare(vote) }
            }
            1 => {
                let batch = Batch::new(Time::ZERO, vec![invented]);
                let d = batch_digest(&batch);
                self.pre_prepare(b, view, 1, d, batch)
            }
            2 => {
                let sig = keys.sign(&Checkpoint::digest(128, &Digest::ZERO, victim));
                Message::Checkpoint(Checkpoint {
                    seq: 128,
                    state: Digest::ZERO,
                    replica: victim,
                    sig,
                })
            }
            _ => {
                let mut vc = ViewChange {
                    view: view + 1,
                    replica: victim,
                    stable: StableCheckpoint::default(),
                    prepared: Vec::new(),
                    pre_prepared: Vec::new(),
                    sig: ed25519_dalek_signature(),
                };
                vc.sig = keys.sign(&vc.digest());
                Message::ViewChange(Arc::new(vc))
            }
        };
        // Spoof the victim for votes; a PRE-PREPARE claims the primary.
        let claimed = match &forged {
            Message::PrePrepare(_) => self.id((view % n as u64) as usize),
            _ => victim,
        };
        if claimed != to {
            self.note("forged messages");
            out.push(Forged { via: from, from: claimed, to, msg: forged, delay_us: 0 });
        }
    }

    fn out_of_window(
        &mut self,
        from: NodeId,
        to: NodeId,
        msg: Message,
        out: &mut Vec<Forged<Message>>,
    ) {
        let b = self.pos(from);
        let far = self.config.log_window + 1 + self.rng.below(self.config.log_window * 4);
        let extra = match &msg {
            Message::PrePrepare(pp) => {
                let seq = if self.rng.chance(0.5) { pp.seq + far } else { 0 };
                Some(self.pre_prepare(b, pp.view, seq, pp.digest, pp.batch.clone()))
            }
            Message::Prepare(v) | Message::Commit(v) => {
                let commit = matches!(msg, Message::Commit(_));
                Some(self.vote(b, commit, v.view, v.seq + far, v.digest))
            }
            Message::Checkpoint(cp) => {
                let k = self.config.checkpoint_interval;
                Some(self.checkpoint(b, cp.seq + (far / k + 1) * k * 4, cp.state))
            }
            _ => None,
        };
        out.push(Forged::plain(from, to, msg));
        if let Some(m) = extra {
            self.note("out-of-window messages");
            out.push(Forged::plain(from, to, m));
        }
    }

    fn wrong_digest(
        &mut self,
        from: NodeId,
        to: NodeId,
        msg: Message,
        out: &mut Vec<Forged<Message>>,
    ) {
        let b = self.pos(from);
        let wrong = |d: &Digest| {
            let mut x = *d;
            x.0[0] ^= 0x5a;
            x
        };
        let m = match msg {
            Message::PrePrepare(pp) => {
                self.note("wrong-digest pre-prepares");
                self.pre_prepare(b, pp.view, pp.seq, wrong(&pp.digest), pp.batch)
            }
            Message::Prepare(ref v) | Message::Commit(ref v) => {
                self.note("wrong-digest votes");
                let commit = matches!(msg, Message::Commit(_));
                self.vote(b, commit, v.view, v.seq, wrong(&v.digest))
            }
            Message::State { first, batches, manifest } => {
                self.note("wrong state transfers");
                let mut bs: Vec<Batch> = batches.to_vec();
                if let Some(last) = bs.last_mut() {
                    *last = Self::alter(last);
                    if last.is_empty() {
                        *last = Batch::new(last.timestamp, vec![self.invented_request()]);
                    }
                }
                Message::State { first, batches: Arc::from(bs), manifest }
            }
            Message::SnapshotChunk { seq, offset, data, .. } => {
                // The bytes a quorum's manifest does not hash to, under a
                // valid MAC: only the SHA-256 over the whole snapshot
                // catches them.
                self.note("wrong snapshot chunks");
                let mut bytes = data.to_vec();
                if let Some(first) = bytes.first_mut() {
                    *first ^= 0x5a;
                }
                let data = Bytes::from(bytes);
                let header = Message::snapshot_chunk_header(seq, offset, &data);
                let auth = self.keys(b).mac(self.pos(to), header.as_bytes());
                Message::SnapshotChunk { seq, offset, data, auth }
            }
            other => other,
        };
        out.push(Forged::plain(from, to, m));
    }

    /// Half of a Byzantine node's messages come with its signed
    /// VIEW-CHANGE for a view above every view it saw, a fresh view at
    /// most every [`FLOOD_VIEW_PERIOD`].
    fn vc_flood(
        &mut self,
        now: Time,
        from: NodeId,
        to: NodeId,
        msg: Message,
        out: &mut Vec<Forged<Message>>,
    ) {
        let b = self.pos(from);
        out.push(Forged::plain(from, to, msg));
        if !self.rng.chance(0.5) {
            return;
        }
        if now >= self.flood_next {
            self.flood_view = self.flood_view.max(self.view_hint) + 1;
            self.flood_next = now + FLOOD_VIEW_PERIOD;
            self.flood_suspected = self.view_hint;
            self.note("flood views");
        }
        self.note("flood view-changes");
        let view = self.flood_view;
        let vc = match &self.flood_sent[b] {
            Some(Message::ViewChange(vc)) if vc.view == view => Message::ViewChange(vc.clone()),
            _ => {
                let vc = self.view_change(b, view, Vec::new());
                self.flood_sent[b] = Some(vc.clone());
                vc
            }
        };
        out.push(Forged::plain(from, to, vc));
        // And a SUSPECT of the latest view it saw when the flood last asked
        // for a fresh view: f of them move no correct replica (a correct one
        // must suspect too). f+1 of them move every correct replica out of
        // the view it is in, rightly (as f+1 VIEW-CHANGEs do), so a fresh
        // view is accused at most every `FLOOD_VIEW_PERIOD` like the
        // VIEW-CHANGEs: accusing the latest view with every message had
        // correct replicas leave each view as soon as they entered it.
        let view = self.flood_suspected;
        let replica = from;
        let sig = self.keys(b).sign(&Suspect::digest(view, replica));
        self.note("flood suspicions");
        out.push(Forged::plain(from, to, Message::Suspect(Suspect { view, replica, sig })));
    }

    fn lying_checkpoint(
        &mut self,
        from: NodeId,
        to: NodeId,
        msg: Message,
        out: &mut Vec<Forged<Message>>,
    ) {
        let b = self.pos(from);
        let m = match msg {
            Message::Checkpoint(cp) if cp.replica == from => {
                let lie = Digest::of(&cp.seq.to_le_bytes());
                let ahead = cp.seq + self.config.checkpoint_interval;
                self.note("lying checkpoints");
                out.push(Forged::plain(from, to, self.checkpoint(b, ahead, lie)));
                self.checkpoint(b, cp.seq, lie)
            }
            other => other,
        };
        out.push(Forged::plain(from, to, m));
    }

    fn lying_new_view(
        &mut self,
        from: NodeId,
        to: NodeId,
        msg: Message,
        out: &mut Vec<Forged<Message>>,
    ) {
        let b = self.pos(from);
        let n = self.byz.len() as u64;
        let m = match msg {
            Message::NewView(nv) if nv.replica == from => {
                let mut lie: NewView = (*nv).clone();
                match self.rng.below(3) {
                    0 if !lie.pre_prepares.is_empty() => {
                        lie.pre_prepares.pop();
                    }
                    1 if !lie.pre_prepares.is_empty() => {
                        let i = self.rng.index(lie.pre_prepares.len());
                        lie.pre_prepares[i].1 = Digest::of(b"lie");
                    }
                    _ => {
                        lie.checkpoint_seq += self.config.checkpoint_interval;
                    }
                }
                lie.sig = self.keys(b).sign(&lie.digest());
                self.note("lying new-views");
                Message::NewView(Arc::new(lie))
            }
            Message::ViewChange(vc) if vc.replica == from => {
                // Claim a prepared certificate for an invented batch, at
                // the first sequence number after those it really prepared
                // (it used to take only `stable + 1`, which a replica that
                // keeps up has always prepared: the lie was never told).
                let batch = Batch::new(Time::ZERO, vec![self.invented_request()]);
                let seq = vc.prepared.last().map_or(vc.stable.seq, |p| p.seq) + 1;
                let entry = PreparedEntry {
                    seq,
                    view: vc.view.saturating_sub(1),
                    digest: batch_digest(&batch),
                    batch,
                };
                let mut lie: ViewChange = (*vc).clone();
                if vc.view > 0 && seq <= vc.stable.seq + self.config.log_window {
                    lie.prepared.push(entry);
                    self.note("lying view-changes");
                }
                lie.sig = self.keys(b).sign(&lie.digest());
                Message::ViewChange(Arc::new(lie))
            }
            // While it changes to a view it leads, its STATUS tells the
            // truth: peers retransmit their VIEW-CHANGEs only to a replica
            // whose STATUS shows it still changing, and it needs 2f+1 of
            // them to tell its NEW-VIEW lies (lying here, it never led view
            // 1 in seed 1 of the attack-evidence test: two VIEW-CHANGEs
            // missed it, nobody resent them, and the others moved to view 2).
            truth @ Message::Status { view, active: false, .. } if view % n == b as u64 => truth,
            Message::Status { executed, .. } => {
                self.note("lying statuses");
                // Its STATUS claims it is active in a view it leads, far
                // ahead (a correct replica must neither follow one such
                // claim nor hold back its suspicion of a primary for it).
                let view = (self.view_hint / n + 1) * n + b as u64;
                let executed = executed + 10_000;
                let header = Message::status_header(view, true, executed);
                let auth = self.keys(b).mac(self.pos(to), header.as_bytes());
                let lie = Message::Status { view, active: true, executed, auth };
                if !self.rng.chance(0.2) {
                    out.push(Forged::plain(from, to, lie));
                    return;
                }
                // And a NEW-VIEW for that view, backed by its own VIEW-CHANGE only.
                if let Message::ViewChange(vc) = self.view_change(b, view, Vec::new()) {
                    let mut nv = NewView {
                        view,
                        replica: from,
                        view_changes: vec![vc],
                        checkpoint_seq: 0,
                        checkpoint_state: Digest::ZERO,
                        pre_prepares: Vec::new(),
                        sig: ed25519_dalek_signature(),
                    };
                    nv.sig = self.keys(b).sign(&nv.digest());
                    self.note("unsupported new-views");
                    out.push(Forged::plain(from, to, Message::NewView(Arc::new(nv))));
                }
                lie
            }
            other => other,
        };
        out.push(Forged::plain(from, to, m));
    }

    fn bad_client_auth(
        &mut self,
        from: NodeId,
        to: NodeId,
        msg: Message,
        out: &mut Vec<Forged<Message>>,
    ) {
        let b = self.pos(from);
        let m = match msg {
            Message::PrePrepare(pp) if !pp.batch.is_empty() => {
                let key = (pp.view, pp.seq);
                let (d, batch) = match self.alt.get(&key) {
                    Some(x) => x.clone(),
                    None => {
                        let mut v = pp.batch.to_vec();
                        let bad = if pp.seq % 2 == 0 {
                            self.note("tampered requests");
                            self.tampered_request(&pp.batch[0])
                        } else {
                            self.note("invented requests");
                            self.invented_request()
                        };
                        v.push(bad);
                        let batch = Batch::new(pp.batch.timestamp, v);
                        let x = (batch_digest(&batch), batch);
                        if self.alt.len() >= MAX_ALT {
                            self.alt.clear();
                        }
                        self.alt.insert(key, x.clone());
                        x
                    }
                };
                self.pre_prepare(b, pp.view, pp.seq, d, batch)
            }
            Message::Prepare(ref v) | Message::Commit(ref v)
                if self.alt.contains_key(&(v.view, v.seq)) =>
            {
                let commit = matches!(msg, Message::Commit(_));
                let d = self.alt[&(v.view, v.seq)].0;
                self.vote(b, commit, v.view, v.seq, d)
            }
            other => other,
        };
        out.push(Forged::plain(from, to, m));
    }

    /// A Byzantine primary's batches re-stamped an hour away from its
    /// clock: ahead at even sequence numbers, behind at odd ones (ahead too
    /// while an hour back would be before time zero). Each (view, seq) gets
    /// one forged batch, sent to every replica (no equivocation: only the
    /// timestamp lies), authenticated with the primary's own keys.
    fn bad_timestamp(
        &mut self,
        from: NodeId,
        to: NodeId,
        msg: Message,
        out: &mut Vec<Forged<Message>>,
    ) {
        const SKEW: std::time::Duration = std::time::Duration::from_secs(3600);
        let b = self.pos(from);
        let m = match msg {
            Message::PrePrepare(pp) if !pp.batch.is_empty() => {
                let key = (pp.view, pp.seq);
                let (d, batch) = match self.alt.get(&key) {
                    Some(x) => x.clone(),
                    None => {
                        let t = pp.batch.timestamp;
                        let stamped =
                            if pp.seq % 2 == 1 && t.as_micros() > 2 * SKEW.as_micros() as u64 {
                                t - SKEW
                            } else {
                                t + SKEW
                            };
                        self.note("bad timestamps");
                        let batch = Batch::new(stamped, pp.batch.requests.clone());
                        let x = (batch_digest(&batch), batch);
                        if self.alt.len() >= MAX_ALT {
                            self.alt.clear();
                        }
                        self.alt.insert(key, x.clone());
                        x
                    }
                };
                self.pre_prepare(b, pp.view, pp.seq, d, batch)
            }
            other => other,
        };
        out.push(Forged::plain(from, to, m));
    }

    fn random(&mut self, from: NodeId, to: NodeId, msg: Message, out: &mut Vec<Forged<Message>>) {
        let b = self.pos(from);
        if self.rng.chance(0.5) {
            out.push(Forged::plain(from, to, msg));
            return;
        }
        self.note("mutated messages");
        let fresh = self.rng.chance(0.5);
        let bump = 1 + self.rng.below(3);
        let m = match msg {
            Message::PrePrepare(mut pp) => match self.rng.below(4) {
                0 => {
                    pp.view += bump;
                    if fresh {
                        self.pre_prepare(b, pp.view, pp.seq, pp.digest, pp.batch)
                    } else {
                        Message::PrePrepare(pp)
                    }
                }
                1 => {
                    pp.seq += bump;
                    if fresh {
                        self.pre_prepare(b, pp.view, pp.seq, pp.digest, pp.batch)
                    } else {
                        Message::PrePrepare(pp)
                    }
                }
                2 => {
                    let batch = Self::alter(&pp.batch);
                    let d = if fresh { batch_digest(&batch) } else { pp.digest };
                    self.pre_prepare(b, pp.view, pp.seq, d, batch)
                }
                _ => {
                    pp.digest.0[31] ^= 1;
                    Message::PrePrepare(pp)
                }
            },
            Message::Prepare(ref v) | Message::Commit(ref v) => {
                let commit = matches!(msg, Message::Commit(_));
                let mut v = v.clone();
                match self.rng.below(4) {
                    0 => v.view += bump,
                    1 => v.seq += bump,
                    2 => v.digest.0[0] ^= 1,
                    _ => {
                        let r = self.rng.index(self.byz.len());
                        v.replica = self.id(r);
                    }
                }
                if fresh && v.replica == from {
                    self.vote(b, commit, v.view, v.seq, v.digest)
                } else if commit {
                    Message::Commit(v)
                } else {
                    Message::Prepare(v)
                }
            }
            Message::Checkpoint(cp) if cp.replica == from => {
                let mut state = cp.state;
                state.0[1] ^= 1;
                self.checkpoint(b, cp.seq, state)
            }
            Message::ViewChange(vc) if vc.replica == from => {
                let mut lie: ViewChange = (*vc).clone();
                lie.prepared.clear();
                lie.view += bump - 1;
                if fresh {
                    lie.sig = self.keys(b).sign(&lie.digest());
                }
                Message::ViewChange(Arc::new(lie))
            }
            Message::NewView(nv) => {
                let mut lie: NewView = (*nv).clone();
                lie.pre_prepares.reverse();
                if fresh {
                    lie.sig = self.keys(b).sign(&lie.digest());
                }
                Message::NewView(Arc::new(lie))
            }
            other => {
                match self.rng.below(3) {
                    0 => {} // drop
                    1 => {
                        out.push(Forged::plain(from, to, other.clone()));
                        out.push(Forged {
                            delay_us: 1000 * self.rng.between(1, 50),
                            ..Forged::plain(from, to, other)
                        });
                    }
                    _ => {
                        if let Some(f) = self.replayed(from, to) {
                            out.push(f);
                        }
                        out.push(Forged::plain(from, to, other));
                    }
                }
                return;
            }
        };
        out.push(Forged::plain(from, to, m));
    }

    // ----- twins ------------------------------------------------------------

    fn twin_flush(&mut self, out: &mut Vec<Forged<Message>>) {
        let Some(tw) = self.twin.as_mut() else { return };
        let me = tw.core.id();
        let msgs: Vec<_> = tw.out.messages.drain(..).collect();
        tw.out.clear();
        let mut sent = 0;
        for (to, m) in msgs {
            let t = self.pos(to);
            if self.group_y[t] {
                sent += 1;
                out.push(Forged::plain(me, to, m));
            }
        }
        *self.did.entry("twin messages").or_insert(0) += sent;
    }

    fn twin_tick(&mut self, now: Time, out: &mut Vec<Forged<Message>>) {
        if let Some(tw) = self.twin.as_mut()
            && tw.core.next_deadline() <= now
        {
            tw.core.tick(now, &mut tw.out);
        }
        self.twin_flush(out);
    }
}

/// A placeholder signature, replaced by a real one before anything is sent.
fn ed25519_dalek_signature() -> Signature {
    Signature::from_bytes(&[0; 64])
}

impl Adversary<PbftNode> for PbftAdversary {
    fn outgoing(
        &mut self,
        now: Time,
        from: NodeId,
        to: NodeId,
        msg: Message,
        out: &mut Vec<Forged<Message>>,
    ) {
        self.note_view(&msg);
        match self.attack {
            Attack::Equivocate => self.equivocate(from, to, msg, out),
            Attack::Forge => self.forge(from, to, msg, out),
            Attack::Replay => {
                if self.rng.chance(0.3)
                    && let Some(f) = self.replayed(from, to)
                {
                    self.note("replayed messages");
                    out.push(f);
                }
                out.push(Forged::plain(from, to, msg));
            }
            Attack::OutOfWindow => self.out_of_window(from, to, msg, out),
            Attack::WrongDigest => self.wrong_digest(from, to, msg, out),
            Attack::Silent => self.note("messages withheld"),
            Attack::Slow => {
                let delay_us = if matches!(msg, Message::PrePrepare(_)) {
                    self.note("pre-prepares delayed");
                    self.config.view_change_timeout.as_micros() as u64 * 9 / 10
                } else {
                    0
                };
                out.push(Forged { delay_us, ..Forged::plain(from, to, msg) });
            }
            Attack::VcFlood => self.vc_flood(now, from, to, msg, out),
            Attack::LyingCheckpoint => self.lying_checkpoint(from, to, msg, out),
            Attack::LyingNewView => self.lying_new_view(from, to, msg, out),
            Attack::BadClientAuth => self.bad_client_auth(from, to, msg, out),
            Attack::LyingReplies => {
                // READ-INDEX answers lie too: a sequence number never reached
                // (stalls reads unless every correct replica answers) or 0.
                let m = match msg {
                    Message::ReadIndex { nonce, seq, .. } => {
                        let lie = if self.rng.chance(0.5) { seq + 1_000_000 } else { 0 };
                        self.note("lying read-indexes");
                        let header = Message::read_header(true, nonce, lie);
                        let auth = self.keys(self.pos(from)).mac(self.pos(to), header.as_bytes());
                        Message::ReadIndex { nonce, seq: lie, auth }
                    }
                    other => other,
                };
                out.push(Forged::plain(from, to, m));
            }
            Attack::Twins => {
                // The original core speaks to group X only.
                if !self.group_y[self.pos(to)] {
                    out.push(Forged::plain(from, to, msg));
                }
                self.twin_tick(now, out);
            }
            Attack::Random => self.random(from, to, msg, out),
            Attack::BadTimestamp => self.bad_timestamp(from, to, msg, out),
        }
    }

    fn incoming(
        &mut self,
        now: Time,
        at: NodeId,
        from: NodeId,
        msg: &Message,
        out: &mut Vec<Forged<Message>>,
    ) -> bool {
        let f = self.pos(from);
        if matches!(self.attack, Attack::Replay | Attack::Random) && !self.byz[f] {
            self.record(from, msg);
        }
        if self.attack == Attack::Twins
            && let Some(tw) = self.twin.as_mut()
            && tw.core.id() == at
        {
            if self.group_y[f] {
                tw.core.step(now, from, msg.clone(), &mut tw.out);
                self.twin_tick(now, out);
                return false;
            }
            self.twin_tick(now, out);
        }
        true
    }

    fn request(&mut self, now: Time, at: NodeId, cmd: &Command, out: &mut Vec<Forged<Message>>) {
        if let Some(tw) = self.twin.as_mut()
            && tw.core.id() == at
        {
            let _ = tw.core.propose(now, vec![cmd.clone()], &mut tw.out);
            self.twin_flush(out);
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.did.iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn reply(&mut self, _node: NodeId, answer: Answer) -> Option<Answer> {
        match (self.attack, answer) {
            (Attack::Silent, _) => {
                self.note("replies withheld");
                None
            }
            (Attack::LyingReplies, Answer::Value(_)) => {
                self.note("lying replies");
                Some(Answer::Value(KvResult::Value(Some(Bytes::from_static(b"lie;"))).encode()))
            }
            (_, a) => Some(a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attack_name_parses_and_byzantine_nodes_are_deterministic() {
        for name in super::super::ATTACKS {
            assert!(Attack::parse(name).is_some(), "{name}");
        }
        assert_eq!(Attack::parse("all"), None);
        assert_eq!(byzantine_nodes(Attack::Equivocate, 1, 4), vec![NodeId(1)]);
        assert_eq!(byzantine_nodes(Attack::Equivocate, 2, 4), vec![NodeId(1), NodeId(2)]);
        assert_eq!(byzantine_nodes(Attack::LyingNewView, 1, 4), vec![NodeId(2)]);
    }
}
