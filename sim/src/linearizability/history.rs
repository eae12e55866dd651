//! The record of a run's control-API calls: every request a client sent to a manager — the CLI's
//! steps, requests sent at once, the control workload's — with when it was sent and when and what
//! it answered, in one order of events shared by all clients.
//!
//! Each attempt is its own call: the CLI moves on to the next manager when one does not answer, and
//! the attempt it gave up on may still take effect, so it is recorded as a call without an answer
//! (the checker lets such a call take effect at any later point, or never). Answers are kept in a
//! compact form: what the sequential model reads of them ([`Answer`]).

use std::sync::{Arc, Mutex};

use shoal_core::api::{Availability, FailureAction, Labels, ServiceMode, ServiceSpec};
use shoal_core::control::{ControlError, ControlRequest, ControlResponse, ControlResult, NodeView, ServiceView};

/// A service as an answer showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSeen {
    pub id: String,
    pub name: String,
    pub mode: ServiceMode,
    pub image: String,
}

/// A node as an answer showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSeen {
    pub id: String,
    pub hostname: String,
    pub availability: Availability,
    pub labels: Labels,
}

/// A network as an answer showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSeen {
    pub id: String,
    pub name: String,
}

/// What a call got back, as far as the model reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Done,
    Created(String),
    Services(Vec<ServiceSeen>),
    Service(ServiceSeen),
    Nodes(Vec<NodeSeen>),
    Node(NodeSeen),
    Networks(Vec<NetworkSeen>),
    Network(NetworkSeen),
    /// A successful answer the model does not read (info, tasks, logs, tokens).
    Other,
    /// The manager answered with a refusal.
    Refused(ControlError),
    /// No answer came back (the message or the reply was lost, the manager died, the deadline
    /// passed): the request may or may not have taken effect.
    Lost(String),
}

impl ServiceSeen {
    fn of(view: &ServiceView) -> ServiceSeen {
        let spec = &view.service.spec;
        ServiceSeen {
            id: view.service.id.clone(),
            name: spec.name.clone(),
            mode: spec.mode.clone(),
            image: spec.task.image.clone(),
        }
    }
}

impl NodeSeen {
    fn of(view: &NodeView) -> NodeSeen {
        NodeSeen {
            id: view.node.id.clone(),
            hostname: view.node.hostname().to_string(),
            availability: view.node.spec.availability,
            labels: view.node.spec.labels.clone(),
        }
    }
}

impl Answer {
    /// The compact form of a manager's answer.
    pub fn of(result: &ControlResult) -> Answer {
        match result {
            Ok(ControlResponse::Done) => Answer::Done,
            Ok(ControlResponse::Created { id }) => Answer::Created(id.clone()),
            Ok(ControlResponse::Services(views)) => Answer::Services(views.iter().map(ServiceSeen::of).collect()),
            Ok(ControlResponse::Service(view)) => Answer::Service(ServiceSeen::of(view)),
            Ok(ControlResponse::Nodes(views)) => Answer::Nodes(views.iter().map(NodeSeen::of).collect()),
            Ok(ControlResponse::Node(view)) => Answer::Node(NodeSeen::of(view)),
            Ok(ControlResponse::Networks(networks)) => Answer::Networks(
                networks.iter().map(|n| NetworkSeen { id: n.id.clone(), name: n.name.clone() }).collect(),
            ),
            Ok(ControlResponse::Network(n)) => Answer::Network(NetworkSeen { id: n.id.clone(), name: n.name.clone() }),
            Ok(_) => Answer::Other,
            Err(err) => Answer::Refused(err.clone()),
        }
    }
}

/// A point in the run: its place in the order of events, and virtual milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u64,
    pub ms: u64,
}

/// One request to one manager.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlCall {
    /// Who sent it (`cli`, `cli-2` for the second of requests sent at once, `workload`).
    pub client: String,
    /// The manager's address it went to.
    pub manager: String,
    pub request: Request,
    pub invoked: Stamp,
    /// When and what it answered; `None` if no answer was recorded (still in flight at the end).
    pub returned: Option<(Stamp, Answer)>,
}

/// A request, as far as the model reads it (the whole spec of a service is not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    ServiceCreate {
        spec: SpecSeen,
    },
    ServiceUpdate {
        service: String,
        spec: SpecSeen,
    },
    ServiceScale {
        service: String,
        replicas: u64,
    },
    ServiceRemove {
        service: String,
    },
    ServiceRollback {
        service: String,
    },
    ServiceList,
    ServiceInspect {
        service: String,
    },
    NodeUpdate {
        node: String,
        availability: Option<Availability>,
        label_add: Labels,
        label_rm: Vec<String>,
    },
    NodeRemove {
        node: String,
    },
    NodeList,
    NodeInspect {
        node: String,
    },
    NetworkCreate {
        name: String,
    },
    NetworkRemove {
        network: String,
    },
    NetworkList,
    NetworkInspect {
        network: String,
    },
    /// A request the model does not cover (info, tasks, logs, tokens, promote/demote, swarm
    /// settings): it changes none of what the model tracks.
    Other(&'static str),
}

/// What the model reads of a service spec sent in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecSeen {
    pub name: String,
    pub mode: ServiceMode,
    pub image: String,
    /// A failed rolling update rolls back by itself (`--update-failure-action rollback`): the
    /// orchestrator may change the spec later, with no request of a client.
    pub rolls_back: bool,
}

