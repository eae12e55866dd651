use std::collections::BTreeMap;

use super::*;
use crate::api::*;
use crate::scheduler::testkit::*;
use crate::store::{Object, Proposal};

const T0: u64 = 1_000_000;

/// One reconcile, committed.
fn commit(state: &mut StoreState, now: u64) -> Reconciliation {
    let r = reconcile(state, now);
    if !r.actions.is_empty() {
        state.apply(&Proposal { actions: r.actions.clone(), stamp_ms: now }).expect("reconcile output applies");
    }
    r
}

/// Reconcile until nothing changes; returns the last wake-up request.
fn settle(state: &mut StoreState, now: u64) -> Option<u64> {
    for _ in 0..20 {
        let r = commit(state, now);
        if r.actions.is_empty() {
            return r.next_wakeup_ms;
        }
    }
    panic!("reconcile did not settle");
}

/// A worker's status report.
fn report(state: &mut StoreState, task_id: &str, to: TaskState, now: u64) {
    let t = state.tasks.get_mut(task_id).expect("task");
    assert!(to >= t.status.state, "workers only move forward too");
    t.status.state = to;
    t.status.timestamp_ms = now;
    // As the agent and dispatcher do: the first `running` report fixes the start time.
    if to == TaskState::Running && t.status.started_at_ms == 0 {
        t.status.started_at_ms = now;
    }
}

/// Every assigned task desired to run starts; every task desired to stop stops.
fn workers_act(state: &mut StoreState, now: u64) {
    let ids: Vec<String> = state.tasks.keys().cloned().collect();
    for id in ids {
        let t = &state.tasks[&id];
        if t.node_id.is_empty() || t.status.state < TaskState::Assigned || t.status.state > TaskState::Running {
            continue;
        }
        if state.nodes.get(&t.node_id).is_none_or(|n| n.status.state != NodeState::Ready) {
            continue;
        }
        let to = if t.desired_state <= TaskState::Running { TaskState::Running } else { TaskState::Shutdown };
        if t.status.state != to {
            report(state, &id, to, now);
        }
    }
}

fn runnable(state: &StoreState, service: &str) -> Vec<Task> {
    state.tasks.values().filter(|t| t.service_id == service && t.desired_state <= TaskState::Running).cloned().collect()
}

fn running_on(state: &StoreState, service: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for t in state.tasks.values() {
        if t.service_id == service && t.status.state == TaskState::Running && t.desired_state <= TaskState::Running {
            *m.entry(t.node_id.clone()).or_default() += 1;
        }
    }
    m
}

fn task_in_slot(state: &StoreState, service: &str, slot: u64) -> Task {
    let mut v: Vec<_> = state
        .tasks
        .values()
        .filter(|t| t.service_id == service && t.slot == slot && t.desired_state <= TaskState::Running)
        .cloned()
        .collect();
    assert_eq!(v.len(), 1, "one runnable task in slot {slot}: {v:?}");
    v.pop().unwrap()
}

fn cluster(nodes: usize, services: Vec<Service>) -> StoreState {
    state_with((1..=nodes).map(|i| node(&format!("n{i}"))).collect(), services, vec![])
}

#[test]
fn replicated_creates_and_places_slots_in_one_pass_then_idles() {
    let mut state = cluster(2, vec![service("web", 3)]);
    let r = commit(&mut state, T0);
    assert_eq!(r.actions.len(), 3);
    let tasks = runnable(&state, "web");
    assert_eq!(tasks.iter().map(|t| t.slot).collect::<Vec<_>>().len(), 3);
    assert!(tasks.iter().all(|t| t.status.state == TaskState::Assigned && !t.node_id.is_empty()));
    assert!(tasks.iter().all(|t| t.status.message == crate::scheduler::ASSIGNED_MESSAGE));
    assert!(reconcile(&state, T0 + 1).actions.is_empty(), "a converged state produces no writes");
    workers_act(&mut state, T0 + 10);
    assert_eq!(running_on(&state, "web").values().sum::<usize>(), 3);
    assert!(reconcile(&state, T0 + 20).actions.is_empty());
}

#[test]
fn task_ids_are_deterministic() {
    let state = cluster(2, vec![service("web", 3)]);
    assert_eq!(reconcile(&state, T0), reconcile(&state.clone(), T0));
}

#[test]
fn scale_down_removes_highest_slots_and_reaps_them() {
    let mut state = cluster(2, vec![service("web", 3)]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 1);
    state.services.get_mut("web").unwrap().spec.mode = ServiceMode::Replicated { replicas: 1 };
    settle(&mut state, T0 + 2);
    let removed: Vec<_> = state.tasks.values().filter(|t| t.desired_state == TaskState::Remove).collect();
    assert_eq!(removed.iter().map(|t| t.slot).collect::<Vec<_>>().len(), 2);
    assert!(removed.iter().all(|t| t.slot > 1));
    workers_act(&mut state, T0 + 3);
    settle(&mut state, T0 + 4);
    assert_eq!(state.tasks.len(), 1, "stopped scaled-down tasks are deleted");
    assert_eq!(state.tasks.values().next().unwrap().slot, 1);
}

