//! The shoal daemon and CLI.
//!
//! The real arms of the core's instance seams live here, one module each:
//! - [`net`] — [`net::TcpTransport`]: length-delimited frames over TCP, multiplexed calls, reconnects.
//! - [`disk`] — [`disk::FileDisk`]: files under the data dir, fsync, atomic replace.
//! - [`docker`] — [`docker::DockerExecutor`]: containers through the Docker Engine API (bollard);
//!   [`engine_pull`] — image pulls with registry credentials, sent to the engine directly;
//!   [`task_files`] — tasks' secret and config files on a tmpfs, bind-mounted read-only.
//! - [`tls`] — the cluster CA, node certificates and mutual TLS for [`net`]; [`api_tls`] — client
//!   certificates for the Engine API on TCP (Docker's `--tlsverify`).
//! - [`bootstrap`] — how a joining node gets its certificate (token + public key → certificate), and
//!   how a manager renews one; [`renewal`] — when a node renews its own.
//! - [`engine_api`] — the Docker Engine API the daemon serves; [`engine_client`] — its client, used by
//!   the CLI and the test harness.
//! - [`data_dir_lock`] — one daemon per data dir (an advisory lock naming the holder's pid).
//! - [`process`] — [`process::ProcessExecutor`]: plain host processes, for hosts without Docker.
//! - [`mesh_net`] — [`mesh_net::RealMeshNet`]: service traffic (published ports, VIPs, tunnels between
//!   daemons under the swarm's mutual TLS).

pub mod api_tls;
pub mod bootstrap;
pub mod cli;
pub mod daemon;
pub mod data_dir_lock;
pub mod disk;
pub mod docker;
pub mod engine_api;
pub mod engine_client;
pub mod engine_pull;
pub mod format;
pub mod local_api;
pub mod mesh_mux;
pub mod mesh_net;
pub mod net;
pub mod node_launcher;
pub mod process;
pub mod renewal;
pub mod task_files;
pub mod tls;
