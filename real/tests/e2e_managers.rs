//! End to end, managers and agent restarts: real `shoal daemon` processes on loopback addresses
//! (127.0.0.81–87), driven only by the `shoal` CLI. 3 managers + 1 worker survive the leader's
//! SIGKILL (a new leader, writes still work, the old leader is Down), then a second manager's: the
//! quorum is lost and `swarm init --force-new-cluster` on the last one brings the swarm back. A
//! worker daemon stopped with SIGTERM and started again on the same data dir re-adopts its Docker
//! containers (same ids, no replacement tasks), and removes them when it leaves the swarm; a
//! SIGKILLed daemon's plain processes are killed by the next daemon before it starts the tasks
//! again. The Docker test fails, not skips, without Docker or the test image.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{json_lines, remove_containers, require_docker, running_by_node, wait_for, CleanupContainers, DaemonProc};

fn nodes(manager: &DaemonProc) -> Option<Vec<serde_json::Value>> {
    Some(json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?))
}

#[test]
fn leader_crash_with_three_managers() {
    let ip = |n: u8| format!("127.0.0.{}", 80 + n);
    let mut managers: Vec<DaemonProc> =
        (1..=3).map(|n| DaemonProc::spawn(&format!("e2e-mgr-m{n}"), &ip(n), "process")).collect();
    let worker = DaemonProc::spawn("e2e-mgr-w1", &ip(4), "process");

    managers[0].swarm_init();
    let manager_token = managers[0].must(&["swarm", "join-token", "-q", "manager"]).trim().to_string();
    let worker_token = managers[0].must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
    let leader_addr = managers[0].addr.clone();
    for manager in &managers[1..] {
        manager.swarm_join(&manager_token, &leader_addr, "manager");
    }
    worker.swarm_join(&worker_token, &leader_addr, "worker");
    wait_for(Duration::from_secs(60), "3 ready managers (1 leader, 2 reachable) and a ready worker", || {
        let nodes = nodes(&managers[0])?;
        let status = |n: &serde_json::Value| n["ManagerStatus"].as_str().unwrap_or_default().to_string();
        (nodes.len() == 4
            && nodes.iter().all(|n| n["Status"] == "Ready")
            && nodes.iter().filter(|n| status(n) == "Leader").count() == 1
            && nodes.iter().filter(|n| status(n) == "Reachable").count() == 2
            && nodes.iter().any(|n| n["Hostname"] == worker.hostname.as_str() && status(n).is_empty()))
        .then_some(())
    });
    let leader = nodes(&managers[0]).expect("node ls");
    let leader = leader.iter().find(|n| n["ManagerStatus"] == "Leader").expect("a leader");
    let leader_index = managers
        .iter()
        .position(|m| leader["Hostname"] == m.hostname.as_str())
        .unwrap_or_else(|| panic!("the leader is a manager: {leader:?}"));

    // A 4-replica service converges. Each task exits when its daemon dies.
    let service = "e2e-mgr-web";
    let created = managers[leader_index].create_service(&[
        "--name",
        service,
        "--replicas",
        "4",
        "process",
        "sh",
        "-c",
        "while kill -0 $PPID 2>/dev/null; do sleep 1; done",
    ]);
    assert!(created.ends_with("verify: Service converged\n"), "{created}");
    wait_for(Duration::from_secs(60), "4 running tasks", || {
        (running_by_node(&managers[leader_index], service)?.values().sum::<usize>() == 4).then_some(())
    });

    // SIGKILL the leader; ask another manager.
    let old_leader = managers[leader_index].hostname.clone();
    managers[leader_index].kill();
    let (survivor_index, last_index) = ((leader_index + 1) % 3, (leader_index + 2) % 3);
    let survivor = &managers[survivor_index];
    let new_leader = wait_for(Duration::from_secs(60), "a new leader", || {
        let nodes = nodes(survivor)?;
        let leader = nodes.iter().find(|n| n["ManagerStatus"] == "Leader")?;
        let name = leader["Hostname"].as_str()?.to_string();
        (name != old_leader).then_some(name)
    });
    assert_ne!(new_leader, old_leader);
    // Writes go through the new leader (the CLI may need a retry while it settles in).
    wait_for(Duration::from_secs(60), "service scale through a surviving manager", || {
        survivor.shoal_within(&["service", "scale", "--detach", &format!("{service}=6")], Duration::from_secs(30)).ok()
    });
    wait_for(Duration::from_secs(90), "6 running tasks off the old leader", || {
        let counts = running_by_node(survivor, service)?;
        (counts.values().sum::<usize>() == 6 && !counts.contains_key(&old_leader)).then_some(())
    });
    wait_for(Duration::from_secs(60), "the old leader to be Down and Unreachable", || {
        let nodes = nodes(survivor)?;
        let old = |n: &&serde_json::Value| n["Hostname"] == old_leader.as_str();
        nodes.iter().any(|n| old(&n) && n["Status"] == "Down" && n["ManagerStatus"] == "Unreachable").then_some(())
    });
    let ls = survivor.must(&["service", "ls"]);
    assert!(ls.contains(&format!("{service}   replicated   6/6")), "{ls}");

    // Lose the quorum: SIGKILL a second manager. The survivor refuses with Swarm's message, and
    // `swarm init --force-new-cluster` re-forms a one-manager swarm from its own state, on the
    // addresses it had: the service and the worker are kept, and writes work again.
    managers[last_index].kill();
    let survivor = &managers[survivor_index];
    wait_for(Duration::from_secs(60), "the survivor to report the lost quorum", || {
        survivor.shoal(&["node", "ls"]).err().filter(|err| err.contains("The swarm does not have a leader"))
    });
    let init = survivor.must(&["swarm", "init", "--force-new-cluster"]);
    assert!(init.starts_with("Swarm initialized: current node ("), "{init}");
    wait_for(Duration::from_secs(60), "the survivor to lead alone, the lost managers Down", || {
        let nodes = nodes(survivor)?;
        let managers: Vec<_> = nodes.iter().filter(|n| n["ManagerStatus"] != "").collect();
        let lost = nodes
            .iter()
            .filter(|n| n["Hostname"] != survivor.hostname.as_str() && n["Hostname"] != worker.hostname.as_str());
        (managers.len() == 1
            && managers[0]["Hostname"] == survivor.hostname.as_str()
            && managers[0]["ManagerStatus"] == "Leader"
            && lost.clone().count() == 2
            && lost.into_iter().all(|n| n["Status"] == "Down"))
        .then_some(())
    });
    wait_for(Duration::from_secs(60), "service scale after the recovery", || {
        survivor.shoal_within(&["service", "scale", "--detach", &format!("{service}=4")], Duration::from_secs(30)).ok()
    });
    wait_for(Duration::from_secs(90), "4 running tasks on the survivor and the worker", || {
        let counts = running_by_node(survivor, service)?;
        let placed = counts.keys().all(|host| *host == survivor.hostname || *host == worker.hostname);
        (counts.values().sum::<usize>() == 4 && placed).then_some(())
    });
}

