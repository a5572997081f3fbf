//! `synod bench put|get|mixed|txn|watch|lease-keepalive`: a closed-loop
//! load generator over the etcd v3 gRPC API (`KV`, `Watch`, `Lease`), so
//! the same load runs against a Synod cluster and a real etcd alike.
//!
//! - `put`, `get`, `mixed`: one `Put` / `Range` per request.
//! - `txn`: a compare-and-put per request — `Txn` comparing the key's
//!   version (`> -1`, which always holds, so every txn writes) with a `Put`
//!   on success and a `Range` on failure: the compare and branch machinery
//!   plus one write.
//! - `watch`: watch fan-out ([`watch`]). `--watchers` streams (1,000 by
//!   default) each watch the whole key space; one writer puts `--rate`
//!   values per second (100 by default). A request is one event delivered
//!   to one watcher; its latency is from the moment the writer *sent* the
//!   put (the send time travels in the value's first 16 bytes) to the
//!   moment the watcher's task received the event, so it includes the
//!   commit. Events not delivered within `--timeout-ms` after the writer
//!   stops count as errors.
//! - `lease-keepalive`: each of `--clients` clients grants a lease
//!   (`--lease-ttl`), then sends keep-alives on its own `LeaseKeepAlive`
//!   stream, one outstanding at a time; a request is one keep-alive
//!   answered with a positive TTL. The leases are revoked at the end.
//!
//! `--clients` tasks each send one request, wait for its answer and send the
//! next (optionally paced so that all of them together send `--rate`
//! requests per second), over `--conns` HTTP/2 connections spread round-robin
//! over `--endpoints`. The run stops after `--total` requests or after
//! `--duration` seconds; every request has a timeout, so the run is bounded.
//! At the end it prints the throughput (answered requests per second of
//! wall time), the latency percentiles of the answered requests
//! (p50/p90/p99/p99.9/max, from an HDR histogram in microseconds) and every
//! kind of error with its count; `--json` prints the same as one JSON
//! object and `--plot` writes an SVG with the latency histogram and the
//! throughput of each second. A progress bar goes to stderr when it is a
//! terminal.
//!
//! A failed request counts once; the client then pauses before its next
//! one ([`Backoff`]: 10 ms doubling up to 1 s, none after an answer), so
//! requests that fail at once (a dead node, a closed stream) cannot make a
//! client spin; a lease-keepalive client whose stream failed opens a new
//! one for its lease (a new lease if it is gone) on its next request. With
//! `--json` each kind of error is also printed to stderr with its count.
//!
//! Exit codes: 0 when at least one request was answered, 1 when none was
//! (or no endpoint could be reached), 2 on bad usage.

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use synod_etcdpb::etcdserverpb::kv_client::KvClient;
use synod_etcdpb::etcdserverpb::lease_client::LeaseClient;
use synod_etcdpb::etcdserverpb::{
    Compare, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest, compare, request_op,
};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

mod watch;

/// Largest latency the histogram holds (longer ones are clamped): 1 hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Client tasks at most.
const MAX_CLIENTS: u32 = 100_000;
/// Bars of the SVG latency histogram.
const PLOT_BUCKETS: usize = 60;
/// Distinct error messages kept (the rest are counted under "other").
const MAX_ERROR_KINDS: usize = 32;

/// What each request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// `Put` a value under a random key of the key space.
    Put,
    /// `Range` one random key of the key space.
    Get,
    /// Gets and puts, `--read-percent` of them gets.
    Mixed,
    /// A compare-and-put `Txn` on a random key.
    Txn,
    /// Watch fan-out: one writer, `--watchers` watchers.
    Watch,
    /// Keep-alives of `--clients` leases.
    LeaseKeepalive,
}

/// How gets are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable: through the leader's read barrier.
    L,
    /// Serializable: from the local state of the member asked.
    S,
}

