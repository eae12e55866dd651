//! Decoding what Docker's clients send: a `ServiceSpec` in the Engine API's JSON (keys matched
//! case-insensitively, as Go's `encoding/json` does, so docker-py's `"replicated"` works; user maps —
//! labels — are kept verbatim), `filters` in Docker's map form `{"k":{"v":true}}` and docker-py's
//! list form `{"k":["v"]}`, and Docker's query booleans.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use shoal_core::api::{
    Availability, ContainerOptions, EndpointMode, FailureAction, HealthConfig, Labels, NodeRole, PortConfig,
    PublishMode, ResourceAmount, RestartBackoff, RestartCondition, ServiceMode, ServiceSpec, Ulimit, UpdateConfig,
    UpdateOrder,
};

/// A request body or query that does not say what Docker's API says it should.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

type Result<T> = std::result::Result<T, DecodeError>;

/// Docker's query booleans: "", "0", "no", "false", "none" (any case) are false, the rest true.
pub fn query_bool(value: Option<&str>) -> bool {
    match value {
        None => false,
        Some(v) => !matches!(v.to_ascii_lowercase().as_str(), "" | "0" | "no" | "false" | "none"),
    }
}

/// The `filters` query parameter as `key=value` pairs (one per value), in either of Docker's forms.
pub fn filters(text: Option<&str>) -> Result<Vec<(String, String)>> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let bad = |why: String| DecodeError(format!("invalid filter: {why}"));
    let value: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let Value::Object(keys) = value else {
        return Err(bad(format!("expected an object, got {text}")));
    };
    let mut pairs = Vec::new();
    for (key, values) in keys {
        match values {
            // Docker's form: {"value": true}; a value mapped to false is not asked for.
            Value::Object(map) => {
                for (v, on) in map {
                    if on.as_bool() != Some(false) {
                        pairs.push((key.clone(), v));
                    }
                }
            }
            // docker-py's (and API < 1.22's) form: ["value", …].
            Value::Array(list) => {
                for v in list {
                    match v {
                        Value::String(s) => pairs.push((key.clone(), s)),
                        other => return Err(bad(format!("{key}: expected strings, got {other}"))),
                    }
                }
            }
            Value::String(s) => pairs.push((key, s)),
            other => return Err(bad(format!("{key}: expected a map or a list, got {other}"))),
        }
    }
    Ok(pairs)
}

/// The entry of `object` named `key`, whatever its case (an exact match wins).
pub(super) fn field<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object
        .get(key)
        .or_else(|| object.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
        .filter(|v| !v.is_null())
}

pub(super) fn as_object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    value.as_object().ok_or_else(|| DecodeError(format!("{what}: expected an object, got {value}")))
}

pub(super) fn object_field<'a>(object: &'a Map<String, Value>, key: &str) -> Result<Option<&'a Map<String, Value>>> {
    field(object, key).map(|v| as_object(v, key)).transpose()
}

pub(super) fn string(object: &Map<String, Value>, key: &str) -> Result<String> {
    match field(object, key) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(DecodeError(format!("{key}: expected a string, got {other}"))),
    }
}

pub(super) fn unsigned(object: &Map<String, Value>, key: &str) -> Result<Option<u64>> {
    match field(object, key) {
        None => Ok(None),
        Some(v) => {
            v.as_u64().map(Some).ok_or_else(|| DecodeError(format!("{key}: expected a non-negative integer, got {v}")))
        }
    }
}

/// A Go `time.Duration` (nanoseconds) as milliseconds; negative ones are refused as swarmkit does.
pub(super) fn duration_ms(object: &Map<String, Value>, key: &str) -> Result<Option<u64>> {
    match field(object, key) {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(ns) if ns >= 0 => Ok(Some(u64::try_from(ns / 1_000_000).unwrap_or(0))),
            Some(_) => Err(DecodeError(format!("{key} cannot be negative"))),
            None => Err(DecodeError(format!("{key}: expected nanoseconds, got {v}"))),
        },
    }
}

