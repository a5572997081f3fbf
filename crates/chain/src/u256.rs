//! A minimal unsigned 256-bit integer: just what proof-of-work targets,
//! the compact `nBits` encoding and chain work need (compare, add, shift,
//! multiply/divide by a small number, long division).

use std::cmp::Ordering;

/// An unsigned 256-bit integer, four little-endian 64-bit limbs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct U256(pub [u64; 4]);

impl Ord for U256 {
    fn cmp(&self, other: &Self) -> Ordering {
        for i in (0..4).rev() {
            match self.0[i].cmp(&other.0[i]) {
                Ordering::Equal => continue,
                o => return o,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for U256 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl U256 {
    /// Zero.
    pub const ZERO: U256 = U256([0; 4]);
    /// The largest value, 2^256 − 1.
    pub const MAX: U256 = U256([u64::MAX; 4]);

    /// A small value.
    pub const fn from_u64(v: u64) -> U256 {
        U256([v, 0, 0, 0])
    }

    /// `2^bits` (`bits < 256`).
    pub fn pow2(bits: u32) -> U256 {
        assert!(bits < 256, "2^{bits} does not fit in 256 bits");
        let mut v = U256::ZERO;
        v.0[(bits / 64) as usize] = 1u64 << (bits % 64);
        v
    }

    /// Reads 32 bytes as a little-endian integer (how Bitcoin compares a
    /// block hash with its target).
    pub fn from_le_bytes(b: &[u8; 32]) -> U256 {
        let mut v = U256::ZERO;
        for i in 0..4 {
            let mut limb = [0u8; 8];
            limb.copy_from_slice(&b[i * 8..i * 8 + 8]);
            v.0[i] = u64::from_le_bytes(limb);
        }
        v
    }

    /// True when zero.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 4]
    }

    /// Number of significant bits.
    pub fn bits(&self) -> u32 {
        for i in (0..4).rev() {
            if self.0[i] != 0 {
                return 64 * i as u32 + (64 - self.0[i].leading_zeros());
            }
        }
        0
    }

    /// Low 64 bits.
    pub fn low_u64(&self) -> u64 {
        self.0[0]
    }

    /// `self + other`, `None` on overflow.
    pub fn checked_add(&self, other: &U256) -> Option<U256> {
        let mut out = U256::ZERO;
        let mut carry = false;
        for i in 0..4 {
            let (s1, c1) = self.0[i].overflowing_add(other.0[i]);
            let (s2, c2) = s1.overflowing_add(carry as u64);
            out.0[i] = s2;
            carry = c1 || c2;
        }
        if carry { None } else { Some(out) }
    }

    /// `self − other`; asserts `self >= other`.
    pub fn sub(&self, other: &U256) -> U256 {
        assert!(*self >= *other, "U256 subtraction underflow");
        let mut out = U256::ZERO;
        let mut borrow = false;
        for i in 0..4 {
            let (d1, b1) = self.0[i].overflowing_sub(other.0[i]);
            let (d2, b2) = d1.overflowing_sub(borrow as u64);
            out.0[i] = d2;
            borrow = b1 || b2;
        }
        out
    }

    /// `self << n` (bits shifted out are lost).
    pub fn shl(&self, n: u32) -> U256 {
        if n >= 256 {
            return U256::ZERO;
        }
        let (limbs, bits) = ((n / 64) as usize, n % 64);
        let mut out = U256::ZERO;
        for i in (limbs..4).rev() {
            let src = i - limbs;
            out.0[i] = self.0[src] << bits;
            if bits > 0 && src > 0 {
                out.0[i] |= self.0[src - 1] >> (64 - bits);
            }
        }
        out
    }

    /// `self >> n`.
    pub fn shr(&self, n: u32) -> U256 {
        if n >= 256 {
            return U256::ZERO;
        }
        let (limbs, bits) = ((n / 64) as usize, n % 64);
        let mut out = U256::ZERO;
        for i in 0..4 - limbs {
            let src = i + limbs;
            out.0[i] = self.0[src] >> bits;
            if bits > 0 && src + 1 < 4 {
                out.0[i] |= self.0[src + 1] << (64 - bits);
            }
        }
        out
    }

    /// `self * m`, `None` on overflow.
    pub fn checked_mul_u64(&self, m: u64) -> Option<U256> {
        let mut out = U256::ZERO;
        let mut carry: u128 = 0;
        for i in 0..4 {
            let p = self.0[i] as u128 * m as u128 + carry;
            out.0[i] = p as u64;
            carry = p >> 64;
        }
        if carry != 0 { None } else { Some(out) }
    }

    /// `(self / d, self % d)`; asserts `d != 0`.
    pub fn div_rem_u64(&self, d: u64) -> (U256, u64) {
        assert!(d != 0, "U256 division by zero");
        let mut out = U256::ZERO;
        let mut rem: u128 = 0;
        for i in (0..4).rev() {
            let cur = (rem << 64) | self.0[i] as u128;
            out.0[i] = (cur / d as u128) as u64;
            rem = cur % d as u128;
        }
        (out, rem as u64)
    }

    /// `self / d` by shift-and-subtract long division; asserts `d != 0`.
    pub fn div(&self, d: &U256) -> U256 {
        assert!(!d.is_zero(), "U256 division by zero");
        let mut quotient = U256::ZERO;
        let mut rem = U256::ZERO;
        for bit in (0..self.bits()).rev() {
            rem = rem.shl(1);
            if (self.0[(bit / 64) as usize] >> (bit % 64)) & 1 == 1 {
                rem.0[0] |= 1;
            }
            if rem >= *d {
                rem = rem.sub(d);
                quotient.0[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        quotient
    }

    /// Bitwise not.
    pub fn not(&self) -> U256 {
        U256([!self.0[0], !self.0[1], !self.0[2], !self.0[3]])
    }

    /// An approximation as `f64` (for reports and the exponential mining
    /// model, never for consensus decisions).
    pub fn to_f64(&self) -> f64 {
        self.0.iter().rev().fold(0.0, |acc, &l| acc * 18_446_744_073_709_551_616.0 + l as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_round_trips() {
        let a = U256::pow2(200).checked_add(&U256::from_u64(12345)).unwrap();
        assert_eq!(a.shl(10).shr(10), a);
        assert_eq!(a.checked_mul_u64(7).unwrap().div_rem_u64(7), (a, 0));
        assert_eq!(a.checked_mul_u64(1000).unwrap().div(&U256::from_u64(1000)), a);
        assert_eq!(a.sub(&U256::from_u64(12345)), U256::pow2(200));
        assert!(U256::pow2(255).checked_mul_u64(2).is_none());
        assert!(U256::MAX.checked_add(&U256::from_u64(1)).is_none());
        assert_eq!(U256::pow2(130).bits(), 131);
        assert!(U256::pow2(64) > U256::from_u64(u64::MAX));
    }

    #[test]
    fn long_division_matches_u128() {
        for (x, y) in [(u128::MAX, 3u128), (1 << 100, (1 << 40) + 7), (987654321987654321, 1)] {
            let ux = U256([x as u64, (x >> 64) as u64, 0, 0]);
            let uy = U256([y as u64, (y >> 64) as u64, 0, 0]);
            let q = ux.div(&uy);
            assert_eq!(q.0[0] as u128 | (q.0[1] as u128) << 64, x / y);
        }
    }
}
