//! `swarm init --force-new-cluster` end to end: a swarm that lost its raft quorum (two of three
//! managers crashed) is rebuilt around the last manager, which keeps the swarm's state — services,
//! tasks, nodes — leads alone, takes writes again, and the workers' agents find it.
#![cfg(madsim)]

use std::time::Duration;

use shoal_core::api::{NodeState, ServiceMode, ServiceSpec};
use shoal_core::control::{ControlError, ControlRequest};
use shoal_sim::cluster::{ClusterShape, SimCluster};

mod common;
use common::running;

fn node_state(cluster: &SimCluster, name: &str) -> Option<NodeState> {
    let state = cluster.store_of_leader()?;
    state.nodes.values().find(|n| n.description.hostname == name).map(|n| n.status.state)
}

async fn wait_until(cluster: &SimCluster, what: &str, secs: u64, check: impl Fn(&SimCluster) -> bool) {
    common::wait_until(cluster, "web", what, secs, check).await
}

#[madsim::test]
async fn force_new_cluster_recovers_a_swarm_that_lost_quorum() {
    let cluster = SimCluster::start(ClusterShape { managers: 3, workers: 2 }).await.expect("cluster starts");
    let mut spec = ServiceSpec::new("web", "nginx:1.25");
    spec.mode = ServiceMode::Replicated { replicas: 4 };
    cluster.control(ControlRequest::ServiceCreate { spec }).await.expect("service create");
    wait_until(&cluster, "4 replicas running", 30, |c| running(c, "web").len() == 4).await;
    let service_id = cluster.store_of_leader().expect("store").services.keys().next().cloned().expect("a service");

    // Two of three managers die: no quorum, writes fail with Swarm's lost-quorum error.
    cluster.crash("manager-2");
    cluster.crash("manager-3");
    madsim::time::sleep(Duration::from_secs(5)).await;
    let scale = |replicas| ControlRequest::ServiceScale { service: "web".into(), replicas };
    let err = cluster.control(scale(5)).await.expect_err("no write without quorum");
    assert!(matches!(err, ControlError::NoLeader), "{err:?}");

    // swarm init --force-new-cluster on the survivor.
    cluster.force_new_cluster("manager-1");
    assert!(cluster.wait_up("manager-1", Duration::from_secs(30)).await, "manager-1 comes back");
    wait_until(&cluster, "manager-1 leads", 30, |c| c.leader().as_deref() == Some("manager-1")).await;
    let status = cluster.node("manager-1").and_then(|n| n.replica()).expect("manager-1's replica").status();
    assert_eq!(status.voters.len(), 1, "one voter: {:?}", status.voters);

    // The state survived: the same service, its tasks, the workers as nodes.
    let state = cluster.store_of_leader().expect("store");
    assert!(state.services.contains_key(&service_id), "service kept");
    let tasks = state.tasks.values().filter(|t| t.service_id == service_id).count();
    assert!(tasks >= 4, "tasks kept: {tasks}");
    for worker in ["worker-1", "worker-2"] {
        assert!(node_state(&cluster, worker).is_some(), "{worker} still a node");
    }
    // The workers' agents reconnect to the only manager left.
    wait_until(&cluster, "workers ready", 60, |c| {
        ["worker-1", "worker-2"].iter().all(|w| node_state(c, w) == Some(NodeState::Ready))
    })
    .await;

    // A new write commits and converges, on the hosts that are up.
    cluster.control(scale(6)).await.expect("scale after force-new-cluster");
    wait_until(&cluster, "6 replicas running on live hosts", 90, |c| {
        let r = running(c, "web");
        r.len() == 6 && r.iter().all(|(h, _)| h != "manager-2" && h != "manager-3")
    })
    .await;
}
