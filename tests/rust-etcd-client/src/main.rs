//! The Rust `etcd-client` crate (crates.io, unchanged) against a running etcd
//! API: every step below calls the library as an application would and checks
//! a result that could fail. `crates/cli/tests/rust_etcd_client.rs` builds this
//! program and runs it against a 3-process Synod cluster; it also runs against
//! a real etcd (`cargo run -- 127.0.0.1:2379`).
//!
//! Usage: synod-rust-etcd-client-compat ENDPOINT [ENDPOINT2]
//! Two endpoints: the second client (reads, watches, the other lock and
//! election contender) talks to another member. Prints one line per step and
//! `N passed, M failed`; exits 1 if any step failed.

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    LeaseTimeToLiveOptions, LockOptions, ProclaimOptions, PutOptions, ResignOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse, WatchStream,
};
use std::future::Future;
use std::time::Duration;
use tokio::time::{Instant, sleep, timeout};

type Res = Result<(), String>;

/// Bound on any single wait for a stream message.
const MESSAGE_WAIT: Duration = Duration::from_secs(10);
/// Bound on waiting for a lease to expire by itself.
const EXPIRY_WAIT: Duration = Duration::from_secs(15);

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+)));
        }
    };
}

/// `?` for the library's errors, with the call that failed.
fn e<T>(what: &str, r: Result<T, etcd_client::Error>) -> Result<T, String> {
    r.map_err(|err| format!("{what}: {err}"))
}

