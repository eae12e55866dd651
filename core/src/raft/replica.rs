//! A manager's raft replica: the handle the rest of the manager uses.
//!
//! - [`Replica::start`] opens the log and snapshot on the node's disk (restarting from them when
//!   there is state), starts openraft, and registers the raft service on the node's router.
//! - [`Replica::initialize`] is `swarm init`; [`Replica::add_manager`] / [`Replica::remove_manager`]
//!   change the raft membership (from any manager: followers forward to the leader), the latter
//!   refusing, as Swarm does, a removal that would leave too few reachable managers.
//! - [`Replica`] is the cluster's [`Proposer`]: the leader commits, a follower forwards to the
//!   leader, and with no leader (or a leader without quorum) a proposal fails within
//!   `propose_timeout_ms` with [`ProposeError::NoLeader`], Swarm's lost-quorum error.
//! - [`force_new_cluster`] rebuilds a one-manager cluster from this node's local raft state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{
    BasicNode, ChangeMembers, CommittedLeaderId, LogId, Membership, RaftMetrics, ServerState, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::log_store::LogStore;
use super::network::{NetworkFactory, PeerActivity, RaftRequest, RaftResponse, RaftService};
use super::state_machine::{replay_entry, SmHandle, SnapshotBody, SnapshotFile, StateMachine};
use super::{RaftConfig, RaftId, ShoalRaft};
use crate::env::{runtime, Instant, NodeEnv, Transport};
use crate::rpc::{self, CallError, Channel, Router};
use crate::store::{Action, Proposal, ProposeError, Proposer, Store, StoreState, LOST_QUORUM_MESSAGE};
use crate::trace::Tracer;

/// Why a replica operation failed. Messages for membership refusals are Swarm's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReplicaError {
    #[error("raft storage: {0}")]
    Storage(String),
    #[error("invalid raft settings: {0}")]
    Config(String),
    #[error("this node is already part of a raft cluster")]
    AlreadyInitialized,
    #[error("can't remove member from the raft: this would result in a loss of quorum")]
    LossOfQuorum,
    #[error("attempting to demote the last manager of the swarm")]
    LastManager,
    #[error("can't find manager in raft memberlist")]
    NotMember,
    #[error("{}", LOST_QUORUM_MESSAGE)]
    NoLeader,
    #[error("this node is not the leader (leader: {})", leader_addr.as_deref().unwrap_or("unknown"))]
    NotLeader { leader_addr: Option<String> },
    #[error("raft membership change failed: {0}")]
    Membership(String),
    #[error("the manager is shutting down: {0}")]
    Shutdown(String),
}

/// A replica's role, as Swarm shows it (`Leader`, `Reachable` followers, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

/// What the replica's watch publishes: enough for `node ls`'s MANAGER STATUS, the leader-only
/// controllers and the simulator's invariants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub raft_id: RaftId,
    pub term: u64,
    pub role: Role,
    /// The leader this replica follows (or itself), with its address.
    pub leader: Option<(RaftId, String)>,
    /// (term, index) of the last applied entry.
    pub last_applied: Option<(u64, u64)>,
    pub last_log_index: Option<u64>,
    /// For a leader: milliseconds since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// Voters of the effective membership (the last config in a joint one).
    pub voters: BTreeSet<RaftId>,
    /// Learners and voters with their addresses.
    pub members: BTreeMap<RaftId, String>,
    /// This replica was a voter and no longer is: raft removed it (`node demote`). A replica that
    /// has not been made a voter yet (a joining manager catching up) is not removed.
    #[serde(default)]
    pub removed: bool,
    /// Why raft stopped on its own: a storage error (the log or vote could not be written) is fatal
    /// to openraft, which then stops this replica. `None` while it runs or after a requested stop.
    #[serde(default)]
    pub failure: Option<String>,
    /// Index of the log entry that set the membership above; it is committed once
    /// `last_applied` reaches it.
    #[serde(default)]
    pub membership_index: Option<u64>,
}

impl ReplicaStatus {
    fn from_metrics(m: &RaftMetrics<RaftId, BasicNode>) -> Self {
        let membership = m.membership_config.membership();
        let members: BTreeMap<RaftId, String> = membership.nodes().map(|(id, n)| (*id, n.addr.clone())).collect();
        let role = match m.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        // A replica that names itself leader without the Leader role is a leader just removed from
        // the voters (`node demote` of the leader): openraft keeps the old name until a newer term
        // reaches it, but nothing can be sent there.
        let leader = m
            .current_leader
            .filter(|id| *id != m.id || role == Role::Leader)
            .map(|id| (id, members.get(&id).cloned().unwrap_or_default()));
        ReplicaStatus {
            raft_id: m.id,
            term: m.current_term,
            role,
            leader,
            last_applied: m.last_applied.map(|l| (l.leader_id.term, l.index)),
            last_log_index: m.last_log_index,
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            voters: membership.voter_ids().collect(),
            members,
            removed: false,
            membership_index: m.membership_config.log_id().map(|l| l.index),
            failure: match &m.running_state {
                Ok(()) | Err(openraft::error::Fatal::Stopped) => None,
                Err(fatal) => Some(fatal.to_string()),
            },
        }
    }
}

