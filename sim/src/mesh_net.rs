//! The simulated arm of the mesh seam: service traffic (published ports, VIPs, tunnels between
//! daemons, connections to containers) as in-process byte streams over [`SimNet`]'s links.
//!
//! One [`SimMeshNet`] per cluster holds every listening TCP address and bound UDP socket, keyed by
//! `(host, ip:port)`, and every open connection. Each node gets a [`SimMesh`] bound to its host name
//! (its `MeshNet`); a simulated container's process listens through [`SimMeshNet::listen`] with its
//! own [`Owner`], so its ports live and die with the container, not with the daemon.
//!
//! How the network behaves (the rules of [`SimNet`]'s request/reply traffic, which models the
//! real transport's calls on an open connection; here connections are opened and closed too):
//! - **Reachability.** A dial is local when the dialing host has a listener on that address (a
//!   container on one of its bridges, its own published port, a VIP); otherwise it goes to the host
//!   named by the address (`worker-1:8080`). A container's bridge address is reachable only from its
//!   own host (Docker drops traffic between bridges, and other hosts have no route): dialing it from
//!   elsewhere is refused ("no route to host"). A listener on `0.0.0.0:port` answers for the host's
//!   own name and its local addresses.
//! - **Namespaces.** A port is taken as the kernel says within the host's network namespace (the
//!   same address, or the same port where either side is `0.0.0.0`); a container on a bridge has a
//!   namespace of its own ([`SimMeshNet::listen_in`]), so its ports clash with nothing of the host's.
//! - **Refused.** Nothing listens there, the host is down (crashed: its listeners are gone), or the
//!   listener's accept loop has died (its receiver dropped): [`MeshError::Refused`] at once.
//! - **Cut or lossy links.** A connection attempt across a cut link, or one whose SYN is lost (with
//!   the link's loss probability, from the seeded rng), is retried as TCP retransmits its SYN (1 s,
//!   2 s, 4 s, …) until it gets through or the caller's deadline passes ([`MeshError::Timeout`]).
//!   On an open connection every write is delayed by the link's delay; a lost segment costs a
//!   200 ms retransmission; bytes due across a cut link wait (re-checked every 200 ms) until it heals.
//!   Traffic within one host has no delay.
//! - **Crashes.** [`SimMeshNet::host_down`] (the cluster calls it when a host crashes) removes every
//!   listener on the host and resets every connection with an end there; [`SimMeshNet::owner_down`]
//!   does it for one daemon (a restart) or one container (killed). A reset connection fails reads and
//!   writes with `ConnectionReset` on both ends. A stream dropped without a crash closes gracefully:
//!   the peer reads EOF once the bytes in flight are delivered, and its writes fail (`BrokenPipe`).
//! - **Tunnels** are TCP connections to the peer's data address (`host:4789`). Simulated peers are not
//!   authenticated, so [`IncomingTunnel::peer_identity`] is `None`.
//! - **Local addresses.** [`MeshNet::add_local_address`] configures nothing (there is no host network
//!   to configure); it records the address so a `0.0.0.0` listener answers for it too.
//!
//! Everything is ordered (`BTreeMap`s), timed on the runtime's clock and random only through the
//! seeded rng, so a run replays bit for bit.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use shoal_core::env::mesh::{DatagramSocket, IncomingTunnel, StreamListener, TunnelListener};
use shoal_core::env::{runtime, MeshError, MeshNet, MeshStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use crate::net::{host_of, SimNet, Verdict};

/// The data-plane port of every simulated node (Swarm's `--data-path-port` default).
pub const DATA_PORT: u16 = 4789;

/// How long a lost or cut segment waits before it is tried again (TCP's minimum RTO).
const RETRANSMIT: Duration = crate::net::RTO_MIN;

/// The first SYN retransmission; it doubles after each.
const SYN_RETRY: Duration = Duration::from_secs(1);

/// The first ephemeral port handed out per host.
const EPHEMERAL_START: u16 = 49152;

/// Who holds a listener or a connection's end: a host's daemon (`container: None`; the supervisor's
/// `client` host counts as one) or one container on a host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub host: String,
    pub container: Option<String>,
}

