//! [`Backoff`]: reconnect delays that double from an initial value to a cap,
//! each drawn uniformly from the upper half of the current step ("equal
//! jitter"), so peers that lost a node at the same moment do not reconnect in
//! lockstep.

use rand::Rng;
use std::time::Duration;

/// Capped exponential backoff with jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    step_ms: u64,
}

impl Backoff {
    /// Starts at `initial_ms`, never exceeds `max_ms`.
    pub fn new(initial_ms: u64, max_ms: u64) -> Backoff {
        assert!(0 < initial_ms && initial_ms <= max_ms, "backoff bounds validated by the config");
        Backoff { initial_ms, max_ms, step_ms: initial_ms }
    }

    /// The delay before the next attempt; doubles the step for the one after.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let step_ms = self.step_ms;
        self.step_ms = step_ms.saturating_mul(2).min(self.max_ms);
        let delay_ms = rng.random_range(step_ms.div_ceil(2)..=step_ms);
        Duration::from_millis(delay_ms)
    }

    /// Back to the initial step (after a connection succeeded).
    pub fn reset(&mut self) {
        self.step_ms = self.initial_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn delays_grow_to_the_cap_with_jitter_and_reset() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new(100, 1_000);
        let steps = [100, 200, 400, 800, 1_000, 1_000, 1_000];
        for step in steps {
            let delay = backoff.next_delay(&mut rng).as_millis() as u64;
            assert!(step / 2 <= delay && delay <= step, "delay {delay} for step {step}");
        }
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: std::collections::HashSet<_> =
            (0..20).map(|_| Backoff::new(1_000, 1_000).next_delay(&mut rng)).collect();
        assert!(delays.len() > 1);
    }
}
