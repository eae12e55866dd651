//! The daemon's real [`NodeLauncher`]: builds a [`NodeEnv`] from the real arms — [`TcpTransport`],
//! [`FileDisk`], [`DockerExecutor`] or [`ProcessExecutor`] — and starts a core [`ShoalNode`] on it.
//!
//! Peers always talk mutual TLS. The node's certificates live in `<data-dir>/certificates/`, beside
//! the core's `node/` directory (which a worker's join wipes): `ca.pem` (the cluster CA), `node.pem` and
//! `node-key.pem` (this node's certificate and key), and on the node that ran `swarm init`
//! `ca-key.pem` (the CA key; every manager also has it in the cluster object). Keys are readable by
//! the owner only.
//! - `swarm init` makes the cluster CA, names the node and issues its certificate before the node
//!   starts, and puts the CA (digest, certificate, key) into the cluster object it seeds, so join
//!   tokens carry the real digest.
//! - `swarm join` first gets a certificate through [`crate::bootstrap`] (the token's CA digest is
//!   checked there), then starts the node under it.
//! - A restart (or `--force-new-cluster`) reloads the files; an expired certificate stops it with
//!   Swarm's message. While the node runs, [`crate::renewal`] replaces its certificate and key before
//!   they expire, through `renewed.json` (both in one atomic write) so a crash never leaves a
//!   certificate beside the wrong key.
//!
//! Every started node serves [`BootstrapService`] to connections without a certificate, so joins can
//! go through any manager.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shoal_core::api::Resources;
use shoal_core::control::{ControlError, ControlRequest, ControlResponse};
use shoal_core::env::{Executor, NodeEnv};
use shoal_core::mesh::MeshOptions;
use shoal_core::node::{Bootstrap as CoreBootstrap, NodeConfig, ShoalNode};
use shoal_core::rpc::Channel;
use shoal_core::trace::{TraceSink, Tracer};

use crate::bootstrap::{BootstrapService, RenewalService};
use crate::daemon::{Bootstrap, NodeLauncher, NodeSettings, RunningNode};
use crate::disk::FileDisk;
use crate::docker::{DockerExecutor, DockerOptions, PullPolicy};
use crate::mesh_net::RealMeshNet;
use crate::net::{Security, TcpConfig, TcpTransport};
use crate::process::ProcessExecutor;
use crate::renewal::{Renewal, SaveCertificate};
use shoal_core::autolock::{self, Dek, LockGate};

use crate::tls::{cert_info, check_cert_expiry, ClusterCa, NodeCert, TlsConfig};

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
const NODE_CERT_FILE: &str = "node.pem";
const NODE_KEY_FILE: &str = "node-key.pem";
/// A renewed certificate and key, written whole before the two files above are replaced.
const RENEWED_FILE: &str = "renewed.json";
/// Swarm's words for a node whose certificate expired while it was stopped (moby `errors.go`).
pub const CERTIFICATES_EXPIRED: &str =
    "Swarm certificates have expired. To replace them, leave the swarm and join again.";

/// Where a node's certificates are kept, given the core's node directory.
pub fn certificates_dir(node_dir: &Path) -> PathBuf {
    node_dir.with_file_name("certificates")
}

/// Write a private key (or a file holding one) encrypted with the node's data key, as a manager's
/// raft files are (`shoal_core::autolock`): with autolock on, the key is unreadable until unlocked.
fn write_key(dir: &Path, name: &str, contents: &str, dek: &Dek) -> Result<(), String> {
    write_private_bytes(dir, name, &autolock::seal_file(dek, name, contents.as_bytes()))
}

/// Read what [`write_key`] wrote (a key written before autolock existed reads as it is).
fn read_key(dir: &Path, name: &str, dek: &Dek) -> Result<String, String> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|e| {
        format!("cannot read the node's certificate file {}: {e} (leave the swarm and join again)", path.display())
    })?;
    let plain = autolock::open_file(dek, name, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    String::from_utf8(plain).map_err(|_| format!("{} is damaged", path.display()))
}

