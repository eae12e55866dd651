//! `run:` steps: the words a user types after `docker`, parsed into the control requests the CLI
//! would send. Only the subset scenarios need; an unknown word or flag is a parse error naming what
//! was expected, so a typo in a scenario never silently does something else.
//!
//! `service update` is read-modify-write (the CLI inspects the service, edits the spec and sends it
//! back with the version it read), so it stays a [`Command::ServiceUpdate`] until run time.

use std::time::Duration;

use shoal_core::api::{
    parse_file_reference, Availability, EndpointMode, FailureAction, FileKind, FileReference, HealthConfig, Labels,
    NodeRole, PortConfig, PublishMode, RestartBackoff, RestartCondition, SecretSpec, ServiceMode, ServiceSpec,
    UpdateOrder,
};
use shoal_core::control::ControlRequest;

use super::parse::parse_duration;

/// What one `run:` step does. Parsed once per step and moved little: a request's size (a whole
/// service spec) costs nothing worth a box.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// One request, sent as is.
    Request(ControlRequest),
    /// Several requests in order (`service scale a=1 b=2`).
    Sequence(Vec<ControlRequest>),
    /// `service update`: inspect, apply `changes`, send back with the version read.
    ServiceUpdate { service: String, changes: SpecChanges },
    /// `stack …`: like docker/cli, several requests decided from what the cluster holds.
    Stack(StackCommand),
    /// `secret create NAME FILE` / `config create NAME FILE`: the value is read at run time from
    /// `file`, relative to the scenario file.
    CreateFileObject { kind: FileKind, spec: SecretSpec, file: String },
    /// `A & B`: single requests sent at once, as commands started in the background of a shell
    /// (`node demote m2 & node promote m2`); the step fails if one of them does.
    Concurrent(Vec<ControlRequest>),
    /// `swarm unlock [KEY]` (to the step's `on:` node): with no KEY, the swarm's current unlock key,
    /// asked of the managers first — a script's stand-in for the key its user typed.
    Unlock { key: Option<String> },
}

/// The `stack` subcommands (the requests come from [`shoal_core::stack`] at run time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackCommand {
    /// `stack deploy -c FILE [--prune] STACK`; `file` is relative to the scenario file.
    Deploy { stack: String, file: String, prune: bool },
    /// `stack rm STACK…`
    Rm(Vec<String>),
    /// `stack ls`: answers with the services that belong to a stack.
    Ls,
    /// `stack services STACK`
    Services(String),
    /// `stack ps STACK`
    Ps(String),
}

/// The edits `service update` flags make to a spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecChanges {
    pub image: Option<String>,
    pub force: bool,
    pub replicas: Option<u64>,
    pub args: Option<Vec<String>>,
    pub env_add: Vec<String>,
    pub env_rm: Vec<String>,
    pub constraint_add: Vec<String>,
    pub constraint_rm: Vec<String>,
    pub label_add: Vec<(String, String)>,
    pub publish_add: Vec<PortConfig>,
    /// `--publish-rm TARGET[/PROTO]`
    pub publish_rm: Vec<(u16, String)>,
    pub network_add: Vec<String>,
    pub network_rm: Vec<String>,
    pub common: CommonFlags,
    /// `--secret-add`/`--secret-rm`/`--config-add`/`--config-rm`.
    pub secret_add: Vec<FileReference>,
    pub secret_rm: Vec<String>,
    pub config_add: Vec<FileReference>,
    pub config_rm: Vec<String>,
}

/// Flags `service create` and `service update` share.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommonFlags {
    pub update_parallelism: Option<u64>,
    pub update_delay: Option<Duration>,
    pub update_failure_action: Option<FailureAction>,
    pub update_monitor: Option<Duration>,
    pub update_max_failure_ratio: Option<f64>,
    pub update_order: Option<UpdateOrder>,
    pub rollback_parallelism: Option<u64>,
    pub rollback_order: Option<UpdateOrder>,
    pub rollback_failure_action: Option<FailureAction>,
    pub restart_condition: Option<RestartCondition>,
    pub restart_delay: Option<Duration>,
    pub restart_max_attempts: Option<u64>,
    pub restart_window: Option<Duration>,
    pub restart_backoff: Option<RestartBackoff>,
    pub stop_grace_period: Option<Duration>,
    pub max_replicas_per_node: Option<u64>,
    pub endpoint_mode: Option<EndpointMode>,
    // Health checks: `--health-cmd|-interval|-timeout|-retries|-start-period`, `--no-healthcheck`.
    pub health_cmd: Option<String>,
    pub health_interval: Option<Duration>,
    pub health_timeout: Option<Duration>,
    pub health_retries: Option<u64>,
    pub health_start_period: Option<Duration>,
    pub no_healthcheck: bool,
}

