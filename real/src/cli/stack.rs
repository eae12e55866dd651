//! `stack deploy`: a compose file → the networks and service specs of a stack, as docker/cli's
//! `cli/compose/convert` does it. Objects are named `<stack>_<name>` and labelled
//! `com.docker.stack.namespace=<stack>`; services without `networks:` join `<stack>_default`;
//! networks default to the `overlay` driver.
//!
//! Supported: `services.*.{image, command, entrypoint, environment, labels, ports, networks,
//! stop_grace_period, deploy.{mode, replicas, labels, placement, resources, restart_policy,
//! update_config, rollback_config}}`, top-level `networks` (driver, attachable, external, labels,
//! name) and `${VAR}` / `${VAR:-default}` interpolation from the CLI's environment. Keys shoal
//! cannot honour are reported as `Ignoring unsupported options: …`, as Docker reports its own.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value;
use shoal_core::api::{
    FailureAction, Labels, PortConfig, PublishMode, RestartCondition, ServiceMode, ServiceSpec, UpdateConfig,
    UpdateOrder,
};

use super::spec::parse_port;
use crate::format;

/// The label that ties objects to their stack.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// The label recording the image the compose file asked for.
pub const IMAGE_LABEL: &str = "com.docker.stack.image";

/// A compose file shoal cannot deploy; the message says which key and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StackError(pub String);

/// A network the stack needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackNetwork {
    /// The full name (`<stack>_<name>`, or the given `name:`).
    pub name: String,
    pub driver: String,
    pub attachable: bool,
    pub labels: Labels,
    /// Declared `external: true`: must already exist, is never created or removed.
    pub external: bool,
}

/// What `stack deploy` creates or updates.
#[derive(Debug, Clone, PartialEq)]
pub struct StackPlan {
    pub networks: Vec<StackNetwork>,
    pub services: Vec<ServiceSpec>,
    /// Keys that were ignored, for the `Ignoring unsupported options:` warning.
    pub ignored: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ComposeFile {
    #[serde(default)]
    services: BTreeMap<String, Value>,
    #[serde(default)]
    networks: BTreeMap<String, Option<Value>>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

/// Replace `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `$VAR` with values from `lookup`;
/// `$$` is a literal `$`.
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, StackError> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek().map(|&(_, c)| c) {
            Some('$') => {
                chars.next();
                out.push('$');
            }
            Some('{') => {
                chars.next();
                let mut inner = String::new();
                let mut closed = false;
                for (_, c) in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    inner.push(c);
                }
                if !closed {
                    return Err(StackError(format!("invalid interpolation format: unclosed \"${{{inner}\"")));
                }
                let (name, default, if_empty) = if let Some((n, d)) = inner.split_once(":-") {
                    (n, Some(d), true)
                } else if let Some((n, d)) = inner.split_once('-') {
                    (n, Some(d), false)
                } else {
                    (inner.as_str(), None, false)
                };
                let value = lookup(name);
                let value = match (value, default) {
                    (Some(v), Some(d)) if v.is_empty() && if_empty => d.to_string(),
                    (Some(v), _) => v,
                    (None, Some(d)) => d.to_string(),
                    (None, None) => String::new(),
                };
                out.push_str(&value);
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let mut name = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push_str(&lookup(&name).unwrap_or_default());
            }
            _ => out.push('$'),
        }
    }
    Ok(out)
}

fn as_str(value: &Value, key: &str) -> Result<String, StackError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(StackError(format!("{key} must be a string"))),
    }
}

fn as_u64(value: &Value, key: &str) -> Result<u64, StackError> {
    match value {
        Value::Number(n) => n.as_u64().ok_or_else(|| StackError(format!("{key} must be a whole number"))),
        Value::String(s) => s.parse().map_err(|_| StackError(format!("{key} must be a whole number"))),
        _ => Err(StackError(format!("{key} must be a whole number"))),
    }
}

fn as_duration(value: &Value, key: &str) -> Result<u64, StackError> {
    let text = as_str(value, key)?;
    format::parse_duration(&text).map_err(|e| StackError(format!("{key}: {e}")))
}

/// A string or a list of strings (`command: sleep 10` or `command: [sleep, "10"]`).
fn string_list(value: &Value, key: &str) -> Result<Vec<String>, StackError> {
    match value {
        Value::Sequence(items) => items.iter().map(|v| as_str(v, key)).collect(),
        Value::String(s) => Ok(shell_words(s)),
        Value::Null => Ok(Vec::new()),
        _ => Err(StackError(format!("{key} must be a string or a list of strings"))),
    }
}

