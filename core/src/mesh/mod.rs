//! The data plane of one node (DESIGN §8): a userland L4 proxy that routes service traffic from the
//! endpoint table, the same code in the simulator and the daemon (all I/O through the mesh seam).
//!
//! - [`Mesh::apply`] takes each new table from the agent and reconciles this node's listeners: the
//!   ingress-published ports on the node's own address, the VIPs of the services on the networks
//!   this node has a bridge for, and the resolver on each bridge's gateway.
//! - A client connection is forwarded to a ready endpoint, round-robin: a local task straight, a
//!   task on another node through a tunnel to that node's daemon; a refused or silent backend is
//!   skipped for the next one before the client sees a byte.
//! - Tunnels from peers are accepted only for tasks that are ready on this node.
//! - Every connection to a local task — from a local listener or a tunnel — is counted, so a task
//!   that leaves the rotation can wait for its connections before it is stopped ([`Mesh::wait_idle`]).
//! - The last table applied is kept on the node's disk ([`TABLE_FILE`]) and routed from when the
//!   daemon starts again, so its published ports answer before its agent has a session.

pub mod lease;
pub mod resolver;
pub mod table;
pub mod tunnel;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::env::mesh::{IncomingTunnel, StreamListener};
use crate::env::{runtime, BridgeSpec, MeshError, MeshStream, NodeEnv};
use lease::Lease;
pub use table::{MeshEndpoint, MeshService, MeshTable};
use tunnel::{TunnelHeader, Verdict};

/// How long a connect to one backend may take before the next one is tried: past Linux's first
/// SYN retransmit (1 s), so a backend whose accept queue overflowed once is not given up on.
const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_millis(1_500);
/// The last backend left gets the patience a client straight to it would have.
const LAST_BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the task's node has to read a tunnel header.
const TUNNEL_VERDICT_TIMEOUT: Duration = Duration::from_millis(2_000);
/// How often a listener that could not be opened is tried again.
const LISTEN_RETRY: Duration = Duration::from_secs(2);
/// A UDP flow with no datagram either way for this long ends.
const UDP_FLOW_IDLE: Duration = Duration::from_secs(30);
/// The DNS port of the resolver on each bridge's gateway.
const DNS_PORT: u16 = 53;
/// The last table this node applied, kept on its disk so that a restarted daemon serves its
/// published ports from the moment it starts, before its agent has a session (DESIGN §8).
pub const TABLE_FILE: &str = "mesh/table.json";

/// How a node's data plane behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshOptions {
    /// Drain a task before it stops: wait until no node routes to it, then for its connections
    /// (DESIGN §8). Off only to measure what draining saves (`shoal daemon --no-mesh-drain`).
    pub drain: bool,
    /// Resolvers (`ip:port`) for names the swarm does not know; none = such names get no answer.
    pub dns_upstreams: Vec<String>,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions { drain: true, dns_upstreams: Vec::new() }
    }
}

/// What one listener serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum ListenKey {
    /// An ingress-published TCP port on the node's address: (published port).
    Ingress(u16),
    /// An ingress-published UDP port.
    IngressUdp(u16),
    /// A service VIP on a network: (network id, service id, port).
    Vip(String, String, u16),
    /// The resolver on a network's bridge gateway.
    Dns(String),
}

/// One node's data plane.
pub struct Mesh {
    env: NodeEnv,
    node_id: String,
    /// The IP of the node's advertise address: where published ports listen.
    node_ip: String,
    table: watch::Sender<Arc<MeshTable>>,
    /// Open connections this node splices to each of its tasks.
    active: watch::Sender<BTreeMap<String, usize>>,
    /// Running listeners and the switch that stops each.
    listeners: Mutex<BTreeMap<ListenKey, watch::Sender<bool>>>,
    /// Listeners that could not be opened, with why (retried on the next apply).
    failed: Mutex<BTreeMap<ListenKey, String>>,
    /// Why ingress ports could not be opened on this node (published port → error), for the
    /// status of the service's tasks here.
    ingress_errors: watch::Sender<BTreeMap<u16, String>>,
    /// Bridges this node made (network id → spec).
    bridges: Mutex<BTreeMap<String, BridgeSpec>>,
    /// This node's VIPs: (network id, service id) → address.
    vips: Mutex<BTreeMap<(String, String), Ipv4Addr>>,
    /// VIPs given up whose address is still on a bridge: (device, ip).
    released_vips: Mutex<Vec<(String, String)>>,
    /// Resolvers for names the swarm does not know (`ip:53`), from the host's configuration.
    upstreams: Mutex<Vec<String>>,
    options: MeshOptions,
    /// Flipped by [`Mesh::shutdown`]: the tunnel listener and the retry loop end (a node that
    /// leaves and joins again in the same daemon makes a new `Mesh`).
    stop: watch::Sender<bool>,
    /// One reconcile at a time: two would both open a missing listener, and an older table could
    /// reopen what a newer one closed.
    reconciling: tokio::sync::Mutex<()>,
    /// Held while the table is written to disk, so that [`Mesh::shutdown`] can remove the file
    /// knowing no write is in flight.
    persisting: tokio::sync::Mutex<()>,
    /// Round-robin position per service, from a seeded random start.
    round_robin: Mutex<BTreeMap<String, u64>>,
}

/// Counts one open connection to a local task for as long as it lives.
struct ActiveGuard {
    mesh: Arc<Mesh>,
    task_id: String,
}

