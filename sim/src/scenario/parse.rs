//! Scenario files: YAML read with serde_yaml into strings, then every step's text parsed with the
//! line it is on, so a mistake is reported as `file:line: what was wrong: expected …` before
//! anything runs. (serde_yaml places errors of custom types at the enclosing list, so step texts
//! are parsed in a second pass that knows their lines.)

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::cli::{parse_command, Command};
use super::expect::Timed;
use super::fault::{Fault, Target};

/// Why a scenario file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Parse { file: String, line: usize, message: String },
}

/// `30s`, `500ms`, `2m`, `1.5s`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("invalid duration {text:?}: expected a number and ms, s, m or h"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("invalid duration {text:?}: expected a number and ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// A `run:` command, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Run(pub Command);

impl std::str::FromStr for Run {
    type Err = String;
    fn from_str(text: &str) -> Result<Run, String> {
        let text = text.trim();
        let text = text.strip_prefix("docker ").unwrap_or(text);
        parse_command(text).map(Run)
    }
}

/// How many managers and workers to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    pub managers: usize,
    #[serde(default)]
    pub workers: usize,
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A CLI command; `expect_error` = it must fail with a message containing that text,
    /// `expect_output` = its (JSON) answer must contain that text; `on` = sent to that node's
    /// control API only (`shoal -H`), instead of to the leader or any manager that answers.
    Run {
        command: Box<Command>,
        text: String,
        expect_error: Option<String>,
        expect_output: Option<String>,
        on: Option<Target>,
    },
    Fault(Fault),
    Wait(Duration),
    Expect(Timed),
    /// Start or stop a simulated client (`client: start load1 to manager-1:8080 rate 20/s`).
    Client(ClientStep),
}

/// A `client:` step.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientStep {
    /// `start NAME to HOST:PORT [rate N/s] [from NODE] [keepalive]`
    Start(crate::client::ClientSpec),
    /// `stop NAME`
    Stop(String),
}

/// The host outside the cluster that clients run on unless a step names a node.
pub const CLIENT_HOST: &str = "client";

const CLIENT_FORM: &str = "start NAME to HOST:PORT [rate N/s] [from NODE [network NET]] [keepalive]` or `stop NAME";

impl std::str::FromStr for ClientStep {
    type Err = String;

    fn from_str(text: &str) -> Result<ClientStep, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let usage = || format!("client step {text:?}: expected `{CLIENT_FORM}`");
        match words.as_slice() {
            ["stop", name] => Ok(ClientStep::Stop(name.to_string())),
            ["start", name, "to", target, rest @ ..] => {
                let (host, port) = target.rsplit_once(':').unwrap_or(("", ""));
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(format!("client step {text:?}: target {target:?} is not HOST:PORT"));
                }
                let mut spec = crate::client::ClientSpec {
                    name: name.to_string(),
                    target: target.to_string(),
                    from: CLIENT_HOST.to_string(),
                    rate: 10.0,
                    keepalive: false,
                    network: None,
                };
                let mut at = 0;
                while at < rest.len() {
                    match (rest[at], rest.get(at + 1)) {
                        ("rate", Some(rate)) => {
                            let number = rate.strip_suffix("/s").unwrap_or(rate);
                            spec.rate = number
                                .parse::<f64>()
                                .ok()
                                .filter(|r| *r > 0.0 && *r <= 10_000.0)
                                .ok_or_else(|| format!("client step {text:?}: rate {rate:?} is not a number of requests per second between 0 and 10000, like 20/s"))?;
                            at += 2;
                        }
                        ("from", Some(node)) => {
                            spec.from = node.to_string();
                            at += 2;
                        }
                        ("network", Some(network)) => {
                            spec.network = Some(network.to_string());
                            at += 2;
                        }
                        ("keepalive", _) => {
                            spec.keepalive = true;
                            at += 1;
                        }
                        _ => return Err(usage()),
                    }
                }
                if spec.network.is_some() && spec.from == CLIENT_HOST {
                    return Err(format!("client step {text:?}: a client on a network runs on a node: add `from NODE`"));
                }
                Ok(ClientStep::Start(spec))
            }
            _ => Err(usage()),
        }
    }
}

impl std::fmt::Display for ClientStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientStep::Stop(name) => write!(f, "stop {name}"),
            ClientStep::Start(spec) => {
                write!(f, "start {} to {} rate {}/s", spec.name, spec.target, spec.rate)?;
                if spec.from != CLIENT_HOST {
                    write!(f, " from {}", spec.from)?;
                }
                if let Some(network) = &spec.network {
                    write!(f, " network {network}")?;
                }
                if spec.keepalive {
                    f.write_str(" keepalive")?;
                }
                Ok(())
            }
        }
    }
}

