//! Multi-Paxos on a real node: the wire format of [`synod_paxos::multi::Message`],
//! and [`synod_paxos::multi::Write`]s carried out on the [`Disk`].
//!
//! Raft's log is a prefix-closed sequence, so its entries map one to one
//! onto write-ahead-log records. A Paxos acceptor's log is not: it has
//! holes, and an accept in a higher ballot *replaces* what a slot held,
//! anywhere in the log. Cutting the log's suffix to rewrite one slot would
//! lose, in a crash, the acceptances after it — votes that may already have
//! helped choose a value. So the write-ahead log here is a journal of
//! acceptances:
//!
//! - every `Write::Accept` is appended as one or more records
//!   `(ballot, first_slot, values)` (split so no record is larger than
//!   [`MAX_RECORD_BYTES`], one value aside); records are numbered in
//!   append order and synced by the driver's group commit. Recovery replays
//!   them in order, the last acceptance of a slot winning (ballots only grow
//!   from one acceptance to the next, so the last is the highest);
//! - `Write::Promise` rewrites the hard-state file ([`PaxosHardState`]:
//!   promised ballot, snapshot point, purged slot), replaced atomically;
//! - `Write::Snapshot` saves the hard state first (with the promise raised
//!   to every ballot accepted in, since the records that carried those
//!   ballots may go), syncs the log, then deletes the whole segments whose
//!   records are all obsolete: every slot they hold is purged or was
//!   accepted again in a later record. A crash in between leaves records
//!   recovery skips or overwrites.
//! - Each hard-state save also records `synced_record`, the journal's
//!   durable index then, and `purged_record`, below which every record is
//!   obsolete. Recovery refuses a journal that ends before `synced_record`
//!   (and is not purged through it): acceptances this acceptor may have
//!   acknowledged are gone ([`crate::disk`]'s "A log that ends too early").
//!   Record numbers continue after `purged_record` when a snapshot emptied
//!   the journal (recovery finishes deleting such a journal if a crash
//!   interrupted it).
//!
//! Decoding a message never panics, and refuses what the core would treat
//! as a bug of its own (a promise reporting acceptances at or above its
//! ballot or out of slot order, an accept at slot 0 or whose slots
//! overflow, an empty batch).

use crate::disk::Disk;
use crate::driver::{MAX_BATCH_BYTES, MAX_BATCH_COMMANDS};
use crate::error::NodeError;
use crate::glue::{NodeProtocol, ProtocolSettings};
use crate::wire::{Reader, WireError, Writer};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use synod_core::protocol::SnapshotMeta;
use synod_core::{ClientId, Command, NodeId, Time};
use synod_paxos::Ballot;
use synod_paxos::multi::{
    Config, Durable, Message, PaxosNode, SlotEntry, SnapshotPoint, Value, Write,
};

/// The hard-state file starts with this, so that a data directory another
/// protocol wrote is refused, not misread.
const HARD_STATE_MAGIC: &[u8; 5] = b"paxos";
/// Version 2 adds `synced_record` and `purged_record`; a version-1 file
/// (written before them) still reads, with both 0 (nothing to check until
/// the next save).
const HARD_STATE_VERSION: u8 = 2;

/// Largest acceptance record written (a single larger value gets a record
/// of its own).
pub const MAX_RECORD_BYTES: usize = 8 << 20;

/// Most values one message (or record) may carry on the wire; bounds what a
/// hostile peer can make us allocate per message (the core sends at most
/// `max_values_per_accept` / `max_values_per_promise`).
const MAX_WIRE_VALUES: u32 = 1 << 16;

/// Most commands in one batch on the wire.
const MAX_WIRE_COMMANDS: u32 = 1 << 20;

/// What the hard-state file holds for Multi-Paxos, plus (in memory only)
/// which log record holds each slot's latest acceptance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaxosHardState {
    /// The highest ballot promised (as saved; accepts may have raised the
    /// acceptor's promise since, in records of the log).
    pub promised: Ballot,
    /// The latest snapshot (slot 0: none).
    pub snapshot: SnapshotPoint,
    /// Every slot up to this one is purged.
    pub purged_slot: u64,
    /// Every record up to here was durable when the hard state was last
    /// saved (its acceptances may have been acknowledged): the journal is
    /// never cut, so recovery must find it up to here at least (or
    /// purged). Raised at each save (a promise, a snapshot).
    pub synced_record: u64,
    /// Every record up to here is obsolete (its slots purged or accepted
    /// again later) and may be gone from the log; record numbers continue
    /// after it even when the whole log was purged.
    pub purged_record: u64,
    /// Highest ballot of any acceptance written (not saved: recovered from
    /// the records).
    accepted_max: Ballot,
    /// `records[i]`: the log record holding slot `purged_slot + i + 1`'s
    /// latest acceptance (0: a hole).
    records: VecDeque<u64>,
    /// The index the next record gets.
    next_record: u64,
}

