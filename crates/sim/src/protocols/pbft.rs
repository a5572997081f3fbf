//! PBFT in the simulator: cluster configuration, injectable bugs and the
//! PBFT checkers.

use crate::invariant::Invariant;
use crate::protocol::SimProtocol;
use std::time::Duration;
use synod_core::{Command, NodeId};
use synod_pbft::auth_meter::AuthOp;
use synod_pbft::request::sign_command;
use synod_pbft::shared_checks::SharedChecks;
use synod_pbft::{AuthMeter, AuthWork, Config, InjectedBug, PbftNode};

/// Bug names accepted by `--bug` for PBFT, and what they break.
pub const PBFT_BUGS: &[(&str, InjectedBug)] =
    &[("pbft-skip-clock-check", InjectedBug::SkipClockCheck)];

impl SimProtocol for PbftNode {
    fn name() -> &'static str {
        "pbft"
    }

    /// `Config::new(replicas)` (K = 128, L = 256, a snapshot at every
    /// checkpoint, 4 KiB snapshot chunks) with timeouts for a ~1 ms
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
        // A snapshot at every checkpoint, so that runs of a few hundred
        // operations take, adopt and transfer snapshots; chunks small
        // enough that a transfer takes several.
        c.snapshot_interval = c.checkpoint_interval;
        c.snapshot_chunk_bytes = 4096;
        c
    }

    fn bugs() -> &'static [&'static str] {
        &["pbft-skip-clock-check"]
    }

    /// `pbft-skip-clock-check`: correct backups PREPARE whatever timestamp
    /// a primary stamps ([`InjectedBug::SkipClockCheck`]); with
    /// `--byzantine 1 --attack bad-timestamp` the `pbft agreed clock`
    /// checker catches it.
    fn inject_bug(config: &mut Config, bug: &str) -> Result<(), String> {
        match PBFT_BUGS.iter().find(|(name, _)| *name == bug) {
            Some((_, b)) => {
                config.bug = *b;
                Ok(())
            }
            None => Err(format!(
                "unknown pbft bug `{bug}` (expected one of: {})",
                Self::bugs().join(", ")
            )),
        }
    }

    /// δ ([`Config::max_clock_skew`]) covers the run's worst clock skew
    /// (`sim::max_clock_skew`): a correct primary's timestamps are
    /// never refused for the simulated clocks alone.
    fn configure_clock_skew(config: &mut Config, max_skew: Duration) {
        config.max_clock_skew = max_skew;
    }

    /// Seals the request with its client's key (derived from the cluster
    /// key seed, as the replicas derive the verifying key; cached in the
    /// configuration). Signing is metered as client work.
    fn wrap_request(config: &Config, command: Command) -> Command {
        let key = config.client_key(command.client.0);
        match &config.auth_meter {
            Some(m) => m.time(AuthOp::ClientSign, 1, || sign_command(&key, command)),
            None => sign_command(&key, command),
        }
    }

    /// Yes: once the faults heal, a correct replica behind in view learns
    /// the current one (STATUS, NEW-VIEW), and none may have run ahead to
    /// a view nobody joins.
    fn views_converge() -> bool {
        true
    }

    /// An [`AuthMeter`] on the thread's CPU-time clock ([`thread_cpu_ns`])
    /// shared by every replica (restarts included) and the clients, and no
    /// shared memo of verifications
    /// ([`Config::shared_checks`] off): each replica verifies every
    /// signature it relies on, as `SYNOD_SIM_PBFT_VERIFY=every-replica`
    /// does.
    fn configure_auth_metering(config: &mut Config) {
        config.auth_meter = Some(AuthMeter::new(thread_cpu_ns));
        config.shared_checks = None;
    }

    fn auth_work(config: &Config) -> Option<AuthWork> {
        config.auth_meter.as_ref().map(AuthMeter::work)
    }

    /// [`AuthStats`](synod_pbft::AuthStats) by field, and the request
    /// timeouts on which the replica did not suspect its primary.
    fn defence_counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.auth_stats();
        vec![
            ("bad_mac", s.bad_mac),
            ("bad_signature", s.bad_signature),
            ("bad_digest", s.bad_digest),
            ("bad_sender", s.bad_sender),
            ("invalid", s.invalid),
            ("bad_timestamp", s.bad_timestamp),
            ("suspicions_deferred", self.suspicions_deferred()),
        ]
    }

    fn invariants() -> Vec<Box<dyn Invariant<Self>>> {
        crate::invariants::pbft_invariants()
    }
}

/// CPU time of the calling thread in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`):
/// it stands still while the thread is descheduled, so authentication
/// times measured with it hold on a shared, busy machine. Elsewhere than
/// Unix, the monotonic wall clock.
pub fn thread_cpu_ns() -> u64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec; the clock id is a
        // constant every Unix the simulator runs on supports.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
        (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
    }
    #[cfg(not(unix))]
    {
        synod_pbft::auth_meter::wall_clock_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FaultProfile, ProtocolKind, SimOptions, run_seed};

    #[test]
    fn the_thread_cpu_clock_advances_with_work_only() {
        let a = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = thread_cpu_ns();
        assert!(b > a, "work takes CPU time");
        std::thread::sleep(Duration::from_millis(20));
        assert!(thread_cpu_ns() - b < 10_000_000, "sleeping takes (almost) none");
    }

    #[test]
    fn bug_names_map_to_injected_bugs() {
        let mut c = PbftNode::sim_config(&[NodeId(1), NodeId(2), NodeId(3), NodeId(4)]);
        assert_eq!(c.bug, InjectedBug::None);
        PbftNode::inject_bug(&mut c, "pbft-skip-clock-check").expect("known bug");
        assert_eq!(c.bug, InjectedBug::SkipClockCheck);
        let e = PbftNode::inject_bug(&mut c, "nope").unwrap_err();
        assert!(e.contains("nope") && e.contains("pbft-skip-clock-check"), "{e}");
        assert_eq!(PBFT_BUGS.len(), PbftNode::bugs().len());
    }

    fn opts(bug: Option<&str>) -> SimOptions {
        SimOptions {
            protocol: ProtocolKind::Pbft,
            nodes: 4,
            faults: FaultProfile::None,
            clients: 3,
            ops_per_client: 20,
            byzantine: 1,
            attack: Some("bad-timestamp".into()),
            bug: bug.map(str::to_string),
            ..SimOptions::default()
        }
    }

    /// With backups that skip the δ check, a primary stamping batches an
    /// hour off moves the agreed clock, and the `pbft agreed clock`
    /// checker reports it; the replay names the bug. The same seed with
    /// correct backups passes.
    #[test]
    fn skipping_the_clock_check_is_caught_under_the_bad_timestamp_attack() {
        let r = run_seed(&opts(Some("pbft-skip-clock-check")), 1);
        let v = r.violation.expect("a Byzantine primary's timestamps must be caught");
        assert_eq!(v.property, crate::invariants::pbft_agreed_clock::PROPERTY, "{}", v.detail);
        assert!(v.replay.contains("--bug pbft-skip-clock-check"), "{}", v.replay);
        assert!(v.replay.contains("--attack bad-timestamp"), "{}", v.replay);
        let r = run_seed(&opts(None), 1);
        assert!(r.passed, "{:?}", r.violation.map(|v| v.detail));
    }
}