impl CommonFlags {
    fn apply(&self, spec: &mut ServiceSpec) {
        let ms = |d: Duration| d.as_millis() as u64;
        if let Some(v) = self.update_parallelism {
            spec.update_config.parallelism = v;
        }
        if let Some(v) = self.update_delay {
            spec.update_config.delay_ms = ms(v);
        }
        if let Some(v) = self.update_failure_action {
            spec.update_config.failure_action = v;
        }
        if let Some(v) = self.update_monitor {
            spec.update_config.monitor_ms = ms(v);
        }
        if let Some(v) = self.update_max_failure_ratio {
            spec.update_config.max_failure_ratio = v;
        }
        if let Some(v) = self.update_order {
            spec.update_config.order = v;
        }
        if let Some(v) = self.rollback_parallelism {
            spec.rollback_config.parallelism = v;
        }
        if let Some(v) = self.rollback_order {
            spec.rollback_config.order = v;
        }
        if let Some(v) = self.rollback_failure_action {
            spec.rollback_config.failure_action = v;
        }
        if let Some(v) = self.restart_condition {
            spec.task.restart_policy.condition = v;
        }
        if let Some(v) = self.restart_delay {
            spec.task.restart_policy.delay_ms = ms(v);
        }
        if let Some(v) = self.restart_max_attempts {
            spec.task.restart_policy.max_attempts = v;
        }
        if let Some(v) = self.restart_window {
            spec.task.restart_policy.window_ms = ms(v);
        }
        if let Some(v) = self.restart_backoff {
            spec.task.restart_policy.backoff = v;
        }
        if let Some(v) = self.stop_grace_period {
            spec.task.stop_grace_period_ms = ms(v);
        }
        if let Some(v) = self.max_replicas_per_node {
            spec.task.placement.max_replicas_per_node = v;
        }
        if let Some(v) = self.endpoint_mode {
            spec.endpoint_mode = v;
        }
        self.apply_health(spec);
    }

    fn any_health(&self) -> bool {
        self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
    }

    /// As docker/cli: the given fields change the current check (none yet on create); an empty
    /// command goes back to the image's; `--no-healthcheck` switches every check off.
    fn apply_health(&self, spec: &mut ServiceSpec) {
        let ms = |d: Duration| d.as_millis() as u64;
        if self.no_healthcheck {
            spec.task.healthcheck = Some(HealthConfig::none());
            return;
        }
        if !self.any_health() {
            return;
        }
        let mut check = spec.task.healthcheck.clone().unwrap_or_default();
        if check.is_disabled() {
            check.test.clear();
        }
        if let Some(v) = self.health_interval {
            check.interval_ms = ms(v);
        }
        if let Some(v) = self.health_timeout {
            check.timeout_ms = ms(v);
        }
        if let Some(v) = self.health_start_period {
            check.start_period_ms = ms(v);
        }
        if let Some(v) = self.health_retries {
            check.retries = v;
        }
        if let Some(cmd) = &self.health_cmd {
            check.test = if cmd.is_empty() { Vec::new() } else { vec!["CMD-SHELL".into(), cmd.clone()] };
        }
        spec.task.healthcheck = Some(check);
    }

    /// Take one shared flag (and its value) off `words`; `Ok(false)` if `flag` is not one of them.
    fn take(&mut self, flag: &str, words: &mut Words) -> Result<bool, String> {
        match flag {
            "--update-parallelism" => self.update_parallelism = Some(words.number(flag)?),
            "--update-delay" => self.update_delay = Some(words.duration(flag)?),
            "--update-failure-action" => self.update_failure_action = Some(failure_action(&words.value(flag)?)?),
            "--update-monitor" => self.update_monitor = Some(words.duration(flag)?),
            "--update-max-failure-ratio" => {
                let v = words.value(flag)?;
                self.update_max_failure_ratio =
                    Some(v.parse().map_err(|_| format!("{flag} wants a number between 0 and 1, not {v:?}"))?);
            }
            "--update-order" => self.update_order = Some(update_order(&words.value(flag)?)?),
            "--rollback-parallelism" => self.rollback_parallelism = Some(words.number(flag)?),
            "--rollback-order" => self.rollback_order = Some(update_order(&words.value(flag)?)?),
            "--rollback-failure-action" => self.rollback_failure_action = Some(failure_action(&words.value(flag)?)?),
            "--restart-condition" => self.restart_condition = Some(restart_condition(&words.value(flag)?)?),
            "--restart-delay" => self.restart_delay = Some(words.duration(flag)?),
            "--restart-max-attempts" => self.restart_max_attempts = Some(words.number(flag)?),
            "--restart-window" => self.restart_window = Some(words.duration(flag)?),
            "--restart-backoff" => self.restart_backoff = Some(restart_backoff(&words.value(flag)?)?),
            "--stop-grace-period" => self.stop_grace_period = Some(words.duration(flag)?),
            "--replicas-max-per-node" => self.max_replicas_per_node = Some(words.number(flag)?),
            "--health-cmd" => self.health_cmd = Some(words.value(flag)?),
            "--health-interval" => self.health_interval = Some(words.duration(flag)?),
            "--health-timeout" => self.health_timeout = Some(words.duration(flag)?),
            "--health-retries" => self.health_retries = Some(words.number(flag)?),
            "--health-start-period" => self.health_start_period = Some(words.duration(flag)?),
            "--no-healthcheck" => self.no_healthcheck = true,
            "--endpoint-mode" => {
                self.endpoint_mode = Some(match words.value(flag)?.as_str() {
                    "vip" => EndpointMode::Vip,
                    "dnsrr" => EndpointMode::Dnsrr,
                    other => return Err(format!("invalid endpoint mode {other:?}: expected vip, dnsrr")),
                })
            }
            _ => return Ok(false),
        }
        if self.no_healthcheck && self.any_health() {
            return Err("--no-healthcheck conflicts with --health-* options".into());
        }
        Ok(true)
    }
}

