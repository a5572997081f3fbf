//! # synod-lincheck
//!
//! A linearizability checker for client histories, in the style of
//! [Porcupine](https://github.com/anishathalye/porcupine): the search of Wing &
//! Gong ("Testing and verifying concurrent objects", 1993) with Lowe's
//! memoization of visited configurations ("Testing for linearizability",
//! 2017), over histories split into independent parts by Horn & Kroening's
//! P-compositionality ("Faster linearizability checking via
//! P-compositionality", 2015).
//!
//! A history is a list of [`Operation`]s: what a client asked ([`input`]),
//! when it asked ([`call`]), and, if it ever heard back, what it was told
//! ([`output`]) and when ([`ret`]). The history is *linearizable* with respect
//! to a sequential [`Model`] if every operation can be given a single instant
//! between its call and its return at which it takes effect, so that applying
//! the operations in that order to the model yields exactly the outputs the
//! clients saw. An operation that never returned (a timeout, a crashed client)
//! may take effect at any instant after its call, or never.
//!
//! [`check()`] answers [`CheckResult::Ok`], [`CheckResult::Illegal`] with a
//! readable [`Counterexample`], or [`CheckResult::Unknown`] when the search
//! ran out of its [`Budget`] — which callers must report as a failure to
//! decide, never treat as a pass. [`KvModel`] is the model of
//! [`synod_core::kv`]'s register map, partitioned per key.
//!
//! ```
//! use bytes::Bytes;
//! use synod_core::kv::{KvOp, KvResult};
//! use synod_lincheck::{check, Budget, CheckResult, KvModel, Operation};
//!
//! let key = Bytes::from_static(b"x");
//! let one = Bytes::from_static(b"1");
//! let history = vec![
//!     // client 1 writes x=1 during [0, 10] ...
//!     Operation::completed(1, KvOp::Put { key: key.clone(), value: one }, 0, KvResult::Done, 10),
//!     // ... then client 2 reads x during [20, 30] and finds it absent: stale.
//!     Operation::completed(2, KvOp::Get { key }, 20, KvResult::Value(None), 30),
//! ];
//! match check(&KvModel, &history, Budget::default()) {
//!     CheckResult::Illegal(counterexample) => println!("{counterexample}"),
//!     other => panic!("expected a violation, got {other}"),
//! }
//! ```
//!
//! ## Cost
//!
//! A legal history is usually decided in a few dozen search steps per
//! operation (3000 operations on one key with ~10 concurrent clients: about
//! 10 ms in a release build). Refuting an illegal one means exhausting every
//! order the outputs allow, which is slower (about 0.1 s for the same size)
//! and grows quickly with the number of *pending writes* per key: each may
//! take effect at any later point or never. The memo skips configurations
//! that differ from one already explored only by extra pending operations
//! having taken effect (see `memo`), but a history with many pending writes
//! on one key can still exhaust the [`Budget`]: keep them few (a client that
//! times out and retries should record one operation, not two).
//!
//! Module map: [`model`] (the [`Model`] trait), [`operation`] (histories),
//! [`check`](mod@check) (the entry point and its results), [`kv`] (the
//! key-value model); the search itself is private (`search`, over the event
//! list of `events`, the bitset of `bitset` and the memo table of `memo`).
//!
//! [`input`]: Operation::input
//! [`call`]: Operation::call
//! [`output`]: Operation::output
//! [`ret`]: Operation::ret
#![deny(missing_docs)]

mod bitset;
pub mod check;
mod events;
pub mod kv;
mod memo;
pub mod model;
pub mod operation;
mod search;

pub use check::{Budget, BudgetLimit, CheckResult, Counterexample, OpSummary, Undecided, check};
pub use kv::KvModel;
pub use model::Model;
pub use operation::{MalformedHistory, Operation, validate};
