//! The `shoal` CLI: parses Docker's command words ([`args`]), asks the daemon through the Docker
//! Engine API it serves ([`crate::engine_client`]), and prints Docker's shapes ([`render`],
//! [`listing`]). Errors from the daemon print as `Error response from daemon: <msg>` with exit
//! status 1.

pub mod args;
pub(crate) mod files;
pub mod filters;
pub mod inspect;
pub mod listing;
pub mod registry_auth;
pub mod render;
pub mod spec;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use shoal_core::api::{NodeRole, Service, Task, TaskState, UpdateState};
use shoal_core::control::{ControlRequest, ControlResponse, NodeView, ServiceView};

use self::args::{
    Command, LogsArgs, NetworkCommand, NodeCommand, RoleArg, ServiceCommand, StackCommand, SwarmCommand, SystemCommand,
    TaskListArgs,
};
use crate::engine_client::{ApiError, Endpoint, EngineClient};
use crate::local_api::{ClusterOverrides, InitRequest, JoinRequest, SwarmStatus};

/// Why a command failed, and how it prints.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The daemon (or the cluster behind it) refused.
    #[error("Error response from daemon: {0}")]
    Daemon(String),
    /// The CLI itself refused (bad value, nothing found, no daemon).
    #[error("{0}")]
    Usage(String),
}

impl From<ApiError> for CliError {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Daemon { message, .. } => CliError::Daemon(message),
            other => CliError::Usage(other.to_string()),
        }
    }
}

type CliResult<T = ()> = Result<T, CliError>;

/// The daemon this CLI talks to.
pub struct Client {
    pub api: EngineClient,
}

impl Client {
    /// From `-H`, else `SHOAL_HOST` (`DOCKER_HOST`'s syntax), else the default socket. `DOCKER_HOST`
    /// itself is not read: it usually names the host's own engine, which is not shoal.
    /// With `--tlsverify`, a `tcp://` daemon is reached over TLS with this client's certificate.
    pub fn new(host: Option<&str>, tls: &args::TlsArgs) -> CliResult<Client> {
        let from_env = std::env::var("SHOAL_HOST").ok().filter(|h| !h.is_empty());
        let endpoint = match host.map(str::to_string).or(from_env) {
            Some(text) => Endpoint::parse(&text).map_err(CliError::Usage)?,
            None => Endpoint::Unix(Endpoint::default_socket()),
        };
        let mut api = EngineClient::new(endpoint);
        if let Some(files) = tls.files().map_err(CliError::Usage)? {
            api = api.with_tls(crate::api_tls::client_config(&files).map_err(|e| CliError::Usage(e.to_string()))?);
        }
        Ok(Client { api })
    }

    async fn control(&self, request: ControlRequest) -> CliResult<ControlResponse> {
        Ok(self.api.control(request).await?)
    }

    async fn service(&self, name: &str) -> CliResult<ServiceView> {
        Ok(self.api.service(name).await?)
    }

    async fn tasks(&self, service: Option<String>, node: Option<String>) -> CliResult<Vec<Task>> {
        Ok(self.api.tasks(service.as_deref(), node.as_deref()).await?)
    }

    async fn nodes(&self) -> CliResult<Vec<NodeView>> {
        Ok(self.api.nodes().await?)
    }

    async fn status(&self) -> CliResult<SwarmStatus> {
        Ok(self.api.status().await?)
    }
}

fn unexpected(answer: &impl std::fmt::Debug) -> CliError {
    CliError::Usage(format!("the daemon sent an answer this CLI did not expect: {answer:?}"))
}

fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Run a client command (everything but `daemon`).
pub async fn run(host: Option<&str>, tls: &args::TlsArgs, command: Command) -> CliResult {
    let client = Client::new(host, tls)?;
    match command {
        Command::Swarm(cmd) => swarm(&client, cmd).await,
        Command::Node(cmd) => node(&client, cmd).await,
        Command::Service(cmd) => service(&client, cmd).await,
        Command::Network(cmd) => network(&client, cmd).await,
        Command::Stack(cmd) => stack_command(&client, cmd).await,
        Command::Secret(cmd) => files::secret(&client, cmd).await,
        Command::Config(cmd) => files::config(&client, cmd).await,
        Command::Info(args) | Command::System(SystemCommand::Info(args)) => info(&client, args.format.as_deref()).await,
        Command::Version => version(&client).await,
        Command::Daemon(_) => Err(CliError::Usage("`shoal daemon` runs the daemon; it is not a client command".into())),
    }
}

/// docker/cli's `ingressWarning` before `network rm` of the ingress network.
const INGRESS_WARNING: &str = "WARNING! Before removing the routing-mesh network, make sure all the nodes in your swarm run \
                               the same docker engine version. Otherwise, removal may not be effective and functionality \
                               of newly create ingress networks will be impaired.\nAre you sure you want to continue?";

/// docker/cli's `PromptForConfirmation`: the message and ` [y/N] `, then a line from stdin; only
/// `y` or `Y` confirms (end of input does not).
fn confirm(message: &str) -> bool {
    use std::io::{BufRead, Write};
    out(&format!("{message} [y/N] "));
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim(), "y" | "Y")
}

/// `version`: this client, then the daemon it talks to (Docker's layout, shoal's fields).
async fn version(client: &Client) -> CliResult {
    let (os, arch) = (std::env::consts::OS, crate::format::go_arch());
    out(&format!("Client:\n Version:           {}\n OS/Arch:           {os}/{arch}\n\n", env!("CARGO_PKG_VERSION")));
    let status = client.status().await?;
    let server = if status.version.is_empty() { "unknown" } else { status.version.as_str() };
    out(&format!("Server: shoal\n Engine:\n  Version:          {server}\n  OS/Arch:          {os}/{arch}\n"));
    Ok(())
}

