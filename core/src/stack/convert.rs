//! The compose file → [`StackPlan`] conversion (docker/cli `cli/compose/loader` + `convert`).
//!
//! Steps: parse YAML into a [`Value`] (anchors and aliases resolved), apply `<<` merges,
//! interpolate every string value, check the version and the top-level keys, refuse forbidden
//! service keys, then walk each section. Every error carries the key path it is about; the
//! caller turns the path into a line with [`super::locate::line_of`].

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde_yaml::Value;

use super::interpolate::interpolate;
use super::locate::{display, line_of, Seg};
use super::units::{duration_ms, memory_bytes, nano_cpus, shell_words};
use super::{ComposeError, ComposeInput, StackNetwork, StackPlan, IMAGE_LABEL, NAMESPACE_LABEL};
use crate::api::{
    FailureAction, Labels, Mount, MountType, PortConfig, PublishMode, RestartCondition, ServiceMode, ServiceSpec,
    Ulimit, UpdateConfig, UpdateOrder, VolumeOptions,
};

/// Keys docker/cli refuses outright (`ForbiddenProperties`, `cli/compose/types/types.go`), with its reasons.
const FORBIDDEN: &[(&str, &str)] = &[
    ("extends", "Support for `extends` is not implemented yet."),
    (
        "volume_driver",
        "Instead of setting the volume driver on the service, define a volume using the top-level `volumes` option \
         and specify the driver there.",
    ),
    (
        "volumes_from",
        "To share a volume between services, define it using the top-level `volumes` option and reference it from \
         each service that shares it using the service-level `volumes` option.",
    ),
    ("cpu_quota", "Set resource limits using deploy.resources"),
    ("cpu_shares", "Set resource limits using deploy.resources"),
    ("cpuset", "Set resource limits using deploy.resources"),
    ("mem_limit", "Set resource limits using deploy.resources"),
    ("memswap_limit", "Set resource limits using deploy.resources"),
];

/// Keys docker/cli warns about and ignores (`UnsupportedProperties`).
const DOCKER_UNSUPPORTED: &[&str] = &[
    "build",
    "cgroupns_mode",
    "cgroup_parent",
    "devices",
    "domainname",
    "external_links",
    "ipc",
    "links",
    "mac_address",
    "network_mode",
    "pid",
    "privileged",
    "restart",
    "security_opt",
    "shm_size",
    "userns_mode",
];

/// Keys docker/cli calls deprecated (`DeprecatedProperties`), with its reasons.
const DEPRECATED: &[(&str, &str)] = &[
    ("container_name", "Setting the container name is not supported."),
    (
        "expose",
        "Exposing ports is unnecessary - services on the same network can access each other's containers on any port.",
    ),
];

/// Version-3 service keys Swarm honours but shoal's model has no place for yet: warned about
/// like Docker's own unsupported keys, so nothing is lost silently.
const SHOAL_IGNORED: &[&str] = &["credential_spec", "isolation", "stdin_open", "tmpfs", "tty"];

/// A conversion failure: the path it is about (for the line) and the whole message.
#[derive(Debug)]
struct Fail {
    path: Vec<Seg>,
    message: String,
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// A value and where it is.
#[derive(Clone)]
struct Node<'v> {
    value: &'v Value,
    path: Vec<Seg>,
}

impl<'v> Node<'v> {
    fn key(&self, key: &str, value: &'v Value) -> Node<'v> {
        let mut path = self.path.clone();
        path.push(Seg::Key(key.to_string()));
        Node { value, path }
    }

    fn index(&self, i: usize, value: &'v Value) -> Node<'v> {
        let mut path = self.path.clone();
        path.push(Seg::Index(i));
        Node { value, path }
    }

    fn name(&self) -> String {
        display(&self.path)
    }

    /// `path: what`.
    fn fail(&self, what: impl std::fmt::Display) -> Fail {
        Fail { path: self.path.clone(), message: format!("{}: {what}", self.name()) }
    }

    fn expected(&self, what: &str) -> Fail {
        self.fail(format!("expected {what}, got {}", describe(self.value)))
    }

    /// Strings, and numbers or booleans written where a string goes.
    fn string(&self) -> Result<String, Fail> {
        match self.value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(self.expected("a string")),
        }
    }

    /// A whole number; a string holding one is accepted, as Docker casts interpolated values.
    fn uint(&self) -> Result<u64, Fail> {
        match self.value {
            Value::Number(n) => n.as_u64().ok_or_else(|| self.expected("a whole number (0 or more)")),
            Value::String(s) => s.trim().parse().map_err(|_| self.expected("an integer")),
            _ => Err(self.expected("an integer")),
        }
    }

    fn float(&self) -> Result<f64, Fail> {
        let value = match self.value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        value.filter(|v| v.is_finite()).ok_or_else(|| self.expected("a number"))
    }

    fn boolean(&self) -> Result<bool, Fail> {
        match self.value {
            Value::Bool(b) => Ok(*b),
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => Ok(true),
                "false" | "no" | "off" => Ok(false),
                _ => Err(self.expected("true or false")),
            },
            _ => Err(self.expected("true or false")),
        }
    }

    fn duration_ms(&self) -> Result<u64, Fail> {
        let text = match self.value {
            Value::String(s) => s.clone(),
            Value::Number(n) if n.as_u64() == Some(0) => "0".into(),
            _ => return Err(self.expected("a duration like 10s, 1m30s or 300ms")),
        };
        duration_ms(&text).map_err(|why| self.fail(format!("{why}, got {:?}", text)))
    }

    /// The entries of a mapping (nothing = none), keys as strings, in file order.
    fn entries(&self) -> Result<Vec<(String, Node<'v>)>, Fail> {
        match self.value {
            Value::Null => Ok(Vec::new()),
            Value::Mapping(map) => map
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => return Err(self.fail(format!("expected a string key, got {}", describe(other)))),
                    };
                    Ok((key.clone(), self.key(&key, v)))
                })
                .collect(),
            _ => Err(self.expected("a mapping")),
        }
    }

    /// The items of a list (nothing = none).
    fn items(&self) -> Result<Vec<Node<'v>>, Fail> {
        match self.value {
            Value::Null => Ok(Vec::new()),
            Value::Sequence(items) => Ok(items.iter().enumerate().map(|(i, v)| self.index(i, v)).collect()),
            _ => Err(self.expected("a list")),
        }
    }

    /// A list of strings.
    fn strings(&self) -> Result<Vec<String>, Fail> {
        self.items()?.iter().map(Node::string).collect()
    }

    /// `command:` / `entrypoint:` — a command line (split as a shell would) or a list of words.
    fn command(&self) -> Result<Vec<String>, Fail> {
        match self.value {
            Value::String(s) => shell_words(s).map_err(|why| self.fail(why)),
            Value::Sequence(_) => self.strings(),
            Value::Null => Ok(Vec::new()),
            _ => Err(self.expected("a command line or a list of words")),
        }
    }

    /// `KEY=value` list or `{KEY: value}` mapping; a value of nothing is `None`.
    fn key_values(&self) -> Result<Vec<(String, Option<String>)>, Fail> {
        match self.value {
            Value::Sequence(_) => self
                .items()?
                .iter()
                .map(|item| {
                    let text = item.string()?;
                    Ok(match text.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (text, None),
                    })
                })
                .collect(),
            Value::Mapping(_) | Value::Null => self
                .entries()?
                .into_iter()
                .map(|(k, v)| Ok((k, if v.value.is_null() { None } else { Some(v.string()?) })))
                .collect(),
            _ => Err(self.expected("a list of KEY=value or a mapping")),
        }
    }

    /// A string or a list of strings (`dns: 8.8.8.8` or `dns: [8.8.8.8, 9.9.9.9]`).
    fn string_or_list(&self) -> Result<Vec<String>, Fail> {
        match self.value {
            Value::Sequence(_) => self.strings(),
            _ => Ok(vec![self.string()?]),
        }
    }

    fn labels(&self) -> Result<Vec<(String, String)>, Fail> {
        Ok(self.key_values()?.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect())
    }

    fn unknown(&self, key: &str, expected: &str) -> Fail {
        self.fail(format!("additional property {key:?} is not allowed (expected {expected})"))
    }
}

