//! Configuration safety (Raft thesis §4.1, §4.3): at no time can two
//! disjoint quorums decide. Two rules are checked:
//!
//! - **Intersecting quorums.** Every configuration that can still decide
//!   — the latest committed one and every uncommitted one that could still
//!   commit — pairwise has intersecting quorums: every quorum of one meets
//!   every quorum of the other (a joint configuration's quorum is a
//!   majority of both its voter sets). A node's configuration (the latest
//!   in its log, at index `i`, term `t`) is *dead*, and not counted, when a
//!   later configuration is committed (`i` below the latest committed
//!   configuration's index) or when its entry cannot be in the committed
//!   log (`i` at or after the committed index `G` while `t` is below the
//!   term of the entry at `G`: terms only grow along a log). A dead
//!   configuration cannot decide: a quorum of its voters holds a more
//!   up-to-date log and refuses it.
//! - **One change at a time.** A leader appends a configuration only once
//!   the one before it in its log is committed, and only a successor of it:
//!   C_old,new from C_old (outgoing = the previous voters), C_new from
//!   C_old,new (the same incoming voters), or a learner-only change (the
//!   same voters).
//!
//! The pairwise check runs only when the set of live configurations
//! changes (rare), so its brute force over voter subsets costs nothing on
//! the hot path; the per-step work is a few index comparisons.

use super::node_map::NodeMap;
use crate::invariant::{Invariant, StepView, Violation};
use synod_core::{NodeId, Role};
use synod_raft::{Membership, RaftNode, RaftOutput, Write};

/// The property's name in violations.
pub const PROPERTY: &str = "configuration safety";

/// Largest voter union the brute-force intersection check enumerates.
const MAX_UNION: usize = 20;

/// What the checker reads of a replica's configurations.
pub trait ConfigView {
    /// The role.
    fn role(&self) -> Role;
    /// Highest index known committed.
    fn commit_index(&self) -> u64;
    /// Term of the entry at `index` (`Some(0)` at 0, `None` when absent).
    fn term_at(&self, index: u64) -> Option<u64>;
    /// The index of the configuration entry in effect at `index`, and that
    /// configuration.
    fn config_at(&self, index: u64) -> (u64, &Membership);
    /// The configuration in effect (the latest in the log) and its index.
    fn latest_config(&self) -> (u64, &Membership);
}

impl ConfigView for RaftNode {
    fn role(&self) -> Role {
        RaftNode::role(self)
    }
    fn commit_index(&self) -> u64 {
        RaftNode::commit_index(self)
    }
    fn term_at(&self, index: u64) -> Option<u64> {
        RaftNode::term_at(self, index)
    }
    fn config_at(&self, index: u64) -> (u64, &Membership) {
        (self.membership_index_at(index), self.membership_at(index))
    }
    fn latest_config(&self) -> (u64, &Membership) {
        (self.membership_index(), self.membership())
    }
}

/// True when every quorum of `a` intersects every quorum of `b`.
pub fn quorums_intersect(a: &Membership, b: &Membership) -> bool {
    let mut union: Vec<NodeId> = a.all_voters().chain(b.all_voters()).collect();
    union.sort();
    union.dedup();
    assert!(union.len() <= MAX_UNION, "configurations too large to check: {}", union.len());
    let bit = |set: u32, id: NodeId| {
        union.iter().position(|&u| u == id).is_some_and(|p| set & (1 << p) != 0)
    };
    let all = (1u32 << union.len()) - 1;
    (0..=all).all(|q| !(a.is_quorum(|id| bit(q, id)) && b.is_quorum(|id| bit(all & !q, id))))
}

/// True when `next` may follow `previous` in a log: C_old,new from C_old,
/// C_new from C_old,new, or a learner-only change.
pub fn is_successor(previous: &Membership, next: &Membership) -> bool {
    if previous.is_joint() {
        !next.is_joint() && next.voters == previous.voters
    } else if next.is_joint() {
        next.outgoing == previous.voters
    } else {
        next.voters == previous.voters
    }
}

/// One node's configuration in effect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct InEffect {
    index: u64,
    term: u64,
    membership: Membership,
}

