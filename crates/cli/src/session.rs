//! A client session as etcd's `concurrency.Session` keeps one: a lease that a
//! background task keeps alive while the command holds a lock or leads an
//! election, and that is revoked when the command ends (so what it held is
//! released at once rather than when the TTL runs out). If the process dies,
//! the lease simply expires and the cluster releases what it held.

use crate::client::{Failure, within};
use std::time::Duration;
use synod_etcdpb::etcdserverpb::lease_client::LeaseClient;
use synod_etcdpb::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest};
use tokio::sync::{mpsc, watch};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// A live lease kept alive in the background.
pub struct Session {
    /// The lease id.
    pub lease_id: i64,
    channel: Channel,
    timeout: Duration,
    keeper: tokio::task::JoinHandle<()>,
    /// Becomes `true` when the lease is known to be lost (expired, revoked,
    /// or the keep-alive stream broke).
    pub lost: watch::Receiver<bool>,
}

impl Session {
    /// Grants a lease of `ttl_s` seconds and starts keeping it alive.
    pub async fn start(channel: Channel, ttl_s: i64, timeout: Duration) -> Result<Self, Failure> {
        let grant = within(
            timeout,
            LeaseClient::new(channel.clone()).lease_grant(LeaseGrantRequest { ttl: ttl_s, id: 0 }),
        )
        .await?;
        let (lost_tx, lost) = watch::channel(false);
        let keeper = tokio::spawn(keep_alive(channel.clone(), grant.id, grant.ttl, lost_tx));
        Ok(Session { lease_id: grant.id, channel, timeout, keeper, lost })
    }

    /// Stops the keep-alive and revokes the lease (best effort: if the
    /// cluster cannot be reached the lease expires by itself).
    pub async fn close(self) {
        self.keeper.abort();
        let _ = within(
            self.timeout,
            LeaseClient::new(self.channel).lease_revoke(LeaseRevokeRequest { id: self.lease_id }),
        )
        .await;
    }
}

/// Renews `id` every third of its TTL; sets `lost` when it cannot.
async fn keep_alive(channel: Channel, id: i64, ttl_s: i64, lost: watch::Sender<bool>) {
    let every = Duration::from_millis((ttl_s.max(1) as u64 * 1000 / 3).max(500));
    let (tx, rx) = mpsc::channel(4);
    let Ok(replies) = LeaseClient::new(channel).lease_keep_alive(ReceiverStream::new(rx)).await
    else {
        let _ = lost.send(true);
        return;
    };
    let mut replies = replies.into_inner();
    loop {
        tokio::time::sleep(every).await;
        if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
            break;
        }
        match replies.message().await {
            Ok(Some(r)) if r.ttl > 0 => {}
            _ => break,
        }
    }
    let _ = lost.send(true);
}
