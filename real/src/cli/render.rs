//! What the CLI prints for each answer, in Docker's shapes (`docker/cli` formatters and templates),
//! with `shoal` in place of `docker`. Pure functions of the answer and the current time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};
use shoal_core::api::{
    Availability, Network, NodeRole, NodeState, PortConfig, PublishMode, ServiceMode, Task, UpdateConfig, UpdateOrder,
};
use shoal_core::control::{ClusterInfo, NodeView, ServiceView};
use shoal_core::logs::ServiceLogs;

use super::args::LogsArgs;
use super::listing::{row, Listing};
use crate::format::{self, bytes_size, go_duration, human_duration, natural_cmp, pretty};
use crate::local_api::SwarmStatus;

pub fn availability_word(availability: Availability) -> &'static str {
    match availability {
        Availability::Active => "active",
        Availability::Pause => "pause",
        Availability::Drain => "drain",
    }
}

pub fn node_state_word(state: NodeState) -> &'static str {
    match state {
        NodeState::Unknown => "unknown",
        NodeState::Down => "down",
        NodeState::Ready => "ready",
        NodeState::Disconnected => "disconnected",
    }
}

fn manager_status(view: &NodeView) -> String {
    if view.leader {
        "Leader".into()
    } else if view.node.manager_status.is_some() || view.node.role == NodeRole::Manager {
        pretty(if view.reachability.is_empty() { "unknown" } else { &view.reachability })
    } else {
        String::new()
    }
}

/// `node ls`: sorted by hostname, `*` after the ID of the node the CLI talks to.
pub fn node_list(nodes: Vec<NodeView>, self_id: &str) -> Listing {
    node_list_with_tls(nodes, self_id, None)
}

/// docker/cli's `TLSStatus`: `Ready` if the node holds what every node should (`desired`, from
/// `swarm ca`), `Needs Rotation` if not, `Unknown` if it has not said (`Ready` when `desired` is
/// not known).
fn tls_status(node: &shoal_core::api::Node, desired: Option<&shoal_core::api::NodeTlsInfo>) -> &'static str {
    match (desired, &node.description.tls_info) {
        (None, _) => "Ready",
        (Some(_), None) => "Unknown",
        (Some(want), Some(held)) if want == held => "Ready",
        (Some(_), Some(_)) => "Needs Rotation",
    }
}

/// [`node_list`] with each node's TLS STATUS against what every node should hold.
pub fn node_list_with_tls(
    mut nodes: Vec<NodeView>,
    self_id: &str,
    desired: Option<&shoal_core::api::NodeTlsInfo>,
) -> Listing {
    nodes.sort_by(|a, b| natural_cmp(a.node.hostname(), b.node.hostname()));
    let rows = nodes
        .iter()
        .map(|view| {
            let me = view.node.id == self_id;
            row([
                ("ID", json!(view.node.id)),
                ("Self", json!(me)),
                ("Hostname", json!(view.node.hostname())),
                ("Status", json!(pretty(node_state_word(view.node.status.state)))),
                ("Availability", json!(pretty(availability_word(view.node.spec.availability)))),
                ("ManagerStatus", json!(manager_status(view))),
                ("EngineVersion", json!(view.node.description.engine_version)),
                ("TLSStatus", json!(tls_status(&view.node, desired))),
            ])
        })
        .collect();
    Listing {
        default_format: "table {{.ID}} {{if .Self}}*{{else}} {{ end }}\t{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}\t{{.EngineVersion}}",
        headers: &[
            ("ID", "ID"),
            ("Self", ""),
            ("Hostname", "HOSTNAME"),
            ("Status", "STATUS"),
            ("Availability", "AVAILABILITY"),
            ("ManagerStatus", "MANAGER STATUS"),
            ("EngineVersion", "ENGINE VERSION"),
            ("TLSStatus", "TLS STATUS"),
        ],
        rows,
        indented: Vec::new(),
    }
}

