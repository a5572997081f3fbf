//! `synod member list|add|remove|promote|update`: etcdctl's `member` commands over
//! the etcd v3 Cluster API. `list` prints one line per member, as etcdctl's
//! simple format prints it:
//! `<id hex>, <started|unstarted>, <name>, <peer urls>, <client urls>, <is learner>`.
//! `add` prints etcdctl's `Member <id> added to cluster <cluster id>` and
//! then the `synod serve` config lines the new member starts with (etcd
//! prints `ETCD_INITIAL_CLUSTER...` there); `remove`, `promote` and
//! `update` print etcdctl's one-line confirmations.
//!
//! On a PBFT cluster (a PBFT client key found, as `synod kv` finds it),
//! `list` asks every `--endpoints` replica through the Cluster API and
//! prints the list only when f+1 of them returned the same one (PBFT
//! membership is static, so correct replicas agree): one lying replica
//! cannot make it up. The answers are not signed, so the f+1 are counted
//! by endpoint: give the replicas' own client addresses (all n of them).
//!
//! Exit codes: 0 success, 1 the cluster answered with an error or could not
//! be reached, 2 bad usage.

use crate::client::{self, ClientOpts, Failure, emit, within};
use crate::pbft_client;
use clap::{Args, Subcommand};
use std::process::ExitCode;
use synod_etcdpb::etcdserverpb::cluster_client::ClusterClient;
use synod_etcdpb::etcdserverpb::{
    Member, MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MemberUpdateRequest,
};

/// Arguments of `synod member`.
#[derive(Args, Debug)]
pub struct MemberArgs {
    #[command(flatten)]
    client: ClientOpts,
    #[command(subcommand)]
    op: MemberOp,
}

