//! PBFT on a real node: the wire format of [`synod_pbft::Message`], its
//! [`Write`]s carried out on the [`Disk`], and the node's PBFT
//! configuration (real keys from the `pbft_keys` file, never derived).
//!
//! **Wire.** Every message starts with a version byte ([`WIRE_VERSION`])
//! and a kind tag. Decoding never panics, and every count is bounded
//! ([`MAX_REPLICAS`] for per-replica vectors, [`MAX_WIRE_ITEMS`] for
//! entries and batches, [`MAX_WIRE_COMMANDS`] for requests in a batch)
//! and checked against the bytes left before anything is allocated.
//! Authentication is the core's business: the codec only carries MACs,
//! authenticators and signatures.
//!
//! The three snapshot messages (SNAPSHOT-OFFER, SNAPSHOT-FETCH,
//! SNAPSHOT-CHUNK) and the [`Write::Snapshot`] record are new kinds under
//! the same [`WIRE_VERSION`] 2: nothing already encoded changed, so an
//! older node still reads everything it knows and refuses only the new
//! kinds ("unknown message tag": the message is dropped; "unknown record
//! tag": it does not start on a journal that holds one). A chunk carries at
//! most [`MAX_SNAPSHOT_CHUNK`] bytes and a manifest at most
//! [`MAX_WIRE_CLIENTS`] clients.
//!
//! **Disk.** A PBFT replica's durable state (`synod_pbft::storage`) is the
//! result of applying its writes in order ([`Durable::apply`]): the view,
//! pre-prepares and prepared certificates above the stable checkpoint, the
//! snapshot it adopted last, the batches executed since (replayed into the
//! state machine after a restart, on top of that snapshot, which the
//! driver loads first; and served to replicas that fetch state), the
//! stable checkpoint and the NEW-VIEW. So the write-ahead log here is a
//! journal of writes: every [`Write`] is one record, appended in order and
//! synced by the driver's group commit before the messages that depend on
//! it leave; recovery replays the records through [`Durable::apply`], which
//! gives exactly the durable state the core's model defines.
//!
//! **Compaction.** Each [`Write::Snapshot`] (the core adopted a snapshot:
//! every executed batch up to it is obsolete) compacts the journal. The
//! glue keeps a mirror of the durable state (every write persisted,
//! applied), and right after the round's records it appends a
//! *restatement*: a `Record::Restatement` saying how many records follow,
//! then [`Durable::restate`] of the mirror — writes that rebuild it from
//! nothing. The log segments wholly before the restatement are detached at
//! once and deleted only after the round's sync has made the restatement
//! durable (the purger of [`Disk`] runs after a sync). Recovery replays
//! from the last *complete* restatement (from [`Durable::default`]),
//! skipping records before it that a crash left behind, and cuts off a
//! restatement with records missing (a crash before its sync) and replays
//! the records before it. Crash safety, at every instant:
//! - before the restatement is complete on disk, the records before it are
//!   all there (nothing is deleted until it is durable), and replaying them
//!   gives what the mirror was (a torn restatement is never applied: a
//!   partial one could leave a slot's pre-prepare with a restated Q
//!   entry's stand-in batch);
//! - once it is complete, it alone gives the mirror as of it (it restates
//!   every record before it, durable or not — they precede it in the log,
//!   so they are on disk too), whichever of the records before it are
//!   still there;
//! - record numbers go on (the last records are never removed), so
//!   `next_record` is the log's end + 1 and the lost-log check below keeps
//!   its meaning. Cutting a torn restatement loses nothing the hard state
//!   vouches for unless it vouches for a record from it on, and then it is
//!   a lost log like any other.
//!
//! A failed snapshot (the host could not write it) needs nothing: this
//! replica sends no CHECKPOINT at that sequence number, and adopts the next
//! snapshot it takes ([`NodeProtocol::snapshot_failed`] here).
//!
//! The hard-state file holds a magic, a version and `synced_record`
//! ([`PbftHardState`]), written before the first record (a Raft or Paxos
//! data directory is refused, and a PBFT one is refused by them) and again
//! at each view change and stable checkpoint, each time recording the
//! journal's durable index. Recovery refuses a journal that ends before
//! it: writes whose messages this replica may have sent are gone
//! ([`crate::disk`]'s "A log that ends too early").

use crate::disk::Disk;
use crate::driver::MAX_BATCH_COMMANDS;
use crate::error::NodeError;
use crate::glue::{NodeProtocol, ProtocolSettings};
use crate::members::Reconfigure;
use crate::wire::{Reader, WireError, Writer};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use synod_core::{ClientId, Command, NodeId, Time};
use synod_pbft::auth::{Auth, MAC_BYTES, Mac};
use synod_pbft::message::{
    Batch, Checkpoint, NewView, PrePrepare, PrePreparedEntry, PreparedEntry, Requests, Signature,
    SnapshotCheckpoint, SnapshotManifest, StableCheckpoint, Suspect, ViewChange, Vote,
};
use synod_pbft::request::sign_command;
use synod_pbft::{Config, Digest, Durable, Message, PbftNode, Write};

/// The first byte of every message and record. Version 2: every batch
/// carries the primary's timestamp (the agreed clock) and its digest covers
/// it; a version-1 message or record is refused, not read with a made-up
/// timestamp (its digests would not recompute).
pub const WIRE_VERSION: u8 = 2;

/// The hard-state file starts with this, so that a data directory another
/// protocol wrote is refused, not misread.
const HARD_STATE_MAGIC: &[u8; 4] = b"pbft";
/// Version 2: the journal's batches carry timestamps ([`WIRE_VERSION`] 2).
/// A version-1 directory (written before agreed timestamps) is refused with
/// a message that says so. Version 3 adds `synced_record`; a version-2 file
/// still reads, with it 0 (nothing to check until the next save).
const HARD_STATE_VERSION: u8 = 3;

/// Most replicas (authenticator entries, checkpoint proofs, view changes in
/// a NEW-VIEW); the core's own limit.
pub const MAX_REPLICAS: u32 = 64;

/// Most entries (prepared / pre-prepared entries, NEW-VIEW's O, batches in
/// a state transfer) in one message.
pub const MAX_WIRE_ITEMS: u32 = 1 << 16;

/// Most requests in one batch.
pub const MAX_WIRE_COMMANDS: u32 = 1 << 16;

/// Most clients in a snapshot manifest's table of latest executed
/// requests (16 bytes each: 16 MiB, the transport's default frame limit).
pub const MAX_WIRE_CLIENTS: u32 = 1 << 20;

/// Most snapshot bytes one SNAPSHOT-CHUNK carries; the node's core config
/// (`Config::snapshot_chunk_bytes`, 256 KiB by default) must stay within it.
pub const MAX_SNAPSHOT_CHUNK: usize = 1 << 20;

/// Payload bytes one log append carries at most (the log bounds an append
/// at 64 MiB); a round's records, or a restatement, that need more go in
/// several appends.
const MAX_APPEND_BYTES: usize = 32 << 20;

/// What the hard-state file says: that this directory is PBFT's, and how
/// far its journal was durable at the last save; and, in memory only, what
/// the journal replays to and where its latest restatement starts.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PbftHardState {
    /// Whether the file has been written.
    saved: bool,
    /// The index the next journal record gets.
    next_record: u64,
    /// Every journal record up to here was durable when the file was last
    /// saved (its prepares, commits and checkpoints may have been sent):
    /// recovery must find the journal up to here (compaction only removes
    /// records before a restatement, never the last ones). Raised when the
    /// file is saved: before the first record, and with each view change
    /// and stable checkpoint (one small atomic write per checkpoint
    /// interval, none per request).
    synced_record: u64,
    /// What the journal replays to once every record appended so far is
    /// synced: the recovered state with every persisted write applied in
    /// order. A compaction writes it out ([`Durable::restate`]).
    mirror: Durable,
    /// The [`Record::Restatement`] the journal replays from (0: none, it
    /// replays from record 1).
    restated_at: u64,
}

impl std::fmt::Debug for PbftHardState {
    /// Without the mirror (the whole durable state).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PbftHardState")
            .field("saved", &self.saved)
            .field("next_record", &self.next_record)
            .field("synced_record", &self.synced_record)
            .field("restated_at", &self.restated_at)
            .finish_non_exhaustive()
    }
}

