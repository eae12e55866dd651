//! `node promote` / `node demote` when the node is down or crashes.
//!
//! - Promoting a node that has just crashed (still `Ready` in the store: down detection takes three
//!   heartbeat periods) must not cost the swarm its quorum. The leader adds the node as a raft voter
//!   only once it has caught up with the log; a node that never comes up is taken out of the
//!   membership again and stays a worker, and a one-manager swarm keeps committing writes
//!   throughout. Once the node is back, the promotion goes through.
//! - A node that crashes right before its promotion and comes back while `node promote` still waits
//!   starts its replica from its heartbeat hint and becomes a manager.
//! - A manager that crashed can be demoted (the others keep quorum); when it comes back it steps
//!   down to a worker and the swarm keeps working.
#![cfg(madsim)]

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_core::api::{Node, NodeRole, ServiceSpec};
use shoal_core::control::{ControlError, ControlRequest, ControlResponse};
use shoal_sim::cluster::{ClusterShape, SimCluster};

fn node_of(cluster: &SimCluster, name: &str) -> Node {
    let state = cluster.store_of_leader().expect("a leader with a store");
    state.nodes.values().find(|n| n.hostname() == name).cloned().unwrap_or_else(|| panic!("no node {name}"))
}

fn voters(cluster: &SimCluster) -> BTreeSet<u64> {
    let leader = cluster.leader().expect("a leader");
    cluster.node(&leader).and_then(|n| n.replica()).expect("the leader's replica").status().voters
}

fn members(cluster: &SimCluster) -> BTreeSet<u64> {
    let leader = cluster.leader().expect("a leader");
    cluster
        .node(&leader)
        .and_then(|n| n.replica())
        .expect("the leader's replica")
        .status()
        .members
        .into_keys()
        .collect()
}

/// A write that must commit within one proposal timeout (4 s) plus the client's hop.
async fn create(cluster: &SimCluster, name: &str) {
    let started = madsim::time::Instant::now();
    let reply = cluster.control(ControlRequest::ServiceCreate { spec: ServiceSpec::new(name, "nginx:1.25") }).await;
    assert!(matches!(reply, Ok(ControlResponse::Created { .. })), "service create {name}: {reply:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "service create {name} took {:?}", started.elapsed());
}

async fn promote(cluster: &SimCluster, name: &str) -> Result<ControlResponse, ControlError> {
    cluster.control(ControlRequest::NodePromote { node: name.into() }).await
}

#[madsim::test]
async fn promoting_a_node_that_just_crashed_leaves_a_one_manager_swarm_available() {
    let cluster = SimCluster::start(ClusterShape { managers: 1, workers: 2 }).await.expect("cluster starts");
    madsim::time::sleep(Duration::from_secs(2)).await;
    let before = voters(&cluster);
    assert_eq!(before.len(), 1);

    cluster.crash("worker-1");
    let started = madsim::time::Instant::now();
    let err = promote(&cluster, "worker-1").await.expect_err("a crashed node cannot become a manager");
    assert!(matches!(err, ControlError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "promote gave up after {:?}", started.elapsed());
    // Undone: raft's membership is as it was, and the node is still a plain worker.
    assert_eq!(voters(&cluster), before);
    assert_eq!(members(&cluster), before, "the learner that never caught up is gone");
    let node = node_of(&cluster, "worker-1");
    assert_eq!((node.role, node.spec.desired_role), (NodeRole::Worker, NodeRole::Worker));
    assert!(node.manager_status.is_none(), "{:?}", node.manager_status);
    create(&cluster, "while-down").await;

    // Back up, it stays a worker (nobody asks it to serve raft) and the swarm keeps committing.
    cluster.restart("worker-1");
    assert!(cluster.wait_up("worker-1", Duration::from_secs(10)).await);
    madsim::time::sleep(Duration::from_secs(5)).await;
    assert!(!cluster.node("worker-1").expect("worker-1 runs").is_manager());
    create(&cluster, "after-restart").await;

    // Now the promotion goes through: two voters, both up.
    promote(&cluster, "worker-1").await.expect("promote a node that is up");
    assert_eq!(voters(&cluster).len(), 2);
    assert_eq!(node_of(&cluster, "worker-1").role, NodeRole::Manager);
    assert!(cluster.node("worker-1").expect("worker-1 runs").is_manager());
    create(&cluster, "two-managers").await;
}

#[madsim::test]
async fn a_node_back_while_its_promotion_waits_becomes_a_manager() {
    let cluster = SimCluster::start(ClusterShape { managers: 1, workers: 1 }).await.expect("cluster starts");
    madsim::time::sleep(Duration::from_secs(2)).await;
    cluster.crash("worker-1");
    let restart_later = async {
        madsim::time::sleep(Duration::from_secs(3)).await;
        cluster.restart("worker-1");
    };
    let (promoted, ()) = tokio::join!(promote(&cluster, "worker-1"), restart_later);
    promoted.expect("the node came back in time to be promoted");
    assert_eq!(voters(&cluster).len(), 2);
    assert_eq!(node_of(&cluster, "worker-1").role, NodeRole::Manager);
    assert!(cluster.node("worker-1").expect("worker-1 runs").is_manager());
    create(&cluster, "web").await;
}

#[madsim::test]
async fn a_crashed_manager_is_demoted_and_steps_down_when_it_comes_back() {
    let cluster = SimCluster::start(ClusterShape { managers: 3, workers: 1 }).await.expect("cluster starts");
    madsim::time::sleep(Duration::from_secs(2)).await;
    promote(&cluster, "worker-1").await.expect("promote");
    assert_eq!(voters(&cluster).len(), 4);

    // Four voters, one down: three still form a quorum, so writes and the demotion go through.
    cluster.crash("worker-1");
    create(&cluster, "while-down").await;
    cluster.control(ControlRequest::NodeDemote { node: "worker-1".into() }).await.expect("demote a crashed manager");
    assert_eq!(voters(&cluster).len(), 3);
    let node = node_of(&cluster, "worker-1");
    assert_eq!((node.role, node.spec.desired_role), (NodeRole::Worker, NodeRole::Worker));

    // Back up, it learns from its heartbeat that it is a worker and stops serving raft.
    cluster.restart("worker-1");
    assert!(cluster.wait_up("worker-1", Duration::from_secs(10)).await);
    madsim::time::sleep(Duration::from_secs(5)).await;
    assert!(!cluster.node("worker-1").expect("worker-1 runs").is_manager());
    assert_eq!(voters(&cluster).len(), 3);
    create(&cluster, "after-restart").await;

    // And it can be promoted again.
    promote(&cluster, "worker-1").await.expect("promote again");
    assert_eq!(voters(&cluster).len(), 4);
    create(&cluster, "four-managers").await;
}
