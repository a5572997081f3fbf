//! [`KvStore`]: the replicated state machine behind the etcd v3 API. It
//! applies [`KvCommand`]s with etcd 3.4's semantics (the `applierV3backend`
//! and `mvcc` packages), serves [`KvQuery`]s, and hands out the events a
//! watch hub needs.
//!
//! Revisions: an empty store is at revision 1; a request that writes at least
//! one key advances it by exactly one, and all of its changes share that
//! revision; a request that writes nothing (a read, a delete that found
//! nothing, a txn whose branch has no effective write) leaves it alone.
//!
//! A request is either refused before it changes anything or applied whole:
//! every check a txn can fail (compacted or future read revisions, missing
//! leases, `ignore_*` on missing keys) runs against the state before the
//! txn, along the branches its compares select, as etcd's `checkRequests`
//! does.

use crate::api::*;
use crate::command::{
    EventsResponse, KvCommand, KvConfig, KvQuery, KvResponse, LeaseExpireResponse,
    MAX_EVENT_BYTES_PER_COMMAND, MAX_EVENTS_PER_COMMAND,
};
use crate::error::KvError;
use crate::lease::{Leases, MAX_LEASE_TTL_SECS};
use crate::mvcc::{EventBatch, Mvcc};
use crate::range::KeyRange;
use bytes::Bytes;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use synod_core::{StateMachine, Time};

/// The outcome of applying one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvApplied {
    /// The answer for the client.
    pub response: Result<KvResponse, KvError>,
    /// The changes it made, in order, each tagged with its revision in
    /// `kv.mod_revision`, with `prev_kv` filled in (a watcher that did not
    /// ask for it drops it).
    pub events: Vec<Event>,
}

/// The replicated multi-version key-value store with its leases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvStore {
    pub(crate) config: KvConfig,
    pub(crate) mvcc: Mvcc,
    pub(crate) leases: Leases,
}

/// One write request in progress: its changes go to `begin + 1`.
struct WriteTxn {
    begin: i64,
    changed: bool,
    events: Vec<Event>,
}

impl WriteTxn {
    /// The revision the request writes at.
    fn rev(&self) -> i64 {
        self.begin + 1
    }

    /// The revision a read inside the request sees (its own writes so far).
    fn read_rev(&self) -> i64 {
        self.begin + i64::from(self.changed)
    }
}

/// Which branch each txn takes, decided against the state before the
/// outermost txn (etcd's `compareToPath`).
struct TxnPath {
    succeeded: bool,
    /// One path per nested txn of the branch taken, in order.
    nested: Vec<TxnPath>,
}

fn branch<'t>(t: &'t TxnRequest, path: &TxnPath) -> &'t [RequestOp] {
    if path.succeeded { &t.success } else { &t.failure }
}

/// etcd's `compareKV`.
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let operand = |want: fn(&CompareTargetUnion) -> Option<i64>| {
        c.target_union.as_ref().and_then(want).unwrap_or(0)
    };
    let ordering = match c.target {
        CompareTarget::Value => {
            let v = match &c.target_union {
                Some(CompareTargetUnion::Value(v)) => v.as_ref(),
                _ => &[],
            };
            kv.value.as_ref().cmp(v)
        }
        CompareTarget::Create => kv.create_revision.cmp(&operand(|u| match u {
            CompareTargetUnion::CreateRevision(r) => Some(*r),
            _ => None,
        })),
        CompareTarget::Mod => kv.mod_revision.cmp(&operand(|u| match u {
            CompareTargetUnion::ModRevision(r) => Some(*r),
            _ => None,
        })),
        CompareTarget::Version => kv.version.cmp(&operand(|u| match u {
            CompareTargetUnion::Version(r) => Some(*r),
            _ => None,
        })),
        CompareTarget::Lease => kv.lease.cmp(&operand(|u| match u {
            CompareTargetUnion::Lease(r) => Some(*r),
            _ => None,
        })),
    };
    match c.result {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::NotEqual => ordering != Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
    }
}

