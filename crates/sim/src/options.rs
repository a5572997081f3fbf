//! [`SimOptions`]: everything that shapes a run besides its seed.
//!
//! A run is a pure function of `(SimOptions, seed)`. The options also know
//! how to print the CLI command that reproduces a run
//! ([`SimOptions::replay_command`]).

use crate::faults::{FaultConfig, FaultProfile};
use crate::net::NetConfig;
use crate::scenario::Scenario;

/// The protocols the simulator can run by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolKind {
    /// [`synod_raft::RaftNode`].
    #[default]
    Raft,
    /// [`synod_paxos::PaxosNode`].
    Paxos,
    /// [`synod_pbft::PbftNode`].
    Pbft,
}

impl ProtocolKind {
    /// The name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolKind::Raft => "raft",
            ProtocolKind::Paxos => "paxos",
            ProtocolKind::Pbft => "pbft",
        }
    }

    /// Parses a protocol name.
    pub fn parse(s: &str) -> Result<ProtocolKind, String> {
        match s {
            "raft" => Ok(ProtocolKind::Raft),
            "paxos" => Ok(ProtocolKind::Paxos),
            "pbft" => Ok(ProtocolKind::Pbft),
            _ => Err(format!("unknown protocol `{s}` (expected raft, paxos or pbft)")),
        }
    }
}

/// How a run is set up. `Default` is a 5-node Raft cluster, 5 clients of
/// 100 operations each, no random faults.
#[derive(Clone, Debug, PartialEq)]
pub struct SimOptions {
    /// The protocol.
    pub protocol: ProtocolKind,
    /// Replicas (ids `1..=nodes`).
    pub nodes: usize,
    /// Random faults injected during the fault window.
    pub faults: FaultProfile,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations each client issues, one at a time.
    pub ops_per_client: usize,
    /// A scripted fault timeline, run alongside the random faults.
    pub scenario: Option<Scenario>,
    /// A protocol bug to inject by name (see [`crate::SimProtocol::bugs`]).
    pub bug: Option<String>,
    /// Hard limit of virtual time; clients still waiting then are a
    /// liveness failure.
    pub max_time_ms: u64,
    /// How long random faults are injected (from time 0). Afterwards every
    /// fault is healed and the liveness phase starts.
    pub fault_window_ms: u64,
    /// After the faults heal, a leader must be elected and a fresh command
    /// committed within this bound.
    pub liveness_bound_ms: u64,
    /// Network delays and base fault rates.
    pub net: NetConfig,
    /// Knobs of the random fault schedule.
    pub fault_config: FaultConfig,
    /// Simulated fsync latency bounds.
    pub fsync_min_us: u64,
    /// See `fsync_min_us`.
    pub fsync_max_us: u64,
    /// Client think time between operations, uniform in `0..=think_ms`.
    pub think_ms: u64,
    /// How long a client waits for an answer before retrying elsewhere.
    pub client_timeout_ms: u64,
    /// Keys the workload touches (skewed towards the first ones).
    pub keys: usize,
    /// Serve gets through the log instead of through read barriers
    /// (ReadIndex).
    pub reads_through_log: bool,
    /// Leaders answer reads from a lease instead of a ReadIndex round
    /// trip (Raft's `ReadMode::Lease`; see [`crate::SimProtocol::configure_reads`]).
    pub lease_reads: bool,
    /// Followers answer reads after asking the leader for a read index.
    pub follower_reads: bool,
    /// Take a snapshot every this many applied entries instead of the
    /// protocol's simulator default (see
    /// [`crate::SimProtocol::configure_snapshots`]).
    pub snapshot_interval_entries: Option<u64>,
    /// The leader writes its log in parallel with replicating it (Raft's
    /// `leader_parallel_write`, as the node runs it): its AppendEntries leave
    /// before its appends sync, and it counts its own log toward a quorum
    /// only once the simulated disk reports it durable. See
    /// [`crate::SimProtocol::configure_parallel_write`].
    pub leader_parallel_write: bool,
    /// Check linearizability of the client history at the end.
    pub check_linearizability: bool,
    /// For protocols whose views must converge
    /// ([`crate::SimProtocol::views_converge`], PBFT): after the clients
    /// finished, every correct replica must be in one view within the
    /// liveness bound. Off by default: PBFT still leaves a correct replica
    /// alone in a higher view in about 1 run in 500 (see the README).
    pub check_views_converge: bool,
    /// Keep every position each node applies, for
    /// [`Sim::committed_on`](crate::Sim::committed_on) (scenario tests). Off
    /// in sweeps and measurements: it grows with the run.
    pub keep_applied_log: bool,
    /// Search steps the linearizability checker may take before giving up
    /// (reported as `linearizability (unknown)`).
    pub lincheck_max_steps: u64,
    /// Replicas an adversary controls (ids `1..=byzantine`, see
    /// [`crate::byzantine`]); PBFT only.
    pub byzantine: usize,
    /// The adversary's strategy by name ([`crate::byzantine::ATTACKS`], or
    /// `all`); required when `byzantine > 0`.
    pub attack: Option<String>,
    /// Count and time authentication work (MACs, signatures) into
    /// [`Metrics::auth`](crate::Metrics::auth), with every replica verifying
    /// every signature itself as a deployment does (see
    /// [`crate::SimProtocol::configure_auth_metering`]). Changes no decision
    /// of the run; `synod sim --compare` turns it on.
    pub measure_auth: bool,
    /// Simulated events (everything the event queue hands out) a run may
    /// take before it is stopped and reported as an `event budget`
    /// failure; 0 (the default) sizes it from the workload
    /// ([`SimOptions::event_budget`]). A backstop: virtual time bounds a
    /// run, but not the events inside it, so a storm of messages that
    /// barely moves the clock still ends, with a report.
    pub max_events: u64,
}

