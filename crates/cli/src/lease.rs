//! `synod lease grant | revoke | keep-alive | ttl | list`: etcdctl's lease
//! commands over the etcd v3 Lease API, with etcdctl's output lines
//! (`lease 694d77aa9e38260f granted with TTL(10s)`, ...). Lease ids are
//! printed and read in hexadecimal, as etcdctl does.
//!
//! On a PBFT cluster, every command goes through Synod's PBFT client
//! ([`crate::pbft_client`], as `synod kv` does): signed, sent to every
//! replica, and taken only when f+1 replicas agree. Each is ordered and
//! executed at its batch's agreed time (the primary's timestamp, which
//! correct backups check against their own clocks), so every replica
//! answers the same; `list` too is ordered (it changes nothing), so that
//! the replicas list the leases of the same position.
//!
//! Exit codes: 0 success, 1 the cluster answered with an error or could not
//! be reached (or, for `keep-alive`, the lease expired or was revoked), 2 bad
//! usage.

use crate::client::{self, ClientOpts, Failure, emit, parse_lease, text, within};
use crate::pbft_client::{self, PbftClient};
use clap::{Args, Subcommand};
use std::process::ExitCode;
use std::time::Duration;
use synod_etcdpb::etcdserverpb::lease_client::LeaseClient;
use synod_etcdpb::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Arguments of `synod lease`.
#[derive(Args, Debug)]
pub struct LeaseArgs {
    #[command(flatten)]
    client: ClientOpts,
    #[command(subcommand)]
    op: LeaseOp,
}

#[derive(Subcommand, Debug)]
enum LeaseOp {
    /// Grant a lease of TTL seconds; prints its id.
    Grant {
        /// Time to live in seconds (at least 1).
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        ttl: i64,
    },
    /// Revoke a lease: every key attached to it is deleted.
    Revoke {
        /// The lease id (hexadecimal).
        #[arg(value_parser = parse_lease)]
        id: i64,
    },
    /// Keep a lease alive until interrupted (or once, with --once); prints
    /// each renewal.
    KeepAlive {
        /// The lease id (hexadecimal).
        #[arg(value_parser = parse_lease)]
        id: i64,
        /// Renew once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Show a lease's granted and remaining time to live.
    #[command(alias = "timetolive")]
    Ttl {
        /// The lease id (hexadecimal).
        #[arg(value_parser = parse_lease)]
        id: i64,
        /// Also list the keys attached to the lease.
        #[arg(long)]
        keys: bool,
    },
    /// List every live lease.
    List,
}

/// Runs `synod lease`.
pub fn run(args: LeaseArgs) -> ExitCode {
    client::run_command("lease", execute(args))
}

async fn execute(args: LeaseArgs) -> Result<(), Failure> {
    let timeout = args.client.timeout();
    if let Some(pbft) = pbft_client::choose(&args.client).await? {
        return execute_pbft(pbft, args.op).await;
    }
    let channel = client::connect(&args.client.endpoints, timeout).await?;
    let mut lease = LeaseClient::new(channel.clone());
    match args.op {
        LeaseOp::Grant { ttl } => {
            let r = within(timeout, lease.lease_grant(LeaseGrantRequest { ttl, id: 0 })).await?;
            emit(&format!("lease {:016x} granted with TTL({}s)\n", r.id, r.ttl));
        }
        LeaseOp::Revoke { id } => {
            within(timeout, lease.lease_revoke(LeaseRevokeRequest { id })).await?;
            emit(&format!("lease {id:016x} revoked\n"));
        }
        LeaseOp::KeepAlive { id, once } => keep_alive(channel, id, once, timeout).await?,
        LeaseOp::Ttl { id, keys } => {
            let r = within(timeout, lease.lease_time_to_live(LeaseTimeToLiveRequest { id, keys }))
                .await?;
            emit(&format_ttl(id, r.ttl, r.granted_ttl, keys.then_some(&r.keys[..])));
        }
        LeaseOp::List => {
            let r = within(timeout, lease.lease_leases(LeaseLeasesRequest {})).await?;
            emit(&format_list(r.leases.iter().map(|l| l.id)));
        }
    }
    Ok(())
}

/// etcdctl's `lease list` output.
fn format_list(ids: impl ExactSizeIterator<Item = i64>) -> String {
    let mut out = format!("found {} leases\n", ids.len());
    for id in ids {
        out.push_str(&format!("{id:016x}\n"));
    }
    out
}

/// `synod lease` on PBFT, every answer vouched for by f+1 replicas.
async fn execute_pbft(mut pbft: PbftClient, op: LeaseOp) -> Result<(), Failure> {
    match op {
        LeaseOp::Grant { ttl } => {
            let (id, ttl) = pbft.lease_grant(ttl, 0).await?;
            emit(&format!("lease {id:016x} granted with TTL({ttl}s)\n"));
        }
        LeaseOp::Revoke { id } => {
            pbft.lease_revoke(id).await?;
            emit(&format!("lease {id:016x} revoked\n"));
        }
        LeaseOp::KeepAlive { id, once } => {
            let interrupted = tokio::signal::ctrl_c();
            tokio::pin!(interrupted);
            loop {
                let ttl = pbft.lease_keep_alive(id).await?;
                if ttl <= 0 {
                    emit(&format!("lease {id:016x} expired or revoked.\n"));
                    return Err(Failure::Cluster(format!("lease {id:016x} is gone")));
                }
                emit(&format!("lease {id:016x} keepalived with TTL({ttl})\n"));
                if once {
                    return Ok(());
                }
                let every = Duration::from_millis((ttl as u64 * 1000 / 3).max(500));
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = &mut interrupted => return Ok(()),
                }
            }
        }
        LeaseOp::Ttl { id, keys } => {
            let (ttl, granted, attached) = pbft.lease_time_to_live(id, keys).await?;
            emit(&format_ttl(id, ttl, granted, keys.then_some(&attached[..])));
        }
        LeaseOp::List => {
            let ids = pbft.lease_leases().await?;
            emit(&format_list(ids.into_iter()));
        }
    }
    Ok(())
}