/// What the walk collects besides the plan.
#[derive(Default)]
struct Notes {
    ignored: Vec<String>,
    deprecated: Vec<String>,
    warnings: Vec<String>,
}

/// Interpolate every string value below `value` (keys stay as written).
fn interpolate_tree(
    value: &mut Value,
    path: &mut Vec<Seg>,
    env: &BTreeMap<String, String>,
    notes: &mut Notes,
) -> Result<(), Fail> {
    match value {
        Value::String(s) => {
            let done = interpolate(s, env)
                .map_err(|why| Fail { path: path.clone(), message: format!("{}: {why}", display(path)) })?;
            for name in done.unset {
                let warning = format!("The {name} variable is not set. Defaulting to a blank string.");
                if !notes.warnings.contains(&warning) {
                    notes.warnings.push(warning);
                }
            }
            *s = done.text;
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                interpolate_tree(item, path, env, notes)?;
                path.pop();
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                path.push(Seg::Key(match k {
                    Value::String(s) => s.clone(),
                    other => describe(other),
                }));
                interpolate_tree(v, path, env, notes)?;
                path.pop();
            }
        }
        Value::Tagged(tagged) => interpolate_tree(&mut tagged.value, path, env, notes)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// serde_yaml's message without the ` at line L column C` it ends with (we print `file:line:`).
fn yaml_message(err: &serde_yaml::Error) -> String {
    let mut message = err.to_string();
    if let Some(cut) = message.rfind(" at line ") {
        message.truncate(cut);
    }
    message
}

/// `stack` is used in every object name; Docker refuses the same characters.
fn check_stack_name(stack: &str) -> Result<(), String> {
    let ok = !stack.is_empty()
        && stack.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && stack.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("invalid stack name {stack:?}: use letters, digits, '-' and '_', starting with a letter or digit"))
    }
}

pub(super) fn convert(input: &ComposeInput) -> Result<StackPlan, ComposeError> {
    let error = |line: Option<usize>, message: String| ComposeError { file: input.path.to_string(), line, message };
    check_stack_name(input.stack).map_err(|m| error(None, m))?;
    let mut root: Value = serde_yaml::from_str(input.text)
        .map_err(|e| error(e.location().map(|l| l.line()), format!("invalid YAML: {}", yaml_message(&e))))?;
    root.apply_merge().map_err(|e| error(None, format!("invalid YAML merge (<<): {}", yaml_message(&e))))?;
    let mut notes = Notes::default();
    let located = |fail: Fail| error(line_of(input.text, &fail.path), fail.message);
    interpolate_tree(&mut root, &mut Vec::new(), input.env, &mut notes).map_err(located)?;
    let plan = Converter {
        stack: input.stack,
        input,
        notes,
        depends_at: BTreeMap::new(),
        volumes: IndexMap::new(),
        secrets: IndexMap::new(),
        configs: IndexMap::new(),
    }
    .file(&root)
    .map_err(located)?;
    Ok(plan)
}

struct Converter<'a> {
    stack: &'a str,
    input: &'a ComposeInput<'a>,
    notes: Notes,
    /// Where each service's `depends_on` is (service name → path), for its errors.
    depends_at: BTreeMap<String, Vec<Seg>>,
    /// The top-level `volumes`, by their compose names.
    volumes: IndexMap<String, StackVolume>,
    /// The top-level `secrets:` and `configs:`, by compose key (read before the services).
    secrets: IndexMap<String, crate::stack::StackFileObject>,
    configs: IndexMap<String, crate::stack::StackFileObject>,
}

/// A top-level named volume (docker/cli `VolumeConfig`).
#[derive(Debug, Clone, Default)]
struct StackVolume {
    /// The volume's name on the nodes: `<stack>_<name>`, the given `name:`, or an external one's own.
    name: String,
    external: bool,
    driver: String,
    driver_opts: BTreeMap<String, String>,
    labels: Labels,
}

mod files;

