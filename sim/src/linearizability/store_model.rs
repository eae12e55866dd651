//! The control API as a sequential object, checked one object at a time.
//!
//! Every object of the store the control API lets clients change — a service (by name), a node (by
//! id), a network (by name) — is its own small state machine, and a history is split into one
//! sub-history per object (P-compositionality, Horn & Kroening 2015): writes go to the object they
//! name, a list is read once per object (what it showed of that object, or that it did not show
//! it). Checking each object on its own is sound (a history that fails for one object is not
//! linearizable), and much cheaper; it does not check that one list saw every object at the same
//! instant.
//!
//! What each object's state holds, and so what a read must agree with:
//! - a service: present or absent, its id, its mode (replicas or global) and image. A service whose
//!   spec may change with no client's request — an update with `--update-failure-action rollback`
//!   (the orchestrator rolls a failed update back), or `service rollback` — keeps presence and id
//!   checked, and its spec no longer;
//! - a node: its availability and labels (only `node update` changes them), and absence after
//!   `node rm`; nodes join with no control request, so a node may appear at any time;
//! - a network: present or absent, and its id.
//!
//! Objects start unknown (the ingress network and the nodes exist before any request) and take
//! the value the first answer about them shows. What an answer means: a refusal that names the
//! object as missing (`service web not found`) says it is absent; `… already exists` to a create
//! says it is present; other refusals (invalid arguments, update out of sequence, in use, not a
//! manager) change nothing; a lost answer, no leader, unavailable or an internal error may have
//! taken effect or not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{Hash, Hasher};

use shoal_core::api::{Availability, Labels, ServiceMode};
use shoal_core::control::ControlError;

use super::history::{Answer, ControlCall, Request, ServiceSeen};
use super::wgl::{self, Entry, Model, Verdict};

/// One object of the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Service(String),
    /// By node id.
    Node(String),
    Network(String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Service(name) => write!(f, "service {name}"),
            Key::Node(id) => write!(f, "node {id}"),
            Key::Network(name) => write!(f, "network {name}"),
        }
    }
}

/// A service's mode, hashable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Mode {
    Replicated(u64),
    Global,
    ReplicatedJob(u64, u64),
    GlobalJob,
}

impl Mode {
    fn of(mode: &ServiceMode) -> Mode {
        match mode {
            ServiceMode::Replicated { replicas } => Mode::Replicated(*replicas),
            ServiceMode::Global => Mode::Global,
            ServiceMode::ReplicatedJob { max_concurrent, total_completions } => {
                Mode::ReplicatedJob(*max_concurrent, *total_completions)
            }
            ServiceMode::GlobalJob => Mode::GlobalJob,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Replicated(n) => write!(f, "{n} replicas"),
            Mode::Global => f.write_str("global"),
            Mode::ReplicatedJob(m, n) => write!(f, "replicated job of {n}, {m} at once"),
            Mode::GlobalJob => f.write_str("global job"),
        }
    }
}

/// A node's availability, hashable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Avail(pub Availability);

impl Hash for Avail {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.0 as u8).hash(state);
    }
}

/// What an answer to a write says about its effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<T> {
    /// It took effect (with what it answered, e.g. the id of what it created).
    Applied(T),
    /// Refused: the object it names does not exist.
    NotFound,
    /// Refused: a create whose name is taken.
    NameTaken,
    /// Refused for another reason; nothing changed.
    NoEffect,
    /// No answer that says: it may have taken effect, at any time after it was sent, or not.
    Unknown,
}

/// How a service write changes the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Spec { mode: Mode, image: String, rolls_back: bool },
    Scale(u64),
    Rollback,
}

/// A service as a read showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub id: String,
    pub mode: Mode,
    pub image: String,
}

/// One operation on one object. `by_id`: the request named the object by its id (so it is about
/// that incarnation of the name only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOp {
    ServiceCreate {
        mode: Mode,
        image: String,
        rolls_back: bool,
        effect: Effect<String>,
    },
    ServiceChange {
        by_id: Option<String>,
        change: Change,
        effect: Effect<()>,
    },
    ServiceRemove {
        by_id: Option<String>,
        effect: Effect<()>,
    },
    /// `None`: the read showed no such service.
    ServiceRead {
        by_id: Option<String>,
        shown: Option<Shown>,
    },
    NodeUpdate {
        availability: Option<Availability>,
        label_add: Labels,
        label_rm: Vec<String>,
        effect: Effect<()>,
    },
    NodeRemove {
        effect: Effect<()>,
    },
    NodeRead {
        shown: Option<(Availability, Labels)>,
    },
    NetworkCreate {
        effect: Effect<String>,
    },
    NetworkRemove {
        by_id: Option<String>,
        effect: Effect<()>,
    },
    NetworkRead {
        by_id: Option<String>,
        shown: Option<String>,
    },
}

