//! The Docker Engine API's swarm routes: the daemon's one API, on its unix socket (mode 0660,
//! `shoal daemon --socket`, plus `--api-socket` and loopback `--tcp` when given). shoal's own CLI
//! ([`crate::engine_client`]) and Docker's clients — the `docker` CLI, docker-py — all use it.
//!
//! Every request becomes [`LocalRequest`]s handled in-process by the daemon's [`LocalHandler`]: this
//! module only translates between Docker's HTTP/JSON and shoal's control API. Where shoal has more
//! than Docker's shapes say, it adds what Docker's clients ignore: `ServiceStatus` on a service
//! inspected with `status=true`, `Spec.DependsOn`, and two routes of its own, `GET /shoal/swarm/ca`
//! (the root CA and its rotation's progress) and `GET /shoal/state` (the store's objects, for the
//! test harness). Answers use the engine's JSON shapes (the ones `shoal …
//! inspect` prints, [`crate::cli::inspect`]), Docker's headers (`Api-Version` 1.41, minimum 1.24),
//! the optional `/vX.Y` prefix, and errors as `{"message": …}` with Docker's status codes. Routes of
//! the engine that shoal does not serve (containers, images, volumes, …) answer 501 saying so.
//! [`decode`] reads what clients send; [`encode`] writes what only this API shows (tasks, info, version).

pub mod decode;
pub mod distribution;
pub mod encode;
mod files;
pub mod logs;
pub mod swarm;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use shoal_core::api::{Labels, Network, NodeRole, Task};
use shoal_core::control::{ControlError, ControlRequest, ControlResponse, NodeView, ServiceView};
use tokio::net::UnixListener;

use crate::cli::filters::{self, Filters};
use crate::cli::inspect;
use crate::local_api::{LocalAnswer, LocalError, LocalHandler, LocalRequest, SwarmStatus};

/// The API version shoal speaks: Docker 20.10's, which CLI 28 and docker-py 7 accept.
pub const API_VERSION: &str = "1.41";
/// The oldest API version a client may ask for (Docker's own minimum for 20.10 is lower; 1.24 is
/// the first with the swarm routes as clients use them).
pub const MIN_API_VERSION: &str = "1.24";
/// Largest request body read (a service spec is a few KiB).
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// One answer: status, body and its content type.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
    pub content_type: &'static str,
    /// `Swarm` on `/_ping`, the no-cache headers there.
    pub extra: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: StatusCode, value: &Value) -> Reply {
        Reply {
            status,
            body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
            content_type: "application/json",
            extra: Vec::new(),
        }
    }

    fn ok(value: &Value) -> Reply {
        Reply::json(StatusCode::OK, value)
    }

    fn empty(status: StatusCode) -> Reply {
        Reply { status, body: Bytes::new(), content_type: "text/plain; charset=utf-8", extra: Vec::new() }
    }

    /// Docker's error body: `{"message": "…"}`.
    pub fn error(status: StatusCode, message: impl Into<String>) -> Reply {
        Reply::json(status, &json!({ "message": message.into() }))
    }
}

/// An error answer, from any of the layers below.
struct Failure(Reply);

impl From<decode::DecodeError> for Failure {
    fn from(err: decode::DecodeError) -> Self {
        Failure(Reply::error(StatusCode::BAD_REQUEST, err.0))
    }
}

impl From<LocalError> for Failure {
    fn from(err: LocalError) -> Self {
        Failure(match err {
            LocalError::Control(control) => control_error(control),
            LocalError::BadRequest(message) => Reply::error(StatusCode::BAD_REQUEST, message),
            // Not in a swarm, already in one, …: Docker's daemon-level refusals are 503 (worded for
            // the client that asked: see [`EngineApi::answer_from`]).
            LocalError::Refused(message) => Reply::error(StatusCode::SERVICE_UNAVAILABLE, message),
        })
    }
}

