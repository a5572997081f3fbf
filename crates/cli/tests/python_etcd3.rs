//! The Python `etcd3` client (PyPI, unchanged) against a real 3-process Synod
//! cluster: `tests/python/etcd3_compat.py` exercises put / get / range /
//! delete / txn / compaction / watch / lease / lock / members / status through
//! the library's API. Skips with a message when no Python with `etcd3` is
//! found (`scripts/install-test-deps` makes `.venv-test/` with it; or set
//! `SYNOD_TEST_PYTHON` to an interpreter that has it).
//!
//! Loopback only; the script is killed after `SCRIPT_WAIT`, the cluster when
//! the test ends.

mod common;

use common::{Cluster, NODES};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on the whole Python run (it takes a few seconds).
const SCRIPT_WAIT: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An interpreter that can `import etcd3`, or why there is none.
fn python_with_etcd3() -> Result<PathBuf, String> {
    let python = match std::env::var_os("SYNOD_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => repo().join(".venv-test/bin/python"),
    };
    if !python.exists() {
        return Err(format!("{} does not exist", python.display()));
    }
    let probe = Command::new(&python)
        .args(["-c", "import etcd3"])
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !probe.status.success() {
        return Err(format!(
            "{} cannot import etcd3: {}",
            python.display(),
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    Ok(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_etcd3_client_works_unchanged() {
    let python = match python_with_etcd3() {
        Ok(p) => p,
        Err(why) => {
            eprintln!(
                "SKIPPED: the Python etcd3 client is not installed ({why}); \
                 run scripts/install-test-deps"
            );
            return;
        }
    };
    let cluster = Cluster::start();
    let leader = cluster.leader().await;
    // Two followers: the script's writes are forwarded to the leader, and its
    // second client reads and watches on another replica.
    let endpoints: Vec<String> =
        (1..NODES).map(|k| cluster.endpoint((leader + k) % NODES)).collect();
    let script = repo().join("tests/python/etcd3_compat.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .args(&endpoints)
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .env("ETCD3_COMPAT_TIMEOUT_S", SCRIPT_WAIT.as_secs().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the python script");
    let deadline = Instant::now() + SCRIPT_WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the script") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = child.wait_with_output().expect("script output");
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let status = status.unwrap_or_else(|| panic!("the script hung past {SCRIPT_WAIT:?}:\n{text}"));
    assert!(status.success(), "python etcd3 checks failed:\n{text}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(" passed, 0 failed"), "{text}");
}