impl PaxosHardState {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with(HARD_STATE_MAGIC.to_vec());
        w.u8(HARD_STATE_VERSION);
        put_ballot(&mut w, self.promised);
        put_point(&mut w, &self.snapshot);
        w.u64(self.purged_slot).u64(self.synced_record).u64(self.purged_record);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<PaxosHardState, WireError> {
        let Some(bytes) = bytes.strip_prefix(HARD_STATE_MAGIC) else {
            return Err(WireError::new(
                "paxos hard state",
                "not written by Multi-Paxos (is this data directory another protocol's?)",
            ));
        };
        let mut r = Reader::new("paxos hard state", bytes);
        let version = r.u8()?;
        if !(1..=HARD_STATE_VERSION).contains(&version) {
            return Err(r.invalid(format!("unsupported version {version}")));
        }
        let mut h = PaxosHardState {
            promised: get_ballot(&mut r)?,
            snapshot: get_point(&mut r)?,
            purged_slot: r.u64()?,
            ..PaxosHardState::default()
        };
        if version >= 2 {
            h.synced_record = r.u64()?;
            h.purged_record = r.u64()?;
        }
        r.finish()?;
        if h.purged_slot > h.snapshot.slot {
            return Err(r.invalid(format!(
                "purged slot {} beyond the snapshot's {}",
                h.purged_slot, h.snapshot.slot
            )));
        }
        Ok(h)
    }

    /// Saves the hard state, raising `synced_record` to what the log has
    /// made durable so far.
    fn save(&mut self, disk: &mut Disk) -> Result<(), NodeError> {
        self.synced_record = self.synced_record.max(disk.wal.durable_index());
        Ok(disk.hard_state.save(&self.encode())?)
    }

    /// Notes that record `record` holds `count` slots from `first_slot`.
    fn note_record(&mut self, record: u64, first_slot: u64, count: u64) {
        for slot in first_slot..first_slot + count {
            if slot <= self.purged_slot {
                continue;
            }
            let i = (slot - self.purged_slot - 1) as usize;
            if self.records.len() <= i {
                self.records.resize(i + 1, 0);
            }
            self.records[i] = record;
        }
    }

    /// Forgets the slots up to `purge_slot`.
    fn purge(&mut self, purge_slot: u64) {
        if purge_slot <= self.purged_slot {
            return;
        }
        let drop = ((purge_slot - self.purged_slot) as usize).min(self.records.len());
        self.records.drain(..drop);
        self.purged_slot = purge_slot;
    }

    /// The first record some slot after the purged prefix still needs.
    fn first_needed_record(&self) -> u64 {
        self.records.iter().copied().filter(|&r| r > 0).min().unwrap_or(self.next_record)
    }
}

fn put_ballot(w: &mut Writer, b: Ballot) {
    w.u64(b.round).u64(b.node.0);
}

fn get_ballot(r: &mut Reader<'_>) -> Result<Ballot, WireError> {
    Ok(Ballot::new(r.u64()?, NodeId(r.u64()?)))
}

fn put_point(w: &mut Writer, p: &SnapshotPoint) {
    w.u64(p.slot).u64(p.meta.index).u64(p.meta.epoch).u64(p.meta.size_bytes);
}

fn get_point(r: &mut Reader<'_>) -> Result<SnapshotPoint, WireError> {
    Ok(SnapshotPoint {
        slot: r.u64()?,
        meta: SnapshotMeta { index: r.u64()?, epoch: r.u64()?, size_bytes: r.u64()? },
    })
}

fn put_value(w: &mut Writer, v: &Value) {
    match v {
        Value::Noop => {
            w.u8(0);
        }
        Value::Batch(commands) => {
            w.u8(1).u32(u32::try_from(commands.len()).expect("the core bounds a slot's batch"));
            for c in commands.iter() {
                w.u64(c.client.0).u64(c.seq).bytes(&c.op);
            }
        }
    }
}

fn get_value(r: &mut Reader<'_>) -> Result<Value, WireError> {
    match r.u8()? {
        0 => Ok(Value::Noop),
        1 => {
            let count = r.u32()?;
            if count == 0 || count > MAX_WIRE_COMMANDS {
                return Err(r.invalid(format!("{count} commands in a batch")));
            }
            // Each command takes at least 20 bytes: no allocation beyond
            // what the message could hold.
            let mut commands = Vec::with_capacity((count as usize).min(r.remaining() / 20));
            for _ in 0..count {
                commands.push(Command {
                    client: ClientId(r.u64()?),
                    seq: r.u64()?,
                    op: r.bytes()?,
                });
            }
            Ok(Value::Batch(Arc::from(commands)))
        }
        t => Err(r.invalid(format!("bad value tag {t}"))),
    }
}

fn put_values(w: &mut Writer, values: &[Value]) {
    w.u32(u32::try_from(values.len()).expect("the core bounds values per message"));
    for v in values {
        put_value(w, v);
    }
}

/// `count` values for slots from `first_slot`, which must not overflow.
fn get_values(r: &mut Reader<'_>, first_slot: u64) -> Result<Vec<Value>, WireError> {
    let count = r.u32()?;
    if count > MAX_WIRE_VALUES {
        return Err(r.invalid(format!("{count} values in one message")));
    }
    if count > 0 && first_slot == 0 {
        return Err(r.invalid("values at slot 0"));
    }
    if first_slot.checked_add(u64::from(count)).is_none() {
        return Err(r.invalid("slots overflow"));
    }
    let mut values = Vec::with_capacity((count as usize).min(r.remaining()));
    for _ in 0..count {
        values.push(get_value(r)?);
    }
    Ok(values)
}

/// An acceptance record: `(ballot, first_slot, values)`.
fn encode_record(ballot: Ballot, first_slot: u64, values: &[Value]) -> Vec<u8> {
    let mut w = Writer::new();
    put_ballot(&mut w, ballot);
    w.u64(first_slot);
    put_values(&mut w, values);
    w.finish()
}

