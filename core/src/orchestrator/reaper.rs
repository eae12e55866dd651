//! The task reaper (swarmkit `taskreaper`): keeps the history `docker service ps` shows, and no more.
//!
//! - Per slot (replicated) or node (global), at most `task_history_retention_limit` tasks (cluster
//!   setting, default 5) are kept, the current one included, as swarmkit counts; the oldest stopped
//!   tasks (by status timestamp) that are no longer wanted go first.
//! - Tasks desired `remove` (scale-down, removed services) are deleted once stopped; tasks of a service
//!   that no longer exists are desired `remove` first.
//! - A task retired before any node took it (observed `new`/`pending`) has no agent to report it
//!   stopped, so the manager moves it to `shutdown` itself.

use crate::api::{Task, TaskState};

use super::working::{advance, desire, is_runnable, Working};

pub const DEFAULT_HISTORY_LIMIT: u64 = 5;

/// Nobody will ever run this task.
fn never_placed(task: &Task) -> bool {
    task.status.state <= TaskState::Pending
}

fn stopped(task: &Task) -> bool {
    task.status.state > TaskState::Running
}

pub fn run(w: &mut Working<'_>) {
    let now = w.now_ms;
    let limit = w.base.cluster.as_ref().map_or(DEFAULT_HISTORY_LIMIT, |c| c.spec.task_history_retention_limit) as usize;

    for service_id in w.orphan_service_ids() {
        for mut task in w.tasks_of(&service_id) {
            if never_placed(&task) || stopped(&task) {
                w.delete_task(&task.id);
            } else if desire(&mut task, TaskState::Remove) {
                w.put_task(task);
            }
        }
    }

    for service_id in w.service_ids() {
        for (_, mut tasks) in w.slots_of(&service_id) {
            // Retired before placement: stop it on the manager's side.
            for task in tasks.iter_mut() {
                if !is_runnable(task) && never_placed(task) {
                    let mut t = task.clone();
                    if advance(&mut t, TaskState::Shutdown, "shutdown before it was scheduled", now) {
                        *task = t.clone();
                        w.put_task(t);
                    }
                }
            }
            let mut kept = Vec::with_capacity(tasks.len());
            for task in tasks {
                if task.desired_state >= TaskState::Remove && stopped(&task) {
                    w.delete_task(&task.id);
                } else {
                    kept.push(task);
                }
            }
            if kept.len() <= limit {
                continue;
            }
            let mut old: Vec<&Task> = kept.iter().filter(|t| !is_runnable(t) && stopped(t)).collect();
            old.sort_by(|a, b| {
                (a.status.timestamp_ms, a.meta.created_at_ms, &a.id).cmp(&(
                    b.status.timestamp_ms,
                    b.meta.created_at_ms,
                    &b.id,
                ))
            });
            let excess = kept.len() - limit;
            for task in old.into_iter().take(excess) {
                w.delete_task(&task.id);
            }
        }
    }
}
