//! One task's life on a node: drives the container through the executor seam and reports each
//! state, never moving the observed state backwards. A runner first looks for a container already
//! labelled with its task id (left by an agent before a restart) and adopts it instead of starting
//! a second one.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::api::{Task, TaskState, TaskStatus};
use crate::dispatcher::StatusUpdate;
use crate::env::executor::{ContainerSpec, LABEL_NODE_ID, LABEL_SERVICE_ID, LABEL_SERVICE_NAME, LABEL_TASK_ID};
use crate::env::{runtime, ContainerState, NodeEnv};

/// The agent's handle on a running runner: `None` in the channel means "remove the task".
pub struct RunnerHandle {
    task_id: String,
    desired: watch::Sender<Option<Task>>,
    done: watch::Receiver<bool>,
}

impl RunnerHandle {
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    pub fn update(&self, task: Task) {
        self.desired.send_if_modified(|current| {
            let changed = current.as_ref().map(|t| (t.desired_state, t.meta.version))
                != Some((task.desired_state, task.meta.version));
            *current = Some(task);
            changed
        });
    }

    pub fn remove(&self) {
        self.desired.send_replace(None);
    }

    /// Resolves once the runner has finished: its last state reported, its container removed.
    pub fn finished(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut done = self.done.clone();
        async move {
            // An error means the runner is gone, which is finished too.
            let _ = done.wait_for(|done| *done).await;
        }
    }
}

pub fn spawn(env: NodeEnv, node_id: String, task: Task, status: mpsc::UnboundedSender<StatusUpdate>) -> RunnerHandle {
    let task_id = task.id.clone();
    let (desired, rx) = watch::channel(Some(task.clone()));
    let started_at_ms = task.status.started_at_ms;
    let runner = Runner {
        env,
        node_id,
        task,
        rx,
        status,
        state: TaskState::Assigned,
        container_id: String::new(),
        started_at_ms,
        endpoint: None,
        done: watch::channel(false).0,
    };
    let done = runner.done.subscribe();
    runtime::spawn(runner.run());
    RunnerHandle { task_id, desired, done }
}

struct Runner {
    env: NodeEnv,
    node_id: String,
    task: Task,
    rx: watch::Receiver<Option<Task>>,
    status: mpsc::UnboundedSender<StatusUpdate>,
    state: TaskState,
    container_id: String,
    /// When the container started (0 = not yet); an adopted container keeps the manager's record.
    started_at_ms: u64,
    /// Where the task is reached and whether it is in the rotation (DESIGN §8).
    endpoint: Option<crate::api::TaskEndpoint>,
    /// Set when the runner is finished (container stopped and removed); dropping it says the same.
    done: watch::Sender<bool>,
}

enum Step {
    Continue,
    /// Desired state says stop (or remove) before the container ran.
    Stop,
}

impl Runner {
    fn report(&mut self, state: TaskState, message: &str, err: &str, exit_code: Option<i64>) {
        if state < self.state {
            return;
        }
        self.state = state;
        let now = runtime::unix_millis();
        if state == TaskState::Running && self.started_at_ms == 0 {
            self.started_at_ms = now;
        }
        let status = TaskStatus {
            state,
            message: message.to_string(),
            err: err.to_string(),
            timestamp_ms: now,
            container_id: self.container_id.clone(),
            exit_code,
            started_at_ms: self.started_at_ms,
            endpoint: self.endpoint.clone(),
        };
        let _ = self.status.send(StatusUpdate { task_id: self.task.id.clone(), status });
    }

    /// Take the latest desired task; `Stop` if it should no longer run.
    fn check_desired(&mut self) -> Step {
        let latest = self.rx.borrow_and_update().clone();
        match latest {
            Some(task) => {
                let stop = task.desired_state > TaskState::Running;
                self.task = task;
                if stop {
                    Step::Stop
                } else {
                    Step::Continue
                }
            }
            None => Step::Stop,
        }
    }

