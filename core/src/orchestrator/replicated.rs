//! The replicated and global reconcilers: the right number of runnable tasks per service.
//!
//! Replicated: slots 1..N. A slot is filled while it holds a runnable task (desired ≤ running, whatever
//! its observed state: a task that failed and will not be restarted keeps its slot, as in Swarm). An
//! empty slot — new service, scale up, its task retired because its node went down, was drained or
//! rejected — gets a new task from the current spec. Scale down retires the highest slots
//! (desired `remove`: the reaper deletes them once stopped).
//!
//! Global: one runnable task per eligible node — ready, `active`, satisfying the constraints and
//! platforms. The task is created bound to its node; the scheduler still checks it fits.

use crate::api::{Availability, NodeState, Service, ServiceMode, TaskState};
use crate::scheduler::{node_matches, parse_constraints, platform_matches};

use super::release;
use super::working::{desire, is_runnable, Working};

pub fn run(w: &mut Working<'_>) {
    for service_id in w.service_ids() {
        let Some(service) = w.service(&service_id).cloned() else { continue };
        match service.spec.mode {
            ServiceMode::Replicated { replicas } => replicated(w, &service, replicas),
            ServiceMode::Global => global(w, &service),
            ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob => {} // `jobs`
        }
    }
}

fn replicated(w: &mut Working<'_>, service: &Service, replicas: u64) {
    let slots = w.slots_of(&service.id);
    for (key, tasks) in &slots {
        if key.0 > replicas || key.0 == 0 {
            for task in tasks {
                let mut task = task.clone();
                if desire(&mut task, TaskState::Remove) {
                    w.put_task(task);
                }
            }
        }
    }
    for slot in 1..=replicas {
        let tasks = slots.get(&(slot, String::new())).map(Vec::as_slice).unwrap_or(&[]);
        if tasks.iter().any(is_runnable) {
            continue;
        }
        let task = w.new_task(service, slot, "");
        release::create(w, task, tasks);
    }
}

/// Nodes a global service should run on.
pub fn global_eligible(w: &Working<'_>, service: &Service) -> Vec<String> {
    let placement = &service.spec.task.placement;
    let Ok(constraints) = parse_constraints(&placement.constraints) else { return Vec::new() };
    w.base
        .nodes
        .values()
        .filter(|n| {
            n.status.state == NodeState::Ready
                && n.spec.availability == Availability::Active
                && node_matches(&constraints, n)
                && platform_matches(&placement.platforms, n)
        })
        .map(|n| n.id.clone())
        .collect()
}

fn global(w: &mut Working<'_>, service: &Service) {
    let slots = w.slots_of(&service.id);
    for node_id in global_eligible(w, service) {
        let tasks = slots.get(&(0, node_id.clone())).map(Vec::as_slice).unwrap_or(&[]);
        if tasks.iter().any(is_runnable) {
            continue;
        }
        let task = w.new_task(service, 0, &node_id);
        release::create(w, task, tasks);
    }
    // Replicated-slot tasks of a service turned global (mode changes are refused, but be safe).
    for ((slot, _), tasks) in &slots {
        if *slot > 0 {
            for task in tasks {
                let mut task = task.clone();
                if desire(&mut task, TaskState::Remove) {
                    w.put_task(task);
                }
            }
        }
    }
}
