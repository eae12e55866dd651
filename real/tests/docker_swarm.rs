//! The real `docker` CLI runs a swarm's life on shoal daemons: three daemons on loopback addresses,
//! each serving the Engine API on a socket of its own, and every step done with `docker` pointed at
//! one of them (`DOCKER_HOST=unix://…`) — `swarm init`, `join-token` (with `--rotate`), `join` as
//! manager and worker, `swarm update`, `node ps`, `service create` (resolving its image through
//! `/distribution`) and `service logs` (the multiplexed stream: plain, `--timestamps`, `--tail`, by
//! task, `--follow`), `node demote`, `swarm leave`. The daemons run `--pull never` on the local test
//! image; the host's own engine is only the executor.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{require_docker, wait_for, CleanupBridges, CleanupContainers, DaemonProc};

const IMAGE: &str = "shoal-test/busybox:latest";

/// The `docker` CLI against one daemon's API socket.
struct Docker {
    socket: PathBuf,
    /// An empty Docker config dir: no context or credentials of this host's user apply.
    config: tempfile::TempDir,
}

/// What one `docker` run printed.
struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Docker {
    fn new(socket: PathBuf) -> Docker {
        Docker { socket, config: tempfile::tempdir().unwrap() }
    }

    /// `docker ARGS`, killed after 180 s.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("timeout");
        command.arg("180");
        self.env(&mut command).arg("docker").args(args);
        command
    }

    /// `docker ARGS` itself (to be killed by the test).
    fn bare(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        self.env(&mut command).args(args);
        command
    }

    fn env<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.config.path())
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
    }

    fn output(&self, args: &[&str]) -> Output {
        let output = self.command(args).output().expect("run the docker CLI");
        Output {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).to_string(),
        }
    }

    fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = self.output(args);
        if out.ok {
            Ok(out.stdout)
        } else {
            Err(format!("stderr: {}\nstdout: {}", out.stderr, out.stdout))
        }
    }

    fn must(&self, args: &[&str], daemon: &DaemonProc) -> String {
        self.run(args)
            .unwrap_or_else(|e| panic!("`docker {}` failed: {e}\n--- daemon log ---\n{}", args.join(" "), daemon.log()))
    }
}

/// A daemon with the Engine API on `<dir>/docker.sock`, and the `docker` CLI on it.
fn daemon(hostname: &str, ip: &str) -> (DaemonProc, Docker, tempfile::TempDir) {
    let (daemon, api, dir) = DaemonProc::spawn_with_api(hostname, ip);
    let docker = Docker::new(api);
    (daemon, docker, dir)
}

/// The token in `docker swarm join-token` output (`--token SWMTKN-…`).
fn token_in(text: &str) -> String {
    text.split_whitespace().skip_while(|w| *w != "--token").nth(1).unwrap_or_default().to_string()
}