/// Arguments of `synod bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The load: put, get, mixed, txn, watch or lease-keepalive.
    #[arg(value_enum)]
    pub workload: Workload,
    /// Client endpoints (`host:port`, comma-separated); connections are
    /// spread over them round-robin.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Concurrent clients, each with one request outstanding.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_CLIENTS as i64))]
    pub clients: u32,
    /// gRPC connections shared by the clients.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub conns: u32,
    /// Bytes of each key.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub key_size: u32,
    /// Bytes of each put value.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=1_500_000))]
    pub value_size: u32,
    /// Distinct keys the requests pick from at random.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub key_space: u64,
    /// Stop after this many requests.
    #[arg(long, conflicts_with = "duration", required_unless_present = "duration")]
    pub total: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Send at most this many requests per second (all clients together).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Gets are linearizable (l) or serializable (s).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Percentage of gets in the mixed load.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub read_percent: u8,
    /// Give up on a request (and on connecting) after this long.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Request n uses key n modulo the key space (instead of a random
    /// one), so `--total` equal to `--key-space` writes every key once.
    #[arg(long)]
    pub sequential_keys: bool,
    /// Watch streams of the watch load, each watching the whole key space.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=MAX_CLIENTS as i64))]
    pub watchers: u32,
    /// TTL of the leases the lease-keepalive load keeps alive, seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..=3600))]
    pub lease_ttl: i64,
    /// Runtime threads of the load generator (1: a single-threaded runtime,
    /// the cheapest per request when it is not the bottleneck).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG latency histogram and throughput plot to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Checks what clap cannot; the message names the flag.
fn validate(args: &BenchArgs) -> Result<(), String> {
    if args.total == Some(0) {
        return Err("--total must be at least 1".into());
    }
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0 && d <= 86_400.0)
    {
        return Err(format!("--duration {d}: must be a number of seconds in (0, 86400]"));
    }
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(format!("--rate {r}: must be a positive number of requests per second"));
    }
    if args.timeout_ms == 0 {
        return Err("--timeout-ms must be at least 1".into());
    }
    if args.endpoints.is_empty() || args.endpoints.iter().any(|e| e.trim().is_empty()) {
        return Err("--endpoints: give at least one host:port".into());
    }
    if args.workload == Workload::Watch && args.value_size < watch::STAMP_BYTES as u32 {
        return Err(format!(
            "--value-size {}: the watch load carries the send time in the first {} bytes",
            args.value_size,
            watch::STAMP_BYTES
        ));
    }
    let fits = 10u64.checked_pow(args.key_size).is_none_or(|n| args.key_space <= n);
    if !fits {
        return Err(format!(
            "--key-space {} does not fit in keys of --key-size {}",
            args.key_space, args.key_size
        ));
    }
    Ok(())
}

/// Key number `index` as exactly `key_size` bytes: its decimal digits,
/// left-padded with zeros (`validate` checked that it fits).
pub fn key(index: u64, key_size: usize) -> Vec<u8> {
    let mut k = vec![b'0'; key_size];
    let mut rest = index;
    for digit in k.iter_mut().rev() {
        if rest == 0 {
            break;
        }
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    k
}

/// What one client task saw.
pub(crate) struct Tally {
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) errors: BTreeMap<String, u64>,
}

impl Tally {
    pub(crate) fn new() -> Tally {
        Tally {
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
            errors: BTreeMap::new(),
        }
    }

    pub(crate) fn error(&mut self, kind: String) {
        if self.errors.len() < MAX_ERROR_KINDS || self.errors.contains_key(&kind) {
            *self.errors.entry(kind).or_default() += 1;
        } else {
            *self.errors.entry("other".into()).or_default() += 1;
        }
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        self.latency_us.add(&other.latency_us).expect("same bounds");
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
    }
}

/// The shared state of a run.
struct Shared {
    args: BenchArgs,
    /// Requests started (in `--total` mode: claimed).
    issued: AtomicU64,
    /// Requests finished, answered or not.
    finished: AtomicU64,
    /// Set when the clients must stop starting requests.
    stop: AtomicBool,
    value: Vec<u8>,
    started: Instant,
    deadline: Option<Instant>,
}

impl Shared {
    /// Claims the next request, or `None` when the run is over.
    fn claim(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.stop.store(true, Ordering::Relaxed);
            return None;
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        if self.args.total.is_some_and(|t| n >= t) {
            return None;
        }
        Some(n)
    }
}

/// A client's keep-alive stream and its lease.
struct KeepAlive {
    id: i64,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    answers: tonic::Streaming<LeaseKeepAliveResponse>,
}

/// Why a keep-alive failed: its message, and whether the lease itself is
/// gone (answered TTL 0), so that the next stream needs a new grant.
struct KeepAliveError {
    message: String,
    lease_gone: bool,
}