/// The automatic event budget: this many events plus
/// [`EVENT_BUDGET_PER_OP`] per client operation. Typical runs take well
/// under 200 events per operation (a 4-replica PBFT run of 500 operations
/// under faults: ~80,000).
pub const EVENT_BUDGET_BASE: u64 = 5_000_000;

/// See [`EVENT_BUDGET_BASE`].
pub const EVENT_BUDGET_PER_OP: u64 = 2_000;

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            protocol: ProtocolKind::Raft,
            nodes: 5,
            faults: FaultProfile::None,
            clients: 5,
            ops_per_client: 100,
            scenario: None,
            bug: None,
            max_time_ms: 120_000,
            fault_window_ms: 10_000,
            liveness_bound_ms: 5_000,
            net: NetConfig::default(),
            fault_config: FaultConfig::default(),
            fsync_min_us: 100,
            fsync_max_us: 500,
            think_ms: 100,
            client_timeout_ms: 1_500,
            keys: 8,
            reads_through_log: false,
            lease_reads: false,
            follower_reads: false,
            snapshot_interval_entries: None,
            leader_parallel_write: false,
            check_linearizability: true,
            check_views_converge: false,
            keep_applied_log: true,
            lincheck_max_steps: 20_000_000,
            max_events: 0,
            byzantine: 0,
            attack: None,
            measure_auth: false,
        }
    }
}

