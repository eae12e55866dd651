//! One shoal node — what a daemon runs on a host and what the simulator runs per simulated host:
//! the agent always, and on managers the raft replica, the dispatcher, the control API and (on the
//! leader) the orchestrator and scheduler. Everything comes in through one [`NodeEnv`].
//!
//! The node keeps its identity (`node.json`: id, role, raft id, known managers) on the disk seam so a
//! restart resumes where it stopped; raft keeps its own files beside it (`raft/…`).
//!
//! Role changes come from the leader, in heartbeat replies ([`RoleHint`]), and are applied one at a
//! time, in the order of the node object's versions, whatever their timing: a node runs at most one
//! raft replica, under the raft id its node object names; a new raft id starts on a clean raft
//! directory, and a demoted node clears its raft files (as swarmkit does). While it is a manager the
//! node also tells its agent the managers its store knows, and it keeps the known managers in
//! `node.json`, so a demoted manager — `swarm init`'s node included — finds the others, also after
//! a restart.
//!
//! When raft stops on its own (a write to the raft log or vote failed: the disk is full or broken),
//! the manager steps down: it stops serving raft, the dispatcher and the control API, says so loudly
//! (`manager.stepped_down`, a trace alarm the daemon prints on stderr), answers control requests with
//! that reason, and tries its disk again with a back-off; once a write works it rewrites its raft
//! log from what the disk holds and rejoins under the same raft id (`manager.rejoined`), without a
//! restart. Nothing acknowledged is lost: an entry is acknowledged only once it is synced on a quorum.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::agent::{Agent, AgentExit, RoleHint};
use crate::api::{
    new_id, Availability, Cluster, ClusterSpec, ManagerStatus, Meta, Network, Node, NodeDescription, NodeRole,
    NodeSpec, NodeState, NodeStatus, Resources,
};
use crate::auth::KnownManagers;
use crate::control::{ControlError, ControlHandler, ControlRequest, ControlResponse, ControlResult};
use crate::dispatcher::{Dispatcher, DispatcherRequest, DispatcherResponse, JoinRequest, TokenAuthority};
use crate::env::{runtime, Disk, NodeEnv};
use crate::logs::LogsService;
use crate::manager::Consensus;
use crate::raft::{LogStore, RaftConfig, Replica, ReplicaError};
use crate::rpc::{self, Channel, Router};
use crate::store::{Action, Object, ProposeError, Proposer, Store};

const IDENTITY_FILE: &str = "node.json";
/// Every raft file (log, vote, snapshot) is under this prefix.
const RAFT_FILES: &str = "raft/";
/// A file written (and removed) to find out whether the disk takes writes again.
const DISK_PROBE_FILE: &str = "raft/disk-probe";
/// How long a manager whose disk failed waits between its tries of the disk: first, and at most.
const DISK_RETRY_FIRST: Duration = Duration::from_secs(1);
const DISK_RETRY_MAX: Duration = Duration::from_secs(5);

/// How a node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub hostname: String,
    /// The address peers reach this node at (`host:port`); the transport serves it.
    pub advertise_addr: String,
    pub availability: Availability,
    pub resources: Resources,
    pub engine_version: String,
    /// Cluster settings used by `swarm init`.
    pub cluster_spec: ClusterSpec,
    pub raft: RaftConfig,
    /// The CA digest for join tokens (the real daemon's cluster CA); `None` makes a random one.
    pub ca_digest: Option<String>,
    /// The cluster CA certificate and key (PEM) that `swarm init` records in the cluster object, so
    /// every manager can sign joining nodes' certificates; empty in the simulator.
    pub root_ca_pem: String,
    pub root_ca_key_pem: String,
    /// The node id `swarm init` takes, when the daemon already named it in the node's certificate;
    /// `None` makes a fresh one. (A joining node gets its id from the certificate it was issued.)
    pub node_id: Option<String>,
    /// The data plane's settings (DESIGN §8).
    pub mesh: crate::mesh::MeshOptions,
    /// The data key when the caller already opened it (the daemon unlocks before it can read its
    /// TLS key); `None`: the node reads `dek.json` itself and, when it is sealed, waits locked for
    /// `swarm unlock` on its control channel (`crate::autolock`).
    pub dek: Option<crate::autolock::Dek>,
    /// The node has real certificates, renewed by the daemon, which reports them to the agent
    /// ([`ShoalNode::report_tls`]). Without (the simulator), a node's certificate is only the issuer
    /// digest it reports, and it "renews" by reporting what the managers ask for (DESIGN §6b).
    pub external_certificates: bool,
    /// Simulator only, to test the simulator's linearizability check: a bug planted on purpose —
    /// a manager that believes it leads answers reads from its own store without confirming with a
    /// quorum that it still does ([`crate::control::ControlHandler::with_planted_stale_leader_reads`]).
    #[cfg(madsim)]
    pub plant_stale_leader_reads: bool,
}

impl NodeConfig {
    pub fn new(hostname: impl Into<String>, advertise_addr: impl Into<String>) -> Self {
        NodeConfig {
            hostname: hostname.into(),
            advertise_addr: advertise_addr.into(),
            availability: Availability::Active,
            resources: Resources { nano_cpus: 2_000_000_000, memory_bytes: 4 << 30 },
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
            cluster_spec: ClusterSpec::default(),
            raft: RaftConfig::default(),
            ca_digest: None,
            root_ca_pem: String::new(),
            root_ca_key_pem: String::new(),
            node_id: None,
            mesh: crate::mesh::MeshOptions::default(),
            dek: None,
            external_certificates: false,
            #[cfg(madsim)]
            plant_stale_leader_reads: false,
        }
    }
}

/// How the node enters the swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// `swarm init` (with `--force-new-cluster`: recover a one-manager cluster from local state).
    Init { force_new_cluster: bool },
    /// `swarm join --token T remote_addr`.
    Join { remote_addr: String, token: String },
    /// Restart from what the disk holds.
    Resume,
}

/// Why the node could not start or act.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error(
        "This node is already part of a swarm. Use \"shoal swarm leave\" to leave this swarm and join another one."
    )]
    AlreadyInSwarm,
    #[error("This node is not part of a swarm")]
    NotInSwarm,
    #[error("cannot join the swarm at {remote}: {reason}")]
    Join { remote: String, reason: String },
    #[error("raft: {0}")]
    Raft(#[from] ReplicaError),
    #[error("storage: {0}")]
    Storage(String),
    #[error("{0}")]
    Control(#[from] ControlError),
}

/// What the node keeps on disk about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: String,
    pub cluster_id: String,
    pub role: NodeRole,
    pub raft_id: Option<u64>,
    pub managers: Vec<String>,
    /// The version of the node object whose role this node took last (role hints older than it
    /// are stale and ignored).
    #[serde(default)]
    pub role_version: u64,
}

struct ManagerParts {
    replica: Replica,
    consensus: Arc<ReplicaConsensus>,
    control: Arc<ControlHandler>,
    stop_leader: watch::Sender<bool>,
}

