//! End to end: real `shoal daemon` processes on loopback addresses (127.0.0.x), driven by the
//! `shoal` CLI exactly as a user would: 1 manager + 2 workers, a 3-replica service converges, a
//! worker daemon is killed (by pid) and its tasks run elsewhere, a worker is drained, and a rolling
//! update converges. Once with the process executor, once with Docker (image
//! `shoal-test/busybox:latest`, built by `.ci/run`) — the Docker test fails, not skips, without Docker.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shoal");

/// One daemon process with its own data dir, socket and swarm address.
struct DaemonProc {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    socket: PathBuf,
    hostname: String,
    /// `ip:port` for swarm traffic.
    addr: String,
}

fn free_port(ip: &str) -> u16 {
    let listener = TcpListener::bind((ip, 0)).expect("bind a loopback port");
    listener.local_addr().expect("local addr").port()
}

impl DaemonProc {
    fn spawn(hostname: &str, ip: &str, executor: &str) -> DaemonProc {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("shoal.sock");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        let child = Command::new(BIN)
            .args(["daemon", "--executor", executor, "--hostname", hostname])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start shoal daemon");
        let daemon = DaemonProc {
            child: Some(child),
            _dir: dir,
            socket,
            hostname: hostname.into(),
            addr: format!("{ip}:{}", free_port(ip)),
        };
        wait_for(Duration::from_secs(20), "the daemon's socket", || daemon.shoal(&["info"]).ok());
        daemon
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Run the CLI against this daemon; Ok(stdout) on exit 0, Err(stderr) otherwise.
    fn shoal(&self, args: &[&str]) -> Result<String, String> {
        self.shoal_within(args, Duration::from_secs(30))
    }

    fn shoal_within(&self, args: &[&str], deadline: Duration) -> Result<String, String> {
        let mut child = Command::new(BIN)
            .arg("-H")
            .arg(self.host())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run shoal");
        let start = Instant::now();
        loop {
            if child.try_wait().expect("wait for shoal").is_some() {
                break;
            }
            if start.elapsed() > deadline {
                let _ = child.kill();
                let output = child.wait_with_output().expect("collect output");
                return Err(format!(
                    "`shoal {}` did not finish within {deadline:?}; stdout so far:\n{}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stdout)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().expect("collect output");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&output.stderr), stdout))
        }
    }

    fn must(&self, args: &[&str]) -> String {
        match self.shoal(args) {
            Ok(out) => out,
            Err(err) => panic!("`shoal {}` failed: {err}\n--- daemon log ---\n{}", args.join(" "), self.log()),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crashed host: nothing is cleaned up.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM first: the daemon shuts its node down and removes its socket.
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_for<T>(deadline: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().filter(|l| !l.trim().is_empty()).filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Running tasks of `service` per node hostname.
fn running_by_node(manager: &DaemonProc, service: &str) -> Option<std::collections::BTreeMap<String, usize>> {
    let out = manager.shoal(&["service", "ps", service, "--format", "json", "-f", "desired-state=running"]).ok()?;
    let mut counts = std::collections::BTreeMap::new();
    for row in json_lines(&out) {
        let state = row["CurrentState"].as_str().unwrap_or_default();
        if state.starts_with("Running") {
            *counts.entry(row["Node"].as_str().unwrap_or_default().to_string()).or_insert(0) += 1;
        }
    }
    Some(counts)
}

fn scenario(prefix: &str, ip_base: u8, executor: &str, service_args: &[&str]) {
    let ip = |n: u8| format!("127.0.0.{}", ip_base + n);
    let manager = DaemonProc::spawn(&format!("{prefix}-m"), &ip(1), executor);
    let mut worker1 = DaemonProc::spawn(&format!("{prefix}-w1"), &ip(2), executor);
    let worker2 = DaemonProc::spawn(&format!("{prefix}-w2"), &ip(3), executor);

    assert_eq!(manager.must(&["info"]), " Swarm: inactive\n");
    let init = manager.must(&[
        "swarm",
        "init",
        "--advertise-addr",
        &manager.addr,
        "--listen-addr",
        &manager.addr,
        "--dispatcher-heartbeat",
        "1s",
    ]);
    assert!(init.starts_with("Swarm initialized: current node ("), "{init}");
    assert!(init.contains("    shoal swarm join --token SWMTKN-1-"), "{init}");
    let token = manager.must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
    for worker in [&worker1, &worker2] {
        let joined = worker.must(&[
            "swarm",
            "join",
            "--token",
            &token,
            "--advertise-addr",
            &worker.addr,
            "--listen-addr",
            &worker.addr,
            &manager.addr,
        ]);
        assert_eq!(joined, "This node joined a swarm as a worker.\n");
    }
    wait_for(Duration::from_secs(30), "3 ready nodes", || {
        let nodes = json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?);
        (nodes.len() == 3 && nodes.iter().all(|n| n["Status"] == "Ready")).then_some(())
    });
    let table = manager.must(&["node", "ls"]);
    assert!(table.starts_with("ID                            HOSTNAME"), "{table}");
    assert!(table.contains("Leader"), "{table}");

    // A 3-replica service converges; the CLI waits and says so.
    let service = format!("{prefix}-web");
    let mut create = vec!["service", "create", "--name", &service, "--replicas", "3", "--update-monitor", "1s"];
    create.extend_from_slice(service_args);
    let created = manager
        .shoal_within(&create, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("service create: {e}\n{}", manager.log()));
    assert!(created.contains("overall progress: 3 out of 3 tasks"), "{created}");
    assert!(created.ends_with("verify: Service converged\n"), "{created}");
    let ls = manager.must(&["service", "ls"]);
    assert!(ls.contains(&format!("{service}   replicated   3/3")), "{ls}");

    // Kill a worker daemon: its tasks run elsewhere.
    wait_for(Duration::from_secs(30), "a task on worker 1", || {
        running_by_node(&manager, &service)?.get(&worker1.hostname).copied().filter(|&n| n > 0)
    });
    worker1.kill();
    wait_for(Duration::from_secs(90), "3 running tasks off the killed worker", || {
        let counts = running_by_node(&manager, &service)?;
        (counts.values().sum::<usize>() == 3 && !counts.contains_key(&worker1.hostname)).then_some(())
    });
    let nodes = json_lines(&manager.must(&["node", "ls", "--format", "json"]));
    let down = nodes.iter().find(|n| n["Hostname"] == worker1.hostname.as_str()).expect("killed worker listed");
    assert_eq!(down["Status"], "Down", "{nodes:?}");

    // Drain worker 2: its tasks move to the manager.
    assert_eq!(
        manager.must(&["node", "update", "--availability", "drain", &worker2.hostname]),
        format!("{}\n", worker2.hostname)
    );
    wait_for(Duration::from_secs(90), "3 running tasks off the drained worker", || {
        let counts = running_by_node(&manager, &service)?;
        (counts.values().sum::<usize>() == 3 && counts.keys().all(|h| *h == manager.hostname)).then_some(())
    });
    let pretty = manager.must(&["node", "inspect", "--pretty", &worker2.hostname]);
    assert!(pretty.contains(" Availability:         \tDrain"), "{pretty}");

    // A rolling update converges, leaving the old tasks as history.
    let updated = manager
        .shoal_within(&["service", "update", "--env-add", "VERSION=2", &service], Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("service update: {e}\n{}", manager.log()));
    assert!(updated.ends_with("verify: Service converged\n"), "{updated}");
    let counts = running_by_node(&manager, &service).expect("service ps");
    assert_eq!(counts.values().sum::<usize>(), 3, "{counts:?}");
    let history = json_lines(&manager.must(&["service", "ps", &service, "--format", "json"]));
    assert!(history.iter().filter(|t| t["DesiredState"] == "Shutdown").count() >= 3, "{history:?}");
    let inspect = manager.must(&["service", "inspect", "--pretty", &service]);
    assert!(inspect.contains("VERSION=2"), "{inspect}");

    if executor == "process" {
        // The tasks now all run on the manager, so its daemon has every log line.
        let logs = manager.must(&["service", "logs", &service]);
        assert!(logs.lines().filter(|l| l.ends_with("| started")).count() >= 3, "{logs}");
    }
    manager.must(&["service", "rm", &service]);
    if executor == "process" {
        stack_scenario(&manager);
        membership_scenario(&manager, &worker1, &worker2);
    }
    let events = std::fs::read_to_string(manager._dir.path().join("data/events.jsonl")).expect("event log");
    assert!(events.lines().count() > 0 && events.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
}

/// `stack deploy` from a compose file, then `stack ls|services|ps|rm`.
fn stack_scenario(manager: &DaemonProc) {
    let compose = manager._dir.path().join("compose.yml");
    std::fs::write(
        &compose,
        "version: \"3.8\"\nservices:\n  web:\n    image: process\n    command: [sh, -c, 'while kill -0 $$PPID; do sleep 1; done']\n    deploy:\n      replicas: 2\n",
    )
    .expect("write compose file");
    let compose = compose.to_string_lossy().to_string();
    let deployed = manager.must(&["stack", "deploy", "-c", &compose, "app"]);
    assert_eq!(deployed, "Creating network app_default\nCreating service app_web\n");
    wait_for(Duration::from_secs(60), "the stack's service to converge", || {
        manager.shoal(&["stack", "services", "app"]).ok().filter(|out| out.contains("replicated   2/2")).map(|_| ())
    });
    assert_eq!(manager.must(&["stack", "ls"]), "NAME      SERVICES\napp       1\n");
    let ps = json_lines(&manager.must(&["stack", "ps", "app", "--format", "json"]));
    assert_eq!(ps.len(), 2, "{ps:?}");
    // A second deploy updates in place.
    let redeployed = manager.must(&["stack", "deploy", "-c", &compose, "app"]);
    assert!(redeployed.starts_with("Updating service app_web (id: "), "{redeployed}");
    assert_eq!(manager.must(&["stack", "rm", "app"]), "Removing service app_web\nRemoving network app_default\n");
    let err = manager.shoal(&["stack", "ps", "app"]).unwrap_err();
    assert!(err.contains("nothing found in stack: app"), "{err}");
}

/// `node rm` of the dead worker, `node promote` / `node demote` of the live one.
fn membership_scenario(manager: &DaemonProc, dead: &DaemonProc, live: &DaemonProc) {
    assert_eq!(manager.must(&["node", "rm", &dead.hostname]), format!("{}\n", dead.hostname));
    let nodes = json_lines(&manager.must(&["node", "ls", "--format", "json"]));
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert_eq!(
        manager.must(&["node", "promote", &live.hostname]),
        format!("Node {} promoted to a manager in the swarm.\n", live.hostname)
    );
    wait_for(Duration::from_secs(60), "the promoted node to be a reachable manager", || {
        let nodes = json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?);
        nodes.iter().any(|n| n["Hostname"] == live.hostname.as_str() && n["ManagerStatus"] == "Reachable").then_some(())
    });
    assert_eq!(
        manager.must(&["node", "promote", &live.hostname]),
        format!("Node {} is already a manager.\n", live.hostname)
    );
    assert_eq!(
        manager.must(&["node", "demote", &live.hostname]),
        format!("Manager {} demoted in the swarm.\n", live.hostname)
    );
    wait_for(Duration::from_secs(60), "the demoted node to be a worker", || {
        let nodes = json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?);
        nodes.iter().any(|n| n["Hostname"] == live.hostname.as_str() && n["ManagerStatus"] == "").then_some(())
    });
    // The demoted node itself learns it is a worker (it stops its raft replica), then leaves; its
    // daemon is inactive again.
    wait_for(Duration::from_secs(60), "the demoted node to see itself as a worker", || {
        live.shoal(&["info"]).ok().filter(|info| info.contains("  Is Manager: false\n")).map(|_| ())
    });
    assert_eq!(live.must(&["swarm", "leave"]), "Node left the swarm.\n");
    assert_eq!(live.must(&["info"]), " Swarm: inactive\n");
    let err = live.shoal(&["swarm", "leave"]).unwrap_err();
    assert_eq!(err, "Error response from daemon: This node is not part of a swarm\n");
    wait_for(Duration::from_secs(30), "the node that left to be down", || {
        let nodes = json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?);
        nodes.iter().any(|n| n["Hostname"] == live.hostname.as_str() && n["Status"] == "Down").then_some(())
    });
}

#[test]
fn cluster_with_process_executor() {
    // Each task watches its daemon and exits when it dies, so a killed daemon leaves nothing behind.
    scenario(
        "e2e-proc",
        20,
        "process",
        &["process", "sh", "-c", "echo started; while kill -0 $PPID 2>/dev/null; do sleep 1; done"],
    );
}

/// Remove every container a test's service left (a killed daemon cannot).
fn remove_containers(service: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let Ok(docker) = bollard::Docker::connect_with_local_defaults() else { return };
        let filters = std::collections::HashMap::from([(
            "label".to_string(),
            vec![format!("{}={service}", shoal_core::env::executor::LABEL_SERVICE_NAME)],
        )]);
        let options = bollard::container::ListContainersOptions { all: true, filters, ..Default::default() };
        if let Ok(containers) = docker.list_containers(Some(options)).await {
            for container in containers {
                if let Some(id) = container.id {
                    let remove = bollard::container::RemoveContainerOptions { force: true, ..Default::default() };
                    let _ = docker.remove_container(&id, Some(remove)).await;
                }
            }
        }
    });
}

struct CleanupContainers(&'static str);

impl Drop for CleanupContainers {
    fn drop(&mut self) {
        remove_containers(self.0);
    }
}

#[test]
fn cluster_with_docker_executor() {
    // Without Docker (or without the test image) this test fails: it is the real-world check.
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let docker = bollard::Docker::connect_with_local_defaults().expect("Docker is required for this test");
        docker.ping().await.expect("the Docker engine must answer (run .ci/run to start one)");
        docker
            .inspect_image("shoal-test/busybox:latest")
            .await
            .expect("image shoal-test/busybox:latest is required (built by .ci/run)");
    });
    let _cleanup = CleanupContainers("e2e-dock-web");
    scenario("e2e-dock", 30, "docker", &["--stop-grace-period", "1s", "shoal-test/busybox:latest", "sleep", "600"]);
}