pub(super) fn strings(object: &Map<String, Value>, key: &str) -> Result<Vec<String>> {
    match field(object, key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(|| DecodeError(format!("{key}: expected strings"))))
            .collect(),
        Some(other) => Err(DecodeError(format!("{key}: expected a list of strings, got {other}"))),
    }
}

/// A user map (labels): keys kept exactly as sent.
pub(crate) fn labels(object: &Map<String, Value>, key: &str) -> Result<Labels> {
    match field(object, key) {
        None => Ok(Labels::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(DecodeError(format!("{key}.{k}: expected a string, got {other}"))),
            })
            .collect(),
        Some(other) => Err(DecodeError(format!("{key}: expected an object, got {other}"))),
    }
}

/// `ContainerSpec.Secrets` / `Configs`: `[{"File": {"Name", "UID", "GID", "Mode"}, "SecretID",
/// "SecretName"}]` (the manager resolves the name, else the id).
fn file_references(
    container: &Map<String, Value>,
    key: &str,
    id_key: &str,
    name_key: &str,
) -> Result<Vec<shoal_core::api::FileReference>> {
    let kind = if key == "Secrets" { shoal_core::api::FileKind::Secret } else { shoal_core::api::FileKind::Config };
    let items = match field(container, key) {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(DecodeError(format!("{key}: expected a list, got {other}"))),
    };
    items
        .iter()
        .map(|item| {
            let item = as_object(item, key)?;
            let name = string(item, name_key)?;
            let id = string(item, id_key)?;
            let mut reference = shoal_core::api::FileReference::new(kind, if name.is_empty() { &id } else { &name });
            reference.id = id;
            reference.name = name;
            if let Some(file) = object_field(item, "File")? {
                let target = string(file, "Name")?;
                if !target.is_empty() {
                    reference.target = target;
                }
                for (k, slot) in [("UID", &mut reference.uid), ("GID", &mut reference.gid)] {
                    let v = string(file, k)?;
                    if !v.is_empty() {
                        *slot = v;
                    }
                }
                if let Some(mode) = unsigned(file, "Mode")? {
                    reference.mode =
                        u32::try_from(mode).map_err(|_| DecodeError(format!("Mode: {mode} is too large")))?;
                }
            } else if kind == shoal_core::api::FileKind::Secret {
                return Err(DecodeError(format!("{key}: a secret reference needs File (Docker's runtime target)")));
            }
            Ok(reference)
        })
        .collect()
}

/// `POST /secrets/create` and `/configs/create`: `{"Name", "Labels", "Data" (base64), "Driver",
/// "Templating"}`.
pub fn file_object_spec(body: &[u8]) -> Result<(shoal_core::api::SecretSpec, String)> {
    let value: Value = serde_json::from_slice(body).map_err(|e| DecodeError(format!("invalid JSON: {e}")))?;
    let object = as_object(&value, "spec")?;
    let driver = match object_field(object, "Driver")? {
        Some(driver) => string(driver, "Name")?,
        None => String::new(),
    };
    let templating = match object_field(object, "Templating")? {
        Some(t) => string(t, "Name")?,
        None => String::new(),
    };
    let spec = shoal_core::api::SecretSpec {
        name: string(object, "Name")?,
        labels: labels(object, "Labels")?,
        driver,
        templating,
    };
    Ok((spec, string(object, "Data")?))
}

/// Parts of Docker's spec shoal does not run yet: refused by name rather than dropped silently.
fn refuse_unsupported(object: &Map<String, Value>, keys: &[&str], within: &str) -> Result<()> {
    for key in keys {
        let given = match field(object, key) {
            None => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Bool(b)) => *b,
            Some(_) => true,
        };
        if given {
            return Err(DecodeError(format!("{within}.{key} is not supported by shoal yet")));
        }
    }
    Ok(())
}

