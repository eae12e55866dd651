//! The tables and the pure apply function.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::api::{Cluster, Config, Meta, Network, Node, Secret, Service, Task};

/// Which table an object lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Node,
    Service,
    Task,
    Network,
    Cluster,
    Secret,
    Config,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Node => "node",
            Kind::Service => "service",
            Kind::Task => "task",
            Kind::Network => "network",
            Kind::Cluster => "cluster",
            Kind::Secret => "secret",
            Kind::Config => "config",
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
    /// Its value sealed: see [`crate::secrets`].
    Secret(Secret),
    Config(Config),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Node(_) => Kind::Node,
            Object::Service(_) => Kind::Service,
            Object::Task(_) => Kind::Task,
            Object::Network(_) => Kind::Network,
            Object::Cluster(_) => Kind::Cluster,
            Object::Secret(_) => Kind::Secret,
            Object::Config(_) => Kind::Config,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Object::Node(o) => &o.id,
            Object::Service(o) => &o.id,
            Object::Task(o) => &o.id,
            Object::Network(o) => &o.id,
            Object::Cluster(o) => &o.id,
            Object::Secret(o) => &o.id,
            Object::Config(o) => &o.id,
        }
    }

    pub fn meta(&self) -> &Meta {
        match self {
            Object::Node(o) => &o.meta,
            Object::Service(o) => &o.meta,
            Object::Task(o) => &o.meta,
            Object::Network(o) => &o.meta,
            Object::Cluster(o) => &o.meta,
            Object::Secret(o) => &o.meta,
            Object::Config(o) => &o.meta,
        }
    }

    fn meta_mut(&mut self) -> &mut Meta {
        match self {
            Object::Node(o) => &mut o.meta,
            Object::Service(o) => &mut o.meta,
            Object::Task(o) => &mut o.meta,
            Object::Network(o) => &mut o.meta,
            Object::Cluster(o) => &mut o.meta,
            Object::Secret(o) => &mut o.meta,
            Object::Config(o) => &mut o.meta,
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
    /// Two networks' subnets may not overlap (their leases and VIPs would collide). Checked here,
    /// not only by the control API, so two concurrent creates cannot both take the same subnet.
    #[error("subnet {subnet} of network {name:?} overlaps network {other:?} ({other_subnet})")]
    SubnetOverlap { name: String, subnet: String, other: String, other_subnet: String },
}

/// Every table. Maps are ordered so that iteration, serialisation and hashing are deterministic.
///
/// Besides the tables the state keeps a name index of services and networks, so a create checks its
/// name in O(log n) instead of scanning the table. The index is derived: it is not serialised, it is
/// rebuilt when a state is deserialised (snapshot install, restart from disk), kept in step by
/// [`StoreState::apply`], and rebuilt by `apply` if the tables were edited directly and their sizes no
/// longer match it (tests and benches build states by hand; call [`StoreState::rebuild_indexes`]
/// after renaming objects in place).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "Tables")]
pub struct StoreState {
    /// Bumped by every applied proposal.
    pub version: u64,
    pub nodes: BTreeMap<String, Node>,
    pub services: BTreeMap<String, Service>,
    pub tasks: BTreeMap<String, Task>,
    pub networks: BTreeMap<String, Network>,
    pub cluster: Option<Cluster>,
    /// Secrets and configs, their values sealed (never plain text in the log or a snapshot).
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
    #[serde(default)]
    pub configs: BTreeMap<String, Config>,
    #[serde(skip)]
    names: NameIndex,
    #[serde(skip)]
    by_node: NodeTaskIndex,
}

/// The serialised form of [`StoreState`]: the tables alone.
#[derive(Deserialize)]
struct Tables {
    version: u64,
    nodes: BTreeMap<String, Node>,
    services: BTreeMap<String, Service>,
    tasks: BTreeMap<String, Task>,
    networks: BTreeMap<String, Network>,
    cluster: Option<Cluster>,
    #[serde(default)]
    secrets: BTreeMap<String, Secret>,
    #[serde(default)]
    configs: BTreeMap<String, Config>,
}

impl From<Tables> for StoreState {
    fn from(t: Tables) -> Self {
        let mut state = StoreState {
            version: t.version,
            nodes: t.nodes,
            services: t.services,
            tasks: t.tasks,
            networks: t.networks,
            cluster: t.cluster,
            secrets: t.secrets,
            configs: t.configs,
            names: NameIndex::default(),
            by_node: NodeTaskIndex::default(),
        };
        state.rebuild_indexes();
        state
    }
}

/// Equal tables make equal states; the index is derived from them.
impl PartialEq for StoreState {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.nodes == other.nodes
            && self.services == other.services
            && self.tasks == other.tasks
            && self.networks == other.networks
            && self.cluster == other.cluster
            && self.secrets == other.secrets
            && self.configs == other.configs
    }
}

