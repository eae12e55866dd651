//! Images for a real run. Scenarios name images the simulator makes up (`nginx:1.25`, the voting
//! app's); daemons run with `--pull never` and nothing is ever pulled, so for every image a
//! scenario names that the engine lacks, the run tags a local stand-in: `shoal-harness/sleeper`,
//! built once from the local test image `shoal-test/busybox:latest` (itself built from busybox-static
//! when missing, by `shoal_testimage`), whose command sleeps until it
//! is stopped and exits at once (143) on SIGTERM, as the simulator's containers do (a bare `sleep` as
//! PID 1 ignores SIGTERM, and every stop would wait out the stop grace period). The run removes
//! the tags it made, and only those (see [`crate::cleanup`]).

use std::io::Write;
use std::process::{Command, Stdio};

use shoal_sim::scenario::cli::{Command as StepCommand, StackCommand};
use shoal_sim::scenario::fault::Fault;
use shoal_sim::scenario::parse::Action;
use shoal_sim::scenario::stack::load_compose;
use shoal_sim::scenario::Scenario;

use shoal_core::control::ControlRequest;

pub const BASE_IMAGE: &str = shoal_testimage::TEST_IMAGE;
pub const SLEEPER: &str = "shoal-harness/sleeper:2";
pub const SERVER: &str = "shoal-harness/httpd:1";

