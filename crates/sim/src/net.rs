//! The simulated network: latency with jitter, loss, duplication,
//! reordering, and directed link blocking (partitions).
//!
//! The network decides the fate of each message when it is sent: dropped,
//! delivered once after a delay, or delivered twice. Reordering comes from
//! jitter and from an occasional long delay. Links between replicas can be
//! blocked one way (asymmetric faults) or both ways (partitions); a blocked
//! link also drops messages already in flight when they arrive. Links between
//! clients and replicas are never blocked (clients sit outside the cluster and
//! may reach either side of a partition), but suffer the same loss,
//! duplication and delay.

use crate::rng::SimRng;
use synod_core::NodeId;

/// Delay and fault rates of the network.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    /// Base one-way latency.
    pub latency_us: u64,
    /// Uniform extra latency in `0..=jitter_us`.
    pub jitter_us: u64,
    /// Probability a message is lost.
    pub loss: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Probability a message takes a long detour (reordering it past many
    /// later messages).
    pub reorder: f64,
    /// Upper bound of the extra delay of a long detour.
    pub long_delay_us: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency_us: 1_000,
            jitter_us: 500,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            long_delay_us: 50_000,
        }
    }
}

/// What happens to one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Lost (or the link is blocked).
    Drop,
    /// Delivered after this many microseconds.
    Deliver(u64),
    /// Delivered twice, after each delay.
    Twice(u64, u64),
}

/// Messages and bytes of one message kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KindCount {
    /// The message kind ([`synod_core::Message::kind`]).
    pub kind: &'static str,
    /// Messages sent.
    pub messages: u64,
    /// Bytes sent.
    pub bytes: u64,
}

/// The network between `n` replicas (ids `1..=n`) and any number of clients.
#[derive(Clone, Debug)]
pub struct Network {
    n: usize,
    base: NetConfig,
    /// The current delay and fault rates.
    pub config: NetConfig,
    blocked: Vec<bool>,
    blocked_count: usize,
    by_kind: Vec<KindCount>,
    /// Replica-to-replica messages dropped (loss or blocked link).
    pub dropped: u64,
    /// Messages duplicated.
    pub duplicated: u64,
}

impl Network {
    /// A fully connected network of `n` replicas with `config`'s rates; heal
    /// returns to `config`.
    pub fn new(n: usize, config: NetConfig) -> Self {
        Network {
            n,
            base: config.clone(),
            config,
            blocked: vec![false; n * n],
            blocked_count: 0,
            by_kind: Vec::new(),
            dropped: 0,
            duplicated: 0,
        }
    }

    fn slot(&self, from: NodeId, to: NodeId) -> Option<usize> {
        let (f, t) = (from.0 as usize, to.0 as usize);
        if f == 0 || t == 0 || f > self.n || t > self.n {
            return None;
        }
        Some((f - 1) * self.n + (t - 1))
    }

