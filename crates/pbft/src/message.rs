//! PBFT messages (OSDI'99 §4, TOCS §2–§5) and the digests they are
//! authenticated over.
//!
//! Normal-case messages carry a MAC [`Authenticator`](crate::auth::Authenticator); CHECKPOINT,
//! VIEW-CHANGE and NEW-VIEW carry an Ed25519 [`Signature`] over their body
//! digest, because they travel inside proofs checked by third parties.
//! Large parts (batches, view-change sets) are reference-counted, so a
//! multicast clones pointers, not payloads.

use crate::auth::{Auth, Header, Mac};
use crate::digest::{BodyHasher, Digest};
pub use ed25519_dalek::Signature;
use std::sync::Arc;
use synod_core::{ClientId, Command, NodeId, Time};

/// Client requests, shared (a multicast clones the pointer).
pub type Requests = Arc<[Command]>;

/// What is ordered at one sequence number: the requests, and the timestamp
/// the primary chose for them (the agreed clock, Castro & Liskov OSDI'99
/// §4.6 / TOCS §5.4 on non-determinism). The timestamp is part of the batch
/// digest, so the PRE-PREPARE's authenticator, the PREPARE/COMMIT votes,
/// prepared certificates, VIEW-CHANGE proofs, NEW-VIEW re-proposals and
/// state transfer all carry it unchanged. Empty requests are the null
/// request; it carries [`Time::ZERO`] and does not move the agreed clock.
/// Dereferences to its requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The primary's clock when it cut the batch (ZERO for the null
    /// request).
    pub timestamp: Time,
    /// The requests.
    pub requests: Requests,
}

impl Batch {
    /// `requests` ordered at `timestamp`.
    pub fn new(timestamp: Time, requests: impl Into<Requests>) -> Batch {
        Batch { timestamp, requests: requests.into() }
    }

    /// The null request.
    pub fn null() -> Batch {
        Batch { timestamp: Time::ZERO, requests: Arc::from(Vec::new()) }
    }
}

impl std::ops::Deref for Batch {
    type Target = [Command];
    fn deref(&self) -> &[Command] {
        &self.requests
    }
}

/// MAC header tags (domain separation between message kinds).
pub(crate) mod tag {
    pub const PRE_PREPARE: u8 = 1;
    pub const PREPARE: u8 = 2;
    pub const COMMIT: u8 = 3;
    pub const STATUS: u8 = 4;
    pub const FETCH: u8 = 5;
    pub const READ_QUERY: u8 = 7;
    pub const READ_INDEX: u8 = 8;
    pub const FORWARD: u8 = 9;
    pub const SNAPSHOT_FETCH: u8 = 10;
    pub const SNAPSHOT_CHUNK: u8 = 11;
}

/// ⟨PRE-PREPARE, v, n, d⟩ with the batch `m` beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrePrepare {
    /// View.
    pub view: u64,
    /// Sequence number.
    pub seq: u64,
    /// D(batch).
    pub digest: Digest,
    /// The requests.
    pub batch: Batch,
    /// The primary's authenticator or signature (kept, so any replica can
    /// relay it).
    pub auth: Auth,
}

impl PrePrepare {
    /// The header the authenticator covers.
    pub fn header(view: u64, seq: u64, digest: &Digest) -> Header {
        Header::new(tag::PRE_PREPARE, [view, seq, 0, 0], digest)
    }
}

/// ⟨PREPARE, v, n, d, i⟩ or ⟨COMMIT, v, n, d, i⟩.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    /// View.
    pub view: u64,
    /// Sequence number.
    pub seq: u64,
    /// D(batch).
    pub digest: Digest,
    /// The voter i.
    pub replica: NodeId,
    /// i's authenticator or signature.
    pub auth: Auth,
}

impl Vote {
    /// The header a PREPARE (`commit = false`) or COMMIT authenticator
    /// covers.
    pub fn header(commit: bool, view: u64, seq: u64, digest: &Digest, replica: NodeId) -> Header {
        let t = if commit { tag::COMMIT } else { tag::PREPARE };
        Header::new(t, [view, seq, replica.0, 0], digest)
    }
}

