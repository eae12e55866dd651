//! In-process stand-ins for the disk and transport seams, for raft's unit tests and benchmarks on
//! plain tokio (the simulator has its own, richer ones in `shoal-sim`).
//!
//! - [`MemDisk`] (from `crate::env`) keeps files in memory and models a crash: unsynced appends are lost.
//! - [`LocalNet`] connects [`LocalTransport`]s by address with no delay; a node can be cut off.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::env::transport::Peer;
pub use crate::env::MemDisk;
use crate::env::{runtime, Disk, Handler, Transport, TransportError};

#[derive(Default)]
struct NetState {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
    /// Addresses whose traffic (both ways) is dropped.
    isolated: BTreeSet<String>,
}

/// An in-process network of [`LocalTransport`]s.
#[derive(Clone, Default)]
pub struct LocalNet {
    state: Arc<Mutex<NetState>>,
}

impl std::fmt::Debug for LocalNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNet").finish_non_exhaustive()
    }
}

impl LocalNet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn transport(&self, addr: impl Into<String>) -> LocalTransport {
        LocalTransport { net: self.clone(), addr: addr.into() }
    }

    /// Drop all traffic to and from `addr` (silence, as a cut cable).
    pub fn isolate(&self, addr: &str) {
        self.state.lock().expect("local net lock").isolated.insert(addr.to_string());
    }

    pub fn heal(&self) {
        self.state.lock().expect("local net lock").isolated.clear();
    }

    /// Stop serving `addr` (the node is down: calls are refused).
    pub fn stop(&self, addr: &str) {
        self.state.lock().expect("local net lock").handlers.remove(addr);
    }
}

/// One node's end of a [`LocalNet`].
#[derive(Clone, Debug)]
pub struct LocalTransport {
    net: LocalNet,
    addr: String,
}

#[async_trait]
impl Transport for LocalTransport {
    async fn call(&self, to: &str, request: Vec<u8>, deadline: Duration) -> Result<Vec<u8>, TransportError> {
        let (handler, cut) = {
            let state = self.net.state.lock().expect("local net lock");
            let cut = state.isolated.contains(to) || state.isolated.contains(&self.addr);
            (state.handlers.get(to).cloned(), cut)
        };
        let timeout = || TransportError::Timeout { addr: to.to_string(), timeout_ms: deadline.as_millis() as u64 };
        if cut {
            runtime::sleep(deadline).await;
            return Err(timeout());
        }
        let Some(handler) = handler else {
            return Err(TransportError::Unreachable { addr: to.to_string(), reason: "connection refused".into() });
        };
        let peer = Peer { addr: self.addr.clone(), identity: None };
        runtime::timeout(deadline, handler.handle(peer, request)).await.map_err(|_| timeout())
    }

    async fn serve(&self, handler: Arc<dyn Handler>) -> Result<(), TransportError> {
        self.net.state.lock().expect("local net lock").handlers.insert(self.addr.clone(), handler);
        Ok(())
    }
}

/// A managers-only node has no containers to run: every call says the runtime is unavailable.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoExecutor;

fn no_runtime<T>() -> Result<T, crate::env::ExecutorError> {
    Err(crate::env::ExecutorError::Unavailable("this node runs no containers".into()))
}

#[async_trait]
impl crate::env::Executor for NoExecutor {
    async fn prepare_image(
        &self,
        _image: &str,
        _auth: Option<&crate::api::RegistryAuth>,
    ) -> Result<(), crate::env::ExecutorError> {
        no_runtime()
    }
    async fn create(&self, _spec: &crate::env::ContainerSpec) -> Result<String, crate::env::ExecutorError> {
        no_runtime()
    }
    async fn start(&self, _id: &str) -> Result<(), crate::env::ExecutorError> {
        no_runtime()
    }
    async fn wait(&self, _id: &str) -> Result<i64, crate::env::ExecutorError> {
        no_runtime()
    }
    async fn stop(&self, _id: &str, _grace: Duration) -> Result<(), crate::env::ExecutorError> {
        no_runtime()
    }
    async fn remove(&self, _id: &str) -> Result<(), crate::env::ExecutorError> {
        no_runtime()
    }
    async fn inspect(&self, _id: &str) -> Result<crate::env::ContainerSummary, crate::env::ExecutorError> {
        no_runtime()
    }
    async fn list(
        &self,
        _labels: &[(String, String)],
    ) -> Result<Vec<crate::env::ContainerSummary>, crate::env::ExecutorError> {
        no_runtime()
    }
    async fn logs(
        &self,
        _id: &str,
        _query: &crate::env::LogsQuery,
    ) -> Result<Vec<crate::env::LogLine>, crate::env::ExecutorError> {
        no_runtime()
    }

