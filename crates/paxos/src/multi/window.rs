//! The leader's Phase 2 tally: for each slot in flight (after the chosen
//! slot, up to the last proposed one) a bitmask of the acceptors that
//! accepted it in the leader's ballot. A slot is chosen once a majority
//! accepted it; the chosen slot advances over consecutive chosen slots.

use std::collections::VecDeque;
use synod_core::quorum;

/// Per in-flight slot, who accepted it.
#[derive(Clone, Debug, Default)]
pub struct AckWindow {
    /// The slot before `masks[0]` (the leader's chosen slot).
    base_slot: u64,
    masks: VecDeque<u64>,
}

impl AckWindow {
    /// Starts over after `chosen_slot`, with nothing in flight.
    pub fn reset(&mut self, chosen_slot: u64) {
        self.base_slot = chosen_slot;
        self.masks.clear();
    }

    /// The highest slot in flight (the chosen slot when none).
    pub fn last_slot(&self) -> u64 {
        self.base_slot + self.masks.len() as u64
    }

    /// Slots in flight.
    pub fn len(&self) -> usize {
        self.masks.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    /// Adds the next slot, accepted so far by the acceptors in `mask`.
    pub fn push(&mut self, mask: u64) {
        self.masks.push_back(mask);
    }

    /// The acceptor with bit `bit` accepted every slot of `first..=last`.
    pub fn mark(&mut self, first: u64, last: u64, bit: u64) {
        let from = first.max(self.base_slot + 1);
        let to = last.min(self.last_slot());
        for slot in from..=to {
            self.masks[(slot - self.base_slot - 1) as usize] |= bit;
        }
    }

    /// The first in-flight slot that acceptor `bit` has not accepted.
    pub fn first_missing(&self, bit: u64) -> Option<u64> {
        let i = self.masks.iter().position(|m| m & bit == 0)?;
        Some(self.base_slot + 1 + i as u64)
    }

    /// Pops every leading slot a majority of `voters` accepted; returns the
    /// new chosen slot.
    pub fn advance(&mut self, voters: usize) -> u64 {
        while let Some(&mask) = self.masks.front() {
            if !quorum::is_majority(mask.count_ones() as usize, voters) {
                break;
            }
            self.masks.pop_front();
            self.base_slot += 1;
        }
        self.base_slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_chosen_in_order_on_a_majority() {
        let mut w = AckWindow::default();
        w.reset(10);
        w.push(0b001);
        w.push(0b001);
        w.push(0b001);
        assert_eq!(w.last_slot(), 13);
        w.mark(12, 13, 0b010);
        assert_eq!(w.advance(3), 10, "slot 11 is not chosen yet");
        assert_eq!(w.first_missing(0b010), Some(11));
        assert_eq!(w.advance(5), 10);
        w.mark(5, 11, 0b100);
        assert_eq!(w.advance(5), 10, "2 of 5 is not a majority");
        w.mark(11, 12, 0b1000);
        assert_eq!(w.advance(5), 12, "3 of 5 is");
        w.mark(13, 99, 0b100);
        assert_eq!(w.advance(3), 13);
        assert!(w.is_empty());
    }
}
