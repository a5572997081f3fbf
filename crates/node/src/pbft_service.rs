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
//! puts, deletes, txns, compactions, the ordered history reads a client's
//! watch polls with (`KvCommand::Events`), and the lease requests: grant,
//! keep-alive, revoke, an ordered time-to-live and an ordered lease list.
//! A lease command's `now`
//! is whatever the client wrote: the state machine ignores it on PBFT and
//! applies the command at its batch's agreed time (the primary's timestamp,
//! which correct backups checked against their clocks, see
//! `synod_pbft::node`), so every replica answers the same and a client
//! cannot choose a lease's deadline. Expiries (`LeaseExpire`) and
//! `LeasePromote` are the primary's to propose and are refused here; they
//! too execute at the agreed time.
//!
//! **Fault injection.** With the environment variable
//! [`FAULT_WRONG_REPLIES`] set to `1` at start, this replica lies on this
//! path: it answers every request with a result it made up (a read's or an
//! events batch's values replaced, a lease answer's id and TTLs changed,
//! a lease list given a lease that does not exist, any other answer turned
//! into an error), validly signed — what a Byzantine replica could do. It
//! also lists a member that does not exist in its etcd `MemberList`
//! answers, and that lease in its etcd `LeaseLeases` answers. It is logged loudly at start; tests
//! use it to show that the client outvotes one lying replica.

use crate::driver::{ClientError, ClientRequest, NodeStatus};
use crate::pbft_refusal::{Refusal, client_error_status};
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

/// Seconds a lying replica adds to the TTLs it reports (fault injection).
pub const FORGED_TTL_SECS: i64 = 1000;

/// The lease a lying replica adds to every lease list it answers, on this
/// path and on the etcd `Lease.LeaseLeases` (fault injection).
pub const FORGED_LEASE_ID: i64 = 0xbad;

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
            Ok(Ok(KvResponse::Events(mut e))) => {
                for event in &mut e.events {
                    event.kv.value = Bytes::from(format!("forged by replica {}", self.node_id.0));
                }
                encode_result(&Ok(KvResponse::Events(e)))
            }
            Ok(Ok(KvResponse::LeaseGrant(mut g))) => {
                g.id += 1;
                g.ttl += FORGED_TTL_SECS;
                encode_result(&Ok(KvResponse::LeaseGrant(g)))
            }
            Ok(Ok(KvResponse::LeaseKeepAlive(mut k))) => {
                k.ttl += FORGED_TTL_SECS;
                encode_result(&Ok(KvResponse::LeaseKeepAlive(k)))
            }
            Ok(Ok(KvResponse::LeaseTimeToLive(mut t))) => {
                t.ttl += FORGED_TTL_SECS;
                t.granted_ttl += FORGED_TTL_SECS;
                encode_result(&Ok(KvResponse::LeaseTimeToLive(t)))
            }
            Ok(Ok(KvResponse::LeaseLeases(mut l))) => {
                l.leases.push(synod_kv::LeaseStatus { id: FORGED_LEASE_ID });
                encode_result(&Ok(KvResponse::LeaseLeases(l)))
            }
            _ => encode_result(&Err(KvError::Malformed(format!(
                "forged by replica {}",
                self.node_id.0
            )))),
        }
    }
}

