//! `synod watch <key> [range_end] [--prefix] [--rev N] [--prev-kv]`: etcdctl's
//! `watch` over the etcd v3 Watch stream. Prints each event as etcdctl's
//! simple format does: the type (`PUT` / `DELETE`), then with `--prev-kv` the
//! previous key and value, then the key and value — until interrupted, or
//! after `--count` events.
//!
//! A watch from a compacted revision is cancelled by the cluster; this prints
//! etcdctl's `watch was canceled (...)` line and exits 1.
//!
//! On a PBFT cluster (with a PBFT client key: by default `synod-data/c2.keys`,
//! which `synod up --protocol pbft` writes for watches, else `c1.keys`) the events come
//! through the ordered, signed client path instead of one replica's Watch
//! stream ([`crate::pbft_client`]): the command polls the store's history
//! (`KvCommand::Events`, ordered like a write, changing nothing) and prints
//! a batch only once f+1 replicas sent the same one, so a lying replica can
//! neither invent, drop nor reorder an event. A poll that finds nothing new
//! waits [`PBFT_POLL_INTERVAL`] before the next; each poll costs one PBFT
//! request.
//!
//! Exit codes: 0 success, 1 the cluster answered with an error, cancelled the
//! watch or could not be reached, 2 bad usage.

use crate::client::{self, ClientOpts, Failure, emit, text};
use crate::pbft_client::{self, PbftClient};
use bytes::Bytes;
use clap::Args;
use std::process::ExitCode;
use std::time::Duration;
use synod_etcdpb::etcdserverpb::watch_client::WatchClient;
use synod_etcdpb::etcdserverpb::{WatchCreateRequest, WatchRequest, watch_request};
use synod_etcdpb::mvccpb::{Event, event::EventType};
use synod_kv::MAX_EVENTS_PER_COMMAND;
use synod_node::convert;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

/// Arguments of `synod watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    client: ClientOpts,
    /// The key (or, with --prefix, the prefix) to watch.
    key: String,
    /// Watch the half-open range [KEY, RANGE_END) instead of one key.
    #[arg(conflicts_with = "prefix")]
    range_end: Option<String>,
    /// Watch every key starting with KEY.
    #[arg(long)]
    prefix: bool,
    /// Start from this store revision (0: from now on); past events are
    /// replayed first.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    rev: i64,
    /// Also print each event's previous key and value.
    #[arg(long)]
    prev_kv: bool,
    /// Exit after this many events (0: watch until interrupted).
    #[arg(long, default_value_t = 0)]
    count: u64,
}

/// Runs `synod watch`.
pub fn run(args: WatchArgs) -> ExitCode {
    client::run_command("watch", execute(args))
}

/// A PBFT watch's pause after a poll that found no new event.
pub const PBFT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The `[key, range_end)` the arguments ask for (etcd's conventions; an
/// empty key with `--prefix` means every key, as in clientv3).
fn key_range(args: &WatchArgs) -> (Vec<u8>, Vec<u8>) {
    match &args.range_end {
        Some(end) => (args.key.as_bytes().to_vec(), end.clone().into_bytes()),
        None => client::key_range(args.key.as_bytes(), args.prefix, false),
    }
}

async fn execute(args: WatchArgs) -> Result<(), Failure> {
    if let Some(pbft) = pbft_client::choose_for_watch(&args.client).await? {
        return execute_pbft(args, pbft).await;
    }
    let timeout = args.client.timeout();
    let channel = client::connect(&args.client.endpoints, timeout).await?;
    let (key, range_end) = key_range(&args);
    let (tx, rx) = mpsc::channel(1);
    let create = WatchCreateRequest {
        key,
        range_end,
        start_revision: args.rev,
        prev_kv: args.prev_kv,
        ..Default::default()
    };
    // The request sender stays alive while we watch: dropping it would
    // half-close the stream.
    tx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(create)),
    })
    .await
    .map_err(|_| Failure::Cluster("error: watch stream closed".into()))?;
    let mut responses =
        WatchClient::new(channel).watch(ReceiverStream::new(rx)).await?.into_inner();
    let mut seen: u64 = 0;
    loop {
        let next = tokio::select! {
            m = responses.message() => m,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let r = match next {
            Ok(Some(r)) => r,
            Ok(None) => return Err(Failure::Cluster("error: watch stream closed".into())),
            Err(status) => return Err(status.into()),
        };
        if r.canceled {
            let reason = if r.compact_revision > 0 {
                "etcdserver: mvcc: required revision has been compacted".to_string()
            } else if !r.cancel_reason.is_empty() {
                r.cancel_reason.clone()
            } else {
                "canceled by the server".to_string()
            };
            return Err(Failure::Cluster(format!("watch was canceled ({reason})")));
        }
        let mut out = String::new();
        for e in &r.events {
            out.push_str(&format_event(e));
            seen += 1;
            if args.count > 0 && seen >= args.count {
                emit(&out);
                drop(tx);
                return Ok(());
            }
        }
        emit(&out);
    }
}

/// `synod watch` on PBFT: polls the history through f+1 agreement (see the
/// module doc) until interrupted or `--count` events were printed.
async fn execute_pbft(args: WatchArgs, mut pbft: PbftClient) -> Result<(), Failure> {
    let (key, end) = key_range(&args);
    let (key, end) = (Bytes::from(key), Bytes::from(end));
    let mut next = args.rev;
    let mut seen: u64 = 0;
    loop {
        let polled = tokio::select! {
            r = pbft.events(key.clone(), end.clone(), next, MAX_EVENTS_PER_COMMAND) => r?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        if next > 0 && next < polled.compact_revision {
            return Err(Failure::Cluster(
                "watch was canceled (etcdserver: mvcc: required revision has been compacted)"
                    .into(),
            ));
        }
        let mut out = String::new();
        for e in &polled.events {
            out.push_str(&format_event(&convert::event(e, args.prev_kv)));
            seen += 1;
            if args.count > 0 && seen >= args.count {
                emit(&out);
                return Ok(());
            }
        }
        emit(&out);
        let idle = polled.events.is_empty();
        next = polled.next_revision;
        if idle {
            tokio::select! {
                () = tokio::time::sleep(PBFT_POLL_INTERVAL) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
}

/// One event as etcdctl's simple printer shows it.
fn format_event(e: &Event) -> String {
    let kind = if e.r#type == EventType::Delete as i32 { "DELETE" } else { "PUT" };
    let mut out = format!("{kind}\n");
    for kv in e.prev_kv.iter().chain(e.kv.iter()) {
        out.push_str(&format!("{}\n{}\n", text(&kv.key), text(&kv.value)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_etcdpb::mvccpb::KeyValue;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue { key: k.into(), value: v.into(), ..Default::default() }
    }

    #[test]
    fn events_print_as_etcdctl_does() {
        let put = Event { r#type: EventType::Put as i32, kv: Some(kv("a", "1")), prev_kv: None };
        assert_eq!(format_event(&put), "PUT\na\n1\n");
        let del = Event {
            r#type: EventType::Delete as i32,
            kv: Some(kv("a", "")),
            prev_kv: Some(kv("a", "1")),
        };
        assert_eq!(format_event(&del), "DELETE\na\n1\na\n\n", "previous pair first");
    }
}