/// Checks intersecting quorums of live configurations and one change in
/// flight per leader.
#[derive(Debug, Default)]
pub struct ConfigSafety {
    /// Each live node's configuration in effect.
    nodes: NodeMap<Option<InEffect>>,
    /// The latest committed configuration seen anywhere.
    committed: Option<InEffect>,
    /// The highest commit index seen anywhere, and its entry's term.
    commit: (u64, u64),
    /// The live configurations found at the last pairwise check.
    checked: Vec<InEffect>,
}

impl ConfigSafety {
    /// A checker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node`, now in state `view`, produced `output`.
    pub fn check(
        &mut self,
        node: NodeId,
        view: &impl ConfigView,
        output: &RaftOutput,
    ) -> Result<(), Violation> {
        if view.role() == Role::Leader {
            self.check_appended(node, view, output)?;
        }
        self.observe(node, view)
    }

    /// One change at a time: every configuration the leader appended in
    /// this step follows a committed predecessor it may follow.
    fn check_appended(
        &self,
        node: NodeId,
        view: &impl ConfigView,
        output: &RaftOutput,
    ) -> Result<(), Violation> {
        let appended = output.writes.iter().flat_map(|w| match w {
            Write::Append { entries } => entries.as_slice(),
            _ => &[],
        });
        for entry in appended {
            let Some(next) = entry.membership() else { continue };
            let (previous_index, previous) = view.config_at(entry.index - 1);
            if previous_index > view.commit_index() {
                let detail = format!(
                    "leader appended a configuration at {} while the one at {previous_index} \
                     is uncommitted (commit index {})",
                    entry.index,
                    view.commit_index()
                );
                return Err(Violation::new(PROPERTY, Some(node), detail));
            }
            if !is_successor(previous, next) || !quorums_intersect(previous, next) {
                let detail = format!(
                    "configuration at {} ({next:?}) cannot follow the one at {previous_index} \
                     ({previous:?})",
                    entry.index
                );
                return Err(Violation::new(PROPERTY, Some(node), detail));
            }
        }
        Ok(())
    }

    /// Records `node`'s configurations; rechecks the live set if it changed.
    fn observe(&mut self, node: NodeId, view: &impl ConfigView) -> Result<(), Violation> {
        let commit_index = view.commit_index();
        let mut changed = false;
        if commit_index > self.commit.0
            && let Some(term) = view.term_at(commit_index)
        {
            self.commit = (commit_index, term);
            changed = true;
        }
        let (committed_index, committed) = view.config_at(commit_index);
        if self.committed.as_ref().is_none_or(|c| committed_index > c.index) {
            let term = view.term_at(committed_index).unwrap_or(0);
            let membership = committed.clone();
            self.committed = Some(InEffect { index: committed_index, term, membership });
            changed = true;
        }
        let (index, membership) = view.latest_config();
        let slot = self.nodes.entry(node);
        if slot.as_ref().is_none_or(|s| s.index != index || &s.membership != membership) {
            let term = view.term_at(index).unwrap_or(0);
            *slot = Some(InEffect { index, term, membership: membership.clone() });
            changed = true;
        }
        if changed { self.check_live(node) } else { Ok(()) }
    }

    /// Whether configuration `c` can still decide (see the module docs).
    fn is_live(&self, c: &InEffect) -> bool {
        let (commit_index, commit_term) = self.commit;
        let Some(committed) = &self.committed else { return true };
        if c.index < committed.index {
            return false;
        }
        if c.index == committed.index {
            return c.term == committed.term;
        }
        !(c.index >= commit_index && c.term < commit_term)
    }

    /// Every pair of live configurations has intersecting quorums.
    fn check_live(&mut self, node: NodeId) -> Result<(), Violation> {
        // References first: the set rarely changes, and cloning every
        // membership at every commit would cost more than the check.
        let mut live: Vec<&InEffect> = self.committed.iter().collect();
        for c in self.nodes.values().flatten() {
            if self.is_live(c) && !live.contains(&c) {
                live.push(c);
            }
        }
        live.sort_by_key(|c| (c.index, c.term));
        if live.len() == self.checked.len() && live.iter().zip(&self.checked).all(|(a, b)| *a == b)
        {
            return Ok(());
        }
        for (i, a) in live.iter().enumerate() {
            for b in &live[i + 1..] {
                if !quorums_intersect(&a.membership, &b.membership) {
                    let detail = format!(
                        "disjoint quorums: configuration at {} (term {}) {:?} and at {} \
                         (term {}) {:?}",
                        a.index, a.term, a.membership, b.index, b.term, b.membership
                    );
                    return Err(Violation::new(PROPERTY, Some(node), detail));
                }
            }
        }
        self.checked = live.into_iter().cloned().collect();
        Ok(())
    }
}

