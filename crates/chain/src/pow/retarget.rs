//! Difficulty retargeting: every `retarget_interval_blocks`, scale the
//! target by how long the last window took against how long it should
//! have, with the measured span clamped to [timespan/4, timespan×4] and the
//! result capped at the pow limit (Bitcoin's `CalculateNextWorkRequired`).

use super::compact::{target_from_compact, target_to_compact};
use super::params::PowParams;

/// The bits of the block after a window that took `actual_timespan_secs`
/// (first to last block of the window) at `old_bits`.
pub fn retarget(params: &PowParams, old_bits: u32, actual_timespan_secs: i64) -> u32 {
    let timespan = params.target_timespan_secs() as i64;
    let clamped = actual_timespan_secs.clamp(timespan / 4, timespan * 4) as u64;
    let limit = params.pow_limit();
    let old = target_from_compact(old_bits).unwrap_or(limit);
    // old * clamped / timespan without overflowing: divide first, then
    // scale the remainder.
    let (q, r) = old.div_rem_u64(timespan as u64);
    let scaled = q.checked_mul_u64(clamped).and_then(|a| {
        let extra = (r as u128 * clamped as u128 / timespan as u128) as u64;
        a.checked_add(&crate::u256::U256::from_u64(extra))
    });
    let new = match scaled {
        Some(t) if t <= limit => t,
        _ => limit,
    };
    target_to_compact(&new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::u256::U256;

    fn sim() -> PowParams {
        PowParams::sim()
    }

    #[test]
    fn a_window_twice_too_fast_halves_the_target() {
        let p = sim();
        let old = target_to_compact(&U256::pow2(240));
        let new = retarget(&p, old, p.target_timespan_secs() as i64 / 2);
        assert_eq!(target_from_compact(new).unwrap(), U256::pow2(239));
        let same = retarget(&p, old, p.target_timespan_secs() as i64);
        assert_eq!(same, old);
    }

    #[test]
    fn the_adjustment_is_clamped_to_a_factor_of_four() {
        let p = sim();
        let old = target_to_compact(&U256::pow2(240));
        let fast = retarget(&p, old, 1);
        assert_eq!(target_from_compact(fast).unwrap(), U256::pow2(238), "÷4 at most");
        let negative = retarget(&p, old, -1000);
        assert_eq!(negative, fast, "a negative span (time warp) clamps too");
        let slow = retarget(&p, old, 1_000_000);
        assert_eq!(target_from_compact(slow).unwrap(), U256::pow2(242), "×4 at most");
    }

    #[test]
    fn the_target_never_exceeds_the_pow_limit() {
        let p = PowParams::bitcoin();
        let new = retarget(&p, p.pow_limit_bits, 10 * p.target_timespan_secs() as i64);
        assert_eq!(new, p.pow_limit_bits);
    }
}
