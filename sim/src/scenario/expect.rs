//! `expect:` lines: what should hold of the cluster, checked against the leader's store (what
//! `docker service ls` / `node ls` on the leader would show). A step's expectation is polled on
//! virtual time until it holds or its `within` bound passes; a miss says what was seen instead.

use std::time::Duration;

use shoal_core::api::{Availability, NodeRole, NodeState, ServiceMode, TaskState, UpdateState};
use shoal_core::store::StoreState;

use super::parse::parse_duration;
use crate::client::ClientLog;

/// One checkable statement about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// `service web running 6 [image nginx:1.26]`: exactly N tasks desired and observed running,
    /// all with that image if one is named.
    ServiceRunning { service: String, count: u64, image: Option<String> },
    /// `service web absent`
    ServiceAbsent { service: String },
    /// `service batch completed 6`: the job's current iteration has exactly N completed tasks, in N
    /// distinct slots (or nodes): every completion counted once, none run twice.
    ServiceCompleted { service: String, count: u64 },
    /// `service web starting 2`: exactly N tasks meant to run are `starting` (a health-checked
    /// container not yet healthy).
    ServiceStarting { service: String, count: u64 },
    /// `service web failed with dockerexec: unhealthy container`: some task of the service failed
    /// with an error containing the text.
    ServiceFailedWith { service: String, text: String },
    /// `service web update completed|paused|updating|rollback_completed|…`
    ServiceUpdateState { service: String, state: UpdateState },
    /// `node worker-2 status down|ready|…`
    NodeStatus { node: String, state: NodeState },
    /// `node worker-2 availability drain|active|pause`
    NodeAvailability { node: String, availability: Availability },
    /// `node worker-1 role manager|worker`
    NodeRole { node: String, role: NodeRole },
    /// `node worker-2 absent`
    NodeAbsent { node: String },
    /// `nodes 5 [ready]`: N nodes in the store (in that state).
    Nodes { count: u64, state: Option<NodeState> },
    /// `leader exists`
    LeaderExists,
    /// `no running task of web on worker-2`
    NoRunningTaskOn { service: String, node: String },
    /// `network backend exists`
    NetworkExists { name: String },
    /// `client load1 ok 100`: at least N of the client's requests succeeded.
    ClientOk { client: String, count: u64 },
    /// `client load1 failed at most 0`
    ClientFailedAtMost { client: String, max: u64 },
    /// `client load1 reaches every task of web`: each running task of the service answered one of
    /// the client's last [`SPREAD_WINDOW`] successful requests.
    ClientReachesEvery { client: String, service: String },
    /// `client load1 answered only by web`: every successful request was answered by a task of the
    /// service.
    ClientAnsweredOnlyBy { client: String, service: String },
    /// `port worker-2:8080 closed`: a connection from the client host is refused.
    PortClosed { addr: String },
    /// `port worker-1:8080 answers web`: a request from the client host is answered by a task of
    /// the service (`worker-1:5353/udp`: a datagram, answered by one).
    PortAnswers { addr: String, service: String },
    /// `name web resolves on worker-1 in app`: a container on network `app` on that node gets an
    /// address for the name from the mesh resolver.
    NameResolves { name: String, node: String, network: String },
    /// `name web unknown on worker-1 in app`: it gets none (NXDOMAIN, no address or no answer).
    NameUnknown { name: String, node: String, network: String },
    /// `ca certs rotated 4`: exactly N nodes hold a certificate from the root they should
    /// (`swarm ca`'s "rotated TLS certificates", DESIGN §6b).
    CaCertsRotated { count: u64 },
    /// `ca rotation in-progress|done`: a root rotation is under way / over, with every node holding
    /// a certificate from the root and trusting it alone.
    CaRotation { done: bool },
}

/// How many of a client's latest successful requests `reaches every task of` looks at (the issue's
/// "each replica answers within 100 requests").
pub const SPREAD_WINDOW: usize = 100;

/// An expectation with the time it is given to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed {
    pub expectation: Expectation,
    pub within: Duration,
}

