//! Stacks: a compose file → the networks and services `docker stack deploy` would create
//! (docker/cli `cli/compose/{loader,convert}`), and the control-API steps that deploy or remove a
//! stack given what the cluster already holds. Used by the real CLI and by the simulator's
//! `run: stack …` steps, so both worlds deploy a file the same way.
//!
//! Pure: no I/O. The caller passes the file's text, its path (for `file:line:` in messages), the
//! environment for `${VAR:-default}` interpolation, and a lookup for `env_file:` contents.
//!
//! Objects are named `<stack>_<name>` (networks with `name:` and external ones keep their own
//! name) and labelled `com.docker.stack.namespace=<stack>`; a service without `networks:` joins
//! `<stack>_default`; networks are `overlay` unless a driver is given; only networks some service
//! uses are created. Order follows the file.
//!
//! | compose key | shoal |
//! |---|---|
//! | `version` | `3` or `3.x`; anything else is refused (`unsupported Compose file version`) |
//! | `services.*.image` | required (`invalid image reference for service X: no image specified`) |
//! | `command`, `entrypoint` | args / command; a string is split as a shell would |
//! | `environment`, `env_file` | `KEY=value`; a bare `KEY` takes its value from the environment; `environment` overrides `env_file` |
//! | `labels` (service) | container labels (with `com.docker.stack.namespace`, as docker/cli adds) |
//! | `hostname` | the container's hostname; a template (`{{.Task.Slot}}`) as in Swarm |
//! | `ports` | short (`[IP:][P[-P]:]T[-T][/proto]`, host IP dropped) and long (`target`, `published`, `protocol`, `mode`) |
//! | `networks` | list or mapping; undeclared names are refused (`undefined network`); `aliases` kept (the resolver answers them on that network); `ipv4_address`, `ipv6_address` ignored |
//! | `stop_grace_period` | yes |
//! | `deploy.mode` | `replicated`, `global`, `replicated-job` (`replicas` is both the concurrency and the completions), `global-job`; `replicas` with a global mode is refused; jobs' restart condition defaults to `on-failure` |
//! | `healthcheck` | `test` (a string runs with the shell: `CMD-SHELL`; a list as written: `CMD`, `CMD-SHELL`, `NONE`), `interval`, `timeout`, `retries`, `start_period`, `disable` (`[NONE]`; with `test` refused); `start_interval` refused as unknown |
//! | `deploy.replicas`, `labels` | yes (deploy labels are service labels) |
//! | `deploy.placement` | `constraints`, `preferences` (`spread`), `max_replicas_per_node` |
//! | `deploy.resources` | `limits`/`reservations` `cpus`, `memory`; `pids`, `generic_resources`, `devices` ignored |
//! | `deploy.restart_policy` | `condition`, `delay`, `max_attempts`, `window` |
//! | `deploy.update_config`, `rollback_config` | `parallelism`, `delay`, `failure_action`, `monitor`, `max_failure_ratio`, `order` |
//! | `deploy.endpoint_mode` | `vip`; `dnsrr` ignored |
//! | `depends_on` | list or mapping (conditions ignored): a service's tasks are scheduled once each service it depends on has a running task (shoal's addition: Swarm ignores it, and the plan warns so); an undefined service is warned about and dropped, a cycle refused |
//! | `volumes` | short (`[source:]target[:ro\|rw\|nocopy\|propagation]`: a source starting with `/`, `.` or `~` is a bind mount, relative ones from the compose file's directory; no source = an anonymous volume) and long syntax (`type` volume\|bind\|tmpfs, `source`, `target`, `read_only`, `bind.propagation`, `volume.nocopy`, `tmpfs.size`/`mode`); a named source must be a top-level volume (`undefined volume "x"`), docker's option/type conflicts refused |
//! | top-level `volumes` | `driver`, `driver_opts`, `labels`, `name`, `external` (`true` or `{name}`): a named volume is `<stack>_<name>` (or its `name:`) with `com.docker.stack.namespace=<stack>` and the file's labels, created by each node that runs a task mounting it; an external one keeps its own name and is never labelled |
//! | `secrets`, `configs` (service) | short (`- name`) and long (`source`, `target`, `uid`, `gid`, `mode`; `mode: 0440` read as octal, as Docker's YAML 1.1 does); undeclared names are refused (`undefined secret "x"`); a config's default target is `/<source>`, a secret's `/run/secrets/<source>` |
//! | docker's unsupported keys: `build`, `cgroupns_mode`, `cgroup_parent`, `devices`, `domainname`, `external_links`, `ipc`, `links`, `mac_address`, `network_mode`, `pid`, `privileged`, `restart`, `security_opt`, `shm_size`, `userns_mode` | ignored, listed (`Ignoring unsupported options: …`) |
//! | `cap_add`, `cap_drop`, `init`, `read_only`, `stop_signal`, `dns`, `dns_search` (string or list), `sysctls` (list or mapping), `extra_hosts` (`host:ip` list or mapping), `ulimits` (`n` or `{soft, hard}`) | the task's container options |
//! | `logging` | `driver`, `options`: the containers' log driver (`--log-driver`, `--log-opt`); options without a driver go to the engine's default one |
//! | keys shoal does not model yet: `stdin_open`, `tmpfs`, `tty`, `isolation`, `credential_spec` | ignored, listed |
//! | docker's deprecated keys: `container_name`, `expose` | ignored, listed (`Ignoring deprecated options:`) |
//! | docker's forbidden keys: `extends`, `volume_driver`, `volumes_from`, `cpu_quota`, `cpu_shares`, `cpuset`, `mem_limit`, `memswap_limit` | refused (`compose file contains unsupported options:`) |
//! | top-level `networks.*` | `driver`, `attachable`, `labels`, `name`, `external` (`true` or `{name}`), `ipam.config[0].subnet` (the network's subnet); `driver_opts`, the rest of `ipam`, `internal`, `enable_ipv6` ignored, listed |
//! | top-level `secrets`, `configs` | `file` (read relative to the compose file), `external` (`true` or `{name}`; must exist, else `service web: secret not found: x`), `name`, `labels`, `template_driver`; created as `<stack>_<key>` before networks and services, labelled with the stack, removed by `stack rm`; one that exists already is kept as it is; secrets' `driver`, `driver_opts` ignored, listed |
//! | `x-*` anywhere, YAML anchors and `<<` merges | as YAML and Docker define them |
//! | any other key | warned about at its line (`file:line: unknown key "k" in services.web ignored (expected …)`) and skipped; Docker's schema refuses the file. Unknown keys of `update_config`, `healthcheck`, `ports` entries and placement preferences are still refused |