#[tonic::async_trait]
impl Pbft for PbftService {
    async fn submit(&self, req: Request<SubmitRequest>) -> Result<Response<SubmitReply>, Status> {
        let r = req.into_inner();
        if r.op.len() < SIGNATURE_BYTES {
            return Err(Refusal::Malformed.status("synod: not a signed request"));
        }
        if r.op.len() - SIGNATURE_BYTES > self.max_request_bytes {
            return Err(Refusal::TooLarge.status("etcdserver: request is too large"));
        }
        match KvCommand::decode(&r.op[SIGNATURE_BYTES..]) {
            Ok(
                KvCommand::Range(_)
                | KvCommand::Put(_)
                | KvCommand::DeleteRange(_)
                | KvCommand::Txn(_)
                | KvCommand::Compact(_)
                | KvCommand::Events { .. }
                | KvCommand::LeaseGrant { .. }
                | KvCommand::LeaseKeepAlive { .. }
                | KvCommand::LeaseRevoke(_)
                | KvCommand::LeaseTimeToLive { .. }
                | KvCommand::LeaseLeases(_),
            ) => {}
            Ok(KvCommand::LeaseExpire { .. } | KvCommand::LeasePromote { .. }) => {
                return Err(Refusal::PrimaryOnly.status(
                    "synod: lease expiry and promotion are the primary's, not a client's",
                ));
            }
            Err(e) => return Err(Refusal::Malformed.status(format!("synod: {}", e.message()))),
        }
        let command = Command { client: ClientId(r.client), seq: r.seq, op: Bytes::from(r.op) };
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(ClientRequest::Submit { command, reply: tx })
            .await
            .map_err(|_| client_error_status(ClientError::Stopped))?;
        let result = match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(Ok(result))) => result,
            Ok(Ok(Err(e))) => return Err(client_error_status(e)),
            Ok(Err(_)) => return Err(client_error_status(ClientError::Stopped)),
            Err(_) => return Err(Refusal::TimedOut.status("etcdserver: request timed out")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pbft_keys::generate_with_clients;
    use crate::pbft_reply::Tally;
    use synod_core::Role;
    use synod_kv::{PutRequest, RangeRequest};

    struct Fixture {
        service: PbftService,
        client: crate::pbft_keys::ClientIdentity,
        _status: watch::Sender<NodeStatus>,
    }

    /// Replica 2's service over a fake driver that answers every submitted
    /// request with `b"result of <seq>"` encoded as a range of one key.
    fn fixture(lie: bool) -> Fixture {
        let ids: Vec<NodeId> = (1..=4).map(NodeId).collect();
        let (replicas, clients) = generate_with_clients(&[1, 2, 3, 4], 1);
        let keys = replicas[1].keys(NodeId(2), &ids).expect("keys");
        let (requests, mut rx) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                if let ClientRequest::Submit { command, reply } = r {
                    // The driver's session refusals, by sequence number.
                    if let Some(e) = match command.seq {
                        STALE_SEQ => Some(ClientError::Stale),
                        SUPERSEDED_SEQ => Some(ClientError::Superseded),
                        _ => None,
                    } {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                    let response = synod_kv::RangeResponse {
                        kvs: vec![synod_kv::KeyValue {
                            key: Bytes::from_static(b"k"),
                            value: Bytes::from(format!("result of {}", command.seq)),
                            ..Default::default()
                        }],
                        ..Default::default()
                    };
                    let _ = reply.send(Ok(encode_result(&Ok(KvResponse::Range(response)))));
                }
            }
        });
        let status = NodeStatus {
            id: NodeId(2),
            role: Role::Follower,
            term: 5,
            leader: Some(NodeId(2)),
            commit_index: 0,
            applied_index: 0,
            last_index: 0,
            revision: 1,
            snapshot_index: 0,
        };
        let (status_tx, status_rx) = watch::channel(status);
        let mut service = PbftService::new(
            NodeId(2),
            keys.keyring,
            requests,
            status_rx,
            Duration::from_secs(5),
            1 << 20,
        );
        service.lie = lie;
        Fixture { service, client: clients[0].keys().expect("client"), _status: status_tx }
    }

    /// Sequence numbers the fixture's driver refuses as stale, superseded.
    const STALE_SEQ: u64 = 666;
    const SUPERSEDED_SEQ: u64 = 667;

    /// Session refusals reach the client typed, with the codes and
    /// messages they always had.
    #[tokio::test]
    async fn stale_and_superseded_requests_are_refused_with_their_kinds() {
        let f = fixture(false);
        for (seq, kind, message) in [
            (STALE_SEQ, Refusal::Stale, "synod: stale request"),
            (SUPERSEDED_SEQ, Refusal::Superseded, "synod: superseded"),
        ] {
            let err = f.service.submit(request(&f, seq, &range())).await.expect_err("refused");
            assert_eq!(
                (Refusal::of(&err), err.code(), err.message()),
                (kind, kind.code(), message)
            );
            assert!(kind.is_outdated() && kind.is_final());
        }
        f.service.submit(request(&f, 1, &range())).await.expect("answered");
    }

    fn request(f: &Fixture, seq: u64, command: &KvCommand) -> Request<SubmitRequest> {
        let op =
            synod_pbft::request::seal(&f.client.signing, f.client.client, seq, &command.encode());
        Request::new(SubmitRequest { client: f.client.client.0, seq, op: op.to_vec() })
    }

    fn range() -> KvCommand {
        KvCommand::Range(RangeRequest { key: Bytes::from_static(b"k"), ..Default::default() })
    }

    #[tokio::test]
    async fn a_submitted_request_is_answered_with_a_reply_the_client_verifies() {
        let f = fixture(false);
        let reply =
            f.service.submit(request(&f, 7, &range())).await.expect("answered").into_inner();
        assert_eq!((reply.view, reply.client, reply.seq, reply.replica), (5, 1, 7, 2));
        let mut tally = Tally::new(&f.client, 7);
        assert_eq!(tally.add(&reply), Ok(None), "verified, and one of f+1");
        assert_eq!(tally.dropped(), 0);
        let text = String::from_utf8_lossy(&reply.result).into_owned();
        assert!(text.contains("result of 7"), "{text}");
    }

    /// A client's lease grant, keep-alive, revoke and time-to-live are
    /// accepted (they execute at the agreed time); expiry and promotion
    /// stay the primary's.
    #[tokio::test]
    async fn expiry_and_promotion_and_unsigned_or_malformed_requests_are_refused() {
        use synod_kv::api::{
            LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
        };
        let f = fixture(false);
        let now = synod_core::Time(u64::MAX);
        for (seq, c) in
            [KvCommand::LeaseExpire { ids: vec![1], now }, KvCommand::LeasePromote { now }]
                .iter()
                .enumerate()
        {
            let err = f.service.submit(request(&f, seq as u64 + 1, c)).await.expect_err("refused");
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.message().contains("the primary's"), "{}", err.message());
            assert_eq!(Refusal::of(&err), Refusal::PrimaryOnly);
        }
        for (seq, c) in [
            KvCommand::LeaseGrant { request: LeaseGrantRequest { ttl: 5, id: 9 }, now },
            KvCommand::LeaseKeepAlive { request: LeaseKeepAliveRequest { id: 9 }, now },
            KvCommand::LeaseTimeToLive {
                request: LeaseTimeToLiveRequest { id: 9, keys: true },
                now,
            },
            KvCommand::LeaseRevoke(LeaseRevokeRequest { id: 9 }),
            KvCommand::LeaseLeases(synod_kv::LeaseLeasesRequest {}),
        ]
        .iter()
        .enumerate()
        {
            f.service.submit(request(&f, seq as u64 + 10, c)).await.expect("accepted");
        }
        let err =
            f.service.submit(Request::new(SubmitRequest::default())).await.expect_err("empty");
        assert!(err.message().contains("not a signed request"), "{}", err.message());
        assert_eq!(Refusal::of(&err), Refusal::Malformed);
        let garbage = SubmitRequest { client: 1, seq: 1, op: vec![0xff; 80] };
        let err = f.service.submit(Request::new(garbage)).await.expect_err("malformed");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(Refusal::of(&err), Refusal::Malformed);
        let put = KvCommand::Put(PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![0u8; 2 << 20]),
            ..Default::default()
        });
        let err = f.service.submit(request(&f, 2, &put)).await.expect_err("too large");
        assert!(err.message().contains("too large"), "{}", err.message());
        assert_eq!(Refusal::of(&err), Refusal::TooLarge);
    }

    #[tokio::test]
    async fn a_lying_replica_signs_a_made_up_result() {
        let f = fixture(true);
        let reply =
            f.service.submit(request(&f, 7, &range())).await.expect("answered").into_inner();
        let text = String::from_utf8_lossy(&reply.result).into_owned();
        assert!(text.contains("forged by replica 2") && !text.contains("result of"), "{text}");
        let mut tally = Tally::new(&f.client, 7);
        assert_eq!(tally.add(&reply), Ok(None), "validly signed: only f+1 matching expose it");
    }
}
