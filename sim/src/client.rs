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
//! A client started `from NODE network NET` acts as a container on network NET on that node: its
//! target names a service (`web:80`), which every request resolves (TTL 0) by a DNS query to the
//! mesh resolver on NET's bridge gateway on that node, then connects to the address it got (the
//! service's VIP on that node, or a task's address with `dnsrr`, taken in turn).
//!
//! A request fails when the name does not resolve ([`RESOLVE_TIMEOUT`]), when the connection is
//! refused or times out ([`CONNECT_TIMEOUT`]), when it ends
//! or is reset before the answer, or when no answer comes within [`ANSWER_TIMEOUT`]. Every outcome
//! becomes a `client.request` trace event and a [`RequestRecord`] in the client's [`ClientLog`],
//! which the `client-requests` invariant and the `client …` expectations read.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use shoal_core::env::mesh::DatagramSocket;
use shoal_core::env::runtime;
use shoal_core::trace::Tracer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::mesh_net::{Owner, SimMeshNet, SimStream};

/// How long a client waits for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a client waits for the answer once its request is sent.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for the resolver's answer.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// The network the client is attached to (as a container on `from`): names resolve there.
    pub network: Option<String>,
}

impl ClientSpec {
    /// Who holds the client's sockets: a container on its host when it is on a network.
    fn owner(&self) -> Owner {
        match &self.network {
            Some(network) => Owner::container(self.from.clone(), format!("client-{}-{network}", self.name)),
            None => Owner::daemon(self.from.clone()),
        }
    }

