//! Log replication (Raft paper §5.3): the leader's AppendEntries, the
//! follower's answer, and the conflict hint that repairs a divergent
//! follower in a few round trips (thesis §5.3, "fast backtracking").
//!
//! Leader side: [`send_appends`] streams batches to one follower within its
//! [`Progress`] window; [`send_heartbeat`] sends an empty AppendEntries at
//! the follower's `next_index - 1`, which both keeps its lease and detects a
//! lost message (the follower rejects a `prev_log_index` it does not hold);
//! [`next_index_from_hint`] turns a rejection into the next probe position.
//!
//! Follower side: [`accept_append`] checks `prev_log_index`/`prev_log_term`,
//! deletes only entries that conflict (an old, reordered AppendEntries never
//! truncates a longer matching log), appends what is new, emits a
//! [`Write::Append`] for exactly what changed, and advances the commit index
//! to `min(leader_commit, last index the message vouches for)`.
//!
//! Compaction (thesis §5): a follower whose `next_index - 1` is below the
//! leader's purged prefix cannot be sent entries; [`send_appends`],
//! [`resend_probe`] and [`send_heartbeat`] switch it to Snapshot mode and ask
//! the host for the first chunk ([`SnapshotAction::Read`]). A follower never
//! deletes anything at or below its own purged prefix: those entries are
//! committed, so an AppendEntries that starts there is matched from the
//! purged index on (the openraft#511 regression).
//!
//! On a rejection, [`Message::AppendEntriesResponse::match_index`] carries the
//! rejected `prev_log_index`, so the leader can tell a stale rejection from
//! the answer to its latest probe.

use crate::config::InjectedBug;
use crate::entry::Entry;
use crate::log::RaftLog;
use crate::message::Message;
use crate::node::RaftOutput;
use crate::progress::{Progress, ProgressState};
use crate::storage::Write;
use synod_core::protocol::{SnapshotAction, SnapshotMeta};

/// What a leader puts in every AppendEntries it sends.
#[derive(Clone, Copy, Debug)]
pub struct AppendContext<'a> {
    /// The leader's log.
    pub log: &'a RaftLog,
    /// The leader's term.
    pub term: u64,
    /// The leader's commit index.
    pub commit_index: u64,
    /// The leader's current ReadIndex round.
    pub read_round: u64,
    /// Most entries per message.
    pub max_entries: usize,
    /// Most payload bytes per message (at least one entry is sent).
    pub max_bytes: usize,
    /// The leader's latest snapshot (what a follower behind the purged
    /// prefix is sent).
    pub snapshot: SnapshotMeta,
    /// Largest snapshot chunk.
    pub chunk_bytes: usize,
}

impl AppendContext<'_> {
    /// True when `pr` needs entries the log no longer holds.
    fn needs_snapshot(&self, pr: &Progress) -> bool {
        pr.next_index <= self.log.purged_index()
    }

    /// Switches `pr` to Snapshot mode and asks for the first chunk.
    fn start_snapshot(&self, pr: &mut Progress, out: &mut RaftOutput) {
        debug_assert!(self.snapshot.index >= self.log.purged_index(), "purged beyond the snapshot");
        pr.become_snapshot(self.snapshot);
        request_chunk(self, pr, out);
    }

    fn append(&self, prev_log_index: u64, entries: Vec<Entry>) -> Message {
        let prev_log_term = self
            .log
            .term_at(prev_log_index)
            .unwrap_or_else(|| panic!("leader lacks prev_log_index {prev_log_index}"));
        Message::AppendEntries {
            term: self.term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: self.commit_index,
            read_round: self.read_round,
        }
    }

    /// One message with entries from `pr.next_index` (at least one, within
    /// the batch limits); records the send in `pr`. Returns false when there
    /// is nothing to send.
    fn send_batch(&self, pr: &mut Progress, out: &mut RaftOutput) -> bool {
        let from_index = pr.next_index;
        let to_index = self.log.batch_end(from_index, self.max_entries, self.max_bytes);
        if to_index < from_index {
            return false;
        }
        let entries = self.log.slice(from_index, to_index).to_vec();
        out.send(pr.id, self.append(from_index - 1, entries));
        pr.sent_entries(to_index);
        true
    }
}

