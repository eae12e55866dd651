//! `inspect` output in the Docker Engine API's shapes (`swarm.Service`, `swarm.Node`,
//! `network.Inspect`), so `--format '{{.Spec.Name}}'`, `{{.Status.Addr}}`, `{{json .Spec.Mode}}` and
//! scripts that read the JSON work as they do against Docker. Durations are nanoseconds and times
//! RFC 3339, as Go encodes them.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use shoal_core::api::{Network, NodeRole, PortConfig, Service, ServiceMode, ServiceSpec, TaskSpec, UpdateConfig};
use shoal_core::control::{NodeView, ServiceView};

use super::render::{availability_word, node_state_word};

/// Go's RFC 3339 with as many fraction digits as needed; the zero time when unknown.
pub fn time(ms: u64) -> Value {
    let time = chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default();
    Value::String(time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

pub fn nanos(ms: u64) -> Value {
    json!(ms.saturating_mul(1_000_000))
}

/// `ContainerSpec.Healthcheck` (Docker's `HealthConfig`: durations in nanoseconds, zeros left out).
pub fn healthcheck(check: &shoal_core::api::HealthConfig) -> Value {
    let nonzero = |ms: u64| if ms == 0 { Value::Null } else { nanos(ms) };
    object(vec![
        ("Test", json!(check.test)),
        ("Interval", nonzero(check.interval_ms)),
        ("Timeout", nonzero(check.timeout_ms)),
        ("StartPeriod", nonzero(check.start_period_ms)),
        ("Retries", if check.retries == 0 { Value::Null } else { json!(check.retries) }),
    ])
}

/// An object without the entries whose value is empty (Go's `omitempty`).
/// `ContainerSpec.Secrets` / `Configs` as Docker's API shows them (`File` with `UID`, `GID`, `Mode`).
fn file_refs(refs: &[shoal_core::api::FileReference], id_key: &str, name_key: &str) -> Value {
    Value::Array(
        refs.iter()
            .map(|r| {
                let mut entry = serde_json::Map::new();
                entry.insert("File".into(), json!({"Name": r.target, "UID": r.uid, "GID": r.gid, "Mode": r.mode}));
                entry.insert(id_key.into(), json!(r.id));
                entry.insert(name_key.into(), json!(r.name));
                Value::Object(entry)
            })
            .collect(),
    )
}

pub fn object(entries: Vec<(&str, Value)>) -> Value {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    Value::Object(
        entries.into_iter().filter(|(_, v)| !empty(v)).map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>(),
    )
}

fn ports(ports: &[PortConfig]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|p| {
                json!({
                    "Protocol": p.protocol,
                    "TargetPort": p.target_port,
                    "PublishedPort": p.published_port,
                    "PublishMode": p.publish_mode,
                })
            })
            .collect(),
    )
}

fn update_config(config: &UpdateConfig) -> Value {
    json!({
        "Parallelism": config.parallelism,
        "Delay": nanos(config.delay_ms),
        "FailureAction": config.failure_action,
        "Monitor": nanos(config.monitor_ms),
        "MaxFailureRatio": config.max_failure_ratio,
        "Order": config.order,
    })
}

/// A `TaskSpec` as Docker's API writes a `TaskTemplate` (a service's, or a task's `Spec`);
/// `aliases` are the service's names on each of its networks (compose's `aliases`).
/// One mount as Docker's `mount.Mount` JSON shows it.
pub fn mount(m: &shoal_core::api::Mount) -> Value {
    let volume = m.volume.as_ref().map(|v| {
        let driver = (!v.driver.is_empty() || !v.driver_options.is_empty())
            .then(|| object(vec![("Name", json!(v.driver)), ("Options", json!(v.driver_options))]));
        object(vec![
            ("NoCopy", if v.no_copy { json!(true) } else { Value::Null }),
            ("Labels", json!(v.labels)),
            ("DriverConfig", driver.unwrap_or(Value::Null)),
        ])
    });
    let tmpfs = m.tmpfs.as_ref().map(|t| {
        object(vec![
            ("SizeBytes", if t.size_bytes == 0 { Value::Null } else { json!(t.size_bytes) }),
            ("Mode", t.mode.map_or(Value::Null, |mode| json!(mode))),
        ])
    });
    object(vec![
        ("Type", json!(m.kind.as_str())),
        ("Source", json!(m.source)),
        ("Target", json!(m.target)),
        ("ReadOnly", if m.read_only { json!(true) } else { Value::Null }),
        (
            "BindOptions",
            if m.bind_propagation.is_empty() { Value::Null } else { json!({"Propagation": m.bind_propagation}) },
        ),
        ("VolumeOptions", volume.unwrap_or(Value::Null)),
        ("TmpfsOptions", tmpfs.unwrap_or(Value::Null)),
    ])
}