impl PbftHardState {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with(HARD_STATE_MAGIC.to_vec());
        w.u8(HARD_STATE_VERSION).u64(self.synced_record);
        w.finish()
    }

    /// Saves the file, raising `synced_record` to what the journal has
    /// made durable so far.
    fn save(&mut self, disk: &mut Disk) -> Result<(), NodeError> {
        self.synced_record = self.synced_record.max(disk.wal.durable_index());
        disk.hard_state.save(&self.encode())?;
        self.saved = true;
        Ok(())
    }

    /// Appends `records` to the journal from `next_record` on (unsynced),
    /// in appends of at most [`MAX_APPEND_BYTES`] (one larger record
    /// aside).
    fn append(&mut self, disk: &mut Disk, records: &[Vec<u8>]) -> Result<(), NodeError> {
        let mut rest = records;
        while !rest.is_empty() {
            let mut take = 1;
            let mut bytes = rest[0].len();
            while take < rest.len() && bytes + rest[take].len() <= MAX_APPEND_BYTES {
                bytes += rest[take].len();
                take += 1;
            }
            disk.wal.append(self.next_record, &rest[..take])?;
            self.next_record += take as u64;
            rest = &rest[take..];
        }
        Ok(())
    }

    /// Compacts the journal (after a [`Write::Snapshot`]): appends a
    /// [`Record::Restatement`] and the mirror's restatement after it, then
    /// detaches every log segment before it. Nothing is deleted here: the
    /// segments' files go only once the driver's sync that ends this round
    /// has made the restatement durable ([`Disk::sync`] hands them to the
    /// purger then). See the module doc, "Compaction".
    fn compact(&mut self, disk: &mut Disk) -> Result<(), NodeError> {
        let restated = self.mirror.restate();
        let mut replayed = Durable::default();
        restated.iter().for_each(|w| replayed.apply(w));
        if !same_durable(&replayed, &self.mirror) {
            // The core's restatement would lose state: keep the journal
            // whole (longer, but right) rather than compact it.
            debug_assert!(false, "the restatement does not rebuild the durable state");
            tracing::error!(
                record = self.next_record,
                "the PBFT journal was not compacted: its restatement does not rebuild the \
                 durable state (a bug)"
            );
            return Ok(());
        }
        let marker = self.next_record;
        let mut records = Vec::with_capacity(restated.len() + 1);
        records.push(encode_restatement(restated.len() as u64));
        records.extend(restated.iter().map(encode_write));
        self.append(disk, &records)?;
        self.restated_at = marker;
        let detached = disk.wal.detach_prefix(marker - 1)?;
        tracing::debug!(
            record = marker,
            restated = restated.len(),
            segments = detached,
            "compacted the PBFT journal"
        );
        Ok(())
    }

    /// Checks the file is PBFT's and of a version this one reads; returns
    /// its `synced_record`.
    fn decode(bytes: &[u8]) -> Result<u64, WireError> {
        let Some(rest) = bytes.strip_prefix(HARD_STATE_MAGIC) else {
            return Err(WireError::new(
                "pbft hard state",
                "not written by PBFT (is this data directory another protocol's?)",
            ));
        };
        let mut r = Reader::new("pbft hard state", rest);
        let version = r.u8()?;
        if version == 1 {
            return Err(r.invalid(
                "version 1: written by a Synod whose PBFT batches had no agreed timestamp; \
                 this version cannot replay it (start the replica from an empty data \
                 directory: it fetches the state from its peers)",
            ));
        }
        if !(2..=HARD_STATE_VERSION).contains(&version) {
            return Err(r.invalid(format!("unsupported version {version}")));
        }
        let synced_record = if version >= 3 { r.u64()? } else { 0 };
        r.finish()?;
        Ok(synced_record)
    }
}

// ----- pieces ---------------------------------------------------------------

