//! Membership changes on a node: who the members are and where they listen.
//!
//! - [`Reconfigure`]: what the driver needs from a protocol core to change
//!   its membership. Raft implements it with joint consensus
//!   ([`RaftNode::change_membership`]); a core without membership changes
//!   (Multi-Paxos today) keeps the defaults, which refuse
//!   ([`MemberError::Unsupported`]).
//! - [`Directory`]: every member's name and addresses. It travels **in the
//!   replicated log**: before a member is added, the leader proposes a
//!   *registration* (the whole directory, new member included) as an
//!   ordinary command whose bytes start with [`REGISTRATION_MAGIC`]; every
//!   node applies it by adopting the directory (the key-value store sees a
//!   no-op) and dials the new peer. Each node keeps its copy in
//!   `members.json` in its data directory (written atomically), since the
//!   log entry may later be compacted into a snapshot. A node's `[[members]]`
//!   config is the starting point.
//! - [`MembersView`]: what `Cluster.MemberList` reports, published by the
//!   driver after every change.

use crate::error::NodeError;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use synod_core::{NodeId, Output, Protocol, Time};
use synod_paxos::PaxosNode;
use synod_raft::{ConfigChangeError, RaftNode};

/// The first bytes of a registration command's op.
pub const REGISTRATION_MAGIC: &[u8; 8] = b"SYNODMBR";
/// The directory file in a node's data directory.
pub const DIRECTORY_FILE: &str = "members.json";
/// Members a directory holds at most (a bound on what one registration
/// carries).
pub const MAX_MEMBERS: usize = 1024;

/// Where one member listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddrs {
    /// Its name (`n<id>` unless configured).
    pub name: String,
    /// Its peer address.
    pub peer_addr: SocketAddr,
    /// Its client address, once known (etcd's `MemberAdd` carries peer URLs
    /// only; `synod member add --client-urls` sends it along).
    pub client_addr: Option<SocketAddr>,
    /// Added as a voter: the leader promotes it from learner once it has
    /// caught up.
    #[serde(default)]
    pub promote: bool,
}

/// Every member's addresses, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    /// By node id.
    pub members: BTreeMap<u64, MemberAddrs>,
}

impl Directory {
    /// The registration command's op bytes for this directory.
    pub fn registration(&self) -> Bytes {
        let mut op = REGISTRATION_MAGIC.to_vec();
        op.extend_from_slice(&serde_json::to_vec(self).expect("a directory serializes"));
        Bytes::from(op)
    }

    /// The directory a registration op carries; `None` for any other op
    /// (or a malformed registration, which is then applied as a no-op).
    pub fn from_registration(op: &[u8]) -> Option<Directory> {
        let body = op.strip_prefix(REGISTRATION_MAGIC.as_slice())?;
        match serde_json::from_slice::<Directory>(body) {
            Ok(d) if d.members.len() <= MAX_MEMBERS => Some(d),
            Ok(_) | Err(_) => {
                tracing::warn!("ignored a malformed member registration");
                None
            }
        }
    }

    /// Reads `dir`/[`DIRECTORY_FILE`], if there is one.
    pub fn load(dir: &Path) -> Result<Option<Directory>, NodeError> {
        let path = dir.join(DIRECTORY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| NodeError::Corrupt(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(NodeError::Corrupt(format!("{}: {e}", path.display()))),
        }
    }

    /// Writes it to `dir`/[`DIRECTORY_FILE`]: a temporary file, fsynced,
    /// renamed over the old one.
    pub fn save(&self, dir: &Path) -> Result<(), NodeError> {
        let path = dir.join(DIRECTORY_FILE);
        let tmp: PathBuf = dir.join(format!("{DIRECTORY_FILE}.tmp"));
        let fail =
            |e: std::io::Error| NodeError::Startup(format!("cannot write {}: {e}", path.display()));
        let mut f = std::fs::File::create(&tmp).map_err(fail)?;
        f.write_all(&serde_json::to_vec_pretty(self).expect("a directory serializes"))
            .map_err(fail)?;
        f.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, &path).map_err(fail)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The id a new member gets: one above every id this directory or
    /// `info` has seen.
    pub fn next_id(&self, info: &MembershipInfo) -> u64 {
        let seen =
            self.members.keys().copied().chain(
                info.voters.iter().chain(&info.learners).chain(&info.removed).map(|id| id.0),
            );
        seen.max().unwrap_or(0) + 1
    }
}

/// A core's membership, protocol-neutral.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipInfo {
    /// The voters (C_new and, while joint, C_old).
    pub voters: BTreeSet<NodeId>,
    /// The learners.
    pub learners: BTreeSet<NodeId>,
    /// Ids removed for good.
    pub removed: BTreeSet<NodeId>,
    /// A change is in flight (joint or not yet committed).
    pub pending: bool,
    /// The index of the configuration entry in effect (changes when the
    /// configuration does).
    pub index: u64,
}