async fn swarm(client: &Client, cmd: SwarmCommand) -> CliResult {
    match cmd {
        SwarmCommand::Init(a) => {
            let request = InitRequest {
                advertise_addr: a.advertise_addr,
                listen_addr: a.listen_addr,
                force_new_cluster: a.force_new_cluster,
                availability: a.availability.into(),
                overrides: ClusterOverrides {
                    task_history_retention_limit: Some(a.task_history_limit),
                    heartbeat_period_ms: Some(a.dispatcher_heartbeat),
                    snapshot_interval: Some(a.snapshot_interval),
                    cert_expiry_ms: Some(a.cert_expiry),
                    autolock: a.autolock.then_some(true),
                },
                data_path_addr: a.data_path_addr,
                data_path_port: a.data_path_port,
            };
            let node_id = client.api.swarm_init(&request).await?;
            // The worker token and this manager's address, as docker/cli reads them after init (the
            // swarm is up even when they cannot be shown yet: `swarm join-token` shows them later).
            let mut found = join_token(client, NodeRole::Worker).await;
            // A new leader may take a moment to answer.
            for _ in 0..50 {
                if found.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                found = join_token(client, NodeRole::Worker).await;
            }
            let (worker_token, manager_addr) =
                found.unwrap_or_else(|_| (String::new(), request.advertise_addr.clone()));
            let mut text = render::init_message(&node_id, &worker_token, &manager_addr);
            if a.autolock {
                text.push_str(&render::unlock_command(&fetch_unlock_key(client, false).await?));
            }
            out(&text);
            Ok(())
        }
        SwarmCommand::Join(a) => {
            let request = JoinRequest {
                remote_addr: a.remote,
                token: a.token,
                advertise_addr: a.advertise_addr,
                listen_addr: a.listen_addr,
                availability: a.availability.into(),
                data_path_addr: a.data_path_addr,
                data_path_port: a.data_path_port,
            };
            client.api.swarm_join(&request).await?;
            let manager = joined_as_manager(client).await;
            out(&format!("This node joined a swarm as a {}.\n", if manager { "manager" } else { "worker" }));
            Ok(())
        }
        SwarmCommand::JoinToken(a) => {
            let role = match a.role.as_str() {
                "worker" => NodeRole::Worker,
                "manager" => NodeRole::Manager,
                other => return Err(CliError::Usage(format!("unknown role {other}"))),
            };
            let (token, manager_addr) =
                match client.control(ControlRequest::JoinToken { role, rotate: a.rotate }).await? {
                    ControlResponse::JoinToken { token, manager_addr } => (token, manager_addr),
                    other => return Err(unexpected(&other)),
                };
            if a.quiet {
                out(&format!("{token}\n"));
                return Ok(());
            }
            let mut text = String::new();
            if a.rotate {
                text.push_str(&format!("Successfully rotated {} join token.\n\n", a.role));
            }
            text.push_str(&render::join_command(&a.role, &token, &manager_addr));
            out(&text);
            Ok(())
        }
        SwarmCommand::Leave { force } => {
            client.api.swarm_leave(force).await?;
            out("Node left the swarm.\n");
            Ok(())
        }
        SwarmCommand::Update(a) => {
            let others = a.task_history_limit.is_some() || a.dispatcher_heartbeat.is_some() || a.cert_expiry.is_some();
            if others || a.autolock.is_none() {
                let request = ControlRequest::ClusterUpdate {
                    task_history_limit: a.task_history_limit,
                    heartbeat_period_ms: a.dispatcher_heartbeat,
                    node_cert_expiry_ms: a.cert_expiry,
                };
                client.control(request).await?;
            }
            // docker/cli `swarm/update.go`: turning autolock on prints the key.
            let mut text = "Swarm updated.\n".to_string();
            if let Some(enabled) = a.autolock {
                let was = match client.control(ControlRequest::Info).await? {
                    ControlResponse::Info(info) => info.spec.autolock_managers,
                    other => return Err(unexpected(&other)),
                };
                let key = match client.control(ControlRequest::SwarmAutolock { enabled }).await? {
                    ControlResponse::UnlockKey { key } => key.0,
                    other => return Err(unexpected(&other)),
                };
                if enabled && !was {
                    text.push_str(&render::unlock_command(&key));
                }
            }
            out(&text);
            Ok(())
        }
        SwarmCommand::UnlockKey(a) => {
            // docker/cli `swarm/unlock_key.go`.
            if a.rotate {
                let on = match client.control(ControlRequest::Info).await? {
                    ControlResponse::Info(info) => info.spec.autolock_managers,
                    other => return Err(unexpected(&other)),
                };
                if !on {
                    return Err(CliError::Usage("cannot rotate because autolock is not turned on".into()));
                }
            }
            let key = fetch_unlock_key(client, a.rotate).await?;
            if key.is_empty() {
                return Err(CliError::Usage("no unlock key is set".into()));
            }
            if a.quiet {
                out(&format!("{key}\n"));
                return Ok(());
            }
            let mut text = String::new();
            if a.rotate {
                text.push_str("Successfully rotated manager unlock key.\n\n");
            }
            text.push_str(&render::unlock_command(&key));
            out(&text);
            Ok(())
        }
        SwarmCommand::Unlock => {
            // docker/cli `swarm/unlock.go`: only a locked node asks for the key.
            let status = client.status().await?;
            match status.state.as_str() {
                "inactive" => return Err(CliError::Usage("This node is not part of a swarm".into())),
                "locked" => {}
                _ => return Err(CliError::Usage("Error: swarm is not locked".into())),
            }
            let key = read_unlock_key()?;
            match client.control(ControlRequest::Unlock { key: shoal_core::control::FileData(key) }).await? {
                ControlResponse::Done => Ok(()),
                other => Err(unexpected(&other)),
            }
        }
        SwarmCommand::Ca(a) => swarm_ca(client, a).await,
    }
}

/// Whether the node that just joined is a manager: docker/cli asks `/info`; a new manager may not
/// reach its leader for a moment (no cluster in `/info` yet), while a worker is told at once that it
/// is not a manager, so ask `/swarm` until one of them says (up to 5 s).
async fn joined_as_manager(client: &Client) -> bool {
    let not_a_manager = shoal_core::control::ControlError::NotAManager.to_string();
    for _ in 0..50 {
        if let Ok((_, Some(_))) = client.api.info().await {
            return true;
        }
        match client.api.swarm().await {
            Ok(_) => return true,
            Err(ApiError::Daemon { message, .. }) if message == not_a_manager => return false,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    false
}

/// The join token for `role` and this manager's address.
async fn join_token(client: &Client, role: NodeRole) -> CliResult<(String, String)> {
    match client.control(ControlRequest::JoinToken { role, rotate: false }).await? {
        ControlResponse::JoinToken { token, manager_addr } => Ok((token, manager_addr)),
        other => Err(unexpected(&other)),
    }
}

/// The unlock key (`--rotate`: a new one first); empty while autolock is off.
async fn fetch_unlock_key(client: &Client, rotate: bool) -> CliResult<String> {
    match client.control(ControlRequest::UnlockKey { rotate }).await {
        Ok(ControlResponse::UnlockKey { key }) => Ok(key.0),
        Ok(other) => Err(unexpected(&other)),
        Err(CliError::Daemon(msg)) => {
            Err(CliError::Usage(format!("could not fetch unlock key: Error response from daemon: {msg}")))
        }
        Err(err) => Err(err),
    }
}

/// docker/cli's `readKey`: "Please enter unlock key: " on a terminal (without echo is left to the
/// terminal: shoal reads a line), else the first line of stdin.
fn read_unlock_key() -> CliResult<String> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        out("Please enter unlock key: ");
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| CliError::Usage(format!("cannot read the key: {e}")))?;
    Ok(line.trim().to_string())
}