impl From<String> for KeepAliveError {
    fn from(message: String) -> KeepAliveError {
        KeepAliveError { message, lease_gone: false }
    }
}

impl KeepAlive {
    /// Opens a keep-alive stream for lease `id`, granting a new lease
    /// (`ttl` seconds) first when `id` is `None`.
    async fn open(
        channel: Channel,
        id: Option<i64>,
        ttl: i64,
        timeout: Duration,
    ) -> Result<KeepAlive, KeepAliveError> {
        let mut lease = LeaseClient::new(channel);
        let id = match id {
            Some(id) => id,
            None => {
                tokio::time::timeout(timeout, lease.lease_grant(LeaseGrantRequest { ttl, id: 0 }))
                    .await
                    .map_err(|_| "lease grant timed out".to_string())?
                    .map_err(|s| format!("lease grant: {:?}: {}", s.code(), s.message()))?
                    .into_inner()
                    .id
            }
        };
        // A first keep-alive is queued before the call: etcd (grpc-go) sends
        // the response headers the call waits for only with its first
        // answer. It is a warm-up, not counted.
        let (requests, rx) = mpsc::channel(1);
        requests
            .send(LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| "keep-alive stream closed".to_string())?;
        let answers =
            tokio::time::timeout(timeout, lease.lease_keep_alive(ReceiverStream::new(rx)))
                .await
                .map_err(|_| "keep-alive stream timed out".to_string())?
                .map_err(|s| format!("keep-alive stream: {:?}: {}", s.code(), s.message()))?
                .into_inner();
        let mut k = KeepAlive { id, requests, answers };
        tokio::time::timeout(timeout, k.answer())
            .await
            .map_err(|_| "the first keep-alive timed out".to_string())??;
        Ok(k)
    }

    /// One keep-alive, answered.
    async fn once(&mut self) -> Result<(), KeepAliveError> {
        self.requests
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| "keep-alive stream closed".to_string())?;
        self.answer().await
    }

    /// The answer to the keep-alive sent last.
    async fn answer(&mut self) -> Result<(), KeepAliveError> {
        match self.answers.message().await {
            Ok(Some(a)) if a.id == self.id && a.ttl > 0 => Ok(()),
            Ok(Some(a)) => Err(KeepAliveError {
                message: format!("keep-alive answered TTL {} (lease gone)", a.ttl),
                lease_gone: true,
            }),
            Ok(None) => Err("keep-alive stream ended".to_string().into()),
            Err(s) => Err(format!("keep-alive: {:?}: {}", s.code(), s.message()).into()),
        }
    }
}

/// A lease-keepalive client's lease and stream. A failed keep-alive drops
/// the stream (a gRPC stream that failed once stays failed); the next
/// request, after the client's [`Backoff`] pause, opens a new one for the
/// same lease, or for a new lease when the old one is gone.
#[derive(Default)]
struct LeaseKeeper {
    lease: Option<i64>,
    stream: Option<KeepAlive>,
}

impl LeaseKeeper {
    /// Opens a stream (granting a lease first if there is none); the
    /// warm-up keep-alive is not a request.
    async fn open(&mut self, channel: &Channel, ttl: i64, timeout: Duration) -> Result<(), String> {
        match KeepAlive::open(channel.clone(), self.lease, ttl, timeout).await {
            Ok(ka) => {
                self.lease = Some(ka.id);
                self.stream = Some(ka);
                Ok(())
            }
            Err(e) => Err(self.broken(e)),
        }
    }

    /// One keep-alive on the open stream.
    async fn keep_alive(&mut self) -> Result<(), String> {
        let Some(ka) = self.stream.as_mut() else {
            return Err("no keep-alive stream".into());
        };
        let result = ka.once().await;
        result.map_err(|e| self.broken(e))
    }

    /// Drops the stream (and the lease if it is gone); the error's message.
    fn broken(&mut self, e: KeepAliveError) -> String {
        self.stream = None;
        if e.lease_gone {
            self.lease = None;
        }
        e.message
    }
}

