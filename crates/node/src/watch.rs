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
//! **The stream.** A watcher catching up runs as a task of its own; its
//! responses, and the stream's control responses (created, canceled,
//! progress), share one bounded channel ([`STREAM_BUFFER`]). Once a watcher
//! has caught up with the hub, its task hands the hub subscription over to
//! the stream's response body (`OutStream`) and ends: from then on the
//! body itself takes the watcher's batches when the HTTP/2 stream asks for
//! its next message, picks the events the watcher wants and builds the
//! response there (every batch already waiting in one response). So a
//! published batch costs one wakeup per stream, not a watcher task's
//! wakeup plus a hop through the stream's channel; a stream's watchers are
//! served round robin. A watcher the hub dropped (its buffer full: a client
//! that stops reading) goes back to catching up from history in a task of
//! its own, so a slow client costs history reads, never unbounded memory.
//! A canceled watcher's queued responses are discarded on the way out, and
//! a caught-up one is forgotten. A progress request is answered with the
//! revision every watcher of the stream has delivered through (watch id -1).
//! Watchers created with `progress_notify` keep their task (it owns the
//! idle timer).

use crate::convert::{self, HeaderStamp};
use crate::service::{Service, kv_status, unexpected};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
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

/// Whether a watcher is still wanted: false once it is canceled or its
/// stream ended (its queued responses are then dropped, its task stops).
type Alive = Arc<AtomicBool>;

/// What travels through a stream's channel to its response body.
enum Outgoing {
    /// A response: a watcher's (`alive` set; dropped if the watcher was
    /// canceled meanwhile) or the stream's own (control).
    Response { alive: Option<Alive>, response: pb::WatchResponse },
    /// A watcher caught up with the hub: the body serves it from now on.
    Synced(Synced),
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
        convert::event(e, self.prev_kv)
    }
}

/// A watcher of the stream: its first task, whether it is still wanted,
/// and how far it has delivered.
struct Running {
    task: tokio::task::AbortHandle,
    alive: Alive,
    /// The first revision not yet delivered.
    next: Arc<AtomicI64>,
}

impl Running {
    /// Stops the watcher wherever it runs (its task, a later catch-up task,
    /// or the stream's body).
    fn stop(&self) {
        self.alive.store(false, Ordering::Relaxed);
        self.task.abort();
    }
}

/// Sends a response of the watcher; false when the stream is gone or the
/// watcher canceled.
async fn send(out: &mpsc::Sender<Outgoing>, alive: &Alive, response: pb::WatchResponse) -> bool {
    alive.load(Ordering::Relaxed)
        && out.send(Outgoing::Response { alive: Some(alive.clone()), response }).await.is_ok()
}

/// Adds the events of `events` that `spec` wants, from revision `from` on.
fn pick(spec: &Spec, events: &[Event], from: i64, into: &mut Vec<mvccpb::Event>) {
    into.extend(
        events.iter().filter(|e| e.kv.mod_revision >= from && spec.wants(e)).map(|e| spec.to_pb(e)),
    );
}

/// The response carrying `events` (already picked) through revision
/// `through`; `None` if there is none to send.
fn response_of(
    stamp: &HeaderStamp,
    spec: &Spec,
    events: Vec<mvccpb::Event>,
    through: i64,
) -> Option<pb::WatchResponse> {
    if events.is_empty() {
        return None;
    }
    Some(pb::WatchResponse {
        header: Some(stamp.header(through)),
        watch_id: spec.id,
        events,
        ..pb::WatchResponse::default()
    })
}

/// Sends `events` (those `spec` wants, from revision `from` on) in one
/// response; false when the stream is gone or the watcher canceled.
async fn deliver(
    service: &Service,
    out: &mpsc::Sender<Outgoing>,
    w: &WatcherState,
    events: &[Event],
    through: i64,
) -> bool {
    let mut picked = Vec::new();
    pick(&w.spec, events, w.next, &mut picked);
    match response_of(&service.stamp(), &w.spec, picked, through) {
        Some(response) => send(out, &w.alive, response).await,
        None => true,
    }
}