struct NodeInner {
    env: NodeEnv,
    config: NodeConfig,
    store: Store,
    router: Router,
    identity: Mutex<Identity>,
    manager: Mutex<Option<Arc<ManagerParts>>>,
    agent: Arc<Agent>,
    removed: watch::Sender<bool>,
    /// Role changes and raft recovery, one at a time.
    roles: tokio::sync::Mutex<()>,
    /// Set while this manager's raft is stopped by a failure: why, in the words control requests get.
    raft_failure: Mutex<Option<String>>,
    /// Set by `swarm leave` and [`ShoalNode::shutdown`]: no role change or recovery starts raft again.
    stopped: watch::Sender<bool>,
    /// The secrets key, on managers (`crate::secrets`).
    keyring: Arc<crate::secrets::Keyring>,
    /// The data key every raft file, the secrets key and TLS keys are encrypted with.
    dek: crate::autolock::Dek,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct ShoalNode {
    inner: Arc<NodeInner>,
}

impl std::fmt::Debug for ShoalNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShoalNode").field("node_id", &self.node_id()).finish()
    }
}

async fn read_identity(disk: &dyn Disk) -> Result<Option<Identity>, NodeError> {
    let bytes = disk.read(IDENTITY_FILE).await.map_err(|e| NodeError::Storage(e.to_string()))?;
    match bytes {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| NodeError::Storage(format!("{IDENTITY_FILE} is damaged: {e}"))),
    }
}

async fn write_identity(disk: &dyn Disk, identity: &Identity) -> Result<(), NodeError> {
    let bytes = serde_json::to_vec_pretty(identity).map_err(|e| NodeError::Storage(e.to_string()))?;
    disk.write_atomic(IDENTITY_FILE, &bytes).await.map_err(|e| NodeError::Storage(e.to_string()))
}

/// Remove raft's files (a demoted manager's, or before a new raft id starts).
async fn wipe_raft(disk: &dyn Disk) -> Result<(), NodeError> {
    for name in disk.list().await.map_err(|e| NodeError::Storage(e.to_string()))? {
        if name.starts_with(RAFT_FILES) {
            disk.remove(&name).await.map_err(|e| NodeError::Storage(e.to_string()))?;
        }
    }
    Ok(())
}

/// Remove every file of the node's swarm state (after `swarm leave`).
async fn wipe(disk: &dyn Disk) -> Result<(), NodeError> {
    for name in disk.list().await.map_err(|e| NodeError::Storage(e.to_string()))? {
        disk.remove(&name).await.map_err(|e| NodeError::Storage(e.to_string()))?;
    }
    Ok(())
}

impl ShoalNode {
    /// Whether the disk holds a node that can [`Bootstrap::Resume`].
    pub async fn has_state(disk: &dyn Disk) -> bool {
        matches!(read_identity(disk).await, Ok(Some(_)))
    }

    pub async fn start(env: NodeEnv, config: NodeConfig, bootstrap: Bootstrap) -> Result<ShoalNode, NodeError> {
        let mut env = env;
        let existing = read_identity(env.disk.as_ref()).await?;
        let router = Router::new();
        let store = Store::new();
        let known_managers = KnownManagers::default();
        // Peers the transport authenticates (mutual TLS) are checked against the store; see `auth`.
        router.set_gate(Arc::new(crate::auth::StoreGate::new(store.clone(), known_managers.clone())));
        // Every node, worker or manager, serves its containers' output to the managers.
        router.register(Channel::Logs, Arc::new(LogsService::new(env.executor.clone())));
        env.transport
            .serve(Arc::new(router.clone()))
            .await
            .map_err(|e| NodeError::Storage(format!("cannot serve {}: {e}", env.addr)))?;
        // Autolock: the data key, from `dek.json` — or, sealed, once `swarm unlock` gave the key.
        // Until then this manager is out of raft, with no agent, and answers every control
        // request with Swarm's locked error.
        let dek = match config.dek.clone() {
            Some(dek) => dek,
            None => {
                let (locked_router, tracer) = (router.clone(), env.tracer.clone());
                let dek = crate::autolock::open_or_wait(env.disk.clone(), move |gate| {
                    tracer.emit("node.locked", serde_json::json!({}));
                    locked_router.register(Channel::Control, Arc::new(crate::autolock::LockedService { gate }));
                })
                .await
                .map_err(|e| NodeError::Storage(e.to_string()))?;
                router.unregister(Channel::Control);
                dek
            }
        };
        env.disk = Arc::new(crate::autolock::EncryptedDisk::new(env.disk.clone(), dek.clone()));
        let description = NodeDescription {
            hostname: config.hostname.clone(),
            resources: config.resources,
            os: "linux".into(),
            arch: std::env::consts::ARCH.into(),
            engine_version: config.engine_version.clone(),
            engine_labels: Default::default(),
            data_addr: env.data_addr.clone(),
            tls_info: None,
        };

        let mut resume_failure = None;
        let (identity, replica) = match (&bootstrap, existing) {
            (Bootstrap::Resume, None) => return Err(NodeError::NotInSwarm),
            (Bootstrap::Resume, Some(identity)) => {
                let replica = match identity.raft_id {
                    Some(raft_id) if identity.role == NodeRole::Manager => {
                        match Replica::start(&env, raft_id, config.raft.clone(), store.clone(), router.clone()).await {
                            Ok(replica) => Some(replica),
                            // The disk refuses writes (a torn log tail cannot be cut): the node comes
                            // up stepped down, and rejoins once the disk takes writes.
                            Err(ReplicaError::Storage(err)) => {
                                resume_failure = Some((raft_id, err));
                                None
                            }
                            Err(err) => return Err(err.into()),
                        }
                    }
                    _ => None,
                };
                (identity, replica)
            }
            (Bootstrap::Init { force_new_cluster: true }, Some(identity)) => {
                let raft_id = identity.raft_id.ok_or(NodeError::NotInSwarm)?;
                let (replica, _) =
                    crate::raft::force_new_cluster(&env, raft_id, config.raft.clone(), store.clone(), router.clone())
                        .await?;
                let identity = Identity { managers: vec![env.addr.clone()], ..identity };
                (identity, Some(replica))
            }
            (Bootstrap::Init { .. }, Some(_)) | (Bootstrap::Join { .. }, Some(_)) => {
                return Err(NodeError::AlreadyInSwarm)
            }
            (Bootstrap::Init { .. }, None) => {
                let raft_id = runtime::random_u64() >> 1;
                let replica = Replica::start(&env, raft_id, config.raft.clone(), store.clone(), router.clone()).await?;
                replica.initialize().await?;
                let identity = Identity {
                    node_id: config.node_id.clone().unwrap_or_else(new_id),
                    cluster_id: new_id(),
                    role: NodeRole::Manager,
                    raft_id: Some(raft_id),
                    managers: vec![env.addr.clone()],
                    role_version: 0,
                };
                (identity, Some(replica))
            }
            (Bootstrap::Join { remote_addr, token }, None) => {
                // A joiner serves raft before it asks, so a manager token can add it as a voter at once.
                let raft_id = runtime::random_u64() >> 1;
                let replica = Replica::start(&env, raft_id, config.raft.clone(), store.clone(), router.clone()).await?;
                let request = DispatcherRequest::Join(JoinRequest {
                    token: token.clone(),
                    addr: env.addr.clone(),
                    description: description.clone(),
                    availability: config.availability,
                    raft_id: Some(raft_id),
                });
                let joined = join_via(&env, remote_addr, request).await;
                let joined = match joined {
                    Ok(joined) => joined,
                    Err(err) => {
                        let _ = replica.shutdown().await;
                        router.unregister(Channel::Raft);
                        let _ = wipe(env.disk.as_ref()).await;
                        return Err(err);
                    }
                };
                let replica = if joined.role == NodeRole::Manager {
                    Some(replica)
                } else {
                    let _ = replica.shutdown().await;
                    router.unregister(Channel::Raft);
                    // Not `wipe`: the data key stays (the daemon encrypts its TLS key with it).
                    wipe_raft(env.disk.as_ref()).await?;
                    None
                };
                let identity = Identity {
                    node_id: joined.node_id,
                    cluster_id: joined.cluster_id,
                    role: joined.role,
                    raft_id: (joined.role == NodeRole::Manager).then_some(raft_id),
                    managers: if joined.managers.is_empty() { vec![remote_addr.clone()] } else { joined.managers },
                    role_version: 0,
                };
                (identity, replica)
            }
        };
        if bootstrap != Bootstrap::Resume {
            // Resumed as it was read: nothing to write (and a disk that refuses writes must not keep
            // the node from coming up).
            write_identity(env.disk.as_ref(), &identity).await?;
        }

        let agent = Agent::new(
            env.clone(),
            identity.node_id.clone(),
            description.clone(),
            identity.managers.clone(),
            known_managers,
            config.mesh.clone(),
        );
        let keyring = Arc::new(crate::secrets::Keyring::load(env.disk.clone(), env.addr.clone()).await);
        if matches!(bootstrap, Bootstrap::Init { .. }) {
            keyring.create_if_missing().await.map_err(|e| NodeError::Storage(e.to_string()))?;
        }
        let (removed, _) = watch::channel(false);
        let node = ShoalNode {
            inner: Arc::new(NodeInner {
                env: env.clone(),
                config: config.clone(),
                store,
                router,
                identity: Mutex::new(identity.clone()),
                manager: Mutex::new(None),
                agent: agent.clone(),
                removed,
                roles: tokio::sync::Mutex::new(()),
                raft_failure: Mutex::new(None),
                stopped: watch::channel(false).0,
                keyring,
                dek,
            }),
        };
        if let Some(replica) = replica {
            node.become_manager(replica);
        }
        if let Some((raft_id, failure)) = resume_failure {
            node.mark_stepped_down(raft_id, &failure);
            runtime::spawn(node.clone().rejoin_when_disk_works(raft_id));
        }
        if matches!(bootstrap, Bootstrap::Init { .. }) {
            node.seed_cluster(&description, matches!(bootstrap, Bootstrap::Init { force_new_cluster: true })).await?;
        }
        let weak = Arc::downgrade(&node.inner);
        runtime::spawn(async move {
            let exit = agent.run().await;
            if let (AgentExit::Removed, Some(inner)) = (exit, weak.upgrade()) {
                inner.removed.send_replace(true);
            }
        });
        runtime::spawn(node.clone().follow_role_hints());
        if !config.external_certificates {
            runtime::spawn(node.clone().simulate_certificate_renewal());
        }
        runtime::spawn(node.clone().keep_managers());
        runtime::spawn(node.clone().follow_autolock());
        env.tracer.emit(
            "node.start",
            serde_json::json!({"node_id": identity.node_id, "role": identity.role, "bootstrap": format!("{bootstrap:?}")}),
        );
        Ok(node)
    }

