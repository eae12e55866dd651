//! Election Safety: at most one leader can be elected in a given term.
//!
//! Source: Raft paper (Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm"),
//! Figure 3 and §5.2; TLA+ spec `raft.tla`, invariant `ElectionSafety`.
//! Checked across time, not only per poll: a node that was leader of term T and a different node
//! seen as leader of T later is a violation even if they never overlapped in one poll.

use std::collections::BTreeMap;

use shoal_core::raft::{RaftId, Role};

use super::{Observation, Violation};

#[derive(Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<u64, RaftId>,
}

impl ElectionSafety {
    pub fn check(&mut self, observations: &[Observation]) -> Result<(), Violation> {
        for o in observations.iter().filter(|o| o.role == Role::Leader) {
            let first = *self.leaders.entry(o.term).or_insert(o.raft_id);
            if first != o.raft_id {
                return Err(Violation::TwoLeaders { term: o.term, first, second: o.raft_id });
            }
        }
        Ok(())
    }

    /// The leader seen for each term so far.
    pub fn leaders(&self) -> &BTreeMap<u64, RaftId> {
        &self.leaders
    }
}
