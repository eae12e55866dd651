//! From events to series: replicas per service, leader/term, faults, and recoveries.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// One trace event, as core's `TraceEvent` writes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Event {
    pub time_ms: u64,
    pub node: String,
    pub kind: String,
    #[serde(default)]
    pub fields: serde_json::Value,
}

/// A trace line that is not an event.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}:{line}: not a trace event: {reason}")]
pub struct TraceError {
    pub source_name: String,
    pub line: usize,
    pub reason: String,
}

/// Parse JSONL; blank lines are skipped, anything else that is not an event is an error with its line.
pub fn parse_trace(source_name: &str, text: &str) -> Result<Vec<Event>, TraceError> {
    let mut events = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(line).map_err(|err| TraceError {
            source_name: source_name.to_string(),
            line: index + 1,
            reason: err.to_string(),
        })?;
        events.push(event);
    }
    Ok(events)
}

/// A fault and how long the cluster took to be whole again after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    /// Seconds since the start of the run.
    pub at_s: f64,
    pub fault: String,
    /// Seconds from the fault until every service ran as many tasks as just before it;
    /// `None` if that never happened in the trace.
    pub converged_after_s: Option<f64>,
}

/// Everything a report shows, in seconds since the first event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Analysis {
    pub duration_s: f64,
    /// Running tasks per service: (time, count) at every change.
    pub replicas: BTreeMap<String, Vec<(f64, u64)>>,
    /// (time, term, node name or raft id) whenever a replica reports itself leader.
    pub leaders: Vec<(f64, u64, String)>,
    /// (time, description) of every injected fault.
    pub faults: Vec<(f64, String)>,
    pub recoveries: Vec<Recovery>,
    /// Running tasks per node at the end.
    pub tasks_per_node: BTreeMap<String, u64>,
    /// Simulated clients' requests (`client.request`), per client, in the order they finished.
    pub clients: BTreeMap<String, Vec<Request>>,
}

/// One request a client sent through the mesh.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Seconds since the start of the run when it was sent.
    pub sent_s: f64,
    /// From sending to its outcome.
    pub latency_ms: u64,
    pub ok: bool,
}

impl Analysis {
    /// Per client: for each whole second of the run, the requests sent then that succeeded and
    /// that failed — `(second, ok, failed)`, every second from 0 to the end.
    pub fn requests_per_second(&self) -> BTreeMap<String, Vec<(f64, u64, u64)>> {
        let seconds = self.duration_s.ceil().max(1.0) as usize;
        self.clients
            .iter()
            .map(|(client, requests)| {
                let mut buckets = vec![(0u64, 0u64); seconds + 1];
                for request in requests {
                    let bucket = &mut buckets[(request.sent_s.max(0.0) as usize).min(seconds)];
                    if request.ok {
                        bucket.0 += 1;
                    } else {
                        bucket.1 += 1;
                    }
                }
                let series = buckets.into_iter().enumerate().map(|(s, (ok, failed))| (s as f64, ok, failed)).collect();
                (client.clone(), series)
            })
            .collect()
    }
}

fn field<'a>(event: &'a Event, key: &str) -> Option<&'a serde_json::Value> {
    event.fields.get(key)
}

fn field_str(event: &Event, key: &str) -> Option<String> {
    field(event, key).and_then(|v| v.as_str()).map(str::to_string)
}

fn describe_fault(event: &Event) -> String {
    let kind = event.kind.trim_start_matches("fault.");
    match field_str(event, "host") {
        Some(host) => format!("{kind} {host}"),
        None => kind.to_string(),
    }
}

