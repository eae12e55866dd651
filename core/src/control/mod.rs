//! The control API: one entry point for the CLI (through the daemon) and for scenario steps.
//! [`api`] holds the messages; the handler that serves them on a manager is in `handler`.

pub mod api;

pub use api::{ClusterInfo, ControlError, ControlRequest, ControlResponse, ControlResult, NodeView, ServiceView};