/// Ingress ports as `service ls` shows them: `*:80->80/tcp`, consecutive ranges grouped.
pub fn ingress_ports(ports: &[PortConfig]) -> String {
    let mut ports: Vec<&PortConfig> = ports.iter().filter(|p| p.publish_mode == PublishMode::Ingress).collect();
    ports.sort_by(|a, b| {
        (&a.protocol, a.published_port, a.target_port).cmp(&(&b.protocol, b.published_port, b.target_port))
    });
    let mut groups: Vec<(u16, u16, u16, u16, &str)> = Vec::new();
    for port in ports {
        if let Some(last) = groups.last_mut() {
            if last.4 == port.protocol
                && u32::from(port.published_port) == u32::from(last.1) + 1
                && u32::from(port.target_port) == u32::from(last.3) + 1
            {
                last.1 = port.published_port;
                last.3 = port.target_port;
                continue;
            }
        }
        groups.push((port.published_port, port.published_port, port.target_port, port.target_port, &port.protocol));
    }
    let range = |a: u16, b: u16| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        }
    };
    groups
        .iter()
        .map(|&(p0, p1, t0, t1, proto)| format!("*:{}->{}/{}", range(p0, p1), range(t0, t1), proto))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An image as tables show it: the digest stripped when a tag is present.
pub fn short_image(image: &str) -> &str {
    match image.split_once('@') {
        Some((name, _)) if name.rsplit('/').next().is_some_and(|last| last.contains(':')) => name,
        _ => image,
    }
}

fn mode_word(mode: &ServiceMode) -> &'static str {
    match mode {
        ServiceMode::Replicated { .. } => "replicated",
        ServiceMode::Global => "global",
        // docker/cli prints these with a space (its docs show a hyphen).
        ServiceMode::ReplicatedJob { .. } => "replicated job",
        ServiceMode::GlobalJob => "global job",
    }
}

/// `service ls` / `stack services`: sorted by name.
pub fn service_list(mut services: Vec<ServiceView>) -> Listing {
    services.sort_by(|a, b| natural_cmp(&a.service.spec.name, &b.service.spec.name));
    let rows = services
        .iter()
        .map(|view| {
            let spec = &view.service.spec;
            let max = spec.task.placement.max_replicas_per_node;
            let replicas = match (&spec.mode, max) {
                (ServiceMode::Replicated { .. }, max) if max > 0 => {
                    format!("{}/{} (max {} per node)", view.running, view.desired, max)
                }
                (ServiceMode::ReplicatedJob { total_completions, .. }, _) => {
                    format!("{}/{} ({}/{} completed)", view.running, view.desired, view.completed, total_completions)
                }
                // A global job's total is what is left to complete plus what completed (docker/cli).
                (ServiceMode::GlobalJob, _) => format!(
                    "{}/{} ({}/{} completed)",
                    view.running,
                    view.desired,
                    view.completed,
                    view.desired + view.completed
                ),
                _ => format!("{}/{}", view.running, view.desired),
            };
            let ports = if view.service.endpoint_ports.is_empty() { &spec.ports } else { &view.service.endpoint_ports };
            row([
                ("ID", json!(format::truncate_id(&view.service.id))),
                ("Name", json!(spec.name)),
                ("Mode", json!(mode_word(&spec.mode))),
                ("Replicas", json!(replicas)),
                ("Image", json!(short_image(&spec.task.image))),
                ("Ports", json!(ingress_ports(ports))),
            ])
        })
        .collect();
    Listing {
        default_format: "table {{.ID}}\t{{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}\t{{.Ports}}",
        headers: &[
            ("ID", "ID"),
            ("Name", "NAME"),
            ("Mode", "MODE"),
            ("Replicas", "REPLICAS"),
            ("Image", "IMAGE"),
            ("Ports", "PORTS"),
        ],
        rows,
        indented: Vec::new(),
    }
}

/// Docker's ERROR cell: quoted, cut to 30 characters unless `--no-trunc`.
pub fn task_error(err: &str, trunc: bool) -> String {
    if err.is_empty() {
        return String::new();
    }
    let err = if trunc { format::ellipsis(err, 30) } else { err.to_string() };
    format!("\"{err}\"")
}

