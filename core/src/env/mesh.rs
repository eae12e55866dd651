//! The mesh seam: service traffic, as the data plane (`crate::mesh`) moves it.
//!
//! The transport seam carries request/reply calls between daemons; this one carries the streams and
//! datagrams of the services themselves: a node listens on published ports and service VIPs, dials
//! its own tasks' containers, and opens *tunnels* to peer daemons to reach their tasks. The daemon
//! implements it with tokio sockets (tunnels under the swarm's mutual TLS); the simulator with
//! in-process streams over its simulated links, so partitions, loss and crashes reach service
//! traffic too.
//!
//! Addresses are `ip:port` strings in both worlds.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream of service traffic (a client connection, a connection to a task, a tunnel).
pub trait MeshIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> MeshIo for T {}

/// A boxed [`MeshIo`].
pub type MeshStream = Box<dyn MeshIo>;

/// Why a mesh operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    /// Nothing listens there, or the peer said no: the caller may try another backend at once.
    #[error("connection to {addr} refused: {reason}")]
    Refused { addr: String, reason: String },
    #[error("no connection to {addr} within {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u64 },
    /// The address is taken, not ours, or needs a privilege we lack.
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("{0}")]
    Io(String),
}

/// Accepts connections on one listening address. Dropping it closes the port.
#[async_trait]
pub trait StreamListener: Send + 'static {
    /// The next connection and the client's address.
    async fn accept(&mut self) -> io::Result<(MeshStream, String)>;
}

/// A bound UDP socket. Dropping the last handle closes the port.
#[async_trait]
pub trait DatagramSocket: Send + Sync + 'static {
    /// One datagram and who sent it.
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, String)>;
    async fn send_to(&self, buf: &[u8], to: &str) -> io::Result<usize>;
}

/// One tunnel a peer opened to this node. Its first frame (`crate::mesh::tunnel`) says what for.
pub struct IncomingTunnel {
    /// The peer's authenticated node id (mutual TLS), when the world has identities.
    pub peer_identity: Option<String>,
    pub peer_addr: String,
    pub stream: MeshStream,
}

/// Accepts the tunnels peers open to this node's data port.
#[async_trait]
pub trait TunnelListener: Send + 'static {
    async fn accept(&mut self) -> io::Result<IncomingTunnel>;
}

/// Service traffic as the core sees it.
#[async_trait]
pub trait MeshNet: Send + Sync + 'static {
    /// Listen for TCP connections on `addr` (a published port on this node's address, a VIP).
    async fn listen_tcp(&self, addr: &str) -> Result<Box<dyn StreamListener>, MeshError>;
    /// Bind a UDP socket on `addr`.
    async fn bind_udp(&self, addr: &str) -> Result<Arc<dyn DatagramSocket>, MeshError>;
    /// Connect to `addr` on this node (a task's container), within `timeout`.
    async fn connect_tcp(&self, addr: &str, timeout: Duration) -> Result<MeshStream, MeshError>;
    /// Open an authenticated stream to the peer daemon whose data address is `node_addr`
    /// (`crate::mesh::tunnel` speaks the tunnel protocol over it). Where tunnels share one
    /// connection per peer, the open is local: the peer sees the tunnel with its first frame, and a
    /// peer that is gone shows as an error or end of stream on the first read, not here.
    async fn open_tunnel(&self, node_addr: &str, timeout: Duration) -> Result<MeshStream, MeshError>;
    /// Accept tunnels on this node's data address.
    async fn listen_tunnels(&self) -> Result<Box<dyn TunnelListener>, MeshError>;
    /// Make `ip` an address of this host on the bridge `bridge` (a service VIP), so the proxy can
    /// listen on it; idempotent. The simulator has nothing to configure.
    async fn add_local_address(&self, bridge: &str, ip: &str) -> Result<(), MeshError>;
    /// Undo [`MeshNet::add_local_address`]; idempotent.
    async fn remove_local_address(&self, bridge: &str, ip: &str) -> Result<(), MeshError>;
}

/// A node with no service traffic: every listen and dial is refused. For the unit tests and
/// benchmarks of the control plane, whose nodes carry no traffic.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMesh;

fn no_mesh(addr: &str) -> MeshError {
    MeshError::Refused { addr: addr.to_string(), reason: "this node has no data plane".into() }
}

#[async_trait]
impl MeshNet for NoMesh {
    async fn listen_tcp(&self, addr: &str) -> Result<Box<dyn StreamListener>, MeshError> {
        Err(MeshError::Listen { addr: addr.to_string(), reason: "this node has no data plane".into() })
    }
    async fn bind_udp(&self, addr: &str) -> Result<Arc<dyn DatagramSocket>, MeshError> {
        Err(MeshError::Listen { addr: addr.to_string(), reason: "this node has no data plane".into() })
    }
    async fn connect_tcp(&self, addr: &str, _timeout: Duration) -> Result<MeshStream, MeshError> {
        Err(no_mesh(addr))
    }
    async fn open_tunnel(&self, node_addr: &str, _timeout: Duration) -> Result<MeshStream, MeshError> {
        Err(no_mesh(node_addr))
    }
    async fn listen_tunnels(&self) -> Result<Box<dyn TunnelListener>, MeshError> {
        Err(MeshError::Listen { addr: String::new(), reason: "this node has no data plane".into() })
    }
    async fn add_local_address(&self, _bridge: &str, _ip: &str) -> Result<(), MeshError> {
        Ok(())
    }
    async fn remove_local_address(&self, _bridge: &str, _ip: &str) -> Result<(), MeshError> {
        Ok(())
    }
}