impl SpecChanges {
    /// Apply the edits to `spec` as `docker service update` does.
    pub fn apply(&self, spec: &mut ServiceSpec) {
        if let Some(image) = &self.image {
            spec.task.image = image.clone();
        }
        if self.force {
            spec.task.force_update += 1;
        }
        if let Some(replicas) = self.replicas {
            match &mut spec.mode {
                ServiceMode::Replicated { replicas: r } => *r = replicas,
                ServiceMode::ReplicatedJob { total_completions, .. } => *total_completions = replicas,
                ServiceMode::Global | ServiceMode::GlobalJob => {}
            }
        }
        if let Some(args) = &self.args {
            spec.task.args = args.clone();
        }
        for rm in &self.env_rm {
            spec.task.env.retain(|e| e.split('=').next() != Some(rm.as_str()));
        }
        for add in &self.env_add {
            let key = add.split('=').next().unwrap_or_default();
            spec.task.env.retain(|e| e.split('=').next() != Some(key));
            spec.task.env.push(add.clone());
        }
        spec.task.placement.constraints.retain(|c| !self.constraint_rm.contains(c));
        for c in &self.constraint_add {
            if !spec.task.placement.constraints.contains(c) {
                spec.task.placement.constraints.push(c.clone());
            }
        }
        for (k, v) in &self.label_add {
            spec.labels.insert(k.clone(), v.clone());
        }
        for (target, protocol) in &self.publish_rm {
            spec.ports.retain(|p| !(p.target_port == *target && p.protocol == *protocol));
        }
        for port in &self.publish_add {
            spec.ports.retain(|p| p.published_port != port.published_port || port.published_port == 0);
            spec.ports.push(port.clone());
        }
        spec.task.networks.retain(|n| !self.network_rm.contains(n));
        for network in &self.network_add {
            if !spec.task.networks.contains(network) {
                spec.task.networks.push(network.clone());
            }
        }
        // As docker/cli: the removed ones (by name) go, the added ones join.
        spec.task.secrets.retain(|r| !self.secret_rm.contains(&r.name));
        spec.task.secrets.extend(self.secret_add.iter().cloned());
        spec.task.configs.retain(|r| !self.config_rm.contains(&r.name));
        spec.task.configs.extend(self.config_add.iter().cloned());
        self.common.apply(spec);
    }
}

/// Split a command line into words as a POSIX shell would for simple quoting (`'…'`, `"…"`, `\`),
/// with the same rules as compose's string commands.
pub fn shell_words(line: &str) -> Result<Vec<String>, String> {
    shoal_core::stack::units::shell_words(line).map_err(|expected| format!("{expected} in {line:?}"))
}

/// A cursor over the words of a command.
struct Words {
    words: Vec<String>,
    at: usize,
}

impl Words {
    fn next(&mut self) -> Option<String> {
        let word = self.words.get(self.at).cloned();
        self.at += 1;
        word
    }

    fn peek(&self) -> Option<&str> {
        self.words.get(self.at).map(String::as_str)
    }

    fn value(&mut self, flag: &str) -> Result<String, String> {
        self.next().ok_or_else(|| format!("flag {flag} needs a value"))
    }

    fn number(&mut self, flag: &str) -> Result<u64, String> {
        let v = self.value(flag)?;
        v.parse().map_err(|_| format!("{flag} wants a whole number, not {v:?}"))
    }

    fn duration(&mut self, flag: &str) -> Result<Duration, String> {
        let v = self.value(flag)?;
        parse_duration(&v).map_err(|e| format!("{flag}: {e}"))
    }

    fn rest(&mut self) -> Vec<String> {
        let rest = self.words[self.at.min(self.words.len())..].to_vec();
        self.at = self.words.len();
        rest
    }

    /// The one positional argument left, and nothing after it.
    fn last(&mut self, what: &str) -> Result<String, String> {
        let rest = self.rest();
        match rest.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(format!("missing {what}")),
            many => Err(format!("expected one {what}, got {many:?}")),
        }
    }
}

/// `--flag=value` becomes `--flag value`, as Docker's flag parser accepts both. (A container
/// command word that looks like `--x=y` would be split too; scenarios have none.)
fn split_flags(words: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    for word in words {
        match word.split_once('=') {
            Some((flag, value)) if word.starts_with("--") => {
                out.push(flag.to_string());
                out.push(value.to_string());
            }
            _ => out.push(word),
        }
    }
    out
}

fn failure_action(v: &str) -> Result<FailureAction, String> {
    match v {
        "pause" => Ok(FailureAction::Pause),
        "continue" => Ok(FailureAction::Continue),
        "rollback" => Ok(FailureAction::Rollback),
        other => Err(format!("invalid failure action {other:?}: expected pause, continue, rollback")),
    }
}

fn update_order(v: &str) -> Result<UpdateOrder, String> {
    match v {
        "stop-first" => Ok(UpdateOrder::StopFirst),
        "start-first" => Ok(UpdateOrder::StartFirst),
        other => Err(format!("invalid update order {other:?}: expected stop-first, start-first")),
    }
}

fn restart_backoff(v: &str) -> Result<RestartBackoff, String> {
    match v {
        "fixed" => Ok(RestartBackoff::Fixed),
        "exponential" => Ok(RestartBackoff::Exponential),
        other => Err(format!("invalid restart backoff {other:?}: expected fixed, exponential")),
    }
}

fn restart_condition(v: &str) -> Result<RestartCondition, String> {
    match v {
        "none" => Ok(RestartCondition::None),
        "on-failure" => Ok(RestartCondition::OnFailure),
        "any" => Ok(RestartCondition::Any),
        other => Err(format!("invalid restart condition {other:?}: expected none, on-failure, any")),
    }
}

fn key_value(v: &str, flag: &str) -> Result<(String, String), String> {
    match v.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        None if !v.is_empty() => Ok((v.to_string(), String::new())),
        _ => Err(format!("{flag} wants key=value, not {v:?}")),
    }
}

