//! A whole shoal cluster in one process: each host is a madsim node running an unchanged
//! [`ShoalNode`] on simulated seams (links, disk, containers). The supervisor (the test or the
//! scenario runner) drives it: control requests through a client host, and faults — crash,
//! restart, leave, partitions, link delay/loss, container faults.
//!
//! A crash is a host crash: madsim drops the node's tasks (memory lost), the disk keeps only what
//! was synced, and running containers die. A restart runs the node's start-up again, which resumes
//! from the disk.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::runtime::{Handle, NodeHandle};
use shoal_core::api::NodeRole;
use shoal_core::control::{ControlError, ControlRequest, ControlResponse, ControlResult};
use shoal_core::env::NodeEnv;
use shoal_core::node::{Bootstrap, NodeConfig, ShoalNode};
use shoal_core::raft::Role;
use shoal_core::rpc::{self, Channel};
use shoal_core::store::StoreState;
use shoal_core::trace::{TraceEvent, Tracer};

use crate::disk::SimDisk;
use crate::executor::SimExecutor;
use crate::linearizability::history::{Answer, ControlHistory};
use crate::mesh_net::{Owner, SimMeshNet, DATA_PORT};
use crate::net::{LinkPolicy, SimNet, SimTransport};
use crate::trace::SimTrace;

/// What a failing simulated disk answers: Linux's words for ENOSPC.
pub const DISK_FULL: &str = "No space left on device (os error 28)";

/// The node label the control workload writes ([`SimCluster::start_workload`]).
pub const REGISTER_LABEL: &str = "shoal.sim.register";

/// The port every simulated node serves (Swarm's 2377).
pub const PORT: u16 = 2377;

/// How recently a quorum must have acknowledged the leader for [`SimCluster::leader_can_commit`]:
/// four of raft's 250 ms heartbeats. (The leader itself waits an election timeout, up to 2 s, before
/// it stops its controllers: it cannot tell a cut from a slow link sooner.)
pub const LEADER_ACK_FRESH_MS: u64 = 1_000;

/// How big a cluster to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterShape {
    pub managers: usize,
    pub workers: usize,
}

/// One simulated host and what survives its crashes.
struct Host {
    name: String,
    addr: String,
    disk: SimDisk,
    executor: SimExecutor,
    handle: NodeHandle,
    /// The node running on the host now (`None` while crashed or before it started).
    node: Arc<Mutex<Option<ShoalNode>>>,
    /// How the node starts at the host's next boot; taken by that boot (then `Resume`).
    next_boot: Arc<Mutex<Option<Bootstrap>>>,
    /// A daemon's start on this host (what madsim runs at each boot); [`SimCluster::start_second_daemon`]
    /// runs it once more beside the running one.
    daemon: Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>,
    /// Each daemon start's claim of the data dir, in order: `Ok` it got it, `Err` the refusal.
    claims: Arc<Mutex<Vec<Result<(), String>>>>,
}

