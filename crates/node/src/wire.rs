//! A small, explicit binary codec (little-endian integers, length-prefixed
//! byte strings) for what the node puts on disk and on the wire: protocol
//! messages, log entries, hard state, snapshot headers.
//!
//! Decoding never panics and never allocates more than the input holds: every
//! length is checked against the bytes left before anything is read.

use bytes::Bytes;

/// Bytes that do not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {reason}")]
pub struct WireError {
    /// What was being decoded.
    pub what: &'static str,
    /// What was wrong.
    pub reason: String,
}

impl WireError {
    /// An error decoding `what`.
    pub fn new(what: &'static str, reason: impl Into<String>) -> WireError {
        WireError { what, reason: reason.into() }
    }
}

/// Appends encoded values to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// An empty writer with room for `bytes` bytes (one allocation when
    /// the caller knows the encoded size).
    pub fn with_capacity(bytes: usize) -> Writer {
        Writer { buf: Vec::with_capacity(bytes) }
    }

    /// A writer appending to `buf`.
    pub fn with(buf: Vec<u8>) -> Writer {
        Writer { buf }
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// A bool as one byte.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    /// A u32, little-endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A u64, little-endian.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// An optional u64 (a presence byte, then the value).
    pub fn opt_u64(&mut self, v: Option<u64>) -> &mut Self {
        match v {
            Some(x) => self.u8(1).u64(x),
            None => self.u8(0),
        }
    }

    /// A byte string with a u32 length prefix.
    ///
    /// # Panics
    /// If `b` is 4 GiB or longer (callers bound their payloads far below).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let len = u32::try_from(b.len()).expect("byte strings are bounded below 4 GiB");
        self.u32(len);
        self.buf.extend_from_slice(b);
        self
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads encoded values from a byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    what: &'static str,
    buf: &'a [u8],
    /// When set, byte strings are sliced from it without copying.
    shared: Option<&'a Bytes>,
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader of `buf`, which holds a `what` (named in errors).
    pub fn new(what: &'static str, buf: &'a [u8]) -> Reader<'a> {
        Reader { what, buf, shared: None, at: 0 }
    }

    /// A reader whose byte strings share `bytes`' allocation.
    pub fn shared(what: &'static str, bytes: &'a Bytes) -> Reader<'a> {
        Reader { what, buf: bytes.as_ref(), shared: Some(bytes), at: 0 }
    }

    fn err(&self, reason: impl Into<String>) -> WireError {
        WireError::new(self.what, format!("{} (at byte {})", reason.into(), self.at))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let left = self.buf.len() - self.at;
        if n > left {
            return Err(self.err(format!("needs {n} more bytes, {left} left")));
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    /// A bool (0 or 1).
    pub fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.err(format!("bad bool {b}"))),
        }
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// An optional u64.
    pub fn opt_u64(&mut self) -> Result<Option<u64>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            b => Err(self.err(format!("bad option tag {b}"))),
        }
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<Bytes, WireError> {
        let len = self.u32()? as usize;
        let start = self.at;
        let s = self.take(len)?;
        Ok(match self.shared {
            Some(b) => b.slice(start..start + len),
            None => Bytes::copy_from_slice(s),
        })
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    /// Checks that everything was read.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.remaining() != 0 {
            return Err(self.err(format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }

    /// An error about the value just read.
    pub fn invalid(&self, reason: impl Into<String>) -> WireError {
        self.err(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_round_trip() {
        let mut w = Writer::new();
        w.u8(7).bool(true).u32(9).u64(u64::MAX).opt_u64(None).opt_u64(Some(3)).bytes(b"abc");
        let buf = Bytes::from(w.finish());
        let mut r = Reader::shared("test", &buf);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.u32(), Ok(9));
        assert_eq!(r.u64(), Ok(u64::MAX));
        assert_eq!(r.opt_u64(), Ok(None));
        assert_eq!(r.opt_u64(), Ok(Some(3)));
        assert_eq!(r.bytes(), Ok(Bytes::from_static(b"abc")));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn a_length_past_the_end_is_an_error_not_an_allocation() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let buf = w.finish();
        let err = Reader::new("entry", &buf).bytes().unwrap_err();
        assert_eq!(err.what, "entry");
        assert!(err.reason.contains("needs 4294967295 more bytes"), "{err}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new("fuzz", &data);
            while r.remaining() > 0 {
                if r.bytes().is_err() && r.opt_u64().is_err() && r.bool().is_err() {
                    break;
                }
            }
        }
    }
}
