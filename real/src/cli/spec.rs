//! Flags → [`ServiceSpec`]: `service create` starts from Swarm's defaults ([`ServiceSpec::new`]),
//! `service update` from the current spec. Pure, so every flag's effect is unit-tested.

use shoal_core::api::{
    EndpointMode, FailureAction, HealthConfig, PortConfig, PublishMode, RestartBackoff, RestartCondition, ServiceMode,
    ServiceSpec, Ulimit, UpdateOrder,
};

use super::args::{
    CommonServiceFlags, CreateArgs, EndpointModeArg, FailureActionArg, ModeArg, OrderArg, RestartBackoffArg,
    RestartConditionArg, RollbackFailureActionArg, UpdateArgs,
};

/// A flag value the CLI refuses, with the flag named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn order(arg: OrderArg) -> UpdateOrder {
    match arg {
        OrderArg::StopFirst => UpdateOrder::StopFirst,
        OrderArg::StartFirst => UpdateOrder::StartFirst,
    }
}

/// `KEY=value`, or `KEY` alone taking the value from this shell's environment (as Docker does).
fn env_entry(entry: &str) -> String {
    if entry.contains('=') {
        return entry.to_string();
    }
    match std::env::var(entry) {
        Ok(value) => format!("{entry}={value}"),
        Err(_) => entry.to_string(),
    }
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map(|(k, _)| k).unwrap_or(entry)
}

/// `key=value` or `key` (empty value).
pub fn label(entry: &str) -> (String, String) {
    match entry.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (entry.to_string(), String::new()),
    }
}

/// `--sysctl key=value`.
fn sysctl(entry: &str) -> Result<(String, String), SpecError> {
    match entry.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.to_string())),
        _ => {
            Err(SpecError(format!("invalid argument {entry:?} for --sysctl: use key=value (net.core.somaxconn=1024)")))
        }
    }
}

/// `--host host:ip` (the address may be IPv6: the host is what comes before the first `:`).
fn host(entry: &str) -> Result<String, SpecError> {
    match entry.split_once(':') {
        Some((name, ip)) if !name.is_empty() && (ip == "host-gateway" || ip.parse::<std::net::IpAddr>().is_ok()) => {
            Ok(entry.to_string())
        }
        _ => Err(SpecError(format!("invalid argument {entry:?} for --host: use host:ip (db:10.0.0.5)"))),
    }
}

/// Remove `rm`, then append what `add` has that the list lacks (Docker's `--x-add`/`--x-rm`).
fn edit_list(list: &mut Vec<String>, add: &[String], rm: &[String]) {
    list.retain(|item| !rm.contains(item));
    for item in add {
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
}

/// `-p`: `[published:]target[/proto]` or `published=8080,target=80,protocol=udp,mode=host`.
pub fn parse_port(text: &str) -> Result<PortConfig, SpecError> {
    let bad = |why: &str| SpecError(format!("invalid publish value {text:?} for --publish: {why}"));
    let port = |value: &str| value.parse::<u16>().map_err(|_| bad("ports are numbers from 1 to 65535"));
    let mut config =
        PortConfig { protocol: "tcp".into(), target_port: 0, published_port: 0, publish_mode: PublishMode::Ingress };
    if text.contains('=') {
        for field in text.split(',') {
            let (key, value) = field.split_once('=').ok_or_else(|| bad("use key=value pairs"))?;
            match key.trim() {
                "published" => config.published_port = port(value)?,
                "target" => config.target_port = port(value)?,
                "protocol" => config.protocol = value.to_string(),
                "mode" => {
                    config.publish_mode = match value {
                        "ingress" => PublishMode::Ingress,
                        "host" => PublishMode::Host,
                        _ => return Err(bad("mode is ingress or host")),
                    }
                }
                other => return Err(bad(&format!("unknown field {other:?}"))),
            }
        }
    } else {
        let (ports, protocol) = match text.split_once('/') {
            Some((ports, protocol)) => (ports, protocol),
            None => (text, "tcp"),
        };
        config.protocol = protocol.to_string();
        match ports.split_once(':') {
            Some((published, target)) => {
                config.published_port = port(published)?;
                config.target_port = port(target)?;
            }
            None => config.target_port = port(ports)?,
        }
    }
    if config.target_port == 0 {
        return Err(bad("a target port is required"));
    }
    if !matches!(config.protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad("protocol is tcp, udp or sctp"));
    }
    Ok(config)
}

