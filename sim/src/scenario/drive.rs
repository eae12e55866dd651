//! What both scenario runners do with a `run:` step, written once: the simulator's (`run`, madsim
//! builds) and the real-cluster harness's (`shoal-harness`, real tokio). A runner says how a control
//! request reaches its cluster and where its notes go ([`Driver`]); the client-side logic of the CLI
//! words — a service update's read-modify-write, `stack …` as docker/cli does it, requests sent at
//! once — and the verdict on the answer ([`verdict`]) are here.

use serde_json::json;
use shoal_core::api::{Task, TaskState};
use shoal_core::control::{ControlError, ControlRequest, ControlResponse, ControlResult, ServiceView};
use shoal_core::stack::NAMESPACE_LABEL;

use super::cli::{Command, StackCommand};
use super::parse::{Action, Step};
use super::stack::load_compose;
use super::Outcome;

/// How a runner sends control requests and notes what happened. `Stop` is why the runner stops
/// waiting for an answer (an invariant broken while the request was in flight).
// The futures are awaited in place by the runner that made them, never sent to another thread.
#[allow(async_fn_in_trait)]
pub trait Driver {
    type Stop;

    /// One control request, as the scenario's client sends it.
    async fn control(&mut self, request: ControlRequest) -> Result<ControlResult, Self::Stop>;

    /// Requests sent at once (`A & B`); their answers in order.
    async fn control_concurrently(&mut self, requests: Vec<ControlRequest>) -> Result<Vec<ControlResult>, Self::Stop>;

    /// A note in the run's trace (the supervisor's).
    fn note(&mut self, kind: &str, fields: serde_json::Value);
}

/// Run one `run:` command; `file` is the scenario file (compose files are read relative to it).
pub async fn run_command<D: Driver>(driver: &mut D, file: &str, command: &Command) -> Result<ControlResult, D::Stop> {
    match command {
        Command::Request(request) => driver.control(request.clone()).await,
        Command::Sequence(requests) => {
            let mut last = Ok(ControlResponse::Done);
            for request in requests {
                last = driver.control(request.clone()).await?;
                if last.is_err() {
                    break;
                }
            }
            Ok(last)
        }
        Command::ServiceUpdate { service, changes } => {
            let current = match driver.control(ControlRequest::ServiceInspect { service: service.clone() }).await? {
                Ok(ControlResponse::Service(view)) => view.service,
                Ok(other) => return Ok(Err(ControlError::Internal(format!("service inspect answered {other:?}")))),
                Err(err) => return Ok(Err(err)),
            };
            let mut spec = current.spec.clone();
            changes.apply(&mut spec);
            let request =
                ControlRequest::ServiceUpdate { service: current.id.clone(), version: current.meta.version, spec };
            driver.control(request).await
        }
        Command::Stack(stack) => self::stack(driver, file, stack).await,
        Command::CreateFileObject { kind, spec, file: value_file } => {
            let path = std::path::Path::new(file).parent().unwrap_or(std::path::Path::new(".")).join(value_file);
            let data = match std::fs::read(&path) {
                Ok(data) => shoal_core::control::FileData(shoal_core::secrets::encode(&data)),
                Err(err) => return Ok(Err(ControlError::InvalidArgument(format!("open {}: {err}", path.display())))),
            };
            let request = match kind {
                shoal_core::api::FileKind::Secret => ControlRequest::SecretCreate { spec: spec.clone(), data },
                shoal_core::api::FileKind::Config => ControlRequest::ConfigCreate { spec: spec.clone(), data },
            };
            driver.control(request).await
        }
        Command::Unlock { key } => {
            let key = match key {
                Some(key) => key.clone(),
                // The current key, from whichever manager answers (not the step's node: that one is
                // locked); never noted in the trace.
                None => {
                    match driver.control_concurrently(vec![ControlRequest::UnlockKey { rotate: false }]).await?.pop() {
                        Some(Ok(ControlResponse::UnlockKey { key })) if !key.0.is_empty() => key.0,
                        Some(Ok(_)) => return Ok(Err(ControlError::FailedPrecondition("no unlock key is set".into()))),
                        Some(Err(err)) => return Ok(Err(err)),
                        None => return Ok(Err(ControlError::Internal("no answer to unlock-key".into()))),
                    }
                }
            };
            driver.control(ControlRequest::Unlock { key: shoal_core::control::FileData(key) }).await
        }
        Command::Concurrent(requests) => {
            let answers = driver.control_concurrently(requests.clone()).await?;
            let failed = answers.iter().find(|a| a.is_err()).cloned();
            Ok(failed.unwrap_or_else(|| answers.into_iter().last().unwrap_or(Ok(ControlResponse::Done))))
        }
    }
}

