//! Rebalancing (shoal's addition, off by default; per service `spec.rebalance`). Swarm never moves a
//! running task when a node joins or comes back, so a cluster stays lopsided after a node failure.
//! With `rebalance`, a replicated service whose tasks all run and that is not being updated has tasks
//! moved from its busiest eligible node to its idlest while they differ by two or more, at most
//! `update_config.parallelism` moves in flight. A move is a stop-first replacement: the old task is
//! retired and the scheduler places the new one (on the idlest node, by its spread rule).
//!
//! Services with placement preferences are left alone: their spread is deliberate.

use std::collections::BTreeMap;

use crate::api::{Service, ServiceMode, TaskState};
use crate::scheduler::{node_infos, Pipeline, TaskRequirements};

use super::release;
use super::working::{desire, is_runnable, Working};

pub fn run(w: &mut Working<'_>) {
    for service_id in w.service_ids() {
        let Some(service) = w.service(&service_id).cloned() else { continue };
        if service.spec.rebalance && matches!(service.spec.mode, ServiceMode::Replicated { .. }) {
            rebalance(w, &service);
        }
    }
}

fn rebalance(w: &mut Working<'_>, service: &Service) {
    if !service.spec.task.placement.preferences.is_empty()
        || service.update_status.as_ref().is_some_and(|s| {
            matches!(s.state, crate::api::UpdateState::Updating | crate::api::UpdateState::RollbackStarted)
        })
    {
        return;
    }
    let tasks: Vec<_> = w.tasks_of(&service.id).into_iter().filter(is_runnable).collect();
    // Everything must be settled: running, from the current spec.
    if tasks.is_empty()
        || tasks.iter().any(|t| t.status.state != TaskState::Running || !t.spec.same_workload(&service.spec.task))
    {
        return;
    }
    let all: Vec<_> = w.all_tasks().cloned().collect();
    let (infos, _) = node_infos(&w.base.nodes, &w.base.services, all.iter(), w.now_ms);
    let req = TaskRequirements::new(&tasks[0], Some(service));
    let pipeline = Pipeline::new(&req);
    // Per eligible node: the service's tasks on it (highest slot last, moved first).
    let mut load: BTreeMap<&str, Vec<&crate::api::Task>> = BTreeMap::new();
    let mut fits: BTreeMap<&str, bool> = BTreeMap::new();
    for info in &infos {
        let id = info.node.id.as_str();
        // Static eligibility: ready, active, constraints, platform (ignore "full" for counting).
        let mut bare = info.clone();
        bare.available_nano_cpus = i128::MAX;
        bare.available_memory_bytes = i128::MAX;
        bare.host_ports.clear();
        bare.tasks_by_service.clear();
        if pipeline.check(&req, &bare) {
            load.insert(id, Vec::new());
            fits.insert(id, pipeline.check(&req, info));
        }
    }
    for t in &tasks {
        if let Some(v) = load.get_mut(t.node_id.as_str()) {
            v.push(t);
        }
    }
    let budget = if service.spec.update_config.parallelism == 0 {
        usize::MAX
    } else {
        service.spec.update_config.parallelism as usize
    };
    let mut counts: BTreeMap<&str, usize> = load.iter().map(|(k, v)| (*k, v.len())).collect();
    let mut moves = 0;
    while moves < budget {
        let Some((&busiest, &high)) = counts.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))) else { break };
        let Some((&idlest, &low)) =
            counts.iter().filter(|(k, _)| fits[*k]).min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
        else {
            break;
        };
        if high < low + 2 {
            break;
        }
        let Some(victim) = load.get_mut(busiest).and_then(|v| {
            v.sort_by_key(|t| t.slot);
            v.pop()
        }) else {
            break;
        };
        *counts.get_mut(busiest).expect("present") -= 1;
        *counts.get_mut(idlest).expect("present") += 1;
        let mut old = victim.clone();
        desire(&mut old, TaskState::Shutdown);
        let slot: Vec<_> = vec![old.clone()];
        w.put_task(old);
        let task = w.new_task(service, victim.slot, "");
        release::create(w, task, &slot);
        moves += 1;
    }
}
