//! The job reconcilers (swarmkit `orchestrator/jobs/{replicated,global}`): services whose tasks run to
//! completion (`--mode replicated-job|global-job`).
//!
//! A job's tasks are desired `complete`: the agent runs each until its container exits, a task that
//! exits 0 is `complete` and is never restarted, one that fails is replaced in its slot (or on its
//! node) by the restart policy — whose condition the CLI and compose default to `on-failure` for
//! jobs, as Docker's do. Every `service update` (any change, `--force`, `scale`, a rollback) bumps the
//! service's `spec_version`, which is the job's iteration (Swarm's `JobIteration`): the tasks of
//! older iterations are retired and the job runs again from scratch.
//!
//! - **Replicated job** (`max_concurrent` M, `total_completions` N): slots 1..N. A slot is done once a
//!   task of the current iteration completed in it; a task in progress (desired `complete`, not yet
//!   complete — a failed one the policy will not restart included, as in Swarm) holds its slot and
//!   one of the M. New tasks go to the lowest free slots, `min(M − in progress, N − done − in
//!   progress)` of them per pass, so at most M run at once and exactly N slots complete. A task whose
//!   node went down or was drained is retired by the enforcer (desired `shutdown`), which frees its
//!   slot: the job runs it again elsewhere. Old-iteration tasks that still run are desired `remove`,
//!   finished ones `shutdown` (history, trimmed by the reaper).
//! - **Global job**: one task per eligible node (ready, active, constraints and platforms) that
//!   existed when the iteration started (`JobStatus::last_execution_ms`): as in Swarm, a node that
//!   joins later gets no task until the next `service update`. Old-iteration tasks are desired
//!   `shutdown`.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{Service, ServiceMode, Task, TaskState};

use super::release;
use super::replicated::global_eligible;
use super::restart;
use super::working::{desire, slot_key, Working};

/// The iteration of `service`'s job its tasks must belong to.
pub fn iteration(service: &Service) -> u64 {
    service.spec_version
}

/// A task of the current iteration still wanted (desired `complete`) and not complete yet.
fn in_progress(task: &Task) -> bool {
    task.desired_state <= TaskState::Complete && task.status.state != TaskState::Complete
}

/// Where a job stands, as `service ls` counts it: tasks running, tasks desired, tasks completed.
pub fn job_counts(service: &Service, tasks: &[&Task]) -> (u64, u64, u64) {
    let current: Vec<&&Task> = tasks.iter().filter(|t| t.spec_version == iteration(service)).collect();
    let running = current
        .iter()
        .filter(|t| t.status.state == TaskState::Running && t.desired_state <= TaskState::Complete)
        .count() as u64;
    match service.spec.mode {
        ServiceMode::ReplicatedJob { max_concurrent, total_completions } => {
            let done: BTreeSet<u64> = current
                .iter()
                .filter(|t| t.status.state == TaskState::Complete && t.slot >= 1 && t.slot <= total_completions)
                .map(|t| t.slot)
                .collect();
            (running, max_concurrent, done.len() as u64)
        }
        _ => {
            let done: BTreeSet<&str> =
                current.iter().filter(|t| t.status.state == TaskState::Complete).map(|t| t.node_id.as_str()).collect();
            let desired = current.iter().filter(|t| in_progress(t) && !done.contains(t.node_id.as_str())).count();
            (running, desired as u64, done.len() as u64)
        }
    }
}

pub fn run(w: &mut Working<'_>) {
    for service_id in w.service_ids() {
        let Some(service) = w.service(&service_id).cloned() else { continue };
        match service.spec.mode {
            ServiceMode::ReplicatedJob { max_concurrent, total_completions } => {
                replicated_job(w, &service, max_concurrent, total_completions)
            }
            ServiceMode::GlobalJob => global_job(w, &service),
            ServiceMode::Replicated { .. } | ServiceMode::Global => {}
        }
    }
}

/// Retire the tasks of older iterations: `remove` (replicated) or `shutdown` (global) those that may
/// still run; finished ones are desired `shutdown` and stay as history until the reaper trims them
/// to the history limit.
fn retire_old(w: &mut Working<'_>, service: &Service, tasks: &[Task], state: TaskState) {
    for task in tasks.iter().filter(|t| t.spec_version != iteration(service)) {
        let finished = task.status.state > TaskState::Running;
        let mut task = task.clone();
        if desire(&mut task, if finished { TaskState::Shutdown } else { state }) {
            w.put_task(task);
        }
    }
}