/// `-p 8080:80`, `-p 8080:80/udp`, `-p 80` or `-p published=8080,target=80,mode=host`.
pub fn parse_port(v: &str) -> Result<PortConfig, String> {
    let bad = || format!("invalid port {v:?}: expected PUBLISHED:TARGET[/PROTO] or published=…,target=…[,mode=host]");
    let mut port =
        PortConfig { protocol: "tcp".into(), target_port: 0, published_port: 0, publish_mode: PublishMode::Ingress };
    if v.contains('=') {
        for part in v.split(',') {
            let (k, val) = part.split_once('=').ok_or_else(bad)?;
            match k {
                "published" => port.published_port = val.parse().map_err(|_| bad())?,
                "target" => port.target_port = val.parse().map_err(|_| bad())?,
                "protocol" => port.protocol = val.to_string(),
                "mode" => {
                    port.publish_mode = match val {
                        "host" => PublishMode::Host,
                        "ingress" => PublishMode::Ingress,
                        _ => return Err(bad()),
                    }
                }
                _ => return Err(bad()),
            }
        }
    } else {
        let (ports, proto) = v.split_once('/').unwrap_or((v, "tcp"));
        port.protocol = proto.to_string();
        match ports.split_once(':') {
            Some((published, target)) => {
                port.published_port = published.parse().map_err(|_| bad())?;
                port.target_port = target.parse().map_err(|_| bad())?;
            }
            None => port.target_port = ports.parse().map_err(|_| bad())?,
        }
    }
    if port.target_port == 0 {
        return Err(bad());
    }
    Ok(port)
}

const TOP_WORDS: &str = "service, node, swarm, network, stack, secret, config, info";

