//! etcd's `Maintenance` service on a node: Status, Alarm, HashKV / Hash,
//! Snapshot, Defragment and MoveLeader.
//!
//! - **Status**, **Alarm**: this member's view (no alarms are ever raised:
//!   Synod has no space quota).
//! - **HashKV** hashes this member's copy of the history up to a revision
//!   ([`synod_kv::KvStore::hash_kv`]): every member that applied that
//!   revision answers the same hash (with the same `compact_revision`), which
//!   is what etcd's corruption check compares. A member that has not applied
//!   the revision yet answers etcd's future-revision error; one below the
//!   compaction point etcd's compacted error. The number is not etcd's
//!   (etcd hashes its bbolt encoding). **Hash** (deprecated in etcd) is HashKV
//!   at the current revision.
//! - **Snapshot** streams this member's store as etcd streams its database
//!   (from a point-in-time copy the driver hands over, encoded on a blocking
//!   thread a chunk at a time: never whole in memory, a few chunks ahead of
//!   the client at most, stopped when the client goes away):
//!   32 KiB blobs with `remaining_bytes` counting down to 0, then one last
//!   message whose blob is the SHA-256 of everything before it; the data is
//!   zero-padded to a multiple of 512 bytes, because etcdctl recognises the
//!   trailer by the length (`len % 512 == 32`). So `etcdctl snapshot save`
//!   writes a file; but the file holds Synod's store snapshot
//!   ([`synod_kv::KvStore::snapshot`], then the padding), not a bbolt
//!   database, so `etcdctl snapshot status` / `restore` cannot read it.
//! - **Defragment** succeeds and does nothing: the store is in memory and
//!   its snapshots are rewritten whole, so there is no free space to reclaim
//!   (etcd defragments bbolt's file).
//! - **MoveLeader** asks the driver to hand leadership to the target
//!   ([`ClientRequest::TransferLeader`]; Raft sends the caught-up target
//!   `TimeoutNow`) and answers once this member knows the target as the
//!   leader, as etcd does. Like etcd it is served only by the leader (no
//!   forwarding). Errors are etcd's:
//!
//!   | condition | code | message |
//!   |---|---|---|
//!   | this member does not lead | FailedPrecondition | `etcdserver: not leader` |
//!   | target not a voter (unknown, learner) | FailedPrecondition | `etcdserver: bad leader transferee` |
//!   | target not leading in time | Unknown | `etcdserver: request timed out, leader transfer took too long` |
//!   | a protocol without leadership transfer | Unimplemented | `synod: <protocol> cannot transfer leadership` |
//!
//!   To the current leader itself it succeeds at once.

use crate::driver::{ClientRequest, TransferError};
use crate::service::{ETCD_VERSION, Service, unexpected};
use sha2::{Digest, Sha256};
use synod_core::NodeId;
use synod_etcdpb::etcdserverpb as pb;
use synod_etcdpb::etcdserverpb::maintenance_server::Maintenance;
use synod_kv::{KvQuery, KvResponse};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

/// Bytes per Snapshot message (etcd's `snapshotSendBufferSize`).
pub const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;

/// The snapshot data is padded with zeros to a multiple of this, because
/// etcdctl finds the SHA-256 trailer by the file's length: `len % 512 == 32`
/// (bbolt files are whole pages).
pub const SNAPSHOT_ALIGN_BYTES: usize = 512;

/// etcd's status for a failed leadership transfer (see the module doc).
pub fn transfer_status(e: &TransferError) -> Status {
    match e {
        TransferError::NotLeader { .. } => Status::failed_precondition(e.to_string()),
        TransferError::BadTransferee => Status::failed_precondition(e.to_string()),
        // etcd's togRPCError has no mapping for ErrTimeoutLeaderTransfer.
        TransferError::TimedOut => Status::unknown(e.to_string()),
        TransferError::Unsupported(_) => Status::unimplemented(format!("synod: {e}")),
        TransferError::Stopped => Status::unavailable(e.to_string()),
    }
}

/// Snapshot messages encoded ahead of the client (bounds the memory a slow
/// client can hold up to this many [`SNAPSHOT_CHUNK_BYTES`] blobs).
const SNAPSHOT_MESSAGES_AHEAD: usize = 4;