/// What a watcher carries from its task to the stream's body and back.
struct WatcherState {
    spec: Spec,
    /// The first revision not yet delivered.
    next: i64,
    /// `next`, for the stream's progress answers.
    progress: Arc<AtomicI64>,
    alive: Alive,
}

impl WatcherState {
    fn advance(&mut self, next: i64) {
        self.next = self.next.max(next);
        self.progress.store(self.next, Ordering::Relaxed);
    }
}

/// A caught-up watcher, served by its stream's body from the hub.
struct Synced {
    w: WatcherState,
    rx: mpsc::Receiver<Batch>,
}

/// What polling a caught-up watcher gave.
enum Polled {
    /// A response to send.
    Response(pb::WatchResponse),
    /// Nothing (more) for now; the body is woken when there is.
    Idle,
    /// The hub dropped it: it must catch up from history.
    Dropped,
    /// Canceled, or its stream ended.
    Gone,
}

/// Batches folded into one response at most (the hub's buffer per watcher).
const MAX_BATCHES_PER_RESPONSE: usize = WATCHER_BUFFER_BATCHES;

impl Synced {
    /// Takes every batch waiting (bounded) and builds one response of the
    /// events the watcher wants.
    fn poll(&mut self, cx: &mut Context<'_>, stamp: &HeaderStamp) -> Polled {
        if !self.w.alive.load(Ordering::Relaxed) {
            return Polled::Gone;
        }
        let mut picked = Vec::new();
        let mut through = None;
        // Whether the receiver said Pending (the waker is registered) or
        // ended; false when the bound stopped the loop.
        let (mut waiting, mut ended) = (false, false);
        for _ in 0..MAX_BATCHES_PER_RESPONSE {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => {
                    if batch.through < self.w.next {
                        continue;
                    }
                    pick(&self.w.spec, &batch.events, self.w.next, &mut picked);
                    self.w.advance(batch.through + 1);
                    through = Some(batch.through);
                }
                Poll::Ready(None) => {
                    ended = true;
                    break;
                }
                Poll::Pending => {
                    waiting = true;
                    break;
                }
            }
        }
        if let Some(r) = through.and_then(|t| response_of(stamp, &self.w.spec, picked, t)) {
            // Delivered first; a drop by the hub shows at the next poll.
            return Polled::Response(r);
        }
        if ended {
            return Polled::Dropped;
        }
        if !waiting {
            // Stopped by the bound with batches left: look again soon.
            cx.waker().wake_by_ref();
        }
        Polled::Idle
    }
}

/// One watcher from `w.next`, until canceled or its stream is gone. With
/// `hand_over` (and no `progress_notify`), once caught up with the hub it
/// hands its subscription to the stream's body ([`Outgoing::Synced`]) and
/// ends; otherwise it keeps serving the hub's batches itself.
async fn run_watcher(
    service: Service,
    out: mpsc::Sender<Outgoing>,
    mut w: WatcherState,
    hand_over: bool,
) {
    let hub = service.inner().hub.clone();
    loop {
        // Catch up from history until the hub can take over.
        let mut rx = loop {
            if !w.alive.load(Ordering::Relaxed) {
                return;
            }
            if let Ok(rx) = hub.subscribe(w.next) {
                break rx;
            }
            let e = match events(
                &service,
                &w.spec.key,
                &w.spec.range_end,
                w.next,
                CATCH_UP_BATCH_EVENTS,
            )
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
            if w.next < e.compact_revision {
                let response = pb::WatchResponse {
                    header: Some(service.stamp().header(e.header.revision)),
                    watch_id: w.spec.id,
                    canceled: true,
                    compact_revision: e.compact_revision,
                    cancel_reason: synod_kv::KvError::Compacted.message(),
                    ..pb::WatchResponse::default()
                };
                let _ = send(&out, &w.alive, response).await;
                return;
            }
            if !deliver(&service, &out, &w, &e.events, e.next_revision - 1).await {
                return;
            }
            w.advance(e.next_revision);
        };
        if hand_over && !w.spec.progress_notify {
            // Behind everything this task sent, the body takes over.
            let _ = out.send(Outgoing::Synced(Synced { w, rx })).await;
            return;
        }
        // Synced: the hub feeds this watcher until it falls behind.
        loop {
            let batch = if w.spec.progress_notify {
                match tokio::time::timeout(PROGRESS_NOTIFY_INTERVAL, rx.recv()).await {
                    Ok(b) => b,
                    Err(_) => {
                        let response = pb::WatchResponse {
                            header: Some(service.stamp().header(w.next - 1)),
                            watch_id: w.spec.id,
                            ..pb::WatchResponse::default()
                        };
                        if !send(&out, &w.alive, response).await {
                            return;
                        }
                        continue;
                    }
                }
            } else {
                rx.recv().await
            };
            let Some(batch) = batch else { break };
            if batch.through < w.next {
                continue;
            }
            if !deliver(&service, &out, &w, &batch.events, batch.through).await {
                return;
            }
            w.advance(batch.through + 1);
        }
    }
}

