//! MVCC auto-compaction: etcd's `--auto-compaction-mode` and
//! `--auto-compaction-retention` as a policy the leader's driver consults
//! every round ([`Compactor::due`]); what it returns is proposed as a
//! `Compact` through the log, like any client's compaction, so every
//! replica compacts at the same position. Off by default, as in etcd 3.4.
//!
//! - `revision` mode with retention `R` (a number of revisions): every
//!   [`REVISION_CHECK_INTERVAL`] the leader compacts to `current - R` when
//!   that is above the last compaction (etcd's revision compactor checks
//!   every 5 minutes too).
//! - `periodic` mode with retention `T` (`"1h"`, `"30m"`, `"90s"`, or a
//!   bare number of hours as in etcd): the leader samples the current
//!   revision every `T / 10` and compacts to the revision it sampled `T`
//!   ago, so revisions of the last `T` stay (etcd 3.4's periodic
//!   compactor: for `T` = 10 h, a compaction every hour keeping 10 hours).
//!
//! Only a leader compacts; a node that (re)gains leadership starts its
//! clock and samples afresh (etcd pauses and resumes the compactor the
//! same way). The policy reads no clock: time is passed in.

use serde::Deserialize;
use std::collections::VecDeque;
use std::time::Duration;

/// How often the revision mode looks (etcd: 5 minutes).
pub const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(300);
/// Shortest sampling interval of the periodic mode.
pub const MIN_PERIODIC_INTERVAL: Duration = Duration::from_secs(1);
/// Revision samples kept by the periodic mode (ten per retention, and
/// a margin).
const MAX_SAMPLES: usize = 16;

/// The configured policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AutoCompaction {
    /// Never compact by itself (the default).
    #[default]
    Off,
    /// Keep the last `retention` revisions, looking every `check_interval`
    /// ([`REVISION_CHECK_INTERVAL`] from the config file).
    Revision {
        /// Revisions kept.
        retention: i64,
        /// How often the leader looks.
        check_interval: Duration,
    },
    /// Keep the revisions of the last `retention`.
    Periodic {
        /// How long revisions are kept.
        retention: Duration,
    },
}

impl AutoCompaction {
    /// Parses etcd's flags: `mode` is `revision` or `periodic`; `retention`
    /// is a revision count for the former, a duration (`1h`, `30m`, `90s`,
    /// or a bare number of hours) for the latter. `None` for both: off.
    pub fn parse(mode: Option<&str>, retention: Option<&str>) -> Result<AutoCompaction, String> {
        let (mode, retention) = match (mode, retention) {
            (None, None) => return Ok(AutoCompaction::Off),
            (Some(m), Some(r)) => (m, r.trim()),
            (Some(m), None) => {
                return Err(format!(
                    "auto_compaction_mode = \"{m}\" needs auto_compaction_retention"
                ));
            }
            (None, Some(_)) => {
                return Err(
                    "auto_compaction_retention needs auto_compaction_mode (revision or periodic)"
                        .into(),
                );
            }
        };
        match mode {
            "revision" => match retention.parse::<i64>() {
                Ok(r) if r > 0 => Ok(AutoCompaction::Revision {
                    retention: r,
                    check_interval: REVISION_CHECK_INTERVAL,
                }),
                _ => Err(format!(
                    "auto_compaction_retention = \"{retention}\": the revision mode keeps a \
                     positive number of revisions"
                )),
            },
            "periodic" => parse_duration(retention)
                .filter(|d| *d >= MIN_PERIODIC_INTERVAL)
                .map(|retention| AutoCompaction::Periodic { retention })
                .ok_or_else(|| {
                    format!(
                        "auto_compaction_retention = \"{retention}\": the periodic mode keeps a \
                         duration of at least 1s (\"1h\", \"30m\", \"90s\", or hours)"
                    )
                }),
            other => Err(format!(
                "auto_compaction_mode = \"{other}\": expected \"revision\" or \"periodic\""
            )),
        }
    }
}

/// `auto_compaction_retention` as written in the config file: a number
/// (`1000`) or a string (`"1h"`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Retention {
    /// A bare number: revisions, or hours in the periodic mode.
    Number(u64),
    /// A string: a number or a duration such as `"30m"`.
    Text(String),
}

impl Retention {
    /// As text, for [`AutoCompaction::parse`].
    pub fn text(&self) -> String {
        match self {
            Retention::Number(n) => n.to_string(),
            Retention::Text(s) => s.clone(),
        }
    }
}

/// `1h`, `30m`, `90s`, `500ms`, or a bare number of hours (etcd's
/// `--auto-compaction-retention=10`).
fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().ok()?;
    let secs = match unit {
        "" | "h" => n * 3600.0,
        "m" => n * 60.0,
        "s" => n,
        "ms" => n / 1000.0,
        _ => return None,
    };
    (secs.is_finite() && secs > 0.0 && secs < 1e9).then(|| Duration::from_secs_f64(secs))
}

/// The leader's compaction schedule.
#[derive(Debug, Default)]
pub struct Compactor {
    policy: AutoCompaction,
    /// When this node last became leader (`None`: not leading).
    leading_since: Option<Duration>,
    /// The next time to look.
    next_check: Duration,
    /// Periodic mode: (time, revision) samples, oldest first.
    samples: VecDeque<(Duration, i64)>,
}

impl Compactor {
    /// A schedule for `policy`.
    pub fn new(policy: AutoCompaction) -> Compactor {
        Compactor { policy, ..Compactor::default() }
    }

    /// The policy.
    pub fn policy(&self) -> AutoCompaction {
        self.policy
    }