struct Inner {
    raft_id: RaftId,
    addr: String,
    raft: ShoalRaft,
    config: RaftConfig,
    transport: Arc<dyn Transport>,
    router: Router,
    store: Store,
    activity: PeerActivity,
    status: watch::Receiver<ReplicaStatus>,
    tracer: Tracer,
}

/// A handle on this manager's raft replica. Cheap to clone.
#[derive(Clone)]
pub struct Replica {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("raft_id", &self.inner.raft_id).field("addr", &self.inner.addr).finish()
    }
}

fn storage(err: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Storage(err.to_string())
}

/// The service registered on the router holds the replica weakly: the router lives as long as the
/// node serves, and must not keep a shut-down replica alive.
struct WeakService(Weak<Inner>);

#[async_trait]
impl rpc::Service for WeakService {
    type Request = RaftRequest;
    type Response = RaftResponse;

    async fn call(&self, peer: crate::env::transport::Peer, request: RaftRequest) -> RaftResponse {
        match self.0.upgrade() {
            Some(inner) => RaftService { replica: Replica { inner } }.call(peer, request).await,
            None => {
                let gone = ReplicaError::Shutdown("raft stopped".into());
                match request {
                    RaftRequest::Propose { .. } => RaftResponse::Propose(Err(ProposeError::Shutdown(gone.to_string()))),
                    RaftRequest::Append(..) | RaftRequest::Vote(..) | RaftRequest::InstallSnapshot(..) => {
                        let fatal = openraft::error::Fatal::Stopped;
                        match request {
                            RaftRequest::Append(..) => RaftResponse::Append(Err(RaftError::Fatal(fatal))),
                            RaftRequest::Vote(..) => RaftResponse::Vote(Err(RaftError::Fatal(fatal))),
                            _ => RaftResponse::InstallSnapshot(Err(RaftError::Fatal(fatal))),
                        }
                    }
                    _ => RaftResponse::Membership(Err(gone)),
                }
            }
        }
    }
}

impl Replica {
    /// Starts this manager's replica on `env`'s disk and transport. With raft state on the disk it
    /// restarts from it (snapshot into `store`, then the log re-applied); with none it waits to be
    /// initialized ([`Replica::initialize`]) or added by a leader ([`Replica::add_manager`]).
    /// Registers [`Channel::Raft`] on `router`; serving the router is the caller's business.
    pub async fn start(
        env: &NodeEnv,
        raft_id: RaftId,
        config: RaftConfig,
        store: Store,
        router: Router,
    ) -> Result<Replica, ReplicaError> {
        let openraft_config = config.openraft().map_err(|e| ReplicaError::Config(e.to_string()))?;
        let log = LogStore::open(env.disk.clone()).await.map_err(storage)?;
        let torn_bytes = log.torn_bytes;
        let (purged, last) = log.bounds();
        let sm = StateMachine::open(env.disk.clone(), store.clone()).await.map_err(storage)?;
        let activity = PeerActivity::default();
        let network = NetworkFactory { transport: env.transport.clone(), activity: activity.clone() };
        let raft = ShoalRaft::new(raft_id, Arc::new(openraft_config), network, log, SmHandle::new(sm))
            .await
            .map_err(|e| ReplicaError::Storage(e.to_string()))?;

        let metrics = raft.metrics();
        let (status_tx, status_rx) = watch::channel(ReplicaStatus::from_metrics(&metrics.borrow()));
        runtime::spawn(follow_metrics(metrics, status_tx, env.tracer.clone()));

        env.tracer.emit(
            "raft.start",
            serde_json::json!({
                "raft_id": raft_id,
                "torn_bytes": torn_bytes,
                "purged": purged.map(|l| l.index),
                "last_log": last.map(|l| l.index),
                "store_version": store.version(),
            }),
        );
        let inner = Arc::new(Inner {
            raft_id,
            addr: env.addr.clone(),
            raft,
            config,
            transport: env.transport.clone(),
            router: router.clone(),
            store,
            activity,
            status: status_rx,
            tracer: env.tracer.clone(),
        });
        router.register(Channel::Raft, Arc::new(WeakService(Arc::downgrade(&inner))));
        Ok(Replica { inner })
    }

