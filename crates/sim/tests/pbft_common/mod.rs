//! Helpers shared by the PBFT scenario tests.

use bytes::Bytes;
use synod_core::NodeId;
use synod_core::kv::KvOp;
use synod_pbft::PbftNode;
use synod_sim::Sim;

/// A put of `value` at `key`.
pub fn put(key: &str, value: &str) -> KvOp {
    KvOp::Put { key: Bytes::from(key.to_string()), value: Bytes::from(value.to_string()) }
}

/// Replica `n`'s core; panics if it is down.
pub fn core(sim: &Sim<PbftNode>, n: u64) -> &PbftNode {
    sim.core(NodeId(n)).unwrap_or_else(|| panic!("n{n} is down"))
}

/// Every replica's one-line summary, for failure messages.
pub fn summaries(sim: &Sim<PbftNode>) -> String {
    (1..=sim.nodes() as u64)
        .map(|n| sim.core(NodeId(n)).map_or(format!("n{n} down"), PbftNode::summary))
        .collect::<Vec<_>>()
        .join("\n")
}
