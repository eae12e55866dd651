//! The tables and the pure apply function.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{Cluster, Meta, Network, Node, Service, Task};

/// Which table an object lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Node,
    Service,
    Task,
    Network,
    Cluster,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Node => "node",
            Kind::Service => "service",
            Kind::Task => "task",
            Kind::Network => "network",
            Kind::Cluster => "cluster",
        })
    }
}

/// One stored object of any kind. Not boxed: objects are built, cloned and moved whole anyway, and
/// a box per change would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Object {
    Node(Node),
    Service(Service),
    Task(Task),
    Network(Network),
    Cluster(Cluster),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Node(_) => Kind::Node,
            Object::Service(_) => Kind::Service,
            Object::Task(_) => Kind::Task,
            Object::Network(_) => Kind::Network,
            Object::Cluster(_) => Kind::Cluster,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Object::Node(o) => &o.id,
            Object::Service(o) => &o.id,
            Object::Task(o) => &o.id,
            Object::Network(o) => &o.id,
            Object::Cluster(o) => &o.id,
        }
    }

    pub fn meta(&self) -> &Meta {
        match self {
            Object::Node(o) => &o.meta,
            Object::Service(o) => &o.meta,
            Object::Task(o) => &o.meta,
            Object::Network(o) => &o.meta,
            Object::Cluster(o) => &o.meta,
        }
    }

    fn meta_mut(&mut self) -> &mut Meta {
        match self {
            Object::Node(o) => &mut o.meta,
            Object::Service(o) => &mut o.meta,
            Object::Task(o) => &mut o.meta,
            Object::Network(o) => &mut o.meta,
            Object::Cluster(o) => &mut o.meta,
        }
    }
}

/// One write in a proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Fails if the id exists (or, for services and networks, the name is taken).
    Create(Object),
    /// Fails unless the stored object's version equals `object.meta.version` (optimistic concurrency).
    Update(Object),
    /// Fails if the object does not exist.
    Delete { kind: Kind, id: String },
}

/// What raft replicates: a transaction, stamped with the leader's clock when it was proposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub actions: Vec<Action>,
    pub stamp_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

/// One committed change; for deletes, `object` is the object as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub object: Object,
}

/// Why a proposal was rejected as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: Kind, id: String },
    #[error("{kind} with name {name:?} already exists")]
    NameConflict { kind: Kind, name: String },
    #[error("{kind} {id} not found")]
    NotFound { kind: Kind, id: String },
    #[error("update out of sequence: {kind} {id} is at version {found}, the update was based on {expected}")]
    Conflict { kind: Kind, id: String, expected: u64, found: u64 },
}

/// Every table. Maps are ordered so that iteration, serialisation and hashing are deterministic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreState {
    /// Bumped by every applied proposal.
    pub version: u64,
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<String, Service>,
    pub tasks: BTreeMap<String, Task>,
    pub networks: BTreeMap<String, Network>,
    pub cluster: Option<Cluster>,
}

impl StoreState {
    /// Apply a proposal all-or-nothing. Pure: the result depends only on the state and the proposal.
    pub fn apply(&mut self, proposal: &Proposal) -> Result<Vec<Change>, StoreError> {
        let version = self.version + 1;
        // Validate against a scratch copy of what the proposal touches, then commit. Proposals are
        // small, so cloning the touched objects is cheaper than cloning the tables.
        let mut staged: Vec<(Action, Option<Object>)> = Vec::with_capacity(proposal.actions.len());
        let mut scratch = Overlay::default();
        for action in &proposal.actions {
            let before = self.check(action, &scratch)?;
            scratch.record(action);
            staged.push((action.clone(), before));
        }
        let mut changes = Vec::with_capacity(staged.len());
        for (action, before) in staged {
            match action {
                Action::Create(mut object) => {
                    let meta = object.meta_mut();
                    meta.version = version;
                    meta.created_at_ms = proposal.stamp_ms;
                    meta.updated_at_ms = proposal.stamp_ms;
                    self.put(object.clone());
                    changes.push(Change { kind: ChangeKind::Created, object });
                }
                Action::Update(mut object) => {
                    let created = before.as_ref().map(|b| b.meta().created_at_ms).unwrap_or(proposal.stamp_ms);
                    let meta = object.meta_mut();
                    meta.version = version;
                    meta.created_at_ms = created;
                    meta.updated_at_ms = proposal.stamp_ms;
                    self.put(object.clone());
                    changes.push(Change { kind: ChangeKind::Updated, object });
                }
                Action::Delete { kind, id } => {
                    if let Some(object) = self.take(kind, &id) {
                        changes.push(Change { kind: ChangeKind::Deleted, object });
                    }
                }
            }
        }
        self.version = version;
        Ok(changes)
    }