/// `swarm ca`: print the root CA certificate; with `--rotate`, rotate to a new root first and
/// (unless `--detach`) show the nodes converging, as docker/cli's `swarm ca` does (DESIGN §6b).
async fn swarm_ca(client: &Client, a: args::CaArgs) -> CliResult {
    let changed = [
        ("ca-cert", a.ca_cert.is_some()),
        ("ca-key", a.ca_key.is_some()),
        ("cert-expiry", a.cert_expiry.is_some()),
        ("external-ca", !a.external_ca.is_empty()),
    ];
    if !a.rotate {
        if let Some((flag, _)) = changed.iter().find(|(_, set)| *set) {
            return Err(CliError::Usage(format!("`--{flag}` flag requires the `--rotate` flag to update the CA")));
        }
        return print_root_ca(client).await;
    }
    if !a.external_ca.is_empty() {
        return Err(CliError::Usage(
            "`--external-ca` is not supported: shoal's managers sign every node certificate with the swarm's own \
             root CA, never through an external CA"
                .into(),
        ));
    }
    if a.ca_cert.is_some() || a.ca_key.is_some() {
        return Err(CliError::Usage(
            "`--ca-cert`/`--ca-key` are not supported: shoal makes each new root CA itself (run `swarm ca --rotate` \
             without them)"
                .into(),
        ));
    }
    if let Some(expiry) = a.cert_expiry {
        let update = ControlRequest::ClusterUpdate {
            task_history_limit: None,
            heartbeat_period_ms: None,
            node_cert_expiry_ms: Some(expiry),
        };
        client.control(update).await?;
    }
    client.control(ControlRequest::CaRotate { new_root: None }).await?;
    if a.detach {
        return Ok(());
    }
    let mut last = String::new();
    loop {
        let view = match client.control(ControlRequest::CaInspect).await? {
            ControlResponse::Ca(view) => view,
            other => return Err(unexpected(&other)),
        };
        let text = render::ca_progress(&view.progress);
        if !a.quiet && text != last {
            out(&text);
            last = text;
        }
        if view.progress.converged() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    print_root_ca(client).await
}

async fn print_root_ca(client: &Client) -> CliResult {
    let view = match client.control(ControlRequest::CaInspect).await? {
        ControlResponse::Ca(view) => view,
        other => return Err(unexpected(&other)),
    };
    if view.root_ca_pem.trim().is_empty() {
        return Err(CliError::Daemon("No CA information available".into()));
    }
    out(&format!("{}\n", view.root_ca_pem.trim()));
    Ok(())
}

/// Print a listing or a format error.
fn print_listing(listing: &listing::Listing, format: Option<&str>, quiet: bool) -> CliResult {
    let text = listing.render(format, quiet).map_err(|e| CliError::Usage(e.to_string()))?;
    out(&text);
    Ok(())
}

async fn self_id(client: &Client) -> CliResult<String> {
    Ok(client.status().await?.node_id)
}

async fn hostnames(client: &Client) -> BTreeMap<String, String> {
    match client.nodes().await {
        Ok(nodes) => nodes.into_iter().map(|v| (v.node.id.clone(), v.node.hostname().to_string())).collect(),
        Err(_) => BTreeMap::new(),
    }
}

fn print_inspect(values: Vec<serde_json::Value>, format: Option<&str>) -> CliResult {
    match format {
        None | Some("") | Some("json") => out(&render::inspect_json(&values)),
        Some(template) => {
            for value in &values {
                let line = listing::expand_value(template, value).map_err(|e| CliError::Usage(e.to_string()))?;
                out(&format!("{line}\n"));
            }
        }
    }
    Ok(())
}

/// Run `each` over every name, printing errors as they come; fail at the end if any failed (Docker's way
/// for `rm`, `promote`, `scale`, …).
async fn for_each<F, Fut>(names: &[String], mut each: F) -> CliResult
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = CliResult>,
{
    let mut failed = false;
    for name in names {
        if let Err(err) = each(name.clone()).await {
            eprintln!("{err}");
            failed = true;
        }
    }
    if failed {
        Err(CliError::Usage(String::new()))
    } else {
        Ok(())
    }
}

async fn node(client: &Client, cmd: NodeCommand) -> CliResult {
    match cmd {
        NodeCommand::Ls(a) => {
            let filters = parse_filters(&a.filter, filters::NODE_KEYS)?;
            let mut nodes = filters::nodes(client.nodes().await?, &filters).map_err(CliError::Usage)?;
            let me = self_id(client).await.unwrap_or_default();
            // TLS STATUS needs what every node should hold and holds: asked only when the format
            // shows it.
            let wants_tls = a.format.as_deref().is_some_and(|f| f == "json" || f.contains("TLSStatus"));
            let desired = match wants_tls {
                true => match client.api.ca_and_nodes().await {
                    Ok((view, held)) => {
                        for v in &mut nodes {
                            v.node.description.tls_info = held.get(&v.node.id).cloned();
                        }
                        Some(view.desired_tls)
                    }
                    _ => None,
                },
                false => None,
            };
            print_listing(&render::node_list_with_tls(nodes, &me, desired.as_ref()), a.format.as_deref(), a.quiet)
        }
        NodeCommand::Inspect(a) => {
            let me = self_id(client).await.unwrap_or_default();
            let mut views = Vec::new();
            for name in &a.names {
                let name = if name == "self" { me.clone() } else { name.clone() };
                match client.control(ControlRequest::NodeInspect { node: name }).await? {
                    ControlResponse::Node(view) => views.push(*view),
                    other => return Err(unexpected(&other)),
                }
            }
            if a.pretty {
                let pages: Vec<String> = views.iter().map(render::node_pretty).collect();
                out(&pages.join("\n"));
                return Ok(());
            }
            let values = views.iter().map(inspect::node).collect();
            print_inspect(values, a.format.as_deref())
        }
        NodeCommand::Rm { force, nodes } => {
            for_each(&nodes, |node| async move {
                client.control(ControlRequest::NodeRemove { node: node.clone(), force }).await?;
                out(&format!("{node}\n"));
                Ok(())
            })
            .await
        }
        NodeCommand::Update(a) => {
            for label in &a.label_add {
                if label.split_once('=').is_some_and(|(k, _)| k.is_empty()) || label.is_empty() {
                    return Err(CliError::Usage(format!("invalid label {label:?} for --label-add: use key=value")));
                }
            }
            // `--role` is `node promote|demote` (the same request Docker's update makes), done first.
            if let Some(role) = a.role {
                let current = node_view(client, &a.node).await?.node.spec.desired_role;
                let node = a.node.clone();
                match role {
                    RoleArg::Manager if current != NodeRole::Manager => {
                        client.control(ControlRequest::NodePromote { node }).await?;
                    }
                    RoleArg::Worker if current != NodeRole::Worker => {
                        client.control(ControlRequest::NodeDemote { node }).await?;
                    }
                    _ => {}
                }
            }
            if a.availability.is_some() || !a.label_add.is_empty() || !a.label_rm.is_empty() || a.role.is_none() {
                let request = ControlRequest::NodeUpdate {
                    node: a.node.clone(),
                    availability: a.availability.map(Into::into),
                    label_add: a.label_add.iter().map(|l| spec::label(l)).collect(),
                    label_rm: a.label_rm.clone(),
                };
                client.control(request).await?;
            }
            out(&format!("{}\n", a.node));
            Ok(())
        }
        NodeCommand::Promote { nodes } => {
            for_each(&nodes, |node| async move {
                let view = node_view(client, &node).await?;
                if view.node.spec.desired_role == NodeRole::Manager {
                    out(&format!("Node {node} is already a manager.\n"));
                    return Ok(());
                }
                client.control(ControlRequest::NodePromote { node: node.clone() }).await?;
                out(&format!("Node {node} promoted to a manager in the swarm.\n"));
                Ok(())
            })
            .await
        }
        NodeCommand::Demote { nodes } => {
            for_each(&nodes, |node| async move {
                let view = node_view(client, &node).await?;
                if view.node.spec.desired_role == NodeRole::Worker {
                    out(&format!("Node {node} is already a worker.\n"));
                    return Ok(());
                }
                client.control(ControlRequest::NodeDemote { node: node.clone() }).await?;
                out(&format!("Manager {node} demoted in the swarm.\n"));
                Ok(())
            })
            .await
        }
        NodeCommand::Ps { list, nodes } => {
            let nodes = if nodes.is_empty() { vec!["self".to_string()] } else { nodes };
            let me = self_id(client).await.unwrap_or_default();
            let mut tasks = Vec::new();
            for node in nodes {
                let node = if node == "self" { me.clone() } else { node };
                let id = node_view(client, &node).await?.node.id;
                tasks.extend(client.tasks(None, Some(id)).await?);
            }
            print_tasks(client, tasks, &list).await
        }
    }
}

async fn node_view(client: &Client, node: &str) -> CliResult<NodeView> {
    match client.control(ControlRequest::NodeInspect { node: node.into() }).await? {
        ControlResponse::Node(view) => Ok(*view),
        other => Err(unexpected(&other)),
    }
}

/// A service the user named, or docker/cli's own "no such service" (the CLI looks it up first).
async fn lookup_service(client: &Client, name: &str) -> CliResult<ServiceView> {
    client.service(name).await.map_err(|err| match err {
        CliError::Daemon(msg) if msg.contains("not found") => CliError::Usage(format!("no such service: {name}")),
        other => other,
    })
}

/// Parse `--filter` flags for a command that takes `accepted` keys.
fn parse_filters(flags: &[String], accepted: &[&str]) -> CliResult<filters::Filters> {
    filters::Filters::parse(flags, accepted).map_err(CliError::Usage)
}

async fn print_tasks(client: &Client, tasks: Vec<Task>, list: &TaskListArgs) -> CliResult {
    let hosts = hostnames(client).await;
    let tasks =
        filters::tasks(tasks, &parse_filters(&list.filter, filters::TASK_KEYS)?, &hosts).map_err(CliError::Usage)?;
    let listing = render::task_list(tasks, &hosts, now_ms(), !list.no_trunc);
    print_listing(&listing, list.format.as_deref(), list.quiet)
}

async fn service(client: &Client, cmd: ServiceCommand) -> CliResult {
    match cmd {
        ServiceCommand::Create(a) => {
            let mut spec = spec::create_spec(&a).map_err(|e| CliError::Usage(e.to_string()))?;
            if a.common.with_registry_auth {
                spec.task.registry_auth =
                    Some(Box::new(registry_auth::for_image(&spec.task.image).map_err(CliError::Usage)?));
            }
            let id = match client.control(ControlRequest::ServiceCreate { spec }).await? {
                ControlResponse::Created { id } => id,
                other => return Err(unexpected(&other)),
            };
            out(&format!("{id}\n"));
            if !a.common.detach {
                wait_converged(client, &id, a.common.quiet, false).await?;
            }
            Ok(())
        }
        ServiceCommand::Ls(a) => {
            let filters = parse_filters(&a.filter, filters::SERVICE_KEYS)?;
            let services = match client.control(ControlRequest::ServiceList).await? {
                ControlResponse::Services(services) => services,
                other => return Err(unexpected(&other)),
            };
            let services = filters::services(services, &filters).map_err(CliError::Usage)?;
            print_listing(&render::service_list(services), a.format.as_deref(), a.quiet)
        }
        ServiceCommand::Ps { list, services } => {
            let mut tasks = Vec::new();
            for name in &services {
                let view = lookup_service(client, name).await?;
                tasks.extend(client.tasks(Some(view.service.id.clone()), None).await?);
            }
            print_tasks(client, tasks, &list).await
        }
        ServiceCommand::Inspect(a) => {
            let mut views = Vec::new();
            for name in &a.names {
                views.push(lookup_service(client, name).await?);
            }
            if a.pretty {
                let now = now_ms();
                let pages: Vec<String> = views.iter().map(|v| render::service_pretty(v, now)).collect();
                out(&pages.join("\n\n"));
                return Ok(());
            }
            let values = views.iter().map(inspect::service).collect();
            print_inspect(values, a.format.as_deref())
        }
        ServiceCommand::Rm { services } => {
            for_each(&services, |name| async move {
                client.control(ControlRequest::ServiceRemove { service: name.clone() }).await?;
                out(&format!("{name}\n"));
                Ok(())
            })
            .await
        }
        ServiceCommand::Scale { detach, scales } => {
            let mut parsed = Vec::new();
            for scale in &scales {
                let (name, count) = scale.split_once('=').ok_or_else(|| {
                    CliError::Usage(format!(
                        "invalid scale specifier '{scale}'.\nSee 'shoal service scale --help'.\n\nUsage:  shoal service \
                         scale SERVICE=REPLICAS [SERVICE=REPLICAS...]"
                    ))
                })?;
                let replicas: u64 = count
                    .parse()
                    .map_err(|e| CliError::Usage(format!("{name}: invalid replicas value {count}: {e}")))?;
                parsed.push((name.to_string(), replicas));
            }
            let mut failed = false;
            let mut scaled = Vec::new();
            for (name, replicas) in parsed {
                let result = async {
                    let view = client.service(&name).await?;
                    if view.service.spec.mode.is_global() {
                        return Err(CliError::Usage(format!(
                            "{name}: scale can only be used with replicated or replicated-job mode"
                        )));
                    }
                    client.control(ControlRequest::ServiceScale { service: name.clone(), replicas }).await?;
                    Ok(view.service.id)
                }
                .await;
                match result {
                    Ok(id) => {
                        out(&format!("{name} scaled to {replicas}\n"));
                        scaled.push(id);
                    }
                    Err(err) => {
                        eprintln!("{err}");
                        failed = true;
                    }
                }
            }
            if !detach {
                for id in scaled {
                    wait_converged(client, &id, false, false).await?;
                }
            }
            if failed {
                Err(CliError::Usage(String::new()))
            } else {
                Ok(())
            }
        }
        ServiceCommand::Update(a) => {
            let view = client.service(&a.service).await?;
            if a.rollback {
                client.control(ControlRequest::ServiceRollback { service: view.service.id.clone() }).await?;
            } else {
                let mut spec = spec::update_spec(&view.service.spec, &a).map_err(|e| CliError::Usage(e.to_string()))?;
                // Without the flag the spec carries no credentials and the service keeps its own.
                if a.common.with_registry_auth {
                    spec.task.registry_auth =
                        Some(Box::new(registry_auth::for_image(&spec.task.image).map_err(CliError::Usage)?));
                }
                let request = ControlRequest::ServiceUpdate {
                    service: view.service.id.clone(),
                    version: view.service.meta.version,
                    spec,
                };
                client.control(request).await?;
            }
            out(&format!("{}\n", a.service));
            if !a.common.detach {
                wait_converged(client, &view.service.id, a.common.quiet, a.rollback).await?;
            }
            Ok(())
        }
        ServiceCommand::Rollback { detach, quiet, service } => {
            let view = client.service(&service).await?;
            client.control(ControlRequest::ServiceRollback { service: view.service.id.clone() }).await?;
            out(&format!("{service}\n"));
            if !detach {
                wait_converged(client, &view.service.id, quiet, true).await?;
            }
            Ok(())
        }
        ServiceCommand::Logs(args) => service_logs(client, args).await,
    }
}

/// `service logs [-f]`: Docker's multiplexed stream of `GET /services/{id}/logs` (with `details`
/// and `timestamps`, so each line names its task and time), printed as shoal always printed it:
/// each batch grouped by task, `web.1.<task id>@<node>` resolved from the tasks and nodes the API
/// lists. With `--follow` the daemon keeps the stream open until the service is removed or the user
/// interrupts; a node whose logs could not be read is named on stderr (an error at the end without
/// `--follow`, as Docker's).
async fn service_logs(client: &Client, args: LogsArgs) -> CliResult {
    use http_body_util::BodyExt as _;
    let now_ns = shoal_core::env::runtime::unix_nanos();
    let since_ns = match &args.since {
        Some(since) => Some(crate::format::parse_since(since, now_ns).map_err(|e| CliError::Usage(e.0))?),
        None => None,
    };
    let mut pairs = vec![
        ("stdout", "1".to_string()),
        ("stderr", "1".to_string()),
        ("details", "1".to_string()),
        ("timestamps", "1".to_string()),
        ("follow", if args.follow { "1" } else { "0" }.to_string()),
        // Docker: "a negative number or a non-integer … is set to all".
        ("tail", if args.tail.parse::<usize>().is_ok() { args.tail.clone() } else { "all".into() }),
    ];
    if let Some(ns) = since_ns {
        pairs.push(("since", format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)));
    }
    let mut body = match client.api.logs(&args.service, &pairs).await {
        Ok(body) => body,
        // docker/cli's own words, without the daemon's prefix.
        Err(ApiError::Daemon { message, .. }) if message.contains("no such task or service") => {
            return Err(CliError::Usage(format!("no such task or service: {}", args.service)))
        }
        Err(err) => return Err(err.into()),
    };
    let mut names = LogNames::default();
    let mut buffer: Vec<u8> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    loop {
        let chunk = match body.frame().await {
            Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
            Some(Err(err)) => return Err(CliError::Usage(format!("Error grabbing logs: {err}"))),
            None => break,
        };
        buffer.extend_from_slice(&chunk);
        if !args.follow {
            continue;
        }
        let lines = take_frames(&mut buffer, &mut warnings);
        print_log_lines(client, &mut names, lines, &args).await;
        for warning in warnings.drain(..) {
            eprintln!("{warning}");
        }
    }
    let lines = take_frames(&mut buffer, &mut warnings);
    print_log_lines(client, &mut names, lines, &args).await;
    match warnings.pop() {
        Some(message) if !args.follow => Err(CliError::Daemon(message)),
        _ => Ok(()),
    }
}

