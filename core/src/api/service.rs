//! Services: the user's desired state, with Swarm's defaults (swarmkit `api/defaults/service.go`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Labels, Meta};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    Replicated {
        replicas: u64,
    },
    Global,
    /// `--mode replicated-job`: `total_completions` tasks must exit 0, at most `max_concurrent` at a
    /// time (Swarm's `ReplicatedJob`; `--replicas` is the total, `--max-concurrent` the concurrency).
    #[serde(rename = "replicated_job")]
    ReplicatedJob {
        max_concurrent: u64,
        total_completions: u64,
    },
    /// `--mode global-job`: one task to completion on every eligible node (Swarm's `GlobalJob`).
    #[serde(rename = "global_job")]
    GlobalJob,
}

impl ServiceMode {
    /// A job: tasks run to completion, are desired `complete` and are not restarted on success.
    pub fn is_job(&self) -> bool {
        matches!(self, ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob)
    }

    /// One task per node (global service or global job).
    pub fn is_global(&self) -> bool {
        matches!(self, ServiceMode::Global | ServiceMode::GlobalJob)
    }
}

/// Where a job stands (Swarm's `JobStatus`): every `service update` of a job starts a new
/// iteration, whose tasks run again from scratch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The service's `spec_version` the current iteration runs (tasks of other versions are old).
    pub iteration: u64,
    /// When the current iteration started (the leader's clock): a global job runs on the nodes
    /// that existed then.
    pub last_execution_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    #[default]
    Any,
}

/// How the restart delay grows (`--restart-backoff`; a shoal addition, Swarm has only `fixed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RestartBackoff {
    /// Swarm's: every restart waits exactly the delay.
    #[default]
    Fixed,
    /// A task that ran healthily (at least 10 s) restarts at once; a crash loop waits the delay, then
    /// twice that, four times…, capped at 5 minutes (or the delay, if longer). See
    /// `orchestrator::restart`.
    Exponential,
}

/// How a task's container runs beyond its command: Docker's capabilities, sysctls, ulimits, init,
/// stop signal, read-only root, DNS settings and extra hosts (`service create --cap-add …`, compose
/// `cap_add`, …, the Engine API's `ContainerSpec` fields of the same names). Passed to the runtime as
/// given: the Docker executor sets them on the container; the process executor uses the stop signal
/// and refuses the rest (see `real/src/process.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerOptions {
    /// Kernel capabilities to add / drop (`NET_ADMIN`, `CAP_SYS_TIME`, `ALL`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Namespaced kernel parameters (`net.core.somaxconn` → `1024`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// Resource limits (`nofile` soft 1024, hard 2048).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// Run an init inside the container that forwards signals and reaps processes; `None` = the
    /// daemon's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// The signal that stops the container (`SIGTERM` when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    /// Mount the container's root file system read-only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Name servers, search domains and resolver options for the container.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
    /// Extra `/etc/hosts` lines as Docker's `--host` takes them: `host:ip`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// `--log-driver`/`--log-opt`, compose `logging` (Swarm's `TaskSpec.LogDriver`): where the
    /// container's output goes; `None` = the engine's default driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<LogDriver>,
}

/// A container log driver and its options (`json-file` with `max-size=1m`, `syslog`, `none`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogDriver {
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

impl ContainerOptions {
    pub fn is_default(&self) -> bool {
        *self == ContainerOptions::default()
    }
}

/// One resource limit (`ulimit`): its name (`nofile`, `nproc`, …) and soft and hard values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

