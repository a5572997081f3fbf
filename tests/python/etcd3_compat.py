"""Synod's etcd v3 API against the Python `etcd3` client (PyPI, unchanged).

Usage: python etcd3_compat.py HOST:PORT [HOST:PORT ...]

Exercises, through the library's own API, what applications use: put / get /
prefix and range reads / delete, transactions (value, version, create and mod
revision compares; nested results), past-revision reads and compaction, watches
(single key, prefix, from a past revision, callbacks, cancel), leases (grant,
attach, TTL, keys, refresh, revoke, expiry), the library's lock recipe, member
list and status. Every wait is bounded; SIGALRM ends a run that hangs.

Exits 0 and prints "N passed, 0 failed" when every check passes; on the first
failure prints what differed and exits 1. Driven by
crates/cli/tests/python_etcd3.rs (which starts the cluster).
"""

import os
import queue
import signal
import sys
import threading
import time

import etcd3
import etcd3.exceptions
from etcd3 import etcdrpc

# A hung run (a watch that never answers) must not outlive the test.
signal.alarm(int(os.environ.get("ETCD3_COMPAT_TIMEOUT_S", "90")))

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def eventually(cond, what, within_s=8.0):
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("not within %.0f s: %s" % (within_s, what))
        time.sleep(0.1)


def clients():
    out = []
    for ep in sys.argv[1:]:
        host, port = ep.rsplit(":", 1)
        out.append(etcd3.client(host=host, port=int(port), timeout=5))
    return out


C = None  # first endpoint
D = None  # another endpoint (a different replica when given)


@check
def put_get_delete_and_metadata():
    C.put("py/a", "1")
    value, meta = C.get("py/a")
    assert value == b"1", value
    assert meta.key == b"py/a"
    assert meta.version == 1 and meta.create_revision == meta.mod_revision, vars(meta)
    first = meta.create_revision
    C.put("py/a", "2")
    value, meta = D.get("py/a")
    assert value == b"2" and meta.version == 2, (value, vars(meta))
    assert meta.create_revision == first and meta.mod_revision > first
    assert C.get("py/missing") == (None, None)
    assert C.delete("py/a") is True
    assert C.delete("py/a") is False, "a second delete finds nothing"
    assert C.get("py/a") == (None, None)
    # prev_kv on put and delete
    C.put("py/p", "old")
    resp = C.put("py/p", "new", prev_kv=True)
    assert resp.prev_kv.value == b"old", resp
    resp = C.delete("py/p", prev_kv=True, return_response=True)
    assert resp.deleted == 1 and resp.prev_kvs[0].value == b"new", resp


@check
def prefix_range_sort_and_delete_prefix():
    for k, v in [("r/b", "2"), ("r/a", "3"), ("r/c", "1"), ("r0", "x"), ("q", "y")]:
        C.put(k, v)
    keys = [m.key for _, m in C.get_prefix("r/")]
    assert keys == [b"r/a", b"r/b", b"r/c"], keys
    keys = [m.key for _, m in C.get_prefix("r/", sort_order="descend")]
    assert keys == [b"r/c", b"r/b", b"r/a"], keys
    values = [v for v, _ in C.get_prefix("r/", sort_order="ascend", sort_target="value")]
    assert values == [b"1", b"2", b"3"], values
    keys = [m.key for _, m in C.get_range("r/b", "r0")]
    assert keys == [b"r/b", b"r/c"], "half-open range: %r" % keys
    keys = [m.key for _, m in C.get_prefix("r/", keys_only=True)]
    assert keys == [b"r/a", b"r/b", b"r/c"], keys
    # (etcd3 0.12 accepts limit= but never sends it: use its request type.)
    resp = C.kvstub.Range(etcdrpc.RangeRequest(key=b"r/", range_end=b"r0", limit=2), 5)
    assert len(resp.kvs) == 2 and resp.more and resp.count == 3, resp
    resp = C.delete_prefix("r/")
    assert resp.deleted == 3, resp
    assert list(C.get_prefix("r/")) == []
    assert C.get("r0")[0] == b"x", "the prefix end is exclusive"
    C.delete("r0")
    C.delete("q")


