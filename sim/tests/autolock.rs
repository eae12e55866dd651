//! Autolock in the simulator (DESIGN §6c): a 3-manager swarm with autolock on. A restarted manager
//! comes up locked — out of raft, answering Swarm's locked error — while the other two serve; a
//! wrong key is refused; the right one opens it and it catches up without a restart. A rotated
//! key replaces the old one; with autolock off a restart comes up unlocked; workers are never
//! locked. The managers' raft files on the simulated disk never hold an entry in plain.
#![cfg(madsim)]

use std::time::Duration;

use shoal_core::api::{ServiceMode, ServiceSpec};
use shoal_core::autolock::{LOCKED, MAGIC, NOT_LOCKED};
use shoal_core::control::{ControlError, ControlRequest, ControlResponse, FileData};
use shoal_sim::cluster::{ClusterShape, SimCluster};

mod common;

const SERVICE: &str = "autolock-web-7d2e";

async fn unlock_key(cluster: &SimCluster, request: ControlRequest) -> String {
    match cluster.control(request).await {
        Ok(ControlResponse::UnlockKey { key }) => key.0,
        other => panic!("unlock key: {other:?}"),
    }
}

async fn unlock(cluster: &SimCluster, host: &str, key: &str) -> Result<ControlResponse, ControlError> {
    cluster.control_on(host, ControlRequest::Unlock { key: FileData(key.to_string()) }).await
}

/// Crash `host` (a torn write at the tail of its files: encrypted frames must cope as records do)
/// and restart it, then give its node time to come up (or to sit locked).
async fn crash_restart(cluster: &SimCluster, host: &str) {
    cluster.crash_torn(host);
    madsim::time::sleep(Duration::from_secs(1)).await;
    cluster.restart(host);
    madsim::time::sleep(Duration::from_secs(3)).await;
}

async fn assert_locked(cluster: &SimCluster, host: &str) {
    assert!(cluster.node(host).is_none(), "{host} runs a node while locked");
    let answer = cluster.control_on(host, ControlRequest::NodeList).await;
    assert_eq!(answer.map(|_| ()).map_err(|e| e.to_string()), Err(LOCKED.to_string()), "{host} answers node ls");
}

fn replicas_on(cluster: &SimCluster, host: &str) -> Option<u64> {
    cluster.node(host)?.store().view(|s| {
        s.services.values().find(|svc| svc.spec.name == SERVICE).and_then(|svc| match svc.spec.mode {
            ServiceMode::Replicated { replicas } => Some(replicas),
            _ => None,
        })
    })
}

/// No raft file of `host` holds `needle` in plain, and each is in the encrypted format.
fn assert_raft_files_encrypted(cluster: &SimCluster, host: &str, needle: &str) {
    let disk = cluster.disk(host).expect("host");
    let names: Vec<String> = ["raft/log", "raft/vote", "raft/snapshot", "secrets.key"]
        .into_iter()
        .map(String::from)
        .filter(|n| disk.raw(n).is_some())
        .collect();
    assert!(names.iter().any(|n| n == "raft/log"), "{host} has a raft log: {names:?}");
    for name in names {
        let raw = disk.raw(&name).unwrap();
        assert!(raw.starts_with(MAGIC), "{host}'s {name} is not encrypted");
        assert!(!raw.windows(needle.len()).any(|w| w == needle.as_bytes()), "{host}'s {name} holds {needle} in plain");
    }
}

fn dek_sealed(cluster: &SimCluster, host: &str) -> bool {
    let raw = cluster.disk(host).and_then(|d| d.raw(shoal_core::autolock::DEK_FILE)).expect("dek.json");
    String::from_utf8_lossy(&raw).contains("\"sealed\"")
}