/// Parse the words after `docker` into a [`Command`].
pub fn parse_command(line: &str) -> Result<Command, String> {
    if line.contains(" & ") {
        let mut requests = Vec::new();
        for part in line.split(" & ") {
            match parse_command(part.trim())? {
                Command::Request(request) => requests.push(request),
                _ => return Err(format!("{:?}: only single requests run concurrently (`A & B`)", part.trim())),
            }
        }
        return Ok(Command::Concurrent(requests));
    }
    let words = split_flags(shell_words(line)?);
    let mut words = Words { words, at: 0 };
    let top = words.next().ok_or_else(|| format!("empty command: expected one of {TOP_WORDS}"))?;
    let sub = |words: &mut Words, expected: &str| {
        words.next().ok_or_else(|| format!("`{top}` needs a subcommand: expected {expected}"))
    };
    let request = |r: ControlRequest| Ok(Command::Request(r));
    match top.as_str() {
        "info" => {
            words.rest();
            request(ControlRequest::Info)
        }
        "service" => {
            const SUBS: &str = "create, update, scale, rm, rollback, ls, ps, inspect";
            match sub(&mut words, SUBS)?.as_str() {
                "create" => service_create(&mut words),
                "update" => service_update(&mut words),
                "scale" => {
                    let mut requests = Vec::new();
                    for target in words.rest() {
                        let (service, n) =
                            target.split_once('=').ok_or_else(|| format!("invalid scale target {target:?}: expected SERVICE=REPLICAS"))?;
                        let replicas = n.parse().map_err(|_| format!("invalid replicas {n:?} in {target:?}"))?;
                        requests.push(ControlRequest::ServiceScale { service: service.to_string(), replicas });
                    }
                    match requests.len() {
                        0 => Err("service scale needs SERVICE=REPLICAS".into()),
                        1 => Ok(Command::Request(requests.remove(0))),
                        _ => Ok(Command::Sequence(requests)),
                    }
                }
                "rm" | "remove" => request(ControlRequest::ServiceRemove { service: words.last("service")? }),
                "rollback" => request(ControlRequest::ServiceRollback { service: words.last("service")? }),
                "ls" | "list" => {
                    words.rest();
                    request(ControlRequest::ServiceList)
                }
                "ps" => {
                    let service = words.rest().into_iter().rfind(|w| !w.starts_with('-'));
                    request(ControlRequest::TaskList { service: Some(service.ok_or("service ps needs a service")?), node: None })
                }
                "inspect" => {
                    let service = words.rest().into_iter().rfind(|w| !w.starts_with('-'));
                    request(ControlRequest::ServiceInspect { service: service.ok_or("service inspect needs a service")? })
                }
                other => Err(format!("unknown service command {other:?}: expected {SUBS}")),
            }
        }
        "node" => {
            const SUBS: &str = "ls, inspect, ps, update, promote, demote, rm";
            match sub(&mut words, SUBS)?.as_str() {
                "ls" | "list" => {
                    words.rest();
                    request(ControlRequest::NodeList)
                }
                "inspect" => request(ControlRequest::NodeInspect { node: words.last("node")? }),
                "ps" => request(ControlRequest::TaskList { service: None, node: Some(words.last("node")?) }),
                "promote" => request(ControlRequest::NodePromote { node: words.last("node")? }),
                "demote" => request(ControlRequest::NodeDemote { node: words.last("node")? }),
                "rm" | "remove" => {
                    let mut force = false;
                    while let Some(flag) = words.peek().filter(|w| w.starts_with('-')).map(str::to_string) {
                        words.next();
                        match flag.as_str() {
                            "-f" | "--force" => force = true,
                            other => return Err(format!("unknown flag {other:?} for node rm: expected -f/--force")),
                        }
                    }
                    request(ControlRequest::NodeRemove { node: words.last("node")?, force })
                }
                "update" => {
                    let (mut availability, mut label_add, mut label_rm) = (None, Labels::new(), Vec::new());
                    while let Some(flag) = words.peek().filter(|w| w.starts_with('-')).map(str::to_string) {
                        words.next();
                        match flag.as_str() {
                            "--availability" => {
                                availability = Some(match words.value(&flag)?.as_str() {
                                    "active" => Availability::Active,
                                    "pause" => Availability::Pause,
                                    "drain" => Availability::Drain,
                                    other => return Err(format!("invalid availability {other:?}: expected active, pause, drain")),
                                })
                            }
                            "--label-add" => {
                                let (k, v) = key_value(&words.value(&flag)?, &flag)?;
                                label_add.insert(k, v);
                            }
                            "--label-rm" => label_rm.push(words.value(&flag)?),
                            other => {
                                return Err(format!(
                                    "unknown flag {other:?} for node update: expected --availability, --label-add, --label-rm"
                                ))
                            }
                        }
                    }
                    request(ControlRequest::NodeUpdate { node: words.last("node")?, availability, label_add, label_rm })
                }
                other => Err(format!("unknown node command {other:?}: expected {SUBS}")),
            }
        }
        "swarm" => match sub(&mut words, "join-token, update, unlock-key, unlock, ca")?.as_str() {
            "ca" => {
                let mut rotate = false;
                for word in words.rest() {
                    match word.as_str() {
                        "--rotate" => rotate = true,
                        // The step returns once the request is answered; `expect: ca …` waits.
                        "-d" | "--detach" | "-q" | "--quiet" => {}
                        other => return Err(format!("swarm ca: unexpected {other:?}: expected [--rotate] [-d] [-q]")),
                    }
                }
                request(if rotate { ControlRequest::CaRotate { new_root: None } } else { ControlRequest::CaInspect })
            }
            "update" => {
                let (mut task_history_limit, mut heartbeat_period_ms, mut node_cert_expiry_ms) = (None, None, None);
                let mut autolock = None;
                while let Some(flag) = words.next() {
                    match flag.as_str() {
                        // `--autolock`, `--autolock=true|false` (split into two words by `split_flags`).
                        "--autolock" => {
                            autolock = Some(match words.peek() {
                                Some("true") | Some("false") => words.next().as_deref() == Some("true"),
                                _ => true,
                            })
                        }
                        "--task-history-limit" => task_history_limit = Some(words.number(&flag)?),
                        "--dispatcher-heartbeat" => heartbeat_period_ms = Some(words.duration(&flag)?.as_millis() as u64),
                        "--cert-expiry" => node_cert_expiry_ms = Some(words.duration(&flag)?.as_millis() as u64),
                        other => return Err(format!("unknown flag {other:?} for swarm update")),
                    }
                }
                let update = ControlRequest::ClusterUpdate { task_history_limit, heartbeat_period_ms, node_cert_expiry_ms };
                match autolock {
                    None => request(update),
                    Some(enabled) if task_history_limit.is_none() && heartbeat_period_ms.is_none() && node_cert_expiry_ms.is_none() => {
                        request(ControlRequest::SwarmAutolock { enabled })
                    }
                    Some(enabled) => Ok(Command::Sequence(vec![update, ControlRequest::SwarmAutolock { enabled }])),
                }
            }
            "unlock-key" => {
                let mut rotate = false;
                for word in words.rest() {
                    match word.as_str() {
                        "--rotate" => rotate = true,
                        "-q" | "--quiet" => {}
                        other => return Err(format!("swarm unlock-key: unexpected {other:?}: expected [--rotate] [-q]")),
                    }
                }
                request(ControlRequest::UnlockKey { rotate })
            }
            "unlock" => {
                let rest = words.rest();
                if rest.len() > 1 {
                    return Err("swarm unlock takes at most one word: the key (none: the swarm's current key)".into());
                }
                Ok(Command::Unlock { key: rest.into_iter().next() })
            }
            "join-token" => {
                let mut rotate = false;
                let mut role = None;
                for word in words.rest() {
                    match word.as_str() {
                        "--rotate" => rotate = true,
                        "-q" | "--quiet" => {}
                        "worker" => role = Some(NodeRole::Worker),
                        "manager" => role = Some(NodeRole::Manager),
                        other => return Err(format!("swarm join-token: unexpected {other:?}: expected worker or manager [--rotate]")),
                    }
                }
                let role = role.ok_or("swarm join-token needs worker or manager")?;
                request(ControlRequest::JoinToken { role, rotate })
            }
            other => Err(format!("unknown swarm command {other:?}: expected join-token, update, unlock-key, unlock or ca (init, join and leave are cluster shape and faults)"))
        },
        "secret" | "config" => {
            let kind = if top == "secret" { FileKind::Secret } else { FileKind::Config };
            const SUBS: &str = "create, ls, inspect, rm";
            match sub(&mut words, SUBS)?.as_str() {
                "create" => {
                    let mut spec = SecretSpec::default();
                    while let Some(flag) = words.peek().filter(|w| w.starts_with('-')).map(str::to_string) {
                        words.next();
                        match flag.as_str() {
                            "-l" | "--label" => {
                                let (k, v) = key_value(&words.value(&flag)?, &flag)?;
                                spec.labels.insert(k, v);
                            }
                            "--template-driver" => spec.templating = words.value(&flag)?,
                            other => {
                                return Err(format!("unknown flag {other:?} for {top} create: expected --label, --template-driver"))
                            }
                        }
                    }
                    let rest = words.rest();
                    let [name, file] = rest.as_slice() else {
                        return Err(format!("{top} create needs NAME FILE"));
                    };
                    spec.name = name.clone();
                    Ok(Command::CreateFileObject { kind, spec, file: file.clone() })
                }
                "ls" | "list" => {
                    words.rest();
                    request(if kind == FileKind::Secret { ControlRequest::SecretList } else { ControlRequest::ConfigList })
                }
                "inspect" => {
                    let name = words.rest().into_iter().rfind(|w| !w.starts_with('-')).ok_or(format!("{top} inspect needs a name"))?;
                    request(if kind == FileKind::Secret {
                        ControlRequest::SecretInspect { secret: name }
                    } else {
                        ControlRequest::ConfigInspect { config: name }
                    })
                }
                "rm" | "remove" => {
                    let name = words.last("name")?;
                    request(if kind == FileKind::Secret {
                        ControlRequest::SecretRemove { secret: name }
                    } else {
                        ControlRequest::ConfigRemove { config: name }
                    })
                }
                other => Err(format!("unknown {top} command {other:?}: expected {SUBS}")),
            }
        }
        "network" => {
            const SUBS: &str = "create, ls, inspect, rm";
            match sub(&mut words, SUBS)?.as_str() {
                "create" => {
                    let (mut driver, mut attachable, mut labels) = (String::from("overlay"), false, Labels::new());
                    let (mut subnet, mut ingress) = (String::new(), false);
                    while let Some(flag) = words.peek().filter(|w| w.starts_with('-')).map(str::to_string) {
                        words.next();
                        match flag.as_str() {
                            "-d" | "--driver" => driver = words.value(&flag)?,
                            "--attachable" => attachable = true,
                            "--ingress" => ingress = true,
                            "--subnet" => subnet = words.value(&flag)?,
                            "--label" => {
                                let (k, v) = key_value(&words.value(&flag)?, &flag)?;
                                labels.insert(k, v);
                            }
                            other => {
                                return Err(format!(
                                    "unknown flag {other:?} for network create: expected -d, --attachable, --ingress, --label, --subnet"
                                ))
                            }
                        }
                    }
                    request(ControlRequest::NetworkCreate {
                        name: words.last("network name")?,
                        driver,
                        attachable,
                        labels,
                        subnet,
                        ingress,
                    })
                }
                "ls" | "list" => {
                    words.rest();
                    request(ControlRequest::NetworkList)
                }
                "inspect" => request(ControlRequest::NetworkInspect { network: words.last("network")? }),
                "rm" | "remove" => request(ControlRequest::NetworkRemove { network: words.last("network")? }),
                other => Err(format!("unknown network command {other:?}: expected {SUBS}")),
            }
        }
        "stack" => {
            let subcommand = sub(&mut words, STACK_SUBS)?;
            stack_command(&mut words, subcommand).map(Command::Stack)
        }
        other => Err(format!("unknown command {other:?}: expected one of {TOP_WORDS}")),
    }
}

