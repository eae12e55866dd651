//! The worker side (swarmkit `agent/`): holds a session with the leader's dispatcher, receives the
//! node's assignments, runs each task through the executor seam (prepare → create → start → wait →
//! stop → remove), reports every state change, and fails over to another manager when its manager
//! goes away. Every node runs one, managers included (Swarm's managers are workers too).

mod runner;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::api::{NodeDescription, NodeRole, NodeTlsInfo, Task, TaskStatus};
use crate::auth::KnownManagers;
use crate::dispatcher::{
    AssignmentsRequest, DispatcherError, DispatcherRequest, DispatcherResponse, DrainRequest, HeartbeatRequest,
    MeshRequest, SessionRequest, StatusRequest, StatusUpdate,
};
use crate::env::executor::LABEL_NODE_ID;
use crate::env::{runtime, NodeEnv};
use crate::mesh::Mesh;
use crate::rpc::{self, CallError, Channel};

/// What the agent learned about its own role from the leader (promotion/demotion are carried out by
/// the node layer, which watches this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleHint {
    pub desired_role: NodeRole,
    pub raft_id: Option<u64>,
    /// The version of the node object the hint comes from (newer hints win).
    pub version: u64,
}

/// Why the agent stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentExit {
    /// The node was removed from the swarm (`node rm`).
    Removed,
    /// The node left the swarm (`swarm leave`).
    Left,
}

/// A secret's or config's value on this node, and whether it is a `golang` template.
type NodeFile = (Vec<u8>, bool);

/// Shared state of one node's agent.
pub struct Agent {
    env: NodeEnv,
    node_id: String,
    description: NodeDescription,
    /// The managers' addresses, from session and heartbeat replies (and, on a manager, from its own
    /// store: see [`Agent::set_managers`]).
    managers: watch::Sender<Vec<String>>,
    /// The managers' node ids, for the gate in front of this node's logs.
    known_managers: KnownManagers,
    preferred: Mutex<Option<String>>,
    role: watch::Sender<Option<RoleHint>>,
    runners: Mutex<BTreeMap<String, runner::RunnerHandle>>,
    status_tx: mpsc::UnboundedSender<StatusUpdate>,
    status_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<StatusUpdate>>,
    /// Statuses not yet acknowledged by a manager, latest per task.
    unsent: Mutex<BTreeMap<String, TaskStatus>>,
    /// Set by `swarm leave`: the agent stops for good and never opens another session.
    left: watch::Sender<bool>,
    /// The open session: (manager address, session id). `swarm leave` reports through it.
    session: Mutex<Option<(String, String)>>,
    /// Sessions opened so far (a failed attempt opens none).
    sessions_opened: AtomicU64,
    /// The heartbeat period the managers last gave, in ms (Swarm's 5 s until a session says).
    heartbeat_period_ms: AtomicU64,
    /// Managers that could not be reached (or served no agents), with when: tried last.
    unreachable: Mutex<BTreeMap<String, runtime::Instant>>,
    /// This node's data plane, fed the endpoint table by the session.
    mesh: Arc<Mesh>,
    /// The values of the secrets and configs this node's tasks use, as the last assignments sent
    /// them (memory only; replaced by each set, so a value no task needs any more is dropped).
    files: Mutex<BTreeMap<(crate::api::FileKind, String), NodeFile>>,
    /// What this node's TLS holds, as the daemon (or, in the simulator, the node) last reported
    /// it; sent with every heartbeat (the CA rotation waits on it).
    tls_info: Mutex<Option<NodeTlsInfo>>,
    /// What the managers say this node's TLS should hold (from heartbeat replies).
    desired_tls: watch::Sender<Option<NodeTlsInfo>>,
}

fn call_deadline() -> Duration {
    Duration::from_secs(5)
}

/// The first wait before opening a session again after one failed or ended (Swarm's 100 ms).
const FIRST_RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a manager that could not be reached (or does not serve agents) is tried only when
/// every other one failed too.
const UNREACHABLE_FOR: Duration = Duration::from_secs(30);

/// The longest wait between attempts to open a session, and never more than one heartbeat period:
/// a new leader gives every node `period × grace multiplier` (3 periods) to open a session before
/// it marks the node down, so an agent that backed off for longer while the swarm had no leader
/// would be marked down — and its tasks replaced — though it was healthy all along.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);

