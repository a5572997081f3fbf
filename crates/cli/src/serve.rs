//! `synod serve --config node.toml`: runs one node until SIGTERM or Ctrl-C.
//! Exit codes: 0 after a clean shutdown, 1 on a runtime failure (a corrupt
//! data directory, a failed fsync, a port in use), 2 on a bad config (the
//! message names the field).

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use synod_node::{NodeConfig, NodeError};

/// Arguments of `synod serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The node's TOML config file (see the synod-node `config` docs).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// Logs go to stderr; `RUST_LOG` overrides the default `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Runs `synod serve`.
pub fn run(args: ServeArgs) -> ExitCode {
    let config = match NodeConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("synod serve: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("synod serve: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(synod_node::serve(config, synod_node::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ NodeError::Config(_)) => {
            eprintln!("synod serve: {}: {e}", args.config.display());
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("synod serve: {e}");
            ExitCode::from(1)
        }
    }
}
