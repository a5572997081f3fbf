//! [`Machine`]: the replicated state a node applies committed commands to —
//! the key-value store ([`KvStore`]) behind an exactly-once session table —
//! and its snapshot bytes.
//!
//! The session table is `synod_core::Sessions`'s rule (apply each (client,
//! seq) once, answer a retry of the latest request from a cache, ignore older
//! ones, evict the least recently active client when full), kept here with
//! its state in the snapshot so that every replica, including one restored
//! from a snapshot, makes the same decisions.
//!
//! Snapshot layout: magic `SYNODSM1`, applied index, the session table
//! (`count`, then `client, seq, index, response` each), then the
//! [`KvStore::snapshot`] bytes. Snapshots are written to and read from a
//! stream ([`Machine::write_snapshot`], [`Machine::read_snapshot`]) in
//! bounded pieces: the node never holds a whole one in memory.

use crate::error::NodeError;
use crate::wire::Writer;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use synod_core::{ClientId, Committed, StateMachine};
use synod_kv::{KvConfig, KvStore};

const MAGIC: &[u8; 8] = b"SYNODSM1";

/// Client sessions kept; the least recently active is evicted beyond this.
pub const MAX_SESSIONS: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    seq: u64,
    index: u64,
    response: Bytes,
}

/// The replicated state machine of a node. Cloning it is the point-in-time
/// copy a background snapshot is written from: it copies the key space's
/// maps and version lists but shares every key and value ([`Bytes`]).
#[derive(Clone, Debug)]
pub struct Machine {
    kv: KvStore,
    sessions: HashMap<ClientId, Session>,
    /// Sessions by the index of their last command, oldest first.
    by_index: BTreeMap<u64, ClientId>,
    applied_index: u64,
}

impl Machine {
    /// An empty machine.
    pub fn new(config: KvConfig) -> Machine {
        Machine {
            kv: KvStore::new(config),
            sessions: HashMap::new(),
            by_index: BTreeMap::new(),
            applied_index: 0,
        }
    }

    /// The store.
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// The last position applied.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Applies the committed position `c` and returns the answer for the
    /// client that sent it (`None` for a no-op, or a request older than the
    /// client's latest).
    ///
    /// # Panics
    /// If `c.index` is not the next position.
    pub fn apply(&mut self, c: &Committed) -> Option<Bytes> {
        assert_eq!(
            c.index,
            self.applied_index + 1,
            "positions are applied in order, exactly once (applied {})",
            self.applied_index
        );
        self.applied_index = c.index;
        let cmd = c.command.as_ref()?;
        if let Some(s) = self.sessions.get(&cmd.client) {
            if cmd.seq == s.seq {
                return Some(s.response.clone());
            }
            if cmd.seq < s.seq {
                return None;
            }
        }
        // At the agreed time when the protocol emitted one (PBFT).
        let response = self.kv.apply_at(c.index, &cmd.op, c.time);
        let session = Session { seq: cmd.seq, index: c.index, response: response.clone() };
        if let Some(old) = self.sessions.insert(cmd.client, session) {
            self.by_index.remove(&old.index);
        }
        self.by_index.insert(c.index, cmd.client);
        while self.sessions.len() > MAX_SESSIONS {
            let (_, evicted) = self.by_index.pop_first().expect("sessions and index agree");
            self.sessions.remove(&evicted);
        }
        Some(response)
    }

    /// Serves an encoded [`synod_kv::KvQuery`] against the current state.
    pub fn query(&self, op: &[u8]) -> Bytes {
        StateMachine::query(&self.kv, op)
    }

    /// The whole state as bytes (see the module doc), in memory (tests;
    /// the node streams it with [`Machine::write_snapshot`]).
    pub fn snapshot(&self) -> Bytes {
        let mut out = Vec::new();
        self.write_snapshot(&mut out).expect("writing to memory cannot fail");
        Bytes::from(out)
    }

    /// Writes the bytes of [`Machine::snapshot`] to `w` in bounded pieces
    /// (the session table, then the store's chunks) and returns how many.
    pub fn write_snapshot<W: io::Write + ?Sized>(&self, w: &mut W) -> io::Result<u64> {
        let mut head = Writer::with(MAGIC.to_vec());
        head.u64(self.applied_index);
        head.u32(self.by_index.len() as u32);
        for (index, client) in &self.by_index {
            let s = &self.sessions[client];
            head.u64(client.0).u64(s.seq).u64(*index).bytes(&s.response);
        }
        let head = head.finish();
        w.write_all(&head)?;
        Ok(head.len() as u64 + self.kv.write_snapshot(w)?)
    }

    /// Rebuilds a machine from [`Machine::snapshot`] bytes.
    pub fn restore(config: KvConfig, bytes: &Bytes) -> Result<Machine, NodeError> {
        Machine::read_snapshot(config, &bytes[..], bytes.len() as u64)
    }

