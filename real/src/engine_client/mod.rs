//! The client side of the Docker Engine API the daemon serves ([`crate::engine_api`]): what the
//! `shoal` CLI and the test harness use to reach a daemon. It speaks HTTP/1.1 over the daemon's unix
//! socket (or TCP) to the same routes the `docker` CLI and docker-py use, and reads the answers back
//! into shoal's types ([`read`]) so the CLI's renderers print what they always printed.
//!
//! [`EngineClient::control`] carries a control-API request over those routes — `NodeUpdate` as
//! `GET /nodes/{id}` then `POST /nodes/{id}/update?version=`, `ServiceScale` as a service update with
//! the new replica count, `JoinToken { rotate }` as `/swarm/update?rotateWorkerToken=true`, … — so
//! callers that build control requests (stack deploy's steps, the harness's scenarios) keep doing so.
//! An API error (`{"message": …}` with a status) comes back as [`ApiError::Daemon`] with Docker's
//! message, which the CLI prints as `Error response from daemon: <message>`.

pub mod read;

use std::collections::BTreeMap;
use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use shoal_core::api::{Labels, NodeRole, RegistryAuth, SecretSpec, ServiceMode, Task};
use shoal_core::control::{CaView, ConfigView, ControlRequest, ControlResponse, FileData, NodeView, ServiceView};
use tokio::net::{TcpStream, UnixStream};

use crate::cli::inspect;
use crate::engine_api::API_VERSION;
use crate::local_api::{InitRequest, JoinRequest, SwarmStatus};

