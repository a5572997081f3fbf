//! The NEW-VIEW decision: from a set S of VIEW-CHANGE messages, which
//! checkpoint the new view starts from and which request each sequence
//! number above it gets (the set O).
//!
//! The checkpoint is the highest stable checkpoint proved in S (each proof
//! is quorum-many signed CHECKPOINTs, checked on receipt). For every
//! sequence number `n` above it, up to the highest one prepared in S, the
//! rule of Castro & Liskov (TOCS §4.5, thesis §3.2.4) applies, which needs
//! no proof of the prepared certificates themselves:
//!
//! - **A.** choose the request with digest `d` prepared in view `v` at `n`
//!   by some message of S if
//!   - *A1*: quorum-many messages of S prepared nothing at `n` in a view
//!     above `v`, nor anything other than `d` in `v`, and
//!   - *A2*: f+1 messages of S pre-prepared `d` at `n` in view `v` or later;
//! - **B.** otherwise choose the null request if quorum-many messages of S
//!   prepared nothing at `n`;
//! - otherwise S does not decide yet: the primary waits for more.
//!
//! A request committed at one correct replica was prepared at f+1 correct
//! ones, so any quorum of S contains one of them (B cannot hold) and A
//! holds for it and for no other digest. Primary and backups run this same
//! function on the same S: a backup accepts a NEW-VIEW only if it
//! recomputes the same O.

use crate::digest::Digest;
use crate::message::{Batch, StableCheckpoint, ViewChange};
use std::sync::Arc;
use synod_core::quorum;

/// What the new view starts from.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The checkpoint (with its proof) the new view starts from.
    pub checkpoint: StableCheckpoint,
    /// O: for each sequence number above the checkpoint, in order, the
    /// digest and batch re-proposed (empty batch: null request).
    pub pre_prepares: Vec<(u64, Digest, Batch)>,
}

impl Decision {
    /// O as the NEW-VIEW message lists it.
    pub fn digests(&self) -> Vec<(u64, Digest)> {
        self.pre_prepares.iter().map(|(s, d, _)| (*s, *d)).collect()
    }
}

