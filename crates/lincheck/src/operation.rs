//! Histories: the operations clients issued, with their call and return
//! times, and the check that a history is well formed.

use std::fmt;

/// One client operation as the client saw it: what it asked, when, and — if
/// it heard back — what it was told and when.
///
/// Times are microseconds on one clock shared by all clients (virtual time in
/// the simulator, a monotonic clock in real-cluster tests). Only their order
/// matters. `output` and `ret` are both `Some` (the operation returned) or
/// both `None` (it never returned: it timed out or its client crashed); an
/// operation with no return stays pending forever, so it may take effect at
/// any instant after `call`, or never.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client that issued it (for reports only; the checker does not
    /// require a client's operations to be sequential).
    pub client: u64,
    /// What was asked.
    pub input: I,
    /// When it was asked, in microseconds.
    pub call: u64,
    /// What the client was told, or `None` if it never heard back.
    pub output: Option<O>,
    /// When the client was told, in microseconds, or `None` if it never was.
    /// At least `call`.
    pub ret: Option<u64>,
}

impl<I, O> Operation<I, O> {
    /// An operation that returned `output` at `ret`.
    pub fn completed(client: u64, input: I, call: u64, output: O, ret: u64) -> Self {
        Operation { client, input, call, output: Some(output), ret: Some(ret) }
    }

    /// An operation called at `call` that never returned.
    pub fn pending(client: u64, input: I, call: u64) -> Self {
        Operation { client, input, call, output: None, ret: None }
    }

    /// True if the operation returned.
    pub fn is_completed(&self) -> bool {
        self.ret.is_some()
    }
}

/// Why a history is not well formed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MalformedHistory {
    /// Operation `index` has an output but no return time, or the reverse.
    OutputWithoutReturn {
        /// Position of the operation in the history.
        index: usize,
    },
    /// Operation `index` returned before it was called.
    ReturnBeforeCall {
        /// Position of the operation in the history.
        index: usize,
        /// Its call time, in microseconds.
        call: u64,
        /// Its return time, in microseconds.
        ret: u64,
    },
}

impl fmt::Display for MalformedHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MalformedHistory::OutputWithoutReturn { index } => write!(
                f,
                "operation #{index} must have both an output and a return time, or neither"
            ),
            MalformedHistory::ReturnBeforeCall { index, call, ret } => {
                write!(f, "operation #{index} returned at {ret}us, before its call at {call}us")
            }
        }
    }
}

impl std::error::Error for MalformedHistory {}

/// Checks that every operation has an output iff it has a return time, and
/// returns no earlier than it was called. [`check`](crate::check()) panics on a
/// malformed history; call this first on histories from outside the process.
pub fn validate<I, O>(history: &[Operation<I, O>]) -> Result<(), MalformedHistory> {
    for (index, op) in history.iter().enumerate() {
        match (op.output.is_some(), op.ret) {
            (true, Some(ret)) if ret < op.call => {
                return Err(MalformedHistory::ReturnBeforeCall { index, call: op.call, ret });
            }
            (true, Some(_)) | (false, None) => {}
            _ => return Err(MalformedHistory::OutputWithoutReturn { index }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_histories_pass() {
        let history = vec![
            Operation::completed(1, 'a', 5, 'x', 5),
            Operation::<char, char>::pending(2, 'b', 3),
        ];
        assert_eq!(validate(&history), Ok(()));
        assert!(history[0].is_completed());
        assert!(!history[1].is_completed());
    }

    #[test]
    fn output_without_return_is_malformed() {
        let history = vec![
            Operation::completed(1, 'a', 0, 'x', 1),
            Operation { client: 1, input: 'b', call: 2, output: Some('y'), ret: None },
        ];
        assert_eq!(validate(&history), Err(MalformedHistory::OutputWithoutReturn { index: 1 }));
        let history = vec![Operation::<char, char> {
            client: 1,
            input: 'b',
            call: 2,
            output: None,
            ret: Some(3),
        }];
        assert_eq!(validate(&history), Err(MalformedHistory::OutputWithoutReturn { index: 0 }));
    }

    #[test]
    fn return_before_call_is_malformed() {
        let history = vec![Operation::completed(7, 'a', 10, 'x', 9)];
        let err = validate(&history).unwrap_err();
        assert_eq!(err, MalformedHistory::ReturnBeforeCall { index: 0, call: 10, ret: 9 });
        assert!(err.to_string().contains("before its call"));
    }
}
