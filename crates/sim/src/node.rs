//! One simulated replica: its core, its disk, its clock and its copy of the
//! replicated state machine.
//!
//! The disk is `durable` (every synced write applied in order) plus a queue
//! of written-but-unsynced writes; a crash drops the queue (or keeps a
//! random prefix of it: a partially flushed log) along with the core and
//! everything else volatile. Messages produced together with writes wait in
//! `batches` until those writes (and every earlier one) are synced: the
//! persistence contract of [`synod_core::protocol`].
//!
//! The node is also its core's snapshot host (the snapshot contract of
//! [`synod_core::protocol`]): `snapshots` is the durable snapshot store
//! (it survives crashes), `partial` the snapshot being received (volatile).
//! A stored snapshot's state is a copy of the session table and key-value
//! store, kept in the simulator's registry under a unique id; its bytes, as
//! they travel in chunks, are [`snapshot_bytes`] of that id, so a receiver
//! can check that exactly the right bytes arrived in the right order.

use crate::client::Request;
use std::collections::{HashMap, VecDeque};
use synod_core::kv::KvStore;
use synod_core::protocol::SnapshotMeta;
use synod_core::{ClientId, Committed, NodeId, Protocol, ReadId, Sessions, Time};

/// Sessions the replicated state machine keeps (well above any client count
/// the options allow, so retries are always recognised).
pub(crate) const MAX_SESSIONS: usize = 16_384;
/// Events parked at a paused node beyond which messages are dropped.
pub(crate) const MAX_PARKED: usize = 10_000;
/// Read barriers one node keeps waiting at once.
pub(crate) const MAX_PENDING_READS: usize = 10_000;

/// A snapshot in a node's durable snapshot store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StoredSnapshot {
    pub meta: SnapshotMeta,
    /// Its id in the simulator's snapshot registry.
    pub uid: u64,
}

/// The size of the snapshot of a store holding `keys` keys.
pub(crate) fn snapshot_size(keys: usize) -> u64 {
    256 + 48 * keys as u64
}

/// Bytes `offset..offset + len` of the snapshot with id `uid`: its first 8
/// bytes are the id, then every byte is its own offset mixed with the id.
pub(crate) fn snapshot_bytes(uid: u64, offset: u64, len: u64) -> bytes::Bytes {
    let id = uid.to_le_bytes();
    (offset..offset + len)
        .map(|p| if p < 8 { id[p as usize] } else { (p as u8) ^ id[(p % 8) as usize] })
        .collect::<Vec<u8>>()
        .into()
}

/// A get waiting for its read barrier.
#[derive(Clone, Debug)]
pub(crate) struct PendingRead {
    pub client: u32,
    pub seq: u64,
    pub op: bytes::Bytes,
}

/// Messages released once `upto` writes are synced.
pub(crate) struct Batch<M> {
    pub upto: u64,
    pub messages: Vec<(NodeId, M)>,
}

/// Anything delivered to a paused node waits here.
pub(crate) enum Parked<M> {
    Peer { from: NodeId, msg: M },
    Request(Request),
    Synced { upto: u64 },
}