fn sort_kvs(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let by = |a: &KeyValue, b: &KeyValue| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(by),
        SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
    }
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore::new(KvConfig::default())
    }
}

impl KvStore {
    /// An empty store (revision 1, no leases).
    pub fn new(config: KvConfig) -> KvStore {
        KvStore { config, mvcc: Mvcc::default(), leases: Leases::default() }
    }

    /// The limits this store applies.
    pub fn config(&self) -> &KvConfig {
        &self.config
    }

    /// The revision of the last write (1 for an empty store).
    pub fn current_revision(&self) -> i64 {
        self.mvcc.current_revision
    }

    /// The last compaction revision (-1 before any, as etcd reports it).
    pub fn compact_revision(&self) -> i64 {
        self.mvcc.compact_revision
    }

    /// Number of keys held, live or with history (a tombstone still held
    /// counts).
    pub fn held_keys(&self) -> usize {
        self.mvcc.keys.len()
    }

    /// Number of live leases.
    pub fn lease_count(&self) -> usize {
        self.leases.by_id.len()
    }

    /// Applies a command committed at log position `index` (used to derive
    /// lease ids deterministically).
    pub fn apply_command(&mut self, index: u64, command: &KvCommand) -> KvApplied {
        if let Err(e) = command.validate(&self.config) {
            return KvApplied { response: Err(e), events: Vec::new() };
        }
        let mut events = Vec::new();
        let response = match command {
            KvCommand::Range(r) => self.range(r).map(KvResponse::Range),
            KvCommand::Put(p) => self.put(p, &mut events).map(KvResponse::Put),
            KvCommand::DeleteRange(d) => {
                Ok(KvResponse::DeleteRange(self.delete_range(d, &mut events)))
            }
            KvCommand::Txn(t) => self.txn(t, &mut events).map(KvResponse::Txn),
            KvCommand::Compact(c) => self.compact(c).map(KvResponse::Compact),
            KvCommand::LeaseGrant { request, now } => {
                self.lease_grant(index, request, *now).map(KvResponse::LeaseGrant)
            }
            KvCommand::LeaseRevoke(r) => {
                self.lease_revoke(r, &mut events).map(KvResponse::LeaseRevoke)
            }
            KvCommand::LeaseKeepAlive { request, now } => {
                self.lease_keep_alive(request, *now).map(KvResponse::LeaseKeepAlive)
            }
            KvCommand::LeaseExpire { ids, now } => {
                Ok(KvResponse::LeaseExpire(self.lease_expire(ids, *now, &mut events)))
            }
            KvCommand::LeasePromote { now } => {
                self.leases.refresh_all(*now);
                Ok(KvResponse::LeasePromote(self.header()))
            }
            KvCommand::Events { key, range_end, start_revision, max_events } => {
                let start = if *start_revision == 0 {
                    self.current_revision() + 1
                } else {
                    *start_revision
                };
                let max = (*max_events).clamp(1, MAX_EVENTS_PER_COMMAND);
                let mut answer = self.events_response(key, range_end, start, max);
                cut_at_bytes(&mut answer, MAX_EVENT_BYTES_PER_COMMAND);
                Ok(KvResponse::Events(answer))
            }
            KvCommand::LeaseTimeToLive { request, now } => {
                self.lease_time_to_live(request, *now).map(KvResponse::LeaseTimeToLive)
            }
            KvCommand::LeaseLeases(_) => Ok(KvResponse::LeaseLeases(self.lease_leases())),
        };
        KvApplied { response, events }
    }

    /// The changes on `[key, range_end)` from `start_revision` on, at most
    /// about `max_events`; none when that start is compacted (the answer's
    /// `compact_revision` says so).
    fn events_response(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
        max_events: u64,
    ) -> EventsResponse {
        let max = usize::try_from(max_events).unwrap_or(usize::MAX);
        let batch = match self.events_since(key, range_end, start_revision, max) {
            Ok(batch) => batch,
            Err(_) => EventBatch { events: Vec::new(), next_revision: start_revision },
        };
        EventsResponse {
            header: self.header(),
            compact_revision: self.compact_revision(),
            events: batch.events,
            next_revision: batch.next_revision,
        }
    }

