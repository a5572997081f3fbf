//! [`Config`]: the cluster and the knobs of one PBFT replica.

use crate::auth::{Keyring, NormalCaseAuth, client_signing_key};
use crate::auth_meter::AuthMeter;
use crate::request::ClientKeys;
use crate::shared_checks::SharedChecks;
use ed25519_dalek::SigningKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use synod_core::NodeId;

/// Client signing keys a [`KeyCache`] keeps before it is cleared.
const MAX_CACHED_CLIENT_KEYS: usize = 4096;

/// Keys derived from a [`Config`]'s `key_seed`, derived once and shared by
/// every clone of the configuration: a replica that restarts (or the
/// simulator's clients signing requests) does not derive them again.
/// Always compares equal (it is a cache, not configuration).
#[derive(Clone, Default)]
pub struct KeyCache(Arc<Mutex<CachedKeys>>);

#[derive(Default)]
struct CachedKeys {
    /// What the keyrings were derived for: seed, replicas, mode.
    derived_for: Option<(u64, usize, NormalCaseAuth)>,
    replicas: Vec<Option<Arc<Keyring>>>,
    /// The seed the client keys were derived from.
    clients_seed: Option<u64>,
    clients: HashMap<u64, SigningKey>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCache")
    }
}

impl PartialEq for KeyCache {
    fn eq(&self, _: &KeyCache) -> bool {
        true
    }
}

impl Eq for KeyCache {}

/// Real keys, loaded by a deployment instead of derived from a seed: this
/// replica's [`Keyring`] (its own signing and pairwise MAC keys, every
/// replica's verifying key), every client's verifying key, and optionally
/// the signing key of the client this replica acts as for requests it
/// receives itself (its *proxy client*). No other replica's secret is in it,
/// so a replica cannot forge another's signatures or MACs to a third.
#[derive(Clone)]
pub struct LoadedKeys {
    /// This replica's keyring; its position must be this replica's.
    pub keyring: Arc<Keyring>,
    /// Every client's verifying key ([`ClientKeys::Listed`]).
    pub clients: ClientKeys,
    /// The proxy client's id and signing key, if this replica signs
    /// requests of its own.
    pub proxy: Option<(synod_core::ClientId, SigningKey)>,
}

impl std::fmt::Debug for LoadedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoadedKeys({:?}, proxy {:?})", self.keyring, self.proxy.as_ref().map(|p| p.0))
    }
}

/// Compares equal when the keyrings are the same allocation and the proxy
/// client ids agree (keys are not configuration to compare byte by byte).
impl PartialEq for LoadedKeys {
    fn eq(&self, other: &LoadedKeys) -> bool {
        Arc::ptr_eq(&self.keyring, &other.keyring)
            && self.proxy.as_ref().map(|p| p.0) == other.proxy.as_ref().map(|p| p.0)
    }
}

impl Eq for LoadedKeys {}

/// A deliberately broken behaviour, for proving that the simulator's
/// checkers catch real protocol bugs. Only `synod sim --bug` sets it: a
/// node builds its configuration with [`Config::new`] and its config file
/// has no field for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InjectedBug {
    /// Correct PBFT.
    #[default]
    None,
    /// A backup PREPAREs a PRE-PREPARE whatever its timestamp (skips the δ
    /// check of [`Config::max_clock_skew`]): a faulty primary can then move
    /// the agreed clock anywhere.
    SkipClockCheck,
}

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
    /// Keys derived from `key_seed`, cached.
    pub keys: KeyCache,
    /// Real keys (a deployment): when set, `key_seed` is not used for this
    /// replica's keyring nor for client keys.
    pub loaded: Option<LoadedKeys>,
    /// How PRE-PREPARE, PREPARE and COMMIT are authenticated (MAC
    /// authenticators by default).
    pub normal_case_auth: NormalCaseAuth,
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
    /// A snapshot of the state machine every this many sequence numbers
    /// (a multiple of `checkpoint_interval`): its checkpoint signs the
    /// snapshot's digest, and once it is stable the executed history below
    /// it is discarded and a lagging replica fetches the snapshot instead of
    /// the batches. Checkpoints in between sign the hash chain only.
    pub snapshot_interval: u64,
    /// Bytes of a snapshot one state-transfer message carries at most.
    pub snapshot_chunk_bytes: usize,
    /// δ: how far a PRE-PREPARE's timestamp may be from this backup's own
    /// clock, either way, for the backup to PREPARE it (the agreed clock,
    /// see [`crate::message::Batch`]). It must cover the clock skew between
    /// correct replicas plus the delay of a pre-prepare on the network;
    /// a faulty primary can move the agreed clock by at most this much
    /// from a correct replica's.
    pub max_clock_skew: Duration,
    /// A memo of successful signature verifications shared by every
    /// replica holding a clone of this configuration (replicas in one
    /// process: the simulator). `None` (the default): each replica verifies
    /// every signature itself. See [`SharedChecks`].
    pub shared_checks: Option<SharedChecks>,
    /// Counts and times every MAC and signature this replica (and every
    /// replica holding a clone of this configuration) makes or checks.
    /// `None` (the default): nothing is counted and no clock is read. See
    /// [`AuthMeter`].
    pub auth_meter: Option<AuthMeter>,
    /// A bug to inject (the simulator only).
    pub bug: InjectedBug,
}

