//! Never more running tasks of a service than its replicas allow, plus the update parallelism when
//! updates start the new task first.
//!
//! Source: swarmkit `manager/orchestrator/update/updater.go` (stop-first replaces a slot's task
//! only after the old one stopped; start-first runs at most `parallelism` extra tasks) and
//! `replicated/services.go` (scale-down removes the surplus). DESIGN.md §4.
//!
//! Counted on the leader's store: tasks desired and observed `running`, on nodes that are `ready`
//! (a node cut off keeps its containers, as in Swarm, and the store cannot see them). The bound is
//! the largest replica count the spec had within [`SETTLE_MS`], so a scale-down is given the time
//! for the orchestrator's follow-up commit. Global services: at most one such task per node (two
//! with start-first).

use std::collections::BTreeMap;

use shoal_core::api::{NodeState, ServiceMode, TaskState, UpdateOrder};
use shoal_core::store::StoreState;

use super::ServiceViolation;

/// How long a lower replica count takes to become the bound (orchestrator reaction time).
pub const SETTLE_MS: u64 = 3_000;

#[derive(Debug, Default)]
pub struct ReplicasBound {
    /// Service id → replica counts seen, with when each was last seen (trimmed to `SETTLE_MS`).
    recent: BTreeMap<String, Vec<(u64, u64)>>,
}

impl ReplicasBound {
    pub fn check(&mut self, now_ms: u64, state: &StoreState) -> Result<(), ServiceViolation> {
        self.recent.retain(|id, _| state.services.contains_key(id));
        for service in state.services.values() {
            let extra_per_slot = |parallelism: u64, order: UpdateOrder, replicas: u64| match order {
                UpdateOrder::StartFirst if parallelism == 0 => replicas,
                UpdateOrder::StartFirst => parallelism,
                UpdateOrder::StopFirst => 0,
            };
            let running = state.tasks.values().filter(|t| {
                t.service_id == service.id
                    && t.desired_state == TaskState::Running
                    && t.status.state == TaskState::Running
                    && state.nodes.get(&t.node_id).is_some_and(|n| n.status.state == NodeState::Ready)
            });
            match service.spec.mode {
                ServiceMode::Replicated { replicas } => {
                    let seen = self.recent.entry(service.id.clone()).or_default();
                    seen.retain(|(at, count)| now_ms.saturating_sub(*at) <= SETTLE_MS && *count != replicas);
                    seen.push((now_ms, replicas));
                    let base = seen.iter().map(|(_, count)| *count).max().unwrap_or(replicas);
                    let update = &service.spec.update_config;
                    let rollback = &service.spec.rollback_config;
                    let extra = extra_per_slot(update.parallelism, update.order, base).max(extra_per_slot(
                        rollback.parallelism,
                        rollback.order,
                        base,
                    ));
                    let bound = base + extra;
                    let count = running.count() as u64;
                    if count > bound {
                        return Err(ServiceViolation::TooManyRunning {
                            service: service.spec.name.clone(),
                            running: count,
                            bound,
                        });
                    }
                }
                ServiceMode::Global => {
                    let start_first = service.spec.update_config.order == UpdateOrder::StartFirst
                        || service.spec.rollback_config.order == UpdateOrder::StartFirst;
                    let bound = if start_first { 2 } else { 1 };
                    let mut per_node: BTreeMap<&str, u64> = BTreeMap::new();
                    for task in running {
                        *per_node.entry(task.node_id.as_str()).or_default() += 1;
                    }
                    if let Some((node, count)) = per_node.into_iter().find(|(_, count)| *count > bound) {
                        let host = state.nodes.get(node).map(|n| n.hostname().to_string()).unwrap_or_default();
                        return Err(ServiceViolation::TooManyRunning {
                            service: format!("{} on {host}", service.spec.name),
                            running: count,
                            bound,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
