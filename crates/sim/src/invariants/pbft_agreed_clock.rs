//! PBFT's agreed clock stays near real time (Castro & Liskov, OSDI'99 §4.6 /
//! TOCS §5.4: backups check the primary's non-deterministic choices). The
//! time a correct replica emits with a committed command
//! ([`synod_core::Committed::time`]) is the timestamp of a batch some
//! correct replica accepted within δ of its clock, so it is never later
//! than the latest any correct clock can read, plus δ: global time plus the
//! largest start offset and drift the simulator gives a clock, plus
//! [`synod_pbft::Config::max_clock_skew`]. A Byzantine primary stamping
//! batches far in the future breaks it if backups do not check. (No lower
//! bound: a batch executed late, after a partition, carries an old time.)

use crate::invariant::{Invariant, StepView, Violation};
use crate::sim::MAX_CLOCK_OFFSET_US;
use synod_pbft::PbftNode;

/// The property's name in violations.
pub const PROPERTY: &str = "pbft agreed clock";

/// Checks every emitted agreed time against the latest correct clock + δ.
#[derive(Debug, Default)]
pub struct PbftAgreedClock;

impl Invariant<PbftNode> for PbftAgreedClock {
    fn name(&self) -> &'static str {
        PROPERTY
    }

    fn after_step(&mut self, step: &StepView<'_, PbftNode>) -> Result<(), Violation> {
        let Some(last) = step.output.committed.last() else { return Ok(()) };
        let Some(time) = last.time else {
            return Err(Violation::new(PROPERTY, Some(step.node), "a command without a time"));
        };
        let drift_ppm = crate::faults::FaultConfig::default().max_drift_ppm.unsigned_abs();
        let g = step.now.as_micros();
        let latest_clock = g + MAX_CLOCK_OFFSET_US + g / 1_000_000 * drift_ppm + drift_ppm;
        let delta = step.core.config().max_clock_skew.as_micros() as u64;
        if time.as_micros() > latest_clock + delta {
            return Err(Violation::new(
                PROPERTY,
                Some(step.node),
                format!(
                    "index {} executed at agreed time {time}, beyond every correct clock \
                     ({}µs at most) plus δ ({delta}µs)",
                    last.index, latest_clock
                ),
            ));
        }
        Ok(())
    }
}
