//! The real arm of the transport seam: [`TcpTransport`], request/response calls over TCP.
//!
//! # Wire format
//!
//! A connection opens with an 8-byte preface ([`PREFACE`]) from the dialling side, so that a stray
//! client (a port scanner, an HTTP probe, an older shoal) is told apart from a garbled frame at once.
//! After it, both directions carry frames:
//!
//! ```text
//! u32 BE length of the rest | u8 kind | u64 BE request id | body (length - 9 bytes)
//! ```
//!
//! `kind` is [`KIND_REQUEST`] (dialler → listener), [`KIND_REPLY`] or [`KIND_ERROR`] (listener →
//! dialler). An error frame with id 0 reports a protocol violation on the whole connection just before
//! the listener drops it; with the id of a request, it says the handler failed for that request.
//!
//! # Connections
//!
//! Each transport keeps at most one outgoing connection per peer address and multiplexes calls on it
//! by request id, so a slow call never blocks a fast one. A call that finds no live connection dials
//! one (reconnecting after a broken one); the whole call, dial included, is bounded by its deadline.
//! Frames are written by one writer task per connection, so a call cancelled by its deadline never
//! leaves half a frame on the wire. Incoming requests are each served in their own task.
//!
//! # Security
//!
//! Every stream passes through [`Security`] right after the TCP handshake, before the preface. The
//! daemon uses mutual TLS ([`Security::Tls`]: a cluster CA made at `swarm init`, node certificates
//! carrying the node id, which fills [`Peer::identity`]); plain TCP remains for tests of the framing.
//! Under TLS, a connection that presents no client certificate is a node joining: its requests go to
//! the bootstrap handler ([`TcpTransport::set_bootstrap_handler`]) or are refused, never to the
//! cluster's handler. The joining side dials with [`Security::Join`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shoal_core::env::transport::Peer;
use shoal_core::env::{Handler, Transport, TransportError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

/// The first bytes a dialler sends: protocol name and version.
pub const PREFACE: &[u8; 8] = b"SHOAL/1\n";
/// A request from the dialling side.
pub const KIND_REQUEST: u8 = 0;
/// The reply to the request with the same id.
pub const KIND_REPLY: u8 = 1;
/// An error report; id 0 means the whole connection is being dropped. The body is UTF-8 text.
pub const KIND_ERROR: u8 = 2;
/// The size of `kind` + `request id`, which every frame carries after its length.
pub const FRAME_HEADER_BYTES: usize = 9;
/// The default bound on a frame's length (a raft snapshot chunk must fit).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 << 20;

/// How a [`TcpTransport`] behaves.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// The address this node listens on and peers dial (`127.0.0.2:2377`).
    pub listen_addr: String,
    /// Dial peers from the listen address's IP, so that they see this node's own address as the
    /// source. Needed when several nodes share a host on different loopback addresses; switched off
    /// automatically when the listen IP is unspecified (`0.0.0.0`).
    pub bind_outgoing: bool,
    /// Frames longer than this are refused, in both directions.
    pub max_frame_bytes: usize,
    /// Requests one incoming connection may have in flight; beyond this, reading pauses.
    pub max_in_flight_per_connection: usize,
    /// How long an accepted connection may take to send its preface (and finish a TLS handshake).
    pub handshake_timeout: Duration,
    pub security: Security,
}

impl TcpConfig {
    /// Plain TCP on `listen_addr` with the defaults.
    pub fn new(listen_addr: impl Into<String>) -> Self {
        TcpConfig {
            listen_addr: listen_addr.into(),
            bind_outgoing: true,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_in_flight_per_connection: 1024,
            handshake_timeout: Duration::from_secs(10),
            security: Security::Plain,
        }
    }
}

/// What protects a connection once TCP is up.
#[derive(Clone, Default)]
pub enum Security {
    /// No encryption or authentication; peers have no identity.
    #[default]
    Plain,
    /// Mutual TLS: both sides present a certificate signed by the cluster CA (see [`crate::tls`]).
    /// Incoming connections without a client certificate reach only the bootstrap handler.
    Tls(Arc<crate::tls::TlsConfig>),
    /// A joining node's bootstrap dialler: TLS without a client certificate, trusting the listener
    /// through the join token's CA digest. It cannot serve.
    Join(Arc<crate::tls::JoinTls>),
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Security::Plain => f.write_str("Plain"),
            Security::Tls(_) => f.write_str("Tls"),
            Security::Join(_) => f.write_str("Join"),
        }
    }
}

