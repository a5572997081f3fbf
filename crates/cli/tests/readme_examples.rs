//! The README's examples, run as written (issue 6: "`synod up` works as the
//! README says and `etcdctl --endpoints ... put/get/del` work against it";
//! issue 7: "the examples in the README work as written"). The commands come
//! from README.md itself, so editing the README changes what is tested.
//!
//! **Which blocks.** A fenced block preceded by `<!-- readme-test: NAME -->`
//! (alone on its line) is runnable as written. Every block in [`REQUIRED`]
//! must be marked, so dropping a marker fails the test instead of silently
//! testing less. The block named `sim` runs without a cluster; the others run
//! in README order against one cluster started as the README's first command
//! does (`synod up`), sharing it as a reader following the README would.
//!
//! **How a block is read.** Commands are split as `sh` would: a line ending
//! in `\` continues, and a quote left open continues over lines (the fencing
//! example's `sh -c '... <<EOF ... EOF'`). `# text` after a command, or a
//! comment line starting with `prints` right after it, says what it does:
//!
//! - `prints WORD` or `prints "TEXT"`: stdout contains it (the rest is prose);
//! - `exits N`: the command exits with N (otherwise it must exit 0);
//! - a comment in parentheses is prose; otherwise the comment, up to a
//!   ` (` that starts prose, names output lines separated by `, then `, each
//!   of which must be a whole stdout line, in that order. In such a line
//!   `...` matches anything, the README's example lease id
//!   `694d77aa9e38260f` any lease id, and `remaining(28s)` any count;
//! - `until Ctrl-C`: the command is started, the test waits until it printed
//!   what its comment says (or 2 s if it says nothing checkable), sends it
//!   SIGINT as Ctrl-C would, and expects exit 0;
//! - `in a second terminal`: it runs in the background while the block goes
//!   on (the test gives it its first line of output, or 2 s, to get going);
//!   at the end of the block it must have printed what its comment says,
//!   then it is interrupted;
//! - `one JSON`: stdout is one JSON object.
//!
//! **Substitutions** (the only differences from what a reader types; each
//! command is printed as run):
//!
//! - ports: `synod up` runs with `--base-port B` (a free block of ports) and
//!   `--data-dir` in a temporary directory, so every `127.0.0.1:P` with P in
//!   2379..=2409 (`synod up`'s default ports) becomes `127.0.0.1:B+(P-2379)`,
//!   in commands and expected output alike; a `synod` client command with no
//!   `--endpoints` (the default 127.0.0.1:2379, node 1) gets
//!   `--endpoints 127.0.0.1:B`;
//! - the working directory is a temporary one laid out like a checkout:
//!   `target/dist/synod` and `synod` on PATH are the binary under test
//!   (`$SYNOD` if set, e.g. the dist build; this crate's `synod` otherwise),
//!   `scenarios/` is the repository's, and `./nightly.sh` is a stand-in job
//!   that prints the `$ETCD_LOCK_KEY` and `$ETCD_LOCK_REV` it was given;
//! - `[--optional flags]` in brackets are dropped;
//! - `694d77aa9e38260f` in a command is the lease id the last
//!   `lease grant` printed;
//! - `kv compact N` first writes a key until the revision reaches N;
//! - `synod sim --seeds A..B` runs at most [`MAX_SIM_SEEDS`] seeds (CI runs
//!   the long sweeps verbatim in `.ci/run`);
//! - lines naming `etcdctl` or `curl` are skipped with a message when the
//!   tool is missing (`scripts/install-test-deps` installs them, as CI does).
//!
//! **Skipped** (listed in [`SKIPPED`], printed when met): commands that
//! change the cluster's membership (`crates/cli/tests/membership_cluster.rs`
//! runs that on real processes).
//!
//! Every wait is bounded, every process started here is in its own process
//! group and killed on drop, and all traffic stays on 127.0.0.1.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{free_port_block, on_path, status};

/// Blocks that must be marked runnable in the README.
const REQUIRED: [&str; 6] =
    ["quick-start", "client-reference", "endpoints", "config-watch", "fencing", "sim"];