/// Split a command line on whitespace, honouring single and double quotes.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// `KEY=value` list or `{KEY: value}` map (environment, labels).
fn key_values(value: &Value, key: &str) -> Result<Vec<(String, Option<String>)>, StackError> {
    match value {
        Value::Sequence(items) => items
            .iter()
            .map(|item| {
                let text = as_str(item, key)?;
                Ok(match text.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (text, None),
                })
            })
            .collect(),
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| {
                let k = as_str(k, key)?;
                let v = if v.is_null() { None } else { Some(as_str(v, key)?) };
                Ok((k, v))
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(StackError(format!("{key} must be a list of KEY=value or a mapping"))),
    }
}

fn mapping<'a>(value: &'a Value, key: &str) -> Result<Vec<(String, &'a Value)>, StackError> {
    match value {
        Value::Mapping(map) => map.iter().map(|(k, v)| Ok((as_str(k, key)?, v))).collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(StackError(format!("{key} must be a mapping"))),
    }
}

fn update_config(value: &Value, key: &str, config: &mut UpdateConfig) -> Result<(), StackError> {
    for (field, v) in mapping(value, key)? {
        let name = format!("{key}.{field}");
        match field.as_str() {
            "parallelism" => config.parallelism = as_u64(v, &name)?,
            "delay" => config.delay_ms = as_duration(v, &name)?,
            "monitor" => config.monitor_ms = as_duration(v, &name)?,
            "max_failure_ratio" => {
                config.max_failure_ratio = match v {
                    Value::Number(n) => n.as_f64().unwrap_or(-1.0),
                    other => as_str(other, &name)?.parse().unwrap_or(-1.0),
                };
                if !(0.0..=1.0).contains(&config.max_failure_ratio) {
                    return Err(StackError(format!("{name} must be between 0 and 1")));
                }
            }
            "failure_action" => {
                config.failure_action = match as_str(v, &name)?.as_str() {
                    "pause" => FailureAction::Pause,
                    "continue" => FailureAction::Continue,
                    "rollback" if key.starts_with("deploy.update_config") => FailureAction::Rollback,
                    other => return Err(StackError(format!("{name}: unknown failure action {other:?}"))),
                }
            }
            "order" => {
                config.order = match as_str(v, &name)?.as_str() {
                    "stop-first" => UpdateOrder::StopFirst,
                    "start-first" => UpdateOrder::StartFirst,
                    other => return Err(StackError(format!("{name}: unknown order {other:?}"))),
                }
            }
            other => return Err(StackError(format!("{key}: unknown key {other:?}"))),
        }
    }
    Ok(())
}

fn port(value: &Value) -> Result<PortConfig, StackError> {
    match value {
        Value::Mapping(_) => {
            let mut config = PortConfig {
                protocol: "tcp".into(),
                target_port: 0,
                published_port: 0,
                publish_mode: PublishMode::Ingress,
            };
            for (field, v) in mapping(value, "ports")? {
                let name = format!("ports.{field}");
                let number = |v: &Value| -> Result<u16, StackError> {
                    u16::try_from(as_u64(v, &name)?).map_err(|_| StackError(format!("{name} is not a port number")))
                };
                match field.as_str() {
                    "target" => config.target_port = number(v)?,
                    "published" => config.published_port = number(v)?,
                    "protocol" => config.protocol = as_str(v, &name)?,
                    "mode" => {
                        config.publish_mode = match as_str(v, &name)?.as_str() {
                            "ingress" => PublishMode::Ingress,
                            "host" => PublishMode::Host,
                            other => return Err(StackError(format!("{name}: unknown mode {other:?}"))),
                        }
                    }
                    other => return Err(StackError(format!("ports: unknown key {other:?}"))),
                }
            }
            if config.target_port == 0 {
                return Err(StackError("ports: a target port is required".into()));
            }
            Ok(config)
        }
        other => parse_port(&as_str(other, "ports")?).map_err(|e| StackError(e.to_string())),
    }
}

