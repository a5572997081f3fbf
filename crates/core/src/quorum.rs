//! Quorum arithmetic — the one place Synod computes quorum sizes.
//!
//! Crash-fault protocols (Raft, Paxos) need a strict majority of `n` voters.
//! Byzantine protocols (PBFT) tolerate `f = ⌊(n−1)/3⌋` faulty replicas of `n`
//! and need `2f+1` matching messages for a certificate and `f+1` matching
//! replies for a client to trust a result (Castro & Liskov, OSDI'99 §4).
//!
//! ```
//! use synod_core::quorum;
//! assert_eq!(quorum::majority(5), 3);
//! assert_eq!(quorum::byzantine_f(4), 1);
//! assert_eq!(quorum::byzantine_quorum(7), 5);
//! // The highest index stored on a majority: [2,2,2,4,5] → 2.
//! assert_eq!(quorum::majority_index(&mut [5, 2, 4, 2, 2]), 2);
//! ```

/// Size of a strict majority of `n` voters: `⌊n/2⌋ + 1`.
///
/// # Panics
/// If `n == 0`: a cluster with no voters has no quorum.
pub fn majority(n: usize) -> usize {
    assert!(n > 0, "a quorum of zero voters is undefined");
    n / 2 + 1
}

/// True when `votes` of `n` voters form a strict majority.
pub fn is_majority(votes: usize, n: usize) -> bool {
    votes >= majority(n)
}

/// The highest value that a majority of voters have reached, given one value
/// per voter (e.g. each voter's matched log index). Reorders `values`.
///
/// # Panics
/// If `values` is empty.
pub fn majority_index(values: &mut [u64]) -> u64 {
    let n = values.len();
    let q = majority(n);
    // Sorted descending, the q-th value is reached by at least q voters.
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[q - 1]
}

/// The number of Byzantine faults `n` replicas tolerate: `⌊(n−1)/3⌋`.
///
/// # Panics
/// If `n == 0`.
pub fn byzantine_f(n: usize) -> usize {
    assert!(n > 0, "a cluster of zero replicas tolerates nothing");
    (n - 1) / 3
}

/// Matching messages that form a Byzantine certificate among `n` replicas:
/// `⌈(n + f + 1) / 2⌉`, which is `2f + 1` when `n = 3f + 1`.
///
/// Any two such sets intersect in at least `f + 1` replicas, so in at least
/// one correct one; and `n − f` correct replicas can always form one. The
/// literal `2f + 1` is *not* safe for other `n` (with `n = 5, f = 1` two sets
/// of 3 may overlap only in the faulty replica).
pub fn byzantine_quorum(n: usize) -> usize {
    let f = byzantine_f(n);
    (n + f + 1).div_ceil(2)
}

/// Matching replies a client needs before it trusts a result: `f + 1` (at
/// least one of them comes from a correct replica).
pub fn byzantine_reply_quorum(n: usize) -> usize {
    byzantine_f(n) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_of_small_clusters() {
        let expect = [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)];
        for (n, q) in expect {
            assert_eq!(majority(n), q, "n={n}");
        }
    }

    #[test]
    fn any_two_majorities_intersect() {
        for n in 1..50 {
            assert!(2 * majority(n) > n, "n={n}");
            assert!(2 * (majority(n) - 1) <= n, "majority({n}) is not minimal");
        }
    }

    #[test]
    fn byzantine_quorums_intersect_in_a_correct_replica() {
        for n in 1..50 {
            let f = byzantine_f(n);
            assert!(n > 3 * f, "n={n}");
            let q = byzantine_quorum(n);
            // Two quorums overlap in at least f+1 replicas, one of them correct.
            assert!(2 * q - n > f, "n={n}");
            // The correct replicas alone can form a quorum (liveness).
            assert!(q <= n - f, "n={n}");
            if n % 3 == 1 {
                assert_eq!(q, 2 * f + 1, "n={n}");
            }
            assert_eq!(byzantine_reply_quorum(n), f + 1);
        }
        assert_eq!(byzantine_f(4), 1);
        assert_eq!(byzantine_f(6), 1);
        assert_eq!(byzantine_f(7), 2);
    }

    #[test]
    fn majority_index_is_the_highest_value_a_majority_reached() {
        assert_eq!(majority_index(&mut [2, 2, 2, 4, 5]), 2);
        assert_eq!(majority_index(&mut [1, 9, 9]), 9);
        assert_eq!(majority_index(&mut [7]), 7);
        assert_eq!(majority_index(&mut [3, 1]), 1);
        assert_eq!(majority_index(&mut [0, 10, 10, 0]), 0);
    }

    #[test]
    #[should_panic(expected = "zero voters")]
    fn majority_of_nobody_panics() {
        majority(0);
    }
}