/// Blocks that run without a cluster.
const NO_CLUSTER: [&str; 1] = ["sim"];
/// Commands (after substitution, by prefix) not run, and why.
const SKIPPED: [(&str, &str); 3] = [
    ("synod member add ", "changes membership (membership_cluster.rs runs it)"),
    ("synod member promote ", "needs the added member running (membership_cluster.rs)"),
    ("synod member remove ", "changes membership (membership_cluster.rs runs it)"),
];
/// The README's default client port (`synod up`'s node 1).
const README_BASE: u16 = 2379;
/// How many ports above it the README's examples use.
const README_PORT_SPAN: u16 = 31;
/// The lease id the README's examples show.
const README_LEASE: &str = "694d77aa9e38260f";
/// A longer seed range is shortened to this many seeds.
const MAX_SIM_SEEDS: u64 = 100;
/// Bound on one command in the foreground.
const COMMAND_WAIT: Duration = Duration::from_secs(60);
/// Bound on a simulator run.
const SIM_WAIT: Duration = Duration::from_secs(300);
/// Bound on a background command printing what its comment says.
const OUTPUT_WAIT: Duration = Duration::from_secs(20);
/// How long a background command with nothing to print gets to start. No
/// readiness signal exists for some (an `etcdctl watch` prints nothing
/// until an event), so this bounds process start and connection on a
/// loaded machine (CI runs this next to sweeps): 2 s was enough in every
/// run so far, 5 s leaves room.
const SETTLE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- reading

/// One runnable command of a block and what its comment says.
#[derive(Debug, Clone, PartialEq)]
struct Example {
    /// The command as written (continuation lines included).
    text: String,
    /// Its comments, joined.
    comment: String,
    /// README line (1-based) it starts on.
    line: usize,
}

/// A marked block.
#[derive(Debug)]
struct Block {
    name: String,
    line: usize,
    examples: Vec<Example>,
}

/// The marked blocks of `readme`, in order.
fn marked_blocks(readme: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(name) = lines[i]
            .trim()
            .strip_prefix("<!-- readme-test:")
            .and_then(|s| s.strip_suffix("-->"))
            .map(str::trim)
        else {
            i += 1;
            continue;
        };
        let marker = i + 1;
        i += 1;
        while i < lines.len() && lines[i].trim().is_empty() {
            i += 1;
        }
        if lines.get(i).map(|l| l.trim()) != Some("```sh") {
            return Err(format!(
                "README.md:{marker}: the marker must come right before a ```sh block"
            ));
        }
        let start = i + 1;
        i += 1;
        while i < lines.len() && lines[i].trim() != "```" {
            i += 1;
        }
        if i == lines.len() {
            return Err(format!("README.md:{marker}: the block is never closed"));
        }
        let examples = split_commands(&lines[start..i], start + 1)
            .map_err(|e| format!("README.md, block {name}: {e}"))?;
        blocks.push(Block { name: name.to_string(), line: marker, examples });
        i += 1;
    }
    Ok(blocks)
}

/// Splits a block's lines (the first is README line `first_line`) into
/// commands, as `sh` reads them: `\` continues a line, an open quote
/// continues over lines, `#` at the start of a word outside quotes starts a
/// comment.
fn split_commands(lines: &[&str], first_line: usize) -> Result<Vec<Example>, String> {
    let mut out: Vec<Example> = Vec::new();
    let mut current: Option<Example> = None;
    let mut quote: Option<char> = None;
    for (k, raw) in lines.iter().enumerate() {
        let line_no = first_line + k;
        if current.is_none() && raw.trim_start().starts_with('#') {
            let text = raw.trim_start().trim_start_matches('#').trim();
            // `prints ...` describes the command above; other comment
            // lines are prose.
            if text.starts_with("prints ")
                && let Some(last) = out.last_mut()
            {
                append_comment(&mut last.comment, text);
            }
            continue;
        }
        if current.is_none() && raw.trim().is_empty() {
            continue;
        }
        let (code, comment) = split_comment(raw, &mut quote);
        let ex = current.get_or_insert_with(|| Example {
            text: String::new(),
            comment: String::new(),
            line: line_no,
        });
        if !ex.text.is_empty() {
            ex.text.push('\n');
        }
        ex.text.push_str(code.trim_end());
        if let Some(c) = &comment {
            append_comment(&mut ex.comment, c);
        }
        let continued = quote.is_some() || (comment.is_none() && code.trim_end().ends_with('\\'));
        if !continued {
            out.extend(current.take());
        }
    }
    if current.is_some() || quote.is_some() {
        return Err("the last command is not finished (open quote or trailing \\)".into());
    }
    Ok(out)
}