fn resources(value: &Value, spec: &mut ServiceSpec) -> Result<(), StackError> {
    for (kind, amounts) in mapping(value, "deploy.resources")? {
        let target = match kind.as_str() {
            "limits" => &mut spec.task.resources.limits,
            "reservations" => &mut spec.task.resources.reservations,
            other => return Err(StackError(format!("deploy.resources: unknown key {other:?}"))),
        };
        for (field, v) in mapping(amounts, &format!("deploy.resources.{kind}"))? {
            let name = format!("deploy.resources.{kind}.{field}");
            match field.as_str() {
                "cpus" => {
                    target.nano_cpus =
                        format::parse_cpus(&as_str(v, &name)?).map_err(|e| StackError(format!("{name}: {e}")))?
                }
                "memory" => {
                    target.memory_bytes =
                        format::parse_memory(&as_str(v, &name)?).map_err(|e| StackError(format!("{name}: {e}")))?
                }
                other => return Err(StackError(format!("deploy.resources.{kind}: unknown key {other:?}"))),
            }
        }
    }
    Ok(())
}

fn deploy(value: &Value, spec: &mut ServiceSpec, ignored: &mut Vec<String>) -> Result<(), StackError> {
    let mut mode_global = false;
    let mut replicas = None;
    for (field, v) in mapping(value, "deploy")? {
        match field.as_str() {
            "mode" => match as_str(v, "deploy.mode")?.as_str() {
                "global" => mode_global = true,
                "replicated" => {}
                other => return Err(StackError(format!("unknown mode: {other}"))),
            },
            "replicas" => replicas = Some(as_u64(v, "deploy.replicas")?),
            "labels" => {
                for (k, val) in key_values(v, "deploy.labels")? {
                    spec.labels.insert(k, val.unwrap_or_default());
                }
            }
            "placement" => {
                for (key, pv) in mapping(v, "deploy.placement")? {
                    match key.as_str() {
                        "constraints" => spec.task.placement.constraints = string_list(pv, "constraints")?,
                        "preferences" => {
                            let Value::Sequence(items) = pv else {
                                return Err(StackError("deploy.placement.preferences must be a list".into()));
                            };
                            for item in items {
                                for (kind, target) in mapping(item, "deploy.placement.preferences")? {
                                    spec.task
                                        .placement
                                        .preferences
                                        .push(format!("{kind}={}", as_str(target, "preferences")?));
                                }
                            }
                        }
                        "max_replicas_per_node" => {
                            spec.task.placement.max_replicas_per_node = as_u64(pv, "max_replicas_per_node")?
                        }
                        other => return Err(StackError(format!("deploy.placement: unknown key {other:?}"))),
                    }
                }
            }
            "resources" => resources(v, spec)?,
            "restart_policy" => {
                for (key, rv) in mapping(v, "deploy.restart_policy")? {
                    let name = format!("deploy.restart_policy.{key}");
                    let policy = &mut spec.task.restart_policy;
                    match key.as_str() {
                        "condition" => {
                            policy.condition = match as_str(rv, &name)?.as_str() {
                                "none" => RestartCondition::None,
                                "on-failure" => RestartCondition::OnFailure,
                                "any" => RestartCondition::Any,
                                other => return Err(StackError(format!("{name}: unknown condition {other:?}"))),
                            }
                        }
                        "delay" => policy.delay_ms = as_duration(rv, &name)?,
                        "max_attempts" => policy.max_attempts = as_u64(rv, &name)?,
                        "window" => policy.window_ms = as_duration(rv, &name)?,
                        other => return Err(StackError(format!("deploy.restart_policy: unknown key {other:?}"))),
                    }
                }
            }
            "update_config" => update_config(v, "deploy.update_config", &mut spec.update_config)?,
            "rollback_config" => update_config(v, "deploy.rollback_config", &mut spec.rollback_config)?,
            "endpoint_mode" => {
                if as_str(v, "deploy.endpoint_mode")? != "vip" {
                    ignored.push("deploy.endpoint_mode".into());
                }
            }
            other => ignored.push(format!("deploy.{other}")),
        }
    }
    spec.mode = match (mode_global, replicas) {
        (true, Some(_)) => {
            return Err(StackError("replicas can only be used with replicated or replicated-job mode".into()))
        }
        (true, None) => ServiceMode::Global,
        (false, replicas) => ServiceMode::Replicated { replicas: replicas.unwrap_or(1) },
    };
    Ok(())
}

