//! Cluster membership by joint consensus (Raft paper §6; thesis §4.3):
//! the configuration type, its quorum rules, and the list of configurations
//! a node's log holds.
//!
//! A [`Membership`] names the voters, the learners (non-voting members that
//! receive the log) and every id ever removed. During a change it is
//! *joint*: it also holds the outgoing voters (C_old), and every decision —
//! election, commit, ReadIndex, check-quorum — needs a majority of the
//! incoming voters (C_new) **and** a majority of the outgoing ones. A leader
//! appends C_old,new; once that commits it appends C_new by itself.
//!
//! The configuration in effect on a node is the latest one in its log,
//! committed or not (thesis §4.1). [`ConfigLog`] keeps the configuration in
//! effect at the node's snapshot (the *base*) and every configuration entry
//! after it, so that a truncated log falls back to the configuration before
//! the truncated entry.
//!
//! Safety (thesis §4.3): at most one change is in flight — a leader refuses
//! a new change while its latest configuration is joint or uncommitted
//! ([`ConfigChangeError::InProgress`]). Hence any two configurations that
//! can be in effect at once on different nodes are consecutive in the log,
//! and consecutive configurations share a voter set (C_old,new shares C_old
//! with its predecessor and C_new with its successor), so their quorums
//! intersect.
//!
//! Removed ids are remembered for good: a node re-added under a removed id
//! with a wiped disk could vote twice in a term it already voted in, so
//! [`change`](Membership::change) refuses it ([`ConfigChangeError::Removed`])
//! and nodes ignore messages from removed ids.

use std::collections::BTreeSet;
use synod_core::{NodeId, ProposeError, quorum};

/// A cluster configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// The voters (C_new during a joint phase).
    pub voters: BTreeSet<NodeId>,
    /// The outgoing voters (C_old) during a joint phase; empty otherwise.
    pub outgoing: BTreeSet<NodeId>,
    /// Non-voting members: they receive the log but do not vote or count
    /// toward any quorum.
    pub learners: BTreeSet<NodeId>,
    /// Every id removed from the cluster so far; never a member again.
    pub removed: BTreeSet<NodeId>,
}

/// Why a membership change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigChangeError {
    /// Only the leader changes the membership.
    #[error("not the leader (leader hint: {hint:?})")]
    NotLeader {
        /// The leader this node believes in, if any.
        hint: Option<NodeId>,
    },
    /// A change is already in flight (the latest configuration is joint or
    /// not yet committed, or the leader has not committed in its term yet).
    #[error("a membership change is already in progress")]
    InProgress,
    /// A new voter is more than the allowed number of entries behind the
    /// leader (add it as a learner first and promote it once caught up).
    #[error("{id} is not caught up: it matches up to {match_index}, the leader holds {last_index}")]
    NotCaughtUp {
        /// The node.
        id: NodeId,
        /// Its last matching index.
        match_index: u64,
        /// The leader's last index.
        last_index: u64,
    },
    /// The id was removed from the cluster earlier; a node cannot rejoin
    /// under a removed id (with a wiped disk it could vote twice in a term).
    #[error("{id} was removed from the cluster and cannot be re-added under the same id")]
    Removed {
        /// The id.
        id: NodeId,
    },
    /// The requested configuration is not valid.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
    /// A leadership transfer is in progress.
    #[error("leadership transfer in progress")]
    Transferring,
}

impl From<ConfigChangeError> for ProposeError {
    fn from(e: ConfigChangeError) -> ProposeError {
        match e {
            ConfigChangeError::NotLeader { hint } => ProposeError::NotLeader { hint },
            ConfigChangeError::InProgress => ProposeError::Busy("membership change in progress"),
            ConfigChangeError::Transferring => ProposeError::Transferring,
            ConfigChangeError::NotCaughtUp { .. } => ProposeError::Busy("voter not caught up"),
            ConfigChangeError::Removed { .. } => ProposeError::Rejected("id was removed"),
            ConfigChangeError::Invalid(why) => ProposeError::Rejected(why),
        }
    }
}

