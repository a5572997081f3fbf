//! [`Shared`]: the state every transport task reads — configuration,
//! credentials, the per-peer send queues, the counters — and the registry of
//! authenticated inbound connections (one per peer).

use crate::config::TransportConfig;
use crate::handshake::{Credentials, Failure, HandshakeError};
use crate::queue::SendQueue;
use crate::stats::{Counters, add};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use synod_core::NodeId;
use tokio::sync::{oneshot, watch};
use tracing::{debug, warn};

/// One peer's outbound state.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) node_id: NodeId,
    pub(crate) addr: SocketAddr,
    pub(crate) queue: SendQueue,
    pub(crate) connected: AtomicBool,
    /// Set when the peer is removed at runtime: its outbound task ends.
    pub(crate) removed: watch::Sender<bool>,
}

impl Peer {
    /// A peer with an empty queue sized by `config`.
    pub(crate) fn new(config: &TransportConfig, node_id: NodeId, addr: SocketAddr) -> Peer {
        Peer {
            node_id,
            addr,
            queue: SendQueue::new(config.queue_len, config.max_queue_bytes),
            connected: AtomicBool::new(false),
            removed: watch::Sender::new(false),
        }
    }
}

/// State shared by the handle, the listener and every connection task.
pub(crate) struct Shared {
    pub(crate) config: TransportConfig,
    pub(crate) credentials: Credentials,
    /// The peers, by id; [`crate::TransportHandle::add_peer`] and
    /// [`crate::TransportHandle::remove_peer`] change it at runtime.
    pub(crate) peers: RwLock<BTreeMap<NodeId, Arc<Peer>>>,
    pub(crate) counters: Counters,
    /// The live inbound connection of each peer: its id and the sender whose
    /// drop tells it a newer connection from the same peer replaced it.
    inbound: Mutex<HashMap<NodeId, (u64, oneshot::Sender<()>)>>,
    next_connection_id: AtomicU64,
}

impl Shared {
    /// Builds the shared state from a validated configuration.
    pub(crate) fn new(config: TransportConfig) -> Shared {
        let peers = config
            .peers
            .iter()
            .map(|&(node_id, addr)| (node_id, Arc::new(Peer::new(&config, node_id, addr))))
            .collect();
        Shared {
            credentials: Credentials {
                node_id: config.node_id,
                cluster_id: config.cluster_id.as_bytes().to_vec(),
                secret: config.secret.clone(),
            },
            peers: RwLock::new(peers),
            counters: Counters::default(),
            inbound: Mutex::new(HashMap::new()),
            next_connection_id: AtomicU64::new(0),
            config,
        }
    }

    /// The peer `id`, if it is one now.
    pub(crate) fn peer(&self, id: NodeId) -> Option<Arc<Peer>> {
        self.peers.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&id).cloned()
    }

    /// Every current peer.
    pub(crate) fn all_peers(&self) -> Vec<Arc<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Records `from`'s newly authenticated inbound connection, replacing
    /// (and thereby closing) any older one. Returns the connection's id and a
    /// receiver that resolves when a newer connection replaces it.
    pub(crate) fn register_inbound(&self, from: NodeId) -> (u64, oneshot::Receiver<()>) {
        let connection_id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let (replaced_tx, replaced_rx) = oneshot::channel();
        let mut inbound = self.inbound.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inbound.insert(from, (connection_id, replaced_tx)).is_some() {
            debug!(peer = %from, "a new inbound connection replaces the old one");
        }
        (connection_id, replaced_rx)
    }

    /// Forgets `from`'s inbound connection `connection_id` if it is still the
    /// registered one.
    pub(crate) fn unregister_inbound(&self, from: NodeId, connection_id: u64) {
        let mut inbound = self.inbound.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inbound.get(&from).is_some_and(|(id, _)| *id == connection_id) {
            inbound.remove(&from);
        }
    }

    /// Counts and logs a handshake that did not complete. `peer` is the node
    /// dialled (outbound) or `None` (inbound, before the peer is known).
    pub(crate) fn record_handshake_failure(
        &self,
        error: &HandshakeError,
        remote: SocketAddr,
        peer: Option<NodeId>,
    ) {
        let direction = if peer.is_some() { "outbound" } else { "inbound" };
        let peer = peer.map(|id| id.to_string()).unwrap_or_else(|| "?".to_string());
        match error.failure() {
            Failure::BadFrame => {
                add(&self.counters.bad_frames, 1);
                warn!(%remote, %peer, direction, %error, "handshake: bad frame; connection closed");
            }
            Failure::Refused => {
                add(&self.counters.handshakes_refused, 1);
                warn!(%remote, %peer, direction, %error, "handshake refused");
            }
            Failure::Broken => {
                add(&self.counters.handshakes_failed, 1);
                if direction == "outbound" && matches!(error, HandshakeError::Closed) {
                    warn!(%remote, %peer, %error, "peer closed the handshake (did it refuse us? check cluster id, node id and secret)");
                } else {
                    debug!(%remote, %peer, direction, %error, "handshake failed");
                }
            }
        }
    }
}

/// Resolves once shutdown is requested (or every handle is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender (owned by the handles) is gone: stop as well.
    let _ = shutdown.wait_for(|stop| *stop).await;
}
