//! `synod bench watch`: watch fan-out. `--watchers` Watch streams (spread
//! over the connections) each watch the whole key space from the current
//! revision; once every watch is created, one writer puts random keys of the
//! key space at `--rate` puts per second (100 when not given) for
//! `--duration` seconds or `--total` puts.
//!
//! Every put's value starts with its send time ([`STAMP_BYTES`] decimal
//! digits: microseconds since the run started, taken just before the put
//! is sent), so a watcher measures the delivery latency of each event as
//! *receipt time − send time*: the commit plus the fan-out. One answered
//! request of the report is one event received by one watcher. After the
//! writer stops, the watchers wait up to `--timeout-ms` for the events they
//! still miss (puts acknowledged × watchers are expected); the missing ones
//! are errors.

use super::{BenchArgs, MAX_LATENCY_US, Report, Tally, key, status};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synod_etcdpb::etcdserverpb::kv_client::KvClient;
use synod_etcdpb::etcdserverpb::watch_client::WatchClient;
use synod_etcdpb::etcdserverpb::{
    PutRequest, RangeRequest, WatchCreateRequest, WatchRequest, watch_request,
};
use tokio::sync::{mpsc, watch};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Bytes of the send time at the start of each value.
pub(crate) const STAMP_BYTES: usize = 16;
/// Puts per second when `--rate` is not given.
pub const DEFAULT_PUT_RATE: f64 = 100.0;

/// What the watchers record, shared (the runtime is single-threaded by
/// default, so the lock is uncontended; one histogram per watcher would
/// cost megabytes each).
struct Seen {
    tally: Tally,
    /// Events received in each second since the writer started.
    per_second: Vec<u64>,
    last_event: Option<Instant>,
}

/// The writer's outcome, published to the watchers when it stops.
#[derive(Clone, Copy)]
struct WriterDone {
    acked_puts: u64,
    wait_until: Instant,
}

/// The value of a put sent `since_start` after the run began.
fn stamped_value(since_start: Duration, value_size: usize) -> Vec<u8> {
    let mut v = format!("{:0width$}", since_start.as_micros(), width = STAMP_BYTES).into_bytes();
    v.truncate(STAMP_BYTES);
    v.resize(value_size.max(STAMP_BYTES), b'w');
    v
}

/// The send time a value carries, if it carries one.
fn stamp_of(value: &[u8]) -> Option<Duration> {
    let digits = std::str::from_utf8(value.get(..STAMP_BYTES)?).ok()?;
    digits.parse::<u64>().ok().map(Duration::from_micros)
}

/// What every watcher shares.
#[derive(Clone)]
struct Watching {
    range: (Vec<u8>, Vec<u8>),
    /// The revision every watch starts at: the one after the cluster's
    /// latest when the load began, so that a watcher on a member still
    /// applying an earlier load's writes does not see them as events.
    start_revision: i64,
    started: Instant,
    writer_started: watch::Receiver<Option<Instant>>,
    done: watch::Receiver<Option<WriterDone>>,
    created: mpsc::Sender<Result<(), String>>,
    seen: Arc<Mutex<Seen>>,
    timeout: Duration,
}

