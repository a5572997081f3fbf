//! Partial-connectivity fault schedules from the OmniPaxos paper (Ng,
//! Haridi, Carbone, EuroSys 2023): topologies in which some servers can
//! reach a quorum and others cannot, which a plain two-sided partition
//! cannot express. Each is a [`FaultProfile`] (`--faults quorum-loss`,
//! `constrained-election`, `chained`) and works with any protocol.
//!
//! Every schedule strikes at [`STRIKE_MS`] (the cluster has a leader and
//! has committed for two seconds by then) and holds until the fault window
//! ends (`fault_window_ms`), when the run heals everything and checks
//! liveness as usual. Who plays which part is decided when the step runs,
//! from the leader of that moment (`L`) and node ids:
//!
//! - **quorum-loss**: a star around the hub `H` (the highest id other than
//!   `L`): only links to `H` stay up. `L` still reaches `H` (so `H` keeps
//!   hearing a leader) but no quorum; `H` is the only quorum-connected
//!   server; every other server reaches only `H` (at most 2 votes).
//! - **constrained-election**: at [`STALE_FROM_MS`] the hub `H` (the highest
//!   id other than the leader) is cut off, so its log goes stale while the
//!   others commit. At the strike `L` is cut off entirely and the rest form a
//!   star around `H`: the only quorum-connected server has an outdated log
//!   (Raft's voting rule refuses it; Paxos may elect it, Phase 1 brings it
//!   up to date).
//! - **chained**: the servers form a line `L – a – b – … – X` (the others in
//!   id order): only neighbours are connected. With 3 servers this is the
//!   paper's `A – B – C` chain; the ends are not quorum-connected, and a
//!   server whose leader sits on the other side of the chain keeps timing
//!   out and can depose leaders along the line.
//!
//! The recovery measured for these schedules (see [`crate::compare`]) is the
//! time from [`STRIKE_MS`] until the cluster commits a position that no log
//! held at the strike.

use crate::faults::{FaultAction, FaultProfile};
use synod_core::NodeId;

/// When every partial-connectivity schedule strikes (virtual ms).
pub const STRIKE_MS: u64 = 2_000;

/// When constrained-election cuts off the server whose log must go stale.
pub const STALE_FROM_MS: u64 = 1_000;

/// One step of a partial-connectivity schedule; the simulator resolves the
/// parts (leader, hub) when it runs the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartialStep {
    /// Cut off the highest-id server other than the leader, both ways.
    IsolateHub,
    /// Star around the hub; see the module doc.
    QuorumLoss,
    /// The leader cut off, a star around the (stale) hub.
    ConstrainedElection,
    /// A line from the leader through the others in id order.
    Chained,
}

impl PartialStep {
    /// The step's name in traces.
    pub fn name(self) -> &'static str {
        match self {
            PartialStep::IsolateHub => "isolate hub",
            PartialStep::QuorumLoss => "quorum-loss",
            PartialStep::ConstrainedElection => "constrained-election",
            PartialStep::Chained => "chained",
        }
    }
}

/// True for the partial-connectivity profiles.
pub fn is_partial(profile: FaultProfile) -> bool {
    !timeline(profile).is_empty()
}

/// The scripted steps of `profile`, as `(time_ms, action)`; empty for the
/// random profiles.
pub fn timeline(profile: FaultProfile) -> Vec<(u64, FaultAction)> {
    let step = |s| FaultAction::Partial(s);
    match profile {
        FaultProfile::QuorumLoss => vec![(STRIKE_MS, step(PartialStep::QuorumLoss))],
        FaultProfile::ConstrainedElection => vec![
            (STALE_FROM_MS, step(PartialStep::IsolateHub)),
            (STRIKE_MS, step(PartialStep::ConstrainedElection)),
        ],
        FaultProfile::Chained => vec![(STRIKE_MS, step(PartialStep::Chained))],
        _ => Vec::new(),
    }
}

