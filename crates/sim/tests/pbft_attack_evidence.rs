//! Every attack of the adversary suite happens, and the defence it
//! targets fires: "no violation" alone would also pass an attack that
//! silently did nothing. The adversary counts what it did
//! (`Metrics::attack`); the correct replicas count what they refused
//! (`Metrics::defence`: `AuthStats` by field, deferred suspicions, and
//! `candidacies`, the view changes they started).
//!
//! Also: runs end, by virtual time or by their event budget, with a report
//! (the `--byzantine 2 --attack vc-flood` regression).

use synod_sim::byzantine::ATTACKS;
use synod_sim::run::{EVENT_BUDGET_PROPERTY, SeedReport};
use synod_sim::{FaultProfile, ProtocolKind, SimOptions, run_seed};

fn opts(byzantine: usize, attack: &str) -> SimOptions {
    SimOptions {
        protocol: ProtocolKind::Pbft,
        nodes: 4,
        faults: FaultProfile::None,
        clients: 3,
        ops_per_client: 30,
        byzantine,
        attack: Some(attack.to_string()),
        ..SimOptions::default()
    }
}

fn attack(r: &SeedReport, what: &str) -> u64 {
    r.metrics.attack.get(what).copied().unwrap_or(0)
}

fn defence(r: &SeedReport, what: &str) -> u64 {
    r.metrics.defence.get(what).copied().unwrap_or(0)
}

/// Prints what each attack did and what the correct replicas refused:
/// `cargo test --release -p synod-sim --test pbft_attack_evidence dump -- --ignored --nocapture`
#[test]
#[ignore]
fn dump() {
    for name in ATTACKS {
        let r = run_seed(&opts(1, name), 1);
        eprintln!(
            "{name}: passed {} elections {}\n  attack {:?}\n  defence {:?}",
            r.passed, r.metrics.elections, r.metrics.attack, r.metrics.defence
        );
    }
}

/// Runs `attack` (1 Byzantine replica of 4) on `o`, asserts the run
/// passed and that the attack did `did` at least once; returns the report.
fn attacked(attack: &str, o: SimOptions, seed: u64, did: &[&str]) -> SeedReport {
    let r = run_seed(&o, seed);
    if let Some(v) = &r.violation {
        panic!("{attack} seed {seed}: {} — {}\nreplay: {}", v.property, v.detail, v.replay);
    }
    for what in did {
        assert!(
            r.metrics.attack.get(what).is_some_and(|&n| n > 0),
            "{attack}: the adversary never did `{what}`: {:?}",
            r.metrics.attack
        );
    }
    r
}

/// Asserts the correct replicas counted `what` at least once.
fn fired(attack: &str, r: &SeedReport, what: &str) {
    assert!(
        defence(r, what) > 0,
        "{attack}: the defence `{what}` never fired: {:?} (attack {:?})",
        r.metrics.defence,
        r.metrics.attack
    );
}