/// A list request's answer, or the error that it answered something else.
macro_rules! listed {
    ($driver:expr, $request:expr, $variant:ident, $what:literal) => {
        match $driver.control($request).await? {
            Ok(ControlResponse::$variant(items)) => items,
            Ok(other) => return Ok(Err(ControlError::Internal(format!(concat!($what, " answered {:?}"), other)))),
            Err(err) => return Ok(Err(err)),
        }
    };
}

/// `stack …`: what docker/cli does client-side, decided by [`shoal_core::stack`] (as the `shoal`
/// CLI does).
async fn stack<D: Driver>(driver: &mut D, file: &str, command: &StackCommand) -> Result<ControlResult, D::Stop> {
    let services: Vec<ServiceView> = listed!(driver, ControlRequest::ServiceList, Services, "service ls");
    let in_stack = |name: &str| -> Vec<ServiceView> {
        services.iter().filter(|v| shoal_core::stack::in_stack(&v.service.spec.labels, name)).cloned().collect()
    };
    match command {
        StackCommand::Ls => Ok(Ok(ControlResponse::Services(
            services.iter().filter(|v| v.service.spec.labels.contains_key(NAMESPACE_LABEL)).cloned().collect(),
        ))),
        StackCommand::Services(name) => Ok(Ok(ControlResponse::Services(in_stack(name)))),
        StackCommand::Ps(name) => {
            let members = in_stack(name);
            if members.is_empty() {
                return Ok(Err(ControlError::NotFound(format!("nothing found in stack: {name}"))));
            }
            let mut tasks = Vec::new();
            for view in members {
                let request = ControlRequest::TaskList { service: Some(view.service.id), node: None };
                tasks.extend(listed!(driver, request, Tasks, "task ls"));
            }
            Ok(Ok(ControlResponse::Tasks(tasks)))
        }
        StackCommand::Deploy { stack, file: compose, prune } => {
            let plan = match load_compose(file, compose, stack) {
                Ok(plan) => plan,
                Err(message) => return Ok(Err(ControlError::InvalidArgument(message))),
            };
            if !plan.ignored.is_empty() {
                driver.note("stack.ignored", json!({"stack": stack, "options": plan.ignored}));
            }
            let networks = listed!(driver, ControlRequest::NetworkList, Networks, "network ls");
            let secrets = listed!(driver, ControlRequest::SecretList, Secrets, "secret ls");
            let configs: Vec<_> = listed!(driver, ControlRequest::ConfigList, Configs, "config ls")
                .into_iter()
                .map(|v| v.config)
                .collect();
            let current: Vec<_> = services.into_iter().map(|v| v.service).collect();
            // Secret and config files are read relative to the compose file, as docker/cli does.
            let compose_dir =
                super::stack::resolve(file, compose).parent().map(|p| p.to_path_buf()).unwrap_or_default();
            let read = |path: &str| std::fs::read(compose_dir.join(path)).map_err(|e| format!("open {path}: {e}"));
            let mut steps = match shoal_core::stack::file_object_steps(&plan, &secrets, &configs, &read) {
                Ok(steps) => steps,
                Err(err) => return Ok(Err(ControlError::FailedPrecondition(err.to_string()))),
            };
            match shoal_core::stack::deploy_steps(&plan, &networks, &current, *prune) {
                Ok(more) => steps.extend(more),
                Err(err) => return Ok(Err(ControlError::FailedPrecondition(err.to_string()))),
            };
            stack_steps(driver, steps, true).await
        }
        StackCommand::Rm(stacks) => {
            let networks = listed!(driver, ControlRequest::NetworkList, Networks, "network ls");
            let secrets = listed!(driver, ControlRequest::SecretList, Secrets, "secret ls");
            let configs: Vec<_> = listed!(driver, ControlRequest::ConfigList, Configs, "config ls")
                .into_iter()
                .map(|v| v.config)
                .collect();
            let current: Vec<_> = services.into_iter().map(|v| v.service).collect();
            let mut steps = Vec::new();
            for name in stacks {
                steps.extend(shoal_core::stack::remove_steps_with_files(name, &networks, &current, &secrets, &configs));
            }
            stack_steps(driver, steps, false).await
        }
    }
}

