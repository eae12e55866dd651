//! shoal-sim: the deterministic simulator. Whole clusters in one process on madsim's virtual time,
//! with the core's seams implemented by simulated parts:
//! - [`net`] — links with delay, loss and (one-way) partitions;
//! - [`disk`] — a disk that survives crashes but loses what was not synced;
//! - [`invariants`] — safety properties checked while a run goes (raft: election safety, …);
//! - [`linearizability`] — the record of a run's control-API calls and the check that one order of
//!   them explains every answer;
//! - [`executor`] — simulated containers (start delay, exit, crash, unpullable images) that serve a
//!   tiny request/response protocol on their ports;
//! - [`mesh_net`] — service traffic (published ports, tunnels, connections to containers) over the
//!   simulated links;
//!
//! The same seed gives the same run, bit for bit.

pub mod client;
pub mod disk;
pub mod executor;
pub mod invariants;
pub mod linearizability;
pub mod mesh_net;
pub mod net;
pub mod serve;
pub mod trace;

#[cfg(madsim)]
pub mod cluster;
pub mod fuzz;
pub mod scenario;
