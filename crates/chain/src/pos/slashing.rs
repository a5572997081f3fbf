//! Slashing: the provable offences and evidence any node can verify on its
//! own — two signed headers for one slot by one proposer (double proposal),
//! two signed attestations with the same target epoch and different data
//! (double vote), or one attestation's link surrounding the other's
//! (`s1 < s2` and `t2 < t1`: surround vote).

use super::types::{AttestationData, SignedAttestation, SignedHeader, ValidatorIndex};
use super::validators::Registry;

/// The initial penalty is `stake / MIN_SLASHING_PENALTY_QUOTIENT`
/// (phase0: 128; Altair 64; Bellatrix 32).
pub const MIN_SLASHING_PENALTY_QUOTIENT: u64 = 32;

/// Proof of an offence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// Two different headers for one slot, both signed by the proposer.
    DoubleProposal(SignedHeader, SignedHeader),
    /// Two conflicting attestations by one validator.
    Attester(SignedAttestation, SignedAttestation),
}

/// True when two attestation votes by one validator are slashable
/// (`is_slashable_attestation_data`).
pub fn is_slashable(a: &AttestationData, b: &AttestationData) -> bool {
    let double = a != b && a.target.epoch == b.target.epoch;
    let surround = |x: &AttestationData, y: &AttestationData| {
        x.source.epoch < y.source.epoch && y.target.epoch < x.target.epoch
    };
    double || surround(a, b) || surround(b, a)
}

impl Evidence {
    /// The offender, if the evidence verifies: same signer, both signatures
    /// valid, and a slashable pair.
    pub fn verify(&self, registry: &Registry) -> Option<ValidatorIndex> {
        match self {
            Evidence::DoubleProposal(a, b) => {
                let (ha, hb) = (a.header, b.header);
                let same = ha.proposer == hb.proposer && ha.slot == hb.slot && ha != hb;
                let signed = registry.verify(ha.proposer, &ha.hash().0, &a.signature)
                    && registry.verify(hb.proposer, &hb.hash().0, &b.signature);
                (same && signed).then_some(ha.proposer)
            }
            Evidence::Attester(a, b) => {
                let same = a.validator == b.validator && is_slashable(&a.data, &b.data);
                let signed = registry.verify(a.validator, &a.data.signing_root().0, &a.signature)
                    && registry.verify(b.validator, &b.data.signing_root().0, &b.signature);
                (same && signed).then_some(a.validator)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash32;
    use crate::pos::types::{BlockHeader, Checkpoint};
    use crate::pos::validators::sign;
    use crate::tx::key_from_seed;
    use ed25519_dalek::SigningKey;

    fn setup() -> (Vec<SigningKey>, Registry) {
        let keys: Vec<SigningKey> = (0..3).map(|i| key_from_seed(11, i)).collect();
        let reg = Registry::new(&keys, &[10, 10, 10]);
        (keys, reg)
    }

    fn att(key: &SigningKey, v: u32, s: u64, t: u64, head: u8) -> SignedAttestation {
        let data = AttestationData {
            slot: t * 32,
            head: Hash32([head; 32]),
            source: Checkpoint { epoch: s, root: Hash32([s as u8; 32]) },
            target: Checkpoint { epoch: t, root: Hash32([t as u8; 32]) },
        };
        SignedAttestation { validator: v, data, signature: sign(key, &data.signing_root().0) }
    }

    #[test]
    fn double_and_surround_votes_are_provable_and_honest_votes_are_not() {
        let (keys, reg) = setup();
        let double = Evidence::Attester(att(&keys[1], 1, 2, 3, 1), att(&keys[1], 1, 2, 3, 2));
        assert_eq!(double.verify(&reg), Some(1));
        let surround = Evidence::Attester(att(&keys[1], 1, 1, 5, 1), att(&keys[1], 1, 2, 4, 1));
        assert_eq!(surround.verify(&reg), Some(1));
        let honest = Evidence::Attester(att(&keys[1], 1, 2, 3, 1), att(&keys[1], 1, 3, 4, 1));
        assert_eq!(honest.verify(&reg), None, "consecutive links are fine");
        // Forged: validator 2's name on validator 1's signature.
        let mut forged = att(&keys[1], 1, 2, 3, 2);
        forged.validator = 2;
        let framed = Evidence::Attester(att(&keys[2], 2, 2, 3, 1), forged);
        assert_eq!(framed.verify(&reg), None, "nobody can be framed");
    }

    #[test]
    fn two_headers_for_one_slot_are_provable() {
        let (keys, reg) = setup();
        let h = |body: u8| BlockHeader {
            slot: 7,
            proposer: 0,
            parent: Hash32::ZERO,
            body_root: Hash32([body; 32]),
        };
        let signed =
            |hd: BlockHeader| SignedHeader { header: hd, signature: sign(&keys[0], &hd.hash().0) };
        assert_eq!(Evidence::DoubleProposal(signed(h(1)), signed(h(2))).verify(&reg), Some(0));
        assert_eq!(Evidence::DoubleProposal(signed(h(1)), signed(h(1))).verify(&reg), None);
    }
}
