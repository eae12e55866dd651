//! The control API served by every manager: validates requests, writes through consensus (forwarded
//! to the leader when this manager follows) and answers reads linearizably.
//!
//! Reads: Swarm's followers proxy control calls to the leader, so a write acknowledged by one manager
//! is visible to a read through any other. Here the leader confirms with a quorum that it still leads
//! and has applied everything committed (`Consensus::ensure_linearizable`) before it reads its store;
//! a follower forwards the read to the leader it knows, over the control channel. Every hop goes to
//! the leader of a newer term than the sender's, so forwarding cannot loop. With no leader a read
//! fails with Swarm's lost-quorum error, as `docker node ls` does. `info` describes this node and is
//! answered locally.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::api::*;
use super::ports;
use crate::api::{
    new_id, ManagerStatus, Meta, Network, Node, NodeRole, NodeState, Service, ServiceMode, ServiceSpec, TaskState,
};
use crate::env::runtime;
use crate::env::transport::Peer;
use crate::env::Transport;
use crate::manager::Consensus;
use crate::rpc::{self, Channel, Service as RpcService};
use crate::store::{propose_with_retry, Action, Kind, Object, ProposeError, Store, StoreError, StoreState};

mod autolock;
mod files;

/// The control API of one manager.
pub struct ControlHandler {
    store: Store,
    consensus: Arc<dyn Consensus>,
    node_id: String,
    node_addr: String,
    /// How a follower reaches the leader with a read; without it (unit tests) reads are local.
    transport: Option<Arc<dyn Transport>>,
    /// The managers' secrets key (`crate::secrets`); without it secrets and configs are refused.
    keyring: Option<Arc<crate::secrets::Keyring>>,
    /// The planted bug (simulator only): see [`ControlHandler::with_planted_stale_leader_reads`].
    #[cfg(madsim)]
    stale_leader_reads: bool,
}

/// How long a read or write waits for a leader to be known: an election takes about one election
/// timeout, after the old leader's lease (another) has run out — a demoted leader keeps its
/// followers from voting for that long.
const READ_LEADER_WAIT: Duration = Duration::from_secs(5);
/// How long a forwarded read may take on the leader (a quorum round, then the read).
const READ_FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `node promote` keeps asking the leader to add the node (an attempt itself waits up to
/// three proposal timeouts for the node to catch up, so a promotion ends within ~25 s, under the
/// client's 30 s).
const PROMOTE_WAIT: Duration = Duration::from_secs(12);
/// How long `node demote` waits, once raft let the manager go, to record it in the node object (a
/// demoted leader's successor is elected within a few seconds).
const DEMOTE_FINISH_WAIT: Duration = Duration::from_secs(12);

/// Is `err` raft's "not a member" refusal of a removal (the manager is not in the membership)?
fn is_not_member(err: &ControlError) -> bool {
    matches!(err, ControlError::FailedPrecondition(m) if *m == crate::raft::ReplicaError::NotMember.to_string())
}

impl From<ProposeError> for ControlError {
    fn from(err: ProposeError) -> Self {
        match err {
            ProposeError::NoLeader | ProposeError::NotLeader { .. } => ControlError::NoLeader,
            ProposeError::Rejected(StoreError::NameConflict { kind, name }) => {
                ControlError::Conflict(format!("name conflicts with an existing object: {kind} {name} already exists"))
            }
            ProposeError::Rejected(StoreError::Conflict { kind, id, .. }) => ControlError::Conflict(format!(
                "update out of sequence: {kind} {id} was changed by someone else; inspect it and try again"
            )),
            ProposeError::Rejected(err @ StoreError::NotFound { .. }) => ControlError::NotFound(err.to_string()),
            ProposeError::Rejected(other) => ControlError::FailedPrecondition(other.to_string()),
            other => ControlError::Unavailable(other.to_string()),
        }
    }
}

/// Find an object by full id, then name, then unique id prefix, as Docker resolves arguments.
fn resolve<'a, T>(
    items: impl Iterator<Item = &'a T> + Clone,
    key: &str,
    id: impl Fn(&T) -> &str,
    name: impl Fn(&T) -> &str,
) -> Result<&'a T, usize>
where
    T: 'a,
{
    if let Some(item) = items.clone().find(|i| id(i) == key) {
        return Ok(item);
    }
    if let Some(item) = items.clone().find(|i| name(i) == key) {
        return Ok(item);
    }
    let matches: Vec<&T> = items.filter(|i| !key.is_empty() && id(i).starts_with(key)).collect();
    match matches.as_slice() {
        [one] => Ok(one),
        many => Err(many.len()),
    }
}

fn find_service<'a>(state: &'a StoreState, key: &str) -> Result<&'a Service, ControlError> {
    resolve(state.services.values(), key, |s| &s.id, |s| &s.spec.name).map_err(|n| match n {
        0 => ControlError::NotFound(format!("service {key} not found")),
        n => ControlError::InvalidArgument(format!("service {key} is ambiguous ({n} matches)")),
    })
}

fn find_node<'a>(state: &'a StoreState, key: &str) -> Result<&'a Node, ControlError> {
    resolve(state.nodes.values(), key, |n| &n.id, |n| n.hostname()).map_err(|n| match n {
        0 => ControlError::NotFound(format!("node {key} not found")),
        n => ControlError::InvalidArgument(format!("node {key} is ambiguous ({n} matches)")),
    })
}

fn find_network<'a>(state: &'a StoreState, key: &str) -> Result<&'a Network, ControlError> {
    resolve(state.networks.values(), key, |n| &n.id, |n| &n.name).map_err(|n| match n {
        0 => ControlError::NotFound(format!("network {key} not found")),
        n => ControlError::InvalidArgument(format!("network {key} is ambiguous ({n} matches)")),
    })
}