impl Converter<'_> {
    fn namespace(&self) -> Labels {
        Labels::from([(NAMESPACE_LABEL.to_string(), self.stack.to_string())])
    }

    /// `depends_on`: a name that is no service of the file is warned about and dropped, a cycle is
    /// refused (its tasks could never start); the names become the stack's (`<stack>_<name>`). Says
    /// once that Swarm would ignore it.
    fn dependencies(&mut self, specs: &mut [ServiceSpec], services: &[(String, Node)]) -> Result<(), Fail> {
        if specs.iter().all(|s| s.depends_on.is_empty()) {
            return Ok(());
        }
        let names: Vec<&str> = services.iter().map(|(name, _)| name.as_str()).collect();
        let depends_at = self.depends_at.clone();
        let at =
            |service: &str| Fail { path: depends_at.get(service).cloned().unwrap_or_default(), message: String::new() };
        // An undefined name is warned about and dropped (Swarm would deploy the file, ignoring it).
        for (name, spec) in names.iter().zip(specs.iter_mut()) {
            let undefined: Vec<String> =
                spec.depends_on.iter().filter(|d| !names.contains(&d.as_str())).cloned().collect();
            for missing in &undefined {
                let line = line_of(self.input.text, &at(name).path).map(|l| format!(":{l}")).unwrap_or_default();
                self.notes.warnings.push(format!(
                    "{}{line}: service {name:?} depends on undefined service {missing:?}: ignored",
                    self.input.path
                ));
            }
            spec.depends_on.retain(|d| !undefined.contains(d));
        }
        let graph: BTreeMap<&str, &[String]> =
            names.iter().zip(specs.iter()).map(|(name, spec)| (*name, spec.depends_on.as_slice())).collect();
        // A cycle: walk from each service; meeting a service on the current path closes one.
        fn visit<'g>(
            node: &'g str,
            graph: &BTreeMap<&'g str, &'g [String]>,
            path: &mut Vec<&'g str>,
            done: &mut std::collections::BTreeSet<&'g str>,
        ) -> Option<Vec<&'g str>> {
            if let Some(start) = path.iter().position(|n| *n == node) {
                let mut cycle = path[start..].to_vec();
                cycle.push(node);
                return Some(cycle);
            }
            if !done.insert(node) {
                return None;
            }
            path.push(node);
            for dep in graph.get(node).copied().unwrap_or_default() {
                if let Some(cycle) = visit(dep.as_str(), graph, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            None
        }
        let mut done = std::collections::BTreeSet::new();
        for service in graph.keys() {
            if let Some(cycle) = visit(service, &graph, &mut Vec::new(), &mut done) {
                let fail = at(cycle[0]);
                return Err(Fail {
                    message: format!("{}: dependency cycle: {}", display(&fail.path), cycle.join(" -> ")),
                    ..fail
                });
            }
        }
        // Dependencies are created first (stable: file order otherwise), so a dependency exists by
        // the time its dependents' tasks are scheduled.
        fn depth<'g>(
            node: &'g str,
            graph: &BTreeMap<&'g str, &'g [String]>,
            memo: &mut BTreeMap<&'g str, usize>,
        ) -> usize {
            if let Some(&d) = memo.get(node) {
                return d;
            }
            let d = graph
                .get(node)
                .copied()
                .unwrap_or_default()
                .iter()
                .map(|dep| 1 + depth(dep, graph, memo))
                .max()
                .unwrap_or(0);
            memo.insert(node, d);
            d
        }
        let mut memo = BTreeMap::new();
        let depths: BTreeMap<String, usize> =
            names.iter().map(|name| (format!("{}_{name}", self.stack), depth(name, &graph, &mut memo))).collect();
        specs.sort_by_key(|spec| depths.get(&spec.name).copied().unwrap_or(0));
        for spec in specs.iter_mut() {
            for dep in &mut spec.depends_on {
                *dep = format!("{}_{dep}", self.stack);
            }
        }
        self.notes.warnings.push(
            "depends_on: shoal schedules a service's tasks once every service it depends on has a running task \
             (Docker Swarm ignores depends_on)"
                .to_string(),
        );
        Ok(())
    }

    /// An unknown key under `parent`: warned about at its own line and skipped. Docker's schema
    /// refuses the whole file; a warning that names the line loses nothing the file says elsewhere.
    fn warn_unknown(&mut self, parent: &Node, key: &str, expected: &str) {
        let at = parent.key(key, parent.value);
        let line = line_of(self.input.text, &at.path).map(|l| format!(":{l}")).unwrap_or_default();
        let within = if parent.path.is_empty() { "the top level".to_string() } else { parent.name() };
        self.notes
            .warnings
            .push(format!("{}{line}: unknown key {key:?} in {within} ignored (expected {expected})", self.input.path));
    }

    /// `networks.<n>.ipam`: the subnet of its one `config` entry (shoal's networks have one subnet;
    /// more entries, `ip_range`, `gateway`, `aux_addresses` and a non-default driver are ignored, listed).
    fn ipam_subnet(&mut self, ipam: &Node) -> Result<String, Fail> {
        let mut subnet = String::new();
        for (key, v) in ipam.entries()? {
            match key.as_str() {
                "driver" => {
                    if !matches!(v.string()?.as_str(), "" | "default") {
                        self.ignore("networks.ipam.driver");
                    }
                }
                "options" => self.ignore("networks.ipam.options"),
                "config" => {
                    for (i, entry) in v.items()?.into_iter().enumerate() {
                        for (ck, cv) in entry.entries()? {
                            match ck.as_str() {
                                "subnet" if i == 0 => {
                                    let text = cv.string()?;
                                    text.parse::<ipnet::Ipv4Net>().map_err(|_| {
                                        cv.fail(format!(
                                            "invalid subnet {text:?}: expected an IPv4 CIDR like 10.20.0.0/16"
                                        ))
                                    })?;
                                    subnet = text;
                                }
                                "subnet" => self.ignore("networks.ipam.config (all but the first)"),
                                "ip_range" | "gateway" | "aux_addresses" => {
                                    self.ignore(format!("networks.ipam.config.{ck}"))
                                }
                                k if k.starts_with("x-") => {}
                                other => self.warn_unknown(&entry, other, "subnet, ip_range, gateway, aux_addresses"),
                            }
                        }
                    }
                }
                k if k.starts_with("x-") => {}
                other => self.warn_unknown(ipam, other, "driver, config, options"),
            }
        }
        Ok(subnet)
    }

    fn ignore(&mut self, key: impl Into<String>) {
        self.notes.ignored.push(key.into());
    }

    fn file(mut self, root: &Value) -> Result<StackPlan, Fail> {
        let root = Node { value: root, path: Vec::new() };
        if !matches!(root.value, Value::Mapping(_)) {
            return Err(Fail {
                path: Vec::new(),
                message: format!(
                    "a compose file is a mapping with a services key at the top level, got {}",
                    describe(root.value)
                ),
            });
        }
        let mut services = None;
        let mut networks = None;
        for (key, node) in root.entries()? {
            match key.as_str() {
                "version" => {
                    let version = node.string()?;
                    if version != "3" && !version.starts_with("3.") {
                        return Err(Fail {
                            path: node.path.clone(),
                            message: format!(
                                "unsupported Compose file version: {version} (stack deploy reads version 3 files)"
                            ),
                        });
                    }
                }
                "services" => services = Some(node),
                "networks" => networks = Some(node),
                "volumes" => self.volumes = self.top_level_volumes(&node)?,
                "secrets" => self.secrets = self.file_objects(crate::api::FileKind::Secret, &node)?,
                "configs" => self.configs = self.file_objects(crate::api::FileKind::Config, &node)?,
                k if k.starts_with("x-") => {}
                other => self.warn_unknown(
                    &root,
                    other,
                    "version, services, networks, volumes, secrets, configs or an x- extension",
                ),
            }
        }
        let services = match services {
            Some(node) => node.entries()?,
            None => Vec::new(),
        };
        self.forbidden(&services)?;
        let declared = match networks {
            Some(node) => self.networks(&node)?,
            None => IndexMap::new(),
        };
        let mut specs = Vec::with_capacity(services.len());
        let mut used: Vec<String> = Vec::new();
        for (name, node) in &services {
            let (spec, nets) = self.service(name, node, &declared)?;
            for net in nets {
                if !used.contains(&net) {
                    used.push(net);
                }
            }
            specs.push(spec);
        }
        self.dependencies(&mut specs, &services)?;
        // Like Docker, only the networks some service uses are created; the implicit default last.
        let mut plan_networks: Vec<StackNetwork> =
            declared.iter().filter(|(name, _)| used.contains(name)).map(|(_, n)| n.clone()).collect();
        if used.iter().any(|n| n == "default") && !declared.contains_key("default") {
            plan_networks.push(StackNetwork {
                name: format!("{}_default", self.stack),
                driver: "overlay".into(),
                attachable: false,
                labels: self.namespace(),
                external: false,
                subnet: String::new(),
            });
        }
        let Notes { mut ignored, mut deprecated, warnings } = self.notes;
        ignored.sort();
        ignored.dedup();
        deprecated.sort();
        deprecated.dedup();
        Ok(StackPlan {
            secrets: self.secrets.values().cloned().collect(),
            configs: self.configs.values().cloned().collect(),
            stack: self.stack.to_string(),
            networks: plan_networks,
            services: specs,
            ignored,
            deprecated,
            warnings,
        })
    }

    /// Docker refuses these before anything else, listing every one.
    fn forbidden(&self, services: &[(String, Node)]) -> Result<(), Fail> {
        let mut found: Vec<(&str, &str)> = Vec::new();
        let mut first = None;
        for (_, node) in services {
            for (key, child) in node.entries()? {
                if let Some(&(name, why)) = FORBIDDEN.iter().find(|(name, _)| *name == key) {
                    first.get_or_insert(child.path.clone());
                    if !found.iter().any(|(n, _)| *n == name) {
                        found.push((name, why));
                    }
                }
            }
        }
        match first {
            None => Ok(()),
            Some(path) => {
                found.sort();
                let list: Vec<String> = found.iter().map(|(name, why)| format!("{name}: {why}")).collect();
                Err(Fail {
                    path,
                    message: format!("compose file contains unsupported options:\n\n{}", list.join("\n")),
                })
            }
        }
    }

    /// Top-level `volumes:`: driver, driver_opts, labels, name, external (`true` or `{name: …}`).
    fn top_level_volumes(&mut self, node: &Node) -> Result<IndexMap<String, StackVolume>, Fail> {
        let mut declared = IndexMap::new();
        for (name, vol) in node.entries()? {
            let mut volume = StackVolume { name: format!("{}_{name}", self.stack), ..StackVolume::default() };
            let mut explicit_name = None;
            // `volumes: {data: }` declares a volume with every default.
            let settings = if vol.value.is_null() { Vec::new() } else { vol.entries()? };
            for (key, v) in settings {
                match key.as_str() {
                    "driver" => volume.driver = v.string()?,
                    "driver_opts" => {
                        for (k, val) in v.entries()? {
                            volume.driver_opts.insert(k, val.string()?);
                        }
                    }
                    "labels" => volume.labels.extend(v.labels()?),
                    "name" => explicit_name = Some(v.string()?),
                    "external" => match v.value {
                        Value::Mapping(_) => {
                            volume.external = true;
                            for (ek, ev) in v.entries()? {
                                match ek.as_str() {
                                    "name" => explicit_name = Some(ev.string()?),
                                    k if k.starts_with("x-") => {}
                                    other => return Err(v.unknown(other, "name")),
                                }
                            }
                        }
                        _ => volume.external = v.boolean()?,
                    },
                    k if k.starts_with("x-") => {}
                    other => return Err(vol.unknown(other, "driver, driver_opts, external, labels, name")),
                }
            }
            if volume.external && (!volume.driver.is_empty() || !volume.driver_opts.is_empty()) {
                return Err(vol.fail(format!(
                    "conflicting parameters \"external\" and \"driver\" specified for volume \"{name}\""
                )));
            }
            if let Some(explicit) = explicit_name {
                volume.name = explicit;
            } else if volume.external {
                volume.name = name.clone(); // found by its own name, never prefixed
            }
            declared.insert(name, volume);
        }
        Ok(declared)
    }

    /// A service's `volumes:` (short `[source:]target[:mode]` and long syntax) as mounts, as
    /// docker/cli's `convertVolumeToMount` makes them.
    fn service_volumes(&self, node: &Node) -> Result<Vec<Mount>, Fail> {
        let mut mounts = Vec::new();
        for item in node.items()? {
            let mount = match item.value {
                Value::String(_) => self.short_volume(&item)?,
                Value::Mapping(_) => self.long_volume(&item)?,
                _ => return Err(item.expected("a volume (a string or a mapping)")),
            };
            // Duplicate targets are the control API's to refuse (swarmkit's "invalid duplicate mount
            // point"), as Docker's converter lets them through.
            mounts.push(mount);
        }
        Ok(mounts)
    }

    fn short_volume(&self, item: &Node) -> Result<Mount, Fail> {
        let spec = item.string()?;
        let mut mount = Mount::default();
        let mut options = "";
        let parts: Vec<&str> = spec.split(':').collect();
        if spec.is_empty() {
            return Err(item.fail("invalid empty volume spec"));
        }
        if parts.iter().any(|p| p.is_empty()) && parts.len() > 1 {
            return Err(item.fail(format!("invalid spec: {spec}: empty section between colons")));
        }
        match parts.as_slice() {
            [target] => mount.target = target.to_string(),
            [source, target] => (mount.source, mount.target) = (source.to_string(), target.to_string()),
            [source, target, mode] => {
                (mount.source, mount.target) = (source.to_string(), target.to_string());
                options = mode;
            }
            _ => return Err(item.fail(format!("invalid spec: {spec}: too many colons"))),
        }
        mount.kind = if mount.source.starts_with(['.', '/', '~']) { MountType::Bind } else { MountType::Volume };
        let mut no_copy = false;
        for option in options.split(',') {
            match option {
                "ro" => mount.read_only = true,
                "rw" => mount.read_only = false,
                "nocopy" => no_copy = true,
                "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                    mount.bind_propagation = option.to_string()
                }
                _ => {} // compose ignores the rest (z, Z, …)
            }
        }
        match mount.kind {
            MountType::Bind if no_copy => Err(item.fail("volume options are incompatible with type bind")),
            MountType::Bind => self.bind_source(item, mount),
            _ if !mount.bind_propagation.is_empty() => Err(item.fail("bind options are incompatible with type volume")),
            _ => self.named_volume(item, mount, no_copy),
        }
    }

    fn long_volume(&self, item: &Node) -> Result<Mount, Fail> {
        let mut mount = Mount::default();
        let mut kind = String::from("volume");
        let (mut bind, mut volume, mut tmpfs) = (None, None, None);
        for (key, v) in item.entries()? {
            match key.as_str() {
                "type" => kind = v.string()?,
                "source" => mount.source = v.string()?,
                "target" => mount.target = v.string()?,
                "read_only" => mount.read_only = v.boolean()?,
                "consistency" => {}
                "bind" => bind = Some(v),
                "volume" => volume = Some(v),
                "tmpfs" => tmpfs = Some(v),
                k if k.starts_with("x-") => {}
                other => return Err(item.unknown(other, "type, source, target, read_only, bind, volume, tmpfs")),
            }
        }
        if mount.target.is_empty() {
            return Err(item.fail("target is required"));
        }
        let mut no_copy = false;
        if let Some(v) = &volume {
            for (key, val) in v.entries()? {
                match key.as_str() {
                    "nocopy" => no_copy = val.boolean()?,
                    k if k.starts_with("x-") => {}
                    other => return Err(v.unknown(other, "nocopy")),
                }
            }
        }
        if let Some(b) = &bind {
            for (key, val) in b.entries()? {
                match key.as_str() {
                    "propagation" => mount.bind_propagation = val.string()?,
                    "create_host_path" | "selinux" => {}
                    k if k.starts_with("x-") => {}
                    other => return Err(b.unknown(other, "propagation")),
                }
            }
        }
        let mut tmpfs_options = None;
        if let Some(t) = &tmpfs {
            let mut options = crate::api::TmpfsOptions::default();
            for (key, val) in t.entries()? {
                match key.as_str() {
                    "size" => options.size_bytes = memory_bytes(&val.string()?).map_err(|why| val.fail(why))?,
                    "mode" => options.mode = Some(val.uint()? as u32),
                    k if k.starts_with("x-") => {}
                    other => return Err(t.unknown(other, "size, mode")),
                }
            }
            tmpfs_options = Some(options);
        }
        match kind.as_str() {
            "volume" => {
                if tmpfs.is_some() {
                    return Err(item.fail("tmpfs options are incompatible with type volume"));
                }
                if bind.is_some() {
                    return Err(item.fail("bind options are incompatible with type volume"));
                }
                mount.kind = MountType::Volume;
                self.named_volume(item, mount, no_copy)
            }
            "bind" => {
                if volume.is_some() {
                    return Err(item.fail("volume options are incompatible with type bind"));
                }
                if tmpfs.is_some() {
                    return Err(item.fail("tmpfs options are incompatible with type bind"));
                }
                mount.kind = MountType::Bind;
                self.bind_source(item, mount)
            }
            "tmpfs" => {
                if !mount.source.is_empty() {
                    return Err(item.fail("invalid tmpfs source, source must be empty"));
                }
                if bind.is_some() {
                    return Err(item.fail("bind options are incompatible with type tmpfs"));
                }
                if volume.is_some() {
                    return Err(item.fail("volume options are incompatible with type tmpfs"));
                }
                mount.kind = MountType::Tmpfs;
                mount.tmpfs = tmpfs_options;
                Ok(mount)
            }
            "npipe" | "cluster" => {
                Err(item.fail(format!("volume type {kind} is not supported by shoal (volume, bind or tmpfs)")))
            }
            _ => Err(item.fail("volume type must be volume, bind, tmpfs, npipe, or cluster")),
        }
    }

    /// A bind source: relative paths are taken from the compose file's directory, as Docker's loader
    /// does (when the file was named by an absolute path; otherwise they stay relative and the
    /// engine refuses them).
    fn bind_source(&self, item: &Node, mut mount: Mount) -> Result<Mount, Fail> {
        if mount.source.is_empty() {
            return Err(item.fail("invalid bind source, source cannot be empty"));
        }
        let dir = std::path::Path::new(self.input.path).parent().filter(|d| d.is_absolute());
        if let Some(resolved) = dir.and_then(|dir| super::resolve_bind_source(dir, &mount.source)) {
            mount.source = resolved;
        }
        Ok(mount)
    }

    /// A volume mount: anonymous when it has no source, else a top-level volume, scoped to the stack
    /// (`<stack>_<name>`) with the stack's label unless external.
    fn named_volume(&self, item: &Node, mut mount: Mount, no_copy: bool) -> Result<Mount, Fail> {
        if mount.source.is_empty() {
            mount.volume = no_copy.then(|| VolumeOptions { no_copy, ..VolumeOptions::default() });
            return Ok(mount);
        }
        let Some(declared) = self.volumes.get(&mount.source) else {
            return Err(item.fail(format!("undefined volume {:?}", mount.source)));
        };
        mount.source = declared.name.clone();
        let mut options = VolumeOptions { no_copy, ..VolumeOptions::default() };
        if !declared.external {
            options.labels = self.namespace();
            options.labels.extend(declared.labels.clone());
            options.labels.insert(NAMESPACE_LABEL.to_string(), self.stack.to_string());
            options.driver = declared.driver.clone();
            options.driver_options = declared.driver_opts.clone();
        }
        mount.volume = Some(options);
        Ok(mount)
    }

    fn networks(&mut self, node: &Node) -> Result<IndexMap<String, StackNetwork>, Fail> {
        let mut declared = IndexMap::new();
        for (name, net) in node.entries()? {
            let mut network = StackNetwork {
                name: format!("{}_{name}", self.stack),
                driver: "overlay".into(),
                attachable: false,
                labels: self.namespace(),
                external: false,
                subnet: String::new(),
            };
            let mut explicit_name = None;
            for (key, v) in net.entries()? {
                match key.as_str() {
                    "driver" => network.driver = v.string()?,
                    "attachable" => network.attachable = v.boolean()?,
                    "name" => explicit_name = Some(v.string()?),
                    "labels" => network.labels.extend(v.labels()?),
                    "external" => match v.value {
                        Value::Mapping(_) => {
                            network.external = true;
                            for (ek, ev) in v.entries()? {
                                match ek.as_str() {
                                    "name" => explicit_name = Some(ev.string()?),
                                    k if k.starts_with("x-") => {}
                                    other => self.warn_unknown(&v, other, "name"),
                                }
                            }
                        }
                        _ => network.external = v.boolean()?,
                    },
                    "internal" => {
                        if v.boolean()? {
                            self.ignore("networks.internal");
                        }
                    }
                    "enable_ipv6" => {
                        if v.boolean()? {
                            self.ignore("networks.enable_ipv6");
                        }
                    }
                    "ipam" => network.subnet = self.ipam_subnet(&v)?,
                    "driver_opts" => {
                        if !v.value.is_null() {
                            self.ignore(format!("networks.{key}"));
                        }
                    }
                    k if k.starts_with("x-") => {}
                    other => self.warn_unknown(
                        &net,
                        other,
                        "driver, driver_opts, attachable, external, internal, ipam, labels, name",
                    ),
                }
            }
            if let Some(explicit) = explicit_name {
                network.name = explicit;
            } else if network.external {
                // An external network is found by its own name, never prefixed.
                network.name = name.clone();
            }
            if network.external {
                network.labels = Labels::new();
            }
            declared.insert(name, network);
        }
        Ok(declared)
    }

    /// One service: its spec and the (compose) names of the networks it joins.
    fn service(
        &mut self,
        name: &str,
        node: &Node,
        declared: &IndexMap<String, StackNetwork>,
    ) -> Result<(ServiceSpec, Vec<String>), Fail> {
        let entries = node.entries()?;
        let image = match entries.iter().find(|(k, _)| k == "image") {
            Some((_, v)) => v.string()?,
            None => String::new(),
        };
        if image.trim().is_empty() {
            return Err(Fail {
                path: node.path.clone(),
                message: format!("invalid image reference for service {name}: no image specified"),
            });
        }
        let mut spec = ServiceSpec::new(format!("{}_{name}", self.stack), image.clone());
        spec.labels = self.namespace();
        spec.labels.insert(IMAGE_LABEL.into(), image);
        spec.task.container_labels = self.namespace();
        let mut env: IndexMap<String, Option<String>> = IndexMap::new();
        let mut environment = Vec::new();
        let mut networks = Vec::new();
        // Compose's `networks.<net>.aliases`, by the compose name of the network.
        let mut aliases: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
        let mut deploy = None;
        let mut volumes = None;
        for (key, v) in &entries {
            match key.as_str() {
                "image" => {}
                "command" => spec.task.args = v.command()?,
                "entrypoint" => spec.task.command = v.command()?,
                "environment" => environment = v.key_values()?,
                "env_file" => {
                    let files = match v.value {
                        Value::String(s) => vec![(s.clone(), v.clone())],
                        _ => v.items()?.into_iter().map(|item| Ok((item.string()?, item))).collect::<Result<_, _>>()?,
                    };
                    for (file, at) in files {
                        let text = (self.input.env_file)(&file)
                            .ok_or_else(|| at.fail(format!("couldn't find env file {file:?}")))?;
                        for (k, val) in env_file(&text).map_err(|why| at.fail(format!("env file {file:?}: {why}")))? {
                            env.insert(k, val);
                        }
                    }
                }
                // Compose's service labels are container labels (`deploy.labels` label the service).
                "labels" => spec.task.container_labels.extend(v.labels()?),
                "hostname" => spec.task.hostname = v.string()?,
                // Converted once the networks are (an undefined network is reported first).
                "volumes" => volumes = Some(v),
                "ports" => {
                    spec.ports = Vec::new();
                    for item in v.items()? {
                        spec.ports.extend(port(&item)?);
                    }
                }
                "networks" => {
                    networks = match v.value {
                        Value::Sequence(_) => {
                            v.items()?.into_iter().map(|n| Ok((n.string()?, n))).collect::<Result<_, _>>()?
                        }
                        _ => {
                            let mut names = Vec::new();
                            for (net, settings) in v.entries()? {
                                for (sk, sv) in settings.entries()? {
                                    match sk.as_str() {
                                        "aliases" => {
                                            aliases.insert(net.clone(), sv.strings()?);
                                        }
                                        "ipv4_address" | "ipv6_address" => self.ignore(format!("networks.{sk}")),
                                        k if k.starts_with("x-") => {}
                                        other => {
                                            self.warn_unknown(&settings, other, "aliases, ipv4_address, ipv6_address")
                                        }
                                    }
                                }
                                names.push((net, settings));
                            }
                            names
                        }
                    }
                }
                "stop_grace_period" => spec.task.stop_grace_period_ms = v.duration_ms()?,
                "working_dir" => spec.task.workdir = v.string()?,
                "cap_add" => spec.task.options.cap_add = v.strings()?,
                "cap_drop" => spec.task.options.cap_drop = v.strings()?,
                "init" => spec.task.options.init = Some(v.boolean()?),
                "read_only" => spec.task.options.read_only = v.boolean()?,
                "stop_signal" => spec.task.options.stop_signal = v.string()?,
                "dns" => spec.task.options.dns = v.string_or_list()?,
                "dns_search" => spec.task.options.dns_search = v.string_or_list()?,
                "sysctls" => spec.task.options.sysctls = v.labels()?.into_iter().collect(),
                "extra_hosts" => spec.task.options.hosts = extra_hosts(v)?,
                "ulimits" => spec.task.options.ulimits = ulimits(v)?,
                "logging" => spec.task.options.log_driver = logging(v)?,
                "user" => spec.task.user = v.string()?,
                "healthcheck" => spec.task.healthcheck = Some(healthcheck(v)?),
                "secrets" => {
                    spec.task.secrets = self.file_references(crate::api::FileKind::Secret, v, &self.secrets)?
                }
                "configs" => {
                    spec.task.configs = self.file_references(crate::api::FileKind::Config, v, &self.configs)?
                }
                "deploy" => deploy = Some(v.clone()),
                // Swarm ignores it; shoal holds the tasks until the dependencies run (checked and
                // named with the stack after every service is read).
                "depends_on" => {
                    spec.depends_on = match v.value {
                        Value::Mapping(_) => v.entries()?.into_iter().map(|(name, _)| name).collect(),
                        _ => v.strings()?,
                    };
                    self.depends_at.insert(name.to_string(), v.path.clone());
                }
                k if k.starts_with("x-") => {}
                k if DOCKER_UNSUPPORTED.contains(&k) || SHOAL_IGNORED.contains(&k) => self.ignore(k),
                k if DEPRECATED.iter().any(|(d, _)| *d == k) => {
                    if let Some((d, why)) = DEPRECATED.iter().find(|(d, _)| *d == k) {
                        self.notes.deprecated.push(format!("{d}: {why}"));
                    }
                }
                other => self.warn_unknown(node, other, "a version 3 service key"),
            }
        }
        for (k, v) in environment {
            env.insert(k, v);
        }
        spec.task.env = env
            .into_iter()
            .map(|(k, v)| match v.or_else(|| self.input.env.get(&k).cloned()) {
                Some(v) => format!("{k}={v}"),
                // Docker passes an unresolved name on alone (the container sees it unset).
                None => k,
            })
            .collect();
        if let Some(deploy) = deploy {
            self.deploy(&deploy, &mut spec)?;
        }
        let mut joined = Vec::new();
        if networks.is_empty() {
            spec.task.networks.push(format!("{}_default", self.stack));
            joined.push("default".to_string());
        }
        for (net, at) in networks {
            let full = match declared.get(&net) {
                Some(declared) => declared.name.clone(),
                None if net == "default" => format!("{}_default", self.stack),
                None => {
                    return Err(at.fail(format!(
                    "service {name:?} refers to undefined network {net:?}: declare it under the top-level networks key"
                )))
                }
            };
            if let Some(names) = aliases.remove(&net).filter(|names| !names.is_empty()) {
                spec.network_aliases.insert(full.clone(), names);
            }
            if !spec.task.networks.contains(&full) {
                spec.task.networks.push(full);
            }
            joined.push(net);
        }
        if let Some(v) = volumes {
            spec.task.mounts = self.service_volumes(v)?;
        }
        Ok((spec, joined))
    }

    fn deploy(&mut self, node: &Node, spec: &mut ServiceSpec) -> Result<(), Fail> {
        let (mut global, mut job) = (false, false);
        let mut condition_given = false;
        let mut replicas: Option<(u64, Node)> = None;
        for (key, v) in node.entries()? {
            match key.as_str() {
                "mode" => {
                    (global, job) = match v.string()?.as_str() {
                        "replicated" => (false, false),
                        "global" => (true, false),
                        "replicated-job" => (false, true),
                        "global-job" => (true, true),
                        other => {
                            return Err(v.fail(format!(
                                "unknown mode: {other} (expected replicated, global, replicated-job or global-job)"
                            )))
                        }
                    }
                }
                "replicas" => replicas = Some((v.uint()?, v)),
                "labels" => spec.labels.extend(v.labels()?),
                "update_config" => update_config(&v, &mut spec.update_config, true)?,
                "rollback_config" => update_config(&v, &mut spec.rollback_config, false)?,
                "resources" => self.resources(&v, spec)?,
                "restart_policy" => {
                    let policy = &mut spec.task.restart_policy;
                    for (rk, rv) in v.entries()? {
                        match rk.as_str() {
                            "condition" => {
                                condition_given = true;
                                policy.condition = match rv.string()?.as_str() {
                                    "none" => RestartCondition::None,
                                    "on-failure" => RestartCondition::OnFailure,
                                    "any" => RestartCondition::Any,
                                    other => {
                                        return Err(rv.fail(format!(
                                            "unknown restart condition {other:?} (expected none, on-failure or any)"
                                        )))
                                    }
                                }
                            }
                            "delay" => policy.delay_ms = rv.duration_ms()?,
                            "max_attempts" => policy.max_attempts = rv.uint()?,
                            "window" => policy.window_ms = rv.duration_ms()?,
                            k if k.starts_with("x-") => {}
                            other => self.warn_unknown(&v, other, "condition, delay, max_attempts, window"),
                        }
                    }
                }
                "placement" => {
                    for (pk, pv) in v.entries()? {
                        match pk.as_str() {
                            "constraints" => spec.task.placement.constraints = pv.strings()?,
                            "preferences" => {
                                spec.task.placement.preferences = Vec::new();
                                for item in pv.items()? {
                                    for (kind, target) in item.entries()? {
                                        if kind != "spread" {
                                            return Err(item.unknown(&kind, "spread"));
                                        }
                                        spec.task.placement.preferences.push(format!("spread={}", target.string()?));
                                    }
                                }
                            }
                            "max_replicas_per_node" => spec.task.placement.max_replicas_per_node = pv.uint()?,
                            k if k.starts_with("x-") => {}
                            other => self.warn_unknown(&v, other, "constraints, preferences, max_replicas_per_node"),
                        }
                    }
                }
                "endpoint_mode" => match v.string()?.as_str() {
                    "vip" => {}
                    "dnsrr" => self.ignore("deploy.endpoint_mode"),
                    other => return Err(v.fail(format!("unknown endpoint mode {other:?} (expected vip or dnsrr)"))),
                },
                k if k.starts_with("x-") => {}
                other => self.warn_unknown(
                    node,
                    other,
                    "mode, replicas, labels, placement, resources, restart_policy, update_config, \
                     rollback_config, endpoint_mode",
                ),
            }
        }
        spec.mode = match (global, job, replicas) {
            (true, _, Some((_, at))) => {
                return Err(at.fail("replicas can only be used with replicated or replicated-job mode"));
            }
            (true, false, None) => ServiceMode::Global,
            (true, true, None) => ServiceMode::GlobalJob,
            (false, false, replicas) => ServiceMode::Replicated { replicas: replicas.map(|(n, _)| n).unwrap_or(1) },
            // docker/cli: replicas is both the concurrency and the completions (1 when absent).
            (false, true, replicas) => {
                let n = replicas.map(|(n, _)| n).unwrap_or(1);
                ServiceMode::ReplicatedJob { max_concurrent: n, total_completions: n }
            }
        };
        // A job restarts only what failed unless the file says otherwise (Docker's default for jobs).
        if job && !condition_given {
            spec.task.restart_policy.condition = RestartCondition::OnFailure;
        }
        Ok(())
    }

    fn resources(&mut self, node: &Node, spec: &mut ServiceSpec) -> Result<(), Fail> {
        for (kind, amounts) in node.entries()? {
            let target = match kind.as_str() {
                "limits" => &mut spec.task.resources.limits,
                "reservations" => &mut spec.task.resources.reservations,
                k if k.starts_with("x-") => continue,
                other => {
                    self.warn_unknown(node, other, "limits, reservations");
                    continue;
                }
            };
            for (key, v) in amounts.entries()? {
                match key.as_str() {
                    "cpus" => target.nano_cpus = nano_cpus(&v.string()?).map_err(|why| v.fail(why))?,
                    "memory" => target.memory_bytes = memory_bytes(&v.string()?).map_err(|why| v.fail(why))?,
                    "pids" | "generic_resources" | "devices" => {
                        self.notes.ignored.push(format!("deploy.resources.{kind}.{key}"));
                    }
                    k if k.starts_with("x-") => {}
                    other => self.warn_unknown(&amounts, other, "cpus, memory, pids, generic_resources, devices"),
                }
            }
        }
        Ok(())
    }
}

