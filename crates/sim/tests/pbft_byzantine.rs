//! PBFT under attack: every attack of the adversary suite with f = 1
//! Byzantine replica of 4 passes the checkers, and with f + 1 Byzantine
//! replicas the checkers catch a violation (the "f+1 oracle": proof that
//! they can fail).

use synod_sim::byzantine::ATTACKS;
use synod_sim::{FaultProfile, ProtocolKind, SimOptions, run_seed};

fn opts(byzantine: usize, attack: &str, faults: FaultProfile) -> SimOptions {
    SimOptions {
        protocol: ProtocolKind::Pbft,
        nodes: 4,
        faults,
        clients: 3,
        ops_per_client: 30,
        fault_window_ms: 5_000,
        byzantine,
        attack: Some(attack.to_string()),
        ..SimOptions::default()
    }
}

/// Attacks the core does not withstand yet (none).
const NOT_YET_DEFENDED: &[&str] = &[];

#[test]
fn every_attack_with_f_byzantine_replicas_passes() {
    for attack in ATTACKS.iter().filter(|a| !NOT_YET_DEFENDED.contains(a)) {
        for (seed, faults) in [(1, FaultProfile::None), (2, FaultProfile::All)] {
            let r = run_seed(&opts(1, attack, faults), seed);
            if let Some(v) = &r.violation {
                panic!("{attack} seed {seed}: {} — {}\nreplay: {}", v.property, v.detail, v.replay);
            }
        }
    }
}

/// Client requests are signed: a Byzantine primary that adds requests no
/// client made (invented clients, or a real client's signature over
/// another operation) has its PRE-PREPAREs rejected and loses its view;
/// nothing it invented is executed.
#[test]
fn invented_requests_are_rejected_and_never_executed() {
    let o = opts(1, "bad-client-auth", FaultProfile::None);
    let r = run_seed(&o, 1);
    assert!(r.violation.is_none(), "{:?}", r.violation.map(|v| v.detail));
    assert_eq!(r.metrics.committed_ops, 3 * 30);

    let mut sim = synod_sim::Sim::<synod_pbft::PbftNode>::new(&o, 1).expect("valid");
    sim.run_until_time(synod_core::Time::from_millis(10_000));
    for n in 2..=4 {
        let core = sim.core(synod_core::NodeId(n)).expect("no faults: every replica is up");
        assert!(core.auth_stats().bad_signature > 0, "n{n} saw no badly signed request");
        assert!(core.view() > 0, "n{n}: the Byzantine primary kept view 0");
        for seq in 1..=core.executed_seq() {
            let batch = core.executed_batch(seq).expect("executed");
            for c in batch.iter() {
                assert!(
                    c.client.0 < 1 << 40,
                    "n{n} executed a request of invented client {}",
                    c.client
                );
                let inner = synod_pbft::request::inner_op(&c.op);
                assert!(!inner.ends_with(b"forged;"), "n{n} executed a tampered request {c:?}");
            }
        }
    }
}

#[test]
fn attack_runs_are_deterministic() {
    let o = opts(1, "random", FaultProfile::All);
    assert_eq!(run_seed(&o, 4).trace_hash, run_seed(&o, 4).trace_hash);
}

/// The f+1 oracle: two colluding replicas of four (one more than PBFT
/// tolerates) make the checkers report a violation.
#[test]
fn f_plus_one_byzantine_replicas_are_caught() {
    let agreement = ["pbft agreement", "state machine safety"];
    for (attack, properties) in
        [("equivocate", &agreement[..]), ("lying-replies", &["linearizability"][..])]
    {
        let caught =
            (1..=5).find_map(|seed| run_seed(&opts(2, attack, FaultProfile::None), seed).violation);
        let v = caught
            .unwrap_or_else(|| panic!("{attack} with 2 Byzantine replicas of 4 went unnoticed"));
        assert!(
            properties.contains(&v.property.as_str()),
            "{attack}: {}: {}",
            v.property,
            v.detail
        );
    }
}

/// `PBFT_SEED=9 PBFT_ATTACK=silent cargo test -p synod-sim --test pbft_byzantine inspect -- --ignored --nocapture`
#[test]
#[ignore]
fn inspect() {
    let seed: u64 = std::env::var("PBFT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let attack = std::env::var("PBFT_ATTACK").unwrap_or_else(|_| "silent".into());
    let until: u64 =
        std::env::var("PBFT_UNTIL_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(15_000);
    let o = SimOptions {
        clients: 5,
        ops_per_client: 100,
        fault_window_ms: 10_000,
        reads_through_log: std::env::var("PBFT_LOG_READS").is_ok(),
        ..opts(1, &attack, FaultProfile::All)
    };
    let mut sim = synod_sim::Sim::<synod_pbft::PbftNode>::new(&o, seed).expect("valid");
    let from: u64 =
        std::env::var("PBFT_FROM_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(until);
    let step: u64 = std::env::var("PBFT_STEP_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(500);
    let mut t = from;
    while t <= until {
        sim.run_until_time(synod_core::Time::from_millis(t));
        eprintln!("-- {t} ms");
        for n in 1..=4 {
            if let Some(c) = sim.core(synod_core::NodeId(n)) {
                eprintln!("{}", c.summary());
            }
        }
        t += step;
    }
}

/// What `synod sim --protocol pbft --nodes 4 --seeds 1..N --faults all
/// --byzantine 1 --attack all` runs:
/// `ATTACK_SEEDS=100 [ATTACK_FROM=1 ATTACK_CLIENTS=3 ATTACK_OPS=50] cargo test --release -p synod-sim --test pbft_byzantine attack_sweep -- --ignored --nocapture`
#[test]
#[ignore]
fn attack_sweep() {
    let env = |name: &str, default: u64| {
        std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    let n = env("ATTACK_SEEDS", 20);
    let d = SimOptions::default();
    let o = SimOptions {
        protocol: ProtocolKind::Pbft,
        nodes: 4,
        faults: FaultProfile::All,
        byzantine: 1,
        attack: Some("all".into()),
        clients: env("ATTACK_CLIENTS", d.clients as u64) as usize,
        ops_per_client: env("ATTACK_OPS", d.ops_per_client as u64) as usize,
        ..d
    };
    let from = env("ATTACK_FROM", 1);
    let s = synod_sim::run_seeds(&o, from..from + n, 2);
    eprintln!("{}", s.render());
    assert!(s.all_passed());
}
