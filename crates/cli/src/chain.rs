//! `synod chain sim`: runs the proof-of-work, proof-of-stake or PBFT chain
//! simulator (`synod_chain::sim`) for one seed and prints its metrics and
//! checker verdict, or (`--compare pow,pos,pbft`) one table of them under
//! the same network. Exit codes as for `synod sim`: 0 ok, 1 a checker
//! violation, 2 bad usage.

use clap::{Args, Subcommand};
use std::io::Write;
use std::process::ExitCode;
use synod_chain::sim::pbft::{PbftReport, PbftSimConfig};
use synod_chain::sim::pos::{PosReport, PosScenario, PosSimConfig};
use synod_chain::sim::pow::{PowReport, PowSimConfig, PrivateChainAttack};

/// `synod chain ...`.
#[derive(Args, Debug)]
pub struct ChainArgs {
    #[command(subcommand)]
    command: ChainCommand,
}

#[derive(Subcommand, Debug)]
enum ChainCommand {
    /// Simulate a PoW, PoS or PBFT chain over a simulated network, with
    /// attacks and checkers.
    Sim(ChainSimArgs),
}

/// Flags of `synod chain sim`.
#[derive(Args, Debug)]
pub struct ChainSimArgs {
    /// `pow`, `pos` or `pbft`.
    #[arg(long, default_value = "pow")]
    consensus: String,
    /// Miners (PoW), nodes hosting the validators (PoS) or replicas (PBFT,
    /// tolerating f = (n-1)/3 faulty).
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// The seed (a run replays exactly).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop at this best-chain height (PoS: slots, rounded up to epochs).
    #[arg(long, conflicts_with = "time_ms")]
    blocks: Option<u64>,
    /// Stop at this virtual time.
    #[arg(long)]
    time_ms: Option<u64>,
    /// PoS validators (spread over the nodes).
    #[arg(long, default_value_t = 100)]
    validators: usize,
    /// One-way network latency.
    #[arg(long, default_value_t = 100)]
    latency_ms: u64,
    /// `private-chain` (PoW, with --hashpower), `double-vote` or
    /// `bad-proposer` (PoS: validator 0 signs blocks carrying a double
    /// spend), `partition` (all; PBFT: the primary of view 0 is cut off)
    /// or `crash` (all: the last node is down for the middle third of the
    /// run, then restarts from its disk and catches up).
    #[arg(long)]
    attack: Option<String>,
    /// The private-chain attacker's share of hash power.
    #[arg(long, default_value_t = 0.51)]
    hashpower: f64,
    /// Confirmations the merchant waits for (private-chain attack) and the
    /// depth at which a PoW block counts as final.
    #[arg(long, default_value_t = 6)]
    confirmations: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Run each consensus of a list (`pow,pos,pbft`) under the same network
    /// and print one table.
    #[arg(long, value_name = "LIST", conflicts_with = "attack")]
    compare: Option<String>,
}

const EXIT_VIOLATION: u8 = 1;
const EXIT_USAGE: u8 = 2;
/// Slots per epoch and slot length of the PoS simulation.
const SLOTS_PER_EPOCH: u64 = 32;
const SLOT_MS: u64 = 12_000;