    pub fn node_id(&self) -> String {
        self.inner.identity.lock().expect("identity lock").node_id.clone()
    }

    /// Record what this node's TLS holds (after the daemon renewed its certificate); its next
    /// heartbeat reports it ([`crate::ca_rotation`]).
    pub fn report_tls(&self, info: crate::api::NodeTlsInfo) {
        self.inner.agent.report_tls(info);
    }

    /// What the managers say this node's TLS should hold (a CA rotation changes it).
    pub fn desired_tls(&self) -> watch::Receiver<Option<crate::api::NodeTlsInfo>> {
        self.inner.agent.desired_tls()
    }

    /// Without real certificates, a node's certificate is the issuer digest it reports: renewing
    /// is reporting what the managers ask for, through the path the daemon's renewal uses.
    async fn simulate_certificate_renewal(self) {
        let mut desired = self.desired_tls();
        let mut stopped = self.inner.stopped.subscribe();
        loop {
            let wanted = desired.borrow_and_update().clone();
            if let Some(wanted) = wanted.filter(|w| self.inner.agent.reported_tls().as_ref() != Some(w)) {
                self.inner.env.tracer.emit(
                    "node.certificate_renewed",
                    serde_json::json!({"node_id": self.node_id(), "cert_issuer": wanted.cert_issuer}),
                );
                self.report_tls(wanted);
            }
            tokio::select! {
                biased;
                _ = stopped.wait_for(|s| *s) => return,
                changed = desired.changed() => if changed.is_err() { return },
            }
        }
    }

    pub fn is_manager(&self) -> bool {
        self.inner.manager.lock().expect("manager lock").is_some()
    }

    /// This node's copy of the cluster state (managers only hold a complete one).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The raft replica, on managers.
    pub fn replica(&self) -> Option<Replica> {
        self.manager().map(|m| m.replica.clone())
    }

    /// Serve `service` on `channel` to this node's peers (what the daemon adds to the core's own
    /// channels: certificate renewal). The node's gate still decides who may call it.
    pub fn serve<S: rpc::Service>(&self, channel: Channel, service: Arc<S>) {
        self.inner.router.register(channel, service);
    }

    /// Stop serving a channel added with [`Self::serve`].
    pub fn stop_serving(&self, channel: Channel) {
        self.inner.router.unregister(channel);
    }

    /// The managers' addresses, as the latest session or heartbeat reply listed them.
    pub fn manager_addrs(&self) -> Vec<String> {
        self.inner.agent.managers()
    }

    /// Becomes `true` when the node was removed from the swarm (`node rm`).
    pub fn removed(&self) -> watch::Receiver<bool> {
        self.inner.removed.subscribe()
    }

    fn manager(&self) -> Option<Arc<ManagerParts>> {
        self.inner.manager.lock().expect("manager lock").clone()
    }

    /// Why this manager's raft is stopped, while it is (its disk failed; it rejoins on its own).
    pub fn raft_failure(&self) -> Option<String> {
        self.inner.raft_failure.lock().expect("failure lock").clone()
    }

