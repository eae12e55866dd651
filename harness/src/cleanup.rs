//! What a run made, so it can be taken away again — at the end of the run, when it fails, and when
//! the harness is interrupted (Ctrl-C, SIGTERM): daemons by pid, containers and bridges by shoal's
//! node label (the node ids of this run's nodes), the harness's own client containers by the run's
//! label, packet filter rules by their comment
//! (`shoal-run-<id>`, filter and nat tables), tmpfs mounts, image tags the run made, and its temp
//! dir; on a cluster the run attached to (`--cluster`), the services and networks its steps
//! created, through the `shoal` CLI. Only what the run made is touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use shoal_core::env::executor::LABEL_NODE_ID;

/// Everything one run made, filled in as it makes things.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Daemon processes alive now.
    pub pids: Vec<u32>,
    /// Node ids of the run's nodes (their containers and bridges carry `com.shoal.node.id=<id>`).
    pub node_ids: Vec<String>,
    /// The run's iptables comment, once a rule was added.
    pub rule_comment: Option<String>,
    /// Image tags the run put on the engine (`name`, image id it points to).
    pub image_tags: Vec<(String, String)>,
    /// The run's temp dir (removed unless kept).
    pub dir: Option<PathBuf>,
    pub keep_dir: bool,
    /// tmpfs mounts the run made (raft dirs, for disk faults).
    pub mounts: Vec<PathBuf>,
    /// On an attached cluster: what the steps created there, and how to remove it.
    pub attached: Option<AttachedLedger>,
    /// The run's id, once it may have started containers of its own (clients on a network:
    /// `com.shoal.harness.run=<id>`).
    pub run_label: Option<String>,
}

/// What a run created on a cluster it did not start.
#[derive(Debug, Default)]
pub struct AttachedLedger {
    pub shoal_bin: PathBuf,
    /// The managers' sockets (a removal goes to the first that takes it).
    pub managers: Vec<PathBuf>,
    pub services: Vec<String>,
    pub networks: Vec<String>,
}

impl AttachedLedger {
    /// `shoal service rm` / `network rm` of everything listed, on the first manager that takes it.
    fn clean(&mut self, problems: &mut Vec<String>) {
        let removals = self
            .services
            .drain(..)
            .map(|s| ("service", s))
            .chain(self.networks.drain(..).map(|n| ("network", n)))
            .collect::<Vec<_>>();
        for (what, name) in removals {
            let removed = self.managers.iter().any(|socket| {
                let host = format!("unix://{}", socket.display());
                quiet(&self.shoal_bin.to_string_lossy(), &["-H", &host, what, "rm", &name]).is_some()
            });
            if !removed {
                problems.push(format!("could not remove {what} {name} from the cluster"));
            }
        }
    }
}

/// The ledgers of the runs going on, for the signal handler.
pub type Ledgers = Arc<Mutex<Vec<Arc<Mutex<Ledger>>>>>;

fn quiet(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `(process group, start time in clock ticks since boot)` of a process, from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// SIGKILL every process of the process groups a process-executor daemon lists in its registry
/// (`<data-dir>/processes.json`: `[{pgid, start_ticks}]`), as the daemon itself does to what a
/// killed predecessor left: only processes of that group that started no earlier than it did.
/// Returns how many were killed.
pub fn kill_process_groups(registry: &Path) -> usize {
    #[derive(serde::Deserialize)]
    struct Group {
        pgid: i32,
        start_ticks: u64,
    }
    let Ok(bytes) = std::fs::read(registry) else { return 0 };
    let groups: Vec<Group> = serde_json::from_slice(&bytes).unwrap_or_default();
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let pids: Vec<i32> = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    let mut killed = 0;
    for pid in pids {
        let Some((pgrp, start)) = proc_stat(pid) else { continue };
        if groups.iter().any(|g| g.pgid == pgrp && g.pgid > 1 && start >= g.start_ticks) {
            // SAFETY: kill(2) on a process of a group this run's daemon started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed += 1;
        }
    }
    killed
}

impl Ledger {
    /// Take away everything listed; what could not be removed is returned as messages.
    pub fn clean(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for pid in self.pids.drain(..) {
            // SAFETY: kill(2) with a pid this run spawned; a pid already gone gives ESRCH, ignored.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        if let Some(dir) = &self.dir {
            // Tasks of process-executor daemons (their own process groups) outlive a SIGKILLed daemon.
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                kill_process_groups(&entry.path().join("data").join("processes.json"));
            }
        }
        // The harness's own containers first: they hold the bridges they are attached to.
        if let Some(id) = self.run_label.take() {
            let filter = format!("label={}={id}", crate::runner::LABEL_HARNESS_RUN);
            if let Err(ids) = remove_containers(&filter) {
                problems.push(format!("could not remove the run's client containers {ids:?}"));
            }
        }
        for node in &self.node_ids {
            let filter = format!("label={LABEL_NODE_ID}={node}");
            if let Err(ids) = remove_containers(&filter) {
                problems.push(format!("could not remove containers {ids:?} of node {node}"));
            }
            if let Some(ids) = quiet("docker", &["network", "ls", "-q", "--filter", &filter]) {
                for id in ids.split_whitespace() {
                    if quiet("docker", &["network", "rm", id]).is_none() {
                        problems.push(format!("could not remove network {id} of node {node}"));
                    }
                }
            }
        }
        if let Some(attached) = &mut self.attached {
            attached.clean(&mut problems);
        }
        for mount in self.mounts.drain(..) {
            if let Err(err) = crate::disk::unmount(&mount) {
                problems.push(err);
            }
        }
        if let Some(comment) = self.rule_comment.take() {
            if let Err(err) = crate::netfault::remove_rules(&comment) {
                problems.push(err);
            }
        }
        for (name, id) in self.image_tags.drain(..) {
            // Only if the tag still points to the image this run tagged.
            if quiet("docker", &["image", "inspect", "--format", "{{.Id}}", &name]).is_some_and(|got| got.trim() == id)
                && quiet("docker", &["rmi", "--no-prune", &name]).is_none()
            {
                problems.push(format!("could not remove image tag {name}"));
            }
        }
        if let Some(dir) = self.dir.take() {
            if !self.keep_dir {
                if let Err(err) = std::fs::remove_dir_all(&dir) {
                    if err.kind() != std::io::ErrorKind::NotFound {
                        problems.push(format!("could not remove {}: {err}", dir.display()));
                    }
                }
            }
        }
        problems
    }
}

/// Clean every run listed (the signal handler's job).
pub fn clean_all(ledgers: &Ledgers) {
    let list = ledgers.lock().map(|l| l.clone()).unwrap_or_default();
    for ledger in list {
        if let Ok(mut ledger) = ledger.lock() {
            for problem in ledger.clean() {
                eprintln!("cleanup: {problem}");
            }
        }
    }
}

/// Remove every container (running or not) that `docker ps --filter FILTER` lists; the ids it
/// could not remove, if `docker rm` failed. A failing `docker ps` removes nothing and is no error.
fn remove_containers(filter: &str) -> Result<(), Vec<String>> {
    let Some(listed) = quiet("docker", &["ps", "-aq", "--filter", filter]) else { return Ok(()) };
    let ids: Vec<&str> = listed.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(());
    }
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().copied());
    match quiet("docker", &args) {
        Some(_) => Ok(()),
        None => Err(ids.iter().map(|id| id.to_string()).collect()),
    }
}
