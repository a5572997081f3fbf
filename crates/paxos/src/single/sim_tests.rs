//! A deterministic mini-simulation of single-decree Paxos: random delivery
//! order and delays, message loss and duplication, crashes that keep only
//! the acceptor's durable state, all from one seed — and a global checker
//! that at most one value is chosen, and that it was proposed.
//!
//! The checker watches every `Accepted` an acceptor sends (its acceptance is
//! durable by then): a value is chosen once a majority accepted it in one
//! ballot.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use synod_core::{NodeId, Time};

/// How a world misbehaves.
#[derive(Clone, Copy, Debug)]
struct Faults {
    loss: f64,
    duplicate: f64,
    /// Chance per node per millisecond of a crash.
    crash: f64,
}

struct World {
    config: SynodConfig,
    rng: ChaCha8Rng,
    now: Time,
    nodes: Vec<Option<SynodNode>>,
    disks: Vec<AcceptorState>,
    restart_at: Vec<Time>,
    net: BinaryHeap<Reverse<(Time, u64, usize, usize)>>,
    in_flight: HashMap<u64, Message>,
    next_message: u64,
    proposed: Vec<Value>,
    tallies: HashMap<Ballot, (Value, u64)>,
    chosen: Option<Value>,
}

impl World {
    fn new(n: usize, seed: u64, bug: InjectedBug) -> World {
        let ids: Vec<NodeId> = (1..=n as u64).map(NodeId).collect();
        let mut config = SynodConfig::new(ids.clone());
        config.bug = bug;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let nodes = ids
            .iter()
            .map(|&id| {
                Some(SynodNode::recover(
                    id,
                    &config,
                    &AcceptorState::default(),
                    rng.random(),
                    Time::ZERO,
                ))
            })
            .collect();
        let proposed = (1..=n).map(|i| Value::from(format!("value-{i}"))).collect();
        World {
            config,
            rng,
            now: Time::ZERO,
            nodes,
            disks: vec![AcceptorState::default(); n],
            restart_at: vec![Time::MAX; n],
            net: BinaryHeap::new(),
            in_flight: HashMap::new(),
            next_message: 0,
            proposed,
            tallies: HashMap::new(),
            chosen: None,
        }
    }