    fn get(&self, kind: Kind, id: &str) -> Option<Object> {
        match kind {
            Kind::Node => self.nodes.get(id).cloned().map(Object::Node),
            Kind::Service => self.services.get(id).cloned().map(Object::Service),
            Kind::Task => self.tasks.get(id).cloned().map(Object::Task),
            Kind::Network => self.networks.get(id).cloned().map(Object::Network),
            Kind::Cluster => self.cluster.clone().filter(|c| c.id == id).map(Object::Cluster),
        }
    }

    fn put(&mut self, object: Object) {
        match object {
            Object::Node(o) => {
                self.nodes.insert(o.id.clone(), o);
            }
            Object::Service(o) => {
                self.services.insert(o.id.clone(), o);
            }
            Object::Task(o) => {
                self.tasks.insert(o.id.clone(), o);
            }
            Object::Network(o) => {
                self.networks.insert(o.id.clone(), o);
            }
            Object::Cluster(o) => self.cluster = Some(o),
        }
    }

    fn take(&mut self, kind: Kind, id: &str) -> Option<Object> {
        match kind {
            Kind::Node => self.nodes.remove(id).map(Object::Node),
            Kind::Service => self.services.remove(id).map(Object::Service),
            Kind::Task => self.tasks.remove(id).map(Object::Task),
            Kind::Network => self.networks.remove(id).map(Object::Network),
            Kind::Cluster => self.cluster.take_if(|c| c.id == id).map(Object::Cluster),
        }
    }

    fn name_taken(&self, object: &Object, scratch: &Overlay) -> bool {
        let (kind, name) = match object {
            Object::Service(s) => (Kind::Service, s.spec.name.as_str()),
            Object::Network(n) => (Kind::Network, n.name.as_str()),
            _ => return false,
        };
        if scratch.names.contains(&(kind, name.to_string())) {
            return true;
        }
        match object {
            Object::Service(s) => self.services.values().any(|o| o.spec.name == name && o.id != s.id),
            Object::Network(n) => self.networks.values().any(|o| o.name == name && o.id != n.id),
            _ => false,
        }
    }

    /// Check one action against the state plus the earlier actions of the same proposal.
    fn check(&self, action: &Action, scratch: &Overlay) -> Result<Option<Object>, StoreError> {
        match action {
            Action::Create(object) => {
                let (kind, id) = (object.kind(), object.id().to_string());
                let exists = scratch.exists(kind, &id).unwrap_or_else(|| self.get(kind, &id).is_some());
                if exists || (kind == Kind::Cluster && self.cluster.is_some()) {
                    return Err(StoreError::AlreadyExists { kind, id });
                }
                if self.name_taken(object, scratch) {
                    let name = match object {
                        Object::Service(s) => s.spec.name.clone(),
                        Object::Network(n) => n.name.clone(),
                        _ => String::new(),
                    };
                    return Err(StoreError::NameConflict { kind, name });
                }
                Ok(None)
            }
            Action::Update(object) => {
                let (kind, id) = (object.kind(), object.id().to_string());
                if scratch.exists(kind, &id) == Some(false) {
                    return Err(StoreError::NotFound { kind, id });
                }
                let Some(current) = self.get(kind, &id) else {
                    return Err(StoreError::NotFound { kind, id });
                };
                let (expected, found) = (object.meta().version, current.meta().version);
                if expected != found || scratch.touched.contains(&(kind, id.clone())) {
                    return Err(StoreError::Conflict { kind, id, expected, found });
                }
                Ok(Some(current))
            }
            Action::Delete { kind, id } => {
                let exists = scratch.exists(*kind, id).unwrap_or_else(|| self.get(*kind, id).is_some());
                if !exists {
                    return Err(StoreError::NotFound { kind: *kind, id: id.clone() });
                }
                Ok(None)
            }
        }
    }
}

/// What earlier actions of the proposal being checked did, so later ones see them.
#[derive(Default)]
struct Overlay {
    /// `Some(true)` created, `Some(false)` deleted.
    presence: BTreeMap<(Kind, String), bool>,
    touched: std::collections::BTreeSet<(Kind, String)>,
    names: std::collections::BTreeSet<(Kind, String)>,
}

impl Overlay {
    fn exists(&self, kind: Kind, id: &str) -> Option<bool> {
        self.presence.get(&(kind, id.to_string())).copied()
    }

    fn record(&mut self, action: &Action) {
        match action {
            Action::Create(object) => {
                self.presence.insert((object.kind(), object.id().to_string()), true);
                self.touched.insert((object.kind(), object.id().to_string()));
                match object {
                    Object::Service(s) => {
                        self.names.insert((Kind::Service, s.spec.name.clone()));
                    }
                    Object::Network(n) => {
                        self.names.insert((Kind::Network, n.name.clone()));
                    }
                    _ => {}
                }
            }
            Action::Update(object) => {
                self.touched.insert((object.kind(), object.id().to_string()));
            }
            Action::Delete { kind, id } => {
                self.presence.insert((*kind, id.clone()), false);
                self.touched.insert((*kind, id.clone()));
            }
        }
    }
}