fn keys(kvs: &[etcd_client::KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect()
}

async fn next(stream: &mut WatchStream, what: &str) -> Result<WatchResponse, String> {
    match timeout(MESSAGE_WAIT, stream.message()).await {
        Err(_) => Err(format!("{what}: no watch response within {MESSAGE_WAIT:?}")),
        Ok(Err(err)) => Err(format!("{what}: {err}")),
        Ok(Ok(None)) => Err(format!("{what}: the watch stream ended")),
        Ok(Ok(Some(r))) => Ok(r),
    }
}

/// Watch responses until `n` events have arrived (creation and progress
/// responses carry none).
async fn events(
    stream: &mut WatchStream,
    n: usize,
    what: &str,
) -> Result<Vec<(EventType, String, String, i64, Option<String>)>, String> {
    let mut out = Vec::new();
    while out.len() < n {
        let r = next(stream, what).await?;
        ensure!(!r.canceled(), "{what}: watch canceled: {}", r.cancel_reason());
        for ev in r.events() {
            let kv = ev.kv().ok_or_else(|| format!("{what}: an event without kv"))?;
            out.push((
                ev.event_type(),
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.mod_revision(),
                ev.prev_kv().map(|p| String::from_utf8_lossy(p.value()).into_owned()),
            ));
        }
    }
    Ok(out)
}

struct Env {
    c: Client,
    d: Client,
}

async fn put_get_ranges_revisions(env: &mut Env) -> Res {
    let c = &mut env.c;
    let r1 = e("put", c.put("rc/a", "1", None).await)?;
    let rev1 = r1.header().map_or(0, |h| h.revision());
    ensure!(rev1 > 0, "a put's header has its revision, got {rev1}");
    let r2 = e("put", c.put("rc/a", "2", Some(PutOptions::new().with_prev_key())).await)?;
    let rev2 = r2.header().map_or(0, |h| h.revision());
    ensure!(rev2 == rev1 + 1, "one revision per put: {rev1} then {rev2}");
    ensure!(
        r2.prev_key().map(|kv| kv.value()) == Some(&b"1"[..]),
        "prev_kv of the second put is the first value: {:?}",
        r2.prev_key()
    );
    for (k, v) in [("rc/b", "b"), ("rc/c", "c"), ("rc/d", "d"), ("rd", "outside")] {
        e("put", c.put(k, v, None).await)?;
    }
    let got = e("get", c.get("rc/a", None).await)?;
    ensure!(got.kvs().len() == 1, "one kv for rc/a: {:?}", keys(got.kvs()));
    let kv = &got.kvs()[0];
    ensure!(kv.value() == b"2", "latest value of rc/a");
    ensure!(kv.version() == 2, "version 2 after two puts, got {}", kv.version());
    ensure!(kv.create_revision() == rev1, "create_revision {} != {rev1}", kv.create_revision());
    ensure!(kv.mod_revision() == rev2, "mod_revision {} != {rev2}", kv.mod_revision());
    // A read of the same key at the first revision.
    let old = e("get rev", c.get("rc/a", Some(GetOptions::new().with_revision(rev1))).await)?;
    ensure!(
        old.kvs().first().map(|kv| kv.value()) == Some(&b"1"[..]),
        "rc/a at revision {rev1} is 1"
    );
    // Prefix, half-open range, sort, limit, keys-only, count-only.
    let p = e("get prefix", c.get("rc/", Some(GetOptions::new().with_prefix())).await)?;
    ensure!(keys(p.kvs()) == ["rc/a", "rc/b", "rc/c", "rc/d"], "prefix: {:?}", keys(p.kvs()));
    ensure!(p.count() == 4, "count 4, got {}", p.count());
    let r = e("get range", c.get("rc/b", Some(GetOptions::new().with_range("rc/d"))).await)?;
    ensure!(keys(r.kvs()) == ["rc/b", "rc/c"], "[rc/b, rc/d): {:?}", keys(r.kvs()));
    let opts = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Key, SortOrder::Descend)
        .with_limit(2);
    let s = e("get sorted", c.get("rc/", Some(opts)).await)?;
    ensure!(keys(s.kvs()) == ["rc/d", "rc/c"], "descending, limit 2: {:?}", keys(s.kvs()));
    ensure!(s.more() && s.count() == 4, "more={} count={}", s.more(), s.count());
    let opts = GetOptions::new().with_prefix().with_sort(SortTarget::Mod, SortOrder::Descend);
    let m = e("get by mod", c.get("rc/", Some(opts)).await)?;
    ensure!(keys(m.kvs()) == ["rc/d", "rc/c", "rc/b", "rc/a"], "by mod desc: {:?}", keys(m.kvs()));
    let k =
        e("keys only", c.get("rc/", Some(GetOptions::new().with_prefix().with_keys_only())).await)?;
    ensure!(
        k.kvs().len() == 4 && k.kvs().iter().all(|kv| kv.value().is_empty()),
        "keys-only returns keys without values"
    );
    let n = e(
        "count only",
        c.get("rc/", Some(GetOptions::new().with_prefix().with_count_only())).await,
    )?;
    ensure!(
        n.count() == 4 && n.kvs().is_empty(),
        "count-only: count {} kvs {}",
        n.count(),
        n.kvs().len()
    );
    let f = e("from key", c.get("rc/c", Some(GetOptions::new().with_from_key())).await)?;
    ensure!(keys(f.kvs()) == ["rc/c", "rc/d", "rd"], "from rc/c: {:?}", keys(f.kvs()));
    let opts = GetOptions::new().with_prefix().with_min_mod_revision(rev2 + 1);
    let mm = e("min mod", c.get("rc/", Some(opts)).await)?;
    ensure!(keys(mm.kvs()) == ["rc/b", "rc/c", "rc/d"], "min_mod_revision: {:?}", keys(mm.kvs()));
    // The other member serves serializable reads from its own copy.
    let mut seen = false;
    for _ in 0..100 {
        let sr = e(
            "serializable",
            env.d.get("rc/a", Some(GetOptions::new().with_serializable())).await,
        )?;
        if sr.kvs().first().map(|kv| kv.mod_revision()) == Some(rev2) {
            seen = true;
            break;
        }
        sleep(Duration::from_millis(20)).await;
    }
    ensure!(seen, "the second member applies rc/a's second put");
    let lin = e("linearizable on d", env.d.get("rc/d", None).await)?;
    ensure!(lin.kvs().len() == 1, "a linearizable read on the other member sees rc/d");
    Ok(())
}

