//! [`NodeProtocol`]: what the driver needs from a protocol beyond
//! [`Protocol`] — how its messages look on the wire, how its durable writes
//! map onto the write-ahead log and the hard-state file, and how its
//! [`Protocol::Durable`] is rebuilt from them after a restart. Raft
//! implements it in [`crate::raft_glue`]; Multi-Paxos and PBFT plug in the
//! same way.

use crate::disk::Disk;
use crate::error::NodeError;
use crate::wire::WireError;
use bytes::Bytes;
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;
use synod_core::{ClientId, Command, NodeId, Output, ProposeError, Protocol, Time};

/// Protocol tuning from the node's configuration, in protocol-neutral terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolSettings {
    /// Lower bound of the randomized election (or view-change) timeout.
    pub election_timeout_min: Duration,
    /// Upper bound (exclusive) of the randomized election timeout.
    pub election_timeout_max: Duration,
    /// How often an idle leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// PBFT: δ of the agreed clock (`synod_pbft::Config::max_clock_skew`);
    /// the other protocols ignore it.
    pub max_clock_skew: Duration,
    /// Take a snapshot (and compact the log) every this many applied
    /// entries; 0 never.
    pub snapshot_interval_entries: u64,
    /// This node and its PBFT key file (`pbft_keys`); PBFT only.
    pub pbft_keys: Option<(NodeId, PathBuf)>,
    /// PBFT: a snapshot every this many sequence numbers (a multiple of
    /// the checkpoint interval, 128); `None`: the core's default. Raft and
    /// Paxos use `snapshot_interval_entries` instead.
    pub pbft_snapshot_interval: Option<u64>,
}

impl Default for ProtocolSettings {
    fn default() -> Self {
        ProtocolSettings {
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(50),
            max_clock_skew: Duration::from_secs(1),
            snapshot_interval_entries: 10_000,
            pbft_keys: None,
            pbft_snapshot_interval: None,
        }
    }
}

/// The per-protocol glue between a sans-IO core and the node's disk and
/// network. Every method is deterministic and free of I/O except through the
/// [`Disk`] it is handed.
pub trait NodeProtocol: Protocol + Send + 'static
where
    Self::Message: Send,
    Self::Write: Send,
    Self::Config: Send + Sync,
{
    /// The protocol's name in configs and on the command line (`"raft"`).
    const NAME: &'static str;

    /// Whether the core agrees on time ([`synod_core::Committed::time`]:
    /// PBFT): its replicas then read a wall-anchored clock
    /// ([`crate::clock::NodeClock`]) so that their readings compare.
    const AGREED_CLOCK: bool = false;

    /// What this protocol keeps in the hard-state file, as last saved.
    type HardState: Debug + Send;

    /// The core's configuration for a cluster of `voters`.
    fn config(voters: Vec<NodeId>, settings: &ProtocolSettings) -> Result<Self::Config, String>;

    /// A message's bytes for the transport.
    fn encode_message(msg: &Self::Message) -> Vec<u8>;

    /// Decodes a message from a peer (which may be buggy or hostile: never
    /// panics).
    fn decode_message(bytes: &Bytes) -> Result<Self::Message, WireError>;

    /// Rebuilds what was durable: the hard state and the log, from `disk`
    /// (`saved` is the hard-state file's content, if any). Finishes any
    /// multi-step write a crash interrupted.
    fn recover_durable(
        disk: &mut Disk,
        saved: Option<&[u8]>,
    ) -> Result<(Self::HardState, Self::Durable), NodeError>;

    /// Whether `msg` may be sent before the log appends of the round that
    /// produced it are synced (the driver's group commit), so that the
    /// receivers' fsyncs run alongside this node's. Only a message that
    /// promises nothing about this node's own disk may: a leader's
    /// replication — a Raft leader's AppendEntries (thesis §10.2.1: the core
    /// counts the leader's own log toward a quorum only once
    /// `Protocol::persisted` reported it durable), a Paxos leader's accepts
    /// (the driver steps their answers only in a later round, after this
    /// round's fsync). Default: none (every message waits for the sync, as
    /// the persistence contract of `synod_core::protocol` says).
    fn leaves_before_sync(msg: &Self::Message) -> bool {
        let _ = msg;
        false
    }

    /// Whether the core's configuration lets a leader write its log in
    /// parallel with replicating it (Raft's `leader_parallel_write`): then
    /// the driver syncs a leader's appends off its thread, keeps going, and
    /// reports them with `Protocol::persisted` when they are durable.
    /// Default: false (every round's appends are synced inline).
    const PARALLEL_LEADER_WRITE: bool = false;

    /// The host could not take the snapshot at `index` the core asked for
    /// (its write failed without poisoning the storage: a full disk, say);
    /// the core should ask again later rather than wait for an answer that
    /// never comes. Default: nothing (a core without snapshots, or one
    /// without this seam).
    fn snapshot_failed(&mut self, now: Time, index: u64) {
        let _ = (now, index);
    }

    /// Asks the core, as leader, to hand its leadership to `to` (etcd's
    /// MoveLeader); the driver then watches for `to` to lead. `None` if the
    /// protocol cannot transfer leadership (the default); `Some(Err(..))`
    /// with the core's refusal (not the leader, `to` not a voter).
    fn transfer_leadership(
        &mut self,
        now: Time,
        to: NodeId,
        out: &mut Output<Self::Message, Self::Write>,
    ) -> Option<Result<(), ProposeError>> {
        let _ = (now, to, out);
        None
    }

    /// The client id this node's own requests go under when the protocol
    /// fixes it (PBFT: the proxy client its keys name, whose requests it
    /// signs); `None`: a random one per start.
    fn proxy_client(&self) -> Option<ClientId> {
        None
    }

    /// `command` as it is proposed (PBFT: signed with the proxy client's
    /// key). Default: unchanged.
    fn seal(&self, command: Command) -> Command {
        command
    }

    /// Carries out `writes`, in order. Log appends may be left unsynced (the
    /// driver calls [`Disk::sync`] once for the whole batch: group commit);
    /// everything else is durable when this returns.
    fn persist(
        disk: &mut Disk,
        hard: &mut Self::HardState,
        writes: &[Self::Write],
    ) -> Result<(), NodeError>;
}

