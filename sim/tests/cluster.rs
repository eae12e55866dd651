//! The whole node, in the simulator: a cluster forms (init, joins as worker and manager), workers
//! hold sessions, and the control plane survives a leader crash.
#![cfg(madsim)]

use std::time::Duration;

use shoal_core::api::NodeState;
use shoal_core::control::{ControlError, ControlRequest, ControlResponse};
use shoal_sim::cluster::{ClusterShape, SimCluster};

async fn ready_nodes(cluster: &SimCluster) -> usize {
    match cluster.control(ControlRequest::NodeList).await {
        Ok(ControlResponse::Nodes(nodes)) => nodes.iter().filter(|n| n.node.status.state == NodeState::Ready).count(),
        _ => 0,
    }
}

#[madsim::test]
async fn cluster_forms_and_survives_leader_crash() {
    let cluster = SimCluster::start(ClusterShape { managers: 3, workers: 2 }).await.expect("cluster starts");
    madsim::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ready_nodes(&cluster).await, 5, "every node joins and reports ready");
    let leader = cluster.leader().expect("a leader");
    assert_eq!(leader, "manager-1");
    // With every manager up, a manager's leave is refused without the quorum sentence.
    let refusal = cluster.leave("manager-2", false).await.unwrap_err().to_string();
    assert_eq!(
        refusal,
        "You are attempting to leave the swarm on a node that is participating as a manager. The only way to \
         restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to \
         suppress this message."
    );

    cluster.crash(&leader);
    madsim::time::sleep(Duration::from_secs(5)).await;
    let new_leader = cluster.leader().expect("a new leader is elected");
    assert_ne!(new_leader, leader);
    // The old leader's node goes down after the heartbeat grace (3 × 1 s here).
    madsim::time::sleep(Duration::from_secs(5)).await;
    let nodes = match cluster.control(ControlRequest::NodeList).await {
        Ok(ControlResponse::Nodes(nodes)) => nodes,
        other => panic!("node ls after fail-over: {other:?}"),
    };
    let old = nodes.iter().find(|n| n.node.description.hostname == leader).expect("old leader listed");
    assert_eq!(old.node.status.state, NodeState::Down, "a crashed node is marked down");
    // The crashed manager is unreachable in the new leader's view; the two others are reachable.
    let reach: Vec<(&str, &str)> = nodes
        .iter()
        .filter(|n| !n.reachability.is_empty())
        .map(|n| (n.node.description.hostname.as_str(), n.reachability.as_str()))
        .collect();
    let unreachable: Vec<&str> = reach.iter().filter(|(_, r)| *r == "unreachable").map(|(h, _)| *h).collect();
    assert_eq!(unreachable, [leader.as_str()], "{reach:?}");
    assert_eq!(reach.iter().filter(|(_, r)| *r == "reachable").count(), 2, "{reach:?}");
    // Leaving now would lose the quorum: Swarm's refusal says so, counting from the leader's view.
    let follower = ["manager-2", "manager-3"].into_iter().find(|m| *m != new_leader).expect("a follower");
    let refusal = cluster.leave(follower, false).await.unwrap_err().to_string();
    assert_eq!(
        refusal,
        "You are attempting to leave the swarm on a node that is participating as a manager. Removing this node \
         leaves 1 managers out of 3. Without a Raft quorum your swarm will be inaccessible. The only way to restore \
         a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress \
         this message."
    );

    cluster.restart(&leader);
    assert!(cluster.wait_up(&leader, Duration::from_secs(30)).await, "the crashed manager resumes from disk");
    madsim::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(ready_nodes(&cluster).await, 5, "the restarted node is ready again");
}

#[madsim::test]
async fn quorum_loss_fails_fast_then_recovers() {
    let cluster = SimCluster::start(ClusterShape { managers: 3, workers: 0 }).await.expect("cluster starts");
    madsim::time::sleep(Duration::from_secs(2)).await;
    cluster.crash("manager-2");
    cluster.crash("manager-3");
    madsim::time::sleep(Duration::from_secs(5)).await;
    let spec = shoal_core::api::ServiceSpec::new("web", "nginx:1.25");
    let err = cluster.control(ControlRequest::ServiceCreate { spec: spec.clone() }).await.unwrap_err();
    assert_eq!(err, ControlError::NoLeader, "writes fail with Swarm's lost-quorum error");
    assert!(err.to_string().contains("Make sure more than half of the managers are online."));
    cluster.restart("manager-2");
    assert!(cluster.wait_up("manager-2", Duration::from_secs(30)).await);
    madsim::time::sleep(Duration::from_secs(5)).await;
    cluster.control(ControlRequest::ServiceCreate { spec }).await.expect("writes work again with a quorum");
}

#[madsim::test]
async fn the_last_manager_is_told_that_leaving_erases_the_swarm() {
    let cluster = SimCluster::start(ClusterShape { managers: 1, workers: 1 }).await.expect("cluster starts");
    madsim::time::sleep(Duration::from_secs(2)).await;
    let refusal = cluster.leave("manager-1", false).await.unwrap_err().to_string();
    assert_eq!(
        refusal,
        "You are attempting to leave the swarm on a node that is participating as a manager. Removing the last \
         manager erases all current state of the swarm. Use `--force` to ignore this message. "
    );
    assert_eq!(ready_nodes(&cluster).await, 2, "a refused leave changes nothing");
}

/// Eight `network create` without `--subnet`, at once: each gets its own default /16 (the store
/// refuses an overlapping subnet, and the loser picks again), none fails.
#[madsim::test]
async fn concurrent_network_creates_get_distinct_subnets() {
    let cluster = SimCluster::start(ClusterShape { managers: 3, workers: 0 }).await.expect("cluster starts");
    madsim::time::sleep(Duration::from_secs(2)).await;
    let requests = (0..8)
        .map(|n| ControlRequest::NetworkCreate {
            name: format!("net{n}"),
            driver: String::new(),
            attachable: false,
            labels: Default::default(),
            subnet: String::new(),
            ingress: false,
        })
        .collect();
    for answer in cluster.control_concurrently(requests).await {
        assert!(matches!(answer, Ok(ControlResponse::Created { .. })), "{answer:?}");
    }
    let networks = match cluster.control(ControlRequest::NetworkList).await {
        Ok(ControlResponse::Networks(networks)) => networks,
        other => panic!("network ls: {other:?}"),
    };
    let subnets: std::collections::BTreeSet<&str> = networks.iter().map(|n| n.subnet.as_str()).collect();
    assert_eq!(subnets.len(), networks.len(), "every network has its own subnet: {networks:?}");
    assert_eq!(networks.len(), 9, "the eight and ingress");
    // An explicit subnet that overlaps is refused in Docker's words.
    let taken = networks.iter().find(|n| n.name == "net3").map(|n| n.subnet.clone()).expect("net3");
    let err = cluster
        .control(ControlRequest::NetworkCreate {
            name: "late".into(),
            driver: String::new(),
            attachable: false,
            labels: Default::default(),
            subnet: taken.clone(),
            ingress: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), format!("Pool overlaps with other one on this address space: {taken}"));
}
