//! The compact `nBits` target encoding: `mantissa × 256^(exponent − 3)`, a
//! 3-byte signed mantissa and a 1-byte exponent; and block work
//! `2^256 / (target + 1)` (Bitcoin's `GetBlockProof`).

use crate::u256::U256;

/// Why compact bits do not encode a usable target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    /// The sign bit is set with a non-zero mantissa.
    #[error("negative target")]
    Negative,
    /// The target does not fit in 256 bits.
    #[error("target overflows 256 bits")]
    Overflow,
    /// The target is zero.
    #[error("zero target")]
    Zero,
}

/// Decodes compact bits (`SetCompact` plus `CheckProofOfWork`'s checks).
pub fn target_from_compact(bits: u32) -> Result<U256, CompactError> {
    let exponent = bits >> 24;
    let mantissa = bits & 0x007f_ffff;
    if mantissa != 0 && bits & 0x0080_0000 != 0 {
        return Err(CompactError::Negative);
    }
    if mantissa != 0
        && (exponent > 34
            || (mantissa > 0xff && exponent > 33)
            || (mantissa > 0xffff && exponent > 32))
    {
        return Err(CompactError::Overflow);
    }
    let target = if exponent <= 3 {
        U256::from_u64((mantissa >> (8 * (3 - exponent))) as u64)
    } else {
        U256::from_u64(mantissa as u64).shl(8 * (exponent - 3))
    };
    if target.is_zero() {
        return Err(CompactError::Zero);
    }
    Ok(target)
}

/// Encodes a target as compact bits (`GetCompact`); lossy: keeps the top
/// three significant bytes.
pub fn target_to_compact(target: &U256) -> u32 {
    let mut size = target.bits().div_ceil(8);
    let mut compact = if size <= 3 {
        (target.low_u64() << (8 * (3 - size))) as u32
    } else {
        target.shr(8 * (size - 3)).low_u64() as u32
    };
    if compact & 0x0080_0000 != 0 {
        compact >>= 8;
        size += 1;
    }
    compact | (size << 24)
}

/// Expected hashes to find a block at `target`: `2^256 / (target + 1)`,
/// computed as `!target / (target + 1) + 1` so it fits in 256 bits.
pub fn work_for_target(target: &U256) -> U256 {
    let plus_one = target.checked_add(&U256::from_u64(1));
    match plus_one {
        None => U256::from_u64(1),
        Some(d) => target.not().div(&d).checked_add(&U256::from_u64(1)).unwrap_or(U256::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitcoin_pow_limit_decodes_and_round_trips() {
        let t = target_from_compact(0x1d00_ffff).unwrap();
        assert_eq!(t, U256::from_u64(0xffff).shl(8 * 26));
        assert_eq!(target_to_compact(&t), 0x1d00_ffff);
        // Genesis work is 2^32 / (1 - 2^-16)ish = 0x100010001.
        assert_eq!(work_for_target(&t), U256::from_u64(0x1_0001_0001));
    }

    #[test]
    fn invalid_encodings_are_rejected() {
        assert_eq!(target_from_compact(0x0480_1234), Err(CompactError::Negative));
        assert_eq!(target_from_compact(0xff12_3456), Err(CompactError::Overflow));
        assert_eq!(target_from_compact(0x0300_0000), Err(CompactError::Zero));
        assert_eq!(target_from_compact(0x0112_3456).unwrap(), U256::from_u64(0x12));
    }

    #[test]
    fn work_halves_when_target_doubles() {
        let t = U256::pow2(240);
        let w1 = work_for_target(&t.sub(&U256::from_u64(1)));
        let w2 = work_for_target(&t.shl(1).sub(&U256::from_u64(1)));
        assert_eq!(w1, U256::pow2(16));
        assert_eq!(w2, U256::pow2(15));
    }
}