fn put_digest(w: &mut Writer, d: &Digest) {
    for chunk in d.0.chunks(8) {
        w.u64(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
    }
}

fn get_array<const N: usize>(r: &mut Reader<'_>) -> Result<[u8; N], WireError> {
    let mut out = [0u8; N];
    for b in out.iter_mut() {
        *b = r.u8()?;
    }
    Ok(out)
}

fn get_digest(r: &mut Reader<'_>) -> Result<Digest, WireError> {
    Ok(Digest(get_array::<32>(r)?))
}

fn put_raw(w: &mut Writer, bytes: &[u8]) {
    for &b in bytes {
        w.u8(b);
    }
}

fn put_sig(w: &mut Writer, s: &Signature) {
    put_raw(w, &s.to_bytes());
}

fn get_sig(r: &mut Reader<'_>) -> Result<Signature, WireError> {
    Ok(Signature::from_bytes(&get_array::<64>(r)?))
}

fn get_mac(r: &mut Reader<'_>) -> Result<Mac, WireError> {
    get_array::<MAC_BYTES>(r)
}

/// A count, refused above `max` or above what the bytes left could hold
/// at `min_bytes` each.
fn get_count(
    r: &mut Reader<'_>,
    what: &str,
    max: u32,
    min_bytes: usize,
) -> Result<usize, WireError> {
    let count = r.u32()?;
    if count > max {
        return Err(r.invalid(format!("{count} {what} (at most {max})")));
    }
    let count = count as usize;
    if count.saturating_mul(min_bytes) > r.remaining() {
        return Err(r.invalid(format!("{count} {what} do not fit in {} bytes", r.remaining())));
    }
    Ok(count)
}

fn put_count(w: &mut Writer, n: usize) {
    w.u32(u32::try_from(n).expect("the core bounds its collections"));
}

fn put_auth(w: &mut Writer, a: &Auth) {
    match a {
        Auth::Macs(macs) => {
            w.u8(0);
            put_count(w, macs.len());
            for m in macs.iter() {
                put_raw(w, m);
            }
        }
        Auth::Signed(s) => {
            w.u8(1);
            put_sig(w, s);
        }
    }
}

fn get_auth(r: &mut Reader<'_>) -> Result<Auth, WireError> {
    match r.u8()? {
        0 => {
            let n = get_count(r, "authenticator entries", MAX_REPLICAS, MAC_BYTES)?;
            let macs = (0..n).map(|_| get_mac(r)).collect::<Result<Vec<_>, _>>()?;
            Ok(Auth::Macs(Arc::from(macs)))
        }
        1 => Ok(Auth::Signed(get_sig(r)?)),
        t => Err(r.invalid(format!("bad auth tag {t}"))),
    }
}

/// A batch: its timestamp (µs), then its requests.
fn put_batch(w: &mut Writer, b: &Batch) {
    w.u64(b.timestamp.as_micros());
    put_requests(w, b);
}

fn get_batch(r: &mut Reader<'_>) -> Result<Batch, WireError> {
    let timestamp = Time(r.u64()?);
    Ok(Batch::new(timestamp, get_requests(r)?))
}

fn put_requests(w: &mut Writer, b: &[Command]) {
    put_count(w, b.len());
    for c in b {
        w.u64(c.client.0).u64(c.seq).bytes(&c.op);
    }
}

fn get_requests(r: &mut Reader<'_>) -> Result<Requests, WireError> {
    let n = get_count(r, "requests in a batch", MAX_WIRE_COMMANDS, 20)?;
    let mut commands = Vec::with_capacity(n);
    for _ in 0..n {
        commands.push(Command { client: ClientId(r.u64()?), seq: r.u64()?, op: r.bytes()? });
    }
    Ok(Arc::from(commands))
}

fn put_vote(w: &mut Writer, v: &Vote) {
    w.u64(v.view).u64(v.seq);
    put_digest(w, &v.digest);
    w.u64(v.replica.0);
    put_auth(w, &v.auth);
}

fn get_vote(r: &mut Reader<'_>) -> Result<Vote, WireError> {
    Ok(Vote {
        view: r.u64()?,
        seq: r.u64()?,
        digest: get_digest(r)?,
        replica: NodeId(r.u64()?),
        auth: get_auth(r)?,
    })
}

fn put_checkpoint(w: &mut Writer, c: &Checkpoint) {
    w.u64(c.seq);
    put_digest(w, &c.state);
    w.u64(c.replica.0);
    put_sig(w, &c.sig);
}

fn get_checkpoint(r: &mut Reader<'_>) -> Result<Checkpoint, WireError> {
    Ok(Checkpoint {
        seq: r.u64()?,
        state: get_digest(r)?,
        replica: NodeId(r.u64()?),
        sig: get_sig(r)?,
    })
}

fn put_stable(w: &mut Writer, s: &StableCheckpoint) {
    w.u64(s.seq);
    put_digest(w, &s.state);
    put_count(w, s.proof.len());
    for c in s.proof.iter() {
        put_checkpoint(w, c);
    }
}

fn get_stable(r: &mut Reader<'_>) -> Result<StableCheckpoint, WireError> {
    let seq = r.u64()?;
    let state = get_digest(r)?;
    let n = get_count(r, "checkpoints in a proof", MAX_REPLICAS, 112)?;
    let proof = (0..n).map(|_| get_checkpoint(r)).collect::<Result<Vec<_>, _>>()?;
    Ok(StableCheckpoint { seq, state, proof: Arc::from(proof) })
}

fn put_snapshot_checkpoint(w: &mut Writer, s: &SnapshotCheckpoint) {
    put_manifest(w, &s.manifest);
    put_stable(w, &s.proof);
}

fn get_snapshot_checkpoint(r: &mut Reader<'_>) -> Result<SnapshotCheckpoint, WireError> {
    let manifest = Arc::new(get_manifest(r)?);
    Ok(SnapshotCheckpoint { manifest, proof: get_stable(r)? })
}

fn put_manifest(w: &mut Writer, m: &SnapshotManifest) {
    w.u64(m.seq);
    put_digest(w, &m.chain);
    w.u64(m.position).u64(m.agreed_time.as_micros());
    put_count(w, m.last_executed.len());
    for (client, seq) in m.last_executed.iter() {
        w.u64(client.0).u64(*seq);
    }
    w.u64(m.size_bytes);
    put_digest(w, &m.sha256);
}

fn get_manifest(r: &mut Reader<'_>) -> Result<SnapshotManifest, WireError> {
    let seq = r.u64()?;
    let chain = get_digest(r)?;
    let position = r.u64()?;
    let agreed_time = Time(r.u64()?);
    let n = get_count(r, "clients in a snapshot manifest", MAX_WIRE_CLIENTS, 16)?;
    let mut last_executed = Vec::with_capacity(n);
    for _ in 0..n {
        last_executed.push((ClientId(r.u64()?), r.u64()?));
    }
    Ok(SnapshotManifest {
        seq,
        chain,
        position,
        agreed_time,
        last_executed: Arc::from(last_executed),
        size_bytes: r.u64()?,
        sha256: get_digest(r)?,
    })
}

fn put_view_change(w: &mut Writer, vc: &ViewChange) {
    w.u64(vc.view).u64(vc.replica.0);
    put_stable(w, &vc.stable);
    put_count(w, vc.prepared.len());
    for p in &vc.prepared {
        w.u64(p.seq).u64(p.view);
        put_digest(w, &p.digest);
        put_batch(w, &p.batch);
    }
    put_count(w, vc.pre_prepared.len());
    for q in &vc.pre_prepared {
        w.u64(q.seq).u64(q.view);
        put_digest(w, &q.digest);
    }
    put_sig(w, &vc.sig);
}

fn get_view_change(r: &mut Reader<'_>) -> Result<ViewChange, WireError> {
    let view = r.u64()?;
    let replica = NodeId(r.u64()?);
    let stable = get_stable(r)?;
    let n = get_count(r, "prepared entries", MAX_WIRE_ITEMS, 52)?;
    let mut prepared = Vec::with_capacity(n);
    for _ in 0..n {
        prepared.push(PreparedEntry {
            seq: r.u64()?,
            view: r.u64()?,
            digest: get_digest(r)?,
            batch: get_batch(r)?,
        });
    }
    let n = get_count(r, "pre-prepared entries", MAX_WIRE_ITEMS, 48)?;
    let mut pre_prepared = Vec::with_capacity(n);
    for _ in 0..n {
        pre_prepared.push(PrePreparedEntry {
            seq: r.u64()?,
            view: r.u64()?,
            digest: get_digest(r)?,
        });
    }
    Ok(ViewChange { view, replica, stable, prepared, pre_prepared, sig: get_sig(r)? })
}

fn put_new_view(w: &mut Writer, nv: &NewView) {
    w.u64(nv.view).u64(nv.replica.0);
    put_count(w, nv.view_changes.len());
    for vc in &nv.view_changes {
        put_view_change(w, vc);
    }
    w.u64(nv.checkpoint_seq);
    put_digest(w, &nv.checkpoint_state);
    put_count(w, nv.pre_prepares.len());
    for (seq, d) in &nv.pre_prepares {
        w.u64(*seq);
        put_digest(w, d);
    }
    put_sig(w, &nv.sig);
}

fn get_new_view(r: &mut Reader<'_>) -> Result<NewView, WireError> {
    let view = r.u64()?;
    let replica = NodeId(r.u64()?);
    let n = get_count(r, "view changes", MAX_REPLICAS, 128)?;
    let view_changes =
        (0..n).map(|_| get_view_change(r).map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
    let checkpoint_seq = r.u64()?;
    let checkpoint_state = get_digest(r)?;
    let n = get_count(r, "re-proposals", MAX_WIRE_ITEMS, 40)?;
    let mut pre_prepares = Vec::with_capacity(n);
    for _ in 0..n {
        pre_prepares.push((r.u64()?, get_digest(r)?));
    }
    Ok(NewView {
        view,
        replica,
        view_changes,
        checkpoint_seq,
        checkpoint_state,
        pre_prepares,
        sig: get_sig(r)?,
    })
}

// ----- messages -------------------------------------------------------------

fn encode(msg: &Message) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(WIRE_VERSION);
    match msg {
        Message::PrePrepare(p) => {
            w.u8(1).u64(p.view).u64(p.seq);
            put_digest(&mut w, &p.digest);
            put_batch(&mut w, &p.batch);
            put_auth(&mut w, &p.auth);
        }
        Message::Prepare(v) => {
            w.u8(2);
            put_vote(&mut w, v);
        }
        Message::Commit(v) => {
            w.u8(3);
            put_vote(&mut w, v);
        }
        Message::Checkpoint(c) => {
            w.u8(4);
            put_checkpoint(&mut w, c);
        }
        Message::ViewChange(vc) => {
            w.u8(5);
            put_view_change(&mut w, vc);
        }
        Message::NewView(nv) => {
            w.u8(6);
            put_new_view(&mut w, nv);
        }
        Message::Status { view, active, executed, auth } => {
            w.u8(7).u64(*view).bool(*active).u64(*executed);
            put_raw(&mut w, auth);
        }
        Message::Forward { requests, auth } => {
            w.u8(8);
            put_requests(&mut w, requests);
            put_raw(&mut w, auth);
        }
        Message::Fetch { from, upto, auth } => {
            w.u8(9).u64(*from).u64(*upto);
            put_raw(&mut w, auth);
        }
        Message::State { first, batches, manifest } => {
            // Tag 16: with the sender's manifest at a snapshot checkpoint
            // (tag 10, without, keeps its earlier format).
            w.u8(if manifest.is_some() { 16 } else { 10 }).u64(*first);
            put_count(&mut w, batches.len());
            for b in batches.iter() {
                put_batch(&mut w, b);
            }
            if let Some(m) = manifest {
                put_manifest(&mut w, m);
            }
        }
        Message::ReadQuery { nonce, auth } => {
            w.u8(11).u64(*nonce);
            put_raw(&mut w, auth);
        }
        Message::ReadIndex { nonce, seq, auth } => {
            w.u8(12).u64(*nonce).u64(*seq);
            put_raw(&mut w, auth);
        }
        Message::SnapshotOffer(s) => {
            w.u8(13);
            put_snapshot_checkpoint(&mut w, s);
        }
        Message::SnapshotFetch { seq, offset, auth } => {
            w.u8(14).u64(*seq).u64(*offset);
            put_raw(&mut w, auth);
        }
        Message::SnapshotChunk { seq, offset, data, auth } => {
            assert!(data.len() <= MAX_SNAPSHOT_CHUNK, "the node's config bounds chunks");
            w.u8(15).u64(*seq).u64(*offset).bytes(data);
            put_raw(&mut w, auth);
        }
        Message::Suspect(s) => {
            w.u8(17).u64(s.view).u64(s.replica.0);
            put_sig(&mut w, &s.sig);
        }
    }
    w.finish()
}

fn decode(bytes: &Bytes) -> Result<Message, WireError> {
    let mut r = Reader::shared("pbft message", bytes);
    let version = r.u8()?;
    if version != WIRE_VERSION {
        return Err(r.invalid(format!("unsupported wire version {version}")));
    }
    let msg = match r.u8()? {
        1 => Message::PrePrepare(PrePrepare {
            view: r.u64()?,
            seq: r.u64()?,
            digest: get_digest(&mut r)?,
            batch: get_batch(&mut r)?,
            auth: get_auth(&mut r)?,
        }),
        2 => Message::Prepare(get_vote(&mut r)?),
        3 => Message::Commit(get_vote(&mut r)?),
        4 => Message::Checkpoint(get_checkpoint(&mut r)?),
        5 => Message::ViewChange(Arc::new(get_view_change(&mut r)?)),
        6 => Message::NewView(Arc::new(get_new_view(&mut r)?)),
        7 => Message::Status {
            view: r.u64()?,
            active: r.bool()?,
            executed: r.u64()?,
            auth: get_mac(&mut r)?,
        },
        8 => Message::Forward { requests: get_requests(&mut r)?, auth: get_mac(&mut r)? },
        9 => Message::Fetch { from: r.u64()?, upto: r.u64()?, auth: get_mac(&mut r)? },
        tag @ (10 | 16) => {
            let first = r.u64()?;
            let n = get_count(&mut r, "batches", MAX_WIRE_ITEMS, 4)?;
            let batches = (0..n).map(|_| get_batch(&mut r)).collect::<Result<Vec<_>, _>>()?;
            let manifest = if tag == 16 { Some(Arc::new(get_manifest(&mut r)?)) } else { None };
            Message::State { first, batches: Arc::from(batches), manifest }
        }
        11 => Message::ReadQuery { nonce: r.u64()?, auth: get_mac(&mut r)? },
        12 => Message::ReadIndex { nonce: r.u64()?, seq: r.u64()?, auth: get_mac(&mut r)? },
        17 => Message::Suspect(Suspect {
            view: r.u64()?,
            replica: NodeId(r.u64()?),
            sig: get_sig(&mut r)?,
        }),
        13 => Message::SnapshotOffer(Arc::new(get_snapshot_checkpoint(&mut r)?)),
        14 => Message::SnapshotFetch { seq: r.u64()?, offset: r.u64()?, auth: get_mac(&mut r)? },
        15 => {
            let (seq, offset) = (r.u64()?, r.u64()?);
            let data = r.bytes()?;
            if data.len() > MAX_SNAPSHOT_CHUNK {
                return Err(r.invalid(format!(
                    "a snapshot chunk of {} bytes (at most {MAX_SNAPSHOT_CHUNK})",
                    data.len()
                )));
            }
            Message::SnapshotChunk { seq, offset, data, auth: get_mac(&mut r)? }
        }
        t => return Err(r.invalid(format!("unknown message tag {t}"))),
    };
    r.finish()?;
    Ok(msg)
}

// ----- journal records ------------------------------------------------------

fn encode_write(write: &Write) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(WIRE_VERSION);
    match write {
        Write::View { view, changing } => {
            w.u8(1).u64(*view).bool(*changing);
        }
        Write::PrePrepared { seq, view, digest, batch } => {
            w.u8(2).u64(*seq).u64(*view);
            put_digest(&mut w, digest);
            put_batch(&mut w, batch);
        }
        Write::Prepared { seq, view, digest } => {
            w.u8(3).u64(*seq).u64(*view);
            put_digest(&mut w, digest);
        }
        Write::Executed { seq, batch } => {
            w.u8(4).u64(*seq);
            put_batch(&mut w, batch);
        }
        Write::Stable(s) => {
            w.u8(5);
            put_stable(&mut w, s);
        }
        Write::NewView(nv) => {
            w.u8(6);
            put_new_view(&mut w, nv);
        }
        Write::Snapshot(s) => {
            w.u8(7);
            put_snapshot_checkpoint(&mut w, s);
        }
    }
    w.finish()
}

