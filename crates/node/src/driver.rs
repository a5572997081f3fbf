//! The driver: one task that owns a protocol core, the node's [`Disk`] and
//! its [`Machine`], and carries out the core's outputs against the real
//! world in the order `synod_core::protocol` demands.
//!
//! Each *round* of the loop waits for something to happen (a peer message,
//! a client request, the core's next timer deadline, shutdown), then takes
//! whatever else is already waiting (bounded by [`MAX_EVENTS_PER_ROUND`]),
//! so that under load one round carries many events:
//!
//! 1. peer messages are stepped into the core; client writes are collected
//!    into one proposal (up to [`MAX_BATCH_COMMANDS`] commands /
//!    [`MAX_BATCH_BYTES`] bytes per `propose`); linearizable reads share one
//!    read barrier per round; serializable reads are answered at once;
//! 2. the core's accumulated output is carried out: received snapshot
//!    chunks are stored, every write is persisted and the log is synced with
//!    **one fsync for the round** (group commit), and only then are the
//!    messages sent (a Raft leader's replication excepted: it leaves before
//!    the fsync, so that leader and followers sync in parallel). A Raft
//!    leader (`NodeProtocol::PARALLEL_LEADER_WRITE`, thesis §10.2.1) does
//!    not even wait: when the node led all round, its appends are synced
//!    off the driver's thread, one sync at a time covering every round
//!    since the last, its other messages wait for that sync, and the core
//!    counts the leader's own log toward a quorum once the sync reports
//!    back (`Protocol::persisted`); any other round syncs inline as before; committed positions are applied (snapshots taken or
//!    installed at their positions), waiting clients answered, read barriers
//!    served once applied far enough;
//! 3. snapshots: a snapshot the core asked for is a copy of the state
//!    machine at its position, written by the [`Snapshotter`] on a thread of
//!    its own while the loop goes on; when it is durable (the loop also
//!    wakes for that) the core hears `snapshot_taken` and compacts its log,
//!    and once that is persisted older snapshot files are deleted (on a
//!    thread of their own); when it fails the core hears `snapshot_failed`
//!    and asks again later. Snapshot bytes are streamed to and from disk
//!    (taking, loading, receiving from and sending to peers), never held
//!    whole in memory;
//! 4. the status (role, term, leader, indexes) is published for the gRPC
//!    service.
//!
//! Writes proposed here are commands of this process's own client session
//! (a random [`ClientId`] per start, sequence numbers counting up), so the
//! session table applies each exactly once. A client's write stays pending
//! across leadership changes (a new leader may still commit it) until it is
//! applied or the client gives up (its reply channel closes).
//!
//! The loop runs on a thread of its own (with a single-threaded runtime for
//! its timers and channels), so its fsyncs block only the driver, never the
//! runtime that serves clients, and cost no hand-off of a runtime worker.

use crate::compactor::{AutoCompaction, Compactor};
use crate::disk::Disk;
use crate::error::NodeError;
use crate::glue::{NodeProtocol, ProtocolSettings};
use crate::machine::Machine;
use crate::members::{
    Directory, MemberAddrs, MemberChange, MemberError, MembersView, MembershipInfo, Reconfigure,
};
use crate::metrics::Metrics;
use crate::snapshotter::{
    ChunkReader, Incoming, Outcome, SnapshotGate, Snapshotter, TakeStart, TakenSnapshot,
    read_machine,
};
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synod_core::protocol::SnapshotAction;
use synod_core::{
    ClientId, ClientRouting, Command, Committed, Event, NodeId, Output, ProposeError, ReadId,
    ReadState, Role, Time,
};
use synod_kv::{CompactionRequest, KvCommand, KvConfig};
use synod_storage::SyncDone;
use synod_transport::{Inbound, TransportHandle};
use tokio::sync::{mpsc, oneshot, watch};

/// Events taken from the queues in one round.
pub const MAX_EVENTS_PER_ROUND: usize = 4096;
/// Commands in one proposal.
pub const MAX_BATCH_COMMANDS: usize = 1024;
/// Bytes of commands in one proposal.
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Largest snapshot accepted from a peer.
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;
/// A round longer than this is logged with where its time went (a leader
/// that stalls this long sends no heartbeats meanwhile).
pub const SLOW_ROUND: Duration = Duration::from_millis(50);
/// Client requests waiting for the driver.
pub const REQUEST_QUEUE_LEN: usize = 8192;
/// Writes and reads waiting for an answer inside the driver.
pub const MAX_PENDING: usize = 100_000;

/// Why the driver did not answer a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// This node does not lead; `leader` is the one it knows of.
    #[error("not the leader")]
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// Too much in flight; retry later.
    #[error("etcdserver: too many requests")]
    Busy,
    /// The request can never be accepted.
    #[error("rejected: {0}")]
    Rejected(String),
    /// A client-signed request older than its client's latest executed one
    /// ([`ProposeError::Stale`]): never ordered.
    #[error("rejected: stale request")]
    Stale,
    /// A client-signed request ordered after a newer one of its client, so
    /// skipped when applied (the state machine's session check): it had no
    /// effect.
    #[error("rejected: superseded")]
    Superseded,
    /// The node is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
}

/// The answer to a request: encoded [`synod_kv::KvResult`] bytes.
pub type Reply = Result<Bytes, ClientError>;

/// A request from the client API to the driver.
#[derive(Debug)]
pub enum ClientRequest {
    /// Order an encoded [`synod_kv::KvCommand`] through the log and answer
    /// with the result of applying it.
    Write {
        /// The command's bytes.
        op: Bytes,
        /// Where the answer goes.
        reply: oneshot::Sender<Reply>,
    },
    /// Serve an encoded [`synod_kv::KvQuery`].
    Read {
        /// The query's bytes.
        query: Bytes,
        /// Wait for a read barrier (linearizable) or answer from local state
        /// at once (serializable).
        linearizable: bool,
        /// Where the answer goes.
        reply: oneshot::Sender<Reply>,
    },
    /// Change the membership (on the leader): answered with the member's id
    /// once the change is in effect and committed.
    Member {
        /// The change.
        change: MemberChange,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<u64, MemberError>>,
    },
    /// Order a client's own signed request unchanged (PBFT's client path,
    /// [`crate::pbft_service`]: the client sends the same request to every
    /// replica) and answer with the result of applying it; a retry of a
    /// request already executed is answered from the session cache.
    Submit {
        /// The request as the client signed it.
        command: Command,
        /// Where the answer goes.
        reply: oneshot::Sender<Reply>,
    },
    /// A point-in-time copy of the local store (key histories are shared
    /// copy-on-write, so this costs a pointer per key, not the data), for
    /// the Maintenance Snapshot stream to encode off the driver's thread.
    CopyStore {
        /// Where the copy goes.
        reply: oneshot::Sender<synod_kv::KvStore>,
    },
    /// Hand leadership to `to` (etcd's MoveLeader, on the leader):
    /// answered once this node knows `to` as the leader, or with why not.
    TransferLeader {
        /// The member that should lead.
        to: NodeId,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), TransferError>>,
    },
}