#[derive(Subcommand, Debug)]
enum MemberOp {
    /// List the cluster's members.
    List {
        /// Ask through the protocol (linearizable) rather than the local
        /// replica's view.
        #[arg(long)]
        linearizable: bool,
    },
    /// Add a member (as a learner with --learner; otherwise it becomes a
    /// voter once it has caught up), then print the config it starts with.
    Add {
        /// The new member's name (shown in the printed config only).
        name: String,
        /// Its peer URL, e.g. http://127.0.0.1:2480.
        #[arg(long = "peer-urls")]
        peer_urls: String,
        /// Its client URL, e.g. http://127.0.0.1:2479 (so that members can
        /// forward requests to it; etcd learns it when the member starts).
        #[arg(long = "client-urls")]
        client_urls: Option<String>,
        /// Add it as a non-voting learner (promote it later).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member, by hex id.
    Remove {
        /// The member's id, in hex as `member list` prints it.
        id: String,
    },
    /// Make a learner a voting member, by hex id.
    Promote {
        /// The learner's id, in hex.
        id: String,
    },
    /// Change a member's peer URL (restart it listening there).
    Update {
        /// The member's id, in hex.
        id: String,
        /// Its new peer URL, e.g. http://127.0.0.1:2490.
        #[arg(long = "peer-urls")]
        peer_urls: String,
    },
}

fn parse_id(s: &str) -> Result<u64, Failure> {
    u64::from_str_radix(s, 16)
        .map_err(|_| Failure::Usage(format!("bad member ID arg ({s}), expecting ID in Hex")))
}

/// Runs `synod member`.
pub fn run(args: MemberArgs) -> ExitCode {
    client::run_command("member", execute(args))
}

async fn execute(args: MemberArgs) -> Result<(), Failure> {
    let timeout = args.client.timeout();
    let channel = client::connect(&args.client.endpoints, timeout).await?;
    if matches!(args.op, MemberOp::List { .. })
        && let Some(pbft) = pbft_client::choose(&args.client).await?
    {
        let members = agreed_members(&args.client.endpoints, pbft.replica_count(), timeout).await?;
        emit(&members.iter().map(format_member).collect::<String>());
        return Ok(());
    }
    match args.op {
        MemberOp::List { linearizable } => {
            let r = within(
                timeout,
                ClusterClient::new(channel).member_list(MemberListRequest { linearizable }),
            )
            .await?;
            emit(&r.members.iter().map(format_member).collect::<String>());
        }
        MemberOp::Add { name, peer_urls, client_urls, learner } => {
            let mut request = tonic::Request::new(MemberAddRequest {
                peer_ur_ls: peer_urls.split(',').map(str::to_string).collect(),
                is_learner: learner,
            });
            if let Some(url) = &client_urls {
                let value = url
                    .parse()
                    .map_err(|_| Failure::Usage(format!("--client-urls: bad URL {url}")))?;
                request.metadata_mut().insert("synod-client-url", value);
            }
            let r = within(timeout, ClusterClient::new(channel).member_add(request)).await?;
            let id = r.member.as_ref().map_or(0, |m| m.id);
            let cluster = r.header.as_ref().map_or(0, |h| h.cluster_id);
            emit(&format!("Member {id:16x} added to cluster {cluster:16x}\n\n"));
            emit(&join_config(&name, id, &r.members));
        }
        MemberOp::Remove { id } => {
            let id = parse_id(&id)?;
            let r = within(
                timeout,
                ClusterClient::new(channel).member_remove(MemberRemoveRequest { id }),
            )
            .await?;
            let cluster = r.header.as_ref().map_or(0, |h| h.cluster_id);
            emit(&format!("Member {id:16x} removed from cluster {cluster:16x}\n"));
        }
        MemberOp::Promote { id } => {
            let id = parse_id(&id)?;
            let r = within(
                timeout,
                ClusterClient::new(channel).member_promote(MemberPromoteRequest { id }),
            )
            .await?;
            let cluster = r.header.as_ref().map_or(0, |h| h.cluster_id);
            emit(&format!("Member {id:16x} promoted in cluster {cluster:16x}\n"));
        }
        MemberOp::Update { id, peer_urls } => {
            let id = parse_id(&id)?;
            let peer_ur_ls = peer_urls.split(',').map(str::to_string).collect();
            let r = within(
                timeout,
                ClusterClient::new(channel).member_update(MemberUpdateRequest { id, peer_ur_ls }),
            )
            .await?;
            let cluster = r.header.as_ref().map_or(0, |h| h.cluster_id);
            emit(&format!("Member {id:16x} updated in cluster {cluster:16x}\n"));
        }
    }
    Ok(())
}

/// The member list f+1 of `endpoints` return alike, on a PBFT cluster of
/// `n` replicas (each list sorted by id before comparing; headers, which
/// name the answering member, are left out).
async fn agreed_members(
    endpoints: &[String],
    n: usize,
    timeout: std::time::Duration,
) -> Result<Vec<Member>, Failure> {
    let needed = synod_core::quorum::byzantine_reply_quorum(n);
    let mut distinct: Vec<&String> = Vec::new();
    for e in endpoints {
        if !distinct.contains(&e) {
            distinct.push(e);
        }
    }
    if distinct.len() < needed {
        return Err(Failure::Usage(format!(
            "member list on PBFT takes the list f+1 = {needed} replicas agree on: give at least \
             {needed} replica endpoints (all {n} is best), not {}",
            distinct.len()
        )));
    }
    let mut calls = tokio::task::JoinSet::new();
    for e in distinct {
        let endpoint = vec![e.clone()];
        calls.spawn(async move {
            let channel = client::connect(&endpoint, timeout).await.map_err(Failure::Cluster)?;
            let request = MemberListRequest { linearizable: false };
            let r = within(timeout, ClusterClient::new(channel).member_list(request)).await?;
            let mut members = r.members;
            members.sort_by_key(|m| m.id);
            Ok::<_, Failure>(members)
        });
    }
    let mut answers: Vec<(Vec<Member>, usize)> = Vec::new();
    let mut failed = Vec::new();
    while let Some(done) = calls.join_next().await {
        match done {
            Ok(Ok(members)) => match answers.iter_mut().find(|(m, _)| *m == members) {
                Some((_, votes)) => *votes += 1,
                None => answers.push((members, 1)),
            },
            Ok(Err(Failure::Usage(e) | Failure::Cluster(e))) => failed.push(e),
            Ok(Err(Failure::Exit(code))) => failed.push(format!("exit {code}")),
            Err(e) => failed.push(e.to_string()),
        }
        if let Some((members, _)) = answers.iter().find(|(_, votes)| *votes >= needed) {
            return Ok(members.clone());
        }
    }
    Err(Failure::Cluster(format!(
        "error: no member list that f+1 = {needed} replicas agree on ({} different lists{}{})",
        answers.len(),
        if failed.is_empty() { "" } else { "; " },
        failed.join("; ")
    )))
}

/// The `synod serve` config of a member that joins: its id, `join = true`,
/// `data_dir` and `secret_file` as `synod up` lays them out (next to the
/// config file), and every member's addresses.
fn join_config(name: &str, id: u64, members: &[Member]) -> String {
    let strip =
        |u: &str| u.trim_start_matches("http://").trim_start_matches("https://").to_string();
    let mut out =
        format!("# synod serve --config for {name} (paths as `synod up` lays them out)\n");
    out.push_str(&format!(
        "node_id = {id}\njoin = true\ndata_dir = \"{name}\"\nsecret_file = \"secret\"\n"
    ));
    for m in members {
        let (Some(peer), Some(client)) = (m.peer_ur_ls.first(), m.client_ur_ls.first()) else {
            continue;
        };
        out.push_str(&format!(
            "\n[[members]]\nid = {}\npeer_addr = \"{}\"\nclient_addr = \"{}\"\n",
            m.id,
            strip(peer),
            strip(client)
        ));
    }
    out
}

/// One member as etcdctl's simple printer shows it.
fn format_member(m: &Member) -> String {
    let status = if m.name.is_empty() { "unstarted" } else { "started" };
    format!(
        "{:x}, {status}, {}, {}, {}, {}\n",
        m.id,
        m.name,
        m.peer_ur_ls.join(","),
        m.client_ur_ls.join(","),
        m.is_learner
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_print_as_etcdctl_does() {
        let m = Member {
            id: 0x8e9e05c52164694d,
            name: "default".into(),
            peer_ur_ls: vec!["http://localhost:2380".into()],
            client_ur_ls: vec!["http://localhost:2379".into(), "http://h:2379".into()],
            is_learner: false,
        };
        assert_eq!(
            format_member(&m),
            "8e9e05c52164694d, started, default, http://localhost:2380, \
             http://localhost:2379,http://h:2379, false\n"
        );
        let joining = Member { id: 1, name: String::new(), is_learner: true, ..m };
        assert!(format_member(&joining).starts_with("1, unstarted, , "));
        assert!(format_member(&joining).ends_with(", true\n"));
    }
}
