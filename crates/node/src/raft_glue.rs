//! Raft on a real node: the wire format of [`synod_raft::Message`], log
//! entries as write-ahead-log records, and [`synod_raft::Write`]s carried out
//! on the [`Disk`].
//!
//! - `HardState { term, voted_for }` and `Snapshot` rewrite the hard-state
//!   file ([`RaftHardState`]: term, vote, snapshot metadata, purged index and
//!   term), which is replaced atomically.
//! - `Append` truncates a conflicting suffix of the log (durably) and appends
//!   one record per entry (synced by the driver's group commit).
//! - `Snapshot` whose entry the log holds: the hard state first, then whole
//!   WAL segments up to the purge index go (a crash in between leaves extra
//!   records below the purged index, which recovery skips). A `Snapshot` the
//!   log disagrees with empties the log: the hard state records
//!   `reset_index` first, then the WAL is emptied; if a crash interrupts,
//!   recovery sees records at or below `reset_index` (a reset log only ever
//!   holds records above it) and finishes the job.
//! - Each hard-state save also records `synced_index`, the log's durable
//!   index then; a truncation below it saves it lowered first. Recovery
//!   refuses a log that ends before it or before the snapshot
//!   ([`crate::disk`]'s "A log that ends too early").

use crate::disk::Disk;
use crate::error::NodeError;
use crate::glue::{NodeProtocol, ProtocolSettings};
use crate::wire::{Reader, WireError, Writer};
use bytes::Bytes;
use std::collections::BTreeSet;
use synod_core::protocol::SnapshotMeta;
use synod_core::{ClientId, Command, NodeId, ProposeError, Time};
use synod_raft::membership::Membership;
use synod_raft::{Config, Durable, Entry, Message, Payload, RaftNode, RaftOutput, Write};

/// Version 2 adds `synced_index`; a version-1 file (written before it)
/// still reads, with `synced_index` 0 (nothing to check until the next
/// save).
const HARD_STATE_VERSION: u8 = 2;

/// What the hard-state file holds for Raft.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftHardState {
    /// Current term.
    pub term: u64,
    /// Vote in `term`.
    pub voted_for: Option<NodeId>,
    /// The latest snapshot (index 0: none).
    pub snapshot: SnapshotMeta,
    /// Entries up to here are gone from the log.
    pub purged_index: u64,
    /// Term of the entry at `purged_index`.
    pub purged_term: u64,
    /// The configuration in effect at the snapshot (`None`: no snapshot).
    pub snapshot_membership: Option<Membership>,
    /// The log was emptied after a snapshot at this index it disagreed
    /// with; every record the log holds since is above it.
    pub reset_index: u64,
    /// Every entry up to here was durable in this node's log when the hard
    /// state was last saved (so it may have been acknowledged to a leader
    /// or counted toward a commit), and no truncation has removed it since:
    /// a lower bound of where the log must end after recovery. Raised at
    /// each save (a vote, a term, a snapshot: no save of its own), lowered
    /// (durably, first) before a conflict or a disagreeing snapshot cuts
    /// the log below it.
    pub synced_index: u64,
}

impl RaftHardState {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(HARD_STATE_VERSION)
            .u64(self.term)
            .opt_u64(self.voted_for.map(|n| n.0))
            .u64(self.snapshot.index)
            .u64(self.snapshot.epoch)
            .u64(self.snapshot.size_bytes)
            .u64(self.purged_index)
            .u64(self.purged_term)
            .u64(self.reset_index)
            .u64(self.synced_index);
        match &self.snapshot_membership {
            None => {
                w.u8(0);
            }
            Some(m) => {
                w.u8(1);
                put_membership(&mut w, m);
            }
        }
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<RaftHardState, WireError> {
        let mut r = Reader::new("raft hard state", bytes);
        let version = r.u8()?;
        if !(1..=HARD_STATE_VERSION).contains(&version) {
            return Err(r.invalid(format!("unsupported version {version}")));
        }
        let h = RaftHardState {
            term: r.u64()?,
            voted_for: r.opt_u64()?.map(NodeId),
            snapshot: SnapshotMeta { index: r.u64()?, epoch: r.u64()?, size_bytes: r.u64()? },
            purged_index: r.u64()?,
            purged_term: r.u64()?,
            reset_index: r.u64()?,
            synced_index: if version >= 2 { r.u64()? } else { 0 },
            snapshot_membership: match r.u8()? {
                0 => None,
                1 => Some(get_membership(&mut r)?),
                t => return Err(r.invalid(format!("bad membership tag {t}"))),
            },
        };
        r.finish()?;
        Ok(h)
    }

    /// Saves the hard state, raising `synced_index` to what the log has
    /// made durable so far (capped at `cap`: a truncation about to cut the
    /// log there).
    fn save_capped(&mut self, disk: &mut Disk, cap: u64) -> Result<(), NodeError> {
        self.synced_index = self.synced_index.max(disk.wal.durable_index()).min(cap);
        Ok(disk.hard_state.save(&self.encode())?)
    }