/// Replace the current iteration's failed tasks the restart policy allows; returns the ids retired.
fn restart_failed(w: &mut Working<'_>, service: &Service, current: &[Task]) -> BTreeSet<String> {
    let now = w.now_ms;
    let policy = service.spec.task.restart_policy.clone();
    let mut retired = BTreeSet::new();
    for old in current.iter().filter(|t| in_progress(t) && t.status.state > TaskState::Complete) {
        let Some(plan) = restart::plan(old, &policy, true, now) else { continue };
        let mut stopped = old.clone();
        desire(&mut stopped, TaskState::Shutdown);
        w.put_task(stopped);
        retired.insert(old.id.clone());
        let mut task = w.new_task(service, old.slot, if service.spec.mode.is_global() { &old.node_id } else { "" });
        task.not_before_ms = plan.not_before_ms;
        task.restart_streak = plan.streak;
        task.restart_history_ms = plan.history_ms;
        let slot: Vec<Task> = current.iter().filter(|t| slot_key(t) == slot_key(old)).cloned().collect();
        release::create(w, task, &slot);
    }
    retired
}

fn replicated_job(w: &mut Working<'_>, service: &Service, max_concurrent: u64, total: u64) {
    let tasks = w.tasks_of(&service.id);
    retire_old(w, service, &tasks, TaskState::Remove);
    let current: Vec<Task> = tasks.iter().filter(|t| t.spec_version == iteration(service)).cloned().collect();
    // A replacement made by `restart_failed` takes the place of the task it retires.
    restart_failed(w, service, &current);
    let mut done = BTreeSet::new();
    let mut occupied = BTreeSet::new();
    let mut running = 0u64;
    for task in &current {
        if task.status.state == TaskState::Complete {
            if task.slot >= 1 && task.slot <= total {
                done.insert(task.slot);
            }
            occupied.insert(task.slot);
        } else if in_progress(task) {
            running += 1;
            occupied.insert(task.slot);
        }
    }
    let wanted = max_concurrent.saturating_sub(running).min(total.saturating_sub(done.len() as u64 + running));
    let mut free = (1..=total).filter(|slot| !occupied.contains(slot));
    for _ in 0..wanted {
        let Some(slot) = free.next() else { break };
        let task = w.new_task(service, slot, "");
        let slot_tasks: Vec<Task> = tasks.iter().filter(|t| t.slot == slot).cloned().collect();
        release::create(w, task, &slot_tasks);
    }
}

