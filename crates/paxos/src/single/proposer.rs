//! The proposer ("Paxos Made Simple" §2.2): Phase 1a with a ballot above any
//! it has seen, then — with promises from a majority — Phase 2a proposing the
//! value of the highest-ballot proposal those promises report, or its own
//! value if none reports one (P2c).
//!
//! Duelling proposers can keep pre-empting each other forever (the FLP
//! livelock). A refused or stalled proposer waits a random delay drawn from
//! a range that doubles with each failed attempt (up to
//! [`MAX_BACKOFF_FACTOR`] times the base range) before trying a higher
//! ballot, so that one proposer eventually runs both phases undisturbed.

use super::{InjectedBug, Message, Value};
use crate::ballot::Ballot;
use crate::timer::RandomTimer;
use synod_core::{NodeId, Time, quorum};

/// The most the back-off range grows, as a multiple of the base range.
pub const MAX_BACKOFF_FACTOR: u64 = 32;

/// Where the proposer is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing to propose.
    Idle,
    /// Waiting out a back-off before the next attempt.
    BackingOff,
    /// Phase 1: collecting promises for `ballot`.
    Preparing {
        /// Acceptor positions that promised.
        promised: u64,
        /// The highest-ballot accepted proposal reported so far.
        highest: Option<(Ballot, Value)>,
    },
    /// Phase 2: `value` proposed in `ballot`.
    Accepting {
        /// The value proposed.
        value: Value,
    },
    /// A value was chosen.
    Done,
}

/// A proposer.
#[derive(Clone, Debug)]
pub struct Proposer {
    id: NodeId,
    acceptors: Vec<NodeId>,
    value: Option<Value>,
    ballot: Ballot,
    highest_seen: Ballot,
    phase: Phase,
    failed_attempts: u32,
    timer: RandomTimer,
    bug: InjectedBug,
}

impl Proposer {
    /// An idle proposer `id` for `acceptors`, retrying after a random delay
    /// from `timer`'s range.
    pub fn new(
        id: NodeId,
        acceptors: Vec<NodeId>,
        highest_seen: Ballot,
        mut timer: RandomTimer,
        bug: InjectedBug,
    ) -> Proposer {
        assert!(!acceptors.is_empty() && acceptors.len() <= 64, "1..=64 acceptors");
        timer.stop();
        Proposer {
            id,
            acceptors,
            value: None,
            ballot: Ballot::ZERO,
            highest_seen,
            phase: Phase::Idle,
            failed_attempts: 0,
            timer,
            bug,
        }
    }

    /// The current ballot (`ZERO` before the first attempt).
    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    /// The value this proposer asked for.
    pub fn own_value(&self) -> Option<&Value> {
        self.value.as_ref()
    }

    /// True once a value was chosen.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// When [`tick`](Self::tick) has work to do.
    pub fn deadline(&self) -> Time {
        self.timer.deadline()
    }

    /// Starts proposing `value`: Phase 1 in a fresh ballot. Messages for the
    /// acceptors are pushed to `send`.
    pub fn propose(&mut self, now: Time, value: Value, send: &mut Vec<(NodeId, Message)>) {
        if self.phase == Phase::Done {
            return;
        }
        self.value = Some(value);
        self.start(now, send);
    }

    /// Phase 1a in a ballot above every ballot seen.
    fn start(&mut self, now: Time, send: &mut Vec<(NodeId, Message)>) {
        self.ballot = self.highest_seen.max(self.ballot).next_for(self.id);
        self.highest_seen = self.ballot;
        self.phase = Phase::Preparing { promised: 0, highest: None };
        self.timer.reset(now);
        for &a in &self.acceptors {
            send.push((a, Message::Prepare { ballot: self.ballot }));
        }
    }

    /// A higher ballot exists or the attempt stalled: wait a random,
    /// growing delay before trying again.
    fn back_off(&mut self, now: Time) {
        self.failed_attempts = self.failed_attempts.saturating_add(1);
        let factor = 1u64 << self.failed_attempts.min(MAX_BACKOFF_FACTOR.trailing_zeros());
        self.phase = Phase::BackingOff;
        self.timer.reset_scaled(now, factor);
    }

    /// Time passed: a stalled attempt backs off; a finished back-off starts
    /// the next attempt.
    pub fn tick(&mut self, now: Time, send: &mut Vec<(NodeId, Message)>) {
        if !self.timer.expired(now) {
            return;
        }
        match self.phase {
            Phase::Preparing { .. } | Phase::Accepting { .. } => self.back_off(now),
            Phase::BackingOff => self.start(now, send),
            Phase::Idle | Phase::Done => self.timer.stop(),
        }
    }

    /// Phase 1b from `from`. On a majority, Phase 2a.
    pub fn on_promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        accepted: Option<(Ballot, Value)>,
        send: &mut Vec<(NodeId, Message)>,
    ) {
        let Some(position) = self.acceptors.iter().position(|&a| a == from) else { return };
        let Phase::Preparing { promised, highest } = &mut self.phase else { return };
        if ballot != self.ballot {
            return;
        }
        *promised |= 1 << position;
        if let Some((b, v)) = accepted {
            assert!(b < ballot, "an acceptor reports an acceptance at or above its promise");
            if highest.as_ref().is_none_or(|(hb, _)| b > *hb) {
                *highest = Some((b, v));
            }
        }
        if !quorum::is_majority(promised.count_ones() as usize, self.acceptors.len()) {
            return;
        }
        let own = self.value.clone().expect("a proposer in Phase 1 has a value");
        let value = match (highest.take(), self.bug) {
            (Some((_, v)), InjectedBug::None) => v,
            _ => own,
        };
        self.phase = Phase::Accepting { value: value.clone() };
        for &a in &self.acceptors {
            send.push((a, Message::Accept { ballot: self.ballot, value: value.clone() }));
        }
    }

    /// An acceptor refused `ballot` because it promised `promised`.
    pub fn on_nack(&mut self, now: Time, ballot: Ballot, promised: Ballot) {
        self.highest_seen = self.highest_seen.max(promised);
        let active = matches!(self.phase, Phase::Preparing { .. } | Phase::Accepting { .. });
        if active && ballot == self.ballot && promised > self.ballot {
            self.back_off(now);
        }
    }

    /// Notes a ballot seen in any message, so the next attempt goes above it.
    pub fn saw(&mut self, ballot: Ballot) {
        self.highest_seen = self.highest_seen.max(ballot);
    }

    /// A value was chosen: stop.
    pub fn on_chosen(&mut self) {
        self.phase = Phase::Done;
        self.timer.stop();
    }
}