/// Why a leadership transfer ([`ClientRequest::TransferLeader`]) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// This node does not lead; `leader` is the one it knows of.
    #[error("etcdserver: not leader")]
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// The target is not a voter of the current membership.
    #[error("etcdserver: bad leader transferee")]
    BadTransferee,
    /// The protocol (named) cannot transfer leadership.
    #[error("{0} cannot transfer leadership")]
    Unsupported(&'static str),
    /// The target did not become leader in time.
    #[error("etcdserver: request timed out, leader transfer took too long")]
    TimedOut,
    /// The node is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
}

/// Client requests ([`ClientRequest::Submit`]) waited on at once.
pub const MAX_PENDING_SUBMITS: usize = 16_384;
/// Answers waited on for one submitted request (retries of it).
pub const MAX_WAITERS_PER_SUBMIT: usize = 8;

/// Leadership transfers waited on at once; another is answered `TimedOut`
/// at once.
pub const MAX_PENDING_TRANSFERS: usize = 16;

/// A transfer waits this many maximal election timeouts for the target to
/// lead (the core abandons it after one minimal election timeout).
const TRANSFER_WAIT_ELECTIONS: u32 = 4;

/// A leadership transfer waiting for its target to lead.
struct PendingTransfer {
    to: NodeId,
    deadline: Instant,
    reply: oneshot::Sender<Result<(), TransferError>>,
}

/// Messages to send, with their destinations.
type Outgoing<P> = Vec<(NodeId, <P as synod_core::Protocol>::Message)>;

/// Waits for the background log sync in `task` (never called without one):
/// the last round it covers, its result and how long the fsync took. The
/// task is taken once it finished.
async fn sync_finished(
    task: &mut Option<(u64, tokio::task::JoinHandle<(SyncDone, Duration)>)>,
) -> Result<(u64, SyncDone, Duration), NodeError> {
    let Some((rounds, handle)) = task.as_mut() else {
        return std::future::pending().await;
    };
    let rounds = *rounds;
    let joined = handle.await;
    *task = None;
    match joined {
        Ok((done, took)) => Ok((rounds, done, took)),
        Err(e) => Err(NodeError::Storage(synod_storage::Error::Fatal {
            op: "fsync",
            path: std::path::PathBuf::from("wal"),
            source: std::io::Error::other(format!("the log sync task failed: {e}")),
        })),
    }
}

/// What the driver publishes after every round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Term / ballot / view.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Highest position known committed.
    pub commit_index: u64,
    /// Highest position applied to the state machine.
    pub applied_index: u64,
    /// Highest position in the log.
    pub last_index: u64,
    /// The store's current revision.
    pub revision: i64,
    /// The latest snapshot's index (0: none).
    pub snapshot_index: u64,
}

/// What the driver is built from.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// This node.
    pub node_id: NodeId,
    /// Every voter, including this node.
    pub voters: Vec<NodeId>,
    /// Protocol timing.
    pub settings: ProtocolSettings,
    /// Store limits.
    pub kv: KvConfig,
    /// Every member's addresses as configured (the copy in the data
    /// directory, kept current by the log, takes precedence).
    pub directory: Directory,
}

/// The membership change the leader is carrying out.
struct MemberOp {
    id: u64,
    voters: BTreeSet<NodeId>,
    learners: BTreeSet<NodeId>,
    /// `Some(seq)` while the directory registration (our command `seq`) is
    /// on its way through the log; `None` once the core changes the
    /// membership.
    registering: Option<u64>,
    /// Whether the membership changes once the registration is applied
    /// (an add); else the registration is the whole change (an update).
    reconfigure: bool,
    reply: oneshot::Sender<Result<u64, MemberError>>,
}

impl MemberOp {
    /// A change to `voters` and `learners` for member `id`, not (yet)
    /// registering anything.
    fn new(
        id: u64,
        voters: BTreeSet<NodeId>,
        learners: BTreeSet<NodeId>,
        reconfigure: bool,
        reply: oneshot::Sender<Result<u64, MemberError>>,
    ) -> MemberOp {
        MemberOp { id, voters, learners, registering: None, reconfigure, reply }
    }
}

/// How often the leader tries to promote learners that were added as
/// voters.
const PROMOTE_CHECK: Duration = Duration::from_millis(50);

struct PendingRead {
    query: Bytes,
    reply: oneshot::Sender<Reply>,
}

/// Where one round's time went, for the [`SLOW_ROUND`] log.
#[derive(Clone, Copy, Debug, Default)]
struct RoundTimes {
    persist: Duration,
    fsync: Duration,
    snapshot_copy: Duration,
    snapshot_io: Duration,
}

/// The driver of one node. Build it with [`Driver::open`], then
/// [`Driver::run`] it.
pub struct Driver<P: NodeProtocol + Reconfigure>
where
    P::Message: Send,
    P::Write: Send,
    P::Config: Send + Sync,
{
    core: P,
    out: Output<P::Message, P::Write>,
    disk: Disk,
    hard: P::HardState,
    machine: Machine,
    kv_config: KvConfig,
    transport: TransportHandle,
    start: Instant,
    /// What the core is told the time is ([`crate::clock`]).
    clock: crate::clock::NodeClock,
    client_id: ClientId,
    next_seq: u64,
    batch: Vec<Command>,
    batch_replies: Vec<(u64, oneshot::Sender<Reply>)>,
    batch_bytes: usize,
    pending_writes: HashMap<u64, oneshot::Sender<Reply>>,
    /// Clients' own requests ([`ClientRequest::Submit`]) waiting to be
    /// applied, by client and sequence number.
    pending_submits: HashMap<(ClientId, u64), Vec<oneshot::Sender<Reply>>>,
    round_reads: Vec<PendingRead>,
    pending_reads: HashMap<ReadId, Vec<PendingRead>>,
    waiting_reads: Vec<(u64, PendingRead)>,
    next_read_id: u64,
    /// The snapshot being received, written to disk as it comes.
    partial: Option<Incoming>,
    /// The latest durable snapshot's index (0: none); its bytes stay on
    /// disk.
    current_snapshot: u64,
    /// Reads the chunks of it sent to peers.
    chunks: ChunkReader,
    /// Writes the snapshots taken here.
    snapshotter: Snapshotter,
    /// Snapshot files below this index are deleted.
    snapshots_removed_below: u64,
    status_tx: watch::Sender<NodeStatus>,
    metrics: Arc<Metrics>,
    last_sweep: Instant,
    /// The auto-compaction schedule (off unless configured).
    compactor: Compactor,
    /// Every member's addresses (see [`crate::members`]).
    directory: Directory,
    /// The membership change in progress, if any (leader only).
    member_op: Option<MemberOp>,
    /// What `MemberList` reports.
    members_tx: watch::Sender<Arc<MembersView>>,
    /// The configuration (index, pending) and directory the view and the
    /// transport were last brought up to date with.
    synced_members: Option<((u64, bool), Directory)>,
    last_promote_check: Instant,
    round: RoundTimes,
    /// Leadership transfers waiting for their target to lead.
    transfers: Vec<PendingTransfer>,
    /// How long a transfer may take.
    transfer_timeout: Duration,
    /// How clients reach the protocol.
    client_routing: ClientRouting,
    /// The leader's log sync running off this thread, if any: the last
    /// round it covers, and its task.
    sync_task: Option<(u64, tokio::task::JoinHandle<(SyncDone, Duration)>)>,
    /// Rounds whose appends were left to a background sync, numbered.
    async_rounds: u64,
    /// The last of those a finished sync covered.
    synced_rounds: u64,
    /// Messages of those rounds that wait for their sync, by round.
    held: std::collections::VecDeque<(u64, Outgoing<P>)>,
    /// The epoch this node led in when the round began (before any call
    /// into the core), if it led.
    round_leader_epoch: Option<u64>,
    /// Which refused PBFT timestamps are logged (every one is counted).
    refusals: crate::metrics::RefusalLog,
}