/// etcdctl's `lease timetolive` line.
fn format_ttl(id: i64, ttl: i64, granted_ttl: i64, keys: Option<&[Vec<u8>]>) -> String {
    if ttl == -1 {
        return format!("lease {id:016x} already expired\n");
    }
    let mut line = format!("lease {id:016x} granted with TTL({granted_ttl}s), remaining({ttl}s)");
    if let Some(keys) = keys {
        let names: Vec<String> = keys.iter().map(|k| text(k)).collect();
        line.push_str(&format!(", attached keys([{}])", names.join(" ")));
    }
    line.push('\n');
    line
}

/// Renews lease `id` over one keep-alive stream, every third of its TTL
/// (at least every 500 ms), until interrupted; `once` renews a single time.
/// Fails when the lease is gone (TTL 0 in the answer) or the stream breaks.
async fn keep_alive(
    channel: Channel,
    id: i64,
    once: bool,
    timeout: Duration,
) -> Result<(), Failure> {
    let (tx, rx) = mpsc::channel(4);
    let mut replies =
        LeaseClient::new(channel).lease_keep_alive(ReceiverStream::new(rx)).await?.into_inner();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
            return Err(Failure::Cluster("error: keep-alive stream closed".into()));
        }
        let reply = match tokio::time::timeout(timeout, replies.message()).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => return Err(Failure::Cluster("error: keep-alive stream closed".into())),
            Ok(Err(status)) => return Err(status.into()),
            Err(_) => {
                return Err(Failure::Cluster(format!(
                    "error: no keep-alive answer within {} ms",
                    timeout.as_millis()
                )));
            }
        };
        if reply.ttl <= 0 {
            emit(&format!("lease {id:016x} expired or revoked.\n"));
            return Err(Failure::Cluster(format!("lease {id:016x} is gone")));
        }
        emit(&format!("lease {id:016x} keepalived with TTL({})\n", reply.ttl));
        if once {
            return Ok(());
        }
        let every = Duration::from_millis((reply.ttl as u64 * 1000 / 3).max(500));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut interrupted => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_lines_match_etcdctl() {
        assert_eq!(
            format_ttl(0x694d77aa9e38260f, 481, 500, None),
            "lease 694d77aa9e38260f granted with TTL(500s), remaining(481s)\n"
        );
        assert_eq!(
            format_ttl(0x10, 5, 10, Some(&[b"zoo1".to_vec(), b"zoo2".to_vec()])),
            "lease 0000000000000010 granted with TTL(10s), remaining(5s), attached keys([zoo1 zoo2])\n"
        );
        assert_eq!(format_ttl(0x10, -1, 0, None), "lease 0000000000000010 already expired\n");
    }
}
