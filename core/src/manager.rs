//! What a manager needs from consensus, as one small trait, so the dispatcher, the control API and
//! the leader-only controllers do not depend on openraft's types. [`crate::raft::Replica`] implements
//! it for clusters; [`SoloConsensus`] (always leader, no replication) serves unit tests.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::control::ControlError;
use crate::store::{LocalProposer, Proposer, Store};

/// A manager's view of the raft group.
#[async_trait]
pub trait Consensus: Send + Sync + 'static {
    /// Where writes go (forwarded to the leader when this manager is a follower).
    fn proposer(&self) -> Arc<dyn Proposer>;
    /// `true` while this manager is the leader.
    fn leadership(&self) -> watch::Receiver<bool>;
    /// The leader's address, if one is known.
    fn leader_addr(&self) -> Option<String>;
    /// Add a manager (learner first, then voter) once it serves raft at `addr`.
    async fn add_manager(&self, raft_id: u64, addr: String) -> Result<(), ControlError>;
    /// Remove a manager from the raft group; refused if it would lose quorum.
    async fn remove_manager(&self, raft_id: u64) -> Result<(), ControlError>;
    /// Raft ids of managers the leader currently reaches (all voters if not leader).
    fn reachable_managers(&self) -> Vec<u64>;
    /// Raft removed this manager from the voters (it was demoted): it is no longer a manager, though
    /// its node has not stopped the manager parts yet.
    fn demoted(&self) -> bool {
        false
    }
    /// Wait until the local store reflects every write committed before the call.
    async fn ensure_linearizable(&self) -> Result<(), ControlError>;
    async fn shutdown(&self);
}

/// A single manager that is always the leader and applies writes directly. For unit tests.
pub struct SoloConsensus {
    proposer: Arc<LocalProposer>,
    leader: watch::Sender<bool>,
}

impl SoloConsensus {
    pub fn new(store: Store) -> Self {
        let (leader, _) = watch::channel(true);
        SoloConsensus { proposer: Arc::new(LocalProposer::new(store)), leader }
    }
}

#[async_trait]
impl Consensus for SoloConsensus {
    fn proposer(&self) -> Arc<dyn Proposer> {
        self.proposer.clone()
    }
    fn leadership(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }
    fn leader_addr(&self) -> Option<String> {
        None
    }
    async fn add_manager(&self, _raft_id: u64, _addr: String) -> Result<(), ControlError> {
        Err(ControlError::FailedPrecondition("a solo manager cannot add managers".into()))
    }
    async fn remove_manager(&self, _raft_id: u64) -> Result<(), ControlError> {
        Err(ControlError::FailedPrecondition("a solo manager cannot remove managers".into()))
    }
    fn reachable_managers(&self) -> Vec<u64> {
        Vec::new()
    }
    async fn ensure_linearizable(&self) -> Result<(), ControlError> {
        Ok(())
    }
    async fn shutdown(&self) {
        self.leader.send_replace(false);
    }
}
