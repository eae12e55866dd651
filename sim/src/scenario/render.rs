//! Scenarios back to the YAML the parser reads: [`render`] is the inverse of [`Scenario::parse`]
//! (up to step line numbers and the file name), so a generated scenario — e.g. a shrunk fuzz
//! failure — can be written out as a file a person reads and `shoal-sim run` replays.
//!
//! Steps are written in the hand-written files' style (`- run: …`, `  after: 2s`); every scalar
//! goes through serde_yaml, so quoting is whatever YAML needs. `run:` steps keep the text they were
//! parsed from; faults and expectations are rendered from their values with the same words the
//! parsers accept.

use std::fmt::{self, Display, Formatter, Write as _};
use std::time::Duration;

use super::expect::Timed;
use super::fault::{Fault, ImageFault, Side, Target};
use super::parse::{Action, Final, Scenario};

/// A duration as the parser reads it: whole seconds as `5s`, anything else in milliseconds
/// (sub-millisecond parts are dropped; generated scenarios never use them).
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn list(f: &mut Formatter<'_>, targets: &[Target]) -> fmt::Result {
    f.write_str("[")?;
    for (i, t) in targets.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{t}")?;
    }
    f.write_str("]")
}

impl Display for Side {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Side::Rest => f.write_str("rest"),
            Side::Hosts(hosts) => list(f, hosts),
        }
    }
}

impl Display for ImageFault {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            ImageFault::SlowStart(d) => write!(f, "slow-start {}", duration(*d)),
            ImageFault::CrashAfter { after, exit_code } => {
                write!(f, "crash-after {} exit {exit_code}", duration(*after))
            }
            ImageFault::PullFails => f.write_str("pull-fails"),
            ImageFault::Exposes(ports) => {
                let ports: Vec<String> = ports.iter().map(|(proto, port)| format!("{port}/{proto}")).collect();
                write!(f, "exposes {}", ports.join(","))
            }
            ImageFault::Listens(ports) => {
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                write!(f, "listens {}", ports.join(","))
            }
            ImageFault::AnswersAfter(d) => write!(f, "answers-after {}", duration(*d)),
            ImageFault::ExitsOnSigterm => f.write_str("exits-on-sigterm"),
            ImageFault::Unhealthy => f.write_str("unhealthy"),
        }
    }
}

/// The `fault:` words that parse back to this fault.
impl Display for Fault {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Crash(t) => write!(f, "crash {t}"),
            Fault::Restart(t) => write!(f, "restart {t}"),
            Fault::Leave { target, force } => write!(f, "leave {target}{}", if *force { " -f" } else { "" }),
            Fault::Partition { side, other, one_way, duration: d } => {
                f.write_str("partition ")?;
                list(f, side)?;
                write!(f, " from {other}")?;
                if *one_way {
                    f.write_str(" one-way")?;
                }
                if let Some(d) = d {
                    write!(f, " for {}", duration(*d))?;
                }
                Ok(())
            }
            Fault::Heal => f.write_str("heal"),
            Fault::Link { a, b, delay_min, delay_max, loss } => {
                write!(f, "link {a} {b} delay {}", duration(*delay_min))?;
                if delay_max != delay_min {
                    write!(f, "..{}", duration(*delay_max))?;
                }
                write!(f, " loss {loss}")
            }
            Fault::ContainerRemove { service, slot } => write!(f, "container remove {service} {slot}"),
            Fault::ContainerUnhealthy { service, slot } => write!(f, "container unhealthy {service} {slot}"),
            Fault::Image { image, fault } => write!(f, "image {image} {fault}"),
            Fault::DiskFailWrites { target, duration: d } => {
                write!(f, "disk {target} fail-writes")?;
                if let Some(d) = d {
                    write!(f, " for {}", duration(*d))?;
                }
                Ok(())
            }
            Fault::DiskHeal(target) => write!(f, "disk {target} heal"),
            Fault::SecondDaemon(target) => write!(f, "second daemon on {target}"),
        }
    }
}

/// `<expectation> within 30s`.
impl Display for Timed {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} within {}", self.expectation, duration(self.within))
    }
}

/// A YAML scalar for `text` (plain when YAML allows it, quoted otherwise).
fn scalar(text: &str) -> String {
    serde_yaml::to_string(text).map(|s| s.trim_end().to_string()).unwrap_or_else(|_| format!("{text:?}"))
}