/// A byte stream the transport can frame: a TCP stream, or a TLS stream around one.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}
pub type BoxStream = Pin<Box<dyn Stream>>;

impl Security {
    /// Wrap a dialled stream.
    pub(crate) async fn client(&self, tcp: TcpStream) -> Result<BoxStream, String> {
        match self {
            Security::Plain => Ok(Box::pin(tcp)),
            Security::Tls(tls) => tls.connect(tcp).await,
            Security::Join(join) => join.connect(tcp).await,
        }
    }

    /// Wrap an accepted stream; returns the identity the peer proved, if any.
    pub(crate) async fn server(&self, tcp: TcpStream) -> Result<(BoxStream, Option<String>), String> {
        match self {
            Security::Plain => Ok((Box::pin(tcp), None)),
            Security::Tls(tls) => tls.accept(tcp).await,
            Security::Join(_) => Err("a joining node's bootstrap transport does not accept connections".into()),
        }
    }

    /// Whether every peer of the cluster must prove an identity (so one without is only bootstrapping).
    pub(crate) fn authenticates(&self) -> bool {
        matches!(self, Security::Tls(_))
    }
}

/// One frame as read off the wire.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub id: u64,
    pub body: Vec<u8>,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Garbled(String),
}

/// Read one frame, refusing lengths over `max_frame_bytes` before allocating anything.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, max_frame_bytes: usize) -> Result<Frame, FrameError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len < FRAME_HEADER_BYTES {
        return Err(FrameError::Garbled(format!(
            "frame of {len} bytes is shorter than its {FRAME_HEADER_BYTES}-byte header"
        )));
    }
    if len > max_frame_bytes + FRAME_HEADER_BYTES {
        return Err(FrameError::Garbled(format!("frame of {len} bytes exceeds the limit of {max_frame_bytes} bytes")));
    }
    let mut header = [0u8; FRAME_HEADER_BYTES];
    read_exact_mid_frame(reader, &mut header).await?;
    let kind = header[0];
    if kind > KIND_ERROR {
        return Err(FrameError::Garbled(format!("unknown frame kind {kind}")));
    }
    let id = u64::from_be_bytes(header[1..].try_into().expect("8 bytes"));
    let mut body = vec![0u8; len - FRAME_HEADER_BYTES];
    read_exact_mid_frame(reader, &mut body).await?;
    Ok(Frame { kind, id, body })
}