const STACK_SUBS: &str = "deploy, rm, ls, services, ps";

fn stack_command(words: &mut Words, sub: String) -> Result<StackCommand, String> {
    match sub.as_str() {
        "deploy" | "up" => {
            let (mut file, mut prune) = (None, false);
            while let Some(flag) = words.peek().filter(|w| w.starts_with('-')).map(str::to_string) {
                words.next();
                match flag.as_str() {
                    "-c" | "--compose-file" => file = Some(words.value(&flag)?),
                    "--prune" => prune = true,
                    "-d" | "--detach" | "-q" | "--quiet" => {}
                    other => return Err(format!("unknown flag {other:?} for stack deploy: expected -c FILE, --prune")),
                }
            }
            let file = file.ok_or("stack deploy needs -c COMPOSE_FILE")?;
            Ok(StackCommand::Deploy { stack: words.last("stack name")?, file, prune })
        }
        "rm" | "remove" | "down" => {
            let stacks = words.rest();
            if stacks.is_empty() {
                return Err("stack rm needs a stack name".into());
            }
            Ok(StackCommand::Rm(stacks))
        }
        "ls" | "list" => {
            words.rest();
            Ok(StackCommand::Ls)
        }
        "services" => Ok(StackCommand::Services(stack_name(words, "stack services")?)),
        "ps" => Ok(StackCommand::Ps(stack_name(words, "stack ps")?)),
        other => Err(format!("unknown stack command {other:?}: expected {STACK_SUBS}")),
    }
}

/// The stack argument of a listing command (its display flags change nothing here).
fn stack_name(words: &mut Words, what: &str) -> Result<String, String> {
    words.rest().into_iter().rfind(|w| !w.starts_with('-')).ok_or_else(|| format!("{what} needs a stack name"))
}

