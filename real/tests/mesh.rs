//! The data plane end to end (issue 13): three `shoal daemon` processes on loopback addresses with
//! the Docker executor, driven by the CLI, and real HTTP through the mesh. The web service is busybox
//! `httpd` serving a page holding its container's hostname, so each answer says which replica
//! served it.
//!
//! - Ingress: a service constrained off node 1 answers on node 1's published port; 100 requests
//!   reach every replica; `mode=host` answers only where a task runs; a host port already taken
//!   gives the task Docker's error in `service ps`.
//! - Readiness and drain: a rolling update of 4 replicas and a drain of a node, each under a steady
//!   request loop, fail no request.
//! - Overlay: a client container on node 1 fetches `http://web/` served only on node 2 and gets
//!   that replica's hostname, while the replica's own bridge address is unreachable from it (Docker
//!   drops traffic between bridges: only the mesh carries it); `--network-add` makes the name
//!   resolve from the added network and `--network-rm` stops it.
//!
//! - Processes: with the process executor a task is reached at its node's address, over TCP and
//!   UDP (a published UDP port on every node reaches every node's task; `service rm` frees it).
//!
//! Needs Docker, root (the image `shoal-test/busybox:latest` is built from busybox-static when missing), and Debian's
//! busybox and python3 on the host for the process test; fails, not skips, without them. Traffic goes only to 127.0.0.8x and to the bridges the daemons make (the
//! ingress network 10.0.0.0/16, and 10.213.0.0/16 and 10.214.0.0/16 made by this test, which no
//! interface of the test machines uses).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{json_lines, require_docker, running_by_node, wait_for, DaemonProc};

use shoal_testimage::TEST_IMAGE as IMAGE;
/// Serves `/index.html` holding the container's hostname on port 80.
const SERVE_HOSTNAME: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

/// The test image with `EXPOSE 80`, as a web server's image declares it (a VIP serves the
/// published target ports and the ports the image exposes): committed from the test image, locally.
const WEB_IMAGE: &str = "shoal-test/busybox-web:latest";

fn ensure_web_image() {
    shoal_testimage::require();
    let inspect = Command::new("docker").args(["image", "inspect", WEB_IMAGE]).output().expect("docker");
    if inspect.status.success() {
        return;
    }
    let created = Command::new("docker").args(["create", IMAGE, "true"]).output().expect("docker create");
    assert!(created.status.success(), "docker create: {}", String::from_utf8_lossy(&created.stderr));
    let id = String::from_utf8_lossy(&created.stdout).trim().to_string();
    let commit =
        Command::new("docker").args(["commit", "--change", "EXPOSE 80", &id, WEB_IMAGE]).output().expect("commit");
    let _ = Command::new("docker").args(["rm", &id]).output();
    assert!(commit.status.success(), "docker commit: {}", String::from_utf8_lossy(&commit.stderr));
}

/// One manager (node 1) and two workers, joined.
struct Cluster {
    nodes: Vec<DaemonProc>,
    node_ids: Vec<String>,
}

