//! The PBFT client rule on Synod's own client path (OSDI'99 §4.1): a
//! replica's signed reply to a client request ([`sign_reply`]), and the
//! client's [`Tally`], which accepts a result only when f+1 different
//! replicas sent the same one with valid signatures, so that at least one
//! correct replica vouches for it.
//!
//! **Authentication: an Ed25519 signature by the replica**, over
//! [`reply_digest`] (view, client, sequence number, replica id, result;
//! domain-separated from every other signed body). Not a MAC with a key per
//! client-replica pair, because:
//! - no new secret has to be made and handed out: the replica signs with
//!   the key it already signs checkpoints and view changes with, and the
//!   client checks with the replicas' public keys, which its key file lists
//!   (adding a client adds its public key to the replicas' files, nothing
//!   secret to both sides);
//! - a signed reply is transferable: a client can show it to anyone;
//! - the cost (one signature per reply, tens of microseconds, made on the
//!   gRPC runtime, never on the driver's thread) is small beside the round
//!   trip and the ordering a request costs anyway.
//!
//! The tally drops (and counts) a reply from a replica the client does not
//! know, for another request, or with a bad signature; a replica's first
//! valid reply is its answer (a correct replica's never changes: a retry is
//! answered from the session cache).

use crate::pbft_keys::ClientIdentity;
use bytes::Bytes;
use ed25519_dalek::Signature;
use std::collections::HashMap;
use std::sync::Arc;
use synod_core::{ClientId, NodeId, quorum};
use synod_etcdpb::synodpb::SubmitReply;
use synod_pbft::digest::BodyHasher;
use synod_pbft::{Digest, Keyring};

/// The digest a replica signs in its reply to request `seq` of `client`.
pub fn reply_digest(view: u64, client: u64, seq: u64, replica: u64, result: &[u8]) -> Digest {
    let mut h = BodyHasher::new(b"client-reply");
    h.u64(view).u64(client).u64(seq).u64(replica).u64(result.len() as u64).bytes(result);
    h.finish()
}

/// `reply` signed by `keyring`'s replica (its `replica` field must name it).
pub fn sign_reply(keyring: &Keyring, mut reply: SubmitReply) -> SubmitReply {
    let d = reply_digest(reply.view, reply.client, reply.seq, reply.replica, &reply.result);
    reply.signature = keyring.sign(&d).to_bytes().to_vec();
    reply
}

/// Why a reply was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// From a replica the client's key file does not list.
    UnknownReplica,
    /// For another client or request.
    OtherRequest,
    /// Its signature does not verify under the replica's key.
    BadSignature,
}

/// One request's replies, as a client counts them.
#[derive(Debug)]
pub struct Tally {
    client: ClientId,
    seq: u64,
    /// f+1.
    needed: usize,
    replicas: Arc<HashMap<NodeId, ed25519_dalek::VerifyingKey>>,
    /// Each replica's answer (its first valid reply).
    answers: HashMap<NodeId, Bytes>,
    dropped: u64,
}

impl Tally {
    /// The tally for request `seq` of the client `keys` describe, in a
    /// cluster of the replicas they list (n = 3f+1: f+1 must agree).
    pub fn new(keys: &ClientIdentity, seq: u64) -> Tally {
        Tally {
            client: keys.client,
            seq,
            needed: quorum::byzantine_reply_quorum(keys.replicas.len()),
            replicas: keys.replicas.clone(),
            answers: HashMap::new(),
            dropped: 0,
        }
    }

    /// Replicas that must agree (f+1).
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// Counts `reply`; returns the result once f+1 replicas sent it.
    pub fn add(&mut self, reply: &SubmitReply) -> Result<Option<Bytes>, Dropped> {
        if let Err(why) = self.verify(reply) {
            self.dropped += 1;
            return Err(why);
        }
        let replica = NodeId(reply.replica);
        self.answers.entry(replica).or_insert_with(|| Bytes::copy_from_slice(&reply.result));
        let matching = self.answers.values().filter(|r| **r == reply.result[..]).count();
        Ok((matching >= self.needed).then(|| Bytes::copy_from_slice(&reply.result)))
    }

    fn verify(&self, reply: &SubmitReply) -> Result<(), Dropped> {
        let Some(key) = self.replicas.get(&NodeId(reply.replica)) else {
            return Err(Dropped::UnknownReplica);
        };
        if reply.client != self.client.0 || reply.seq != self.seq {
            return Err(Dropped::OtherRequest);
        }
        let Ok(bytes) = <[u8; 64]>::try_from(&reply.signature[..]) else {
            return Err(Dropped::BadSignature);
        };
        let d = reply_digest(reply.view, reply.client, reply.seq, reply.replica, &reply.result);
        key.verify_strict(&d.0, &Signature::from_bytes(&bytes)).map_err(|_| Dropped::BadSignature)
    }

    /// Whether `replica` has answered (validly).
    pub fn answered(&self, replica: NodeId) -> bool {
        self.answers.contains_key(&replica)
    }

    /// Replicas that answered validly.
    pub fn answers(&self) -> usize {
        self.answers.len()
    }

