//! What a replica persists, so that after a restart it neither equivocates
//! nor forgets a certificate a view change depends on.
//!
//! A replica writes (and the driver syncs, before the messages that depend
//! on it leave — the persistence contract):
//! - its view, and whether it is changing to it ([`Write::View`]), before a
//!   VIEW-CHANGE or any message of a new view;
//! - every pre-prepare it sends or accepts ([`Write::PrePrepared`]), before
//!   its PRE-PREPARE or PREPARE: it never pre-prepares two digests for one
//!   (view, n) and keeps its Q set;
//! - every certificate it prepares ([`Write::Prepared`]), before its COMMIT:
//!   its P set survives, so a committed request survives view changes even
//!   if replicas restart;
//! - every batch it executes ([`Write::Executed`]): the executed history
//!   above its snapshot is replayed into the state machine after a restart
//!   (the host loads the snapshot first), and served to replicas that
//!   fetch state;
//! - each stable checkpoint with its proof ([`Write::Stable`]), which moves
//!   the low watermark and discards the per-sequence records below it;
//! - each snapshot it adopts ([`Write::Snapshot`]: one it took whose
//!   checkpoint became stable, or one it fetched and installed), which
//!   discards the executed history up to it. The host's snapshot store
//!   holds the snapshot's bytes durably before this write is made.
//!
//! [`Durable::restate`] gives writes that rebuild the same durable state
//! from nothing: a host's journal may replace its records with them (and
//! drop everything older) once they are durable.

use crate::digest::Digest;
use crate::message::{
    Batch, PrePreparedEntry, PreparedEntry, SnapshotCheckpoint, StableCheckpoint,
};
use std::collections::BTreeMap;

/// Bound on the Q entries kept per sequence number (the latest views win).
pub const MAX_Q_PER_SEQ: usize = 4;

/// One durable write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// The current view; `changing` while a VIEW-CHANGE to it is pending.
    View {
        /// The view.
        view: u64,
        /// True between sending VIEW-CHANGE and accepting NEW-VIEW.
        changing: bool,
    },
    /// A pre-prepare sent (primary) or accepted (backup, or from NEW-VIEW).
    PrePrepared {
        /// Sequence number.
        seq: u64,
        /// View.
        view: u64,
        /// Digest.
        digest: Digest,
        /// The batch.
        batch: Batch,
    },
    /// A prepared certificate.
    Prepared {
        /// Sequence number.
        seq: u64,
        /// View.
        view: u64,
        /// Digest.
        digest: Digest,
    },
    /// The batch executed at `seq`.
    Executed {
        /// Sequence number.
        seq: u64,
        /// The batch.
        batch: Batch,
    },
    /// A stable checkpoint with its proof.
    Stable(StableCheckpoint),
    /// A snapshot adopted: the executed history up to it goes.
    Snapshot(std::sync::Arc<SnapshotCheckpoint>),
    /// The NEW-VIEW the replica entered its view with: kept so that after a
    /// restart it can still hand it to replicas that missed it (else they
    /// wait in the view change while it works in the view).
    NewView(std::sync::Arc<crate::message::NewView>),
}

/// What a replica persisted about one sequence number above the low
/// watermark.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableSlot {
    /// The latest pre-prepare: view, digest, batch.
    pub latest: Option<(u64, Digest, Batch)>,
    /// The Q set at this sequence number (latest view per digest, bounded).
    pub pre_prepared: Vec<PrePreparedEntry>,
    /// The latest prepared certificate.
    pub prepared: Option<PreparedEntry>,
}

impl DurableSlot {
    /// Records that `digest` pre-prepared in `view`: Q keeps the latest view
    /// per digest and at most [`MAX_Q_PER_SEQ`] entries (oldest views go).
    pub fn note_pre_prepared(&mut self, seq: u64, view: u64, digest: Digest) {
        note_q(&mut self.pre_prepared, seq, view, digest);
    }
}

/// Adds `(digest, view)` to a Q list as [`DurableSlot::note_pre_prepared`]
/// describes.
pub fn note_q(q: &mut Vec<PrePreparedEntry>, seq: u64, view: u64, digest: Digest) {
    if let Some(e) = q.iter_mut().find(|e| e.digest == digest) {
        e.view = e.view.max(view);
    } else {
        q.push(PrePreparedEntry { seq, view, digest });
    }
    if q.len() > MAX_Q_PER_SEQ {
        q.sort_by_key(|e| std::cmp::Reverse(e.view));
        q.truncate(MAX_Q_PER_SEQ);
    }
}

/// Everything that survives a crash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// The view.
    pub view: u64,
    /// True when a view change to `view` was pending.
    pub changing: bool,
    /// The last stable checkpoint (genesis: seq 0).
    pub stable: StableCheckpoint,
    /// Per sequence number above `stable.seq`.
    pub slots: BTreeMap<u64, DurableSlot>,
    /// The snapshot the state starts from (`None`: the empty state at 0).
    pub snapshot: Option<std::sync::Arc<SnapshotCheckpoint>>,
    /// `executed[i]` is the batch executed at sequence number
    /// `executed_base() + i + 1`.
    pub executed: Vec<Batch>,
    /// The latest NEW-VIEW accepted (or sent).
    pub new_view: Option<std::sync::Arc<crate::message::NewView>>,
}

