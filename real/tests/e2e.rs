//! End to end: real `shoal daemon` processes on loopback addresses (127.0.0.x), driven by the
//! `shoal` CLI exactly as a user would: 1 manager + 2 workers, a 3-replica service converges and its
//! logs are read from all three nodes, a worker daemon is killed (by pid) and its tasks run elsewhere, a worker is drained, and a rolling
//! update converges. Once with the process executor, once with Docker (image
//! `shoal-test/busybox:latest`, built from busybox-static when missing) — the Docker test fails, not
//! skips, without Docker.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use shoal::tls::CertInfo;
use shoal_core::api::NodeRole;

use common::{json_lines, require_docker, running_by_node, wait_for, CleanupContainers, DaemonProc, BIN};

fn scenario(prefix: &str, ip_base: u8, executor: &str, service_args: &[&str]) {
    let ip = |n: u8| format!("127.0.0.{}", ip_base + n);
    let manager = DaemonProc::spawn(&format!("{prefix}-m"), &ip(1), executor);
    let mut worker1 = DaemonProc::spawn(&format!("{prefix}-w1"), &ip(2), executor);
    let worker2 = DaemonProc::spawn(&format!("{prefix}-w2"), &ip(3), executor);

    assert_eq!(manager.must(&["info"]), " Swarm: inactive\n");
    assert_eq!(manager.must(&["system", "info"]), " Swarm: inactive\n");
    let version = manager.must(&["version"]);
    let want = format!("Server: shoal\n Engine:\n  Version:          {}\n", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with("Client:\n Version:  ") && version.contains(&want), "{version}");
    let init = manager.swarm_init();
    assert!(init.contains("    shoal swarm join --token SWMTKN-1-"), "{init}");
    let token = manager.must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
    for worker in [&worker1, &worker2] {
        worker.swarm_join(&token, &manager.addr, "worker");
    }
    wait_for(Duration::from_secs(30), "3 ready nodes", || {
        let nodes = json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?);
        (nodes.len() == 3 && nodes.iter().all(|n| n["Status"] == "Ready")).then_some(())
    });
    let table = manager.must(&["node", "ls"]);
    assert!(table.starts_with("ID                            HOSTNAME"), "{table}");
    assert!(table.contains("Leader"), "{table}");
    assert_eq!(manager.must(&["swarm", "update", "--task-history-limit", "4"]), "Swarm updated.\n");
    assert!(manager.must(&["info"]).contains("   Task History Retention Limit: 4\n"));
    let err = manager.shoal(&["swarm", "update", "--cert-expiry", "30m"]).unwrap_err();
    assert!(err.contains("minimum certificate expiry time is: 1h0m0s"), "{err}");
    let workers = manager.must(&["node", "ls", "--filter", "role=worker", "--format", "{{.Hostname}}"]);
    let mut workers: Vec<&str> = workers.lines().collect();
    workers.sort();
    assert_eq!(workers, [worker1.hostname.as_str(), worker2.hostname.as_str()]);

    // A 3-replica service converges; the CLI waits and says so.
    let service = format!("{prefix}-web");
    let mut create = vec!["--name", &service, "--replicas", "3", "--update-monitor", "1s"];
    create.extend_from_slice(service_args);
    let created = manager.create_service(&create);
    assert!(created.contains("overall progress: 3 out of 3 tasks"), "{created}");
    assert!(created.ends_with("verify: Service converged\n"), "{created}");
    let ls = manager.must(&["service", "ls"]);
    assert!(ls.contains(&format!("{service}   replicated   3/3")), "{ls}");
    if executor == "docker" {
        templates_expanded_per_task(&service, &[&manager, &worker1, &worker2]);
    }
    // `inspect --format` takes Docker's field names.
    let fields = manager.must(&[
        "service",
        "inspect",
        "--format",
        "{{.Spec.Name}} {{.Spec.Mode.Replicated.Replicas}}",
        &service,
    ]);
    assert_eq!(fields, format!("{service} 3\n"));
    assert_eq!(
        manager.must(&["node", "inspect", "self", "--format", "{{.Spec.Role}} {{.Status.State}}"]),
        "manager ready\n"
    );

    // `service logs` gathers each task's output from the node that runs it, one per node here.
    let logs = wait_for(Duration::from_secs(30), "a started line from each task", || {
        let logs = manager.shoal(&["service", "logs", &service]).ok()?;
        (logs.lines().filter(|l| l.ends_with("    | started")).count() == 3).then_some(logs)
    });
    for node in [&manager, &worker1, &worker2] {
        let from_node = format!("@{}    | started", node.hostname);
        assert_eq!(logs.lines().filter(|l| l.ends_with(&from_node)).count(), 1, "{}: {logs}", node.hostname);
    }
    assert!(logs.lines().all(|l| l.starts_with(&format!("{service}."))), "{logs}");
    let raw = manager.must(&["service", "logs", "--raw", "--tail", "1", &service]);
    assert_eq!(raw, "started\nstarted\nstarted\n");

    // Kill a worker daemon: its tasks run elsewhere.
    wait_for(Duration::from_secs(30), "a task on worker 1", || {
        running_by_node(&manager, &service)?.get(&worker1.hostname).copied().filter(|&n| n > 0)
    });
    worker1.kill();
    wait_for(Duration::from_secs(90), "3 running tasks off the killed worker", || {
        let counts = running_by_node(&manager, &service)?;
        (counts.values().sum::<usize>() == 3 && !counts.contains_key(&worker1.hostname)).then_some(())
    });
    let nodes = json_lines(&manager.must(&["node", "ls", "--format", "json"]));
    let down = nodes.iter().find(|n| n["Hostname"] == worker1.hostname.as_str()).expect("killed worker listed");
    assert_eq!(down["Status"], "Down", "{nodes:?}");
    // Its task's logs cannot be read now: the others' are printed, and the error names the node.
    let err = manager.shoal(&["service", "logs", &service]).unwrap_err();
    let missing = format!(
        "some logs could not be retrieved for the following reasons: node {} is not available",
        worker1.hostname
    );
    assert!(err.contains(&missing), "{err}");
    assert!(err.contains(&format!("@{}    | started", manager.hostname)), "{err}");

    // Drain worker 2: its tasks move to the manager.
    assert_eq!(
        manager.must(&["node", "update", "--availability", "drain", &worker2.hostname]),
        format!("{}\n", worker2.hostname)
    );
    wait_for(Duration::from_secs(90), "3 running tasks off the drained worker", || {
        let counts = running_by_node(&manager, &service)?;
        (counts.values().sum::<usize>() == 3 && counts.keys().all(|h| *h == manager.hostname)).then_some(())
    });
    let pretty = manager.must(&["node", "inspect", "--pretty", &worker2.hostname]);
    assert!(pretty.contains(" Availability:         \tDrain"), "{pretty}");

    // A rolling update converges, leaving the old tasks as history.
    let updated = manager
        .shoal_within(&["service", "update", "--env-add", "VERSION=2", &service], Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("service update: {e}\n{}", manager.log()));
    assert!(updated.ends_with("verify: Service converged\n"), "{updated}");
    let counts = running_by_node(&manager, &service).expect("service ps");
    assert_eq!(counts.values().sum::<usize>(), 3, "{counts:?}");
    let history = json_lines(&manager.must(&["service", "ps", &service, "--format", "json"]));
    assert!(history.iter().filter(|t| t["DesiredState"] == "Shutdown").count() >= 3, "{history:?}");
    let inspect = manager.must(&["service", "inspect", "--pretty", &service]);
    assert!(inspect.contains("VERSION=2"), "{inspect}");

    manager.must(&["service", "rm", &service]);
    if executor == "process" {
        follow_scenario(&manager);
        stack_scenario(&manager);
        membership_scenario(&manager, &worker1, &worker2);
    }
    let events = std::fs::read_to_string(manager.dir.path().join("data/events.jsonl")).expect("event log");
    assert!(events.lines().count() > 0 && events.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
}

