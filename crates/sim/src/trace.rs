//! The run's trace: a running hash of every event (for determinism checks)
//! and a ring buffer of the most recent events (printed with a violation).
//!
//! Records are small `Copy` structs; they are formatted into text only when
//! a report asks for them, so tracing costs no allocation on the hot path.

use std::fmt;
use synod_core::Time;

/// How many recent events a trace keeps.
pub const RECENT_EVENTS: usize = 200;

/// What happened, in a trace record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TraceKind {
    /// A peer message was delivered (`node` ← `peer`, `label` = kind).
    Deliver,
    /// A message was dropped (loss, partition, crashed or paused receiver).
    Drop,
    /// A node's timers fired.
    Tick,
    /// A node's writes up to `value` were synced.
    Synced,
    /// A client request reached `node` from client `peer` (`value` = seq).
    Request,
    /// A client (`node` = client id) got an answer from node `peer`.
    Reply,
    /// A client gave up waiting and retried (`value` = seq).
    Retry,
    /// A node crashed (`value` = unsynced writes kept).
    Crash,
    /// A node restarted.
    Restart,
    /// A fault or scenario action was applied (`label` = action).
    Fault,
    /// A node became leader (`value` = epoch).
    Leader,
    /// A node applied committed positions up to `value`.
    Commit,
    /// A client operation completed (`node` = client id, `value` = seq).
    OpDone,
}

/// One compact trace record.
#[derive(Clone, Copy, Debug)]
pub struct TraceRecord {
    /// Global virtual time.
    pub time: Time,
    /// What happened.
    pub kind: TraceKind,
    /// The node (or client) concerned.
    pub node: u64,
    /// The other party, if any (0 otherwise).
    pub peer: u64,
    /// A static label (message kind, action name).
    pub label: &'static str,
    /// A number (index, seq, epoch, count).
    pub value: u64,
}

impl fmt::Display for TraceRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.time;
        let (n, p, l, v) = (self.node, self.peer, self.label, self.value);
        match self.kind {
            TraceKind::Deliver => write!(f, "{t} n{n} <- n{p} {l}"),
            TraceKind::Drop => write!(f, "{t} drop n{p} -> n{n} {l}"),
            TraceKind::Tick => write!(f, "{t} n{n} tick"),
            TraceKind::Synced => write!(f, "{t} n{n} synced writes up to #{v}"),
            TraceKind::Request => write!(f, "{t} n{n} <- c{p} request #{v} ({l})"),
            TraceKind::Reply => write!(f, "{t} c{n} <- n{p} reply #{v} ({l})"),
            TraceKind::Retry => write!(f, "{t} c{n} retries #{v} ({l})"),
            TraceKind::Crash => write!(f, "{t} n{n} CRASH (kept {v} unsynced writes)"),
            TraceKind::Restart => write!(f, "{t} n{n} RESTART"),
            TraceKind::Fault => write!(f, "{t} fault: {l} n{n} n{p} {v}"),
            TraceKind::Leader => write!(f, "{t} n{n} became LEADER in epoch {v}"),
            TraceKind::Commit => write!(f, "{t} n{n} applied up to {v}"),
            TraceKind::OpDone => write!(f, "{t} c{n} op #{v} done ({l})"),
        }
    }
}

/// A running hash of the run plus the most recent records.
pub struct Trace {
    hash: u64,
    ring: Vec<TraceRecord>,
    next: usize,
    len: u64,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            ring: Vec::with_capacity(RECENT_EVENTS),
            next: 0,
            len: 0,
        }
    }
}

impl Trace {
    /// An empty trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Mixes a value into the running hash.
    #[inline]
    pub fn mix(&mut self, x: u64) {
        self.hash = (self.hash.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    /// Records one event (and mixes it into the hash).
    #[inline]
    pub fn record(&mut self, rec: TraceRecord) {
        self.mix(rec.time.0);
        self.mix(((rec.kind as u64) << 56) ^ (rec.node << 28) ^ rec.peer);
        self.mix(rec.value ^ rec.label.len() as u64);
        if self.ring.len() < RECENT_EVENTS {
            self.ring.push(rec);
        } else {
            self.ring[self.next] = rec;
        }
        self.next = (self.next + 1) % RECENT_EVENTS;
        self.len += 1;
    }

    /// The hash of everything recorded so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Records made so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most recent records, oldest first.
    pub fn recent(&self) -> Vec<TraceRecord> {
        if self.ring.len() < RECENT_EVENTS {
            self.ring.clone()
        } else {
            let mut v = self.ring[self.next..].to_vec();
            v.extend_from_slice(&self.ring[..self.next]);
            v
        }
    }

    /// The most recent records as text lines, oldest first.
    pub fn recent_lines(&self) -> Vec<String> {
        self.recent().iter().map(|r| r.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> TraceRecord {
        TraceRecord { time: Time(i), kind: TraceKind::Tick, node: 1, peer: 0, label: "", value: i }
    }

    #[test]
    fn ring_keeps_the_last_records_in_order() {
        let mut t = Trace::new();
        for i in 0..(RECENT_EVENTS as u64 + 10) {
            t.record(rec(i));
        }
        let r = t.recent();
        assert_eq!(r.len(), RECENT_EVENTS);
        assert_eq!(r[0].value, 10);
        assert_eq!(r.last().map(|x| x.value), Some(RECENT_EVENTS as u64 + 9));
        assert_eq!(t.recent_lines()[0], "0.010ms n1 tick");
    }

    #[test]
    fn hash_depends_on_order() {
        let mut a = Trace::new();
        let mut b = Trace::new();
        a.record(rec(1));
        a.record(rec(2));
        b.record(rec(2));
        b.record(rec(1));
        assert_ne!(a.hash(), b.hash());
    }
}
