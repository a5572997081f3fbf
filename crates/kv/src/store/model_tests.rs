//! Model test: random puts, deletes, txns and compactions against a
//! reference model that keeps the whole key space at every revision, checking
//! ranges at random revisions, headers, the event history and snapshots.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const KEYS: [&str; 6] = ["a", "b", "ba", "c", "d", "e"];

fn key(i: usize) -> Bytes {
    Bytes::from_static(KEYS[i % KEYS.len()].as_bytes())
}

/// A write inside a txn (keys distinct per branch by construction).
#[derive(Clone, Debug)]
enum TxnWrite {
    Put(usize, u8),
    Delete(usize),
}

#[derive(Clone, Debug)]
enum Op {
    Put(usize, u8),
    /// Key, and the end key (`None`: single key; `Some(None)`: from-key).
    Delete(usize, Option<Option<usize>>),
    Txn {
        key: usize,
        target_value: bool,
        result: u8,
        operand: u8,
        success: Vec<TxnWrite>,
        failure: Vec<TxnWrite>,
    },
    /// A fraction of the current revision (per mille).
    Compact(u16),
    /// Read: key, end as in `Delete`, revision fraction per mille (0: latest).
    Check(usize, Option<Option<usize>>, u16),
}

fn txn_writes() -> impl Strategy<Value = Vec<TxnWrite>> {
    prop::collection::btree_map(0..KEYS.len(), prop::option::of(any::<u8>()), 0..4).prop_map(|m| {
        m.into_iter().map(|(k, v)| v.map_or(TxnWrite::Delete(k), |v| TxnWrite::Put(k, v))).collect()
    })
}

fn end() -> impl Strategy<Value = Option<Option<usize>>> {
    prop::option::of(prop::option::of(0..KEYS.len()))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS.len(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0..KEYS.len(), end()).prop_map(|(k, e)| Op::Delete(k, e)),
        2 => (0..KEYS.len(), any::<bool>(), 0..4u8, 0..4u8, txn_writes(), txn_writes()).prop_map(
            |(key, target_value, result, operand, success, failure)| Op::Txn { key, target_value, result, operand, success, failure }
        ),
        1 => (0..1000u16).prop_map(Op::Compact),
        4 => (0..KEYS.len(), end(), 0..1000u16).prop_map(|(k, e, r)| Op::Check(k, e, r)),
    ]
}

fn range_end(e: Option<Option<usize>>) -> Bytes {
    match e {
        None => Bytes::new(),
        Some(None) => Bytes::from_static(b"\0"),
        Some(Some(i)) => key(i),
    }
}

/// The key space at every revision: `states[r]` is the store at revision r.
struct Model {
    states: Vec<BTreeMap<Bytes, KeyValue>>,
    compacted: i64,
}

impl Model {
    fn new() -> Model {
        Model { states: vec![BTreeMap::new(), BTreeMap::new()], compacted: -1 }
    }

    fn current(&self) -> i64 {
        self.states.len() as i64 - 1
    }

    fn latest(&self) -> &BTreeMap<Bytes, KeyValue> {
        self.states.last().unwrap()
    }

    fn put(state: &mut BTreeMap<Bytes, KeyValue>, k: Bytes, v: u8, rev: i64) {
        let kv = match state.get(&k) {
            Some(old) => KeyValue {
                mod_revision: rev,
                version: old.version + 1,
                value: Bytes::from(vec![v]),
                ..old.clone()
            },
            None => KeyValue {
                key: k.clone(),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                value: Bytes::from(vec![v]),
                lease: 0,
            },
        };
        state.insert(k, kv);
    }

    fn delete(state: &mut BTreeMap<Bytes, KeyValue>, range: KeyRange<'_>) -> bool {
        let doomed: Vec<Bytes> = state.keys().filter(|k| range.contains(k)).cloned().collect();
        for k in &doomed {
            state.remove(k);
        }
        !doomed.is_empty()
    }

    /// Commits `next` as a new revision if `changed`.
    fn commit(&mut self, next: BTreeMap<Bytes, KeyValue>, changed: bool) {
        if changed {
            self.states.push(next);
        }
    }

