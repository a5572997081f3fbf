//! The sequential specification a history is checked against.

use crate::operation::Operation;
use std::fmt::Debug;
use std::hash::Hash;

/// A sequential specification: a state machine that says, for each operation
/// applied to a state, whether the observed output is allowed and what state
/// follows.
///
/// The checker explores orders of operations, calling [`step`](Model::step)
/// many times per operation, and memoizes `(set of operations linearized,
/// state)` pairs, so `step` must be pure (a function of its arguments only)
/// and `State` cheap to clone, hash and compare.
///
/// # Partitioning
///
/// If the operations split into groups that never affect each other (e.g.
/// operations on different keys of a map), [`partition`](Model::partition)
/// should return those groups: the whole history is linearizable iff each
/// group is (P-compositionality, Horn & Kroening 2015), and checking groups
/// separately is exponentially cheaper. `State` is then the state of *one*
/// group (e.g. one key's value), and `init` its initial state.
pub trait Model {
    /// What a client asks.
    type Input: Clone + Debug;
    /// What a client is told.
    type Output: Clone + Debug;
    /// The state of the specification (of one partition).
    type State: Clone + Eq + Hash + Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input` to `state`. Returns the next state if `output` is what
    /// the specification could answer, and `None` otherwise.
    ///
    /// `output == None` means the operation never returned: the step must
    /// then accept any output, i.e. return the state that applying `input`
    /// leads to (for a nondeterministic operation, any such state will do).
    /// It is never an error for a pending operation to take effect.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Splits `history` into independent groups, as lists of positions in
    /// `history`. Positions must be in range and appear at most once;
    /// operations left out of every group are not checked. Groups are
    /// checked, and violations reported, in the order returned. By default,
    /// one group holding every operation.
    fn partition(&self, history: &[Operation<Self::Input, Self::Output>]) -> Vec<Vec<usize>> {
        vec![(0..history.len()).collect()]
    }

    /// Names a group for reports (e.g. `key "x"`). `partition` holds the
    /// group's positions in `history`; `partition_index` is its place in the
    /// list [`partition`](Model::partition) returned. By default,
    /// `partition <partition_index>`.
    fn describe_partition(
        &self,
        history: &[Operation<Self::Input, Self::Output>],
        partition: &[usize],
        partition_index: usize,
    ) -> String {
        let _ = (history, partition);
        format!("partition {partition_index}")
    }

    /// Renders one operation for reports. By default, the `Debug` forms of
    /// input and output.
    fn describe_operation(&self, input: &Self::Input, output: Option<&Self::Output>) -> String {
        match output {
            Some(output) => format!("{input:?} -> {output:?}"),
            None => format!("{input:?} -> (no response)"),
        }
    }

    /// Renders a state for reports. By default, its `Debug` form.
    fn describe_state(&self, state: &Self::State) -> String {
        format!("{state:?}")
    }
}
