//! [`Transport::start`] and the [`TransportHandle`] the node keeps: send to a
//! peer, read the counters, shut down.

use crate::config::{ConfigError, TransportConfig};
use crate::inbound;
use crate::outbound;
use crate::shared::Shared;
use crate::stats::{PeerStats, TransportStats, add};
use bytes::Bytes;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use synod_core::NodeId;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

/// A message received from an authenticated peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// The peer it came from (proven by the handshake).
    pub from: NodeId,
    /// The payload, exactly as the peer passed it to `send`.
    pub payload: Bytes,
}

/// Why the transport did not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
}

/// Why [`TransportHandle::send`] refused a message. A message that was
/// queued is never reported: delivery is best effort.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The destination is not a configured peer.
    #[error("{0} is not a peer of this node")]
    UnknownPeer(NodeId),
    /// The payload does not fit in one frame.
    #[error("payload of {payload_bytes} bytes exceeds the limit of {max_payload_bytes}")]
    TooLarge {
        /// The payload's size.
        payload_bytes: usize,
        /// The largest payload a frame carries.
        max_payload_bytes: usize,
    },
    /// The transport was shut down.
    #[error("the transport is shut down")]
    Shutdown,
}

/// Starts transports. See the [crate documentation](crate) for the wire
/// format and the guarantees.
pub enum Transport {}

impl Transport {
    /// Binds `config.listen_addr` and starts the transport (see
    /// [`Transport::start_on`]).
    pub async fn start(
        config: TransportConfig,
    ) -> Result<(TransportHandle, mpsc::Receiver<Inbound>), TransportError> {
        config.validate()?;
        let addr = config.listen_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TransportError::Bind { addr, source })?;
        Transport::start_on(config, listener)
    }

    /// Starts the transport on an already bound `listener` (its address
    /// replaces `config.listen_addr`; useful with port 0). Spawns the accept
    /// loop and one outbound task per peer on the current tokio runtime, so
    /// it must be called from within one. Returns the handle and the
    /// channel of received messages (`config.inbound_queue_len` long).
    /// Dropping that receiver closes the listener and every inbound
    /// connection; sending goes on until shutdown.
    pub fn start_on(
        mut config: TransportConfig,
        listener: TcpListener,
    ) -> Result<(TransportHandle, mpsc::Receiver<Inbound>), TransportError> {
        let local_addr = listener
            .local_addr()
            .map_err(|source| TransportError::Bind { addr: config.listen_addr, source })?;
        config.listen_addr = local_addr;
        config.validate()?;
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_queue_len);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(config));
        let peers = shared.all_peers();
        let mut tasks = Vec::with_capacity(peers.len() + 1);
        tasks.push(tokio::spawn(inbound::run_listener(
            listener,
            shared.clone(),
            inbound_tx,
            shutdown_rx.clone(),
        )));
        for peer in &peers {
            tasks.push(tokio::spawn(outbound::run(
                shared.clone(),
                peer.clone(),
                shutdown_rx.clone(),
            )));
        }
        tracing::info!(node = %shared.config.node_id, addr = %local_addr, peers = peers.len(), "transport started");
        let handle = TransportHandle {
            inner: Arc::new(HandleInner {
                shared,
                local_addr,
                shutdown_tx,
                runtime: tokio::runtime::Handle::current(),
                tasks: Mutex::new(tasks),
            }),
        };
        Ok((handle, inbound_rx))
    }
}