#[test]
fn node_down_replaces_tasks_elsewhere_at_once() {
    let mut state = cluster(2, vec![service("web", 2)]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 1);
    let on_n1 = state.tasks.values().find(|t| t.node_id == "n1").unwrap().clone();
    state.nodes.get_mut("n1").unwrap().status.state = NodeState::Down;
    settle(&mut state, T0 + 2);
    let old = &state.tasks[&on_n1.id];
    assert_eq!(old.desired_state, TaskState::Shutdown);
    assert_eq!(old.status.state, TaskState::Running, "the manager does not invent a report from the down node");
    let new = task_in_slot(&state, "web", on_n1.slot);
    assert_eq!((new.node_id.as_str(), new.status.state), ("n2", TaskState::Assigned));
}

#[test]
fn drain_retires_tasks_and_replacement_waits_for_the_old_one() {
    let mut state = cluster(2, vec![service("web", 2)]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 1);
    let on_n1 = state.tasks.values().find(|t| t.node_id == "n1").unwrap().clone();
    state.nodes.get_mut("n1").unwrap().spec.availability = Availability::Drain;
    let wake = settle(&mut state, T0 + 2);
    assert_eq!(state.tasks[&on_n1.id].desired_state, TaskState::Shutdown);
    let new = task_in_slot(&state, "web", on_n1.slot);
    assert_eq!(new.status.state, TaskState::New, "held while the old task stops");
    assert_eq!(wake, Some(T0 + 2 + release::OLD_TASK_TIMEOUT_MS));
    workers_act(&mut state, T0 + 3); // n1 stops its task
    settle(&mut state, T0 + 4);
    let new = task_in_slot(&state, "web", on_n1.slot);
    assert_eq!((new.node_id.as_str(), new.status.state), ("n2", TaskState::Assigned));

    // A task that never reports stopping holds its replacement for a minute at most.
    let mut state = cluster(2, vec![service("api", 1)]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 1);
    let node = state.tasks.values().next().unwrap().node_id.clone();
    state.nodes.get_mut(&node).unwrap().spec.availability = Availability::Drain;
    settle(&mut state, T0 + 2);
    assert_eq!(task_in_slot(&state, "api", 1).status.state, TaskState::New);
    settle(&mut state, T0 + 2 + release::OLD_TASK_TIMEOUT_MS);
    assert_eq!(task_in_slot(&state, "api", 1).status.state, TaskState::Assigned);
}

#[test]
fn paused_node_keeps_its_tasks() {
    let mut state = cluster(2, vec![service("web", 2)]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 1);
    let before = state.tasks.clone();
    state.nodes.get_mut("n1").unwrap().spec.availability = Availability::Pause;
    assert!(reconcile(&state, T0 + 2).actions.is_empty());
    assert_eq!(state.tasks, before);
}

#[test]
fn deleted_node_orphans_its_tasks() {
    let mut state = cluster(2, vec![service("web", 2)]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 1);
    let on_n1 = state.tasks.values().find(|t| t.node_id == "n1").unwrap().clone();
    state.nodes.remove("n1");
    settle(&mut state, T0 + 2);
    let old = &state.tasks[&on_n1.id];
    assert_eq!(old.status.state, TaskState::Orphaned);
    assert_eq!(old.status.message, enforcer::DELETED_NODE_MESSAGE);
    assert_eq!(task_in_slot(&state, "web", on_n1.slot).node_id, "n2");
}

#[test]
fn constraint_enforcer_rejects_tasks_on_nodes_that_no_longer_fit() {
    let mut web = service("web", 1);
    web.spec.task.placement.constraints = vec!["node.labels.tier==front".into()];
    let mut state = state_with(vec![labelled("n1", &[("tier", "front")]), node("n2")], vec![web], vec![]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 1);
    let first = task_in_slot(&state, "web", 1);
    assert_eq!(first.node_id, "n1");
    state.nodes.get_mut("n1").unwrap().spec.labels.clear();
    settle(&mut state, T0 + 2);
    let old = &state.tasks[&first.id];
    assert_eq!((old.status.state, old.desired_state), (TaskState::Rejected, TaskState::Shutdown));
    assert_eq!(old.status.message, "task rejected by constraint enforcer");
    let new = task_in_slot(&state, "web", 1);
    assert_eq!(new.status.state, TaskState::Pending);
    assert_eq!(new.status.err, "no suitable node (scheduling constraints not satisfied on 2 nodes)");
    // The label comes back: the pending task is placed on the next pass.
    state.nodes.get_mut("n1").unwrap().spec.labels.insert("tier".into(), "front".into());
    settle(&mut state, T0 + 3);
    let new = task_in_slot(&state, "web", 1);
    assert_eq!((new.node_id.as_str(), new.status.state, new.status.err.as_str()), ("n1", TaskState::Assigned, ""));
}

#[test]
fn shrunk_node_rejects_the_newest_tasks_that_no_longer_fit() {
    let mut web = service("web", 2);
    web.spec.task.resources.reservations.memory_bytes = 3 << 30;
    let mut state = state_with(vec![node("n1")], vec![web], vec![]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 1);
    assert_eq!(running_on(&state, "web")["n1"], 2);
    state.nodes.get_mut("n1").unwrap().description.resources.memory_bytes = 4 << 30;
    settle(&mut state, T0 + 2);
    let rejected: Vec<_> = state.tasks.values().filter(|t| t.status.state == TaskState::Rejected).collect();
    assert_eq!(rejected.len(), 1);
}