    pub fn raft_id(&self) -> RaftId {
        self.inner.raft_id
    }

    /// Are both handles on the same running replica (not merely the same raft id)?
    pub fn same(&self, other: &Replica) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The openraft instance (for the raft service and for tests).
    pub fn raft(&self) -> &ShoalRaft {
        &self.inner.raft
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &RaftConfig {
        &self.inner.config
    }

    /// `swarm init`: make this node the single voter of a new cluster.
    pub async fn initialize(&self) -> Result<(), ReplicaError> {
        let members = BTreeMap::from([(self.inner.raft_id, BasicNode::new(&self.inner.addr))]);
        match self.inner.raft.initialize(members).await {
            Ok(()) => {
                self.inner.tracer.emit("raft.initialize", serde_json::json!({ "raft_id": self.inner.raft_id }));
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Err(ReplicaError::AlreadyInitialized),
            Err(err) => Err(ReplicaError::Membership(err.to_string())),
        }
    }

    /// The voters this replica knows to be up: itself, and the peers that answered its last raft
    /// call within an election timeout. Only a leader calls every peer (heartbeats), so only its
    /// answer says anything about the others.
    pub fn reachable_voters(&self) -> Vec<RaftId> {
        let window = Duration::from_millis(self.inner.config.election_timeout_max_ms);
        self.status()
            .voters
            .into_iter()
            .filter(|id| *id == self.inner.raft_id || self.inner.activity.is_active(*id, window))
            .collect()
    }

    /// The current status (term, role, leader, membership).
    pub fn status(&self) -> ReplicaStatus {
        self.inner.status.borrow().clone()
    }

    /// Watch the status; it changes on every term, role, leader, apply or membership change.
    pub fn watch(&self) -> watch::Receiver<ReplicaStatus> {
        self.inner.status.clone()
    }

    /// The leader this replica knows of, with its address.
    pub fn leader(&self) -> Option<(RaftId, String)> {
        self.inner.status.borrow().leader.clone()
    }

    /// Has raft removed this replica from the voters (a demoted manager)? See [`ReplicaStatus::removed`].
    pub fn removed_from_membership(&self) -> bool {
        self.inner.status.borrow().removed
    }

    pub fn is_leader(&self) -> bool {
        self.inner.status.borrow().role == Role::Leader
    }

    /// Leader, and acknowledged by a quorum within an election timeout. openraft 0.9 has no
    /// CheckQuorum: a leader cut off in a minority keeps the Leader role (Swarm's would step down),
    /// so leader-only controllers should key on this rather than on [`Replica::is_leader`].
    pub fn leads_with_quorum(&self) -> bool {
        self.is_leader() && !self.quorum_stale()
    }

    /// Has a leader gone longer than an election timeout without a quorum's acknowledgement?
    fn quorum_stale(&self) -> bool {
        let limit = self.inner.config.election_timeout_max_ms;
        self.inner.raft.metrics().borrow().millis_since_quorum_ack.is_some_and(|ms| ms > limit)
    }

    /// If the quorum looks lost, give it a few heartbeats to answer again (peers that just came
    /// back are reached after openraft's 500 ms unreachable back-off). False: still lost.
    async fn wait_quorum(&self) -> bool {
        if !self.quorum_stale() {
            return true;
        }
        let grace = Duration::from_millis(self.inner.config.heartbeat_interval_ms * 4).max(Duration::from_millis(750));
        let deadline = runtime::now() + grace;
        let mut metrics = self.inner.raft.metrics();
        while runtime::now() < deadline {
            let left = deadline.saturating_duration_since(runtime::now());
            let _ = runtime::timeout(left, metrics.changed()).await;
            if !self.quorum_stale() {
                return true;
            }
        }
        false
    }

    fn propose_deadline(&self) -> Instant {
        runtime::now() + Duration::from_millis(self.inner.config.propose_timeout_ms)
    }

    /// Returns once this replica (as leader) has confirmed with a quorum that it still leads and has
    /// applied everything committed before the call: reads after it see every acknowledged write.
    ///
    /// openraft confirms with one round of heartbeats whose deadline is one heartbeat interval, and
    /// answers `QuorumNotEnough` if a quorum did not reply within it — a single lost message or a
    /// slow link is enough. That is not a lost quorum, so the round is repeated until
    /// `propose_timeout_ms` runs out; only a quorum whose acknowledgement has gone stale (after
    /// [`Replica::wait_quorum`]'s grace) fails at once with Swarm's lost-quorum error.
    pub async fn ensure_linearizable(&self) -> Result<(), ProposeError> {
        let deadline = self.propose_deadline();
        let pause = Duration::from_millis((self.inner.config.heartbeat_interval_ms / 5).max(1));
        loop {
            let left = deadline.saturating_duration_since(runtime::now());
            match runtime::timeout(left, self.inner.raft.ensure_linearizable()).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)))) => {
                    return Err(ProposeError::NotLeader { leader_addr: f.leader_node.map(|n| n.addr) })
                }
                Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_)))) => {
                    if runtime::now() + pause >= deadline || !self.wait_quorum().await {
                        return Err(ProposeError::NoLeader);
                    }
                    runtime::sleep(pause).await;
                }
                Ok(Err(RaftError::Fatal(fatal))) => return Err(ProposeError::Shutdown(fatal.to_string())),
                Err(_) => return Err(ProposeError::NoLeader),
            }
        }
    }

    /// Commit `actions` as the leader, stamped with the leader's clock.
    pub async fn propose_as_leader(&self, actions: Vec<Action>) -> Result<u64, ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader { leader_addr: self.leader().map(|(_, addr)| addr) });
        }
        if !self.wait_quorum().await {
            // A leader cut off from its quorum cannot commit; say so now instead of at the deadline.
            return Err(ProposeError::NoLeader);
        }
        let proposal = Proposal { actions, stamp_ms: runtime::unix_millis() };
        let wait = Duration::from_millis(self.inner.config.propose_timeout_ms);
        match runtime::timeout(wait, self.inner.raft.client_write(proposal)).await {
            Ok(Ok(reply)) => reply.data.map_err(ProposeError::Rejected),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ProposeError::NotLeader { leader_addr: f.leader_node.map(|n| n.addr) })
            }
            Ok(Err(RaftError::APIError(err))) => Err(ProposeError::Unknown(err.to_string())),
            Ok(Err(RaftError::Fatal(fatal))) => Err(ProposeError::Shutdown(fatal.to_string())),
            // Not acknowledged by a quorum in time. If the quorum is gone this is Swarm's lost-quorum
            // error; the entry is then uncommitted, and is committed later only if this leader
            // regains its quorum first (a caller must treat NoLeader as "not acknowledged").
            Err(_) if self.quorum_stale() || !self.is_leader() => Err(ProposeError::NoLeader),
            Err(_) => Err(ProposeError::Unknown("the commit did not finish in time".into())),
        }
    }

    /// Send `request` to the leader, waiting (until `deadline`) for one to be known. `Ok(None)`:
    /// this replica is the leader itself, handle it locally. The leader's reply is awaited for
    /// `reply_wait`, or by default until `deadline` and at most `forward_timeout_ms`.
    async fn to_leader(
        &self,
        request: &RaftRequest,
        deadline: Instant,
        reply_wait: Option<Duration>,
    ) -> Result<Option<RaftResponse>, Forward> {
        let mut status = self.inner.status.clone();
        loop {
            let current = status.borrow_and_update().clone();
            if current.role == Role::Leader {
                return Ok(None);
            }
            let now = runtime::now();
            if now >= deadline {
                return Err(Forward::NoLeader);
            }
            match current.leader {
                Some((leader, addr)) if leader != self.inner.raft_id && !addr.is_empty() => {
                    let wait = reply_wait.unwrap_or_else(|| {
                        deadline
                            .saturating_duration_since(now)
                            .min(Duration::from_millis(self.inner.config.forward_timeout_ms))
                    });
                    let reply: Result<RaftResponse, CallError> =
                        rpc::call(self.inner.transport.as_ref(), &addr, Channel::Raft, request, wait).await;
                    match reply {
                        Ok(reply) if !not_leader(&reply) => return Ok(Some(reply)),
                        // It stepped down before it saw the request: nothing was done, try again.
                        Ok(_) => runtime::sleep(Duration::from_millis(50)).await,
                        // Refused: the request never reached it; wait for a new leader and retry.
                        Err(CallError::Transport(crate::env::TransportError::Unreachable { .. })) => {
                            runtime::sleep(Duration::from_millis(50)).await
                        }
                        // Silence: the leader may have acted on it, so retrying could apply it
                        // twice. If we have lost that leader meanwhile, report no leader.
                        Err(err) => {
                            let still = self.leader().is_some_and(|(id, _)| id == leader);
                            return Err(if still { Forward::Unknown(err.to_string()) } else { Forward::NoLeader });
                        }
                    }
                }
                _ => {
                    // No leader known: wait for the status to change (an election), a bit at a time.
                    // A closed status channel (raft shut down, e.g. this manager was demoted) never
                    // changes again: waiting on it returns at once, and looping would spin without
                    // time passing — this replica will not learn of a leader any more.
                    if let Ok(Err(_)) = runtime::timeout(Duration::from_millis(100), status.changed()).await {
                        return Err(Forward::NoLeader);
                    }
                }
            }
        }
    }

    /// Add a manager: as a learner first (it catches up without counting for quorum), then as a
    /// voter. Idempotent: an existing voter is left as it is. Runs on the leader (forwarded).
    pub async fn add_manager(&self, raft_id: RaftId, addr: impl Into<String>) -> Result<(), ReplicaError> {
        let addr = addr.into();
        let request = RaftRequest::AddManager { raft_id, addr: addr.clone() };
        // The leader bounds its own work (catch-up, then the voter change); a shorter wait here
        // would report silence while it is still at it, and a retry would race with it.
        let reply_wait = self.membership_wait() * 2 + Duration::from_millis(self.inner.config.forward_timeout_ms);
        self.membership_call(&request, reply_wait, || self.add_manager_as_leader(raft_id, addr.clone())).await
    }

    /// Remove a manager from the raft membership, refusing (Swarm's `CanRemoveMember`) when the
    /// managers still reachable after the removal would be fewer than the new quorum.
    pub async fn remove_manager(&self, raft_id: RaftId) -> Result<(), ReplicaError> {
        let request = RaftRequest::RemoveManager { raft_id };
        let reply_wait = self.membership_wait() + Duration::from_millis(self.inner.config.forward_timeout_ms);
        self.membership_call(&request, reply_wait, || self.remove_manager_as_leader(raft_id)).await
    }

    /// A membership change: done here when this replica leads (`as_leader`), else forwarded to the
    /// leader and waited on for up to `reply_wait`; retried on a leader change until the proposal deadline.
    async fn membership_call<F, Fut>(
        &self,
        request: &RaftRequest,
        reply_wait: Duration,
        as_leader: F,
    ) -> Result<(), ReplicaError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), ReplicaError>>,
    {
        let deadline = self.propose_deadline();
        loop {
            let reply = match self.to_leader(request, deadline, Some(reply_wait)).await {
                Ok(None) => as_leader().await,
                Ok(Some(RaftResponse::Membership(reply))) => reply,
                Ok(Some(_)) => Err(ReplicaError::Membership("unexpected reply from the leader".into())),
                Err(Forward::NoLeader) => Err(ReplicaError::NoLeader),
                Err(Forward::Unknown(err)) => Err(ReplicaError::Membership(err)),
            };
            match reply {
                // Let time pass before asking again: this replica's status (which says whether it
                // leads) is published by another task, and may lag openraft's own state.
                Err(ReplicaError::NotLeader { .. }) if runtime::now() < deadline => {
                    runtime::sleep(Duration::from_millis(20)).await
                }
                other => return other,
            }
        }
    }

    fn not_leader_error(&self) -> ReplicaError {
        ReplicaError::NotLeader { leader_addr: self.leader().map(|(_, addr)| addr) }
    }

    fn membership_error(&self, err: RaftError<RaftId, ClientWriteError<RaftId, BasicNode>>) -> ReplicaError {
        match err {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                ReplicaError::NotLeader { leader_addr: f.leader_node.map(|n| n.addr) }
            }
            RaftError::APIError(other) => ReplicaError::Membership(other.to_string()),
            RaftError::Fatal(fatal) => ReplicaError::Shutdown(fatal.to_string()),
        }
    }

    /// Membership changes wait for a learner to catch up; bound them so a dead joiner cannot hang
    /// the control API.
    fn membership_wait(&self) -> Duration {
        Duration::from_millis(self.inner.config.propose_timeout_ms * 3)
    }

    /// Add `raft_id` as a learner, wait until it has really caught up, then make it a voter.
    ///
    /// The wait is ours, not openraft's: its blocking `add_learner` calls a learner caught up once
    /// the leader's log is within `replication_lag_threshold` (5,000) entries of what the learner
    /// acknowledged — and a learner that never answered counts as 0, so on any log shorter than that
    /// it returns at once. Proposing the voter then puts raft in a joint configuration that needs the
    /// new member for every commit: a node that is down (promoted right after it crashed) wedges the
    /// cluster, a one-manager swarm included, until it serves raft again. So the voter change is only
    /// proposed once the learner has acknowledged the very entry that added it (it is up, serving
    /// raft, and holds the log); otherwise the learner is removed again and the membership is left as
    /// it was.
    pub async fn add_manager_as_leader(&self, raft_id: RaftId, addr: String) -> Result<(), ReplicaError> {
        if !self.is_leader() {
            return Err(self.not_leader_error());
        }
        if !self.wait_quorum().await {
            return Err(ReplicaError::NoLeader);
        }
        self.settle_membership().await?;
        if !self.leads_as_voter() {
            return Err(ReplicaError::NoLeader);
        }
        if self.status().voters.contains(&raft_id) {
            return Ok(());
        }
        let wait = self.membership_wait();
        let deadline = runtime::now() + wait;
        let raft = &self.inner.raft;
        let added = match runtime::timeout(wait, raft.add_learner(raft_id, BasicNode::new(&addr), false)).await {
            Ok(Ok(reply)) => reply.log_id,
            Ok(Err(err)) => return Err(self.membership_error(err)),
            // The learner entry did not commit: the voters' quorum is gone.
            Err(_) => return Err(ReplicaError::NoLeader),
        };
        match self.wait_caught_up(raft_id, added, deadline).await {
            CatchUp::Done => {}
            CatchUp::NotLeader => return Err(self.not_leader_error()),
            CatchUp::Removed => return Err(ReplicaError::NotMember),
            CatchUp::TimedOut => {
                // Leave the membership as it was: a learner does not count for quorum, but one that
                // stays behind forever is a member nobody asked for.
                let remove = ChangeMembers::RemoveNodes(BTreeSet::from([raft_id]));
                let removed = runtime::timeout(wait, raft.change_membership(remove, false)).await;
                self.inner.tracer.emit(
                    "raft.add_manager_failed",
                    serde_json::json!({
                        "raft_id": raft_id,
                        "addr": addr,
                        "learner_removed": matches!(removed, Ok(Ok(_))),
                    }),
                );
                return Err(ReplicaError::Membership(format!("manager {raft_id} at {addr} did not catch up in time")));
            }
        }
        if !self.leads_as_voter() {
            return Err(ReplicaError::NoLeader);
        }
        let voters = BTreeSet::from([raft_id]);
        match runtime::timeout(wait, raft.change_membership(ChangeMembers::AddVoterIds(voters), false)).await {
            Ok(Ok(_)) => {
                self.inner.tracer.emit("raft.add_manager", serde_json::json!({ "raft_id": raft_id, "addr": addr }));
                Ok(())
            }
            Ok(Err(err)) => Err(self.membership_error(err)),
            Err(_) => Err(ReplicaError::NoLeader),
        }
    }

    /// Is this leader a voter of the configuration its membership is heading to? A leader that
    /// removed itself (`node demote` of the leader) keeps leading until it steps down, and must not
    /// change the membership any more: openraft allows membership changes only to a voting leader.
    fn leads_as_voter(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        m.state == ServerState::Leader
            && membership.get_joint_config().last().is_some_and(|last| last.contains(&self.inner.raft_id))
    }

    /// Finish a membership change left half-way: a change whose caller stopped waiting (its quorum
    /// was away) can leave raft in a joint configuration, which openraft completes only within the
    /// same call. A later change from a joint configuration takes two steps, the first of which may
    /// already drop this leader; so the leader first settles on the configuration the change was
    /// heading to. `Ok(true)` if it did.
    pub async fn settle_membership(&self) -> Result<bool, ReplicaError> {
        let (joint, committed) = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            if m.state != ServerState::Leader {
                return Err(self.not_leader_error());
            }
            let index = m.membership_config.log_id().map(|l| l.index);
            let applied = m.last_applied.map(|l| l.index);
            (m.membership_config.membership().get_joint_config().len() > 1, index <= applied)
        };
        if !joint || !committed {
            return Ok(false);
        }
        let settle = ChangeMembers::AddVoterIds(BTreeSet::new());
        match runtime::timeout(self.membership_wait(), self.inner.raft.change_membership(settle, false)).await {
            Ok(Ok(_)) => {
                self.inner.tracer.emit("raft.membership_settled", serde_json::json!({"raft_id": self.inner.raft_id}));
                Ok(true)
            }
            Ok(Err(err)) => Err(self.membership_error(err)),
            Err(_) => Err(ReplicaError::NoLeader),
        }
    }

    /// Wait (until `deadline`) for the leader's replication to `raft_id` to reach `entry`.
    async fn wait_caught_up(&self, raft_id: RaftId, entry: LogId<RaftId>, deadline: Instant) -> CatchUp {
        let mut metrics = self.inner.raft.metrics();
        loop {
            let state = {
                let m = metrics.borrow_and_update();
                if m.state != ServerState::Leader {
                    CatchUp::NotLeader
                } else if m.membership_config.membership().get_node(&raft_id).is_none() {
                    CatchUp::Removed
                } else {
                    let matched = m.replication.as_ref().and_then(|r| r.get(&raft_id).cloned().flatten());
                    if matched.is_some_and(|l| l.index >= entry.index) {
                        CatchUp::Done
                    } else {
                        CatchUp::TimedOut
                    }
                }
            };
            if !matches!(state, CatchUp::TimedOut) {
                return state;
            }
            let left = deadline.saturating_duration_since(runtime::now());
            if left.is_zero() {
                return CatchUp::TimedOut;
            }
            match runtime::timeout(left, metrics.changed()).await {
                Ok(Ok(())) => {}
                // Raft stopped: no longer the leader.
                Ok(Err(_)) => return CatchUp::NotLeader,
                Err(_) => return CatchUp::TimedOut,
            }
        }
    }

    pub async fn remove_manager_as_leader(&self, raft_id: RaftId) -> Result<(), ReplicaError> {
        if !self.is_leader() {
            return Err(self.not_leader_error());
        }
        self.settle_membership().await?;
        if !self.leads_as_voter() {
            return Err(ReplicaError::NoLeader);
        }
        let status = self.status();
        if !status.members.contains_key(&raft_id) {
            return Err(ReplicaError::NotMember);
        }
        let raft = &self.inner.raft;
        let wait = self.membership_wait();
        if status.voters.contains(&raft_id) {
            if status.voters.len() == 1 {
                return Err(ReplicaError::LastManager);
            }
            // swarmkit's CanRemoveMember: count the members left after the removal that are
            // reachable (this node, and peers that answered within an election timeout).
            let reachable = self.reachable_voters().into_iter().filter(|id| *id != raft_id).count();
            let quorum = (status.voters.len() - 1) / 2 + 1;
            if reachable < quorum {
                return Err(ReplicaError::LossOfQuorum);
            }
            let remove = ChangeMembers::RemoveVoters(BTreeSet::from([raft_id]));
            match runtime::timeout(wait, raft.change_membership(remove, false)).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return Err(self.membership_error(err)),
                Err(_) => return Err(ReplicaError::NoLeader),
            }
        } else {
            let remove = ChangeMembers::RemoveNodes(BTreeSet::from([raft_id]));
            match runtime::timeout(wait, raft.change_membership(remove, false)).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return Err(self.membership_error(err)),
                Err(_) => return Err(ReplicaError::NoLeader),
            }
        }
        self.inner.tracer.emit("raft.remove_manager", serde_json::json!({ "raft_id": raft_id }));
        Ok(())
    }

    /// Stop raft and stop serving raft requests. The disk keeps the state for a later start.
    pub async fn shutdown(&self) -> Result<(), ReplicaError> {
        self.inner.router.unregister(Channel::Raft);
        self.inner.raft.shutdown().await.map_err(|e| ReplicaError::Shutdown(e.to_string()))
    }
}

