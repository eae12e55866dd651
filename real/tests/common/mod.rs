//! Helpers shared by the real-daemon test binaries (`e2e`, `e2e_managers`, `security`): a `shoal
//! daemon` process driven through the `shoal` CLI, waiting, JSON output parsing, and Docker checks.

// Each test binary compiles this module on its own and uses only a subset of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_shoal");

/// How long `DaemonProc::shoal` lets one CLI call run unless told otherwise.
pub const CLI_DEADLINE: Duration = Duration::from_secs(30);

/// One daemon process with its own data dir, socket and swarm address; it can be stopped and
/// started again over the same data dir.
pub struct DaemonProc {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub hostname: String,
    pub executor: String,
    /// More `shoal daemon` flags, from the next start on.
    pub daemon_args: Vec<String>,
    /// Environment of every `shoal` CLI call (e.g. `DOCKER_CONFIG` for `--with-registry-auth`).
    pub cli_env: Vec<(String, String)>,
    /// `ip:port` for swarm traffic.
    pub addr: String,
    /// The port of the data path (`--data-path-port`): where this node accepts the mesh's tunnels.
    pub data_port: u16,
    /// Deadline of each `shoal` call; `None` waits for the CLI however long it takes.
    cli_deadline: Option<Duration>,
}

pub fn free_port(ip: &str) -> u16 {
    let listener = TcpListener::bind((ip, 0)).expect("bind a loopback port");
    listener.local_addr().expect("local addr").port()
}

/// A free port for `--data-path-port`, which Swarm wants in 1024–49151 (ports the kernel hands out
/// for port 0 are mostly above that): tried from a spread start below the ephemeral range.
pub fn free_data_port(ip: &str) -> u16 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let start = (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % 10_000;
    (0..10_000u32)
        .map(|i| 20_000 + ((start + i) % 10_000) as u16)
        .find(|&port| TcpListener::bind((ip, port)).is_ok())
        .expect("a free data path port in 20000-29999")
}

impl DaemonProc {
    /// A daemon with `executor`; a Docker one runs with `--pull never` (the tests' images are local,
    /// and nothing may be looked up on a registry outside loopback).
    pub fn spawn(hostname: &str, ip: &str, executor: &str) -> DaemonProc {
        DaemonProc::spawn_with(hostname, ip, executor, Some(CLI_DEADLINE))
    }

    /// As `spawn`, with `cli_deadline` for every `shoal` / `must` call.
    pub fn spawn_with(hostname: &str, ip: &str, executor: &str, cli_deadline: Option<Duration>) -> DaemonProc {
        let never_pull: &[&str] = if executor == "docker" { &["--pull", "never"] } else { &[] };
        DaemonProc::spawn_args(hostname, ip, executor, never_pull, cli_deadline)
    }

    /// A daemon with exactly these extra `shoal daemon` flags (none: the daemon's defaults).
    pub fn spawn_args(
        hostname: &str,
        ip: &str,
        executor: &str,
        daemon_args: &[&str],
        cli_deadline: Option<Duration>,
    ) -> DaemonProc {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("shoal.sock");
        let mut daemon = DaemonProc {
            child: None,
            dir,
            socket,
            hostname: hostname.into(),
            executor: executor.into(),
            daemon_args: daemon_args.iter().map(|a| a.to_string()).collect(),
            cli_env: Vec::new(),
            addr: format!("{ip}:{}", free_port(ip)),
            data_port: free_data_port(ip),
            cli_deadline,
        };
        daemon.start();
        daemon
    }

    /// A Docker-executor daemon that also serves the Docker Engine API (`--api-socket`) on a socket in a
    /// temp dir of its own; returns the daemon, the API socket's path and the dir (keep it alive).
    pub fn spawn_with_api(hostname: &str, ip: &str) -> (DaemonProc, PathBuf, tempfile::TempDir) {
        let api_dir = tempfile::tempdir().expect("temp dir");
        let api = api_dir.path().join("docker.sock");
        let flag = api.to_str().expect("a UTF-8 temp path").to_string();
        let daemon = DaemonProc::spawn_args(
            hostname,
            ip,
            "docker",
            &["--pull", "never", "--api-socket", &flag],
            Some(CLI_DEADLINE),
        );
        (daemon, api, api_dir)
    }

