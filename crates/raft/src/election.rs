//! Leader election (Raft paper §5.2, §5.4.1; thesis §9.6 pre-vote and
//! check-quorum): the randomized election timer, the vote tally, and the
//! rules for granting a (pre-)vote.
//!
//! The timer draws each timeout uniformly from
//! `[election_timeout_min, election_timeout_max)` with a ChaCha8 generator
//! seeded by the driver — the core's only randomness. A new timeout is drawn
//! whenever the node changes role or term; hearing from the leader restarts
//! the current one.

use crate::config::InjectedBug;
use crate::membership::Membership;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;
use synod_core::{NodeId, Time, quorum};

/// The randomized election timer of one node.
#[derive(Clone, Debug)]
pub struct ElectionTimer {
    rng: ChaCha8Rng,
    min_us: u64,
    max_us: u64,
    timeout: Duration,
    deadline: Time,
}

impl ElectionTimer {
    /// A timer drawing from `[min, max)` with randomness from `seed`,
    /// started at `now`.
    pub fn new(seed: u64, min: Duration, max: Duration, now: Time) -> ElectionTimer {
        let mut timer = ElectionTimer {
            rng: ChaCha8Rng::seed_from_u64(seed),
            min_us: min.as_micros() as u64,
            max_us: max.as_micros() as u64,
            timeout: min,
            deadline: Time::MAX,
        };
        assert!(timer.min_us < timer.max_us, "election timeout range is empty");
        timer.reset(now);
        timer
    }

    /// Draws a new timeout and starts it at `now`.
    pub fn reset(&mut self, now: Time) {
        self.timeout = Duration::from_micros(self.rng.random_range(self.min_us..self.max_us));
        self.restart(now);
    }

    /// Starts the current timeout again at `now` (the leader was heard).
    pub fn restart(&mut self, now: Time) {
        self.deadline = now + self.timeout;
    }

    /// Fires at `deadline` instead (e.g. at once for a single-voter cluster).
    pub fn fire_at(&mut self, deadline: Time) {
        self.deadline = deadline;
    }

    /// When the timer fires.
    pub fn deadline(&self) -> Time {
        self.deadline
    }

    /// The timeout currently drawn.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The outcome of a (pre-)vote so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority granted.
    Won,
    /// A majority refused.
    Lost,
    /// Neither yet.
    Pending,
}

/// The votes received in one (pre-)election, one per voter.
#[derive(Clone, Debug, Default)]
pub struct VoteTally {
    votes: Vec<(NodeId, bool)>,
}

impl VoteTally {
    /// Forgets every vote (keeps the allocation).
    pub fn clear(&mut self) {
        self.votes.clear();
    }

    /// Records `from`'s answer; a voter's first answer counts, repeats are
    /// ignored.
    pub fn record(&mut self, from: NodeId, granted: bool) {
        if !self.votes.iter().any(|&(id, _)| id == from) {
            self.votes.push((from, granted));
        }
    }