    /// Replies dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether f+1 matching answers can no longer come: too many replicas
    /// answered differently (only possible with more than f faulty ones, or
    /// replicas that executed the request in different states).
    pub fn hopeless(&self) -> bool {
        let n = self.replicas.len();
        let best = {
            let mut counts: HashMap<&Bytes, usize> = HashMap::new();
            for r in self.answers.values() {
                *counts.entry(r).or_default() += 1;
            }
            counts.values().copied().max().unwrap_or(0)
        };
        best + (n - self.answers.len()) < self.needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pbft_keys::generate_with_clients;

    struct Cluster {
        rings: Vec<Arc<Keyring>>,
        client: ClientIdentity,
    }

    fn cluster() -> Cluster {
        let ids: Vec<NodeId> = (1..=4).map(NodeId).collect();
        let (replicas, clients) = generate_with_clients(&[1, 2, 3, 4], 1);
        let rings = replicas
            .iter()
            .map(|f| f.keys(NodeId(f.node_id), &ids).expect("keys").keyring)
            .collect();
        Cluster { rings, client: clients[0].keys().expect("client keys") }
    }

    fn reply(c: &Cluster, replica: u64, seq: u64, result: &'static [u8]) -> SubmitReply {
        let r = SubmitReply {
            view: 3,
            client: c.client.client.0,
            seq,
            replica,
            result: result.to_vec(),
            signature: Vec::new(),
        };
        sign_reply(&c.rings[replica as usize - 1], r)
    }

    #[test]
    fn f_plus_1_matching_signed_replies_are_accepted() {
        let c = cluster();
        let mut t = Tally::new(&c.client, 9);
        assert_eq!(t.needed(), 2);
        assert_eq!(t.add(&reply(&c, 1, 9, b"ok")), Ok(None));
        // The same replica again does not make two.
        assert_eq!(t.add(&reply(&c, 1, 9, b"ok")), Ok(None));
        assert_eq!(t.add(&reply(&c, 3, 9, b"ok")), Ok(Some(Bytes::from_static(b"ok"))));
        assert!(t.answered(NodeId(3)) && !t.answered(NodeId(2)));
        assert_eq!(t.dropped(), 0);
    }

    #[test]
    fn f_matching_and_one_different_are_not_accepted() {
        let c = cluster();
        let mut t = Tally::new(&c.client, 9);
        assert_eq!(t.add(&reply(&c, 2, 9, b"lie")), Ok(None));
        assert_eq!(t.add(&reply(&c, 1, 9, b"ok")), Ok(None), "f = 1 matching + 1 different");
        assert!(!t.hopeless());
        // A replica that answered cannot change its answer to make a match.
        assert_eq!(t.add(&reply(&c, 2, 9, b"ok")), Ok(None));
        assert_eq!(t.add(&reply(&c, 4, 9, b"ok")), Ok(Some(Bytes::from_static(b"ok"))));
        // Four different answers: no result can reach f+1 any more.
        let mut t = Tally::new(&c.client, 9);
        for (r, res) in [(1, &b"a"[..]), (2, b"b"), (3, b"c")] {
            let mut rep = reply(&c, r, 9, b"x");
            rep.result = res.to_vec();
            let rep = sign_reply(&c.rings[r as usize - 1], rep);
            assert_eq!(t.add(&rep), Ok(None));
        }
        assert!(!t.hopeless(), "replica 4 may still match one of them");
        let rep =
            sign_reply(&c.rings[3], SubmitReply { result: b"d".to_vec(), ..reply(&c, 4, 9, b"x") });
        assert_eq!(t.add(&rep), Ok(None));
        assert!(t.hopeless());
    }

    #[test]
    fn forged_foreign_and_misdirected_replies_are_dropped_and_counted() {
        let c = cluster();
        let mut t = Tally::new(&c.client, 9);
        // Replica 2 signs a reply in replica 1's name.
        let forged = sign_reply(&c.rings[1], reply(&c, 1, 9, b"ok"));
        assert_eq!(forged.replica, 1);
        assert_eq!(t.add(&forged), Err(Dropped::BadSignature));
        // A changed result under a valid signature.
        let mut changed = reply(&c, 3, 9, b"ok");
        changed.result = b"ko".to_vec();
        assert_eq!(t.add(&changed), Err(Dropped::BadSignature));
        // No signature at all.
        let mut bare = reply(&c, 3, 9, b"ok");
        bare.signature.clear();
        assert_eq!(t.add(&bare), Err(Dropped::BadSignature));
        // A replica the client does not know, even signing validly.
        let stranger = Keyring::derive(1, 0, 5);
        let r = SubmitReply { replica: 5, ..reply(&c, 1, 9, b"ok") };
        assert_eq!(t.add(&sign_reply(&stranger, r)), Err(Dropped::UnknownReplica));
        // Another request's reply.
        assert_eq!(t.add(&reply(&c, 4, 8, b"ok")), Err(Dropped::OtherRequest));
        // Another client's reply, validly signed by the replica.
        let other = SubmitReply { client: 77, ..reply(&c, 4, 9, b"ok") };
        assert_eq!(t.add(&sign_reply(&c.rings[3], other)), Err(Dropped::OtherRequest));
        assert_eq!(t.dropped(), 6);
        assert_eq!(t.answers(), 0, "none of them counts");
        // Two valid ones still make the result.
        assert_eq!(t.add(&reply(&c, 3, 9, b"ok")), Ok(None));
        assert_eq!(t.add(&reply(&c, 4, 9, b"ok")), Ok(Some(Bytes::from_static(b"ok"))));
    }
}
