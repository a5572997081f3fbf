//! What every etcd client command (`synod kv | lease | lock | elect | watch |
//! member`) shares: the `--endpoints` / `--timeout-ms` flags (and
//! `--pbft-client-key`, which `synod kv` uses on PBFT:
//! [`crate::pbft_client`]), connecting to the
//! first endpoint that answers, a runtime to run the command on, and how
//! errors become exit codes and messages.
//!
//! Exit codes: 0 success, 1 the cluster answered with an error or could not be
//! reached, 2 bad usage (clap's own parse errors are 2 as well).

use clap::Args;
use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Where the cluster is and how long to wait for it.
#[derive(Args, Debug, Clone)]
pub struct ClientOpts {
    /// Client endpoints (`host:port`, comma-separated); the first that
    /// answers is used. `synod up` puts node 1 on 127.0.0.1:2379.
    #[arg(long, global = true, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Timeout for connecting and for each unary request, in milliseconds
    /// (streams such as watch and keep-alive are not bounded by it).
    #[arg(long, global = true, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// On a PBFT cluster: this client's key file (`c<i>.keys`), with which
    /// `synod kv` signs its requests, sends them to every replica and takes
    /// a result only when f+1 replicas agree. Default: `synod-data/c1.keys`
    /// (what `synod up --protocol pbft` writes) if it exists.
    #[arg(long, global = true)]
    pub pbft_client_key: Option<std::path::PathBuf>,
}

impl ClientOpts {
    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

/// Why a client command failed, and so its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage (exit 2).
    Usage(String),
    /// The cluster answered with an error, or could not be reached (exit 1).
    Cluster(String),
    /// Exit with this code and no message (a command run under a lock
    /// failed with it, and has said why itself).
    Exit(u8),
}

impl From<tonic::Status> for Failure {
    fn from(e: tonic::Status) -> Failure {
        Failure::Cluster(format!("error: {}", e.message()))
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Cluster(e)
    }
}

/// Runs `command` to completion on a fresh single-threaded runtime; prints
/// what fails as `synod <name>: <message>` and maps it to an exit code.
/// Commands print their own output as they go (watch and keep-alive stream).
pub fn run_command<F>(name: &str, command: F) -> ExitCode
where
    F: Future<Output = Result<(), Failure>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("synod {name}: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(command);
    let _ = std::io::stdout().flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("synod {name}: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Cluster(e)) => {
            eprintln!("synod {name}: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Exit(code)) => ExitCode::from(code),
    }
}

/// Prints `text` to stdout at once (streaming commands print line by line,
/// so a reader sees each event as it happens). A closed stdout is ignored.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Connects to the first of `endpoints` that answers within `timeout`.
pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Channel, String> {
    let mut last = String::from("no endpoints given");
    for endpoint in endpoints {
        let url =
            if endpoint.contains("://") { endpoint.clone() } else { format!("http://{endpoint}") };
        let ep = match Endpoint::from_shared(url) {
            Ok(ep) => ep.connect_timeout(timeout),
            Err(e) => {
                last = format!("bad endpoint `{endpoint}`: {e}");
                continue;
            }
        };
        match ep.connect().await {
            Ok(channel) => return Ok(channel),
            Err(e) => last = format!("cannot connect to {endpoint}: {e}"),
        }
    }
    Err(last)
}

/// Bounds one unary request by `timeout` (the channel itself is not bounded,
/// so that streams on it may live as long as they need).
pub async fn within<T>(
    timeout: Duration,
    request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(status.into()),
        Err(_) => Err(Failure::Cluster(format!(
            "error: no answer within {} ms (context deadline exceeded)",
            timeout.as_millis()
        ))),
    }
}

/// Parses a lease id as etcdctl prints it (hexadecimal, `0x` optional).
pub fn parse_lease(s: &str) -> Result<i64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map(|id| id as i64)
        .map_err(|_| format!("`{s}` is not a lease id (hexadecimal)"))
}

/// The end of the range holding every key that starts with `key` (etcd's
/// convention: `"\0"` when no such end exists).
pub fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The `(key, range_end)` of a read or delete of `key`, as etcd's clientv3
/// builds them: with `prefix` every key starting with `key`, with
/// `from_key` every key from `key` on, else `key` alone. An empty key with
/// either means every key (`[0]`, `[0]`), since the server refuses an empty
/// key.
pub fn key_range(key: &[u8], prefix: bool, from_key: bool) -> (Vec<u8>, Vec<u8>) {
    if key.is_empty() && (prefix || from_key) {
        return (vec![0], vec![0]);
    }
    let range_end = if prefix {
        prefix_end(key)
    } else if from_key {
        vec![0]
    } else {
        Vec::new()
    };
    (key.to_vec(), range_end)
}

/// Bytes as text (lossy), as etcdctl's simple output prints keys and values.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
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
    fn an_empty_prefix_means_every_key_as_in_clientv3() {
        // Regression: `synod kv get "" --prefix` (the README's quick start)
        // sent an empty key, which the server refuses.
        assert_eq!(key_range(b"", true, false), (vec![0], vec![0]));
        assert_eq!(key_range(b"", false, true), (vec![0], vec![0]));
        assert_eq!(key_range(b"foo", true, false), (b"foo".to_vec(), b"fop".to_vec()));
        assert_eq!(key_range(b"foo", false, true), (b"foo".to_vec(), vec![0]));
        assert_eq!(key_range(b"foo", false, false), (b"foo".to_vec(), Vec::new()));
    }

    #[test]
    fn lease_ids_are_hexadecimal() {
        assert_eq!(parse_lease("694d77aa9e38260f"), Ok(0x694d77aa9e38260f));
        assert_eq!(parse_lease("0x10"), Ok(16));
        // Ids with the top bit set print as 16 hex digits; they round-trip.
        assert_eq!(parse_lease("ffffffffffffffff"), Ok(-1));
        assert!(parse_lease("zz").is_err());
        assert!(parse_lease("").is_err());
    }

    #[test]
    fn failures_carry_etcd_messages() {
        let f: Failure = tonic::Status::not_found("etcdserver: requested lease not found").into();
        match f {
            Failure::Cluster(m) => assert_eq!(m, "error: etcdserver: requested lease not found"),
            other => panic!("a cluster error, not {other:?}"),
        }
    }
}