    /// [`Machine::restore`] from the next `len` bytes of `r`, read in
    /// pieces; every key, value and cached answer gets an allocation of its
    /// own (nothing pins the snapshot's bytes).
    pub fn read_snapshot<R: Read>(config: KvConfig, r: R, len: u64) -> Result<Machine, NodeError> {
        let mut r = io::BufReader::with_capacity(64 << 10, r);
        let mut head = Head { r: &mut r, left: len };
        let mut magic = [0u8; MAGIC.len()];
        head.fill(&mut magic)
            .map_err(|_| NodeError::Corrupt("snapshot: not a Synod state snapshot".into()))?;
        if &magic != MAGIC {
            return Err(NodeError::Corrupt("snapshot: not a Synod state snapshot".into()));
        }
        let applied_index = head.u64()?;
        let count = head.u32()?;
        let mut m = Machine::new(config.clone());
        m.applied_index = applied_index;
        for _ in 0..count {
            let client = ClientId(head.u64()?);
            let session = Session { seq: head.u64()?, index: head.u64()?, response: head.bytes()? };
            if session.index > applied_index || m.by_index.insert(session.index, client).is_some() {
                return Err(NodeError::Corrupt("snapshot: inconsistent session table".into()));
            }
            if m.sessions.insert(client, session).is_some() {
                return Err(NodeError::Corrupt("snapshot: a client listed twice".into()));
            }
        }
        let left = head.left;
        m.kv = KvStore::read_snapshot(config, &mut r, left)
            .map_err(|e| NodeError::Corrupt(format!("snapshot: {e}")))?;
        Ok(m)
    }
}

/// The session table at the head of a snapshot stream, `left` bytes to go.
struct Head<'a, R: Read> {
    r: &'a mut R,
    left: u64,
}

impl<R: Read> Head<'_, R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), NodeError> {
        if buf.len() as u64 > self.left {
            return Err(NodeError::Corrupt("snapshot: truncated session table".into()));
        }
        self.r
            .read_exact(buf)
            .map_err(|e| NodeError::Corrupt(format!("snapshot: reading the session table: {e}")))?;
        self.left -= buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, NodeError> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, NodeError> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn bytes(&mut self) -> Result<Bytes, NodeError> {
        let len = u64::from(self.u32()?);
        if len > self.left {
            return Err(NodeError::Corrupt("snapshot: truncated session table".into()));
        }
        let mut v = vec![0u8; len as usize];
        self.fill(&mut v)?;
        Ok(Bytes::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::Command;
    use synod_kv::{KvCommand, KvResponse, PutRequest, decode_result};

    fn put(client: u64, seq: u64, index: u64, key: &str) -> Committed {
        let op = KvCommand::Put(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
            ..PutRequest::default()
        })
        .encode();
        Committed { index, command: Some(Command::new(ClientId(client), seq, op)), time: None }
    }

    fn revision(answer: &Bytes) -> i64 {
        match decode_result(answer).expect("decodes") {
            Ok(KvResponse::Put(p)) => p.header.revision,
            other => panic!("not a put answer: {other:?}"),
        }
    }

    #[test]
    fn a_retried_request_is_applied_once() {
        let mut m = Machine::new(KvConfig::default());
        let first = m.apply(&put(1, 1, 1, "a")).expect("answer");
        assert_eq!(m.apply(&Committed { index: 2, command: None, time: None }), None);
        let retry = m.apply(&put(1, 1, 3, "a")).expect("answer");
        assert_eq!(revision(&first), revision(&retry));
        assert_eq!(m.kv().current_revision(), 2, "one put applied");
        assert_eq!(m.apply(&put(1, 0, 4, "b")), None, "older than the latest: ignored");
        assert_eq!(m.applied_index(), 4);
    }

    #[test]
    fn a_snapshot_restores_the_store_and_the_sessions() {
        let mut m = Machine::new(KvConfig::default());
        m.apply(&put(1, 1, 1, "a"));
        m.apply(&put(2, 5, 2, "b"));
        let snap = m.snapshot();
        let mut r = Machine::restore(KvConfig::default(), &snap).expect("restore");
        assert_eq!(r.applied_index(), 2);
        assert_eq!(r.snapshot(), snap, "snapshots are deterministic");
        let retry = r.apply(&put(2, 5, 3, "b")).expect("cached");
        assert_eq!(revision(&retry), 3, "the cached answer, not a new revision");
        assert_eq!(r.kv().current_revision(), 3);
    }

    #[test]
    fn garbage_is_not_a_snapshot() {
        assert!(Machine::restore(KvConfig::default(), &Bytes::from_static(b"nope")).is_err());
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&[1, 2, 3]);
        assert!(Machine::restore(KvConfig::default(), &Bytes::from(bad)).is_err());
    }
}