    /// Serve a control request (managers only, like Docker).
    pub async fn control(&self, request: ControlRequest) -> ControlResult {
        if let Some(failure) = self.raft_failure() {
            return Err(ControlError::Unavailable(failure));
        }
        match self.manager() {
            Some(manager) => manager.control.handle(request).await,
            None => Err(ControlError::NotAManager),
        }
    }

    /// `swarm leave [-f]`.
    pub async fn leave(&self, force: bool) -> Result<(), ControlError> {
        if self.manager().is_some() && !force {
            return Err(ControlError::FailedPrecondition(self.manager_leave_refusal().await));
        }
        self.inner.stopped.send_replace(true);
        self.inner.agent.leave().await;
        self.shutdown().await;
        self.inner.router.unregister(Channel::Logs);
        wipe(self.inner.env.disk.as_ref()).await.map_err(|e| ControlError::Internal(e.to_string()))?;
        Ok(())
    }

    /// Why a manager may not leave without `--force`, in Swarm's words (moby `daemon/cluster/swarm.go`):
    /// the last manager erases the swarm; a manager whose leaving loses the quorum says how many
    /// would be left. Reachability is the leader's (the node list is read there).
    async fn manager_leave_refusal(&self) -> String {
        let mut message =
            String::from("You are attempting to leave the swarm on a node that is participating as a manager. ");
        if let Ok(ControlResponse::Nodes(nodes)) = self.control(ControlRequest::NodeList).await {
            let count = |reach: &str| nodes.iter().filter(|n| n.reachability == reach).count() as i64;
            let (reachable, unreachable) = (count("reachable"), count("unreachable"));
            if reachable == 1 && unreachable == 0 {
                message.push_str(
                    "Removing the last manager erases all current state of the swarm. Use `--force` to ignore this \
                     message. ",
                );
                return message;
            }
            if reachable - 2 <= unreachable {
                message.push_str(&format!(
                    "Removing this node leaves {} managers out of {}. Without a Raft quorum your swarm will be \
                     inaccessible. ",
                    reachable - 1,
                    reachable + unreachable
                ));
            }
        }
        message.push_str(
            "The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. \
             Use `--force` to suppress this message.",
        );
        message
    }

    /// Stop serving raft and leader duties (tasks keep running, as in Docker when dockerd stops).
    pub async fn shutdown(&self) {
        self.inner.stopped.send_replace(true);
        let _turn = self.inner.roles.lock().await;
        self.stop_manager().await;
        *self.inner.raft_failure.lock().expect("failure lock") = None;
    }

    fn stopped(&self) -> bool {
        *self.inner.stopped.borrow()
    }

    /// Stop this node's manager parts: raft, dispatcher, control API, leader duties.
    async fn stop_manager(&self) {
        let manager = self.inner.manager.lock().expect("manager lock").take();
        if let Some(manager) = manager {
            manager.stop_leader.send_replace(true);
            let _ = manager.replica.shutdown().await;
        }
        self.inner.router.unregister(Channel::Raft);
        self.inner.router.unregister(Channel::Control);
        self.inner.router.unregister(Channel::Dispatcher);
    }

    fn become_manager(&self, replica: Replica) {
        let consensus = Arc::new(ReplicaConsensus::new(replica.clone()));
        let node_id = self.node_id();
        let control =
            ControlHandler::new(self.inner.store.clone(), consensus.clone(), node_id, self.inner.env.addr.clone())
                .with_read_forwarding(self.inner.env.transport.clone())
                .with_keyring(self.inner.keyring.clone());
        #[cfg(madsim)]
        let control = if self.inner.config.plant_stale_leader_reads {
            control.with_planted_stale_leader_reads()
        } else {
            control
        };
        let control = Arc::new(control);
        let dispatcher = Arc::new(
            Dispatcher::new(
                self.inner.store.clone(),
                consensus.clone(),
                Arc::new(TokenAuthority),
                self.inner.env.tracer.clone(),
            )
            .with_keyring(self.inner.keyring.clone(), self.inner.env.transport.clone()),
        );
        // A new manager asks the others for the secrets key at once, so it holds it even if they go
        // away later (it asks again whenever it needs the key and lacks it).
        let (keyring, store, transport) =
            (self.inner.keyring.clone(), self.inner.store.clone(), self.inner.env.transport.clone());
        runtime::spawn(async move {
            for _ in 0..30 {
                if keyring.ensure(&store, transport.as_ref()).await.is_ok() {
                    break;
                }
                runtime::sleep(Duration::from_secs(2)).await;
            }
        });
        self.inner.router.register(Channel::Control, control.clone());
        self.inner.router.register(Channel::Dispatcher, dispatcher.clone());
        let (stop_leader, stop_rx) = watch::channel(false);
        let parts =
            Arc::new(ManagerParts { replica: replica.clone(), consensus: consensus.clone(), control, stop_leader });
        *self.inner.manager.lock().expect("manager lock") = Some(parts);
        runtime::spawn(self.clone().step_down_on_failure(replica));
        runtime::spawn(lead_when_elected(
            self.inner.store.clone(),
            consensus,
            dispatcher,
            self.inner.env.tracer.clone(),
            stop_rx,
        ));
    }

