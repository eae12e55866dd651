//! A real arm of the executor seam for hosts without Docker: [`ProcessExecutor`] runs each
//! "container" as a plain host process (tokio::process).
//!
//! What a container spec means here:
//! - `image` is either [`PROCESS_IMAGE`] (`"process"`): run `command` as argv, `command[0]` looked up
//!   in `PATH`; or an absolute path to an executable: run it with `command` as its arguments.
//!   Anything else is [`ExecutorError::ImageUnavailable`] — nothing is ever downloaded.
//! - `env` is the whole environment, on top of a default `PATH` (as a container gets its image's env
//!   and not the daemon's) and of what the daemon sets for every task ([`ProcessExecutor::set_base_env`]:
//!   `SHOAL_NODE_IP` and `SHOAL_TASK_IP`, the node's address, where the mesh reaches the task: there
//!   are no bridges, so a process serving a published port must listen on it or on all addresses);
//!   entries without `=` are ignored.
//! - `labels` are kept in memory; `memory_limit_bytes` and `nano_cpus` are recorded but NOT enforced
//!   (that would take cgroups, which is what Docker is for).
//! - `workdir` is the process's working directory; `user` (`name`, `uid` or `uid:gid`, a name looked
//!   up in the host's `/etc/passwd`) the user it runs as — switching users needs the daemon to run
//!   as root, as Docker's does.
//! - Each process leads its own process group, so `stop` (SIGTERM — or the task's `--stop-signal` —
//!   then SIGKILL after the grace) and `remove` reach the children of a `sh -c` too.
//! - The other container options (capabilities, sysctls, ulimits, init, read-only root, DNS, extra
//!   hosts) need a container: a task that asks for one is rejected, naming it.
//! - stdout and stderr are captured line by line, interleaved (each line marked with its stream),
//!   the last [`LOG_LINES`] kept.
//! - Exit codes follow Docker's: the process's code, or 128 + the signal that killed it.
//!
//! Containers live as long as the executor: they are not re-adopted after a daemon restart (a
//! process's output pipe cannot be taken over), and dropping the executor kills every process it
//! still runs. A daemon that is SIGKILLed cannot do that, so an executor made
//! [`with_registry`](ProcessExecutor::with_registry) keeps a file of the process groups it runs
//! (group id and start time, to tell a reused id apart) and, when the next daemon makes it again,
//! kills what is left of them before it starts anything: the agent then starts its tasks afresh,
//! and no task runs twice.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use shoal_core::api::RegistryAuth;
use shoal_core::env::{
    runtime, ContainerSpec, ContainerState, ContainerSummary, Executor, ExecutorError, LogLine, LogsQuery,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

/// The image name meaning "no image, `command` is the argv".
pub const PROCESS_IMAGE: &str = "process";
/// Output lines kept per process.
pub const LOG_LINES: usize = 10_000;
/// The `PATH` a process starts with unless its env sets one (Docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long a SIGKILLed process may take to be reaped before `stop` reports it stuck.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Runs containers as host processes.
#[derive(Debug, Clone)]
pub struct ProcessExecutor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id_prefix: String,
    next_id: AtomicU64,
    containers: Mutex<BTreeMap<String, Proc>>,
    /// Where the running process groups are listed, if anywhere.
    registry: Option<PathBuf>,
    /// `KEY=value` pairs every process gets before its own env (the node's address, for the mesh).
    base_env: Mutex<Vec<String>>,
}

/// A running process group as the registry lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct GroupRecord {
    pgid: i32,
    /// The leader's start time (`/proc/<pid>/stat` field 22, clock ticks since boot).
    start_ticks: u64,
}

