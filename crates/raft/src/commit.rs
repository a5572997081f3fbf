//! The leader's commit rule (Raft paper §5.3 and §5.4.2).
//!
//! An index is replicated on a majority when the majority-matched index
//! (over every voter, the leader counting its own last index) reaches it.
//! A leader may only *commit* by counting replicas when the entry there is
//! from its own term; entries of earlier terms become committed indirectly,
//! with the first entry of the current term (the Figure 8 scenario shows an
//! earlier-term entry on a majority being overwritten).
//! [`InjectedBug::CommitPreviousTermByCount`] drops that check on purpose.

use crate::config::InjectedBug;
use crate::log::RaftLog;
use crate::progress::Progress;
use synod_core::quorum;

/// The highest index stored on a majority of voters: the leader (with its
/// `leader_last_index`) plus `peers`. `scratch` is reused to stay off the
/// allocator.
pub fn quorum_match_index(
    leader_last_index: u64,
    peers: &[Progress],
    scratch: &mut Vec<u64>,
) -> u64 {
    scratch.clear();
    scratch.push(leader_last_index);
    scratch.extend(peers.iter().map(|pr| pr.match_index));
    quorum::majority_index(scratch)
}

/// The commit index a leader of `term` moves to when `quorum_index` is on a
/// majority, starting from `commit_index`: `quorum_index` if the entry there
/// is of `term` (or the bug says to ignore terms), else unchanged.
pub fn advance_commit(
    log: &RaftLog,
    term: u64,
    commit_index: u64,
    quorum_index: u64,
    bug: InjectedBug,
) -> u64 {
    if quorum_index <= commit_index {
        return commit_index;
    }
    let entry_term = log.term_at(quorum_index).unwrap_or_else(|| {
        panic!("quorum index {quorum_index} beyond the leader's log {}", log.last_index())
    });
    if entry_term == term || bug == InjectedBug::CommitPreviousTermByCount {
        quorum_index
    } else {
        commit_index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Entry, Payload};
    use synod_core::NodeId;

    fn log_of_terms(terms: &[u64]) -> RaftLog {
        RaftLog::from_entries(
            terms
                .iter()
                .enumerate()
                .map(|(i, &term)| Entry { term, index: i as u64 + 1, payload: Payload::Noop })
                .collect(),
        )
    }

    fn peers(matches: &[u64]) -> Vec<Progress> {
        matches
            .iter()
            .enumerate()
            .map(|(i, &m)| {
                let mut pr = Progress::new(NodeId(i as u64 + 2), 4);
                pr.match_index = m;
                pr
            })
            .collect()
    }

    #[test]
    fn the_quorum_counts_the_leader_itself() {
        let mut scratch = Vec::new();
        assert_eq!(quorum_match_index(5, &peers(&[0, 0]), &mut scratch), 0);
        assert_eq!(quorum_match_index(5, &peers(&[3, 0]), &mut scratch), 3);
        assert_eq!(quorum_match_index(5, &peers(&[2, 2, 4, 5]), &mut scratch), 4);
        assert_eq!(quorum_match_index(7, &[], &mut scratch), 7);
    }

    #[test]
    fn an_earlier_term_entry_is_not_committed_by_counting() {
        let log = log_of_terms(&[1, 2, 4]);
        assert_eq!(advance_commit(&log, 4, 1, 2, InjectedBug::None), 1);
        assert_eq!(advance_commit(&log, 4, 1, 3, InjectedBug::None), 3);
    }

    #[test]
    fn the_injected_bug_commits_earlier_terms_by_counting() {
        let log = log_of_terms(&[1, 2, 4]);
        assert_eq!(advance_commit(&log, 4, 1, 2, InjectedBug::CommitPreviousTermByCount), 2);
    }

    #[test]
    fn commit_never_goes_backwards() {
        let log = log_of_terms(&[3, 3, 3]);
        assert_eq!(advance_commit(&log, 3, 3, 2, InjectedBug::None), 3);
    }
}