@check
def transactions_compare_and_swap():
    t = C.transactions
    C.put("tx/k", "v1")
    _, meta = C.get("tx/k")
    ok, responses = C.transaction(
        compare=[t.value("tx/k") == "v1", t.version("tx/k") == 1],
        success=[t.put("tx/k", "v2"), t.get("tx/k")],
        failure=[t.put("tx/k", "failed")],
    )
    assert ok, "compares held"
    # responses[0] is the put, responses[1] the get: a list of (value, meta)
    got = responses[1]
    assert got[0][0] == b"v2", got
    ok, responses = C.transaction(
        compare=[t.mod("tx/k") < meta.mod_revision],
        success=[t.put("tx/k", "never")],
        failure=[t.get("tx/k")],
    )
    assert not ok and responses[0][0][0] == b"v2", responses
    ok, _ = C.transaction(
        compare=[t.create("tx/new") == 0],
        success=[t.put("tx/new", "created"), t.delete("tx/k")],
        failure=[],
    )
    assert ok and C.get("tx/new")[0] == b"created" and C.get("tx/k") == (None, None)
    # One revision for every write of a transaction.
    _, meta = C.get("tx/new")
    assert C.get_response("tx/new").header.revision == meta.mod_revision, \
        "the delete shares the put's revision: no later revision exists"
    # The library's helpers built on Txn.
    assert C.replace("tx/new", "created", "replaced") is True
    assert C.replace("tx/new", "created", "again") is False
    assert C.put_if_not_exists("tx/new", "x") is False
    assert C.put_if_not_exists("tx/fresh", "x") is True
    # Nested transaction (etcd >= 3.3).
    ok, responses = C.transaction(
        compare=[],
        success=[t.txn(compare=[t.value("tx/fresh") == "x"],
                       success=[t.put("tx/nested", "yes")], failure=[])],
        failure=[],
    )
    assert ok and C.get("tx/nested")[0] == b"yes", responses
    C.delete_prefix("tx/")


@check
def duplicate_keys_in_a_txn_are_refused():
    t = C.transactions
    try:
        C.transaction(compare=[], success=[t.put("dup", "1"), t.put("dup", "2")], failure=[])
    except Exception as e:  # grpc error surfaced by the library
        assert "duplicate key" in str(e), e
    else:
        raise AssertionError("etcd refuses two puts of one key in a txn")


@check
def past_revisions_and_compaction():
    C.put("hist", "1")
    rev1 = C.get("hist")[1].mod_revision
    C.put("hist", "2")
    old = C.kvstub.Range(etcdrpc.RangeRequest(key=b"hist", revision=rev1), 5)
    assert old.kvs[0].value == b"1", old
    rev2 = C.get("hist")[1].mod_revision
    C.compact(rev2)
    try:
        C.kvstub.Range(etcdrpc.RangeRequest(key=b"hist", revision=rev1), 5)
    except Exception as e:
        assert "required revision has been compacted" in str(e), e
    else:
        raise AssertionError("a read below the compaction point must fail")
    C.delete("hist")


@check
def watch_key_prefix_history_and_cancel():
    start = C.put("w/a", "0").header.revision
    events, cancel = D.watch_prefix("w/", start_revision=start)
    C.put("w/b", "1")
    C.delete("w/a")
    C.put("w/a", "2")
    got = []
    for ev in events:
        got.append((type(ev).__name__, ev.key, ev.value))
        if len(got) == 4:
            break
    cancel()
    assert got == [
        ("PutEvent", b"w/a", b"0"),
        ("PutEvent", b"w/b", b"1"),
        ("DeleteEvent", b"w/a", b""),
        ("PutEvent", b"w/a", b"2"),
    ], got
    # watch_once on one key, fed by another thread.
    threading.Timer(0.3, lambda: C.put("w/once", "x")).start()
    ev = D.watch_once("w/once", timeout=5)
    assert ev.key == b"w/once" and ev.value == b"x", ev
    C.delete_prefix("w/")