impl Cluster {
    /// The hostnames (= short container ids) of the running containers of `service` on this
    /// cluster's nodes (another test's service of the same name on the engine is not counted).
    fn replica_hostnames(&self, service: &str) -> BTreeSet<String> {
        let output = Command::new("docker")
            .args(["ps", "--no-trunc", "--format"])
            .arg(format!("{{{{.ID}}}} {{{{.Label \"{}\"}}}}", shoal_core::env::executor::LABEL_NODE_ID))
            .arg("--filter")
            .arg(format!("label={}={service}", shoal_core::env::executor::LABEL_SERVICE_NAME))
            .output()
            .expect("run docker ps");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_once(' '))
            .filter(|(_, node)| self.node_ids.iter().any(|id| id == node))
            .map(|(id, _)| id[..12].to_string())
            .collect()
    }

    /// The container id of the one running task of `service`.
    fn only_container(&self, service: &str) -> String {
        let ids = self.replica_hostnames(service);
        assert_eq!(ids.len(), 1, "{service} has one running container: {ids:?}");
        ids.into_iter().next().unwrap()
    }

    fn start(prefix: &str, ips: [&str; 3]) -> Cluster {
        require_docker();
        Cluster::start_with(prefix, ips, "docker")
    }

    fn start_with(prefix: &str, ips: [&str; 3], executor: &str) -> Cluster {
        let nodes: Vec<DaemonProc> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| DaemonProc::spawn(&format!("{prefix}-{}", i + 1), ip, executor))
            .collect();
        nodes[0].swarm_init();
        let token = nodes[0].must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
        for worker in &nodes[1..] {
            worker.swarm_join(&token, &nodes[0].addr, "worker");
        }
        wait_for(Duration::from_secs(30), "3 ready nodes", || {
            let listed = json_lines(&nodes[0].shoal(&["node", "ls", "--format", "json"]).ok()?);
            (listed.len() == 3 && listed.iter().all(|n| n["Status"] == "Ready")).then_some(())
        });
        let node_ids = nodes
            .iter()
            .map(|node| nodes[0].must(&["node", "inspect", &node.hostname, "--format", "{{.ID}}"]).trim().to_string())
            .collect();
        Cluster { nodes, node_ids }
    }

    fn manager(&self) -> &DaemonProc {
        &self.nodes[0]
    }

    fn ip(&self, node: usize) -> String {
        self.nodes[node].addr.parse::<SocketAddr>().expect("node address").ip().to_string()
    }

    /// `service create` that must converge (the CLI waits for it).
    fn create(&self, args: &[&str]) {
        self.manager().create_service(args);
    }

    fn must(&self, args: &[&str]) -> String {
        self.manager().must(args)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stop the daemons first (their containers and bridges outlive them), then remove what
        // their nodes made, so the next run finds the subnets free.
        let ids = std::mem::take(&mut self.node_ids);
        self.nodes.clear();
        remove_nodes_leftovers(&ids);
    }
}

/// Remove every container and bridge network labelled with one of these node ids.
fn remove_nodes_leftovers(node_ids: &[String]) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let Ok(docker) = bollard::Docker::connect_with_local_defaults() else { return };
        for id in node_ids {
            let filters = std::collections::HashMap::from([(
                "label".to_string(),
                vec![format!("{}={id}", shoal_core::env::executor::LABEL_NODE_ID)],
            )]);
            let options =
                bollard::container::ListContainersOptions { all: true, filters: filters.clone(), ..Default::default() };
            for container in docker.list_containers(Some(options)).await.unwrap_or_default() {
                if let Some(cid) = container.id {
                    let remove = bollard::container::RemoveContainerOptions { force: true, ..Default::default() };
                    let _ = docker.remove_container(&cid, Some(remove)).await;
                }
            }
            let options = bollard::network::ListNetworksOptions { filters };
            for network in docker.list_networks(Some(options)).await.unwrap_or_default() {
                if let Some(name) = network.name {
                    let _ = docker.remove_network(&name).await;
                }
            }
        }
    });
}

/// A port free on every one of `ips` (TCP), below the ephemeral range.
fn free_port_on(ips: &[String]) -> u16 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let start = nanos % 5_000;
    (0..5_000u32)
        .map(|i| 15_000 + ((start + i) % 5_000) as u16)
        .find(|&port| ips.iter().all(|ip| TcpListener::bind((ip.as_str(), port)).is_ok()))
        .expect("a free port on every node")
}

/// `GET /` on `addr` (HTTP/1.0, connection closed by the server): the body, or why not.
fn http_get(addr: &str) -> Result<String, String> {
    let target: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut stream =
        TcpStream::connect_timeout(&target, Duration::from_secs(3)).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: mesh\r\n\r\n").map_err(|e| format!("send to {addr}: {e}"))?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| format!("read from {addr}: {e}"))?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") => {
            Ok(body.trim().to_string())
        }
        _ => Err(format!("{addr} answered {response:?}")),
    }
}

/// Run `command` in a container: Ok(stdout) on exit 0, Err(stderr + stdout) otherwise.
fn docker_exec(container: &str, command: &[&str]) -> Result<String, String> {
    let output = Command::new("docker").arg("exec").arg(container).args(command).output().expect("run docker exec");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{}{stdout}", String::from_utf8_lossy(&output.stderr)))
    }
}