/// Counts the bytes written to it.
#[derive(Default)]
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Cuts what is written to it into Snapshot messages of
/// [`SNAPSHOT_CHUNK_BYTES`], each with the bytes still to come after it
/// (counting down from `total`, the padded size), and hands them to `emit`;
/// [`finish`](Self::finish) pads the data with zeros to a multiple of
/// [`SNAPSHOT_ALIGN_BYTES`] and ends with the SHA-256 of all of it (etcd's
/// integrity trailer, `remaining_bytes` 0). An error from `emit` (the
/// client went away) stops the writing.
struct SnapshotCutter<F: FnMut(pb::SnapshotResponse) -> std::io::Result<()>> {
    emit: F,
    header: pb::ResponseHeader,
    total: u64,
    written: u64,
    chunk: Vec<u8>,
    hash: Sha256,
}

impl<F: FnMut(pb::SnapshotResponse) -> std::io::Result<()>> SnapshotCutter<F> {
    /// A cutter for `unpadded` bytes of data.
    fn new(unpadded: u64, header: pb::ResponseHeader, emit: F) -> Self {
        let align = SNAPSHOT_ALIGN_BYTES as u64;
        SnapshotCutter {
            emit,
            header,
            total: unpadded.div_ceil(align) * align,
            written: 0,
            chunk: Vec::with_capacity(SNAPSHOT_CHUNK_BYTES),
            hash: Sha256::new(),
        }
    }

    fn message(&self, blob: Vec<u8>, remaining_bytes: u64) -> pb::SnapshotResponse {
        pb::SnapshotResponse {
            header: Some(self.header),
            remaining_bytes,
            blob,
            version: ETCD_VERSION.to_string(),
        }
    }

    fn emit_chunk(&mut self) -> std::io::Result<()> {
        let blob = std::mem::replace(&mut self.chunk, Vec::with_capacity(SNAPSHOT_CHUNK_BYTES));
        self.hash.update(&blob);
        let m = self.message(blob, self.total.saturating_sub(self.written));
        (self.emit)(m)
    }

    /// Pads, emits what is left and the trailer.
    fn finish(mut self) -> std::io::Result<()> {
        let rem = (self.written % SNAPSHOT_ALIGN_BYTES as u64) as usize;
        if rem != 0 {
            std::io::Write::write_all(&mut self, &[0; SNAPSHOT_ALIGN_BYTES][rem..])?;
        }
        if !self.chunk.is_empty() {
            self.emit_chunk()?;
        }
        let digest = std::mem::take(&mut self.hash).finalize().to_vec();
        let trailer = self.message(digest, 0);
        (self.emit)(trailer)
    }
}