/// Send each step's request, noting Docker's line for it. A deploy stops at the first refusal; a
/// removal goes on and reports the first one at the end, as `docker stack rm`.
async fn stack_steps<D: Driver>(
    driver: &mut D,
    steps: Vec<shoal_core::stack::StackStep>,
    stop_early: bool,
) -> Result<ControlResult, D::Stop> {
    let mut first_error = None;
    for step in steps {
        let result = driver.control(step.request()).await?;
        driver.note("stack.step", json!({"step": step.message(), "ok": result.is_ok()}));
        if let Err(err) = result {
            if stop_early {
                return Ok(Err(err));
            }
            first_error.get_or_insert(err);
        }
    }
    Ok(first_error.map_or(Ok(ControlResponse::Done), Err))
}

/// The task a container fault (`container remove|unhealthy SERVICE SLOT`) aims at: `service`'s task
/// in `slot`, desired running and observed in one of `observed`, with its node's hostname (empty if
/// the store has no such node). Both runners find it so, from the leader's store.
pub fn fault_target(
    state: &shoal_core::store::StoreState,
    service: &str,
    slot: u64,
    observed: &[TaskState],
) -> Result<(Task, String), String> {
    let task = state
        .tasks
        .values()
        .find(|t| {
            t.service_name == service
                && t.slot == slot
                && t.desired_state == TaskState::Running
                && observed.contains(&t.status.state)
        })
        .ok_or_else(|| format!("no running task {service}.{slot}"))?;
    let host = state.nodes.get(&task.node_id).map(|n| n.hostname().to_string()).unwrap_or_default();
    Ok((task.clone(), host))
}

/// A control answer in a few words, for the trace (`step.run`).
pub fn result_note(result: &ControlResult) -> serde_json::Value {
    match result {
        Ok(ControlResponse::Done) => json!({"ok": "done"}),
        Ok(ControlResponse::Created { id }) => json!({"ok": "created", "id": id}),
        Ok(ControlResponse::Nodes(nodes)) => json!({"ok": "nodes", "count": nodes.len()}),
        Ok(ControlResponse::Services(s)) => json!({"ok": "services", "count": s.len()}),
        Ok(ControlResponse::Tasks(t)) => json!({"ok": "tasks", "count": t.len()}),
        Ok(ControlResponse::Networks(n)) => json!({"ok": "networks", "count": n.len()}),
        Ok(ControlResponse::JoinToken { .. }) => json!({"ok": "join_token"}),
        Ok(ControlResponse::Info(_)) => json!({"ok": "info"}),
        Ok(ControlResponse::Node(_)) => json!({"ok": "node"}),
        Ok(ControlResponse::Service(_)) => json!({"ok": "service"}),
        Ok(ControlResponse::Network(_)) => json!({"ok": "network"}),
        Ok(ControlResponse::Logs(logs)) => {
            json!({"ok": "logs", "tasks": logs.tasks.len(), "unreachable": logs.unreachable.len()})
        }
        Ok(ControlResponse::Secrets(s)) => json!({"ok": "secrets", "count": s.len()}),
        Ok(ControlResponse::Configs(c)) => json!({"ok": "configs", "count": c.len()}),
        Ok(ControlResponse::Secret(_)) => json!({"ok": "secret"}),
        Ok(ControlResponse::Config(_)) => json!({"ok": "config"}),
        Ok(ControlResponse::SecretsKey(_)) => json!({"ok": "secrets_key"}),
        // Never the key itself: traces must not hold it.
        Ok(ControlResponse::UnlockKey { key }) => json!({"ok": "unlock_key", "set": !key.0.is_empty()}),
        Ok(ControlResponse::Ca(view)) => json!({
            "ok": "ca",
            "certs_rotated": view.progress.certs_rotated,
            "total": view.progress.total,
            "rotation_in_progress": view.progress.rotation_in_progress,
        }),
        Err(err) => json!({"error": err.to_string()}),
    }
}