/// One line of a logs stream: (task id, node id, service id, the line).
type StreamLine = (String, String, String, shoal_core::env::LogLine);

/// The whole frames at the start of `buffer` (the rest stays for the next chunk): lines, and the
/// daemon's own messages (stream 3) into `warnings`.
fn take_frames(buffer: &mut Vec<u8>, warnings: &mut Vec<String>) -> Vec<StreamLine> {
    let mut lines = Vec::new();
    let mut at = 0;
    while buffer.len() >= at + 8 {
        let size = u32::from_be_bytes([buffer[at + 4], buffer[at + 5], buffer[at + 6], buffer[at + 7]]) as usize;
        if buffer.len() < at + 8 + size {
            break;
        }
        let stream = buffer[at];
        let payload = String::from_utf8_lossy(&buffer[at + 8..at + 8 + size]).into_owned();
        at += 8 + size;
        let payload = payload.strip_suffix('\n').unwrap_or(&payload);
        if stream == crate::engine_api::logs::SYSTEMERR {
            warnings.push(payload.to_string());
            continue;
        }
        // `<RFC 3339 stamp> <details> <text>`.
        let (stamp, rest) = payload.split_once(' ').unwrap_or((payload, ""));
        let (details, text) = rest.split_once(' ').unwrap_or((rest, ""));
        let time_ns = chrono::DateTime::parse_from_rfc3339(stamp)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .map_or(0, |ns| ns.max(0) as u64);
        let attr = |key: &str| {
            details
                .split(',')
                .find_map(|pair| pair.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                .unwrap_or_default()
                .to_string()
        };
        let line = shoal_core::env::LogLine {
            time_ns,
            text: text.to_string(),
            stderr: stream == crate::engine_api::logs::STDERR,
        };
        lines.push((
            attr("com.docker.swarm.task.id"),
            attr("com.docker.swarm.node.id"),
            attr("com.docker.swarm.service.id"),
            line,
        ));
    }
    buffer.drain(..at);
    lines
}

/// Task names (`web.1`) and node hostnames for a logs stream, looked up as tasks appear.
#[derive(Default)]
struct LogNames {
    tasks: BTreeMap<String, Task>,
    hostnames: BTreeMap<String, String>,
}

/// Print one batch of stream lines, grouped by task (by task name, then id) as the daemon's answer
/// orders them.
async fn print_log_lines(client: &Client, names: &mut LogNames, lines: Vec<StreamLine>, args: &LogsArgs) {
    if lines.is_empty() {
        return;
    }
    if lines.iter().any(|(task, ..)| !names.tasks.contains_key(task)) {
        if let Ok(tasks) = client.tasks(None, None).await {
            names.tasks = tasks.into_iter().map(|t| (t.id.clone(), t)).collect();
        }
        if let Ok(nodes) = client.nodes().await {
            names.hostnames = nodes.into_iter().map(|v| (v.node.id.clone(), v.node.hostname().to_string())).collect();
        }
    }
    let mut logs = shoal_core::logs::ServiceLogs::default();
    for (task_id, node_id, service_id, line) in lines {
        logs.service_id = service_id;
        let task = names.tasks.get(&task_id);
        if let Some(task) = task {
            logs.service_name = task.service_name.clone();
        }
        match logs.tasks.iter_mut().find(|t| t.task_id == task_id) {
            Some(entry) => entry.lines.push(line),
            None => logs.tasks.push(shoal_core::logs::TaskLogs {
                task_name: task.map(Task::name).unwrap_or_else(|| task_id.clone()),
                task_id,
                hostname: names.hostnames.get(&node_id).cloned().unwrap_or_default(),
                node_id,
                lines: vec![line],
                last_ns: None,
            }),
        }
    }
    logs.tasks.sort_by(|a, b| (&a.task_name, &a.task_id).cmp(&(&b.task_name, &b.task_id)));
    let text = render::service_logs(&logs, args);
    out(&text.stdout);
    if !text.stderr.is_empty() {
        eprint!("{}", text.stderr);
    }
}

/// Convergence of one service as `service create`/`update`/`scale` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub running: u64,
    pub desired: u64,
    /// `N/M: state` lines (or the scheduler's reason a task waits).
    pub slots: Vec<String>,
    /// Old-version tasks still meant to run (an update is not done while any remain).
    pub stale: u64,
}

