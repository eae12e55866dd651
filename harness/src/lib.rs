//! shoal-harness: the scenario files of `scenarios/` played against real clusters on this machine —
//! one `shoal daemon` per scenario node on its own loopback address, the Docker executor by default —
//! with the faults done for real and the simulator's expectations and invariants checked on the
//! daemons (`shoal-real run`), and one scenario in both worlds side by side (`shoal-real compare`).
//!
//! - [`cluster`] — the daemons: start, swarm init/join, SIGKILL and restart, control requests;
//! - [`netfault`] — partitions and lossy links as iptables rules tagged with the run's comment;
//! - [`relay`] — slow links: userland relays between the daemons, reached through nat rules;
//! - [`disk`] — disks that refuse writes: the raft log's tmpfs, filled;
//! - [`client`] — real HTTP clients for the mesh scenarios, judged by the simulator's invariant;
//! - [`images`] — local stand-ins for the images scenarios name (nothing is ever pulled);
//! - [`runner`] — playing a scenario: steps, faults, invariants, liveness, the merged trace;
//! - [`cleanup`] — what a run made, taken away at the end and on Ctrl-C/SIGTERM;
//! - [`compare`] — the simulator and the real cluster, time to converge after each fault.
//!
//! This crate runs on real tokio only: it uses `shoal-sim`'s parser and invariants in their normal
//! build, and `shoal-sim` never depends on it.

pub mod cleanup;
pub mod client;
pub mod cluster;
pub mod compare;
pub mod disk;
pub mod images;
pub mod netfault;
pub mod relay;
pub mod runner;