pub fn task_template(task: &TaskSpec, aliases: &BTreeMap<String, Vec<String>>) -> Value {
    let restart = &task.restart_policy;
    let platforms: Vec<Value> = task
        .placement
        .platforms
        .iter()
        .map(|p| {
            let (os, arch) = p.split_once('/').unwrap_or((p.as_str(), ""));
            object(vec![("OS", json!(os)), ("Architecture", json!(arch))])
        })
        .collect();
    let preferences: Vec<Value> = task
        .placement
        .preferences
        .iter()
        .map(|p| json!({"Spread": {"SpreadDescriptor": p.strip_prefix("spread=").unwrap_or(p)}}))
        .collect();
    let resources = |r: shoal_core::api::ResourceAmount| {
        object(vec![
            ("NanoCPUs", if r.nano_cpus == 0 { Value::Null } else { json!(r.nano_cpus) }),
            ("MemoryBytes", if r.memory_bytes == 0 { Value::Null } else { json!(r.memory_bytes) }),
        ])
    };
    let networks = task
        .networks
        .iter()
        .map(|n| object(vec![("Target", json!(n)), ("Aliases", json!(aliases.get(n).cloned().unwrap_or_default()))]))
        .collect();
    object(vec![
        (
            "ContainerSpec",
            object(vec![
                ("Image", json!(task.image)),
                ("Labels", json!(task.container_labels)),
                ("Command", json!(task.command)),
                ("Args", json!(task.args)),
                ("Hostname", json!(task.hostname)),
                ("Env", json!(task.env)),
                ("Dir", json!(task.workdir)),
                ("User", json!(task.user)),
                ("Init", task.options.init.map(Value::Bool).unwrap_or(Value::Null)),
                ("ReadOnly", if task.options.read_only { json!(true) } else { Value::Null }),
                ("StopSignal", json!(task.options.stop_signal)),
                ("StopGracePeriod", nanos(task.stop_grace_period_ms)),
                // Swarm's `Hosts` are `IP host` lines; `--host` takes `host:ip`.
                (
                    "Hosts",
                    json!(task
                        .options
                        .hosts
                        .iter()
                        .filter_map(|h| h.split_once(':').map(|(host, ip)| format!("{ip} {host}")))
                        .collect::<Vec<_>>()),
                ),
                (
                    "DNSConfig",
                    object(vec![
                        ("Nameservers", json!(task.options.dns)),
                        ("Search", json!(task.options.dns_search)),
                        ("Options", json!(task.options.dns_options)),
                    ]),
                ),
                ("Sysctls", json!(task.options.sysctls)),
                ("CapabilityAdd", json!(task.options.cap_add)),
                ("CapabilityDrop", json!(task.options.cap_drop)),
                (
                    "Ulimits",
                    json!(task
                        .options
                        .ulimits
                        .iter()
                        .map(|u| json!({"Name": u.name, "Soft": u.soft, "Hard": u.hard}))
                        .collect::<Vec<_>>()),
                ),
                ("Mounts", Value::Array(task.mounts.iter().map(mount).collect())),
                ("Healthcheck", task.healthcheck.as_ref().map(healthcheck).unwrap_or(Value::Null)),
                ("Isolation", json!("default")),
                ("Secrets", file_refs(&task.secrets, "SecretID", "SecretName")),
                ("Configs", file_refs(&task.configs, "ConfigID", "ConfigName")),
            ]),
        ),
        (
            "Resources",
            object(vec![
                ("Limits", resources(task.resources.limits)),
                ("Reservations", resources(task.resources.reservations)),
            ]),
        ),
        (
            "RestartPolicy",
            json!({
                "Condition": restart.condition,
                "Delay": nanos(restart.delay_ms),
                "MaxAttempts": restart.max_attempts,
                "Window": nanos(restart.window_ms),
                // shoal's addition (Swarm's is always "fixed"): see `--restart-backoff`.
                "Backoff": restart.backoff,
            }),
        ),
        (
            "Placement",
            object(vec![
                ("Constraints", json!(task.placement.constraints)),
                ("Preferences", Value::Array(preferences)),
                (
                    "MaxReplicas",
                    if task.placement.max_replicas_per_node == 0 {
                        Value::Null
                    } else {
                        json!(task.placement.max_replicas_per_node)
                    },
                ),
                ("Platforms", Value::Array(platforms)),
            ]),
        ),
        ("Networks", Value::Array(networks)),
        (
            "LogDriver",
            task.options
                .log_driver
                .as_ref()
                .map(|d| json!({"Name": d.name, "Options": d.options}))
                .unwrap_or(Value::Null),
        ),
        ("ForceUpdate", json!(task.force_update)),
        ("Runtime", json!("container")),
    ])
}