/// `user`, `uid` or `uid:gid` (a group name or gid after the colon) as numeric ids; names from the
/// host's `/etc/passwd` and `/etc/group`. Docker's message when a name is unknown.
fn resolve_user(user: &str) -> Result<(u32, Option<u32>), ExecutorError> {
    // The numeric fields (from the third on) of `name`'s line in `file`.
    let lookup = |file: &str, name: &str| -> Option<Vec<u32>> {
        let text = std::fs::read_to_string(file).ok()?;
        let line = text.lines().find(|line| line.split(':').next() == Some(name))?;
        Some(line.split(':').skip(2).map_while(|field| field.parse().ok()).collect())
    };
    let (who, group) = match user.split_once(':') {
        Some((who, group)) => (who, Some(group)),
        None => (user, None),
    };
    let (uid, passwd_gid) = match who.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => match lookup("/etc/passwd", who).as_deref() {
            Some([uid, gid, ..]) => (*uid, Some(*gid)),
            _ => {
                return Err(ExecutorError::Runtime(format!(
                    "unable to find user {who}: no matching entries in passwd file"
                )))
            }
        },
    };
    let gid = match group {
        None => passwd_gid,
        Some(group) => Some(match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup("/etc/group", group).and_then(|ids| ids.first().copied()).ok_or_else(|| {
                ExecutorError::Runtime(format!("unable to find group {group}: no matching entries in group file"))
            })?,
        }),
    };
    Ok((uid, gid))
}

/// `(process group, start time)` of a live process, from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): pgrp is field 5, starttime field 22.
    Some((fields.get(2)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// Kill what is left of a process group a previous daemon started: every process still in group
/// `record.pgid` that started no earlier than its leader did (so a group id reused since, by an
/// unrelated older process, is left alone).
fn kill_leftover_group(record: GroupRecord) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let mut killed = 0;
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        if let Some((pgrp, start)) = proc_stat(pid) {
            if pgrp == record.pgid && start >= record.start_ticks {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                killed += 1;
            }
        }
    }
    killed
}

#[derive(Debug)]
struct Proc {
    spec: ContainerSpec,
    argv: Vec<String>,
    /// `(uid, gid)` to run as, from `spec.user`.
    user: Option<(u32, Option<u32>)>,
    state: Arc<watch::Sender<ContainerState>>,
    /// The process (and group) id while it runs.
    pid: Option<i32>,
    /// Its group as the registry lists it.
    group: Option<GroupRecord>,
    logs: Arc<Mutex<VecDeque<LogLine>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Critical sections are single map operations, so a poisoned lock holds consistent data.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn no_such(id: &str) -> ExecutorError {
    ExecutorError::NoSuchContainer { id: id.to_string() }
}

/// Send `signal` to the whole process group `pgid`. A group that is already gone is not an error.
fn signal_group(pgid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses the process group
    // that `start` created with the child as its leader.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

fn exit_code(status: std::process::ExitStatus) -> i64 {
    match (status.code(), status.signal()) {
        (Some(code), _) => i64::from(code),
        (None, Some(signal)) => 128 + i64::from(signal),
        (None, None) => -1,
    }
}

impl Default for ProcessExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessExecutor {
    pub fn new() -> Self {
        // Ids unique across executors in one daemon and across restarts of it.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        ProcessExecutor {
            inner: Arc::new(Inner {
                id_prefix: format!("{:x}{:x}", std::process::id(), nanos),
                next_id: AtomicU64::new(1),
                containers: Mutex::new(BTreeMap::new()),
                registry: None,
                base_env: Mutex::new(Vec::new()),
            }),
        }
    }

    /// An executor that lists its process groups in the file `registry`, after killing what is left
    /// of the groups listed there by a daemon that died without stopping them. Returns how many
    /// leftover processes it killed, for the daemon's log.
    pub fn with_registry(registry: PathBuf) -> Result<(Self, usize), ExecutorError> {
        let leftover: Vec<GroupRecord> = match std::fs::read(&registry) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(ExecutorError::Unavailable(format!("{}: {err}", registry.display()))),
        };
        let killed = leftover.into_iter().map(kill_leftover_group).sum();
        let mut executor = Self::new();
        Arc::get_mut(&mut executor.inner).expect("a new executor is not shared").registry = Some(registry);
        executor.inner.save_registry(&BTreeMap::new())?;
        Ok((executor, killed))
    }

    /// Give every process started from now on these `KEY=value` pairs, before its own env (which
    /// wins). The daemon sets `SHOAL_NODE_IP`/`SHOAL_TASK_IP`: with no bridges, a task is reached at
    /// its node's address, so it must listen there (or on all addresses).
    pub fn set_base_env(&self, env: Vec<String>) {
        *lock(&self.inner.base_env) = env;
    }

