//! Simulated containers: they start after a delay, run, exit or crash as their command or an
//! injected fault says, and die with their host.
//!
//! **Mounts.** A container's mounts are checked as Docker's daemon checks them at create
//! ([`Mount::config_error`], and a bind source must be a path the host has: [`DEFAULT_HOST_PATHS`]
//! or one added with [`SimExecutor::add_host_path`], else "invalid mount config for type \"bind\":
//! bind source path does not exist: …"); a named volume the host lacks is created then, with the
//! mount's labels and driver, and outlives its containers (it dies with nothing but the host's
//! disk, which the simulator keeps). Each container keeps the mounts it was made with
//! ([`SimExecutor::mounts_of`]).
//!
//! Commands understood (enough for the conformance suite and scenarios): `sleep N` exits 0 after N
//! seconds, `exit N` and `sh -c "exit N"` exit with N at once; anything else runs until stopped.
//! Faults are set per image with [`SimExecutor::set_behavior`] (slow starts, crashes after a while,
//! images that cannot be pulled, images whose registry wants credentials). Every random choice comes
//! from the run's seed.
//!
//! **Service traffic** (with [`SimExecutor::with_mesh`]). A running container serves
//! [`crate::serve`]'s request/response protocol on the ports its image EXPOSEs
//! ([`exposed_ports_of`]: a table of well-known images, or what a scenario's `image X exposes …`
//! says). Where it listens:
//! - a container on bridges ([`Executor::ensure_network`]) gets the lowest free address of each
//!   bridge's `ip_range` (not the subnet's network, gateway or broadcast address), held while it
//!   runs and reported in [`ContainerSummary::addresses`] under the bridge's name, and listens on
//!   `address:port` there — reachable only from its own host, as Docker's bridges are;
//! - a container without bridges shares its host's network: it listens on `0.0.0.0:port` (the host's
//!   name answers) and reports the host's address under `host` (Docker's name for that network);
//!   a port another host-networked container already holds is left to that one (the simulated
//!   process logs it and runs on, so replicas sharing a node still start);
//! - each `mode=host` [`PortBinding`] is bound on the host as Docker binds it: a port already taken
//!   fails the start with Docker's words.
//!
//! **Health checks.** A container whose service (or image: [`Behavior::healthcheck`]) has a health
//! check is `starting` until its first check, one interval after the start, then `healthy`; its
//! checks fail from the start when the command is `false` or `exit N` (N ≠ 0) or the image is marked
//! [`Behavior::health_fails`], and from the moment of [`SimExecutor::fail_health`] otherwise. After
//! `retries` failures in a row (those within the start period do not count) it is `unhealthy`.
//! Checks take no time here, so the timeout never fires.
//!
//! The processes run on the host's container runtime (a spawner the cluster gives, so a daemon
//! restart leaves them alone); a stop sends SIGTERM to them and waits until their connections are
//! closed, then exits (143), or kills them when the grace period ends (137: open connections are
//! reset); a crash of the host resets everything at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shoal_core::api::{HealthConfig, Labels, Mount, MountType, RegistryAuth};
use shoal_core::env::{
    runtime, BridgeSpec, ContainerSpec, ContainerState, ContainerSummary, Executor, ExecutorError, Health, LogLine,
    LogsQuery, PortBinding,
};
use tokio::sync::watch;

use crate::mesh_net::{Owner, SimMeshNet};
use crate::serve::{self, Phase, Spawner, Tracker};

/// How containers of one image behave, set by scenario faults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Behavior {
    /// Extra time between `start` and running.
    pub start_delay: Duration,
    /// Exit by itself after running this long.
    pub exit_after: Option<Duration>,
    /// The exit code used with `exit_after` (non-zero = a crash).
    pub exit_code: i64,
    /// `prepare_image` fails as if the registry refused the image.
    pub pull_fails: bool,
    /// The ports the image EXPOSEs (`(protocol, port)`), replacing [`exposed_ports_of`]'s.
    pub exposes: Option<Vec<(String, u16)>>,
    /// TCP ports its processes also listen on without the image EXPOSEing them.
    pub listens: Vec<u16>,
    /// How long its processes take to answer a request (their service time).
    pub answer_delay: Duration,
    /// Its processes die at once on SIGTERM (open connections are reset) instead of finishing what
    /// they serve.
    pub exits_on_sigterm: bool,
    /// The image's own HEALTHCHECK (used when the service sets none).
    pub healthcheck: Option<HealthConfig>,
    /// Health checks of its containers fail from the start (whatever the check runs).
    pub health_fails: bool,
}