enum Forward {
    NoLeader,
    Unknown(String),
}

/// How the wait for a new learner ended ([`Replica::wait_caught_up`]); `TimedOut` also while waiting.
enum CatchUp {
    Done,
    NotLeader,
    Removed,
    TimedOut,
}

fn not_leader(reply: &RaftResponse) -> bool {
    matches!(
        reply,
        RaftResponse::Propose(Err(ProposeError::NotLeader { .. }))
            | RaftResponse::Membership(Err(ReplicaError::NotLeader { .. }))
    )
}

#[async_trait]
impl Proposer for Replica {
    async fn propose(&self, actions: Vec<Action>) -> Result<u64, ProposeError> {
        let deadline = self.propose_deadline();
        let request = RaftRequest::Propose { actions: actions.clone() };
        loop {
            let reply = match self.to_leader(&request, deadline, None).await {
                Ok(None) => self.propose_as_leader(actions.clone()).await,
                Ok(Some(RaftResponse::Propose(reply))) => reply,
                Ok(Some(_)) => Err(ProposeError::Unknown("unexpected reply from the leader".into())),
                Err(Forward::NoLeader) => Err(ProposeError::NoLeader),
                Err(Forward::Unknown(err)) => Err(ProposeError::Unknown(err)),
            };
            match reply {
                // Lost leadership before proposing: nothing was done, so it is safe to go again.
                Err(ProposeError::NotLeader { .. }) if runtime::now() < deadline => {
                    runtime::sleep(Duration::from_millis(20)).await
                }
                Err(ProposeError::NotLeader { .. }) => return Err(ProposeError::NoLeader),
                other => return other,
            }
        }
    }
}