/// Running container ids of `service` (`docker ps -q`, full ids), sorted.
fn container_ids(service: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "--no-trunc", "-q", "--filter", &format!("label=com.shoal.service.name={service}")])
        .output()
        .expect("run docker ps");
    assert!(out.status.success(), "docker ps: {}", String::from_utf8_lossy(&out.stderr));
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect();
    ids.sort();
    ids
}

/// Task ids and states of `service`, every task in its history, sorted.
fn task_history(manager: &DaemonProc, service: &str) -> Vec<(String, String, String)> {
    let mut tasks: Vec<_> = json_lines(&manager.must(&["service", "ps", service, "--format", "json", "--no-trunc"]))
        .iter()
        .map(|t| {
            (
                t["ID"].as_str().unwrap_or_default().to_string(),
                t["Node"].as_str().unwrap_or_default().to_string(),
                t["DesiredState"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    tasks.sort();
    tasks
}

#[test]
fn agent_restart_readopts_its_containers() {
    // Without Docker (or without the test image) this test fails: it is the real-world check.
    require_docker();
    let service = "e2e-mgr-adopt";
    remove_containers(service);
    let _cleanup = CleanupContainers(service);

    let manager = DaemonProc::spawn("e2e-mgr-dm", "127.0.0.84", "docker");
    let mut worker = DaemonProc::spawn("e2e-mgr-dw", "127.0.0.85", "docker");
    manager.swarm_init();
    let token = manager.must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
    worker.swarm_join(&token, &manager.addr, "worker");
    wait_for(Duration::from_secs(30), "2 ready nodes", || {
        let nodes = nodes(&manager)?;
        (nodes.len() == 2 && nodes.iter().all(|n| n["Status"] == "Ready")).then_some(())
    });

    let constraint = format!("node.hostname=={}", worker.hostname);
    let created = manager.create_service(&[
        "--name",
        service,
        "--replicas",
        "2",
        "--constraint",
        &constraint,
        "--stop-grace-period",
        "1s",
        "shoal-test/busybox:latest",
        "sleep",
        "600",
    ]);
    assert!(created.ends_with("verify: Service converged\n"), "{created}");
    wait_for(Duration::from_secs(60), "2 running tasks on the worker", || {
        let counts = running_by_node(&manager, service)?;
        (counts.get(&worker.hostname) == Some(&2) && counts.len() == 1).then_some(())
    });
    let before = wait_for(Duration::from_secs(30), "2 running containers", || {
        let ids = container_ids(service);
        (ids.len() == 2).then_some(ids)
    });
    let tasks_before = task_history(&manager, service);
    assert_eq!(tasks_before.len(), 2, "{tasks_before:?}");

    // Graceful stop, then start again over the same data dir.
    assert!(worker.terminate(Duration::from_secs(30)), "the worker daemon did not exit on SIGTERM\n{}", worker.log());
    assert_eq!(container_ids(service), before, "containers must outlive a graceful daemon stop");
    worker.start();
    wait_for(Duration::from_secs(60), "the restarted worker to resume", || {
        worker.shoal(&["info"]).ok().filter(|info| info.contains("Swarm: active")).map(|_| ())
    });
    wait_for(Duration::from_secs(60), "the restarted worker to be Ready", || {
        let nodes = nodes(&manager)?;
        nodes.iter().any(|n| n["Hostname"] == worker.hostname.as_str() && n["Status"] == "Ready").then_some(())
    });
    // Give the agent a few heartbeats to (wrongly) replace anything, then check nothing changed.
    std::thread::sleep(Duration::from_secs(5));
    wait_for(Duration::from_secs(30), "2/2 running", || {
        (running_by_node(&manager, service)?.get(&worker.hostname) == Some(&2)).then_some(())
    });
    assert_eq!(container_ids(service), before, "the same containers, no duplicates\n{}", worker.log());
    assert_eq!(task_history(&manager, service), tasks_before, "no task was replaced\n{}", worker.log());
    let ls = manager.must(&["service", "ls"]);
    assert!(ls.contains(&format!("{service}   replicated   2/2")), "{ls}");

    // `swarm leave` stops and removes the node's containers, as Docker's does.
    assert_eq!(worker.must(&["swarm", "leave"]), "Node left the swarm.\n");
    let out = Command::new("docker").args(["ps", "-a", "--no-trunc", "-q"]).output().expect("run docker ps -a");
    let remaining = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(before.iter().all(|id| !remaining.contains(id.as_str())), "left behind: {before:?} in {remaining}");
    manager.must(&["service", "rm", service]);
}

/// Live processes whose command line is exactly `argv` (found through /proc).
fn processes_running(argv: &[&str]) -> usize {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|cmdline| cmdline == wanted))
        .count()
}

#[test]
fn process_tasks_do_not_outlive_a_killed_daemon() {
    // Tasks that do not watch their daemon: a SIGKILLed daemon leaves them running, and the next one
    // must kill them before it starts the tasks again, or each would run twice.
    let manager = DaemonProc::spawn("e2e-mgr-pm", "127.0.0.86", "process");
    let mut worker = DaemonProc::spawn("e2e-mgr-pw", "127.0.0.87", "process");
    manager.swarm_init();
    let token = manager.must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
    worker.swarm_join(&token, &manager.addr, "worker");
    manager.must(&["node", "update", "--availability", "drain", &manager.hostname]);
    let task = ["sleep", "3017"];
    let created = manager.create_service(&["--name", "e2e-orphans", "--replicas", "2", "process", task[0], task[1]]);
    assert!(created.ends_with("verify: Service converged\n"), "{created}");
    assert_eq!(processes_running(&task), 2);

    worker.kill();
    assert_eq!(processes_running(&task), 2, "a SIGKILLed daemon's processes live on");
    worker.start();
    wait_for(Duration::from_secs(60), "2 tasks running again on the restarted worker", || {
        (running_by_node(&manager, "e2e-orphans")?.get(&worker.hostname) == Some(&2)).then_some(())
    });
    assert!(worker.log().contains("killed 2 process(es) a previous daemon left running"), "{}", worker.log());
    assert_eq!(processes_running(&task), 2, "each task runs once");
    manager.must(&["service", "rm", "e2e-orphans"]);
    wait_for(Duration::from_secs(30), "no task process left", || (processes_running(&task) == 0).then_some(()));
}