async fn delete_with_prev_kv(env: &mut Env) -> Res {
    let c = &mut env.c;
    let one = e("delete", c.delete("rc/a", Some(DeleteOptions::new().with_prev_key())).await)?;
    ensure!(one.deleted() == 1, "deleted 1, got {}", one.deleted());
    ensure!(
        one.prev_kvs().len() == 1 && one.prev_kvs()[0].value() == b"2",
        "prev_kv of rc/a: {:?}",
        keys(one.prev_kvs())
    );
    let none = e("delete missing", c.delete("rc/a", None).await)?;
    ensure!(none.deleted() == 0, "deleting a missing key deletes 0");
    let opts = DeleteOptions::new().with_prefix().with_prev_key();
    let many = e("delete prefix", c.delete("rc/", Some(opts)).await)?;
    ensure!(many.deleted() == 3, "3 keys under rc/, got {}", many.deleted());
    ensure!(keys(many.prev_kvs()) == ["rc/b", "rc/c", "rc/d"], "{:?}", keys(many.prev_kvs()));
    let left = e("get", c.get("rc/", Some(GetOptions::new().with_prefix())).await)?;
    ensure!(left.kvs().is_empty(), "nothing left under rc/");
    let rd = e("get rd", c.get("rd", None).await)?;
    ensure!(rd.kvs().len() == 1, "rd is outside the prefix and stays");
    Ok(())
}

async fn txn_compares_and_nesting(env: &mut Env) -> Res {
    let c = &mut env.c;
    let put = e("put", c.put("tx/k", "v1", None).await)?;
    let rev = put.header().map_or(0, |h| h.revision());
    let txn = Txn::new()
        .when([
            Compare::value("tx/k", CompareOp::Equal, "v1"),
            Compare::version("tx/k", CompareOp::Equal, 1),
            Compare::create_revision("tx/k", CompareOp::Equal, rev),
            Compare::mod_revision("tx/k", CompareOp::Less, rev + 1),
        ])
        .and_then([
            TxnOp::put("tx/k", "v2", None),
            TxnOp::put("tx/other", "o", None),
            TxnOp::get("tx/k", None),
        ])
        .or_else([TxnOp::put("tx/k", "lost", None)]);
    let r = e("txn", c.txn(txn).await)?;
    ensure!(r.succeeded(), "every compare holds");
    let ops = r.op_responses();
    ensure!(ops.len() == 3, "three results, got {}", ops.len());
    let txn_rev = r.header().map_or(0, |h| h.revision());
    ensure!(txn_rev == rev + 1, "one revision for the whole txn: {txn_rev} vs {}", rev + 1);
    match &ops[2] {
        TxnOpResponse::Get(g) => ensure!(
            g.kvs().first().map(|kv| (kv.value(), kv.mod_revision()))
                == Some((&b"v2"[..], txn_rev)),
            "the txn's get sees its own put at the txn's revision"
        ),
        _ => return Err("the third result is a range".into()),
    }
    let both = e("get", c.get("tx/", Some(GetOptions::new().with_prefix())).await)?;
    ensure!(
        both.kvs().iter().all(|kv| kv.mod_revision() == txn_rev),
        "both keys written at the txn's revision"
    );
    // A failing compare runs the else branch, which holds a nested txn.
    let nested = Txn::new()
        .when([Compare::value("tx/other", CompareOp::Equal, "o")])
        .and_then([TxnOp::put("tx/nested", "yes", None), TxnOp::delete("tx/other", None)]);
    let txn = Txn::new()
        .when([Compare::value("tx/k", CompareOp::Greater, "v9")])
        .and_then([TxnOp::put("tx/k", "never", None)])
        .or_else([TxnOp::txn(nested), TxnOp::get("tx/k", None)]);
    let r = e("txn else", c.txn(txn).await)?;
    ensure!(!r.succeeded(), "v2 > v9 is false");
    let ops = r.op_responses();
    match ops.first() {
        Some(TxnOpResponse::Txn(inner)) => {
            ensure!(inner.succeeded(), "the nested txn's compare holds");
            match inner.op_responses().get(1) {
                Some(TxnOpResponse::Delete(d)) => {
                    ensure!(d.deleted() == 1, "the nested delete removed tx/other")
                }
                _ => return Err("the nested txn's second result is a delete".into()),
            }
        }
        _ => return Err(format!("the first else result is a txn: {} results", ops.len())),
    }
    let k = e("get", c.get("tx/k", None).await)?;
    ensure!(k.kvs()[0].value() == b"v2", "the then branch did not run");
    let n = e("get", c.get("tx/nested", None).await)?;
    ensure!(n.kvs().len() == 1, "the nested put ran");
    // Writing a key twice in one txn is refused, as etcd refuses it.
    let dup = Txn::new().and_then([TxnOp::put("tx/d", "1", None), TxnOp::put("tx/d", "2", None)]);
    match c.txn(dup).await {
        Err(err) => ensure!(
            err.to_string().contains("duplicate key given in txn request"),
            "etcd's message: {err}"
        ),
        Ok(_) => return Err("a txn writing one key twice must fail".into()),
    }
    Ok(())
}

