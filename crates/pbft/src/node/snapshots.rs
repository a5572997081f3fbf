//! Snapshot checkpoints, garbage collection of the executed history, and
//! state transfer of the checkpointed state (OSDI'99 §4.3, TOCS §6).
//!
//! Every [`Config::snapshot_interval`] sequence numbers (a multiple of K)
//! a replica asks its host for a snapshot of the state machine right after
//! executing the batch there ([`SnapshotAction::Take`] at that position).
//! When the host has it durable it reports its SHA-256; the replica then
//! multicasts the CHECKPOINT for that sequence number, signing the digest of
//! a [`SnapshotManifest`] (hash chain, position, agreed clock, the clients'
//! latest executed requests, the snapshot's size and SHA-256). Checkpoints
//! in between sign the hash chain alone. Once 2f+1 matching CHECKPOINTs make
//! a snapshot checkpoint stable *and* this replica holds that snapshot, it
//! adopts it: [`Write::Snapshot`] discards the executed history up to it
//! (memory and journal), and the host may drop older snapshots.
//!
//! A replica that must reach a stable checkpoint asks a peer for the
//! batches (FETCH); a peer that discarded them answers with its adopted
//! snapshot and the stable checkpoint proving the manifest
//! (SNAPSHOT-OFFER). The laggard verifies the proof (2f+1 signatures), then
//! pulls the bytes one chunk at a time (SNAPSHOT-FETCH / SNAPSHOT-CHUNK,
//! MAC'd), hashing them as they arrive and handing them to the host
//! ([`SnapshotAction::Write`]). If the bytes hash to the manifest's SHA-256
//! it installs the snapshot ([`SnapshotAction::Install`]), takes the
//! manifest's chain, position, clock and client table as its own, and
//! fetches the batches above it as before. A peer whose bytes do not match
//! is counted (`bad_digest`) and another peer is asked: a faulty replica
//! can delay a transfer, never corrupt one.

use super::{PbftNode, PbftOutput};
use crate::digest::Digest;
use crate::message::{Checkpoint, Message, SnapshotCheckpoint, SnapshotManifest, StableCheckpoint};
use crate::storage::Write;
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use synod_core::{ClientId, SnapshotAction, SnapshotMeta, Time};

/// Stable proofs at snapshot sequence numbers kept while this replica's own
/// snapshot there is still being written.
const MAX_PENDING_PROOFS: usize = 4;

/// Snapshots asked of the host and not reported that a replica remembers.
const MAX_PENDING_TAKES: usize = 4;

/// What a replica knows about a snapshot it asked its host to take, until
/// the host reports it durable with its digest.
#[derive(Clone, Debug)]
pub(super) struct PendingTake {
    pub seq: u64,
    pub chain: Digest,
    pub agreed_time: Time,
    pub last_executed: Arc<[(ClientId, u64)]>,
}

/// A SNAPSHOT-CHUNK's fields.
pub(super) struct Chunk {
    pub seq: u64,
    pub offset: u64,
    pub data: bytes::Bytes,
    pub auth: crate::Mac,
}

/// A snapshot being fetched from one peer.
#[derive(Clone, Debug)]
pub(super) struct Transfer {
    /// The peer serving it (position).
    pub peer: usize,
    pub offer: Arc<SnapshotCheckpoint>,
    /// Bytes received so far.
    pub offset: u64,
    pub hasher: Sha256,
    /// Whether a chunk arrived since the last fetch timer.
    pub progressed: bool,
}

impl PbftNode {
    /// The sequence number the in-memory executed history starts after
    /// (the adopted snapshot's, or 0).
    pub fn history_base(&self) -> u64 {
        self.history_base
    }

    /// The snapshot this replica adopted last, if any.
    pub fn adopted_snapshot(&self) -> Option<&Arc<SnapshotCheckpoint>> {
        self.snapshot.as_ref()
    }

    pub(super) fn is_snapshot_seq(&self, seq: u64) -> bool {
        seq > 0 && seq.is_multiple_of(self.config.snapshot_interval)
    }