/// Stops the workload started by [`SimCluster::start_workload`] (also when dropped).
#[derive(Debug)]
pub struct WorkloadHandle {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl WorkloadHandle {
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for WorkloadHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The host outside the cluster that control requests and simulated clients come from.
pub const CLIENT_HOST: &str = "client";

/// A running simulated cluster.
pub struct SimCluster {
    net: SimNet,
    mesh: SimMeshNet,
    trace: SimTrace,
    hosts: BTreeMap<String, Host>,
    client: NodeHandle,
    client_transport: SimTransport,
    config: NodeConfig,
    /// Every control call sent from the client host, for the linearizability check.
    history: ControlHistory,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster").field("hosts", &self.hosts.keys().collect::<Vec<_>>()).finish()
    }
}

/// Why the cluster could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{host} did not start within {secs} s")]
    StartTimeout { host: String, secs: u64 },
    #[error("control request failed while building the cluster: {0}")]
    Control(#[from] ControlError),
}

/// One control request to the manager at `addr`, recorded in `history` as sent by `client`: the
/// manager's answer, or why none came.
async fn control_one(
    transport: &SimTransport,
    history: &ControlHistory,
    client: &str,
    addr: &str,
    request: &ControlRequest,
) -> Result<ControlResult, rpc::CallError> {
    let call = history.invoke(client, addr, request, shoal_core::env::runtime::unix_millis());
    let reply =
        rpc::call::<_, ControlResult>(transport, addr, Channel::Control, request, Duration::from_secs(30)).await;
    let answer = match &reply {
        Ok(result) => Answer::of(result),
        Err(err) => Answer::Lost(err.to_string()),
    };
    history.answer(call, answer, shoal_core::env::runtime::unix_millis());
    reply
}

/// One control request as the CLI sends it: to each of `addrs` in turn until one answers.
async fn control_any(
    transport: SimTransport,
    history: ControlHistory,
    client: String,
    addrs: Vec<String>,
    request: ControlRequest,
) -> ControlResult {
    let mut last = ControlError::Unavailable("no manager is running".into());
    for addr in addrs {
        match control_one(&transport, &history, &client, &addr, &request).await {
            // A manager that was just demoted: ask the next one, as a client that knows every
            // manager would.
            Ok(Err(ControlError::NotAManager)) => last = ControlError::NotAManager,
            // A manager that restarted locked (autolock) serves nothing until unlocked.
            Ok(Err(ControlError::Locked)) => last = ControlError::Locked,
            Ok(answer) => return answer,
            Err(err) => last = ControlError::Unavailable(err.to_string()),
        }
    }
    Err(last)
}

/// The node settings simulated clusters use: Swarm's defaults, except a 1 s heartbeat so node-down
/// detection (3 periods) fits short scenarios.
pub fn settings_for_sim() -> NodeConfig {
    let mut config = NodeConfig::new("", "");
    config.cluster_spec.heartbeat_period_ms = 1_000;
    config
}

impl SimCluster {
    /// Build a cluster: `manager-1` runs `swarm init`, the other managers and the workers join it.
    pub async fn start(shape: ClusterShape) -> Result<SimCluster, ClusterError> {
        Self::start_with(shape, settings_for_sim()).await
    }

    /// [`SimCluster::start`] with other node settings (e.g. Swarm's 5 s heartbeat).
    pub async fn start_with(shape: ClusterShape, config: NodeConfig) -> Result<SimCluster, ClusterError> {
        let handle = Handle::current();
        let net = SimNet::new();
        let mesh = SimMeshNet::new(net.clone());
        let trace = SimTrace::default();
        let client_transport = net.transport(format!("{CLIENT_HOST}:1"));
        let client = handle.create_node().name(CLIENT_HOST).build();
        let mut cluster = SimCluster {
            net,
            mesh,
            trace,
            hosts: BTreeMap::new(),
            client,
            client_transport,
            config,
            history: ControlHistory::default(),
        };
        cluster.add_host("manager-1", Bootstrap::Init { force_new_cluster: false }).await?;
        let tokens = |role| ControlRequest::JoinToken { role, rotate: false };
        let manager_token = match cluster.control(tokens(NodeRole::Manager)).await? {
            ControlResponse::JoinToken { token, .. } => token,
            other => return Err(ControlError::Internal(format!("unexpected reply {other:?}")).into()),
        };
        let worker_token = match cluster.control(tokens(NodeRole::Worker)).await? {
            ControlResponse::JoinToken { token, .. } => token,
            other => return Err(ControlError::Internal(format!("unexpected reply {other:?}")).into()),
        };
        let remote = format!("manager-1:{PORT}");
        for i in 2..=shape.managers {
            let join = Bootstrap::Join { remote_addr: remote.clone(), token: manager_token.clone() };
            cluster.add_host(&format!("manager-{i}"), join).await?;
        }
        // Workers join all at once, as a fleet started together would: the leader takes the joins
        // concurrently (each is one raft write), so setup costs the same per worker at any size.
        // Managers join one at a time above: raft changes its membership one change at a time.
        let workers: Vec<_> = (1..=shape.workers)
            .map(|i| {
                let join = Bootstrap::Join { remote_addr: remote.clone(), token: worker_token.clone() };
                let name = format!("worker-{i}");
                let slot = cluster.launch_host(&name, join);
                (name, slot)
            })
            .collect();
        Self::wait_started(&workers).await?;
        Ok(cluster)
    }