/// Turn a trace into series. Task events carry ids; `task.created` ties a task to its service.
pub fn analyze(events: &[Event]) -> Analysis {
    let Some(start) = events.iter().map(|e| e.time_ms).min() else { return Analysis::default() };
    let seconds = |ms: u64| (ms - start) as f64 / 1000.0;
    let mut analysis = Analysis::default();
    let mut service_of: BTreeMap<String, String> = BTreeMap::new();
    let mut node_of: BTreeMap<String, String> = BTreeMap::new();
    let mut running: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Node ids → host names, from each node's `node.start` (its trace name is the host name).
    let mut host_of: BTreeMap<String, String> = BTreeMap::new();
    let mut pending_recoveries: Vec<(usize, BTreeMap<String, u64>)> = Vec::new();

    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| e.time_ms);
    // Which service each task belongs to, first: a task's first state report can be traced before
    // the orchestrator's `task.created` (both are emitted after their commits, by different tasks).
    for event in &sorted {
        if event.kind == "task.created" {
            if let (Some(task), Some(service)) = (field_str(event, "task"), field_str(event, "service")) {
                service_of.insert(task, service);
            }
        }
    }
    for event in sorted {
        let t = seconds(event.time_ms);
        let mut changed = false;
        match event.kind.as_str() {
            "node.start" => {
                if let Some(id) = field_str(event, "node_id") {
                    host_of.insert(id, event.node.clone());
                }
            }
            "task.state" => {
                let (Some(task), Some(state)) = (field_str(event, "task_id"), field_str(event, "state")) else {
                    continue;
                };
                let Some(service) = service_of.get(&task).cloned() else { continue };
                if let Some(node) = field_str(event, "node_id") {
                    node_of.insert(task.clone(), node);
                }
                let set = running.entry(service).or_default();
                changed = if state == "running" { set.insert(task) } else { set.remove(&task) };
            }
            "task.desired" => {
                // The manager took the task away (node down, drain, update): it no longer counts.
                let desired = field_str(event, "desired").unwrap_or_default();
                if let (Some(task), true) = (field_str(event, "task"), desired != "running") {
                    for set in running.values_mut() {
                        changed |= set.remove(&task);
                    }
                }
            }
            "raft.state" if field_str(event, "role").as_deref() == Some("Leader") => {
                let term = field(event, "term").and_then(|v| v.as_u64()).unwrap_or(0);
                if analysis.leaders.last().map(|(_, last_term, _)| *last_term) != Some(term) {
                    analysis.leaders.push((t, term, event.node.clone()));
                }
            }
            "client.request" => {
                let number = |key: &str| field(event, key).and_then(|v| v.as_u64());
                if let (Some(client), Some(sent_ms), Some(done_ms)) =
                    (field_str(event, "client"), number("sent_ms"), number("done_ms"))
                {
                    let ok = field(event, "error").is_none_or(|e| e.is_null());
                    let sent_s = sent_ms.saturating_sub(start) as f64 / 1000.0;
                    let latency_ms = done_ms.saturating_sub(sent_ms);
                    analysis.clients.entry(client).or_default().push(Request { sent_s, latency_ms, ok });
                }
            }
            kind if kind.starts_with("fault.") => {
                analysis.faults.push((t, describe_fault(event)));
                let before: BTreeMap<String, u64> =
                    running.iter().map(|(service, set)| (service.clone(), set.len() as u64)).collect();
                analysis.recoveries.push(Recovery { at_s: t, fault: describe_fault(event), converged_after_s: None });
                pending_recoveries.push((analysis.recoveries.len() - 1, before));
            }
            _ => {}
        }
        if changed {
            for (service, set) in &running {
                let series = analysis.replicas.entry(service.clone()).or_default();
                let count = set.len() as u64;
                if series.last().map(|(_, c)| *c) != Some(count) {
                    series.push((t, count));
                }
            }
        }
        // A recovery is over when every service is back to at least its count before the fault,
        // and something happened after the fault (a restart of the count, not the fault instant).
        pending_recoveries.retain(|(index, before)| {
            let recovery = &mut analysis.recoveries[*index];
            let whole =
                before.iter().all(|(service, count)| running.get(service).map_or(0, |s| s.len() as u64) >= *count);
            if whole && changed && t > recovery.at_s {
                recovery.converged_after_s = Some(t - recovery.at_s);
                false
            } else {
                true
            }
        });
        analysis.duration_s = t;
    }
    // Faults after which nothing changed left the cluster as it was: converged at once.
    for (index, before) in pending_recoveries {
        let whole = before.iter().all(|(service, count)| running.get(service).map_or(0, |s| s.len() as u64) >= *count);
        let recovery = &mut analysis.recoveries[index];
        if whole && analysis.replicas.values().all(|s| s.iter().all(|(t, _)| *t <= recovery.at_s)) {
            recovery.converged_after_s = Some(0.0);
        }
    }
    for set in running.values() {
        for task in set {
            let node = node_of.get(task).map(|id| host_of.get(id).unwrap_or(id).clone()).unwrap_or_else(|| "?".into());
            *analysis.tasks_per_node.entry(node).or_default() += 1;
        }
    }
    analysis
}
