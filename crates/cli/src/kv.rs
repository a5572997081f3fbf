//! `synod kv put | get | del`: an etcdctl-like key-value client over the etcd
//! v3 API, for users without etcdctl. It talks to Synod and to etcd alike.
//! Output follows etcdctl's simple format: `put` prints `OK`, `get` prints
//! key and value lines, `del` prints how many keys it deleted.
//!
//! Exit codes: 0 success, 1 the cluster answered with an error or could not
//! be reached, 2 bad usage.

use clap::{Args, Subcommand, ValueEnum};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use synod_etcdpb::etcdserverpb::kv_client::KvClient;
use synod_etcdpb::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
use tonic::transport::{Channel, Endpoint};

/// Arguments of `synod kv`.
#[derive(Args, Debug)]
pub struct KvArgs {
    /// Client endpoints (`host:port`, comma-separated); the first that
    /// answers is used. `synod up` puts node 1 on 127.0.0.1:2379.
    #[arg(long, global = true, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// Per-request timeout.
    #[arg(long, global = true, default_value_t = 5000)]
    timeout_ms: u64,
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
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

fn parse_lease(s: &str) -> Result<i64, String> {
    i64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|_| format!("`{s}` is not a lease id (hexadecimal)"))
}

/// The end of the range holding every key that starts with `key` (etcd's
/// convention: `"\0"` when no such end exists).
fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Runs `synod kv`.
pub fn run(args: KvArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("synod kv: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(execute(args)) {
        Ok(text) => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synod kv: {e}");
            ExitCode::from(1)
        }
    }
}

async fn connect(endpoints: &[String], timeout: Duration) -> Result<KvClient<Channel>, String> {
    let mut last = String::from("no endpoints given");
    for endpoint in endpoints {
        let url =
            if endpoint.contains("://") { endpoint.clone() } else { format!("http://{endpoint}") };
        let ep = match Endpoint::from_shared(url) {
            Ok(ep) => ep.connect_timeout(timeout).timeout(timeout),
            Err(e) => {
                last = format!("bad endpoint `{endpoint}`: {e}");
                continue;
            }
        };
        match ep.connect().await {
            Ok(channel) => return Ok(KvClient::new(channel)),
            Err(e) => last = format!("cannot connect to {endpoint}: {e}"),
        }
    }
    Err(last)
}

async fn execute(args: KvArgs) -> Result<String, String> {
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let mut client = connect(&args.endpoints, timeout).await?;
    let status = |e: tonic::Status| format!("error: {}", e.message());
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out = String::new();
    match args.op {
        KvOp::Put { key, value, lease, prev_kv } => {
            let r = client
                .put(PutRequest {
                    key: key.into_bytes(),
                    value: value.into_bytes(),
                    lease: lease.unwrap_or(0),
                    prev_kv,
                    ..Default::default()
                })
                .await
                .map_err(status)?
                .into_inner();
            out.push_str("OK\n");
            if let Some(kv) = r.prev_kv {
                out.push_str(&format!("{}\n{}\n", text(&kv.key), text(&kv.value)));
            }
        }
        KvOp::Get { key, prefix, from_key, limit, rev, keys_only, consistency } => {
            let range_end = if prefix {
                prefix_end(key.as_bytes())
            } else if from_key {
                vec![0]
            } else {
                Vec::new()
            };
            let r = client
                .range(RangeRequest {
                    key: key.into_bytes(),
                    range_end,
                    limit,
                    revision: rev,
                    keys_only,
                    serializable: matches!(consistency, Consistency::S),
                    ..Default::default()
                })
                .await
                .map_err(status)?
                .into_inner();
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
            let range_end = if prefix { prefix_end(key.as_bytes()) } else { Vec::new() };
            let r = client
                .delete_range(DeleteRangeRequest { key: key.into_bytes(), range_end, prev_kv })
                .await
                .map_err(status)?
                .into_inner();
            out.push_str(&format!("{}\n", r.deleted));
            for kv in r.prev_kvs {
                out.push_str(&format!("{}\n{}\n", text(&kv.key), text(&kv.value)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"foo"), b"fop".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn lease_ids_are_hexadecimal() {
        assert_eq!(parse_lease("694d77aa9e38260f"), Ok(0x694d77aa9e38260f));
        assert_eq!(parse_lease("0x10"), Ok(16));
        assert!(parse_lease("zz").is_err());
    }
}