/// Docker's status for each control error (moby `statusCodeFromGRPCError`, `cluster/errors.go`).
fn control_error(err: ControlError) -> Reply {
    let status = match &err {
        ControlError::NotFound(_) => StatusCode::NOT_FOUND,
        ControlError::InvalidArgument(_) | ControlError::FailedPrecondition(_) => StatusCode::BAD_REQUEST,
        ControlError::Conflict(_) => StatusCode::CONFLICT,
        ControlError::NoLeader | ControlError::NotAManager | ControlError::Unavailable(_) | ControlError::Locked => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Reply::error(status, err.to_string())
}

type Answer = Result<Reply, Failure>;

/// The Engine API over a daemon's local handler.
pub struct EngineApi {
    handler: Arc<dyn LocalHandler>,
    hostname: String,
    /// The engine whose image store `/distribution` reads (the Docker executor's); none with the
    /// process executor.
    images: Option<bollard::Docker>,
}

impl EngineApi {
    pub fn new(handler: Arc<dyn LocalHandler>, hostname: String) -> EngineApi {
        EngineApi { handler, hostname, images: None }
    }

    /// Answer `/distribution` from `docker`'s image store.
    pub fn with_images(mut self, docker: bollard::Docker) -> EngineApi {
        self.images = Some(docker);
        self
    }

    async fn call(&self, request: ControlRequest) -> Result<ControlResponse, Failure> {
        match self.handler.handle(LocalRequest::Control { request: Box::new(request) }).await? {
            // Never show registry credentials (the daemon redacts too; this keeps it so here).
            LocalAnswer::Control(response) => Ok(response.redacted()),
            other => Err(unexpected(&other)),
        }
    }

    async fn status(&self) -> Result<SwarmStatus, Failure> {
        match self.handler.handle(LocalRequest::SwarmStatus).await? {
            LocalAnswer::Status(status) => Ok(status),
            other => Err(unexpected(&other)),
        }
    }

    /// Answer one request from a Docker client. `path` is the request path, `query` its query string.
    pub async fn answer(&self, method: &Method, path: &str, query: &str, body: &[u8]) -> Reply {
        self.answer_from(&Client::default(), method, path, query, body).await
    }

    /// Answer one request from `client`. The daemon's refusals name the command of the client that
    /// asked: `"shoal swarm init"` to shoal's CLI, `"docker swarm init"` to Docker's clients.
    pub async fn answer_from(&self, client: &Client, method: &Method, path: &str, query: &str, body: &[u8]) -> Reply {
        let reply = self.answer_inner(client, method, path, query, body).await;
        client.worded(reply)
    }

    async fn answer_inner(&self, client: &Client, method: &Method, path: &str, query: &str, body: &[u8]) -> Reply {
        let (version, rest) = split_version(path);
        if let Some(version) = version {
            if let Some(refusal) = check_version(version) {
                return refusal;
            }
        }
        let query: BTreeMap<String, String> = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .map(|pairs| pairs.into_iter().collect())
            .unwrap_or_default();
        let segments: Vec<&str> = rest.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        match self.route(client, method, &segments, &query, body).await {
            Ok(reply) | Err(Failure(reply)) => reply,
        }
    }

    async fn route(
        &self,
        client: &Client,
        method: &Method,
        path: &[&str],
        query: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Answer {
        let q = |key: &str| query.get(key).map(String::as_str);
        match (method, path) {
            (&Method::GET | &Method::HEAD, ["_ping"]) => self.ping(method == Method::HEAD).await,
            (&Method::GET, ["version"]) => Ok(Reply::ok(&encode::version())),
            (&Method::GET, ["info"]) => self.info().await,
            (&Method::GET, ["swarm"]) => self.swarm().await,
            (&Method::POST, ["swarm", "init"]) => self.swarm_init(body).await,
            (&Method::POST, ["swarm", "join"]) => self.swarm_join(body).await,
            (&Method::POST, ["swarm", "leave"]) => self.swarm_leave(query).await,
            (&Method::POST, ["swarm", "update"]) => self.swarm_update(query, body).await,
            // Autolock (moby `router/swarm`: `GET /swarm/unlockkey`, `POST /swarm/unlock`).
            (&Method::GET, ["swarm", "unlockkey"]) => {
                match self.call(ControlRequest::UnlockKey { rotate: false }).await? {
                    ControlResponse::UnlockKey { key } => Ok(Reply::ok(&serde_json::json!({"UnlockKey": key.0}))),
                    other => Err(unexpected_control(&other)),
                }
            }
            (&Method::POST, ["swarm", "unlock"]) => {
                let body: Value = serde_json::from_slice(body).map_err(|e| bad_request(e.to_string()))?;
                let key = body["UnlockKey"].as_str().unwrap_or_default().to_string();
                self.call(ControlRequest::Unlock { key: shoal_core::control::FileData(key) }).await?;
                Ok(Reply::ok(&Value::Null))
            }
            (&Method::GET, ["nodes"]) => {
                let nodes = self.nodes().await?;
                let filters = filter_set(q("filters"), filters::NODE_KEYS)?;
                let nodes = filters::nodes(nodes, &filters).map_err(bad_request)?;
                Ok(Reply::ok(&Value::Array(nodes.iter().map(inspect::node).collect())))
            }
            (&Method::GET, ["nodes", id]) => {
                match self.call(ControlRequest::NodeInspect { node: id.to_string() }).await? {
                    ControlResponse::Node(view) => Ok(Reply::ok(&inspect::node(&view))),
                    other => Err(unexpected_control(&other)),
                }
            }
            (&Method::POST, ["nodes", id, "update"]) => self.node_update(id, query, body).await,
            (&Method::DELETE, ["nodes", id]) => {
                let force = decode::query_bool(q("force"));
                self.call(ControlRequest::NodeRemove { node: id.to_string(), force }).await?;
                Ok(Reply::empty(StatusCode::OK))
            }
            (&Method::GET, ["services"]) => self.services(q("filters"), decode::query_bool(q("status"))).await,
            (&Method::POST, ["services", "create"]) => {
                let mut spec = decode::service_spec(body)?;
                spec.task.registry_auth = client.registry_auth.clone().map(Box::new);
                match self.call(ControlRequest::ServiceCreate { spec }).await? {
                    ControlResponse::Created { id } => Ok(Reply::json(StatusCode::CREATED, &json!({ "ID": id }))),
                    other => Err(unexpected_control(&other)),
                }
            }
            (&Method::GET, ["services", id]) => {
                let view = self.service(id).await?;
                let mut value = inspect::service(&view);
                // As in the list: `status=true` adds the task counts (Docker's field, which its
                // inspect leaves out).
                if decode::query_bool(q("status")) {
                    value["ServiceStatus"] = service_status(&view);
                }
                Ok(Reply::ok(&value))
            }
            (&Method::POST, ["services", id, "update"]) => self.service_update(client, id, query, body).await,
            // shoal's own route for its test harness, which checks a real cluster against the
            // simulator's model: the objects as the store holds them (task spec versions, endpoints,
            // network leases — nothing Docker's shapes carry). Read-only, managers only.
            (&Method::GET, ["shoal", "state"]) => self.state().await,
            // shoal's own route, for what Docker's API has no object for: the root CA and how far its
            // rotation is (Docker's CLI works that out from every node's TLS info).
            // With it, what each node's TLS holds as it last reported (by node id: `node ls`'s TLS
            // STATUS), which Docker's nodes show as PEMs and shoal tracks as digests.
            (&Method::GET, ["shoal", "swarm", "ca"]) => match self.call(ControlRequest::CaInspect).await? {
                ControlResponse::Ca(view) => {
                    let mut value = serde_json::to_value(view).unwrap_or_default();
                    let nodes: BTreeMap<String, shoal_core::api::NodeTlsInfo> = self
                        .nodes()
                        .await?
                        .into_iter()
                        .filter_map(|v| v.node.description.tls_info.map(|tls| (v.node.id, tls)))
                        .collect();
                    value["node_tls"] = json!(nodes);
                    Ok(Reply::ok(&value))
                }
                other => Err(unexpected_control(&other)),
            },
            (&Method::DELETE, ["services", id]) => {
                self.call(ControlRequest::ServiceRemove { service: id.to_string() }).await?;
                Ok(Reply::empty(StatusCode::OK))
            }
            (&Method::GET, ["tasks"]) => self.tasks(q("filters")).await,
            (&Method::GET, ["tasks", id]) => {
                let tasks = self.all_tasks().await?;
                let found = tasks.iter().find(|t| t.id == *id).or_else(|| {
                    let mut matches = tasks.iter().filter(|t| t.id.starts_with(id));
                    matches.next().filter(|_| matches.next().is_none())
                });
                match found {
                    Some(task) => Ok(Reply::ok(&encode::task(task, &self.networks_by_id().await?))),
                    None => Err(Failure(Reply::error(StatusCode::NOT_FOUND, format!("task {id} not found")))),
                }
            }
            (&Method::GET, ["networks"]) => {
                let networks = match self.call(ControlRequest::NetworkList).await? {
                    ControlResponse::Networks(networks) => networks,
                    other => return Err(unexpected_control(&other)),
                };
                let filters = filter_set(q("filters"), filters::NETWORK_KEYS)?;
                let networks = filters::networks(networks, &filters).map_err(bad_request)?;
                Ok(Reply::ok(&Value::Array(networks.iter().map(inspect::network).collect())))
            }
            (&Method::POST, ["networks", "create"]) => self.network_create(body).await,
            (&Method::GET, ["networks", id]) => {
                match self.call(ControlRequest::NetworkInspect { network: id.to_string() }).await? {
                    ControlResponse::Network(network) => Ok(Reply::ok(&inspect::network(&network))),
                    other => Err(unexpected_control(&other)),
                }
            }
            (&Method::DELETE, ["networks", id]) => {
                self.call(ControlRequest::NetworkRemove { network: id.to_string() }).await?;
                Ok(Reply::empty(StatusCode::NO_CONTENT))
            }
            // Secrets and configs (`files.rs`): list (name/id/label filters), inspect, create, update
            // (labels only, as Swarm), remove.
            (&Method::GET, [kind @ ("secrets" | "configs")]) => self.file_objects(kind, q("filters")).await,
            (&Method::GET, [kind @ ("secrets" | "configs"), id]) => self.file_object(kind, id).await,
            (&Method::POST, [kind @ ("secrets" | "configs"), "create"]) => self.create_file_object(kind, body).await,
            (&Method::DELETE, [kind @ ("secrets" | "configs"), id]) => self.remove_file_object(kind, id).await,
            (&Method::POST, [kind @ ("secrets" | "configs"), id, "update"]) => {
                let version = required_version(query, &kind[..kind.len() - 1])?;
                self.update_file_object(kind, id, version, body).await
            }
            (&Method::GET, ["distribution", name @ .., "json"]) if !name.is_empty() => {
                let name = name.join("/");
                match &self.images {
                    Some(docker) => distribution::inspect(docker, &name).await.map(|v| Reply::ok(&v)).map_err(Failure),
                    None => Err(Failure(Reply::error(
                        StatusCode::NOT_IMPLEMENTED,
                        "/distribution is not served by this shoal daemon: it runs the process executor, which has \
                         no image store (and shoal asks no registry)",
                    ))),
                }
            }
            // Terraform and friends tolerate exactly this when a container is gone.
            (_, ["containers", id, ..]) if *id != "json" && *id != "create" && *id != "prune" => {
                Err(Failure(Reply::error(StatusCode::NOT_FOUND, format!("No such container: {id}"))))
            }
            // A route of the swarm API with a method or sub-path it does not have: Docker's 404.
            (_, ["_ping" | "version" | "info" | "swarm" | "nodes" | "services" | "tasks" | "networks", ..]) => {
                Err(Failure(Reply::error(StatusCode::NOT_FOUND, "page not found")))
            }
            (_, [first, ..]) => Err(Failure(not_served(first))),
            (_, []) => Err(Failure(Reply::error(StatusCode::NOT_FOUND, "page not found"))),
        }
    }

    async fn ping(&self, head: bool) -> Answer {
        let status = self.status().await?;
        let swarm = match status.state.as_str() {
            "active" => match self.call(ControlRequest::Info).await {
                Ok(ControlResponse::Info(info)) if info.is_manager => "active/manager",
                _ => "active/worker",
            },
            "inactive" | "pending" | "error" | "locked" => status.state.as_str(),
            _ => "inactive",
        }
        .to_string();
        let mut reply = if head {
            Reply::empty(StatusCode::OK)
        } else {
            Reply { body: Bytes::from_static(b"OK"), ..Reply::empty(StatusCode::OK) }
        };
        reply.extra = vec![
            ("Cache-Control", "no-cache, no-store, must-revalidate".into()),
            ("Pragma", "no-cache".into()),
            ("Swarm", swarm),
        ];
        Ok(reply)
    }

    async fn info(&self) -> Answer {
        let status = self.status().await?;
        let cluster = if status.state == "active" {
            match self.call(ControlRequest::Info).await {
                Ok(ControlResponse::Info(info)) => Some(*info),
                // A worker: no cluster state to show, as Docker's worker shows none.
                Ok(_) | Err(_) => None,
            }
        } else {
            None
        };
        let node = match &cluster {
            Some(info) => match self.call(ControlRequest::NodeInspect { node: info.node_id.clone() }).await {
                Ok(ControlResponse::Node(view)) => Some(*view),
                _ => None,
            },
            None => None,
        };
        Ok(Reply::ok(&encode::info(&self.hostname, &status, cluster.as_ref(), node.as_ref())))
    }

    async fn swarm(&self) -> Answer {
        let info = match self.call(ControlRequest::Info).await? {
            ControlResponse::Info(info) => info,
            other => return Err(unexpected_control(&other)),
        };
        if !info.is_manager {
            return Err(Failure(control_error(ControlError::NotAManager)));
        }
        let mut tokens = Vec::new();
        for role in [NodeRole::Worker, NodeRole::Manager] {
            match self.call(ControlRequest::JoinToken { role, rotate: false }).await? {
                ControlResponse::JoinToken { token, .. } => tokens.push(token),
                other => return Err(unexpected_control(&other)),
            }
        }
        let root_ca_pem = match self.call(ControlRequest::CaInspect).await? {
            ControlResponse::Ca(ca) => ca.root_ca_pem,
            other => return Err(unexpected_control(&other)),
        };
        Ok(Reply::ok(&encode::swarm(&info, &tokens[0], &tokens[1], &root_ca_pem)))
    }

    async fn nodes(&self) -> Result<Vec<NodeView>, Failure> {
        match self.call(ControlRequest::NodeList).await? {
            ControlResponse::Nodes(nodes) => Ok(nodes),
            other => Err(unexpected_control(&other)),
        }
    }

    /// `GET /shoal/state`: nodes, services (with their task counts), tasks and networks in shoal's
    /// own JSON.
    async fn state(&self) -> Answer {
        let nodes = self.nodes().await?;
        let services = self.service_views().await?;
        let tasks = self.all_tasks().await?;
        let networks = match self.call(ControlRequest::NetworkList).await? {
            ControlResponse::Networks(networks) => networks,
            other => return Err(unexpected_control(&other)),
        };
        Ok(Reply::ok(&json!({"nodes": nodes, "services": services, "tasks": tasks, "networks": networks})))
    }

    /// `docker node update|promote|demote`: the whole spec, based on `version`.
    async fn node_update(&self, id: &str, query: &BTreeMap<String, String>, body: &[u8]) -> Answer {
        let version = required_version(query, "node")?;
        let update = decode::node_spec(body)?;
        let current = match self.call(ControlRequest::NodeInspect { node: id.to_string() }).await? {
            ControlResponse::Node(view) => view.node,
            other => return Err(unexpected_control(&other)),
        };
        if current.meta.version != version {
            return Err(out_of_sequence("node", current.hostname(), version));
        }
        let (label_add, label_rm): (Labels, Vec<String>) = match &update.labels {
            Some(labels) => (
                labels
                    .iter()
                    .filter(|(k, v)| current.spec.labels.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                current.spec.labels.keys().filter(|k| !labels.contains_key(*k)).cloned().collect(),
            ),
            None => (Default::default(), Vec::new()),
        };
        let availability = update.availability.filter(|a| *a != current.spec.availability);
        let changes_spec = availability.is_some() || !label_add.is_empty() || !label_rm.is_empty();
        if changes_spec {
            let request = ControlRequest::NodeUpdate { node: current.id.clone(), availability, label_add, label_rm };
            self.call(request).await?;
        }
        match update.role {
            Some(role) if role != current.spec.desired_role => {
                let node = current.id.clone();
                let request = match role {
                    NodeRole::Manager => ControlRequest::NodePromote { node },
                    NodeRole::Worker => ControlRequest::NodeDemote { node },
                };
                self.call(request).await?;
            }
            _ => {}
        }
        Ok(Reply::empty(StatusCode::OK))
    }

    async fn service(&self, id: &str) -> Result<ServiceView, Failure> {
        match self.call(ControlRequest::ServiceInspect { service: id.to_string() }).await? {
            ControlResponse::Service(view) => Ok(*view),
            other => Err(unexpected_control(&other)),
        }
    }

    async fn service_views(&self) -> Result<Vec<ServiceView>, Failure> {
        match self.call(ControlRequest::ServiceList).await? {
            ControlResponse::Services(views) => Ok(views),
            other => Err(unexpected_control(&other)),
        }
    }

    async fn services(&self, filters: Option<&str>, status: bool) -> Answer {
        let filters = filter_set(filters, filters::SERVICE_KEYS)?;
        let views = filters::services(self.service_views().await?, &filters).map_err(bad_request)?;
        let list = views
            .iter()
            .map(|view| {
                let mut value = inspect::service(view);
                if status {
                    value["ServiceStatus"] = service_status(view);
                }
                value
            })
            .collect();
        Ok(Reply::ok(&Value::Array(list)))
    }

    async fn service_update(&self, client: &Client, id: &str, query: &BTreeMap<String, String>, body: &[u8]) -> Answer {
        let version = required_version(query, "service")?;
        let current = self.service(id).await?;
        if query.get("rollback").map(String::as_str) == Some("previous") {
            if current.service.meta.version != version {
                return Err(out_of_sequence("service", &current.service.spec.name, version));
            }
            self.call(ControlRequest::ServiceRollback { service: current.service.id.clone() }).await?;
            return Ok(Reply::ok(&json!({})));
        }
        let mut spec = decode::service_spec(body)?;
        // What Docker's spec has no word for stays as it is.
        spec.rebalance = current.service.spec.rebalance;
        // `X-Registry-Auth` (`--with-registry-auth`): new credentials; without it the service keeps its own.
        spec.task.registry_auth = client.registry_auth.clone().map(Box::new);
        self.call(ControlRequest::ServiceUpdate { service: current.service.id.clone(), version, spec }).await?;
        Ok(Reply::ok(&json!({})))
    }

    /// The swarm's networks by id, for tasks' `NetworksAttachments`.
    async fn networks_by_id(&self) -> Result<BTreeMap<String, Network>, Failure> {
        match self.call(ControlRequest::NetworkList).await? {
            ControlResponse::Networks(networks) => Ok(networks.into_iter().map(|n| (n.id.clone(), n)).collect()),
            other => Err(unexpected_control(&other)),
        }
    }

    async fn all_tasks(&self) -> Result<Vec<Task>, Failure> {
        match self.call(ControlRequest::TaskList { service: None, node: None }).await? {
            ControlResponse::Tasks(tasks) => Ok(tasks),
            other => Err(unexpected_control(&other)),
        }
    }

    async fn tasks(&self, filters: Option<&str>) -> Answer {
        let pairs = decode::filters(filters)?;
        let grouped = decode::group(&pairs);
        for key in grouped.keys() {
            if !TASK_FILTER_KEYS.contains(&key.as_str()) {
                return Err(bad_request(format!("invalid filter '{key}'")));
            }
        }
        let mut tasks = self.all_tasks().await?;
        if let Some(services) = grouped.get("service") {
            let views = self.service_views().await?;
            // By service id, id prefix or name, as swarmkit's task filter resolves them.
            let ids: Vec<&str> = views
                .iter()
                .filter(|v| services.iter().any(|s| v.service.id.starts_with(s.as_str()) || v.service.spec.name == *s))
                .map(|v| v.service.id.as_str())
                .collect();
            tasks.retain(|t| ids.contains(&t.service_id.as_str()));
        }
        if let Some(values) = grouped.get("_up-to-date") {
            if values.iter().any(|v| decode::query_bool(Some(v))) {
                let versions: BTreeMap<String, u64> = self
                    .service_views()
                    .await?
                    .into_iter()
                    .map(|v| (v.service.id.clone(), v.service.spec_version))
                    .collect();
                tasks.retain(|t| versions.get(&t.service_id) == Some(&t.spec_version));
            }
        }
        if let Some(labels) = grouped.get("label") {
            let views = self.service_views().await?;
            let labelled: Vec<&str> = views
                .iter()
                .filter(|v| {
                    labels.iter().any(|l| match l.split_once('=') {
                        Some((k, val)) => v.service.spec.labels.get(k).is_some_and(|x| x == val),
                        None => v.service.spec.labels.contains_key(l),
                    })
                })
                .map(|v| v.service.id.as_str())
                .collect();
            tasks.retain(|t| labelled.contains(&t.service_id.as_str()));
        }
        // The rest are the CLI's own `service ps` filters.
        let rest: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| filters::TASK_KEYS.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !rest.is_empty() {
            let hostnames: BTreeMap<String, String> = if grouped.contains_key("node") {
                self.nodes().await?.into_iter().map(|v| (v.node.id.clone(), v.node.hostname().to_string())).collect()
            } else {
                BTreeMap::new()
            };
            let filters = Filters::parse(&rest, filters::TASK_KEYS).map_err(bad_request)?;
            tasks = filters::tasks(tasks, &filters, &hostnames).map_err(bad_request)?;
        }
        let networks = self.networks_by_id().await?;
        Ok(Reply::ok(&Value::Array(tasks.iter().map(|t| encode::task(t, &networks)).collect())))
    }

    async fn network_create(&self, body: &[u8]) -> Answer {
        let request = decode::network_create(body)?;
        if !request.driver.is_empty() && request.driver != "overlay" {
            return Err(bad_request(format!(
                "shoal serves swarm-scoped overlay networks only, not driver {:?}: use `-d overlay`",
                request.driver
            )));
        }
        if request.driver.is_empty() {
            return Err(bad_request(
                "shoal serves swarm-scoped overlay networks only: use `docker network create -d overlay`",
            ));
        }
        let created = self
            .call(ControlRequest::NetworkCreate {
                name: request.name,
                driver: request.driver,
                attachable: request.attachable,
                labels: request.labels,
                subnet: request.subnet,
                ingress: request.ingress,
            })
            .await?;
        match created {
            ControlResponse::Created { id } => Ok(Reply::json(StatusCode::CREATED, &json!({"Id": id, "Warning": ""}))),
            other => Err(unexpected_control(&other)),
        }
    }
}

/// `ServiceStatus`: the task counts `service ls` shows.
fn service_status(view: &ServiceView) -> Value {
    json!({"RunningTasks": view.running, "DesiredTasks": view.desired, "CompletedTasks": view.completed})
}

/// Who sent a request, as far as the answer depends on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    /// shoal's own CLI (its `User-Agent` is `shoal/…`).
    pub shoal: bool,
    /// The credentials of `X-Registry-Auth` (Docker's base64url JSON), for service create/update.
    pub registry_auth: Option<shoal_core::api::RegistryAuth>,
}

impl Client {
    /// `reply` in this client's words: the daemon's refusals (503) name `docker`'s commands to
    /// Docker's clients where they name `shoal`'s.
    pub fn worded(&self, mut reply: Reply) -> Reply {
        if !self.shoal && reply.status == StatusCode::SERVICE_UNAVAILABLE {
            let text = String::from_utf8_lossy(&reply.body).replace("\\\"shoal ", "\\\"docker ");
            reply.body = Bytes::from(text.into_bytes());
        }
        reply
    }

    /// From a request's headers; `X-Registry-Auth` that cannot be read is no credentials.
    pub fn from_headers(headers: &hyper::HeaderMap) -> Client {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let shoal = text("user-agent").starts_with("shoal/");
        let auth = text("x-registry-auth");
        Client { shoal, registry_auth: decode::registry_auth(auth.trim()) }
    }
}

/// Task filters the engine accepts (swarmkit's, and the CLI's `_up-to-date`).
const TASK_FILTER_KEYS: &[&str] = &["id", "name", "node", "desired-state", "service", "label", "_up-to-date"];

/// `?version=N` of an update: required, as Docker's engine requires it.
fn required_version(query: &BTreeMap<String, String>, kind: &str) -> Result<u64, Failure> {
    let version = query.get("version").ok_or_else(|| bad_request(format!("version is required to update a {kind}")))?;
    version.parse().map_err(|_| bad_request(format!("invalid {kind} version {version:?}: not a number")))
}

/// Swarm's refusal of an update based on an older version (the control API's words).
fn out_of_sequence(kind: &str, name: &str, version: u64) -> Failure {
    Failure(control_error(ControlError::Conflict(format!(
        "update out of sequence: {kind} {name} changed since version {version}; inspect it and try again"
    ))))
}

fn bad_request(message: impl Into<String>) -> Failure {
    Failure(Reply::error(StatusCode::BAD_REQUEST, message))
}

fn unexpected(answer: &LocalAnswer) -> Failure {
    Failure(Reply::error(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected answer from the daemon: {answer:?}")))
}

fn unexpected_control(answer: &ControlResponse) -> Failure {
    Failure(Reply::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("unexpected answer from the control API: {answer:?}"),
    ))
}

/// `filters` as the CLI's [`Filters`], refusing keys not in `accepted` with Docker's words.
fn filter_set(text: Option<&str>, accepted: &[&str]) -> Result<Filters, Failure> {
    let pairs: Vec<String> = decode::filters(text)?.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    Filters::parse(&pairs, accepted).map_err(bad_request)
}

/// Engine routes shoal does not serve: 501, saying why and where to look instead.
fn not_served(first: &str) -> Reply {
    let why = match first {
        "containers" | "exec" => {
            "shoal runs containers through each node's own engine; ask that engine (its own DOCKER_HOST), \
             or use `docker service ps` here"
        }
        "images" | "build" | "distribution" | "commit" => {
            "shoal does not manage images; each node's engine holds them (shoal pulls what a task needs)"
        }
        "volumes" => "shoal does not manage volumes yet",
        "events" => "shoal does not stream engine events; its daemon writes <data-dir>/events.jsonl",
        "plugins" | "session" | "system" | "grpc" | "auth" => "this engine feature has no counterpart in shoal",
        _ => "it is not part of the swarm API shoal serves",
    };
    Reply::error(StatusCode::NOT_IMPLEMENTED, format!("/{first} is not served by shoal: {why}"))
}

/// `/v1.41/services` → (`Some("1.41")`, `/services`); unversioned paths keep their whole path.
pub fn split_version(path: &str) -> (Option<&str>, &str) {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let version = &rest[..end];
        if parse_version(version).is_some() {
            return (Some(version), &rest[end..]);
        }
    }
    (None, path)
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Docker's refusal of a client version outside [`MIN_API_VERSION`, `API_VERSION`].
pub fn check_version(version: &str) -> Option<Reply> {
    let asked = parse_version(version)?;
    let newest = parse_version(API_VERSION)?;
    let oldest = parse_version(MIN_API_VERSION)?;
    if asked > newest {
        return Some(Reply::error(
            StatusCode::BAD_REQUEST,
            format!("client version {version} is too new. Maximum supported API version is {API_VERSION}"),
        ));
    }
    if asked < oldest {
        return Some(Reply::error(
            StatusCode::BAD_REQUEST,
            format!(
                "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, \
                 please upgrade your client to a newer version"
            ),
        ));
    }
    None
}

/// A response body: a whole answer, or a logs stream fed by the task that follows the logs.
pub enum ApiBody {
    Full(Option<Bytes>),
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        use std::task::Poll;
        match self.get_mut() {
            ApiBody::Full(bytes) => {
                Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(|b| Ok(hyper::body::Frame::data(b))))
            }
            ApiBody::Stream(receiver) => {
                receiver.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ApiBody::Full(bytes) if bytes.as_ref().is_none_or(|b| b.is_empty()))
    }

    /// A whole answer's exact size, so it goes out with `Content-Length` as the engine's JSON
    /// answers do (a logs stream is chunked).
    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ApiBody::Full(bytes) => hyper::body::SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            ApiBody::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// `GET /services/{id}/logs` or `/tasks/{id}/logs` (after the version prefix): the target.
fn logs_target<'a>(method: &Method, path: &'a str) -> Option<&'a str> {
    if method != Method::GET {
        return None;
    }
    let (_, rest) = split_version(path);
    let segments: Vec<&str> = rest.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["services" | "tasks", id, "logs"] if !id.is_empty() => Some(id),
        _ => None,
    }
}