/// First pause after a failed request.
const RETRY_MIN: Duration = Duration::from_millis(10);
/// Longest pause between failed requests.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// A client's pause before its next request after consecutive failures:
/// none after an answer, then [`RETRY_MIN`], doubling up to [`RETRY_MAX`].
/// So a client whose requests fail at once (a closed stream, a refused
/// connection) sends at most about one request per `RETRY_MAX` instead of
/// spinning, and every failure counts once.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    pause: Duration,
}

impl Backoff {
    /// The pause to take before the next request.
    pub(crate) fn pause(&self) -> Duration {
        self.pause
    }

    /// A request failed: the next pause is longer (bounded).
    pub(crate) fn failed(&mut self) {
        self.pause = (self.pause * 2).clamp(RETRY_MIN, RETRY_MAX);
    }

    /// A request was answered: no pause.
    pub(crate) fn answered(&mut self) {
        self.pause = Duration::ZERO;
    }
}

/// A compare-and-put: put `key` if its version is above -1 (always), else
/// read it.
fn compare_and_put(key: Vec<u8>, value: Vec<u8>) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Greater as i32,
            target: compare::CompareTarget::Version as i32,
            key: key.clone(),
            range_end: Vec::new(),
            target_union: Some(compare::TargetUnion::Version(-1)),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.clone(),
                value,
                ..PutRequest::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key,
                ..RangeRequest::default()
            })),
        }],
    }
}

