//! `swarm ca --rotate` in the simulator (DESIGN §6b): a 3-manager, 2-worker swarm rotates its root
//! CA while a service runs; a worker that crashes during the rotation holds it until it comes back
//! (or is removed), `swarm ca` counts the nodes renewed meanwhile, the running tasks are never
//! touched, and once the rotation ends the join tokens carry the new digest and the old ones are
//! refused. In the simulator a node's certificate is the issuer digest it reports.
#![cfg(madsim)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::wait_until;
use shoal_core::api::{NodeRole, ServiceMode, ServiceSpec, TaskState};
use shoal_core::ca_rotation::CaProgress;
use shoal_core::control::{CaView, ControlRequest, ControlResponse};
use shoal_core::node::Bootstrap;
use shoal_sim::cluster::{ClusterShape, SimCluster};

async fn ca(cluster: &SimCluster) -> CaView {
    match cluster.control(ControlRequest::CaInspect).await {
        Ok(ControlResponse::Ca(view)) => *view,
        other => panic!("swarm ca: {other:?}"),
    }
}

fn progress_of(cluster: &SimCluster) -> Option<CaProgress> {
    shoal_core::ca_rotation::progress(&cluster.store_of_leader()?)
}

async fn token(cluster: &SimCluster, role: NodeRole) -> String {
    match cluster.control(ControlRequest::JoinToken { role, rotate: false }).await {
        Ok(ControlResponse::JoinToken { token, .. }) => token,
        other => panic!("join-token: {other:?}"),
    }
}

/// Running task ids of `service`, with the hostnames they run on.
fn running_tasks(cluster: &SimCluster, service: &str) -> BTreeSet<(String, String)> {
    let Some(state) = cluster.store_of_leader() else { return BTreeSet::new() };
    state
        .tasks
        .values()
        .filter(|t| t.service_name == service && t.status.state == TaskState::Running)
        .map(|t| (state.nodes.get(&t.node_id).map(|n| n.hostname().to_string()).unwrap_or_default(), t.id.clone()))
        .collect()
}

async fn rotating_swarm() -> (SimCluster, BTreeSet<(String, String)>, String) {
    let cluster = SimCluster::start(ClusterShape { managers: 3, workers: 2 }).await.expect("cluster starts");
    let mut spec = ServiceSpec::new("web", "nginx:1.25");
    spec.mode = ServiceMode::Replicated { replicas: 5 };
    let reply = cluster.control(ControlRequest::ServiceCreate { spec }).await;
    assert!(matches!(reply, Ok(ControlResponse::Created { .. })), "{reply:?}");
    wait_until(&cluster, "web", "5 replicas running", 60, |c| running_tasks(c, "web").len() == 5).await;
    // Every node reports the certificate it holds before the rotation starts.
    wait_until(&cluster, "web", "every node reports its TLS", 30, |c| {
        progress_of(c).is_some_and(|p| p.total == 5 && p.converged())
    })
    .await;
    let before = running_tasks(&cluster, "web");
    let old_digest = ca(&cluster).await.root_ca_digest;
    (cluster, before, old_digest)
}

