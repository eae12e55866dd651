//! The real arm of the executor seam: [`DockerExecutor`], containers through the Docker Engine API
//! (bollard, over the local unix socket or `DOCKER_HOST`).
//!
//! - The API version is negotiated at connect time: Debian's engine may speak an older API than
//!   bollard's default, and a request at a newer version is refused outright.
//! - Images are pulled when missing, as Swarm's nodes pull them, unless the daemon runs with
//!   `--pull never` ([`PullPolicy::Never`]): `prepare_image` first inspects the local image store, so
//!   an image that exists locally is never pulled (nor is the registry asked about it). A pull uses
//!   the service's registry credentials (`--with-registry-auth`) when it has some; they go to the
//!   engine in the `X-Registry-Auth` header and nowhere else. A failed pull is the task's error in
//!   Docker's words: "No such image: IMAGE" when the registry has no such image, otherwise the
//!   engine's own error ("unauthorized: authentication required", "pull access denied for …").
//! - Containers carry the spec's labels (shoal's node/service/task ids, so a restarted agent finds
//!   its containers again with `list`), env, command and limits. A container with no bridges runs
//!   with host networking; one with bridges (the node-local bridges of its networks, DESIGN §8) is
//!   attached to the first at create and to the others right after, with its aliases, the mesh
//!   resolver as its DNS server and its `mode=host` ports bound on the node's address.
//! - Bridges are Docker bridge networks ([`Executor::ensure_network`]): the Linux device named by
//!   `com.docker.network.bridge.name`, IPAM subnet/gateway/range from the node's lease, labelled so
//!   they are found again and cleaned up. An existing one must match; Docker refuses to remove one
//!   that still has containers.
//! - `stop` is Docker's: SIGTERM, then SIGKILL after the grace (rounded up to whole seconds). Note
//!   that a process running as PID 1 without a handler ignores SIGTERM and is killed at the grace.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::engine_pull::{self, EngineAddr, PullFailure};
use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::container::NetworkingConfig;
use bollard::container::{
    Config, CreateContainerOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StartContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, EndpointSettings, HealthConfig as DockerHealthConfig,
    HostConfig, HostConfigLogConfig, Ipam, IpamConfig, Network, PortBinding as DockerPortBinding, ResourcesUlimits,
};
use bollard::network::{ConnectNetworkOptions, CreateNetworkOptions, InspectNetworkOptions, ListNetworksOptions};
use bollard::Docker;
use futures_util::StreamExt;
use shoal_core::api::{HealthConfig, RegistryAuth};
use shoal_core::env::{
    BridgeSpec, ContainerSpec, ContainerState, ContainerSummary, Executor, ExecutorError, Health, LogLine, LogsQuery,
};

/// When a [`DockerExecutor`] pulls images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull an image that is not in the local store (Swarm's behaviour, and the default).
    #[default]
    Missing,
    /// Never pull: an image must be loaded on the node beforehand (`docker load`/`docker import`).
    Never,
}

/// How a [`DockerExecutor`] behaves.
#[derive(Debug, Clone, Default)]
pub struct DockerOptions {
    pub pull: PullPolicy,
}

/// Containers through the local Docker Engine.
#[derive(Debug, Clone)]
pub struct DockerExecutor {
    docker: Docker,
    options: DockerOptions,
    /// Where tasks' secret and config files are written (a tmpfs): see [`crate::task_files`].
    files_root: std::path::PathBuf,
}

/// Map a bollard error: 404 is "no such thing", transport failures mean the engine is unavailable.
fn map_error(error: DockerError, id: &str) -> ExecutorError {
    match error {
        DockerError::DockerResponseServerError { status_code: 404, .. } => {
            ExecutorError::NoSuchContainer { id: id.to_string() }
        }
        DockerError::DockerResponseServerError { status_code, message } => {
            ExecutorError::Runtime(format!("{id}: the engine answered {status_code}: {message}"))
        }
        DockerError::IOError { .. }
        | DockerError::HyperResponseError { .. }
        | DockerError::HyperLegacyError { .. }
        | DockerError::RequestTimeoutError
        | DockerError::SocketNotFoundError(_) => ExecutorError::Unavailable(format!("{id}: {error}")),
        other => ExecutorError::Runtime(format!("{id}: {other}")),
    }
}

