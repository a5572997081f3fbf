//! Membership changes on a real cluster of `synod serve` processes (Raft),
//! through `synod member add|promote|remove|list` and the etcd Cluster API:
//!
//! a 3-node cluster takes writes; a 4th member is added as a learner
//! through a follower (forwarded to the leader) and started with the config
//! `member add` printed (`join = true`); it catches up past a snapshot and
//! serves a serializable read of data written before it joined; it is
//! promoted; then the leader and another original member are removed, and
//! the remaining two keep taking writes with no acknowledged write lost.
//! Error cases get etcd's codes and messages. A member added without
//! `--learner` is promoted by the leader once it has caught up; added
//! without a client URL (as etcdctl adds one), it publishes its own once it
//! runs. `member update` moves a member to a new peer address. Every wait
//! is bounded; the processes are killed on drop, even when the test fails.

mod common;

use common::{Cluster, check_all, get, rpc_channel, status, synod};
use std::collections::BTreeMap;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use synod_etcdpb::etcdserverpb::cluster_client::ClusterClient;
use synod_etcdpb::etcdserverpb::{
    MemberListRequest, MemberPromoteRequest, MemberRemoveRequest, MemberUpdateRequest,
};

/// Snapshots every 16 entries, so the new member catches up by snapshot.
const CONFIG: &str = "snapshot_interval_entries = 16\n";
const WAIT: Duration = Duration::from_secs(10);

/// The 4th node's process; killed on drop.
struct Extra(Option<Child>);