/// Compose's `extra_hosts`: `host:ip` entries (a list, or a mapping of host to ip).
fn extra_hosts(node: &Node) -> Result<Vec<String>, Fail> {
    let entries: Vec<(String, Node)> = match node.value {
        Value::Mapping(_) => node
            .entries()?
            .into_iter()
            .map(|(host, ip)| Ok((format!("{host}:{}", ip.string()?), ip)))
            .collect::<Result<_, Fail>>()?,
        _ => node.items()?.into_iter().map(|item| Ok((item.string()?, item))).collect::<Result<_, Fail>>()?,
    };
    entries
        .into_iter()
        .map(|(entry, at)| match entry.split_once(':') {
            Some((host, ip))
                if !host.is_empty() && (ip == "host-gateway" || ip.parse::<std::net::IpAddr>().is_ok()) =>
            {
                Ok(entry)
            }
            _ => Err(at.fail(format!("invalid extra host {entry:?}: expected host:ip (or host:host-gateway)"))),
        })
        .collect()
}

/// Compose's `ulimits`: `name: N` (soft = hard) or `name: {soft: S, hard: H}`.
fn ulimits(node: &Node) -> Result<Vec<Ulimit>, Fail> {
    let mut out = Vec::new();
    for (name, v) in node.entries()? {
        let (soft, hard) = match v.value {
            Value::Mapping(_) => {
                let (mut soft, mut hard) = (None, None);
                for (key, limit) in v.entries()? {
                    match key.as_str() {
                        "soft" => soft = Some(limit.uint()?),
                        "hard" => hard = Some(limit.uint()?),
                        other => return Err(v.unknown(other, "soft, hard")),
                    }
                }
                match (soft, hard) {
                    (Some(soft), Some(hard)) => (soft, hard),
                    _ => return Err(v.fail("a ulimit needs both soft and hard")),
                }
            }
            _ => (v.uint()?, v.uint()?),
        };
        let text = format!("{name}={soft}:{hard}");
        out.push(Ulimit::parse(&text).map_err(|why| v.fail(why))?);
    }
    Ok(out)
}

