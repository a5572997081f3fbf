//! [`SimProtocol`]: what the simulator needs from a protocol beyond
//! [`Protocol`].

use crate::invariant::Invariant;
use synod_core::{Command, NodeId, Output, Protocol, Time};

/// A protocol the simulator can run: how to configure a cluster of it, which
/// bugs can be injected into it, and which protocol-specific checkers watch
/// it.
pub trait SimProtocol: Protocol + 'static {
    /// The protocol's name as the CLI spells it (`"raft"`).
    fn name() -> &'static str;

    /// The configuration of a cluster of `voters`, with timeouts suited to
    /// the simulated network (about a millisecond per hop).
    fn sim_config(voters: &[NodeId]) -> Self::Config;

    /// The names of the bugs [`inject_bug`](SimProtocol::inject_bug) knows.
    fn bugs() -> &'static [&'static str] {
        &[]
    }

    /// Turns on a deliberately broken behaviour by name, to prove the
    /// checkers catch it.
    fn inject_bug(config: &mut Self::Config, bug: &str) -> Result<(), String> {
        let _ = config;
        Err(format!("{} has no injectable bug `{bug}`", Self::name()))
    }

    /// Every safety checker to run: by default the protocol-independent
    /// [`generic_invariants`](crate::invariants::generic_invariants);
    /// protocols add their own to that list.
    fn invariants() -> Vec<Box<dyn Invariant<Self>>> {
        crate::invariants::generic_invariants::<Self>()
    }

    /// Asks this node, if it leads, to hand leadership to `to`. Returns
    /// whether a transfer started. Protocols without transfers return false.
    fn transfer_leadership(
        &mut self,
        now: Time,
        to: NodeId,
        out: &mut Output<Self::Message, Self::Write>,
    ) -> bool {
        let _ = (now, to, out);
        false
    }

    /// Asks this node, if it leads, to change the cluster membership to
    /// `voters` and `learners`. Protocols without membership changes refuse.
    fn change_membership(
        &mut self,
        now: Time,
        voters: &std::collections::BTreeSet<NodeId>,
        learners: &std::collections::BTreeSet<NodeId>,
        out: &mut Output<Self::Message, Self::Write>,
    ) -> Result<(), String> {
        let _ = (now, voters, learners, out);
        Err(format!("{} does not change its membership", Self::name()))
    }

    /// Turns on lease reads and/or follower reads
    /// ([`SimOptions::lease_reads`](crate::SimOptions::lease_reads),
    /// [`SimOptions::follower_reads`](crate::SimOptions::follower_reads)).
    /// Protocols without them refuse.
    fn configure_reads(
        config: &mut Self::Config,
        lease: bool,
        follower: bool,
    ) -> Result<(), String> {
        let _ = (config, lease, follower);
        Err(format!("{} has no lease or follower reads", Self::name()))
    }

    /// Takes a snapshot every `every_entries` applied entries
    /// ([`SimOptions::snapshot_interval_entries`](crate::SimOptions::snapshot_interval_entries)).
    /// Protocols without a snapshot policy refuse.
    fn configure_snapshots(config: &mut Self::Config, every_entries: u64) -> Result<(), String> {
        let _ = (config, every_entries);
        Err(format!("{} has no configurable snapshot interval", Self::name()))
    }

    /// Tells a protocol that agrees on a clock (PBFT's batch timestamps)
    /// how far apart two correct nodes' clocks can be in this run, plus
    /// message delay: its bound on a proposer's clock must cover it.
    fn configure_clock_skew(config: &mut Self::Config, max_skew: std::time::Duration) {
        let _ = (config, max_skew);
    }

    /// Lets a leader write its log in parallel with replicating it
    /// ([`SimOptions::leader_parallel_write`](crate::SimOptions::leader_parallel_write)):
    /// its replication leaves before its appends are synced
    /// ([`leaves_before_sync`](SimProtocol::leaves_before_sync)) and the
    /// simulator reports durability with
    /// [`synod_core::Protocol::persisted`]
    /// ([`persisted_index`](SimProtocol::persisted_index)). Protocols
    /// without it refuse.
    fn configure_parallel_write(config: &mut Self::Config) -> Result<(), String> {
        let _ = config;
        Err(format!("{} has no parallel leader write", Self::name()))
    }

    /// With parallel leader writes: whether `msg` may leave before the
    /// writes of its output are synced.
    fn leaves_before_sync(msg: &Self::Message) -> bool {
        let _ = msg;
        false
    }

    /// With parallel leader writes: how far the node's own log is durable,
    /// given its durable state and the writes still unsynced (in order), to
    /// report with [`synod_core::Protocol::persisted`];
    /// `None` reports nothing.
    fn persisted_index(durable: &Self::Durable, unsynced: &[Self::Write]) -> Option<u64> {
        let _ = (durable, unsynced);
        None
    }

    /// Spare node ids (outside the bootstrap configuration) a run of
    /// `nodes` replicas gets when its fault profile changes the membership
    /// (see [`FaultProfile::includes_membership`](crate::FaultProfile::includes_membership)).
    /// Protocols without membership changes get none.
    fn membership_spares(nodes: usize) -> usize {
        let _ = nodes;
        0
    }

    /// The configuration this node has in effect, for membership faults.
    /// Protocols without membership changes return `None`.
    fn membership(&self) -> Option<crate::faults::SimMembership> {
        None
    }

    /// What a client sends for `command` (once per operation, before any
    /// attempt): protocols whose clients sign requests (PBFT) seal the op;
    /// by default the command as is.
    fn wrap_request(config: &Self::Config, command: Command) -> Command {
        let _ = config;
        command
    }

    /// Whether every correct replica must end in one view after the faults
    /// heal (checked once the clients finished, within the liveness bound):
    /// a correct replica left alone in another view does not break
    /// liveness, but the cluster has lost its margin (PBFT: one of 3f+1 out
    /// of every quorum until the others change view). Off by default.
    fn views_converge() -> bool {
        false
    }

    /// Turns on counting and timing of authentication work
    /// ([`SimOptions::measure_auth`](crate::SimOptions::measure_auth)),
    /// with every replica verifying every signature itself (no
    /// simulator-only sharing of verifications), so the counts and times are
    /// what a deployment's replicas would do. Protocols that authenticate
    /// no message do nothing.
    fn configure_auth_metering(config: &mut Self::Config) {
        let _ = config;
    }

    /// The authentication work counted so far over the whole cluster;
    /// `None` when not measured or the protocol authenticates no message.
    fn auth_work(config: &Self::Config) -> Option<synod_pbft::AuthWork> {
        let _ = config;
        None
    }

    /// Counters of what this core refused or noticed (messages dropped
    /// because a check failed, by reason), summed over the correct
    /// replicas into [`Metrics::defence`](crate::Metrics::defence). Under
    /// an attack they show that the defence fired. None by default.
    fn defence_counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Asks this node's core to take a snapshot now (the `snapshot` fault).
    /// Returns whether one was requested. Protocols without snapshots
    /// return false.
    fn trigger_snapshot(&mut self, out: &mut Output<Self::Message, Self::Write>) -> bool {
        let _ = out;
        false
    }
}
