//! Real clients for the mesh scenarios (`client: start load1 to manager-1:8080 rate 20/s`): a tokio
//! task that sends HTTP requests at the step's rate to the node's published port on its loopback
//! address, and records every outcome as the simulator's clients do — a
//! [`shoal_sim::client::RequestRecord`] in the run's [`ClientLog`], so the simulator's
//! `client-requests` invariant and `client …` expectations read them unchanged.
//!
//! The simulator's containers answer each request line with their container's name
//! (`<service>.<slot>.<task id>`); the real stand-in image ([`crate::images::server`], busybox
//! `httpd`) serves a page holding its hostname, which Docker sets to the container's short id. The
//! client turns that id into the container's name (`docker inspect`, once per container), so a
//! record says which task answered in both worlds.
//!
//! A request fails as in the simulator: the connection is refused or not made within
//! [`CONNECT_TIMEOUT`], it ends or is reset before the whole answer, no answer comes within
//! [`ANSWER_TIMEOUT`], or (HTTP's own case) the status is not 200. busybox `httpd` closes every
//! connection after its answer, so a `keepalive` client opens a new connection per request here.
//!
//! A client `from NODE network NET` runs inside a container the runner attaches to that network's
//! bridge on the node ([`Dial::Container`]): its sockets are made in the container's network
//! namespace ([`Netns`], `setns(2)` on a short-lived thread, as root), the target's name is asked
//! of the container's DNS server (the mesh resolver on the bridge's gateway), and the request goes
//! to the address it answers — the node's VIP of the service — as any container's would.
//! `udp` probes send one datagram and wait [`RESOLVE_TIMEOUT`] for the answer.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_sim::client::{dns, ClientLog, ClientSpec, RequestRecord, ANSWER_TIMEOUT, CONNECT_TIMEOUT, RESOLVE_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::sync::watch;

/// Container names by the short ids their hostnames are (filled as answers come).
#[derive(Debug, Clone, Default)]
pub struct Names(Arc<Mutex<BTreeMap<String, String>>>);