/// Whether a health check's command fails here: `false`, `/bin/false` or `exit N` (N ≠ 0), run
/// directly (`CMD`) or by the shell (`CMD-SHELL`). Any other command passes.
pub fn health_test_fails(test: &[String]) -> bool {
    let words: Vec<&str> = match test.first().map(String::as_str) {
        Some("CMD-SHELL") => test.get(1).map(|line| line.split_whitespace().collect()).unwrap_or_default(),
        Some("CMD") => test[1..].iter().map(String::as_str).collect(),
        _ => return false,
    };
    let words = match words.as_slice() {
        ["sh" | "/bin/sh", "-c", rest @ ..] => rest.iter().flat_map(|w| w.split_whitespace()).collect(),
        _ => words,
    };
    match words.as_slice() {
        ["false" | "/bin/false", ..] => true,
        ["exit", code] => code.trim_matches(['"', '\'']).parse::<i64>().is_ok_and(|c| c != 0),
        _ => false,
    }
}

/// A running container's health check.
#[derive(Debug, Clone)]
struct SimHealth {
    config: HealthConfig,
    /// When the container started (virtual Unix ms).
    started_ms: u64,
    /// From when its checks fail (virtual Unix ms); `None` = they pass.
    fails_from_ms: Option<u64>,
}

impl SimHealth {
    /// Docker's status at `now_ms`: checks run every interval from the start; a pass is healthy,
    /// `retries` counted failures in a row unhealthy.
    fn status(&self, now_ms: u64) -> Health {
        let interval = self.config.interval_or_default().max(1);
        let done = now_ms.saturating_sub(self.started_ms) / interval;
        if done == 0 {
            return Health::Starting;
        }
        let Some(fails_from) = self.fails_from_ms else { return Health::Healthy };
        // The first check at or after `fails_from`, and the first outside the start period.
        let first_failed = fails_from.saturating_sub(self.started_ms).div_ceil(interval).max(1);
        if first_failed > done {
            return Health::Healthy;
        }
        let first_counted = first_failed.max(self.config.start_period_ms.div_ceil(interval).max(1));
        let counted = (done + 1).saturating_sub(first_counted);
        if counted >= self.config.retries_or_default() {
            Health::Unhealthy
        } else if first_failed > 1 {
            Health::Healthy
        } else {
            Health::Starting
        }
    }
}

/// The health check a container runs: the service's, its unset parts from the image's; none when
/// switched off (`NONE`) or when neither gives a command.
fn effective_healthcheck(service: Option<&HealthConfig>, image: Option<&HealthConfig>) -> Option<HealthConfig> {
    let image = image.filter(|c| !c.is_disabled());
    let mut config = match service {
        Some(c) if c.is_disabled() => return None,
        Some(c) => c.clone(),
        None => image?.clone(),
    };
    if let Some(image) = image {
        if config.test.is_empty() {
            config.test = image.test.clone();
        }
        let inherit = |own: &mut u64, theirs: u64| {
            if *own == 0 {
                *own = theirs;
            }
        };
        inherit(&mut config.interval_ms, image.interval_ms);
        inherit(&mut config.timeout_ms, image.timeout_ms);
        inherit(&mut config.retries, image.retries);
        inherit(&mut config.start_period_ms, image.start_period_ms);
    }
    (!config.test.is_empty()).then_some(config)
}

/// The ports an image EXPOSEs unless a scenario says otherwise: by the image's repository name (no
/// registry, no tag), for the images scenarios use. Others expose nothing.
pub fn exposed_ports_of(image: &str) -> Vec<(String, u16)> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let repository = last.split(':').next().unwrap_or(last);
    let tcp = |port: u16| vec![("tcp".to_string(), port)];
    match repository {
        "nginx" | "httpd" | "web" | "caddy" | "whoami" | "traefik" | "app" | "api" | "frontend" | "backend" => tcp(80),
        "redis" => tcp(6379),
        "postgres" => tcp(5432),
        "mysql" | "mariadb" => tcp(3306),
        "memcached" => tcp(11211),
        "mongo" => tcp(27017),
        "registry" => tcp(5000),
        "rabbitmq" => tcp(5672),
        "coredns" | "dns" => vec![("tcp".to_string(), 53), ("udp".to_string(), 53)],
        _ => Vec::new(),
    }
}

#[derive(Debug)]
struct SimContainer {
    summary: ContainerSummary,
    state: watch::Sender<ContainerState>,
    command: Vec<String>,
    logs: Vec<LogLine>,
    /// Bumped on every start/stop, so a stale exit timer does nothing.
    epoch: u64,
    networks: Vec<BridgeSpec>,
    port_bindings: Vec<PortBinding>,
    /// Its processes while it runs and serves.
    serving: Option<Serving>,
    /// The mounts it was created with.
    mounts: Vec<Mount>,
    /// The service's health check (the image's is added at start).
    healthcheck: Option<HealthConfig>,
    /// Its health check while it runs.
    health: Option<SimHealth>,
    /// The secret and config files it was given (held in memory, as a tmpfs would).
    files: Vec<shoal_core::env::ContainerFile>,
}

/// Paths every simulated host has, for bind mounts.
pub const DEFAULT_HOST_PATHS: &[&str] =
    &["/", "/etc", "/tmp", "/var", "/var/lib", "/var/log", "/var/run", "/var/run/docker.sock", "/srv", "/opt"];

