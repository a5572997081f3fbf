//! Scenario files: a readable TOML timeline of faults.
//!
//! ```toml
//! name = "leader crash under partition"
//!
//! [[at]]
//! time_ms = 500
//! action = "crash"        # see below for every action and its fields
//! node = 2
//!
//! [[at]]
//! time_ms = 1000
//! action = "partition"
//! groups = [[1, 2], [3, 4, 5]]
//!
//! [[at]]
//! time_ms = 1500
//! action = "loss"
//! probability = 0.2
//! ```
//!
//! Actions and their fields: `crash`, `restart`, `pause`, `resume`,
//! `isolate` (`node`); `crash_leader`, `isolate_leader`, `heal`,
//! `heal_links` (none); `partition` (`groups`); `block` (`from`, `to`);
//! `loss`, `duplicate`, `reorder` (`probability`); `drift` (`node`, `ppm`);
//! `transfer_leader` (optional `to`).
//!
//! Parsing is strict: unknown keys, missing or superfluous fields, unknown
//! node ids, probabilities outside `[0, 1]` and times out of order are
//! errors that name the file, the line and the field.

use crate::faults::FaultAction;
use serde::Deserialize;
use std::fmt;
use synod_core::NodeId;
use toml::Spanned;

/// A parsed, validated scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Where it came from (a file name), for messages and replay commands.
    pub source: String,
    /// Its optional `name`.
    pub name: Option<String>,
    /// The steps, in time order.
    pub steps: Vec<ScenarioStep>,
}

/// One step of a scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioStep {
    /// When, in milliseconds of virtual time.
    pub time_ms: u64,
    /// What.
    pub action: FaultAction,
    /// The line of the step's `time_ms` in the file.
    pub line: usize,
    /// Node ids the step names: (field, line, id), checked against the
    /// cluster size by [`Scenario::validate`].
    pub node_refs: Vec<(&'static str, usize, u64)>,
}

/// A scenario that could not be parsed or does not fit the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file name.
    pub source: String,
    /// The line, when known.
    pub line: Option<usize>,
    /// The field, when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ScenarioError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    at: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    time_ms: Spanned<u64>,
    action: Spanned<String>,
    node: Option<Spanned<u64>>,
    from: Option<Spanned<u64>>,
    to: Option<Spanned<u64>>,
    groups: Option<Spanned<Vec<Vec<u64>>>>,
    probability: Option<Spanned<f64>>,
    ppm: Option<Spanned<i64>>,
}

