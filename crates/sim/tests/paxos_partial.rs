//! Multi-Paxos under the partial-connectivity schedules of the OmniPaxos
//! paper (quorum-loss, constrained-election, chained; see
//! `synod_sim::partial`): it recovers *while the topology holds*, in every
//! seed, within a bounded number of election timeouts, and stays safe and
//! linearizable. Raft's result in constrained-election (it never recovers:
//! the only quorum-connected server has a stale log) is shown for contrast.

use synod_sim::compare::{CompareBy, ELECTION_TIMEOUT_MS, compare};
use synod_sim::{FaultProfile, ProtocolKind, SimOptions};

const SEEDS: u64 = 12;
/// OmniPaxos claims recovery within four election timeouts; Synod's
/// Multi-Paxos measures at most 5 (constrained-election) over 30 seeds.
const MAX_ELECTION_TIMEOUTS: u64 = 6;

fn recovers(profile: FaultProfile) {
    let o = SimOptions { faults: profile, ops_per_client: 60, ..SimOptions::default() };
    let c = compare(&o, &[ProtocolKind::Paxos], 1..SEEDS + 1, 2, CompareBy::SameF);
    let row = &c.rows[0];
    assert!(row.summary.all_passed(), "{}", c.render());
    let r = row.recovery.as_ref().expect("a partial profile measures recovery");
    assert_eq!(r.recovered, SEEDS, "{}: {}", profile.name(), r.verdict());
    let max_us = r.after_strike.max();
    assert!(
        max_us <= MAX_ELECTION_TIMEOUTS * ELECTION_TIMEOUT_MS * 1000,
        "{}: {}",
        profile.name(),
        r.verdict()
    );
}

#[test]
fn multi_paxos_recovers_from_quorum_loss() {
    recovers(FaultProfile::QuorumLoss);
}

#[test]
fn multi_paxos_recovers_from_a_constrained_election() {
    recovers(FaultProfile::ConstrainedElection);
}

#[test]
fn multi_paxos_recovers_in_a_chain() {
    recovers(FaultProfile::Chained);
}

#[test]
fn raft_does_not_elect_the_stale_quorum_connected_server() {
    let o = SimOptions {
        faults: FaultProfile::ConstrainedElection,
        ops_per_client: 40,
        ..SimOptions::default()
    };
    let c = compare(&o, &[ProtocolKind::Raft], 1..4, 2, CompareBy::SameF);
    let row = &c.rows[0];
    assert!(row.summary.all_passed(), "it recovers once healed: {}", c.render());
    let r = row.recovery.as_ref().expect("measured");
    assert_eq!(r.recovered, 0, "Raft's vote rule refuses the stale hub: {}", r.verdict());
}
