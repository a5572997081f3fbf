//! Log Matching (Raft paper §5.3, Figure 3): if two logs contain an entry
//! with the same index and term, then the logs are identical in all entries
//! up through that index.
//!
//! Checked incrementally, on what nodes append (`Write::Append`): a global
//! map keeps, per (index, term), the payload digest and the term of the
//! preceding entry in the appending node's log; any node appending an entry
//! with the same (index, term) but another payload or another previous term
//! fires. This implies the full property, by induction on the index: if two
//! logs hold (i, t), both hold the same payload at i (digest), and both hold
//! an entry with the recorded previous term at i − 1 — it was there when
//! (i, t) was appended, and it cannot have changed since, because an append
//! at or below i − 1 deletes i too. So both logs hold (i − 1, t′) and, by the
//! induction hypothesis, agree up through i − 1; index 0 (term 0) is common
//! to all logs. Within one append it also checks that indexes are
//! consecutive and terms never decrease along the log.

use super::digest::payload_digest;
use super::raft_view::RaftView;
use crate::invariant::{Invariant, StepView, Violation};
use std::collections::HashMap;
use synod_core::NodeId;
use synod_raft::{Entry, RaftNode, RaftOutput, Write};

/// The property's name in violations.
pub const PROPERTY: &str = "log matching";

/// How far past every index seen so far an append may start (a bound on the
/// record's growth; a larger jump is reported, not allocated).
const MAX_INDEX_JUMP: u64 = 1 << 20;

/// What the first append of an (index, term) carried.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    /// Its term (0: no entry seen at this index yet).
    term: u64,
    payload_digest: u64,
    /// Term of the entry before it, when known.
    prev_term: Option<u64>,
    node: NodeId,
}

/// Checks that every (index, term) carries one payload after one previous
/// term (and that appended entries have consecutive indexes and terms ≥ 1
/// that never decrease along the log).
#[derive(Debug, Default)]
pub struct LogMatching {
    /// `first[i - 1]`: the first term seen at index `i` (the common case).
    first: Vec<Seen>,
    /// Further terms seen at an index (conflicting uncommitted entries).
    others: HashMap<(u64, u64), Seen>,
}

impl LogMatching {
    /// A checker that has seen no entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node`, now in state `view`, produced `output`.
    pub fn check(
        &mut self,
        node: NodeId,
        view: &impl RaftView,
        output: &RaftOutput,
    ) -> Result<(), Violation> {
        for (position, write) in output.writes.iter().enumerate() {
            let Write::Append { entries } = write else { continue };
            let Some(first) = entries.first() else { continue };
            if first.index == 0 || first.index - 1 > self.first.len() as u64 + MAX_INDEX_JUMP {
                let detail = format!(
                    "appended at index {}, while no node held an entry past {}",
                    first.index,
                    self.first.len()
                );
                return Err(Violation::new(PROPERTY, Some(node), detail));
            }
            let mut prev_term = prev_term_of(first.index, &output.writes, position, view);
            let mut prev_index = first.index - 1;
            for entry in entries {
                let out_of_order = entry.index != prev_index + 1
                    || entry.term == 0
                    || prev_term.is_some_and(|t| t > entry.term);
                if out_of_order {
                    let detail = format!(
                        "appended entry (index {}, term {}) after (index {prev_index}, term {prev_term:?})",
                        entry.index, entry.term
                    );
                    return Err(Violation::new(PROPERTY, Some(node), detail));
                }
                self.record(node, entry, prev_term)?;
                (prev_index, prev_term) = (entry.index, Some(entry.term));
            }
        }
        Ok(())
    }

    /// Compares `entry`, preceded by `prev_term`, with what was seen before.
    fn record(
        &mut self,
        node: NodeId,
        entry: &Entry,
        prev_term: Option<u64>,
    ) -> Result<(), Violation> {
        let slot = entry.index as usize - 1;
        if slot >= self.first.len() {
            self.first.resize(slot + 1, Seen::default());
        }
        let new = Seen {
            term: entry.term,
            payload_digest: payload_digest(&entry.payload),
            prev_term,
            node,
        };
        let seen = match &mut self.first[slot] {
            first if first.term == 0 => {
                *first = new;
                return Ok(());
            }
            first if first.term == entry.term => first,
            _ => self.others.entry((entry.index, entry.term)).or_insert(new),
        };
        let what = if seen.payload_digest != new.payload_digest {
            "another payload".to_string()
        } else if let (Some(a), Some(b)) = (seen.prev_term, prev_term)
            && a != b
        {
            format!("previous term {a}, not {b}")
        } else {
            seen.prev_term = seen.prev_term.or(prev_term);
            return Ok(());
        };
        let detail = format!(
            "appended (index {}, term {}) with {:?}, but {} holds that entry with {what}",
            entry.index, entry.term, entry.payload, seen.node
        );
        Err(Violation::new(PROPERTY, Some(node), detail))
    }
}