    /// Start a new host that enters the swarm with `bootstrap`, and wait until it runs.
    pub async fn add_host(&mut self, name: &str, bootstrap: Bootstrap) -> Result<(), ClusterError> {
        let slot = self.launch_host(name, bootstrap);
        Self::wait_started(&[(name.to_string(), slot)]).await
    }

    /// Wait until every host in `hosts` (name, node slot) runs its node: up to 60 virtual seconds,
    /// plus 10 ms per host for a crowd joining at once.
    async fn wait_started(hosts: &[(String, Arc<Mutex<Option<ShoalNode>>>)]) -> Result<(), ClusterError> {
        let secs = 60 + hosts.len() as u64 / 100;
        let mut waiting = 0;
        for _ in 0..secs * 10 {
            while hosts.get(waiting).is_some_and(|(_, slot)| slot.lock().expect("slot lock").is_some()) {
                waiting += 1;
            }
            if waiting == hosts.len() {
                return Ok(());
            }
            madsim::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ClusterError::StartTimeout { host: hosts[waiting].0.clone(), secs })
    }

    /// Start a new host that enters the swarm with `bootstrap`; its node's slot, filled once the
    /// node runs.
    fn launch_host(&mut self, name: &str, bootstrap: Bootstrap) -> Arc<Mutex<Option<ShoalNode>>> {
        let addr = format!("{name}:{PORT}");
        let disk = SimDisk::new();
        // The host's container runtime: containers' processes run here, so they outlive a restart
        // of the node's daemon (and die with the host in `crash`, through the executor).
        let runtime_node = Handle::current().create_node().name(format!("{name}/containers")).build();
        let spawner: crate::serve::Spawner = Arc::new(move |future| runtime_node.spawn(future));
        let executor = SimExecutor::with_mesh(name, self.mesh.clone(), spawner);
        let slot: Arc<Mutex<Option<ShoalNode>>> = Arc::new(Mutex::new(None));
        let first_boot = Arc::new(Mutex::new(Some(bootstrap)));
        let (net, trace, mesh) = (self.net.clone(), self.trace.clone(), self.mesh.clone());
        let mut config = self.config.clone();
        config.hostname = name.to_string();
        config.advertise_addr = addr.clone();
        let claims: Arc<Mutex<Vec<Result<(), String>>>> = Arc::default();
        let init = {
            let (disk, executor, slot, addr, name, first_boot, claims) = (
                disk.clone(),
                executor.clone(),
                slot.clone(),
                addr.clone(),
                name.to_string(),
                first_boot.clone(),
                claims.clone(),
            );
            move || -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
                let env = NodeEnv {
                    addr: addr.clone(),
                    transport: Arc::new(net.transport(addr.clone())),
                    disk: Arc::new(disk.clone()),
                    executor: Arc::new(executor.clone()),
                    mesh: Arc::new(mesh.node(name.clone())),
                    data_addr: format!("{name}:{DATA_PORT}"),
                    tracer: Tracer::new(name.clone(), Arc::new(trace.clone())),
                };
                let (slot, config, tracer) = (slot.clone(), config.clone(), env.tracer.clone());
                let (disk, claims, first_boot, holder) =
                    (disk.clone(), claims.clone(), first_boot.clone(), format!("the daemon on {name}"));
                Box::pin(async move {
                    // As the daemon's `main`: the data dir is claimed before anything else (the claim
                    // goes when the host's tasks do, as a dead process's lock does).
                    let _claim = match shoal_core::env::Disk::claim(&disk, &holder) {
                        Ok(claim) => claim,
                        Err(err) => {
                            tracer.emit("daemon.refused", serde_json::json!({"error": err.to_string()}));
                            claims.lock().expect("claims lock").push(Err(err.to_string()));
                            return;
                        }
                    };
                    claims.lock().expect("claims lock").push(Ok(()));
                    let bootstrap = first_boot.lock().expect("boot lock").take().unwrap_or(Bootstrap::Resume);
                    match ShoalNode::start(env, config, bootstrap).await {
                        Ok(node) => *slot.lock().expect("slot lock") = Some(node),
                        Err(err) => tracer.emit("node.start_failed", serde_json::json!({"error": err.to_string()})),
                    }
                    std::future::pending::<()>().await;
                })
            }
        };
        let daemon: Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync> =
            Arc::new(init.clone());
        let handle = Handle::current().create_node().name(name).init(init).build();
        self.hosts.insert(
            name.to_string(),
            Host {
                name: name.to_string(),
                addr,
                disk,
                executor,
                handle,
                node: slot.clone(),
                next_boot: first_boot,
                daemon,
                claims,
            },
        );
        slot
    }