/// Write `contents` to `dir/name` atomically, readable (for keys: at all) by the owner only.
fn write_private(dir: &Path, name: &str, contents: &str) -> Result<(), String> {
    write_private_bytes(dir, name, contents.as_bytes())
}

fn write_private_bytes(dir: &Path, name: &str, contents: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", dir.join(name).display());
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(fail)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(fail)?;
    file.write_all(contents).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, dir.join(name)).map_err(fail)
}

fn read_file(dir: &Path, name: &str) -> Result<String, String> {
    std::fs::read_to_string(dir.join(name)).map_err(|e| {
        format!(
            "cannot read the node's certificate file {}: {e} (leave the swarm and join again)",
            dir.join(name).display()
        )
    })
}

fn save_certificates(dir: &Path, ca_pem: &str, node: &NodeCert, dek: &Dek) -> Result<(), String> {
    write_private(dir, CA_CERT_FILE, ca_pem)?;
    write_key(dir, NODE_KEY_FILE, &node.key_pem, dek)?;
    write_private(dir, NODE_CERT_FILE, &node.cert_pem)
}

/// The cluster CA certificate and this node's certificate, from the data dir: a renewal that was
/// cut short is completed first; an expired certificate is refused.
fn load_certificates(dir: &Path, dek: &Dek) -> Result<(String, NodeCert), String> {
    if dir.join(RENEWED_FILE).exists() {
        // Written atomically, so it is whole; finish replacing the pair with it.
        let bytes = read_key(dir, RENEWED_FILE, dek)?;
        let renewed: RenewedPair = serde_json::from_str(&bytes)
            .map_err(|e| format!("{} is damaged: {e}", dir.join(RENEWED_FILE).display()))?;
        CertificateFiles { dir: dir.to_path_buf(), dek: dek.clone() }
            .save(&NodeCert { cert_pem: renewed.cert_pem, key_pem: renewed.key_pem })?;
    }
    let node = NodeCert { cert_pem: read_file(dir, NODE_CERT_FILE)?, key_pem: read_key(dir, NODE_KEY_FILE, dek)? };
    let info = cert_info(&node.cert_pem).map_err(|e| format!("this node's certificate is unusable: {e}"))?;
    if info.not_after <= (shoal_core::env::runtime::unix_millis() / 1000) as i64 {
        return Err(CERTIFICATES_EXPIRED.into());
    }
    Ok((read_file(dir, CA_CERT_FILE)?, node))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RenewedPair {
    cert_pem: String,
    key_pem: String,
}

/// The node's certificate files, replaced crash-safely on renewal.
struct CertificateFiles {
    dir: PathBuf,
    dek: Dek,
}

impl SaveCertificate for CertificateFiles {
    fn save(&self, node: &NodeCert) -> Result<(), String> {
        let pair = RenewedPair { cert_pem: node.cert_pem.clone(), key_pem: node.key_pem.clone() };
        let json = serde_json::to_string(&pair).map_err(|e| e.to_string())?;
        write_key(&self.dir, RENEWED_FILE, &json, &self.dek)?;
        write_key(&self.dir, NODE_KEY_FILE, &node.key_pem, &self.dek)?;
        write_private(&self.dir, NODE_CERT_FILE, &node.cert_pem)?;
        std::fs::remove_file(self.dir.join(RENEWED_FILE))
            .map_err(|e| format!("cannot remove {}: {e}", self.dir.join(RENEWED_FILE).display()))
    }

    fn save_trust(&self, ca_pem: &str) -> Result<(), String> {
        write_private(&self.dir, CA_CERT_FILE, ca_pem)
    }
}

/// Which executor the daemon's node runs tasks with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Docker containers; `pull` says whether missing images are pulled.
    Docker {
        pull: PullPolicy,
    },
    Process,
}

