//! The constraint enforcer (swarmkit `constraintenforcer` plus the node handling of the replicated
//! orchestrator): what happens to tasks when their node changes.
//!
//! - node deleted: the task can never report again — observed `orphaned` ("Task belonged to a node that
//!   has been deleted"), desired `shutdown`; the slot is refilled elsewhere.
//! - node down: replicated tasks are desired `shutdown` and replaced elsewhere right away (the old task
//!   does not block its replacement: its node cannot be asked to stop it). Global tasks stay: there is
//!   nowhere else for them to go.
//! - node drained: desired `shutdown`; the replacement waits (up to a minute) for it to stop.
//! - node paused: nothing (no new tasks go there; the scheduler sees to that).
//! - node no longer satisfies the task's constraints or platform, or its resources shrank below the
//!   reservations: the newest tasks that do not fit are rejected ("task rejected by constraint enforcer").

use std::collections::BTreeMap;

use crate::api::{Availability, NodeState, ServiceMode, Task, TaskState};
use crate::scheduler::{node_matches, parse_constraints, platform_matches};

use super::working::{advance, desire, is_runnable, Working};

pub const DELETED_NODE_MESSAGE: &str = "Task belonged to a node that has been deleted";
pub const REJECTED_MESSAGE: &str = "task rejected by constraint enforcer";
pub const REJECTED_ERR: &str = "assigned node no longer meets constraints";

pub fn run(w: &mut Working<'_>) {
    let now = w.now_ms;
    let mut on_nodes: BTreeMap<String, Vec<Task>> = BTreeMap::new();
    for task in w.all_tasks() {
        if !task.node_id.is_empty() && task.status.state < TaskState::Complete {
            on_nodes.entry(task.node_id.clone()).or_default().push(task.clone());
        }
    }
    for (node_id, mut tasks) in on_nodes {
        let Some(node) = w.node(&node_id) else {
            for mut task in tasks {
                let changed = desire(&mut task, TaskState::Shutdown)
                    | advance(&mut task, TaskState::Orphaned, DELETED_NODE_MESSAGE, now);
                if changed {
                    w.put_task(task);
                }
            }
            continue;
        };
        let drained = node.spec.availability == Availability::Drain;
        let down = node.status.state == NodeState::Down;
        // Oldest first: when resources shrank, the newest tasks are the ones that no longer fit.
        tasks.sort_by(|a, b| a.meta.created_at_ms.cmp(&b.meta.created_at_ms).then_with(|| a.id.cmp(&b.id)));
        let mut cpu = node.description.resources.nano_cpus as i128;
        let mut mem = node.description.resources.memory_bytes as i128;
        for mut task in tasks {
            if !is_runnable(&task) {
                continue;
            }
            let global = w.service(&task.service_id).is_some_and(|s| matches!(s.spec.mode, ServiceMode::Global));
            if drained || (down && !global) {
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