    fn check_image(image: &str) -> Result<(), ExecutorError> {
        if image == PROCESS_IMAGE {
            return Ok(());
        }
        let unavailable = |reason: &str| ExecutorError::ImageUnavailable {
            image: image.to_string(),
            reason: format!(
                "No such image: {image}: {reason} (the process executor runs host programs: the image must be \
                 `{PROCESS_IMAGE}` or an absolute path to an executable)"
            ),
        };
        let path = Path::new(image);
        if !path.is_absolute() {
            return Err(unavailable("not an absolute path"));
        }
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => Ok(()),
            Ok(_) => Err(unavailable("not an executable file")),
            Err(e) => Err(unavailable(&e.to_string())),
        }
    }

    fn summary(id: &str, proc: &Proc) -> ContainerSummary {
        ContainerSummary {
            id: id.to_string(),
            name: proc.spec.name.clone(),
            image: proc.spec.image.clone(),
            labels: proc.spec.labels.clone(),
            state: *proc.state.borrow(),
            addresses: Default::default(),
            health: None,
        }
    }

    /// The state channel and running pid of `id`.
    fn handle(&self, id: &str) -> Result<(watch::Receiver<ContainerState>, Option<i32>), ExecutorError> {
        let containers = lock(&self.inner.containers);
        let proc = containers.get(id).ok_or_else(|| no_such(id))?;
        let running = matches!(*proc.state.borrow(), ContainerState::Running);
        Ok((proc.state.subscribe(), proc.pid.filter(|_| running)))
    }
}

/// Wait until the state is `Exited` and return its code; `None` if the process record went away.
async fn exited(state: &mut watch::Receiver<ContainerState>) -> Option<i64> {
    loop {
        if let ContainerState::Exited { code } = *state.borrow_and_update() {
            return Some(code);
        }
        state.changed().await.ok()?;
    }
}

/// Copy a process's output into its log, one line at a time.
async fn capture<R: AsyncRead + Unpin>(output: R, logs: Arc<Mutex<VecDeque<LogLine>>>, stderr: bool) {
    let mut lines = BufReader::new(output).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut logs = lock(&logs);
        if logs.len() == LOG_LINES {
            logs.pop_front();
        }
        let line = LogLine::after(logs.back(), runtime::unix_nanos(), line, stderr);
        logs.push_back(line);
    }
}

impl Inner {
    /// Rewrite the registry (atomically) with the groups of the running processes in `containers`.
    fn save_registry(&self, containers: &BTreeMap<String, Proc>) -> Result<(), ExecutorError> {
        let Some(path) = &self.registry else { return Ok(()) };
        let records: Vec<GroupRecord> = containers
            .values()
            .filter(|proc| matches!(*proc.state.borrow(), ContainerState::Running))
            .filter_map(|proc| proc.group)
            .collect();
        let fail = |err: std::io::Error| ExecutorError::Unavailable(format!("{}: {err}", path.display()));
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&records).unwrap_or_default()).map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Nobody can stop these processes once the executor is gone.
        for proc in lock(&self.containers).values() {
            if let (Some(pid), ContainerState::Running) = (proc.pid, *proc.state.borrow()) {
                signal_group(pid, libc::SIGKILL);
            }
        }
    }
}

