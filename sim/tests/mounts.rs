//! `--mount` through the control plane, in the simulator: a service's mounts reach the simulated
//! container spec on the node that runs the task, a named volume is created there with the mount's
//! labels and driver (and only there: nothing pins the next task to that node, as in Swarm), and a
//! bind mount whose source the node lacks fails the task with Docker's error. The daemon's end-to-end
//! test on the Docker engine is `real/tests/jobs_volumes.rs`.
#![cfg(madsim)]

use shoal_core::api::mounts::parse_mount;
use shoal_core::api::{MountType, ServiceMode, ServiceSpec, TaskState};
use shoal_core::control::ControlRequest;
use shoal_sim::cluster::{ClusterShape, SimCluster};

mod common;

#[madsim::test]
async fn mounts_reach_the_container_and_a_missing_bind_source_fails_the_task() {
    let cluster = SimCluster::start(ClusterShape { managers: 1, workers: 2 }).await.expect("cluster starts");
    let mut spec = ServiceSpec::new("db", "postgres:16");
    spec.mode = ServiceMode::Replicated { replicas: 1 };
    spec.task.placement.constraints = vec!["node.role==worker".into()];
    spec.task.mounts = vec![
        parse_mount("type=volume,source=pgdata,target=/var/lib/postgresql/data,volume-label=tier=db").unwrap(),
        parse_mount("type=bind,source=/etc,target=/host-etc,ro").unwrap(),
        parse_mount("type=tmpfs,target=/run/cache,tmpfs-size=1m").unwrap(),
    ];
    cluster.control(ControlRequest::ServiceCreate { spec }).await.expect("service create");
    common::wait_until(&cluster, "db", "db running", 30, |c| common::running(c, "db").len() == 1).await;

    let node = common::running(&cluster, "db")[0].0.clone();
    let executors = cluster.executors();
    let executor = &executors[&node];
    let mounts = executor.mounts_of();
    let (name, container_mounts) = mounts.iter().find(|(name, _)| name.starts_with("db.1.")).expect("the container");
    assert_eq!(container_mounts.len(), 3, "{name}: {container_mounts:?}");
    assert_eq!(
        container_mounts.iter().map(|m| (m.kind, m.source.as_str(), m.target.as_str())).collect::<Vec<_>>(),
        [
            (MountType::Volume, "pgdata", "/var/lib/postgresql/data"),
            (MountType::Bind, "/etc", "/host-etc"),
            (MountType::Tmpfs, "", "/run/cache")
        ]
    );
    assert!(container_mounts[1].read_only);
    let volumes = executor.volumes();
    assert_eq!(volumes["pgdata"].driver, "local");
    assert_eq!(volumes["pgdata"].labels.get("tier").map(String::as_str), Some("db"));
    for (other, exec) in &executors {
        if other != &node {
            assert!(exec.volumes().is_empty(), "{other} made a volume it does not use");
        }
    }

    // A bind source the node does not have: the task fails with Docker's words and is restarted
    // (and fails again) by its restart policy.
    let mut bad = ServiceSpec::new("bad", "busybox:1.36");
    bad.task.mounts = vec![parse_mount("type=bind,source=/nope,target=/data").unwrap()];
    bad.task.restart_policy.delay_ms = 1_000;
    cluster.control(ControlRequest::ServiceCreate { spec: bad }).await.expect("service create");
    let want = "invalid mount config for type \"bind\": bind source path does not exist: /nope";
    common::wait_until(&cluster, "bad", "the task rejected with Docker's error", 30, |c| {
        let Some(state) = c.store_of_leader() else { return false };
        state
            .tasks
            .values()
            .any(|t| t.service_name == "bad" && t.status.state == TaskState::Rejected && t.status.err == want)
    })
    .await;

    // Once a node has the path, the same service runs there.
    for exec in cluster.executors().values() {
        exec.add_host_path("/nope");
    }
    common::wait_until(&cluster, "bad", "bad running once the path exists", 30, |c| {
        common::running(c, "bad").len() == 1
    })
    .await;

    // Two mounts at one target are refused by the control API, in swarmkit's words.
    let mut twice = ServiceSpec::new("twice", "busybox:1.36");
    twice.task.mounts = vec![parse_mount("src=a,dst=/x").unwrap(), parse_mount("src=b,dst=/x").unwrap()];
    let err = cluster.control(ControlRequest::ServiceCreate { spec: twice }).await.unwrap_err();
    assert!(err.to_string().contains("invalid duplicate mount point: /x"), "{err}");
}