/// Starts real nodes, all on one executor per daemon: a node started again in the same daemon
/// (`swarm init --force-new-cluster`, a join after a leave) finds the containers of the one before.
pub struct RealLauncher {
    kind: ExecutorKind,
    /// The data plane's settings for every node this daemon starts.
    mesh_options: MeshOptions,
    executor: tokio::sync::Mutex<Option<Arc<dyn Executor>>>,
    /// The same executor when it runs plain processes (it is told the node's address).
    processes: std::sync::Mutex<Option<ProcessExecutor>>,
    /// While a manager waits locked for `swarm unlock` (autolock), its wait.
    lock: std::sync::Mutex<Option<LockGate>>,
}

impl std::fmt::Debug for RealLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealLauncher").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl RealLauncher {
    pub fn new(kind: ExecutorKind) -> Self {
        RealLauncher {
            kind,
            mesh_options: MeshOptions::default(),
            executor: tokio::sync::Mutex::new(None),
            processes: std::sync::Mutex::new(None),
            lock: std::sync::Mutex::new(None),
        }
    }

    /// Start nodes with these data-plane settings (`shoal daemon --dns-upstream`, `--no-mesh-drain`).
    pub fn with_mesh_options(mut self, options: MeshOptions) -> Self {
        self.mesh_options = options;
        self
    }

    /// The daemon's executor, made on first use.
    async fn executor(&self, data_dir: &Path) -> Result<Arc<dyn Executor>, String> {
        let mut made = self.executor.lock().await;
        if let Some(executor) = &*made {
            return Ok(executor.clone());
        }
        let executor: Arc<dyn Executor> = match self.kind {
            ExecutorKind::Docker { pull } => Arc::new(
                DockerExecutor::connect(DockerOptions { pull })
                    .await
                    .map_err(|e| format!("cannot use Docker for tasks: {e}"))?,
            ),
            ExecutorKind::Process => {
                let (executor, killed) = ProcessExecutor::with_registry(data_dir.join("processes.json"))
                    .map_err(|e| format!("cannot use the process executor: {e}"))?;
                if killed > 0 {
                    eprintln!("shoal daemon: killed {killed} process(es) a previous daemon left running");
                }
                *self.processes.lock().unwrap_or_else(|p| p.into_inner()) = Some(executor.clone());
                Arc::new(executor)
            }
        };
        *made = Some(executor.clone());
        Ok(executor)
    }
}

struct RealNode {
    node: ShoalNode,
    transport: TcpTransport,
    /// The certificate renewal loop; stopped with the node.
    renewal: tokio::task::JoinHandle<()>,
}

impl RealNode {
    fn stop_renewing(&self) {
        self.renewal.abort();
        self.node.stop_serving(Channel::Certificates);
    }
}

#[async_trait]
impl RunningNode for RealNode {
    fn node_id(&self) -> String {
        self.node.node_id()
    }
    async fn control(&self, request: ControlRequest) -> Result<ControlResponse, ControlError> {
        // `swarm ca --rotate`: this daemon makes the new root, cross-signed by the current one, from
        // the cluster object (managers only hold it; elsewhere the core refuses as for any write).
        if let ControlRequest::CaRotate { new_root: None } = &request {
            if let Some(cluster) = self.node.store().view(|s| s.cluster.clone()).filter(|_| self.node.is_manager()) {
                let new_root = crate::bootstrap::new_root_for(&cluster).map_err(ControlError::FailedPrecondition)?;
                return self.node.control(ControlRequest::CaRotate { new_root: Some(new_root) }).await;
            }
        }
        self.node.control(request).await
    }
    async fn leave(&self, force: bool) -> Result<(), ControlError> {
        let result = self.node.leave(force).await;
        if result.is_ok() {
            self.stop_renewing();
            self.transport.shutdown();
        }
        result
    }
    async fn shutdown(&self) {
        self.stop_renewing();
        self.node.shutdown().await;
        // Release the swarm port, so that a later `swarm init`/`join` on this daemon can bind it.
        self.transport.shutdown();
    }
    async fn removed(&self) {
        let mut removed = self.node.removed();
        // An error means the node is gone altogether; that is not a removal.
        while !*removed.borrow_and_update() {
            if removed.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The nameservers of a `resolv.conf` as `ip:53` (`[ip]:53` for IPv6), in order.
pub fn host_resolvers(resolv_conf: &str) -> Vec<String> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        .filter_map(|ip| ip.parse::<std::net::IpAddr>().ok())
        .map(|ip| std::net::SocketAddr::new(ip, 53).to_string())
        .collect()
}

/// `ip` or `ip:port` (port 53 by default) as `ip:port`.
pub fn dns_upstream(text: &str) -> Result<String, String> {
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Ok(addr.to_string());
    }
    text.parse::<std::net::IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53).to_string())
        .map_err(|_| format!("{text:?} is not an IP address or ip:port"))
}