/// A named volume on a simulated host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimVolume {
    pub driver: String,
    pub labels: Labels,
}

/// A running container's processes.
#[derive(Debug)]
struct Serving {
    owner: Owner,
    /// The TCP ports its processes listen on (what `listening_ports` reports).
    tcp_ports: Vec<u16>,
    phase: watch::Sender<Phase>,
    tracker: Tracker,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Serving {
    /// Kill the processes: their listeners close and open connections are reset.
    fn kill(self, mesh: &SimMeshNet) {
        mesh.owner_down(&self.owner);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What a node's containers need for service traffic.
#[derive(Clone)]
struct ContainerNet {
    mesh: SimMeshNet,
    spawner: Spawner,
}

#[derive(Default)]
struct ExecState {
    containers: BTreeMap<String, SimContainer>,
    images: BTreeSet<String>,
    behaviors: BTreeMap<String, Behavior>,
    unavailable_images: BTreeSet<String>,
    /// Images whose registry wants credentials: image → (username, password).
    private_images: BTreeMap<String, (String, String)>,
    /// Images pulled, in order, with the username each pull used ("" = anonymous).
    pulls: Vec<(String, String)>,
    next_id: u64,
    /// Bridges made by `ensure_network`, by name.
    bridges: BTreeMap<String, BridgeSpec>,
    /// Host paths added to [`DEFAULT_HOST_PATHS`].
    host_paths: BTreeSet<String>,
    /// Named volumes, made by the first container that mounts them.
    volumes: BTreeMap<String, SimVolume>,
}

/// One node's container runtime. Clone it into the node's init closure so containers outlive an agent
/// restart; call [`SimExecutor::host_crash`] when the whole host goes down.
#[derive(Clone)]
pub struct SimExecutor {
    node: String,
    state: Arc<Mutex<ExecState>>,
    net: Option<ContainerNet>,
}

impl std::fmt::Debug for SimExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimExecutor").field("node", &self.node).finish_non_exhaustive()
    }
}

/// What a command does once running.
fn scripted_exit(command: &[String]) -> Option<(Duration, i64)> {
    let words: Vec<&str> = command.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["sleep", secs] => secs.parse::<f64>().ok().map(|s| (Duration::from_secs_f64(s.max(0.0)), 0)),
        ["exit", code] => code.parse().ok().map(|c| (Duration::ZERO, c)),
        ["sh", "-c", script] | ["/bin/sh", "-c", script] => {
            let script = script.trim();
            script.strip_prefix("exit ").and_then(|c| c.trim().parse().ok()).map(|c| (Duration::ZERO, c))
        }
        _ => None,
    }
}

impl SimExecutor {
    /// An executor for node `node` (used to make container ids readable and unique per node).
    pub fn new(node: impl Into<String>) -> Self {
        SimExecutor { node: node.into(), state: Arc::new(Mutex::new(ExecState::default())), net: None }
    }