#[test]
fn global_runs_one_task_per_eligible_node() {
    let mut g = global("agent");
    g.spec.task.placement.constraints = vec!["node.role==worker".into()];
    let mut mgr = node("m1");
    mgr.role = NodeRole::Manager;
    let mut drained = node("n3");
    drained.spec.availability = Availability::Drain;
    let mut state = state_with(vec![mgr, node("n1"), node("n2"), drained], vec![g], vec![]);
    settle(&mut state, T0);
    let mut nodes: Vec<_> = runnable(&state, "agent").iter().map(|t| t.node_id.clone()).collect();
    nodes.sort();
    assert_eq!(nodes, vec!["n1", "n2"]);
    assert!(runnable(&state, "agent").iter().all(|t| t.slot == 0 && t.status.state == TaskState::Assigned));
    // A node joins; a node is drained.
    state.nodes.insert("n4".into(), node("n4"));
    state.nodes.get_mut("n1").unwrap().spec.availability = Availability::Drain;
    settle(&mut state, T0 + 1);
    let mut nodes: Vec<_> = runnable(&state, "agent").iter().map(|t| t.node_id.clone()).collect();
    nodes.sort();
    assert_eq!(nodes, vec!["n2", "n4"]);
}

fn fail(state: &mut StoreState, task_id: &str, now: u64) {
    report(state, task_id, TaskState::Failed, now);
}

/// A service whose restart policy backs off exponentially (`--restart-backoff exponential`).
fn backing_off(name: &str, replicas: u64) -> Service {
    let mut svc = service(name, replicas);
    svc.spec.task.restart_policy.backoff = RestartBackoff::Exponential;
    svc
}

#[test]
fn restart_waits_exactly_the_delay_by_default_after_a_healthy_run_and_in_a_crash_loop() {
    let mut svc = service("web", 1);
    svc.spec.task.restart_policy.delay_ms = 2_000;
    assert_eq!(svc.spec.task.restart_policy.backoff, RestartBackoff::Fixed, "Swarm's meaning by default");
    let mut state = cluster(1, vec![svc]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 100);
    let mut current = task_in_slot(&state, "web", 1);
    let mut now = T0 + 100;
    // Ran 60 s, then crashed; then four crashes within a second of starting: 2 s before every restart.
    for lived in [60_000, 500, 500, 500, 500] {
        fail(&mut state, &current.id, now + lived);
        now += lived + 1;
        let wake = settle(&mut state, now);
        assert_eq!(state.tasks[&current.id].desired_state, TaskState::Shutdown);
        let next = task_in_slot(&state, "web", 1);
        assert_eq!(next.status.state, TaskState::New, "held for its delay after a {lived} ms run");
        assert_eq!((next.not_before_ms, next.restart_streak), (now + 2_000, 0));
        assert_eq!(wake, Some(now + 2_000), "the orchestrator wakes when the delay is over");
        // Not a millisecond early.
        settle(&mut state, now + 1_999);
        assert_eq!(task_in_slot(&state, "web", 1).status.state, TaskState::New);
        now += 2_000;
        settle(&mut state, now);
        current = task_in_slot(&state, "web", 1);
        assert_eq!(current.status.state, TaskState::Assigned);
        workers_act(&mut state, now);
    }
    // A delay of 0 restarts at once.
    let mut svc = service("now", 1);
    svc.spec.task.restart_policy.delay_ms = 0;
    let mut state = cluster(1, vec![svc]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 1);
    let first = task_in_slot(&state, "now", 1);
    fail(&mut state, &first.id, T0 + 2);
    settle(&mut state, T0 + 3);
    let second = task_in_slot(&state, "now", 1);
    assert_eq!((second.status.state, second.not_before_ms), (TaskState::Assigned, 0));
}

#[test]
fn exponential_backoff_restarts_at_once_after_a_healthy_run_and_doubles_in_a_crash_loop() {
    let mut state = cluster(1, vec![backing_off("web", 1)]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 100);
    // Ran 60 s, then crashed: restarted at once, no streak.
    let first = task_in_slot(&state, "web", 1);
    fail(&mut state, &first.id, T0 + 60_000);
    settle(&mut state, T0 + 60_001);
    assert_eq!(state.tasks[&first.id].desired_state, TaskState::Shutdown);
    let second = task_in_slot(&state, "web", 1);
    assert_eq!((second.status.state, second.not_before_ms, second.restart_streak), (TaskState::Assigned, 0, 0));
    // Now it crashes within a second, repeatedly: 5 s, 10 s, 20 s …
    let mut now = T0 + 60_001;
    let mut current = second;
    for expected_delay in [5_000, 10_000, 20_000, 40_000] {
        workers_act(&mut state, now + 100);
        fail(&mut state, &current.id, now + 500);
        now += 501;
        let wake = settle(&mut state, now);
        let next = task_in_slot(&state, "web", 1);
        assert_eq!(next.status.state, TaskState::New, "held for its delay");
        assert_eq!(next.not_before_ms, now + expected_delay);
        assert_eq!(wake, Some(now + expected_delay));
        now += expected_delay;
        settle(&mut state, now);
        current = task_in_slot(&state, "web", 1);
        assert_eq!(current.status.state, TaskState::Assigned);
    }
    assert_eq!(current.restart_streak, 4);
    // The back-off is capped.
    let (delay, _) = restart::backoff(&Task { restart_streak: 30, ..current.clone() }, 5_000);
    assert_eq!(delay, restart::MAX_BACKOFF_MS);
    // A healthy run (10 s) resets the streak and restarts at once.
    workers_act(&mut state, now);
    fail(&mut state, &current.id, now + restart::HEALTHY_RUN_MS);
    now += restart::HEALTHY_RUN_MS + 1;
    settle(&mut state, now);
    let next = task_in_slot(&state, "web", 1);
    assert_eq!((next.status.state, next.not_before_ms, next.restart_streak), (TaskState::Assigned, 0, 0));
}

