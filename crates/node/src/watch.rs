//! The etcd `Watch` service: a bidirectional stream of create / cancel /
//! progress requests, answered with created / canceled / event / progress
//! responses, served from this member's own store (as etcd serves watches
//! from any member).
//!
//! **The hub.** One [`WatchHub`] per node follows the store: its feeder task
//! ([`feed`]) waits for the applied revision to move, reads every change
//! since the last one it saw ([`KvQuery::Events`], a local read), and hands
//! the batch (shared, not copied) to every subscribed watcher, each through a
//! bounded channel of [`WATCHER_BUFFER_BATCHES`]. A watcher whose channel is
//! full is dropped from the hub; it notices its channel closing and catches
//! up from the store's history on its own, then subscribes again. A watcher
//! therefore sees every revision exactly once and in order: everything below
//! its `next` revision it has delivered, and the hub (or history) serves
//! everything from `next` on, batches never splitting a revision.
//!
//! **A watcher** starts from its start revision (0: the current revision +
//! 1), catches up from history in batches of [`CATCH_UP_BATCH_EVENTS`], and
//! subscribes once it reached the hub. A start revision below the
//! compaction point gets etcd's answer: the watch is created, then canceled
//! with `compact_revision` set. Filters (`NOPUT`, `NODELETE`) and `prev_kv`
//! apply per watcher.
//!
//! **The stream.** Responses of all the stream's watchers share one bounded
//! channel ([`STREAM_BUFFER`]); a client that stops reading stalls its
//! watchers, which the hub then drops, so a slow client costs history
//! reads, never unbounded memory. A canceled watcher's queued responses are
//! discarded on the way out. A progress request is answered with the
//! revision every watcher of the stream has delivered through (watch id -1).

use crate::convert;
use crate::service::{Service, kv_status, unexpected};
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use synod_etcdpb::etcdserverpb as pb;
use synod_etcdpb::etcdserverpb::watch_server::Watch;
use synod_etcdpb::mvccpb;
use synod_kv::{Event, EventType, EventsResponse, KeyRange, KvQuery, KvResponse};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// Events the hub reads per batch (a revision is never split).
pub const HUB_BATCH_EVENTS: u64 = 1000;
/// Events a catching-up watcher reads per batch.
pub const CATCH_UP_BATCH_EVENTS: u64 = 1000;
/// Batches the hub queues per watcher before dropping it to catch up alone.
pub const WATCHER_BUFFER_BATCHES: usize = 64;
/// Responses queued per stream.
pub const STREAM_BUFFER: usize = 1024;
/// Watchers one stream may hold.
pub const MAX_WATCHERS_PER_STREAM: usize = 10_000;
/// How often a watcher created with `progress_notify` reports progress when
/// idle (etcd's default is 10 minutes).
pub const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);
/// etcd's message for a watch id already in use on the stream.
pub const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

/// Every revision of `[.., through]` from the one after the previous batch,
/// as the hub read it.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The events, in revision order.
    pub events: Arc<Vec<Event>>,
    /// The last revision the batch covers.
    pub through: i64,
}

/// The node's fan-out point for watch events (see the module doc).
#[derive(Debug)]
pub struct WatchHub {
    state: Mutex<HubState>,
}

#[derive(Debug)]
struct HubState {
    /// The first revision not yet published.
    next_revision: i64,
    subscribers: HashMap<u64, mpsc::Sender<Batch>>,
    next_id: u64,
}