/// Requests sent one after another to `addrs` (round robin) until stopped; every failure recorded.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `clients` loops, each sending to every address in turn.
    fn start(addrs: Vec<String>, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, sent, failures, addrs) = (stop.clone(), sent.clone(), failures.clone(), addrs.clone());
                std::thread::spawn(move || {
                    // Bounded: at most 10 minutes of requests, whatever happens to the test.
                    let deadline = Instant::now() + Duration::from_secs(600);
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let addr = &addrs[i % addrs.len()];
                        i += 1;
                        if let Err(e) = http_get(addr) {
                            failures.lock().unwrap().push(e);
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Load { stop, sent, failures, threads }
    }

    /// Stop and return (requests sent, failures).
    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        (self.sent.load(Ordering::Relaxed), self.failures.lock().unwrap().clone())
    }
}

#[test]
fn ingress_publishing_readiness_and_drain() {
    let cluster = Cluster::start("mesh-in", ["127.0.0.81", "127.0.0.82", "127.0.0.83"]);
    let ips: Vec<String> = (0..3).map(|n| cluster.ip(n)).collect();
    let n1 = cluster.nodes[0].hostname.clone();

    // (a) A service that runs nowhere on node 1 answers on node 1's published port.
    let port = free_port_on(&ips);
    let publish = format!("{port}:80");
    cluster.create(&[
        "--name",
        "front",
        "--replicas",
        "3",
        "--constraint",
        &format!("node.hostname!={n1}"),
        "-p",
        &publish,
        "--stop-grace-period",
        "2s",
        "--update-parallelism",
        "1",
        "--update-delay",
        "0s",
        IMAGE,
        "sh",
        "-c",
        SERVE_HOSTNAME,
    ]);
    let counts = running_by_node(cluster.manager(), "front").expect("service ps");
    assert!(!counts.contains_key(&n1), "no task on node 1: {counts:?}");
    let on_node_1 = format!("{}:{port}", ips[0]);
    let replicas = cluster.replica_hostnames("front");
    assert_eq!(replicas.len(), 3, "{replicas:?}");
    let first = wait_for(Duration::from_secs(30), "node 1's published port to answer", || http_get(&on_node_1).ok());
    assert!(replicas.contains(&first), "{first:?} is one of the replicas {replicas:?}");

    // (b) 100 requests to node 1 reach every replica; each node's port answers too.
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..100 {
        let host = http_get(&on_node_1).unwrap_or_else(|e| panic!("a request through node 1 failed: {e}"));
        *served.entry(host).or_default() += 1;
    }
    assert_eq!(served.keys().cloned().collect::<BTreeSet<_>>(), replicas, "every replica answers: {served:?}");
    for ip in &ips[1..] {
        let host = http_get(&format!("{ip}:{port}")).unwrap_or_else(|e| panic!("through {ip}: {e}"));
        assert!(replicas.contains(&host), "{host}");
    }

    // (c) mode=host: the port answers on the node that runs the task, and only there.
    let host_port = free_port_on(&ips);
    let n2 = cluster.nodes[1].hostname.clone();
    cluster.create(&[
        "--name",
        "pinned",
        "--constraint",
        &format!("node.hostname=={n2}"),
        "--publish",
        &format!("published={host_port},target=80,mode=host"),
        IMAGE,
        "sh",
        "-c",
        SERVE_HOSTNAME,
    ]);
    let pinned = cluster.only_container("pinned");
    let answer = wait_for(Duration::from_secs(30), "the host-mode port on node 2", || {
        http_get(&format!("{}:{host_port}", ips[1])).ok()
    });
    assert_eq!(answer, pinned);
    for ip in [&ips[0], &ips[2]] {
        let err = http_get(&format!("{ip}:{host_port}")).unwrap_err();
        assert!(err.contains("refused"), "mode=host is closed where no task runs ({ip}): {err}");
    }

    // (g) A host port taken on node 3's address: the task fails with Docker's words in `service ps`.
    let n3 = cluster.nodes[2].hostname.clone();
    let taken_port = free_port_on(&ips);
    let _squatter = TcpListener::bind((ips[2].as_str(), taken_port)).expect("hold the port");
    cluster.must(&[
        "service",
        "create",
        "--detach",
        "--name",
        "squatted",
        "--constraint",
        &format!("node.hostname=={n3}"),
        "--publish",
        &format!("published={taken_port},target=80,mode=host"),
        IMAGE,
        "sh",
        "-c",
        SERVE_HOSTNAME,
    ]);
    let error = wait_for(Duration::from_secs(60), "the squatted task's error", || {
        let rows = json_lines(
            &cluster.manager().shoal(&["service", "ps", "squatted", "--no-trunc", "--format", "json"]).ok()?,
        );
        rows.iter().map(|r| r["Error"].as_str().unwrap_or_default().to_string()).find(|e| !e.is_empty())
    });
    assert!(
        error.contains(&format!("{}:{taken_port}", ips[2])) && error.contains("address already in use"),
        "the task says which address and why: {error}"
    );
    // The rest keeps serving.
    assert!(replicas.contains(&http_get(&on_node_1).expect("front still answers")));
    cluster.must(&["service", "rm", "squatted", "pinned"]);

    // (e) A rolling update of 4 replicas under a steady request loop through all three nodes: no
    // request fails.
    cluster.must(&["service", "scale", "--detach", "front=4"]);
    wait_for(Duration::from_secs(60), "4 replicas serving", || {
        (cluster.replica_hostnames("front").len() == 4).then_some(())
    });
    let addrs: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    wait_for(Duration::from_secs(30), "all 4 replicas in the rotation", || {
        let seen: BTreeSet<String> = (0..40).filter_map(|_| http_get(&addrs[0]).ok()).collect();
        (seen.len() == 4).then_some(())
    });
    let before = cluster.replica_hostnames("front");
    let load = Load::start(addrs.clone(), 4);
    let updated = cluster
        .manager()
        .shoal_within(&["service", "update", "--force", "front"], Duration::from_secs(240))
        .unwrap_or_else(|e| panic!("service update: {e}\n{}", cluster.manager().log()));
    assert!(updated.ends_with("verify: Service converged\n"), "{updated}");
    std::thread::sleep(Duration::from_secs(1));
    let (sent, failures) = load.finish();
    let after = cluster.replica_hostnames("front");
    assert!(after.is_disjoint(&before), "every replica was replaced: {before:?} → {after:?}");
    assert!(sent > 100, "the loop kept sending during the update ({sent} requests)");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during the rolling update: {failures:?}",
        failures.len()
    );

    // (e) Drain node 2 under the same loop: its tasks move, no request fails.
    let load = Load::start(addrs, 4);
    cluster.must(&["node", "update", "--availability", "drain", &n2]);
    wait_for(Duration::from_secs(120), "4 running replicas off the drained node", || {
        let counts = running_by_node(cluster.manager(), "front")?;
        (counts.values().sum::<usize>() == 4
            && !counts.contains_key(&n2)
            && cluster.replica_hostnames("front").len() == 4)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let (sent, failures) = load.finish();
    assert!(sent > 100, "the loop kept sending during the drain ({sent} requests)");
    assert!(failures.is_empty(), "{} of {sent} requests failed during the drain: {failures:?}", failures.len());

    // Moving the published port (`--publish-rm` by target, `--publish-add`): the new one answers on
    // every node, the old one closes on every node.
    let moved = free_port_on(&ips);
    cluster
        .manager()
        .shoal_within(
            &["service", "update", "--publish-rm", "80", "--publish-add", &format!("{moved}:80"), "front"],
            Duration::from_secs(240),
        )
        .unwrap_or_else(|e| panic!("service update --publish-rm/--publish-add: {e}"));
    for ip in &ips {
        let host =
            wait_for(Duration::from_secs(30), "the new published port", || http_get(&format!("{ip}:{moved}")).ok());
        assert!(cluster.replica_hostnames("front").contains(&host), "{host}");
        wait_for(Duration::from_secs(30), "the old published port to close", || {
            http_get(&format!("{ip}:{port}")).err().filter(|e| e.contains("refused"))
        });
    }

    // Removing the service frees the port on every node.
    cluster.must(&["service", "rm", "front"]);
    for ip in &ips {
        wait_for(Duration::from_secs(30), "the published port to close", || {
            http_get(&format!("{ip}:{moved}")).err().filter(|e| e.contains("refused"))
        });
    }
}

/// `GET http://host/` from inside `container` with busybox `nc` (the test image's static `wget`
/// crashes): the body, or why not.
fn fetch_from(container: &str, host: &str) -> Result<String, String> {
    fetch_port_from(container, host, 80)
}

/// As [`fetch_from`], on `port`.
fn fetch_port_from(container: &str, host: &str, port: u16) -> Result<String, String> {
    let script = format!("printf 'GET / HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n' | nc -w 3 {host} {port}");
    let response = docker_exec(container, &["sh", "-c", &script])?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") => {
            Ok(body.trim().to_string())
        }
        _ => Err(format!("GET http://{host}/ from {container}: {response:?}")),
    }
}

