//! Simulated containers: they start after a delay, run, exit or crash as their command or an
//! injected fault says, and die with their host.
//!
//! Commands understood (enough for the conformance suite and scenarios): `sleep N` exits 0 after N
//! seconds, `exit N` and `sh -c "exit N"` exit with N at once; anything else runs until stopped.
//! Faults are set per image with [`SimExecutor::set_behavior`] (slow starts, crashes after a while,
//! images that cannot be pulled). Every random choice comes from the run's seed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shoal_core::env::{
    runtime, ContainerSpec, ContainerState, ContainerSummary, Executor, ExecutorError, LogLine, LogsQuery,
};
use tokio::sync::watch;

/// How containers of one image behave, set by scenario faults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Behavior {
    /// Extra time between `start` and running.
    pub start_delay: Duration,
    /// Exit by itself after running this long.
    pub exit_after: Option<Duration>,
    /// The exit code used with `exit_after` (non-zero = a crash).
    pub exit_code: i64,
    /// `prepare_image` fails as if the registry refused the image.
    pub pull_fails: bool,
}

#[derive(Debug)]
struct SimContainer {
    summary: ContainerSummary,
    state: watch::Sender<ContainerState>,
    command: Vec<String>,
    logs: Vec<LogLine>,
    /// Bumped on every start/stop, so a stale exit timer does nothing.
    epoch: u64,
}

#[derive(Default)]
struct ExecState {
    containers: BTreeMap<String, SimContainer>,
    images: BTreeSet<String>,
    behaviors: BTreeMap<String, Behavior>,
    unavailable_images: BTreeSet<String>,
    next_id: u64,
}

/// One node's container runtime. Clone it into the node's init closure so containers outlive an agent
/// restart; call [`SimExecutor::host_crash`] when the whole host goes down.
#[derive(Clone)]
pub struct SimExecutor {
    node: String,
    state: Arc<Mutex<ExecState>>,
}

impl std::fmt::Debug for SimExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimExecutor").field("node", &self.node).finish_non_exhaustive()
    }
}

/// What a command does once running.
fn scripted_exit(command: &[String]) -> Option<(Duration, i64)> {
    let words: Vec<&str> = command.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["sleep", secs] => secs.parse::<f64>().ok().map(|s| (Duration::from_secs_f64(s.max(0.0)), 0)),
        ["exit", code] => code.parse().ok().map(|c| (Duration::ZERO, c)),
        ["sh", "-c", script] | ["/bin/sh", "-c", script] => {
            let script = script.trim();
            script.strip_prefix("exit ").and_then(|c| c.trim().parse().ok()).map(|c| (Duration::ZERO, c))
        }
        _ => None,
    }
}

impl SimExecutor {
    /// An executor for node `node` (used to make container ids readable and unique per node).
    pub fn new(node: impl Into<String>) -> Self {
        SimExecutor { node: node.into(), state: Arc::new(Mutex::new(ExecState::default())) }
    }

    fn with<R>(&self, f: impl FnOnce(&mut ExecState) -> R) -> R {
        f(&mut self.state.lock().expect("sim executor lock"))
    }

    /// Make every container of `image` behave as `behavior` from now on.
    pub fn set_behavior(&self, image: &str, behavior: Behavior) {
        self.with(|state| state.behaviors.insert(image.to_string(), behavior));
    }

    /// `image` can be neither found locally nor pulled.
    pub fn mark_unavailable(&self, image: &str) {
        self.with(|state| state.unavailable_images.insert(image.to_string()));
    }

    /// The host went down: every running container is gone with exit code 137, as after a reboot.
    pub fn host_crash(&self) {
        self.with(|state| {
            for container in state.containers.values_mut() {
                container.epoch += 1;
                if !matches!(*container.state.borrow(), ContainerState::Exited { .. }) {
                    container.state.send_replace(ContainerState::Exited { code: 137 });
                    container.summary.state = ContainerState::Exited { code: 137 };
                }
            }
        })
    }

    /// Someone ran `docker rm -f` on a container behind the agent's back. Returns whether it existed.
    pub fn remove_behind_back(&self, id: &str) -> bool {
        self.with(|state| match state.containers.remove(id) {
            Some(container) => {
                container.state.send_replace(ContainerState::Exited { code: 137 });
                true
            }
            None => false,
        })
    }

    /// Ids of running containers (sorted), for invariants and scenario expectations.
    pub fn running(&self) -> Vec<ContainerSummary> {
        self.with(|state| {
            state
                .containers
                .values()
                .filter(|c| c.summary.state == ContainerState::Running)
                .map(|c| c.summary.clone())
                .collect()
        })
    }

    fn set_state(&self, id: &str, epoch: u64, new_state: ContainerState, line: &str) {
        self.with(|state| {
            if let Some(container) = state.containers.get_mut(id) {
                if container.epoch == epoch {
                    container.summary.state = new_state;
                    container.state.send_replace(new_state);
                    let line = LogLine::after(container.logs.last(), runtime::unix_nanos(), line.to_string(), false);
                    container.logs.push(line);
                }
            }
        })
    }

    fn no_such(id: &str) -> ExecutorError {
        ExecutorError::NoSuchContainer { id: id.to_string() }
    }
}