/// Name → ids, per table that has unique names. A set, not one id: the store only refuses duplicate
/// names on create, so an update could (in principle) give two objects one name.
#[derive(Debug, Clone, Default, PartialEq)]
struct NameIndex {
    services: BTreeMap<String, BTreeSet<String>>,
    networks: BTreeMap<String, BTreeSet<String>>,
    /// Objects indexed, per table: a mismatch with the table's size means it was edited directly.
    service_count: usize,
    network_count: usize,
}

impl NameIndex {
    fn table(&mut self, kind: Kind) -> Option<(&mut BTreeMap<String, BTreeSet<String>>, &mut usize)> {
        match kind {
            Kind::Service => Some((&mut self.services, &mut self.service_count)),
            Kind::Network => Some((&mut self.networks, &mut self.network_count)),
            _ => None,
        }
    }

    fn insert(&mut self, kind: Kind, name: &str, id: &str) {
        if let Some((table, count)) = self.table(kind) {
            if table.entry(name.to_string()).or_default().insert(id.to_string()) {
                *count += 1;
            }
        }
    }

    fn remove(&mut self, kind: Kind, name: &str, id: &str) {
        if let Some((table, count)) = self.table(kind) {
            if let Some(ids) = table.get_mut(name) {
                if ids.remove(id) {
                    *count -= 1;
                }
                if ids.is_empty() {
                    table.remove(name);
                }
            }
        }
    }

    /// Is `name` used by an object other than `id`?
    fn taken(&self, kind: Kind, name: &str, id: &str) -> bool {
        let table = match kind {
            Kind::Service => &self.services,
            Kind::Network => &self.networks,
            _ => return false,
        };
        table.get(name).is_some_and(|ids| ids.iter().any(|other| other != id))
    }
}

/// Node id → ids of the tasks assigned to it, so a node's assignment set (asked for by every worker's
/// long poll, on every change) costs O(its tasks), not a scan of every task in the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
struct NodeTaskIndex {
    tasks: BTreeMap<String, BTreeSet<String>>,
    /// Tasks indexed: a mismatch with the task table's size means it was edited directly.
    count: usize,
}

impl NodeTaskIndex {
    fn insert(&mut self, node_id: &str, task_id: &str) {
        if self.tasks.entry(node_id.to_string()).or_default().insert(task_id.to_string()) {
            self.count += 1;
        }
    }

    fn remove(&mut self, node_id: &str, task_id: &str) {
        if let Some(ids) = self.tasks.get_mut(node_id) {
            if ids.remove(task_id) {
                self.count -= 1;
            }
            if ids.is_empty() {
                self.tasks.remove(node_id);
            }
        }
    }
}

/// The name an object is indexed under, for the tables that have unique names.
fn indexed_name(object: &Object) -> Option<(Kind, &str)> {
    match object {
        Object::Service(s) => Some((Kind::Service, s.spec.name.as_str())),
        Object::Network(n) => Some((Kind::Network, n.name.as_str())),
        _ => None,
    }
}