    fn range(&self, k: &[u8], end: &[u8], rev: i64) -> Result<Vec<KeyValue>, KvError> {
        if rev > self.current() {
            return Err(KvError::FutureRevision);
        }
        let rev = if rev <= 0 { self.current() } else { rev };
        if rev < self.compacted {
            return Err(KvError::Compacted);
        }
        let range = KeyRange::new(k, end);
        Ok(self.states[rev as usize]
            .values()
            .filter(|kv| range.contains(&kv.key))
            .cloned()
            .collect())
    }
}

fn compare_for(key_i: usize, target_value: bool, result: u8, operand: u8) -> Compare {
    let result = [
        CompareResult::Equal,
        CompareResult::Greater,
        CompareResult::Less,
        CompareResult::NotEqual,
    ][result as usize];
    if target_value {
        Compare {
            result,
            target: CompareTarget::Value,
            key: key(key_i),
            target_union: Some(CompareTargetUnion::Value(Bytes::from(vec![
                operand.wrapping_mul(64),
            ]))),
            range_end: Bytes::new(),
        }
    } else {
        Compare {
            result,
            target: CompareTarget::Version,
            key: key(key_i),
            target_union: Some(CompareTargetUnion::Version(i64::from(operand))),
            range_end: Bytes::new(),
        }
    }
}

fn model_compare(state: &BTreeMap<Bytes, KeyValue>, c: &Compare) -> bool {
    let Some(kv) = state.get(&c.key) else {
        if c.target == CompareTarget::Value {
            return false;
        }
        return compare_kv(c, &KeyValue::default());
    };
    let ord = match &c.target_union {
        Some(CompareTargetUnion::Value(v)) => kv.value.cmp(v),
        Some(CompareTargetUnion::Version(v)) => kv.version.cmp(v),
        _ => unreachable!(),
    };
    match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
        CompareResult::NotEqual => ord.is_ne(),
    }
}

fn to_ops(writes: &[TxnWrite]) -> Vec<RequestOp> {
    writes
        .iter()
        .map(|w| match *w {
            TxnWrite::Put(k, v) => RequestOp::Put(PutRequest {
                key: key(k),
                value: Bytes::from(vec![v]),
                ..Default::default()
            }),
            TxnWrite::Delete(k) => {
                RequestOp::DeleteRange(DeleteRangeRequest { key: key(k), ..Default::default() })
            }
        })
        .collect()
}

/// Applies `c` to `store` directly and to `replica` as log bytes; the two
/// answers must agree.
fn both(store: &mut KvStore, replica: &mut KvStore, index: u64, c: KvCommand) -> KvApplied {
    let applied = store.apply_command(index, &c);
    let bytes = StateMachine::apply(replica, index, &c.encode());
    assert_eq!(crate::decode_result(&bytes), Ok(applied.response.clone()));
    applied
}

