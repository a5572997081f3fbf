//! Fault actions and the random fault schedule.
//!
//! A [`FaultAction`] is one thing that can go wrong (or be repaired): the
//! scenario files name them, and the random generator picks them from the
//! run's seed according to a [`FaultProfile`]. The generator is a pure
//! function of the random stream and a [`ClusterView`], so it is tested on
//! its own; the simulator carries the actions out.

use crate::rng::SimRng;
use std::collections::BTreeSet;
use synod_core::NodeId;

/// Which random faults a run injects during its fault window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultProfile {
    /// No random faults.
    #[default]
    None,
    /// Network faults: loss, duplication and reordering bursts, partitions
    /// (random splits, one-way blocks, an isolated leader).
    Net,
    /// Node faults: crashes and restarts (the leader too), pauses.
    Crash,
    /// Snapshot faults: snapshots taken at random moments, long outages of
    /// one node (so it must catch up by InstallSnapshot), crashes (also in
    /// the middle of an install).
    Snapshot,
    /// Everything above, plus clock drift and membership churn.
    All,
    /// Partial connectivity: the leader loses its quorum, only one server
    /// stays quorum-connected (see [`crate::partial`]).
    QuorumLoss,
    /// Partial connectivity: the only quorum-connected server has a stale
    /// log (see [`crate::partial`]).
    ConstrainedElection,
    /// Partial connectivity: the servers form a line (see
    /// [`crate::partial`]).
    Chained,
    /// Membership churn: learners added and promoted, voters removed (the
    /// leader too) between [`MIN_VOTERS`] and [`MAX_VOTERS`], leadership
    /// transfers; the run gets spare node ids to add (see
    /// [`SimProtocol::membership_spares`](crate::SimProtocol::membership_spares)).
    Membership,
}

impl FaultProfile {
    /// The profile's name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            FaultProfile::None => "none",
            FaultProfile::Net => "net",
            FaultProfile::Crash => "crash",
            FaultProfile::Snapshot => "snapshot",
            FaultProfile::All => "all",
            FaultProfile::QuorumLoss => "quorum-loss",
            FaultProfile::ConstrainedElection => "constrained-election",
            FaultProfile::Chained => "chained",
            FaultProfile::Membership => "membership",
        }
    }

    /// Parses `none | net | crash | snapshot | membership | all |
    /// quorum-loss | constrained-election | chained`.
    pub fn parse(s: &str) -> Result<FaultProfile, String> {
        match s {
            "none" => Ok(FaultProfile::None),
            "net" => Ok(FaultProfile::Net),
            "crash" => Ok(FaultProfile::Crash),
            "snapshot" => Ok(FaultProfile::Snapshot),
            "all" => Ok(FaultProfile::All),
            "quorum-loss" => Ok(FaultProfile::QuorumLoss),
            "constrained-election" => Ok(FaultProfile::ConstrainedElection),
            "chained" => Ok(FaultProfile::Chained),
            "membership" => Ok(FaultProfile::Membership),
            _ => Err(format!(
                "unknown fault profile `{s}` (expected none, net, crash, snapshot, membership, \
                 all, quorum-loss, constrained-election or chained)"
            )),
        }
    }

    fn network(self) -> bool {
        matches!(self, FaultProfile::Net | FaultProfile::All)
    }

    fn nodes(self) -> bool {
        matches!(self, FaultProfile::Crash | FaultProfile::All)
    }

    fn snapshots(self) -> bool {
        matches!(self, FaultProfile::Snapshot | FaultProfile::All)
    }

    /// True when the profile changes the membership (the run then needs
    /// spare node ids).
    pub fn includes_membership(self) -> bool {
        matches!(self, FaultProfile::Membership | FaultProfile::All)
    }
}

/// Fewest voters membership churn leaves.
pub const MIN_VOTERS: usize = 3;
/// Most voters membership churn creates.
pub const MAX_VOTERS: usize = 7;