fn service_create(words: &mut Words) -> Result<Command, String> {
    let mut spec = ServiceSpec::new("", "");
    let mut common = CommonFlags::default();
    let (mut global, mut job) = (false, false);
    let mut replicas = None;
    let mut max_concurrent = None;
    while let Some(flag) = words.peek().filter(|w| w.starts_with('-')).map(str::to_string) {
        words.next();
        if common.take(&flag, words)? {
            continue;
        }
        match flag.as_str() {
            "--name" => spec.name = words.value(&flag)?,
            "--replicas" => replicas = Some(words.number(&flag)?),
            "--max-concurrent" => max_concurrent = Some(words.number(&flag)?),
            "--mode" => {
                (global, job) = match words.value(&flag)?.as_str() {
                    "global" => (true, false),
                    "replicated" => (false, false),
                    "global-job" => (true, true),
                    "replicated-job" => (false, true),
                    other => {
                        return Err(format!(
                            "invalid mode {other:?}: expected replicated, global, replicated-job, global-job"
                        ))
                    }
                }
            }
            "-e" | "--env" => spec.task.env.push(words.value(&flag)?),
            "--constraint" => spec.task.placement.constraints.push(words.value(&flag)?),
            "--placement-pref" => spec.task.placement.preferences.push(words.value(&flag)?),
            "-p" | "--publish" => spec.ports.push(parse_port(&words.value(&flag)?)?),
            "--network" => spec.task.networks.push(words.value(&flag)?),
            "--secret" => spec.task.secrets.push(parse_file_reference(FileKind::Secret, &words.value(&flag)?)?),
            "--config" => spec.task.configs.push(parse_file_reference(FileKind::Config, &words.value(&flag)?)?),
            "-l" | "--label" => {
                let (k, v) = key_value(&words.value(&flag)?, &flag)?;
                spec.labels.insert(k, v);
            }
            "-d" | "--detach" | "-q" | "--quiet" => {}
            other => return Err(format!("unknown flag {other:?} for service create")),
        }
    }
    let image = words.next().ok_or("service create needs an IMAGE")?;
    spec.task.image = image;
    spec.task.command = words.rest();
    if max_concurrent.is_some() && (global || !job) {
        return Err("max-concurrent can only be used with replicated-job mode".into());
    }
    if global {
        if replicas.is_some() {
            return Err("replicas can only be used with replicated or replicated-job mode".into());
        }
        spec.mode = if job { ServiceMode::GlobalJob } else { ServiceMode::Global };
    } else if job {
        // As Docker's CLI and daemon: concurrency defaults to replicas, replicas to concurrency, both to 1.
        let max_concurrent = max_concurrent.or(replicas).unwrap_or(1);
        spec.mode =
            ServiceMode::ReplicatedJob { max_concurrent, total_completions: replicas.unwrap_or(max_concurrent) };
    } else {
        spec.mode = ServiceMode::Replicated { replicas: replicas.unwrap_or(1) };
    }
    if job && common.restart_condition.is_none() {
        spec.task.restart_policy.condition = RestartCondition::OnFailure;
    }
    common.apply(&mut spec);
    Ok(Command::Request(ControlRequest::ServiceCreate { spec }))
}

