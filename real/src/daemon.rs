//! `shoal daemon`: one per host. Answers the Engine API's requests (as their in-process handler,
//! [`crate::local_api`]), and owns at most one swarm node.
//!
//! The daemon starts "inactive" unless its data dir holds a node's state, in which case it resumes
//! that node. `swarm init` / `swarm join` start a node; `swarm leave` stops it and erases its state.
//! Everything else is a [`ControlRequest`] passed to the node.
//!
//! How a node is built and started is behind [`NodeLauncher`], so the lifecycle here (states,
//! refusals, timeouts, persistence of the daemon's own settings) is tested without a cluster; the
//! real launcher (TCP transport, file disk, Docker or process executor, `ShoalNode`) is in
//! [`crate::node_launcher`].
//!
//! Files under the data dir (mode 0700): `daemon.lock` (held by the running daemon, with its pid; see
//! [`crate::data_dir_lock`]), `daemon.json` (this node's hostname and addresses, for
//! resuming), `events.jsonl` (the node's trace events), `node/` (the core's disk: raft log, snapshots,
//! identity) and `certificates/` (the cluster CA and this node's certificate and key; see
//! [`crate::node_launcher`]).

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shoal_core::api::{Availability, NodeRole};
use shoal_core::control::{ControlError, ControlRequest, ControlResponse};
use shoal_core::trace::{TraceEvent, TraceSink};

use crate::local_api::{
    ClusterOverrides, InitRequest, JoinRequest, LocalAnswer, LocalError, LocalHandler, LocalRequest, LocalResult,
    SwarmStatus,
};

/// Swarm's default port for cluster traffic.
pub const DEFAULT_SWARM_PORT: u16 = 2377;
/// Swarm's default data path port (VXLAN's in Swarm; the mesh tunnels' in shoal).
pub const DEFAULT_DATA_PATH_PORT: u16 = 4789;
/// How long `swarm join` waits before answering that the join continues in the background (moby's
/// `swarmConnectTimeout`).
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

const NOT_IN_SWARM: &str = "This node is not part of a swarm";
const LOCKED_LEAVE: &str =
    "Swarm is encrypted and locked. Please unlock it first or use `--force` to ignore this message.";
const ALREADY_IN_SWARM: &str =
    "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one.";
const NO_MANAGER: &str =
    "This node is not a swarm manager. Use \"shoal swarm init\" or \"shoal swarm join\" to connect \
                          this node to swarm and try again.";
const JOIN_TIMED_OUT: &str = "Timeout was reached before node joined. The attempt to join the swarm will continue in \
                              the background. Use the \"shoal info\" command to see the current swarm status of your node.";

/// How the node comes up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    Init { force_new_cluster: bool, overrides: ClusterOverrides },
    Join { remote_addr: String, token: String },
    Resume,
}

/// The daemon's own record of its node, kept in `daemon.json` so a restart resumes with the same
/// addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSettings {
    pub hostname: String,
    /// `ip:port` peers dial.
    pub advertise_addr: String,
    /// `ip:port` this node listens on.
    pub listen_addr: String,
    pub availability: Availability,
    /// `ip:port` where this node accepts the mesh's tunnels from its peers (`--data-path-addr`,
    /// `--data-path-port`); empty in files written before the data plane: the advertise IP, port 4789.
    #[serde(default)]
    pub data_addr: String,
}

impl NodeSettings {
    /// Where this node accepts tunnels: [`NodeSettings::data_addr`], or its default.
    pub fn data_addr(&self) -> String {
        if !self.data_addr.is_empty() {
            return self.data_addr.clone();
        }
        data_addr("", None, &self.advertise_addr).unwrap_or_default()
    }
}

/// A started node, as the daemon drives it.
#[async_trait]
pub trait RunningNode: Send + Sync + 'static {
    fn node_id(&self) -> String;
    async fn control(&self, request: ControlRequest) -> Result<ControlResponse, ControlError>;
    async fn leave(&self, force: bool) -> Result<(), ControlError>;
    async fn shutdown(&self);
    /// Returns when the cluster removed this node (`node rm`); never, by default.
    async fn removed(&self) {
        std::future::pending::<()>().await
    }
}