fn apply_common(spec: &mut ServiceSpec, flags: &CommonServiceFlags) {
    if let Some(mode) = flags.endpoint_mode {
        spec.endpoint_mode = match mode {
            EndpointModeArg::Vip => EndpointMode::Vip,
            EndpointModeArg::Dnsrr => EndpointMode::Dnsrr,
        };
    }
    let task = &mut spec.task;
    if let Some(workdir) = &flags.workdir {
        task.workdir = workdir.clone();
    }
    if let Some(user) = &flags.user {
        task.user = user.clone();
    }
    if let Some(hostname) = &flags.hostname {
        task.hostname = hostname.clone();
    }
    let options = &mut task.options;
    // As Docker's update does: adding a capability takes it off the drop list, and the reverse.
    for cap in &flags.cap_add {
        options.cap_drop.retain(|c| c != cap);
        if !options.cap_add.contains(cap) {
            options.cap_add.push(cap.clone());
        }
    }
    for cap in &flags.cap_drop {
        options.cap_add.retain(|c| c != cap);
        if !options.cap_drop.contains(cap) {
            options.cap_drop.push(cap.clone());
        }
    }
    if let Some(init) = flags.init {
        options.init = Some(init);
    }
    if let Some(signal) = &flags.stop_signal {
        options.stop_signal = signal.clone();
    }
    if let Some(read_only) = flags.read_only {
        options.read_only = read_only;
    }
    // As Docker's: `--log-opt` goes with `--log-driver` (alone it changes nothing), and the two
    // replace the service's driver and options together.
    if let Some(driver) = &flags.log_driver {
        options.log_driver = Some(shoal_core::api::LogDriver {
            name: driver.clone(),
            options: flags.log_opt.iter().map(|o| label(o)).collect(),
        });
    }
    if let Some(max) = flags.replicas_max_per_node {
        task.placement.max_replicas_per_node = max;
    }
    if let Some(v) = flags.limit_cpu {
        task.resources.limits.nano_cpus = v;
    }
    if let Some(v) = flags.limit_memory {
        task.resources.limits.memory_bytes = v;
    }
    if let Some(v) = flags.reserve_cpu {
        task.resources.reservations.nano_cpus = v;
    }
    if let Some(v) = flags.reserve_memory {
        task.resources.reservations.memory_bytes = v;
    }
    if let Some(condition) = flags.restart_condition {
        task.restart_policy.condition = match condition {
            RestartConditionArg::None => RestartCondition::None,
            RestartConditionArg::OnFailure => RestartCondition::OnFailure,
            RestartConditionArg::Any => RestartCondition::Any,
        };
    }
    if let Some(v) = flags.restart_delay {
        task.restart_policy.delay_ms = v;
    }
    if let Some(v) = flags.restart_max_attempts {
        task.restart_policy.max_attempts = v;
    }
    if let Some(v) = flags.restart_window {
        task.restart_policy.window_ms = v;
    }
    if let Some(backoff) = flags.restart_backoff {
        task.restart_policy.backoff = match backoff {
            RestartBackoffArg::Fixed => RestartBackoff::Fixed,
            RestartBackoffArg::Exponential => RestartBackoff::Exponential,
        };
    }
    if let Some(v) = flags.stop_grace_period {
        task.stop_grace_period_ms = v;
    }
    let update = &mut spec.update_config;
    if let Some(v) = flags.update_parallelism {
        update.parallelism = v;
    }
    if let Some(v) = flags.update_delay {
        update.delay_ms = v;
    }
    if let Some(action) = flags.update_failure_action {
        update.failure_action = match action {
            FailureActionArg::Pause => FailureAction::Pause,
            FailureActionArg::Continue => FailureAction::Continue,
            FailureActionArg::Rollback => FailureAction::Rollback,
        };
    }
    if let Some(v) = flags.update_monitor {
        update.monitor_ms = v;
    }
    if let Some(v) = flags.update_max_failure_ratio {
        update.max_failure_ratio = v;
    }
    if let Some(v) = flags.update_order {
        update.order = order(v);
    }
    let rollback = &mut spec.rollback_config;
    if let Some(v) = flags.rollback_parallelism {
        rollback.parallelism = v;
    }
    if let Some(v) = flags.rollback_delay {
        rollback.delay_ms = v;
    }
    if let Some(action) = flags.rollback_failure_action {
        rollback.failure_action = match action {
            RollbackFailureActionArg::Pause => FailureAction::Pause,
            RollbackFailureActionArg::Continue => FailureAction::Continue,
        };
    }
    if let Some(v) = flags.rollback_monitor {
        rollback.monitor_ms = v;
    }
    if let Some(v) = flags.rollback_max_failure_ratio {
        rollback.max_failure_ratio = v;
    }
    if let Some(v) = flags.rollback_order {
        rollback.order = order(v);
    }
}

