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
//! - **Logs**: only a manager — by the store where this node is a manager, and on a worker (whose
//!   store is empty) by the manager ids its agent last heard in a session or heartbeat reply
//!   ([`KnownManagers`]; swarmkit's session messages carry the manager list the same way).
//! - **Certificates** (renewal): any node the store knows — it speaks for itself, since the new
//!   certificate names the id in the one it presents; a removed node is unknown and refused.
//! - **Removed nodes** (`node rm`) are gone from the store, so their certificates are refused on raft
//!   and control, and the dispatcher answers them "removed", which stops their agent.
//!
//! In the simulator peers carry no identity and the gate is never consulted.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use crate::api::{Node, NodeRole};
use crate::dispatcher::DispatcherRequest;
use crate::rpc::{Channel, Gate};
use crate::store::Store;

/// Whether the store counts `node` as a manager: already one, being promoted, or a raft member.
pub fn acts_as_manager(node: &Node) -> bool {
    node.role == NodeRole::Manager || node.spec.desired_role == NodeRole::Manager || node.manager_status.is_some()
}

/// The manager node ids this node's agent last heard of from a manager. Shared by the agent, which
/// refreshes it from every session and heartbeat reply, and the gate, which reads it.
#[derive(Debug, Clone, Default)]
pub struct KnownManagers(Arc<RwLock<BTreeSet<String>>>);

impl KnownManagers {
    /// Replace the set (an empty list from an older manager leaves it as it was).
    pub fn replace(&self, ids: &[String]) {
        if !ids.is_empty() {
            *self.0.write().unwrap_or_else(|p| p.into_inner()) = ids.iter().cloned().collect();
        }
    }

    pub fn contains(&self, node_id: &str) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).contains(node_id)
    }
}

/// The [`Gate`] of every node: decides from this node's copy of the store.
pub struct StoreGate {
    store: Store,
    known_managers: KnownManagers,
}

impl StoreGate {
    pub fn new(store: Store, known_managers: KnownManagers) -> Self {
        StoreGate { store, known_managers }
    }

    /// A node of this swarm (as this node's store knows it).
    fn member(&self, identity: &str) -> Result<(), String> {
        match self.store.view(|s| (s.cluster.is_some(), s.nodes.contains_key(identity))) {
            (_, true) => Ok(()),
            (false, false) => Err("this node is not a swarm manager; only managers renew certificates".into()),
            (true, false) => Err(format!(
                "node {identity} is not a member of this swarm (it was removed, or never joined); its certificate \
                 is not renewed"
            )),
        }
    }

    /// Logs go to managers only; a worker's store is empty, so it trusts what its managers said.
    fn logs(&self, identity: &str) -> Result<(), String> {
        match self.store.view(|s| s.nodes.get(identity).map(acts_as_manager)) {
            Some(true) => Ok(()),
            None if self.known_managers.contains(identity) => Ok(()),
            Some(false) => Err(format!("node {identity} is a worker; only managers may read other nodes' logs")),
            None => {
                Err(format!("node {identity} is not a manager this node knows of; only managers may read its logs"))
            }
        }
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
            DispatcherRequest::Mesh(r) => &r.node_id,
            DispatcherRequest::Drain(r) => &r.node_id,
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
            Channel::Logs => self.logs(identity),
            Channel::Certificates => self.member(identity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Availability, NodeSpec, NodeStatus};
    use crate::store::StoreState;

    fn node(id: &str, role: NodeRole) -> Node {
        Node {
            id: id.into(),
            meta: Default::default(),
            spec: NodeSpec { desired_role: role, availability: Availability::Active, labels: Default::default() },
            description: Default::default(),
            status: NodeStatus::default(),
            role,
            manager_status: None,
        }
    }

    fn gate_with(nodes: &[Node], known: &[&str]) -> StoreGate {
        let store = Store::new();
        let mut state = StoreState::default();
        for n in nodes {
            state.nodes.insert(n.id.clone(), n.clone());
        }
        store.replace(state);
        let known_managers = KnownManagers::default();
        known_managers.replace(&known.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        StoreGate::new(store, known_managers)
    }

    #[test]
    fn logs_are_for_managers_by_store_on_managers_and_by_heartbeats_on_workers() {
        // A manager's store decides, even against a stale list from heartbeats.
        let on_manager = gate_with(&[node("m1", NodeRole::Manager), node("w1", NodeRole::Worker)], &["w1"]);
        assert_eq!(on_manager.admit("m1", Channel::Logs, b"{}"), Ok(()));
        let refused = on_manager.admit("w1", Channel::Logs, b"{}").unwrap_err();
        assert!(refused.contains("node w1 is a worker"), "{refused}");
        // A worker's store is empty: the manager ids its agent heard are what it trusts.
        let on_worker = gate_with(&[], &["m1"]);
        assert_eq!(on_worker.admit("m1", Channel::Logs, b"{}"), Ok(()));
        let refused = on_worker.admit("w2", Channel::Logs, b"{}").unwrap_err();
        assert!(refused.contains("node w2 is not a manager this node knows of"), "{refused}");
        // An empty list (an older manager's reply) keeps what was known.
        let known = KnownManagers::default();
        known.replace(&["m1".to_string()]);
        known.replace(&[]);
        assert!(known.contains("m1"));
    }
}
