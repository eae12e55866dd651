//! The `shoal` binary: `shoal daemon …` runs the daemon; every other command is a CLI call to it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use shoal::cli::args::{Cli, Command, DaemonArgs, ExecutorArg, PullArg};
use shoal::daemon::{system_hostname, Daemon};
use shoal::data_dir_lock::DataDirLock;
use shoal::docker::PullPolicy;
use shoal::engine_api;
use shoal::engine_client::Endpoint;
use shoal::local_api::LocalHandler;
use shoal::node_launcher::{dns_upstream, host_resolvers, ExecutorKind, RealLauncher};
use shoal_core::mesh::MeshOptions;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Daemon(args) => match runtime.block_on(run_daemon(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("shoal daemon: {err:#}");
                ExitCode::FAILURE
            }
        },
        command => match runtime.block_on(shoal::cli::run(cli.host.as_deref(), &cli.tls, command)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                let text = err.to_string();
                if !text.is_empty() {
                    eprintln!("{text}");
                }
                ExitCode::FAILURE
            }
        },
    }
}

/// The default data dir: `/var/lib/shoal` for root, else under `$XDG_DATA_HOME` or `~/.local/share`.
fn default_data_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/shoal");
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("shoal");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/shoal"),
        None => PathBuf::from("/var/lib/shoal"),
    }
}

async fn run_daemon(args: DaemonArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    // Before anything else — binding, the raft log, the process executor's clean-up of what a previous
    // daemon left running: a data dir another daemon uses is not ours to touch. Held until we exit.
    let _lock = DataDirLock::acquire(&data_dir)?;
    // `--tcp` and its TLS, checked before anything starts.
    let tls = args.tls.files().map_err(anyhow::Error::msg)?;
    anyhow::ensure!(tls.is_none() || args.tcp.is_some(), "--tlsverify is for the API on TCP: give --tcp ADDR too");
    let tcp = match args.tcp {
        Some(addr) => {
            let parsed: std::net::SocketAddr =
                addr.parse().with_context(|| format!("invalid --tcp address {addr:?}"))?;
            let acceptor = match &tls {
                Some(files) => Some(tokio_rustls::TlsAcceptor::from(shoal::api_tls::server_config(files)?)),
                // Without TLS the API has no authentication: it must not be reachable from other hosts.
                None => {
                    anyhow::ensure!(
                        parsed.ip().is_loopback(),
                        "--tcp must be a loopback address (127.0.0.1:PORT) without --tlsverify, got {addr}"
                    );
                    None
                }
            };
            Some((addr, parsed, acceptor))
        }
        None => None,
    };
    let socket = args.socket.unwrap_or_else(Endpoint::default_socket);
    let hostname = args.hostname.unwrap_or_else(system_hostname);
    let uses_docker = args.executor == ExecutorArg::Docker;
    let executor = match args.executor {
        ExecutorArg::Docker => ExecutorKind::Docker {
            pull: match args.pull {
                PullArg::Missing => PullPolicy::Missing,
                PullArg::Never => PullPolicy::Never,
            },
        },
        ExecutorArg::Process => ExecutorKind::Process,
    };
    let dns_upstreams = if args.dns_upstream.is_empty() {
        // Docker's behaviour: containers resolve other names through the host's resolvers.
        host_resolvers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    } else if args.dns_upstream.iter().any(|u| u == "none") {
        Vec::new()
    } else {
        args.dns_upstream
            .iter()
            .map(|u| dns_upstream(u))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("invalid --dns-upstream: {e}"))?
    };
    let mesh = MeshOptions { drain: !args.no_mesh_drain, dns_upstreams };
    let launcher = Arc::new(RealLauncher::new(executor).with_mesh_options(mesh));
    let daemon = Arc::new(
        Daemon::new(&data_dir, hostname.clone(), launcher)
            .with_context(|| format!("cannot use the data dir {}", data_dir.display()))?,
    );
    let handler: Arc<dyn LocalHandler> = Arc::new(daemon.clone());
    // One API: the Docker Engine API, for shoal's CLI and Docker's clients alike.
    let mut api = engine_api::EngineApi::new(handler.clone(), hostname.clone());
    if uses_docker {
        // `/distribution` reads the image store of the engine the tasks run on.
        match bollard::Docker::connect_with_local_defaults() {
            Ok(docker) => match docker.negotiate_version().await {
                Ok(docker) => api = api.with_images(docker),
                Err(err) => eprintln!("shoal daemon: Docker Engine API: no image store for /distribution: {err}"),
            },
            Err(err) => eprintln!("shoal daemon: Docker Engine API: no image store for /distribution: {err}"),
        }
    }
    let api = Arc::new(api);
    let mut servers = Vec::new();
    let mut sockets = Vec::new();
    // `--api-socket`: the same API on a second socket (where Docker's clients are pointed).
    for path in std::iter::once(socket).chain(args.api_socket) {
        let listener = engine_api::bind(&path).await.with_context(|| format!("cannot listen on {}", path.display()))?;
        eprintln!("shoal daemon: {hostname}: Docker Engine API on unix://{}", path.display());
        servers.push(tokio::spawn(engine_api::serve_unix(listener, api.clone())));
        sockets.push(path);
    }
    if let Some((addr, parsed, acceptor)) = tcp {
        let listener =
            tokio::net::TcpListener::bind(parsed).await.with_context(|| format!("cannot listen on {addr}"))?;
        match acceptor {
            Some(acceptor) => {
                eprintln!("shoal daemon: Docker Engine API on tcp://{addr} (TLS, client certificates required)");
                servers.push(tokio::spawn(engine_api::serve_tls(listener, acceptor, api.clone())));
            }
            None => {
                eprintln!("shoal daemon: Docker Engine API on tcp://{addr}");
                servers.push(tokio::spawn(engine_api::serve_tcp(listener, api.clone())));
            }
        }
    }
    daemon.resume().await;

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    tokio::select! {
        _ = sigterm.recv() => eprintln!("shoal daemon: SIGTERM, shutting down"),
        _ = tokio::signal::ctrl_c() => eprintln!("shoal daemon: interrupted, shutting down"),
    }
    for server in servers {
        server.abort();
    }
    daemon.shutdown().await;
    for socket in sockets {
        let _ = std::fs::remove_file(socket);
    }
    Ok(())
}
