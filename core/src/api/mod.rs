//! The domain model, as the store keeps it and the control API shows it.
//!
//! Shapes and defaults follow Docker Swarm (swarmkit `api/types.proto`, `api/defaults`): a user's
//! expectations about task states, restart and update policies carry over unchanged.

mod ids;
pub mod mounts;
mod node;
mod secret;
mod service;
mod task;

pub use ids::{new_id, short_id};
pub use node::*;
pub use secret::*;
pub use service::*;
pub use task::*;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bookkeeping every stored object carries. `version` is the store version of the last write to the
/// object and is what optimistic-concurrency updates are checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub version: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// Labels: ordered so that every rendering and every hash of them is deterministic.
pub type Labels = BTreeMap<String, String>;

/// A network (overlay by default, as `docker network create -d overlay`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub meta: Meta,
    pub name: String,
    pub driver: String,
    pub subnet: String,
    pub attachable: bool,
    pub ingress: bool,
    pub labels: Labels,
    /// Each node's part of `subnet` (node id → CIDR), leased by the leader the first time a task on
    /// this network is placed on the node; the node's bridge for the network uses it (DESIGN §8).
    #[serde(default)]
    pub leases: BTreeMap<String, String>,
}

/// Cluster-wide settings, created at `swarm init` with Swarm's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub name: String,
    pub task_history_retention_limit: u64,
    pub heartbeat_period_ms: u64,
    /// Missed heartbeat periods before a node is marked down (Swarm: 3).
    pub heartbeat_grace_multiplier: u64,
    pub snapshot_interval: u64,
    pub election_tick: u64,
    pub heartbeat_tick: u64,
    pub node_cert_expiry_ms: u64,
    /// Autolock (Swarm's `EncryptionConfig.AutoLockManagers`): managers keep their data key sealed
    /// with the unlock key and come up locked after a restart (`crate::autolock`).
    #[serde(default)]
    pub autolock_managers: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            name: "default".into(),
            task_history_retention_limit: 5,
            heartbeat_period_ms: 5_000,
            heartbeat_grace_multiplier: 3,
            snapshot_interval: 10_000,
            election_tick: 10,
            heartbeat_tick: 1,
            node_cert_expiry_ms: 2160 * 3600 * 1000,
            autolock_managers: false,
        }
    }
}

/// The one cluster object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: String,
    pub meta: Meta,
    pub spec: ClusterSpec,
    pub worker_join_token: String,
    pub manager_join_token: String,
    /// The cluster CA certificate (PEM) in real clusters; empty in the simulator.
    pub root_ca_pem: String,
    /// Digest of the root CA, part of every join token.
    pub root_ca_digest: String,
    /// The cluster CA's private key (PEM) in real clusters, so that whichever manager a node joins
    /// through can sign its certificate (swarmkit keeps `RootCA.CAKey` in its cluster object too);
    /// empty in the simulator. Never sent to workers or shown by the control API.
    #[serde(default)]
    pub root_ca_key_pem: String,
    /// The unlock key while autolock is on, sealed with the secrets key (object id: the cluster's
    /// id) so the raft log never holds it in plain; every manager re-wraps its data key with it.
    #[serde(default)]
    pub unlock_key: Option<Sealed>,
    /// A root CA rotation in progress (`swarm ca --rotate`), DESIGN §6b; `None` when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_rotation: Option<RootRotation>,
}

/// A root CA rotation under way (swarmkit's `RootCA.RootRotation`): the new root, the same root
/// cross-signed by the current one, and the new key. Managers sign every certificate with the new
/// key while it lasts, sending the cross-signed certificate along, so nodes that trust only the old
/// root still accept the new certificates. It ends (the leader's reconciler,
/// [`crate::ca_rotation`]) when every node reports a certificate issued by the new root.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootRotation {
    /// The new root CA certificate (PEM); empty in the simulator.
    pub ca_cert_pem: String,
    /// The new root's digest in join-token form: what nodes' certificates must be issued by.
    pub ca_digest: String,
    /// The new root's certificate signed by the current root's key (PEM); empty in the simulator.
    pub cross_signed_pem: String,
    /// The new root's private key (PEM); empty in the simulator. Managers only; `Debug` redacts it
    /// and no control answer carries it.
    pub ca_key_pem: String,
    /// The join tokens that take over when the rotation ends (they carry the new digest; made when
    /// it starts, so the reconciler that ends it draws no randomness).
    pub worker_join_token: String,
    pub manager_join_token: String,
}

impl std::fmt::Debug for RootRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootRotation").field("ca_digest", &self.ca_digest).finish_non_exhaustive()
    }
}