/// A membership change a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// `MemberAdd`: a new member listening on `peer_addr`.
    Add {
        /// Its peer address.
        peer_addr: SocketAddr,
        /// Its client address, if the client said.
        client_addr: Option<SocketAddr>,
        /// Add it as a learner (else as a voter, by joint consensus).
        learner: bool,
    },
    /// `MemberRemove`.
    Remove {
        /// The member.
        id: u64,
    },
    /// `MemberPromote`: a learner becomes a voter.
    Promote {
        /// The learner.
        id: u64,
    },
    /// `MemberUpdate`: a member's addresses change (registered through the
    /// log; the membership itself does not change). A member also sends
    /// this for itself when it starts and the directory lacks its client
    /// address, as an etcd member publishes its client URLs.
    Update {
        /// The member.
        id: u64,
        /// Its (new) peer address.
        peer_addr: SocketAddr,
        /// Its client address; `None` keeps the one registered.
        client_addr: Option<SocketAddr>,
    },
}

/// Why a membership change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// The protocol has no membership changes.
    #[error("membership changes are not supported by the {0} protocol")]
    Unsupported(&'static str),
    /// This node does not lead.
    #[error("not the leader")]
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// Another change is in flight.
    #[error("a membership change is in progress")]
    InProgress,
    /// No member has that id.
    #[error("member not found")]
    NotFound,
    /// Promote of a voter.
    #[error("not a learner")]
    NotLearner,
    /// Promote of a learner that is behind.
    #[error("learner not caught up")]
    NotCaughtUp,
    /// A member already listens on that peer address.
    #[error("peer address in use")]
    PeerAddrExists,
    /// The id was removed and cannot come back.
    #[error("id was removed")]
    Removed,
    /// The change makes no sense (e.g. removing the last voter).
    #[error("{0}")]
    Invalid(String),
    /// The leader changed before the change finished (it may still take
    /// effect).
    #[error("leader changed")]
    LeaderChanged,
    /// The node is shutting down.
    #[error("server stopped")]
    Stopped,
}

impl From<ConfigChangeError> for MemberError {
    fn from(e: ConfigChangeError) -> MemberError {
        match e {
            ConfigChangeError::NotLeader { hint } => MemberError::NotLeader { leader: hint },
            ConfigChangeError::InProgress | ConfigChangeError::Transferring => {
                MemberError::InProgress
            }
            ConfigChangeError::NotCaughtUp { .. } => MemberError::NotCaughtUp,
            ConfigChangeError::Removed { .. } => MemberError::Removed,
            ConfigChangeError::Invalid(why) => MemberError::Invalid(why.to_string()),
        }
    }
}

/// One member as `MemberList` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its peer address, if known.
    pub peer_addr: Option<SocketAddr>,
    /// Its client address, if known.
    pub client_addr: Option<SocketAddr>,
    /// A learner (non-voting) member.
    pub is_learner: bool,
}

/// The members as this node knows them, ascending by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembersView {
    /// The members; empty when the protocol does not report membership
    /// (the service then lists the configured members).
    pub members: Vec<MemberView>,
}

