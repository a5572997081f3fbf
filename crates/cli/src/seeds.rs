//! Parsing of `--seeds A..B` (inclusive at both ends, so `1..1000` is a
//! thousand seeds; `A..=B` means the same).

use std::ops::Range;

/// Parses `A..B` or `A..=B` (both inclusive) into a half-open range.
pub fn parse_seed_range(s: &str) -> Result<Range<u64>, String> {
    let (a, b) = s
        .split_once("..=")
        .or_else(|| s.split_once(".."))
        .ok_or_else(|| format!("`{s}` is not a seed range; write A..B, e.g. 1..1000"))?;
    let a: u64 = a.trim().parse().map_err(|_| format!("`{a}` is not a seed number"))?;
    let b: u64 = b.trim().parse().map_err(|_| format!("`{b}` is not a seed number"))?;
    if b < a {
        return Err(format!("seed range {a}..{b} is empty (the end is before the start)"));
    }
    let end = b.checked_add(1).ok_or_else(|| format!("seed {b} is too large"))?;
    Ok(a..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive_at_both_ends() {
        assert_eq!(parse_seed_range("1..1000"), Ok(1..1001));
        assert_eq!(parse_seed_range("1..=1000"), Ok(1..1001));
        assert_eq!(parse_seed_range("7..7"), Ok(7..8));
        assert_eq!(parse_seed_range(" 0 .. 2 "), Ok(0..3));
    }

    #[test]
    fn nonsense_is_an_error_naming_the_input() {
        assert!(parse_seed_range("5").unwrap_err().contains("`5`"));
        assert!(parse_seed_range("x..3").unwrap_err().contains("`x`"));
        assert!(parse_seed_range("9..3").unwrap_err().contains("empty"));
        assert!(parse_seed_range("1..18446744073709551615").is_err());
    }
}
