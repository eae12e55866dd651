//! The dispatcher's wire messages (agent ↔ leader).

use serde::{Deserialize, Serialize};

use crate::api::{Availability, NodeDescription, NodeRole, NodeTlsInfo, Task, TaskStatus};
use crate::mesh::MeshTable;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    pub addr: String,
    pub description: NodeDescription,
    pub availability: Availability,
    /// Set by a joining manager, which serves raft before it joins.
    pub raft_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_id: String,
    pub role: NodeRole,
    pub cluster_id: String,
    pub managers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRequest {
    pub node_id: String,
    pub addr: String,
    pub description: NodeDescription,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResponse {
    pub session_id: String,
    pub heartbeat_period_ms: u64,
    pub managers: Vec<String>,
    /// The managers' node ids: who may ask this node for its containers' logs.
    #[serde(default)]
    pub manager_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub node_id: String,
    pub session_id: String,
    /// What the node's TLS holds now (the CA rotation waits on it, `crate::ca_rotation`); `None`
    /// from a node that has not said yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_info: Option<NodeTlsInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub heartbeat_period_ms: u64,
    pub managers: Vec<String>,
    #[serde(default)]
    pub manager_ids: Vec<String>,
    /// What the node should be (promotion/demotion are carried out by the node).
    pub desired_role: NodeRole,
    pub raft_id: Option<u64>,
    /// The version of the node object the role comes from: role changes reach the node through
    /// whichever manager leads, so the node applies a hint only if it is newer than the last one.
    #[serde(default)]
    pub node_version: u64,
    /// What the node's TLS should hold (`crate::ca_rotation::desired_tls`): a node that holds
    /// something else renews its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_tls: Option<NodeTlsInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentsRequest {
    pub node_id: String,
    pub session_id: String,
    /// The digest of the set the agent has; the call waits until the set differs.
    pub known_digest: u64,
    pub wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentsResponse {
    pub digest: u64,
    /// Every task the node should know about (full set, not a diff: reconciling is idempotent).
    pub tasks: Vec<Task>,
    /// The values of the secrets and configs the node's tasks that may still run use, and no
    /// others (swarmkit's assignment set carries them the same way). `Debug` redacts them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<crate::api::FilePayload>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshRequest {
    pub node_id: String,
    pub session_id: String,
    /// The digest of the table the node has applied (0 = none); the call waits until it differs.
    pub known_digest: u64,
    pub wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshResponse {
    pub digest: u64,
    /// `None` when the node already has this digest (the poll ended at its deadline).
    pub table: Option<MeshTable>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainRequest {
    pub node_id: String,
    pub session_id: String,
    pub task_id: String,
    pub wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainResponse {
    /// Every live node applied a table without the task.
    pub drained: bool,
    /// Nodes that had not, when the wait ended.
    pub waiting_for: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub task_id: String,
    pub status: TaskStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRequest {
    pub node_id: String,
    pub session_id: String,
    pub updates: Vec<StatusUpdate>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DispatcherRequest {
    Join(JoinRequest),
    Session(SessionRequest),
    Heartbeat(HeartbeatRequest),
    Assignments(AssignmentsRequest),
    UpdateStatus(StatusRequest),
    /// The endpoint table (a long poll, like assignments); says which table the node applied.
    Mesh(MeshRequest),
    /// Before a task stops: wait until no live node routes to it (DESIGN §8, drain).
    Drain(DrainRequest),
    /// `swarm leave`: the node goes down; `statuses` are its tasks' final states (it stopped them
    /// before leaving), applied in the same proposal.
    Leave {
        node_id: String,
        #[serde(default)]
        statuses: Vec<StatusUpdate>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DispatcherResponse {
    Joined(JoinResponse),
    Session(SessionResponse),
    Heartbeat(HeartbeatResponse),
    Assignments(AssignmentsResponse),
    Mesh(MeshResponse),
    Drained(DrainResponse),
    Ack,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DispatcherError {
    #[error("this manager is not the leader; the leader is at {leader_addr}")]
    NotLeader { leader_addr: String },
    #[error("{}", crate::store::LOST_QUORUM_MESSAGE)]
    NoLeader,
    #[error("this node is not part of the swarm (it was removed); join again with a token")]
    UnknownNode,
    #[error("the session expired; the agent must open a new one")]
    InvalidSession,
    #[error("{0}")]
    InvalidToken(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Internal(String),
}
