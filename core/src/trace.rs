//! Run traces: one JSON object per event (time, node, kind, fields), written as JSONL by the
//! simulator and by the daemon alike, so `shoal-reports` and the invariant checker read both.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One traced event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Milliseconds on the runtime clock (virtual in the simulator) since the Unix epoch.
    pub time_ms: u64,
    /// The node that observed the event (`manager-1`, `worker-3`, or a node id).
    pub node: String,
    /// What happened: `raft.leader`, `task.state`, `node.down`, `fault.crash`, …
    pub kind: String,
    pub fields: serde_json::Value,
}

/// A manager stepped down because raft could not write to its disk (fields: `error`, `message`).
pub const MANAGER_STEPPED_DOWN: &str = "manager.stepped_down";
/// A manager that stepped down rejoined once its disk took writes again (fields: `message`).
pub const MANAGER_REJOINED: &str = "manager.rejoined";
/// Events an operator must see at once: the daemon also prints their `message` on stderr.
pub const ALARMS: &[&str] = &[MANAGER_STEPPED_DOWN, MANAGER_REJOINED];

impl TraceEvent {
    /// Is this one of the [`ALARMS`]?
    pub fn is_alarm(&self) -> bool {
        ALARMS.contains(&self.kind.as_str())
    }

    /// The alarm's sentence for a log line (its `message` field, else the fields as JSON).
    pub fn alarm_text(&self) -> String {
        match self.fields.get("message").and_then(|m| m.as_str()) {
            Some(message) => message.to_string(),
            None => format!("{} {}", self.kind, self.fields),
        }
    }
}

/// Where a node's events go.
pub trait TraceSink: Send + Sync + 'static {
    fn record(&self, event: TraceEvent);
}

/// Drops every event (unit tests, benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTrace;

impl TraceSink for NoTrace {
    fn record(&self, _event: TraceEvent) {}
}

/// A node's handle for emitting events, stamped with the node's name and the runtime clock.
#[derive(Clone)]
pub struct Tracer {
    node: String,
    sink: Arc<dyn TraceSink>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("node", &self.node).finish()
    }
}

impl Tracer {
    pub fn new(node: impl Into<String>, sink: Arc<dyn TraceSink>) -> Self {
        Tracer { node: node.into(), sink }
    }

    pub fn none() -> Self {
        Tracer::new("", Arc::new(NoTrace))
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn emit(&self, kind: &str, fields: serde_json::Value) {
        self.sink.record(TraceEvent {
            time_ms: crate::env::runtime::unix_millis(),
            node: self.node.clone(),
            kind: kind.to_string(),
            fields,
        });
    }
}
