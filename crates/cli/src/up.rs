//! `synod up`: a local cluster for trying Synod out. It writes one config
//! per node (`n1.toml`, …) and a random cluster secret into the data
//! directory, starts one `synod serve` child process per node on 127.0.0.1
//! (logs in `n<i>.log`), prints the client endpoints and an etcdctl example,
//! and runs until Ctrl-C or SIGTERM, then stops the children gracefully
//! (SIGTERM, then SIGKILL after 10 s). Run again with the same data
//! directory, it reuses the configs found there and resumes from the data.
//!
//! With `--protocol pbft` (n = 3f+1 nodes: 4 or 7) it also writes each
//! node's PBFT key file (`n<i>.keys`: its own secrets, the pairwise keys it
//! shares with each other node, everyone's public keys) and two client key
//! files: `c1.keys`, which `synod kv` uses to talk PBFT itself (f+1
//! matching replies; `--pbft-client-key`, found by default in the default
//! data directory), and `c2.keys`, which `synod watch` uses by default (a
//! watch is a client session of its own).
//!
//! Ports: node `i` (from 1) listens for clients on `base + 10·(i−1)`, for
//! peers on the next port and for `/metrics` on the one after (2379, 2380,
//! 2381 for node 1 by default).

use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `synod up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Number of nodes (a new cluster only; an existing one keeps its size).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    pub nodes: u16,
    /// The consensus protocol.
    #[arg(long, default_value = "raft", value_parser = ["raft", "paxos", "pbft"])]
    pub protocol: String,
    /// Where configs, logs and each node's data live.
    #[arg(long, default_value = "./synod-data")]
    pub data_dir: PathBuf,
    /// The first node's client port.
    #[arg(long, default_value_t = 2379)]
    pub base_port: u16,
}

/// The ports of node `i` (from 1): client, peer, metrics.
pub fn ports(base_port: u16, i: u16) -> Option<(u16, u16, u16)> {
    let client = base_port.checked_add((i - 1).checked_mul(10)?)?;
    Some((client, client.checked_add(1)?, client.checked_add(2)?))
}

/// The config file of node `i` of an `n`-node cluster.
pub fn node_config(protocol: &str, n: u16, i: u16, base_port: u16) -> Option<String> {
    let mut s = format!(
        "# written by `synod up`\nnode_id = {i}\ncluster_name = \"synod-up\"\n\
         protocol = \"{protocol}\"\ndata_dir = \"n{i}\"\nsecret_file = \"secret\"\n"
    );
    if protocol == "pbft" {
        s.push_str(&format!("pbft_keys = \"n{i}.keys\"\n"));
    }
    let (_, _, metrics) = ports(base_port, i)?;
    s.push_str(&format!("metrics_addr = \"127.0.0.1:{metrics}\"\n"));
    for j in 1..=n {
        let (client, peer, _) = ports(base_port, j)?;
        s.push_str(&format!(
            "\n[[members]]\nid = {j}\npeer_addr = \"127.0.0.1:{peer}\"\n\
             client_addr = \"127.0.0.1:{client}\"\n"
        ));
    }
    Some(s)
}

fn config_path(dir: &Path, i: u16) -> PathBuf {
    dir.join(format!("n{i}.toml"))
}

/// The `protocol` an existing node config names.
fn configured_protocol(config: &str) -> Option<&str> {
    config.lines().find_map(|l| l.strip_prefix("protocol = \"")?.strip_suffix('"'))
}

/// Writes a new cluster's files, or finds an existing one's; returns the
/// number of nodes and the protocol they run.
fn prepare(args: &UpArgs) -> Result<(u16, String), String> {
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let existing = (1..=9).take_while(|&i| config_path(dir, i).exists()).count() as u16;
    if existing > 0 {
        if existing != args.nodes {
            eprintln!(
                "synod up: {} holds a {existing}-node cluster; resuming it (--nodes {} ignored)",
                dir.display(),
                args.nodes
            );
        }
        let first = std::fs::read_to_string(config_path(dir, 1)).unwrap_or_default();
        let protocol = configured_protocol(&first).unwrap_or("raft").to_string();
        if protocol != args.protocol {
            eprintln!(
                "synod up: {} holds a {protocol} cluster; resuming it (--protocol {} ignored)",
                dir.display(),
                args.protocol
            );
        }
        return Ok((existing, protocol));
    }
    if args.protocol == "pbft" {
        if args.nodes < 4 || !(args.nodes - 1).is_multiple_of(3) {
            return Err(format!("--nodes {}: PBFT needs n = 3f+1 nodes (4 or 7)", args.nodes));
        }
        let ids: Vec<u64> = (1..=u64::from(args.nodes)).collect();
        let (replicas, clients) = synod_node::pbft_keys::generate_with_clients(&ids, 2);
        for keys in replicas {
            keys.write_new(&dir.join(format!("n{}.keys", keys.node_id)))?;
        }
        for keys in clients {
            keys.write_new(&dir.join(format!("c{}.keys", keys.client_id)))?;
        }
    }
    let secret_path = dir.join("secret");
    if !secret_path.exists() {
        let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        write_private(&secret_path, &secret)?;
    }
    for i in 1..=args.nodes {
        let text = node_config(&args.protocol, args.nodes, i, args.base_port)
            .ok_or("--base-port is too high for that many nodes")?;
        std::fs::write(config_path(dir, i), text)
            .map_err(|e| format!("cannot write {}: {e}", config_path(dir, i).display()))?;
    }
    Ok((args.nodes, args.protocol.clone()))
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn spawn(exe: &Path, dir: &Path, i: u16) -> Result<Child, String> {
    let log_path = dir.join(format!("n{i}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let err = log.try_clone().map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(config_path(dir, i))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start node {i}: {e}"))
}

/// Sends SIGTERM to `child` (through `kill`, which every Linux has).
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn stop_all(children: &mut [(u16, Child)]) {
    for (_, c) in children.iter() {
        terminate(c);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, c) in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("synod up: node {i} did not stop in time; killing it");
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// Runs `synod up`.
pub fn run(args: UpArgs) -> ExitCode {
    let (n, protocol) = match prepare(&args) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("synod up: {e}");
            return ExitCode::from(2);
        }
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("synod up: cannot find the synod binary: {e}");
            return ExitCode::from(1);
        }
    };
    let dir = &args.data_dir;
    let mut children = Vec::new();
    for i in 1..=n {
        match spawn(&exe, dir, i) {
            Ok(c) => children.push((i, c)),
            Err(e) => {
                eprintln!("synod up: {e}");
                stop_all(&mut children);
                return ExitCode::from(1);
            }
        }
    }
    let endpoints: Vec<String> = (1..=n)
        .filter_map(|i| ports(args.base_port, i))
        .map(|(client, _, _)| format!("127.0.0.1:{client}"))
        .collect();
    let joined = endpoints.join(",");
    println!("synod: {n}-node {protocol} cluster running; data and logs in {}", dir.display());
    for (i, e) in endpoints.iter().enumerate() {
        println!("  node {}: {e}", i + 1);
    }
    println!(
        "try:\n  etcdctl --endpoints {joined} put foo bar\n  etcdctl --endpoints {joined} get foo"
    );
    println!("  synod status --endpoints {joined}");
    if protocol == "pbft" {
        println!(
            "  synod kv --endpoints {joined} --pbft-client-key {} put foo bar  \
             (f+1 matching replies)",
            dir.join("c1.keys").display()
        );
    }
    println!("press Ctrl-C to stop");

    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("synod up: cannot start the runtime: {e}");
            stop_all(&mut children);
            return ExitCode::from(1);
        }
    };
    let mut exited = Vec::new();
    runtime.block_on(async {
        let mut signal = Box::pin(synod_node::shutdown_signal());
        loop {
            tokio::select! {
                _ = &mut signal => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    for (i, c) in children.iter_mut() {
                        if !exited.contains(i) && let Ok(Some(status)) = c.try_wait() {
                            eprintln!(
                                "synod up: node {i} exited ({status}); see {}",
                                dir.join(format!("n{i}.log")).display()
                            );
                            exited.push(*i);
                        }
                    }
                    if exited.len() == children.len() {
                        eprintln!("synod up: every node exited");
                        break;
                    }
                }
            }
        }
    });
    println!("synod: stopping");
    stop_all(&mut children);
    if exited.len() == children.len() { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_configs_are_valid_and_agree_on_members() {
        for i in 1..=3 {
            let text = node_config("raft", 3, i, 2379).expect("ports fit");
            let c = synod_node::NodeConfig::parse(&text).expect("valid config");
            assert_eq!(c.node_id, u64::from(i));
            assert_eq!(c.members.len(), 3);
            assert_eq!(c.members[2].client_addr.port(), 2399);
            assert_eq!(c.metrics_addr.map(|a| a.port()), Some(2381 + 10 * (i - 1)));
        }
        assert_eq!(node_config("raft", 3, 3, 65530), None, "ports past 65535 are refused");
    }

    #[test]
    fn a_resumed_cluster_keeps_the_protocol_its_configs_name() {
        let paxos = node_config("paxos", 3, 1, 2379).expect("ports fit");
        let c = synod_node::NodeConfig::parse(&paxos).expect("valid config");
        assert_eq!(c.protocol, "paxos");
        assert_eq!(configured_protocol(&paxos), Some("paxos"));
        assert_eq!(configured_protocol("node_id = 1\n"), None);
    }

    #[test]
    fn a_pbft_cluster_gets_a_key_file_per_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = |nodes| UpArgs {
            nodes,
            protocol: "pbft".into(),
            data_dir: dir.path().to_path_buf(),
            base_port: 2379,
        };
        let err = prepare(&args(3)).expect_err("3 nodes");
        assert!(err.contains("3f+1"), "{err}");
        assert_eq!(prepare(&args(4)), Ok((4, "pbft".to_string())));
        for i in 1..=4 {
            let c = synod_node::NodeConfig::load(&config_path(dir.path(), i)).expect("valid");
            let keys = c.pbft_keys.expect("a key file");
            assert_eq!(keys, dir.path().join(format!("n{i}.keys")));
            let text = std::fs::read_to_string(&keys).expect("written");
            assert!(text.contains(&format!("\nnode_id = {i}\n")), "{text}");
        }
        for c in ["c1.keys", "c2.keys"] {
            let client =
                synod_node::pbft_keys::load_client(&dir.path().join(c)).expect("a client key file");
            assert_eq!(client.replicas.len(), 4);
        }
    }
}