    /// Right after executing (and emitting) the batch at `seq`, a snapshot
    /// sequence number: asks the host for the state at this position.
    pub(super) fn take_snapshot(&mut self, seq: u64, out: &mut PbftOutput) {
        let mut table: Vec<(ClientId, u64)> =
            self.last_executed.iter().map(|(c, s)| (*c, *s)).collect();
        table.sort_unstable();
        let take = PendingTake {
            seq,
            chain: self.state,
            agreed_time: self.agreed_time,
            last_executed: Arc::from(table),
        };
        self.taking.insert(self.applied_positions, take);
        // A host whose takes keep failing never answers them: keep the
        // newest few.
        while self.taking.len() > MAX_PENDING_TAKES {
            self.taking.pop_first();
        }
        out.snapshots.push(SnapshotAction::Take { index: self.applied_positions });
    }

    /// The host made the snapshot at position `index` durable: sign its
    /// checkpoint, and adopt it if a quorum already proved it.
    pub(super) fn on_snapshot_taken(
        &mut self,
        index: u64,
        size_bytes: u64,
        sha256: [u8; 32],
        out: &mut PbftOutput,
    ) {
        let Some(take) = self.taking.remove(&index) else { return };
        // Takes below this one were skipped or failed: none will come.
        self.taking = self.taking.split_off(&index);
        if take.seq <= self.history_base {
            return; // a newer snapshot was adopted or installed meanwhile
        }
        let manifest = Arc::new(SnapshotManifest {
            seq: take.seq,
            chain: take.chain,
            position: index,
            agreed_time: take.agreed_time,
            last_executed: take.last_executed,
            size_bytes,
            sha256: Digest(sha256),
        });
        let (seq, state) = (manifest.seq, manifest.state());
        if seq > self.stable.seq {
            self.own_checkpoints.insert(seq, state);
            let cp = Checkpoint {
                seq,
                state,
                replica: self.id,
                sig: self.keys.sign(&Checkpoint::digest(seq, &state, self.id)),
            };
            self.broadcast(Message::Checkpoint(cp.clone()), out);
            self.own_snapshots.insert(seq, manifest);
            self.record_checkpoint(self.me, cp, out);
        } else {
            self.own_snapshots.insert(seq, manifest);
        }
        self.try_adopt(out);
    }

    /// A stable checkpoint was adopted: at a snapshot sequence number, keep
    /// its proof until this replica's own snapshot there is durable.
    pub(super) fn note_stable(&mut self, s: &StableCheckpoint, out: &mut PbftOutput) {
        if self.is_snapshot_seq(s.seq) {
            self.snapshot_proofs.insert(s.seq, s.clone());
            while self.snapshot_proofs.len() > MAX_PENDING_PROOFS {
                self.snapshot_proofs.pop_first();
            }
            self.try_adopt(out);
        }
        // Takes at or below the stable checkpoint that a quorum did not
        // need from us stay pending until the host answers.
    }

    /// Adopts the newest snapshot this replica holds that a stable
    /// checkpoint proves: the executed history up to it goes.
    fn try_adopt(&mut self, out: &mut PbftOutput) {
        let found = self.own_snapshots.iter().rev().find_map(|(seq, m)| {
            let proof = self.snapshot_proofs.get(seq)?;
            if proof.state != m.state() {
                panic!(
                    "{}: snapshot at checkpoint {seq} diverged from a quorum's (its host's \
                     state machine is not deterministic, or its state is corrupt)",
                    self.id
                );
            }
            Some((m.clone(), proof.clone()))
        });
        let Some((manifest, proof)) = found else { return };
        let seq = manifest.seq;
        assert!(seq <= self.executed, "a snapshot is taken after its batch executed");
        let drop = (seq - self.history_base) as usize;
        self.history.drain(..drop);
        self.history_digests.drain(..drop);
        self.history_base = seq;
        self.own_snapshots = self.own_snapshots.split_off(&(seq + 1));
        self.snapshot_proofs = self.snapshot_proofs.split_off(&(seq + 1));
        let adopted = Arc::new(SnapshotCheckpoint { manifest, proof });
        out.writes.push(Write::Snapshot(adopted.clone()));
        self.snapshot = Some(adopted);
    }

    /// This replica's manifest at snapshot sequence number `seq`, if it
    /// took (or adopted) the snapshot there.
    pub(super) fn manifest_at(&self, seq: u64) -> Option<Arc<SnapshotManifest>> {
        if !self.is_snapshot_seq(seq) {
            return None;
        }
        if let Some(m) = self.own_snapshots.get(&seq) {
            return Some(m.clone());
        }
        self.snapshot.as_ref().map(|s| s.manifest.clone()).filter(|m| m.seq == seq)
    }