fn global_job(w: &mut Working<'_>, service: &Service) {
    let tasks = w.tasks_of(&service.id);
    retire_old(w, service, &tasks, TaskState::Shutdown);
    let current: Vec<Task> = tasks.iter().filter(|t| t.spec_version == iteration(service)).cloned().collect();
    restart_failed(w, service, &current);
    let started = service.job_status.as_ref().map_or(service.meta.created_at_ms, |j| j.last_execution_ms);
    let mut by_node: BTreeMap<&str, Vec<Task>> = BTreeMap::new();
    for task in &tasks {
        by_node.entry(task.node_id.as_str()).or_default().push(task.clone());
    }
    let covered: BTreeSet<&str> = current
        .iter()
        .filter(|t| t.desired_state <= TaskState::Complete || t.status.state == TaskState::Complete)
        .map(|t| t.node_id.as_str())
        .collect();
    for node_id in global_eligible(w, service) {
        let existed = w.node(&node_id).is_some_and(|n| n.meta.created_at_ms <= started);
        if !existed || covered.contains(node_id.as_str()) {
            continue;
        }
        let task = w.new_task(service, 0, &node_id);
        let slot = by_node.get(node_id.as_str()).cloned().unwrap_or_default();
        release::create(w, task, &slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{JobStatus, NodeState, RestartCondition};
    use crate::orchestrator::reconcile;
    use crate::scheduler::testkit::*;
    use crate::store::{Proposal, StoreState};

    const T0: u64 = 1_000_000;

    fn job(id: &str, max_concurrent: u64, total_completions: u64) -> Service {
        let mut s = service(id, 0);
        s.spec.mode = ServiceMode::ReplicatedJob { max_concurrent, total_completions };
        s.spec.task.restart_policy.condition = RestartCondition::OnFailure;
        s.spec.task.restart_policy.delay_ms = 0;
        s.job_status = Some(JobStatus { iteration: 1, last_execution_ms: T0 });
        s
    }

    fn global_job_service(id: &str) -> Service {
        let mut s = job(id, 0, 0);
        s.spec.mode = ServiceMode::GlobalJob;
        s
    }

    fn settle(state: &mut StoreState, now: u64) {
        for _ in 0..20 {
            let r = reconcile(state, now);
            if r.actions.is_empty() {
                return;
            }
            state.apply(&Proposal { actions: r.actions, stamp_ms: now }).expect("reconcile output applies");
        }
        panic!("reconcile did not settle");
    }

    fn tasks<'a>(state: &'a StoreState, service: &str) -> Vec<&'a Task> {
        state.tasks.values().filter(|t| t.service_id == service).collect()
    }

    /// The agents: assigned tasks start; up to `finish` running ones end in state `to`; tasks desired
    /// to stop stop (on ready nodes only).
    fn workers(state: &mut StoreState, now: u64, finish: usize, to: TaskState) {
        let mut finished = 0;
        let ids: Vec<String> = state.tasks.keys().cloned().collect();
        for id in ids {
            let ready = state.nodes.get(&state.tasks[&id].node_id).is_some_and(|n| n.status.state == NodeState::Ready);
            let t = state.tasks.get_mut(&id).unwrap();
            if !ready || t.status.state < TaskState::Assigned || t.status.state > TaskState::Running {
                continue;
            }
            if t.desired_state > TaskState::Complete {
                t.status.state = TaskState::Shutdown;
            } else if t.status.state < TaskState::Running {
                t.status.state = TaskState::Running;
                t.status.started_at_ms = now;
            } else if finished < finish {
                t.status.state = to;
                finished += 1;
            }
            t.status.timestamp_ms = now;
        }
    }

    fn running(state: &StoreState, service: &str) -> usize {
        tasks(state, service)
            .iter()
            .filter(|t| t.status.state == TaskState::Running && t.desired_state <= TaskState::Complete)
            .count()
    }

    fn counts(state: &StoreState, service: &str) -> (u64, u64, u64) {
        job_counts(&state.services[service], &tasks(state, service))
    }

    #[test]
    fn replicated_job_runs_total_completions_at_most_max_concurrent_at_once() {
        let mut state = state_with(vec![node("n1"), node("n2")], vec![job("batch", 2, 5)], vec![]);
        let mut now = T0;
        settle(&mut state, now);
        let made = tasks(&state, "batch");
        assert_eq!(made.len(), 2, "max-concurrent tasks at first");
        assert!(made.iter().all(|t| t.desired_state == TaskState::Complete && t.status.state == TaskState::Assigned));
        assert_eq!(made.iter().map(|t| t.slot).collect::<BTreeSet<_>>(), BTreeSet::from([1, 2]));
        for _ in 0..20 {
            now += 100;
            workers(&mut state, now, 1, TaskState::Complete);
            assert!(running(&state, "batch") <= 2, "never more than max-concurrent running");
            settle(&mut state, now);
        }
        let complete: Vec<&Task> =
            tasks(&state, "batch").into_iter().filter(|t| t.status.state == TaskState::Complete).collect();
        assert_eq!(complete.len(), 5, "exactly the total, no more");
        assert_eq!(complete.iter().map(|t| t.slot).collect::<BTreeSet<_>>(), (1..=5).collect());
        assert_eq!(counts(&state, "batch"), (0, 2, 5), "`service ls`: 0/2 (5/5 completed)");
        assert!(reconcile(&state, now + 60_000).actions.is_empty(), "a finished job stays finished");
    }

    #[test]
    fn failed_job_task_is_restarted_in_its_slot_and_a_down_nodes_task_runs_elsewhere() {
        let mut state = state_with(vec![node("n1"), node("n2")], vec![job("batch", 2, 2)], vec![]);
        settle(&mut state, T0);
        workers(&mut state, T0 + 1, 0, TaskState::Complete);
        // One fails (on-failure restarts it in its slot), the other's node goes down.
        let first = tasks(&state, "batch").into_iter().find(|t| t.slot == 1).unwrap().clone();
        let second = tasks(&state, "batch").into_iter().find(|t| t.slot == 2).unwrap().clone();
        state.tasks.get_mut(&first.id).unwrap().status.state = TaskState::Failed;
        state.nodes.get_mut(&second.node_id).unwrap().status.state = NodeState::Down;
        settle(&mut state, T0 + 2);
        assert_eq!(state.tasks[&first.id].desired_state, TaskState::Shutdown);
        assert_eq!(state.tasks[&second.id].desired_state, TaskState::Shutdown);
        let live: Vec<&Task> =
            tasks(&state, "batch").into_iter().filter(|t| t.desired_state == TaskState::Complete).collect();
        assert_eq!(live.iter().map(|t| t.slot).collect::<BTreeSet<_>>(), BTreeSet::from([1, 2]), "{live:?}");
        let up = if second.node_id == "n1" { "n2" } else { "n1" };
        assert!(live.iter().all(|t| t.node_id == up), "both run on the node that is up: {live:?}");
        workers(&mut state, T0 + 3, 0, TaskState::Complete);
        workers(&mut state, T0 + 4, 2, TaskState::Complete);
        settle(&mut state, T0 + 5);
        assert_eq!(counts(&state, "batch"), (0, 2, 2));
        assert_eq!(tasks(&state, "batch").iter().filter(|t| t.status.state == TaskState::Complete).count(), 2);
    }

    #[test]
    fn restart_condition_none_leaves_a_failed_job_task_holding_its_slot() {
        let mut svc = job("batch", 1, 2);
        svc.spec.task.restart_policy.condition = RestartCondition::None;
        let mut state = state_with(vec![node("n1")], vec![svc], vec![]);
        settle(&mut state, T0);
        workers(&mut state, T0 + 1, 0, TaskState::Complete);
        workers(&mut state, T0 + 2, 1, TaskState::Failed);
        settle(&mut state, T0 + 3);
        assert_eq!(tasks(&state, "batch").len(), 1, "not restarted, and the job does not go on (as Swarm)");
    }

    #[test]
    fn an_update_runs_the_job_again() {
        let mut state = state_with(vec![node("n1")], vec![job("batch", 1, 1)], vec![]);
        settle(&mut state, T0);
        workers(&mut state, T0 + 1, 0, TaskState::Complete);
        workers(&mut state, T0 + 2, 1, TaskState::Complete);
        settle(&mut state, T0 + 3);
        assert_eq!(counts(&state, "batch"), (0, 1, 1));
        let svc = state.services.get_mut("batch").unwrap();
        svc.spec_version = 2; // `service update --force`
        svc.job_status = Some(JobStatus { iteration: 2, last_execution_ms: T0 + 4 });
        settle(&mut state, T0 + 4);
        assert_eq!(counts(&state, "batch"), (0, 1, 0), "the new iteration has completed nothing yet");
        let new: Vec<&Task> = tasks(&state, "batch").into_iter().filter(|t| t.spec_version == 2).collect();
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].status.state, TaskState::Assigned);
        workers(&mut state, T0 + 5, 0, TaskState::Complete);
        workers(&mut state, T0 + 6, 1, TaskState::Complete);
        settle(&mut state, T0 + 7);
        assert_eq!(counts(&state, "batch"), (0, 1, 1));
        assert_eq!(tasks(&state, "batch").len(), 2, "the first run stays as history");
        // Runs beyond the history limit (5 per slot) are trimmed, oldest first.
        for run in 3..=8 {
            let now = T0 + run * 100;
            let svc = state.services.get_mut("batch").unwrap();
            svc.spec_version = run;
            svc.job_status = Some(JobStatus { iteration: run, last_execution_ms: now });
            settle(&mut state, now);
            workers(&mut state, now + 1, 0, TaskState::Complete);
            workers(&mut state, now + 2, 1, TaskState::Complete);
            settle(&mut state, now + 3);
            assert_eq!(counts(&state, "batch"), (0, 1, 1), "run {run}");
        }
        assert_eq!(tasks(&state, "batch").len(), 5, "the history limit holds for jobs too");
    }

    #[test]
    fn global_job_runs_once_per_node_that_existed_when_it_started() {
        let mut state = state_with(vec![node("n1"), node("n2")], vec![global_job_service("g")], vec![]);
        for n in state.nodes.values_mut() {
            n.meta.created_at_ms = T0 - 10;
        }
        settle(&mut state, T0);
        assert_eq!(tasks(&state, "g").len(), 2);
        workers(&mut state, T0 + 1, 0, TaskState::Complete);
        assert_eq!(counts(&state, "g"), (2, 2, 0));
        workers(&mut state, T0 + 2, 2, TaskState::Complete);
        settle(&mut state, T0 + 3);
        assert_eq!(counts(&state, "g"), (0, 0, 2), "`service ls`: 0/0 (2/2 completed)");
        // A node that joins later gets nothing until the next iteration, as in Swarm.
        let mut late = node("n3");
        late.meta.created_at_ms = T0 + 5;
        state.nodes.insert("n3".into(), late);
        settle(&mut state, T0 + 6);
        assert_eq!(tasks(&state, "g").len(), 2);
        let svc = state.services.get_mut("g").unwrap();
        svc.spec_version = 2;
        svc.job_status = Some(JobStatus { iteration: 2, last_execution_ms: T0 + 10 });
        settle(&mut state, T0 + 10);
        let new: Vec<&Task> = tasks(&state, "g").into_iter().filter(|t| t.spec_version == 2).collect();
        assert_eq!(new.iter().map(|t| t.node_id.as_str()).collect::<BTreeSet<_>>(), BTreeSet::from(["n1", "n2", "n3"]));
        assert!(tasks(&state, "g")
            .iter()
            .filter(|t| t.spec_version == 1)
            .all(|t| t.desired_state == TaskState::Shutdown));
    }
}
