//! End to end, managers and agent restarts: real `shoal daemon` processes on loopback addresses
//! (127.0.0.81–85), driven only by the `shoal` CLI. 3 managers + 1 worker survive the leader's
//! SIGKILL (a new leader, writes still work, the old leader is Down); and a worker daemon stopped
//! with SIGTERM and started again on the same data dir re-adopts its Docker containers (same ids,
//! no replacement tasks). The Docker test fails, not skips, without Docker or the test image.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shoal");

/// One daemon process with its own data dir, socket and swarm address; it can be stopped and
/// started again over the same data dir.
struct DaemonProc {
    child: Option<Child>,
    dir: tempfile::TempDir,
    socket: PathBuf,
    hostname: String,
    executor: String,
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
        let mut daemon = DaemonProc {
            child: None,
            dir,
            socket,
            hostname: hostname.into(),
            executor: executor.into(),
            addr: format!("{ip}:{}", free_port(ip)),
        };
        daemon.start();
        daemon
    }

    /// Start the daemon process (again) over this data dir and wait for its socket.
    fn start(&mut self) {
        assert!(self.child.is_none(), "daemon {} already running", self.hostname);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("log file");
        let child = Command::new(BIN)
            .args(["daemon", "--executor", &self.executor, "--hostname", &self.hostname])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--socket")
            .arg(&self.socket)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start shoal daemon");
        self.child = Some(child);
        wait_for(Duration::from_secs(20), "the daemon's socket", || self.shoal(&["info"]).ok());
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
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGKILL by pid, as a crashed host: nothing is cleaned up.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// SIGTERM by pid, then wait for the daemon to exit (SIGKILL after `grace`). True if it exited
    /// on its own.
    fn terminate(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(5));
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

fn nodes(manager: &DaemonProc) -> Option<Vec<serde_json::Value>> {
    Some(json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?))
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

fn init(manager: &DaemonProc) {
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
}

fn join(node: &DaemonProc, token: &str, remote: &str, role: &str) {
    let joined = node.must(&[
        "swarm",
        "join",
        "--token",
        token,
        "--advertise-addr",
        &node.addr,
        "--listen-addr",
        &node.addr,
        remote,
    ]);
    assert_eq!(joined, format!("This node joined a swarm as a {role}.\n"));
}

#[test]
fn leader_crash_with_three_managers() {
    let ip = |n: u8| format!("127.0.0.{}", 80 + n);
    let mut managers: Vec<DaemonProc> =
        (1..=3).map(|n| DaemonProc::spawn(&format!("e2e-mgr-m{n}"), &ip(n), "process")).collect();
    let worker = DaemonProc::spawn("e2e-mgr-w1", &ip(4), "process");

    init(&managers[0]);
    let manager_token = managers[0].must(&["swarm", "join-token", "-q", "manager"]).trim().to_string();
    let worker_token = managers[0].must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
    let leader_addr = managers[0].addr.clone();
    for manager in &managers[1..] {
        join(manager, &manager_token, &leader_addr, "manager");
    }
    join(&worker, &worker_token, &leader_addr, "worker");
    wait_for(Duration::from_secs(60), "3 ready managers (1 leader, 2 reachable) and a ready worker", || {
        let nodes = nodes(&managers[0])?;
        let status = |n: &serde_json::Value| n["ManagerStatus"].as_str().unwrap_or_default().to_string();
        (nodes.len() == 4
            && nodes.iter().all(|n| n["Status"] == "Ready")
            && nodes.iter().filter(|n| status(n) == "Leader").count() == 1
            && nodes.iter().filter(|n| status(n) == "Reachable").count() == 2
            && nodes.iter().any(|n| n["Hostname"] == worker.hostname.as_str() && status(n).is_empty()))
        .then_some(())
    });
    let leader = nodes(&managers[0]).expect("node ls");
    let leader = leader.iter().find(|n| n["ManagerStatus"] == "Leader").expect("a leader");
    let leader_index = managers
        .iter()
        .position(|m| leader["Hostname"] == m.hostname.as_str())
        .unwrap_or_else(|| panic!("the leader is a manager: {leader:?}"));

    // A 4-replica service converges. Each task exits when its daemon dies.
    let service = "e2e-mgr-web";
    let created = managers[leader_index]
        .shoal_within(
            &[
                "service",
                "create",
                "--name",
                service,
                "--replicas",
                "4",
                "process",
                "sh",
                "-c",
                "while kill -0 $PPID 2>/dev/null; do sleep 1; done",
            ],
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("service create: {e}\n{}", managers[leader_index].log()));
    assert!(created.ends_with("verify: Service converged\n"), "{created}");
    wait_for(Duration::from_secs(60), "4 running tasks", || {
        (running_by_node(&managers[leader_index], service)?.values().sum::<usize>() == 4).then_some(())
    });

    // SIGKILL the leader; ask another manager.
    let old_leader = managers[leader_index].hostname.clone();
    managers[leader_index].kill();
    let survivor = &managers[(leader_index + 1) % 3];
    let new_leader = wait_for(Duration::from_secs(60), "a new leader", || {
        let nodes = nodes(survivor)?;
        let leader = nodes.iter().find(|n| n["ManagerStatus"] == "Leader")?;
        let name = leader["Hostname"].as_str()?.to_string();
        (name != old_leader).then_some(name)
    });
    assert_ne!(new_leader, old_leader);
    // Writes go through the new leader (the CLI may need a retry while it settles in).
    wait_for(Duration::from_secs(60), "service scale through a surviving manager", || {
        survivor.shoal_within(&["service", "scale", "--detach", &format!("{service}=6")], Duration::from_secs(30)).ok()
    });
    wait_for(Duration::from_secs(90), "6 running tasks off the old leader", || {
        let counts = running_by_node(survivor, service)?;
        (counts.values().sum::<usize>() == 6 && !counts.contains_key(&old_leader)).then_some(())
    });
    wait_for(Duration::from_secs(60), "the old leader to be Down", || {
        let nodes = nodes(survivor)?;
        nodes.iter().any(|n| n["Hostname"] == old_leader.as_str() && n["Status"] == "Down").then_some(())
    });
    let ls = survivor.must(&["service", "ls"]);
    assert!(ls.contains(&format!("{service}   replicated   6/6")), "{ls}");
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

/// Running container ids of `service` (`docker ps -q`, full ids), sorted.
fn container_ids(service: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "--no-trunc", "-q", "--filter", &format!("label=com.shoal.service.name={service}")])
        .output()
        .expect("run docker ps");
    assert!(out.status.success(), "docker ps: {}", String::from_utf8_lossy(&out.stderr));
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect();
    ids.sort();
    ids
}

