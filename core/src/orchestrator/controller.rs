//! The leader's controller loop: the store is the bus. The manager starts
//! [`run_leader_controllers`] when it becomes raft leader and flips `stop` when it stops leading.
//!
//! Each round reads the committed state, runs [`super::reconcile`] at `unix_millis()`, and proposes the
//! actions in batches of at most [`MAX_ACTIONS_PER_PROPOSAL`]. A batch refused by the state machine
//! (a conflict: a worker's status report or a user's write got in first) ends the round, and the next
//! round recomputes from the newer state. Between rounds the loop sleeps until the store version changes,
//! the next timer the reconcilers asked for, or `stop`. Committed changes are traced:
//! `task.created`, `task.scheduled`, `task.unschedulable`, `task.desired`, `task.state`, `task.deleted`,
//! `service.update`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::api::{Service, Task, TaskState};
use crate::env::runtime::unix_millis;
use crate::store::{Action, Object, ProposeError, Proposer, Store, StoreState};
use crate::trace::Tracer;

/// Proposals stay small enough for raft to replicate promptly.
pub const MAX_ACTIONS_PER_PROPOSAL: usize = 1000;

/// Tunables of the loop (the defaults suit both the simulator and real clusters).
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub max_actions_per_proposal: usize,
    /// Wait after a failed round before retrying (no leader, unknown outcome, refused batch).
    pub retry_backoff_ms: u64,
    /// Longest sleep without a store change (a safety net; the reconcilers ask for their own timers).
    pub idle_poll_ms: u64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            max_actions_per_proposal: MAX_ACTIONS_PER_PROPOSAL,
            retry_backoff_ms: 100,
            idle_poll_ms: 30_000,
        }
    }
}

/// Run the orchestrator and the scheduler until `stop` turns true (or its sender is dropped), or the
/// proposer says this node no longer leads. Call it on the leader only.
pub async fn run_leader_controllers(
    store: Store,
    proposer: Arc<dyn Proposer>,
    tracer: Tracer,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    run_with_config(store, proposer, tracer, stop, ControllerConfig::default()).await
}

/// [`run_leader_controllers`] with explicit tunables.
pub async fn run_with_config(
    store: Store,
    proposer: Arc<dyn Proposer>,
    tracer: Tracer,
    mut stop: tokio::sync::watch::Receiver<bool>,
    config: ControllerConfig,
) {
    let mut versions = store.watch_version();
    tracer.emit("orchestrator.start", json!({}));
    loop {
        if *stop.borrow() {
            break;
        }
        versions.borrow_and_update();
        let now_ms = unix_millis();
        let reconciliation = store.view(|s| super::reconcile(s, now_ms));
        let mut wait_ms =
            reconciliation.next_wakeup_ms.map(|at| at.saturating_sub(now_ms)).unwrap_or(config.idle_poll_ms);
        wait_ms = wait_ms.min(config.idle_poll_ms);
        if !reconciliation.actions.is_empty() {
            match propose_all(&store, proposer.as_ref(), &tracer, reconciliation.actions, &config).await {
                Round::Done => continue, // look again at the state our writes produced
                Round::Retry => wait_ms = config.retry_backoff_ms,
                Round::NotLeader => break,
            }
        }
        tokio::select! {
            _ = versions.changed() => {}
            _ = crate::env::sleep(Duration::from_millis(wait_ms.max(1))) => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    break; // the manager dropped its handle: treat as stop
                }
            }
        }
    }
    tracer.emit("orchestrator.stop", json!({}));
}

enum Round {
    Done,
    Retry,
    NotLeader,
}

async fn propose_all(
    store: &Store,
    proposer: &dyn Proposer,
    tracer: &Tracer,
    actions: Vec<Action>,
    config: &ControllerConfig,
) -> Round {
    let size = config.max_actions_per_proposal.max(1);
    let mut rest = actions.as_slice();
    while !rest.is_empty() {
        let (batch, tail) = rest.split_at(rest.len().min(size));
        rest = tail;
        // What the objects looked like before, for the trace.
        let before: Vec<Option<Object>> = store.view(|s| batch.iter().map(|a| previous(s, a)).collect());
        match proposer.propose(batch.to_vec()).await {
            Ok(version) => {
                store.wait_for_version(version).await;
                for (action, prior) in batch.iter().zip(before) {
                    trace_action(tracer, action, prior.as_ref());
                }
            }
            Err(ProposeError::Rejected(err)) => {
                tracer.emit("orchestrator.conflict", json!({ "error": err.to_string() }));
                return Round::Retry;
            }
            Err(ProposeError::NotLeader { .. }) | Err(ProposeError::Shutdown(_)) => return Round::NotLeader,
            Err(err @ (ProposeError::NoLeader | ProposeError::Unknown(_))) => {
                tracer.emit("orchestrator.propose_failed", json!({ "error": err.to_string() }));
                return Round::Retry;
            }
        }
    }
    Round::Done
}

fn previous(state: &StoreState, action: &Action) -> Option<Object> {
    match action {
        Action::Update(Object::Task(t)) => state.tasks.get(&t.id).cloned().map(Object::Task),
        Action::Update(Object::Service(s)) => state.services.get(&s.id).cloned().map(Object::Service),
        Action::Delete { id, .. } => state.tasks.get(id).cloned().map(Object::Task),
        _ => None,
    }
}

fn task_fields(t: &Task) -> serde_json::Value {
    json!({
        "task": t.id, "service": t.service_name, "service_id": t.service_id, "slot": t.slot, "node": t.node_id,
        "state": t.status.state.as_str(), "desired": t.desired_state.as_str(), "spec_version": t.spec_version,
    })
}

fn trace_action(tracer: &Tracer, action: &Action, prior: Option<&Object>) {
    match (action, prior) {
        (Action::Create(Object::Task(t)), _) => {
            let mut fields = task_fields(t);
            fields["not_before_ms"] = json!(t.not_before_ms);
            fields["restart_streak"] = json!(t.restart_streak);
            tracer.emit("task.created", fields);
            if t.status.state == TaskState::Assigned {
                tracer.emit("task.scheduled", task_fields(t));
            }
        }
        (Action::Update(Object::Task(t)), Some(Object::Task(old))) => {
            if t.status.state == TaskState::Assigned && old.status.state < TaskState::Assigned {
                tracer.emit("task.scheduled", task_fields(t));
            } else if t.status.state != old.status.state {
                let mut fields = task_fields(t);
                fields["from"] = json!(old.status.state.as_str());
                fields["message"] = json!(t.status.message);
                tracer.emit("task.state", fields);
            }
            if t.status.err != old.status.err && t.status.state == TaskState::Pending {
                let mut fields = task_fields(t);
                fields["err"] = json!(t.status.err);
                tracer.emit("task.unschedulable", fields);
            }
            if t.desired_state != old.desired_state {
                let mut fields = task_fields(t);
                fields["from"] = json!(old.desired_state.as_str());
                tracer.emit("task.desired", fields);
            }
        }
        (Action::Delete { .. }, Some(Object::Task(t))) => tracer.emit("task.deleted", task_fields(t)),
        (Action::Update(Object::Service(s)), Some(Object::Service(old))) => trace_service(tracer, s, old),
        _ => {}
    }
}

fn trace_service(tracer: &Tracer, s: &Service, old: &Service) {
    if s.update_status != old.update_status {
        if let Some(status) = &s.update_status {
            tracer.emit(
                "service.update",
                json!({
                    "service": s.spec.name, "service_id": s.id, "state": status.state,
                    "message": status.message, "spec_version": s.spec_version,
                }),
            );
        }
    }
}