/// Inside a frame, end of stream is a truncated frame, not a clean close.
async fn read_exact_mid_frame<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> Result<(), FrameError> {
    match reader.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Err(FrameError::Garbled("connection closed in the middle of a frame".into()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Write one frame (unflushed).
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, frame: &Frame) -> io::Result<()> {
    let len = u32::try_from(frame.body.len() + FRAME_HEADER_BYTES)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame longer than 4 GiB"))?;
    writer.write_all(&len.to_be_bytes()).await?;
    writer.write_all(&[frame.kind]).await?;
    writer.write_all(&frame.id.to_be_bytes()).await?;
    writer.write_all(&frame.body).await
}

/// Writes every frame sent on `frames`, flushing whenever the queue runs dry, until the queue closes
/// or the stream breaks.
async fn writer_loop<W: AsyncWrite + Unpin>(writer: W, mut frames: mpsc::UnboundedReceiver<Frame>) -> io::Result<()> {
    let mut writer = BufWriter::with_capacity(64 << 10, writer);
    while let Some(frame) = frames.recv().await {
        write_frame(&mut writer, &frame).await?;
        while let Ok(frame) = frames.try_recv() {
            write_frame(&mut writer, &frame).await?;
        }
        writer.flush().await?;
    }
    writer.shutdown().await
}

/// An error observed by the transport outside of any call (a garbled incoming connection, a failed
/// handshake), kept so the daemon can log it; calls report their own errors directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionError {
    pub peer: String,
    pub reason: String,
}

/// How many [`ConnectionError`]s are kept.
const RECENT_ERRORS: usize = 64;

type PendingMap = HashMap<u64, oneshot::Sender<Result<Vec<u8>, TransportError>>>;

/// One outgoing connection: calls enqueue frames for its writer task and park a oneshot in
/// `pending` for its reader task to complete.
struct Connection {
    frames: mpsc::UnboundedSender<Frame>,
    pending: Arc<Mutex<Option<PendingMap>>>,
    tasks: [JoinHandle<()>; 2],
}

impl Connection {
    /// A connection is dead once its reader gave up (`pending` taken) or its writer stopped.
    fn is_alive(&self) -> bool {
        !self.frames.is_closed() && lock(&self.pending).is_some()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The connection to one peer, if any; locked across a dial.
type PeerSlot = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

struct Inner {
    config: TcpConfig,
    next_id: AtomicU64,
    /// One slot per peer address; the async lock serialises dialling so concurrent first calls
    /// share one connection.
    peers: Mutex<HashMap<String, PeerSlot>>,
    /// The accept loop; aborting it drops every incoming connection and handler task with it.
    server: Mutex<Option<JoinHandle<()>>>,
    local_addr: Mutex<Option<SocketAddr>>,
    errors: Mutex<std::collections::VecDeque<ConnectionError>>,
    /// Serves TLS connections without a client certificate (a node joining); none: they are refused.
    bootstrap: Mutex<Option<Arc<dyn Handler>>>,
}

/// TCP transport with length-delimited frames, multiplexed calls, deadlines and reconnects.
///
/// Cheap to clone; clones share connections and the server.
#[derive(Clone)]
pub struct TcpTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport").field("listen_addr", &self.inner.config.listen_addr).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data half-updated (every critical
    // section is a single insert/remove/take), so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TcpTransport {
    /// Plain TCP listening on (and dialling from) `listen_addr`.
    pub fn new(listen_addr: impl Into<String>) -> Self {
        Self::with_config(TcpConfig::new(listen_addr))
    }

    pub fn with_config(config: TcpConfig) -> Self {
        TcpTransport {
            inner: Arc::new(Inner {
                config,
                next_id: AtomicU64::new(1),
                peers: Mutex::new(HashMap::new()),
                server: Mutex::new(None),
                local_addr: Mutex::new(None),
                errors: Mutex::new(std::collections::VecDeque::new()),
                bootstrap: Mutex::new(None),
            }),
        }
    }

    /// The address the server is bound to, once [`Transport::serve`] returned (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *lock(&self.inner.local_addr)
    }

    /// The most recent errors on incoming connections, oldest first.
    pub fn recent_errors(&self) -> Vec<ConnectionError> {
        lock(&self.inner.errors).iter().cloned().collect()
    }

    /// Under [`Security::Tls`], serve connections that present no client certificate with `handler`
    /// (a joining node asking for its certificate) instead of refusing them. They never reach the
    /// handler given to [`Transport::serve`].
    pub fn set_bootstrap_handler(&self, handler: Option<Arc<dyn Handler>>) {
        *lock(&self.inner.bootstrap) = handler;
    }

    /// Stop serving and drop every connection, incoming and outgoing. Calls in flight on outgoing
    /// connections fail with `Closed`; peers with calls to us in flight see the connection close.
    pub fn shutdown(&self) {
        // The bootstrap handler may hold the node that owns this transport; let both go.
        lock(&self.inner.bootstrap).take();
        if let Some(server) = lock(&self.inner.server).take() {
            server.abort();
        }
        *lock(&self.inner.local_addr) = None;
        let peers: Vec<_> = lock(&self.inner.peers).drain().map(|(_, slot)| slot).collect();
        for slot in peers {
            if let Ok(mut slot) = slot.try_lock() {
                if let Some(conn) = slot.take() {
                    fail_pending(&conn.pending, |addr| TransportError::Closed { addr }, "");
                }
            }
        }
    }

    /// The live connection to `to`, dialling a new one if there is none.
    async fn connection(&self, to: &str) -> Result<Arc<Connection>, TransportError> {
        let slot = lock(&self.inner.peers).entry(to.to_string()).or_default().clone();
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref() {
            if conn.is_alive() {
                return Ok(conn.clone());
            }
        }
        let conn = Arc::new(self.dial(to).await?);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn dial(&self, to: &str) -> Result<Connection, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable { addr: to.to_string(), reason };
        let target: SocketAddr = match to.parse() {
            Ok(addr) => addr,
            Err(_) => tokio::net::lookup_host(to)
                .await
                .map_err(|e| unreachable(format!("cannot resolve: {e}")))?
                .next()
                .ok_or_else(|| unreachable("the name resolves to no address".into()))?,
        };
        let socket = if target.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
            .map_err(|e| unreachable(format!("socket: {e}")))?;
        if let Some(ip) = self.source_ip() {
            if ip.is_ipv4() == target.is_ipv4() {
                socket.bind(SocketAddr::new(ip, 0)).map_err(|e| unreachable(format!("bind to {ip}: {e}")))?;
            }
        }
        let tcp = socket.connect(target).await.map_err(|e| unreachable(e.to_string()))?;
        // Small request/reply frames must not wait for Nagle's timer.
        let _ = tcp.set_nodelay(true);
        let stream = self.inner.config.security.client(tcp).await.map_err(|reason| TransportError::Refused {
            addr: to.to_string(),
            reason: format!("handshake failed: {reason}"),
        })?;
        let (read, mut write) = tokio::io::split(stream);
        write.write_all(PREFACE).await.map_err(|e| unreachable(format!("sending preface: {e}")))?;

        let (frames_tx, frames_rx) = mpsc::unbounded_channel();
        let pending: Arc<Mutex<Option<PendingMap>>> = Arc::new(Mutex::new(Some(HashMap::new())));
        let writer = tokio::spawn(async move {
            let _ = writer_loop(write, frames_rx).await;
        });
        let reader =
            tokio::spawn(client_reader(read, to.to_string(), pending.clone(), self.inner.config.max_frame_bytes));
        Ok(Connection { frames: frames_tx, pending, tasks: [reader, writer] })
    }

    fn source_ip(&self) -> Option<IpAddr> {
        if !self.inner.config.bind_outgoing {
            return None;
        }
        let addr: SocketAddr = self.inner.config.listen_addr.parse().ok()?;
        Some(addr.ip()).filter(|ip| !ip.is_unspecified())
    }

    /// One attempt at a call on a live connection. `Err(None)` means the connection died before the
    /// request was handed to it, so the request was certainly not sent and may be retried.
    async fn call_once(&self, to: &str, request: &[u8]) -> Result<PendingCall, Option<TransportError>> {
        let conn = self.connection(to).await.map_err(Some)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match lock(&conn.pending).as_mut() {
            Some(pending) => pending.insert(id, tx),
            None => return Err(None),
        };
        let call = PendingCall { pending: conn.pending.clone(), id, reply: rx };
        let frame = Frame { kind: KIND_REQUEST, id, body: request.to_vec() };
        if conn.frames.send(frame).is_err() {
            return Err(None);
        }
        Ok(call)
    }
}

/// A call waiting for its reply. Dropping it (the deadline passed) forgets the call, so a late reply
/// is discarded by the reader and the connection's table does not grow with every timeout.
struct PendingCall {
    pending: Arc<Mutex<Option<PendingMap>>>,
    id: u64,
    reply: oneshot::Receiver<Result<Vec<u8>, TransportError>>,
}

impl PendingCall {
    async fn reply(mut self, addr: &str) -> Result<Vec<u8>, TransportError> {
        (&mut self.reply).await.unwrap_or_else(|_| Err(TransportError::Closed { addr: addr.to_string() }))
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if let Some(pending) = lock(&self.pending).as_mut() {
            pending.remove(&self.id);
        }
    }
}

/// Complete every pending call on a connection with an error, and mark the connection dead.
fn fail_pending(pending: &Mutex<Option<PendingMap>>, error: impl Fn(String) -> TransportError, addr: &str) {
    if let Some(calls) = lock(pending).take() {
        for (_, tx) in calls {
            let _ = tx.send(Err(error(addr.to_string())));
        }
    }
}

/// Reads replies off an outgoing connection and completes the matching calls. Any protocol error
/// fails every call in flight and kills the connection, so the next call dials afresh.
async fn client_reader<R: AsyncRead + Unpin>(
    read: R,
    addr: String,
    pending: Arc<Mutex<Option<PendingMap>>>,
    max_frame_bytes: usize,
) {
    let mut read = BufReader::with_capacity(64 << 10, read);
    let error = loop {
        let frame = match read_frame(&mut read, max_frame_bytes).await {
            Ok(frame) => frame,
            // Under TLS 1.3 a listener refuses the dialler's certificate after the dialler thinks the
            // handshake is done: the refusal arrives here, as a TLS alert (InvalidData).
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::InvalidData => {
                let reason = format!("the peer refused the TLS session: {e}");
                fail_pending(&pending, |addr| TransportError::Refused { addr, reason: reason.clone() }, &addr);
                return;
            }
            // A reset is the peer going away, not a protocol problem.
            Err(FrameError::Closed | FrameError::Io(_)) => break None,
            Err(FrameError::Garbled(reason)) => break Some(reason),
        };
        let reply = match frame.kind {
            KIND_REPLY => Ok(frame.body),
            KIND_ERROR if frame.id == 0 => {
                let reason = String::from_utf8_lossy(&frame.body).into_owned();
                break Some(format!("the peer dropped the connection: {reason}"));
            }
            KIND_ERROR => Err(TransportError::Refused {
                addr: addr.clone(),
                reason: String::from_utf8_lossy(&frame.body).into_owned(),
            }),
            other => break Some(format!("unexpected frame kind {other} from a listener")),
        };
        let waiter = lock(&pending).as_mut().and_then(|pending| pending.remove(&frame.id));
        // No waiter: the call already gave up on its deadline; the late reply is dropped.
        if let Some(tx) = waiter {
            let _ = tx.send(reply);
        }
    };
    match error {
        None => fail_pending(&pending, |addr| TransportError::Closed { addr }, &addr),
        Some(reason) => fail_pending(&pending, |addr| TransportError::Frame { addr, reason: reason.clone() }, &addr),
    }
}

#[async_trait]
impl Transport for TcpTransport {
    async fn call(&self, to: &str, request: Vec<u8>, deadline: Duration) -> Result<Vec<u8>, TransportError> {
        let max = self.inner.config.max_frame_bytes;
        if request.len() > max {
            return Err(TransportError::Frame {
                addr: to.to_string(),
                reason: format!("request of {} bytes exceeds the limit of {max} bytes", request.len()),
            });
        }
        let attempt = async {
            // Two attempts: a connection found dead before the request went out is redialled once.
            // A request that did go out is never resent, since the peer may have acted on it.
            let call = match self.call_once(to, &request).await {
                Ok(call) => call,
                Err(Some(error)) => return Err(error),
                Err(None) => match self.call_once(to, &request).await {
                    Ok(call) => call,
                    Err(error) => return Err(error.unwrap_or(TransportError::Closed { addr: to.to_string() })),
                },
            };
            call.reply(to).await
        };
        match tokio::time::timeout(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout { addr: to.to_string(), timeout_ms: deadline.as_millis() as u64 }),
        }
    }

    async fn serve(&self, handler: Arc<dyn Handler>) -> Result<(), TransportError> {
        let addr = self.inner.config.listen_addr.clone();
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| TransportError::Listen { addr: addr.clone(), reason: e.to_string() })?;
        *lock(&self.inner.local_addr) = listener.local_addr().ok();
        let inner = self.inner.clone();
        let accept = tokio::spawn(accept_loop(listener, handler, inner));
        if let Some(previous) = lock(&self.inner.server).replace(accept) {
            previous.abort();
        }
        Ok(())
    }
}

