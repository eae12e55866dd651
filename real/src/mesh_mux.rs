//! Tunnels multiplexed on one secured connection per peer (DESIGN §8, "Node to node").
//!
//! A tunnel used to be a TCP connection and a TLS handshake of its own: on a workload of short
//! client connections that handshake was most of the cost of crossing nodes. Now each pair of
//! daemons keeps one connection per direction — TCP, then the swarm's [`Security`] (mutual TLS in a
//! daemon), then [yamux](https://github.com/hashicorp/yamux/blob/master/spec.md) streams on it (the
//! `yamux` crate of rust-libp2p: per-stream flow control driven by the connection, so a stream that
//! only writes, or writes after its peer's half-close, still gets its window back) — and a tunnel
//! is one yamux stream: opening one costs a frame, not a handshake. The peer's identity is proved once per connection and stamped on every stream it
//! carries.
//!
//! A connection whose peer went silent must not swallow new tunnels until TCP gives up on it
//! (minutes): [`PeerSessions`] remembers when it last read anything from each connection and
//! when a tunnel was opened on it without an answer since. A connection that has kept a tunnel
//! waiting for [`SILENT_PEER`] is dropped, and the next tunnel dials afresh — so after a partition or
//! a peer's restart at most the tunnels opened in that window wait out their verdict deadline, as
//! they would have on connections of their own.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use shoal_core::env::mesh::{IncomingTunnel, MeshError, MeshStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
use yamux::{Connection, ConnectionError, Mode};

use crate::net::BoxStream;

/// How long a connection may leave a freshly opened tunnel unanswered before new tunnels stop
/// using it. Above a healthy peer's verdict time under load, below the proxy's backend deadline
/// plus a retry.
pub const SILENT_PEER: Duration = Duration::from_secs(2);

/// Streams one connection may carry at once (yamux's default is 512; a busy ingress node can have
/// more client connections than that in flight to one peer).
const MAX_STREAMS: usize = 8192;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn yamux_config() -> yamux::Config {
    let mut config = yamux::Config::default();
    // Each stream keeps yamux's 256 KiB starting window; the cap only bounds auto-tuning.
    config.set_max_connection_receive_window(Some(MAX_STREAMS * 256 * 1024));
    config.set_max_num_streams(MAX_STREAMS);
    config
}

/// A yamux stream as the core's byte stream.
fn mesh_stream(stream: yamux::Stream) -> MeshStream {
    Box::new(stream.compat())
}

/// When a connection last showed its peer alive, and whether a tunnel is waiting on it.
#[derive(Debug)]
struct Liveness {
    /// Set when a tunnel is opened while none is waiting; cleared by any byte from the peer.
    waiting_since: Option<Instant>,
    /// The connection's driver ended (the peer closed it, or it failed).
    closed: bool,
}

/// A stream that clears [`Liveness::waiting_since`] whenever it reads something.
struct Watched {
    inner: BoxStream,
    liveness: Arc<Mutex<Liveness>>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = self.inner.as_mut().poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            lock(&self.liveness).waiting_since = None;
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.inner.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.as_mut().poll_shutdown(cx)
    }
}

/// A request to open a stream, answered by the connection's driver.
type OpenRequest = oneshot::Sender<Result<yamux::Stream, ConnectionError>>;

/// One outgoing connection to a peer and the task that drives it.
struct PeerSession {
    opens: mpsc::UnboundedSender<OpenRequest>,
    liveness: Arc<Mutex<Liveness>>,
    driver: JoinHandle<()>,
}

impl Drop for PeerSession {
    fn drop(&mut self) {
        // Dropping the session closes the connection; tunnels still open on it end with it.
        self.driver.abort();
    }
}

