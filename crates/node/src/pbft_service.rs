//! `synodpb.Pbft`: the replica side of PBFT's client path, served by PBFT
//! nodes only (next to the etcd services on the client port).
//!
//! A client holding a PBFT client key ([`crate::pbft_keys::ClientKeyFile`])
//! signs its request itself and sends the same bytes to every replica.
//! Each replica hands it to the driver unchanged
//! ([`ClientRequest::Submit`]: no re-signing; the core checks the client's
//! signature and orders a request once, however many replicas propose it),
//! waits until it is applied, and answers with the result signed by its
//! replica key ([`crate::pbft_reply`]). The client accepts a result once
//! f+1 replicas sent the same one.
//!
//! Only what an etcd client may ask for is accepted on this path: ranges,
//! puts, deletes, txns and compactions. Lease commands carry the clock of
//! the node that proposes them and expiries are the primary's to decide,
//! so a client never sends one itself (they stay on the etcd `Lease` API).
//!
//! **Fault injection.** With the environment variable
//! [`FAULT_WRONG_REPLIES`] set to `1` at start, this replica lies on this
//! path: it answers every request with a result it made up (a read's
//! values replaced, any other answer turned into an error), validly signed
//! — what a Byzantine replica could do. It is logged loudly at start; tests
//! use it to show that the client outvotes one lying replica.

use crate::driver::{ClientError, ClientRequest, NodeStatus};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use synod_core::{ClientId, Command, NodeId};
use synod_etcdpb::synodpb::pbft_server::Pbft;
use synod_etcdpb::synodpb::{SubmitReply, SubmitRequest};
use synod_kv::{KvCommand, KvError, KvResponse, decode_result, encode_result};
use synod_pbft::Keyring;
use synod_pbft::request::SIGNATURE_BYTES;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::{Request, Response, Status};

/// The environment variable that makes a replica lie on the client path
/// (fault injection, see the module doc).
pub const FAULT_WRONG_REPLIES: &str = "SYNOD_FAULT_PBFT_WRONG_REPLIES";

/// The `synodpb.Pbft` service of one replica.
#[derive(Clone)]
pub struct PbftService {
    node_id: NodeId,
    keyring: Arc<Keyring>,
    requests: mpsc::Sender<ClientRequest>,
    status: watch::Receiver<NodeStatus>,
    request_timeout: Duration,
    max_request_bytes: usize,
    lie: bool,
}

impl PbftService {
    /// The service of replica `node_id`, signing with `keyring`, sending
    /// requests to the driver through `requests`; a request larger than
    /// `max_request_bytes` is refused, and one not executed within
    /// `request_timeout` is answered `DeadlineExceeded` (the client retries).
    pub fn new(
        node_id: NodeId,
        keyring: Arc<Keyring>,
        requests: mpsc::Sender<ClientRequest>,
        status: watch::Receiver<NodeStatus>,
        request_timeout: Duration,
        max_request_bytes: usize,
    ) -> PbftService {
        let lie = std::env::var(FAULT_WRONG_REPLIES).is_ok_and(|v| v == "1");
        if lie {
            tracing::error!(
                node = %node_id,
                "FAULT INJECTION ({FAULT_WRONG_REPLIES}=1): this replica answers PBFT clients \
                 with made-up results"
            );
        }
        PbftService { node_id, keyring, requests, status, request_timeout, max_request_bytes, lie }
    }

    /// A made-up result in place of `result` (fault injection).
    fn forge(&self, result: &Bytes) -> Bytes {
        match decode_result(result) {
            Ok(Ok(KvResponse::Range(mut r))) => {
                for kv in &mut r.kvs {
                    kv.value = Bytes::from(format!("forged by replica {}", self.node_id.0));
                }
                encode_result(&Ok(KvResponse::Range(r)))
            }
            _ => encode_result(&Err(KvError::Malformed(format!(
                "forged by replica {}",
                self.node_id.0
            )))),
        }
    }
}

fn status_of(e: ClientError) -> Status {
    match e {
        ClientError::Busy => Status::resource_exhausted(e.to_string()),
        ClientError::Stopped => Status::unavailable(e.to_string()),
        ClientError::NotLeader { .. } => Status::unavailable(e.to_string()),
        ClientError::Rejected(why) => Status::invalid_argument(format!("synod: {why}")),
    }
}

#[tonic::async_trait]
impl Pbft for PbftService {
    async fn submit(&self, req: Request<SubmitRequest>) -> Result<Response<SubmitReply>, Status> {
        let r = req.into_inner();
        if r.op.len() < SIGNATURE_BYTES {
            return Err(Status::invalid_argument("synod: not a signed request"));
        }
        if r.op.len() - SIGNATURE_BYTES > self.max_request_bytes {
            return Err(Status::invalid_argument("etcdserver: request is too large"));
        }
        match KvCommand::decode(&r.op[SIGNATURE_BYTES..]) {
            Ok(
                KvCommand::Range(_)
                | KvCommand::Put(_)
                | KvCommand::DeleteRange(_)
                | KvCommand::Txn(_)
                | KvCommand::Compact(_),
            ) => {}
            Ok(_) => {
                return Err(Status::invalid_argument(
                    "synod: only ranges, puts, deletes, txns and compactions are submitted by clients",
                ));
            }
            Err(e) => return Err(Status::invalid_argument(format!("synod: {}", e.message()))),
        }
        let command = Command { client: ClientId(r.client), seq: r.seq, op: Bytes::from(r.op) };
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(ClientRequest::Submit { command, reply: tx })
            .await
            .map_err(|_| status_of(ClientError::Stopped))?;
        let result = match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(Ok(result))) => result,
            Ok(Ok(Err(e))) => return Err(status_of(e)),
            Ok(Err(_)) => return Err(status_of(ClientError::Stopped)),
            Err(_) => return Err(Status::deadline_exceeded("etcdserver: request timed out")),
        };
        let result = if self.lie { self.forge(&result) } else { result };
        let reply = SubmitReply {
            view: self.status.borrow().term,
            client: r.client,
            seq: r.seq,
            replica: self.node_id.0,
            result: result.to_vec(),
            signature: Vec::new(),
        };
        Ok(Response::new(crate::pbft_reply::sign_reply(&self.keyring, reply)))
    }
}