impl Ulimit {
    /// Docker's `--ulimit` syntax: `name=soft[:hard]` (hard = soft when omitted).
    pub fn parse(text: &str) -> Result<Ulimit, String> {
        let bad =
            |why: &str| format!("invalid ulimit {text:?}: {why} (expected name=soft[:hard], e.g. nofile=1024:2048)");
        let (name, values) = text.split_once('=').ok_or_else(|| bad("no ="))?;
        if name.trim().is_empty() {
            return Err(bad("no name"));
        }
        let number = |v: &str| v.trim().parse::<i64>().map_err(|_| bad(&format!("{v:?} is not a number")));
        let (soft, hard) = match values.split_once(':') {
            Some((soft, hard)) => (number(soft)?, number(hard)?),
            None => (number(values)?, number(values)?),
        };
        if soft > hard {
            return Err(bad("the soft limit is above the hard one"));
        }
        Ok(Ulimit { name: name.trim().to_string(), soft, hard })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    pub delay_ms: u64,
    /// 0 = unlimited.
    pub max_attempts: u64,
    /// 0 = attempts counted over all time.
    pub window_ms: u64,
    /// Fixed (Swarm's) unless asked for; specs stored before it existed read as fixed.
    #[serde(default)]
    pub backoff: RestartBackoff,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay_ms: 5_000,
            max_attempts: 0,
            window_ms: 0,
            backoff: RestartBackoff::Fixed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    #[default]
    Pause,
    Continue,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    #[default]
    StopFirst,
    StartFirst,
}

/// `--update-*` and `--rollback-*` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks updated at once; 0 = all at once.
    pub parallelism: u64,
    pub delay_ms: u64,
    pub failure_action: FailureAction,
    pub monitor_ms: u64,
    pub max_failure_ratio: f64,
    pub order: UpdateOrder,
}

impl Eq for UpdateConfig {}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay_ms: 0,
            failure_action: FailureAction::Pause,
            monitor_ms: 5_000,
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
        }
    }
}

/// A resource amount: CPUs in nano-CPUs (1e9 = one CPU) and memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAmount {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRequirements {
    pub limits: ResourceAmount,
    pub reservations: ResourceAmount,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// `node.labels.zone==east`, `node.role!=manager`, … as Swarm writes them.
    pub constraints: Vec<String>,
    /// `spread=node.labels.zone` preferences, applied in order.
    pub preferences: Vec<String>,
    /// 0 = unlimited.
    pub max_replicas_per_node: u64,
    /// `os/arch` pairs the image runs on; empty = any.
    pub platforms: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    #[default]
    Ingress,
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortConfig {
    pub protocol: String,
    pub target_port: u16,
    /// 0 = assigned from the dynamic range 30000–32767.
    pub published_port: u16,
    pub publish_mode: PublishMode,
}

/// How a service is reached by name inside its networks (`--endpoint-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// The name resolves to one virtual IP that balances over the ready tasks.
    #[default]
    Vip,
    /// The name resolves to the ready tasks' addresses (DNS round robin).
    Dnsrr,
}

impl EndpointMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        }
    }
}

/// What each task of a service runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub resources: ResourceRequirements,
    pub restart_policy: RestartPolicy,
    pub placement: Placement,
    pub stop_grace_period_ms: u64,
    pub networks: Vec<String>,
    /// Bumped by `service update --force` to redeploy without a spec change.
    pub force_update: u64,
    /// `--workdir`: the working directory of the task's process; empty = the image's.
    #[serde(default)]
    pub workdir: String,
    /// `--user`: `user`, `uid` or `uid:gid` the task runs as; empty = the image's.
    #[serde(default)]
    pub user: String,
    /// `--with-registry-auth`: the client's credentials for the image's registry, which the nodes
    /// pull with (Swarm's `ContainerSpec.PullOptions.RegistryAuth`). Kept in the store and sent to
    /// the nodes that run the tasks; never shown: the control API strips it from every answer
    /// ([`TaskSpec::redacted`]) and `Debug` hides the secrets. In an update request `None` keeps the
    /// current credentials (as Docker's does when the flag is not given) and an empty value clears them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_auth: Option<Box<RegistryAuth>>,
    /// `--secret`: secrets given to each task as files under `/run/secrets/` (names only; the
    /// values travel to the nodes that run the tasks, see `crate::secrets`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<super::FileReference>,
    /// `--config`: configs given to each task as files at their targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<super::FileReference>,
    /// `--hostname`: the container's hostname; empty = the runtime's default. A template
    /// (`{{.Node.Hostname}}-{{.Task.Slot}}`) expanded on the node, as env and labels are.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// `--container-label`: labels on the task's containers (the service's own labels are not).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub container_labels: Labels,
    /// Capabilities, sysctls, ulimits, init, stop signal, read-only root, DNS, extra hosts.
    #[serde(default, skip_serializing_if = "ContainerOptions::is_default")]
    pub options: ContainerOptions,
    /// `--mount`: volumes, bind mounts and tmpfs in the task's container (Swarm's
    /// `ContainerSpec.Mounts`), in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// `--health-*`, `--no-healthcheck`, compose `healthcheck`: the container's health check.
    /// `None` = the image's own HEALTHCHECK, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
}

