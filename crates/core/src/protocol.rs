//! The sans-IO protocol interface shared by Raft, Multi-Paxos and PBFT.
//!
//! A protocol core is a deterministic state machine. It owns no sockets,
//! clocks, files, threads or random sources: a driver (the simulator, a unit
//! test, or the real node) calls it and carries out what it returns.
//!
//! ## Calls
//!
//! - [`Protocol::tick`] — time passed; the core fires whatever timers expired.
//!   [`Protocol::next_deadline`] says when the next one fires, so a driver can
//!   sleep (or schedule a simulated event) exactly until then.
//! - [`Protocol::step`] — a message from a peer arrived.
//! - [`Protocol::propose`] — clients ask for a batch of commands to be ordered.
//! - [`Protocol::read`] — a client asks for a linearizable read barrier.
//!
//! ## The output contract
//!
//! Every call appends to an [`Output`]. The driver must honour it in this
//! order (the *persistence contract*):
//!
//! 1. [`Output::writes`] become durable (written and synced) first;
//! 2. only then are [`Output::messages`] sent — a vote or an acknowledgement
//!    may never leave before the state it promises is on disk;
//! 3. [`Output::committed`] are applied to the state machine in order;
//! 4. [`Output::reads`] are served once the state machine has applied up to
//!    their index, and [`Output::events`] are reported.
//!
//! A driver may keep calling the core while an earlier batch's writes are
//! still syncing, provided each batch's messages wait for that batch's (and
//! every earlier batch's) writes. Committed commands may be applied before
//! their batch's writes sync only if the driver knows they are already durable
//! on a quorum (they are: "committed" means exactly that).
//!
//! ## Snapshots (state transfer and log compaction)
//!
//! The state machine's contents belong to the host; a core only knows
//! positions. Snapshots are therefore built, stored, moved and loaded by the
//! host, on the core's instruction, through [`Output::snapshots`] and three
//! calls. The seam is the same for every protocol (Raft's InstallSnapshot,
//! Multi-Paxos catch-up, PBFT state transfer):
//!
//! - **Taking.** A core emits [`SnapshotAction::Take`] when its policy says
//!   so (every N entries / M bytes). The host captures the state machine as
//!   of exactly position `index`, makes it durable in its *snapshot store*,
//!   then calls [`Protocol::snapshot_taken`]. Only then may the core emit the
//!   writes that purge its log prefix; so a purged position is always inside
//!   a durable snapshot.
//! - **Sending.** To bring a peer up to date the core emits
//!   [`SnapshotAction::Read`] (one bounded chunk of the durable snapshot at
//!   `index`, from `offset`). The host reads it and hands it back with
//!   [`Protocol::snapshot_chunk`]; the core wraps it in its own message. A
//!   core keeps at most a small, fixed number of chunks per peer in flight,
//!   so memory on the sender is bounded by `chunk size × peers`. If the host
//!   no longer holds that snapshot it ignores the action (the core retries
//!   with its latest one).
//! - **Receiving.** For each chunk that arrives in order the core emits
//!   [`SnapshotAction::Write`]: the host appends `data` at `offset` to a
//!   *partial* snapshot for (`index`, `epoch`) (offset 0 starts a new one and
//!   discards any other partial). A partial snapshot is never used for
//!   recovery: a crash mid-transfer simply restarts the transfer. When the
//!   last chunk arrived the core emits [`SnapshotAction::Install`].
//! - **Installing.** The host makes the partial snapshot its current durable
//!   snapshot *before* this output's writes become durable (step 1 below),
//!   then, in step 3, replaces the state machine with it. Positions continue
//!   after `meta.index`: [`Output::committed`] skips from the previous
//!   applied position to `meta.index + 1`.
//! - **Recovering.** After [`Protocol::recover`], [`Protocol::snapshot`]
//!   names the snapshot the core's durable state starts from; the host loads
//!   exactly that one into its state machine before carrying out any output.
//!   Hence the host keeps every snapshot until the writes of the output in
//!   which the core adopted a newer one (the output of `snapshot_taken`, or
//!   the output holding `Install`) are durable; older ones may then go.
//!
//! Order within step 3: snapshot actions are carried out in list order, each
//! at its *position* among [`Output::committed`] — after every committed
//! entry with `index <=` the action's `index` and before every one above it
//! (`Take` snapshots exactly the state at `index`; `Install` replaces the
//! state, and the entries after it continue from there). `Read` and `Write`
//! have no position; carry them out in step 1 (`Write` before the output's
//! writes) or later, in list order.
//!
//! ## What differs between protocols
//!
//! Each protocol chooses its own message type, its own durable-write type and
//! the shape of the state it recovers from ([`Protocol::Durable`]); the
//! driver treats them as opaque. Raft's epoch is a term and its positions log
//! indexes; Paxos's epoch is a ballot round and its positions slots; PBFT's
//! epoch is a view and its positions sequence numbers. PBFT's clients send to
//! every replica and need `f+1` matching replies ([`ClientRouting::All`]);
//! Raft's and Paxos's send to the leader and need one ([`ClientRouting::Leader`]).
//! Signatures and MACs are the core's business: it signs what it sends and
//! verifies what it receives, with keys handed to it at construction.