/// `service ps` / `node ps` / `stack ps`: by name, newest first within a name; older ones indented.
pub fn task_list(mut tasks: Vec<Task>, hostnames: &BTreeMap<String, String>, now_ms: u64, trunc: bool) -> Listing {
    tasks.sort_by(|a, b| natural_cmp(&a.name(), &b.name()).then(b.meta.created_at_ms.cmp(&a.meta.created_at_ms)));
    let mut previous = String::new();
    let mut indented = Vec::new();
    let rows = tasks
        .iter()
        .map(|task| {
            let slot_name = match (task.slot, hostnames.get(&task.node_id)) {
                (0, Some(host)) if !host.is_empty() => {
                    format!("{}.{}", task.service_name, task.node_id)
                }
                _ => task.name(),
            };
            indented.push(slot_name == previous);
            previous = slot_name.clone();
            let node = hostnames.get(&task.node_id).cloned().unwrap_or_else(|| task.node_id.clone());
            let id = if trunc { format::truncate_id(&task.id).to_string() } else { task.id.clone() };
            let image = if trunc { short_image(&task.spec.image) } else { &task.spec.image };
            row([
                ("ID", json!(id)),
                ("Name", json!(slot_name)),
                ("Image", json!(image)),
                ("Node", json!(node)),
                ("DesiredState", json!(pretty(task.desired_state.as_str()))),
                (
                    "CurrentState",
                    json!(format::state_since(task.status.state.as_str(), task.status.timestamp_ms, now_ms)),
                ),
                ("Error", json!(task_error(&task.status.err, trunc))),
                ("Ports", json!("")),
            ])
        })
        .collect();
    Listing {
        default_format:
            "table {{.ID}}\t{{.Name}}\t{{.Image}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}\t{{.Ports}}",
        headers: &[
            ("ID", "ID"),
            ("Name", "NAME"),
            ("Image", "IMAGE"),
            ("Node", "NODE"),
            ("DesiredState", "DESIRED STATE"),
            ("CurrentState", "CURRENT STATE"),
            ("Error", "ERROR"),
            ("Ports", "PORTS"),
        ],
        rows,
        indented,
    }
}

/// `network ls`: sorted by name; swarm networks have scope `swarm`.
pub fn network_list(mut networks: Vec<Network>) -> Listing {
    networks.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    let rows = networks
        .iter()
        .map(|n| {
            let labels = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            row([
                ("ID", json!(format::truncate_id(&n.id))),
                ("Name", json!(n.name)),
                ("Driver", json!(n.driver)),
                ("Scope", json!("swarm")),
                ("IPv4", json!(true)),
                ("IPv6", json!(false)),
                ("Internal", json!(false)),
                ("Labels", json!(labels)),
            ])
        })
        .collect();
    Listing {
        default_format: "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
        headers: &[
            ("ID", "NETWORK ID"),
            ("Name", "NAME"),
            ("Driver", "DRIVER"),
            ("Scope", "SCOPE"),
            ("IPv4", "IPV4"),
            ("IPv6", "IPV6"),
            ("Internal", "INTERNAL"),
            ("Labels", "LABELS"),
        ],
        rows,
        indented: Vec::new(),
    }
}

/// `swarm init`'s message (`cli/command/swarm/init.go`).
pub fn init_message(node_id: &str, worker_token: &str, manager_addr: &str) -> String {
    let mut out = format!("Swarm initialized: current node ({node_id}) is now a manager.\n\n");
    if !worker_token.is_empty() {
        out.push_str(&join_command("worker", worker_token, manager_addr));
    }
    out.push_str("To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n");
    out
}

/// docker/cli's `printUnlockCommand` (`swarm init --autolock`, `update --autolock=true`, `unlock-key`).
pub fn unlock_command(key: &str) -> String {
    if key.is_empty() {
        return String::new();
    }
    format!(
        "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\ncommand and provide the following key:\n\n    {key}\n\nRemember to store this key in a password manager, since without it you\nwill not be able to restart the manager.\n"
    )
}

/// `swarm join-token`'s block.
pub fn join_command(role: &str, token: &str, manager_addr: &str) -> String {
    format!("To add a {role} to this swarm, run the following command:\n\n    shoal swarm join --token {token} {manager_addr}\n\n")
}

