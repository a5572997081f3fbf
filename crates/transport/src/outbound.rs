//! The outbound side: one task per peer that dials it, runs the initiator's
//! handshake, then drains the peer's [`SendQueue`](crate::queue::SendQueue)
//! into Data frames — reconnecting with capped, jittered exponential backoff
//! whenever the connection fails. Messages stay queued (bounded, drop-oldest)
//! while the peer is unreachable.

use crate::backoff::Backoff;
use crate::frame::{FrameKind, FrameReader, ReadError, write_frame};
use crate::handshake::{self, HANDSHAKE_MAX_FRAME_BYTES, HandshakeError};
use crate::shared::{Peer, Shared, stopped};
use crate::stats::add;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::time::{sleep, timeout};
use tracing::{debug, info, warn};

/// Messages written per batch before flushing and checking for shutdown.
pub(crate) const MAX_BATCH_MESSAGES: usize = 256;

/// Size of the write buffer that coalesces small frames.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// An authenticated outbound connection.
struct Connection {
    reader: FrameReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("connect timed out after {0} ms")]
    ConnectTimeout(u64),
    #[error(transparent)]
    Handshake(HandshakeError),
}

/// Why an established connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("peer closed the connection")]
    Closed,
    #[error("peer sent a {0:?} frame on an outbound connection")]
    UnexpectedFrame(FrameKind),
    #[error(transparent)]
    Read(ReadError),
    #[error("write failed: {0}")]
    Write(io::Error),
    #[error("write timed out after {0} ms")]
    WriteTimeout(u64),
}

/// Runs `peer`'s outbound connection until shutdown or until the peer is
/// removed.
pub(crate) async fn run(shared: Arc<Shared>, peer: Arc<Peer>, shutdown: watch::Receiver<bool>) {
    let peer_id = peer.node_id;
    let mut removed = peer.removed.subscribe();
    tokio::select! {
        biased;
        _ = removed.wait_for(|gone| *gone) => {
            info!(peer = %peer_id, addr = %peer.addr, "peer removed; outbound connection closed");
        }
        () = run_until_shutdown(&shared, &peer, shutdown) => {}
    }
}

async fn run_until_shutdown(shared: &Shared, peer: &Peer, mut shutdown: watch::Receiver<bool>) {
    let peer_id = peer.node_id;
    let mut backoff = Backoff::new(shared.config.backoff_initial_ms, shared.config.backoff_max_ms);
    loop {
        let attempt = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            attempt = connect(shared, peer) => attempt,
        };
        match attempt {
            Ok(connection) => {
                backoff.reset();
                add(&shared.counters.outbound_connections, 1);
                peer.connected.store(true, std::sync::atomic::Ordering::Relaxed);
                info!(peer = %peer_id, addr = %peer.addr, "outbound connection established");
                let ended = serve(shared, peer, connection, &mut shutdown).await;
                peer.connected.store(false, std::sync::atomic::Ordering::Relaxed);
                match ended {
                    Ok(()) => return,
                    Err(error) => record_connection_end(shared, peer, &error),
                }
            }
            Err(ConnectError::Handshake(error)) => {
                shared.record_handshake_failure(&error, peer.addr, Some(peer_id));
            }
            Err(error) => debug!(peer = %peer_id, addr = %peer.addr, %error, "cannot reach peer"),
        }
        let delay = backoff.next_delay(&mut rand::rng());
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            () = sleep(delay) => {}
        }
    }
}

/// Dials the peer and runs the initiator's handshake, both bounded in time.
async fn connect(shared: &Shared, peer: &Peer) -> Result<Connection, ConnectError> {
    let config = &shared.config;
    let stream =
        timeout(Duration::from_millis(config.connect_timeout_ms), TcpStream::connect(peer.addr))
            .await
            .map_err(|_| ConnectError::ConnectTimeout(config.connect_timeout_ms))?
            .map_err(ConnectError::Connect)?;
    // Frames are coalesced by the write buffer; do not delay the flushes.
    stream.set_nodelay(true).map_err(ConnectError::Connect)?;
    let (read, mut writer) = stream.into_split();
    let mut reader = FrameReader::new(read, HANDSHAKE_MAX_FRAME_BYTES);
    let handshake =
        handshake::initiate(&mut reader, &mut writer, &shared.credentials, peer.node_id);
    timeout(Duration::from_millis(config.handshake_timeout_ms), handshake)
        .await
        .map_err(|_| ConnectError::Handshake(HandshakeError::Timeout(config.handshake_timeout_ms)))?
        .map_err(ConnectError::Handshake)?;
    Ok(Connection { reader, writer })
}

/// Writes queued messages until shutdown (`Ok`) or until the connection
/// fails. The acceptor never sends after its Welcome, so anything readable is
/// either the end of the connection or a protocol violation; watching the
/// read side notices a restarted peer without waiting for a write to fail.
async fn serve(
    shared: &Shared,
    peer: &Peer,
    connection: Connection,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    let Connection { mut reader, writer } = connection;
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, writer);
    let write_timeout = Duration::from_millis(shared.config.write_timeout_ms);
    let timed_out = || ConnectionError::WriteTimeout(shared.config.write_timeout_ms);
    loop {
        let mut batch_full = true;
        for _ in 0..MAX_BATCH_MESSAGES {
            let Some(message) = peer.queue.pop() else {
                batch_full = false;
                break;
            };
            let written =
                match timeout(write_timeout, write_frame(&mut writer, FrameKind::Data, &message))
                    .await
                {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(ConnectionError::Write(error)),
                    Err(_) => Err(timed_out()),
                };
            if let Err(error) = written {
                add(&shared.counters.dropped_in_flight, 1);
                return Err(error);
            }
            add(&shared.counters.frames_out, 1);
            add(&shared.counters.bytes_out, message.len() as u64);
        }
        timeout(write_timeout, writer.flush())
            .await
            .map_err(|_| timed_out())?
            .map_err(ConnectionError::Write)?;
        tokio::select! {
            biased;
            () = stopped(shutdown) => return Ok(()),
            // Checked before new messages, so none is written into a
            // connection already known to be closed.
            read = reader.next_frame() => return Err(match read {
                Ok(None) => ConnectionError::Closed,
                Ok(Some(frame)) => ConnectionError::UnexpectedFrame(frame.kind),
                Err(error) => ConnectionError::Read(error),
            }),
            // A full batch may have left messages behind whose wake-up was
            // already consumed: go round again without waiting.
            () = std::future::ready(()), if batch_full => {}
            () = peer.queue.pushed() => {}
        }
    }
}

/// Counts and logs the end of an established connection.
fn record_connection_end(shared: &Shared, peer: &Peer, error: &ConnectionError) {
    match error {
        ConnectionError::UnexpectedFrame(_) | ConnectionError::Read(ReadError::Frame(_)) => {
            add(&shared.counters.bad_frames, 1);
            warn!(peer = %peer.node_id, addr = %peer.addr, %error, "bad frame from peer; connection closed");
        }
        _ => {
            info!(peer = %peer.node_id, addr = %peer.addr, %error, "outbound connection lost; reconnecting")
        }
    }
}