use crate::command::{Command, NodeId};
use crate::time::Time;
use bytes::Bytes;
use std::fmt::Debug;

/// A protocol message, as the driver sees it: opaque, but sized and named
/// for transport limits and metrics.
pub trait Message: Clone + Debug {
    /// A short name of the message kind (`"append"`, `"vote"`, `"prepare"`…),
    /// used to count messages by kind.
    fn kind(&self) -> &'static str;
    /// An estimate of the bytes this message takes on the wire.
    fn size_bytes(&self) -> usize;
}

/// A sans-IO consensus core. See the [module docs](self) for the contract.
pub trait Protocol: Sized {
    /// What the core is built from: cluster members, timeouts, limits.
    type Config: Clone + Debug;
    /// Messages exchanged between replicas.
    type Message: Message;
    /// One durable write (hard state, log entries, acceptor state, …).
    type Write: Clone + Debug;
    /// Everything that survives a crash: the result of applying, in order,
    /// every write that was synced. `Default` is a fresh, empty disk.
    type Durable: Clone + Debug + Default;

    /// Builds (or rebuilds after a crash) the core of node `id` from what was
    /// durable. `seed` feeds the core's own random choices (election timeouts),
    /// so that a run is reproducible. `now` is the driver's current time.
    fn recover(
        id: NodeId,
        config: &Self::Config,
        durable: &Self::Durable,
        seed: u64,
        now: Time,
    ) -> Self;

    /// Applies one synced write to the durable state. The simulator's disk and
    /// recovery tests use this; a real store implements the same meaning.
    fn apply_write(durable: &mut Self::Durable, write: &Self::Write);

    /// This node's id.
    fn id(&self) -> NodeId;

    /// Time passed: fire every timer due at or before `now`.
    fn tick(&mut self, now: Time, out: &mut Output<Self::Message, Self::Write>);

    /// The earliest time at which [`tick`](Protocol::tick) has work to do.
    /// A driver that ticks later than this only delays timers.
    fn next_deadline(&self) -> Time;

    /// A message `msg` from peer `from` arrived.
    fn step(
        &mut self,
        now: Time,
        from: NodeId,
        msg: Self::Message,
        out: &mut Output<Self::Message, Self::Write>,
    );

    /// Asks the core to order `commands`, all or none. On success they will be
    /// committed (and so appear in [`Output::committed`]) unless leadership is
    /// lost first; the client learns the outcome from the state machine's
    /// answer, and retries with the same request id otherwise.
    fn propose(
        &mut self,
        now: Time,
        commands: Vec<Command>,
        out: &mut Output<Self::Message, Self::Write>,
    ) -> Result<(), ProposeError>;

    /// Asks for a linearizable read barrier. On success a [`ReadState`] with
    /// the same `id` appears in a later (or this) output once it is safe to
    /// read the state machine at its index; on loss of leadership an
    /// [`Event::ReadFailed`] appears instead.
    fn read(
        &mut self,
        now: Time,
        id: ReadId,
        out: &mut Output<Self::Message, Self::Write>,
    ) -> Result<(), ProposeError>;

    /// A summary of the core's state, for drivers, metrics and checkers.
    fn status(&self) -> Status;

    /// How clients reach this protocol.
    fn client_routing(config: &Self::Config) -> ClientRouting;