impl KeyOp {
    /// A write whose answer does not say whether it took effect.
    pub fn effect_unknown(&self) -> bool {
        match self {
            KeyOp::ServiceCreate { effect, .. } | KeyOp::NetworkCreate { effect } => *effect == Effect::Unknown,
            KeyOp::ServiceChange { effect, .. }
            | KeyOp::ServiceRemove { effect, .. }
            | KeyOp::NodeUpdate { effect, .. }
            | KeyOp::NodeRemove { effect }
            | KeyOp::NetworkRemove { effect, .. } => *effect == Effect::Unknown,
            KeyOp::ServiceRead { .. } | KeyOp::NodeRead { .. } | KeyOp::NetworkRead { .. } => false,
        }
    }
}

/// One object's state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// Nothing seen of it yet.
    Unknown,
    Absent,
    /// `None` fields are not known yet; `tainted`: the spec may change with no client's request,
    /// so mode and image are not checked.
    Service {
        id: Option<String>,
        mode: Option<Mode>,
        image: Option<String>,
        tainted: bool,
    },
    Node {
        availability: Option<Avail>,
        labels: Option<Labels>,
    },
    Network {
        id: Option<String>,
    },
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_unknown = |v: Option<String>| v.unwrap_or_else(|| "?".into());
        match self {
            Value::Unknown => f.write_str("not known yet"),
            Value::Absent => f.write_str("absent"),
            Value::Service { id, mode, image, tainted } => write!(
                f,
                "present (id {}, {}, image {}{})",
                or_unknown(id.clone()),
                or_unknown(mode.as_ref().map(Mode::to_string)),
                or_unknown(image.clone()),
                if *tainted { ", spec not checked: it may roll back" } else { "" }
            ),
            Value::Node { availability, labels } => write!(
                f,
                "availability {}, labels {}",
                or_unknown(availability.map(|a| format!("{:?}", a.0).to_lowercase())),
                or_unknown(labels.as_ref().map(|l| format!("{l:?}")))
            ),
            Value::Network { id } => write!(f, "present (id {})", or_unknown(id.clone())),
        }
    }
}

/// Is an object with id `current` the one a request named by `by_id`?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Incarnation {
    Same,
    /// Its id is not known yet.
    Maybe,
    Other,
}

fn incarnation(current: &Option<String>, by_id: &Option<String>) -> Incarnation {
    match (current, by_id) {
        (_, None) => Incarnation::Same,
        (Some(a), Some(b)) if a == b => Incarnation::Same,
        (Some(_), Some(_)) => Incarnation::Other,
        (None, Some(_)) => Incarnation::Maybe,
    }
}

/// The sequential model of one object.
pub struct StoreModel;

