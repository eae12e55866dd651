//! The scheduler: assigns pending tasks to nodes, as a plain function over the state (swarmkit's
//! `manager/scheduler`, batched).
//!
//! A task is *pending* when its observed state is `pending` and it is desired to run. Tasks without a
//! node go through the [`filter`] pipeline over every node, then the nodes that pass are ordered: the
//! service's placement preferences (`spread=node.labels.zone`, a tree of label values, evened out level
//! by level), then nodes where the service failed repeatedly in the last five minutes last, then fewest
//! tasks of the same service, then fewest tasks in total, then node id. Tasks that already carry a node
//! (global services) are checked against that node only.
//!
//! Batching: tasks are grouped by (service, spec version), the pipeline runs once per group and node,
//! and the group's tasks are dealt out from a heap keyed by the ordering, so one pass costs
//! O(groups × nodes + tasks × log nodes) — 100k tasks on 10k nodes in one pass, no quadratic work.
//! A node popped from the heap is re-checked (resources, host ports and max-per-node change as tasks
//! land) and dropped from the group when it no longer fits.
//!
//! Output: [`Decision`]s; [`decisions_to_actions`] turns them into task updates for a proposal. The
//! scheduler never reads the clock: `now_ms` is passed in. It touches nothing but its arguments.

pub mod constraint;
pub mod filter;

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use crate::api::{Node, Service, Task, TaskState};
use crate::store::{Action, Object, StoreState};

pub use constraint::{
    node_matches, parse_constraints, parse_preferences, platform_matches, Constraint, ConstraintError, NodeAttribute,
    SpreadPreference,
};
pub use filter::{host_ports, Filter, NodeInfo, Pipeline, TaskRequirements, FILTERS};

/// Failures of a service's tasks on a node are remembered this long (swarmkit `monitorFailures`).
pub const FAILURE_WINDOW_MS: u64 = 5 * 60 * 1000;
/// A node with this many recent failures of a service is ranked after the others (swarmkit `maxFailures`).
pub const MAX_RECENT_FAILURES: u64 = 5;
/// The status message of an assigned task (swarmkit's words).
pub const ASSIGNED_MESSAGE: &str = "scheduler assigned task to node";

/// What the scheduler decided for one pending task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Assign {
        task_id: String,
        node_id: String,
    },
    /// Stays pending, with Swarm's `no suitable node (…)` reason.
    Unschedulable {
        task_id: String,
        err: String,
    },
}

/// Is this task waiting for the scheduler?
pub fn is_pending(task: &Task) -> bool {
    task.status.state == TaskState::Pending && task.desired_state <= TaskState::Running
}

/// Does this task hold its node's resources and ports? (Placed and not yet stopped.)
fn holds_node(task: &Task) -> bool {
    !task.node_id.is_empty() && task.status.state >= TaskState::Assigned && task.status.state <= TaskState::Running
}

/// Build the per-node view from every task.
pub fn node_infos<'a>(
    nodes: &'a BTreeMap<String, Node>,
    services: &'a BTreeMap<String, Service>,
    tasks: impl IntoIterator<Item = &'a Task>,
    now_ms: u64,
) -> (Vec<NodeInfo<'a>>, BTreeMap<&'a str, usize>) {
    let mut infos: Vec<NodeInfo<'a>> = nodes.values().map(NodeInfo::new).collect();
    let index: BTreeMap<&'a str, usize> = nodes.keys().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    // Host ports are per service; compute them once.
    let ports: BTreeMap<&str, Vec<(String, u16)>> =
        services.iter().map(|(id, s)| (id.as_str(), host_ports(s))).filter(|(_, p)| !p.is_empty()).collect();
    for task in tasks {
        let Some(&i) = index.get(task.node_id.as_str()) else {
            continue;
        };
        let info = &mut infos[i];
        if holds_node(task) {
            let r = task.spec.resources.reservations;
            info.available_nano_cpus -= r.nano_cpus as i128;
            info.available_memory_bytes -= r.memory_bytes as i128;
            if let Some(p) = ports.get(task.service_id.as_str()) {
                info.host_ports.extend(p.iter().cloned());
            }
            if task.desired_state <= TaskState::Running {
                info.total_tasks += 1;
                *info.tasks_by_service.entry(task.service_id.as_str()).or_default() += 1;
            }
        } else if matches!(task.status.state, TaskState::Failed | TaskState::Rejected)
            && task.status.timestamp_ms + FAILURE_WINDOW_MS >= now_ms
        {
            *info.recent_failures.entry(task.service_id.as_str()).or_default() += 1;
        }
    }
    (infos, index)
}

/// The heap key of a node for a service: lower is better. The node index breaks ties, and indices
/// follow node id order, so ties go to the smallest node id.
type Key = (u64, u64, u64, usize);