    /// The objects `swarm init` creates: the cluster (tokens, settings), this node, the ingress network.
    async fn seed_cluster(&self, description: &NodeDescription, recovered: bool) -> Result<(), NodeError> {
        let manager = self.manager().ok_or(NodeError::NotInSwarm)?;
        let proposer = manager.consensus.proposer();
        let identity = self.inner.identity.lock().expect("identity lock").clone();
        let addr = self.inner.env.addr.clone();
        let config = &self.inner.config;
        // Wait for this replica to lead its one-member group.
        let mut status = manager.replica.watch();
        let _ =
            runtime::timeout(Duration::from_secs(30), status.wait_for(|s| s.role == crate::raft::Role::Leader)).await;
        let store = &self.inner.store;
        // `swarm init --autolock`: the cluster starts with an unlock key, sealed like a secret.
        let unlock_key = if config.cluster_spec.autolock_managers && !recovered {
            let key = self.inner.keyring.key().ok_or_else(|| NodeError::Storage("no secrets key".into()))?;
            let key = crate::secrets::seal(&key, &identity.cluster_id, crate::autolock::UnlockKey::generate().bytes())
                .map_err(|e| NodeError::Storage(e.to_string()))?;
            Some(key)
        } else {
            None
        };
        let result = crate::store::propose_with_retry(store, proposer.as_ref(), 5, |state| {
            let mut actions = Vec::new();
            if state.cluster.is_none() {
                let digest = config.ca_digest.clone().unwrap_or_else(crate::tokens::new_digest);
                actions.push(Action::Create(Object::Cluster(Cluster {
                    id: identity.cluster_id.clone(),
                    meta: Meta::default(),
                    spec: config.cluster_spec.clone(),
                    worker_join_token: crate::tokens::generate(&digest),
                    manager_join_token: crate::tokens::generate(&digest),
                    root_ca_pem: config.root_ca_pem.clone(),
                    root_ca_digest: digest,
                    root_ca_key_pem: config.root_ca_key_pem.clone(),
                    unlock_key: unlock_key.clone(),
                    root_rotation: None,
                })));
            }
            let me = Node {
                id: identity.node_id.clone(),
                meta: state.nodes.get(&identity.node_id).map(|n| n.meta.clone()).unwrap_or_default(),
                spec: NodeSpec {
                    desired_role: NodeRole::Manager,
                    availability: config.availability,
                    labels: Default::default(),
                },
                description: description.clone(),
                status: NodeStatus { state: NodeState::Ready, message: String::new(), addr: addr.clone() },
                role: NodeRole::Manager,
                manager_status: Some(ManagerStatus { raft_id: identity.raft_id.unwrap_or(0), addr: addr.clone() }),
            };
            match state.nodes.get(&identity.node_id) {
                Some(existing) => {
                    let mut me = me;
                    me.spec = existing.spec.clone();
                    actions.push(Action::Update(Object::Node(me)));
                }
                None => actions.push(Action::Create(Object::Node(me))),
            }
            if recovered {
                // Managers that were not recovered are no longer raft members.
                for node in state.nodes.values().filter(|n| n.id != identity.node_id && n.manager_status.is_some()) {
                    let mut node = node.as_worker();
                    node.status.state = NodeState::Down;
                    node.status.message = "removed from the raft by --force-new-cluster".into();
                    actions.push(Action::Update(Object::Node(node)));
                }
            }
            if !state.networks.values().any(|n| n.ingress) {
                actions.push(Action::Create(Object::Network(Network {
                    id: new_id(),
                    meta: Meta::default(),
                    name: "ingress".into(),
                    driver: "overlay".into(),
                    // Swarm's ingress is 10.0.0.0/24; shoal's is a /16 because each node leases
                    // a /24 of it for its bridge (DESIGN §8).
                    subnet: "10.0.0.0/16".into(),
                    attachable: false,
                    ingress: true,
                    labels: Default::default(),
                    leases: Default::default(),
                })));
            }
            Ok(actions)
        })
        .await;
        result.map_err(|e| NodeError::Control(e.into()))?;
        Ok(())
    }

    /// Promotion and demotion: the leader says what this node should be in heartbeat replies. A
    /// change that could not be carried out (a disk error) is tried again until it is.
    async fn follow_role_hints(self) {
        let mut hints = self.inner.agent.role_hints();
        let mut retry = false;
        loop {
            if retry {
                tokio::select! {
                    // Biased: tokio's random branch order is not seeded by the simulator.
                    biased;
                    changed = hints.changed() => if changed.is_err() { return },
                    _ = runtime::sleep(DISK_RETRY_FIRST) => {}
                }
            } else if hints.changed().await.is_err() {
                return;
            }
            let hint: Option<RoleHint> = *hints.borrow_and_update();
            let Some(hint) = hint else { continue };
            retry = match self.apply_role(hint).await {
                Ok(()) => false,
                Err(err) => {
                    self.inner.env.tracer.emit(
                        "node.role_change_failed",
                        serde_json::json!({"desired_role": hint.desired_role, "raft_id": hint.raft_id, "error": err.to_string()}),
                    );
                    true
                }
            };
        }
    }

    /// Make this node what `hint` says, if the hint is not older than the last one applied: at most
    /// one replica runs, under the hint's raft id. Idempotent.
    async fn apply_role(&self, hint: RoleHint) -> Result<(), NodeError> {
        let _turn = self.inner.roles.lock().await;
        let identity = self.inner.identity.lock().expect("identity lock").clone();
        if self.stopped() || hint.version < identity.role_version {
            return Ok(());
        }
        let running = self.manager().map(|m| m.replica.raft_id());
        let failed = self.raft_failure().is_some();
        let tracer = &self.inner.env.tracer;
        match (hint.desired_role, hint.raft_id) {
            (NodeRole::Manager, Some(raft_id)) => {
                // Already this member; or this member with a failed disk, which rejoins on its own.
                if running == Some(raft_id) || (failed && identity.raft_id == Some(raft_id)) {
                    return self.note_role_version(hint.version).await;
                }
                // Another raft identity runs here (a demotion this node never saw, then a new
                // promotion): it is not a member any more; stop it before the new one starts.
                if running.is_some() || failed {
                    self.stop_manager().await;
                    *self.inner.raft_failure.lock().expect("failure lock") = None;
                    tracer.emit("node.demoted", serde_json::json!({"raft_id": running.or(identity.raft_id)}));
                }
                if identity.raft_id != Some(raft_id) {
                    // A new member starts from an empty log: the old files are another member's
                    // vote and log. Recorded as a worker first, so a crash in between never
                    // starts the new id on the old files.
                    self.save_identity(|id| {
                        id.role = NodeRole::Worker;
                        id.raft_id = None;
                    })
                    .await?;
                    wipe_raft(self.inner.env.disk.as_ref()).await?;
                }
                // Recorded before raft starts: once it runs it may acknowledge entries, and after a
                // crash it must come back as that member, on those files.
                self.save_identity(|id| {
                    id.role = NodeRole::Manager;
                    id.raft_id = Some(raft_id);
                    id.role_version = hint.version;
                })
                .await?;
                let env = &self.inner.env;
                let config = self.inner.config.raft.clone();
                let replica = Replica::start(env, raft_id, config, self.inner.store.clone(), self.inner.router.clone())
                    .await
                    .inspect_err(|err| {
                        tracer.emit("node.promote_failed", serde_json::json!({"error": err.to_string()}))
                    })?;
                self.become_manager(replica);
                tracer.emit("node.promoted", serde_json::json!({"raft_id": raft_id}));
                Ok(())
            }
            // A promotion is recorded with its raft id; without one there is nothing to start yet.
            (NodeRole::Manager, None) => Ok(()),
            (NodeRole::Worker, _) => {
                if running.is_none() && !failed && identity.role == NodeRole::Worker && identity.raft_id.is_none() {
                    return self.note_role_version(hint.version).await;
                }
                self.stop_manager().await;
                *self.inner.raft_failure.lock().expect("failure lock") = None;
                self.save_identity(|id| {
                    id.role = NodeRole::Worker;
                    id.raft_id = None;
                    id.role_version = hint.version;
                })
                .await?;
                // Not a member any more: its raft files are of no use (a later promotion starts a new
                // member on an empty log anyway).
                if let Err(err) = wipe_raft(self.inner.env.disk.as_ref()).await {
                    tracer.emit("node.raft_files_left", serde_json::json!({"error": err.to_string()}));
                }
                tracer.emit("node.demoted", serde_json::json!({"raft_id": running.or(identity.raft_id)}));
                Ok(())
            }
        }
    }

    /// Remember that the node is as the hint of `version` says (nothing else changed).
    async fn note_role_version(&self, version: u64) -> Result<(), NodeError> {
        let current = self.inner.identity.lock().expect("identity lock").role_version;
        if version <= current {
            return Ok(());
        }
        self.save_identity(|id| id.role_version = version).await
    }