@check
def watch_callbacks_see_every_change_in_order():
    seen = queue.Queue()
    watch_id = D.add_watch_prefix_callback("cb/", lambda r: [seen.put(e.value) for e in r.events])
    n = 50
    for i in range(n):
        C.put("cb/%d" % (i % 7), str(i))
    got = []
    deadline = time.monotonic() + 10
    while len(got) < n:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "only %d of %d events" % (len(got), n)
        got.append(seen.get(timeout=remaining))
    D.cancel_watch(watch_id)
    assert got == [str(i).encode() for i in range(n)], got
    C.delete_prefix("cb/")


@check
def leases_grant_attach_refresh_revoke_and_expire():
    lease = C.lease(30)
    C.put("ls/k1", "v", lease=lease)
    C.put("ls/k2", "v", lease=lease.id)
    assert lease.granted_ttl == 30
    assert 0 < lease.remaining_ttl <= 30, lease.remaining_ttl
    assert sorted(lease.keys) == [b"ls/k1", b"ls/k2"], lease.keys
    assert C.get("ls/k1")[1].lease_id == lease.id
    refreshed = lease.refresh()
    assert refreshed[0].TTL == 30, refreshed
    lease.revoke()
    assert C.get("ls/k1") == (None, None) and C.get("ls/k2") == (None, None)
    info = C.get_lease_info(lease.id)
    assert info.TTL == -1, "a revoked lease is unknown: %r" % info
    # A short lease expires by itself and takes its key.
    short = D.lease(2)
    C.put("ls/eph", "v", lease=short)
    eventually(lambda: C.get("ls/eph") == (None, None), "a 2 s lease to expire")
    # Attaching to an unknown lease is etcd's "lease not found".
    try:
        C.put("ls/bad", "v", lease=0x7eadbeef)
    except Exception as e:
        assert "requested lease not found" in str(e), e
    else:
        raise AssertionError("a put on an unknown lease must fail")


@check
def the_lock_recipe_excludes_and_releases():
    a = C.lock("py-lock", ttl=10)
    b = D.lock("py-lock", ttl=10)
    assert a.acquire(timeout=5)
    assert a.is_acquired()
    assert not b.acquire(timeout=0.5), "held by a"
    released = []
    threading.Timer(0.5, lambda: released.append(a.release())).start()
    assert b.acquire(timeout=5), "free once a releases"
    assert released == [True]
    assert b.is_acquired() and not a.is_acquired()
    b.release()
    with C.lock("py-lock", ttl=10) as held:
        assert held.is_acquired()


@check
def members_and_status():
    members = list(C.members)
    assert len(members) == len(sys.argv) - 1 or len(members) >= 1, members
    for m in members:
        assert m.id != 0 and m.name and m.peer_urls and m.client_urls, vars(m)
    ids = {m.id for m in members}
    assert len(ids) == len(members), "member ids are distinct"
    status = C.status()
    assert status.leader is not None and status.leader.id in ids, vars(status)
    assert status.raft_term >= 1, vars(status)


def main():
    global C, D
    cs = clients()
    C = cs[0]
    D = cs[1] if len(cs) > 1 else cs[0]
    passed = 0
    for fn in CHECKS:
        try:
            fn()
        except Exception as e:
            import traceback
            traceback.print_exc()
            print("FAILED %s: %r" % (fn.__name__, e))
            print("%d passed, 1 failed" % passed)
            sys.stdout.flush()
            os._exit(1)
        print("ok %s" % fn.__name__)
        passed += 1
    print("%d passed, 0 failed" % passed)
    sys.stdout.flush()
    # The library's watcher thread is not a daemon: leave at once.
    os._exit(0)


if __name__ == "__main__":
    main()