/// Swarm's templates reached each container expanded for its own task and node: the env, the
/// hostname and a container label (`--env`, `--hostname`, `--container-label` of the Docker run);
/// and the container options (`--cap-add`, `--read-only`, `--init`, `--sysctl`, …) reached the engine.
fn templates_expanded_per_task(service: &str, nodes: &[&DaemonProc]) {
    let ids = std::process::Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label=com.shoal.service.name={service}")])
        .output()
        .expect("docker ps");
    let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout).split_whitespace().map(str::to_string).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let mut seen = Vec::new();
    for id in &ids {
        let out = std::process::Command::new("docker")
            .args([
                "inspect",
                "--format",
                r#"{{.Config.Hostname}}|{{range .Config.Env}}{{if eq (index (split . "=") 0) "SLOT"}}{{.}}{{end}}{{end}}|{{index .Config.Labels "placed.on"}}|{{index .Config.Labels "com.shoal.node.id"}}"#,
                id,
            ])
            .output()
            .expect("docker inspect");
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 4, "{line}");
        let slot = fields[0].strip_prefix(&format!("{service}-")).unwrap_or_else(|| panic!("hostname {line}"));
        assert_eq!(fields[1], format!("SLOT={slot}"), "{line}");
        assert!(nodes.iter().any(|n| n.hostname == fields[2]), "label names a node: {line}");
        seen.push(slot.to_string());
        // The container options reached the engine as given.
        let out = std::process::Command::new("docker")
            .args([
                "inspect",
                "--format",
                "{{.HostConfig.CapAdd}} {{.HostConfig.CapDrop}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.Init}} \
                 {{.Config.StopSignal}} {{index .HostConfig.Sysctls \"kernel.msgmax\"}} {{.HostConfig.ExtraHosts}} \
                 {{range .HostConfig.Ulimits}}{{.Name}}={{.Soft}}:{{.Hard}}{{end}}",
                id,
            ])
            .output()
            .expect("docker inspect");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "[SYS_TIME] [NET_RAW] true true SIGINT 65536 [db.internal:10.99.0.5] nofile=1024:2048"
        );
    }
    seen.sort();
    assert_eq!(seen, ["1", "2", "3"], "one container per slot");
}

