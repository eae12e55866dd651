//! The real arm of the mesh seam: [`RealMeshNet`], service traffic on tokio sockets.
//!
//! - Published ports and service VIPs are plain TCP listeners and UDP sockets on this host. A port
//!   that is taken, an address that is not this host's, or a port below 1024 without the privilege
//!   is refused with the reason, in Docker's words where Docker has them ("port is already
//!   allocated").
//! - Connections to tasks are plain TCP with a deadline; a refusal is [`MeshError::Refused`] so the
//!   proxy can try the next backend at once.
//! - Tunnels to peer daemons are streams multiplexed ([`crate::mesh_mux`]) on one connection per
//!   peer: TCP to the peer's data address (`--data-path-addr`/`--data-path-port`), wrapped in the
//!   same [`Security`] as the swarm transport. Under mutual TLS both ends present their swarm
//!   certificates, so [`IncomingTunnel::peer_identity`] is the dialling node's id from its
//!   certificate, and a connection without a certificate of the swarm is dropped before the core
//!   sees any tunnel. Connections leave from the data address's IP, so that daemons sharing one host
//!   on different loopback addresses see each other's own address.
//! - Service VIPs are added to (and removed from) a bridge device as `ip/32` over rtnetlink; that
//!   needs `CAP_NET_ADMIN` (root), and says so when it is missing.
//!
//! Every stream has `TCP_NODELAY`: the proxy forwards small requests and must not add Nagle's delay.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shoal_core::env::mesh::{
    DatagramSocket, IncomingTunnel, MeshError, MeshNet, MeshStream, StreamListener, TunnelListener,
};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::mesh_mux::{self, PeerSessions};
use crate::net::{BoxStream, Security};

/// How long an accepted tunnel may take over its TLS handshake.
pub const TUNNEL_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many refused tunnels [`RealMeshNet::recent_tunnel_errors`] keeps.
const RECENT_ERRORS: usize = 64;

/// Service traffic on this host's sockets; tunnels under the swarm's [`Security`].
#[derive(Clone)]
pub struct RealMeshNet {
    inner: Arc<Inner>,
}

struct Inner {
    /// `ip:port` where this node accepts tunnels.
    data_addr: String,
    security: Security,
    /// Why incoming tunnels were dropped before the core saw them (handshake failures, no identity).
    errors: Mutex<VecDeque<String>>,
    /// One multiplexed connection per peer for outgoing tunnels.
    sessions: PeerSessions,
}

impl std::fmt::Debug for RealMeshNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealMeshNet")
            .field("data_addr", &self.inner.data_addr)
            .field("security", &self.inner.security)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RealMeshNet {
    /// A node whose tunnels are accepted on `data_addr` (`ip:port`) and protected by `security`
    /// (the swarm transport's: [`Security::Tls`] in the daemon, [`Security::Plain`] in tests).
    pub fn new(data_addr: impl Into<String>, security: Security) -> Self {
        RealMeshNet {
            inner: Arc::new(Inner {
                data_addr: data_addr.into(),
                security,
                errors: Mutex::new(VecDeque::new()),
                sessions: PeerSessions::default(),
            }),
        }
    }

    /// Where this node accepts tunnels.
    pub fn data_addr(&self) -> &str {
        &self.inner.data_addr
    }

    /// Why recent incoming tunnels were dropped before reaching the core, oldest first.
    pub fn recent_tunnel_errors(&self) -> Vec<String> {
        lock(&self.inner.errors).iter().cloned().collect()
    }

    /// The IP outgoing tunnels leave from: the data address's, unless it is unspecified.
    fn source_ip(&self) -> Option<IpAddr> {
        let addr: SocketAddr = self.inner.data_addr.parse().ok()?;
        Some(addr.ip()).filter(|ip| !ip.is_unspecified())
    }
}

fn record_error(inner: &Inner, reason: String) {
    let mut errors = lock(&inner.errors);
    if errors.len() == RECENT_ERRORS {
        errors.pop_front();
    }
    errors.push_back(reason);
}