impl Agent {
    pub fn new(
        env: NodeEnv,
        node_id: String,
        description: NodeDescription,
        managers: Vec<String>,
        known_managers: KnownManagers,
        mesh_options: crate::mesh::MeshOptions,
    ) -> Arc<Self> {
        let (status_tx, status_rx) = mpsc::unbounded_channel();
        let (role, _) = watch::channel(None);
        let mesh = Mesh::new(env.clone(), node_id.clone(), mesh_options);
        Arc::new(Agent {
            mesh,
            env,
            node_id,
            description,
            managers: watch::channel(managers).0,
            known_managers,
            preferred: Mutex::new(None),
            role,
            runners: Mutex::new(BTreeMap::new()),
            status_tx,
            status_rx: tokio::sync::Mutex::new(status_rx),
            unsent: Mutex::new(BTreeMap::new()),
            left: watch::channel(false).0,
            session: Mutex::new(None),
            sessions_opened: AtomicU64::new(0),
            heartbeat_period_ms: AtomicU64::new(crate::api::ClusterSpec::default().heartbeat_period_ms),
            unreachable: Mutex::new(BTreeMap::new()),
            files: Mutex::new(BTreeMap::new()),
            tls_info: Mutex::new(None),
            desired_tls: watch::channel(None).0,
        })
    }

    /// Record what this node's TLS holds now (its certificate's issuer and the roots it trusts);
    /// the next heartbeat tells the leader. The daemon calls it after every renewal; in the
    /// simulator the node calls it with what the managers asked for (a "renewal").
    pub fn report_tls(&self, info: NodeTlsInfo) {
        *self.tls_info.lock().expect("agent lock") = Some(info);
    }

    /// What this node last reported of its TLS.
    pub fn reported_tls(&self) -> Option<NodeTlsInfo> {
        self.tls_info.lock().expect("agent lock").clone()
    }

    /// What the managers say this node's TLS should hold; a node holding something else renews.
    pub fn desired_tls(&self) -> watch::Receiver<Option<NodeTlsInfo>> {
        self.desired_tls.subscribe()
    }

    /// The value of a secret or config one of this node's tasks uses, if the managers sent it.
    /// With whether it is a `golang` template the node expands.
    pub(crate) fn file(&self, kind: crate::api::FileKind, id: &str) -> Option<(Vec<u8>, bool)> {
        self.files.lock().expect("agent lock").get(&(kind, id.to_string())).cloned()
    }

    /// This node's data plane.
    pub fn mesh(&self) -> Arc<Mesh> {
        self.mesh.clone()
    }

    /// The drain barrier (DESIGN §8): wait until no live node routes to `task_id`, at most
    /// `limit`. False when it could not be confirmed (no session, the bound passed).
    pub async fn await_unrouted(&self, task_id: &str, limit: Duration) -> bool {
        let Some((manager, session_id)) = self.session.lock().expect("agent lock").clone() else { return false };
        let request = DrainRequest {
            node_id: self.node_id.clone(),
            session_id,
            task_id: task_id.to_string(),
            wait_ms: limit.as_millis() as u64,
        };
        // Bounded here too: a session to a manager that is gone must not hold a stop for the
        // call's own (longer) deadline.
        match runtime::timeout(limit + Duration::from_secs(1), self.call(&manager, DispatcherRequest::Drain(request)))
            .await
        {
            Ok(Ok(DispatcherResponse::Drained(reply))) => {
                if !reply.drained {
                    self.env.tracer.emit(
                        "mesh.drain_unconfirmed",
                        serde_json::json!({"task_id": task_id, "waiting_for": reply.waiting_for}),
                    );
                }
                reply.drained
            }
            _ => false,
        }
    }

    /// Role hints from the leader's heartbeat replies.
    pub fn role_hints(&self) -> watch::Receiver<Option<RoleHint>> {
        self.role.subscribe()
    }

    /// The managers this agent knows of (for `swarm leave` and the node's identity file).
    pub fn managers(&self) -> Vec<String> {
        self.managers.borrow().clone()
    }

    /// Watch the managers this agent knows of (the node keeps its identity file up to date with it).
    pub fn watch_managers(&self) -> watch::Receiver<Vec<String>> {
        self.managers.subscribe()
    }

    /// Replace the managers this agent knows of. Heartbeat replies do it; so does a manager node
    /// from its own store, so that once it is demoted its agent knows where the other managers are
    /// even if no heartbeat told it yet (a manager's agent talks to the leader, often itself).
    pub fn set_managers(&self, managers: Vec<String>) {
        if managers.is_empty() {
            return;
        }
        self.managers.send_if_modified(|current| {
            let changed = *current != managers;
            *current = managers;
            changed
        });
    }