    fn save(&mut self, disk: &mut Disk) -> Result<(), NodeError> {
        self.save_capped(disk, u64::MAX)
    }
}

/// Most ids in one membership set on disk or the wire.
const MAX_MEMBERS: u32 = 1 << 16;

fn put_ids(w: &mut Writer, ids: &BTreeSet<NodeId>) {
    w.u32(ids.len() as u32);
    for id in ids {
        w.u64(id.0);
    }
}

fn get_ids(r: &mut Reader<'_>) -> Result<BTreeSet<NodeId>, WireError> {
    let count = r.u32()?;
    if count > MAX_MEMBERS {
        return Err(r.invalid(format!("{count} ids in a membership")));
    }
    let mut ids = BTreeSet::new();
    for _ in 0..count {
        ids.insert(NodeId(r.u64()?));
    }
    Ok(ids)
}

fn put_membership(w: &mut Writer, m: &Membership) {
    put_ids(w, &m.voters);
    put_ids(w, &m.outgoing);
    put_ids(w, &m.learners);
    put_ids(w, &m.removed);
}

fn get_membership(r: &mut Reader<'_>) -> Result<Membership, WireError> {
    Ok(Membership {
        voters: get_ids(r)?,
        outgoing: get_ids(r)?,
        learners: get_ids(r)?,
        removed: get_ids(r)?,
    })
}

fn put_entry(w: &mut Writer, e: &Entry) {
    w.u64(e.term).u64(e.index);
    match &e.payload {
        Payload::Noop => {
            w.u8(0);
        }
        Payload::Command(c) => {
            w.u8(1).u64(c.client.0).u64(c.seq).bytes(&c.op);
        }
        Payload::Config(m) => {
            w.u8(2);
            put_membership(w, m);
        }
    }
}

/// The bytes [`put_entry`] writes for `e`, so that buffers are allocated
/// once at their final size (a growing `Vec` reallocates about once per
/// doubling: seven times for one 256-byte put).
fn entry_len(e: &Entry) -> usize {
    const HEAD: usize = 8 + 8 + 1;
    HEAD + match &e.payload {
        Payload::Noop => 0,
        Payload::Command(c) => 8 + 8 + 4 + c.op.len(),
        Payload::Config(m) => {
            4 * 4 + 8 * (m.voters.len() + m.outgoing.len() + m.learners.len() + m.removed.len())
        }
    }
}

fn get_entry(r: &mut Reader<'_>) -> Result<Entry, WireError> {
    let term = r.u64()?;
    let index = r.u64()?;
    let payload = match r.u8()? {
        0 => Payload::Noop,
        1 => {
            Payload::Command(Command { client: ClientId(r.u64()?), seq: r.u64()?, op: r.bytes()? })
        }
        2 => Payload::Config(Box::new(get_membership(r)?)),
        t => return Err(r.invalid(format!("bad entry tag {t}"))),
    };
    Ok(Entry { term, index, payload })
}

/// An entry as one log record.
pub fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut w = Writer::with_capacity(entry_len(e));
    put_entry(&mut w, e);
    w.finish()
}

/// A log record back to an entry.
pub fn decode_entry(bytes: &Bytes) -> Result<Entry, WireError> {
    let mut r = Reader::shared("raft log entry", bytes);
    let e = get_entry(&mut r)?;
    r.finish()?;
    Ok(e)
}

/// Most entries one AppendEntries message may carry on the wire (the core's
/// own limit is far lower; this bounds what a hostile peer can make us
/// allocate per message).
const MAX_WIRE_ENTRIES: u32 = 1 << 16;

fn encode(msg: &Message) -> Vec<u8> {
    let mut w = match msg {
        Message::AppendEntries { entries, .. } => {
            Writer::with_capacity(1 + 5 * 8 + 4 + entries.iter().map(entry_len).sum::<usize>())
        }
        Message::InstallSnapshot { data, .. } => Writer::with_capacity(1 + 5 * 8 + 4 + data.len()),
        _ => Writer::with_capacity(64),
    };
    match msg {
        Message::PreVote { term, last_log_index, last_log_term } => {
            w.u8(1).u64(*term).u64(*last_log_index).u64(*last_log_term);
        }
        Message::PreVoteResponse { term, granted } => {
            w.u8(2).u64(*term).bool(*granted);
        }
        Message::RequestVote { term, last_log_index, last_log_term, transfer } => {
            w.u8(3).u64(*term).u64(*last_log_index).u64(*last_log_term).bool(*transfer);
        }
        Message::RequestVoteResponse { term, granted } => {
            w.u8(4).u64(*term).bool(*granted);
        }
        Message::AppendEntries {
            term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            read_round,
        } => {
            w.u8(5).u64(*term).u64(*prev_log_index).u64(*prev_log_term);
            w.u64(*leader_commit).u64(*read_round);
            w.u32(u32::try_from(entries.len()).expect("the core bounds entries per append"));
            for e in entries {
                put_entry(&mut w, e);
            }
        }
        Message::AppendEntriesResponse {
            term,
            success,
            match_index,
            conflict_term,
            conflict_index,
            read_round,
        } => {
            w.u8(6).u64(*term).bool(*success).u64(*match_index);
            w.u64(*conflict_term).u64(*conflict_index).u64(*read_round);
        }
        Message::TimeoutNow { term } => {
            w.u8(7).u64(*term);
        }
        Message::InstallSnapshot {
            term,
            index,
            last_term,
            size_bytes,
            offset,
            data,
            membership,
        } => {
            w.u8(8).u64(*term).u64(*index).u64(*last_term).u64(*size_bytes).u64(*offset);
            w.bytes(data);
            put_membership(&mut w, membership);
        }
        Message::InstallSnapshotResponse { term, index, offset, done } => {
            w.u8(9).u64(*term).u64(*index).u64(*offset).bool(*done);
        }
        Message::Removed { term } => {
            w.u8(10).u64(*term);
        }
        Message::ReadIndex { term, id } => {
            w.u8(11).u64(*term).u64(*id);
        }
        Message::ReadIndexResponse { term, id, index } => {
            w.u8(12).u64(*term).u64(*id).bool(index.is_some()).u64(index.unwrap_or(0));
        }
    }
    w.finish()
}