/// The response stream (the body of the gRPC response): queued responses,
/// minus those of canceled watchers, then the caught-up watchers' batches
/// from the hub, round robin.
struct OutStream {
    rx: mpsc::Receiver<Outgoing>,
    /// The caught-up watchers, in round-robin order.
    synced: Vec<Synced>,
    /// The index of the caught-up watcher to poll first.
    cursor: usize,
    service: Service,
    /// For a dropped watcher's catch-up task; gone once the stream ended.
    out: mpsc::WeakSender<Outgoing>,
}

impl Stream for OutStream {
    type Item = Result<pb::WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // Queued responses first: a watcher's catch-up output and the
        // stream's control answers come in the order they were sent, and a
        // hand-over comes after everything its task sent.
        loop {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(Outgoing::Response { alive, response })) => {
                    if alive.is_some_and(|a| !a.load(Ordering::Relaxed)) {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(response)));
                }
                Poll::Ready(Some(Outgoing::Synced(s))) => this.synced.push(s),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => break,
            }
        }
        // Then each caught-up watcher once, from the cursor on.
        let mut remaining = this.synced.len();
        let stamp = if remaining > 0 { this.service.stamp() } else { HeaderStamp::default() };
        while remaining > 0 {
            remaining -= 1;
            let i = this.cursor % this.synced.len();
            match this.synced[i].poll(cx, &stamp) {
                Polled::Response(r) => {
                    this.cursor = i + 1;
                    return Poll::Ready(Some(Ok(r)));
                }
                Polled::Idle => this.cursor = i + 1,
                Polled::Gone => {
                    // Order-preserving removal: the round robin stays fair.
                    this.synced.remove(i);
                }
                Polled::Dropped => {
                    let Synced { w, .. } = this.synced.remove(i);
                    if let Some(out) = this.out.upgrade() {
                        tokio::spawn(run_watcher(this.service.clone(), out, w, true));
                    }
                }
            }
        }
        Poll::Pending
    }
}

/// The state of one watch stream.
struct StreamState {
    service: Service,
    out: mpsc::Sender<Outgoing>,
    watchers: HashMap<i64, Running>,
    next_id: i64,
}

impl StreamState {
    async fn control(&self, response: pb::WatchResponse) -> bool {
        self.out.send(Outgoing::Response { alive: None, response }).await.is_ok()
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
        let alive = Arc::new(AtomicBool::new(true));
        let w = WatcherState { spec, next: start, progress: next.clone(), alive: alive.clone() };
        let task = tokio::spawn(run_watcher(self.service.clone(), self.out.clone(), w, true));
        self.watchers.insert(id, Running { task: task.abort_handle(), alive, next });
        if c.watch_id == 0 {
            self.next_id = id + 1;
        }
        true
    }

    async fn cancel(&mut self, id: i64) -> bool {
        let Some(w) = self.watchers.remove(&id) else { return true };
        w.stop();
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
            w.stop();
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
    let out = tx.downgrade();
    let state =
        StreamState { service: service.clone(), out: tx, watchers: HashMap::new(), next_id: 0 };
    tokio::spawn(run_stream(state, inbound));
    OutStream { rx, synced: Vec::new(), cursor: 0, service: service.clone(), out }
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
        let w = WatcherState {
            spec,
            next: from,
            progress: Arc::new(AtomicI64::new(from)),
            alive: Arc::new(AtomicBool::new(true)),
        };
        let task = tokio::spawn(run_watcher(service.clone(), tx, w, false));
        LocalWatch { rx, _task: AbortOnDrop(task.abort_handle()) }
    }

