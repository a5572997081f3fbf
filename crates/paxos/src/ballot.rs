//! Ballots: the totally ordered, per-proposer-unique proposal numbers of
//! Paxos ("Paxos Made Simple" §2.2: "different proposals have different
//! numbers"; Lamport draws them from disjoint sets per proposer).
//!
//! A [`Ballot`] is `(round, node)`, ordered by round first and node id
//! second, so two proposers never pick the same ballot and any proposer can
//! always pick one higher than any it has seen. [`Ballot::ZERO`] is below
//! every real ballot and means "none yet".
//!
//! ```
//! use synod_core::NodeId;
//! use synod_paxos::Ballot;
//! let a = Ballot::new(3, NodeId(1));
//! let b = Ballot::new(3, NodeId(2));
//! assert!(Ballot::ZERO < a && a < b && b < Ballot::new(4, NodeId(1)));
//! assert_eq!(a.next_for(NodeId(2)), Ballot::new(4, NodeId(2)));
//! ```

use std::fmt;
use synod_core::NodeId;

/// A Paxos ballot (proposal number): a round and the proposer that owns it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ballot {
    /// The round; compared first.
    pub round: u64,
    /// The proposer that owns the ballot; breaks ties between rounds.
    pub node: NodeId,
}

impl Ballot {
    /// No ballot: below every ballot a proposer can pick.
    pub const ZERO: Ballot = Ballot { round: 0, node: NodeId(0) };

    /// The ballot `(round, node)`.
    pub const fn new(round: u64, node: NodeId) -> Ballot {
        Ballot { round, node }
    }

    /// The smallest ballot owned by `node` that is above `self`.
    pub fn next_for(self, node: NodeId) -> Ballot {
        Ballot { round: self.round + 1, node }
    }

    /// True for [`Ballot::ZERO`].
    pub fn is_zero(self) -> bool {
        self == Ballot::ZERO
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}.{}", self.round, self.node.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ballots_order_by_round_then_node() {
        let mut ballots = vec![
            Ballot::new(2, NodeId(1)),
            Ballot::new(1, NodeId(3)),
            Ballot::ZERO,
            Ballot::new(1, NodeId(1)),
        ];
        ballots.sort();
        assert_eq!(
            ballots,
            vec![
                Ballot::ZERO,
                Ballot::new(1, NodeId(1)),
                Ballot::new(1, NodeId(3)),
                Ballot::new(2, NodeId(1)),
            ]
        );
        assert_eq!(Ballot::new(1, NodeId(3)).to_string(), "b1.3");
    }

    #[test]
    fn next_for_is_above_and_owned() {
        let seen = Ballot::new(7, NodeId(9));
        let mine = seen.next_for(NodeId(1));
        assert!(mine > seen);
        assert_eq!(mine.node, NodeId(1));
    }
}
