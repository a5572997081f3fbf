//! Frames: the unit on the wire, and nothing else.
//!
//! ```text
//! +-------------------+-------------+----------+------------------------+
//! | length: u32 (BE)  | version: u8 | kind: u8 | payload                |
//! +-------------------+-------------+----------+------------------------+
//!                     |<------------- length bytes ------------------->|
//! ```
//!
//! `length` counts the bytes after the prefix (version + kind + payload), so it
//! is at least [`FRAME_HEADER_BYTES`]; it may not exceed the reader's
//! `max_frame_bytes`. A reader rejects a frame as soon as the offending byte
//! arrives: an oversized or too-short length after 4 bytes, a wrong version
//! after 5, an unknown kind after 6 — it never buffers the body of a frame it
//! will refuse.
//!
//! This module owns encoding ([`encode`], [`write_frame`]), incremental
//! decoding ([`decode`]) and an async [`FrameReader`]. It knows nothing of
//! handshakes, peers or sockets.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The wire version this node speaks. A frame with any other version is
/// malformed.
pub const FRAME_VERSION: u8 = 1;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Bytes of the header counted by the length (version + kind).
pub const FRAME_HEADER_BYTES: usize = 2;

/// Default upper bound on a frame's `length` field: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;

/// The largest amount of buffer space a reader reserves ahead of the data it
/// has actually received, so a peer announcing a huge frame cannot make the
/// reader allocate it before sending it.
const MAX_READ_AHEAD_BYTES: usize = 256 * 1024;

/// The smallest read buffer a reader keeps free before a read.
const MIN_READ_BYTES: usize = 4 * 1024;

/// What a frame carries. The first four kinds only appear during the
/// handshake (see `handshake`); after it, only [`FrameKind::Data`] is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Initiator → acceptor: cluster id, both node ids, initiator's challenge.
    Hello = 1,
    /// Acceptor → initiator: acceptor's challenge.
    Challenge = 2,
    /// Initiator → acceptor: initiator's MAC over the transcript.
    Proof = 3,
    /// Acceptor → initiator: acceptor's MAC over the transcript; the
    /// connection is authenticated.
    Welcome = 4,
    /// An opaque message payload for the node.
    Data = 5,
}

impl FrameKind {
    /// Every kind, in wire order.
    pub const ALL: [FrameKind; 5] = [
        FrameKind::Hello,
        FrameKind::Challenge,
        FrameKind::Proof,
        FrameKind::Welcome,
        FrameKind::Data,
    ];

    /// The kind with wire byte `byte`, if any.
    pub fn from_byte(byte: u8) -> Option<FrameKind> {
        FrameKind::ALL.into_iter().find(|kind| *kind as u8 == byte)
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the payload is.
    pub kind: FrameKind,
    /// The payload (zero-copy slice of the read buffer).
    pub payload: Bytes,
}

/// Why bytes on a connection are not a valid frame. Any of these closes the
/// connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field exceeds the reader's limit.
    #[error("frame length {length_bytes} exceeds the limit of {max_frame_bytes} bytes")]
    TooLarge {
        /// The announced length.
        length_bytes: u32,
        /// The reader's limit.
        max_frame_bytes: u32,
    },
    /// The length field cannot even hold the version and kind.
    #[error("frame length {length_bytes} is shorter than the {FRAME_HEADER_BYTES}-byte header")]
    TooShort {
        /// The announced length.
        length_bytes: u32,
    },
    /// The version byte is not [`FRAME_VERSION`].
    #[error("unsupported frame version {0} (this node speaks {FRAME_VERSION})")]
    BadVersion(u8),
    /// The kind byte is not a [`FrameKind`].
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered_bytes} bytes buffered)")]
    Truncated {
        /// Bytes of the partial frame that had arrived.
        buffered_bytes: usize,
    },
}

/// The 6 bytes that precede a payload of `payload_len` bytes.
///
/// Panics if the frame length does not fit in a `u32`; callers bound payloads
/// by `max_frame_bytes` first.
pub fn header(
    kind: FrameKind,
    payload_len: usize,
) -> [u8; LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES] {
    let length = u32::try_from(payload_len + FRAME_HEADER_BYTES)
        .expect("frame length fits in u32: payloads are bounded by max_frame_bytes");
    let [l0, l1, l2, l3] = length.to_be_bytes();
    [l0, l1, l2, l3, FRAME_VERSION, kind as u8]
}

