//! One task's life on a node: drives the container through the executor seam and reports each
//! state, never moving the observed state backwards. A runner first looks for a container already
//! labelled with its task id (left by an agent before a restart) and adopts it instead of starting
//! a second one.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::Agent;
use crate::api::{PublishMode, Task, TaskEndpoint, TaskState, TaskStatus};
use crate::dispatcher::StatusUpdate;
use crate::env::executor::{ContainerSpec, LABEL_NODE_ID, LABEL_SERVICE_ID, LABEL_SERVICE_NAME, LABEL_TASK_ID};
use crate::env::{runtime, BridgeSpec, ContainerState, Health, NodeEnv, PortBinding};
use crate::mesh::Mesh;
use crate::template::{TaskContext, TemplateError};

/// How long a task waits for its node's lease of one of its networks before it is rejected.
const LEASE_WAIT: Duration = Duration::from_secs(30);
/// How often the readiness probe knocks on a task's ports.
const PROBE_PERIOD: Duration = Duration::from_millis(200);
/// How long a stopping task waits for every node to stop routing to it (DESIGN §8, drain).
const UNROUTE_WAIT: Duration = Duration::from_secs(5);
/// How often a health-checked container's health is read from the executor.
const HEALTH_POLL: Duration = Duration::from_millis(500);
/// The first look at which ports a routable container listens on, after it starts; the pause
/// doubles after each look up to [`LISTEN_SCAN_MAX`], and starts over when the set changed.
const LISTEN_SCAN_FIRST: Duration = Duration::from_millis(500);
const LISTEN_SCAN_MAX: Duration = Duration::from_secs(8);
/// Swarm's reason for a task whose container turned unhealthy (swarmkit's dockerexec adapter).
pub const UNHEALTHY: &str = "dockerexec: unhealthy container";

/// The agent's handle on a running runner: `None` in the channel means "remove the task".
pub struct RunnerHandle {
    task_id: String,
    desired: watch::Sender<Option<Task>>,
    done: watch::Receiver<bool>,
    /// Set when the node is about to leave: the task leaves the rotation but keeps running.
    unroute: watch::Sender<bool>,
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

