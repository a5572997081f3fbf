//! The Rust `etcd-client` crate (crates.io, unchanged) against a real
//! 3-process Synod cluster: `tests/rust-etcd-client/` is a standalone cargo
//! project (outside the workspace, with its own lockfile) whose program calls
//! the library for put/get/ranges/revisions, delete, txn, compaction,
//! watches, leases, the server-side Lock and Election services, member list,
//! status, HashKV and Defragment, each step checking its result.
//!
//! etcd-client's build script needs `protoc`: it gets the one crates/etcdpb
//! builds with ([`synod_etcdpb::PROTOC`], from the `protoc-bin-vendored`
//! crate), so nothing needs installing. The project builds in
//! `<target dir>/rust-etcd-client`, which persists, so only the first run
//! compiles etcd-client and its dependencies (minutes on 2 cores) and later
//! runs are incremental. The crates are fetched with `cargo fetch --locked`;
//! if that fails (no network and nothing cached) the test is SKIPPED with a
//! message. A compile error of the program itself fails the test.

mod common;

use common::{Cluster, NODES};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Bound on fetching the project's crates.
const FETCH_WAIT: Duration = Duration::from_secs(300);
/// Bound on building it (a cold build on 2 busy cores takes several minutes).
const BUILD_WAIT: Duration = Duration::from_secs(1500);
/// Bound on the program's run (it takes a few seconds).
const PROGRAM_WAIT: Duration = Duration::from_secs(180);

fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/rust-etcd-client")
}

/// `<the target dir of this build>/rust-etcd-client`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SYNOD_RUST_ETCD_CLIENT_TARGET") {
        return PathBuf::from(dir);
    }
    // CARGO_TARGET_TMPDIR is <target dir>/tmp.
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("..").join("rust-etcd-client")
}

/// Runs `cmd` to completion within `wait`; `None` if it overran (killed).
fn run_bounded(mut cmd: Command, wait: Duration) -> Option<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    // Drain the pipes while waiting, so a chatty build cannot block on them.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let deadline = Instant::now() + wait;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    status.map(|status| Output { status, stdout, stderr })
}

fn cargo(args: &[&str]) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args)
        .arg("--manifest-path")
        .arg(project().join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir())
        .env("PROTOC", synod_etcdpb::PROTOC);
    cmd
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Builds the program; `Err` (a reason to skip) when its crates cannot be
/// fetched; panics when it does not compile.
fn build() -> Result<PathBuf, String> {
    // Online first; if that fails, what is cached may still be enough.
    let fetched = |extra: &[&str]| {
        let args: Vec<&str> = ["fetch", "--locked"].iter().chain(extra).copied().collect();
        match run_bounded(cargo(&args), FETCH_WAIT) {
            None => Err(format!("cargo fetch did not finish within {FETCH_WAIT:?}")),
            Some(o) if !o.status.success() => Err(format!(
                "cannot fetch etcd-client's crates: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Some(_) => Ok(()),
        }
    };
    if let Err(online) = fetched(&[]) {
        fetched(&["--offline"]).map_err(|_| online)?;
    }
    let started = Instant::now();
    let o = run_bounded(cargo(&["build", "--release", "--locked", "--offline"]), BUILD_WAIT)
        .unwrap_or_else(|| panic!("building {} took over {BUILD_WAIT:?}", project().display()));
    assert!(o.status.success(), "the etcd-client program does not build:\n{}", text(&o));
    eprintln!("built the etcd-client program in {:.1} s", started.elapsed().as_secs_f64());
    Ok(target_dir().join("release/synod-rust-etcd-client-compat"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_etcd_client_crate_works_unchanged() {
    let program = match tokio::task::spawn_blocking(build).await.expect("build task") {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED: the Rust etcd-client program could not be built ({why})");
            return;
        }
    };
    let cluster = Cluster::start();
    let leader = cluster.leader().await;
    // Two followers: writes are forwarded to the leader, and the second
    // client (reads, watches, the other lock / election contender) talks to
    // another replica.
    let endpoints: Vec<String> =
        (1..NODES).map(|k| cluster.endpoint((leader + k) % NODES)).collect();
    let mut cmd = Command::new(&program);
    cmd.args(&endpoints);
    let out = tokio::task::spawn_blocking(move || run_bounded(cmd, PROGRAM_WAIT))
        .await
        .expect("run task")
        .unwrap_or_else(|| panic!("the etcd-client program hung past {PROGRAM_WAIT:?}"));
    let t = text(&out);
    assert!(out.status.success(), "etcd-client checks failed:\n{t}\n{}", cluster.logs());
    assert!(String::from_utf8_lossy(&out.stdout).contains(" passed, 0 failed"), "{t}");
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}