    /// A FETCH this replica cannot serve from its history: offer its
    /// snapshot (if it covers what was asked).
    pub(super) fn offer_snapshot(&mut self, pos: usize, from: u64, out: &mut PbftOutput) {
        if let Some(s) = self.snapshot.clone().filter(|s| s.manifest.seq >= from) {
            self.send_to(pos, Message::SnapshotOffer(s), out);
        }
    }

    /// A peer offers its snapshot: check it, and start fetching it if it
    /// takes this replica further than it is and than any transfer running.
    pub(super) fn on_snapshot_offer(
        &mut self,
        now: Time,
        pos: usize,
        offer: Arc<SnapshotCheckpoint>,
        out: &mut PbftOutput,
    ) {
        let m = &offer.manifest;
        if self.fetch_asked != Some(pos)
            || m.seq <= self.executed
            || self.transfer.as_ref().is_some_and(|t| t.offer.manifest.seq >= m.seq)
        {
            return;
        }
        if offer.proof.seq != m.seq
            || offer.proof.state != m.state()
            || m.size_bytes == 0
            || !self.is_snapshot_seq(m.seq)
        {
            self.stats.invalid += 1;
            return;
        }
        if !self.check_stable(&offer.proof) {
            return; // counted by the check
        }
        let seq = m.seq;
        self.make_stable(offer.proof.clone(), out);
        self.transfer =
            Some(Transfer { peer: pos, offer, offset: 0, hasher: Sha256::new(), progressed: true });
        self.ask_chunk(pos, seq, 0, out);
        self.fetch_deadline = now + self.config.status_interval * 2;
    }

    fn ask_chunk(&mut self, pos: usize, seq: u64, offset: u64, out: &mut PbftOutput) {
        let auth = self.keys.mac(pos, Message::snapshot_fetch_header(seq, offset).as_bytes());
        self.send_to(pos, Message::SnapshotFetch { seq, offset, auth }, out);
    }

    /// A peer asks for bytes of the adopted snapshot: the host reads them.
    pub(super) fn on_snapshot_fetch(
        &mut self,
        pos: usize,
        seq: u64,
        offset: u64,
        auth: &crate::Mac,
        out: &mut PbftOutput,
    ) {
        let header = Message::snapshot_fetch_header(seq, offset);
        if !self.keys.check_mac(pos, header.as_bytes(), auth) {
            self.stats.bad_mac += 1;
            return;
        }
        let Some(s) = self.snapshot.as_ref().filter(|s| s.manifest.seq == seq) else { return };
        if offset >= s.manifest.size_bytes {
            return;
        }
        out.snapshots.push(SnapshotAction::Read {
            to: self.config.replicas[pos],
            index: s.manifest.position,
            offset,
            max_bytes: self.config.snapshot_chunk_bytes,
        });
    }

    /// The host read a chunk for `to`: send it.
    pub(super) fn send_chunk(
        &mut self,
        to: synod_core::NodeId,
        index: u64,
        offset: u64,
        data: bytes::Bytes,
        out: &mut PbftOutput,
    ) {
        let Some(pos) = self.config.position(to) else { return };
        let Some(s) = self.snapshot.as_ref().filter(|s| s.manifest.position == index) else {
            return; // adopted a newer one since: the peer asks again
        };
        if data.is_empty() || data.len() > self.config.snapshot_chunk_bytes {
            return;
        }
        let seq = s.manifest.seq;
        let auth =
            self.keys.mac(pos, Message::snapshot_chunk_header(seq, offset, &data).as_bytes());
        self.send_to(pos, Message::SnapshotChunk { seq, offset, data, auth }, out);
    }