/// `info`'s swarm section (`printSwarmInfo`).
pub fn info(status: &SwarmStatus, cluster: Option<&ClusterInfo>) -> String {
    let mut out = format!(" Swarm: {}\n", status.state);
    if status.state == "inactive" || status.state == "locked" {
        return out;
    }
    let _ = writeln!(out, "  NodeID: {}", status.node_id);
    if !status.error.is_empty() {
        let _ = writeln!(out, "  Error: {}", status.error);
    }
    let _ = writeln!(out, "  Is Manager: {}", cluster.is_some());
    if let Some(info) = cluster {
        let spec = &info.spec;
        let _ = writeln!(out, "  ClusterID: {}", info.cluster_id);
        let _ = writeln!(out, "  Managers: {}", info.managers);
        let _ = writeln!(out, "  Nodes: {}", info.nodes);
        out.push_str("  Orchestration:\n");
        let _ = writeln!(out, "   Task History Retention Limit: {}", spec.task_history_retention_limit);
        out.push_str("  Raft:\n");
        let _ = writeln!(out, "   Snapshot Interval: {}", spec.snapshot_interval);
        out.push_str("   Number of Old Snapshots to Retain: 0\n");
        let _ = writeln!(out, "   Heartbeat Tick: {}", spec.heartbeat_tick);
        let _ = writeln!(out, "   Election Tick: {}", spec.election_tick);
        out.push_str("  Dispatcher:\n");
        let _ = writeln!(
            out,
            "   Heartbeat Period: {}",
            human_duration(Duration::from_millis(spec.heartbeat_period_ms)).to_lowercase()
        );
        out.push_str("  CA Configuration:\n");
        let _ = writeln!(
            out,
            "   Expiry Duration: {}",
            human_duration(Duration::from_millis(spec.node_cert_expiry_ms)).to_lowercase()
        );
        out.push_str("   Force Rotate: 0\n");
        let _ = writeln!(out, "  Autolock Managers: {}", spec.autolock_managers);
        let _ = writeln!(out, "  Root Rotation In Progress: {}", info.root_rotation_in_progress);
    }
    let addr = cluster.map(|c| c.node_addr.as_str()).filter(|a| !a.is_empty()).unwrap_or(&status.node_addr);
    let addr = addr
        .rsplit_once(':')
        .map(|(ip, _)| ip)
        .filter(|_| addr.parse::<std::net::SocketAddr>().is_ok())
        .unwrap_or(addr);
    let _ = writeln!(out, "  Node Address: {addr}");
    if let Some(info) = cluster {
        let mut managers = info.manager_addrs.clone();
        managers.sort();
        if !managers.is_empty() {
            out.push_str("  Manager Addresses:\n");
            for manager in managers {
                let _ = writeln!(out, "   {manager}");
            }
        }
    }
    out
}

fn update_config_block(out: &mut String, title: &str, order_title: &str, config: &UpdateConfig) {
    let _ = write!(out, "\n{title}:\n Parallelism:\t{}", config.parallelism);
    if config.delay_ms > 0 {
        let _ = write!(out, "\n Delay:\t\t{}", go_duration(config.delay_ms));
    }
    let action = match config.failure_action {
        shoal_core::api::FailureAction::Pause => "pause",
        shoal_core::api::FailureAction::Continue => "continue",
        shoal_core::api::FailureAction::Rollback => "rollback",
    };
    let _ = write!(out, "\n On failure:\t{action}");
    if config.monitor_ms > 0 {
        let _ = write!(out, "\n Monitoring Period: {}", go_duration(config.monitor_ms));
    }
    let _ = write!(out, "\n Max failure ratio: {}", config.max_failure_ratio);
    let order = match config.order {
        UpdateOrder::StopFirst => "stop-first",
        UpdateOrder::StartFirst => "start-first",
    };
    let _ = write!(out, "\n {order_title} {order}");
}