const FORMS: &str = "service S running N [image I], service S absent, service S completed N, service S starting N, \
                     service S failed with TEXT, service S update STATE, node N status S, \
                     node N availability A, node N role R, node N absent, nodes N [STATE], leader exists, \
                     no running task of S on N, network N exists, client C ok N, client C failed at most N, \
                     client C reaches every task of S, client C answered only by S, port HOST:PORT closed, \
                     port HOST:PORT answers S, name N resolves on NODE in NET, name N unknown on NODE in NET, \
                     ca certs rotated N, ca rotation in-progress|done";

fn node_state(word: &str) -> Result<NodeState, String> {
    match word {
        "ready" => Ok(NodeState::Ready),
        "down" => Ok(NodeState::Down),
        "disconnected" => Ok(NodeState::Disconnected),
        "unknown" => Ok(NodeState::Unknown),
        other => Err(format!("unknown node status {other:?}: expected ready, down, disconnected, unknown")),
    }
}

fn update_state(word: &str) -> Result<UpdateState, String> {
    Ok(match word {
        "updating" => UpdateState::Updating,
        "paused" => UpdateState::Paused,
        "completed" => UpdateState::Completed,
        "rollback_started" | "rollback-started" => UpdateState::RollbackStarted,
        "rollback_paused" | "rollback-paused" => UpdateState::RollbackPaused,
        "rollback_completed" | "rollback-completed" => UpdateState::RollbackCompleted,
        other => {
            return Err(format!(
                "unknown update state {other:?}: expected updating, paused, completed, rollback_started, rollback_paused, rollback_completed"
            ))
        }
    })
}

impl std::str::FromStr for Expectation {
    type Err = String;

    fn from_str(text: &str) -> Result<Expectation, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let number = |w: &str| w.parse::<u64>().map_err(|_| format!("{w:?} is not a number in expectation {text:?}"));
        Ok(match words.as_slice() {
            ["service", s, "running", n] => {
                Expectation::ServiceRunning { service: s.to_string(), count: number(n)?, image: None }
            }
            ["service", s, "running", n, "image", i] => {
                Expectation::ServiceRunning { service: s.to_string(), count: number(n)?, image: Some(i.to_string()) }
            }
            ["service", s, "absent"] => Expectation::ServiceAbsent { service: s.to_string() },
            ["service", s, "completed", n] => {
                Expectation::ServiceCompleted { service: s.to_string(), count: number(n)? }
            }
            ["service", s, "starting", n] => Expectation::ServiceStarting { service: s.to_string(), count: number(n)? },
            ["service", s, "failed", "with", text @ ..] if !text.is_empty() => {
                Expectation::ServiceFailedWith { service: s.to_string(), text: text.join(" ") }
            }
            ["service", s, "update", state] => {
                Expectation::ServiceUpdateState { service: s.to_string(), state: update_state(state)? }
            }
            ["node", n, "status", state] => Expectation::NodeStatus { node: n.to_string(), state: node_state(state)? },
            ["node", n, "availability", a] => Expectation::NodeAvailability {
                node: n.to_string(),
                availability: match *a {
                    "active" => Availability::Active,
                    "pause" => Availability::Pause,
                    "drain" => Availability::Drain,
                    other => return Err(format!("unknown availability {other:?}: expected active, pause, drain")),
                },
            },
            ["node", n, "role", r] => Expectation::NodeRole {
                node: n.to_string(),
                role: match *r {
                    "manager" => NodeRole::Manager,
                    "worker" => NodeRole::Worker,
                    other => return Err(format!("unknown role {other:?}: expected manager, worker")),
                },
            },
            ["node", n, "absent"] => Expectation::NodeAbsent { node: n.to_string() },
            ["nodes", n] => Expectation::Nodes { count: number(n)?, state: None },
            ["nodes", n, state] => Expectation::Nodes { count: number(n)?, state: Some(node_state(state)?) },
            ["leader", "exists"] => Expectation::LeaderExists,
            ["no", "running", "task", "of", s, "on", n] => {
                Expectation::NoRunningTaskOn { service: s.to_string(), node: n.to_string() }
            }
            ["network", n, "exists"] => Expectation::NetworkExists { name: n.to_string() },
            ["client", c, "ok", n] => Expectation::ClientOk { client: c.to_string(), count: number(n)? },
            ["client", c, "failed", "at", "most", n] => {
                Expectation::ClientFailedAtMost { client: c.to_string(), max: number(n)? }
            }
            ["client", c, "reaches", "every", "task", "of", s] => {
                Expectation::ClientReachesEvery { client: c.to_string(), service: s.to_string() }
            }
            ["client", c, "answered", "only", "by", s] => {
                Expectation::ClientAnsweredOnlyBy { client: c.to_string(), service: s.to_string() }
            }
            ["port", a, "closed"] if a.contains(':') && !a.ends_with("/udp") => {
                Expectation::PortClosed { addr: a.to_string() }
            }
            ["port", a, "answers", s] if a.contains(':') => {
                Expectation::PortAnswers { addr: a.to_string(), service: s.to_string() }
            }
            ["name", n, "resolves", "on", node, "in", net] => {
                Expectation::NameResolves { name: n.to_string(), node: node.to_string(), network: net.to_string() }
            }
            ["name", n, "unknown", "on", node, "in", net] => {
                Expectation::NameUnknown { name: n.to_string(), node: node.to_string(), network: net.to_string() }
            }
            ["ca", "certs", "rotated", n] => Expectation::CaCertsRotated { count: number(n)? },
            ["ca", "rotation", "in-progress"] => Expectation::CaRotation { done: false },
            ["ca", "rotation", "done"] => Expectation::CaRotation { done: true },
            _ => return Err(format!("unknown expectation {text:?}: expected one of: {FORMS}")),
        })
    }
}

