//! Safety properties of the replicated control plane, checked continuously while a simulated
//! cluster runs (a checker task polls every node every few virtual milliseconds).
//!
//! One file per property, each citing where it comes from; a [`Violation`] names the broken one
//! with the evidence. The checkers see only [`Observation`]s — what each live node's raft replica
//! and store report — so they work on any run, whatever faults it injects.

pub mod acknowledged_writes;
pub mod election_safety;
pub mod leader_completeness;
pub mod state_machine_safety;

pub use acknowledged_writes::AcknowledgedWrites;
pub use election_safety::ElectionSafety;
pub use leader_completeness::LeaderCompleteness;
pub use state_machine_safety::StateMachineSafety;

use shoal_core::raft::{RaftId, Role};
use shoal_core::store::Store;

/// What one live manager reports at one instant.
#[derive(Debug, Clone)]
pub struct Observation {
    pub raft_id: RaftId,
    pub term: u64,
    pub role: Role,
    /// (term, index) of the last entry the node applied.
    pub last_applied: Option<(u64, u64)>,
    pub last_log_index: Option<u64>,
    pub store: Store,
}

/// A broken safety property, with what showed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("election safety: nodes {first} and {second} are both leader of term {term}")]
    TwoLeaders { term: u64, first: RaftId, second: RaftId },
    #[error("state machine safety: node {node} applied entry {index} of term {term}, but term {earlier_term} was applied there before")]
    AppliedEntryChanged { node: RaftId, index: u64, term: u64, earlier_term: u64 },
    #[error(
        "state machine safety: node {node} has a different state at store version {version} than another node had"
    )]
    StateDiverged { node: RaftId, version: u64 },
    #[error("leader completeness: node {leader} leads term {term} with log up to {last_log_index:?}, but entry {applied_index} of term {applied_term} was committed before")]
    LeaderMissesCommitted {
        leader: RaftId,
        term: u64,
        last_log_index: Option<u64>,
        applied_index: u64,
        applied_term: u64,
    },
    #[error("acknowledged write lost: node {node} is at store version {version} but lacks {object}, acknowledged at version {acked_version}")]
    AcknowledgedWriteLost { node: RaftId, version: u64, object: String, acked_version: u64 },
}

/// All the raft safety checkers together.
#[derive(Debug, Default)]
pub struct RaftInvariants {
    pub election: ElectionSafety,
    pub state_machine: StateMachineSafety,
    pub completeness: LeaderCompleteness,
    pub acked: AcknowledgedWrites,
}

impl RaftInvariants {
    /// Check one poll of every live node.
    pub fn check(&mut self, observations: &[Observation]) -> Result<(), Violation> {
        self.state_machine.check(observations)?;
        self.election.check(observations)?;
        self.completeness.check(observations)?;
        self.acked.check(observations)
    }
}

// Orchestration properties (tasks and services), checked on the leader's store.

pub mod client_requests;
pub mod no_running_task_on_drained_node;
pub mod replicas_bound;
pub mod task_state_forward;

pub use client_requests::ClientRequests;
pub use no_running_task_on_drained_node::NoRunningTaskOnDrainedNode;
pub use replicas_bound::ReplicasBound;
pub use task_state_forward::TaskStateForward;

/// A broken orchestration property, with what showed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceViolation {
    #[error("no-running-task-on-drained-node: task {task} ({task_id}) still running on {node}, drained {drained_for_ms} ms ago (allowed {allowed_ms} ms)")]
    RunningOnDrainedNode { task: String, task_id: String, node: String, drained_for_ms: u64, allowed_ms: u64 },
    #[error("replicas-bound: service {service} has {running} running tasks, more than the {bound} its spec allows")]
    TooManyRunning { service: String, running: u64, bound: u64 },
    #[error("task-state-forward: task {task} ({task_id}) went from {from} back to {to} at store version {version}")]
    TaskStateBackwards {
        task: String,
        task_id: String,
        from: shoal_core::api::TaskState,
        to: shoal_core::api::TaskState,
        version: u64,
    },
    #[error("client-requests: {client} request {seq} sent {sent_ms} ms into the run via {via} failed at {done_ms} ms ({error}) with no fault to explain it")]
    UnexplainedFailedRequest { client: String, seq: u64, sent_ms: u64, done_ms: u64, via: String, error: String },
}

/// All the orchestration checkers together, fed the leader's store on every poll.
///
/// The time-bounded ones (a scale-down settles, a drained node's tasks stop) measure their windows
/// on an *acting clock*: time during which a leader that can commit was observed. A leader cut off
/// from its quorum still shows its store, but neither its orchestrator's follow-up writes nor the
/// agents' reports can commit, so nothing it shows can change — in Swarm as here (a worker without a
/// manager keeps its tasks). Without a working quorum a service that was scaled down keeps its
/// surplus tasks until a leader can act again: a liveness matter, not a broken safety bound.
#[derive(Debug, Default)]
pub struct ServiceInvariants {
    pub drained: NoRunningTaskOnDrainedNode,
    pub replicas: ReplicasBound,
    pub forward: TaskStateForward,
    /// Milliseconds of the acting clock so far.
    acting_ms: u64,
    /// When the acting clock was last advanced or paused (ms, the caller's clock).
    last_ms: Option<u64>,
}

impl ServiceInvariants {
    /// Check one observation of the leader's store at time `now_ms`; `cut_off` holds the ids of the
    /// nodes the leader cannot reach or hear from now. The acting clock runs from the last call,
    /// unless [`ServiceInvariants::pause`] was called since (the leader cannot commit).
    pub fn check(
        &mut self,
        now_ms: u64,
        state: &shoal_core::store::StoreState,
        cut_off: &std::collections::BTreeSet<String>,
    ) -> Result<(), ServiceViolation> {
        self.acting_ms += self.last_ms.map_or(0, |last| now_ms.saturating_sub(last));
        self.last_ms = Some(now_ms);
        self.forward.check(state)?;
        self.replicas.check(self.acting_ms, state)?;
        self.drained.check(self.acting_ms, state, cut_off)
    }

    /// No leader that can commit at `now_ms` (none at all, or one cut off from its quorum): the
    /// acting clock stands still until the next [`ServiceInvariants::check`].
    pub fn pause(&mut self, now_ms: u64) {
        self.last_ms = Some(now_ms);
    }
}