/// The outcome of a joint vote or quorum question.
fn majority_of(set: &BTreeSet<NodeId>, yes: impl Fn(NodeId) -> bool) -> bool {
    set.is_empty() || quorum::is_majority(set.iter().filter(|&&id| yes(id)).count(), set.len())
}

impl Membership {
    /// The bootstrap configuration: `voters`, no learners.
    pub fn initial(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership { voters: voters.into_iter().collect(), ..Membership::default() }
    }

    /// True during a joint phase (C_old,new).
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// True when `id` votes (in C_new or, during a joint phase, C_old).
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id)
    }

    /// True when `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    /// True when `id` is a voter or a learner.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// True when `id` was removed from the cluster.
    pub fn is_removed(&self, id: NodeId) -> bool {
        self.removed.contains(&id)
    }

    /// Every voter (C_new ∪ C_old), ascending.
    pub fn all_voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.union(&self.outgoing).copied()
    }

    /// Every member (voters and learners), ascending.
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.all_voters().chain(self.learners.iter().copied()).collect()
    }

    /// True when the voters for which `yes` holds form a quorum: a majority
    /// of `voters` and, during a joint phase, of `outgoing` too.
    pub fn is_quorum(&self, yes: impl Fn(NodeId) -> bool) -> bool {
        majority_of(&self.voters, &yes) && (!self.is_joint() || majority_of(&self.outgoing, &yes))
    }

    /// True when the voters for which `no` holds make a quorum impossible
    /// (a majority of one voter set refused).
    pub fn is_blocked(&self, no: impl Fn(NodeId) -> bool) -> bool {
        let blocked = |set: &BTreeSet<NodeId>| {
            !set.is_empty()
                && quorum::is_majority(set.iter().filter(|&&id| no(id)).count(), set.len())
        };
        blocked(&self.voters) || (self.is_joint() && blocked(&self.outgoing))
    }

    /// The highest value a quorum reached, given each voter's value: the
    /// majority value of `voters`, and during a joint phase the smaller of
    /// that and the majority value of `outgoing` (the joint commit rule).
    /// `scratch` is reused to stay off the allocator.
    pub fn quorum_value(&self, value: impl Fn(NodeId) -> u64, scratch: &mut Vec<u64>) -> u64 {
        let mut of = |set: &BTreeSet<NodeId>| {
            scratch.clear();
            scratch.extend(set.iter().map(|&id| value(id)));
            if scratch.is_empty() { u64::MAX } else { quorum::majority_index(scratch) }
        };
        let incoming = of(&self.voters);
        let outgoing = if self.is_joint() { of(&self.outgoing) } else { u64::MAX };
        incoming.min(outgoing)
    }

    /// The joint configuration that moves from this one to `voters` and
    /// `learners` (or, when the voters stay the same, the final one at
    /// once: learners never count toward a quorum).
    ///
    /// # Errors
    /// [`ConfigChangeError::InProgress`] when this configuration is joint;
    /// [`ConfigChangeError::Removed`] for a removed id;
    /// [`ConfigChangeError::Invalid`] for an empty voter set or an id that
    /// is both voter and learner.
    pub fn change(
        &self,
        voters: &BTreeSet<NodeId>,
        learners: &BTreeSet<NodeId>,
    ) -> Result<Membership, ConfigChangeError> {
        if self.is_joint() {
            return Err(ConfigChangeError::InProgress);
        }
        if voters.is_empty() {
            return Err(ConfigChangeError::Invalid("a configuration needs at least one voter"));
        }
        if voters.iter().any(|id| learners.contains(id)) {
            return Err(ConfigChangeError::Invalid("an id is both voter and learner"));
        }
        if voters.iter().any(|id| id.0 == 0) || learners.iter().any(|id| id.0 == 0) {
            return Err(ConfigChangeError::Invalid("node id 0 is reserved"));
        }
        if let Some(&id) = voters.iter().chain(learners).find(|id| self.removed.contains(id)) {
            return Err(ConfigChangeError::Removed { id });
        }
        let mut next = Membership {
            voters: voters.clone(),
            outgoing: BTreeSet::new(),
            learners: learners.clone(),
            removed: self.removed.clone(),
        };
        if *voters != self.voters {
            next.outgoing = self.voters.clone();
        } else {
            next.record_removed(self);
        }
        Ok(next)
    }

    /// The final configuration C_new that follows this joint one.
    ///
    /// # Panics
    /// If this configuration is not joint.
    pub fn leave_joint(&self) -> Membership {
        assert!(self.is_joint(), "only a joint configuration is left");
        let mut next = Membership {
            voters: self.voters.clone(),
            outgoing: BTreeSet::new(),
            learners: self.learners.clone(),
            removed: self.removed.clone(),
        };
        next.record_removed(self);
        next
    }

    /// Adds every member of `previous` that is no longer one to `removed`.
    fn record_removed(&mut self, previous: &Membership) {
        let gone: Vec<NodeId> =
            previous.members().into_iter().filter(|&id| !self.is_member(id)).collect();
        self.removed.extend(gone);
    }
}