/// For each attack: the adversary did it, and the check that refuses it
/// counted refusals at correct replicas (or, where refusing leaves no
/// counter, the outcome it forces: the primary replaced, f+1 replies
/// outvoting the lie, no view followed on f VIEW-CHANGEs). Seed 1, no
/// faults, so that each counter comes from the attack alone.
#[test]
fn every_attack_happens_and_its_defence_fires() {
    let mut covered = Vec::new();
    let mut check = |name: &'static str, o: SimOptions, did: &[&str], fires: &[&str]| {
        let r = attacked(name, o, 1, did);
        for what in fires {
            fired(name, &r, what);
        }
        covered.push(name);
        r
    };
    // The equivocating primary's second story is kept out (the first
    // pre-prepare stays, the other is `invalid`) and it loses its view.
    check(
        "equivocate",
        opts(1, "equivocate"),
        &["equivocating pre-prepares"],
        &["invalid", "candidacies"],
    );
    // Messages claiming a correct replica, authenticated with Byzantine
    // keys: MACs and signatures fail.
    check("forge", opts(1, "forge"), &["forged messages"], &["bad_mac", "bad_signature"]);
    // Old messages spoofing their senders: the authenticator was made for
    // another receiver (or the content is stale and dropped).
    check("replay", opts(1, "replay"), &["replayed messages"], &["bad_mac"]);
    // Every out-of-window copy is refused as `invalid`.
    let r =
        check("out-of-window", opts(1, "out-of-window"), &["out-of-window messages"], &["invalid"]);
    assert!(defence(&r, "invalid") >= attack(&r, "out-of-window messages"), "{:?}", r.metrics);
    // Digests that do not match the batch: refused, and the primary
    // replaced.
    check(
        "wrong-digest",
        opts(1, "wrong-digest"),
        &["wrong-digest pre-prepares", "wrong-digest votes"],
        &["bad_digest", "candidacies"],
    );
    // A silent primary is replaced by a view change.
    check(
        "silent",
        opts(1, "silent"),
        &["messages withheld", "replies withheld"],
        &["candidacies"],
    );
    // f VIEW-CHANGEs for ever higher views, and f SUSPECTs of the current
    // one, move no correct replica.
    let r = check(
        "vc-flood",
        opts(1, "vc-flood"),
        &["flood views", "flood view-changes", "flood suspicions"],
        &[],
    );
    assert_eq!(defence(&r, "candidacies"), 0, "a correct replica followed f VIEW-CHANGEs");
    // Requests no client made: the client signature check refuses the
    // batch, and the primary is replaced.
    check(
        "bad-client-auth",
        opts(1, "bad-client-auth"),
        &["invented requests", "tampered requests"],
        &["bad_signature", "candidacies"],
    );
    // Wrong answers are outvoted by f+1 matching ones.
    check(
        "lying-replies",
        opts(1, "lying-replies"),
        &["lying replies", "lying read-indexes"],
        &["replies outvoted"],
    );
    // The twin's messages contradict the original's: the second story is
    // refused.
    check("twins", opts(1, "twins"), &["twin messages"], &["invalid"]);
    check(
        "random",
        opts(1, "random"),
        &["mutated messages"],
        &["bad_mac", "bad_digest", "invalid"],
    );
    // Timestamps an hour off are refused and the primary replaced.
    check(
        "bad-timestamp",
        opts(1, "bad-timestamp"),
        &["bad timestamps"],
        &["bad_timestamp", "candidacies"],
    );
    // PRE-PREPAREs held for 90% of the view-change timeout: slower, but no
    // correct replica gives up on the primary, and every request commits.
    let r = check("slow", opts(1, "slow"), &["pre-prepares delayed"], &[]);
    assert_eq!(defence(&r, "candidacies"), 0, "{:?}", r.metrics.defence);
    assert_eq!(r.metrics.committed_ops, 90);
    let held_us = 300_000 * 9 / 10;
    assert!(r.metrics.latency.summary().p50_us >= held_us / 2, "{:?}", r.metrics.latency.summary());
    // Wrong checkpoint digests (and checkpoints for sequence numbers not
    // reached): they never make a quorum; correct replicas' checkpoints
    // still become stable (a stable checkpoint that differed from a
    // replica's own state would stop it).
    let o = SimOptions { clients: 5, ops_per_client: 120, ..opts(1, "lying-checkpoint") };
    check("lying-checkpoint", o.clone(), &["lying checkpoints"], &[]);
    let mut sim = synod_sim::Sim::<synod_pbft::PbftNode>::new(&o, 1).expect("valid");
    sim.run_until_time(synod_core::Time::from_millis(60_000));
    for n in 2..=4 {
        let core = sim.core(synod_core::NodeId(n)).expect("no faults: every replica is up");
        assert!(core.low_watermark() > 0, "n{n}: no checkpoint became stable: {}", core.summary());
    }
    // A NEW-VIEW whose O or checkpoint is not what V decides, one backed by
    // its own VIEW-CHANGE alone, and STATUS lies: refused as `invalid`;
    // VIEW-CHANGEs with a certificate for an invented request: refused by
    // the client signature check. The lying replica leads view 1, so it
    // takes a view change (faults) to tell the NEW-VIEW lies; while it
    // changes to a view it leads, its STATUS is true, so that peers
    // retransmit the VIEW-CHANGEs it missed (in seed 1, two of view 1's).
    let o = SimOptions {
        faults: FaultProfile::All,
        fault_window_ms: 5_000,
        ..opts(1, "lying-new-view")
    };
    check(
        "lying-new-view",
        o,
        &["lying statuses", "unsupported new-views", "lying new-views", "lying view-changes"],
        &["invalid", "bad_signature", "candidacies"],
    );
    covered.sort_unstable();
    let mut all = ATTACKS.to_vec();
    all.sort_unstable();
    assert_eq!(covered, all, "every attack is checked");
}

