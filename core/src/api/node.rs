//! Nodes: managers and workers.

use serde::{Deserialize, Serialize};

use super::{Labels, Meta};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Worker,
    Manager,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    #[default]
    Active,
    Pause,
    Drain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    #[default]
    Unknown,
    Down,
    Ready,
    Disconnected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    #[default]
    Unknown,
    Unreachable,
    Reachable,
}

/// What a node can offer tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

/// What a node reports about itself when it registers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescription {
    pub hostname: String,
    pub resources: Resources,
    pub os: String,
    pub arch: String,
    pub engine_version: String,
    pub engine_labels: Labels,
    /// Where the node's daemon accepts data-plane tunnels (`ip:port`), DESIGN §8; empty = none.
    #[serde(default)]
    pub data_addr: String,
    /// What the node's TLS holds, as it last reported it (swarmkit `NodeDescription.TLSInfo`);
    /// `None` until it reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_info: Option<NodeTlsInfo>,
}

/// A node's TLS state as the CA rotation tracks it, by digest (join-token form): the roots it
/// trusts and the CA that issued its certificate. In the simulator a node's "certificate" is just
/// the issuer digest it reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeTlsInfo {
    /// The digests of the root CAs the node trusts, sorted.
    pub trust_roots: Vec<String>,
    /// The digest of the CA that issued the node's certificate.
    pub cert_issuer: String,
}

/// What the user can change (`node update`, `node promote`/`demote`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub desired_role: NodeRole,
    pub availability: Availability,
    pub labels: Labels,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub state: NodeState,
    pub message: String,
    /// The address the node's agent connects from / is reachable at.
    pub addr: String,
}

/// Present on managers: its raft identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerStatus {
    pub raft_id: u64,
    /// The address peers reach this manager's raft and control API at.
    pub addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub meta: Meta,
    pub spec: NodeSpec,
    pub description: NodeDescription,
    pub status: NodeStatus,
    /// The role the node currently has (may lag `spec.desired_role` during promotion/demotion).
    pub role: NodeRole,
    pub manager_status: Option<ManagerStatus>,
}

impl Node {
    pub fn hostname(&self) -> &str {
        &self.description.hostname
    }

    /// This node as a worker: its role and desired role, with no manager status (a demotion that
    /// raft has completed, or a promotion undone).
    pub fn as_worker(&self) -> Node {
        let mut node = self.clone();
        node.spec.desired_role = NodeRole::Worker;
        node.role = NodeRole::Worker;
        node.manager_status = None;
        node
    }
}