/// Decides the new view from `set` (validated VIEW-CHANGEs for one view
/// from distinct replicas) in a cluster of `n`. `None` while undecided.
pub fn decide(set: &[Arc<ViewChange>], n: usize) -> Option<Decision> {
    let q = quorum::byzantine_quorum(n);
    let weak = quorum::byzantine_f(n) + 1;
    if set.len() < q {
        return None;
    }
    let best = set.iter().max_by_key(|vc| vc.stable.seq)?;
    let h = best.stable.seq;
    let max_seq = set
        .iter()
        .flat_map(|vc| vc.prepared.iter().map(|p| p.seq))
        .filter(|&s| s > h)
        .max()
        .unwrap_or(h);
    let empty = Batch::null();
    let mut pre_prepares = Vec::with_capacity((max_seq - h) as usize);
    for seq in h + 1..=max_seq {
        let mut candidates: Vec<(u64, Digest, &Batch)> = set
            .iter()
            .flat_map(|vc| vc.prepared.iter().filter(|p| p.seq == seq))
            .map(|p| (p.view, p.digest, &p.batch))
            .collect();
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        candidates.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        let chosen =
            candidates.into_iter().find(|&(view, digest, _)| {
                let a1 =
                    set.iter()
                        .filter(|vc| {
                            vc.stable.seq < seq
                                && vc.prepared.iter().filter(|p| p.seq == seq).all(|p| {
                                    p.view < view || (p.view == view && p.digest == digest)
                                })
                        })
                        .count();
                let a2 = set
                    .iter()
                    .filter(|vc| {
                        vc.pre_prepared
                            .iter()
                            .any(|e| e.seq == seq && e.view >= view && e.digest == digest)
                    })
                    .count();
                a1 >= q && a2 >= weak
            });
        match chosen {
            Some((_, digest, batch)) => pre_prepares.push((seq, digest, batch.clone())),
            None => {
                let b = set
                    .iter()
                    .filter(|vc| vc.stable.seq < seq && !vc.prepared.iter().any(|p| p.seq == seq))
                    .count();
                if b < q {
                    return None;
                }
                pre_prepares.push((seq, Digest::ZERO, empty.clone()));
            }
        }
    }
    Some(Decision { checkpoint: best.stable.clone(), pre_prepares })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::batch_digest;
    use crate::message::{PrePreparedEntry, PreparedEntry};
    use ed25519_dalek::Signature;
    use synod_core::{ClientId, Command, NodeId};

    fn batch(tag: u8) -> Batch {
        Batch::new(
            synod_core::Time(tag as u64),
            vec![Command::new(ClientId(1), tag as u64, vec![tag])],
        )
    }

    /// A view change from `replica` with `prepared` (seq, view, batch) and
    /// `pre_prepared` (seq, view, batch).
    fn vc(
        replica: u64,
        prepared: &[(u64, u64, &Batch)],
        q: &[(u64, u64, &Batch)],
    ) -> Arc<ViewChange> {
        Arc::new(ViewChange {
            view: 5,
            replica: NodeId(replica),
            stable: StableCheckpoint::default(),
            prepared: prepared
                .iter()
                .map(|(seq, view, b)| PreparedEntry {
                    seq: *seq,
                    view: *view,
                    digest: batch_digest(b),
                    batch: (*b).clone(),
                })
                .collect(),
            pre_prepared: q
                .iter()
                .chain(prepared.iter())
                .map(|(seq, view, b)| PrePreparedEntry {
                    seq: *seq,
                    view: *view,
                    digest: batch_digest(b),
                })
                .collect(),
            sig: Signature::from_bytes(&[0; 64]),
        })
    }

    #[test]
    fn a_prepared_request_with_support_is_kept_and_holes_become_null() {
        let (a, b) = (batch(1), batch(2));
        // Replica 1 prepared a at 1 and b at 3; replica 2 pre-prepared both.
        let set = vec![
            vc(1, &[(1, 2, &a), (3, 2, &b)], &[]),
            vc(2, &[], &[(1, 2, &a), (3, 2, &b)]),
            vc(3, &[], &[]),
        ];
        let d = decide(&set, 4).expect("decided");
        assert_eq!(d.checkpoint.seq, 0);
        assert_eq!(
            d.digests(),
            vec![(1, batch_digest(&a)), (2, Digest::ZERO), (3, batch_digest(&b))]
        );
    }

    #[test]
    fn a_later_view_wins_over_an_earlier_prepared_digest() {
        let (a, b) = (batch(1), batch(2));
        let set =
            vec![vc(1, &[(1, 1, &a)], &[]), vc(2, &[(1, 3, &b)], &[]), vc(3, &[], &[(1, 3, &b)])];
        let d = decide(&set, 4).expect("decided");
        assert_eq!(d.digests(), vec![(1, batch_digest(&b))]);
    }

    #[test]
    fn a_lone_unsupported_claim_leaves_the_decision_open() {
        // One (possibly lying) replica claims a prepared at 1; nobody else
        // pre-prepared it, and only two say nothing: neither A2 nor B.
        let a = batch(1);
        let set = vec![vc(1, &[(1, 1, &a)], &[]), vc(2, &[], &[]), vc(3, &[], &[])];
        let undecided = decide(&set, 4);
        assert!(undecided.is_none());
        // A fourth message saying nothing makes it null (B).
        let mut set = set;
        set.push(vc(4, &[], &[]));
        let d = decide(&set, 4).expect("decided");
        assert_eq!(d.digests(), vec![(1, Digest::ZERO)]);
    }

    #[test]
    fn fewer_than_a_quorum_decides_nothing() {
        assert!(decide(&[vc(1, &[], &[]), vc(2, &[], &[])], 4).is_none());
        let d = decide(&[vc(1, &[], &[]), vc(2, &[], &[]), vc(3, &[], &[])], 4);
        assert!(d.is_some_and(|d| d.pre_prepares.is_empty()));
    }
}