/// The links (both directions of each pair) that stay open for `step` in a
/// cluster of `nodes` whose leader is `leader`; every other link is blocked.
/// `isolated` is a server currently cut off from everyone (the stale hub of
/// constrained-election), if any.
pub fn open_links(
    step: PartialStep,
    nodes: usize,
    leader: Option<NodeId>,
    isolated: Option<NodeId>,
) -> Vec<(NodeId, NodeId)> {
    let ids: Vec<NodeId> = (1..=nodes as u64).map(NodeId).collect();
    if ids.len() < 2 {
        return Vec::new();
    }
    let highest_other = |not: NodeId| ids.iter().rev().copied().find(|&i| i != not);
    let lowest_other = |not: NodeId| ids.iter().copied().find(|&i| i != not);
    let all_pairs = |except: &[NodeId]| {
        let mut v = Vec::new();
        for (k, &a) in ids.iter().enumerate() {
            for &b in &ids[k + 1..] {
                if !except.contains(&a) && !except.contains(&b) {
                    v.push((a, b));
                }
            }
        }
        v
    };
    let leader_or = |fallback: NodeId| leader.unwrap_or(fallback);
    match step {
        PartialStep::IsolateHub => {
            let l = leader_or(ids[0]);
            let hub = highest_other(l).expect("two or more nodes");
            all_pairs(&[hub])
        }
        PartialStep::QuorumLoss => {
            let l = leader_or(ids[0]);
            let hub = highest_other(l).expect("two or more nodes");
            ids.iter().filter(|&&i| i != hub).map(|&i| (i, hub)).collect()
        }
        PartialStep::ConstrainedElection => {
            let hub = isolated
                .unwrap_or_else(|| highest_other(leader_or(ids[0])).expect("two or more nodes"));
            let l = leader.filter(|&l| l != hub).or_else(|| lowest_other(hub));
            ids.iter().filter(|&&i| i != hub && Some(i) != l).map(|&i| (i, hub)).collect()
        }
        PartialStep::Chained => {
            let l = leader_or(ids[0]);
            let mut line = vec![l];
            line.extend(ids.iter().copied().filter(|&i| i != l));
            line.windows(2).map(|w| (w[0], w[1])).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u64) -> NodeId {
        NodeId(i)
    }

    fn degree(links: &[(NodeId, NodeId)], node: u64) -> usize {
        links.iter().filter(|(a, b)| a.0 == node || b.0 == node).count()
    }

    /// Servers connected (with themselves) to a majority of `nodes`.
    fn quorum_connected(links: &[(NodeId, NodeId)], nodes: usize) -> Vec<u64> {
        (1..=nodes as u64).filter(|&i| degree(links, i) + 1 > nodes / 2).collect()
    }

    #[test]
    fn quorum_loss_leaves_only_the_hub_quorum_connected() {
        let links = open_links(PartialStep::QuorumLoss, 5, Some(n(5)), None);
        assert_eq!(quorum_connected(&links, 5), vec![4]);
        assert!(links.contains(&(n(5), n(4))), "the old leader still reaches the hub");
        assert_eq!(degree(&links, 5), 1);
    }

    #[test]
    fn constrained_election_cuts_the_leader_and_centres_the_stale_hub() {
        let hub = open_links(PartialStep::IsolateHub, 5, Some(n(2)), None);
        assert_eq!(degree(&hub, 5), 0, "the hub is cut off first");
        assert_eq!(degree(&hub, 2), 3);
        let links = open_links(PartialStep::ConstrainedElection, 5, Some(n(2)), Some(n(5)));
        assert_eq!(degree(&links, 2), 0, "the leader is cut off");
        assert_eq!(quorum_connected(&links, 5), vec![5]);
    }

    #[test]
    fn chained_is_a_line_from_the_leader() {
        let links = open_links(PartialStep::Chained, 3, Some(n(2)), None);
        assert_eq!(links, vec![(n(2), n(1)), (n(1), n(3))]);
        let five = open_links(PartialStep::Chained, 5, Some(n(3)), None);
        assert_eq!(five.len(), 4);
        assert_eq!(quorum_connected(&five, 5), vec![1, 2, 4], "the two ends are not");
    }

    #[test]
    fn only_partial_profiles_have_a_timeline() {
        assert!(is_partial(FaultProfile::QuorumLoss));
        assert!(is_partial(FaultProfile::Chained));
        assert_eq!(timeline(FaultProfile::ConstrainedElection).len(), 2);
        assert!(!is_partial(FaultProfile::All) && !is_partial(FaultProfile::None));
    }
}