fn key(info: &NodeInfo<'_>, service_id: &str, idx: usize) -> Key {
    let failures = info.recent_failures.get(service_id).copied().unwrap_or(0);
    let penalty = if failures >= MAX_RECENT_FAILURES { failures } else { 0 };
    (penalty, info.service_tasks(service_id), info.total_tasks, idx)
}

/// The placement-preference tree of one group: inner levels split nodes by a label value and hand
/// out tasks to the branch with the fewest of the service's tasks; leaves deal from a heap.
enum Tree {
    Leaf(BinaryHeap<Reverse<Key>>),
    Inner {
        children: Vec<Tree>,
        /// (service tasks in the branch, child index) of branches that may still fit a task.
        order: BTreeSet<(u64, usize)>,
    },
}

struct PlaceCtx<'i, 'a> {
    infos: &'i mut [NodeInfo<'a>],
    req: &'i TaskRequirements<'a>,
    pipeline: &'i Pipeline,
}

impl Tree {
    fn build(
        candidates: &[usize],
        prefs: &[SpreadPreference],
        infos: &[NodeInfo<'_>],
        service_id: &str,
    ) -> (Tree, u64) {
        let Some((pref, rest)) = prefs.split_first() else {
            let heap: BinaryHeap<_> = candidates.iter().map(|&i| Reverse(key(&infos[i], service_id, i))).collect();
            let count = candidates.iter().map(|&i| infos[i].service_tasks(service_id)).sum();
            return (Tree::Leaf(heap), count);
        };
        // Branches by label value; nodes without the label form their own branch (value ""), as in Swarm.
        let mut branches: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &i in candidates {
            branches.entry(pref.attribute.value(infos[i].node)).or_default().push(i);
        }
        let mut children = Vec::with_capacity(branches.len());
        let mut order = BTreeSet::new();
        let mut total = 0;
        for nodes in branches.values() {
            let (child, count) = Tree::build(nodes, rest, infos, service_id);
            order.insert((count, children.len()));
            children.push(child);
            total += count;
        }
        (Tree::Inner { children, order }, total)
    }

    /// Place one task; `None` when nothing in this subtree fits any more.
    fn place(&mut self, ctx: &mut PlaceCtx<'_, '_>) -> Option<usize> {
        match self {
            Tree::Leaf(heap) => {
                while let Some(Reverse(k)) = heap.pop() {
                    let idx = k.3;
                    if !ctx.pipeline.check(ctx.req, &ctx.infos[idx]) {
                        continue; // full for this group: leave it out of the heap
                    }
                    ctx.infos[idx].add_task(ctx.req, true);
                    heap.push(Reverse(key(&ctx.infos[idx], ctx.req.service_id, idx)));
                    return Some(idx);
                }
                None
            }
            Tree::Inner { children, order } => {
                while let Some((count, child)) = order.pop_first() {
                    if let Some(idx) = children[child].place(ctx) {
                        order.insert((count + 1, child));
                        return Some(idx);
                    }
                }
                None
            }
        }
    }
}

/// Decide placements for every pending task in `tasks` (which must be every task in the state, so the
/// node loads are right). Deterministic for a given input.
pub fn schedule<'a>(
    nodes: &'a BTreeMap<String, Node>,
    services: &'a BTreeMap<String, Service>,
    tasks: impl IntoIterator<Item = &'a Task>,
    now_ms: u64,
) -> Vec<Decision> {
    let tasks: Vec<&'a Task> = tasks.into_iter().collect();
    let (mut infos, index) = node_infos(nodes, services, tasks.iter().copied(), now_ms);
    let mut decisions = Vec::new();
    let waiting = waiting_for_dependencies(services, &tasks);

    let mut preassigned: Vec<&Task> = Vec::new();
    let mut groups: BTreeMap<(&str, u64), Vec<&Task>> = BTreeMap::new();
    for &task in &tasks {
        if !is_pending(task) {
            continue;
        }
        if task.node_id.is_empty() {
            groups.entry((task.service_id.as_str(), task.spec_version)).or_default().push(task);
        } else {
            preassigned.push(task);
        }
    }

    // Tasks bound to a node (global services) first, as swarmkit does: they have no other choice.
    preassigned.sort_by(|a, b| a.id.cmp(&b.id));
    for task in preassigned {
        if let Some(err) = waiting.get(task.service_id.as_str()) {
            decisions.push(Decision::Unschedulable { task_id: task.id.clone(), err: err.clone() });
            continue;
        }
        let req = TaskRequirements::new(task, services.get(&task.service_id));
        let mut pipeline = Pipeline::new(&req);
        let decision = match index.get(task.node_id.as_str()) {
            Some(&i) if pipeline.process(&req, &infos[i]) => {
                infos[i].add_task(&req, true);
                Decision::Assign { task_id: task.id.clone(), node_id: task.node_id.clone() }
            }
            // A vanished node: the constraint enforcer will retire the task; say why it waits.
            _ => Decision::Unschedulable { task_id: task.id.clone(), err: pipeline.no_suitable_node() },
        };
        decisions.push(decision);
    }

    for ((service_id, _), mut group) in groups {
        if let Some(err) = waiting.get(service_id) {
            decisions.extend(group.iter().map(|t| Decision::Unschedulable { task_id: t.id.clone(), err: err.clone() }));
            continue;
        }
        // Lowest slots first, so `web.1` lands before `web.10`.
        group.sort_by(|a, b| a.slot.cmp(&b.slot).then_with(|| a.id.cmp(&b.id)));
        let req = TaskRequirements::new(group[0], services.get(&group[0].service_id));
        let mut pipeline = Pipeline::new(&req);
        let candidates: Vec<usize> = (0..infos.len()).filter(|&i| pipeline.process(&req, &infos[i])).collect();
        let (mut tree, _) = Tree::build(&candidates, &req.preferences, &infos, req.service_id);
        let mut placed = 0;
        {
            let mut ctx = PlaceCtx { infos: &mut infos, req: &req, pipeline: &pipeline };
            for task in &group {
                let Some(idx) = tree.place(&mut ctx) else {
                    break;
                };
                decisions.push(Decision::Assign { task_id: task.id.clone(), node_id: ctx.infos[idx].node.id.clone() });
                placed += 1;
            }
        }
        if placed < group.len() {
            // Explain with the nodes as they are now (after this group filled what it could).
            pipeline.reset();
            for info in &infos {
                pipeline.process(&req, info);
            }
            let err = pipeline.no_suitable_node();
            for task in &group[placed..] {
                decisions.push(Decision::Unschedulable { task_id: task.id.clone(), err: err.clone() });
            }
        }
    }
    decisions
}