async fn compaction(env: &mut Env) -> Res {
    let c = &mut env.c;
    let first = e("put", c.put("cp/k", "old", None).await)?;
    let old_rev = first.header().map_or(0, |h| h.revision());
    let second = e("put", c.put("cp/k", "new", None).await)?;
    let new_rev = second.header().map_or(0, |h| h.revision());
    let before = e("get old", c.get("cp/k", Some(GetOptions::new().with_revision(old_rev))).await)?;
    ensure!(before.kvs()[0].value() == b"old", "history before compaction");
    e("compact", c.compact(new_rev, None).await)?;
    match c.get("cp/k", Some(GetOptions::new().with_revision(old_rev))).await {
        Err(etcd_client::Error::GRpcStatus(s)) => {
            ensure!(format!("{:?}", s.code()) == "OutOfRange", "OutOfRange, got {:?}", s.code());
            ensure!(
                s.message() == "etcdserver: mvcc: required revision has been compacted",
                "etcd's message, got {:?}",
                s.message()
            );
        }
        other => return Err(format!("a read below the compaction must fail: {other:?}")),
    }
    let at = e(
        "get at compaction",
        c.get("cp/k", Some(GetOptions::new().with_revision(new_rev))).await,
    )?;
    ensure!(at.kvs()[0].value() == b"new", "the compaction revision itself is readable");
    match c.compact(old_rev, None).await {
        Err(err) => ensure!(
            err.to_string().contains("required revision has been compacted"),
            "compacting again below is refused: {err}"
        ),
        Ok(_) => return Err("compacting below the compaction point must fail".into()),
    }
    // A watch from below the compaction point is canceled with compact_revision.
    let mut w = e(
        "watch",
        env.d.watch("cp/k", Some(WatchOptions::new().with_start_revision(old_rev))).await,
    )?;
    let mut canceled = None;
    for _ in 0..3 {
        let r = next(&mut w, "compacted watch").await?;
        if r.canceled() {
            canceled = Some(r);
            break;
        }
    }
    let r = canceled.ok_or("the compacted watch is canceled")?;
    ensure!(
        r.compact_revision() == new_rev,
        "compact_revision {} != {new_rev}",
        r.compact_revision()
    );
    Ok(())
}

