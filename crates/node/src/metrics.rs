//! [`Metrics`]: the node's counters and its fsync latency histogram, and
//! their Prometheus text rendering for `/metrics`; [`RefusalLog`], which
//! counts every refused PBFT timestamp and says which ones to log.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the fsync latency histogram buckets.
const FSYNC_BUCKETS_S: [f64; 12] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Counters shared by the driver (which updates them) and the HTTP endpoint
/// (which renders them).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Client commands proposed.
    pub proposals: AtomicU64,
    /// Proposal batches handed to the core.
    pub proposal_batches: AtomicU64,
    /// Positions applied to the state machine.
    pub commits: AtomicU64,
    /// Protocol messages received from peers.
    pub messages_in: AtomicU64,
    /// Protocol messages sent to peers.
    pub messages_out: AtomicU64,
    /// Peer messages that did not decode.
    pub bad_messages: AtomicU64,
    /// Elections this node started.
    pub elections: AtomicU64,
    /// Times the known leader changed.
    pub leader_changes: AtomicU64,
    /// Snapshots taken or installed.
    pub snapshots: AtomicU64,
    /// Snapshot requests that arrived while another snapshot was being
    /// written (kept and written after it).
    pub snapshots_deferred: AtomicU64,
    /// Snapshot requests the state machine could not serve (it was not at
    /// the requested position).
    pub snapshots_skipped: AtomicU64,
    /// Microseconds the driver spent copying the state for snapshots (the
    /// only part of taking one that stalls it).
    pub snapshot_copy_us: AtomicU64,
    /// PBFT: PRE-PREPAREs this backup did not PREPARE because their
    /// timestamp was further than δ from its clock.
    pub timestamps_refused: AtomicU64,
    fsync_buckets: [AtomicU64; FSYNC_BUCKETS_S.len()],
    fsync_count: AtomicU64,
    fsync_sum_us: AtomicU64,
}

fn inc(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

impl Metrics {
    /// Adds `by` to `counter`.
    pub fn add(counter: &AtomicU64, by: u64) {
        inc(counter, by);
    }

    /// Records one fsync that took `took`.
    pub fn observe_fsync(&self, took: Duration) {
        let s = took.as_secs_f64();
        for (bucket, bound) in self.fsync_buckets.iter().zip(FSYNC_BUCKETS_S) {
            if s <= bound {
                inc(bucket, 1);
            }
        }
        inc(&self.fsync_count, 1);
        inc(&self.fsync_sum_us, took.as_micros() as u64);
    }

    /// Fsyncs recorded.
    pub fn fsyncs(&self) -> u64 {
        self.fsync_count.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let counters = [
            ("synod_proposals_total", "Client commands proposed.", &self.proposals),
            ("synod_proposal_batches_total", "Proposal batches.", &self.proposal_batches),
            ("synod_commits_total", "Log positions applied.", &self.commits),
            ("synod_messages_in_total", "Peer messages received.", &self.messages_in),
            ("synod_messages_out_total", "Peer messages sent.", &self.messages_out),
            ("synod_bad_messages_total", "Peer messages that did not decode.", &self.bad_messages),
            ("synod_elections_total", "Elections started here.", &self.elections),
            ("synod_leader_changes_total", "Changes of the known leader.", &self.leader_changes),
            ("synod_snapshots_total", "Snapshots taken or installed.", &self.snapshots),
            (
                "synod_snapshots_deferred_total",
                "Snapshot requests that waited for the one being written.",
                &self.snapshots_deferred,
            ),
            (
                "synod_snapshots_skipped_total",
                "Snapshot requests at a position the state machine was not at.",
                &self.snapshots_skipped,
            ),
            (
                "synod_snapshot_copy_microseconds_total",
                "Time the driver spent copying the state for snapshots.",
                &self.snapshot_copy_us,
            ),
            (
                "synod_pbft_timestamps_refused_total",
                "PBFT pre-prepares not prepared here: timestamp further than δ from this clock.",
                &self.timestamps_refused,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(s, "{name} {}", c.load(Ordering::Relaxed));
        }
        let name = "synod_wal_fsync_duration_seconds";
        let _ =
            writeln!(s, "# HELP {name} Write-ahead log fsync latency.\n# TYPE {name} histogram");
        for (bucket, bound) in self.fsync_buckets.iter().zip(FSYNC_BUCKETS_S) {
            let _ =
                writeln!(s, "{name}_bucket{{le=\"{bound}\"}} {}", bucket.load(Ordering::Relaxed));
        }
        let count = self.fsync_count.load(Ordering::Relaxed);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.fsync_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(s, "{name}_sum {sum}\n{name}_count {count}");
        s
    }
}

/// Counts refused PBFT timestamps and decides which to log: the first
/// refusal of each view (views only go up), so a faulty primary, which can
/// make a backup refuse at most once per sequence number of its view's
/// window, costs one warning per view it holds, not one per batch.
#[derive(Debug, Default)]
pub struct RefusalLog {
    /// The view of the last refusal logged.
    logged_view: Option<u64>,
    /// Refusals not logged since then.
    quiet: u64,
}

impl RefusalLog {
    /// Counts a refusal in `view`; returns `Some(n)` if it should be
    /// logged, `n` being the refusals counted but not logged before it.
    pub fn refused(&mut self, metrics: &Metrics, view: u64) -> Option<u64> {
        inc(&metrics.timestamps_refused, 1);
        if self.logged_view.is_some_and(|logged| view <= logged) {
            self.quiet += 1;
            return None;
        }
        self.logged_view = Some(view);
        Some(std::mem::take(&mut self.quiet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_fsync(Duration::from_micros(400));
        m.observe_fsync(Duration::from_millis(30));
        let text = m.render();
        assert!(
            text.contains("synod_wal_fsync_duration_seconds_bucket{le=\"0.0005\"} 1"),
            "{text}"
        );
        assert!(text.contains("synod_wal_fsync_duration_seconds_bucket{le=\"0.05\"} 2"), "{text}");
        assert!(text.contains("synod_wal_fsync_duration_seconds_count 2"), "{text}");
        Metrics::add(&m.proposals, 3);
        assert!(m.render().contains("synod_proposals_total 3"));
    }

    #[test]
    fn every_refused_timestamp_is_counted_and_one_per_view_is_logged() {
        let m = Metrics::default();
        let mut log = RefusalLog::default();
        assert_eq!(log.refused(&m, 3), Some(0), "the first refusal is logged");
        for _ in 0..99 {
            assert_eq!(log.refused(&m, 3), None, "a faulty primary cannot flood the log");
        }
        assert_eq!(log.refused(&m, 2), None, "an older view logs nothing");
        assert_eq!(log.refused(&m, 7), Some(100), "a later view logs, with the quiet count");
        assert_eq!(log.refused(&m, 7), None);
        let text = m.render();
        assert!(text.contains("# TYPE synod_pbft_timestamps_refused_total counter"), "{text}");
        assert!(text.contains("\nsynod_pbft_timestamps_refused_total 103\n"), "{text}");
    }
}
