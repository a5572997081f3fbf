//! [`KvStore`] against etcd's documented (and, for §2.8 of the etcd anchor,
//! observed) behaviour.

use super::*;
use crate::command::KvQuery;
use crate::range::prefix_end;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A store plus a log position counter, with one helper per request.
struct T {
    s: KvStore,
    index: u64,
}

impl T {
    fn new() -> T {
        T { s: KvStore::default(), index: 0 }
    }

    fn apply(&mut self, c: KvCommand) -> KvApplied {
        self.index += 1;
        let applied = self.s.apply_command(self.index, &c);
        self.s.check().expect("invariants hold after every command");
        applied
    }

    fn ok(&mut self, c: KvCommand) -> KvResponse {
        self.apply(c).response.expect("command succeeds")
    }

    fn put(&mut self, k: &str, v: &str) -> PutResponse {
        self.put_req(PutRequest { key: b(k), value: b(v), ..Default::default() })
    }

    fn put_req(&mut self, p: PutRequest) -> PutResponse {
        match self.ok(KvCommand::Put(p)) {
            KvResponse::Put(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn del(&mut self, k: &str, end: &str) -> DeleteRangeResponse {
        let d = DeleteRangeRequest { key: b(k), range_end: b(end), prev_kv: true };
        match self.ok(KvCommand::DeleteRange(d)) {
            KvResponse::DeleteRange(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn txn(&mut self, t: TxnRequest) -> Result<TxnResponse, KvError> {
        self.apply(KvCommand::Txn(t)).response.map(|r| match r {
            KvResponse::Txn(t) => t,
            other => panic!("{other:?}"),
        })
    }

    fn get(&self, r: RangeRequest) -> Result<RangeResponse, KvError> {
        self.s.range(&r)
    }

    fn get_key(&self, k: &str) -> Option<KeyValue> {
        self.get(RangeRequest { key: b(k), ..Default::default() }).unwrap().kvs.pop()
    }

    fn keys(&self, r: RangeRequest) -> Vec<String> {
        let resp = self.get(r).unwrap();
        resp.kvs.iter().map(|kv| String::from_utf8(kv.key.to_vec()).unwrap()).collect()
    }

    fn grant(&mut self, id: i64, ttl: i64, now_ms: u64) -> Result<LeaseGrantResponse, KvError> {
        let request = LeaseGrantRequest { ttl, id };
        self.apply(KvCommand::LeaseGrant { request, now: Time::from_millis(now_ms) }).response.map(
            |r| match r {
                KvResponse::LeaseGrant(g) => g,
                other => panic!("{other:?}"),
            },
        )
    }

    fn rev(&self) -> i64 {
        self.s.current_revision()
    }
}

fn range(k: &str, end: &str) -> RangeRequest {
    RangeRequest { key: b(k), range_end: b(end), ..Default::default() }
}

fn cmp(target: CompareTarget, result: CompareResult, key: &str, u: CompareTargetUnion) -> Compare {
    Compare { result, target, key: b(key), target_union: Some(u), range_end: Bytes::new() }
}

fn op_put(k: &str, v: &str) -> RequestOp {
    RequestOp::Put(PutRequest { key: b(k), value: b(v), ..Default::default() })
}

/// The etcd anchor's live transcript (§2.8), revisions shifted to a fresh
/// store.
#[test]
fn the_live_etcd_transcript() {
    let mut t = T::new();
    assert_eq!(t.get(range("/m/none", "")).unwrap().header.revision, 1);
    assert_eq!(t.put("/m/a", "1").header.revision, 2);
    assert_eq!(t.put("/m/a", "2").header.revision, 3);
    let a = t.get_key("/m/a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 3, 2));
    let none = t.del("/m/zzz", "");
    assert_eq!((none.header.revision, none.deleted), (3, 0), "no bump for a missing key");
    let d = t.del("/m/a", "");
    assert_eq!((d.header.revision, d.deleted), (4, 1));
    t.put("/m/a", "3");
    let a = t.get_key("/m/a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
    let r = t
        .txn(TxnRequest {
            success: vec![op_put("/m/b", "x"), op_put("/m/c", "y")],
            ..Default::default()
        })
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(r.header.revision, 6, "one revision for the whole txn");
    for sub in &r.responses {
        let ResponseOp::Put(p) = sub else { panic!() };
        assert_eq!(p.header.revision, 6);
    }
    let all = t
        .get(range("/m/", &prefix_end(b"/m/").iter().map(|&c| c as char).collect::<String>()))
        .unwrap();
    let revs: Vec<_> =
        all.kvs.iter().map(|kv| (kv.create_revision, kv.mod_revision, kv.version)).collect();
    assert_eq!(revs, vec![(5, 5, 1), (6, 6, 1), (6, 6, 1)]);
    let r = t
        .txn(TxnRequest {
            compare: vec![cmp(
                CompareTarget::Create,
                CompareResult::Equal,
                "/m/a",
                CompareTargetUnion::CreateRevision(0),
            )],
            success: vec![op_put("/m/a", "no")],
            failure: vec![RequestOp::Range(range("/m/a", ""))],
        })
        .unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.header.revision, 6, "the branch taken wrote nothing");
    let ResponseOp::Range(got) = &r.responses[0] else { panic!() };
    assert_eq!(got.kvs[0].value, b("3"));
    let old = t.get(RangeRequest { revision: 3, ..range("/m/a", "") }).unwrap();
    assert_eq!(old.kvs[0].value, b("2"), "time travel");
    assert_eq!(
        (old.kvs[0].create_revision, old.kvs[0].mod_revision, old.kvs[0].version),
        (2, 3, 2)
    );
    assert_eq!(old.header.revision, 6, "the header carries the current revision");
    assert!(matches!(
        t.ok(KvCommand::Compact(CompactionRequest { revision: 6, physical: false })),
        KvResponse::Compact(_)
    ));
    assert_eq!(t.get(RangeRequest { revision: 3, ..range("/m/a", "") }), Err(KvError::Compacted));
    assert_eq!(
        t.get(RangeRequest { revision: 1006, ..range("/m/a", "") }),
        Err(KvError::FutureRevision)
    );
    assert_eq!(t.s.events_since(b"/m/a", b"", 3, 10), Err(KvError::Compacted));
    assert!(
        t.get(RangeRequest { revision: 6, ..range("/m/a", "") }).is_ok(),
        "reading at the compaction revision is fine"
    );
    assert_eq!(
        t.apply(KvCommand::Compact(CompactionRequest { revision: 6, physical: false })).response,
        Err(KvError::Compacted),
        "compacting the same revision twice"
    );
    assert_eq!(
        t.apply(KvCommand::Compact(CompactionRequest { revision: 7, physical: false })).response,
        Err(KvError::FutureRevision)
    );
}

#[test]
fn range_conventions_limit_count_sort_and_filters() {
    let mut t = T::new();
    for (k, v) in [("b", "3"), ("a", "2"), ("c", "1"), ("d", "0")] {
        t.put(k, v); // a: rev 3, b: 2, c: 4, d: 5
    }
    t.put("b", "33"); // b: version 2, mod 6
    assert_eq!(t.keys(range("b", "")), ["b"]);
    assert_eq!(t.keys(range("b", "\0")), ["b", "c", "d"], "from-key");
    assert_eq!(t.keys(range("\0", "\0")), ["a", "b", "c", "d"], "everything");
    assert_eq!(t.keys(range("b", "d")), ["b", "c"]);
    assert!(t.keys(range("d", "b")).is_empty(), "an inverted range is empty");
    let limited = t.get(RangeRequest { limit: 2, ..range("a", "\0") }).unwrap();
    assert_eq!((limited.kvs.len(), limited.more, limited.count), (2, true, 4));
    let exact = t.get(RangeRequest { limit: 4, ..range("a", "\0") }).unwrap();
    assert!(!exact.more);
    let count = t.get(RangeRequest { count_only: true, ..range("a", "\0") }).unwrap();
    assert_eq!((count.kvs.len(), count.count, count.more), (0, 4, false));
    let keys_only = t.get(RangeRequest { keys_only: true, ..range("a", "\0") }).unwrap();
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty() && kv.version > 0));
    let sorted = |order, target| {
        t.keys(RangeRequest { sort_order: order, sort_target: target, ..range("a", "\0") })
    };
    assert_eq!(sorted(SortOrder::Descend, SortTarget::Key), ["d", "c", "b", "a"]);
    assert_eq!(
        sorted(SortOrder::None, SortTarget::Value),
        ["d", "c", "a", "b"],
        "non-key target sorts ascending"
    );
    assert_eq!(sorted(SortOrder::Ascend, SortTarget::Create), ["b", "a", "c", "d"]);
    assert_eq!(sorted(SortOrder::Descend, SortTarget::Mod), ["b", "d", "c", "a"]);
    assert_eq!(
        sorted(SortOrder::Descend, SortTarget::Version),
        ["b", "a", "c", "d"],
        "ties keep key order"
    );
    // The lock recipe: the last creator below a revision.
    let waiters = t
        .get(RangeRequest {
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Create,
            max_create_revision: 4,
            limit: 1,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!(
        (waiters.kvs[0].key.as_ref(), waiters.more, waiters.count),
        (b"c".as_slice(), true, 4)
    );
    let filtered = t
        .get(RangeRequest { min_mod_revision: 4, max_mod_revision: 5, ..range("a", "\0") })
        .unwrap();
    assert_eq!(filtered.kvs.iter().map(|kv| kv.mod_revision).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(filtered.count, 4, "etcd counts before the revision filters");
    assert_eq!(t.get(range("", "")), Err(KvError::EmptyKey));
}

#[test]
fn put_flags_follow_etcd() {
    let mut t = T::new();
    let first =
        t.put_req(PutRequest { key: b("k"), value: b("v1"), prev_kv: true, ..Default::default() });
    assert_eq!(first.prev_kv, None);
    let second =
        t.put_req(PutRequest { key: b("k"), value: b("v2"), prev_kv: true, ..Default::default() });
    assert_eq!(second.prev_kv.map(|kv| kv.value), Some(b("v1")));
    let missing = |ignore_value, ignore_lease| {
        KvCommand::Put(PutRequest {
            key: b("nope"),
            ignore_value,
            ignore_lease,
            ..Default::default()
        })
    };
    assert_eq!(t.apply(missing(true, false)).response, Err(KvError::KeyNotFound));
    assert_eq!(t.apply(missing(false, true)).response, Err(KvError::KeyNotFound));
    let with_lease = PutRequest { key: b("k"), value: b("x"), lease: 99, ..Default::default() };
    assert_eq!(t.apply(KvCommand::Put(with_lease)).response, Err(KvError::LeaseNotFound));
    assert_eq!(t.rev(), 3, "refused puts write nothing");
    let id = t.grant(0, 60, 0).unwrap().id;
    t.put_req(PutRequest { key: b("k"), value: b("v3"), lease: id, ..Default::default() });
    t.put_req(PutRequest {
        key: b("k"),
        ignore_value: true,
        ignore_lease: true,
        ..Default::default()
    });
    let kv = t.get_key("k").unwrap();
    assert_eq!((kv.value, kv.lease, kv.version), (b("v3"), id, 4));
    t.put_req(PutRequest { key: b("k"), value: b("v4"), ignore_lease: true, ..Default::default() });
    assert_eq!(t.get_key("k").unwrap().lease, id, "ignore_lease keeps the lease");
    t.put("k", "v5");
    assert_eq!(t.get_key("k").unwrap().lease, 0, "a plain put detaches the lease");
    assert!(t.s.leases.get(id).unwrap().keys.is_empty());
}

#[test]
fn txn_compares_every_target_and_result() {
    let mut t = T::new();
    let id = t.grant(7, 60, 0).unwrap().id;
    t.put_req(PutRequest { key: b("k"), value: b("v"), lease: id, ..Default::default() }); // rev 2
    t.put("k", "w"); // rev 3, version 2, lease 0
    let holds = |t: &mut T, c: Compare| {
        t.txn(TxnRequest { compare: vec![c], ..Default::default() }).unwrap().succeeded
    };
    use CompareResult::*;
    use CompareTarget as Tg;
    use CompareTargetUnion as U;
    assert!(holds(&mut t, cmp(Tg::Version, Equal, "k", U::Version(2))));
    assert!(holds(&mut t, cmp(Tg::Create, Equal, "k", U::CreateRevision(2))));
    assert!(holds(&mut t, cmp(Tg::Mod, Greater, "k", U::ModRevision(2))));
    assert!(holds(&mut t, cmp(Tg::Mod, Less, "k", U::ModRevision(4))));
    assert!(holds(&mut t, cmp(Tg::Value, Equal, "k", U::Value(b("w")))));
    assert!(holds(&mut t, cmp(Tg::Value, Greater, "k", U::Value(b("v")))));
    assert!(holds(&mut t, cmp(Tg::Lease, Equal, "k", U::Lease(0))));
    assert!(holds(&mut t, cmp(Tg::Version, NotEqual, "k", U::Version(1))));
    // Missing keys: zeros, but a value compare is always false.
    assert!(holds(&mut t, cmp(Tg::Version, Equal, "missing", U::Version(0))));
    assert!(holds(&mut t, cmp(Tg::Create, Equal, "missing", U::CreateRevision(0))));
    assert!(!holds(&mut t, cmp(Tg::Value, Equal, "missing", U::Value(Bytes::new()))));
    assert!(!holds(&mut t, cmp(Tg::Value, NotEqual, "missing", U::Value(b("x")))));
    // A mismatched operand compares against zero.
    assert!(holds(&mut t, cmp(Tg::Version, Greater, "k", U::Lease(5))));
    // Over a range every key must hold.
    t.put("k2", "a");
    let mut over = cmp(Tg::Version, Equal, "k", U::Version(2));
    over.range_end = b("l");
    assert!(!holds(&mut t, over.clone()), "k2 has version 1");
    over.result = Greater;
    over.target_union = Some(U::Version(0));
    assert!(holds(&mut t, over));
    assert_eq!(t.rev(), 4, "read-only txns never bump the revision");
}

#[test]
fn txn_writes_are_atomic_and_see_each_other() {
    let mut t = T::new();
    t.put("a", "1"); // rev 2
    let r = t
        .txn(TxnRequest {
            success: vec![
                RequestOp::Range(range("a", "\0")),
                op_put("b", "2"),
                RequestOp::Range(range("a", "\0")),
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: b("a"),
                    range_end: Bytes::new(),
                    prev_kv: true,
                }),
                RequestOp::Txn(TxnRequest {
                    compare: vec![cmp(
                        CompareTarget::Version,
                        CompareResult::Equal,
                        "b",
                        CompareTargetUnion::Version(0),
                    )],
                    success: vec![op_put("c", "nested-then")],
                    failure: vec![op_put("c", "nested-else")],
                }),
            ],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.header.revision, 3);
    let ResponseOp::Range(before) = &r.responses[0] else { panic!() };
    let ResponseOp::Range(after) = &r.responses[2] else { panic!() };
    assert_eq!((before.kvs.len(), before.header.revision), (1, 2));
    assert_eq!((after.kvs.len(), after.header.revision), (2, 3), "reads see the txn's own writes");
    let ResponseOp::DeleteRange(d) = &r.responses[3] else { panic!() };
    assert_eq!((d.deleted, d.header.revision, d.prev_kvs.len()), (1, 3, 1));
    let ResponseOp::Txn(nested) = &r.responses[4] else { panic!() };
    assert!(nested.succeeded, "nested compares see the state before the outer txn");
    assert_eq!(nested.header.revision, 0, "etcd leaves nested txn headers empty");
    assert_eq!(t.get_key("c").unwrap().value, b("nested-then"));
    let events = t.s.events_since(b"\0", b"\0", 3, 100).unwrap().events;
    let summary: Vec<_> =
        events.iter().map(|e| (e.r#type, e.kv.key.clone(), e.kv.mod_revision)).collect();
    assert_eq!(
        summary,
        vec![
            (EventType::Put, b("b"), 3),
            (EventType::Delete, b("a"), 3),
            (EventType::Put, b("c"), 3)
        ],
        "events of one txn share its revision, in apply order"
    );

    // A txn that fails a check changes nothing, even after earlier ops.
    let bad = TxnRequest {
        success: vec![
            op_put("x", "1"),
            RequestOp::Put(PutRequest { key: b("y"), lease: 42, ..Default::default() }),
        ],
        ..Default::default()
    };
    assert_eq!(t.txn(bad), Err(KvError::LeaseNotFound));
    let future = TxnRequest {
        success: vec![
            op_put("x", "1"),
            RequestOp::Range(RangeRequest { revision: 4, ..range("a", "") }),
        ],
        ..Default::default()
    };
    assert_eq!(
        t.txn(future),
        Err(KvError::FutureRevision),
        "checked against the state before the txn"
    );
    assert_eq!((t.rev(), t.get_key("x")), (3, None));
    // Checks only follow the branch taken.
    let untaken = TxnRequest {
        compare: vec![cmp(
            CompareTarget::Version,
            CompareResult::Equal,
            "b",
            CompareTargetUnion::Version(1),
        )],
        success: vec![op_put("x", "1")],
        failure: vec![RequestOp::Put(PutRequest { key: b("y"), lease: 42, ..Default::default() })],
    };
    assert!(t.txn(untaken).unwrap().succeeded);
    // Too many ops and duplicates are refused before anything else.
    let many = TxnRequest {
        success: (0..129).map(|i| op_put(&format!("m{i}"), "v")).collect(),
        ..Default::default()
    };
    assert_eq!(t.txn(many), Err(KvError::TooManyOps));
    let dup =
        TxnRequest { success: vec![op_put("d", "1"), op_put("d", "2")], ..Default::default() };
    assert_eq!(t.txn(dup), Err(KvError::DuplicateKey));
}

#[test]
fn leases_grant_attach_revoke_expire_and_keep_alive() {
    let mut t = T::new();
    let g = t.grant(0, 1, 0).unwrap();
    assert!(g.id > 0);
    assert_eq!(g.ttl, 2, "raised to the minimum TTL");
    let mut other = T::new();
    assert_eq!(other.grant(0, 1, 0).unwrap().id, g.id, "ids are a function of the log position");
    assert_eq!(t.grant(g.id, 10, 0), Err(KvError::LeaseExists));
    assert_eq!(t.grant(5, MAX_LEASE_TTL_SECS + 1, 0), Err(KvError::LeaseTtlTooLarge));
    let l = t.grant(5, 10, 0).unwrap().id;
    for k in ["s/1", "s/2", "t"] {
        t.put_req(PutRequest { key: b(k), value: b("v"), lease: l, ..Default::default() });
    }
    t.del("t", "");
    let ttl = |t: &T, id, now_ms| match t.s.query(&KvQuery::LeaseTimeToLive {
        request: LeaseTimeToLiveRequest { id, keys: true },
        now: Time::from_millis(now_ms),
    }) {
        Ok(KvResponse::LeaseTimeToLive(r)) => Ok(r),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    };
    let info = ttl(&t, l, 2_500).unwrap();
    assert_eq!((info.ttl, info.granted_ttl), (7, 10), "remaining seconds, truncated");
    assert_eq!(info.keys, vec![b("s/1"), b("s/2")], "deleted keys are detached");
    assert_eq!(t.s.expired_leases(Time::from_millis(1_999), 10), Vec::<i64>::new());
    assert_eq!(t.s.expired_leases(Time::from_millis(2_000), 10), vec![g.id]);
    // Keep-alive restarts the TTL from the leader's now.
    let ka = |t: &mut T, id, now_ms| {
        t.apply(KvCommand::LeaseKeepAlive {
            request: LeaseKeepAliveRequest { id },
            now: Time::from_millis(now_ms),
        })
        .response
    };
    assert!(matches!(
        ka(&mut t, l, 9_000),
        Ok(KvResponse::LeaseKeepAlive(LeaseKeepAliveResponse { ttl: 10, .. }))
    ));
    assert_eq!(ttl(&t, l, 9_000).unwrap().ttl, 10);
    assert_eq!(
        ka(&mut t, g.id, 2_000),
        Err(KvError::LeaseNotFound),
        "an expired lease cannot be renewed"
    );
    assert_eq!(ka(&mut t, 404, 0), Err(KvError::LeaseNotFound));
    // The leader proposes expiry; a lease kept alive in between survives.
    let rev = t.rev();
    let expired =
        t.apply(KvCommand::LeaseExpire { ids: vec![g.id, l], now: Time::from_millis(18_999) });
    let Ok(KvResponse::LeaseExpire(resp)) = expired.response else { panic!() };
    assert_eq!(resp.revoked, vec![g.id], "l was kept alive until 19 s");
    assert_eq!(t.rev(), rev, "a lease with no keys revokes without a revision");
    let expired = t.apply(KvCommand::LeaseExpire { ids: vec![l], now: Time::from_millis(19_000) });
    assert_eq!(t.rev(), rev + 1, "both keys go in one revision");
    assert_eq!(expired.events.len(), 2);
    assert!(
        expired
            .events
            .iter()
            .all(|e| e.r#type == EventType::Delete && e.kv.mod_revision == rev + 1)
    );
    assert_eq!(t.get(range("s/", "s0")).unwrap().count, 0);
    assert_eq!(ttl(&t, l, 0), Err(KvError::LeaseNotFound));
    assert_eq!(t.s.lease_count(), 0);
    // Revoke and promote.
    let a = t.grant(100, 5, 0).unwrap().id;
    let c = t.grant(101, 5, 0).unwrap().id;
    t.put_req(PutRequest { key: b("z"), value: b("v"), lease: a, ..Default::default() });
    let Ok(KvResponse::LeaseLeases(list)) = t.s.query(&KvQuery::LeaseLeases(LeaseLeasesRequest {}))
    else {
        panic!()
    };
    assert_eq!(list.leases, vec![LeaseStatus { id: 100 }, LeaseStatus { id: 101 }]);
    // The ordered list (a PBFT client's) answers the same and changes
    // nothing: no new revision.
    let rev = t.rev();
    let ordered = t.apply(KvCommand::LeaseLeases(LeaseLeasesRequest {}));
    assert_eq!(ordered.response, Ok(KvResponse::LeaseLeases(list.clone())));
    assert!(ordered.events.is_empty());
    assert_eq!(t.rev(), rev);
    let revoked = t.apply(KvCommand::LeaseRevoke(LeaseRevokeRequest { id: a }));
    let Ok(KvResponse::LeaseRevoke(r)) = revoked.response else { panic!() };
    assert_eq!(r.header.revision, t.rev());
    assert_eq!(t.get_key("z"), None);
    assert_eq!(
        t.apply(KvCommand::LeaseRevoke(LeaseRevokeRequest { id: a })).response,
        Err(KvError::LeaseNotFound)
    );
    t.apply(KvCommand::LeasePromote { now: Time::from_millis(1_000_000) });
    assert_eq!(t.s.expired_leases(Time::from_millis(1_004_999), 10), Vec::<i64>::new());
    assert_eq!(t.s.expired_leases(Time::from_millis(1_005_000), 10), vec![c]);
}

#[test]
fn events_since_serves_history_with_prev_kv() {
    let mut t = T::new();
    t.put("a", "1"); // 2
    t.put("b", "1"); // 3
    t.put("a", "2"); // 4
    t.del("a", ""); // 5
    let batch = t.s.events_since(b"a", b"", 2, 100).unwrap();
    let kinds: Vec<_> = batch.events.iter().map(|e| (e.r#type, e.kv.mod_revision)).collect();
    assert_eq!(kinds, [(EventType::Put, 2), (EventType::Put, 4), (EventType::Delete, 5)]);
    assert_eq!(batch.events[1].prev_kv.as_ref().map(|kv| kv.value.clone()), Some(b("1")));
    assert_eq!(batch.events[2].prev_kv.as_ref().map(|kv| kv.value.clone()), Some(b("2")));
    assert_eq!(batch.events[2].kv, KeyValue { key: b("a"), mod_revision: 5, ..Default::default() });
    assert_eq!(batch.next_revision, 6);
    let future = t.s.events_since(b"a", b"", 9, 100).unwrap();
    assert!(future.events.is_empty());
    // The events returned by apply are the ones history serves.
    let applied =
        t.apply(KvCommand::Put(PutRequest { key: b("a"), value: b("3"), ..Default::default() }));
    assert_eq!(applied.events, t.s.events_since(b"\0", b"\0", 6, 100).unwrap().events);
}

#[test]
fn the_state_machine_speaks_bytes_and_never_panics_on_garbage() {
    let mut s = KvStore::default();
    let put = KvCommand::Put(PutRequest { key: b("k"), value: b("v"), ..Default::default() });
    let answer = crate::decode_result(&StateMachine::apply(&mut s, 1, &put.encode())).unwrap();
    assert!(matches!(
        answer,
        Ok(KvResponse::Put(PutResponse { header: ResponseHeader { revision: 2, .. }, .. }))
    ));
    let garbage = crate::decode_result(&StateMachine::apply(&mut s, 2, &[0xde, 0xad])).unwrap();
    assert!(matches!(garbage, Err(KvError::Malformed(_))));
    let q = KvQuery::Range(range("k", ""));
    let answer = crate::decode_result(&StateMachine::query(&s, &q.encode())).unwrap();
    let Ok(KvResponse::Range(r)) = answer else { panic!() };
    assert_eq!(r.kvs[0].value, b("v"));
    assert_eq!(s.current_revision(), 2);
}

#[test]
fn a_snapshot_restores_an_identical_store() {
    let mut t = T::new();
    let l = t.grant(0, 30, 0).unwrap().id;
    for i in 0..50 {
        let lease = if i % 7 == 0 { l } else { 0 };
        t.put_req(PutRequest {
            key: b(&format!("k{}", i % 13)),
            value: b(&format!("v{i}")),
            lease,
            ..Default::default()
        });
        if i % 5 == 0 {
            t.del(&format!("k{}", i % 3), "");
        }
    }
    t.ok(KvCommand::Compact(CompactionRequest { revision: 30, physical: false }));
    t.put("after", "compaction");
    let bytes = t.s.snapshot();
    let restored = KvStore::restore(KvConfig::default(), &bytes).unwrap();
    assert_eq!(restored, t.s);
    assert_eq!(restored.snapshot(), bytes, "snapshots are deterministic");
    assert!(KvStore::restore(KvConfig::default(), &bytes[..bytes.len() - 1]).is_err());
    assert!(KvStore::restore(KvConfig::default(), b"SYNODKV0").is_err());
    let mut bad = bytes.to_vec();
    bad[8] ^= 0x40; // the current revision
    assert!(KvStore::restore(KvConfig::default(), &bad).is_err());
}

#[test]
fn the_events_query_serves_history_and_reports_compaction() {
    let mut t = T::new();
    t.put("a", "1"); // 2
    t.put("b", "1"); // 3
    t.put("a", "2"); // 4
    let q = |start| KvQuery::Events {
        key: b("a"),
        range_end: Bytes::new(),
        start_revision: start,
        max_events: 100,
    };
    let KvResponse::Events(e) = t.s.query(&q(3)).unwrap() else { panic!("not events") };
    assert_eq!(e.events.len(), 1);
    assert_eq!(e.events[0].kv.mod_revision, 4);
    assert_eq!((e.next_revision, e.header.revision, e.compact_revision), (5, 4, -1));
    t.ok(KvCommand::Compact(CompactionRequest { revision: 4, physical: false }));
    let KvResponse::Events(e) = t.s.query(&q(3)).unwrap() else { panic!("not events") };
    assert!(e.events.is_empty(), "history below the compaction point is gone");
    assert_eq!((e.compact_revision, e.next_revision), (4, 3));
    let KvResponse::Events(e) = t.s.query(&q(4)).unwrap() else { panic!("not events") };
    assert_eq!(e.events.len(), 1, "the compaction revision itself is still served");
}

#[test]
fn the_events_command_is_an_ordered_read_of_the_history() {
    let mut t = T::new();
    t.put("a", "1"); // 2
    let ev = |start, max| KvCommand::Events {
        key: b("a"),
        range_end: b("b"),
        start_revision: start,
        max_events: max,
    };
    // From "now": nothing yet, and the next poll starts after revision 2.
    let KvResponse::Events(e) = t.ok(ev(0, 10)) else { panic!("not events") };
    assert!(e.events.is_empty());
    assert_eq!((e.next_revision, e.header.revision), (3, 2));
    assert_eq!(t.s.current_revision(), 2, "an events command writes nothing");
    for i in 0..300 {
        t.put("a", &i.to_string()); // 3..=302
    }
    t.put("z", "outside"); // 303
    // Capped at MAX_EVENTS_PER_COMMAND whatever the client asks for.
    let KvResponse::Events(e) = t.ok(ev(3, u64::MAX)) else { panic!("not events") };
    assert_eq!(e.events.len() as u64, MAX_EVENTS_PER_COMMAND);
    assert_eq!(e.events[0].kv.mod_revision, 3);
    assert_eq!(e.next_revision, 3 + MAX_EVENTS_PER_COMMAND as i64);
    let KvResponse::Events(e) = t.ok(ev(e.next_revision, 1_000)) else { panic!("not events") };
    assert_eq!(e.events.last().map(|e| e.kv.mod_revision), Some(302), "the range only");
    assert_eq!(e.next_revision, 304);
    // About a mebibyte per answer: 100 KiB values (and as many previous).
    let big = "x".repeat(100 << 10);
    for _ in 0..20 {
        t.put("a", &big); // 304..=323
    }
    let KvResponse::Events(e) = t.ok(ev(304, 1_000)) else { panic!("not events") };
    let bytes: usize = e
        .events
        .iter()
        .map(|e| e.kv.value.len() + e.prev_kv.as_ref().map_or(0, |p| p.value.len()))
        .sum();
    assert!(bytes >= MAX_EVENT_BYTES_PER_COMMAND, "{bytes}");
    assert!(bytes < MAX_EVENT_BYTES_PER_COMMAND + (300 << 10), "{bytes}");
    assert_eq!(e.next_revision, 304 + e.events.len() as i64, "the next poll starts after");
    // A start below the compaction revision: no events, and it says so.
    t.ok(KvCommand::Compact(CompactionRequest { revision: 100, physical: false }));
    let KvResponse::Events(e) = t.ok(ev(50, 10)) else { panic!("not events") };
    assert!(e.events.is_empty());
    assert_eq!(e.compact_revision, 100);
    // Refused identically on every replica.
    assert_eq!(
        t.apply(KvCommand::Events {
            key: Bytes::new(),
            range_end: Bytes::new(),
            start_revision: 1,
            max_events: 1
        })
        .response,
        Err(KvError::EmptyKey)
    );
    assert!(t.apply(ev(-1, 1)).response.is_err());
}

#[test]
fn the_expired_leases_query_answers_what_the_leader_proposes() {
    let mut t = T::new();
    let g = t.grant(7, 5, 1_000_000).unwrap();
    let q = |ms| KvQuery::ExpiredLeases { now: Time::from_millis(ms), max: 10 };
    assert_eq!(t.s.query(&q(1_004_999)).unwrap(), KvResponse::ExpiredLeases(vec![]));
    assert_eq!(t.s.query(&q(1_005_000)).unwrap(), KvResponse::ExpiredLeases(vec![g.id]));
}

/// On PBFT a lease command executes at the batch's agreed time, whatever
/// `now` its proposer (or a client) stamped into it: a grant stamped at 0
/// lives `ttl` from the agreed time, an expiry stamped far in the future
/// cannot remove a lease before its deadline in agreed time, and the
/// ordered time-to-live measures at the agreed time.
#[test]
fn lease_commands_applied_at_an_agreed_time_ignore_their_stamped_now() {
    let mut s = KvStore::default();
    let t0 = Time::from_millis(1_000_000);
    let secs = |n: u64| std::time::Duration::from_secs(n);
    let grant =
        KvCommand::LeaseGrant { request: LeaseGrantRequest { ttl: 10, id: 7 }, now: Time(0) };
    let answer = s.apply_at(1, &grant.encode(), Some(t0));
    assert!(matches!(crate::decode_result(&answer), Ok(Ok(KvResponse::LeaseGrant(_)))));
    let expire = KvCommand::LeaseExpire { ids: vec![7], now: Time::MAX };
    s.apply_at(2, &expire.encode(), Some(t0 + secs(9)));
    assert_eq!(s.lease_count(), 1, "not expired before its deadline in agreed time");
    let ttl = KvCommand::LeaseTimeToLive {
        request: LeaseTimeToLiveRequest { id: 7, keys: false },
        now: Time::MAX,
    };
    match crate::decode_result(&s.apply_at(3, &ttl.encode(), Some(t0 + secs(4)))) {
        Ok(Ok(KvResponse::LeaseTimeToLive(r))) => assert_eq!((r.ttl, r.granted_ttl), (6, 10)),
        other => panic!("{other:?}"),
    }
    s.apply_at(4, &expire.encode(), Some(t0 + secs(10)));
    assert_eq!(s.lease_count(), 0, "expired at its deadline in agreed time");
    // Without an agreed time the stamped `now` is used, as before.
    let mut raft = KvStore::default();
    raft.apply_at(1, &grant.encode(), None);
    raft.apply_at(2, &expire.encode(), None);
    assert_eq!(raft.lease_count(), 0);
}
