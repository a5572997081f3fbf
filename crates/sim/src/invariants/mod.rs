//! Protocol safety checkers, one property per module, run after every
//! simulated event through the [`Invariant`] hook.
//!
//! Generic — any [`Protocol`], from `Output::committed` and `status()`:
//! - [`state_machine_safety`]: no two nodes apply different commands at one
//!   position, ever, across restarts (Raft §5.4.3, Figure 3);
//! - [`apply_order`]: each node applies positions 1, 2, 3, … once per
//!   incarnation, never beyond its commit index (Figure 2, `lastApplied`);
//! - [`monotonic`]: the epoch never decreases (nor falls below its durable
//!   value across a restart); commit and applied indexes never decrease
//!   within an incarnation (Figure 2).
//!
//! Raft — [`RaftNode`] through [`RaftView`]:
//! - [`election_safety`]: one leader per term; one vote per node per term,
//!   across restarts (§5.2, Figure 3);
//! - [`log_matching`]: one payload and one previous term per (index, term)
//!   appended anywhere (§5.3, Figure 3);
//! - [`leader_completeness`]: every leader holds every entry committed in
//!   its term or before (§5.4, Figure 3);
//! - [`commit_rule`]: a leader advances its commit index only to an entry
//!   of its current term (§5.4.2, Figure 8);
//! - [`durability`]: no message promises a term, vote or entry the node has
//!   not written; a restart keeps the synced term and vote (Figure 2);
//! - [`compaction`]: `purged <= snapshot <= applied <= committed <= last`
//!   (thesis §5.1);
//! - [`config_safety`]: configurations that can still decide have
//!   intersecting quorums; one membership change in flight per leader
//!   (thesis §4.1, §4.3).
//!
//! Every checker's logic is a method over plain values (a [`Status`], a
//! [`RaftView`], an [`Output`]), which its `Invariant` impl calls and its
//! tests call directly with hand-made, deliberately violating traces. Each
//! `after_step` costs O(this step's output) amortized; history is kept as
//! 8-byte digests per position, not as copies of commands.
//!
//! [`Status`]: synod_core::Status
//! [`Output`]: synod_core::Output

use crate::invariant::Invariant;
use synod_core::Protocol;
use synod_raft::RaftNode;

mod digest;
mod node_map;
mod sync_queue;
#[cfg(test)]
mod testing;

pub mod apply_order;
pub mod commit_rule;
pub mod compaction;
pub mod config_safety;
pub mod durability;
pub mod election_safety;
pub mod leader_completeness;
pub mod log_matching;
pub mod monotonic;
pub mod paxos_chosen;
pub mod paxos_compaction;
pub mod paxos_phases;
pub mod pbft_agreed_clock;
pub mod pbft_agreement;
pub mod raft_view;
pub mod state_machine_safety;

pub use apply_order::ApplyOrder;
pub use commit_rule::CommitRule;
pub use compaction::Compaction;
pub use config_safety::ConfigSafety;
pub use durability::Durability;
pub use election_safety::ElectionSafety;
pub use leader_completeness::LeaderCompleteness;
pub use log_matching::LogMatching;
pub use monotonic::Monotonic;
pub use pbft_agreement::PbftAgreement;
pub use raft_view::RaftView;
pub use state_machine_safety::StateMachineSafety;

/// The checkers that work for any protocol: state machine safety, apply
/// order, monotonic state.
pub fn generic_invariants<P: Protocol>() -> Vec<Box<dyn Invariant<P>>> {
    vec![
        Box::new(StateMachineSafety::new()),
        Box::new(ApplyOrder::new()),
        Box::new(Monotonic::new()),
    ]
}

/// Every checker for a Raft cluster: the [`generic_invariants`] (included
/// here; do not add them twice) followed by the Raft-specific ones.
pub fn raft_invariants() -> Vec<Box<dyn Invariant<RaftNode>>> {
    let mut invariants = generic_invariants::<RaftNode>();
    invariants.push(Box::new(ElectionSafety::new()));
    invariants.push(Box::new(LogMatching::new()));
    invariants.push(Box::new(LeaderCompleteness::new()));
    invariants.push(Box::new(CommitRule::new()));
    invariants.push(Box::new(Durability::new()));
    invariants.push(Box::new(Compaction::new()));
    invariants.push(Box::new(ConfigSafety::new()));
    invariants
}

/// Every checker for a PBFT cluster: the [`generic_invariants`] followed
/// by [`PbftAgreement`] and [`pbft_agreed_clock::PbftAgreedClock`].
pub fn pbft_invariants() -> Vec<Box<dyn Invariant<synod_pbft::PbftNode>>> {
    let mut invariants = generic_invariants::<synod_pbft::PbftNode>();
    invariants.push(Box::new(PbftAgreement::new()));
    invariants.push(Box::new(pbft_agreed_clock::PbftAgreedClock));
    invariants
}

/// Every checker for a Multi-Paxos cluster: the [`generic_invariants`]
/// followed by [`paxos_chosen::ChosenValues`] (one value chosen per slot,
/// chosen values never change), [`paxos_phases::PhaseOrder`] (Phase 2
/// only after a Phase 1 majority) and [`paxos_compaction::PaxosCompaction`]
/// (`purged <= snapshot <= chosen <= last` slot).
pub fn paxos_invariants() -> Vec<Box<dyn Invariant<synod_paxos::PaxosNode>>> {
    let mut invariants = generic_invariants::<synod_paxos::PaxosNode>();
    invariants.push(Box::new(paxos_chosen::ChosenValues::new()));
    invariants.push(Box::new(paxos_phases::PhaseOrder::new()));
    invariants.push(Box::new(paxos_compaction::PaxosCompaction::new()));
    invariants
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raft_set_holds_each_checker_once() {
        let names: Vec<&str> = raft_invariants().iter().map(|i| i.name()).collect();
        assert_eq!(
            names,
            [
                state_machine_safety::PROPERTY,
                apply_order::PROPERTY,
                monotonic::PROPERTY,
                election_safety::LEADER_PROPERTY,
                log_matching::PROPERTY,
                leader_completeness::PROPERTY,
                commit_rule::PROPERTY,
                durability::PROPERTY,
                compaction::PROPERTY,
                config_safety::PROPERTY,
            ]
        );
    }
}
