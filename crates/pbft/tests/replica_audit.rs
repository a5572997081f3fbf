//! Behaviours of the PBFT replica that had code and no test: view-change
//! timeouts (doubling, cap, reset), joining a view change on f+1
//! VIEW-CHANGEs, replay protection and the reply cache, the watermark
//! window, authentication failures, batching and pipelining, and state
//! transfer (including a lying peer). Driven through the public
//! [`Protocol`] interface only: set up, call, assert what comes out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use synod_core::state_machine::{Applied, Sessions, StateMachine};
use synod_core::{ClientId, Command, NodeId, ProposeError, Protocol, Time};
use synod_pbft::message::{Checkpoint, PrePrepare, StableCheckpoint, Suspect, ViewChange, Vote};
use synod_pbft::request::sign_command;
use synod_pbft::{Batch, Config, Digest, Durable, Message, PbftNode, PbftOutput, Write};

fn config() -> Config {
    Config::new((1..=4).map(NodeId).collect())
}

fn nodes(config: &Config) -> Vec<PbftNode> {
    config
        .replicas
        .iter()
        .map(|&id| PbftNode::recover(id, config, &Durable::default(), 0, Time::ZERO))
        .collect()
}

fn request(config: &Config, client: u64, seq: u64) -> Command {
    let op = format!("put {client} {seq}");
    sign_command(&config.client_key(client), Command::new(ClientId(client), seq, op.into_bytes()))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A VIEW-CHANGE for `view` from the replica at `from`, signed by it.
fn view_change(config: &Config, from: usize, view: u64) -> Message {
    let mut vc = ViewChange {
        view,
        replica: config.replicas[from],
        stable: StableCheckpoint::default(),
        prepared: Vec::new(),
        pre_prepared: Vec::new(),
        sig: ed25519_dalek::Signature::from_bytes(&[0; 64]),
    };
    vc.sig = config.keyring(from).sign(&vc.digest());
    Message::ViewChange(Arc::new(vc))
}

/// A SUSPECT of `view` from the replica at `from`, signed by it.
fn suspect(config: &Config, from: usize, view: u64) -> Message {
    let replica = config.replicas[from];
    let sig = config.keyring(from).sign(&Suspect::digest(view, replica));
    Message::Suspect(Suspect { view, replica, sig })
}

/// A STATUS from `from` to `to`, MAC'd by `from`.
fn status(config: &Config, from: usize, to: usize, view: u64, executed: u64) -> Message {
    let header = Message::status_header(view, true, executed);
    let auth = config.keyring(from).mac(to, header.as_bytes());
    Message::Status { view, active: true, executed, auth }
}

/// The primary of view 0's PRE-PREPARE of `batch` at `seq`.
fn pre_prepare(config: &Config, seq: u64, batch: Batch) -> PrePrepare {
    let digest = synod_pbft::digest::batch_digest(&batch);
    let auth = config.keyring(0).auth(PrePrepare::header(0, seq, &digest).as_bytes());
    PrePrepare { view: 0, seq, digest, batch, auth }
}

fn view_changes_sent(out: &PbftOutput) -> Vec<u64> {
    let mut views: Vec<u64> = out
        .messages
        .iter()
        .filter_map(|(_, m)| match m {
            Message::ViewChange(vc) => Some(vc.view),
            _ => None,
        })
        .collect();
    views.dedup();
    views
}

fn pre_prepares_sent(out: &PbftOutput) -> Vec<(u64, usize)> {
    let mut v: Vec<(u64, usize)> = out
        .messages
        .iter()
        .filter_map(|(_, m)| match m {
            Message::PrePrepare(pp) => Some((pp.seq, pp.batch.len())),
            _ => None,
        })
        .collect();
    v.dedup();
    v
}

fn sent_prepare(out: &PbftOutput) -> bool {
    out.messages.iter().any(|(_, m)| matches!(m, Message::Prepare(_)))
}

/// A lossless network among the replicas in `up`: ticks each every 10 ms
/// and delivers everything sent (`tamper` may rewrite or drop a message:
/// from, to, message) until `done` or `limit`. Returns the time it stopped
/// and every committed command (by replica position) seen on the way.
struct Net {
    now: Time,
    queue: VecDeque<(NodeId, NodeId, Message)>,
}

impl Net {
    fn new() -> Net {
        Net { now: Time::ZERO, queue: VecDeque::new() }
    }

    fn run(
        &mut self,
        nodes: &mut [PbftNode],
        up: &[usize],
        limit: Time,
        mut tamper: impl FnMut(NodeId, NodeId, Message) -> Option<Message>,
        done: impl Fn(&[PbftNode]) -> bool,
    ) -> bool {
        while self.now < limit && !done(nodes) {
            for &i in up {
                let mut out = PbftOutput::new();
                nodes[i].tick(self.now, &mut out);
                self.collect(nodes[i].id(), out);
            }
            while let Some((from, to, m)) = self.queue.pop_front() {
                let Some(j) = up.iter().copied().find(|&j| nodes[j].id() == to) else {
                    continue;
                };
                let Some(m) = tamper(from, to, m) else { continue };
                let mut out = PbftOutput::new();
                nodes[j].step(self.now, from, m, &mut out);
                self.collect(to, out);
            }
            self.now = self.now + ms(10);
        }
        done(nodes)
    }

    fn collect(&mut self, from: NodeId, mut out: PbftOutput) {
        self.queue.extend(out.messages.drain(..).map(|(to, m)| (from, to, m)));
    }

    /// `node` proposes `cmds` now; what it sends goes on the wire.
    fn propose(&mut self, node: &mut PbftNode, cmds: Vec<Command>) -> Result<(), ProposeError> {
        let mut out = PbftOutput::new();
        let r = node.propose(self.now, cmds, &mut out);
        self.collect(node.id(), out);
        r
    }
}

fn keep(_: NodeId, _: NodeId, m: Message) -> Option<Message> {
    Some(m)
}

// ----- view-change timeouts ---------------------------------------------

/// OSDI'99 §4.5.2: a replica that changes view again without progress
/// waits twice as long each time (`start_view_change` doubles the timeout),
/// up to `max_view_change_timeout`; the timer for view v starts once q
/// replicas asked for v. With 100 ms and a cap of 800 ms, and the replica
/// never the primary of the views it asks for (7 replicas, it is position
/// 6), it waits 200, 400, 800, then 800 ms. It leaves view 0 once its
/// request timer expired (it suspects) and f = 2 others suspect too.
#[test]
fn view_change_timeouts_double_on_successive_view_changes_up_to_the_cap() {
    let mut config = Config::new((1..=7).map(NodeId).collect());
    config.view_change_timeout = ms(100);
    config.max_view_change_timeout = ms(800);
    config.status_interval = Duration::from_secs(3600);
    let mut node = PbftNode::recover(NodeId(7), &config, &Durable::default(), 0, Time::ZERO);
    let me = 6;
    let mut now = Time::ZERO;
    let mut out = PbftOutput::new();
    node.tick(now, &mut out);
    for from in 0..6 {
        node.step(now, config.replicas[from], status(&config, from, me, 0, 0), &mut out);
    }
    node.propose(now, vec![request(&config, 1, 1)], &mut out).expect("well signed");
    now = now + ms(100);
    let mut out = PbftOutput::new();
    node.tick(now, &mut out);
    assert!(view_changes_sent(&out).is_empty(), "left view 0 on its own suspicion");
    for from in [1, 2] {
        node.step(now, config.replicas[from], suspect(&config, from, 0), &mut out);
    }
    assert_eq!(view_changes_sent(&out), [1]);
    let mut waits = Vec::new();
    for view in 1..=4u64 {
        // q = 5: four others ask for this view too (not its primary).
        let askers = (0..6).filter(|&p| p != (view % 7) as usize).take(4);
        for from in askers {
            let mut out = PbftOutput::new();
            node.step(now, config.replicas[from], view_change(&config, from, view), &mut out);
        }
        assert!(!node.is_active());
        let deadline = node.next_deadline();
        waits.push(deadline.saturating_since(now));
        now = deadline;
        let mut out = PbftOutput::new();
        node.tick(now, &mut out);
        assert_eq!(view_changes_sent(&out), [view + 1], "gives up on view {view}");
    }
    assert_eq!(waits, [ms(200), ms(400), ms(800), ms(800)]);
}

/// Progress resets the timeout (`on_progress`): after a view change that
/// doubled it, a request executed in the new view brings it back to the
/// configured value, so the next request's timer is 100 ms, not 200.
#[test]
fn view_change_timeout_resets_after_progress() {
    let mut config = config();
    config.view_change_timeout = ms(100);
    config.max_view_change_timeout = ms(800);
    config.status_interval = Duration::from_secs(3600); // out of the way
    let mut nodes = nodes(&config);
    let mut net = Net::new();
    let up = [1, 2, 3]; // view 0's primary is down
    net.run(&mut nodes, &up, Time::from_millis(50), keep, |_| false);
    for i in up {
        net.propose(&mut nodes[i], vec![request(&config, 1, 1)]).expect("accepted");
    }
    let live = net.run(&mut nodes, &up, Time::from_millis(5_000), keep, |n| {
        up.iter().all(|&i| n[i].executed_seq() >= 1)
    });
    assert!(live, "{:?}", up.iter().map(|&i| nodes[i].summary()).collect::<Vec<_>>());
    assert!(nodes[2].view() >= 1 && nodes[2].is_active());
    // A new request reaches backup 2 alone: its request timer is the
    // configured 100 ms again, not the 200 ms the view change doubled it to.
    let mut out = PbftOutput::new();
    nodes[2].propose(net.now, vec![request(&config, 1, 2)], &mut out).expect("accepted");
    let wait = nodes[2].next_deadline().saturating_since(net.now);
    assert_eq!(wait, ms(100), "{}", nodes[2].summary());
}

// ----- joining a view change ----------------------------------------------

/// §4.5.2 liveness rule: a replica that holds VIEW-CHANGEs for views above
/// its own from f+1 others joins, at the smallest view that f+1 of them
/// asked for or exceeded; f of them (possibly all faulty) move it nowhere.
#[test]
fn a_replica_joins_a_view_change_on_f_plus_1_view_changes_not_on_f() {
    let config = config();
    let mut nodes = nodes(&config);
    let me = 2;
    let mut out = PbftOutput::new();
    nodes[me].tick(Time::ZERO, &mut out);
    // f = 1: one replica asking for view 5 moves nobody.
    let mut out = PbftOutput::new();
    nodes[me].step(Time::ZERO, NodeId(1), view_change(&config, 0, 5), &mut out);
    assert_eq!((nodes[me].view(), nodes[me].is_active()), (0, true));
    assert!(view_changes_sent(&out).is_empty(), "joined on f VIEW-CHANGEs");
    // A second one, for view 3: f+1 asked for views of 3 or more.
    let mut out = PbftOutput::new();
    nodes[me].step(Time::ZERO, NodeId(4), view_change(&config, 3, 3), &mut out);
    assert_eq!((nodes[me].view(), nodes[me].is_active()), (3, false), "{}", nodes[me].summary());
    assert_eq!(view_changes_sent(&out), [3], "joins the smallest such view, 3, not 5");
    assert!(out.writes.contains(&Write::View { view: 3, changing: true }));
}

/// With 7 replicas (f = 2), VIEW-CHANGEs for views 4, 6 and 9 from three
/// replicas make it join view 4; two of them (for 6 and 9) do not.
#[test]
fn a_replica_joins_the_smallest_view_f_plus_1_replicas_reached() {
    let config = Config::new((1..=7).map(NodeId).collect());
    let mut node = PbftNode::recover(NodeId(1), &config, &Durable::default(), 0, Time::ZERO);
    let mut out = PbftOutput::new();
    node.tick(Time::ZERO, &mut out);
    for (from, view) in [(3, 9), (5, 6)] {
        node.step(Time::ZERO, config.replicas[from], view_change(&config, from, view), &mut out);
    }
    assert_eq!(node.view(), 0, "f = 2 VIEW-CHANGEs moved it");
    let mut out = PbftOutput::new();
    node.step(Time::ZERO, NodeId(2), view_change(&config, 1, 4), &mut out);
    assert_eq!((node.view(), node.is_active()), (4, false));
    assert_eq!(view_changes_sent(&out), [4]);
}

// ----- replay protection and the reply cache ---------------------------------

/// Counts the operations applied; answers with the count.
#[derive(Default)]
struct Counter(u64);

impl StateMachine for Counter {
    fn apply(&mut self, _index: u64, _op: &[u8]) -> bytes::Bytes {
        self.0 += 1;
        bytes::Bytes::from(self.0.to_string())
    }
    fn query(&self, _op: &[u8]) -> bytes::Bytes {
        bytes::Bytes::from(self.0.to_string())
    }
}

/// A request already executed, sent again with the same (client,
/// timestamp), is ordered again by the core (it has no reply path), and
/// the session layer answers it from its reply cache without executing it
/// a second time; a request older than the client's latest executed one is
/// refused at every replica with `ProposeError::Stale` and never ordered.
#[test]
fn a_repeated_request_gets_the_cached_reply_and_an_older_one_is_refused() {
    let config = config();
    let mut nodes = nodes(&config);
    let mut net = Net::new();
    let all = [0, 1, 2, 3];
    let mut sessions: Vec<Sessions<Counter>> =
        (0..4).map(|_| Sessions::new(Counter::default(), 16)).collect();
    let mut answers: Vec<Vec<Applied>> = vec![Vec::new(); 4];
    let apply = |nodes: &mut [PbftNode], net: &mut Net, cmds: Vec<Command>, upto: u64| {
        for i in all {
            net.propose(&mut nodes[i], cmds.clone()).expect("accepted");
        }
        assert!(net.run(nodes, &all, net.now + ms(2_000), keep, |n| {
            n.iter().all(|r| r.executed_seq() >= upto)
        }));
    };
    apply(&mut nodes, &mut net, vec![request(&config, 7, 1)], 1);
    apply(&mut nodes, &mut net, vec![request(&config, 7, 2)], 2);
    // The client retries its latest request (its reply was lost).
    apply(&mut nodes, &mut net, vec![request(&config, 7, 2)], 3);
    for i in all {
        for seq in 1..=nodes[i].executed_seq() {
            for c in nodes[i].executed_batch(seq).expect("executed").iter() {
                let index = sessions[i].applied_index() + 1;
                let inner = Command {
                    client: c.client,
                    seq: c.seq,
                    op: synod_pbft::request::inner_op(&c.op),
                };
                answers[i].push(sessions[i].apply(index, &inner));
            }
        }
        assert_eq!(
            answers[i],
            [
                Applied::Fresh("1".into()),
                Applied::Fresh("2".into()),
                Applied::Duplicate("2".into())
            ],
            "replica {i}"
        );
        assert_eq!(sessions[i].machine().0, 2, "replica {i} executed the retry twice");
    }
    // An older timestamp: refused by every replica, nothing ordered.
    for i in all {
        let mut out = PbftOutput::new();
        let r = nodes[i].propose(net.now, vec![request(&config, 7, 1)], &mut out);
        assert_eq!(r, Err(ProposeError::Stale), "replica {i}");
        assert!(
            out.messages.is_empty() && out.writes.is_empty(),
            "replica {i}: {:?}",
            out.messages
        );
    }
    assert!(!net.run(&mut nodes, &all, net.now + ms(1_000), keep, |n| {
        n.iter().any(|r| r.executed_seq() > 3)
    }));
}

// ----- the watermark window ---------------------------------------------------

/// A backup accepts PRE-PREPAREs, PREPAREs and COMMITs at h < n <= H = h + L
/// and refuses (and counts as `invalid`) those at n <= h or n > H.
#[test]
fn messages_outside_the_watermark_window_are_rejected_and_counted() {
    let config = config();
    let l = config.log_window;
    let mut nodes = nodes(&config);
    let me = 1;
    let batch = Batch::new(Time::ZERO, vec![request(&config, 1, 1)]);
    let mut invalid = 0;
    for (seq, inside) in [(l + 1, false), (0, false), (l, true), (1, true)] {
        let mut out = PbftOutput::new();
        let pp = pre_prepare(&config, seq, batch.clone());
        nodes[me].step(Time::ZERO, NodeId(1), Message::PrePrepare(pp), &mut out);
        assert_eq!(sent_prepare(&out), inside, "PRE-PREPARE at {seq}");
        if !inside {
            invalid += 1;
        }
        assert_eq!(nodes[me].auth_stats().invalid, invalid, "PRE-PREPARE at {seq}");
        // A PREPARE and a COMMIT from replica 3 at the same number.
        for commit in [false, true] {
            let d = synod_pbft::digest::batch_digest(&batch);
            let auth =
                config.keyring(2).auth(Vote::header(commit, 0, seq, &d, NodeId(3)).as_bytes());
            let v = Vote { view: 0, seq, digest: d, replica: NodeId(3), auth };
            let m = if commit { Message::Commit(v) } else { Message::Prepare(v) };
            nodes[me].step(Time::ZERO, NodeId(3), m, &mut PbftOutput::new());
            if !inside {
                invalid += 1;
            }
            assert_eq!(nodes[me].auth_stats().invalid, invalid, "vote at {seq}");
        }
    }
    assert_eq!(nodes[me].auth_stats().bad_mac, 0);
}

// ----- authentication ---------------------------------------------------------

/// A PRE-PREPARE whose authenticator is not the primary's (made with
/// another replica's keys), a PREPARE claiming a replica that did not make
/// it, and VIEW-CHANGEs and CHECKPOINTs signed by someone else are dropped
/// and counted (`bad_mac`, `bad_signature`), and never acted on: no
/// PREPARE, no durable write, no view change even when f+1 of them claim a
/// higher view, no stable checkpoint.
#[test]
fn badly_authenticated_messages_are_dropped_counted_and_never_acted_on() {
    let config = config();
    let mut nodes = nodes(&config);
    let me = 1;
    let batch = Batch::new(Time::ZERO, vec![request(&config, 1, 1)]);
    let d = synod_pbft::digest::batch_digest(&batch);
    // PRE-PREPARE "from the primary" authenticated by replica 3.
    let auth = config.keyring(3).auth(PrePrepare::header(0, 1, &d).as_bytes());
    let pp = PrePrepare { view: 0, seq: 1, digest: d, batch: batch.clone(), auth };
    let mut out = PbftOutput::new();
    nodes[me].step(Time::ZERO, NodeId(1), Message::PrePrepare(pp), &mut out);
    assert_eq!(nodes[me].auth_stats().bad_mac, 1);
    assert!(!sent_prepare(&out) && out.writes.is_empty(), "{:?}", out);
    // A PREPARE claiming replica 3 (position 2), authenticated by 4.
    let auth = config.keyring(3).auth(Vote::header(false, 0, 1, &d, NodeId(3)).as_bytes());
    let v = Vote { view: 0, seq: 1, digest: d, replica: NodeId(3), auth };
    nodes[me].step(Time::ZERO, NodeId(3), Message::Prepare(v), &mut out);
    assert_eq!(nodes[me].auth_stats().bad_mac, 2);
    // VIEW-CHANGEs for view 3 claiming replicas 1 and 3, signed by 4: two
    // (f+1) would make it join if they were genuine.
    for claimed in [0, 2] {
        let mut vc = ViewChange {
            view: 3,
            replica: config.replicas[claimed],
            stable: StableCheckpoint::default(),
            prepared: Vec::new(),
            pre_prepared: Vec::new(),
            sig: ed25519_dalek::Signature::from_bytes(&[0; 64]),
        };
        vc.sig = config.keyring(3).sign(&vc.digest());
        let m = Message::ViewChange(Arc::new(vc));
        nodes[me].step(Time::ZERO, config.replicas[claimed], m, &mut out);
    }
    assert_eq!(nodes[me].auth_stats().bad_signature, 2);
    assert_eq!((nodes[me].view(), nodes[me].is_active()), (0, true));
    assert!(view_changes_sent(&out).is_empty());
    // CHECKPOINTs at 128 claiming replicas 1, 3 and 4, all signed by 4.
    let state = Digest::of(b"a state nobody has");
    for claimed in [0, 2, 3] {
        let replica = config.replicas[claimed];
        let sig = config.keyring(3).sign(&Checkpoint::digest(128, &state, replica));
        let cp = Checkpoint { seq: 128, state, replica, sig };
        nodes[me].step(Time::ZERO, replica, Message::Checkpoint(cp), &mut out);
    }
    assert_eq!(nodes[me].auth_stats().bad_signature, 4, "replica 4's own one is genuine");
    assert_eq!(nodes[me].low_watermark(), 0, "a forged quorum made a checkpoint stable");
    assert!(out.writes.is_empty(), "{:?}", out.writes);
    assert_eq!(nodes[me].auth_stats().invalid, 0);
    // The genuine PRE-PREPARE is still accepted.
    let mut out = PbftOutput::new();
    nodes[me].step(
        Time::ZERO,
        NodeId(1),
        Message::PrePrepare(pre_prepare(&config, 1, batch)),
        &mut out,
    );
    assert!(sent_prepare(&out));
}

// ----- batching and pipelining --------------------------------------------------

/// The primary puts up to `max_batch` requests in one PRE-PREPARE and keeps
/// up to `max_inflight_batches` sequence numbers pre-prepared before any
/// executes; the rest waits in its queue and goes out as they execute.
#[test]
fn the_primary_batches_requests_and_keeps_several_sequence_numbers_in_flight() {
    let mut config = config();
    config.max_batch = 3;
    config.max_inflight_batches = 2;
    let mut nodes = nodes(&config);
    let mut out = PbftOutput::new();
    let cmds: Vec<Command> = (1..=8).map(|c| request(&config, c, 1)).collect();
    nodes[0].propose(Time::ZERO, cmds.clone(), &mut out).expect("accepted");
    assert_eq!(pre_prepares_sent(&out), [(1, 3), (2, 3)], "two batches of three in flight");
    // Deliver: the cluster executes them, and the rest follows.
    let mut net = Net::new();
    net.collect(NodeId(1), out);
    for node in nodes.iter_mut().skip(1) {
        net.propose(node, cmds.clone()).expect("accepted");
    }
    let all = [0, 1, 2, 3];
    assert!(net.run(&mut nodes, &all, Time::from_millis(2_000), keep, |n| {
        n.iter().all(|r| r.executed_seq() >= 3)
    }));
    let sizes: Vec<usize> =
        (1..=3).map(|s| nodes[2].executed_batch(s).expect("executed").len()).collect();
    assert_eq!(sizes, [3, 3, 2]);
    // Without a limit, several sequence numbers go out at once.
    let mut config = self::config();
    config.max_batch = 2;
    let mut nodes = self::nodes(&config);
    let mut out = PbftOutput::new();
    nodes[0]
        .propose(Time::ZERO, (1..=7).map(|c| request(&config, c, 1)).collect(), &mut out)
        .expect("accepted");
    assert_eq!(pre_prepares_sent(&out), [(1, 2), (2, 2), (3, 2), (4, 1)]);
}

// ----- state transfer -------------------------------------------------------------

/// A replica cut off while the others moved past a stable checkpoint
/// learns the checkpoint's proof, fetches the batches from a signer and
/// catches up: same executed batches, same state digest. A peer that
/// answers its FETCH with a wrong batch is refused (`bad_digest`) and the
/// replica still catches up from a correct one.
#[test]
fn a_lagging_replica_catches_up_by_state_transfer_despite_a_lying_peer() {
    let mut config = config();
    config.checkpoint_interval = 2;
    config.log_window = 4;
    config.max_batch = 1;
    let mut nodes = nodes(&config);
    let mut net = Net::new();
    let three = [0, 1, 2];
    for seq in 1..=5 {
        let c = request(&config, 1, seq);
        for i in three {
            net.propose(&mut nodes[i], vec![c.clone()]).expect("accepted");
        }
        assert!(net.run(&mut nodes, &three, net.now + ms(2_000), keep, |n| {
            n[..3].iter().all(|r| r.executed_seq() >= seq)
        }));
    }
    assert!(nodes[0].low_watermark() >= 4, "{}", nodes[0].summary());
    assert_eq!(nodes[3].executed_seq(), 0);
    // Replica 4 comes back. Replica 1, the first it asks, answers its
    // FETCH with a wrong last batch.
    let mut lies = 0;
    let all = [0, 1, 2, 3];
    let caught_up = net.run(
        &mut nodes,
        &all,
        net.now + ms(10_000),
        |from, to, m| match m {
            Message::State { first, batches, manifest } if from == NodeId(1) && to == NodeId(4) => {
                lies += 1;
                let mut bs: Vec<Batch> = batches.to_vec();
                let last = bs.len() - 1;
                bs[last] = Batch::new(Time::ZERO, vec![request(&config, 9, 1)]);
                Some(Message::State { first, batches: bs.into(), manifest })
            }
            m => Some(m),
        },
        |n| n[3].low_watermark() >= 4 && n[3].executed_seq() >= n[0].executed_seq(),
    );
    assert!(caught_up, "{}", nodes[3].summary());
    assert!(lies >= 1, "the lying peer was never asked");
    assert!(nodes[3].auth_stats().bad_digest >= 1, "{}", nodes[3].summary());
    // Up to the stable checkpoint by state transfer, the rest (5) by the
    // normal case: the same batches, the same state digest.
    let done = nodes[0].executed_seq();
    assert_eq!((nodes[3].executed_seq(), done), (5, 5));
    for seq in 1..=done {
        assert_eq!(nodes[3].executed_digest(seq), nodes[0].executed_digest(seq), "seq {seq}");
    }
    assert_eq!(nodes[3].state_digest(), nodes[0].state_digest());
    for seq in 1..=done {
        assert!(
            !nodes[3]
                .executed_batch(seq)
                .expect("executed")
                .iter()
                .any(|c| c.client == ClientId(9)),
            "executed the lying peer's batch at {seq}"
        );
    }
}