    pub fn node_names(&self) -> Vec<String> {
        self.hosts.keys().cloned().collect()
    }

    pub fn net(&self) -> &SimNet {
        &self.net
    }

    /// The cluster's service traffic (published ports, tunnels, containers' ports).
    pub fn mesh(&self) -> &SimMeshNet {
        &self.mesh
    }

    /// Run `future` on host `name` (a cluster host, or [`CLIENT_HOST`]): it dies if the host crashes.
    pub fn spawn_on<F>(&self, name: &str, future: F) -> Option<madsim::task::JoinHandle<F::Output>>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if name == CLIENT_HOST {
            return Some(self.client.spawn(future));
        }
        self.host(name).map(|h| h.handle.spawn(future))
    }

    fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.get(name)
    }

    /// The node running on `name` now, if it is up.
    pub fn node(&self, name: &str) -> Option<ShoalNode> {
        self.host(name).and_then(|h| h.node.lock().expect("slot lock").clone())
    }

    /// The host whose replica leads in the highest term.
    pub fn leader(&self) -> Option<String> {
        self.hosts
            .values()
            .filter_map(|h| {
                let node = h.node.lock().expect("slot lock").clone()?;
                let status = node.replica()?.status();
                (status.role == Role::Leader).then_some((status.term, h.name.clone()))
            })
            .max()
            .map(|(_, name)| name)
    }

    /// Can the leader commit now: it leads and a quorum acknowledged it within
    /// [`LEADER_ACK_FRESH_MS`]? A leader cut off in a minority keeps the Leader role (openraft 0.9 has
    /// no CheckQuorum) and its store, but nothing it proposes can commit.
    pub fn leader_can_commit(&self) -> bool {
        let Some(leader) = self.leader() else { return false };
        self.node(&leader).and_then(|n| n.replica()).is_some_and(|replica| {
            let status = replica.status();
            status.role == Role::Leader && status.millis_since_quorum_ack.is_none_or(|ms| ms <= LEADER_ACK_FRESH_MS)
        })
    }

    /// The node ids of the hosts the leader cannot reach, or cannot hear from, now (partitions and
    /// one-way cuts; a crashed host is not counted: the store says `down` for it soon enough).
    pub fn cut_off_from_leader(&self) -> std::collections::BTreeSet<String> {
        let Some(leader) = self.leader() else { return Default::default() };
        self.hosts
            .values()
            .filter(|h| self.net.is_cut(&leader, &h.name) || self.net.is_cut(&h.name, &leader))
            .filter_map(|h| h.node.lock().expect("slot lock").as_ref().map(|n| n.node_id()))
            .collect()
    }

    /// The leader's copy of the state.
    pub fn store_of_leader(&self) -> Option<StoreState> {
        let leader = self.leader()?;
        self.node(&leader).map(|n| n.store().snapshot())
    }

    /// Manager addresses, the leader first.
    fn manager_addrs(&self) -> Vec<String> {
        let leader = self.leader();
        let mut addrs: Vec<(bool, String)> = self
            .hosts
            .values()
            .filter(|h| h.node.lock().expect("slot lock").as_ref().is_some_and(|n| n.is_manager()))
            .map(|h| (Some(&h.name) != leader.as_ref(), h.addr.clone()))
            .collect();
        addrs.sort();
        addrs.into_iter().map(|(_, a)| a).collect()
    }

    /// Send a control request as the CLI would: to the leader if known, else to any manager that
    /// answers. Unreachable managers are skipped; the first real answer (success or refusal) wins.
    pub async fn control(&self, request: ControlRequest) -> ControlResult {
        let call = self.client.spawn(control_any(
            self.client_transport.clone(),
            self.history.clone(),
            "cli".into(),
            self.manager_addrs(),
            request,
        ));
        call.await.unwrap_or_else(|err| Err(ControlError::Internal(err.to_string())))
    }

    /// Several control requests sent at once (each as [`SimCluster::control`] sends one); the
    /// answers in the order of the requests.
    pub async fn control_concurrently(&self, requests: Vec<ControlRequest>) -> Vec<ControlResult> {
        let addrs = self.manager_addrs();
        let calls: Vec<_> = requests
            .into_iter()
            .enumerate()
            .map(|(i, request)| {
                let client = if i == 0 { "cli".to_string() } else { format!("cli-{}", i + 1) };
                let history = self.history.clone();
                self.client.spawn(control_any(self.client_transport.clone(), history, client, addrs.clone(), request))
            })
            .collect();
        let mut answers = Vec::with_capacity(calls.len());
        for call in calls {
            answers.push(call.await.unwrap_or_else(|err| Err(ControlError::Internal(err.to_string()))));
        }
        answers
    }

    /// Send a control request to the node on host `name` only, as `shoal -H` does: its own answer,
    /// whatever it is (a worker's "not a swarm manager", a manager's refusal).
    pub async fn control_on(&self, name: &str, request: ControlRequest) -> ControlResult {
        let Some(host) = self.host(name) else {
            return Err(ControlError::Unavailable(format!("no host {name:?}")));
        };
        let (transport, addr, history) = (self.client_transport.clone(), host.addr.clone(), self.history.clone());
        let call = self.client.spawn(async move { control_one(&transport, &history, "cli", &addr, &request).await });
        match call.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => Err(ControlError::Unavailable(err.to_string())),
            Err(err) => Err(ControlError::Internal(err.to_string())),
        }
    }

    /// Every control call sent from the client host so far (the CLI's and the workload's).
    pub fn control_history(&self) -> &ControlHistory {
        &self.history
    }

    /// Start the control workload, Jepsen's register test on the control API: every `period` one
    /// call goes to the next host, in name order, that runs a manager now (the leader, a follower, a
    /// deposed leader cut off from the rest: as a CLI on that host would), each its own call, so a
    /// host that does not answer holds up nothing. Every other call to a host is a read, in turn
    /// `service ls`, `network ls`, `node ls`; the others write a fresh value into one node's
    /// label (`node update --label-add shoal.sim.register=N NODE`, the nodes in turn), which only
    /// such writes change, so every read of it has one right answer. Stops when the handle drops or
    /// [`WorkloadHandle::stop`] is called. Every call joins [`SimCluster::control_history`].
    pub fn start_workload(&self, period: Duration) -> WorkloadHandle {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hosts: Vec<(String, Arc<Mutex<Option<ShoalNode>>>)> =
            self.hosts.values().map(|h| (h.addr.clone(), h.node.clone())).collect();
        let names: Vec<String> = self.hosts.keys().cloned().collect();
        let (transport, history, client, flag) =
            (self.client_transport.clone(), self.history.clone(), self.client.clone(), stop.clone());
        self.client.spawn(async move {
            let reads = [ControlRequest::ServiceList, ControlRequest::NetworkList, ControlRequest::NodeList];
            // Per host, calls alternate between a read (each kind in turn) and a write, so every
            // host sees every kind of call whatever the number of managers.
            let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
            let (mut writes, mut next_host) = (0usize, 0usize);
            loop {
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let managers: Vec<&String> = hosts
                    .iter()
                    .filter(|(_, node)| node.lock().expect("slot lock").as_ref().is_some_and(|n| n.is_manager()))
                    .map(|(addr, _)| addr)
                    .collect();
                if managers.is_empty() {
                    madsim::time::sleep(period).await;
                    continue;
                }
                next_host += 1;
                let addr = managers[(next_host - 1) % managers.len()].clone();
                let count = per_host.entry(addr.clone()).or_default();
                *count += 1;
                let request = if *count % 2 == 1 {
                    reads[(*count / 2) % reads.len()].clone()
                } else {
                    writes += 1;
                    ControlRequest::NodeUpdate {
                        node: names[(writes - 1) % names.len()].clone(),
                        availability: None,
                        label_add: [(REGISTER_LABEL.to_string(), writes.to_string())].into(),
                        label_rm: Vec::new(),
                    }
                };
                let (transport, history) = (transport.clone(), history.clone());
                client.spawn(async move {
                    let _ = control_one(&transport, &history, "workload", &addr, &request).await;
                });
                madsim::time::sleep(period).await;
            }
        });
        WorkloadHandle { stop }
    }

    /// Record a supervisor event (a fault, a step) in the run's trace.
    pub fn note(&self, kind: &str, fields: serde_json::Value) {
        Tracer::new("supervisor", Arc::new(self.trace.clone())).emit(kind, fields);
    }

    /// The host dies: its tasks stop, unsynced disk writes are lost, its containers die.
    pub fn crash(&self, name: &str) {
        let Some(host) = self.host(name) else { return };
        Handle::current().kill(host.handle.id());
        host.disk.release_claim();
        let lost = host.disk.crash(false);
        host.executor.host_crash();
        self.mesh.host_down(name);
        *host.node.lock().expect("slot lock") = None;
        self.note("fault.crash", serde_json::json!({"host": name, "unsynced_bytes_lost": lost}));
    }

    /// Like [`SimCluster::crash`], but a random part of each unsynced tail survives (a torn write).
    pub fn crash_torn(&self, name: &str) {
        let Some(host) = self.host(name) else { return };
        Handle::current().kill(host.handle.id());
        host.disk.release_claim();
        let lost = host.disk.crash(true);
        host.executor.host_crash();
        self.mesh.host_down(name);
        *host.node.lock().expect("slot lock") = None;
        self.note("fault.crash", serde_json::json!({"host": name, "torn": true, "unsynced_bytes_lost": lost}));
    }

    /// Start a second daemon on `name`'s data dir while its own runs, as an operator who runs `shoal
    /// daemon` twice does (issue 14). `Ok(refusal)` when it refused, as it must, at once and touching
    /// nothing; `Err` when it got the data dir (then it is stopped again at once).
    pub async fn start_second_daemon(&self, name: &str) -> Result<String, String> {
        let host = self.host(name).ok_or_else(|| format!("no host {name}"))?;
        let before = host.claims.lock().expect("claims lock").len();
        let daemon = host.daemon.clone();
        let second =
            Handle::current().create_node().name(format!("{name}/second-daemon")).init(move || daemon()).build();
        let mut outcome = None;
        for _ in 0..500 {
            outcome = host.claims.lock().expect("claims lock").get(before).cloned();
            if outcome.is_some() {
                break;
            }
            madsim::time::sleep(Duration::from_millis(10)).await;
        }
        Handle::current().kill(second.id());
        match outcome {
            Some(Err(refusal)) => {
                self.note("fault.second_daemon", serde_json::json!({"host": name, "refused": refusal}));
                Ok(refusal)
            }
            Some(Ok(())) => {
                self.note("fault.second_daemon", serde_json::json!({"host": name, "started": true}));
                Err(format!("a second daemon got {name}'s data dir while the first was running"))
            }
            None => Err(format!("the second daemon on {name} neither refused nor started within 5 s")),
        }
    }

    /// The host comes back and its node resumes from disk.
    pub fn restart(&self, name: &str) {
        let Some(host) = self.host(name) else { return };
        *host.node.lock().expect("slot lock") = None;
        // The daemon restarts (its listeners and connections go); the host's containers run on.
        self.mesh.owner_down(&Owner::daemon(name));
        host.disk.release_claim();
        Handle::current().restart(host.handle.id());
        self.note("fault.restart", serde_json::json!({"host": name}));
    }

    /// `swarm init --force-new-cluster` on `name`: the host restarts and its node starts from its
    /// disk as the only manager of a new one-member raft group that keeps the swarm's state.
    pub fn force_new_cluster(&self, name: &str) {
        let Some(host) = self.host(name) else { return };
        *host.next_boot.lock().expect("boot lock") = Some(Bootstrap::Init { force_new_cluster: true });
        *host.node.lock().expect("slot lock") = None;
        self.mesh.owner_down(&Owner::daemon(name));
        host.disk.release_claim();
        Handle::current().restart(host.handle.id());
        self.note("fault.force_new_cluster", serde_json::json!({"host": name}));
    }

    /// Wait until `name` runs a node again (after a restart), up to `timeout`.
    pub async fn wait_up(&self, name: &str, timeout: Duration) -> bool {
        let deadline = madsim::time::Instant::now() + timeout;
        while madsim::time::Instant::now() < deadline {
            if self.node(name).is_some() {
                return true;
            }
            madsim::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `swarm leave [-f]` on `name`, run on that host.
    pub async fn leave(&self, name: &str, force: bool) -> Result<(), ControlError> {
        let node = self.node(name).ok_or_else(|| ControlError::Unavailable(format!("{name} is not running")))?;
        let host = self.host(name).expect("node implies host");
        let result = host
            .handle
            .spawn(async move { node.leave(force).await })
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        if result.is_ok() {
            *host.node.lock().expect("slot lock") = None;
        }
        self.note("fault.leave", serde_json::json!({"host": name, "force": force, "ok": result.is_ok()}));
        result
    }

    pub fn partition(&self, a: &[String], b: &[String]) {
        self.net.partition(a, b);
        self.note("fault.partition", serde_json::json!({"a": a, "b": b}));
    }

    pub fn cut_one_way(&self, from: &[String], to: &[String]) {
        self.net.cut_one_way(from, to);
        self.note("fault.cut_one_way", serde_json::json!({"from": from, "to": to}));
    }

    pub fn heal(&self) {
        self.net.heal();
        self.note("fault.heal", serde_json::json!({}));
    }

    /// The host's disk refuses every write from now on (reads still work), as a full disk does.
    pub fn disk_fail_writes(&self, name: &str) {
        let Some(host) = self.host(name) else { return };
        host.disk.fail_writes(Some(DISK_FULL.to_string()));
        self.note("fault.disk_fail_writes", serde_json::json!({"host": name, "reason": DISK_FULL}));
    }

    /// The host's disk takes writes again.
    pub fn disk_heal(&self, name: &str) {
        let Some(host) = self.host(name) else { return };
        if host.disk.write_failure().is_some() {
            host.disk.fail_writes(None);
            self.note("fault.disk_heal", serde_json::json!({"host": name}));
        }
    }

    /// Every disk takes writes again.
    pub fn heal_disks(&self) {
        for name in self.node_names() {
            self.disk_heal(&name);
        }
    }

    pub fn set_link(&self, a: &str, b: &str, policy: LinkPolicy) {
        self.net.set_link(a, b, policy);
        self.note(
            "fault.link",
            serde_json::json!({"a": a, "b": b, "delay_min_ms": policy.delay_min.as_millis() as u64,
                "delay_max_ms": policy.delay_max.as_millis() as u64, "loss": policy.loss}),
        );
    }

    /// The simulated container runtime of `name` (set container faults on it).
    pub fn executor(&self, name: &str) -> Option<SimExecutor> {
        self.host(name).map(|h| h.executor.clone())
    }

    /// Every host's executor, by host name.
    /// Host `name`'s disk, to look at the bytes it holds (autolock's tests read them raw).
    pub fn disk(&self, name: &str) -> Option<SimDisk> {
        self.host(name).map(|h| h.disk.clone())
    }

    pub fn executors(&self) -> BTreeMap<String, SimExecutor> {
        self.hosts.iter().map(|(name, h)| (name.clone(), h.executor.clone())).collect()
    }

    pub fn trace(&self) -> Vec<TraceEvent> {
        self.trace.events()
    }

    pub fn trace_log(&self) -> &SimTrace {
        &self.trace
    }

    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }
}