#[madsim::test]
async fn a_rotation_waits_for_a_crashed_worker_and_finishes_once_it_is_back() {
    let (cluster, before, old_digest) = rotating_swarm().await;
    let old_worker_token = token(&cluster, NodeRole::Worker).await;

    cluster.crash("worker-2");
    let reply = cluster.control(ControlRequest::CaRotate { new_root: None }).await;
    assert_eq!(reply, Ok(ControlResponse::Done));
    let view = ca(&cluster).await;
    assert!(view.progress.rotation_in_progress);
    let new_digest = view.progress.desired_root_digest.clone();
    assert_ne!(new_digest, old_digest);

    // The four live nodes renew; the crashed one holds the rotation.
    wait_until(&cluster, "web", "four nodes renewed", 30, |c| progress_of(c).is_some_and(|p| p.certs_rotated == 4))
        .await;
    madsim::time::sleep(Duration::from_secs(20)).await;
    let view = ca(&cluster).await;
    assert!(view.progress.rotation_in_progress, "the rotation must wait for worker-2: {:?}", view.progress);
    assert_eq!((view.progress.certs_rotated, view.progress.total), (4, 5));
    assert_eq!(view.progress.waiting_for.len(), 1);
    assert_eq!(view.progress.waiting_for[0].0, "worker-2");
    assert_eq!(view.root_ca_digest, old_digest, "the old root stays the root until every node renewed");
    assert_eq!(token(&cluster, NodeRole::Worker).await, old_worker_token, "tokens change only at the end");
    let rotating = |reply| matches!(reply, Ok(ControlResponse::Info(info)) if info.root_rotation_in_progress);
    assert!(rotating(cluster.control(ControlRequest::Info).await), "`info` shows the rotation under way");

    cluster.restart("worker-2");
    assert!(cluster.wait_up("worker-2", Duration::from_secs(10)).await);
    wait_until(&cluster, "web", "the rotation finished", 60, |c| progress_of(c).is_some_and(|p| p.converged())).await;
    let view = ca(&cluster).await;
    assert_eq!(view.root_ca_digest, new_digest);
    assert_eq!((view.progress.certs_rotated, view.progress.roots_rotated, view.progress.total), (5, 5, 5));
    assert!(!rotating(cluster.control(ControlRequest::Info).await));

    // Tasks on the nodes that stayed up were never replaced.
    let after = running_tasks(&cluster, "web");
    for (host, task) in before.iter().filter(|(host, _)| host != "worker-2") {
        assert!(after.contains(&(host.clone(), task.clone())), "task {task} on {host} was replaced: {after:?}");
    }

    // The join tokens carry the new digest; the old ones are refused for it.
    let new_worker_token = token(&cluster, NodeRole::Worker).await;
    assert!(new_worker_token.contains(&new_digest), "{new_worker_token}");
    let state = cluster.store_of_leader().expect("a leader");
    let refused = shoal_core::tokens::check(&old_worker_token, state.cluster.as_ref().unwrap()).unwrap_err();
    assert!(refused.to_string().contains("remote CA does not match fingerprint"), "{refused}");

    // A node joins with the new token.
    let mut cluster = cluster;
    let remote = "manager-1:2377".to_string();
    let join = Bootstrap::Join { remote_addr: remote, token: new_worker_token };
    cluster.add_host("worker-3", join).await.expect("worker-3 joins with the new token");
    wait_until(&cluster, "web", "worker-3 reports the new root", 30, |c| {
        progress_of(c).is_some_and(|p| p.total == 6 && p.converged())
    })
    .await;
}

#[madsim::test]
async fn a_rotation_finishes_once_the_crashed_worker_is_removed() {
    let (cluster, _, old_digest) = rotating_swarm().await;
    cluster.crash("worker-1");
    assert_eq!(cluster.control(ControlRequest::CaRotate { new_root: None }).await, Ok(ControlResponse::Done));
    wait_until(&cluster, "web", "four nodes renewed", 30, |c| progress_of(c).is_some_and(|p| p.certs_rotated == 4))
        .await;
    assert!(ca(&cluster).await.progress.rotation_in_progress);
    // Down detection, then `node rm --force`.
    wait_until(&cluster, "web", "worker-1 down", 30, |c| {
        c.store_of_leader().is_some_and(|s| {
            s.nodes.values().any(|n| n.hostname() == "worker-1" && n.status.state == shoal_core::api::NodeState::Down)
        })
    })
    .await;
    let reply = cluster.control(ControlRequest::NodeRemove { node: "worker-1".into(), force: true }).await;
    assert_eq!(reply, Ok(ControlResponse::Done));
    wait_until(&cluster, "web", "the rotation finished", 30, |c| progress_of(c).is_some_and(|p| p.converged())).await;
    let view = ca(&cluster).await;
    assert_ne!(view.root_ca_digest, old_digest);
    assert_eq!(view.progress.total, 4);
}