/// Swarm's checks on a service spec (swarmkit `controlapi/service.go`, `common.go`).
pub fn validate_spec(spec: &ServiceSpec) -> Result<(), ControlError> {
    let invalid = |m: &str| Err(ControlError::InvalidArgument(m.to_string()));
    if spec.name.is_empty() {
        return invalid("meta: name must be provided");
    }
    if spec.name.len() > 63 {
        return invalid("name must be 63 characters or fewer");
    }
    let dns_ok = spec.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !spec.name.starts_with('-')
        && !spec.name.ends_with('-');
    if !dns_ok {
        return invalid("name must be valid as a DNS name component");
    }
    if spec.task.image.trim().is_empty() {
        return invalid("ContainerSpec: image reference must be provided");
    }
    if spec.task.image.chars().any(char::is_whitespace) {
        return Err(ControlError::InvalidArgument(format!(
            "ContainerSpec: {:?} is not a valid repository/tag",
            spec.task.image
        )));
    }
    if spec.endpoint_mode == crate::api::EndpointMode::Dnsrr
        && spec.ports.iter().any(|p| p.publish_mode == crate::api::PublishMode::Ingress)
    {
        // swarmkit's words (controlapi/service.go).
        return invalid("EndpointSpec: port published with ingress mode can't be used with dnsrr mode");
    }
    // swarmkit's `validateMounts`.
    let mut targets = std::collections::BTreeSet::new();
    for mount in &spec.task.mounts {
        if !targets.insert(mount.target.as_str()) {
            return Err(ControlError::InvalidArgument(format!("invalid duplicate mount point: {}", mount.target)));
        }
    }
    for config in [&spec.update_config, &spec.rollback_config] {
        if !(0.0..=1.0).contains(&config.max_failure_ratio) {
            return invalid("TaskSpec: update-maxfailureratio cannot be less than 0 or bigger than 1");
        }
    }
    let limits = spec.task.resources.limits;
    if limits.memory_bytes > 0 && limits.memory_bytes < 4 * 1024 * 1024 {
        return Err(ControlError::InvalidArgument(format!(
            "invalid memory value {}: Must be at least 4MiB",
            limits.memory_bytes
        )));
    }
    crate::scheduler::parse_constraints(&spec.task.placement.constraints)
        .map_err(|err| ControlError::InvalidArgument(err.to_string()))?;
    let mut published: Vec<u16> = spec.ports.iter().map(|p| p.published_port).filter(|p| *p != 0).collect();
    published.sort_unstable();
    if published.windows(2).any(|w| w[0] == w[1]) {
        return invalid("EndpointSpec: duplicate published ports provided");
    }
    Ok(())
}

impl ControlHandler {
    pub fn new(store: Store, consensus: Arc<dyn Consensus>, node_id: String, node_addr: String) -> Self {
        ControlHandler {
            store,
            consensus,
            node_id,
            node_addr,
            transport: None,
            keyring: None,
            #[cfg(madsim)]
            stale_leader_reads: false,
        }
    }

    /// Simulator only: plant a bug for the linearizability check to find. A manager that believes it
    /// leads (raft's own view, which openraft keeps on a leader cut off from its quorum until it
    /// hears of a newer term) answers reads from its store without the quorum round of
    /// `ensure_linearizable`: a deposed leader then serves stale reads.
    #[cfg(madsim)]
    pub fn with_planted_stale_leader_reads(mut self) -> Self {
        self.stale_leader_reads = true;
        self
    }