impl SpecSeen {
    fn of(spec: &ServiceSpec) -> SpecSeen {
        SpecSeen {
            name: spec.name.clone(),
            mode: spec.mode.clone(),
            image: spec.task.image.clone(),
            rolls_back: spec.update_config.failure_action == FailureAction::Rollback,
        }
    }
}

impl Request {
    pub fn of(request: &ControlRequest) -> Request {
        match request {
            ControlRequest::ServiceCreate { spec } => Request::ServiceCreate { spec: SpecSeen::of(spec) },
            ControlRequest::ServiceUpdate { service, spec, .. } => {
                Request::ServiceUpdate { service: service.clone(), spec: SpecSeen::of(spec) }
            }
            ControlRequest::ServiceScale { service, replicas } => {
                Request::ServiceScale { service: service.clone(), replicas: *replicas }
            }
            ControlRequest::ServiceRemove { service } => Request::ServiceRemove { service: service.clone() },
            ControlRequest::ServiceRollback { service } => Request::ServiceRollback { service: service.clone() },
            ControlRequest::ServiceList => Request::ServiceList,
            ControlRequest::ServiceInspect { service } => Request::ServiceInspect { service: service.clone() },
            ControlRequest::NodeUpdate { node, availability, label_add, label_rm } => Request::NodeUpdate {
                node: node.clone(),
                availability: *availability,
                label_add: label_add.clone(),
                label_rm: label_rm.clone(),
            },
            ControlRequest::NodeRemove { node, .. } => Request::NodeRemove { node: node.clone() },
            ControlRequest::NodeList => Request::NodeList,
            ControlRequest::NodeInspect { node } => Request::NodeInspect { node: node.clone() },
            ControlRequest::NetworkCreate { name, .. } => Request::NetworkCreate { name: name.clone() },
            ControlRequest::NetworkRemove { network } => Request::NetworkRemove { network: network.clone() },
            ControlRequest::NetworkList => Request::NetworkList,
            ControlRequest::NetworkInspect { network } => Request::NetworkInspect { network: network.clone() },
            ControlRequest::Info => Request::Other("info"),
            ControlRequest::NodePromote { .. } => Request::Other("node promote"),
            ControlRequest::NodeDemote { .. } => Request::Other("node demote"),
            ControlRequest::ServiceLogs { .. } => Request::Other("service logs"),
            ControlRequest::TaskList { .. } => Request::Other("task ls"),
            ControlRequest::JoinToken { .. } => Request::Other("join-token"),
            ControlRequest::ClusterUpdate { .. } => Request::Other("swarm update"),
            ControlRequest::SecretCreate { .. } => Request::Other("secret create"),
            ControlRequest::SecretList => Request::Other("secret ls"),
            ControlRequest::SecretInspect { .. } => Request::Other("secret inspect"),
            ControlRequest::SecretRemove { .. } => Request::Other("secret rm"),
            ControlRequest::ConfigCreate { .. } => Request::Other("config create"),
            ControlRequest::ConfigList => Request::Other("config ls"),
            ControlRequest::ConfigInspect { .. } => Request::Other("config inspect"),
            ControlRequest::ConfigRemove { .. } => Request::Other("config rm"),
            ControlRequest::SecretUpdate { .. } => Request::Other("secret update"),
            ControlRequest::ConfigUpdate { .. } => Request::Other("config update"),
            ControlRequest::SecretsKey => Request::Other("secrets key"),
            ControlRequest::UnlockKey { .. } => Request::Other("unlock-key"),
            ControlRequest::SwarmAutolock { .. } => Request::Other("swarm update --autolock"),
            ControlRequest::Unlock { .. } => Request::Other("swarm unlock"),
            ControlRequest::CaInspect => Request::Other("swarm ca"),
            ControlRequest::CaRotate { .. } => Request::Other("swarm ca --rotate"),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<ControlCall>,
    next_seq: u64,
}

/// The run's record of control calls, shared by every client of the run (a cheap clone).
#[derive(Debug, Clone, Default)]
pub struct ControlHistory {
    inner: Arc<Mutex<Inner>>,
}

/// Which recorded call an answer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallId(usize);

impl ControlHistory {
    /// `client` sends `request` to `manager` now (`ms`: virtual milliseconds since the epoch).
    pub fn invoke(&self, client: &str, manager: &str, request: &ControlRequest, ms: u64) -> CallId {
        let mut inner = self.inner.lock().expect("history lock");
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.calls.push(ControlCall {
            client: client.to_string(),
            manager: manager.to_string(),
            request: Request::of(request),
            invoked: Stamp { seq, ms },
            returned: None,
        });
        CallId(inner.calls.len() - 1)
    }

    /// The call answered `answer` now.
    pub fn answer(&self, call: CallId, answer: Answer, ms: u64) {
        let mut inner = self.inner.lock().expect("history lock");
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if let Some(entry) = inner.calls.get_mut(call.0) {
            entry.returned = Some((Stamp { seq, ms }, answer));
        }
    }

    /// Every call so far, in the order they were sent.
    pub fn calls(&self) -> Vec<ControlCall> {
        self.inner.lock().expect("history lock").calls.clone()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("history lock").calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