fn decode(bytes: &Bytes) -> Result<Message, WireError> {
    let mut r = Reader::shared("raft message", bytes);
    let msg = match r.u8()? {
        1 => Message::PreVote { term: r.u64()?, last_log_index: r.u64()?, last_log_term: r.u64()? },
        2 => Message::PreVoteResponse { term: r.u64()?, granted: r.bool()? },
        3 => Message::RequestVote {
            term: r.u64()?,
            last_log_index: r.u64()?,
            last_log_term: r.u64()?,
            transfer: r.bool()?,
        },
        4 => Message::RequestVoteResponse { term: r.u64()?, granted: r.bool()? },
        5 => {
            let term = r.u64()?;
            let prev_log_index = r.u64()?;
            let prev_log_term = r.u64()?;
            let leader_commit = r.u64()?;
            let read_round = r.u64()?;
            let count = r.u32()?;
            if count > MAX_WIRE_ENTRIES {
                return Err(r.invalid(format!("{count} entries in one append")));
            }
            let mut entries = Vec::with_capacity((count as usize).min(r.remaining() / 17));
            for k in 0..u64::from(count) {
                let e = get_entry(&mut r)?;
                if e.index != prev_log_index.wrapping_add(1 + k) {
                    return Err(r.invalid("entries are not consecutive after prev_log_index"));
                }
                entries.push(e);
            }
            Message::AppendEntries {
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_round,
            }
        }
        6 => Message::AppendEntriesResponse {
            term: r.u64()?,
            success: r.bool()?,
            match_index: r.u64()?,
            conflict_term: r.u64()?,
            conflict_index: r.u64()?,
            read_round: r.u64()?,
        },
        7 => Message::TimeoutNow { term: r.u64()? },
        8 => Message::InstallSnapshot {
            term: r.u64()?,
            index: r.u64()?,
            last_term: r.u64()?,
            size_bytes: r.u64()?,
            offset: r.u64()?,
            data: r.bytes()?,
            membership: Box::new(get_membership(&mut r)?),
        },
        9 => Message::InstallSnapshotResponse {
            term: r.u64()?,
            index: r.u64()?,
            offset: r.u64()?,
            done: r.bool()?,
        },
        10 => Message::Removed { term: r.u64()? },
        11 => Message::ReadIndex { term: r.u64()?, id: r.u64()? },
        12 => {
            let term = r.u64()?;
            let id = r.u64()?;
            let known = r.bool()?;
            let index = r.u64()?;
            Message::ReadIndexResponse { term, id, index: known.then_some(index) }
        }
        t => return Err(r.invalid(format!("unknown message tag {t}"))),
    };
    r.finish()?;
    Ok(msg)
}

/// Refuses a recovered log that ends before what the hard state vouches
/// for: entries this node had made durable by its last save
/// (`synced_index`), or the snapshot it recorded (the core cannot start
/// from a snapshot beyond its log). A torn tail cut off is legitimate only
/// for entries never synced, hence never acknowledged.
fn check_log_end(disk: &Disk, hard: &RaftHardState, durable: &Durable) -> Result<(), NodeError> {
    let last_index = durable.last_index();
    disk.check_log_reaches(
        "index",
        last_index,
        hard.synced_index,
        "the last entry the hard state records as synced (and possibly acknowledged)",
    )?;
    disk.check_log_reaches(
        "index",
        last_index,
        hard.snapshot.index,
        "the index of the snapshot the hard state records",
    )
}

/// The term of the entry at `index`, if the log (or its purged boundary)
/// still knows it.
fn term_at(disk: &Disk, hard: &RaftHardState, index: u64) -> Result<Option<u64>, NodeError> {
    if index == hard.purged_index {
        return Ok(Some(hard.purged_term));
    }
    let wal = &disk.wal;
    if index < hard.purged_index
        || wal.last_index() == 0
        || index < wal.first_index()
        || index > wal.last_index()
    {
        return Ok(None);
    }
    Ok(Some(decode_entry(&wal.entry(index)?)?.term))
}