impl Owner {
    pub fn daemon(host: impl Into<String>) -> Owner {
        Owner { host: host.into(), container: None }
    }

    pub fn container(host: impl Into<String>, id: impl Into<String>) -> Owner {
        Owner { host: host.into(), container: Some(id.into()) }
    }
}

/// A connection handed to a listener.
struct Accepted {
    stream: SimStream,
    peer_addr: String,
}

struct TcpEntry {
    id: u64,
    owner: Owner,
    /// Bound in the container's own network namespace (a bridge address), not the host's.
    own_netns: bool,
    tx: mpsc::UnboundedSender<Accepted>,
}

struct UdpEntry {
    id: u64,
    owner: Owner,
    own_netns: bool,
    tx: mpsc::UnboundedSender<(Vec<u8>, String)>,
}

#[derive(Default)]
struct MeshState {
    tcp: BTreeMap<(String, String), TcpEntry>,
    udp: BTreeMap<(String, String), UdpEntry>,
    conns: BTreeMap<u64, Weak<Conn>>,
    /// Addresses a host has on its bridges besides its name ([`MeshNet::add_local_address`]).
    local: BTreeSet<(String, String)>,
    next_port: BTreeMap<String, u16>,
    next_id: u64,
}

impl MeshState {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn ephemeral(&mut self, host: &str) -> u16 {
        let port = self.next_port.entry(host.to_string()).or_insert(EPHEMERAL_START);
        let this = *port;
        *port = if *port == u16::MAX { EPHEMERAL_START } else { *port + 1 };
        this
    }

    /// Whether `ip` is one of `host`'s own addresses (for `0.0.0.0` listeners).
    fn is_own(&self, host: &str, ip: &str) -> bool {
        ip == host || ip == "127.0.0.1" || ip == "localhost" || self.local.contains(&(host.to_string(), ip.to_string()))
    }

    /// The key a connection to `addr` on `host` reaches: the exact address, or a wildcard listener.
    fn tcp_key(&self, host: &str, addr: &str) -> Option<(String, String)> {
        let exact = (host.to_string(), addr.to_string());
        if self.tcp.contains_key(&exact) {
            return Some(exact);
        }
        let (ip, port) = addr.rsplit_once(':')?;
        let wild = (host.to_string(), format!("0.0.0.0:{port}"));
        (self.is_own(host, ip) && self.tcp.contains_key(&wild)).then_some(wild)
    }

    fn udp_key(&self, host: &str, addr: &str) -> Option<(String, String)> {
        let exact = (host.to_string(), addr.to_string());
        if self.udp.contains_key(&exact) {
            return Some(exact);
        }
        let (ip, port) = addr.rsplit_once(':')?;
        let wild = (host.to_string(), format!("0.0.0.0:{port}"));
        (self.is_own(host, ip) && self.udp.contains_key(&wild)).then_some(wild)
    }

    /// Whether `addr` on `host` clashes with a live TCP listener (or UDP socket): the same address,
    /// or — within the host's network namespace — the same port where either side is `0.0.0.0`, as
    /// the kernel refuses. A container on a bridge has a namespace of its own.
    fn taken(&self, host: &str, addr: &str, udp: bool, own_netns: bool) -> bool {
        let Some((ip, port)) = addr.rsplit_once(':') else { return false };
        let clash = |(h, a): &(String, String), closed: bool, other_own: bool| {
            h == host
                && !closed
                && (a == addr
                    || (!own_netns
                        && !other_own
                        && a.rsplit_once(':').is_some_and(|(other_ip, other_port)| {
                            other_port == port && (other_ip == ip || other_ip == "0.0.0.0" || ip == "0.0.0.0")
                        })))
        };
        if udp {
            self.udp.iter().any(|(k, e)| clash(k, e.tx.is_closed(), e.own_netns))
        } else {
            self.tcp.iter().any(|(k, e)| clash(k, e.tx.is_closed(), e.own_netns))
        }
    }