#[test]
fn the_docker_cli_runs_a_swarms_life_on_shoal() {
    require_docker();
    let bridges = CleanupBridges::default();
    let _cleanup = [CleanupContainers("dkswarm_echo")];
    let (m1, d1, _m1_dir) = daemon("dk-m1", "127.0.0.161");
    let (m2, d2, _m2_dir) = daemon("dk-m2", "127.0.0.162");
    let (w1, dw, _w1_dir) = daemon("dk-w1", "127.0.0.163");

    // `swarm init`: the node id, then the join command the CLI builds from `/swarm` and the node.
    let init = d1.must(
        &[
            "swarm",
            "init",
            "--advertise-addr",
            &m1.addr,
            "--listen-addr",
            &m1.addr,
            "--dispatcher-heartbeat",
            "1s",
            "--data-path-port",
            &m1.data_port.to_string(),
        ],
        &m1,
    );
    assert!(init.starts_with("Swarm initialized: current node ("), "{init}");
    let m1_id = init.split(['(', ')']).nth(1).unwrap_or_default().to_string();
    bridges.add(&m1_id);
    assert!(init.contains("docker swarm join --token SWMTKN-1-") && init.contains(&m1.addr), "{init}");
    let again = d1.run(&["swarm", "init", "--advertise-addr", &m1.addr, "--listen-addr", &m1.addr]).unwrap_err();
    assert!(again.contains("This node is already part of a swarm. Use \"docker swarm leave\""), "{again}");
    let heartbeat = d1.must(&["info", "--format", "{{.Swarm.Cluster.Spec.Dispatcher.HeartbeatPeriod}}"], &m1);
    assert_eq!(heartbeat.trim(), "1s", "the init flag reached the cluster spec");
    // `swarm ca` prints `/swarm`'s TLSInfo.TrustRoot: the root CA every node trusts.
    let root = d1.must(&["swarm", "ca"], &m1);
    let ca_pem = std::fs::read_to_string(m1.dir.path().join("data/certificates/ca.pem")).expect("the node's ca.pem");
    assert!(root.starts_with("-----BEGIN CERTIFICATE-----"), "{root}");
    assert_eq!(root.trim(), ca_pem.trim(), "docker swarm ca prints the swarm's root CA");

    // `join-token`: the command to run, and -q for the token alone.
    let manager_cmd = d1.must(&["swarm", "join-token", "manager"], &m1);
    assert!(manager_cmd.starts_with("To add a manager to this swarm, run the following command:"), "{manager_cmd}");
    let manager_token = token_in(&manager_cmd);
    let worker_token = d1.must(&["swarm", "join-token", "-q", "worker"], &m1).trim().to_string();
    assert!(worker_token.starts_with("SWMTKN-1-") && worker_token != manager_token, "{worker_token}");

    // `--rotate`: a new worker token, which the old one no longer equals.
    let rotated = d1.must(&["swarm", "join-token", "--rotate", "worker"], &m1);
    assert!(rotated.starts_with("Successfully rotated worker join token."), "{rotated}");
    let new_worker_token = token_in(&rotated);
    assert!(new_worker_token.starts_with("SWMTKN-1-") && new_worker_token != worker_token, "{rotated}");

    // `swarm join`: the CLI asks `/info` afterwards to say what the node became.
    let joined = d2.must(
        &[
            "swarm",
            "join",
            "--token",
            &manager_token,
            "--advertise-addr",
            &m2.addr,
            "--listen-addr",
            &m2.addr,
            &m1.addr,
        ],
        &m2,
    );
    assert_eq!(joined.trim(), "This node joined a swarm as a manager.");
    let stale = dw
        .run(&[
            "swarm",
            "join",
            "--token",
            &worker_token,
            "--advertise-addr",
            &w1.addr,
            "--listen-addr",
            &w1.addr,
            &m1.addr,
        ])
        .unwrap_err();
    assert!(stale.contains("Error response from daemon"), "the rotated-out token is refused: {stale}");
    let joined = dw.must(
        &[
            "swarm",
            "join",
            "--token",
            &new_worker_token,
            "--advertise-addr",
            &w1.addr,
            "--listen-addr",
            &w1.addr,
            &m1.addr,
        ],
        &w1,
    );
    assert_eq!(joined.trim(), "This node joined a swarm as a worker.");
    for docker in [&d2, &dw] {
        let id = docker.must(&["info", "--format", "{{.Swarm.NodeID}}"], &m1).trim().to_string();
        bridges.add(&id);
    }
    let worker_info = dw.must(&["info"], &w1);
    assert!(worker_info.contains(" Swarm: active") && worker_info.contains(" Is Manager: false"), "{worker_info}");
    let refused = dw.run(&["node", "ls"]).unwrap_err();
    assert!(refused.contains("This node is not a swarm manager."), "{refused}");

    let nodes = wait_for(Duration::from_secs(30), "three Ready nodes in `docker node ls`", || {
        let table = d1.run(&["node", "ls"]).ok()?;
        (table.lines().skip(1).filter(|l| l.contains(" Ready ")).count() == 3).then_some(table)
    });
    for host in ["dk-m1", "dk-m2", "dk-w1"] {
        assert!(nodes.contains(host), "{host} in {nodes}");
    }
    assert!(nodes.lines().any(|l| l.contains("dk-m2") && l.contains("Reachable")), "{nodes}");

    // `swarm update`: the CLI reads `/swarm`, changes the flag's setting and sends it back with
    // the version it read.
    let updated = d2.must(&["swarm", "update", "--task-history-limit", "3"], &m2);
    assert_eq!(updated.trim(), "Swarm updated.");
    let limit = d1.must(&["info", "--format", "{{.Swarm.Cluster.Spec.Orchestration.TaskHistoryRetentionLimit}}"], &m1);
    assert_eq!(limit.trim(), "3");

    // `service create` without -d and without --no-resolve-image: `/distribution` answers from the
    // local image store; the imported test image has no registry digest, so the CLI warns as
    // Docker's does for an image no registry has and creates the service with its tag.
    let create = d1.output(&[
        "service",
        "create",
        "--name",
        "dkswarm_echo",
        "--replicas",
        "3",
        "--stop-grace-period",
        "1s",
        IMAGE,
        "sh",
        "-c",
        "echo hello from $(hostname); echo complaint >&2; sleep 3600",
    ]);
    assert!(create.ok, "service create: {}\n{}\n{}", create.stderr, create.stdout, m1.log());
    assert!(
        create.stdout.lines().any(|l| l.starts_with("verify: Service") && l.ends_with("converged")),
        "{}",
        create.stdout
    );
    assert!(create.stderr.contains("could not be accessed on a registry to record"), "{}", create.stderr);
    let inspected =
        d1.must(&["service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", "dkswarm_echo"], &m1);
    assert_eq!(inspected.trim(), IMAGE);

    // `node ps`: this node's tasks, and another node's by name.
    let ps = d1.must(&["node", "ps"], &m1);
    assert_eq!(
        ps.lines().next().unwrap_or_default().split_whitespace().collect::<Vec<_>>(),
        ["ID", "NAME", "IMAGE", "NODE", "DESIRED", "STATE", "CURRENT", "STATE", "ERROR", "PORTS"]
    );
    // One node at a time: with several names the CLI accumulates its node filters from one call to
    // the next (so Docker's own answer lists a task more than once).
    let running: usize = ["dk-m1", "dk-m2", "dk-w1"]
        .iter()
        .map(|node| {
            let table = d1.must(&["node", "ps", node, "--filter", "desired-state=running"], &m1);
            table.lines().filter(|l| l.contains("dkswarm_echo.") && l.contains(" Running ") && l.contains(node)).count()
        })
        .sum();
    assert_eq!(running, 3);
    let on_worker = dw.run(&["node", "ps"]).unwrap_err();
    assert!(on_worker.contains("This node is not a swarm manager."), "{on_worker}");

    // `service logs`: every task's line, prefixed `name.slot.id@node    | `, stderr lines on stderr.
    let logs = wait_for(Duration::from_secs(30), "three tasks' lines in `docker service logs`", || {
        let out = d1.output(&["service", "logs", "dkswarm_echo"]);
        (out.ok && out.stdout.lines().filter(|l| l.contains("| hello from ")).count() == 3).then_some(out)
    });
    for line in logs.stdout.lines() {
        let (prefix, text) = line.split_once("    | ").unwrap_or_else(|| panic!("no prefix: {line:?}"));
        assert!(prefix.starts_with("dkswarm_echo.") && prefix.contains('@'), "{line}");
        let node = prefix.rsplit('@').next().unwrap_or_default().trim();
        assert!(["dk-m1", "dk-m2", "dk-w1"].contains(&node), "{line}");
        assert!(text.starts_with("hello from "), "{line}");
    }
    assert_eq!(logs.stderr.lines().filter(|l| l.ends_with("    | complaint")).count(), 3, "{}", logs.stderr);
    // `--tail 1`: one line per task (its stdout or its stderr one, whichever came last), stamped.
    let out = d1.output(&["service", "logs", "--timestamps", "--tail", "1", "--no-task-ids", "dkswarm_echo"]);
    assert!(out.ok, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().chain(out.stderr.lines()).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in lines {
        let (stamp, rest) = line.split_once(' ').unwrap_or_default();
        assert!(stamp.len() == 30 && stamp.ends_with('Z'), "{line}");
        let prefix = rest.split("    | ").next().unwrap_or_default();
        assert_eq!(prefix.matches('.').count(), 1, "no task id: {line}");
    }
    let out = d1.output(&["service", "logs", "--timestamps", "--raw", "--tail", "2", "dkswarm_echo"]);
    assert!(out.ok, "{}", out.stderr);
    for line in out.stdout.lines() {
        let (stamp, text) = line.split_once(' ').unwrap_or_default();
        assert!(stamp.len() == 30 && stamp.ends_with('Z') && text.starts_with("hello from "), "{line}");
    }
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    let task_id = d1
        .must(&["service", "ps", "-q", "--no-trunc", "dkswarm_echo"], &m1)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let one = d1.must(&["service", "logs", &task_id], &m1);
    assert_eq!(one.lines().count(), 1, "{one}");
    assert!(one.contains(&format!(".{}@", &task_id[..12])), "{one}");
    let missing = d1.run(&["service", "logs", "nosuchthing"]).unwrap_err();
    assert!(missing.contains("no such task or service: nosuchthing"), "{missing}");

    // `--follow` keeps the stream open: the lines come, and the CLI is still waiting when stopped.
    let mut follow = d1
        .bare(&["service", "logs", "--follow", "--tail", "all", "dkswarm_echo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert!(follow.try_wait().unwrap().is_none(), "a followed stream stays open");
    let _ = follow.kill();
    let followed = follow.wait_with_output().unwrap();
    let followed = String::from_utf8_lossy(&followed.stdout);
    assert_eq!(followed.lines().filter(|l| l.contains("| hello from ")).count(), 3, "{followed}");

    let removed = d1.must(&["service", "rm", "dkswarm_echo"], &m1);
    assert_eq!(removed.trim(), "dkswarm_echo");

    // Leaving: a worker just leaves; a manager is demoted first; the last one needs --force.
    assert_eq!(dw.must(&["swarm", "leave"], &w1).trim(), "Node left the swarm.");
    assert!(dw.must(&["info"], &w1).contains(" Swarm: inactive"));
    let refused = d2.run(&["swarm", "leave"]).unwrap_err();
    assert!(refused.contains("--force"), "a manager is told to use --force: {refused}");
    d1.must(&["node", "demote", "dk-m2"], &m1);
    wait_for(Duration::from_secs(30), "dk-m2 a worker", || {
        let info = d2.run(&["info", "--format", "{{.Swarm.ControlAvailable}}"]).ok()?;
        (info.trim() == "false").then_some(())
    });
    assert_eq!(d2.must(&["swarm", "leave"], &m2).trim(), "Node left the swarm.");
    let last = d1.run(&["swarm", "leave"]).unwrap_err();
    assert!(last.contains("--force"), "{last}");
    assert_eq!(d1.must(&["swarm", "leave", "--force"], &m1).trim(), "Node left the swarm.");
    assert!(d1.must(&["info"], &m1).contains(" Swarm: inactive"));
}