/// Builds the node's environment and starts it.
#[async_trait]
pub trait NodeLauncher: Send + Sync + 'static {
    /// Whether `node_dir` holds a node's state to resume.
    async fn has_state(&self, node_dir: &Path) -> bool;
    /// The wait of a manager that came up locked (autolock), while it is locked.
    fn lock_gate(&self) -> Option<shoal_core::autolock::LockGate> {
        None
    }
    /// Forget a locked wait (its start was abandoned: `swarm leave --force`).
    fn forget_lock(&self) {}
    async fn start(
        &self,
        node_dir: &Path,
        settings: &NodeSettings,
        tracer: Arc<dyn TraceSink>,
        bootstrap: Bootstrap,
    ) -> Result<Arc<dyn RunningNode>, String>;
}

/// Trace events as JSON lines appended to `<data-dir>/events.jsonl`, the format `shoal-reports` reads.
#[derive(Debug)]
pub struct JsonlTraceSink {
    file: Mutex<std::fs::File>,
}

impl JsonlTraceSink {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonlTraceSink { file: Mutex::new(file) })
    }
}

impl TraceSink for JsonlTraceSink {
    fn record(&self, event: TraceEvent) {
        if event.is_alarm() {
            log(&format!("{}: {}", event.node, event.alarm_text()));
        }
        let Ok(mut line) = serde_json::to_vec(&event) else {
            return;
        };
        line.push(b'\n');
        // One write per event, so concurrent events never interleave within a line. A failed write
        // loses an event, never the node.
        let mut file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = file.write_all(&line);
    }
}

enum State {
    Inactive,
    /// Starting (join or resume in progress).
    Pending {
        settings: NodeSettings,
    },
    Active {
        node: Arc<dyn RunningNode>,
        settings: NodeSettings,
    },
    /// The last start failed; the daemon accepts `init`/`join` again.
    Error {
        message: String,
    },
}

/// The daemon: the handler behind its Engine API.
pub struct Daemon {
    data_dir: PathBuf,
    hostname: String,
    launcher: Arc<dyn NodeLauncher>,
    state: Arc<Mutex<State>>,
    /// Serialises init / join / leave / resume, which take seconds; status reads never wait for it.
    lifecycle: tokio::sync::Mutex<()>,
    /// The resume in progress, which a locked manager's `swarm leave --force` abandons.
    resuming: Mutex<Option<tokio::task::AbortHandle>>,
    tracer: Arc<dyn TraceSink>,
}

fn log(message: &str) {
    eprintln!("shoal daemon: {message}");
}

impl Daemon {
    /// A daemon over `data_dir` (created if missing). Call [`Daemon::resume`] to bring back a node.
    pub fn new(data_dir: &Path, hostname: String, launcher: Arc<dyn NodeLauncher>) -> std::io::Result<Daemon> {
        std::fs::create_dir_all(data_dir)?;
        // The data dir holds the node's keys and the raft log (which carries the cluster CA key).
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
        let tracer = Arc::new(JsonlTraceSink::open(&data_dir.join("events.jsonl"))?);
        Ok(Daemon {
            data_dir: data_dir.to_path_buf(),
            hostname,
            launcher,
            state: Arc::new(Mutex::new(State::Inactive)),
            lifecycle: tokio::sync::Mutex::new(()),
            resuming: Mutex::new(None),
            tracer,
        })
    }

    fn node_dir(&self) -> PathBuf {
        self.data_dir.join("node")
    }

    fn settings_path(&self) -> PathBuf {
        self.data_dir.join("daemon.json")
    }

    fn set(&self, state: State) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// Make `node` the active node, and go back to inactive if the cluster removes it.
    fn activate(self: &Arc<Self>, node: Arc<dyn RunningNode>, settings: NodeSettings) {
        self.set(State::Active { node: node.clone(), settings });
        let daemon = Arc::downgrade(self);
        tokio::spawn(async move {
            node.removed().await;
            let Some(daemon) = daemon.upgrade() else { return };
            let _guard = daemon.lifecycle.lock().await;
            // Only if this node is still the active one (not replaced by a later init/join).
            let current = daemon.active_node();
            if current.is_some_and(|current| Arc::ptr_eq(&current, &node)) {
                log("this node was removed from the swarm; inactive until `swarm init` or `swarm join`");
                node.shutdown().await;
                daemon.erase_state();
                daemon.set(State::Inactive);
            }
        });
    }

