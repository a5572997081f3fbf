//! `synod kv put | get | del | compact`: an etcdctl-like key-value client
//! over the etcd v3 API, for users without etcdctl. It talks to Synod and to
//! etcd alike. Output follows etcdctl's simple format: `put` prints `OK`,
//! `get` prints key and value lines, `del` prints how many keys it deleted,
//! `compact` prints `compacted revision N` (etcdctl's `compaction`).
//!
//! On a PBFT cluster, put, del, compact and linearizable get go through Synod's own
//! PBFT client ([`crate::pbft_client`]): the request signed with the
//! client's key and sent to every replica, the result taken only when f+1
//! replicas agree. Everywhere else (and `--consistency=s`) they are plain
//! etcd requests to the first endpoint that answers.
//!
//! Exit codes: 0 success, 1 the cluster answered with an error or could not
//! be reached, 2 bad usage.

use crate::client::{self, ClientOpts, Failure, key_range, parse_lease, text, within};
use crate::pbft_client;
use clap::{Args, Subcommand, ValueEnum};
use std::process::ExitCode;
use synod_etcdpb::etcdserverpb::kv_client::KvClient;
use synod_etcdpb::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest};

/// Arguments of `synod kv`.
#[derive(Args, Debug)]
pub struct KvArgs {
    #[command(flatten)]
    client: ClientOpts,
    #[command(subcommand)]
    op: KvOp,
}

#[derive(Subcommand, Debug)]
enum KvOp {
    /// Store VALUE under KEY.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Attach the key to this lease (hexadecimal id, as etcdctl prints).
        #[arg(long, value_parser = parse_lease)]
        lease: Option<i64>,
        /// Print the previous key-value pair.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Read KEY (or every key with the prefix KEY).
    Get {
        /// The key.
        key: String,
        /// Every key starting with KEY.
        #[arg(long, conflicts_with = "from_key")]
        prefix: bool,
        /// Every key greater than or equal to KEY.
        #[arg(long)]
        from_key: bool,
        /// At most this many keys (0: no limit).
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Read at this store revision (0: the latest).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Print keys only.
        #[arg(long)]
        keys_only: bool,
        /// Linearizable (`l`, through the protocol) or serializable (`s`,
        /// from the local replica).
        #[arg(long, value_enum, default_value_t = Consistency::L)]
        consistency: Consistency,
    },
    /// Delete KEY (or every key with the prefix KEY).
    Del {
        /// The key.
        key: String,
        /// Every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// Print the deleted key-value pairs.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Discard the history below REVISION (etcdctl's `compaction`): reads
    /// and watches from before it are refused afterwards.
    Compact {
        /// The revision to compact up to.
        #[arg(value_parser = clap::value_parser!(i64).range(1..))]
        revision: i64,
        /// Wait until the compaction is applied everywhere (etcd's
        /// `--physical`).
        #[arg(long)]
        physical: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

/// Runs `synod kv`.
pub fn run(args: KvArgs) -> ExitCode {
    client::run_command("kv", execute(args))
}

async fn execute(args: KvArgs) -> Result<(), Failure> {
    let timeout = args.client.timeout();
    let serializable = matches!(args.op, KvOp::Get { consistency: Consistency::S, .. });
    let mut pbft = if serializable { None } else { pbft_client::choose(&args.client).await? };
    let mut plain = None;
    if pbft.is_none() {
        plain = Some(KvClient::new(client::connect(&args.client.endpoints, timeout).await?));
    }
    let mut out = String::new();
    match args.op {
        KvOp::Put { key, value, lease, prev_kv } => {
            let request = PutRequest {
                key: key.into_bytes(),
                value: value.into_bytes(),
                lease: lease.unwrap_or(0),
                prev_kv,
                ..Default::default()
            };
            let r = match (&mut pbft, &mut plain) {
                (Some(p), _) => p.put(request).await?,
                (None, Some(c)) => within(timeout, c.put(request)).await?,
                (None, None) => unreachable!("one client is connected"),
            };
            out.push_str("OK\n");
            if let Some(kv) = r.prev_kv {
                out.push_str(&format!("{}\n{}\n", text(&kv.key), text(&kv.value)));
            }
        }
        KvOp::Get { key, prefix, from_key, limit, rev, keys_only, consistency } => {
            let (key, range_end) = key_range(key.as_bytes(), prefix, from_key);
            let request = RangeRequest {
                key,
                range_end,
                limit,
                revision: rev,
                keys_only,
                serializable: matches!(consistency, Consistency::S),
                ..Default::default()
            };
            let r = match (&mut pbft, &mut plain) {
                (Some(p), _) => p.range(request).await?,
                (None, Some(c)) => within(timeout, c.range(request)).await?,
                (None, None) => unreachable!("one client is connected"),
            };
            for kv in r.kvs {
                out.push_str(&text(&kv.key));
                out.push('\n');
                if !keys_only {
                    out.push_str(&text(&kv.value));
                    out.push('\n');
                }
            }
        }
        KvOp::Del { key, prefix, prev_kv } => {
            let (key, range_end) = key_range(key.as_bytes(), prefix, false);
            let request = DeleteRangeRequest { key, range_end, prev_kv };
            let r = match (&mut pbft, &mut plain) {
                (Some(p), _) => p.delete_range(request).await?,
                (None, Some(c)) => within(timeout, c.delete_range(request)).await?,
                (None, None) => unreachable!("one client is connected"),
            };
            out.push_str(&format!("{}\n", r.deleted));
            for kv in r.prev_kvs {
                out.push_str(&format!("{}\n{}\n", text(&kv.key), text(&kv.value)));
            }
        }
        KvOp::Compact { revision, physical } => {
            let request = CompactionRequest { revision, physical };
            match (&mut pbft, &mut plain) {
                (Some(p), _) => p.compact(request).await?,
                (None, Some(c)) => within(timeout, c.compact(request)).await?,
                (None, None) => unreachable!("one client is connected"),
            };
            out.push_str(&format!("compacted revision {revision}\n"));
        }
    }
    client::emit(&out);
    Ok(())
}