/// The key assigned to the value at `offset` (`key = value`, on the same
/// line), if there is one: `time_ms` for the `"soon"` in `time_ms = "soon"`,
/// and the last key before it in an inline table.
fn key_before(text: &str, offset: usize) -> Option<&str> {
    let before = text.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let key = line[..line.rfind('=')?].trim_end();
    let start = key
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .map_or(0, |i| i + 1);
    Some(&key[start..]).filter(|k| !k.is_empty())
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

impl Scenario {
    /// Reads and parses a scenario file (not yet checked against a cluster
    /// size: see [`Scenario::validate`]).
    pub fn load(path: &std::path::Path) -> Result<Scenario, ScenarioError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            source: source.clone(),
            line: None,
            field: None,
            message: format!("cannot read: {e}"),
        })?;
        Scenario::parse(&text, &source)
    }

    /// Parses scenario `text`; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Scenario, ScenarioError> {
        let err = |line: Option<usize>, field: Option<&str>, message: String| ScenarioError {
            source: source.to_string(),
            line,
            field: field.map(str::to_string),
            message,
        };
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            let named = e.message().split('`').nth(1).filter(|_| {
                e.message().starts_with("unknown field") || e.message().starts_with("missing field")
            });
            // A value of the wrong type: toml points at the value; its field
            // is the key assigned on that line.
            let field = named.or_else(|| e.span().and_then(|s| key_before(text, s.start)));
            err(line, field, e.message().trim().to_string())
        })?;
        let mut steps = Vec::with_capacity(raw.at.len());
        let mut last_time = 0;
        for s in raw.at {
            let line = line_of(text, s.time_ms.span().start);
            let time_ms = *s.time_ms.get_ref();
            if time_ms < last_time {
                return Err(err(
                    Some(line),
                    Some("time_ms"),
                    format!(
                        "{time_ms} is earlier than the previous step ({last_time}); list steps in time order"
                    ),
                ));
            }
            last_time = time_ms;
            let action_name = s.action.get_ref().as_str();
            let action_line = line_of(text, s.action.span().start);
            let mut used: Vec<&'static str> = Vec::new();
            let mut refs = Vec::new();
            macro_rules! need {
                ($f:ident, $name:literal) => {{
                    used.push($name);
                    match &s.$f {
                        Some(v) => (v.get_ref().clone(), line_of(text, v.span().start)),
                        None => {
                            return Err(err(
                                Some(action_line),
                                Some($name),
                                format!("is required by action `{action_name}`"),
                            ));
                        }
                    }
                }};
            }
            let node_field = |field: &'static str, (id, l): (u64, usize), refs: &mut Vec<_>| {
                refs.push((field, l, id));
                NodeId(id)
            };
            let probability = |(p, l): (f64, usize)| {
                if (0.0..=1.0).contains(&p) {
                    Ok(p)
                } else {
                    Err(err(Some(l), Some("probability"), format!("{p} is not in [0, 1]")))
                }
            };
            let action = match action_name {
                "crash" => FaultAction::Crash(node_field("node", need!(node, "node"), &mut refs)),
                "restart" => {
                    FaultAction::Restart(node_field("node", need!(node, "node"), &mut refs))
                }
                "pause" => FaultAction::Pause(node_field("node", need!(node, "node"), &mut refs)),
                "resume" => FaultAction::Resume(node_field("node", need!(node, "node"), &mut refs)),
                "isolate" => {
                    FaultAction::Isolate(node_field("node", need!(node, "node"), &mut refs))
                }
                "crash_leader" => FaultAction::CrashLeader,
                "isolate_leader" => FaultAction::IsolateLeader,
                "heal" => FaultAction::Heal,
                "heal_links" => FaultAction::HealLinks,
                "partition" => {
                    let (groups, l) = need!(groups, "groups");
                    let mut seen = std::collections::BTreeSet::new();
                    let mut out = Vec::new();
                    for g in groups {
                        let mut ids = Vec::new();
                        for id in g {
                            if !seen.insert(id) {
                                return Err(err(
                                    Some(l),
                                    Some("groups"),
                                    format!("node {id} is in more than one group"),
                                ));
                            }
                            refs.push(("groups", l, id));
                            ids.push(NodeId(id));
                        }
                        out.push(ids);
                    }
                    FaultAction::Partition(out)
                }
                "block" => {
                    let from = node_field("from", need!(from, "from"), &mut refs);
                    let to = node_field("to", need!(to, "to"), &mut refs);
                    FaultAction::Block { from, to }
                }
                "loss" => FaultAction::Loss(probability(need!(probability, "probability"))?),
                "duplicate" => {
                    FaultAction::Duplicate(probability(need!(probability, "probability"))?)
                }
                "reorder" => FaultAction::Reorder(probability(need!(probability, "probability"))?),
                "drift" => {
                    let node = node_field("node", need!(node, "node"), &mut refs);
                    let (ppm, l) = need!(ppm, "ppm");
                    if ppm.abs() >= 1_000_000 {
                        return Err(err(
                            Some(l),
                            Some("ppm"),
                            format!("{ppm} ppm would stop or reverse the clock"),
                        ));
                    }
                    FaultAction::Drift { node, ppm }
                }
                "transfer_leader" => {
                    used.push("to");
                    let to = s.to.as_ref().map(|v| {
                        node_field("to", (*v.get_ref(), line_of(text, v.span().start)), &mut refs)
                    });
                    FaultAction::TransferLeader { to }
                }
                other => {
                    return Err(err(
                        Some(action_line),
                        Some("action"),
                        format!(
                            "unknown action `{other}` (expected crash, restart, crash_leader, partition, \
                             isolate, isolate_leader, block, heal, heal_links, loss, duplicate, reorder, \
                             pause, resume, drift or transfer_leader)"
                        ),
                    ));
                }
            };
            let present: [(&'static str, Option<usize>); 6] = [
                ("node", s.node.as_ref().map(|v| v.span().start)),
                ("from", s.from.as_ref().map(|v| v.span().start)),
                ("to", s.to.as_ref().map(|v| v.span().start)),
                ("groups", s.groups.as_ref().map(|v| v.span().start)),
                ("probability", s.probability.as_ref().map(|v| v.span().start)),
                ("ppm", s.ppm.as_ref().map(|v| v.span().start)),
            ];
            for (field, at) in present {
                if let Some(at) = at
                    && !used.contains(&field)
                {
                    return Err(err(
                        Some(line_of(text, at)),
                        Some(field),
                        format!("is not used by action `{action_name}`"),
                    ));
                }
            }
            steps.push(ScenarioStep { time_ms, action, line, node_refs: refs });
        }
        Ok(Scenario { source: source.to_string(), name: raw.name, steps })
    }

    /// Checks the scenario against a cluster of `nodes` replicas (ids
    /// `1..=nodes`).
    pub fn validate(&self, nodes: usize) -> Result<(), ScenarioError> {
        for step in &self.steps {
            for &(field, line, id) in &step.node_refs {
                if id == 0 || id > nodes as u64 {
                    return Err(ScenarioError {
                        source: self.source.clone(),
                        line: Some(line),
                        field: Some(field.to_string()),
                        message: format!("node {id} does not exist (cluster has {nodes})"),
                    });
                }
            }
        }
        Ok(())
    }

    /// The time of the last step.
    pub fn end_ms(&self) -> u64 {
        self.steps.last().map_or(0, |s| s.time_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "demo"

[[at]]
time_ms = 500
action = "crash"
node = 2

[[at]]
time_ms = 1000
action = "partition"
groups = [[1, 2], [3, 4, 5]]

[[at]]
time_ms = 1500
action = "loss"
probability = 0.2

[[at]]
time_ms = 1500
action = "transfer_leader"
"#;

    fn parse_err(text: &str) -> String {
        Scenario::parse(text, "scenario.toml").unwrap_err().to_string()
    }

    #[test]
    fn a_good_scenario_parses_into_typed_steps() {
        let s = Scenario::parse(GOOD, "scenario.toml").expect("parses");
        assert_eq!(s.name.as_deref(), Some("demo"));
        assert_eq!(s.steps.len(), 4);
        assert_eq!(s.steps[0].action, FaultAction::Crash(NodeId(2)));
        assert_eq!(s.steps[0].line, 5);
        assert_eq!(
            s.steps[1].action,
            FaultAction::Partition(vec![
                vec![NodeId(1), NodeId(2)],
                vec![NodeId(3), NodeId(4), NodeId(5)]
            ])
        );
        assert_eq!(s.steps[2].action, FaultAction::Loss(0.2));
        assert_eq!(s.steps[3].action, FaultAction::TransferLeader { to: None });
        assert_eq!(s.end_ms(), 1500);
        assert!(s.validate(5).is_ok());
    }

    #[test]
    fn unknown_node_names_line_and_field() {
        let s = Scenario::parse(GOOD, "scenario.toml").expect("parses");
        let e = s.validate(3).unwrap_err().to_string();
        assert_eq!(e, "scenario.toml:12: field `groups`: node 4 does not exist (cluster has 3)");
        let text = "[[at]]\ntime_ms = 1\naction = \"crash\"\n\n\n\nnode = 9\n";
        let s = Scenario::parse(text, "scenario.toml").expect("parses");
        assert_eq!(
            s.validate(5).unwrap_err().to_string(),
            "scenario.toml:7: field `node`: node 9 does not exist (cluster has 5)"
        );
    }

    #[test]
    fn parse_errors_name_line_and_field() {
        let e = parse_err("[[at]]\ntime_ms = 1\naction = \"crash\"\nnod = 2\n");
        assert!(e.starts_with("scenario.toml:4: field `nod`"), "{e}");
        let e = parse_err("[[at]]\ntime_ms = 1\naction = \"crash\"\n");
        assert_eq!(e, "scenario.toml:3: field `node`: is required by action `crash`");
        let e = parse_err("[[at]]\ntime_ms = 1\naction = \"heal\"\nnode = 1\n");
        assert_eq!(e, "scenario.toml:4: field `node`: is not used by action `heal`");
        let e = parse_err("[[at]]\ntime_ms = 1\naction = \"loss\"\nprobability = 1.5\n");
        assert_eq!(e, "scenario.toml:4: field `probability`: 1.5 is not in [0, 1]");
        let e = parse_err("[[at]]\ntime_ms = 1\naction = \"explode\"\n");
        assert!(e.starts_with("scenario.toml:3: field `action`: unknown action `explode`"), "{e}");
        let e = parse_err(
            "[[at]]\ntime_ms = 9\naction = \"heal\"\n[[at]]\ntime_ms = 3\naction = \"heal\"\n",
        );
        assert!(e.starts_with("scenario.toml:5: field `time_ms`: 3 is earlier"), "{e}");
        let e = parse_err("[[at]]\ntime_ms = \"soon\"\naction = \"heal\"\n");
        assert!(e.starts_with("scenario.toml:2: field `time_ms`: invalid type"), "{e}");
        let e = parse_err("[[at]]\ntime_ms = -5\naction = \"heal\"\n");
        assert!(e.starts_with("scenario.toml:2: field `time_ms`: "), "{e}");
        let e = parse_err("[[at]]\ntime_ms = 1\naction = \"crash\"\nnode = 1.5\n");
        assert!(e.starts_with("scenario.toml:4: field `node`: invalid type"), "{e}");
        let e = parse_err("at = [{ time_ms = 1, action = 7 }]\n");
        assert!(e.starts_with("scenario.toml:1: field `action`: invalid type"), "{e}");
        let e = parse_err("[[at]]\naction = \"heal\"\n");
        assert!(e.contains("time_ms"), "{e}");
        let e = parse_err("[[at]]\ntime_ms = 1\naction = \"partition\"\ngroups = [[1, 2], [2]]\n");
        assert!(e.contains("node 2 is in more than one group"), "{e}");
    }
}