/// `--mount type=…`: what is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A host path (`source`) as it is.
    Bind,
    /// A named volume (`source`; empty = an anonymous one), created on the node that runs the task.
    #[default]
    Volume,
    /// A tmpfs (no source).
    Tmpfs,
}

impl MountType {
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Volume => "volume",
            MountType::Tmpfs => "tmpfs",
        }
    }
}

/// One mount of a task's container (Docker's `mount.Mount`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountType,
    /// The host path (bind), the volume's name (volume; empty = anonymous), nothing (tmpfs).
    #[serde(default)]
    pub source: String,
    /// Where it appears in the container (absolute).
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
    /// `volume-*` options (volume mounts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeOptions>,
    /// `tmpfs-*` options (tmpfs mounts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsOptions>,
    /// `bind-propagation` (bind mounts only; empty = Docker's default, rprivate).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind_propagation: String,
}

/// How a named volume is made when the node creating the container does not have it yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeOptions {
    /// `volume-nocopy`: do not fill a new volume from the image's content at the target.
    #[serde(default)]
    pub no_copy: bool,
    /// `volume-label` (and the stack's `com.docker.stack.namespace`).
    #[serde(default)]
    pub labels: Labels,
    /// `volume-driver`; empty = `local`.
    #[serde(default)]
    pub driver: String,
    /// `volume-opt`: the driver's options.
    #[serde(default)]
    pub driver_options: std::collections::BTreeMap<String, String>,
}

/// `tmpfs-size` / `tmpfs-mode`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsOptions {
    /// Bytes; 0 = unlimited.
    #[serde(default)]
    pub size_bytes: u64,
    /// File mode of the tmpfs root (octal when written); `None` = Docker's 1777.
    #[serde(default)]
    pub mode: Option<u32>,
}

impl Mount {
    /// What Docker's daemon refuses in a mount, in its words (`invalid mount config for type "…": …`),
    /// apart from the host's state (a bind source that does not exist is the node's to find).
    pub fn config_error(&self) -> Option<String> {
        let why = |reason: String| Some(format!("invalid mount config for type \"{}\": {reason}", self.kind.as_str()));
        if self.target.is_empty() {
            return why("field Target must not be empty".into());
        }
        if !self.target.starts_with('/') {
            return why(format!("invalid mount path: '{}' mount path must be absolute", self.target));
        }
        match self.kind {
            MountType::Bind if self.source.is_empty() => why("field Source must not be empty".into()),
            MountType::Bind if !self.source.starts_with('/') => {
                why(format!("invalid mount path: '{}' mount path must be absolute", self.source))
            }
            MountType::Tmpfs if !self.source.is_empty() => why("field Source must not be specified".into()),
            _ => None,
        }
    }
}

/// A container's health check, as Docker's `HealthConfig` holds it. A field left 0 (or `test`
/// left empty) is inherited from the image's HEALTHCHECK, else Docker's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// `[]` = the image's command; `["NONE"]` = no health check at all; `["CMD", arg…]` = run
    /// the command directly; `["CMD-SHELL", line]` = run the line with the image's shell.
    #[serde(default)]
    pub test: Vec<String>,
    /// Time between checks (the first runs one interval after the start); 0 = 30s.
    #[serde(default)]
    pub interval_ms: u64,
    /// A check that runs longer fails; 0 = 30s.
    #[serde(default)]
    pub timeout_ms: u64,
    /// Failures in a row that make the container unhealthy; 0 = 3.
    #[serde(default)]
    pub retries: u64,
    /// Failures during this time after the start do not count (a success counts); 0 = none.
    #[serde(default)]
    pub start_period_ms: u64,
}

