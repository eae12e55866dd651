//! End to end, role changes and disk faults of managers: real `shoal daemon` processes on loopback
//! addresses (127.0.0.91–101), plain processes as tasks, driven only by the `shoal` CLI (issue 14).
//!
//! - The manager that ran `swarm init`, demoted while it leads, finds the other managers and stays
//!   `Ready` as a worker, also after its daemon restarts (it knew only itself as a manager).
//! - A leader demoted and promoted again at once ends with one raft identity: it serves as a
//!   manager, and leads the swarm alone once the others are demoted.
//! - A manager whose raft log is on a file system that fills up (a small tmpfs the test mounts and
//!   fills: a real ENOSPC) steps down, says why on stderr, in `events.jsonl` and to the CLI, and
//!   rejoins the raft once space is freed, without a restart, with every acknowledged write kept.
//!   Mounting needs root (as CI runs); the test fails, not skips, without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{json_lines, wait_for, DaemonProc};

fn ip(n: u8) -> String {
    format!("127.0.0.{}", 90 + n)
}

fn nodes(manager: &DaemonProc) -> Option<Vec<serde_json::Value>> {
    Some(json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?))
}

/// `node ls` row of `hostname`, as `manager` sees it.
fn row(manager: &DaemonProc, hostname: &str) -> Option<serde_json::Value> {
    nodes(manager)?.into_iter().find(|n| n["Hostname"] == hostname)
}

/// 3 managers (the first ran `swarm init`) and a worker, all ready.
fn three_managers_and_a_worker(prefix: &str, first_ip: u8) -> (Vec<DaemonProc>, DaemonProc) {
    let managers: Vec<DaemonProc> =
        (0..3).map(|n| DaemonProc::spawn(&format!("{prefix}-m{}", n + 1), &ip(first_ip + n), "process")).collect();
    let worker = DaemonProc::spawn(&format!("{prefix}-w1"), &ip(first_ip + 3), "process");
    managers[0].swarm_init();
    let manager_token = managers[0].must(&["swarm", "join-token", "-q", "manager"]).trim().to_string();
    let worker_token = managers[0].must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
    for manager in &managers[1..] {
        manager.swarm_join(&manager_token, &managers[0].addr, "manager");
    }
    worker.swarm_join(&worker_token, &managers[0].addr, "worker");
    wait_for(Duration::from_secs(60), "3 managers (1 leader) and a worker, all ready", || {
        let nodes = nodes(&managers[0])?;
        (nodes.len() == 4
            && nodes.iter().all(|n| n["Status"] == "Ready")
            && nodes.iter().filter(|n| n["ManagerStatus"] == "Leader").count() == 1
            && nodes.iter().filter(|n| n["ManagerStatus"] == "Reachable").count() == 2)
            .then_some(())
    });
    (managers, worker)
}

fn leader_hostname(manager: &DaemonProc) -> Option<String> {
    let nodes = nodes(manager)?;
    Some(nodes.iter().find(|n| n["ManagerStatus"] == "Leader")?["Hostname"].as_str()?.to_string())
}

/// What the node on `daemon` keeps in `node.json`.
fn identity(daemon: &DaemonProc) -> serde_json::Value {
    let path = daemon.dir.path().join("data/node/node.json");
    serde_json::from_slice(&std::fs::read(&path).expect("node.json")).expect("node.json is JSON")
}

fn events(daemon: &DaemonProc) -> Vec<serde_json::Value> {
    json_lines(&std::fs::read_to_string(daemon.dir.path().join("data/events.jsonl")).unwrap_or_default())
}

#[test]
fn demoted_init_node_finds_the_other_managers() {
    let (mut managers, _worker) = three_managers_and_a_worker("e2e-rf-demote", 1);
    let init = managers[0].hostname.clone();
    assert_eq!(leader_hostname(&managers[1]).as_deref(), Some(init.as_str()), "swarm init's node leads");

    assert_eq!(managers[1].must(&["node", "demote", &init]), format!("Manager {init} demoted in the swarm.\n"));
    wait_for(Duration::from_secs(60), "the init node to be a ready worker", || {
        let row = row(&managers[1], &init)?;
        (row["ManagerStatus"] == "" && row["Status"] == "Ready").then_some(())
    });
    wait_for(Duration::from_secs(60), "the init node to see itself as a worker", || {
        managers[0].shoal(&["info"]).ok().filter(|info| info.contains("  Is Manager: false\n")).map(|_| ())
    });
    // Down comes after 3 missed heartbeats (1 s each): it must stay Ready well past that.
    std::thread::sleep(Duration::from_secs(6));
    let seen = row(&managers[1], &init).expect("node ls");
    assert_eq!(seen["Status"], "Ready", "{seen}\n--- daemon log ---\n{}", managers[0].log());
    // It keeps the managers it knows (the others, not itself), so a restart finds them too.
    let others: Vec<String> = managers[1..].iter().map(|m| m.addr.clone()).collect();
    wait_for(Duration::from_secs(30), "node.json to name the other managers, not itself", || {
        let known = identity(&managers[0]);
        let listed: Vec<&str> = known["managers"].as_array()?.iter().filter_map(|m| m.as_str()).collect();
        (others.iter().all(|a| listed.contains(&a.as_str())) && !listed.contains(&managers[0].addr.as_str()))
            .then_some(())
    });

    managers[0].kill();
    wait_for(Duration::from_secs(30), "the killed init node to be down", || {
        (row(&managers[1], &init)?["Status"] == "Down").then_some(())
    });
    managers[0].start();
    wait_for(Duration::from_secs(60), "the restarted init node to be ready again", || {
        (row(&managers[1], &init)?["Status"] == "Ready").then_some(())
    });
    let err = managers[0].shoal(&["node", "ls"]).unwrap_err();
    assert!(err.contains("This node is not a swarm manager."), "{err}");
}