/// Sends to `pr` every batch its mode and window allow: one probe in Probe
/// mode, up to the in-flight window in Replicate mode. Returns the number of
/// messages sent.
pub fn send_appends(ctx: &AppendContext<'_>, pr: &mut Progress, out: &mut RaftOutput) -> usize {
    if pr.state == ProgressState::Snapshot {
        return 0;
    }
    if ctx.needs_snapshot(pr) {
        ctx.start_snapshot(pr, out);
        return 0;
    }
    let mut sent = 0;
    while !pr.is_paused() && ctx.send_batch(pr, out) {
        sent += 1;
        if pr.state == ProgressState::Probe {
            break;
        }
    }
    sent
}

/// Sends a probe to `pr` even when one is already out (the heartbeat of a
/// follower in Probe mode re-sends its unanswered probe). With nothing to
/// send it sends an empty AppendEntries at `next_index - 1`.
pub fn resend_probe(ctx: &AppendContext<'_>, pr: &mut Progress, out: &mut RaftOutput) {
    debug_assert_eq!(pr.state, ProgressState::Probe);
    if ctx.needs_snapshot(pr) {
        ctx.start_snapshot(pr, out);
    } else if !ctx.send_batch(pr, out) {
        send_heartbeat(ctx, pr, out);
    }
}

/// Sends an empty AppendEntries to `pr` at `next_index - 1`. A follower in
/// Snapshot mode instead gets the chunk at the offset it last asked for
/// again (resuming after a lost chunk), from the leader's latest snapshot
/// (restarting the transfer if a newer one replaced it).
pub fn send_heartbeat(ctx: &AppendContext<'_>, pr: &mut Progress, out: &mut RaftOutput) {
    if pr.state == ProgressState::Snapshot {
        if pr.snapshot.is_none_or(|t| t.meta != ctx.snapshot) {
            ctx.start_snapshot(pr, out);
        } else {
            request_chunk(ctx, pr, out);
        }
    } else if ctx.needs_snapshot(pr) {
        ctx.start_snapshot(pr, out);
    } else {
        out.send(pr.id, ctx.append(pr.next_index - 1, Vec::new()));
    }
}

/// Asks the host for the chunk of `pr`'s snapshot at the offset the
/// follower wants next.
pub fn request_chunk(ctx: &AppendContext<'_>, pr: &Progress, out: &mut RaftOutput) {
    if let Some(t) = pr.snapshot {
        out.snapshots.push(SnapshotAction::Read {
            to: pr.id,
            index: t.meta.index,
            offset: t.offset,
            max_bytes: ctx.chunk_bytes,
        });
    }
}

/// Where the leader resumes after a follower rejected `rejected_index` with
/// the hint (`conflict_term`, `conflict_index`): just after the leader's last
/// entry of `conflict_term` when it holds that term before the rejected index,
/// else at `conflict_index`. The caller clamps the result above the match.
pub fn next_index_from_hint(
    log: &RaftLog,
    rejected_index: u64,
    conflict_term: u64,
    conflict_index: u64,
) -> u64 {
    if conflict_term > 0
        && let Some(last) = log.last_index_of_term(conflict_term)
        && last < rejected_index
    {
        return last + 1;
    }
    conflict_index.max(1)
}

/// The follower's handling of an AppendEntries of its current term.
#[derive(Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// The answer to send back to the leader.
    pub response: Message,
    /// The follower's commit index afterwards.
    pub commit_index: u64,
    /// Entries deleted from the log's tail (a conflicting suffix).
    pub truncated: u64,
}