/// Accepts connections until aborted; each connection runs in a task of this loop's [`JoinSet`], so
/// aborting the loop drops them all.
async fn accept_loop(listener: TcpListener, handler: Arc<dyn Handler>, inner: Arc<Inner>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    connections.spawn(serve_connection(tcp, remote, handler.clone(), inner.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    record_error(&inner, "listener".into(), format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

fn record_error(inner: &Inner, peer: String, reason: String) {
    let mut errors = lock(&inner.errors);
    if errors.len() == RECENT_ERRORS {
        errors.pop_front();
    }
    errors.push_back(ConnectionError { peer, reason });
}

/// Serves one incoming connection: handshake, preface, then each request in its own task.
async fn serve_connection(tcp: TcpStream, remote: SocketAddr, handler: Arc<dyn Handler>, inner: Arc<Inner>) {
    let config = &inner.config;
    let _ = tcp.set_nodelay(true);
    let handshake = async {
        let (stream, identity) = config.security.server(tcp).await.map_err(|e| format!("handshake failed: {e}"))?;
        let (mut read, write) = tokio::io::split(stream);
        let mut preface = [0u8; PREFACE.len()];
        read.read_exact(&mut preface).await.map_err(|e| format!("reading the preface: {e}"))?;
        Ok::<_, String>((read, write, identity, preface))
    };
    let (read, write, identity, preface) = match tokio::time::timeout(config.handshake_timeout, handshake).await {
        Ok(Ok(parts)) => parts,
        Ok(Err(reason)) => return record_error(&inner, remote.to_string(), reason),
        Err(_) => return record_error(&inner, remote.to_string(), "no preface within the handshake timeout".into()),
    };

    let (frames_tx, frames_rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(writer_loop(write, frames_rx));
    // Under mutual TLS a peer without an identity is a node still joining: it may only ask for its
    // certificate, so the cluster's own handler (raft, dispatcher, control) never sees it.
    let handler = match (config.security.authenticates() && identity.is_none(), lock(&inner.bootstrap).clone()) {
        (false, _) => Some(handler),
        (true, bootstrap) => bootstrap,
    };
    let peer = Peer { addr: remote.to_string(), identity };

    let problem = if &preface != PREFACE {
        Some(format!("bad preface {:?}: not a shoal peer (expected {:?})", ascii(&preface), ascii(PREFACE)))
    } else if let Some(handler) = handler {
        serve_requests(read, &frames_tx, peer, handler, config).await
    } else {
        Some("a certificate signed by the cluster CA is required (this node does not issue certificates)".into())
    };
    if let Some(reason) = problem {
        record_error(&inner, remote.to_string(), reason.clone());
        // Tell the peer why before hanging up, so a misconfigured client sees the cause.
        let _ = frames_tx.send(Frame { kind: KIND_ERROR, id: 0, body: reason.into_bytes() });
    }
    drop(frames_tx);
    // Let the writer flush what is queued (replies, the error) before the socket closes.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

fn ascii(bytes: &[u8]) -> String {
    bytes.iter().flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect()
}

/// Reads requests until the peer closes or breaks the protocol; returns the protocol violation.
async fn serve_requests<R: AsyncRead + Unpin>(
    read: R,
    frames: &mpsc::UnboundedSender<Frame>,
    peer: Peer,
    handler: Arc<dyn Handler>,
    config: &TcpConfig,
) -> Option<String> {
    let mut read = BufReader::with_capacity(64 << 10, read);
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight_per_connection));
    let mut handlers = JoinSet::new();
    let problem = loop {
        let frame = match read_frame(&mut read, config.max_frame_bytes).await {
            Ok(frame) => frame,
            Err(FrameError::Closed) | Err(FrameError::Io(_)) => break None,
            Err(FrameError::Garbled(reason)) => break Some(reason),
        };
        if frame.kind != KIND_REQUEST {
            break Some(format!("unexpected frame kind {} from a dialler (expected a request)", frame.kind));
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break None;
        };
        let (handler, peer, frames) = (handler.clone(), peer.clone(), frames.clone());
        handlers.spawn(async move {
            let id = frame.id;
            // The handler runs in a task of its own so that a panic in it becomes an error reply
            // for this one request instead of taking the connection down.
            // Aborted if this task is (the connection dropped, the transport shut down), so a
            // handler parked on a long wait does not outlive its connection.
            let mut task = AbortOnDrop(tokio::spawn(async move { handler.handle(peer, frame.body).await }));
            let reply = (&mut task.0).await;
            let frame = match reply {
                Ok(body) => Frame { kind: KIND_REPLY, id, body },
                Err(e) => Frame { kind: KIND_ERROR, id, body: format!("the handler failed: {e}").into_bytes() },
            };
            let _ = frames.send(frame);
            drop(permit);
        });
        // Reap finished handlers so the set does not grow with the connection's age.
        while handlers.try_join_next().is_some() {}
    };
    if problem.is_some() {
        handlers.abort_all();
    } else {
        // The peer closed its side: answer what it already asked.
        while handlers.join_next().await.is_some() {}
    }
    problem
}

/// A task handle that aborts its task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let frame = Frame { kind: KIND_REPLY, id: 7, body: b"hello".to_vec() };
        let mut buf = Vec::new();
        write_frame(&mut buf, &frame).await.unwrap();
        assert_eq!(&buf[..4], &14u32.to_be_bytes());
        let read = read_frame(&mut &buf[..], 1024).await.unwrap();
        assert_eq!(read, frame);
    }

    #[tokio::test]
    async fn short_long_and_unknown_frames_are_garbled() {
        let short = 3u32.to_be_bytes();
        assert!(matches!(read_frame(&mut &short[..], 1024).await, Err(FrameError::Garbled(_))));
        let long = u32::MAX.to_be_bytes();
        let err = read_frame(&mut &long[..], 1024).await.unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        let mut unknown = 9u32.to_be_bytes().to_vec();
        unknown.extend_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(matches!(read_frame(&mut &unknown[..], 1024).await, Err(FrameError::Garbled(_))));
        let mut truncated = 20u32.to_be_bytes().to_vec();
        truncated.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 1, 42]);
        assert!(matches!(read_frame(&mut &truncated[..], 1024).await, Err(FrameError::Garbled(_))));
        assert!(matches!(read_frame(&mut &[][..], 1024).await, Err(FrameError::Closed)));
    }
}