fn append_comment(to: &mut String, text: &str) {
    if !to.is_empty() {
        to.push(' ');
    }
    to.push_str(text);
}

/// The code and trailing comment of one line; `quote` carries an open
/// quote from line to line.
fn split_comment(line: &str, quote: &mut Option<char>) -> (String, Option<String>) {
    let mut prev: Option<char> = None;
    for (at, ch) in line.char_indices() {
        match *quote {
            Some(q) if ch == q => *quote = None,
            Some(_) => {}
            None if ch == '\'' || ch == '"' => *quote = Some(ch),
            None if ch == '#' && prev.is_none_or(char::is_whitespace) => {
                return (line[..at].to_string(), Some(line[at + 1..].trim().to_string()));
            }
            None => {}
        }
        prev = Some(ch);
    }
    (line.to_string(), None)
}

/// What a command's comment says about it.
#[derive(Debug, Default, PartialEq)]
struct Expect {
    /// Whole stdout lines, in order (templates: see the module doc).
    lines: Vec<String>,
    /// Text stdout contains.
    contains: Option<String>,
    /// Expected exit code.
    exit_code: i32,
    /// Runs until Ctrl-C.
    until_ctrl_c: bool,
    /// Runs in the background while the block goes on.
    second_terminal: bool,
    /// Stdout is one JSON object.
    json: bool,
}

fn expectation(comment: &str) -> Expect {
    let c = comment.trim();
    let mut e = Expect {
        until_ctrl_c: c.contains("until Ctrl-C"),
        second_terminal: c.contains("in a second terminal"),
        json: c.contains("one JSON"),
        ..Expect::default()
    };
    if let Some(rest) = c.strip_prefix("prints ") {
        let text = match rest.strip_prefix('"') {
            Some(quoted) => quoted.split('"').next().unwrap_or_default(),
            None => rest.split_whitespace().next().unwrap_or_default(),
        };
        let text = text.trim_end_matches([',', '.', ':', ';']);
        e.contains = Some(text.split("...").next().unwrap_or_default().trim_end().to_string());
    } else if let Some(rest) = c.strip_prefix("exits ") {
        let code = rest.split(|ch: char| !ch.is_ascii_digit()).next().unwrap_or_default();
        e.exit_code = code.parse().unwrap_or(-1);
    } else if !c.is_empty() && !c.starts_with('(') {
        let output = c.split(" (").next().unwrap_or_default().trim();
        e.lines = output.split(", then ").map(|l| l.trim().to_string()).collect();
    }
    e
}

// ---------------------------------------------------------------- matching

#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    /// `...`
    Anything,
    /// The README's example lease id: 1 to 16 hex digits.
    LeaseId,
    /// A decimal count.
    Count,
}

fn pieces(template: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(ch) = rest.chars().next() {
        let special = if rest.starts_with("...") {
            Some((Piece::Anything, 3))
        } else if rest.starts_with(README_LEASE) {
            Some((Piece::LeaseId, README_LEASE.len()))
        } else if text.ends_with("remaining(") && ch.is_ascii_digit() {
            let n = rest.chars().take_while(char::is_ascii_digit).count();
            Some((Piece::Count, n))
        } else {
            None
        };
        match special {
            Some((piece, len)) => {
                if !text.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut text)));
                }
                out.push(piece);
                rest = &rest[len..];
            }
            None => {
                text.push(ch);
                rest = &rest[ch.len_utf8()..];
            }
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    out
}