/// `service inspect --pretty` (`serviceInspectPrettyTemplate`).
pub fn service_pretty(view: &ServiceView, now_ms: u64) -> String {
    let service = &view.service;
    let spec = &service.spec;
    let mut out = format!("\nID:\t\t{}\nName:\t\t{}", service.id, spec.name);
    if !spec.labels.is_empty() {
        out.push_str("\nLabels:");
        for (k, v) in &spec.labels {
            let _ = write!(out, "\n {k}{}", if v.is_empty() { String::new() } else { format!("={v}") });
        }
    }
    out.push_str("\nService Mode:");
    match &spec.mode {
        ServiceMode::Global => out.push_str("\tGlobal"),
        ServiceMode::Replicated { replicas } => {
            out.push_str("\tReplicated");
            let _ = write!(out, "\n Replicas:\t{replicas}");
        }
        // docker's template names neither job mode: the line stays bare.
        ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob => {}
    }
    if let Some(status) = &service.update_status {
        let state =
            serde_json::to_value(status.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let _ = write!(out, "\nUpdateStatus:\n State:\t\t{state}");
        if status.started_at_ms > 0 {
            let ago = human_duration(Duration::from_millis(now_ms.saturating_sub(status.started_at_ms)));
            let _ = write!(out, "\n Started:\t{} ago", ago.to_lowercase());
        }
        if status.completed_at_ms > 0 {
            let ago = human_duration(Duration::from_millis(now_ms.saturating_sub(status.completed_at_ms)));
            let _ = write!(out, "\n Completed:\t{} ago", ago.to_lowercase());
        }
        let _ = write!(out, "\n Message:\t{}", status.message);
    }
    out.push_str("\nPlacement:");
    let placement = &spec.task.placement;
    if !placement.constraints.is_empty() {
        let _ = write!(out, "\n Constraints:\t[{}]", placement.constraints.join(" "));
    }
    if !placement.preferences.is_empty() {
        let _ = write!(out, "\n Preferences:   [{}]", placement.preferences.join(" "));
    }
    if placement.max_replicas_per_node > 0 {
        let _ = write!(out, "\n Max Replicas Per Node:   {}", placement.max_replicas_per_node);
    }
    update_config_block(&mut out, "UpdateConfig", "Update order:     ", &spec.update_config);
    update_config_block(&mut out, "RollbackConfig", "Rollback order:   ", &spec.rollback_config);
    let _ = write!(out, "\nContainerSpec:\n Image:\t\t{}", spec.task.image);
    let args: Vec<&String> = spec.task.command.iter().chain(spec.task.args.iter()).collect();
    if !args.is_empty() {
        out.push_str("\n Args:\t\t");
        for arg in args {
            let _ = write!(out, "{arg} ");
        }
    }
    if !spec.task.env.is_empty() {
        out.push_str("\n Env:\t\t");
        for env in &spec.task.env {
            let _ = write!(out, "{env} ");
        }
    }
    // docker's template: `Mounts:` then, per mount, Target/Source/ReadOnly/Type.
    if !spec.task.mounts.is_empty() {
        out.push_str("\nMounts:");
        for m in &spec.task.mounts {
            let _ = write!(
                out,
                "\n Target:\t{}\n  Source:\t{}\n  ReadOnly:\t{}\n  Type:\t\t{}",
                m.target,
                m.source,
                m.read_only,
                m.kind.as_str()
            );
        }
    }
    // docker/cli's template: `Configs:` then `Secrets:`, each ` Target:` / `  Source:`.
    for (title, refs) in [("Configs", &spec.task.configs), ("Secrets", &spec.task.secrets)] {
        if !refs.is_empty() {
            let _ = write!(out, "\n{title}:");
            for r in refs.iter() {
                let _ = write!(out, "\n Target:\t{}\n  Source:\t{}", r.target, r.name);
            }
        }
    }
    let resources = &spec.task.resources;
    let has_reservations = resources.reservations.nano_cpus > 0 || resources.reservations.memory_bytes > 0;
    let has_limits = resources.limits.nano_cpus > 0 || resources.limits.memory_bytes > 0;
    if has_reservations || has_limits {
        out.push_str("\nResources:");
        for (title, amount, present) in
            [(" Reservations:", resources.reservations, has_reservations), (" Limits:", resources.limits, has_limits)]
        {
            if !present {
                continue;
            }
            let _ = write!(out, "\n{title}");
            if amount.nano_cpus > 0 {
                let _ = write!(out, "\n  CPU:\t\t{}", format::cpus(amount.nano_cpus));
            }
            if amount.memory_bytes > 0 {
                let _ = write!(out, "\n  Memory:\t{}", bytes_size(amount.memory_bytes));
            }
        }
    }
    if !spec.task.networks.is_empty() {
        out.push_str("\nNetworks:");
        for network in &spec.task.networks {
            let _ = write!(out, " {network}");
        }
        out.push(' ');
    }
    out.push_str("\nEndpoint Mode:\tvip");
    let ports = if service.endpoint_ports.is_empty() { &spec.ports } else { &service.endpoint_ports };
    if !ports.is_empty() {
        out.push_str("\nPorts:");
        for port in ports {
            let mode = match port.publish_mode {
                PublishMode::Ingress => "ingress",
                PublishMode::Host => "host",
            };
            let _ = write!(
                out,
                "\n PublishedPort = {}\n  Protocol = {}\n  TargetPort = {}\n  PublishMode = {mode}",
                port.published_port, port.protocol, port.target_port
            );
        }
        out.push(' ');
    }
    if let Some(check) = &spec.task.healthcheck {
        let _ = write!(
            out,
            "\n Healthcheck:\n  Interval = {}\n  Retries = {}\n  StartPeriod =\t{}\n  Timeout =\t{}",
            go_duration(check.interval_ms),
            check.retries,
            go_duration(check.start_period_ms),
            go_duration(check.timeout_ms)
        );
        if !check.test.is_empty() {
            out.push_str("\n  Tests:");
            for test in &check.test {
                let _ = write!(out, "\n\t Test = {test}");
            }
            out.push(' ');
        }
    }
    out.push('\n');
    out
}

/// `node inspect --pretty` (`nodeInspectPrettyTemplate`).
pub fn node_pretty(view: &NodeView) -> String {
    let node = &view.node;
    let mut out = format!("ID:\t\t\t{}", node.id);
    if !node.spec.labels.is_empty() {
        out.push_str("\nLabels:");
        for (k, v) in &node.spec.labels {
            let _ = write!(out, "\n - {k}{}", if v.is_empty() { String::new() } else { format!("={v}") });
        }
    }
    let _ = write!(out, "\nHostname:              \t{}", node.hostname());
    let joined = format_unix_ms(node.meta.created_at_ms);
    let _ = write!(out, "\nJoined at:             \t{joined}");
    let _ = write!(out, "\nStatus:\n State:\t\t\t{}", pretty(node_state_word(node.status.state)));
    if !node.status.message.is_empty() {
        let _ = write!(out, "\n Message:              \t{}", node.status.message);
    }
    let _ = write!(out, "\n Availability:         \t{}", pretty(availability_word(node.spec.availability)));
    if !node.status.addr.is_empty() {
        let _ = write!(out, "\n Address:\t\t{}", host_part(&node.status.addr));
    }
    if let Some(manager) = &node.manager_status {
        let reachability = pretty(if view.reachability.is_empty() { "unknown" } else { &view.reachability });
        let _ = write!(out, "\nManager Status:\n Address:\t\t{}\n Raft Status:\t\t{reachability}", manager.addr);
        let _ = write!(out, "\n Leader:\t\t{}", if view.leader { "Yes" } else { "No" });
    }
    let d = &node.description;
    let _ = write!(out, "\nPlatform:\n Operating System:\t{}\n Architecture:\t\t{}", d.os, d.arch);
    let _ = write!(
        out,
        "\nResources:\n CPUs:\t\t\t{}\n Memory:\t\t{}",
        d.resources.nano_cpus / 1_000_000_000,
        bytes_size(d.resources.memory_bytes)
    );
    let _ = write!(out, "\nEngine Version:\t\t{}", d.engine_version);
    if !d.engine_labels.is_empty() {
        out.push_str("\nEngine Labels:");
        for (k, v) in &d.engine_labels {
            let _ = write!(out, "\n - {k}{}", if v.is_empty() { String::new() } else { format!("={v}") });
        }
    }
    out.push('\n');
    out
}

fn host_part(addr: &str) -> &str {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(_) => addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr),
        Err(_) => addr,
    }
}