/// The scenario as a YAML file `Scenario::parse` reads back to an equal scenario (except step
/// lines and the file name). `header` lines become `# ` comments at the top.
pub fn render(scenario: &Scenario, header: &[String]) -> String {
    let mut out = String::new();
    for line in header {
        for part in line.lines() {
            let _ = writeln!(out, "{}", format!("# {part}").trim_end());
        }
    }
    let _ = writeln!(out, "name: {}", scalar(&scenario.name));
    let _ =
        writeln!(out, "cluster: {{ managers: {}, workers: {} }}", scenario.cluster.managers, scenario.cluster.workers);
    if !scenario.converge {
        out.push_str("converge: false\n");
    }
    if !scenario.mesh_drain {
        out.push_str("mesh_drain: false\n");
    }
    if scenario.converge_within != Duration::from_secs(60) {
        let _ = writeln!(out, "converge_within: {}", duration(scenario.converge_within));
    }
    if scenario.control_workload {
        out.push_str("control_workload: true\n");
    }
    if let Some(bug) = scenario.planted_bug {
        let _ = writeln!(out, "planted_bug: {}", bug.name());
    }
    if !scenario.steps.is_empty() {
        out.push_str("steps:\n");
    }
    for step in &scenario.steps {
        let mut keys: Vec<(&str, String)> = Vec::new();
        if !step.after.is_zero() {
            keys.push(("after", duration(step.after)));
        }
        match &step.action {
            Action::Run { text, expect_error, expect_output, on, .. } => {
                keys.push(("run", text.clone()));
                if let Some(on) = on {
                    keys.push(("on", on.to_string()));
                }
                if let Some(e) = expect_error {
                    keys.push(("expect_error", e.clone()));
                }
                if let Some(o) = expect_output {
                    keys.push(("expect_output", o.clone()));
                }
            }
            Action::Fault(fault) => keys.push(("fault", fault.to_string())),
            // `after: T` alone parses as a zero wait; a zero wait with no `after` needs its key.
            Action::Wait(d) if d.is_zero() && !step.after.is_zero() => {}
            Action::Wait(d) => keys.push(("wait", duration(*d))),
            Action::Expect(timed) => keys.push(("expect", timed.to_string())),
            Action::Client(client) => keys.push(("client", client.to_string())),
        }
        if step.may_fail {
            keys.push(("may_fail", "true".into()));
        }
        for (i, (key, value)) in keys.iter().enumerate() {
            let value = if *key == "may_fail" { value.clone() } else { scalar(value) };
            let _ = writeln!(out, "{}{key}: {value}", if i == 0 { "  - " } else { "    " });
        }
    }
    if !scenario.expect.is_empty() {
        out.push_str("expect:\n");
    }
    for item in &scenario.expect {
        match item {
            Final::Eventually(timed) => {
                let _ = writeln!(out, "  - eventually: {}", scalar(&timed.to_string()));
            }
            Final::Always(name) => {
                let _ = writeln!(out, "  - always: {}", scalar(name));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scenario without what rendering cannot keep (line numbers, the file name).
    fn content(mut s: Scenario) -> Scenario {
        s.file.clear();
        for step in &mut s.steps {
            step.line = 0;
        }
        s
    }

    fn round_trip(text: &str) {
        let parsed = Scenario::parse(text, "a.yaml").unwrap_or_else(|e| panic!("{e}"));
        let rendered = render(&parsed, &["a header".into(), "with: two lines\nand a third".into()]);
        let again = Scenario::parse(&rendered, "b.yaml").unwrap_or_else(|e| panic!("{e}\n{rendered}"));
        assert_eq!(content(again.clone()), content(parsed), "{rendered}");
        assert_eq!(render(&again, &[]), render(&Scenario::parse(&rendered, "c.yaml").unwrap(), &[]));
        assert!(rendered.starts_with("# a header\n# with: two lines\n# and a third\nname: "), "{rendered}");
    }

    #[test]
    fn every_kind_of_step_round_trips() {
        round_trip(
            r#"
name: "every: kind — of 'step'"
cluster: { managers: 3, workers: 2 }
converge: false
mesh_drain: false
converge_within: 90s
control_workload: true
planted_bug: stale-leader-reads
steps:
  - run: service create --name web --replicas 4 --update-order start-first nginx:1.25
  - run: service update --env-add "A=b c" web
    may_fail: true
  - run: service rm nope
    expect_error: "not found: #1"
  - run: info
    expect_output: '"managers":3'
  - after: 1500ms
    fault: crash leader
  - fault: restart crashed
    may_fail: true
  - fault: leave worker-1 -f
  - fault: partition [manager-2, worker-1] from rest for 20s
  - fault: partition [leader] from [worker-2, follower] one-way
  - fault: link manager-1 worker-2 delay 50ms..200ms loss 0.15
  - fault: link manager-1 worker-1 delay 3ms loss 0
  - fault: container remove web 2
  - fault: image nginx:slow slow-start 2500ms
  - fault: image nginx:bad crash-after 2s exit 137
  - fault: image nginx:none pull-fails
  - fault: image echo:1 exposes 8080,53/udp
  - fault: image echo:1 answers-after 250ms
  - fault: image echo:1 exits-on-sigterm
  - client: start load1 to manager-1:8080 rate 20/s
  - client: start load2 to worker-1:8080 rate 2.5/s from worker-2 keepalive
  - client: stop load1
  - expect: client load1 ok 100 within 30s
  - expect: client load1 failed at most 0 within 1s
  - expect: client load1 reaches every task of web within 30s
  - expect: client load1 answered only by web within 1s
  - expect: port worker-2:8080 closed within 5s
  - expect: port worker-1:8080 answers web within 5s
  - fault: heal
  - wait: 5s
  - wait: 0s
  - after: 2s
  - expect: service web running 4 image nginx:1.26 within 30s
  - expect: service web update rollback_completed within 1m
  - expect: node worker-2 status down within 10s
  - expect: nodes 5 ready within 10s
  - expect: no running task of web on worker-2 within 10s
expect:
  - eventually: service web running 4 within 120s
  - eventually: network backend exists within 5s
  - always: replicas-bound
"#,
        );
    }

    #[test]
    fn every_scenario_file_round_trips() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut count = 0;
        for entry in std::fs::read_dir(dir).expect("scenarios/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                round_trip(&std::fs::read_to_string(&path).expect("read"));
                count += 1;
            }
        }
        assert!(count >= 15, "{count} scenario files");
    }

    #[test]
    fn may_fail_only_on_run_and_fault() {
        let text = "name: x\ncluster: { managers: 1 }\nsteps:\n  - wait: 1s\n    may_fail: true\n";
        let err = Scenario::parse(text, "f.yaml").unwrap_err().to_string();
        assert_eq!(err, "f.yaml:5: may_fail belongs to a `run:` or `fault:` step");
    }

    #[test]
    fn durations_render_as_the_parser_reads_them() {
        assert_eq!(duration(Duration::from_secs(120)), "120s");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::ZERO), "0s");
    }
}