/// The record that starts a restatement of `records` records.
fn encode_restatement(records: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(WIRE_VERSION).u8(RESTATEMENT_TAG).u64(records);
    w.finish()
}

/// The kind tag of a [`Record::Restatement`] (the core's writes use 1..=7).
const RESTATEMENT_TAG: u8 = 8;

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Record {
    /// One of the core's writes.
    Write(Write),
    /// The next `records` records are [`Durable::restate`]: applied to
    /// [`Durable::default`] they give the whole durable state as of this
    /// record, so once all of them are on disk every record before this
    /// one is obsolete (see the module doc, "Compaction").
    Restatement {
        /// How many records follow.
        records: u64,
    },
}

fn decode_record(bytes: &Bytes) -> Result<Record, WireError> {
    let mut r = Reader::shared("pbft journal record", bytes);
    let version = r.u8()?;
    if version != WIRE_VERSION {
        return Err(r.invalid(format!("unsupported record version {version}")));
    }
    let write = match r.u8()? {
        1 => Write::View { view: r.u64()?, changing: r.bool()? },
        2 => Write::PrePrepared {
            seq: r.u64()?,
            view: r.u64()?,
            digest: get_digest(&mut r)?,
            batch: get_batch(&mut r)?,
        },
        3 => Write::Prepared { seq: r.u64()?, view: r.u64()?, digest: get_digest(&mut r)? },
        4 => Write::Executed { seq: r.u64()?, batch: get_batch(&mut r)? },
        5 => Write::Stable(get_stable(&mut r)?),
        6 => Write::NewView(Arc::new(get_new_view(&mut r)?)),
        7 => Write::Snapshot(Arc::new(get_snapshot_checkpoint(&mut r)?)),
        RESTATEMENT_TAG => {
            let records = r.u64()?;
            r.finish()?;
            return Ok(Record::Restatement { records });
        }
        t => return Err(r.invalid(format!("unknown record tag {t}"))),
    };
    r.finish()?;
    Ok(Record::Write(write))
}

// ----- recovery ---------------------------------------------------------------

/// What the journal replays to.
struct Replay {
    durable: Durable,
    /// The restatement replayed from (0: none).
    restated_at: u64,
    /// A restatement whose records do not all follow it (a crash cut it):
    /// the replay stopped before it.
    torn_restatement: Option<u64>,
}

/// Replays the journal: its records in order through [`Durable::apply`],
/// starting afresh from [`Durable::default`] at each complete restatement
/// (records before the latest one may be left over from a compaction
/// whose segments were not deleted yet), and stopping before a restatement
/// that is not complete.
fn replay_journal(wal: &synod_storage::Wal) -> Result<Replay, NodeError> {
    let mut replay = Replay { durable: Durable::default(), restated_at: 0, torn_restatement: None };
    if wal.last_index() == 0 {
        return Ok(replay);
    }
    for item in wal.entries(wal.first_index()..=wal.last_index())? {
        let (index, payload) = item?;
        match decode_record(&payload)? {
            Record::Write(w) => replay.durable.apply(&w),
            Record::Restatement { records } if records <= wal.last_index() - index => {
                replay.durable = Durable::default();
                replay.restated_at = index;
            }
            Record::Restatement { .. } => {
                replay.torn_restatement = Some(index);
                break;
            }
        }
    }
    Ok(replay)
}

/// Whether two durable states are the same but for the order of their Q
/// lists (a restatement lists each Q in view order), for which 2f+1
/// signatures prove a stable checkpoint they agree on, and for empty slots
/// (a prepared write without its pre-prepare leaves one).
fn same_durable(a: &Durable, b: &Durable) -> bool {
    use synod_pbft::storage::DurableSlot;
    let slots = |d: &Durable| {
        let held = |s: &&DurableSlot| {
            s.latest.is_some() || s.prepared.is_some() || !s.pre_prepared.is_empty()
        };
        d.slots
            .iter()
            .filter(|(_, s)| held(s))
            .map(|(seq, s)| {
                let mut q: Vec<_> = s.pre_prepared.iter().map(|e| (e.view, e.digest.0)).collect();
                q.sort_unstable();
                (*seq, s.latest.clone(), s.prepared.clone(), q)
            })
            .collect::<Vec<_>>()
    };
    (a.view, a.changing, a.stable.seq, a.stable.state)
        == (b.view, b.changing, b.stable.seq, b.stable.state)
        && a.snapshot == b.snapshot
        && a.executed == b.executed
        && a.new_view == b.new_view
        && slots(a) == slots(b)
}

// ----- the node protocol ------------------------------------------------------