fn run(ops: Vec<Op>, event_start: u16) -> Result<(), TestCaseError> {
    let mut store = KvStore::default();
    let mut replica = KvStore::default();
    let mut model = Model::new();
    for (i, op) in ops.into_iter().enumerate() {
        let index = i as u64 + 1;
        match op {
            Op::Put(k, v) => {
                let p =
                    PutRequest { key: key(k), value: Bytes::from(vec![v]), ..Default::default() };
                let r = both(&mut store, &mut replica, index, KvCommand::Put(p)).response?;
                let mut next = model.latest().clone();
                Model::put(&mut next, key(k), v, model.current() + 1);
                model.commit(next, true);
                let KvResponse::Put(r) = r else { panic!() };
                prop_assert_eq!(r.header.revision, model.current());
            }
            Op::Delete(k, e) => {
                let end = range_end(e);
                let d = DeleteRangeRequest { key: key(k), range_end: end.clone(), prev_kv: false };
                let r = both(&mut store, &mut replica, index, KvCommand::DeleteRange(d)).response?;
                let mut next = model.latest().clone();
                let changed = Model::delete(&mut next, KeyRange::new(&key(k), &end));
                model.commit(next, changed);
                let KvResponse::DeleteRange(r) = r else { panic!() };
                prop_assert_eq!(r.header.revision, model.current());
            }
            Op::Txn { key: ck, target_value, result, operand, success, failure } => {
                let c = compare_for(ck, target_value, result, operand);
                let t = TxnRequest {
                    compare: vec![c.clone()],
                    success: to_ops(&success),
                    failure: to_ops(&failure),
                };
                let r = both(&mut store, &mut replica, index, KvCommand::Txn(t)).response?;
                let holds = model_compare(model.latest(), &c);
                let mut next = model.latest().clone();
                let rev = model.current() + 1;
                let mut changed = false;
                for w in if holds { &success } else { &failure } {
                    match *w {
                        TxnWrite::Put(k, v) => {
                            Model::put(&mut next, key(k), v, rev);
                            changed = true;
                        }
                        TxnWrite::Delete(k) => {
                            changed |= Model::delete(&mut next, KeyRange::Single(&key(k)))
                        }
                    }
                }
                model.commit(next, changed);
                let KvResponse::Txn(r) = r else { panic!() };
                prop_assert_eq!(r.succeeded, holds);
                prop_assert_eq!(r.header.revision, model.current());
            }
            Op::Compact(frac) => {
                let rev = 1 + model.current() * i64::from(frac) / 1000;
                let c = CompactionRequest { revision: rev, physical: false };
                let r = both(&mut store, &mut replica, index, KvCommand::Compact(c)).response;
                if rev <= model.compacted {
                    prop_assert_eq!(r, Err(KvError::Compacted));
                } else {
                    prop_assert!(r.is_ok());
                    model.compacted = rev;
                }
            }
            Op::Check(k, e, frac) => {
                // Revisions from 0 (latest) to a little past the current one.
                let rev = (model.current() + 2) * i64::from(frac) / 1000;
                let end = range_end(e);
                let r = RangeRequest {
                    key: key(k),
                    range_end: end.clone(),
                    revision: rev,
                    ..Default::default()
                };
                let got = store.range(&r).map(|r| (r.kvs, r.count, r.header.revision));
                let want = model
                    .range(&key(k), &end, rev)
                    .map(|kvs| (kvs.clone(), kvs.len() as i64, model.current()));
                prop_assert_eq!(got, want, "range {:?}..{:?} at {}", key(k), end, rev);
            }
        }
        prop_assert_eq!(store.current_revision(), model.current());
        prop_assert_eq!(store.check(), Ok(()));
    }
    // Replaying the event history from a readable revision onto the model's
    // state just before it gives the current state.
    let first = model.compacted.max(1);
    let start = first + (model.current() + 1 - first) * i64::from(event_start) / 1000;
    let mut state = model.states[(start - 1).max(1) as usize].clone();
    let mut next_revision = start;
    loop {
        let batch = store.events_since(b"\0", b"\0", next_revision, 3)?;
        for e in &batch.events {
            prop_assert!(e.kv.mod_revision >= next_revision);
            match e.r#type {
                EventType::Put => {
                    prop_assert_eq!(
                        e.prev_kv.as_ref().filter(|_| e.kv.mod_revision > first),
                        state.get(&e.kv.key).filter(|_| e.kv.mod_revision > first)
                    );
                    state.insert(e.kv.key.clone(), e.kv.clone());
                }
                EventType::Delete => {
                    prop_assert!(state.remove(&e.kv.key).is_some(), "deleting a live key");
                }
            }
        }
        prop_assert!(batch.next_revision > next_revision || batch.events.is_empty());
        if batch.next_revision == next_revision || batch.next_revision > model.current() {
            break;
        }
        next_revision = batch.next_revision;
    }
    prop_assert_eq!(&state, model.latest());
    // And the store survives a snapshot.
    let restored = KvStore::restore(KvConfig::default(), &store.snapshot())?;
    prop_assert_eq!(&restored, &store);
    prop_assert_eq!(replica.snapshot(), store.snapshot(), "replicas fed the log bytes agree");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_store_matches_a_full_history_model(ops in prop::collection::vec(op(), 1..80), event_start in 0..1000u16) {
        run(ops, event_start)?;
    }
}