/// The node's side of a running transport. Cheap to clone; when the last
/// clone is dropped the transport stops (prefer [`TransportHandle::shutdown`],
/// which also waits for the tasks).
#[derive(Clone)]
pub struct TransportHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    /// The runtime the transport started on: peers added later run there
    /// too, whichever thread adds them.
    runtime: tokio::runtime::Handle,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl TransportHandle {
    /// Queues `payload` for `to` and returns at once; never blocks. If the
    /// peer's queue is full, the oldest queued message is dropped (counted in
    /// [`TransportStats::dropped_queue_full`]). Delivery is best effort: a
    /// message may be lost when a connection breaks, and is never duplicated
    /// or reordered with respect to other messages to the same peer.
    pub fn send(&self, to: NodeId, payload: Bytes) -> Result<(), SendError> {
        let shared = &self.inner.shared;
        if *self.inner.shutdown_tx.borrow() {
            return Err(SendError::Shutdown);
        }
        let peer = shared.peer(to).ok_or(SendError::UnknownPeer(to))?;
        let max_payload_bytes = shared.config.max_payload_bytes();
        if payload.len() > max_payload_bytes {
            return Err(SendError::TooLarge { payload_bytes: payload.len(), max_payload_bytes });
        }
        let dropped = peer.queue.push(payload);
        add(&shared.counters.dropped_queue_full, dropped);
        Ok(())
    }

    /// A snapshot of the counters and of each peer's queue.
    pub fn stats(&self) -> TransportStats {
        let shared = &self.inner.shared;
        let mut stats = shared.counters.snapshot();
        stats.peers = shared
            .all_peers()
            .iter()
            .map(|peer| {
                let level = peer.queue.level();
                PeerStats {
                    node_id: peer.node_id,
                    addr: peer.addr,
                    connected: peer.connected.load(Ordering::Relaxed),
                    queued_messages: level.queued_messages,
                    queued_bytes: level.queued_bytes,
                    dropped_queue_full: level.dropped,
                }
            })
            .collect();
        stats
    }

    /// The address the transport listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.shared.config.node_id
    }

    /// The current peers, by id.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.inner.shared.all_peers().into_iter().map(|p| p.node_id)
    }

    /// The address `id` is dialled at, if it is a peer.
    pub fn peer_addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.inner.shared.peer(id).map(|p| p.addr)
    }

    /// Makes `id` (at `addr`) a peer from now on: messages to it are queued
    /// and sent, and its connections are accepted. A peer already known at
    /// the same address is left alone; one known at another address is
    /// replaced (its queued messages are dropped). Returns whether anything
    /// changed. Ignored for this node's own id and after shutdown.
    pub fn add_peer(&self, id: NodeId, addr: SocketAddr) -> bool {
        let shared = &self.inner.shared;
        if id == shared.config.node_id || *self.inner.shutdown_tx.borrow() {
            return false;
        }
        let peer = Arc::new(crate::shared::Peer::new(&shared.config, id, addr));
        {
            let mut peers = shared.peers.write().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = peers.get(&id) {
                if old.addr == addr {
                    return false;
                }
                old.removed.send_replace(true);
            }
            peers.insert(id, peer.clone());
        }
        tracing::info!(node = %shared.config.node_id, peer = %id, %addr, "peer added");
        let task = self.inner.runtime.spawn(outbound::run(
            shared.clone(),
            peer,
            self.inner.shutdown_tx.subscribe(),
        ));
        if let Ok(mut tasks) = self.inner.tasks.try_lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(task);
        }
        true
    }

    /// Stops talking to `id`: its outbound connection closes, queued
    /// messages are dropped, sends to it fail with
    /// [`SendError::UnknownPeer`] and new connections from it are refused.
    /// Returns whether it was a peer.
    pub fn remove_peer(&self, id: NodeId) -> bool {
        let shared = &self.inner.shared;
        let removed = shared.peers.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
        match removed {
            Some(peer) => {
                peer.removed.send_replace(true);
                tracing::info!(node = %shared.config.node_id, peer = %id, "peer removed");
                true
            }
            None => false,
        }
    }

    /// Stops accepting, closes every connection, drops queued messages and
    /// waits for every task to finish. Further sends fail with
    /// [`SendError::Shutdown`]. Idempotent. A panic in a transport task (a
    /// broken invariant) is re-raised here.
    pub async fn shutdown(&self) {
        self.inner.shutdown_tx.send_replace(true);
        let tasks = std::mem::take(&mut *self.inner.tasks.lock().await);
        for task in tasks {
            if let Err(error) = task.await
                && error.is_panic()
            {
                std::panic::resume_unwind(error.into_panic());
            }
        }
    }
}

impl fmt::Debug for TransportHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportHandle")
            .field("node_id", &self.node_id())
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
