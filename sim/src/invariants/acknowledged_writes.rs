//! Durability of acknowledged writes: once a proposal was acknowledged to a client (the proposer
//! returned the store version that includes it), every store that reaches that version holds it,
//! across crashes, restarts and leader changes.
//!
//! Source: Raft paper §8 ("Client interaction": a leader responds only after the entry is
//! committed) together with §5.4 (committed entries are durable); the client-visible form of
//! linearizability, Jepsen's "acknowledged writes are never lost".
//! The harness registers each acknowledged create (object id, version); the check applies to every
//! observed store at or beyond that version. A liveness phase after faults heal checks that all
//! live stores eventually reach the highest acknowledged version.

use std::collections::BTreeMap;

use shoal_core::store::StoreState;

use super::{Observation, Violation};

#[derive(Debug, Default)]
pub struct AcknowledgedWrites {
    /// object id -> store version it was acknowledged at.
    acked: BTreeMap<String, u64>,
}

/// Does the state hold an object with this id, in any table?
fn holds(state: &StoreState, id: &str) -> bool {
    state.networks.contains_key(id)
        || state.services.contains_key(id)
        || state.nodes.contains_key(id)
        || state.tasks.contains_key(id)
        || state.cluster.as_ref().is_some_and(|c| c.id == id)
}

impl AcknowledgedWrites {
    /// A create of `object_id` was acknowledged at store `version`.
    pub fn acked(&mut self, object_id: impl Into<String>, version: u64) {
        self.acked.insert(object_id.into(), version);
    }

    pub fn count(&self) -> usize {
        self.acked.len()
    }

    /// The highest acknowledged version.
    pub fn max_version(&self) -> u64 {
        self.acked.values().copied().max().unwrap_or(0)
    }

    pub fn check(&mut self, observations: &[Observation]) -> Result<(), Violation> {
        for o in observations {
            let missing = o.store.view(|state| {
                self.acked
                    .iter()
                    .find(|(id, version)| **version <= state.version && !holds(state, id))
                    .map(|(id, version)| (id.clone(), *version, state.version))
            });
            if let Some((object, acked_version, version)) = missing {
                return Err(Violation::AcknowledgedWriteLost { node: o.raft_id, version, object, acked_version });
            }
        }
        Ok(())
    }
}