impl StoreState {
    /// Apply a proposal all-or-nothing. Pure: the result depends only on the state and the proposal.
    pub fn apply(&mut self, proposal: &Proposal) -> Result<Vec<Change>, StoreError> {
        if self.names.service_count != self.services.len()
            || self.names.network_count != self.networks.len()
            || self.by_node.count != self.tasks.len()
        {
            self.rebuild_indexes();
        }
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

    /// Derive the name index from the tables (after editing them directly).
    pub fn rebuild_indexes(&mut self) {
        let mut names = NameIndex::default();
        for s in self.services.values() {
            names.insert(Kind::Service, &s.spec.name, &s.id);
        }
        for n in self.networks.values() {
            names.insert(Kind::Network, &n.name, &n.id);
        }
        self.names = names;
        let mut by_node = NodeTaskIndex::default();
        for t in self.tasks.values() {
            by_node.insert(&t.node_id, &t.id);
        }
        self.by_node = by_node;
    }

    /// The tasks whose `node_id` is `node_id` (unassigned tasks have an empty one), in id order.
    pub fn tasks_on_node<'a>(&'a self, node_id: &str) -> Box<dyn Iterator<Item = &'a Task> + 'a> {
        if self.by_node.count != self.tasks.len() {
            // Tables edited directly (tests): the index is stale, scan instead.
            let node_id = node_id.to_string();
            return Box::new(self.tasks.values().filter(move |t| t.node_id == node_id));
        }
        match self.by_node.tasks.get(node_id) {
            Some(ids) => Box::new(ids.iter().filter_map(|id| self.tasks.get(id))),
            None => Box::new(std::iter::empty()),
        }
    }

    fn get(&self, kind: Kind, id: &str) -> Option<Object> {
        match kind {
            Kind::Node => self.nodes.get(id).cloned().map(Object::Node),
            Kind::Service => self.services.get(id).cloned().map(Object::Service),
            Kind::Task => self.tasks.get(id).cloned().map(Object::Task),
            Kind::Network => self.networks.get(id).cloned().map(Object::Network),
            Kind::Cluster => self.cluster.clone().filter(|c| c.id == id).map(Object::Cluster),
            Kind::Secret => self.secrets.get(id).cloned().map(Object::Secret),
            Kind::Config => self.configs.get(id).cloned().map(Object::Config),
        }
    }

    fn put(&mut self, object: Object) {
        if let Some((kind, name)) = indexed_name(&object) {
            let previous = self.get_name(kind, object.id());
            if let Some(previous) = previous {
                self.names.remove(kind, &previous, object.id());
            }
            self.names.insert(kind, name, object.id());
        }
        match object {
            Object::Node(o) => {
                self.nodes.insert(o.id.clone(), o);
            }
            Object::Service(o) => {
                self.services.insert(o.id.clone(), o);
            }
            Object::Task(o) => {
                if let Some(previous) = self.tasks.get(&o.id) {
                    let previous_node = previous.node_id.clone();
                    self.by_node.remove(&previous_node, &o.id);
                }
                self.by_node.insert(&o.node_id, &o.id);
                self.tasks.insert(o.id.clone(), o);
            }
            Object::Network(o) => {
                self.networks.insert(o.id.clone(), o);
            }
            Object::Cluster(o) => self.cluster = Some(o),
            Object::Secret(o) => {
                self.secrets.insert(o.id.clone(), o);
            }
            Object::Config(o) => {
                self.configs.insert(o.id.clone(), o);
            }
        }
    }

    /// The indexed name of the stored object `id`, if it has one.
    fn get_name(&self, kind: Kind, id: &str) -> Option<String> {
        match kind {
            Kind::Service => self.services.get(id).map(|s| s.spec.name.clone()),
            Kind::Network => self.networks.get(id).map(|n| n.name.clone()),
            _ => None,
        }
    }

    fn take(&mut self, kind: Kind, id: &str) -> Option<Object> {
        let object = match kind {
            Kind::Node => self.nodes.remove(id).map(Object::Node),
            Kind::Service => self.services.remove(id).map(Object::Service),
            Kind::Task => self.tasks.remove(id).map(|t| {
                self.by_node.remove(&t.node_id, id);
                Object::Task(t)
            }),
            Kind::Network => self.networks.remove(id).map(Object::Network),
            Kind::Cluster => self.cluster.take_if(|c| c.id == id).map(Object::Cluster),
            Kind::Secret => self.secrets.remove(id).map(Object::Secret),
            Kind::Config => self.configs.remove(id).map(Object::Config),
        };
        if let Some((kind, name)) = object.as_ref().and_then(indexed_name) {
            self.names.remove(kind, name, id);
        }
        object
    }