/// Where a client finds its daemon (`-H`, `SHOAL_HOST`, `DOCKER_HOST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl Endpoint {
    /// `unix:///path` or `tcp://host:port`; a bare path is taken as a unix socket.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("invalid host {text:?}: the unix socket path is empty"));
            }
            Ok(Endpoint::Unix(PathBuf::from(path)))
        } else if let Some(addr) = text.strip_prefix("tcp://") {
            if !addr.contains(':') {
                return Err(format!("invalid host {text:?}: use tcp://host:port"));
            }
            Ok(Endpoint::Tcp(addr.trim_end_matches('/').to_string()))
        } else if text.starts_with('/') {
            Ok(Endpoint::Unix(PathBuf::from(text)))
        } else {
            Err(format!("invalid host {text:?}: use unix:///path/to/shoal.sock or tcp://127.0.0.1:PORT"))
        }
    }

    /// The daemon's default socket: `/var/run/shoal/shoal.sock` for root, else under `$XDG_RUNTIME_DIR`.
    pub fn default_socket() -> PathBuf {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        match std::env::var_os("XDG_RUNTIME_DIR") {
            Some(dir) if !root && !dir.is_empty() => PathBuf::from(dir).join("shoal").join("shoal.sock"),
            _ => PathBuf::from("/var/run/shoal/shoal.sock"),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// Why a call got no answer, or the daemon's refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("Cannot connect to the shoal daemon at {endpoint}. Is the shoal daemon running? ({reason})")]
    Connect { endpoint: String, reason: String },
    #[error("lost the connection to the shoal daemon at {endpoint}: {reason}")]
    Io { endpoint: String, reason: String },
    #[error("the shoal daemon at {endpoint} sent a reply this client cannot read: {reason}")]
    BadReply { endpoint: String, reason: String },
    /// The daemon answered with an error status and Docker's `{"message": …}`.
    #[error("{message}")]
    Daemon { status: u16, message: String },
}

impl ApiError {
    /// The daemon's message, when it answered with one.
    pub fn daemon_message(&self) -> Option<&str> {
        match self {
            ApiError::Daemon { message, .. } => Some(message),
            _ => None,
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The `User-Agent` the daemon sees: it words its refusals for shoal's commands (`"shoal swarm init"`)
/// rather than Docker's.
pub const USER_AGENT: &str = concat!("shoal/", env!("CARGO_PKG_VERSION"));

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct EngineClient {
    pub endpoint: Endpoint,
    /// `--tlsverify` on a `tcp://` endpoint: the client certificate and the CA the daemon must chain to.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// `?a=b&c=d`, query-escaped.
fn query(pairs: &[(&str, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    format!("?{}", serde_urlencoded::to_string(pairs).unwrap_or_default())
}

/// A path segment, escaped (names and ids are plain, but a user may type anything).
fn seg(text: &str) -> String {
    serde_urlencoded::to_string([("", text)]).unwrap_or_default().trim_start_matches('=').replace('+', "%20")
}

/// Docker's `filters` query value (the map form).
fn filters(pairs: &[(&str, &str)]) -> String {
    let mut map: BTreeMap<&str, BTreeMap<&str, bool>> = BTreeMap::new();
    for (k, v) in pairs {
        map.entry(k).or_default().insert(v, true);
    }
    serde_json::to_string(&map).unwrap_or_default()
}

impl EngineClient {
    pub fn new(endpoint: Endpoint) -> EngineClient {
        EngineClient { endpoint, tls: None }
    }

    /// Speak TLS on a `tcp://` endpoint with this configuration (see [`crate::api_tls`]).
    pub fn with_tls(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> EngineClient {
        self.tls = Some(config);
        self
    }

    /// Send one request; the response's head and body as they come.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
    ) -> ApiResult<Response<Incoming>> {
        let name = self.endpoint.to_string();
        let connect_err = |err: std::io::Error| ApiError::Connect { endpoint: name.clone(), reason: err.to_string() };
        let io_err = |err: hyper::Error| ApiError::Io { endpoint: name.clone(), reason: err.to_string() };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("/v{API_VERSION}{path}"))
            .header("Host", "shoal")
            .header("User-Agent", USER_AGENT);
        if body.is_some() {
            request = request.header("Content-Type", "application/json");
        }
        for (key, value) in headers {
            request = request.header(*key, value.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ApiError::Io { endpoint: name.clone(), reason: e.to_string() })?;
        macro_rules! over {
            ($stream:expr) => {{
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new($stream)).await.map_err(io_err)?;
                tokio::spawn(connection);
                sender.send_request(request).await.map_err(io_err)
            }};
        }
        match (&self.endpoint, &self.tls) {
            (Endpoint::Unix(path), _) => over!(UnixStream::connect(path).await.map_err(connect_err)?),
            (Endpoint::Tcp(addr), None) => over!(TcpStream::connect(addr).await.map_err(connect_err)?),
            (Endpoint::Tcp(addr), Some(config)) => {
                let tcp = TcpStream::connect(addr).await.map_err(connect_err)?;
                let name = crate::api_tls::server_name(addr)
                    .map_err(|e| ApiError::Connect { endpoint: name.clone(), reason: e.to_string() })?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ApiError::Connect { endpoint: self.endpoint.to_string(), reason: e.to_string() })?;
                over!(stream)
            }
        }
    }

    /// One whole answer: its JSON body on success (`null` when empty), else the daemon's error.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> ApiResult<Value> {
        self.call_with(method, path, body, &[]).await
    }

    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> ApiResult<Value> {
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let response = self.send(method, path, body, headers).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ApiError::Io { endpoint: self.endpoint.to_string(), reason: e.to_string() })?
            .to_bytes();
        let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        if status.is_success() {
            return Ok(value);
        }
        let message = match &value {
            Value::Object(o) => o.get("message").and_then(Value::as_str).unwrap_or_default().to_string(),
            Value::String(s) => s.trim().to_string(),
            _ => String::new(),
        };
        let message = if message.is_empty() { status.to_string() } else { message };
        Err(ApiError::Daemon { status: status.as_u16(), message })
    }

    async fn get(&self, path: &str) -> ApiResult<Value> {
        self.call(Method::GET, path, None).await
    }

    fn bad(&self, reason: impl std::fmt::Display) -> ApiError {
        ApiError::BadReply { endpoint: self.endpoint.to_string(), reason: reason.to_string() }
    }

    // ---- Typed reads -------------------------------------------------------------------------

    /// `GET /info`: the node's standing and, on a manager, the cluster.
    pub async fn info(&self) -> ApiResult<(SwarmStatus, Option<shoal_core::control::ClusterInfo>)> {
        let info = self.get("/info").await?;
        Ok((read::swarm_status(&info), read::cluster_info(&info)))
    }

    pub async fn status(&self) -> ApiResult<SwarmStatus> {
        Ok(self.info().await?.0)
    }

    pub async fn services(&self) -> ApiResult<Vec<ServiceView>> {
        let list = self.get("/services?status=true").await?;
        list.as_array().into_iter().flatten().map(|v| read::service_view(v).map_err(|e| self.bad(e))).collect()
    }

    pub async fn service(&self, name: &str) -> ApiResult<ServiceView> {
        let value = self.get(&format!("/services/{}?status=true", seg(name))).await?;
        read::service_view(&value).map_err(|e| self.bad(e))
    }

    /// Tasks, optionally of one service and/or node (ids, prefixes or names).
    pub async fn tasks(&self, service: Option<&str>, node: Option<&str>) -> ApiResult<Vec<Task>> {
        let mut pairs = Vec::new();
        if let Some(service) = service {
            pairs.push(("service", service));
        }
        if let Some(node) = node {
            pairs.push(("node", node));
        }
        let path = if pairs.is_empty() {
            "/tasks".to_string()
        } else {
            format!("/tasks{}", query(&[("filters", filters(&pairs))]))
        };
        let list = self.get(&path).await?;
        let names: BTreeMap<String, String> = match list.as_array() {
            Some(tasks) if !tasks.is_empty() => {
                self.services().await?.into_iter().map(|v| (v.service.id.clone(), v.service.spec.name)).collect()
            }
            _ => BTreeMap::new(),
        };
        list.as_array().into_iter().flatten().map(|v| read::task(v, &names).map_err(|e| self.bad(e))).collect()
    }

    pub async fn nodes(&self) -> ApiResult<Vec<NodeView>> {
        let list = self.get("/nodes").await?;
        list.as_array().into_iter().flatten().map(|v| read::node_view(v).map_err(|e| self.bad(e))).collect()
    }

    pub async fn node(&self, name: &str) -> ApiResult<NodeView> {
        read::node_view(&self.get(&format!("/nodes/{}", seg(name))).await?).map_err(|e| self.bad(e))
    }

    pub async fn networks(&self) -> ApiResult<Vec<shoal_core::api::Network>> {
        let list = self.get("/networks").await?;
        Ok(list.as_array().into_iter().flatten().map(read::network).collect())
    }

    /// `GET /swarm`: the cluster as Docker shows it (with its join tokens).
    pub async fn swarm(&self) -> ApiResult<Value> {
        self.get("/swarm").await
    }

    /// `POST /swarm/init`: the new node's id.
    pub async fn swarm_init(&self, request: &InitRequest) -> ApiResult<String> {
        let o = &request.overrides;
        let ns = |ms: Option<u64>| ms.map_or(Value::Null, |ms| json!(ms.saturating_mul(1_000_000)));
        let body = json!({
            "ListenAddr": request.listen_addr,
            "AdvertiseAddr": request.advertise_addr,
            "DataPathAddr": request.data_path_addr,
            "DataPathPort": request.data_path_port.unwrap_or(0),
            "ForceNewCluster": request.force_new_cluster,
            "Availability": crate::cli::render::availability_word(request.availability),
            "AutoLockManagers": o.autolock.unwrap_or(false),
            "Spec": {
                "Orchestration": {"TaskHistoryRetentionLimit": o.task_history_retention_limit},
                "Raft": {"SnapshotInterval": o.snapshot_interval},
                "Dispatcher": {"HeartbeatPeriod": ns(o.heartbeat_period_ms)},
                "CAConfig": {"NodeCertExpiry": ns(o.cert_expiry_ms)},
            },
        });
        let answer = self.call(Method::POST, "/swarm/init", Some(&body)).await?;
        answer.as_str().map(str::to_string).ok_or_else(|| self.bad(format!("expected the node id, got {answer}")))
    }

    /// `POST /swarm/join`.
    pub async fn swarm_join(&self, request: &JoinRequest) -> ApiResult<()> {
        let body = json!({
            "ListenAddr": request.listen_addr,
            "AdvertiseAddr": request.advertise_addr,
            "DataPathAddr": request.data_path_addr,
            "DataPathPort": request.data_path_port.unwrap_or(0),
            "RemoteAddrs": [request.remote_addr],
            "JoinToken": request.token,
            "Availability": crate::cli::render::availability_word(request.availability),
        });
        self.call(Method::POST, "/swarm/join", Some(&body)).await.map(drop)
    }

    /// `POST /swarm/leave?force=`.
    pub async fn swarm_leave(&self, force: bool) -> ApiResult<()> {
        self.call(Method::POST, &format!("/swarm/leave{}", query(&[("force", force.to_string())])), None)
            .await
            .map(drop)
    }

    /// `POST /swarm/update` based on the version read now: `change` edits the spec `/swarm` shows,
    /// `flags` are the query's rotations.
    async fn swarm_update(&self, change: impl FnOnce(&mut Value), flags: &[(&str, String)]) -> ApiResult<Value> {
        let mut swarm = self.swarm().await?;
        let version = swarm["Version"]["Index"].as_u64().unwrap_or(0);
        let mut pairs = vec![("version", version.to_string())];
        pairs.extend(flags.iter().cloned());
        change(&mut swarm["Spec"]);
        self.call(Method::POST, &format!("/swarm/update{}", query(&pairs)), Some(&swarm["Spec"])).await?;
        Ok(swarm)
    }

    /// The unlock key (empty while autolock is off).
    async fn unlock_key(&self) -> ApiResult<String> {
        let answer = self.get("/swarm/unlockkey").await?;
        Ok(answer["UnlockKey"].as_str().unwrap_or_default().to_string())
    }

    /// shoal's root CA and its rotation's progress (`GET /shoal/swarm/ca`: Docker's API has no such
    /// object; its CLI works the progress out from every node's TLS info).
    pub async fn ca(&self) -> ApiResult<CaView> {
        Ok(self.ca_and_nodes().await?.0)
    }

    /// [`Self::ca`] with what each node's TLS holds (by node id), as it last reported.
    pub async fn ca_and_nodes(&self) -> ApiResult<(CaView, BTreeMap<String, shoal_core::api::NodeTlsInfo>)> {
        let value = self.get("/shoal/swarm/ca").await?;
        let nodes = serde_json::from_value(value["node_tls"].clone()).unwrap_or_default();
        Ok((serde_json::from_value(value).map_err(|e| self.bad(e))?, nodes))
    }

    /// Start a logs stream (`GET /services/{target}/logs`, a task id works too) with `details` and
    /// `timestamps`, so each frame names its task and time.
    pub async fn logs(&self, target: &str, pairs: &[(&str, String)]) -> ApiResult<Incoming> {
        let path = format!("/services/{}/logs{}", seg(target), query(pairs));
        let response = self.send(Method::GET, &path, None, &[]).await?;
        if response.status() == StatusCode::OK {
            return Ok(response.into_body());
        }
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let message = value["message"].as_str().unwrap_or_default().to_string();
        Err(ApiError::Daemon { status, message })
    }

    /// `GET /shoal/state`: the store's objects in shoal's own JSON (for the test harness's checks).
    pub async fn state(&self) -> ApiResult<ClusterState> {
        serde_json::from_value(self.get("/shoal/state").await?).map_err(|e| self.bad(e))
    }

    // ---- Control requests over the API ------------------------------------------------------

    /// Carry one control-API request over the Engine API's routes and read its answer back.
    pub async fn control(&self, request: ControlRequest) -> ApiResult<ControlResponse> {
        use ControlRequest as R;
        use ControlResponse as A;
        Ok(match request {
            R::Info => {
                let (status, cluster) = self.info().await?;
                match cluster {
                    Some(cluster) => A::Info(Box::new(cluster)),
                    None if status.state == "active" => {
                        return Err(ApiError::Daemon {
                            status: 503,
                            message: shoal_core::control::ControlError::NotAManager.to_string(),
                        })
                    }
                    // Outside a swarm, `/swarm` says so in the daemon's words.
                    None => {
                        self.swarm().await?;
                        return Err(self.bad("no cluster in /info"));
                    }
                }
            }
            R::NodeList => A::Nodes(self.nodes().await?),
            R::NodeInspect { node } => A::Node(Box::new(self.node(&node).await?)),
            R::NodeUpdate { node, availability, label_add, label_rm } => {
                self.node_update(&node, |spec| {
                    if let Some(a) = availability {
                        spec["Availability"] = json!(crate::cli::render::availability_word(a));
                    }
                    let labels = spec["Labels"].as_object_mut().cloned().unwrap_or_default();
                    let mut labels: Labels =
                        labels.into_iter().map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string())).collect();
                    labels.extend(label_add);
                    for key in &label_rm {
                        labels.remove(key);
                    }
                    spec["Labels"] = json!(labels);
                })
                .await?;
                A::Done
            }
            R::NodePromote { node } => {
                self.node_update(&node, |spec| spec["Role"] = json!("manager")).await?;
                A::Done
            }
            R::NodeDemote { node } => {
                self.node_update(&node, |spec| spec["Role"] = json!("worker")).await?;
                A::Done
            }
            R::NodeRemove { node, force } => {
                let path = format!("/nodes/{}{}", seg(&node), query(&[("force", force.to_string())]));
                self.call(Method::DELETE, &path, None).await?;
                A::Done
            }
            R::ServiceCreate { mut spec } => {
                let auth = spec.task.registry_auth.take();
                let body = inspect::service_spec(&spec);
                let headers = registry_header(auth.as_deref());
                let answer = self.call_with(Method::POST, "/services/create", Some(&body), &headers).await?;
                A::Created { id: answer["ID"].as_str().unwrap_or_default().to_string() }
            }
            R::ServiceList => A::Services(self.services().await?),
            R::ServiceInspect { service } => A::Service(Box::new(self.service(&service).await?)),
            R::ServiceUpdate { service, version, mut spec } => {
                let auth = spec.task.registry_auth.take();
                let body = inspect::service_spec(&spec);
                let path = format!("/services/{}/update{}", seg(&service), query(&[("version", version.to_string())]));
                self.call_with(Method::POST, &path, Some(&body), &registry_header(auth.as_deref())).await?;
                A::Done
            }
            R::ServiceRollback { service } => {
                let view = self.service(&service).await?;
                let pairs = [("version", view.service.meta.version.to_string()), ("rollback", "previous".into())];
                let path = format!("/services/{}/update{}", seg(&view.service.id), query(&pairs));
                let body = inspect::service_spec(&view.service.spec);
                self.call(Method::POST, &path, Some(&body)).await?;
                A::Done
            }
            R::ServiceScale { service, replicas } => {
                let view = self.service(&service).await?;
                let mut spec = view.service.spec.clone();
                spec.mode = match spec.mode {
                    ServiceMode::Replicated { .. } => ServiceMode::Replicated { replicas },
                    ServiceMode::ReplicatedJob { total_completions, .. } => {
                        ServiceMode::ReplicatedJob { max_concurrent: replicas, total_completions }
                    }
                    other => other,
                };
                let path = format!(
                    "/services/{}/update{}",
                    seg(&view.service.id),
                    query(&[("version", view.service.meta.version.to_string())])
                );
                self.call(Method::POST, &path, Some(&inspect::service_spec(&spec))).await?;
                A::Done
            }
            R::ServiceRemove { service } => {
                self.call(Method::DELETE, &format!("/services/{}", seg(&service)), None).await?;
                A::Done
            }
            R::TaskList { service, node } => A::Tasks(self.tasks(service.as_deref(), node.as_deref()).await?),
            R::JoinToken { role, rotate } => {
                let key = if role == NodeRole::Manager { "rotateManagerToken" } else { "rotateWorkerToken" };
                if rotate {
                    self.swarm_update(|_| {}, &[(key, "true".into())]).await?;
                }
                let swarm = self.swarm().await?;
                let token = swarm["JoinTokens"][if role == NodeRole::Manager { "Manager" } else { "Worker" }]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let manager_addr = match self.info().await?.1 {
                    Some(cluster) => cluster.node_addr,
                    None => String::new(),
                };
                A::JoinToken { token, manager_addr }
            }
            R::ClusterUpdate { task_history_limit, heartbeat_period_ms, node_cert_expiry_ms } => {
                self.swarm_update(
                    |spec| {
                        if let Some(limit) = task_history_limit {
                            spec["Orchestration"]["TaskHistoryRetentionLimit"] = json!(limit);
                        }
                        if let Some(ms) = heartbeat_period_ms {
                            spec["Dispatcher"]["HeartbeatPeriod"] = json!(ms.saturating_mul(1_000_000));
                        }
                        if let Some(ms) = node_cert_expiry_ms {
                            spec["CAConfig"]["NodeCertExpiry"] = json!(ms.saturating_mul(1_000_000));
                        }
                    },
                    &[],
                )
                .await?;
                A::Done
            }
            R::NetworkCreate { name, driver, attachable, labels, subnet, ingress } => {
                let ipam =
                    if subnet.is_empty() { json!({"Config": []}) } else { json!({"Config": [{"Subnet": subnet}]}) };
                let body = json!({
                    "Name": name,
                    "Driver": driver,
                    "Attachable": attachable,
                    "Ingress": ingress,
                    "Labels": labels,
                    "IPAM": ipam,
                    "CheckDuplicate": true,
                });
                let answer = self.call(Method::POST, "/networks/create", Some(&body)).await?;
                A::Created { id: answer["Id"].as_str().unwrap_or_default().to_string() }
            }
            R::NetworkList => A::Networks(self.networks().await?),
            R::NetworkInspect { network } => {
                A::Network(Box::new(read::network(&self.get(&format!("/networks/{}", seg(&network))).await?)))
            }
            R::NetworkRemove { network } => {
                self.call(Method::DELETE, &format!("/networks/{}", seg(&network)), None).await?;
                A::Done
            }
            R::SecretCreate { spec, data } => A::Created { id: self.file_create("secrets", &spec, &data).await? },
            R::ConfigCreate { spec, data } => A::Created { id: self.file_create("configs", &spec, &data).await? },
            R::SecretList => A::Secrets(
                self.file_list("secrets")
                    .await?
                    .into_iter()
                    .map(|(id, meta, spec, _)| secret(id, meta, spec))
                    .collect(),
            ),
            R::ConfigList => A::Configs(
                self.file_list("configs")
                    .await?
                    .into_iter()
                    .map(|(id, meta, spec, data)| config(id, meta, spec, data))
                    .collect(),
            ),
            R::SecretInspect { secret: name } => {
                let (id, meta, spec, _) = self.file_object("secrets", &name).await?;
                A::Secret(Box::new(secret(id, meta, spec)))
            }
            R::ConfigInspect { config: name } => {
                let (id, meta, spec, data) = self.file_object("configs", &name).await?;
                A::Config(Box::new(config(id, meta, spec, data)))
            }
            R::SecretRemove { secret } => {
                self.call(Method::DELETE, &format!("/secrets/{}", seg(&secret)), None).await?;
                A::Done
            }
            R::ConfigRemove { config } => {
                self.call(Method::DELETE, &format!("/configs/{}", seg(&config)), None).await?;
                A::Done
            }
            R::SecretUpdate { secret, version, spec, data } => {
                self.file_update("secrets", &secret, version, &spec, data.as_ref()).await?;
                A::Done
            }
            R::ConfigUpdate { config, version, spec, data } => {
                self.file_update("configs", &config, version, &spec, data.as_ref()).await?;
                A::Done
            }
            R::UnlockKey { rotate } => {
                if rotate {
                    self.swarm_update(|_| {}, &[("rotateManagerUnlockKey", "true".into())]).await?;
                }
                A::UnlockKey { key: FileData(self.unlock_key().await?) }
            }
            R::SwarmAutolock { enabled } => {
                self.swarm_update(|spec| spec["EncryptionConfig"]["AutoLockManagers"] = json!(enabled), &[]).await?;
                A::UnlockKey { key: FileData(if enabled { self.unlock_key().await? } else { String::new() }) }
            }
            R::Unlock { key } => {
                self.call(Method::POST, "/swarm/unlock", Some(&json!({"UnlockKey": key.0}))).await?;
                A::Done
            }
            R::CaInspect => A::Ca(Box::new(self.ca().await?)),
            R::CaRotate { .. } => {
                // Docker's `swarm ca --rotate`: a new `ForceRotate` counter (the daemon makes the new root).
                self.swarm_update(
                    |spec| {
                        let next = spec["CAConfig"]["ForceRotate"].as_u64().unwrap_or(0) + 1;
                        spec["CAConfig"]["ForceRotate"] = json!(next);
                    },
                    &[],
                )
                .await?;
                A::Done
            }
            R::ServiceLogs { .. } | R::SecretsKey => {
                return Err(ApiError::Daemon {
                    status: 400,
                    message: "this request is not carried over the Engine API (logs stream through \
                              /services/{id}/logs; the secrets key never leaves the managers)"
                        .into(),
                })
            }
        })
    }

    /// `POST /nodes/{id}/update?version=` with the spec `GET /nodes/{id}` shows, changed by `change`.
    async fn node_update(&self, node: &str, change: impl FnOnce(&mut Value)) -> ApiResult<()> {
        let current = self.get(&format!("/nodes/{}", seg(node))).await?;
        let id = current["ID"].as_str().unwrap_or(node).to_string();
        let version = current["Version"]["Index"].as_u64().unwrap_or(0);
        let mut spec = current["Spec"].clone();
        if !spec["Labels"].is_object() {
            spec["Labels"] = json!({});
        }
        change(&mut spec);
        let path = format!("/nodes/{}/update{}", seg(&id), query(&[("version", version.to_string())]));
        self.call(Method::POST, &path, Some(&spec)).await.map(drop)
    }

    async fn file_create(&self, kind: &str, spec: &SecretSpec, data: &FileData) -> ApiResult<String> {
        let answer = self.call(Method::POST, &format!("/{kind}/create"), Some(&file_spec(spec, Some(data)))).await?;
        Ok(answer["ID"].as_str().unwrap_or_default().to_string())
    }

    async fn file_update(
        &self,
        kind: &str,
        id: &str,
        version: u64,
        spec: &SecretSpec,
        data: Option<&FileData>,
    ) -> ApiResult<()> {
        let path = format!("/{kind}/{}/update{}", seg(id), query(&[("version", version.to_string())]));
        self.call(Method::POST, &path, Some(&file_spec(spec, data))).await.map(drop)
    }

    async fn file_list(&self, kind: &str) -> ApiResult<Vec<FileObject>> {
        let list = self.get(&format!("/{kind}")).await?;
        Ok(list.as_array().into_iter().flatten().map(file_object).collect())
    }

    async fn file_object(&self, kind: &str, name: &str) -> ApiResult<FileObject> {
        Ok(file_object(&self.get(&format!("/{kind}/{}", seg(name))).await?))
    }
}

/// What `GET /shoal/state` answers.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ClusterState {
    pub nodes: Vec<NodeView>,
    pub services: Vec<ServiceView>,
    pub tasks: Vec<Task>,
    pub networks: Vec<shoal_core::api::Network>,
}