async fn watches(env: &mut Env) -> Res {
    let start = e("put", env.c.put("wa/x", "0", None).await)?;
    let start_rev = start.header().map_or(0, |h| h.revision());
    // From a past revision, with prev_kv, on a prefix, on the other member.
    let opts = WatchOptions::new().with_prefix().with_start_revision(start_rev).with_prev_key();
    let mut w = e("watch", env.d.watch("wa/", Some(opts)).await)?;
    let created = next(&mut w, "create").await?;
    ensure!(created.created(), "the first response confirms creation");
    let id = created.watch_id();
    e("put", env.c.put("wa/x", "1", None).await)?;
    e("put", env.c.put("wa/y", "y", None).await)?;
    e("put", env.c.put("wb/outside", "z", None).await)?;
    e("delete", env.c.delete("wa/x", None).await)?;
    let evs = events(&mut w, 4, "prefix watch").await?;
    let kinds: Vec<(EventType, &str)> = evs.iter().map(|e| (e.0, e.1.as_str())).collect();
    ensure!(
        kinds
            == [
                (EventType::Put, "wa/x"),
                (EventType::Put, "wa/x"),
                (EventType::Put, "wa/y"),
                (EventType::Delete, "wa/x")
            ],
        "history then live events, in order, none outside the prefix: {kinds:?}"
    );
    ensure!(evs[0].3 == start_rev && evs[0].2 == "0", "the first event is at the start revision");
    ensure!(evs.windows(2).all(|p| p[0].3 < p[1].3), "revisions increase");
    ensure!(evs[1].4.as_deref() == Some("0"), "prev_kv of the second put: {:?}", evs[1].4);
    ensure!(evs[3].4.as_deref() == Some("1"), "prev_kv of the delete: {:?}", evs[3].4);
    // A second watcher on the same stream, then cancel the first.
    e("watch 2", w.watch("wb/", Some(WatchOptions::new().with_prefix())).await)?;
    let created2 = next(&mut w, "create 2").await?;
    ensure!(created2.created() && created2.watch_id() != id, "a second watch id on one stream");
    let id2 = created2.watch_id();
    e("cancel", w.cancel(id).await)?;
    let mut canceled = false;
    for _ in 0..3 {
        let r = next(&mut w, "cancel").await?;
        if r.canceled() && r.watch_id() == id {
            canceled = true;
            break;
        }
    }
    ensure!(canceled, "the cancel is confirmed for watch {id}");
    e("put", env.c.put("wa/after", "ignored", None).await)?;
    e("put", env.c.put("wb/2", "seen", None).await)?;
    let r = next(&mut w, "after cancel").await?;
    ensure!(r.watch_id() == id2, "only the second watch reports, got watch {}", r.watch_id());
    let ks: Vec<&[u8]> = r.events().iter().filter_map(|ev| ev.kv().map(|kv| kv.key())).collect();
    ensure!(ks == [&b"wb/2"[..]], "the canceled watch's key is not reported: {ks:?}");
    // Progress: a progress request is answered with the current revision.
    e("progress", w.request_progress().await)?;
    let p = next(&mut w, "progress").await?;
    ensure!(p.events().is_empty(), "a progress notification carries no events");
    ensure!(
        p.header().map_or(0, |h| h.revision())
            >= r.events()[0].kv().map_or(0, |kv| kv.mod_revision()),
        "progress revision is at least the last event's"
    );
    Ok(())
}

async fn eventually<F, Fut>(what: &str, wait: Duration, mut probe: F) -> Res
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, String>>,
{
    let deadline = Instant::now() + wait;
    loop {
        if probe().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {wait:?}"));
        }
        sleep(Duration::from_millis(100)).await;
    }
}

