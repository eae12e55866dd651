//! Typed calls over the transport seam. Every node serves one [`Router`]; a request's first byte names
//! the [`Channel`] (raft, dispatcher, control, logs, certificates), the rest is that channel's JSON message. A garbled or
//! unknown frame gets an error reply, never a panic. Requests from authenticated peers pass a [`Gate`]
//! first (who may use which channel).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::env::transport::Peer;
use crate::env::{Handler, Transport, TransportError};

/// Which subsystem a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Channel {
    Raft = 1,
    Dispatcher = 2,
    Control = 3,
    /// A node's container output, for `service logs` (see [`crate::logs`]).
    Logs = 4,
    /// Certificate renewal: a member node asks a manager for a fresh certificate. Served by the
    /// daemon (certificates are the daemon's business); the simulator's nodes have none.
    Certificates = 5,
}

impl Channel {
    fn from_byte(byte: u8) -> Option<Channel> {
        match byte {
            1 => Some(Channel::Raft),
            2 => Some(Channel::Dispatcher),
            3 => Some(Channel::Control),
            4 => Some(Channel::Logs),
            5 => Some(Channel::Certificates),
            _ => None,
        }
    }
}

/// The reply envelope: the handler's answer, or why the request could not be handled at all.
/// Generic so each side encodes and decodes the typed answer in one pass (no intermediate
/// `serde_json::Value`); on the wire it is `{"Ok": <answer>}` or `{"BadRequest": "<reason>"}`.
#[derive(Debug, Serialize, Deserialize)]
enum Reply<T> {
    Ok(T),
    BadRequest(String),
}

/// The bytes of a refusal.
fn bad_request(reason: String) -> Vec<u8> {
    serde_json::to_vec(&Reply::<()>::BadRequest(reason)).unwrap_or_default()
}

/// A typed request handler for one channel.
#[async_trait]
pub trait Service: Send + Sync + 'static {
    type Request: DeserializeOwned + Send;
    type Response: Serialize + Send;
    async fn call(&self, peer: Peer, request: Self::Request) -> Self::Response;
}

#[async_trait]
trait ErasedService: Send + Sync {
    /// The encoded [`Reply`].
    async fn call_bytes(&self, peer: Peer, body: &[u8]) -> Vec<u8>;
}

struct Erased<S>(Arc<S>);

#[async_trait]
impl<S: Service> ErasedService for Erased<S> {
    async fn call_bytes(&self, peer: Peer, body: &[u8]) -> Vec<u8> {
        match serde_json::from_slice::<S::Request>(body) {
            Ok(request) => {
                let response = self.0.call(peer, request).await;
                match serde_json::to_vec(&Reply::Ok(response)) {
                    Ok(bytes) => bytes,
                    Err(err) => bad_request(format!("cannot encode the reply: {err}")),
                }
            }
            Err(err) => bad_request(format!("garbled request: {err}")),
        }
    }
}

/// Decides whether an authenticated peer may send a request on a channel (see [`crate::auth`]).
///
/// Consulted only for peers whose identity the transport authenticated (mutual TLS in the daemon):
/// the simulator's peers carry no identity and are not checked, so simulated runs are unchanged.
pub trait Gate: Send + Sync + 'static {
    /// `Err` is the reason the request is refused; the caller sees it in its error.
    fn admit(&self, identity: &str, channel: Channel, body: &[u8]) -> Result<(), String>;
}

/// Demultiplexes a node's incoming requests to the services registered for each channel.
/// Channels can be registered and removed while serving (a worker promoted to manager gains raft).
#[derive(Default, Clone)]
pub struct Router {
    services: Arc<RwLock<BTreeMap<Channel, Arc<dyn ErasedService>>>>,
    gate: Arc<RwLock<Option<Arc<dyn Gate>>>>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register<S: Service>(&self, channel: Channel, service: Arc<S>) {
        self.services.write().expect("router lock").insert(channel, Arc::new(Erased(service)));
    }

    pub fn unregister(&self, channel: Channel) {
        self.services.write().expect("router lock").remove(&channel);
    }

    /// Check every request from an authenticated peer with `gate` before it reaches a service.
    pub fn set_gate(&self, gate: Arc<dyn Gate>) {
        *self.gate.write().expect("router lock") = Some(gate);
    }
}

#[async_trait]
impl Handler for Router {
    async fn handle(&self, peer: Peer, request: Vec<u8>) -> Vec<u8> {
        match request.split_first() {
            None => bad_request("empty request".into()),
            Some((&tag, body)) => match Channel::from_byte(tag) {
                None => bad_request(format!("unknown channel {tag}")),
                Some(channel) => {
                    let gate = self.gate.read().expect("router lock").clone();
                    let refused = match (&gate, &peer.identity) {
                        (Some(gate), Some(identity)) => gate.admit(identity, channel, body).err(),
                        _ => None,
                    };
                    let service = self.services.read().expect("router lock").get(&channel).cloned();
                    match (refused, service) {
                        (Some(reason), _) => bad_request(format!("permission denied: {reason}")),
                        (None, Some(service)) => service.call_bytes(peer, body).await,
                        (None, None) => bad_request(format!("this node does not serve {channel:?} requests")),
                    }
                }
            },
        }
    }
}

/// Why a typed call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{addr} refused the request: {reason}")]
    BadRequest { addr: String, reason: String },
    #[error("garbled reply from {addr}: {reason}")]
    BadReply { addr: String, reason: String },
}

/// Send a typed request on `channel` to `to` and decode the typed reply.
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
    transport: &dyn Transport,
    to: &str,
    channel: Channel,
    request: &Req,
    deadline: Duration,
) -> Result<Resp, CallError> {
    let mut frame = vec![channel as u8];
    serde_json::to_writer(&mut frame, request)
        .map_err(|err| CallError::BadRequest { addr: to.to_string(), reason: err.to_string() })?;
    let bytes = transport.call(to, frame, deadline).await?;
    let bad_reply = |reason: String| CallError::BadReply { addr: to.to_string(), reason };
    match serde_json::from_slice::<Reply<Resp>>(&bytes).map_err(|err| bad_reply(err.to_string()))? {
        Reply::Ok(value) => Ok(value),
        Reply::BadRequest(reason) => Err(CallError::BadRequest { addr: to.to_string(), reason }),
    }
}