/// Answer one HTTP request.
async fn serve(api: Arc<EngineApi>, request: Request<Incoming>) -> Response<ApiBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let client = Client::from_headers(request.headers());
    let mut content_type = None;
    let reply = match logs_target(&method, &path) {
        Some(target) => {
            let version_refused = split_version(&path).0.and_then(check_version);
            let pairs: BTreeMap<String, String> = serde_urlencoded::from_str::<Vec<(String, String)>>(&query)
                .map(|pairs| pairs.into_iter().collect())
                .unwrap_or_default();
            match version_refused {
                Some(refusal) => Err(refusal),
                None => api.clone().logs_stream(&client, target.to_string(), pairs).await.map(ApiBody::Stream),
            }
        }
        None => Err(match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
            Ok(body) => api.answer_from(&client, &method, &path, &query, &body.to_bytes()).await,
            Err(err) => Reply::error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {err}")),
        }),
    };
    let (status, extra, body) = match reply {
        // The engine's type for API 1.41 (1.42 and later say `multiplexed-stream`; the bytes are the same).
        Ok(stream) => {
            content_type = Some("application/vnd.docker.raw-stream");
            (StatusCode::OK, Vec::new(), stream)
        }
        Err(reply) => {
            content_type = content_type.or(Some(reply.content_type));
            let body = if method == Method::HEAD { Bytes::new() } else { reply.body };
            (reply.status, reply.extra, ApiBody::Full(Some(body)))
        }
    };
    let mut response = Response::builder()
        .status(status)
        .header("Api-Version", API_VERSION)
        .header("Ostype", "linux")
        .header("Docker-Experimental", "false")
        .header("Server", encode::server_header())
        .header("Content-Type", content_type.unwrap_or("application/json"));
    for (name, value) in &extra {
        response = response.header(*name, value.as_str());
    }
    response.body(body).unwrap_or_else(|_| Response::new(ApiBody::Full(None)))
}