/// `ip:port` as a socket address, or why not.
fn socket_addr(addr: &str) -> Result<SocketAddr, String> {
    addr.parse::<SocketAddr>().map_err(|_| format!("{addr:?} is not an ip:port address"))
}

/// Why a bind failed, in Docker's words where Docker has them.
pub fn bind_error_reason(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EADDRINUSE) => "port is already allocated (bind: address already in use)".into(),
        Some(libc::EACCES) => "bind: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)".into(),
        Some(libc::EADDRNOTAVAIL) => "bind: cannot assign requested address (it is not an address of this host)".into(),
        _ => format!("bind: {error}"),
    }
}

fn listen_error(addr: &str, error: &io::Error) -> MeshError {
    MeshError::Listen { addr: addr.to_string(), reason: bind_error_reason(error) }
}

/// A failed connect as the proxy needs it: refused (try the next backend) or something else.
fn connect_error(addr: &str, error: &io::Error) -> MeshError {
    match error.raw_os_error() {
        Some(libc::ECONNREFUSED) => MeshError::Refused { addr: addr.to_string(), reason: "connection refused".into() },
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => {
            MeshError::Refused { addr: addr.to_string(), reason: format!("unreachable: {error}") }
        }
        _ => MeshError::Io(format!("connecting to {addr}: {error}")),
    }
}

/// Connect to `addr` (from `source` if given), within `timeout`.
async fn dial(addr: &str, source: Option<IpAddr>, timeout: Duration) -> Result<TcpStream, MeshError> {
    let target = socket_addr(addr).map_err(|reason| MeshError::Refused { addr: addr.to_string(), reason })?;
    let connect = async {
        let socket = if target.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
            .map_err(|e| MeshError::Io(format!("connecting to {addr}: {e}")))?;
        if let Some(source) = source.filter(|ip| ip.is_ipv4() == target.is_ipv4()) {
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|e| MeshError::Io(format!("connecting to {addr} from {source}: {e}")))?;
        }
        let stream = socket.connect(target).await.map_err(|e| connect_error(addr, &e))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(result) => result,
        Err(_) => Err(MeshError::Timeout { addr: addr.to_string(), timeout_ms: timeout.as_millis() as u64 }),
    }
}

struct RealStreamListener {
    listener: TcpListener,
}

#[async_trait]
impl StreamListener for RealStreamListener {
    async fn accept(&mut self) -> io::Result<(MeshStream, String)> {
        let (stream, peer) = self.listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((Box::new(stream), peer.to_string()))
    }
}

struct RealDatagramSocket {
    socket: UdpSocket,
}

#[async_trait]
impl DatagramSocket for RealDatagramSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, String)> {
        let (len, from) = self.socket.recv_from(buf).await?;
        Ok((len, from.to_string()))
    }

    async fn send_to(&self, buf: &[u8], to: &str) -> io::Result<usize> {
        let to = socket_addr(to).map_err(|reason| io::Error::new(io::ErrorKind::InvalidInput, reason))?;
        self.socket.send_to(buf, to).await
    }
}

/// Tunnels that passed their connection's handshake, handed over by the accept loop; dropping this
/// stops it and closes every connection it serves.
struct RealTunnelListener {
    incoming: mpsc::UnboundedReceiver<io::Result<IncomingTunnel>>,
    accept_loop: JoinHandle<()>,
}

impl Drop for RealTunnelListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

#[async_trait]
impl TunnelListener for RealTunnelListener {
    async fn accept(&mut self) -> io::Result<IncomingTunnel> {
        match self.incoming.recv().await {
            Some(tunnel) => tunnel,
            None => Err(io::Error::new(io::ErrorKind::BrokenPipe, "the tunnel listener stopped")),
        }
    }
}

