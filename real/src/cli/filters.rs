//! Docker's `--filter key=value` for the list commands (`node ls`, `service ls`, `network ls`,
//! `stack services`, `service ps`, `node ps`): the values given for one key are alternatives, the
//! keys must all match, and a key the command does not know is refused (`invalid filter 'x'`).
//! Ids and names match by prefix, as swarmkit's `IDPrefixes`/`NamePrefixes`; labels by `key` (has
//! it) or `key=value`.

use std::collections::BTreeMap;

use shoal_core::api::{Labels, Network, NodeRole, ServiceMode, Task, TaskState};
use shoal_core::control::{NodeView, ServiceView};

/// Parsed `--filter` flags.
#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parse `key=value` flags, refusing keys not in `accepted`.
    pub fn parse(flags: &[String], accepted: &[&str]) -> Result<Filters, String> {
        let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for flag in flags {
            let (key, value) =
                flag.split_once('=').ok_or_else(|| format!("bad format of filter (expected name=value): {flag}"))?;
            let key = key.trim().to_lowercase();
            if !accepted.contains(&key.as_str()) {
                return Err(format!("invalid filter '{key}'"));
            }
            filters.entry(key).or_default().push(value.to_string());
        }
        Ok(Filters(filters))
    }

    /// Whether `key` is unfiltered, or one of its values matches.
    fn allows(&self, key: &str, matches: impl Fn(&str) -> bool) -> bool {
        self.0.get(key).is_none_or(|values| values.iter().any(|v| matches(v)))
    }

    /// The values given for `key` must each be one of `allowed` (Docker checks `mode`, `role`, …).
    fn check_values(&self, key: &str, allowed: &[&str]) -> Result<(), String> {
        for value in self.0.get(key).into_iter().flatten() {
            if !allowed.contains(&value.to_lowercase().as_str()) {
                return Err(format!("Invalid filter '{key}={value}'"));
            }
        }
        Ok(())
    }
}

/// `label=key` or `label=key=value` against `labels`.
fn label_matches(labels: &Labels, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((key, value)) => labels.get(key).is_some_and(|v| v == value),
        None => labels.contains_key(filter),
    }
}

pub const NODE_KEYS: &[&str] = &["id", "name", "label", "node.label", "role", "membership"];

/// `node ls --filter`.
pub fn nodes(views: Vec<NodeView>, filters: &Filters) -> Result<Vec<NodeView>, String> {
    filters.check_values("role", &["manager", "worker"])?;
    filters.check_values("membership", &["accepted", "pending"])?;
    Ok(views
        .into_iter()
        .filter(|v| {
            let node = &v.node;
            let role = if node.role == NodeRole::Manager { "manager" } else { "worker" };
            filters.allows("id", |f| node.id.starts_with(f))
                && filters.allows("name", |f| node.hostname().starts_with(f))
                && filters.allows("label", |f| label_matches(&node.description.engine_labels, f))
                && filters.allows("node.label", |f| label_matches(&node.spec.labels, f))
                && filters.allows("role", |f| f.eq_ignore_ascii_case(role))
                // Every node in the store was accepted (joins are approved by token).
                && filters.allows("membership", |f| f.eq_ignore_ascii_case("accepted"))
        })
        .collect())
}

pub const SERVICE_KEYS: &[&str] = &["id", "name", "label", "mode"];

/// `service ls` / `stack services --filter`.
pub fn services(views: Vec<ServiceView>, filters: &Filters) -> Result<Vec<ServiceView>, String> {
    filters.check_values("mode", &["replicated", "global"])?;
    Ok(views
        .into_iter()
        .filter(|v| {
            let service = &v.service;
            let mode = match service.spec.mode {
                ServiceMode::Replicated { .. } => "replicated",
                ServiceMode::Global => "global",
                ServiceMode::ReplicatedJob { .. } => "replicated-job",
                ServiceMode::GlobalJob => "global-job",
            };
            filters.allows("id", |f| service.id.starts_with(f))
                && filters.allows("name", |f| service.spec.name.starts_with(f))
                && filters.allows("label", |f| label_matches(&service.spec.labels, f))
                && filters.allows("mode", |f| f.eq_ignore_ascii_case(mode))
        })
        .collect())
}

pub const NETWORK_KEYS: &[&str] = &["id", "name", "label", "driver", "scope", "type"];

/// `network ls --filter`.
pub fn networks(networks: Vec<Network>, filters: &Filters) -> Result<Vec<Network>, String> {
    filters.check_values("type", &["custom", "builtin"])?;
    Ok(networks
        .into_iter()
        .filter(|n| {
            // The ingress network is the one swarm makes itself.
            let kind = if n.ingress { "builtin" } else { "custom" };
            filters.allows("id", |f| n.id.starts_with(f))
                && filters.allows("name", |f| n.name.starts_with(f))
                && filters.allows("label", |f| label_matches(&n.labels, f))
                && filters.allows("driver", |f| n.driver == f)
                && filters.allows("scope", |f| f == "swarm")
                && filters.allows("type", |f| f.eq_ignore_ascii_case(kind))
        })
        .collect())
}

pub const TASK_KEYS: &[&str] = &["id", "name", "node", "desired-state"];

/// `service ps` / `node ps --filter`; `hostnames` by node id.
pub fn tasks(tasks: Vec<Task>, filters: &Filters, hostnames: &BTreeMap<String, String>) -> Result<Vec<Task>, String> {
    filters.check_values("desired-state", &["running", "shutdown", "accepted"])?;
    Ok(tasks
        .into_iter()
        .filter(|t| {
            filters.allows("desired-state", |f| match f {
                "running" => t.desired_state == TaskState::Running,
                "shutdown" => t.desired_state >= TaskState::Shutdown,
                _ => t.desired_state == TaskState::Accepted,
            }) && filters
                .allows("node", |f| t.node_id.starts_with(f) || hostnames.get(&t.node_id).is_some_and(|h| h == f))
                && filters.allows("name", |f| t.name().starts_with(f))
                && filters.allows("id", |f| t.id.starts_with(f))
        })
        .collect())
}