    /// Take the task out of the rotation (its node is leaving the swarm); it keeps running
    /// until it is removed.
    pub fn unroute(&self) {
        self.unroute.send_replace(true);
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

pub fn spawn(
    env: NodeEnv,
    node_id: String,
    task: Task,
    status: mpsc::UnboundedSender<StatusUpdate>,
    agent: Weak<Agent>,
) -> RunnerHandle {
    let task_id = task.id.clone();
    let (desired, rx) = watch::channel(Some(task.clone()));
    let started_at_ms = task.status.started_at_ms;
    let mesh = agent.upgrade().map(|agent| agent.mesh());
    let (unroute, unroute_rx) = watch::channel(false);
    let runner = Runner {
        unroute: unroute_rx,
        env,
        agent,
        mesh,
        bridges: Vec::new(),
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
    RunnerHandle { task_id, desired, done, unroute }
}

struct Runner {
    env: NodeEnv,
    /// For the drain barrier (the agent's session with the leader).
    agent: Weak<Agent>,
    /// The node's data plane (`None` only in tests without an agent).
    mesh: Option<Arc<Mesh>>,
    /// The bridges of the task's networks on this node, once made.
    bridges: Vec<BridgeSpec>,
    /// Flipped when the node is about to leave (see [`RunnerHandle::unroute`]).
    unroute: watch::Receiver<bool>,
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
                // A job's task is desired `complete`: it runs until it exits.
                let stop = task.desired_state > TaskState::Complete;
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

    /// The task's secrets and configs as files, from the values the managers sent this node.
    fn container_files(&self) -> Result<Vec<crate::env::ContainerFile>, String> {
        use crate::api::FileKind;
        let spec = &self.task.spec;
        if spec.secrets.is_empty() && spec.configs.is_empty() {
            return Ok(Vec::new());
        }
        let agent = self.agent.upgrade().ok_or("the node's agent has stopped")?;
        let templates = TaskContext::new(&self.task, &self.node_id, &agent.description);
        let mut files = Vec::new();
        for (kind, refs) in [(FileKind::Secret, &spec.secrets), (FileKind::Config, &spec.configs)] {
            for r in refs {
                let (data, templated) = agent.file(kind, &r.id).ok_or_else(|| {
                    format!(
                        "{} {} ({}) was not sent to this node: the managers could not open it (see their \
                         secrets.no_key events) or it was removed",
                        kind.as_str(),
                        r.name,
                        r.id
                    )
                })?;
                // `--template-driver golang`: expanded for this task, as Swarm's node does.
                let data = if templated {
                    let what = if kind == FileKind::Secret { "secrets" } else { "configs" };
                    let text = String::from_utf8(data)
                        .map_err(|_| format!("{} {}: a template must be UTF-8", kind.as_str(), r.name))?;
                    templates.expand(what, &text).map_err(|e| e.to_string())?.into_bytes()
                } else {
                    data
                };
                let number = |what: &str, v: &str| {
                    v.parse::<u32>().map_err(|_| format!("{} {}: {what} {v:?} is not a number", kind.as_str(), r.name))
                };
                files.push(crate::env::ContainerFile {
                    path: r.container_path(kind),
                    uid: number("uid", &r.uid)?,
                    gid: number("gid", &r.gid)?,
                    mode: r.mode,
                    data,
                    secret: kind == FileKind::Secret,
                });
            }
        }
        Ok(files)
    }

    /// The container to make for the task, its templates (`{{.Task.Slot}}`, …) expanded for this
    /// node; a template that cannot be expanded rejects the task, as Swarm's executor does.
    fn container_spec(&self) -> Result<ContainerSpec, TemplateError> {
        let spec = &self.task.spec;
        let mut command = spec.command.clone();
        command.extend(spec.args.iter().cloned());
        let description = self.agent.upgrade().map(|agent| agent.description.clone()).unwrap_or_default();
        let templates = TaskContext::new(&self.task, &self.node_id, &description);
        let mut labels = BTreeMap::new();
        for (key, value) in &spec.container_labels {
            labels.insert(key.clone(), templates.expand("labels", value)?);
        }
        // Shoal's own labels last: a container label cannot disguise whose task a container is.
        labels.extend([
            (LABEL_NODE_ID.to_string(), self.node_id.clone()),
            (LABEL_SERVICE_ID.to_string(), self.task.service_id.clone()),
            (LABEL_SERVICE_NAME.to_string(), self.task.service_name.clone()),
            (LABEL_TASK_ID.to_string(), self.task.id.clone()),
        ]);
        Ok(ContainerSpec {
            name: format!("{}.{}", self.task.name(), self.task.id),
            image: spec.image.clone(),
            command,
            env: templates.expand_all("env", &spec.env)?,
            hostname: templates.expand("hostname", &spec.hostname)?,
            options: spec.options.clone(),
            labels,
            memory_limit_bytes: (spec.resources.limits.memory_bytes > 0).then_some(spec.resources.limits.memory_bytes),
            nano_cpus: (spec.resources.limits.nano_cpus > 0).then_some(spec.resources.limits.nano_cpus),
            workdir: spec.workdir.clone(),
            user: spec.user.clone(),
            networks: self.bridges.clone(),
            // The mesh resolver first (service names), then the user's `--dns` servers.
            dns: self
                .bridges
                .first()
                .map(|b| b.gateway.clone())
                .into_iter()
                .chain(spec.options.dns.iter().cloned())
                .collect(),
            port_bindings: self
                .task
                .ports
                .iter()
                .filter(|p| p.publish_mode == PublishMode::Host && p.published_port != 0)
                .map(|p| PortBinding {
                    protocol: p.protocol.clone(),
                    target: p.target_port,
                    host_ip: self.node_ip(),
                    published: p.published_port,
                })
                .collect(),
            mounts: spec
                .mounts
                .iter()
                .map(|mount| {
                    let mut mount = mount.clone();
                    // swarmkit's expandMounts: source, target and the volume's labels.
                    mount.source = templates.expand("mounts", &mount.source)?;
                    mount.target = templates.expand("mounts", &mount.target)?;
                    if let Some(volume) = &mut mount.volume {
                        for value in volume.labels.values_mut() {
                            *value = templates.expand("mounts", value)?;
                        }
                    }
                    Ok(mount)
                })
                .collect::<Result<_, TemplateError>>()?,
            healthcheck: spec.healthcheck.clone(),
            files: Vec::new(),
        })
    }

    fn node_ip(&self) -> String {
        self.mesh.as_ref().map(|m| m.node_ip().to_string()).unwrap_or_default()
    }

    /// Make (or find) this node's bridge of each of the task's networks.
    async fn prepare_networks(&mut self) -> Result<(), String> {
        let Some(mesh) = self.mesh.clone() else { return Ok(()) };
        // Plain processes share the host's network: they are reached at the node's address.
        if !self.env.executor.has_bridges() {
            return Ok(());
        }
        let mut bridges = Vec::new();
        for network in &self.task.networks {
            bridges.push(mesh.bridge(network, LEASE_WAIT).await?);
        }
        self.bridges = bridges;
        Ok(())
    }

    /// Where the running container is reached, and the ports it serves.
    async fn endpoint(&self) -> TaskEndpoint {
        let executor = &self.env.executor;
        let mut addresses = BTreeMap::new();
        if self.bridges.is_empty() {
            addresses.insert(String::new(), self.node_ip());
        } else if let Ok(container) = executor.inspect(&self.container_id).await {
            for bridge in &self.bridges {
                if let Some(ip) = container.addresses.get(&bridge.name) {
                    addresses.insert(bridge.network_id.clone(), ip.clone());
                }
            }
        }
        let mut ports: Vec<(String, u16)> =
            self.task.ports.iter().map(|p| (p.protocol.clone(), p.target_port)).collect();
        ports.extend(executor.exposed_ports(&self.task.spec.image).await.unwrap_or_default());
        ports.sort();
        ports.dedup();
        TaskEndpoint { addresses, ready: false, ports }
    }

    /// Make the endpoint's ports the declared ones plus the TCP ports the container listens on;
    /// whether that changed them (a port it stopped listening on goes again).
    async fn note_listening_ports(&mut self, declared: &[(String, u16)]) -> bool {
        let Ok(listening) = self.env.executor.listening_ports(&self.container_id).await else { return false };
        let Some(endpoint) = self.endpoint.as_mut() else { return false };
        let mut ports = declared.to_vec();
        ports.extend(listening.into_iter().map(|port| ("tcp".to_string(), port)));
        ports.sort();
        ports.dedup();
        if ports == endpoint.ports {
            return false;
        }
        endpoint.ports = ports;
        true
    }

    /// The ports the readiness probe knocks on: the published TCP targets, else the TCP ports the
    /// image exposes (any one answering will do then), else none (ready at once).
    fn probe_ports(&self, endpoint: &TaskEndpoint) -> (Vec<u16>, bool) {
        let published: Vec<u16> =
            self.task.ports.iter().filter(|p| p.protocol == "tcp").map(|p| p.target_port).collect();
        if !published.is_empty() {
            return (published, true);
        }
        (endpoint.ports.iter().filter(|(proto, _)| proto == "tcp").map(|(_, port)| *port).collect(), false)
    }

    /// Wait until the task accepts connections on its ports (forever: the caller races it).
    async fn until_ready(mesh: Arc<Mesh>, addr: String, ports: Vec<u16>, all: bool) {
        if ports.is_empty() {
            return;
        }
        loop {
            let mut open = 0;
            for port in &ports {
                if mesh.probe(&addr, *port).await {
                    open += 1;
                }
            }
            if (all && open == ports.len()) || (!all && open > 0) {
                return;
            }
            runtime::sleep(PROBE_PERIOD).await;
        }
    }

    /// Before the container stops: out of the rotation on every node, then its connections end
    /// (at most the stop grace period). Returns the grace left for the stop itself.
    async fn drain(&mut self, grace: Duration) {
        let Some(endpoint) = self.endpoint.as_mut().filter(|e| e.ready) else { return };
        endpoint.ready = false;
        let Some(mesh) = self.mesh.clone().filter(|mesh| mesh.options().drain) else { return };
        let started = runtime::now();
        // Our own report makes the leader drop it from the table even when the desired state has
        // not changed there (a node leaving).
        self.report(TaskState::Running, "draining", "", None);
        if let Some(agent) = self.agent.upgrade() {
            agent.await_unrouted(&self.task.id, UNROUTE_WAIT).await;
        }
        let open = mesh.wait_idle(&self.task.id, grace).await;
        self.env.tracer.emit(
            "mesh.drained",
            serde_json::json!({
                "task_id": self.task.id,
                "open_connections": open,
                "ms": runtime::now().duration_since(started).as_millis() as u64,
            }),
        );
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
        if let Err(err) = executor.prepare_image(&self.task.spec.image, self.task.spec.registry_auth.as_deref()).await {
            self.report(TaskState::Rejected, "preparing", &err.to_string(), None);
            return false;
        }
        if let Err(err) = self.prepare_networks().await {
            self.report(TaskState::Rejected, "preparing", &err, None);
            return false;
        }
        if self.container_id.is_empty() {
            let spec = match self.container_spec() {
                Ok(spec) => spec,
                Err(err) => {
                    self.report(TaskState::Rejected, "preparing", &err.to_string(), None);
                    return false;
                }
            };
            let mut spec = spec;
            match self.container_files() {
                Ok(files) => {
                    if !files.is_empty() {
                        // Where the files go, never what they hold.
                        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
                        self.env
                            .tracer
                            .emit("task.files", serde_json::json!({"task_id": self.task.id, "paths": paths}));
                    }
                    spec.files = files
                }
                Err(err) => {
                    self.report(TaskState::Rejected, "preparing", &err, None);
                    return false;
                }
            }
            match executor.create(&spec).await {
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
        // A container with a health check stays `starting` until it is healthy (`supervise`).
        let checked = executor.inspect(&self.container_id).await.is_ok_and(|c| c.health.is_some());
        if !checked {
            self.report(TaskState::Running, "started", "", None);
        }
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
        // The data plane: a task with ports or networks enters the rotation once it accepts
        // connections. An adopted container finds its bridges again first.
        let routable = self.mesh.is_some() && (!self.task.networks.is_empty() || !self.task.ports.is_empty());
        let mut probe: Option<(Arc<Mesh>, String, Vec<u16>, bool)> = None;
        // The ports the task declares (published targets, EXPOSE); what it listens on is added.
        let mut declared_ports = Vec::new();
        if routable {
            if self.bridges.len() != self.task.networks.len() && self.env.executor.has_bridges() {
                let _ = self.prepare_networks().await;
            }
            let endpoint = self.endpoint().await;
            let (ports, all) = self.probe_ports(&endpoint);
            let addr = endpoint.addresses.values().next().cloned().unwrap_or_default();
            declared_ports = endpoint.ports.clone();
            self.endpoint = Some(endpoint);
            probe = self.mesh.clone().map(|mesh| (mesh, addr, ports, all));
        }
        let ready = async move {
            match probe {
                Some((mesh, addr, ports, all)) => Self::until_ready(mesh, addr, ports, all).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(ready);
        // Health: a health-checked container is polled; until it is healthy the task stays
        // `starting` and out of the rotation, and once unhealthy it is stopped and fails.
        let health_checked = executor.inspect(&container_id).await.is_ok_and(|c| c.health.is_some());
        let mut healthy = self.state >= TaskState::Running;
        let mut health_poll = runtime::sleep(HEALTH_POLL);
        let mut probing = routable && healthy;
        let mut leaving = false;
        // An ingress port of this task's service that this node could not open is the task's
        // error here (it still runs and serves through the other nodes).
        let mut ingress_errors = self.mesh.as_ref().filter(|_| routable).map(|mesh| {
            let mut errors = mesh.ingress_errors();
            errors.mark_changed();
            errors
        });
        let mut port_error = String::new();
        // Only a container with a network namespace of its own has ports that are its alone.
        let scanning = routable && self.env.executor.has_bridges();
        let mut listen_scan_pause = LISTEN_SCAN_FIRST;
        let mut listen_scan = runtime::sleep(listen_scan_pause);
        loop {
            if matches!(self.check_desired(), Step::Stop) {
                let grace = Duration::from_millis(self.task.spec.stop_grace_period_ms);
                self.drain(grace).await;
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
                _ = &mut health_poll, if health_checked => {
                    health_poll = runtime::sleep(HEALTH_POLL);
                    match executor.inspect(&container_id).await.ok().and_then(|c| c.health) {
                        Some(Health::Healthy) if !healthy => {
                            healthy = true;
                            probing = routable;
                            self.report(TaskState::Running, "started", &port_error, None);
                        }
                        Some(Health::Unhealthy) => {
                            // As swarmkit: stop the container, then fail with its exit code.
                            let grace = Duration::from_millis(self.task.spec.stop_grace_period_ms);
                            self.drain(grace).await;
                            let _ = executor.stop(&container_id, grace).await;
                            let code = (&mut wait).await.ok();
                            let err = match code {
                                Some(code) if code != 0 => format!("task: non-zero exit ({code}): {UNHEALTHY}"),
                                _ => UNHEALTHY.to_string(),
                            };
                            self.report(TaskState::Failed, "started", &err, code);
                            return;
                        }
                        _ => {}
                    }
                }
                _ = &mut listen_scan, if scanning => {
                    if self.note_listening_ports(&declared_ports).await {
                        listen_scan_pause = LISTEN_SCAN_FIRST;
                        if healthy {
                            self.report(TaskState::Running, "started", &port_error, None);
                        }
                    } else {
                        listen_scan_pause = (listen_scan_pause * 2).min(LISTEN_SCAN_MAX);
                    }
                    listen_scan = runtime::sleep(listen_scan_pause);
                }
                _ = &mut ready, if probing => {
                    probing = false;
                    if let Some(endpoint) = self.endpoint.as_mut() {
                        endpoint.ready = true;
                    }
                    self.report(TaskState::Running, "started", &port_error, None);
                }
                changed = async { ingress_errors.as_mut().expect("guarded").changed().await }, if ingress_errors.is_some() => {
                    if changed.is_err() {
                        ingress_errors = None;
                        continue;
                    }
                    let errors = ingress_errors.as_mut().expect("guarded").borrow_and_update().clone();
                    let error = self
                        .task
                        .ports
                        .iter()
                        .filter(|p| p.publish_mode == PublishMode::Ingress)
                        .find_map(|p| errors.get(&p.published_port).cloned())
                        .unwrap_or_default();
                    if error != port_error {
                        port_error = error;
                        if healthy {
                            self.report(TaskState::Running, "started", &port_error, None);
                        }
                    }
                }
                changed = self.unroute.changed(), if !leaving => {
                    leaving = true;
                    if changed.is_ok() && *self.unroute.borrow() {
                        probing = false;
                        if let Some(endpoint) = self.endpoint.as_mut().filter(|e| e.ready) {
                            endpoint.ready = false;
                            self.report(TaskState::Running, "leaving the rotation", "", None);
                        }
                    }
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
