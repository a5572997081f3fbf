//! A randomized timer: election timeouts (Multi-Paxos) and duelling
//! proposers' back-off (single-decree Paxos).
//!
//! Each timeout is drawn uniformly from `[min, max)` with a ChaCha8
//! generator seeded by the driver — the cores' only randomness, so a seed
//! replays exactly.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;
use synod_core::Time;

/// A timer that fires after a random timeout.
#[derive(Clone, Debug)]
pub struct RandomTimer {
    rng: ChaCha8Rng,
    min_us: u64,
    max_us: u64,
    timeout_us: u64,
    deadline: Time,
}

impl RandomTimer {
    /// A timer drawing from `[min, max)` with randomness from `seed`,
    /// started at `now`.
    ///
    /// # Panics
    /// If the range is empty.
    pub fn new(seed: u64, min: Duration, max: Duration, now: Time) -> RandomTimer {
        let mut timer = RandomTimer {
            rng: ChaCha8Rng::seed_from_u64(seed),
            min_us: min.as_micros() as u64,
            max_us: max.as_micros() as u64,
            timeout_us: 0,
            deadline: Time::MAX,
        };
        assert!(timer.min_us < timer.max_us, "timer range is empty");
        timer.reset(now);
        timer
    }

    /// Draws a new timeout and starts it at `now`.
    pub fn reset(&mut self, now: Time) {
        self.timeout_us = self.rng.random_range(self.min_us..self.max_us);
        self.restart(now);
    }

    /// Draws a new timeout `factor` times the usual range and starts it at
    /// `now` (back-off after repeated failures).
    pub fn reset_scaled(&mut self, now: Time, factor: u64) {
        let factor = factor.max(1);
        self.timeout_us =
            self.rng.random_range(self.min_us * factor..self.max_us.saturating_mul(factor));
        self.restart(now);
    }

    /// Starts the current timeout again at `now`.
    pub fn restart(&mut self, now: Time) {
        self.deadline = now + Duration::from_micros(self.timeout_us);
    }

    /// Fires at `deadline` instead.
    pub fn fire_at(&mut self, deadline: Time) {
        self.deadline = deadline;
    }

    /// Stops the timer until the next reset.
    pub fn stop(&mut self) {
        self.deadline = Time::MAX;
    }

    /// When the timer fires.
    pub fn deadline(&self) -> Time {
        self.deadline
    }

    /// True when the timer has fired by `now`.
    pub fn expired(&self, now: Time) -> bool {
        now >= self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_fall_in_range_and_replay_from_the_seed() {
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(20);
        let mut a = RandomTimer::new(7, min, max, Time::ZERO);
        let mut b = RandomTimer::new(7, min, max, Time::ZERO);
        for i in 0..100 {
            let now = Time::from_millis(i);
            a.reset(now);
            b.reset(now);
            assert_eq!(a.deadline(), b.deadline());
            let wait = a.deadline().saturating_since(now);
            assert!(wait >= min && wait < max, "{wait:?}");
        }
        a.reset_scaled(Time::ZERO, 4);
        assert!(a.deadline() >= Time::from_millis(40));
        a.stop();
        assert!(!a.expired(Time::from_millis(1_000_000)));
    }
}
