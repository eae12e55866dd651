//! The managers' side of the workers (swarmkit `manager/dispatcher`): joins, sessions, heartbeats,
//! node-down detection, assignments pushed to workers (long poll), task status coming back.
//!
//! Only the leader dispatches; a follower answers [`DispatcherError::NotLeader`] with the leader's
//! address so the agent moves there. Heartbeat period and grace are cluster settings (Swarm: 5 s × 3).

pub mod messages;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::api::{new_id, Node, NodeRole, NodeState, NodeStatus, Task, TaskState};
use crate::env::transport::Peer;
use crate::env::{runtime, Instant};
use crate::manager::Consensus;
use crate::mesh::MeshTable;
use crate::rpc::Service;
use crate::store::{propose_with_retry, Action, Object, ProposeError, Store};
use crate::trace::Tracer;

pub use messages::*;

#[derive(Debug, Clone)]
struct SessionInfo {
    session_id: String,
    last_seen: Instant,
}

/// Decides whether a join token is valid and what role it grants. The node layer implements it
/// (token secrets live in the cluster object; certificates in the real daemon).
pub trait JoinAuthority: Send + Sync + 'static {
    /// The role `token` grants, or why it is refused.
    fn check_token(&self, store: &Store, token: &str) -> Result<NodeRole, DispatcherError>;
}

/// Checks tokens against the cluster object's current join tokens.
pub struct TokenAuthority;

impl JoinAuthority for TokenAuthority {
    fn check_token(&self, store: &Store, token: &str) -> Result<NodeRole, DispatcherError> {
        let cluster = store.view(|s| s.cluster.clone()).ok_or(DispatcherError::NoLeader)?;
        crate::tokens::check(token, &cluster)
    }
}

/// The dispatcher service, one per manager.
pub struct Dispatcher {
    store: Store,
    consensus: Arc<dyn Consensus>,
    authority: Arc<dyn JoinAuthority>,
    tracer: Tracer,
    sessions: Mutex<BTreeMap<String, SessionInfo>>,
    /// Liveness loops started so far (one per period of leadership): only the latest clears the
    /// session table when it ends.
    leader_loops: AtomicU64,
    /// The manager list as of a store version: every heartbeat reply carries it, and recomputing it
    /// scans every node.
    managers: Mutex<Option<(u64, ManagerList)>>,
    /// The data plane's endpoint table, served to every node (DESIGN §8).
    mesh: Arc<MeshServing>,
    /// Opens the secrets and configs sent with assignments (`crate::secrets`); with the transport
    /// to fetch the key from another manager when this one lacks it.
    keyring: Option<(Arc<crate::secrets::Keyring>, Arc<dyn crate::env::Transport>)>,
}

/// The leader's side of the endpoint table: the table as of the latest store version (computed
/// once per version), the tables recently served (by digest), and which one each node applied.
#[derive(Default)]
struct MeshServing {
    current: Mutex<Option<(u64, u64, Arc<MeshTable>)>>,
    /// The current table's digest, kept by one refresher task per dispatcher: polls wake only
    /// when the table changed, not on every commit (a thousand polls woken per commit was most of
    /// the leader's work for assignments).
    digest: tokio::sync::watch::Sender<u64>,
    refresher: std::sync::atomic::AtomicBool,
    /// Oldest first.
    served: Mutex<indexmap::IndexMap<u64, Arc<MeshTable>>>,
    /// Which table digest each node last said it applied.
    applied: Mutex<BTreeMap<String, u64>>,
    applied_changed: tokio::sync::watch::Sender<u64>,
}

impl MeshServing {
    /// The table as of `store`'s current version (computed once per version), and its digest.
    fn table(&self, store: &Store) -> (u64, Arc<MeshTable>) {
        let version = store.version();
        let mut current = self.current.lock().expect("mesh lock");
        if let Some((at, digest, table)) = current.as_ref() {
            if *at == version {
                return (*digest, table.clone());
            }
        }
        let table = Arc::new(store.view(MeshTable::from_state));
        let digest = table.digest();
        *current = Some((version, digest, table.clone()));
        let mut served = self.served.lock().expect("mesh lock");
        served.shift_remove(&digest);
        served.insert(digest, table.clone());
        while served.len() > SERVED_TABLES_KEPT {
            served.shift_remove_index(0);
        }
        (digest, table)
    }
}