    /// Start the daemon process (again) over this data dir and wait for its socket.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "daemon {} already running", self.hostname);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("log file");
        let child = Command::new(BIN)
            .args(["daemon", "--executor", &self.executor, "--hostname", &self.hostname])
            // Names the swarm does not know go nowhere: tests never reach the host's resolvers.
            .args(["--dns-upstream", "none"])
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--socket")
            .arg(&self.socket)
            .args(&self.daemon_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start shoal daemon");
        self.child = Some(child);
        wait_for(Duration::from_secs(20), "the daemon's socket", || self.shoal(&["info"]).ok());
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Run the CLI against this daemon; Ok(stdout) on exit 0, Err(stderr + stdout) otherwise.
    pub fn shoal(&self, args: &[&str]) -> Result<String, String> {
        match self.cli_deadline {
            Some(deadline) => self.shoal_within(args, deadline),
            None => {
                let output = Command::new(BIN)
                    .arg("-H")
                    .arg(self.host())
                    .args(args)
                    .envs(self.cli_env.iter().map(|(k, v)| (k, v)))
                    .output()
                    .expect("run shoal");
                outcome(output)
            }
        }
    }

    pub fn shoal_within(&self, args: &[&str], deadline: Duration) -> Result<String, String> {
        let mut child = Command::new(BIN)
            .arg("-H")
            .arg(self.host())
            .args(args)
            .envs(self.cli_env.iter().map(|(k, v)| (k, v)))
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
        outcome(child.wait_with_output().expect("collect output"))
    }

    pub fn must(&self, args: &[&str]) -> String {
        match self.shoal(args) {
            Ok(out) => out,
            Err(err) => panic!("`shoal {}` failed: {err}\n--- daemon log ---\n{}", args.join(" "), self.log()),
        }
    }

    /// `swarm init` advertising and listening on this daemon's address (1 s heartbeats); returns
    /// the CLI's output.
    pub fn swarm_init(&self) -> String {
        let init = self.must(&[
            "swarm",
            "init",
            "--advertise-addr",
            &self.addr,
            "--listen-addr",
            &self.addr,
            "--dispatcher-heartbeat",
            "1s",
            "--data-path-port",
            &self.data_port.to_string(),
        ]);
        assert!(init.starts_with("Swarm initialized: current node ("), "{init}");
        init
    }

    /// `swarm join` of the swarm at `remote` with `token`, which must make this node a `role`.
    pub fn swarm_join(&self, token: &str, remote: &str, role: &str) {
        let joined = self.must(&[
            "swarm",
            "join",
            "--token",
            token,
            "--advertise-addr",
            &self.addr,
            "--listen-addr",
            &self.addr,
            "--data-path-port",
            &self.data_port.to_string(),
            remote,
        ]);
        assert_eq!(joined, format!("This node joined a swarm as a {role}.\n"));
    }

    /// `shoal service create <args>`, given up to 120 s to converge; panics with the daemon log.
    pub fn create_service(&self, args: &[&str]) -> String {
        let mut create = vec!["service", "create"];
        create.extend_from_slice(args);
        self.shoal_within(&create, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("service create: {e}\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGKILL by pid, as a crashed host: nothing is cleaned up.
    pub fn kill(&mut self) {
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
    pub fn terminate(&mut self, grace: Duration) -> bool {
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
        // SIGTERM first: the daemon shuts its node down and removes its socket.
        self.terminate(Duration::from_secs(5));
    }
}

/// Ok(stdout) on exit 0, Err(stderr + stdout) otherwise.
fn outcome(output: std::process::Output) -> Result<String, String> {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&output.stderr), stdout))
    }
}

pub fn wait_for<T>(deadline: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
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

pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().filter(|l| !l.trim().is_empty()).filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Running tasks of `service` per node hostname.
pub fn running_by_node(manager: &DaemonProc, service: &str) -> Option<std::collections::BTreeMap<String, usize>> {
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

/// Panic unless a Docker engine answers; build the test image if it lacks it (panicking with what
/// to install if that cannot be done): the Docker tests fail, not skip.
pub fn require_docker() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let docker = bollard::Docker::connect_with_local_defaults().expect("Docker is required for this test");
        docker.ping().await.expect("the Docker engine must answer (run .ci/run to start one)");
    });
    shoal_testimage::require();
}

/// Remove every container a test's service left (a killed daemon cannot).
pub fn remove_containers(service: &str) {
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

/// Removes the Docker networks (bridges) the daemons of these node ids made (they are labelled with
/// the node id), however the test ends: a daemon keeps its bridges when it stops, and a stale one
/// would hold its subnet for the next run. Declare it before the daemons, so it runs after they stop.
#[derive(Default)]
pub struct CleanupBridges(std::cell::RefCell<Vec<String>>);

impl CleanupBridges {
    /// Also remove the bridges of `node_id`.
    pub fn add(&self, node_id: &str) {
        self.0.borrow_mut().push(node_id.trim().to_string());
    }
}

impl Drop for CleanupBridges {
    fn drop(&mut self) {
        let ids = self.0.borrow().clone();
        let Ok(runtime) = tokio::runtime::Runtime::new() else { return };
        runtime.block_on(async {
            let Ok(docker) = bollard::Docker::connect_with_local_defaults() else { return };
            for node_id in ids {
                let label = format!("{}={node_id}", shoal_core::env::executor::LABEL_NODE_ID);
                let filters = std::collections::HashMap::from([("label".to_string(), vec![label])]);
                let options = bollard::network::ListNetworksOptions { filters };
                for network in docker.list_networks(Some(options)).await.unwrap_or_default() {
                    if let Some(name) = network.name {
                        let _ = docker.remove_network(&name).await;
                    }
                }
            }
        });
    }
}

/// Removes the service's containers when dropped, however the test ends.
pub struct CleanupContainers(pub &'static str);

impl Drop for CleanupContainers {
    fn drop(&mut self) {
        remove_containers(self.0);
    }
}
