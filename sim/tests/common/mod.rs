//! What the simulator's integration tests share: the running tasks of a service as the leader's
//! store has them, and a poll on virtual time that fails the test with that picture.

use std::time::Duration;

use shoal_core::api::TaskState;
use shoal_sim::cluster::SimCluster;

/// Running tasks of `service` (desired and observed running) as (node hostname, image), from the
/// leader's store; none while there is no leader.
pub fn running(cluster: &SimCluster, service: &str) -> Vec<(String, String)> {
    let Some(state) = cluster.store_of_leader() else { return vec![] };
    state
        .tasks
        .values()
        .filter(|t| {
            t.service_name == service && t.status.state == TaskState::Running && t.desired_state == TaskState::Running
        })
        .map(|t| {
            let host = state.nodes.get(&t.node_id).map(|n| n.description.hostname.clone()).unwrap_or_default();
            (host, t.spec.image.clone())
        })
        .collect()
}

/// Check every 100 ms of virtual time, for up to `secs`; panic naming `what`, the leader and the
/// running tasks of `service` if `check` never holds.
pub async fn wait_until(
    cluster: &SimCluster,
    service: &str,
    what: &str,
    secs: u64,
    check: impl Fn(&SimCluster) -> bool,
) {
    for _ in 0..secs * 10 {
        if check(cluster) {
            return;
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "not within {secs} s: {what}; leader {:?}, running {service}: {:?}",
        cluster.leader(),
        running(cluster, service)
    );
}
