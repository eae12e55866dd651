//! The simulated network: in-process links between nodes with per-link delay and loss, symmetric and
//! one-way partitions, all drawn from the run's seed.
//!
//! One [`SimNet`] per simulated cluster holds the fault table and the listeners; each node gets a
//! [`SimTransport`] bound to its own address. A request to a node that is not listening (crashed,
//! not started) is refused at once. The real transport multiplexes calls on one TCP connection per
//! peer, so a request or reply that is lost, or sent across a cut link, is retransmitted as TCP
//! retransmits a segment: after 200 ms (Linux's minimum RTO), then 400 ms, 800 ms, … (at most
//! 120 s apart), each try facing the link as it is then. Across a cut that heals, the message
//! arrives at the first retransmission after the heal; across one that lasts, the caller's
//! deadline passes first. Addresses are `host:port`, and faults act on hosts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shoal_core::env::transport::Peer;
use shoal_core::env::{runtime, Handler, Transport, TransportError};
use tokio::sync::{mpsc, oneshot};

/// TCP's first retransmission timeout (Linux's `TCP_RTO_MIN`); it doubles after each try.
pub const RTO_MIN: Duration = Duration::from_millis(200);

/// The longest retransmission timeout (Linux's `TCP_RTO_MAX`).
const RTO_MAX: Duration = Duration::from_secs(120);

/// Delay and loss on one direction of a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkPolicy {
    pub delay_min: Duration,
    pub delay_max: Duration,
    /// Probability in [0, 1] that a message on this link is lost.
    pub loss: f64,
}

impl Default for LinkPolicy {
    fn default() -> Self {
        LinkPolicy { delay_min: Duration::from_micros(500), delay_max: Duration::from_millis(3), loss: 0.0 }
    }
}

struct Incoming {
    peer: Peer,
    request: Vec<u8>,
    reply: oneshot::Sender<Vec<u8>>,
}

#[derive(Default)]
struct NetState {
    listeners: BTreeMap<String, mpsc::UnboundedSender<Incoming>>,
    /// Cut directions `(from host, to host)`.
    cut: BTreeSet<(String, String)>,
    /// Per-direction policies; a missing entry uses `default_policy`.
    links: BTreeMap<(String, String), LinkPolicy>,
    default_policy: LinkPolicy,
    delivered: u64,
    dropped: u64,
}

/// The network of one simulated cluster: listeners and the fault table.
#[derive(Clone, Default)]
pub struct SimNet {
    state: Arc<Mutex<NetState>>,
}

impl std::fmt::Debug for SimNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNet").finish_non_exhaustive()
    }
}

/// The host part of `host:port`.
pub fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(host, _)| host).unwrap_or(addr)
}

impl SimNet {
    pub fn new() -> Self {
        Self::default()
    }

    /// A transport for the node listening at `addr`.
    pub fn transport(&self, addr: impl Into<String>) -> SimTransport {
        SimTransport { net: self.clone(), addr: addr.into() }
    }

    fn with<R>(&self, f: impl FnOnce(&mut NetState) -> R) -> R {
        f(&mut self.state.lock().expect("sim net lock"))
    }

    /// Cut traffic from every host in `from` to every host in `to` (one way).
    pub fn cut_one_way(&self, from: &[String], to: &[String]) {
        self.with(|state| {
            for a in from {
                for b in to {
                    if a != b {
                        state.cut.insert((a.clone(), b.clone()));
                    }
                }
            }
        })
    }

    /// Cut traffic between the two sets, both ways.
    pub fn partition(&self, side_a: &[String], side_b: &[String]) {
        self.cut_one_way(side_a, side_b);
        self.cut_one_way(side_b, side_a);
    }

    /// Restore every cut link and every link policy.
    pub fn heal(&self) {
        self.with(|state| {
            state.cut.clear();
            state.links.clear();
        })
    }

    /// Set delay/loss on the links between `a` and `b`, both directions.
    pub fn set_link(&self, a: &str, b: &str, policy: LinkPolicy) {
        self.with(|state| {
            state.links.insert((a.to_string(), b.to_string()), policy);
            state.links.insert((b.to_string(), a.to_string()), policy);
        })
    }

    /// Set the delay/loss of every link without its own policy.
    pub fn set_default_link(&self, policy: LinkPolicy) {
        self.with(|state| state.default_policy = policy)
    }