/// A refusal as the control API's error: by Docker's status code and, for the 503s, by message.
pub fn control_error(error: ApiError) -> shoal_core::control::ControlError {
    use shoal_core::control::ControlError as E;
    match error {
        ApiError::Daemon { status, message } => match status {
            404 => E::NotFound(message),
            400 => E::InvalidArgument(message),
            409 => E::Conflict(message),
            500 => E::Internal(message.strip_prefix("internal error: ").unwrap_or(&message).to_string()),
            _ if message == E::NotAManager.to_string() => E::NotAManager,
            _ if message == E::NoLeader.to_string() => E::NoLeader,
            _ if message == E::Locked.to_string() => E::Locked,
            _ => E::Unavailable(message),
        },
        other => E::Unavailable(other.to_string()),
    }
}

type FileObject = (String, shoal_core::api::Meta, SecretSpec, String);

fn file_spec(spec: &SecretSpec, data: Option<&FileData>) -> Value {
    let mut value = json!({"Name": spec.name, "Labels": spec.labels});
    if !spec.driver.is_empty() {
        value["Driver"] = json!({"Name": spec.driver});
    }
    if !spec.templating.is_empty() {
        value["Templating"] = json!({"Name": spec.templating});
    }
    if let Some(data) = data {
        value["Data"] = json!(data.0);
    }
    value
}