/// One watcher: creates its watch, reports that, then records every event
/// until it has all the writer's puts or the wait is over.
async fn watcher(channel: Channel, w: Watching) -> Result<(), String> {
    let Watching {
        range,
        start_revision,
        started,
        writer_started,
        mut done,
        created,
        seen,
        timeout,
    } = w;
    let (tx, rx) = mpsc::channel(1);
    let create = WatchCreateRequest {
        key: range.0,
        range_end: range.1,
        start_revision,
        ..Default::default()
    };
    let request =
        WatchRequest { request_union: Some(watch_request::RequestUnion::CreateRequest(create)) };
    tx.send(request).await.map_err(|_| "watch stream closed".to_string())?;
    let mut client = WatchClient::new(channel);
    let open = client.watch(ReceiverStream::new(rx));
    let mut stream = match tokio::time::timeout(timeout, open).await {
        Ok(Ok(s)) => s.into_inner(),
        Ok(Err(s)) => return Err(format!("watch: {}", status(s))),
        Err(_) => return Err("watch: timed out opening the stream".into()),
    };
    match tokio::time::timeout(timeout, stream.message()).await {
        Ok(Ok(Some(r))) if r.created && !r.canceled => {}
        Ok(Ok(Some(r))) => return Err(format!("watch not created: {}", r.cancel_reason)),
        Ok(Ok(None)) => return Err("watch stream ended before the watch was created".into()),
        Ok(Err(s)) => return Err(format!("watch: {}", status(s))),
        Err(_) => return Err("watch: not created in time".into()),
    }
    let _ = created.send(Ok(())).await;
    let mut received = 0u64;
    loop {
        let finish = *done.borrow();
        if let Some(d) = finish
            && received >= d.acked_puts
        {
            return Ok(());
        }
        let next = match finish {
            Some(d) => match tokio::time::timeout_at(d.wait_until.into(), stream.message()).await {
                Ok(m) => m,
                Err(_) => {
                    let missing = d.acked_puts - received;
                    let mut s = seen.lock().map_err(|_| "poisoned".to_string())?;
                    for _ in 0..missing {
                        s.tally.error(format!("event not delivered within {timeout:?}"));
                    }
                    return Ok(());
                }
            },
            None => tokio::select! {
                m = stream.message() => m,
                _ = done.changed() => continue,
            },
        };
        let response = match next {
            Ok(Some(r)) => r,
            Ok(None) => return Err("watch stream ended".into()),
            Err(s) => return Err(format!("watch: {}", status(s))),
        };
        if response.canceled {
            return Err(format!("watch canceled: {}", response.cancel_reason));
        }
        let now = Instant::now();
        let since_start = now.duration_since(started);
        let writer_began = (*writer_started.borrow()).unwrap_or(started);
        let second = now.duration_since(writer_began).as_secs() as usize;
        let mut s = seen.lock().map_err(|_| "poisoned".to_string())?;
        for e in &response.events {
            received += 1;
            match e.kv.as_ref().and_then(|kv| stamp_of(&kv.value)) {
                Some(sent) => {
                    let us = since_start.saturating_sub(sent).as_micros() as u64;
                    s.tally.latency_us.saturating_record(us.clamp(1, MAX_LATENCY_US));
                }
                None => s.tally.error("an event without a send time".into()),
            }
        }
        if s.per_second.len() <= second {
            s.per_second.resize(second + 1, 0);
        }
        s.per_second[second] += response.events.len() as u64;
        s.last_event = Some(now);
    }
}

