//! The executor seam: containers on one node, as the agent drives them.
//!
//! The agent walks a task through prepare (image present) → create → start → wait → stop → remove.
//! The simulator implements this with simulated containers (start delay, exit codes, crashes,
//! missing images); the daemon with Docker through bollard, or with plain processes.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::api::{HealthConfig, RegistryAuth};

/// Labels every container started by shoal carries, so an agent re-adopts its containers after a restart.
pub const LABEL_NODE_ID: &str = "com.shoal.node.id";
pub const LABEL_SERVICE_ID: &str = "com.shoal.service.id";
pub const LABEL_SERVICE_NAME: &str = "com.shoal.service.name";
pub const LABEL_TASK_ID: &str = "com.shoal.task.id";

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Replaces the image's command when not empty.
    pub command: Vec<String>,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub memory_limit_bytes: Option<u64>,
    pub nano_cpus: Option<u64>,
    /// The working directory; empty = the image's.
    #[serde(default)]
    pub workdir: String,
    /// `user`, `uid` or `uid:gid` to run as; empty = the image's.
    #[serde(default)]
    pub user: String,
    /// The node-local bridges of the task's networks (DESIGN §8); empty = host networking.
    #[serde(default)]
    pub networks: Vec<BridgeSpec>,
    /// DNS servers for the container: the mesh resolver on its first bridge's gateway.
    #[serde(default)]
    pub dns: Vec<String>,
    /// `mode=host` published ports, bound on the node's own address.
    #[serde(default)]
    pub port_bindings: Vec<PortBinding>,
    /// The container's hostname; empty = the runtime's default (the container id's prefix).
    #[serde(default)]
    pub hostname: String,
    /// Capabilities, sysctls, ulimits, init, stop signal, read-only root, DNS, extra hosts, as the
    /// task's spec gives them (its `dns` come after the mesh resolver's in [`ContainerSpec::dns`]).
    #[serde(default)]
    pub options: crate::api::ContainerOptions,
    /// The task's mounts (`--mount`): a named volume the node lacks is created with the mount's
    /// volume options; a bind source that does not exist fails the create with Docker's words.
    #[serde(default)]
    pub mounts: Vec<crate::api::Mount>,
    /// The service's health check; `None` = the image's HEALTHCHECK (if any) applies.
    #[serde(default)]
    pub healthcheck: Option<HealthConfig>,
    /// Secrets and configs, mounted read-only at their paths. Never serialised, and `Debug` hides
    /// their contents.
    #[serde(skip)]
    pub files: Vec<ContainerFile>,
}

/// One secret or config file in a container: `/run/secrets/<target>` or a config's target, with
/// its owner and permission bits (Docker's defaults 0:0, 0444).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ContainerFile {
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub data: Vec<u8>,
    /// A secret (kept off persistent disk by executors that can) rather than a config.
    pub secret: bool,
}

impl std::fmt::Debug for ContainerFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ContainerFile {{ path: {:?}, uid: {}, gid: {}, mode: {:o}, {} bytes }}",
            self.path,
            self.uid,
            self.gid,
            self.mode,
            self.data.len()
        )
    }
}

/// One node-local bridge for one network: what [`Executor::ensure_network`] creates and a container
/// is attached to. Made by the agent from the network's lease for this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct BridgeSpec {
    /// The swarm network's id (the key of the task's addresses).
    pub network_id: String,
    /// The runtime's name for the bridge network (`shoal-<network>-<node>`).
    pub name: String,
    /// The Linux bridge device (at most 15 bytes).
    pub device: String,
    /// The node's lease of the network's subnet (CIDR).
    pub subnet: String,
    /// The node's own address on the bridge (the first of the lease).
    pub gateway: String,
    /// Where containers get their addresses (CIDR inside `subnet`).
    pub ip_range: String,
    /// Names the task answers to on this network besides the service's (compose `aliases`).
    #[serde(default)]
    pub aliases: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// A `mode=host` port: `host_ip:published` on the node forwards to the container's `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub protocol: String,
    pub target: u16,
    pub host_ip: String,
    pub published: u16,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited { code: i64 },
}

/// One container as the executor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    /// The container's address on each bridge it is attached to (bridge network name → IP).
    #[serde(default)]
    pub addresses: BTreeMap<String, String>,
    /// What the container's health check says (Docker's `State.Health.Status`); `None` = it has
    /// no health check (none configured, or `NONE`).
    #[serde(default)]
    pub health: Option<Health>,
}

/// A health-checked container's status, as Docker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No check has passed yet (and too few have failed).
    Starting,
    Healthy,
    /// `retries` checks in a row failed.
    Unhealthy,
}

impl Health {
    /// Docker's word (`State.Health.Status`): `starting`, `healthy`, `unhealthy`; anything else
    /// (`none`, empty) is no health check.
    pub fn from_docker(status: &str) -> Option<Health> {
        match status {
            "starting" => Some(Health::Starting),
            "healthy" => Some(Health::Healthy),
            "unhealthy" => Some(Health::Unhealthy),
            _ => None,
        }
    }
}