/// PBFT has no membership changes: the driver refuses them.
impl Reconfigure for PbftNode {}

impl NodeProtocol for PbftNode {
    const NAME: &'static str = "pbft";
    const AGREED_CLOCK: bool = true;
    type HardState = PbftHardState;

    /// The core's configuration for `voters` (n = 3f+1, at least 4), with
    /// this node's real keys loaded from `settings.pbft_keys` (required:
    /// a node never derives keys from a seed). Timers follow the node's
    /// timeouts: a backup waits twice the election timeout's upper bound
    /// for a request before it moves to the next view; STATUS goes out
    /// every heartbeat interval. δ of the agreed clock is
    /// `settings.max_clock_skew` (`timeouts.max_clock_skew_ms`); snapshots
    /// are taken every `settings.pbft_snapshot_interval` sequence numbers
    /// (`pbft_snapshot_interval`; default the core's, 1024).
    fn config(voters: Vec<NodeId>, settings: &ProtocolSettings) -> Result<Config, String> {
        if voters.len() < 4 || !(voters.len() - 1).is_multiple_of(3) {
            return Err(format!(
                "members: PBFT needs n = 3f+1 replicas, at least 4 ({} listed)",
                voters.len()
            ));
        }
        let Some((me, path)) = &settings.pbft_keys else {
            return Err("pbft_keys: a PBFT node needs its key file (`synod pbft-keys`)".into());
        };
        let loaded = crate::pbft_keys::load(path, *me, &voters)?;
        let mut c = Config::new(voters);
        c.loaded = Some(loaded);
        c.view_change_timeout = (2 * settings.election_timeout_max).max(Duration::from_millis(1));
        c.max_view_change_timeout = c.max_view_change_timeout.max(c.view_change_timeout);
        c.status_interval = settings.heartbeat_interval.max(Duration::from_millis(1));
        c.max_clock_skew = settings.max_clock_skew;
        // The driver proposes up to this many requests at once; they queue
        // at the primary (and wait at backups) until ordered.
        c.max_pending_requests = c.max_pending_requests.max(4 * MAX_BATCH_COMMANDS);
        if let Some(interval) = settings.pbft_snapshot_interval {
            c.snapshot_interval = interval;
        }
        c.validate().map_err(|e| match settings.pbft_snapshot_interval {
            Some(_) if e.contains("snapshot_interval") => format!("pbft_snapshot_interval: {e}"),
            _ => e,
        })?;
        if c.snapshot_chunk_bytes > MAX_SNAPSHOT_CHUNK {
            return Err(format!(
                "snapshot chunks of {} bytes exceed the wire's {MAX_SNAPSHOT_CHUNK}",
                c.snapshot_chunk_bytes
            ));
        }
        Ok(c)
    }

    fn encode_message(msg: &Message) -> Vec<u8> {
        encode(msg)
    }

    fn decode_message(bytes: &Bytes) -> Result<Message, WireError> {
        decode(bytes)
    }

    fn recover_durable(
        disk: &mut Disk,
        saved: Option<&[u8]>,
    ) -> Result<(PbftHardState, Durable), NodeError> {
        let wal = &disk.wal;
        let (saved, synced_record) = match saved {
            Some(bytes) => (true, PbftHardState::decode(bytes)?),
            None if wal.last_index() > 0 => {
                return Err(NodeError::Corrupt(format!(
                    "the log in {} holds records but there is no PBFT hard state (is this \
                     data directory another protocol's?)",
                    wal.dir().display()
                )));
            }
            None => (false, 0),
        };
        const SYNCED_FACT: &str = "the last journal record the hard state records as synced \
                                   (its messages possibly sent)";
        disk.check_log_reaches("record", wal.last_index(), synced_record, SYNCED_FACT)?;
        let replay = replay_journal(wal)?;
        if let Some(torn) = replay.torn_restatement {
            // Every record before it is whole, and the restatement only
            // restated them: nothing is lost, unless the hard state vouches
            // for records from it on (then writes after it are gone too).
            disk.check_log_reaches("record", torn - 1, synced_record, SYNCED_FACT)?;
            tracing::warn!(
                record = torn,
                "cut off a restatement a crash interrupted (the records before it hold the \
                 same state)"
            );
            disk.wal.truncate_suffix(torn)?;
        }
        let wal = &disk.wal;
        if wal.first_index() > 1 && replay.restated_at == 0 {
            return Err(NodeError::Corrupt(format!(
                "the journal in {} starts at record {} but holds no complete restatement: \
                 the records before it are missing",
                wal.dir().display(),
                wal.first_index()
            )));
        }
        let hard = PbftHardState {
            saved,
            next_record: wal.last_index() + 1,
            synced_record,
            mirror: replay.durable.clone(),
            restated_at: replay.restated_at,
        };
        Ok((hard, replay.durable))
    }

    /// A failed take needs nothing from the core: this replica just sends
    /// no CHECKPOINT at that snapshot's sequence number (the others' 2f+1
    /// still make it stable), and the entry the core keeps for the take
    /// goes when a later take is reported (the core drops pending takes
    /// below a reported one). It does not adopt that snapshot either (it
    /// holds none): its history stays in its journal until the next
    /// snapshot it takes is adopted.
    fn snapshot_failed(&mut self, now: Time, index: u64) {
        let _ = (now, index);
    }

    fn persist(
        disk: &mut Disk,
        hard: &mut PbftHardState,
        writes: &[Write],
    ) -> Result<(), NodeError> {
        if writes.is_empty() {
            return Ok(());
        }
        // Before the first record (the directory is PBFT's), and at a view
        // change or a stable checkpoint (rare: the watermark moves on).
        if !hard.saved || writes.iter().any(|w| matches!(w, Write::View { .. } | Write::Stable(_)))
        {
            hard.save(disk)?;
        }
        let records: Vec<Vec<u8>> = writes.iter().map(encode_write).collect();
        hard.append(disk, &records)?;
        for w in writes {
            hard.mirror.apply(w);
        }
        if writes.iter().any(|w| matches!(w, Write::Snapshot(_))) {
            hard.compact(disk)?;
        }
        Ok(())
    }

    fn proxy_client(&self) -> Option<ClientId> {
        self.config().loaded.as_ref().and_then(|l| l.proxy.as_ref()).map(|p| p.0)
    }