impl NodeProtocol for RaftNode {
    const NAME: &'static str = "raft";
    type HardState = RaftHardState;

    fn config(voters: Vec<NodeId>, settings: &ProtocolSettings) -> Result<Config, String> {
        let mut c = Config::new(voters);
        c.election_timeout_min = settings.election_timeout_min;
        c.election_timeout_max = settings.election_timeout_max;
        c.heartbeat_interval = settings.heartbeat_interval;
        c.snapshot_interval_entries = settings.snapshot_interval_entries;
        c.snapshot_trailing_entries = 1000.min(settings.snapshot_interval_entries);
        c.leader_parallel_write = Self::PARALLEL_LEADER_WRITE;
        c.validate()?;
        Ok(c)
    }

    /// A leader's AppendEntries (entries or heartbeat): its followers'
    /// fsyncs then run alongside its own.
    fn leaves_before_sync(msg: &Message) -> bool {
        matches!(msg, Message::AppendEntries { .. })
    }

    /// The leader syncs its appends off the driver's thread (thesis
    /// §10.2.1): its round goes on while the fsync runs, and it counts
    /// itself toward a quorum once the sync reports back.
    const PARALLEL_LEADER_WRITE: bool = true;

    fn encode_message(msg: &Message) -> Vec<u8> {
        encode(msg)
    }

    fn decode_message(bytes: &Bytes) -> Result<Message, WireError> {
        decode(bytes)
    }

    fn transfer_leadership(
        &mut self,
        now: Time,
        to: NodeId,
        out: &mut RaftOutput,
    ) -> Option<Result<(), ProposeError>> {
        Some(RaftNode::transfer_leadership(self, now, to, out))
    }

    fn recover_durable(
        disk: &mut Disk,
        saved: Option<&[u8]>,
    ) -> Result<(RaftHardState, Durable), NodeError> {
        let hard = match saved {
            Some(bytes) => RaftHardState::decode(bytes)?,
            None => RaftHardState::default(),
        };
        let wal = &mut disk.wal;
        if hard.reset_index > 0 && wal.last_index() > 0 && wal.first_index() <= hard.reset_index {
            tracing::warn!(reset_index = hard.reset_index, "finishing an interrupted log reset");
            wal.truncate_suffix(wal.first_index())?;
        }
        let mut durable = Durable {
            term: hard.term,
            voted_for: hard.voted_for,
            snapshot: hard.snapshot,
            snapshot_membership: hard.snapshot_membership.clone(),
            purged_index: hard.purged_index,
            purged_term: hard.purged_term,
            log: Vec::new(),
        };
        let start = hard.purged_index + 1;
        if wal.last_index() >= start {
            if wal.first_index() > start {
                return Err(NodeError::Corrupt(format!(
                    "the log in {} starts at index {} but the hard state needs every entry \
                     after {}",
                    wal.dir().display(),
                    wal.first_index(),
                    hard.purged_index
                )));
            }
            for item in wal.entries(start..=wal.last_index())? {
                let (index, payload) = item?;
                let entry = decode_entry(&payload)?;
                if entry.index != index {
                    return Err(NodeError::Corrupt(format!(
                        "log record {index} holds the entry for index {}",
                        entry.index
                    )));
                }
                durable.log.push(entry);
            }
        }
        check_log_end(disk, &hard, &durable)?;
        Ok((hard, durable))
    }

    fn snapshot_failed(&mut self, now: Time, index: u64) {
        RaftNode::snapshot_failed(self, now, index);
    }