impl Config {
    /// The defaults for `replicas`, with keys derived from seed 0.
    pub fn new(replicas: Vec<NodeId>) -> Config {
        Config {
            replicas,
            key_seed: 0,
            keys: KeyCache::default(),
            loaded: None,
            normal_case_auth: NormalCaseAuth::Macs,
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
            snapshot_interval: 1024,
            snapshot_chunk_bytes: 256 * 1024,
            max_clock_skew: Duration::from_secs(1),
            shared_checks: None,
            auth_meter: None,
            bug: InjectedBug::None,
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
        if self.snapshot_interval == 0
            || !self.snapshot_interval.is_multiple_of(self.checkpoint_interval)
        {
            return Err(
                "snapshot_interval must be a positive multiple of checkpoint_interval".into()
            );
        }
        if self.snapshot_chunk_bytes == 0 {
            return Err("snapshot_chunk_bytes must be positive".into());
        }
        if self.max_batch == 0 || self.max_inflight_batches == 0 {
            return Err("max_batch and max_inflight_batches must be positive".into());
        }
        if self.view_change_timeout.is_zero() || self.status_interval.is_zero() {
            return Err("timeouts must be positive".into());
        }
        if self.max_clock_skew.is_zero() {
            return Err("max_clock_skew must be positive".into());
        }
        if self.max_pending_requests == 0 || self.max_pending_reads == 0 {
            return Err("pending limits must be positive".into());
        }
        if let Some(l) = &self.loaded {
            if l.keyring.replicas() != n {
                return Err(format!(
                    "the loaded keys know {} replicas, the cluster has {n}",
                    l.keyring.replicas()
                ));
            }
            if !matches!(l.clients, ClientKeys::Listed(_)) {
                return Err("loaded keys must list the clients' keys".into());
            }
        }
        Ok(())
    }

    /// The keyring of the replica at `position`: the loaded one, else
    /// derived from `key_seed` on first use and cached.
    ///
    /// # Panics
    /// With loaded keys, if `position` is not theirs (a replica only holds
    /// its own secrets).
    pub fn keyring(&self, position: usize) -> Arc<Keyring> {
        if let Some(l) = &self.loaded {
            assert_eq!(l.keyring.position(), position, "the loaded keys are another replica's");
            return l.keyring.clone();
        }
        let n = self.replicas.len();
        let id = (self.key_seed, n, self.normal_case_auth);
        let mut cache = self.keys.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.derived_for != Some(id) {
            cache.derived_for = Some(id);
            cache.replicas = vec![None; n];
        }
        let mode = self.normal_case_auth;
        cache.replicas[position]
            .get_or_insert_with(|| {
                Arc::new(Keyring::derive(self.key_seed, position, n).with_normal_case(mode))
            })
            .clone()
    }

    /// The signing key of client `client`, derived from `key_seed` and
    /// cached (simulator and tests: a real client holds its own key).
    pub fn client_key(&self, client: u64) -> SigningKey {
        let mut cache = self.keys.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.clients_seed != Some(self.key_seed)
            || cache.clients.len() >= MAX_CACHED_CLIENT_KEYS
        {
            cache.clients_seed = Some(self.key_seed);
            cache.clients.clear();
        }
        cache
            .clients
            .entry(client)
            .or_insert_with(|| client_signing_key(self.key_seed, client))
            .clone()
    }

    /// Where a replica finds clients' verifying keys: the loaded registry,
    /// else derived from `key_seed`.
    pub fn client_keys(&self) -> ClientKeys {
        match &self.loaded {
            Some(l) => l.clients.clone(),
            None => ClientKeys::Derived { seed: self.key_seed },
        }
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

    #[test]
    fn keys_are_derived_once_per_seed_and_shared_by_clones() {
        let mut c = Config::new((1..=4).map(NodeId).collect());
        let a = c.keyring(2);
        assert!(Arc::ptr_eq(&a, &c.clone().keyring(2)), "a clone shares the cache");
        assert_eq!(c.client_key(5).verifying_key(), client_signing_key(0, 5).verifying_key());
        c.key_seed = 9;
        assert!(!Arc::ptr_eq(&a, &c.keyring(2)), "another seed derives again");
        assert_eq!(c.client_key(5).verifying_key(), client_signing_key(9, 5).verifying_key());
        assert_eq!(c.clone(), c, "the cache is not configuration");
    }

    #[test]
    fn loaded_keys_replace_derived_ones_and_must_fit_the_cluster() {
        use std::collections::HashMap;
        use synod_core::ClientId;
        let mut c = Config::new((1..=4).map(NodeId).collect());
        let ring = Arc::new(Keyring::derive(77, 1, 4));
        let client = client_signing_key(77, 9);
        let listed = HashMap::from([(ClientId(9), client.verifying_key())]);
        c.loaded = Some(LoadedKeys {
            keyring: ring.clone(),
            clients: ClientKeys::Listed(Arc::new(listed)),
            proxy: Some((ClientId(9), client)),
        });
        assert_eq!(c.validate(), Ok(()));
        assert!(Arc::ptr_eq(&c.keyring(1), &ring), "the loaded keyring, not a derived one");
        assert!(matches!(c.client_keys(), ClientKeys::Listed(_)));
        let mut small = c.clone();
        small.replicas.pop();
        assert!(small.validate().unwrap_err().contains("know 4 replicas"));
        let mut derived = c.clone();
        if let Some(l) = derived.loaded.as_mut() {
            l.clients = ClientKeys::Derived { seed: 1 };
        }
        assert!(derived.validate().is_err());
    }

    #[test]
    #[should_panic(expected = "another replica's")]
    fn loaded_keys_serve_only_their_own_position() {
        let mut c = Config::new((1..=4).map(NodeId).collect());
        c.loaded = Some(LoadedKeys {
            keyring: Arc::new(Keyring::derive(1, 0, 4)),
            clients: ClientKeys::Listed(Arc::default()),
            proxy: None,
        });
        let _ = c.keyring(2);
    }
}