pub(crate) struct SimNode<P: Protocol> {
    pub id: NodeId,
    pub core: Option<P>,
    pub durable: P::Durable,
    pub unsynced: VecDeque<P::Write>,
    /// Writes handed to the disk this incarnation, and how many are synced.
    pub written: u64,
    pub synced: u64,
    /// When the last scheduled fsync completes (fsyncs complete in order).
    pub last_sync_at: Time,
    pub batches: VecDeque<Batch<P::Message>>,
    pub spare: Vec<Vec<(NodeId, P::Message)>>,
    pub incarnation: u64,
    pub tick_gen: u64,
    pub tick_at: Option<Time>,
    pub paused: bool,
    pub parked: VecDeque<Parked<P::Message>>,
    /// Local clock: `local = global + offset + global * drift_ppm / 1e6`.
    pub clock_offset_us: i64,
    pub drift_ppm: i64,
    pub sessions: Sessions<KvStore>,
    /// The request each client waits on here (client → seq).
    pub pending_writes: HashMap<ClientId, u64>,
    pub pending_reads: HashMap<ReadId, PendingRead>,
    /// Reads whose barrier passed, waiting for the state machine to reach
    /// their index.
    pub waiting_reads: Vec<(u64, PendingRead)>,
    /// Every position applied this incarnation.
    pub applied_log: Vec<Committed>,
    pub is_leader: bool,
    /// The durable snapshot store, oldest first.
    pub snapshots: Vec<StoredSnapshot>,
    /// The snapshot being received: its (index, epoch) and the bytes so far.
    pub partial: Option<(u64, u64, Vec<u8>)>,
    /// Once `written` writes are synced, snapshots older than `index` may go.
    pub snapshot_prunes: Vec<(u64, u64)>,
    /// The highest snapshot the core adopted for which a prune was queued.
    pub prune_requested: u64,
}

impl<P: Protocol> SimNode<P> {
    pub fn new(id: NodeId, clock_offset_us: i64) -> Self {
        SimNode {
            id,
            core: None,
            durable: P::Durable::default(),
            unsynced: VecDeque::new(),
            written: 0,
            synced: 0,
            last_sync_at: Time::ZERO,
            batches: VecDeque::new(),
            spare: Vec::new(),
            incarnation: 0,
            tick_gen: 0,
            tick_at: None,
            paused: false,
            parked: VecDeque::new(),
            clock_offset_us,
            drift_ppm: 0,
            sessions: Sessions::new(KvStore::new(), MAX_SESSIONS),
            pending_writes: HashMap::new(),
            pending_reads: HashMap::new(),
            waiting_reads: Vec::new(),
            applied_log: Vec::new(),
            is_leader: false,
            snapshots: Vec::new(),
            partial: None,
            snapshot_prunes: Vec::new(),
            prune_requested: 0,
        }
    }

    /// The stored snapshot at `index`, if any.
    pub fn stored_snapshot(&self, index: u64) -> Option<StoredSnapshot> {
        self.snapshots.iter().rev().find(|s| s.meta.index == index).copied()
    }

    /// Drops the snapshots whose replacement is now named by synced writes.
    pub fn prune_snapshots(&mut self) {
        let synced = self.synced;
        let mut keep_from = 0;
        self.snapshot_prunes.retain(|&(upto, index)| {
            if upto <= synced {
                keep_from = keep_from.max(index);
                false
            } else {
                true
            }
        });
        if keep_from > 0 {
            self.snapshots.retain(|s| s.meta.index >= keep_from);
        }
    }

    /// This node's clock reading at global time `g`.
    #[inline]
    pub fn local_time(&self, g: Time) -> Time {
        if self.drift_ppm == 0 {
            return Time(g.0.saturating_add_signed(self.clock_offset_us));
        }
        let l = g.0 as i128
            + self.clock_offset_us as i128
            + g.0 as i128 * self.drift_ppm as i128 / 1_000_000;
        Time(l.clamp(0, u64::MAX as i128) as u64)
    }

    /// The earliest global time at or after `now` at which the local clock
    /// reads at least `local`.
    pub fn global_time(&self, local: Time, now: Time) -> Time {
        if local == Time::MAX {
            return Time::MAX;
        }
        if self.local_time(now) >= local {
            return now;
        }
        let g = if self.drift_ppm == 0 {
            (local.0 as i128 - self.clock_offset_us as i128).max(0) as u64
        } else {
            let rate = 1_000_000i128 + self.drift_ppm as i128;
            let num = (local.0 as i128 - self.clock_offset_us as i128) * 1_000_000;
            (num.max(0) / rate).clamp(0, u64::MAX as i128 / 2) as u64
        };
        let mut g = Time(g.max(now.0));
        while self.local_time(g) < local {
            g = Time(g.0 + 1);
        }
        g
    }

