//! Proves the generated etcd v3 wire types with real clients: a tonic server
//! running the test-only in-memory KV (`support`) answers etcd 3.4's own
//! `etcdctl` (skipped with a message when etcdctl is not installed; run
//! `scripts/install-test-deps`) and the generated tonic `KvClient`.

mod support;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use support::{CLUSTER_ID, MEMBER_ID, RAFT_TERM, TestServer};
use synod_etcdpb::etcdserverpb::kv_client::KvClient;
use synod_etcdpb::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest};

/// Bound on any single client call or etcdctl run.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// Runs `etcdctl --endpoints <addr> <args>` with the v3 API and returns its output.
async fn etcdctl(etcdctl: &PathBuf, server: &TestServer, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(etcdctl);
    command
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(server.addr.to_string())
        .args(["--dial-timeout=5s", "--command-timeout=10s"])
        .args(args)
        .kill_on_drop(true);
    let output = tokio::time::timeout(CALL_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("etcdctl {args:?} did not finish within {CALL_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run etcdctl {args:?}: {e}"));
    assert!(
        output.status.success(),
        "etcdctl {args:?} failed: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

async fn etcdctl_stdout(program: &PathBuf, server: &TestServer, args: &[&str]) -> String {
    String::from_utf8(etcdctl(program, server, args).await.stdout)
        .expect("etcdctl prints UTF-8 here")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_put_get_del_work_against_the_generated_kv_service() {
    let Some(program) = find_on_path("etcdctl") else {
        eprintln!(
            "SKIPPED etcdctl_put_get_del_work_against_the_generated_kv_service: etcdctl is not on \
             PATH (install it with scripts/install-test-deps)"
        );
        return;
    };
    let server = TestServer::start().expect("bind 127.0.0.1:0");

    assert_eq!(etcdctl_stdout(&program, &server, &["put", "foo", "bar"]).await, "OK\n");
    assert_eq!(etcdctl_stdout(&program, &server, &["put", "fizz", "buzz"]).await, "OK\n");
    assert_eq!(etcdctl_stdout(&program, &server, &["put", "goo", "gle"]).await, "OK\n");

    assert_eq!(etcdctl_stdout(&program, &server, &["get", "foo"]).await, "foo\nbar\n");
    // Prefix: keys in byte order, "goo" outside the prefix.
    assert_eq!(
        etcdctl_stdout(&program, &server, &["get", "--prefix", "f"]).await,
        "fizz\nbuzz\nfoo\nbar\n"
    );
    assert_eq!(
        etcdctl_stdout(&program, &server, &["get", "--from-key", "fo"]).await,
        "foo\nbar\ngoo\ngle\n"
    );

    // The header and key metadata survive the trip: etcdctl's JSON printer shows them.
    let json: serde_json::Value = serde_json::from_str(
        &etcdctl_stdout(&program, &server, &["get", "foo", "-w", "json"]).await,
    )
    .expect("etcdctl -w json prints JSON");
    assert_eq!(json["header"]["cluster_id"], CLUSTER_ID);
    assert_eq!(json["header"]["member_id"], MEMBER_ID);
    assert_eq!(json["header"]["revision"], 4);
    assert_eq!(json["header"]["raft_term"], RAFT_TERM);
    assert_eq!(json["count"], 1);
    let kv = &json["kvs"][0];
    assert_eq!(kv["key"], "Zm9v", "base64 of foo");
    assert_eq!(kv["value"], "YmFy", "base64 of bar");
    assert_eq!(
        (&kv["create_revision"], &kv["mod_revision"], &kv["version"]),
        (&2.into(), &2.into(), &1.into())
    );

    assert_eq!(
        etcdctl_stdout(&program, &server, &["put", "foo", "baz", "--prev-kv"]).await,
        "OK\nfoo\nbar\n"
    );
    assert_eq!(etcdctl_stdout(&program, &server, &["del", "foo"]).await, "1\n");
    assert_eq!(etcdctl_stdout(&program, &server, &["get", "foo"]).await, "");
    assert_eq!(
        etcdctl_stdout(&program, &server, &["del", "--prefix", "f", "--prev-kv"]).await,
        "1\nfizz\nbuzz\n"
    );
    assert_eq!(etcdctl_stdout(&program, &server, &["get", "--prefix", ""]).await, "goo\ngle\n");

    server.stop().await.expect("server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_client_talks_to_generated_server() {
    let server = TestServer::start().expect("bind 127.0.0.1:0");
    let body = async {
        let mut client =
            KvClient::connect(format!("http://{}", server.addr)).await.expect("connect");

        let put = client
            .put(PutRequest { key: b"foo".to_vec(), value: b"bar".to_vec(), ..Default::default() })
            .await
            .expect("put")
            .into_inner();
        let header = put.header.expect("put has a header");
        assert_eq!(
            (header.cluster_id, header.member_id, header.revision),
            (CLUSTER_ID, MEMBER_ID, 2)
        );
        assert_eq!(put.prev_kv, None);

        let put = client
            .put(PutRequest {
                key: b"foo".to_vec(),
                value: b"baz".to_vec(),
                prev_kv: true,
                ..Default::default()
            })
            .await
            .expect("put with prev_kv")
            .into_inner();
        let prev = put.prev_kv.expect("prev_kv requested");
        assert_eq!((prev.value.as_slice(), prev.mod_revision, prev.version), (&b"bar"[..], 2, 1));

        client
            .put(PutRequest { key: b"fop".to_vec(), value: b"x".to_vec(), ..Default::default() })
            .await
            .expect("put fop");
        client
            .put(PutRequest { key: b"g".to_vec(), value: b"y".to_vec(), ..Default::default() })
            .await
            .expect("put g");

        // Prefix "fo" is [fo, fp): foo and fop, not g.
        let range = client
            .range(RangeRequest {
                key: b"fo".to_vec(),
                range_end: b"fp".to_vec(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        let keys: Vec<&[u8]> = range.kvs.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(keys, [&b"foo"[..], b"fop"]);
        assert_eq!((range.count, range.more), (2, false));
        let foo = &range.kvs[0];
        assert_eq!(
            (foo.value.as_slice(), foo.create_revision, foo.mod_revision, foo.version),
            (&b"baz"[..], 2, 3, 2)
        );
        assert_eq!(range.header.expect("range has a header").revision, 5);

        let limited = client
            .range(RangeRequest {
                key: vec![0],
                range_end: vec![0],
                limit: 1,
                ..Default::default()
            })
            .await
            .expect("range all, limit 1")
            .into_inner();
        assert_eq!((limited.kvs.len(), limited.count, limited.more), (1, 3, true));

        let deleted = client
            .delete_range(DeleteRangeRequest {
                key: b"fo".to_vec(),
                range_end: b"fp".to_vec(),
                prev_kv: true,
            })
            .await
            .expect("delete range")
            .into_inner();
        assert_eq!(deleted.deleted, 2);
        assert_eq!(deleted.prev_kvs.len(), 2);
        assert_eq!(deleted.header.expect("delete has a header").revision, 6);

        // Errors cross the wire with code and message.
        let empty_key =
            client.range(RangeRequest::default()).await.expect_err("empty key is refused");
        assert_eq!(empty_key.code(), tonic::Code::InvalidArgument);
        assert_eq!(empty_key.message(), "etcdserver: key is not provided");

        // Methods the service does not implement answer Unimplemented (default stubs).
        let txn = client.txn(TxnRequest::default()).await.expect_err("txn is not implemented here");
        assert_eq!(txn.code(), tonic::Code::Unimplemented);
    };
    tokio::time::timeout(CALL_TIMEOUT, body).await.expect("client session finishes in time");
    server.stop().await.expect("server stops cleanly");
}