/// The spec `service create` sends.
/// The entries of an `--env-file`, as Docker reads one: `KEY=value` lines, `KEY` alone taken from
/// this environment (left out when unset), blank lines and `#` comments skipped.
pub fn env_file(path: &str) -> Result<Vec<String>, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|err| SpecError(format!("open {path}: {err}")))?;
    let mut entries = Vec::new();
    for (at, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split('=').next().unwrap_or_default();
        if key.is_empty() {
            return Err(SpecError(format!("{path}:{}: no variable name on line '{line}'", at + 1)));
        }
        if key.contains(char::is_whitespace) {
            return Err(SpecError(format!("{path}:{}: variable '{key}' contains whitespaces", at + 1)));
        }
        if line.contains('=') {
            entries.push(line.to_string());
        } else if let Ok(value) = std::env::var(key) {
            entries.push(format!("{key}={value}"));
        }
    }
    Ok(entries)
}

/// A command line as Docker's `ShlexOpt` flags take it: split like a shell, quotes kept together.
fn shell_words(flag: &str, line: &str) -> Result<Vec<String>, SpecError> {
    shoal_core::stack::units::shell_words(line).map_err(|err| SpecError(format!("invalid {flag} {line:?}: {err}")))
}

pub fn create_spec(args: &CreateArgs) -> Result<ServiceSpec, SpecError> {
    // Swarm names unnamed services itself; shoal's control API wants a name, so make one the way
    // Docker's random names read (image base name + short random suffix).
    let name = match &args.name {
        Some(name) => name.clone(),
        None => default_name(&args.image),
    };
    let mut spec = ServiceSpec::new(name, args.image.clone());
    spec.mode = create_mode(args.mode, args.replicas, args.max_concurrent)?;
    spec.task.mounts = args.mount.iter().map(|m| parse_mount_flag("--mount", m)).collect::<Result<_, _>>()?;
    if let Some(entrypoint) = &args.entrypoint {
        spec.task.command = shell_words("--entrypoint", entrypoint)?;
    }
    spec.task.args = args.command.clone();
    let mut env = Vec::new();
    for file in &args.env_file {
        env.extend(env_file(file)?);
    }
    env.extend(args.env.iter().map(|e| env_entry(e)));
    spec.task.env = env;
    spec.task.placement.constraints = args.constraint.clone();
    spec.task.placement.preferences = args.placement_pref.clone();
    spec.labels = args.label.iter().map(|l| label(l)).collect();
    spec.task.container_labels = args.container_label.iter().map(|l| label(l)).collect();
    let options = &mut spec.task.options;
    options.sysctls = args.sysctl.iter().map(|s| sysctl(s)).collect::<Result<_, _>>()?;
    options.ulimits = args.ulimit.iter().map(|u| Ulimit::parse(u).map_err(SpecError)).collect::<Result<_, _>>()?;
    options.dns = args.dns.clone();
    options.dns_search = args.dns_search.clone();
    options.dns_options = args.dns_option.clone();
    options.hosts = args.host.iter().map(|h| host(h)).collect::<Result<_, _>>()?;
    spec.ports = args.publish.iter().map(|p| parse_port(p)).collect::<Result<_, _>>()?;
    spec.task.networks = args.network.clone();
    // Names only; the manager fills in the ids (and refuses `secret not found: X`).
    spec.task.secrets = args.secret.clone();
    spec.task.configs = args.config.clone();
    apply_common(&mut spec, &args.common);
    // Docker's CLI gives jobs a restart condition of on-failure unless one is asked for.
    if spec.mode.is_job() && args.common.restart_condition.is_none() {
        spec.task.restart_policy.condition = RestartCondition::OnFailure;
    }
    apply_health(&mut spec, &args.common, true)?;
    Ok(spec)
}

/// One `--mount`/`--mount-add` value, refused as Docker's flag parsing words it.
fn parse_mount_flag(flag: &str, value: &str) -> Result<shoal_core::api::Mount, SpecError> {
    shoal_core::api::mounts::parse_mount(value)
        .map_err(|err| SpecError(format!("invalid argument \"{value}\" for \"{flag}\" flag: {err}")))
}

