//! The search for a linearization of one partition: Wing & Gong's
//! depth-first search with Lowe's memoization, as in Porcupine.
//!
//! The search walks the event list from its head. At a call, it tries to
//! linearize that operation now: if the model accepts the operation's
//! output and the resulting configuration is new, the operation is pushed
//! on a stack, lifted out of the list, and the walk restarts from the head.
//! At a return, the operation it belongs to should already have taken
//! effect but has not, so the last choice was wrong: the search pops it,
//! puts it back, and tries the next call after it. Success is linearizing
//! every operation that returned (pending ones may simply never take
//! effect); failure is backtracking past the first choice.

use crate::bitset::Bitset;
use crate::events::{Event, EventList};
use crate::memo::Memo;
use crate::model::Model;
use crate::operation::Operation;

/// The limits of one search, and what it used.
pub(crate) struct Meter {
    /// Search steps left (one step: one event visited).
    pub(crate) steps_left: u64,
    /// The most bytes one partition's memo may hold.
    pub(crate) max_memo_bytes: usize,
    /// Steps used so far, over all partitions.
    pub(crate) steps_used: u64,
}

/// Which limit stopped a search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    Steps,
    MemoBytes,
}

/// The deepest point the search reached in a history it found illegal.
#[derive(Clone, Debug)]
pub(crate) struct Deepest<S> {
    /// The longest linearizable prefix, as operation positions within the
    /// partition, in linearization order.
    pub(crate) prefix: Vec<usize>,
    /// The model state after `prefix`.
    pub(crate) state: S,
    /// The operations that could have been linearized next, none of which
    /// leads to a linearization.
    pub(crate) stuck: Vec<usize>,
}

/// The verdict on one partition.
pub(crate) enum Outcome<S> {
    Linearizable,
    Illegal(Deepest<S>),
    OutOfBudget(Limit),
}

/// Searches for a linearization of `ops` (one partition) under `model`.
pub(crate) fn search<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    meter: &mut Meter,
) -> Outcome<M::State> {
    let times: Vec<(u64, Option<u64>)> = ops.iter().map(|op| (op.call, op.ret)).collect();
    let mut events = EventList::new(&times);
    let completed: Vec<bool> = ops.iter().map(|op| op.is_completed()).collect();
    let mut linearized = Bitset::new(&completed);
    let mut memo = Memo::new(Bitset::mask(ops.len(), (0..ops.len()).filter(|&i| !completed[i])));
    // The operations linearized, in order, each with the state before it.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = model.init();
    let mut unlinearized_completed = ops.iter().filter(|op| op.is_completed()).count();
    let mut deepest = DeepestTracker::default();

    let mut cursor = events.first();
    loop {
        if unlinearized_completed == 0 {
            return Outcome::Linearizable;
        }
        if meter.steps_left == 0 {
            return Outcome::OutOfBudget(Limit::Steps);
        }
        meter.steps_left -= 1;
        meter.steps_used += 1;
        // An operation that returned is still unlinearized, so its return
        // is still linked somewhere after the cursor.
        let event = events.event(cursor);
        assert!(event.is_some(), "search: walked past every return with operations left");
        match event {
            Some(Event::Call(op)) => {
                let operation = ops[op];
                let next_state = model.step(&state, &operation.input, operation.output.as_ref());
                match next_state {
                    Some(next_state) if memo.insert_if_new(&linearized, op, &next_state) => {
                        if memo.approx_bytes() > meter.max_memo_bytes {
                            return Outcome::OutOfBudget(Limit::MemoBytes);
                        }
                        stack.push((op, std::mem::replace(&mut state, next_state)));
                        linearized.insert(op);
                        events.lift(op);
                        if operation.is_completed() {
                            unlinearized_completed -= 1;
                        }
                        cursor = events.first();
                    }
                    // Illegal here, or a configuration already explored.
                    _ => cursor = events.next(cursor),
                }
            }
            Some(Event::Return(_)) | None => {
                deepest.observe(&stack, &state, &events);
                let Some((op, previous_state)) = stack.pop() else {
                    return Outcome::Illegal(deepest.take());
                };
                deepest.popped_to(stack.len());
                state = previous_state;
                linearized.remove(op);
                events.unlift(op);
                if ops[op].is_completed() {
                    unlinearized_completed += 1;
                }
                cursor = events.after_call(op);
            }
        }
    }
}

/// Remembers the deepest point at which the search had to backtrack.
///
/// Copying the whole stack at each new record would be quadratic on long
/// histories, so the tracker only copies the part of the stack that was
/// popped since the last record: below that low-water mark, the recorded
/// prefix and the stack still agree.
struct DeepestTracker<S> {
    best: Option<Deepest<S>>,
    /// Stack entries below this depth are unchanged since the last record.
    low_water: usize,
}

impl<S> Default for DeepestTracker<S> {
    fn default() -> Self {
        DeepestTracker { best: None, low_water: 0 }
    }
}