/// `service logs --follow` shows each task's new lines exactly once and in order, across polls, and
/// ends when the service is removed.
fn follow_scenario(manager: &DaemonProc) {
    let ticker = "while kill -0 $PPID 2>/dev/null; do i=$((i+1)); echo tick $i; sleep 0.1; done";
    manager.create_service(&["--name", "ticker", "--replicas", "2", "process", "sh", "-c", ticker]);
    let follower = Command::new(BIN)
        .args(["-H", &manager.host(), "service", "logs", "--follow", "--tail", "1", "ticker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal service logs --follow");
    std::thread::sleep(Duration::from_millis(3500));
    // Removing the service ends the follow, as the end of Docker's stream does.
    manager.must(&["service", "rm", "ticker"]);
    let mut follower = follower;
    let ended = wait_for(Duration::from_secs(20), "the follower to end with the service", || {
        follower.try_wait().expect("poll the follower")
    });
    assert!(ended.success(), "{ended:?}");
    assert_eq!(manager.shoal(&["service", "logs", "ticker"]).unwrap_err(), "no such task or service: ticker\n");
    assert_eq!(manager.shoal(&["service", "inspect", "ticker"]).unwrap_err(), "no such service: ticker\n");
    let output = follower.wait_with_output().expect("the follower's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut ticks: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for line in stdout.lines() {
        let (prefix, text) = line.split_once("    | ").unwrap_or_else(|| panic!("a prefixed line: {line:?}"));
        let tick = text.strip_prefix("tick ").and_then(|n| n.parse().ok());
        ticks.entry(prefix).or_default().push(tick.unwrap_or_else(|| panic!("a tick: {line:?}")));
    }
    assert_eq!(ticks.len(), 2, "both tasks followed: {stdout}");
    for (task, seen) in &ticks {
        assert!(seen.len() >= 10, "{task} was followed across several polls: {seen:?}");
        assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{task}: each line once, in order: {seen:?}");
    }
}

/// `stack deploy` from a compose file, then `stack ls|services|ps|rm`.
fn stack_scenario(manager: &DaemonProc) {
    let compose = manager.dir.path().join("compose.yml");
    std::fs::write(
        &compose,
        "version: \"3.8\"\nservices:\n  web:\n    image: process\n    command: [sh, -c, 'while kill -0 $$PPID; do sleep 1; done']\n    deploy:\n      replicas: 2\n",
    )
    .expect("write compose file");
    let compose = compose.to_string_lossy().to_string();
    let deployed = manager.must(&["stack", "deploy", "-c", &compose, "app"]);
    assert_eq!(deployed, "Creating network app_default\nCreating service app_web\n");
    wait_for(Duration::from_secs(60), "the stack's service to converge", || {
        manager.shoal(&["stack", "services", "app"]).ok().filter(|out| out.contains("replicated   2/2")).map(|_| ())
    });
    assert_eq!(manager.must(&["stack", "ls"]), "NAME      SERVICES\napp       1\n");
    let ps = json_lines(&manager.must(&["stack", "ps", "app", "--format", "json"]));
    assert_eq!(ps.len(), 2, "{ps:?}");
    // A second deploy updates in place.
    let redeployed = manager.must(&["stack", "deploy", "-c", &compose, "app"]);
    assert!(redeployed.starts_with("Updating service app_web (id: "), "{redeployed}");
    assert_eq!(manager.must(&["stack", "rm", "app"]), "Removing service app_web\nRemoving network app_default\n");
    let err = manager.shoal(&["stack", "ps", "app"]).unwrap_err();
    assert!(err.contains("nothing found in stack: app"), "{err}");
}

impl DaemonProc {
    /// What this node's certificate says now.
    fn node_cert_info(&self) -> CertInfo {
        let pem = std::fs::read_to_string(self.dir.path().join("data/certificates/node.pem")).expect("node.pem");
        shoal::tls::cert_info(&pem).expect("a node certificate")
    }
}

/// `node rm` of the dead worker, `node promote` / `node demote` of the live one (each renews its
/// certificate for its new role).
fn membership_scenario(manager: &DaemonProc, dead: &DaemonProc, live: &DaemonProc) {
    assert_eq!(manager.must(&["node", "rm", &dead.hostname]), format!("{}\n", dead.hostname));
    let nodes = json_lines(&manager.must(&["node", "ls", "--format", "json"]));
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let worker_cert = live.node_cert_info();
    assert_eq!(worker_cert.role, Some(NodeRole::Worker), "{worker_cert:?}");
    assert_eq!(
        manager.must(&["node", "promote", &live.hostname]),
        format!("Node {} promoted to a manager in the swarm.\n", live.hostname)
    );
    wait_for(Duration::from_secs(60), "the promoted node to be a reachable manager", || {
        let nodes = json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?);
        nodes.iter().any(|n| n["Hostname"] == live.hostname.as_str() && n["ManagerStatus"] == "Reachable").then_some(())
    });
    // The promoted node renews its certificate for its new role (Swarm's OU), over mutual TLS with
    // the old one, and keeps working under the new one.
    let manager_cert = wait_for(Duration::from_secs(30), "a manager's certificate on the promoted node", || {
        Some(live.node_cert_info()).filter(|info| info.role == Some(NodeRole::Manager))
    });
    assert_eq!(manager_cert.node_id, worker_cert.node_id);
    assert!(manager_cert.not_after >= worker_cert.not_after, "{manager_cert:?} vs {worker_cert:?}");
    assert!(live.log().contains("renewed this node's certificate (its role changed)"), "{}", live.log());
    assert_eq!(
        manager.must(&["node", "promote", &live.hostname]),
        format!("Node {} is already a manager.\n", live.hostname)
    );
    // `node update --role worker` is Docker's other way to demote.
    assert_eq!(manager.must(&["node", "update", "--role", "worker", &live.hostname]), format!("{}\n", live.hostname));
    wait_for(Duration::from_secs(60), "the demoted node to be a worker", || {
        let nodes = json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?);
        nodes.iter().any(|n| n["Hostname"] == live.hostname.as_str() && n["ManagerStatus"] == "").then_some(())
    });
    // The demoted node itself learns it is a worker (it stops its raft replica), then leaves; its
    // daemon is inactive again.
    wait_for(Duration::from_secs(60), "the demoted node to see itself as a worker", || {
        live.shoal(&["info"]).ok().filter(|info| info.contains("  Is Manager: false\n")).map(|_| ())
    });
    wait_for(Duration::from_secs(30), "a worker's certificate on the demoted node", || {
        (live.node_cert_info().role == Some(NodeRole::Worker)).then_some(())
    });
    assert_eq!(live.must(&["swarm", "leave"]), "Node left the swarm.\n");
    assert_eq!(live.must(&["info"]), " Swarm: inactive\n");
    let err = live.shoal(&["swarm", "leave"]).unwrap_err();
    assert_eq!(err, "Error response from daemon: This node is not part of a swarm\n");
    wait_for(Duration::from_secs(30), "the node that left to be down", || {
        let nodes = json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?);
        nodes.iter().any(|n| n["Hostname"] == live.hostname.as_str() && n["Status"] == "Down").then_some(())
    });
}