    /// Serves a read-only query against the current state.
    pub fn query(&self, query: &KvQuery) -> Result<KvResponse, KvError> {
        match query {
            KvQuery::Range(r) => self.range(r).map(KvResponse::Range),
            KvQuery::LeaseTimeToLive { request, now } => {
                self.lease_time_to_live(request, *now).map(KvResponse::LeaseTimeToLive)
            }
            KvQuery::LeaseLeases(_) => Ok(KvResponse::LeaseLeases(self.lease_leases())),
            KvQuery::Events { key, range_end, start_revision, max_events } => {
                Ok(KvResponse::Events(self.events_response(
                    key,
                    range_end,
                    *start_revision,
                    *max_events,
                )))
            }
            KvQuery::ExpiredLeases { now, max } => {
                let max = usize::try_from(*max).unwrap_or(usize::MAX);
                Ok(KvResponse::ExpiredLeases(self.expired_leases(*now, max)))
            }
            KvQuery::HashKv { revision } => self.hash_kv(*revision).map(KvResponse::HashKv),
        }
    }

    /// `KV.Range` at the current state.
    pub fn range(&self, r: &RangeRequest) -> Result<RangeResponse, KvError> {
        crate::command::check_range(r)?;
        self.range_at(r, self.current_revision())
    }

    /// The events on keys of `(key, range_end)` with revision ≥
    /// `start_revision`, at most about `max_events` (see [`EventBatch`]),
    /// for a watch hub to serve a watch from a past revision and to follow
    /// the store as it applies commands. A `start_revision` below the
    /// compaction revision is [`KvError::Compacted`] (etcd cancels such a
    /// watch, reporting [`KvStore::compact_revision`]); one above the current
    /// revision gives an empty batch.
    pub fn events_since(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
        max_events: usize,
    ) -> Result<EventBatch, KvError> {
        if start_revision < self.mvcc.compact_revision {
            return Err(KvError::Compacted);
        }
        Ok(self.mvcc.events_since(KeyRange::new(key, range_end), start_revision, max_events))
    }

    /// The leases whose deadline is at or before `now`, earliest first, at
    /// most `max`: what the leader proposes in a [`KvCommand::LeaseExpire`].
    pub fn expired_leases(&self, now: Time, max: usize) -> Vec<i64> {
        self.leases.expired(now, max)
    }

    /// Checks the store's invariants: the key space's (see `mvcc`), and
    /// that each lease's attached keys are exactly the live keys whose
    /// current version carries it. Used by tests and snapshot restore.
    pub(crate) fn check(&self) -> Result<(), String> {
        self.mvcc.check()?;
        let mut attached: BTreeMap<i64, BTreeSet<Bytes>> = BTreeMap::new();
        for (key, history) in &self.mvcc.keys {
            let current = history.last().expect("checked: histories are non-empty");
            if !current.is_tombstone() && current.lease != 0 {
                attached.entry(current.lease).or_default().insert(key.clone());
            }
        }
        for (id, lease) in &self.leases.by_id {
            if lease.keys != attached.remove(id).unwrap_or_default() {
                return Err(format!("lease {id}'s keys disagree with the key space"));
            }
        }
        match attached.keys().next() {
            Some(id) => Err(format!("keys attached to missing lease {id}")),
            None => Ok(()),
        }
    }

    fn header(&self) -> ResponseHeader {
        ResponseHeader::at(self.current_revision())
    }

    // ---- reads ----

