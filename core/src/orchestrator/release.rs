//! Releasing new tasks to the scheduler (`new` → `pending`).
//!
//! A new task is held in `new` while
//! - its restart delay ([`Task::not_before_ms`]) has not passed, or
//! - an older task of its slot is still being stopped on a live node (stop-first updates, drains,
//!   restarts): two containers of one slot should not run at once. As swarmkit's restart supervisor,
//!   the wait ends after [`OLD_TASK_TIMEOUT_MS`] even if the old task never reports stopping.
//!
//! Allocation (networks, ports) is trivial for now, so release is the only step between the two states.

use std::collections::BTreeMap;

use crate::api::{Task, TaskState};

use super::working::{advance, slot_key, SlotKey, Working};

/// swarmkit's `defaultOldTaskTimeout`.
pub const OLD_TASK_TIMEOUT_MS: u64 = 60_000;
pub const PENDING_MESSAGE: &str = "pending task scheduling";

/// `Ok` when the task may go to the scheduler now, else the time to look again (if any is known).
/// `slot` is the other tasks of the task's slot.
fn releasable(w: &Working<'_>, task: &Task, slot: &[Task]) -> Result<(), Option<u64>> {
    if task.not_before_ms > w.now_ms {
        return Err(Some(task.not_before_ms));
    }
    let key = slot_key(task);
    let blocking = slot.iter().any(|other| {
        other.id != task.id
            && slot_key(other) == key
            && other.desired_state > TaskState::Complete
            && other.status.state >= TaskState::Assigned
            && other.status.state < TaskState::Complete
            && w.node_ready(&other.node_id)
    });
    if blocking {
        let deadline = w.created_at(task) + OLD_TASK_TIMEOUT_MS;
        if deadline > w.now_ms {
            return Err(Some(deadline));
        }
    }
    Ok(())
}

/// Add a new task to the pass, released at once if nothing in its `slot` (the slot's other tasks)
/// holds it.
pub fn create(w: &mut Working<'_>, mut task: Task, slot: &[Task]) {
    let now = w.now_ms;
    match releasable(w, &task, slot) {
        Ok(()) => {
            advance(&mut task, TaskState::Pending, PENDING_MESSAGE, now);
        }
        Err(wake) => {
            if let Some(at) = wake {
                w.wake_at(at);
            }
        }
    }
    w.create_task(task);
}

/// Release the held tasks whose wait is over.
pub fn run(w: &mut Working<'_>) {
    let mut held: BTreeMap<String, Vec<Task>> = BTreeMap::new();
    for t in w.all_tasks().filter(|t| t.status.state == TaskState::New && t.desired_state <= TaskState::Complete) {
        held.entry(t.service_id.clone()).or_default().push(t.clone());
    }
    for (service_id, tasks) in held {
        let slots = w.slots_of(&service_id);
        for task in tasks {
            release_one(w, task, &slots);
        }
    }
}

fn release_one(w: &mut Working<'_>, mut task: Task, slots: &BTreeMap<SlotKey, Vec<Task>>) {
    let now = w.now_ms;
    let slot = slots.get(&slot_key(&task)).map(Vec::as_slice).unwrap_or(&[]);
    match releasable(w, &task, slot) {
        Ok(()) => {
            advance(&mut task, TaskState::Pending, PENDING_MESSAGE, now);
            w.put_task(task);
        }
        Err(Some(at)) => w.wake_at(at),
        Err(None) => {}
    }
}
