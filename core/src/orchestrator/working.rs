//! The working state of one reconcile pass: the committed state plus what earlier stages of the pass
//! decided (updated, created, deleted tasks; updated services), so that each stage sees the others'
//! work — the restart supervisor's replacement occupies its slot before the replicated reconciler
//! looks — and a task touched by several stages becomes one update in the proposal.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{Node, NodeState, Service, ServiceMode, Task, TaskState};
use crate::store::{Action, Kind, Object, StoreState};

/// Where a task sits in its service: `(slot, "")` for replicated services, `(0, node id)` for global ones.
pub type SlotKey = (u64, String);

pub fn slot_key(task: &Task) -> SlotKey {
    if task.slot > 0 {
        (task.slot, String::new())
    } else {
        (0, task.node_id.clone())
    }
}

/// A task the orchestrator still wants (desired to run, or to be ready to).
pub fn is_runnable(task: &Task) -> bool {
    task.desired_state <= TaskState::Running
}

/// The manager-side observed states only move forward.
pub fn advance(task: &mut Task, state: TaskState, message: &str, now_ms: u64) -> bool {
    if task.status.state >= state {
        return false;
    }
    task.status.state = state;
    task.status.message = message.to_string();
    task.status.timestamp_ms = now_ms;
    true
}

/// Raise the desired state (it only moves forward too: running → shutdown → remove).
pub fn desire(task: &mut Task, state: TaskState) -> bool {
    if task.desired_state >= state {
        return false;
    }
    task.desired_state = state;
    true
}

/// The networks a new task of `service` is attached to (ids): the service's own, and the ingress
/// network when it publishes ports (their containers need a bridge to be reached or bound).
pub fn task_networks(state: &StoreState, service: &Service) -> Vec<String> {
    let mut networks: Vec<String> = service
        .spec
        .task
        .networks
        .iter()
        .filter_map(|key| state.networks.values().find(|n| &n.id == key || &n.name == key).map(|n| n.id.clone()))
        .collect();
    if !service.endpoint_ports.is_empty() {
        if let Some(ingress) = state.networks.values().find(|n| n.ingress) {
            if !networks.contains(&ingress.id) {
                networks.push(ingress.id.clone());
            }
        }
    }
    networks
}

pub struct Working<'a> {
    pub base: &'a StoreState,
    pub now_ms: u64,
    tasks: BTreeMap<String, Task>,
    created: Vec<String>,
    deleted: BTreeSet<String>,
    services: BTreeMap<String, Service>,
    by_service: BTreeMap<String, Vec<String>>,
    next_wakeup_ms: Option<u64>,
    sequence: u64,
}

impl<'a> Working<'a> {
    pub fn new(base: &'a StoreState, now_ms: u64) -> Self {
        let mut by_service: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for task in base.tasks.values() {
            by_service.entry(task.service_id.clone()).or_default().push(task.id.clone());
        }
        Working {
            base,
            now_ms,
            tasks: BTreeMap::new(),
            created: Vec::new(),
            deleted: BTreeSet::new(),
            services: BTreeMap::new(),
            by_service,
            next_wakeup_ms: None,
            sequence: 0,
        }
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        if self.deleted.contains(id) {
            return None;
        }
        self.tasks.get(id).or_else(|| self.base.tasks.get(id))
    }

    pub fn service(&self, id: &str) -> Option<&Service> {
        self.services.get(id).or_else(|| self.base.services.get(id))
    }