    /// Which host a dial from `from` to `addr` goes to: `from` itself when it has a listener there,
    /// else the host the address names.
    fn route(&self, from: &str, addr: &str, udp: bool) -> String {
        let local = if udp { self.udp_key(from, addr).is_some() } else { self.tcp_key(from, addr).is_some() };
        if local || self.is_own(from, host_of(addr)) {
            from.to_string()
        } else {
            host_of(addr).to_string()
        }
    }

    /// Live connections with an end held by someone `matches` accepts.
    fn conns_of(&mut self, matches: impl Fn(&Owner) -> bool) -> Vec<Arc<Conn>> {
        self.conns.retain(|_, c| c.strong_count() > 0);
        self.conns.values().filter_map(Weak::upgrade).filter(|c| c.owners.iter().any(&matches)).collect()
    }
}

/// The service traffic of one simulated cluster.
#[derive(Clone)]
pub struct SimMeshNet {
    net: SimNet,
    state: Arc<Mutex<MeshState>>,
}

impl std::fmt::Debug for SimMeshNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimMeshNet").finish_non_exhaustive()
    }
}

fn refused(addr: &str, reason: &str) -> MeshError {
    MeshError::Refused { addr: addr.to_string(), reason: reason.to_string() }
}

impl SimMeshNet {
    /// Service traffic over `net`'s links (and its cuts, delays and loss).
    pub fn new(net: SimNet) -> Self {
        SimMeshNet { net, state: Arc::new(Mutex::new(MeshState::default())) }
    }

    /// The node `host`'s end of the mesh (its `MeshNet`).
    pub fn node(&self, host: impl Into<String>) -> SimMesh {
        SimMesh { mesh: self.clone(), host: host.into() }
    }

    fn with<R>(&self, f: impl FnOnce(&mut MeshState) -> R) -> R {
        f(&mut self.state.lock().expect("sim mesh lock"))
    }

    /// Listen for TCP connections on `addr` of `owner`'s host, in the host's network namespace.
    /// Taken addresses are refused, as by the kernel (`address already in use`); a listener whose
    /// accept side was dropped frees it.
    pub fn listen(&self, owner: Owner, addr: &str) -> Result<SimListener, MeshError> {
        self.listen_in(owner, addr, false)
    }