/// Runs `synod chain`.
pub fn run(args: ChainArgs) -> ExitCode {
    match args.command {
        ChainCommand::Sim(a) => match sim(&a) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("synod chain sim: error: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
    }
}

enum Report {
    Pow(PowReport),
    Pos(PosReport),
    Pbft(PbftReport),
}

impl Report {
    fn violations(&self) -> &[String] {
        match self {
            Report::Pow(r) => &r.violations,
            Report::Pos(r) => &r.violations,
            Report::Pbft(r) => &r.violations,
        }
    }
}

fn sim(a: &ChainSimArgs) -> Result<ExitCode, String> {
    if a.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    if let Some(list) = &a.compare {
        let kinds: Vec<&str> = list.split(',').map(str::trim).collect();
        if kinds.is_empty() || kinds.iter().any(|k| !matches!(*k, "pow" | "pos" | "pbft")) {
            return Err(format!("--compare {list}: expected a list of pow, pos, pbft"));
        }
        let mut rows = Vec::new();
        for k in kinds {
            let r = run_one(k, a)?;
            rows.push((k, r));
        }
        let out = if a.json { compare_json(&rows) } else { compare_table(a, &rows) };
        let _ = std::io::stdout().lock().write_all(out.as_bytes());
        let bad = rows.iter().any(|(_, r)| !r.violations().is_empty());
        return Ok(if bad { ExitCode::from(EXIT_VIOLATION) } else { ExitCode::SUCCESS });
    }
    let r = run_one(&a.consensus, a)?;
    let out = match (&r, a.json) {
        (Report::Pow(p), true) => json_line("pow", p),
        (Report::Pos(p), true) => json_line("pos", p),
        (Report::Pbft(p), true) => json_line("pbft", p),
        (Report::Pow(p), false) => pow_text(a, p),
        (Report::Pos(p), false) => pos_text(a, p),
        (Report::Pbft(p), false) => pbft_text(a, p),
    };
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(if r.violations().is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_VIOLATION) })
}

fn run_one(kind: &str, a: &ChainSimArgs) -> Result<Report, String> {
    match kind {
        "pow" => Ok(Report::Pow(synod_chain::sim::pow::run(&pow_config(a)?))),
        "pos" => Ok(Report::Pos(synod_chain::sim::pos::run(&pos_config(a)?))),
        "pbft" => Ok(Report::Pbft(synod_chain::sim::pbft::run(&pbft_config(a)?))),
        other => Err(format!("--consensus {other}: expected pow, pos or pbft")),
    }
}

fn pow_config(a: &ChainSimArgs) -> Result<PowSimConfig, String> {
    let mut c = PowSimConfig {
        nodes: a.nodes,
        seed: a.seed,
        latency_ms: a.latency_ms,
        confirmations: a.confirmations,
        ..PowSimConfig::default()
    };
    match (a.blocks, a.time_ms) {
        (Some(b), _) => c.blocks = b,
        (None, Some(t)) => {
            c.blocks = u64::MAX;
            c.max_time_ms = t;
        }
        (None, None) => c.blocks = 200,
    }
    match a.attack.as_deref() {
        None => {}
        Some("private-chain") => {
            if !(0.0..1.0).contains(&a.hashpower) {
                return Err(format!("--hashpower {}: expected a share in [0, 1)", a.hashpower));
            }
            c.attack =
                Some(PrivateChainAttack { hashpower: a.hashpower, confirmations: a.confirmations });
        }
        Some("partition") => {
            // The middle third of the run, in expected time.
            let span = c.max_time_ms.min(c.blocks.saturating_mul(10_000));
            c.partition_ms = Some((span / 3, 2 * span / 3));
        }
        Some("crash") => {
            let span = c.max_time_ms.min(c.blocks.saturating_mul(10_000));
            c.crash_ms = Some((a.nodes - 1, span / 3, 2 * span / 3));
        }
        Some(other) => {
            return Err(format!("--attack {other}: PoW knows private-chain, partition and crash"));
        }
    }
    Ok(c)
}

