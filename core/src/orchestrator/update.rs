//! The update supervisor: rolling updates and rollbacks, as a function of the state (swarmkit
//! `orchestrator/update/updater.go`, without the goroutines).
//!
//! A slot is *dirty* when its runnable tasks were made from a task spec other than the service's
//! current one (new registry credentials alone only make tasks that have yet to pull dirty). When a service has dirty slots and its [`UpdateStatus`] is not about the current
//! `spec_version`, an update starts (`updating`, "update in progress"); a rollback requested with
//! [`rollback_service`] arrives already `rollback_started` and runs with `rollback_config`.
//!
//! Each pass:
//! 1. Failures: tasks of the new spec created since the update started that stopped on their own
//!    (`failed`, `rejected`, `complete`) count as failures if they never started or stopped within the
//!    monitor period of their start (`status.started_at_ms`, from the agent's `running` report), as
//!    Swarm counts them. When `failures / dirty slots > max_failure_ratio` (the slots the update
//!    replaces) the failure action fires: `pause` (state `paused`, message
//!    "update paused due to failure or early termination of task <id>"), `rollback` (spec ← previous
//!    spec, `rollback_started`, "update rolled back due to failure or early termination of task <id>"),
//!    or `continue`. A rollback that fails can only pause (`rollback_paused`).
//! 2. Progress: at most `parallelism` slots (0 = all) are in flight — a new task not yet running, or
//!    running for less than `delay` — and idle dirty slots start in slot (or node) order: stop-first
//!    retires the old task and creates the new one, which is held until the old one stops;
//!    start-first creates the new task at once and retires the old one when the new one runs.
//! 3. Completion: no dirty slot, nothing in flight, every new task running for at least `monitor`
//!    (`delay + 1s` when the delay is longer, as Swarm) → `completed` / `rollback_completed`.
//!
//! A paused update stays paused until the spec changes again (`service update` or `service rollback`).

use crate::api::{
    FailureAction, Service, ServiceSpec, Task, TaskSpec, TaskState, UpdateConfig, UpdateOrder, UpdateState,
    UpdateStatus,
};

use super::release;
use super::working::{desire, is_runnable, SlotKey, Working};

/// Why `service rollback` cannot proceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    #[error("service {0} does not have a previous spec")]
    NoPreviousSpec(String),
}

/// `service update`: the new spec, the old one kept for rollback, the version bumped. The update
/// supervisor starts the rolling update on its next pass if task specs changed.
pub fn update_service_spec(service: &Service, spec: ServiceSpec) -> Service {
    let mut next = service.clone();
    next.previous_spec = Some(std::mem::replace(&mut next.spec, spec));
    next.spec_version += 1;
    next
}

/// `service rollback` (or `service update --rollback`): swap in the previous spec and start a rollback
/// that runs with the rollback config. As Swarm, the current spec becomes the previous one.
pub fn rollback_service(service: &Service, now_ms: u64) -> Result<Service, RollbackError> {
    let mut next = service.clone();
    let previous = next.previous_spec.take().ok_or_else(|| RollbackError::NoPreviousSpec(service.spec.name.clone()))?;
    next.previous_spec = Some(std::mem::replace(&mut next.spec, previous));
    next.spec_version += 1;
    next.update_status = Some(UpdateStatus {
        state: UpdateState::RollbackStarted,
        started_at_ms: now_ms,
        completed_at_ms: 0,
        message: "manually requested rollback".into(),
        spec_version: next.spec_version,
    });
    Ok(next)
}

/// Is `task` made from `spec`, as far as an update is concerned? New registry credentials alone
/// leave a task that has pulled its image (`ready` on) alone and replace one that has yet to pull, as
/// swarmkit's `IsTaskDirty` treats `PullOptions`.
fn is_current(task: &Task, spec: &TaskSpec) -> bool {
    task.spec.same_workload(spec)
        && (task.spec.registry_auth == spec.registry_auth || task.status.state >= TaskState::Ready)
}

fn is_rollback(state: UpdateState) -> bool {
    matches!(state, UpdateState::RollbackStarted | UpdateState::RollbackPaused | UpdateState::RollbackCompleted)
}

/// The monitor period in force (Swarm: at least the delay plus a second).
pub fn monitor_ms(cfg: &UpdateConfig) -> u64 {
    if cfg.delay_ms >= cfg.monitor_ms {
        cfg.delay_ms + 1_000
    } else {
        cfg.monitor_ms
    }
}