impl HealthConfig {
    /// Docker's defaults for fields left 0.
    pub const DEFAULT_INTERVAL_MS: u64 = 30_000;
    pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
    pub const DEFAULT_RETRIES: u64 = 3;

    /// `--no-healthcheck`: the image's HEALTHCHECK is switched off too.
    pub fn none() -> HealthConfig {
        HealthConfig { test: vec!["NONE".into()], ..HealthConfig::default() }
    }

    /// The check is switched off (`NONE`).
    pub fn is_disabled(&self) -> bool {
        self.test.first().map(String::as_str) == Some("NONE")
    }

    pub fn interval_or_default(&self) -> u64 {
        if self.interval_ms == 0 {
            Self::DEFAULT_INTERVAL_MS
        } else {
            self.interval_ms
        }
    }

    pub fn retries_or_default(&self) -> u64 {
        if self.retries == 0 {
            Self::DEFAULT_RETRIES
        } else {
            self.retries
        }
    }
}

impl TaskSpec {
    /// Do tasks of `self` and `other` run the same thing? Everything but the registry credentials
    /// counts: new credentials alone do not replace running tasks (as Swarm's `IsTaskDirty` ignores
    /// `PullOptions`); tasks made from now on pull with them.
    pub fn same_workload(&self, other: &TaskSpec) -> bool {
        if self.registry_auth == other.registry_auth {
            return self == other;
        }
        self.redacted() == other.redacted()
    }

    /// This spec without its registry credentials, for any answer that leaves the cluster.
    pub fn redacted(&self) -> TaskSpec {
        TaskSpec { registry_auth: None, ..self.clone() }
    }
}

/// Credentials for one registry, as Docker's `AuthConfig` carries them (`username`/`password`, or an
/// `identitytoken` from an OAuth login), with the registry they are for.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAuth {
    /// The registry host the credentials were found for (`127.0.0.1:5000`, `https://index.docker.io/v1/`).
    pub server_address: String,
    pub username: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identity_token: String,
}

impl RegistryAuth {
    /// No credentials at all (an anonymous pull).
    pub fn is_empty(&self) -> bool {
        self.username.is_empty() && self.password.is_empty() && self.identity_token.is_empty()
    }
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secrets never reach a log line, whatever prints the spec.
        f.debug_struct("RegistryAuth")
            .field("server_address", &self.server_address)
            .field("username", &self.username)
            .field("password", &if self.password.is_empty() { "" } else { "<redacted>" })
            .field("identity_token", &if self.identity_token.is_empty() { "" } else { "<redacted>" })
            .finish()
    }
}

