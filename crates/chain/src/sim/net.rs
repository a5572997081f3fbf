//! The simulated network of the chain simulator: per-message latency with
//! jitter, a partition into two sides, crashed nodes, and message/byte
//! counters.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Latency and the fault state.
#[derive(Clone, Debug)]
pub struct ChainNet {
    /// Base one-way latency.
    pub latency_ms: u64,
    /// Extra uniform latency in `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// `side[i]`: node `i`'s side while partitioned.
    side: Vec<u8>,
    partitioned: bool,
    /// Crashed nodes neither send nor receive.
    pub down: Vec<bool>,
    /// Messages sent.
    pub messages: u64,
    /// Bytes sent.
    pub bytes: u64,
}

impl ChainNet {
    /// A healthy network of `n` nodes.
    pub fn new(n: usize, latency_ms: u64, jitter_ms: u64) -> ChainNet {
        ChainNet {
            latency_ms,
            jitter_ms,
            side: vec![0; n],
            partitioned: false,
            down: vec![false; n],
            messages: 0,
            bytes: 0,
        }
    }

    /// Splits the nodes: those in `minority` on one side, the rest on the
    /// other.
    pub fn partition(&mut self, minority: &[usize]) {
        self.side.iter_mut().for_each(|s| *s = 0);
        for &m in minority {
            self.side[m] = 1;
        }
        self.partitioned = true;
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        self.partitioned = false;
    }

    /// True while partitioned.
    pub fn is_partitioned(&self) -> bool {
        self.partitioned
    }

    /// True when `a` and `b` are on the same side.
    pub fn same_side(&self, a: usize, b: usize) -> bool {
        !self.partitioned || self.side[a] == self.side[b]
    }

    /// Counts a message and returns its delivery delay, or `None` when the
    /// link is cut (partition) or an end is down.
    pub fn send(
        &mut self,
        rng: &mut ChaCha8Rng,
        from: usize,
        to: usize,
        bytes: usize,
    ) -> Option<u64> {
        if self.down[from] {
            return None;
        }
        self.messages += 1;
        self.bytes += bytes as u64;
        if self.down[to] || !self.same_side(from, to) {
            return None;
        }
        Some(self.latency_ms + rng.random_range(0..=self.jitter_ms))
    }
}