impl StoreModel {
    fn service(state: &Value, op: &KeyOp) -> Option<Value> {
        let fresh = |id: Option<String>| Value::Service { id, mode: None, image: None, tainted: false };
        match op {
            KeyOp::ServiceCreate { mode, image, rolls_back, effect } => {
                let created = |id: Option<String>| Value::Service {
                    id,
                    mode: (!rolls_back).then(|| mode.clone()),
                    image: (!rolls_back).then(|| image.clone()),
                    tainted: *rolls_back,
                };
                match (effect, state) {
                    (Effect::Applied(id), Value::Unknown | Value::Absent) => Some(created(Some(id.clone()))),
                    (Effect::Applied(_), _) => None,
                    (Effect::NameTaken, Value::Unknown) => Some(fresh(None)),
                    (Effect::NameTaken, Value::Service { .. }) => Some(state.clone()),
                    (Effect::NameTaken, _) => None,
                    (Effect::Unknown, Value::Unknown | Value::Absent) => Some(created(None)),
                    (Effect::Unknown | Effect::NoEffect | Effect::NotFound, _) => Some(state.clone()),
                }
            }
            KeyOp::ServiceChange { by_id, effect, .. } | KeyOp::ServiceRemove { by_id, effect } => {
                let apply = |state: &Value| -> Value {
                    let Value::Service { id, mode, image, tainted } = state else { return state.clone() };
                    let id = id.clone().or_else(|| by_id.clone());
                    match op {
                        KeyOp::ServiceRemove { .. } => Value::Absent,
                        KeyOp::ServiceChange { change, .. } => {
                            let (mut mode, mut image, mut tainted) = (mode.clone(), image.clone(), *tainted);
                            match change {
                                Change::Spec { mode: m, image: i, rolls_back } => {
                                    tainted |= rolls_back;
                                    (mode, image) = (Some(m.clone()), Some(i.clone()));
                                }
                                Change::Scale(n) => mode = Some(Mode::Replicated(*n)),
                                Change::Rollback => tainted = true,
                            }
                            if tainted {
                                (mode, image) = (None, None);
                            }
                            Value::Service { id, mode, image, tainted }
                        }
                        _ => state.clone(),
                    }
                };
                match (effect, state) {
                    (Effect::Applied(()), Value::Unknown) => Some(apply(&fresh(by_id.clone()))),
                    (Effect::Applied(()), Value::Service { id, .. }) => {
                        (incarnation(id, by_id) != Incarnation::Other).then(|| apply(state))
                    }
                    (Effect::Applied(()), _) => None,
                    (Effect::NotFound, Value::Absent) => Some(Value::Absent),
                    (Effect::NotFound, Value::Unknown) if by_id.is_none() => Some(Value::Absent),
                    (Effect::NotFound, Value::Unknown) => Some(Value::Unknown),
                    (Effect::NotFound, Value::Service { id, .. }) => {
                        (incarnation(id, by_id) != Incarnation::Same).then(|| state.clone())
                    }
                    (Effect::Unknown, Value::Service { id, .. }) if incarnation(id, by_id) != Incarnation::Other => {
                        Some(apply(state))
                    }
                    _ => Some(state.clone()),
                }
            }
            KeyOp::ServiceRead { by_id, shown: None } => match state {
                Value::Unknown if by_id.is_none() => Some(Value::Absent),
                Value::Service { id, .. } => (incarnation(id, by_id) != Incarnation::Same).then(|| state.clone()),
                _ => Some(state.clone()),
            },
            KeyOp::ServiceRead { shown: Some(shown), .. } => match state {
                Value::Unknown => Some(Value::Service {
                    id: Some(shown.id.clone()),
                    mode: Some(shown.mode.clone()),
                    image: Some(shown.image.clone()),
                    tainted: false,
                }),
                Value::Service { id, mode, image, tainted } => {
                    if id.as_ref().is_some_and(|id| *id != shown.id) {
                        return None;
                    }
                    let id = Some(shown.id.clone());
                    if *tainted {
                        return Some(Value::Service { id, mode: None, image: None, tainted: true });
                    }
                    if mode.as_ref().is_some_and(|m| *m != shown.mode)
                        || image.as_ref().is_some_and(|i| *i != shown.image)
                    {
                        return None;
                    }
                    Some(Value::Service {
                        id,
                        mode: Some(shown.mode.clone()),
                        image: Some(shown.image.clone()),
                        tainted: false,
                    })
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn node(state: &Value, op: &KeyOp) -> Option<Value> {
        match op {
            KeyOp::NodeUpdate { availability, label_add, label_rm, effect } => {
                let apply = |current: Option<Avail>, labels: Option<Labels>| {
                    let labels = labels.map(|mut labels| {
                        labels.extend(label_add.iter().map(|(k, v)| (k.clone(), v.clone())));
                        for key in label_rm {
                            labels.remove(key);
                        }
                        labels
                    });
                    Value::Node { availability: availability.map(Avail).or(current), labels }
                };
                match (effect, state) {
                    (Effect::Applied(()) | Effect::Unknown, Value::Unknown) => Some(apply(None, None)),
                    (Effect::Applied(()) | Effect::Unknown, Value::Node { availability, labels }) => {
                        Some(apply(*availability, labels.clone()))
                    }
                    (Effect::Applied(()), _) => None,
                    // A node that is known to exist is only ever removed by `node rm`.
                    (Effect::NotFound, Value::Node { .. }) => None,
                    _ => Some(state.clone()),
                }
            }
            KeyOp::NodeRemove { effect } => match (effect, state) {
                (Effect::Applied(()) | Effect::Unknown, Value::Unknown | Value::Node { .. }) => Some(Value::Absent),
                (Effect::Applied(()), _) => None,
                (Effect::NotFound, Value::Node { .. }) => None,
                _ => Some(state.clone()),
            },
            KeyOp::NodeRead { shown: None } => match state {
                Value::Node { .. } => None,
                _ => Some(state.clone()),
            },
            KeyOp::NodeRead { shown: Some((availability, labels)) } => match state {
                Value::Unknown => {
                    Some(Value::Node { availability: Some(Avail(*availability)), labels: Some(labels.clone()) })
                }
                Value::Node { availability: known, labels: known_labels } => {
                    if known.is_some_and(|a| a.0 != *availability) || known_labels.as_ref().is_some_and(|l| l != labels)
                    {
                        return None;
                    }
                    Some(Value::Node { availability: Some(Avail(*availability)), labels: Some(labels.clone()) })
                }
                _ => None,
            },
            _ => None,
        }
    }

    fn network(state: &Value, op: &KeyOp) -> Option<Value> {
        match op {
            KeyOp::NetworkCreate { effect } => match (effect, state) {
                (Effect::Applied(id), Value::Unknown | Value::Absent) => Some(Value::Network { id: Some(id.clone()) }),
                (Effect::Applied(_), _) => None,
                (Effect::NameTaken, Value::Unknown) => Some(Value::Network { id: None }),
                (Effect::NameTaken, Value::Network { .. }) => Some(state.clone()),
                (Effect::NameTaken, _) => None,
                (Effect::Unknown, Value::Unknown | Value::Absent) => Some(Value::Network { id: None }),
                _ => Some(state.clone()),
            },
            KeyOp::NetworkRemove { by_id, effect } => match (effect, state) {
                (Effect::Applied(()), Value::Unknown) => Some(Value::Absent),
                (Effect::Applied(()), Value::Network { id }) => {
                    (incarnation(id, by_id) != Incarnation::Other).then_some(Value::Absent)
                }
                (Effect::Applied(()), _) => None,
                (Effect::NotFound, Value::Unknown) if by_id.is_none() => Some(Value::Absent),
                (Effect::NotFound, Value::Network { id }) => {
                    (incarnation(id, by_id) != Incarnation::Same).then(|| state.clone())
                }
                (Effect::Unknown, Value::Network { id }) if incarnation(id, by_id) != Incarnation::Other => {
                    Some(Value::Absent)
                }
                _ => Some(state.clone()),
            },
            KeyOp::NetworkRead { by_id, shown: None } => match state {
                Value::Unknown if by_id.is_none() => Some(Value::Absent),
                Value::Network { id } => (incarnation(id, by_id) != Incarnation::Same).then(|| state.clone()),
                _ => Some(state.clone()),
            },
            KeyOp::NetworkRead { shown: Some(shown), .. } => match state {
                Value::Unknown => Some(Value::Network { id: Some(shown.clone()) }),
                Value::Network { id } if id.as_ref().is_none_or(|id| id == shown) => {
                    Some(Value::Network { id: Some(shown.clone()) })
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// An operation on one object, and the call it came from (for messages).
#[derive(Debug, Clone)]
pub struct Projected {
    pub op: KeyOp,
    pub call: usize,
}

impl Model for StoreModel {
    type State = Value;
    type Op = Projected;

    fn step(&self, state: &Value, op: &Projected) -> Option<Value> {
        match &op.op {
            KeyOp::ServiceCreate { .. }
            | KeyOp::ServiceChange { .. }
            | KeyOp::ServiceRemove { .. }
            | KeyOp::ServiceRead { .. } => StoreModel::service(state, &op.op),
            KeyOp::NodeUpdate { .. } | KeyOp::NodeRemove { .. } | KeyOp::NodeRead { .. } => {
                StoreModel::node(state, &op.op)
            }
            KeyOp::NetworkCreate { .. } | KeyOp::NetworkRemove { .. } | KeyOp::NetworkRead { .. } => {
                StoreModel::network(state, &op.op)
            }
        }
    }
}

/// What a write's answer says about its effect; `missing` is how a refusal names the object as
/// missing (`"service "`: `service web not found`), `taken` whether a refusal can mean its name is taken.
fn effect_of<T>(answer: Option<&Answer>, applied: impl FnOnce(&Answer) -> T, missing: &str, taken: bool) -> Effect<T> {
    match answer {
        None | Some(Answer::Lost(_)) => Effect::Unknown,
        Some(Answer::Refused(err)) => match err {
            ControlError::NotFound(m) if m.starts_with(missing) && m.ends_with(" not found") => Effect::NotFound,
            ControlError::Conflict(m) if taken && m.ends_with("already exists") => Effect::NameTaken,
            ControlError::NoLeader | ControlError::Unavailable(_) | ControlError::Internal(_) => Effect::Unknown,
            _ => Effect::NoEffect,
        },
        Some(answer) => Effect::Applied(applied(answer)),
    }
}

/// Ids and names as the history's answers and requests show them, to find which object a request
/// named.
#[derive(Debug, Default)]
struct Names {
    /// service id -> name
    service_ids: BTreeMap<String, String>,
    service_names: BTreeSet<String>,
    /// node id -> hostname
    node_ids: BTreeMap<String, String>,
    network_ids: BTreeMap<String, String>,
    network_names: BTreeSet<String>,
}

impl Names {
    fn learn(calls: &[ControlCall]) -> Names {
        let mut names = Names::default();
        let service = |names: &mut Names, s: &ServiceSeen| {
            names.service_ids.insert(s.id.clone(), s.name.clone());
            names.service_names.insert(s.name.clone());
        };
        for call in calls {
            match &call.request {
                Request::ServiceCreate { spec } => {
                    names.service_names.insert(spec.name.clone());
                    if let Some((_, Answer::Created(id))) = &call.returned {
                        names.service_ids.insert(id.clone(), spec.name.clone());
                    }
                }
                Request::NetworkCreate { name } => {
                    names.network_names.insert(name.clone());
                    if let Some((_, Answer::Created(id))) = &call.returned {
                        names.network_ids.insert(id.clone(), name.clone());
                    }
                }
                _ => {}
            }
            match call.returned.as_ref().map(|(_, answer)| answer) {
                Some(Answer::Services(list)) => list.iter().for_each(|s| service(&mut names, s)),
                Some(Answer::Service(s)) => service(&mut names, s),
                Some(Answer::Nodes(list)) => {
                    for n in list {
                        names.node_ids.insert(n.id.clone(), n.hostname.clone());
                    }
                }
                Some(Answer::Node(n)) => {
                    names.node_ids.insert(n.id.clone(), n.hostname.clone());
                }
                Some(Answer::Networks(list)) => {
                    for n in list {
                        names.network_ids.insert(n.id.clone(), n.name.clone());
                        names.network_names.insert(n.name.clone());
                    }
                }
                Some(Answer::Network(n)) => {
                    names.network_ids.insert(n.id.clone(), n.name.clone());
                    names.network_names.insert(n.name.clone());
                }
                _ => {}
            }
        }
        names
    }

    /// The service a request named (by id, name or unique id prefix, as the control API resolves
    /// it), and the id if it named one.
    fn service(&self, key: &str) -> (String, Option<String>) {
        if let Some(name) = self.service_ids.get(key) {
            return (name.clone(), Some(key.to_string()));
        }
        if self.service_names.contains(key) {
            return (key.to_string(), None);
        }
        let mut prefixed = self.service_ids.iter().filter(|(id, _)| !key.is_empty() && id.starts_with(key));
        match (prefixed.next(), prefixed.next()) {
            (Some((id, name)), None) => (name.clone(), Some(id.clone())),
            _ => (key.to_string(), None),
        }
    }

    fn network(&self, key: &str) -> (String, Option<String>) {
        if let Some(name) = self.network_ids.get(key) {
            return (name.clone(), Some(key.to_string()));
        }
        (key.to_string(), None)
    }

    /// The node ids a request's node name may mean (an id, or a hostname several nodes may share).
    fn nodes(&self, key: &str) -> Vec<String> {
        if self.node_ids.contains_key(key) {
            return vec![key.to_string()];
        }
        let by_host: Vec<String> =
            self.node_ids.iter().filter(|(_, host)| host.as_str() == key).map(|(id, _)| id.clone()).collect();
        if by_host.is_empty() {
            // Never seen in an answer: an object of its own, which no read constrains.
            vec![format!("(unseen {key})")]
        } else {
            by_host
        }
    }
}

/// The history split per object: each object's operations (with the calls' event positions).
pub fn project(calls: &[ControlCall]) -> BTreeMap<Key, Vec<Entry<Projected>>> {
    let names = Names::learn(calls);
    let mut per_key: BTreeMap<Key, Vec<Entry<Projected>>> = BTreeMap::new();
    // Objects whose operations cannot be told apart (a hostname shared by two nodes): not checked.
    let mut unchecked: BTreeSet<Key> = BTreeSet::new();
    for (index, call) in calls.iter().enumerate() {
        let answer = call.returned.as_ref().map(|(_, answer)| answer);
        let mut push = |key: Key, op: KeyOp| {
            // A write whose answer leaves its effect open (lost, no leader, unavailable) may take
            // effect even after that answer (an entry the deposed leader appended can still be
            // committed by the next one): it is open-ended, and need not take effect at all.
            let open = op.effect_unknown();
            let entry = Entry {
                invoked: call.invoked.seq,
                returned: call.returned.as_ref().filter(|_| !open).map(|(stamp, _)| stamp.seq),
                op: Projected { op, call: index },
            };
            per_key.entry(key).or_default().push(entry);
        };
        let shown = |s: &ServiceSeen| Shown { id: s.id.clone(), mode: Mode::of(&s.mode), image: s.image.clone() };
        match &call.request {
            Request::ServiceCreate { spec } => {
                let effect = effect_of(
                    answer,
                    |a| match a {
                        Answer::Created(id) => id.clone(),
                        _ => String::new(),
                    },
                    "service ",
                    true,
                );
                let op = KeyOp::ServiceCreate {
                    mode: Mode::of(&spec.mode),
                    image: spec.image.clone(),
                    rolls_back: spec.rolls_back,
                    effect,
                };
                push(Key::Service(spec.name.clone()), op);
            }
            Request::ServiceUpdate { service, spec } => {
                let (name, by_id) = names.service(service);
                let change =
                    Change::Spec { mode: Mode::of(&spec.mode), image: spec.image.clone(), rolls_back: spec.rolls_back };
                let effect = effect_of(answer, |_| (), "service ", false);
                push(Key::Service(name), KeyOp::ServiceChange { by_id, change, effect });
            }
            Request::ServiceScale { service, replicas } => {
                let (name, by_id) = names.service(service);
                let effect = effect_of(answer, |_| (), "service ", false);
                push(Key::Service(name), KeyOp::ServiceChange { by_id, change: Change::Scale(*replicas), effect });
            }
            Request::ServiceRollback { service } => {
                let (name, by_id) = names.service(service);
                let effect = effect_of(answer, |_| (), "service ", false);
                push(Key::Service(name), KeyOp::ServiceChange { by_id, change: Change::Rollback, effect });
            }
            Request::ServiceRemove { service } => {
                let (name, by_id) = names.service(service);
                let effect = effect_of(answer, |_| (), "service ", false);
                push(Key::Service(name), KeyOp::ServiceRemove { by_id, effect });
            }
            Request::ServiceList => {
                if let Some(Answer::Services(list)) = answer {
                    for name in &names.service_names {
                        let seen = list.iter().find(|s| s.name == *name).map(shown);
                        push(Key::Service(name.clone()), KeyOp::ServiceRead { by_id: None, shown: seen });
                    }
                }
            }
            Request::ServiceInspect { service } => match answer {
                Some(Answer::Service(s)) => {
                    push(Key::Service(s.name.clone()), KeyOp::ServiceRead { by_id: None, shown: Some(shown(s)) })
                }
                Some(Answer::Refused(ControlError::NotFound(m))) if m.starts_with("service ") => {
                    let (name, by_id) = names.service(service);
                    push(Key::Service(name), KeyOp::ServiceRead { by_id, shown: None });
                }
                _ => {}
            },
            Request::NodeUpdate { node, availability, label_add, label_rm } => {
                let ids = names.nodes(node);
                if ids.len() > 1 {
                    unchecked.extend(ids.into_iter().map(Key::Node));
                    continue;
                }
                let effect = effect_of(answer, |_| (), "node ", false);
                let op = KeyOp::NodeUpdate {
                    availability: *availability,
                    label_add: label_add.clone(),
                    label_rm: label_rm.clone(),
                    effect,
                };
                push(Key::Node(ids[0].clone()), op);
            }
            Request::NodeRemove { node } => {
                let ids = names.nodes(node);
                if ids.len() > 1 {
                    unchecked.extend(ids.into_iter().map(Key::Node));
                    continue;
                }
                let effect = effect_of(answer, |_| (), "node ", false);
                push(Key::Node(ids[0].clone()), KeyOp::NodeRemove { effect });
            }
            Request::NodeList => {
                if let Some(Answer::Nodes(list)) = answer {
                    for id in names.node_ids.keys() {
                        let seen = list.iter().find(|n| n.id == *id).map(|n| (n.availability, n.labels.clone()));
                        push(Key::Node(id.clone()), KeyOp::NodeRead { shown: seen });
                    }
                }
            }
            Request::NodeInspect { .. } => {
                if let Some(Answer::Node(n)) = answer {
                    push(Key::Node(n.id.clone()), KeyOp::NodeRead { shown: Some((n.availability, n.labels.clone())) });
                }
            }
            Request::NetworkCreate { name } => {
                let effect = effect_of(
                    answer,
                    |a| match a {
                        Answer::Created(id) => id.clone(),
                        _ => String::new(),
                    },
                    "network ",
                    true,
                );
                push(Key::Network(name.clone()), KeyOp::NetworkCreate { effect });
            }
            Request::NetworkRemove { network } => {
                let (name, by_id) = names.network(network);
                let effect = effect_of(answer, |_| (), "network ", false);
                push(Key::Network(name), KeyOp::NetworkRemove { by_id, effect });
            }
            Request::NetworkList => {
                if let Some(Answer::Networks(list)) = answer {
                    for name in &names.network_names {
                        let seen = list.iter().find(|n| n.name == *name).map(|n| n.id.clone());
                        push(Key::Network(name.clone()), KeyOp::NetworkRead { by_id: None, shown: seen });
                    }
                }
            }
            Request::NetworkInspect { network } => match answer {
                Some(Answer::Network(n)) => {
                    push(Key::Network(n.name.clone()), KeyOp::NetworkRead { by_id: None, shown: Some(n.id.clone()) })
                }
                Some(Answer::Refused(ControlError::NotFound(m))) if m.starts_with("network ") => {
                    let (name, by_id) = names.network(network);
                    push(Key::Network(name), KeyOp::NetworkRead { by_id, shown: None });
                }
                _ => {}
            },
            Request::Other(_) => {}
        }
    }
    for key in unchecked {
        per_key.remove(&key);
    }
    for (key, entries) in per_key.iter_mut() {
        if let Key::Node(_) = key {
            drop_unseen_label_writes(entries);
        }
    }
    per_key
}

/// Drop the open-ended label writes of a node (no answer said whether they took effect) whose
/// values no read showed. Such a write only adds labels, which the next label write of the same
/// keys replaces; had it taken effect, no read saw it before it was replaced, so a linearization
/// with it exists exactly when one without it does. Every such write can go anywhere after it was
/// sent, so keeping them would make the search try them everywhere (a control workload sending
/// writes to a crashed manager leaves dozens).
fn drop_unseen_label_writes(entries: &mut Vec<Entry<Projected>>) {
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for entry in entries.iter() {
        if let KeyOp::NodeRead { shown: Some((_, labels)) } = &entry.op.op {
            seen.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    entries.retain(|entry| match &entry.op.op {
        KeyOp::NodeUpdate { availability: None, label_add, label_rm, effect: Effect::Unknown } => {
            !label_rm.is_empty() || label_add.iter().any(|(k, v)| seen.contains(&(k.clone(), v.clone())))
        }
        _ => true,
    });
}

/// How a check of a whole history went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Objects checked.
    pub objects: usize,
    /// Operations checked (a list read counts once per object).
    pub operations: usize,
    /// Objects whose search ran out of budget: neither passed nor failed.
    pub inconclusive: Vec<String>,
}

/// A history no order of operations explains, with the evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("linearizable: {object}: {detail}")]
pub struct NotLinearizable {
    pub object: String,
    pub detail: String,
}

/// One call, for a message: who sent what where, when, and what came back (times in seconds
/// since `start_ms`).
pub fn describe(call: &ControlCall, start_ms: u64) -> String {
    let at = |ms: u64| format!("{:.3}s", ms.saturating_sub(start_ms) as f64 / 1000.0);
    let returned = match &call.returned {
        None => "no answer".to_string(),
        Some((stamp, answer)) => format!("answered at {}: {}", at(stamp.ms), describe_answer(answer)),
    };
    format!(
        "{} -> {}: {} (sent at {}, {returned})",
        call.client,
        call.manager,
        describe_request(&call.request),
        at(call.invoked.ms)
    )
}

fn describe_request(request: &Request) -> String {
    match request {
        Request::ServiceCreate { spec } => {
            format!("service create {} ({}, {})", spec.name, Mode::of(&spec.mode), spec.image)
        }
        Request::ServiceUpdate { service, spec } => {
            format!("service update {service} ({}, {})", Mode::of(&spec.mode), spec.image)
        }
        Request::ServiceScale { service, replicas } => format!("service scale {service}={replicas}"),
        Request::ServiceRemove { service } => format!("service rm {service}"),
        Request::ServiceRollback { service } => format!("service rollback {service}"),
        Request::ServiceList => "service ls".into(),
        Request::ServiceInspect { service } => format!("service inspect {service}"),
        Request::NodeUpdate { node, availability, label_add, label_rm } => {
            let mut words = vec!["node update".to_string()];
            if let Some(a) = availability {
                words.push(format!("--availability {}", format!("{a:?}").to_lowercase()));
            }
            words.extend(label_add.iter().map(|(k, v)| format!("--label-add {k}={v}")));
            words.extend(label_rm.iter().map(|k| format!("--label-rm {k}")));
            words.push(node.clone());
            words.join(" ")
        }
        Request::NodeRemove { node } => format!("node rm {node}"),
        Request::NodeList => "node ls".into(),
        Request::NodeInspect { node } => format!("node inspect {node}"),
        Request::NetworkCreate { name } => format!("network create {name}"),
        Request::NetworkRemove { network } => format!("network rm {network}"),
        Request::NetworkList => "network ls".into(),
        Request::NetworkInspect { network } => format!("network inspect {network}"),
        Request::Other(what) => (*what).to_string(),
    }
}

fn describe_node(n: &super::history::NodeSeen) -> String {
    let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{} ({}, {}, labels [{}])",
        n.hostname,
        n.id,
        format!("{:?}", n.availability).to_lowercase(),
        labels.join(" ")
    )
}

fn describe_answer(answer: &Answer) -> String {
    match answer {
        Answer::Done => "done".into(),
        Answer::Created(id) => format!("created {id}"),
        Answer::Services(list) => {
            let items: Vec<String> =
                list.iter().map(|s| format!("{} ({}, {}, {})", s.name, s.id, Mode::of(&s.mode), s.image)).collect();
            format!("[{}]", items.join(", "))
        }
        Answer::Service(s) => format!("{} ({}, {}, {})", s.name, s.id, Mode::of(&s.mode), s.image),
        Answer::Nodes(list) => {
            let items: Vec<String> = list.iter().map(describe_node).collect();
            format!("[{}]", items.join(", "))
        }
        Answer::Node(n) => describe_node(n),
        Answer::Networks(list) => {
            let items: Vec<String> = list.iter().map(|n| format!("{} ({})", n.name, n.id)).collect();
            format!("[{}]", items.join(", "))
        }
        Answer::Network(n) => format!("{} ({})", n.name, n.id),
        Answer::Other => "ok".into(),
        Answer::Refused(err) => format!("refused: {err}"),
        Answer::Lost(why) => format!("lost: {why}"),
    }
}

/// Check a run's control calls, one object at a time; `budget` search steps per object.
pub fn check(calls: &[ControlCall], start_ms: u64, budget: u64) -> Result<Summary, NotLinearizable> {
    let mut summary = Summary::default();
    for (key, entries) in project(calls) {
        summary.objects += 1;
        summary.operations += entries.len();
        match wgl::check(&StoreModel, Value::Unknown, &entries, budget) {
            Verdict::Linearizable => {}
            Verdict::Inconclusive { steps } => summary.inconclusive.push(format!("{key} ({steps} steps)")),
            Verdict::NotLinearizable { linearized, state, stuck } => {
                let shown = 4;
                let mut detail = format!(
                    "no order of its {} operations explains what each saw. The longest consistent prefix has {} of them, ",
                    entries.len(),
                    linearized.len()
                );
                if linearized.len() > shown {
                    detail.push_str(&format!("the last {shown}:"));
                } else {
                    detail.push_str("namely:");
                }
                for &i in linearized.iter().rev().take(shown).rev() {
                    detail.push_str(&format!("\n  - {}", describe(&calls[entries[i].op.call], start_ms)));
                }
                detail.push_str(&format!("\n  after which it is {state}; then nothing fits, first:"));
                if let Some(&i) = stuck.first() {
                    detail.push_str(&format!("\n  - {}", describe(&calls[entries[i].op.call], start_ms)));
                }
                return Err(NotLinearizable { object: key.to_string(), detail });
            }
        }
    }
    Ok(summary)
}
