//! The command line, in Docker's words and flags (docker/cli `cli/command/{swarm,node,service,network}`),
//! with Docker's defaults. Values are checked while parsing, so a bad `--restart-delay 5x` is
//! refused by name before anything is sent.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::format;

#[derive(Debug, Parser)]
#[command(name = "shoal", version, about = "A container orchestrator with Docker Swarm's commands")]
pub struct Cli {
    /// Daemon socket to connect to: unix:///path/shoal.sock or tcp://127.0.0.1:PORT (env SHOAL_HOST).
    /// Before the command, as Docker's `-H` (`service create --host` is an extra host entry).
    #[arg(short = 'H', long, value_name = "HOST")]
    pub host: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Docker's TLS flags: on the CLI, how to reach a daemon on `tcp://` (present a client certificate,
/// trust the daemon through the CA); on `shoal daemon`, what `--tcp` serves with.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Use TLS and verify the remote (the daemon: require client certificates signed by --tlscacert)
    #[arg(long)]
    pub tlsverify: bool,
    /// Trust certs signed only by this CA (default ~/.docker/ca.pem, or in $DOCKER_CERT_PATH)
    #[arg(long, value_name = "PATH")]
    pub tlscacert: Option<PathBuf>,
    /// Path to TLS certificate file (default ~/.docker/cert.pem)
    #[arg(long, value_name = "PATH")]
    pub tlscert: Option<PathBuf>,
    /// Path to TLS key file (default ~/.docker/key.pem)
    #[arg(long, value_name = "PATH")]
    pub tlskey: Option<PathBuf>,
}