/// A task's mount as the engine's `HostConfig.Mounts` takes it: the engine creates a named volume the
/// node lacks, with the mount's driver, options and labels (as Swarm's executor relies on it to).
fn docker_mount(mount: &shoal_core::api::Mount) -> bollard::models::Mount {
    use bollard::models::{
        MountBindOptions, MountBindOptionsPropagationEnum, MountTmpfsOptions, MountTypeEnum, MountVolumeOptions,
        MountVolumeOptionsDriverConfig,
    };
    use shoal_core::api::MountType;
    let typ = match mount.kind {
        MountType::Bind => MountTypeEnum::BIND,
        MountType::Volume => MountTypeEnum::VOLUME,
        MountType::Tmpfs => MountTypeEnum::TMPFS,
    };
    let volume_options = mount.volume.as_ref().map(|v| MountVolumeOptions {
        no_copy: v.no_copy.then_some(true),
        labels: (!v.labels.is_empty()).then(|| v.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        driver_config: (!v.driver.is_empty() || !v.driver_options.is_empty()).then(|| MountVolumeOptionsDriverConfig {
            name: (!v.driver.is_empty()).then(|| v.driver.clone()),
            options: (!v.driver_options.is_empty())
                .then(|| v.driver_options.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        }),
        ..Default::default()
    });
    let tmpfs_options = mount.tmpfs.as_ref().map(|t| MountTmpfsOptions {
        size_bytes: (t.size_bytes > 0).then(|| i64::try_from(t.size_bytes).unwrap_or(i64::MAX)),
        mode: t.mode.map(i64::from),
        ..Default::default()
    });
    let bind_options = (!mount.bind_propagation.is_empty()).then(|| MountBindOptions {
        propagation: mount.bind_propagation.parse::<MountBindOptionsPropagationEnum>().ok(),
        ..Default::default()
    });
    bollard::models::Mount {
        target: Some(mount.target.clone()),
        source: (!mount.source.is_empty()).then(|| mount.source.clone()),
        typ: Some(typ),
        read_only: mount.read_only.then_some(true),
        volume_options,
        tmpfs_options,
        bind_options,
        ..Default::default()
    }
}

fn status_code(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

impl DockerExecutor {
    /// Connect to the local engine (`DOCKER_HOST`, else the unix socket), negotiate the API version
    /// and check that the engine answers.
    pub async fn connect(options: DockerOptions) -> Result<Self, ExecutorError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| ExecutorError::Unavailable(format!("cannot reach the Docker engine: {e}")))?;
        Self::with_docker(docker, options).await
    }

    /// Use an existing bollard client (negotiating its API version). Image pulls still go to the
    /// engine `DOCKER_HOST` (else the local socket) names: see [`crate::engine_pull`].
    pub async fn with_docker(docker: Docker, options: DockerOptions) -> Result<Self, ExecutorError> {
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| ExecutorError::Unavailable(format!("the Docker engine does not answer: {e}")))?;
        docker
            .ping()
            .await
            .map_err(|e| ExecutorError::Unavailable(format!("the Docker engine does not answer: {e}")))?;
        let executor = DockerExecutor { docker, options, files_root: crate::task_files::default_root() };
        executor.sweep_task_files().await;
        Ok(executor)
    }

    /// Remove the files of tasks whose containers are gone (left by a daemon that was killed).
    /// Only directories older than a minute: one being written for a container about to be
    /// created (by another daemon on this engine) is never touched.
    async fn sweep_task_files(&self) {
        for task in crate::task_files::stale_tasks(&self.files_root, Duration::from_secs(60)) {
            match self.list(&[(shoal_core::env::executor::LABEL_TASK_ID.to_string(), task.clone())]).await {
                Ok(containers) if containers.is_empty() => crate::task_files::forget(&self.files_root, &task),
                _ => {}
            }
        }
    }

    /// The task a container runs (its label), for its files' directory.
    fn task_of(labels: &std::collections::BTreeMap<String, String>, fallback: &str) -> String {
        labels.get(shoal_core::env::executor::LABEL_TASK_ID).cloned().unwrap_or_else(|| fallback.to_string())
    }

    /// Remove the secret and config files of container `id`'s task.
    async fn forget_files(&self, id: &str) {
        if let Ok(summary) = self.inspect(id).await {
            crate::task_files::forget(&self.files_root, &Self::task_of(&summary.labels, &summary.name));
        }
    }

    /// The bollard client, for callers that need more of the Engine API.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn summary(id: &str, response: ContainerInspectResponse) -> ContainerSummary {
        let addresses = response
            .network_settings
            .as_ref()
            .and_then(|settings| settings.networks.as_ref())
            .map(|networks| {
                networks
                    .iter()
                    .filter_map(|(name, endpoint)| {
                        endpoint.ip_address.as_ref().filter(|ip| !ip.is_empty()).map(|ip| (name.clone(), ip.clone()))
                    })
                    .collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_default();
        let config = response.config.unwrap_or_default();
        let state = response.state.unwrap_or_default();
        let exit_code = state.exit_code.unwrap_or(0);
        // Present only when the container has a health check (its own or the image's).
        let health = state
            .health
            .as_ref()
            .and_then(|health| health.status)
            .and_then(|status| Health::from_docker(status.as_ref()));
        let state = match state.status {
            Some(ContainerStateStatusEnum::CREATED) | Some(ContainerStateStatusEnum::EMPTY) | None => {
                ContainerState::Created
            }
            Some(ContainerStateStatusEnum::RUNNING)
            | Some(ContainerStateStatusEnum::PAUSED)
            | Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Running,
            Some(ContainerStateStatusEnum::REMOVING)
            | Some(ContainerStateStatusEnum::EXITED)
            | Some(ContainerStateStatusEnum::DEAD) => ContainerState::Exited { code: exit_code },
        };
        ContainerSummary {
            id: response.id.unwrap_or_else(|| id.to_string()),
            // The engine reports names with a leading slash.
            name: response.name.unwrap_or_default().trim_start_matches('/').to_string(),
            image: config.image.unwrap_or_default(),
            labels: config.labels.unwrap_or_default().into_iter().collect::<BTreeMap<_, _>>(),
            state,
            addresses,
            health,
        }
    }

    async fn pull(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<(), ExecutorError> {
        let version = self.docker.client_version();
        let version = format!("{}.{}", version.major_version, version.minor_version);
        let addr = EngineAddr::from_env().map_err(ExecutorError::Unavailable)?;
        engine_pull::pull(&addr, &version, &with_default_tag(image), auth).await.map_err(|failure| {
            let unavailable = |reason: String| ExecutorError::ImageUnavailable { image: image.to_string(), reason };
            match failure {
                // The registry has no such repository or tag (the engine says "manifest for … not
                // found: manifest unknown"): Swarm's task error for it is "No such image".
                PullFailure::Refused { status: 404, .. } => unavailable(format!("No such image: {image}")),
                // Anything else in the engine's words: "unauthorized: authentication required",
                // "pull access denied for …, repository does not exist or may require 'docker login'".
                PullFailure::Refused { message, .. } | PullFailure::Failed(message) => unavailable(message),
                PullFailure::Engine(reason) => ExecutorError::Unavailable(reason),
            }
        })
    }
}

/// The Engine API's `HealthConfig` (durations in nanoseconds; 0 and `[]` inherit the image's).
fn docker_health_config(config: &HealthConfig) -> DockerHealthConfig {
    let nanos = |ms: u64| i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
    DockerHealthConfig {
        test: Some(config.test.clone()),
        interval: Some(nanos(config.interval_ms)),
        timeout: Some(nanos(config.timeout_ms)),
        retries: Some(i64::try_from(config.retries).unwrap_or(i64::MAX)),
        start_period: Some(nanos(config.start_period_ms)),
        start_interval: None,
    }
}

/// `image` with Docker's default tag when it names neither a tag nor a digest: the engine pulls
/// every tag of a bare repository name.
fn with_default_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

#[async_trait]
impl Executor for DockerExecutor {
    async fn prepare_image(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<(), ExecutorError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => match self.options.pull {
                PullPolicy::Missing => self.pull(image, auth).await,
                PullPolicy::Never => Err(ExecutorError::ImageUnavailable {
                    image: image.to_string(),
                    reason: format!(
                        "No such image: {image} (this daemon runs with --pull never: load the image on the node with \
                         `docker load` or `docker import`)"
                    ),
                }),
            },
            Err(e) => Err(map_error(e, image)),
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, ExecutorError> {
        // On bridges: attached to the first at create, the others right after; else host networking.
        let first = spec.networks.first();
        let endpoint = |bridge: &BridgeSpec| EndpointSettings {
            aliases: (!bridge.aliases.is_empty()).then(|| bridge.aliases.clone()),
            ..Default::default()
        };
        let mut port_bindings: HashMap<String, Option<Vec<DockerPortBinding>>> = HashMap::new();
        for binding in &spec.port_bindings {
            port_bindings
                .entry(format!("{}/{}", binding.target, binding.protocol))
                .or_default()
                .get_or_insert_with(Vec::new)
                .push(DockerPortBinding {
                    host_ip: (!binding.host_ip.is_empty()).then(|| binding.host_ip.clone()),
                    host_port: Some(binding.published.to_string()),
                });
        }
        let exposed: HashMap<String, HashMap<(), ()>> =
            port_bindings.keys().map(|key| (key.clone(), HashMap::new())).collect();
        // Secrets and configs: files on a tmpfs, bind-mounted read-only.
        let task = Self::task_of(&spec.labels, &spec.name);
        let binds = crate::task_files::materialize(&self.files_root, &task, &spec.files)
            .map_err(|why| ExecutorError::Runtime(format!("{}: {why}", spec.name)))?;
        let options = &spec.options;
        let nonempty = |list: &Vec<String>| (!list.is_empty()).then(|| list.clone());
        let host_config = HostConfig {
            binds: (!binds.is_empty()).then_some(binds),
            network_mode: Some(first.map_or_else(|| "host".to_string(), |bridge| bridge.name.clone())),
            memory: spec.memory_limit_bytes.and_then(|bytes| i64::try_from(bytes).ok()),
            nano_cpus: spec.nano_cpus.and_then(|nanos| i64::try_from(nanos).ok()),
            dns: (!spec.dns.is_empty()).then(|| spec.dns.clone()),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            cap_add: nonempty(&options.cap_add),
            cap_drop: nonempty(&options.cap_drop),
            sysctls: (!options.sysctls.is_empty())
                .then(|| options.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>()),
            ulimits: (!options.ulimits.is_empty()).then(|| {
                options
                    .ulimits
                    .iter()
                    .map(|u| ResourcesUlimits { name: Some(u.name.clone()), soft: Some(u.soft), hard: Some(u.hard) })
                    .collect()
            }),
            init: options.init,
            readonly_rootfs: options.read_only.then_some(true),
            dns_search: nonempty(&options.dns_search),
            dns_options: nonempty(&options.dns_options),
            extra_hosts: nonempty(&options.hosts),
            // An empty name is the engine's default driver, with the options given.
            log_config: options.log_driver.as_ref().map(|driver| HostConfigLogConfig {
                typ: (!driver.name.is_empty()).then(|| driver.name.clone()),
                config: Some(driver.options.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            }),
            mounts: (!spec.mounts.is_empty()).then(|| spec.mounts.iter().map(docker_mount).collect()),
            ..Default::default()
        };
        let config = Config {
            image: Some(spec.image.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(spec.env.clone()),
            working_dir: (!spec.workdir.is_empty()).then(|| spec.workdir.clone()),
            user: (!spec.user.is_empty()).then(|| spec.user.clone()),
            hostname: (!spec.hostname.is_empty()).then(|| spec.hostname.clone()),
            stop_signal: (!options.stop_signal.is_empty()).then(|| options.stop_signal.clone()),
            labels: Some(spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>()),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(host_config),
            healthcheck: spec.healthcheck.as_ref().map(docker_health_config),
            networking_config: first.map(|bridge| NetworkingConfig {
                endpoints_config: [(bridge.name.clone(), endpoint(bridge))].into_iter().collect(),
            }),
            ..Default::default()
        };
        let options =
            (!spec.name.is_empty()).then(|| CreateContainerOptions { name: spec.name.clone(), platform: None });
        let id = match self.docker.create_container(options, config).await {
            Ok(response) => response.id,
            // On create, 404 means the image is missing (or the network: say which).
            Err(e) if status_code(&e) == Some(404) => {
                let message = engine_message(&e);
                if message.contains("network") {
                    return Err(ExecutorError::Runtime(format!("{}: {message}", spec.name)));
                }
                return Err(ExecutorError::ImageUnavailable { image: spec.image.clone(), reason: message });
            }
            // The engine's own words for a mount it refuses ("invalid mount config for type \"bind\":
            // bind source path does not exist: /x") are the task's error, as in Swarm.
            Err(e) if status_code(&e) == Some(400) && engine_message(&e).starts_with("invalid mount config") => {
                return Err(ExecutorError::InvalidMount(engine_message(&e)));
            }
            Err(e) => return Err(map_error(e, &spec.name)),
        };
        for bridge in spec.networks.iter().skip(1) {
            let connect = ConnectNetworkOptions { container: id.clone(), endpoint_config: endpoint(bridge) };
            if let Err(e) = self.docker.connect_network(&bridge.name, connect).await {
                // Half-made containers are not left behind.
                let _ = self.remove(&id).await;
                return Err(ExecutorError::Runtime(format!(
                    "{}: cannot attach to network {}: {}",
                    spec.name,
                    bridge.name,
                    engine_message(&e)
                )));
            }
        }
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), ExecutorError> {
        match self.docker.start_container(id, None::<StartContainerOptions<String>>).await {
            // 304: already running.
            Err(e) if status_code(&e) == Some(304) => Ok(()),
            result => result.map_err(|e| map_error(e, id)),
        }
    }

    async fn wait(&self, id: &str) -> Result<i64, ExecutorError> {
        // "not-running" returns at once for a container that was never started, with code 0; so a
        // created container is waited on until its next exit instead.
        let current = self.inspect(id).await?;
        let condition = match current.state {
            ContainerState::Exited { code } => return Ok(code),
            ContainerState::Created => "next-exit",
            ContainerState::Running => "not-running",
        };
        let mut waiting = self.docker.wait_container(id, Some(WaitContainerOptions { condition }));
        let waited = waiting.next().await;
        // The task ended: its secret and config files go (the container is never started again).
        crate::task_files::forget(&self.files_root, &Self::task_of(&current.labels, &current.name));
        match waited {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(map_error(e, id)),
            None => Err(ExecutorError::Runtime(format!("{id}: the engine ended the wait without a status"))),
        }
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), ExecutorError> {
        let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let options = StopContainerOptions { t: i64::try_from(seconds).unwrap_or(i64::MAX) };
        match self.docker.stop_container(id, Some(options)).await {
            // 304: already stopped.
            Err(e) if status_code(&e) == Some(304) => Ok(()),
            result => result.map_err(|e| map_error(e, id)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), ExecutorError> {
        self.forget_files(id).await;
        let options = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        self.docker.remove_container(id, Some(options)).await.map_err(|e| map_error(e, id))
    }

    async fn inspect(&self, id: &str) -> Result<ContainerSummary, ExecutorError> {
        let response =
            self.docker.inspect_container(id, None::<InspectContainerOptions>).await.map_err(|e| map_error(e, id))?;
        Ok(Self::summary(id, response))
    }

    async fn list(&self, labels: &[(String, String)]) -> Result<Vec<ContainerSummary>, ExecutorError> {
        let label_filters: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut filters = HashMap::new();
        if !label_filters.is_empty() {
            filters.insert("label".to_string(), label_filters);
        }
        let options = ListContainersOptions { all: true, filters, ..Default::default() };
        let listed = self.docker.list_containers(Some(options)).await.map_err(|e| map_error(e, "list"))?;
        let mut summaries = Vec::with_capacity(listed.len());
        // The list gives no exit codes, so each container is inspected; one removed in between is
        // simply no longer there.
        for container in listed {
            let Some(id) = container.id else { continue };
            match self.inspect(&id).await {
                Ok(summary) => summaries.push(summary),
                Err(ExecutorError::NoSuchContainer { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        summaries.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(summaries)
    }

    async fn logs(&self, id: &str, query: &LogsQuery) -> Result<Vec<LogLine>, ExecutorError> {
        // Docker's `since` is whole seconds and inclusive: ask from the cursor's second, for every
        // line from there, and let the query cut at the exact stamp.
        let since = query.after_ns.map_or(0, |ns| (ns / 1_000_000_000) as i64);
        let tail = match (query.after_ns, query.tail) {
            (None, Some(tail)) => tail.to_string(),
            _ => "all".to_string(),
        };
        let options = LogsOptions { stdout: true, stderr: true, timestamps: true, since, tail, ..Default::default() };
        let mut stream = self.docker.logs(id, Some(options));
        let mut lines: Vec<LogLine> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| map_error(e, id))?;
            let stderr = matches!(chunk, LogOutput::StdErr { .. });
            let bytes = chunk.into_bytes();
            for text in String::from_utf8_lossy(&bytes).lines() {
                // Each frame starts with its RFC 3339 stamp; a line without one keeps the last stamp.
                let stamped = text.split_once(' ').and_then(|(stamp, rest)| Some((parse_stamp(stamp)?, rest)));
                let (time_ns, text) = match stamped {
                    Some(stamped) => stamped,
                    None => (lines.last().map_or(0, |l| l.time_ns), text),
                };
                lines.push(LogLine { time_ns, text: text.to_string(), stderr });
            }
        }
        Ok(query.select(lines.iter()))
    }

    async fn ensure_network(&self, bridge: &BridgeSpec) -> Result<(), ExecutorError> {
        match self.docker.inspect_network(&bridge.name, None::<InspectNetworkOptions<String>>).await {
            Ok(existing) => return check_bridge(bridge, &existing),
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(network_error(e, &bridge.name)),
        }
        let options = CreateNetworkOptions {
            name: bridge.name.clone(),
            check_duplicate: true,
            driver: "bridge".to_string(),
            ipam: Ipam {
                driver: Some("default".into()),
                config: Some(vec![IpamConfig {
                    subnet: Some(bridge.subnet.clone()),
                    ip_range: (!bridge.ip_range.is_empty()).then(|| bridge.ip_range.clone()),
                    gateway: (!bridge.gateway.is_empty()).then(|| bridge.gateway.clone()),
                    auxiliary_addresses: None,
                }]),
                options: None,
            },
            options: [(BRIDGE_NAME_OPTION.to_string(), bridge.device.clone())].into_iter().collect(),
            labels: bridge.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ..Default::default()
        };
        let create_failed = |e: &DockerError| {
            ExecutorError::Runtime(format!(
                "cannot create the bridge network {} (subnet {}, device {}): {}",
                bridge.name,
                bridge.subnet,
                bridge.device,
                engine_message(e)
            ))
        };
        match self.docker.create_network(options).await {
            Ok(_) => Ok(()),
            // Made meanwhile by someone else (another runner of this node): it must match.
            Err(e) if status_code(&e) == Some(409) => {
                let existing = self
                    .docker
                    .inspect_network(&bridge.name, None::<InspectNetworkOptions<String>>)
                    .await
                    .map_err(|e| network_error(e, &bridge.name))?;
                check_bridge(bridge, &existing)
            }
            // Two runners of this node creating it at once: Docker 20.10 answers the second with
            // "Pool overlaps with other one on this address space" (the first holds the subnet), not
            // 409, before the first's network can be inspected. Once it shows up (within 2 s), it is
            // that one, and it must match.
            Err(e) if engine_message(&e).contains("Pool overlaps") => {
                for _ in 0..20 {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    if let Ok(existing) =
                        self.docker.inspect_network(&bridge.name, None::<InspectNetworkOptions<String>>).await
                    {
                        return check_bridge(bridge, &existing);
                    }
                }
                Err(create_failed(&e))
            }
            Err(e) => Err(create_failed(&e)),
        }
    }

    async fn remove_network(&self, name: &str) -> Result<(), ExecutorError> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => {
                Err(ExecutorError::Runtime(format!("error while removing network: {name}: {}", engine_message(&e))))
            }
        }
    }

    async fn list_networks(&self, labels: &[(String, String)]) -> Result<Vec<String>, ExecutorError> {
        let mut filters = HashMap::new();
        let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if wanted.is_empty() {
            // Only bridges made by `ensure_network` (they all carry shoal's node label).
            wanted.push(shoal_core::env::executor::LABEL_NODE_ID.to_string());
        }
        filters.insert("label".to_string(), wanted);
        let listed = self
            .docker
            .list_networks(Some(ListNetworksOptions { filters }))
            .await
            .map_err(|e| network_error(e, "list"))?;
        let mut names: Vec<String> = listed.into_iter().filter_map(|n| n.name).collect();
        names.sort();
        Ok(names)
    }

    async fn exposed_ports(&self, image: &str) -> Result<Vec<(String, u16)>, ExecutorError> {
        let inspected = match self.docker.inspect_image(image).await {
            Ok(inspected) => inspected,
            Err(e) if status_code(&e) == Some(404) => {
                return Err(ExecutorError::ImageUnavailable {
                    image: image.to_string(),
                    reason: "not in the local image store".into(),
                })
            }
            Err(e) => return Err(map_error(e, image)),
        };
        let declared = inspected.config.and_then(|config| config.exposed_ports).unwrap_or_default();
        let mut ports: Vec<(String, u16)> = declared.keys().filter_map(|key| parse_exposed(key)).collect();
        ports.sort();
        ports.dedup();
        Ok(ports)
    }

    /// Read from the container's own socket tables (`/proc/<pid>/net/tcp` and `tcp6` of its main
    /// process, which show its network namespace): the engine must run on this host, as the
    /// executor's does.
    async fn listening_ports(&self, id: &str) -> Result<Vec<u16>, ExecutorError> {
        let inspected =
            self.docker.inspect_container(id, None::<InspectContainerOptions>).await.map_err(|e| map_error(e, id))?;
        let pid = inspected.state.and_then(|state| state.pid).filter(|pid| *pid > 0).ok_or_else(|| {
            ExecutorError::Runtime(format!("container {id} has no running process to read its sockets from"))
        })?;
        let mut ports = Vec::new();
        for table in ["tcp", "tcp6"] {
            let path = format!("/proc/{pid}/net/{table}");
            match tokio::fs::read_to_string(&path).await {
                Ok(text) => ports.extend(listening_tcp_ports(&text)),
                // A kernel without IPv6 has no tcp6 table.
                Err(e) if table == "tcp6" && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ExecutorError::Runtime(format!("reading {path}: {e}"))),
            }
        }
        ports.sort_unstable();
        ports.dedup();
        Ok(ports)
    }
}

/// The ports of the `LISTEN` sockets in a `/proc/net/tcp` or `tcp6` table that other hosts can
/// reach: sockets bound to a loopback address are left out.
fn listening_tcp_ports(table: &str) -> Vec<u16> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            let (address, port) = local.split_once(':')?;
            let loopback = match address.len() {
                // 127.0.0.0/8, in the kernel's byte order: the first octet is the last two digits.
                8 => address.ends_with("7F"),
                // ::1, and ::ffff:127.x.y.z.
                32 => {
                    address == "00000000000000000000000001000000"
                        || address.starts_with("0000000000000000FFFF0000") && address.ends_with("7F")
                }
                _ => return None,
            };
            (state == LISTEN && !loopback).then(|| u16::from_str_radix(port, 16).ok()).flatten()
        })
        .collect()
}

/// The Docker network option naming the Linux bridge device.
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// `80/tcp` (or `80`, which is TCP) as `("tcp", 80)`.
fn parse_exposed(key: &str) -> Option<(String, u16)> {
    let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    let protocol = protocol.to_ascii_lowercase();
    matches!(protocol.as_str(), "tcp" | "udp" | "sctp").then_some(())?;
    Some((protocol, port.parse().ok()?))
}

/// The engine's own message in an error (without bollard's wrapping).
fn engine_message(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn network_error(error: DockerError, name: &str) -> ExecutorError {
    match map_error(error, name) {
        ExecutorError::NoSuchContainer { id } => ExecutorError::Runtime(format!("network {id} not found")),
        other => other,
    }
}

/// An existing bridge network must be the one `bridge` describes: a bridge, on the same device,
/// with the same subnet, gateway and range. Otherwise say what differs (a leftover of another swarm,
/// or someone else's network with our name).
fn check_bridge(bridge: &BridgeSpec, existing: &Network) -> Result<(), ExecutorError> {
    let mut differences = Vec::new();
    let driver = existing.driver.clone().unwrap_or_default();
    if driver != "bridge" {
        differences.push(format!("driver {driver:?} (want \"bridge\")"));
    }
    let device = existing.options.as_ref().and_then(|o| o.get(BRIDGE_NAME_OPTION)).cloned().unwrap_or_default();
    if device != bridge.device {
        differences.push(format!("device {device:?} (want {:?})", bridge.device));
    }
    let ipam = existing.ipam.as_ref().and_then(|ipam| ipam.config.as_ref()).and_then(|c| c.first()).cloned();
    let ipam = ipam.unwrap_or_default();
    let mut same = |what: &str, have: Option<String>, want: &str| {
        let have = have.unwrap_or_default();
        if !want.is_empty() && have != want {
            differences.push(format!("{what} {have:?} (want {want:?})"));
        }
    };
    same("subnet", ipam.subnet, &bridge.subnet);
    same("gateway", ipam.gateway, &bridge.gateway);
    same("ip range", ipam.ip_range, &bridge.ip_range);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(ExecutorError::Runtime(format!(
            "network {} exists with another configuration: {}; remove it (docker network rm {}) or leave the swarm",
            bridge.name,
            differences.join(", "),
            bridge.name
        )))
    }
}

/// Nanoseconds since the Unix epoch of Docker's RFC 3339 log stamp.
fn parse_stamp(stamp: &str) -> Option<u64> {
    let time = chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
    u64::try_from(time.timestamp_nanos_opt()?).ok()
}

#[cfg(test)]
mod tests {
    use super::listening_tcp_ports;

    #[test]
    fn listening_ports_leave_out_loopback_and_connected_sockets() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F92 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0200000A:0050 0300000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: 0200000A:0051 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
";
        assert_eq!(listening_tcp_ports(tcp), vec![0x1F91, 0x51]);
        let tcp6 = "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0
   1: 00000000000000000000000001000000:1F93 00000000000000000000000000000000:0000 0A 0
   2: 0000000000000000FFFF00000100007F:1F94 00000000000000000000000000000000:0000 0A 0
   3: garbage
";
        assert_eq!(listening_tcp_ports(tcp6), vec![0x1F90]);
    }
}