/// Services whose `depends_on` names a service without a running task (desired and observed
/// running), with the reason their tasks wait: `waiting for db, cache to start (depends_on)`.
fn waiting_for_dependencies<'a>(services: &'a BTreeMap<String, Service>, tasks: &[&Task]) -> BTreeMap<&'a str, String> {
    let mut waiting = BTreeMap::new();
    if services.values().all(|s| s.spec.depends_on.is_empty()) {
        return waiting;
    }
    let by_name: BTreeMap<&str, &str> = services.values().map(|s| (s.spec.name.as_str(), s.id.as_str())).collect();
    let running: BTreeSet<&str> = tasks
        .iter()
        .filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Running)
        .map(|t| t.service_id.as_str())
        .collect();
    for service in services.values() {
        let missing: Vec<&str> = service
            .spec
            .depends_on
            .iter()
            .filter(|name| by_name.get(name.as_str()).is_some_and(|id| !running.contains(id)))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            waiting.insert(service.id.as_str(), format!("waiting for {} to start (depends_on)", missing.join(", ")));
        }
    }
    waiting
}

/// Apply decisions to tasks: assigned tasks get their node, state `assigned` and Swarm's message;
/// unschedulable ones get the reason in `err`, written only when it changed (so an idle cluster
/// produces no writes). `lookup` finds the current version of a task.
pub fn apply_decisions<'t>(
    decisions: &[Decision],
    now_ms: u64,
    mut lookup: impl FnMut(&str) -> Option<&'t Task>,
) -> Vec<Task> {
    let mut out = Vec::new();
    for decision in decisions {
        match decision {
            Decision::Assign { task_id, node_id } => {
                let Some(task) = lookup(task_id) else {
                    continue;
                };
                let mut task = task.clone();
                task.node_id = node_id.clone();
                task.status.state = TaskState::Assigned;
                task.status.message = ASSIGNED_MESSAGE.to_string();
                task.status.err.clear();
                task.status.timestamp_ms = now_ms;
                out.push(task);
            }
            Decision::Unschedulable { task_id, err } => {
                let Some(task) = lookup(task_id) else {
                    continue;
                };
                if &task.status.err != err {
                    let mut task = task.clone();
                    task.status.err = err.clone();
                    out.push(task);
                }
            }
        }
    }
    out
}

/// The scheduler over a whole state, as task updates ready to propose.
pub fn schedule_state(state: &StoreState, now_ms: u64) -> Vec<Action> {
    let decisions = schedule(&state.nodes, &state.services, state.tasks.values(), now_ms);
    decisions_to_actions(state, &decisions, now_ms)
}

/// [`apply_decisions`] against a stored state, wrapped as update actions.
///
/// A task placed on a node that has no lease yet of one of the task's networks gets one in the same
/// proposal (DESIGN §8): the lowest free part of the network's subnet, recorded in the network.
pub fn decisions_to_actions(state: &StoreState, decisions: &[Decision], now_ms: u64) -> Vec<Action> {
    let tasks = apply_decisions(decisions, now_ms, |id| state.tasks.get(id));
    let mut actions = crate::mesh::lease::lease_actions(state, tasks.iter());
    actions.extend(tasks.into_iter().map(|t| Action::Update(Object::Task(t))));
    actions
}
