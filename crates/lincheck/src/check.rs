//! The entry point: [`check`] a history against a [`Model`], within a
//! [`Budget`], and the verdicts it gives.

use crate::model::Model;
use crate::operation::{Operation, validate};
use crate::search::{Limit, Meter, Outcome, search};
use std::fmt;

/// How much searching [`check`] may do before answering
/// [`CheckResult::Unknown`].
///
/// Checking linearizability is NP-complete, so some histories (many
/// concurrent operations whose outputs say little about their order) take
/// exponential time. The budget turns those into an explicit `Unknown`
/// instead of a hang.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Search steps allowed over all partitions together. A step visits one
    /// call or return event: roughly one [`Model::step`] call plus one memo
    /// lookup, well under a microsecond for small states. A legal history
    /// of `n` operations with few concurrent clients takes a few `n` steps.
    pub max_steps: u64,
    /// The most heap bytes the memo table of one partition may hold (it
    /// holds one bitset of `n` bits and one state per configuration
    /// explored; the bound counts the bitsets and the states' inline size,
    /// not what states point to).
    pub max_memo_bytes: usize,
}

impl Budget {
    /// The default step limit: ten million, a few seconds at most.
    pub const DEFAULT_MAX_STEPS: u64 = 10_000_000;
    /// The default memo limit: 1 GiB.
    pub const DEFAULT_MAX_MEMO_BYTES: usize = 1 << 30;

    /// At most `max_steps` steps, and the default memo limit.
    pub fn steps(max_steps: u64) -> Self {
        Budget { max_steps, ..Budget::default() }
    }

    /// No limit at all: [`check`] then never answers `Unknown` (but may not
    /// answer at all).
    pub fn unlimited() -> Self {
        Budget { max_steps: u64::MAX, max_memo_bytes: usize::MAX }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_steps: Budget::DEFAULT_MAX_STEPS,
            max_memo_bytes: Budget::DEFAULT_MAX_MEMO_BYTES,
        }
    }
}

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Linearizable: every partition has a linearization.
    Ok,
    /// Not linearizable: the first partition (in [`Model::partition`]'s
    /// order) that has no linearization, with the evidence.
    Illegal(Counterexample),
    /// The budget ran out before some partition was decided and no other
    /// partition was found illegal. This is NOT a pass: report it.
    Unknown(Undecided),
}

impl CheckResult {
    /// True for [`CheckResult::Ok`] only.
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }

    /// True for [`CheckResult::Illegal`].
    pub fn is_illegal(&self) -> bool {
        matches!(self, CheckResult::Illegal(_))
    }

    /// True for [`CheckResult::Unknown`].
    pub fn is_unknown(&self) -> bool {
        matches!(self, CheckResult::Unknown(_))
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Ok => write!(f, "linearizable"),
            CheckResult::Illegal(counterexample) => write!(f, "{counterexample}"),
            CheckResult::Unknown(undecided) => write!(f, "{undecided}"),
        }
    }
}

/// One operation of a history, rendered for a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpSummary {
    /// Its position in the history given to [`check`].
    pub index: usize,
    /// The client that issued it.
    pub client: u64,
    /// When it was called, in microseconds.
    pub call: u64,
    /// When it returned, in microseconds, or `None` if it never did.
    pub ret: Option<u64>,
    /// Input and output, as [`Model::describe_operation`] renders them.
    pub description: String,
}

impl fmt::Display for OpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} client {} [{}us, ", self.index, self.client, self.call)?;
        match self.ret {
            Some(ret) => write!(f, "{ret}us]")?,
            None => write!(f, "never returned]")?,
        }
        write!(f, " {}", self.description)
    }
}

/// Evidence that a partition of a history is not linearizable: the longest
/// prefix of it the search could linearize, and the operations none of which
/// could come next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample {
    /// The partition, as [`Model::describe_partition`] names it (for the
    /// key-value model: `key "x"`).
    pub partition: String,
    /// Its place in the list [`Model::partition`] returned.
    pub partition_index: usize,
    /// How many operations it holds.
    pub partition_len: usize,
    /// The longest linearizable prefix found, in linearization order.
    pub prefix: Vec<OpSummary>,
    /// The model state after `prefix`, as [`Model::describe_state`] renders it.
    pub state_after_prefix: String,
    /// The operations that could be linearized next after `prefix` (called,
    /// and no unlinearized operation returned before their call), in call
    /// order. None of them leads to a linearization of the whole partition:
    /// either its output is wrong for `state_after_prefix`, or every way on
    /// from it fails later.
    pub stuck: Vec<OpSummary>,
}

impl Counterexample {
    /// How many prefix operations [`Display`](fmt::Display) shows (the last ones).
    pub const PREFIX_SHOWN: usize = 10;
}

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "not linearizable: {} (partition {}, {} operations)",
            self.partition, self.partition_index, self.partition_len
        )?;
        writeln!(f, "longest linearizable prefix: {} operations", self.prefix.len())?;
        let omitted = self.prefix.len().saturating_sub(Counterexample::PREFIX_SHOWN);
        if omitted > 0 {
            writeln!(f, "  ... {omitted} earlier operations omitted")?;
        }
        for op in &self.prefix[omitted..] {
            writeln!(f, "  {op}")?;
        }
        writeln!(f, "state after the prefix: {}", self.state_after_prefix)?;
        write!(f, "no operation can be linearized next:")?;
        for op in &self.stuck {
            write!(f, "\n  {op}")?;
        }
        Ok(())
    }
}