/// The image id of `name` on the engine, if it has it.
pub fn image_id(name: &str) -> Option<String> {
    let output = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The sleeper image's id, built from the local test image if missing.
pub fn sleeper() -> Result<String, String> {
    build(SLEEPER, "sleep 1000000 & wait")
}

/// The serving stand-in's id, built from the local test image if missing: busybox `httpd` on port 80
/// serving a page that holds the container's hostname (its short id), exiting on SIGTERM. It is
/// what the mesh scenarios' images become, so their clients and probes get answers that say which
/// container served them ([`crate::client`]).
pub fn server() -> Result<String, String> {
    build(SERVER, "mkdir -p /www && hostname > /www/index.html && httpd -f -p 80 -h /www & wait")
}

/// A stand-in whose containers exit with `code` after `after` (the image fault `crash after`),
/// built once per (seconds, code) and kept as `shoal-harness/crash-after:<ms>-<code>`.
pub fn crashing(after: std::time::Duration, code: i64) -> Result<String, String> {
    let tag = format!("shoal-harness/crash-after:{}-{code}", after.as_millis());
    build(&tag, &format!("sleep {:.3}; exit {code}", after.as_secs_f64()))
}

/// `tag` built from the local test image with `sh -c "trap 'exit 143' TERM; SCRIPT"` as its
/// command, if the engine lacks it; its id.
fn build(tag: &str, script: &str) -> Result<String, String> {
    if let Some(id) = image_id(tag) {
        return Ok(id);
    }
    shoal_testimage::ensure().map_err(|e| e.to_string())?;
    let mut child = Command::new("docker")
        .args(["build", "--pull=false", "-q", "-t", tag, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run docker build: {e}"))?;
    let dockerfile = format!(
        "FROM {BASE_IMAGE}\nCMD [\"sh\", \"-c\", \"trap 'exit 143' TERM; {script}\"]\nLABEL com.shoal.harness=stand-in\n"
    );
    child
        .stdin
        .take()
        .ok_or("docker build has no stdin")?
        .write_all(dockerfile.as_bytes())
        .map_err(|e| format!("cannot write the Dockerfile to docker build: {e}"))?;
    let output = child.wait_with_output().map_err(|e| format!("docker build: {e}"))?;
    if !output.status.success() {
        return Err(format!("docker build of {tag} failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    image_id(tag).ok_or_else(|| format!("docker build made no {tag}"))
}

/// Every image the scenario's steps name (services, updates, compose files, image faults).
pub fn scenario_images(scenario: &Scenario) -> Vec<String> {
    let mut images = Vec::new();
    let mut add = |image: &str| {
        if !image.is_empty() && !images.iter().any(|i| i == image) {
            images.push(image.to_string());
        }
    };
    for step in &scenario.steps {
        match &step.action {
            Action::Run { command, expect_error: None, .. } => match command.as_ref() {
                StepCommand::Request(ControlRequest::ServiceCreate { spec }) => add(&spec.task.image),
                StepCommand::ServiceUpdate { changes, .. } => {
                    if let Some(image) = &changes.image {
                        add(image);
                    }
                }
                StepCommand::Stack(StackCommand::Deploy { stack, file, .. }) => {
                    if let Ok(plan) = load_compose(&scenario.file, file, stack) {
                        for spec in &plan.services {
                            add(&spec.task.image);
                        }
                    }
                }
                _ => {}
            },
            Action::Fault(Fault::Image { image, .. }) => add(image),
            _ => {}
        }
    }
    images
}

/// Whether the scenario sends traffic to its services (clients, `port …` expectations): its images
/// must then answer requests.
pub fn sends_traffic(scenario: &Scenario) -> bool {
    use shoal_sim::scenario::expect::Expectation;
    let probes = |e: &Expectation| matches!(e, Expectation::PortAnswers { .. } | Expectation::PortClosed { .. });
    scenario.steps.iter().any(|step| match &step.action {
        Action::Client(_) => true,
        Action::Expect(timed) => probes(&timed.expectation),
        _ => false,
    })
}

/// The images the serving stand-in stands for: in a scenario that sends traffic, every image but
/// those only of services on the host's network (no published port, no network), where a server
/// on port 80 would take the host's port.
pub fn served_images(scenario: &Scenario) -> Vec<String> {
    if !sends_traffic(scenario) {
        return Vec::new();
    }
    let mut bridged = Vec::new();
    let mut host_only = Vec::new();
    for step in &scenario.steps {
        if let Action::Run { command, .. } = &step.action {
            if let StepCommand::Request(ControlRequest::ServiceCreate { spec }) = command.as_ref() {
                if spec.ports.is_empty() && spec.task.networks.is_empty() {
                    host_only.push(spec.task.image.clone());
                } else {
                    bridged.push(spec.task.image.clone());
                }
            }
        }
    }
    scenario_images(scenario).into_iter().filter(|i| bridged.contains(i) || !host_only.contains(i)).collect()
}

/// Tag the sleeper as `name`; returns the id tagged.
pub fn tag(sleeper_id: &str, name: &str) -> Result<(), String> {
    let output = Command::new("docker")
        .args(["tag", sleeper_id, name])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run docker tag: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("docker tag {name} failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Remove the tag `name` if it points to `id` (an image fault "pull fails": the engine lacks it).
pub fn untag(name: &str, id: &str) -> Result<(), String> {
    if image_id(name).as_deref() != Some(id) {
        return Err(format!("{name} is not an image this run tagged"));
    }
    let output = Command::new("docker")
        .args(["rmi", "--no-prune", name])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run docker rmi: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("docker rmi {name} failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Whether the scenario's tasks need bridges (published ports, networks, stacks).
pub fn uses_bridges(scenario: &Scenario) -> bool {
    scenario.steps.iter().any(|step| match &step.action {
        Action::Run { command, .. } => match command.as_ref() {
            StepCommand::Request(ControlRequest::ServiceCreate { spec }) => {
                !spec.ports.is_empty() || !spec.task.networks.is_empty()
            }
            StepCommand::Request(ControlRequest::NetworkCreate { .. }) => true,
            StepCommand::ServiceUpdate { changes, .. } => !changes.publish_add.is_empty(),
            StepCommand::Stack(StackCommand::Deploy { .. }) => true,
            _ => false,
        },
        _ => false,
    })
}

/// Docker networks that shoal daemons made (they carry shoal's node label) — of another cluster,
/// when called before this run's cluster exists.
pub fn shoal_bridges() -> Vec<String> {
    let filter = format!("label={}", shoal_core::env::executor::LABEL_NODE_ID);
    Command::new("docker")
        .args(["network", "ls", "--filter", &filter, "--format", "{{.Name}}"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}
