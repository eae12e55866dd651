//! `service logs` in the simulator: the manager gathers each task's output from the node that runs
//! it, bounds it with `tail`, reads one task by id, returns only new lines after `--follow`'s
//! cursors, keeps a replaced task's output, and names a crashed node's tasks as unreachable while
//! still returning everyone else's.
#![cfg(madsim)]

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_core::api::{ServiceMode, ServiceSpec, TaskState};
use shoal_core::control::{ControlRequest, ControlResponse};
use shoal_core::env::{Executor, LogLine};
use shoal_core::logs::{LogsSelection, ServiceLogs};
use shoal_sim::cluster::{ClusterShape, SimCluster};

mod common;
use common::wait_until;

/// Running tasks of the test's one service.
fn running(cluster: &SimCluster) -> usize {
    common::running(cluster, "web").len()
}

async fn logs_of(cluster: &SimCluster, target: &str, selection: LogsSelection) -> ServiceLogs {
    match cluster.control(ControlRequest::ServiceLogs { service: target.into(), selection }).await {
        Ok(ControlResponse::Logs(logs)) => logs,
        other => panic!("service logs: {other:?}"),
    }
}

async fn logs(cluster: &SimCluster, tail: Option<usize>) -> ServiceLogs {
    logs_of(cluster, "web", LogsSelection { tail, ..LogsSelection::default() }).await
}

fn texts(lines: &[LogLine]) -> Vec<&str> {
    lines.iter().map(|l| l.text.as_str()).collect()
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
    wait_until(&cluster, "web", "3 replicas running", 30, |c| running(c) == 3).await;

    // One task per node (spread), each with the simulated container's one line.
    let all = logs(&cluster, None).await;
    assert!(all.unreachable.is_empty(), "{all:?}");
    assert_eq!(hosts(&all), BTreeSet::from(["manager-1", "worker-1", "worker-2"]), "{all:?}");
    assert!(all.tasks.iter().all(|t| texts(&t.lines) == ["started"]), "{all:?}");
    let names: Vec<&str> = all.tasks.iter().map(|t| t.task_name.as_str()).collect();
    assert_eq!(names, ["web.1", "web.2", "web.3"]);
    assert_eq!((all.service_name.as_str(), all.service_id.len()), ("web", 25));
    // `--tail 0` shows nothing but still says where each task's log ends (the follow cursor).
    let none = logs(&cluster, Some(0)).await;
    assert!(none.tasks.iter().all(|t| t.lines.is_empty() && t.last_ns == Some(t_started(&all, &t.task_id))));

    // One task by id; an unknown name is Docker's error.
    let one = &all.tasks[1];
    let only = logs_of(&cluster, &one.task_id, LogsSelection::default()).await;
    assert_eq!(only.tasks, std::slice::from_ref(one));
    let err = cluster.control(ControlRequest::ServiceLogs { service: "nope".into(), selection: Default::default() });
    assert_eq!(err.await.unwrap_err().to_string(), "no such task or service: nope");

    // Following: with every task's cursor, nothing is new until a task writes again; a container
    // stopped behind the agent's back adds its "stopped" line, and only that line comes back.
    let cursors = all.tasks.iter().map(|t| (t.task_id.clone(), t.last_ns.expect("a line"))).collect();
    let follow = LogsSelection { tail: None, since_ns: None, cursors };
    assert!(logs_of(&cluster, "web", follow.clone()).await.tasks.iter().all(|t| t.lines.is_empty()));
    let victim = all.tasks.iter().find(|t| t.hostname == "worker-2").expect("a task on worker-2");
    let executor = cluster.executor("worker-2").expect("worker-2");
    let container = executor.running().into_iter().next().expect("a running container on worker-2");
    executor.stop(&container.id, Duration::from_millis(10)).await.expect("stop");
    let next = logs_of(&cluster, "web", follow).await;
    let changed: Vec<(&str, Vec<&str>)> =
        next.tasks.iter().filter(|t| !t.lines.is_empty()).map(|t| (t.task_id.as_str(), texts(&t.lines))).collect();
    assert_eq!(changed, [(victim.task_id.as_str(), vec!["stopped"])], "{next:?}");

    // The stopped task is replaced; its exited container stays on its node (as Docker keeps a
    // history task's), so its output is still there beside its replacement's.
    let replaced = |cluster: &SimCluster| {
        let victim_done = cluster
            .store_of_leader()
            .and_then(|s| s.tasks.get(&victim.task_id).map(|t| t.status.state > TaskState::Running))
            .unwrap_or(false);
        victim_done && running(cluster) == 3
    };
    wait_until(&cluster, "web", "the stopped task is replaced", 30, replaced).await;
    let history = logs(&cluster, None).await;
    assert_eq!(history.tasks.len(), 4, "{history:?}");
    let old = history.tasks.iter().find(|t| t.task_id == victim.task_id).expect("the stopped task's logs");
    assert_eq!(texts(&old.lines), ["started", "stopped"]);

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

/// The stamp of a task's one "started" line in `logs`.
fn t_started(logs: &ServiceLogs, task_id: &str) -> u64 {
    logs.tasks.iter().find(|t| t.task_id == task_id).and_then(|t| t.lines.first()).expect("a line").time_ns
}