impl MembersView {
    /// The view of `info` with addresses from `directory`.
    pub fn new(info: &MembershipInfo, directory: &Directory) -> MembersView {
        let mut members = BTreeMap::new();
        let all = info.voters.iter().map(|id| (id, false));
        for (id, is_learner) in all.chain(info.learners.iter().map(|id| (id, true))) {
            let addrs = directory.members.get(&id.0);
            let view = MemberView {
                id: id.0,
                name: addrs.map_or_else(|| format!("n{}", id.0), |a| a.name.clone()),
                peer_addr: addrs.map(|a| a.peer_addr),
                client_addr: addrs.and_then(|a| a.client_addr),
                is_learner,
            };
            members.insert(id.0, view);
        }
        MembersView { members: members.into_values().collect() }
    }

    /// Member `id`'s client address, if known.
    pub fn client_addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.members.iter().find(|m| m.id == id.0).and_then(|m| m.client_addr)
    }
}

/// What the driver needs from a core to change its membership. The
/// defaults describe a core without membership changes.
pub trait Reconfigure: Protocol {
    /// The membership in effect, or `None` if the core has no notion of
    /// changing it.
    fn membership_info(&self) -> Option<MembershipInfo> {
        None
    }

    /// Replaces the voters and learners (on the leader).
    ///
    /// # Errors
    /// [`MemberError::Unsupported`] by default; the core's refusal
    /// otherwise.
    fn change_members(
        &mut self,
        _now: Time,
        _voters: BTreeSet<NodeId>,
        _learners: BTreeSet<NodeId>,
        _out: &mut Output<Self::Message, Self::Write>,
    ) -> Result<(), MemberError> {
        Err(MemberError::Unsupported("this"))
    }
}

impl Reconfigure for RaftNode {
    fn membership_info(&self) -> Option<MembershipInfo> {
        let m = self.membership();
        Some(MembershipInfo {
            voters: m.all_voters().collect(),
            learners: m.learners.clone(),
            removed: m.removed.clone(),
            pending: self.membership_change_pending(),
            index: self.membership_index(),
        })
    }

    fn change_members(
        &mut self,
        now: Time,
        voters: BTreeSet<NodeId>,
        learners: BTreeSet<NodeId>,
        out: &mut Output<Self::Message, Self::Write>,
    ) -> Result<(), MemberError> {
        Ok(self.change_membership(now, voters, learners, out)?)
    }
}

/// Multi-Paxos has no membership changes: the driver refuses them (with
/// the protocol's name) before it would call the default.
impl Reconfigure for PaxosNode {}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(port: u16) -> MemberAddrs {
        MemberAddrs {
            name: format!("n{port}"),
            peer_addr: SocketAddr::from(([127, 0, 0, 1], port)),
            client_addr: None,
            promote: false,
        }
    }

    #[test]
    fn a_registration_round_trips_and_other_ops_are_not_one() {
        let mut d = Directory::default();
        d.members.insert(1, addrs(2380));
        d.members.insert(4, addrs(2480));
        let op = d.registration();
        assert_eq!(Directory::from_registration(&op), Some(d.clone()));
        assert_eq!(Directory::from_registration(b"put k v"), None);
        assert_eq!(Directory::from_registration(&op[..op.len() - 1]), None, "truncated");
        let info = MembershipInfo {
            removed: [NodeId(9)].into_iter().collect(),
            ..MembershipInfo::default()
        };
        assert_eq!(d.next_id(&info), 10, "never a removed id");
    }

    #[test]
    fn the_directory_survives_a_save_and_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Directory::load(dir.path()).expect("load"), None);
        let mut d = Directory::default();
        d.members.insert(2, addrs(2390));
        d.save(dir.path()).expect("save");
        assert_eq!(Directory::load(dir.path()).expect("load"), Some(d));
    }

    #[test]
    fn the_view_marks_learners_and_fills_in_addresses() {
        let mut d = Directory::default();
        d.members.insert(1, addrs(2380));
        let info = MembershipInfo {
            voters: [NodeId(1)].into_iter().collect(),
            learners: [NodeId(2)].into_iter().collect(),
            ..MembershipInfo::default()
        };
        let v = MembersView::new(&info, &d);
        assert_eq!(v.members.len(), 2);
        assert!(!v.members[0].is_learner && v.members[1].is_learner);
        assert_eq!(v.members[0].peer_addr, Some(addrs(2380).peer_addr));
        assert_eq!((v.members[1].name.as_str(), v.members[1].peer_addr), ("n2", None));
    }
}