    fn persist(
        disk: &mut Disk,
        hard: &mut RaftHardState,
        writes: &[Write],
    ) -> Result<(), NodeError> {
        for write in writes {
            match write {
                Write::HardState { term, voted_for } => {
                    hard.term = *term;
                    hard.voted_for = *voted_for;
                    hard.save(disk)?;
                }
                Write::Append { entries } => {
                    let Some(first) = entries.first() else { continue };
                    if disk.wal.last_index() >= first.index {
                        if hard.synced_index >= first.index {
                            // A conflict below what the hard state vouches
                            // for (never a committed entry): lower it first.
                            hard.save_capped(disk, first.index - 1)?;
                        }
                        disk.wal.truncate_suffix(first.index)?;
                    }
                    let wal = &mut disk.wal;
                    // All records in one buffer: one allocation per round,
                    // not one per entry.
                    let mut w = Writer::with_capacity(entries.iter().map(entry_len).sum());
                    let mut ends = Vec::with_capacity(entries.len());
                    for e in entries.iter() {
                        put_entry(&mut w, e);
                        ends.push(w.len());
                    }
                    let buf = w.finish();
                    let mut start = 0;
                    let payloads: Vec<&[u8]> = ends
                        .iter()
                        .map(|&end| {
                            let p = &buf[start..end];
                            start = end;
                            p
                        })
                        .collect();
                    wal.append(first.index, &payloads)?;
                }
                Write::Snapshot { meta, purge_index, membership } => {
                    hard.snapshot_membership = Some(membership.clone());
                    assert!(*purge_index <= meta.index, "purge beyond the snapshot");
                    if term_at(disk, hard, meta.index)? == Some(meta.epoch) {
                        if meta.index > disk.wal.durable_index() {
                            // A leader may apply (and snapshot) entries a
                            // quorum of followers made durable before its
                            // own copy is: make it durable before the hard
                            // state names the snapshot, or a crash leaves
                            // a snapshot beyond the log.
                            disk.wal.sync()?;
                        }
                        if *purge_index > hard.purged_index {
                            let purged_term =
                                term_at(disk, hard, *purge_index)?.ok_or_else(|| {
                                    NodeError::Corrupt(format!(
                                        "entry {purge_index} to purge is not in the log"
                                    ))
                                })?;
                            hard.purged_index = *purge_index;
                            hard.purged_term = purged_term;
                        }
                        hard.snapshot = *meta;
                        hard.save(disk)?;
                        // The files go after the round's sync, on a thread
                        // of their own (see `Disk`).
                        disk.wal.detach_prefix(hard.purged_index)?;
                    } else {
                        hard.snapshot = *meta;
                        hard.purged_index = meta.index;
                        hard.purged_term = meta.epoch;
                        hard.reset_index = meta.index;
                        // The log goes; the snapshot stands for it up to
                        // `meta.index`.
                        hard.save_capped(disk, meta.index)?;
                        let wal = &mut disk.wal;
                        if wal.last_index() > 0 {
                            wal.truncate_suffix(wal.first_index())?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn e(term: u64, index: u64) -> Entry {
        let payload = if index.is_multiple_of(2) {
            Payload::Noop
        } else {
            Payload::Command(Command::new(ClientId(7), index, Bytes::from(vec![index as u8; 3])))
        };
        Entry { term, index, payload }
    }

    fn members() -> Membership {
        let ids = |v: &[u64]| v.iter().map(|&i| NodeId(i)).collect::<BTreeSet<_>>();
        Membership {
            voters: ids(&[1, 2, 3]),
            outgoing: ids(&[1, 2]),
            learners: ids(&[4]),
            removed: ids(&[9]),
        }
    }

    fn all_messages() -> Vec<Message> {
        vec![
            Message::PreVote { term: 3, last_log_index: 9, last_log_term: 2 },
            Message::PreVoteResponse { term: 3, granted: true },
            Message::RequestVote { term: 4, last_log_index: 9, last_log_term: 2, transfer: true },
            Message::RequestVoteResponse { term: 4, granted: false },
            Message::AppendEntries {
                term: 4,
                prev_log_index: 9,
                prev_log_term: 2,
                entries: vec![
                    e(4, 10),
                    e(4, 11),
                    Entry { term: 4, index: 12, payload: Payload::Config(Box::new(members())) },
                ],
                leader_commit: 9,
                read_round: 5,
            },
            Message::AppendEntriesResponse {
                term: 4,
                success: false,
                match_index: 9,
                conflict_term: 2,
                conflict_index: 7,
                read_round: 5,
            },
            Message::TimeoutNow { term: 4 },
            Message::InstallSnapshot {
                term: 4,
                index: 100,
                last_term: 3,
                size_bytes: 10,
                offset: 4,
                data: Bytes::from_static(b"abcdef"),
                membership: Box::new(members()),
            },
            Message::InstallSnapshotResponse { term: 4, index: 100, offset: 10, done: true },
            Message::Removed { term: 9 },
            Message::ReadIndex { term: 9, id: 77 },
            Message::ReadIndexResponse { term: 9, id: 77, index: Some(120) },
            Message::ReadIndexResponse { term: 9, id: 78, index: None },
        ]
    }

    #[test]
    fn entry_and_append_buffers_are_sized_exactly() {
        let config = Entry { term: 4, index: 12, payload: Payload::Config(Box::new(members())) };
        for entry in [e(4, 10), e(4, 11), config] {
            let bytes = encode_entry(&entry);
            assert_eq!(bytes.len(), entry_len(&entry), "{entry:?}");
            assert_eq!(bytes.capacity(), bytes.len(), "{entry:?}");
        }
        let append = &all_messages()[4];
        assert!(matches!(append, Message::AppendEntries { .. }));
        let bytes = encode(append);
        assert_eq!(bytes.capacity(), bytes.len(), "one allocation, no slack");
    }

    #[test]
    fn every_message_round_trips_and_every_truncation_is_an_error() {
        crate::glue::checks::codec_round_trips_and_refuses_truncations::<RaftNode>(&all_messages());
    }

    #[test]
    fn non_consecutive_entries_are_refused() {
        let m = Message::AppendEntries {
            term: 4,
            prev_log_index: 9,
            prev_log_term: 2,
            entries: vec![e(4, 10), e(4, 12)],
            leader_commit: 9,
            read_round: 5,
        };
        let err = decode(&Bytes::from(encode(&m))).unwrap_err();
        assert!(err.reason.contains("consecutive"), "{err}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&Bytes::from(data.clone()));
            let _ = decode_entry(&Bytes::from(data.clone()));
            let _ = RaftHardState::decode(&data);
        }
    }

    fn check_against_model(batches: &[Vec<Write>]) {
        crate::glue::checks::recovery_matches_the_model::<RaftNode>(batches);
    }

    #[test]
    fn appends_conflicts_and_hard_state_recover_as_written() {
        check_against_model(&[
            vec![Write::HardState { term: 1, voted_for: Some(NodeId(1)) }],
            vec![Write::Append { entries: vec![e(1, 1), e(1, 2), e(1, 3)] }],
            vec![Write::Append { entries: vec![e(2, 2), e(2, 3), e(2, 4)] }],
            vec![
                Write::HardState { term: 3, voted_for: None },
                Write::Append { entries: vec![e(3, 5)] },
            ],
        ]);
    }

    #[test]
    fn a_matching_snapshot_purges_and_a_disagreeing_one_resets_the_log() {
        let matching = SnapshotMeta { index: 3, epoch: 1, size_bytes: 10 };
        let disagreeing = SnapshotMeta { index: 8, epoch: 5, size_bytes: 10 };
        check_against_model(&[
            vec![Write::Append { entries: (1..=5).map(|i| e(1, i)).collect() }],
            vec![Write::Snapshot { meta: matching, purge_index: 2, membership: members() }],
            vec![Write::Append { entries: vec![e(2, 6)] }],
            vec![Write::Snapshot { meta: disagreeing, purge_index: 8, membership: members() }],
            vec![Write::Append { entries: vec![e(5, 9), e(5, 10)] }],
        ]);
    }

    #[test]
    fn an_interrupted_reset_is_finished_on_recovery() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut disk, _) = Disk::open(dir.path()).expect("open");
            let mut hard = RaftHardState::default();
            let entries: Vec<Entry> = (1..=5).map(|i| e(1, i)).collect();
            RaftNode::persist(&mut disk, &mut hard, &[Write::Append { entries }]).expect("append");
            disk.sync().expect("sync");
            // The hard state of a reset at 8 was saved, then the crash came.
            hard.snapshot = SnapshotMeta { index: 8, epoch: 5, size_bytes: 1 };
            hard.purged_index = 8;
            hard.purged_term = 5;
            hard.reset_index = 8;
            hard.save(&mut disk).expect("save");
        }
        let (mut disk, saved) = Disk::open(dir.path()).expect("reopen");
        let (_, durable) = RaftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        assert!(durable.log.is_empty(), "stale entries came back: {:?}", durable.log);
        assert_eq!((durable.purged_index, durable.last_index()), (8, 8));
        assert_eq!(disk.wal.last_index(), 0);
    }

    /// A data directory whose log holds entries 1..=`last` (term 1), all
    /// synced, and whose hard state was saved (a vote) once entries up to
    /// `voted_after` were synced.
    fn written(dir: &std::path::Path, voted_after: u64, last: u64) {
        let (mut disk, saved) = Disk::open(dir).expect("open");
        let (mut hard, _) =
            RaftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        let append =
            |from: u64, to: u64| Write::Append { entries: (from..=to).map(|i| e(1, i)).collect() };
        RaftNode::persist(&mut disk, &mut hard, &[append(1, voted_after)]).expect("append");
        disk.sync().expect("sync");
        let vote = Write::HardState { term: 1, voted_for: Some(NodeId(2)) };
        RaftNode::persist(&mut disk, &mut hard, &[vote]).expect("vote");
        assert_eq!(hard.synced_index, voted_after);
        if last > voted_after {
            RaftNode::persist(&mut disk, &mut hard, &[append(voted_after + 1, last)])
                .expect("append");
            disk.sync().expect("sync");
        }
    }

    #[test]
    fn a_torn_tail_below_the_synced_index_refuses_to_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        written(dir.path(), 10, 10);
        let cut = crate::disk::test_support::tear_log_from(dir.path(), 10);
        let (mut disk, saved) = Disk::open(dir.path()).expect("the log itself opens");
        let torn = disk.torn_tail().expect("the damaged record was cut").clone();
        assert_eq!((&torn.path, torn.offset), (&cut.0, cut.1));
        let err = RaftNode::recover_durable(&mut disk, saved.as_deref()).expect_err("refused");
        let message = crate::disk::test_support::assert_lost_log(
            &err,
            dir.path(),
            &cut,
            &["ends at index 9", "index 10 is lost", "synod member remove"],
        );
        assert!(!message.contains("  "), "one line, single spaces: {message}");
        // The cut is made; a second start still refuses (the hard state
        // still vouches for entry 10).
        drop(disk);
        let (mut disk, saved) = Disk::open(dir.path()).expect("reopen");
        assert!(disk.torn_tail().is_none());
        let err = RaftNode::recover_durable(&mut disk, saved.as_deref()).expect_err("refused");
        assert!(err.to_string().contains("index 10 is lost"), "{err}");
    }

    #[test]
    fn a_torn_tail_above_the_synced_index_is_cut_and_recovery_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        written(dir.path(), 10, 12);
        crate::disk::test_support::tear_log_from(dir.path(), 12);
        let (mut disk, saved) = Disk::open(dir.path()).expect("open");
        assert!(disk.torn_tail().is_some(), "the damaged record was cut");
        let (hard, durable) =
            RaftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        assert_eq!(hard.synced_index, 10);
        assert_eq!(durable.log, (1..=11).map(|i| e(1, i)).collect::<Vec<_>>());
        drop(disk);
        // Down to the synced index itself, and no further.
        crate::disk::test_support::tear_log_from(dir.path(), 11);
        let (mut disk, saved) = Disk::open(dir.path()).expect("open");
        let (_, durable) = RaftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        assert_eq!(durable.last_index(), 10);
        drop(disk);
        crate::disk::test_support::tear_log_from(dir.path(), 8);
        let (mut disk, saved) = Disk::open(dir.path()).expect("open");
        let err = RaftNode::recover_durable(&mut disk, saved.as_deref()).expect_err("refused");
        assert!(err.to_string().contains("indexes 8..=10 are lost"), "{err}");
    }

    #[test]
    fn a_conflict_below_the_synced_index_lowers_it_before_the_log_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        written(dir.path(), 10, 10);
        {
            let (mut disk, saved) = Disk::open(dir.path()).expect("open");
            let (mut hard, _) =
                RaftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
            // A new leader's entry 8 replaces 8..=10 (never committed).
            let conflict = Write::Append { entries: vec![e(2, 8)] };
            RaftNode::persist(&mut disk, &mut hard, &[conflict]).expect("append");
            assert_eq!(hard.synced_index, 7);
            // The crash comes before the round's sync; the new entry is
            // lost or torn.
        }
        let (mut disk, saved) = Disk::open(dir.path()).expect("reopen");
        let (hard, durable) =
            RaftNode::recover_durable(&mut disk, saved.as_deref()).expect("no loss");
        assert_eq!(hard.synced_index, 7);
        assert!(durable.last_index() >= 7);
    }