/// The address of `container` on its Docker network whose name starts with `prefix`.
fn bridge_address(container: &str, prefix: &str) -> String {
    let output = Command::new("docker")
        .args(["inspect", "--format", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}"])
        .arg(container)
        .output()
        .expect("docker inspect");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    text.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| name.starts_with(prefix))
        .map(|(_, ip)| ip.to_string())
        .unwrap_or_else(|| panic!("{container} has no address on a network {prefix}*: {text}"))
}

#[test]
fn overlay_names_go_through_the_mesh() {
    let cluster = Cluster::start("mesh-ov", ["127.0.0.84", "127.0.0.85", "127.0.0.86"]);
    ensure_web_image();
    let [n1, n2, _] = [0, 1, 2].map(|i| cluster.nodes[i].hostname.clone());
    cluster.must(&["network", "create", "-d", "overlay", "--subnet", "10.213.0.0/16", "app"]);
    cluster.must(&["network", "create", "-d", "overlay", "--subnet", "10.214.0.0/16", "other"]);

    // (d) web runs only on node 2; a client container on node 1 fetches http://web/.
    cluster.create(&[
        "--name",
        "web",
        "--network",
        "app",
        "--constraint",
        &format!("node.hostname=={n2}"),
        WEB_IMAGE,
        "sh",
        "-c",
        SERVE_HOSTNAME,
    ]);
    cluster.create(&[
        "--name",
        "client",
        "--network",
        "app",
        "--constraint",
        &format!("node.hostname=={n1}"),
        IMAGE,
        "sleep",
        "3600",
    ]);
    let web = cluster.only_container("web");
    let client = cluster.only_container("client");
    let served = match (0..60).find_map(|_| {
        let got = fetch_from(&client, "web");
        if got.is_err() {
            std::thread::sleep(Duration::from_secs(1));
        }
        got.ok()
    }) {
        Some(served) => served,
        None => {
            let diag = [
                format!("{:?}", fetch_from(&client, "web")),
                std::fs::read_to_string(cluster.nodes[1].dir.path().join("data/events.jsonl"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("mesh") || l.contains("endpoint") || l.contains("ready"))
                    .map(|l| l.chars().take(600).collect::<String>())
                    .collect::<Vec<_>>()
                    .join("\n"),
                cluster.nodes[1].log(),
                format!("{:?}", docker_exec(&client, &["nslookup", "web"])),
                format!("{:?}", docker_exec(&client, &["cat", "/etc/resolv.conf"])),
                format!("{:?}", docker_exec(&client, &["ip", "addr"])),
                String::from_utf8_lossy(&Command::new("ip").args(["-4", "addr"]).output().unwrap().stdout).to_string(),
                std::fs::read_to_string(cluster.nodes[0].dir.path().join("data/events.jsonl"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("mesh"))
                    .map(|l| l.chars().take(400).collect::<String>())
                    .collect::<Vec<_>>()
                    .join("\n"),
                cluster.nodes[0].log(),
            ];
            panic!("http://web/ never answered:\n{}", diag.join("\n---\n"));
        }
    };
    assert_eq!(served, web, "the page comes from the replica on node 2");
    // The name is node 1's VIP for web, not the replica's address; the replica's own address on
    // node 2's bridge cannot be reached from node 1's bridge: only the mesh carries the request.
    let web_ip = bridge_address(&web, "shoal-app-");
    let lookup = docker_exec(&client, &["nslookup", "web"]).expect("nslookup web");
    assert!(!lookup.contains(&web_ip), "web resolves to a VIP, not the task: {lookup}");
    // tasks.web names the one replica by node 1's alias of it (a task on another node is not
    // reachable at its own address), and the alias serves that replica.
    let tasks = docker_exec(&client, &["nslookup", "tasks.web"]).expect("nslookup tasks.web");
    assert!(!tasks.contains(&web_ip), "tasks.web resolves to node 1's alias of the task, not its address: {tasks}");
    let by_alias = fetch_from(&client, "tasks.web").expect("http://tasks.web/ through node 1's alias");
    assert_eq!(by_alias, web, "the alias leads to the replica on node 2");
    let direct = fetch_from(&client, &web_ip);
    assert!(direct.is_err(), "the replica's bridge address must be unreachable from node 1's bridge: {direct:?}");

    // A port the image does not EXPOSE and no one publishes: the VIP forwards it once the task
    // listens on it (its node reads the container's socket table), as Swarm's VIP forwards any port.
    cluster.create(&[
        "--name",
        "metrics",
        "--network",
        "app",
        "--constraint",
        &format!("node.hostname=={n2}"),
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 9100 -h /www",
    ]);
    let metrics = cluster.only_container("metrics");
    let served = wait_for(Duration::from_secs(30), "http://metrics:9100/ through the VIP", || {
        fetch_port_from(&client, "metrics", 9100).ok()
    });
    assert_eq!(served, metrics, "the undeclared port 9100 leads to the metrics replica on node 2");

    // (f) A service on another network is unknown from app, until --network-add; --network-rm ends it.
    cluster.create(&["--name", "api", "--network", "other", WEB_IMAGE, "sh", "-c", SERVE_HOSTNAME]);
    let unknown = fetch_from(&client, "api");
    assert!(unknown.is_err(), "a service on no shared network is unknown: {unknown:?}");
    let updated = cluster
        .manager()
        .shoal_within(&["service", "update", "--network-add", "app", "api"], Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("service update --network-add: {e}"));
    assert!(updated.ends_with("verify: Service converged\n"), "{updated}");
    let api = cluster.only_container("api");
    let served =
        wait_for(Duration::from_secs(60), "http://api/ after --network-add", || fetch_from(&client, "api").ok());
    assert_eq!(served, api);
    cluster
        .manager()
        .shoal_within(&["service", "update", "--network-rm", "app", "api"], Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("service update --network-rm: {e}"));
    wait_for(Duration::from_secs(60), "api to be unknown again from app", || fetch_from(&client, "api").err());
    let lookup = docker_exec(&client, &["nslookup", "api"]);
    assert!(lookup.is_err() || !lookup.as_ref().unwrap().contains("Address 1"), "api no longer resolves: {lookup:?}");
}

/// The process executor has no bridges: a task is reached at its node's address, which it learns
/// from `SHOAL_TASK_IP`. A global service of host `busybox httpd` processes, each on its node's
/// address, answers on every node's published port, and the requests reach all three.
#[test]
fn process_tasks_are_reached_at_their_node_address() {
    let cluster = Cluster::start_with("mesh-proc", ["127.0.0.87", "127.0.0.88", "127.0.0.89"], "process");
    let ips: Vec<String> = (0..3).map(|n| cluster.ip(n)).collect();
    let published = free_port_on(&ips);
    let target = free_port_on(&ips);
    let serve = format!(
        "d=$(mktemp -d) && echo $SHOAL_TASK_IP > $d/index.html && exec busybox httpd -f -p $SHOAL_TASK_IP:{target} -h $d"
    );
    cluster.create(&[
        "--name",
        "hostweb",
        "--mode",
        "global",
        "-p",
        &format!("{published}:{target}"),
        "process",
        "sh",
        "-c",
        &serve,
    ]);
    let on_node_1 = format!("{}:{published}", ips[0]);
    if (0..60).all(|_| {
        let failed = http_get(&on_node_1).is_err();
        if failed {
            std::thread::sleep(Duration::from_millis(500));
        }
        failed
    }) {
        let events = |n: usize| {
            std::fs::read_to_string(cluster.nodes[n].dir.path().join("data/events.jsonl"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("mesh") || l.contains("task.state") || l.contains("reject"))
                .map(|l| l.chars().take(500).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "node 1's published port never answered: {:?}\n{}\n---\n{}\n---\n{}",
            http_get(&on_node_1),
            cluster.must(&["service", "ps", "--no-trunc", "hostweb"]),
            events(0),
            events(1)
        );
    }
    let mut served = BTreeSet::new();
    for _ in 0..60 {
        served.insert(http_get(&on_node_1).unwrap_or_else(|e| panic!("through node 1: {e}")));
    }
    assert_eq!(served, ips.iter().cloned().collect::<BTreeSet<_>>(), "each node's process answers at its address");
    for ip in &ips[1..] {
        let answer = http_get(&format!("{ip}:{published}")).unwrap_or_else(|e| panic!("through {ip}: {e}"));
        assert!(ips.contains(&answer), "{answer}");
    }
    cluster.must(&["service", "rm", "hostweb"]);

    // UDP through the same mesh: every node's published UDP port reaches the tasks of all three
    // (each client socket is a flow, pinned to one task; flows are spread).
    let udp_published = free_port_on(&ips);
    let udp_target = free_port_on(&ips);
    let echo = format!(
        "exec python3 -c \"import os,socket; ip=os.environ['SHOAL_TASK_IP']; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); \
         s.bind((ip,{udp_target})); [s.sendto(ip.encode(),a) for d,a in iter(lambda: s.recvfrom(2048), None)]\""
    );
    cluster.create(&[
        "--name",
        "hostecho",
        "--mode",
        "global",
        "--publish",
        &format!("published={udp_published},target={udp_target},protocol=udp"),
        "process",
        "sh",
        "-c",
        &echo,
    ]);
    let udp_ask = |to: &str| -> Option<String> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
        socket.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        socket.send_to(b"who", to).ok()?;
        let mut buf = [0u8; 64];
        let (len, from) = socket.recv_from(&mut buf).ok()?;
        assert_eq!(from.to_string(), to, "the answer comes back from the published address");
        Some(String::from_utf8_lossy(&buf[..len]).into_owned())
    };
    let udp_on_node_1 = format!("{}:{udp_published}", ips[0]);
    let mut udp_served = BTreeSet::new();
    for _ in 0..120 {
        if let Some(answer) = udp_ask(&udp_on_node_1) {
            udp_served.insert(answer);
        }
        if udp_served.len() == ips.len() {
            break;
        }
    }
    assert_eq!(
        udp_served,
        ips.iter().cloned().collect::<BTreeSet<_>>(),
        "node 1's published UDP port reaches every node's task\n{}",
        cluster.must(&["service", "ps", "--no-trunc", "hostecho"])
    );
    for ip in &ips[1..] {
        let answer = (0..20).find_map(|_| udp_ask(&format!("{ip}:{udp_published}")));
        assert!(answer.is_some_and(|a| ips.contains(&a)), "through {ip}'s published UDP port");
    }
    cluster.must(&["service", "rm", "hostecho"]);
    // Removing the service frees the port on every node: it can be bound again.
    let stayed_bound = (0..40).all(|_| {
        let free = ips.iter().all(|ip| std::net::UdpSocket::bind(format!("{ip}:{udp_published}")).is_ok());
        if !free {
            std::thread::sleep(Duration::from_millis(250));
        }
        !free
    });
    assert!(!stayed_bound, "the published UDP port stayed bound after service rm");
}