#[test]
fn cluster_with_process_executor() {
    // Each task watches its daemon and exits when it dies, so a killed daemon leaves nothing behind.
    scenario(
        "e2e-proc",
        20,
        "process",
        &["process", "sh", "-c", "echo started; while kill -0 $PPID 2>/dev/null; do sleep 1; done"],
    );
}

#[test]
fn cluster_with_docker_executor() {
    // Without Docker (or without the test image) this test fails: it is the real-world check.
    require_docker();
    let _cleanup = CleanupContainers("e2e-dock-web");
    scenario(
        "e2e-dock",
        30,
        "docker",
        &[
            "--stop-grace-period",
            "1s",
            "--env",
            "SLOT={{.Task.Slot}}",
            "--hostname",
            "{{.Service.Name}}-{{.Task.Slot}}",
            "--container-label",
            "placed.on={{.Node.Hostname}}",
            "--cap-add",
            "SYS_TIME",
            "--cap-drop",
            "NET_RAW",
            "--read-only",
            "--init",
            "--stop-signal",
            "SIGINT",
            "--sysctl",
            "kernel.msgmax=65536",
            "--ulimit",
            "nofile=1024:2048",
            "--host",
            "db.internal:10.99.0.5",
            "shoal-test/busybox:latest",
            "sh",
            "-c",
            "echo started; exec sleep 600",
        ],
    );
}