impl WatchHub {
    /// A hub that will publish from `next_revision` on.
    pub fn new(next_revision: i64) -> WatchHub {
        WatchHub {
            state: Mutex::new(HubState { next_revision, subscribers: HashMap::new(), next_id: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first revision the hub has not published yet.
    pub fn next_revision(&self) -> i64 {
        self.lock().next_revision
    }

    /// Subscribes a watcher that has delivered everything below `next`:
    /// the hub's batches from now on cover every revision from `next` (the
    /// watcher skips what it already has). `Err(hub_next)` if the watcher
    /// is behind the hub and must catch up to `hub_next` first.
    pub fn subscribe(&self, next: i64) -> Result<mpsc::Receiver<Batch>, i64> {
        let mut st = self.lock();
        if next < st.next_revision {
            return Err(st.next_revision);
        }
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER_BATCHES);
        let id = st.next_id;
        st.next_id += 1;
        st.subscribers.insert(id, tx);
        Ok(rx)
    }

    /// Hands `batch` to every subscriber; one whose buffer is full (or who
    /// left) is dropped.
    pub fn publish(&self, batch: Batch) {
        let mut st = self.lock();
        assert!(batch.through >= st.next_revision - 1, "the hub never goes back");
        st.next_revision = batch.through + 1;
        st.subscribers.retain(|_, tx| tx.try_send(batch.clone()).is_ok());
    }

    /// The history the hub would publish next is gone (compacted before it
    /// read it): every subscriber falls back to history (where it will find
    /// the compaction), and the hub restarts at `next_revision`.
    pub fn restart_at(&self, next_revision: i64) {
        let mut st = self.lock();
        st.subscribers.clear();
        st.next_revision = st.next_revision.max(next_revision);
    }

    /// With no subscriber, moves past `through` without reading anything
    /// (a later watcher catches up from history to wherever the hub is);
    /// false if someone is subscribed. Atomic with [`WatchHub::subscribe`].
    pub fn skip_if_idle(&self, through: i64) -> bool {
        let mut st = self.lock();
        if !st.subscribers.is_empty() {
            return false;
        }
        st.next_revision = st.next_revision.max(through + 1);
        true
    }

    /// Number of subscribed watchers.
    pub fn subscribers(&self) -> usize {
        self.lock().subscribers.len()
    }
}

/// Reads the local store's events on `(key, range_end)` from `start`.
async fn events(
    service: &Service,
    key: &[u8],
    range_end: &[u8],
    start: i64,
    max_events: u64,
) -> Result<EventsResponse, Status> {
    let q = KvQuery::Events {
        key: bytes::Bytes::copy_from_slice(key),
        range_end: bytes::Bytes::copy_from_slice(range_end),
        start_revision: start,
        max_events,
    };
    match service.serializable(q).await? {
        (KvResponse::Events(e), _) => Ok(e),
        _ => Err(unexpected("events")),
    }
}

/// The hub's feeder: follows the applied revision until the driver stops.
pub async fn feed(service: Service) {
    let hub = service.inner().hub.clone();
    let mut status = service.inner().status.clone();
    loop {
        let next = hub.next_revision();
        let revision = status.borrow_and_update().revision;
        if revision < next || hub.skip_if_idle(revision) {
            if status.changed().await.is_err() {
                return;
            }
            continue;
        }
        match events(&service, b"\0", b"\0", next, HUB_BATCH_EVENTS).await {
            Ok(e) if next < e.compact_revision => hub.restart_at(e.header.revision + 1),
            Ok(e) => {
                hub.publish(Batch { events: Arc::new(e.events), through: e.next_revision - 1 })
            }
            Err(err) => {
                if status.has_changed().is_err() {
                    return;
                }
                tracing::debug!(error = %err, "watch hub: cannot read events; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One response on its way to the client: watcher output carries its watch
/// id (dropped if the watch was canceled meanwhile); control output does not.
struct Outgoing {
    watcher: Option<i64>,
    response: pb::WatchResponse,
}

/// What one watcher watches.
#[derive(Clone, Debug)]
struct Spec {
    id: i64,
    key: Vec<u8>,
    range_end: Vec<u8>,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
}

impl Spec {
    fn wants(&self, e: &Event) -> bool {
        let kind_ok = match e.r#type {
            EventType::Put => !self.no_put,
            EventType::Delete => !self.no_delete,
        };
        kind_ok && KeyRange::new(&self.key, &self.range_end).contains(&e.kv.key)
    }

    fn to_pb(&self, e: &Event) -> mvccpb::Event {
        mvccpb::Event {
            r#type: e.r#type as i32,
            kv: Some(convert::key_value(e.kv.clone())),
            prev_kv: if self.prev_kv { e.prev_kv.clone().map(convert::key_value) } else { None },
        }
    }
}

/// A running watcher: its task and how far it has delivered.
struct Running {
    task: tokio::task::AbortHandle,
    /// The first revision not yet delivered.
    next: Arc<AtomicI64>,
}

/// Sends a response for watcher `spec`; false when the stream is gone.
async fn send(out: &mpsc::Sender<Outgoing>, spec: &Spec, response: pb::WatchResponse) -> bool {
    out.send(Outgoing { watcher: Some(spec.id), response }).await.is_ok()
}

/// Sends `events` (those `spec` wants, from revision `from` on) in one
/// response; false when the stream is gone.
async fn deliver(
    service: &Service,
    out: &mpsc::Sender<Outgoing>,
    spec: &Spec,
    events: &[Event],
    from: i64,
    through: i64,
) -> bool {
    let picked: Vec<mvccpb::Event> = events
        .iter()
        .filter(|e| e.kv.mod_revision >= from && spec.wants(e))
        .map(|e| spec.to_pb(e))
        .collect();
    if picked.is_empty() {
        return true;
    }
    let response = pb::WatchResponse {
        header: Some(service.stamp().header(through)),
        watch_id: spec.id,
        events: picked,
        ..pb::WatchResponse::default()
    };
    send(out, spec, response).await
}

/// One watcher, from `start` until canceled or its stream is gone.
async fn run_watcher(
    service: Service,
    out: mpsc::Sender<Outgoing>,
    spec: Spec,
    start: i64,
    progress: Arc<AtomicI64>,
) {
    let hub = service.inner().hub.clone();
    let mut next = start;
    loop {
        // Catch up from history until the hub can take over.
        let mut rx = loop {
            if let Ok(rx) = hub.subscribe(next) {
                break rx;
            }
            let e = match events(&service, &spec.key, &spec.range_end, next, CATCH_UP_BATCH_EVENTS)
                .await
            {
                Ok(e) => e,
                Err(err) => {
                    tracing::debug!(error = %err, "watcher cannot read history; retrying");
                    if out.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if next < e.compact_revision {
                let response = pb::WatchResponse {
                    header: Some(service.stamp().header(e.header.revision)),
                    watch_id: spec.id,
                    canceled: true,
                    compact_revision: e.compact_revision,
                    cancel_reason: synod_kv::KvError::Compacted.message(),
                    ..pb::WatchResponse::default()
                };
                let _ = send(&out, &spec, response).await;
                return;
            }
            if !deliver(&service, &out, &spec, &e.events, next, e.next_revision - 1).await {
                return;
            }
            next = next.max(e.next_revision);
            progress.store(next, Ordering::Relaxed);
        };
        // Synced: the hub feeds this watcher until it falls behind.
        loop {
            let batch = if spec.progress_notify {
                match tokio::time::timeout(PROGRESS_NOTIFY_INTERVAL, rx.recv()).await {
                    Ok(b) => b,
                    Err(_) => {
                        let response = pb::WatchResponse {
                            header: Some(service.stamp().header(next - 1)),
                            watch_id: spec.id,
                            ..pb::WatchResponse::default()
                        };
                        if !send(&out, &spec, response).await {
                            return;
                        }
                        continue;
                    }
                }
            } else {
                rx.recv().await
            };
            let Some(batch) = batch else { break };
            if batch.through < next {
                continue;
            }
            if !deliver(&service, &out, &spec, &batch.events, next, batch.through).await {
                return;
            }
            next = batch.through + 1;
            progress.store(next, Ordering::Relaxed);
        }
    }
}

/// The response stream: queued responses, minus those of canceled watchers.
struct OutStream {
    rx: mpsc::Receiver<Outgoing>,
    live: Arc<Mutex<HashSet<i64>>>,
}

impl Stream for OutStream {
    type Item = Result<pb::WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(o)) => {
                    if let Some(id) = o.watcher {
                        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
                        if !live.contains(&id) {
                            continue;
                        }
                    }
                    return Poll::Ready(Some(Ok(o.response)));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The state of one watch stream.
struct StreamState {
    service: Service,
    out: mpsc::Sender<Outgoing>,
    live: Arc<Mutex<HashSet<i64>>>,
    watchers: HashMap<i64, Running>,
    next_id: i64,
}

impl StreamState {
    fn live(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn control(&self, response: pb::WatchResponse) -> bool {
        self.out.send(Outgoing { watcher: None, response }).await.is_ok()
    }

    fn header(&self) -> pb::ResponseHeader {
        let revision = self.service.inner().status.borrow().revision;
        self.service.stamp().header(revision)
    }

    async fn create(&mut self, c: pb::WatchCreateRequest) -> bool {
        let id = if c.watch_id != 0 {
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        if self.watchers.contains_key(&id) || self.watchers.len() >= MAX_WATCHERS_PER_STREAM {
            let reason = if self.watchers.contains_key(&id) {
                DUPLICATE_WATCH_ID.to_string()
            } else {
                format!("synod: at most {MAX_WATCHERS_PER_STREAM} watchers per stream")
            };
            return self
                .control(pb::WatchResponse {
                    header: Some(self.header()),
                    watch_id: id,
                    created: true,
                    canceled: true,
                    cancel_reason: reason,
                    ..pb::WatchResponse::default()
                })
                .await;
        }
        let header = self.header();
        let start = if c.start_revision <= 0 { header.revision + 1 } else { c.start_revision };
        let spec = Spec {
            id,
            key: c.key,
            range_end: c.range_end,
            prev_kv: c.prev_kv,
            no_put: c.filters.contains(&(pb::watch_create_request::FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(pb::watch_create_request::FilterType::Nodelete as i32)),
            progress_notify: c.progress_notify,
        };
        self.live().insert(id);
        let created = pb::WatchResponse {
            header: Some(header),
            watch_id: id,
            created: true,
            ..pb::WatchResponse::default()
        };
        if !self.control(created).await {
            return false;
        }
        let next = Arc::new(AtomicI64::new(start));
        let task = tokio::spawn(run_watcher(
            self.service.clone(),
            self.out.clone(),
            spec,
            start,
            next.clone(),
        ));
        self.watchers.insert(id, Running { task: task.abort_handle(), next });
        if c.watch_id == 0 {
            self.next_id = id + 1;
        }
        true
    }

    async fn cancel(&mut self, id: i64) -> bool {
        let Some(w) = self.watchers.remove(&id) else { return true };
        self.live().remove(&id);
        w.task.abort();
        self.control(pb::WatchResponse {
            header: Some(self.header()),
            watch_id: id,
            canceled: true,
            ..pb::WatchResponse::default()
        })
        .await
    }

    async fn progress(&self) -> bool {
        let current = self.header().revision;
        let through = self
            .watchers
            .values()
            .map(|w| w.next.load(Ordering::Relaxed) - 1)
            .min()
            .unwrap_or(current)
            .min(current);
        self.control(pb::WatchResponse {
            header: Some(self.service.stamp().header(through)),
            watch_id: -1,
            ..pb::WatchResponse::default()
        })
        .await
    }

    fn stop(&mut self) {
        for (_, w) in self.watchers.drain() {
            w.task.abort();
        }
    }
}

/// Where a watch stream's requests come from: the gRPC stream, or the JSON
/// gateway's parsed body.
pub(crate) type Inbound =
    Pin<Box<dyn Stream<Item = Result<pb::WatchRequest, Status>> + Send + 'static>>;

async fn run_stream(mut state: StreamState, mut inbound: Inbound) {
    use pb::watch_request::RequestUnion;
    use tonic::codegen::tokio_stream::StreamExt;
    loop {
        let msg = tokio::select! {
            m = inbound.next() => m,
            _ = state.out.closed() => break,
        };
        let ok = match msg {
            Some(Ok(pb::WatchRequest { request_union: Some(r) })) => match r {
                RequestUnion::CreateRequest(c) => state.create(c).await,
                RequestUnion::CancelRequest(c) => state.cancel(c.watch_id).await,
                RequestUnion::ProgressRequest(_) => state.progress().await,
            },
            Some(Ok(pb::WatchRequest { request_union: None })) => true,
            None | Some(Err(_)) => false,
        };
        if !ok {
            break;
        }
    }
    state.stop();
}

#[tonic::async_trait]
impl Watch for Service {
    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<tonic::codegen::BoxStream<pb::WatchResponse>>, Status> {
        let inbound: Streaming<pb::WatchRequest> = request.into_inner();
        Ok(Response::new(Box::pin(open_stream(self, Box::pin(inbound)))))
    }
}

/// Serves one watch stream: requests from `inbound`, responses from the
/// returned stream (dropping it ends the watch stream).
pub(crate) fn open_stream(
    service: &Service,
    inbound: Inbound,
) -> impl Stream<Item = Result<pb::WatchResponse, Status>> + Send + Unpin + 'static {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let live = Arc::new(Mutex::new(HashSet::new()));
    let state = StreamState {
        service: service.clone(),
        out: tx,
        live: live.clone(),
        watchers: HashMap::new(),
        next_id: 0,
    };
    tokio::spawn(run_stream(state, inbound));
    OutStream { rx, live }
}

/// A watcher on this node's hub outside any client stream (for the lock and
/// election recipes); it stops when dropped.
pub(crate) struct LocalWatch {
    rx: mpsc::Receiver<Outgoing>,
    _task: AbortOnDrop,
}

impl LocalWatch {
    /// Watches `(key, range_end)` from revision `from`.
    pub(crate) fn start(
        service: &Service,
        key: &[u8],
        range_end: &[u8],
        from: i64,
        no_put: bool,
    ) -> LocalWatch {
        let spec = Spec {
            id: 0,
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            prev_kv: false,
            no_put,
            no_delete: false,
            progress_notify: false,
        };
        let (tx, rx) = mpsc::channel(16);
        let progress = Arc::new(AtomicI64::new(from));
        let task = tokio::spawn(run_watcher(service.clone(), tx, spec, from, progress));
        LocalWatch { rx, _task: AbortOnDrop(task.abort_handle()) }
    }

    /// The next response with events; etcd's compaction error if the
    /// history from `from` is gone.
    pub(crate) async fn next(&mut self) -> Result<pb::WatchResponse, Status> {
        match self.rx.recv().await {
            Some(o) if o.response.canceled => Err(kv_status(synod_kv::KvError::Compacted)),
            Some(o) => Ok(o.response),
            None => Err(Status::unavailable("etcdserver: server stopped")),
        }
    }
}

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(through: i64) -> Batch {
        Batch { events: Arc::new(Vec::new()), through }
    }

    #[test]
    fn a_watcher_behind_the_hub_must_catch_up_first() {
        let hub = WatchHub::new(5);
        assert_eq!(hub.subscribe(3).err(), Some(5));
        assert!(hub.subscribe(5).is_ok());
        assert!(hub.subscribe(9).is_ok(), "ahead of the hub: it skips what it has");
    }

    #[test]
    fn a_slow_subscriber_is_dropped_not_buffered_without_bound() {
        let hub = WatchHub::new(2);
        let mut fast = hub.subscribe(2).expect("subscribe");
        let _slow = hub.subscribe(2).expect("subscribe");
        for rev in 2..2 + WATCHER_BUFFER_BATCHES as i64 {
            hub.publish(batch(rev));
            assert_eq!(fast.try_recv().map(|b| b.through).ok(), Some(rev));
        }
        assert_eq!(hub.subscribers(), 2);
        hub.publish(batch(100));
        assert_eq!(hub.subscribers(), 1, "the full one left");
        assert_eq!(fast.try_recv().map(|b| b.through).ok(), Some(100));
        assert_eq!(hub.next_revision(), 101);
    }

    #[test]
    fn a_left_subscriber_is_forgotten_and_a_restart_drops_everyone() {
        let hub = WatchHub::new(2);
        drop(hub.subscribe(2).expect("subscribe"));
        let _kept = hub.subscribe(2).expect("subscribe");
        hub.publish(batch(2));
        assert_eq!(hub.subscribers(), 1);
        hub.restart_at(50);
        assert_eq!((hub.subscribers(), hub.next_revision()), (0, 50));
    }

    #[test]
    fn an_idle_hub_skips_ahead_and_a_busy_one_does_not() {
        let hub = WatchHub::new(2);
        assert!(hub.skip_if_idle(9));
        assert_eq!(hub.next_revision(), 10);
        assert_eq!(hub.subscribe(5).err(), Some(10), "a late watcher catches up from history");
        let _rx = hub.subscribe(10).expect("subscribe");
        assert!(!hub.skip_if_idle(20), "a subscriber must get every revision");
        assert_eq!(hub.next_revision(), 10);
    }

    #[test]
    fn filters_and_ranges_pick_events() {
        let spec = Spec {
            id: 1,
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            prev_kv: false,
            no_put: true,
            no_delete: false,
            progress_notify: false,
        };
        let ev = |t, k: &str| Event {
            r#type: t,
            kv: synod_kv::KeyValue {
                key: bytes::Bytes::copy_from_slice(k.as_bytes()),
                ..Default::default()
            },
            prev_kv: Some(synod_kv::KeyValue::default()),
        };
        assert!(spec.wants(&ev(EventType::Delete, "b")));
        assert!(!spec.wants(&ev(EventType::Put, "b")), "NOPUT");
        assert!(!spec.wants(&ev(EventType::Delete, "c")), "range end is exclusive");
        assert_eq!(spec.to_pb(&ev(EventType::Delete, "b")).prev_kv, None, "prev_kv not asked");
    }
}