    /// [`SimMeshNet::listen`], in the owner's own network namespace when `own_netns` (a container
    /// on a bridge: its address clashes with nothing of the host's).
    pub fn listen_in(&self, owner: Owner, addr: &str, own_netns: bool) -> Result<SimListener, MeshError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let key = (owner.host.clone(), addr.to_string());
        let id = self.with(|state| {
            if state.taken(&key.0, addr, false, own_netns) {
                return Err(MeshError::Listen { addr: addr.to_string(), reason: "address already in use".into() });
            }
            let id = state.id();
            state.tcp.insert(key.clone(), TcpEntry { id, owner, own_netns, tx });
            Ok(id)
        })?;
        Ok(SimListener { mesh: self.clone(), key, id, rx })
    }

    /// Bind a UDP socket on `addr` of `owner`'s host (`…:0` picks an ephemeral port).
    pub fn bind(&self, owner: Owner, addr: &str) -> Result<SimUdpSocket, MeshError> {
        self.bind_in(owner, addr, false)
    }

    /// [`SimMeshNet::bind`], in the owner's own network namespace when `own_netns`.
    pub fn bind_in(&self, owner: Owner, addr: &str, own_netns: bool) -> Result<SimUdpSocket, MeshError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (key, id) = self.with(|state| {
            let addr = match addr.strip_suffix(":0") {
                Some(ip) => format!("{ip}:{}", state.ephemeral(&owner.host)),
                None => addr.to_string(),
            };
            let key = (owner.host.clone(), addr.clone());
            if state.taken(&key.0, &addr, true, own_netns) {
                return Err(MeshError::Listen { addr, reason: "address already in use".into() });
            }
            let id = state.id();
            state.udp.insert(key.clone(), UdpEntry { id, owner: owner.clone(), own_netns, tx });
            Ok((key, id))
        })?;
        Ok(SimUdpSocket { mesh: self.clone(), owner, key, id, rx: tokio::sync::Mutex::new(rx) })
    }

    /// Open a TCP connection from `from` to `addr` within `timeout` (see the module doc for what
    /// refuses and what times out).
    pub async fn dial(&self, from: &Owner, addr: &str, timeout: Duration) -> Result<SimStream, MeshError> {
        match runtime::timeout(timeout, self.dial_now(from, addr)).await {
            Ok(result) => result,
            Err(_) => Err(MeshError::Timeout { addr: addr.to_string(), timeout_ms: timeout.as_millis() as u64 }),
        }
    }

    async fn dial_now(&self, from: &Owner, addr: &str) -> Result<SimStream, MeshError> {
        if !addr.contains(':') {
            return Err(MeshError::Io(format!("invalid address {addr:?}: expected ip:port")));
        }
        let to_host = self.with(|state| state.route(&from.host, addr, false));
        if to_host != from.host {
            // The SYN: retransmitted while the link is cut or drops it.
            let mut backoff = SYN_RETRY;
            loop {
                match self.net.verdict(&from.host, &to_host) {
                    Verdict::Deliver(delay) => {
                        runtime::sleep(delay).await;
                        break;
                    }
                    Verdict::Cut | Verdict::Lost => {
                        runtime::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
            }
        }
        let (client, server, peer_addr) = self.with(|state| {
            let key = state.tcp_key(&to_host, addr).ok_or_else(|| {
                // Simulated hosts are named; an IP that is not the dialler's own is another host's
                // bridge address, which no other host can route to.
                if to_host != from.host && to_host.parse::<std::net::Ipv4Addr>().is_ok() {
                    refused(addr, "no route to host")
                } else {
                    refused(addr, "connection refused")
                }
            })?;
            let entry = state.tcp.get(&key).expect("key exists");
            let listener_owner = entry.owner.clone();
            let tx = entry.tx.clone();
            let port = state.ephemeral(&from.host);
            let id = state.id();
            let conn = Arc::new(Conn {
                id,
                net: self.net.clone(),
                hosts: [from.host.clone(), to_host.clone()],
                owners: [from.clone(), listener_owner],
                wire: Mutex::new(Wire::default()),
            });
            state.conns.insert(id, Arc::downgrade(&conn));
            let client = SimStream::new(conn.clone(), 0);
            let server = SimStream::new(conn, 1);
            Ok::<_, MeshError>((client, server, (tx, format!("{}:{port}", from.host))))
        })?;
        let (tx, peer_addr) = peer_addr;
        if tx.send(Accepted { stream: server, peer_addr }).is_err() {
            return Err(refused(addr, "connection refused"));
        }
        if to_host != from.host {
            // The SYN-ACK.
            if let Verdict::Deliver(delay) = self.net.verdict(&to_host, &from.host) {
                runtime::sleep(delay).await;
            }
        }
        Ok(client)
    }

    /// Send one datagram from `from_addr` (on `from`'s host) to `to`. Lost, cut or unheard
    /// datagrams vanish, as UDP's do.
    fn send_datagram(&self, from: &Owner, from_addr: &str, to: &str, data: Vec<u8>) {
        let to_host = self.with(|state| state.route(&from.host, to, true));
        let deliver = {
            let mesh = self.clone();
            let (to_host, to, from_addr) = (to_host.clone(), to.to_string(), from_addr.to_string());
            move || {
                mesh.with(|state| {
                    if let Some(key) = state.udp_key(&to_host, &to) {
                        let _ = state.udp[&key].tx.send((data, from_addr));
                    }
                })
            }
        };
        if to_host == from.host {
            deliver();
            return;
        }
        if let Verdict::Deliver(delay) = self.net.verdict(&from.host, &to_host) {
            runtime::spawn(async move {
                runtime::sleep(delay).await;
                deliver();
            });
        }
    }

    /// Everything `owner` held is gone (a daemon restarted, a container was killed): its listeners
    /// and sockets close and its connections are reset.
    pub fn owner_down(&self, owner: &Owner) {
        self.close_where(|o| o == owner)
    }

    /// The host crashed: every listener, socket and connection end on it (daemon and containers).
    pub fn host_down(&self, host: &str) {
        self.close_where(|o| o.host == host)
    }

    fn close_where(&self, matches: impl Fn(&Owner) -> bool) {
        let conns = self.with(|state| {
            state.tcp.retain(|_, e| !matches(&e.owner));
            state.udp.retain(|_, e| !matches(&e.owner));
            state.conns_of(&matches)
        });
        for conn in conns {
            // A connection its owner already closed ended with a FIN; the others are reset.
            let open_end = (0..2).any(|side| matches(&conn.owners[side]) && !conn.lock().pipes[side].closed);
            if open_end {
                conn.reset();
            }
        }
    }
}

/// One node's service traffic: the [`MeshNet`] the simulator hands its node.
#[derive(Clone, Debug)]
pub struct SimMesh {
    mesh: SimMeshNet,
    host: String,
}

impl SimMesh {
    /// This node's data address (`host:4789`).
    pub fn data_addr(&self) -> String {
        format!("{}:{DATA_PORT}", self.host)
    }

    fn owner(&self) -> Owner {
        Owner::daemon(self.host.clone())
    }
}

#[async_trait]
impl MeshNet for SimMesh {
    async fn listen_tcp(&self, addr: &str) -> Result<Box<dyn StreamListener>, MeshError> {
        Ok(Box::new(self.mesh.listen(self.owner(), addr)?))
    }

    async fn bind_udp(&self, addr: &str) -> Result<Arc<dyn DatagramSocket>, MeshError> {
        Ok(Arc::new(self.mesh.bind(self.owner(), addr)?))
    }

    async fn connect_tcp(&self, addr: &str, timeout: Duration) -> Result<MeshStream, MeshError> {
        Ok(Box::new(self.mesh.dial(&self.owner(), addr, timeout).await?))
    }

    async fn open_tunnel(&self, node_addr: &str, timeout: Duration) -> Result<MeshStream, MeshError> {
        Ok(Box::new(self.mesh.dial(&self.owner(), node_addr, timeout).await?))
    }

    async fn listen_tunnels(&self) -> Result<Box<dyn TunnelListener>, MeshError> {
        Ok(Box::new(SimTunnelListener(self.mesh.listen(self.owner(), &self.data_addr())?)))
    }

    /// Nothing to configure in the simulator; the address is remembered so `0.0.0.0` listeners
    /// answer for it.
    async fn add_local_address(&self, _bridge: &str, ip: &str) -> Result<(), MeshError> {
        self.mesh.with(|state| state.local.insert((self.host.clone(), ip.to_string())));
        Ok(())
    }

    async fn remove_local_address(&self, _bridge: &str, ip: &str) -> Result<(), MeshError> {
        self.mesh.with(|state| state.local.remove(&(self.host.clone(), ip.to_string())));
        Ok(())
    }
}

/// A listening TCP address. Dropping it frees the address.
pub struct SimListener {
    mesh: SimMeshNet,
    key: (String, String),
    id: u64,
    rx: mpsc::UnboundedReceiver<Accepted>,
}

impl SimListener {
    /// The next connection and the client's address; an error once the listener was closed (its
    /// owner went down).
    pub async fn accept_stream(&mut self) -> io::Result<(SimStream, String)> {
        match self.rx.recv().await {
            Some(accepted) => Ok((accepted.stream, accepted.peer_addr)),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, format!("listener on {} closed", self.key.1))),
        }
    }
}

