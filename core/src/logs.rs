//! `service logs` across the swarm. Every node serves its own containers' output on
//! [`Channel::Logs`] ([`LogsService`]); the manager that answers the CLI finds which nodes ran the
//! service's tasks and asks each of them at once ([`gather`]).
//!
//! Swarm streams logs from the workers to the leader's log broker over the agent's session; shoal's
//! calls are request/reply, so the manager asks the nodes instead. Only managers may ask
//! (see [`crate::auth`]): a container's output is cluster data, and a worker cannot read the cluster.
//! A node that cannot be reached does not fail the whole call: its tasks are listed as unreachable,
//! with the reason, and every other node's lines are still returned — as `docker service logs`
//! prints what it has and reports the rest as errors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::api::NodeState;
use crate::env::executor::{LABEL_SERVICE_ID, LABEL_TASK_ID};
use crate::env::transport::Peer;
use crate::env::{runtime, Executor, LogLine, LogsQuery, Transport};
use crate::rpc::{self, Channel};
use crate::store::Store;

/// How long the manager waits for one node's logs.
pub const NODE_LOGS_TIMEOUT: Duration = Duration::from_secs(10);

/// Which lines `service logs` wants: for a task with a cursor (`--follow` has shown its lines up
/// to that stamp), the lines after it; for any other task, the lines after `since_ns` (when set),
/// the last `tail` of them (all when `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsSelection {
    pub tail: Option<usize>,
    pub since_ns: Option<u64>,
    /// task id → the stamp of the last line already shown.
    #[serde(default)]
    pub cursors: BTreeMap<String, u64>,
}

impl LogsSelection {
    /// The executor query for one task's container.
    pub fn query(&self, task_id: &str) -> LogsQuery {
        match self.cursors.get(task_id) {
            Some(&cursor) => LogsQuery { after_ns: Some(cursor), tail: None },
            None => LogsQuery { after_ns: self.since_ns.map(|since| since.saturating_sub(1)), tail: self.tail },
        }
    }
}

/// What a manager asks a node: the output of its containers of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub service_id: String,
    /// Only these tasks' containers; every container of the service when empty.
    pub task_ids: Vec<String>,
    pub selection: LogsSelection,
}

/// One container's output on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerLogs {
    pub task_id: String,
    pub lines: Vec<LogLine>,
    /// The stamp of the newest line the query reached (shown, or cut by `tail`): the cursor for the
    /// next `--follow` call. `None` when no line matched.
    pub last_ns: Option<u64>,
}

/// A node's answer: its containers' logs, or why it could not read them.
pub type LogsReply = Result<Vec<ContainerLogs>, String>;

/// The server side of [`Channel::Logs`], on every node.
pub struct LogsService {
    executor: Arc<dyn Executor>,
}

impl LogsService {
    pub fn new(executor: Arc<dyn Executor>) -> Self {
        LogsService { executor }
    }

    /// The logs of this node's containers that `request` names.
    pub async fn read(&self, request: &LogsRequest) -> LogsReply {
        let labels = [(LABEL_SERVICE_ID.to_string(), request.service_id.clone())];
        let containers = self.executor.list(&labels).await.map_err(|err| err.to_string())?;
        let mut found = Vec::new();
        for container in containers {
            let Some(task_id) = container.labels.get(LABEL_TASK_ID) else { continue };
            if !request.task_ids.is_empty() && !request.task_ids.contains(task_id) {
                continue;
            }
            // A container removed since it was listed has no logs left to show.
            let query = request.selection.query(task_id);
            let Ok(lines) = self.executor.logs(&container.id, &query).await else { continue };
            // `--tail 0 --follow` shows nothing yet, but its cursor must start at the newest line.
            let last_ns = match (lines.last(), query.tail) {
                (Some(line), _) => Some(line.time_ns),
                (None, Some(0)) => {
                    let newest = LogsQuery { tail: Some(1), ..query };
                    self.executor.logs(&container.id, &newest).await.ok().and_then(|l| l.last().map(|l| l.time_ns))
                }
                (None, _) => None,
            };
            found.push(ContainerLogs { task_id: task_id.clone(), lines, last_ns });
        }
        Ok(found)
    }
}

#[async_trait]
impl rpc::Service for LogsService {
    type Request = LogsRequest;
    type Response = LogsReply;

    async fn call(&self, _peer: Peer, request: LogsRequest) -> LogsReply {
        self.read(&request).await
    }
}