/// Which part of the [`Budget`] ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetLimit {
    /// [`Budget::max_steps`].
    Steps,
    /// [`Budget::max_memo_bytes`].
    MemoBytes,
}

/// Why [`check`] could not decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecided {
    /// The first partition left undecided, as [`Model::describe_partition`]
    /// names it.
    pub partition: String,
    /// Its place in the list [`Model::partition`] returned.
    pub partition_index: usize,
    /// How many partitions were left undecided (at least 1).
    pub undecided_partitions: usize,
    /// The limit that ran out first.
    pub limit: BudgetLimit,
    /// Search steps used over all partitions.
    pub steps_used: u64,
}

impl fmt::Display for Undecided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limit = match self.limit {
            BudgetLimit::Steps => "step",
            BudgetLimit::MemoBytes => "memo size",
        };
        write!(
            f,
            "linearizability unknown: the {limit} budget ran out on {} (partition {}) after {} \
             steps; {} partition(s) undecided, none found illegal",
            self.partition, self.partition_index, self.steps_used, self.undecided_partitions
        )
    }
}

/// Checks whether `history` is linearizable with respect to `model`.
///
/// The history is split by [`Model::partition`] and each part searched on
/// its own, in order. The answer is [`CheckResult::Illegal`] for the first
/// part with no linearization, else [`CheckResult::Unknown`] if the budget
/// ran out on some part, else [`CheckResult::Ok`]. A part undecided for lack
/// of budget does not stop the others from being checked (a later illegal
/// part is still reported), but once the step budget is spent every
/// remaining nontrivial part is undecided too.
///
/// Operations are concurrent unless one returned strictly before the other
/// was called: an operation returning at the instant another is called may
/// be ordered either way.
///
/// # Panics
///
/// If the history is malformed (see [`validate`]), or the partition holds an
/// out-of-range or repeated position. Validate histories that come from
/// outside the process first.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: Budget,
) -> CheckResult {
    if let Err(malformed) = validate(history) {
        panic!("lincheck: malformed history: {malformed}");
    }
    let partitions = model.partition(history);
    assert_partitions_disjoint(&partitions, history.len());
    let mut meter = Meter {
        steps_left: budget.max_steps,
        max_memo_bytes: budget.max_memo_bytes,
        steps_used: 0,
    };
    let mut undecided: Option<Undecided> = None;
    for (partition_index, partition) in partitions.iter().enumerate() {
        let ops: Vec<_> = partition.iter().map(|&i| &history[i]).collect();
        match search(model, &ops, &mut meter) {
            Outcome::Linearizable => {}
            Outcome::Illegal(deepest) => {
                let summary = |local: &usize| {
                    let index = partition[*local];
                    let op = &history[index];
                    OpSummary {
                        index,
                        client: op.client,
                        call: op.call,
                        ret: op.ret,
                        description: model.describe_operation(&op.input, op.output.as_ref()),
                    }
                };
                return CheckResult::Illegal(Counterexample {
                    partition: model.describe_partition(history, partition, partition_index),
                    partition_index,
                    partition_len: partition.len(),
                    prefix: deepest.prefix.iter().map(summary).collect(),
                    state_after_prefix: model.describe_state(&deepest.state),
                    stuck: deepest.stuck.iter().map(summary).collect(),
                });
            }
            Outcome::OutOfBudget(limit) => match &mut undecided {
                Some(first) => first.undecided_partitions += 1,
                None => {
                    undecided = Some(Undecided {
                        partition: model.describe_partition(history, partition, partition_index),
                        partition_index,
                        undecided_partitions: 1,
                        limit: match limit {
                            Limit::Steps => BudgetLimit::Steps,
                            Limit::MemoBytes => BudgetLimit::MemoBytes,
                        },
                        steps_used: 0,
                    })
                }
            },
        }
    }
    match undecided {
        Some(undecided) => {
            CheckResult::Unknown(Undecided { steps_used: meter.steps_used, ..undecided })
        }
        None => CheckResult::Ok,
    }
}

