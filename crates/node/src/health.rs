//! The standard gRPC health service (`grpc.health.v1.Health`), which etcd
//! registers beside its own: `Check` and `Watch` for the server as a whole
//! (service `""`) or any of the etcd services a node serves.
//!
//! A member is `SERVING` while it knows a leader (it can then answer every
//! request, forwarding to the leader what needs one) and `NOT_SERVING`
//! otherwise; an unknown service name is gRPC's `NOT_FOUND` for `Check` and
//! `SERVICE_UNKNOWN` for `Watch`, as the health protocol specifies.

use crate::driver::NodeStatus;
use synod_etcdpb::health::health_check_response::ServingStatus;
use synod_etcdpb::health::health_server::Health;
use synod_etcdpb::health::{HealthCheckRequest, HealthCheckResponse};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// The service names `Check` knows, beside `""` (the whole server).
pub const SERVICES: [&str; 7] = [
    "etcdserverpb.KV",
    "etcdserverpb.Watch",
    "etcdserverpb.Lease",
    "etcdserverpb.Cluster",
    "etcdserverpb.Maintenance",
    "v3lockpb.Lock",
    "v3electionpb.Election",
];

/// The health service of one node, reading the driver's published status.
#[derive(Clone)]
pub struct HealthService {
    status: watch::Receiver<NodeStatus>,
}

impl HealthService {
    /// A health service following `status`.
    pub fn new(status: watch::Receiver<NodeStatus>) -> HealthService {
        HealthService { status }
    }
}

fn known(service: &str) -> bool {
    service.is_empty() || SERVICES.contains(&service)
}

/// `SERVING` iff a leader is known.
pub fn serving_status(status: &NodeStatus) -> ServingStatus {
    if status.leader.is_some() { ServingStatus::Serving } else { ServingStatus::NotServing }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        if !known(&request.get_ref().service) {
            return Err(Status::not_found("unknown service"));
        }
        let status = serving_status(&self.status.borrow());
        Ok(Response::new(HealthCheckResponse { status: status as i32 }))
    }

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<HealthCheckResponse>>, Status> {
        let known = known(&request.get_ref().service);
        let mut rx = self.status.clone();
        let stream = async_stream(move |tx| async move {
            let mut last = None;
            loop {
                let now = if known {
                    serving_status(&rx.borrow_and_update())
                } else {
                    ServingStatus::ServiceUnknown
                };
                if last != Some(now) {
                    last = Some(now);
                    let reply = HealthCheckResponse { status: now as i32 };
                    if tx.send(Ok(reply)).await.is_err() {
                        return; // the client went away
                    }
                }
                if rx.changed().await.is_err() {
                    let gone = HealthCheckResponse { status: ServingStatus::NotServing as i32 };
                    let _ = tx.send(Ok(gone)).await;
                    return; // the node stopped
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a task running `body` with the sending half of a
/// one-message channel (so a slow client holds back the task, not memory).
fn async_stream<F, Fut>(body: F) -> tonic::codegen::BoxStream<HealthCheckResponse>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<HealthCheckResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(body(tx));
    Box::pin(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx))
}