/// The configurations a node's log holds: the one in effect at its
/// snapshot (`base`, at the snapshot index or 0) and every configuration
/// entry after it, in log order. The latest one is in effect.
#[derive(Clone, Debug)]
pub struct ConfigLog {
    /// `(index, configuration)`, ascending by index, never empty; the first
    /// is the base.
    entries: Vec<(u64, Membership)>,
}

impl ConfigLog {
    /// A log whose base is `base` at `index`.
    pub fn new(index: u64, base: Membership) -> ConfigLog {
        ConfigLog { entries: vec![(index, base)] }
    }

    /// The configuration in effect (the latest).
    pub fn latest(&self) -> &Membership {
        &self.entries.last().expect("never empty").1
    }

    /// The index of the latest configuration's entry (the base's index when
    /// the log holds none after it).
    pub fn latest_index(&self) -> u64 {
        self.entries.last().expect("never empty").0
    }

    /// The configuration in effect at `index` (the latest one at or before
    /// it; the base for anything before the base).
    pub fn at(&self, index: u64) -> &Membership {
        self.entries.iter().rev().find(|(i, _)| *i <= index).map_or(&self.entries[0].1, |(_, m)| m)
    }

    /// The index of the configuration entry in effect at `index` (the
    /// base's index for anything before the base).
    pub fn index_at(&self, index: u64) -> u64 {
        self.entries.iter().rev().find(|(i, _)| *i <= index).map_or(self.entries[0].0, |(i, _)| *i)
    }

    /// A configuration entry was appended at `index`.
    ///
    /// # Panics
    /// If `index` does not follow the latest configuration's.
    pub fn push(&mut self, index: u64, membership: Membership) {
        assert!(index > self.latest_index(), "configuration entries go forward");
        self.entries.push((index, membership));
    }

    /// The log lost every entry from `index` on: so did the configurations
    /// there (the base stays).
    pub fn truncate_from(&mut self, index: u64) {
        while self.entries.len() > 1 && self.entries.last().is_some_and(|(i, _)| *i >= index) {
            self.entries.pop();
        }
    }