/// ⟨CHECKPOINT, n, d, i⟩σi: replica i's state digest after executing n.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Sequence number.
    pub seq: u64,
    /// The state digest (hash chain) after `seq`.
    pub state: Digest,
    /// The signer.
    pub replica: NodeId,
    /// Signature over [`Checkpoint::digest`].
    pub sig: Signature,
}

impl Checkpoint {
    /// The digest signed.
    pub fn digest(seq: u64, state: &Digest, replica: NodeId) -> Digest {
        let mut h = BodyHasher::new(b"checkpoint");
        h.u64(seq).digest(state).u64(replica.0);
        h.finish()
    }
}

/// ⟨SUSPECT, v, i⟩σi: replica i's request timer expired in view v and it
/// suspects v's primary, but it stays in v (it sends no VIEW-CHANGE on
/// its own). A replica leaves v once f+1 replicas suspect v or asked for
/// higher views, so at least one correct replica does (see
/// [`crate::node`]). Signed, like VIEW-CHANGE, because a replica that
/// leaves v relays the f+1 it relied on: every correct replica then sees
/// the same f+1 and leaves with it, however the suspicions reached it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suspect {
    /// The view whose primary is suspected.
    pub view: u64,
    /// The signer.
    pub replica: NodeId,
    /// Signature over [`Suspect::digest`].
    pub sig: Signature,
}

impl Suspect {
    /// The digest signed.
    pub fn digest(view: u64, replica: NodeId) -> Digest {
        let mut h = BodyHasher::new(b"suspect");
        h.u64(view).u64(replica.0);
        h.finish()
    }
}

/// A stable checkpoint with its proof: quorum-many matching signed
/// CHECKPOINTs (empty for the genesis checkpoint at 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StableCheckpoint {
    /// Sequence number (the low watermark h).
    pub seq: u64,
    /// State digest after `seq`.
    pub state: Digest,
    /// The proof.
    pub proof: Arc<[Checkpoint]>,
}

/// What a *snapshot checkpoint* (every [`Config::snapshot_interval`]
/// sequence numbers) commits to: the core's own state after `seq` and the
/// digest of the state machine's snapshot there. Its [`state`] is the
/// digest the CHECKPOINT at `seq` signs, so 2f+1 matching CHECKPOINTs prove
/// the manifest, and the manifest proves the snapshot's bytes: a replica
/// fetching the snapshot from a single (possibly faulty) peer checks every
/// byte against a quorum's word.
///
/// [`Config::snapshot_interval`]: crate::Config::snapshot_interval
/// [`state`]: SnapshotManifest::state
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotManifest {
    /// The sequence number executed last.
    pub seq: u64,
    /// The hash chain after `seq` (what the execution continues from).
    pub chain: Digest,
    /// The position of the last command applied (the snapshot's index).
    pub position: u64,
    /// The agreed clock after `seq`.
    pub agreed_time: Time,
    /// Each client's latest executed request (replay protection), sorted by
    /// client.
    pub last_executed: Arc<[(ClientId, u64)]>,
    /// The snapshot's length in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the snapshot's bytes.
    pub sha256: Digest,
}

impl SnapshotManifest {
    /// The state digest a CHECKPOINT at `seq` signs.
    pub fn state(&self) -> Digest {
        let mut h = BodyHasher::new(b"snapshot-checkpoint");
        h.u64(self.seq).digest(&self.chain).u64(self.position);
        h.u64(self.agreed_time.as_micros());
        h.u64(self.last_executed.len() as u64);
        for (client, seq) in self.last_executed.iter() {
            h.u64(client.0).u64(*seq);
        }
        h.u64(self.size_bytes).digest(&self.sha256);
        h.finish()
    }
}

/// A snapshot this replica holds durably, with the stable checkpoint that
/// proves its manifest (`proof.state == manifest.state()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotCheckpoint {
    /// What the snapshot is.
    pub manifest: Arc<SnapshotManifest>,
    /// 2f+1 matching CHECKPOINTs at `manifest.seq`.
    pub proof: StableCheckpoint,
}

