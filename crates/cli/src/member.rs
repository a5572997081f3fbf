//! `synod member list|add|remove|promote|update`: etcdctl's `member` commands over
//! the etcd v3 Cluster API. `list` prints one line per member, as etcdctl's
//! simple format prints it:
//! `<id hex>, <started|unstarted>, <name>, <peer urls>, <client urls>, <is learner>`.
//! `add` prints etcdctl's `Member <id> added to cluster <cluster id>` and
//! then the `synod serve` config lines the new member starts with (etcd
//! prints `ETCD_INITIAL_CLUSTER...` there); `remove`, `promote` and
//! `update` print etcdctl's one-line confirmations.
//!
//! Exit codes: 0 success, 1 the cluster answered with an error or could not
//! be reached, 2 bad usage.

use crate::client::{self, ClientOpts, Failure, emit, within};
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
