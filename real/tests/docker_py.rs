//! docker-py (PyPI `docker`, installed by `.ci/run`) against a shoal daemon's Engine API socket:
//! `real/tests/data/docker_py_swarm.py` inits a swarm, creates a service with docker-py's lowercase
//! keys, lists with its list-style filters, scales, updates, reads logs, removes and leaves — all
//! through docker-py's own API, so the requests are exactly what docker-py sends.

mod common;

use std::process::Command;

use common::{require_docker, CleanupBridges, CleanupContainers, DaemonProc};

const IMAGE: &str = "shoal-test/busybox:latest";
const SERVICE: &str = "dkpy_web";

#[test]
fn docker_py_drives_a_shoal_swarm() {
    require_docker();
    let bridges = CleanupBridges::default();
    let _cleanup = CleanupContainers(SERVICE);
    let (daemon, api, _api_dir) = DaemonProc::spawn_with_api("py-m1", "127.0.0.165");
    let flag = api.to_str().unwrap().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/docker_py_swarm.py");
    let output = Command::new("timeout")
        .args(["300", "python3", script, &flag, &daemon.addr, &daemon.data_port.to_string(), IMAGE, SERVICE])
        .env_remove("DOCKER_HOST")
        .output()
        .expect("run python3 (docker-py must be installed: .ci/run installs python3-docker)");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    if let Some(id) = stdout.lines().find_map(|l| l.strip_prefix("node id: ")) {
        bridges.add(id);
    }
    assert!(
        output.status.success() && stdout.contains("docker-py: all steps passed"),
        "docker-py script failed ({:?})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- daemon log ---\n{}",
        output.status.code(),
        daemon.log()
    );
    for step in ["created ", "2 tasks running", "scaled to 3", "updated", "logs: ", "removed"] {
        assert!(stdout.contains(step), "{step:?} in\n{stdout}");
    }
}