/// Regression: `synod sim --protocol pbft --nodes 4 --byzantine 2 --attack
/// vc-flood --seed 1` ran for minutes (so `--byzantine 2 --attack all`
/// never finished). The flood asked for a fresh view with half of the
/// Byzantine replicas' messages; with f+1 of them, correct replicas
/// (rightly) joined every such view: ~12,000 view changes and 3.9 million
/// events in the 120 s of virtual time, each VIEW-CHANGE signed and
/// carrying the log window (47 GB simulated). The flood now asks for a
/// fresh view at most every `FLOOD_VIEW_PERIOD`. Since SUSPECT, the flood
/// also accuses the latest view it saw, and f+1 accusations move every
/// correct replica out of its view: accusing the view of the moment with
/// every message, it had them leave each view on entering it (618,130
/// events); it accuses a fresh view at most every `FLOOD_VIEW_PERIOD` too.
/// Bounded in simulated events and virtual time, not wall-clock.
#[test]
fn a_vc_flood_by_f_plus_one_replicas_ends_within_a_bounded_number_of_events() {
    let o =
        SimOptions { clients: 5, ops_per_client: 100, max_time_ms: 30_000, ..opts(2, "vc-flood") };
    let r = run_seed(&o, 1);
    let m = &r.metrics;
    assert!(m.virtual_us <= o.max_time_ms * 1000, "ran past its virtual-time bound");
    // Before the fix, 30 s of virtual time took 858,000 events and 3,074
    // view changes (and the clients never finished).
    assert!(m.events < 400_000, "{} events", m.events);
    assert!(defence(&r, "candidacies") < 1_000, "{:?}", m.defence);
    assert!(
        attack(&r, "flood views") >= 1 && attack(&r, "flood view-changes") > 10,
        "{:?}",
        m.attack
    );
    assert!(attack(&r, "flood views") * 100 < attack(&r, "flood view-changes"), "{:?}", m.attack);
}

/// A run that uses up its event budget stops there and says so (property
/// `event budget`, at a virtual time before its bound, with a replay that
/// carries the budget), instead of running on.
#[test]
fn a_run_out_of_events_is_stopped_and_reported() {
    let o = SimOptions { max_events: 3_000, ..opts(2, "vc-flood") };
    let r = run_seed(&o, 1);
    let v = r.violation.expect("3,000 events cannot finish 90 operations");
    assert_eq!(v.property, EVENT_BUDGET_PROPERTY, "{}", v.detail);
    assert!(v.detail.contains("3000 simulated events"), "{}", v.detail);
    assert!(v.at_us < o.max_time_ms * 1000);
    assert!(v.replay.contains("--max-events 3000"), "{}", v.replay);
    assert!(r.metrics.events <= 3_000, "{}", r.metrics.events);
    // The default budget leaves ordinary runs alone.
    assert!(run_seed(&opts(1, "vc-flood"), 1).passed);
}
