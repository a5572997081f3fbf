//! Proof-of-stake messages: checkpoints, attestation data, aggregates and
//! blocks, with their canonical encodings and hashes.

use crate::hash::{Hash32, merkle_root, sha256};
use crate::tx::Tx;
use std::sync::Arc;

/// Index of a validator in the registry.
pub type ValidatorIndex = u32;

/// An epoch boundary block: `root` is the block at or before the epoch's
/// first slot on the voter's chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Checkpoint {
    /// The epoch.
    pub epoch: u64,
    /// The boundary block.
    pub root: Hash32,
}

/// What an attestation votes for: an LMD-GHOST head and an FFG link
/// `source → target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttestationData {
    /// The slot the attester was scheduled in.
    pub slot: u64,
    /// The head block (LMD vote).
    pub head: Hash32,
    /// The justified checkpoint the link starts from.
    pub source: Checkpoint,
    /// The current epoch's checkpoint.
    pub target: Checkpoint,
}

/// Domain separation of attestation signatures.
const ATTESTATION_DOMAIN: &[u8] = b"synod-chain/attestation/v1";
/// Domain separation of block signatures.
const BLOCK_DOMAIN: &[u8] = b"synod-chain/block/v1";
/// Domain separation of RANDAO reveals.
const RANDAO_DOMAIN: &[u8] = b"synod-chain/randao/v1";

impl AttestationData {
    /// The signed digest.
    pub fn signing_root(&self) -> Hash32 {
        let mut b = Vec::with_capacity(ATTESTATION_DOMAIN.len() + 8 * 3 + 32 * 3);
        b.extend_from_slice(ATTESTATION_DOMAIN);
        b.extend_from_slice(&self.slot.to_le_bytes());
        b.extend_from_slice(&self.head.0);
        b.extend_from_slice(&self.source.epoch.to_le_bytes());
        b.extend_from_slice(&self.source.root.0);
        b.extend_from_slice(&self.target.epoch.to_le_bytes());
        b.extend_from_slice(&self.target.root.0);
        sha256(&b)
    }
}

/// One validator's signed attestation (what slashing evidence carries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedAttestation {
    /// The attester.
    pub validator: ValidatorIndex,
    /// The vote.
    pub data: AttestationData,
    /// Ed25519 over `data.signing_root()`.
    pub signature: [u8; 64],
}

/// The attestations of one committee with identical data, bundled (Ed25519
/// has no signature aggregation, so the signatures travel side by side;
/// the bundling is what saves messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    /// The shared vote.
    pub data: AttestationData,
    /// The attesters.
    pub validators: Vec<ValidatorIndex>,
    /// Their signatures, in the same order.
    pub signatures: Vec<[u8; 64]>,
}

impl Aggregate {
    /// An id for inclusion bookkeeping.
    pub fn id(&self) -> Hash32 {
        let mut b = self.data.signing_root().0.to_vec();
        for v in &self.validators {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for s in &self.signatures {
            b.extend_from_slice(&s[..8]);
        }
        sha256(&b)
    }

    /// The `i`-th attestation.
    pub fn get(&self, i: usize) -> SignedAttestation {
        SignedAttestation {
            validator: self.validators[i],
            data: self.data,
            signature: self.signatures[i],
        }
    }

    /// Encoded size.
    pub fn size_bytes(&self) -> usize {
        8 + 3 * 32 + 16 + self.validators.len() * (4 + 64)
    }
}

/// A block header: what the proposer signs and what double-proposal
/// evidence carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockHeader {
    /// The slot.
    pub slot: u64,
    /// The proposer.
    pub proposer: ValidatorIndex,
    /// The parent block.
    pub parent: Hash32,
    /// Hash of the body (RANDAO reveal, attestations, evidence, payload).
    pub body_root: Hash32,
}

impl BlockHeader {
    /// The block id (and the signed digest).
    pub fn hash(&self) -> Hash32 {
        let mut b = Vec::with_capacity(BLOCK_DOMAIN.len() + 8 + 4 + 64);
        b.extend_from_slice(BLOCK_DOMAIN);
        b.extend_from_slice(&self.slot.to_le_bytes());
        b.extend_from_slice(&self.proposer.to_le_bytes());
        b.extend_from_slice(&self.parent.0);
        b.extend_from_slice(&self.body_root.0);
        sha256(&b)
    }
}

/// A signed header (double-proposal evidence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedHeader {
    /// The header.
    pub header: BlockHeader,
    /// The proposer's Ed25519 signature over `header.hash()`.
    pub signature: [u8; 64],
}

/// A beacon block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PosBlock {
    /// The signed header.
    pub signed: SignedHeader,
    /// `Sign(proposer, epoch)`: mixed into the RANDAO accumulator.
    pub randao_reveal: [u8; 64],
    /// Aggregates included (so a node that missed the gossip, e.g. across
    /// a partition, learns the votes from the chain).
    pub attestations: Vec<Arc<Aggregate>>,
    /// Signed transfers (the same [`Tx::Transfer`] the PoW and PBFT chains
    /// carry; no coinbase: this chain pays no block reward). Every node
    /// applies them on its parent's ledger when importing the block, and
    /// one that does not apply makes the whole block invalid.
    pub txs: Vec<Tx>,
}

impl PosBlock {
    /// The body root the header must commit to: the RANDAO reveal, the
    /// aggregates' ids, the transfer count and the Merkle root of the
    /// txids (the count rules out the duplicated-last-leaf mutation of
    /// CVE-2012-2459).
    pub fn body_root(&self) -> Hash32 {
        let mut b = self.randao_reveal.to_vec();
        for a in &self.attestations {
            b.extend_from_slice(&a.id().0);
        }
        b.extend_from_slice(&(self.txs.len() as u64).to_le_bytes());
        b.extend_from_slice(&self.tx_root().0);
        sha256(&b)
    }

    /// A block by validator `proposer` (key `key`) at `slot` on `parent`,
    /// with its RANDAO reveal for `epoch`, body root and header signature.
    pub fn propose(
        key: &ed25519_dalek::SigningKey,
        proposer: ValidatorIndex,
        slot: u64,
        epoch: u64,
        parent: Hash32,
        attestations: Vec<Arc<Aggregate>>,
        txs: Vec<Tx>,
    ) -> PosBlock {
        use super::validators::sign;
        let mut block = PosBlock {
            signed: SignedHeader {
                header: BlockHeader { slot, proposer, parent, body_root: Hash32::ZERO },
                signature: [0; 64],
            },
            randao_reveal: sign(key, &randao_message(epoch)),
            attestations,
            txs,
        };
        block.signed.header.body_root = block.body_root();
        block.signed.signature = sign(key, &block.signed.header.hash().0);
        block
    }

    /// Merkle root of the transfers' txids.
    pub fn tx_root(&self) -> Hash32 {
        let ids: Vec<Hash32> = self.txs.iter().map(Tx::txid).collect();
        merkle_root(&ids)
    }

    /// The block id.
    pub fn hash(&self) -> Hash32 {
        self.signed.header.hash()
    }

    /// Encoded size.
    pub fn size_bytes(&self) -> usize {
        8 + 4
            + 64
            + 64
            + 64
            + self.attestations.iter().map(|a| a.size_bytes()).sum::<usize>()
            + self.txs.iter().map(Tx::size_bytes).sum::<usize>()
    }
}

/// The signed bytes of a RANDAO reveal for `epoch`.
pub fn randao_message(epoch: u64) -> Vec<u8> {
    let mut b = RANDAO_DOMAIN.to_vec();
    b.extend_from_slice(&epoch.to_le_bytes());
    b
}
