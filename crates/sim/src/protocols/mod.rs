//! [`SimProtocol`] implementations for Synod's protocols.

pub mod paxos;
pub mod pbft;
pub mod raft;

use crate::options::ProtocolKind;
use crate::protocol::SimProtocol;

/// The bug names `--bug` accepts for `kind`.
pub fn bugs(kind: ProtocolKind) -> &'static [&'static str] {
    match kind {
        ProtocolKind::Raft => synod_raft::RaftNode::bugs(),
        ProtocolKind::Paxos => synod_paxos::PaxosNode::bugs(),
        ProtocolKind::Pbft => synod_pbft::PbftNode::bugs(),
    }
}

/// Checks that `bug` names an injectable bug of `kind`; the error lists the
/// names it knows.
pub fn check_bug(kind: ProtocolKind, bug: &str) -> Result<(), String> {
    let known = bugs(kind);
    if known.contains(&bug) {
        Ok(())
    } else if known.is_empty() {
        Err(format!("--bug {bug}: {} has no injectable bugs", kind.name()))
    } else {
        Err(format!(
            "--bug {bug}: unknown {} bug (expected one of: {})",
            kind.name(),
            known.join(", ")
        ))
    }
}

/// The names of every check a run of `kind` makes: its safety invariants,
/// then linearizability and liveness.
pub fn checks(kind: ProtocolKind) -> Vec<&'static str> {
    fn names<P: SimProtocol>() -> Vec<&'static str> {
        P::invariants().iter().map(|i| i.name()).collect()
    }
    let mut all = match kind {
        ProtocolKind::Raft => names::<synod_raft::RaftNode>(),
        ProtocolKind::Paxos => names::<synod_paxos::PaxosNode>(),
        ProtocolKind::Pbft => names::<synod_pbft::PbftNode>(),
    };
    all.extend(["linearizability", "liveness"]);
    all
}