    /// The host finished a [`SnapshotAction::Take`]: the state machine as of
    /// position `index` is durable in its snapshot store and takes
    /// `size_bytes`. The core may now compact (its writes appear in `out`).
    /// See [Snapshots](self#snapshots-state-transfer-and-log-compaction).
    /// Cores without snapshots ignore it.
    fn snapshot_taken(
        &mut self,
        now: Time,
        index: u64,
        size_bytes: u64,
        out: &mut Output<Self::Message, Self::Write>,
    ) {
        let _ = (now, index, size_bytes, out);
    }

    /// Whether the host must hand the SHA-256 of a snapshot's bytes to
    /// [`Protocol::snapshot_taken_with_digest`] (a Byzantine core signs it
    /// into its checkpoints, so that a replica fetching the snapshot from
    /// one peer can check it against a quorum's digest). Cores that trust
    /// their peers leave it false; hosts may then skip the hashing.
    const SNAPSHOT_DIGESTS: bool = false;

    /// [`Protocol::snapshot_taken`] with the SHA-256 of the snapshot's
    /// bytes (exactly the bytes [`SnapshotAction::Read`] serves, in order).
    /// Hosts call this one when [`Protocol::SNAPSHOT_DIGESTS`] is set;
    /// the default ignores the digest.
    fn snapshot_taken_with_digest(
        &mut self,
        now: Time,
        index: u64,
        size_bytes: u64,
        sha256: [u8; 32],
        out: &mut Output<Self::Message, Self::Write>,
    ) {
        let _ = sha256;
        self.snapshot_taken(now, index, size_bytes, out);
    }

    /// The host read the chunk a [`SnapshotAction::Read`] asked for: `data`
    /// holds the snapshot at `index` from byte `offset` (fewer bytes than
    /// asked only at its end). The core sends it to `to`.
    fn snapshot_chunk(
        &mut self,
        now: Time,
        to: NodeId,
        index: u64,
        offset: u64,
        data: Bytes,
        out: &mut Output<Self::Message, Self::Write>,
    ) {
        let _ = (now, to, index, offset, data, out);
    }

    /// The host made this node's own log durable up to position `index`:
    /// every write the core emitted for a position `<= index` is synced (a
    /// sync that began before a later write replaced one of those positions
    /// does not count). Only a core configured to let its leader write its
    /// log in parallel with replicating it (Raft's
    /// `leader_parallel_write`, thesis §10.2.1) needs this: it counts its
    /// own log toward a quorum only up to the last `index` reported, so
    /// the host may sync a leader's appends after sending them and after
    /// going on with other calls. Other cores ignore it.
    fn persisted(&mut self, now: Time, index: u64, out: &mut Output<Self::Message, Self::Write>) {
        let _ = (now, index, out);
    }

    /// The snapshot the core's state starts from (its durable snapshot after
    /// [`recover`](Protocol::recover), later whichever it took or installed
    /// last), or `None` when it has none. A host loads exactly this snapshot
    /// into its state machine after a restart.
    fn snapshot(&self) -> Option<SnapshotMeta> {
        None
    }
}

/// What identifies a state-machine snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last position the snapshot includes (Raft: last included index).
    pub index: u64,
    /// The epoch of the entry at `index` (Raft: last included term).
    pub epoch: u64,
    /// Its size in bytes.
    pub size_bytes: u64,
}

/// One thing a core asks of the host's snapshot store and state machine.
/// See [Snapshots](self#snapshots-state-transfer-and-log-compaction) for the
/// contract, including where in the output order each runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotAction {
    /// Capture the state machine as of position `index`, make it durable,
    /// then call [`Protocol::snapshot_taken`].
    Take {
        /// The position (every committed entry up to it is applied).
        index: u64,
    },
    /// Read at most `max_bytes` of the durable snapshot at `index` from byte
    /// `offset` and hand them to [`Protocol::snapshot_chunk`] for peer `to`.
    Read {
        /// The peer the chunk is for.
        to: NodeId,
        /// The snapshot.
        index: u64,
        /// Where to start.
        offset: u64,
        /// The chunk size limit.
        max_bytes: usize,
    },
    /// Append `data` at `offset` to the partial snapshot (`index`, `epoch`)
    /// received from a peer; offset 0 starts a new one, discarding any other.
    Write {
        /// The snapshot's last included position.
        index: u64,
        /// The epoch of the entry at `index`.
        epoch: u64,
        /// Where `data` goes; always the partial snapshot's current length.
        offset: u64,
        /// The chunk.
        data: Bytes,
    },
    /// The partial snapshot is complete: make it the durable snapshot (before
    /// this output's writes are durable) and replace the state machine with
    /// it (at its position in step 3).
    Install {
        /// The snapshot; `size_bytes` is the partial snapshot's length.
        meta: SnapshotMeta,
    },
}