/// A random membership change, resolved against the leader's configuration
/// when it strikes (see [`plan_membership_change`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add a spare that was never a member as a learner.
    AddLearner,
    /// Promote a learner to voter (refused while it is not caught up).
    Promote,
    /// Remove a voter other than the leader.
    RemoveVoter,
    /// Remove the leader (replaced by a learner at [`MIN_VOTERS`]).
    RemoveLeader,
    /// Remove a learner.
    RemoveLearner,
}

/// The configuration a membership fault sees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimMembership {
    /// The voters (C_new during a joint phase).
    pub voters: BTreeSet<NodeId>,
    /// The outgoing voters during a joint phase.
    pub outgoing: BTreeSet<NodeId>,
    /// The learners.
    pub learners: BTreeSet<NodeId>,
    /// Ids removed for good.
    pub removed: BTreeSet<NodeId>,
}

/// The voters and learners `change` asks for, from configuration `m` led
/// by `leader`, among node ids `1..=ids`; `pick` chooses which node.
/// `None` when the change does not apply (bounds, nobody to pick).
pub fn plan_membership_change(
    change: MembershipChange,
    m: &SimMembership,
    leader: NodeId,
    ids: usize,
    pick: u64,
) -> Option<(BTreeSet<NodeId>, BTreeSet<NodeId>)> {
    let choose = |from: Vec<NodeId>| (!from.is_empty()).then(|| from[pick as usize % from.len()]);
    let (mut voters, mut learners) = (m.voters.clone(), m.learners.clone());
    match change {
        MembershipChange::AddLearner => {
            if voters.len() + learners.len() >= MAX_VOTERS {
                return None;
            }
            let fresh = (1..=ids as u64)
                .map(NodeId)
                .filter(|id| !m.voters.contains(id) && !m.outgoing.contains(id))
                .filter(|id| !m.learners.contains(id) && !m.removed.contains(id))
                .collect();
            learners.insert(choose(fresh)?);
        }
        MembershipChange::Promote => {
            if voters.len() >= MAX_VOTERS {
                return None;
            }
            let id = choose(learners.iter().copied().collect())?;
            learners.remove(&id);
            voters.insert(id);
        }
        MembershipChange::RemoveVoter => {
            if voters.len() <= MIN_VOTERS {
                return None;
            }
            voters.remove(&choose(voters.iter().copied().filter(|&v| v != leader).collect())?);
        }
        MembershipChange::RemoveLeader => {
            if !voters.remove(&leader) {
                return None;
            }
            if voters.len() < MIN_VOTERS {
                let id = choose(learners.iter().copied().collect())?;
                learners.remove(&id);
                voters.insert(id);
            }
        }
        MembershipChange::RemoveLearner => {
            learners.remove(&choose(learners.iter().copied().collect())?);
        }
    }
    Some((voters, learners))
}

/// One fault or repair.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    /// Crash a node: its volatile state and unsynced writes are lost.
    Crash(NodeId),
    /// Restart a crashed node from its durable state.
    Restart(NodeId),
    /// Crash whichever node currently leads (nothing if none does).
    CrashLeader,
    /// Split the replicas into groups (see [`crate::net::Network::partition`]).
    Partition(Vec<Vec<NodeId>>),
    /// Cut one node off, both ways.
    Isolate(NodeId),
    /// Cut the current leader off, both ways.
    IsolateLeader,
    /// Block the directed link `from → to`.
    Block {
        /// Sender side.
        from: NodeId,
        /// Receiver side.
        to: NodeId,
    },
    /// Open every link and restore the base loss, duplication and reordering.
    Heal,
    /// Open every link (rates unchanged).
    HealLinks,
    /// Set the loss probability.
    Loss(f64),
    /// Set the duplication probability.
    Duplicate(f64),
    /// Set the long-detour (reordering) probability.
    Reorder(f64),
    /// Pause a node (it handles nothing; messages to it wait).
    Pause(NodeId),
    /// Resume a paused node.
    Resume(NodeId),
    /// Set a node's clock rate to `1 + ppm / 1e6`.
    Drift {
        /// The node.
        node: NodeId,
        /// Parts per million, may be negative.
        ppm: i64,
    },
    /// Ask the leader to hand over leadership (to `to`, or to any peer).
    TransferLeader {
        /// The new leader, if chosen.
        to: Option<NodeId>,
    },
    /// Ask a node's core to take a snapshot now (see
    /// [`SimProtocol::trigger_snapshot`](crate::SimProtocol::trigger_snapshot)).
    Snapshot(NodeId),
    /// Set a partial-connectivity topology (see [`crate::partial`]).
    Partial(crate::partial::PartialStep),
    /// Ask the leader for a membership change (see
    /// [`plan_membership_change`]).
    ChangeMembership {
        /// What to change.
        change: MembershipChange,
        /// Chooses the node it concerns.
        pick: u64,
    },
}

