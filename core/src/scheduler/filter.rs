//! The filter pipeline, after swarmkit's `manager/scheduler/filter.go` and `pipeline.go`: each filter
//! says whether it applies to a task (`set_task`), whether a node passes (`check`), and how to tell the
//! user about the nodes that failed it (`explain`). The pipeline runs the filters in swarmkit's order,
//! charges each rejected node to the first filter it failed, and builds the "no suitable node (…)" text.

use std::collections::BTreeMap;

use crate::api::{Availability, Node, NodeState, PortConfig, PublishMode, ResourceAmount, Service, Task};

use super::constraint::{
    node_matches, parse_constraints, parse_preferences, platform_matches, Constraint, SpreadPreference,
};

/// What the filters need to know about a task (shared by every task of a group: same service, same spec).
#[derive(Debug, Clone)]
pub struct TaskRequirements<'a> {
    pub service_id: &'a str,
    pub reservations: ResourceAmount,
    /// `None` when the stored constraints do not parse (the control API should have refused them):
    /// such a task fits nowhere, and says so.
    pub constraints: Option<Vec<Constraint>>,
    pub preferences: Vec<SpreadPreference>,
    pub platforms: &'a [String],
    /// `(protocol, published port)` of host-mode published ports.
    pub host_ports: Vec<(String, u16)>,
    /// 0 = unlimited.
    pub max_replicas_per_node: u64,
}

impl<'a> TaskRequirements<'a> {
    pub fn new(task: &'a Task, service: Option<&'a Service>) -> Self {
        let placement = &task.spec.placement;
        TaskRequirements {
            service_id: &task.service_id,
            reservations: task.spec.resources.reservations,
            constraints: parse_constraints(&placement.constraints).ok(),
            // A malformed preference is ignored rather than blocking placement: it only orders nodes.
            preferences: parse_preferences(&placement.preferences).unwrap_or_default(),
            platforms: &placement.platforms,
            host_ports: service.map(host_ports).unwrap_or_default(),
            max_replicas_per_node: placement.max_replicas_per_node,
        }
    }
}

/// The host-mode published ports a service's tasks bind on their node.
pub fn host_ports(service: &Service) -> Vec<(String, u16)> {
    let ports: &[PortConfig] =
        if service.endpoint_ports.is_empty() { &service.spec.ports } else { &service.endpoint_ports };
    ports
        .iter()
        .filter(|p| p.publish_mode == PublishMode::Host && p.published_port != 0)
        .map(|p| (p.protocol.to_ascii_lowercase(), p.published_port))
        .collect()
}

/// A node as the scheduler sees it: what it has left and what runs on it.
#[derive(Debug, Clone)]
pub struct NodeInfo<'a> {
    pub node: &'a Node,
    /// Node resources minus the reservations of the non-terminal tasks on it (may go negative when a
    /// node shrank under its tasks).
    pub available_nano_cpus: i128,
    pub available_memory_bytes: i128,
    /// Host-mode ports bound by non-terminal tasks on the node.
    pub host_ports: std::collections::BTreeSet<(String, u16)>,
    /// Active tasks (assigned..running, desired to run) on the node.
    pub total_tasks: u64,
    pub tasks_by_service: BTreeMap<&'a str, u64>,
    /// Tasks per service that failed on this node within [`super::FAILURE_WINDOW_MS`].
    pub recent_failures: BTreeMap<&'a str, u64>,
}

impl<'a> NodeInfo<'a> {
    pub fn new(node: &'a Node) -> Self {
        NodeInfo {
            node,
            available_nano_cpus: node.description.resources.nano_cpus as i128,
            available_memory_bytes: node.description.resources.memory_bytes as i128,
            host_ports: Default::default(),
            total_tasks: 0,
            tasks_by_service: BTreeMap::new(),
            recent_failures: BTreeMap::new(),
        }
    }

    pub fn service_tasks(&self, service_id: &str) -> u64 {
        self.tasks_by_service.get(service_id).copied().unwrap_or(0)
    }

