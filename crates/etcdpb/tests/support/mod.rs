//! Test-only etcd KV server: the generated `Kv` trait over an in-memory
//! `BTreeMap`, served by tonic on 127.0.0.1:0. Just enough of etcd's semantics
//! (revisions, per-key create/mod revision and version, single keys, prefixes and
//! `"\0"` ranges, prev_kv) to prove the wire format with real clients.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use synod_etcdpb::etcdserverpb::kv_server::{Kv, KvServer};
use synod_etcdpb::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader,
};
use synod_etcdpb::mvccpb::KeyValue;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Cluster id the test server reports in every header.
pub const CLUSTER_ID: u64 = 0x5EED_C1A5;
/// Member id the test server reports in every header.
pub const MEMBER_ID: u64 = 0x0000_0001;
/// Raft term the test server reports in every header.
pub const RAFT_TERM: u64 = 3;

#[derive(Default)]
struct Store {
    /// Store revision: 1 when empty, +1 per write that changes something (as etcd).
    revision: i64,
    kvs: BTreeMap<Vec<u8>, KeyValue>,
}

/// The in-memory KV service.
pub struct MemKv {
    store: Mutex<Store>,
}

impl MemKv {
    fn new() -> Self {
        MemKv { store: Mutex::new(Store { revision: 1, kvs: BTreeMap::new() }) }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Store>, Status> {
        self.store.lock().map_err(|_| Status::internal("store lock poisoned"))
    }
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: CLUSTER_ID,
        member_id: MEMBER_ID,
        revision,
        raft_term: RAFT_TERM,
    })
}

/// Keys of `[key, range_end)` with etcd's conventions: empty range_end is the
/// single key, `"\0"` is every key >= key.
fn keys_in_range(kvs: &BTreeMap<Vec<u8>, KeyValue>, key: &[u8], range_end: &[u8]) -> Vec<Vec<u8>> {
    if range_end.is_empty() {
        return kvs.contains_key(key).then(|| key.to_vec()).into_iter().collect();
    }
    kvs.keys()
        .filter(|k| k.as_slice() >= key && (range_end == [0] || k.as_slice() < range_end))
        .cloned()
        .collect()
}

fn require_key(key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument("etcdserver: key is not provided"));
    }
    Ok(())
}

#[tonic::async_trait]
impl Kv for MemKv {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let request = request.into_inner();
        require_key(&request.key)?;
        let store = self.lock()?;
        let keys = keys_in_range(&store.kvs, &request.key, &request.range_end);
        let count = keys.len();
        let limit = usize::try_from(request.limit).unwrap_or(0);
        let take = if limit == 0 { count } else { limit.min(count) };
        let kvs = if request.count_only {
            Vec::new()
        } else {
            keys[..take]
                .iter()
                .filter_map(|k| store.kvs.get(k).cloned())
                .map(|mut kv| {
                    if request.keys_only {
                        kv.value.clear();
                    }
                    kv
                })
                .collect()
        };
        Ok(Response::new(RangeResponse {
            header: header(store.revision),
            kvs,
            more: take < count,
            count: i64::try_from(count).map_err(|_| Status::internal("count overflows i64"))?,
        }))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let request = request.into_inner();
        require_key(&request.key)?;
        let mut store = self.lock()?;
        store.revision += 1;
        let revision = store.revision;
        let previous = store.kvs.get(&request.key).cloned();
        let kv = KeyValue {
            key: request.key.clone(),
            create_revision: previous.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            value: request.value,
            lease: request.lease,
        };
        store.kvs.insert(request.key, kv);
        Ok(Response::new(PutResponse {
            header: header(revision),
            prev_kv: if request.prev_kv { previous } else { None },
        }))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let request = request.into_inner();
        require_key(&request.key)?;
        let mut store = self.lock()?;
        let keys = keys_in_range(&store.kvs, &request.key, &request.range_end);
        if !keys.is_empty() {
            store.revision += 1;
        }
        let removed: Vec<KeyValue> = keys.iter().filter_map(|k| store.kvs.remove(k)).collect();
        Ok(Response::new(DeleteRangeResponse {
            header: header(store.revision),
            deleted: i64::try_from(removed.len())
                .map_err(|_| Status::internal("count overflows i64"))?,
            prev_kvs: if request.prev_kv { removed } else { Vec::new() },
        }))
    }
}

/// A running test server; dropping it stops the server.
pub struct TestServer {
    /// Where the server listens.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestServer {
    /// Starts the in-memory KV service on 127.0.0.1 at a port the OS picks.
    pub fn start() -> std::io::Result<Self> {
        let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = incoming.local_addr()?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(KvServer::new(MemKv::new()))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        Ok(TestServer { addr, shutdown: Some(shutdown), task })
    }

    /// Stops the server and reports whether it ran without error.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(format!("server failed: {e}")),
            Ok(Err(e)) => Err(format!("server task panicked: {e}")),
            Err(_) => Err("server did not stop within 10 s".to_string()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
