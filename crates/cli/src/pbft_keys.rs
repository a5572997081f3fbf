//! `synod pbft-keys --nodes 4 --out DIR`: writes a fresh set of PBFT key
//! files, `DIR/n<id>.keys` for node ids 1..=N (each secret to its node:
//! hand each file to its node only, and point its `pbft_keys` at it).
//! Existing files are never overwritten.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `synod pbft-keys`.
#[derive(Args, Debug)]
pub struct PbftKeysArgs {
    /// Number of replicas (n = 3f+1: 4, 7, 10, ...); node ids are 1..=N.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(4..=64))]
    pub nodes: u16,
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
    let files = synod_node::pbft_keys::generate(&ids);
    let paths: Vec<PathBuf> =
        files.iter().map(|f| args.out.join(format!("n{}.keys", f.node_id))).collect();
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        eprintln!("synod pbft-keys: {} exists; not overwriting a key set", p.display());
        return ExitCode::from(1);
    }
    for (f, p) in files.iter().zip(&paths) {
        if let Err(e) = f.write_new(p) {
            eprintln!("synod pbft-keys: {e}");
            return ExitCode::from(1);
        }
        println!("{}", p.display());
    }
    ExitCode::SUCCESS
}