/// One closed-loop client: request, wait, repeat.
async fn client(shared: Arc<Shared>, channel: Channel, index: u32) -> Tally {
    let args = &shared.args;
    let mut tally = Tally::new();
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut keeper = LeaseKeeper::default();
    let mut backoff = Backoff::default();
    let mut kv = KvClient::new(channel.clone());
    let mut rng = StdRng::seed_from_u64(rand::random::<u64>() ^ u64::from(index));
    // Pacing: this client's share of the rate, offset so that clients do
    // not all fire together.
    let period = args.rate.map(|r| Duration::from_secs_f64(f64::from(args.clients) / r));
    let mut next_send =
        period.map(|p| shared.started + p.mul_f64(f64::from(index) / f64::from(args.clients)));
    loop {
        if !backoff.pause().is_zero() {
            let until = Instant::now() + backoff.pause();
            let until = shared.deadline.map_or(until, |d| until.min(d));
            tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
        }
        let Some(n) = shared.claim() else { break };
        if let (Some(p), Some(at)) = (period, next_send.as_mut()) {
            tokio::time::sleep_until(tokio::time::Instant::from_std(*at)).await;
            *at += p;
        }
        let index = if args.sequential_keys {
            n % args.key_space
        } else {
            rng.random_range(0..args.key_space)
        };
        let k = key(index, args.key_size as usize);
        if args.workload == Workload::LeaseKeepalive
            && keeper.stream.is_none()
            && let Err(e) = keeper.open(&channel, args.lease_ttl, timeout).await
        {
            backoff.failed();
            tally.error(e);
            shared.finished.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let began = Instant::now();
        let answer = match args.workload {
            Workload::LeaseKeepalive => {
                let answer = tokio::time::timeout(timeout, keeper.keep_alive()).await;
                if answer.is_err() {
                    // The answer may still come on this stream: start afresh.
                    keeper.stream = None;
                }
                answer
            }
            Workload::Txn => {
                let req = compare_and_put(k, shared.value.clone());
                tokio::time::timeout(timeout, kv.txn(req))
                    .await
                    .map(|r| r.map(drop).map_err(status))
            }
            w if w == Workload::Get
                || (w == Workload::Mixed && rng.random_range(0..100u8) < args.read_percent) =>
            {
                let req = RangeRequest {
                    key: k,
                    serializable: args.consistency == Consistency::S,
                    ..RangeRequest::default()
                };
                tokio::time::timeout(timeout, kv.range(req))
                    .await
                    .map(|r| r.map(drop).map_err(status))
            }
            _ => {
                let req =
                    PutRequest { key: k, value: shared.value.clone(), ..PutRequest::default() };
                tokio::time::timeout(timeout, kv.put(req))
                    .await
                    .map(|r| r.map(drop).map_err(status))
            }
        };
        let took_us = (began.elapsed().as_micros() as u64).clamp(1, MAX_LATENCY_US);
        match answer {
            Ok(Ok(())) => {
                backoff.answered();
                tally.latency_us.saturating_record(took_us)
            }
            Ok(Err(e)) => {
                backoff.failed();
                tally.error(e)
            }
            Err(_) => {
                backoff.failed();
                tally.error(format!("timeout after {} ms", args.timeout_ms))
            }
        }
        shared.finished.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(id) = keeper.lease {
        drop(keeper.stream);
        let mut lease = LeaseClient::new(channel);
        let revoke = lease.lease_revoke(LeaseRevokeRequest { id });
        if let Ok(Err(s)) = tokio::time::timeout(timeout, revoke).await {
            tally.error(format!("lease revoke: {:?}: {}", s.code(), s.message()));
        }
    }
    tally
}

/// An error answer as one line: its code and message.
fn status(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

async fn connect(endpoint: &str, timeout: Duration) -> Result<Channel, String> {
    let url =
        if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") };
    Endpoint::from_shared(url)
        .map_err(|e| format!("bad endpoint {endpoint}: {e}"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {endpoint}: {e}"))
}

/// The outcome of a run.
pub struct Report {
    /// The arguments it ran with.
    pub args: BenchArgs,
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// Latency of the answered requests, microseconds.
    pub latency_us: Histogram<u64>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Requests finished in each second of the run (answered or not).
    pub per_second: Vec<u64>,
    /// What a load reports besides (the watch load: watchers, puts,
    /// events expected).
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    /// Answered requests.
    pub fn ok(&self) -> u64 {
        self.latency_us.len()
    }

    /// Failed requests.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Answered requests per second of wall time.
    pub fn throughput(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latency in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.ok() == 0 {
            return 0.0;
        }
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    fn percentiles(&self) -> [(&'static str, f64); 7] {
        let mean = if self.ok() == 0 { 0.0 } else { self.latency_us.mean() / 1000.0 };
        [
            ("p50", self.quantile_ms(0.5)),
            ("p90", self.quantile_ms(0.9)),
            ("p99", self.quantile_ms(0.99)),
            ("p99.9", self.quantile_ms(0.999)),
            ("max", if self.ok() == 0 { 0.0 } else { self.latency_us.max() as f64 / 1000.0 }),
            ("min", if self.ok() == 0 { 0.0 } else { self.latency_us.min() as f64 / 1000.0 }),
            ("mean", mean),
        ]
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let a = &self.args;
        let latency: serde_json::Map<String, serde_json::Value> =
            self.percentiles().iter().map(|(name, v)| (name.to_string(), json!(v))).collect();
        let mut j = json!({
            "workload": workload_name(a.workload),
            "endpoints": a.endpoints,
            "clients": a.clients,
            "conns": a.conns,
            "key_size": a.key_size,
            "value_size": a.value_size,
            "key_space": a.key_space,
            "consistency": format!("{:?}", a.consistency).to_lowercase(),
            "rate": a.rate,
            "threads": a.threads,
            "requests": self.ok() + self.failed(),
            "ok": self.ok(),
            "errors": self.failed(),
            "error_kinds": self.errors,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "throughput_rps": self.throughput(),
            "latency_ms": latency,
            "per_second": self.per_second,
        });
        if let Some(o) = j.as_object_mut() {
            o.extend(self.details.clone());
        }
        j
    }

    /// The report as text.
    pub fn to_text(&self) -> String {
        let a = &self.args;
        let mut s = format!(
            "synod bench {}: {} client(s) over {} connection(s) to {}; key {} B, value {} B\n",
            workload_name(a.workload),
            a.clients,
            a.conns,
            a.endpoints.join(","),
            a.key_size,
            a.value_size
        );
        s.push_str(&format!(
            "requests    {} ok, {} failed in {:.3} s\nthroughput  {:.1} req/s\nlatency ms ",
            self.ok(),
            self.failed(),
            self.elapsed.as_secs_f64(),
            self.throughput()
        ));
        for (name, v) in self.percentiles() {
            s.push_str(&format!(" {name} {v:.3}"));
        }
        s.push('\n');
        for (name, v) in &self.details {
            s.push_str(&format!("{name:<11} {v}\n"));
        }
        for (kind, n) in &self.errors {
            s.push_str(&format!("error       {n} × {kind}\n"));
        }
        s
    }
}

/// The workload's name on the command line.
pub fn workload_name(w: Workload) -> &'static str {
    match w {
        Workload::Put => "put",
        Workload::Get => "get",
        Workload::Mixed => "mixed",
        Workload::Txn => "txn",
        Workload::Watch => "watch",
        Workload::LeaseKeepalive => "lease-keepalive",
    }
}

/// Runs the load; `Err` when no endpoint could be reached.
async fn run_load(args: BenchArgs) -> Result<Report, String> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut channels = Vec::with_capacity(args.conns as usize);
    for i in 0..args.conns as usize {
        channels.push(connect(&args.endpoints[i % args.endpoints.len()], timeout).await?);
    }
    if args.workload == Workload::Watch {
        return Ok(watch::run(args, channels).await);
    }
    let value: Vec<u8> = (0..args.value_size).map(|i| b'a' + (i % 26) as u8).collect();
    let started = Instant::now();
    let shared = Arc::new(Shared {
        deadline: args.duration.map(|d| started + Duration::from_secs_f64(d)),
        args: args.clone(),
        issued: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        value,
        started,
    });
    let tasks: Vec<_> = (0..args.clients)
        .map(|i| {
            let channel = channels[i as usize % channels.len()].clone();
            tokio::spawn(client(shared.clone(), channel, i))
        })
        .collect();

    // Progress and the per-second counts, until every client is done.
    let bar = progress_bar(&args);
    let sampler = {
        let shared = shared.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut per_second = Vec::new();
            let mut last = 0;
            let step = Duration::from_millis(100);
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::from_std(shared.started) + step,
                step,
            );
            for n in 1u64.. {
                tick.tick().await;
                let finished = shared.finished.load(Ordering::Relaxed);
                if args.total.is_some() {
                    bar.set_position(finished);
                } else {
                    bar.set_position(shared.started.elapsed().as_millis() as u64);
                }
                bar.set_message(format!("{finished} requests"));
                if n % 10 == 0 {
                    per_second.push(finished - last);
                    last = finished;
                }
                if shared.stop.load(Ordering::Relaxed) {
                    // The rest (a partial second) is added by the caller.
                    return (per_second, last);
                }
            }
            (per_second, last)
        })
    };
    let mut tally = Tally::new();
    for t in tasks {
        match t.await {
            Ok(t) => tally.merge(t),
            Err(e) => tally.error(format!("client task failed: {e}")),
        }
    }
    let elapsed = started.elapsed();
    shared.stop.store(true, Ordering::Relaxed);
    let (mut per_second, counted) =
        sampler.await.map_err(|e| format!("progress task failed: {e}"))?;
    let rest = shared.finished.load(Ordering::Relaxed).saturating_sub(counted);
    if rest > 0 {
        per_second.push(rest);
    }
    bar.finish_and_clear();
    Ok(Report {
        args,
        elapsed,
        latency_us: tally.latency_us,
        errors: tally.errors,
        per_second,
        details: serde_json::Map::new(),
    })
}

fn progress_bar(args: &BenchArgs) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (len, template) = match (args.total, args.duration) {
        (Some(t), _) => (t, "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})"),
        (None, Some(d)) => ((d * 1000.0) as u64, "{spinner} [{elapsed_precise}] {wide_bar} {msg}"),
        (None, None) => (0, "{spinner} {msg}"),
    };
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// An SVG with the latency histogram (log-spaced buckets between the
/// fastest and the slowest answer, p50 and p99 marked) above the
/// throughput of each second.
pub fn svg(report: &Report) -> String {
    const W: f64 = 800.0;
    const H: f64 = 260.0;
    const LEFT: f64 = 70.0;
    const PLOT_W: f64 = W - LEFT - 20.0;
    const PLOT_H: f64 = H - 80.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n",
        2.0 * H
    );
    let a = &report.args;
    s.push_str(&format!(
        "<text x=\"{LEFT}\" y=\"20\" font-size=\"14\">synod bench {} — {} clients, {} conns, \
         {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms</text>\n",
        workload_name(a.workload),
        a.clients,
        a.conns,
        report.throughput(),
        report.quantile_ms(0.5),
        report.quantile_ms(0.99)
    ));
    // Latency histogram.
    let top = 40.0;
    let bottom = top + PLOT_H;
    axes(&mut s, top, bottom, "latency (ms, log scale)", "requests");
    if report.ok() > 0 {
        let h = &report.latency_us;
        let (lo, hi) = (h.min().max(1) as f64, (h.max().max(h.min() + 1)) as f64);
        let ratio = (hi / lo).powf(1.0 / PLOT_BUCKETS as f64);
        let edges: Vec<u64> =
            (0..=PLOT_BUCKETS).map(|i| (lo * ratio.powi(i as i32)).round() as u64).collect();
        let counts: Vec<u64> = edges
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let upper = if i + 1 == PLOT_BUCKETS { w[1] } else { w[1].saturating_sub(1) };
                if upper < w[0] { 0 } else { h.count_between(w[0], upper) }
            })
            .collect();
        let most = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
        let bar_w = PLOT_W / PLOT_BUCKETS as f64;
        for (i, c) in counts.iter().enumerate() {
            let bh = *c as f64 / most * PLOT_H;
            s.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#4878a8\"/>\n",
                LEFT + i as f64 * bar_w,
                bottom - bh,
                (bar_w - 1.0).max(0.5)
            ));
        }
        let x_of = |us: f64| LEFT + (us / lo).ln() / (hi / lo).ln().max(1e-9) * PLOT_W;
        for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
            let x = x_of(h.value_at_quantile(q).max(1) as f64);
            s.push_str(&format!(
                "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"#c03030\" \
                 stroke-dasharray=\"4 3\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c03030\">{name}</text>\n",
                x + 3.0,
                top + 12.0
            ));
        }
        for i in 0..=4 {
            let us = lo * (hi / lo).powf(i as f64 / 4.0);
            s.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.3}</text>\n",
                x_of(us),
                bottom + 15.0,
                us / 1000.0
            ));
        }
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            LEFT - 5.0,
            top + 10.0,
            most as u64
        ));
    }
    // Throughput per second.
    let top = H + 40.0;
    let bottom = top + PLOT_H;
    axes(&mut s, top, bottom, "second of the run", "requests / s");
    let most = report.per_second.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = report.per_second.len().max(2) as f64 - 1.0;
    let points: Vec<String> = report
        .per_second
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!("{:.1},{:.1}", LEFT + i as f64 / n * PLOT_W, bottom - *c as f64 / most * PLOT_H)
        })
        .collect();
    s.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#4878a8\" stroke-width=\"2\" points=\"{}\"/>\n",
        points.join(" ")
    ));
    s.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n<text x=\"{:.1}\" \
         y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
        LEFT - 5.0,
        top + 10.0,
        most as u64,
        LEFT + PLOT_W,
        bottom + 15.0,
        report.per_second.len()
    ));
    s.push_str("</svg>\n");
    s
}

