//! Metrics of a run and of many runs: committed operations, throughput and
//! latency in virtual time, messages and bytes per operation, elections,
//! time without a leader, and simulator speed.
//!
//! Latencies go into a small log-linear [`Histogram`] (about 6% precision,
//! exact maximum) so that the metrics of thousands of seeds merge in constant
//! memory.

use crate::net::KindCount;
use serde::Serialize;
use std::collections::BTreeMap;

const SUB_BUCKETS: usize = 16;
const BUCKETS: usize = 64 * SUB_BUCKETS;

/// A mergeable histogram of `u64` values (microseconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUB_BUCKETS as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros() as usize; // >= 4
    let sub = ((v >> (exp - 4)) & (SUB_BUCKETS as u64 - 1)) as usize;
    (exp - 3) * SUB_BUCKETS + sub
}

fn bucket_high(b: usize) -> u64 {
    if b < SUB_BUCKETS {
        return b as u64;
    }
    let exp = b / SUB_BUCKETS + 3;
    let sub = (b % SUB_BUCKETS) as u64;
    ((SUB_BUCKETS as u64 + sub + 1) << (exp - 4)) - 1
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one value.
    pub fn record(&mut self, v: u64) {
        self.counts[bucket_of(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (exact).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value below which a fraction `q` of the values fall (upper bound
    /// of its bucket, never above the maximum); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(b).min(self.max);
            }
        }
        self.max
    }

    /// p50, p90, p99 and max.
    pub fn summary(&self) -> Percentiles {
        Percentiles {
            p50_us: self.quantile(0.50),
            p90_us: self.quantile(0.90),
            p99_us: self.quantile(0.99),
            max_us: self.max,
        }
    }
}

/// Latency percentiles in microseconds of virtual time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
}

/// The metrics of one run (or, summed, of many).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Client operations answered (the liveness probe excluded).
    pub committed_ops: u64,
    /// Client operations issued.
    pub issued_ops: u64,
    /// Client retries (timeouts and redirects).
    pub retries: u64,
    /// Virtual time simulated, in microseconds.
    pub virtual_us: u64,
    /// Latency of answered operations (first call to answer).
    pub latency: Histogram,
    /// Replica-to-replica messages and bytes by kind.
    pub by_kind: Vec<KindCount>,
    /// Messages dropped by the network.
    pub dropped_messages: u64,
    /// Messages duplicated by the network.
    pub duplicated_messages: u64,
    /// Times a node became leader.
    pub elections: u64,
    /// Virtual microseconds during which no live node was leader.
    pub leaderless_us: u64,
    /// Crashes simulated.
    pub crashes: u64,
    /// Events simulated.
    pub events: u64,
    /// Wall-clock seconds spent simulating.
    pub wall_secs: f64,
    /// Authentication work counted over the cluster (replicas, restarts
    /// included, and clients' request signatures), when
    /// [`SimOptions::measure_auth`](crate::SimOptions::measure_auth) is on
    /// and the protocol authenticates messages
    /// ([`SimProtocol::auth_work`](crate::SimProtocol::auth_work)); `None`
    /// otherwise.
    pub auth: Option<synod_pbft::AuthWork>,
    /// What the adversary did, by kind (Byzantine runs; see
    /// `byzantine::Adversary::counters`).
    pub attack: BTreeMap<&'static str, u64>,
    /// What the correct replicas refused or noticed, by kind: the cores'
    /// [`defence_counters`](crate::SimProtocol::defence_counters) (kept
    /// across crashes), `candidacies` (a correct replica became a
    /// candidate: PBFT's view changes, Raft's elections) and `replies
    /// outvoted` (client answers that disagreed with the f+1 matching ones
    /// a client accepted).
    pub defence: BTreeMap<&'static str, u64>,
}

impl Metrics {
    /// Total messages and bytes between replicas.
    pub fn messages_and_bytes(&self) -> (u64, u64) {
        self.by_kind.iter().fold((0, 0), |(m, b), k| (m + k.messages, b + k.bytes))
    }

    /// Replica-to-replica messages per committed operation.
    pub fn messages_per_op(&self) -> f64 {
        per(self.messages_and_bytes().0, self.committed_ops)
    }

    /// Replica-to-replica bytes per committed operation.
    pub fn bytes_per_op(&self) -> f64 {
        per(self.messages_and_bytes().1, self.committed_ops)
    }

    /// Committed operations per second of virtual time.
    pub fn throughput_ops_per_sec(&self) -> f64 {
        per(self.committed_ops * 1_000_000, self.virtual_us)
    }

    /// Events per wall-clock second.
    pub fn events_per_sec(&self) -> f64 {
        if self.wall_secs > 0.0 { self.events as f64 / self.wall_secs } else { 0.0 }
    }