impl SnapshotAction {
    /// The position at which the action runs among `Output::committed`, if
    /// it has one (`Take` and `Install`).
    pub fn position(&self) -> Option<u64> {
        match self {
            SnapshotAction::Take { index } => Some(*index),
            SnapshotAction::Install { meta } => Some(meta.index),
            SnapshotAction::Read { .. } | SnapshotAction::Write { .. } => None,
        }
    }
}

/// How a client sends requests and how many replies it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientRouting {
    /// Send to the leader (follow [`ProposeError::NotLeader`] hints); one
    /// reply from it is enough. Raft, Multi-Paxos.
    Leader,
    /// Send to every replica; accept a result once `replies` replicas sent
    /// matching ones. PBFT, with `replies = f + 1`.
    All {
        /// Matching replies needed.
        replies: usize,
    },
}

/// Why a proposal or read was refused. The client may retry elsewhere or later.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node does not lead; `hint` is the leader it knows of, if any.
    #[error("not the leader (leader hint: {hint:?})")]
    NotLeader {
        /// The leader this node believes in, if any.
        hint: Option<NodeId>,
    },
    /// Too much is in flight already (uncommitted entries, pending reads);
    /// back off and retry.
    #[error("busy: {0}")]
    Busy(&'static str),
    /// The request can never be accepted (e.g. larger than the size limit).
    #[error("rejected: {0}")]
    Rejected(&'static str),
    /// The request is older than its client's latest executed one (a
    /// client session, as PBFT keeps one per client): it will never be
    /// ordered. A client that still wants it sends it again with a newer
    /// sequence number.
    #[error("rejected: stale request")]
    Stale,
    /// Leadership is moving to another node; retry there shortly.
    #[error("leadership transfer in progress")]
    Transferring,
}

/// The id of a read request, chosen by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

/// A read barrier that is now safe: once the state machine has applied
/// everything up to `index`, a read reflects every write that completed
/// before the read was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The read this answers.
    pub id: ReadId,
    /// The commit position the state machine must have reached.
    pub index: u64,
}

/// A command (or a no-op) at its final position in the agreed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Log index (Raft), slot (Paxos) or sequence number (PBFT). Consecutive:
    /// a core emits every position exactly once, in order, from 1 — except
    /// that a snapshot (installed, or loaded at recovery) stands for every
    /// position up to its index, and emission continues right after it.
    pub index: u64,
    /// The command, or `None` for a no-op (a new leader's entry, a Paxos hole
    /// filler, a PBFT null request).
    pub command: Option<Command>,
    /// The agreed time the command executes at, when the protocol agrees
    /// on one: PBFT's batch timestamp, chosen by the primary, checked by
    /// backups and clamped to never go back (every correct replica emits
    /// the same time at each position). `None` for Raft and Multi-Paxos,
    /// whose commands carry their proposer's clock themselves.
    pub time: Option<Time>,
}

/// Something that happened, for the driver, metrics and checkers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// This node's role or epoch changed.
    RoleChanged {
        /// The new role.
        role: Role,
        /// The epoch (term / ballot round / view) it holds the role in.
        epoch: u64,
    },
    /// The node learned who leads (or that nobody does).
    LeaderChanged {
        /// The leader, if known.
        leader: Option<NodeId>,
        /// The epoch of that leadership.
        epoch: u64,
    },
    /// A read barrier asked for with [`Protocol::read`] can no longer be
    /// served here (leadership was lost); the client should retry.
    ReadFailed {
        /// The read.
        id: ReadId,
    },
    /// This replica refused to vouch for a leader's proposal because the
    /// time the leader stamped it with was further from this replica's
    /// clock than the protocol's bound (PBFT: a PRE-PREPARE whose batch
    /// timestamp is more than δ from the backup's clock, so no PREPARE).
    /// Reported at most once per proposal (epoch and position), so a
    /// faulty leader cannot make a replica report without bound; the core
    /// logs nothing itself: the host decides how loud to be.
    TimestampRefused {
        /// The epoch (PBFT view) of the proposal.
        epoch: u64,
        /// Its position in that epoch's order (PBFT sequence number).
        seq: u64,
        /// The time the leader stamped it with.
        proposed: Time,
        /// This replica's clock when it refused.
        local: Time,
    },
}

