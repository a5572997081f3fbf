//! Rule-by-rule tests of the proof-of-work chain.

use super::*;
use crate::hash::{Hash32, merkle_root};
use crate::ledger::SigCache;
use crate::tx::{Transfer, Tx, key_from_seed};
use crate::u256::U256;
use ed25519_dalek::SigningKey;
use std::sync::Arc;

struct Fixture {
    chain: PowChain,
    alice: SigningKey,
}

fn fixture(params: PowParams) -> Fixture {
    let alice = key_from_seed(42, 0);
    let genesis = genesis_block(&params);
    let balances = [(alice.verifying_key().to_bytes(), 100)];
    Fixture { chain: PowChain::new(params, genesis, &balances, SigCache::default()), alice }
}

/// A valid block on `parent` at `time_secs` with `txs` after the coinbase.
/// When `parent` is unknown to `chain` the block is built as if at height
/// 2 with the genesis target.
fn block_on(chain: &PowChain, parent: Hash32, time_secs: u32, txs: Vec<Tx>) -> Block {
    let known = chain.entry(&parent).map(|e| e.height + 1);
    let height = known.unwrap_or(2);
    let bits = if known.is_some() { chain.next_bits(&parent) } else { chain.params().genesis_bits };
    let mut all = vec![Tx::Coinbase { to: [9; 32], amount: chain.params().block_reward, height }];
    all.extend(txs);
    let header = Header {
        version: 1,
        prev_hash: parent,
        merkle_root: merkle_root(&all.iter().map(Tx::txid).collect::<Vec<_>>()),
        time_secs,
        bits,
        nonce: 0,
    };
    let (mined, _) = mine(header, u64::MAX);
    Block { header: mined.unwrap(), txs: Arc::new(all) }
}

/// Extends `parent` with `n` empty blocks `spacing` seconds apart from
/// `start_time`; returns their hashes.
fn extend(
    chain: &mut PowChain,
    parent: Hash32,
    n: usize,
    start_time: u32,
    spacing: u32,
) -> Vec<Hash32> {
    let mut out = Vec::new();
    let mut p = parent;
    for i in 0..n {
        let b = block_on(chain, p, start_time + i as u32 * spacing, vec![]);
        p = b.hash();
        chain.submit(b, 1 << 30).unwrap();
        out.push(p);
    }
    out
}

fn pay(key: &SigningKey, to: u8, amount: u64, nonce: u64) -> Tx {
    Tx::Transfer(Transfer::new(key, [to; 32], amount, nonce))
}

#[test]
fn valid_blocks_extend_the_tip_and_pay_transfers() {
    let mut f = fixture(PowParams::sim());
    let g = f.chain.tip();
    let t = pay(&f.alice, 1, 30, 0);
    f.chain.submit_tx(t.clone()).unwrap();
    let b = f.chain.template([9; 32], 10);
    assert_eq!(b.txs.len(), 2, "the template takes the pooled transfer");
    let b = block_on(&f.chain, g, 10, vec![t]);
    let r = f.chain.submit(b.clone(), 10).unwrap();
    assert_eq!(r, Accepted::NewTip { reorg_depth: 0, returned_txs: 0 });
    assert_eq!(f.chain.tip(), b.hash());
    assert_eq!(f.chain.ledger().account(&[1; 32]).balance, 30);
    assert_eq!(f.chain.ledger().account(&[9; 32]).balance, 50, "the coinbase paid");
    assert!(f.chain.pool().is_empty(), "confirmed transfers leave the pool");
    assert_eq!(f.chain.submit(b, 10), Err(BlockError::Known));
}

#[test]
fn a_hash_above_the_target_is_rejected() {
    let mut f = fixture(PowParams::sim());
    let g = f.chain.tip();
    let mut b = block_on(&f.chain, g, 10, vec![]);
    while b.header.meets_target() {
        b.header.nonce += 1;
    }
    assert_eq!(f.chain.submit(b, 10), Err(BlockError::BadProofOfWork));
}

#[test]
fn wrong_bits_are_rejected_even_with_valid_work() {
    let mut f = fixture(PowParams::sim());
    let g = f.chain.tip();
    let mut b = block_on(&f.chain, g, 10, vec![]);
    // Harder than required: the work is real but the rule is the rule.
    b.header.bits = compact::target_to_compact(&U256::pow2(250));
    let (m, _) = mine(b.header, u64::MAX);
    b.header = m.unwrap();
    assert!(matches!(f.chain.submit(b, 10), Err(BlockError::BadBits { .. })));
}