    pub fn node(&self, id: &str) -> Option<&'a Node> {
        self.base.nodes.get(id)
    }

    pub fn node_ready(&self, id: &str) -> bool {
        self.node(id).is_some_and(|n| n.status.state == NodeState::Ready)
    }

    pub fn service_ids(&self) -> Vec<String> {
        self.base.services.keys().cloned().collect()
    }

    /// Ids of services that have tasks but no longer exist.
    pub fn orphan_service_ids(&self) -> Vec<String> {
        self.by_service.keys().filter(|id| !self.base.services.contains_key(*id)).cloned().collect()
    }

    /// The service's tasks as they stand in this pass (clones: stages edit and put them back).
    pub fn tasks_of(&self, service_id: &str) -> Vec<Task> {
        let Some(ids) = self.by_service.get(service_id) else { return Vec::new() };
        ids.iter().filter_map(|id| self.task(id)).cloned().collect()
    }

    /// The service's tasks grouped by slot (replicated) or node (global).
    pub fn slots_of(&self, service_id: &str) -> BTreeMap<SlotKey, Vec<Task>> {
        let mut slots: BTreeMap<SlotKey, Vec<Task>> = BTreeMap::new();
        for task in self.tasks_of(service_id) {
            slots.entry(slot_key(&task)).or_default().push(task);
        }
        slots
    }

    /// Every task as it stands in this pass.
    pub fn all_tasks(&self) -> impl Iterator<Item = &Task> {
        let changed = &self.tasks;
        let deleted = &self.deleted;
        self.base
            .tasks
            .iter()
            .filter(move |(id, _)| !deleted.contains(*id))
            .map(move |(id, t)| changed.get(id).unwrap_or(t))
            .chain(self.created.iter().filter_map(move |id| changed.get(id)))
    }

    pub fn is_created(&self, id: &str) -> bool {
        self.tasks.contains_key(id) && !self.base.tasks.contains_key(id)
    }

    /// When the task was created (a task made in this pass, not yet stored, was made now).
    pub fn created_at(&self, task: &Task) -> u64 {
        if task.meta.version == 0 || self.is_created(&task.id) {
            self.now_ms
        } else {
            task.meta.created_at_ms
        }
    }

    /// Record a changed task (one made earlier in this pass stays a create).
    pub fn put_task(&mut self, task: Task) {
        self.tasks.insert(task.id.clone(), task);
    }

    pub fn create_task(&mut self, task: Task) {
        self.by_service.entry(task.service_id.clone()).or_default().push(task.id.clone());
        self.created.push(task.id.clone());
        self.tasks.insert(task.id.clone(), task);
    }

    pub fn delete_task(&mut self, id: &str) {
        if self.base.tasks.contains_key(id) {
            self.deleted.insert(id.to_string());
        } else {
            self.created.retain(|c| c != id);
        }
        self.tasks.remove(id);
    }

    pub fn put_service(&mut self, service: Service) {
        self.services.insert(service.id.clone(), service);
    }

    /// Ask to be woken at `at_ms` (the earliest request wins).
    pub fn wake_at(&mut self, at_ms: u64) {
        self.next_wakeup_ms = Some(self.next_wakeup_ms.map_or(at_ms, |w| w.min(at_ms)));
    }

    pub fn next_wakeup_ms(&self) -> Option<u64> {
        self.next_wakeup_ms
    }

    /// A fresh task id, derived from the state version and a per-pass sequence rather than drawn from
    /// the rng: the pass stays a pure function, and two leaders working from the same state version
    /// make the same ids, so a stale leader's duplicate create is refused by the store.
    pub fn new_task_id(&mut self, service_id: &str) -> String {
        self.sequence += 1;
        let mut h1: u64 = 0xcbf2_9ce4_8422_2325;
        let mut h2: u64 = 0x8422_2325_cbf2_9ce4;
        let seed = format!("{}/{}/{}", self.base.version, self.sequence, service_id);
        for b in seed.bytes() {
            h1 = (h1 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
            h2 = (h2 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(17);
        }
        let mut n = ((h1 as u128) << 64) | h2 as u128;
        let alphabet = b"0123456789abcdefghijklmnopqrstuvwxyz";
        (0..25)
            .map(|_| {
                let c = alphabet[(n % 36) as usize] as char;
                n /= 36;
                c
            })
            .collect()
    }

    /// A new task of `service` in `slot` (replicated) or on `node_id` (global), made from the current spec.
    pub fn new_task(&mut self, service: &Service, slot: u64, node_id: &str) -> Task {
        let id = self.new_task_id(&service.id);
        let mut task = Task {
            id,
            service_id: service.id.clone(),
            service_name: service.spec.name.clone(),
            slot: if matches!(service.spec.mode, ServiceMode::Global) { 0 } else { slot },
            node_id: node_id.to_string(),
            spec_version: service.spec_version,
            spec: service.spec.task.clone(),
            desired_state: TaskState::Running,
            networks: task_networks(self.base, service),
            ports: service.endpoint_ports.clone(),
            service_labels: service.spec.labels.clone(),
            ..Task::default()
        };
        task.status.state = TaskState::New;
        task.status.message = "created".to_string();
        task.status.timestamp_ms = self.now_ms;
        task
    }

    /// Turn the pass into actions: service updates, then task updates, creates and deletes.
    pub fn into_actions(self) -> Vec<Action> {
        let mut actions = Vec::new();
        for service in self.services.into_values() {
            if self.base.services.get(&service.id) != Some(&service) {
                actions.push(Action::Update(Object::Service(service)));
            }
        }
        let mut tasks = self.tasks;
        let mut creates = Vec::new();
        for id in &self.created {
            if let Some(task) = tasks.remove(id) {
                creates.push(Action::Create(Object::Task(task)));
            }
        }
        for (id, task) in tasks {
            if self.base.tasks.get(&id) != Some(&task) {
                actions.push(Action::Update(Object::Task(task)));
            }
        }
        actions.extend(creates);
        actions.extend(self.deleted.into_iter().map(|id| Action::Delete { kind: Kind::Task, id }));
        actions
    }
}
