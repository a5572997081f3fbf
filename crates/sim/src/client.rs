//! Simulated clients: the key-value workload, request ids and retries.
//!
//! Each client issues its operations one at a time, numbering them 1, 2, 3…
//! (the `seq` of [`synod_core::Command`]); a retry reuses the number. Values
//! are unique (`"<client>.<seq>;"`), so the linearizability checker can tell
//! every write apart. Keys are few and skewed so that operations conflict.
//! The simulator ([`crate::Sim`]) moves requests over the network and drives
//! the timers; this module holds the client's state and picks operations.

use crate::rng::SimRng;
use bytes::Bytes;
use std::collections::VecDeque;
use synod_core::kv::KvOp;
use synod_core::{ClientId, NodeId, Time};

/// A request on its way from a client to a replica.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    /// Index of the client in the simulator.
    pub client: u32,
    /// The request's sequence number.
    pub seq: u64,
    /// The encoded [`KvOp`].
    pub op: Bytes,
    /// A get (served by a read barrier unless reads go through the log).
    pub read: bool,
}

/// A replica's answer to a request.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    /// The state machine's answer (an encoded `KvResult`).
    Value(Bytes),
    /// Not the leader; maybe a hint.
    NotLeader(Option<NodeId>),
    /// Try again later.
    Busy,
}

/// Where a client's operations come from.
#[derive(Clone, Debug)]
pub(crate) enum Workload {
    /// `remaining` random operations.
    Random { remaining: usize },
    /// Operations queued by a test through [`crate::Sim::submit`], each with
    /// the replica to try first.
    Manual(VecDeque<(KvOp, Option<NodeId>, usize)>),
}

/// The operation a client is waiting on.
#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    pub seq: u64,
    pub op: KvOp,
    pub encoded: Bytes,
    pub read: bool,
    /// Its position in the history.
    pub hist: usize,
    /// The index of its key among the run's keys, when the workload knows
    /// it (saves finding the key among all of them on completion).
    pub key_index: Option<usize>,
    pub first_call: Time,
    pub attempts: u32,
    /// Attempts of this operation that timed out without an answer.
    pub silent_timeouts: u32,
}

/// How long a client waits for an answer to one attempt of an operation
/// after `silent_timeouts` of its attempts went unanswered: the full
/// `client_timeout_ms` for the first attempt, then an eighth of it (it
/// retransmits). A lost request or reply is the common cause of silence
/// under message loss; waiting the full timeout for each (as clients once
/// did) let a few losses in a row outlast a test's patience while the
/// cluster was healthy.
pub(crate) fn attempt_timeout_ms(client_timeout_ms: u64, silent_timeouts: u32) -> u64 {
    if silent_timeouts == 0 { client_timeout_ms } else { (client_timeout_ms / 8).max(1) }
}

/// One simulated client.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    pub id: ClientId,
    pub workload: Workload,
    pub seq: u64,
    pub current: Option<InFlight>,
    /// The replica (index) it sends to next.
    pub target: usize,
    /// Timer generation: a wake-up with an older generation is stale.
    pub generation: u64,
    /// True while waiting out a backoff (the next wake-up resends to the
    /// same target instead of treating silence as a timeout).
    pub backing_off: bool,
    /// A replica just named `target` the leader: silence from it is first
    /// blamed on a lost request or reply, and the request is resent there
    /// once before the client moves on (else, under message loss, every
    /// lost message would send the client round every replica, crashed ones
    /// included, at a full timeout each).
    pub target_hinted: bool,
    /// The last value this client saw for each key (for compare-and-set).
    pub last_values: Vec<Option<Bytes>>,
    /// Replies collected for the current op under `ClientRouting::All`.
    pub replies: Vec<(NodeId, Bytes)>,
    /// Excluded from metrics (the liveness probe).
    pub is_probe: bool,
}

impl Client {
    pub fn new(index: usize, workload: Workload, target: usize, keys: usize) -> Client {
        Client {
            id: ClientId(index as u64 + 1),
            workload,
            seq: 0,
            current: None,
            target,
            generation: 0,
            backing_off: false,
            target_hinted: false,
            last_values: vec![None; keys],
            replies: Vec::new(),
            is_probe: false,
        }
    }

    /// True when the client has nothing left to do.
    pub fn is_done(&self) -> bool {
        self.current.is_none()
            && match &self.workload {
                Workload::Random { remaining } => *remaining == 0,
                Workload::Manual(q) => q.is_empty(),
            }
    }
}

/// The workload's key names.
pub(crate) fn key_names(keys: usize) -> Vec<Bytes> {
    (0..keys).map(|i| Bytes::from(format!("k{i}"))).collect()
}

/// Picks a random operation for `client`'s request `seq`: 40% get, 25% put,
/// 20% append, 15% compare-and-set; half of the operations hit the first two
/// keys.
pub(crate) fn random_op(
    rng: &mut SimRng,
    client: &Client,
    seq: u64,
    keys: &[Bytes],
) -> (KvOp, usize) {
    let hot = keys.len().min(2);
    let k = if rng.chance(0.5) { rng.index(hot) } else { rng.index(keys.len()) };
    let key = keys[k].clone();
    let value = || Bytes::from(format!("{}.{seq};", client.id.0));
    let dice = rng.below(100);
    let op = if dice < 40 {
        KvOp::Get { key }
    } else if dice < 65 {
        KvOp::Put { key, value: value() }
    } else if dice < 85 {
        KvOp::Append { key, value: value() }
    } else {
        KvOp::Cas { key, expected: client.last_values[k].clone(), new: value() }
    };
    (op, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmissions_wait_an_eighth_of_the_client_timeout() {
        let t: Vec<u64> = (0..4).map(|s| attempt_timeout_ms(1_600, s)).collect();
        assert_eq!(t, vec![1_600, 200, 200, 200]);
        assert_eq!(attempt_timeout_ms(4, 1), 1);
    }

    #[test]
    fn workload_values_are_unique_and_ops_are_mixed() {
        let keys = key_names(4);
        let c = Client::new(2, Workload::Random { remaining: 1000 }, 0, keys.len());
        let mut rng = SimRng::new(5);
        let mut values = std::collections::HashSet::new();
        let mut kinds = [0; 4];
        for seq in 1..=1000 {
            let (op, k) = random_op(&mut rng, &c, seq, &keys);
            assert!(k < 4);
            match op {
                KvOp::Get { .. } => kinds[0] += 1,
                KvOp::Put { value, .. } | KvOp::Append { value, .. } => {
                    kinds[1] += 1;
                    assert!(values.insert(value));
                }
                KvOp::Cas { new, .. } => {
                    kinds[2] += 1;
                    assert!(values.insert(new));
                }
            }
        }
        assert!(kinds.iter().take(3).all(|&k| k > 50), "{kinds:?}");
        assert!(!c.is_done());
    }
}
