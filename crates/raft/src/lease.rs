//! The leader lease for lease reads (thesis §6.4.1).
//!
//! With check-quorum on, a follower that heard from its leader ignores
//! vote and pre-vote requests for `election_timeout_min` after that
//! (leadership transfers aside), and its own election timer fires no
//! sooner either. So once a quorum acknowledged a heartbeat round the
//! leader *sent* at time `T`, no other leader can be elected before `T +
//! election_timeout_min` — measured on the followers' clocks. On the
//! leader's clock that is at least `T + election_timeout_min × (1 −
//! max_clock_drift)` when clock rates differ by at most `max_clock_drift`
//! (the documented assumption of [`ReadMode::Lease`](crate::ReadMode)).
//! Until then the leader answers reads at its commit index without a round
//! trip.
//!
//! The hazards the caller handles: a leadership transfer bypasses the
//! followers' lease, so the lease is void in a term in which the leader
//! sent `TimeoutNow`; a follower that restarts forgets when it last heard
//! from the leader, so in lease mode a node refuses votes for
//! `election_timeout_min` after it boots; and a new leader serves lease
//! reads only after it committed an entry of its term (its commit index is
//! then the latest).
//!
//! [`Lease`] keeps the send times of the latest heartbeat rounds (bounded)
//! and turns the newest round a quorum confirmed into an expiry time.

use std::collections::VecDeque;
use std::time::Duration;
use synod_core::Time;

/// Heartbeat rounds remembered; older ones can only give an expired lease.
const MAX_ROUNDS: usize = 64;

/// The send times of a leader's recent read rounds.
#[derive(Clone, Debug)]
pub struct Lease {
    /// `(round, sent_at)`, ascending.
    rounds: VecDeque<(u64, Time)>,
    /// How long a confirmed round's lease lasts on the leader's clock.
    duration: Duration,
}

impl Lease {
    /// A lease of `election_timeout_min × (1 − max_clock_drift)` per
    /// confirmed round.
    ///
    /// # Panics
    /// If `max_clock_drift` is not in `[0, 1)`.
    pub fn new(election_timeout_min: Duration, max_clock_drift: f64) -> Lease {
        assert!((0.0..1.0).contains(&max_clock_drift), "max_clock_drift must be in [0, 1)");
        Lease {
            rounds: VecDeque::new(),
            duration: election_timeout_min.mul_f64(1.0 - max_clock_drift),
        }
    }

    /// How long a confirmed round's lease lasts.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Forgets every round (a new term starts).
    pub fn clear(&mut self) {
        self.rounds.clear();
    }

    /// Round `round` was sent at `sent_at`.
    pub fn record(&mut self, round: u64, sent_at: Time) {
        if self.rounds.back().is_some_and(|&(r, _)| r >= round) {
            return;
        }
        if self.rounds.len() == MAX_ROUNDS {
            self.rounds.pop_front();
        }
        self.rounds.push_back((round, sent_at));
    }

    /// When the lease ends, given the newest round a quorum confirmed
    /// (`None`: no recorded round is confirmed).
    pub fn expiry(&self, confirmed_round: u64) -> Option<Time> {
        let &(_, sent_at) = self.rounds.iter().rev().find(|&&(r, _)| r <= confirmed_round)?;
        Some(sent_at + self.duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_runs_from_the_send_time_of_the_newest_confirmed_round() {
        let mut lease = Lease::new(Duration::from_millis(150), 0.1);
        assert_eq!(lease.duration(), Duration::from_millis(135));
        assert_eq!(lease.expiry(5), None, "nothing sent yet");
        lease.record(3, Time::from_millis(100));
        lease.record(4, Time::from_millis(150));
        assert_eq!(lease.expiry(2), None, "a round from before the term");
        assert_eq!(lease.expiry(3), Some(Time::from_millis(235)));
        // Round 5 was never recorded (a read's round): 4 is the newest sent.
        assert_eq!(lease.expiry(5), Some(Time::from_millis(285)));
        lease.clear();
        assert_eq!(lease.expiry(5), None);
    }

    #[test]
    fn rounds_are_bounded_and_only_go_forward() {
        let mut lease = Lease::new(Duration::from_millis(100), 0.0);
        for r in 1..=200 {
            lease.record(r, Time::from_millis(r));
        }
        lease.record(7, Time::from_millis(999));
        assert_eq!(lease.rounds.len(), MAX_ROUNDS);
        assert_eq!(lease.expiry(200), Some(Time::from_millis(300)));
        assert_eq!(lease.expiry(100), None, "forgotten: treated as expired");
    }

    #[test]
    #[should_panic(expected = "max_clock_drift")]
    fn a_drift_of_one_or_more_is_refused() {
        Lease::new(Duration::from_millis(100), 1.0);
    }
}
