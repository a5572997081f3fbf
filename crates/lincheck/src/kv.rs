//! The model of [`synod_core::kv`]'s register map, partitioned per key.
//!
//! Operations on different keys never affect each other, so each key's
//! operations are checked on their own (P-compositionality) and the model's
//! state is just one key's value: `None` while absent. The semantics are
//! exactly those of [`KvStore::apply_op`](synod_core::kv::KvStore::apply_op).

use crate::model::Model;
use crate::operation::Operation;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::HashMap;
use synod_core::kv::{KvOp, KvResult};

/// The register map as a [`Model`]: `get`, `put`, `append` (to an absent key
/// as to an empty one) and compare-and-set (`expected: None` meaning
/// "absent"), one partition per key.
///
/// An operation that never returned takes effect with whatever result the
/// store would give. [`KvResult::Invalid`] is never a legal answer: every
/// [`KvOp`] is well formed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvModel;

/// Applies `op` to a key whose value is `value`: the new value and the
/// result [`KvStore`](synod_core::kv::KvStore) would answer.
fn apply(value: &Option<Bytes>, op: &KvOp) -> (Option<Bytes>, KvResult) {
    match op {
        KvOp::Get { .. } => (value.clone(), KvResult::Value(value.clone())),
        KvOp::Put { value: new, .. } => (Some(new.clone()), KvResult::Done),
        KvOp::Append { value: tail, .. } => {
            let head = value.as_deref().unwrap_or_default();
            let mut joined = BytesMut::with_capacity(head.len() + tail.len());
            joined.put_slice(head);
            joined.put_slice(tail);
            (Some(joined.freeze()), KvResult::Done)
        }
        KvOp::Cas { expected, new, .. } => {
            if value == expected {
                (Some(new.clone()), KvResult::Swapped(true))
            } else {
                (value.clone(), KvResult::Swapped(false))
            }
        }
    }
}