impl std::str::FromStr for Timed {
    type Err = String;

    /// `<expectation> within 30s`.
    fn from_str(text: &str) -> Result<Timed, String> {
        let Some((expectation, within)) = text.rsplit_once(" within ") else {
            return Err(format!("expectation {text:?} needs a bound: `… within 30s`"));
        };
        Ok(Timed { expectation: expectation.trim().parse()?, within: parse_duration(within.trim())? })
    }
}

/// The word a scenario uses for an enum value (its serde name).
fn lower<T: serde::Serialize + std::fmt::Debug>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{value:?}"))
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expectation::ServiceRunning { service, count, image: None } => {
                write!(f, "service {service} running {count}")
            }
            Expectation::ServiceRunning { service, count, image: Some(i) } => {
                write!(f, "service {service} running {count} image {i}")
            }
            Expectation::ServiceAbsent { service } => write!(f, "service {service} absent"),
            Expectation::ServiceCompleted { service, count } => write!(f, "service {service} completed {count}"),
            Expectation::ServiceStarting { service, count } => write!(f, "service {service} starting {count}"),
            Expectation::ServiceFailedWith { service, text } => write!(f, "service {service} failed with {text}"),
            Expectation::ServiceUpdateState { service, state } => {
                write!(f, "service {service} update {}", lower(state))
            }
            Expectation::NodeStatus { node, state } => write!(f, "node {node} status {}", lower(state)),
            Expectation::NodeAvailability { node, availability } => {
                write!(f, "node {node} availability {}", lower(availability))
            }
            Expectation::NodeRole { node, role } => write!(f, "node {node} role {}", lower(role)),
            Expectation::NodeAbsent { node } => write!(f, "node {node} absent"),
            Expectation::Nodes { count, state: None } => write!(f, "nodes {count}"),
            Expectation::Nodes { count, state: Some(s) } => write!(f, "nodes {count} {}", lower(s)),
            Expectation::LeaderExists => write!(f, "leader exists"),
            Expectation::NoRunningTaskOn { service, node } => write!(f, "no running task of {service} on {node}"),
            Expectation::NetworkExists { name } => write!(f, "network {name} exists"),
            Expectation::ClientOk { client, count } => write!(f, "client {client} ok {count}"),
            Expectation::ClientFailedAtMost { client, max } => write!(f, "client {client} failed at most {max}"),
            Expectation::ClientReachesEvery { client, service } => {
                write!(f, "client {client} reaches every task of {service}")
            }
            Expectation::ClientAnsweredOnlyBy { client, service } => {
                write!(f, "client {client} answered only by {service}")
            }
            Expectation::PortClosed { addr } => write!(f, "port {addr} closed"),
            Expectation::PortAnswers { addr, service } => write!(f, "port {addr} answers {service}"),
            Expectation::NameResolves { name, node, network } => {
                write!(f, "name {name} resolves on {node} in {network}")
            }
            Expectation::NameUnknown { name, node, network } => write!(f, "name {name} unknown on {node} in {network}"),
            Expectation::CaCertsRotated { count } => write!(f, "ca certs rotated {count}"),
            Expectation::CaRotation { done: false } => write!(f, "ca rotation in-progress"),
            Expectation::CaRotation { done: true } => write!(f, "ca rotation done"),
        }
    }
}