impl Drop for SimListener {
    fn drop(&mut self) {
        let (key, id) = (self.key.clone(), self.id);
        self.mesh.with(|state| {
            if state.tcp.get(&key).is_some_and(|e| e.id == id) {
                state.tcp.remove(&key);
            }
        });
    }
}

#[async_trait]
impl StreamListener for SimListener {
    async fn accept(&mut self) -> io::Result<(MeshStream, String)> {
        let (stream, peer) = self.accept_stream().await?;
        Ok((Box::new(stream), peer))
    }
}

struct SimTunnelListener(SimListener);

#[async_trait]
impl TunnelListener for SimTunnelListener {
    async fn accept(&mut self) -> io::Result<IncomingTunnel> {
        let (stream, peer_addr) = self.0.accept_stream().await?;
        Ok(IncomingTunnel { peer_identity: None, peer_addr, stream: Box::new(stream) })
    }
}

/// A bound UDP socket. Dropping it frees the address.
pub struct SimUdpSocket {
    mesh: SimMeshNet,
    owner: Owner,
    key: (String, String),
    id: u64,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<(Vec<u8>, String)>>,
}

impl Drop for SimUdpSocket {
    fn drop(&mut self) {
        let (key, id) = (self.key.clone(), self.id);
        self.mesh.with(|state| {
            if state.udp.get(&key).is_some_and(|e| e.id == id) {
                state.udp.remove(&key);
            }
        });
    }
}