    fn active_node(&self) -> Option<Arc<dyn RunningNode>> {
        match &*self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            State::Active { node, .. } => Some(node.clone()),
            _ => None,
        }
    }

    /// If the data dir holds a node, start it again (in the background: the API answers
    /// `pending` meanwhile).
    pub async fn resume(self: &Arc<Self>) {
        let node_dir = self.node_dir();
        if !self.launcher.has_state(&node_dir).await {
            log("no swarm state in the data dir; inactive until `swarm init` or `swarm join`");
            return;
        }
        let settings = match std::fs::read(self.settings_path()) {
            Ok(bytes) => match serde_json::from_slice::<NodeSettings>(&bytes) {
                Ok(settings) => settings,
                Err(err) => {
                    let message = format!("cannot resume: {} is garbled: {err}", self.settings_path().display());
                    log(&message);
                    self.set(State::Error { message });
                    return;
                }
            },
            Err(err) => {
                let message = format!("cannot resume: cannot read {}: {err}", self.settings_path().display());
                log(&message);
                self.set(State::Error { message });
                return;
            }
        };
        log(&format!("resuming node at {}", settings.advertise_addr));
        self.set(State::Pending { settings: settings.clone() });
        let daemon = self.clone();
        let task = tokio::spawn(async move {
            let _guard = daemon.lifecycle.lock().await;
            let started = daemon.launcher.start(&node_dir, &settings, daemon.tracer.clone(), Bootstrap::Resume).await;
            match started {
                Ok(node) => {
                    log(&format!("node {} resumed", node.node_id()));
                    daemon.activate(node, settings);
                }
                Err(message) => {
                    log(&format!("cannot resume the node: {message}"));
                    daemon.set(State::Error { message });
                }
            }
        });
        *self.resuming.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
    }

    /// Stop the node (if any) without leaving the swarm: it resumes on the next start.
    pub async fn shutdown(&self) {
        if let Some(node) = self.active_node() {
            log("shutting the node down");
            node.shutdown().await;
        }
        self.set(State::Inactive);
    }

    fn refuse_if_member(&self) -> Result<(), LocalError> {
        match &*self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            State::Inactive | State::Error { .. } => Ok(()),
            State::Pending { .. } | State::Active { .. } => Err(LocalError::Refused(ALREADY_IN_SWARM.into())),
        }
    }

    fn write_settings(&self, settings: &NodeSettings) -> Result<(), LocalError> {
        let bytes = serde_json::to_vec_pretty(settings).map_err(|err| LocalError::Refused(err.to_string()))?;
        let tmp = self.data_dir.join("daemon.json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, self.settings_path())
        };
        write().map_err(|err| LocalError::Refused(format!("cannot write {}: {err}", self.settings_path().display())))
    }

    /// Remove the node's state so that the next start is inactive (after leave, or a failed start).
    fn erase_state(&self) {
        let _ = std::fs::remove_dir_all(self.node_dir());
        let _ = std::fs::remove_dir_all(crate::node_launcher::certificates_dir(&self.node_dir()));
        let _ = std::fs::remove_file(self.settings_path());
    }

    async fn init(self: &Arc<Self>, request: InitRequest) -> LocalResult {
        // A locked manager's resume holds the lifecycle until it is unlocked.
        if self.launcher.lock_gate().is_some() {
            return Err(LocalError::Control(ControlError::Locked));
        }
        let _guard = self.lifecycle.lock().await;
        if request.force_new_cluster {
            // `--force-new-cluster` re-forms a one-manager cluster from this manager's own state.
            if let Some(node) = self.active_node() {
                node.shutdown().await;
                self.set(State::Inactive);
            }
        } else {
            self.refuse_if_member()?;
        }
        // Re-forming keeps the addresses the node had unless new ones are given, as Docker's does.
        let previous = request
            .force_new_cluster
            .then(|| std::fs::read(self.settings_path()).ok())
            .flatten()
            .and_then(|bytes| serde_json::from_slice::<NodeSettings>(&bytes).ok());
        let data_text = match &previous {
            Some(previous) if request.data_path_addr.is_empty() && request.data_path_port.is_none() => {
                previous.data_addr.clone()
            }
            _ => String::new(),
        };
        let (listen_text, advertise_text) = match &previous {
            Some(previous) if request.listen_addr.is_empty() && request.advertise_addr.is_empty() => {
                (previous.listen_addr.clone(), previous.advertise_addr.clone())
            }
            _ => (request.listen_addr.clone(), request.advertise_addr.clone()),
        };
        let listen_addr = listen_addr(&default_listen(&listen_text, &advertise_text)).map_err(LocalError::Refused)?;
        let advertise_addr = advertise_addr(&advertise_text, &listen_addr, None).map_err(LocalError::Refused)?;
        let data_addr = if data_text.is_empty() {
            data_addr(&request.data_path_addr, request.data_path_port, &advertise_addr).map_err(LocalError::Refused)?
        } else {
            data_text
        };
        let settings = NodeSettings {
            hostname: self.hostname.clone(),
            advertise_addr,
            listen_addr,
            availability: request.availability,
            data_addr,
        };
        if !request.force_new_cluster {
            self.erase_state();
        }
        std::fs::create_dir_all(self.node_dir()).map_err(|err| LocalError::Refused(err.to_string()))?;
        self.write_settings(&settings)?;
        let bootstrap =
            Bootstrap::Init { force_new_cluster: request.force_new_cluster, overrides: request.overrides.clone() };
        let node = match self.launcher.start(&self.node_dir(), &settings, self.tracer.clone(), bootstrap).await {
            Ok(node) => node,
            Err(message) => {
                if !request.force_new_cluster {
                    self.erase_state();
                }
                return Err(LocalError::Refused(message));
            }
        };
        log(&format!("swarm initialized; node {} is a manager at {}", node.node_id(), settings.advertise_addr));
        self.activate(node.clone(), settings.clone());
        let node_id = node.node_id();
        // The leader may take a moment to accept writes after start; the token is a read.
        let mut answer = node.control(ControlRequest::JoinToken { role: NodeRole::Worker, rotate: false }).await;
        for _ in 0..50 {
            if !matches!(answer, Err(ControlError::NoLeader) | Err(ControlError::Unavailable(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            answer = node.control(ControlRequest::JoinToken { role: NodeRole::Worker, rotate: false }).await;
        }
        match answer {
            Ok(ControlResponse::JoinToken { token, manager_addr }) => {
                Ok(LocalAnswer::Initialized { node_id, worker_token: token, manager_addr })
            }
            // The swarm is up even when the token cannot be shown yet; `swarm join-token` shows it later.
            _ => Ok(LocalAnswer::Initialized {
                node_id,
                worker_token: String::new(),
                manager_addr: settings.advertise_addr,
            }),
        }
    }

    async fn join(self: &Arc<Self>, request: JoinRequest) -> LocalResult {
        let guard = self.lifecycle.lock().await;
        self.refuse_if_member()?;
        if request.remote_addr.is_empty() {
            return Err(LocalError::Refused("at least 1 RemoteAddr is required to join".into()));
        }
        let remote = with_port(&request.remote_addr, DEFAULT_SWARM_PORT)
            .map_err(|reason| LocalError::Refused(format!("invalid remoteAddr {:?}: {reason}", request.remote_addr)))?;
        let listen_addr =
            listen_addr(&default_listen(&request.listen_addr, &request.advertise_addr)).map_err(LocalError::Refused)?;
        let advertise_addr =
            advertise_addr(&request.advertise_addr, &listen_addr, Some(&remote)).map_err(LocalError::Refused)?;
        let data_addr =
            data_addr(&request.data_path_addr, request.data_path_port, &advertise_addr).map_err(LocalError::Refused)?;
        let settings = NodeSettings {
            hostname: self.hostname.clone(),
            advertise_addr,
            listen_addr,
            availability: request.availability,
            data_addr,
        };
        self.erase_state();
        std::fs::create_dir_all(self.node_dir()).map_err(|err| LocalError::Refused(err.to_string()))?;
        self.write_settings(&settings)?;
        self.set(State::Pending { settings: settings.clone() });
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let daemon = self.clone();
        let bootstrap = Bootstrap::Join { remote_addr: remote, token: request.token.clone() };
        // The join continues in the background past the answer's timeout, as Docker's does; the
        // lifecycle lock is held by that task until it settles.
        drop(guard);
        tokio::spawn(async move {
            let _guard = daemon.lifecycle.lock().await;
            let started = daemon.launcher.start(&daemon.node_dir(), &settings, daemon.tracer.clone(), bootstrap).await;
            let result = match started {
                Ok(node) => {
                    log(&format!("joined the swarm as node {}", node.node_id()));
                    daemon.activate(node.clone(), settings);
                    Ok(node)
                }
                Err(message) => {
                    log(&format!("cannot join: {message}"));
                    daemon.erase_state();
                    daemon.set(State::Inactive);
                    Err(message)
                }
            };
            let _ = done_tx.send(result);
        });
        match tokio::time::timeout(JOIN_TIMEOUT, done_rx).await {
            Err(_) => Err(LocalError::Refused(JOIN_TIMED_OUT.into())),
            Ok(Err(_)) => Err(LocalError::Refused("the join was abandoned by the daemon".into())),
            Ok(Ok(Err(message))) => Err(LocalError::Refused(message)),
            Ok(Ok(Ok(node))) => {
                let manager = !matches!(node.control(ControlRequest::Info).await, Err(ControlError::NotAManager));
                Ok(LocalAnswer::Joined { node_id: node.node_id(), manager })
            }
        }
    }

    async fn leave(&self, force: bool) -> LocalResult {
        if self.launcher.lock_gate().is_some() {
            if !force {
                // docker/cli `swarm/leave.go` via moby `cluster/swarm.go`.
                return Err(LocalError::Refused(LOCKED_LEAVE.into()));
            }
            // Forced: abandon the locked resume (it holds the lifecycle) and erase the state.
            if let Some(task) = self.resuming.lock().unwrap_or_else(|p| p.into_inner()).take() {
                task.abort();
            }
            self.launcher.forget_lock();
        }
        let _guard = self.lifecycle.lock().await;
        let node = match &*self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            State::Active { node, .. } => Some(node.clone()),
            // A node that could not start (expired certificates, damaged state) leaves by erasing
            // what it had, as the error message tells the user to.
            State::Pending { .. } | State::Error { .. } => None,
            State::Inactive => return Err(LocalError::Refused(NOT_IN_SWARM.into())),
        };
        if let Some(node) = node {
            match node.leave(force).await {
                Ok(()) => {}
                // A node that cannot tell the cluster it leaves still leaves when forced.
                Err(err) if !force || matches!(err, ControlError::FailedPrecondition(_)) => {
                    return Err(LocalError::Control(err));
                }
                Err(err) => log(&format!("leaving without telling the cluster: {err}")),
            }
            node.shutdown().await;
        }
        self.erase_state();
        self.set(State::Inactive);
        log("left the swarm");
        Ok(LocalAnswer::Left)
    }

    fn status(&self) -> SwarmStatus {
        let blank = |state: &str| SwarmStatus {
            state: state.into(),
            node_id: String::new(),
            node_addr: String::new(),
            error: String::new(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        match &*self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            State::Inactive => blank("inactive"),
            State::Pending { settings } if self.launcher.lock_gate().is_some() => {
                SwarmStatus { node_addr: host_of(&settings.advertise_addr), ..blank("locked") }
            }
            State::Pending { settings } => {
                SwarmStatus { node_addr: host_of(&settings.advertise_addr), ..blank("pending") }
            }
            State::Active { node, settings } => {
                SwarmStatus { node_id: node.node_id(), node_addr: host_of(&settings.advertise_addr), ..blank("active") }
            }
            State::Error { message } => SwarmStatus { error: message.clone(), ..blank("error") },
        }
    }
}

#[async_trait]
impl LocalHandler for Arc<Daemon> {
    async fn handle(&self, request: LocalRequest) -> LocalResult {
        match request {
            LocalRequest::SwarmInit(init) => self.init(init).await,
            LocalRequest::SwarmJoin(join) => self.join(join).await,
            LocalRequest::SwarmLeave { force } => self.leave(force).await,
            LocalRequest::SwarmStatus => Ok(LocalAnswer::Status(self.status())),
            // The secrets key goes from manager to manager over mutual TLS only, never to a client.
            LocalRequest::Control { request }
                if matches!(*request, shoal_core::control::ControlRequest::SecretsKey) =>
            {
                Err(LocalError::Refused("the secrets key is handed only from one manager to another".into()))
            }
            // A locked manager (autolock) takes only the unlock key; everything else gets Swarm's
            // locked error (moby `errSwarmLocked`).
            LocalRequest::Control { request } if self.launcher.lock_gate().is_some() => {
                let gate = self.launcher.lock_gate().expect("checked above");
                match *request {
                    shoal_core::control::ControlRequest::Unlock { key } => gate
                        .try_unlock(&key.0)
                        .await
                        .map(|()| LocalAnswer::Control(shoal_core::control::ControlResponse::Done))
                        .map_err(LocalError::Control),
                    _ => Err(LocalError::Control(shoal_core::control::ControlError::Locked)),
                }
            }
            LocalRequest::Control { request } => match self.active_node() {
                Some(node) => node.control(*request).await.map(LocalAnswer::Control).map_err(LocalError::Control),
                None => Err(LocalError::Refused(NO_MANAGER.into())),
            },
        }
    }
}

/// `ip:port` from `ip` or `ip:port`, filling in `default_port`.
pub fn with_port(addr: &str, default_port: u16) -> Result<String, String> {
    if let Ok(socket) = addr.parse::<SocketAddr>() {
        return Ok(socket.to_string());
    }
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port).to_string());
    }
    // host:port with a host name (resolved when dialled).
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(addr.to_string()),
        None if !addr.is_empty() && !addr.contains('/') => Ok(format!("{addr}:{default_port}")),
        _ => Err("use host, host:port, ip or ip:port".into()),
    }
}