impl TlsArgs {
    /// The files to use, when `--tlsverify` is on; certificate paths without it are a mistake.
    pub fn files(&self) -> Result<Option<crate::api_tls::TlsFiles>, String> {
        if !self.tlsverify {
            if self.tlscacert.is_some() || self.tlscert.is_some() || self.tlskey.is_some() {
                return Err("--tlscacert, --tlscert and --tlskey take effect with --tlsverify".into());
            }
            return Ok(None);
        }
        Ok(Some(crate::api_tls::TlsFiles::or_defaults(
            self.tlscacert.clone(),
            self.tlscert.clone(),
            self.tlskey.clone(),
        )))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the swarm
    #[command(subcommand)]
    Swarm(SwarmCommand),
    /// Manage swarm nodes
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage swarm services
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Manage Swarm stacks
    #[command(subcommand)]
    Stack(StackCommand),
    /// Manage Swarm secrets
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Manage Swarm configs
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Display system-wide information
    Info(InfoArgs),
    /// Manage shoal (`system info`)
    #[command(subcommand)]
    System(SystemCommand),
    /// Show the shoal version information
    Version,
    /// Run the shoal daemon
    Daemon(DaemonArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AvailabilityArg {
    Active,
    Pause,
    Drain,
}

impl From<AvailabilityArg> for shoal_core::api::Availability {
    fn from(value: AvailabilityArg) -> Self {
        match value {
            AvailabilityArg::Active => shoal_core::api::Availability::Active,
            AvailabilityArg::Pause => shoal_core::api::Availability::Pause,
            AvailabilityArg::Drain => shoal_core::api::Availability::Drain,
        }
    }
}

pub fn duration_arg(text: &str) -> Result<u64, String> {
    format::parse_duration(text).map_err(|e| e.0)
}

pub fn memory_arg(text: &str) -> Result<u64, String> {
    format::parse_memory(text).map_err(|e| e.0)
}

pub fn cpus_arg(text: &str) -> Result<u64, String> {
    format::parse_cpus(text).map_err(|e| e.0)
}

fn ratio_arg(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("invalid failure ratio {text:?}: use a number between 0 and 1")),
    }
}

/// `--secret`/`--config` (and their `-add` forms): a name, or `source=,target=,uid=,gid=,mode=`.
fn secret_ref_arg(text: &str) -> Result<shoal_core::api::FileReference, String> {
    shoal_core::api::parse_file_reference(shoal_core::api::FileKind::Secret, text)
}

fn config_ref_arg(text: &str) -> Result<shoal_core::api::FileReference, String> {
    shoal_core::api::parse_file_reference(shoal_core::api::FileKind::Config, text)
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create a secret from a file or STDIN as content
    Create {
        /// Secret driver (shoal keeps secrets in its own store: no driver plugins)
        #[arg(short, long)]
        driver: Option<String>,
        /// Secret labels
        #[arg(short, long)]
        label: Vec<String>,
        /// Template driver ("golang")
        #[arg(long)]
        template_driver: Option<String>,
        /// The secret's name
        name: String,
        /// A file, or - for STDIN
        file: String,
    },
    /// Display detailed information on one or more secrets
    Inspect(InspectArgs),
    /// List secrets
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove one or more secrets
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Create a config from a file or STDIN
    Create {
        /// Config labels
        #[arg(short, long)]
        label: Vec<String>,
        /// Template driver ("golang")
        #[arg(long)]
        template_driver: Option<String>,
        /// The config's name
        name: String,
        /// A file, or - for STDIN
        file: String,
    },
    /// Display detailed information on one or more configs
    Inspect(InspectArgs),
    /// List configs
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove one or more configs
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SwarmCommand {
    /// Initialize a swarm
    Init(InitArgs),
    /// Join a swarm as a node and/or manager
    Join(JoinArgs),
    /// Manage join tokens
    JoinToken(JoinTokenArgs),
    /// Leave the swarm
    Leave {
        /// Force this node to leave the swarm, ignoring warnings
        #[arg(short, long)]
        force: bool,
    },
    /// Update the swarm
    Update(UpdateSwarmArgs),
    /// Manage the unlock key
    UnlockKey(UnlockKeyArgs),
    /// Unlock swarm
    Unlock,
    /// Display and rotate the root CA
    Ca(CaArgs),
}

#[derive(Debug, Args)]
pub struct UnlockKeyArgs {
    /// Only display token
    #[arg(short, long)]
    pub quiet: bool,
    /// Rotate unlock key
    #[arg(long)]
    pub rotate: bool,
}

#[derive(Debug, Args)]
pub struct CaArgs {
    /// Rotate the swarm CA - if no certificate or key are provided, new ones will be generated
    #[arg(long)]
    pub rotate: bool,
    /// Path to the PEM-formatted root CA certificate to use for the new cluster
    #[arg(long)]
    pub ca_cert: Option<String>,
    /// Path to the PEM-formatted root CA key to use for the new cluster
    #[arg(long)]
    pub ca_key: Option<String>,
    /// Validity period for node certificates (ns|us|ms|s|m|h)
    #[arg(long, value_parser = duration_arg)]
    pub cert_expiry: Option<u64>,
    /// Specifications of one or more certificate signing endpoints
    #[arg(long)]
    pub external_ca: Vec<String>,
    /// Exit immediately instead of waiting for the root rotation to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct UpdateSwarmArgs {
    /// Task history retention limit
    #[arg(long)]
    pub task_history_limit: Option<u64>,
    /// Dispatcher heartbeat period (ns|us|ms|s|m|h)
    #[arg(long, value_parser = duration_arg)]
    pub dispatcher_heartbeat: Option<u64>,
    /// Validity period for node certificates (ns|us|ms|s|m|h)
    #[arg(long, value_parser = duration_arg)]
    pub cert_expiry: Option<u64>,
    /// Change manager autolocking setting (true|false)
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub autolock: Option<bool>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Advertised address (format: <ip>[:port])
    #[arg(long, default_value = "")]
    pub advertise_addr: String,
    /// Listen address (format: <ip>[:port]) [default: 0.0.0.0:2377, or the --advertise-addr port]
    #[arg(long, default_value = "")]
    pub listen_addr: String,
    /// Force create a new cluster from current state
    #[arg(long)]
    pub force_new_cluster: bool,
    /// Enable manager autolocking (requiring an unlock key to start a stopped manager)
    #[arg(long)]
    pub autolock: bool,
    /// Availability of the node
    #[arg(long, value_enum, default_value = "active")]
    pub availability: AvailabilityArg,
    /// Task history retention limit
    #[arg(long, default_value_t = 5)]
    pub task_history_limit: u64,
    /// Dispatcher heartbeat period (ns|us|ms|s|m|h)
    #[arg(long, value_parser = duration_arg, default_value = "5s")]
    pub dispatcher_heartbeat: u64,
    /// Number of log entries between Raft snapshots
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_interval: u64,
    /// Validity period for node certificates (ns|us|ms|s|m|h)
    #[arg(long, value_parser = duration_arg, default_value = "2160h0m0s")]
    pub cert_expiry: u64,
    /// Address or interface to use for data path traffic (format: <ip|interface>)
    #[arg(long, default_value = "")]
    pub data_path_addr: String,
    /// Port number to use for data path traffic (1024 - 49151). If no value is set or is set to 0, the default port (4789) is used.
    #[arg(long)]
    pub data_path_port: Option<u32>,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Token for entry into the swarm
    #[arg(long, required = true)]
    pub token: String,
    /// Advertised address (format: <ip>[:port])
    #[arg(long, default_value = "")]
    pub advertise_addr: String,
    /// Listen address (format: <ip>[:port]) [default: 0.0.0.0:2377, or the --advertise-addr port]
    #[arg(long, default_value = "")]
    pub listen_addr: String,
    /// Availability of the node
    #[arg(long, value_enum, default_value = "active")]
    pub availability: AvailabilityArg,
    /// Address or interface to use for data path traffic (format: <ip|interface>)
    #[arg(long, default_value = "")]
    pub data_path_addr: String,
    /// Port number this node accepts data path traffic on (1024 - 49151; default 4789). Swarm sets it
    /// for the whole swarm at init; shoal's tunnels are per node, so each node may have its own.
    #[arg(long)]
    pub data_path_port: Option<u32>,
    /// A manager's address (host:port)
    pub remote: String,
}

#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    /// Only display token
    #[arg(short, long)]
    pub quiet: bool,
    /// Rotate join token
    #[arg(long)]
    pub rotate: bool,
    /// worker or manager
    pub role: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only display IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output: table, json, or a Go template such as '{{.ID}}'
    #[arg(long)]
    pub format: Option<String>,
    /// Filter output based on conditions provided (key=value; a key given twice matches either)
    #[arg(short, long)]
    pub filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TaskListArgs {
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only display task IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output: table, json, or a Go template
    #[arg(long)]
    pub format: Option<String>,
    /// Filter output (desired-state=running|shutdown|accepted, node=, name=, id=)
    #[arg(short, long)]
    pub filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Print the information in a human friendly format
    #[arg(long)]
    pub pretty: bool,
    /// Format output using a Go template, as Docker's ('{{.ID}}', '{{.Spec.Name}}', '{{json .Spec.Mode}}')
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List nodes in the swarm
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Display detailed information on one or more nodes
    Inspect(InspectArgs),
    /// Remove one or more nodes from the swarm
    #[command(alias = "remove")]
    Rm {
        /// Force remove a node from the swarm
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Update a node
    Update(NodeUpdateArgs),
    /// Promote one or more nodes to manager in the swarm
    Promote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Demote one or more nodes from manager in the swarm
    Demote {
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// List tasks running on one or more nodes, defaults to current node
    Ps {
        #[command(flatten)]
        list: TaskListArgs,
        nodes: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct NodeUpdateArgs {
    /// Availability of the node ("active", "pause", "drain")
    #[arg(long, value_enum)]
    pub availability: Option<AvailabilityArg>,
    /// Add or update a node label (key=value)
    #[arg(long)]
    pub label_add: Vec<String>,
    /// Remove a node label if exists
    #[arg(long)]
    pub label_rm: Vec<String>,
    /// Role of the node ("worker", "manager")
    #[arg(long, value_enum)]
    pub role: Option<RoleArg>,
    pub node: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Worker,
    Manager,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Replicated,
    Global,
    ReplicatedJob,
    GlobalJob,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestartConditionArg {
    None,
    OnFailure,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestartBackoffArg {
    Fixed,
    Exponential,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailureActionArg {
    Pause,
    Continue,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RollbackFailureActionArg {
    Pause,
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EndpointModeArg {
    Vip,
    Dnsrr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrderArg {
    StopFirst,
    StartFirst,
}

/// Flags `service create` and `service update` share; `None` = keep (update) or Swarm's default (create).
#[derive(Debug, Args, Default)]
pub struct CommonServiceFlags {
    /// Endpoint mode (vip or dnsrr) (default "vip")
    #[arg(long, value_enum)]
    pub endpoint_mode: Option<EndpointModeArg>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container hostname (a template: {{.Node.Hostname}}-{{.Task.Slot}})
    #[arg(long)]
    pub hostname: Option<String>,
    /// Add Linux capabilities
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Use an init inside each service container to forward signals and reap processes
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub init: Option<bool>,
    /// Signal to stop the container
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Logging driver for the service's containers
    #[arg(long)]
    pub log_driver: Option<String>,
    /// Logging driver options (key=value; with --log-driver)
    #[arg(long)]
    pub log_opt: Vec<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub read_only: Option<bool>,
    /// Maximum number of tasks per node (default 0 = unlimited)
    #[arg(long)]
    pub replicas_max_per_node: Option<u64>,
    /// Limit CPUs
    #[arg(long, value_parser = cpus_arg, value_name = "CPUS")]
    pub limit_cpu: Option<u64>,
    /// Limit Memory
    #[arg(long, value_parser = memory_arg, value_name = "BYTES")]
    pub limit_memory: Option<u64>,
    /// Reserve CPUs
    #[arg(long, value_parser = cpus_arg, value_name = "CPUS")]
    pub reserve_cpu: Option<u64>,
    /// Reserve Memory
    #[arg(long, value_parser = memory_arg, value_name = "BYTES")]
    pub reserve_memory: Option<u64>,
    /// Restart when condition is met ("none", "on-failure", "any") (default "any")
    #[arg(long, value_enum)]
    pub restart_condition: Option<RestartConditionArg>,
    /// Delay between restart attempts (ns|us|ms|s|m|h) (default 5s)
    #[arg(long, value_parser = duration_arg, value_name = "DURATION")]
    pub restart_delay: Option<u64>,
    /// Maximum number of restarts before giving up
    #[arg(long)]
    pub restart_max_attempts: Option<u64>,
    /// Window used to evaluate the restart policy (ns|us|ms|s|m|h)
    #[arg(long, value_parser = duration_arg, value_name = "DURATION")]
    pub restart_window: Option<u64>,
    /// How the restart delay grows ("fixed", "exponential") (default "fixed"). fixed: every restart
    /// waits --restart-delay, as Swarm's does. exponential: a task that ran at least 10s (a healthy
    /// run) restarts at once; one that died sooner waits --restart-delay, doubled per consecutive
    /// short run, at most 5m (or --restart-delay if longer)
    #[arg(long, value_enum, value_name = "MODE")]
    pub restart_backoff: Option<RestartBackoffArg>,
    /// Maximum number of tasks updated simultaneously (0 to update all at once) (default 1)
    #[arg(long)]
    pub update_parallelism: Option<u64>,
    /// Delay between updates (ns|us|ms|s|m|h) (default 0s)
    #[arg(long, value_parser = duration_arg, value_name = "DURATION")]
    pub update_delay: Option<u64>,
    /// Action on update failure ("pause", "continue", "rollback") (default "pause")
    #[arg(long, value_enum)]
    pub update_failure_action: Option<FailureActionArg>,
    /// Duration after each task update to monitor for failure (ns|us|ms|s|m|h) (default 5s)
    #[arg(long, value_parser = duration_arg, value_name = "DURATION")]
    pub update_monitor: Option<u64>,
    /// Failure rate to tolerate during an update (default 0)
    #[arg(long, value_parser = ratio_arg)]
    pub update_max_failure_ratio: Option<f64>,
    /// Update order ("start-first", "stop-first") (default "stop-first")
    #[arg(long, value_enum)]
    pub update_order: Option<OrderArg>,
    /// Maximum number of tasks rolled back simultaneously (0 to roll back all at once) (default 1)
    #[arg(long)]
    pub rollback_parallelism: Option<u64>,
    /// Delay between task rollbacks (ns|us|ms|s|m|h) (default 0s)
    #[arg(long, value_parser = duration_arg, value_name = "DURATION")]
    pub rollback_delay: Option<u64>,
    /// Action on rollback failure ("pause", "continue") (default "pause")
    #[arg(long, value_enum)]
    pub rollback_failure_action: Option<RollbackFailureActionArg>,
    /// Duration after each task rollback to monitor for failure (ns|us|ms|s|m|h) (default 5s)
    #[arg(long, value_parser = duration_arg, value_name = "DURATION")]
    pub rollback_monitor: Option<u64>,
    /// Failure rate to tolerate during a rollback (default 0)
    #[arg(long, value_parser = ratio_arg)]
    pub rollback_max_failure_ratio: Option<f64>,
    /// Rollback order ("start-first", "stop-first") (default "stop-first")
    #[arg(long, value_enum)]
    pub rollback_order: Option<OrderArg>,
    /// Time to wait before force killing a container (ns|us|ms|s|m|h) (default 10s)
    #[arg(long, value_parser = duration_arg, value_name = "DURATION")]
    pub stop_grace_period: Option<u64>,
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// Send registry authentication details to swarm agents (this client's credentials for the
    /// image's registry, from $DOCKER_CONFIG/config.json or ~/.docker/config.json)
    #[arg(long)]
    pub with_registry_auth: bool,
    /// Do not query the registry to resolve image digest and supported platforms (accepted for
    /// Docker's sake: shoal never resolves digests; nodes pull the image by its name)
    #[arg(long)]
    pub no_resolve_image: bool,
    // Health checks (issue 17): applied by `spec::apply_health`.
    /// Command to run to check health
    #[arg(long, value_name = "string")]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 0s)
    #[arg(long, value_parser = duration_arg, value_name = "duration")]
    pub health_interval: Option<u64>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long, value_name = "int")]
    pub health_retries: Option<u64>,
    /// Start period for the container to initialize before counting retries towards unstable (ms|s|m|h) (default 0s)
    #[arg(long, value_parser = duration_arg, value_name = "duration")]
    pub health_start_period: Option<u64>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 0s)
    #[arg(long, value_parser = duration_arg, value_name = "duration")]
    pub health_timeout: Option<u64>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long)]
    pub no_healthcheck: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Service name
    #[arg(long)]
    pub name: Option<String>,
    /// Number of tasks
    #[arg(long)]
    pub replicas: Option<u64>,
    /// Service mode ("replicated", "global", "replicated-job", "global-job")
    #[arg(long, value_enum, default_value = "replicated")]
    pub mode: ModeArg,
    /// Number of job tasks to run concurrently (default equal to --replicas)
    #[arg(long)]
    pub max_concurrent: Option<u64>,
    /// Attach a filesystem mount to the service (type=volume|bind|tmpfs,source=,target=,readonly,…)
    #[arg(long)]
    pub mount: Vec<String>,
    /// Set environment variables
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long)]
    pub env_file: Vec<String>,
    /// Placement constraints
    #[arg(long)]
    pub constraint: Vec<String>,
    /// Add a placement preference (spread=node.labels.zone)
    #[arg(long)]
    pub placement_pref: Vec<String>,
    /// Service labels
    #[arg(short, long)]
    pub label: Vec<String>,
    /// Container labels
    #[arg(long)]
    pub container_label: Vec<String>,
    /// Sysctl options
    #[arg(long)]
    pub sysctl: Vec<String>,
    /// Ulimit options (name=soft[:hard])
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Set custom DNS servers
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long)]
    pub dns_search: Vec<String>,
    /// Set DNS options
    #[arg(long)]
    pub dns_option: Vec<String>,
    /// Set one or more custom host-to-IP mappings (host:ip)
    #[arg(long)]
    pub host: Vec<String>,
    /// Publish a port as a node port ([published:]target[/proto], or published=,target=,protocol=,mode=)
    #[arg(short, long)]
    pub publish: Vec<String>,
    /// Network attachments
    #[arg(long)]
    pub network: Vec<String>,
    /// Specify secrets to expose to the service (name, or source=,target=,uid=,gid=,mode=)
    #[arg(long, value_parser = secret_ref_arg)]
    pub secret: Vec<shoal_core::api::FileReference>,
    /// Specify configurations to expose to the service (name, or source=,target=,uid=,gid=,mode=)
    #[arg(long, value_parser = config_ref_arg)]
    pub config: Vec<shoal_core::api::FileReference>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    #[command(flatten)]
    pub common: CommonServiceFlags,
    /// Image to run
    pub image: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Service image tag
    #[arg(long)]
    pub image: Option<String>,
    /// Number of tasks
    #[arg(long)]
    pub replicas: Option<u64>,
    /// Number of job tasks to run concurrently (default equal to --replicas)
    #[arg(long)]
    pub max_concurrent: Option<u64>,
    /// Add or update a mount on a service
    #[arg(long)]
    pub mount_add: Vec<String>,
    /// Remove a mount by its target path
    #[arg(long)]
    pub mount_rm: Vec<String>,
    /// Service command args (space separated)
    #[arg(long)]
    pub args: Option<String>,
    /// Add or update an environment variable
    #[arg(long)]
    pub env_add: Vec<String>,
    /// Remove an environment variable
    #[arg(long)]
    pub env_rm: Vec<String>,
    /// Add or update a placement constraint
    #[arg(long)]
    pub constraint_add: Vec<String>,
    /// Remove a constraint
    #[arg(long)]
    pub constraint_rm: Vec<String>,
    /// Add a placement preference
    #[arg(long)]
    pub placement_pref_add: Vec<String>,
    /// Remove a placement preference
    #[arg(long)]
    pub placement_pref_rm: Vec<String>,
    /// Add or update a service label
    #[arg(long)]
    pub label_add: Vec<String>,
    /// Remove a label by its key
    #[arg(long)]
    pub label_rm: Vec<String>,
    /// Add or update a container label
    #[arg(long)]
    pub container_label_add: Vec<String>,
    /// Add or update a Sysctl option
    #[arg(long)]
    pub sysctl_add: Vec<String>,
    /// Remove a Sysctl option
    #[arg(long)]
    pub sysctl_rm: Vec<String>,
    /// Add or update a ulimit option (name=soft[:hard])
    #[arg(long)]
    pub ulimit_add: Vec<String>,
    /// Remove a ulimit option
    #[arg(long)]
    pub ulimit_rm: Vec<String>,
    /// Add or update a custom DNS server
    #[arg(long)]
    pub dns_add: Vec<String>,
    /// Remove a custom DNS server
    #[arg(long)]
    pub dns_rm: Vec<String>,
    /// Add or update a custom DNS search domain
    #[arg(long)]
    pub dns_search_add: Vec<String>,
    /// Remove a DNS search domain
    #[arg(long)]
    pub dns_search_rm: Vec<String>,
    /// Add or update a DNS option
    #[arg(long)]
    pub dns_option_add: Vec<String>,
    /// Remove a DNS option
    #[arg(long)]
    pub dns_option_rm: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long)]
    pub host_add: Vec<String>,
    /// Remove a custom host-to-IP mapping (host:ip)
    #[arg(long)]
    pub host_rm: Vec<String>,
    /// Remove a container label by its key
    #[arg(long)]
    pub container_label_rm: Vec<String>,
    /// Add or update a published port
    #[arg(long)]
    pub publish_add: Vec<String>,
    /// Remove a published port by its target port ([target][/proto])
    #[arg(long)]
    pub publish_rm: Vec<String>,
    /// Add a network
    #[arg(long)]
    pub network_add: Vec<String>,
    /// Remove a network
    #[arg(long)]
    pub network_rm: Vec<String>,
    /// Add or update a secret on a service
    #[arg(long, value_parser = secret_ref_arg)]
    pub secret_add: Vec<shoal_core::api::FileReference>,
    /// Remove a secret
    #[arg(long)]
    pub secret_rm: Vec<String>,
    /// Add or update a config file on a service
    #[arg(long, value_parser = config_ref_arg)]
    pub config_add: Vec<shoal_core::api::FileReference>,
    /// Remove a configuration file
    #[arg(long)]
    pub config_rm: Vec<String>,
    /// Force update even if no changes require it
    #[arg(long)]
    pub force: bool,
    /// Rollback to previous specification
    #[arg(long)]
    pub rollback: bool,
    #[command(flatten)]
    pub common: CommonServiceFlags,
    pub service: String,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a new service
    Create(Box<CreateArgs>),
    /// List services
    #[command(alias = "list")]
    Ls(ListArgs),
    /// List the tasks of one or more services
    Ps {
        #[command(flatten)]
        list: TaskListArgs,
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Display detailed information on one or more services
    Inspect(InspectArgs),
    /// Remove one or more services
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Scale one or multiple replicated services (SERVICE=REPLICAS)
    Scale {
        /// Exit immediately instead of waiting for the service to converge
        #[arg(short, long)]
        detach: bool,
        #[arg(required = true)]
        scales: Vec<String>,
    },
    /// Update a service
    Update(Box<UpdateArgs>),
    /// Revert changes to a service's configuration
    Rollback {
        /// Exit immediately instead of waiting for the service to converge
        #[arg(short, long)]
        detach: bool,
        /// Suppress progress output
        #[arg(short, long)]
        quiet: bool,
        service: String,
    },
    /// Fetch the logs of a service's tasks, from every node that ran one
    Logs(LogsArgs),
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network
    Create {
        /// Driver to manage the network
        #[arg(short, long, default_value = "overlay")]
        driver: String,
        /// Enable manual container attachment
        #[arg(long)]
        attachable: bool,
        /// Create swarm routing-mesh network
        #[arg(long)]
        ingress: bool,
        /// Set metadata on a network
        #[arg(long)]
        label: Vec<String>,
        /// Subnet in CIDR format that represents a network segment
        #[arg(long)]
        subnet: Vec<String>,
        name: String,
    },
    /// List networks
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm {
        /// Do not error if the network does not exist
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Display detailed information on one or more networks
    Inspect {
        /// Format output using a template
        #[arg(short, long)]
        format: Option<String>,
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing stack
    #[command(alias = "up")]
    Deploy {
        /// Path to a Compose file, or "-" to read from stdin
        #[arg(short = 'c', long = "compose-file", required = true)]
        compose_file: String,
        /// Prune services that are no longer referenced
        #[arg(long)]
        prune: bool,
        stack: String,
    },
    /// List stacks
    #[command(alias = "list")]
    Ls {
        /// Format output: table, json, or a Go template
        #[arg(long)]
        format: Option<String>,
    },
    /// List the tasks in the stack
    Ps {
        #[command(flatten)]
        list: TaskListArgs,
        stack: String,
    },
    /// Remove one or more stacks
    #[command(alias = "remove", alias = "down")]
    Rm {
        #[arg(required = true)]
        stacks: Vec<String>,
    },
    /// List the services in the stack
    Services {
        #[command(flatten)]
        list: ListArgs,
        stack: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Display system-wide information
    Info(InfoArgs),
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Format output: json, or a template over the swarm status
    #[arg(short, long)]
    pub format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorArg {
    Docker,
    Process,
}

/// `shoal daemon --pull`: Docker's `--pull` words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullArg {
    /// Pull an image that is not on this node (as Swarm's nodes do)
    Missing,
    /// Never pull: every image must be loaded on the node beforehand
    Never,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Where the node keeps its raft log, snapshots, identity and event log
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Unix socket (mode 0660) serving the Docker Engine API, for the shoal CLI and Docker's clients
    /// (default /var/run/shoal/shoal.sock, or under $XDG_RUNTIME_DIR)
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Also serve the API on TCP: loopback only without TLS (e.g. 127.0.0.1:2375); any address with
    /// --tlsverify, which requires client certificates (e.g. 0.0.0.0:2376)
    #[arg(long)]
    pub tcp: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Serve the same API on a second unix socket (mode 0660), e.g. where Docker's own clients are
    /// pointed: DOCKER_HOST=unix://PATH docker service ls. Off unless given.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// How tasks run: Docker containers, or plain host processes
    #[arg(long, value_enum, default_value = "docker")]
    pub executor: ExecutorArg,
    /// The node's hostname (default: this host's name)
    #[arg(long)]
    pub hostname: Option<String>,
    /// Resolver for names the swarm does not know, asked by the mesh's DNS on behalf of containers
    /// (ip or ip:port; repeatable; default: the nameservers in /etc/resolv.conf; "none": no resolver)
    #[arg(long, value_name = "IP[:PORT]")]
    pub dns_upstream: Vec<String>,
    /// Stop tasks without draining them from the mesh first (only to measure what draining saves)
    #[arg(long)]
    pub no_mesh_drain: bool,
    /// When the Docker executor pulls a task's image: when it is not on this node (with the
    /// service's registry credentials, if it was created with --with-registry-auth), or never. An
    /// image that exists locally is never pulled.
    #[arg(long, value_enum, default_value = "missing")]
    pub pull: PullArg,
}

/// `service logs`.
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    pub follow: bool,
    /// Show logs since timestamp (e.g. "2026-11-25T13:23:37Z") or relative (e.g. "42m" for 42 minutes)
    #[arg(long)]
    pub since: Option<String>,
    /// Show timestamps
    #[arg(short, long)]
    pub timestamps: bool,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Do not include task IDs in output
    #[arg(long)]
    pub no_task_ids: bool,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Do not map IDs to Names in output
    #[arg(long)]
    pub no_resolve: bool,
    /// Do not neatly format logs
    #[arg(long)]
    pub raw: bool,
    /// A service (name or ID) or a task (ID)
    #[arg(value_name = "SERVICE|TASK")]
    pub service: String,
}