/// Tasks of a service that are running and meant to be (what `service ls` counts).
fn running_tasks<'a>(
    state: &'a StoreState,
    service_id: &'a str,
) -> impl Iterator<Item = &'a shoal_core::api::Task> + 'a {
    state.tasks.values().filter(move |t| {
        t.service_id == service_id
            && t.status.state == TaskState::Running
            // A job's tasks are desired `complete`.
            && matches!(t.desired_state, TaskState::Running | TaskState::Complete)
    })
}

impl Expectation {
    /// Whether the expectation holds; if not, what was seen instead. `state` is the leader's store
    /// (`None` without a leader), `leader` the leader's host name.
    pub fn check(&self, state: Option<&StoreState>, leader: Option<&str>) -> Result<(), String> {
        if let Expectation::LeaderExists = self {
            return leader.map(|_| ()).ok_or_else(|| "no manager is leader".to_string());
        }
        let Some(state) = state else { return Err("no leader, so no store to read".into()) };
        let service = |name: &str| state.services.values().find(|s| s.spec.name == name || s.id == name);
        let node = |name: &str| state.nodes.values().find(|n| n.hostname() == name || n.id == name);
        match self {
            Expectation::LeaderExists => Ok(()),
            Expectation::ServiceRunning { service: name, count, image } => {
                let svc = service(name).ok_or_else(|| format!("service {name} does not exist"))?;
                let running: Vec<_> = running_tasks(state, &svc.id).collect();
                let matching =
                    running.iter().filter(|t| image.as_ref().is_none_or(|i| &t.spec.image == i)).count() as u64;
                if running.len() as u64 == *count && matching == *count {
                    return Ok(());
                }
                let mut images: Vec<&str> = running.iter().map(|t| t.spec.image.as_str()).collect();
                images.dedup();
                let desired = match svc.spec.mode {
                    ServiceMode::Replicated { replicas } => format!("{replicas} replicas"),
                    ServiceMode::Global => "global".to_string(),
                    ServiceMode::ReplicatedJob { max_concurrent, total_completions } => {
                        format!("replicated job of {total_completions}, {max_concurrent} at once")
                    }
                    ServiceMode::GlobalJob => "global job".to_string(),
                };
                let mut pending: Vec<String> = state
                    .tasks
                    .values()
                    .filter(|t| {
                        t.service_id == svc.id
                            && t.desired_state == TaskState::Running
                            && t.status.state != TaskState::Running
                    })
                    .map(|t| {
                        format!(
                            "{}:{}{}",
                            t.name(),
                            t.status.state,
                            if t.status.err.is_empty() { String::new() } else { format!(" ({})", t.status.err) }
                        )
                    })
                    .collect();
                pending.truncate(4);
                Err(format!(
                    "{} running ({} with the image), images {images:?}, spec {desired} image {}, update {:?}; not yet running: {pending:?}",
                    running.len(),
                    matching,
                    svc.spec.task.image,
                    svc.update_status.as_ref().map(|u| u.state),
                ))
            }
            Expectation::ServiceCompleted { service: name, count } => {
                let svc = service(name).ok_or_else(|| format!("service {name} does not exist"))?;
                let complete: Vec<_> = state
                    .tasks
                    .values()
                    .filter(|t| {
                        t.service_id == svc.id
                            && t.spec_version == svc.spec_version
                            && t.status.state == TaskState::Complete
                    })
                    .collect();
                let places: std::collections::BTreeSet<String> =
                    complete.iter().map(|t| if t.slot > 0 { t.slot.to_string() } else { t.node_id.clone() }).collect();
                if complete.len() as u64 == *count && places.len() as u64 == *count {
                    return Ok(());
                }
                let states: Vec<String> = state
                    .tasks
                    .values()
                    .filter(|t| t.service_id == svc.id && t.spec_version == svc.spec_version)
                    .map(|t| format!("{}:{}/{}", t.name(), t.status.state, t.desired_state))
                    .collect();
                Err(format!("{} completed in {} places; tasks: {states:?}", complete.len(), places.len()))
            }
            Expectation::ServiceStarting { service: name, count } => {
                let svc = service(name).ok_or_else(|| format!("service {name} does not exist"))?;
                let states: Vec<String> = state
                    .tasks
                    .values()
                    .filter(|t| t.service_id == svc.id && t.desired_state == TaskState::Running)
                    .map(|t| format!("{}:{}", t.name(), t.status.state))
                    .collect();
                let starting = states.iter().filter(|s| s.ends_with(":starting")).count() as u64;
                if starting == *count {
                    return Ok(());
                }
                Err(format!("{starting} starting; tasks meant to run: {states:?}"))
            }
            Expectation::ServiceFailedWith { service: name, text } => {
                let svc = service(name).ok_or_else(|| format!("service {name} does not exist"))?;
                let failed: Vec<String> = state
                    .tasks
                    .values()
                    .filter(|t| t.service_id == svc.id && t.status.state == TaskState::Failed)
                    .map(|t| format!("{}: {}", t.name(), t.status.err))
                    .collect();
                if failed.iter().any(|f| f.contains(text.as_str())) {
                    return Ok(());
                }
                Err(format!("no failed task with {text:?}; failed tasks: {failed:?}"))
            }
            Expectation::ServiceAbsent { service: name } => match service(name) {
                None => Ok(()),
                Some(_) => Err(format!("service {name} still exists")),
            },
            Expectation::ServiceUpdateState { service: name, state: want } => {
                let svc = service(name).ok_or_else(|| format!("service {name} does not exist"))?;
                match &svc.update_status {
                    Some(status) if status.state == *want => Ok(()),
                    Some(status) => Err(format!("update state is {:?} ({})", status.state, status.message)),
                    None => Err("no update status".into()),
                }
            }
            Expectation::NodeStatus { node: name, state: want } => {
                let n = node(name).ok_or_else(|| format!("node {name} is not in the swarm"))?;
                (n.status.state == *want).then_some(()).ok_or_else(|| format!("node {name} is {:?}", n.status.state))
            }
            Expectation::NodeAvailability { node: name, availability } => {
                let n = node(name).ok_or_else(|| format!("node {name} is not in the swarm"))?;
                (n.spec.availability == *availability)
                    .then_some(())
                    .ok_or_else(|| format!("node {name} availability is {:?}", n.spec.availability))
            }
            Expectation::NodeRole { node: name, role } => {
                let n = node(name).ok_or_else(|| format!("node {name} is not in the swarm"))?;
                (n.role == *role).then_some(()).ok_or_else(|| format!("node {name} role is {:?}", n.role))
            }
            Expectation::NodeAbsent { node: name } => match node(name) {
                None => Ok(()),
                Some(n) => Err(format!("node {name} is still in the swarm ({:?})", n.status.state)),
            },
            Expectation::CaCertsRotated { count } => {
                let progress = shoal_core::ca_rotation::progress(state).ok_or("the swarm has no cluster object yet")?;
                (progress.certs_rotated == *count).then_some(()).ok_or_else(|| {
                    format!(
                        "{}/{} nodes renewed; waiting for {:?}",
                        progress.certs_rotated, progress.total, progress.waiting_for
                    )
                })
            }
            Expectation::CaRotation { done } => {
                let progress = shoal_core::ca_rotation::progress(state).ok_or("the swarm has no cluster object yet")?;
                let holds = if *done { progress.converged() } else { progress.rotation_in_progress };
                holds.then_some(()).ok_or_else(|| format!("rotation: {progress:?}"))
            }
            Expectation::Nodes { count, state: want } => {
                let seen = state.nodes.values().filter(|n| want.is_none_or(|s| n.status.state == s)).count() as u64;
                let all: Vec<String> =
                    state.nodes.values().map(|n| format!("{}:{:?}", n.hostname(), n.status.state)).collect();
                (seen == *count).then_some(()).ok_or_else(|| format!("{seen} nodes match: {all:?}"))
            }
            Expectation::NoRunningTaskOn { service: name, node: node_name } => {
                let Some(svc) = service(name) else { return Ok(()) };
                let Some(n) = node(node_name) else { return Ok(()) };
                let on_node: Vec<String> = state
                    .tasks
                    .values()
                    .filter(|t| t.service_id == svc.id && t.node_id == n.id && t.status.state == TaskState::Running)
                    .map(|t| t.name())
                    .collect();
                on_node.is_empty().then_some(()).ok_or_else(|| format!("running on {node_name}: {on_node:?}"))
            }
            Expectation::NetworkExists { name } => state
                .networks
                .values()
                .any(|n| &n.name == name)
                .then_some(())
                .ok_or_else(|| format!("network {name} does not exist")),
            Expectation::ClientOk { .. }
            | Expectation::ClientFailedAtMost { .. }
            | Expectation::ClientReachesEvery { .. }
            | Expectation::ClientAnsweredOnlyBy { .. } => Err("a client expectation needs the run's clients".into()),
            Expectation::PortClosed { .. }
            | Expectation::PortAnswers { .. }
            | Expectation::NameResolves { .. }
            | Expectation::NameUnknown { .. } => Err("this expectation needs the simulated network".into()),
        }
    }

