//! `synod chain sim` end to end: exit codes, summaries, JSON and the
//! comparison table.

use std::process::{Command, Output};

fn synod(args: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(args.split_whitespace())
        .output()
        .expect("the synod binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn pow_sim_prints_its_metrics_and_passes() {
    let o = synod("chain sim --consensus pow --nodes 5 --seed 3 --blocks 60");
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    for needle in
        ["height 60", "blocks/min", "stale rate", "reorg depths", "tx/s", "checks: passed"]
    {
        assert!(out.contains(needle), "lacks `{needle}`:\n{out}");
    }
}

#[test]
fn a_majority_private_chain_attack_is_reported_as_succeeded() {
    let o = synod(
        "chain sim --consensus pow --nodes 5 --seed 1 --blocks 1500 --attack private-chain --hashpower 0.51 --confirmations 2 --json",
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["consensus"], "pow");
    assert_eq!(v["attack_succeeded"], true, "{v}");
    assert!(v["attack_reorg_depth"].as_u64().is_some_and(|d| d >= 2));
}

#[test]
fn pos_double_vote_slashes_and_passes() {
    let o = synod(
        "chain sim --consensus pos --nodes 4 --validators 32 --blocks 160 --attack double-vote --json",
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["slashed"], serde_json::json!([0]));
    assert!(v["finalized_epoch"].as_u64().is_some_and(|e| e >= 2), "{v}");
}

#[test]
fn pos_refuses_a_double_spending_proposer_and_finalizes_real_transfers() {
    let o = synod(
        "chain sim --consensus pos --nodes 4 --validators 32 --blocks 128 --attack bad-proposer --json",
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert!(v["bad_blocks_proposed"].as_u64().is_some_and(|b| b >= 1), "{v}");
    assert!(v["txs_finalized"].as_u64().is_some_and(|t| t > 100), "{v}");
    assert_eq!(v["violations"], serde_json::json!([]), "{v}");
    let o =
        synod("chain sim --consensus pos --nodes 4 --validators 32 --blocks 192 --attack crash");
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let text = stdout(&synod("chain sim --consensus pos --nodes 4 --validators 32 --blocks 96"));
    assert!(text.contains("transfers finalized") && text.contains("checks: passed"), "{text}");
}

#[test]
fn compare_prints_one_row_per_consensus() {
    let o = synod("chain sim --compare pow,pos,pbft --nodes 4 --validators 32 --time-ms 1200000");
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(out.contains("finality s") && out.contains("msgs/block"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("pow ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("pos ")), "{out}");
    let pbft = out.lines().find(|l| l.starts_with("pbft ")).unwrap_or_else(|| panic!("{out}"));
    // consensus, blocks/min, tx/s, finality s, ...: PBFT finalizes in about
    // a second, PoW and PoS in minutes.
    let finality: f64 = pbft.split_whitespace().nth(3).and_then(|x| x.parse().ok()).unwrap_or(-1.0);
    assert!((0.1..5.0).contains(&finality), "{pbft}");
    assert!(pbft.trim_end().ends_with("ok"), "{pbft}");
}

#[test]
fn pbft_sim_survives_a_partitioned_primary_with_agreeing_chains() {
    let o = synod(
        "chain sim --consensus pbft --nodes 4 --seed 2 --blocks 120 --attack partition --json",
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["consensus"], "pbft");
    assert_eq!(v["height"], 120, "{v}");
    assert!(
        v["max_view"].as_u64().is_some_and(|x| x >= 1),
        "a view change replaced the primary: {v}"
    );
    assert_eq!(v["violations"], serde_json::json!([]), "{v}");
    let text = stdout(&synod("chain sim --consensus pbft --nodes 4 --blocks 30"));
    assert!(text.contains("height 30") && text.contains("checks: passed"), "{text}");
    for consensus in ["pbft", "pow"] {
        let o = synod(&format!(
            "chain sim --consensus {consensus} --nodes 4 --blocks 60 --attack crash --json"
        ));
        assert_eq!(o.status.code(), Some(0), "{consensus}: {}", stdout(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
        assert_eq!(v["height"], 60, "{consensus}: {v}");
    }
}

#[test]
fn bad_usage_exits_2() {
    for args in [
        "chain sim --consensus raft",
        "chain sim --nodes 0",
        "chain sim --consensus pos --attack private-chain",
        "chain sim --attack private-chain --hashpower 1.5",
        "chain sim --compare pow,paxos",
        "chain sim --consensus pbft --attack double-vote",
        "chain sim --consensus pbft --nodes 65",
    ] {
        let o = synod(args);
        assert_eq!(o.status.code(), Some(2), "{args}: {}", stdout(&o));
    }
}