/// One step: an optional wait, then an action.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub after: Duration,
    pub action: Action,
    /// `may_fail: true` (on a `run:` or `fault:` step): a failure is noted in the trace and the
    /// run goes on — for writes sent while faults may keep the cluster from answering (generated
    /// scenarios use it; the liveness phase still requires every service to converge).
    pub may_fail: bool,
    /// The YAML line the step starts on (for messages).
    pub line: usize,
}

/// A step as written: strings, parsed in a second pass that knows the step's line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    after: Option<String>,
    run: Option<String>,
    on: Option<String>,
    expect_error: Option<String>,
    expect_output: Option<String>,
    fault: Option<String>,
    wait: Option<String>,
    expect: Option<String>,
    client: Option<String>,
    may_fail: Option<bool>,
}

/// A top-level expectation.
#[derive(Debug, Clone, PartialEq)]
pub enum Final {
    /// Checked in the liveness phase, after every fault is healed.
    Eventually(Timed),
    /// A safety invariant (checked on every poll of the run, whatever the file says; naming it
    /// documents that the scenario is about it).
    Always(String),
}

/// The invariants `always:` may name.
pub const INVARIANTS: &[&str] =
    &["no-running-task-on-drained-node", "replicas-bound", "task-state-forward", "client-requests", "linearizable"];

/// A bug planted on purpose (`planted_bug:`), to show a checker finds it. Simulator only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    /// `stale-leader-reads`: a manager that believes it leads answers reads from its own store
    /// without confirming with a quorum that it still does — a deposed leader serves stale reads.
    StaleLeaderReads,
}

impl PlantedBug {
    pub const ALL: &[(&str, PlantedBug)] = &[("stale-leader-reads", PlantedBug::StaleLeaderReads)];

    pub fn name(self) -> &'static str {
        PlantedBug::ALL.iter().find(|(_, bug)| *bug == self).map(|(name, _)| *name).unwrap_or_default()
    }
}