impl ActiveGuard {
    fn new(mesh: &Arc<Mesh>, task_id: &str) -> Self {
        mesh.active.send_modify(|active| *active.entry(task_id.to_string()).or_default() += 1);
        ActiveGuard { mesh: mesh.clone(), task_id: task_id.to_string() }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.mesh.active.send_modify(|active| {
            if let Some(count) = active.get_mut(&self.task_id) {
                *count -= 1;
                if *count == 0 {
                    active.remove(&self.task_id);
                }
            }
        });
    }
}

fn ip_of(addr: &str) -> String {
    match addr.rsplit_once(':') {
        Some((ip, _)) => ip.trim_start_matches('[').trim_end_matches(']').to_string(),
        None => addr.to_string(),
    }
}

impl Mesh {
    pub fn new(env: NodeEnv, node_id: String, options: MeshOptions) -> Arc<Mesh> {
        let node_ip = ip_of(&env.addr);
        Arc::new(Mesh {
            env,
            node_id,
            node_ip,
            table: watch::channel(Arc::new(MeshTable::default())).0,
            active: watch::channel(BTreeMap::new()).0,
            listeners: Mutex::new(BTreeMap::new()),
            failed: Mutex::new(BTreeMap::new()),
            ingress_errors: watch::channel(BTreeMap::new()).0,
            bridges: Mutex::new(BTreeMap::new()),
            vips: Mutex::new(BTreeMap::new()),
            released_vips: Mutex::new(Vec::new()),
            stop: watch::channel(false).0,
            reconciling: tokio::sync::Mutex::new(()),
            persisting: tokio::sync::Mutex::new(()),
            round_robin: Mutex::new(BTreeMap::new()),
            upstreams: Mutex::new(options.dns_upstreams.clone()),
            options,
        })
    }

    /// The IP published ports listen on, and a task on no network is reached at.
    pub fn node_ip(&self) -> &str {
        &self.node_ip
    }

    pub fn options(&self) -> &MeshOptions {
        &self.options
    }

    /// Where names the swarm does not know are forwarded (`ip:port` each).
    pub fn set_upstreams(&self, upstreams: Vec<String>) {
        *self.upstreams.lock().expect("mesh lock") = upstreams;
    }

    /// The table this node routes from.
    pub fn table(&self) -> Arc<MeshTable> {
        self.table.borrow().clone()
    }