#[test]
fn merkle_mismatch_duplicate_txs_and_bad_coinbase_are_rejected() {
    let mut f = fixture(PowParams::sim());
    let g = f.chain.tip();
    let t = pay(&f.alice, 1, 30, 0);
    let good = block_on(&f.chain, g, 10, vec![t.clone()]);
    // Swap the transactions behind the header's back.
    let mut swapped = good.clone();
    swapped.txs = Arc::new(vec![good.txs[0].clone(), pay(&f.alice, 2, 30, 0)]);
    assert_eq!(f.chain.submit(swapped, 10), Err(BlockError::BadMerkleRoot));
    // [cb, t, t]: the CVE-2012-2459 shape.
    let dup = block_on(&f.chain, g, 10, vec![t.clone(), t]);
    assert_eq!(f.chain.submit(dup, 10), Err(BlockError::DuplicateTx));
    let mut rich = block_on(&f.chain, g, 10, vec![]);
    rich.txs = Arc::new(vec![Tx::Coinbase { to: [9; 32], amount: 5000, height: 1 }]);
    rich.header.merkle_root = rich.compute_merkle_root();
    rich.header = mine(rich.header, u64::MAX).0.unwrap();
    assert_eq!(f.chain.submit(rich, 10), Err(BlockError::BadCoinbase));
}

#[test]
fn an_overspending_block_is_invalid_and_so_are_its_children() {
    let mut f = fixture(PowParams::sim());
    let g = f.chain.tip();
    let b = block_on(&f.chain, g, 10, vec![pay(&f.alice, 1, 500, 0)]);
    let child = block_on(&f.chain, b.hash(), 20, vec![]);
    assert!(matches!(f.chain.submit(b, 20), Err(BlockError::BadTx { index: 1, .. })));
    assert_eq!(f.chain.tip(), g);
    assert_eq!(f.chain.submit(child, 20), Err(BlockError::InvalidParent));
}

#[test]
fn timestamps_must_beat_the_median_of_eleven_and_not_run_ahead() {
    let mut f = fixture(PowParams::sim());
    let g = f.chain.tip();
    let hashes = extend(&mut f.chain, g, 11, 100, 10); // times 100..200
    let tip = *hashes.last().unwrap();
    // The median of the last 11 (100..=200 step 10) is 150.
    assert_eq!(f.chain.median_time_past(&tip), 150);
    let at_median = block_on(&f.chain, tip, 150, vec![]);
    assert_eq!(
        f.chain.submit(at_median, 1000),
        Err(BlockError::TimeTooOld { time: 150, median: 150 })
    );
    let above = block_on(&f.chain, tip, 151, vec![]);
    assert!(f.chain.submit(above, 1000).is_ok(), "earlier than the tip is fine if > median");
    let tip = f.chain.tip();
    let future = block_on(&f.chain, tip, 1000 + 2 * 3600 + 1, vec![]);
    assert!(matches!(f.chain.submit(future.clone(), 1000), Err(BlockError::TimeTooNew { .. })));
    assert!(f.chain.submit(future, 1001).is_ok(), "not invalid forever: acceptable later");
}

#[test]
fn difficulty_retargets_every_interval_and_converges() {
    let p = PowParams::sim(); // 10 blocks, 10 s spacing
    let mut f = fixture(p.clone());
    let g = f.chain.tip();
    let start = compact::target_from_compact(p.genesis_bits).unwrap();
    // Blocks twice too fast (5 s): the target halves at height 10.
    let hs = extend(&mut f.chain, g, 10, 5, 5);
    assert_eq!(f.chain.entry(&hs[8]).unwrap().block.header.bits, p.genesis_bits);
    let t10 = compact::target_from_compact(f.chain.entry(&hs[9]).unwrap().block.header.bits);
    // Window heights 0..9: genesis at time 0, block 9 at 45 s: 45 of 100 s.
    let expected = start.div_rem_u64(100).0.checked_mul_u64(45).unwrap();
    let got = t10.unwrap();
    assert!(got.sub(&expected.min(got)).bits() <= 232, "scaled by 45/100");
    // On-schedule blocks keep the target.
    let tip = f.chain.tip();
    let hs2 = extend(&mut f.chain, tip, 10, 60, 10);
    let b19 = f.chain.entry(&hs2[8]).unwrap().block.header.bits;
    let b20 = f.chain.entry(&hs2[9]).unwrap().block.header.bits;
    assert_eq!(b19, f.chain.entry(&hs[9]).unwrap().block.header.bits);
    let drift = compact::target_from_compact(b20).unwrap().to_f64()
        / compact::target_from_compact(b19).unwrap().to_f64();
    assert!((drift - 1.0).abs() < 0.15, "window near schedule: drift {drift}");
}

