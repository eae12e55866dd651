//! The local API between the `shoal` CLI and its daemon: newline-delimited JSON over a unix socket
//! (and optionally TCP on loopback), one request line answered by one response line.
//!
//! A request is either a swarm-lifecycle operation the daemon handles itself (init, join, leave,
//! status) or a wrapped [`ControlRequest`] the daemon passes to its node. A line that is not a
//! request gets an error reply and the connection stays usable; nothing a client sends can panic the
//! daemon.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shoal_core::api::Availability;
use shoal_core::control::{ControlError, ControlRequest, ControlResponse};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Longest request line the daemon reads; a longer one is answered with an error and dropped.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Cluster settings `swarm init` may override; `None` keeps Swarm's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterOverrides {
    pub task_history_retention_limit: Option<u64>,
    pub heartbeat_period_ms: Option<u64>,
    pub snapshot_interval: Option<u64>,
    /// Node certificate validity (`--cert-expiry`), at least an hour.
    #[serde(default)]
    pub cert_expiry_ms: Option<u64>,
    /// `--autolock`: the swarm starts with autolock on.
    #[serde(default)]
    pub autolock: Option<bool>,
}

/// `swarm init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitRequest {
    /// `ip` or `ip:port`; empty = pick this host's address.
    pub advertise_addr: String,
    /// `ip:port` the node listens on for peers (Swarm's default `0.0.0.0:2377`).
    pub listen_addr: String,
    pub force_new_cluster: bool,
    pub availability: Availability,
    pub overrides: ClusterOverrides,
    /// `--data-path-addr`: the IP peers open tunnels to; empty = the advertise address's IP.
    #[serde(default)]
    pub data_path_addr: String,
    /// `--data-path-port`: the port of the data path (Swarm's 4789 when `None` or 0).
    #[serde(default)]
    pub data_path_port: Option<u32>,
}

/// `swarm join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub remote_addr: String,
    pub token: String,
    pub advertise_addr: String,
    pub listen_addr: String,
    pub availability: Availability,
    /// As [`InitRequest::data_path_addr`].
    #[serde(default)]
    pub data_path_addr: String,
    /// As [`InitRequest::data_path_port`]; Swarm takes it at `init` for the whole swarm, shoal per node.
    #[serde(default)]
    pub data_path_port: Option<u32>,
}

/// What the CLI asks its daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LocalRequest {
    SwarmInit(InitRequest),
    SwarmJoin(JoinRequest),
    SwarmLeave {
        force: bool,
    },
    /// Whether this daemon's node is in a swarm, and as what.
    SwarmStatus,
    Control {
        request: Box<ControlRequest>,
    },
}

/// The node's standing, as `docker info` prints it (` Swarm: inactive`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmStatus {
    /// `inactive`, `pending`, `active` or `error`.
    pub state: String,
    pub node_id: String,
    pub node_addr: String,
    pub error: String,
    /// The daemon's version (`shoal version`'s Server section); empty from an older daemon.
    #[serde(default)]
    pub version: String,
}

/// What the daemon answers when a request succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum LocalAnswer {
    Initialized { node_id: String, worker_token: String, manager_addr: String },
    Joined { node_id: String, manager: bool },
    Left,
    Status(SwarmStatus),
    Control(ControlResponse),
}

/// Why the daemon refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", content = "message", rename_all = "snake_case")]
pub enum LocalError {
    /// The control API refused it.
    #[error("{0}")]
    Control(ControlError),
    /// The line was not a request this daemon understands.
    #[error("{0}")]
    BadRequest(String),
    /// The daemon's own refusal (not in a swarm, already in one, …).
    #[error("{0}")]
    Refused(String),
}

/// One response line.
pub type LocalResult = Result<LocalAnswer, LocalError>;

/// Serves decoded requests; implemented by the daemon (and by fakes in tests).
#[async_trait]
pub trait LocalHandler: Send + Sync + 'static {
    async fn handle(&self, request: LocalRequest) -> LocalResult;
}

/// Where a CLI finds its daemon (`-H`, `SHOAL_HOST`).
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

/// Why the CLI got no answer from its daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("Cannot connect to the shoal daemon at {endpoint}. Is the shoal daemon running? ({reason})")]
    Connect { endpoint: String, reason: String },
    #[error("lost the connection to the shoal daemon at {endpoint}: {reason}")]
    Io { endpoint: String, reason: String },
    #[error("the shoal daemon at {endpoint} sent a reply this CLI cannot read: {reason}")]
    BadReply { endpoint: String, reason: String },
}