    /// The host a request goes through (what the client-requests invariant calls `via`).
    fn via(&self) -> String {
        match &self.network {
            Some(_) => self.from.clone(),
            None => crate::net::host_of(&self.target).to_string(),
        }
    }
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
/// `resolver` (`ip:53`, the gateway of the client's network on its host) answers its names.
pub fn start(
    spec: ClientSpec,
    resolver: Option<String>,
    mesh: SimMeshNet,
    log: ClientLog,
    tracer: Tracer,
) -> (ClientHandle, impl std::future::Future<Output = ()> + Send + 'static) {
    let (stop, stopped) = watch::channel(false);
    let handle = ClientHandle { spec: spec.clone(), stop };
    let client = Client { spec, resolver, mesh, pool: Pool::default() };
    (handle, run(Arc::new(client), log, tracer, stopped))
}

/// What every request of one client shares.
struct Client {
    spec: ClientSpec,
    resolver: Option<String>,
    mesh: SimMeshNet,
    pool: Pool,
}

/// Idle keep-alive connections.
type Pool = Arc<Mutex<Vec<SimStream>>>;

async fn run(client: Arc<Client>, log: ClientLog, tracer: Tracer, stopped: watch::Receiver<bool>) {
    let period = Duration::from_secs_f64(1.0 / client.spec.rate.max(0.001));
    let start = runtime::now();
    let mut seq = 0u64;
    loop {
        if *stopped.borrow() {
            return;
        }
        seq += 1;
        let (client, log, tracer) = (client.clone(), log.clone(), tracer.clone());
        runtime::spawn(async move {
            let record = request(&client, seq).await;
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

async fn request(client: &Client, seq: u64) -> RequestRecord {
    let spec = &client.spec;
    let sent_ms = runtime::unix_millis();
    let mut outcome = attempt(client, seq, spec.keepalive).await;
    if let Err(Failure { retry: true, .. }) = outcome {
        outcome = attempt(client, seq, false).await;
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
        via: spec.via(),
        answer,
        error,
    }
}

/// Where a request connects: the target, or with a resolver its name resolved (`seq` picks among
/// several addresses).
async fn address(client: &Client, seq: u64) -> Result<String, String> {
    let Some(resolver) = &client.resolver else { return Ok(client.spec.target.clone()) };
    let (name, port) = client.spec.target.rsplit_once(':').unwrap_or((&client.spec.target, "80"));
    if name.parse::<Ipv4Addr>().is_ok() {
        return Ok(client.spec.target.clone());
    }
    let addresses = resolve(&client.mesh, &client.spec.owner(), resolver, name, seq as u16).await?;
    if addresses.is_empty() {
        return Err(format!("{name} resolved to no address"));
    }
    Ok(format!("{}:{port}", addresses[seq as usize % addresses.len()]))
}

async fn attempt(client: &Client, seq: u64, reuse: bool) -> Result<String, Failure> {
    let spec = &client.spec;
    let pooled = if reuse { client.pool.lock().expect("pool lock").pop() } else { None };
    let reused = pooled.is_some();
    let mut stream = match pooled {
        Some(stream) => stream,
        None => {
            let addr = address(client, seq).await.map_err(|reason| Failure { reason, retry: false })?;
            client
                .mesh
                .dial(&spec.owner(), &addr, CONNECT_TIMEOUT)
                .await
                .map_err(|err| Failure { reason: err.to_string(), retry: false })?
        }
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
                client.pool.lock().expect("pool lock").push(stream);
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
    let spec = ClientSpec { name: "probe".into(), target: addr, from, rate: 1.0, keepalive: false, network: None };
    let client = Client { spec, resolver: None, mesh, pool: Pool::default() };
    attempt(&client, 0, false).await.map_err(|failure| failure.reason)
}

/// One datagram to `addr` from a socket on `from`: the answer that comes back within
/// [`RESOLVE_TIMEOUT`], or why there was none.
pub async fn probe_udp(mesh: SimMeshNet, from: String, addr: String) -> Result<String, String> {
    let socket = mesh.bind(Owner::daemon(from), "0.0.0.0:0").map_err(|err| err.to_string())?;
    socket.send_to(b"GET probe\n", &addr).await.map_err(|err| err.to_string())?;
    let mut buf = [0u8; 1500];
    match runtime::timeout(RESOLVE_TIMEOUT, socket.recv_from(&mut buf)).await {
        Ok(Ok((len, _))) => Ok(String::from_utf8_lossy(&buf[..len]).trim_end().to_string()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no datagram came back from {addr} within {} ms", RESOLVE_TIMEOUT.as_millis())),
    }
}

/// Ask the DNS server at `resolver` for the IPv4 addresses of `name` from a socket of `owner`'s:
/// the addresses, or why there are none (`NXDOMAIN`, no answer in time, a malformed reply).
pub async fn resolve(
    mesh: &SimMeshNet,
    owner: &Owner,
    resolver: &str,
    name: &str,
    id: u16,
) -> Result<Vec<Ipv4Addr>, String> {
    let socket = mesh.bind(owner.clone(), "0.0.0.0:0").map_err(|err| err.to_string())?;
    socket.send_to(&dns::query(id, name), resolver).await.map_err(|err| err.to_string())?;
    let mut buf = [0u8; 1500];
    match runtime::timeout(RESOLVE_TIMEOUT, socket.recv_from(&mut buf)).await {
        Ok(Ok((len, _))) => dns::answer(&buf[..len], id).map_err(|err| format!("resolving {name}: {err}")),
        Ok(Err(err)) => Err(format!("resolving {name}: {err}")),
        Err(_) => Err(format!("resolving {name}: no answer from {resolver} within {} ms", RESOLVE_TIMEOUT.as_millis())),
    }
}

/// The little DNS a client needs: an `A` query, and the `A` records of the reply (RFC 1035 §4).
pub mod dns {
    use std::net::Ipv4Addr;

    /// A recursive query for the `A` records of `name`.
    pub fn query(id: u16, name: &str) -> Vec<u8> {
        let mut message = Vec::with_capacity(18 + name.len());
        message.extend_from_slice(&id.to_be_bytes());
        message.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
        for label in name.trim_end_matches('.').split('.') {
            message.push(label.len().min(63) as u8);
            message.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
        }
        message.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
        message
    }

    fn u16_at(message: &[u8], at: usize) -> Result<u16, String> {
        message.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "truncated reply".into())
    }

    /// Past the (possibly compressed) name starting at `at`.
    fn skip_name(message: &[u8], mut at: usize) -> Result<usize, String> {
        loop {
            let len = *message.get(at).ok_or("truncated name")? as usize;
            if len == 0 {
                return Ok(at + 1);
            }
            if len & 0xC0 == 0xC0 {
                return Ok(at + 2);
            }
            at += 1 + len;
        }
    }

    /// The `A` records of the reply to query `id`; `NXDOMAIN` and other errors as text.
    pub fn answer(message: &[u8], id: u16) -> Result<Vec<Ipv4Addr>, String> {
        if u16_at(message, 0)? != id {
            return Err("a reply to another query".into());
        }
        match message.get(3).ok_or("truncated reply")? & 0x0F {
            0 => {}
            3 => return Err("NXDOMAIN".into()),
            code => return Err(format!("DNS error code {code}")),
        }
        let (questions, answers) = (u16_at(message, 4)?, u16_at(message, 6)?);
        let mut at = 12;
        for _ in 0..questions {
            at = skip_name(message, at)? + 4;
        }
        let mut addresses = Vec::new();
        for _ in 0..answers {
            at = skip_name(message, at)?;
            let (kind, len) = (u16_at(message, at)?, u16_at(message, at + 8)? as usize);
            at += 10;
            let data = message.get(at..at + len).ok_or("truncated record")?;
            if kind == 1 && len == 4 {
                addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
            }
            at += len;
        }
        Ok(addresses)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_query_and_its_answer() {
            let q = query(7, "web");
            assert_eq!(q, [0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'e', b'b', 0, 0, 1, 0, 1]);
            // The reply: the question, then one A record whose name points at it.
            let mut reply = q.clone();
            reply[2] = 0x81;
            reply[3] = 0x80;
            reply[7] = 1;
            reply.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 0, 1, 64]);
            assert_eq!(answer(&reply, 7), Ok(vec![Ipv4Addr::new(10, 0, 1, 64)]));
            assert_eq!(answer(&reply, 8), Err("a reply to another query".into()));
            reply[3] = 0x83;
            assert_eq!(answer(&reply, 7), Err("NXDOMAIN".into()));
            assert!(answer(&reply[..5], 7).is_err(), "a truncated reply is an error, not a panic");
        }
    }
}