/// Drive a client connection: its I/O, and the streams asked for on `opens`, one at a time (yamux
/// may hold an open back while the peer has too many unacknowledged streams).
async fn drive_client(mut connection: Connection<Compat<Watched>>, mut opens: mpsc::UnboundedReceiver<OpenRequest>) {
    let mut waiting: Option<OpenRequest> = None;
    std::future::poll_fn(|cx| loop {
        match connection.poll_next_inbound(cx) {
            // A client serves no streams; the peer has no business opening one.
            Poll::Ready(Some(Ok(_unexpected))) => continue,
            Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
            Poll::Pending => {}
        }
        if waiting.is_none() {
            match opens.poll_recv(cx) {
                Poll::Ready(Some(request)) => waiting = Some(request),
                // Nobody can ask for streams any more (the session was dropped).
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        match connection.poll_new_outbound(cx) {
            Poll::Ready(result) => {
                if let Some(request) = waiting.take() {
                    let _ = request.send(result);
                }
            }
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

impl PeerSession {
    /// Run yamux's client side over `secured`.
    fn start(secured: BoxStream) -> Self {
        let liveness = Arc::new(Mutex::new(Liveness { waiting_since: None, closed: false }));
        let watched = Watched { inner: secured, liveness: liveness.clone() };
        let connection = Connection::new(watched.compat(), yamux_config(), Mode::Client);
        let (opens, requests) = mpsc::unbounded_channel();
        let driver_liveness = liveness.clone();
        let driver = tokio::spawn(async move {
            drive_client(connection, requests).await;
            lock(&driver_liveness).closed = true;
        });
        PeerSession { opens, liveness, driver }
    }

    /// Whether new tunnels may use this connection; marks that one is about to wait on it.
    fn take_for_new_tunnel(&self, now: Instant) -> bool {
        let mut liveness = lock(&self.liveness);
        if liveness.closed {
            return false;
        }
        match liveness.waiting_since {
            Some(since) if now.duration_since(since) > SILENT_PEER => false,
            Some(_) => true,
            None => {
                liveness.waiting_since = Some(now);
                true
            }
        }
    }
}

/// The outgoing connections of one node, a slot per peer data address. A slot's async lock makes
/// concurrent first tunnels to a peer share one dial.
#[derive(Default)]
pub struct PeerSessions {
    slots: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<Option<PeerSession>>>>>,
}

impl PeerSessions {
    /// Open a tunnel (a new stream) to the peer at `node_addr`, dialling a connection with `dial`
    /// when there is no usable one. The caller bounds the whole call with its deadline.
    pub async fn open<F, Fut>(&self, node_addr: &str, dial: F) -> Result<MeshStream, MeshError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<BoxStream, MeshError>>,
    {
        let slot = lock(&self.slots).entry(node_addr.to_string()).or_default().clone();
        // A request the driver never receives (its connection gone) is dropped, which the answer
        // reports as a closed connection.
        let (request, answer) = oneshot::channel();
        {
            let mut session = slot.lock().await;
            let usable = session.as_ref().is_some_and(|s| s.take_for_new_tunnel(Instant::now()));
            if !usable {
                let fresh = PeerSession::start(dial().await?);
                fresh.take_for_new_tunnel(Instant::now());
                *session = Some(fresh);
            }
            if let Some(session) = session.as_ref() {
                let _ = session.opens.send(request);
            }
        }
        let opened = match answer.await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("the connection closed".to_string()),
        };
        match opened {
            Ok(stream) => Ok(mesh_stream(stream)),
            Err(reason) => {
                // The connection ended between the check and the open: forget it, so the next
                // tunnel dials; this one fails over to another backend like any refusal.
                let mut session = slot.lock().await;
                if session.as_ref().is_some_and(|s| lock(&s.liveness).closed) {
                    *session = None;
                }
                Err(MeshError::Refused {
                    addr: node_addr.to_string(),
                    reason: format!("the connection to the peer: {reason}"),
                })
            }
        }
    }
}

/// Serve one accepted, secured connection: every stream the peer opens on it is a tunnel handed to
/// the core with the identity the connection proved. Returns when the connection ends or nobody
/// accepts tunnels any more.
pub async fn serve_connection(
    secured: BoxStream,
    peer_identity: Option<String>,
    peer_addr: String,
    out: mpsc::UnboundedSender<io::Result<IncomingTunnel>>,
) {
    let mut connection = Connection::new(secured.compat(), yamux_config(), Mode::Server);
    while let Some(Ok(stream)) = std::future::poll_fn(|cx| connection.poll_next_inbound(cx)).await {
        let tunnel = IncomingTunnel {
            peer_identity: peer_identity.clone(),
            peer_addr: peer_addr.clone(),
            stream: mesh_stream(stream),
        };
        if out.send(Ok(tunnel)).is_err() {
            return;
        }
    }
}