#[async_trait]
impl Executor for ProcessExecutor {
    async fn prepare_image(&self, image: &str, _auth: Option<&RegistryAuth>) -> Result<(), ExecutorError> {
        Self::check_image(image)
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, ExecutorError> {
        Self::check_image(&spec.image)?;
        // A host process has no mount namespace to put files at `/run/secrets/…` without touching
        // the host's own paths, so a task that uses secrets or configs is refused, clearly.
        if let Some(file) = spec.files.first() {
            return Err(ExecutorError::Runtime(format!(
                "container {}: the process executor cannot mount secrets or configs ({} and {} more); run this \
                 node with the Docker executor",
                spec.name,
                file.path,
                spec.files.len() - 1
            )));
        }
        refuse_container_options(spec)?;
        if !spec.mounts.is_empty() {
            // A plain process has no mount namespace of its own to mount into.
            return Err(ExecutorError::Runtime(format!(
                "container {}: the process executor cannot mount volumes (--mount needs the docker executor)",
                spec.name
            )));
        }
        // Plain processes have no health checks: refused rather than silently never checked.
        if spec.healthcheck.as_ref().is_some_and(|check| !check.is_disabled()) {
            return Err(ExecutorError::Runtime(format!(
                "container {}: the process executor does not run health checks (--health-cmd, compose \
                 healthcheck): run the daemon with the Docker executor, or create the service with --no-healthcheck",
                spec.name
            )));
        }
        let argv = if spec.image == PROCESS_IMAGE {
            if spec.command.is_empty() {
                return Err(ExecutorError::Runtime(format!(
                    "container {}: image `{PROCESS_IMAGE}` needs a command to run",
                    spec.name
                )));
            }
            spec.command.clone()
        } else {
            std::iter::once(spec.image.clone()).chain(spec.command.iter().cloned()).collect()
        };
        let user = if spec.user.is_empty() { None } else { Some(resolve_user(&spec.user)?) };
        let mut containers = lock(&self.inner.containers);
        if !spec.name.is_empty() && containers.values().any(|proc| proc.spec.name == spec.name) {
            return Err(ExecutorError::Runtime(format!("the container name {:?} is already in use", spec.name)));
        }
        let id = format!("{}-{}", self.inner.id_prefix, self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let (state, _) = watch::channel(ContainerState::Created);
        containers.insert(
            id.clone(),
            Proc {
                spec: spec.clone(),
                argv,
                user,
                state: Arc::new(state),
                pid: None,
                group: None,
                logs: Arc::default(),
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), ExecutorError> {
        let mut containers = lock(&self.inner.containers);
        let proc = containers.get_mut(id).ok_or_else(|| no_such(id))?;
        match *proc.state.borrow() {
            ContainerState::Created => {}
            ContainerState::Running => return Ok(()),
            ContainerState::Exited { .. } => {
                return Err(ExecutorError::Runtime(format!("container {id} has exited; create a new one")))
            }
        }
        let mut command = Command::new(&proc.argv[0]);
        command
            .args(&proc.argv[1..])
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .envs(lock(&self.inner.base_env).iter().filter_map(|pair| pair.split_once('=')))
            .envs(proc.spec.env.iter().filter_map(|pair| pair.split_once('=')))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if !proc.spec.workdir.is_empty() {
            command.current_dir(&proc.spec.workdir);
        }
        if let Some((uid, gid)) = proc.user {
            command.uid(uid);
            if let Some(gid) = gid {
                command.gid(gid);
            }
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                // As Docker does for a missing executable: the container is dead with 127.
                proc.state.send_replace(ContainerState::Exited { code: 127 });
                return Err(ExecutorError::Runtime(format!("starting {:?}: {e}", proc.argv[0])));
            }
        };
        proc.pid = child.id().and_then(|pid| i32::try_from(pid).ok());
        proc.group = proc.pid.and_then(proc_stat).map(|(pgid, start_ticks)| GroupRecord { pgid, start_ticks });
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(capture(stdout, proc.logs.clone(), false));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(capture(stderr, proc.logs.clone(), true));
        }
        proc.state.send_replace(ContainerState::Running);
        let state = proc.state.clone();
        let registered = self.inner.save_registry(&containers);
        drop(containers);
        // Weak: a running process must not keep the executor alive (dropping it kills them all).
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(status) => exit_code(status),
                Err(_) => -1,
            };
            state.send_replace(ContainerState::Exited { code });
            if let Some(inner) = inner.upgrade() {
                let containers = lock(&inner.containers);
                let _ = inner.save_registry(&containers);
            }
        });
        registered
    }

    async fn wait(&self, id: &str) -> Result<i64, ExecutorError> {
        let (mut state, _) = self.handle(id)?;
        exited(&mut state).await.ok_or_else(|| no_such(id))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), ExecutorError> {
        let (mut state, pid) = self.handle(id)?;
        let Some(pid) = pid else { return Ok(()) };
        let signal = {
            let containers = lock(&self.inner.containers);
            let name = containers.get(id).map(|proc| proc.spec.options.stop_signal.clone()).unwrap_or_default();
            signal_number(&name).unwrap_or(libc::SIGTERM)
        };
        signal_group(pid, signal);
        if tokio::time::timeout(grace, exited(&mut state)).await.is_ok() {
            return Ok(());
        }
        signal_group(pid, libc::SIGKILL);
        match tokio::time::timeout(KILL_WAIT, exited(&mut state)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(ExecutorError::Runtime(format!("process {pid} of container {id} survived SIGKILL"))),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), ExecutorError> {
        let (mut state, pid) = self.handle(id)?;
        if let Some(pid) = pid {
            signal_group(pid, libc::SIGKILL);
            if tokio::time::timeout(KILL_WAIT, exited(&mut state)).await.is_err() {
                return Err(ExecutorError::Runtime(format!("process {pid} of container {id} survived SIGKILL")));
            }
        }
        lock(&self.inner.containers).remove(id).map(|_| ()).ok_or_else(|| no_such(id))
    }

    async fn inspect(&self, id: &str) -> Result<ContainerSummary, ExecutorError> {
        let containers = lock(&self.inner.containers);
        containers.get(id).map(|proc| Self::summary(id, proc)).ok_or_else(|| no_such(id))
    }

    async fn list(&self, labels: &[(String, String)]) -> Result<Vec<ContainerSummary>, ExecutorError> {
        let containers = lock(&self.inner.containers);
        // BTreeMap order is id order, as the seam promises.
        Ok(containers
            .iter()
            .filter(|(_, proc)| labels.iter().all(|(key, value)| proc.spec.labels.get(key) == Some(value)))
            .map(|(id, proc)| Self::summary(id, proc))
            .collect())
    }

    async fn logs(&self, id: &str, query: &LogsQuery) -> Result<Vec<LogLine>, ExecutorError> {
        let logs = lock(&self.inner.containers).get(id).map(|proc| proc.logs.clone()).ok_or_else(|| no_such(id))?;
        let logs = lock(&logs);
        Ok(query.select(logs.iter()))
    }

    fn has_bridges(&self) -> bool {
        false
    }

    /// Processes share the host's network: there is no bridge to make (DESIGN §8).
    async fn ensure_network(&self, _bridge: &shoal_core::env::BridgeSpec) -> Result<(), ExecutorError> {
        Ok(())
    }
    async fn remove_network(&self, _name: &str) -> Result<(), ExecutorError> {
        Ok(())
    }
    async fn list_networks(&self, _labels: &[(String, String)]) -> Result<Vec<String>, ExecutorError> {
        Ok(Vec::new())
    }
    /// A process has no image to declare ports.
    async fn exposed_ports(&self, _image: &str) -> Result<Vec<(String, u16)>, ExecutorError> {
        Ok(Vec::new())
    }
}

