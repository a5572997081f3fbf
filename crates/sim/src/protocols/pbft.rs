//! PBFT in the simulator: cluster configuration and the PBFT checkers.

use crate::invariant::Invariant;
use crate::protocol::SimProtocol;
use std::time::Duration;
use synod_core::{Command, NodeId};
use synod_pbft::request::sign_command;
use synod_pbft::shared_checks::SharedChecks;
use synod_pbft::{Config, PbftNode};

impl SimProtocol for PbftNode {
    fn name() -> &'static str {
        "pbft"
    }

    /// `Config::new(replicas)` (K = 128, L = 256) with timeouts for a ~1 ms
    /// network: a view change after 300 ms without progress on a pending
    /// request (doubling to at most 2 s, so that a silent primary costs at
    /// most one 2 s wait inside the 5 s liveness bound), STATUS every 50 ms.
    /// Keys derive from a fixed seed. The replicas share one memo of
    /// successful signature verifications ([`SharedChecks`]: they run in one
    /// process, and a signature that verified for one verifies for all), so
    /// each distinct signature is verified once per run instead of once per
    /// replica; every decision is the same. `SYNOD_SIM_PBFT_VERIFY=every-replica`
    /// in the environment turns the memo off (each replica verifies every
    /// signature itself, as a deployment does), to measure what it saves.
    fn sim_config(voters: &[NodeId]) -> Config {
        let mut c = Config::new(voters.to_vec());
        c.key_seed = 0x5eed_0bf7;
        let every_replica =
            std::env::var("SYNOD_SIM_PBFT_VERIFY").is_ok_and(|v| v == "every-replica");
        c.shared_checks = (!every_replica).then(SharedChecks::default);
        c.view_change_timeout = Duration::from_millis(300);
        c.max_view_change_timeout = Duration::from_secs(2);
        c.status_interval = Duration::from_millis(50);
        c
    }

    /// δ ([`Config::max_clock_skew`]) covers the run's worst clock skew
    /// (`sim::max_clock_skew`): a correct primary's timestamps are
    /// never refused for the simulated clocks alone.
    fn configure_clock_skew(config: &mut Config, max_skew: Duration) {
        config.max_clock_skew = max_skew;
    }

    /// Seals the request with its client's key (derived from the cluster
    /// key seed, as the replicas derive the verifying key; cached in the
    /// configuration).
    fn wrap_request(config: &Config, command: Command) -> Command {
        sign_command(&config.client_key(command.client.0), command)
    }

    fn invariants() -> Vec<Box<dyn Invariant<Self>>> {
        crate::invariants::pbft_invariants()
    }
}
