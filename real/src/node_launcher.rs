//! The daemon's real [`NodeLauncher`]: builds a [`NodeEnv`] from the real arms — [`TcpTransport`],
//! [`FileDisk`], [`DockerExecutor`] or [`ProcessExecutor`] — and starts a core [`ShoalNode`] on it.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use shoal_core::api::Resources;
use shoal_core::control::{ControlError, ControlRequest, ControlResponse};
use shoal_core::env::{Executor, NodeEnv};
use shoal_core::node::{Bootstrap as CoreBootstrap, NodeConfig, ShoalNode};
use shoal_core::trace::{TraceSink, Tracer};

use crate::daemon::{Bootstrap, NodeLauncher, NodeSettings, RunningNode};
use crate::disk::FileDisk;
use crate::docker::{DockerExecutor, DockerOptions};
use crate::net::TcpTransport;
use crate::process::ProcessExecutor;

/// Which executor the daemon's node runs tasks with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    Docker,
    Process,
}

/// Starts real nodes.
#[derive(Debug)]
pub struct RealLauncher {
    pub executor: ExecutorKind,
}

struct RealNode {
    node: ShoalNode,
    transport: TcpTransport,
    executor: Arc<dyn Executor>,
}

#[async_trait]
impl RunningNode for RealNode {
    fn node_id(&self) -> String {
        self.node.node_id()
    }
    async fn control(&self, request: ControlRequest) -> Result<ControlResponse, ControlError> {
        self.node.control(request).await
    }
    async fn leave(&self, force: bool) -> Result<(), ControlError> {
        let result = self.node.leave(force).await;
        if result.is_ok() {
            self.transport.shutdown();
        }
        result
    }
    async fn shutdown(&self) {
        self.node.shutdown().await;
        // Release the swarm port, so that a later `swarm init`/`join` on this daemon can bind it.
        self.transport.shutdown();
    }
    fn executor(&self) -> Arc<dyn Executor> {
        self.executor.clone()
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
        let disk = FileDisk::open(node_dir).await.map_err(|e| format!("cannot open the data dir: {e}"))?;
        let executor: Arc<dyn Executor> = match self.executor {
            ExecutorKind::Docker => Arc::new(
                DockerExecutor::connect(DockerOptions::default())
                    .await
                    .map_err(|e| format!("cannot use Docker for tasks: {e}"))?,
            ),
            ExecutorKind::Process => Arc::new(ProcessExecutor::new()),
        };
        let transport = TcpTransport::new(settings.listen_addr.clone());
        let env = NodeEnv {
            addr: settings.advertise_addr.clone(),
            transport: Arc::new(transport.clone()),
            disk: Arc::new(disk),
            executor: executor.clone(),
            tracer: Tracer::new(settings.hostname.clone(), tracer),
        };
        let mut config = NodeConfig::new(settings.hostname.clone(), settings.advertise_addr.clone());
        config.availability = settings.availability;
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
                }
                CoreBootstrap::Init { force_new_cluster }
            }
            Bootstrap::Join { remote_addr, token } => CoreBootstrap::Join { remote_addr, token },
            Bootstrap::Resume => CoreBootstrap::Resume,
        };
        match ShoalNode::start(env, config, core_bootstrap).await {
            Ok(node) => Ok(Arc::new(RealNode { node, transport, executor })),
            Err(err) => {
                transport.shutdown();
                Err(err.to_string())
            }
        }
    }
}
