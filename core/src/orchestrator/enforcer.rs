//! The constraint enforcer (swarmkit `constraintenforcer` plus the node handling of the replicated
//! orchestrator): what happens to tasks when their node changes.
//!
//! - node deleted: the task can never report again — observed `orphaned` ("Task belonged to a node that
//!   has been deleted"), desired `shutdown`; the slot is refilled elsewhere.
//! - node down: tasks are desired `shutdown`; replicated ones are replaced elsewhere right away (the old
//!   task does not block its replacement: its node cannot be asked to stop it), global ones get a new
//!   task on the node when it is ready again (swarmkit's global orchestrator `removeTasksFromNode` on
//!   `NodeStatus_DOWN`), so a down node's task no longer counts in `service ls`.
//!   A task its agent stopped as the node left the swarm (`swarm leave` reports observed `shutdown` while
//!   the task is still desired `running`) is retired the same way, so its slot is refilled at once.
//! - node down for [`NODE_DOWN_PERIOD_MS`] (24 h, swarmkit's `defaultNodeDownPeriod`): its tasks that
//!   may still be running are observed `orphaned` — nobody knows whether they run, and nobody ever
//!   will. Down-since is the node object's last update (the node is not written while it is down,
//!   unless a user edits it, which only postpones this).
//! - node drained: desired `shutdown`; the replacement waits (up to a minute) for it to stop.
//! - node paused: nothing (no new tasks go there; the scheduler sees to that).
//! - node no longer satisfies the task's constraints or platform, or its resources shrank below the
//!   reservations: the newest tasks that do not fit are rejected ("task rejected by constraint enforcer").

use std::collections::BTreeMap;

use crate::api::{Availability, NodeState, Task, TaskState};
use crate::scheduler::{node_matches, parse_constraints, platform_matches};

use super::working::{advance, desire, is_runnable, Working};

pub const DELETED_NODE_MESSAGE: &str = "Task belonged to a node that has been deleted";
pub const REJECTED_MESSAGE: &str = "task rejected by constraint enforcer";
pub const REJECTED_ERR: &str = "assigned node no longer meets constraints";
pub const ORPHANED_MESSAGE: &str = "Task belonged to a node that has been down for too long";
/// swarmkit's `defaultNodeDownPeriod`.
pub const NODE_DOWN_PERIOD_MS: u64 = 24 * 60 * 60 * 1000;

/// Whether the enforcer looks at `task`: it may still run on its node, or its agent stopped it
/// without being asked (the node left).
fn watched(task: &Task) -> bool {
    task.status.state < TaskState::Complete
        || (task.status.state == TaskState::Shutdown && task.desired_state <= TaskState::Running)
}

pub fn run(w: &mut Working<'_>) {
    let now = w.now_ms;
    let mut on_nodes: BTreeMap<String, Vec<Task>> = BTreeMap::new();
    for task in w.all_tasks() {
        if !task.node_id.is_empty() && watched(task) {
            on_nodes.entry(task.node_id.clone()).or_default().push(task.clone());
        }
    }
    for (node_id, mut tasks) in on_nodes {
        let Some(node) = w.node(&node_id) else {
            for mut task in tasks {
                let still_running = task.status.state < TaskState::Complete;
                let changed = desire(&mut task, TaskState::Shutdown)
                    | (still_running && advance(&mut task, TaskState::Orphaned, DELETED_NODE_MESSAGE, now));
                if changed {
                    w.put_task(task);
                }
            }
            continue;
        };
        let drained = node.spec.availability == Availability::Drain;
        let down = node.status.state == NodeState::Down;
        let orphan_at = node.meta.updated_at_ms.saturating_add(NODE_DOWN_PERIOD_MS);
        if down && tasks.iter().any(|t| t.status.state <= TaskState::Running) {
            if orphan_at <= now {
                for task in tasks.iter_mut() {
                    let mut t = task.clone();
                    if t.status.state <= TaskState::Running
                        && advance(&mut t, TaskState::Orphaned, ORPHANED_MESSAGE, now)
                    {
                        *task = t.clone();
                        w.put_task(t);
                    }
                }
            } else {
                w.wake_at(orphan_at);
            }
        }
        // Oldest first: when resources shrank, the newest tasks are the ones that no longer fit.
        tasks.sort_by(|a, b| a.meta.created_at_ms.cmp(&b.meta.created_at_ms).then_with(|| a.id.cmp(&b.id)));
        let mut cpu = node.description.resources.nano_cpus as i128;
        let mut mem = node.description.resources.memory_bytes as i128;
        for mut task in tasks {
            if !is_runnable(&task) {
                continue;
            }
            if task.status.state >= TaskState::Complete {
                // Stopped by its agent as the node left; the restart supervisor sees to it otherwise.
                if down && desire(&mut task, TaskState::Shutdown) {
                    w.put_task(task);
                }
                continue;
            }
            if drained || down {
                if desire(&mut task, TaskState::Shutdown) {
                    w.put_task(task);
                }
                continue;
            }
            // Only placed tasks are judged against their node; a preassigned pending global task is
            // the scheduler's to explain.
            if task.status.state < TaskState::Assigned {
                continue;
            }
            let placement = &task.spec.placement;
            let constraints_ok = parse_constraints(&placement.constraints).is_ok_and(|c| node_matches(&c, node))
                && platform_matches(&placement.platforms, node);
            let r = task.spec.resources.reservations;
            let fits = (r.nano_cpus == 0 || r.nano_cpus as i128 <= cpu)
                && (r.memory_bytes == 0 || r.memory_bytes as i128 <= mem);
            if constraints_ok && fits {
                cpu -= r.nano_cpus as i128;
                mem -= r.memory_bytes as i128;
                continue;
            }
            desire(&mut task, TaskState::Shutdown);
            if advance(&mut task, TaskState::Rejected, REJECTED_MESSAGE, now) {
                task.status.err = REJECTED_ERR.to_string();
            }
            w.put_task(task);
        }
    }
}