#[test]
fn demote_and_promote_at_once_keeps_one_raft_identity() {
    let (managers, _worker) = three_managers_and_a_worker("e2e-rf-flip", 5);
    let first = managers[0].hostname.clone();
    assert_eq!(leader_hostname(&managers[1]).as_deref(), Some(first.as_str()), "swarm init's node leads");

    // Demote the leader and promote it again at once, well within one heartbeat of the node.
    managers[1].must(&["node", "demote", &first]);
    assert_eq!(
        managers[1].must(&["node", "promote", &first]),
        format!("Node {first} promoted to a manager in the swarm.\n")
    );
    wait_for(Duration::from_secs(60), "the flipped node to be a reachable manager", || {
        let row = row(&managers[1], &first)?;
        (row["Status"] == "Ready" && row["ManagerStatus"] == "Reachable").then_some(())
    });
    // It serves as a manager itself (not a demoted replica answering "not a swarm manager")…
    wait_for(Duration::from_secs(30), "the flipped node to answer as a manager", || {
        managers[0].shoal(&["node", "ls"]).ok().map(|_| ())
    });
    // …as one raft member: the one the leader added for its address last, in its node.json, and the
    // only replica it started since.
    let added: Vec<u64> = managers
        .iter()
        .flat_map(events)
        .filter(|e| e["kind"] == "raft.add_manager" && e["fields"]["addr"] == managers[0].addr.as_str())
        .filter_map(|e| e["fields"]["raft_id"].as_u64())
        .collect();
    let kept = identity(&managers[0]);
    assert_eq!(kept["raft_id"].as_u64(), added.last().copied(), "{kept}\nadded: {added:?}");
    let promoted: Vec<u64> = events(&managers[0])
        .iter()
        .filter(|e| e["kind"] == "node.promoted")
        .filter_map(|e| e["fields"]["raft_id"].as_u64())
        .collect();
    assert_eq!(promoted, added, "the node started the member the leader added, once");

    // The other two managers go: the swarm is left to the flipped node, which must lead it.
    for other in &managers[1..] {
        wait_for(Duration::from_secs(60), "the demotion of another manager", || {
            managers[0].shoal(&["node", "demote", &other.hostname]).ok().map(|_| ())
        });
    }
    wait_for(Duration::from_secs(60), "the flipped node to lead the swarm alone", || {
        let nodes = nodes(&managers[0])?;
        let leaders: Vec<&serde_json::Value> = nodes.iter().filter(|n| n["ManagerStatus"] != "").collect();
        (leaders.len() == 1 && leaders[0]["Hostname"] == first.as_str() && leaders[0]["ManagerStatus"] == "Leader")
            .then_some(())
    });
    let created =
        managers[0].create_service(&["--name", "e2e-rf-flip-web", "--replicas", "2", "process", "sleep", "600"]);
    assert!(created.ends_with("verify: Service converged\n"), "{created}");
}