#[test]
fn restart_conditions_and_max_attempts() {
    // condition none: the failed task keeps its slot.
    let mut svc = service("once", 1);
    svc.spec.task.restart_policy.condition = RestartCondition::None;
    let mut state = cluster(1, vec![svc]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 1);
    let t = task_in_slot(&state, "once", 1);
    fail(&mut state, &t.id, T0 + 2);
    assert!(reconcile(&state, T0 + 3).actions.is_empty());

    // on-failure: a clean exit stays, a failure restarts.
    let mut svc = service("job", 2);
    svc.spec.task.restart_policy.condition = RestartCondition::OnFailure;
    let mut state = cluster(1, vec![svc]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 1);
    let (a, b) = (task_in_slot(&state, "job", 1), task_in_slot(&state, "job", 2));
    report(&mut state, &a.id, TaskState::Complete, T0 + 20_000);
    fail(&mut state, &b.id, T0 + 20_000);
    settle(&mut state, T0 + 20_001);
    assert_eq!(task_in_slot(&state, "job", 1).id, a.id);
    assert_ne!(task_in_slot(&state, "job", 2).id, b.id);

    // max attempts 2 within a window of a minute.
    let mut svc = service("flaky", 1);
    svc.spec.task.restart_policy.max_attempts = 2;
    svc.spec.task.restart_policy.window_ms = 60_000;
    svc.spec.task.restart_policy.delay_ms = 0;
    let mut state = cluster(1, vec![svc]);
    settle(&mut state, T0);
    let mut now = T0;
    for attempt in 0..3 {
        workers_act(&mut state, now + 1);
        let t = task_in_slot(&state, "flaky", 1);
        fail(&mut state, &t.id, now + 2);
        now += 3;
        settle(&mut state, now);
        let after = task_in_slot(&state, "flaky", 1);
        if attempt < 2 {
            assert_ne!(after.id, t.id, "attempt {attempt} restarts");
        } else {
            assert_eq!(after.id, t.id, "max attempts reached");
            assert_eq!(after.restart_history_ms.len(), 2);
        }
    }
    // Once the window has passed, restarts resume.
    settle(&mut state, now + 60_000);
    assert_eq!(task_in_slot(&state, "flaky", 1).status.state, TaskState::Assigned);
}

/// Drive a cluster: reconcile, let workers act, until nothing changes. Returns the time reached.
fn run_until_quiet(state: &mut StoreState, mut now: u64, step_ms: u64, max_steps: usize) -> u64 {
    for _ in 0..max_steps {
        let r = commit(state, now);
        let before = state.tasks.clone();
        workers_act(state, now + 1);
        if r.actions.is_empty() && before == state.tasks && r.next_wakeup_ms.is_none() {
            return now;
        }
        now = match r.next_wakeup_ms {
            Some(at) if r.actions.is_empty() && before == state.tasks => at.max(now + 1),
            _ => now + step_ms,
        };
    }
    panic!("cluster did not settle");
}

fn update_image(state: &mut StoreState, service: &str, image: &str, now: u64) {
    let svc = state.services[service].clone();
    let mut spec = svc.spec.clone();
    spec.task.image = image.into();
    let next = update_service_spec(&svc, spec);
    state.apply(&Proposal { actions: vec![Action::Update(Object::Service(next))], stamp_ms: now }).unwrap();
}

#[test]
fn rolling_update_stop_first_respects_parallelism_and_completes_after_monitor() {
    let mut svc = service("web", 4);
    svc.spec.update_config.parallelism = 2;
    let mut state = cluster(2, vec![svc]);
    let mut now = run_until_quiet(&mut state, T0, 100, 50);
    update_image(&mut state, "web", "nginx:1.26", now);
    now += 1;
    commit(&mut state, now);
    let status = state.services["web"].update_status.clone().unwrap();
    assert_eq!((status.state, status.message.as_str()), (UpdateState::Updating, "update in progress"));
    // Step by step: never more than 2 slots in flight, never more than 4 runnable tasks.
    let mut max_in_flight = 0;
    for _ in 0..40 {
        let r = commit(&mut state, now);
        let new_not_running = runnable(&state, "web")
            .iter()
            .filter(|t| t.spec.image == "nginx:1.26" && t.status.state != TaskState::Running)
            .count();
        max_in_flight = max_in_flight.max(new_not_running);
        assert!(runnable(&state, "web").len() <= 4);
        workers_act(&mut state, now + 1);
        now = r.next_wakeup_ms.filter(|_| r.actions.is_empty()).unwrap_or(now + 100).max(now + 1);
        if state.services["web"].update_status.as_ref().unwrap().state == UpdateState::Completed {
            break;
        }
    }
    assert_eq!(max_in_flight, 2);
    let status = state.services["web"].update_status.clone().unwrap();
    assert_eq!((status.state, status.message.as_str()), (UpdateState::Completed, "update completed"));
    assert!(status.completed_at_ms >= status.started_at_ms + 5_000, "waits out the monitor period");
    assert!(runnable(&state, "web")
        .iter()
        .all(|t| t.spec.image == "nginx:1.26" && t.status.state == TaskState::Running));
}

