//! The control API's messages: what the CLI (through the daemon) and scenario steps may ask a
//! manager, and what it answers. Served on [`crate::rpc::Channel::Control`] by every manager.

use serde::{Deserialize, Serialize};

use crate::api::{
    Availability, ClusterSpec, Config, Labels, Meta, Network, Node, NodeRole, Secret, SecretSpec, Service, ServiceSpec,
    Task,
};

/// A request to the control API. Objects are named by id, unique id prefix, or name (hostname for nodes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    Info,
    NodeList,
    NodeInspect {
        node: String,
    },
    NodeUpdate {
        node: String,
        availability: Option<Availability>,
        label_add: Labels,
        label_rm: Vec<String>,
    },
    NodePromote {
        node: String,
    },
    NodeDemote {
        node: String,
    },
    NodeRemove {
        node: String,
        force: bool,
    },
    ServiceCreate {
        spec: ServiceSpec,
    },
    ServiceList,
    ServiceInspect {
        service: String,
    },
    /// Replace the spec; `version` is the service version the new spec was based on.
    ServiceUpdate {
        service: String,
        version: u64,
        spec: ServiceSpec,
    },
    ServiceRollback {
        service: String,
    },
    ServiceScale {
        service: String,
        replicas: u64,
    },
    ServiceRemove {
        service: String,
    },
    /// `service logs`: the output of the service's tasks (or of one task, by id), gathered from
    /// every node that ran one.
    ServiceLogs {
        service: String,
        selection: crate::logs::LogsSelection,
    },
    /// Tasks, optionally of one service and/or one node, newest first within a slot.
    TaskList {
        service: Option<String>,
        node: Option<String>,
    },
    JoinToken {
        role: NodeRole,
        rotate: bool,
    },
    /// `swarm update`: change the cluster settings given (`None` keeps one).
    ClusterUpdate {
        task_history_limit: Option<u64>,
        heartbeat_period_ms: Option<u64>,
        node_cert_expiry_ms: Option<u64>,
    },
    NetworkCreate {
        name: String,
        driver: String,
        attachable: bool,
        labels: Labels,
        /// `--subnet`; empty = the next free /16 of 10.0.0.0/8.
        #[serde(default)]
        subnet: String,
        /// `--ingress`: the routing-mesh network (one per swarm, after `network rm ingress`).
        #[serde(default)]
        ingress: bool,
    },
    NetworkList,
    NetworkInspect {
        network: String,
    },
    NetworkRemove {
        network: String,
    },
    // Secrets and configs (`crate::secrets`): values travel base64 in a [`FileData`], which
    // `Debug` never prints.
    SecretCreate {
        spec: SecretSpec,
        data: FileData,
    },
    SecretList,
    SecretInspect {
        secret: String,
    },
    SecretRemove {
        secret: String,
    },
    ConfigCreate {
        spec: SecretSpec,
        data: FileData,
    },
    ConfigList,
    ConfigInspect {
        config: String,
    },
    ConfigRemove {
        config: String,
    },
    /// Docker's `POST /secrets/{id}/update`: only the labels may change (swarmkit's words
    /// otherwise); `data`, when given (as `docker stack deploy` sends it again), must be the value
    /// the secret holds.
    SecretUpdate {
        secret: String,
        version: u64,
        spec: SecretSpec,
        data: Option<FileData>,
    },
    /// As [`ControlRequest::SecretUpdate`], for a config.
    ConfigUpdate {
        config: String,
        version: u64,
        spec: SecretSpec,
        data: Option<FileData>,
    },
    /// A manager that lacks the secrets key asks another for it (only managers may use the control
    /// channel: see `crate::auth`). Answered locally, never forwarded.
    SecretsKey,
    /// `swarm unlock-key [--rotate]`: the unlock key (empty while autolock is off).
    UnlockKey {
        rotate: bool,
    },
    /// `swarm init|update --autolock=BOOL`: answers the unlock key (empty when turned off).
    SwarmAutolock {
        enabled: bool,
    },
    /// `swarm unlock`: answered by the node asked (a locked manager opens its data with the key).
    Unlock {
        key: FileData,
    },
    /// `swarm ca`: the root CA certificate and how far a rotation is.
    CaInspect,
    /// `swarm ca --rotate`: start a root rotation to `new_root` (the daemon makes it, with the
    /// cross-signature; the simulator passes `None` and gets a placeholder digest).
    CaRotate {
        new_root: Option<crate::ca_rotation::NewRootCa>,
    },
}

/// A secret's or config's value, base64, on its way to a manager. `Debug` redacts it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileData(pub String);

