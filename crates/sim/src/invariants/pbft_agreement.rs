//! PBFT agreement (Castro & Liskov, OSDI'99 §4.4, "safety"): no two
//! correct replicas execute different requests at one sequence number —
//! across view changes, checkpoints, state transfers and restarts.
//!
//! Per sequence number the checker keeps a fingerprint of the first batch
//! executed there (and by whom) and compares every later execution with
//! it. Incremental: after each step it looks only at sequence numbers the
//! node executed since its last step. Byzantine replicas, once the
//! simulator has them, are excluded by the caller.

use super::node_map::NodeMap;
use crate::invariant::{Invariant, StepView, Violation};
use synod_core::NodeId;
use synod_pbft::{Digest, PbftNode};

/// The property's name in violations.
pub const PROPERTY: &str = "pbft agreement";

/// Bound on how far past the highest recorded sequence number a node may
/// execute first.
const MAX_SEQ_JUMP: u64 = 1 << 20;

/// Checks that every replica executes the same batch at each sequence
/// number.
#[derive(Debug, Default)]
pub struct PbftAgreement {
    /// `first[seq - 1]`: the first replica to execute `seq` and what.
    first: Vec<Option<(NodeId, Digest)>>,
    /// Per live replica, the sequence numbers already compared.
    checked: NodeMap<u64>,
}

impl PbftAgreement {
    /// A checker that has seen nothing executed.
    pub fn new() -> Self {
        Self::default()
    }

    /// `node` executed the batch with digest `digest` at `seq`.
    pub fn check(&mut self, node: NodeId, seq: u64, digest: Digest) -> Result<(), Violation> {
        assert!(seq > 0, "sequence numbers start at 1");
        let i = (seq - 1) as usize;
        if i >= self.first.len() {
            if seq > self.first.len() as u64 + MAX_SEQ_JUMP {
                let detail = format!("executed seq {seq}, far beyond any other");
                return Err(Violation::new(PROPERTY, Some(node), detail));
            }
            self.first.resize(i + 1, None);
        }
        match self.first[i] {
            None => {
                self.first[i] = Some((node, digest));
                Ok(())
            }
            Some((_, d)) if d == digest => Ok(()),
            Some((other, d)) => {
                let detail = format!(
                    "executed batch {digest:?} at seq {seq}, but {other} executed {d:?} there"
                );
                Err(Violation::new(PROPERTY, Some(node), detail))
            }
        }
    }
}

impl Invariant<PbftNode> for PbftAgreement {
    fn name(&self) -> &'static str {
        PROPERTY
    }

    fn after_step(&mut self, step: &StepView<'_, PbftNode>) -> Result<(), Violation> {
        let core = step.core;
        let executed = core.executed_seq();
        let from = *self.checked.entry(step.node);
        // Below the history base the batches were discarded (a snapshot
        // adopted or installed: proved by a quorum's checkpoint).
        for seq in from.max(core.history_base()) + 1..=executed {
            let Some(digest) = core.executed_digest(seq) else { break };
            self.check(step.node, seq, digest)?;
        }
        *self.checked.entry(step.node) = executed.max(from);
        Ok(())
    }

    fn on_crash(&mut self, node: NodeId) {
        self.checked.remove(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_replicas_executing_different_batches_at_one_seq_is_a_violation() {
        let mut c = PbftAgreement::new();
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        assert!(c.check(NodeId(1), 1, a).is_ok());
        assert!(c.check(NodeId(2), 1, a).is_ok());
        assert!(c.check(NodeId(2), 2, b).is_ok());
        let v = c.check(NodeId(3), 2, a).unwrap_err();
        assert_eq!(v.property, PROPERTY);
        assert_eq!(v.node, Some(NodeId(3)));
        assert!(v.detail.contains("seq 2") && v.detail.contains("n2"), "{}", v.detail);
        // A restarted replica executing the same history again is fine.
        assert!(c.check(NodeId(1), 1, a).is_ok());
        assert!(c.check(NodeId(1), 3, b).is_ok(), "out of order first executions are recorded");
        assert!(c.check(NodeId(4), 3, a).is_err());
    }
}
