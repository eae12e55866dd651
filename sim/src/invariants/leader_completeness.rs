//! Leader Completeness: if a log entry is committed in a given term, it is present in the logs of
//! the leaders of all higher terms — so committed entries never vanish.
//!
//! Source: Raft paper §5.4 (Leader Completeness Property, proved in §5.4.3) and Figure 3; TLA+
//! `raft.tla` invariant `LeaderCompleteness`.
//! Checked when a node is first seen leading a term: its log must reach at least the highest index
//! that any node applied (hence committed) from an earlier term. Later polls are not checked
//! against newer commits, because a deposed leader's log legitimately stops growing.

use std::collections::{BTreeMap, BTreeSet};

use shoal_core::raft::{RaftId, Role};

use super::{Observation, Violation};

#[derive(Debug, Default)]
pub struct LeaderCompleteness {
    /// entry term -> the highest index applied anywhere with that term.
    committed: BTreeMap<u64, u64>,
    checked: BTreeSet<(u64, RaftId)>,
}

impl LeaderCompleteness {
    pub fn check(&mut self, observations: &[Observation]) -> Result<(), Violation> {
        for o in observations {
            if let Some((term, index)) = o.last_applied {
                let max = self.committed.entry(term).or_insert(index);
                *max = (*max).max(index);
            }
        }
        for o in observations.iter().filter(|o| o.role == Role::Leader) {
            if !self.checked.insert((o.term, o.raft_id)) {
                continue;
            }
            let earlier = self.committed.range(..o.term).max_by_key(|(_, index)| **index);
            if let Some((applied_term, applied_index)) = earlier {
                if o.last_log_index.unwrap_or(0) < *applied_index {
                    return Err(Violation::LeaderMissesCommitted {
                        leader: o.raft_id,
                        term: o.term,
                        last_log_index: o.last_log_index,
                        applied_index: *applied_index,
                        applied_term: *applied_term,
                    });
                }
            }
        }
        Ok(())
    }
}