    /// Carries out node `i`'s output: writes become durable, then messages
    /// leave (some lost, some twice, each with a random delay), and the
    /// checker looks at every `Accepted`.
    fn carry_out(&mut self, i: usize, out: SynodOutput, faults: Faults) -> Result<(), String> {
        for w in &out.writes {
            self.disks[i].apply(w);
        }
        let n = self.nodes.len();
        for (to, msg) in out.messages {
            if let Message::Accepted { ballot, value } = &msg {
                self.check_accepted(i, *ballot, value, n)?;
            }
            let copies = if self.rng.random_bool(faults.loss) {
                0
            } else if self.rng.random_bool(faults.duplicate) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delay = self.rng.random_range(1_000..10_000);
                let id = self.next_message;
                self.next_message += 1;
                self.in_flight.insert(id, msg.clone());
                self.net.push(Reverse((Time(self.now.0 + delay), id, i, to.0 as usize - 1)));
            }
        }
        if let (Some(chosen), Some(node)) = (&self.chosen, &self.nodes[i])
            && let Some(learned) = node.chosen()
            && learned != chosen
        {
            return Err(format!("n{} learned {learned:?} but {chosen:?} was chosen", i + 1));
        }
        Ok(())
    }

    /// The checker: at most one value chosen, and only a proposed one.
    fn check_accepted(
        &mut self,
        i: usize,
        ballot: Ballot,
        value: &Value,
        n: usize,
    ) -> Result<(), String> {
        let (tally_value, mask) = self.tallies.entry(ballot).or_insert((value.clone(), 0));
        if tally_value != value {
            return Err(format!("two values accepted in {ballot}"));
        }
        *mask |= 1 << i;
        if !synod_core::quorum::is_majority(mask.count_ones() as usize, n) {
            return Ok(());
        }
        if !self.proposed.contains(value) {
            return Err(format!("{value:?} was chosen in {ballot} but never proposed"));
        }
        match &self.chosen {
            Some(c) if c != value => {
                Err(format!("{c:?} was chosen, and then {value:?} in {ballot}"))
            }
            _ => {
                self.chosen = Some(value.clone());
                Ok(())
            }
        }
    }

    /// Runs `until`, with faults until `faults_until`; proposals start in
    /// the first 50 ms.
    fn run(&mut self, faults: Faults, faults_until: Time, until: Time) -> Result<(), String> {
        let calm = Faults { loss: 0.0, duplicate: 0.0, crash: 0.0 };
        let n = self.nodes.len();
        let propose_at: Vec<Time> =
            (0..n).map(|_| Time(self.rng.random_range(0..50_000))).collect();
        let mut proposed = vec![false; n];
        while self.now < until {
            let f = if self.now < faults_until { faults } else { calm };
            self.now = Time(self.now.0 + 1_000);
            // Deliver everything due, in the random order the delays gave.
            while let Some(&Reverse((at, id, from, to))) = self.net.peek() {
                if at > self.now {
                    break;
                }
                self.net.pop();
                let msg = self.in_flight.remove(&id).expect("queued message");
                let Some(node) = self.nodes[to].as_mut() else { continue };
                let mut out = SynodOutput::new();
                node.step(self.now, NodeId(from as u64 + 1), msg, &mut out);
                self.carry_out(to, out, f)?;
            }
            for i in 0..n {
                if self.nodes[i].is_none() {
                    if self.now >= self.restart_at[i] || self.now >= faults_until {
                        let seed = self.rng.random();
                        self.nodes[i] = Some(SynodNode::recover(
                            NodeId(i as u64 + 1),
                            &self.config,
                            &self.disks[i],
                            seed,
                            self.now,
                        ));
                        proposed[i] = false;
                    }
                    continue;
                }
                if f.crash > 0.0 && self.rng.random_bool(f.crash) {
                    self.nodes[i] = None;
                    self.restart_at[i] = Time(self.now.0 + self.rng.random_range(5_000..100_000));
                    continue;
                }
                let node = self.nodes[i].as_mut().expect("live");
                let mut out = SynodOutput::new();
                if !proposed[i] && self.now >= propose_at[i] {
                    proposed[i] = true;
                    node.propose(self.now, self.proposed[i].clone(), &mut out);
                } else if self.now >= node.next_deadline() {
                    node.tick(self.now, &mut out);
                }
                self.carry_out(i, out, f)?;
            }
        }
        Ok(())
    }

    fn everyone_learned(&self) -> bool {
        self.chosen.is_some()
            && self
                .nodes
                .iter()
                .all(|n| n.as_ref().is_some_and(|n| n.chosen() == self.chosen.as_ref()))
    }
}

const HARSH: Faults = Faults { loss: 0.2, duplicate: 0.1, crash: 0.002 };

fn run_seed(n: usize, seed: u64, bug: InjectedBug) -> (Result<(), String>, World) {
    let mut world = World::new(n, seed, bug);
    let result = world.run(HARSH, Time::from_millis(1_500), Time::from_millis(6_000));
    (result, world)
}

#[test]
fn at_most_one_proposed_value_is_chosen_and_everyone_learns_it() {
    for seed in 0..300 {
        for n in [3, 5] {
            let (result, world) = run_seed(n, seed, InjectedBug::None);
            if let Err(e) = result {
                panic!("seed {seed}, {n} nodes: {e}");
            }
            assert!(world.everyone_learned(), "seed {seed}, {n} nodes: not everyone learned");
        }
    }
}

#[test]
fn duelling_proposers_without_faults_still_choose() {
    for seed in 0..100 {
        let mut world = World::new(5, seed, InjectedBug::None);
        let calm = Faults { loss: 0.0, duplicate: 0.0, crash: 0.0 };
        world.run(calm, Time::ZERO, Time::from_millis(2_000)).expect("safe");
        assert!(world.everyone_learned(), "seed {seed}");
    }
}

/// The broken proposer (ignores the values reported in promises) is caught
/// within the first 20 seeds (in practice the first few).
#[test]
fn a_proposer_ignoring_promised_values_is_caught() {
    const WITHIN_SEEDS: u64 = 20;
    let caught = (0..WITHIN_SEEDS).find(|&seed| {
        let (result, _) = run_seed(5, seed, InjectedBug::IgnorePromisedValues);
        result.is_err()
    });
    let seed = caught.expect("the checker must catch the broken proposer");
    eprintln!("broken proposer caught at seed {seed}");
    let (result, _) = run_seed(5, seed, InjectedBug::IgnorePromisedValues);
    let e = result.unwrap_err();
    assert!(e.contains("was chosen, and then"), "{e}");
}