    /// Charge a task placed (or found) on this node.
    pub fn add_task(&mut self, req: &TaskRequirements<'a>, counts: bool) {
        self.available_nano_cpus -= req.reservations.nano_cpus as i128;
        self.available_memory_bytes -= req.reservations.memory_bytes as i128;
        self.host_ports.extend(req.host_ports.iter().cloned());
        if counts {
            self.total_tasks += 1;
            *self.tasks_by_service.entry(req.service_id).or_default() += 1;
        }
    }
}

/// One stage of the pipeline (swarmkit's `Filter` interface).
pub trait Filter: Sync {
    /// Does this filter apply to the task at all? (swarmkit's `SetTask`.)
    fn set_task(&self, req: &TaskRequirements<'_>) -> bool;
    /// Does the node pass?
    fn check(&self, req: &TaskRequirements<'_>, node: &NodeInfo<'_>) -> bool;
    /// What to tell the user about `nodes` nodes that failed this filter.
    fn explain(&self, nodes: usize) -> String;
}

fn plural(nodes: usize, one: &str, many: &str) -> String {
    if nodes == 1 {
        one.to_string()
    } else {
        many.replace("%d", &nodes.to_string())
    }
}

/// The node's agent is connected and healthy.
pub struct ReadyFilter;
impl Filter for ReadyFilter {
    fn set_task(&self, _: &TaskRequirements<'_>) -> bool {
        true
    }
    fn check(&self, _: &TaskRequirements<'_>, node: &NodeInfo<'_>) -> bool {
        node.node.status.state == NodeState::Ready
    }
    fn explain(&self, nodes: usize) -> String {
        plural(nodes, "1 node not available for new tasks", "%d nodes not available for new tasks")
    }
}

/// Only `active` nodes take new tasks (`pause` and `drain` do not). swarmkit folds this into its
/// ready filter, hence the same words.
pub struct AvailabilityFilter;
impl Filter for AvailabilityFilter {
    fn set_task(&self, _: &TaskRequirements<'_>) -> bool {
        true
    }
    fn check(&self, _: &TaskRequirements<'_>, node: &NodeInfo<'_>) -> bool {
        node.node.spec.availability == Availability::Active
    }
    fn explain(&self, nodes: usize) -> String {
        ReadyFilter.explain(nodes)
    }
}

/// Reservations must fit in what the node has left.
pub struct ResourceFilter;
impl Filter for ResourceFilter {
    fn set_task(&self, req: &TaskRequirements<'_>) -> bool {
        req.reservations.nano_cpus > 0 || req.reservations.memory_bytes > 0
    }
    fn check(&self, req: &TaskRequirements<'_>, node: &NodeInfo<'_>) -> bool {
        let r = req.reservations;
        (r.nano_cpus == 0 || r.nano_cpus as i128 <= node.available_nano_cpus)
            && (r.memory_bytes == 0 || r.memory_bytes as i128 <= node.available_memory_bytes)
    }
    fn explain(&self, nodes: usize) -> String {
        plural(nodes, "insufficient resources on 1 node", "insufficient resources on %d nodes")
    }
}

/// `--constraint` expressions.
pub struct ConstraintFilter;
impl Filter for ConstraintFilter {
    fn set_task(&self, req: &TaskRequirements<'_>) -> bool {
        req.constraints.as_ref().is_none_or(|c| !c.is_empty())
    }
    fn check(&self, req: &TaskRequirements<'_>, node: &NodeInfo<'_>) -> bool {
        req.constraints.as_deref().is_some_and(|c| node_matches(c, node.node))
    }
    fn explain(&self, nodes: usize) -> String {
        plural(
            nodes,
            "scheduling constraints not satisfied on 1 node",
            "scheduling constraints not satisfied on %d nodes",
        )
    }
}

/// The image's platforms (`os/arch`).
pub struct PlatformFilter;
impl Filter for PlatformFilter {
    fn set_task(&self, req: &TaskRequirements<'_>) -> bool {
        !req.platforms.is_empty()
    }
    fn check(&self, req: &TaskRequirements<'_>, node: &NodeInfo<'_>) -> bool {
        platform_matches(req.platforms, node.node)
    }
    fn explain(&self, nodes: usize) -> String {
        plural(nodes, "unsupported platform on 1 node", "unsupported platform on %d nodes")
    }
}

/// No two tasks binding the same host-mode published port on one node.
pub struct HostPortFilter;
impl Filter for HostPortFilter {
    fn set_task(&self, req: &TaskRequirements<'_>) -> bool {
        !req.host_ports.is_empty()
    }
    fn check(&self, req: &TaskRequirements<'_>, node: &NodeInfo<'_>) -> bool {
        req.host_ports.iter().all(|p| !node.host_ports.contains(p))
    }
    fn explain(&self, nodes: usize) -> String {
        plural(nodes, "host-mode port already in use on 1 node", "host-mode port already in use on %d nodes")
    }
}

/// `--replicas-max-per-node`.
pub struct MaxReplicasFilter;
impl Filter for MaxReplicasFilter {
    fn set_task(&self, req: &TaskRequirements<'_>) -> bool {
        req.max_replicas_per_node > 0
    }
    fn check(&self, req: &TaskRequirements<'_>, node: &NodeInfo<'_>) -> bool {
        node.service_tasks(req.service_id) < req.max_replicas_per_node
    }
    fn explain(&self, _nodes: usize) -> String {
        // swarmkit's words, count-less and all.
        "max replicas per node limit exceed".to_string()
    }
}

/// swarmkit's order (`pipeline.go`): cheap, common rejections first.
pub static FILTERS: [&dyn Filter; 7] = [
    &ReadyFilter,
    &AvailabilityFilter,
    &ResourceFilter,
    &ConstraintFilter,
    &PlatformFilter,
    &HostPortFilter,
    &MaxReplicasFilter,
];

/// The filters set up for one task (group), with per-filter failure counts for the explanation.
#[derive(Debug, Clone)]
pub struct Pipeline {
    enabled: [bool; 7],
    failures: [usize; 7],
}

impl Pipeline {
    pub fn new(req: &TaskRequirements<'_>) -> Self {
        let mut enabled = [false; 7];
        for (slot, filter) in enabled.iter_mut().zip(FILTERS.iter()) {
            *slot = filter.set_task(req);
        }
        Pipeline { enabled, failures: [0; 7] }
    }