impl<S: Clone> DeepestTracker<S> {
    /// The search is about to backtrack from depth `stack.len()`.
    fn observe(&mut self, stack: &[(usize, S)], state: &S, events: &EventList) {
        if self.best.as_ref().is_some_and(|best| best.prefix.len() >= stack.len()) {
            return;
        }
        let stuck = events.minimal_calls();
        match &mut self.best {
            Some(best) => {
                best.prefix.truncate(self.low_water);
                best.prefix.extend(stack[self.low_water..].iter().map(|(op, _)| *op));
                best.state = state.clone();
                best.stuck = stuck;
            }
            None => {
                let prefix = stack.iter().map(|(op, _)| *op).collect();
                self.best = Some(Deepest { prefix, state: state.clone(), stuck });
            }
        }
        self.low_water = stack.len();
    }

    /// The stack was popped down to `depth`.
    fn popped_to(&mut self, depth: usize) {
        self.low_water = self.low_water.min(depth);
    }

    fn take(&mut self) -> Deepest<S> {
        // The search observes before every pop, including the failing one.
        self.best.take().expect("search: failed without ever backtracking")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter with `add(n)` answering the new total.
    struct Counter;

    impl Model for Counter {
        type Input = u64;
        type Output = u64;
        type State = u64;

        fn init(&self) -> u64 {
            0
        }

        fn step(&self, state: &u64, input: &u64, output: Option<&u64>) -> Option<u64> {
            let total = state + input;
            match output {
                Some(&seen) if seen != total => None,
                _ => Some(total),
            }
        }
    }

    fn meter() -> Meter {
        Meter { steps_left: 1_000_000, max_memo_bytes: usize::MAX, steps_used: 0 }
    }

    fn run(history: &[Operation<u64, u64>]) -> Outcome<u64> {
        let ops: Vec<_> = history.iter().collect();
        search(&Counter, &ops, &mut meter())
    }

    #[test]
    fn concurrent_adds_linearize_in_either_order() {
        // add(1) and add(2) overlap; the client saw totals 3 and 2: add(2) first.
        let history = [Operation::completed(1, 1, 0, 3, 10), Operation::completed(2, 2, 1, 2, 11)];
        assert!(matches!(run(&history), Outcome::Linearizable));
    }

    #[test]
    fn real_time_order_is_respected_and_the_deepest_prefix_reported() {
        // add(2) returned before add(1) was called, yet saw add(1)'s effect.
        let history = [Operation::completed(1, 1, 20, 1, 30), Operation::completed(2, 2, 0, 3, 10)];
        let Outcome::Illegal(deepest) = run(&history) else { panic!("expected illegal") };
        assert!(deepest.prefix.is_empty());
        assert_eq!(deepest.state, 0);
        assert_eq!(deepest.stuck, vec![1]);
    }

    #[test]
    fn the_deepest_prefix_is_the_longest_one_tried() {
        // add(1)->1, then add(1)->2, then add(5)->99 (impossible).
        let history = [
            Operation::completed(1, 1, 0, 1, 1),
            Operation::completed(1, 1, 2, 2, 3),
            Operation::completed(1, 5, 4, 99, 5),
        ];
        let Outcome::Illegal(deepest) = run(&history) else { panic!("expected illegal") };
        assert_eq!(deepest.prefix, vec![0, 1]);
        assert_eq!(deepest.state, 2);
        assert_eq!(deepest.stuck, vec![2]);
    }

    #[test]
    fn pending_operations_may_take_effect_or_not() {
        // A pending add(5) overlaps everything after it; one read-like
        // add(0) sees it, a later one... also must see it.
        let took_effect = [
            Operation::pending(1, 5, 0),
            Operation::completed(2, 0, 1, 5, 2),
            Operation::completed(2, 0, 3, 5, 4),
        ];
        assert!(matches!(run(&took_effect), Outcome::Linearizable));
        let never = [Operation::pending(1, 5, 0), Operation::completed(2, 0, 1, 0, 2)];
        assert!(matches!(run(&never), Outcome::Linearizable));
        let flickers = [
            Operation::pending(1, 5, 0),
            Operation::completed(2, 0, 1, 5, 2),
            Operation::completed(2, 0, 3, 0, 4),
        ];
        assert!(matches!(run(&flickers), Outcome::Illegal(_)));
    }

    #[test]
    fn running_out_of_steps_is_reported() {
        let history = [Operation::completed(1, 1, 0, 3, 10), Operation::completed(2, 2, 1, 2, 11)];
        let ops: Vec<_> = history.iter().collect();
        let mut meter = Meter { steps_left: 1, max_memo_bytes: usize::MAX, steps_used: 0 };
        assert!(matches!(search(&Counter, &ops, &mut meter), Outcome::OutOfBudget(Limit::Steps)));
        assert_eq!(meter.steps_used, 1);
        let mut meter = Meter { steps_left: 100, max_memo_bytes: 0, steps_used: 0 };
        assert!(matches!(
            search(&Counter, &ops, &mut meter),
            Outcome::OutOfBudget(Limit::MemoBytes)
        ));
    }
}