impl Durable {
    /// The sequence number the executed history starts after: the
    /// snapshot's, or 0.
    pub fn executed_base(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.manifest.seq)
    }

    /// Writes that, applied in order to [`Durable::default`], give exactly
    /// this state (a host compacts its journal to them).
    pub fn restate(&self) -> Vec<Write> {
        let mut w = Vec::new();
        // The stable checkpoint first: a snapshot's proof replaces it only
        // if higher (it is never lower than the snapshot).
        if self.stable.seq > 0 {
            w.push(Write::Stable(self.stable.clone()));
        }
        if let Some(s) = &self.snapshot {
            w.push(Write::Snapshot(s.clone()));
        }
        w.push(Write::View { view: self.view, changing: self.changing });
        if let Some(nv) = &self.new_view {
            w.push(Write::NewView(nv.clone()));
        }
        for (&seq, slot) in &self.slots {
            // In view order (a pre-prepare replaces the latest only from a
            // view as high): Q entries (digests only: a null stand-in
            // batch), then the prepared certificate with its batch, then
            // the latest pre-prepare, which is the highest view of all.
            let mut ordered: Vec<(u64, u8, Write)> = Vec::new();
            for e in &slot.pre_prepared {
                let batch = Batch::null();
                ordered.push((
                    e.view,
                    0,
                    Write::PrePrepared { seq, view: e.view, digest: e.digest, batch },
                ));
            }
            if let Some(p) = &slot.prepared {
                let (view, digest) = (p.view, p.digest);
                ordered.push((
                    view,
                    1,
                    Write::PrePrepared { seq, view, digest, batch: p.batch.clone() },
                ));
                ordered.push((view, 2, Write::Prepared { seq, view, digest }));
            }
            if let Some((view, digest, batch)) = &slot.latest {
                let (view, digest) = (*view, *digest);
                ordered.push((
                    view,
                    3,
                    Write::PrePrepared { seq, view, digest, batch: batch.clone() },
                ));
            }
            ordered.sort_by_key(|(view, rank, _)| (*view, *rank));
            w.extend(ordered.into_iter().map(|(_, _, write)| write));
        }
        let base = self.executed_base();
        for (i, batch) in self.executed.iter().enumerate() {
            w.push(Write::Executed { seq: base + i as u64 + 1, batch: batch.clone() });
        }
        w
    }

    /// Applies one synced write.
    pub fn apply(&mut self, write: &Write) {
        match write {
            Write::View { view, changing } => {
                if *view >= self.view {
                    self.view = *view;
                    self.changing = *changing;
                }
            }
            Write::PrePrepared { seq, view, digest, batch } => {
                if *seq <= self.stable.seq {
                    return;
                }
                let slot = self.slots.entry(*seq).or_default();
                if slot.latest.as_ref().is_none_or(|(v, _, _)| v <= view) {
                    slot.latest = Some((*view, *digest, batch.clone()));
                }
                slot.note_pre_prepared(*seq, *view, *digest);
            }
            Write::Prepared { seq, view, digest } => {
                if *seq <= self.stable.seq {
                    return;
                }
                let Some(slot) = self.slots.get_mut(seq) else { return };
                let batch = match &slot.latest {
                    Some((v, d, b)) if v == view && d == digest => b.clone(),
                    _ => return,
                };
                if slot.prepared.as_ref().is_none_or(|p| p.view <= *view) {
                    slot.prepared =
                        Some(PreparedEntry { seq: *seq, view: *view, digest: *digest, batch });
                }
            }
            Write::Executed { seq, batch } => {
                if *seq == self.executed_base() + self.executed.len() as u64 + 1 {
                    self.executed.push(batch.clone());
                }
            }
            Write::Snapshot(s) => {
                let (base, seq) = (self.executed_base(), s.manifest.seq);
                if seq <= base {
                    return;
                }
                let drop = ((seq - base) as usize).min(self.executed.len());
                if drop < (seq - base) as usize {
                    self.executed.clear(); // installed from a peer: beyond what ran here
                } else {
                    self.executed.drain(..drop);
                }
                self.snapshot = Some(s.clone());
                if s.proof.seq > self.stable.seq {
                    self.stable = s.proof.clone();
                    self.slots = self.slots.split_off(&(s.proof.seq + 1));
                }
            }
            Write::NewView(nv) => {
                if self.new_view.as_ref().is_none_or(|old| old.view <= nv.view) {
                    self.new_view = Some(nv.clone());
                }
            }
            Write::Stable(s) => {
                if s.seq > self.stable.seq {
                    self.stable = s.clone();
                    self.slots = self.slots.split_off(&(s.seq + 1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stable_checkpoint_discards_records_below_it() {
        let mut d = Durable::default();
        let b = Batch::null();
        for seq in 1..=5 {
            d.apply(&Write::PrePrepared { seq, view: 0, digest: Digest::ZERO, batch: b.clone() });
            d.apply(&Write::Prepared { seq, view: 0, digest: Digest::ZERO });
        }
        assert!(d.slots[&3].prepared.is_some());
        d.apply(&Write::Stable(StableCheckpoint { seq: 3, ..Default::default() }));
        assert_eq!(d.slots.keys().copied().collect::<Vec<_>>(), [4, 5]);
        d.apply(&Write::PrePrepared { seq: 2, view: 1, digest: Digest::ZERO, batch: b });
        assert!(!d.slots.contains_key(&2), "below the watermark is ignored");
    }

    fn batch(x: u8) -> Batch {
        let c = synod_core::Command::new(synod_core::ClientId(x as u64), 1, vec![x]);
        Batch::new(synod_core::Time::from_millis(x as u64), vec![c])
    }

    fn snapshot_at(seq: u64) -> std::sync::Arc<SnapshotCheckpoint> {
        use crate::message::SnapshotManifest;
        let manifest = SnapshotManifest {
            seq,
            chain: Digest::of(&seq.to_le_bytes()),
            position: seq * 2,
            agreed_time: synod_core::Time::from_millis(seq),
            last_executed: std::sync::Arc::from(vec![(synod_core::ClientId(1), seq)]),
            size_bytes: 100,
            sha256: Digest::of(b"bytes"),
        };
        let proof = StableCheckpoint { seq, state: manifest.state(), ..Default::default() };
        std::sync::Arc::new(SnapshotCheckpoint { manifest: std::sync::Arc::new(manifest), proof })
    }

    /// Q lists compare as sets (restating orders them by view).
    fn normalised(mut d: Durable) -> Durable {
        for slot in d.slots.values_mut() {
            slot.pre_prepared.sort_by_key(|e| (e.view, e.digest));
        }
        d
    }

    #[test]
    fn a_snapshot_discards_the_executed_history_up_to_it() {
        let mut d = Durable::default();
        for seq in 1..=6 {
            d.apply(&Write::Executed { seq, batch: batch(seq as u8) });
        }
        d.apply(&Write::Snapshot(snapshot_at(4)));
        assert_eq!(d.executed_base(), 4);
        assert_eq!(d.executed, vec![batch(5), batch(6)]);
        assert_eq!(d.stable.seq, 4, "the snapshot's proof is a stable checkpoint");
        d.apply(&Write::Executed { seq: 7, batch: batch(7) });
        d.apply(&Write::Executed { seq: 6, batch: batch(9) });
        assert_eq!(d.executed.len(), 3, "continues after the base, ignores a repeat");
        d.apply(&Write::Snapshot(snapshot_at(2)));
        assert_eq!(d.executed_base(), 4, "an older snapshot changes nothing");
        // One installed from a peer, beyond everything executed here.
        d.apply(&Write::Snapshot(snapshot_at(20)));
        assert_eq!((d.executed_base(), d.executed.len()), (20, 0));
        d.apply(&Write::Executed { seq: 21, batch: batch(21) });
        assert_eq!(d.executed, vec![batch(21)]);
    }

    proptest::proptest! {
        /// Restating any durable state and applying the result to an empty
        /// one gives the same state (a host compacts its journal to it).
        #[test]
        fn restating_rebuilds_the_same_durable_state(
            ops in proptest::collection::vec((0u8..7, 1u64..12, 0u64..5, 0u8..3), 0..80),
        ) {
            let mut d = Durable::default();
            let mut executed = 0u64;
            for (kind, seq, view, digest) in ops {
                let digest = Digest::of(&[digest]);
                let w = match kind {
                    0 | 1 => Write::PrePrepared { seq, view, digest, batch: batch(seq as u8) },
                    2 => Write::Prepared { seq, view, digest },
                    3 => {
                        executed = d.executed_base() + d.executed.len() as u64 + 1;
                        Write::Executed { seq: executed, batch: batch(executed as u8) }
                    }
                    4 => Write::View { view, changing: seq % 2 == 0 },
                    5 => Write::Stable(StableCheckpoint { seq: seq.min(executed), ..Default::default() }),
                    _ => Write::Snapshot(snapshot_at(seq.min(executed).max(1))),
                };
                d.apply(&w);
            }
            let mut rebuilt = Durable::default();
            for w in d.restate() {
                rebuilt.apply(&w);
            }
            proptest::prop_assert_eq!(normalised(rebuilt), normalised(d));
        }
    }

    #[test]
    fn q_keeps_the_latest_views_and_is_bounded() {
        let mut q = Vec::new();
        for v in 0..10 {
            note_q(&mut q, 1, v, Digest::of(&[v as u8]));
        }
        note_q(&mut q, 1, 20, Digest::of(&[9]));
        assert_eq!(q.len(), MAX_Q_PER_SEQ);
        assert!(q.iter().any(|e| e.view == 20 && e.digest == Digest::of(&[9])));
        assert!(q.iter().all(|e| e.view >= 6));
    }
}