/// `2009-11-10 23:00:00 +0000 utc`, as Docker prints `Joined at` (Go's time String, lower-cased).
pub fn format_unix_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000 utc", rem / 3600, (rem / 60) % 60, rem % 60)
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `inspect` without `--pretty`: a JSON array, indented like Docker's.
pub fn inspect_json(values: &[Value]) -> String {
    let mut out = serde_json::to_string_pretty(values).unwrap_or_else(|_| "[]".into());
    out.push('\n');
    out
}

/// `stack ls`: stacks (the namespace label of services) with their service counts, by name.
pub fn stack_list(services: &[ServiceView]) -> Listing {
    let counts = shoal_core::stack::stacks(services.iter().map(|view| &view.service));
    let mut stacks: Vec<(String, usize)> = counts.into_iter().collect();
    stacks.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    let rows = stacks
        .into_iter()
        .map(|(name, count)| {
            row([
                ("Name", json!(name)),
                ("Namespace", json!("")),
                ("Orchestrator", json!("Swarm")),
                ("Services", json!(count.to_string())),
            ])
        })
        .collect();
    Listing {
        default_format: "table {{.Name}}\t{{.Services}}",
        headers: &[
            ("Name", "NAME"),
            ("Namespace", "NAMESPACE"),
            ("Orchestrator", "ORCHESTRATOR"),
            ("Services", "SERVICES"),
        ],
        rows,
        indented: Vec::new(),
    }
}