/// Where a service stands: tasks of the current task spec that run, against the desired count.
pub fn progress(service: &Service, desired: u64, tasks: &[Task]) -> Progress {
    // A task is current when it runs the service's task spec (the orchestrator's own test): a change
    // to, say, the update settings alone bumps the version but replaces no task.
    let current: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.desired_state == TaskState::Running && t.spec.same_workload(&service.spec.task))
        .collect();
    let stale = tasks
        .iter()
        .filter(|t| t.desired_state == TaskState::Running && !t.spec.same_workload(&service.spec.task))
        .filter(|t| t.status.state <= TaskState::Running)
        .count() as u64;
    let running = current.iter().filter(|t| t.status.state == TaskState::Running).count() as u64;
    let mut sorted = current.clone();
    sorted.sort_by_key(|t| (t.slot, t.node_id.clone()));
    let slots = sorted
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let err = if t.status.err.is_empty() && t.status.state < TaskState::Running {
                predecessor_error(service, tasks, t).unwrap_or("")
            } else {
                t.status.err.as_str()
            };
            slot_line(i as u64 + 1, desired, t.status.state, err)
        })
        .collect();
    Progress { running: running.min(desired), desired, slots, stale }
}

/// Why the task that `task` replaces stopped: the error of the latest task of the same slot (node, for
/// a global service) and task spec that failed or was rejected. A restarted task waits for its restart
/// delay, then starts afresh; until it runs, its slot's line says why the last one did not — Docker's
/// line shows the failed task's error (`1/1: No such image: …`, `task: non-zero exit (1)`) rather than a
/// `new` or `assigned` that would hide a crash loop.
fn predecessor_error<'a>(service: &Service, tasks: &'a [Task], task: &Task) -> Option<&'a str> {
    tasks
        .iter()
        .filter(|o| o.id != task.id && o.slot == task.slot && o.spec == service.spec.task)
        .filter(|o| task.slot != 0 || o.node_id == task.node_id)
        .filter(|o| o.status.state > TaskState::Running && !o.status.err.is_empty())
        .max_by_key(|o| (o.status.timestamp_ms, o.meta.created_at_ms))
        .map(|o| o.status.err.as_str())
}