/// `ContainerSpec.Healthcheck` (Docker's `HealthConfig`: nanoseconds; zeros and `[]` inherit).
fn healthcheck(check: &Map<String, Value>) -> Result<HealthConfig> {
    let test = strings(check, "Test")?;
    if let Some(first) = test.first().filter(|f| !matches!(f.as_str(), "CMD" | "CMD-SHELL" | "NONE")) {
        return Err(DecodeError(format!("Healthcheck.Test: {first:?} is not CMD, CMD-SHELL or NONE")));
    }
    Ok(HealthConfig {
        test,
        interval_ms: duration_ms(check, "Interval")?.unwrap_or(0),
        timeout_ms: duration_ms(check, "Timeout")?.unwrap_or(0),
        retries: unsigned(check, "Retries")?.unwrap_or(0),
        start_period_ms: duration_ms(check, "StartPeriod")?.unwrap_or(0),
    })
}

fn resources(object: Option<&Map<String, Value>>) -> Result<ResourceAmount> {
    let Some(object) = object else {
        return Ok(ResourceAmount::default());
    };
    Ok(ResourceAmount {
        nano_cpus: match field(object, "NanoCPUs") {
            None => 0,
            Some(v) => v.as_u64().ok_or_else(|| DecodeError(format!("NanoCPUs: expected an integer, got {v}")))?,
        },
        memory_bytes: match field(object, "MemoryBytes") {
            None => 0,
            Some(v) => v.as_u64().ok_or_else(|| DecodeError(format!("MemoryBytes: expected an integer, got {v}")))?,
        },
    })
}

/// `UpdateConfig`/`RollbackConfig`: absent means Swarm's defaults; inside a given one, an absent
/// parallelism or delay is Go's zero (all at once, no delay) and an absent monitor is swarmkit's
/// default, as the engine reads them.
fn update_config(object: Option<&Map<String, Value>>) -> Result<UpdateConfig> {
    let Some(object) = object else {
        return Ok(UpdateConfig::default());
    };
    let defaults = UpdateConfig::default();
    let failure_action = match string(object, "FailureAction")?.as_str() {
        "" | "pause" => FailureAction::Pause,
        "continue" => FailureAction::Continue,
        "rollback" => FailureAction::Rollback,
        other => return Err(DecodeError(format!("unrecognized failure action {other:?}"))),
    };
    let order = match string(object, "Order")?.as_str() {
        "" | "stop-first" => UpdateOrder::StopFirst,
        "start-first" => UpdateOrder::StartFirst,
        other => return Err(DecodeError(format!("unrecognized update order {other:?}"))),
    };
    let ratio = match field(object, "MaxFailureRatio") {
        None => 0.0,
        Some(v) => v.as_f64().ok_or_else(|| DecodeError(format!("MaxFailureRatio: expected a number, got {v}")))?,
    };
    Ok(UpdateConfig {
        parallelism: unsigned(object, "Parallelism")?.unwrap_or(0),
        delay_ms: duration_ms(object, "Delay")?.unwrap_or(0),
        failure_action,
        monitor_ms: duration_ms(object, "Monitor")?.filter(|m| *m > 0).unwrap_or(defaults.monitor_ms),
        max_failure_ratio: ratio,
        order,
    })
}