/// Renders bytes as a quoted, escaped string.
fn show(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

/// Renders a value that may be absent.
fn show_value(value: &Option<Bytes>) -> String {
    match value {
        Some(bytes) => show(bytes),
        None => "absent".to_string(),
    }
}

impl Model for KvModel {
    type Input = KvOp;
    type Output = KvResult;
    /// The value of the partition's key, `None` while absent.
    type State = Option<Bytes>;

    fn init(&self) -> Option<Bytes> {
        None
    }

    fn step(
        &self,
        state: &Option<Bytes>,
        input: &KvOp,
        output: Option<&KvResult>,
    ) -> Option<Option<Bytes>> {
        let (next, result) = apply(state, input);
        match output {
            Some(seen) if *seen != result => None,
            _ => Some(next),
        }
    }

    /// One partition per key, in order of each key's first operation.
    /// `get`s that never returned are left out: they change nothing and
    /// constrain nothing, and keeping them only slows the search.
    fn partition(&self, history: &[Operation<KvOp, KvResult>]) -> Vec<Vec<usize>> {
        let mut by_key: HashMap<&Bytes, usize> = HashMap::new();
        let mut partitions: Vec<Vec<usize>> = Vec::new();
        for (index, op) in history.iter().enumerate() {
            if op.input.is_read_only() && !op.is_completed() {
                continue;
            }
            let slot = *by_key.entry(op.input.key()).or_insert_with(|| {
                partitions.push(Vec::new());
                partitions.len() - 1
            });
            partitions[slot].push(index);
        }
        partitions
    }

    /// `key "<key>"`.
    fn describe_partition(
        &self,
        history: &[Operation<KvOp, KvResult>],
        partition: &[usize],
        partition_index: usize,
    ) -> String {
        match partition.first() {
            Some(&index) => format!("key {}", show(history[index].input.key())),
            None => format!("partition {partition_index} (empty)"),
        }
    }

    /// E.g. `put "x" "1" -> done`, `get "x" -> "1"`, `cas "x" absent "2" ->
    /// swapped`.
    fn describe_operation(&self, input: &KvOp, output: Option<&KvResult>) -> String {
        let op = match input {
            KvOp::Get { key } => format!("get {}", show(key)),
            KvOp::Put { key, value } => format!("put {} {}", show(key), show(value)),
            KvOp::Append { key, value } => format!("append {} {}", show(key), show(value)),
            KvOp::Cas { key, expected, new } => {
                format!("cas {} {} {}", show(key), show_value(expected), show(new))
            }
        };
        let result = match output {
            None => "(no response)".to_string(),
            Some(KvResult::Value(value)) => show_value(value),
            Some(KvResult::Done) => "done".to_string(),
            Some(KvResult::Swapped(true)) => "swapped".to_string(),
            Some(KvResult::Swapped(false)) => "not swapped".to_string(),
            Some(KvResult::Invalid) => "invalid".to_string(),
        };
        format!("{op} -> {result}")
    }

    fn describe_state(&self, state: &Option<Bytes>) -> String {
        show_value(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Budget, CheckResult, check};
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use synod_core::kv::KvStore;

    type Op = Operation<KvOp, KvResult>;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn get(client: u64, key: &str, seen: Option<&str>, call: u64, ret: u64) -> Op {
        let key = b(key);
        Operation::completed(client, KvOp::Get { key }, call, KvResult::Value(seen.map(b)), ret)
    }

    fn put(client: u64, key: &str, value: &str, call: u64, ret: u64) -> Op {
        let (key, value) = (b(key), b(value));
        Operation::completed(client, KvOp::Put { key, value }, call, KvResult::Done, ret)
    }

    fn pending_put(client: u64, key: &str, value: &str, call: u64) -> Op {
        Operation::pending(client, KvOp::Put { key: b(key), value: b(value) }, call)
    }

    fn append(client: u64, key: &str, value: &str, call: u64, ret: u64) -> Op {
        let (key, value) = (b(key), b(value));
        Operation::completed(client, KvOp::Append { key, value }, call, KvResult::Done, ret)
    }

    fn cas(
        client: u64,
        expected: Option<&str>,
        new: &str,
        swapped: bool,
        call: u64,
        ret: u64,
    ) -> Op {
        let op = KvOp::Cas { key: b("x"), expected: expected.map(b), new: b(new) };
        Operation::completed(client, op, call, KvResult::Swapped(swapped), ret)
    }

    fn verdict(history: &[Op]) -> CheckResult {
        check(&KvModel, history, Budget::default())
    }

    fn assert_ok(history: &[Op]) {
        let result = verdict(history);
        assert!(result.is_ok(), "expected linearizable, got {result}");
    }

    fn assert_illegal(history: &[Op]) -> crate::Counterexample {
        match verdict(history) {
            CheckResult::Illegal(counterexample) => counterexample,
            other => panic!("expected illegal, got {other}"),
        }
    }

    #[test]
    fn stale_read_after_a_completed_write_is_illegal() {
        let history = [put(1, "x", "1", 0, 10), get(2, "x", None, 20, 30)];
        let counterexample = assert_illegal(&history);
        assert_eq!(counterexample.partition, "key \"x\"");
        let shown = counterexample.to_string();
        assert!(shown.contains("#1 client 2 [20us, 30us] get \"x\" -> absent"), "{shown}");
        assert!(shown.contains("state after the prefix: \"1\""), "{shown}");
        // Overwritten value read after the overwrite completed: also stale.
        let history =
            [put(1, "x", "1", 0, 10), put(1, "x", "2", 20, 30), get(2, "x", Some("1"), 40, 50)];
        assert_illegal(&history);
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        for seen in [None, Some("1")] {
            assert_ok(&[put(1, "x", "1", 0, 10), get(2, "x", seen, 5, 15)]);
        }
        // Two overlapping reads may even disagree, if ordered around the write.
        assert_ok(&[
            put(1, "x", "1", 0, 100),
            get(2, "x", Some("1"), 10, 20),
            get(3, "x", None, 5, 50),
        ]);
        // But not in the opposite real-time order: new, then old.
        assert_illegal(&[
            put(1, "x", "1", 0, 100),
            get(2, "x", Some("1"), 10, 20),
            get(3, "x", None, 30, 50),
        ]);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_illegal() {
        let counterexample = assert_illegal(&[
            put(1, "x", "1", 0, 10),
            put(2, "x", "2", 5, 15),
            get(3, "x", Some("3"), 6, 20),
        ]);
        assert!(counterexample.stuck.iter().any(|op| op.index == 2), "{counterexample}");
    }

    #[test]
    fn a_pending_write_may_or_may_not_take_effect() {
        let write = pending_put(1, "x", "1", 0);
        assert_ok(&[write.clone(), get(2, "x", Some("1"), 10, 20)]);
        assert_ok(&[write.clone(), get(2, "x", None, 10, 20)]);
        // Not before it was called, though.
        assert_illegal(&[get(2, "x", Some("1"), 0, 5), pending_put(1, "x", "1", 10)]);
        // Seen late, after an earlier read missed it: takes effect late.
        assert_ok(&[write, get(2, "x", None, 10, 20), get(2, "x", Some("1"), 30, 40)]);
    }

    #[test]
    fn a_pending_write_seen_then_unseen_is_illegal() {
        let counterexample = assert_illegal(&[
            pending_put(1, "x", "1", 0),
            get(2, "x", Some("1"), 10, 20),
            get(3, "x", None, 30, 40),
        ]);
        assert_eq!(counterexample.prefix.len(), 2, "{counterexample}");
        assert_eq!(counterexample.state_after_prefix, "\"1\"");
        assert_eq!(counterexample.stuck.len(), 1);
        assert_eq!(counterexample.stuck[0].index, 2);
        assert!(counterexample.to_string().contains("never returned"), "{counterexample}");
    }

    #[test]
    fn cas_swaps_only_on_the_expected_value() {
        // Sequential: absent -> 1 swaps; a second absent -> 2 must fail.
        assert_ok(&[cas(1, None, "1", true, 0, 10), cas(2, None, "2", false, 20, 30)]);
        assert_illegal(&[cas(1, None, "1", true, 0, 10), cas(2, None, "2", true, 20, 30)]);
        // Concurrent: exactly one of two competing swaps wins.
        assert_illegal(&[cas(1, None, "1", true, 0, 10), cas(2, None, "2", true, 5, 15)]);
        assert_ok(&[
            cas(1, None, "1", false, 0, 10),
            cas(2, None, "2", true, 5, 15),
            get(3, "x", Some("2"), 20, 30),
        ]);
        // A failed cas changes nothing; a matching one does.
        assert_ok(&[
            put(1, "x", "a", 0, 10),
            cas(1, Some("b"), "c", false, 20, 30),
            cas(1, Some("a"), "d", true, 40, 50),
            get(1, "x", Some("d"), 60, 70),
        ]);
        assert_illegal(&[
            put(1, "x", "a", 0, 10),
            cas(1, Some("b"), "c", false, 20, 30),
            get(1, "x", Some("c"), 40, 50),
        ]);
        // A cas on "absent" fails against an empty (present) value.
        assert_illegal(&[put(1, "x", "", 0, 10), cas(1, None, "n", true, 20, 30)]);
    }

    #[test]
    fn appends_apply_in_a_single_order() {
        let both = [append(1, "x", "a", 0, 10), append(2, "x", "b", 5, 15)];
        for seen in ["ab", "ba"] {
            let mut history = both.to_vec();
            history.push(get(3, "x", Some(seen), 20, 30));
            assert_ok(&history);
        }
        let mut lost = both.to_vec();
        lost.push(get(3, "x", Some("a"), 20, 30));
        assert_illegal(&lost);
        // Sequential appends in real-time order.
        assert_illegal(&[
            append(1, "x", "a", 0, 10),
            append(1, "x", "b", 20, 30),
            get(2, "x", Some("ba"), 40, 50),
        ]);
        // Two readers must agree on the order.
        let mut split = both.to_vec();
        split.push(get(3, "x", Some("ab"), 20, 30));
        split.push(get(4, "x", Some("ba"), 20, 30));
        assert_illegal(&split);
    }

    #[test]
    fn invalid_is_never_a_legal_answer() {
        let op = KvOp::Get { key: b("x") };
        assert_illegal(&[Operation::completed(1, op, 0, KvResult::Invalid, 10)]);
        assert_eq!(
            KvModel.step(&None, &KvOp::Put { key: b("x"), value: b("v") }, None),
            Some(Some(b("v")))
        );
    }

    #[test]
    fn the_history_is_partitioned_per_key_in_order_of_first_use() {
        let history = [
            put(1, "y", "1", 0, 1),
            put(1, "x", "1", 2, 3),
            get(2, "y", None, 4, 5),
            append(3, "z", "1", 6, 7),
            get(2, "x", None, 8, 9),
            Operation::pending(4, KvOp::Get { key: b("x") }, 10),
            pending_put(5, "x", "2", 11),
        ];
        assert_eq!(KvModel.partition(&history), vec![vec![0, 2], vec![1, 4, 6], vec![3]]);
        assert_eq!(KvModel.describe_partition(&history, &[1, 4], 1), "key \"x\"");
        assert!(KvModel.partition(&[]).is_empty());
    }

    #[test]
    fn keys_are_checked_independently_and_the_illegal_key_is_named() {
        // "y" is fine; "x" has a stale read. Interleaved in time.
        let history = [
            put(1, "y", "1", 0, 10),
            put(2, "x", "1", 0, 10),
            get(3, "y", Some("1"), 20, 30),
            get(4, "x", None, 20, 30),
        ];
        let counterexample = assert_illegal(&history);
        assert_eq!(counterexample.partition, "key \"x\"");
        assert_eq!(counterexample.partition_index, 1);
        assert_eq!(counterexample.stuck[0].index, 3);
        // The same reads across keys would be fine: the key "x" was never written.
        let history = [put(1, "y", "1", 0, 10), get(4, "x", None, 20, 30)];
        assert_ok(&history);
    }

    #[test]
    fn a_budget_of_one_step_is_unknown_on_a_nontrivial_history() {
        let history =
            [put(1, "x", "1", 0, 10), put(2, "x", "2", 5, 15), get(3, "x", Some("2"), 20, 30)];
        let result = check(&KvModel, &history, Budget::steps(1));
        assert!(result.is_unknown(), "{result}");
        assert!(result.to_string().contains("key \"x\""), "{result}");
        assert_ok(&history);
    }

    #[test]
    fn an_illegal_key_is_reported_even_after_another_key_ran_out_of_budget() {
        // Key "a" needs a memo of 200 configurations, more than the budget
        // allows; key "b", checked next, needs one and is illegal.
        let mut history: Vec<Op> = (0..200).map(|i| put(1, "a", "v", 2 * i, 2 * i + 1)).collect();
        history.push(put(9, "b", "1", 0, 1));
        history.push(get(9, "b", Some("2"), 2, 3));
        let budget = Budget { max_memo_bytes: 2_000, ..Budget::default() };
        let result = check(&KvModel, &history, budget);
        let CheckResult::Illegal(counterexample) = result else {
            panic!("expected illegal: {result}")
        };
        assert_eq!(counterexample.partition, "key \"b\"");
        // Without "b", the verdict is Unknown, naming the memo limit.
        history.truncate(200);
        let CheckResult::Unknown(undecided) = check(&KvModel, &history, budget) else {
            panic!("expected unknown")
        };
        assert_eq!(undecided.limit, crate::BudgetLimit::MemoBytes);
        assert_eq!(undecided.partition, "key \"a\"");
        assert_ok(&history);
    }

    /// A history generated from a sequential execution: operation `i` takes
    /// effect at `10 * (i + 1)` microseconds; its interval is widened around
    /// that instant, so the execution order is always a valid linearization.
    struct Generated {
        history: Vec<Op>,
    }

    fn random_value<R: Rng>(rng: &mut R) -> Bytes {
        // Digits only: a value with any other byte was never written.
        Bytes::from(rng.random_range(0..100u32).to_string())
    }

    fn generate(
        seed: u64,
        len: usize,
        keys: usize,
        max_widen_us: u64,
        pending_prob: f64,
    ) -> Generated {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut store = KvStore::new();
        let mut history = Vec::with_capacity(len);
        // Each client's last return; a client issues one operation at a time.
        let mut client_free_at: Vec<u64> = Vec::new();
        for i in 0..len {
            let key = Bytes::from(format!("k{}", rng.random_range(0..keys)));
            let op = match rng.random_range(0..10) {
                0..=3 => KvOp::Get { key },
                4..=5 => KvOp::Put { key, value: random_value(&mut rng) },
                6..=7 => KvOp::Append { key, value: random_value(&mut rng) },
                _ => {
                    let expected = match rng.random_bool(0.3) {
                        true => None,
                        false => store.get(&key).cloned().filter(|_| rng.random_bool(0.7)),
                    };
                    KvOp::Cas { key, expected, new: random_value(&mut rng) }
                }
            };
            let effect_at = 10 * (i as u64 + 1);
            let pending = rng.random_bool(pending_prob);
            // A pending operation may never take effect at all.
            let result =
                if pending && rng.random_bool(0.5) { KvResult::Done } else { store.apply_op(&op) };
            let call = effect_at.saturating_sub(rng.random_range(0..=max_widen_us));
            let ret = effect_at + rng.random_range(0..=max_widen_us);
            let client = match client_free_at.iter().position(|&free| free < call) {
                Some(client) => client,
                None => {
                    client_free_at.push(0);
                    client_free_at.len() - 1
                }
            };
            // A pending operation's client is gone for good.
            client_free_at[client] = if pending { u64::MAX } else { ret };
            history.push(if pending {
                Operation::pending(client as u64, op, call)
            } else {
                Operation::completed(client as u64, op, call, result, ret)
            });
        }
        Generated { history }
    }

    /// Replaces the result of one completed `get` that read a value with one
    /// never written; returns its position.
    fn corrupt_a_read(history: &mut [Op], pick: usize) -> Option<usize> {
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| {
                matches!(history[i].input, KvOp::Get { .. }) && history[i].output.is_some()
            })
            .collect();
        let index = *reads.get(pick % reads.len().max(1))?;
        history[index].output = Some(KvResult::Value(Some(b("never-written"))));
        Some(index)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn widened_sequential_executions_are_linearizable(
            seed in any::<u64>(),
            len in 1usize..300,
            keys in 1usize..4,
            max_widen_us in 0u64..60,
        ) {
            let generated = generate(seed, len, keys, max_widen_us, 0.01);
            let result = check(&KvModel, &generated.history, Budget::default());
            prop_assert!(result.is_ok(), "{}", result);
        }

        #[test]
        fn a_read_of_a_value_never_written_makes_them_illegal(
            seed in any::<u64>(),
            len in 1usize..300,
            keys in 1usize..4,
            max_widen_us in 0u64..60,
            pick in any::<usize>(),
        ) {
            let mut generated = generate(seed, len, keys, max_widen_us, 0.01);
            let Some(corrupted) = corrupt_a_read(&mut generated.history, pick) else {
                return Ok(());
            };
            match check(&KvModel, &generated.history, Budget::default()) {
                CheckResult::Illegal(counterexample) => {
                    let key = show(generated.history[corrupted].input.key());
                    prop_assert_eq!(counterexample.partition, format!("key {key}"));
                }
                other => prop_assert!(false, "expected illegal, got {}", other),
            }
        }
    }

    #[test]
    fn thousands_of_operations_on_one_key_with_ten_clients_take_few_steps() {
        for seed in 0..3 {
            // 3000 operations on one key, each overlapping up to ~10 others.
            let generated = generate(seed, 3000, 1, 50, 0.0);
            let clients = generated.history.iter().map(|op| op.client).max().unwrap_or(0) + 1;
            assert!((5..=12).contains(&clients), "{clients} clients");
            // Linear in the history with a small constant (measured: ~45
            // steps per operation): no blow-up.
            let budget = Budget::steps(100 * generated.history.len() as u64);
            let result = check(&KvModel, &generated.history, budget);
            assert!(result.is_ok(), "seed {seed}: {result}");
        }
    }

    #[test]
    fn a_corrupted_long_history_is_illegal_within_budget() {
        // A few pending writes in 3000 operations on one key.
        let mut generated = generate(11, 3000, 1, 50, 0.001);
        let corrupted = corrupt_a_read(&mut generated.history, 1000);
        assert!(corrupted.is_some());
        let result = check(&KvModel, &generated.history, Budget::default());
        let CheckResult::Illegal(counterexample) = result else { panic!("{result}") };
        assert_eq!(counterexample.partition, "key \"k0\"");
    }
}
