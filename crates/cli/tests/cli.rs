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
    let o = synod(
        "sim --compare raft,paxos --compare-by f --nodes 3 --seeds 1..2 --faults net --clients 2 \
         --ops 10",
    );
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    for needle in ["raft", "paxos", "messages / command", "message delays to commit", "2/2"] {
        assert!(out.contains(needle), "table lacks `{needle}`:\n{out}");
    }
    assert!(!out.contains("same n"), "--compare-by f prints one table:\n{out}");
    let j = synod(
        "sim --compare raft,paxos --compare-by f --nodes 3 --seeds 1..1 --clients 2 --ops 10 --json",
    );
    assert_eq!(j.status.code(), Some(0), "stderr: {}", stderr(&j));
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).expect("one JSON object");
    let c = &v["comparisons"][0];
    assert_eq!(c["compare_by"], "f");
    assert_eq!(c["protocols"][0]["protocol"], "raft");
    assert_eq!(c["protocols"][1]["protocol"], "paxos");
    assert_eq!(c["protocols"][1]["tolerates_f"], 1);
    assert_eq!(v["comparisons"].as_array().map(Vec::len), Some(1));
    let both = synod("sim --compare raft,paxos --protocol paxos");
    assert_eq!(both.status.code(), Some(2), "--compare conflicts with --protocol");
}

fn protocol_json<'a>(c: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let all = c["protocols"].as_array().expect("protocols");
    all.iter().find(|p| p["protocol"] == name).unwrap_or_else(|| panic!("no {name} in {c}"))
}

/// The default `--compare-by both` for f = 1: Raft and Multi-Paxos at 3
/// beside PBFT at 4, then everyone at 4; PBFT's authentication costs CPU,
/// Raft's is zero; at the same n PBFT sends more messages per command.
#[test]
fn compare_with_pbft_matches_f_then_n_and_reports_authentication() {
    let o = synod("sim --compare raft,paxos,pbft --seeds 1..2 --clients 2 --ops 10 --json");
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["all_passed"], true);
    let [same_f, same_n] = [&v["comparisons"][0], &v["comparisons"][1]];
    assert_eq!((&same_f["compare_by"], &same_n["compare_by"]), (&"f".into(), &"n".into()));
    for (c, sizes) in [(same_f, [3, 3, 4]), (same_n, [4, 4, 4])] {
        for (name, n) in ["raft", "paxos", "pbft"].into_iter().zip(sizes) {
            let p = protocol_json(c, name);
            assert_eq!(p["nodes"], n, "{name} in {}", c["compare_by"]);
            assert_eq!(p["passed"], 2, "{name}");
        }
        let pbft = &protocol_json(c, "pbft")["authentication"];
        assert!(pbft["per_command"]["replica_cpu_us"].as_f64().is_some_and(|us| us > 0.0));
        assert!(pbft["macs_verified"].as_u64().is_some_and(|m| m > 0), "{pbft}");
        assert_eq!(pbft["shared_memo_hits"], 0, "every replica verifies: {pbft}");
        for crash in ["raft", "paxos"] {
            let a = &protocol_json(c, crash)["authentication"];
            assert_eq!(a["scheme"], "none");
            assert_eq!(a["replica_cpu_us"], 0.0);
            assert_eq!(a["macs_computed"], 0);
        }
    }
    let per_command = |name| protocol_json(same_n, name)["messages_per_command"].as_f64();
    let (raft, pbft) = (per_command("raft").expect("raft"), per_command("pbft").expect("pbft"));
    assert!(pbft > raft, "at n = 4 PBFT ({pbft}) sends more than Raft ({raft})");

    let text = synod("sim --compare raft,paxos,pbft --compare-by n --nodes 4 --clients 2 --ops 10");
    assert_eq!(text.status.code(), Some(0), "stderr: {}", stderr(&text));
    let out = stdout(&text);
    for needle in ["same n (4 servers each)", "pbft", "4 (f=1 byzantine)", "4 (f=1 crash)"] {
        assert!(out.contains(needle), "table lacks `{needle}`:\n{out}");
    }
    for needle in ["auth CPU us per cmd, replicas", "MAC+Ed25519", "none", "connect only"] {
        assert!(out.contains(needle), "table lacks `{needle}`:\n{out}");
    }
    let f2 = synod("sim --compare raft,pbft --compare-by f --nodes 5 --clients 2 --ops 10 --json");
    assert_eq!(f2.status.code(), Some(0), "stderr: {}", stderr(&f2));
    let v: serde_json::Value = serde_json::from_slice(&f2.stdout).expect("one JSON object");
    assert_eq!(protocol_json(&v["comparisons"][0], "pbft")["nodes"], 7);
    assert_eq!(protocol_json(&v["comparisons"][0], "raft")["nodes"], 5);
}

#[test]
fn bad_compare_input_exits_2_with_a_clear_message() {
    for (args, needle) in [
        (&["sim", "--compare", "raft,nosuch"][..], "unknown protocol `nosuch`"),
        (&["sim", "--compare", ""], "empty list"),
        (&["sim", "--compare", "pbft"], "at least two"),
        (&["sim", "--compare", "raft,raft"], "listed twice"),
        (&["sim", "--compare", "raft,pbft", "--compare-by", "g"], "expected f, n or both"),
        (&["sim", "--compare-by", "n"], "--compare"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_synod")).args(args).output().expect("runs");
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?} should say `{needle}`: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?} panicked");
    }
    let help = stdout(&synod("sim --help"));
    assert!(help.contains("--compare-by") && help.contains("same-n"), "{help}");
}
