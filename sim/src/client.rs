//! Simulated clients: load generators a scenario starts (`client: start load1 to manager-1:8080 rate
//! 20/s`) that send requests through the mesh at a steady rate of virtual time and record every
//! outcome.
//!
//! Each request speaks [`crate::serve`]'s protocol: one line out, one line back (the name of the
//! container that answered, `<service>.<slot>.<task id>`). By default every request opens its own
//! connection (as `curl` in a loop does); with `keepalive` the client keeps a pool of idle
//! connections and reuses them, as HTTP clients do — and, as they do for idempotent requests
//! (Go's `net/http`, curl), retries once on a fresh connection when a reused one is closed or reset
//! before any byte of the answer came back (the server closed it while idle).
//!
//! A request fails when the connection is refused or times out ([`CONNECT_TIMEOUT`]), when it ends
//! or is reset before the answer, or when no answer comes within [`ANSWER_TIMEOUT`]. Every outcome
//! becomes a `client.request` trace event and a [`RequestRecord`] in the client's [`ClientLog`],
//! which the `client-requests` invariant and the `client …` expectations read.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use shoal_core::env::runtime;
use shoal_core::trace::Tracer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::mesh_net::{Owner, SimMeshNet, SimStream};

/// How long a client waits for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client waits for the answer once its request is sent.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a scenario asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSpec {
    pub name: String,
    /// `host:port` dialled for every request.
    pub target: String,
    /// The host the client runs on (the supervisor's `client` host unless the scenario names a node).
    pub from: String,
    /// Requests per second of virtual time.
    pub rate: f64,
    pub keepalive: bool,
}

/// One request's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    pub client: String,
    pub seq: u64,
    /// Virtual ms since the Unix epoch when it was sent, and when its outcome was known.
    pub sent_ms: u64,
    pub done_ms: u64,
    /// The host the client dialled.
    pub via: String,
    /// The container that answered (`<service>.<slot>.<task id>`), when it succeeded.
    pub answer: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

impl RequestRecord {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// The id of the task that answered (the last part of its container's name).
    pub fn task_id(&self) -> Option<&str> {
        self.answer.as_deref().and_then(|name| name.rsplit('.').next())
    }
}

/// Every request of every client of a run, in the order they finished.
#[derive(Debug, Clone, Default)]
pub struct ClientLog(Arc<Mutex<Vec<RequestRecord>>>);

impl ClientLog {
    pub fn push(&self, record: RequestRecord) {
        self.0.lock().expect("client log lock").push(record);
    }

