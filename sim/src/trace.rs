//! The run's trace: every node's events and the supervisor's notes (faults, steps) in one ordered
//! list, written as JSONL and reduced to a hash for the determinism check.

use std::sync::{Arc, Mutex};

use shoal_core::trace::{TraceEvent, TraceSink};

/// Collects the events of every simulated node.
#[derive(Clone, Default)]
pub struct SimTrace {
    events: Arc<Mutex<Vec<TraceEvent>>>,
}

impl std::fmt::Debug for SimTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTrace").field("events", &self.len()).finish()
    }
}

impl TraceSink for SimTrace {
    fn record(&self, event: TraceEvent) {
        self.events.lock().expect("trace lock").push(event);
    }
}

impl SimTrace {
    pub fn events(&self) -> Vec<TraceEvent> {
        self.events.lock().expect("trace lock").clone()
    }

    pub fn len(&self) -> usize {
        self.events.lock().expect("trace lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The trace as JSONL, one event per line.
    pub fn to_jsonl(&self) -> String {
        let events = self.events.lock().expect("trace lock");
        let mut out = String::new();
        for event in events.iter() {
            out.push_str(&serde_json::to_string(event).unwrap_or_default());
            out.push('\n');
        }
        out
    }

    /// FNV-1a over the JSONL: equal for equal runs, different (almost surely) otherwise.
    pub fn hash(&self) -> u64 {
        fnv1a(self.to_jsonl().as_bytes())
    }
}

/// FNV-1a, 64 bit.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= *byte as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