/// Publishes openraft's metrics as [`ReplicaStatus`] and traces role/term/leader changes.
async fn follow_metrics(
    mut metrics: watch::Receiver<RaftMetrics<RaftId, BasicNode>>,
    status: watch::Sender<ReplicaStatus>,
    tracer: Tracer,
) {
    loop {
        let mut next = ReplicaStatus::from_metrics(&metrics.borrow_and_update());
        let before = status.borrow().clone();
        let voter = |s: &ReplicaStatus| s.voters.contains(&s.raft_id);
        // Sticky while it stays out; a voter again (a removal that did not commit) is not removed.
        next.removed = !voter(&next) && (before.removed || voter(&before));
        if next.removed && !before.removed {
            tracer.emit("raft.removed", serde_json::json!({"raft_id": next.raft_id, "term": next.term}));
        }
        if let (Some(failure), None) = (&next.failure, &before.failure) {
            tracer.emit(
                "raft.failed",
                serde_json::json!({"raft_id": next.raft_id, "term": next.term, "role": before.role, "error": failure}),
            );
        }
        if before.role != next.role || before.term != next.term || before.leader != next.leader {
            tracer.emit(
                "raft.state",
                serde_json::json!({
                    "raft_id": next.raft_id,
                    "term": next.term,
                    "role": next.role,
                    "leader": next.leader.as_ref().map(|(id, _)| *id),
                }),
            );
        }
        status.send_if_modified(|current| {
            if *current != next {
                *current = next;
                true
            } else {
                false
            }
        });
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// What [`force_new_cluster`] recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The last log id in the recovered state.
    pub last_log_id: Option<(u64, u64)>,
    pub store_version: u64,
    /// Entries replayed on top of the snapshot.
    pub replayed_entries: usize,
}

/// `swarm init --force-new-cluster`: turn this node's local raft state into a new one-manager
/// cluster, then start it.
///
/// As Swarm (etcd raft) does, everything in the local log counts, committed or not: the snapshot
/// plus every entry after it is applied into a new state. The raft state on the disk is then
/// replaced by a snapshot of that state whose membership is this node alone, an empty log whose
/// purge point is the snapshot, and a vote for this node in the old term (so its next election
/// starts a newer term). The replica then starts as the only voter and elects itself.
/// Other managers are no longer raft members; the caller updates their node objects.
pub async fn force_new_cluster(
    env: &NodeEnv,
    raft_id: RaftId,
    config: RaftConfig,
    store: Store,
    router: Router,
) -> Result<(Replica, Recovered), ReplicaError> {
    let disk = env.disk.clone();
    let log = LogStore::open(disk.clone()).await.map_err(storage)?;
    let snapshot = SnapshotFile::load(disk.as_ref()).await.map_err(storage)?;
    let (mut state, mut last) = match &snapshot {
        Some(file) => (file.body.state.clone(), file.body.last_applied),
        None => (StoreState::default(), None),
    };
    let mut replayed_entries = 0;
    for entry in log.entries() {
        if last.is_some_and(|l| entry.log_id.index <= l.index) {
            continue;
        }
        replay_entry(&mut state, &entry);
        last = Some(entry.log_id);
        replayed_entries += 1;
    }
    let old_term = log.vote().map(|v| v.leader_id().term).unwrap_or(0);
    let term = old_term.max(last.map(|l| l.leader_id.term).unwrap_or(0));
    // A new history point owned by this node: purging/snapshotting at an index with a log id of
    // our own, so no old member's entry at that index can be confused with it.
    let index = last.map(|l| l.index).unwrap_or(0);
    let point = LogId::new(CommittedLeaderId::new(term, raft_id), index);
    let membership =
        Membership::new(vec![BTreeSet::from([raft_id])], BTreeMap::from([(raft_id, BasicNode::new(&env.addr))]));
    let file = SnapshotFile {
        meta: openraft::SnapshotMeta {
            last_log_id: Some(point),
            last_membership: StoredMembership::new(Some(point), membership.clone()),
            snapshot_id: format!("force-new-cluster-{term}-{index}"),
        },
        body: SnapshotBody {
            last_applied: Some(point),
            membership: StoredMembership::new(Some(point), membership),
            state: state.clone(),
        },
    };
    file.save(disk.as_ref()).await.map_err(storage)?;
    LogStore::reset(disk.as_ref(), Some(point), Some(point), Some(Vote::new(term, raft_id))).await.map_err(storage)?;
    let recovered = Recovered { last_log_id: Some((term, index)), store_version: state.version, replayed_entries };
    env.tracer.emit(
        "raft.force_new_cluster",
        serde_json::json!({ "raft_id": raft_id, "term": term, "index": index, "store_version": state.version }),
    );
    let replica = Replica::start(env, raft_id, config, store, router).await?;
    // The only voter: no need to wait for an election timeout.
    let _ = replica.raft().trigger().elect().await;
    Ok((replica, recovered))
}
