//! State Machine Safety (Raft paper §5.4.3, Figure 3): if a server has
//! applied a log entry at a given index, no other server will ever apply a
//! different entry at that index.
//!
//! Works for any protocol: positions are Raft indexes, Paxos slots or PBFT
//! sequence numbers, and "applied" means emitted in `Output::committed`.
//! The checker keeps one global record per position (a digest of the first
//! command applied there, and by whom) and compares every later application
//! against it (with the agreed time, for a protocol that emits one: PBFT's
//! batch timestamps must agree too). The record outlives crashes, so it also checks that committed
//! positions never change: a node that restarts and re-applies its log must
//! apply the same commands again.

use super::digest::command_digest;
use crate::invariant::{Invariant, StepView, Violation};
use synod_core::{Committed, NodeId, Protocol};

/// The property's name in violations.
pub const PROPERTY: &str = "state machine safety";

/// How far past every position applied so far a node may apply first (a
/// bound on the record's growth; a larger jump is reported, not allocated).
const MAX_POSITION_JUMP: usize = 1 << 20;

/// The first application seen at a position.
#[derive(Clone, Copy, Debug)]
struct FirstApplied {
    node: NodeId,
    digest: u64,
}

/// Checks that every node applies the same command at each position.
#[derive(Debug, Default)]
pub struct StateMachineSafety {
    /// `applied[i - 1]`: the first application at position `i`.
    applied: Vec<Option<FirstApplied>>,
}

impl StateMachineSafety {
    /// A checker that has seen nothing applied.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node` applied `committed`, in order.
    pub fn check(&mut self, node: NodeId, committed: &[Committed]) -> Result<(), Violation> {
        for c in committed {
            let Some(slot) = usize::try_from(c.index).ok().and_then(|i| i.checked_sub(1)) else {
                return Err(Violation::new(PROPERTY, Some(node), "applied position 0"));
            };
            if slot >= self.applied.len() {
                if slot - self.applied.len() > MAX_POSITION_JUMP {
                    let detail = format!(
                        "applied index {} while no node applied beyond {}",
                        c.index,
                        self.applied.len()
                    );
                    return Err(Violation::new(PROPERTY, Some(node), detail));
                }
                self.applied.resize(slot + 1, None);
            }
            // The agreed time (PBFT) is part of what is applied.
            let time = c.time.map_or(0, |t| (t.0 | 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let digest = command_digest(c.command.as_ref()) ^ time;
            match self.applied[slot] {
                None => self.applied[slot] = Some(FirstApplied { node, digest }),
                Some(first) if first.digest == digest => {}
                Some(first) => {
                    return Err(Violation::new(
                        PROPERTY,
                        Some(node),
                        format!(
                            "applied {:?} (time {:?}) at index {}, but {} applied a different \
                             command or time there",
                            c.command, c.time, c.index, first.node
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl<P: Protocol> Invariant<P> for StateMachineSafety {
    fn name(&self) -> &'static str {
        PROPERTY
    }

    fn after_step(&mut self, step: &StepView<'_, P>) -> Result<(), Violation> {
        self.check(step.node, &step.output.committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::{ClientId, Command};

    fn applied(index: u64, op: &'static str) -> Committed {
        let command = (!op.is_empty()).then(|| Command::new(ClientId(1), index, op));
        Committed { index, command, time: None }
    }

    #[test]
    fn nodes_applying_the_same_commands_pass() {
        let mut checker = StateMachineSafety::new();
        let log = [applied(1, ""), applied(2, "put x 1"), applied(3, "put y 2")];
        checker.check(NodeId(1), &log).unwrap();
        checker.check(NodeId(2), &log[..2]).unwrap();
        checker.check(NodeId(2), &log[2..]).unwrap();
    }

    #[test]
    fn a_different_command_at_the_same_index_fires() {
        let mut checker = StateMachineSafety::new();
        checker.check(NodeId(1), &[applied(1, ""), applied(2, "put x 1")]).unwrap();
        let violation =
            checker.check(NodeId(2), &[applied(1, ""), applied(2, "put x 2")]).unwrap_err();
        assert_eq!(violation.property, PROPERTY);
        assert_eq!(violation.node, Some(NodeId(2)));
        assert!(violation.detail.contains("index 2"), "{violation}");
    }

    #[test]
    fn a_noop_where_a_command_was_applied_fires() {
        let mut checker = StateMachineSafety::new();
        checker.check(NodeId(1), &[applied(1, "put x 1")]).unwrap();
        assert!(checker.check(NodeId(2), &[applied(1, "")]).is_err());
    }

    #[test]
    fn a_restarted_node_reapplying_a_different_command_fires() {
        // Crash and restart are invisible to this checker: its record is
        // global and permanent, so a re-applied log must match the first one.
        let mut checker = StateMachineSafety::new();
        checker.check(NodeId(1), &[applied(1, "a"), applied(2, "b")]).unwrap();
        checker.check(NodeId(1), &[applied(1, "a")]).unwrap();
        let violation = checker.check(NodeId(1), &[applied(2, "c")]).unwrap_err();
        assert_eq!(violation.property, PROPERTY);
    }

    #[test]
    fn an_implausible_jump_fires_instead_of_allocating() {
        let mut checker = StateMachineSafety::new();
        assert!(checker.check(NodeId(1), &[applied(u64::MAX, "a")]).is_err());
    }

    #[test]
    fn position_zero_fires() {
        let mut checker = StateMachineSafety::new();
        assert!(checker.check(NodeId(1), &[applied(0, "a")]).is_err());
    }
}