/// What this host offers tasks: its CPUs and memory.
pub fn host_resources() -> Resources {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(1 << 30);
    Resources { nano_cpus: cpus * 1_000_000_000, memory_bytes: memory }
}

#[async_trait]
impl NodeLauncher for RealLauncher {
    fn lock_gate(&self) -> Option<LockGate> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).clone().filter(|gate| gate.is_locked())
    }

    fn forget_lock(&self) {
        *self.lock.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    async fn has_state(&self, node_dir: &Path) -> bool {
        match FileDisk::open(node_dir).await {
            Ok(disk) => ShoalNode::has_state(&disk).await,
            Err(_) => false,
        }
    }

    async fn start(
        &self,
        node_dir: &Path,
        settings: &NodeSettings,
        tracer: Arc<dyn TraceSink>,
        bootstrap: Bootstrap,
    ) -> Result<Arc<dyn RunningNode>, String> {
        let disk: Arc<dyn shoal_core::env::Disk> =
            Arc::new(FileDisk::open(node_dir).await.map_err(|e| format!("cannot open the data dir: {e}"))?);
        // Autolock: the data key first — the TLS key is encrypted with it. A manager whose key is
        // sealed waits here, locked, until `swarm unlock` (`POST /swarm/unlock`) opens it.
        let dek = autolock::open_or_wait(disk.clone(), |gate| {
            eprintln!("shoal daemon: this manager is locked: run `shoal swarm unlock` with the swarm's unlock key");
            *self.lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(gate);
        })
        .await
        .map_err(|e| format!("cannot open the data key: {e}"))?;
        // The process registry sits beside the node's state, outside what `swarm leave` erases.
        let data_dir = node_dir.parent().unwrap_or(node_dir);
        let executor = self.executor(data_dir).await?;
        if let Some(processes) = &*self.processes.lock().unwrap_or_else(|p| p.into_inner()) {
            // No bridges for processes: the mesh reaches a task at its node's address.
            let ip =
                settings.advertise_addr.parse::<std::net::SocketAddr>().map(|a| a.ip().to_string()).unwrap_or_default();
            processes.set_base_env(vec![format!("SHOAL_NODE_IP={ip}"), format!("SHOAL_TASK_IP={ip}")]);
        }
        let mut config = NodeConfig::new(settings.hostname.clone(), settings.advertise_addr.clone());
        let certs = certificates_dir(node_dir);
        let (ca_pem, node_cert) = match &bootstrap {
            Bootstrap::Init { force_new_cluster: false, overrides } => {
                let expiry =
                    Duration::from_millis(overrides.cert_expiry_ms.unwrap_or(config.cluster_spec.node_cert_expiry_ms));
                check_cert_expiry(expiry)?;
                let ca = ClusterCa::generate().map_err(|e| format!("cannot make the cluster CA: {e}"))?;
                let node_id = shoal_core::api::new_id();
                let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
                let cert_pem = ca
                    .issue_for_key(&node_id, shoal_core::api::NodeRole::Manager, key.public_key_raw(), expiry)
                    .map_err(|e| format!("cannot issue this node's certificate: {e}"))?;
                let node = NodeCert { cert_pem, key_pem: key.serialize_pem() };
                write_key(&certs, CA_KEY_FILE, &ca.key_pem(), &dek)?;
                save_certificates(&certs, ca.cert_pem(), &node, &dek)?;
                config.node_id = Some(node_id);
                config.ca_digest = Some(ca.digest());
                config.root_ca_pem = ca.cert_pem().to_string();
                config.root_ca_key_pem = ca.key_pem();
                (ca.cert_pem().to_string(), node)
            }
            Bootstrap::Join { remote_addr, token } => {
                let credentials = crate::bootstrap::request_certificate(remote_addr, &settings.listen_addr, token)
                    .await
                    .map_err(|reason| format!("cannot join the swarm at {remote_addr}: {reason}"))?;
                save_certificates(&certs, &credentials.ca_pem, &credentials.node, &dek)?;
                (credentials.ca_pem, credentials.node)
            }
            Bootstrap::Init { force_new_cluster: true, .. } | Bootstrap::Resume => load_certificates(&certs, &dek)?,
        };
        let tls = Arc::new(
            TlsConfig::new(&ca_pem, &node_cert).map_err(|e| format!("the node's certificates are unusable: {e}"))?,
        );
        let transport = TcpTransport::with_config(TcpConfig {
            security: Security::Tls(tls.clone()),
            ..TcpConfig::new(settings.listen_addr.clone())
        });
        // Service traffic: tunnels between daemons under the same mutual TLS as the swarm transport.
        let data_addr = settings.data_addr();
        let mesh = RealMeshNet::new(data_addr.clone(), Security::Tls(tls.clone()));
        let env = NodeEnv {
            addr: settings.advertise_addr.clone(),
            transport: Arc::new(transport.clone()),
            disk,
            executor: executor.clone(),
            mesh: Arc::new(mesh),
            data_addr,
            tracer: Tracer::new(settings.hostname.clone(), tracer),
        };
        config.availability = settings.availability;
        config.dek = Some(dek.clone());
        config.mesh = self.mesh_options.clone();
        // The renewal loop below renews and reports this node's certificates (DESIGN §6b).
        config.external_certificates = true;
        config.resources = host_resources();
        let core_bootstrap = match bootstrap {
            Bootstrap::Init { force_new_cluster, overrides } => {
                if let Some(limit) = overrides.task_history_retention_limit {
                    config.cluster_spec.task_history_retention_limit = limit;
                }
                if let Some(period) = overrides.heartbeat_period_ms {
                    config.cluster_spec.heartbeat_period_ms = period;
                }
                if let Some(interval) = overrides.snapshot_interval {
                    config.cluster_spec.snapshot_interval = interval;
                    // This manager's raft snapshots at that interval (managers that join use the default).
                    config.raft.snapshot_interval = interval.max(1);
                }
                if let Some(expiry) = overrides.cert_expiry_ms {
                    config.cluster_spec.node_cert_expiry_ms = expiry;
                }
                if let Some(autolock) = overrides.autolock {
                    config.cluster_spec.autolock_managers = autolock;
                }
                CoreBootstrap::Init { force_new_cluster }
            }
            Bootstrap::Join { remote_addr, token } => CoreBootstrap::Join { remote_addr, token },
            Bootstrap::Resume => CoreBootstrap::Resume,
        };
        match ShoalNode::start(env, config, core_bootstrap).await {
            Ok(node) => {
                transport.set_bootstrap_handler(Some(Arc::new(BootstrapService { node: node.clone() })));
                node.serve(Channel::Certificates, Arc::new(RenewalService { node: node.clone() }));
                let renewal = tokio::spawn(
                    Renewal {
                        node: node.clone(),
                        transport: Arc::new(transport.clone()),
                        tls,
                        store: Arc::new(CertificateFiles { dir: certs.clone(), dek }),
                        current: node_cert,
                        certs_dir: certs,
                    }
                    .run(),
                );
                Ok(Arc::new(RealNode { node, transport, renewal }))
            }
            Err(err) => {
                transport.shutdown();
                Err(err.to_string())
            }
        }
    }
}