    /// True when messages from `from` to `to` are blocked.
    #[inline]
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked_count > 0 && self.slot(from, to).is_some_and(|s| self.blocked[s])
    }

    /// Blocks the directed link `from → to`.
    pub fn block(&mut self, from: NodeId, to: NodeId) {
        if let Some(s) = self.slot(from, to)
            && !self.blocked[s]
        {
            self.blocked[s] = true;
            self.blocked_count += 1;
        }
    }

    /// Unblocks the directed link `from → to`.
    pub fn unblock(&mut self, from: NodeId, to: NodeId) {
        if let Some(s) = self.slot(from, to)
            && self.blocked[s]
        {
            self.blocked[s] = false;
            self.blocked_count -= 1;
        }
    }

    /// Splits the replicas into `groups`: links between different groups are
    /// blocked both ways, links inside a group are open. A replica listed in
    /// no group is cut off from everyone.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        let mut group_of = vec![usize::MAX; self.n + 1];
        for (g, members) in groups.iter().enumerate() {
            for m in members {
                if let Some(x) = group_of.get_mut(m.0 as usize) {
                    *x = g;
                }
            }
        }
        for f in 1..=self.n {
            for t in 1..=self.n {
                let (a, b) = (group_of[f], group_of[t]);
                let open = f == t || (a != usize::MAX && a == b);
                if open {
                    self.unblock(NodeId(f as u64), NodeId(t as u64));
                } else {
                    self.block(NodeId(f as u64), NodeId(t as u64));
                }
            }
        }
    }

    /// Cuts `node` off from every other replica, both ways.
    pub fn isolate(&mut self, node: NodeId) {
        for p in 1..=self.n as u64 {
            if p != node.0 {
                self.block(node, NodeId(p));
                self.block(NodeId(p), node);
            }
        }
    }

    /// Opens every link.
    pub fn heal_links(&mut self) {
        self.blocked.iter_mut().for_each(|b| *b = false);
        self.blocked_count = 0;
    }

    /// Opens every link and returns to the base delay and fault rates.
    pub fn heal(&mut self) {
        self.heal_links();
        self.config = self.base.clone();
    }

    /// Number of blocked directed links.
    pub fn blocked_links(&self) -> usize {
        self.blocked_count
    }

    /// Decides the fate of one message; `link` is `Some((from, to))` for a
    /// replica-to-replica message (which partitions may block).
    #[inline]
    pub fn route(&mut self, rng: &mut SimRng, link: Option<(NodeId, NodeId)>) -> Fate {
        if let Some((f, t)) = link
            && self.is_blocked(f, t)
        {
            self.dropped += 1;
            return Fate::Drop;
        }
        if rng.chance(self.config.loss) {
            self.dropped += 1;
            return Fate::Drop;
        }
        let first = self.delay(rng);
        if rng.chance(self.config.duplicate) {
            self.duplicated += 1;
            let second = self.delay(rng);
            return Fate::Twice(first, second);
        }
        Fate::Deliver(first)
    }

    fn delay(&self, rng: &mut SimRng) -> u64 {
        let c = &self.config;
        let mut d = c.latency_us + rng.below(c.jitter_us + 1);
        if rng.chance(c.reorder) {
            d += rng.below(c.long_delay_us + 1);
        }
        d.max(1)
    }

    /// Counts one replica-to-replica message of `kind` and `bytes`.
    #[inline]
    pub fn count(&mut self, kind: &'static str, bytes: usize) {
        for k in self.by_kind.iter_mut() {
            if std::ptr::eq(k.kind, kind) || k.kind == kind {
                k.messages += 1;
                k.bytes += bytes as u64;
                return;
            }
        }
        self.by_kind.push(KindCount { kind, messages: 1, bytes: bytes as u64 });
    }

    /// Messages and bytes sent, by kind, in first-seen order.
    pub fn by_kind(&self) -> &[KindCount] {
        &self.by_kind
    }

    /// Total replica-to-replica messages and bytes sent.
    pub fn totals(&self) -> (u64, u64) {
        self.by_kind.iter().fold((0, 0), |(m, b), k| (m + k.messages, b + k.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(xs: &[u64]) -> Vec<NodeId> {
        xs.iter().map(|&x| NodeId(x)).collect()
    }

    #[test]
    fn partition_blocks_exactly_the_links_between_groups() {
        let mut net = Network::new(5, NetConfig::default());
        net.partition(&[ids(&[1, 2]), ids(&[3, 4, 5])]);
        for f in 1..=5u64 {
            for t in 1..=5u64 {
                let same = (f <= 2) == (t <= 2);
                assert_eq!(net.is_blocked(NodeId(f), NodeId(t)), !same, "{f}->{t}");
            }
        }
        assert_eq!(net.blocked_links(), 12);
        net.heal_links();
        assert_eq!(net.blocked_links(), 0);
        assert!(!net.is_blocked(NodeId(1), NodeId(5)));
    }

    #[test]
    fn block_is_one_way_and_isolate_is_both_ways() {
        let mut net = Network::new(3, NetConfig::default());
        net.block(NodeId(1), NodeId(2));
        assert!(net.is_blocked(NodeId(1), NodeId(2)));
        assert!(!net.is_blocked(NodeId(2), NodeId(1)));
        net.heal_links();
        net.isolate(NodeId(3));
        assert!(net.is_blocked(NodeId(3), NodeId(1)) && net.is_blocked(NodeId(2), NodeId(3)));
        assert!(!net.is_blocked(NodeId(1), NodeId(2)));
        let mut rng = SimRng::new(1);
        assert_eq!(net.route(&mut rng, Some((NodeId(1), NodeId(3)))), Fate::Drop);
        // Client links are never blocked.
        assert!(matches!(net.route(&mut rng, None), Fate::Deliver(_)));
        // Unlisted nodes are cut off.
        net.partition(&[ids(&[1, 2])]);
        assert!(net.is_blocked(NodeId(3), NodeId(1)));
        assert!(!net.is_blocked(NodeId(2), NodeId(1)));
    }

    #[test]
    fn delays_respect_latency_and_jitter_and_loss_drops() {
        let cfg = NetConfig { latency_us: 100, jitter_us: 50, ..NetConfig::default() };
        let mut net = Network::new(2, cfg);
        let mut rng = SimRng::new(3);
        for _ in 0..1000 {
            match net.route(&mut rng, Some((NodeId(1), NodeId(2)))) {
                Fate::Deliver(d) => assert!((100..=150).contains(&d)),
                other => panic!("unexpected {other:?}"),
            }
        }
        net.config.loss = 1.0;
        assert_eq!(net.route(&mut rng, None), Fate::Drop);
        net.heal();
        assert_eq!(net.config.loss, 0.0);
        net.config.duplicate = 1.0;
        assert!(matches!(net.route(&mut rng, None), Fate::Twice(_, _)));
    }

    #[test]
    fn counts_by_kind() {
        let mut net = Network::new(1, NetConfig::default());
        net.count("vote", 10);
        net.count("append", 100);
        net.count("vote", 10);
        assert_eq!(net.by_kind()[0], KindCount { kind: "vote", messages: 2, bytes: 20 });
        assert_eq!(net.totals(), (3, 120));
    }
}