/// The listen address when none was given: Swarm's `0.0.0.0:2377`, except that an advertised
/// `ip:port` means peers will dial that port, so listen on it (Docker would listen on 2377 and be
/// unreachable).
pub fn default_listen(listen: &str, advertise: &str) -> String {
    if !listen.is_empty() {
        return listen.to_string();
    }
    match advertise.parse::<SocketAddr>() {
        Ok(addr) => format!("0.0.0.0:{}", addr.port()),
        Err(_) => "0.0.0.0:2377".to_string(),
    }
}

/// The listen address, `0.0.0.0:2377` by default.
pub fn listen_addr(text: &str) -> Result<String, String> {
    let text = if text.is_empty() { "0.0.0.0:2377" } else { text };
    let bad = || "listen address must be an IP address or network interface (with optional port number)".to_string();
    let full = with_port(text, DEFAULT_SWARM_PORT).map_err(|_| bad())?;
    full.parse::<SocketAddr>().map(|a| a.to_string()).map_err(|_| bad())
}

/// The advertised address: the given one (port from the listen address if missing), else the
/// listen IP if specific, else the address this host would use to reach `remote` (or the outside).
pub fn advertise_addr(text: &str, listen_addr: &str, remote: Option<&str>) -> Result<String, String> {
    let listen: SocketAddr = listen_addr.parse().map_err(|_| "invalid listen address".to_string())?;
    let bad = || "advertise address must be a non-zero IP address or network interface (with optional port number)";
    if !text.is_empty() {
        let full = with_port(text, listen.port()).map_err(|_| bad().to_string())?;
        let socket: SocketAddr = full.parse().map_err(|_| bad().to_string())?;
        if socket.ip().is_unspecified() {
            return Err(bad().into());
        }
        return Ok(socket.to_string());
    }
    if !listen.ip().is_unspecified() {
        return Ok(listen.to_string());
    }
    // Connecting a UDP socket sends nothing; it only asks the kernel which source address it would use.
    let probe = remote.unwrap_or("192.0.2.1:2377");
    let local = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|socket| socket.connect(probe).map(|_| socket))
        .and_then(|socket| socket.local_addr());
    match local {
        Ok(addr) if !addr.ip().is_unspecified() => Ok(SocketAddr::new(addr.ip(), listen.port()).to_string()),
        _ => Err("could not find the system's IP address - specify one with --advertise-addr".into()),
    }
}