/// Docker's `truncError`: newlines become spaces, and at most 75 characters (the last one `…`), so an
/// error never wraps a narrow terminal's line.
fn trunc_error(err: &str) -> String {
    const MAX_WIDTH: usize = 75;
    let err = err.replace('\n', " ");
    if err.chars().count() <= MAX_WIDTH {
        return err;
    }
    let mut cut: String = err.chars().take(MAX_WIDTH - 1).collect();
    cut.push('…');
    cut
}

/// One slot's line, as Docker's progress writer prints it: the scheduler's or agent's error, or the
/// state with a 50-character bar over Swarm's nine states up to running.
pub fn slot_line(slot: u64, desired: u64, state: TaskState, err: &str) -> String {
    if !err.is_empty() {
        return format!("{slot}/{desired}: {}", trunc_error(err));
    }
    // Docker's `numberedStates`: new = 1 … running = 9 (shoal has no `allocated`, which is 2).
    let step = match state {
        TaskState::New => 1,
        TaskState::Pending => 3,
        TaskState::Assigned => 4,
        TaskState::Accepted => 5,
        TaskState::Preparing => 6,
        TaskState::Ready => 7,
        TaskState::Starting => 8,
        _ => 9,
    };
    let bars = 50 * step / 9;
    format!("{slot}/{desired}: {:<9} [{}>{}]", state.as_str(), "=".repeat(bars), " ".repeat(50 - bars))
}