impl Names {
    /// The container name `<service>.<slot>.<task id>` of the container whose hostname is
    /// `hostname`; the hostname itself when Docker knows no such container (a process-executor
    /// task's page, or a container already removed).
    pub async fn of(&self, hostname: &str) -> String {
        if let Some(name) = self.0.lock().expect("names lock").get(hostname) {
            return name.clone();
        }
        let looked_up = tokio::process::Command::new("docker")
            .args(["container", "inspect", "--format", "{{.Name}}", hostname])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .await
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().trim_start_matches('/').to_string())
            .filter(|name| !name.is_empty());
        match looked_up {
            Some(name) => {
                self.0.lock().expect("names lock").insert(hostname.to_string(), name.clone());
                name
            }
            None => hostname.to_string(),
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A running client: [`RealClient::stop`] ends its loop (requests in flight still finish).
#[derive(Debug)]
pub struct RealClient {
    pub spec: ClientSpec,
    stop: watch::Sender<bool>,
    inflight: Arc<AtomicUsize>,
}

impl RealClient {
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Once the loop is stopped, wait (at most `limit`) until no request is in flight.
    pub async fn settled(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.inflight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A network namespace to make sockets in: a container's (`/proc/PID/ns/net`, held open).
#[derive(Debug, Clone)]
pub struct Netns(Arc<std::fs::File>);

impl Netns {
    /// The network namespace of process `pid` (a container's init, from `docker inspect`).
    pub fn of_pid(pid: u32) -> Result<Netns, String> {
        let path = format!("/proc/{pid}/ns/net");
        std::fs::File::open(&path).map(|f| Netns(Arc::new(f))).map_err(|e| format!("cannot open {path}: {e}"))
    }

    /// A new non-blocking IPv4 socket of `kind` (`SOCK_STREAM`, `SOCK_DGRAM`) in this namespace,
    /// made on a thread of its own that enters the namespace and ends (needs CAP_SYS_ADMIN).
    fn socket(&self, kind: libc::c_int) -> Result<OwnedFd, String> {
        let ns = self.0.clone();
        std::thread::spawn(move || {
            // SAFETY: setns(2) on this short-lived thread only (it ends right after), with an open
            // namespace file; socket(2) has no preconditions; the fd is owned from here on.
            unsafe {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(format!(
                        "cannot enter the container's network namespace: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                let fd = libc::socket(libc::AF_INET, kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
                if fd < 0 {
                    return Err(format!(
                        "socket in the container's network namespace: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                Ok(OwnedFd::from_raw_fd(fd))
            }
        })
        .join()
        .map_err(|_| "the socket thread panicked".to_string())?
    }
}

/// How a client's requests reach their target.
#[derive(Debug, Clone)]
pub enum Dial {
    /// From this host, to a node's address ([`Route`]).
    Host(Route),
    /// From inside a container on a network's bridge: `name` (a service name, or an address) is
    /// asked of `resolver`, and each request goes to an address it answered (`seq` picks).
    Container { netns: Netns, resolver: SocketAddr, name: String, port: u16 },
}

/// Ask the DNS server `resolver` for the IPv4 addresses of `name` from inside `netns`: the
/// addresses, or why there are none (in the simulator's words: `NXDOMAIN`, no answer in time).
pub async fn resolve(netns: &Netns, resolver: SocketAddr, name: &str, id: u16) -> Result<Vec<Ipv4Addr>, String> {
    let socket = UdpSocket::from_std(std::net::UdpSocket::from(netns.socket(libc::SOCK_DGRAM)?))
        .map_err(|e| format!("resolving {name}: {e}"))?;
    socket.send_to(&dns::query(id, name), resolver).await.map_err(|e| format!("resolving {name}: {e}"))?;
    let mut buf = [0u8; 1500];
    match tokio::time::timeout(RESOLVE_TIMEOUT, socket.recv_from(&mut buf)).await {
        Ok(Ok((len, _))) => dns::answer(&buf[..len], id).map_err(|err| format!("resolving {name}: {err}")),
        Ok(Err(err)) => Err(format!("resolving {name}: {err}")),
        Err(_) => Err(format!("resolving {name}: no answer from {resolver} within {} ms", RESOLVE_TIMEOUT.as_millis())),
    }
}

impl Drop for RealClient {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where a client's requests go: `addr` (the node's loopback address and the target port), sent
/// from `source` (the address of the node the client runs `from`, if any).
#[derive(Debug, Clone)]
pub struct Route {
    pub addr: SocketAddr,
    pub source: Option<IpAddr>,
}

/// Start `spec`'s request loop on the current runtime; every outcome goes to `log`.
pub fn start(spec: ClientSpec, dial: Dial, names: Names, log: ClientLog) -> RealClient {
    let (stop, stopped) = watch::channel(false);
    // The host a request goes through, as the simulator's client-requests invariant names it.
    let via = match &dial {
        Dial::Host(_) => shoal_sim::net::host_of(&spec.target).to_string(),
        Dial::Container { .. } => spec.from.clone(),
    };
    let inflight = Arc::new(AtomicUsize::new(0));
    let client = RealClient { spec: spec.clone(), stop, inflight: inflight.clone() };
    tokio::spawn(async move {
        let period = Duration::from_secs_f64(1.0 / spec.rate.max(0.001));
        let begun = Instant::now();
        let mut seq = 0u64;
        while !*stopped.borrow() {
            seq += 1;
            let (dial, names, log, name, via, inflight) =
                (dial.clone(), names.clone(), log.clone(), spec.name.clone(), via.clone(), inflight.clone());
            inflight.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let sent_ms = unix_ms();
                let outcome = request(&dial, seq).await;
                let (answer, error) = match outcome {
                    Ok(hostname) => (Some(names.of(&hostname).await), None),
                    Err(reason) => (None, Some(reason)),
                };
                log.push(RequestRecord { client: name, seq, sent_ms, done_ms: unix_ms(), via, answer, error });
                inflight.fetch_sub(1, Ordering::Relaxed);
            });
            let next = begun + period.mul_f64(seq as f64);
            tokio::time::sleep_until(next.into()).await;
        }
    });
    client
}

/// One request on a fresh connection, as a probe (`expect: port HOST:PORT answers|closed`): the
/// container name that answered, or why there was none.
pub async fn probe(route: &Route, names: &Names) -> Result<String, String> {
    let hostname = request(&Dial::Host(route.clone()), 0).await?;
    Ok(names.of(&hostname).await)
}

/// One datagram to the route's address (`expect: port NODE:PORT/udp answers S`): the name of the
/// container whose answer came back within [`RESOLVE_TIMEOUT`], or why none did.
pub async fn probe_udp(route: &Route, names: &Names) -> Result<String, String> {
    let addr = route.addr;
    let local = SocketAddr::new(route.source.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 0);
    let socket = UdpSocket::bind(local).await.map_err(|e| format!("bind to {local}: {e}"))?;
    socket.send_to(b"GET probe\n", addr).await.map_err(|e| format!("send to {addr}: {e}"))?;
    let mut buf = [0u8; 1500];
    match tokio::time::timeout(RESOLVE_TIMEOUT, socket.recv_from(&mut buf)).await {
        Ok(Ok((len, _))) => {
            let hostname = String::from_utf8_lossy(&buf[..len]).trim().to_string();
            Ok(names.of(&hostname).await)
        }
        Ok(Err(err)) => Err(format!("{addr}/udp: {err}")),
        Err(_) => Err(format!("no datagram came back from {addr} within {} ms", RESOLVE_TIMEOUT.as_millis())),
    }
}

/// `GET /` over HTTP/1.0: the first line of the body (the serving container's hostname).
async fn request(dial: &Dial, seq: u64) -> Result<String, String> {
    let (socket, addr) = match dial {
        Dial::Host(route) => {
            let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
            if let Some(source) = route.source {
                socket.bind(SocketAddr::new(source, 0)).map_err(|e| format!("bind to {source}: {e}"))?;
            }
            (socket, route.addr)
        }
        Dial::Container { netns, resolver, name, port } => {
            let ip = match name.parse::<Ipv4Addr>() {
                Ok(ip) => ip,
                Err(_) => {
                    let addresses = resolve(netns, *resolver, name, seq as u16).await?;
                    if addresses.is_empty() {
                        return Err(format!("{name} resolved to no address"));
                    }
                    addresses[seq as usize % addresses.len()]
                }
            };
            let stream = std::net::TcpStream::from(netns.socket(libc::SOCK_STREAM)?);
            (TcpSocket::from_std_stream(stream), SocketAddr::new(ip.into(), *port))
        }
    };
    let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await {
        Err(_) => return Err(format!("connection to {addr} timed out after {} ms", CONNECT_TIMEOUT.as_millis())),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(format!("connection to {addr} refused"))
        }
        Ok(Err(err)) => return Err(format!("connection to {addr} failed: {err}")),
        Ok(Ok(stream)) => stream,
    };
    let request = format!("GET / HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: shoal-real\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    match tokio::time::timeout(ANSWER_TIMEOUT, stream.read_to_end(&mut answer)).await {
        Err(_) => return Err(format!("no answer within {} ms", ANSWER_TIMEOUT.as_millis())),
        Ok(Err(err)) => return Err(format!("connection failed before the answer: {err}")),
        Ok(Ok(_)) => {}
    }
    parse_answer(&answer)
}

/// The first line of the body of a `200` answer; anything else is a failure, in words.
fn parse_answer(answer: &[u8]) -> Result<String, String> {
    if answer.is_empty() {
        return Err("connection closed before the answer".into());
    }
    let text = String::from_utf8_lossy(answer);
    let status = text.lines().next().unwrap_or_default();
    if !(status.starts_with("HTTP/1.") && status.split_whitespace().nth(1) == Some("200")) {
        return Err(format!("answered {:?}", status.chars().take(80).collect::<String>()));
    }
    let (_, body) = text.split_once("\r\n\r\n").ok_or("connection closed before the answer's body")?;
    let first = body.lines().next().unwrap_or_default().trim();
    if first.is_empty() {
        return Err("an empty answer".into());
    }
    Ok(first.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_the_simulator_counts_them() {
        assert_eq!(
            parse_answer(b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\n0123456789ab\n"),
            Ok("0123456789ab".into())
        );
        assert_eq!(parse_answer(b""), Err("connection closed before the answer".into()));
        assert!(parse_answer(b"HTTP/1.0 404 Not Found\r\n\r\nno").unwrap_err().contains("404"));
        assert!(parse_answer(b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n").unwrap_err().contains("body"));
        assert!(parse_answer(b"garbage").is_err());
    }

    #[tokio::test]
    async fn a_client_records_answers_refusals_and_its_rate() {
        // A one-line HTTP server on loopback, answering "abc"; then nothing listening.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 512];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n\r\nabc\n").await;
                });
            }
        });
        let names = Names::default();
        names.0.lock().unwrap().insert("abc".into(), "web.1.t1".into());
        let route = Route { addr, source: None };
        assert_eq!(probe(&route, &names).await, Ok("web.1.t1".into()));
        let log = ClientLog::default();
        let spec = ClientSpec {
            name: "load1".into(),
            target: format!("manager-1:{}", addr.port()),
            from: "client".into(),
            rate: 50.0,
            keepalive: false,
            network: None,
        };
        let client = start(spec, Dial::Host(route), names.clone(), log.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.stop();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let records = log.of("load1");
        assert!((15..=30).contains(&records.len()), "{} requests in 0.5 s at 50/s", records.len());
        assert!(records.iter().all(|r| r.ok() && r.task_id() == Some("t1") && r.via == "manager-1"), "{records:?}");
        // A closed port is a refusal, in the words the `port … closed` expectation looks for.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let err = probe(&Route { addr: closed, source: None }, &names).await.unwrap_err();
        assert!(err.starts_with("connection to") && err.contains("refused"), "{err}");
    }
}