/// Issue 14, item 4 — a real-only fault (the simulator has one node per disk and no second process
/// that could open it): a second `shoal daemon` on a data dir in use refuses at once, names the pid
/// that holds it, exits non-zero, and touches nothing — the first daemon's task keeps running (the
/// process executor's clean-up of a previous daemon's processes did not run), it binds no socket,
/// and the first daemon keeps serving.
#[test]
fn second_daemon_on_a_data_dir_in_use_refuses_and_touches_nothing() {
    let first = DaemonProc::spawn("e2e-lock", "127.0.0.95", "process");
    first.swarm_init();
    let created = first.create_service(&["--name", "held", "process", "sleep", "3600"]);
    assert!(created.ends_with("verify: Service converged\n"), "{created}");
    let running = || {
        let tasks = json_lines(&first.shoal(&["service", "ps", "held", "--format", "json"]).ok()?);
        let task = tasks.iter().find(|t| t["CurrentState"].as_str().is_some_and(|s| s.starts_with("Running")))?;
        Some(task["ID"].as_str()?.to_string())
    };
    let task = wait_for(Duration::from_secs(30), "the task running", running);
    let data = first.dir.path().join("data");
    let registry = std::fs::read_to_string(data.join("processes.json")).expect("the process executor's registry");
    let groups: Vec<serde_json::Value> = serde_json::from_str(&registry).expect("a list of process groups");
    let pgid = groups.iter().find_map(|g| g["pgid"].as_i64()).unwrap_or_else(|| panic!("a group in {registry}"));
    let alive = |pid: i64| std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive(pgid), "the task's process {pgid} runs");
    let lock = std::fs::read_to_string(data.join("daemon.lock")).expect("the lock file");
    let holder = lock.trim().to_string();
    assert!(alive(holder.parse().expect("a pid in the lock file")), "the lock names a live pid: {lock:?}");

    let other_socket = first.dir.path().join("second.sock");
    let mut second = Command::new(BIN)
        .args(["daemon", "--executor", "process", "--hostname", "e2e-lock-2", "--data-dir"])
        .arg(&data)
        .arg("--socket")
        .arg(&other_socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the second daemon");
    let exited = wait_for(Duration::from_secs(20), "the second daemon to exit", || second.try_wait().unwrap());
    let output = second.wait_with_output().expect("its output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!exited.success(), "exits non-zero: {exited:?} {stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "shoal daemon: the data dir {} is in use by another shoal daemon, pid {holder} (it holds the lock on \
             {}); stop that daemon or choose another --data-dir",
            data.display(),
            data.join("daemon.lock").display()
        )
    );
    assert!(!other_socket.exists(), "the second daemon bound nothing");
    assert_eq!(std::fs::read_to_string(data.join("daemon.lock")).unwrap(), lock, "the holder's pid stays");
    assert_eq!(std::fs::read_to_string(data.join("processes.json")).unwrap(), registry, "registry untouched");
    assert!(alive(pgid), "the first daemon's task was not killed");

    // The first daemon still serves, with the same task running (no restart after a kill).
    assert!(first.must(&["node", "ls"]).contains("Leader"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(running().as_deref(), Some(task.as_str()), "{}", first.must(&["service", "ps", "held"]));
    assert!(alive(pgid));
}

/// `shoal service create` without `-d` until its output has a line for which `seen` holds (then the
/// CLI is stopped: a service that never converges keeps it waiting, as Docker's does); the output so far.
fn progress_until(daemon: &DaemonProc, args: &[&str], seen: impl Fn(&str) -> bool) -> String {
    use std::io::BufRead as _;
    let mut child = Command::new(BIN)
        .arg("-H")
        .arg(daemon.host())
        .args(["service", "create"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run shoal service create");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut output = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                output.push_str(&line);
                output.push('\n');
                if seen(&line) {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "`service create {}` never showed the line; it printed:\n{output}", args.join(" "));
    output
}

/// Issue 14, item 6: the progress display of `service create` shows why a slot's task failed — a
/// crash loop's exit code, an image the node refuses — instead of `new`/`assigned` forever.
#[test]
fn progress_display_shows_task_failures() {
    let manager = DaemonProc::spawn("e2e-progress", "127.0.0.96", "process");
    manager.swarm_init();
    let crash = progress_until(
        &manager,
        &["--name", "crashing", "--restart-delay", "1s", "process", "sh", "-c", "exit 3"],
        |line| line == "1/1: task: non-zero exit (3)",
    );
    // The service's id first, as Docker's CLI prints it, then the progress.
    assert_eq!(crash.lines().nth(1), Some("overall progress: 0 out of 1 tasks"), "{crash}");
    let refused = progress_until(&manager, &["--name", "refused", "nosuch:1"], |line| {
        line.starts_with("1/1: ") && line.contains("nosuch:1")
    });
    assert_eq!(refused.lines().nth(1), Some("overall progress: 0 out of 1 tasks"), "{refused}");
    // What the display said is what `service ps` says.
    let ps = manager.must(&["service", "ps", "--no-trunc", "--format", "{{.Error}}", "crashing"]);
    assert!(ps.lines().any(|l| l == "\"task: non-zero exit (3)\"" || l == "task: non-zero exit (3)"), "{ps}");
}
