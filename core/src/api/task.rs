//! Tasks: one slot of a service on one node, with Swarm's state machine
//! (swarmkit `design/task_model.md`): states only move forward.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::{Labels, Meta, PortConfig, TaskSpec};

/// Swarm's task states, in lifecycle order: a task's observed state never moves backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    #[default]
    New,
    Pending,
    Assigned,
    Accepted,
    Preparing,
    Ready,
    Starting,
    Running,
    Complete,
    Shutdown,
    Failed,
    Rejected,
    Remove,
    Orphaned,
}

impl TaskState {
    /// The lower-case word Docker uses (`running`, `shutdown`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::New => "new",
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Accepted => "accepted",
            TaskState::Preparing => "preparing",
            TaskState::Ready => "ready",
            TaskState::Starting => "starting",
            TaskState::Running => "running",
            TaskState::Complete => "complete",
            TaskState::Shutdown => "shutdown",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::Remove => "remove",
            TaskState::Orphaned => "orphaned",
        }
    }

    /// The task has stopped for good (complete or worse).
    pub fn is_terminal(self) -> bool {
        self >= TaskState::Complete
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    /// What is happening (`started`, `scheduler assigned task to node`, …).
    pub message: String,
    /// Why it failed or could not be placed (`no suitable node (…)`).
    pub err: String,
    pub timestamp_ms: u64,
    pub container_id: String,
    pub exit_code: Option<i64>,
    /// When the container started (the agent's clock at its `running` report), carried by every
    /// later report of the task; 0 = it never ran (or the agent did not say). The update monitor and
    /// the restart supervisor measure a task's run from it.
    #[serde(default)]
    pub started_at_ms: u64,
    /// Where the task can be reached and whether it accepts connections yet (the data plane's
    /// readiness, DESIGN §8): reported by the agent once the container runs.
    #[serde(default)]
    pub endpoint: Option<TaskEndpoint>,
}

/// A running task as the data plane sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEndpoint {
    /// The task's address on each of its networks (network id → IP). A task on no network (host
    /// networking, or the process executor) has its node's IP under the empty key.
    pub addresses: BTreeMap<String, String>,
    /// Every port to probe accepted a connection: the task is in the rotation.
    pub ready: bool,
    /// The ports the task serves (`(protocol, port)`): its service's published target ports and
    /// the ports its image exposes. A service's VIP forwards these.
    #[serde(default)]
    pub ports: Vec<(String, u16)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub meta: Meta,
    pub service_id: String,
    pub service_name: String,
    /// 1..N for replicated services; 0 for global ones (identified by node).
    pub slot: u64,
    pub node_id: String,
    /// The service's `spec_version` this task was made from.
    pub spec_version: u64,
    pub spec: TaskSpec,
    pub desired_state: TaskState,
    pub status: TaskStatus,
    /// The orchestrator holds the task in `new` (unscheduled) until this time: a delayed restart.
    /// 0 = no delay.
    #[serde(default)]
    pub not_before_ms: u64,
    /// Consecutive restarts of this slot that followed a short-lived task; the exponent of the
    /// restart back-off. Reset to 0 when the task before ran healthily (see `orchestrator::restart`).
    #[serde(default)]
    pub restart_streak: u64,
    /// When this slot was restarted by the restart supervisor (oldest first), carried from task to
    /// task of the slot and trimmed to what `max_attempts` within `window` needs.
    #[serde(default)]
    pub restart_history_ms: Vec<u64>,
    /// The networks the task is attached to (ids): the service's, plus `ingress` when the service
    /// publishes ingress ports. Resolved when the task is made.
    #[serde(default)]
    pub networks: Vec<String>,
    /// The service's published ports when the task was made (allocated: no 0 ports); `mode=host`
    /// ones are bound on the task's node, and the target ports are what readiness probes.
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    /// The service's labels when the task was made, for `{{.Service.Labels}}` templates
    /// (Swarm's `Task.ServiceAnnotations`).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub service_labels: Labels,
}

impl Task {
    /// `web.1` for replicated tasks, `web.<node id>` for global ones, as `docker service ps` names them.
    pub fn name(&self) -> String {
        if self.slot > 0 {
            format!("{}.{}", self.service_name, self.slot)
        } else {
            format!("{}.{}", self.service_name, self.node_id)
        }
    }

    /// This task without its spec's registry credentials, for any answer that leaves the cluster.
    pub fn redacted(&self) -> Task {
        Task { spec: self.spec.redacted(), ..self.clone() }
    }
}