fn pos_config(a: &ChainSimArgs) -> Result<PosSimConfig, String> {
    if a.validators < a.nodes {
        return Err("--validators must be at least --nodes".into());
    }
    let epochs = match (a.blocks, a.time_ms) {
        (Some(b), _) => b.div_ceil(SLOTS_PER_EPOCH),
        (None, Some(t)) => t / (SLOTS_PER_EPOCH * SLOT_MS),
        (None, None) => 8,
    }
    .max(1);
    let scenario = match a.attack.as_deref() {
        None => PosScenario::Healthy,
        Some("double-vote") => PosScenario::DoubleVote,
        Some("bad-proposer") => PosScenario::BadProposer,
        Some("crash") => PosScenario::Crash { start_epoch: epochs / 3, end_epoch: 2 * epochs / 3 },
        Some("partition") => {
            PosScenario::Partition { start_epoch: epochs / 3, end_epoch: 2 * epochs / 3 }
        }
        Some(other) => {
            return Err(format!(
                "--attack {other}: PoS knows double-vote, bad-proposer, partition and crash"
            ));
        }
    };
    Ok(PosSimConfig {
        nodes: a.nodes,
        validators: a.validators,
        seed: a.seed,
        epochs,
        slot_ms: SLOT_MS,
        latency_ms: a.latency_ms,
        scenario,
        ..PosSimConfig::default()
    })
}

fn pbft_config(a: &ChainSimArgs) -> Result<PbftSimConfig, String> {
    if a.nodes > 64 {
        return Err("--nodes: PBFT runs at most 64 replicas".into());
    }
    let mut c = PbftSimConfig {
        nodes: a.nodes,
        seed: a.seed,
        latency_ms: a.latency_ms,
        ..PbftSimConfig::default()
    };
    match (a.blocks, a.time_ms) {
        (Some(b), _) => c.blocks = b,
        (None, Some(t)) => {
            c.blocks = u64::MAX;
            c.max_time_ms = t;
        }
        (None, None) => c.blocks = 200,
    }
    match a.attack.as_deref() {
        None => {}
        Some("partition") => {
            // The primary of view 0, cut off for the middle third of the
            // run (in expected time: about one block per transfer).
            let span = c.max_time_ms.min(c.blocks.saturating_mul(1_000));
            c.partition = Some((vec![0], span / 3, 2 * span / 3));
        }
        Some("crash") => {
            let span = c.max_time_ms.min(c.blocks.saturating_mul(1_000));
            c.crash_ms = Some((a.nodes - 1, span / 3, 2 * span / 3));
        }
        Some(other) => return Err(format!("--attack {other}: PBFT knows partition and crash")),
    }
    Ok(c)
}

fn json_line<T: serde::Serialize>(kind: &str, r: &T) -> String {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["consensus"] = serde_json::Value::from(kind);
    format!("{v}\n")
}

fn verdict(v: &[String], what: &str) -> String {
    if v.is_empty() {
        format!("checks: passed ({what})\n")
    } else {
        let mut s = format!("checks: FAILED, {} violation(s)\n", v.len());
        for x in v.iter().take(10) {
            s.push_str(&format!("  {x}\n"));
        }
        s
    }
}

fn depths(d: &std::collections::BTreeMap<u64, u64>) -> String {
    if d.is_empty() {
        return "none".into();
    }
    d.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(" ")
}

fn pow_text(a: &ChainSimArgs, r: &PowReport) -> String {
    let mut s = format!(
        "synod chain sim: pow with {} miners, seed {}{}\n",
        a.nodes,
        a.seed,
        a.attack.as_ref().map(|x| format!(", attack {x}")).unwrap_or_default()
    );
    s.push_str(&format!(
        "height {} in {:.0} s virtual: {:.2} blocks/min, {} mined, stale rate {:.2}%\n",
        r.height,
        r.sim_time_ms as f64 / 1000.0,
        r.blocks_per_min,
        r.blocks_mined,
        100.0 * r.stale_rate
    ));
    s.push_str(&format!("reorg depths (depth:count): {}\n", depths(&r.reorg_depths)));
    s.push_str(&format!(
        "finality ({} deep): mean {:.1} s after submission; {:.2} tx/s final\n",
        a.confirmations,
        r.finality_ms_mean / 1000.0,
        r.tx_per_sec
    ));
    s.push_str(&format!(
        "messages: {} ({:.1} per block), {} bytes; real hashes {}\n",
        r.messages, r.messages_per_block, r.bytes, r.hashes
    ));
    if let Some(ok) = r.attack_succeeded {
        s.push_str(&format!(
            "attack: {} (hash power {}, merchant waited {} blocks){}\n",
            if ok { "SUCCEEDED, the honest chain was reorganised" } else { "failed" },
            a.hashpower,
            a.confirmations,
            if ok { format!(", reorg depth {}", r.attack_reorg_depth) } else { String::new() }
        ));
    }
    s.push_str(&verdict(
        &r.violations,
        "every honest chain valid, no double spend on any best chain",
    ));
    s
}