    /// Seal and open secrets and configs with this manager's key.
    pub fn with_keyring(mut self, keyring: Arc<crate::secrets::Keyring>) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// Let a follower forward reads to the leader over `transport` (see the module docs).
    pub fn with_read_forwarding(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Where a read is answered: `None` here (this manager leads and its store is up to date),
    /// or the leader's answer to the forwarded request.
    async fn route_read(&self, request: &ControlRequest) -> Result<Option<ControlResult>, ControlError> {
        let Some(transport) = self.transport.clone() else { return Ok(None) };
        #[cfg(madsim)]
        if self.stale_leader_reads && self.consensus.leader_addr().as_deref() == Some(self.node_addr.as_str()) {
            return Ok(None);
        }
        let deadline = runtime::now() + READ_LEADER_WAIT;
        let leadership = self.consensus.leadership();
        loop {
            if *leadership.borrow() {
                match self.consensus.ensure_linearizable().await {
                    Ok(()) => return Ok(None),
                    // Deposed meanwhile: ask the new leader.
                    Err(_) if !*leadership.borrow() && runtime::now() < deadline => continue,
                    Err(err) => return Err(err),
                }
            }
            match self.consensus.leader_addr() {
                Some(addr) if addr != self.node_addr => {
                    let reply: Result<ControlResult, _> =
                        rpc::call(transport.as_ref(), &addr, Channel::Control, request, READ_FORWARD_TIMEOUT).await;
                    match reply {
                        Ok(answer) => return Ok(Some(answer)),
                        Err(_) if runtime::now() < deadline => runtime::sleep(Duration::from_millis(50)).await,
                        Err(err) => {
                            return Err(ControlError::Unavailable(format!(
                                "cannot reach the leader at {addr} to read: {err}"
                            )))
                        }
                    }
                }
                _ if runtime::now() >= deadline => return Err(ControlError::NoLeader),
                _ => runtime::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn write<F>(&self, build: F) -> Result<(), ControlError>
    where
        F: FnMut(&StoreState) -> Result<Vec<Action>, ProposeError>,
    {
        propose_with_retry(&self.store, self.consensus.proposer().as_ref(), 5, build).await?;
        Ok(())
    }

    /// Serve one request. No answer carries registry credentials ([`ControlResponse::redacted`]).
    pub async fn handle(&self, request: ControlRequest) -> ControlResult {
        self.serve(request).await.map(ControlResponse::redacted)
    }

    async fn serve(&self, request: ControlRequest) -> ControlResult {
        // A demoted manager answers as Docker's does, at once, rather than waiting for a leader it
        // will never hear from again (raft no longer replicates to it).
        if self.consensus.demoted() {
            return Err(ControlError::NotAManager);
        }
        if request == ControlRequest::SecretsKey {
            return self.give_key();
        }
        if matches!(request, ControlRequest::Unlock { .. }) {
            // Only a locked manager opens with a key; this one is running (moby `errSwarmNotLocked`).
            return Err(ControlError::FailedPrecondition(crate::autolock::NOT_LOCKED.into()));
        }
        if request.is_write() {
            // An election in progress (the leader was demoted or restarted) ends within about an
            // election timeout: wait for it, as reads do, then fail with Swarm's message instead
            // of queueing behind a lost quorum.
            let deadline = runtime::now() + READ_LEADER_WAIT;
            while self.consensus.leader_addr().is_none() && !*self.consensus.leadership().borrow() {
                if runtime::now() >= deadline {
                    return Err(ControlError::NoLeader);
                }
                runtime::sleep(Duration::from_millis(50)).await;
            }
        } else if request != ControlRequest::Info {
            if let Some(answer) = self.route_read(&request).await? {
                return answer;
            }
        }
        match request {
            ControlRequest::Info => self.info(),
            ControlRequest::NodeList => {
                let leader = self.consensus.leader_addr();
                let reachable = self.consensus.reachable_managers();
                Ok(ControlResponse::Nodes(
                    self.store
                        .view(|s| s.nodes.values().map(|n| node_view(n, leader.as_deref(), &reachable)).collect()),
                ))
            }
            ControlRequest::NodeInspect { node } => {
                let leader = self.consensus.leader_addr();
                let reachable = self.consensus.reachable_managers();
                self.store.view(|s| {
                    find_node(s, &node)
                        .map(|n| ControlResponse::Node(Box::new(node_view(n, leader.as_deref(), &reachable))))
                })
            }
            ControlRequest::NodeUpdate { node, availability, label_add, label_rm } => {
                let id = self.store.view(|s| find_node(s, &node).map(|n| n.id.clone()))?;
                self.write(|s| {
                    let Some(n) = s.nodes.get(&id) else { return Ok(vec![]) };
                    let mut n = n.clone();
                    if let Some(a) = availability {
                        n.spec.availability = a;
                    }
                    for (k, v) in &label_add {
                        n.spec.labels.insert(k.clone(), v.clone());
                    }
                    for k in &label_rm {
                        n.spec.labels.remove(k);
                    }
                    Ok(vec![Action::Update(Object::Node(n))])
                })
                .await?;
                Ok(ControlResponse::Done)
            }
            ControlRequest::SecretCreate { spec, data } => {
                self.create_file_object(crate::api::FileKind::Secret, spec, data).await
            }
            ControlRequest::ConfigCreate { spec, data } => {
                self.create_file_object(crate::api::FileKind::Config, spec, data).await
            }
            ControlRequest::SecretList => self.list_secrets(),
            ControlRequest::ConfigList => self.list_configs(),
            ControlRequest::SecretInspect { secret } => self.inspect_secret(&secret),
            ControlRequest::ConfigInspect { config } => self.inspect_config(&config).await,
            ControlRequest::SecretRemove { secret } => {
                self.remove_file_object(crate::api::FileKind::Secret, &secret).await
            }
            ControlRequest::ConfigRemove { config } => {
                self.remove_file_object(crate::api::FileKind::Config, &config).await
            }
            ControlRequest::SecretUpdate { secret, version, spec, data } => {
                self.update_file_object(crate::api::FileKind::Secret, &secret, version, spec, data).await
            }
            ControlRequest::ConfigUpdate { config, version, spec, data } => {
                self.update_file_object(crate::api::FileKind::Config, &config, version, spec, data).await
            }
            ControlRequest::SecretsKey => self.give_key(),
            ControlRequest::CaInspect => self.ca_inspect(),
            ControlRequest::CaRotate { new_root } => self.ca_rotate(new_root).await,
            ControlRequest::NodePromote { node } => self.promote(&node).await,
            ControlRequest::NodeDemote { node } => self.demote(&node).await,
            ControlRequest::NodeRemove { node, force } => self.remove_node(&node, force).await,
            ControlRequest::ServiceCreate { spec } => self.create_service(spec).await,
            ControlRequest::ServiceList => Ok(ControlResponse::Services(
                self.store.view(|s| s.services.values().map(|svc| service_view(s, svc)).collect()),
            )),
            ControlRequest::ServiceInspect { service } => self.store.view(|s| {
                find_service(s, &service).map(|svc| ControlResponse::Service(Box::new(service_view(s, svc))))
            }),
            ControlRequest::ServiceLogs { service, selection } => {
                // A service (id, name or id prefix), or one task by id or id prefix, as Docker takes.
                let (service_id, task) = self.store.view(|s| match find_service(s, &service) {
                    Ok(svc) => Ok((svc.id.clone(), None)),
                    Err(ControlError::NotFound(_)) => resolve(s.tasks.values(), &service, |t| &t.id, |t| &t.id)
                        .map(|t| (t.service_id.clone(), Some(t.id.clone())))
                        .map_err(|n| match n {
                            0 => ControlError::NotFound(format!("no such task or service: {service}")),
                            n => ControlError::InvalidArgument(format!("task {service} is ambiguous ({n} matches)")),
                        }),
                    Err(err) => Err(err),
                })?;
                let Some(transport) = self.transport.clone() else {
                    return Err(ControlError::Unavailable("this manager has no transport to reach the nodes".into()));
                };
                let logs = crate::logs::gather(&self.store, transport, &service_id, task.as_deref(), &selection).await;
                Ok(ControlResponse::Logs(logs))
            }
            ControlRequest::ServiceUpdate { service, version, spec } => {
                self.update_service(&service, version, spec).await
            }
            ControlRequest::ServiceRollback { service } => self.rollback_service(&service).await,
            ControlRequest::ServiceScale { service, replicas } => {
                let current = self.store.view(|s| find_service(s, &service).cloned())?;
                if !matches!(current.spec.mode, ServiceMode::Replicated { .. } | ServiceMode::ReplicatedJob { .. }) {
                    return Err(ControlError::InvalidArgument(format!(
                        "{service}: scale can only be used with replicated or replicated-job mode"
                    )));
                }
                // `scale` is a read-modify-write done here, not by the caller, so a race with the
                // orchestrator (which bumps the service version when it records update progress)
                // or a lagging local copy is ours to retry, not the user's.
                let mut current = current;
                let mut attempts = 0;
                loop {
                    let mut spec = current.spec.clone();
                    spec.mode = match spec.mode {
                        // A job's scale is its total completions (the concurrency stays).
                        ServiceMode::ReplicatedJob { max_concurrent, .. } => {
                            ServiceMode::ReplicatedJob { max_concurrent, total_completions: replicas }
                        }
                        _ => ServiceMode::Replicated { replicas },
                    };
                    match self.update_service(&current.id, current.meta.version, spec).await {
                        Err(ControlError::Conflict(_)) if attempts < 5 => {
                            attempts += 1;
                            runtime::sleep(std::time::Duration::from_millis(50)).await;
                            current = self.store.view(|s| find_service(s, &service).cloned())?;
                        }
                        other => break other,
                    }
                }
            }
            ControlRequest::ServiceRemove { service } => {
                // The service only, as swarmkit's RemoveService: the orchestrator then marks its tasks
                // for removal (tasks of a service that no longer exists, `orchestrator::reaper`).
                // Marking them here too would tie the user's request to every task staying as it was
                // until the commit, and the reaper and the agents change them all the time.
                let id = self.store.view(|s| find_service(s, &service).map(|svc| svc.id.clone()))?;
                self.write(|s| {
                    // Gone since the lookup (another `rm` won): say so, as a first lookup would.
                    if !s.services.contains_key(&id) {
                        return Err(StoreError::NotFound { kind: Kind::Service, id: service.clone() }.into());
                    }
                    Ok(vec![Action::Delete { kind: Kind::Service, id: id.clone() }])
                })
                .await?;
                Ok(ControlResponse::Done)
            }
            ControlRequest::TaskList { service, node } => self.store.view(|s| {
                let service_id = match &service {
                    Some(key) => Some(find_service(s, key)?.id.clone()),
                    None => None,
                };
                let node_id = match &node {
                    Some(key) => Some(find_node(s, key)?.id.clone()),
                    None => None,
                };
                let mut tasks: Vec<_> = s
                    .tasks
                    .values()
                    .filter(|t| service_id.as_ref().is_none_or(|id| &t.service_id == id))
                    .filter(|t| node_id.as_ref().is_none_or(|id| &t.node_id == id))
                    .cloned()
                    .collect();
                tasks.sort_by(|a, b| {
                    (&a.service_name, a.slot, &a.node_id, std::cmp::Reverse(a.meta.created_at_ms), &a.id).cmp(&(
                        &b.service_name,
                        b.slot,
                        &b.node_id,
                        std::cmp::Reverse(b.meta.created_at_ms),
                        &b.id,
                    ))
                });
                Ok(ControlResponse::Tasks(tasks))
            }),
            ControlRequest::JoinToken { role, rotate } => self.join_token(role, rotate).await,
            ControlRequest::UnlockKey { rotate } => self.unlock_key(rotate).await,
            ControlRequest::SwarmAutolock { enabled } => self.set_autolock(enabled).await,
            ControlRequest::Unlock { .. } => Err(ControlError::FailedPrecondition(crate::autolock::NOT_LOCKED.into())),
            ControlRequest::ClusterUpdate { task_history_limit, heartbeat_period_ms, node_cert_expiry_ms } => {
                // swarmkit's controlapi checks (`validateClusterSpec`).
                if node_cert_expiry_ms.is_some_and(|ms| ms < 3_600_000) {
                    return Err(ControlError::InvalidArgument("minimum certificate expiry time is: 1h0m0s".into()));
                }
                if heartbeat_period_ms == Some(0) {
                    return Err(ControlError::InvalidArgument("heartbeat period must be positive".into()));
                }
                self.write(|s| {
                    let Some(cluster) = &s.cluster else { return Ok(vec![]) };
                    let mut cluster = cluster.clone();
                    if let Some(limit) = task_history_limit {
                        cluster.spec.task_history_retention_limit = limit;
                    }
                    if let Some(period) = heartbeat_period_ms {
                        cluster.spec.heartbeat_period_ms = period;
                    }
                    if let Some(expiry) = node_cert_expiry_ms {
                        cluster.spec.node_cert_expiry_ms = expiry;
                    }
                    Ok(vec![Action::Update(Object::Cluster(cluster))])
                })
                .await?;
                Ok(ControlResponse::Done)
            }
            ControlRequest::NetworkCreate { name, driver, attachable, labels, subnet, ingress } => {
                if name.is_empty() {
                    return Err(ControlError::InvalidArgument("network name must be provided".into()));
                }
                if ingress {
                    if attachable {
                        return Err(ControlError::InvalidArgument("ingress network cannot be attachable".into()));
                    }
                    if let Some(present) = self.store.view(|s| s.networks.values().find(|n| n.ingress).cloned()) {
                        return Err(ControlError::Conflict(format!(
                            "ingress network ({}) is already present",
                            present.name
                        )));
                    }
                }
                let driver = if driver.is_empty() { "overlay".to_string() } else { driver };
                if driver != "overlay" {
                    return Err(ControlError::InvalidArgument(format!(
                        "network driver {driver:?} is not supported in a swarm: use -d overlay"
                    )));
                }
                let id = new_id();
                // A default subnet is picked from the state we see; a concurrent create may take it
                // first (the store refuses overlaps), and then we pick again, past every subnet
                // already lost (our store may not have applied the winner's create yet).
                let mut lost: Vec<String> = Vec::new();
                loop {
                    let network = Network {
                        id: id.clone(),
                        meta: Meta::default(),
                        name: name.clone(),
                        driver: driver.clone(),
                        subnet: self.store.view(|s| network_subnet(s, &subnet, &lost))?,
                        attachable,
                        ingress,
                        labels: labels.clone(),
                        leases: Default::default(),
                    };
                    let picked = network.subnet.clone();
                    match self.consensus.proposer().propose(vec![Action::Create(Object::Network(network))]).await {
                        Err(ProposeError::Rejected(StoreError::NameConflict { .. })) => {
                            return Err(ControlError::Conflict(format!("network with name {name} already exists")));
                        }
                        Err(ProposeError::Rejected(StoreError::SubnetOverlap { .. }))
                            if subnet.is_empty() && lost.len() < MAX_SUBNET_PICKS =>
                        {
                            lost.push(picked)
                        }
                        Err(ProposeError::Rejected(StoreError::SubnetOverlap { .. })) => {
                            // Docker's words (libnetwork's ipam).
                            return Err(ControlError::FailedPrecondition(format!(
                                "Pool overlaps with other one on this address space: {picked}"
                            )));
                        }
                        Err(err) => return Err(err.into()),
                        Ok(version) => {
                            self.store.wait_for_version(version).await;
                            return Ok(ControlResponse::Created { id });
                        }
                    }
                }
            }
            ControlRequest::NetworkList => {
                Ok(ControlResponse::Networks(self.store.view(|s| s.networks.values().cloned().collect())))
            }
            ControlRequest::NetworkInspect { network } => {
                self.store.view(|s| find_network(s, &network).map(|n| ControlResponse::Network(Box::new(n.clone()))))
            }
            ControlRequest::NetworkRemove { network } => {
                // What holds the network: a service refuses at once; tasks of removed services
                // still stopping (a `stack rm` removes the services, then the networks) are
                // waited for, up to a bound, where Docker refuses and `stack rm` leaves the network.
                let users = |s: &crate::store::StoreState| {
                    let n = find_network(s, &network)?;
                    // The ingress network is used by every service that publishes ingress ports.
                    let service = s
                        .services
                        .values()
                        .find(|svc| {
                            svc.spec.task.networks.iter().any(|x| x == &n.id || x == &n.name)
                                || (n.ingress
                                    && svc
                                        .spec
                                        .ports
                                        .iter()
                                        .any(|p| p.publish_mode == crate::api::PublishMode::Ingress))
                        })
                        .map(|svc| svc.spec.name.clone());
                    let task = s
                        .tasks
                        .values()
                        .find(|t| t.networks.contains(&n.id) && !t.status.state.is_terminal())
                        // Stopping: desired to stop, or of a removed service (the orchestrator is
                        // about to mark it, `orchestrator::reaper`), as right after `stack rm`.
                        .map(|t| {
                            let stopping = t.desired_state > crate::api::TaskState::Running
                                || !s.services.contains_key(&t.service_id);
                            (t.id.clone(), stopping)
                        });
                    Ok::<_, ControlError>((n.id.clone(), n.name.clone(), n.ingress, service, task))
                };
                let mut versions = self.store.watch_version();
                let deadline = crate::env::runtime::now() + Duration::from_secs(30);
                let (id, name) = loop {
                    let (id, name, ingress, service, task) = self.store.view(users)?;
                    if let Some(service) = service.as_ref().filter(|_| ingress) {
                        return Err(ControlError::FailedPrecondition(format!(
                            "ingress network cannot be removed because service {service} depends on it"
                        )));
                    }
                    if let Some(service) = service {
                        return Err(ControlError::FailedPrecondition(format!(
                            "network {name} is in use by service {service}"
                        )));
                    }
                    match task {
                        None => break (id, name),
                        Some((task, stopping)) => {
                            let left = deadline.saturating_duration_since(crate::env::runtime::now());
                            if !stopping || left.is_zero() {
                                return Err(ControlError::FailedPrecondition(format!(
                                    "network {name} is in use by task {task}"
                                )));
                            }
                            let _ = crate::env::runtime::timeout(left, versions.changed()).await;
                        }
                    }
                };
                let _ = name;
                self.write(|_| Ok(vec![Action::Delete { kind: Kind::Network, id: id.clone() }])).await?;
                Ok(ControlResponse::Done)
            }
        }
    }

    fn info(&self) -> ControlResult {
        let leader_addr = self.consensus.leader_addr();
        self.store.view(|s| {
            let cluster =
                s.cluster.as_ref().ok_or_else(|| ControlError::Unavailable("the swarm is still starting".into()))?;
            let mut manager_addrs: Vec<String> =
                s.nodes.values().filter_map(|n| n.manager_status.as_ref().map(|m| m.addr.clone())).collect();
            manager_addrs.sort();
            Ok(ControlResponse::Info(Box::new(ClusterInfo {
                node_id: self.node_id.clone(),
                node_addr: self.node_addr.clone(),
                is_manager: true,
                cluster_id: cluster.id.clone(),
                managers: s.nodes.values().filter(|n| n.role == NodeRole::Manager).count() as u64,
                nodes: s.nodes.len() as u64,
                spec: cluster.spec.clone(),
                manager_addrs,
                leader_addr: leader_addr.clone(),
                meta: cluster.meta.clone(),
                root_rotation_in_progress: cluster.root_rotation.is_some(),
            })))
        })
    }

    /// Docker's checks of `--network`: each must exist, and none may be the ingress network.
    fn check_networks(&self, spec: &ServiceSpec) -> Result<(), ControlError> {
        self.store.view(|s| {
            for key in &spec.task.networks {
                let network = find_network(s, key).map_err(|err| match err {
                    ControlError::NotFound(_) => ControlError::NotFound(format!("network {key} not found")),
                    other => other,
                })?;
                if network.ingress {
                    return Err(ControlError::InvalidArgument(format!(
                        "Service cannot be explicitly attached to the ingress network \"{}\"",
                        network.name
                    )));
                }
            }
            // Ingress-published ports need the routing mesh's network (removable when unused).
            let ingress_ports = spec.ports.iter().any(|p| p.publish_mode == crate::api::PublishMode::Ingress);
            if ingress_ports && !s.networks.values().any(|n| n.ingress) {
                return Err(ControlError::FailedPrecondition(
                    "service needs ingress network, but no ingress network is present".into(),
                ));
            }
            Ok(())
        })
    }

    async fn create_service(&self, mut spec: ServiceSpec) -> ControlResult {
        validate_spec(&spec)?;
        self.check_networks(&spec)?;
        self.resolve_file_references(&mut spec)?;
        spec.labels.retain(|k, _| !k.is_empty());
        spec.task.registry_auth = spec.task.registry_auth.filter(|auth| !auth.is_empty());
        let id = new_id();
        let endpoint_ports = self.store.view(|s| ports::allocate(s.services.values(), &id, &spec.ports, &[]))?;
        let mut service = Service {
            id: id.clone(),
            meta: Meta::default(),
            endpoint_ports,
            spec,
            previous_spec: None,
            spec_version: 1,
            update_status: None,
            job_status: None,
        };
        stamp_job_iteration(&mut service);
        let name = service.spec.name.clone();
        match self.consensus.proposer().propose(vec![Action::Create(Object::Service(service))]).await {
            Err(ProposeError::Rejected(StoreError::NameConflict { .. })) => Err(ControlError::Conflict(format!(
                "name conflicts with an existing object: service {name} already exists"
            ))),
            Err(err) => Err(err.into()),
            Ok(version) => {
                self.store.wait_for_version(version).await;
                Ok(ControlResponse::Created { id })
            }
        }
    }

    async fn update_service(&self, key: &str, version: u64, mut spec: ServiceSpec) -> ControlResult {
        validate_spec(&spec)?;
        self.check_networks(&spec)?;
        self.resolve_file_references(&mut spec)?;
        let current = self.store.view(|s| find_service(s, key).cloned())?;
        // Clients never see the credentials, so a spec without them keeps the current ones (as
        // Docker's update without `--with-registry-auth` does); empty ones clear them.
        spec.task.registry_auth = match spec.task.registry_auth {
            None => current.spec.task.registry_auth.clone(),
            Some(auth) => Some(auth).filter(|auth| !auth.is_empty()),
        };
        if current.spec.name != spec.name {
            return Err(ControlError::InvalidArgument("renaming services is not supported".into()));
        }
        if std::mem::discriminant(&current.spec.mode) != std::mem::discriminant(&spec.mode) {
            return Err(ControlError::InvalidArgument("service mode change is not allowed".into()));
        }
        if current.meta.version != version {
            return Err(ControlError::Conflict(format!(
                "update out of sequence: service {} changed since version {version}; inspect it and try again",
                current.spec.name
            )));
        }
        // A replica-count change is not a rolling update (Swarm does not bump the spec for it); a
        // job's is a new iteration like any other change.
        let only_scale = !spec.mode.is_job() && {
            let mut scaled = current.spec.clone();
            scaled.mode = spec.mode.clone();
            scaled == spec
        };
        let mut service = if only_scale {
            let mut service = current.clone();
            service.spec = spec;
            service
        } else {
            crate::orchestrator::update_service_spec(&current, spec)
        };
        stamp_job_iteration(&mut service);
        service.endpoint_ports = self.store.view(|s| {
            ports::allocate(s.services.values(), &current.id, &service.spec.ports, &current.endpoint_ports)
        })?;
        let version = self.consensus.proposer().propose(vec![Action::Update(Object::Service(service))]).await?;
        self.store.wait_for_version(version).await;
        Ok(ControlResponse::Done)
    }

    async fn rollback_service(&self, key: &str) -> ControlResult {
        let current = self.store.view(|s| find_service(s, key).cloned())?;
        let mut service = crate::orchestrator::rollback_service(&current, runtime::unix_millis())
            .map_err(|err| ControlError::FailedPrecondition(err.to_string()))?;
        stamp_job_iteration(&mut service);
        service.endpoint_ports = self.store.view(|s| {
            ports::allocate(s.services.values(), &current.id, &service.spec.ports, &current.endpoint_ports)
        })?;
        let version = self.consensus.proposer().propose(vec![Action::Update(Object::Service(service))]).await?;
        self.store.wait_for_version(version).await;
        Ok(ControlResponse::Done)
    }

    /// `swarm ca`: the root certificate and the rotation's progress (never the key).
    fn ca_inspect(&self) -> ControlResult {
        self.store.view(|s| {
            let cluster =
                s.cluster.as_ref().ok_or_else(|| ControlError::Unavailable("the swarm is still starting".into()))?;
            let progress = crate::ca_rotation::progress(s)
                .ok_or_else(|| ControlError::Unavailable("the swarm is still starting".into()))?;
            Ok(ControlResponse::Ca(Box::new(CaView {
                root_ca_pem: cluster.root_ca_pem.clone(),
                root_ca_digest: cluster.root_ca_digest.clone(),
                progress,
                desired_tls: crate::ca_rotation::desired_tls(cluster),
            })))
        })
    }

    /// `swarm ca --rotate`: start a root rotation (DESIGN §6b, [`crate::ca_rotation`]).
    async fn ca_rotate(&self, new_root: Option<crate::ca_rotation::NewRootCa>) -> ControlResult {
        let has_real_ca = self.store.view(|s| s.cluster.as_ref().is_some_and(|c| !c.root_ca_pem.is_empty()));
        let new_root = match new_root {
            Some(root) => {
                if has_real_ca && (root.ca_cert_pem.is_empty() || root.cross_signed_pem.is_empty()) {
                    return Err(ControlError::InvalidArgument(
                        "a new root CA for this swarm needs its certificate, key and cross-signed certificate".into(),
                    ));
                }
                root
            }
            // Only a swarm without certificates (the simulator) rotates to a placeholder digest.
            None if has_real_ca => {
                return Err(ControlError::InvalidArgument(
                    "this swarm has a real CA: the new root must come with its certificate and key (the daemon makes \
                     them for `swarm ca --rotate`)"
                        .into(),
                ))
            }
            None => crate::ca_rotation::NewRootCa {
                ca_cert_pem: String::new(),
                ca_digest: crate::tokens::new_digest(),
                cross_signed_pem: String::new(),
                ca_key_pem: String::new(),
            },
        };
        // The tokens that take over at the end; a digest that makes no valid token is refused.
        let worker = crate::tokens::generate(&new_root.ca_digest);
        if crate::tokens::parse(&worker).is_err() {
            return Err(ControlError::InvalidArgument(format!(
                "invalid root CA digest {:?}: expected 50 base-36 characters",
                new_root.ca_digest
            )));
        }
        let manager = crate::tokens::generate(&new_root.ca_digest);
        self.write(|s| {
            let Some(cluster) = s.cluster.as_ref() else { return Ok(vec![]) };
            if cluster.root_ca_digest == new_root.ca_digest {
                return Ok(vec![]);
            }
            let started = crate::ca_rotation::start(cluster, new_root.clone(), worker.clone(), manager.clone());
            Ok(vec![Action::Update(Object::Cluster(started))])
        })
        .await?;
        Ok(ControlResponse::Done)
    }

    async fn join_token(&self, role: NodeRole, rotate: bool) -> ControlResult {
        if rotate {
            self.write(|s| {
                let Some(cluster) = s.cluster.as_ref() else { return Ok(vec![]) };
                let mut cluster = cluster.clone();
                let token = crate::tokens::generate(&cluster.root_ca_digest);
                match role {
                    NodeRole::Worker => cluster.worker_join_token = token,
                    NodeRole::Manager => cluster.manager_join_token = token,
                }
                Ok(vec![Action::Update(Object::Cluster(cluster))])
            })
            .await?;
        }
        self.store.view(|s| {
            let cluster =
                s.cluster.as_ref().ok_or_else(|| ControlError::Unavailable("the swarm is still starting".into()))?;
            let token = match role {
                NodeRole::Worker => cluster.worker_join_token.clone(),
                NodeRole::Manager => cluster.manager_join_token.clone(),
            };
            Ok(ControlResponse::JoinToken { token, manager_addr: self.node_addr.clone() })
        })
    }

    /// `node promote`: record the desired role and the node's raft id (its next heartbeat tells it to
    /// start a replica), add it to raft once it serves it, then mark it a manager.
    ///
    /// The raft layer only makes the node a voter after it has caught up with the log, so promoting
    /// a node that is down (or crashes meanwhile) never costs the cluster its quorum. If the node does
    /// not come up within [`PROMOTE_WAIT`], the promotion is undone — the node leaves the raft
    /// membership and its desired role is worker again — and the call fails: the cluster is as it
    /// was, and `node promote` can be run again once the node is back.
    async fn promote(&self, key: &str) -> ControlResult {
        let node = self.store.view(|s| find_node(s, key).cloned())?;
        if node.role == NodeRole::Manager {
            return Ok(ControlResponse::Done);
        }
        if node.status.state != NodeState::Ready {
            return Err(ControlError::FailedPrecondition(format!(
                "node {key} is not ready; a node must be up to be promoted"
            )));
        }
        let raft_id = node.manager_status.as_ref().map(|m| m.raft_id).unwrap_or_else(|| runtime::random_u64() >> 1);
        let id = node.id.clone();
        self.write(|s| {
            let Some(n) = s.nodes.get(&id) else { return Ok(vec![]) };
            let mut n = n.clone();
            n.spec.desired_role = NodeRole::Manager;
            n.manager_status = Some(ManagerStatus { raft_id, addr: n.status.addr.clone() });
            Ok(vec![Action::Update(Object::Node(n))])
        })
        .await?;
        // The node learns its new role from its next heartbeat and starts serving raft; the leader
        // adds it once it has caught up (each attempt waits for that a while).
        let addr = node.status.addr.clone();
        let deadline = runtime::now() + PROMOTE_WAIT;
        let err = loop {
            match self.consensus.add_manager(raft_id, addr.clone()).await {
                Ok(()) => break None,
                Err(err) if runtime::now() >= deadline => break Some(err),
                Err(_) => runtime::sleep(Duration::from_millis(500)).await,
            }
        };
        if let Some(err) = err {
            return Err(self.undo_promotion(key, &id, raft_id, err).await);
        }
        self.write(|s| {
            let Some(n) = s.nodes.get(&id) else { return Ok(vec![]) };
            let mut n = n.clone();
            n.role = NodeRole::Manager;
            Ok(vec![Action::Update(Object::Node(n))])
        })
        .await?;
        Ok(ControlResponse::Done)
    }

    /// A promotion that did not complete: take the node out of the raft membership (a learner that
    /// never caught up, normally already gone) and set its desired role back to worker. If it cannot
    /// be taken out — it may have become a voter just before going silent — the promotion stays
    /// recorded, so the node starts its replica when it comes back and the quorum can heal.
    async fn undo_promotion(&self, key: &str, id: &str, raft_id: u64, cause: ControlError) -> ControlError {
        let failed = ControlError::Unavailable(format!("node {key} did not start its manager in time: {cause}"));
        match self.consensus.remove_manager(raft_id).await {
            Ok(()) => {}
            Err(err) if is_not_member(&err) => {}
            Err(_) => return failed,
        }
        let undone = self
            .write(|s| {
                let Some(n) = s.nodes.get(id) else { return Ok(vec![]) };
                if n.role == NodeRole::Manager || n.manager_status.as_ref().map(|m| m.raft_id) != Some(raft_id) {
                    return Ok(vec![]);
                }
                Ok(vec![Action::Update(Object::Node(n.as_worker()))])
            })
            .await;
        match undone {
            Ok(()) => ControlError::Unavailable(format!(
                "node {key} did not start its manager in time ({cause}); it is still a worker"
            )),
            Err(_) => failed,
        }
    }

    async fn demote(&self, key: &str) -> ControlResult {
        let node = self.store.view(|s| find_node(s, key).cloned())?;
        let Some(status) = node.manager_status.clone() else {
            return Ok(ControlResponse::Done);
        };
        let managers = self.store.view(|s| s.nodes.values().filter(|n| n.manager_status.is_some()).count());
        if managers <= 1 {
            return Err(ControlError::FailedPrecondition(
                "attempting to demote the last manager of the swarm: promote another node first".into(),
            ));
        }
        match self.consensus.remove_manager(status.raft_id).await {
            Ok(()) => {}
            // Already out of the raft membership — a promotion that never completed (its manager
            // crashed mid-way), or a demotion that stopped after the raft part: only the node
            // object is left to set back, as swarmkit's role manager does.
            Err(err) if is_not_member(&err) => {}
            Err(err) => return Err(err),
        }
        // Raft has let the manager go; the node object follows. Removing the leader starts an
        // election (after the old leader's lease, up to a few seconds): wait for it rather than
        // report a demotion that happened as failed.
        let id = node.id.clone();
        let deadline = runtime::now() + DEMOTE_FINISH_WAIT;
        loop {
            let written = self
                .write(|s| {
                    let Some(n) = s.nodes.get(&id) else { return Ok(vec![]) };
                    Ok(vec![Action::Update(Object::Node(n.as_worker()))])
                })
                .await;
            match written {
                Ok(()) => return Ok(ControlResponse::Done),
                // This manager demoted itself: out of the raft, it hears of no leader any more.
                // Another manager finishes the demotion (for it only the node object is left).
                Err(ControlError::NoLeader) if self.consensus.demoted() => return self.demote_elsewhere(&id).await,
                Err(ControlError::NoLeader) if runtime::now() < deadline => {
                    runtime::sleep(Duration::from_millis(200)).await
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Ask the other managers, in turn, to finish demoting `node_id` (see [`Self::demote`]).
    async fn demote_elsewhere(&self, node_id: &str) -> ControlResult {
        let Some(transport) = self.transport.clone() else { return Err(ControlError::NoLeader) };
        let others: Vec<String> = self.store.view(|s| {
            s.nodes
                .values()
                .filter(|n| n.id != node_id && n.id != self.node_id)
                .filter_map(|n| n.manager_status.as_ref().map(|m| m.addr.clone()))
                .collect()
        });
        let request = ControlRequest::NodeDemote { node: node_id.to_string() };
        let mut last = ControlError::NoLeader;
        for addr in others {
            let reply: Result<ControlResult, _> =
                rpc::call(transport.as_ref(), &addr, Channel::Control, &request, READ_FORWARD_TIMEOUT).await;
            match reply {
                Ok(Err(ControlError::NotAManager)) => last = ControlError::NotAManager,
                Ok(answer) => return answer,
                Err(err) => last = ControlError::Unavailable(format!("cannot reach the manager at {addr}: {err}")),
            }
        }
        Err(last)
    }

    async fn remove_node(&self, key: &str, force: bool) -> ControlResult {
        let node = self.store.view(|s| find_node(s, key).cloned())?;
        if node.manager_status.is_some() {
            return Err(ControlError::FailedPrecondition(format!(
                "node {key} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal"
            )));
        }
        if node.status.state == NodeState::Ready && !force {
            return Err(ControlError::FailedPrecondition(format!(
                "node {key} is not down and can't be removed; use --force to remove it anyway"
            )));
        }
        let id = node.id.clone();
        self.write(|s| {
            if !s.nodes.contains_key(&id) {
                return Ok(vec![]);
            }
            Ok(vec![Action::Delete { kind: Kind::Node, id: id.clone() }])
        })
        .await?;
        Ok(ControlResponse::Done)
    }
}

fn node_view(node: &Node, leader_addr: Option<&str>, reachable: &[u64]) -> NodeView {
    let (leader, reachability) = match &node.manager_status {
        Some(m) => {
            let leader = leader_addr == Some(m.addr.as_str());
            let reach = if leader || reachable.contains(&m.raft_id) { "reachable" } else { "unreachable" };
            (leader, reach.to_string())
        }
        None => (false, String::new()),
    };
    NodeView { node: node.clone(), leader, reachability }
}

/// A job's spec changed (or it was created): its iteration is the new `spec_version`, started now
/// (the leader's clock, as Swarm's `JobStatus.LastExecution`).
fn stamp_job_iteration(service: &mut Service) {
    if !service.spec.mode.is_job() {
        service.job_status = None;
        return;
    }
    if service.job_status.as_ref().is_some_and(|j| j.iteration == service.spec_version) {
        return;
    }
    service.job_status =
        Some(crate::api::JobStatus { iteration: service.spec_version, last_execution_ms: runtime::unix_millis() });
}

/// Running/desired counts as `service ls` shows them.
pub fn service_view(state: &StoreState, service: &Service) -> ServiceView {
    if service.spec.mode.is_job() {
        let tasks: Vec<&crate::api::Task> = state.tasks.values().filter(|t| t.service_id == service.id).collect();
        let (running, desired, completed) = crate::orchestrator::jobs::job_counts(service, &tasks);
        return ServiceView { service: service.clone(), running, desired, completed };
    }
    let running = state
        .tasks
        .values()
        .filter(|t| {
            t.service_id == service.id && t.status.state == TaskState::Running && t.desired_state == TaskState::Running
        })
        .count() as u64;
    let desired = match service.spec.mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::Global | ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob => {
            state.tasks.values().filter(|t| t.service_id == service.id && t.desired_state == TaskState::Running).count()
                as u64
        }
    };
    ServiceView { service: service.clone(), running, desired, completed: 0 }
}

#[async_trait]
impl RpcService for ControlHandler {
    type Request = ControlRequest;
    type Response = ControlResult;
    async fn call(&self, _peer: Peer, request: ControlRequest) -> ControlResult {
        self.handle(request).await
    }
}

/// The subnet of a new network: the user's (a valid IPv4 CIDR that overlaps no other network's),
/// or the lowest /16 of 10.0.0.0/8 no network uses. A /16 rather than Swarm's /24: each node
/// leases its own part of it (DESIGN §8).
/// How many default subnets one `network create` tries before it gives up (each loss means another
/// create took that subnet at the same moment).
const MAX_SUBNET_PICKS: usize = 32;

/// `also_taken`: subnets this create already lost to concurrent ones.
fn network_subnet(
    state: &crate::store::StoreState,
    requested: &str,
    also_taken: &[String],
) -> Result<String, ControlError> {
    use crate::mesh::lease;
    let taken: Vec<&str> = state
        .networks
        .values()
        .map(|n| n.subnet.as_str())
        .chain(also_taken.iter().map(String::as_str))
        .filter(|s| !s.is_empty())
        .collect();
    if !requested.is_empty() {
        lease::parse_subnet(requested).map_err(|e| ControlError::InvalidArgument(e.to_string()))?;
        if taken.iter().any(|t| lease::overlaps(t, requested)) {
            // Docker's words (libnetwork's ipam).
            return Err(ControlError::FailedPrecondition(format!(
                "Pool overlaps with other one on this address space: {requested}"
            )));
        }
        return Ok(requested.to_string());
    }
    (0..=255u32)
        .map(|n| format!("10.{n}.0.0/16"))
        .find(|candidate| !taken.iter().any(|t| lease::overlaps(t, candidate)))
        .ok_or_else(|| ControlError::FailedPrecondition("no free /16 left in 10.0.0.0/8: give --subnet".into()))
}