/// Appends one frame to `dst`.
pub fn encode(kind: FrameKind, payload: &[u8], dst: &mut BytesMut) {
    dst.reserve(LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES + payload.len());
    dst.put_slice(&header(kind, payload.len()));
    dst.put_slice(payload);
}

/// Takes one complete frame off the front of `src`.
///
/// Returns `Ok(None)` when `src` holds only a valid prefix of a frame (read
/// more and call again), and an error as soon as the bytes present cannot
/// start a valid frame. On error `src` is left as it was; the caller closes
/// the connection.
pub fn decode(src: &mut BytesMut, max_frame_bytes: u32) -> Result<Option<Frame>, FrameError> {
    let Some(length_bytes) = announced_length(src) else {
        return Ok(None);
    };
    if length_bytes > max_frame_bytes {
        return Err(FrameError::TooLarge { length_bytes, max_frame_bytes });
    }
    if (length_bytes as usize) < FRAME_HEADER_BYTES {
        return Err(FrameError::TooShort { length_bytes });
    }
    if let Some(&version) = src.get(LENGTH_PREFIX_BYTES)
        && version != FRAME_VERSION
    {
        return Err(FrameError::BadVersion(version));
    }
    let kind = match src.get(LENGTH_PREFIX_BYTES + 1) {
        None => return Ok(None),
        Some(&byte) => FrameKind::from_byte(byte).ok_or(FrameError::UnknownKind(byte))?,
    };
    let frame_end = LENGTH_PREFIX_BYTES + length_bytes as usize;
    if src.len() < frame_end {
        return Ok(None);
    }
    let mut frame = src.split_to(frame_end);
    frame.advance(LENGTH_PREFIX_BYTES + FRAME_HEADER_BYTES);
    Ok(Some(Frame { kind, payload: frame.freeze() }))
}

/// The length field at the front of `src`, if all four bytes are there.
fn announced_length(src: &[u8]) -> Option<u32> {
    let prefix: [u8; LENGTH_PREFIX_BYTES] = src.get(..LENGTH_PREFIX_BYTES)?.try_into().ok()?;
    Some(u32::from_be_bytes(prefix))
}

/// Writes one frame (header, then payload) to `writer`. Does not flush.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    kind: FrameKind,
    payload: &[u8],
) -> io::Result<()> {
    writer.write_all(&header(kind, payload.len())).await?;
    writer.write_all(payload).await
}

/// Why [`FrameReader::next_frame`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes received are not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

/// Reads frames from a byte stream, enforcing a maximum frame size.
pub struct FrameReader<R> {
    inner: R,
    buffer: BytesMut,
    max_frame_bytes: u32,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `inner` that refuses frames longer than
    /// `max_frame_bytes`.
    pub fn new(inner: R, max_frame_bytes: u32) -> FrameReader<R> {
        FrameReader { inner, buffer: BytesMut::with_capacity(MIN_READ_BYTES), max_frame_bytes }
    }

