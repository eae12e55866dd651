//! `GET /services/{id}/logs` and `GET /tasks/{id}/logs`: the control API's `ServiceLogs` (the
//! request `shoal service logs` sends, answered from every node that ran a task: `core/src/logs.rs`)
//! written as Docker's multiplexed stream — each line one frame, an 8-byte header (stream 1 stdout,
//! 2 stderr, 3 the daemon's own errors; then the payload's length, big-endian) and the line.
//!
//! With `details` each line starts with its attributes, `com.docker.swarm.node.id=…,
//! com.docker.swarm.service.id=…,com.docker.swarm.task.id=…` (sorted, query-escaped, as the engine
//! writes them): the `docker` CLI always asks for them and builds its `web.1.<id>@node | ` prefix
//! from them. With `timestamps` the RFC 3339 stamp goes first. `follow` polls the nodes every second
//! with a per-task cursor, as `shoal service logs -f` does, until the service is removed or the
//! client goes away. A node that cannot be reached is named once in a stream-3 frame in Docker's
//! words ("Error grabbing logs: warning: incomplete log stream …"), as Swarm's log broker reports it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hyper::body::Bytes;
use shoal_core::control::{ControlError, ControlRequest, ControlResponse};
use shoal_core::env::LogLine;
use shoal_core::logs::{LogsSelection, ServiceLogs};
use tokio::sync::mpsc;

use super::decode::{query_bool, DecodeError};
use super::{EngineApi, Failure, Reply};
use crate::local_api::{LocalAnswer, LocalError, LocalRequest};

/// How often a followed stream asks the nodes for new lines.
pub const FOLLOW_PERIOD: Duration = Duration::from_secs(1);

/// Stream numbers of the multiplexed stream's header.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const SYSTEMERR: u8 = 3;

/// The query of a logs request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogsOptions {
    pub stdout: bool,
    pub stderr: bool,
    pub details: bool,
    pub timestamps: bool,
    pub follow: bool,
    pub tail: Option<usize>,
    pub since_ns: Option<u64>,
}

/// Read the query as the engine does (`tail` "all", negative or not a number: every line; `since`
/// in Unix seconds with optional nanoseconds, as clients send it, or a duration or date).
pub fn options(query: &BTreeMap<String, String>, now_ns: u64) -> Result<LogsOptions, DecodeError> {
    let flag = |key: &str| query_bool(query.get(key).map(String::as_str));
    let (stdout, stderr) = (flag("stdout"), flag("stderr"));
    if !stdout && !stderr {
        return Err(DecodeError("Bad parameters: you must choose at least one stream".into()));
    }
    let tail = query.get("tail").and_then(|t| t.parse::<usize>().ok());
    let since_ns = match query.get("since").map(String::as_str) {
        None | Some("") => None,
        Some(text) => match unix_time_ns(text).map_or_else(|| crate::format::parse_since(text, now_ns).ok(), Some) {
            // `since=0` (docker-py's default) is "from the start".
            Some(0) => None,
            Some(ns) => Some(ns),
            None => return Err(DecodeError(format!("invalid value for \"since\": {text:?}"))),
        },
    };
    Ok(LogsOptions {
        stdout,
        stderr,
        details: flag("details"),
        timestamps: flag("timestamps"),
        follow: flag("follow"),
        tail,
        since_ns,
    })
}

