//! No running task on a drained node, beyond the shutdown grace.
//!
//! Source: Docker Swarm's drain semantics (docs "Drain a node on the swarm": "the swarm manager …
//! stops tasks running on the node and launches replica tasks on a node with ACTIVE
//! availability"); swarmkit `manager/orchestrator/taskreaper` and `constraintenforcer`, which shut
//! down tasks on nodes that no longer accept them. DESIGN.md §4.
//!
//! Read from the leader's store: a task observed `running` on a node that has been drained (and
//! reachable, i.e. `ready`) for longer than the task's stop grace period plus
//! [`REPORT_SLACK_MS`] is a violation. The clock for a node restarts when it becomes ready again:
//! a node cut off while drained cannot have learned of the drain, and the store cannot know what
//! it runs. A node cut off from the leader in one direction only counts as cut off too, though the
//! store may still show it `ready`: if its heartbeats reach the leader but nothing comes back, it
//! never hears of the drain (a Swarm worker without its manager keeps its tasks alike); if only
//! the leader's messages reach it, its reports of the stop cannot arrive. Time is the acting
//! clock of [`super::ServiceInvariants`], which stands still while no
//! leader can commit (no shutdown and no report of a stop can reach the store then).

use std::collections::{BTreeMap, BTreeSet};

use shoal_core::api::{Availability, Node, NodeState, TaskState};
use shoal_core::store::StoreState;

use super::ServiceViolation;

/// Time allowed, on top of the stop grace period, for the orchestrator to react, the agent to stop
/// the container and its report to reach the store (a few 1 s heartbeats in the simulator).
pub const REPORT_SLACK_MS: u64 = 5_000;

#[derive(Debug, Default)]
pub struct NoRunningTaskOnDrainedNode {
    /// Node id → when it was first seen drained, ready and in touch with the leader (all three,
    /// without a gap).
    drained_since_ms: BTreeMap<String, u64>,
}

impl NoRunningTaskOnDrainedNode {
    /// Check one observation; `cut_off` holds the ids of nodes the leader cannot reach or hear
    /// from now (either direction).
    pub fn check(
        &mut self,
        now_ms: u64,
        state: &StoreState,
        cut_off: &BTreeSet<String>,
    ) -> Result<(), ServiceViolation> {
        let drained_in_touch = |node: &Node| {
            node.spec.availability == Availability::Drain
                && node.status.state == NodeState::Ready
                && !cut_off.contains(&node.id)
        };
        self.drained_since_ms.retain(|id, _| state.nodes.get(id).is_some_and(drained_in_touch));
        for node in state.nodes.values().filter(|n| drained_in_touch(n)) {
            self.drained_since_ms.entry(node.id.clone()).or_insert(now_ms);
        }
        for task in state.tasks.values().filter(|t| t.status.state == TaskState::Running) {
            let Some(&since_ms) = self.drained_since_ms.get(&task.node_id) else { continue };
            let allowed_ms = task.spec.stop_grace_period_ms + REPORT_SLACK_MS;
            let drained_for_ms = now_ms.saturating_sub(since_ms);
            if drained_for_ms > allowed_ms {
                let node = state.nodes.get(&task.node_id).map(|n| n.hostname().to_string()).unwrap_or_default();
                return Err(ServiceViolation::RunningOnDrainedNode {
                    task: task.name(),
                    task_id: task.id.clone(),
                    node,
                    drained_for_ms,
                    allowed_ms,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use shoal_core::api::{Availability, NodeState, ServiceMode, TaskState};

    use super::super::replicas_bound::tests::{service, store, task};
    use super::*;

    #[test]
    fn running_past_the_grace_on_a_drained_ready_node_is_a_violation() {
        let mut state = store(
            vec![service("web", ServiceMode::Replicated { replicas: 1 })],
            vec![task("t1", "web", "w1", TaskState::Running)],
        );
        let grace = state.tasks["t1"].spec.stop_grace_period_ms;
        let mut check = NoRunningTaskOnDrainedNode::default();
        let in_touch = BTreeSet::new();
        assert!(check.check(0, &state, &in_touch).is_ok());
        state.nodes.get_mut("w1").unwrap().spec.availability = Availability::Drain;
        assert!(check.check(1_000, &state, &in_touch).is_ok());
        assert!(check.check(1_000 + grace + REPORT_SLACK_MS, &state, &in_touch).is_ok());
        assert!(check.check(1_000 + grace + REPORT_SLACK_MS + 1, &state, &in_touch).is_err());
        // Cut off (down) then back: the clock starts again.
        state.nodes.get_mut("w1").unwrap().status.state = NodeState::Down;
        assert!(check.check(100_000, &state, &in_touch).is_ok());
        state.nodes.get_mut("w1").unwrap().status.state = NodeState::Ready;
        assert!(check.check(100_100, &state, &in_touch).is_ok());
    }

    /// Regression (fuzz seed 7, case t90): a worker whose heartbeats reached the leader while the
    /// leader's answers did not stayed `ready` in the store, drained, with its task running, and
    /// the checker counted the drain from before the cut.
    #[test]
    fn a_node_cut_off_one_way_stays_ready_but_its_clock_restarts() {
        let mut state = store(
            vec![service("web", ServiceMode::Replicated { replicas: 1 })],
            vec![task("t1", "web", "w1", TaskState::Running)],
        );
        let grace = state.tasks["t1"].spec.stop_grace_period_ms;
        let allowed = grace + REPORT_SLACK_MS;
        let mut check = NoRunningTaskOnDrainedNode::default();
        let none = BTreeSet::new();
        let w1_cut: BTreeSet<String> = ["w1".to_string()].into();
        state.nodes.get_mut("w1").unwrap().spec.availability = Availability::Drain;
        assert!(check.check(0, &state, &w1_cut).is_ok());
        // Cut off for far longer than the grace: no violation, the node cannot know.
        assert!(check.check(10 * allowed, &state, &w1_cut).is_ok());
        // In touch again: the node has the grace from now on, and no longer.
        assert!(check.check(10 * allowed + 1, &state, &none).is_ok());
        assert!(check.check(11 * allowed + 1, &state, &none).is_ok());
        assert!(check.check(11 * allowed + 2, &state, &none).is_err());
    }
}
