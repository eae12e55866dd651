//! The transport seam: request/response calls between nodes, addressed by `host:port`.
//!
//! Messages are opaque bytes here; `core::rpc` gives them types. The simulator implements this with
//! in-process links that model delay, loss and (one-way) partitions; the daemon with TCP frames
//! (length-delimited, with timeouts and reconnects) under mutual TLS.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

/// Who a request came from, as far as the transport can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The remote socket address (or simulated address).
    pub addr: String,
    /// The identity the transport authenticated (the node id in the peer's certificate), if any.
    pub identity: Option<String>,
}

/// Serves the requests that arrive at a node.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Answer one request. Errors are encoded in the reply by the layer above.
    async fn handle(&self, peer: Peer, request: Vec<u8>) -> Vec<u8>;
}

/// Why a call did not return a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("no reply from {addr} within {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u64 },
    #[error("connection to {addr} closed before the reply arrived")]
    Closed { addr: String },
    #[error("garbled frame from {addr}: {reason}")]
    Frame { addr: String, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("refused by {addr}: {reason}")]
    Refused { addr: String, reason: String },
}

/// The network as the core sees it.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Send `request` to the node listening at `to` and wait at most `deadline` for its reply.
    async fn call(&self, to: &str, request: Vec<u8>, deadline: Duration) -> Result<Vec<u8>, TransportError>;

    /// Start accepting requests at this node's own address and hand each one to `handler`.
    /// Returns once the node is reachable; serving continues in the background until the node stops.
    async fn serve(&self, handler: Arc<dyn Handler>) -> Result<(), TransportError>;
}