    /// Start the data plane (once, when the node starts): route from the table the node last
    /// applied, if its disk has one — a restarted daemon's published ports answer at once rather
    /// than only once its agent has a session and a fresh table, which takes as long as the swarm
    /// has no leader — keep later tables on disk, and accept tunnels from peers (a node without a
    /// data address serves none).
    pub async fn start(self: &Arc<Self>) {
        self.restore().await;
        self.keep_tables();
        if self.env.data_addr.is_empty() {
            return;
        }
        match self.env.mesh.listen_tunnels().await {
            Ok(mut listener) => {
                let mesh = self.clone();
                let mut stop = self.stop.subscribe();
                runtime::spawn(async move {
                    loop {
                        let accepted = tokio::select! {
                            biased;
                            _ = stopped(&mut stop) => return,
                            accepted = listener.accept() => accepted,
                        };
                        match accepted {
                            Ok(incoming) => {
                                let mesh = mesh.clone();
                                runtime::spawn(async move { mesh.serve_tunnel(incoming).await });
                            }
                            Err(err) => {
                                mesh.trace("mesh.tunnel_accept_failed", serde_json::json!({"error": err.to_string()}));
                                runtime::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                });
            }
            Err(err) => {
                self.trace("mesh.listen_failed", serde_json::json!({"what": "tunnels", "error": err.to_string()}))
            }
        }
        let mesh = Arc::downgrade(self);
        let mut stop = self.stop.subscribe();
        runtime::spawn(async move {
            // Listeners that failed (a port held by someone else) are tried again.
            loop {
                tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => return,
                    _ = runtime::sleep(LISTEN_RETRY) => {}
                }
                let Some(mesh) = mesh.upgrade() else { return };
                if !mesh.failed.lock().expect("mesh lock").is_empty() {
                    mesh.reconcile().await;
                }
            }
        });
    }

    fn trace(&self, kind: &str, fields: serde_json::Value) {
        self.env.tracer.emit(kind, fields);
    }

    /// Apply the table kept on disk, if there is one. A stale table is safe to route from: a peer
    /// takes a tunnel only for a task ready in its own table, and a refused or silent backend is
    /// skipped for the next one, as with any table a partition left behind.
    async fn restore(self: &Arc<Self>) {
        let bytes = match self.env.disk.read(TABLE_FILE).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(err) => {
                return self.trace("mesh.restore_failed", serde_json::json!({"error": err.to_string()}));
            }
        };
        match serde_json::from_slice::<MeshTable>(&bytes) {
            Ok(table) => {
                self.trace("mesh.restored", serde_json::json!({"services": table.services.len()}));
                self.apply(table).await;
            }
            Err(err) => self.trace(
                "mesh.restore_failed",
                serde_json::json!({"error": format!("{TABLE_FILE}: {err}; starting without a table")}),
            ),
        }
    }

    /// Write each new table to disk until the mesh stops, off the path that applies it: tables that
    /// arrive while one is being written are skipped for the latest.
    fn keep_tables(self: &Arc<Self>) {
        let mesh = Arc::downgrade(self);
        let mut tables = self.table.subscribe();
        tables.borrow_and_update();
        let mut stop = self.stop.subscribe();
        runtime::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => return,
                    changed = tables.changed() => if changed.is_err() { return },
                }
                let table = tables.borrow_and_update().clone();
                let Some(mesh) = mesh.upgrade() else { return };
                mesh.persist(&table).await;
            }
        });
    }

    async fn persist(&self, table: &MeshTable) {
        let _one_write = self.persisting.lock().await;
        if *self.stop.borrow() {
            return;
        }
        let written = match serde_json::to_vec(table) {
            Ok(bytes) => self.env.disk.write_atomic(TABLE_FILE, &bytes).await.map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        if let Err(err) = written {
            self.trace("mesh.persist_failed", serde_json::json!({"error": err}));
        }
    }

    /// Route from `table` from now on, and open/close listeners to match it.
    pub async fn apply(self: &Arc<Self>, table: MeshTable) {
        self.table.send_replace(Arc::new(table));
        self.reconcile().await;
    }

    /// Make sure this node has its bridge for `network_id` (waiting up to `wait` for the leader to
    /// lease it a part of the subnet), and return it.
    pub async fn bridge(self: &Arc<Self>, network_id: &str, wait: Duration) -> Result<BridgeSpec, String> {
        if let Some(bridge) = self.bridges.lock().expect("mesh lock").get(network_id) {
            return Ok(bridge.clone());
        }
        let mut tables = self.table.subscribe();
        let deadline = runtime::sleep(wait);
        tokio::pin!(deadline);
        let spec = loop {
            let found = {
                let table = tables.borrow_and_update();
                match table.networks.get(network_id) {
                    Some(network) => lease::bridge_for(&network.network, &self.node_id).ok_or_else(|| {
                        match lease::next_lease(&network.network.subnet, &network.network.leases) {
                            Err(err @ lease::LeaseError::Exhausted { .. }) => format!("{}: {err}", network.name),
                            _ => network.name.clone(),
                        }
                    }),
                    None => Err(network_id.to_string()),
                }
            };
            match found {
                Ok(spec) => break spec,
                Err(name) => {
                    tokio::select! {
                        biased;
                        _ = &mut deadline => {
                            return Err(format!("network {name}: this node has no address lease of it yet"));
                        }
                        changed = tables.changed() => {
                            if changed.is_err() {
                                return Err(format!("network {name}: the node is stopping"));
                            }
                        }
                    }
                }
            }
        };
        self.env.executor.ensure_network(&spec).await.map_err(|e| format!("network {}: {e}", spec.name))?;
        self.bridges.lock().expect("mesh lock").insert(network_id.to_string(), spec.clone());
        self.trace("mesh.bridge", serde_json::json!({"network_id": network_id, "subnet": spec.subnet}));
        self.reconcile().await;
        Ok(spec)
    }

    /// The listeners the current table asks for, with the address each binds.
    fn desired(&self, table: &MeshTable) -> BTreeMap<ListenKey, String> {
        let mut desired = BTreeMap::new();
        for service in table.services.values() {
            for port in service.ingress_ports() {
                let key = if port.protocol == "udp" {
                    ListenKey::IngressUdp(port.published_port)
                } else {
                    ListenKey::Ingress(port.published_port)
                };
                desired.insert(key, format!("{}:{}", self.node_ip, port.published_port));
            }
        }
        let bridges = self.bridges.lock().expect("mesh lock").clone();
        let mut vips = self.vips.lock().expect("mesh lock");
        // VIPs of services gone (or moved off the network) are freed first, so addresses recycle;
        // their addresses come off the bridge once their listeners are closed.
        let mut released = self.released_vips.lock().expect("mesh lock");
        vips.retain(|(network, target), ip| {
            let keep = bridges.contains_key(network)
                && match target.strip_prefix(TASK_ALIAS) {
                    // An alias lives while its task is a ready endpoint on another node.
                    Some(task) => table.services.values().any(|s| {
                        s.networks.contains(network)
                            && s.endpoints.iter().any(|e| e.task_id == task && e.node_id != self.node_id)
                    }),
                    None => table.services.get(target).is_some_and(|s| s.networks.contains(network)),
                };
            if !keep {
                if let Some(bridge) = bridges.get(network) {
                    released.push((bridge.device.clone(), ip.to_string()));
                }
            }
            keep
        });
        drop(released);
        for (network_id, bridge) in &bridges {
            desired.insert(ListenKey::Dns(network_id.clone()), format!("{}:{DNS_PORT}", bridge.gateway));
            let Some(lease) = Lease::parse(&bridge.subnet) else { continue };
            for service in table.services.values().filter(|s| s.networks.contains(network_id)) {
                if service.endpoint_mode != crate::api::EndpointMode::Vip {
                    continue;
                }
                let key = (network_id.clone(), service.id.clone());
                let vip = match vips.get(&key) {
                    Some(vip) => *vip,
                    None => {
                        let taken: BTreeSet<Ipv4Addr> =
                            vips.iter().filter(|((n, _), _)| n == network_id).map(|(_, ip)| *ip).collect();
                        let Some(free) = lease.vips().find(|ip| !taken.contains(ip)) else { continue };
                        vips.insert(key, free);
                        free
                    }
                };
                for port in service.vip_ports() {
                    desired
                        .insert(ListenKey::Vip(network_id.clone(), service.id.clone(), port), format!("{vip}:{port}"));
                }
            }
            // Aliases of the tasks on other nodes, for `tasks.<service>` and dnsrr names: no
            // container reaches another node's bridge, so the name gives an address this node's
            // proxy listens on, tunnelling to exactly that task.
            for service in table.services.values().filter(|s| s.networks.contains(network_id)) {
                let ports = service.vip_ports();
                for endpoint in service.endpoints.iter().filter(|e| e.node_id != self.node_id) {
                    let key = (network_id.clone(), format!("{TASK_ALIAS}{}", endpoint.task_id));
                    let alias = match vips.get(&key) {
                        Some(alias) => *alias,
                        None => {
                            let taken: BTreeSet<Ipv4Addr> =
                                vips.iter().filter(|((n, _), _)| n == network_id).map(|(_, ip)| *ip).collect();
                            let Some(free) = lease.aliases().find(|ip| !taken.contains(ip)) else { continue };
                            vips.insert(key.clone(), free);
                            free
                        }
                    };
                    for port in &ports {
                        desired.insert(
                            ListenKey::Vip(network_id.clone(), key.1.clone(), *port),
                            format!("{alias}:{port}"),
                        );
                    }
                }
            }
        }
        desired
    }

    /// This node's alias of a task on another node, on `network_id`.
    pub fn task_alias(&self, network_id: &str, task_id: &str) -> Option<Ipv4Addr> {
        self.vip(network_id, &format!("{TASK_ALIAS}{task_id}"))
    }

    /// This node's VIP of `service_id` on `network_id`.
    pub fn vip(&self, network_id: &str, service_id: &str) -> Option<Ipv4Addr> {
        self.vips.lock().expect("mesh lock").get(&(network_id.to_string(), service_id.to_string())).copied()
    }

    /// Why ingress ports could not be opened here (published port → error); changes are watched.
    pub fn ingress_errors(&self) -> watch::Receiver<BTreeMap<u16, String>> {
        self.ingress_errors.subscribe()
    }

    fn publish_ingress_errors(&self) {
        let errors: BTreeMap<u16, String> = self
            .failed
            .lock()
            .expect("mesh lock")
            .iter()
            .filter_map(|(key, err)| match key {
                ListenKey::Ingress(port) | ListenKey::IngressUdp(port) => Some((*port, err.clone())),
                _ => None,
            })
            .collect();
        self.ingress_errors.send_if_modified(|current| {
            let changed = *current != errors;
            *current = errors;
            changed
        });
    }

    async fn reconcile(self: &Arc<Self>) {
        let _one_at_a_time = self.reconciling.lock().await;
        let table = self.table();
        // Bridges of networks that were removed go (their tasks are gone: `network rm` waits).
        let gone: Vec<BridgeSpec> = {
            let mut bridges = self.bridges.lock().expect("mesh lock");
            let ids: Vec<String> = bridges.keys().filter(|id| !table.networks.contains_key(*id)).cloned().collect();
            ids.iter().filter_map(|id| bridges.remove(id)).collect()
        };
        let desired = self.desired(&table);
        let stale: Vec<ListenKey> = {
            let mut listeners = self.listeners.lock().expect("mesh lock");
            let stale: Vec<ListenKey> = listeners.keys().filter(|k| !desired.contains_key(*k)).cloned().collect();
            for key in &stale {
                if let Some(stop) = listeners.remove(key) {
                    stop.send_replace(true);
                }
            }
            stale
        };
        for key in stale {
            self.trace("mesh.unlisten", serde_json::json!({"listener": format!("{key:?}")}));
        }
        for bridge in gone {
            match self.env.executor.remove_network(&bridge.name).await {
                Ok(()) => self.trace("mesh.bridge_removed", serde_json::json!({"network_id": bridge.network_id})),
                Err(err) => self.trace(
                    "mesh.bridge_remove_failed",
                    serde_json::json!({"network_id": bridge.network_id, "error": err.to_string()}),
                ),
            }
        }
        let released = std::mem::take(&mut *self.released_vips.lock().expect("mesh lock"));
        for (device, ip) in released {
            if let Err(err) = self.env.mesh.remove_local_address(&device, &ip).await {
                self.trace("mesh.vip_release_failed", serde_json::json!({"vip": ip, "error": err.to_string()}));
            }
        }
        self.failed.lock().expect("mesh lock").retain(|k, _| desired.contains_key(k));
        for (key, addr) in desired {
            if self.listeners.lock().expect("mesh lock").contains_key(&key) {
                self.failed.lock().expect("mesh lock").remove(&key);
                continue;
            }
            match self.open(&key, &addr).await {
                Ok(stop) => {
                    self.failed.lock().expect("mesh lock").remove(&key);
                    self.listeners.lock().expect("mesh lock").insert(key.clone(), stop);
                    self.trace("mesh.listen", serde_json::json!({"listener": format!("{key:?}"), "addr": addr}));
                }
                Err(err) => {
                    let first = self.failed.lock().expect("mesh lock").insert(key.clone(), err.to_string()).is_none();
                    if first {
                        self.trace(
                            "mesh.listen_failed",
                            serde_json::json!({"listener": format!("{key:?}"), "addr": addr, "error": err.to_string()}),
                        );
                    }
                }
            }
        }
        self.publish_ingress_errors();
    }

    /// Open one listener and serve it until its switch is flipped.
    async fn open(self: &Arc<Self>, key: &ListenKey, addr: &str) -> Result<watch::Sender<bool>, MeshError> {
        let (stop, stopped) = watch::channel(false);
        match key {
            ListenKey::Ingress(port) => {
                let listener = self.env.mesh.listen_tcp(addr).await?;
                let route = Route::Ingress { published: *port };
                runtime::spawn(self.clone().accept_loop(listener, route, stopped));
            }
            ListenKey::Vip(network, target, port) => {
                let bridge = self.bridges.lock().expect("mesh lock").get(network).cloned();
                if let Some(bridge) = bridge {
                    self.env.mesh.add_local_address(&bridge.device, &ip_of(addr)).await?;
                }
                let listener = self.env.mesh.listen_tcp(addr).await?;
                let route = match target.strip_prefix(TASK_ALIAS) {
                    Some(task_id) => Route::Task { task_id: task_id.to_string(), port: *port },
                    None => Route::Service { service_id: target.clone(), port: *port },
                };
                runtime::spawn(self.clone().accept_loop(listener, route, stopped));
            }
            ListenKey::IngressUdp(port) => {
                let socket = self.env.mesh.bind_udp(addr).await?;
                runtime::spawn(self.clone().udp_loop(socket, *port, stopped));
            }
            ListenKey::Dns(network) => {
                let socket = self.env.mesh.bind_udp(addr).await?;
                runtime::spawn(self.clone().dns_loop(socket, network.clone(), stopped));
            }
        }
        Ok(stop)
    }

    async fn accept_loop(
        self: Arc<Self>,
        mut listener: Box<dyn StreamListener>,
        route: Route,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => return,
                accepted = listener.accept() => match accepted {
                    Ok((client, client_addr)) => {
                        let mesh = self.clone();
                        let route = route.clone();
                        runtime::spawn(async move { mesh.forward(client, client_addr, route).await });
                    }
                    Err(err) => {
                        self.trace("mesh.accept_failed", serde_json::json!({"error": err.to_string()}));
                        runtime::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    }

    /// Which service and target port a route leads to, as of the current table.
    fn resolve_route(&self, table: &MeshTable, route: &Route) -> Option<(String, u16)> {
        match route {
            Route::Service { service_id, port } => Some((service_id.clone(), *port)),
            Route::Task { task_id, port } => table
                .services
                .values()
                .find(|s| s.endpoints.iter().any(|e| &e.task_id == task_id))
                .map(|s| (s.id.clone(), *port)),
            Route::Ingress { published } => table.services.values().find_map(|s| {
                s.ingress_ports()
                    .find(|p| p.published_port == *published && p.protocol != "udp")
                    .map(|p| (s.id.clone(), p.target_port))
            }),
        }
    }

    /// The service's endpoints in the order to try them: round robin from a moving start.
    fn candidates(&self, service: &MeshService) -> Vec<MeshEndpoint> {
        let n = service.endpoints.len();
        if n == 0 {
            return Vec::new();
        }
        let position = {
            let mut positions = self.round_robin.lock().expect("mesh lock");
            let position = positions.entry(service.id.clone()).or_insert_with(runtime::random_u64);
            *position = position.wrapping_add(1);
            *position
        };
        let start = (position % n as u64) as usize;
        (0..n).map(|i| service.endpoints[(start + i) % n].clone()).collect()
    }

    /// Forward one client connection: try each ready endpoint until one takes it, then splice.
    async fn forward(self: Arc<Self>, mut client: MeshStream, client_addr: String, route: Route) {
        let table = self.table();
        let Some((service_id, port)) = self.resolve_route(&table, &route) else { return };
        let Some(service) = table.services.get(&service_id) else { return };
        let mut failures = Vec::new();
        let candidates = match &route {
            // A task's alias leads to that task alone.
            Route::Task { task_id, .. } => {
                service.endpoints.iter().filter(|e| &e.task_id == task_id).cloned().collect()
            }
            _ => self.candidates(service),
        };
        let last = candidates.len().saturating_sub(1);
        // A service route may be redirected by a task's node whose table is newer than ours.
        let any_task = !matches!(route, Route::Task { .. });
        for (i, endpoint) in candidates.into_iter().enumerate() {
            let patience = if i == last { LAST_BACKEND_CONNECT_TIMEOUT } else { BACKEND_CONNECT_TIMEOUT };
            let how = Dial { udp: false, patience, any_task, redirected: false };
            match self.dial_with(&endpoint, &service_id, port, &client_addr, how).await {
                Ok((mut backend, guard)) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                    drop(guard);
                    return;
                }
                Err(err) => failures.push(format!("{}: {err}", endpoint.task_id)),
            }
        }
        self.trace(
            "mesh.no_backend",
            serde_json::json!({"service_id": service_id, "port": port, "client": client_addr, "tried": failures}),
        );
    }

    /// A stream to one endpoint's port: straight to a local task, else through its node's daemon
    /// (for `how.udp`, a UDP tunnel).
    async fn dial_with(
        self: &Arc<Self>,
        endpoint: &MeshEndpoint,
        service_id: &str,
        port: u16,
        client: &str,
        how: Dial,
    ) -> Result<(MeshStream, Option<ActiveGuard>), String> {
        let Dial { udp, patience, any_task, redirected } = how;
        if endpoint.node_id == self.node_id && !udp {
            let addr = endpoint.local_address().ok_or("the task has no address")?;
            // Counted before the table is looked at again, so a drain that sees no connection
            // never misses this one; a task that left the rotation meanwhile is skipped.
            let guard = ActiveGuard::new(self, &endpoint.task_id);
            if !self.table().routes_to(&endpoint.task_id) {
                return Err("the task left the rotation".into());
            }
            let stream =
                self.env.mesh.connect_tcp(&format!("{addr}:{port}"), patience).await.map_err(|e| e.to_string())?;
            return Ok((stream, Some(guard)));
        }
        let table = self.table();
        let node_addr =
            table.nodes.get(&endpoint.node_id).filter(|a| !a.is_empty()).ok_or("its node has no data address")?;
        let mut stream =
            self.env.mesh.open_tunnel(node_addr, BACKEND_CONNECT_TIMEOUT).await.map_err(|e| e.to_string())?;
        let header = TunnelHeader {
            service_id: service_id.to_string(),
            task_id: endpoint.task_id.clone(),
            port,
            client: client.to_string(),
            udp,
            connect_ms: patience.as_millis() as u64,
            any_task,
            redirected,
        };
        tunnel::write_frame(&mut stream, &header).await.map_err(|e| e.to_string())?;
        // The task's node connects within `patience`; its verdict comes after that.
        match tunnel::read_frame::<_, Verdict>(&mut stream, patience + TUNNEL_VERDICT_TIMEOUT).await {
            Ok(Verdict::Ok) => Ok((stream, None)),
            Ok(Verdict::Refused(reason)) => Err(format!("{node_addr} refused: {reason}")),
            Err(err) => Err(format!("{node_addr}: {err}")),
        }
    }

    /// A tunnel from a peer: splice it to the named local task if that task is ready here.
    async fn serve_tunnel(self: Arc<Self>, incoming: IncomingTunnel) {
        let IncomingTunnel { mut stream, peer_addr, .. } = incoming;
        let header = match tunnel::read_frame::<_, TunnelHeader>(&mut stream, TUNNEL_VERDICT_TIMEOUT).await {
            Ok(header) => header,
            Err(err) => {
                self.trace("mesh.tunnel_refused", serde_json::json!({"peer": peer_addr, "error": err.to_string()}));
                return;
            }
        };
        // Counted before the table is looked at, so a drain that sees no connection never misses
        // this one.
        let guard = ActiveGuard::new(&self, &header.task_id);
        let table = self.table();
        let protocol = if header.udp { "udp" } else { "tcp" };
        let target = match table.local_endpoint(&self.node_id, &header.service_id, &header.task_id) {
            None => Err(format!("task {} is not ready on this node", header.task_id)),
            Some(endpoint) => {
                let served = endpoint.ports.iter().any(|(p, port)| p == protocol && *port == header.port)
                    || table.services.get(&header.service_id).is_some_and(|s| {
                        s.ports.iter().any(|p| p.protocol == protocol && p.target_port == header.port)
                    });
                match endpoint.local_address() {
                    Some(addr) if served => Ok(format!("{addr}:{}", header.port)),
                    Some(_) => Err(format!("task {} serves no {protocol} port {}", header.task_id, header.port)),
                    None => Err(format!("task {} has no address", header.task_id)),
                }
            }
        };
        let target = match target {
            Ok(target) => target,
            Err(reason) => {
                // The opener's table names a task this node no longer runs ready (its table is
                // older than ours: a node whose session has not caught up after a partition).
                // For a service route, serve the connection from this node's newer table instead,
                // once: a redirected tunnel is never redirected again.
                if header.any_task && !header.redirected && !header.udp {
                    drop(guard);
                    self.redirect(stream, header, reason).await;
                    return;
                }
                let _ = tunnel::write_frame(&mut stream, &Verdict::Refused(reason)).await;
                return;
            }
        };
        if header.udp {
            // Unbound, as the TCP path's dial: the kernel picks the source for the route to the task
            // (the bridge's gateway); the node's own address as source is a martian on a bridge when
            // the node's address is a loopback one (a daemon on 127.0.0.x).
            let socket = match self.env.mesh.bind_udp("0.0.0.0:0").await {
                Ok(socket) => socket,
                Err(err) => {
                    let _ = tunnel::write_frame(&mut stream, &Verdict::Refused(err.to_string())).await;
                    return;
                }
            };
            if tunnel::write_frame(&mut stream, &Verdict::Ok).await.is_err() {
                return;
            }
            let _guard = guard;
            let (reader, writer) = tokio::io::split(stream);
            let writer = Arc::new(tokio::sync::Mutex::new(writer));
            let mut rx = spawn_datagram_reader(reader);
            let routed = {
                let (mesh, task_id) = (self.clone(), header.task_id.clone());
                move || mesh.table().routes_to(&task_id)
            };
            relay_local_udp(socket, target, &mut rx, routed, |reply| {
                let writer = writer.clone();
                async move {
                    let _ = tunnel::write_datagram(&mut *writer.lock().await, &reply).await;
                }
            })
            .await;
            return;
        }
        let patience = match header.connect_ms {
            0 => BACKEND_CONNECT_TIMEOUT,
            ms => Duration::from_millis(ms).min(LAST_BACKEND_CONNECT_TIMEOUT),
        };
        match self.env.mesh.connect_tcp(&target, patience).await {
            Ok(mut backend) => {
                if tunnel::write_frame(&mut stream, &Verdict::Ok).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut backend).await;
                }
                drop(guard);
            }
            Err(err) => {
                let _ = tunnel::write_frame(&mut stream, &Verdict::Refused(err.to_string())).await;
            }
        }
    }

    /// Serve a tunnel whose task is not ready here from this node's own table: the service's
    /// endpoints in turn (local, or through one more tunnel that may not be redirected again).
    async fn redirect(self: &Arc<Self>, mut stream: MeshStream, header: TunnelHeader, reason: String) {
        let table = self.table();
        let Some(service) = table.services.get(&header.service_id) else {
            let _ = tunnel::write_frame(&mut stream, &Verdict::Refused(reason)).await;
            return;
        };
        for endpoint in self.candidates(service).into_iter().filter(|e| e.task_id != header.task_id) {
            let how = Dial { udp: false, patience: BACKEND_CONNECT_TIMEOUT, any_task: true, redirected: true };
            if let Ok((mut backend, guard)) =
                self.dial_with(&endpoint, &header.service_id, header.port, &header.client, how).await
            {
                self.trace(
                    "mesh.redirect",
                    serde_json::json!({"asked_for": header.task_id, "served_by": endpoint.task_id}),
                );
                if tunnel::write_frame(&mut stream, &Verdict::Ok).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut backend).await;
                }
                drop(guard);
                return;
            }
        }
        let _ = tunnel::write_frame(&mut stream, &Verdict::Refused(reason)).await;
    }

    /// UDP on an ingress port. Each client (source address) is a *flow*, pinned to one ready
    /// endpoint of the service on any node — straight to a local task, through a UDP tunnel to a
    /// task elsewhere — with the task's replies relayed back; a flow idle for
    /// [`UDP_FLOW_IDLE`] ends.
    async fn udp_loop(
        self: Arc<Self>,
        socket: Arc<dyn crate::env::mesh::DatagramSocket>,
        published: u16,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut flows: BTreeMap<String, mpsc::Sender<Vec<u8>>> = BTreeMap::new();
        let mut buf = vec![0u8; 65_536];
        while let Some((len, client)) = next_datagram(socket.as_ref(), &mut buf, &mut stop).await {
            flows.retain(|_, flow| !flow.is_closed());
            if let Some(flow) = flows.get(&client) {
                // A full flow drops the datagram, as a full socket buffer would.
                let _ = flow.try_send(buf[..len].to_vec());
                continue;
            }
            let table = self.table();
            let target = table.services.values().find_map(|s| {
                s.ingress_ports()
                    .find(|p| p.published_port == published && p.protocol == "udp")
                    .map(|p| (s.clone(), p.target_port))
            });
            let Some((service, port)) = target else { continue };
            let (tx, rx) = mpsc::channel(256);
            let _ = tx.try_send(buf[..len].to_vec());
            flows.insert(client.clone(), tx);
            let (mesh, front) = (self.clone(), socket.clone());
            runtime::spawn(async move { mesh.udp_flow(front, client, service, port, rx).await });
        }
    }

    /// One UDP flow: the first endpoint that takes it carries every datagram of the client.
    async fn udp_flow(
        self: Arc<Self>,
        front: Arc<dyn crate::env::mesh::DatagramSocket>,
        client: String,
        service: MeshService,
        port: u16,
        mut datagrams: mpsc::Receiver<Vec<u8>>,
    ) {
        for endpoint in self.candidates(&service) {
            if endpoint.node_id == self.node_id {
                let Some(addr) = endpoint.local_address() else { continue };
                // Unbound, as in `serve_tunnel`: the route to the task picks the source.
                let Ok(backend) = self.env.mesh.bind_udp("0.0.0.0:0").await else { return };
                let _guard = ActiveGuard::new(&self, &endpoint.task_id);
                let routed = {
                    let (mesh, task_id) = (self.clone(), endpoint.task_id.clone());
                    move || mesh.table().routes_to(&task_id)
                };
                relay_local_udp(backend, format!("{addr}:{port}"), &mut datagrams, routed, |reply| {
                    let (front, client) = (front.clone(), client.clone());
                    async move {
                        let _ = front.send_to(&reply, &client).await;
                    }
                })
                .await;
                return;
            }
            let how = Dial { udp: true, patience: BACKEND_CONNECT_TIMEOUT, any_task: false, redirected: false };
            let Ok((tunnel, _)) = self.dial_with(&endpoint, &service.id, port, &client, how).await else {
                continue;
            };
            let (reader, mut writer) = tokio::io::split(tunnel);
            let mut replies = spawn_datagram_reader(reader);
            loop {
                tokio::select! {
                    biased;
                    datagram = datagrams.recv() => match datagram {
                        // A task that left the rotation ends the flow; the client's next datagram
                        // starts a new one on a task that is in it.
                        Some(_) if !self.table().routes_to(&endpoint.task_id) => return,
                        Some(datagram) => {
                            if tunnel::write_datagram(&mut writer, &datagram).await.is_err() {
                                return;
                            }
                        }
                        None => return,
                    },
                    reply = runtime::timeout(UDP_FLOW_IDLE, replies.recv()) => match reply {
                        Ok(Some(reply)) => {
                            let _ = front.send_to(&reply, &client).await;
                        }
                        _ => return,
                    },
                }
            }
        }
        self.trace(
            "mesh.no_backend",
            serde_json::json!({"service_id": service.id, "port": port, "client": client, "udp": true}),
        );
    }

    /// The resolver on one bridge's gateway.
    async fn dns_loop(
        self: Arc<Self>,
        socket: Arc<dyn crate::env::mesh::DatagramSocket>,
        network_id: String,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; 4_096];
        while let Some((len, client)) = next_datagram(socket.as_ref(), &mut buf, &mut stop).await {
            let table = self.table();
            let addresses = NodeAddresses { mesh: &self, network_id: &network_id };
            match resolver::resolve(&table, &network_id, &buf[..len], &addresses) {
                resolver::Resolution::Answer(reply) => {
                    let _ = socket.send_to(&reply, &client).await;
                }
                resolver::Resolution::Forward => {
                    let upstreams = self.upstreams.lock().expect("mesh lock").clone();
                    let (mesh, socket, query) = (self.clone(), socket.clone(), buf[..len].to_vec());
                    runtime::spawn(async move { mesh.forward_dns(socket, client, query, upstreams).await });
                }
                resolver::Resolution::Drop => {}
            }
        }
    }

    /// Ask the upstream resolvers in turn; the first reply goes back to the client. With none
    /// configured (or none answering) the client's own timeout tells it.
    async fn forward_dns(
        self: Arc<Self>,
        front: Arc<dyn crate::env::mesh::DatagramSocket>,
        client: String,
        query: Vec<u8>,
        upstreams: Vec<String>,
    ) {
        for upstream in upstreams {
            let Ok(socket) = self.env.mesh.bind_udp("0.0.0.0:0").await else { return };
            if socket.send_to(&query, &upstream).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 4_096];
            if let Ok(Ok((len, _))) = runtime::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await {
                let _ = front.send_to(&buf[..len], &client).await;
                return;
            }
        }
    }

    /// Whether `addr:port` accepts a connection now (the readiness probe).
    pub async fn probe(&self, addr: &str, port: u16) -> bool {
        self.env.mesh.connect_tcp(&format!("{addr}:{port}"), Duration::from_millis(500)).await.is_ok()
    }

    /// Open connections this node splices to `task_id`.
    pub fn active_connections(&self, task_id: &str) -> usize {
        self.active.borrow().get(task_id).copied().unwrap_or(0)
    }

    /// Wait until no connection to `task_id` is open, at most `limit`. Returns how many were
    /// still open when it stopped waiting.
    pub async fn wait_idle(&self, task_id: &str, limit: Duration) -> usize {
        let mut active = self.active.subscribe();
        let idle = async move {
            let _ = active.wait_for(|active| !active.contains_key(task_id)).await;
        };
        match runtime::timeout(limit, idle).await {
            Ok(()) => 0,
            Err(_) => self.active_connections(task_id),
        }
    }

    /// Forget the bridges (the node left the swarm; the agent removed them with the containers)
    /// and the table kept on disk: a daemon that starts again is in no swarm and serves no port.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        {
            let _no_write_in_flight = self.persisting.lock().await;
            if let Err(err) = self.env.disk.remove(TABLE_FILE).await {
                self.trace("mesh.persist_failed", serde_json::json!({"error": err.to_string()}));
            }
        }
        let listeners = std::mem::take(&mut *self.listeners.lock().expect("mesh lock"));
        for stop in listeners.into_values() {
            stop.send_replace(true);
        }
        let bridges = std::mem::take(&mut *self.bridges.lock().expect("mesh lock"));
        let vips = std::mem::take(&mut *self.vips.lock().expect("mesh lock"));
        for ((network, _), ip) in vips {
            if let Some(bridge) = bridges.get(&network) {
                let _ = self.env.mesh.remove_local_address(&bridge.device, &ip.to_string()).await;
            }
        }
        for bridge in bridges.into_values() {
            let _ = self.env.executor.remove_network(&bridge.name).await;
        }
    }
}