    /// Change the identity and write it to disk; if the write fails the identity stays as it was, so
    /// a retry starts from what the disk says.
    async fn save_identity(&self, change: impl FnOnce(&mut Identity)) -> Result<(), NodeError> {
        let mut identity = self.inner.identity.lock().expect("identity lock").clone();
        change(&mut identity);
        identity.managers = self.inner.agent.managers();
        write_identity(self.inner.env.disk.as_ref(), &identity).await?;
        *self.inner.identity.lock().expect("identity lock") = identity;
        Ok(())
    }

    /// Autolock: keep `dek.json` as the cluster object says — the data key sealed with the unlock
    /// key while this node is a manager of a swarm with autolock on, in plain otherwise (workers
    /// are never locked). Only the data key is re-wrapped; no data file is rewritten.
    async fn follow_autolock(self) {
        let mut versions = self.inner.store.watch_version();
        let mut stopped = self.inner.stopped.subscribe();
        // What `dek.json` holds now, as far as this process knows: `Some(None)` plain, `Some(Some(k))`
        // sealed with the key sealed as `k` in the store.
        let mut applied: Option<Option<crate::api::Sealed>> = None;
        loop {
            if self.stopped() {
                return;
            }
            // By role, not by a running replica: a manager whose raft stepped down (its disk
            // failed) is still a manager and keeps its data key sealed.
            let manager = self.inner.identity.lock().expect("identity lock").role == NodeRole::Manager;
            let wanted = if manager {
                self.inner.store.view(|s| {
                    s.cluster
                        .as_ref()
                        .map(|c| (c.id.clone(), c.spec.autolock_managers.then(|| c.unlock_key.clone()).flatten()))
                })
            } else {
                Some((String::new(), None))
            };
            if let Some((cluster_id, sealed)) = wanted {
                if applied.as_ref() != Some(&sealed) {
                    match self.rewrap_dek(&cluster_id, sealed.as_ref()).await {
                        Ok(()) => {
                            self.inner
                                .env
                                .tracer
                                .emit("autolock.dek_wrapped", serde_json::json!({"sealed": sealed.is_some()}));
                            applied = Some(sealed);
                        }
                        Err(reason) => {
                            self.inner
                                .env
                                .tracer
                                .emit("autolock.dek_wrap_failed", serde_json::json!({"error": reason}));
                            runtime::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
            }
            tokio::select! {
                // Biased: tokio's random branch order is not seeded by the simulator.
                biased;
                _ = stopped.wait_for(|s| *s) => return,
                changed = versions.changed() => if changed.is_err() { return },
                _ = runtime::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    async fn rewrap_dek(&self, cluster_id: &str, sealed: Option<&crate::api::Sealed>) -> Result<(), String> {
        let key = match sealed {
            None => None,
            Some(sealed) => {
                let secrets_key = self
                    .inner
                    .keyring
                    .ensure(&self.inner.store, self.inner.env.transport.as_ref())
                    .await
                    .map_err(|e| e.to_string())?;
                let bytes = crate::secrets::open(&secrets_key, cluster_id, sealed).map_err(|e| e.to_string())?;
                Some(crate::autolock::UnlockKey::from_bytes(&bytes).map_err(|e| e.to_string())?)
            }
        };
        crate::autolock::write_dek(self.inner.env.disk.as_ref(), &self.inner.dek, key.as_ref())
            .await
            .map_err(|e| e.to_string())
    }

    /// Keep the agent's and `node.json`'s managers current: on a manager from its own store (its agent
    /// talks to the leader — often itself — and must know the others the moment it is demoted), and
    /// on every node what the agent learned from session and heartbeat replies. At most once a
    /// second: the list changes rarely, and reading it scans every node.
    async fn keep_managers(self) {
        let mut versions = self.inner.store.watch_version();
        let mut known = self.inner.agent.watch_managers();
        let mut stopped = self.inner.stopped.subscribe();
        loop {
            if self.stopped() {
                return;
            }
            if let Some(replica) = self.replica() {
                // A replica raft removed (demoted, the node not told yet) has a store that stops
                // where it was removed, still naming this node: the others are where to go.
                let me = (replica.removed_from_membership()).then(|| self.inner.env.addr.clone());
                let managers: Vec<String> = self.inner.store.view(|s| {
                    s.nodes
                        .values()
                        .filter_map(|n| n.manager_status.as_ref().map(|m| m.addr.clone()))
                        .filter(|addr| Some(addr) != me.as_ref())
                        .collect()
                });
                self.inner.agent.set_managers(managers);
            }
            let managers = self.inner.agent.managers();
            let saved = self.inner.identity.lock().expect("identity lock").managers.clone();
            if managers != saved && !managers.is_empty() {
                let _turn = self.inner.roles.lock().await;
                if let Err(err) = self.save_identity(|_| {}).await {
                    self.inner
                        .env
                        .tracer
                        .emit("node.identity_write_failed", serde_json::json!({"error": err.to_string()}));
                }
            }
            runtime::sleep(Duration::from_secs(1)).await;
            tokio::select! {
                // Biased: tokio's random branch order is not seeded by the simulator.
                biased;
                _ = stopped.wait_for(|s| *s) => return,
                changed = versions.changed() => if changed.is_err() { return },
                changed = known.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Watches `replica`; if raft stops on its own (a storage error is fatal to it), the manager
    /// steps down, says why, and tries to rejoin once its disk works.
    async fn step_down_on_failure(self, replica: Replica) {
        let mut status = replica.watch();
        let failure = loop {
            if let Some(failure) = status.borrow_and_update().failure.clone() {
                break failure;
            }
            if status.changed().await.is_err() {
                match status.borrow().failure.clone() {
                    Some(failure) => break failure,
                    None => return,
                }
            }
        };
        let raft_id = replica.raft_id();
        {
            let _turn = self.inner.roles.lock().await;
            // Only if this replica is still the one the node runs (not stopped by a role change).
            if self.stopped() || !self.manager().is_some_and(|m| m.replica.same(&replica)) {
                return;
            }
            self.stop_manager().await;
            self.mark_stepped_down(raft_id, &failure);
        }
        self.rejoin_when_disk_works(raft_id).await;
    }

    /// Say loudly that raft stopped and why, and answer control requests with it until it rejoins.
    fn mark_stepped_down(&self, raft_id: u64, failure: &str) {
        // openraft wraps the disk's error ("when Write Logs: std::io::error::Error: append raft/log:
        // No space left on device"); the disk's own words are what an operator acts on.
        let cause = failure.split_once("std::io::error::Error: ").map_or(failure, |(_, cause)| cause);
        let message = format!(
            "this manager stepped down: raft cannot write to its disk ({cause}); it serves again once its disk \
             takes writes"
        );
        self.inner.env.tracer.emit(
            crate::trace::MANAGER_STEPPED_DOWN,
            serde_json::json!({"raft_id": raft_id, "error": failure, "message": message}),
        );
        *self.inner.raft_failure.lock().expect("failure lock") = Some(message.clone());
        self.inner.router.register(Channel::Control, Arc::new(SteppedDown { message }));
        // The node's agent must find the new leader among the other managers, its own dispatcher
        // serving no more; what it learned from replies may predate their joins (a disk that fails
        // within a second of them: the simulator's t53 marked this node down and moved its tasks,
        // a healthy worker all along). The store still holds the last state the replica applied.
        let me = self.inner.env.addr.clone();
        let others: Vec<String> = self.inner.store.view(|s| {
            s.nodes
                .values()
                .filter_map(|n| n.manager_status.as_ref().map(|m| m.addr.clone()))
                .filter(|addr| *addr != me)
                .collect()
        });
        self.inner.agent.set_managers(others);
    }

    /// Try the disk with a back-off; once it takes writes, restart raft as the same member.
    async fn rejoin_when_disk_works(self, raft_id: u64) {
        let mut wait = DISK_RETRY_FIRST;
        let mut stopped = self.inner.stopped.subscribe();
        loop {
            tokio::select! {
                // Biased: tokio's random branch order is not seeded by the simulator.
                biased;
                _ = stopped.wait_for(|s| *s) => return,
                _ = runtime::sleep(wait) => {}
            }
            wait = (wait * 2).min(DISK_RETRY_MAX);
            let _turn = self.inner.roles.lock().await;
            let member = self.inner.identity.lock().expect("identity lock").raft_id;
            // A role change meanwhile (demoted, or promoted under a new raft id) decided otherwise.
            if self.stopped() || self.raft_failure().is_none() || member != Some(raft_id) {
                return;
            }
            match self.restart_raft(raft_id).await {
                Ok(replica) => {
                    *self.inner.raft_failure.lock().expect("failure lock") = None;
                    self.become_manager(replica);
                    let message = "this manager's disk takes writes again; it rejoined the raft".to_string();
                    self.inner.env.tracer.emit(
                        crate::trace::MANAGER_REJOINED,
                        serde_json::json!({"raft_id": raft_id, "message": message}),
                    );
                    return;
                }
                Err(err) => self.inner.env.tracer.emit(
                    "manager.disk_still_failing",
                    serde_json::json!({"raft_id": raft_id, "error": err.to_string()}),
                ),
            }
        }
    }

    /// Check that the disk takes writes, make the raft log on it whole and durable, start raft.
    async fn restart_raft(&self, raft_id: u64) -> Result<Replica, NodeError> {
        let disk = self.inner.env.disk.as_ref();
        let storage = |e: &dyn std::fmt::Display| NodeError::Storage(e.to_string());
        disk.write_atomic(DISK_PROBE_FILE, b"probe").await.map_err(|e| storage(&e))?;
        disk.remove(DISK_PROBE_FILE).await.map_err(|e| storage(&e))?;
        LogStore::repair(disk).await.map_err(|e| storage(&e))?;
        let env = &self.inner.env;
        Ok(Replica::start(
            env,
            raft_id,
            self.inner.config.raft.clone(),
            self.inner.store.clone(),
            self.inner.router.clone(),
        )
        .await?)
    }
}

/// The control API of a manager that stepped down after a disk error: every request gets the reason.
struct SteppedDown {
    message: String,
}

#[async_trait]
impl rpc::Service for SteppedDown {
    type Request = ControlRequest;
    type Response = ControlResult;

    async fn call(&self, _peer: crate::env::transport::Peer, _request: ControlRequest) -> ControlResult {
        Err(ControlError::Unavailable(self.message.clone()))
    }
}

async fn join_via(
    env: &NodeEnv,
    remote_addr: &str,
    request: DispatcherRequest,
) -> Result<crate::dispatcher::JoinResponse, NodeError> {
    let mut target = remote_addr.to_string();
    // Follow at most a few leader redirects.
    for _ in 0..5 {
        let reply: Result<Result<DispatcherResponse, crate::dispatcher::DispatcherError>, _> =
            rpc::call(env.transport.as_ref(), &target, Channel::Dispatcher, &request, Duration::from_secs(30)).await;
        let join_error = |reason: String| NodeError::Join { remote: remote_addr.to_string(), reason };
        match reply {
            Ok(Ok(DispatcherResponse::Joined(joined))) => return Ok(joined),
            Ok(Ok(_)) => return Err(join_error("unexpected reply".into())),
            Ok(Err(crate::dispatcher::DispatcherError::NotLeader { leader_addr })) => target = leader_addr,
            Ok(Err(err)) => return Err(join_error(err.to_string())),
            Err(err) => return Err(join_error(err.to_string())),
        }
    }
    Err(NodeError::Join { remote: remote_addr.to_string(), reason: "too many leader redirects".into() })
}

/// Wait until this leader has applied everything committed, its own term's first entry included;
/// `false` if it stopped leading (or the node stops) first.
async fn caught_up_as_leader(
    consensus: &ReplicaConsensus,
    leadership: &mut watch::Receiver<bool>,
    stop: &watch::Receiver<bool>,
) -> bool {
    loop {
        if *stop.borrow() || !*leadership.borrow_and_update() {
            return false;
        }
        match runtime::timeout(Duration::from_secs(2), consensus.ensure_linearizable()).await {
            Ok(Ok(())) => return true,
            _ => runtime::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Runs the leader-only controllers while this manager leads; stops them when it stops leading.
async fn lead_when_elected(
    store: Store,
    consensus: Arc<ReplicaConsensus>,
    dispatcher: Arc<Dispatcher>,
    tracer: crate::trace::Tracer,
    mut stop: watch::Receiver<bool>,
) {
    let mut leadership = consensus.leadership();
    loop {
        if *stop.borrow() {
            return;
        }
        if *leadership.borrow_and_update() {
            // A new leader's store may lack entries of earlier terms that a quorum holds: raft
            // commits them only with the new leader's first entry of its own term (§5.4.2). Acting
            // on the store before then, the orchestrator re-created a task the old leader had made
            // just before it crashed — two tasks in one slot (fuzz case `t90_71519ddf`). So the
            // controllers start once this leader has applied an entry of its own term: the read
            // barrier reads pass (`ensure_linearizable`).
            if !caught_up_as_leader(consensus.as_ref(), &mut leadership, &stop).await {
                continue;
            }
            let (stop_controllers, controllers_rx) = watch::channel(false);
            tracer.emit("manager.leading", serde_json::json!({}));
            runtime::spawn(crate::orchestrator::run_leader_controllers(
                store.clone(),
                consensus.proposer(),
                tracer.clone(),
                controllers_rx,
            ));
            runtime::spawn(dispatcher.clone().run_leader_loop(stop_controllers.subscribe()));
            runtime::spawn(reconcile_managers(
                store.clone(),
                consensus.clone(),
                tracer.clone(),
                stop_controllers.subscribe(),
            ));
            loop {
                tokio::select! {
                    // Biased: tokio's random branch order is not seeded by the simulator.
                    biased;
                    changed = leadership.changed() => {
                        if changed.is_err() || !*leadership.borrow_and_update() {
                            break;
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
            stop_controllers.send_replace(true);
            tracer.emit("manager.follower", serde_json::json!({}));
        } else {
            tokio::select! {
                // Biased: tokio's random branch order is not seeded by the simulator.
                biased;
                changed = leadership.changed() => if changed.is_err() { return; },
                _ = stop.changed() => {},
            }
        }
    }
}

/// How often the leader compares the managers in the store with the raft membership.
const RECONCILE_MANAGERS_PERIOD: Duration = Duration::from_secs(2);

/// The leader's role manager (swarmkit's `roleManager`, in part): a membership change left half-way
/// is settled, and a manager that raft no longer has — a demotion whose raft part completed after
/// its caller gave up (its quorum came back later) — is set back to a worker in the store, so its
/// node follows (its next heartbeat tells it). Only on a committed membership: an appended removal
/// may still be undone by the next leader.
async fn reconcile_managers(
    store: Store,
    consensus: Arc<ReplicaConsensus>,
    tracer: crate::trace::Tracer,
    mut stop: watch::Receiver<bool>,
) {
    let replica = consensus.replica.clone();
    loop {
        tokio::select! {
            // Biased: tokio's random branch order is not seeded by the simulator.
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = runtime::sleep(RECONCILE_MANAGERS_PERIOD) => {}
        }
        if !*consensus.leadership.borrow() {
            continue;
        }
        if replica.settle_membership().await.is_err() {
            continue;
        }
        let status = replica.status();
        let committed = status.membership_index <= status.last_applied.map(|(_, index)| index);
        if !committed || status.role != crate::raft::Role::Leader {
            continue;
        }
        let gone: Vec<(String, u64)> = store.view(|s| {
            s.nodes
                .values()
                .filter(|n| n.role == NodeRole::Manager)
                .filter_map(|n| Some((n.id.clone(), n.manager_status.as_ref()?.raft_id)))
                .filter(|(_, raft_id)| !status.members.contains_key(raft_id))
                .collect()
        });
        for (node_id, raft_id) in gone {
            let result = crate::store::propose_with_retry(&store, consensus.proposer().as_ref(), 3, |state| {
                let Some(n) = state.nodes.get(&node_id) else { return Ok(vec![]) };
                if n.manager_status.as_ref().map(|m| m.raft_id) != Some(raft_id) || n.role != NodeRole::Manager {
                    return Ok(vec![]);
                }
                Ok(vec![Action::Update(Object::Node(n.as_worker()))])
            })
            .await;
            if result.is_ok() {
                tracer.emit("node.demotion_completed", serde_json::json!({"node_id": node_id, "raft_id": raft_id}));
            }
        }
    }
}

/// [`Consensus`] over the raft replica.
struct ReplicaConsensus {
    replica: Replica,
    /// `true` while the replica leads *with a quorum* (see [`follow_leadership`]).
    leadership: watch::Receiver<bool>,
}

impl ReplicaConsensus {
    fn new(replica: Replica) -> Self {
        let (tx, leadership) = watch::channel(replica.leads_with_quorum());
        runtime::spawn(follow_leadership(replica.clone(), tx));
        ReplicaConsensus { replica, leadership }
    }
}

/// Keeps the leadership watch: leader, and acknowledged by a quorum within an election timeout.
///
/// openraft 0.9 has no CheckQuorum, so a leader cut off in a minority keeps its Leader role until it
/// hears of a newer term. Swarm's leader steps down instead, and its leader-only work stops with it;
/// so this watch turns false once the quorum's acknowledgement is stale, and the orchestrator, the
/// dispatcher's node-down detection and the dispatcher itself stop acting on the minority side. The
/// quorum ages without any event, so besides status changes the watch is re-checked every heartbeat.
async fn follow_leadership(replica: Replica, tx: watch::Sender<bool>) {
    let mut status = replica.watch();
    let period = Duration::from_millis(replica.config().heartbeat_interval_ms.max(1));
    loop {
        let leading = replica.leads_with_quorum();
        tx.send_if_modified(|current| std::mem::replace(current, leading) != leading);
        if tx.is_closed() {
            return;
        }
        tokio::select! {
            // Biased: tokio's random branch order is not seeded by the simulator.
            biased;
            changed = status.changed() => if changed.is_err() { break },
            _ = runtime::sleep(period) => {}
        }
    }
    tx.send_replace(false);
}

fn control_error(err: ReplicaError) -> ControlError {
    match err {
        ReplicaError::NoLeader | ReplicaError::NotLeader { leader_addr: None } => ControlError::NoLeader,
        ReplicaError::LossOfQuorum | ReplicaError::LastManager | ReplicaError::NotMember => {
            ControlError::FailedPrecondition(err.to_string())
        }
        other => ControlError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl Consensus for ReplicaConsensus {
    fn proposer(&self) -> Arc<dyn Proposer> {
        Arc::new(self.replica.clone())
    }

    fn leadership(&self) -> watch::Receiver<bool> {
        self.leadership.clone()
    }

    fn leader_addr(&self) -> Option<String> {
        // Raft's view, even for a leader whose quorum is stale: writes sent to it wait a moment for
        // the quorum to answer again (a restarted peer) before they fail with the lost-quorum error.
        // A leader raft knows by id but not by address (one just removed from the membership, as a
        // demoted leader is) cannot be reached: there is no leader to send anything to.
        self.replica.leader().map(|(_, addr)| addr).filter(|addr| !addr.is_empty())
    }

    async fn add_manager(&self, raft_id: u64, addr: String) -> Result<(), ControlError> {
        self.replica.add_manager(raft_id, addr).await.map_err(control_error)
    }

    async fn remove_manager(&self, raft_id: u64) -> Result<(), ControlError> {
        self.replica.remove_manager(raft_id).await.map_err(control_error)
    }

    fn demoted(&self) -> bool {
        self.replica.removed_from_membership()
    }

    fn reachable_managers(&self) -> Vec<u64> {
        let status = self.replica.status();
        let window = self.replica.config().election_timeout_max_ms;
        let fresh = status.millis_since_quorum_ack.is_some_and(|ms| ms <= window);
        if status.role == crate::raft::Role::Leader && fresh {
            // The leader heartbeats every voter: those that answered lately are reachable (Swarm's
            // raft reports a member unreachable once it stops answering the leader).
            self.replica.reachable_voters()
        } else {
            vec![status.raft_id]
        }
    }

    async fn ensure_linearizable(&self) -> Result<(), ControlError> {
        self.replica.ensure_linearizable().await.map_err(|e: ProposeError| match e {
            ProposeError::NoLeader => ControlError::NoLeader,
            other => ControlError::Unavailable(other.to_string()),
        })
    }

    async fn shutdown(&self) {
        let _ = self.replica.shutdown().await;
    }
}