/// An element of a VIEW-CHANGE's P: a request prepared at the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedEntry {
    /// Sequence number.
    pub seq: u64,
    /// The view it prepared in (the latest).
    pub view: u64,
    /// Its digest.
    pub digest: Digest,
    /// The requests (so the new primary can re-propose them).
    pub batch: Batch,
}

/// An element of a VIEW-CHANGE's Q: a digest pre-prepared at the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrePreparedEntry {
    /// Sequence number.
    pub seq: u64,
    /// The latest view it pre-prepared in.
    pub view: u64,
    /// Its digest.
    pub digest: Digest,
}

/// ⟨VIEW-CHANGE, v+1, C, P, Q, i⟩σi.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewChange {
    /// The view being moved to.
    pub view: u64,
    /// The sender i.
    pub replica: NodeId,
    /// i's last stable checkpoint with its proof (C).
    pub stable: StableCheckpoint,
    /// Requests prepared at i above the checkpoint (P), by sequence number.
    pub prepared: Vec<PreparedEntry>,
    /// Digests pre-prepared at i above the checkpoint (Q).
    pub pre_prepared: Vec<PrePreparedEntry>,
    /// Signature over [`ViewChange::digest`].
    pub sig: Signature,
}

impl ViewChange {
    /// The digest signed (batches enter through their digests, which the
    /// receiver checks against the batches).
    pub fn digest(&self) -> Digest {
        let mut h = BodyHasher::new(b"view-change");
        h.u64(self.view).u64(self.replica.0);
        h.u64(self.stable.seq).digest(&self.stable.state);
        h.u64(self.prepared.len() as u64);
        for p in &self.prepared {
            h.u64(p.seq).u64(p.view).digest(&p.digest);
        }
        h.u64(self.pre_prepared.len() as u64);
        for q in &self.pre_prepared {
            h.u64(q.seq).u64(q.view).digest(&q.digest);
        }
        h.finish()
    }
}

/// ⟨NEW-VIEW, v+1, V, O⟩σp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewView {
    /// The new view.
    pub view: u64,
    /// The new primary.
    pub replica: NodeId,
    /// V: the VIEW-CHANGE messages O was computed from.
    pub view_changes: Vec<Arc<ViewChange>>,
    /// The checkpoint the new view starts from.
    pub checkpoint_seq: u64,
    /// Its state digest.
    pub checkpoint_state: Digest,
    /// O: the digest re-proposed at each sequence number above the
    /// checkpoint (ZERO = null request).
    pub pre_prepares: Vec<(u64, Digest)>,
    /// Signature over [`NewView::digest`].
    pub sig: Signature,
}

impl NewView {
    /// The digest signed.
    pub fn digest(&self) -> Digest {
        let mut h = BodyHasher::new(b"new-view");
        h.u64(self.view).u64(self.replica.0);
        h.u64(self.view_changes.len() as u64);
        for vc in &self.view_changes {
            h.digest(&vc.digest());
        }
        h.u64(self.checkpoint_seq).digest(&self.checkpoint_state);
        h.u64(self.pre_prepares.len() as u64);
        for (seq, d) in &self.pre_prepares {
            h.u64(*seq).digest(d);
        }
        h.finish()
    }
}

