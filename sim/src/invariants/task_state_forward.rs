//! A task's observed state only moves forward.
//!
//! Source: swarmkit `design/task_model.md` ("tasks only move forward through states") and
//! `api/types.proto` `TaskState` ordering; enforced in swarmkit's dispatcher
//! (`manager/dispatcher/dispatcher.go`, updates to an earlier state are ignored). DESIGN.md §4.
//!
//! Tracked per task across observations of the leader's store. Observations are compared only in
//! store-version order: after a leader change the new leader may not have applied as far as the
//! old one had, and a lagging copy is an older view, not a step back.

use std::collections::BTreeMap;

use shoal_core::api::TaskState;
use shoal_core::store::StoreState;

use super::ServiceViolation;

#[derive(Debug, Default)]
pub struct TaskStateForward {
    /// Task id → the furthest state seen.
    seen: BTreeMap<String, TaskState>,
    /// The highest store version checked so far.
    version: u64,
}

impl TaskStateForward {
    pub fn check(&mut self, state: &StoreState) -> Result<(), ServiceViolation> {
        if state.version < self.version {
            return Ok(());
        }
        self.version = state.version;
        for task in state.tasks.values() {
            let now = task.status.state;
            match self.seen.get(&task.id) {
                Some(&before) if now < before => {
                    return Err(ServiceViolation::TaskStateBackwards {
                        task: task.name(),
                        task_id: task.id.clone(),
                        from: before,
                        to: now,
                        version: state.version,
                    })
                }
                _ => {
                    self.seen.insert(task.id.clone(), now);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use shoal_core::api::{ServiceMode, TaskState};

    use super::super::replicas_bound::tests::{service, store, task};
    use super::*;

    #[test]
    fn a_state_moving_back_is_a_violation_unless_the_store_is_older() {
        let svc = || vec![service("web", ServiceMode::Replicated { replicas: 1 })];
        let at = |version: u64, state: TaskState| {
            let mut s = store(svc(), vec![task("t1", "web", "w1", state)]);
            s.version = version;
            s
        };
        let mut check = TaskStateForward::default();
        assert!(check.check(&at(5, TaskState::Assigned)).is_ok());
        assert!(check.check(&at(6, TaskState::Running)).is_ok());
        // A lagging copy (a new leader that has not applied as far) is not a step back.
        assert!(check.check(&at(4, TaskState::Pending)).is_ok());
        let err = check.check(&at(7, TaskState::Starting)).unwrap_err();
        assert!(matches!(
            err,
            ServiceViolation::TaskStateBackwards { from: TaskState::Running, to: TaskState::Starting, .. }
        ));
    }
}