const REPLICAS_ONLY: &str = "replicas can only be used with replicated or replicated-job mode";
const MAX_CONCURRENT_ONLY: &str = "max-concurrent can only be used with replicated-job mode";

/// `--mode` with `--replicas` and `--max-concurrent`, as Docker's CLI and daemon combine them: a
/// replicated job's concurrency defaults to its replicas, its replicas to its concurrency, both to 1.
fn create_mode(mode: ModeArg, replicas: Option<u64>, max_concurrent: Option<u64>) -> Result<ServiceMode, SpecError> {
    if max_concurrent.is_some() && mode != ModeArg::ReplicatedJob {
        return Err(SpecError(MAX_CONCURRENT_ONLY.into()));
    }
    Ok(match mode {
        ModeArg::Global | ModeArg::GlobalJob if replicas.is_some() => return Err(SpecError(REPLICAS_ONLY.into())),
        ModeArg::Global => ServiceMode::Global,
        ModeArg::GlobalJob => ServiceMode::GlobalJob,
        ModeArg::Replicated => ServiceMode::Replicated { replicas: replicas.unwrap_or(1) },
        ModeArg::ReplicatedJob => {
            let max_concurrent = max_concurrent.or(replicas).unwrap_or(1);
            ServiceMode::ReplicatedJob { max_concurrent, total_completions: replicas.unwrap_or(max_concurrent) }
        }
    })
}

fn default_name(image: &str) -> String {
    let base = image.rsplit('/').next().unwrap_or(image);
    let base = base.split([':', '@']).next().unwrap_or(base);
    let base: String = base.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    let suffix = &shoal_core::api::new_id()[..6];
    format!("{}-{suffix}", base.trim_matches('-'))
}