/// Turn a compose file's text into what `stack deploy <stack>` creates.
pub fn plan(stack: &str, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<StackPlan, StackError> {
    let text = interpolate(text, env)?;
    let file: ComposeFile =
        serde_yaml::from_str(&text).map_err(|e| StackError(format!("the compose file is not valid YAML: {e}")))?;
    let mut ignored: Vec<String> = file.other.keys().filter(|k| k.as_str() != "version").cloned().collect();
    let namespace = || Labels::from([(NAMESPACE_LABEL.to_string(), stack.to_string())]);

    let mut declared = BTreeMap::new();
    for (name, value) in &file.networks {
        let mut network = StackNetwork {
            name: format!("{stack}_{name}"),
            driver: "overlay".into(),
            attachable: false,
            labels: namespace(),
            external: false,
        };
        if let Some(value) = value {
            for (field, v) in mapping(value, &format!("networks.{name}"))? {
                let key = format!("networks.{name}.{field}");
                match field.as_str() {
                    "driver" => network.driver = as_str(v, &key)?,
                    "attachable" => network.attachable = matches!(v, Value::Bool(true)),
                    "external" => network.external = matches!(v, Value::Bool(true)),
                    "name" => network.name = as_str(v, &key)?,
                    "labels" => {
                        for (k, val) in key_values(v, &key)? {
                            network.labels.insert(k, val.unwrap_or_default());
                        }
                    }
                    other => ignored.push(format!("networks.{name}.{other}")),
                }
            }
        }
        if network.external && value.as_ref().and_then(|v| v.get("name")).is_none() {
            // An external network keeps its own name, unprefixed.
            network.name = name.clone();
        }
        declared.insert(name.clone(), network);
    }

    let mut services = Vec::new();
    let mut uses_default = false;
    let mut used = std::collections::BTreeSet::new();
    for (name, value) in &file.services {
        let full_name = format!("{stack}_{name}");
        let image = value
            .get("image")
            .map(|v| as_str(v, "image"))
            .transpose()?
            .ok_or_else(|| StackError(format!("invalid image reference for service {name}: no image specified")))?;
        let mut spec = ServiceSpec::new(full_name, image.clone());
        spec.labels = namespace();
        spec.labels.insert(IMAGE_LABEL.into(), image);
        let mut networks = Vec::new();
        for (field, v) in mapping(value, &format!("services.{name}"))? {
            match field.as_str() {
                "image" => {}
                "command" => spec.task.args = string_list(v, "command")?,
                "entrypoint" => spec.task.command = string_list(v, "entrypoint")?,
                "environment" => {
                    spec.task.env = key_values(v, "environment")?
                        .into_iter()
                        .filter_map(|(k, v)| match v {
                            Some(v) => Some(format!("{k}={v}")),
                            None => env(&k).map(|v| format!("{k}={v}")),
                        })
                        .collect()
                }
                "labels" => {
                    // Compose's service-level labels are container labels; Swarm keeps them on the
                    // container spec, which shoal's model folds into the service's labels.
                    for (k, val) in key_values(v, "labels")? {
                        spec.labels.insert(k, val.unwrap_or_default());
                    }
                }
                "ports" => {
                    let Value::Sequence(items) = v else { return Err(StackError("ports must be a list".into())) };
                    spec.ports = items.iter().map(port).collect::<Result<_, _>>()?;
                }
                "networks" => {
                    networks = match v {
                        Value::Sequence(_) => string_list(v, "networks")?,
                        other => mapping(other, "networks")?.into_iter().map(|(k, _)| k).collect(),
                    }
                }
                "stop_grace_period" => spec.task.stop_grace_period_ms = as_duration(v, "stop_grace_period")?,
                "deploy" => deploy(v, &mut spec, &mut ignored)?,
                other => ignored.push(other.to_string()),
            }
        }
        if networks.is_empty() {
            uses_default = true;
            networks.push("default".into());
        }
        for network in networks {
            used.insert(network.clone());
            let full = match declared.get(&network) {
                Some(declared) => declared.name.clone(),
                None if network == "default" => format!("{stack}_default"),
                None => {
                    return Err(StackError(format!(
                        "service {name} refers to undefined network {network}: invalid compose project"
                    )))
                }
            };
            spec.task.networks.push(full);
        }
        services.push(spec);
    }
    if uses_default && !declared.contains_key("default") {
        declared.insert(
            "default".into(),
            StackNetwork {
                name: format!("{stack}_default"),
                driver: "overlay".into(),
                attachable: false,
                labels: namespace(),
                external: false,
            },
        );
    }
    ignored.sort();
    ignored.dedup();
    // Like Docker, only the networks some service uses are created.
    let networks = declared.into_iter().filter(|(name, _)| used.contains(name)).map(|(_, n)| n).collect();
    Ok(StackPlan { networks, services, ignored })
}