#[test]
fn start_first_starts_the_new_task_before_stopping_the_old() {
    let mut svc = service("web", 1);
    svc.spec.update_config.order = UpdateOrder::StartFirst;
    let mut state = cluster(2, vec![svc]);
    let now = run_until_quiet(&mut state, T0, 100, 50);
    let old = task_in_slot(&state, "web", 1);
    update_image(&mut state, "web", "nginx:1.26", now);
    commit(&mut state, now + 1);
    commit(&mut state, now + 1);
    let both = runnable(&state, "web");
    assert_eq!(both.len(), 2, "old and new side by side");
    assert_eq!(state.tasks[&old.id].status.state, TaskState::Running);
    workers_act(&mut state, now + 2); // the new one runs
    commit(&mut state, now + 3);
    assert_eq!(state.tasks[&old.id].desired_state, TaskState::Shutdown);
    assert_eq!(task_in_slot(&state, "web", 1).spec.image, "nginx:1.26");
}

#[test]
fn failed_update_pauses_with_the_reason() {
    let mut state = cluster(2, vec![service("web", 3)]);
    let now = run_until_quiet(&mut state, T0, 100, 50);
    update_image(&mut state, "web", "nginx:broken", now);
    settle(&mut state, now + 1);
    let new = runnable(&state, "web").into_iter().find(|t| t.spec.image == "nginx:broken").unwrap();
    fail(&mut state, &new.id, now + 2);
    settle(&mut state, now + 3);
    let status = state.services["web"].update_status.clone().unwrap();
    assert_eq!(status.state, UpdateState::Paused);
    assert_eq!(status.message, format!("update paused due to failure or early termination of task {}", new.id));
    // Paused: no further slot is touched.
    let old_images = runnable(&state, "web").iter().filter(|t| t.spec.image == "nginx:1.25").count();
    settle(&mut state, now + 100_000);
    assert_eq!(runnable(&state, "web").iter().filter(|t| t.spec.image == "nginx:1.25").count(), old_images);
}

#[test]
fn failed_update_rolls_back_then_completes_the_rollback() {
    let mut svc = service("web", 2);
    svc.spec.update_config.failure_action = FailureAction::Rollback;
    let mut state = cluster(2, vec![svc]);
    let now = run_until_quiet(&mut state, T0, 100, 50);
    update_image(&mut state, "web", "nginx:broken", now);
    settle(&mut state, now + 1);
    let new = runnable(&state, "web").into_iter().find(|t| t.spec.image == "nginx:broken").unwrap();
    fail(&mut state, &new.id, now + 2);
    commit(&mut state, now + 3);
    let svc = &state.services["web"];
    assert_eq!(svc.spec.task.image, "nginx:1.25");
    let status = svc.update_status.clone().unwrap();
    assert_eq!(status.state, UpdateState::RollbackStarted);
    assert!(status.message.starts_with("update rolled back due to failure or early termination of task"));
    run_until_quiet(&mut state, now + 4, 1_000, 200);
    let status = state.services["web"].update_status.clone().unwrap();
    assert_eq!((status.state, status.message.as_str()), (UpdateState::RollbackCompleted, "rollback completed"));
    assert!(runnable(&state, "web")
        .iter()
        .all(|t| t.spec.image == "nginx:1.25" && t.status.state == TaskState::Running));
}

#[test]
fn manual_rollback_uses_the_previous_spec() {
    let svc = service("web", 1);
    assert_eq!(rollback_service(&svc, T0).unwrap_err().to_string(), "service web does not have a previous spec");
    let mut state = cluster(1, vec![svc]);
    let now = run_until_quiet(&mut state, T0, 100, 50);
    update_image(&mut state, "web", "nginx:1.26", now);
    let now = run_until_quiet(&mut state, now + 1, 1_000, 100);
    let rolled = rollback_service(&state.services["web"], now).unwrap();
    assert_eq!(rolled.spec.task.image, "nginx:1.25");
    assert_eq!(rolled.previous_spec.as_ref().unwrap().task.image, "nginx:1.26");
    state.apply(&Proposal { actions: vec![Action::Update(Object::Service(rolled))], stamp_ms: now }).unwrap();
    run_until_quiet(&mut state, now + 1, 1_000, 100);
    let status = state.services["web"].update_status.clone().unwrap();
    assert_eq!(status.state, UpdateState::RollbackCompleted);
    assert_eq!(task_in_slot(&state, "web", 1).spec.image, "nginx:1.25");
}

#[test]
fn reaper_keeps_the_history_limit_per_slot() {
    let mut svc = service("web", 1);
    svc.spec.task.restart_policy.delay_ms = 0;
    let mut state = cluster(1, vec![svc]);
    let mut now = T0;
    settle(&mut state, now);
    for _ in 0..8 {
        workers_act(&mut state, now + 1);
        let t = task_in_slot(&state, "web", 1);
        fail(&mut state, &t.id, now + 2);
        now += 3;
        settle(&mut state, now);
        // The retired task reports stopping (it already failed: terminal).
    }
    let in_slot = state.tasks.values().filter(|t| t.slot == 1).count();
    assert_eq!(in_slot, reaper::DEFAULT_HISTORY_LIMIT as usize);
}