    /// A snapshot at `index` with configuration `base` was adopted: it is
    /// the new base, and entries after it are kept only if `keep_tail`.
    pub fn rebase(&mut self, index: u64, base: Membership, keep_tail: bool) {
        let tail: Vec<(u64, Membership)> = if keep_tail {
            self.entries.drain(..).filter(|(i, _)| *i > index).collect()
        } else {
            Vec::new()
        };
        self.entries = vec![(index, base)];
        self.entries.extend(tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> BTreeSet<NodeId> {
        v.iter().map(|&x| NodeId(x)).collect()
    }

    #[test]
    fn a_joint_quorum_needs_majorities_of_both_voter_sets() {
        let m = Membership::initial(ids(&[1, 2, 3]));
        let joint = m.change(&ids(&[4, 5, 6]), &BTreeSet::new()).expect("valid");
        assert!(joint.is_joint());
        // {1,2,4,5}: majorities of both.
        assert!(joint.is_quorum(|id| [1, 2, 4, 5].contains(&id.0)));
        // {1,2,3,4}: all of C_old but only one of C_new.
        assert!(!joint.is_quorum(|id| [1, 2, 3, 4].contains(&id.0)));
        assert!(!joint.is_quorum(|id| [4, 5, 6].contains(&id.0)));
        assert!(joint.is_blocked(|id| [5, 6].contains(&id.0)));
        let mut scratch = Vec::new();
        // Matches 1..6 = 10,10,0 | 7,7,0 → min(10, 7).
        let matches = [10, 10, 0, 7, 7, 0];
        assert_eq!(joint.quorum_value(|id| matches[id.0 as usize - 1], &mut scratch), 7);
    }

    #[test]
    fn leaving_the_joint_phase_records_the_removed_ids() {
        let m = Membership::initial(ids(&[1, 2, 3]));
        let joint = m.change(&ids(&[2, 3, 4]), &ids(&[5])).expect("valid");
        assert_eq!(joint.outgoing, ids(&[1, 2, 3]));
        assert!(joint.is_voter(NodeId(1)) && !joint.is_removed(NodeId(1)));
        let new = joint.leave_joint();
        assert!(!new.is_joint());
        assert_eq!(new.removed, ids(&[1]));
        assert!(new.is_learner(NodeId(5)));
        assert_eq!(
            new.change(&ids(&[1, 2, 3]), &BTreeSet::new()),
            Err(ConfigChangeError::Removed { id: NodeId(1) })
        );
        assert_eq!(joint.change(&ids(&[2]), &BTreeSet::new()), Err(ConfigChangeError::InProgress));
        // Learner-only changes skip the joint phase.
        let learners = new.change(&new.voters, &BTreeSet::new()).expect("valid");
        assert!(!learners.is_joint());
        assert!(learners.is_removed(NodeId(5)));
    }

    #[test]
    fn invalid_configurations_are_refused() {
        let m = Membership::initial(ids(&[1, 2, 3]));
        assert!(matches!(
            m.change(&BTreeSet::new(), &ids(&[1])),
            Err(ConfigChangeError::Invalid(_))
        ));
        assert!(matches!(m.change(&ids(&[1, 2]), &ids(&[2])), Err(ConfigChangeError::Invalid(_))));
    }

    #[test]
    fn the_config_log_falls_back_when_truncated_and_rebases_on_snapshots() {
        let m1 = Membership::initial(ids(&[1, 2, 3]));
        let m2 = m1.change(&ids(&[1, 2, 3, 4]), &BTreeSet::new()).expect("valid");
        let m3 = m2.leave_joint();
        let mut log = ConfigLog::new(0, m1.clone());
        log.push(5, m2.clone());
        log.push(7, m3.clone());
        assert_eq!(log.latest(), &m3);
        assert_eq!(log.at(6), &m2);
        assert_eq!(log.at(4), &m1);
        log.truncate_from(7);
        assert_eq!(log.latest(), &m2);
        log.truncate_from(1);
        assert_eq!(log.latest(), &m1, "the base stays");
        log.push(5, m2.clone());
        log.push(7, m3.clone());
        log.rebase(6, m2.clone(), true);
        assert_eq!((log.latest_index(), log.at(6)), (7, &m2));
        log.rebase(9, m3.clone(), false);
        assert_eq!((log.latest_index(), log.latest()), (9, &m3));
    }
}