fn file_object(value: &Value) -> FileObject {
    let spec = &value["Spec"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        text(&value["ID"]),
        shoal_core::api::Meta {
            version: value["Version"]["Index"].as_u64().unwrap_or(0),
            created_at_ms: read::time_ms(&value["CreatedAt"]),
            updated_at_ms: read::time_ms(&value["UpdatedAt"]),
        },
        SecretSpec {
            name: text(&spec["Name"]),
            labels: spec["Labels"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                .unwrap_or_default(),
            driver: text(&spec["Driver"]["Name"]),
            templating: text(&spec["Templating"]["Name"]),
        },
        text(&spec["Data"]),
    )
}

fn secret(id: String, meta: shoal_core::api::Meta, spec: SecretSpec) -> shoal_core::api::Secret {
    shoal_core::api::Secret { id, meta, spec, sealed: Default::default() }
}

fn config(id: String, meta: shoal_core::api::Meta, spec: SecretSpec, data: String) -> ConfigView {
    ConfigView { config: shoal_core::api::Config { id, meta, spec, sealed: Default::default() }, data: FileData(data) }
}

/// `X-Registry-Auth` (`--with-registry-auth`): the engine's own encoding of the credentials.
fn registry_header(auth: Option<&RegistryAuth>) -> Vec<(&'static str, String)> {
    auth.map(|auth| vec![("X-Registry-Auth", crate::engine_pull::encode_auth(auth))]).unwrap_or_default()
}