/// A tmpfs the test mounts (small, so it can be filled): unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root (CI runs as root): {status}");
        Tmpfs { dir: dir.to_path_buf() }
    }

    /// Write zeros to a file until the file system is full (ENOSPC).
    fn fill(&self) -> PathBuf {
        let filler = self.dir.join("filler");
        let output =
            Command::new("dd").arg("if=/dev/zero").arg(format!("of={}", filler.display())).arg("bs=64k").output();
        let stderr = String::from_utf8_lossy(&output.expect("run dd").stderr).to_string();
        assert!(stderr.contains("No space left on device"), "dd fills the tmpfs: {stderr}");
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a daemon may be in the middle of a write there.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[test]
fn full_disk_makes_a_manager_step_down_and_rejoin() {
    let ips: Vec<String> = (0..3).map(|n| ip(9 + n)).collect();
    let mut managers: Vec<DaemonProc> =
        (0..3).map(|n| DaemonProc::spawn(&format!("e2e-rf-disk-m{}", n + 1), &ips[n], "process")).collect();
    // The first manager's raft files live on a 4 MiB tmpfs (its node.json and events.jsonl do not).
    let tmpfs = Tmpfs::mount(&managers[0].dir.path().join("data/node/raft"), "4m");
    managers[0].swarm_init();
    let token = managers[0].must(&["swarm", "join-token", "-q", "manager"]).trim().to_string();
    for manager in &managers[1..] {
        manager.swarm_join(&token, &managers[0].addr, "manager");
    }
    let first = managers[0].hostname.clone();
    wait_for(Duration::from_secs(60), "3 ready managers led by the first", || {
        let nodes = nodes(&managers[0])?;
        (nodes.len() == 3
            && nodes.iter().all(|n| n["Status"] == "Ready")
            && leader_hostname(&managers[0]).as_deref() == Some(first.as_str()))
        .then_some(())
    });
    let task = ["process", "sleep", "600"];
    let before =
        managers[0].create_service(&[&["--name", "e2e-rf-disk-before", "--replicas", "1"], &task[..]].concat());
    assert!(before.ends_with("verify: Service converged\n"), "{before}");

    // The raft log's file system fills up; the next write the leader takes cannot be logged.
    let filler = tmpfs.fill();
    let refused = managers[0].shoal_within(&["service", "scale", "e2e-rf-disk-before=2"], Duration::from_secs(60));
    // Stepped down, and says why, loudly: stderr, events.jsonl, and every control request.
    let why = wait_for(Duration::from_secs(30), "the full manager to say why it stepped down", || {
        let err = managers[0].shoal(&["node", "ls"]).err()?;
        err.contains("No space left on device").then_some(err)
    });
    assert!(why.contains("stepped down"), "{why}");
    let log = managers[0].log();
    assert!(log.contains("stepped down") && log.contains("No space left on device"), "{refused:?}\n{log}");
    assert!(
        events(&managers[0]).iter().any(|e| e["kind"] == "manager.stepped_down"
            && e["fields"]["error"].as_str().is_some_and(|e| e.contains("No space left on device"))),
        "events.jsonl records the step-down"
    );
    // The others elect a leader among themselves and take writes.
    let new_leader = wait_for(Duration::from_secs(60), "a new leader", || {
        leader_hostname(&managers[1]).filter(|name| *name != first)
    });
    let after = managers[1].create_service(&[&["--name", "e2e-rf-disk-during", "--replicas", "1"], &task[..]].concat());
    assert!(after.ends_with("verify: Service converged\n"), "{after}");

    // Space again: it rejoins on its own, no restart.
    std::fs::remove_file(&filler).expect("free the tmpfs");
    wait_for(Duration::from_secs(60), "the manager to rejoin once its disk takes writes", || {
        managers[0].shoal(&["node", "ls"]).ok().map(|_| ())
    });
    assert!(managers[0].log().contains("rejoined the raft"), "{}", managers[0].log());
    assert!(events(&managers[0]).iter().any(|e| e["kind"] == "manager.rejoined"), "events.jsonl records the rejoin");
    wait_for(Duration::from_secs(60), "all three managers reachable again", || {
        let nodes = nodes(&managers[1])?;
        (nodes.iter().filter(|n| n["ManagerStatus"] == "Reachable" || n["ManagerStatus"] == "Leader").count() == 3)
            .then_some(())
    });

    // It counts for the quorum again: with the new leader killed, the first and the third manager
    // elect one of themselves and the swarm takes writes — with everything acknowledged before.
    let leader_index = managers.iter().position(|m| m.hostname == new_leader).expect("the new leader is a manager");
    managers[leader_index].kill();
    let survivor = &managers[if leader_index == 1 { 2 } else { 1 }];
    wait_for(Duration::from_secs(60), "a leader among the two left", || {
        leader_hostname(survivor).filter(|name| *name != new_leader)
    });
    let last = managers[0].create_service(&[&["--name", "e2e-rf-disk-after", "--replicas", "1"], &task[..]].concat());
    assert!(last.ends_with("verify: Service converged\n"), "{last}");
    let services = managers[0].must(&["service", "ls", "--format", "{{.Name}}"]);
    for name in ["e2e-rf-disk-before", "e2e-rf-disk-during", "e2e-rf-disk-after"] {
        assert!(services.lines().any(|l| l == name), "{name} kept: {services}");
    }
    drop(tmpfs);
}