/// Capabilities, sysctls, ulimits, init, stop signal, read-only root, DNS and hosts of a `ContainerSpec`.
fn container_options(container: &Map<String, Value>) -> Result<ContainerOptions> {
    let mut options = ContainerOptions {
        cap_add: strings(container, "CapabilityAdd")?,
        cap_drop: strings(container, "CapabilityDrop")?,
        sysctls: labels(container, "Sysctls")?,
        stop_signal: string(container, "StopSignal")?,
        ..ContainerOptions::default()
    };
    options.init = match field(container, "Init") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(DecodeError(format!("ContainerSpec.Init: expected a boolean, got {other}"))),
    };
    options.read_only = match field(container, "ReadOnly") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(DecodeError(format!("ContainerSpec.ReadOnly: expected a boolean, got {other}"))),
    };
    if let Some(dns) = object_field(container, "DNSConfig")? {
        options.dns = strings(dns, "Nameservers")?;
        options.dns_search = strings(dns, "Search")?;
        options.dns_options = strings(dns, "Options")?;
    }
    // Swarm's `Hosts` lines are `IP host [alias…]`; shoal keeps Docker's `host:ip`, one per name.
    for line in strings(container, "Hosts")? {
        let mut words = line.split_whitespace();
        let (Some(ip), Some(_)) = (words.next(), words.clone().next()) else {
            return Err(DecodeError(format!("ContainerSpec.Hosts: {line:?} is not \"IP host\"")));
        };
        options.hosts.extend(words.map(|host| format!("{host}:{ip}")));
    }
    if let Some(Value::Array(ulimits)) = field(container, "Ulimits") {
        for ulimit in ulimits {
            let ulimit = as_object(ulimit, "Ulimits")?;
            let number = |key: &str| match field(ulimit, key) {
                Some(Value::Number(n)) => {
                    n.as_i64().ok_or_else(|| DecodeError(format!("Ulimits.{key}: not an integer")))
                }
                _ => Err(DecodeError(format!("Ulimits.{key}: expected an integer"))),
            };
            options.ulimits.push(Ulimit {
                name: string(ulimit, "Name")?,
                soft: number("Soft")?,
                hard: number("Hard")?,
            });
        }
    }
    Ok(options)
}

/// `ContainerSpec.Mounts` (Docker's `mount.Mount`): type, source, target, read-only and the
/// type's options; the checks of `--mount`'s own (mixed options, target required) apply.
fn mounts(container: &Map<String, Value>) -> Result<Vec<shoal_core::api::Mount>> {
    use shoal_core::api::{Mount, MountType, TmpfsOptions, VolumeOptions};
    let Some(items) = field(container, "Mounts") else { return Ok(Vec::new()) };
    let Some(items) = items.as_array() else {
        return Err(DecodeError("Mounts: expected an array".into()));
    };
    let mut out = Vec::new();
    for item in items {
        let m = as_object(item, "Mounts")?;
        let kind = match string(m, "Type")?.to_ascii_lowercase().as_str() {
            "" | "volume" => MountType::Volume,
            "bind" => MountType::Bind,
            "tmpfs" => MountType::Tmpfs,
            other => return Err(DecodeError(format!("invalid MountType: {other:?}"))),
        };
        let read_only = field(m, "ReadOnly").and_then(Value::as_bool).unwrap_or(false);
        let volume = match object_field(m, "VolumeOptions")? {
            None => None,
            Some(v) => {
                let driver = object_field(v, "DriverConfig")?;
                Some(VolumeOptions {
                    no_copy: field(v, "NoCopy").and_then(Value::as_bool).unwrap_or(false),
                    labels: labels(v, "Labels")?,
                    driver: driver.map(|d| string(d, "Name")).transpose()?.unwrap_or_default(),
                    driver_options: driver.map(|d| labels(d, "Options")).transpose()?.unwrap_or_default(),
                })
            }
        };
        let tmpfs = match object_field(m, "TmpfsOptions")? {
            None => None,
            Some(t) => Some(TmpfsOptions {
                size_bytes: unsigned(t, "SizeBytes")?.unwrap_or(0),
                mode: unsigned(t, "Mode")?.map(|mode| mode as u32),
            }),
        };
        let bind_propagation = match object_field(m, "BindOptions")? {
            Some(b) => string(b, "Propagation")?,
            None => String::new(),
        };
        let mount = Mount {
            kind,
            source: string(m, "Source")?,
            target: string(m, "Target")?,
            read_only,
            volume,
            tmpfs,
            bind_propagation,
        };
        if mount.target.is_empty() {
            return Err(DecodeError("Mounts: target is required".into()));
        }
        out.push(mount);
    }
    Ok(out)
}

