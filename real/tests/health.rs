//! Health checks end to end on the Docker engine: one `shoal daemon` (127.0.0.231) with the Docker
//! executor, driven through the `shoal` CLI. A task whose container has a health check is
//! `Starting` until Docker says it is healthy, then `Running`; a container that turns unhealthy is
//! stopped and its task fails with Swarm's words ("task: non-zero exit (N): dockerexec: unhealthy
//! container") and is replaced by the restart policy; the image's own HEALTHCHECK counts too.
//! Fails, not skips, without Docker.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{json_lines, require_docker, wait_for, CleanupContainers, DaemonProc};

const IMAGE: &str = "shoal-test/busybox:latest";

/// The service's tasks as `service ps --no-trunc --format json` lists them.
fn tasks(node: &DaemonProc, service: &str) -> Vec<serde_json::Value> {
    node.shoal(&["service", "ps", "--no-trunc", "--format", "json", service])
        .map(|out| json_lines(&out))
        .unwrap_or_default()
}

fn state(task: &serde_json::Value) -> &str {
    task["CurrentState"].as_str().unwrap_or_default()
}

/// The current (desired running) task of slot 1, if any.
fn current(node: &DaemonProc, service: &str) -> Option<serde_json::Value> {
    tasks(node, service).into_iter().find(|t| t["DesiredState"] == "Running")
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("run docker");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An image made from the test image with a HEALTHCHECK of its own (`docker commit --change`, no
/// pull, no registry); removed when dropped.
struct ImageWithHealthcheck(String);

impl ImageWithHealthcheck {
    fn new(check: &str) -> Self {
        let container = docker(&["create", IMAGE, "true"]);
        let id = docker(&["commit", "--change", check, &container]);
        docker(&["rm", &container]);
        ImageWithHealthcheck(id)
    }
}

impl Drop for ImageWithHealthcheck {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

#[test]
fn health_checks_on_the_docker_engine() {
    require_docker();
    // Made first so that it is dropped last, once the containers that use it are gone.
    let image =
        ImageWithHealthcheck::new("HEALTHCHECK --interval=1s --retries=2 --start-period=10s CMD test -f /tmp/ready");
    let _cleanup = [CleanupContainers("hc-flaky"), CleanupContainers("hc-sick"), CleanupContainers("hc-image")];
    let node = DaemonProc::spawn("hc-m", "127.0.0.231", "docker");
    node.swarm_init();

    // 1. Starting until healthy, then running; then unhealthy: failed with Swarm's words and replaced.
    // The container is healthy once /tmp/ready exists (after 4 s) and unhealthy once /tmp/sick does.
    let created = node.must(&[
        "service",
        "create",
        "--detach",
        "--name",
        "hc-flaky",
        "--health-cmd",
        "test -f /tmp/ready && test ! -f /tmp/sick",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        // Failed checks before /tmp/ready do not count within the start period.
        "--health-start-period",
        "8s",
        "--stop-grace-period",
        "1s",
        "--restart-delay",
        "1s",
        IMAGE,
        "sh",
        "-c",
        "sleep 4; touch /tmp/ready; sleep 6; touch /tmp/sick; exec sleep 600",
    ]);
    assert!(!created.trim().is_empty(), "{created}");
    let first = wait_for(Duration::from_secs(30), "hc-flaky.1 starting", || {
        current(&node, "hc-flaky").filter(|t| state(t).starts_with("Starting"))
    });
    let first_id = first["ID"].as_str().unwrap().to_string();
    // Still starting while the container runs and its checks have not passed yet.
    std::thread::sleep(Duration::from_secs(2));
    let still = current(&node, "hc-flaky").expect("the task");
    assert_eq!(still["ID"], first_id.as_str());
    assert!(state(&still).starts_with("Starting"), "2 s in, before /tmp/ready: {still}");
    let ls = node.must(&["service", "ls", "--filter", "name=hc-flaky", "--format", "{{.Replicas}}"]);
    assert_eq!(ls.trim(), "0/1", "a starting task is not counted as running");
    wait_for(Duration::from_secs(30), "hc-flaky.1 running once healthy", || {
        current(&node, "hc-flaky").filter(|t| t["ID"] == first_id.as_str() && state(t).starts_with("Running"))
    });
    let container = tasks(&node, "hc-flaky")
        .into_iter()
        .find(|t| t["ID"] == first_id.as_str())
        .and_then(|_| {
            let out = docker(&["ps", "-q", "--filter", &format!("label=com.shoal.task.id={first_id}")]);
            (!out.is_empty()).then_some(out)
        })
        .expect("the task's container");
    assert_eq!(docker(&["inspect", "--format", "{{.State.Health.Status}}", &container]), "healthy");
    // /tmp/sick appears 6 s later: two failed checks make it unhealthy; the agent stops it.
    let failed = wait_for(Duration::from_secs(60), "hc-flaky.1 failed as unhealthy", || {
        tasks(&node, "hc-flaky").into_iter().find(|t| t["ID"] == first_id.as_str() && state(t).starts_with("Failed"))
    });
    // Quoted, as docker/cli's task formatter shows errors.
    let error = failed["Error"].as_str().unwrap_or_default().trim_matches('"');
    assert!(
        error.starts_with("task: non-zero exit (") && error.ends_with("): dockerexec: unhealthy container"),
        "{failed}"
    );
    let replacement = wait_for(Duration::from_secs(60), "a replacement task", || {
        current(&node, "hc-flaky").filter(|t| t["ID"] != first_id.as_str())
    });
    assert_eq!(replacement["Name"], "hc-flaky.1", "{replacement}");

    // 2. A check that never passes: the task never runs, it fails and is replaced, again and again.
    node.must(&[
        "service",
        "create",
        "--detach",
        "--name",
        "hc-sick",
        "--health-cmd",
        "false",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        "--stop-grace-period",
        "1s",
        "--restart-delay",
        "1s",
        IMAGE,
        "sleep",
        "600",
    ]);
    let history = wait_for(Duration::from_secs(90), "two hc-sick tasks failed as unhealthy", || {
        let tasks = tasks(&node, "hc-sick");
        let failed = tasks
            .iter()
            .filter(|t| {
                state(t).starts_with("Failed")
                    && t["Error"].as_str().is_some_and(|e| e.ends_with("dockerexec: unhealthy container\""))
            })
            .count();
        (failed >= 2).then_some(tasks)
    });
    assert!(history.iter().all(|t| !state(t).starts_with("Running")), "a never-healthy task never runs: {history:?}");

    // 3. The image's own HEALTHCHECK, no --health-* flag: starting until it passes, read from Docker.
    let created = node.must(&[
        "service",
        "create",
        "--detach",
        "--name",
        "hc-image",
        &image.0,
        "sh",
        "-c",
        "sleep 3; touch /tmp/ready; exec sleep 600",
    ]);
    assert!(!created.trim().is_empty(), "{created}");
    wait_for(Duration::from_secs(30), "hc-image.1 starting", || {
        current(&node, "hc-image").filter(|t| state(t).starts_with("Starting"))
    });
    wait_for(Duration::from_secs(30), "hc-image.1 running", || {
        current(&node, "hc-image").filter(|t| state(t).starts_with("Running"))
    });
    // `--no-healthcheck` switches the image's check off: running at once, no health in Docker.
    node.must(&["service", "update", "--detach", "--no-healthcheck", "hc-image"]);
    let inspect = node.must(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.TaskTemplate.ContainerSpec.Healthcheck}}",
        "hc-image",
    ]);
    assert_eq!(inspect.trim(), r#"{"Test":["NONE"]}"#);
    let unchecked = wait_for(Duration::from_secs(60), "hc-image running without a check", || {
        let task = current(&node, "hc-image").filter(|t| state(t).starts_with("Running"))?;
        let id = task["ID"].as_str()?.to_string();
        let container = docker(&["ps", "-q", "--filter", &format!("label=com.shoal.task.id={id}")]);
        (!container.is_empty()).then_some(container)
    });
    assert_eq!(docker(&["inspect", "--format", "{{if .State.Health}}checked{{else}}none{{end}}", &unchecked]), "none");
}
