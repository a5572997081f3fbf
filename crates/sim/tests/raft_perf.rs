//! Measurement (ignored by default; run with `cargo test --release -p
//! synod-sim --test raft_perf -- --ignored --nocapture`): a 5-node Raft
//! simulation of 100,000 committed commands with a snapshot every 1,000
//! entries keeps every node's in-memory log under 2,000 entries; prints
//! the event rate.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;
use synod_raft::RaftNode;
use synod_sim::{Invariant, Sim, SimOptions, StepView, Violation};

/// Records the longest in-memory log any node held after any step.
struct MaxLogLen(Rc<Cell<usize>>);

impl Invariant<RaftNode> for MaxLogLen {
    fn name(&self) -> &'static str {
        "max log length (measurement)"
    }
    fn after_step(&mut self, step: &StepView<'_, RaftNode>) -> Result<(), Violation> {
        self.0.set(self.0.get().max(step.core.log_len()));
        Ok(())
    }
}

#[test]
#[ignore]
fn a_100k_command_run_with_snapshots_every_1000_entries_keeps_logs_bounded() {
    let o = SimOptions {
        nodes: 5,
        clients: 100,
        ops_per_client: 1_000,
        think_ms: 0,
        // Appends to 8 keys would grow values to tens of KiB, and the run
        // would measure memcpy in the state machine, not the simulator.
        keys: 1_000,
        reads_through_log: true,
        check_linearizability: false,
        keep_applied_log: false,
        snapshot_interval_entries: Some(1_000),
        max_time_ms: 1_200_000,
        ..SimOptions::default()
    };
    let mut sim = Sim::<RaftNode>::new(&o, 1).expect("valid");
    let max_log_len = Rc::new(Cell::new(0));
    sim.add_invariant(Box::new(MaxLogLen(max_log_len.clone())));
    let started = Instant::now();
    let failure = sim.run_to_verdict();
    let wall = started.elapsed().as_secs_f64();
    assert!(failure.is_none(), "{failure:?}");
    let m = sim.metrics();
    let rate = m.events as f64 / wall;
    eprintln!(
        "{} commands committed, {} events in {wall:.2} s wall: {rate:.0} events/s; \
         longest in-memory log {} entries",
        m.committed_ops,
        m.events,
        max_log_len.get()
    );
    assert!(m.committed_ops >= 100_000);
    assert!(max_log_len.get() < 2_000, "a log grew to {} entries", max_log_len.get());
}