fn service_update(words: &mut Words) -> Result<Command, String> {
    let mut changes = SpecChanges::default();
    while let Some(flag) = words.peek().filter(|w| w.starts_with('-')).map(str::to_string) {
        words.next();
        if changes.common.take(&flag, words)? {
            continue;
        }
        match flag.as_str() {
            "--image" => changes.image = Some(words.value(&flag)?),
            "--force" => changes.force = true,
            "--replicas" => changes.replicas = Some(words.number(&flag)?),
            "--args" => changes.args = Some(shell_words(&words.value(&flag)?)?),
            "--env-add" => changes.env_add.push(words.value(&flag)?),
            "--env-rm" => changes.env_rm.push(words.value(&flag)?),
            "--constraint-add" => changes.constraint_add.push(words.value(&flag)?),
            "--constraint-rm" => changes.constraint_rm.push(words.value(&flag)?),
            "--label-add" => changes.label_add.push(key_value(&words.value(&flag)?, &flag)?),
            "--publish-add" => changes.publish_add.push(parse_port(&words.value(&flag)?)?),
            "--publish-rm" => {
                let value = words.value(&flag)?;
                let (target, protocol) = value.split_once('/').unwrap_or((value.as_str(), "tcp"));
                let target = target
                    .parse()
                    .map_err(|_| format!("invalid value {value:?} for --publish-rm: use target[/protocol]"))?;
                changes.publish_rm.push((target, protocol.to_string()));
            }
            "--network-add" => changes.network_add.push(words.value(&flag)?),
            "--network-rm" => changes.network_rm.push(words.value(&flag)?),
            "--secret-add" => changes.secret_add.push(parse_file_reference(FileKind::Secret, &words.value(&flag)?)?),
            "--secret-rm" => changes.secret_rm.push(words.value(&flag)?),
            "--config-add" => changes.config_add.push(parse_file_reference(FileKind::Config, &words.value(&flag)?)?),
            "--config-rm" => changes.config_rm.push(words.value(&flag)?),
            "-d" | "--detach" | "-q" | "--quiet" => {}
            other => return Err(format!("unknown flag {other:?} for service update")),
        }
    }
    Ok(Command::ServiceUpdate { service: words.last("service")?, changes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_split_and_quote() {
        assert_eq!(shell_words(r#"a "b c" 'd e' f\ g"#).unwrap(), vec!["a", "b c", "d e", "f g"]);
        assert!(shell_words("a \"b").is_err());
    }

    #[test]
    fn service_update_edits_networks_ports_and_endpoint_mode() {
        let Command::ServiceUpdate { changes, .. } = parse_command(
            "service update --network-add app --network-rm old --publish-rm 80 --endpoint-mode dnsrr web",
        )
        .unwrap() else {
            panic!("not an update")
        };
        let mut spec = ServiceSpec::new("web", "nginx:1");
        spec.task.networks = vec!["old".into(), "keep".into()];
        spec.ports.push(parse_port("8080:80").unwrap());
        spec.ports.push(parse_port("8443:443").unwrap());
        changes.apply(&mut spec);
        assert_eq!(spec.task.networks, vec!["keep", "app"]);
        assert_eq!(spec.ports.iter().map(|p| p.target_port).collect::<Vec<_>>(), vec![443]);
        assert_eq!(spec.endpoint_mode, EndpointMode::Dnsrr);
        assert!(parse_command("service update --endpoint-mode rr web").unwrap_err().contains("invalid endpoint mode"));
    }

    #[test]
    fn health_flags_as_docker_applies_them() {
        use shoal_core::api::HealthConfig;
        let cmd = parse_command(
            "service create --name web --health-cmd \"wget -q localhost\" --health-interval 2s --health-retries 4 nginx",
        )
        .unwrap();
        let Command::Request(ControlRequest::ServiceCreate { spec }) = cmd else { panic!("{cmd:?}") };
        let check = spec.task.healthcheck.clone().unwrap();
        assert_eq!(check.test, ["CMD-SHELL", "wget -q localhost"]);
        assert_eq!((check.interval_ms, check.retries, check.timeout_ms), (2_000, 4, 0));
        let err = parse_command("service create --no-healthcheck --health-retries 2 nginx").unwrap_err();
        assert!(err.contains("--no-healthcheck conflicts with --health-* options"), "{err}");
        let Command::ServiceUpdate { changes, .. } = parse_command("service update --health-timeout 1s web").unwrap()
        else {
            panic!("not an update")
        };
        let mut updated = spec.clone();
        changes.apply(&mut updated);
        assert_eq!(updated.task.healthcheck, Some(HealthConfig { timeout_ms: 1_000, ..check }));
        let Command::ServiceUpdate { changes, .. } = parse_command("service update --no-healthcheck web").unwrap()
        else {
            panic!("not an update")
        };
        changes.apply(&mut updated);
        assert_eq!(updated.task.healthcheck, Some(HealthConfig::none()));
    }

    #[test]
    fn service_create_maps_flags() {
        let cmd = parse_command(
            "service create --name web --replicas 6 -e A=1 --constraint node.role==worker --update-parallelism 2 \
             --update-failure-action rollback --restart-condition on-failure -p 80:80 nginx:1.25 sleep 10",
        )
        .unwrap();
        let Command::Request(ControlRequest::ServiceCreate { spec }) = cmd else { panic!("{cmd:?}") };
        assert_eq!(spec.name, "web");
        assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 6 });
        assert_eq!(spec.task.env, vec!["A=1"]);
        assert_eq!(spec.task.placement.constraints, vec!["node.role==worker"]);
        assert_eq!(spec.update_config.parallelism, 2);
        assert_eq!(spec.update_config.failure_action, FailureAction::Rollback);
        assert_eq!(spec.task.restart_policy.condition, RestartCondition::OnFailure);
        assert_eq!(spec.ports[0].published_port, 80);
        assert_eq!(spec.task.image, "nginx:1.25");
        assert_eq!(spec.task.command, vec!["sleep", "10"]);
    }

    #[test]
    fn autolock_commands() {
        let autolock = |enabled| Command::Request(ControlRequest::SwarmAutolock { enabled });
        assert_eq!(parse_command("swarm update --autolock").unwrap(), autolock(true));
        assert_eq!(parse_command("swarm update --autolock=true").unwrap(), autolock(true));
        assert_eq!(parse_command("swarm update --autolock=false").unwrap(), autolock(false));
        assert!(matches!(
            parse_command("swarm update --task-history-limit 3 --autolock=false").unwrap(),
            Command::Sequence(requests) if requests.len() == 2
        ));
        assert_eq!(
            parse_command("swarm unlock-key --rotate -q").unwrap(),
            Command::Request(ControlRequest::UnlockKey { rotate: true })
        );
        assert_eq!(parse_command("swarm unlock").unwrap(), Command::Unlock { key: None });
        assert_eq!(
            parse_command("swarm unlock SWMKEY-1-abc").unwrap(),
            Command::Unlock { key: Some("SWMKEY-1-abc".into()) }
        );
        assert!(parse_command("swarm unlock a b").is_err());
    }

    #[test]
    fn other_commands() {
        assert_eq!(
            parse_command("service scale web=3").unwrap(),
            Command::Request(ControlRequest::ServiceScale { service: "web".into(), replicas: 3 })
        );
        assert_eq!(
            parse_command("node update --availability drain worker-2").unwrap(),
            Command::Request(ControlRequest::NodeUpdate {
                node: "worker-2".into(),
                availability: Some(Availability::Drain),
                label_add: Labels::new(),
                label_rm: vec![]
            })
        );
        assert_eq!(
            parse_command("swarm join-token worker --rotate").unwrap(),
            Command::Request(ControlRequest::JoinToken { role: NodeRole::Worker, rotate: true })
        );
        assert_eq!(
            parse_command("node rm -f worker-1").unwrap(),
            Command::Request(ControlRequest::NodeRemove { node: "worker-1".into(), force: true })
        );
        let Command::ServiceUpdate { service, changes } =
            parse_command("service update --image nginx:1.26 --force web").unwrap()
        else {
            panic!()
        };
        assert_eq!(service, "web");
        assert_eq!(changes.image.as_deref(), Some("nginx:1.26"));
        assert!(changes.force);
        assert!(parse_command("service frobnicate web").unwrap_err().contains("expected create"));
        assert!(parse_command("service create --bogus x img").unwrap_err().contains("--bogus"));
    }

    #[test]
    fn stack_commands() {
        assert_eq!(
            parse_command("stack deploy -c compose/app.yml --prune app").unwrap(),
            Command::Stack(StackCommand::Deploy { stack: "app".into(), file: "compose/app.yml".into(), prune: true })
        );
        assert_eq!(
            parse_command("stack rm a b").unwrap(),
            Command::Stack(StackCommand::Rm(vec!["a".into(), "b".into()]))
        );
        assert_eq!(parse_command("stack ls").unwrap(), Command::Stack(StackCommand::Ls));
        assert_eq!(parse_command("stack services app").unwrap(), Command::Stack(StackCommand::Services("app".into())));
        assert_eq!(parse_command("stack ps --no-trunc app").unwrap(), Command::Stack(StackCommand::Ps("app".into())));
        assert!(parse_command("stack deploy app").unwrap_err().contains("-c COMPOSE_FILE"));
        assert!(parse_command("stack frob").unwrap_err().contains("expected deploy, rm"));
    }
}