    #[test]
    fn a_disagreeing_snapshot_below_the_synced_index_is_no_loss() {
        let dir = tempfile::tempdir().expect("tempdir");
        written(dir.path(), 10, 10);
        {
            let (mut disk, saved) = Disk::open(dir.path()).expect("open");
            let (mut hard, _) =
                RaftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
            let meta = SnapshotMeta { index: 6, epoch: 3, size_bytes: 1 };
            let snapshot = Write::Snapshot { meta, purge_index: 6, membership: members() };
            RaftNode::persist(&mut disk, &mut hard, &[snapshot]).expect("reset");
            assert_eq!(hard.synced_index, 6);
        }
        let (mut disk, saved) = Disk::open(dir.path()).expect("reopen");
        let (_, durable) = RaftNode::recover_durable(&mut disk, saved.as_deref()).expect("no loss");
        assert_eq!(durable.last_index(), 6);
    }

    /// The core asserts (panics) on a snapshot beyond its log; recovery
    /// says what is wrong instead.
    #[test]
    fn a_snapshot_beyond_the_log_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        written(dir.path(), 4, 4);
        {
            let (mut disk, saved) = Disk::open(dir.path()).expect("open");
            let (mut hard, _) =
                RaftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
            hard.snapshot = SnapshotMeta { index: 9, epoch: 1, size_bytes: 1 };
            hard.snapshot_membership = Some(members());
            hard.save(&mut disk).expect("save");
        }
        let (mut disk, saved) = Disk::open(dir.path()).expect("reopen");
        let err = RaftNode::recover_durable(&mut disk, saved.as_deref()).expect_err("refused");
        let message = err.to_string();
        assert!(message.contains("indexes 5..=9 are lost"), "{message}");
        assert!(message.contains("snapshot"), "{message}");
    }

    #[test]
    fn a_version_1_hard_state_still_reads_with_nothing_to_check() {
        let hard = RaftHardState {
            term: 3,
            voted_for: Some(NodeId(2)),
            purged_index: 4,
            purged_term: 1,
            snapshot: SnapshotMeta { index: 5, epoch: 1, size_bytes: 9 },
            snapshot_membership: Some(members()),
            reset_index: 0,
            synced_index: 77,
        };
        let mut v1 = hard.encode();
        v1[0] = 1;
        // Version 1 had no synced index: the 8 bytes after `reset_index`.
        let at = 1 + 8 + 9 + 8 * 6;
        v1.drain(at..at + 8);
        let read = RaftHardState::decode(&v1).expect("version 1 reads");
        assert_eq!(read, RaftHardState { synced_index: 0, ..hard.clone() });
        assert_eq!(RaftHardState::decode(&hard.encode()), Ok(hard));
    }

    /// Random appends, conflicts, votes, syncs and crashes that lose or
    /// tear unsynced writes (never synced ones): recovery never refuses,
    /// since nothing the hard state vouches for was lost. A synced index
    /// left above a conflict's cut would be refused here.
    #[test]
    fn crashes_that_lose_only_unsynced_writes_never_refuse_to_start() {
        let mut next = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = move |below: u64| {
            // splitmix64
            next = next.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = next;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % below
        };
        let mut refusals_possible = 0;
        for run in 0..25 {
            let dir = tempfile::tempdir().expect("tempdir");
            let fs = synod_storage::FaultFs::new();
            let open = || crate::disk::test_support::open_on_fault_fs(dir.path(), &fs);
            let (mut disk, saved) = open().expect("open");
            let (mut hard, mut durable) =
                RaftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
            for step in 0..200 {
                let last = durable.last_index();
                let writes = match random(6) {
                    0 | 1 => vec![Write::Append {
                        entries: (last + 1..=last + 1 + random(4))
                            .map(|i| e(durable.term.max(1), i))
                            .collect(),
                    }],
                    2 if last > 0 => {
                        // A new leader's entries replace a suffix.
                        let from = 1 + random(last);
                        let term = durable.term + 1;
                        vec![
                            Write::HardState { term, voted_for: Some(NodeId(2)) },
                            Write::Append {
                                entries: (from..=from + random(3)).map(|i| e(term, i)).collect(),
                            },
                        ]
                    }
                    3 => vec![Write::HardState {
                        term: durable.term.max(1),
                        voted_for: Some(NodeId(3)),
                    }],
                    4 => {
                        disk.sync().expect("sync");
                        vec![]
                    }
                    _ => {
                        drop(disk);
                        fs.crash(run * 1000 + step);
                        let (d, saved) = open().expect("the log opens");
                        disk = d;
                        let recovered = RaftNode::recover_durable(&mut disk, saved.as_deref());
                        let (h, dur) = recovered.unwrap_or_else(|err| {
                            panic!("run {run} step {step}: refused after losing unsynced writes only: {err}")
                        });
                        if h.synced_index > 0 {
                            refusals_possible += 1;
                        }
                        (hard, durable) = (h, dur);
                        continue;
                    }
                };
                RaftNode::persist(&mut disk, &mut hard, &writes).expect("persist");
                for w in &writes {
                    durable.apply(w);
                }
            }
        }
        assert!(refusals_possible > 100, "the synced index was exercised: {refusals_possible}");
    }

    /// Segments of about ten entries each.
    fn small_segments() -> synod_storage::WalOptions {
        synod_storage::WalOptions { segment_size_bytes: 400, ..Default::default() }
    }

    #[test]
    fn a_crash_between_the_snapshot_and_the_purge_keeps_every_acknowledged_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshot = |index| Write::Snapshot {
            meta: SnapshotMeta { index, epoch: 1, size_bytes: 10 },
            purge_index: index - 5,
            membership: members(),
        };
        {
            let (mut disk, _) = Disk::open_with(dir.path(), small_segments()).expect("open");
            let mut hard = RaftHardState::default();
            for i in 1..=100 {
                RaftNode::persist(
                    &mut disk,
                    &mut hard,
                    &[Write::Append { entries: vec![e(1, i)] }],
                )
                .expect("append");
            }
            disk.sync().expect("sync");
            let segments = disk.wal.segment_count();
            // The snapshot is recorded and the segments leave the log, but
            // the process dies before the round's sync deletes their files.
            RaftNode::persist(&mut disk, &mut hard, &[snapshot(60)]).expect("snapshot");
            assert!(disk.wal.segment_count() < segments, "segments were detached");
            assert!(disk.purged_segments_left() > 0);
        }
        let (mut disk, saved) = Disk::open_with(dir.path(), small_segments()).expect("reopen");
        assert_eq!(disk.wal.first_index(), 1, "nothing was deleted");
        let mut hard;
        {
            let (h, durable) =
                RaftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
            hard = h;
            assert_eq!((durable.snapshot.index, durable.purged_index), (60, 55));
            assert_eq!(durable.log, (56..=100).map(|i| e(1, i)).collect::<Vec<_>>());
        }
        // The next snapshot purges them too, once its round synced.
        RaftNode::persist(&mut disk, &mut hard, &[snapshot(90)]).expect("snapshot");
        let files_before = std::fs::read_dir(dir.path().join("wal")).expect("list").count();
        disk.sync().expect("sync");
        disk.wait_purge().expect("purge");
        assert_eq!(disk.purged_segments_left(), 0);
        let files_after = std::fs::read_dir(dir.path().join("wal")).expect("list").count();
        assert!(files_after < files_before, "{files_after} files of {files_before} left");
        drop(disk);
        let (mut disk, saved) = Disk::open_with(dir.path(), small_segments()).expect("reopen");
        assert!(disk.wal.first_index() > 1 && disk.wal.first_index() <= 86);
        let (_, durable) = RaftNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        assert_eq!(durable.log, (86..=100).map(|i| e(1, i)).collect::<Vec<_>>());
    }
}