    /// A chunk of the snapshot being fetched.
    pub(super) fn on_snapshot_chunk(
        &mut self,
        now: Time,
        pos: usize,
        chunk: Chunk,
        out: &mut PbftOutput,
    ) {
        let Chunk { seq, offset, data, auth } = chunk;
        let auth = &auth;
        let Some(t) = self.transfer.as_ref() else { return };
        if t.peer != pos || t.offer.manifest.seq != seq || t.offset != offset {
            return; // stale or duplicate
        }
        let header = Message::snapshot_chunk_header(seq, offset, &data);
        if !self.keys.check_mac(pos, header.as_bytes(), auth) {
            self.stats.bad_mac += 1;
            return;
        }
        let m = t.offer.manifest.clone();
        if seq <= self.executed {
            self.transfer = None; // overtaken (batches arrived meanwhile)
            return;
        }
        if data.is_empty()
            || data.len() > self.config.snapshot_chunk_bytes
            || offset + data.len() as u64 > m.size_bytes
        {
            self.stats.invalid += 1;
            self.transfer = None;
            return;
        }
        let Some(t) = self.transfer.as_mut() else { return };
        t.hasher.update(&data);
        t.offset += data.len() as u64;
        t.progressed = true;
        let done = t.offset == m.size_bytes;
        out.snapshots.push(SnapshotAction::Write { index: m.position, epoch: m.seq, offset, data });
        if !done {
            let next = t.offset;
            self.ask_chunk(pos, seq, next, out);
            self.fetch_deadline = now + self.config.status_interval * 2;
            return;
        }
        let Some(t) = self.transfer.take() else { return };
        if Digest(t.hasher.finalize().into()) != m.sha256 {
            // The bytes are not the ones a quorum signed: this peer lied.
            self.stats.bad_digest += 1;
            self.fetch_deadline = Time::ZERO;
            return;
        }
        self.install(t.offer, out);
    }

    /// Installs a fetched, verified snapshot: the state continues from its
    /// manifest.
    fn install(&mut self, offer: Arc<SnapshotCheckpoint>, out: &mut PbftOutput) {
        let m = offer.manifest.clone();
        assert!(m.seq > self.executed, "a snapshot is installed only to move forward");
        debug_assert_eq!(self.emitted, self.executed, "history is flushed before any message");
        out.snapshots.push(SnapshotAction::Install {
            meta: SnapshotMeta { index: m.position, epoch: m.seq, size_bytes: m.size_bytes },
        });
        self.start_from(offer.clone());
        let last = &self.last_executed;
        self.pending.retain(|(c, s), _| last.get(c).is_none_or(|l| s > l));
        self.ordering.retain(|(c, s)| last.get(c).is_none_or(|l| s > l));
        self.taking.clear();
        self.own_snapshots = self.own_snapshots.split_off(&(m.seq + 1));
        self.snapshot_proofs = self.snapshot_proofs.split_off(&(m.seq + 1));
        self.own_checkpoints = self.own_checkpoints.split_off(&(m.seq + 1));
        self.next_seq = self.next_seq.max(m.seq + 1);
        out.writes.push(Write::Snapshot(offer.clone()));
        self.make_stable(offer.proof.clone(), out);
        self.fetch_deadline = if self.executed < self.stable.seq { Time::ZERO } else { Time::MAX };
        self.installed_snapshots += 1;
        self.execute_committed(out);
        self.on_progress(out);
    }

    /// The state continues from snapshot `s` (installed, or loaded by the
    /// host at recovery): execution, positions, the agreed clock and the
    /// clients' latest requests are the manifest's; no history below it.
    pub(super) fn start_from(&mut self, s: Arc<SnapshotCheckpoint>) {
        let m = &s.manifest;
        self.state = m.chain;
        self.executed = m.seq;
        self.emitted = m.seq;
        self.applied_positions = m.position;
        self.agreed_time = m.agreed_time;
        self.last_executed = m.last_executed.iter().copied().collect();
        self.history.clear();
        self.history_digests.clear();
        self.history_base = m.seq;
        self.snapshot = Some(s);
    }

    /// The fetch timer fired during a transfer: ask again for the chunk
    /// expected if the peer made progress since, else give it up (the
    /// caller then asks another peer). Returns whether it asked.
    pub(super) fn continue_transfer(&mut self, now: Time, out: &mut PbftOutput) -> bool {
        let Some(t) = self.transfer.as_mut() else { return false };
        if !t.progressed || t.offer.manifest.seq <= self.executed {
            self.transfer = None;
            return false;
        }
        t.progressed = false;
        let (peer, seq, offset) = (t.peer, t.offer.manifest.seq, t.offset);
        self.ask_chunk(peer, seq, offset, out);
        self.fetch_deadline = now + self.config.status_interval * 2;
        true
    }
}
