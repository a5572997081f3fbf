//! Leadership transfer (thesis §3.10), as the leader tracks it.
//!
//! The leader stops accepting proposals, brings the target's log up to date,
//! then sends it `TimeoutNow`; the target campaigns at once (skipping
//! pre-vote, with `transfer: true` so voters ignore their lease on the old
//! leader). If no new leader emerged within an election timeout the transfer
//! is abandoned and the leader accepts proposals again.

use synod_core::{NodeId, Time};

/// A leadership transfer in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The node that should become leader.
    pub to: NodeId,
    /// When the transfer is abandoned.
    pub deadline: Time,
    /// Whether `TimeoutNow` was sent.
    pub timeout_now_sent: bool,
}

impl Transfer {
    /// A transfer to `to`, abandoned at `deadline`.
    pub fn new(to: NodeId, deadline: Time) -> Transfer {
        Transfer { to, deadline, timeout_now_sent: false }
    }

    /// True once `now` reaches the deadline.
    pub fn expired(&self, now: Time) -> bool {
        now >= self.deadline
    }

    /// Whether the leader should send `TimeoutNow` to `follower`, whose log
    /// matches up to `match_index`, given the leader's `last_index`. True at
    /// most once per transfer.
    pub fn ready_to_hand_over(
        &mut self,
        follower: NodeId,
        match_index: u64,
        last_index: u64,
    ) -> bool {
        if follower != self.to || self.timeout_now_sent || match_index < last_index {
            return false;
        }
        self.timeout_now_sent = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_over_once_the_target_caught_up_and_only_once() {
        let mut t = Transfer::new(NodeId(2), Time::from_millis(10));
        assert!(!t.ready_to_hand_over(NodeId(2), 4, 5), "target behind");
        assert!(!t.ready_to_hand_over(NodeId(3), 5, 5), "not the target");
        assert!(t.ready_to_hand_over(NodeId(2), 5, 5));
        assert!(!t.ready_to_hand_over(NodeId(2), 5, 5), "sent already");
    }

    #[test]
    fn expires_at_the_deadline() {
        let t = Transfer::new(NodeId(2), Time::from_millis(10));
        assert!(!t.expired(Time::from_millis(9)));
        assert!(t.expired(Time::from_millis(10)));
    }
}