    /// Adds `other` into `self` (for summaries over seeds).
    pub fn merge(&mut self, other: &Metrics) {
        self.committed_ops += other.committed_ops;
        self.issued_ops += other.issued_ops;
        self.retries += other.retries;
        self.virtual_us += other.virtual_us;
        self.latency.merge(&other.latency);
        for k in &other.by_kind {
            match self.by_kind.iter_mut().find(|x| x.kind == k.kind) {
                Some(x) => {
                    x.messages += k.messages;
                    x.bytes += k.bytes;
                }
                None => self.by_kind.push(k.clone()),
            }
        }
        self.dropped_messages += other.dropped_messages;
        self.duplicated_messages += other.duplicated_messages;
        self.elections += other.elections;
        self.leaderless_us += other.leaderless_us;
        self.crashes += other.crashes;
        self.events += other.events;
        self.wall_secs += other.wall_secs;
        if let Some(a) = &other.auth {
            self.auth.get_or_insert_with(Default::default).merge(a);
        }
        for (map, from) in [(&mut self.attack, &other.attack), (&mut self.defence, &other.defence)]
        {
            for (k, v) in from {
                *map.entry(k).or_insert(0) += v;
            }
        }
    }

    /// The metrics as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let (messages, bytes) = self.messages_and_bytes();
        serde_json::json!({
            "committed_ops": self.committed_ops,
            "issued_ops": self.issued_ops,
            "retries": self.retries,
            "virtual_ms": self.virtual_us / 1000,
            "throughput_ops_per_sec": self.throughput_ops_per_sec(),
            "latency_us": self.latency.summary(),
            "messages": messages,
            "bytes": bytes,
            "messages_per_op": self.messages_per_op(),
            "bytes_per_op": self.bytes_per_op(),
            "messages_by_kind": self.by_kind,
            "dropped_messages": self.dropped_messages,
            "duplicated_messages": self.duplicated_messages,
            "elections": self.elections,
            "leaderless_ms": self.leaderless_us / 1000,
            "crashes": self.crashes,
            "events": self.events,
            "wall_secs": self.wall_secs,
            "events_per_sec": self.events_per_sec(),
            "attack": self.attack,
            "defence": self.defence,
        })
    }

    /// The metrics as human-readable lines.
    pub fn render(&self) -> String {
        let p = self.latency.summary();
        let ms = |us: u64| us as f64 / 1000.0;
        let mut s = format!(
            "committed ops: {} of {} issued ({} retries), {:.1} ops/s virtual\n\
             latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}\n\
             messages/op: {:.1}  bytes/op: {:.0}  dropped: {}  duplicated: {}\n\
             elections: {}  leaderless: {:.1} ms  crashes: {}\n\
             events: {} in {:.2} s wall ({:.0} events/s)\n",
            self.committed_ops,
            self.issued_ops,
            self.retries,
            self.throughput_ops_per_sec(),
            ms(p.p50_us),
            ms(p.p90_us),
            ms(p.p99_us),
            ms(p.max_us),
            self.messages_per_op(),
            self.bytes_per_op(),
            self.dropped_messages,
            self.duplicated_messages,
            self.elections,
            ms(self.leaderless_us),
            self.crashes,
            self.events,
            self.wall_secs,
            self.events_per_sec(),
        );
        for k in &self.by_kind {
            s.push_str(&format!(
                "  {:<24} {:>10} msgs {:>12} bytes\n",
                k.kind, k.messages, k.bytes
            ));
        }
        for (title, map) in [("attack", &self.attack), ("defence", &self.defence)] {
            let nonzero: Vec<String> =
                map.iter().filter(|(_, v)| **v > 0).map(|(k, v)| format!("{k} {v}")).collect();
            if !nonzero.is_empty() {
                s.push_str(&format!("{title}: {}\n", nonzero.join(", ")));
            }
        }
        s
    }
}

fn per(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotone_and_tight() {
        let mut last = 0;
        for v in [0u64, 1, 15, 16, 17, 31, 32, 100, 1000, 123_456, u64::MAX / 2] {
            let b = bucket_of(v);
            assert!(b >= last);
            last = b;
            assert!(bucket_high(b) >= v, "v={v}");
            assert!(bucket_high(b) as f64 <= v as f64 * 1.07 + 1.0, "v={v}");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_range() {
        let mut h = Histogram::new();
        for v in 1..=1000 {
            h.record(v);
        }
        let p = h.summary();
        assert!((480..=540).contains(&p.p50_us), "{p:?}");
        assert!((880..=960).contains(&p.p90_us), "{p:?}");
        assert_eq!(p.max_us, 1000);
        let mut g = Histogram::new();
        g.record(5000);
        h.merge(&g);
        assert_eq!(h.count(), 1001);
        assert_eq!(h.max(), 5000);
    }

    #[test]
    fn per_op_ratios_handle_zero() {
        let m = Metrics::default();
        assert_eq!(m.messages_per_op(), 0.0);
        assert_eq!(m.throughput_ops_per_sec(), 0.0);
    }
}