fn pos_text(a: &ChainSimArgs, r: &PosReport) -> String {
    let mut s = format!(
        "synod chain sim: pos with {} nodes, {} validators, seed {}{}\n",
        a.nodes,
        a.validators,
        a.seed,
        a.attack.as_ref().map(|x| format!(", attack {x}")).unwrap_or_default()
    );
    s.push_str(&format!(
        "{} canonical blocks in {:.0} s virtual: {:.2} blocks/min, {} proposed, stale rate {:.2}%\n",
        r.canonical_blocks,
        r.sim_time_ms as f64 / 1000.0,
        r.blocks_per_min,
        r.blocks_proposed,
        100.0 * r.stale_rate
    ));
    s.push_str(&format!("head reorg depths (depth:count): {}\n", depths(&r.reorg_depths)));
    s.push_str(&format!(
        "finalized epoch {} (by node: {:?}); finality mean {:.1} s after submission ({:.1} s after the slot); {:.2} tx/s final\n",
        r.finalized_epoch,
        r.finalized_epoch_by_node,
        r.finality_ms_mean / 1000.0,
        r.block_finality_ms_mean / 1000.0,
        r.tx_per_sec
    ));
    s.push_str(&format!(
        "transfers finalized {}, double spends submitted {}; finalized ledger by node: {}\n",
        r.txs_finalized,
        r.double_spends_submitted,
        r.finalized_ledger_by_node.join(" ")
    ));
    if a.attack.as_deref() == Some("bad-proposer") {
        s.push_str(&format!(
            "bad blocks (double spends) proposed {}, refusals over all nodes {}\n",
            r.bad_blocks_proposed, r.bad_blocks_refused
        ));
    }
    if a.attack.as_deref() == Some("partition") {
        s.push_str(&format!(
            "finalized epoch reached while partitioned, by node: {:?}\n",
            r.finalized_epoch_during_partition
        ));
    }
    s.push_str(&format!(
        "messages: {} ({:.1} per block), {} bytes; slashed: {:?}\n",
        r.messages, r.messages_per_block, r.bytes, r.slashed
    ));
    s.push_str(&verdict(
        &r.violations,
        "finality never reverted, no conflicting finalized checkpoints, every chain's transfers valid, equal finalized ledgers",
    ));
    s
}

fn pbft_text(a: &ChainSimArgs, r: &PbftReport) -> String {
    let mut s = format!(
        "synod chain sim: pbft with {} replicas (f = {}), seed {}{}\n",
        a.nodes,
        (a.nodes - 1) / 3,
        a.seed,
        a.attack.as_ref().map(|x| format!(", attack {x}")).unwrap_or_default()
    );
    s.push_str(&format!(
        "height {} in {:.0} s virtual: {:.2} blocks/min, stale rate 0.00% (no forks); heights by replica {:?}; max view {}\n",
        r.height,
        r.sim_time_ms as f64 / 1000.0,
        r.blocks_per_min,
        r.height_by_replica,
        r.max_view
    ));
    s.push_str(&format!(
        "finality (commit at f+1 replicas): mean {:.2} s after submission; {:.2} tx/s final\n",
        r.finality_ms_mean / 1000.0,
        r.tx_per_sec
    ));
    s.push_str(&format!(
        "double spends submitted {}, transfers dropped by the block rule {}\n",
        r.double_spends_submitted, r.txs_dropped
    ));
    s.push_str(&format!(
        "messages: {} ({:.1} per block), {} bytes\n",
        r.messages, r.messages_per_block, r.bytes
    ));
    s.push_str(&verdict(
        &r.violations,
        "all replicas' chains prefix-consistent at every append, every chain valid, no double spend",
    ));
    s
}