/// A job's progress (Docker's job progress writer): how many of its tasks completed and how many run;
/// true once the current iteration is complete (`job complete`). Prints a line when it changes.
fn job_progress(service: &Service, tasks: &[Task], quiet: bool, last: &mut String) -> bool {
    let refs: Vec<&Task> = tasks.iter().collect();
    let (running, desired, completed) = shoal_core::orchestrator::jobs::job_counts(service, &refs);
    let (total, done) = match service.spec.mode {
        shoal_core::api::ServiceMode::ReplicatedJob { total_completions, .. } => {
            (total_completions, completed >= total_completions)
        }
        _ => (desired + completed, desired == 0 && completed > 0),
    };
    let line =
        format!("job progress: {completed} out of {total} complete\nactive tasks: {running} out of {desired} tasks\n");
    if !quiet && line != *last {
        out(&line);
        *last = line;
    }
    if done && !quiet {
        out("job complete\n");
    }
    done
}

/// Poll until the service converges (Docker's `progress.ServiceProgress`, line by line), or its
/// update pauses or rolls back.
async fn wait_converged(client: &Client, service_id: &str, quiet: bool, rollback_requested: bool) -> CliResult {
    let mut announced_rollback = false;
    let mut rollback_reason = String::new();
    // The update status when the wait began: a rollback finished before it (an older one) is not
    // this command's.
    let mut initial_status = None;
    let mut last_overall = String::new();
    let mut last_slots: Vec<String> = Vec::new();
    let mut converged_since: Option<std::time::Instant> = None;
    let mut announced_verify = false;
    loop {
        let view = client.service(service_id).await?;
        let tasks = client.tasks(Some(service_id.to_string()), None).await?;
        if initial_status.is_none() {
            initial_status = Some(view.service.update_status.clone());
        }
        let monitor = Duration::from_millis(view.service.spec.update_config.monitor_ms.min(5_000));
        if let Some(status) = &view.service.update_status {
            match status.state {
                UpdateState::Paused => {
                    return Err(CliError::Usage(format!("service update paused: {}", status.message)))
                }
                UpdateState::RollbackPaused => {
                    return Err(CliError::Usage(format!("service rollback paused: {}", status.message)))
                }
                _ => {}
            }
        }
        let rolling_back =
            matches!(view.service.update_status.as_ref().map(|s| s.state), Some(UpdateState::RollbackStarted));
        if rolling_back && !announced_rollback {
            rollback_reason = view.service.update_status.as_ref().map(|s| s.message.clone()).unwrap_or_default();
            if !quiet {
                out(&format!("rollback: {rollback_reason}\n"));
            }
        }
        announced_rollback |= rolling_back;
        if view.service.spec.mode.is_job() {
            if job_progress(&view.service, &tasks, quiet, &mut last_overall) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let p = progress(&view.service, view.desired, &tasks);
        let overall = if rolling_back {
            format!("overall progress: rolling back update: {} out of {} tasks", p.running, p.desired)
        } else {
            format!("overall progress: {} out of {} tasks", p.running, p.desired)
        };
        if !quiet {
            if overall != last_overall {
                out(&format!("{overall}\n"));
                last_overall = overall;
            }
            for (i, line) in p.slots.iter().enumerate() {
                if last_slots.get(i) != Some(line) {
                    out(&format!("{line}\n"));
                }
            }
            last_slots = p.slots.clone();
        }
        let updating = matches!(
            view.service.update_status.as_ref().map(|s| s.state),
            Some(UpdateState::Updating | UpdateState::RollbackStarted)
        );
        let done = p.running == p.desired && p.stale == 0 && !updating;
        if done {
            let since = *converged_since.get_or_insert_with(std::time::Instant::now);
            if !announced_verify && !quiet && !monitor.is_zero() {
                out(&format!(
                    "verify: Waiting {} seconds to verify that tasks are stable...\n",
                    monitor.as_secs().max(1)
                ));
                announced_verify = true;
            }
            if since.elapsed() >= monitor {
                if !quiet {
                    out("verify: Service converged\n");
                }
                // An update the cluster undid is a failed update, as Docker reports it.
                if let Some(status) = view.service.update_status.as_ref() {
                    let ours = announced_rollback || initial_status.as_ref() != Some(&view.service.update_status);
                    if status.state == UpdateState::RollbackCompleted && !rollback_requested && ours {
                        let reason = if rollback_reason.is_empty() { &status.message } else { &rollback_reason };
                        return Err(CliError::Usage(format!("service rolled back: {reason}")));
                    }
                }
                return Ok(());
            }
        } else {
            if converged_since.take().is_some() && !quiet {
                out("verify: Detected task failure\n");
            }
            announced_verify = false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn network(client: &Client, cmd: NetworkCommand) -> CliResult {
    match cmd {
        NetworkCommand::Create { driver, attachable, ingress, label, subnet, name } => {
            let labels = label.iter().map(|l| spec::label(l)).collect();
            if subnet.len() > 1 {
                return Err(CliError::Usage(format!(
                    "shoal networks have one subnet; got {} (--subnet {})",
                    subnet.len(),
                    subnet.join(" --subnet ")
                )));
            }
            let subnet = subnet.into_iter().next().unwrap_or_default();
            match client
                .control(ControlRequest::NetworkCreate { name, driver, attachable, labels, subnet, ingress })
                .await?
            {
                ControlResponse::Created { id } => {
                    out(&format!("{id}\n"));
                    Ok(())
                }
                other => Err(unexpected(&other)),
            }
        }
        NetworkCommand::Ls(a) => {
            let filters = parse_filters(&a.filter, filters::NETWORK_KEYS)?;
            match client.control(ControlRequest::NetworkList).await? {
                ControlResponse::Networks(networks) => {
                    let networks = filters::networks(networks, &filters).map_err(CliError::Usage)?;
                    print_listing(&render::network_list(networks), a.format.as_deref(), a.quiet)
                }
                other => Err(unexpected(&other)),
            }
        }
        NetworkCommand::Rm { force, networks } => {
            for_each(&networks, |network| async move {
                // The routing mesh's network asks first, in docker/cli's words.
                match client.control(ControlRequest::NetworkInspect { network: network.clone() }).await {
                    Ok(ControlResponse::Network(n)) if n.ingress && !confirm(INGRESS_WARNING) => return Ok(()),
                    // `-f`: a network that does not exist is not an error.
                    Err(CliError::Daemon(why)) if force && why.contains("not found") => return Ok(()),
                    _ => {}
                }
                client.control(ControlRequest::NetworkRemove { network: network.clone() }).await?;
                out(&format!("{network}\n"));
                Ok(())
            })
            .await
        }
        NetworkCommand::Inspect { format, networks } => {
            let mut values = Vec::new();
            for network in networks {
                match client.control(ControlRequest::NetworkInspect { network }).await? {
                    ControlResponse::Network(n) => values.push(inspect::network(&n)),
                    other => return Err(unexpected(&other)),
                }
            }
            print_inspect(values, format.as_deref())
        }
    }
}

async fn info(client: &Client, format: Option<&str>) -> CliResult {
    // `/info`: the node's standing, and the cluster when this node is a manager.
    let (status, cluster) = client.api.info().await?;
    match format {
        Some("json") | Some("{{json .}}") => {
            let value = serde_json::json!({ "Swarm": status, "Cluster": cluster });
            out(&format!("{value}\n"));
        }
        Some(template) => {
            let value = serde_json::json!({ "Swarm": status, "Cluster": cluster });
            let line = listing::expand_value(template, &value).map_err(|e| CliError::Usage(e.to_string()))?;
            out(&format!("{line}\n"));
        }
        None => out(&render::info(&status, cluster.as_ref())),
    }
    Ok(())
}

async fn services(client: &Client) -> CliResult<Vec<ServiceView>> {
    match client.control(ControlRequest::ServiceList).await? {
        ControlResponse::Services(services) => Ok(services),
        other => Err(unexpected(&other)),
    }
}

async fn networks(client: &Client) -> CliResult<Vec<shoal_core::api::Network>> {
    match client.control(ControlRequest::NetworkList).await? {
        ControlResponse::Networks(networks) => Ok(networks),
        other => Err(unexpected(&other)),
    }
}

async fn stack_services(client: &Client, name: &str) -> CliResult<Vec<ServiceView>> {
    Ok(services(client)
        .await?
        .into_iter()
        .filter(|v| shoal_core::stack::in_stack(&v.service.spec.labels, name))
        .collect())
}

/// Read a compose file (`-` = stdin) and the env files it names (relative to its directory), and
/// convert it with this shell's environment.
fn compose_plan(path: &str, stack: &str) -> CliResult<shoal_core::stack::StackPlan> {
    let text = if path == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| CliError::Usage(format!("cannot read the compose file from stdin: {e}")))?;
        text
    } else {
        std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("open {path}: {e}")))?
    };
    let dir = match std::path::Path::new(path).parent() {
        Some(dir) if path != "-" => dir.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let env_file = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    let input = shoal_core::stack::ComposeInput { stack, path, text: &text, env: &env, env_file: &env_file };
    let mut plan = shoal_core::stack::convert(&input).map_err(|e| CliError::Usage(e.to_string()))?;
    // Bind sources relative to the compose file's directory (Docker's loader resolves them so);
    // the core resolves them itself only from an absolute file path.
    if let Ok(dir) = std::path::absolute(&dir) {
        for mount in plan.services.iter_mut().flat_map(|s| s.task.mounts.iter_mut()) {
            if mount.kind == shoal_core::api::MountType::Bind {
                if let Some(resolved) = shoal_core::stack::resolve_bind_source(&dir, &mount.source) {
                    mount.source = resolved;
                }
            }
        }
    }
    Ok(plan)
}

async fn stack_command(client: &Client, cmd: StackCommand) -> CliResult {
    match cmd {
        StackCommand::Deploy { compose_file, stack: name, prune } => {
            let plan = compose_plan(&compose_file, &name)?;
            if !plan.ignored.is_empty() {
                eprintln!("Ignoring unsupported options: {}\n", plan.ignored.join(", "));
            }
            if !plan.deprecated.is_empty() {
                eprintln!("Ignoring deprecated options:\n\n{}\n", plan.deprecated.join("\n"));
            }
            for warning in &plan.warnings {
                eprintln!("WARNING: {warning}");
            }
            let current: Vec<Service> = services(client).await?.into_iter().map(|v| v.service).collect();
            // Secrets and configs first (their files relative to the compose file), as docker/cli.
            let (secrets, configs) = files::existing(client).await?;
            let dir = match std::path::Path::new(&compose_file).parent() {
                Some(dir) if compose_file != "-" => dir.to_path_buf(),
                _ => std::path::PathBuf::from("."),
            };
            let read = |file: &str| std::fs::read(dir.join(file)).map_err(|e| format!("open {file}: {e}"));
            let mut steps = shoal_core::stack::file_object_steps(&plan, &secrets, &configs, &read)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            steps.extend(
                shoal_core::stack::deploy_steps(&plan, &networks(client).await?, &current, prune)
                    .map_err(|e| CliError::Usage(e.to_string()))?,
            );
            for step in steps {
                out(&format!("{}\n", step.message()));
                client.control(step.request()).await?;
            }
            Ok(())
        }
        StackCommand::Ls { format } => {
            let services = services(client).await?;
            print_listing(&render::stack_list(&services), format.as_deref(), false)
        }
        StackCommand::Services { list, stack: name } => {
            let filters = parse_filters(&list.filter, filters::SERVICE_KEYS)?;
            let services =
                filters::services(stack_services(client, &name).await?, &filters).map_err(CliError::Usage)?;
            if services.is_empty() {
                eprintln!("Nothing found in stack: {name}");
                return Ok(());
            }
            print_listing(&render::service_list(services), list.format.as_deref(), list.quiet)
        }
        StackCommand::Ps { list, stack: name } => {
            let services = stack_services(client, &name).await?;
            if services.is_empty() {
                return Err(CliError::Usage(format!("nothing found in stack: {name}")));
            }
            let mut tasks = Vec::new();
            for view in services {
                tasks.extend(client.tasks(Some(view.service.id.clone()), None).await?);
            }
            print_tasks(client, tasks, &list).await
        }
        StackCommand::Rm { stacks } => {
            let mut failed = false;
            for name in stacks {
                let current: Vec<Service> = services(client).await?.into_iter().map(|v| v.service).collect();
                let (secrets, configs) = files::existing(client).await?;
                let steps = shoal_core::stack::remove_steps_with_files(
                    &name,
                    &networks(client).await?,
                    &current,
                    &secrets,
                    &configs,
                );
                if steps.is_empty() {
                    eprintln!("Nothing found in stack: {name}");
                    continue;
                }
                for step in steps {
                    out(&format!("{}\n", step.message()));
                    if let Err(err) = client.control(step.request()).await {
                        eprintln!("Failed to {}: {err}", step.message().replacen("Removing ", "remove ", 1));
                        failed = true;
                    }
                }
            }
            if failed {
                Err(CliError::Usage(String::new()))
            } else {
                Ok(())
            }
        }
    }
}