/// A `ServiceSpec` from the body of `POST /services/create` or `/services/{id}/update`.
pub fn service_spec(body: &[u8]) -> Result<ServiceSpec> {
    let value: Value = serde_json::from_slice(body).map_err(|e| DecodeError(format!("invalid JSON: {e}")))?;
    let spec = as_object(&value, "ServiceSpec")?;
    let name = string(spec, "Name")?;
    let template = object_field(spec, "TaskTemplate")?.cloned().unwrap_or_default();
    let container = object_field(&template, "ContainerSpec")?.cloned().unwrap_or_default();
    refuse_unsupported(&container, &["TTY", "OpenStdin"], "ContainerSpec")?;
    refuse_unsupported(&template, &["PluginSpec", "NetworkAttachmentSpec"], "TaskTemplate")?;
    let image = string(&container, "Image")?;

    let mut out = ServiceSpec::new(name, image);
    out.labels = labels(spec, "Labels")?;
    // shoal's addition (compose `depends_on`), which Docker's clients never send.
    out.depends_on = strings(spec, "DependsOn")?;
    let task = &mut out.task;
    task.command = strings(&container, "Command")?;
    task.args = strings(&container, "Args")?;
    task.env = strings(&container, "Env")?;
    task.workdir = string(&container, "Dir")?;
    task.user = string(&container, "User")?;
    task.secrets = file_references(&container, "Secrets", "SecretID", "SecretName")?;
    task.configs = file_references(&container, "Configs", "ConfigID", "ConfigName")?;
    task.hostname = string(&container, "Hostname")?;
    task.container_labels = labels(&container, "Labels")?;
    task.options = container_options(&container)?;
    // Swarm keeps the log driver beside the container spec (`TaskTemplate.LogDriver`).
    if let Some(driver) = object_field(&template, "LogDriver")? {
        task.options.log_driver = Some(shoal_core::api::LogDriver {
            name: string(driver, "Name")?,
            options: labels(driver, "Options")?.into_iter().collect(),
        });
    }
    task.mounts = mounts(&container)?;
    if let Some(grace) = duration_ms(&container, "StopGracePeriod")? {
        task.stop_grace_period_ms = grace;
    }
    if let Some(check) = object_field(&container, "Healthcheck")? {
        task.healthcheck = Some(healthcheck(check)?);
    }
    if let Some(res) = object_field(&template, "Resources")? {
        task.resources.limits = resources(object_field(res, "Limits")?)?;
        task.resources.reservations = resources(object_field(res, "Reservations")?)?;
    }
    if let Some(restart) = object_field(&template, "RestartPolicy")? {
        let policy = &mut task.restart_policy;
        policy.condition = match string(restart, "Condition")?.as_str() {
            "" | "any" => RestartCondition::Any,
            "on-failure" => RestartCondition::OnFailure,
            "none" => RestartCondition::None,
            other => return Err(DecodeError(format!("invalid RestartCondition: {other:?}"))),
        };
        if let Some(delay) = duration_ms(restart, "Delay")? {
            policy.delay_ms = delay;
        }
        policy.max_attempts = unsigned(restart, "MaxAttempts")?.unwrap_or(0);
        policy.window_ms = duration_ms(restart, "Window")?.unwrap_or(0);
        policy.backoff = match string(restart, "Backoff")?.as_str() {
            "" | "fixed" => RestartBackoff::Fixed,
            "exponential" => RestartBackoff::Exponential,
            other => return Err(DecodeError(format!("invalid RestartPolicy.Backoff: {other:?}"))),
        };
    }
    if let Some(placement) = object_field(&template, "Placement")? {
        task.placement.constraints = strings(placement, "Constraints")?;
        task.placement.max_replicas_per_node = unsigned(placement, "MaxReplicas")?.unwrap_or(0);
        if let Some(Value::Array(prefs)) = field(placement, "Preferences") {
            for pref in prefs {
                let spread = as_object(pref, "Preferences")
                    .and_then(|p| object_field(p, "Spread"))?
                    .ok_or_else(|| DecodeError("Placement.Preferences: only Spread is supported".into()))?;
                task.placement.preferences.push(format!("spread={}", string(spread, "SpreadDescriptor")?));
            }
        }
        if let Some(Value::Array(platforms)) = field(placement, "Platforms") {
            for platform in platforms {
                let platform = as_object(platform, "Platforms")?;
                task.placement.platforms.push(format!(
                    "{}/{}",
                    string(platform, "OS")?,
                    string(platform, "Architecture")?
                ));
            }
        }
    }
    if let Some(Value::Array(networks)) = field(&template, "Networks") {
        for network in networks {
            let network = as_object(network, "Networks")?;
            let target = string(network, "Target")?;
            if target.is_empty() {
                return Err(DecodeError("Networks: Target must name a network".into()));
            }
            let aliases = strings(network, "Aliases")?;
            if !aliases.is_empty() {
                out.network_aliases.insert(target.clone(), aliases);
            }
            task.networks.push(target);
        }
    }
    task.force_update = unsigned(&template, "ForceUpdate")?.unwrap_or(0);

    if let Some(mode) = object_field(spec, "Mode")? {
        // A job mode is given by its (possibly empty) object alone; the daemon's defaults fill it
        // (moby `convert/service.go`: concurrency 1, completions = concurrency).
        if let Some(job) = object_field(mode, "ReplicatedJob")? {
            let max_concurrent = unsigned(job, "MaxConcurrent")?.unwrap_or(1);
            let total_completions = unsigned(job, "TotalCompletions")?.unwrap_or(max_concurrent);
            out.mode = ServiceMode::ReplicatedJob { max_concurrent, total_completions };
        } else if field(mode, "GlobalJob").is_some() {
            out.mode = ServiceMode::GlobalJob;
        } else if let Some(replicated) = object_field(mode, "Replicated")? {
            // Swarm's default is one replica when none is given.
            out.mode = ServiceMode::Replicated { replicas: unsigned(replicated, "Replicas")?.unwrap_or(1) };
        } else if field(mode, "Global").is_some() {
            out.mode = ServiceMode::Global;
        }
    }
    out.update_config = update_config(object_field(spec, "UpdateConfig")?)?;
    out.rollback_config = update_config(object_field(spec, "RollbackConfig")?)?;
    if let Some(endpoint) = object_field(spec, "EndpointSpec")? {
        out.endpoint_mode = match string(endpoint, "Mode")?.as_str() {
            "" | "vip" => EndpointMode::Vip,
            "dnsrr" => EndpointMode::Dnsrr,
            other => return Err(DecodeError(format!("invalid endpoint mode {other:?}"))),
        };
        if let Some(Value::Array(ports)) = field(endpoint, "Ports") {
            for port in ports {
                out.ports.push(port_config(as_object(port, "Ports")?)?);
            }
        }
    }
    Ok(out)
}