impl Invariant<RaftNode> for ConfigSafety {
    fn name(&self) -> &'static str {
        PROPERTY
    }

    fn after_step(&mut self, step: &StepView<'_, RaftNode>) -> Result<(), Violation> {
        self.check(step.node, step.core, step.output)
    }

    fn on_crash(&mut self, node: NodeId) {
        self.nodes.remove(node);
    }

    fn on_restart(&mut self, node: NodeId, core: &RaftNode) -> Result<(), Violation> {
        self.observe(node, core)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use synod_raft::{Entry, Payload};

    fn ids(v: &[u64]) -> BTreeSet<NodeId> {
        v.iter().map(|&x| NodeId(x)).collect()
    }

    fn config(voters: &[u64]) -> Membership {
        Membership::initial(ids(voters))
    }

    fn joint(old: &[u64], new: &[u64]) -> Membership {
        Membership { voters: ids(new), outgoing: ids(old), ..Membership::default() }
    }

    /// A node's configurations: `(index, term, config)` ascending; the
    /// first is the base.
    struct Fake {
        role: Role,
        commit_index: u64,
        /// Term of every entry, from index 1.
        terms: Vec<u64>,
        configs: Vec<(u64, Membership)>,
    }

    impl ConfigView for Fake {
        fn role(&self) -> Role {
            self.role
        }
        fn commit_index(&self) -> u64 {
            self.commit_index
        }
        fn term_at(&self, index: u64) -> Option<u64> {
            if index == 0 { Some(0) } else { self.terms.get(index as usize - 1).copied() }
        }
        fn config_at(&self, index: u64) -> (u64, &Membership) {
            let c =
                self.configs.iter().rev().find(|(i, _)| *i <= index).unwrap_or(&self.configs[0]);
            (c.0, &c.1)
        }
        fn latest_config(&self) -> (u64, &Membership) {
            let c = self.configs.last().expect("a base");
            (c.0, &c.1)
        }
    }

    fn fake(commit_index: u64, terms: &[u64], configs: Vec<(u64, Membership)>) -> Fake {
        Fake { role: Role::Follower, commit_index, terms: terms.to_vec(), configs }
    }

    #[test]
    fn majorities_of_overlapping_sets_intersect_and_of_disjoint_ones_do_not() {
        assert!(quorums_intersect(&config(&[1, 2, 3]), &config(&[1, 2, 3, 4])));
        assert!(quorums_intersect(&config(&[1, 2, 3]), &joint(&[1, 2, 3], &[4, 5, 6])));
        assert!(quorums_intersect(&joint(&[1, 2, 3], &[4, 5, 6]), &config(&[4, 5, 6])));
        // {1,2} and {3,4,5}: 3 of 5 vs 2 of 3 can be disjoint.
        assert!(!quorums_intersect(&config(&[1, 2, 3, 4, 5]), &config(&[3, 4, 5, 6, 7])));
        assert!(!quorums_intersect(&config(&[1, 2, 3]), &config(&[4, 5, 6])));
        // Jumping from C_old to C_new directly with a two-node swap.
        assert!(!quorums_intersect(&config(&[1, 2, 3]), &config(&[3, 4, 5])));
    }

    #[test]
    fn successors_follow_the_joint_consensus_rules() {
        let old = config(&[1, 2, 3]);
        assert!(is_successor(&old, &joint(&[1, 2, 3], &[3, 4, 5])));
        assert!(!is_successor(&old, &config(&[3, 4, 5])), "skipping the joint phase");
        assert!(is_successor(&joint(&[1, 2, 3], &[3, 4, 5]), &config(&[3, 4, 5])));
        assert!(!is_successor(&joint(&[1, 2, 3], &[3, 4, 5]), &config(&[1, 2, 3])));
        let mut learners = old.clone();
        learners.learners = ids(&[4]);
        assert!(is_successor(&old, &learners));
    }

    #[test]
    fn a_direct_swap_in_effect_beside_the_committed_config_is_caught() {
        let mut c = ConfigSafety::new();
        let out = RaftOutput::new();
        let base = config(&[1, 2, 3]);
        // Node 1 committed up to 2 under the bootstrap configuration.
        assert!(c.check(NodeId(1), &fake(2, &[1, 1], vec![(0, base.clone())]), &out).is_ok());
        // Node 2 holds an uncommitted config at 3 that swaps two voters.
        let bad = fake(2, &[1, 1, 1], vec![(0, base.clone()), (3, config(&[3, 4, 5]))]);
        let e = c.check(NodeId(2), &bad, &out).unwrap_err();
        assert!(e.detail.contains("disjoint quorums"), "{}", e.detail);
    }

    #[test]
    fn joint_consensus_passes_and_dead_configs_do_not_count() {
        let mut c = ConfigSafety::new();
        let out = RaftOutput::new();
        let old = config(&[1, 2, 3]);
        let j = joint(&[1, 2, 3], &[4, 5, 6]);
        let new = config(&[4, 5, 6]);
        let terms = [1, 1, 1, 1];
        // Node 1 has C_old,new at 3 uncommitted; node 4 has committed it
        // and appended C_new at 4.
        let n1 = fake(2, &terms[..3], vec![(0, old.clone()), (3, j.clone())]);
        assert!(c.check(NodeId(1), &n1, &out).is_ok());
        let n4 = fake(3, &terms, vec![(0, old.clone()), (3, j.clone()), (4, new.clone())]);
        assert!(c.check(NodeId(4), &n4, &out).is_ok());
        // C_new commits: node 1 (still at C_old,new) and a stale node at
        // the bootstrap configuration are dead, not disjoint.
        let n4 = fake(4, &terms, vec![(0, old.clone()), (3, j), (4, new.clone())]);
        assert!(c.check(NodeId(4), &n4, &out).is_ok());
        let stale = fake(0, &[], vec![(0, old)]);
        assert!(c.check(NodeId(2), &stale, &out).is_ok());
        // A config whose entry has a lower term than the committed entry
        // at the same index cannot commit either.
        let doomed = fake(0, &[1, 1, 1, 1, 0], vec![(0, new.clone()), (5, config(&[7, 8, 9]))]);
        let mut c2 = ConfigSafety::new();
        let n = fake(5, &[1, 1, 1, 1, 2], vec![(0, new)]);
        assert!(c2.check(NodeId(4), &n, &out).is_ok());
        assert!(c2.check(NodeId(7), &doomed, &out).is_ok());
    }

    fn appended(index: u64, membership: Membership) -> RaftOutput {
        let mut out = RaftOutput::new();
        let entries =
            vec![Entry { term: 1, index, payload: Payload::Config(Box::new(membership)) }];
        out.writes.push(Write::Append { entries });
        out
    }

    #[test]
    fn a_leader_starting_a_second_change_in_flight_is_caught() {
        let mut c = ConfigSafety::new();
        let old = config(&[1, 2, 3]);
        let j = joint(&[1, 2, 3], &[1, 2, 4]);
        let mut leader = fake(2, &[1, 1, 1], vec![(0, old.clone()), (3, j.clone())]);
        leader.role = Role::Leader;
        assert!(c.check(NodeId(1), &leader, &appended(3, j.clone())).is_ok());
        // A second joint change appended at 4 while 3 is uncommitted.
        let j2 = joint(&[1, 2, 4], &[1, 2, 5]);
        leader.terms.push(1);
        leader.configs.push((4, j2.clone()));
        let e = c.check(NodeId(1), &leader, &appended(4, j2)).unwrap_err();
        assert!(e.detail.contains("uncommitted"), "{}", e.detail);
    }

    #[test]
    fn a_leader_skipping_the_joint_phase_is_caught() {
        let mut c = ConfigSafety::new();
        let old = config(&[1, 2, 3]);
        let swap = config(&[1, 4, 5]);
        let mut leader = fake(2, &[1, 1, 1], vec![(0, old), (3, swap.clone())]);
        leader.role = Role::Leader;
        let e = c.check(NodeId(1), &leader, &appended(3, swap)).unwrap_err();
        assert!(e.detail.contains("cannot follow"), "{}", e.detail);
    }
}