mod convert;
mod interpolate;
mod locate;
pub mod units;

use std::collections::BTreeMap;

use crate::api::{Config, FileKind, Labels, Network, Secret, SecretSpec, Service, ServiceSpec};
use crate::control::{ControlRequest, FileData};

pub use interpolate::{interpolate, Interpolated};
pub use locate::{line_of, Seg};

/// The label that ties objects to their stack.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// The label recording the image the compose file asked for.
pub const IMAGE_LABEL: &str = "com.docker.stack.image";

/// What a conversion reads. `env_file` returns the text of an `env_file:` entry (by the path as
/// written in the file), or `None` if there is no such file.
pub struct ComposeInput<'a> {
    pub stack: &'a str,
    pub path: &'a str,
    pub text: &'a str,
    pub env: &'a BTreeMap<String, String>,
    pub env_file: &'a dyn Fn(&str) -> Option<String>,
}

/// A compose file that cannot be deployed: `file:line: what was wrong`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file, line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ComposeError {
    pub file: String,
    /// 1-based; `None` when the problem is not at one place (e.g. the stack name).
    pub line: Option<usize>,
    pub message: String,
}

/// A network the stack needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackNetwork {
    /// The full name (`<stack>_<name>`, or the given `name:`, or an external network's own).
    pub name: String,
    pub driver: String,
    pub attachable: bool,
    pub labels: Labels,
    /// Declared `external`: must already exist, is never created or removed.
    pub external: bool,
    /// `ipam.config[0].subnet`; empty = the cluster picks one.
    pub subnet: String,
}