/// What a `run:` step asked of its answer.
#[derive(Debug, Clone, Copy)]
pub struct RunStep<'a> {
    /// `file:line`, for messages.
    pub place: &'a str,
    pub text: &'a str,
    pub expect_error: Option<&'a str>,
    pub expect_output: Option<&'a str>,
    pub may_fail: bool,
}

/// Note a `run:` step's answer in the trace (`step.run`) and judge it ([`verdict`]); `place` is
/// the step's `file:line`.
pub fn conclude<D: Driver>(driver: &mut D, place: &str, step: &Step, result: &ControlResult) -> Result<(), Outcome> {
    let Action::Run { text, expect_error, expect_output, .. } = &step.action else { return Ok(()) };
    let step = RunStep {
        place,
        text,
        expect_error: expect_error.as_deref(),
        expect_output: expect_output.as_deref(),
        may_fail: step.may_fail,
    };
    let mut note = result_note(result);
    note["at"] = json!(step.place);
    note["run"] = json!(step.text);
    if step.may_fail {
        note["may_fail"] = json!(true);
    }
    driver.note("step.run", note);
    verdict(step, result)
}

/// Whether the answer is what the step asked for: success, or the error it expects, and the
/// output it names; a failure of a `may_fail` step is fine.
pub fn verdict(step: RunStep<'_>, result: &ControlResult) -> Result<(), Outcome> {
    let RunStep { place, text, expect_error, expect_output, may_fail } = step;
    match (result, expect_error) {
        (Err(_), None) if may_fail => return Ok(()),
        (Ok(_), Some(want)) => {
            return Err(Outcome::Liveness(format!("{place}: `{text}` should fail with {want:?}, but it succeeded")))
        }
        (Err(err), Some(want)) if !err.to_string().contains(want) => {
            return Err(Outcome::Liveness(format!(
                "{place}: `{text}` should fail with {want:?}, but failed with: {err}"
            )))
        }
        (Err(err), None) => return Err(Outcome::Liveness(format!("{place}: `{text}` failed: {err}"))),
        _ => {}
    }
    if let (Ok(response), Some(want)) = (result, expect_output) {
        let output = serde_json::to_string(response).unwrap_or_default();
        if !output.contains(want) {
            return Err(Outcome::Liveness(format!(
                "{place}: output of `{text}` should contain {want:?}; it was {}",
                output.chars().take(400).collect::<String>()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_on_answers() {
        let step = RunStep { place: "f:3", text: "node ls", expect_error: None, expect_output: None, may_fail: false };
        assert_eq!(verdict(step, &Ok(ControlResponse::Done)), Ok(()));
        let failed = Err(ControlError::NoLeader);
        assert!(matches!(verdict(step, &failed), Err(Outcome::Liveness(m)) if m.starts_with("f:3: `node ls` failed")));
        assert_eq!(verdict(RunStep { may_fail: true, ..step }, &failed), Ok(()));
        let wants = RunStep { expect_error: Some("does not have a leader"), ..step };
        assert_eq!(verdict(wants, &failed), Ok(()));
        assert!(verdict(wants, &Ok(ControlResponse::Done)).is_err(), "a step that must fail succeeded");
        let output = RunStep { expect_output: Some("\"count\""), ..step };
        assert!(verdict(output, &Ok(ControlResponse::Done)).is_err());
        assert_eq!(result_note(&failed)["error"], json!(ControlError::NoLeader.to_string()));
    }
}