fn axes(s: &mut String, top: f64, bottom: f64, x_label: &str, y_label: &str) {
    let left = 70.0;
    let right = 780.0;
    s.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{bottom}\" stroke=\"black\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{x_label}</text>\n\
         <text x=\"15\" y=\"{:.1}\" transform=\"rotate(-90 15 {:.1})\" \
         text-anchor=\"middle\">{y_label}</text>\n",
        (left + right) / 2.0,
        bottom + 32.0,
        (top + bottom) / 2.0,
        (top + bottom) / 2.0
    ));
}

/// Runs `synod bench`.
pub fn run(args: BenchArgs) -> ExitCode {
    if let Err(e) = validate(&args) {
        eprintln!("synod bench: {e}");
        return ExitCode::from(2);
    }
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.threads))
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("synod bench: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let plot = args.plot.clone();
    let json = args.json;
    let report = match runtime.block_on(run_load(args)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("synod bench: {e}");
            return ExitCode::from(1);
        }
    };
    if json {
        println!("{}", report.to_json());
        // The kinds are in the JSON too; on stderr a script's log keeps them.
        for (kind, n) in &report.errors {
            eprintln!("synod bench {}: {n} × {kind}", workload_name(report.args.workload));
        }
    } else {
        print!("{}", report.to_text());
    }
    if let Some(path) = plot
        && let Err(e) = std::fs::write(&path, svg(&report))
    {
        eprintln!("synod bench: cannot write {}: {e}", path.display());
        return ExitCode::from(1);
    }
    if report.ok() == 0 {
        eprintln!("synod bench: no request was answered");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(line: &str) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(line.split_whitespace()))
            .map(|c| c.bench)
    }

    #[test]
    fn the_backoff_after_failures_is_bounded_and_an_answer_resets_it() {
        let mut b = Backoff::default();
        assert_eq!(b.pause(), Duration::ZERO, "no pause before any failure");
        let mut pauses = Vec::new();
        for _ in 0..20 {
            b.failed();
            pauses.push(b.pause());
        }
        assert_eq!(pauses[0], RETRY_MIN);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert!(pauses.iter().all(|&p| (RETRY_MIN..=RETRY_MAX).contains(&p)));
        assert_eq!(pauses[19], RETRY_MAX);
        // A client failing at once for 10 s sends at most this many requests.
        let mut spent = Duration::ZERO;
        let mut requests = 0;
        let mut b = Backoff::default();
        while spent < Duration::from_secs(10) {
            requests += 1;
            b.failed();
            spent += b.pause();
        }
        assert!(requests <= 20, "{requests} requests in 10 s");
        b.answered();
        assert_eq!(b.pause(), Duration::ZERO);
    }

    #[test]
    fn keys_have_the_asked_size_and_stay_distinct() {
        assert_eq!(key(42, 8), b"00000042".to_vec());
        assert_eq!(key(0, 1), b"0".to_vec());
        assert_eq!(key(123, 3), b"123".to_vec());
        let ks: std::collections::BTreeSet<_> = (0..1000).map(|i| key(i, 3)).collect();
        assert_eq!(ks.len(), 1000);
    }

    #[test]
    fn usage_errors_name_the_flag() {
        assert!(parse("put --total 5 --duration 3").is_err(), "total and duration conflict");
        assert!(parse("put").is_err(), "one of total or duration is required");
        assert!(parse("put --total 5 --clients 0").is_err());
        let a = parse("put --total 5 --key-size 2 --key-space 101").expect("parses");
        assert!(validate(&a).expect_err("does not fit").contains("--key-space"));
        let a = parse("get --duration 0 --consistency s").expect("parses");
        assert!(validate(&a).expect_err("zero duration").contains("--duration"));
        let a = parse("mixed --total 0").expect("parses");
        assert!(validate(&a).expect_err("zero total").contains("--total"));
        let a = parse("put --total 5 --rate=-1").expect("parses");
        assert!(validate(&a).expect_err("negative rate").contains("--rate"));
        let a = parse("put --endpoints a:1,b:2 --total 5 --clients 16 --conns 4").expect("parses");
        assert_eq!(validate(&a), Ok(()));
        assert_eq!(a.endpoints, vec!["a:1", "b:2"]);
    }

    fn report() -> Report {
        let mut latency_us = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("bounds");
        for us in 1..=1000u64 {
            latency_us.record(us * 10).expect("in range");
        }
        let mut errors = BTreeMap::new();
        errors.insert("Unavailable: etcdserver: no leader".to_string(), 3);
        Report {
            args: parse("put --total 1003 --clients 4").expect("parses"),
            elapsed: Duration::from_secs(2),
            latency_us,
            errors,
            per_second: vec![600, 403],
            details: serde_json::Map::new(),
        }
    }

    #[test]
    fn the_report_counts_and_ranks_latencies() {
        let r = report();
        assert_eq!((r.ok(), r.failed()), (1000, 3));
        assert!((r.throughput() - 500.0).abs() < 1e-9);
        let p50 = r.quantile_ms(0.5);
        assert!((4.9..=5.1).contains(&p50), "p50 {p50}");
        assert!(r.quantile_ms(0.99) <= r.quantile_ms(0.999));
        let j = r.to_json();
        assert_eq!(j["ok"], 1000);
        assert_eq!(j["errors"], 3);
        assert_eq!(j["workload"], "put");
        assert!(j["latency_ms"]["max"].as_f64().expect("max") >= 9.99);
        let text = r.to_text();
        assert!(text.contains("3 × Unavailable: etcdserver: no leader"), "{text}");
    }

    #[test]
    fn the_svg_is_one_document_with_every_bar() {
        let r = report();
        let s = svg(&r);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("fill=\"#4878a8\"/>").count(), PLOT_BUCKETS);
        assert!(s.contains("p50") && s.contains("polyline"));
        let empty = Report { latency_us: Histogram::new(3).expect("hist"), ..report() };
        assert!(svg(&empty).ends_with("</svg>\n"));
    }
}