/// A secret or config the stack defines (top-level `secrets:` / `configs:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackFileObject {
    /// The full name (`<stack>_<key>`, or `name:`, or an external one's own).
    pub name: String,
    pub labels: Labels,
    /// `file:` as written (relative to the compose file); `None` for external ones.
    pub file: Option<String>,
    /// Declared `external`: must already exist, is never created or removed.
    pub external: bool,
    /// `template_driver:` (`golang` or empty).
    pub template_driver: String,
}

/// What `stack deploy` creates or updates, and what it tells the user.
#[derive(Debug, Clone, PartialEq)]
pub struct StackPlan {
    pub stack: String,
    /// Every secret and config the file defines, in file order (Docker creates all of them).
    pub secrets: Vec<StackFileObject>,
    pub configs: Vec<StackFileObject>,
    pub networks: Vec<StackNetwork>,
    pub services: Vec<ServiceSpec>,
    /// Keys ignored, for `Ignoring unsupported options: a, b` (sorted, once each).
    pub ignored: Vec<String>,
    /// `key: why` lines for `Ignoring deprecated options:`.
    pub deprecated: Vec<String>,
    /// Other warnings (unset variables), in the order met.
    pub warnings: Vec<String>,
}

/// Convert a compose file into what `stack deploy <stack>` creates.
pub fn convert(input: &ComposeInput) -> Result<StackPlan, ComposeError> {
    convert::convert(input)
}

/// A stack deploy or removal the cluster's state refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StackError {
    #[error(
        "network {0:?} is declared as external, but could not be found. You need to create a swarm-scoped network \
         before the stack is deployed"
    )]
    ExternalNetworkMissing(String),
    /// docker/cli's words (`service %s: secret not found: %s`), with the service's compose name.
    #[error("service {service}: {} not found: {name}", kind.as_str())]
    FileObjectMissing { service: String, kind: FileKind, name: String },
    /// A `file:` that cannot be read (`open PATH: why`).
    #[error("{0}")]
    FileUnreadable(String),
}

/// One control-API call of a deploy or removal, with the line Docker prints for it.
#[derive(Debug, Clone, PartialEq)]
pub enum StackStep {
    CreateNetwork(StackNetwork),
    CreateService(ServiceSpec),
    /// Replace the spec of service `id`, read at `version`.
    UpdateService {
        id: String,
        version: u64,
        spec: ServiceSpec,
    },
    RemoveService {
        id: String,
        name: String,
    },
    RemoveNetwork {
        id: String,
        name: String,
    },
    CreateFileObject {
        kind: FileKind,
        spec: SecretSpec,
        data: FileData,
    },
    RemoveFileObject {
        kind: FileKind,
        id: String,
        name: String,
    },
}

impl StackStep {
    /// What Docker prints before the call (`Creating service voting_vote`).
    pub fn message(&self) -> String {
        match self {
            StackStep::CreateNetwork(n) => format!("Creating network {}", n.name),
            StackStep::CreateService(s) => format!("Creating service {}", s.name),
            StackStep::UpdateService { id, spec, .. } => format!("Updating service {} (id: {id})", spec.name),
            StackStep::RemoveService { name, .. } => format!("Removing service {name}"),
            StackStep::RemoveNetwork { name, .. } => format!("Removing network {name}"),
            StackStep::CreateFileObject { kind, spec, .. } => format!("Creating {} {}", kind.as_str(), spec.name),
            StackStep::RemoveFileObject { kind, name, .. } => format!("Removing {} {name}", kind.as_str()),
        }
    }