    fn container_spec(&self) -> ContainerSpec {
        let spec = &self.task.spec;
        let mut command = spec.command.clone();
        command.extend(spec.args.iter().cloned());
        let labels = [
            (LABEL_NODE_ID.to_string(), self.node_id.clone()),
            (LABEL_SERVICE_ID.to_string(), self.task.service_id.clone()),
            (LABEL_SERVICE_NAME.to_string(), self.task.service_name.clone()),
            (LABEL_TASK_ID.to_string(), self.task.id.clone()),
        ];
        ContainerSpec {
            name: format!("{}.{}", self.task.name(), self.task.id),
            image: spec.image.clone(),
            command,
            env: spec.env.clone(),
            labels: labels.into_iter().collect(),
            memory_limit_bytes: (spec.resources.limits.memory_bytes > 0).then_some(spec.resources.limits.memory_bytes),
            nano_cpus: (spec.resources.limits.nano_cpus > 0).then_some(spec.resources.limits.nano_cpus),
            workdir: spec.workdir.clone(),
            user: spec.user.clone(),
            networks: Vec::new(),
            dns: Vec::new(),
            port_bindings: Vec::new(),
        }
    }

    async fn run(mut self) {
        self.state = self.task.status.state;
        let executor = self.env.executor.clone();
        let labels = [(LABEL_TASK_ID.to_string(), self.task.id.clone())];
        let existing = executor.list(&labels).await.ok().and_then(|c| c.into_iter().next());
        let mut running = false;
        if let Some(container) = existing {
            self.container_id = container.id.clone();
            match container.state {
                ContainerState::Running => running = true,
                ContainerState::Exited { code } => self.report_exit(code),
                ContainerState::Created => {}
            }
        }
        if !running && !self.state.is_terminal() {
            running = self.start().await;
        }
        if running {
            self.supervise().await;
        }
        self.finish().await;
    }

    /// Prepare, create and start the container. Returns whether it is running.
    async fn start(&mut self) -> bool {
        if matches!(self.check_desired(), Step::Stop) {
            self.report(TaskState::Shutdown, "shutdown before start", "", None);
            return false;
        }
        let executor = self.env.executor.clone();
        self.report(TaskState::Accepted, "accepted", "", None);
        self.report(TaskState::Preparing, "preparing", "", None);
        if let Err(err) = executor.prepare_image(&self.task.spec.image).await {
            self.report(TaskState::Rejected, "preparing", &err.to_string(), None);
            return false;
        }
        if self.container_id.is_empty() {
            match executor.create(&self.container_spec()).await {
                Ok(id) => self.container_id = id,
                Err(err) => {
                    self.report(TaskState::Rejected, "preparing", &err.to_string(), None);
                    return false;
                }
            }
        }
        self.report(TaskState::Ready, "prepared", "", None);
        if matches!(self.check_desired(), Step::Stop) {
            self.report(TaskState::Shutdown, "shutdown before start", "", None);
            return false;
        }
        self.report(TaskState::Starting, "starting", "", None);
        if let Err(err) = executor.start(&self.container_id).await {
            self.report(TaskState::Failed, "starting", &err.to_string(), None);
            return false;
        }
        self.report(TaskState::Running, "started", "", None);
        true
    }

    fn report_exit(&mut self, code: i64) {
        if code == 0 {
            self.report(TaskState::Complete, "finished", "", Some(code));
        } else {
            self.report(TaskState::Failed, "started", &format!("task: non-zero exit ({code})"), Some(code));
        }
    }

    /// Wait for the container to exit or for the desired state to say stop.
    async fn supervise(&mut self) {
        let executor = self.env.executor.clone();
        let container_id = self.container_id.clone();
        let wait = executor.wait(&container_id);
        tokio::pin!(wait);
        loop {
            if matches!(self.check_desired(), Step::Stop) {
                let grace = Duration::from_millis(self.task.spec.stop_grace_period_ms);
                let _ = executor.stop(&container_id, grace).await;
                self.report(TaskState::Shutdown, "shutdown", "", None);
                return;
            }
            tokio::select! {
                // Biased: tokio's random branch order is not seeded by the simulator.
                biased;
                exit = &mut wait => {
                    match exit {
                        Ok(code) => self.report_exit(code),
                        Err(err) => self.report(TaskState::Failed, "started", &format!("container vanished: {err}"), None),
                    }
                    return;
                }
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// The task is over: keep the container for `logs` until the task leaves the node, then remove it.
    async fn finish(mut self) {
        loop {
            if self.rx.borrow_and_update().is_none() {
                break;
            }
            if self.rx.changed().await.is_err() {
                break;
            }
        }
        if !self.container_id.is_empty() {
            let grace = Duration::from_millis(self.task.spec.stop_grace_period_ms);
            let _ = self.env.executor.stop(&self.container_id, grace).await;
            let _ = self.env.executor.remove(&self.container_id).await;
        }
        self.done.send_replace(true);
    }
}
