//! `synod lease | lock | elect | watch | member` against a real 3-process
//! cluster: etcdctl's output lines, fencing tokens, release on exit and on
//! Ctrl-C, exit codes (1 for the cluster's errors, 2 for bad usage).
//!
//! Every wait is bounded; processes are killed when the test ends.

mod common;

use common::{Cluster, NODES, channel, synod};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use synod_etcdpb::etcdserverpb::CompactionRequest;
use synod_etcdpb::etcdserverpb::kv_client::KvClient;

/// Bound on any one expected line of output.
const LINE_WAIT: Duration = Duration::from_secs(10);

/// Runs `synod <args>` to completion (the commands under test end by
/// themselves; `--timeout-ms` bounds each request).
fn run(args: &[&str]) -> Output {
    Command::new(synod()).args(args).output().expect("run synod")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A long-running `synod` command whose stdout lines arrive on a channel;
/// killed on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(synod())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn synod");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    fn line(&self) -> String {
        self.lines.recv_timeout(LINE_WAIT).expect("a line of output in time")
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit code.
    fn interrupt(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-INT", &pid]).status().expect("kill -INT");
        assert!(sent.success());
        let deadline = std::time::Instant::now() + LINE_WAIT;
        loop {
            if let Some(s) = self.child.try_wait().expect("poll") {
                return s.code();
            }
            assert!(std::time::Instant::now() < deadline, "no exit after SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_watch_lock_elect_and_member_commands_behave_like_etcdctl() {
    let cluster = Cluster::start();
    let leader = cluster.leader().await;
    let ep = cluster.endpoint((leader + 1) % NODES);
    let other = cluster.endpoint((leader + 2) % NODES);
    let e = ["--endpoints", ep.as_str()];
    // The endpoints go right after the command (they are global flags),
    // before any `-- COMMAND`.
    let with = |args: &[&str]| -> Vec<String> {
        let (command, rest) = args.split_first().expect("a command");
        std::iter::once(command).chain(e.iter()).chain(rest).map(|s| s.to_string()).collect()
    };
    let go = |args: &[&str]| {
        let a = with(args);
        tokio::task::block_in_place(|| run(&a.iter().map(String::as_str).collect::<Vec<_>>()))
    };

    // member list: one etcdctl line per member.
    let members = go(&["member", "list"]);
    assert!(members.status.success(), "{}", stderr(&members));
    let lines: Vec<String> = stdout(&members).lines().map(String::from).collect();
    assert_eq!(lines.len(), NODES, "{lines:?}");
    for (i, line) in lines.iter().enumerate() {
        let want = format!("{:x}, started, n{}, http://127.0.0.1:", i + 1, i + 1);
        assert!(line.starts_with(&want), "{line}");
        assert!(line.ends_with(", false"), "{line}");
        assert!(line.contains(&format!("http://{}", cluster.endpoint(i))), "{line}");
    }

    // Leases: grant, attach, ttl with keys, list, keep-alive, revoke.
    let grant = go(&["lease", "grant", "30"]);
    assert!(grant.status.success(), "{}", stderr(&grant));
    let g = stdout(&grant);
    let id = g
        .strip_prefix("lease ")
        .and_then(|r| r.strip_suffix(" granted with TTL(30s)\n"))
        .unwrap_or_else(|| panic!("etcdctl's grant line: {g:?}"))
        .to_string();
    assert_eq!(id.len(), 16, "ids print as 16 hex digits");
    assert!(go(&["kv", "put", "leased", "v", "--lease", &id]).status.success());
    let ttl = stdout(&go(&["lease", "ttl", &id, "--keys"]));
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(30s), remaining("))
            && ttl.ends_with("s), attached keys([leased])\n"),
        "{ttl}"
    );
    assert!(stdout(&go(&["lease", "list"])).lines().any(|l| l == id));
    let kept = go(&["lease", "keep-alive", "--once", &id]);
    assert_eq!(stdout(&kept), format!("lease {id} keepalived with TTL(30)\n"));
    assert_eq!(stdout(&go(&["lease", "revoke", &id])), format!("lease {id} revoked\n"));
    assert_eq!(stdout(&go(&["kv", "get", "leased"])), "", "revoking deleted the key");
    let again = go(&["lease", "revoke", &id]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(stderr(&again), "synod lease: error: etcdserver: requested lease not found\n");
    assert_eq!(stdout(&go(&["lease", "timetolive", &id])), format!("lease {id} already expired\n"));
    let gone = go(&["lease", "keep-alive", &id]);
    assert_eq!(gone.status.code(), Some(1));
    assert_eq!(stdout(&gone), format!("lease {id} expired or revoked.\n"));

    // Watch: history from a revision, prefix, prev_kv, delete; --count ends it.
    let first = common::put(&ep, "w/a", "1").await.expect("put");
    assert!(go(&["kv", "put", "w/a", "2"]).status.success());
    assert!(go(&["kv", "del", "w/a"]).status.success());
    let w =
        go(&["watch", "w/", "--prefix", "--rev", &first.to_string(), "--prev-kv", "--count", "3"]);
    assert!(w.status.success(), "{}", stderr(&w));
    assert_eq!(stdout(&w), "PUT\nw/a\n1\nPUT\nw/a\n1\nw/a\n2\nDELETE\nw/a\n2\nw/a\n\n");
    // An empty prefix is every key (clientv3's convention), not a refusal.
    let all = go(&["watch", "", "--prefix", "--rev", &first.to_string(), "--count", "1"]);
    assert!(all.status.success(), "{}", stderr(&all));
    assert_eq!(stdout(&all), "PUT\nw/a\n1\n");
    // A live watch on another replica sees a later write.
    let live = Running::start(&["watch", "w/live", "--endpoints", &other, "--count", "1"]);
    // (Created before the put is certain only once it answers; retry the put.)
    let mut got = None;
    for i in 0..50 {
        assert!(go(&["kv", "put", "w/live", &i.to_string()]).status.success());
        if let Ok(l) = live.lines.recv_timeout(Duration::from_millis(200)) {
            got = Some(l);
            break;
        }
    }
    assert_eq!(got.as_deref(), Some("PUT"));
    assert_eq!(live.line(), "w/live");
    // Below the compaction point: etcdctl's cancel message, exit 1.
    let now = common::put(&ep, "w/b", "x").await.expect("put");
    KvClient::new(channel(&ep))
        .compact(CompactionRequest { revision: now, physical: true })
        .await
        .expect("compact");
    let lead = cluster.endpoint(leader);
    let rev = first.to_string();
    let c = tokio::task::block_in_place(|| {
        run(&["watch", "w/", "--prefix", "--rev", &rev, "--endpoints", &lead])
    });
    assert_eq!(c.status.code(), Some(1), "{}", stdout(&c));
    assert_eq!(
        stderr(&c),
        "synod watch: watch was canceled (etcdserver: mvcc: required revision has been compacted)\n"
    );

    // Lock with a command: the key and a fencing token that grows; released after.
    let show = ["lock", "res", "--", "sh", "-c", "echo \"$ETCD_LOCK_KEY $ETCD_LOCK_REV\""];
    let one = go(&show);
    assert!(one.status.success(), "{}", stderr(&one));
    let two = go(&show);
    let parse = |o: &Output| -> (String, i64) {
        let s = stdout(o);
        let (k, t) = s.trim().split_once(' ').expect("key and token");
        (k.to_string(), t.parse().expect("token"))
    };
    let ((k1, t1), (k2, t2)) = (parse(&one), parse(&two));
    assert!(k1.starts_with("res/") && k2.starts_with("res/"), "{k1} {k2}");
    assert!(t2 > t1, "fencing tokens grow: {t1} then {t2}");
    assert_eq!(stdout(&go(&["kv", "get", "res/", "--prefix"])), "", "released after the command");
    assert_eq!(go(&["lock", "res", "--", "sh", "-c", "exit 3"]).status.code(), Some(3));
    assert_eq!(stdout(&go(&["kv", "get", "res/", "--prefix", "--keys-only"])), "");

    // Lock held until Ctrl-C: the key exists while held, is gone after.
    let holder = Running::start(&["lock", "held", "--endpoints", &ep]);
    let key = holder.line();
    assert!(key.starts_with("held/"), "{key}");
    assert_eq!(stdout(&go(&["kv", "get", &key, "--keys-only"])), format!("{key}\n"));
    assert_eq!(holder.interrupt(), Some(0));
    assert_eq!(stdout(&go(&["kv", "get", "held/", "--prefix"])), "");

    // Election: a listener sees the leader; Ctrl-C resigns.
    let listener = Running::start(&["elect", "svc", "--listen", "--endpoints", &other]);
    let candidate = Running::start(&["elect", "svc", "alpha", "--endpoints", &ep]);
    let leader_key = candidate.line();
    assert!(leader_key.starts_with("svc/"), "{leader_key}");
    assert_eq!(candidate.line(), "alpha");
    assert_eq!(listener.line(), leader_key);
    assert_eq!(listener.line(), "alpha");
    assert_eq!(candidate.interrupt(), Some(0));
    assert_eq!(stdout(&go(&["kv", "get", "svc/", "--prefix"])), "", "resigned");
    drop(listener);

    // Bad usage is exit 2; an unreachable cluster is exit 1.
    for bad in [
        &["lease", "grant", "0"][..],
        &["lease", "revoke", "zz"],
        &["elect", "svc"],
        &["watch"],
        &["lock", ""],
        &["watch", "k", "--rev", "-1"],
    ] {
        let o = go(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
    let down = run(&["member", "list", "--endpoints", "127.0.0.1:1", "--timeout-ms", "500"]);
    assert_eq!(down.status.code(), Some(1));
    assert!(stderr(&down).contains("cannot connect to 127.0.0.1:1"), "{}", stderr(&down));
}
