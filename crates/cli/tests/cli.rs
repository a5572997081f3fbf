//! The `synod` binary end to end: exit codes, summaries and error messages
//! as a user (or CI) sees them.

use std::process::{Command, Output};

fn synod(args: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(args.split_whitespace())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("the synod binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_passing_sweep_exits_0_and_prints_its_summary() {
    let o = synod("sim --protocol raft --nodes 5 --seeds 1..8 --faults all --clients 3 --ops 30");
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("8 of 8 seeds passed"), "{out}");
    for needle in ["committed ops:", "latency ms: p50", "messages/op:", "elections:", "events/s"] {
        assert!(out.contains(needle), "summary lacks `{needle}`:\n{out}");
    }
    assert!(out.contains("checks: ") && out.contains("linearizability"), "{out}");
}

#[test]
fn json_has_the_documented_fields() {
    let o = synod("sim --seeds 1..3 --faults net --clients 2 --ops 20 --json");
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["seeds"], 3);
    assert_eq!(v["passed"], 3);
    assert_eq!(v["violations"].as_array().map(Vec::len), Some(0));
    assert_eq!(v["committed_ops"], 3 * 2 * 20);
    assert!(v["messages_per_op"].as_f64().is_some_and(|m| m > 0.0));
    assert!(v["events_per_sec"].as_f64().is_some_and(|e| e > 0.0));
}

#[test]
fn an_injected_bug_exits_1_with_seed_property_events_and_replay() {
    let o =
        synod("sim --nodes 5 --seeds 1..50 --faults all --bug vote-twice-in-term --stop-on-first");
    assert_eq!(o.status.code(), Some(1), "stdout: {}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("FAIL seed "), "{out}");
    assert!(out.contains("one vote per term"), "{out}");
    assert!(out.contains("last events:"), "{out}");
    let replay = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("replay: "))
        .expect("a replay command")
        .to_string();
    let again = synod(replay.strip_prefix("synod ").expect("starts with synod"));
    assert_eq!(again.status.code(), Some(1), "the replay fails the same way");
    assert!(stdout(&again).contains("one vote per term"));
}

#[test]
fn bad_usage_exits_2_with_a_clear_message() {
    for (args, needle) in [
        ("sim --nodes 0", "--nodes must be at least 1"),
        ("sim --faults lots", "unknown fault profile `lots`"),
        ("sim --protocol zab", "unknown protocol `zab`"),
        ("sim --seeds 5..1", "empty"),
        ("sim --bug nope", "unknown raft bug"),
        ("sim --clients 0", "--clients"),
        ("sim --scenario no/such/file.toml", "no/such/file.toml"),
        ("sim --frobnicate", "--frobnicate"),
    ] {
        let o = synod(args);
        assert_eq!(o.status.code(), Some(2), "`{args}`: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "`{args}` should say `{needle}`: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "`{args}` panicked");
    }
}

#[test]
fn a_malformed_scenario_names_line_and_field() {
    let dir = std::env::temp_dir().join(format!("synod-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[[at]]\ntime_ms = 100\naction = \"crash\"\nnod = 2\n").expect("write");
    let o = synod(&format!("sim --scenario {}", path.display()));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.toml:4: field `nod`"), "{}", stderr(&o));
    std::fs::write(&path, "[[at]]\ntime_ms = 100\naction = \"explode\"\n").expect("write");
    let o = synod(&format!("sim --scenario {}", path.display()));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("explode"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shipped_scenario_passes() {
    let o = synod("sim --nodes 5 --scenario scenarios/leader-partition.toml --seeds 1..5");
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("scenario scenarios/leader-partition.toml"));
}

#[test]
fn compare_prints_one_table_and_json_for_every_protocol() {
    let o =
        synod("sim --compare raft,paxos --nodes 3 --seeds 1..2 --faults net --clients 2 --ops 10");
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    for needle in ["raft", "paxos", "messages / command", "message delays to commit", "2/2"] {
        assert!(out.contains(needle), "table lacks `{needle}`:\n{out}");
    }
    let j = synod("sim --compare raft,paxos --nodes 3 --seeds 1..1 --clients 2 --ops 10 --json");
    assert_eq!(j.status.code(), Some(0), "stderr: {}", stderr(&j));
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).expect("one JSON object");
    assert_eq!(v["protocols"][0]["protocol"], "raft");
    assert_eq!(v["protocols"][1]["protocol"], "paxos");
    assert_eq!(v["protocols"][1]["tolerates_f"], 1);
    let both = synod("sim --compare raft,paxos --protocol paxos");
    assert_eq!(both.status.code(), Some(2), "--compare conflicts with --protocol");
    let bad = synod("sim --compare raft,zab");
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("zab"), "{}", stderr(&bad));
}