/// The process executor runs plain processes: options only a container has reject the task.
fn refuse_container_options(spec: &ContainerSpec) -> Result<(), ExecutorError> {
    let options = &spec.options;
    let asked: Vec<&str> = [
        ("--cap-add", !options.cap_add.is_empty()),
        ("--cap-drop", !options.cap_drop.is_empty()),
        ("--sysctl", !options.sysctls.is_empty()),
        ("--ulimit", !options.ulimits.is_empty()),
        ("--init", options.init.is_some()),
        ("--read-only", options.read_only),
        ("--dns", !options.dns.is_empty()),
        ("--dns-search", !options.dns_search.is_empty()),
        ("--dns-option", !options.dns_options.is_empty()),
        ("--host", !options.hosts.is_empty()),
        ("--log-driver", options.log_driver.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, set)| set.then_some(flag))
    .collect();
    if !options.stop_signal.is_empty() && signal_number(&options.stop_signal).is_none() {
        return Err(ExecutorError::Runtime(format!("invalid stop signal {:?}", options.stop_signal)));
    }
    if asked.is_empty() {
        return Ok(());
    }
    Err(ExecutorError::Runtime(format!(
        "container {}: the process executor cannot apply {} (a plain process has no container): run the service on \
         a Docker node",
        spec.name,
        asked.join(", ")
    )))
}