/// One line of a container's output and when the runtime recorded it: nanoseconds since the Unix
/// epoch on the node's clock (virtual in the simulator). Executors that stamp lines themselves keep
/// a container's stamps strictly increasing, so a stamp is a cursor for `--follow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub time_ns: u64,
    pub text: String,
    /// Written to stderr (else stdout); `service logs` prints it to its own stderr, as Docker does.
    #[serde(default)]
    pub stderr: bool,
}

/// Which of a container's lines [`Executor::logs`] returns: those recorded after `after_ns` (when
/// set), and of those the last `tail` (all when `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsQuery {
    pub after_ns: Option<u64>,
    pub tail: Option<usize>,
}

impl LogLine {
    /// A line recorded now (`now_ns`) after `last`: stamped `now_ns`, or just after `last` when the
    /// clock has not moved past it, so a container's stamps stay strictly increasing.
    pub fn after(last: Option<&LogLine>, now_ns: u64, text: String, stderr: bool) -> LogLine {
        let time_ns = last.map_or(now_ns, |last| now_ns.max(last.time_ns + 1));
        LogLine { time_ns, text, stderr }
    }
}

impl LogsQuery {
    /// The lines of `lines` (oldest first) this query selects.
    pub fn select<'a>(&self, lines: impl DoubleEndedIterator<Item = &'a LogLine>) -> Vec<LogLine> {
        let after = self.after_ns;
        let mut picked: Vec<LogLine> = lines
            .rev()
            .take_while(|line| after.is_none_or(|after| line.time_ns > after))
            .take(self.tail.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        picked.reverse();
        picked
    }
}

/// Why the executor could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutorError {
    /// The image is not local and could not be pulled. `reason` is the task's error as Docker
    /// words it: "No such image: IMAGE" when the registry does not have it, else the engine's own
    /// pull error ("unauthorized: authentication required", "pull access denied for …").
    #[error("{reason}")]
    ImageUnavailable { image: String, reason: String },
    #[error("no such container: {id}")]
    NoSuchContainer { id: String },
    #[error("container runtime error: {0}")]
    Runtime(String),
    /// A mount the runtime refuses, in Docker's words (`invalid mount config for type "bind": bind
    /// source path does not exist: /x`): the task's error as `docker service ps` shows it.
    #[error("{0}")]
    InvalidMount(String),
    #[error("container runtime unavailable: {0}")]
    Unavailable(String),
}

/// A node's container runtime.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Make sure `image` is present locally: pull it when missing (with `auth`, the service's
    /// registry credentials, when it has some) if this executor pulls at all. Never pulls an image
    /// that already exists locally.
    async fn prepare_image(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<(), ExecutorError>;
    /// Create a container and return its id.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, ExecutorError>;
    async fn start(&self, id: &str) -> Result<(), ExecutorError>;
    /// Wait until the container exits and return its exit code.
    async fn wait(&self, id: &str) -> Result<i64, ExecutorError>;
    /// Ask the container to stop (SIGTERM); kill it after `grace`.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), ExecutorError>;
    /// Remove a stopped container (a running one is killed first).
    async fn remove(&self, id: &str) -> Result<(), ExecutorError>;
    async fn inspect(&self, id: &str) -> Result<ContainerSummary, ExecutorError>;
    /// Containers whose labels include every `(key, value)` in `labels`, sorted by id.
    async fn list(&self, labels: &[(String, String)]) -> Result<Vec<ContainerSummary>, ExecutorError>;
    /// The container's output (stdout and stderr), oldest first, as `query` selects it.
    async fn logs(&self, id: &str, query: &LogsQuery) -> Result<Vec<LogLine>, ExecutorError>;
    /// Make sure the bridge exists as `bridge` says (create it, or check an existing one matches).
    /// An executor without bridges (plain processes) accepts and ignores it.
    async fn ensure_network(&self, bridge: &BridgeSpec) -> Result<(), ExecutorError>;
    /// Remove a bridge made by `ensure_network` (by its `name`); idempotent. Fails while a
    /// container is still attached.
    async fn remove_network(&self, name: &str) -> Result<(), ExecutorError>;
    /// Bridges made by `ensure_network` whose labels include every `(key, value)` in `labels`.
    async fn list_networks(&self, labels: &[(String, String)]) -> Result<Vec<String>, ExecutorError>;
    /// The TCP/UDP ports the image declares (`EXPOSE`): `(protocol, port)`, sorted.
    async fn exposed_ports(&self, image: &str) -> Result<Vec<(String, u16)>, ExecutorError>;
    /// The TCP ports a running container listens on for other hosts (`LISTEN` sockets not bound
    /// to loopback), sorted: a service's VIP forwards these besides the declared ones, so a
    /// server reached on a port its image does not `EXPOSE` still works by name, as in Swarm.
    /// An executor whose containers share the host's network cannot tell theirs from the host's
    /// and reports none.
    async fn listening_ports(&self, _id: &str) -> Result<Vec<u16>, ExecutorError> {
        Ok(Vec::new())
    }
    /// Whether containers get bridges of their own (false for plain processes, which share the
    /// host's network: the data plane reaches them at their node's address).
    fn has_bridges(&self) -> bool {
        true
    }
}