impl FaultAction {
    /// The action's name as scenario files spell it.
    pub fn name(&self) -> &'static str {
        match self {
            FaultAction::Crash(_) => "crash",
            FaultAction::Restart(_) => "restart",
            FaultAction::CrashLeader => "crash_leader",
            FaultAction::Partition(_) => "partition",
            FaultAction::Isolate(_) => "isolate",
            FaultAction::IsolateLeader => "isolate_leader",
            FaultAction::Block { .. } => "block",
            FaultAction::Heal => "heal",
            FaultAction::HealLinks => "heal_links",
            FaultAction::Loss(_) => "loss",
            FaultAction::Duplicate(_) => "duplicate",
            FaultAction::Reorder(_) => "reorder",
            FaultAction::Pause(_) => "pause",
            FaultAction::Resume(_) => "resume",
            FaultAction::Drift { .. } => "drift",
            FaultAction::TransferLeader { .. } => "transfer_leader",
            FaultAction::Snapshot(_) => "snapshot",
            FaultAction::Partial(_) => "partial",
            FaultAction::ChangeMembership { .. } => "change_membership",
        }
    }
}

/// Knobs of the random fault schedule.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaultConfig {
    /// Mean time between two random faults.
    pub mean_interval_ms: u64,
    /// Shortest and longest time before a fault is undone (restart, resume,
    /// heal, end of a loss burst).
    pub min_duration_ms: u64,
    /// See `min_duration_ms`.
    pub max_duration_ms: u64,
    /// Probability that a crash or pause may take down more than a minority
    /// (to exercise the no-progress case; liveness is only checked after heal).
    pub majority_down_probability: f64,
    /// Largest clock drift, in parts per million, either way.
    pub max_drift_ppm: i64,
    /// Probability that a crash keeps a random prefix of the unsynced writes
    /// (a partially flushed log) instead of losing them all.
    pub torn_write_probability: f64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            mean_interval_ms: 400,
            min_duration_ms: 100,
            max_duration_ms: 2_500,
            majority_down_probability: 0.05,
            max_drift_ppm: 2_000,
            torn_write_probability: 0.5,
        }
    }
}

/// What the fault generator knows about the cluster.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// Replicas, ids `1..=nodes`.
    pub nodes: usize,
    /// Crashed replicas (index `id - 1`).
    pub down: Vec<bool>,
    /// Paused replicas.
    pub paused: Vec<bool>,
    /// The current leader, if any.
    pub leader: Option<NodeId>,
    /// The voters in effect (C_old ∪ C_new during a joint phase); empty
    /// when every replica votes. Node faults keep a majority of them up.
    pub voters: Vec<NodeId>,
}

impl ClusterView {
    fn is_voter(&self, i: usize) -> bool {
        self.voters.is_empty() || self.voters.contains(&NodeId(i as u64 + 1))
    }

    fn voter_count(&self) -> usize {
        if self.voters.is_empty() { self.nodes } else { self.voters.len() }
    }

    fn unavailable(&self) -> usize {
        (0..self.nodes).filter(|&i| self.is_voter(i) && (self.down[i] || self.paused[i])).count()
    }

