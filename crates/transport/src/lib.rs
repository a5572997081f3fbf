//! # synod-transport
//!
//! The peer transport of a Synod node (DESIGN.md §3): it moves opaque message
//! payloads ([`bytes::Bytes`]) between node ids over TCP. It is
//! protocol-agnostic — the node layer serializes protocol messages — and owns
//! no protocol state, no storage and no clock other than its own timeouts.
//!
//! ## Using it
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use synod_core::NodeId;
//! use synod_transport::{Transport, TransportConfig};
//!
//! let peers = vec![(NodeId(2), "10.0.0.2:7000".parse()?), (NodeId(3), "10.0.0.3:7000".parse()?)];
//! let config = TransportConfig::new(NodeId(1), "cluster-a", b"32 random bytes...".to_vec(),
//!                                   "0.0.0.0:7000".parse()?, peers);
//! let (transport, mut inbound) = Transport::start(config).await?;
//! transport.send(NodeId(2), bytes::Bytes::from_static(b"a serialized message"))?;
//! while let Some(message) = inbound.recv().await {
//!     println!("{} bytes from {}", message.payload.len(), message.from);
//! #   break;
//! }
//! println!("{:?}", transport.stats());
//! transport.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Connections
//!
//! Each node dials every peer (one outbound task per peer) and accepts the
//! peers' connections; a connection carries Data frames one way only, from
//! the node that dialled it. So between two nodes there are two TCP
//! connections, with no tie-breaking needed. A newer authenticated inbound
//! connection from a peer replaces its older one.
//!
//! - **Sending** ([`TransportHandle::send`]) never blocks: it appends to the
//!   peer's bounded queue (`queue_len` messages, `max_queue_bytes` bytes); when
//!   full, the **oldest** messages are dropped and counted — consensus
//!   protocols tolerate loss, and the newest message is usually the most
//!   useful. Messages wait in the queue while the peer is unreachable.
//! - **Reconnecting**: a failed connect, handshake or connection is retried
//!   after a delay that doubles from `backoff_initial_ms` to `backoff_max_ms`,
//!   drawn from the upper half of each step (jitter); it resets after a
//!   successful handshake. A write that takes longer than `write_timeout_ms`
//!   drops the connection.
//! - **Receiving**: Data frames go, in order per peer, into one bounded channel
//!   of [`Inbound`]`{ from, payload }`. When the node does not keep up, the
//!   connections stop reading (TCP backpressure) rather than buffer.
//! - **Delivery** is best effort: no duplicates, no reordering per peer, but a
//!   message may be lost when a queue overflows or a connection breaks.
//!
//! ## Wire format (version 1)
//!
//! Every connection is a sequence of frames:
//!
//! ```text
//! +-------------------+-------------+----------+------------------------+
//! | length: u32 (BE)  | version: u8 | kind: u8 | payload                |
//! +-------------------+-------------+----------+------------------------+
//!                     |<------------- length bytes ------------------->|
//! ```
//!
//! `version` is 1; `kind` is 1 Hello, 2 Challenge, 3 Proof, 4 Welcome,
//! 5 Data; `2 <= length <= max_frame_bytes` (default 16 MiB; 1 KiB until the
//! handshake completes). An oversized, too-short, wrong-version,
//! unknown-kind or truncated frame, or a frame of a kind not expected at that
//! point, closes that connection and is counted in
//! [`TransportStats::bad_frames`]; the node keeps serving everyone else.
//!
//! The handshake (initiator I dials acceptor A), bounded by
//! `handshake_timeout_ms` on both sides:
//!
//! ```text
//! I → A  Hello     cluster_len: u8, cluster_id, from: u64 BE (I), to: u64 BE (A), nonce_i: [u8; 32]
//! A → I  Challenge nonce_a: [u8; 32]
//! I → A  Proof     mac_i: [u8; 32]
//! A → I  Welcome   mac_a: [u8; 32]
//! then   I → A     Data frames, payload = the message
//!
//! mac_r = HMAC-SHA256(secret, "synod-transport/v1 handshake" || r ||
//!                     cluster_len || cluster_id || I || A || nonce_i || nonce_a),  r = b'I' | b'A'
//! ```
//!
//! A refuses a Hello with another cluster id, from a node that is not in its
//! peer list, or addressed to another node, and a Proof that does not verify;
//! I refuses a Welcome that does not verify. MACs are checked in constant time
//! (`hmac`'s `verify_slice`). A refusal closes the connection, is logged with
//! `tracing::warn!` and is counted in [`TransportStats::handshakes_refused`].
//! Nonces are fresh random bytes from each side, so a recorded handshake
//! cannot be replayed.
//!
//! The transport does **not** encrypt: anyone on the path can read (but not
//! forge a handshake for) the traffic. See `handshake` for the details.
#![deny(missing_docs)]

mod backoff;
mod config;
pub mod frame;
pub mod handshake;
mod inbound;
mod outbound;
mod queue;
mod shared;
mod stats;
mod transport;

pub use config::{ConfigError, MAX_CLUSTER_ID_BYTES, MIN_MAX_FRAME_BYTES, TransportConfig};
pub use frame::DEFAULT_MAX_FRAME_BYTES;
pub use stats::{PeerStats, TransportStats};
pub use transport::{Inbound, SendError, Transport, TransportError, TransportHandle};