async fn leases(env: &mut Env) -> Res {
    let c = &mut env.c;
    let g = e("grant", c.lease_grant(30, None).await)?;
    let id = g.id();
    ensure!(id != 0 && g.ttl() == 30, "granted id {id} ttl {}", g.ttl());
    e("put", c.put("ls/k1", "v", Some(PutOptions::new().with_lease(id))).await)?;
    e("put", c.put("ls/k2", "v", Some(PutOptions::new().with_lease(id))).await)?;
    let k1 = e("get", c.get("ls/k1", None).await)?;
    ensure!(k1.kvs()[0].lease() == id, "ls/k1 is attached to lease {id}");
    let t =
        e("ttl", c.lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys())).await)?;
    ensure!(
        t.granted_ttl() == 30 && t.ttl() > 0 && t.ttl() <= 30,
        "ttl {} granted {}",
        t.ttl(),
        t.granted_ttl()
    );
    let mut ks: Vec<&[u8]> = t.keys().iter().map(|k| k.as_slice()).collect();
    ks.sort();
    ensure!(ks == [&b"ls/k1"[..], &b"ls/k2"[..]], "attached keys: {ks:?}");
    let list = e("leases", env.d.leases().await)?;
    ensure!(
        list.leases().iter().any(|l| l.id() == id),
        "the lease is listed (asked on the other member)"
    );
    // Keep-alive through the other member: the answer carries the full TTL.
    let (mut keeper, mut replies) = e("keep-alive", env.d.lease_keep_alive(id).await)?;
    for _ in 0..2 {
        e("keep-alive send", keeper.keep_alive().await)?;
        let r = timeout(MESSAGE_WAIT, replies.message())
            .await
            .map_err(|_| "keep-alive reply timed out")?;
        let r = e("keep-alive reply", r)?.ok_or("the keep-alive stream ended")?;
        ensure!(
            r.id() == id && r.ttl() == 30,
            "keep-alive renews to 30, got id {} ttl {}",
            r.id(),
            r.ttl()
        );
    }
    e("revoke", c.lease_revoke(id).await)?;
    let gone = e("get", c.get("ls/", Some(GetOptions::new().with_prefix())).await)?;
    ensure!(gone.kvs().is_empty(), "revoking deletes the lease's keys");
    let t = e("ttl revoked", c.lease_time_to_live(id, None).await)?;
    ensure!(t.ttl() == -1, "a revoked lease is unknown (TTL -1), got {}", t.ttl());
    let list = e("leases", c.leases().await)?;
    ensure!(!list.leases().iter().any(|l| l.id() == id), "the revoked lease is not listed");
    match c.put("ls/bad", "v", Some(PutOptions::new().with_lease(0x7ead_beef))).await {
        Err(err) => ensure!(err.to_string().contains("requested lease not found"), "{err}"),
        Ok(_) => return Err("a put on an unknown lease must fail".into()),
    }
    // A short lease expires by itself and takes its key, with a DELETE event.
    let short = e("grant", c.lease_grant(2, None).await)?;
    let put = e("put", c.put("ls/eph", "v", Some(PutOptions::new().with_lease(short.id()))).await)?;
    let from = put.header().map_or(0, |h| h.revision());
    let mut w = e(
        "watch",
        env.d.watch("ls/eph", Some(WatchOptions::new().with_start_revision(from))).await,
    )?;
    let mut c2 = env.c.clone();
    eventually("the 2 s lease to expire", EXPIRY_WAIT, || {
        let mut c2 = c2.clone();
        async move { Ok(e("get", c2.get("ls/eph", None).await)?.kvs().is_empty()) }
    })
    .await?;
    let evs = events(&mut w, 2, "expiry watch").await?;
    ensure!(evs[1].0 == EventType::Delete, "expiry is a DELETE event: {:?}", evs[1].0);
    let t = e("ttl", c2.lease_time_to_live(short.id(), None).await)?;
    ensure!(t.ttl() == -1, "the expired lease is gone, ttl {}", t.ttl());
    Ok(())
}

async fn lock_service(env: &mut Env) -> Res {
    let la = e("grant", env.c.lease_grant(10, None).await)?.id();
    let lb = e("grant", env.d.lease_grant(10, None).await)?.id();
    let held = e("lock", env.c.lock("rs-lock", Some(LockOptions::new().with_lease(la))).await)?;
    let key_a = held.key().to_vec();
    ensure!(
        key_a.starts_with(b"rs-lock/"),
        "the lock key is under the name: {:?}",
        String::from_utf8_lossy(&key_a)
    );
    let owner = e("get", env.c.get(key_a.clone(), None).await)?;
    ensure!(owner.kvs().first().map(|kv| kv.lease()) == Some(la), "the lock key is on A's lease");
    let fencing_a = owner.kvs()[0].create_revision();
    // B waits while A holds it.
    let mut d = env.d.clone();
    let waiter =
        tokio::spawn(
            async move { d.lock("rs-lock", Some(LockOptions::new().with_lease(lb))).await },
        );
    sleep(Duration::from_millis(300)).await;
    ensure!(!waiter.is_finished(), "B must not get the lock while A holds it");
    e("unlock", env.c.unlock(key_a.clone()).await)?;
    let got = timeout(MESSAGE_WAIT, waiter).await.map_err(|_| "B never got the lock")?;
    let got = e("lock B", got.map_err(|j| format!("join: {j}"))?)?;
    let key_b = got.key().to_vec();
    ensure!(key_b != key_a, "B holds its own key");
    let owner = e("get", env.c.get(key_b.clone(), None).await)?;
    let fencing_b = owner.kvs().first().map_or(0, |kv| kv.create_revision());
    ensure!(fencing_b > fencing_a, "fencing tokens increase: {fencing_a} then {fencing_b}");
    // Revoking B's lease releases the lock: A gets it at once.
    e("revoke", env.d.lease_revoke(lb).await)?;
    let again =
        timeout(MESSAGE_WAIT, env.c.lock("rs-lock", Some(LockOptions::new().with_lease(la))))
            .await
            .map_err(|_| "A never got the lock back after B's lease was revoked")?;
    let again = e("lock A again", again)?;
    e("unlock", env.c.unlock(again.key().to_vec()).await)?;
    e("revoke", env.c.lease_revoke(la).await)?;
    Ok(())
}