/// Swarm's rule (`updater.go`): a failure counts against an update only if the task never started or
/// stopped within `monitor` of starting; a task that ran longer was healthy, and its later failure is
/// the restart supervisor's business.
pub fn failed_within_monitor(task: &Task, monitor_ms: u64) -> bool {
    match task.status.started_at_ms {
        0 => true,
        started => task.status.timestamp_ms <= started.saturating_add(monitor_ms),
    }
}

/// One slot's tasks split by spec.
struct SlotView {
    key: SlotKey,
    slot: u64,
    old: Vec<Task>,
    new: Vec<Task>,
    all: Vec<Task>,
}

pub fn run(w: &mut Working<'_>) {
    for service_id in w.service_ids() {
        if let Some(service) = w.service(&service_id).cloned() {
            update_service(w, service);
        }
    }
}

fn update_service(w: &mut Working<'_>, mut service: Service) {
    let now = w.now_ms;
    let target = service.spec_version;
    let replicas = match service.spec.mode {
        crate::api::ServiceMode::Replicated { replicas } => replicas,
        crate::api::ServiceMode::Global => u64::MAX,
        // A job has no rolling update: each update is a new iteration (`jobs`).
        crate::api::ServiceMode::ReplicatedJob { .. } | crate::api::ServiceMode::GlobalJob => return,
    };
    let slots: Vec<SlotView> = w
        .slots_of(&service.id)
        .into_iter()
        .filter(|(key, _)| key.0 <= replicas)
        .map(|(key, all)| {
            let (new, old): (Vec<Task>, Vec<Task>) =
                all.iter().filter(|t| is_runnable(t)).cloned().partition(|t| is_current(t, &service.spec.task));
            SlotView { slot: key.0, key, old, new, all }
        })
        .filter(|s| !s.old.is_empty() || !s.new.is_empty())
        .collect();

    let current = service.update_status.clone().filter(|s| s.spec_version == target);
    let dirty = slots.iter().any(|s| !s.old.is_empty());
    let Some(mut status) = current else {
        if !dirty {
            return;
        }
        service.update_status = Some(UpdateStatus {
            state: UpdateState::Updating,
            started_at_ms: now,
            completed_at_ms: 0,
            message: "update in progress".into(),
            spec_version: target,
        });
        w.put_service(service.clone());
        return update_service(w, service);
    };
    if !matches!(status.state, UpdateState::Updating | UpdateState::RollbackStarted) {
        return; // paused, or done
    }
    let rollback = is_rollback(status.state);
    let cfg = if rollback { service.spec.rollback_config.clone() } else { service.spec.update_config.clone() };
    let monitor = monitor_ms(&cfg);

    // 1. Failures of the new tasks since the update started, within the monitor period of their start.
    let made_by_update = |t: &Task| is_current(t, &service.spec.task) && w.created_at(t) >= status.started_at_ms;
    let mut failed: Vec<&Task> = slots
        .iter()
        .flat_map(|s| s.all.iter())
        .filter(|t| {
            made_by_update(t)
                && matches!(t.status.state, TaskState::Failed | TaskState::Rejected | TaskState::Complete)
                && t.desired_state <= TaskState::Shutdown
                && failed_within_monitor(t, monitor)
        })
        .collect();
    if !failed.is_empty() {
        failed.sort_by(|a, b| (a.status.timestamp_ms, &a.id).cmp(&(b.status.timestamp_ms, &b.id)));
        let culprit = failed.last().map(|t| t.id.clone()).unwrap_or_default();
        // Swarm divides by the slots that were dirty when the update started: those still dirty plus
        // those this update already gave a new task.
        let dirty_slots = slots.iter().filter(|s| !s.old.is_empty() || s.all.iter().any(made_by_update)).count();
        let ratio = failed.len() as f64 / dirty_slots.max(1) as f64;
        if ratio > cfg.max_failure_ratio {
            let action = if rollback && cfg.failure_action == FailureAction::Rollback {
                FailureAction::Pause
            } else {
                cfg.failure_action
            };
            match action {
                FailureAction::Continue => {}
                FailureAction::Rollback if service.previous_spec.is_some() => {
                    let previous = service.previous_spec.take().expect("checked");
                    service.spec = previous;
                    service.spec_version += 1;
                    service.update_status = Some(UpdateStatus {
                        state: UpdateState::RollbackStarted,
                        started_at_ms: now,
                        completed_at_ms: 0,
                        message: format!("update rolled back due to failure or early termination of task {culprit}"),
                        spec_version: service.spec_version,
                    });
                    w.put_service(service);
                    return;
                }
                _ => {
                    status.state = if rollback { UpdateState::RollbackPaused } else { UpdateState::Paused };
                    let what = if rollback { "rollback" } else { "update" };
                    status.message = format!("{what} paused due to failure or early termination of task {culprit}");
                    service.update_status = Some(status);
                    w.put_service(service);
                    return;
                }
            }
        }
    }

    // 2. Progress.
    let parallelism = if cfg.parallelism == 0 { usize::MAX } else { cfg.parallelism as usize };
    let mut busy = 0usize;
    let mut idle_dirty: Vec<&SlotView> = Vec::new();
    let mut last_running_at = 0u64;
    let mut all_running = true;
    for s in &slots {
        // A new task is up once it runs and, when the data plane routes to it, is in the
        // rotation (DESIGN §8): an old task is not stopped, nor the next slot begun, while the
        // new one cannot take requests yet.
        let new_running = s.new.iter().find(|t| in_service(t, now));
        if let Some(waiting) = s.new.iter().find(|t| t.status.state == TaskState::Running && !in_service(t, now)) {
            w.wake_at(running_since(waiting) + READY_WAIT_MS);
        }
        if s.new.is_empty() {
            idle_dirty.push(s);
            continue;
        }
        match new_running {
            // Every new task of the slot stopped: counted as a failure above, nothing to wait for.
            None if s.new.iter().all(|t| t.status.state > TaskState::Running) => {}
            None => {
                all_running = false;
                busy += 1;
            }
            Some(t) => {
                let started_at =
                    if t.status.started_at_ms > 0 { t.status.started_at_ms } else { t.status.timestamp_ms };
                last_running_at = last_running_at.max(started_at);
                // Start-first: the new task runs, so the old one goes.
                for old in &s.old {
                    let mut old = old.clone();
                    if desire(&mut old, TaskState::Shutdown) {
                        w.put_task(old);
                    }
                }
                if w.created_at(t) >= status.started_at_ms && started_at + cfg.delay_ms > now {
                    busy += 1;
                    w.wake_at(started_at + cfg.delay_ms);
                }
            }
        }
    }
    for s in idle_dirty.iter().take(parallelism.saturating_sub(busy)) {
        let node = s.key.1.clone();
        let task = w.new_task(&service, s.slot, &node);
        if cfg.order == UpdateOrder::StopFirst {
            for old in &s.old {
                let mut old = old.clone();
                if desire(&mut old, TaskState::Shutdown) {
                    w.put_task(old);
                }
            }
        }
        // The slot's tasks as they are now, so a stop-first replacement waits for the old one.
        let slot_now: Vec<Task> = s.all.iter().filter_map(|t| w.task(&t.id).cloned()).collect();
        release::create(w, task, &slot_now);
    }

    // 3. Completion.
    if idle_dirty.is_empty() && busy == 0 && all_running {
        if last_running_at + monitor <= now {
            status.state = if rollback { UpdateState::RollbackCompleted } else { UpdateState::Completed };
            status.message = if rollback { "rollback completed" } else { "update completed" }.into();
            status.completed_at_ms = now;
            service.update_status = Some(status);
            w.put_service(service);
        } else {
            w.wake_at(last_running_at + monitor);
        }
    }
}

/// How long a rolling update waits for a running task of a routed service to become ready before
/// it counts the task as up anyway: a task that never listens on its published port must not
/// stall the update forever (Swarm, which has no readiness, would not wait at all).
pub const READY_WAIT_MS: u64 = 30_000;

fn running_since(task: &Task) -> u64 {
    if task.status.started_at_ms > 0 {
        task.status.started_at_ms
    } else {
        task.status.timestamp_ms
    }
}

/// Whether a new task is up for a rolling update: running, and in the data plane's rotation when
/// it has ports or networks (or running for [`READY_WAIT_MS`] without getting there).
pub fn in_service(task: &Task, now_ms: u64) -> bool {
    if task.status.state != TaskState::Running {
        return false;
    }
    let routed = !task.networks.is_empty() || !task.ports.is_empty();
    !routed || task.status.endpoint.as_ref().is_some_and(|e| e.ready) || now_ms >= running_since(task) + READY_WAIT_MS
}
