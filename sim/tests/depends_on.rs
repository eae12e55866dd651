//! compose `depends_on` as a start order, in the simulator: a service's tasks stay pending, saying
//! what they wait for, until every service it depends on has a running task; then they start.
#![cfg(madsim)]

use shoal_core::api::{ServiceMode, ServiceSpec, TaskState};
use shoal_core::control::ControlRequest;
use shoal_sim::cluster::{ClusterShape, SimCluster};

mod common;
use common::running;

#[madsim::test]
async fn a_service_starts_after_the_services_it_depends_on() {
    let cluster = SimCluster::start(ClusterShape { managers: 1, workers: 2 }).await.expect("cluster starts");
    // db can run nowhere until a node gets its label.
    let mut db = ServiceSpec::new("db", "redis:7");
    db.task.placement.constraints = vec!["node.labels.disk==ssd".into()];
    let mut web = ServiceSpec::new("web", "nginx:1.25");
    web.mode = ServiceMode::Replicated { replicas: 2 };
    web.depends_on = vec!["db".into()];
    // Created in dependency order, as `stack deploy` orders them.
    cluster.control(ControlRequest::ServiceCreate { spec: db }).await.expect("create db");
    cluster.control(ControlRequest::ServiceCreate { spec: web }).await.expect("create web");

    common::wait_until(&cluster, "web", "web's tasks to say what they wait for", 30, |c| {
        let Some(state) = c.store_of_leader() else { return false };
        let web: Vec<_> = state.tasks.values().filter(|t| t.service_name == "web").collect();
        web.len() == 2
            && web
                .iter()
                .all(|t| t.status.state == TaskState::Pending && t.status.err == "waiting for db to start (depends_on)")
    })
    .await;
    // Well past any scheduling delay, still nothing of web runs.
    madsim::time::sleep(std::time::Duration::from_secs(10)).await;
    assert!(running(&cluster, "web").is_empty());

    let node = cluster.store_of_leader().unwrap().nodes.values().next().unwrap().id.clone();
    let label = ControlRequest::NodeUpdate {
        node,
        availability: None,
        label_add: [("disk".to_string(), "ssd".to_string())].into(),
        label_rm: vec![],
    };
    cluster.control(label).await.expect("label a node");
    common::wait_until(&cluster, "web", "db, then both web tasks, running", 60, |c| {
        running(c, "db").len() == 1 && running(c, "web").len() == 2
    })
    .await;
}