    /// etcd's applier `Range` with the read view at `cur`.
    fn range_at(&self, r: &RangeRequest, cur: i64) -> Result<RangeResponse, KvError> {
        if r.revision > cur {
            return Err(KvError::FutureRevision);
        }
        let rev = if r.revision <= 0 { cur } else { r.revision };
        if rev < self.mvcc.compact_revision {
            return Err(KvError::Compacted);
        }
        let filtered = r.sort_order != SortOrder::None
            || r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        // Fetch one extra to know whether there are more.
        let fetch = if filtered || r.limit <= 0 {
            0
        } else {
            usize::try_from(r.limit).unwrap_or(usize::MAX).saturating_add(1)
        };
        let range = KeyRange::new(&r.key, &r.range_end);
        let (mut kvs, count) = self.mvcc.range(range, rev, fetch, r.count_only);
        kvs.retain(|kv| {
            (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                && (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
                && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
        });
        let order = if r.sort_target != SortTarget::Key && r.sort_order == SortOrder::None {
            SortOrder::Ascend
        } else {
            r.sort_order
        };
        sort_kvs(&mut kvs, order, r.sort_target);
        let mut more = false;
        if r.limit > 0 && kvs.len() as u64 > r.limit as u64 {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value = Bytes::new();
            }
        }
        Ok(RangeResponse { header: ResponseHeader::at(cur), kvs, more, count: count as i64 })
    }

    /// etcd's `applyCompare` against the state at `rev`.
    fn compare_holds(&self, c: &Compare, rev: i64) -> bool {
        let (kvs, _) = self.mvcc.range(KeyRange::new(&c.key, &c.range_end), rev, 0, false);
        if kvs.is_empty() {
            // A value compare on a missing key always fails (no way to
            // represent a missing value); others compare against zeros.
            return c.target != CompareTarget::Value && compare_kv(c, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_kv(c, kv))
    }

    fn compare_to_path(&self, t: &TxnRequest, rev: i64) -> TxnPath {
        let succeeded = t.compare.iter().all(|c| self.compare_holds(c, rev));
        let ops = if succeeded { &t.success } else { &t.failure };
        let nested = ops
            .iter()
            .filter_map(|op| match op {
                RequestOp::Txn(n) => Some(self.compare_to_path(n, rev)),
                _ => None,
            })
            .collect();
        TxnPath { succeeded, nested }
    }

    /// etcd's `checkRequests` with `checkRequestPut` and `checkRequestRange`
    /// (puts first, only for txns that may write), along the chosen path.
    fn check_txn_state(&self, t: &TxnRequest, path: &TxnPath, puts: bool) -> Result<(), KvError> {
        let mut nested = path.nested.iter();
        for op in branch(t, path) {
            match op {
                RequestOp::Txn(n) => {
                    self.check_txn_state(n, nested.next().expect("one path per nested txn"), puts)?
                }
                RequestOp::Put(p) if puts => {
                    let exists = || self.mvcc.get_at(&p.key, i64::MAX).is_some();
                    if (p.ignore_value || p.ignore_lease) && !exists() {
                        return Err(KvError::KeyNotFound);
                    }
                    if p.lease != 0 && !self.leases.contains(p.lease) {
                        return Err(KvError::LeaseNotFound);
                    }
                }
                RequestOp::Range(r) if !puts => {
                    if r.revision != 0 && r.revision > self.current_revision() {
                        return Err(KvError::FutureRevision);
                    }
                    if r.revision != 0 && r.revision < self.mvcc.compact_revision {
                        return Err(KvError::Compacted);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    // ---- writes ----

    fn begin_write(&self) -> WriteTxn {
        WriteTxn { begin: self.current_revision(), changed: false, events: Vec::new() }
    }

    fn end_write(&mut self, w: WriteTxn, events: &mut Vec<Event>) -> i64 {
        self.mvcc.finish_write(w.changed);
        assert_eq!(self.current_revision(), w.read_rev(), "one revision per write request");
        if events.is_empty() {
            // The usual case (one write request per command): hand the
            // events over instead of copying them into a second vector.
            *events = w.events;
        } else {
            events.extend(w.events);
        }
        self.current_revision()
    }

    fn write_put(&mut self, w: &mut WriteTxn, key: &Bytes, value: Bytes, lease: i64) -> i64 {
        let event = self.mvcc.put(key, value, lease, w.rev());
        if let Some(prev) = &event.prev_kv
            && prev.lease != 0
        {
            self.leases.detach(prev.lease, key);
        }
        if lease != 0 {
            self.leases.attach(lease, &event.kv.key);
        }
        w.changed = true;
        w.events.push(event);
        w.rev()
    }

    fn write_delete(&mut self, w: &mut WriteTxn, key: &[u8]) {
        let event = self.mvcc.delete(key, w.rev()).expect("deleting a live key");
        if let Some(prev) = &event.prev_kv
            && prev.lease != 0
        {
            self.leases.detach(prev.lease, key);
        }
        w.changed = true;
        w.events.push(event);
    }

    /// etcd's applier `Put` within a write request.
    fn put_in(&mut self, w: &mut WriteTxn, p: &PutRequest) -> Result<PutResponse, KvError> {
        if p.lease != 0 && !self.leases.contains(p.lease) {
            return Err(KvError::LeaseNotFound);
        }
        if !(p.ignore_value || p.ignore_lease) {
            // A plain put needs no look-up of its own: during a write the
            // version visible at `read_rev` is the key's latest, which the
            // put's event carries as `prev_kv`.
            let rev = self.write_put(w, &p.key, p.value.clone(), p.lease);
            let prev_kv =
                if p.prev_kv { w.events.last().and_then(|e| e.prev_kv.clone()) } else { None };
            return Ok(PutResponse { header: ResponseHeader::at(rev), prev_kv });
        }
        let prev = self.mvcc.get_at(&p.key, w.read_rev());
        let (value, lease) = match (&prev, p.ignore_value || p.ignore_lease) {
            (None, true) => return Err(KvError::KeyNotFound),
            (Some(prev), true) => (
                if p.ignore_value { prev.value.clone() } else { p.value.clone() },
                if p.ignore_lease { prev.lease } else { p.lease },
            ),
            (_, false) => (p.value.clone(), p.lease),
        };
        let rev = self.write_put(w, &p.key, value, lease);
        Ok(PutResponse { header: ResponseHeader::at(rev), prev_kv: prev.filter(|_| p.prev_kv) })
    }

    /// etcd's applier `DeleteRange` within a write request.
    fn delete_in(&mut self, w: &mut WriteTxn, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let range = KeyRange::new(&d.key, &d.range_end);
        let prev_kvs =
            if d.prev_kv { self.mvcc.range(range, w.read_rev(), 0, false).0 } else { Vec::new() };
        let keys = self.mvcc.live_keys(range);
        for key in &keys {
            self.write_delete(w, key);
        }
        DeleteRangeResponse {
            header: ResponseHeader::at(w.read_rev()),
            deleted: keys.len() as i64,
            prev_kvs,
        }
    }

    fn put(&mut self, p: &PutRequest, events: &mut Vec<Event>) -> Result<PutResponse, KvError> {
        let mut w = self.begin_write();
        let response = self.put_in(&mut w, p);
        self.end_write(w, events);
        response
    }

    fn delete_range(
        &mut self,
        d: &DeleteRangeRequest,
        events: &mut Vec<Event>,
    ) -> DeleteRangeResponse {
        let mut w = self.begin_write();
        let response = self.delete_in(&mut w, d);
        self.end_write(w, events);
        response
    }

    fn txn(&mut self, t: &TxnRequest, events: &mut Vec<Event>) -> Result<TxnResponse, KvError> {
        let path = self.compare_to_path(t, self.current_revision());
        if !t.is_read_only() {
            self.check_txn_state(t, &path, true)?;
        }
        self.check_txn_state(t, &path, false)?;
        let mut w = self.begin_write();
        let mut response = self.apply_txn(&mut w, t, &path);
        response.header = ResponseHeader::at(self.end_write(w, events));
        Ok(response)
    }

    /// etcd's `applyTxn`: nested txn responses carry an empty header.
    fn apply_txn(&mut self, w: &mut WriteTxn, t: &TxnRequest, path: &TxnPath) -> TxnResponse {
        let mut nested = path.nested.iter();
        let mut responses = Vec::new();
        for op in branch(t, path) {
            let response = match op {
                RequestOp::Range(r) => ResponseOp::Range(
                    self.range_at(r, w.read_rev()).expect("txn ranges are checked before applying"),
                ),
                RequestOp::Put(p) => ResponseOp::Put(
                    self.put_in(w, p).expect("txn puts are checked before applying"),
                ),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_in(w, d)),
                RequestOp::Txn(n) => ResponseOp::Txn(self.apply_txn(
                    w,
                    n,
                    nested.next().expect("one path per nested txn"),
                )),
            };
            responses.push(response);
        }
        TxnResponse { header: ResponseHeader::default(), succeeded: path.succeeded, responses }
    }

    fn compact(&mut self, c: &CompactionRequest) -> Result<CompactionResponse, KvError> {
        if c.revision <= self.mvcc.compact_revision {
            return Err(KvError::Compacted);
        }
        if c.revision > self.current_revision() {
            return Err(KvError::FutureRevision);
        }
        self.mvcc.compact(c.revision);
        Ok(CompactionResponse { header: self.header() })
    }

    // ---- leases ----

    fn lease_grant(
        &mut self,
        index: u64,
        r: &LeaseGrantRequest,
        now: Time,
    ) -> Result<LeaseGrantResponse, KvError> {
        let id = if r.id == 0 { self.leases.fresh_id(index) } else { r.id };
        if r.ttl > MAX_LEASE_TTL_SECS {
            return Err(KvError::LeaseTtlTooLarge);
        }
        if self.leases.contains(id) {
            return Err(KvError::LeaseExists);
        }
        let ttl = r.ttl.max(self.config.min_lease_ttl_secs);
        self.leases.grant(id, ttl, now);
        Ok(LeaseGrantResponse { header: self.header(), id, ttl, error: String::new() })
    }

    /// Deletes the lease's keys in one revision and drops the lease.
    fn revoke(&mut self, id: i64, events: &mut Vec<Event>) {
        let keys = self.leases.get(id).expect("revoking a live lease").keys.clone();
        let mut w = self.begin_write();
        for key in &keys {
            self.write_delete(&mut w, key);
        }
        self.end_write(w, events);
        let lease = self.leases.remove(id).expect("revoking a live lease");
        assert!(lease.keys.is_empty(), "every attached key was deleted");
    }

    fn lease_revoke(
        &mut self,
        r: &LeaseRevokeRequest,
        events: &mut Vec<Event>,
    ) -> Result<LeaseRevokeResponse, KvError> {
        if !self.leases.contains(r.id) {
            return Err(KvError::LeaseNotFound);
        }
        self.revoke(r.id, events);
        Ok(LeaseRevokeResponse { header: self.header() })
    }

    fn lease_keep_alive(
        &mut self,
        r: &LeaseKeepAliveRequest,
        now: Time,
    ) -> Result<LeaseKeepAliveResponse, KvError> {
        let lease = self.leases.get(r.id).ok_or(KvError::LeaseNotFound)?;
        // An expired lease is about to be revoked: etcd waits for that and
        // answers "not found"; renewing it here would race the leader.
        if lease.deadline <= now {
            return Err(KvError::LeaseNotFound);
        }
        let ttl = lease.ttl_secs;
        self.leases.refresh(r.id, now);
        Ok(LeaseKeepAliveResponse { header: self.header(), id: r.id, ttl })
    }

    fn lease_expire(
        &mut self,
        ids: &[i64],
        now: Time,
        events: &mut Vec<Event>,
    ) -> LeaseExpireResponse {
        let mut revoked = Vec::new();
        for &id in ids {
            if self.leases.get(id).is_some_and(|l| l.deadline <= now) {
                self.revoke(id, events);
                revoked.push(id);
            }
        }
        LeaseExpireResponse { header: self.header(), revoked }
    }

    fn lease_time_to_live(
        &self,
        r: &LeaseTimeToLiveRequest,
        now: Time,
    ) -> Result<LeaseTimeToLiveResponse, KvError> {
        let lease = self.leases.get(r.id).ok_or(KvError::LeaseNotFound)?;
        let remaining_us = i128::from(lease.deadline.as_micros()) - i128::from(now.as_micros());
        Ok(LeaseTimeToLiveResponse {
            header: self.header(),
            id: r.id,
            ttl: (remaining_us / 1_000_000) as i64,
            granted_ttl: lease.ttl_secs,
            keys: if r.keys { lease.keys.iter().cloned().collect() } else { Vec::new() },
        })
    }

    fn lease_leases(&self) -> LeaseLeasesResponse {
        LeaseLeasesResponse {
            header: self.header(),
            leases: self.leases.by_id.keys().map(|&id| LeaseStatus { id }).collect(),
        }
    }
}

impl KvStore {
    /// [`StateMachine::apply`], at the agreed time `agreed` when the
    /// protocol emitted one ([`synod_core::Committed::time`]): every `now`
    /// in the command is replaced by it ([`KvCommand::at_agreed_time`]).
    /// With `None` it is exactly `apply`.
    pub fn apply_at(&mut self, index: u64, op: &[u8], agreed: Option<Time>) -> Bytes {
        let Some(agreed) = agreed else { return StateMachine::apply(self, index, op) };
        let result = if op.len() > self.config.max_request_bytes {
            Err(KvError::RequestTooLarge)
        } else {
            KvCommand::decode(op)
                .and_then(|c| self.apply_command(index, &c.at_agreed_time(agreed)).response)
        };
        crate::codec::encode_result(&result)
    }
}

impl StateMachine for KvStore {
    /// Decodes a [`KvCommand`], applies it, and answers with
    /// [`encode_result`](crate::encode_result) bytes. Watchers learn of the
    /// changes through [`KvStore::events_since`].
    fn apply(&mut self, index: u64, op: &[u8]) -> Bytes {
        let result = if op.len() > self.config.max_request_bytes {
            Err(KvError::RequestTooLarge)
        } else {
            KvCommand::decode(op).and_then(|c| self.apply_command(index, &c).response)
        };
        crate::codec::encode_result(&result)
    }

    /// Decodes a [`KvQuery`] and answers with
    /// [`encode_result`](crate::encode_result) bytes.
    fn query(&self, op: &[u8]) -> Bytes {
        let result = KvQuery::decode(op).and_then(|q| KvStore::query(self, &q));
        crate::codec::encode_result(&result)
    }
}

/// Drops the events of `e` from the first revision at which their keys and
/// values (previous values included) pass `max_bytes`, keeping at least
/// one revision whole, and points `next_revision` there: a PBFT client's
/// answer (kept in every replica's reply cache, decoded by a client with a
/// bounded message size) stays small whatever the values.
fn cut_at_bytes(e: &mut EventsResponse, max_bytes: usize) {
    let size = |ev: &Event| {
        ev.kv.key.len()
            + ev.kv.value.len()
            + ev.prev_kv.as_ref().map_or(0, |p| p.key.len() + p.value.len())
    };
    let mut total = 0;
    for i in 0..e.events.len() {
        let rev = e.events[i].kv.mod_revision;
        let starts_revision = i == 0 || e.events[i - 1].kv.mod_revision != rev;
        if starts_revision && i > 0 && total >= max_bytes {
            e.events.truncate(i);
            e.next_revision = rev;
            return;
        }
        total += size(&e.events[i]);
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod model_tests;
