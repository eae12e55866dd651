//! How writes reach the store: through a [`Proposer`]. Raft in a cluster; [`LocalProposer`] (apply
//! directly, no replication) in unit tests and benchmarks.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Action, Proposal, Store, StoreError, StoreState};

/// Swarm's words for a write that cannot commit because no leader can be elected.
pub const LOST_QUORUM_MESSAGE: &str =
    "The swarm does not have a leader. It's possible that too few managers are online. \
     Make sure more than half of the managers are online.";

/// Why a proposal was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// Committed, and the state machine refused it (nothing changed).
    #[error(transparent)]
    Rejected(#[from] StoreError),
    #[error("{}", LOST_QUORUM_MESSAGE)]
    NoLeader,
    /// This manager is not the leader; the caller may retry at `leader_addr`.
    #[error("this node is not the leader (leader: {})", leader_addr.as_deref().unwrap_or("unknown"))]
    NotLeader { leader_addr: Option<String> },
    #[error("the proposal may or may not have been committed: {0}")]
    Unknown(String),
    #[error("the manager is shutting down: {0}")]
    Shutdown(String),
}

/// The pause before the first retry of [`propose_with_retry`]; the n-th retry waits n times this.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Commits proposals. Returns the store version that includes the proposal.
#[async_trait]
pub trait Proposer: Send + Sync + 'static {
    async fn propose(&self, actions: Vec<Action>) -> Result<u64, ProposeError>;
}

/// Applies proposals straight to a store, stamped with the runtime clock.
#[derive(Debug, Clone)]
pub struct LocalProposer {
    store: Store,
}

impl LocalProposer {
    pub fn new(store: Store) -> Self {
        LocalProposer { store }
    }
}

#[async_trait]
impl Proposer for LocalProposer {
    async fn propose(&self, actions: Vec<Action>) -> Result<u64, ProposeError> {
        let proposal = Proposal { actions, stamp_ms: crate::env::runtime::unix_millis() };
        Ok(self.store.apply(&proposal)?)
    }
}

/// Read-modify-write with optimistic concurrency: build actions from the current state, propose,
/// and start over (up to `attempts` times) when another writer got there first — an object the
/// actions update changed (`Conflict`) or went away (`NotFound`: the task reaper deleted a task a
/// `service rm` was about to mark, say) between the view and the commit. `build` sees the newer
/// state on the next attempt, so what is still wanted is proposed again and what is gone is not.
/// Each retry first pauses a little longer than the last, so that a follower's store catches up
/// with the commits that beat it. `build` returning no actions means there is nothing to do.
pub async fn propose_with_retry<F>(
    store: &Store,
    proposer: &dyn Proposer,
    attempts: usize,
    mut build: F,
) -> Result<Option<u64>, ProposeError>
where
    F: FnMut(&StoreState) -> Result<Vec<Action>, ProposeError>,
{
    let mut last = None;
    for attempt in 0..attempts.max(1) {
        if attempt > 0 {
            crate::env::runtime::sleep(RETRY_PAUSE * attempt as u32).await;
        }
        let actions = store.view(&mut build)?;
        if actions.is_empty() {
            return Ok(None);
        }
        match proposer.propose(actions).await {
            Ok(version) => {
                store.wait_for_version(version).await;
                return Ok(Some(version));
            }
            Err(ProposeError::Rejected(err @ (StoreError::Conflict { .. } | StoreError::NotFound { .. }))) => {
                last = Some(err)
            }
            Err(other) => return Err(other),
        }
    }
    Err(ProposeError::Rejected(last.expect("at least one attempt")))
}
