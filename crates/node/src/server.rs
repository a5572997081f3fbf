//! [`serve`]: one node, wired together — the data directory, the peer
//! transport, the driver, the etcd gRPC services and the HTTP `/metrics` and
//! `/health` endpoint — running until a shutdown signal.
//!
//! Shutdown order: stop accepting client requests, let the driver finish its
//! round (everything acknowledged is already durable), then close the
//! transport.

use crate::config::NodeConfig;
use crate::disk::Disk;
use crate::driver::{Driver, DriverConfig, NodeStatus, REQUEST_QUEUE_LEN};
use crate::error::NodeError;
use crate::glue::NodeProtocol;
use crate::members::{Directory, MemberAddrs, Reconfigure};
use crate::metrics::Metrics;
use crate::service::{MemberInfo, Service, ServiceConfig};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use synod_core::NodeId;
use synod_etcdpb::etcdserverpb::cluster_server::ClusterServer;
use synod_etcdpb::etcdserverpb::kv_server::KvServer;
use synod_etcdpb::etcdserverpb::lease_server::LeaseServer;
use synod_etcdpb::etcdserverpb::maintenance_server::MaintenanceServer;
use synod_etcdpb::etcdserverpb::watch_server::WatchServer;
use synod_etcdpb::health::health_server::HealthServer;
use synod_etcdpb::synodpb::pbft_server::PbftServer;
use synod_etcdpb::v3electionpb::election_server::ElectionServer;
use synod_etcdpb::v3lockpb::lock_server::LockServer;
use synod_kv::KvConfig;
use synod_paxos::PaxosNode;
use synod_pbft::PbftNode;
use synod_raft::RaftNode;
use synod_transport::{Transport, TransportConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// The shortest cluster secret accepted.
pub const MIN_SECRET_BYTES: usize = 16;

/// Reads the cluster secret (surrounding whitespace trimmed).
pub fn read_secret(config: &NodeConfig) -> Result<Vec<u8>, NodeError> {
    let path = &config.secret_file;
    let bytes = std::fs::read(path).map_err(|e| {
        NodeError::Config(format!("secret_file: cannot read {}: {e}", path.display()))
    })?;
    let secret = bytes.trim_ascii().to_vec();
    if secret.len() < MIN_SECRET_BYTES {
        return Err(NodeError::Config(format!(
            "secret_file: {} holds {} bytes; at least {MIN_SECRET_BYTES} are needed",
            path.display(),
            secret.len()
        )));
    }
    Ok(secret)
}

/// Runs the node described by `config` until `shutdown` completes (or a
/// fatal error).
pub async fn serve(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    match config.protocol.as_str() {
        "raft" => serve_with::<RaftNode>(config, shutdown).await,
        "paxos" => serve_with::<PaxosNode>(config, shutdown).await,
        "pbft" => serve_with::<PbftNode>(config, shutdown).await,
        other => Err(NodeError::Config(format!("protocol: `{other}` cannot run on a node yet"))),
    }
}

/// [`serve`] for a given protocol.
pub async fn serve_with<P: NodeProtocol + Reconfigure>(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError>
where
    P::Message: Send,
    P::Write: Send,
    P::Config: Send + Sync,
{
    let secret = read_secret(&config)?;
    let me = config.me().clone();
    let node_id = NodeId(config.node_id);
    let (disk, saved) = Disk::open(&config.data_dir)?;
    let peers: Vec<(NodeId, SocketAddr)> = config
        .members
        .iter()
        .filter(|m| m.id != config.node_id)
        .map(|m| (NodeId(m.id), m.peer_addr))
        .collect();
    let transport_config =
        TransportConfig::new(node_id, config.cluster_name.clone(), secret, me.peer_addr, peers);
    let (transport, inbound) = Transport::start(transport_config)
        .await
        .map_err(|e| NodeError::Startup(format!("peer transport: {e}")))?;
    let metrics = Arc::new(Metrics::default());
    let kv = KvConfig::default();
    let driver_config = DriverConfig {
        node_id,
        voters: config.bootstrap_voters().into_iter().map(NodeId).collect(),
        settings: config.protocol_settings(),
        kv: kv.clone(),
        directory: Directory {
            members: config
                .members
                .iter()
                .map(|m| {
                    let addrs = MemberAddrs {
                        name: format!("n{}", m.id),
                        peer_addr: m.peer_addr,
                        client_addr: Some(m.client_addr),
                        promote: false,
                    };
                    (m.id, addrs)
                })
                .collect(),
        },
    };
    let (driver, status) =
        Driver::<P>::open(&driver_config, disk, saved, transport.clone(), metrics.clone())?;
    let driver = driver.with_auto_compaction(config.auto_compaction().map_err(NodeError::Config)?);
    let members = driver.members();
    let serve_locally = matches!(driver.client_routing(), synod_core::ClientRouting::All { .. });
    // PBFT's client path (`synodpb.Pbft`) signs replies with this replica's
    // key (the driver loaded and checked the same file).
    let pbft_keyring = match (&config.protocol_settings().pbft_keys, P::NAME) {
        (Some((me, path)), "pbft") => Some(
            crate::pbft_keys::load(path, *me, &driver_config.voters)
                .map_err(NodeError::Config)?
                .keyring,
        ),
        _ => None,
    };
    let (requests_tx, requests_rx) = mpsc::channel(REQUEST_QUEUE_LEN);
    let (stop_tx, stop_rx) = watch::channel(false);
    let driver_task = tokio::spawn(driver.run(inbound, requests_rx, stop_rx));
    let pbft_client_path = pbft_keyring.map(|keyring| {
        let service = crate::pbft_service::PbftService::new(
            node_id,
            keyring,
            requests_tx.clone(),
            status.clone(),
            Duration::from_millis(config.timeouts.request_ms),
            kv.max_request_bytes,
        );
        PbftServer::new(service)
            .max_decoding_message_size(kv.max_request_bytes + crate::service::GRPC_OVERHEAD_BYTES)
    });

    let service = Service::new(
        ServiceConfig {
            node_id,
            cluster_id: config.cluster_id(),
            members: config
                .members
                .iter()
                .map(|m| MemberInfo {
                    id: NodeId(m.id),
                    peer_addr: m.peer_addr.to_string(),
                    client_addr: m.client_addr.to_string(),
                })
                .collect(),
            kv,
            request_timeout: Duration::from_millis(config.timeouts.request_ms),
            serve_locally,
            agreed_clock: serve_locally,
        },
        requests_tx,
        status.clone(),
    )
    .with_members(members);
    let client_listener = TcpListener::bind(me.client_addr).await.map_err(|e| {
        NodeError::Startup(format!("cannot listen for clients on {}: {e}", me.client_addr))
    })?;
    let max_decoding = service.max_decoding_message_size();
    let publisher = service.clone();
    let (grpc_stop_tx, mut grpc_stop_rx) = watch::channel(false);
    let incoming = crate::gateway::split_incoming(client_listener, service.clone());
    let grpc = tonic::transport::Server::builder()
        .add_service(KvServer::new(service.clone()).max_decoding_message_size(max_decoding))
        .add_service(MaintenanceServer::new(service.clone()))
        .add_service(WatchServer::new(service.clone()))
        .add_service(LeaseServer::new(service.clone()))
        .add_service(LockServer::new(service.clone()))
        .add_service(ElectionServer::new(service.clone()))
        .add_service(HealthServer::new(crate::health::HealthService::new(status.clone())))
        .add_service(ClusterServer::new(service))
        .add_optional_service(pbft_client_path)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = grpc_stop_rx.wait_for(|stop| *stop).await;
        });
    let grpc_task = tokio::spawn(grpc);
    tokio::spawn(crate::cluster::publish_client_url(
        publisher,
        me.peer_addr,
        me.client_addr,
        stop_tx.subscribe(),
    ));
    if let Some(addr) = config.metrics_addr {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| NodeError::Startup(format!("cannot listen for metrics on {addr}: {e}")))?;
        tokio::spawn(serve_http(listener, metrics.clone(), status.clone()));
    }
    tracing::info!(
        node = %node_id, client = %me.client_addr, peer = %me.peer_addr,
        protocol = P::NAME, "serving"
    );

    let mut driver_task = driver_task;
    let result = tokio::select! {
        _ = shutdown => {
            tracing::info!(node = %node_id, "shutting down");
            let _ = grpc_stop_tx.send(true);
            let _ = stop_tx.send(true);
            match (&mut driver_task).await {
                Ok(r) => r,
                Err(e) => Err(NodeError::Startup(format!("driver task failed: {e}"))),
            }
        }
        r = &mut driver_task => {
            let _ = grpc_stop_tx.send(true);
            match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(NodeError::Startup(format!("driver task failed: {e}"))),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), grpc_task).await;
    transport.shutdown().await;
    result
}

/// A minimal HTTP/1.0 responder: `GET /metrics` (Prometheus text) and
/// `GET /health` (`{"health":"true"}` when a leader is known, as etcd
/// answers; 503 otherwise). Requests are read up to 8 KiB, one per
/// connection.
async fn serve_http(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    status: watch::Receiver<NodeStatus>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let metrics = metrics.clone();
        let status = status.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    match stream.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            });
            if read.await.is_err() {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (code, content_type, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                "/health" => {
                    if status.borrow().leader.is_some() {
                        ("200 OK", "application/json", "{\"health\":\"true\"}\n".to_string())
                    } else {
                        (
                            "503 Service Unavailable",
                            "application/json",
                            "{\"health\":\"false\",\"reason\":\"no leader\"}\n".to_string(),
                        )
                    }
                }
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.0 {code}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