#[async_trait]
impl Executor for SimExecutor {
    async fn prepare_image(&self, image: &str) -> Result<(), ExecutorError> {
        let (present, fails) = self.with(|state| {
            let behavior = state.behaviors.get(image).cloned().unwrap_or_default();
            (state.images.contains(image), behavior.pull_fails || state.unavailable_images.contains(image))
        });
        if present {
            return Ok(());
        }
        if fails {
            return Err(ExecutorError::ImageUnavailable {
                image: image.to_string(),
                reason: "No such image (simulated registry refused the pull)".into(),
            });
        }
        // A pull takes a while.
        runtime::sleep(runtime::random_duration(Duration::from_millis(50), Duration::from_millis(300))).await;
        self.with(|state| state.images.insert(image.to_string()));
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, ExecutorError> {
        self.with(|state| {
            if !state.images.contains(&spec.image) {
                return Err(ExecutorError::ImageUnavailable {
                    image: spec.image.clone(),
                    reason: "No such image: prepare it first".into(),
                });
            }
            state.next_id += 1;
            let id = format!("{}-c{}", self.node, state.next_id);
            let summary = ContainerSummary {
                addresses: Default::default(),
                id: id.clone(),
                name: spec.name.clone(),
                image: spec.image.clone(),
                labels: spec.labels.clone(),
                state: ContainerState::Created,
            };
            let (tx, _) = watch::channel(ContainerState::Created);
            let command = spec.command.clone();
            let container = SimContainer { summary, state: tx, command, logs: Vec::new(), epoch: 0 };
            state.containers.insert(id.clone(), container);
            Ok(id)
        })
    }

    async fn start(&self, id: &str) -> Result<(), ExecutorError> {
        let (epoch, image, command) = self.with(|state| {
            let container = state.containers.get_mut(id).ok_or_else(|| Self::no_such(id))?;
            container.epoch += 1;
            Ok::<_, ExecutorError>((container.epoch, container.summary.image.clone(), container.command.clone()))
        })?;
        let behavior = self.with(|state| state.behaviors.get(&image).cloned().unwrap_or_default());
        if !behavior.start_delay.is_zero() {
            runtime::sleep(behavior.start_delay).await;
        }
        self.set_state(id, epoch, ContainerState::Running, "started");
        let exit = scripted_exit(&command).or(behavior.exit_after.map(|after| (after, behavior.exit_code)));
        if let Some((after, code)) = exit {
            if after.is_zero() {
                self.set_state(id, epoch, ContainerState::Exited { code }, "exited");
            } else {
                let this = self.clone();
                let id = id.to_string();
                runtime::spawn(async move {
                    runtime::sleep(after).await;
                    this.set_state(&id, epoch, ContainerState::Exited { code }, "exited");
                });
            }
        }
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<i64, ExecutorError> {
        let mut rx = self
            .with(|state| state.containers.get(id).map(|c| c.state.subscribe()))
            .ok_or_else(|| Self::no_such(id))?;
        loop {
            if let ContainerState::Exited { code } = *rx.borrow_and_update() {
                return Ok(code);
            }
            if rx.changed().await.is_err() {
                return Err(Self::no_such(id));
            }
        }
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), ExecutorError> {
        let epoch = self.with(|state| state.containers.get(id).map(|c| c.epoch)).ok_or_else(|| Self::no_such(id))?;
        let running = self.with(|state| state.containers.get(id).map(|c| c.summary.state == ContainerState::Running));
        if running == Some(true) {
            // SIGTERM is honoured quickly.
            runtime::sleep(runtime::random_duration(Duration::from_millis(1), Duration::from_millis(20))).await;
            self.set_state(id, epoch, ContainerState::Exited { code: 143 }, "stopped");
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), ExecutorError> {
        self.with(|state| match state.containers.remove(id) {
            Some(container) => {
                if !matches!(*container.state.borrow(), ContainerState::Exited { .. }) {
                    container.state.send_replace(ContainerState::Exited { code: 137 });
                }
                Ok(())
            }
            None => Err(Self::no_such(id)),
        })
    }

    async fn inspect(&self, id: &str) -> Result<ContainerSummary, ExecutorError> {
        self.with(|state| state.containers.get(id).map(|c| c.summary.clone())).ok_or_else(|| Self::no_such(id))
    }

    async fn list(&self, labels: &[(String, String)]) -> Result<Vec<ContainerSummary>, ExecutorError> {
        Ok(self.with(|state| {
            state
                .containers
                .values()
                .filter(|c| labels.iter().all(|(k, v)| c.summary.labels.get(k) == Some(v)))
                .map(|c| c.summary.clone())
                .collect()
        }))
    }

    async fn logs(&self, id: &str, query: &LogsQuery) -> Result<Vec<LogLine>, ExecutorError> {
        self.with(|state| {
            let container = state.containers.get(id).ok_or_else(|| Self::no_such(id))?;
            Ok(query.select(container.logs.iter()))
        })
    }

    // DATA-PLANE-WIP: replaced by the real bridges (issue 13).
    async fn ensure_network(&self, _bridge: &shoal_core::env::BridgeSpec) -> Result<(), ExecutorError> {
        Ok(())
    }
    async fn remove_network(&self, _name: &str) -> Result<(), ExecutorError> {
        Ok(())
    }
    async fn list_networks(&self, _labels: &[(String, String)]) -> Result<Vec<String>, ExecutorError> {
        Ok(Vec::new())
    }
    async fn exposed_ports(&self, _image: &str) -> Result<Vec<(String, u16)>, ExecutorError> {
        Ok(Vec::new())
    }
}