    pub fn request(&self) -> ControlRequest {
        match self {
            StackStep::CreateNetwork(n) => ControlRequest::NetworkCreate {
                name: n.name.clone(),
                driver: n.driver.clone(),
                attachable: n.attachable,
                labels: n.labels.clone(),
                subnet: n.subnet.clone(),
                ingress: false,
            },
            StackStep::CreateService(spec) => ControlRequest::ServiceCreate { spec: spec.clone() },
            StackStep::UpdateService { id, version, spec } => {
                ControlRequest::ServiceUpdate { service: id.clone(), version: *version, spec: spec.clone() }
            }
            StackStep::RemoveService { id, .. } => ControlRequest::ServiceRemove { service: id.clone() },
            StackStep::RemoveNetwork { id, .. } => ControlRequest::NetworkRemove { network: id.clone() },
            StackStep::CreateFileObject { kind: FileKind::Secret, spec, data } => {
                ControlRequest::SecretCreate { spec: spec.clone(), data: data.clone() }
            }
            StackStep::CreateFileObject { kind: FileKind::Config, spec, data } => {
                ControlRequest::ConfigCreate { spec: spec.clone(), data: data.clone() }
            }
            StackStep::RemoveFileObject { kind: FileKind::Secret, id, .. } => {
                ControlRequest::SecretRemove { secret: id.clone() }
            }
            StackStep::RemoveFileObject { kind: FileKind::Config, id, .. } => {
                ControlRequest::ConfigRemove { config: id.clone() }
            }
        }
    }
}

/// Whether `labels` put an object in `stack`.
/// A compose bind source taken from `dir` (the compose file's directory) when it is relative
/// (`.`, `./x`, `../x`), as Docker's loader resolves it; `None` for any other source. Path text
/// only: nothing is read.
pub fn resolve_bind_source(dir: &std::path::Path, source: &str) -> Option<String> {
    let relative = source == "." || source.starts_with("./") || source.starts_with("../");
    if !relative {
        return None;
    }
    let mut path = dir.to_path_buf();
    for part in source.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                path.pop();
            }
            other => path.push(other),
        }
    }
    Some(path.to_string_lossy().into_owned())
}

pub fn in_stack(labels: &Labels, stack: &str) -> bool {
    labels.get(NAMESPACE_LABEL).is_some_and(|ns| ns == stack)
}

/// The steps that bring the cluster to `plan`: create missing networks (an external one must
/// exist), create new services, update existing ones (keeping their forced-update counter, so an
/// unchanged service stays put), and with `prune` remove the stack's services the file no longer
/// names — as `docker stack deploy [--prune]`.
pub fn deploy_steps(
    plan: &StackPlan,
    networks: &[Network],
    services: &[Service],
    prune: bool,
) -> Result<Vec<StackStep>, StackError> {
    let mut steps = Vec::new();
    for network in &plan.networks {
        if networks.iter().any(|n| n.name == network.name) {
            continue;
        }
        if network.external {
            return Err(StackError::ExternalNetworkMissing(network.name.clone()));
        }
        steps.push(StackStep::CreateNetwork(network.clone()));
    }
    if prune {
        let mut stale: Vec<&Service> = services
            .iter()
            .filter(|s| in_stack(&s.spec.labels, &plan.stack) && !plan.services.iter().any(|p| p.name == s.spec.name))
            .collect();
        stale.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        steps.extend(
            stale.into_iter().map(|s| StackStep::RemoveService { id: s.id.clone(), name: s.spec.name.clone() }),
        );
    }
    for spec in &plan.services {
        match services.iter().find(|s| s.spec.name == spec.name) {
            Some(current) => {
                let mut spec = spec.clone();
                spec.task.force_update = current.spec.task.force_update;
                steps.push(StackStep::UpdateService { id: current.id.clone(), version: current.meta.version, spec });
            }
            None => steps.push(StackStep::CreateService(spec.clone())),
        }
    }
    Ok(steps)
}

/// The steps of `docker stack rm <stack>`: its services, then its networks, each by name.
/// Empty when nothing carries the stack's label (Docker then says `Nothing found in stack`).
pub fn remove_steps(stack: &str, networks: &[Network], services: &[Service]) -> Vec<StackStep> {
    let mut doomed: Vec<&Service> = services.iter().filter(|s| in_stack(&s.spec.labels, stack)).collect();
    doomed.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let mut nets: Vec<&Network> = networks.iter().filter(|n| in_stack(&n.labels, stack)).collect();
    nets.sort_by(|a, b| a.name.cmp(&b.name));
    doomed
        .into_iter()
        .map(|s| StackStep::RemoveService { id: s.id.clone(), name: s.spec.name.clone() })
        .chain(nets.into_iter().map(|n| StackStep::RemoveNetwork { id: n.id.clone(), name: n.name.clone() }))
        .collect()
}

