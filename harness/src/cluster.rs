//! A real cluster on this machine: one `shoal daemon` process per scenario node, each on its own
//! loopback address (`<net>.<n>`, e.g. 127.0.88.1 for `manager-1`), data dir and unix socket under
//! the run's temp dir. `manager-1` runs `swarm init`, the others `swarm join` with the tokens, all
//! through the `shoal` CLI; afterwards the harness talks to the daemons with the CLI's client
//! library (`shoal::engine_client`, the Docker Engine API) on their sockets. A crash is SIGKILL of the daemon process; a
//! restart starts it again on the same data dir.
//!
//! [`RealCluster::attach`] instead takes a cluster that is already running (`shoal-real run
//! --cluster`): its daemons' sockets, and optionally their data dirs (for their `events.jsonl`).
//! Such a cluster's daemons are not the harness's: it never stops them, and faults that need to
//! (crash, restart) or that need root on their addresses are not done on it ([`RealCluster::owned`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal::engine_client::{self, ApiError, Endpoint, EngineClient};
use shoal::local_api::SwarmStatus;
use shoal_core::control::{ControlError, ControlRequest, ControlResponse, ControlResult};
use shoal_core::store::StoreState;

use crate::cleanup::Ledger;

/// How the daemons run their tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    Docker,
    Process,
}

impl Executor {
    pub fn word(self) -> &'static str {
        match self {
            Executor::Docker => "docker",
            Executor::Process => "process",
        }
    }
}

/// Where and how a cluster is made.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The `shoal` binary.
    pub shoal_bin: PathBuf,
    pub executor: Executor,
    /// The nodes' loopback addresses: three octets (`127.0.88`) or an address they follow
    /// ([`node_ip`]).
    pub net: String,
    /// Where the run's temp dir goes.
    pub tmp: PathBuf,
    /// The heartbeat period (`swarm init --dispatcher-heartbeat`); the simulator's clusters use 1 s.
    pub heartbeat: String,
    /// Put each node's raft log on a small tmpfs of its own, so a disk fault can fill it
    /// ([`crate::disk`]; needs root).
    pub raft_tmpfs: bool,
}

/// The loopback address of the cluster's node `i` (0-based): `<net>.<i + 1>`.
///
/// `net` is three octets (`127.0.88`: node n gets `.n`) or a whole address after which the nodes
/// follow (`127.0.89.100`: `.101`, `.102`, …), so that runs can share a /24.
pub fn node_ip(net: &str, i: usize) -> String {
    match net.rsplit_once('.').filter(|(prefix, _)| prefix.matches('.').count() == 2) {
        Some((prefix, last)) => format!("{prefix}.{}", last.parse::<usize>().unwrap_or(0) + i + 1),
        None => format!("{net}.{}", i + 1),
    }
}

/// The raft log dir under a node's data dir.
pub fn raft_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("node").join("raft")
}

/// One daemon of a cluster that is already running: its socket, and its data dir if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub socket: PathBuf,
    pub data_dir: Option<PathBuf>,
}

/// `--cluster`: a comma-separated list of sockets, or a file with one `SOCKET [DATA_DIR]` per line
/// (`#` starts a comment).
pub fn parse_cluster_arg(arg: &str) -> Result<Vec<Attached>, String> {
    let path = Path::new(arg);
    let entries: Vec<Attached> = if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {arg}: {e}"))?;
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                [socket] => entries.push(Attached { socket: socket.into(), data_dir: None }),
                [socket, dir] => entries.push(Attached { socket: socket.into(), data_dir: Some(dir.into()) }),
                _ => return Err(format!("{arg}:{}: expected `SOCKET [DATA_DIR]`, got {line:?}", n + 1)),
            }
        }
        entries
    } else {
        arg.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Attached { socket: s.trim_start_matches("unix://").into(), data_dir: None })
            .collect()
    };
    if entries.is_empty() {
        return Err(format!("--cluster {arg:?} names no daemon socket"));
    }
    Ok(entries)
}

/// One daemon of the cluster.
#[derive(Debug)]
pub struct RealNode {
    pub name: String,
    pub ip: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// Its `events.jsonl`, where known.
    pub events: Option<PathBuf>,
    pub manager: bool,
    child: Option<Child>,
    /// A daemon of a cluster the harness attached to (not its own).
    attached: bool,
    pub node_id: String,
}

