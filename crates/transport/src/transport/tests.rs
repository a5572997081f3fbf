//! End-to-end tests of the transport on 127.0.0.1: real sockets, port-0
//! listeners, every wait bounded by [`WAIT`] and ended by a channel or a
//! counter reaching its expected value (never by elapsed time).

use super::*;
use crate::frame::{FRAME_VERSION, FrameKind, FrameReader, header, write_frame};
use crate::handshake::{self, Credentials, HANDSHAKE_MAX_FRAME_BYTES};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const CLUSTER: &str = "test-cluster";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
/// Upper bound on any single wait; tests finish as soon as the awaited
/// condition holds.
const WAIT: Duration = Duration::from_secs(10);

struct Node {
    handle: TransportHandle,
    inbound: mpsc::Receiver<Inbound>,
}

async fn bind_listeners(count: usize) -> Vec<TcpListener> {
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port"));
    }
    listeners
}

/// An address nothing listens on (bound, then released).
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Node `id`'s configuration in a cluster whose members listen on `members`.
fn config(id: u64, members: &[(NodeId, SocketAddr)]) -> TransportConfig {
    let own_addr = members.iter().find(|(node, _)| node.0 == id).map(|(_, addr)| *addr);
    let peers = members.iter().copied().filter(|(node, _)| node.0 != id).collect();
    let listen_addr = own_addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
    let mut config = TransportConfig::new(NodeId(id), CLUSTER, SECRET.to_vec(), listen_addr, peers);
    config.backoff_initial_ms = 5;
    config.backoff_max_ms = 50;
    config
}

fn start(config: TransportConfig, listener: TcpListener) -> Node {
    let (handle, inbound) = Transport::start_on(config, listener).expect("transport starts");
    Node { handle, inbound }
}

/// Starts nodes 1..=count, all knowing each other.
async fn cluster(count: u64) -> Vec<Node> {
    let listeners = bind_listeners(count as usize).await;
    let members: Vec<_> = (1..=count)
        .zip(&listeners)
        .map(|(id, listener)| (NodeId(id), listener.local_addr().unwrap()))
        .collect();
    (1..=count).zip(listeners).map(|(id, listener)| start(config(id, &members), listener)).collect()
}

async fn recv(node: &mut Node) -> Inbound {
    timeout(WAIT, node.inbound.recv())
        .await
        .expect("a message arrives in time")
        .expect("the inbound channel is open")
}