impl std::str::FromStr for PlantedBug {
    type Err = String;
    fn from_str(text: &str) -> Result<PlantedBug, String> {
        PlantedBug::ALL.iter().find(|(name, _)| *name == text.trim()).map(|(_, bug)| *bug).ok_or_else(|| {
            let names: Vec<&str> = PlantedBug::ALL.iter().map(|(name, _)| *name).collect();
            format!("unknown planted bug {text:?}: expected {}", names.join(", "))
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFinal {
    eventually: Option<String>,
    always: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    cluster: Shape,
    #[serde(default)]
    steps: Vec<RawStep>,
    #[serde(default)]
    expect: Vec<RawFinal>,
    converge: Option<bool>,
    converge_within: Option<String>,
    mesh_drain: Option<bool>,
    control_workload: Option<bool>,
    planted_bug: Option<String>,
}

/// A whole scenario file.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub cluster: Shape,
    pub steps: Vec<Step>,
    pub expect: Vec<Final>,
    /// Whether the liveness phase also requires every service to converge to its spec (off for
    /// scenarios that leave a service deliberately unconverged, e.g. a paused failed update).
    pub converge: bool,
    /// Bound for that convergence.
    pub converge_within: Duration,
    /// Whether tasks are drained from the data plane before they stop (`mesh_drain: false` turns
    /// it off, to show what draining saves).
    pub mesh_drain: bool,
    /// `control_workload: true`: all through the run, a client on the client host sends reads
    /// (`service ls`, `network ls`, `node ls`) and writes of a node label to each host in turn, 4
    /// calls per second, so the linearizability check has concurrent reads and writes to check
    /// (generated fuzz cases have it; [`crate::cluster::SimCluster::start_workload`]).
    pub control_workload: bool,
    /// `planted_bug: NAME`: run with a bug planted on purpose (see [`PlantedBug`]).
    pub planted_bug: Option<PlantedBug>,
    /// The file it came from.
    pub file: String,
}

/// serde_yaml's message without its ` at line L column C` suffix and `path: ` prefix (the
/// location is printed as `file:line:` instead).
fn bare_message(err: &serde_yaml::Error) -> String {
    let mut message = err.to_string();
    if let Some(cut) = message.rfind(" at line ") {
        message.truncate(cut);
    }
    // `steps[3]: unknown field …` → `unknown field …`
    if let Some((path, rest)) = message.split_once(": ") {
        if !path.contains(' ') && (path.contains('[') || path.contains('.') || path == "name" || path == "cluster") {
            return rest.to_string();
        }
    }
    message
}

/// The lines (1-based) the items of the top-level list `key:` start on.
fn item_lines(text: &str, key: &str) -> Vec<usize> {
    let header = format!("{key}:");
    let mut lines = Vec::new();
    let mut inside = false;
    let mut item_indent = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if indent == 0 && !trimmed.starts_with("- ") {
            inside = trimmed.starts_with(&header);
            item_indent = None;
            continue;
        }
        if inside && trimmed.starts_with("- ") && item_indent.is_none_or(|at| at == indent) {
            item_indent = Some(indent);
            lines.push(i + 1);
        }
    }
    lines
}

/// The line of `key:` in the list item that starts on `start` (1-based), or `start`.
fn key_line(text: &str, start: usize, key: &str) -> usize {
    let prefix = format!("{key}:");
    text.lines()
        .enumerate()
        .skip(start.saturating_sub(1))
        .take_while(|(i, line)| *i + 1 == start || !line.trim_start().starts_with("- "))
        .find(|(_, line)| line.trim_start().trim_start_matches("- ").starts_with(&prefix))
        .map(|(i, _)| i + 1)
        .unwrap_or(start)
}

impl Scenario {
    /// Parse scenario text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario = serde_yaml::from_str(text).map_err(|err| ScenarioError::Parse {
            file: file.to_string(),
            line: err.location().map(|l| l.line()).unwrap_or(1),
            message: bare_message(&err),
        })?;
        let error = |line: usize, message: String| ScenarioError::Parse { file: file.to_string(), line, message };
        if raw.cluster.managers == 0 {
            return Err(error(key_line(text, 1, "cluster"), "cluster needs at least one manager".into()));
        }
        let step_lines = item_lines(text, "steps");
        let mut steps = Vec::with_capacity(raw.steps.len());
        for (i, raw_step) in raw.steps.into_iter().enumerate() {
            let line = step_lines.get(i).copied().unwrap_or(1);
            let step = parse_step(raw_step, line)
                .map_err(|(key, message)| error(key.map(|k| key_line(text, line, k)).unwrap_or(line), message))?;
            steps.push(step);
        }
        let final_lines = item_lines(text, "expect");
        let mut expect = Vec::with_capacity(raw.expect.len());
        for (i, raw_final) in raw.expect.into_iter().enumerate() {
            let line = final_lines.get(i).copied().unwrap_or(1);
            let item = match (raw_final.eventually, raw_final.always) {
                (Some(text), None) => Final::Eventually(text.parse().map_err(|m| error(line, m))?),
                (None, Some(name)) if INVARIANTS.contains(&name.as_str()) => Final::Always(name),
                (None, Some(name)) => {
                    return Err(error(line, format!("unknown invariant {name:?}: expected {}", INVARIANTS.join(", "))))
                }
                _ => {
                    return Err(error(
                        line,
                        "a top-level expectation is either `eventually: … within T` or `always: INVARIANT`".into(),
                    ))
                }
            };
            expect.push(item);
        }
        let converge_within = match raw.converge_within {
            Some(t) => parse_duration(&t).map_err(|m| error(key_line(text, 1, "converge_within"), m))?,
            None => Duration::from_secs(60),
        };
        let planted_bug = match raw.planted_bug {
            Some(name) => Some(name.parse().map_err(|m| error(key_line(text, 1, "planted_bug"), m))?),
            None => None,
        };
        Ok(Scenario {
            name: raw.name,
            cluster: raw.cluster,
            steps,
            expect,
            converge: raw.converge.unwrap_or(true),
            converge_within,
            mesh_drain: raw.mesh_drain.unwrap_or(true),
            control_workload: raw.control_workload.unwrap_or(false),
            planted_bug,
            file: file.to_string(),
        })
    }

    /// Read and parse a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ScenarioError::Read { file: file.clone(), source })?;
        let scenario = Scenario::parse(&text, &file)?;
        super::stack::check_compose_files(&scenario)?;
        Ok(scenario)
    }
}

