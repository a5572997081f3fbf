//! Snapshot bookkeeping of a Multi-Paxos node: which snapshot it starts
//! from, the one it is receiving, and the ones it is sending.
//!
//! A Paxos snapshot covers every slot up to `slot`; the host knows it by
//! its *position* (`meta.index`, the last [`Committed`](synod_core::Committed)
//! index of that slot), since one slot holds a batch of commands. The
//! protocol itself is in [`node`](crate::multi::node), "Snapshots".

use crate::ballot::Ballot;
use std::time::Duration;
use synod_core::protocol::SnapshotMeta;
use synod_core::{NodeId, Time};

/// A snapshot as the Paxos core knows it: the last slot it covers and the
/// host's metadata (`meta.index` is the position the state machine reached
/// at the end of `slot`; `meta.epoch` the ballot round `slot` was accepted
/// in, where it was taken).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotPoint {
    /// Every slot up to this one is in the snapshot (0: no snapshot).
    pub slot: u64,
    /// The host's metadata.
    pub meta: SnapshotMeta,
}

impl SnapshotPoint {
    /// True for a real snapshot (not the empty default).
    pub fn exists(&self) -> bool {
        self.slot > 0
    }
}

/// A snapshot being sent to one peer, one chunk in flight at a time: to a
/// follower behind the leader's purged prefix, or to a candidate whose
/// Phase 1 starts inside this acceptor's purged prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The snapshot.
    pub point: SnapshotPoint,
    /// The offset the peer asked for last (the chunk in flight starts here).
    pub offset: u64,
    /// The ballot the chunks travel in: the leader's own, or the
    /// candidate's that this acceptor promised.
    pub ballot: Ballot,
}

/// A snapshot being received (volatile: a crash drops it along with the
/// host's partial snapshot, and the transfer starts over).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The sender: chunks of one snapshot from two senders are different
    /// bytes, so only one sender's are taken at a time.
    pub from: NodeId,
    /// The snapshot.
    pub point: SnapshotPoint,
    /// Bytes received so far, in order.
    pub received: u64,
    /// When the last chunk was taken.
    pub last_progress: Time,
}

/// What a receiver does with a chunk at `offset` of `len` bytes of `point`
/// from `from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkVerdict {
    /// Store it (then `received` grows by `len`).
    Take,
    /// Out of order, from another sender, or too long: answer with the
    /// offset wanted next.
    Refuse {
        /// The offset wanted next.
        wanted: u64,
    },
}

/// Judges a chunk that arrived at `now` against the transfer in progress.
///
/// A chunk at offset 0 starts a new transfer — unless another sender's
/// transfer of a snapshot at least as new made progress within `idle`:
/// several acceptors may each offer a campaigning node their snapshot, and
/// restarting on each offer would starve them all. The refused sender is
/// told offset 0, which it already sends, so it waits (until the transfer
/// it lost to stalls and the candidate prepares again).
pub fn judge_chunk(
    incoming: &mut Option<Incoming>,
    (from, now, idle): (NodeId, Time, Duration),
    point: SnapshotPoint,
    offset: u64,
    len: u64,
) -> ChunkVerdict {
    if offset == 0 {
        let busy = incoming.is_some_and(|i| {
            i.from != from
                && i.point.slot >= point.slot
                && now.saturating_since(i.last_progress) < idle
        });
        if busy {
            return ChunkVerdict::Refuse { wanted: 0 };
        }
        *incoming = Some(Incoming { from, point, received: 0, last_progress: now });
    }
    match incoming {
        Some(i) if i.from == from && i.point == point => {
            if offset != i.received || offset.saturating_add(len) > point.meta.size_bytes {
                ChunkVerdict::Refuse { wanted: i.received }
            } else {
                ChunkVerdict::Take
            }
        }
        _ => ChunkVerdict::Refuse { wanted: 0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(slot: u64) -> SnapshotPoint {
        SnapshotPoint { slot, meta: SnapshotMeta { index: slot * 2, epoch: 1, size_bytes: 10 } }
    }

    const IDLE: Duration = Duration::from_millis(50);

    #[test]
    fn chunks_are_taken_only_in_order_and_from_one_sender() {
        let mut incoming = None;
        let t = Time::ZERO;
        let (a, b) = ((NodeId(1), t, IDLE), (NodeId(2), t, IDLE));
        assert_eq!(
            judge_chunk(&mut incoming, a, point(4), 4, 4),
            ChunkVerdict::Refuse { wanted: 0 }
        );
        assert_eq!(judge_chunk(&mut incoming, a, point(4), 0, 4), ChunkVerdict::Take);
        if let Some(i) = incoming.as_mut() {
            i.received += 4;
        }
        assert_eq!(
            judge_chunk(&mut incoming, a, point(4), 8, 2),
            ChunkVerdict::Refuse { wanted: 4 }
        );
        assert_eq!(
            judge_chunk(&mut incoming, b, point(4), 4, 4),
            ChunkVerdict::Refuse { wanted: 0 }
        );
        assert_eq!(
            judge_chunk(&mut incoming, a, point(4), 4, 7),
            ChunkVerdict::Refuse { wanted: 4 }
        );
        assert_eq!(judge_chunk(&mut incoming, a, point(4), 4, 6), ChunkVerdict::Take);
        // Offset 0 of a newer snapshot starts over.
        assert_eq!(judge_chunk(&mut incoming, b, point(6), 0, 3), ChunkVerdict::Take);
        assert_eq!(incoming.map(|i| (i.from, i.received)), Some((NodeId(2), 0)));
    }

    #[test]
    fn another_offer_waits_until_the_transfer_in_progress_stalls() {
        let mut incoming = None;
        let at = |ms| Time::ZERO + Duration::from_millis(ms);
        assert_eq!(
            judge_chunk(&mut incoming, (NodeId(1), at(0), IDLE), point(4), 0, 4),
            ChunkVerdict::Take
        );
        let other = |ms| (NodeId(2), at(ms), IDLE);
        assert_eq!(
            judge_chunk(&mut incoming, other(10), point(4), 0, 4),
            ChunkVerdict::Refuse { wanted: 0 }
        );
        assert_eq!(
            judge_chunk(&mut incoming, other(49), point(3), 0, 4),
            ChunkVerdict::Refuse { wanted: 0 }
        );
        assert_eq!(judge_chunk(&mut incoming, other(50), point(4), 0, 4), ChunkVerdict::Take);
        assert_eq!(incoming.map(|i| i.from), Some(NodeId(2)));
    }
}