/// `logging: {driver, options}`, as docker/cli converts it: options without a `driver` go to the
/// engine's default driver (dogvscat's `max-size: 1m` on json-file).
fn logging(node: &Node) -> Result<Option<crate::api::LogDriver>, Fail> {
    let (mut name, mut options) = (String::new(), std::collections::BTreeMap::new());
    for (key, v) in node.entries()? {
        match key.as_str() {
            "driver" => name = v.string()?,
            "options" => options = v.labels()?.into_iter().collect(),
            other => return Err(v.unknown(other, "driver, options")),
        }
    }
    Ok((!name.is_empty() || !options.is_empty()).then_some(crate::api::LogDriver { name, options }))
}

fn update_config(node: &Node, config: &mut UpdateConfig, is_update: bool) -> Result<(), Fail> {
    for (key, v) in node.entries()? {
        match key.as_str() {
            "parallelism" => config.parallelism = v.uint()?,
            "delay" => config.delay_ms = v.duration_ms()?,
            "monitor" => config.monitor_ms = v.duration_ms()?,
            "max_failure_ratio" => {
                let ratio = v.float()?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(v.fail(format!("expected a number between 0 and 1, got {ratio}")));
                }
                config.max_failure_ratio = ratio;
            }
            "failure_action" => {
                config.failure_action = match v.string()?.as_str() {
                    "pause" => FailureAction::Pause,
                    "continue" => FailureAction::Continue,
                    "rollback" if is_update => FailureAction::Rollback,
                    other => {
                        let expected = if is_update { "pause, continue or rollback" } else { "pause or continue" };
                        return Err(v.fail(format!("unknown failure action {other:?} (expected {expected})")));
                    }
                }
            }
            "order" => {
                config.order = match v.string()?.as_str() {
                    "stop-first" => UpdateOrder::StopFirst,
                    "start-first" => UpdateOrder::StartFirst,
                    other => {
                        return Err(v.fail(format!("unknown order {other:?} (expected stop-first or start-first)")))
                    }
                }
            }
            k if k.starts_with("x-") => {}
            other => {
                return Err(node.unknown(other, "parallelism, delay, failure_action, monitor, max_failure_ratio, order"))
            }
        }
    }
    Ok(())
}

