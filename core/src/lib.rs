//! shoal-core: the control plane of shoal, written once against the seams in [`env`] so that it runs
//! unchanged in the deterministic simulator (`shoal-sim`) and in the real daemon (`shoal`).
//!
//! Modelled on swarmkit's split; each part talks to the others only through the [`store`]:
//! - [`api`] — the domain model (nodes, services, tasks, networks, cluster).
//! - [`store`] — the replicated state machine: typed tables, transactions, a change feed.
//! - [`raft`] — openraft behind the seams: log on the disk seam, RPCs on the transport seam.
//! - [`scheduler`], [`orchestrator`], [`dispatcher`], [`agent`] — swarmkit's controllers.
//! - [`control`] — the control API used by the CLI and by scenario steps.
//! - [`rpc`] — typed calls between nodes over the transport seam; [`trace`] — run traces.
//! - [`auth`] — which authenticated peer may use which channel (managers only for raft and control).
//! - [`secrets`] — the managers' key for secrets and configs, sealing values at rest.
//! - [`autolock`] — a manager's data at rest under a data key, locked behind the unlock key.
//! - [`logs`] — `service logs`: every node serves its containers' output; a manager gathers it.
//! - [`ca_rotation`] — `swarm ca --rotate`: the root CA rotation's state machine and reconciler.

pub mod agent;
pub mod api;
pub mod auth;
pub mod autolock;
pub mod ca_rotation;
pub mod control;
pub mod dispatcher;
pub mod env;
pub mod logs;
pub mod manager;
pub mod mesh;
pub mod node;
pub mod orchestrator;
pub mod raft;
pub mod rpc;
pub mod scheduler;
pub mod secrets;
pub mod stack;
pub mod store;
pub mod template;
pub mod tokens;
pub mod trace;