/// One task's output, as `service logs` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLogs {
    pub task_id: String,
    /// `web.1` (replicated) or `web.<node id>` (global).
    pub task_name: String,
    pub node_id: String,
    pub hostname: String,
    pub lines: Vec<LogLine>,
    /// See [`ContainerLogs::last_ns`].
    pub last_ns: Option<u64>,
}

/// A node whose tasks' logs could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreachableNode {
    pub node_id: String,
    pub hostname: String,
    /// How many of the service's tasks ran there.
    pub tasks: usize,
    pub reason: String,
}

/// The answer to `service logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLogs {
    pub service_id: String,
    pub service_name: String,
    /// By task name, then task id.
    pub tasks: Vec<TaskLogs>,
    pub unreachable: Vec<UnreachableNode>,
}

/// A node that ran some of the service's tasks: where to ask, and which tasks.
struct NodeTasks {
    addr: String,
    hostname: String,
    down: bool,
    /// task id → task name.
    tasks: BTreeMap<String, String>,
}

/// Ask every node that ran a task of `service_id` (or only `only_task`) for those tasks' logs, all
/// nodes at once, each within [`NODE_LOGS_TIMEOUT`]. `store` is the answering manager's.
pub async fn gather(
    store: &Store,
    transport: Arc<dyn Transport>,
    service_id: &str,
    only_task: Option<&str>,
    selection: &LogsSelection,
) -> ServiceLogs {
    let (service_name, by_node) = store.view(|state| {
        let service_name = state.services.get(service_id).map(|s| s.spec.name.clone()).unwrap_or_default();
        let mut by_node: BTreeMap<String, NodeTasks> = BTreeMap::new();
        // A task with no container id never got a container, so it has nothing to show.
        let tasks = state.tasks.values().filter(|t| {
            t.service_id == service_id && !t.status.container_id.is_empty() && only_task.is_none_or(|only| t.id == only)
        });
        for task in tasks {
            let node = state.nodes.get(&task.node_id);
            by_node
                .entry(task.node_id.clone())
                .or_insert_with(|| NodeTasks {
                    addr: node.map(|n| n.status.addr.clone()).unwrap_or_default(),
                    hostname: node.map(|n| n.description.hostname.clone()).unwrap_or_default(),
                    down: node.is_none_or(|n| n.status.state == NodeState::Down),
                    tasks: BTreeMap::new(),
                })
                .tasks
                .insert(task.id.clone(), task.name());
        }
        (service_name, by_node)
    });

    let calls: Vec<_> = by_node
        .iter()
        .filter(|(_, node)| !node.addr.is_empty())
        .map(|(node_id, node)| {
            let request = LogsRequest {
                service_id: service_id.to_string(),
                task_ids: node.tasks.keys().cloned().collect(),
                selection: selection.clone(),
            };
            let (transport, addr) = (transport.clone(), node.addr.clone());
            let call = runtime::spawn(async move {
                rpc::call::<_, LogsReply>(transport.as_ref(), &addr, Channel::Logs, &request, NODE_LOGS_TIMEOUT).await
            });
            (node_id.clone(), call)
        })
        .collect();
    let mut replies: BTreeMap<String, Result<Vec<ContainerLogs>, String>> = BTreeMap::new();
    for (node_id, call) in calls {
        let reply = match call.await {
            Ok(Ok(reply)) => reply,
            Ok(Err(err)) => Err(err.to_string()),
            Err(err) => Err(format!("the call was abandoned: {err}")),
        };
        replies.insert(node_id, reply);
    }

    let mut answer = ServiceLogs { service_id: service_id.to_string(), service_name, ..ServiceLogs::default() };
    for (node_id, node) in by_node {
        let reply = replies.remove(&node_id).unwrap_or_else(|| Err("the node is no longer in the swarm".into()));
        match reply {
            Ok(containers) => {
                for container in containers {
                    let Some(task_name) = node.tasks.get(&container.task_id) else { continue };
                    answer.tasks.push(TaskLogs {
                        task_id: container.task_id,
                        task_name: task_name.clone(),
                        node_id: node_id.clone(),
                        hostname: node.hostname.clone(),
                        lines: container.lines,
                        last_ns: container.last_ns,
                    });
                }
            }
            Err(reason) => {
                let reason = if node.down { format!("the node is down ({reason})") } else { reason };
                answer.unreachable.push(UnreachableNode {
                    node_id,
                    hostname: node.hostname,
                    tasks: node.tasks.len(),
                    reason,
                });
            }
        }
    }
    answer.tasks.sort_by(|a, b| (&a.task_name, &a.task_id).cmp(&(&b.task_name, &b.task_id)));
    answer
}
