//! Snapshots and compaction of the Multi-Paxos node (see "Snapshots" in
//! [`node`](super)): the snapshot policy, adopting a snapshot taken here or
//! installed from a peer, and both ends of a chunked transfer.

use super::{PaxosNode, PaxosOutput};
use crate::ballot::Ballot;
use crate::multi::message::Message;
use crate::multi::snapshot::{ChunkVerdict, SnapshotPoint, Transfer, judge_chunk};
use crate::multi::storage::Write;
use bytes::Bytes;
use synod_core::protocol::{SnapshotAction, SnapshotMeta};
use synod_core::{NodeId, Role, Time};

impl PaxosNode {
    /// The snapshot policy: every `snapshot_interval_slots` chosen slots,
    /// except while backing off after [`PaxosNode::snapshot_failed`].
    pub(super) fn maybe_request_snapshot(&mut self, out: &mut PaxosOutput) {
        let interval = self.config.snapshot_interval_slots;
        if self.snapshot_retry_at.is_some() {
            return; // the host failed the last one: back off until a tick ends it
        }
        if interval > 0
            && self.snapshot_requested.is_none()
            && self.chosen_slot >= self.snapshot.slot + interval
        {
            self.request_snapshot(out);
        }
    }

    /// Asks the host for a snapshot at the end of the chosen slot.
    pub(super) fn request_snapshot(&mut self, out: &mut PaxosOutput) {
        assert!(self.chosen_slot > self.snapshot.slot, "nothing new to snapshot");
        self.snapshot_requested = Some((self.applied_position, self.chosen_slot));
        self.snapshot_retry_at = None;
        out.snapshots.push(SnapshotAction::Take { index: self.applied_position });
    }

    /// The host holds the snapshot at `index` (which we asked for): adopt
    /// it and purge all but the trailing slots before it.
    pub(super) fn on_snapshot_taken(&mut self, index: u64, size_bytes: u64, out: &mut PaxosOutput) {
        let Some((position, slot)) = self.snapshot_requested else { return };
        if position != index {
            return; // not the one asked for (a stale answer)
        }
        self.snapshot_requested = None;
        if slot <= self.snapshot.slot {
            return; // a newer snapshot was installed meanwhile
        }
        let entry = self.log.get(slot).expect("a chosen slot after the purged prefix is held");
        let meta = SnapshotMeta { index, epoch: entry.ballot.round, size_bytes };
        let point = SnapshotPoint { slot, meta };
        let purge_slot =
            slot.saturating_sub(self.config.snapshot_trailing_slots).max(self.log.purged_slot());
        self.adopt_snapshot(point, purge_slot, out);
    }

    /// Records `point` as the snapshot to recover from and purges the log
    /// up to `purge_slot`.
    fn adopt_snapshot(&mut self, point: SnapshotPoint, purge_slot: u64, out: &mut PaxosOutput) {
        assert!(point.slot > self.snapshot.slot, "snapshots only move forward");
        assert!(purge_slot <= point.slot && point.slot <= self.chosen_slot, "{point:?} not chosen");
        self.snapshot = point;
        self.log.purge(purge_slot);
        out.writes.push(Write::Snapshot { point, purge_slot });
    }

    // ----- sending ---------------------------------------------------------

    /// Starts (or resumes) sending this node's snapshot to the peer at
    /// `position`, in `ballot`, and asks the host for the chunk wanted.
    pub(super) fn send_snapshot(&mut self, position: usize, ballot: Ballot, out: &mut PaxosOutput) {
        let point = self.snapshot;
        assert!(point.exists(), "a node with a purged prefix has a snapshot");
        let p = &mut self.peers[position];
        let offset = match p.transfer {
            Some(t) if t.point == point => t.offset,
            _ => 0,
        };
        p.transfer = Some(Transfer { point, offset, ballot });
        out.snapshots.push(SnapshotAction::Read {
            to: p.id,
            index: point.meta.index,
            offset,
            max_bytes: self.config.snapshot_chunk_bytes,
        });
    }

    /// The host read the chunk asked for: send it if it is still wanted.
    pub(super) fn on_snapshot_chunk(
        &mut self,
        to: NodeId,
        index: u64,
        offset: u64,
        data: Bytes,
        out: &mut PaxosOutput,
    ) {
        let Some(position) = self.peer_position(to) else { return };
        let Some(t) = self.peers[position].transfer else { return };
        let len = data.len() as u64;
        let size = t.point.meta.size_bytes;
        let wanted = t.point == self.snapshot
            && t.point.meta.index == index
            && t.offset == offset
            && len <= self.config.snapshot_chunk_bytes as u64
            && offset + len <= size
            && (len > 0 || offset == size);
        // Chunks go in this leader's ballot, or in the ballot of the
        // candidate this acceptor promised.
        let sender_ok = if t.ballot.node == self.id {
            self.role == Role::Leader && t.ballot == self.ballot
        } else {
            t.ballot == self.promised && t.ballot.node == to
        };
        if wanted && sender_ok {
            out.send(to, Message::Snapshot { ballot: t.ballot, point: t.point, offset, data });
        }
    }