    /// Whether a `port …` expectation holds on the answer of one request to its address (the
    /// serving container's name, or why there was none): `answers S` wants a container of S,
    /// `closed` a refused connection.
    pub fn check_probe(&self, answer: Result<String, String>) -> Result<(), String> {
        match (self, answer) {
            (Expectation::PortClosed { .. }, Err(err))
                if err.starts_with("connection to") && err.contains("refused") =>
            {
                Ok(())
            }
            (Expectation::PortAnswers { service, .. }, Ok(answer)) if answer.starts_with(&format!("{service}.")) => {
                Ok(())
            }
            (Expectation::PortClosed { addr } | Expectation::PortAnswers { addr, .. }, Ok(answer)) => {
                Err(format!("{addr} answered {answer:?}"))
            }
            (_, Err(err)) => Err(err),
            (_, Ok(_)) => Err("not a port expectation".into()),
        }
    }

    /// Whether a `client …` expectation holds on the requests in `log` (`None` for the others).
    pub fn check_client(&self, state: Option<&StoreState>, log: &ClientLog) -> Option<Result<(), String>> {
        let verdict = match self {
            Expectation::ClientOk { client, count } => {
                let records = log.of(client);
                let ok = records.iter().filter(|r| r.ok()).count() as u64;
                (ok >= *count)
                    .then_some(())
                    .ok_or_else(|| format!("{ok} of {} requests of {client} succeeded so far", records.len()))
            }
            Expectation::ClientFailedAtMost { client, max } => {
                let failed: Vec<_> = log.of(client).into_iter().filter(|r| !r.ok()).collect();
                (failed.len() as u64 <= *max).then_some(()).ok_or_else(|| {
                    let first: Vec<String> = failed
                        .iter()
                        .take(3)
                        .map(|r| format!("#{} at {} ms: {}", r.seq, r.sent_ms, r.error.as_deref().unwrap_or("")))
                        .collect();
                    format!("{} requests of {client} failed, first: {first:?}", failed.len())
                })
            }
            Expectation::ClientReachesEvery { client, service } => {
                let Some(state) = state else { return Some(Err("no leader, so no store to read".into())) };
                let Some(svc) = state.services.values().find(|s| s.spec.name == *service || s.id == *service) else {
                    return Some(Err(format!("service {service} does not exist")));
                };
                let ok: Vec<_> = log.of(client).into_iter().filter(|r| r.ok()).collect();
                let window = &ok[ok.len().saturating_sub(SPREAD_WINDOW)..];
                let answered: std::collections::BTreeSet<&str> = window.iter().filter_map(|r| r.task_id()).collect();
                let missing: Vec<String> = running_tasks(state, &svc.id)
                    .filter(|t| !answered.contains(t.id.as_str()))
                    .map(|t| t.name())
                    .collect();
                if window.len() < SPREAD_WINDOW {
                    Err(format!("only {} successful requests of {client} so far (want {SPREAD_WINDOW})", window.len()))
                } else if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("in the last {SPREAD_WINDOW} answers of {client}, no answer from {missing:?}"))
                }
            }
            Expectation::ClientAnsweredOnlyBy { client, service } => {
                let prefix = format!("{service}.");
                let ok: Vec<_> = log.of(client).into_iter().filter(|r| r.ok()).collect();
                let strangers: Vec<String> = ok
                    .iter()
                    .filter_map(|r| r.answer.clone())
                    .filter(|answer| !answer.starts_with(&prefix))
                    .take(3)
                    .collect();
                if ok.is_empty() {
                    Err(format!("no request of {client} succeeded yet"))
                } else if strangers.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{client} was answered by {strangers:?}"))
                }
            }
            _ => return None,
        };
        Some(verdict)
    }
}

