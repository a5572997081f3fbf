//! [`SendQueue`]: the bounded queue of messages waiting for one peer.
//!
//! Pushing never blocks and never fails: when the queue is over its message
//! or byte bound, the **oldest** messages are dropped (and counted) to make
//! room. Consensus protocols tolerate message loss and retransmit from their
//! own state, and a newer message usually supersedes an older one (a later
//! heartbeat, an append with a higher commit index), so under pressure the
//! peer gets the freshest traffic. Memory per peer is bounded by
//! `max_bytes` (plus the `VecDeque` slots of `max_len` handles).

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

/// A bounded, drop-oldest FIFO with a wake-up for its single consumer.
#[derive(Debug)]
pub struct SendQueue {
    state: Mutex<QueueState>,
    ready: Notify,
    max_len: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    messages: VecDeque<Bytes>,
    queued_bytes: usize,
    dropped: u64,
}

/// How many messages and bytes a queue holds, and how many it has dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueLevel {
    /// Messages waiting.
    pub queued_messages: usize,
    /// Payload bytes waiting.
    pub queued_bytes: usize,
    /// Messages dropped because the queue was full, since the start.
    pub dropped: u64,
}

impl SendQueue {
    /// An empty queue holding at most `max_len` messages and `max_bytes`
    /// payload bytes. Both bounds must be positive.
    pub fn new(max_len: usize, max_bytes: usize) -> SendQueue {
        assert!(max_len > 0 && max_bytes > 0, "a send queue needs positive bounds");
        SendQueue {
            state: Mutex::new(QueueState::default()),
            ready: Notify::new(),
            max_len,
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Every critical section leaves the state consistent, so a panic
        // elsewhere while holding the lock cannot corrupt it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `message`, dropping the oldest messages while a bound is
    /// exceeded; returns how many were dropped. The caller guarantees
    /// `message.len() <= max_bytes`.
    pub fn push(&self, message: Bytes) -> u64 {
        assert!(message.len() <= self.max_bytes, "message larger than the whole queue");
        let dropped = {
            let mut state = self.lock();
            let mut dropped = 0;
            while state.messages.len() >= self.max_len
                || state.queued_bytes + message.len() > self.max_bytes
            {
                let oldest = state.messages.pop_front().expect("a full queue is not empty");
                state.queued_bytes -= oldest.len();
                dropped += 1;
            }
            state.queued_bytes += message.len();
            state.messages.push_back(message);
            state.dropped += dropped;
            assert!(state.messages.len() <= self.max_len && state.queued_bytes <= self.max_bytes);
            dropped
        };
        self.ready.notify_one();
        dropped
    }

    /// Takes the oldest message, if any.
    pub fn pop(&self) -> Option<Bytes> {
        let mut state = self.lock();
        let message = state.messages.pop_front()?;
        state.queued_bytes -= message.len();
        Some(message)
    }

    /// Resolves once a message has been pushed since the last time this
    /// resolved (or immediately if one was pushed while nobody waited).
    /// Meant for the single consumer; cancel-safe.
    pub async fn pushed(&self) {
        self.ready.notified().await;
    }

    /// The current level.
    pub fn level(&self) -> QueueLevel {
        let state = self.lock();
        QueueLevel {
            queued_messages: state.messages.len(),
            queued_bytes: state.queued_bytes,
            dropped: state.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_oldest() {
        let queue = SendQueue::new(3, 1000);
        let dropped: u64 = (1..=10u8).map(|i| queue.push(Bytes::from(vec![i]))).sum();
        assert_eq!(dropped, 7);
        let kept: Vec<u8> = std::iter::from_fn(|| queue.pop()).map(|m| m[0]).collect();
        assert_eq!(kept, vec![8, 9, 10]);
        assert_eq!(queue.level(), QueueLevel { queued_messages: 0, queued_bytes: 0, dropped: 7 });
    }

    #[test]
    fn byte_bound_drops_as_many_as_needed() {
        let queue = SendQueue::new(100, 10);
        for _ in 0..5 {
            queue.push(Bytes::from_static(b"ab"));
        }
        assert_eq!(queue.push(Bytes::from_static(b"0123456")), 4);
        let level = queue.level();
        assert_eq!((level.queued_messages, level.queued_bytes), (2, 9));
    }

    #[tokio::test]
    async fn a_push_before_waiting_is_not_missed() {
        let queue = SendQueue::new(4, 100);
        queue.push(Bytes::from_static(b"x"));
        tokio::time::timeout(std::time::Duration::from_secs(5), queue.pushed())
            .await
            .expect("the stored wake-up resolves at once");
        assert_eq!(queue.pop().as_deref(), Some(&b"x"[..]));
    }
}