async fn election_service(env: &mut Env) -> Res {
    let la = e("grant", env.c.lease_grant(10, None).await)?.id();
    let lb = e("grant", env.d.lease_grant(10, None).await)?.id();
    let won = e("campaign", env.c.campaign("rs-elect", "alpha", la).await)?;
    // After the campaign: etcd answers an Observe only once there is a leader.
    let mut observe = e("observe", env.d.observe("rs-elect").await)?;
    let leader = won.leader().ok_or("campaign answers with the leader key")?.clone();
    ensure!(leader.name() == b"rs-elect" && leader.lease() == la, "leader key: {leader:?}");
    let l = e("leader", env.d.leader("rs-elect").await)?;
    ensure!(l.kv().map(|kv| kv.value()) == Some(&b"alpha"[..]), "leader value is alpha");
    let first = timeout(MESSAGE_WAIT, observe.message()).await.map_err(|_| "observe timed out")?;
    let first = e("observe", first)?.ok_or("observe ended")?;
    ensure!(first.kv().map(|kv| kv.value()) == Some(&b"alpha"[..]), "observe sees alpha");
    e(
        "proclaim",
        env.c.proclaim("beta", Some(ProclaimOptions::new().with_leader(leader.clone()))).await,
    )?;
    let next_obs =
        timeout(MESSAGE_WAIT, observe.message()).await.map_err(|_| "observe timed out")?;
    let next_obs = e("observe", next_obs)?.ok_or("observe ended")?;
    ensure!(
        next_obs.kv().map(|kv| kv.value()) == Some(&b"beta"[..]),
        "observe sees the proclamation"
    );
    // B campaigns and waits; A resigns; B leads.
    let mut d = env.d.clone();
    let contender = tokio::spawn(async move { d.campaign("rs-elect", "gamma", lb).await });
    sleep(Duration::from_millis(300)).await;
    ensure!(!contender.is_finished(), "B must not win while A leads");
    e("resign", env.c.resign(Some(ResignOptions::new().with_leader(leader.clone()))).await)?;
    let b = timeout(MESSAGE_WAIT, contender).await.map_err(|_| "B never became leader")?;
    let b = b.map_err(|j| format!("join: {j}"))?;
    let b = e("campaign B", b)?;
    let bl = b.leader().ok_or("B's leader key")?;
    ensure!(
        bl.lease() == lb && bl.rev() > leader.rev(),
        "B's key is newer: {} vs {}",
        bl.rev(),
        leader.rev()
    );
    let mut saw_gamma = false;
    for _ in 0..3 {
        let m = timeout(MESSAGE_WAIT, observe.message()).await.map_err(|_| "observe timed out")?;
        let m = e("observe", m)?.ok_or("observe ended")?;
        if m.kv().map(|kv| kv.value()) == Some(&b"gamma"[..]) {
            saw_gamma = true;
            break;
        }
    }
    ensure!(saw_gamma, "observe sees the new leader's value");
    // A proclamation by the resigned leader is refused.
    match env.c.proclaim("stale", Some(ProclaimOptions::new().with_leader(leader))).await {
        Err(err) => ensure!(err.to_string().contains("not leader"), "etcd's 'not leader': {err}"),
        Ok(_) => return Err("a resigned leader's proclamation must fail".into()),
    }
    e("revoke", env.c.lease_revoke(la).await)?;
    e("revoke", env.d.lease_revoke(lb).await)?;
    Ok(())
}

