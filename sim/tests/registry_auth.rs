//! `--with-registry-auth` through the control plane, in the simulator: the credentials a service
//! carries reach the nodes that pull its image (a simulated registry that wants them), no control
//! answer shows them, an update without them keeps the service's own, new ones replace only tasks
//! that have yet to pull, and empty ones clear them. The daemon's end-to-end test against a real
//! registry is `real/tests/registry.rs`.
#![cfg(madsim)]

use shoal_core::api::{RegistryAuth, Service, ServiceMode, ServiceSpec, Task, TaskState};
use shoal_core::control::{ControlRequest, ControlResponse};
use shoal_sim::cluster::{ClusterShape, SimCluster};

mod common;
use common::running;

const IMAGE: &str = "registry.example:5000/team/app:1";

fn auth(password: &str) -> Option<Box<RegistryAuth>> {
    Some(Box::new(RegistryAuth {
        server_address: "registry.example:5000".into(),
        username: "alice".into(),
        password: password.into(),
        identity_token: String::new(),
    }))
}

async fn wait_until(cluster: &SimCluster, what: &str, secs: u64, check: impl Fn(&SimCluster) -> bool) {
    common::wait_until(cluster, "app", what, secs, check).await
}

/// The service as the leader's store holds it (credentials included).
fn stored(cluster: &SimCluster) -> Service {
    let state = cluster.store_of_leader().expect("a leader");
    state.services.values().find(|s| s.spec.name == "app").cloned().expect("service app")
}

fn stored_tasks(cluster: &SimCluster) -> Vec<Task> {
    let state = cluster.store_of_leader().expect("a leader");
    state.tasks.values().filter(|t| t.service_name == "app").cloned().collect()
}

/// What a client sees: `service inspect` and `service ps`.
async fn client_view(cluster: &SimCluster) -> (Service, Vec<Task>) {
    let service = match cluster.control(ControlRequest::ServiceInspect { service: "app".into() }).await {
        Ok(ControlResponse::Service(view)) => view.service,
        other => panic!("inspect: {other:?}"),
    };
    let tasks = match cluster.control(ControlRequest::TaskList { service: Some("app".into()), node: None }).await {
        Ok(ControlResponse::Tasks(tasks)) => tasks,
        other => panic!("task list: {other:?}"),
    };
    (service, tasks)
}

async fn update(cluster: &SimCluster, change: impl FnOnce(&mut ServiceSpec)) {
    let (current, _) = client_view(cluster).await;
    let mut spec = current.spec.clone();
    change(&mut spec);
    let request = ControlRequest::ServiceUpdate { service: "app".into(), version: current.meta.version, spec };
    cluster.control(request).await.expect("service update");
}

#[madsim::test]
async fn registry_credentials_reach_the_nodes_and_no_client() {
    let cluster = SimCluster::start(ClusterShape { managers: 1, workers: 2 }).await.expect("cluster starts");
    for executor in cluster.executors().values() {
        executor.require_credentials(IMAGE, "alice", "right");
    }
    let mut spec = ServiceSpec::new("app", IMAGE);
    spec.mode = ServiceMode::Replicated { replicas: 2 };
    spec.task.placement.max_replicas_per_node = 1;
    spec.task.restart_policy.delay_ms = 1_000;
    spec.task.registry_auth = auth("wrong");
    cluster.control(ControlRequest::ServiceCreate { spec }).await.expect("service create");

    // Wrong credentials: the tasks are rejected with the registry's refusal.
    wait_until(&cluster, "a task rejected for its credentials", 30, |c| {
        stored_tasks(c)
            .iter()
            .any(|t| t.status.state == TaskState::Rejected && t.status.err == "unauthorized: authentication required")
    })
    .await;

    // The store keeps the credentials; no client answer carries them.
    assert_eq!(stored(&cluster).spec.task.registry_auth, auth("wrong"));
    let (service, tasks) = client_view(&cluster).await;
    assert_eq!(service.spec.task.registry_auth, None, "service inspect shows no credentials");
    assert!(tasks.iter().all(|t| t.spec.registry_auth.is_none()), "service ps shows no credentials");
    assert!(stored_tasks(&cluster).iter().all(|t| t.spec.registry_auth == auth("wrong")), "tasks carry them");
    let listed = match cluster.control(ControlRequest::ServiceList).await {
        Ok(ControlResponse::Services(views)) => views,
        other => panic!("service ls: {other:?}"),
    };
    assert!(listed.iter().all(|v| v.service.spec.task.registry_auth.is_none()), "service ls shows none");

    // An update without credentials (what a client sends after reading the spec) keeps them.
    update(&cluster, |spec| {
        spec.labels.insert("team".into(), "a".into());
    })
    .await;
    assert_eq!(stored(&cluster).spec.task.registry_auth, auth("wrong"), "an update without them keeps them");

    // The right credentials: the next tasks pull with them, one per node.
    update(&cluster, |spec| spec.task.registry_auth = auth("right")).await;
    wait_until(&cluster, "2 tasks running with the right credentials", 60, |c| running(c, "app").len() == 2).await;
    let pulled: Vec<(String, String)> =
        cluster.executors().values().flat_map(|e| e.pulls()).filter(|(image, _)| image == IMAGE).collect();
    assert_eq!(pulled.len(), 2, "each node that runs a task pulled once, with alice's credentials: {pulled:?}");
    assert!(pulled.iter().all(|(_, user)| user == "alice"));

    // New credentials alone leave running tasks alone (they have pulled already).
    let before: Vec<String> = running_ids(&cluster);
    update(&cluster, |spec| spec.task.registry_auth = auth("rotated")).await;
    madsim::time::sleep(std::time::Duration::from_secs(10)).await;
    assert_eq!(running_ids(&cluster), before, "a credentials-only update replaces no running task");
    assert_eq!(stored(&cluster).spec.task.registry_auth, auth("rotated"));

    // Empty credentials clear them.
    update(&cluster, |spec| spec.task.registry_auth = Some(Box::default())).await;
    assert_eq!(stored(&cluster).spec.task.registry_auth, None, "empty credentials clear them");
}

fn running_ids(cluster: &SimCluster) -> Vec<String> {
    let mut ids: Vec<String> = stored_tasks(cluster)
        .into_iter()
        .filter(|t| t.status.state == TaskState::Running && t.desired_state == TaskState::Running)
        .map(|t| t.id)
        .collect();
    ids.sort();
    ids
}
