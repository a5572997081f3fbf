//! Byzantine replicas (DESIGN.md §2): an `Adversary` takes over the
//! nodes `1..=byzantine` of a run and rewrites what they send.
//!
//! A Byzantine node still runs the protocol's own core (so it knows what a
//! correct replica would say, and holds its keys); the adversary sits
//! between that core and the network. The simulator calls it for every
//! message a Byzantine node sends (`Adversary::outgoing`) or receives
//! (`Adversary::incoming`), for every client request it receives and for
//! every client reply it sends. Whatever it returns as [`Forged`] goes on
//! the wire, possibly claiming another sender (spoofing) and late.
//!
//! Checkers see only correct replicas: the simulator skips every
//! invariant for a Byzantine node, clients still need f+1 matching replies,
//! and linearizability and liveness are checked as usual. So a run passes
//! exactly when the correct replicas stay safe and live despite the attack.
//!
//! Only PBFT has attacks ([`pbft`]); `--byzantine` with another protocol is
//! a usage error.

pub mod pbft;

use crate::client::Answer;
use crate::options::{ProtocolKind, SimOptions};
use crate::protocol::SimProtocol;
use crate::sim::Sim;
use synod_core::{Command, NodeId, Time};

/// Every attack by name (`all` runs each of them).
pub const ATTACKS: &[&str] = &[
    "equivocate",
    "forge",
    "replay",
    "out-of-window",
    "wrong-digest",
    "silent",
    "slow",
    "vc-flood",
    "lying-checkpoint",
    "lying-new-view",
    "bad-client-auth",
    "lying-replies",
    "twins",
    "random",
    "bad-timestamp",
];

/// What `--attack all` expands to.
pub const ALL: &str = "all";

/// A message an adversary puts on the wire.
#[derive(Clone, Debug)]
pub struct Forged<M> {
    /// The node that physically sends it (partitions apply to it).
    pub via: NodeId,
    /// The sender it claims to be (the receiving core sees this).
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The message.
    pub msg: M,
    /// Extra delay before it leaves, in microseconds.
    pub delay_us: u64,
}

impl<M> Forged<M> {
    /// `msg` from `from` to `to`, now, not spoofed.
    pub fn plain(from: NodeId, to: NodeId, msg: M) -> Self {
        Forged { via: from, from, to, msg, delay_us: 0 }
    }
}

/// The strategy of the Byzantine nodes of one run.
pub(crate) trait Adversary<P: SimProtocol> {
    /// Byzantine node `from`'s core sends `msg` to `to`; push what is sent
    /// instead (nothing drops it).
    fn outgoing(
        &mut self,
        now: Time,
        from: NodeId,
        to: NodeId,
        msg: P::Message,
        out: &mut Vec<Forged<P::Message>>,
    );

    /// `msg` from `from` arrives at Byzantine node `at`. Returns whether
    /// its core gets it.
    fn incoming(
        &mut self,
        now: Time,
        at: NodeId,
        from: NodeId,
        msg: &P::Message,
        out: &mut Vec<Forged<P::Message>>,
    ) -> bool {
        let _ = (now, at, from, msg, out);
        true
    }

    /// A client request arrives at Byzantine node `at` (its core gets it
    /// too).
    fn request(&mut self, now: Time, at: NodeId, cmd: &Command, out: &mut Vec<Forged<P::Message>>) {
        let _ = (now, at, cmd, out);
    }

    /// What the attack did so far, by kind (summed into
    /// [`Metrics::attack`](crate::Metrics::attack)): evidence that it
    /// happened, so that a run passing under it means something.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Byzantine node `node` answers a client; `None` drops the answer.
    fn reply(&mut self, node: NodeId, answer: Answer) -> Option<Answer> {
        let _ = node;
        Some(answer)
    }
}

/// Checks `--byzantine` and `--attack`; errors name the flag and list the
/// attacks.
pub fn validate(o: &SimOptions) -> Result<(), String> {
    if o.byzantine > o.nodes {
        return Err(format!("--byzantine {} exceeds --nodes {}", o.byzantine, o.nodes));
    }
    if o.byzantine > 0 && o.protocol != ProtocolKind::Pbft {
        return Err(format!("--byzantine: {} has no adversary (only pbft)", o.protocol.name()));
    }
    match (&o.attack, o.byzantine) {
        (None, 0) => Ok(()),
        (None, _) => Err(format!("--byzantine needs --attack NAME (one of: {}, all)", names())),
        (Some(a), _) if a != ALL && !ATTACKS.contains(&a.as_str()) => {
            Err(format!("--attack {a}: unknown attack (expected one of: {}, all)", names()))
        }
        (Some(_), 0) => Err("--attack needs --byzantine N (N >= 1)".into()),
        (Some(_), _) => Ok(()),
    }
}

fn names() -> String {
    ATTACKS.join(", ")
}

/// Hands the Byzantine nodes of `sim` to the adversary its options name.
pub(crate) fn install<P: SimProtocol>(sim: &mut Sim<P>) -> Result<(), String> {
    if sim.opts.byzantine == 0 {
        return Ok(());
    }
    let name = sim.opts.protocol.name();
    let any: &mut dyn std::any::Any = sim;
    match any.downcast_mut::<Sim<synod_pbft::PbftNode>>() {
        Some(s) => pbft::install(s),
        None => Err(format!("--byzantine: {name} has no adversary (only pbft)")),
    }
}

/// `--attack all` for one seed: runs `seed` under every attack in turn
/// and reports the first failure (its replay names that attack), with the
/// metrics of every run summed.
pub fn run_every_attack(opts: &SimOptions, seed: u64) -> crate::run::SeedReport {
    let mut total: Option<crate::run::SeedReport> = None;
    for name in ATTACKS {
        let o = SimOptions { attack: Some((*name).to_string()), ..opts.clone() };
        let r = crate::run::run_seed(&o, seed);
        let failed = !r.passed;
        total = Some(match total {
            None => r,
            Some(mut t) => {
                t.metrics.merge(&r.metrics);
                t.trace_hash = t.trace_hash.rotate_left(7) ^ r.trace_hash;
                if t.passed && failed {
                    t.passed = false;
                    t.violation = r.violation;
                }
                t
            }
        });
        if failed {
            break;
        }
    }
    total.expect("there is at least one attack")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_name_the_attacks_and_bound_the_byzantine_count() {
        let o = |byz: usize, attack: Option<&str>| SimOptions {
            protocol: ProtocolKind::Pbft,
            nodes: 4,
            byzantine: byz,
            attack: attack.map(String::from),
            ..SimOptions::default()
        };
        assert!(o(1, Some("equivocate")).validate().is_ok());
        assert!(o(1, Some("all")).validate().is_ok());
        let e = o(1, Some("nope")).validate().unwrap_err();
        assert!(e.contains("twins") && e.contains("random") && e.contains("all"), "{e}");
        assert!(o(5, Some("silent")).validate().unwrap_err().contains("exceeds"));
        assert!(o(1, None).validate().unwrap_err().contains("--attack"));
        assert!(o(0, Some("silent")).validate().unwrap_err().contains("--byzantine"));
        let raft = SimOptions { protocol: ProtocolKind::Raft, ..o(1, Some("silent")) };
        assert!(raft.validate().unwrap_err().contains("only pbft"));
        let c = o(1, Some("twins")).replay_command(3);
        assert!(c.ends_with("--byzantine 1 --attack twins"), "{c}");
    }
}
