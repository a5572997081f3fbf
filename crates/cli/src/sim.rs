//! `synod sim`: flags to [`SimOptions`], seeds to [`run_seeds`], the
//! verdict to an exit code and a summary (human text or one JSON object).

use crate::seeds::parse_seed_range;
use clap::Args;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use synod_sim::{FaultProfile, ProtocolKind, Scenario, SimOptions, Summary, run_seeds};

/// Flags of `synod sim`. The names match [`SimOptions::replay_command`], so
/// the command printed for a failing seed can be pasted back.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// The protocol to simulate.
    #[arg(long, default_value = "raft", value_parser = ProtocolKind::parse)]
    protocol: ProtocolKind,
    /// Replicas in the cluster [default: 5; with --compare: 3, the
    /// crash-tolerant size for f = 1].
    #[arg(long)]
    nodes: Option<usize>,
    /// One seed to run (replays bit for bit).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// A range of seeds, inclusive at both ends: `1..1000`.
    #[arg(long, value_parser = parse_seed_range)]
    seeds: Option<Range<u64>>,
    /// Random faults during the fault window: none, net, crash, snapshot or
    /// all; or a partial-connectivity schedule: quorum-loss,
    /// constrained-election or chained.
    #[arg(long, default_value = "none", value_parser = FaultProfile::parse)]
    faults: FaultProfile,
    /// Concurrent clients.
    #[arg(long, default_value_t = 5)]
    clients: usize,
    /// Operations per client.
    #[arg(long, default_value_t = 100)]
    ops: usize,
    /// A TOML fault timeline (at time T: crash, restart, partition, heal,
    /// set loss, pause, ...), run alongside the random faults.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Inject a deliberately broken behaviour by name (proves the checkers
    /// catch it), e.g. `commit-previous-term-by-count`, `vote-twice-in-term`,
    /// `pbft-skip-clock-check`.
    #[arg(long, value_name = "NAME")]
    bug: Option<String>,
    /// Hard limit of virtual time per seed, in milliseconds.
    #[arg(long)]
    max_time_ms: Option<u64>,
    /// How long random faults strike, in virtual milliseconds from the start.
    #[arg(long)]
    fault_window_ms: Option<u64>,
    /// Simulated events per seed before the run is stopped and reported as
    /// an `event budget` failure (default: 5,000,000 plus 2,000 per client
    /// operation).
    #[arg(long)]
    max_events: Option<u64>,
    /// Serve reads through the log instead of through ReadIndex barriers.
    #[arg(long)]
    reads_through_log: bool,
    /// PBFT: also require every correct replica to end in one view once
    /// the clients finished (a replica left alone in a higher view fails
    /// the seed as `liveness`).
    #[arg(long)]
    check_views_converge: bool,
    /// Raft: serve linearizable reads from the leader's lease (requires
    /// check-quorum; assumes bounded clock drift) instead of ReadIndex.
    #[arg(long)]
    lease_reads: bool,
    /// Raft: followers serve reads after asking the leader for a read index.
    #[arg(long)]
    follower_reads: bool,
    /// Raft: the leader writes its log in parallel with replicating it and
    /// counts itself toward a quorum only once its appends are durable (as
    /// `synod serve` runs it; thesis §10.2.1).
    #[arg(long)]
    leader_parallel_write: bool,
    /// Replicas an adversary controls (nodes 1..=N; PBFT only).
    #[arg(long, default_value_t = 0)]
    byzantine: usize,
    /// The adversary's strategy (`equivocate`, `forge`, `twins`, `random`,
    /// ...; `all` runs each and prints per-attack results).
    #[arg(long, value_name = "NAME")]
    attack: Option<String>,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    json: bool,
    /// OS threads to run seeds on (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Stop at the first failing seed instead of running them all.
    #[arg(long)]
    stop_on_first: bool,
    /// Run the same workload, faults and seeds on each protocol of a list
    /// (`raft,paxos,pbft`) and print comparison tables: messages and
    /// message delays per command, throughput, latency, elections, and
    /// PBFT's authentication work (MACs, signatures, and their CPU time,
    /// measured in the run with every replica verifying every signature;
    /// Raft and Multi-Paxos authenticate no message, their transport
    /// authenticates peers at connect only). Cluster sizes: see
    /// --compare-by.
    #[arg(long, value_name = "LIST", conflicts_with_all = ["protocol", "stop_on_first", "bug"])]
    compare: Option<String>,
    /// With --compare, how cluster sizes are matched: `f` (same faults
    /// tolerated: Raft and Multi-Paxos run --nodes servers, f = (nodes-1)/2
    /// crashes; PBFT runs 3f+1 for f Byzantine: 3, 3, 4 for f = 1), `n`
    /// (every protocol runs --nodes servers), or `both`: the same-f table,
    /// then a same-n table at PBFT's 3f+1 (4, 4, 4 for f = 1).
    #[arg(
        long,
        value_name = "f|n|both",
        default_value = "both",
        requires = "compare",
        value_parser = synod_sim::compare::CompareMode::parse
    )]
    compare_by: synod_sim::compare::CompareMode,
}