/// The spec `service update` sends: `current` with the flags applied.
pub fn update_spec(current: &ServiceSpec, args: &UpdateArgs) -> Result<ServiceSpec, SpecError> {
    let mut spec = current.clone();
    if let Some(image) = &args.image {
        spec.task.image = image.clone();
    }
    if let Some(replicas) = args.replicas {
        match &mut spec.mode {
            ServiceMode::Replicated { replicas: r } => *r = replicas,
            ServiceMode::ReplicatedJob { total_completions, .. } => *total_completions = replicas,
            ServiceMode::Global | ServiceMode::GlobalJob => return Err(SpecError(REPLICAS_ONLY.into())),
        }
    }
    if !args.mount_add.is_empty() || !args.mount_rm.is_empty() {
        let add: Vec<_> =
            args.mount_add.iter().map(|m| parse_mount_flag("--mount-add", m)).collect::<Result<_, _>>()?;
        shoal_core::api::mounts::update_mounts(&mut spec.task.mounts, &add, &args.mount_rm);
    }
    if let Some(concurrent) = args.max_concurrent {
        match &mut spec.mode {
            ServiceMode::ReplicatedJob { max_concurrent, .. } => *max_concurrent = concurrent,
            _ => return Err(SpecError(MAX_CONCURRENT_ONLY.into())),
        }
    }
    if let Some(line) = &args.args {
        spec.task.args = shell_words("--args", line)?;
    }
    for key in &args.env_rm {
        spec.task.env.retain(|e| env_key(e) != key);
    }
    for entry in &args.env_add {
        let entry = env_entry(entry);
        let key = env_key(&entry).to_string();
        spec.task.env.retain(|e| env_key(e) != key);
        spec.task.env.push(entry);
    }
    let placement = &mut spec.task.placement;
    placement.constraints.retain(|c| !args.constraint_rm.iter().any(|rm| rm.replace(' ', "") == c.replace(' ', "")));
    for constraint in &args.constraint_add {
        if !placement.constraints.contains(constraint) {
            placement.constraints.push(constraint.clone());
        }
    }
    placement.preferences.retain(|p| !args.placement_pref_rm.contains(p));
    placement.preferences.extend(args.placement_pref_add.iter().cloned());
    for key in &args.label_rm {
        spec.labels.remove(key);
    }
    for entry in &args.label_add {
        let (k, v) = label(entry);
        spec.labels.insert(k, v);
    }
    let options = &mut spec.task.options;
    for key in &args.sysctl_rm {
        options.sysctls.remove(key);
    }
    for entry in &args.sysctl_add {
        let (key, value) = sysctl(entry)?;
        options.sysctls.insert(key, value);
    }
    for name in &args.ulimit_rm {
        let name = name.split('=').next().unwrap_or(name);
        options.ulimits.retain(|u| u.name != name);
    }
    for entry in &args.ulimit_add {
        let ulimit = Ulimit::parse(entry).map_err(SpecError)?;
        options.ulimits.retain(|u| u.name != ulimit.name);
        options.ulimits.push(ulimit);
    }
    edit_list(&mut options.dns, &args.dns_add, &args.dns_rm);
    edit_list(&mut options.dns_search, &args.dns_search_add, &args.dns_search_rm);
    edit_list(&mut options.dns_options, &args.dns_option_add, &args.dns_option_rm);
    let hosts_add: Vec<String> = args.host_add.iter().map(|h| host(h)).collect::<Result<_, _>>()?;
    let hosts_rm: Vec<String> = args.host_rm.iter().map(|h| host(h)).collect::<Result<_, _>>()?;
    edit_list(&mut options.hosts, &hosts_add, &hosts_rm);
    for key in &args.container_label_rm {
        spec.task.container_labels.remove(key);
    }
    for entry in &args.container_label_add {
        let (k, v) = label(entry);
        spec.task.container_labels.insert(k, v);
    }
    for rm in &args.publish_rm {
        let (target, protocol) = rm.split_once('/').unwrap_or((rm, "tcp"));
        let target: u16 = target
            .rsplit(':')
            .next()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| SpecError(format!("invalid value {rm:?} for --publish-rm: use target[/protocol]")))?;
        spec.ports.retain(|p| !(p.target_port == target && p.protocol == protocol));
    }
    for add in &args.publish_add {
        let port = parse_port(add)?;
        spec.ports.retain(|p| !(p.target_port == port.target_port && p.protocol == port.protocol));
        spec.ports.push(port);
    }
    spec.task.networks.retain(|n| !args.network_rm.contains(n));
    for network in &args.network_add {
        if !spec.task.networks.contains(network) {
            spec.task.networks.push(network.clone());
        }
    }
    // As docker/cli: the removed ones (by name or id) go, the added ones join (a target taken twice
    // is refused by the manager).
    spec.task.secrets.retain(|r| !args.secret_rm.iter().any(|x| *x == r.name || *x == r.id));
    spec.task.secrets.extend(args.secret_add.iter().cloned());
    spec.task.configs.retain(|r| !args.config_rm.iter().any(|x| *x == r.name || *x == r.id));
    spec.task.configs.extend(args.config_add.iter().cloned());
    apply_common(&mut spec, &args.common);
    apply_health(&mut spec, &args.common, false)?;
    if args.force {
        spec.task.force_update += 1;
    }
    Ok(spec)
}

/// `--health-*` and `--no-healthcheck`, as docker/cli applies them: `service create` makes a new
/// health check when any is given; `service update` changes only the fields given (an empty
/// `--health-cmd` goes back to the image's command). `--no-healthcheck` with any `--health-*` is refused.
pub fn apply_health(spec: &mut ServiceSpec, flags: &CommonServiceFlags, create: bool) -> Result<(), SpecError> {
    let any_health = flags.health_cmd.is_some()
        || flags.health_interval.is_some()
        || flags.health_retries.is_some()
        || flags.health_start_period.is_some()
        || flags.health_timeout.is_some();
    if flags.no_healthcheck {
        if any_health {
            return Err(SpecError("--no-healthcheck conflicts with --health-* options".into()));
        }
        spec.task.healthcheck = Some(HealthConfig::none());
        return Ok(());
    }
    if !any_health {
        return Ok(());
    }
    let mut check = if create { HealthConfig::default() } else { spec.task.healthcheck.clone().unwrap_or_default() };
    if check.is_disabled() {
        check.test.clear();
    }
    if let Some(v) = flags.health_interval {
        check.interval_ms = v;
    }
    if let Some(v) = flags.health_timeout {
        check.timeout_ms = v;
    }
    if let Some(v) = flags.health_start_period {
        check.start_period_ms = v;
    }
    if let Some(v) = flags.health_retries {
        check.retries = v;
    }
    if let Some(cmd) = &flags.health_cmd {
        check.test = if cmd.is_empty() { Vec::new() } else { vec!["CMD-SHELL".into(), cmd.clone()] };
    }
    spec.task.healthcheck = Some(check);
    Ok(())
}