/// The secrets and configs a deploy creates first (as docker/cli does, before networks and
/// services): every one the file defines that the cluster lacks, its value read by `read` (the
/// `file:` as written). An external one must exist; a service may not name one that neither exists
/// nor is about to be created (`service web: secret not found: X`, checked before anything is made).
/// One that exists already is kept as it is.
pub fn file_object_steps(
    plan: &StackPlan,
    secrets: &[Secret],
    configs: &[Config],
    read: &dyn Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<Vec<StackStep>, StackError> {
    let mut steps = Vec::new();
    for (kind, objects, existing) in [
        (FileKind::Secret, &plan.secrets, secrets.iter().map(|s| s.spec.name.as_str()).collect::<Vec<_>>()),
        (FileKind::Config, &plan.configs, configs.iter().map(|c| c.spec.name.as_str()).collect()),
    ] {
        let available = |name: &str| existing.contains(&name) || objects.iter().any(|o| o.name == name && !o.external);
        let mut by_name: Vec<&ServiceSpec> = plan.services.iter().collect();
        by_name.sort_by(|a, b| a.name.cmp(&b.name));
        for service in by_name {
            let refs = match kind {
                FileKind::Secret => &service.task.secrets,
                FileKind::Config => &service.task.configs,
            };
            if let Some(missing) = refs.iter().find(|r| !available(&r.name)) {
                let short = service.name.strip_prefix(&format!("{}_", plan.stack)).unwrap_or(&service.name);
                return Err(StackError::FileObjectMissing {
                    service: short.to_string(),
                    kind,
                    name: missing.name.clone(),
                });
            }
        }
        for object in objects.iter().filter(|o| !o.external && !existing.contains(&o.name.as_str())) {
            let Some(file) = object.file.as_deref() else {
                return Err(StackError::FileUnreadable(format!(
                    "{} {}: file is required (or declare it external)",
                    kind.as_str(),
                    object.name
                )));
            };
            let data = read(file).map_err(StackError::FileUnreadable)?;
            let spec = SecretSpec {
                name: object.name.clone(),
                labels: object.labels.clone(),
                driver: String::new(),
                templating: object.template_driver.clone(),
            };
            steps.push(StackStep::CreateFileObject { kind, spec, data: FileData(crate::secrets::encode(&data)) });
        }
    }
    Ok(steps)
}

/// `docker stack rm` with secrets and configs: the stack's services, secrets, configs, then networks.
pub fn remove_steps_with_files(
    stack: &str,
    networks: &[Network],
    services: &[Service],
    secrets: &[Secret],
    configs: &[Config],
) -> Vec<StackStep> {
    let mut steps = remove_steps(stack, networks, services);
    let at = steps.iter().position(|s| matches!(s, StackStep::RemoveNetwork { .. })).unwrap_or(steps.len());
    let mut files: Vec<StackStep> = Vec::new();
    let mut doomed: Vec<&Secret> = secrets.iter().filter(|s| in_stack(&s.spec.labels, stack)).collect();
    doomed.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    files.extend(doomed.into_iter().map(|s| StackStep::RemoveFileObject {
        kind: FileKind::Secret,
        id: s.id.clone(),
        name: s.spec.name.clone(),
    }));
    let mut doomed: Vec<&Config> = configs.iter().filter(|c| in_stack(&c.spec.labels, stack)).collect();
    doomed.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    files.extend(doomed.into_iter().map(|c| StackStep::RemoveFileObject {
        kind: FileKind::Config,
        id: c.id.clone(),
        name: c.spec.name.clone(),
    }));
    steps.splice(at..at, files);
    steps
}

/// `stack ls`: each stack (namespace label of services) with its number of services, by name.
pub fn stacks<'a>(services: impl IntoIterator<Item = &'a Service>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for service in services {
        if let Some(stack) = service.spec.labels.get(NAMESPACE_LABEL) {
            *counts.entry(stack.clone()).or_default() += 1;
        }
    }
    counts
}