pub(crate) fn port_config(port: &Map<String, Value>) -> Result<PortConfig> {
    let number = |key: &str| -> Result<u16> {
        match unsigned(port, key)? {
            None => Ok(0),
            Some(n) => u16::try_from(n).map_err(|_| DecodeError(format!("{key} {n} is not a port number"))),
        }
    };
    let protocol = match string(port, "Protocol")?.to_ascii_lowercase().as_str() {
        "" | "tcp" => "tcp".to_string(),
        "udp" => "udp".to_string(),
        other => return Err(DecodeError(format!("unsupported protocol {other:?} (tcp or udp)"))),
    };
    let target_port = number("TargetPort")?;
    if target_port == 0 {
        return Err(DecodeError("EndpointSpec.Ports: TargetPort must be given".into()));
    }
    Ok(PortConfig {
        protocol,
        target_port,
        published_port: number("PublishedPort")?,
        publish_mode: match string(port, "PublishMode")?.as_str() {
            "" | "ingress" => PublishMode::Ingress,
            "host" => PublishMode::Host,
            other => return Err(DecodeError(format!("invalid publish mode {other:?}"))),
        },
    })
}

/// What `POST /networks/create` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkCreate {
    pub name: String,
    pub driver: String,
    pub attachable: bool,
    pub labels: Labels,
    pub subnet: String,
    pub ingress: bool,
}