    fn seal(&self, command: Command) -> Command {
        match self.config().loaded.as_ref().and_then(|l| l.proxy.as_ref()) {
            Some((client, key)) if *client == command.client => sign_command(key, command),
            _ => command,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use synod_pbft::auth::Keyring;

    fn batch(seed: u64) -> Batch {
        Batch::new(
            Time(1_700_000_000_000_000 + seed),
            vec![
                Command::new(ClientId(7), seed, Bytes::from(vec![seed as u8; 70])),
                Command::new(ClientId(8), seed + 1, Bytes::new()),
            ],
        )
    }

    fn d(x: u8) -> Digest {
        Digest::of(&[x])
    }

    fn sig(x: u8) -> Signature {
        Keyring::derive(1, 0, 4).sign(&d(x))
    }

    fn macs() -> Auth {
        Auth::Macs(Arc::from(vec![
            [1u8; MAC_BYTES],
            [0; MAC_BYTES],
            [3; MAC_BYTES],
            [4; MAC_BYTES],
        ]))
    }

    fn stable() -> StableCheckpoint {
        let cp = |r| Checkpoint { seq: 128, state: d(9), replica: NodeId(r), sig: sig(r as u8) };
        StableCheckpoint { seq: 128, state: d(9), proof: Arc::from(vec![cp(1), cp(2), cp(3)]) }
    }

    fn view_change() -> ViewChange {
        ViewChange {
            view: 3,
            replica: NodeId(2),
            stable: stable(),
            prepared: vec![PreparedEntry { seq: 130, view: 2, digest: d(1), batch: batch(5) }],
            pre_prepared: vec![
                PrePreparedEntry { seq: 130, view: 2, digest: d(1) },
                PrePreparedEntry { seq: 131, view: 1, digest: d(2) },
            ],
            sig: sig(7),
        }
    }

    fn snapshot_checkpoint() -> Arc<SnapshotCheckpoint> {
        let manifest = SnapshotManifest {
            seq: 128,
            chain: d(10),
            position: 300,
            agreed_time: Time(1_700_000_000_000_128),
            last_executed: Arc::from(vec![(ClientId(7), 5), (ClientId(8), 6)]),
            size_bytes: 4096,
            sha256: d(11),
        };
        Arc::new(SnapshotCheckpoint { manifest: Arc::new(manifest), proof: stable() })
    }

    fn new_view() -> NewView {
        NewView {
            view: 3,
            replica: NodeId(4),
            view_changes: vec![Arc::new(view_change()), Arc::new(view_change())],
            checkpoint_seq: 128,
            checkpoint_state: d(9),
            pre_prepares: vec![(129, Digest::ZERO), (130, d(1))],
            sig: sig(8),
        }
    }

    fn all_messages() -> Vec<Message> {
        let vote = |auth| Vote { view: 2, seq: 9, digest: d(3), replica: NodeId(3), auth };
        vec![
            Message::PrePrepare(PrePrepare {
                view: 2,
                seq: 9,
                digest: d(3),
                batch: batch(1),
                auth: macs(),
            }),
            Message::PrePrepare(PrePrepare {
                view: 2,
                seq: 10,
                digest: Digest::ZERO,
                batch: Batch::null(),
                auth: Auth::Signed(sig(1)),
            }),
            Message::Prepare(vote(macs())),
            Message::Commit(vote(Auth::Signed(sig(2)))),
            Message::Checkpoint(stable().proof[0].clone()),
            Message::ViewChange(Arc::new(view_change())),
            Message::NewView(Arc::new(new_view())),
            Message::Status { view: 4, active: false, executed: 77, auth: [5; MAC_BYTES] },
            Message::Forward { requests: batch(3).requests, auth: [6; MAC_BYTES] },
            Message::Fetch { from: 3, upto: 256, auth: [7; MAC_BYTES] },
            Message::State {
                first: 3,
                batches: Arc::from(vec![batch(1), Batch::null()]),
                manifest: None,
            },
            Message::State {
                first: 129,
                batches: Arc::from(vec![batch(2)]),
                manifest: Some(snapshot_checkpoint().manifest.clone()),
            },
            Message::ReadQuery { nonce: 11, auth: [8; MAC_BYTES] },
            Message::ReadIndex { nonce: 11, seq: 40, auth: [9; MAC_BYTES] },
            Message::Suspect(Suspect { view: 4, replica: NodeId(2), sig: sig(3) }),
            Message::SnapshotOffer(snapshot_checkpoint()),
            Message::SnapshotFetch { seq: 128, offset: 1 << 18, auth: [10; MAC_BYTES] },
            Message::SnapshotChunk {
                seq: 128,
                offset: 1 << 18,
                data: Bytes::from(vec![0xa5; 300]),
                auth: [11; MAC_BYTES],
            },
            Message::SnapshotChunk {
                seq: 128,
                offset: 4096,
                data: Bytes::new(),
                auth: [0; MAC_BYTES],
            },
        ]
    }

    #[test]
    fn every_message_round_trips_and_every_truncation_is_an_error() {
        crate::glue::checks::codec_round_trips_and_refuses_truncations::<PbftNode>(&all_messages());
    }

    #[test]
    fn counts_beyond_the_bounds_or_the_bytes_are_refused() {
        let mut w = Writer::new();
        w.u8(WIRE_VERSION).u8(10).u64(1).u32(MAX_WIRE_ITEMS + 1);
        let err = decode(&Bytes::from(w.finish())).expect_err("too many batches");
        assert!(err.reason.contains("at most"), "{err}");
        let mut w = Writer::new();
        w.u8(WIRE_VERSION).u8(8).u32(1000);
        let err = decode(&Bytes::from(w.finish())).expect_err("no room");
        assert!(err.reason.contains("do not fit"), "{err}");
        let mut bytes = encode(&all_messages()[0]);
        bytes[0] = 1;
        let err = decode(&Bytes::from(bytes)).expect_err("version");
        assert!(err.reason.contains("wire version 1"), "{err}");
        // A snapshot chunk above the bound, and a manifest's client table
        // above its bound or the bytes left.
        let mut w = Writer::new();
        w.u8(WIRE_VERSION).u8(15).u64(128).u64(0).bytes(&vec![0; MAX_SNAPSHOT_CHUNK + 1]);
        put_raw(&mut w, &[0; MAC_BYTES]);
        let err = decode(&Bytes::from(w.finish())).expect_err("chunk too large");
        assert!(err.reason.contains("snapshot chunk"), "{err}");
        for (count, why) in [(MAX_WIRE_CLIENTS + 1, "at most"), (1000, "do not fit")] {
            let mut w = Writer::new();
            w.u8(WIRE_VERSION).u8(13).u64(128);
            put_digest(&mut w, &d(1));
            w.u64(300).u64(0).u32(count);
            let err = decode(&Bytes::from(w.finish())).expect_err("too many clients");
            assert!(err.reason.contains(why), "{err}");
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut with_version = vec![WIRE_VERSION];
            with_version.extend_from_slice(&data);
            let _ = decode(&Bytes::from(data.clone()));
            let _ = decode(&Bytes::from(with_version.clone()));
            let _ = decode_record(&Bytes::from(with_version));
            let _ = PbftHardState::decode(&data);
        }

        #[test]
        fn mutated_messages_never_panic(
            which in any::<usize>(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let messages = all_messages();
            let mut bytes = encode(&messages[which % messages.len()]);
            for (at, byte) in flips {
                let i = at % bytes.len();
                bytes[i] = byte;
            }
            let _ = decode(&Bytes::from(bytes));
        }

        #[test]
        fn mutated_records_never_panic(
            which in any::<usize>(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let writes: Vec<Write> = all_writes().into_iter().flatten().collect();
            let mut bytes = encode_write(&writes[which % writes.len()]);
            for (at, byte) in flips {
                let i = at % bytes.len();
                bytes[i] = byte;
            }
            let _ = decode_record(&Bytes::from(bytes));
        }
    }

    fn all_writes() -> Vec<Vec<Write>> {
        vec![
            vec![Write::View { view: 0, changing: false }],
            vec![
                Write::PrePrepared { seq: 1, view: 0, digest: d(1), batch: batch(1) },
                Write::Prepared { seq: 1, view: 0, digest: d(1) },
            ],
            vec![Write::Executed { seq: 1, batch: batch(1) }],
            vec![
                Write::PrePrepared { seq: 2, view: 0, digest: d(2), batch: batch(2) },
                Write::View { view: 1, changing: true },
            ],
            vec![Write::NewView(Arc::new(new_view())), Write::View { view: 3, changing: false }],
            vec![
                Write::PrePrepared { seq: 2, view: 3, digest: d(4), batch: batch(4) },
                Write::Prepared { seq: 2, view: 3, digest: d(4) },
                Write::Executed { seq: 2, batch: batch(4) },
                Write::PrePrepared { seq: 130, view: 3, digest: d(5), batch: batch(5) },
            ],
            vec![Write::Stable(stable())],
            vec![Write::Executed { seq: 3, batch: Batch::null() }],
            // Installed from a peer (beyond the history here): the journal
            // is compacted to a restatement.
            vec![Write::Snapshot(snapshot_checkpoint())],
            vec![
                Write::Executed { seq: 129, batch: batch(6) },
                Write::PrePrepared { seq: 131, view: 3, digest: d(6), batch: batch(6) },
            ],
        ]
    }

    #[test]
    fn views_certificates_history_and_checkpoints_recover_as_written() {
        crate::glue::checks::recovery_matches_the_model::<PbftNode>(&all_writes());
    }

    #[test]
    fn every_record_round_trips() {
        let records =
            all_writes().into_iter().flatten().map(|w| (encode_write(&w), Record::Write(w)));
        let restatement = (encode_restatement(17), Record::Restatement { records: 17 });
        for (bytes, record) in records.chain([restatement]) {
            let bytes = Bytes::from(bytes);
            assert_eq!(decode_record(&bytes), Ok(record.clone()));
            for cut in 0..bytes.len() {
                assert!(decode_record(&bytes.slice(..cut)).is_err(), "{record:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn another_protocols_data_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut disk, _) = Disk::open(dir.path()).expect("open");
        // Raft's hard state starts with its version byte; Paxos's with "paxos".
        for other in [&[1u8, 3, 0, 0][..], b"paxos\x01"] {
            let err = PbftNode::recover_durable(&mut disk, Some(other)).expect_err("refused");
            assert!(err.to_string().contains("another protocol"), "{err}");
        }
        disk.wal.append(1, &[b"raft entry"]).expect("append");
        let err = PbftNode::recover_durable(&mut disk, None).expect_err("log without hard state");
        assert!(err.to_string().contains("no PBFT hard state"), "{err}");
        assert!(PbftHardState::decode(&PbftHardState::default().encode()).is_ok());
    }

    /// A journal of `rounds` (each synced), the hard state saved with the
    /// view change of the last one.
    fn journaled(dir: &std::path::Path, rounds: &[Vec<Write>]) -> PbftHardState {
        let (mut disk, saved) = Disk::open(dir).expect("open");
        let (mut hard, _) =
            PbftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        for round in rounds {
            PbftNode::persist(&mut disk, &mut hard, round).expect("persist");
            disk.sync().expect("sync");
        }
        hard
    }

    /// Records 1..=5: a view, four executed batches; then a view change
    /// (its save vouches for records 1..=5) in record 6.
    fn five_then_a_view_change() -> Vec<Vec<Write>> {
        let mut rounds = vec![vec![Write::View { view: 0, changing: false }]];
        rounds.extend((1..=4).map(|seq| vec![Write::Executed { seq, batch: batch(seq) }]));
        rounds.push(vec![Write::View { view: 1, changing: true }]);
        rounds
    }

    #[test]
    fn a_journal_cut_below_the_synced_record_refuses_to_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hard = journaled(dir.path(), &five_then_a_view_change());
        assert_eq!((hard.synced_record, hard.next_record), (5, 7));
        // Records 5 and 6 are lost: 5 torn, 6 never written back.
        let cut = crate::disk::test_support::tear_log_from(dir.path(), 5);
        let (mut disk, saved) = Disk::open(dir.path()).expect("the log itself opens");
        assert_eq!(disk.torn_tail().expect("the damaged record was cut").offset, cut.1);
        let err = PbftNode::recover_durable(&mut disk, saved.as_deref()).expect_err("refused");
        crate::disk::test_support::assert_lost_log(
            &err,
            dir.path(),
            &cut,
            &["ends at record 4", "record 5 is lost"],
        );
    }

    #[test]
    fn a_journal_cut_above_the_synced_record_is_cut_and_recovery_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        journaled(dir.path(), &five_then_a_view_change());
        crate::disk::test_support::tear_log_from(dir.path(), 6);
        let (mut disk, saved) = Disk::open(dir.path()).expect("open");
        assert!(disk.torn_tail().is_some(), "the damaged record was cut");
        let (hard, durable) =
            PbftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        assert_eq!((hard.synced_record, hard.next_record), (5, 6));
        assert_eq!(durable.view, 0, "the view change was lost, as it may be");
    }

    // ----- compaction ----------------------------------------------------------

    fn small_segments() -> synod_storage::WalOptions {
        synod_storage::WalOptions { segment_size_bytes: 1024, ..Default::default() }
    }

    /// The stable checkpoint at `seq`.
    fn stable_at(seq: u64) -> StableCheckpoint {
        let state = d(seq as u8);
        let cp = |r| Checkpoint { seq, state, replica: NodeId(r), sig: sig(r as u8) };
        StableCheckpoint { seq, state, proof: Arc::from(vec![cp(1), cp(2), cp(3)]) }
    }

    /// The snapshot adopted at `seq` (proved by [`stable_at`]).
    fn adopted_at(seq: u64) -> Write {
        let manifest = SnapshotManifest {
            seq,
            chain: d(100 + seq as u8),
            position: 2 * seq,
            agreed_time: Time(1_700_000_000_000_000 + seq),
            last_executed: Arc::from(vec![(ClientId(7), seq), (ClientId(8), seq + 1)]),
            size_bytes: 4096,
            sha256: d(200 + seq as u8),
        };
        Write::Snapshot(Arc::new(SnapshotCheckpoint {
            manifest: Arc::new(manifest),
            proof: stable_at(seq),
        }))
    }

    /// What a replica writes ordering and executing sequence numbers
    /// `1..=last`, one round each: pre-prepare, prepare, execution; a
    /// stable checkpoint every 4; a view change at 6 (entered at 7); the
    /// snapshot adopted at each of `snapshots`, in the round after its
    /// checkpoint's. Each round of the result is one `persist`.
    fn ordering_rounds(last: u64, snapshots: &[u64]) -> Vec<Vec<Write>> {
        let mut rounds = vec![vec![Write::View { view: 0, changing: false }]];
        for seq in 1..=last {
            let view = if seq > 6 { 1 } else { 0 };
            let digest = d(seq as u8);
            let mut round = vec![
                Write::PrePrepared { seq, view, digest, batch: batch(seq) },
                Write::Prepared { seq, view, digest },
                Write::Executed { seq, batch: batch(seq) },
            ];
            if seq == 6 {
                round.push(Write::View { view: 1, changing: true });
                round.push(Write::NewView(Arc::new(NewView { view: 1, ..new_view() })));
                round.push(Write::View { view: 1, changing: false });
            }
            if seq % 4 == 0 {
                round.push(Write::Stable(stable_at(seq)));
            }
            rounds.push(round);
            if snapshots.contains(&seq) {
                rounds.push(vec![adopted_at(seq)]);
            }
        }
        rounds
    }

    fn model_of(rounds: &[Vec<Write>]) -> Durable {
        let mut model = Durable::default();
        rounds.iter().flatten().for_each(|w| model.apply(w));
        model
    }

    #[test]
    fn a_snapshot_compacts_the_journal_and_recovery_gives_the_same_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rounds = ordering_rounds(14, &[8, 12]);
        let model = model_of(&rounds);
        let (next_record, restated_at) = {
            let (mut disk, saved) = Disk::open_with(dir.path(), small_segments()).expect("open");
            let (mut hard, _) =
                PbftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
            for round in &rounds {
                PbftNode::persist(&mut disk, &mut hard, round).expect("persist");
                disk.sync().expect("sync");
                disk.wait_purge().expect("purge");
            }
            assert_eq!(hard.mirror, model, "the mirror follows every write");
            assert!(hard.restated_at > 0, "compacted");
            assert!(
                disk.wal.first_index() > 1 && disk.wal.first_index() <= hard.restated_at,
                "the segments before the restatement went ({} .. {})",
                disk.wal.first_index(),
                hard.restated_at
            );
            (hard.next_record, hard.restated_at)
        };
        let (mut disk, saved) = Disk::open_with(dir.path(), small_segments()).expect("reopen");
        let (mut hard, durable) =
            PbftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        assert_eq!(durable, model);
        assert_eq!(durable.executed_base(), 12);
        assert_eq!(durable.executed.len(), 2, "the history above the snapshot");
        assert_eq!((hard.next_record, hard.restated_at), (next_record, restated_at));
        assert!(hard.synced_record < hard.next_record, "{hard:?}");
        // Record numbers go on; the journal still replays.
        let more = vec![Write::View { view: 2, changing: true }];
        PbftNode::persist(&mut disk, &mut hard, &more).expect("persist");
        disk.sync().expect("sync");
        assert_eq!(disk.wal.last_index(), next_record);
        drop(disk);
        let (mut disk, saved) = Disk::open_with(dir.path(), small_segments()).expect("reopen");
        let (hard, durable) =
            PbftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        assert_eq!(durable, model_of(&[rounds, vec![more]].concat()));
        assert_eq!(hard.synced_record, next_record - 1, "the view change's save vouched");
    }

    /// Crashes (power loss: unsynced writes kept in part, the last one
    /// torn) around a compaction: right after the snapshot's round was
    /// appended with its restatement (before its sync), after that sync
    /// while the purge runs, and after the purge, with the next round
    /// unsynced. Recovery always starts, and gives the state of every write
    /// synced plus a prefix of the rest; a restatement the crash cut is
    /// cut off, and the journal goes on after it.
    #[test]
    fn a_crash_around_a_compaction_recovers_a_persisted_state() {
        let rounds = ordering_rounds(11, &[8]);
        let at = rounds.iter().position(|r| matches!(r[..], [Write::Snapshot(_)])).expect("one");
        let mut torn_restatements = 0;
        for seed in 0..60 {
            let dir = tempfile::tempdir().expect("tempdir");
            let fs = synod_storage::FaultFs::new();
            let open = || {
                crate::disk::test_support::open_on_fault_fs_with(dir.path(), &fs, small_segments())
            };
            let (mut disk, saved) = open().expect("open");
            let (mut hard, _) =
                PbftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
            for round in &rounds[..at] {
                PbftNode::persist(&mut disk, &mut hard, round).expect("persist");
                disk.sync().expect("sync");
            }
            // Where the crash comes: 0 before the snapshot's round is
            // synced; 1 after, the purge maybe running and the next round
            // unsynced; 2 the same once the purge is done.
            let variant = seed % 3;
            PbftNode::persist(&mut disk, &mut hard, &rounds[at]).expect("persist");
            let mut synced = at;
            if variant > 0 {
                disk.sync().expect("sync");
                synced = at + 1;
                if variant == 2 {
                    disk.wait_purge().expect("purge");
                    assert!(disk.wal.first_index() > 1, "seed {seed}: purged");
                }
                PbftNode::persist(&mut disk, &mut hard, &rounds[at + 1]).expect("persist");
            }
            drop(disk);
            fs.crash(seed);
            let (mut disk, saved) = open().expect("the log opens");
            if replay_journal(&disk.wal).expect("replay").torn_restatement.is_some() {
                torn_restatements += 1;
            }
            let (mut hard, durable) = PbftNode::recover_durable(&mut disk, saved.as_deref())
                .unwrap_or_else(|e| panic!("seed {seed}: refused: {e}"));
            // The state of the synced rounds plus a prefix of the next
            // round's writes.
            let base = model_of(&rounds[..synced]);
            let mut candidates = vec![base.clone()];
            for w in &rounds[synced] {
                let mut next = candidates.last().expect("one").clone();
                next.apply(w);
                candidates.push(next);
            }
            let kept = candidates.iter().position(|c| *c == durable).unwrap_or_else(|| {
                panic!("seed {seed}: recovered a state never persisted: {durable:?}")
            });
            assert_eq!(hard.mirror, durable);
            // The journal goes on from there, and replays the same.
            let mut expected = candidates[kept].clone();
            for round in &rounds[at + 1..] {
                PbftNode::persist(&mut disk, &mut hard, round).expect("persist");
                round.iter().for_each(|w| expected.apply(w));
            }
            disk.sync().expect("sync");
            drop(disk);
            let (mut disk, saved) = open().expect("reopen");
            let (_, again) = PbftNode::recover_durable(&mut disk, saved.as_deref())
                .unwrap_or_else(|e| panic!("seed {seed}: refused after recovering: {e}"));
            assert_eq!(again, expected, "seed {seed}");
        }
        assert!(torn_restatements > 0, "some crash cut a restatement");
    }

    #[test]
    fn a_journal_purged_without_a_restatement_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut disk, saved) = Disk::open_with(dir.path(), small_segments()).expect("open");
        let (mut hard, _) =
            PbftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        for round in ordering_rounds(6, &[]) {
            PbftNode::persist(&mut disk, &mut hard, &round).expect("persist");
        }
        disk.sync().expect("sync");
        let last = disk.wal.last_index();
        disk.wal.purge_prefix(last - 1).expect("purge");
        assert!(disk.wal.first_index() > 1);
        drop(disk);
        let (mut disk, saved) = Disk::open_with(dir.path(), small_segments()).expect("reopen");
        let err = PbftNode::recover_durable(&mut disk, saved.as_deref()).expect_err("refused");
        assert!(err.to_string().contains("no complete restatement"), "{err}");
    }

    #[test]
    fn a_version_2_hard_state_still_reads_with_nothing_to_check() {
        assert_eq!(PbftHardState::decode(b"pbft\x02"), Ok(0));
        let hard = PbftHardState { synced_record: 9, ..PbftHardState::default() };
        assert_eq!(PbftHardState::decode(&hard.encode()), Ok(9));
    }

    /// Journals written before batches carried timestamps are refused with
    /// a message that says why, not replayed with made-up timestamps.
    #[test]
    fn a_data_directory_from_before_agreed_timestamps_is_refused() {
        let err = PbftHardState::decode(b"pbft\x01").expect_err("version 1");
        assert!(err.to_string().contains("no agreed timestamp"), "{err}");
        let mut record = encode_write(&Write::Executed { seq: 1, batch: batch(1) });
        record[0] = 1;
        let err = decode_record(&Bytes::from(record)).expect_err("version 1 record");
        assert!(err.reason.contains("version 1"), "{err}");
    }

    #[test]
    fn the_node_config_needs_3f_plus_1_replicas_and_real_keys() {
        let ids: Vec<NodeId> = (1..=4).map(NodeId).collect();
        let settings = ProtocolSettings::default();
        let err = <PbftNode as NodeProtocol>::config(ids[..3].to_vec(), &settings).unwrap_err();
        assert!(err.contains("3f+1"), "{err}");
        let err = <PbftNode as NodeProtocol>::config(ids.clone(), &settings).unwrap_err();
        assert!(err.starts_with("pbft_keys"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.toml");
        crate::pbft_keys::generate(&[1, 2, 3, 4])[2].write_new(&path).expect("write");
        let settings = ProtocolSettings { pbft_keys: Some((NodeId(3), path)), ..settings };
        let c = <PbftNode as NodeProtocol>::config(ids, &settings).expect("valid");
        assert_eq!(c.keyring(2).position(), 2);
        assert_eq!(c.view_change_timeout, 2 * settings.election_timeout_max);
        assert_eq!(c.max_clock_skew, Duration::from_secs(1), "the default δ");
    }

    #[test]
    fn the_clock_skew_in_the_serve_config_reaches_the_core() {
        let ids: Vec<NodeId> = (1..=4).map(NodeId).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.toml");
        crate::pbft_keys::generate(&[1, 2, 3, 4])[0].write_new(&path).expect("write");
        let members: String = (1..=4)
            .map(|i| {
                format!(
                    "[[members]]\nid = {i}\npeer_addr = \"127.0.0.1:{}\"\n\
                     client_addr = \"127.0.0.1:{}\"\n",
                    2380 + 10 * i,
                    2379 + 10 * i
                )
            })
            .collect();
        let text = format!(
            "node_id = 1\nprotocol = \"pbft\"\npbft_keys = {path:?}\ndata_dir = \"n1\"\n\
             secret_file = \"secret\"\npbft_snapshot_interval = 256\n[timeouts]\n\
             max_clock_skew_ms = 250\n{members}"
        );
        let node_config = crate::config::NodeConfig::parse(&text).expect("valid");
        let settings = node_config.protocol_settings();
        let c = <PbftNode as NodeProtocol>::config(ids.clone(), &settings).expect("valid");
        assert_eq!(c.max_clock_skew, Duration::from_millis(250));
        assert_eq!(c.snapshot_interval, 256);
        let settings = ProtocolSettings { pbft_snapshot_interval: Some(200), ..settings };
        let err = <PbftNode as NodeProtocol>::config(ids, &settings).expect_err("not a multiple");
        assert!(err.starts_with("pbft_snapshot_interval"), "{err}");
        assert_eq!(c.bug, synod_pbft::InjectedBug::None, "a node never runs a simulator bug");
        let with_bug =
            text.replace("node_id = 1\n", "node_id = 1\nbug = \"pbft-skip-clock-check\"\n");
        let err = crate::config::NodeConfig::parse(&with_bug).expect_err("no such field");
        assert!(err.contains("bug"), "{err}");
    }

    #[test]
    fn a_node_signs_only_its_proxy_clients_commands() {
        use synod_core::{Protocol, Time};
        use synod_pbft::request::RequestCheck;
        let ids: Vec<NodeId> = (1..=4).map(NodeId).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.toml");
        crate::pbft_keys::generate(&[1, 2, 3, 4])[0].write_new(&path).expect("write");
        let settings =
            ProtocolSettings { pbft_keys: Some((NodeId(1), path)), ..ProtocolSettings::default() };
        let config = <PbftNode as NodeProtocol>::config(ids, &settings).expect("valid");
        let node = PbftNode::recover(NodeId(1), &config, &Durable::default(), 0, Time::ZERO);
        let me = node.proxy_client().expect("a proxy client");
        assert_eq!(me, crate::pbft_keys::proxy_client_id(1));
        let mut check = RequestCheck::new(config.client_keys());
        let mine = node.seal(Command::new(me, 5, &b"put"[..]));
        assert!(check.check(&mine));
        let other = node.seal(Command::new(crate::pbft_keys::proxy_client_id(2), 5, &b"put"[..]));
        assert!(!check.check(&other), "never signs as another client");
    }
}