/// The term of the entry at `index - 1` in the log that the append at
/// `writes[position]`, starting at `index`, extended — or `None` if unknown.
fn prev_term_of(
    index: u64,
    writes: &[Write],
    position: usize,
    view: &impl RaftView,
) -> Option<u64> {
    let prev_index = index.checked_sub(1)?;
    if prev_index == 0 {
        return Some(0);
    }
    let starts_at_or_below = |write: &&Write| match write {
        Write::Append { entries } => entries.first().is_some_and(|e| e.index <= prev_index),
        Write::HardState { .. } | Write::Snapshot { .. } => false,
    };
    // An earlier append of this step decides the previous entry…
    if let Some(Write::Append { entries }) =
        writes[..position].iter().rev().find(starts_at_or_below)
    {
        return entries.get((prev_index - entries[0].index) as usize).map(|e| e.term);
    }
    // …else it predates this step, and the core still holds it unless a
    // later append of this step replaced it.
    if writes[position + 1..].iter().any(|w| starts_at_or_below(&w)) {
        return None;
    }
    view.term_at(prev_index)
}

impl Invariant<RaftNode> for LogMatching {
    fn name(&self) -> &'static str {
        PROPERTY
    }

    fn after_step(&mut self, step: &StepView<'_, RaftNode>) -> Result<(), Violation> {
        self.check(step.node, step.core, step.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invariants::testing::{FakeRaft, entry, log, output};

    /// `view` appended `entries` in one step.
    fn append(
        checker: &mut LogMatching,
        node: u64,
        view: &FakeRaft,
        entries: Vec<Entry>,
    ) -> Result<(), Violation> {
        let mut out = output();
        out.writes.push(Write::Append { entries });
        checker.check(NodeId(node), view, &out)
    }

    #[test]
    fn matching_logs_and_conflicts_in_different_terms_pass() {
        let mut checker = LogMatching::new();
        let leader_log = log(&[1, 1, 2]);
        append(&mut checker, 1, &FakeRaft::new(2, leader_log.clone()), leader_log.clone()).unwrap();
        // A follower receives the same entries in two batches.
        let follower = FakeRaft::new(2, leader_log.clone());
        append(&mut checker, 2, &follower, leader_log[..2].to_vec()).unwrap();
        append(&mut checker, 2, &follower, leader_log[2..].to_vec()).unwrap();
        // Another node holds a different entry at index 3 in another term.
        let other = vec![leader_log[0].clone(), leader_log[1].clone(), entry(3, 3, "x")];
        append(&mut checker, 3, &FakeRaft::new(3, other.clone()), other[2..].to_vec()).unwrap();
    }

    #[test]
    fn the_same_index_and_term_with_another_payload_fires() {
        let mut checker = LogMatching::new();
        let a = log(&[1, 1]);
        append(&mut checker, 1, &FakeRaft::new(1, a.clone()), a.clone()).unwrap();
        let b = vec![a[0].clone(), entry(1, 2, "other")];
        let violation =
            append(&mut checker, 2, &FakeRaft::new(1, b.clone()), b[1..].to_vec()).unwrap_err();
        assert_eq!(violation.property, PROPERTY);
        assert!(violation.detail.contains("another payload"), "{violation}");
    }

    #[test]
    fn the_same_index_and_term_after_another_previous_term_fires() {
        let mut checker = LogMatching::new();
        let a = vec![entry(1, 1, "a"), entry(3, 2, "b")];
        append(&mut checker, 1, &FakeRaft::new(3, a.clone()), a.clone()).unwrap();
        // Node 2 holds (2, 3) with the same payload, but after a term-2 entry.
        let b = vec![entry(2, 1, "z"), entry(3, 2, "b")];
        append(&mut checker, 2, &FakeRaft::new(3, b.clone()), b[..1].to_vec()).unwrap();
        let violation =
            append(&mut checker, 2, &FakeRaft::new(3, b.clone()), b[1..].to_vec()).unwrap_err();
        assert!(violation.detail.contains("previous term 1, not 2"), "{violation}");
    }

    #[test]
    fn the_previous_term_comes_from_an_earlier_append_of_the_same_step() {
        let mut checker = LogMatching::new();
        let a = log(&[1, 1]);
        append(&mut checker, 1, &FakeRaft::new(1, a.clone()), a.clone()).unwrap();
        // One step: append (1, term 2) then (2, term 1) — the core's log
        // after the step says index 1 has term 2, and so does the write.
        let mut out = output();
        out.writes.push(Write::Append { entries: vec![entry(2, 1, "q")] });
        out.writes.push(Write::Append { entries: vec![entry(1, 2, "op2")] });
        // (The fake's log disagrees with the writes, to show which one counts.)
        let view = FakeRaft::new(2, log(&[1, 1]));
        let violation = checker.check(NodeId(2), &view, &out).unwrap_err();
        assert!(violation.detail.contains("after (index 1, term Some(2))"), "{violation}");
    }

    #[test]
    fn an_implausible_jump_fires_instead_of_allocating() {
        let mut checker = LogMatching::new();
        let entries = vec![entry(1, u64::MAX / 2, "a")];
        assert!(append(&mut checker, 1, &FakeRaft::new(1, vec![]), entries).is_err());
    }

    #[test]
    fn a_gap_inside_an_append_fires() {
        let mut checker = LogMatching::new();
        let entries = vec![entry(1, 1, "a"), entry(1, 3, "b")];
        let violation = append(&mut checker, 1, &FakeRaft::new(1, vec![]), entries).unwrap_err();
        assert_eq!(violation.property, PROPERTY);
    }
}