/// Waits until the node's counters satisfy `holds`, polling every
/// millisecond; panics with the counters after [`WAIT`].
async fn wait_for_stats(
    handle: &TransportHandle,
    what: &str,
    holds: impl Fn(&TransportStats) -> bool,
) -> TransportStats {
    let polling = async {
        loop {
            let stats = handle.stats();
            if holds(&stats) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    match timeout(WAIT, polling).await {
        Ok(stats) => stats,
        Err(_) => panic!("timed out waiting for {what}: {:?}", handle.stats()),
    }
}

/// Sends numbered copies of `payload` from `from` to `to` until one arrives
/// (a message sent while a connection is being replaced may be lost).
async fn send_until_received(
    from: &TransportHandle,
    to: &mut Node,
    payload: &'static [u8],
) -> Inbound {
    for _ in 0..200 {
        from.send(to.handle.node_id(), Bytes::from_static(payload)).unwrap();
        if let Ok(Some(message)) = timeout(Duration::from_millis(50), to.inbound.recv()).await {
            return message;
        }
    }
    panic!("nothing from {} reached {}: {:?}", from.node_id(), to.handle.node_id(), from.stats());
}

/// Expects the server to close `stream`: a read returns end-of-file or a
/// reset, never data, within [`WAIT`].
async fn assert_disconnected(stream: &mut TcpStream, what: &str) {
    let mut buffer = [0u8; 64];
    match timeout(WAIT, stream.read(&mut buffer)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("{what}: server answered {n} bytes instead of closing"),
        Err(_) => panic!("{what}: server kept the connection open"),
    }
}

async fn shutdown_all(nodes: Vec<Node>) {
    for node in nodes {
        node.handle.shutdown().await;
    }
}

#[tokio::test]
async fn three_nodes_exchange_messages() {
    let mut nodes = cluster(3).await;
    let greeting = |from: NodeId, to: NodeId| Bytes::from(format!("{from}->{to}"));
    for node in &nodes {
        for peer in node.handle.peers() {
            node.handle.send(peer, greeting(node.handle.node_id(), peer)).unwrap();
        }
    }
    for node in &mut nodes {
        let mut received = vec![recv(node).await, recv(node).await];
        received.sort_by_key(|message| message.from);
        let me = node.handle.node_id();
        let expected: Vec<_> =
            node.handle.peers().map(|from| Inbound { from, payload: greeting(from, me) }).collect();
        assert_eq!(received, expected);
    }

    // Many messages to one peer arrive complete and in order.
    for seq in 0..500u32 {
        nodes[0].handle.send(NodeId(2), Bytes::from(seq.to_be_bytes().to_vec())).unwrap();
    }
    for seq in 0..500u32 {
        let message = recv(&mut nodes[1]).await;
        assert_eq!((message.from, &message.payload[..]), (NodeId(1), &seq.to_be_bytes()[..]));
    }
    let stats = nodes[0].handle.stats();
    assert_eq!(stats.frames_out, 502);
    assert_eq!(stats.bad_frames + stats.handshakes_refused + stats.dropped_queue_full, 0);
    assert!(stats.peers.iter().all(|peer| peer.connected && peer.queued_messages == 0));
    assert_eq!(nodes[1].handle.stats().frames_in, 2 + 500);
    shutdown_all(nodes).await;
}

#[tokio::test]
async fn restarted_peer_is_reconnected() {
    let mut nodes = cluster(2).await;
    let first = send_until_received(&nodes[0].handle.clone(), &mut nodes[1], b"before").await;
    assert_eq!(first.from, NodeId(1));

    let restarted = nodes.pop().unwrap();
    let addr = restarted.handle.local_addr();
    restarted.handle.shutdown().await;
    drop(restarted);
    // Same node id, same address, fresh process state.
    let members = [(NodeId(1), nodes[0].handle.local_addr()), (NodeId(2), addr)];
    let listener = TcpListener::bind(addr).await.expect("rebind the restarted node's port");
    let mut restarted = start(config(2, &members), listener);

    let after = send_until_received(&nodes[0].handle, &mut restarted, b"after").await;
    assert_eq!((after.from, &after.payload[..]), (NodeId(1), &b"after"[..]));
    let back = send_until_received(&restarted.handle, &mut nodes[0], b"back").await;
    assert_eq!(back.from, NodeId(2));
    assert!(nodes[0].handle.stats().outbound_connections >= 2);
    nodes.push(restarted);
    shutdown_all(nodes).await;
}

/// Starts a well-configured node 1 (peers 2 and 3) and an `intruder` built
/// from `tweak`, which dials node 1; returns both once node 1 has refused it.
async fn refused_intruder(
    intruder_id: u64,
    tweak: impl FnOnce(&mut TransportConfig),
) -> (Node, Node) {
    let listeners = bind_listeners(2).await;
    let addr_1 = listeners[0].local_addr().unwrap();
    let addr_intruder = listeners[1].local_addr().unwrap();
    let members =
        [(NodeId(1), addr_1), (NodeId(2), dead_addr().await), (NodeId(3), dead_addr().await)];
    let mut listeners = listeners.into_iter();
    let node_1 = start(config(1, &members), listeners.next().unwrap());

    let mut intruder_config =
        config(intruder_id, &[(NodeId(1), addr_1), (NodeId(intruder_id), addr_intruder)]);
    tweak(&mut intruder_config);
    let intruder = start(intruder_config, listeners.next().unwrap());
    intruder.handle.send(NodeId(1), Bytes::from_static(b"let me in")).unwrap();

    wait_for_stats(&node_1.handle, "a refused handshake", |stats| stats.handshakes_refused >= 1)
        .await;
    (node_1, intruder)
}

fn assert_nothing_delivered(node: &mut Node) {
    let stats = node.handle.stats();
    assert_eq!((stats.frames_in, stats.inbound_connections), (0, 0), "{stats:?}");
    assert!(node.inbound.try_recv().is_err(), "a refused peer's message was delivered");
}

#[tokio::test]
async fn wrong_secret_is_refused_and_counted() {
    let (mut node_1, intruder) =
        refused_intruder(2, |config| config.secret = b"not the secret".to_vec()).await;
    assert_nothing_delivered(&mut node_1);
    // The intruder sees its connections closed mid-handshake, never connects.
    let stats = wait_for_stats(&intruder.handle, "the intruder's failed handshake", |stats| {
        stats.handshakes_failed >= 1
    })
    .await;
    assert_eq!(stats.outbound_connections, 0);
    shutdown_all(vec![node_1, intruder]).await;
}

#[tokio::test]
async fn wrong_cluster_is_refused_and_counted() {
    let (mut node_1, intruder) =
        refused_intruder(2, |config| config.cluster_id = "other-cluster".into()).await;
    assert_nothing_delivered(&mut node_1);
    shutdown_all(vec![node_1, intruder]).await;
}

#[tokio::test]
async fn unknown_node_id_is_refused_and_counted() {
    let (mut node_1, intruder) = refused_intruder(9, |_| {}).await;
    assert_nothing_delivered(&mut node_1);
    shutdown_all(vec![node_1, intruder]).await;
}

#[tokio::test]
async fn raw_garbage_is_disconnected_and_the_listener_keeps_serving() {
    let mut nodes = cluster(2).await;
    let addr = nodes[0].handle.local_addr();
    let inputs: [(&str, Vec<u8>); 4] = [
        ("text", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("oversized length", vec![0xff, 0xff, 0xff, 0xff, FRAME_VERSION, 1]),
        ("wrong version", vec![0, 0, 0, 40, FRAME_VERSION + 1, 1]),
        ("unknown kind", vec![0, 0, 0, 40, FRAME_VERSION, 0xee]),
    ];
    for (what, bytes) in &inputs {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(bytes).await.unwrap();
        assert_disconnected(&mut client, what).await;
    }
    // A truncated frame: the header promises 100 bytes, 10 arrive, then EOF.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(&header(FrameKind::Hello, 98)).await.unwrap();
    client.write_all(&[0; 10]).await.unwrap();
    client.shutdown().await.unwrap();
    assert_disconnected(&mut client, "truncated frame").await;

    let stats =
        wait_for_stats(&nodes[0].handle, "five bad frames", |stats| stats.bad_frames >= 5).await;
    assert_eq!(stats.bad_frames, 5);
    let message =
        send_until_received(&nodes[1].handle.clone(), &mut nodes[0], b"still serving").await;
    assert_eq!(message.from, NodeId(2));
    shutdown_all(nodes).await;
}

/// Connects to `addr` as node `as_node` with the cluster's credentials.
async fn authenticated_client(addr: SocketAddr, as_node: u64, to: u64) -> TcpStream {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(read, HANDSHAKE_MAX_FRAME_BYTES);
    let credentials = Credentials {
        node_id: NodeId(as_node),
        cluster_id: CLUSTER.as_bytes().to_vec(),
        secret: SECRET.to_vec(),
    };
    timeout(WAIT, handshake::initiate(&mut reader, &mut write, &credentials, NodeId(to)))
        .await
        .expect("handshake in time")
        .expect("handshake succeeds");
    reader.into_inner().reunite(write).expect("halves of one stream")
}

#[tokio::test]
async fn authenticated_peer_sending_bad_frames_is_disconnected() {
    // Node 3 is a member that is not running; a test client plays it.
    let listeners = bind_listeners(2).await;
    let mut members: Vec<_> = listeners
        .iter()
        .enumerate()
        .map(|(i, listener)| (NodeId(i as u64 + 1), listener.local_addr().unwrap()))
        .collect();
    members.push((NodeId(3), dead_addr().await));
    let mut nodes: Vec<Node> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, listener)| {
            let mut config = config(i as u64 + 1, &members);
            config.max_frame_bytes = 1024;
            config.max_queue_bytes = 64 * 1024;
            start(config, listener)
        })
        .collect();
    let addr = nodes[0].handle.local_addr();

    // A valid Data frame is delivered, as from node 3.
    let mut client = authenticated_client(addr, 3, 1).await;
    write_frame(&mut client, FrameKind::Data, b"hello").await.unwrap();
    let message = recv(&mut nodes[0]).await;
    assert_eq!((message.from, &message.payload[..]), (NodeId(3), &b"hello"[..]));

    // One byte over the configured frame limit.
    client.write_all(&1025u32.to_be_bytes()).await.unwrap();
    assert_disconnected(&mut client, "oversized frame after the handshake").await;

    // A handshake frame after the handshake.
    let mut client = authenticated_client(addr, 3, 1).await;
    write_frame(&mut client, FrameKind::Hello, b"again").await.unwrap();
    assert_disconnected(&mut client, "handshake frame after the handshake").await;

    // A truncated Data frame.
    let mut client = authenticated_client(addr, 3, 1).await;
    client.write_all(&header(FrameKind::Data, 500)).await.unwrap();
    client.write_all(&[1; 100]).await.unwrap();
    client.shutdown().await.unwrap();
    assert_disconnected(&mut client, "truncated frame after the handshake").await;

    let stats =
        wait_for_stats(&nodes[0].handle, "three bad frames", |stats| stats.bad_frames >= 3).await;
    assert_eq!((stats.bad_frames, stats.frames_in, stats.inbound_connections >= 3), (3, 1, true));
    let message =
        send_until_received(&nodes[1].handle.clone(), &mut nodes[0], b"still serving").await;
    assert_eq!(message.from, NodeId(2));
    shutdown_all(nodes).await;
}

#[tokio::test]
async fn dead_peers_queue_stays_bounded_and_counts_drops() {
    let listener = bind_listeners(1).await.pop().unwrap();
    let members = [(NodeId(1), listener.local_addr().unwrap()), (NodeId(2), dead_addr().await)];
    let mut config = config(1, &members);
    config.queue_len = 8;
    let node = start(config, listener);
    for seq in 0..1000u32 {
        node.handle.send(NodeId(2), Bytes::from(vec![seq as u8; 100])).unwrap();
    }
    let stats = node.handle.stats();
    assert_eq!(stats.dropped_queue_full, 992);
    let peer = &stats.peers[0];
    assert_eq!(
        (
            peer.node_id,
            peer.connected,
            peer.queued_messages,
            peer.queued_bytes,
            peer.dropped_queue_full
        ),
        (NodeId(2), false, 8, 800, 992)
    );
    node.handle.shutdown().await;
}

#[tokio::test]
async fn queue_byte_bound_holds_for_large_messages() {
    let listener = bind_listeners(1).await.pop().unwrap();
    let members = [(NodeId(1), listener.local_addr().unwrap()), (NodeId(2), dead_addr().await)];
    let mut config = config(1, &members);
    config.max_frame_bytes = 4096;
    config.max_queue_bytes = 10_000;
    let node = start(config, listener);
    for _ in 0..100 {
        node.handle.send(NodeId(2), Bytes::from(vec![0; 3000])).unwrap();
    }
    let peer = &node.handle.stats().peers[0];
    assert_eq!((peer.queued_messages, peer.queued_bytes, peer.dropped_queue_full), (3, 9000, 97));
    node.handle.shutdown().await;
}

#[tokio::test]
async fn send_rejects_unknown_peers_oversized_payloads_and_after_shutdown() {
    let listener = bind_listeners(1).await.pop().unwrap();
    let members = [(NodeId(1), listener.local_addr().unwrap()), (NodeId(2), dead_addr().await)];
    let mut config = config(1, &members);
    config.max_frame_bytes = 100;
    let node = start(config, listener);
    assert_eq!(node.handle.send(NodeId(7), Bytes::new()), Err(SendError::UnknownPeer(NodeId(7))));
    assert_eq!(node.handle.send(NodeId(2), Bytes::from(vec![0; 98])), Ok(()));
    assert_eq!(
        node.handle.send(NodeId(2), Bytes::from(vec![0; 99])),
        Err(SendError::TooLarge { payload_bytes: 99, max_payload_bytes: 98 })
    );
    node.handle.shutdown().await;
    node.handle.shutdown().await; // idempotent
    assert_eq!(node.handle.send(NodeId(2), Bytes::new()), Err(SendError::Shutdown));
}

#[tokio::test]
async fn inbound_connections_over_the_limit_are_closed_and_counted() {
    let listener = bind_listeners(1).await.pop().unwrap();
    let members = [(NodeId(1), listener.local_addr().unwrap()), (NodeId(2), dead_addr().await)];
    let mut config = config(1, &members);
    config.max_inbound_connections = 1;
    let node = start(config, listener);
    let addr = node.handle.local_addr();
    let _holding_the_slot = TcpStream::connect(addr).await.unwrap();
    let mut over_the_limit = TcpStream::connect(addr).await.unwrap();
    assert_disconnected(&mut over_the_limit, "connection over the limit").await;
    assert_eq!(node.handle.stats().connections_rejected, 1);
    node.handle.shutdown().await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_when_the_handshake_times_out() {
    let listener = bind_listeners(1).await.pop().unwrap();
    let members = [(NodeId(1), listener.local_addr().unwrap()), (NodeId(2), dead_addr().await)];
    let mut config = config(1, &members);
    config.handshake_timeout_ms = 50;
    let node = start(config, listener);
    let mut silent = TcpStream::connect(node.handle.local_addr()).await.unwrap();
    assert_disconnected(&mut silent, "silent client").await;
    let stats =
        wait_for_stats(&node.handle, "a failed handshake", |stats| stats.handshakes_failed >= 1)
            .await;
    assert_eq!((stats.handshakes_failed, stats.handshakes_refused), (1, 0));
    node.handle.shutdown().await;
}

#[tokio::test]
async fn invalid_config_is_reported_with_its_field() {
    let listener = bind_listeners(1).await.pop().unwrap();
    let addr = listener.local_addr().unwrap();
    let config = TransportConfig::new(NodeId(1), CLUSTER, Vec::new(), addr, vec![]);
    match Transport::start_on(config, listener) {
        Err(TransportError::Config(error)) => assert_eq!(error.field, "secret"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

/// Regression: a batch capped at `MAX_BATCH_MESSAGES` consumed the only
/// wake-up, so messages queued beyond one batch waited for the next send.
#[tokio::test]
async fn messages_queued_beyond_one_batch_are_all_sent() {
    let listeners = bind_listeners(2).await;
    let members: Vec<_> = listeners
        .iter()
        .enumerate()
        .map(|(i, listener)| (NodeId(i as u64 + 1), listener.local_addr().unwrap()))
        .collect();
    let mut listeners = listeners.into_iter();
    let node_1 = start(config(1, &members), listeners.next().unwrap());
    // Queue while node 2 is not serving yet (its port is bound, not accepted).
    let count = 3 * crate::outbound::MAX_BATCH_MESSAGES as u32 + 7;
    for seq in 0..count {
        node_1.handle.send(NodeId(2), Bytes::from(seq.to_be_bytes().to_vec())).unwrap();
    }
    let mut node_2 = start(config(2, &members), listeners.next().unwrap());
    for seq in 0..count {
        let message = recv(&mut node_2).await;
        assert_eq!(&message.payload[..], &seq.to_be_bytes()[..]);
    }
    assert_eq!(node_1.handle.stats().dropped_queue_full, 0);
    shutdown_all(vec![node_1, node_2]).await;
}

#[tokio::test]
async fn peers_added_at_runtime_talk_and_removed_ones_are_dropped() {
    let listeners = bind_listeners(3).await;
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let founders = [(NodeId(1), addrs[0]), (NodeId(2), addrs[1])];
    let mut listeners = listeners.into_iter();
    let mut n1 = start(config(1, &founders), listeners.next().unwrap());
    let n2 = start(config(2, &founders), listeners.next().unwrap());
    // Node 3 joins: it knows everyone; 1 learns of it at runtime.
    let everyone = [(NodeId(1), addrs[0]), (NodeId(2), addrs[1]), (NodeId(3), addrs[2])];
    let mut n3 = start(config(3, &everyone), listeners.next().unwrap());
    assert_eq!(n1.handle.send(NodeId(3), Bytes::new()), Err(SendError::UnknownPeer(NodeId(3))));
    assert!(n1.handle.add_peer(NodeId(3), addrs[2]));
    assert!(!n1.handle.add_peer(NodeId(3), addrs[2]), "same address: nothing changes");
    assert_eq!(n1.handle.peer_addr(NodeId(3)), Some(addrs[2]));
    let got = send_until_received(&n1.handle, &mut n3, b"hello 3").await;
    assert_eq!(got.from, NodeId(1));
    let got = send_until_received(&n3.handle, &mut n1, b"hello 1").await;
    assert_eq!(got.from, NodeId(3), "1 accepts the added peer's connection");
    assert!(n1.handle.remove_peer(NodeId(3)));
    assert!(!n1.handle.remove_peer(NodeId(3)));
    assert_eq!(n1.handle.send(NodeId(3), Bytes::new()), Err(SendError::UnknownPeer(NodeId(3))));
    assert_eq!(n1.handle.peers().collect::<Vec<_>>(), vec![NodeId(2)]);
    shutdown_all(vec![n1, n2, n3]).await;
}