/// Whether a name lookup's `answer` meets `expectation` (`name N resolves|unknown …`): resolving to
/// no address fails `resolves`; for `unknown`, NXDOMAIN or no answer passes and any address fails.
/// Both worlds judge their lookups by it.
pub fn judge_lookup<A: std::fmt::Debug>(
    expectation: &Expectation,
    name: &str,
    answer: Result<Vec<A>, String>,
) -> Result<(), String> {
    match (expectation, answer) {
        (Expectation::NameResolves { .. }, Ok(addresses)) if !addresses.is_empty() => Ok(()),
        (Expectation::NameResolves { .. }, Ok(_)) => Err(format!("{name} resolved to no address")),
        (Expectation::NameResolves { .. }, Err(err)) => Err(err),
        (_, Ok(addresses)) if !addresses.is_empty() => Err(format!("{name} resolved to {addresses:?}")),
        (_, Ok(_)) => Ok(()),
        (_, Err(err)) if err.contains("NXDOMAIN") || err.contains("no answer") => Ok(()),
        (_, Err(err)) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_expectations() {
        assert_eq!(
            "service web running 6 image nginx:1.26 within 30s".parse::<Timed>(),
            Ok(Timed {
                expectation: Expectation::ServiceRunning {
                    service: "web".into(),
                    count: 6,
                    image: Some("nginx:1.26".into())
                },
                within: Duration::from_secs(30)
            })
        );
        assert_eq!(
            "node worker-2 status down".parse::<Expectation>(),
            Ok(Expectation::NodeStatus { node: "worker-2".into(), state: NodeState::Down })
        );
        assert_eq!(
            "no running task of web on worker-2".parse::<Expectation>(),
            Ok(Expectation::NoRunningTaskOn { service: "web".into(), node: "worker-2".into() })
        );
        assert!("service web running 6".parse::<Timed>().unwrap_err().contains("within"));
        for text in [
            "client load1 ok 100",
            "client load1 failed at most 0",
            "client load1 reaches every task of web",
            "client load1 answered only by web",
            "port worker-2:8080 closed",
            "port worker-1:8080 answers web",
            "port worker-1:5353/udp answers dns",
            "name web resolves on worker-1 in app",
            "name tasks.web unknown on worker-2 in app",
        ] {
            let parsed: Expectation = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        assert!("port worker-2 closed".parse::<Expectation>().is_err());
        assert!("port worker-2:53/udp closed".parse::<Expectation>().is_err(), "UDP has no refusal to see");
        assert!("service web runing 6".parse::<Expectation>().unwrap_err().contains("unknown expectation"));
    }
}