#[test]
fn removed_service_tasks_are_removed_then_deleted() {
    let mut state = cluster(2, vec![service("web", 2)]);
    let now = run_until_quiet(&mut state, T0, 100, 50);
    state.services.remove("web");
    settle(&mut state, now + 1);
    assert!(state.tasks.values().all(|t| t.desired_state == TaskState::Remove));
    workers_act(&mut state, now + 2);
    settle(&mut state, now + 3);
    assert!(state.tasks.is_empty());
}

#[test]
fn rebalance_moves_tasks_to_a_returning_node_within_parallelism() {
    let mut svc = service("web", 6);
    svc.spec.rebalance = true;
    let mut plain = service("plain", 6);
    plain.spec.rebalance = false;
    let mut state = state_with(vec![node("n1"), node("n2")], vec![svc, plain], vec![]);
    let now = run_until_quiet(&mut state, T0, 100, 50);
    assert_eq!(running_on(&state, "web").values().copied().collect::<Vec<_>>(), vec![3, 3]);
    state.nodes.insert("n3".into(), node("n3"));
    // One move at a time (parallelism 1): the first pass retires exactly one task.
    commit(&mut state, now + 1);
    assert_eq!(
        state.tasks.values().filter(|t| t.service_id == "web" && t.desired_state == TaskState::Shutdown).count(),
        1
    );
    run_until_quiet(&mut state, now + 2, 1_000, 200);
    assert_eq!(running_on(&state, "web").values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    assert_eq!(running_on(&state, "plain").get("n3"), None, "rebalancing is opt-in");
}

#[test]
fn observed_states_only_move_forward_under_churn() {
    let mut state = cluster(3, vec![service("web", 5), global("agent")]);
    let mut now = T0;
    let mut seen: BTreeMap<String, TaskState> = BTreeMap::new();
    for step in 0..60u64 {
        if step == 10 {
            state.nodes.get_mut("n1").unwrap().status.state = NodeState::Down;
        }
        if step == 20 {
            state.nodes.get_mut("n2").unwrap().spec.availability = Availability::Drain;
        }
        if step == 30 {
            state.nodes.get_mut("n1").unwrap().status.state = NodeState::Ready;
            state.nodes.get_mut("n2").unwrap().spec.availability = Availability::Active;
            update_image(&mut state, "web", "nginx:1.26", now);
        }
        if step % 7 == 3 {
            if let Some(t) = state.tasks.values().find(|t| t.status.state == TaskState::Running).cloned() {
                fail(&mut state, &t.id, now);
            }
        }
        commit(&mut state, now);
        for t in state.tasks.values() {
            if let Some(prev) = seen.get(&t.id) {
                assert!(t.status.state >= *prev, "{} went {prev} -> {}", t.id, t.status.state);
            }
        }
        workers_act(&mut state, now + 1);
        seen = state.tasks.iter().map(|(id, t)| (id.clone(), t.status.state)).collect();
        now += 3_000;
    }
}

mod leader_loop {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::store::{propose_with_retry, LocalProposer, Proposer, Store};
    use crate::trace::{TraceEvent, TraceSink, Tracer};

    #[derive(Default)]
    struct Collect(Mutex<Vec<TraceEvent>>);
    impl TraceSink for Collect {
        fn record(&self, event: TraceEvent) {
            self.0.lock().unwrap().push(event);
        }
    }

    async fn wait_for(store: &Store, what: &str, mut cond: impl FnMut(&StoreState) -> bool) {
        let deadline = crate::env::timeout(Duration::from_secs(10), async {
            loop {
                if store.view(&mut cond) {
                    return;
                }
                crate::env::sleep(Duration::from_millis(5)).await;
            }
        });
        deadline.await.unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    /// A worker's report, retried if the controllers wrote the task first.
    async fn report(store: &Store, proposer: &dyn Proposer, task_id: &str, to: TaskState) {
        let now = crate::env::runtime::unix_millis();
        propose_with_retry(store, proposer, 10, |s| {
            let mut t = s.tasks[task_id].clone();
            t.status.state = to;
            t.status.timestamp_ms = now;
            Ok(vec![Action::Update(Object::Task(t))])
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn leader_loop_places_tasks_and_replaces_a_failed_one() {
        let store = Store::new();
        let proposer: Arc<dyn Proposer> = Arc::new(LocalProposer::new(store.clone()));
        let mut web = service("web", 2);
        web.spec.task.restart_policy.delay_ms = 50; // a quick crash: replaced after the (short) delay
        proposer
            .propose(vec![
                Action::Create(Object::Node(node("n1"))),
                Action::Create(Object::Node(node("n2"))),
                Action::Create(Object::Service(web)),
            ])
            .await
            .unwrap();
        let sink = Arc::new(Collect::default());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let handle = tokio::spawn(run_leader_controllers(
            store.clone(),
            proposer.clone(),
            Tracer::new("manager-1", sink.clone()),
            stop_rx,
        ));

        wait_for(&store, "two assigned tasks", |s| {
            s.tasks.values().filter(|t| t.status.state == TaskState::Assigned).count() == 2
        })
        .await;
        let ids: Vec<String> = store.view(|s| s.tasks.keys().cloned().collect());
        for id in &ids {
            report(&store, proposer.as_ref(), id, TaskState::Running).await;
        }
        // Worker: one task crashes.
        report(&store, proposer.as_ref(), &ids[0], TaskState::Failed).await;
        let slot = store.view(|s| s.tasks[&ids[0]].slot);
        wait_for(&store, "a replacement in the failed task's slot", |s| {
            s.tasks.values().any(|t| t.slot == slot && t.id != ids[0] && t.status.state == TaskState::Assigned)
        })
        .await;
        store.view(|s| {
            assert_eq!(s.tasks[&ids[0]].desired_state, TaskState::Shutdown);
            let new = s.tasks.values().find(|t| t.slot == slot && t.id != ids[0]).unwrap();
            // Swarm's fixed delay (5 s by default): held, no streak.
            assert_eq!(new.restart_streak, 0);
            assert!(new.not_before_ms > 0);
        });

        stop_tx.send(true).unwrap();
        crate::env::timeout(Duration::from_secs(5), handle).await.expect("the loop stops").unwrap();
        let kinds: Vec<String> = sink.0.lock().unwrap().iter().map(|e| e.kind.clone()).collect();
        for kind in ["orchestrator.start", "task.created", "task.scheduled", "task.desired", "orchestrator.stop"] {
            assert!(kinds.iter().any(|k| k == kind), "{kind} traced: {kinds:?}");
        }
        assert_eq!(kinds.iter().filter(|k| *k == "task.created").count(), 3);
    }
}

/// Reconcile to a fixed point, then let the workers act; `rounds` times, a millisecond apart.
fn rounds(state: &mut StoreState, mut now: u64, rounds: usize) -> u64 {
    for _ in 0..rounds {
        settle(state, now);
        workers_act(state, now + 1);
        now += 2;
    }
    now
}

fn update_state(state: &StoreState, service: &str) -> UpdateState {
    state.services[service].update_status.as_ref().expect("an update status").state
}

#[test]
fn update_failure_counts_only_within_the_monitor_period_of_the_task_start() {
    for (ran_ms, paused) in [(2_000, true), (6_000, false)] {
        let mut state = cluster(2, vec![service("web", 2)]);
        let now = run_until_quiet(&mut state, T0, 100, 50);
        update_image(&mut state, "web", "nginx:1.26", now);
        let now = rounds(&mut state, now + 1, 3);
        let new = runnable(&state, "web").into_iter().find(|t| t.spec.image == "nginx:1.26").unwrap();
        assert_eq!(new.status.state, TaskState::Running);
        let started = new.status.started_at_ms;
        assert!(started > 0 && started < now, "the first running report fixed the start");
        fail(&mut state, &new.id, started + ran_ms);
        settle(&mut state, now.max(started + ran_ms + 1));
        let expected = if paused { UpdateState::Paused } else { UpdateState::Updating };
        assert_eq!(update_state(&state, "web"), expected, "a task that ran {ran_ms} ms (monitor 5 s)");
        assert_eq!(state.tasks[&new.id].status.started_at_ms, started, "a later report keeps the start time");
    }
}

#[test]
fn update_failure_action_fires_above_the_ratio_of_dirty_slots() {
    let mut svc = service("web", 4);
    svc.spec.update_config.parallelism = 0;
    svc.spec.update_config.max_failure_ratio = 0.3;
    let mut state = cluster(2, vec![svc]);
    let now = run_until_quiet(&mut state, T0, 100, 50);
    update_image(&mut state, "web", "nginx:1.26", now);
    let now = rounds(&mut state, now + 1, 4);
    let new: Vec<Task> = runnable(&state, "web").into_iter().filter(|t| t.spec.image == "nginx:1.26").collect();
    assert_eq!(new.len(), 4, "parallelism 0 replaces every slot at once");
    fail(&mut state, &new[0].id, now);
    settle(&mut state, now + 1);
    assert_eq!(update_state(&state, "web"), UpdateState::Updating, "1 of 4 dirty slots failed: 0.25 <= 0.3");
    fail(&mut state, &new[1].id, now + 2);
    settle(&mut state, now + 3);
    assert_eq!(update_state(&state, "web"), UpdateState::Paused, "2 of 4: 0.5 > 0.3");
}

#[test]
fn continue_failure_action_carries_on_and_completes() {
    let mut svc = service("web", 3);
    svc.spec.update_config.failure_action = FailureAction::Continue;
    let mut state = cluster(2, vec![svc]);
    let now = run_until_quiet(&mut state, T0, 100, 50);
    update_image(&mut state, "web", "nginx:1.26", now);
    let mut now = rounds(&mut state, now + 1, 3);
    let first = runnable(&state, "web").into_iter().find(|t| t.spec.image == "nginx:1.26").unwrap();
    fail(&mut state, &first.id, now);
    for _ in 0..200 {
        now = rounds(&mut state, now + 1_000, 1);
        assert_ne!(update_state(&state, "web"), UpdateState::Paused, "continue never pauses");
        if update_state(&state, "web") == UpdateState::Completed {
            break;
        }
    }
    assert_eq!(update_state(&state, "web"), UpdateState::Completed);
    let tasks = runnable(&state, "web");
    assert_eq!(tasks.len(), 3);
    assert!(tasks.iter().all(|t| t.spec.image == "nginx:1.26" && t.status.state == TaskState::Running));
    assert!(state.tasks[&first.id].desired_state > TaskState::Running, "the failed task was replaced");
}

#[test]
fn global_rolling_update_goes_node_by_node() {
    let mut g = global("agent");
    g.spec.update_config.parallelism = 1;
    let mut state = state_with(vec![node("n1"), node("n2"), node("n3")], vec![g], vec![]);
    let mut now = run_until_quiet(&mut state, T0, 100, 50);
    assert_eq!(runnable(&state, "agent").len(), 3);
    update_image(&mut state, "agent", "agent:2", now);
    let mut max_in_flight = 0;
    for _ in 0..100 {
        let r = commit(&mut state, now);
        let tasks = runnable(&state, "agent");
        let in_flight =
            tasks.iter().filter(|t| t.spec.image == "agent:2" && t.status.state != TaskState::Running).count();
        max_in_flight = max_in_flight.max(in_flight);
        let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &tasks {
            *per_node.entry(t.node_id.as_str()).or_default() += 1;
        }
        assert!(per_node.values().all(|n| *n <= 1), "stop-first: one runnable task per node: {per_node:?}");
        workers_act(&mut state, now + 1);
        now = r.next_wakeup_ms.filter(|_| r.actions.is_empty()).unwrap_or(now + 100).max(now + 1);
        if update_state(&state, "agent") == UpdateState::Completed {
            break;
        }
    }
    assert_eq!(update_state(&state, "agent"), UpdateState::Completed);
    assert_eq!(max_in_flight, 1, "parallelism 1: one node at a time");
    let mut nodes: Vec<String> = runnable(&state, "agent")
        .iter()
        .filter(|t| t.spec.image == "agent:2" && t.status.state == TaskState::Running)
        .map(|t| t.node_id.clone())
        .collect();
    nodes.sort();
    assert_eq!(nodes, vec!["n1", "n2", "n3"]);
}

#[test]
fn restart_measures_the_run_from_the_container_start_not_the_task_creation() {
    let mut state = cluster(1, vec![backing_off("web", 1)]);
    settle(&mut state, T0);
    let first = task_in_slot(&state, "web", 1);
    // A 30 s image pull, then the container dies a second after it started.
    report(&mut state, &first.id, TaskState::Running, T0 + 30_000);
    fail(&mut state, &first.id, T0 + 31_000);
    settle(&mut state, T0 + 31_001);
    let second = task_in_slot(&state, "web", 1);
    assert_eq!(second.status.state, TaskState::New, "a 1 s run is a crash: the replacement waits");
    assert_eq!((second.not_before_ms, second.restart_streak), (T0 + 31_001 + 5_000, 1));
}

#[test]
fn tasks_stopped_by_a_leaving_node_are_replaced_elsewhere() {
    let mut state = cluster(2, vec![service("web", 2)]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 1);
    let on_n1 = state.tasks.values().find(|t| t.node_id == "n1").unwrap().clone();
    // What the dispatcher commits for `swarm leave`: the node down and its task's final report.
    state.nodes.get_mut("n1").unwrap().status.state = NodeState::Down;
    report(&mut state, &on_n1.id, TaskState::Shutdown, T0 + 2);
    settle(&mut state, T0 + 3);
    assert_eq!(state.tasks[&on_n1.id].desired_state, TaskState::Shutdown);
    let new = task_in_slot(&state, "web", on_n1.slot);
    assert_eq!((new.node_id.as_str(), new.status.state), ("n2", TaskState::Assigned));
    assert_eq!(new.not_before_ms, 0, "replaced at once, not on a restart delay");
}

#[test]
fn tasks_of_a_node_down_for_a_day_are_orphaned() {
    let mut state = cluster(2, vec![service("web", 2), global("agent")]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 1);
    let down_at = T0 + 10;
    let n1 = state.nodes.get_mut("n1").unwrap();
    n1.status.state = NodeState::Down;
    n1.meta.updated_at_ms = down_at;
    let on_n1: Vec<String> = state.tasks.values().filter(|t| t.node_id == "n1").map(|t| t.id.clone()).collect();
    assert_eq!(on_n1.len(), 2);
    let wake = settle(&mut state, down_at + 1);
    assert_eq!(wake, Some(down_at + enforcer::NODE_DOWN_PERIOD_MS));
    assert!(on_n1.iter().all(|id| state.tasks[id].status.state == TaskState::Running), "not yet");
    settle(&mut state, down_at + enforcer::NODE_DOWN_PERIOD_MS);
    for id in &on_n1 {
        let t = &state.tasks[id];
        assert_eq!((t.status.state, t.status.message.as_str()), (TaskState::Orphaned, enforcer::ORPHANED_MESSAGE));
        assert!(t.desired_state > TaskState::Running);
    }
}

#[test]
fn a_down_nodes_global_task_is_shut_down_and_replaced_when_it_is_back() {
    let mut state = cluster(2, vec![global("agent")]);
    settle(&mut state, T0);
    workers_act(&mut state, T0 + 1);
    let old = state.tasks.values().find(|t| t.node_id == "n1").expect("a global task on n1").id.clone();
    let desired_on_n1 = |s: &StoreState| {
        s.tasks.values().filter(|t| t.node_id == "n1" && t.desired_state == TaskState::Running).count()
    };
    state.nodes.get_mut("n1").unwrap().status.state = NodeState::Down;
    settle(&mut state, T0 + 10);
    assert_eq!(state.tasks[&old].desired_state, TaskState::Shutdown, "swarmkit's removeTasksFromNode");
    assert_eq!(desired_on_n1(&state), 0, "nothing is desired on a down node");
    state.nodes.get_mut("n1").unwrap().status.state = NodeState::Ready;
    settle(&mut state, T0 + 20);
    assert_eq!(desired_on_n1(&state), 1, "a new task once the node is back");
}