struct Row {
    blocks_per_min: f64,
    tx_per_sec: f64,
    finality_s: f64,
    stale_pct: f64,
    messages_per_block: f64,
    kb_per_block: f64,
    checks: &'static str,
}

fn row(r: &Report) -> Row {
    match r {
        Report::Pow(p) => Row {
            blocks_per_min: p.blocks_per_min,
            tx_per_sec: p.tx_per_sec,
            finality_s: p.finality_ms_mean / 1000.0,
            stale_pct: 100.0 * p.stale_rate,
            messages_per_block: p.messages_per_block,
            kb_per_block: p.bytes as f64 / 1024.0 / p.height.max(1) as f64,
            checks: if p.violations.is_empty() { "ok" } else { "FAIL" },
        },
        Report::Pos(p) => Row {
            blocks_per_min: p.blocks_per_min,
            tx_per_sec: p.tx_per_sec,
            finality_s: p.finality_ms_mean / 1000.0,
            stale_pct: 100.0 * p.stale_rate,
            messages_per_block: p.messages_per_block,
            kb_per_block: p.bytes as f64 / 1024.0 / p.canonical_blocks.max(1) as f64,
            checks: if p.violations.is_empty() { "ok" } else { "FAIL" },
        },
        Report::Pbft(p) => Row {
            blocks_per_min: p.blocks_per_min,
            tx_per_sec: p.tx_per_sec,
            finality_s: p.finality_ms_mean / 1000.0,
            stale_pct: 100.0 * p.stale_rate,
            messages_per_block: p.messages_per_block,
            kb_per_block: p.bytes as f64 / 1024.0 / p.height.max(1) as f64,
            checks: if p.violations.is_empty() { "ok" } else { "FAIL" },
        },
    }
}

fn compare_table(a: &ChainSimArgs, rows: &[(&str, Report)]) -> String {
    let mut s = format!(
        "synod chain sim --compare: {} nodes, latency {} ms, seed {} (PoW: 10 s target spacing, final at {} deep; PoS: 12 s slots, {} validators, final = FFG finalized; PBFT: a block per agreed batch, final = committed at f+1 replicas)\n",
        a.nodes, a.latency_ms, a.seed, a.confirmations, a.validators
    );
    s.push_str(&format!(
        "{:<9} {:>10} {:>8} {:>12} {:>8} {:>11} {:>9} {:>7}\n",
        "consensus",
        "blocks/min",
        "tx/s",
        "finality s",
        "stale %",
        "msgs/block",
        "KB/block",
        "checks"
    ));
    for (k, r) in rows {
        let x = row(r);
        s.push_str(&format!(
            "{:<9} {:>10.2} {:>8.2} {:>12.1} {:>8.2} {:>11.1} {:>9.1} {:>7}\n",
            k,
            x.blocks_per_min,
            x.tx_per_sec,
            x.finality_s,
            x.stale_pct,
            x.messages_per_block,
            x.kb_per_block,
            x.checks
        ));
    }
    s
}

fn compare_json(rows: &[(&str, Report)]) -> String {
    let v: Vec<serde_json::Value> = rows
        .iter()
        .map(|(k, r)| {
            let x = row(r);
            serde_json::json!({
                "consensus": k,
                "blocks_per_min": x.blocks_per_min,
                "tx_per_sec": x.tx_per_sec,
                "finality_s": x.finality_s,
                "stale_pct": x.stale_pct,
                "messages_per_block": x.messages_per_block,
                "kb_per_block": x.kb_per_block,
                "checks": x.checks,
            })
        })
        .collect();
    format!("{}\n", serde_json::Value::from(v))
}