    /// Changes the limit (the handshake runs with a small one; an
    /// authenticated connection gets the configured one).
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: u32) {
        self.max_frame_bytes = max_frame_bytes;
    }

    /// The underlying stream. Bytes received but not yet returned as frames
    /// are discarded.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The next frame; `Ok(None)` when the stream ended cleanly between frames.
    ///
    /// Cancel-safe: if the future is dropped, no received byte is lost, so it
    /// may be used in `tokio::select!`.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = decode(&mut self.buffer, self.max_frame_bytes)? {
                return Ok(Some(frame));
            }
            self.reserve_for_next_read();
            let read_bytes = self.inner.read_buf(&mut self.buffer).await?;
            if read_bytes == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                return Err(FrameError::Truncated { buffered_bytes: self.buffer.len() }.into());
            }
        }
    }

    /// Makes room for the rest of the current frame, but never more than
    /// [`MAX_READ_AHEAD_BYTES`] beyond what has arrived.
    fn reserve_for_next_read(&mut self) {
        let missing_bytes = match announced_length(&self.buffer) {
            Some(length) => {
                (LENGTH_PREFIX_BYTES + length as usize).saturating_sub(self.buffer.len())
            }
            None => LENGTH_PREFIX_BYTES,
        };
        let wanted_bytes = missing_bytes.clamp(MIN_READ_BYTES, MAX_READ_AHEAD_BYTES);
        if self.buffer.capacity() - self.buffer.len() < wanted_bytes {
            self.buffer.reserve(wanted_bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind_strategy() -> impl Strategy<Value = FrameKind> {
        prop::sample::select(FrameKind::ALL.to_vec())
    }

    #[test]
    fn decode_waits_for_a_complete_frame() {
        let mut encoded = BytesMut::new();
        encode(FrameKind::Data, b"hello", &mut encoded);
        let full = encoded.clone();
        for cut in 0..full.len() {
            let mut partial = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut partial, 1024), Ok(None), "cut at {cut}");
            assert_eq!(partial.len(), cut, "a partial frame is not consumed");
        }
        let frame = decode(&mut encoded, 1024).unwrap().unwrap();
        assert_eq!(frame.kind, FrameKind::Data);
        assert_eq!(&frame.payload[..], b"hello");
        assert!(encoded.is_empty());
    }

    #[test]
    fn oversized_length_is_refused_after_four_bytes() {
        let mut src = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            decode(&mut src, DEFAULT_MAX_FRAME_BYTES),
            Err(FrameError::TooLarge {
                length_bytes: u32::MAX,
                max_frame_bytes: DEFAULT_MAX_FRAME_BYTES
            })
        );
    }

    #[test]
    fn limit_is_inclusive() {
        let mut src = BytesMut::new();
        encode(FrameKind::Data, &[7; 8], &mut src);
        let length = (8 + FRAME_HEADER_BYTES) as u32;
        assert!(decode(&mut src.clone(), length).unwrap().is_some());
        assert_eq!(
            decode(&mut src, length - 1),
            Err(FrameError::TooLarge { length_bytes: length, max_frame_bytes: length - 1 })
        );
    }

    #[test]
    fn bad_header_bytes_are_refused_before_the_body() {
        let mut short = BytesMut::from(&[0, 0, 0, 1][..]);
        assert_eq!(decode(&mut short, 64), Err(FrameError::TooShort { length_bytes: 1 }));
        let mut version = BytesMut::from(&[0, 0, 0, 10, 9][..]);
        assert_eq!(decode(&mut version, 64), Err(FrameError::BadVersion(9)));
        let mut kind = BytesMut::from(&[0, 0, 0, 10, FRAME_VERSION, 200][..]);
        assert_eq!(decode(&mut kind, 64), Err(FrameError::UnknownKind(200)));
    }

    #[tokio::test]
    async fn reader_reports_truncation_and_clean_end() {
        let mut wire = BytesMut::new();
        encode(FrameKind::Data, b"one", &mut wire);
        let mut clean = FrameReader::new(&wire[..], 64);
        assert_eq!(clean.next_frame().await.unwrap().unwrap().payload, "one");
        assert!(clean.next_frame().await.unwrap().is_none());

        let cut = &wire[..wire.len() - 1];
        let mut truncated = FrameReader::new(cut, 64);
        match truncated.next_frame().await {
            Err(ReadError::Frame(FrameError::Truncated { buffered_bytes })) => {
                assert_eq!(buffered_bytes, cut.len())
            }
            other => panic!("expected truncation, got {other:?}"),
        }
    }

    proptest! {
        #[test]
        fn roundtrip(frames in prop::collection::vec(
            (kind_strategy(), prop::collection::vec(any::<u8>(), 0..300)), 0..8),
            chunk in 1usize..64,
        ) {
            let mut wire = BytesMut::new();
            for (kind, payload) in &frames {
                encode(*kind, payload, &mut wire);
            }
            // Feed the stream in chunks of `chunk` bytes, as a socket would.
            let mut buffer = BytesMut::new();
            let mut decoded = Vec::new();
            for piece in wire.chunks(chunk) {
                buffer.extend_from_slice(piece);
                while let Some(frame) = decode(&mut buffer, 1024).unwrap() {
                    decoded.push((frame.kind, frame.payload.to_vec()));
                }
            }
            prop_assert!(buffer.is_empty());
            prop_assert_eq!(decoded, frames);
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512),
                                    max_frame_bytes in 0u32..1024) {
            let mut buffer = BytesMut::from(&bytes[..]);
            loop {
                let before = buffer.len();
                match decode(&mut buffer, max_frame_bytes) {
                    Ok(Some(frame)) => {
                        prop_assert!(frame.payload.len() + FRAME_HEADER_BYTES <= max_frame_bytes as usize);
                        prop_assert!(buffer.len() < before);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }

        #[test]
        fn reader_on_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let mut reader = FrameReader::new(&bytes[..], 256);
                let mut frames = 0;
                while let Ok(Some(_)) = reader.next_frame().await {
                    frames += 1;
                    assert!(frames <= bytes.len());
                }
            });
        }
    }
}