/// Checks every [`NodeProtocol`] implementation runs against its codec and
/// its disk mapping.
#[cfg(test)]
pub(crate) mod checks {
    use super::NodeProtocol;
    use crate::disk::Disk;
    use bytes::Bytes;
    use std::fmt::Debug;

    /// Each of `messages` decodes to itself, and every strict prefix of its
    /// encoding is an error.
    pub fn codec_round_trips_and_refuses_truncations<P: NodeProtocol>(messages: &[P::Message])
    where
        P::Message: PartialEq + Send,
        P::Write: Send,
        P::Config: Send + Sync,
    {
        for m in messages {
            let bytes = P::encode_message(m);
            let decoded = P::decode_message(&Bytes::from(bytes.clone()));
            assert_eq!(decoded.as_ref().ok(), Some(m), "{m:?}: {decoded:?}");
            for cut in 0..bytes.len() {
                assert!(
                    P::decode_message(&Bytes::copy_from_slice(&bytes[..cut])).is_err(),
                    "{m:?} cut at {cut}"
                );
            }
        }
    }

    /// Carries out `batches` on a disk (syncing after each) and on an
    /// in-memory `Durable`, then reopens the disk and checks that recovery
    /// gives the same state.
    pub fn recovery_matches_the_model<P: NodeProtocol>(batches: &[Vec<P::Write>])
    where
        P::Durable: PartialEq + Debug,
        P::Message: Send,
        P::Write: Send,
        P::Config: Send + Sync,
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut model = P::Durable::default();
        {
            let (mut disk, saved) = Disk::open(dir.path()).expect("open");
            let (mut hard, _) = P::recover_durable(&mut disk, saved.as_deref()).expect("recover");
            for batch in batches {
                P::persist(&mut disk, &mut hard, batch).expect("persist");
                disk.sync().expect("sync");
                for w in batch {
                    P::apply_write(&mut model, w);
                }
            }
        }
        let (mut disk, saved) = Disk::open(dir.path()).expect("reopen");
        let (_, durable) = P::recover_durable(&mut disk, saved.as_deref()).expect("recover");
        assert_eq!(durable, model);
    }
}