/// Task ids and states of `service`, every task in its history, sorted.
fn task_history(manager: &DaemonProc, service: &str) -> Vec<(String, String, String)> {
    let mut tasks: Vec<_> = json_lines(&manager.must(&["service", "ps", service, "--format", "json", "--no-trunc"]))
        .iter()
        .map(|t| {
            (
                t["ID"].as_str().unwrap_or_default().to_string(),
                t["Node"].as_str().unwrap_or_default().to_string(),
                t["DesiredState"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    tasks.sort();
    tasks
}

#[test]
fn agent_restart_readopts_its_containers() {
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
    drop(runtime);
    let service = "e2e-mgr-adopt";
    remove_containers(service);
    let _cleanup = CleanupContainers(service);

    let manager = DaemonProc::spawn("e2e-mgr-dm", "127.0.0.84", "docker");
    let mut worker = DaemonProc::spawn("e2e-mgr-dw", "127.0.0.85", "docker");
    init(&manager);
    let token = manager.must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
    join(&worker, &token, &manager.addr, "worker");
    wait_for(Duration::from_secs(30), "2 ready nodes", || {
        let nodes = nodes(&manager)?;
        (nodes.len() == 2 && nodes.iter().all(|n| n["Status"] == "Ready")).then_some(())
    });

    let constraint = format!("node.hostname=={}", worker.hostname);
    let created = manager
        .shoal_within(
            &[
                "service",
                "create",
                "--name",
                service,
                "--replicas",
                "2",
                "--constraint",
                &constraint,
                "--stop-grace-period",
                "1s",
                "shoal-test/busybox:latest",
                "sleep",
                "600",
            ],
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("service create: {e}\n{}", manager.log()));
    assert!(created.ends_with("verify: Service converged\n"), "{created}");
    wait_for(Duration::from_secs(60), "2 running tasks on the worker", || {
        let counts = running_by_node(&manager, service)?;
        (counts.get(&worker.hostname) == Some(&2) && counts.len() == 1).then_some(())
    });
    let before = wait_for(Duration::from_secs(30), "2 running containers", || {
        let ids = container_ids(service);
        (ids.len() == 2).then_some(ids)
    });
    let tasks_before = task_history(&manager, service);
    assert_eq!(tasks_before.len(), 2, "{tasks_before:?}");

    // Graceful stop, then start again over the same data dir.
    assert!(worker.terminate(Duration::from_secs(30)), "the worker daemon did not exit on SIGTERM\n{}", worker.log());
    assert_eq!(container_ids(service), before, "containers must outlive a graceful daemon stop");
    worker.start();
    wait_for(Duration::from_secs(60), "the restarted worker to resume", || {
        worker.shoal(&["info"]).ok().filter(|info| info.contains("Swarm: active")).map(|_| ())
    });
    wait_for(Duration::from_secs(60), "the restarted worker to be Ready", || {
        let nodes = nodes(&manager)?;
        nodes.iter().any(|n| n["Hostname"] == worker.hostname.as_str() && n["Status"] == "Ready").then_some(())
    });
    // Give the agent a few heartbeats to (wrongly) replace anything, then check nothing changed.
    std::thread::sleep(Duration::from_secs(5));
    wait_for(Duration::from_secs(30), "2/2 running", || {
        (running_by_node(&manager, service)?.get(&worker.hostname) == Some(&2)).then_some(())
    });
    assert_eq!(container_ids(service), before, "the same containers, no duplicates\n{}", worker.log());
    assert_eq!(task_history(&manager, service), tasks_before, "no task was replaced\n{}", worker.log());
    let ls = manager.must(&["service", "ls"]);
    assert!(ls.contains(&format!("{service}   replicated   2/2")), "{ls}");
    manager.must(&["service", "rm", service]);
}
