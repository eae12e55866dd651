//! In-process stand-ins for the disk and transport seams, for raft's unit tests and benchmarks on
//! plain tokio (the simulator has its own, richer ones in `shoal-sim`).
//!
//! - [`MemDisk`] keeps files in memory and models a crash: unsynced appends are lost.
//! - [`LocalNet`] connects [`LocalTransport`]s by address with no delay; a node can be cut off.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::env::disk::check_name;
use crate::env::transport::Peer;
use crate::env::{runtime, Disk, DiskError, Handler, Transport, TransportError};

#[derive(Debug, Clone, Default)]
struct MemFile {
    data: Vec<u8>,
    durable_len: usize,
}

/// An in-memory disk. Clones share the files, so a "restarted" node can reopen them.
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    files: Arc<Mutex<BTreeMap<String, MemFile>>>,
}

impl MemDisk {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, MemFile>) -> R) -> R {
        f(&mut self.files.lock().expect("mem disk lock"))
    }

    /// A power cut: every file goes back to what was synced.
    pub fn crash(&self) {
        self.with(|files| {
            for file in files.values_mut() {
                file.data.truncate(file.durable_len);
            }
        })
    }

    /// Overwrite a file's bytes as they are, durably (to plant torn or garbled data).
    pub fn set_raw(&self, name: &str, data: Vec<u8>) {
        self.with(|files| {
            let durable_len = data.len();
            files.insert(name.to_string(), MemFile { data, durable_len });
        })
    }

    pub fn raw(&self, name: &str) -> Option<Vec<u8>> {
        self.with(|files| files.get(name).map(|f| f.data.clone()))
    }
}

#[async_trait]
impl Disk for MemDisk {
    async fn read(&self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        check_name(name)?;
        Ok(self.raw(name))
    }

    async fn write_atomic(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        check_name(name)?;
        self.set_raw(name, data.to_vec());
        Ok(())
    }

    async fn append(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        check_name(name)?;
        self.with(|files| files.entry(name.to_string()).or_default().data.extend_from_slice(data));
        Ok(())
    }

    async fn sync(&self, name: &str) -> Result<(), DiskError> {
        check_name(name)?;
        self.with(|files| {
            if let Some(file) = files.get_mut(name) {
                file.durable_len = file.data.len();
            }
        });
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<(), DiskError> {
        check_name(name)?;
        self.with(|files| files.remove(name));
        Ok(())
    }

    async fn list(&self) -> Result<Vec<String>, DiskError> {
        Ok(self.with(|files| files.keys().cloned().collect()))
    }
}

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
    async fn prepare_image(&self, _image: &str) -> Result<(), crate::env::ExecutorError> {
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
    async fn logs(&self, _id: &str, _tail: usize) -> Result<Vec<String>, crate::env::ExecutorError> {
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
        tracer: crate::trace::Tracer::none(),
    }
}