#[madsim::test]
async fn a_restarted_manager_stays_locked_until_unlocked_with_the_current_key() {
    let cluster = SimCluster::start(ClusterShape { managers: 3, workers: 1 }).await.expect("cluster starts");
    assert_eq!(unlock_key(&cluster, ControlRequest::UnlockKey { rotate: false }).await, "", "autolock starts off");
    let rotate_off = cluster.control(ControlRequest::UnlockKey { rotate: true }).await;
    assert_eq!(
        rotate_off.map(|_| ()).map_err(|e| e.to_string()),
        Err("cannot rotate because autolock is not turned on".into())
    );

    let mut spec = ServiceSpec::new(SERVICE, "nginx:1.25");
    spec.mode = ServiceMode::Replicated { replicas: 2 };
    cluster.control(ControlRequest::ServiceCreate { spec }).await.expect("service create");
    common::wait_until(&cluster, SERVICE, "2 running", 30, |c| common::running(c, SERVICE).len() == 2).await;

    let key = unlock_key(&cluster, ControlRequest::SwarmAutolock { enabled: true }).await;
    assert!(key.starts_with("SWMKEY-1-") && key.len() > 40, "{key}");
    assert_eq!(unlock_key(&cluster, ControlRequest::UnlockKey { rotate: false }).await, key);
    madsim::time::sleep(Duration::from_secs(3)).await;
    for host in ["manager-1", "manager-2", "manager-3"] {
        assert!(dek_sealed(&cluster, host), "{host} re-wrapped its data key with the unlock key");
        assert_raft_files_encrypted(&cluster, host, SERVICE);
    }
    assert!(!dek_sealed(&cluster, "worker-1"), "a worker keeps its data key in plain");
    // No trace event carries the key.
    let trace = serde_json::to_string(&cluster.trace().iter().map(|e| e.fields.clone()).collect::<Vec<_>>()).unwrap();
    assert!(!trace.contains(&key[9..]), "the unlock key is in the trace");

    // A restarted manager is locked: out of raft, every request refused, while the others serve.
    crash_restart(&cluster, "manager-3").await;
    assert_locked(&cluster, "manager-3").await;
    cluster
        .control(ControlRequest::ServiceScale { service: SERVICE.into(), replicas: 3 })
        .await
        .expect("the other two serve");
    common::wait_until(&cluster, SERVICE, "3 running", 30, |c| common::running(c, SERVICE).len() == 3).await;
    let wrong = shoal_core::autolock::UnlockKey::generate().reveal();
    let refused = unlock(&cluster, "manager-3", &wrong).await.map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(refused, Err("swarm could not be unlocked: invalid key provided".into()));
    let garbled = unlock(&cluster, "manager-3", "not-a-key").await.map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(garbled, Err("swarm could not be unlocked: invalid key provided".into()));
    assert_locked(&cluster, "manager-3").await;

    // The right key: it starts without a restart, rejoins raft and catches up.
    unlock(&cluster, "manager-3", &key).await.expect("unlock with the key");
    assert!(cluster.wait_up("manager-3", Duration::from_secs(10)).await, "manager-3 starts once unlocked");
    common::wait_until(&cluster, SERVICE, "manager-3 catches up", 30, |c| replicas_on(c, "manager-3") == Some(3)).await;
    let again = unlock(&cluster, "manager-3", &key).await.map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(again, Err(NOT_LOCKED.to_string()));

    // A worker is never locked.
    crash_restart(&cluster, "worker-1").await;
    assert!(cluster.wait_up("worker-1", Duration::from_secs(10)).await, "a worker restarts unlocked");

    // Rotation: every manager re-wraps; a restart needs the new key, the old one is refused.
    let rotated = unlock_key(&cluster, ControlRequest::UnlockKey { rotate: true }).await;
    assert!(rotated.starts_with("SWMKEY-1-") && rotated != key);
    madsim::time::sleep(Duration::from_secs(3)).await;
    crash_restart(&cluster, "manager-2").await;
    assert_locked(&cluster, "manager-2").await;
    let old = unlock(&cluster, "manager-2", &key).await.map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(old, Err("swarm could not be unlocked: invalid key provided".into()));
    unlock(&cluster, "manager-2", &rotated).await.expect("unlock with the rotated key");
    assert!(cluster.wait_up("manager-2", Duration::from_secs(10)).await, "manager-2 starts once unlocked");

    // Autolock off: the data keys go back to plain and a restart comes up unlocked.
    assert_eq!(unlock_key(&cluster, ControlRequest::SwarmAutolock { enabled: false }).await, "");
    madsim::time::sleep(Duration::from_secs(3)).await;
    for host in ["manager-1", "manager-2", "manager-3"] {
        assert!(!dek_sealed(&cluster, host), "{host} keeps its data key in plain with autolock off");
    }
    crash_restart(&cluster, "manager-1").await;
    assert!(cluster.wait_up("manager-1", Duration::from_secs(10)).await, "manager-1 restarts unlocked");
    let not_locked = unlock(&cluster, "manager-1", &rotated).await.map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(not_locked, Err(NOT_LOCKED.to_string()));
    common::wait_until(&cluster, SERVICE, "manager-1 catches up", 30, |c| replicas_on(c, "manager-1") == Some(3)).await;
    assert_raft_files_encrypted(&cluster, "manager-1", SERVICE);
}
