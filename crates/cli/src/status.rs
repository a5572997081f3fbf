//! `synod status --endpoints a,b,c`: asks each node for its status (etcd's
//! `Maintenance.Status`) and prints one line per node: id, role, term,
//! commit and applied index, leader, store revision. Exit code 1 if any
//! endpoint did not answer.

use clap::Args;
use std::process::ExitCode;
use std::time::Duration;
use synod_etcdpb::etcdserverpb::StatusRequest;
use synod_etcdpb::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::Endpoint;

/// Arguments of `synod status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Client endpoints (`host:port`, comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// How long to wait for each node.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
}

/// One node's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The endpoint asked.
    pub endpoint: String,
    /// The member id.
    pub id: u64,
    /// `leader`, `follower` or `no leader`.
    pub role: &'static str,
    /// Term (ballot, view).
    pub term: u64,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// The leader's id (0: none known).
    pub leader: u64,
    /// The store revision.
    pub revision: i64,
}

/// Asks `endpoint` for its status.
pub async fn query(endpoint: &str, timeout: Duration) -> Result<Row, String> {
    let url =
        if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") };
    let channel = Endpoint::from_shared(url)
        .map_err(|e| format!("bad endpoint: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let s = MaintenanceClient::new(channel)
        .status(StatusRequest {})
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    let header = s.header.unwrap_or_default();
    let role = match s.leader {
        0 => "no leader",
        l if l == header.member_id => "leader",
        _ => "follower",
    };
    Ok(Row {
        endpoint: endpoint.to_string(),
        id: header.member_id,
        role,
        term: s.raft_term,
        commit_index: s.raft_index,
        applied_index: s.raft_applied_index,
        leader: s.leader,
        revision: header.revision,
    })
}

/// Runs `synod status`.
pub fn run(args: StatusArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("synod status: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut failed = false;
    println!(
        "{:<22} {:>4} {:<10} {:>6} {:>10} {:>10} {:>6} {:>9}",
        "ENDPOINT", "ID", "ROLE", "TERM", "COMMIT", "APPLIED", "LEADER", "REVISION"
    );
    for endpoint in &args.endpoints {
        match runtime.block_on(query(endpoint, timeout)) {
            Ok(r) => println!(
                "{:<22} {:>4} {:<10} {:>6} {:>10} {:>10} {:>6} {:>9}",
                r.endpoint,
                r.id,
                r.role,
                r.term,
                r.commit_index,
                r.applied_index,
                r.leader,
                r.revision
            ),
            Err(e) => {
                failed = true;
                println!("{endpoint:<22} unreachable: {e}");
            }
        }
    }
    if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
}