    /// Changes the clock rate at global time `now` without a jump.
    pub fn set_drift(&mut self, now: Time, ppm: i64) {
        let local = self.local_time(now).0 as i128;
        self.drift_ppm = ppm;
        let base = now.0 as i128 + now.0 as i128 * ppm as i128 / 1_000_000;
        self.clock_offset_us = (local - base).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    }

    /// Forgets everything volatile (a crash).
    pub fn lose_volatile_state(&mut self) {
        self.core = None;
        self.unsynced.clear();
        self.written = 0;
        self.synced = 0;
        self.batches.clear();
        self.incarnation += 1;
        self.tick_gen += 1;
        self.tick_at = None;
        self.paused = false;
        self.parked.clear();
        self.sessions = Sessions::new(KvStore::new(), MAX_SESSIONS);
        self.pending_writes.clear();
        self.pending_reads.clear();
        self.waiting_reads.clear();
        self.applied_log.clear();
        self.is_leader = false;
        self.partial = None;
        self.snapshot_prunes.clear();
        self.prune_requested = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testproto::Seq;

    #[test]
    fn snapshot_bytes_are_the_same_however_they_are_chunked() {
        let whole = snapshot_bytes(0xABCD, 0, 40);
        let mut chunked = snapshot_bytes(0xABCD, 0, 7).to_vec();
        chunked.extend_from_slice(&snapshot_bytes(0xABCD, 7, 33));
        assert_eq!(&whole[..], &chunked[..]);
        assert_eq!(u64::from_le_bytes(whole[..8].try_into().expect("8 bytes")), 0xABCD);
        assert_ne!(snapshot_bytes(1, 0, 40), snapshot_bytes(2, 0, 40));
    }

    #[test]
    fn old_snapshots_go_only_once_their_replacement_is_synced() {
        let mut n = SimNode::<Seq>::new(NodeId(1), 0);
        for index in [10, 20, 30] {
            let meta = SnapshotMeta { index, epoch: 1, size_bytes: 1 };
            n.snapshots.push(StoredSnapshot { meta, uid: index });
        }
        n.snapshot_prunes.push((5, 20));
        n.synced = 4;
        n.prune_snapshots();
        assert_eq!(n.snapshots.len(), 3);
        n.synced = 5;
        n.prune_snapshots();
        assert_eq!(n.snapshots.iter().map(|s| s.meta.index).collect::<Vec<_>>(), [20, 30]);
        assert!(n.stored_snapshot(30).is_some() && n.stored_snapshot(10).is_none());
    }

    #[test]
    fn drifting_clock_is_monotone_and_deadlines_map_back() {
        let mut n = SimNode::<Seq>::new(NodeId(1), 12_345);
        assert_eq!(n.local_time(Time(1000)), Time(13_345));
        n.set_drift(Time(1_000_000), 2_000);
        let before = n.local_time(Time(1_000_000));
        assert_eq!(before, Time(1_012_345), "no jump when the rate changes");
        let later = n.local_time(Time(2_000_000));
        assert_eq!(later.0 - before.0, 1_002_000);
        for local in [1_012_346u64, 1_500_000, 9_999_999] {
            let g = n.global_time(Time(local), Time(1_000_000));
            assert!(n.local_time(g) >= Time(local));
            assert!(n.local_time(Time(g.0 - 1)) < Time(local));
        }
        n.set_drift(Time(3_000_000), -3_000);
        let g = n.global_time(Time(5_000_000), Time(3_000_000));
        assert!(
            n.local_time(g) >= Time(5_000_000) && n.local_time(Time(g.0 - 1)) < Time(5_000_000)
        );
        assert_eq!(n.global_time(Time::MAX, Time(0)), Time::MAX);
        assert_eq!(n.global_time(Time(0), Time(7)), Time(7));
    }
}
