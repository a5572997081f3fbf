//! [`Config`]: the cluster and the knobs of one PBFT replica.

use std::time::Duration;
use synod_core::NodeId;

/// How a PBFT replica runs. [`Config::new`] gives the published defaults
/// (K = 128, L = 256) and timeouts for a LAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Every replica, in a fixed order; the primary of view `v` is
    /// `replicas[v mod n]`. `n = replicas.len()` tolerates
    /// `f = ⌊(n−1)/3⌋` faulty ones.
    pub replicas: Vec<NodeId>,
    /// The seed every key is derived from ([`crate::Keyring::derive`]).
    /// Simulator and tests only: a deployment would load real keys.
    pub key_seed: u64,
    /// K: a checkpoint every this many sequence numbers.
    pub checkpoint_interval: u64,
    /// L: the log window above the low watermark (`H = h + L`). A multiple
    /// of `checkpoint_interval`, at least twice it.
    pub log_window: u64,
    /// Requests per PRE-PREPARE at most.
    pub max_batch: usize,
    /// Sequence numbers the primary keeps pre-prepared but not executed;
    /// requests queue (and are batched) beyond this.
    pub max_inflight_batches: u64,
    /// How long a backup waits for a pending request to execute (or for a
    /// view change to complete) before moving to the next view; doubled on
    /// every consecutive view change.
    pub view_change_timeout: Duration,
    /// The doubling stops here.
    pub max_view_change_timeout: Duration,
    /// How often a replica multicasts STATUS so that peers retransmit what
    /// it misses (TOCS §5.2-style retransmission).
    pub status_interval: Duration,
    /// Sequence numbers retransmitted per STATUS answered.
    pub max_retransmit_seqs: u64,
    /// Client requests a replica tracks (queued or waiting) at once.
    pub max_pending_requests: usize,
    /// Read barriers a replica keeps waiting at once.
    pub max_pending_reads: usize,
    /// A read barrier not served within this fails (the client retries).
    pub read_timeout: Duration,
    /// Batches one state-transfer reply carries at most.
    pub max_state_transfer_batches: usize,
}

impl Config {
    /// The defaults for `replicas`, with keys derived from seed 0.
    pub fn new(replicas: Vec<NodeId>) -> Config {
        Config {
            replicas,
            key_seed: 0,
            checkpoint_interval: 128,
            log_window: 256,
            max_batch: 64,
            max_inflight_batches: 16,
            view_change_timeout: Duration::from_millis(500),
            max_view_change_timeout: Duration::from_secs(8),
            status_interval: Duration::from_millis(100),
            max_retransmit_seqs: 64,
            max_pending_requests: 16_384,
            max_pending_reads: 10_000,
            read_timeout: Duration::from_secs(2),
            max_state_transfer_batches: 1 << 16,
        }
    }

    /// Checks the configuration, naming the first problem.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.replicas.len();
        if n == 0 || n > 64 {
            return Err(format!("{n} replicas (need 1..=64)"));
        }
        let mut ids = self.replicas.clone();
        ids.sort();
        ids.dedup();
        if ids.len() != n {
            return Err("a replica is listed twice".into());
        }
        if self.checkpoint_interval == 0 {
            return Err("checkpoint_interval must be positive".into());
        }
        if self.log_window < 2 * self.checkpoint_interval
            || !self.log_window.is_multiple_of(self.checkpoint_interval)
        {
            return Err(
                "log_window must be a multiple of checkpoint_interval, at least twice it".into()
            );
        }
        if self.max_batch == 0 || self.max_inflight_batches == 0 {
            return Err("max_batch and max_inflight_batches must be positive".into());
        }
        if self.view_change_timeout.is_zero() || self.status_interval.is_zero() {
            return Err("timeouts must be positive".into());
        }
        if self.max_pending_requests == 0 || self.max_pending_reads == 0 {
            return Err("pending limits must be positive".into());
        }
        Ok(())
    }

    /// The position of `id` in [`replicas`](Config::replicas).
    pub fn position(&self, id: NodeId) -> Option<usize> {
        self.replicas.iter().position(|&r| r == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_windows_do_not() {
        let c = Config::new((1..=4).map(NodeId).collect());
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.position(NodeId(3)), Some(2));
        let mut bad = c.clone();
        bad.log_window = 200;
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.replicas.push(NodeId(1));
        assert!(bad.validate().is_err());
    }
}