/// Send one request to the daemon at `endpoint` and wait for its answer.
pub async fn call(endpoint: &Endpoint, request: &LocalRequest) -> Result<LocalResult, ClientError> {
    let name = endpoint.to_string();
    let connect_err = |err: std::io::Error| ClientError::Connect { endpoint: name.clone(), reason: err.to_string() };
    match endpoint {
        Endpoint::Unix(path) => call_on(UnixStream::connect(path).await.map_err(connect_err)?, &name, request).await,
        Endpoint::Tcp(addr) => call_on(TcpStream::connect(addr).await.map_err(connect_err)?, &name, request).await,
    }
}

async fn call_on<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    endpoint: &str,
    request: &LocalRequest,
) -> Result<LocalResult, ClientError> {
    let io_err = |err: std::io::Error| ClientError::Io { endpoint: endpoint.to_string(), reason: err.to_string() };
    let mut line = serde_json::to_vec(request)
        .map_err(|err| ClientError::Io { endpoint: endpoint.to_string(), reason: err.to_string() })?;
    line.push(b'\n');
    let mut stream = BufReader::new(stream);
    stream.get_mut().write_all(&line).await.map_err(io_err)?;
    stream.get_mut().flush().await.map_err(io_err)?;
    let mut reply = String::new();
    let read = stream.read_line(&mut reply).await.map_err(io_err)?;
    if read == 0 {
        return Err(ClientError::Io {
            endpoint: endpoint.to_string(),
            reason: "the daemon closed the connection".into(),
        });
    }
    serde_json::from_str(&reply)
        .map_err(|err| ClientError::BadReply { endpoint: endpoint.to_string(), reason: err.to_string() })
}

/// Answer one line: decode, handle, encode. Garbled input yields a `BadRequest` reply.
pub async fn answer_line(handler: &dyn LocalHandler, line: &str) -> String {
    let result = match serde_json::from_str::<LocalRequest>(line) {
        Ok(request) => handler.handle(request).await,
        Err(err) => Err(LocalError::BadRequest(format!("garbled request: {err}"))),
    };
    serde_json::to_string(&result).unwrap_or_else(|err| {
        let fallback: LocalResult = Err(LocalError::BadRequest(format!("cannot encode the reply: {err}")));
        serde_json::to_string(&fallback).unwrap_or_default()
    })
}

/// Serve one connection: answer request lines until the client hangs up.
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S, handler: Arc<dyn LocalHandler>) {
    let mut stream = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = match read_bounded_line(&mut stream, &mut line).await {
            Ok(read) => read,
            Err(LineError::TooLong) => {
                let reply: LocalResult =
                    Err(LocalError::BadRequest(format!("request longer than {MAX_LINE_BYTES} bytes")));
                let mut text = serde_json::to_string(&reply).unwrap_or_default();
                text.push('\n');
                let _ = stream.get_mut().write_all(text.as_bytes()).await;
                return;
            }
            Err(LineError::Io) => return,
        };
        if read == 0 {
            return;
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let mut reply = answer_line(handler.as_ref(), text.trim_end()).await;
        reply.push('\n');
        if stream.get_mut().write_all(reply.as_bytes()).await.is_err() || stream.get_mut().flush().await.is_err() {
            return;
        }
    }
}

enum LineError {
    TooLong,
    Io,
}

async fn read_bounded_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> Result<usize, LineError> {
    let mut total = 0;
    loop {
        let available = reader.fill_buf().await.map_err(|_| LineError::Io)?;
        if available.is_empty() {
            return Ok(total);
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(end) => (&available[..=end], true),
            None => (available, false),
        };
        let used = chunk.len();
        if line.len() + used > MAX_LINE_BYTES {
            return Err(LineError::TooLong);
        }
        line.extend_from_slice(chunk);
        reader.consume(used);
        total += used;
        if done {
            return Ok(total);
        }
    }
}

/// Listen on a unix socket at `path` (replacing a stale one) and serve until the task is dropped.
pub async fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    // A socket file left by a daemon that died: nobody answers on it, so it is safe to replace.
    if tokio::fs::symlink_metadata(path).await.is_ok() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another shoal daemon is serving {}", path.display()),
            ));
        }
        tokio::fs::remove_file(path).await?;
    }
    UnixListener::bind(path)
}

/// Accept unix connections forever, one task per connection.
pub async fn serve_unix(listener: UnixListener, handler: Arc<dyn LocalHandler>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, handler.clone()));
            }
            // Out of file descriptors and the like: back off rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Accept TCP connections forever, one task per connection.
pub async fn serve_tcp(listener: TcpListener, handler: Arc<dyn LocalHandler>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, handler.clone()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