/// An env file: `KEY=value` lines (value taken literally), `#` comments and blank lines skipped.
/// A bare `KEY` line means "from the environment"; it stays bare here and is resolved with the
/// rest.
fn env_file(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('\u{feff}').trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (line.trim_end(), None),
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!("line {}: variable {key:?} has whitespace or is empty", i + 1));
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// `80-81` or `80`: an inclusive range of port numbers.
fn port_range(text: &str) -> Result<(u16, u16), String> {
    let number = |t: &str| match t.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("invalid port {t:?}: ports are numbers from 1 to 65535")),
        Ok(n) => Ok(n),
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(format!("invalid port range {text:?}: the start is after the end"));
            }
            Ok((a, b))
        }
        None => number(text).map(|n| (n, n)),
    }
}

/// Short syntax `[IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]` (docker's `nat.ParsePortSpec`);
/// the host IP is dropped as Swarm does. Ranges expand to one port each.
fn short_port(text: &str) -> Result<Vec<PortConfig>, String> {
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((spec, protocol)) => (spec, protocol.to_ascii_lowercase()),
        None => (text, "tcp".to_string()),
    };
    if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid protocol {protocol:?} in port {text:?} (expected tcp, udp or sctp)"));
    }
    // `[::1]:80:80`: a bracketed IPv6 address first.
    let spec = match spec.strip_prefix('[') {
        Some(rest) => match rest.split_once("]:") {
            Some((_, after)) => after,
            None => return Err(format!("invalid port {text:?}: expected ]: after an IPv6 address")),
        },
        None => spec,
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (published, target) = match parts.as_slice() {
        [target] => (None, *target),
        [published, target] => (Some(*published), *target),
        [_ip, published, target] => (Some(*published), *target),
        _ => return Err(format!("invalid port {text:?}: expected [IP:][PUBLISHED:]TARGET[/PROTOCOL]")),
    };
    let (t0, t1) = port_range(target)?;
    let published = match published.filter(|p| !p.is_empty()) {
        Some(p) => Some(port_range(p)?),
        None => None,
    };
    if let Some((p0, p1)) = published {
        if p1 - p0 != t1 - t0 {
            return Err(format!("invalid port {text:?}: the published and target ranges differ in size"));
        }
    }
    Ok((t0..=t1)
        .enumerate()
        .map(|(i, target_port)| PortConfig {
            protocol: protocol.clone(),
            target_port,
            published_port: published.map(|(p0, _)| p0 + i as u16).unwrap_or(0),
            publish_mode: PublishMode::Ingress,
        })
        .collect())
}