    /// An executor whose running containers serve traffic on `mesh`, their processes run by
    /// `spawner` (the host's container runtime).
    pub fn with_mesh(node: impl Into<String>, mesh: SimMeshNet, spawner: Spawner) -> Self {
        SimExecutor {
            node: node.into(),
            state: Arc::new(Mutex::new(ExecState::default())),
            net: Some(ContainerNet { mesh, spawner }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut ExecState) -> R) -> R {
        f(&mut self.state.lock().expect("sim executor lock"))
    }

    /// Make every container of `image` behave as `behavior` from now on.
    pub fn set_behavior(&self, image: &str, behavior: Behavior) {
        self.with(|state| state.behaviors.insert(image.to_string(), behavior));
    }

    /// `image` can be neither found locally nor pulled.
    pub fn mark_unavailable(&self, image: &str) {
        self.with(|state| state.unavailable_images.insert(image.to_string()));
    }

    /// `image` is in a registry that wants `username`/`password`: a pull with other credentials, or
    /// none, is refused in the engine's words (a registry with htpasswd auth, as Docker reports it).
    pub fn require_credentials(&self, image: &str, username: &str, password: &str) {
        self.with(|state| state.private_images.insert(image.to_string(), (username.into(), password.into())));
    }

    /// Every pull so far: (image, username it pulled with, "" when anonymous).
    /// Give the host a path (a bind mount's source exists from now on).
    pub fn add_host_path(&self, path: &str) {
        self.with(|state| state.host_paths.insert(path.trim_end_matches('/').to_string()));
    }

    /// The host's named volumes.
    pub fn volumes(&self) -> BTreeMap<String, SimVolume> {
        self.with(|state| state.volumes.clone())
    }

    /// The mounts of each container (by container name) the host has now.
    pub fn mounts_of(&self) -> BTreeMap<String, Vec<Mount>> {
        self.with(|state| state.containers.values().map(|c| (c.summary.name.clone(), c.mounts.clone())).collect())
    }

    /// The secret and config files of every container on this node (by container name), removed
    /// ones excluded.
    pub fn files(&self) -> Vec<(String, shoal_core::env::ContainerFile)> {
        self.with(|state| {
            state
                .containers
                .values()
                .flat_map(|c| c.files.iter().map(|f| (c.summary.name.clone(), f.clone())))
                .collect()
        })
    }

    pub fn pulls(&self) -> Vec<(String, String)> {
        self.with(|state| state.pulls.clone())
    }

    /// The host went down: every running container is gone with exit code 137, as after a reboot.
    pub fn host_crash(&self) {
        let killed: Vec<Serving> = self.with(|state| {
            let mut killed = Vec::new();
            for container in state.containers.values_mut() {
                container.epoch += 1;
                if !matches!(*container.state.borrow(), ContainerState::Exited { .. }) {
                    container.state.send_replace(ContainerState::Exited { code: 137 });
                    container.summary.state = ContainerState::Exited { code: 137 };
                    container.summary.addresses.clear();
                }
                killed.extend(container.serving.take());
            }
            killed
        });
        self.kill_all(killed);
    }

    fn kill_all(&self, killed: Vec<Serving>) {
        if let Some(net) = &self.net {
            for serving in killed {
                serving.kill(&net.mesh);
            }
        }
    }

    /// Someone ran `docker rm -f` on a container behind the agent's back. Returns whether it existed.
    pub fn remove_behind_back(&self, id: &str) -> bool {
        let removed = self.with(|state| state.containers.remove(id));
        match removed {
            Some(mut container) => {
                container.state.send_replace(ContainerState::Exited { code: 137 });
                self.kill_all(container.serving.take().into_iter().collect());
                true
            }
            None => false,
        }
    }

    /// The container's health checks fail from now on (a scenario's `container unhealthy`).
    /// Returns whether it runs with a health check.
    pub fn fail_health(&self, id: &str) -> bool {
        let now = runtime::unix_millis();
        self.with(|state| {
            let Some(health) = state.containers.get_mut(id).and_then(|c| c.health.as_mut()) else { return false };
            health.fails_from_ms.get_or_insert(now);
            true
        })
    }

    /// Ids of running containers (sorted), for invariants and scenario expectations.
    pub fn running(&self) -> Vec<ContainerSummary> {
        self.with(|state| {
            state
                .containers
                .values()
                .filter(|c| c.summary.state == ContainerState::Running)
                .map(|c| c.summary.clone())
                .collect()
        })
    }

    fn set_state(&self, id: &str, epoch: u64, new_state: ContainerState, line: &str) {
        let killed = self.with(|state| {
            let container = state.containers.get_mut(id)?;
            if container.epoch != epoch {
                return None;
            }
            container.summary.state = new_state;
            container.state.send_replace(new_state);
            let line = LogLine::after(container.logs.last(), runtime::unix_nanos(), line.to_string(), false);
            container.logs.push(line);
            if matches!(new_state, ContainerState::Exited { .. }) {
                container.summary.addresses.clear();
                return container.serving.take();
            }
            None
        });
        self.kill_all(killed.into_iter().collect());
    }

    fn log(container: &mut SimContainer, text: String) {
        let line = LogLine::after(container.logs.last(), runtime::unix_nanos(), text, false);
        container.logs.push(line);
    }

    /// The ports `image` serves.
    fn exposed(&self, image: &str) -> Vec<(String, u16)> {
        let declared = self.with(|state| state.behaviors.get(image).and_then(|b| b.exposes.clone()));
        declared.unwrap_or_else(|| exposed_ports_of(image))
    }

    /// Give a starting container its addresses and start its processes on its ports. Fails (and
    /// starts nothing) when a `mode=host` port is taken, as Docker's start does.
    fn start_serving(&self, id: &str) -> Result<(), ExecutorError> {
        let Some(net) = self.net.clone() else { return Ok(()) };
        let (image, name, networks, bindings) = self.with(|state| {
            let c = state.containers.get(id).ok_or_else(|| Self::no_such(id))?;
            Ok::<_, ExecutorError>((
                c.summary.image.clone(),
                c.summary.name.clone(),
                c.networks.clone(),
                c.port_bindings.clone(),
            ))
        })?;
        // What the processes serve: the EXPOSEd ports and those they listen on undeclared.
        let mut exposed = self.exposed(&image);
        let listens = self.with(|state| state.behaviors.get(&image).map(|b| b.listens.clone()).unwrap_or_default());
        exposed.extend(listens.into_iter().map(|port| ("tcp".to_string(), port)));
        exposed.sort();
        exposed.dedup();
        let tcp_ports: Vec<u16> = exposed.iter().filter(|(proto, _)| proto == "tcp").map(|(_, port)| *port).collect();
        let answer_delay = self.with(|state| state.behaviors.get(&image).map(|b| b.answer_delay).unwrap_or_default());
        let owner = Owner::container(self.node.clone(), id);
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        let mut taken = Vec::new();
        // mode=host bindings first: a taken one fails the start.
        for binding in &bindings {
            let ip = if binding.host_ip.is_empty() { "0.0.0.0" } else { binding.host_ip.as_str() };
            let addr = format!("{ip}:{}", binding.published);
            let bound = if binding.protocol == "udp" {
                net.mesh.bind(owner.clone(), &addr).map(|s| udp.push(s))
            } else {
                net.mesh.listen(owner.clone(), &addr).map(|l| tcp.push(l))
            };
            if bound.is_err() {
                drop((tcp, udp));
                return Err(ExecutorError::Runtime(format!(
                    "driver failed programming external connectivity on endpoint {name} ({id}): Bind for {addr} failed: port is already allocated"
                )));
            }
        }
        let addresses = self.with(|state| {
            let addresses = Self::allocate(state, id, &networks, &self.node);
            if let Some(c) = state.containers.get_mut(id) {
                c.summary.addresses = addresses.clone();
            }
            addresses
        });
        let ips: Vec<String> =
            if networks.is_empty() { vec!["0.0.0.0".to_string()] } else { addresses.values().cloned().collect() };
        // On bridges the container has a network namespace of its own; without, it shares the host's.
        let own_netns = !networks.is_empty();
        for ip in &ips {
            for (protocol, port) in &exposed {
                let addr = format!("{ip}:{port}");
                let bound = if protocol == "udp" {
                    net.mesh.bind_in(owner.clone(), &addr, own_netns).map(|s| udp.push(s))
                } else {
                    net.mesh.listen_in(owner.clone(), &addr, own_netns).map(|l| tcp.push(l))
                };
                if let Err(err) = bound {
                    taken.push(format!("{protocol}/{port}: {err}"));
                }
            }
        }
        let (phase, _) = watch::channel(Phase::Running);
        let tracker: Tracker = Arc::new(());
        let mut tasks = Vec::new();
        for listener in tcp {
            let run = serve::accept_loop(
                listener,
                name.clone(),
                answer_delay,
                phase.subscribe(),
                tracker.clone(),
                net.spawner.clone(),
            );
            tasks.push((net.spawner)(Box::pin(run)));
        }
        for socket in udp {
            tasks.push((net.spawner)(Box::pin(serve::udp_loop(socket, name.clone(), phase.subscribe()))));
        }
        let serving = Serving { owner, tcp_ports, phase, tracker, tasks };
        let stale = self.with(|state| {
            let Some(c) = state.containers.get_mut(id) else { return Some(serving) };
            for problem in taken {
                Self::log(c, format!("listen {problem} (the host's port is held by another process)"));
            }
            c.serving.replace(serving)
        });
        self.kill_all(stale.into_iter().collect());
        Ok(())
    }

    /// Addresses for a starting container: the lowest free one of each bridge's `ip_range` (held by
    /// no other container: an exited one's are cleared), or the host's own under `host` when it has
    /// no bridge.
    fn allocate(state: &ExecState, id: &str, networks: &[BridgeSpec], host: &str) -> BTreeMap<String, String> {
        if networks.is_empty() {
            return [("host".to_string(), host.to_string())].into_iter().collect();
        }
        let mut addresses = BTreeMap::new();
        for bridge in networks {
            let used: BTreeSet<&str> = state
                .containers
                .iter()
                .filter(|(other, _)| other.as_str() != id)
                .filter_map(|(_, c)| c.summary.addresses.get(&bridge.name).map(String::as_str))
                .collect();
            if let Some(ip) = lowest_free(bridge, &used) {
                addresses.insert(bridge.name.clone(), ip);
            }
        }
        addresses
    }

    fn no_such(id: &str) -> ExecutorError {
        ExecutorError::NoSuchContainer { id: id.to_string() }
    }
}

#[async_trait]
impl Executor for SimExecutor {
    async fn prepare_image(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<(), ExecutorError> {
        let (present, fails, wanted) = self.with(|state| {
            let behavior = state.behaviors.get(image).cloned().unwrap_or_default();
            (
                state.images.contains(image),
                behavior.pull_fails || state.unavailable_images.contains(image),
                state.private_images.get(image).cloned(),
            )
        });
        if present {
            return Ok(());
        }
        let unavailable = |reason: String| Err(ExecutorError::ImageUnavailable { image: image.to_string(), reason });
        if fails {
            return unavailable(format!("No such image: {image}"));
        }
        let username = auth.map(|a| a.username.clone()).unwrap_or_default();
        if let Some((user, password)) = wanted {
            match auth.filter(|a| !a.is_empty()) {
                None => return unavailable("no basic auth credentials".into()),
                Some(a) if a.username != user || a.password != password => {
                    return unavailable("unauthorized: authentication required".into())
                }
                Some(_) => {}
            }
        }
        // A pull takes a while.
        runtime::sleep(runtime::random_duration(Duration::from_millis(50), Duration::from_millis(300))).await;
        self.with(|state| {
            state.images.insert(image.to_string());
            state.pulls.push((image.to_string(), username));
        });
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, ExecutorError> {
        self.with(|state| {
            if !state.images.contains(&spec.image) {
                return Err(ExecutorError::ImageUnavailable {
                    image: spec.image.clone(),
                    reason: format!("No such image: {}", spec.image),
                });
            }
            if let Some(missing) = spec.networks.iter().find(|b| !state.bridges.contains_key(&b.name)) {
                return Err(ExecutorError::Runtime(format!("network {} not found", missing.name)));
            }
            for mount in &spec.mounts {
                if let Some(err) = mount.config_error() {
                    return Err(ExecutorError::InvalidMount(err));
                }
                let source = mount.source.trim_end_matches('/');
                let source = if source.is_empty() { "/" } else { source };
                if mount.kind == MountType::Bind
                    && !DEFAULT_HOST_PATHS.contains(&source)
                    && !state.host_paths.contains(source)
                {
                    return Err(ExecutorError::InvalidMount(format!(
                        "invalid mount config for type \"bind\": bind source path does not exist: {}",
                        mount.source
                    )));
                }
            }
            for mount in spec.mounts.iter().filter(|m| m.kind == MountType::Volume && !m.source.is_empty()) {
                state.volumes.entry(mount.source.clone()).or_insert_with(|| {
                    let options = mount.volume.clone().unwrap_or_default();
                    let driver = if options.driver.is_empty() { "local".to_string() } else { options.driver };
                    SimVolume { driver, labels: options.labels }
                });
            }
            state.next_id += 1;
            let id = format!("{}-c{}", self.node, state.next_id);
            let summary = ContainerSummary {
                addresses: Default::default(),
                health: None,
                id: id.clone(),
                name: spec.name.clone(),
                image: spec.image.clone(),
                labels: spec.labels.clone(),
                state: ContainerState::Created,
            };
            let (tx, _) = watch::channel(ContainerState::Created);
            let command = spec.command.clone();
            let container = SimContainer {
                summary,
                state: tx,
                command,
                logs: Vec::new(),
                epoch: 0,
                networks: spec.networks.clone(),
                port_bindings: spec.port_bindings.clone(),
                serving: None,
                mounts: spec.mounts.clone(),
                healthcheck: spec.healthcheck.clone(),
                health: None,
                files: spec.files.clone(),
            };
            state.containers.insert(id.clone(), container);
            Ok(id)
        })
    }

    async fn start(&self, id: &str) -> Result<(), ExecutorError> {
        let (epoch, image, command) = self.with(|state| {
            let container = state.containers.get_mut(id).ok_or_else(|| Self::no_such(id))?;
            container.epoch += 1;
            Ok::<_, ExecutorError>((container.epoch, container.summary.image.clone(), container.command.clone()))
        })?;
        let behavior = self.with(|state| state.behaviors.get(&image).cloned().unwrap_or_default());
        if !behavior.start_delay.is_zero() {
            runtime::sleep(behavior.start_delay).await;
        }
        if self.with(|state| state.containers.get(id).map(|c| c.epoch)) != Some(epoch) {
            return Ok(()); // stopped or removed while starting
        }
        self.start_serving(id)?;
        self.set_state(id, epoch, ContainerState::Running, "started");
        let now = runtime::unix_millis();
        self.with(|state| {
            let Some(c) = state.containers.get_mut(id).filter(|c| c.epoch == epoch) else { return };
            c.health = effective_healthcheck(c.healthcheck.as_ref(), behavior.healthcheck.as_ref()).map(|config| {
                let fails = behavior.health_fails || health_test_fails(&config.test);
                SimHealth { config, started_ms: now, fails_from_ms: fails.then_some(now) }
            });
        });
        let exit = scripted_exit(&command).or(behavior.exit_after.map(|after| (after, behavior.exit_code)));
        if let Some((after, code)) = exit {
            if after.is_zero() {
                self.set_state(id, epoch, ContainerState::Exited { code }, "exited");
            } else {
                let this = self.clone();
                let id = id.to_string();
                runtime::spawn(async move {
                    runtime::sleep(after).await;
                    this.set_state(&id, epoch, ContainerState::Exited { code }, "exited");
                });
            }
        }
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<i64, ExecutorError> {
        let mut rx = self
            .with(|state| state.containers.get(id).map(|c| c.state.subscribe()))
            .ok_or_else(|| Self::no_such(id))?;
        loop {
            if let ContainerState::Exited { code } = *rx.borrow_and_update() {
                return Ok(code);
            }
            if rx.changed().await.is_err() {
                return Err(Self::no_such(id));
            }
        }
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), ExecutorError> {
        let epoch = self.with(|state| state.containers.get(id).map(|c| c.epoch)).ok_or_else(|| Self::no_such(id))?;
        let running = self.with(|state| state.containers.get(id).map(|c| c.summary.state == ContainerState::Running));
        if running == Some(true) {
            // SIGTERM is honoured quickly: the processes stop accepting and close idle connections.
            runtime::sleep(runtime::random_duration(Duration::from_millis(1), Duration::from_millis(20))).await;
            let tracker = self.with(|state| {
                let container = state.containers.get(id).filter(|c| c.epoch == epoch)?;
                if state.behaviors.get(&container.summary.image).is_some_and(|b| b.exits_on_sigterm) {
                    return None; // dies at once: set_state below kills it
                }
                let serving = container.serving.as_ref()?;
                serving.phase.send_replace(Phase::Terminating);
                Some(serving.tracker.clone())
            });
            let mut code = 143;
            if let Some(tracker) = tracker {
                let deadline = runtime::now() + grace;
                // The executor's own clone is one; each open connection holds another.
                while Arc::strong_count(&tracker) > 2 {
                    if runtime::now() >= deadline {
                        code = 137;
                        break;
                    }
                    runtime::sleep(serve::DRAIN_POLL.min(deadline - runtime::now())).await;
                }
            }
            let line = if code == 143 { "stopped" } else { "killed after the stop grace period" };
            self.set_state(id, epoch, ContainerState::Exited { code }, line);
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), ExecutorError> {
        let removed = self.with(|state| state.containers.remove(id));
        match removed {
            Some(mut container) => {
                if !matches!(*container.state.borrow(), ContainerState::Exited { .. }) {
                    container.state.send_replace(ContainerState::Exited { code: 137 });
                }
                self.kill_all(container.serving.take().into_iter().collect());
                Ok(())
            }
            None => Err(Self::no_such(id)),
        }
    }

    async fn inspect(&self, id: &str) -> Result<ContainerSummary, ExecutorError> {
        let now = runtime::unix_millis();
        self.with(|state| {
            let c = state.containers.get_mut(id)?;
            // Docker keeps the last status once the container stops.
            if c.summary.state == ContainerState::Running {
                c.summary.health = c.health.as_ref().map(|h| h.status(now));
            }
            Some(c.summary.clone())
        })
        .ok_or_else(|| Self::no_such(id))
    }

    async fn list(&self, labels: &[(String, String)]) -> Result<Vec<ContainerSummary>, ExecutorError> {
        Ok(self.with(|state| {
            state
                .containers
                .values()
                .filter(|c| labels.iter().all(|(k, v)| c.summary.labels.get(k) == Some(v)))
                .map(|c| c.summary.clone())
                .collect()
        }))
    }

    async fn logs(&self, id: &str, query: &LogsQuery) -> Result<Vec<LogLine>, ExecutorError> {
        self.with(|state| {
            let container = state.containers.get(id).ok_or_else(|| Self::no_such(id))?;
            Ok(query.select(container.logs.iter()))
        })
    }

    async fn ensure_network(&self, bridge: &BridgeSpec) -> Result<(), ExecutorError> {
        let subnet = Cidr::parse(&bridge.subnet).ok_or_else(|| {
            ExecutorError::Runtime(format!("invalid subnet {:?} for network {}", bridge.subnet, bridge.name))
        })?;
        Cidr::parse(&bridge.ip_range).ok_or_else(|| {
            ExecutorError::Runtime(format!("invalid ip range {:?} for network {}", bridge.ip_range, bridge.name))
        })?;
        self.with(|state| {
            if let Some(existing) = state.bridges.get(&bridge.name) {
                if existing.subnet != bridge.subnet
                    || existing.gateway != bridge.gateway
                    || existing.ip_range != bridge.ip_range
                {
                    return Err(ExecutorError::Runtime(format!(
                        "network {} exists with subnet {} (gateway {}, range {}), not {} ({}, {})",
                        bridge.name,
                        existing.subnet,
                        existing.gateway,
                        existing.ip_range,
                        bridge.subnet,
                        bridge.gateway,
                        bridge.ip_range
                    )));
                }
                return Ok(());
            }
            let overlaps =
                state.bridges.values().any(|other| Cidr::parse(&other.subnet).is_some_and(|o| o.overlaps(&subnet)));
            if overlaps {
                return Err(ExecutorError::Runtime(
                    "Error response from daemon: Pool overlaps with other one on this address space".into(),
                ));
            }
            state.bridges.insert(bridge.name.clone(), bridge.clone());
            Ok(())
        })
    }

    async fn remove_network(&self, name: &str) -> Result<(), ExecutorError> {
        self.with(|state| {
            let attached = state
                .containers
                .values()
                .any(|c| c.summary.state == ContainerState::Running && c.networks.iter().any(|b| b.name == name));
            if attached {
                return Err(ExecutorError::Runtime(format!(
                    "error while removing network: network {name} has active endpoints"
                )));
            }
            state.bridges.remove(name);
            Ok(())
        })
    }

    async fn list_networks(&self, labels: &[(String, String)]) -> Result<Vec<String>, ExecutorError> {
        Ok(self.with(|state| {
            state
                .bridges
                .values()
                .filter(|b| labels.iter().all(|(k, v)| b.labels.get(k) == Some(v)))
                .map(|b| b.name.clone())
                .collect()
        }))
    }

    async fn exposed_ports(&self, image: &str) -> Result<Vec<(String, u16)>, ExecutorError> {
        let mut ports = self.exposed(image);
        ports.sort();
        Ok(ports)
    }

    async fn listening_ports(&self, id: &str) -> Result<Vec<u16>, ExecutorError> {
        self.with(|state| {
            let container = state.containers.get(id).ok_or_else(|| Self::no_such(id))?;
            Ok(container.serving.as_ref().map(|s| s.tcp_ports.clone()).unwrap_or_default())
        })
    }
}

/// An IPv4 network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    base: u32,
    prefix: u32,
}

impl Cidr {
    fn parse(text: &str) -> Option<Cidr> {
        let (ip, prefix) = text.split_once('/')?;
        let ip: std::net::Ipv4Addr = ip.parse().ok()?;
        let prefix: u32 = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some(Cidr { base: u32::from(ip) & Self::mask(prefix), prefix })
    }

    fn mask(prefix: u32) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    fn last(&self) -> u32 {
        self.base | !Self::mask(self.prefix)
    }

    fn overlaps(&self, other: &Cidr) -> bool {
        self.base <= other.last() && other.base <= self.last()
    }
}

/// The lowest address of `bridge`'s `ip_range` that is not its subnet's network, broadcast or
/// gateway address and not in `used`.
fn lowest_free(bridge: &BridgeSpec, used: &BTreeSet<&str>) -> Option<String> {
    let subnet = Cidr::parse(&bridge.subnet)?;
    let range = Cidr::parse(&bridge.ip_range)?;
    (range.base..=range.last())
        .filter(|ip| *ip != subnet.base && *ip != subnet.last())
        .map(|ip| std::net::Ipv4Addr::from(ip).to_string())
        .find(|ip| *ip != bridge.gateway && !used.contains(ip.as_str()))
}

#[cfg(test)]
mod health_tests {
    use super::*;

    fn check(interval_ms: u64, retries: u64, start_period_ms: u64) -> HealthConfig {
        HealthConfig {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval_ms,
            timeout_ms: 0,
            retries,
            start_period_ms,
        }
    }

    #[test]
    fn commands_that_fail_here() {
        let shell = |line: &str| vec!["CMD-SHELL".to_string(), line.to_string()];
        assert!(health_test_fails(&shell("false")));
        assert!(health_test_fails(&shell("exit 1")));
        assert!(!health_test_fails(&shell("exit 0")));
        assert!(!health_test_fails(&shell("wget -q localhost")));
        assert!(health_test_fails(&["CMD".into(), "sh".into(), "-c".into(), "exit 2".into()]));
        assert!(!health_test_fails(&["NONE".into()]));
    }

    #[test]
    fn starting_then_healthy_then_unhealthy_after_retries() {
        let passing = SimHealth { config: check(1_000, 3, 0), started_ms: 10_000, fails_from_ms: None };
        assert_eq!(passing.status(10_999), Health::Starting);
        assert_eq!(passing.status(11_000), Health::Healthy);
        // Failing from 5.5 s on: checks at 6, 7, 8 s fail; the third makes it unhealthy.
        let failing = SimHealth { fails_from_ms: Some(15_500), ..passing.clone() };
        assert_eq!(failing.status(15_000), Health::Healthy);
        assert_eq!(failing.status(17_999), Health::Healthy);
        assert_eq!(failing.status(18_000), Health::Unhealthy);
        // Failing from the start with a 2.5 s start period: checks 1 and 2 do not count.
        let early = SimHealth { config: check(1_000, 2, 2_500), started_ms: 0, fails_from_ms: Some(0) };
        assert_eq!(early.status(3_500), Health::Starting);
        assert_eq!(early.status(4_000), Health::Unhealthy);
    }

    #[test]
    fn the_services_check_overrides_the_images() {
        let image =
            HealthConfig { test: vec!["CMD".into(), "probe".into()], interval_ms: 5_000, ..HealthConfig::default() };
        let service = HealthConfig { retries: 7, ..HealthConfig::default() };
        let merged = effective_healthcheck(Some(&service), Some(&image)).unwrap();
        assert_eq!((merged.test.clone(), merged.interval_ms, merged.retries), (image.test.clone(), 5_000, 7));
        assert_eq!(effective_healthcheck(Some(&HealthConfig::none()), Some(&image)), None);
        assert_eq!(effective_healthcheck(None, Some(&image)), Some(image.clone()));
        assert_eq!(effective_healthcheck(Some(&service), None), None, "no command anywhere: no check");
    }
}