    /// The outcome in configuration `membership`: won with a quorum of
    /// grants (majorities of both voter sets during a joint phase), lost
    /// once refusals make that impossible. Answers from non-voters (and
    /// any answer counted twice) do not count.
    pub fn result_in(&self, membership: &Membership) -> VoteResult {
        let answer = |id: NodeId| self.votes.iter().find(|&&(v, _)| v == id).map(|&(_, g)| g);
        if membership.is_quorum(|id| answer(id) == Some(true)) {
            VoteResult::Won
        } else if membership.is_blocked(|id| answer(id) == Some(false)) {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    /// The outcome among `voters` voters.
    pub fn result(&self, voters: usize) -> VoteResult {
        let granted = self.votes.iter().filter(|&&(_, g)| g).count();
        let refused = self.votes.len() - granted;
        if quorum::is_majority(granted, voters) {
            VoteResult::Won
        } else if quorum::is_majority(refused, voters) {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }
}

/// What a voter knows when deciding a (pre-)vote for `candidate`.
#[derive(Clone, Copy, Debug)]
pub struct VoterState {
    /// The voter's term (after stepping up to a real vote's higher term).
    pub term: u64,
    /// Its vote in `term`.
    pub voted_for: Option<NodeId>,
    /// The leader it knows of in `term`.
    pub leader: Option<NodeId>,
    /// The injected bug, if any.
    pub bug: InjectedBug,
}

/// Whether a voter grants a vote (`pre_vote == false`, `request_term` equal
/// to the voter's term) or a pre-vote (`request_term` is the candidate's
/// term + 1) to `candidate`, whose log is up to date iff `log_ok`. Lease
/// rules are the caller's: this is §5.2 / §5.4.1 only.
pub fn grants_vote(
    voter: &VoterState,
    candidate: NodeId,
    request_term: u64,
    pre_vote: bool,
    log_ok: bool,
) -> bool {
    if !log_ok || request_term < voter.term {
        return false;
    }
    let free =
        voter.voted_for == Some(candidate) || (voter.voted_for.is_none() && voter.leader.is_none());
    if pre_vote {
        request_term > voter.term || free
    } else {
        free || voter.bug == InjectedBug::VoteTwiceInTerm
    }
}

/// True when a voter is inside its check-quorum lease: it heard from a live
/// leader less than `election_timeout_min` ago (a leader is always inside
/// its own lease; check-quorum removes it when the lease lapses). Votes and
/// pre-votes that would unseat that leader are ignored, except for a
/// leadership transfer.
pub fn in_lease(
    check_quorum: bool,
    is_leader: bool,
    leader: Option<NodeId>,
    leader_contact: Time,
    election_timeout_min: Duration,
    now: Time,
) -> bool {
    check_quorum && (is_leader || (leader.is_some() && now < leader_contact + election_timeout_min))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_random_within_range_and_reproducible() {
        let min = Duration::from_millis(150);
        let max = Duration::from_millis(300);
        let mut a = ElectionTimer::new(7, min, max, Time::ZERO);
        let mut b = ElectionTimer::new(7, min, max, Time::ZERO);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            a.reset(Time::ZERO);
            b.reset(Time::ZERO);
            assert_eq!(a.deadline(), b.deadline(), "same seed, same draws");
            assert!(a.timeout() >= min && a.timeout() < max);
            seen.insert(a.timeout());
        }
        assert!(seen.len() > 50, "timeouts vary");
        let c = ElectionTimer::new(8, min, max, Time::ZERO);
        let a0 = ElectionTimer::new(7, min, max, Time::ZERO);
        assert_ne!(c.timeout(), a0.timeout(), "other seed, other draws");
    }

    #[test]
    fn restart_keeps_the_drawn_timeout() {
        let mut t =
            ElectionTimer::new(1, Duration::from_millis(10), Duration::from_millis(20), Time::ZERO);
        let timeout = t.timeout();
        t.restart(Time::from_millis(100));
        assert_eq!(t.deadline(), Time::from_millis(100) + timeout);
    }

    #[test]
    fn tally_needs_a_majority_and_counts_each_voter_once() {
        let mut tally = VoteTally::default();
        tally.record(NodeId(1), true);
        tally.record(NodeId(2), true);
        tally.record(NodeId(2), true);
        assert_eq!(tally.result(5), VoteResult::Pending);
        tally.record(NodeId(3), true);
        assert_eq!(tally.result(5), VoteResult::Won);
        let mut tally = VoteTally::default();
        tally.record(NodeId(1), true);
        tally.record(NodeId(2), false);
        tally.record(NodeId(3), false);
        assert_eq!(tally.result(3), VoteResult::Lost);
    }

    fn voter(voted_for: Option<u64>, leader: Option<u64>, bug: InjectedBug) -> VoterState {
        VoterState { term: 5, voted_for: voted_for.map(NodeId), leader: leader.map(NodeId), bug }
    }

    #[test]
    fn one_vote_per_term() {
        let v = voter(Some(1), None, InjectedBug::None);
        assert!(grants_vote(&v, NodeId(1), 5, false, true), "repeat vote for the same candidate");
        assert!(!grants_vote(&v, NodeId(2), 5, false, true));
        let v = voter(None, Some(3), InjectedBug::None);
        assert!(!grants_vote(&v, NodeId(2), 5, false, true), "a known leader holds the term");
        let v = voter(None, None, InjectedBug::None);
        assert!(!grants_vote(&v, NodeId(2), 5, false, false), "log not up to date");
        assert!(grants_vote(&v, NodeId(2), 5, false, true));
    }

    #[test]
    fn the_vote_twice_bug_grants_a_second_vote() {
        let v = voter(Some(1), None, InjectedBug::VoteTwiceInTerm);
        assert!(grants_vote(&v, NodeId(2), 5, false, true));
        assert!(!grants_vote(&v, NodeId(2), 5, false, false), "still checks the log");
    }

    #[test]
    fn pre_votes_for_a_later_term_ignore_the_current_vote() {
        let v = voter(Some(1), Some(1), InjectedBug::None);
        assert!(grants_vote(&v, NodeId(2), 6, true, true));
        assert!(!grants_vote(&v, NodeId(2), 5, true, true));
        assert!(!grants_vote(&v, NodeId(2), 4, true, true));
    }

    #[test]
    fn the_lease_lasts_the_minimum_election_timeout() {
        let min = Duration::from_millis(150);
        let heard = Time::from_millis(1000);
        let lead = Some(NodeId(1));
        assert!(in_lease(true, false, lead, heard, min, Time::from_millis(1149)));
        assert!(!in_lease(true, false, lead, heard, min, Time::from_millis(1150)));
        assert!(!in_lease(false, false, lead, heard, min, Time::from_millis(1000)));
        assert!(!in_lease(true, false, None, heard, min, Time::from_millis(1000)));
        assert!(in_lease(true, true, lead, Time::ZERO, min, Time::from_millis(9999)));
    }
}