fn port(node: &Node) -> Result<Vec<PortConfig>, Fail> {
    match node.value {
        Value::Mapping(_) => {
            let mut config = PortConfig {
                protocol: "tcp".into(),
                target_port: 0,
                published_port: 0,
                publish_mode: PublishMode::Ingress,
            };
            let number = |v: &Node| -> Result<u16, Fail> {
                match u16::try_from(v.uint()?) {
                    Ok(n) => Ok(n),
                    Err(_) => Err(v.expected("a port number from 1 to 65535")),
                }
            };
            for (key, v) in node.entries()? {
                match key.as_str() {
                    "target" => config.target_port = number(&v)?,
                    "published" => config.published_port = number(&v)?,
                    "protocol" => {
                        config.protocol = v.string()?.to_ascii_lowercase();
                        if !matches!(config.protocol.as_str(), "tcp" | "udp" | "sctp") {
                            return Err(v.expected("tcp, udp or sctp"));
                        }
                    }
                    "mode" => {
                        config.publish_mode = match v.string()?.as_str() {
                            "ingress" => PublishMode::Ingress,
                            "host" => PublishMode::Host,
                            _ => return Err(v.expected("ingress or host")),
                        }
                    }
                    k if k.starts_with("x-") => {}
                    other => return Err(node.unknown(other, "target, published, protocol, mode")),
                }
            }
            if config.target_port == 0 {
                return Err(node.fail("a target port is required"));
            }
            Ok(vec![config])
        }
        Value::String(_) | Value::Number(_) => short_port(&node.string()?).map_err(|why| node.fail(why)),
        _ => Err(node.expected("a port like \"8080:80\" or a mapping with target and published")),
    }
}