    async fn call(&self, addr: &str, request: DispatcherRequest) -> Result<DispatcherResponse, SessionError> {
        self.call_within(addr, request, call_deadline() * 3).await
    }

    async fn call_within(
        &self,
        addr: &str,
        request: DispatcherRequest,
        deadline: Duration,
    ) -> Result<DispatcherResponse, SessionError> {
        let reply: Result<DispatcherResponse, DispatcherError> =
            rpc::call(self.env.transport.as_ref(), addr, Channel::Dispatcher, &request, deadline).await?;
        reply.map_err(SessionError::Dispatcher)
    }

    /// The deadline of a session's opening and of each heartbeat: one heartbeat period, between 1 s
    /// and 5 s (swarmkit's `dispatcherRPCTimeout`, its period by default). A new leader gives a node
    /// three periods to open a session; a call to a manager across a cut must not use them all up.
    fn session_deadline(&self) -> Duration {
        Duration::from_millis(self.heartbeat_period_ms.load(Ordering::Relaxed))
            .clamp(Duration::from_secs(1), call_deadline())
    }

    /// The manager to open the next session with: the one a manager named as leader, else the next
    /// in turn, passing over those that could not be reached lately while others remain (swarmkit
    /// weighs its remotes down on failure likewise).
    fn next_manager(&self, attempt: usize) -> Option<String> {
        if let Some(addr) = self.preferred.lock().expect("agent lock").take() {
            return Some(addr);
        }
        let managers = self.managers.borrow();
        if managers.is_empty() {
            return None;
        }
        let unreachable = self.unreachable.lock().expect("agent lock");
        let now = runtime::now();
        let failed_at = |addr: &String| {
            unreachable.get(addr).copied().filter(|at| now.saturating_duration_since(*at) < UNREACHABLE_FOR)
        };
        let in_turn = (0..managers.len()).map(|i| &managers[(attempt + i) % managers.len()]);
        let pick = match in_turn.clone().find(|addr| failed_at(addr).is_none()) {
            Some(addr) => addr,
            // All failed lately: the one that failed longest ago.
            None => in_turn.min_by_key(|addr| failed_at(addr)).expect("managers is not empty"),
        };
        Some(pick.clone())
    }

    /// Run until the node is removed from the swarm. Reconnects forever otherwise.
    pub async fn run(self: Arc<Self>) -> AgentExit {
        let mut left = self.left.subscribe();
        tokio::select! {
            // Biased: tokio's random branch order is not seeded by the simulator.
            biased;
            _ = left.wait_for(|left| *left) => AgentExit::Left,
            exit = self.clone().run_sessions() => exit,
        }
    }

