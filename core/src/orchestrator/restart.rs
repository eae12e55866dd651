//! The restart supervisor: a task that stopped on its own (observed past `running` while still desired
//! to run) is replaced in its slot according to the service's restart policy — Swarm's condition
//! (`none` | `on-failure` | `any`), delay, max attempts and window — and shoal's `backoff`:
//!
//! - **`fixed`** (the default, Swarm's meaning of `--restart-delay`): the replacement is held for exactly
//!   the delay, counted from when the leader sees the task stop, however long the task ran.
//! - **`exponential`** (opt-in, `--restart-backoff exponential`): back-off that heals fast. A task that
//!   *ran healthily* — its container ran for at least [`HEALTHY_RUN_MS`] (10 s) before it stopped — is
//!   restarted immediately: a one-off crash heals in one scheduling round, well under a second. A task
//!   that died sooner starts a crash loop: its replacement waits the configured delay, then twice that,
//!   four times…, capped at `max(delay, MAX_BACKOFF_MS)`, so a crash-looping service costs little. The
//!   streak lives in [`Task::restart_streak`] and resets once a task runs healthily. Lifetime runs from
//!   the moment the container started (`status.started_at_ms`, reported by the agent) to the status
//!   timestamp of the stop, so an image pull does not count as running; a task that never started did
//!   not live at all.
//!
//! Restarts are counted against `max_attempts` within `window` in [`Task::restart_history_ms`], carried
//! from task to task of the slot (Swarm keeps this in the leader's memory and forgets it on failover).
//! A task that will not be restarted keeps its slot: desired `running`, observed `failed`/`complete`,
//! as `docker service ps` shows it.

use crate::api::{
    Availability, NodeState, RestartBackoff, RestartCondition, RestartPolicy, ServiceMode, Task, TaskState,
};

use super::release;
use super::working::{desire, is_runnable, Working};

/// With exponential back-off, a task that lived this long before stopping ran healthily: its restart is
/// immediate and its streak starts over.
pub const HEALTHY_RUN_MS: u64 = 10_000;
/// The exponential back-off never exceeds this (or the configured delay, if longer).
pub const MAX_BACKOFF_MS: u64 = 5 * 60 * 1000;

/// Did the task stop on its own?
pub fn stopped_on_its_own(task: &Task) -> bool {
    task.desired_state == TaskState::Running && task.status.state > TaskState::Running
}

/// How long the replacement of `task` must wait under `policy`, and the streak it carries.
pub fn restart_delay(task: &Task, policy: &RestartPolicy) -> (u64, u64) {
    match policy.backoff {
        RestartBackoff::Fixed => (policy.delay_ms, 0),
        RestartBackoff::Exponential => backoff(task, policy.delay_ms),
    }
}

/// The exponential back-off: how long the replacement of `task` must wait, and the streak it carries.
pub fn backoff(task: &Task, delay_ms: u64) -> (u64, u64) {
    let lived = match task.status.started_at_ms {
        0 => 0,
        started => task.status.timestamp_ms.saturating_sub(started),
    };
    if lived >= HEALTHY_RUN_MS {
        return (0, 0);
    }
    let cap = delay_ms.max(MAX_BACKOFF_MS);
    let factor = 1u64.checked_shl(task.restart_streak.min(40) as u32).unwrap_or(u64::MAX);
    (delay_ms.saturating_mul(factor).min(cap), task.restart_streak + 1)
}

/// The replacement of a task that stopped on its own, as the restart policy decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPlan {
    /// Hold the replacement until then (0 = no delay).
    pub not_before_ms: u64,
    pub streak: u64,
    pub history_ms: Vec<u64>,
}

/// Should `old` (stopped on its own at `now`) be replaced under `policy`, and how? `None` when the
/// condition or the attempts in the window say no. A job's task that completed is never restarted.
pub fn plan(old: &Task, policy: &RestartPolicy, job: bool, now: u64) -> Option<RestartPlan> {
    let restart = match policy.condition {
        RestartCondition::None => false,
        RestartCondition::OnFailure => old.status.state != TaskState::Complete,
        RestartCondition::Any => !(job && old.status.state == TaskState::Complete),
    };
    let mut history = old.restart_history_ms.clone();
    if policy.window_ms > 0 {
        history.retain(|&t| t + policy.window_ms > now);
    }
    if !restart || (policy.max_attempts > 0 && history.len() as u64 >= policy.max_attempts) {
        return None;
    }
    let (delay, streak) = restart_delay(old, policy);
    history.push(now);
    if policy.max_attempts > 0 {
        let keep = policy.max_attempts as usize;
        if history.len() > keep {
            history.drain(..history.len() - keep);
        }
    } else if policy.window_ms == 0 {
        history.clear(); // unlimited attempts: nothing to count
    }
    Some(RestartPlan { not_before_ms: if delay > 0 { now + delay } else { 0 }, streak, history_ms: history })
}

pub fn run(w: &mut Working<'_>) {
    let now = w.now_ms;
    for service_id in w.service_ids() {
        let Some(service) = w.service(&service_id).cloned() else { continue };
        let policy = service.spec.task.restart_policy.clone();
        let global = matches!(service.spec.mode, ServiceMode::Global);
        let replicas = match service.spec.mode {
            ServiceMode::Replicated { replicas } => replicas,
            ServiceMode::Global => u64::MAX,
            // Jobs restart their failed tasks in `jobs`.
            ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob => continue,
        };
        for (key, slot) in w.slots_of(&service_id) {
            for old in slot.iter().filter(|t| stopped_on_its_own(t)) {
                // Scaled away: the replicated reconciler removes it.
                if old.slot > replicas {
                    continue;
                }
                let Some(plan) = plan(old, &policy, false, now) else { continue };
                let mut retired = old.clone();
                desire(&mut retired, TaskState::Shutdown);
                w.put_task(retired);
                // A start-first update may already have a live successor in the slot.
                let successor =
                    slot.iter().any(|t| t.id != old.id && is_runnable(t) && t.status.state <= TaskState::Running);
                if successor {
                    continue;
                }
                if global {
                    let eligible = w.node(&key.1).is_some_and(|n| {
                        n.status.state == NodeState::Ready && n.spec.availability == Availability::Active
                    });
                    if !eligible {
                        continue; // the global reconciler brings it back when the node does
                    }
                }
                let mut task = w.new_task(&service, old.slot, if global { &key.1 } else { "" });
                task.not_before_ms = plan.not_before_ms;
                task.restart_streak = plan.streak;
                task.restart_history_ms = plan.history_ms;
                release::create(w, task, &slot);
            }
        }
    }
}