/// Accepts TCP connections on the data port, runs each handshake in its own task (a slow or
/// hostile peer never holds up the others), then serves the tunnels each connection carries.
async fn tunnel_accept_loop(
    listener: TcpListener,
    inner: Arc<Inner>,
    out: mpsc::UnboundedSender<io::Result<IncomingTunnel>>,
) {
    let mut handshakes = JoinSet::new();
    // Dropped with this task when the listener goes: every served connection closes with it.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    let _ = tcp.set_nodelay(true);
                    let inner = inner.clone();
                    handshakes.spawn(async move { (remote, handshake(tcp, &inner).await) });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    record_error(&inner, format!("accepting a tunnel failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = handshakes.join_next(), if !handshakes.is_empty() => {
                let Ok((remote, result)) = done else { continue };
                match result {
                    Ok((stream, identity, peer_addr)) => {
                        if out.is_closed() {
                            return;
                        }
                        connections.spawn(mesh_mux::serve_connection(stream, identity, peer_addr, out.clone()));
                    }
                    Err(reason) => record_error(&inner, format!("tunnel from {remote} refused: {reason}")),
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The server side of a connection's security; under mutual TLS a peer must prove a node identity.
async fn handshake(tcp: TcpStream, inner: &Inner) -> Result<(BoxStream, Option<String>, String), String> {
    let peer_addr = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let secured = tokio::time::timeout(TUNNEL_HANDSHAKE_TIMEOUT, inner.security.server(tcp))
        .await
        .map_err(|_| "no TLS handshake within the timeout".to_string())?
        .map_err(|e| format!("handshake failed: {e}"))?;
    let (stream, identity) = secured;
    if inner.security.authenticates() && identity.is_none() {
        return Err("a certificate of a node of this swarm is required".into());
    }
    Ok((stream, identity, peer_addr))
}

#[async_trait]
impl MeshNet for RealMeshNet {
    async fn listen_tcp(&self, addr: &str) -> Result<Box<dyn StreamListener>, MeshError> {
        let bind = socket_addr(addr).map_err(|reason| MeshError::Listen { addr: addr.to_string(), reason })?;
        let listener = TcpListener::bind(bind).await.map_err(|e| listen_error(addr, &e))?;
        Ok(Box::new(RealStreamListener { listener }))
    }

    async fn bind_udp(&self, addr: &str) -> Result<Arc<dyn DatagramSocket>, MeshError> {
        let bind = socket_addr(addr).map_err(|reason| MeshError::Listen { addr: addr.to_string(), reason })?;
        let socket = UdpSocket::bind(bind).await.map_err(|e| listen_error(addr, &e))?;
        Ok(Arc::new(RealDatagramSocket { socket }))
    }

    async fn connect_tcp(&self, addr: &str, timeout: Duration) -> Result<MeshStream, MeshError> {
        Ok(Box::new(dial(addr, None, timeout).await?))
    }

    async fn open_tunnel(&self, node_addr: &str, timeout: Duration) -> Result<MeshStream, MeshError> {
        let dial = || async {
            let tcp = dial(node_addr, self.source_ip(), timeout).await?;
            self.inner.security.client(tcp).await.map_err(|reason| MeshError::Refused {
                addr: node_addr.to_string(),
                reason: format!("TLS handshake failed: {reason}"),
            })
        };
        match tokio::time::timeout(timeout, self.inner.sessions.open(node_addr, dial)).await {
            Ok(result) => result,
            Err(_) => Err(MeshError::Timeout { addr: node_addr.to_string(), timeout_ms: timeout.as_millis() as u64 }),
        }
    }

    async fn listen_tunnels(&self) -> Result<Box<dyn TunnelListener>, MeshError> {
        let addr = &self.inner.data_addr;
        if matches!(self.inner.security, Security::Join(_)) {
            return Err(MeshError::Listen {
                addr: addr.clone(),
                reason: "a joining node's bootstrap security cannot accept tunnels".into(),
            });
        }
        let bind = socket_addr(addr).map_err(|reason| MeshError::Listen {
            addr: addr.clone(),
            reason: format!("the data path address: {reason}"),
        })?;
        let listener = TcpListener::bind(bind).await.map_err(|e| listen_error(addr, &e))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let accept_loop = tokio::spawn(tunnel_accept_loop(listener, self.inner.clone(), tx));
        Ok(Box::new(RealTunnelListener { incoming: rx, accept_loop }))
    }

    async fn add_local_address(&self, bridge: &str, ip: &str) -> Result<(), MeshError> {
        let ip: IpAddr = ip.parse().map_err(|_| MeshError::Io(format!("{ip:?} is not an IP address")))?;
        netlink::add_address(bridge, ip).await.map_err(MeshError::Io)
    }

    async fn remove_local_address(&self, bridge: &str, ip: &str) -> Result<(), MeshError> {
        let ip: IpAddr = ip.parse().map_err(|_| MeshError::Io(format!("{ip:?} is not an IP address")))?;
        netlink::remove_address(bridge, ip).await.map_err(MeshError::Io)
    }
}

/// Host addresses on bridge devices, as `ip addr add|del IP/32 dev BRIDGE` does it.
pub mod netlink {
    use std::net::IpAddr;

    use futures_util::TryStreamExt;
    use rtnetlink::Handle;

    fn full_prefix(ip: IpAddr) -> u8 {
        if ip.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// The kernel's errno in a netlink error, if it is one.
    fn errno(error: &rtnetlink::Error) -> Option<i32> {
        match error {
            rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
            _ => None,
        }
    }

    fn describe(what: &str, error: &rtnetlink::Error) -> String {
        match errno(error) {
            Some(libc::EPERM | libc::EACCES) => {
                format!("{what}: operation not permitted (configuring host addresses needs root or CAP_NET_ADMIN)")
            }
            Some(code) => format!("{what}: {}", std::io::Error::from_raw_os_error(code)),
            None => format!("{what}: {error}"),
        }
    }

    /// A netlink connection whose driver runs until the handle is dropped.
    fn connect() -> Result<Handle, String> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| format!("cannot open a netlink socket: {e}"))?;
        tokio::spawn(connection);
        Ok(handle)
    }

    /// The index of the link named `device`.
    async fn link_index(handle: &Handle, device: &str) -> Result<u32, String> {
        let mut links = handle.link().get().match_name(device.to_string()).execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(format!("no network device named {device:?}")),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Err(format!("no network device named {device:?}")),
            Err(e) => Err(describe(&format!("looking up the device {device:?}"), &e)),
        }
    }

    /// Add `ip` (as a host address, /32 or /128) to `device`; nothing to do if it is there already.
    pub async fn add_address(device: &str, ip: IpAddr) -> Result<(), String> {
        let handle = connect()?;
        let index = link_index(&handle, device).await?;
        match handle.address().add(index, ip, full_prefix(ip)).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(describe(&format!("adding {ip}/{} to {device}", full_prefix(ip)), &e)),
        }
    }

    /// Remove the host address `ip` from `device`; nothing to do if it is not there (or the device
    /// is gone, which took its addresses with it).
    pub async fn remove_address(device: &str, ip: IpAddr) -> Result<(), String> {
        let handle = connect()?;
        let index = match link_index(&handle, device).await {
            Ok(index) => index,
            Err(reason) if reason.starts_with("no network device") => return Ok(()),
            Err(reason) => return Err(reason),
        };
        let mut found = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(ip)
            .set_prefix_length_filter(full_prefix(ip))
            .execute();
        let what = format!("removing {ip}/{} from {device}", full_prefix(ip));
        let Some(message) = found.try_next().await.map_err(|e| describe(&what, &e))? else {
            return Ok(());
        };
        match handle.address().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL | libc::ENOENT)) => Ok(()),
            Err(e) => Err(describe(&what, &e)),
        }
    }

    /// The host addresses (/32 or /128) on `device`.
    pub async fn host_addresses(device: &str) -> Result<Vec<IpAddr>, String> {
        use rtnetlink::packet_route::address::AddressAttribute;
        let handle = connect()?;
        let index = link_index(&handle, device).await?;
        let mut messages = handle.address().get().set_link_index_filter(index).execute();
        let mut addresses = Vec::new();
        while let Some(message) = messages.try_next().await.map_err(|e| describe("listing addresses", &e))? {
            let prefix = message.header.prefix_len;
            for attribute in &message.attributes {
                if let AddressAttribute::Address(ip) = attribute {
                    if prefix == full_prefix(*ip) {
                        addresses.push(*ip);
                    }
                }
            }
        }
        addresses.sort();
        addresses.dedup();
        Ok(addresses)
    }
}