impl<P: NodeProtocol + Reconfigure> Driver<P>
where
    P::Message: Send,
    P::Write: Send,
    P::Config: Send + Sync,
{
    /// Opens the data directory, recovers the core and the state machine
    /// from it (the snapshot the core starts from, then the log), and
    /// returns the driver and the status it will keep publishing.
    pub fn open(
        config: &DriverConfig,
        mut disk: Disk,
        saved_hard_state: Option<Vec<u8>>,
        transport: TransportHandle,
        metrics: Arc<Metrics>,
    ) -> Result<(Driver<P>, watch::Receiver<NodeStatus>), NodeError> {
        let core_config =
            P::config(config.voters.clone(), &config.settings).map_err(NodeError::Config)?;
        let (hard, durable) = P::recover_durable(&mut disk, saved_hard_state.as_deref())?;
        let start = Instant::now();
        let clock = crate::clock::NodeClock::new(P::AGREED_CLOCK);
        let seed = rand::random::<u64>();
        // Raft and Paxos recover at their clock's zero, as they always did.
        let recovered_at = if P::AGREED_CLOCK { clock.now() } else { Time::ZERO };
        let core = P::recover(config.node_id, &core_config, &durable, seed, recovered_at);
        // A fixed client id (PBFT's proxy client) outlives this process: its
        // sequence numbers continue from the clock, above any used before.
        fn first_seq(fixed_client: bool) -> u64 {
            let micros = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            if fixed_client { micros.max(1) } else { 1 }
        }
        let proxy = core.proxy_client();
        let mut machine = Machine::new(config.kv.clone());
        let mut current_snapshot = 0;
        if let Some(meta) = core.snapshot() {
            // Exactly the snapshot the core starts from (older and newer
            // files may be there too: newer ones a crash kept the core from
            // adopting); a directory written before snapshots were kept
            // until adopted may hold only a newer one.
            let reader = match disk.snapshots.open_at(meta.index)? {
                Some(reader) => Some(reader),
                None => disk.snapshots.latest()?,
            };
            let reader = reader.ok_or_else(|| {
                NodeError::Corrupt(format!(
                    "the hard state names snapshot {} but {} holds none",
                    meta.index,
                    disk.dir().join("snap").display()
                ))
            })?;
            if reader.index() < meta.index {
                return Err(NodeError::Corrupt(format!(
                    "the hard state names snapshot {} but the newest stored is {}",
                    meta.index,
                    reader.index()
                )));
            }
            current_snapshot = reader.index();
            // Decoded as it is read: never whole in memory.
            machine = read_machine(reader, config.kv.clone())?;
            tracing::info!(index = machine.applied_index(), "loaded snapshot");
        }
        let status = NodeStatus {
            id: config.node_id,
            role: Role::Follower,
            term: 0,
            leader: None,
            commit_index: 0,
            applied_index: machine.applied_index(),
            last_index: 0,
            revision: machine.kv().current_revision(),
            snapshot_index: current_snapshot,
        };
        let (status_tx, status_rx) = watch::channel(status);
        let mut snapshotter = Snapshotter::new(disk.snapshots.clone());
        if P::SNAPSHOT_DIGESTS {
            snapshotter.hash_snapshots();
        }
        let chunks = ChunkReader::new(disk.snapshots.clone());
        let directory = Directory::load(disk.dir())?.unwrap_or_else(|| config.directory.clone());
        let driver = Driver {
            core,
            out: Output::new(),
            disk,
            hard,
            machine,
            kv_config: config.kv.clone(),
            transport,
            start,
            clock,
            client_id: proxy.unwrap_or(ClientId(rand::random::<u64>() | 1)),
            next_seq: first_seq(proxy.is_some()),
            batch: Vec::new(),
            batch_replies: Vec::new(),
            batch_bytes: 0,
            pending_writes: HashMap::new(),
            pending_submits: HashMap::new(),
            round_reads: Vec::new(),
            pending_reads: HashMap::new(),
            waiting_reads: Vec::new(),
            next_read_id: 1,
            partial: None,
            current_snapshot,
            chunks,
            snapshotter,
            snapshots_removed_below: 0,
            status_tx,
            metrics,
            last_sweep: start,
            compactor: Compactor::new(AutoCompaction::Off),
            directory,
            member_op: None,
            members_tx: watch::Sender::new(Arc::new(MembersView::default())),
            synced_members: None,
            last_promote_check: start,
            round: RoundTimes::default(),
            transfers: Vec::new(),
            transfer_timeout: config.settings.election_timeout_max * TRANSFER_WAIT_ELECTIONS,
            client_routing: P::client_routing(&core_config),
            sync_task: None,
            async_rounds: 0,
            synced_rounds: 0,
            held: std::collections::VecDeque::new(),
            round_leader_epoch: None,
            refusals: crate::metrics::RefusalLog::default(),
        };
        Ok((driver, status_rx))
    }

    /// Makes the background snapshot writer wait at `gate` before each
    /// snapshot (tests use it to hold a snapshot in flight).
    pub fn with_snapshot_gate(mut self, gate: SnapshotGate) -> Self {
        self.snapshotter.set_gate(gate);
        self
    }

    /// Compacts the store's history by `policy` while this node leads
    /// (see [`crate::compactor`]).
    pub fn with_auto_compaction(mut self, policy: AutoCompaction) -> Self {
        self.compactor = Compactor::new(policy);
        self
    }

    /// How clients reach the protocol (PBFT: every replica orders the
    /// requests it receives).
    pub fn client_routing(&self) -> ClientRouting {
        self.client_routing
    }

    /// The members as `MemberList` reports them, kept current.
    pub fn members(&self) -> watch::Receiver<Arc<MembersView>> {
        self.members_tx.subscribe()
    }

    fn now(&self) -> Time {
        self.clock.now()
    }

    /// Runs until `shutdown` turns true (or its sender is dropped), the
    /// inputs close, or a fatal error. Everything acknowledged is durable
    /// when it returns. The loop runs on a dedicated thread; this future
    /// waits for it (a panic there comes back as an error).
    pub async fn run(
        self,
        inbound: mpsc::Receiver<Inbound>,
        requests: mpsc::Receiver<ClientRequest>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), NodeError> {
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("synod-driver-{}", self.core.id()))
            .spawn(move || {
                let result =
                    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt.block_on(self.run_loop(inbound, requests, shutdown)),
                        Err(e) => Err(NodeError::Startup(format!(
                            "cannot start the driver's runtime: {e}"
                        ))),
                    };
                let _ = done_tx.send(result);
            })
            .map_err(|e| NodeError::Startup(format!("cannot start the driver thread: {e}")))?;
        done_rx.await.unwrap_or_else(|_| Err(NodeError::Startup("the driver panicked".into())))
    }

    async fn run_loop(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut requests: mpsc::Receiver<ClientRequest>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), NodeError> {
        tracing::info!(node = %self.core.id(), protocol = P::NAME, "driver started");
        loop {
            // Before any call into the core this round (see
            // `leading_all_round`).
            let st = self.core.status();
            self.round_leader_epoch = (st.role == Role::Leader).then_some(st.epoch);
            let deadline = self.core.next_deadline();
            let wake = if deadline == Time::MAX {
                self.start + self.start.elapsed() + Duration::from_millis(100)
            } else {
                self.clock.instant_of(deadline).min(Instant::now() + Duration::from_millis(100))
            };
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                m = inbound.recv() => match m {
                    Some(m) => self.on_peer(m),
                    None => break,
                },
                r = requests.recv() => match r {
                    Some(r) => self.on_request(r),
                    None => break,
                },
                done = self.snapshotter.finished(), if self.snapshotter.busy() => {
                    self.on_snapshot_done(done)?;
                }
                synced = sync_finished(&mut self.sync_task), if self.sync_task.is_some() => {
                    self.on_async_sync(synced)?;
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
            let round_began = Instant::now();
            self.round = RoundTimes::default();
            for _ in 0..MAX_EVENTS_PER_ROUND {
                match inbound.try_recv() {
                    Ok(m) => self.on_peer(m),
                    Err(_) => break,
                }
            }
            for _ in 0..MAX_EVENTS_PER_ROUND {
                match requests.try_recv() {
                    Ok(r) => self.on_request(r),
                    Err(_) => break,
                }
            }
            self.auto_compact();
            self.flush_proposals();
            self.flush_reads();
            let now = self.now();
            if self.core.next_deadline() <= now {
                self.core.tick(now, &mut self.out);
            }
            if let Some(done) = self.snapshotter.try_finished() {
                self.on_snapshot_done(done)?;
            }
            self.carry_out()?;
            self.start_async_sync()?;
            self.remove_obsolete_snapshots()?;
            self.after_membership_round()?;
            self.sweep();
            self.publish_status();
            let took = round_began.elapsed();
            if took >= SLOW_ROUND {
                let r = self.round;
                tracing::warn!(
                    node = %self.core.id(),
                    ms = took.as_millis() as u64,
                    persist_ms = r.persist.as_millis() as u64,
                    fsync_ms = r.fsync.as_millis() as u64,
                    snapshot_copy_ms = r.snapshot_copy.as_millis() as u64,
                    snapshot_io_ms = r.snapshot_io.as_millis() as u64,
                    "slow driver round"
                );
            }
            self.answer_transfers();
        }
        if let Some((_, task)) = self.sync_task.take()
            && let Ok((done, _)) = task.await
        {
            self.disk.wal.finish_sync(done)?;
        }
        self.disk.sync()?;
        // Let a snapshot being written finish (it is not reported: the core
        // learns of it, if at all, after the restart loads it).
        if let Some(Err(failed)) = self.snapshotter.wait_idle() {
            if failed.is_fatal() {
                return Err(failed.error);
            }
            tracing::warn!(index = failed.index, error = %failed.error, "the last snapshot failed");
        }
        self.snapshotter.wait_removals()?;
        for (_, tx) in self.pending_writes.drain() {
            let _ = tx.send(Err(ClientError::Stopped));
        }
        for tx in self.pending_submits.drain().flat_map(|(_, txs)| txs) {
            let _ = tx.send(Err(ClientError::Stopped));
        }
        if let Some(op) = self.member_op.take() {
            let _ = op.reply.send(Err(MemberError::Stopped));
        }
        for t in self.transfers.drain(..) {
            let _ = t.reply.send(Err(TransferError::Stopped));
        }
        tracing::info!(node = %self.core.id(), "driver stopped");
        Ok(())
    }

    fn on_peer(&mut self, m: Inbound) {
        Metrics::add(&self.metrics.messages_in, 1);
        match P::decode_message(&m.payload) {
            Ok(msg) => {
                let now = self.now();
                self.core.step(now, m.from, msg, &mut self.out);
            }
            Err(e) => {
                Metrics::add(&self.metrics.bad_messages, 1);
                tracing::warn!(from = %m.from, error = %e, "dropped a malformed peer message");
            }
        }
    }

    fn on_request(&mut self, r: ClientRequest) {
        match r {
            ClientRequest::Write { op, reply } => {
                if self.pending_writes.len() + self.batch.len() >= MAX_PENDING {
                    let _ = reply.send(Err(ClientError::Busy));
                    return;
                }
                if self.batch.len() >= MAX_BATCH_COMMANDS
                    || self.batch_bytes + op.len() > MAX_BATCH_BYTES
                {
                    self.flush_proposals();
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                self.batch_bytes += op.len();
                self.batch.push(Command::new(self.client_id, seq, op));
                self.batch_replies.push((seq, reply));
            }
            ClientRequest::Read { query, linearizable: false, reply } => {
                let _ = reply.send(Ok(self.machine.query(&query)));
            }
            ClientRequest::Read { query, linearizable: true, reply } => {
                if self.round_reads.len() + self.waiting_reads.len() >= MAX_PENDING {
                    let _ = reply.send(Err(ClientError::Busy));
                    return;
                }
                self.round_reads.push(PendingRead { query, reply });
            }
            ClientRequest::Submit { command, reply } => self.on_submit(command, reply),
            ClientRequest::CopyStore { reply } => {
                let _ = reply.send(self.machine.kv().clone());
            }
            ClientRequest::Member { change, reply } => self.on_member(change, reply),
            ClientRequest::TransferLeader { to, reply } => self.on_transfer(to, reply),
        }
    }

    /// A client's own signed request: proposed as it is (the core checks
    /// the client's signature and orders a request once however many
    /// replicas propose it), answered when applied.
    fn on_submit(&mut self, command: Command, reply: oneshot::Sender<Reply>) {
        if !matches!(self.client_routing, ClientRouting::All { .. }) {
            let why = format!("{} has no client-signed requests", P::NAME);
            let _ = reply.send(Err(ClientError::Rejected(why)));
            return;
        }
        let key = (command.client, command.seq);
        if self.pending_submits.len() >= MAX_PENDING_SUBMITS
            && !self.pending_submits.contains_key(&key)
        {
            let _ = reply.send(Err(ClientError::Busy));
            return;
        }
        let now = self.now();
        match self.core.propose(now, vec![command], &mut self.out) {
            Ok(()) => {
                let waiters = self.pending_submits.entry(key).or_default();
                if waiters.len() >= MAX_WAITERS_PER_SUBMIT {
                    let _ = waiters.remove(0).send(Err(ClientError::Busy));
                }
                waiters.push(reply);
            }
            Err(e) => {
                let _ = reply.send(Err(Self::refusal(e)));
            }
        }
    }

    fn refusal(e: ProposeError) -> ClientError {
        match e {
            ProposeError::NotLeader { hint } => ClientError::NotLeader { leader: hint },
            ProposeError::Transferring => ClientError::NotLeader { leader: None },
            ProposeError::Busy(_) => ClientError::Busy,
            ProposeError::Rejected(why) => ClientError::Rejected(why.to_string()),
            ProposeError::Stale => ClientError::Stale,
        }
    }

    /// Adds the compaction the auto-compaction policy asks for, if any, to
    /// this round's proposal: through the log, so every replica compacts at
    /// the same position. It has no waiting client; a refusal (a leader
    /// change, an already compacted revision) is retried at the next check.
    fn auto_compact(&mut self) {
        if self.compactor.policy() == AutoCompaction::Off {
            return;
        }
        let leading = self.core.status().role == Role::Leader;
        let kv = self.machine.kv();
        let (revision, compacted) = (kv.current_revision(), kv.compact_revision());
        let Some(to) = self.compactor.due(self.start.elapsed(), leading, revision, compacted)
        else {
            return;
        };
        tracing::info!(revision = to, current = revision, "auto-compaction");
        let op = KvCommand::Compact(CompactionRequest { revision: to, physical: false }).encode();
        if self.batch.len() >= MAX_BATCH_COMMANDS || self.batch_bytes + op.len() > MAX_BATCH_BYTES {
            self.flush_proposals();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.batch_bytes += op.len();
        self.batch.push(Command::new(self.client_id, seq, op));
    }

    fn flush_proposals(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        // The next batch starts at this one's size (growing from empty
        // reallocated about once per doubling, every round); the replies'
        // vector keeps its capacity.
        let count = self.batch.len();
        let commands: Vec<Command> = std::mem::replace(&mut self.batch, Vec::with_capacity(count))
            .into_iter()
            .map(|c| self.core.seal(c))
            .collect();
        self.batch_bytes = 0;
        let now = self.now();
        match self.core.propose(now, commands, &mut self.out) {
            Ok(()) => {
                Metrics::add(&self.metrics.proposals, count as u64);
                Metrics::add(&self.metrics.proposal_batches, 1);
                self.pending_writes.extend(self.batch_replies.drain(..));
            }
            Err(e) => {
                let err = Self::refusal(e);
                for (_, tx) in self.batch_replies.drain(..) {
                    let _ = tx.send(Err(err.clone()));
                }
            }
        }
    }

    fn flush_reads(&mut self) {
        if self.round_reads.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.round_reads);
        let id = ReadId(self.next_read_id);
        self.next_read_id += 1;
        let now = self.now();
        match self.core.read(now, id, &mut self.out) {
            Ok(()) => {
                self.pending_reads.insert(id, reads);
            }
            Err(e) => {
                let err = Self::refusal(e);
                for r in reads {
                    let _ = r.reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Carries out the core's output (and whatever the calls back into the
    /// core add), in contract order.
    fn carry_out(&mut self) -> Result<(), NodeError> {
        let mut rounds = 0;
        while !self.out.is_empty() {
            rounds += 1;
            assert!(rounds <= 10_000, "the core keeps producing output without input");
            let mut out = std::mem::take(&mut self.out);
            let actions = std::mem::take(&mut out.snapshots);
            // 0. Received snapshot chunks and installs reach the store first.
            let began = Instant::now();
            for a in &actions {
                self.snapshot_receive(a)?;
            }
            self.round.snapshot_io += began.elapsed();
            // 1. Writes become durable: one fsync for the whole round. A
            //    leader's replication leaves first (`NodeProtocol::leaves_before_sync`)
            //    so that the followers' fsyncs run alongside this one.
            if !out.writes.is_empty() {
                let began = Instant::now();
                P::persist(&mut self.disk, &mut self.hard, &out.writes)?;
                self.round.persist += began.elapsed();
                let (early, late): (Vec<_>, Vec<_>) =
                    out.messages.drain(..).partition(|(_, m)| P::leaves_before_sync(m));
                self.send(early);
                if self.leading_all_round() {
                    // Only the log appends are unsynced (`persist` made the
                    // rest durable), and a leader's messages promise nothing
                    // about them except what waits here: they leave when a
                    // sync off this thread covers this round
                    // (`start_async_sync`), which also tells the core.
                    self.async_rounds += 1;
                    if !late.is_empty() {
                        self.held.push_back((self.async_rounds, late));
                    }
                } else {
                    out.messages = late;
                    let began = Instant::now();
                    let durable = self.disk.sync()?;
                    self.metrics.observe_fsync(began.elapsed());
                    self.round.fsync += began.elapsed();
                    // Every append so far is durable, those of rounds left
                    // to a background sync too.
                    self.synced_rounds = self.async_rounds;
                    self.release_held(u64::MAX);
                    let now = self.now();
                    self.core.persisted(now, durable, &mut self.out);
                }
            }
            // 2. Only then does everything else leave.
            let messages = std::mem::take(&mut out.messages);
            self.send(messages);
            // 3. Committed positions, with snapshot actions at theirs.
            let mut positioned = actions.iter().filter(|a| a.position().is_some()).peekable();
            for c in out.committed.drain(..) {
                while let Some(a) = positioned.next_if(|a| a.position() < Some(c.index)) {
                    self.snapshot_at_position(a)?;
                }
                self.apply(c)?;
            }
            for a in positioned {
                self.snapshot_at_position(a)?;
            }
            // 4. Reads and events.
            for rs in out.reads.drain(..) {
                self.on_read_state(rs);
            }
            self.serve_waiting_reads();
            for e in out.events.drain(..) {
                self.on_event(e);
            }
            // Calls back into the core add to `self.out`: another pass.
            let now = self.now();
            let began = Instant::now();
            for a in actions {
                if let SnapshotAction::Read { to, index, offset, max_bytes } = a
                    && let Some(data) = self.chunks.read(to, index, offset, max_bytes)?
                {
                    self.core.snapshot_chunk(now, to, index, offset, data, &mut self.out);
                }
            }
            self.round.snapshot_io += began.elapsed();
        }
        Ok(())
    }

    /// Whether this node led, in one epoch, from the start of the round to
    /// now: then every output of the round is a leader's, none promises the
    /// durability of an append, and none truncates the log.
    fn leading_all_round(&self) -> bool {
        if !P::PARALLEL_LEADER_WRITE {
            return false;
        }
        let st = self.core.status();
        st.role == Role::Leader && self.round_leader_epoch == Some(st.epoch)
    }

    /// Starts syncing the log off this thread if rounds wait for it and no
    /// sync is running (one at a time: the next covers every round since).
    fn start_async_sync(&mut self) -> Result<(), NodeError> {
        if self.sync_task.is_some() || self.async_rounds == self.synced_rounds {
            return Ok(());
        }
        let pending = self.disk.wal.begin_sync()?;
        let task = tokio::task::spawn_blocking(move || {
            let began = Instant::now();
            let done = pending.run();
            (done, began.elapsed())
        });
        self.sync_task = Some((self.async_rounds, task));
        Ok(())
    }

    /// A sync started by [`start_async_sync`](Self::start_async_sync)
    /// finished: record it (a failed fsync is fatal), release what waited
    /// for it, and tell the core how far its log is durable.
    fn on_async_sync(
        &mut self,
        synced: Result<(u64, SyncDone, Duration), NodeError>,
    ) -> Result<(), NodeError> {
        let (rounds, done, took) = synced?;
        let durable = self.disk.wal.finish_sync(done)?;
        // Log segments purged before this sync may go now (see `Disk`).
        self.disk.poll_purge()?;
        self.metrics.observe_fsync(took);
        self.synced_rounds = self.synced_rounds.max(rounds);
        self.release_held(rounds);
        let now = self.now();
        self.core.persisted(now, durable, &mut self.out);
        Ok(())
    }

    /// Sends the held messages of every round up to `rounds`.
    fn release_held(&mut self, rounds: u64) {
        while self.held.front().is_some_and(|(r, _)| *r <= rounds) {
            if let Some((_, messages)) = self.held.pop_front() {
                self.send(messages);
            }
        }
    }

    fn send(&mut self, messages: Vec<(NodeId, P::Message)>) {
        for (to, msg) in messages {
            let bytes = Bytes::from(P::encode_message(&msg));
            match self.transport.send(to, bytes) {
                Ok(()) => Metrics::add(&self.metrics.messages_out, 1),
                Err(e) => tracing::debug!(%to, error = %e, "message not sent"),
            }
        }
    }

    fn apply(&mut self, c: Committed) -> Result<(), NodeError> {
        if c.index <= self.machine.applied_index() {
            // Inside the snapshot loaded at startup (newer than the one the
            // core recovered from): already part of the state.
            return Ok(());
        }
        Metrics::add(&self.metrics.commits, 1);
        if let Some(cmd) = &c.command
            && let Some(directory) = Directory::from_registration(&cmd.op)
        {
            // A member registration: the store sees a no-op.
            self.machine.apply(&Committed { index: c.index, command: None, time: c.time });
            if directory != self.directory {
                directory.save(self.disk.dir())?;
                self.directory = directory;
            }
            if cmd.client == self.client_id
                && self.member_op.as_ref().is_some_and(|op| op.registering == Some(cmd.seq))
                && let Some(mut op) = self.member_op.take()
            {
                op.registering = None;
                if op.reconfigure {
                    self.start_change(op);
                } else {
                    tracing::info!(node = %self.core.id(), member = op.id, "member addresses updated");
                    let _ = op.reply.send(Ok(op.id));
                }
            }
            return Ok(());
        }
        let answer = self.machine.apply(&c);
        if !self.pending_submits.is_empty()
            && let Some(cmd) = &c.command
            && let Some(waiters) = self.pending_submits.remove(&(cmd.client, cmd.seq))
        {
            let reply = answer.clone().ok_or(ClientError::Superseded);
            for tx in waiters {
                let _ = tx.send(reply.clone());
            }
        }
        if let Some(cmd) = &c.command
            && cmd.client == self.client_id
            && let Some(tx) = self.pending_writes.remove(&cmd.seq)
        {
            let reply = answer.ok_or(ClientError::Superseded);
            let _ = tx.send(reply);
        }
        Ok(())
    }

    // ----- leadership transfer ---------------------------------------------

    /// A client's leadership transfer: the core starts it (or refuses), and
    /// the request waits for the target to lead ([`Self::answer_transfers`]).
    fn on_transfer(&mut self, to: NodeId, reply: oneshot::Sender<Result<(), TransferError>>) {
        let st = self.core.status();
        if st.role != Role::Leader {
            let _ = reply.send(Err(TransferError::NotLeader { leader: st.leader }));
            return;
        }
        if self.transfers.len() >= MAX_PENDING_TRANSFERS {
            let _ = reply.send(Err(TransferError::TimedOut));
            return;
        }
        let now = self.now();
        let refused = match self.core.transfer_leadership(now, to, &mut self.out) {
            None => Some(TransferError::Unsupported(P::NAME)),
            Some(Ok(())) => None,
            Some(Err(ProposeError::NotLeader { hint })) => {
                Some(TransferError::NotLeader { leader: hint })
            }
            Some(Err(_)) => Some(TransferError::BadTransferee),
        };
        match refused {
            Some(e) => {
                let _ = reply.send(Err(e));
            }
            None => self.transfers.push(PendingTransfer {
                to,
                deadline: Instant::now() + self.transfer_timeout,
                reply,
            }),
        }
    }

    /// Answers the transfers whose target leads now, or whose time is up
    /// (forgets those whose client left).
    fn answer_transfers(&mut self) {
        if self.transfers.is_empty() {
            return;
        }
        let leader = self.core.status().leader;
        let now = Instant::now();
        let mut i = 0;
        while i < self.transfers.len() {
            let t = &self.transfers[i];
            let answer = if leader == Some(t.to) {
                Some(Ok(()))
            } else if now >= t.deadline {
                Some(Err(TransferError::TimedOut))
            } else if t.reply.is_closed() {
                Some(Err(TransferError::Stopped))
            } else {
                None
            };
            match answer {
                Some(a) => {
                    let _ = self.transfers.swap_remove(i).reply.send(a);
                }
                None => i += 1,
            }
        }
    }

    // ----- membership changes ----------------------------------------------

    /// A client's membership change: checked here, then (for an add) the
    /// new member's addresses are registered through the log first, so
    /// every node can dial it by the time it is a member.
    fn on_member(
        &mut self,
        change: MemberChange,
        reply: oneshot::Sender<Result<u64, MemberError>>,
    ) {
        let refuse = |reply: oneshot::Sender<_>, e| {
            let _ = reply.send(Err(e));
        };
        let Some(info) = self.core.membership_info() else {
            return refuse(reply, MemberError::Unsupported(P::NAME));
        };
        let st = self.core.status();
        if st.role != Role::Leader {
            return refuse(reply, MemberError::NotLeader { leader: st.leader });
        }
        if self.member_op.is_some() || info.pending {
            return refuse(reply, MemberError::InProgress);
        }
        let is_member =
            |id: u64| info.voters.contains(&NodeId(id)) || info.learners.contains(&NodeId(id));
        let (mut voters, mut learners) = (info.voters.clone(), info.learners.clone());
        match change {
            MemberChange::Add { peer_addr, client_addr, learner } => {
                if self.peer_addr_taken(peer_addr, None, &info) {
                    return refuse(reply, MemberError::PeerAddrExists);
                }
                let id = self.directory.next_id(&info);
                let mut directory = self.directory.clone();
                let name = format!("n{id}");
                // Added as a learner either way: a member added as a voter
                // is promoted by the leader once it has caught up, so the
                // cluster never waits on a member that has not started.
                directory
                    .members
                    .insert(id, MemberAddrs { name, peer_addr, client_addr, promote: !learner });
                learners.insert(NodeId(id));
                self.register(&directory, MemberOp::new(id, voters, learners, true, reply));
            }
            MemberChange::Remove { id } => {
                if !is_member(id) {
                    return refuse(reply, MemberError::NotFound);
                }
                voters.remove(&NodeId(id));
                learners.remove(&NodeId(id));
                if voters.is_empty() {
                    return refuse(
                        reply,
                        MemberError::Invalid("cannot remove the last voter".into()),
                    );
                }
                self.start_change(MemberOp::new(id, voters, learners, true, reply));
            }
            MemberChange::Promote { id } => {
                if !is_member(id) {
                    return refuse(reply, MemberError::NotFound);
                }
                if !learners.remove(&NodeId(id)) {
                    return refuse(reply, MemberError::NotLearner);
                }
                voters.insert(NodeId(id));
                self.start_change(MemberOp::new(id, voters, learners, true, reply));
            }
            MemberChange::Update { id, peer_addr, client_addr } => {
                if !is_member(id) {
                    return refuse(reply, MemberError::NotFound);
                }
                if self.peer_addr_taken(peer_addr, Some(id), &info) {
                    return refuse(reply, MemberError::PeerAddrExists);
                }
                let mut directory = self.directory.clone();
                let entry = directory.members.entry(id).or_insert_with(|| MemberAddrs {
                    name: format!("n{id}"),
                    peer_addr,
                    client_addr: None,
                    promote: false,
                });
                entry.peer_addr = peer_addr;
                if client_addr.is_some() {
                    entry.client_addr = client_addr;
                }
                if directory == self.directory {
                    let _ = reply.send(Ok(id));
                    return;
                }
                self.register(&directory, MemberOp::new(id, voters, learners, false, reply));
            }
        }
    }

    /// Whether a member other than `except` listens on `peer_addr` (as its
    /// peer or its client address).
    fn peer_addr_taken(
        &self,
        peer_addr: std::net::SocketAddr,
        except: Option<u64>,
        info: &MembershipInfo,
    ) -> bool {
        self.directory.members.iter().any(|(&id, a)| {
            let member = info.voters.contains(&NodeId(id)) || info.learners.contains(&NodeId(id));
            Some(id) != except
                && member
                && (a.peer_addr == peer_addr || Some(peer_addr) == a.client_addr)
        })
    }

    /// Proposes `directory` as a registration; `op` is answered once it is
    /// applied (and, for an add, once the membership then changes).
    fn register(&mut self, directory: &Directory, mut op: MemberOp) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let command = Command::new(self.client_id, seq, directory.registration());
        let now = self.now();
        match self.core.propose(now, vec![self.core.seal(command)], &mut self.out) {
            Ok(()) => {
                op.registering = Some(seq);
                self.member_op = Some(op);
            }
            Err(e) => {
                let _ = op.reply.send(Err(member_refusal(e)));
            }
        }
    }

    /// Asks the core for `op`'s configuration; it is answered once that is
    /// committed (see [`Driver::after_membership_round`]).
    fn start_change(&mut self, op: MemberOp) {
        let now = self.now();
        match self.core.change_members(now, op.voters.clone(), op.learners.clone(), &mut self.out) {
            Ok(()) => {
                tracing::info!(node = %self.core.id(), member = op.id, voters = ?op.voters, learners = ?op.learners, "membership change started");
                self.member_op = Some(op);
            }
            Err(e) => {
                let _ = op.reply.send(Err(e));
            }
        }
    }

    /// After each round: answers the change in progress once it is in
    /// effect; promotes caught-up learners that were added as voters; keeps
    /// the transport's peers and the published view in line with the
    /// membership and the directory.
    fn after_membership_round(&mut self) -> Result<(), NodeError> {
        let Some(info) = self.core.membership_info() else { return Ok(()) };
        let leading = self.core.status().role == Role::Leader;
        let key = (info.index, info.pending);
        let synced = self
            .synced_members
            .as_ref()
            .is_some_and(|(k, dir)| *k == key && *dir == self.directory);
        if !synced {
            self.sync_members(&info);
            self.synced_members = Some((key, self.directory.clone()));
        }
        if let Some(op) = self.member_op.take() {
            let done = op.registering.is_none()
                && !info.pending
                && info.voters == op.voters
                && info.learners == op.learners;
            if done {
                tracing::info!(node = %self.core.id(), member = op.id, "membership change done");
                let _ = op.reply.send(Ok(op.id));
            } else if !leading {
                let _ = op.reply.send(Err(MemberError::LeaderChanged));
            } else {
                self.member_op = Some(op);
            }
        }
        if leading
            && self.member_op.is_none()
            && !info.pending
            && self.last_promote_check.elapsed() >= PROMOTE_CHECK
        {
            self.last_promote_check = Instant::now();
            self.promote_caught_up(&info);
        }
        if !self.out.is_empty() {
            self.carry_out()?;
        }
        Ok(())
    }

    /// Promotes the first learner marked `promote` (added as a voter) that
    /// the core accepts as caught up.
    fn promote_caught_up(&mut self, info: &MembershipInfo) {
        let me = self.core.id();
        for id in info.learners.iter().copied().filter(|&id| id != me) {
            if !self.directory.members.get(&id.0).is_some_and(|a| a.promote) {
                continue;
            }
            let mut voters = info.voters.clone();
            let mut learners = info.learners.clone();
            learners.remove(&id);
            voters.insert(id);
            let now = self.now();
            match self.core.change_members(now, voters, learners, &mut self.out) {
                Ok(()) => {
                    tracing::info!(node = %me, member = %id, "promoting a caught-up member");
                    return;
                }
                Err(e) => tracing::debug!(member = %id, error = %e, "not promoted yet"),
            }
        }
    }

    /// Dials every member the directory knows, forgets removed ones once
    /// their removal is committed (until then the leader that removes
    /// itself still needs their acknowledgements), and publishes the view.
    fn sync_members(&mut self, info: &MembershipInfo) {
        let me = self.core.id();
        for (&id, a) in &self.directory.members {
            let id = NodeId(id);
            if id != me
                && !info.removed.contains(&id)
                && self.transport.peer_addr(id) != Some(a.peer_addr)
            {
                self.transport.add_peer(id, a.peer_addr);
            }
        }
        if !info.pending {
            for &id in &info.removed {
                if id != me {
                    self.transport.remove_peer(id);
                }
            }
        }
        let view = Arc::new(MembersView::new(info, &self.directory));
        self.members_tx.send_if_modified(|old| {
            let changed = **old != *view;
            *old = view;
            changed
        });
    }

    fn on_read_state(&mut self, rs: ReadState) {
        let Some(reads) = self.pending_reads.remove(&rs.id) else { return };
        for r in reads {
            self.waiting_reads.push((rs.index, r));
        }
    }

    fn serve_waiting_reads(&mut self) {
        let applied = self.machine.applied_index();
        let mut i = 0;
        while i < self.waiting_reads.len() {
            if self.waiting_reads[i].0 <= applied {
                let (_, r) = self.waiting_reads.swap_remove(i);
                let _ = r.reply.send(Ok(self.machine.query(&r.query)));
            } else {
                i += 1;
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::RoleChanged { role, epoch } => {
                tracing::info!(node = %self.core.id(), ?role, term = epoch, "role changed");
                if role == Role::Candidate {
                    Metrics::add(&self.metrics.elections, 1);
                }
            }
            Event::LeaderChanged { leader, epoch } => {
                tracing::info!(node = %self.core.id(), ?leader, term = epoch, "leader changed");
                Metrics::add(&self.metrics.leader_changes, 1);
            }
            Event::ReadFailed { id } => {
                if let Some(reads) = self.pending_reads.remove(&id) {
                    let leader = self.core.status().leader;
                    for r in reads {
                        let _ = r.reply.send(Err(ClientError::NotLeader { leader }));
                    }
                }
            }
            Event::TimestampRefused { epoch, seq, proposed, local } => {
                if let Some(unlogged) = self.refusals.refused(&self.metrics, epoch) {
                    tracing::warn!(
                        node = %self.core.id(),
                        view = epoch,
                        seq,
                        proposed = %proposed,
                        local = %local,
                        unlogged_since_last_warning = unlogged,
                        "refused to prepare a batch: its timestamp is further than \
                         max_clock_skew from this clock (a faulty primary, or clocks out of \
                         sync); further refusals in this view are only counted"
                    );
                }
            }
        }
    }

    // ----- the snapshot host ------------------------------------------------

    fn snapshot_receive(&mut self, a: &SnapshotAction) -> Result<(), NodeError> {
        match a {
            SnapshotAction::Write { index, epoch, offset, data } => {
                if *offset == 0 {
                    // Another one's temporary file goes first (it may have
                    // the same name).
                    self.partial = None;
                    self.partial = Some(Incoming::begin(&self.disk.snapshots, *index, *epoch)?);
                }
                match self.partial.as_mut() {
                    Some(p)
                        if p.accepts(*index, *epoch, *offset, data.len(), MAX_SNAPSHOT_BYTES) =>
                    {
                        p.append(data)?;
                    }
                    _ => {
                        tracing::warn!(index, offset, "snapshot chunk out of order; dropped");
                        self.partial = None;
                    }
                }
            }
            SnapshotAction::Install { meta } => {
                let Some(partial) = self.partial.take() else {
                    return Err(NodeError::Corrupt(format!(
                        "asked to install snapshot {} without its chunks",
                        meta.index
                    )));
                };
                assert_eq!(partial.id(), (meta.index, meta.epoch), "install of another snapshot");
                self.snapshotter.discard_waiting();
                partial.finish()?;
                self.current_snapshot = meta.index;
                Metrics::add(&self.metrics.snapshots, 1);
            }
            SnapshotAction::Take { .. } | SnapshotAction::Read { .. } => {}
        }
        Ok(())
    }

    fn snapshot_at_position(&mut self, a: &SnapshotAction) -> Result<(), NodeError> {
        match a {
            SnapshotAction::Take { index } => {
                if *index <= self.current_snapshot {
                    // A newer snapshot (installed in this same output) is
                    // already the durable one; storing this older one would
                    // replace it.
                    return Ok(());
                }
                if self.machine.applied_index() != *index {
                    // (The machine was loaded from a newer snapshot than the
                    // core started from.) The core hears it failed and asks
                    // again later, at its applied index then.
                    Metrics::add(&self.metrics.snapshots_skipped, 1);
                    tracing::warn!(
                        index,
                        applied = self.machine.applied_index(),
                        "cannot take a snapshot at this position; skipped"
                    );
                    let now = self.now();
                    self.core.snapshot_failed(now, *index);
                    return Ok(());
                }
                // The only part done here: a point-in-time copy. Encoding,
                // writing and fsyncing happen on the snapshotter's thread.
                let began = Instant::now();
                let view = self.machine.clone();
                self.round.snapshot_copy += began.elapsed();
                let copy_us = began.elapsed().as_micros() as u64;
                Metrics::add(&self.metrics.snapshot_copy_us, copy_us);
                match self.snapshotter.take(view)? {
                    TakeStart::Started => tracing::debug!(index, copy_us, "taking a snapshot"),
                    TakeStart::Deferred => {
                        Metrics::add(&self.metrics.snapshots_deferred, 1);
                        tracing::info!(
                            index,
                            in_flight = ?self.snapshotter.in_flight_index(),
                            "snapshot requested while another is written; it follows"
                        );
                    }
                }
                Ok(())
            }
            SnapshotAction::Install { meta } => {
                if self.current_snapshot != meta.index {
                    return Err(NodeError::Corrupt("installed snapshot is gone".into()));
                }
                let reader = self.disk.snapshots.open_at(meta.index)?.ok_or_else(|| {
                    NodeError::Corrupt(format!("installed snapshot {} is gone", meta.index))
                })?;
                // The old state goes first: one copy of the store at a time.
                self.machine = Machine::new(self.kv_config.clone());
                self.machine = read_machine(reader, self.kv_config.clone())?;
                if self.machine.applied_index() != meta.index {
                    return Err(NodeError::Corrupt(format!(
                        "snapshot {} holds the state at {}",
                        meta.index,
                        self.machine.applied_index()
                    )));
                }
                tracing::info!(
                    index = meta.index,
                    epoch = meta.epoch,
                    "installed a snapshot from a peer"
                );
                Ok(())
            }
            SnapshotAction::Read { .. } | SnapshotAction::Write { .. } => Ok(()),
        }
    }

    /// What the snapshotter's background write came to: a durable snapshot
    /// is reported to the core (which compacts), a failure too (the core
    /// asks again later), unless the node must stop.
    fn on_snapshot_done(&mut self, outcome: Outcome) -> Result<(), NodeError> {
        match outcome {
            Ok(taken) => self.on_snapshot_written(taken),
            Err(failed) if failed.is_fatal() => return Err(failed.error),
            Err(failed) => {
                tracing::warn!(
                    index = failed.index,
                    error = %failed.error,
                    "taking a snapshot failed; the core asks again later"
                );
                let now = self.now();
                self.core.snapshot_failed(now, failed.index);
            }
        }
        Ok(())
    }

    /// A snapshot taken here is durable: the core may compact its log
    /// (PBFT: sign its checkpoint with the snapshot's SHA-256, and adopt
    /// it once a quorum agrees).
    fn on_snapshot_written(&mut self, t: TakenSnapshot) {
        Metrics::add(&self.metrics.snapshots, 1);
        tracing::info!(index = t.index, bytes = t.size_bytes, "took a snapshot");
        self.current_snapshot = self.current_snapshot.max(t.index);
        let now = self.now();
        if P::SNAPSHOT_DIGESTS {
            let sha256 =
                t.sha256.expect("the snapshotter hashes for a protocol that signs digests");
            self.core.snapshot_taken_with_digest(now, t.index, t.size_bytes, sha256, &mut self.out);
        } else {
            self.core.snapshot_taken(now, t.index, t.size_bytes, &mut self.out);
        }
    }

    /// Deletes the snapshot files older than the core's snapshot once the
    /// core's adoption of it is durable (every output is carried out, so
    /// its writes are persisted), as the snapshot contract allows.
    fn remove_obsolete_snapshots(&mut self) -> Result<(), NodeError> {
        debug_assert!(self.out.is_empty(), "called after carry_out");
        self.snapshotter.poll_removal()?;
        let adopted = self.core.snapshot().map_or(0, |m| m.index);
        if adopted > self.snapshots_removed_below {
            // Off the driver's thread: unlinking a large file and fsyncing
            // the directory must not hold up heartbeats and appends.
            self.chunks.keep_only(adopted);
            self.snapshotter.remove_older_than(adopted)?;
            self.snapshots_removed_below = adopted;
        }
        Ok(())
    }

    // ----- bookkeeping ------------------------------------------------------

    /// Forgets writes whose client gave up (once a second).
    fn sweep(&mut self) {
        if self.last_sweep.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_sweep = Instant::now();
        self.pending_writes.retain(|_, tx| !tx.is_closed());
        self.pending_submits.retain(|_, txs| {
            txs.retain(|tx| !tx.is_closed());
            !txs.is_empty()
        });
    }

    fn publish_status(&mut self) {
        let s = self.core.status();
        let status = NodeStatus {
            id: s.id,
            role: s.role,
            term: s.epoch,
            leader: s.leader,
            commit_index: s.commit_index,
            applied_index: self.machine.applied_index(),
            last_index: s.last_index,
            revision: self.machine.kv().current_revision(),
            snapshot_index: self.current_snapshot,
        };
        self.status_tx.send_if_modified(|old| {
            let changed = *old != status;
            *old = status;
            changed
        });
    }
}

/// A refused registration proposal as a membership error.
fn member_refusal(e: ProposeError) -> MemberError {
    match e {
        ProposeError::NotLeader { hint } => MemberError::NotLeader { leader: hint },
        ProposeError::Transferring | ProposeError::Busy(_) => MemberError::InProgress,
        ProposeError::Rejected(why) => MemberError::Invalid(why.to_string()),
        ProposeError::Stale => MemberError::Invalid("stale request".into()),
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