    /// Called every round with the time, whether this node leads, the
    /// store's current revision and its last compaction revision; returns
    /// the revision to compact to when one is due.
    pub fn due(
        &mut self,
        now: Duration,
        leading: bool,
        revision: i64,
        compacted: i64,
    ) -> Option<i64> {
        if self.policy == AutoCompaction::Off {
            return None;
        }
        if !leading {
            self.leading_since = None;
            self.samples.clear();
            return None;
        }
        if self.leading_since.is_none() {
            self.leading_since = Some(now);
            self.next_check = now;
        }
        if now < self.next_check {
            return None;
        }
        let target = match self.policy {
            AutoCompaction::Off => return None,
            AutoCompaction::Revision { retention, check_interval } => {
                self.next_check = now + check_interval;
                revision - retention
            }
            AutoCompaction::Periodic { retention } => {
                let interval = (retention / 10).max(MIN_PERIODIC_INTERVAL);
                self.next_check = now + interval;
                self.samples.push_back((now, revision));
                // The newest sample at least `retention` old is the target;
                // older ones are no longer needed.
                let cutoff = now.checked_sub(retention)?;
                let mut target = None;
                while let Some(&(at, rev)) = self.samples.front() {
                    if at > cutoff {
                        break;
                    }
                    target = Some(rev);
                    self.samples.pop_front();
                }
                while self.samples.len() > MAX_SAMPLES {
                    self.samples.pop_front();
                }
                target?
            }
        };
        (target > compacted.max(1)).then_some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn etcd_flags_parse_and_bad_ones_say_why() {
        assert_eq!(AutoCompaction::parse(None, None), Ok(AutoCompaction::Off));
        assert_eq!(
            AutoCompaction::parse(Some("revision"), Some("1000")),
            Ok(AutoCompaction::Revision {
                retention: 1000,
                check_interval: REVISION_CHECK_INTERVAL
            })
        );
        let periodic = |s| AutoCompaction::parse(Some("periodic"), Some(s));
        assert_eq!(periodic("1h"), Ok(AutoCompaction::Periodic { retention: s(3600) }));
        assert_eq!(periodic("10"), Ok(AutoCompaction::Periodic { retention: s(36_000) }));
        assert_eq!(periodic("30m"), Ok(AutoCompaction::Periodic { retention: s(1800) }));
        assert_eq!(periodic("90s"), Ok(AutoCompaction::Periodic { retention: s(90) }));
        assert!(periodic("500ms").expect_err("too short").contains("at least 1s"));
        assert!(periodic("1d").is_err());
        assert!(AutoCompaction::parse(Some("revision"), Some("-5")).is_err());
        assert!(
            AutoCompaction::parse(Some("hourly"), Some("1")).expect_err("mode").contains("hourly")
        );
        assert!(AutoCompaction::parse(Some("revision"), None).is_err());
        assert!(AutoCompaction::parse(None, Some("5")).is_err());
    }

    #[test]
    fn off_never_compacts() {
        let mut c = Compactor::new(AutoCompaction::Off);
        for t in 0..1000 {
            assert_eq!(c.due(s(t), true, 1_000_000, -1), None);
        }
    }

    #[test]
    fn revision_mode_keeps_the_last_revisions_every_five_minutes() {
        let policy = AutoCompaction::Revision { retention: 100, check_interval: s(300) };
        let mut c = Compactor::new(policy);
        assert_eq!(c.due(s(0), true, 50, -1), None, "nothing old enough yet");
        assert_eq!(c.due(s(10), true, 500, -1), None, "waits for the next check");
        assert_eq!(c.due(s(300), true, 500, -1), Some(400));
        assert_eq!(c.due(s(400), true, 900, 400), None);
        assert_eq!(c.due(s(600), true, 900, 400), Some(800));
        assert_eq!(c.due(s(900), true, 900, 800), None, "nothing new to compact");
    }

    #[test]
    fn periodic_mode_compacts_to_the_revision_of_one_retention_ago() {
        let mut c = Compactor::new(AutoCompaction::Periodic { retention: s(100) });
        // Sampled every 10 s; the revision grows by 10 per second.
        let mut got: Vec<(u64, i64)> = Vec::new();
        for t in 0..=300u64 {
            let compacted = got.last().map_or(-1, |g| g.1);
            if let Some(r) = c.due(s(t), true, 10 * t as i64 + 2, compacted) {
                got.push((t, r));
            }
        }
        assert_eq!(got.first(), Some(&(100, 2)), "the first after one retention: {got:?}");
        for &(t, r) in &got {
            assert_eq!(r, 10 * (t as i64 - 100) + 2, "at {t}: keeps exactly the last 100 s");
        }
        assert_eq!(got.len(), 21, "every 10 s from 100 to 300: {got:?}");
    }

    #[test]
    fn only_a_leader_compacts_and_a_new_term_starts_afresh() {
        let mut c = Compactor::new(AutoCompaction::Periodic { retention: s(10) });
        assert_eq!(c.due(s(0), true, 10, -1), None);
        assert_eq!(c.due(s(5), false, 60, -1), None, "a follower never does");
        assert_eq!(c.due(s(10), false, 110, -1), None);
        // Leading again at 20 s: samples restart, nothing before 30 s.
        assert_eq!(c.due(s(20), true, 210, -1), None);
        assert_eq!(c.due(s(29), true, 300, -1), None);
        assert_eq!(c.due(s(30), true, 310, -1), Some(210));
        let mut r =
            Compactor::new(AutoCompaction::Revision { retention: 5, check_interval: s(300) });
        assert_eq!(r.due(s(0), false, 100, -1), None);
        assert_eq!(r.due(s(1), true, 100, -1), Some(95), "checks as soon as it leads");
    }
}