impl Drop for Extra {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn member(endpoint: &str, args: &[&str]) -> Output {
    Command::new(synod())
        .arg("member")
        .args(args)
        .args(["--endpoints", endpoint, "--timeout-ms", "5000"])
        .output()
        .expect("run synod member")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `synod member ARGS` until it succeeds (a change refused because the
/// previous one is still in flight, or a learner not yet caught up, is
/// retried), bounded.
async fn member_ok(cluster: &Cluster, endpoint: &str, args: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let o = member(endpoint, args);
        if o.status.success() {
            return String::from_utf8_lossy(&o.stdout).into_owned();
        }
        eprintln!("member {args:?}: {}", text(&o));
        assert!(Instant::now() < deadline, "member {args:?}: {}\n{}", text(&o), cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(id, is_learner)` of every member, as `endpoint` lists them.
async fn members(endpoint: &str) -> Vec<(u64, bool)> {
    let mut c = ClusterClient::new(rpc_channel(endpoint));
    let r = c.member_list(MemberListRequest { linearizable: false }).await.expect("member list");
    r.into_inner().members.iter().map(|m| (m.id, m.is_learner)).collect()
}

/// Puts `count` keys from `first` through `endpoints` (rotating on
/// refusals, bounded); records each acknowledged one.
async fn put_some(
    cluster: &Cluster,
    endpoints: &[String],
    acked: &mut BTreeMap<String, String>,
    first: usize,
    count: usize,
) {
    common::put_rotating(endpoints, acked, first, count, 50, || cluster.logs()).await;
}

/// The leader's member id, as `endpoints` agree on it (never `not`).
async fn leader_id(cluster: &Cluster, endpoints: &[String], not: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut seen = Vec::new();
        for e in endpoints {
            seen.push(status(e).await.map(|s| s.leader));
        }
        if let Some(Some(l)) = seen.first()
            && *l != 0
            && *l != not
            && seen.iter().all(|s| *s == Some(*l))
        {
            return *l;
        }
        assert!(Instant::now() < deadline, "no agreed leader: {seen:?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `synod member add n4 [--learner]` through `via`, then starts n4 with
/// the config it printed; returns the process and n4's client endpoint.
/// Without `with_client_url` the add carries peer URLs only, as etcdctl's
/// does, and n4's own entry is appended to the printed config.
async fn add_and_start(
    cluster: &Cluster,
    via: &str,
    learner: bool,
    with_client_url: bool,
) -> (Extra, String) {
    let (client_port, peer_port) = (common::free_port(), common::free_port());
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let client_url = format!("http://127.0.0.1:{client_port}");
    let mut args = vec!["add", "n4", "--peer-urls", &peer_url];
    if with_client_url {
        args.extend(["--client-urls", &client_url]);
    }
    if learner {
        args.push("--learner");
    }
    let out = member_ok(cluster, via, &args).await;
    let first = out.lines().next().unwrap_or_default();
    assert!(first.starts_with("Member ") && first.contains(" added to cluster "), "{out}");
    let id = u64::from_str_radix(first.split_whitespace().nth(1).expect("id"), 16).expect("hex");
    assert_eq!(id, 4, "the next free id");
    assert!(out.contains("join = true") && out.contains("node_id = 4"), "{out}");
    let mut config = format!("{CONFIG}{}", out.lines().skip(1).collect::<Vec<_>>().join("\n"));
    if !with_client_url {
        assert!(!config.contains(&format!("{peer_port}")), "n4 listed without a client URL");
        config.push_str(&format!(
            "\n[[members]]\nid = 4\npeer_addr = \"127.0.0.1:{peer_port}\"\n\
             client_addr = \"127.0.0.1:{client_port}\"\n"
        ));
    }
    let config = config.replacen("[[members]]", "[timeouts]\nrequest_ms = 3000\n\n[[members]]", 1);
    std::fs::write(cluster.dir.path().join("n4.toml"), config).expect("config");
    let log = std::fs::File::create(cluster.dir.path().join("n4.log")).expect("log");
    let child = Command::new(synod())
        .args(["serve", "--config"])
        .arg(cluster.dir.path().join("n4.toml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn n4");
    (Extra(Some(child)), format!("127.0.0.1:{client_port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_learner_promote_it_and_remove_the_leader() {
    let mut cluster = Cluster::start_with(CONFIG);
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let mut acked = BTreeMap::new();
    let originals: Vec<String> = (0..3).map(|i| cluster.endpoint(i)).collect();
    put_some(&cluster, &originals, &mut acked, 0, 40).await;

    // Errors, with etcd's codes and messages.
    let mut c = ClusterClient::new(rpc_channel(&originals[follower]));
    let e = c.member_promote(MemberPromoteRequest { id: 2 }).await.expect_err("a voter");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert_eq!(e.message(), "etcdserver: can only promote a learner member");
    let e = c.member_remove(MemberRemoveRequest { id: 99 }).await.expect_err("unknown");
    assert_eq!((e.code(), e.message()), (tonic::Code::NotFound, "etcdserver: member not found"));
    let o = member(&originals[0], &["remove", "63"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("etcdserver: member not found"), "{}", text(&o));

    // Add a learner through a follower, start it with the printed config.
    let (_n4, n4) = add_and_start(&cluster, &originals[follower], true, true).await;
    assert_eq!(members(&originals[leader]).await.iter().find(|m| m.0 == 4), Some(&(4, true)));

    // It catches up: a serializable read of data written before it joined.
    let deadline = Instant::now() + WAIT;
    while get(&n4, "key039", true).await.ok().flatten().as_deref() != Some("value39") {
        let n4_log = std::fs::read_to_string(cluster.dir.path().join("n4.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "n4 did not catch up\n{n4_log}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&n4, "key000", true).await.expect("read"), Some("value0".into()));

    // Promote it (retried until it is in sync), then it is a voter.
    let out = member_ok(&cluster, &originals[follower], &["promote", "4"]).await;
    assert!(out.contains("promoted in cluster"), "{out}");
    let listed = members(&originals[leader]).await;
    assert_eq!(listed, vec![(1, false), (2, false), (3, false), (4, false)]);
    let mut everyone = originals.clone();
    everyone.push(n4.clone());
    put_some(&cluster, &everyone, &mut acked, 40, 20).await;

    // Remove the leader (through itself): it steps down once C_new commits.
    let old_leader = leader_id(&cluster, &everyone, 0).await;
    let via = &everyone[old_leader as usize - 1];
    let out = member_ok(&cluster, via, &["remove", &format!("{old_leader:x}")]).await;
    assert!(out.contains("removed from cluster"), "{out}");
    cluster.kill(old_leader as usize - 1);
    let rest: Vec<String> = (1..=4u64)
        .filter(|&i| i != old_leader)
        .map(|i| if i == 4 { n4.clone() } else { originals[i as usize - 1].clone() })
        .collect();
    let new_leader = leader_id(&cluster, &rest, old_leader).await;
    assert_ne!(new_leader, old_leader);
    put_some(&cluster, &rest, &mut acked, 60, 20).await;

    // Remove another original member (not n4), through n4.
    let gone = (1..=3u64).find(|&i| i != old_leader).expect("an original");
    member_ok(&cluster, &n4, &["remove", &format!("{gone:x}")]).await;
    cluster.kill(gone as usize - 1);
    let last: Vec<String> =
        rest.iter().filter(|e| **e != originals[gone as usize - 1]).cloned().collect();
    assert_eq!(last.len(), 2);
    // Every remaining member lists the two (a follower learns C_new a
    // heartbeat after the leader).
    let deadline = Instant::now() + WAIT;
    for e in &last {
        loop {
            let listed: Vec<u64> = members(e).await.iter().map(|m| m.0).collect();
            if listed.len() == 2 && !listed.contains(&old_leader) && !listed.contains(&gone) {
                break;
            }
            assert!(Instant::now() < deadline, "{e} lists {listed:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    put_some(&cluster, &last, &mut acked, 80, 20).await;

    // No acknowledged write was lost, on either remaining member.
    for e in &last {
        check_all(&cluster, e, &acked).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_as_a_voter_is_promoted_once_caught_up() {
    let cluster = Cluster::start_with(CONFIG);
    let leader = cluster.leader().await;
    let originals: Vec<String> = (0..3).map(|i| cluster.endpoint(i)).collect();
    let mut acked = BTreeMap::new();
    put_some(&cluster, &originals, &mut acked, 0, 40).await;
    let (_n4, n4) = add_and_start(&cluster, &originals[leader], false, false).await;
    // It joins as a learner (no quorum is lost while it starts) and the
    // leader promotes it by itself once it has caught up.
    let deadline = Instant::now() + WAIT;
    loop {
        let listed = members(&originals[leader]).await;
        if listed == vec![(1, false), (2, false), (3, false), (4, false)] {
            break;
        }
        assert!(Instant::now() < deadline, "not promoted: {listed:?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Added without a client URL, n4 published its own once it ran.
    let published = format!("http://{n4}");
    let deadline = Instant::now() + WAIT;
    loop {
        let urls = client_urls(&originals[(leader + 1) % 3], 4).await;
        if urls == [published.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "n4's client URL: {urls:?}\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut everyone = originals.clone();
    everyone.push(n4.clone());
    put_some(&cluster, &everyone, &mut acked, 40, 20).await;
    check_all(&cluster, &n4, &acked).await;
}

/// Member `id`'s client URLs, as `endpoint` lists them.
async fn client_urls(endpoint: &str, id: u64) -> Vec<String> {
    let mut c = ClusterClient::new(rpc_channel(endpoint));
    let r = c.member_list(MemberListRequest { linearizable: false }).await.expect("member list");
    r.into_inner().members.into_iter().find(|m| m.id == id).map_or(vec![], |m| m.client_ur_ls)
}

/// Member `id`'s peer URLs, as `endpoint` lists them.
async fn peer_urls(endpoint: &str, id: u64) -> Vec<String> {
    let mut c = ClusterClient::new(rpc_channel(endpoint));
    let r = c.member_list(MemberListRequest { linearizable: false }).await.expect("member list");
    r.into_inner().members.into_iter().find(|m| m.id == id).map_or(vec![], |m| m.peer_ur_ls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_update_moves_a_member_to_a_new_peer_address() {
    let mut cluster = Cluster::start_with(CONFIG);
    let leader = cluster.leader().await;
    let moved = (leader + 1) % 3; // a follower: index, id moved + 1
    let id = moved as u64 + 1;
    let originals: Vec<String> = (0..3).map(|i| cluster.endpoint(i)).collect();
    let mut acked = BTreeMap::new();
    put_some(&cluster, &originals, &mut acked, 0, 10).await;

    // etcd's refusals: an unknown member, another member's peer URL, a bad URL.
    let mut c = ClusterClient::new(rpc_channel(&originals[moved]));
    let other = peer_urls(&originals[leader], leader as u64 + 1).await;
    let refusals = [
        (
            MemberUpdateRequest { id: 99, peer_ur_ls: vec!["http://127.0.0.1:1".into()] },
            tonic::Code::NotFound,
            "etcdserver: member not found",
        ),
        (
            MemberUpdateRequest { id, peer_ur_ls: other },
            tonic::Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists",
        ),
        (
            MemberUpdateRequest { id, peer_ur_ls: vec!["http://example.com:80".into()] },
            tonic::Code::InvalidArgument,
            "etcdserver: given member URLs are invalid",
        ),
    ];
    for (request, code, message) in refusals {
        let e = c.member_update(request.clone()).await.expect_err("refused");
        assert_eq!((e.code(), e.message()), (code, message), "{request:?}");
    }

    // Move it (through itself, forwarded to the leader), then restart it
    // listening at the new address: the others dial it there.
    let old_peer = peer_urls(&originals[leader], id).await;
    let old_port = old_peer[0].rsplit(':').next().expect("port").to_string();
    let new_port = common::free_port();
    let new_url = format!("http://127.0.0.1:{new_port}");
    let out = member_ok(
        &cluster,
        &originals[moved],
        &["update", &format!("{id:x}"), "--peer-urls", &new_url],
    )
    .await;
    assert!(out.starts_with(&format!("Member {id:16x} updated in cluster ")), "{out}");
    // (The moved member itself may not hear of it until it restarts: the
    // leader now dials it at the new address.)
    let deadline = Instant::now() + WAIT;
    for e in (0..3).filter(|&i| i != moved).map(|i| &originals[i]) {
        while peer_urls(e, id).await != [new_url.clone()] {
            assert!(Instant::now() < deadline, "{e} lists {:?}", peer_urls(e, id).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    cluster.kill(moved);
    let path = cluster.dir.path().join(format!("n{id}.toml"));
    let config = std::fs::read_to_string(&path).expect("config");
    let moved_config =
        config.replace(&format!("127.0.0.1:{old_port}\""), &format!("127.0.0.1:{new_port}\""));
    assert_ne!(config, moved_config);
    std::fs::write(&path, moved_config).expect("config");
    cluster.spawn(moved);
    let others: Vec<String> =
        (0..3).filter(|&i| i != moved).map(|i| originals[i].clone()).collect();
    put_some(&cluster, &others, &mut acked, 10, 20).await;
    // The moved member catches up through its new address.
    let deadline = Instant::now() + WAIT;
    while get(&originals[moved], "key029", true).await.ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the moved member is behind\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check_all(&cluster, &originals[moved], &acked).await;
    assert_eq!(peer_urls(&originals[moved], id).await, [new_url]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paxos_has_no_membership_changes() {
    let cluster = Cluster::start_with("protocol = \"paxos\"\n");
    cluster.leader().await;
    let mut c = ClusterClient::new(rpc_channel(&cluster.endpoint(0)));
    let e = c.member_remove(MemberRemoveRequest { id: 2 }).await.expect_err("unsupported");
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
    assert!(e.message().contains("not supported by the paxos protocol"), "{}", e.message());
    assert_eq!(members(&cluster.endpoint(0)).await.len(), 3, "the configured members");
}