/// Carry one UDP flow to a task on this node: each datagram from `datagrams` to `backend`, each
/// reply to `reply`, until the flow is idle for [`UDP_FLOW_IDLE`] or its sender is gone.
async fn relay_local_udp<F, Fut>(
    socket: Arc<dyn crate::env::mesh::DatagramSocket>,
    backend: String,
    datagrams: &mut mpsc::Receiver<Vec<u8>>,
    routed: impl Fn() -> bool,
    reply: F,
) where
    F: Fn(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            biased;
            datagram = datagrams.recv() => match datagram {
                // The task left the rotation: the flow ends (and with it the drain's wait on it).
                Some(_) if !routed() => return,
                Some(datagram) => {
                    if socket.send_to(&datagram, &backend).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            received = runtime::timeout(UDP_FLOW_IDLE, socket.recv_from(&mut buf)) => match received {
                Ok(Ok((len, _))) => reply(buf[..len].to_vec()).await,
                _ => return,
            },
        }
    }
}

/// Read a UDP tunnel's datagrams in a task of their own (a read is not safe to cancel midway,
/// so it must not race other branches of a `select!`).
fn spawn_datagram_reader<R: tokio::io::AsyncRead + Unpin + Send + 'static>(mut reader: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(256);
    runtime::spawn(async move {
        while let Ok(datagram) = tunnel::read_datagram(&mut reader).await {
            if tx.send(datagram).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The next datagram on `socket` (its length in `buf` and its sender), or `None` once `stop` says
/// so. A failed receive (an ICMP error reported on the socket, a transient shortage) is skipped
/// after a short pause rather than spinning.
async fn next_datagram(
    socket: &dyn crate::env::mesh::DatagramSocket,
    buf: &mut [u8],
    stop: &mut watch::Receiver<bool>,
) -> Option<(usize, String)> {
    loop {
        let received = tokio::select! {
            biased;
            _ = stopped(stop) => return None,
            received = socket.recv_from(buf) => received,
        };
        match received {
            Ok(datagram) => return Some(datagram),
            Err(_) => runtime::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Resolves once a listener's switch is flipped (or its owner is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// How [`Mesh::dial_with`] reaches an endpoint.
#[derive(Debug, Clone, Copy)]
struct Dial {
    udp: bool,
    /// How long the connect to the task may take.
    patience: Duration,
    /// Any ready task of the service will do (a service route, not a task's alias).
    any_task: bool,
    /// This tunnel was already redirected once.
    redirected: bool,
}

/// Where a listener's connections go.
#[derive(Debug, Clone)]
enum Route {
    /// An ingress port: whichever service publishes it in the current table.
    Ingress { published: u16 },
    /// A VIP port of one service.
    Service { service_id: String, port: u16 },
    /// This node's alias of one task on another node.
    Task { task_id: String, port: u16 },
}

/// The key prefix of a task alias in the VIP map (service ids never contain a slash).
const TASK_ALIAS: &str = "task/";

/// How one node answers names on one network (the resolver's view of this node).
struct NodeAddresses<'a> {
    mesh: &'a Mesh,
    network_id: &'a str,
}

impl resolver::Addresses for NodeAddresses<'_> {
    fn vip(&self, service_id: &str) -> Option<Ipv4Addr> {
        self.mesh.vip(self.network_id, service_id)
    }

    fn task(&self, endpoint: &MeshEndpoint) -> Option<Ipv4Addr> {
        if endpoint.node_id == self.mesh.node_id {
            endpoint.addresses.get(self.network_id)?.parse().ok()
        } else {
            self.mesh.task_alias(self.network_id, &endpoint.task_id)
        }
    }
}