    pub fn is_cut(&self, from_host: &str, to_host: &str) -> bool {
        self.with(|state| state.cut.contains(&(from_host.to_string(), to_host.to_string())))
    }

    /// Messages delivered and dropped so far (for speed figures and reports).
    pub fn stats(&self) -> (u64, u64) {
        self.with(|state| (state.delivered, state.dropped))
    }

    /// Carry one message from host `from` to host `to` over an open TCP connection: returns once it
    /// has arrived, retransmitting it (with TCP's doubling timeout) while it is lost or the link is
    /// cut.
    async fn carry(&self, from: &str, to: &str) {
        let mut rto = RTO_MIN;
        loop {
            match self.verdict(from, to) {
                Verdict::Deliver(delay) => return runtime::sleep(delay).await,
                Verdict::Cut | Verdict::Lost => {
                    runtime::sleep(rto).await;
                    rto = (rto * 2).min(RTO_MAX);
                }
            }
        }
    }

    /// What the link from host `from` to host `to` does to one message (or segment) sent now: cut,
    /// lost (with the link's loss probability) or delivered after a delay, drawn from the seeded rng.
    pub fn verdict(&self, from: &str, to: &str) -> Verdict {
        let policy = self.with(|state| {
            // Most runs have no faults: skip building the lookup key (two allocations per hop).
            if state.cut.is_empty() && state.links.is_empty() {
                return Some(state.default_policy);
            }
            let key = (from.to_string(), to.to_string());
            if state.cut.contains(&key) {
                None
            } else {
                Some(state.links.get(&key).copied().unwrap_or(state.default_policy))
            }
        });
        let verdict = match policy {
            None => Verdict::Cut,
            Some(policy) => {
                // Draw from the seeded rng even when loss is 0, so adding loss elsewhere does not shift
                // every later random choice of the run.
                let roll = (runtime::random_u64() % 1_000_000) as f64 / 1_000_000.0;
                if roll >= policy.loss {
                    Verdict::Deliver(runtime::random_duration(policy.delay_min, policy.delay_max))
                } else {
                    Verdict::Lost
                }
            }
        };
        self.with(|state| match verdict {
            Verdict::Deliver(_) => state.delivered += 1,
            Verdict::Cut | Verdict::Lost => state.dropped += 1,
        });
        verdict
    }
}

/// What a link does to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The link is cut (partition): nothing gets through until it heals.
    Cut,
    /// This message is lost (the link's loss probability).
    Lost,
    /// Delivered after this delay.
    Deliver(Duration),
}

/// One node's end of the simulated network.
#[derive(Clone)]
pub struct SimTransport {
    net: SimNet,
    addr: String,
}

impl SimTransport {
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn exchange(&self, to: &str, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let (from_host, to_host) = (host_of(&self.addr), host_of(to));
        self.net.carry(from_host, to_host).await;
        let listener = self.net.with(|state| state.listeners.get(to).cloned());
        let unreachable = |reason: &str| TransportError::Unreachable { addr: to.to_string(), reason: reason.into() };
        let Some(listener) = listener else {
            return Err(unreachable("connection refused"));
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        let peer = Peer { addr: self.addr.clone(), identity: None };
        listener.send(Incoming { peer, request, reply: reply_tx }).map_err(|_| unreachable("connection refused"))?;
        let reply = reply_rx.await.map_err(|_| TransportError::Closed { addr: to.to_string() })?;
        self.net.carry(to_host, from_host).await;
        Ok(reply)
    }
}

#[async_trait]
impl Transport for SimTransport {
    async fn call(&self, to: &str, request: Vec<u8>, deadline: Duration) -> Result<Vec<u8>, TransportError> {
        match runtime::timeout(deadline, self.exchange(to, request)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout { addr: to.to_string(), timeout_ms: deadline.as_millis() as u64 }),
        }
    }

    async fn serve(&self, handler: Arc<dyn Handler>) -> Result<(), TransportError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Incoming>();
        self.net.with(|state| state.listeners.insert(self.addr.clone(), tx));
        // The accept loop is spawned on the calling node, so it dies when that node crashes and the
        // address then refuses connections.
        runtime::spawn(async move {
            while let Some(incoming) = rx.recv().await {
                let handler = handler.clone();
                runtime::spawn(async move {
                    let reply = handler.handle(incoming.peer, incoming.request).await;
                    let _ = incoming.reply.send(reply);
                });
            }
        });
        Ok(())
    }
}