/// Whether all of `line` matches `pieces`.
fn matches(pieces: &[Piece], line: &str) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return line.is_empty();
    };
    let run = |f: fn(char) -> bool, max: usize| {
        let n = line.chars().take_while(|c| f(*c)).count().min(max);
        (1..=n).rev().any(|k| matches(rest, &line[k..]))
    };
    match first {
        Piece::Text(t) => line.strip_prefix(t.as_str()).is_some_and(|r| matches(rest, r)),
        Piece::Anything => line
            .char_indices()
            .map(|(at, _)| at)
            .chain([line.len()])
            .any(|at| matches(rest, &line[at..])),
        Piece::LeaseId => run(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), 16),
        Piece::Count => run(|c| c.is_ascii_digit(), 20),
    }
}

/// Checks `stdout` (and the exit code, when the command has ended) against
/// `e`; the error says what differs.
fn check_output(e: &Expect, stdout: &str) -> Result<(), String> {
    let mut out_lines = stdout.lines().map(str::trim_end);
    for want in &e.lines {
        let p = pieces(want);
        if !out_lines.any(|l| matches(&p, l.trim_start())) {
            return Err(format!("no output line `{want}` (in order)"));
        }
    }
    if let Some(text) = &e.contains
        && !stdout.contains(text.as_str())
    {
        return Err(format!("the output does not contain `{text}`"));
    }
    if e.json {
        match serde_json::from_str::<serde_json::Value>(stdout) {
            Ok(v) if v.is_object() => {}
            _ => return Err("the output is not one JSON object".into()),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- running

/// A process group started here; killed (the whole group) on drop.
struct Group {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Group {
    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    /// Waits up to `bound` for the exit code (-1: killed by a signal).
    fn wait(&mut self, bound: Duration) -> Option<i32> {
        let deadline = Instant::now() + bound;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal("-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary under test: `$SYNOD` if set, else this crate's `synod`.
///
/// cargo runs a test in its package's directory (`crates/cli`), not where the
/// user typed the command, so a relative `$SYNOD` (`target/dist/synod`, as
/// the README names it) is taken from the repository's root, where the
/// README's commands run.
fn synod_binary() -> PathBuf {
    let Some(given) = std::env::var_os("SYNOD") else {
        return PathBuf::from(common::synod());
    };
    let given = PathBuf::from(given);
    let path = if given.is_absolute() { given.clone() } else { repo().join(&given) };
    std::fs::canonicalize(&path).unwrap_or_else(|e| {
        panic!(
            "$SYNOD={} names no file ({} read from the repository's root: {e})",
            given.display(),
            path.display()
        )
    })
}

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where commands run, and what they share.
struct Session {
    /// The working directory (see the module doc).
    work: tempfile::TempDir,
    /// `PATH` with the binary under test first.
    path: String,
    /// `synod up`'s `--base-port`, if a cluster runs.
    base_port: Option<u16>,
    /// `export ...` lines seen so far, run before every later command.
    exports: Vec<String>,
    /// The lease id the last `lease grant` printed.
    lease: Option<String>,
    /// Files for output, numbered.
    runs: usize,
    /// Commands started "in a second terminal", with their expectations.
    background: Vec<(Example, String, Expect, Group)>,
    /// What failed, with the command and its output.
    failures: Vec<String>,
}

impl Session {
    fn new() -> Session {
        let work = tempfile::tempdir().expect("tempdir");
        let bin = synod_binary();
        let dist = work.path().join("target/dist");
        std::fs::create_dir_all(&dist).expect("target/dist");
        std::os::unix::fs::symlink(&bin, dist.join("synod")).expect("target/dist/synod");
        std::fs::create_dir(work.path().join("bin")).expect("bin");
        std::os::unix::fs::symlink(&bin, work.path().join("bin/synod")).expect("bin/synod");
        std::os::unix::fs::symlink(repo().join("scenarios"), work.path().join("scenarios"))
            .expect("scenarios");
        let job = work.path().join("nightly.sh");
        std::fs::write(
            &job,
            "#!/bin/sh\necho \"nightly.sh: key=$ETCD_LOCK_KEY rev=$ETCD_LOCK_REV\"\n",
        )
        .expect("nightly.sh");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&job, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = format!(
            "{}:{}",
            work.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        eprintln!("readme_examples: binary under test {}", bin.display());
        Session {
            work,
            path,
            base_port: None,
            exports: Vec::new(),
            lease: None,
            runs: 0,
            background: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Starts `script` under `sh` in its own process group.
    fn spawn(&mut self, script: &str) -> Group {
        self.runs += 1;
        let out = self.work.path().join(format!("run{}.out", self.runs));
        let err = self.work.path().join(format!("run{}.err", self.runs));
        use std::os::unix::process::CommandExt;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(self.work.path())
            .env("PATH", &self.path)
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&err).expect("stderr file"))
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        Group { child, out, err }
    }

    /// Starts `synod up` on a free block of ports and waits for a leader.
    fn start_cluster(&mut self) -> Group {
        let base = free_port_block(README_PORT_SPAN);
        self.base_port = Some(base);
        let up = self.spawn(&format!("exec synod up --data-dir synod-data --base-port {base}"));
        let endpoints: Vec<String> =
            (0..3).map(|i| format!("127.0.0.1:{}", base + 10 * i)).collect();
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let leaders: Vec<Option<u64>> = runtime.block_on(async {
                let mut v = Vec::new();
                for e in &endpoints {
                    v.push(status(e).await.map(|s| s.leader));
                }
                v
            });
            if leaders[0].is_some_and(|l| l != 0) && leaders.iter().all(|l| *l == leaders[0]) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "synod up: no leader agreed: {leaders:?}\n{}\n{}",
                up.stdout(),
                up.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("readme_examples: synod up --base-port {base} is running:\n{}", up.stdout());
        up
    }

    /// The command as this test runs it (see the module doc), or why it
    /// is skipped.
    fn substitute(&self, text: &str) -> Result<String, String> {
        let mut s = drop_optional(text);
        if let Some((_, why)) = SKIPPED.iter().find(|(p, _)| s.trim_start().starts_with(p)) {
            return Err(format!("SKIPPED ({why})"));
        }
        if let Some(base) = self.base_port {
            s = map_ports(&s, base);
            s = add_default_endpoint(&s, base);
        }
        if let Some(id) = &self.lease {
            s = s.replace(README_LEASE, id);
        }
        s = shorten_seeds(&s);
        for tool in ["etcdctl", "curl"] {
            if words(&s).any(|w| w == tool) && on_path(tool).is_none() {
                return Err(format!(
                    "SKIPPED: {tool} is not on PATH (scripts/install-test-deps installs it)"
                ));
            }
        }
        Ok(s)
    }

    /// Runs one example and records what does not hold.
    fn run(&mut self, block: &str, ex: &Example) {
        let command = match self.substitute(&ex.text) {
            Ok(c) => c,
            Err(skip) => {
                eprintln!("README.md:{} [{block}] {skip}: {}", ex.line, ex.text);
                return;
            }
        };
        let mut expect = expectation(&ex.comment);
        if let Some(base) = self.base_port {
            expect.lines = expect.lines.iter().map(|l| map_ports(l, base)).collect();
        }
        eprintln!("README.md:{} [{block}] $ {command}", ex.line);
        if command.starts_with("export ") {
            self.exports.push(command);
            return;
        }
        if let Some(n) = compact_target(&command) {
            self.write_until_revision(n);
        }
        let prelude: String = self.exports.iter().map(|e| format!("{e}\n")).collect();
        let background = expect.until_ctrl_c || expect.second_terminal;
        let script = format!("{prelude}{}{command}", if background { "exec " } else { "" });
        let mut group = self.spawn(&script);
        if expect.second_terminal {
            wait_for(&group, |out| !out.is_empty(), SETTLE);
            if let Some(code) = group.child.try_wait().ok().flatten() {
                self.fail(ex, &command, &group, &format!("ended at once ({code})"));
            } else {
                self.background.push((ex.clone(), command, expect, group));
            }
            return;
        }
        let mut bound = Duration::from_secs(10);
        let code = if expect.until_ctrl_c {
            let wanted = !expect.lines.is_empty() || expect.contains.is_some();
            let wait = if wanted { OUTPUT_WAIT } else { SETTLE };
            // What the comment says it prints, or else its first line.
            wait_for(
                &group,
                |out| if wanted { check_output(&expect, out).is_ok() } else { !out.is_empty() },
                wait,
            );
            if let Ok(Some(s)) = group.child.try_wait() {
                self.fail(ex, &command, &group, &format!("ended before Ctrl-C ({s})"));
                return;
            }
            group.signal("-INT");
            group.wait(bound)
        } else {
            bound = if command.contains("synod sim") { SIM_WAIT } else { COMMAND_WAIT };
            group.wait(bound)
        };
        let stdout = group.stdout();
        let verdict = match code {
            None => Err(format!("did not end within {bound:?}")),
            Some(c) if c != expect.exit_code => {
                Err(format!("exited {c}, the README expects {}", expect.exit_code))
            }
            Some(_) => check_output(&expect, &stdout),
        };
        if let Err(why) = verdict {
            self.fail(ex, &command, &group, &why);
        }
        // `lease <id> granted with TTL(..)`: the id later commands use.
        if let Some(id) = stdout
            .lines()
            .find(|l| l.starts_with("lease ") && l.contains(" granted with TTL("))
            .and_then(|l| l.split_whitespace().nth(1))
            .filter(|_| words(&command).any(|w| w == "grant"))
        {
            self.lease = Some(id.to_string());
        }
        if command.contains("./nightly.sh") {
            let ok = stdout.lines().any(|l| {
                l.strip_prefix("nightly.sh: key=jobs/nightly/")
                    .and_then(|r| r.split_once(" rev="))
                    .is_some_and(|(id, rev)| {
                        !id.is_empty()
                            && id.chars().all(|c| c.is_ascii_hexdigit())
                            && rev.parse::<u64>().is_ok_and(|r| r > 0)
                    })
            });
            if !ok {
                self.fail(
                    ex,
                    &command,
                    &group,
                    "the job did not get $ETCD_LOCK_KEY and $ETCD_LOCK_REV",
                );
            }
        }
    }

    /// Ends the block: every background command must have printed what
    /// its comment says; then it is interrupted.
    fn end_block(&mut self) {
        for (ex, command, expect, mut group) in std::mem::take(&mut self.background) {
            wait_for(&group, |out| check_output(&expect, out).is_ok(), OUTPUT_WAIT);
            let early = group.child.try_wait().ok().flatten();
            group.signal("-INT");
            let _ = group.wait(Duration::from_secs(5));
            let verdict = match early {
                Some(s) if !s.success() => Err(format!("ended with {s} before it was stopped")),
                _ => check_output(&expect, &group.stdout()),
            };
            if let Err(why) = verdict {
                self.fail(&ex, &command, &group, &why);
            }
        }
    }

    /// Puts `readme-test/pad` until the store's revision is at least `n`.
    fn write_until_revision(&mut self, n: i64) {
        let Some(base) = self.base_port else { return };
        let endpoint = format!("127.0.0.1:{base}");
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        runtime.block_on(async {
            for _ in 0..n {
                let rev = common::put(&endpoint, "readme-test/pad", "x").await.expect("pad put");
                if rev >= n {
                    break;
                }
            }
        });
    }

    fn fail(&mut self, ex: &Example, command: &str, group: &Group, why: &str) {
        let msg = format!(
            "README.md:{}: `{command}`: {why}\n  README comment: {}\n  stdout:\n{}\n  stderr:\n{}",
            ex.line,
            ex.comment,
            group.stdout(),
            group.stderr()
        );
        eprintln!("FAILED {msg}");
        self.failures.push(msg);
    }
}

/// Waits up to `bound` until the group's stdout passes `done`.
fn wait_for(group: &Group, done: impl Fn(&str) -> bool, bound: Duration) {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline && !done(&group.stdout()) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c.is_whitespace() || c == '|' || c == ';' || c == '\'')
}

/// `127.0.0.1:P` for P in the README's range becomes the same offset from
/// `base`.
fn map_ports(s: &str, base: u16) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find("127.0.0.1:") {
        let (head, tail) = rest.split_at(at + "127.0.0.1:".len());
        out.push_str(head);
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        rest = &tail[digits.len()..];
        match digits.parse::<u16>() {
            Ok(p) if (README_BASE..README_BASE + README_PORT_SPAN).contains(&p) => {
                out.push_str(&(base + (p - README_BASE)).to_string());
            }
            _ => out.push_str(&digits),
        }
    }
    out.push_str(rest);
    out
}

/// A `synod` client command without `--endpoints` talks to 127.0.0.1:2379;
/// here that is node 1 at `base`.
fn add_default_endpoint(s: &str, base: u16) -> String {
    if s.contains("--endpoints") {
        return s.to_string();
    }
    for cmd in ["kv", "lease", "watch", "lock", "elect", "member"] {
        for prog in ["target/dist/synod", "synod"] {
            let call = format!("{prog} {cmd} ");
            if s.trim_start().starts_with(&call) {
                return s.replacen(&call, &format!("{call}--endpoints 127.0.0.1:{base} "), 1);
            }
        }
    }
    s.to_string()
}

/// Drops `[--optional ...]` groups (outside quotes only matter little here:
/// the README's quoted arguments hold none).
fn drop_optional(s: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for ch in s.chars() {
        match ch {
            '[' if depth > 0 || out.ends_with(' ') => depth += 1,
            ']' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            _ => out.push(ch),
        }
    }
    let collapsed: Vec<&str> = out.split(' ').filter(|w| !w.is_empty()).collect();
    if out.contains('\n') { out } else { collapsed.join(" ") }
}

/// `--seeds A..B` with more than [`MAX_SIM_SEEDS`] seeds, shortened.
fn shorten_seeds(s: &str) -> String {
    let Some(at) = s.find("--seeds ") else { return s.to_string() };
    let tail = &s[at + "--seeds ".len()..];
    let range = tail.split_whitespace().next().unwrap_or_default();
    let Some((a, b)) = range.split_once("..") else { return s.to_string() };
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) if b >= a && b - a + 1 > MAX_SIM_SEEDS => {
            s.replacen(range, &format!("{a}..{}", a + MAX_SIM_SEEDS - 1), 1)
        }
        _ => s.to_string(),
    }
}

/// N of a `kv compact N`.
fn compact_target(s: &str) -> Option<i64> {
    let mut w = s.split_whitespace().skip_while(|w| *w != "kv").skip(1);
    let mut operands = std::iter::from_fn(|| {
        let word = w.next()?;
        if word == "--endpoints" {
            w.next();
            return Some(None);
        }
        Some((!word.starts_with("--")).then_some(word))
    })
    .flatten();
    (operands.next()? == "compact").then_some(())?;
    operands.next()?.parse().ok()
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).expect("README.md")
}

/// Runs `blocks` in one session; panics with every failure.
fn run_blocks(blocks: &[&Block], with_cluster: bool) {
    let mut session = Session::new();
    let _up = with_cluster.then(|| session.start_cluster());
    for block in blocks {
        eprintln!("README.md:{}: block {}", block.line, block.name);
        for ex in &block.examples {
            session.run(&block.name, ex);
        }
        session.end_block();
    }
    assert!(
        session.failures.is_empty(),
        "{} README example(s) do not work as written:\n\n{}",
        session.failures.len(),
        session.failures.join("\n\n")
    );
}

fn required_blocks() -> Vec<Block> {
    let blocks = marked_blocks(&readme()).unwrap_or_else(|e| panic!("{e}"));
    for name in REQUIRED {
        assert!(
            blocks.iter().any(|b| b.name == name),
            "README.md has no block marked `<!-- readme-test: {name} -->`"
        );
    }
    blocks
}

// ---------------------------------------------------------------- tests

#[test]
fn the_readme_examples_work_against_synod_up() {
    let blocks = required_blocks();
    let cluster: Vec<&Block> =
        blocks.iter().filter(|b| !NO_CLUSTER.contains(&b.name.as_str())).collect();
    run_blocks(&cluster, true);
}

#[test]
fn the_readme_sim_examples_work() {
    let blocks = required_blocks();
    let sim: Vec<&Block> =
        blocks.iter().filter(|b| NO_CLUSTER.contains(&b.name.as_str())).collect();
    run_blocks(&sim, false);
}

#[test]
fn commands_split_as_sh_reads_them() {
    let block = [
        "synod kv put a b   # OK",
        "etcdctl lock x -- sh -c 'etcdctl txn <<EOF",
        "mod(\"f\") < \"$REV\" # not a comment",
        "EOF'",
        "# prints SUCCESS. Then prose:",
        "curl -s http://h/v3 -X POST \\",
        "  -d '{\"k\":\"v\"}'   # (prose)",
        "# a prose line",
    ];
    let ex = split_commands(&block, 10).expect("splits");
    assert_eq!(ex.len(), 3, "{ex:?}");
    assert_eq!(
        (ex[0].text.as_str(), ex[0].comment.as_str(), ex[0].line),
        ("synod kv put a b", "OK", 10)
    );
    assert!(ex[1].text.ends_with("# not a comment\nEOF'"), "{:?}", ex[1].text);
    assert_eq!(ex[1].comment, "prints SUCCESS. Then prose:");
    assert_eq!(ex[2].comment, "(prose)");
    assert!(split_commands(&["echo 'open"], 1).is_err(), "an open quote is refused");
}

#[test]
fn comments_become_checks_that_can_fail() {
    let e = expectation("... granted with TTL(30s), remaining(28s), attached keys([k])");
    assert!(
        check_output(&e, "lease 0abc granted with TTL(30s), remaining(29s), attached keys([k])\n")
            .is_ok()
    );
    assert!(
        check_output(&e, "lease 0abc granted with TTL(30s), remaining(29s), attached keys([])\n")
            .is_err()
    );
    let e = expectation("lease 694d77aa9e38260f granted with TTL(30s)");
    assert!(check_output(&e, "lease 1d2f granted with TTL(30s)\n").is_ok());
    assert!(check_output(&e, "lease 1d2f granted with TTL(60s)\n").is_err());
    let e = expectation("k, then v (prose)");
    assert_eq!(e.lines, ["k", "v"]);
    assert!(check_output(&e, "k\nv\n").is_ok());
    assert!(check_output(&e, "v\nk\n").is_err(), "order counts");
    let e = expectation("prints FAILURE, and prose");
    assert_eq!(e.contains.as_deref(), Some("FAILURE"));
    assert!(check_output(&e, "SUCCESS\n").is_err());
    assert_eq!(expectation("exits 1: caught").exit_code, 1);
    assert_eq!(expectation("(prose only)"), Expect::default());
    let e = expectation("(a JSON thing: one JSON summary object)");
    assert!(check_output(&e, "{\"a\":1}").is_ok());
    assert!(check_output(&e, "{\"a\":1}\n{\"b\":2}").is_err());
}

#[test]
fn substitutions_map_ports_optional_flags_and_seeds() {
    assert_eq!(
        map_ports(
            "--endpoints 127.0.0.1:2379,127.0.0.1:2399 http://127.0.0.1:2380/x 127.0.0.1:8080",
            15000
        ),
        "--endpoints 127.0.0.1:15000,127.0.0.1:15020 http://127.0.0.1:15001/x 127.0.0.1:8080"
    );
    assert_eq!(
        add_default_endpoint("synod lock jobs -- ./x.sh", 15000),
        "synod lock --endpoints 127.0.0.1:15000 jobs -- ./x.sh"
    );
    assert_eq!(drop_optional("synod kv put k v [--lease ID] [--prev-kv]"), "synod kv put k v");
    assert_eq!(drop_optional("synod kv get k [--prefix|--from-key] [--rev N]"), "synod kv get k");
    assert_eq!(
        shorten_seeds("sim --seeds 1..1000 --faults all"),
        "sim --seeds 1..100 --faults all"
    );
    assert_eq!(shorten_seeds("sim --seeds 1..50"), "sim --seeds 1..50");
    assert_eq!(compact_target("synod kv --endpoints 127.0.0.1:1 compact 42"), Some(42));
    assert_eq!(compact_target("synod kv put compact 42"), None);
}
