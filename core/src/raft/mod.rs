//! The replicated control plane: openraft 0.9 behind the seams.
//!
//! - [`log_store`] — the raft log as an append-only record file on the [`Disk`](crate::env::Disk) seam
//!   (length + crc32 + JSON per record), the vote beside it via `write_atomic`; a torn tail is cut off
//!   on start, never a panic.
//! - [`state_machine`] — applies committed [`Proposal`]s to the node's [`Store`](crate::store::Store),
//!   builds/installs JSON snapshots of [`StoreState`](crate::store::StoreState) + membership.
//! - [`network`] — raft RPCs over the [`Transport`](crate::env::Transport) seam on
//!   [`Channel::Raft`](crate::rpc::Channel::Raft), plus forwarded proposals and membership changes.
//! - [`replica`] — the handle the rest of the manager uses: start/restart from disk, `swarm init`,
//!   add/remove managers with Swarm's quorum checks, leader watch, and the
//!   [`Proposer`](crate::store::Proposer) that forwards writes to the leader.
//!
//! - [`testing`] — an in-memory disk and an in-process transport for unit tests and benchmarks.
//!
//! This module touches the outside world only through `crate::env` (runtime calls, disk, transport).

pub mod log_store;
pub mod network;
pub mod replica;
pub mod state_machine;
pub mod testing;

#[cfg(all(test, not(madsim)))]
mod tests;

use std::io::Cursor;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use crate::store::{Proposal, StoreError};

pub use log_store::{LogStore, LOG_FILE, VOTE_FILE};
pub use network::{RaftRequest, RaftResponse, RaftService};
pub use replica::{force_new_cluster, Replica, ReplicaError, ReplicaStatus, Role};
pub use state_machine::{StateMachine, SNAPSHOT_FILE};

/// What a committed entry answers: the store version after apply, or why the store refused it
/// (a refused proposal is still a committed raft entry; it just changed nothing).
pub type ApplyResult = Result<u64, StoreError>;

openraft::declare_raft_types!(
    /// openraft's type bundle for shoal: proposals in, store versions out, our seeded runtime.
    pub TypeConfig:
        D = Proposal,
        R = ApplyResult,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = crate::env::Rt,
);

/// A raft member as the raft layer knows it.
pub type RaftId = u64;

/// The openraft instance type.
pub type ShoalRaft = openraft::Raft<TypeConfig>;

/// Timing and retention settings of one replica.
///
/// Swarm ticks raft once a second with an election tick of 10 and a heartbeat tick of 1, so it
/// notices a dead leader after ~10 s. openraft is timer-driven instead, and we choose a 250 ms
/// heartbeat with a randomized 1–2 s election timeout: on a LAN (and in the simulator, whose links
/// add 0.5–3 ms) that is still two orders of magnitude above the round trip, so spurious elections
/// are rare, while fail-over takes ~1–3 s instead of ~10 s, which keeps simulated scenarios short
/// and the real daemon responsive. The spread (1–2 s, ≥ 4 heartbeats) keeps split votes rare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftConfig {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Snapshot after this many applied entries since the last snapshot (Swarm: `SnapshotInterval`
    /// 10,000).
    pub snapshot_interval: u64,
    /// Entries kept in the log behind a snapshot for slow followers (Swarm:
    /// `LogEntriesForSlowFollowers` 500).
    pub logs_to_keep_after_snapshot: u64,
    /// How long a proposal may wait for a leader and a commit before it fails with `NoLeader`.
    pub propose_timeout_ms: u64,
    /// Deadline for one forwarded proposal or membership call to the leader.
    pub forward_timeout_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval_ms: 250,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_interval: 10_000,
            logs_to_keep_after_snapshot: 500,
            propose_timeout_ms: 4000,
            forward_timeout_ms: 3000,
        }
    }
}

impl RaftConfig {
    /// openraft's config for these settings.
    #[allow(clippy::result_large_err)] // openraft's own error type, returned once at start-up
    pub fn openraft(&self) -> Result<openraft::Config, openraft::ConfigError> {
        openraft::Config {
            cluster_name: "shoal".into(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_interval),
            max_in_snapshot_log_to_keep: self.logs_to_keep_after_snapshot,
            // JSON turns bytes into numbers (~3.5x), so keep chunks well below frame limits.
            snapshot_max_chunk_size: 512 * 1024,
            ..Default::default()
        }
        .validate()
    }
}

/// Converts any displayable error into openraft's storage error for `subject`.
pub(crate) fn storage_err(
    subject: openraft::ErrorSubject<RaftId>,
    verb: openraft::ErrorVerb,
    err: impl std::fmt::Display,
) -> openraft::StorageError<RaftId> {
    let io_err = std::io::Error::other(err.to_string());
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&io_err)).into()
}