fn decode_record(bytes: &Bytes) -> Result<(Ballot, u64, Vec<Value>), WireError> {
    let mut r = Reader::shared("paxos acceptance record", bytes);
    let ballot = get_ballot(&mut r)?;
    let first_slot = r.u64()?;
    let values = get_values(&mut r, first_slot)?;
    if values.is_empty() {
        return Err(r.invalid("a record without values"));
    }
    r.finish()?;
    Ok((ballot, first_slot, values))
}

/// Splits `values` (for slots from `first_slot`) into records of at most
/// [`MAX_RECORD_BYTES`] (one larger value alone), as `(first_slot, values)`.
fn split_records(first_slot: u64, values: &[Value]) -> Vec<(u64, &[Value])> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, v) in values.iter().enumerate() {
        let size = v.size_bytes() + 8 * 4;
        if i > start && bytes + size > MAX_RECORD_BYTES {
            parts.push((first_slot + start as u64, &values[start..i]));
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < values.len() {
        parts.push((first_slot + start as u64, &values[start..]));
    }
    parts
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut w = Writer::new();
    match msg {
        Message::Prepare { ballot, first_slot, from_slot } => {
            w.u8(1);
            put_ballot(&mut w, *ballot);
            w.u64(*first_slot).u64(*from_slot);
        }
        Message::Promise { ballot, first_slot, from_slot, accepted, more } => {
            w.u8(2);
            put_ballot(&mut w, *ballot);
            w.u64(*first_slot).u64(*from_slot).bool(*more);
            w.u32(u32::try_from(accepted.len()).expect("the core bounds values per promise"));
            for (slot, entry) in accepted {
                w.u64(*slot);
                put_ballot(&mut w, entry.ballot);
                put_value(&mut w, &entry.value);
            }
        }
        Message::Accept { ballot, first_slot, values, chosen_slot, read_round } => {
            w.u8(3);
            put_ballot(&mut w, *ballot);
            w.u64(*first_slot).u64(*chosen_slot).u64(*read_round);
            put_values(&mut w, values);
        }
        Message::Accepted {
            ballot,
            first_slot,
            last_slot,
            chosen_slot,
            leader_chosen_slot,
            read_round,
        } => {
            w.u8(4);
            put_ballot(&mut w, *ballot);
            w.u64(*first_slot).u64(*last_slot).u64(*chosen_slot);
            w.u64(*leader_chosen_slot).u64(*read_round);
        }
        Message::Nack { ballot, promised } => {
            w.u8(5);
            put_ballot(&mut w, *ballot);
            put_ballot(&mut w, *promised);
        }
        Message::Snapshot { ballot, point, offset, data } => {
            w.u8(6);
            put_ballot(&mut w, *ballot);
            put_point(&mut w, point);
            w.u64(*offset).bytes(data);
        }
        Message::SnapshotAck { ballot, index, offset, done } => {
            w.u8(7);
            put_ballot(&mut w, *ballot);
            w.u64(*index).u64(*offset).bool(*done);
        }
    }
    w.finish()
}

fn decode(bytes: &Bytes) -> Result<Message, WireError> {
    let mut r = Reader::shared("paxos message", bytes);
    let msg = match r.u8()? {
        1 => Message::Prepare {
            ballot: get_ballot(&mut r)?,
            first_slot: r.u64()?,
            from_slot: r.u64()?,
        },
        2 => {
            let ballot = get_ballot(&mut r)?;
            let first_slot = r.u64()?;
            let from_slot = r.u64()?;
            let more = r.bool()?;
            let count = r.u32()?;
            if count > MAX_WIRE_VALUES {
                return Err(r.invalid(format!("{count} acceptances in one promise")));
            }
            let mut accepted = Vec::with_capacity((count as usize).min(r.remaining() / 25));
            let mut last: Option<u64> = None;
            for _ in 0..count {
                let slot = r.u64()?;
                let entry = SlotEntry { ballot: get_ballot(&mut r)?, value: get_value(&mut r)? };
                if slot < from_slot || last.is_some_and(|l| slot <= l) {
                    return Err(r.invalid(format!("acceptance at slot {slot} out of order")));
                }
                if entry.ballot >= ballot {
                    return Err(r.invalid(format!(
                        "acceptance in {} at or above the promise {ballot}",
                        entry.ballot
                    )));
                }
                last = Some(slot);
                accepted.push((slot, entry));
            }
            Message::Promise { ballot, first_slot, from_slot, accepted, more }
        }
        3 => {
            let ballot = get_ballot(&mut r)?;
            let first_slot = r.u64()?;
            let chosen_slot = r.u64()?;
            let read_round = r.u64()?;
            if first_slot == 0 {
                return Err(r.invalid("accept at slot 0"));
            }
            let values = get_values(&mut r, first_slot)?;
            Message::Accept { ballot, first_slot, values, chosen_slot, read_round }
        }
        4 => Message::Accepted {
            ballot: get_ballot(&mut r)?,
            first_slot: r.u64()?,
            last_slot: r.u64()?,
            chosen_slot: r.u64()?,
            leader_chosen_slot: r.u64()?,
            read_round: r.u64()?,
        },
        5 => Message::Nack { ballot: get_ballot(&mut r)?, promised: get_ballot(&mut r)? },
        6 => Message::Snapshot {
            ballot: get_ballot(&mut r)?,
            point: get_point(&mut r)?,
            offset: r.u64()?,
            data: r.bytes()?,
        },
        7 => Message::SnapshotAck {
            ballot: get_ballot(&mut r)?,
            index: r.u64()?,
            offset: r.u64()?,
            done: r.bool()?,
        },
        t => return Err(r.invalid(format!("unknown message tag {t}"))),
    };
    r.finish()?;
    Ok(msg)
}

impl NodeProtocol for PaxosNode {
    const NAME: &'static str = "paxos";
    type HardState = PaxosHardState;

    /// A leader's Phase 2a `Accept` (and the empty one, a heartbeat) may
    /// leave before the leader's own acceptance of the same slots is in its
    /// journal, as Raft's AppendEntries leaves before the leader's append:
    ///
    /// - an `Accept` asks the acceptors to vote; it reports no vote of the
    ///   sender. The leader counts its own acceptance towards a quorum at
    ///   once, but it can only complete a quorum with an `Accepted` from a
    ///   peer, which the driver steps in a later round — after this round's
    ///   fsync made the leader's acceptance durable. So no slot is chosen
    ///   (or reported chosen in a later accept) on a vote that is not on
    ///   disk;
    /// - if the leader crashes before that fsync, its vote is lost but was
    ///   never counted; acceptors that did accept still form quorums on
    ///   their own durable votes. After the restart it cannot propose
    ///   anything else in the same ballot (its promise of the ballot was
    ///   durable before its `Prepare`s left, and it leads again only in a
    ///   higher ballot), so one ballot never carries two values for a slot;
    /// - the chosen slot an `Accept` carries is only ever learned from
    ///   durable quorums.
    ///
    /// Everything else waits for the sync: a Phase 2b `Accepted` is a vote
    /// and must not leave before the acceptance it reports is durable; a
    /// `Promise` or `Nack` reports a durable promise; a `Prepare` is sent by
    /// a candidate whose promise to itself must be durable first; snapshot
    /// messages go with the snapshot's own persistence.
    fn leaves_before_sync(msg: &Message) -> bool {
        matches!(msg, Message::Accept { .. })
    }

    fn config(voters: Vec<NodeId>, settings: &ProtocolSettings) -> Result<Config, String> {
        let mut c = Config::new(voters);
        c.election_timeout_min = settings.election_timeout_min;
        c.election_timeout_max = settings.election_timeout_max;
        c.heartbeat_interval = settings.heartbeat_interval;
        // One slot holds one of the driver's proposal batches.
        c.max_commands_per_slot = c.max_commands_per_slot.max(MAX_BATCH_COMMANDS);
        c.max_bytes_per_slot = c.max_bytes_per_slot.max(MAX_BATCH_BYTES + 16 * MAX_BATCH_COMMANDS);
        c.snapshot_interval_slots = settings.snapshot_interval_entries;
        c.snapshot_trailing_slots = 1000.min(settings.snapshot_interval_entries);
        c.validate()?;
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
    ) -> Result<(PaxosHardState, Durable), NodeError> {
        let mut hard = match saved {
            Some(bytes) => PaxosHardState::decode(bytes)?,
            None => PaxosHardState::default(),
        };
        let mut durable = Durable {
            promised: hard.promised,
            snapshot: hard.snapshot,
            purged_slot: hard.purged_slot,
            log: Vec::new(),
        };
        if disk.wal.last_index() > 0 && disk.wal.last_index() <= hard.purged_record {
            // A snapshot made every record obsolete and the crash came
            // before their files went: finish that, so that record numbers
            // go on after `purged_record`.
            disk.wal.purge_prefix(hard.purged_record)?;
        }
        let wal = &disk.wal;
        if wal.last_index() > 0 {
            for item in wal.entries(wal.first_index()..=wal.last_index())? {
                let (index, payload) = item?;
                let (ballot, first_slot, values) = decode_record(&payload)?;
                durable.promised = durable.promised.max(ballot);
                hard.accepted_max = hard.accepted_max.max(ballot);
                hard.note_record(index, first_slot, values.len() as u64);
                for (i, value) in values.into_iter().enumerate() {
                    let slot = first_slot + i as u64;
                    if slot <= durable.purged_slot {
                        continue;
                    }
                    let at = (slot - durable.purged_slot - 1) as usize;
                    if durable.log.len() <= at {
                        durable.log.resize(at + 1, None);
                    }
                    durable.log[at] = Some(SlotEntry { ballot, value });
                }
            }
        }
        // Past every record ever written, even when the whole log was
        // purged (an empty log may start anywhere).
        hard.next_record =
            if wal.last_index() > 0 { wal.last_index() } else { hard.purged_record } + 1;
        disk.check_log_reaches(
            "record",
            wal.last_index().max(hard.purged_record),
            hard.synced_record,
            "the last journal record the hard state records as synced (its acceptances \
             possibly acknowledged)",
        )?;
        if durable.snapshot.slot > durable.last_slot() {
            return Err(NodeError::Corrupt(format!(
                "the hard state in {} names a snapshot of slot {} but the log in {} ends at \
                 slot {}",
                disk.dir().display(),
                durable.snapshot.slot,
                wal.dir().display(),
                durable.last_slot()
            )));
        }
        Ok((hard, durable))
    }

    fn snapshot_failed(&mut self, now: Time, index: u64) {
        PaxosNode::snapshot_failed(self, now, index);
    }

    fn persist(
        disk: &mut Disk,
        hard: &mut PaxosHardState,
        writes: &[Write],
    ) -> Result<(), NodeError> {
        for write in writes {
            match write {
                Write::Promise { ballot } => {
                    hard.promised = hard.promised.max(*ballot);
                    hard.save(disk)?;
                }
                Write::Accept { ballot, first_slot, values } => {
                    for (first, part) in split_records(*first_slot, values) {
                        let record = hard.next_record;
                        disk.wal.append(record, &[encode_record(*ballot, first, part)])?;
                        hard.next_record += 1;
                        hard.note_record(record, first, part.len() as u64);
                    }
                    hard.accepted_max = hard.accepted_max.max(*ballot);
                }
                Write::Snapshot { point, purge_slot } => {
                    assert!(*purge_slot <= point.slot, "purge beyond the snapshot");
                    hard.snapshot = *point;
                    hard.purge(*purge_slot);
                    // The records about to go may carry the highest ballot
                    // accepted in: the promise keeps it.
                    hard.promised = hard.promised.max(hard.accepted_max);
                    let obsolete_below = hard.first_needed_record();
                    hard.purged_record = hard.purged_record.max(obsolete_below - 1);
                    hard.save(disk)?;
                    let wal = &mut disk.wal;
                    if wal.last_index() > 0 && wal.first_index() < obsolete_below {
                        // What makes a record obsolete may be a later record
                        // of this batch: the files go only after the round's
                        // sync made it durable, on a thread of their own
                        // (see `Disk`).
                        wal.detach_prefix(obsolete_below - 1)?;
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

    fn b(round: u64, node: u64) -> Ballot {
        Ballot::new(round, NodeId(node))
    }

    fn batch(seed: u64) -> Value {
        Value::Batch(Arc::from(vec![
            Command::new(ClientId(7), seed, Bytes::from(vec![seed as u8; 3])),
            Command::new(ClientId(8), seed + 1, Bytes::new()),
        ]))
    }

    fn point(slot: u64, index: u64) -> SnapshotPoint {
        SnapshotPoint { slot, meta: SnapshotMeta { index, epoch: 2, size_bytes: 40 } }
    }

    fn all_messages() -> Vec<Message> {
        vec![
            Message::Prepare { ballot: b(3, 1), first_slot: 5, from_slot: 9 },
            Message::Promise {
                ballot: b(3, 1),
                first_slot: 5,
                from_slot: 5,
                accepted: vec![
                    (5, SlotEntry { ballot: b(2, 2), value: batch(1) }),
                    (7, SlotEntry { ballot: b(1, 3), value: Value::Noop }),
                ],
                more: true,
            },
            Message::Promise {
                ballot: b(3, 1),
                first_slot: 5,
                from_slot: 8,
                accepted: vec![],
                more: false,
            },
            Message::Accept {
                ballot: b(3, 1),
                first_slot: 10,
                values: vec![batch(4), Value::Noop, batch(9)],
                chosen_slot: 8,
                read_round: 4,
            },
            Message::Accept {
                ballot: b(3, 1),
                first_slot: 13,
                values: vec![],
                chosen_slot: 12,
                read_round: 5,
            },
            Message::Accepted {
                ballot: b(3, 1),
                first_slot: 10,
                last_slot: 12,
                chosen_slot: 9,
                leader_chosen_slot: 12,
                read_round: 4,
            },
            Message::Nack { ballot: b(3, 1), promised: b(4, 2) },
            Message::Snapshot {
                ballot: b(3, 1),
                point: point(20, 44),
                offset: 8,
                data: Bytes::from_static(b"chunk"),
            },
            Message::SnapshotAck { ballot: b(3, 1), index: 44, offset: 13, done: false },
            Message::SnapshotAck { ballot: b(3, 1), index: 44, offset: 40, done: true },
        ]
    }

    #[test]
    fn every_message_round_trips_and_every_truncation_is_an_error() {
        crate::glue::checks::codec_round_trips_and_refuses_truncations::<PaxosNode>(&all_messages());
    }

    #[test]
    fn what_the_core_would_take_for_its_own_bug_is_refused() {
        let promise = |accepted: Vec<(u64, SlotEntry)>| Message::Promise {
            ballot: b(3, 1),
            first_slot: 5,
            from_slot: 5,
            accepted,
            more: false,
        };
        let entry = |ballot| SlotEntry { ballot, value: Value::Noop };
        let refused = [
            (promise(vec![(6, entry(b(1, 1))), (6, entry(b(1, 1)))]), "out of order"),
            (promise(vec![(4, entry(b(1, 1)))]), "out of order"),
            (promise(vec![(6, entry(b(3, 1)))]), "at or above the promise"),
            (
                Message::Accept {
                    ballot: b(1, 1),
                    first_slot: 0,
                    values: vec![],
                    chosen_slot: 0,
                    read_round: 0,
                },
                "slot 0",
            ),
            (
                Message::Accept {
                    ballot: b(1, 1),
                    first_slot: u64::MAX,
                    values: vec![Value::Noop],
                    chosen_slot: 0,
                    read_round: 0,
                },
                "overflow",
            ),
        ];
        for (m, reason) in refused {
            let err = decode(&Bytes::from(encode(&m))).expect_err("refused");
            assert!(err.reason.contains(reason), "{m:?}: {err}");
        }
        let empty = Message::Accept {
            ballot: b(1, 1),
            first_slot: 1,
            values: vec![Value::Batch(Arc::from(Vec::<Command>::new()))],
            chosen_slot: 0,
            read_round: 0,
        };
        let err = decode(&Bytes::from(encode(&empty))).expect_err("empty batch");
        assert!(err.reason.contains("0 commands"), "{err}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&Bytes::from(data.clone()));
            let _ = decode_record(&Bytes::from(data.clone()));
            let _ = PaxosHardState::decode(&data);
        }

        #[test]
        fn mutated_messages_never_panic(
            which in 0usize..10,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = encode(&all_messages()[which]);
            for (at, byte) in flips {
                let i = at % bytes.len();
                bytes[i] = byte;
            }
            let _ = decode(&Bytes::from(bytes));
        }
    }

    #[test]
    fn records_are_split_by_size_and_keep_their_slots() {
        let big = Value::Batch(Arc::from(vec![Command::new(
            ClientId(1),
            1,
            Bytes::from(vec![0u8; MAX_RECORD_BYTES / 2]),
        )]));
        let values = vec![big.clone(), big.clone(), Value::Noop, big];
        let parts = split_records(10, &values);
        let shape: Vec<(u64, usize)> = parts.iter().map(|(s, v)| (*s, v.len())).collect();
        assert_eq!(shape, vec![(10, 1), (11, 2), (13, 1)]);
    }

    fn check_against_model(batches: &[Vec<Write>]) {
        crate::glue::checks::recovery_matches_the_model::<PaxosNode>(batches);
    }

    #[test]
    fn promises_accepts_holes_and_overwrites_recover_as_written() {
        check_against_model(&[
            vec![Write::Promise { ballot: b(1, 1) }],
            vec![Write::Accept { ballot: b(1, 1), first_slot: 1, values: vec![batch(1); 3] }],
            vec![Write::Accept { ballot: b(1, 1), first_slot: 6, values: vec![Value::Noop] }],
            vec![Write::Promise { ballot: b(2, 3) }],
            // A higher ballot replaces slot 2 only: 3 and 6 keep their votes.
            vec![Write::Accept { ballot: b(2, 3), first_slot: 2, values: vec![batch(9)] }],
            // An accept in a new ballot with no promise first raises it.
            vec![
                Write::Accept { ballot: b(4, 2), first_slot: 7, values: vec![Value::Noop] },
                Write::Promise { ballot: b(5, 1) },
            ],
        ]);
    }

    #[test]
    fn snapshots_purge_and_an_installed_snapshot_empties_the_log() {
        check_against_model(&[
            vec![Write::Accept { ballot: b(1, 1), first_slot: 1, values: vec![batch(1); 6] }],
            vec![Write::Snapshot { point: point(5, 9), purge_slot: 3 }],
            vec![Write::Accept { ballot: b(1, 1), first_slot: 8, values: vec![batch(2)] }],
            vec![
                Write::Accept { ballot: b(3, 2), first_slot: 9, values: vec![Value::Noop] },
                Write::Snapshot { point: point(20, 40), purge_slot: 20 },
            ],
            vec![Write::Accept { ballot: b(3, 2), first_slot: 22, values: vec![batch(3)] }],
        ]);
    }

    #[test]
    fn obsolete_segments_go_and_the_promise_outlives_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut disk, saved) = Disk::open(dir.path()).expect("open");
            let (mut hard, _) =
                PaxosNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
            for slot in 1..=50 {
                let w =
                    Write::Accept { ballot: b(7, 2), first_slot: slot, values: vec![batch(slot)] };
                PaxosNode::persist(&mut disk, &mut hard, &[w]).expect("accept");
            }
            disk.sync().expect("sync");
            let snap = Write::Snapshot { point: point(50, 100), purge_slot: 50 };
            PaxosNode::persist(&mut disk, &mut hard, &[snap]).expect("snapshot");
            assert_eq!(disk.wal.last_index(), 0, "every record was obsolete");
            let w = Write::Accept { ballot: b(7, 2), first_slot: 51, values: vec![Value::Noop] };
            PaxosNode::persist(&mut disk, &mut hard, &[w]).expect("accept after");
            disk.sync().expect("sync");
        }
        let (mut disk, saved) = Disk::open(dir.path()).expect("reopen");
        let (_, durable) =
            PaxosNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        assert_eq!(durable.promised, b(7, 2), "the ballot accepted in is still promised");
        assert_eq!((durable.purged_slot, durable.last_slot()), (50, 51));
        assert_eq!(durable.log, vec![Some(SlotEntry { ballot: b(7, 2), value: Value::Noop })]);
    }

    /// Slots 1..=`promised_after` accepted (one record each) and synced,
    /// then a promise saved; then slots up to `last` accepted and synced.
    fn accepted(dir: &std::path::Path, promised_after: u64, last: u64) {
        let (mut disk, saved) = Disk::open(dir).expect("open");
        let (mut hard, _) =
            PaxosNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        let accept =
            |slot| Write::Accept { ballot: b(7, 2), first_slot: slot, values: vec![batch(slot)] };
        for slot in 1..=promised_after {
            PaxosNode::persist(&mut disk, &mut hard, &[accept(slot)]).expect("accept");
        }
        disk.sync().expect("sync");
        PaxosNode::persist(&mut disk, &mut hard, &[Write::Promise { ballot: b(8, 3) }])
            .expect("promise");
        assert_eq!(hard.synced_record, promised_after);
        for slot in promised_after + 1..=last {
            PaxosNode::persist(&mut disk, &mut hard, &[accept(slot)]).expect("accept");
        }
        disk.sync().expect("sync");
    }

    #[test]
    fn a_torn_tail_below_the_synced_record_refuses_to_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        accepted(dir.path(), 5, 5);
        let cut = crate::disk::test_support::tear_log_from(dir.path(), 5);
        let (mut disk, saved) = Disk::open(dir.path()).expect("the log itself opens");
        assert_eq!(disk.torn_tail().expect("the damaged record was cut").offset, cut.1);
        let err = PaxosNode::recover_durable(&mut disk, saved.as_deref()).expect_err("refused");
        crate::disk::test_support::assert_lost_log(
            &err,
            dir.path(),
            &cut,
            &["record 5 is lost", "synod member remove"],
        );
    }

    #[test]
    fn a_torn_tail_above_the_synced_record_is_cut_and_recovery_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        accepted(dir.path(), 5, 6);
        crate::disk::test_support::tear_log_from(dir.path(), 6);
        let (mut disk, saved) = Disk::open(dir.path()).expect("open");
        assert!(disk.torn_tail().is_some(), "the damaged record was cut");
        let (_, durable) =
            PaxosNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        assert_eq!(durable.last_slot(), 5);
    }

    /// Record numbers used to start again at 1 after a restart on a log a
    /// snapshot had emptied; the synced record would then be ahead of them.
    #[test]
    fn records_keep_their_numbers_after_a_snapshot_emptied_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        accepted(dir.path(), 50, 50);
        {
            let (mut disk, saved) = Disk::open(dir.path()).expect("open");
            let (mut hard, _) =
                PaxosNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
            let snap = Write::Snapshot { point: point(50, 100), purge_slot: 50 };
            PaxosNode::persist(&mut disk, &mut hard, &[snap]).expect("snapshot");
            assert_eq!((hard.synced_record, hard.purged_record), (50, 50));
            disk.sync().expect("sync");
            disk.wait_purge().expect("purge");
        }
        let (mut disk, saved) = Disk::open(dir.path()).expect("reopen");
        assert_eq!(disk.wal.last_index(), 0, "every segment was deleted");
        let (mut hard, _) =
            PaxosNode::recover_durable(&mut disk, saved.as_deref()).expect("nothing lost");
        let w = Write::Accept { ballot: b(8, 3), first_slot: 51, values: vec![Value::Noop] };
        PaxosNode::persist(&mut disk, &mut hard, &[w]).expect("accept");
        assert_eq!(disk.wal.last_index(), 51);
        disk.sync().expect("sync");
        drop(disk);
        let (mut disk, saved) = Disk::open(dir.path()).expect("reopen");
        let (_, durable) =
            PaxosNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        assert_eq!((durable.purged_slot, durable.last_slot()), (50, 51));
    }

    /// Random accepts (anywhere above the purged prefix), promises,
    /// snapshots (of synced slots) purging all or part of the journal,
    /// syncs, and crashes that lose or tear unsynced writes: recovery never
    /// refuses, since nothing the hard state vouches for was lost; and
    /// record numbers always go on after the purged ones (they used to
    /// start again at 1 once a snapshot had emptied the journal).
    #[test]
    fn crashes_that_lose_only_unsynced_writes_never_refuse_to_start() {
        let mut next = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move |below: u64| {
            // splitmix64
            next = next.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = next;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % below
        };
        let (mut checked, mut emptied) = (0, 0);
        for run in 0..25 {
            let dir = tempfile::tempdir().expect("tempdir");
            let fs = synod_storage::FaultFs::new();
            let open = || crate::disk::test_support::open_on_fault_fs(dir.path(), &fs);
            let (mut disk, saved) = open().expect("open");
            let (mut hard, mut durable) =
                PaxosNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
            for step in 0..200 {
                let ballot = durable.promised.max(b(1, 1));
                let writes = match random(7) {
                    0 | 1 => {
                        let first_slot =
                            durable.purged_slot + 1 + random(durable.log.len() as u64 + 2);
                        let values = (0..1 + random(3)).map(batch).collect();
                        vec![Write::Accept { ballot, first_slot, values }]
                    }
                    2 => vec![Write::Promise { ballot: Ballot::new(ballot.round + 1, NodeId(2)) }],
                    3 if durable.last_slot() > durable.snapshot.slot => {
                        // A snapshot covers only slots this node holds durably.
                        disk.sync().expect("sync");
                        let slot = durable.snapshot.slot
                            + 1
                            + random(durable.last_slot() - durable.snapshot.slot);
                        let purge_slot =
                            if random(2) == 0 { slot } else { durable.purged_slot.max(slot / 2) };
                        let index = durable.snapshot.meta.index + 1;
                        vec![Write::Snapshot { point: point(slot, index), purge_slot }]
                    }
                    4 => {
                        disk.sync().expect("sync");
                        vec![]
                    }
                    5 => {
                        disk.sync().expect("sync");
                        disk.wait_purge().expect("purge");
                        vec![]
                    }
                    _ => {
                        if disk.wal.last_index() == 0 && hard.purged_record > 0 {
                            emptied += 1;
                        }
                        drop(disk);
                        fs.crash(run * 1000 + step);
                        let (d, saved) = open().expect("the log opens");
                        disk = d;
                        let recovered = PaxosNode::recover_durable(&mut disk, saved.as_deref());
                        let (h, dur) = recovered.unwrap_or_else(|err| {
                            panic!("run {run} step {step}: refused after losing unsynced writes only: {err}")
                        });
                        if h.synced_record > 0 {
                            checked += 1;
                        }
                        assert!(
                            h.next_record > h.purged_record.max(h.synced_record),
                            "run {run} step {step}: record {} would be numbered again",
                            h.next_record
                        );
                        (hard, durable) = (h, dur);
                        continue;
                    }
                };
                PaxosNode::persist(&mut disk, &mut hard, &writes).expect("persist");
                for w in &writes {
                    durable.apply(w);
                }
            }
        }
        assert!(
            checked > 100 && emptied > 5,
            "exercised: {checked} checks, {emptied} emptied journals"
        );
    }

    #[test]
    fn a_version_1_hard_state_still_reads_with_nothing_to_check() {
        let hard = PaxosHardState {
            promised: b(4, 2),
            snapshot: point(9, 9),
            purged_slot: 3,
            synced_record: 12,
            purged_record: 2,
            ..PaxosHardState::default()
        };
        let mut v1 = hard.encode();
        v1[HARD_STATE_MAGIC.len()] = 1;
        v1.truncate(v1.len() - 16);
        let read = PaxosHardState::decode(&v1).expect("version 1 reads");
        assert_eq!(read, PaxosHardState { synced_record: 0, purged_record: 0, ..hard.clone() });
        assert_eq!(PaxosHardState::decode(&hard.encode()), Ok(hard));
    }

    #[test]
    fn a_crash_between_the_snapshot_and_the_purge_keeps_every_acknowledged_slot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let small = synod_storage::WalOptions { segment_size_bytes: 600, ..Default::default() };
        let accept =
            |slot| Write::Accept { ballot: b(7, 2), first_slot: slot, values: vec![batch(slot)] };
        {
            let (mut disk, saved) = Disk::open_with(dir.path(), small.clone()).expect("open");
            let (mut hard, _) =
                PaxosNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
            for slot in 1..=50 {
                PaxosNode::persist(&mut disk, &mut hard, &[accept(slot)]).expect("accept");
            }
            disk.sync().expect("sync");
            let segments = disk.wal.segment_count();
            let snap = Write::Snapshot { point: point(40, 80), purge_slot: 30 };
            PaxosNode::persist(&mut disk, &mut hard, &[snap]).expect("snapshot");
            assert!(disk.wal.segment_count() < segments, "segments were detached");
            // The process dies before the round's sync deletes them.
        }
        let (mut disk, saved) = Disk::open_with(dir.path(), small.clone()).expect("reopen");
        assert_eq!(disk.wal.first_index(), 1, "nothing was deleted");
        let (mut hard, durable) =
            PaxosNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        assert_eq!((durable.purged_slot, durable.snapshot.slot), (30, 40));
        let held: Vec<_> =
            (31..=50).map(|slot| Some(SlotEntry { ballot: b(7, 2), value: batch(slot) })).collect();
        assert_eq!(durable.log, held);
        // The next snapshot's purge deletes them, after its round's sync.
        let snap = Write::Snapshot { point: point(50, 100), purge_slot: 45 };
        PaxosNode::persist(&mut disk, &mut hard, &[snap, accept(51)]).expect("snapshot");
        assert!(disk.purged_segments_left() > 0);
        disk.sync().expect("sync");
        disk.wait_purge().expect("purge");
        assert_eq!(disk.purged_segments_left(), 0);
        drop(disk);
        let (mut disk, saved) = Disk::open_with(dir.path(), small).expect("reopen");
        assert!(disk.wal.first_index() > 1);
        let (_, durable) =
            PaxosNode::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        assert_eq!((durable.purged_slot, durable.last_slot()), (45, 51));
        assert_eq!(durable.log[..5], held[15..]);
    }

    #[test]
    fn another_protocols_hard_state_is_refused() {
        // Raft's hard state starts with its version byte, 1.
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut disk, _) = Disk::open(dir.path()).expect("open");
        let err = PaxosNode::recover_durable(&mut disk, Some(&[1, 3, 0, 0])).expect_err("refused");
        assert!(err.to_string().contains("another protocol"), "{err}");
        let hard = PaxosHardState { promised: b(4, 2), ..PaxosHardState::default() };
        assert_eq!(PaxosHardState::decode(&hard.encode()), Ok(hard));
    }

    #[test]
    fn a_hard_state_naming_a_snapshot_beyond_the_log_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut disk, _) = Disk::open(dir.path()).expect("open");
            let mut hard = PaxosHardState {
                snapshot: point(9, 9),
                purged_slot: 3,
                ..PaxosHardState::default()
            };
            hard.save(&mut disk).expect("save");
        }
        let (mut disk, saved) = Disk::open(dir.path()).expect("reopen");
        let err = PaxosNode::recover_durable(&mut disk, saved.as_deref()).expect_err("corrupt");
        assert!(err.to_string().contains("snapshot of slot 9"), "{err}");
    }

    #[test]
    fn the_node_config_follows_the_settings_and_fits_a_driver_batch() {
        let settings = ProtocolSettings { snapshot_interval_entries: 64, ..Default::default() };
        let c =
            <PaxosNode as NodeProtocol>::config(vec![NodeId(1), NodeId(2), NodeId(3)], &settings)
                .expect("valid");
        assert_eq!((c.snapshot_interval_slots, c.snapshot_trailing_slots), (64, 64));
        assert!(c.max_commands_per_slot >= MAX_BATCH_COMMANDS);
        assert!(c.max_bytes_per_slot >= MAX_BATCH_BYTES);
        let bad =
            ProtocolSettings { heartbeat_interval: settings.election_timeout_max, ..settings };
        assert!(<PaxosNode as NodeProtocol>::config(vec![NodeId(1)], &bad).is_err());
    }
}
