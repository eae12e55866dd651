//! Raft traffic on the transport seam: openraft's RPCs, and the requests a follower forwards to the
//! leader (proposals, membership changes), all on [`Channel::Raft`] through [`rpc::call`].
//!
//! A peer that refuses the connection is reported to openraft as `Unreachable`, so it backs off
//! instead of hammering a dead node; silence (a cut link, a lost message) is a plain network error
//! after the RPC's deadline and is retried on the next heartbeat.
//!
//! openraft's RPCs carry the raft id they are meant for, and a replica answers only those meant for
//! itself: an address can change hands (a manager demoted and promoted again gets a new raft id), and
//! a replica that answered for another id would let the leader count one node as two members.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use super::replica::{Replica, ReplicaError};
use super::{RaftId, TypeConfig};
use crate::env::transport::Peer;
use crate::env::{Instant, Transport, TransportError};
use crate::rpc::{self, CallError, Channel};
use crate::store::{Action, ProposeError};

/// Everything a node sends on [`Channel::Raft`].
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    /// openraft's RPCs, with the raft id of the member they are for.
    Append(RaftId, AppendEntriesRequest<TypeConfig>),
    Vote(RaftId, VoteRequest<RaftId>),
    InstallSnapshot(RaftId, InstallSnapshotRequest<TypeConfig>),
    /// A follower forwards a write to the leader, which stamps and commits it.
    Propose {
        actions: Vec<Action>,
    },
    AddManager {
        raft_id: RaftId,
        addr: String,
    },
    RemoveManager {
        raft_id: RaftId,
    },
}

/// The replies, one variant per request kind.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    Append(Result<AppendEntriesResponse<RaftId>, RaftError<RaftId>>),
    Vote(Result<VoteResponse<RaftId>, RaftError<RaftId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<RaftId>, RaftError<RaftId, InstallSnapshotError>>),
    Propose(Result<u64, ProposeError>),
    Membership(Result<(), ReplicaError>),
    /// The replica at that address is another member (`serves`) than the one the RPC was for.
    WrongMember {
        serves: RaftId,
    },
}

/// When each peer last answered a raft RPC: Swarm's notion of an "active" (reachable) member, used
/// to refuse a removal that would leave too few reachable managers.
#[derive(Debug, Clone, Default)]
pub struct PeerActivity {
    last_ok: Arc<Mutex<BTreeMap<RaftId, Instant>>>,
}

impl PeerActivity {
    fn record(&self, peer: RaftId) {
        self.last_ok.lock().expect("peer activity lock").insert(peer, crate::env::now());
    }

    /// Did `peer` answer within `window`?
    pub fn is_active(&self, peer: RaftId, window: Duration) -> bool {
        let now = crate::env::now();
        self.last_ok
            .lock()
            .expect("peer activity lock")
            .get(&peer)
            .is_some_and(|t| now.saturating_duration_since(*t) <= window)
    }
}

/// Makes one [`NetworkClient`] per target, all sharing the node's transport.
#[derive(Clone)]
pub struct NetworkFactory {
    pub transport: Arc<dyn Transport>,
    pub activity: PeerActivity,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = NetworkClient;

