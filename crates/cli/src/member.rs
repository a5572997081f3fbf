//! `synod member list`: etcdctl's `member list` over the etcd v3 Cluster API.
//! One line per member, as etcdctl's simple format prints it:
//! `<id hex>, <started|unstarted>, <name>, <peer urls>, <client urls>, <is learner>`.
//!
//! Exit codes: 0 success, 1 the cluster answered with an error or could not
//! be reached, 2 bad usage.

use crate::client::{self, ClientOpts, Failure, emit, within};
use clap::{Args, Subcommand};
use std::process::ExitCode;
use synod_etcdpb::etcdserverpb::cluster_client::ClusterClient;
use synod_etcdpb::etcdserverpb::{Member, MemberListRequest};

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
    }
    Ok(())
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