/// A service's `healthcheck:` as docker/cli converts it: `test` as a string is run by the shell
/// (`CMD-SHELL`), as a list taken as written (`[CMD, …]`, `[CMD-SHELL, …]`, `[NONE]`); `disable: true`
/// is `[NONE]` and refused together with `test`.
fn healthcheck(node: &Node) -> Result<crate::api::HealthConfig, Fail> {
    let mut check = crate::api::HealthConfig::default();
    let mut disable = false;
    for (key, v) in node.entries()? {
        match key.as_str() {
            "test" => {
                check.test = match v.value {
                    Value::String(line) => vec!["CMD-SHELL".to_string(), line.clone()],
                    _ => v.strings()?,
                };
                if let Some(first) = check.test.first().filter(|f| !matches!(f.as_str(), "CMD" | "CMD-SHELL" | "NONE")) {
                    return Err(v.fail(format!(
                        "{first:?} is not CMD, CMD-SHELL or NONE (write the command as a string to run it with the shell)"
                    )));
                }
            }
            "interval" => check.interval_ms = v.duration_ms()?,
            "timeout" => check.timeout_ms = v.duration_ms()?,
            "start_period" => check.start_period_ms = v.duration_ms()?,
            "retries" => check.retries = v.uint()?,
            "disable" => disable = v.boolean()?,
            k if k.starts_with("x-") => {}
            other => {
                return Err(v.fail(format!(
                    "additional property {other:?} is not allowed (expected test, interval, timeout, retries, start_period, disable)"
                )))
            }
        }
    }
    if disable {
        if !check.test.is_empty() {
            return Err(node.fail("test and disable can't be set at the same time"));
        }
        return Ok(crate::api::HealthConfig::none());
    }
    Ok(check)
}
