//! Bounded message counts (the lab's TestCount): a fault-free election
//! costs one round, an idle leader sends only heartbeats, and a command
//! costs O(n) messages.

use crate::common::*;
use synod_core::kv::KvResult;

const ELECTION_KINDS: [&str; 4] =
    ["pre_vote", "pre_vote_response", "request_vote", "request_vote_response"];

/// One round: every node ends in term 1 with one leader, having sent
/// PreVote and RequestVote once per campaigning node; usually exactly one
/// node campaigns, so each of the n-1 peers gets one PreVote and one
/// RequestVote and answers each once: 4(n-1) election messages. When a
/// second node's randomized timeout fires within the few milliseconds
/// before the first candidate's RequestVote reaches it, it campaigns in the
/// same round (and term) too: never more than twice that.
#[test]
fn a_fault_free_election_takes_one_round() {
    let mut cases = Vec::new();
    for seed in 1..=30 {
        cases.extend([(3, seed), (5, seed + 100), (7, seed + 200)]);
    }
    let mut exact = 0;
    for &(nodes, seed) in &cases {
        let mut sim = cluster(nodes, seed);
        elect(&mut sim);
        sim.run_for(ms(50));
        let m = sim.metrics();
        let peers = nodes as u64 - 1;
        let counts: Vec<u64> = ELECTION_KINDS.iter().map(|k| sent(&m, k)).collect();
        for n in all(&sim) {
            assert_eq!(term(&sim, n), 1, "{nodes} nodes, seed {seed}: {n} left term 1");
        }
        assert_eq!(m.elections, 1, "{nodes} nodes, seed {seed}");
        for (kind, &count) in ELECTION_KINDS.iter().zip(&counts) {
            assert!(
                count % peers == 0 && (peers..=2 * peers).contains(&count),
                "{nodes} nodes, seed {seed}: {count} {kind}"
            );
        }
        if counts.iter().all(|&c| c == peers) {
            exact += 1;
        }
        assert_safe(&sim);
    }
    assert!(exact * 10 >= cases.len() * 8, "only {exact} of {} elections took 4(n-1)", cases.len());
}

/// Over two idle seconds, a leader sends only heartbeats — one per follower
/// per heartbeat interval (50 ms) — and gets one answer to each; nothing
/// else moves.
#[test]
fn an_idle_leader_sends_only_heartbeats() {
    for (nodes, seed) in [(3, 1), (5, 2), (7, 3)] {
        let mut sim = cluster(nodes, seed);
        elect(&mut sim);
        sim.run_for(ms(200));
        let before = sim.metrics();
        sim.run_for(secs(2));
        let during = sent_between(&before, &sim.metrics());
        let peers = nodes as u64 - 1;
        let intervals = 2_000 / 50;
        let heartbeats = during.get("heartbeat").copied().unwrap_or(0);
        let answers = during.get("append_entries_response").copied().unwrap_or(0);
        assert!(
            (peers * (intervals - 1)..=peers * (intervals + 1)).contains(&heartbeats),
            "{nodes} nodes: {heartbeats} heartbeats in 2 s"
        );
        assert!(heartbeats.abs_diff(answers) <= peers, "{nodes} nodes: {during:?}");
        assert_eq!(during.len(), 2, "{nodes} nodes: only heartbeats and answers: {during:?}");
        assert_safe(&sim);
    }
}

/// 100 commands, one after another: each costs an append and an answer per
/// follower, plus the heartbeats of the time it takes — at most 3(n-1)
/// messages per command for n = 3, 5 and 7.
#[test]
fn each_command_costs_o_n_messages() {
    for (nodes, seed) in [(3, 1), (5, 2), (7, 3)] {
        let mut sim = cluster(nodes, seed);
        elect(&mut sim);
        sim.run_for(ms(200));
        let before = sim.metrics();
        for i in 0..100 {
            let r = submit_wait(&mut sim, put(&format!("k{}", i % 10), &i.to_string()), secs(2));
            assert_eq!(r, KvResult::Done);
        }
        let after = sim.metrics();
        let messages = sent_total(&after) - sent_total(&before);
        let per_command = messages as f64 / 100.0;
        let peers = nodes as f64 - 1.0;
        eprintln!("{nodes} nodes: {per_command:.2} messages per command");
        assert!(per_command >= 2.0 * peers, "{nodes} nodes: {per_command} < 2(n-1)?");
        assert!(per_command <= 3.0 * peers, "{nodes} nodes: {per_command} messages per command");
        let d = sent_between(&before, &after);
        let replication = ["append_entries", "append_entries_response", "heartbeat"];
        assert!(d.keys().all(|k| replication.contains(k)), "{nodes} nodes: {d:?}");
        assert_safe(&sim);
    }
}