#[async_trait]
impl DatagramSocket for SimUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, String)> {
        let (data, from) = self
            .rx
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, format!("socket {} closed", self.key.1)))?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok((n, from))
    }

    async fn send_to(&self, buf: &[u8], to: &str) -> io::Result<usize> {
        let from_addr = match self.key.1.strip_prefix("0.0.0.0:") {
            Some(port) => format!("{}:{port}", self.owner.host),
            None => self.key.1.clone(),
        };
        self.mesh.send_datagram(&self.owner, &from_addr, to, buf.to_vec());
        Ok(buf.len())
    }
}

/// Bytes on their way, due at `at`.
struct Chunk {
    at: runtime::Instant,
    data: Vec<u8>,
    read: usize,
}

/// One direction of a connection: what one side wrote, queued for the other.
#[derive(Default)]
struct Pipe {
    chunks: VecDeque<Chunk>,
    /// The writer closed: EOF follows the queued bytes.
    closed: bool,
    /// When the EOF is due (`None`: as soon as the queued bytes are read).
    fin_at: Option<runtime::Instant>,
    /// When the last byte or FIN is due (deliveries keep their order).
    last_at: Option<runtime::Instant>,
    /// The reader is gone: writes fail.
    reader_gone: bool,
    waker: Option<Waker>,
}

impl Pipe {
    fn due(&mut self, at: runtime::Instant) -> runtime::Instant {
        let at = self.last_at.map_or(at, |last| last.max(at));
        self.last_at = Some(at);
        at
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// Both directions of a connection and whether it was reset.
#[derive(Default)]
struct Wire {
    /// `pipes[i]` carries what side `i` writes.
    pipes: [Pipe; 2],
    reset: bool,
}

/// One TCP connection: side 0 dialed, side 1 accepted.
struct Conn {
    id: u64,
    net: SimNet,
    hosts: [String; 2],
    owners: [Owner; 2],
    wire: Mutex<Wire>,
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, Wire> {
        self.wire.lock().expect("sim connection lock")
    }

    /// How long bytes written by `side` take to reach the other side now.
    fn transit(&self, side: usize) -> Duration {
        let (from, to) = (&self.hosts[side], &self.hosts[1 - side]);
        if from == to {
            return Duration::ZERO;
        }
        let mut extra = Duration::ZERO;
        for _ in 0..6 {
            match self.net.verdict(from, to) {
                Verdict::Deliver(delay) => return delay + extra,
                // A cut is checked again when the bytes are due (they wait for the heal).
                Verdict::Cut => return extra,
                Verdict::Lost => extra += RETRANSMIT,
            }
        }
        extra
    }

    fn reset(&self) {
        let mut wire = self.lock();
        wire.reset = true;
        for pipe in wire.pipes.iter_mut() {
            pipe.chunks.clear();
            pipe.wake();
        }
    }
}

/// One end of a simulated TCP connection.
pub struct SimStream {
    conn: Arc<Conn>,
    side: usize,
    /// The timer for the next due delivery, and when it fires.
    timer: Option<(runtime::Instant, runtime::Sleep)>,
}

impl SimStream {
    fn new(conn: Arc<Conn>, side: usize) -> Self {
        SimStream { conn, side, timer: None }
    }

    fn reset_error() -> io::Error {
        io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer")
    }
}

impl std::fmt::Debug for SimStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStream").field("conn", &self.conn.id).field("side", &self.side).finish()
    }
}

