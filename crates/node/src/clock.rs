//! [`NodeClock`]: the time a node hands its protocol core and stamps lease
//! commands with.
//!
//! Raft and Multi-Paxos only measure spans on one node (timeouts, and a
//! leader's lease deadlines, which a new leader restarts from its own clock),
//! so their clock starts at zero when the process starts. PBFT agrees on
//! time ([`synod_core::Committed::time`]): a backup compares the primary's
//! batch timestamp with its own clock, so every replica must read the same
//! scale. Its clock is *wall-anchored*: the wall clock (µs since the Unix
//! epoch) read once at start, advanced by the monotonic clock from there, so
//! it never jumps backwards even if the wall clock is stepped; replicas
//! whose wall clocks are synchronised (NTP) read within their skew of each
//! other, which δ (the PBFT core's `max_clock_skew`, 1 s by default) must
//! cover.

use std::time::{Instant, SystemTime, UNIX_EPOCH};
use synod_core::Time;

/// A monotonic clock reading [`Time`], from zero or from the wall clock at
/// start (see the module doc).
#[derive(Clone, Copy, Debug)]
pub struct NodeClock {
    start: Instant,
    /// What the clock reads at `start`, in µs.
    start_us: u64,
}

impl NodeClock {
    /// A clock reading zero now.
    pub fn from_zero() -> NodeClock {
        NodeClock { start: Instant::now(), start_us: 0 }
    }

    /// A clock reading the wall clock now (µs since the Unix epoch), then
    /// advancing monotonically.
    pub fn wall_anchored() -> NodeClock {
        let start = Instant::now();
        let start_us =
            SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        NodeClock { start, start_us }
    }

    /// [`NodeClock::wall_anchored`] if `wall`, else [`NodeClock::from_zero`].
    pub fn new(wall: bool) -> NodeClock {
        if wall { NodeClock::wall_anchored() } else { NodeClock::from_zero() }
    }

    /// The current reading.
    pub fn now(&self) -> Time {
        Time(self.start_us.saturating_add(self.start.elapsed().as_micros() as u64))
    }

    /// The instant at which the clock reads `t` (now, if it already did).
    pub fn instant_of(&self, t: Time) -> Instant {
        self.start + std::time::Duration::from_micros(t.0.saturating_sub(self.start_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_clock_starts_at_zero_and_a_wall_clock_at_the_wall_time() {
        let zero = NodeClock::from_zero();
        assert!(zero.now() < Time::from_millis(60_000));
        let wall = NodeClock::wall_anchored();
        let unix_us = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_micros();
        assert!(wall.now().0.abs_diff(unix_us as u64) < 5_000_000);
        let (a, b) = (wall.now(), wall.now());
        assert!(b >= a, "monotone");
        assert!(wall.instant_of(Time::ZERO) <= Instant::now());
        let soon = wall.now() + std::time::Duration::from_secs(1);
        assert!(wall.instant_of(soon) > Instant::now());
    }
}