/// A `ServiceSpec` as Docker's API writes it (and as shoal's client sends it).
pub fn service_spec(spec: &ServiceSpec) -> Value {
    let mut value = json!({
        "Name": spec.name,
        "Labels": spec.labels,
        "TaskTemplate": task_template(&spec.task, &spec.network_aliases),
        "Mode": match spec.mode {
            ServiceMode::Replicated { replicas } => json!({"Replicated": {"Replicas": replicas}}),
            ServiceMode::Global => json!({"Global": {}}),
            ServiceMode::ReplicatedJob { max_concurrent, total_completions } => json!({
                "ReplicatedJob": {"MaxConcurrent": max_concurrent, "TotalCompletions": total_completions}
            }),
            ServiceMode::GlobalJob => json!({"GlobalJob": {}}),
        },
        "UpdateConfig": update_config(&spec.update_config),
        "RollbackConfig": update_config(&spec.rollback_config),
        "EndpointSpec": {"Mode": spec.endpoint_mode.as_str(), "Ports": ports(&spec.ports)},
    });
    // shoal's addition (compose `depends_on`), only when set: Docker's clients ignore it.
    if !spec.depends_on.is_empty() {
        value["DependsOn"] = json!(spec.depends_on);
    }
    value
}

/// `service inspect`.
pub fn service(view: &ServiceView) -> Value {
    let service: &Service = &view.service;
    let update_status = service.update_status.as_ref().map(|status| {
        object(vec![
            ("State", json!(status.state)),
            ("StartedAt", time(status.started_at_ms)),
            ("CompletedAt", if status.completed_at_ms == 0 { Value::Null } else { time(status.completed_at_ms) }),
            ("Message", json!(status.message)),
        ])
    });
    let endpoint_ports = if service.endpoint_ports.is_empty() { &service.spec.ports } else { &service.endpoint_ports };
    object(vec![
        ("ID", json!(service.id)),
        ("Version", json!({"Index": service.meta.version})),
        ("CreatedAt", time(service.meta.created_at_ms)),
        ("UpdatedAt", time(service.meta.updated_at_ms)),
        ("Spec", service_spec(&service.spec)),
        ("PreviousSpec", service.previous_spec.as_ref().map(service_spec).unwrap_or(Value::Null)),
        (
            "Endpoint",
            object(vec![
                // No `VirtualIPs`: shoal's VIPs are chosen by each node from its own lease, not one per
                // network for the whole swarm (DESIGN §8).
                ("Spec", json!({"Mode": service.spec.endpoint_mode.as_str(), "Ports": ports(&service.spec.ports)})),
                ("Ports", ports(endpoint_ports)),
            ]),
        ),
        ("UpdateStatus", update_status.unwrap_or(Value::Null)),
        (
            "JobStatus",
            service.job_status.as_ref().map_or(
                Value::Null,
                |job| json!({"JobIteration": {"Index": job.iteration}, "LastExecution": time(job.last_execution_ms)}),
            ),
        ),
    ])
}

/// `node inspect`.
pub fn node(view: &NodeView) -> Value {
    let node = &view.node;
    let manager_status = node.manager_status.as_ref().map(|m| {
        object(vec![
            ("Leader", if view.leader { json!(true) } else { Value::Null }),
            ("Reachability", json!(if view.reachability.is_empty() { "unknown" } else { view.reachability.as_str() })),
            ("Addr", json!(m.addr)),
        ])
    });
    // The address peers see, without the port (Docker shows the IP).
    let addr = node.status.addr.rsplit_once(':').map_or(node.status.addr.as_str(), |(ip, _)| ip);
    object(vec![
        ("ID", json!(node.id)),
        ("Version", json!({"Index": node.meta.version})),
        ("CreatedAt", time(node.meta.created_at_ms)),
        ("UpdatedAt", time(node.meta.updated_at_ms)),
        (
            "Spec",
            object(vec![
                ("Labels", json!(node.spec.labels)),
                ("Role", json!(if node.spec.desired_role == NodeRole::Manager { "manager" } else { "worker" })),
                ("Availability", json!(availability_word(node.spec.availability))),
            ]),
        ),
        (
            "Description",
            json!({
                "Hostname": node.description.hostname,
                "Platform": {"Architecture": node.description.arch, "OS": node.description.os},
                "Resources": {
                    "NanoCPUs": node.description.resources.nano_cpus,
                    "MemoryBytes": node.description.resources.memory_bytes,
                },
                "Engine": object(vec![
                    ("EngineVersion", json!(node.description.engine_version)),
                    ("Labels", json!(node.description.engine_labels)),
                ]),
            }),
        ),
        (
            "Status",
            object(vec![
                ("State", json!(node_state_word(node.status.state))),
                ("Message", json!(node.status.message)),
                ("Addr", json!(addr)),
            ]),
        ),
        ("ManagerStatus", manager_status.unwrap_or(Value::Null)),
    ])
}

/// `network inspect`.
pub fn network(network: &Network) -> Value {
    json!({
        "Name": network.name,
        "Id": network.id,
        "Created": time(network.meta.created_at_ms),
        "Scope": "swarm",
        "Driver": network.driver,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": null,
            "Config": if network.subnet.is_empty() { json!([]) } else { json!([{"Subnet": network.subnet}]) },
        },
        "Internal": false,
        "Attachable": network.attachable,
        "Ingress": network.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": null,
        "Options": {},
        "Labels": network.labels,
    })
}