    fn name_taken(&self, object: &Object, scratch: &Overlay) -> bool {
        // Secrets and configs are few: their names are checked by a scan, not indexed.
        let scanned = match object {
            Object::Secret(o) => Some((Kind::Secret, o.spec.name.as_str())),
            Object::Config(o) => Some((Kind::Config, o.spec.name.as_str())),
            _ => None,
        };
        if let Some((kind, name)) = scanned {
            if scratch.names.contains(&(kind, name.to_string())) {
                return true;
            }
            let live = |id: &String| id != object.id() && scratch.exists(kind, id) != Some(false);
            return match object {
                Object::Secret(_) => self.secrets.iter().any(|(id, o)| o.spec.name == name && live(id)),
                _ => self.configs.iter().any(|(id, o)| o.spec.name == name && live(id)),
            };
        }
        let Some((kind, name)) = indexed_name(object) else { return false };
        if scratch.names.contains(&(kind, name.to_string())) {
            return true;
        }
        self.names.taken(kind, name, object.id())
    }

    /// A new network's subnet overlaps no other network's (those in the state and those created
    /// earlier in the same proposal).
    fn check_subnet_free(&self, network: &Network, scratch: &Overlay) -> Result<(), StoreError> {
        if network.subnet.is_empty() {
            return Ok(());
        }
        let existing = self.networks.values().filter(|n| scratch.exists(Kind::Network, &n.id) != Some(false));
        let created = scratch.created_networks.iter();
        match existing.chain(created).find(|n| crate::mesh::lease::overlaps(&n.subnet, &network.subnet)) {
            Some(other) => Err(StoreError::SubnetOverlap {
                name: network.name.clone(),
                subnet: network.subnet.clone(),
                other: other.name.clone(),
                other_subnet: other.subnet.clone(),
            }),
            None => Ok(()),
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
                        Object::Secret(o) => o.spec.name.clone(),
                        Object::Config(o) => o.spec.name.clone(),
                        _ => String::new(),
                    };
                    return Err(StoreError::NameConflict { kind, name });
                }
                if let Object::Network(network) = object {
                    self.check_subnet_free(network, scratch)?;
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
    /// Networks created earlier in the proposal, for the subnet check.
    created_networks: Vec<Network>,
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
                        self.created_networks.push(n.clone());
                    }
                    Object::Secret(o) => {
                        self.names.insert((Kind::Secret, o.spec.name.clone()));
                    }
                    Object::Config(o) => {
                        self.names.insert((Kind::Config, o.spec.name.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ServiceSpec;

    fn service(id: &str, name: &str) -> Object {
        Object::Service(Service {
            id: id.into(),
            meta: Meta::default(),
            spec: ServiceSpec::new(name, "nginx:1.25"),
            previous_spec: None,
            spec_version: 1,
            update_status: None,
            endpoint_ports: Vec::new(),
            job_status: None,
        })
    }

    fn network(id: &str, name: &str) -> Object {
        Object::Network(Network {
            id: id.into(),
            meta: Meta::default(),
            name: name.into(),
            driver: "overlay".into(),
            subnet: String::new(),
            attachable: false,
            ingress: false,
            labels: Default::default(),
            leases: Default::default(),
        })
    }

    fn apply(state: &mut StoreState, actions: Vec<Action>) -> Result<Vec<Change>, StoreError> {
        state.apply(&Proposal { actions, stamp_ms: 1 })
    }

    #[test]
    fn network_subnets_never_overlap_even_within_one_proposal() {
        let with_subnet = |id: &str, name: &str, subnet: &str| match network(id, name) {
            Object::Network(mut n) => {
                n.subnet = subnet.into();
                Object::Network(n)
            }
            _ => unreachable!(),
        };
        let mut state = StoreState::default();
        apply(&mut state, vec![Action::Create(with_subnet("n1", "a", "10.1.0.0/16"))]).unwrap();
        let err = apply(&mut state, vec![Action::Create(with_subnet("n2", "b", "10.1.128.0/17"))]).unwrap_err();
        assert!(matches!(&err, StoreError::SubnetOverlap { other, .. } if other == "a"), "{err}");
        let both = vec![
            Action::Create(with_subnet("n3", "c", "10.2.0.0/16")),
            Action::Create(with_subnet("n4", "d", "10.2.0.0/24")),
        ];
        assert!(matches!(apply(&mut state, both), Err(StoreError::SubnetOverlap { .. })));
        assert_eq!(state.networks.len(), 1, "a refused proposal changes nothing");
        // Once the holder is gone, its subnet is free again (also within the proposal that removes it).
        let swap = vec![
            Action::Delete { kind: Kind::Network, id: "n1".into() },
            Action::Create(with_subnet("n5", "e", "10.1.0.0/16")),
        ];
        apply(&mut state, swap).unwrap();
        apply(&mut state, vec![Action::Create(network("n6", "no-subnet"))]).expect("networks without a subnet");
    }

    fn conflict(kind: Kind, name: &str) -> Result<Vec<Change>, StoreError> {
        Err(StoreError::NameConflict { kind, name: name.into() })
    }

    #[test]
    fn names_are_unique_per_table_and_free_again_after_delete() {
        let mut state = StoreState::default();
        apply(&mut state, vec![Action::Create(service("s1", "web"))]).unwrap();
        apply(&mut state, vec![Action::Create(network("n1", "web"))]).expect("tables have separate names");
        assert_eq!(apply(&mut state, vec![Action::Create(service("s2", "web"))]), conflict(Kind::Service, "web"));
        assert_eq!(apply(&mut state, vec![Action::Create(network("n2", "web"))]), conflict(Kind::Network, "web"));
        // Two creates of one name in one proposal: the second sees the first.
        let both = vec![Action::Create(service("s3", "api")), Action::Create(service("s4", "api"))];
        assert_eq!(apply(&mut state, both), conflict(Kind::Service, "api"));
        assert!(!state.services.contains_key("s3"), "a refused proposal changes nothing, index included");
        apply(&mut state, vec![Action::Create(service("s3", "api"))]).expect("the name is still free");

        apply(&mut state, vec![Action::Delete { kind: Kind::Service, id: "s1".into() }]).unwrap();
        apply(&mut state, vec![Action::Create(service("s5", "web"))]).expect("a deleted service frees its name");

        // An update that renames moves the entry: the old name is free, the new one taken.
        let Some(Object::Service(mut renamed)) = state.get(Kind::Service, "s5") else { panic!("s5 stored") };
        renamed.spec.name = "front".into();
        apply(&mut state, vec![Action::Update(Object::Service(renamed))]).unwrap();
        apply(&mut state, vec![Action::Create(service("s6", "web"))]).expect("renamed away");
        assert_eq!(apply(&mut state, vec![Action::Create(service("s7", "front"))]), conflict(Kind::Service, "front"));
    }

    #[test]
    fn index_is_rebuilt_on_deserialize_and_after_direct_edits() {
        let mut state = StoreState::default();
        apply(&mut state, vec![Action::Create(service("s1", "web")), Action::Create(network("n1", "backend"))])
            .unwrap();
        let json = serde_json::to_string(&state).unwrap();
        assert!(!json.contains("names"), "the index is derived, not serialised: {json}");
        let mut restored: StoreState = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, state);
        assert_eq!(restored.names, state.names, "deserialising rebuilds the index");
        assert_eq!(apply(&mut restored, vec![Action::Create(service("s2", "web"))]), conflict(Kind::Service, "web"));

        // A state built by hand (tests, benches) is indexed on its first apply.
        let mut by_hand = StoreState::default();
        if let Object::Service(s) = service("s1", "web") {
            by_hand.services.insert(s.id.clone(), s);
        }
        assert_eq!(apply(&mut by_hand, vec![Action::Create(service("s2", "web"))]), conflict(Kind::Service, "web"));
    }
}