impl SimOptions {
    /// Checks the options, naming the first problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes == 0 {
            return Err("--nodes must be at least 1".into());
        }
        if self.nodes > 64 {
            return Err(format!("--nodes {} is too many (at most 64)", self.nodes));
        }
        if self.clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        if self.clients > 10_000 {
            return Err(format!("--clients {} is too many (at most 10000)", self.clients));
        }
        if self.ops_per_client == 0 {
            return Err("--ops must be at least 1".into());
        }
        if self.max_time_ms == 0 {
            return Err("--max-time-ms must be positive".into());
        }
        if self.keys == 0 {
            return Err("the workload needs at least one key".into());
        }
        if self.fsync_min_us > self.fsync_max_us {
            return Err("fsync_min_us must not exceed fsync_max_us".into());
        }
        if self.client_timeout_ms == 0 {
            return Err("client_timeout_ms must be positive".into());
        }
        let n = &self.net;
        for (name, p) in [("loss", n.loss), ("duplicate", n.duplicate), ("reorder", n.reorder)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("network {name} probability {p} is not in [0, 1]"));
            }
        }
        let end = self.quiet_from_ms();
        if end.saturating_add(self.liveness_bound_ms) > self.max_time_ms {
            return Err(format!(
                "--max-time-ms {} leaves no room for the liveness phase (faults end at {end} ms, \
                 liveness needs {} ms more)",
                self.max_time_ms, self.liveness_bound_ms
            ));
        }
        if let Some(s) = &self.scenario {
            s.validate(self.nodes).map_err(|e| e.to_string())?;
        }
        crate::byzantine::validate(self)?;
        Ok(())
    }

    /// The events a run may take ([`max_events`](Self::max_events), or
    /// [`EVENT_BUDGET_BASE`] plus [`EVENT_BUDGET_PER_OP`] per operation).
    pub fn event_budget(&self) -> u64 {
        if self.max_events > 0 {
            return self.max_events;
        }
        let ops = (self.clients as u64).saturating_mul(self.ops_per_client as u64);
        EVENT_BUDGET_BASE.saturating_add(EVENT_BUDGET_PER_OP.saturating_mul(ops))
    }

    /// When faults stop and everything is healed: the end of the fault
    /// window (if random faults are on) or just after the last scenario step.
    pub fn quiet_from_ms(&self) -> u64 {
        let window = if self.faults == FaultProfile::None { 0 } else { self.fault_window_ms };
        let script = self.scenario.as_ref().map_or(0, |s| s.end_ms() + 1);
        window.max(script)
    }

    /// The `synod sim` command that reproduces the run of `seed` with these
    /// options.
    pub fn replay_command(&self, seed: u64) -> String {
        let d = SimOptions::default();
        let mut s = format!(
            "synod sim --protocol {} --nodes {} --clients {} --ops {} --faults {} --seed {seed}",
            self.protocol.name(),
            self.nodes,
            self.clients,
            self.ops_per_client,
            self.faults.name()
        );
        if let Some(sc) = &self.scenario {
            s.push_str(&format!(" --scenario {}", sc.source));
        }
        if let Some(b) = &self.bug {
            s.push_str(&format!(" --bug {b}"));
        }
        if self.max_time_ms != d.max_time_ms {
            s.push_str(&format!(" --max-time-ms {}", self.max_time_ms));
        }
        if self.fault_window_ms != d.fault_window_ms {
            s.push_str(&format!(" --fault-window-ms {}", self.fault_window_ms));
        }
        if self.reads_through_log {
            s.push_str(" --reads-through-log");
        }
        if self.lease_reads {
            s.push_str(" --lease-reads");
        }
        if self.follower_reads {
            s.push_str(" --follower-reads");
        }
        if self.leader_parallel_write {
            s.push_str(" --leader-parallel-write");
        }
        if self.byzantine > 0 {
            s.push_str(&format!(" --byzantine {}", self.byzantine));
        }
        if let Some(a) = &self.attack {
            s.push_str(&format!(" --attack {a}"));
        }
        if self.max_events != d.max_events {
            s.push_str(&format!(" --max-events {}", self.max_events));
        }
        if self.check_views_converge {
            s.push_str(" --check-views-converge");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(SimOptions::default().validate(), Ok(()));
    }

    #[test]
    fn bad_options_are_rejected_with_a_reason() {
        let bad = |f: fn(&mut SimOptions)| {
            let mut o = SimOptions::default();
            f(&mut o);
            o.validate().unwrap_err()
        };
        assert!(bad(|o| o.nodes = 0).contains("--nodes"));
        assert!(bad(|o| o.clients = 0).contains("--clients"));
        assert!(bad(|o| o.ops_per_client = 0).contains("--ops"));
        assert!(bad(|o| o.max_time_ms = 0).contains("--max-time-ms"));
        assert!(bad(|o| o.net.loss = 2.0).contains("loss"));
        assert!(bad(|o| o.fsync_min_us = 1_000_000).contains("fsync"));
        assert!(
            bad(|o| {
                o.faults = FaultProfile::All;
                o.max_time_ms = 11_000;
            })
            .contains("liveness")
        );
        let scenario =
            Scenario::parse("[[at]]\ntime_ms = 1\naction = \"crash\"\nnode = 7\n", "s.toml");
        let mut o = SimOptions { scenario: scenario.ok(), ..SimOptions::default() };
        assert!(
            o.validate().unwrap_err().contains("s.toml:4: field `node`: node 7 does not exist")
        );
        o.scenario = None;
        assert!(o.validate().is_ok());
    }

    #[test]
    fn replay_command_names_every_non_default_knob() {
        let o = SimOptions {
            faults: FaultProfile::All,
            bug: Some("vote-twice-in-term".into()),
            reads_through_log: true,
            ..SimOptions::default()
        };
        let c = o.replay_command(42);
        assert_eq!(
            c,
            "synod sim --protocol raft --nodes 5 --clients 5 --ops 100 --faults all --seed 42 \
             --bug vote-twice-in-term --reads-through-log"
        );
    }
}
