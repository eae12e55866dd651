//! The daemon's in-process interface behind the Docker Engine API ([`crate::engine_api`]): what a
//! request asks of the daemon once decoded — a swarm-lifecycle operation the daemon handles itself
//! (init, join, leave, status) or a wrapped [`ControlRequest`] it passes to its node. Nothing here
//! travels on a socket: clients (shoal's CLI included) speak the Engine API ([`crate::engine_client`]).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shoal_core::api::Availability;
use shoal_core::control::{ControlError, ControlRequest, ControlResponse};

/// Cluster settings `swarm init` may override; `None` keeps Swarm's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterOverrides {
    pub task_history_retention_limit: Option<u64>,
    pub heartbeat_period_ms: Option<u64>,
    pub snapshot_interval: Option<u64>,
    /// Node certificate validity (`--cert-expiry`), at least an hour.
    #[serde(default)]
    pub cert_expiry_ms: Option<u64>,
    /// `--autolock`: the swarm starts with autolock on.
    #[serde(default)]
    pub autolock: Option<bool>,
}

/// `swarm init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitRequest {
    /// `ip` or `ip:port`; empty = pick this host's address.
    pub advertise_addr: String,
    /// `ip:port` the node listens on for peers (Swarm's default `0.0.0.0:2377`).
    pub listen_addr: String,
    pub force_new_cluster: bool,
    pub availability: Availability,
    pub overrides: ClusterOverrides,
    /// `--data-path-addr`: the IP peers open tunnels to; empty = the advertise address's IP.
    #[serde(default)]
    pub data_path_addr: String,
    /// `--data-path-port`: the port of the data path (Swarm's 4789 when `None` or 0).
    #[serde(default)]
    pub data_path_port: Option<u32>,
}

/// `swarm join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub remote_addr: String,
    pub token: String,
    pub advertise_addr: String,
    pub listen_addr: String,
    pub availability: Availability,
    /// As [`InitRequest::data_path_addr`].
    #[serde(default)]
    pub data_path_addr: String,
    /// As [`InitRequest::data_path_port`]; Swarm takes it at `init` for the whole swarm, shoal per node.
    #[serde(default)]
    pub data_path_port: Option<u32>,
}

/// What the CLI asks its daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LocalRequest {
    SwarmInit(InitRequest),
    SwarmJoin(JoinRequest),
    SwarmLeave {
        force: bool,
    },
    /// Whether this daemon's node is in a swarm, and as what.
    SwarmStatus,
    Control {
        request: Box<ControlRequest>,
    },
}

/// The node's standing, as `docker info` prints it (` Swarm: inactive`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmStatus {
    /// `inactive`, `pending`, `active` or `error`.
    pub state: String,
    pub node_id: String,
    pub node_addr: String,
    pub error: String,
    /// The daemon's version (`shoal version`'s Server section); empty from an older daemon.
    #[serde(default)]
    pub version: String,
}

/// What the daemon answers when a request succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum LocalAnswer {
    Initialized { node_id: String, worker_token: String, manager_addr: String },
    Joined { node_id: String, manager: bool },
    Left,
    Status(SwarmStatus),
    Control(ControlResponse),
}

/// Why the daemon refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", content = "message", rename_all = "snake_case")]
pub enum LocalError {
    /// The control API refused it.
    #[error("{0}")]
    Control(ControlError),
    /// The request is not one this daemon serves.
    #[error("{0}")]
    BadRequest(String),
    /// The daemon's own refusal (not in a swarm, already in one, …).
    #[error("{0}")]
    Refused(String),
}

/// The daemon's answer to one request.
pub type LocalResult = Result<LocalAnswer, LocalError>;

/// Serves decoded requests; implemented by the daemon (and by fakes in tests).
#[async_trait]
pub trait LocalHandler: Send + Sync + 'static {
    async fn handle(&self, request: LocalRequest) -> LocalResult;
}
