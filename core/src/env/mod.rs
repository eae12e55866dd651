//! The seams: everything that is time, randomness, I/O or concurrency enters the core here.
//!
//! Two kinds of seam:
//! - **runtime calls** ([`runtime`]): now, sleep, timeout, spawn and the seeded rng, as thin functions over
//!   `madsim-tokio` (imported as `tokio`). That is real tokio in the normal build and madsim's virtual
//!   runtime under `--cfg madsim`, so these functions need no `cfg` of their own.
//! - **instance seams** ([`Transport`], [`Disk`], [`Executor`]): traits implemented once by `shoal-sim`
//!   (simulated links, a disk that loses unsynced writes, simulated containers) and once by `shoal`
//!   (TCP, files with fsync, Docker). A node gets them bundled in one [`NodeEnv`].
//!
//! Nothing outside this module may name a clock, a socket, a file or a thread.

pub mod conformance;
pub mod disk;
pub mod executor;
pub mod mem_disk;
pub mod mesh;
pub mod runtime;
pub mod transport;

use std::sync::Arc;

pub use disk::{Disk, DiskError};
pub use executor::{
    BridgeSpec, ContainerFile, ContainerSpec, ContainerState, ContainerSummary, Executor, ExecutorError, Health,
    LogLine, LogsQuery, PortBinding,
};
pub use mem_disk::MemDisk;
pub use mesh::{MeshError, MeshNet, MeshStream};
pub use runtime::{now, sleep, spawn, timeout, Elapsed, Instant, Rt, Sleep};
pub use transport::{Handler, Transport, TransportError};

/// The instance seams one node runs on: built by the simulator or by the daemon, then handed to the core.
#[derive(Clone)]
pub struct NodeEnv {
    /// This node's address as peers dial it (`10.0.0.1:2377` in the sim, `127.0.0.2:2377` for real).
    pub addr: String,
    pub transport: Arc<dyn Transport>,
    pub disk: Arc<dyn Disk>,
    pub executor: Arc<dyn Executor>,
    /// Service traffic: published ports, VIPs, tunnels to peers (DESIGN §8).
    pub mesh: Arc<dyn MeshNet>,
    /// Where this node's daemon accepts data-plane tunnels (`ip:port`); peers learn it from the
    /// node's description.
    pub data_addr: String,
    /// Where this node's trace events go.
    pub tracer: crate::trace::Tracer,
}

impl std::fmt::Debug for NodeEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeEnv").field("addr", &self.addr).finish_non_exhaustive()
    }
}
