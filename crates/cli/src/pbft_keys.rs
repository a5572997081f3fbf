//! `synod pbft-keys --nodes 4 --clients 1 --out DIR`: writes a fresh set of
//! PBFT key files, `DIR/n<id>.keys` for node ids 1..=N (each secret to its
//! node: hand each file to its node only, and point its `pbft_keys` at it)
//! and `DIR/c<id>.keys` for client ids 1..=C (each secret to one client:
//! `synod kv --pbft-client-key DIR/c1.keys`; every node file lists the
//! clients' public keys). Existing files are never overwritten.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `synod pbft-keys`.
#[derive(Args, Debug)]
pub struct PbftKeysArgs {
    /// Number of replicas (n = 3f+1: 4, 7, 10, ...); node ids are 1..=N.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(4..=64))]
    pub nodes: u16,
    /// Number of clients with keys of their own (`synod kv` on PBFT needs
    /// one; give concurrent clients one each); client ids are 1..=C.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub clients: u16,
    /// Where to write the files.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

/// Runs `synod pbft-keys`.
pub fn run(args: PbftKeysArgs) -> ExitCode {
    if !(args.nodes - 1).is_multiple_of(3) {
        eprintln!("synod pbft-keys: --nodes {}: PBFT needs n = 3f+1 replicas", args.nodes);
        return ExitCode::from(2);
    }
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("synod pbft-keys: cannot create {}: {e}", args.out.display());
        return ExitCode::from(1);
    }
    let ids: Vec<u64> = (1..=u64::from(args.nodes)).collect();
    let (files, clients) =
        synod_node::pbft_keys::generate_with_clients(&ids, u64::from(args.clients));
    let paths: Vec<PathBuf> =
        files.iter().map(|f| args.out.join(format!("n{}.keys", f.node_id))).collect();
    let client_paths: Vec<PathBuf> =
        clients.iter().map(|c| args.out.join(format!("c{}.keys", c.client_id))).collect();
    if let Some(p) = paths.iter().chain(&client_paths).find(|p| p.exists()) {
        eprintln!("synod pbft-keys: {} exists; not overwriting a key set", p.display());
        return ExitCode::from(1);
    }
    let written = files
        .iter()
        .zip(&paths)
        .map(|(f, p)| f.write_new(p).map(|()| p))
        .chain(clients.iter().zip(&client_paths).map(|(c, p)| c.write_new(p).map(|()| p)));
    for w in written {
        match w {
            Ok(p) => println!("{}", p.display()),
            Err(e) => {
                eprintln!("synod pbft-keys: {e}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}