/// Parse one step; an error names the key it is about (for its line) and what was wrong.
fn parse_step(raw: RawStep, line: usize) -> Result<Step, (Option<&'static str>, String)> {
    fn field<T>(
        key: &'static str,
        text: &Option<String>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, (Option<&'static str>, String)> {
        text.as_deref().map(|t| parse(t).map_err(|m| (Some(key), m))).transpose()
    }
    let after = field("after", &raw.after, parse_duration)?.unwrap_or_default();
    let mut actions = Vec::new();
    if let Some(Run(command)) = field("run", &raw.run, str::parse::<Run>)? {
        let text = raw.run.clone().unwrap_or_default();
        let on = field("on", &raw.on, Target::parse)?;
        actions.push(Action::Run {
            command: Box::new(command),
            text,
            expect_error: raw.expect_error,
            expect_output: raw.expect_output,
            on,
        });
    } else if raw.expect_error.is_some() || raw.expect_output.is_some() || raw.on.is_some() {
        return Err((None, "expect_error/expect_output/on belong to a `run:` step".into()));
    }
    if let Some(fault) = field("fault", &raw.fault, str::parse::<Fault>)? {
        actions.push(Action::Fault(fault));
    }
    if let Some(d) = field("wait", &raw.wait, parse_duration)? {
        actions.push(Action::Wait(d));
    }
    if let Some(timed) = field("expect", &raw.expect, str::parse::<Timed>)? {
        actions.push(Action::Expect(timed));
    }
    if let Some(client) = field("client", &raw.client, str::parse::<ClientStep>)? {
        actions.push(Action::Client(client));
    }
    let may_fail = raw.may_fail.unwrap_or(false);
    if may_fail && !matches!(actions.as_slice(), [Action::Run { .. } | Action::Fault(_)]) {
        return Err((Some("may_fail"), "may_fail belongs to a `run:` or `fault:` step".into()));
    }
    match actions.len() {
        1 => Ok(Step { after, action: actions.remove(0), line, may_fail }),
        0 if raw.after.is_some() => Ok(Step { after, action: Action::Wait(Duration::ZERO), line, may_fail }),
        0 => Err((None, "a step needs one of run, fault, wait, expect, client".into())),
        _ => Err((
            None,
            "a step does one thing: run, fault, wait, expect or client (split it into several steps)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: "rolling update: leader crash (M=3, W=2)"
cluster: { managers: 3, workers: 2 }
steps:
  - run: service create --name web --replicas 4 nginx:1.25
  - expect: service web running 4 within 30s
  - run: service update --image nginx:1.26 web
  - after: 2s
    fault: crash leader
  - wait: 5s
  - run: service rm nope
    expect_error: "not found"
expect:
  - eventually: service web running 4 image nginx:1.26 within 120s
  - always: no-running-task-on-drained-node
"#;

    #[test]
    fn parses_a_scenario() {
        let s = Scenario::parse(GOOD, "x.yaml").unwrap();
        assert_eq!(s.cluster, Shape { managers: 3, workers: 2 });
        assert_eq!(s.steps.len(), 6);
        assert_eq!(s.steps[3].after, Duration::from_secs(2));
        assert_eq!(s.steps[3].line, 8);
        assert!(matches!(s.steps[3].action, Action::Fault(Fault::Crash(_))));
        assert_eq!(s.expect.len(), 2);
        assert!(s.converge);
    }

    #[test]
    fn errors_name_file_and_line() {
        let bad = GOOD.replace("crash leader", "crsh leader");
        let err = Scenario::parse(&bad, "scenarios/x.yaml").unwrap_err().to_string();
        assert_eq!(
            err,
            "scenarios/x.yaml:9: unknown fault \"crsh\": expected crash, restart, leave, partition, heal, link, container, image, disk, second daemon"
        );
        let bad = GOOD.replace("--replicas 4 nginx", "--replicas four nginx");
        let err = Scenario::parse(&bad, "y.yaml").unwrap_err().to_string();
        assert!(err.starts_with("y.yaml:5: --replicas wants a whole number"), "{err}");
        let bad = GOOD.replace("always: no-running-task-on-drained-node", "always: no-such-thing");
        let err = Scenario::parse(&bad, "z.yaml").unwrap_err().to_string();
        assert!(err.starts_with("z.yaml:15: unknown invariant"), "{err}");
    }

    #[test]
    fn client_steps() {
        let start: ClientStep = "start load1 to manager-1:8080 rate 20/s from worker-2 keepalive".parse().unwrap();
        let ClientStep::Start(spec) = &start else { panic!("{start:?}") };
        assert_eq!(
            (spec.target.as_str(), spec.from.as_str(), spec.rate, spec.keepalive),
            ("manager-1:8080", "worker-2", 20.0, true)
        );
        assert_eq!(start.to_string().parse::<ClientStep>(), Ok(start.clone()));
        assert_eq!("stop load1".parse(), Ok(ClientStep::Stop("load1".into())));
        let text =
            "name: x\ncluster: { managers: 1 }\nsteps:\n  - run: info\n  - client: start a to manager-1 rate 5/s\n";
        let err = Scenario::parse(text, "c.yaml").unwrap_err().to_string();
        assert!(err.starts_with("c.yaml:5: client step") && err.contains("is not HOST:PORT"), "{err}");
        let err = "start a to m:80 rate fast".parse::<ClientStep>().unwrap_err();
        assert!(err.contains("rate \"fast\""), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