    async fn new_client(&mut self, target: RaftId, node: &BasicNode) -> NetworkClient {
        NetworkClient {
            transport: self.transport.clone(),
            activity: self.activity.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// The connection to one peer, as openraft sees it.
pub struct NetworkClient {
    transport: Arc<dyn Transport>,
    activity: PeerActivity,
    target: RaftId,
    addr: String,
}

fn to_rpc_error<E: std::error::Error>(err: CallError) -> RPCError<RaftId, BasicNode, E> {
    match err {
        CallError::Transport(TransportError::Unreachable { .. } | TransportError::Refused { .. }) => {
            RPCError::Unreachable(Unreachable::new(&err))
        }
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

fn unexpected<E: std::error::Error>(addr: &str, reply: &RaftResponse) -> RPCError<RaftId, BasicNode, E> {
    let reason = match reply {
        // Not the member raft is looking for: as good as unreachable, so the leader backs off.
        RaftResponse::WrongMember { serves } => {
            let err = CallError::BadReply { addr: addr.to_string(), reason: format!("it serves raft member {serves}") };
            return RPCError::Unreachable(Unreachable::new(&err));
        }
        _ => "reply of another kind".to_string(),
    };
    RPCError::Network(NetworkError::new(&CallError::BadReply { addr: addr.to_string(), reason }))
}

impl NetworkClient {
    async fn call(&self, request: RaftRequest, deadline: Duration) -> Result<RaftResponse, CallError> {
        let reply = rpc::call(self.transport.as_ref(), &self.addr, Channel::Raft, &request, deadline).await;
        if reply.is_ok() {
            self.activity.record(self.target);
        }
        reply
    }
}

impl RaftNetwork<TypeConfig> for NetworkClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RPCError<RaftId, BasicNode, RaftError<RaftId>>> {
        match self.call(RaftRequest::Append(self.target, rpc), option.hard_ttl()).await.map_err(to_rpc_error)? {
            RaftResponse::Append(Ok(reply)) => Ok(reply),
            RaftResponse::Append(Err(err)) => Err(RPCError::RemoteError(RemoteError::new(self.target, err))),
            other => Err(unexpected(&self.addr, &other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<RaftId>, RPCError<RaftId, BasicNode, RaftError<RaftId, InstallSnapshotError>>>
    {
        let request = RaftRequest::InstallSnapshot(self.target, rpc);
        match self.call(request, option.hard_ttl()).await.map_err(to_rpc_error)? {
            RaftResponse::InstallSnapshot(Ok(reply)) => Ok(reply),
            RaftResponse::InstallSnapshot(Err(err)) => Err(RPCError::RemoteError(RemoteError::new(self.target, err))),
            other => Err(unexpected(&self.addr, &other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RPCError<RaftId, BasicNode, RaftError<RaftId>>> {
        match self.call(RaftRequest::Vote(self.target, rpc), option.hard_ttl()).await.map_err(to_rpc_error)? {
            RaftResponse::Vote(Ok(reply)) => Ok(reply),
            RaftResponse::Vote(Err(err)) => Err(RPCError::RemoteError(RemoteError::new(self.target, err))),
            other => Err(unexpected(&self.addr, &other)),
        }
    }
}

/// The server side of [`Channel::Raft`]: hands openraft's RPCs to the local raft and runs forwarded
/// requests as the leader.
pub struct RaftService {
    pub replica: Replica,
}

#[async_trait]
impl rpc::Service for RaftService {
    type Request = RaftRequest;
    type Response = RaftResponse;

    async fn call(&self, _peer: Peer, request: RaftRequest) -> RaftResponse {
        let raft = self.replica.raft();
        let me = self.replica.raft_id();
        match request {
            RaftRequest::Append(to, _) | RaftRequest::Vote(to, _) | RaftRequest::InstallSnapshot(to, _) if to != me => {
                RaftResponse::WrongMember { serves: me }
            }
            RaftRequest::Append(_, req) => RaftResponse::Append(raft.append_entries(req).await),
            RaftRequest::Vote(_, req) => RaftResponse::Vote(raft.vote(req).await),
            RaftRequest::InstallSnapshot(_, req) => RaftResponse::InstallSnapshot(raft.install_snapshot(req).await),
            RaftRequest::Propose { actions } => RaftResponse::Propose(self.replica.propose_as_leader(actions).await),
            RaftRequest::AddManager { raft_id, addr } => {
                RaftResponse::Membership(self.replica.add_manager_as_leader(raft_id, addr).await)
            }
            RaftRequest::RemoveManager { raft_id } => {
                RaftResponse::Membership(self.replica.remove_manager_as_leader(raft_id).await)
            }
        }
    }
}