/// How many served tables the leader remembers to answer drain barriers; a node further behind
/// than that counts as not drained (until the barrier's bound).
const SERVED_TABLES_KEPT: usize = 64;

/// The managers as heartbeat replies list them.
#[derive(Debug, Clone, Default)]
struct ManagerList {
    addrs: Vec<String>,
    ids: Vec<String>,
}

impl Dispatcher {
    pub fn new(store: Store, consensus: Arc<dyn Consensus>, authority: Arc<dyn JoinAuthority>, tracer: Tracer) -> Self {
        Dispatcher {
            store,
            consensus,
            authority,
            tracer,
            sessions: Mutex::new(BTreeMap::new()),
            leader_loops: AtomicU64::new(0),
            managers: Mutex::new(None),
            mesh: Arc::new(MeshServing::default()),
            keyring: None,
        }
    }

    /// Send the secrets and configs the tasks use along with assignments, opened with `keyring`.
    pub fn with_keyring(
        mut self,
        keyring: Arc<crate::secrets::Keyring>,
        transport: Arc<dyn crate::env::Transport>,
    ) -> Self {
        self.keyring = Some((keyring, transport));
        self
    }

    /// Which secrets and configs went to a node (ids and names, never values).
    fn trace_files_sent(&self, node_id: &str, files: &[crate::api::FilePayload]) {
        let hostname = self.store.view(|s| s.nodes.get(node_id).map(|n| n.hostname().to_string())).unwrap_or_default();
        let ids: Vec<String> = files.iter().map(|f| format!("{}:{}", f.kind.as_str(), f.id)).collect();
        self.tracer.emit("secrets.sent", serde_json::json!({"node_id": node_id, "hostname": hostname, "files": ids}));
    }

    /// The opened values of the secrets and configs `tasks` use, for tasks that may still run
    /// (desired state running or before): a node gets only what its own tasks need. One that cannot
    /// be opened is left out; the task then fails with the reason (`agent::runner`).
    async fn files_for(&self, tasks: &[Task]) -> Vec<crate::api::FilePayload> {
        use crate::api::{FileKind, FilePayload};
        let mut wanted = std::collections::BTreeSet::new();
        for task in tasks.iter().filter(|t| t.desired_state <= TaskState::Running && !t.status.state.is_terminal()) {
            wanted.extend(task.spec.secrets.iter().map(|r| (FileKind::Secret, r.id.clone())));
            wanted.extend(task.spec.configs.iter().map(|r| (FileKind::Config, r.id.clone())));
        }
        if wanted.is_empty() {
            return Vec::new();
        }
        let Some((keyring, transport)) = &self.keyring else { return Vec::new() };
        let Ok(key) = keyring.ensure(&self.store, transport.as_ref()).await else {
            self.tracer
                .emit("secrets.no_key", serde_json::json!({"reason": crate::secrets::SecretsError::NoKey.to_string()}));
            return Vec::new();
        };
        type Stored = Option<(crate::api::Sealed, bool)>;
        let sealed: Vec<(FileKind, String, Stored)> = self.store.view(|s| {
            wanted
                .into_iter()
                .map(|(kind, id)| {
                    let sealed = match kind {
                        FileKind::Secret => {
                            s.secrets.get(&id).map(|o| (o.sealed.clone(), o.spec.templating == "golang"))
                        }
                        FileKind::Config => {
                            s.configs.get(&id).map(|o| (o.sealed.clone(), o.spec.templating == "golang"))
                        }
                    };
                    (kind, id, sealed)
                })
                .collect()
        });
        sealed
            .into_iter()
            .filter_map(|(kind, id, stored)| {
                let (sealed, templated) = stored?;
                let data = crate::secrets::open(&key, &id, &sealed).ok()?;
                Some(FilePayload { kind, id, data: crate::secrets::encode(&data), templated })
            })
            .collect()
    }

    /// The endpoint table as of the store's current version, and its digest.
    fn mesh_table(&self) -> (u64, Arc<MeshTable>) {
        self.mesh.table(&self.store)
    }