/// `service logs`, as docker prints it: `web.1.<task id>@<node>    | line`. The task id is cut to
/// 12 characters unless `--no-trunc`, left out with `--no-task-ids`; `--no-resolve` shows the
/// service and node ids instead of their names; the slot numbers are padded so the bars line up;
/// `--timestamps` puts each line's stamp before it; `--raw` prints no prefix. Lines the task wrote
/// to stderr go to stderr.
pub fn service_logs(logs: &ServiceLogs, args: &LogsArgs) -> LogsText {
    let slot_width = |name: &str| name.rsplit('.').next().filter(|s| s.parse::<u64>().is_ok()).map_or(0, str::len);
    let widest = logs.tasks.iter().map(|t| slot_width(&t.task_name)).max().unwrap_or(0);
    let mut text = LogsText::default();
    for task in &logs.tasks {
        let mut prefix = if args.no_resolve {
            let suffix = task.task_name.strip_prefix(logs.service_name.as_str()).unwrap_or(&task.task_name);
            format!("{}{suffix}", logs.service_id)
        } else {
            task.task_name.clone()
        };
        if !args.no_task_ids {
            let id = if args.no_trunc { task.task_id.as_str() } else { format::truncate_id(&task.task_id) };
            let _ = write!(prefix, ".{id}");
        }
        let node = if args.no_resolve || task.hostname.is_empty() { &task.node_id } else { &task.hostname };
        let padding = " ".repeat(widest.saturating_sub(slot_width(&task.task_name)));
        for line in &task.lines {
            let out = if line.stderr { &mut text.stderr } else { &mut text.stdout };
            if !args.raw {
                let _ = write!(out, "{prefix}@{node}{padding}    | ");
            }
            if args.timestamps {
                let _ = write!(out, "{} ", format::rfc3339_nano_fixed(line.time_ns));
            }
            let _ = writeln!(out, "{}", line.text);
        }
    }
    text
}