    /// The first filter the node fails, if any (no counting).
    pub fn first_failure(&self, req: &TaskRequirements<'_>, node: &NodeInfo<'_>) -> Option<usize> {
        (0..FILTERS.len()).find(|&i| self.enabled[i] && !FILTERS[i].check(req, node))
    }

    pub fn check(&self, req: &TaskRequirements<'_>, node: &NodeInfo<'_>) -> bool {
        self.first_failure(req, node).is_none()
    }

    /// Check and charge a rejection to the filter that made it.
    pub fn process(&mut self, req: &TaskRequirements<'_>, node: &NodeInfo<'_>) -> bool {
        match self.first_failure(req, node) {
            None => true,
            Some(i) => {
                self.failures[i] += 1;
                false
            }
        }
    }

    pub fn reset(&mut self) {
        self.failures = [0; 7];
    }

    /// "2 nodes not available for new tasks; insufficient resources on 1 node": one phrase per
    /// failing filter (filters with the same words are merged), most nodes first.
    pub fn explain(&self) -> String {
        let mut phrases: Vec<(usize, usize, String)> = Vec::new(); // (count, first filter, words-key)
        let mut by_words: BTreeMap<String, usize> = BTreeMap::new();
        for (i, &count) in self.failures.iter().enumerate() {
            if count == 0 {
                continue;
            }
            // Merge filters that speak the same words (ready + availability) before counting.
            let key = FILTERS[i].explain(usize::MAX);
            match by_words.get(&key) {
                Some(&at) => phrases[at].0 += count,
                None => {
                    by_words.insert(key.clone(), phrases.len());
                    phrases.push((count, i, key));
                }
            }
        }
        phrases.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        phrases.iter().map(|(count, i, _)| FILTERS[*i].explain(*count)).collect::<Vec<_>>().join("; ")
    }

    /// The full task error, Swarm's `no suitable node (…)`.
    pub fn no_suitable_node(&self) -> String {
        let explanation = self.explain();
        if explanation.is_empty() {
            "no suitable node".to_string()
        } else {
            format!("no suitable node ({explanation})")
        }
    }
}