impl RealNode {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Unix(self.socket.clone())
    }

    pub fn addr(&self) -> String {
        format!("{}:2377", self.ip)
    }

    /// Whether its daemon runs: one the harness started and has not killed, or one it attached to.
    pub fn is_up(&self) -> bool {
        self.child.is_some() || self.attached
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
}

/// Why a cluster could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Setup(String),
}

/// The daemons of one run.
pub struct RealCluster {
    pub options: ClusterOptions,
    pub nodes: Vec<RealNode>,
    pub ledger: Arc<Mutex<Ledger>>,
    pub dir: PathBuf,
    /// The leader as last seen (`node ls`): control requests go there first.
    leader_hint: Mutex<Option<String>>,
    /// Whether the harness started these daemons (and may stop them).
    pub owned: bool,
}

fn cli_output(bin: &Path, socket: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new(bin)
        .arg("-H")
        .arg(format!("unix://{}", socket.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run {}: {err}", bin.display()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "`shoal {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        ))
    }
}

impl RealCluster {
    /// Start `managers` + `workers` daemons and form the swarm.
    pub async fn start(
        options: ClusterOptions,
        managers: usize,
        workers: usize,
        run_id: &str,
        ledger: Arc<Mutex<Ledger>>,
    ) -> Result<RealCluster, ClusterError> {
        let setup = |m: String| ClusterError::Setup(m);
        if managers + workers > 250 {
            return Err(setup(format!("{} nodes do not fit one /24 of loopback addresses", managers + workers)));
        }
        let dir = options.tmp.join(format!("shoal-real-{run_id}"));
        std::fs::create_dir_all(&dir).map_err(|e| setup(format!("cannot make {}: {e}", dir.display())))?;
        ledger.lock().expect("ledger").dir = Some(dir.clone());
        let mut nodes = Vec::new();
        for i in 0..managers + workers {
            let (name, manager) = if i < managers {
                (format!("manager-{}", i + 1), true)
            } else {
                (format!("worker-{}", i - managers + 1), false)
            };
            let node_dir = dir.join(&name);
            std::fs::create_dir_all(&node_dir)
                .map_err(|e| setup(format!("cannot make {}: {e}", node_dir.display())))?;
            let ip = node_ip(&options.net, i);
            for port in [2377u16, 4789] {
                std::net::TcpListener::bind((ip.as_str(), port)).map_err(|e| {
                    setup(format!(
                        "{ip}:{port} is taken ({e}): another cluster runs on {}.x? pick another --net",
                        options.net
                    ))
                })?;
            }
            if options.raft_tmpfs {
                let raft = raft_dir(&node_dir.join("data"));
                crate::disk::mount(&raft).map_err(setup)?;
                ledger.lock().expect("ledger").mounts.push(raft);
            }
            nodes.push(RealNode {
                socket: node_dir.join("shoal.sock"),
                events: Some(node_dir.join("data").join("events.jsonl")),
                dir: node_dir,
                name,
                ip,
                manager,
                child: None,
                attached: false,
                node_id: String::new(),
            });
        }
        let mut cluster = RealCluster { options, nodes, ledger, dir, leader_hint: Mutex::new(None), owned: true };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i).await?;
        }
        // manager-1 inits; everyone else joins it.
        let bin = cluster.options.shoal_bin.clone();
        let first = &cluster.nodes[0];
        let addr = first.addr();
        let init = [
            "swarm",
            "init",
            "--advertise-addr",
            &addr,
            "--listen-addr",
            &addr,
            "--dispatcher-heartbeat",
            &cluster.options.heartbeat,
            "--data-path-port",
            "4789",
        ];
        cli_output(&bin, &first.socket, &init).map_err(setup)?;
        let worker_token = cli_output(&bin, &first.socket, &["swarm", "join-token", "-q", "worker"]).map_err(setup)?;
        let manager_token =
            cli_output(&bin, &first.socket, &["swarm", "join-token", "-q", "manager"]).map_err(setup)?;
        for node in &cluster.nodes[1..] {
            let token = if node.manager { &manager_token } else { &worker_token };
            let own = node.addr();
            let join = [
                "swarm",
                "join",
                "--token",
                token,
                "--advertise-addr",
                &own,
                "--listen-addr",
                &own,
                "--data-path-port",
                "4789",
                &addr,
            ];
            cli_output(&bin, &node.socket, &join).map_err(setup)?;
        }
        for i in 0..cluster.nodes.len() {
            let status = cluster.status(i).await;
            match status {
                Ok(status) if !status.node_id.is_empty() => {
                    cluster.nodes[i].node_id = status.node_id.clone();
                    cluster.ledger.lock().expect("ledger").node_ids.push(status.node_id);
                }
                other => {
                    return Err(setup(format!("{} has no node id after joining: {other:?}", cluster.nodes[i].name)))
                }
            }
        }
        Ok(cluster)
    }

    /// A cluster that is already running: each daemon's node is named by its host name, which must
    /// be the scenario's (`manager-1`, `worker-2`, … — the names its steps use), with the roles the
    /// scenario gives them.
    pub async fn attach(
        options: ClusterOptions,
        daemons: &[Attached],
        managers: usize,
        workers: usize,
        ledger: Arc<Mutex<Ledger>>,
    ) -> Result<RealCluster, ClusterError> {
        let setup = |m: String| ClusterError::Setup(m);
        let mut nodes = Vec::new();
        for daemon in daemons {
            let endpoint = Endpoint::Unix(daemon.socket.clone());
            let client = EngineClient::new(endpoint);
            let status = match tokio::time::timeout(Duration::from_secs(10), client.status()).await {
                Ok(Ok(status)) if status.state == "active" => status,
                Ok(Ok(status)) => {
                    return Err(setup(format!(
                        "{} is not in a swarm (Swarm: {})",
                        daemon.socket.display(),
                        status.state
                    )))
                }
                other => {
                    return Err(setup(format!(
                        "{} does not answer as a shoal daemon: {other:?}",
                        daemon.socket.display()
                    )))
                }
            };
            let ip = status.node_addr.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(&status.node_addr).to_string();
            let events = daemon.data_dir.as_ref().map(|d| d.join("events.jsonl"));
            let dir = daemon.data_dir.as_ref().and_then(|d| d.parent()).map(Path::to_path_buf).unwrap_or_default();
            nodes.push(RealNode {
                name: String::new(),
                ip,
                dir,
                socket: daemon.socket.clone(),
                events,
                // Until `node ls` says: a worker answers that it is not a manager and is skipped.
                manager: true,
                child: None,
                attached: true,
                node_id: status.node_id,
            });
        }
        let mut cluster =
            RealCluster { options, nodes, ledger, dir: PathBuf::new(), leader_hint: Mutex::new(None), owned: false };
        let listed = match cluster.control(ControlRequest::NodeList).await {
            Ok(ControlResponse::Nodes(listed)) => listed,
            other => return Err(setup(format!("node ls on the cluster: {other:?}"))),
        };
        for node in &mut cluster.nodes {
            let view = listed.iter().find(|v| v.node.id == node.node_id).ok_or_else(|| {
                setup(format!("{}'s node {} is not in the swarm's node list", node.socket.display(), node.node_id))
            })?;
            node.name = view.node.hostname().to_string();
            node.manager = view.node.role == shoal_core::api::NodeRole::Manager;
        }
        let wanted: Vec<(String, bool)> = (0..managers)
            .map(|i| (format!("manager-{}", i + 1), true))
            .chain((0..workers).map(|i| (format!("worker-{}", i + 1), false)))
            .collect();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(name, manager)| !cluster.nodes.iter().any(|n| &n.name == name && n.manager == *manager))
            .map(|(name, manager)| format!("{name} ({})", if *manager { "manager" } else { "worker" }))
            .collect();
        if !missing.is_empty() {
            let have: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
            return Err(setup(format!(
                "the scenario's steps name its nodes by host name; the cluster has no daemon socket for {} (the sockets given are of {})",
                missing.join(", "),
                have.join(", ")
            )));
        }
        Ok(cluster)
    }

    /// A control request to daemon `i` alone (`on:` steps, as `shoal -H` sends it).
    pub async fn control_on(&self, i: usize, request: ControlRequest) -> ControlResult {
        let node = &self.nodes[i];
        let client = EngineClient::new(node.endpoint());
        match tokio::time::timeout(Duration::from_secs(30), client.control(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err @ ApiError::Daemon { .. })) => Err(engine_client::control_error(err)),
            Ok(Err(err)) => Err(ControlError::Unavailable(format!("{}: {err}", node.name))),
            Err(_) => Err(ControlError::Unavailable(format!("{} did not answer within 30 s", node.name))),
        }
    }

    /// `shoal daemon` for node `i`: its hostname, data dir and executor, its API on `socket`.
    fn daemon_command(&self, i: usize, socket: &Path) -> Command {
        let node = &self.nodes[i];
        let mut command = Command::new(&self.options.shoal_bin);
        command
            .args(["daemon", "--executor", self.options.executor.word(), "--hostname", &node.name])
            .args(["--dns-upstream", "none"])
            .arg("--data-dir")
            .arg(node.dir.join("data"))
            .arg("--socket")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if self.options.executor == Executor::Docker {
            command.args(["--pull", "never"]);
        }
        command
    }

    /// Start daemon `i` (again) on its data dir and wait until its socket answers.
    pub async fn spawn(&mut self, i: usize) -> Result<(), ClusterError> {
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("daemon.log"))
            .map_err(|e| ClusterError::Setup(format!("cannot open the daemon log of {}: {e}", node.name)))?;
        let mut command = self.daemon_command(i, &node.socket);
        command.stderr(log);
        let child = command
            .spawn()
            .map_err(|e| ClusterError::Setup(format!("cannot start {}: {e}", self.options.shoal_bin.display())))?;
        self.ledger.lock().expect("ledger").pids.push(child.id());
        self.nodes[i].child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.status(i).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Setup(format!(
                    "the daemon of {} did not answer on {} within 20 s (log: {})",
                    self.nodes[i].name,
                    self.nodes[i].socket.display(),
                    self.nodes[i].dir.join("daemon.log").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Run a second `shoal daemon` on daemon `i`'s data dir (its own socket) while `i` runs, as an
    /// operator who starts it twice does. `Ok(its error)` when it refused and exited non-zero within
    /// 10 s, as it must; `Err` when it kept running (then it is killed) or exited otherwise.
    pub async fn start_second_daemon(&mut self, i: usize) -> Result<String, String> {
        let node = &self.nodes[i];
        let mut command = self.daemon_command(i, &node.dir.join("second.sock"));
        command.stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| format!("cannot start a second daemon: {e}"))?;
        let pid = child.id();
        self.ledger.lock().expect("ledger").pids.push(pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                _ => break None,
            }
        };
        if status.is_none() {
            let _ = child.kill();
        }
        let output = child.wait_with_output().map_err(|e| format!("the second daemon: {e}"))?;
        self.ledger.lock().expect("ledger").pids.retain(|p| *p != pid);
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        match status {
            None => Err(format!("a second daemon on {}'s data dir kept running for 10 s: {stderr}", node.name)),
            Some(status) if !status.success() && stderr.contains("in use by another shoal daemon") => Ok(stderr),
            Some(status) => Err(format!(
                "a second daemon on {}'s data dir exited {status} without refusing it: {stderr}",
                node.name
            )),
        }
    }

    /// SIGKILL daemon `i`; returns its pid.
    pub fn kill(&mut self, i: usize) -> Option<u32> {
        let mut child = self.nodes[i].child.take()?;
        let pid = child.id();
        let _ = child.kill();
        let _ = child.wait();
        self.ledger.lock().expect("ledger").pids.retain(|p| *p != pid);
        Some(pid)
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Daemon `i`'s standing (`GET /info`).
    pub async fn status(&self, i: usize) -> Result<SwarmStatus, String> {
        let client = EngineClient::new(self.nodes[i].endpoint());
        match tokio::time::timeout(Duration::from_secs(30), client.status()).await {
            Err(_) => Err(format!("{} did not answer within 30 s", self.nodes[i].name)),
            Ok(result) => result.map_err(|err| err.to_string()),
        }
    }

    /// Daemon `i` leaves the swarm (`POST /swarm/leave`).
    pub async fn leave(&self, i: usize, force: bool) -> Result<(), String> {
        let client = EngineClient::new(self.nodes[i].endpoint());
        match tokio::time::timeout(Duration::from_secs(30), client.swarm_leave(force)).await {
            Err(_) => Err(format!("{} did not answer within 30 s", self.nodes[i].name)),
            Ok(result) => result.map_err(|err| err.to_string()),
        }
    }

    /// A control request, sent as the simulator's client sends it: to the leader as last seen
    /// first, then to the other live managers in turn while one answers that it has no leader, is
    /// not a manager or cannot be reached (a client that knows every manager).
    pub async fn control(&self, request: ControlRequest) -> ControlResult {
        let hint = self.leader_hint.lock().expect("leader hint").clone();
        let mut order: Vec<&RealNode> = self.nodes.iter().filter(|n| n.manager && n.is_up()).collect();
        order.sort_by_key(|n| Some(&n.name) != hint.as_ref());
        let mut last = ControlError::Unavailable("no manager is running".into());
        for node in order {
            let client = EngineClient::new(node.endpoint());
            match tokio::time::timeout(Duration::from_secs(30), client.control(request.clone())).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(err @ ApiError::Daemon { .. })) => match engine_client::control_error(err) {
                    err @ (ControlError::NotAManager | ControlError::NoLeader) => last = err,
                    // The daemon's refusals (not in a swarm, …) are another manager's to answer.
                    ControlError::Unavailable(message) => {
                        last = ControlError::Unavailable(format!("{}: {message}", node.name))
                    }
                    err => return Err(err),
                },
                Ok(Err(err)) => last = ControlError::Unavailable(format!("{}: {err}", node.name)),
                Err(_) => last = ControlError::Unavailable(format!("{} did not answer within 30 s", node.name)),
            }
        }
        Err(last)
    }

    /// Send control requests to `leader` first from now on.
    pub fn set_leader_hint(&self, leader: Option<String>) {
        *self.leader_hint.lock().expect("leader hint") = leader;
    }

    /// The leader's host name as the answering manager's `node ls` shows it (if any) and the store
    /// (nodes, services, tasks, networks), read through the control API (reads are linearizable: a
    /// follower forwards them to the leader).
    pub async fn leader_state(&self) -> Result<(Option<String>, StoreState), String> {
        // `GET /shoal/state` (the objects as the store holds them, which Docker's shapes do not
        // carry whole), from the leader as last seen first, then the other live managers.
        let hint = self.leader_hint.lock().expect("leader hint").clone();
        let mut order: Vec<&RealNode> = self.nodes.iter().filter(|n| n.manager && n.is_up()).collect();
        order.sort_by_key(|n| Some(&n.name) != hint.as_ref());
        let mut last = "no manager is running".to_string();
        let mut state = None;
        for node in order {
            let client = EngineClient::new(node.endpoint());
            match tokio::time::timeout(Duration::from_secs(30), client.state()).await {
                Ok(Ok(found)) => {
                    state = Some(found);
                    break;
                }
                Ok(Err(err)) => last = format!("{}: {err}", node.name),
                Err(_) => last = format!("{} did not answer within 30 s", node.name),
            }
        }
        let engine_client::ClusterState { nodes, services, tasks, networks } =
            state.ok_or_else(|| format!("store: {last}"))?;
        let leader = nodes.iter().find(|v| v.leader).map(|v| v.node.hostname().to_string());
        fn table<'a, T: serde::Serialize + 'a>(
            items: impl Iterator<Item = (&'a str, &'a T)>,
        ) -> serde_json::Map<String, serde_json::Value> {
            items.map(|(id, item)| (id.to_string(), serde_json::to_value(item).unwrap_or_default())).collect()
        }
        let tables = serde_json::json!({
            "version": 0,
            "nodes": table(nodes.iter().map(|v| (v.node.id.as_str(), &v.node))),
            "services": table(services.iter().map(|v| (v.service.id.as_str(), &v.service))),
            "tasks": table(tasks.iter().map(|t| (t.id.as_str(), t))),
            "networks": table(networks.iter().map(|n| (n.id.as_str(), n))),
            "cluster": null,
        });
        let state: StoreState =
            serde_json::from_value(tables).map_err(|e| format!("cannot rebuild the leader's store: {e}"))?;
        Ok((leader, state))
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