/// Asserts that `partitions` holds positions below `len`, each at most once.
fn assert_partitions_disjoint(partitions: &[Vec<usize>], len: usize) {
    let mut seen = vec![false; len];
    for (partition_index, partition) in partitions.iter().enumerate() {
        for &index in partition {
            assert!(
                index < len,
                "lincheck: partition {partition_index} holds position {index} of a history of {len}"
            );
            assert!(!seen[index], "lincheck: position {index} is in two partitions");
            seen[index] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register of small integers: `Some(v)` writes v, `None` reads.
    struct Register;

    impl Model for Register {
        type Input = Option<u8>;
        type Output = u8;
        type State = u8;

        fn init(&self) -> u8 {
            0
        }

        fn step(&self, state: &u8, input: &Option<u8>, output: Option<&u8>) -> Option<u8> {
            match (input, output) {
                (Some(v), _) => Some(*v),
                (None, Some(seen)) if seen != state => None,
                (None, _) => Some(*state),
            }
        }
    }

    fn write(client: u64, v: u8, call: u64, ret: u64) -> Operation<Option<u8>, u8> {
        Operation::completed(client, Some(v), call, 0, ret)
    }

    fn read(client: u64, seen: u8, call: u64, ret: u64) -> Operation<Option<u8>, u8> {
        Operation::completed(client, None, call, seen, ret)
    }

    #[test]
    fn the_default_model_checks_the_whole_history_as_one_partition() {
        let legal = [write(1, 1, 0, 10), read(2, 1, 20, 30)];
        assert_eq!(check(&Register, &legal, Budget::default()), CheckResult::Ok);
        let stale = [write(1, 1, 0, 10), read(2, 0, 20, 30)];
        let CheckResult::Illegal(counterexample) = check(&Register, &stale, Budget::default())
        else {
            panic!("expected illegal")
        };
        assert_eq!(counterexample.partition, "partition 0");
        assert_eq!(counterexample.partition_len, 2);
        assert_eq!(counterexample.prefix.len(), 1);
        assert_eq!(counterexample.prefix[0].index, 0);
        assert_eq!(counterexample.state_after_prefix, "1");
        assert_eq!(counterexample.stuck.len(), 1);
        assert_eq!(counterexample.stuck[0].index, 1);
        let shown = counterexample.to_string();
        assert!(shown.contains("#1 client 2 [20us, 30us] None -> 0"), "{shown}");
        assert!(shown.contains("state after the prefix: 1"), "{shown}");
    }

    #[test]
    fn operations_touching_in_time_are_concurrent() {
        // The read is called at the instant the write returns: either order.
        let history = [write(1, 1, 0, 10), read(2, 0, 10, 20)];
        assert_eq!(check(&Register, &history, Budget::default()), CheckResult::Ok);
        let history = [write(1, 1, 0, 10), read(2, 0, 11, 20)];
        assert!(check(&Register, &history, Budget::default()).is_illegal());
    }

    #[test]
    fn an_empty_history_and_one_of_only_pending_operations_are_linearizable() {
        assert_eq!(check(&Register, &[], Budget::steps(0)), CheckResult::Ok);
        let pending = [Operation::pending(1, Some(3), 0), Operation::pending(2, None, 1)];
        assert_eq!(check(&Register, &pending, Budget::steps(0)), CheckResult::Ok);
    }

    #[test]
    fn a_budget_of_one_step_is_unknown_not_ok() {
        let history = [write(1, 1, 0, 10), write(2, 2, 1, 11), read(3, 2, 12, 20)];
        let result = check(&Register, &history, Budget::steps(1));
        let CheckResult::Unknown(undecided) = &result else { panic!("expected unknown: {result}") };
        assert_eq!(undecided.limit, BudgetLimit::Steps);
        assert_eq!(undecided.steps_used, 1);
        assert_eq!(undecided.undecided_partitions, 1);
        assert!(!result.is_ok());
        assert!(result.to_string().contains("unknown"));
        assert_eq!(check(&Register, &history, Budget::default()), CheckResult::Ok);
    }

    #[test]
    fn long_prefixes_are_elided_in_the_report() {
        let mut history: Vec<_> = (0..30).map(|i| write(1, i as u8, 2 * i, 2 * i + 1)).collect();
        history.push(read(2, 200, 100, 101));
        let CheckResult::Illegal(counterexample) = check(&Register, &history, Budget::default())
        else {
            panic!("expected illegal")
        };
        assert_eq!(counterexample.prefix.len(), 30);
        let shown = counterexample.to_string();
        assert!(shown.contains("20 earlier operations omitted"), "{shown}");
        assert!(shown.contains("#29 client 1"), "{shown}");
        assert!(!shown.contains("#19 client 1"), "{shown}");
    }

    #[test]
    #[should_panic(expected = "malformed history")]
    fn a_malformed_history_is_refused() {
        let history = [write(1, 1, 10, 5)];
        check(&Register, &history, Budget::default());
    }

    #[test]
    #[should_panic(expected = "in two partitions")]
    fn overlapping_partitions_are_refused() {
        struct Twice;
        impl Model for Twice {
            type Input = Option<u8>;
            type Output = u8;
            type State = u8;
            fn init(&self) -> u8 {
                0
            }
            fn step(&self, s: &u8, i: &Option<u8>, o: Option<&u8>) -> Option<u8> {
                Register.step(s, i, o)
            }
            fn partition(&self, history: &[Operation<Option<u8>, u8>]) -> Vec<Vec<usize>> {
                vec![(0..history.len()).collect(), vec![0]]
            }
        }
        check(&Twice, &[write(1, 1, 0, 1)], Budget::default());
    }
}
