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
//! for the orchestrator's follow-up commit; `now_ms` is the acting clock of
//! [`super::ServiceInvariants`], which stands still while no leader can commit (a leader cut off
//! from its quorum cannot shut the surplus down, and the workers keep their tasks, as in Swarm).
//! Global services: at most one such task per node (two with start-first).

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
                    // The count seen last held until now as far as anyone knows (no leader's store was
                    // there to check while the cluster had no leader): the settle time starts now.
                    if let Some(last) = seen.last_mut().filter(|(_, count)| *count != replicas) {
                        last.0 = now_ms;
                    }
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

/// Small stores for the orchestration invariants' tests (shared with their sibling files).
#[cfg(test)]
pub(crate) mod tests {
    use shoal_core::api::{
        Availability, Meta, Node, NodeDescription, NodeRole, NodeSpec, NodeState, NodeStatus, Service, ServiceMode,
        ServiceSpec, Task, TaskState, TaskStatus, UpdateOrder,
    };
    use shoal_core::store::StoreState;

    use super::*;

    pub(crate) fn node(id: &str, availability: Availability, state: NodeState) -> Node {
        Node {
            id: id.into(),
            meta: Meta::default(),
            spec: NodeSpec { desired_role: NodeRole::Worker, availability, labels: Default::default() },
            description: NodeDescription { hostname: id.into(), ..Default::default() },
            status: NodeStatus { state, ..Default::default() },
            role: NodeRole::Worker,
            manager_status: None,
        }
    }

    pub(crate) fn service(id: &str, mode: ServiceMode) -> Service {
        let mut spec = ServiceSpec::new(id, "nginx:1");
        spec.mode = mode;
        Service {
            id: id.into(),
            meta: Meta::default(),
            spec,
            previous_spec: None,
            spec_version: 1,
            update_status: None,
            endpoint_ports: vec![],
        }
    }

    pub(crate) fn task(id: &str, service: &str, node: &str, state: TaskState) -> Task {
        Task {
            id: id.into(),
            service_id: service.into(),
            service_name: service.into(),
            slot: 1,
            node_id: node.into(),
            desired_state: TaskState::Running,
            status: TaskStatus { state, ..Default::default() },
            ..Default::default()
        }
    }

    /// Two ready workers `w1`, `w2` and the given services and tasks.
    pub(crate) fn store(services: Vec<Service>, tasks: Vec<Task>) -> StoreState {
        let mut state = StoreState::default();
        for n in
            [node("w1", Availability::Active, NodeState::Ready), node("w2", Availability::Active, NodeState::Ready)]
        {
            state.nodes.insert(n.id.clone(), n);
        }
        for s in services {
            state.services.insert(s.id.clone(), s);
        }
        for t in tasks {
            state.tasks.insert(t.id.clone(), t);
        }
        state
    }

    #[test]
    fn replicated_bound_allows_a_scale_down_time_to_settle() {
        let running =
            |n: usize| (0..n).map(|i| task(&format!("t{i}"), "web", "w1", TaskState::Running)).collect::<Vec<_>>();
        let mut check = ReplicasBound::default();
        assert!(check
            .check(0, &store(vec![service("web", ServiceMode::Replicated { replicas: 3 })], running(3)))
            .is_ok());
        assert!(check
            .check(100, &store(vec![service("web", ServiceMode::Replicated { replicas: 3 })], running(4)))
            .is_err());
        let mut check = ReplicasBound::default();
        assert!(check
            .check(0, &store(vec![service("web", ServiceMode::Replicated { replicas: 4 })], running(4)))
            .is_ok());
        // Scaled to 2: four may still run for SETTLE_MS, not after.
        let scaled = || store(vec![service("web", ServiceMode::Replicated { replicas: 2 })], running(4));
        assert!(check.check(1_000, &scaled()).is_ok());
        let err = check.check(1_000 + SETTLE_MS + 100, &scaled()).unwrap_err();
        assert_eq!(err, ServiceViolation::TooManyRunning { service: "web".into(), running: 4, bound: 2 });
    }

    #[test]
    fn a_scale_down_settles_only_while_a_leader_can_commit() {
        use crate::invariants::ServiceInvariants;
        let running =
            |n: usize| (0..n).map(|i| task(&format!("t{i}"), "web", "w1", TaskState::Running)).collect::<Vec<_>>();
        let at = |replicas: u64| store(vec![service("web", ServiceMode::Replicated { replicas })], running(4));
        let mut check = ServiceInvariants::default();
        assert!(check.check(0, &at(4), &Default::default()).is_ok());
        // Scaled to 0, and 1 s later the leader is cut off from its quorum for a minute: its store
        // still shows the four tasks running, and no write can change that.
        assert!(check.check(1_000, &at(0), &Default::default()).is_ok());
        assert!(check.check(2_000, &at(0), &Default::default()).is_ok());
        for now in (2_100..62_000).step_by(100) {
            check.pause(now);
            assert!(check.check(now, &at(0), &Default::default()).is_ok(), "at {now} ms");
        }
        // The leader could act for 1 s of the settle time before the cut; once one can commit again
        // (after the last pause, at 61.9 s) it has the rest, not more.
        let back = 61_900;
        assert!(check.check(back + SETTLE_MS - 1_000, &at(0), &Default::default()).is_ok());
        let err = check.check(back + SETTLE_MS - 1_000 + 100, &at(0), &Default::default()).unwrap_err();
        assert_eq!(err, ServiceViolation::TooManyRunning { service: "web".into(), running: 4, bound: 0 });
    }

    #[test]
    fn start_first_allows_parallelism_extra_and_down_nodes_do_not_count() {
        let mut svc = service("web", ServiceMode::Replicated { replicas: 3 });
        svc.spec.update_config.order = UpdateOrder::StartFirst;
        svc.spec.update_config.parallelism = 1;
        let tasks: Vec<_> = (0..4).map(|i| task(&format!("t{i}"), "web", "w1", TaskState::Running)).collect();
        let mut check = ReplicasBound::default();
        assert!(check.check(0, &store(vec![svc.clone()], tasks.clone())).is_ok());
        let mut five = tasks.clone();
        five.push(task("t9", "web", "w1", TaskState::Running));
        assert!(check.check(10, &store(vec![svc.clone()], five.clone())).is_err());
        let mut state = store(vec![svc], five);
        state.nodes.get_mut("w1").unwrap().status.state = NodeState::Down;
        assert!(ReplicasBound::default().check(20, &state).is_ok());
    }

    #[test]
    fn global_allows_one_per_node() {
        let svc = service("agent", ServiceMode::Global);
        let one_each = vec![task("a", "agent", "w1", TaskState::Running), task("b", "agent", "w2", TaskState::Running)];
        assert!(ReplicasBound::default().check(0, &store(vec![svc.clone()], one_each.clone())).is_ok());
        let mut two = one_each;
        two.push(task("c", "agent", "w2", TaskState::Running));
        assert!(ReplicasBound::default().check(0, &store(vec![svc], two)).is_err());
    }
}
