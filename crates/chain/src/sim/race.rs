//! The private-chain double-spend race, played with real chains, and the
//! formulas it is checked against.
//!
//! The merchant's node (an honest [`PowChain`]) sees a payment confirmed
//! `z` deep; meanwhile an attacker with a share `q` of the hash power mines
//! a private branch from the same parent, carrying a conflicting spend.
//! Each next block is the attacker's with probability `q` (the embedded
//! jump chain of the two exponential mining processes). The attacker
//! publishes when its branch has strictly more work than the honest one
//! after the payment is `z` deep; success means the merchant's node
//! reorganised onto the branch with the conflicting spend.
//!
//! Nakamoto's §11 figure is the probability that the attacker ever
//! *catches up* (draws level); with first-seen tie-breaking an actual
//! reorganisation needs one block more, so both are measured:
//! [`RaceOutcome::caught_up`] against [`nakamoto`], and
//! [`RaceOutcome::overtook`] against [`exact_overtake`].

use crate::hash::Hash32;
use crate::ledger::SigCache;
use crate::pow::{Accepted, Block, PowChain, PowParams, genesis_block, mine};
use crate::tx::{Transfer, Tx, key_from_seed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How one race ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaceOutcome {
    /// The attacker's branch drew level with the honest one after the
    /// payment was `z` deep.
    pub caught_up: bool,
    /// The merchant's node switched to the attacker's branch.
    pub overtook: bool,
    /// Blocks the merchant's node disconnected.
    pub reorg_depth: u64,
}

/// Nakamoto's probability that an attacker with share `q` ever catches up
/// from `z` blocks behind (whitepaper §11, Poisson approximation).
pub fn nakamoto(q: f64, z: u64) -> f64 {
    let p = 1.0 - q;
    let lambda = z as f64 * q / p;
    let mut sum = 1.0;
    let mut poisson = (-lambda).exp();
    for k in 0..=z {
        if k > 0 {
            poisson *= lambda / k as f64;
        }
        sum -= poisson * (1.0 - (q / p).powi((z - k) as i32));
    }
    sum
}

/// The exact probability of this race's reorganisation: the attacker has
/// `k` blocks (negative binomial) when the honest branch has `z`, then must
/// get strictly ahead: `(q/p)^(z − k + 1)` from a deficit of `z − k`.
pub fn exact_overtake(q: f64, z: u64) -> f64 {
    let p = 1.0 - q;
    let mut sum = 0.0;
    // P(k) = C(k+z-1, k) p^z q^k, computed iteratively.
    let mut pk = p.powi(z as i32);
    for k in 0..2000u64 {
        if k > 0 {
            pk *= (k + z - 1) as f64 / k as f64 * q;
        }
        let deficit = z as i64 - k as i64 + 1;
        sum += pk * if deficit <= 0 { 1.0 } else { (q / p).powi(deficit as i32) };
    }
    sum
}

/// Plays one race with real blocks at `seed`; the attacker gives up
/// `give_up` blocks behind.
pub fn private_race(q: f64, z: u64, seed: u64, give_up: u64) -> RaceOutcome {
    assert!(z >= 1, "the payment needs at least its own block");
    let mut params = PowParams::sim();
    params.retarget_interval_blocks = 1 << 40; // one difficulty throughout
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let key = key_from_seed(seed, 7);
    let payer = key.verifying_key().to_bytes();
    let genesis = genesis_block(&params);
    let sigs = SigCache::default();
    let balances = [(payer, 100)];
    let mut honest = PowChain::new(params.clone(), genesis.clone(), &balances, sigs.clone());
    let mut attacker = PowChain::new(params, genesis, &balances, sigs);
    let payment = Tx::Transfer(Transfer::new(&key, [0xAA; 32], 90, 0));
    let theft = Tx::Transfer(Transfer::new(&key, [0xBB; 32], 90, 0));
    let _ = honest.submit_tx(payment);
    let _ = attacker.submit_tx(theft.clone());
    let mut out = RaceOutcome { caught_up: false, overtook: false, reorg_depth: 0 };
    for step in 1u64.. {
        let time = step * 600;
        if rng.random::<f64>() < q {
            mine_one(&mut attacker, [2; 32], time);
        } else {
            mine_one(&mut honest, [1; 32], time);
        }
        let (h, a) = (honest.height(), attacker.height());
        if h < z {
            continue;
        }
        if a >= h {
            out.caught_up = true;
        }
        if a > h {
            let blocks: Vec<Block> = attacker.best_chain()[1..]
                .iter()
                .filter_map(|x| attacker.entry(x).map(|e| e.block.clone()))
                .collect();
            for b in blocks {
                if let Ok(Accepted::NewTip { reorg_depth, .. }) = honest.submit(b, time) {
                    out.reorg_depth = out.reorg_depth.max(reorg_depth);
                }
            }
            out.overtook = contains(&honest, &theft.txid());
            return out;
        }
        if h - a > give_up {
            return out;
        }
    }
    out
}

fn mine_one(chain: &mut PowChain, miner: [u8; 32], time: u64) {
    let mut block = chain.template(miner, time);
    block.header = mine(block.header, u64::MAX).0.unwrap_or(block.header);
    let r = chain.submit(block, time);
    assert!(matches!(r, Ok(Accepted::NewTip { .. })), "own block extends the tip: {r:?}");
}

fn contains(chain: &PowChain, txid: &Hash32) -> bool {
    chain
        .best_chain()
        .iter()
        .any(|h| chain.entry(h).is_some_and(|e| e.block.txs.iter().any(|t| t.txid() == *txid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nakamoto_matches_the_whitepaper_table() {
        // Whitepaper §11, q = 0.1: z=5 → 0.0009137, z=6 → 0.0002428.
        assert!((nakamoto(0.1, 5) - 0.000_913_7).abs() < 1e-7);
        assert!((nakamoto(0.1, 6) - 0.000_242_8).abs() < 1e-7);
        assert!((nakamoto(0.3, 24) - 0.001).abs() < 0.0005);
    }

    /// q = 0.2: the measured catch-up rate over 3,000 seeds matches
    /// Nakamoto's formula, and the measured reorganisation rate matches the
    /// exact overtaking probability, each within 4 standard errors (plus,
    /// for Nakamoto's Poisson approximation, its own small gap).
    #[test]
    fn a_twenty_percent_attacker_succeeds_at_the_predicted_rate() {
        let q = 0.2;
        let trials = 3000;
        for z in [2u64, 3] {
            let (mut caught, mut overtook) = (0u32, 0u32);
            for seed in 0..trials {
                let o = private_race(q, z, seed * 1000 + z, 40);
                caught += o.caught_up as u32;
                overtook += o.overtook as u32;
                if o.overtook {
                    assert!(o.reorg_depth >= z, "a successful attack reverses >= z blocks");
                }
            }
            let n = trials as f64;
            let (pc, po) = (caught as f64 / n, overtook as f64 / n);
            let nak = nakamoto(q, z);
            let exact = exact_overtake(q, z);
            let se = |p: f64| (p * (1.0 - p) / n).sqrt();
            let model_gap = 0.02;
            assert!((pc - nak).abs() <= 4.0 * se(nak) + model_gap, "z={z}: caught {pc} vs {nak}");
            assert!((po - exact).abs() <= 4.0 * se(exact), "z={z}: overtook {po} vs {exact}");
            assert!(po < pc, "overtaking needs more than catching up");
        }
    }

    #[test]
    fn a_majority_attacker_always_wins_eventually() {
        for seed in 0..20 {
            let o = private_race(0.6, 3, seed, 200);
            assert!(o.overtook, "seed {seed}");
        }
    }
}
