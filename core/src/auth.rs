//! Who may ask a node what, once the transport knows who is asking: the [`rpc::Gate`](crate::rpc::Gate)
//! every node puts in front of its router ([`StoreGate`]).
//!
//! In the daemon every peer connection is mutual TLS and [`Peer::identity`](crate::env::transport::Peer)
//! is the node id in the peer's certificate (signed by the cluster CA, so it cannot be forged). swarmkit
//! authorizes by the role written in the certificate and blacklists removed nodes' certificates
//! (`ca/auth.go`); shoal reads both facts from the replicated store instead, so that promotion, demotion
//! and `node rm` take effect at once without reissuing certificates:
//!
//! - **Raft and Control**: only a node the store knows as a manager (role, desired role, or raft
//!   membership). A worker's certificate cannot append entries, vote, propose or drive the control API.
//!   One exception: while this node's store holds no cluster object yet (a manager that is joining or
//!   was just promoted, before raft has brought it the state), raft from any authenticated peer is
//!   admitted — there is nothing to check against, and the certificate still proves cluster membership.
//! - **Dispatcher**: a node speaks only for itself — session, heartbeat, assignments, status and leave
//!   must name the certificate's node id. A join is for a node id not in the store yet (its certificate
//!   was issued by the daemon's bootstrap step just before); a second join is refused.
//! - **Removed nodes** (`node rm`) are gone from the store, so their certificates are refused on raft
//!   and control, and the dispatcher answers them "removed", which stops their agent.
//!
//! In the simulator peers carry no identity and the gate is never consulted.

use crate::api::{Node, NodeRole};
use crate::dispatcher::DispatcherRequest;
use crate::rpc::{Channel, Gate};
use crate::store::Store;

/// Whether the store counts `node` as a manager: already one, being promoted, or a raft member.
pub fn acts_as_manager(node: &Node) -> bool {
    node.role == NodeRole::Manager || node.spec.desired_role == NodeRole::Manager || node.manager_status.is_some()
}

/// The [`Gate`] of every node: decides from this node's copy of the store.
pub struct StoreGate {
    store: Store,
}

impl StoreGate {
    pub fn new(store: Store) -> Self {
        StoreGate { store }
    }

    fn manager_only(&self, identity: &str, channel: Channel) -> Result<(), String> {
        let (bootstrapping, node) = self.store.view(|s| (s.cluster.is_none(), s.nodes.get(identity).cloned()));
        match node {
            Some(node) if acts_as_manager(&node) => Ok(()),
            _ if bootstrapping && channel == Channel::Raft => Ok(()),
            Some(_) => Err(format!(
                "node {identity} is a worker; only managers may send {channel:?} requests (promote it with \
                 `shoal node promote`)"
            )),
            None if bootstrapping => Err(format!("this node holds no cluster state yet to serve {channel:?} requests")),
            None => Err(format!(
                "node {identity} is not a member of this swarm (it was removed, or never joined); its certificate \
                 is no longer accepted"
            )),
        }
    }

    fn dispatcher(&self, identity: &str, body: &[u8]) -> Result<(), String> {
        // A garbled request is let through for the dispatcher to refuse as garbled.
        let Ok(request) = serde_json::from_slice::<DispatcherRequest>(body) else { return Ok(()) };
        let claimed = match &request {
            DispatcherRequest::Join(_) => {
                if self.store.view(|s| s.nodes.contains_key(identity)) {
                    return Err(format!("node {identity} is already a member of the swarm"));
                }
                return Ok(());
            }
            DispatcherRequest::Session(r) => &r.node_id,
            DispatcherRequest::Heartbeat(r) => &r.node_id,
            DispatcherRequest::Assignments(r) => &r.node_id,
            DispatcherRequest::UpdateStatus(r) => &r.node_id,
            DispatcherRequest::Leave { node_id, .. } => node_id,
        };
        if claimed != identity {
            return Err(format!("node {identity} cannot speak for node {claimed}"));
        }
        Ok(())
    }
}

impl Gate for StoreGate {
    fn admit(&self, identity: &str, channel: Channel, body: &[u8]) -> Result<(), String> {
        match channel {
            Channel::Raft | Channel::Control => self.manager_only(identity, channel),
            Channel::Dispatcher => self.dispatcher(identity, body),
        }
    }
}