    /// Start the task that keeps the table's digest current (once per dispatcher).
    fn ensure_mesh_refresher(&self) {
        use std::sync::atomic::Ordering;
        if self.mesh.refresher.swap(true, Ordering::SeqCst) {
            return;
        }
        let (mesh, store) = (Arc::downgrade(&self.mesh), self.store.clone());
        runtime::spawn(async move {
            let mut versions = store.watch_version();
            loop {
                let Some(serving) = mesh.upgrade() else { return };
                let (digest, _) = serving.table(&store);
                serving.digest.send_if_modified(|current| std::mem::replace(current, digest) != digest);
                drop(serving);
                if versions.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// The mesh long poll: records what the node applied, then answers at once if the table
    /// differs from it, else when it changes, when leadership is lost, or at the deadline.
    async fn mesh_poll(&self, request: MeshRequest) -> Result<MeshResponse, DispatcherError> {
        self.check_session(&request.node_id, &request.session_id)?;
        let previous =
            self.mesh.applied.lock().expect("mesh lock").insert(request.node_id.clone(), request.known_digest);
        // Drain barriers only care when what a node applied changed.
        if previous != Some(request.known_digest) {
            self.mesh.applied_changed.send_modify(|n| *n += 1);
        }
        self.ensure_mesh_refresher();
        let deadline = runtime::sleep(Duration::from_millis(request.wait_ms.min(60_000)));
        tokio::pin!(deadline);
        let mut digests = self.mesh.digest.subscribe();
        let mut leadership = self.consensus.leadership();
        loop {
            let (digest, table) = self.mesh_table();
            if digest != request.known_digest {
                return Ok(MeshResponse { digest, table: Some((*table).clone()) });
            }
            if deadline.is_elapsed() {
                return Ok(MeshResponse { digest, table: None });
            }
            tokio::select! {
                // Biased: tokio's random branch order is not seeded by the simulator.
                biased;
                _ = &mut deadline => {}
                _ = digests.changed() => {}
                changed = leadership.changed() => {
                    if changed.is_err() {
                        return Err(self.not_leader());
                    }
                }
            }
            if !self.is_leader() {
                return Err(self.not_leader());
            }
        }
    }

    /// The nodes (with a live session, not down) whose applied table still routes to `task_id`.
    fn still_routing(&self, task_id: &str) -> Vec<String> {
        let live: Vec<String> = {
            let sessions = self.sessions.lock().expect("sessions lock");
            let down: Vec<String> = self.store.view(|s| {
                s.nodes.values().filter(|n| n.status.state == NodeState::Down).map(|n| n.id.clone()).collect()
            });
            sessions.keys().filter(|id| !down.contains(id)).cloned().collect()
        };
        let applied = self.mesh.applied.lock().expect("mesh lock");
        let served = self.mesh.served.lock().expect("mesh lock");
        live.into_iter()
            .filter(|node| match applied.get(node).and_then(|digest| served.get(digest)) {
                Some(table) => table.routes_to(task_id),
                None => true,
            })
            .collect()
    }

    /// The drain barrier: waits until no live node routes to the task any more, or `wait_ms`.
    async fn drain_barrier(&self, request: DrainRequest) -> Result<DrainResponse, DispatcherError> {
        self.check_session(&request.node_id, &request.session_id)?;
        let deadline = runtime::sleep(Duration::from_millis(request.wait_ms.min(60_000)));
        tokio::pin!(deadline);
        let mut changes = self.mesh.applied_changed.subscribe();
        loop {
            // The table as of now must not route to it either (the leader has applied the stop).
            let (_, table) = self.mesh_table();
            let waiting_for = if table.routes_to(&request.task_id) {
                vec!["(the leader's table)".to_string()]
            } else {
                self.still_routing(&request.task_id)
            };
            if waiting_for.is_empty() || deadline.is_elapsed() {
                return Ok(DrainResponse { drained: waiting_for.is_empty(), waiting_for });
            }
            tokio::select! {
                biased;
                _ = &mut deadline => {}
                _ = changes.changed() => {}
            }
        }
    }

    fn heartbeat_period(&self) -> Duration {
        let ms = self.store.view(|s| s.cluster.as_ref().map(|c| c.spec.heartbeat_period_ms)).unwrap_or(5_000);
        Duration::from_millis(ms.max(1))
    }

    fn grace(&self) -> Duration {
        let multiplier =
            self.store.view(|s| s.cluster.as_ref().map(|c| c.spec.heartbeat_grace_multiplier)).unwrap_or(3);
        self.heartbeat_period() * multiplier.max(1) as u32
    }

    fn is_leader(&self) -> bool {
        *self.consensus.leadership().borrow()
    }

    fn not_leader(&self) -> DispatcherError {
        match self.consensus.leader_addr() {
            Some(addr) => DispatcherError::NotLeader { leader_addr: addr },
            None => DispatcherError::NoLeader,
        }
    }

    /// Addresses of every manager, so agents can fail over.
    pub fn manager_addrs(&self) -> Vec<String> {
        self.manager_list().addrs
    }

    /// Every manager's address and node id.
    fn manager_list(&self) -> ManagerList {
        self.store.view(|s| {
            let mut cached = self.managers.lock().expect("managers lock");
            match &*cached {
                Some((version, list)) if *version == s.version => list.clone(),
                _ => {
                    let mut list = ManagerList::default();
                    for (node, status) in s.nodes.values().filter_map(|n| Some((n, n.manager_status.as_ref()?))) {
                        list.addrs.push(status.addr.clone());
                        list.ids.push(node.id.clone());
                    }
                    *cached = Some((s.version, list.clone()));
                    list
                }
            }
        })
    }

    fn check_session(&self, node_id: &str, session_id: &str) -> Result<(), DispatcherError> {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        match sessions.get_mut(node_id) {
            Some(info) if info.session_id == session_id => {
                info.last_seen = runtime::now();
                Ok(())
            }
            _ => Err(DispatcherError::InvalidSession),
        }
    }

    async fn propose(&self, actions: Vec<Action>) -> Result<u64, DispatcherError> {
        self.consensus.proposer().propose(actions).await.map_err(DispatcherError::from)
    }

    /// `identity` is the node id in the joiner's certificate when the transport authenticates peers
    /// (the daemon issued it with the certificate, before this join); otherwise the id is made here.
    async fn join(&self, request: JoinRequest, identity: Option<String>) -> Result<JoinResponse, DispatcherError> {
        let role = self.authority.check_token(&self.store, &request.token)?;
        let node_id = identity.unwrap_or_else(new_id);
        let raft_id = request.raft_id.filter(|_| role == NodeRole::Manager);
        if role == NodeRole::Manager && raft_id.is_none() {
            return Err(DispatcherError::Invalid("a manager join must carry the joiner's raft id".into()));
        }
        let node = Node {
            id: node_id.clone(),
            meta: Default::default(),
            spec: crate::api::NodeSpec {
                desired_role: role,
                availability: request.availability,
                labels: Default::default(),
            },
            description: request.description.clone(),
            status: NodeStatus { state: NodeState::Unknown, message: "joined".into(), addr: request.addr.clone() },
            role,
            manager_status: raft_id.map(|raft_id| crate::api::ManagerStatus { raft_id, addr: request.addr.clone() }),
        };
        if let Some(raft_id) = raft_id {
            // The joiner already serves raft; make it a voter before it is announced as a manager.
            self.consensus
                .add_manager(raft_id, request.addr.clone())
                .await
                .map_err(|e| DispatcherError::Internal(e.to_string()))?;
        }
        self.propose(vec![Action::Create(Object::Node(node))]).await?;
        self.tracer.emit("node.joined", serde_json::json!({"node_id": node_id, "role": role, "addr": request.addr}));
        let cluster_id = self.store.view(|s| s.cluster.as_ref().map(|c| c.id.clone())).unwrap_or_default();
        Ok(JoinResponse { node_id, role, cluster_id, managers: self.manager_addrs() })
    }

    async fn open_session(&self, request: SessionRequest) -> Result<SessionResponse, DispatcherError> {
        let exists = self.store.view(|s| s.nodes.contains_key(&request.node_id));
        if !exists {
            return Err(DispatcherError::UnknownNode);
        }
        let node_id = request.node_id.clone();
        let addr = request.addr.clone();
        let description = request.description.clone();
        propose_with_retry(&self.store, self.consensus.proposer().as_ref(), 5, |state| {
            let Some(node) = state.nodes.get(&node_id) else { return Ok(vec![]) };
            let mut node = node.clone();
            node.status = NodeStatus { state: NodeState::Ready, message: String::new(), addr: addr.clone() };
            // What the node reported of its TLS stays until its heartbeats say otherwise.
            let tls_info = description.tls_info.clone().or(node.description.tls_info.take());
            node.description = crate::api::NodeDescription { tls_info, ..description.clone() };
            Ok(vec![Action::Update(Object::Node(node))])
        })
        .await?;
        let session_id = new_id();
        // What the node applied under an older session (or leader) says nothing of its table
        // now: it counts as routing until its first poll of this session.
        self.mesh.applied.lock().expect("mesh lock").remove(&node_id);
        self.sessions
            .lock()
            .expect("sessions lock")
            .insert(node_id.clone(), SessionInfo { session_id: session_id.clone(), last_seen: runtime::now() });
        self.tracer.emit("node.ready", serde_json::json!({"node_id": node_id}));
        let managers = self.manager_list();
        Ok(SessionResponse {
            session_id,
            heartbeat_period_ms: self.heartbeat_period().as_millis() as u64,
            managers: managers.addrs,
            manager_ids: managers.ids,
        })
    }

    async fn heartbeat(&self, request: HeartbeatRequest) -> Result<HeartbeatResponse, DispatcherError> {
        let (desired_role, raft_id, node_version, stored_tls) = self
            .store
            .view(|s| {
                s.nodes.get(&request.node_id).map(|n| {
                    (
                        n.spec.desired_role,
                        n.manager_status.as_ref().map(|m| m.raft_id),
                        n.meta.version,
                        n.description.tls_info.clone(),
                    )
                })
            })
            .ok_or(DispatcherError::UnknownNode)?;
        self.check_session(&request.node_id, &request.session_id)?;
        // A node that renewed its certificate (or changed what it trusts) says so here; the CA
        // rotation's reconciler waits on it (`crate::ca_rotation`).
        if let Some(reported) = request.tls_info.clone().filter(|r| Some(r) != stored_tls.as_ref()) {
            let node_id = request.node_id.clone();
            propose_with_retry(&self.store, self.consensus.proposer().as_ref(), 5, |state| {
                let Some(node) = state.nodes.get(&node_id) else { return Ok(vec![]) };
                let mut node = node.clone();
                node.description.tls_info = Some(reported.clone());
                Ok(vec![Action::Update(Object::Node(node))])
            })
            .await?;
            self.tracer.emit(
                "node.tls_reported",
                serde_json::json!({"node_id": request.node_id, "cert_issuer": reported.cert_issuer}),
            );
        }
        let desired_tls = self.store.view(|s| s.cluster.as_ref().map(crate::ca_rotation::desired_tls));
        let managers = self.manager_list();
        Ok(HeartbeatResponse {
            heartbeat_period_ms: self.heartbeat_period().as_millis() as u64,
            managers: managers.addrs,
            manager_ids: managers.ids,
            desired_role,
            raft_id,
            node_version,
            desired_tls,
        })
    }

    /// The digest of `node_id`'s assignment set, without copying it (most polls only compare it).
    fn digest_for(&self, node_id: &str) -> u64 {
        self.store.view(|s| assignment_digest(assigned(s, node_id)))
    }

    fn tasks_for(&self, node_id: &str) -> (u64, Vec<Task>) {
        self.store.view(|s| {
            let tasks: Vec<Task> = assigned(s, node_id).cloned().collect();
            (assignment_digest(tasks.iter()), tasks)
        })
    }

    /// The long poll: answers at once if the node's assignment set differs from what the agent knows,
    /// else when it changes, when leadership is lost, or at the deadline. It wakes only for changes
    /// of this node's tasks: with a thousand workers polling, waking every poll on every commit
    /// (and scanning for each) was most of the leader's work.
    async fn assignments(&self, request: AssignmentsRequest) -> Result<AssignmentsResponse, DispatcherError> {
        self.check_session(&request.node_id, &request.session_id)?;
        // One timer for the whole poll, however often it wakes.
        let deadline = runtime::sleep(Duration::from_millis(request.wait_ms.min(60_000)));
        tokio::pin!(deadline);
        let mut changes = self.store.watch_node_tasks(&request.node_id);
        let mut leadership = self.consensus.leadership();
        loop {
            if self.digest_for(&request.node_id) != request.known_digest || deadline.is_elapsed() {
                let (digest, tasks) = self.tasks_for(&request.node_id);
                let files = self.files_for(&tasks).await;
                if !files.is_empty() && digest != request.known_digest {
                    self.trace_files_sent(&request.node_id, &files);
                }
                return Ok(AssignmentsResponse { digest, tasks, files });
            }
            tokio::select! {
                // Biased: tokio's random branch order is not seeded by the simulator.
                biased;
                _ = &mut deadline => {
                    let (digest, tasks) = self.tasks_for(&request.node_id);
                    let files = self.files_for(&tasks).await;
                    return Ok(AssignmentsResponse { digest, tasks, files });
                }
                _ = changes.changed() => {}
                changed = leadership.changed() => {
                    if changed.is_err() {
                        return Err(self.not_leader());
                    }
                }
            }
            if !self.is_leader() {
                return Err(self.not_leader());
            }
        }
    }

    async fn update_status(&self, request: StatusRequest) -> Result<(), DispatcherError> {
        self.check_session(&request.node_id, &request.session_id)?;
        let node_id = request.node_id.clone();
        let mut applied = Vec::new();
        propose_with_retry(&self.store, self.consensus.proposer().as_ref(), 10, |state| {
            applied.clear();
            Ok(status_actions(state, &node_id, &request.updates, &mut applied))
        })
        .await?;
        self.trace_states(&node_id, applied);
        Ok(())
    }

    fn trace_states(&self, node_id: &str, applied: Vec<(String, TaskState)>) {
        for (task_id, state) in applied {
            self.tracer.emit("task.state", serde_json::json!({"task_id": task_id, "state": state, "node_id": node_id}));
        }
    }

    async fn leave(&self, node_id: &str, statuses: &[StatusUpdate]) -> Result<(), DispatcherError> {
        self.sessions.lock().expect("sessions lock").remove(node_id);
        let node_id = node_id.to_string();
        let mut applied = Vec::new();
        propose_with_retry(&self.store, self.consensus.proposer().as_ref(), 5, |state| {
            applied.clear();
            let Some(node) = state.nodes.get(&node_id) else { return Ok(vec![]) };
            let mut node = node.clone();
            node.status.state = NodeState::Down;
            node.status.message = "node left the swarm".into();
            let mut actions = vec![Action::Update(Object::Node(node))];
            actions.extend(status_actions(state, &node_id, statuses, &mut applied));
            Ok(actions)
        })
        .await?;
        self.trace_states(&node_id, applied);
        self.tracer.emit("node.left", serde_json::json!({"node_id": node_id}));
        Ok(())
    }

    /// The leader's liveness loop: marks nodes down after `period × grace` without a heartbeat.
    /// Runs until leadership is lost or `stop` flips (the end of this period of leadership). Nodes
    /// get a fresh grace when a manager becomes leader (it has no session table yet), as swarmkit
    /// does.
    ///
    /// One loop per period of leadership, and none outliving it: a loop that decided nodes were
    /// down from a session table another loop had cleared, and proposed it as a follower, once
    /// marked three healthy managers down when its proposal committed seconds later
    /// (`t90_0849e767`). So leadership is checked again after every wait, and a proposal still in
    /// flight when leadership ends is abandoned.
    pub async fn run_leader_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let started = runtime::now();
        let generation = self.leader_loops.fetch_add(1, Ordering::Relaxed) + 1;
        let mut leadership = self.consensus.leadership();
        let leading = |leadership: &mut watch::Receiver<bool>, stop: &watch::Receiver<bool>| {
            *leadership.borrow_and_update() && !*stop.borrow()
        };
        loop {
            if !leading(&mut leadership, &stop) {
                // Sessions were opened with this leader; the next one (maybe this manager again,
                // with a newer loop that already took sessions) starts its own table.
                if self.leader_loops.load(Ordering::Relaxed) == generation {
                    self.sessions.lock().expect("sessions lock").clear();
                }
                return;
            }
            let period = self.heartbeat_period();
            tokio::select! {
                // Biased: tokio's random branch order is not seeded by the simulator.
                biased;
                _ = stop.changed() => continue,
                _ = runtime::timeout(period / 2, leadership.changed()) => {}
            }
            if !leading(&mut leadership, &stop) {
                continue;
            }
            let now = runtime::now();
            let grace = self.grace();
            let expired: Vec<String> = self.store.view(|s| {
                let sessions = self.sessions.lock().expect("sessions lock");
                s.nodes
                    .values()
                    .filter(|n| n.status.state == NodeState::Ready)
                    .filter(|n| {
                        let last = sessions.get(&n.id).map(|i| i.last_seen).unwrap_or(started);
                        now.saturating_duration_since(last.max(started)) > grace
                    })
                    .map(|n| n.id.clone())
                    .collect()
            });
            for node_id in expired {
                self.sessions.lock().expect("sessions lock").remove(&node_id);
                let proposer = self.consensus.proposer();
                let mark_down = propose_with_retry(&self.store, proposer.as_ref(), 5, |state| {
                    let Some(node) = state.nodes.get(&node_id) else { return Ok(vec![]) };
                    if node.status.state != NodeState::Ready {
                        return Ok(vec![]);
                    }
                    let mut node = node.clone();
                    node.status.state = NodeState::Down;
                    node.status.message = "heartbeat failure".into();
                    Ok(vec![Action::Update(Object::Node(node))])
                });
                let result = tokio::select! {
                    biased;
                    _ = stop.wait_for(|stop| *stop) => break,
                    result = mark_down => result,
                };
                if result.is_ok() {
                    self.tracer
                        .emit("node.down", serde_json::json!({"node_id": node_id, "reason": "heartbeat failure"}));
                }
            }
        }
    }
}

/// The task updates a node's status reports make. A task's observed state only moves forward, and
/// only its own node reports it. The first `running` report fixes when the task started
/// (`started_at_ms`); later reports that do not carry it keep it.
fn status_actions(
    state: &crate::store::StoreState,
    node_id: &str,
    updates: &[StatusUpdate],
    applied: &mut Vec<(String, TaskState)>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for update in updates {
        let Some(task) = state.tasks.get(&update.task_id) else { continue };
        if task.node_id != node_id || update.status.state < task.status.state {
            continue;
        }
        if update.status.state == task.status.state
            && update.status.container_id == task.status.container_id
            && update.status.endpoint == task.status.endpoint
            && update.status.err == task.status.err
        {
            continue;
        }
        let mut task = task.clone();
        let started_at_ms = task.status.started_at_ms;
        task.status = update.status.clone();
        if task.status.started_at_ms == 0 {
            task.status.started_at_ms = if started_at_ms > 0 {
                started_at_ms
            } else if task.status.state == TaskState::Running {
                task.status.timestamp_ms
            } else {
                0
            };
        }
        applied.push((task.id.clone(), task.status.state));
        actions.push(Action::Update(Object::Task(task)));
    }
    actions
}

/// The tasks a node is sent: every task placed on it (from `assigned` on) that the store still
/// holds, finished ones included, so that a finished task's container — and its logs — stays on the
/// node until the reaper deletes the task, as Docker keeps a history task's exited container.
fn assigned<'a>(state: &'a crate::store::StoreState, node_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
    state.tasks_on_node(node_id).filter(|t| t.status.state >= TaskState::Assigned)
}

/// A cheap fingerprint of a node's assignment set: changes whenever a task is added, removed or updated.
fn assignment_digest<'a>(tasks: impl Iterator<Item = &'a Task>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut count = 0u64;
    for task in tasks {
        count += 1;
        for byte in task.id.bytes().chain(task.meta.version.to_le_bytes()) {
            hash ^= byte as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash ^ count
}

#[async_trait]
impl Service for Dispatcher {
    type Request = DispatcherRequest;
    type Response = Result<DispatcherResponse, DispatcherError>;

    async fn call(&self, peer: Peer, request: DispatcherRequest) -> Self::Response {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        match request {
            DispatcherRequest::Join(r) => self.join(r, peer.identity).await.map(DispatcherResponse::Joined),
            DispatcherRequest::Session(r) => self.open_session(r).await.map(DispatcherResponse::Session),
            DispatcherRequest::Heartbeat(r) => self.heartbeat(r).await.map(DispatcherResponse::Heartbeat),
            DispatcherRequest::Assignments(r) => self.assignments(r).await.map(DispatcherResponse::Assignments),
            DispatcherRequest::Mesh(r) => self.mesh_poll(r).await.map(DispatcherResponse::Mesh),
            DispatcherRequest::Drain(r) => self.drain_barrier(r).await.map(DispatcherResponse::Drained),
            DispatcherRequest::UpdateStatus(r) => self.update_status(r).await.map(|_| DispatcherResponse::Ack),
            DispatcherRequest::Leave { node_id, statuses } => {
                self.leave(&node_id, &statuses).await.map(|_| DispatcherResponse::Ack)
            }
        }
    }
}

impl From<ProposeError> for DispatcherError {
    fn from(err: ProposeError) -> Self {
        match err {
            ProposeError::NoLeader => DispatcherError::NoLeader,
            ProposeError::NotLeader { leader_addr: Some(addr) } => DispatcherError::NotLeader { leader_addr: addr },
            ProposeError::NotLeader { leader_addr: None } => DispatcherError::NoLeader,
            other => DispatcherError::Internal(other.to_string()),
        }
    }
}
