//! Orchestration end to end in the simulator: services converge, heal after a worker crash and a
//! container removed behind the agent's back, move off a drained node, and roll to a new image.
#![cfg(madsim)]

use shoal_core::api::{Availability, ServiceMode, ServiceSpec};
use shoal_core::control::{ControlRequest, ControlResponse};
use shoal_sim::cluster::{ClusterShape, SimCluster};

mod common;
use common::running;

async fn wait_until(cluster: &SimCluster, what: &str, secs: u64, check: impl Fn(&SimCluster) -> bool) {
    common::wait_until(cluster, "web", what, secs, check).await
}

#[madsim::test]
async fn services_converge_heal_drain_and_roll() {
    let cluster = SimCluster::start(ClusterShape { managers: 3, workers: 3 }).await.expect("cluster starts");
    let mut spec = ServiceSpec::new("web", "nginx:1.25");
    spec.mode = ServiceMode::Replicated { replicas: 6 };
    cluster.control(ControlRequest::ServiceCreate { spec }).await.expect("service create");
    wait_until(&cluster, "6 replicas running", 30, |c| running(c, "web").len() == 6).await;

    // A worker host dies: its tasks are replaced elsewhere once it is marked down.
    cluster.crash("worker-1");
    wait_until(&cluster, "6 running without worker-1", 60, |c| {
        let r = running(c, "web");
        r.len() == 6 && r.iter().all(|(host, _)| host != "worker-1")
    })
    .await;

    // Someone removes a container behind the agent's back: the task fails and is replaced.
    let victim = cluster.executor("worker-2").expect("worker-2").running();
    if let Some(container) = victim.first() {
        assert!(cluster.executor("worker-2").unwrap().remove_behind_back(&container.id));
    }
    wait_until(&cluster, "6 running after a container removal", 30, |c| running(c, "web").len() == 6).await;

    // Drain: no task of the service stays on worker-3.
    let drain = ControlRequest::NodeUpdate {
        node: "worker-3".into(),
        availability: Some(Availability::Drain),
        label_add: Default::default(),
        label_rm: vec![],
    };
    cluster.control(drain).await.expect("drain");
    wait_until(&cluster, "nothing on drained worker-3", 60, |c| {
        let r = running(c, "web");
        r.len() == 6 && r.iter().all(|(host, _)| host != "worker-3")
    })
    .await;

    // Rolling update to a new image.
    let current = match cluster.control(ControlRequest::ServiceInspect { service: "web".into() }).await {
        Ok(ControlResponse::Service(view)) => view.service,
        other => panic!("inspect: {other:?}"),
    };
    let mut spec = current.spec.clone();
    spec.task.image = "nginx:1.26".into();
    cluster
        .control(ControlRequest::ServiceUpdate { service: "web".into(), version: current.meta.version, spec })
        .await
        .expect("service update");
    wait_until(&cluster, "6 running nginx:1.26", 120, |c| {
        let r = running(c, "web");
        r.len() == 6 && r.iter().all(|(_, image)| image == "nginx:1.26")
    })
    .await;
}