/// What clients send as `since`: Unix seconds, with optional fractional nanoseconds (`1700000000`,
/// `1700000000.000000001`) — not a duration, which a bare `0` would otherwise read as.
fn unix_time_ns(text: &str) -> Option<u64> {
    let (secs, nanos) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || !digits(secs) || !digits(nanos) || nanos.len() > 9 {
        return None;
    }
    let nanos: u64 = if nanos.is_empty() { 0 } else { format!("{nanos:0<9}").parse().ok()? };
    secs.parse::<u64>().ok()?.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// One frame of the multiplexed stream.
pub fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The `details` attributes of a task's lines, as the engine writes them (keys sorted,
/// query-escaped values).
pub fn attributes(node_id: &str, service_id: &str, task_id: &str) -> String {
    let escape =
        |v: &str| serde_urlencoded::to_string([("", v)]).unwrap_or_default().trim_start_matches('=').to_string();
    format!(
        "com.docker.swarm.node.id={},com.docker.swarm.service.id={},com.docker.swarm.task.id={}",
        escape(node_id),
        escape(service_id),
        escape(task_id)
    )
}

/// The frames of one answer's lines, oldest first across tasks (as Swarm's broker interleaves
/// them), keeping only the streams asked for.
pub fn frames(logs: &ServiceLogs, options: &LogsOptions) -> Vec<u8> {
    let mut lines: Vec<(&LogLine, String)> = Vec::new();
    for task in &logs.tasks {
        let attrs = options.details.then(|| attributes(&task.node_id, &logs.service_id, &task.task_id));
        for line in &task.lines {
            if (line.stderr && !options.stderr) || (!line.stderr && !options.stdout) {
                continue;
            }
            lines.push((line, attrs.clone().unwrap_or_default()));
        }
    }
    lines.sort_by_key(|(line, _)| line.time_ns);
    let mut out = Vec::new();
    for (line, attrs) in lines {
        let mut text = String::new();
        if options.timestamps {
            text.push_str(&crate::format::rfc3339_nano_fixed(line.time_ns));
            text.push(' ');
        }
        if options.details {
            text.push_str(&attrs);
            text.push(' ');
        }
        text.push_str(&line.text);
        text.push('\n');
        out.extend(frame(if line.stderr { STDERR } else { STDOUT }, text.as_bytes()));
    }
    out
}

/// The stream-3 frame naming the nodes not yet reported whose logs could not be read.
fn unreachable_frame(logs: &ServiceLogs, reported: &mut BTreeSet<String>) -> Option<Vec<u8>> {
    let missing: Vec<String> = logs
        .unreachable
        .iter()
        .filter(|node| reported.insert(node.node_id.clone()))
        .map(|node| {
            let name = if node.hostname.is_empty() { &node.node_id } else { &node.hostname };
            format!("node {name} is not available ({} task(s): {})", node.tasks, node.reason)
        })
        .collect();
    (!missing.is_empty()).then(|| {
        let text = format!(
            "Error grabbing logs: warning: incomplete log stream. some logs could not be retrieved for the following \
             reasons: {}\n",
            missing.join(", ")
        );
        frame(SYSTEMERR, text.as_bytes())
    })
}

impl EngineApi {
    async fn logs_once(&self, target: &str, selection: &LogsSelection) -> Result<ServiceLogs, LocalError> {
        let request = ControlRequest::ServiceLogs { service: target.to_string(), selection: selection.clone() };
        match self.handler.handle(LocalRequest::Control { request: Box::new(request) }).await? {
            LocalAnswer::Control(ControlResponse::Logs(logs)) => Ok(logs),
            other => Err(LocalError::Control(ControlError::Internal(format!("unexpected answer: {other:?}")))),
        }
    }

    /// Start a logs stream of `target` (a service, or a task by id): the first answer is read
    /// before the stream starts, so an unknown target or a bad query is an ordinary error reply.
    pub async fn logs_stream(
        self: std::sync::Arc<Self>,
        client: &super::Client,
        target: String,
        query: BTreeMap<String, String>,
    ) -> Result<mpsc::Receiver<Bytes>, Reply> {
        let now_ns = shoal_core::env::runtime::unix_nanos();
        let options = options(&query, now_ns).map_err(|e| Failure::from(e).0)?;
        let mut selection = LogsSelection { tail: options.tail, since_ns: options.since_ns, cursors: BTreeMap::new() };
        let first = self.logs_once(&target, &selection).await.map_err(|e| client.worded(Failure::from(e).0))?;
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut reported = BTreeSet::new();
            let mut logs = first;
            loop {
                let mut out = frames(&logs, &options);
                if let Some(frame) = unreachable_frame(&logs, &mut reported) {
                    out.extend(frame);
                }
                if !out.is_empty() && sender.send(Bytes::from(out)).await.is_err() {
                    return;
                }
                if !options.follow {
                    return;
                }
                for task in &logs.tasks {
                    if let Some(last) = task.last_ns {
                        selection.cursors.insert(task.task_id.clone(), last);
                    }
                }
                // Tasks that appear later are shown from their first line.
                selection.tail = None;
                tokio::select! {
                    _ = tokio::time::sleep(FOLLOW_PERIOD) => {}
                    _ = sender.closed() => return,
                }
                logs = match self.logs_once(&target, &selection).await {
                    Ok(logs) => logs,
                    // Followed to the end: the service was removed.
                    Err(LocalError::Control(ControlError::NotFound(_))) => return,
                    Err(err) => {
                        let text = format!("Error grabbing logs: {err}\n");
                        let _ = sender.send(Bytes::from(frame(SYSTEMERR, text.as_bytes()))).await;
                        return;
                    }
                };
            }
        });
        Ok(receiver)
    }
}
