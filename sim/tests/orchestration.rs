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

/// Issue 14, item 7: `--restart-delay` means Swarm's fixed delay unless the service asks for the
/// exponential back-off. A task that runs 1 s and exits is restarted over and over; the gap between
/// each exit and the next start is measured in virtual time.
#[madsim::test]
async fn restart_delay_is_fixed_by_default_and_doubles_only_with_exponential_backoff() {
    use std::collections::BTreeMap;

    use shoal_core::api::{RestartBackoff, TaskState};

    let cluster = SimCluster::start(ClusterShape { managers: 1, workers: 1 }).await.expect("cluster starts");
    for (name, backoff) in [("fixed", RestartBackoff::Fixed), ("backoff", RestartBackoff::Exponential)] {
        let mut spec = ServiceSpec::new(name, "busybox");
        spec.task.command = vec!["sleep".into(), "1".into()];
        spec.task.restart_policy.delay_ms = 2_000;
        spec.task.restart_policy.backoff = backoff;
        cluster.control(ControlRequest::ServiceCreate { spec }).await.expect("service create");
    }
    // Every task's (start, end) as the leader's store shows them, kept even after the reaper deletes
    // old tasks; by service, in start order.
    let mut runs: BTreeMap<String, BTreeMap<String, (u64, u64)>> = BTreeMap::new();
    for _ in 0..400 {
        madsim::time::sleep(std::time::Duration::from_millis(100)).await;
        let Some(state) = cluster.store_of_leader() else { continue };
        for t in state.tasks.values() {
            if t.status.started_at_ms > 0 && t.status.state > TaskState::Running {
                runs.entry(t.service_name.clone())
                    .or_default()
                    .insert(t.id.clone(), (t.status.started_at_ms, t.status.timestamp_ms));
            }
        }
    }
    let gaps = |service: &str| -> Vec<u64> {
        let mut spans: Vec<(u64, u64)> = runs.get(service).map(|r| r.values().copied().collect()).unwrap_or_default();
        spans.sort();
        spans.windows(2).map(|w| w[1].0 - w[0].1).collect()
    };
    // Scheduling, dispatch and the container start take a few simulated milliseconds on top.
    let about = |gap: u64, delay: u64| (delay..delay + 500).contains(&gap);
    let fixed = gaps("fixed");
    assert!(fixed.len() >= 8, "a dozen restarts in 40 s: {fixed:?}");
    assert!(fixed.iter().all(|&g| about(g, 2_000)), "2 s between every exit and the next start: {fixed:?}");
    let backoff = gaps("backoff");
    assert!(backoff.len() >= 3, "{backoff:?}");
    for (i, &gap) in backoff.iter().enumerate() {
        assert!(about(gap, 2_000 << i), "gap {i} is 2 s × 2^{i}: {backoff:?}");
    }
}