/// The role a replica plays. Not every protocol uses every role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (Raft follower, Paxos acceptor/learner, PBFT backup).
    Follower,
    /// Raft pre-vote phase: probing whether an election could succeed.
    PreCandidate,
    /// Running an election (Raft candidate, Paxos proposer in Phase 1, PBFT
    /// replica in a view change).
    Candidate,
    /// Leads (Raft leader, Paxos distinguished proposer, PBFT primary).
    Leader,
    /// Receives the log but does not vote.
    Learner,
}

/// A summary of a core's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// The node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Term / ballot round / view.
    pub epoch: u64,
    /// The leader it knows of, if any.
    pub leader: Option<NodeId>,
    /// Highest position known committed.
    pub commit_index: u64,
    /// Highest position emitted in [`Output::committed`].
    pub applied_index: u64,
    /// Highest position in its log (or slot it has accepted).
    pub last_index: u64,
}

/// The ordered output of one or more calls into a core. See the
/// [module docs](self) for the order a driver must honour.
#[derive(Clone, Debug)]
pub struct Output<M, W> {
    /// 1. Writes to make durable before anything below leaves the node.
    pub writes: Vec<W>,
    /// 2. Messages to send, each to one peer, after `writes` are durable.
    pub messages: Vec<(NodeId, M)>,
    /// 3. Positions now committed, in order, to apply.
    pub committed: Vec<Committed>,
    /// 4a. Read barriers now safe to serve.
    pub reads: Vec<ReadState>,
    /// 4b. Role, leadership and read-failure events.
    pub events: Vec<Event>,
    /// Snapshot work for the host, in order; see the [module
    /// docs](self#snapshots-state-transfer-and-log-compaction) for where
    /// each runs relative to the lists above.
    pub snapshots: Vec<SnapshotAction>,
}

impl<M, W> Default for Output<M, W> {
    fn default() -> Self {
        Output {
            writes: Vec::new(),
            messages: Vec::new(),
            committed: Vec::new(),
            reads: Vec::new(),
            events: Vec::new(),
            snapshots: Vec::new(),
        }
    }
}

impl<M, W> Output<M, W> {
    /// An empty output.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.messages.is_empty()
            && self.committed.is_empty()
            && self.reads.is_empty()
            && self.events.is_empty()
            && self.snapshots.is_empty()
    }

    /// Empties every list, keeping the allocations (a driver reuses one
    /// `Output` across calls to stay off the allocator on the hot path).
    pub fn clear(&mut self) {
        self.writes.clear();
        self.messages.clear();
        self.committed.clear();
        self.reads.clear();
        self.events.clear();
        self.snapshots.clear();
    }

    /// Queues `msg` for `to`.
    pub fn send(&mut self, to: NodeId, msg: M) {
        self.messages.push((to, msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_empties_every_list() {
        let mut out: Output<u8, u8> = Output::new();
        assert!(out.is_empty());
        out.writes.push(1);
        out.send(NodeId(2), 3);
        out.committed.push(Committed { index: 1, command: None, time: None });
        out.reads.push(ReadState { id: ReadId(1), index: 1 });
        out.events.push(Event::ReadFailed { id: ReadId(1) });
        out.snapshots.push(SnapshotAction::Take { index: 1 });
        assert!(!out.is_empty());
        out.clear();
        assert!(out.is_empty());
    }

    #[test]
    fn snapshot_actions_with_a_position_are_take_and_install() {
        assert_eq!(SnapshotAction::Take { index: 4 }.position(), Some(4));
        let meta = SnapshotMeta { index: 9, epoch: 2, size_bytes: 10 };
        assert_eq!(SnapshotAction::Install { meta }.position(), Some(9));
        let read = SnapshotAction::Read { to: NodeId(2), index: 9, offset: 0, max_bytes: 8 };
        assert_eq!(read.position(), None);
    }
}
