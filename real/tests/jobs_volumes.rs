//! Issue 17 on the Docker engine: a replicated job runs to completion (never more than
//! `--max-concurrent` at once, `service ls`/`ps` as Docker shows them, `service update --force` runs
//! it again); a named volume outlives a task's container on its node (a killed container's
//! replacement reads what the first wrote), and a bind mount whose source does not exist fails
//! the task with Docker's error. Real `shoal daemon`s on 127.0.0.201–202, image
//! `shoal-test/busybox:latest`; the tests fail, not skip, without Docker.

mod common;

use std::time::Duration;

use common::{json_lines, require_docker, wait_for, CleanupContainers, DaemonProc};

fn docker() -> (tokio::runtime::Runtime, bollard::Docker) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    (runtime, docker)
}

/// `service ps SERVICE` rows as JSON.
fn tasks(manager: &DaemonProc, service: &str) -> Vec<serde_json::Value> {
    json_lines(&manager.must(&["service", "ps", service, "--no-trunc", "--format", "json"]))
}

#[test]
fn replicated_job_runs_to_completion_and_again_on_update() {
    require_docker();
    let _cleanup = CleanupContainers("e2e-job");
    let manager = DaemonProc::spawn("e2e-job-m", "127.0.0.201", "docker");
    manager.swarm_init();

    // The CLI waits for the job, as Docker's does, and says it completed.
    let created = manager.create_service(&[
        "--name",
        "e2e-job",
        "--mode",
        "replicated-job",
        "--replicas",
        "4",
        "--max-concurrent",
        "2",
        "shoal-test/busybox:latest",
        "sh",
        "-c",
        "sleep 1",
    ]);
    assert!(created.contains("job progress: 4 out of 4 complete"), "{created}");
    assert!(created.ends_with("job complete\n"), "{created}");
    let ls = manager.must(&["service", "ls", "--format", "{{.Mode}}|{{.Replicas}}"]);
    assert_eq!(ls, "replicated job|0/2 (4/4 completed)\n");
    let rows = tasks(&manager, "e2e-job");
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r["DesiredState"] == "Complete" && r["CurrentState"].as_str().unwrap().starts_with("Complete")),
        "{rows:?}"
    );
    // Swarm's defaults for a job: concurrency and completions as given, restarts on failure only.
    let inspect: serde_json::Value = serde_json::from_str(&manager.must(&["service", "inspect", "e2e-job"])).unwrap();
    assert_eq!(
        inspect[0]["Spec"]["Mode"],
        serde_json::json!({"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 4}})
    );
    assert_eq!(inspect[0]["Spec"]["TaskTemplate"]["RestartPolicy"]["Condition"], "on-failure");
    let first_iteration = inspect[0]["JobStatus"]["JobIteration"]["Index"].as_u64().expect("a job iteration");

    // `service update --force` runs it again, never more than 2 at once.
    manager.must(&["service", "update", "--force", "-d", "e2e-job"]);
    let mut most_running = 0;
    wait_for(Duration::from_secs(120), "the second run to complete", || {
        let running = tasks(&manager, "e2e-job")
            .iter()
            .filter(|r| r["CurrentState"].as_str().unwrap_or_default().starts_with("Running"))
            .count();
        most_running = most_running.max(running);
        assert!(running <= 2, "{running} job tasks running at once");
        let ls = manager.must(&["service", "ls", "--format", "{{.Replicas}}"]);
        (ls == "0/2 (4/4 completed)\n" && tasks(&manager, "e2e-job").len() == 8).then_some(())
    });
    assert!(most_running >= 1, "the second run was seen running");
    let inspect: serde_json::Value = serde_json::from_str(&manager.must(&["service", "inspect", "e2e-job"])).unwrap();
    assert!(inspect[0]["JobStatus"]["JobIteration"]["Index"].as_u64().unwrap() > first_iteration);
    let complete = tasks(&manager, "e2e-job")
        .iter()
        .filter(|r| r["CurrentState"].as_str().unwrap_or_default().starts_with("Complete"))
        .count();
    assert_eq!(complete, 8, "4 completions per run, none run twice");
}

#[test]
fn named_volume_survives_a_task_restart_and_a_missing_bind_source_fails() {
    require_docker();
    let volume = format!("e2e-vol-{}", std::process::id());
    let (runtime, docker) = docker();
    /// Removes the test's volume last, once the daemon and the containers are gone.
    struct RemoveVolume<'a>(&'a tokio::runtime::Runtime, &'a bollard::Docker, String);
    impl Drop for RemoveVolume<'_> {
        fn drop(&mut self) {
            let _ = self.0.block_on(self.1.remove_volume(&self.2, None));
        }
    }
    let _remove = RemoveVolume(&runtime, &docker, volume.clone());
    let _cleanup = CleanupContainers("e2e-vol");
    let _cleanup_bind = CleanupContainers("e2e-bind");
    let manager = DaemonProc::spawn("e2e-vol-m", "127.0.0.202", "docker");
    manager.swarm_init();

    // Each task appends a line to the volume and prints what the volume holds.
    let mount = format!("type=volume,source={volume},target=/data,volume-label=e2e=volumes");
    manager.create_service(&[
        "--name",
        "e2e-vol",
        "--mount",
        &mount,
        "--restart-delay",
        "1s",
        "--stop-grace-period",
        "1s",
        "shoal-test/busybox:latest",
        "sh",
        "-c",
        "echo run >> /data/runs; echo \"lines $(wc -l < /data/runs)\"; exec sleep 600",
    ]);
    let info = runtime.block_on(docker.inspect_volume(&volume)).expect("the node made the volume");
    assert_eq!(info.labels.get("e2e").map(String::as_str), Some("volumes"));

    // Kill the task's container: the restart policy replaces the task on the node, and the new
    // container finds the first one's line.
    let container = wait_for(Duration::from_secs(30), "the task's container", || {
        let out = manager.shoal(&["service", "ps", "e2e-vol", "--format", "json"]).ok()?;
        json_lines(&out)
            .iter()
            .any(|r| r["CurrentState"].as_str().unwrap_or_default().starts_with("Running"))
            .then_some(())?;
        let filters = std::collections::HashMap::from([(
            "label".to_string(),
            vec![format!("{}=e2e-vol", shoal_core::env::executor::LABEL_SERVICE_NAME)],
        )]);
        let options = bollard::container::ListContainersOptions { filters, ..Default::default() };
        runtime.block_on(docker.list_containers(Some(options))).ok()?.into_iter().next()?.id
    });
    runtime
        .block_on(docker.kill_container(&container, None::<bollard::container::KillContainerOptions<String>>))
        .expect("kill the task's container");
    wait_for(Duration::from_secs(60), "a second task that read the first one's line", || {
        let logs = manager.shoal(&["service", "logs", "--raw", "e2e-vol"]).ok()?;
        logs.lines().any(|l| l.trim() == "lines 2").then_some(())
    });
    let rows = tasks(&manager, "e2e-vol");
    assert!(rows.len() >= 2 && rows[0]["CurrentState"].as_str().unwrap().starts_with("Running"), "{rows:?}");

    // A bind source that does not exist on the node: Docker's error, on the task.
    let missing = format!("/nonexistent-shoal-e2e-{}", std::process::id());
    manager.must(&[
        "service",
        "create",
        "-d",
        "--name",
        "e2e-bind",
        "--mount",
        &format!("type=bind,source={missing},target=/data"),
        "shoal-test/busybox:latest",
        "sleep",
        "600",
    ]);
    let want = format!("invalid mount config for type \"bind\": bind source path does not exist: {missing}");
    wait_for(Duration::from_secs(60), "the bind mount's error on the task", || {
        tasks(&manager, "e2e-bind")
            .iter()
            .any(|r| {
                r["CurrentState"].as_str().unwrap_or_default().starts_with("Rejected")
                    && r["Error"].as_str().is_some_and(|e| e.contains(&want))
            })
            .then_some(())
    });
}