/// A follower of `term` with commit index `commit_index` receives an
/// AppendEntries. Changes `log`, pushes at most one [`Write::Append`] to
/// `writes`, and returns the response.
///
/// # Panics
/// If a committed entry would be deleted (Log Matching would be broken),
/// unless a bug is being injected on purpose (`bug != None`), in which case
/// the simulator's checkers are the ones meant to notice.
#[allow(clippy::too_many_arguments)]
pub fn accept_append(
    log: &mut RaftLog,
    term: u64,
    commit_index: u64,
    bug: InjectedBug,
    prev_log_index: u64,
    prev_log_term: u64,
    mut entries: Vec<Entry>,
    leader_commit: u64,
    read_round: u64,
    writes: &mut Vec<Write>,
) -> AppendResult {
    let last_new_index = prev_log_index + entries.len() as u64;
    let (mut prev_log_index, mut prev_log_term) = (prev_log_index, prev_log_term);
    let purged_index = log.purged_index();
    if prev_log_index < purged_index {
        // Everything up to the purged index is committed and inside our
        // snapshot, so it matches the leader's log: skip it and check from
        // the purged index on. Never delete anything there (openraft#511).
        let skip = ((purged_index - prev_log_index) as usize).min(entries.len());
        entries.drain(..skip);
        prev_log_index = purged_index;
        prev_log_term = log.purged_term();
        if entries.is_empty() {
            return AppendResult {
                response: Message::AppendEntriesResponse {
                    term,
                    success: true,
                    match_index: last_new_index,
                    conflict_term: 0,
                    conflict_index: 0,
                    read_round,
                },
                commit_index: commit_index.max(leader_commit.min(last_new_index)),
                truncated: 0,
            };
        }
    }
    if !log.matches(prev_log_index, prev_log_term) {
        let (conflict_term, conflict_index) = log.conflict_hint(prev_log_index);
        return AppendResult {
            response: Message::AppendEntriesResponse {
                term,
                success: false,
                match_index: prev_log_index,
                conflict_term,
                conflict_index,
                read_round,
            },
            commit_index,
            truncated: 0,
        };
    }
    let mut truncated = 0;
    if let Some(conflict) = log.find_conflict(&entries) {
        let first_new = &entries[conflict];
        assert!(
            first_new.index == prev_log_index + 1 + conflict as u64,
            "AppendEntries entries are not consecutive after prev_log_index {prev_log_index}"
        );
        assert!(
            first_new.index > commit_index || bug != InjectedBug::None,
            "AppendEntries would overwrite committed index {} (commit {commit_index})",
            first_new.index
        );
        entries.drain(..conflict);
        truncated = log.truncate_and_append(&entries);
        writes.push(Write::Append { entries });
    }
    let new_commit = commit_index.max(leader_commit.min(last_new_index));
    AppendResult {
        response: Message::AppendEntriesResponse {
            term,
            success: true,
            match_index: last_new_index,
            conflict_term: 0,
            conflict_index: 0,
            read_round,
        },
        commit_index: new_commit,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Payload;
    use synod_core::{NodeId, Time};

    fn e(term: u64, index: u64) -> Entry {
        Entry { term, index, payload: Payload::Noop }
    }

    fn log_of_terms(terms: &[u64]) -> RaftLog {
        RaftLog::from_entries(terms.iter().enumerate().map(|(i, &t)| e(t, i as u64 + 1)).collect())
    }

    fn accept(
        log: &mut RaftLog,
        commit: u64,
        prev: (u64, u64),
        entries: Vec<Entry>,
        leader_commit: u64,
        writes: &mut Vec<Write>,
    ) -> AppendResult {
        accept_append(
            log,
            5,
            commit,
            InjectedBug::None,
            prev.0,
            prev.1,
            entries,
            leader_commit,
            7,
            writes,
        )
    }

    #[test]
    fn a_stale_append_does_not_truncate_a_longer_matching_log() {
        let mut log = log_of_terms(&[1, 1, 1, 1]);
        let mut writes = Vec::new();
        let result = accept(&mut log, 0, (1, 1), vec![e(1, 2)], 0, &mut writes);
        assert_eq!(log.last_index(), 4, "entries 3 and 4 survive");
        assert!(writes.is_empty(), "nothing changed, nothing written");
        assert_eq!(result.truncated, 0);
        assert!(matches!(
            result.response,
            Message::AppendEntriesResponse { success: true, match_index: 2, read_round: 7, .. }
        ));
    }

    #[test]
    fn only_the_conflicting_suffix_is_replaced_and_written() {
        let mut log = log_of_terms(&[1, 1, 2, 2]);
        let mut writes = Vec::new();
        let result = accept(&mut log, 2, (1, 1), vec![e(1, 2), e(3, 3)], 3, &mut writes);
        assert_eq!(writes, vec![Write::Append { entries: vec![e(3, 3)] }]);
        assert_eq!(log.entries(), &[e(1, 1), e(1, 2), e(3, 3)]);
        assert_eq!(result.truncated, 2);
        assert_eq!(result.commit_index, 3);
    }

    #[test]
    fn commit_advances_only_to_what_the_message_vouches_for() {
        let mut log = log_of_terms(&[1, 1, 1, 1, 1]);
        let mut writes = Vec::new();
        // The leader has committed 9, but this message proves a match only to 3.
        let result = accept(&mut log, 1, (3, 1), vec![], 9, &mut writes);
        assert_eq!(result.commit_index, 3);
        // And commit never goes backwards.
        let result = accept(&mut log, 4, (1, 1), vec![], 9, &mut writes);
        assert_eq!(result.commit_index, 4);
    }

    #[test]
    fn a_mismatch_is_rejected_with_the_conflict_hint() {
        let mut log = log_of_terms(&[1, 2, 2, 2]);
        let mut writes = Vec::new();
        let result = accept(&mut log, 0, (4, 3), vec![e(3, 5)], 0, &mut writes);
        assert!(writes.is_empty());
        assert_eq!(
            result.response,
            Message::AppendEntriesResponse {
                term: 5,
                success: false,
                match_index: 4,
                conflict_term: 2,
                conflict_index: 2,
                read_round: 7,
            }
        );
        let result = accept(&mut log, 0, (9, 3), vec![], 0, &mut writes);
        assert!(matches!(
            result.response,
            Message::AppendEntriesResponse { conflict_term: 0, conflict_index: 5, .. }
        ));
    }

    #[test]
    #[should_panic(expected = "overwrite committed")]
    fn overwriting_a_committed_entry_is_an_invariant_violation() {
        let mut log = log_of_terms(&[1, 1, 1]);
        accept(&mut log, 3, (1, 1), vec![e(2, 2)], 0, &mut Vec::new());
    }

    /// openraft#511: a follower that purged its log up to 4 receives an
    /// AppendEntries whose prev entry (2) it no longer holds. It must not
    /// reject it forever, nor delete (committed) entries to "repair" it.
    #[test]
    fn regression_append_with_a_purged_prev_does_not_delete_committed_entries() {
        let mut log = log_of_terms(&[1, 1, 1, 2, 2, 2]);
        log.purge(4);
        let mut writes = Vec::new();
        let entries = vec![e(1, 3), e(2, 4), e(2, 5), e(2, 6)];
        let result = accept(&mut log, 6, (2, 1), entries, 6, &mut writes);
        assert!(writes.is_empty(), "everything already held");
        assert_eq!(log.last_index(), 6);
        assert_eq!(log.purged_index(), 4);
        assert!(matches!(
            result.response,
            Message::AppendEntriesResponse { success: true, match_index: 6, .. }
        ));
        // Entirely inside the purged prefix: acknowledged, nothing touched.
        let result = accept(&mut log, 6, (1, 1), vec![e(1, 2)], 6, &mut writes);
        assert!(matches!(
            result.response,
            Message::AppendEntriesResponse { success: true, match_index: 2, .. }
        ));
        // New entries after the purged prefix are appended.
        let result =
            accept(&mut log, 6, (3, 1), vec![e(2, 4), e(2, 5), e(2, 6), e(3, 7)], 7, &mut writes);
        assert_eq!(writes, vec![Write::Append { entries: vec![e(3, 7)] }]);
        assert_eq!(result.commit_index, 7);
    }

    #[test]
    fn a_follower_behind_the_purged_prefix_is_switched_to_snapshot_mode() {
        let mut log = log_of_terms(&[1; 10]);
        log.purge(6);
        let snapshot = SnapshotMeta { index: 8, epoch: 1, size_bytes: 40 };
        let ctx = AppendContext {
            log: &log,
            term: 1,
            commit_index: 10,
            read_round: 0,
            max_entries: 10,
            max_bytes: 1 << 20,
            snapshot,
            chunk_bytes: 16,
        };
        let mut pr = Progress::new(NodeId(2), 8);
        pr.reset(10, Time::ZERO);
        pr.next_index = 5;
        let mut out = RaftOutput::new();
        assert_eq!(send_appends(&ctx, &mut pr, &mut out), 0);
        assert_eq!(pr.state, ProgressState::Snapshot);
        assert!(out.messages.is_empty());
        let read = SnapshotAction::Read { to: NodeId(2), index: 8, offset: 0, max_bytes: 16 };
        assert_eq!(out.snapshots, vec![read.clone()]);
        // A heartbeat asks for the chunk again (a lost chunk is re-sent).
        send_heartbeat(&ctx, &mut pr, &mut out);
        assert_eq!(out.snapshots, vec![read.clone(), read]);
        // A follower right at the purged index still gets entries.
        let mut pr = Progress::new(NodeId(3), 8);
        pr.reset(10, Time::ZERO);
        pr.next_index = 7;
        assert_eq!(send_appends(&ctx, &mut pr, &mut out), 1);
    }

    #[test]
    fn hint_skips_a_whole_divergent_term() {
        // Leader: terms 1,1,3,3,3 ; follower held 1,1,2,2,2,2 and rejected at 5.
        let leader = log_of_terms(&[1, 1, 3, 3, 3]);
        assert_eq!(next_index_from_hint(&leader, 5, 2, 3), 3);
        // The leader holds the conflicting term: resume after its last entry of it.
        let leader = log_of_terms(&[1, 2, 2, 4, 4]);
        assert_eq!(next_index_from_hint(&leader, 5, 2, 2), 4);
        // The follower is short: resume at its end.
        assert_eq!(next_index_from_hint(&leader, 5, 0, 3), 3);
    }

    #[test]
    fn replicate_mode_streams_until_the_window_is_full() {
        let log = log_of_terms(&[1; 10]);
        let ctx = AppendContext {
            log: &log,
            term: 1,
            commit_index: 0,
            read_round: 0,
            max_entries: 3,
            max_bytes: 1 << 20,
            snapshot: SnapshotMeta::default(),
            chunk_bytes: 16,
        };
        let mut pr = Progress::new(NodeId(2), 2);
        pr.reset(0, Time::ZERO);
        pr.on_ack(0);
        let mut out = RaftOutput::new();
        assert_eq!(send_appends(&ctx, &mut pr, &mut out), 2);
        assert_eq!(pr.next_index, 7);
        let firsts: Vec<_> = out
            .messages
            .iter()
            .map(|(_, m)| match m {
                Message::AppendEntries { prev_log_index, entries, .. } => {
                    (*prev_log_index, entries.len())
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(firsts, vec![(0, 3), (3, 3)]);
    }

    #[test]
    fn probe_mode_sends_one_and_resends_on_demand() {
        let log = log_of_terms(&[1; 4]);
        let ctx = AppendContext {
            log: &log,
            term: 1,
            commit_index: 0,
            read_round: 0,
            max_entries: 10,
            max_bytes: 1 << 20,
            snapshot: SnapshotMeta::default(),
            chunk_bytes: 16,
        };
        let mut pr = Progress::new(NodeId(2), 8);
        pr.reset(2, Time::ZERO);
        let mut out = RaftOutput::new();
        assert_eq!(send_appends(&ctx, &mut pr, &mut out), 1);
        assert_eq!(send_appends(&ctx, &mut pr, &mut out), 0, "paused until answered");
        resend_probe(&ctx, &mut pr, &mut out);
        assert_eq!(out.messages.len(), 2);
        assert_eq!(out.messages[0], out.messages[1]);
    }
}