/// A PBFT message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Primary → backups.
    PrePrepare(PrePrepare),
    /// Backup → all.
    Prepare(Vote),
    /// Replica → all.
    Commit(Vote),
    /// Replica → all, every K sequence numbers.
    Checkpoint(Checkpoint),
    /// Replica → all, to leave a view.
    ViewChange(Arc<ViewChange>),
    /// New primary → all.
    NewView(Arc<NewView>),
    /// Periodic: what the sender has, so that peers retransmit what it
    /// misses.
    Status {
        /// Sender's view.
        view: u64,
        /// False while the sender is changing to `view`.
        active: bool,
        /// Last sequence number executed.
        executed: u64,
        /// MAC.
        auth: Mac,
    },
    /// Backup → primary: client requests it has not seen ordered.
    Forward {
        /// The requests.
        requests: Requests,
        /// MAC over their digest.
        auth: Mac,
    },
    /// A suspicion of a view's primary ([`Suspect`]).
    Suspect(Suspect),
    /// Asks for the batches `from..=upto` (state transfer).
    Fetch {
        /// First sequence number wanted.
        from: u64,
        /// The stable checkpoint to reach.
        upto: u64,
        /// MAC.
        auth: Mac,
    },
    /// Batches `first..first+len`, checked by the state hash chain.
    State {
        /// Sequence number of the first batch.
        first: u64,
        /// The batches.
        batches: Arc<[Batch]>,
        /// When the checkpoint asked for is a snapshot checkpoint (its
        /// digest covers the chain inside a manifest): the sender's manifest
        /// there, so the chain can be checked.
        manifest: Option<Arc<SnapshotManifest>>,
    },
    /// The answer to a FETCH the sender cannot serve with batches (it
    /// discarded them): its snapshot and the proof of its manifest. Checked
    /// by the proof alone.
    SnapshotOffer(Arc<SnapshotCheckpoint>),
    /// Asks for the bytes of the snapshot at `seq` from `offset`.
    SnapshotFetch {
        /// The snapshot (its sequence number).
        seq: u64,
        /// The first byte wanted.
        offset: u64,
        /// MAC.
        auth: Mac,
    },
    /// Bytes of the snapshot at `seq` from `offset` (checked as they
    /// arrive against the manifest's SHA-256).
    SnapshotChunk {
        /// The snapshot (its sequence number).
        seq: u64,
        /// Where `data` starts.
        offset: u64,
        /// The bytes.
        data: bytes::Bytes,
        /// MAC over the header and the data's digest.
        auth: Mac,
    },
    /// A read barrier asks for the highest sequence number prepared.
    ReadQuery {
        /// Matches the answer to the query.
        nonce: u64,
        /// MAC.
        auth: Mac,
    },
    /// The answer to a [`Message::ReadQuery`].
    ReadIndex {
        /// The query's nonce.
        nonce: u64,
        /// Highest sequence number prepared or executed at the sender.
        seq: u64,
        /// MAC.
        auth: Mac,
    },
}

impl Message {
    /// The MAC header of a STATUS.
    pub fn status_header(view: u64, active: bool, executed: u64) -> Header {
        Header::new(tag::STATUS, [view, active as u64, executed, 0], &Digest::ZERO)
    }
    /// The MAC header of a FETCH.
    pub fn fetch_header(from: u64, upto: u64) -> Header {
        Header::new(tag::FETCH, [from, upto, 0, 0], &Digest::ZERO)
    }
    /// The MAC header of a read query or answer.
    pub fn read_header(answer: bool, nonce: u64, seq: u64) -> Header {
        let t = if answer { tag::READ_INDEX } else { tag::READ_QUERY };
        Header::new(t, [nonce, seq, 0, 0], &Digest::ZERO)
    }
    /// The MAC header of a SNAPSHOT-FETCH.
    pub fn snapshot_fetch_header(seq: u64, offset: u64) -> Header {
        Header::new(tag::SNAPSHOT_FETCH, [seq, offset, 0, 0], &Digest::ZERO)
    }
    /// The MAC header of a SNAPSHOT-CHUNK.
    pub fn snapshot_chunk_header(seq: u64, offset: u64, data: &[u8]) -> Header {
        Header::new(tag::SNAPSHOT_CHUNK, [seq, offset, data.len() as u64, 0], &Digest::of(data))
    }
    /// The MAC header of a FORWARD.
    pub fn forward_header(digest: &Digest) -> Header {
        Header::new(tag::FORWARD, [0; 4], digest)
    }
}

fn batch_bytes(b: &[Command]) -> usize {
    b.iter().map(Command::size_bytes).sum()
}

