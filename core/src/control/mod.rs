//! The control API: one entry point for the CLI (through the daemon) and for scenario steps.
//! [`api`] holds the messages; the handler that serves them on a manager is in [`handler`]; published
//! ports are allocated across services in [`ports`].

pub mod api;
pub mod handler;
pub mod ports;

pub use api::{
    CaView, ClusterInfo, ConfigView, ControlError, ControlRequest, ControlResponse, ControlResult, FileData, NodeView,
    ServiceView,
};
pub use handler::{service_view, validate_spec, ControlHandler};
