//! Swarm's service templates in the simulator: `{{.Task.Slot}}`, `{{.Node.Hostname}}` and
//! `{{.Service.Labels}}` reach each simulated container expanded for its own task and node, and a
//! template that cannot be expanded rejects the task with the reason instead of starting it. The
//! real engine's check is `real/tests/e2e.rs` (`cluster_with_docker_executor`).
#![cfg(madsim)]

use shoal_core::api::{ServiceMode, ServiceSpec, TaskState};
use shoal_core::control::ControlRequest;
use shoal_core::env::executor::LABEL_SERVICE_NAME;
use shoal_sim::cluster::{ClusterShape, SimCluster};

mod common;

/// (node hostname, the container's labels) of every running container of `service`.
fn containers(cluster: &SimCluster, service: &str) -> Vec<(String, std::collections::BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for (host, executor) in cluster.executors() {
        for container in executor.running() {
            if container.labels.get(LABEL_SERVICE_NAME).map(String::as_str) == Some(service) {
                out.push((host.clone(), container.labels));
            }
        }
    }
    out
}

#[madsim::test]
async fn templates_expand_per_task_and_a_bad_one_rejects_the_task() {
    let cluster = SimCluster::start(ClusterShape { managers: 1, workers: 2 }).await.expect("cluster starts");
    let mut spec = ServiceSpec::new("web", "nginx:1.25");
    spec.mode = ServiceMode::Replicated { replicas: 3 };
    spec.task.placement.max_replicas_per_node = 1;
    spec.labels.insert("tier".into(), "front".into());
    for (key, template) in [
        ("slot", "{{.Task.Slot}}"),
        ("node", "{{.Node.Hostname}}"),
        ("tier", r#"{{index .Service.Labels "tier"}}"#),
        ("name", "{{.Task.Name}}"),
    ] {
        spec.task.container_labels.insert(key.into(), template.into());
    }
    cluster.control(ControlRequest::ServiceCreate { spec }).await.expect("service create");
    common::wait_until(&cluster, "web", "3 running containers", 60, |c| containers(c, "web").len() == 3).await;

    let mut slots = Vec::new();
    for (host, labels) in containers(&cluster, "web") {
        assert_eq!(labels["node"], host, "{labels:?}");
        assert_eq!(labels["tier"], "front", "{labels:?}");
        let slot = labels["slot"].clone();
        assert!(labels["name"].starts_with(&format!("web.{slot}.")), "{labels:?}");
        slots.push(slot);
    }
    slots.sort();
    assert_eq!(slots, ["1", "2", "3"]);

    // A typo in a template: each task is rejected with Swarm's words, none runs.
    let mut bad = ServiceSpec::new("typo", "nginx:1.25");
    bad.task.env = vec!["SLOT={{.Task.Slott}}".into()];
    bad.task.restart_policy.delay_ms = 1_000;
    cluster.control(ControlRequest::ServiceCreate { spec: bad }).await.expect("service create");
    common::wait_until(&cluster, "typo", "a task rejected for its template", 60, |c| {
        let Some(state) = c.store_of_leader() else { return false };
        state.tasks.values().any(|t| {
            t.service_name == "typo"
                && t.status.state == TaskState::Rejected
                && t.status.err.starts_with("expanding env failed: ")
                && t.status.err.contains("Slott")
        })
    })
    .await;
    assert!(containers(&cluster, "typo").is_empty());
}