    /// The voters that are up.
    fn available(&self) -> Vec<NodeId> {
        (0..self.nodes)
            .filter(|&i| self.is_voter(i) && !self.down[i] && !self.paused[i])
            .map(|i| NodeId(i as u64 + 1))
            .collect()
    }
}

/// A fault and, if it is temporary, when and how to undo it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedFault {
    /// The fault.
    pub action: FaultAction,
    /// Microseconds from now and the repair, for temporary faults.
    pub undo: Option<(u64, FaultAction)>,
}

/// Picks the next random fault for `profile` (`None` when the profile
/// injects none or nothing applies right now).
pub fn next_fault(
    rng: &mut SimRng,
    profile: FaultProfile,
    config: &FaultConfig,
    view: &ClusterView,
) -> Option<PlannedFault> {
    let mut menu: Vec<u8> = Vec::with_capacity(12);
    if profile.network() {
        menu.extend_from_slice(&[0, 1, 2, 3, 3, 4, 5]);
    }
    if profile.nodes() {
        menu.extend_from_slice(&[6, 6, 7, 8]);
    }
    if profile == FaultProfile::All {
        menu.push(9);
    }
    if profile.snapshots() {
        menu.extend_from_slice(&[10, 10, 11, 12]);
    }
    if profile.includes_membership() {
        menu.extend_from_slice(&[13, 13, 13, 14]);
    }
    if menu.is_empty() || view.nodes == 0 {
        return None;
    }
    let duration = |rng: &mut SimRng| {
        1000 * rng
            .between(config.min_duration_ms, config.max_duration_ms.max(config.min_duration_ms))
    };
    let n = view.nodes;
    let node = |rng: &mut SimRng| NodeId(rng.below(n as u64) + 1);
    let planned = match menu[rng.index(menu.len())] {
        0 => PlannedFault {
            action: FaultAction::Loss(0.05 + 0.3 * rng.unit()),
            undo: Some((duration(rng), FaultAction::Loss(0.0))),
        },
        1 => PlannedFault {
            action: FaultAction::Duplicate(0.05 + 0.2 * rng.unit()),
            undo: Some((duration(rng), FaultAction::Duplicate(0.0))),
        },
        2 => PlannedFault {
            action: FaultAction::Reorder(0.05 + 0.3 * rng.unit()),
            undo: Some((duration(rng), FaultAction::Reorder(0.0))),
        },
        3 => {
            // A random split into a minority and a majority side.
            let mut ids: Vec<NodeId> = (1..=n as u64).map(NodeId).collect();
            for i in (1..ids.len()).rev() {
                let j = rng.index(i + 1);
                ids.swap(i, j);
            }
            let cut = 1 + rng.index((n / 2).max(1));
            let (a, b) = ids.split_at(cut.min(n));
            PlannedFault {
                action: FaultAction::Partition(vec![a.to_vec(), b.to_vec()]),
                undo: Some((duration(rng), FaultAction::HealLinks)),
            }
        }
        4 => {
            let from = node(rng);
            let to = node(rng);
            PlannedFault {
                action: FaultAction::Block { from, to },
                undo: Some((duration(rng), FaultAction::HealLinks)),
            }
        }
        5 => {
            let target = view.leader.unwrap_or_else(|| node(rng));
            PlannedFault {
                action: FaultAction::Isolate(target),
                undo: Some((duration(rng), FaultAction::HealLinks)),
            }
        }
        k @ 6..=8 => {
            let minority = (view.voter_count().max(1) - 1) / 2;
            if view.unavailable() >= minority && !rng.chance(config.majority_down_probability) {
                return None;
            }
            let up = view.available();
            if up.is_empty() {
                return None;
            }
            let target = match (k, view.leader) {
                (7, Some(l)) if up.contains(&l) => l,
                _ => up[rng.index(up.len())],
            };
            if k == 8 {
                PlannedFault {
                    action: FaultAction::Pause(target),
                    undo: Some((duration(rng), FaultAction::Resume(target))),
                }
            } else {
                PlannedFault {
                    action: FaultAction::Crash(target),
                    undo: Some((duration(rng), FaultAction::Restart(target))),
                }
            }
        }
        10 => PlannedFault { action: FaultAction::Snapshot(node(rng)), undo: None },
        11 => {
            // A long outage of one follower: the log moves on without it.
            let up = view.available();
            let followers: Vec<NodeId> =
                up.into_iter().filter(|&id| Some(id) != view.leader).collect();
            if followers.is_empty() {
                return None;
            }
            let target = followers[rng.index(followers.len())];
            PlannedFault {
                action: FaultAction::Isolate(target),
                undo: Some((3 * duration(rng), FaultAction::HealLinks)),
            }
        }
        12 => {
            // A crash soon after a heal: often in the middle of an install.
            let up = view.available();
            let minority = (view.voter_count().max(1) - 1) / 2;
            if up.is_empty() || view.unavailable() >= minority {
                return None;
            }
            let target = up[rng.index(up.len())];
            PlannedFault {
                action: FaultAction::Crash(target),
                undo: Some((duration(rng) / 4, FaultAction::Restart(target))),
            }
        }
        13 => {
            const CHANGES: [MembershipChange; 7] = [
                MembershipChange::AddLearner,
                MembershipChange::AddLearner,
                MembershipChange::Promote,
                MembershipChange::Promote,
                MembershipChange::RemoveVoter,
                MembershipChange::RemoveLeader,
                MembershipChange::RemoveLearner,
            ];
            let change = CHANGES[rng.index(CHANGES.len())];
            PlannedFault {
                action: FaultAction::ChangeMembership { change, pick: rng.next_u64() },
                undo: None,
            }
        }
        14 => {
            let others: Vec<NodeId> =
                view.available().into_iter().filter(|&id| Some(id) != view.leader).collect();
            if others.is_empty() {
                return None;
            }
            let to = Some(others[rng.index(others.len())]);
            PlannedFault { action: FaultAction::TransferLeader { to }, undo: None }
        }
        _ => {
            let max = config.max_drift_ppm.max(0);
            let ppm = rng.between(0, 2 * max as u64) as i64 - max;
            PlannedFault { action: FaultAction::Drift { node: node(rng), ppm }, undo: None }
        }
    };
    Some(planned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(n: usize) -> ClusterView {
        ClusterView {
            nodes: n,
            down: vec![false; n],
            paused: vec![false; n],
            leader: Some(NodeId(1)),
            voters: Vec::new(),
        }
    }

    #[test]
    fn profiles_only_pick_their_own_faults() {
        let cfg = FaultConfig::default();
        let mut rng = SimRng::new(9);
        assert_eq!(next_fault(&mut rng, FaultProfile::None, &cfg, &view(5)), None);
        for _ in 0..500 {
            if let Some(p) = next_fault(&mut rng, FaultProfile::Net, &cfg, &view(5)) {
                assert!(!matches!(
                    p.action,
                    FaultAction::Crash(_) | FaultAction::Pause(_) | FaultAction::Drift { .. }
                ));
            }
            if let Some(p) = next_fault(&mut rng, FaultProfile::Crash, &cfg, &view(5)) {
                assert!(matches!(p.action, FaultAction::Crash(_) | FaultAction::Pause(_)));
                assert!(p.undo.is_some());
            }
        }
    }

    #[test]
    fn node_faults_keep_a_majority_up_unless_the_dice_say_otherwise() {
        let cfg = FaultConfig { majority_down_probability: 0.0, ..FaultConfig::default() };
        let mut rng = SimRng::new(4);
        let mut v = view(5);
        v.down[1] = true;
        v.paused[2] = true;
        for _ in 0..200 {
            assert_eq!(next_fault(&mut rng, FaultProfile::Crash, &cfg, &v), None);
        }
    }

    #[test]
    fn partitions_split_every_node_into_exactly_one_group() {
        let cfg = FaultConfig::default();
        let mut rng = SimRng::new(11);
        let mut seen = 0;
        for _ in 0..300 {
            if let Some(PlannedFault { action: FaultAction::Partition(g), .. }) =
                next_fault(&mut rng, FaultProfile::Net, &cfg, &view(5))
            {
                seen += 1;
                let mut all: Vec<u64> = g.iter().flatten().map(|n| n.0).collect();
                all.sort();
                assert_eq!(all, vec![1, 2, 3, 4, 5]);
                assert!(g[0].len() <= 2, "first side is the minority");
            }
        }
        assert!(seen > 0);
    }

    #[test]
    fn profile_names_round_trip() {
        for p in [
            FaultProfile::None,
            FaultProfile::Net,
            FaultProfile::Crash,
            FaultProfile::All,
            FaultProfile::QuorumLoss,
            FaultProfile::ConstrainedElection,
            FaultProfile::Chained,
            FaultProfile::Membership,
        ] {
            assert_eq!(FaultProfile::parse(p.name()), Ok(p));
        }
        assert!(FaultProfile::All.includes_membership());
        assert!(!FaultProfile::Net.includes_membership());
        assert!(FaultProfile::parse("chaos").unwrap_err().contains("chaos"));
    }

    fn ids(v: &[u64]) -> BTreeSet<NodeId> {
        v.iter().map(|&x| NodeId(x)).collect()
    }

    #[test]
    fn membership_changes_stay_between_three_and_seven_voters() {
        use MembershipChange::*;
        let m = |voters: &[u64], learners: &[u64], removed: &[u64]| SimMembership {
            voters: ids(voters),
            learners: ids(learners),
            removed: ids(removed),
            ..SimMembership::default()
        };
        let l = NodeId(1);
        let three = m(&[1, 2, 3], &[], &[4]);
        // A fresh id, never a removed one.
        assert_eq!(
            plan_membership_change(AddLearner, &three, l, 6, 0),
            Some((ids(&[1, 2, 3]), ids(&[5])))
        );
        assert_eq!(plan_membership_change(RemoveVoter, &three, l, 6, 0), None, "at the minimum");
        assert_eq!(
            plan_membership_change(RemoveLeader, &three, l, 6, 0),
            None,
            "nobody to promote"
        );
        let with_learner = m(&[1, 2, 3], &[5], &[]);
        assert_eq!(
            plan_membership_change(RemoveLeader, &with_learner, l, 6, 0),
            Some((ids(&[2, 3, 5]), ids(&[]))),
            "the leader is replaced by a learner"
        );
        assert_eq!(
            plan_membership_change(Promote, &with_learner, l, 6, 3),
            Some((ids(&[1, 2, 3, 5]), ids(&[])))
        );
        let seven = m(&[1, 2, 3, 4, 5, 6, 7], &[], &[]);
        assert_eq!(plan_membership_change(AddLearner, &seven, l, 9, 0), None, "at the maximum");
        let (voters, _) = plan_membership_change(RemoveVoter, &seven, l, 9, 0).expect("applies");
        assert_eq!(voters.len(), 6);
        assert!(voters.contains(&l), "RemoveVoter spares the leader");
        assert_eq!(plan_membership_change(RemoveLearner, &seven, l, 9, 0), None);
    }

    #[test]
    fn node_faults_count_only_voters_when_spares_run() {
        let cfg = FaultConfig { majority_down_probability: 0.0, ..FaultConfig::default() };
        let mut rng = SimRng::new(3);
        let mut v = view(8);
        v.voters = ids(&[1, 2, 3]).into_iter().collect();
        v.down[1] = true;
        for _ in 0..200 {
            assert_eq!(next_fault(&mut rng, FaultProfile::Crash, &cfg, &v), None);
        }
        v.down[1] = false;
        v.down[6] = true;
        let mut crashed = 0;
        for _ in 0..200 {
            if let Some(PlannedFault { action: FaultAction::Crash(id), .. }) =
                next_fault(&mut rng, FaultProfile::Crash, &cfg, &v)
            {
                assert!(id.0 <= 3, "only voters are targeted");
                crashed += 1;
            }
        }
        assert!(crashed > 0);
    }
}