    /// Records from index `from` on (for checkers that read incrementally).
    pub fn since(&self, from: usize) -> Vec<RequestRecord> {
        self.0.lock().expect("client log lock").get(from..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// One client's records.
    pub fn of(&self, client: &str) -> Vec<RequestRecord> {
        self.0.lock().expect("client log lock").iter().filter(|r| r.client == client).cloned().collect()
    }
}

/// A running client: stop it with [`ClientHandle::stop`] (requests in flight still finish).
#[derive(Debug)]
pub struct ClientHandle {
    pub spec: ClientSpec,
    stop: watch::Sender<bool>,
}

impl ClientHandle {
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// The client's run: returns the handle and the future to spawn on the client's host.
pub fn start(
    spec: ClientSpec,
    mesh: SimMeshNet,
    log: ClientLog,
    tracer: Tracer,
) -> (ClientHandle, impl std::future::Future<Output = ()> + Send + 'static) {
    let (stop, stopped) = watch::channel(false);
    let handle = ClientHandle { spec: spec.clone(), stop };
    (handle, run(spec, mesh, log, tracer, stopped))
}

/// Idle keep-alive connections.
type Pool = Arc<Mutex<Vec<SimStream>>>;

async fn run(spec: ClientSpec, mesh: SimMeshNet, log: ClientLog, tracer: Tracer, stopped: watch::Receiver<bool>) {
    let period = Duration::from_secs_f64(1.0 / spec.rate.max(0.001));
    let pool: Pool = Arc::default();
    let start = runtime::now();
    let mut seq = 0u64;
    loop {
        if *stopped.borrow() {
            return;
        }
        seq += 1;
        let (spec, mesh, log, tracer, pool) = (spec.clone(), mesh.clone(), log.clone(), tracer.clone(), pool.clone());
        runtime::spawn(async move {
            let record = request(&spec, &mesh, &pool, seq).await;
            tracer.emit("client.request", serde_json::to_value(&record).unwrap_or_default());
            log.push(record);
        });
        let next = start + period.mul_f64(seq as f64);
        let now = runtime::now();
        if next > now {
            runtime::sleep(next - now).await;
        }
    }
}

/// Why one attempt failed, and whether a fresh connection may be tried (a reused connection that
/// was closed before any byte of the answer).
struct Failure {
    reason: String,
    retry: bool,
}

async fn request(spec: &ClientSpec, mesh: &SimMeshNet, pool: &Pool, seq: u64) -> RequestRecord {
    let sent_ms = runtime::unix_millis();
    let mut outcome = attempt(spec, mesh, pool, seq, spec.keepalive).await;
    if let Err(Failure { retry: true, .. }) = outcome {
        outcome = attempt(spec, mesh, pool, seq, false).await;
    }
    let (answer, error) = match outcome {
        Ok(answer) => (Some(answer), None),
        Err(failure) => (None, Some(failure.reason)),
    };
    RequestRecord {
        client: spec.name.clone(),
        seq,
        sent_ms,
        done_ms: runtime::unix_millis(),
        via: crate::net::host_of(&spec.target).to_string(),
        answer,
        error,
    }
}

async fn attempt(spec: &ClientSpec, mesh: &SimMeshNet, pool: &Pool, seq: u64, reuse: bool) -> Result<String, Failure> {
    let pooled = if reuse { pool.lock().expect("pool lock").pop() } else { None };
    let reused = pooled.is_some();
    let mut stream = match pooled {
        Some(stream) => stream,
        None => mesh
            .dial(&Owner::daemon(spec.from.clone()), &spec.target, CONNECT_TIMEOUT)
            .await
            .map_err(|err| Failure { reason: err.to_string(), retry: false })?,
    };
    let request = format!("GET {} {seq}\n", spec.name);
    if let Err(err) = stream.write_all(request.as_bytes()).await {
        return Err(Failure { reason: format!("send: {err}"), retry: reused });
    }
    let mut answer = Vec::new();
    let read = runtime::timeout(ANSWER_TIMEOUT, async {
        let mut byte = [0u8; 1];
        loop {
            match stream.read(&mut byte).await {
                Ok(0) => return Err("connection closed before the answer".to_string()),
                Ok(_) if byte[0] == b'\n' => return Ok(()),
                Ok(_) => answer.push(byte[0]),
                Err(err) => return Err(format!("connection failed before the answer: {err}")),
            }
        }
    })
    .await;
    match read {
        Ok(Ok(())) => {
            if spec.keepalive {
                pool.lock().expect("pool lock").push(stream);
            } else {
                let _ = stream.shutdown().await;
            }
            Ok(String::from_utf8_lossy(&answer).into_owned())
        }
        Ok(Err(reason)) => Err(Failure { retry: reused && answer.is_empty(), reason }),
        Err(_) => Err(Failure { reason: format!("no answer within {} ms", ANSWER_TIMEOUT.as_millis()), retry: false }),
    }
}

/// One request to `addr` from `from` on a fresh connection: the answer, or why there was none.
pub async fn probe(mesh: SimMeshNet, from: String, addr: String) -> Result<String, String> {
    let spec = ClientSpec { name: "probe".into(), target: addr, from, rate: 1.0, keepalive: false };
    attempt(&spec, &mesh, &Pool::default(), 0, false).await.map_err(|failure| failure.reason)
}