impl AsyncRead for SimStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let (writer, reader) = (1 - this.side, this.side);
        let cross = this.conn.hosts[writer] != this.conn.hosts[reader];
        loop {
            let now = runtime::now();
            let mut wire = this.conn.lock();
            if wire.reset {
                return Poll::Ready(Err(Self::reset_error()));
            }
            let pipe = &mut wire.pipes[writer];
            let due = match pipe.chunks.front() {
                Some(chunk) => Some(chunk.at),
                None if pipe.closed => Some(pipe.fin_at.unwrap_or(now)),
                None => None,
            };
            let Some(at) = due else {
                pipe.waker = Some(cx.waker().clone());
                return Poll::Pending;
            };
            if at <= now {
                if cross && this.conn.net.is_cut(&this.conn.hosts[writer], &this.conn.hosts[reader]) {
                    // Retransmitted until the link heals.
                    let later = now + RETRANSMIT;
                    match pipe.chunks.front_mut() {
                        Some(front) => front.at = later,
                        None => pipe.fin_at = Some(later),
                    }
                    continue;
                }
                let Some(front) = pipe.chunks.front_mut() else {
                    return Poll::Ready(Ok(())); // EOF
                };
                let n = (front.data.len() - front.read).min(buf.remaining());
                buf.put_slice(&front.data[front.read..front.read + n]);
                front.read += n;
                if front.read == front.data.len() {
                    pipe.chunks.pop_front();
                }
                return Poll::Ready(Ok(()));
            }
            pipe.waker = Some(cx.waker().clone());
            drop(wire);
            if this.timer.as_ref().is_none_or(|(when, _)| *when != at) {
                this.timer = Some((at, runtime::sleep(at - now)));
            }
            let (_, sleep) = this.timer.as_mut().expect("timer set");
            match Pin::new(sleep).poll(cx) {
                Poll::Ready(()) => {
                    this.timer = None;
                    continue;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let transit = self.conn.transit(self.side);
        let now = runtime::now();
        let mut wire = self.conn.lock();
        if wire.reset {
            return Poll::Ready(Err(Self::reset_error()));
        }
        let pipe = &mut wire.pipes[self.side];
        if pipe.reader_gone || pipe.closed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "broken pipe")));
        }
        let at = pipe.due(now + transit);
        pipe.chunks.push_back(Chunk { at, data: buf.to_vec(), read: 0 });
        pipe.wake();
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let transit = self.conn.transit(self.side);
        let now = runtime::now();
        let mut wire = self.conn.lock();
        let pipe = &mut wire.pipes[self.side];
        if !pipe.closed {
            pipe.closed = true;
            pipe.fin_at = Some(pipe.due(now + transit));
            pipe.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for SimStream {
    /// A close: EOF after what was written (no clock or rng here: drops also happen while a killed
    /// node's tasks are torn down), and the peer's writes fail from now on.
    fn drop(&mut self) {
        let mut wire = self.conn.lock();
        let mine = &mut wire.pipes[self.side];
        if !mine.closed {
            mine.closed = true;
            mine.fin_at = mine.last_at;
            mine.wake();
        }
        let theirs = &mut wire.pipes[1 - self.side];
        theirs.reader_gone = true;
        theirs.chunks.clear();
        theirs.wake();
    }
}