/// What `service logs` prints, by stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogsText {
    pub stdout: String,
    pub stderr: String,
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use shoal_core::env::LogLine;
    use shoal_core::logs::{ServiceLogs, TaskLogs};

    use super::*;
    use crate::cli::args::{Cli, Command, ServiceCommand};

    fn args(flags: &[&str]) -> LogsArgs {
        let line = [&["shoal", "service", "logs"], flags, &["web"]].concat();
        match Cli::try_parse_from(line).expect("valid flags").command {
            Command::Service(ServiceCommand::Logs(args)) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn task(name: &str, id: &str, node: &str, lines: &[&str]) -> TaskLogs {
        TaskLogs {
            task_id: id.into(),
            task_name: name.into(),
            node_id: format!("{node}-id"),
            hostname: node.into(),
            last_ns: None,
            lines: lines
                .iter()
                .zip(1..)
                .map(|(l, n)| LogLine { time_ns: n * 1_000_000_001, text: l.to_string(), stderr: l.starts_with("err") })
                .collect(),
        }
    }

    #[test]
    fn service_logs_are_prefixed_as_docker_prefixes_them() {
        let logs = ServiceLogs {
            service_id: "svcid".into(),
            service_name: "web".into(),
            tasks: vec![
                task("web.2", "abcdefghijklmnopqrstuvwxy", "node-a", &["one", "two"]),
                task("web.10", "zyxwvutsrqponmlkjihgfedcb", "node-b", &["three", "err four"]),
            ],
            unreachable: vec![],
        };
        let render = |flags: &[&str]| service_logs(&logs, &args(flags)).stdout;
        let errors = service_logs(&logs, &args(&[])).stderr;
        assert_eq!(errors, "web.10.zyxwvutsrqpo@node-b    | err four\n", "stderr lines go to stderr");
        assert_eq!(
            render(&[]),
            "web.2.abcdefghijkl@node-a     | one\nweb.2.abcdefghijkl@node-a     | two\n\
             web.10.zyxwvutsrqpo@node-b    | three\n"
        );
        assert_eq!(
            render(&["--no-task-ids", "--no-resolve"]),
            "svcid.2@node-a-id     | one\nsvcid.2@node-a-id     | two\nsvcid.10@node-b-id    | three\n"
        );
        assert!(render(&["--no-trunc"]).starts_with("web.2.abcdefghijklmnopqrstuvwxy@node-a     | one\n"));
        assert_eq!(render(&["--raw"]), "one\ntwo\nthree\n");
        assert_eq!(
            render(&["--raw", "-t"]),
            "1970-01-01T00:00:01.000000001Z one\n1970-01-01T00:00:02.000000002Z two\n\
             1970-01-01T00:00:01.000000001Z three\n"
        );
        assert!(render(&["--timestamps"])
            .starts_with("web.2.abcdefghijkl@node-a     | 1970-01-01T00:00:01.000000001Z one\n"));
    }
}

#[cfg(test)]
mod health_tests {
    use shoal_core::api::{HealthConfig, Meta, PortConfig, PublishMode, Service, ServiceSpec};
    use shoal_core::control::ServiceView;

    /// The `Healthcheck:` block of `service inspect --pretty`, as docker/cli's golden shows it
    /// (after the ports, TAB before StartPeriod/Timeout values and each test word).
    #[test]
    fn pretty_healthcheck_block_matches_docker() {
        let mut spec = ServiceSpec::new("web", "busybox");
        spec.ports = vec![PortConfig {
            protocol: "tcp".into(),
            target_port: 5000,
            published_port: 30000,
            publish_mode: PublishMode::Ingress,
        }];
        spec.task.healthcheck = Some(HealthConfig {
            test: vec!["CMD-SHELL".into(), "curl".into()],
            interval_ms: 4_000,
            timeout_ms: 1_000,
            retries: 3,
            start_period_ms: 2_000,
        });
        let service = Service {
            id: "s1".into(),
            meta: Meta::default(),
            spec,
            previous_spec: None,
            spec_version: 1,
            update_status: None,
            endpoint_ports: Vec::new(),
            job_status: None,
        };
        let text = super::service_pretty(&ServiceView { service, running: 0, desired: 1, completed: 0 }, 0);
        let want = "  PublishMode = ingress \n Healthcheck:\n  Interval = 4s\n  Retries = 3\n  StartPeriod =\t2s\n  Timeout =\t1s\n  Tests:\n\t Test = CMD-SHELL\n\t Test = curl \n";
        assert!(text.ends_with(want), "{text:?}");
    }
}

/// A progress bar as Docker's `jsonmessage` draws one: 50 columns, `=` done, `>` the head.
fn progress_bar(current: u64, total: u64) -> String {
    const WIDTH: u64 = 50;
    let done = (current.min(total) * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let mut bar = "=".repeat(done.saturating_sub(1) as usize);
    if done > 0 {
        bar.push(if done == WIDTH { '=' } else { '>' });
    } else {
        bar.push('>');
    }
    format!("[{bar:<50}] {current}/{total} nodes")
}

/// `swarm ca --rotate`'s progress, docker/cli's three lines (`progress/root_rotation.go`).
pub fn ca_progress(progress: &shoal_core::ca_rotation::CaProgress) -> String {
    format!(
        "desired root digest: {}\n  rotated TLS certificates:  {}\n  rotated CA certificates:   {}\n",
        progress.desired_root_digest,
        progress_bar(progress.certs_rotated, progress.total),
        progress_bar(progress.roots_rotated, progress.total),
    )
}
