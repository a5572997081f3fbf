//! A point in time, in microseconds since an arbitrary epoch.
//!
//! Protocol cores never read a clock: the driver passes `now` into every call.
//! In the simulator `now` is virtual (and may drift per node); in the real node
//! it is a monotonic clock. Spans are plain [`std::time::Duration`]s.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in microseconds since an arbitrary epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);
    /// A time later than any other; used as "no deadline".
    pub const MAX: Time = Time(u64::MAX);

    /// A time `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms * 1000)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Milliseconds since the epoch (truncated).
    pub const fn as_millis(self) -> u64 {
        self.0 / 1000
    }

    /// The span from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(d.as_micros().min(u64::MAX as u128) as u64))
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        Time(self.0.saturating_sub(d.as_micros().min(u64::MAX as u128) as u64))
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}ms", self.0 / 1000, self.0 % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(Time::MAX + Duration::from_secs(1), Time::MAX);
        assert_eq!(Time(5) - Duration::from_micros(10), Time::ZERO);
        assert_eq!(Time::from_millis(3).saturating_since(Time::from_millis(5)), Duration::ZERO);
        assert_eq!(
            Time::from_millis(5).saturating_since(Time::from_millis(3)),
            Duration::from_millis(2)
        );
    }

    #[test]
    fn display_shows_milliseconds_with_micro_fraction() {
        assert_eq!(Time(1_234_567).to_string(), "1234.567ms");
    }
}