    async fn ensure_network(&self, _bridge: &crate::env::BridgeSpec) -> Result<(), crate::env::ExecutorError> {
        no_runtime()
    }
    async fn remove_network(&self, _name: &str) -> Result<(), crate::env::ExecutorError> {
        no_runtime()
    }
    async fn list_networks(&self, _labels: &[(String, String)]) -> Result<Vec<String>, crate::env::ExecutorError> {
        no_runtime()
    }
    async fn exposed_ports(&self, _image: &str) -> Result<Vec<(String, u16)>, crate::env::ExecutorError> {
        no_runtime()
    }
}

/// A node environment for a manager at `addr` on `net`, with `disk`, no executor and no tracing.
pub fn node_env(addr: &str, transport: Arc<dyn Transport>, disk: Arc<dyn Disk>) -> crate::env::NodeEnv {
    crate::env::NodeEnv {
        addr: addr.to_string(),
        transport,
        disk,
        executor: Arc::new(NoExecutor),
        mesh: Arc::new(crate::env::mesh::NoMesh),
        data_addr: String::new(),
        tracer: crate::trace::Tracer::none(),
    }
}

/// Three managers (raft ids 1–3) at `addr(id)`, each with the transport `transport(addr)` serving its
/// raft and the disk `disk(id)`; the first initializes the cluster and, once it leads, adds the other
/// two. The raft benchmarks measure this cluster over the in-process and the TCP transports.
pub async fn three_managers<T: Transport + 'static>(
    addr: impl Fn(u64) -> String,
    transport: impl Fn(&str) -> Arc<T>,
    disk: impl Fn(u64) -> Arc<dyn Disk>,
) -> Vec<crate::raft::Replica> {
    let mut replicas = Vec::new();
    for id in 1..=3u64 {
        let addr = addr(id);
        let transport = transport(&addr);
        let env = node_env(&addr, transport.clone(), disk(id));
        let router = crate::rpc::Router::new();
        let replica = crate::raft::Replica::start(
            &env,
            id,
            crate::raft::RaftConfig::default(),
            crate::store::Store::new(),
            router.clone(),
        )
        .await
        .expect("a replica starts");
        transport.serve(Arc::new(router)).await.expect("the transport serves");
        replicas.push(replica);
    }
    replicas[0].initialize().await.expect("the first replica initializes the cluster");
    while !replicas[0].is_leader() {
        runtime::sleep(Duration::from_millis(10)).await;
    }
    for id in 2..=3u64 {
        replicas[0].add_manager(id, addr(id)).await.expect("a manager joins");
    }
    replicas
}

/// The write raft benchmarks commit: a create and a delete of network `net-<n>` in one transaction —
/// a real two-action proposal that leaves the store as small as it was, so throughput figures do not
/// drift with the store's size.
pub fn churn_write(n: u64) -> Vec<crate::store::Action> {
    use crate::api::{Meta, Network};
    use crate::store::{Action, Kind, Object};
    let id = format!("net-{n}");
    vec![
        Action::Create(Object::Network(Network {
            id: id.clone(),
            meta: Meta::default(),
            name: id.clone(),
            driver: "overlay".into(),
            subnet: String::new(),
            attachable: false,
            ingress: false,
            labels: Default::default(),
            leases: Default::default(),
        })),
        Action::Delete { kind: Kind::Network, id },
    ]
}

static CHURN_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The next [`churn_write`], numbered from a process-wide counter so every commit of a benchmark
/// run writes a fresh name.
pub fn next_churn_write() -> Vec<crate::store::Action> {
    churn_write(CHURN_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// How long `writes` churn commits take when `writers` tasks propose them concurrently through
/// `proposer`, scaled to exactly `writes` (each writer rounds up, adding at most `writers - 1`).
/// For criterion's `iter_custom`.
pub async fn time_concurrent_churn<P>(proposer: P, writers: u64, writes: u64) -> Duration
where
    P: crate::store::Proposer + Clone,
{
    let start = runtime::now();
    let per_writer = writes.div_ceil(writers);
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let proposer = proposer.clone();
            runtime::spawn(async move {
                for _ in 0..per_writer {
                    proposer.propose(next_churn_write()).await.expect("commit");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("writer");
    }
    (runtime::now() - start).mul_f64(writes as f64 / (per_writer * writers) as f64)
}