impl synod_core::Message for Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::PrePrepare(_) => "pre-prepare",
            Message::Prepare(_) => "prepare",
            Message::Commit(_) => "commit",
            Message::Checkpoint(_) => "checkpoint",
            Message::ViewChange(_) => "view-change",
            Message::NewView(_) => "new-view",
            Message::Status { .. } => "status",
            Message::Suspect(_) => "suspect",
            Message::Forward { .. } => "forward",
            Message::Fetch { .. } => "fetch",
            Message::State { .. } => "state",
            Message::SnapshotOffer(_) => "snapshot-offer",
            Message::SnapshotFetch { .. } => "snapshot-fetch",
            Message::SnapshotChunk { .. } => "snapshot-chunk",
            Message::ReadQuery { .. } => "read-query",
            Message::ReadIndex { .. } => "read-index",
        }
    }

    fn size_bytes(&self) -> usize {
        const SIG: usize = 64;
        match self {
            Message::PrePrepare(p) => 56 + p.auth.size_bytes() + batch_bytes(&p.batch),
            Message::Prepare(v) | Message::Commit(v) => 56 + v.auth.size_bytes(),
            Message::Checkpoint(_) => 56 + SIG,
            Message::ViewChange(vc) => view_change_bytes(vc),
            Message::NewView(nv) => {
                48 + SIG
                    + nv.view_changes.iter().map(|vc| view_change_bytes(vc)).sum::<usize>()
                    + nv.pre_prepares.len() * 40
            }
            Message::Status { .. } => 40,
            Message::Suspect(_) => 16 + SIG,
            Message::Forward { requests, .. } => 16 + batch_bytes(requests),
            Message::Fetch { .. } => 32,
            Message::State { batches, manifest, .. } => {
                16 + batches.iter().map(|b| 16 + batch_bytes(b)).sum::<usize>()
                    + manifest.as_ref().map_or(0, |m| 96 + m.last_executed.len() * 16)
            }
            Message::SnapshotOffer(o) => {
                96 + o.manifest.last_executed.len() * 16 + o.proof.proof.len() * (56 + SIG)
            }
            Message::SnapshotFetch { .. } => 32,
            Message::SnapshotChunk { data, .. } => 32 + data.len(),
            Message::ReadQuery { .. } => 24,
            Message::ReadIndex { .. } => 32,
        }
    }
}

fn view_change_bytes(vc: &ViewChange) -> usize {
    const SIG: usize = 64;
    48 + SIG
        + vc.stable.proof.len() * (56 + SIG)
        + vc.prepared.iter().map(|p| 56 + batch_bytes(&p.batch)).sum::<usize>()
        + vc.pre_prepared.len() * 48
}

#[cfg(test)]
mod manifest_tests {
    use super::*;

    #[test]
    fn a_manifests_state_digest_covers_every_field() {
        let m = SnapshotManifest {
            seq: 256,
            chain: Digest::of(b"chain"),
            position: 900,
            agreed_time: Time::from_millis(5),
            last_executed: Arc::from(vec![(ClientId(1), 7), (ClientId(2), 3)]),
            size_bytes: 4096,
            sha256: Digest::of(b"bytes"),
        };
        let changed: Vec<SnapshotManifest> = vec![
            SnapshotManifest { seq: 384, ..m.clone() },
            SnapshotManifest { chain: Digest::of(b"other"), ..m.clone() },
            SnapshotManifest { position: 901, ..m.clone() },
            SnapshotManifest { agreed_time: Time::from_millis(6), ..m.clone() },
            SnapshotManifest {
                last_executed: Arc::from(vec![(ClientId(1), 8), (ClientId(2), 3)]),
                ..m.clone()
            },
            SnapshotManifest { last_executed: Arc::from(vec![(ClientId(1), 7)]), ..m.clone() },
            SnapshotManifest { size_bytes: 4095, ..m.clone() },
            SnapshotManifest { sha256: Digest::of(b"lie"), ..m.clone() },
        ];
        for other in changed {
            assert_ne!(other.state(), m.state(), "{other:?}");
        }
        assert_eq!(m.clone().state(), m.state());
    }
}