/// A signal by Docker's names: `SIGTERM`, `TERM` or its number.
fn signal_number(name: &str) -> Option<i32> {
    if name.is_empty() {
        return None;
    }
    if let Ok(number) = name.parse::<i32>() {
        return (1..=64).contains(&number).then_some(number);
    }
    let bare = name.strip_prefix("SIG").unwrap_or(name);
    Some(match bare.to_ascii_uppercase().as_str() {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "WINCH" => libc::SIGWINCH,
        "PWR" => libc::SIGPWR,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, image: &str, command: &[&str]) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: image.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: vec!["GREETING=hi".into()],
            ..ContainerSpec::default()
        }
    }

    #[tokio::test]
    async fn health_checks_are_refused_clearly() {
        let executor = ProcessExecutor::new();
        let mut checked = spec("hc", PROCESS_IMAGE, &["sleep", "1"]);
        checked.healthcheck =
            Some(shoal_core::api::HealthConfig { test: vec!["CMD-SHELL".into(), "true".into()], ..Default::default() });
        let err = executor.create(&checked).await.unwrap_err().to_string();
        assert!(err.contains("does not run health checks") && err.contains("--no-healthcheck"), "{err}");
        checked.healthcheck = Some(shoal_core::api::HealthConfig::none());
        let id = executor.create(&checked).await.expect("--no-healthcheck needs no check");
        assert_eq!(executor.inspect(&id).await.unwrap().health, None);
        executor.remove(&id).await.unwrap();
    }

    #[tokio::test]
    async fn logs_env_and_path_images() {
        let executor = ProcessExecutor::new();
        let id = executor.create(&spec("a", "/bin/sh", &["-c", "echo $GREETING; echo two >&2; exit 0"])).await.unwrap();
        executor.start(&id).await.unwrap();
        assert_eq!(executor.wait(&id).await.unwrap(), 0);
        // Output is read by separate tasks; give them a moment to drain the pipes after exit.
        for _ in 0..100 {
            if executor.logs(&id, &LogsQuery::default()).await.unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let lines = executor.logs(&id, &LogsQuery::default()).await.unwrap();
        let mut texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        texts.sort();
        assert_eq!(texts, vec!["hi", "two"]);
        let streams: Vec<(&str, bool)> = lines.iter().map(|l| (l.text.as_str(), l.stderr)).collect();
        assert!(streams.contains(&("hi", false)) && streams.contains(&("two", true)), "{streams:?}");
        assert!(lines[0].time_ns < lines[1].time_ns, "stamps increase: {lines:?}");
        let last = executor.logs(&id, &LogsQuery { tail: Some(1), after_ns: None }).await.unwrap();
        assert_eq!(last, lines[1..], "tail bounds the lines");
        let after = LogsQuery { after_ns: Some(lines[0].time_ns), tail: None };
        assert_eq!(executor.logs(&id, &after).await.unwrap(), lines[1..], "a cursor skips what was seen");
        assert!(executor.create(&spec("a", "process", &["true"])).await.is_err(), "names are unique");
    }

    /// Live (not zombie) processes in group `pgid`.
    fn live_members(pgid: i32) -> usize {
        let pids =
            std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok());
        pids.filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat.rfind(')').is_some_and(|at| stat[at + 2..].starts_with('Z'));
            !zombie && proc_stat(*pid).is_some_and(|(pgrp, _)| pgrp == pgid)
        })
        .count()
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not within 5 s: {what}");
    }

    #[tokio::test]
    async fn a_restarted_daemon_kills_what_a_killed_one_left_running() {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("processes.json");
        let (executor, killed) = ProcessExecutor::with_registry(registry.clone()).unwrap();
        assert_eq!(killed, 0);
        // A shell with a child of its own, both in the task's process group.
        let id = executor.create(&spec("a", "process", &["sh", "-c", "sleep 300 & wait"])).await.unwrap();
        executor.start(&id).await.unwrap();
        let pgid = lock(&executor.inner.containers)[&id].pid.unwrap();
        until("the shell and its sleep", || live_members(pgid) == 2).await;
        assert!(std::fs::read_to_string(&registry).unwrap().contains(&format!("\"pgid\":{pgid}")));
        // The daemon dies without any cleanup; the next one kills the whole group first.
        std::mem::forget(executor);
        let (_executor, killed) = ProcessExecutor::with_registry(registry.clone()).unwrap();
        assert_eq!(killed, 2, "both processes of the group");
        until("the group to be gone", || live_members(pgid) == 0).await;
        // A later executor finds nothing left to kill.
        let (_again, killed) = ProcessExecutor::with_registry(registry).unwrap();
        assert_eq!(killed, 0);
    }

    #[tokio::test]
    async fn workdir_and_user() {
        let executor = ProcessExecutor::new();
        let mut with = spec("w", "process", &["sh", "-c", "echo $(pwd) $(id -u) $(id -g)"]);
        with.workdir = "/tmp".into();
        with.user = "nobody".into();
        let id = executor.create(&with).await.unwrap();
        // SAFETY: geteuid(2) has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            // Switching users takes root, as for Docker's daemon.
            assert!(executor.start(&id).await.is_err());
            return;
        }
        executor.start(&id).await.unwrap();
        assert_eq!(executor.wait(&id).await.unwrap(), 0);
        until("the output", || lock(&executor.inner.containers)[&id].logs.lock().unwrap().len() == 1).await;
        let lines = executor.logs(&id, &LogsQuery::default()).await.unwrap();
        assert_eq!(lines[0].text, "/tmp 65534 65534");
        let mut unknown = spec("u", "process", &["true"]);
        unknown.user = "no-such-user".into();
        let err = executor.create(&unknown).await.unwrap_err().to_string();
        assert!(err.contains("unable to find user no-such-user: no matching entries in passwd file"), "{err}");
        unknown.user = "0:no-such-group".into();
        assert!(executor.create(&unknown).await.unwrap_err().to_string().contains("unable to find group"));
    }

    #[tokio::test]
    async fn sigterm_then_sigkill() {
        let executor = ProcessExecutor::new();
        // The shell ignores SIGTERM, so only the SIGKILL after the grace ends it.
        let id = executor.create(&spec("b", "process", &["sh", "-c", "trap '' TERM; sleep 30"])).await.unwrap();
        executor.start(&id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        executor.stop(&id, Duration::from_millis(300)).await.unwrap();
        assert_eq!(executor.inspect(&id).await.unwrap().state, ContainerState::Exited { code: 137 });

        let id = executor.create(&spec("c", "process", &["sleep", "30"])).await.unwrap();
        executor.start(&id).await.unwrap();
        executor.stop(&id, Duration::from_secs(5)).await.unwrap();
        assert_eq!(executor.wait(&id).await.unwrap(), 143, "SIGTERM ends a plain sleep");
    }

    /// `--stop-signal` is the signal `stop` sends first; options a plain process cannot have are
    /// refused by name.
    #[tokio::test]
    async fn stop_signal_and_container_only_options() {
        let executor = ProcessExecutor::new();
        // Ignores SIGTERM, leaves on SIGINT with its own code.
        let mut interruptible =
            spec("i", "process", &["sh", "-c", "trap '' TERM; trap 'exit 7' INT; while :; do sleep 0.1; done"]);
        interruptible.options.stop_signal = "SIGINT".into();
        let id = executor.create(&interruptible).await.unwrap();
        executor.start(&id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        executor.stop(&id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(executor.wait(&id).await.unwrap(), 7, "SIGINT, not SIGTERM then SIGKILL");

        let mut capable = spec("cap", "process", &["true"]);
        capable.options.cap_add = vec!["NET_ADMIN".into()];
        capable.options.read_only = true;
        let err = executor.create(&capable).await.unwrap_err().to_string();
        assert!(err.contains("cannot apply --cap-add, --read-only"), "{err}");
        let mut odd = spec("odd", "process", &["true"]);
        odd.options.stop_signal = "SIGNOPE".into();
        assert!(executor.create(&odd).await.unwrap_err().to_string().contains("invalid stop signal \"SIGNOPE\""));
    }

    #[tokio::test]
    async fn missing_programs_and_images() {
        let executor = ProcessExecutor::new();
        assert!(matches!(
            executor.prepare_image("busybox:latest", None).await,
            Err(ExecutorError::ImageUnavailable { .. })
        ));
        assert!(executor.prepare_image("/bin/sh", None).await.is_ok());
        let id = executor.create(&spec("d", "process", &["/nonexistent/program"])).await.unwrap();
        assert!(executor.start(&id).await.is_err());
        assert_eq!(executor.wait(&id).await.unwrap(), 127);
    }
}