/// The data address (`ip:port`): the `--data-path-addr` IP (else the advertise address's IP) and the
/// `--data-path-port` (else 4789), with Swarm's checks and words.
pub fn data_addr(text: &str, port: Option<u32>, advertise_addr: &str) -> Result<String, String> {
    let port = match port {
        None | Some(0) => DEFAULT_DATA_PATH_PORT,
        Some(port @ 1024..=49151) => port as u16,
        Some(port) => return Err(format!("Datapath port number is not in valid range (1024-49151) : {port}")),
    };
    let ip = if text.is_empty() {
        let advertise: SocketAddr = advertise_addr.parse().map_err(|_| "invalid advertise address".to_string())?;
        advertise.ip()
    } else {
        match text.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => ip,
            _ => {
                return Err(
                    "data path address must be a non-zero IP address or network interface (without a port number)"
                        .into(),
                )
            }
        }
    };
    Ok(SocketAddr::new(ip, port).to_string())
}

fn host_of(addr: &str) -> String {
    addr.parse::<SocketAddr>().map(|a| a.ip().to_string()).unwrap_or_else(|_| addr.to_string())
}

/// This host's name, for nodes started without `--hostname`.
pub fn system_hostname() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    match std::str::from_utf8(&buffer[..end]) {
        Ok(name) if ok && !name.is_empty() => name.to_string(),
        _ => "localhost".into(),
    }
}