/// Exit code for a failed check.
const EXIT_VIOLATION: u8 = 1;
/// Exit code for bad usage.
const EXIT_USAGE: u8 = 2;

/// Runs `synod sim` and returns its exit code.
pub fn run(args: SimArgs) -> ExitCode {
    let (opts, seeds) = match options(&args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("synod sim: error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    if let Some(list) = &args.compare {
        let kinds = match synod_sim::compare::parse_list(list) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("synod sim: error: --compare {list}: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let runs: Vec<_> = synod_sim::compare::plan(args.compare_by, opts.nodes)
            .into_iter()
            .map(|(by, nodes)| {
                let o = SimOptions { nodes, ..opts.clone() };
                synod_sim::compare::compare(&o, &kinds, seeds.clone(), threads, by)
            })
            .collect();
        let text = if args.json {
            format!("{}\n", synod_sim::compare::to_json_all(&runs))
        } else {
            synod_sim::compare::render_all(&runs)
        };
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        let passed = runs.iter().all(synod_sim::compare::Comparison::all_passed);
        return if passed { ExitCode::SUCCESS } else { ExitCode::from(EXIT_VIOLATION) };
    }
    let run_one = |opts: &SimOptions| {
        if args.stop_on_first {
            run_until_first_failure(opts, seeds.clone(), threads)
        } else {
            run_seeds(opts, seeds.clone(), threads)
        }
    };
    let (summary, per_attack) = if opts.attack.as_deref() == Some(synod_sim::byzantine::ALL) {
        run_every_attack(&opts, run_one, args.stop_on_first)
    } else {
        (run_one(&opts), String::new())
    };
    let text = if args.json {
        format!("{}\n", summary.to_json())
    } else {
        let seed_count = seeds.end.saturating_sub(seeds.start);
        format!("{}{per_attack}{}", header(&opts, seed_count), summary.render())
    };
    // A closed stdout (`| head`) is not an error worth a panic; the exit
    // code still carries the verdict.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    if summary.all_passed() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_VIOLATION) }
}

/// Builds and validates the options; every error names the flag or file at
/// fault.
fn options(args: &SimArgs) -> Result<(SimOptions, Range<u64>), String> {
    let mut opts = SimOptions {
        protocol: args.protocol,
        nodes: args.nodes.unwrap_or(if args.compare.is_some() { 3 } else { 5 }),
        faults: args.faults,
        clients: args.clients,
        ops_per_client: args.ops,
        bug: args.bug.clone(),
        reads_through_log: args.reads_through_log,
        check_views_converge: args.check_views_converge,
        lease_reads: args.lease_reads,
        follower_reads: args.follower_reads,
        leader_parallel_write: args.leader_parallel_write,
        byzantine: args.byzantine,
        attack: args.attack.clone(),
        // Only scenario tests read the per-node applied log.
        keep_applied_log: false,
        ..SimOptions::default()
    };
    if let Some(ms) = args.max_time_ms {
        opts.max_time_ms = ms;
    }
    if let Some(ms) = args.fault_window_ms {
        opts.fault_window_ms = ms;
    }
    if let Some(n) = args.max_events {
        opts.max_events = n;
    }
    if let Some(path) = &args.scenario {
        opts.scenario = Some(Scenario::load(path).map_err(|e| e.to_string())?);
    }
    if let Some(bug) = &opts.bug {
        synod_sim::protocols::check_bug(opts.protocol, bug)?;
    }
    opts.validate()?;
    let seeds = match (args.seed, &args.seeds) {
        (Some(s), _) => s..s.checked_add(1).ok_or("--seed is too large")?,
        (None, Some(r)) => r.clone(),
        (None, None) => 1..2,
    };
    Ok((opts, seeds))
}

/// Runs `seeds` in chunks, stopping after the first chunk with a failure.
/// Seeds of that chunk beyond the failing one may have run too; only the
/// first failure is kept so that the report names the lowest failing seed.
fn run_until_first_failure(opts: &SimOptions, seeds: Range<u64>, threads: usize) -> Summary {
    let chunk = (threads as u64 * 4).max(1);
    let mut total: Option<Summary> = None;
    let mut start = seeds.start;
    while start < seeds.end {
        let end = start.saturating_add(chunk).min(seeds.end);
        let mut part = run_seeds(opts, start..end, threads);
        part.violations.truncate(1);
        let failed = !part.violations.is_empty();
        total = Some(match total {
            None => part,
            Some(mut t) => {
                t.seeds += part.seeds;
                t.passed += part.passed;
                t.violations.extend(part.violations);
                t.metrics.merge(&part.metrics);
                t.wall_secs += part.wall_secs;
                t
            }
        });
        if failed {
            break;
        }
        start = end;
    }
    total.unwrap_or_else(|| run_seeds(opts, seeds.start..seeds.start, threads))
}

/// `--attack all`: the seeds under each attack in turn; one summary of
/// them all and a line per attack.
fn run_every_attack(
    opts: &SimOptions,
    run_one: impl Fn(&SimOptions) -> Summary,
    stop_on_first: bool,
) -> (Summary, String) {
    let mut total: Option<Summary> = None;
    let mut lines = String::new();
    for name in synod_sim::byzantine::ATTACKS {
        let o = SimOptions { attack: Some((*name).to_string()), ..opts.clone() };
        let s = run_one(&o);
        lines.push_str(&format!(
            "attack {name:<17} {} of {} seeds passed ({:.1} s)\n",
            s.passed, s.seeds, s.wall_secs
        ));
        let failed = !s.all_passed();
        total = Some(match total {
            None => s,
            Some(mut t) => {
                t.seeds += s.seeds;
                t.passed += s.passed;
                t.violations.extend(s.violations);
                t.metrics.merge(&s.metrics);
                t.wall_secs += s.wall_secs;
                t
            }
        });
        if failed && stop_on_first {
            break;
        }
    }
    (total.expect("at least one attack"), lines)
}

/// One line saying what was run.
/// `seed_count` is the seeds asked for (each attack of `--attack all`
/// runs all of them).
fn header(opts: &SimOptions, seed_count: u64) -> String {
    let mut s = format!(
        "synod sim: {} with {} nodes, faults {}, {} clients x {} ops, {} seed(s)",
        opts.protocol.name(),
        opts.nodes,
        opts.faults.name(),
        opts.clients,
        opts.ops_per_client,
        seed_count
    );
    if let Some(sc) = &opts.scenario {
        s.push_str(&format!(", scenario {}", sc.source));
    }
    if let Some(b) = &opts.bug {
        s.push_str(&format!(", injected bug {b}"));
    }
    if let Some(a) = &opts.attack {
        s.push_str(&format!(", {} byzantine, attack {a}", opts.byzantine));
        if a == synod_sim::byzantine::ALL {
            s.push_str(&format!(" ({} attacks per seed)", synod_sim::byzantine::ATTACKS.len()));
        }
    }
    s.push_str(&format!("\nchecks: {}\n", synod_sim::protocols::checks(opts.protocol).join(", ")));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SimArgs,
    }

    fn parse(line: &str) -> Result<SimArgs, clap::Error> {
        Wrap::try_parse_from(std::iter::once("sim").chain(line.split_whitespace())).map(|w| w.args)
    }

    #[test]
    fn replay_command_parses_back_to_the_same_options() {
        let original = SimOptions {
            faults: FaultProfile::All,
            bug: Some("vote-twice-in-term".into()),
            reads_through_log: true,
            lease_reads: true,
            follower_reads: true,
            leader_parallel_write: true,
            max_time_ms: 90_000,
            fault_window_ms: 5_000,
            keep_applied_log: false,
            max_events: 123_456,
            check_views_converge: true,
            ..SimOptions::default()
        };
        let cmd = original.replay_command(42);
        let args = parse(cmd.strip_prefix("synod sim ").expect("replay starts with synod sim"))
            .expect("the replay command parses");
        let (opts, seeds) = options(&args).expect("valid");
        assert_eq!(opts, original);
        assert_eq!(seeds, 42..43);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        assert!(parse("--protocol zab").is_err());
        assert!(parse("--faults lots").is_err());
        assert!(parse("--seeds 9..3").is_err());
        assert!(parse("--seed 1 --seeds 1..3").is_err());
        assert!(parse("--nodes -1").is_err());
        let zero = parse("--nodes 0").expect("parses");
        assert!(options(&zero).unwrap_err().contains("--nodes"));
        let bug = parse("--bug no-such-bug").expect("parses");
        assert!(options(&bug).unwrap_err().contains("no-such-bug"));
        let missing = parse("--scenario /nonexistent/s.toml").expect("parses");
        assert!(options(&missing).unwrap_err().contains("/nonexistent/s.toml"));
    }

    #[test]
    fn stop_on_first_reports_the_lowest_failing_seed() {
        let opts = SimOptions {
            nodes: 3,
            clients: 2,
            ops_per_client: 5,
            faults: FaultProfile::All,
            bug: Some("vote-twice-in-term".into()),
            ..SimOptions::default()
        };
        let all = run_seeds(&opts, 1..41, 2);
        let first = all.violations.first().map(|v| v.seed);
        let stopped = run_until_first_failure(&opts, 1..41, 2);
        assert_eq!(stopped.violations.first().map(|v| v.seed), first);
        assert!(stopped.violations.len() <= 1);
        if first.is_some() {
            assert!(!stopped.all_passed());
        }
    }
}