    /// The next response with events; etcd's compaction error if the
    /// history from `from` is gone.
    pub(crate) async fn next(&mut self) -> Result<pb::WatchResponse, Status> {
        loop {
            return match self.rx.recv().await {
                Some(Outgoing::Response { response, .. }) if response.canceled => {
                    Err(kv_status(synod_kv::KvError::Compacted))
                }
                Some(Outgoing::Response { response, .. }) => Ok(response),
                // Never sent: this watcher keeps its task.
                Some(Outgoing::Synced(_)) => continue,
                None => Err(Status::unavailable("etcdserver: server stopped")),
            };
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

    fn put(key: &str, revision: i64) -> Event {
        Event {
            r#type: EventType::Put,
            kv: synod_kv::KeyValue {
                key: bytes::Bytes::copy_from_slice(key.as_bytes()),
                mod_revision: revision,
                ..Default::default()
            },
            prev_kv: None,
        }
    }

    fn events_batch(events: Vec<Event>, through: i64) -> Batch {
        Batch { events: Arc::new(events), through }
    }

    /// A caught-up watcher of `[a, c)` on `hub`, from revision `next`.
    fn synced(hub: &WatchHub, next: i64) -> Synced {
        let spec = Spec {
            id: 7,
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            prev_kv: false,
            no_put: false,
            no_delete: false,
            progress_notify: false,
        };
        let w = WatcherState {
            spec,
            next,
            progress: Arc::new(AtomicI64::new(next)),
            alive: Arc::new(AtomicBool::new(true)),
        };
        Synced { w, rx: hub.subscribe(next).expect("caught up") }
    }

    fn revisions(p: Polled) -> Option<(i64, Vec<i64>)> {
        match p {
            Polled::Response(r) => Some((
                r.header.map_or(0, |h| h.revision),
                r.events.iter().map(|e| e.kv.as_ref().map_or(0, |kv| kv.mod_revision)).collect(),
            )),
            _ => None,
        }
    }

    #[test]
    fn a_caught_up_watcher_gets_every_waiting_batch_in_one_response_once() {
        let hub = WatchHub::new(5);
        let mut s = synced(&hub, 6);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let stamp = HeaderStamp::default();
        assert!(matches!(s.poll(&mut cx, &stamp), Polled::Idle));
        hub.publish(events_batch(vec![put("b", 5), put("b", 6)], 6));
        hub.publish(events_batch(vec![put("z", 7)], 7));
        hub.publish(events_batch(vec![put("a", 8), put("c", 8)], 8));
        // Revision 5 was delivered before (next = 6); z and c are outside.
        assert_eq!(revisions(s.poll(&mut cx, &stamp)), Some((8, vec![6, 8])));
        assert_eq!(s.w.progress.load(Ordering::Relaxed), 9);
        assert!(matches!(s.poll(&mut cx, &stamp), Polled::Idle));
        // Only unwanted events: nothing sent, but progress moves.
        hub.publish(events_batch(vec![put("x", 9)], 9));
        assert!(matches!(s.poll(&mut cx, &stamp), Polled::Idle));
        assert_eq!(s.w.progress.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn a_dropped_watcher_delivers_what_it_has_then_catches_up_and_a_canceled_one_is_gone() {
        let hub = WatchHub::new(2);
        let mut s = synced(&hub, 2);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let stamp = HeaderStamp::default();
        hub.publish(events_batch(vec![put("a", 2)], 2));
        hub.restart_at(10);
        assert_eq!(revisions(s.poll(&mut cx, &stamp)), Some((2, vec![2])));
        assert!(matches!(s.poll(&mut cx, &stamp), Polled::Dropped));
        assert_eq!(s.w.next, 3, "it catches up from revision 3");
        let mut t = synced(&hub, 10);
        hub.publish(events_batch(vec![put("a", 10)], 10));
        t.w.alive.store(false, Ordering::Relaxed);
        assert!(matches!(t.poll(&mut cx, &stamp), Polled::Gone), "canceled: nothing more");
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
