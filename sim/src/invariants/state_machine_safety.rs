//! State Machine Safety: if a server has applied a log entry at a given index, no other server
//! ever applies a different entry for that index — so committed entries never change.
//!
//! Source: Raft paper §5.4.3 and Figure 3; TLA+ `raft.tla` invariant `StateMachineSafety`
//! (a.k.a. Log Matching §5.3 restricted to the applied prefix).
//! Observed two ways: the term of the last applied entry at each index (an index applied under two
//! terms is a changed entry), and the store itself — every store at the same version must hold the
//! same state, since versions count applied proposals (a lost or altered committed proposal shows
//! up as a different state at some version).

use std::collections::BTreeMap;

use shoal_core::raft::RaftId;

use super::{Observation, Violation};

#[derive(Debug, Default)]
pub struct StateMachineSafety {
    /// index -> term of the entry applied there.
    applied: BTreeMap<u64, u64>,
    /// store version -> hash of the store state at that version.
    states: BTreeMap<u64, u64>,
    /// The version each node was last hashed at (hashing is skipped while it does not move).
    hashed: BTreeMap<RaftId, u64>,
}

/// FNV-1a over the state's JSON: the state's maps are ordered, so equal states hash equally.
pub fn state_hash(state: &shoal_core::store::StoreState) -> u64 {
    let bytes = serde_json::to_vec(state).unwrap_or_default();
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl StateMachineSafety {
    pub fn check(&mut self, observations: &[Observation]) -> Result<(), Violation> {
        for o in observations {
            if let Some((term, index)) = o.last_applied {
                let earlier_term = *self.applied.entry(index).or_insert(term);
                if earlier_term != term {
                    return Err(Violation::AppliedEntryChanged { node: o.raft_id, index, term, earlier_term });
                }
            }
            let (version, hash) =
                o.store.view(|s| (s.version, (self.hashed.get(&o.raft_id) != Some(&s.version)).then(|| state_hash(s))));
            if let Some(hash) = hash {
                self.hashed.insert(o.raft_id, version);
                let first = *self.states.entry(version).or_insert(hash);
                if first != hash {
                    return Err(Violation::StateDiverged { node: o.raft_id, version });
                }
            }
        }
        Ok(())
    }

    /// The highest index known applied, with its term.
    pub fn max_applied(&self) -> Option<(u64, u64)> {
        self.applied.iter().next_back().map(|(index, term)| (*term, *index))
    }

    /// Every (index, term) seen applied.
    pub fn applied(&self) -> &BTreeMap<u64, u64> {
        &self.applied
    }
}