impl Default for TaskSpec {
    fn default() -> Self {
        TaskSpec {
            image: String::new(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            resources: ResourceRequirements::default(),
            restart_policy: RestartPolicy::default(),
            placement: Placement::default(),
            stop_grace_period_ms: 10_000,
            networks: Vec::new(),
            force_update: 0,
            workdir: String::new(),
            user: String::new(),
            registry_auth: None,
            secrets: Vec::new(),
            configs: Vec::new(),
            hostname: String::new(),
            container_labels: Labels::new(),
            options: ContainerOptions::default(),
            mounts: Vec::new(),
            healthcheck: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub labels: Labels,
    pub task: TaskSpec,
    pub mode: ServiceMode,
    pub update_config: UpdateConfig,
    pub rollback_config: UpdateConfig,
    pub ports: Vec<PortConfig>,
    /// Shoal's addition (off by default, as Swarm has none): move tasks to even out spread when a
    /// node joins or comes back, bounded by the update parallelism.
    pub rebalance: bool,
    /// `--endpoint-mode`: vip (the default) or dnsrr.
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
    /// More names the service answers to on one of its networks (network name → names): compose's
    /// `networks.<net>.aliases`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub network_aliases: std::collections::BTreeMap<String, Vec<String>>,
    /// Shoal's addition (compose `depends_on`, which Swarm ignores): services (by name) that must
    /// have a running task before this one's tasks are scheduled. A name no service has is ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

impl ServiceSpec {
    /// A spec with Swarm's defaults: replicated, one replica.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        ServiceSpec {
            name: name.into(),
            labels: Labels::new(),
            task: TaskSpec { image: image.into(), ..TaskSpec::default() },
            mode: ServiceMode::Replicated { replicas: 1 },
            update_config: UpdateConfig::default(),
            rollback_config: UpdateConfig::default(),
            ports: Vec::new(),
            rebalance: false,
            endpoint_mode: EndpointMode::Vip,
            network_aliases: Default::default(),
            depends_on: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub started_at_ms: u64,
    pub completed_at_ms: u64,
    pub message: String,
    /// The `spec_version` this update (or rollback) drives the service's tasks to; an update status
    /// for an older version is stale and a new update starts.
    #[serde(default)]
    pub spec_version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub meta: Meta,
    pub spec: ServiceSpec,
    /// The spec before the last update, the target of `service rollback`.
    pub previous_spec: Option<ServiceSpec>,
    /// Bumped on every spec change; tasks record the one they were made from.
    pub spec_version: u64,
    pub update_status: Option<UpdateStatus>,
    /// Published ports after allocation (dynamic ports filled in).
    pub endpoint_ports: Vec<PortConfig>,
    /// Jobs only: the current iteration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_status: Option<JobStatus>,
}

impl Service {
    /// This service without registry credentials in its spec or previous spec, for any answer that
    /// leaves the cluster (`service inspect`, `service ls`, …), as Docker keeps them out of the spec
    /// it shows.
    pub fn redacted(&self) -> Service {
        let strip = |spec: &ServiceSpec| ServiceSpec { task: spec.task.redacted(), ..spec.clone() };
        Service { spec: strip(&self.spec), previous_spec: self.previous_spec.as_ref().map(strip), ..self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(password: &str) -> TaskSpec {
        let auth = RegistryAuth {
            server_address: "registry.example:5000".into(),
            username: "alice".into(),
            password: password.into(),
            identity_token: "token-xyz".into(),
        };
        TaskSpec {
            image: "registry.example:5000/app:1".into(),
            registry_auth: Some(Box::new(auth)),
            ..TaskSpec::default()
        }
    }

    #[test]
    fn credentials_alone_do_not_change_the_workload() {
        let (a, b) = (with_auth("one"), with_auth("two"));
        assert!(a.same_workload(&b) && a.same_workload(&a.redacted()));
        assert_ne!(a, b, "the specs still differ, so the store keeps the new credentials");
        let other_image = TaskSpec { image: "registry.example:5000/app:2".into(), ..a.clone() };
        assert!(!a.same_workload(&other_image));
    }

    #[test]
    fn credentials_are_never_printed_and_redacted_from_answers() {
        let spec = with_auth("s3cret-pw");
        let shown = format!("{spec:?}");
        assert!(!shown.contains("s3cret-pw") && !shown.contains("token-xyz"), "{shown}");
        assert!(shown.contains("alice"), "the user name is not a secret: {shown}");
        let mut service_spec = ServiceSpec::new("app", "x");
        service_spec.task = spec.clone();
        let service = Service {
            id: "s".into(),
            meta: Meta::default(),
            spec: service_spec.clone(),
            previous_spec: Some(service_spec),
            spec_version: 2,
            update_status: None,
            endpoint_ports: Vec::new(),
            job_status: None,
        };
        let redacted = service.redacted();
        assert_eq!(redacted.spec.task.registry_auth, None);
        assert_eq!(redacted.previous_spec.and_then(|p| p.task.registry_auth), None);
        let json = serde_json::to_string(&service.spec.task.redacted()).unwrap();
        assert!(!json.contains("registry_auth"), "no field at all once redacted: {json}");
        let stored: TaskSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(stored, spec, "the store keeps them");
    }
}