impl<F: FnMut(pb::SnapshotResponse) -> std::io::Result<()>> std::io::Write for SnapshotCutter<F> {
    fn write(&mut self, mut buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let take = (SNAPSHOT_CHUNK_BYTES - self.chunk.len()).min(buf.len());
            self.chunk.extend_from_slice(&buf[..take]);
            self.written += take as u64;
            buf = &buf[take..];
            if self.chunk.len() == SNAPSHOT_CHUNK_BYTES {
                self.emit_chunk()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streams `store`'s snapshot as Snapshot messages into `tx` (on a blocking
/// thread: it encodes the store twice, once to learn the size that
/// `remaining_bytes` counts down from, never holding more than a chunk).
fn stream_snapshot(
    store: &synod_kv::KvStore,
    header: pb::ResponseHeader,
    tx: mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
) -> std::io::Result<()> {
    let mut counter = Counter::default();
    store.write_snapshot(&mut counter)?;
    let mut cutter = SnapshotCutter::new(counter.0, header, |m| {
        tx.blocking_send(Ok(m))
            .map_err(|_| std::io::Error::other("the snapshot's client went away"))
    });
    store.write_snapshot(&mut cutter)?;
    cutter.finish()
}

/// The Snapshot stream's messages for `bytes` held in memory (what
/// [`stream_snapshot`] sends for a store whose snapshot is `bytes`).
#[cfg(test)]
fn snapshot_messages(
    bytes: bytes::Bytes,
    header: pb::ResponseHeader,
) -> impl Iterator<Item = pb::SnapshotResponse> {
    let mut messages = Vec::new();
    let mut cutter = SnapshotCutter::new(bytes.len() as u64, header, |m| {
        messages.push(m);
        Ok(())
    });
    std::io::Write::write_all(&mut cutter, &bytes).expect("into memory");
    cutter.finish().expect("into memory");
    messages.into_iter()
}

impl Service {
    async fn hash_kv_local(&self, revision: i64) -> Result<synod_kv::HashKvResponse, Status> {
        match self.serializable(KvQuery::HashKv { revision }).await {
            Ok((KvResponse::HashKv(h), _)) => Ok(h),
            Ok(_) => Err(unexpected("hash_kv")),
            Err(s) => Err(s),
        }
    }
}

#[tonic::async_trait]
impl Maintenance for Service {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let st = *self.inner().status.borrow();
        let header = self.stamp().header(st.revision);
        Ok(Response::new(pb::StatusResponse {
            header: Some(header),
            version: ETCD_VERSION.to_string(),
            leader: st.leader.map_or(0, |l| l.0),
            raft_index: st.commit_index,
            raft_term: st.term,
            raft_applied_index: st.applied_index,
            storage_version: ETCD_VERSION.to_string(),
            ..pb::StatusResponse::default()
        }))
    }

    async fn alarm(
        &self,
        _request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let st = *self.inner().status.borrow();
        let header = self.stamp().header(st.revision);
        Ok(Response::new(pb::AlarmResponse { header: Some(header), alarms: Vec::new() }))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        let st = *self.inner().status.borrow();
        Ok(Response::new(pb::DefragmentResponse { header: Some(self.stamp().header(st.revision)) }))
    }

    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let h = self.hash_kv_local(0).await?;
        let header = self.stamp().header(h.header.revision);
        Ok(Response::new(pb::HashResponse { header: Some(header), hash: h.hash }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let h = self.hash_kv_local(request.into_inner().revision).await?;
        let header = self.stamp().header(h.header.revision);
        Ok(Response::new(pb::HashKvResponse {
            header: Some(header),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        }))
    }

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::SnapshotResponse>>, Status> {
        // A point-in-time copy from the driver, encoded and streamed from a
        // blocking thread: neither the driver nor memory holds the whole
        // snapshot.
        let (reply, copy) = oneshot::channel();
        let stopped = || Status::unavailable("etcdserver: server stopped");
        let request = ClientRequest::CopyStore { reply };
        self.inner().requests.send(request).await.map_err(|_| stopped())?;
        let store = match tokio::time::timeout(self.inner().config.request_timeout, copy).await {
            Ok(Ok(store)) => store,
            Ok(Err(_)) => return Err(stopped()),
            Err(_) => return Err(Status::unavailable("etcdserver: request timed out")),
        };
        let header = self.stamp().header(store.current_revision());
        let (tx, rx) = mpsc::channel(SNAPSHOT_MESSAGES_AHEAD);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = stream_snapshot(&store, header, tx) {
                tracing::debug!(error = %e, "snapshot stream stopped");
            }
        });
        Ok(Response::new(Box::pin(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let to = NodeId(request.into_inner().target_id);
        let (reply, rx) = oneshot::channel();
        let stopped = || transfer_status(&TransferError::Stopped);
        let request = ClientRequest::TransferLeader { to, reply };
        self.inner().requests.send(request).await.map_err(|_| stopped())?;
        // The driver answers within its own bound; this one only guards
        // against a driver that stopped answering.
        let timeout = self.inner().config.request_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(transfer_status(&e)),
            Ok(Err(_)) => return Err(stopped()),
            Err(_) => return Err(transfer_status(&TransferError::TimedOut)),
        }
        let st = *self.inner().status.borrow();
        Ok(Response::new(pb::MoveLeaderResponse { header: Some(self.stamp().header(st.revision)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_kv::{KvCommand, KvConfig, KvStore, PutRequest};

    fn store(keys: usize) -> KvStore {
        let mut s = KvStore::new(KvConfig::default());
        for i in 0..keys {
            let op = KvCommand::Put(PutRequest {
                key: bytes::Bytes::from(format!("key{i:06}")),
                value: bytes::Bytes::from(vec![i as u8; 300]),
                ..PutRequest::default()
            })
            .encode();
            synod_core::StateMachine::apply(&mut s, i as u64 + 1, &op);
        }
        s
    }

    #[test]
    fn the_streamed_snapshot_is_the_whole_one_cut_the_same_way() {
        for keys in [0, 1, 500] {
            let s = store(keys);
            let whole: Vec<_> = snapshot_messages(s.snapshot(), header()).collect();
            let (tx, mut rx) = mpsc::channel(SNAPSHOT_MESSAGES_AHEAD);
            let writer = std::thread::spawn(move || stream_snapshot(&s, header(), tx));
            let mut streamed = Vec::new();
            while let Some(m) = rx.blocking_recv() {
                streamed.push(m.expect("a message"));
            }
            writer.join().expect("thread").expect("streamed");
            assert_eq!(streamed, whole, "{keys} keys");
            assert!(whole.len() > 2 || keys < 500, "500 keys take several chunks");
        }
    }

    #[test]
    fn a_client_that_goes_away_stops_the_encoding() {
        let s = store(500);
        let (tx, mut rx) = mpsc::channel(1);
        let writer = std::thread::spawn(move || stream_snapshot(&s, header(), tx));
        let first = rx.blocking_recv().expect("a first message").expect("data");
        assert_eq!(first.blob.len(), SNAPSHOT_CHUNK_BYTES);
        drop(rx);
        let stopped = writer.join().expect("thread");
        assert!(stopped.is_err(), "the encoder notices the closed stream");
    }

    #[test]
    fn transfer_errors_are_etcds() {
        let cases = [
            (TransferError::NotLeader { leader: None }, tonic::Code::FailedPrecondition),
            (TransferError::BadTransferee, tonic::Code::FailedPrecondition),
            (TransferError::TimedOut, tonic::Code::Unknown),
            (TransferError::Unsupported("pbft"), tonic::Code::Unimplemented),
            (TransferError::Stopped, tonic::Code::Unavailable),
        ];
        let got: Vec<_> = cases
            .iter()
            .map(|(e, _)| transfer_status(e))
            .map(|s| (s.code(), s.message().to_string()))
            .collect();
        let want: Vec<_> = cases
            .iter()
            .map(|(_, c)| *c)
            .zip([
                "etcdserver: not leader",
                "etcdserver: bad leader transferee",
                "etcdserver: request timed out, leader transfer took too long",
                "synod: pbft cannot transfer leadership",
                "etcdserver: server stopped",
            ])
            .map(|(c, m)| (c, m.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    fn header() -> pb::ResponseHeader {
        pb::ResponseHeader { cluster_id: 1, member_id: 2, revision: 3, raft_term: 4 }
    }

    #[test]
    fn snapshot_messages_count_down_and_end_with_the_sha256() {
        let data: Vec<u8> = (0..(2 * SNAPSHOT_CHUNK_BYTES + 512)).map(|i| i as u8).collect();
        let msgs: Vec<_> = snapshot_messages(bytes::Bytes::from(data.clone()), header()).collect();
        assert_eq!(msgs.len(), 4, "three data blobs and the digest");
        let remaining: Vec<u64> = msgs.iter().map(|m| m.remaining_bytes).collect();
        assert_eq!(remaining, [SNAPSHOT_CHUNK_BYTES as u64 + 512, 512, 0, 0]);
        let joined: Vec<u8> = msgs[..3].iter().flat_map(|m| m.blob.clone()).collect();
        assert_eq!(joined, data, "already aligned: no padding");
        assert_eq!(msgs[3].blob, Sha256::digest(&data).to_vec());
        assert!(msgs.iter().all(|m| m.header == Some(header())));
    }

    #[test]
    fn the_data_is_zero_padded_so_etcdctl_finds_the_trailer_by_length() {
        let data = b"SYNODKV1 and some more".to_vec();
        let msgs: Vec<_> = snapshot_messages(bytes::Bytes::from(data.clone()), header()).collect();
        let joined: Vec<u8> = msgs.iter().flat_map(|m| m.blob.clone()).collect();
        assert_eq!(joined.len() % 512, 32, "etcdctl's hasChecksum(len)");
        let body = &joined[..joined.len() - 32];
        assert!(body.starts_with(&data) && body[data.len()..].iter().all(|b| *b == 0));
        assert_eq!(&joined[body.len()..], Sha256::digest(body).as_slice());
    }

    #[test]
    fn an_empty_snapshot_is_only_the_digest() {
        let msgs: Vec<_> = snapshot_messages(bytes::Bytes::new(), header()).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].blob, Sha256::digest(b"").to_vec());
    }
}