/// Runs the watch load over `channels`.
pub(super) async fn run(args: BenchArgs, channels: Vec<Channel>) -> Report {
    let timeout = Duration::from_millis(args.timeout_ms);
    let started = Instant::now();
    let seen = Arc::new(Mutex::new(Seen {
        tally: Tally::new(),
        per_second: Vec::new(),
        last_event: None,
    }));
    let key_size = args.key_size as usize;
    let mut range_end = key(args.key_space - 1, key_size);
    range_end.push(0);
    let range = (key(0, key_size), range_end);
    // The cluster's latest revision, read linearizably.
    let mut reader = KvClient::new(channels[0].clone());
    let latest = reader.range(RangeRequest {
        key: range.0.clone(),
        range_end: range.1.clone(),
        count_only: true,
        ..RangeRequest::default()
    });
    let start_revision = match tokio::time::timeout(timeout, latest).await {
        Ok(Ok(r)) => r.into_inner().header.map_or(0, |h| h.revision + 1),
        // The watchers then start at their member's revision; a failure
        // to reach the cluster shows in the watches and puts below.
        Ok(Err(_)) | Err(_) => 0,
    };
    let (writer_started_tx, writer_started) = watch::channel(None);
    let (done_tx, done) = watch::channel(None);
    let (created_tx, mut created_rx) = mpsc::channel(args.watchers as usize);
    let watching = Watching {
        range,
        start_revision,
        started,
        writer_started,
        done,
        created: created_tx,
        seen: seen.clone(),
        timeout,
    };
    let watchers: Vec<_> = (0..args.watchers as usize)
        .map(|i| tokio::spawn(watcher(channels[i % channels.len()].clone(), watching.clone())))
        .collect();
    drop(watching);
    // Every watch is created (or failed) before the first put.
    let mut created = 0u64;
    let deadline = tokio::time::Instant::now() + timeout;
    while created < u64::from(args.watchers) {
        match tokio::time::timeout_at(deadline, created_rx.recv()).await {
            Ok(Some(Ok(()))) => created += 1,
            Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
        }
    }

    // The writer.
    let writer_began = Instant::now();
    let _ = writer_started_tx.send(Some(writer_began));
    let rate = args.rate.unwrap_or(DEFAULT_PUT_RATE);
    let period = Duration::from_secs_f64(1.0 / rate);
    let stop_at = args.duration.map(|d| writer_began + Duration::from_secs_f64(d));
    let mut kv = KvClient::new(channels[0].clone());
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(rand::random());
    let (mut puts, mut acked) = (0u64, 0u64);
    let mut put_errors = Tally::new();
    let mut next = writer_began;
    while created > 0
        && args.total.is_none_or(|t| puts < t)
        && stop_at.is_none_or(|s| Instant::now() < s)
    {
        tokio::time::sleep_until(next.into()).await;
        next += period;
        let k = key(rand::Rng::random_range(&mut rng, 0..args.key_space), key_size);
        let value = stamped_value(started.elapsed(), args.value_size as usize);
        puts += 1;
        let put = kv.put(PutRequest { key: k, value, ..PutRequest::default() });
        match tokio::time::timeout(timeout, put).await {
            Ok(Ok(_)) => acked += 1,
            Ok(Err(s)) => put_errors.error(format!("put: {}", status(s))),
            Err(_) => put_errors.error(format!("put: timeout after {} ms", args.timeout_ms)),
        }
    }
    let writer_elapsed = writer_began.elapsed();
    let _ =
        done_tx.send(Some(WriterDone { acked_puts: acked, wait_until: Instant::now() + timeout }));

    let mut failed_watchers = Tally::new();
    for w in watchers {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed_watchers.error(e),
            Err(e) => failed_watchers.error(format!("watcher task failed: {e}")),
        }
    }
    let (mut tally, per_second, last_event) = match Arc::try_unwrap(seen) {
        Ok(m) => {
            let s = m.into_inner().unwrap_or_else(|p| p.into_inner());
            (s.tally, s.per_second, s.last_event)
        }
        Err(_) => (Tally::new(), Vec::new(), None),
    };
    tally.merge(put_errors);
    tally.merge(failed_watchers);
    let elapsed =
        last_event.map_or(writer_elapsed, |l| l.duration_since(writer_began).max(writer_elapsed));
    let mut details = serde_json::Map::new();
    details.insert("watchers".into(), json!(args.watchers));
    details.insert("watches_created".into(), json!(created));
    details.insert("puts".into(), json!(puts));
    details.insert("puts_acked".into(), json!(acked));
    details.insert("events_expected".into(), json!(acked * created));
    details.insert("put_rate".into(), json!(rate));
    Report {
        args,
        elapsed,
        latency_us: tally.latency_us,
        errors: tally.errors,
        per_second,
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_carries_its_send_time() {
        let v = stamped_value(Duration::from_micros(1_234_567), 256);
        assert_eq!(v.len(), 256);
        assert_eq!(&v[..STAMP_BYTES], b"0000000001234567");
        assert_eq!(stamp_of(&v), Some(Duration::from_micros(1_234_567)));
        assert_eq!(stamped_value(Duration::ZERO, 3).len(), STAMP_BYTES, "never shorter");
        assert_eq!(stamp_of(b"short"), None);
        assert_eq!(stamp_of(&[b'x'; 20]), None);
    }
}