async fn cluster_and_maintenance(env: &mut Env) -> Res {
    let ml = e("member list", env.c.member_list().await)?;
    ensure!(ml.members().len() == 3, "3 members, got {}", ml.members().len());
    ensure!(
        ml.members().iter().all(|m| !m.client_urls().is_empty() && !m.peer_urls().is_empty()),
        "every member has client and peer URLs"
    );
    let s = e("status", env.c.status().await)?;
    ensure!(s.leader() != 0, "status names a leader");
    ensure!(ml.members().iter().any(|m| m.id() == s.leader()), "the leader is a member");
    ensure!(
        !s.version().is_empty() && s.raft_term() > 0,
        "version {:?} term {}",
        s.version(),
        s.raft_term()
    );
    let s2 = e("status", env.d.status().await)?;
    ensure!(s2.leader() == s.leader(), "both members name the same leader");
    ensure!(
        s.header().map(|h| h.member_id()) != s2.header().map(|h| h.member_id()),
        "each member answers for itself"
    );
    // HashKV at one revision is the same on every member.
    let rev = e("put", env.c.put("hk/k", "v", None).await)?.header().map_or(0, |h| h.revision());
    let mut hashes = Vec::new();
    for client in [&mut env.c, &mut env.d] {
        let mut h = None;
        for _ in 0..100 {
            match client.hash_kv(rev).await {
                Ok(r) => {
                    h = Some((r.hash(), r.hash_revision(), r.compact_version()));
                    break;
                }
                // A member that has not applied `rev` yet answers future revision.
                Err(err) if err.to_string().contains("future revision") => {
                    sleep(Duration::from_millis(20)).await
                }
                Err(err) => return Err(format!("hash_kv: {err}")),
            }
        }
        hashes.push(h.ok_or("hash_kv never answered")?);
    }
    ensure!(hashes[0] == hashes[1], "HashKV differs between members: {hashes:?}");
    // hash_revision is etcd 3.6's field: etcd 3.4 and 3.5 leave it 0.
    ensure!(hashes[0].1 == rev || hashes[0].1 == 0, "hash_revision {} != {rev}", hashes[0].1);
    e("defragment", env.c.defragment().await)?;
    let alarms = e(
        "alarm",
        env.c.alarm(etcd_client::AlarmAction::Get, etcd_client::AlarmType::None, None).await,
    )?;
    ensure!(alarms.alarms().is_empty(), "no alarms");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: synod-rust-etcd-client-compat ENDPOINT [ENDPOINT2]");
        std::process::exit(2);
    }
    let first = args[0].clone();
    let second = args.get(1).cloned().unwrap_or_else(|| first.clone());
    let options = || {
        Some(
            ConnectOptions::new()
                .with_timeout(Duration::from_secs(10))
                .with_connect_timeout(Duration::from_secs(5)),
        )
    };
    let c = Client::connect([first.as_str()], options()).await;
    let d = Client::connect([second.as_str()], options()).await;
    let (c, d) = match (c, d) {
        (Ok(c), Ok(d)) => (c, d),
        (c, d) => {
            eprintln!("cannot connect: {:?} {:?}", c.err(), d.err());
            std::process::exit(1);
        }
    };
    let mut env = Env { c, d };
    let mut passed = 0;
    let mut failed = 0;
    macro_rules! step {
        ($f:ident) => {
            let t = std::time::Instant::now();
            match timeout(Duration::from_secs(60), $f(&mut env)).await {
                Ok(Ok(())) => {
                    passed += 1;
                    println!("ok   {} ({} ms)", stringify!($f), t.elapsed().as_millis());
                }
                Ok(Err(why)) => {
                    failed += 1;
                    println!("FAIL {}: {why}", stringify!($f));
                }
                Err(_) => {
                    failed += 1;
                    println!("FAIL {}: did not finish within 60 s", stringify!($f));
                }
            }
        };
    }
    step!(put_get_ranges_revisions);
    step!(delete_with_prev_kv);
    step!(txn_compares_and_nesting);
    step!(compaction);
    step!(watches);
    step!(leases);
    step!(lock_service);
    step!(election_service);
    step!(cluster_and_maintenance);
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