    async fn run_sessions(self: Arc<Self>) -> AgentExit {
        self.mesh.start().await;
        self.adopt_containers().await;
        let mut attempt = 0usize;
        let mut backoff = FIRST_RECONNECT_BACKOFF;
        loop {
            let Some(manager) = self.next_manager(attempt) else {
                runtime::sleep(backoff).await;
                continue;
            };
            attempt += 1;
            let opened = self.sessions_opened.load(Ordering::Relaxed);
            let result = self.clone().session(&manager).await;
            if self.sessions_opened.load(Ordering::Relaxed) != opened {
                // A session was open: the failures before it say nothing about the next attempt
                // (Swarm resets its back-off once registered).
                backoff = FIRST_RECONNECT_BACKOFF;
            }
            match &result {
                // No answer, or no dispatcher there: try the others first for a while.
                Err(SessionError::Call(_)) => {
                    self.unreachable.lock().expect("agent lock").insert(manager.clone(), runtime::now());
                }
                _ => {
                    self.unreachable.lock().expect("agent lock").remove(&manager);
                }
            }
            match result {
                Err(SessionError::Dispatcher(DispatcherError::UnknownNode)) => {
                    self.env.tracer.emit("agent.removed", serde_json::json!({"node_id": self.node_id}));
                    self.shutdown_all_tasks().await;
                    self.mesh.shutdown().await;
                    return AgentExit::Removed;
                }
                // A leader that lost its quorum names itself: back off like any failure instead.
                Err(SessionError::Dispatcher(DispatcherError::NotLeader { leader_addr })) if leader_addr != manager => {
                    *self.preferred.lock().expect("agent lock") = Some(leader_addr);
                    backoff = FIRST_RECONNECT_BACKOFF;
                    continue;
                }
                Err(err) => {
                    self.env
                        .tracer
                        .emit("agent.session_lost", serde_json::json!({"manager": manager, "error": err.to_string()}));
                }
                Ok(()) => {}
            }
            // Swarm reconnects after 100 ms, doubling up to 8 s (its heartbeat period is 5 s); jitter
            // keeps 1,000 agents from stampeding a new leader.
            runtime::sleep(runtime::random_duration(backoff / 2, backoff)).await;
            let period = Duration::from_millis(self.heartbeat_period_ms.load(Ordering::Relaxed));
            backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF.min(period));
        }
    }

    async fn session(self: Arc<Self>, manager: &str) -> Result<(), SessionError> {
        let request = SessionRequest {
            node_id: self.node_id.clone(),
            addr: self.env.addr.clone(),
            description: self.description.clone(),
        };
        let deadline = self.session_deadline();
        let DispatcherResponse::Session(session) =
            self.call_within(manager, DispatcherRequest::Session(request), deadline).await?
        else {
            return Err(SessionError::Protocol("expected a session"));
        };
        self.set_managers(session.managers.clone());
        self.known_managers.replace(&session.manager_ids);
        self.env.tracer.emit("agent.session", serde_json::json!({"manager": manager}));
        let period = Duration::from_millis(session.heartbeat_period_ms.max(1));
        self.heartbeat_period_ms.store(period.as_millis() as u64, Ordering::Relaxed);
        let session_id = session.session_id;
        *self.session.lock().expect("agent lock") = Some((manager.to_string(), session_id.clone()));
        self.sessions_opened.fetch_add(1, Ordering::Relaxed);
        // Three loops share the session; the first to fail ends it.
        tokio::select! {
            // Biased: tokio's random branch order is not seeded by the simulator.
            biased;
            result = self.heartbeat_loop(manager, &session_id, period) => result,
            result = self.assignments_loop(manager, &session_id, period) => result,
            result = self.status_loop(manager, &session_id) => result,
            result = self.mesh_loop(manager, &session_id) => result,
        }
    }

    /// Keep the data plane's endpoint table current (a long poll like assignments); each poll
    /// tells the leader which table this node applied, which the drain barrier waits on.
    ///
    /// The poll waits up to 30 s for a change (the heartbeats, not this poll, notice a manager that
    /// is gone): a thousand idle nodes re-polling every heartbeat period added half again to the
    /// simulator's steady-state messages.
    async fn mesh_loop(&self, manager: &str, session_id: &str) -> Result<(), SessionError> {
        const MESH_POLL_WAIT: Duration = Duration::from_secs(30);
        let mut digest = 0u64;
        loop {
            let request = MeshRequest {
                node_id: self.node_id.clone(),
                session_id: session_id.to_string(),
                known_digest: digest,
                wait_ms: MESH_POLL_WAIT.as_millis() as u64,
            };
            let reply: Result<DispatcherResponse, DispatcherError> = rpc::call(
                self.env.transport.as_ref(),
                manager,
                Channel::Dispatcher,
                &DispatcherRequest::Mesh(request),
                MESH_POLL_WAIT + call_deadline(),
            )
            .await?;
            let DispatcherResponse::Mesh(reply) = reply.map_err(SessionError::Dispatcher)? else {
                return Err(SessionError::Protocol("expected the endpoint table"));
            };
            if let Some(table) = reply.table.filter(|_| reply.digest != digest) {
                self.mesh.apply(table).await;
                digest = reply.digest;
            }
        }
    }

    async fn heartbeat_loop(&self, manager: &str, session_id: &str, mut period: Duration) -> Result<(), SessionError> {
        loop {
            // Swarm jitters the period by ±epsilon so heartbeats spread out.
            runtime::sleep(runtime::random_duration(period.mul_f64(0.9), period)).await;
            let request = HeartbeatRequest {
                node_id: self.node_id.clone(),
                session_id: session_id.to_string(),
                tls_info: self.reported_tls(),
            };
            let DispatcherResponse::Heartbeat(reply) =
                self.call_within(manager, DispatcherRequest::Heartbeat(request), self.session_deadline()).await?
            else {
                return Err(SessionError::Protocol("expected a heartbeat reply"));
            };
            period = Duration::from_millis(reply.heartbeat_period_ms.max(1));
            self.heartbeat_period_ms.store(period.as_millis() as u64, Ordering::Relaxed);
            self.set_managers(reply.managers);
            self.known_managers.replace(&reply.manager_ids);
            let hint = Some(RoleHint {
                desired_role: reply.desired_role,
                raft_id: reply.raft_id,
                version: reply.node_version,
            });
            self.role.send_if_modified(|current| {
                let changed = *current != hint;
                *current = hint;
                changed
            });
            if let Some(desired) = reply.desired_tls {
                self.desired_tls.send_if_modified(|current| {
                    let changed = current.as_ref() != Some(&desired);
                    *current = Some(desired);
                    changed
                });
            }
        }
    }

    async fn assignments_loop(
        self: &Arc<Self>,
        manager: &str,
        session_id: &str,
        period: Duration,
    ) -> Result<(), SessionError> {
        let mut digest = 0u64;
        let mut first = true;
        loop {
            let request = AssignmentsRequest {
                node_id: self.node_id.clone(),
                session_id: session_id.to_string(),
                known_digest: if first { u64::MAX } else { digest },
                wait_ms: period.as_millis() as u64,
            };
            let DispatcherResponse::Assignments(reply) =
                self.call(manager, DispatcherRequest::Assignments(request)).await?
            else {
                return Err(SessionError::Protocol("expected assignments"));
            };
            first = false;
            if reply.digest != digest || reply.tasks.is_empty() {
                digest = reply.digest;
                let files = reply
                    .files
                    .iter()
                    .filter_map(|p| Some(((p.kind, p.id.clone()), (crate::secrets::decode(&p.data)?, p.templated))))
                    .collect();
                *self.files.lock().expect("agent lock") = files;
                self.reconcile(reply.tasks).await;
            }
        }
    }

    async fn status_loop(&self, manager: &str, session_id: &str) -> Result<(), SessionError> {
        let mut rx = self.status_rx.lock().await;
        loop {
            {
                let mut unsent = self.unsent.lock().expect("agent lock");
                while let Ok(update) = rx.try_recv() {
                    unsent.insert(update.task_id, update.status);
                }
            }
            let batch: Vec<StatusUpdate> = self
                .unsent
                .lock()
                .expect("agent lock")
                .iter()
                .map(|(task_id, status)| StatusUpdate { task_id: task_id.clone(), status: status.clone() })
                .collect();
            if !batch.is_empty() {
                let request = StatusRequest {
                    node_id: self.node_id.clone(),
                    session_id: session_id.to_string(),
                    updates: batch.clone(),
                };
                self.call(manager, DispatcherRequest::UpdateStatus(request)).await?;
                let mut unsent = self.unsent.lock().expect("agent lock");
                for sent in batch {
                    if unsent.get(&sent.task_id) == Some(&sent.status) {
                        unsent.remove(&sent.task_id);
                    }
                }
                continue;
            }
            match rx.recv().await {
                Some(update) => {
                    self.unsent.lock().expect("agent lock").insert(update.task_id, update.status);
                    // Let a burst of changes collect into one report.
                    runtime::sleep(Duration::from_millis(10)).await;
                }
                None => return Err(SessionError::Protocol("status channel closed")),
            }
        }
    }

    /// Bring the runners in line with the assignment set.
    async fn reconcile(self: &Arc<Self>, tasks: Vec<Task>) {
        let assigned: BTreeSet<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let mut runners = self.runners.lock().expect("agent lock");
        for task in tasks {
            match runners.get(&task.id) {
                Some(handle) => handle.update(task),
                None => {
                    // A finished task gets a runner too: it keeps (or, after a restart, adopts) the
                    // exited container for `service logs`, and removes it when the task is deleted.
                    let handle = runner::spawn(
                        self.env.clone(),
                        self.node_id.clone(),
                        task,
                        self.status_tx.clone(),
                        Arc::downgrade(self),
                    );
                    runners.insert(handle.task_id().to_string(), handle);
                }
            }
        }
        // Tasks that left the set are removed from the node.
        let gone: Vec<String> = runners.keys().filter(|id| !assigned.contains(*id)).cloned().collect();
        for id in gone {
            if let Some(handle) = runners.remove(&id) {
                handle.remove();
            }
        }
    }

    /// After a restart: containers of tasks this node no longer knows are removed once the first
    /// assignment set arrives; containers of known tasks are re-adopted by their runners (they look
    /// containers up by task label before creating one).
    async fn adopt_containers(&self) {
        let labels = [(LABEL_NODE_ID.to_string(), self.node_id.clone())];
        if let Ok(containers) = self.env.executor.list(&labels).await {
            self.env.tracer.emit("agent.adopt", serde_json::json!({"containers": containers.len()}));
        }
    }

    async fn shutdown_all_tasks(&self) {
        let runners = std::mem::take(&mut *self.runners.lock().expect("agent lock"));
        for (_, handle) in runners {
            handle.remove();
        }
        // Containers of this node that no runner owns any more.
        let labels = [(LABEL_NODE_ID.to_string(), self.node_id.clone())];
        if let Ok(containers) = self.env.executor.list(&labels).await {
            for container in containers {
                let _ = self.env.executor.stop(&container.id, Duration::from_secs(10)).await;
                let _ = self.env.executor.remove(&container.id).await;
            }
        }
    }

    /// `swarm leave`: stop every task, then tell the leader — with the tasks' final states, so it
    /// does not keep them `running` on a node that left — and remove what containers remain.
    ///
    /// Stopping first and reporting in the `Leave` request (one proposal on the leader: the node goes
    /// down and its tasks `shutdown` together) means no replacement is ever placed on this node in
    /// between, as could happen if the reports raced the node going down.
    pub async fn leave(&self) {
        self.unroute_all().await;
        // Ends the session loops (and with them the status loop, which frees the status channel).
        self.left.send_replace(true);
        let runners: Vec<runner::RunnerHandle> =
            std::mem::take(&mut *self.runners.lock().expect("agent lock")).into_values().collect();
        let mut finished = Vec::with_capacity(runners.len());
        for handle in &runners {
            handle.remove();
            finished.push(handle.finished());
        }
        // Each runner stops its container within the task's grace period; do not wait forever for
        // an executor that hangs.
        let _ = runtime::timeout(leave_stop_timeout(), futures_join_all(finished)).await;
        let statuses = self.take_unsent().await;
        let session = self.session.lock().expect("agent lock").clone();
        let mut targets: Vec<String> = session.iter().map(|(manager, _)| manager.clone()).collect();
        targets.extend(self.managers());
        let mut tried = BTreeSet::new();
        while let Some(manager) = targets.first().cloned() {
            targets.remove(0);
            if !tried.insert(manager.clone()) {
                continue;
            }
            let request = DispatcherRequest::Leave { node_id: self.node_id.clone(), statuses: statuses.clone() };
            match self.call(&manager, request).await {
                Ok(_) => break,
                // Straight to the leader: a follower's dispatcher does not take the report.
                Err(SessionError::Dispatcher(DispatcherError::NotLeader { leader_addr })) => {
                    targets.insert(0, leader_addr)
                }
                Err(err) => self
                    .env
                    .tracer
                    .emit("agent.leave_failed", serde_json::json!({"manager": manager, "error": err.to_string()})),
            }
        }
        self.shutdown_all_tasks().await;
        self.mesh.shutdown().await;
    }

    /// Before the node leaves: its tasks leave the rotation on every node and their connections
    /// end (bounded), while the session still carries the reports (DESIGN §8, drain).
    async fn unroute_all(&self) {
        if !self.mesh.options().drain {
            return;
        }
        let routed: Vec<String> = {
            let table = self.mesh.table();
            let runners = self.runners.lock().expect("agent lock");
            runners
                .values()
                .filter(|handle| table.routes_to(handle.task_id()))
                .map(|handle| {
                    handle.unroute();
                    handle.task_id().to_string()
                })
                .collect()
        };
        for task_id in &routed {
            // One wait covers them all: the reports travel together.
            if !self.await_unrouted(task_id, Duration::from_secs(5)).await {
                break;
            }
        }
        // Swarm's default stop grace period, for all of them together.
        let deadline = runtime::now() + Duration::from_secs(10);
        for task_id in &routed {
            let left = deadline.saturating_duration_since(runtime::now());
            self.mesh.wait_idle(task_id, left).await;
        }
    }

    /// Every status not yet acknowledged by a manager, latest per task.
    async fn take_unsent(&self) -> Vec<StatusUpdate> {
        let mut rx = self.status_rx.lock().await;
        let mut unsent = self.unsent.lock().expect("agent lock");
        while let Ok(update) = rx.try_recv() {
            unsent.insert(update.task_id, update.status);
        }
        std::mem::take(&mut *unsent).into_iter().map(|(task_id, status)| StatusUpdate { task_id, status }).collect()
    }
}

/// How long `swarm leave` waits for the tasks to stop: Swarm's default stop grace period, and a
/// margin for removing the containers.
fn leave_stop_timeout() -> Duration {
    Duration::from_secs(15)
}

/// Wait for all of `futures` (in order; they run concurrently anyway, being spawned runners).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    for future in futures {
        future.await;
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Dispatcher(DispatcherError),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}