/// Fork at genesis+1: branch A slows down (easier target after the
/// retarget) and grows long; branch B speeds up (harder target) and stays
/// short. B has more work, so B wins although A has more blocks.
#[test]
fn the_heavier_shorter_chain_beats_the_longer_lighter_one() {
    let mut p = PowParams::sim();
    p.retarget_interval_blocks = 4; // retarget at heights 4, 8, ...
    let mut f = fixture(p);
    let g = f.chain.tip();
    let common = extend(&mut f.chain, g, 1, 10, 10)[0];
    let t = pay(&f.alice, 1, 30, 0);
    // Branch A: slow (×4 easier at height 4), carrying a transfer.
    let a2 = block_on(&f.chain, common, 1000, vec![t.clone()]);
    let a2h = a2.hash();
    f.chain.submit(a2, 1 << 30).unwrap();
    let a = extend(&mut f.chain, a2h, 5, 2000, 1000); // heights 3..7
    let a_tip = *a.last().unwrap();
    assert_eq!(f.chain.tip(), a_tip);
    assert_eq!(f.chain.height(), 7);
    assert_eq!(f.chain.ledger().account(&[1; 32]).balance, 30);
    // Branch B: fast (×4 harder at height 4), a conflicting spend.
    let t2 = pay(&f.alice, 2, 30, 0);
    let b2 = block_on(&f.chain, common, 11, vec![t2]);
    let b2h = b2.hash();
    assert_eq!(f.chain.submit(b2, 1 << 30), Ok(Accepted::SideChain));
    let b3 = extend(&mut f.chain, b2h, 1, 12, 1)[0];
    let hard = block_on(&f.chain, b3, 13, vec![]);
    let easy_work = f.chain.entry(&a[1]).unwrap().chain_work;
    assert!(
        compact::target_from_compact(hard.header.bits).unwrap()
            < compact::target_from_compact(f.chain.entry(&a[1]).unwrap().block.header.bits)
                .unwrap()
    );
    let r = f.chain.submit(hard.clone(), 1 << 30).unwrap();
    // Disconnected: A's heights 2..=7.
    assert_eq!(r, Accepted::NewTip { reorg_depth: 6, returned_txs: 0 });
    assert_eq!(f.chain.tip(), hard.hash());
    assert_eq!(f.chain.height(), 4, "shorter");
    assert!(f.chain.tip_work() > easy_work);
    // The ledger follows B: carol paid, bob's payment undone and not
    // returned to the pool (its nonce is spent on B: a double spend).
    assert_eq!(f.chain.ledger().account(&[2; 32]).balance, 30);
    assert_eq!(f.chain.ledger().account(&[1; 32]).balance, 0);
    assert!(!f.chain.pool().contains(&t.txid()));
    assert_eq!(f.chain.reorg_depths, vec![6]);
}

#[test]
fn a_reorg_returns_abandoned_transfers_to_the_pool() {
    let mut f = fixture(PowParams::sim());
    let g = f.chain.tip();
    let t = pay(&f.alice, 1, 30, 0);
    let a1 = block_on(&f.chain, g, 10, vec![t.clone()]);
    f.chain.submit(a1, 100).unwrap();
    let b = extend(&mut f.chain, g, 1, 11, 1);
    assert_ne!(f.chain.tip(), b[0], "equal work: the first seen stays");
    extend(&mut f.chain, b[0], 1, 12, 1);
    assert_eq!(f.chain.height(), 2);
    assert!(f.chain.pool().contains(&t.txid()), "back in the pool for the next block");
    assert_eq!(f.chain.ledger().account(&[1; 32]).balance, 0);
    let next = f.chain.template([9; 32], 100);
    assert!(next.txs.contains(&t));
}

#[test]
fn orphans_wait_for_their_parent_in_a_bounded_pool() {
    let mut f = fixture(PowParams::sim());
    let g = f.chain.tip();
    let b1 = block_on(&f.chain, g, 10, vec![]);
    // Build b2 on b1 in a scratch chain that has b1.
    let mut scratch = fixture(PowParams::sim());
    scratch.chain.submit(b1.clone(), 100).unwrap();
    let b2 = block_on(&scratch.chain, b1.hash(), 20, vec![]);
    assert_eq!(f.chain.submit(b2.clone(), 100), Ok(Accepted::Orphan { missing: b1.hash() }));
    assert_eq!(f.chain.orphan_count(), 1);
    f.chain.submit(b1, 100).unwrap();
    assert_eq!(f.chain.tip(), b2.hash(), "the orphan connected when its parent came");
    assert_eq!(f.chain.orphan_count(), 0);
    // Flood with orphans: the pool keeps at most max_orphans.
    let max = f.chain.params().max_orphans;
    for i in 0..max + 5 {
        let mut o = block_on(&scratch.chain, b2.hash(), 30 + i as u32, vec![]);
        o.header.prev_hash = Hash32([i as u8 + 1; 32]);
        o.header = mine(o.header, u64::MAX).0.unwrap();
        f.chain.submit(o, 100).unwrap();
    }
    assert_eq!(f.chain.orphan_count(), max);
}

#[test]
fn locator_sync_sends_the_missing_suffix() {
    let mut a = fixture(PowParams::sim());
    let mut b = fixture(PowParams::sim());
    let g = a.chain.tip();
    let hs = extend(&mut a.chain, g, 30, 10, 10);
    for h in &hs[..5] {
        b.chain.submit(a.chain.entry(h).unwrap().block.clone(), 1 << 30).unwrap();
    }
    let blocks = a.chain.blocks_after(&b.chain.locator(), 100);
    assert_eq!(blocks.len(), 25);
    for blk in blocks {
        b.chain.submit(blk, 1 << 30).unwrap();
    }
    assert_eq!(b.chain.tip(), a.chain.tip());
}
