//! The liveness phase's convergence check, shared by the simulator's runner and the real-cluster
//! harness (`shoal-real`), which evaluates it on a store rebuilt from the control API.

use std::collections::BTreeSet;

use shoal_core::api::{Availability, NodeState, ServiceMode, TaskState, UpdateState};
use shoal_core::scheduler::{node_matches, parse_constraints};
use shoal_core::store::StoreState;

/// Every service runs its current spec: replicated ones with exactly `replicas` tasks, global
/// ones with one task on each ready, active node its constraints allow. A service whose update
/// (or rollback) paused on a failure waits for its operator, as Swarm's does (`failure_action:
/// pause`): it must keep every slot running, on whichever spec, and nothing more is asked. A
/// replicated job has completed its `total_completions` in its current iteration; a global job has
/// no task left to finish on a node that is ready.
pub fn converged(state: &StoreState) -> Result<(), String> {
    for svc in state.services.values() {
        if svc.spec.mode.is_job() {
            let tasks: Vec<&shoal_core::api::Task> = state.tasks.values().filter(|t| t.service_id == svc.id).collect();
            let (_, desired, completed) = shoal_core::orchestrator::jobs::job_counts(svc, &tasks);
            let done = match svc.spec.mode {
                ServiceMode::ReplicatedJob { total_completions, .. } => completed == total_completions,
                _ => desired == 0,
            };
            if !done {
                return Err(format!("job {}: {completed} completed, {desired} still to run", svc.spec.name));
            }
            continue;
        }
        let paused = svc
            .update_status
            .as_ref()
            .is_some_and(|u| matches!(u.state, UpdateState::Paused | UpdateState::RollbackPaused));
        let current: Vec<_> = state
            .tasks
            .values()
            .filter(|t| {
                t.service_id == svc.id && t.desired_state == TaskState::Running && t.status.state == TaskState::Running
            })
            .collect();
        let stale = current.iter().filter(|t| t.spec != svc.spec.task).count();
        match svc.spec.mode {
            ServiceMode::Replicated { replicas } if paused => {
                let slots: BTreeSet<u64> = current.iter().map(|t| t.slot).collect();
                if (slots.len() as u64) < replicas {
                    return Err(format!(
                        "service {} (update paused): {} of {replicas} slots running",
                        svc.spec.name,
                        slots.len()
                    ));
                }
            }
            ServiceMode::Replicated { replicas } => {
                if current.len() as u64 != replicas || stale > 0 {
                    return Err(format!(
                        "service {}: {} running ({stale} with an old spec), want {replicas} of image {}",
                        svc.spec.name,
                        current.len(),
                        svc.spec.task.image
                    ));
                }
            }
            ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob => {}
            ServiceMode::Global => {
                let constraints = parse_constraints(&svc.spec.task.placement.constraints).unwrap_or_default();
                let eligible: BTreeSet<&str> = state
                    .nodes
                    .values()
                    .filter(|n| {
                        n.status.state == NodeState::Ready
                            && n.spec.availability == Availability::Active
                            && node_matches(&constraints, n)
                    })
                    .map(|n| n.id.as_str())
                    .collect();
                let on: BTreeSet<&str> = current.iter().map(|t| t.node_id.as_str()).collect();
                if !eligible.is_subset(&on) || (stale > 0 && !paused) {
                    return Err(format!(
                        "global service {}: running on {} of {} eligible nodes ({stale} with an old spec)",
                        svc.spec.name,
                        on.intersection(&eligible).count(),
                        eligible.len()
                    ));
                }
            }
        }
    }
    Ok(())
}
