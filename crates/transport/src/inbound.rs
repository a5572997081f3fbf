//! The inbound side: the accept loop (bounded number of connections) and one
//! task per accepted connection that runs the acceptor's handshake under a
//! timeout, then delivers the peer's Data frames into the node's inbound
//! channel. A bad frame closes that connection only; the listener goes on.
//!
//! When the inbound channel is full, a connection stops reading until the
//! node makes room: TCP flow control then pushes back on the sender, whose
//! own bounded queue drops its oldest messages. Nothing here grows without
//! bound.

use crate::frame::{Frame, FrameKind, FrameReader, ReadError};
use crate::handshake::{self, HANDSHAKE_MAX_FRAME_BYTES, HandshakeError};
use crate::shared::{Shared, stopped};
use crate::stats::add;
use crate::transport::Inbound;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use synod_core::NodeId;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};
use tracing::{debug, info, warn};

/// Pause after a failed `accept` (e.g. out of file descriptors) before the
/// next one, so the loop does not spin.
const ACCEPT_RETRY_DELAY_MS: u64 = 50;

/// How an authenticated inbound connection ended.
#[derive(Debug)]
enum End {
    Shutdown,
    Replaced,
    NodeGone,
    Closed,
    BadFrame(String),
    Io(std::io::Error),
}

/// Accepts connections until shutdown, then closes every connection.
pub(crate) async fn run_listener(
    listener: TcpListener,
    shared: Arc<Shared>,
    inbound_tx: mpsc::Sender<Inbound>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(shared.config.max_inbound_connections));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            () = inbound_tx.closed() => {
                info!("the node dropped its inbound channel; no longer accepting peers");
                break;
            }
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined
                    && error.is_panic()
                {
                    std::panic::resume_unwind(error.into_panic());
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let task = serve(stream, remote, shared.clone(), inbound_tx.clone(), shutdown.clone(), slot);
                        connections.spawn(task);
                    }
                    Err(_) => {
                        add(&shared.counters.connections_rejected, 1);
                        warn!(%remote, limit = shared.config.max_inbound_connections, "too many inbound connections; closing this one");
                    }
                },
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::select! {
                        biased;
                        () = stopped(&mut shutdown) => break,
                        () = sleep(Duration::from_millis(ACCEPT_RETRY_DELAY_MS)) => {}
                    }
                }
            },
        }
    }
    connections.shutdown().await;
}

/// Serves one accepted connection: handshake, then frames until it ends.
async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    shared: Arc<Shared>,
    inbound_tx: mpsc::Sender<Inbound>,
    mut shutdown: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%remote, %error, "cannot set TCP_NODELAY");
    }
    // The write half stays open until this task ends: the initiator reads
    // the end of the connection as "closed".
    let (read, mut writer) = stream.into_split();
    let mut reader = FrameReader::new(read, HANDSHAKE_MAX_FRAME_BYTES);
    let handshake_timeout_ms = shared.config.handshake_timeout_ms;
    let is_member = |id: NodeId| shared.peer(id).is_some();
    let handshake = handshake::accept(&mut reader, &mut writer, &shared.credentials, is_member);
    let handshake = timeout(Duration::from_millis(handshake_timeout_ms), handshake);
    let accepted = tokio::select! {
        biased;
        () = stopped(&mut shutdown) => return,
        accepted = handshake => accepted.unwrap_or(Err(HandshakeError::Timeout(handshake_timeout_ms))),
    };
    let from = match accepted {
        Ok(from) => from,
        Err(error) => {
            shared.record_handshake_failure(&error, remote, None);
            return;
        }
    };
    add(&shared.counters.inbound_connections, 1);
    reader.set_max_frame_bytes(shared.config.max_frame_bytes);
    let (connection_id, replaced) = shared.register_inbound(from);
    info!(peer = %from, %remote, "inbound connection authenticated");
    let end = receive(&shared, from, &mut reader, &inbound_tx, &mut shutdown, replaced).await;
    shared.unregister_inbound(from, connection_id);
    match end {
        End::BadFrame(error) => {
            add(&shared.counters.bad_frames, 1);
            warn!(peer = %from, %remote, %error, "bad frame; connection closed");
        }
        End::Io(error) => info!(peer = %from, %remote, %error, "inbound connection failed"),
        End::Closed | End::Replaced => {
            info!(peer = %from, %remote, reason = ?end, "inbound connection ended")
        }
        End::Shutdown | End::NodeGone => {
            debug!(peer = %from, %remote, reason = ?end, "inbound connection ended")
        }
    }
    drop(writer);
}

/// Delivers Data frames from `from` until the connection ends.
async fn receive(
    shared: &Shared,
    from: NodeId,
    reader: &mut FrameReader<OwnedReadHalf>,
    inbound_tx: &mpsc::Sender<Inbound>,
    shutdown: &mut watch::Receiver<bool>,
    mut replaced: oneshot::Receiver<()>,
) -> End {
    loop {
        let read = tokio::select! {
            biased;
            () = stopped(shutdown) => return End::Shutdown,
            _ = &mut replaced => return End::Replaced,
            read = reader.next_frame() => read,
        };
        let payload = match read {
            Ok(Some(Frame { kind: FrameKind::Data, payload })) => payload,
            Ok(Some(frame)) => {
                return End::BadFrame(format!(
                    "unexpected {:?} frame after the handshake",
                    frame.kind
                ));
            }
            Ok(None) => return End::Closed,
            Err(ReadError::Frame(error)) => return End::BadFrame(error.to_string()),
            Err(ReadError::Io(error)) => return End::Io(error),
        };
        add(&shared.counters.frames_in, 1);
        add(&shared.counters.bytes_in, payload.len() as u64);
        tokio::select! {
            biased;
            () = stopped(shutdown) => return End::Shutdown,
            sent = inbound_tx.send(Inbound { from, payload }) => {
                if sent.is_err() {
                    return End::NodeGone;
                }
            }
        }
    }
}
