//! `service logs` in the simulator: the manager gathers each task's output from the node that runs
//! it, bounds it with `tail`, and names a crashed node's tasks as unreachable while still returning
//! everyone else's lines.
#![cfg(madsim)]

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_core::api::{ServiceMode, ServiceSpec, TaskState};
use shoal_core::control::{ControlRequest, ControlResponse};
use shoal_core::logs::ServiceLogs;
use shoal_sim::cluster::{ClusterShape, SimCluster};

fn running(cluster: &SimCluster) -> usize {
    let Some(state) = cluster.store_of_leader() else { return 0 };
    state
        .tasks
        .values()
        .filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running)
        .count()
}

async fn logs(cluster: &SimCluster, tail: Option<usize>) -> ServiceLogs {
    match cluster.control(ControlRequest::ServiceLogs { service: "web".into(), tail }).await {
        Ok(ControlResponse::Logs(logs)) => logs,
        other => panic!("service logs: {other:?}"),
    }
}

fn hosts(logs: &ServiceLogs) -> BTreeSet<&str> {
    logs.tasks.iter().map(|t| t.hostname.as_str()).collect()
}

#[madsim::test]
async fn service_logs_gather_from_every_node_and_name_the_unreachable() {
    let cluster = SimCluster::start(ClusterShape { managers: 1, workers: 2 }).await.expect("cluster starts");
    let mut spec = ServiceSpec::new("web", "nginx:1.25");
    spec.mode = ServiceMode::Replicated { replicas: 3 };
    cluster.control(ControlRequest::ServiceCreate { spec }).await.expect("service create");
    for _ in 0..300 {
        if running(&cluster) == 3 {
            break;
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running(&cluster), 3, "3 replicas running");

    // One task per node (spread), each with the simulated container's one line.
    let all = logs(&cluster, None).await;
    assert!(all.unreachable.is_empty(), "{all:?}");
    assert_eq!(hosts(&all), BTreeSet::from(["manager-1", "worker-1", "worker-2"]), "{all:?}");
    assert!(all.tasks.iter().all(|t| t.lines == ["started"]), "{all:?}");
    let names: Vec<&str> = all.tasks.iter().map(|t| t.task_name.as_str()).collect();
    assert_eq!(names, ["web.1", "web.2", "web.3"]);
    assert!(logs(&cluster, Some(0)).await.tasks.iter().all(|t| t.lines.is_empty()), "tail 0 shows no line");

    // A node that vanishes: its task is named unreachable; the others still answer.
    let on_worker_1 = all.tasks.iter().find(|t| t.hostname == "worker-1").expect("a task on worker-1").task_id.clone();
    cluster.crash("worker-1");
    let partial = logs(&cluster, None).await;
    assert_eq!(hosts(&partial), BTreeSet::from(["manager-1", "worker-2"]), "{partial:?}");
    assert!(partial.tasks.iter().all(|t| t.task_id != on_worker_1), "{partial:?}");
    assert_eq!(partial.unreachable.len(), 1, "{partial:?}");
    assert_eq!(partial.unreachable[0].hostname, "worker-1");
    assert_eq!(partial.unreachable[0].tasks, 1);
    assert!(!partial.unreachable[0].reason.is_empty());
}