    /// `from` answered a chunk: ask for the next one, or finish.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_snapshot_ack(
        &mut self,
        now: Time,
        from: NodeId,
        ballot: Ballot,
        index: u64,
        offset: u64,
        done: bool,
        out: &mut PaxosOutput,
    ) {
        let Some(position) = self.peer_position(from) else { return };
        let leading = self.role == Role::Leader && ballot == self.ballot;
        if leading {
            self.peers[position].last_heard = now;
        }
        let Some(t) = self.peers[position].transfer.filter(|t| t.point.meta.index == index) else {
            return;
        };
        if done {
            let p = &mut self.peers[position];
            p.transfer = None;
            if leading {
                p.chosen_slot = p.chosen_slot.max(t.point.slot);
                p.behind = p.chosen_slot < self.chosen_slot;
                p.catch_up_slot = 0;
                self.maybe_catch_up(position, out);
            }
        } else if offset != t.offset && offset <= t.point.meta.size_bytes {
            self.peers[position].transfer = Some(Transfer { offset, ..t });
            self.send_snapshot(position, t.ballot, out);
        }
    }

    /// A heartbeat: resend the chunk each transfer waits on (it may have
    /// been lost), from the latest snapshot.
    pub(super) fn resend_snapshot_chunks(&mut self, out: &mut PaxosOutput) {
        for position in 0..self.peers.len() {
            if self.peers[position].transfer.is_none() {
                continue;
            }
            if self.peers[position].chosen_slot >= self.snapshot.slot {
                self.peers[position].transfer = None;
            } else {
                self.send_snapshot(position, self.ballot, out);
            }
        }
    }

    // ----- receiving -------------------------------------------------------

    /// A chunk of `from`'s snapshot in `ballot`.
    pub(super) fn on_snapshot(
        &mut self,
        now: Time,
        from: NodeId,
        ballot: Ballot,
        point: SnapshotPoint,
        (offset, data): (u64, Bytes),
        out: &mut PaxosOutput,
    ) {
        if ballot.node == from {
            // From a leader: leader contact, like an accept.
            if !self.follow(now, from, ballot, out) {
                return;
            }
        } else if ballot.node != self.id || self.role == Role::Leader {
            return; // not for a campaign of ours, or we lead already
        }
        let index = point.meta.index;
        let ack = |offset: u64, done: bool, out: &mut PaxosOutput| {
            out.send(from, Message::SnapshotAck { ballot, index, offset, done });
        };
        if point.slot <= self.chosen_slot {
            ack(point.meta.size_bytes, true, out); // we hold all of it already
            return;
        }
        if index <= self.applied_position {
            // Every slot holds at least one position, so a snapshot of
            // slots beyond ours that ends at or before our applied position
            // cannot come from a correct peer: refuse it rather than
            // install state older than what was applied.
            return;
        }
        let len = data.len() as u64;
        let sender = (from, now, self.config.heartbeat_interval);
        if let ChunkVerdict::Refuse { wanted } =
            judge_chunk(&mut self.incoming, sender, point, offset, len)
        {
            ack(wanted, false, out);
            return;
        }
        if offset == 0 || len > 0 {
            out.snapshots.push(SnapshotAction::Write {
                index,
                epoch: point.meta.epoch,
                offset,
                data,
            });
        }
        let incoming = self.incoming.as_mut().expect("judged a chunk of it");
        incoming.received += len;
        incoming.last_progress = now;
        if incoming.received < point.meta.size_bytes {
            let received = incoming.received;
            ack(received, false, out);
            return;
        }
        self.install_snapshot(point, out);
        ack(point.meta.size_bytes, true, out);
        if self.role == Role::Candidate {
            // Phase 1 asked about slots now known chosen: start over from
            // the first unchosen slot.
            self.campaign(now, out);
        } else {
            self.choose_held(out);
        }
    }

    /// The last chunk arrived: the snapshot replaces every slot up to its
    /// own; acceptances after it are kept (they are still votes).
    fn install_snapshot(&mut self, point: SnapshotPoint, out: &mut PaxosOutput) {
        assert!(point.slot > self.chosen_slot, "installing a snapshot of chosen slots");
        assert!(
            point.meta.index > self.applied_position,
            "snapshot at {} of slot {} behind applied {}",
            point.meta.index,
            point.slot,
            self.applied_position
        );
        self.incoming = None;
        self.snapshot_requested = None;
        out.snapshots.push(SnapshotAction::Install { meta: point.meta });
        self.chosen_slot = point.slot;
        self.applied_position = point.meta.index;
        self.adopt_snapshot(point, point.slot, out);
    }
}