/// Bind the API's unix socket (replacing a stale one), readable and writable by its owner and group
/// (0660), as Docker's socket is.
pub async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    // A socket file left by a daemon that died: nobody answers on it, so it is safe to replace.
    if tokio::fs::symlink_metadata(path).await.is_ok() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another shoal daemon is serving {}", path.display()),
            ));
        }
        tokio::fs::remove_file(path).await?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serve one connection (HTTP/1.1 with keep-alive) until the client hangs up.
pub async fn serve_connection<S>(stream: S, api: Arc<EngineApi>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let api = api.clone();
        async move { Ok::<_, Infallible>(serve(api, request).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
}

/// Accept unix connections forever, one task per connection.
pub async fn serve_unix(listener: UnixListener, api: Arc<EngineApi>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, api.clone()));
            }
            // Out of file descriptors and the like: back off rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Accept TCP connections forever (loopback only: see `shoal daemon --tcp`), one task per connection.
pub async fn serve_tcp(listener: tokio::net::TcpListener, api: Arc<EngineApi>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, api.clone()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Accept TCP connections forever, each served only after a TLS handshake in which the client
/// presented a certificate the acceptor's CA signed (`--tlsverify`); a failed handshake is dropped.
pub async fn serve_tls(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, api: Arc<EngineApi>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let (acceptor, api) = (acceptor.clone(), api.clone());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
                    if let Ok(Ok(stream)) = handshake {
                        serve_connection(stream, api).await;
                    }
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests;