/// The body of `POST /networks/create`.
pub fn network_create(body: &[u8]) -> Result<NetworkCreate> {
    let value: Value = serde_json::from_slice(body).map_err(|e| DecodeError(format!("invalid JSON: {e}")))?;
    let object = as_object(&value, "NetworkCreateRequest")?;
    let name = string(object, "Name")?;
    if name.is_empty() {
        return Err(DecodeError("network name must be given".into()));
    }
    let mut subnet = String::new();
    if let Some(ipam) = object_field(object, "IPAM")? {
        if let Some(Value::Array(configs)) = field(ipam, "Config") {
            match configs.as_slice() {
                [] => {}
                [one] => subnet = string(as_object(one, "IPAM.Config")?, "Subnet")?,
                _ => return Err(DecodeError("shoal takes one subnet per network".into())),
            }
        }
    }
    let bool_field = |key: &str| field(object, key).and_then(Value::as_bool).unwrap_or(false);
    Ok(NetworkCreate {
        name,
        driver: string(object, "Driver")?,
        attachable: bool_field("Attachable"),
        labels: labels(object, "Labels")?,
        subnet,
        ingress: bool_field("Ingress"),
    })
}

/// The body of `POST /nodes/{id}/update`: Docker's whole `NodeSpec` (an absent part keeps its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpecUpdate {
    pub labels: Option<Labels>,
    pub role: Option<NodeRole>,
    pub availability: Option<Availability>,
}

pub fn node_spec(body: &[u8]) -> Result<NodeSpecUpdate> {
    let value: Value = serde_json::from_slice(body).map_err(|e| DecodeError(format!("invalid JSON: {e}")))?;
    let object = as_object(&value, "NodeSpec")?;
    let role = match string(object, "Role")?.as_str() {
        "" => None,
        "manager" => Some(NodeRole::Manager),
        "worker" => Some(NodeRole::Worker),
        other => return Err(DecodeError(format!("invalid role {other:?}, only worker and manager are supported"))),
    };
    let availability = match string(object, "Availability")?.as_str() {
        "" => None,
        "active" => Some(Availability::Active),
        "pause" => Some(Availability::Pause),
        "drain" => Some(Availability::Drain),
        other => {
            return Err(DecodeError(format!(
                "invalid availability {other:?}, only active, pause and drain are supported"
            )))
        }
    };
    let labels = field(object, "Labels").map(|_| labels(object, "Labels")).transpose()?;
    Ok(NodeSpecUpdate { labels, role, availability })
}

/// `X-Registry-Auth`: Docker's `AuthConfig` as JSON in URL-safe base64 (padded or not, as clients
/// differ). Empty or unreadable is no credentials.
pub fn registry_auth(header: &str) -> Option<shoal_core::api::RegistryAuth> {
    use base64::Engine as _;
    if header.is_empty() {
        return None;
    }
    let trimmed = header.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    let object = value.as_object()?;
    let text = |key: &str| string(object, key).unwrap_or_default();
    Some(shoal_core::api::RegistryAuth {
        server_address: text("serveraddress"),
        username: text("username"),
        password: text("password"),
        identity_token: text("identitytoken"),
    })
}

/// Group `key=value` pairs by key (values in the order given).
pub fn group(pairs: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in pairs {
        grouped.entry(k.clone()).or_default().push(v.clone());
    }
    grouped
}