impl std::fmt::Debug for FileData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A config as `config inspect` shows it: the object and its value (base64; empty in lists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigView {
    pub config: Config,
    pub data: FileData,
}

impl ControlRequest {
    /// Whether the request changes the cluster (and so must go through raft).
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            ControlRequest::Info
                | ControlRequest::NodeList
                | ControlRequest::NodeInspect { .. }
                | ControlRequest::ServiceList
                | ControlRequest::ServiceInspect { .. }
                | ControlRequest::ServiceLogs { .. }
                | ControlRequest::TaskList { .. }
                | ControlRequest::NetworkList
                | ControlRequest::NetworkInspect { .. }
                | ControlRequest::SecretList
                | ControlRequest::SecretInspect { .. }
                | ControlRequest::ConfigList
                | ControlRequest::ConfigInspect { .. }
                | ControlRequest::SecretsKey
                | ControlRequest::UnlockKey { rotate: false }
                | ControlRequest::Unlock { .. }
                | ControlRequest::CaInspect
        )
    }
}

/// A node as `node ls` / `node inspect` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub node: Node,
    pub leader: bool,
    /// `reachable` / `unreachable` for managers, empty for workers.
    pub reachability: String,
}

/// A service with its running/desired counts, as `service ls` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    pub service: Service,
    pub running: u64,
    pub desired: u64,
    /// Jobs: tasks of the current iteration that completed (`service ls`'s `(K/N completed)`).
    #[serde(default)]
    pub completed: u64,
}

/// What `docker info` shows about the swarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub node_id: String,
    pub node_addr: String,
    pub is_manager: bool,
    pub cluster_id: String,
    pub managers: u64,
    pub nodes: u64,
    pub spec: ClusterSpec,
    pub manager_addrs: Vec<String>,
    pub leader_addr: Option<String>,
    /// The cluster object's version and times (the Engine API's `/swarm` shows them, and
    /// `swarm update` names the version it read).
    #[serde(default)]
    pub meta: Meta,
    /// A root CA rotation is under way (`swarm ca --rotate`, DESIGN §6b).
    #[serde(default)]
    pub root_rotation_in_progress: bool,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum ControlResponse {
    Done,
    Info(Box<ClusterInfo>),
    Nodes(Vec<NodeView>),
    Node(Box<NodeView>),
    Services(Vec<ServiceView>),
    Service(Box<ServiceView>),
    Created {
        id: String,
    },
    Tasks(Vec<Task>),
    JoinToken {
        token: String,
        manager_addr: String,
    },
    Networks(Vec<Network>),
    Network(Box<Network>),
    Logs(crate::logs::ServiceLogs),
    /// Secrets without their sealed values (nothing of a value ever leaves the managers).
    Secrets(Vec<Secret>),
    Secret(Box<Secret>),
    Configs(Vec<ConfigView>),
    Config(Box<ConfigView>),
    SecretsKey(crate::secrets::KeyMaterial),
    /// `swarm unlock-key`: `SWMKEY-1-…`, or empty while autolock is off.
    UnlockKey {
        key: FileData,
    },
    /// `swarm ca`: never the key.
    Ca(Box<CaView>),
}

/// What `swarm ca` shows: the root certificate (trust root) and the rotation's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaView {
    /// The cluster's root CA certificate (PEM); empty in the simulator.
    pub root_ca_pem: String,
    pub root_ca_digest: String,
    pub progress: crate::ca_rotation::CaProgress,
    /// What every node's TLS should hold now (`node ls`'s TLS STATUS compares against it).
    #[serde(default)]
    pub desired_tls: crate::api::NodeTlsInfo,
}

impl ControlResponse {
    /// This answer without registry credentials: what the control API sends to any client (and to
    /// a manager that forwarded a read). Nothing a client reads carries them.
    pub fn redacted(self) -> ControlResponse {
        let view = |v: ServiceView| ServiceView { service: v.service.redacted(), ..v };
        match self {
            ControlResponse::Services(views) => ControlResponse::Services(views.into_iter().map(view).collect()),
            ControlResponse::Service(v) => ControlResponse::Service(Box::new(view(*v))),
            ControlResponse::Tasks(tasks) => ControlResponse::Tasks(tasks.iter().map(Task::redacted).collect()),
            other => other,
        }
    }
}

/// Why a control request was refused. Messages say what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", content = "message", rename_all = "snake_case")]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Conflict(String),
    /// Quorum lost: Swarm's message.
    #[error("{}", crate::store::LOST_QUORUM_MESSAGE)]
    NoLeader,
    #[error(
        "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. \
         Please run this command on a manager node or promote the current node to a manager."
    )]
    NotAManager,
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A manager restarted with autolock, waiting for `swarm unlock` (moby `errSwarmLocked`).
    #[error("{}", crate::autolock::LOCKED)]
    Locked,
}

pub type ControlResult = Result<ControlResponse, ControlError>;
