//! The learner ("Paxos Made Simple" §2.3): a value is chosen once a majority
//! of acceptors accepted it in the same ballot. Acceptors send their
//! Phase 2b `Accepted` to every learner.
//!
//! It tallies the acceptors heard per ballot, keeping at most
//! [`MAX_BALLOTS`] ballots (the highest; older tallies are dropped).

use super::Value;
use crate::ballot::Ballot;
use synod_core::{NodeId, quorum};

/// Ballots tallied at once.
pub const MAX_BALLOTS: usize = 16;

/// A learner.
#[derive(Clone, Debug)]
pub struct Learner {
    acceptors: Vec<NodeId>,
    /// Per ballot: the value and a bitmask of acceptor positions heard.
    tallies: Vec<(Ballot, Value, u64)>,
    chosen: Option<Value>,
}

impl Learner {
    /// A learner of a cluster of `acceptors` (at most 64).
    ///
    /// # Panics
    /// If there are none or more than 64.
    pub fn new(acceptors: Vec<NodeId>) -> Learner {
        assert!(!acceptors.is_empty() && acceptors.len() <= 64, "1..=64 acceptors");
        Learner { acceptors, tallies: Vec::new(), chosen: None }
    }

    /// The acceptors it listens to.
    pub fn acceptors(&self) -> &[NodeId] {
        &self.acceptors
    }

    /// The chosen value, once learned.
    pub fn chosen(&self) -> Option<&Value> {
        self.chosen.as_ref()
    }

    /// `from` accepted `value` in `ballot`. Returns the value if this made it
    /// chosen.
    pub fn on_accepted(&mut self, from: NodeId, ballot: Ballot, value: &Value) -> Option<Value> {
        if self.chosen.is_some() {
            return None;
        }
        let position = self.acceptors.iter().position(|&a| a == from)?;
        let tally = match self.tallies.iter().position(|(b, _, _)| *b == ballot) {
            Some(i) => i,
            None => {
                if self.tallies.len() == MAX_BALLOTS {
                    let lowest = (0..self.tallies.len())
                        .min_by_key(|&i| self.tallies[i].0)
                        .expect("the tally list is full");
                    if self.tallies[lowest].0 > ballot {
                        return None;
                    }
                    self.tallies.swap_remove(lowest);
                }
                self.tallies.push((ballot, value.clone(), 0));
                self.tallies.len() - 1
            }
        };
        let (_, tally_value, mask) = &mut self.tallies[tally];
        assert_eq!(tally_value, value, "two values accepted in ballot {ballot}");
        *mask |= 1 << position;
        if quorum::is_majority(mask.count_ones() as usize, self.acceptors.len()) {
            self.chosen = Some(value.clone());
            self.tallies.clear();
            return self.chosen.clone();
        }
        None
    }

    /// Learns that `value` was chosen (told by another learner).
    pub fn learn(&mut self, value: Value) {
        self.chosen.get_or_insert(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_on_a_majority_in_one_ballot_only() {
        let mut l = Learner::new(vec![NodeId(1), NodeId(2), NodeId(3)]);
        let v = Value::from_static(b"v");
        let w = Value::from_static(b"w");
        let b1 = Ballot::new(1, NodeId(1));
        let b2 = Ballot::new(2, NodeId(2));
        assert_eq!(l.on_accepted(NodeId(1), b1, &v), None);
        assert_eq!(l.on_accepted(NodeId(1), b1, &v), None, "duplicates count once");
        assert_eq!(l.on_accepted(NodeId(2), b2, &w), None, "different ballots do not add up");
        assert_eq!(l.on_accepted(NodeId(3), b2, &w), Some(w.clone()));
        assert_eq!(l.chosen(), Some(&w));
        assert_eq!(l.on_accepted(NodeId(9), b1, &v), None);
    }
}
