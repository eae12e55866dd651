//! Docker's own client against shoal: one `shoal daemon --api-socket` with the Docker executor, and
//! the real `docker` CLI pointed at that socket only (`DOCKER_HOST=unix://…`; the host's own engine
//! is never asked to do swarm work). Images are referred to by their local id or a local tag and
//! the daemon runs `--pull never`, so no registry is ever contacted. A few requests the CLI does not
//! make (a stale update version, a too-new API version, docker-py's lowercase keys and list
//! filters) are sent as raw HTTP on the same socket.

mod common;

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{require_docker, wait_for, CleanupBridges, CleanupContainers, DaemonProc};
use serde_json::{json, Value};

const IMAGE: &str = "shoal-test/busybox:latest";

/// A stack of one service with two replicas on a network of its own (`version:` for the 20.10 CLI).
const STACK: &str = "version: \"3.8\"
services:
  api:
    image: shoal-test/busybox:latest
    command: [sleep, \"3600\"]
    stop_grace_period: 1s
    networks: [back]
    deploy:
      replicas: 2
networks:
  back: {}
";

struct Docker {
    socket: PathBuf,
    /// An empty Docker config dir: no context or credentials of this host's user apply.
    config: tempfile::TempDir,
}

impl Docker {
    /// `docker ARGS` against shoal's API socket: Ok(stdout) on exit 0, Err(stderr + stdout) otherwise.
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("timeout")
            .arg("180")
            .arg("docker")
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.config.path())
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .output()
            .expect("run the docker CLI");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!("exit {:?}\nstderr: {stderr}\nstdout: {stdout}", output.status.code()))
        }
    }

    fn must(&self, args: &[&str], daemon: &DaemonProc) -> String {
        self.run(args)
            .unwrap_or_else(|e| panic!("`docker {}` failed: {e}\n--- daemon log ---\n{}", args.join(" "), daemon.log()))
    }
}

/// The progress display ended in convergence: `verify: Service web converged` (CLI 28 names the
/// service, 20.10 says `verify: Service converged`).
fn converged(progress: &str) -> bool {
    progress.lines().any(|l| l.starts_with("verify: Service") && l.trim_end().ends_with("converged"))
}

/// The words of a table's header line.
fn header(table: &str) -> Vec<&str> {
    table.lines().next().unwrap_or_default().split_whitespace().collect()
}

/// Rows (after the header) whose second column is `name`.
fn rows<'a>(table: &'a str, name: &str) -> Vec<Vec<&'a str>> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.get(1) == Some(&name))
        .collect()
}

/// One HTTP/1.1 request on the API socket: (status, headers in lower case, body).
fn http(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<(String, String)>, String) {
    let mut stream = UnixStream::connect(socket).expect("connect to the API socket");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn image_id() -> String {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let docker = bollard::Docker::connect_with_local_defaults().unwrap();
        docker.inspect_image(IMAGE).await.unwrap().id.expect("the test image has an id")
    })
}

#[test]
fn the_docker_cli_drives_a_shoal_swarm() {
    require_docker();
    // Declared first, so dropped last: after the daemon is stopped and its containers removed.
    let bridges = CleanupBridges::default();
    let _cleanup =
        [CleanupContainers("web"), CleanupContainers("web2"), CleanupContainers("pyweb"), CleanupContainers("app_api")];
    let (daemon, api, api_dir) = DaemonProc::spawn_with_api("m1", "127.0.0.171");
    let mode = std::fs::metadata(&api).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the API socket is the owner's and group's only");
    let docker = Docker { socket: api.clone(), config: tempfile::tempdir().unwrap() };

    // Before `swarm init`: the engine answers, and says it is in no swarm.
    let info = docker.must(&["info"], &daemon);
    assert!(info.contains(" Swarm: inactive"), "{info}");
    let refused = docker.run(&["node", "ls"]).unwrap_err();
    assert!(refused.contains("Error response from daemon: This node is not a swarm manager."), "{refused}");

    let init = daemon.swarm_init();
    let node_id = init.split(['(', ')']).nth(1).unwrap_or_default().to_string();
    assert_eq!(docker.must(&["info", "--format", "{{.Swarm.NodeID}}"], &daemon).trim(), node_id);
    bridges.add(&node_id);
    let node_id = node_id.as_str();

    let version = docker.must(&["version"], &daemon);
    let server = version.split("Server:").nth(1).unwrap_or_default();
    assert!(server.lines().any(|l| l.trim() == "API version:      1.41 (minimum version 1.24)"), "{version}");
    let info = docker.must(&["info"], &daemon);
    for line in [" Swarm: active", " Is Manager: true", &format!(" NodeID: {node_id}"), " Managers: 1", " Nodes: 1"] {
        assert!(info.contains(line), "`docker info` lacks {line:?}:\n{info}");
    }

    let nodes = docker.must(&["node", "ls"], &daemon);
    assert_eq!(header(&nodes), ["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER", "STATUS", "ENGINE", "VERSION"]);
    let me = nodes.lines().nth(1).unwrap_or_default();
    assert!(me.starts_with(&format!("{node_id} *")), "this node is marked: {nodes}");
    for word in ["m1", "Ready", "Active", "Leader"] {
        assert!(me.split_whitespace().any(|w| w == word), "{word} in {nodes}");
    }

    // `service create -d`: the id, then the service converges on its own.
    let image = image_id();
    let created = docker.must(
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "2",
            "--stop-grace-period",
            "1s",
            &image,
            "sleep",
            "3600",
        ],
        &daemon,
    );
    let web_id = created.trim().to_string();
    assert_eq!(web_id.len(), 25, "a swarm id: {created}");
    let listed = wait_for(Duration::from_secs(60), "web running 2/2 in `docker service ls`", || {
        let table = docker.run(&["service", "ls"]).ok()?;
        let row = rows(&table, "web").pop()?;
        (row.get(3) == Some(&"2/2")).then_some(table)
    });
    assert_eq!(header(&listed), ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]);
    assert_eq!(rows(&listed, "web")[0][..5], [&web_id[..12], "web", "replicated", "2/2", image.as_str()]);

    let ps = docker.must(&["service", "ps", "web"], &daemon);
    assert_eq!(header(&ps), ["ID", "NAME", "IMAGE", "NODE", "DESIRED", "STATE", "CURRENT", "STATE", "ERROR", "PORTS"]);
    for slot in ["web.1", "web.2"] {
        let row = rows(&ps, slot);
        assert_eq!(row.len(), 1, "{slot} in\n{ps}");
        assert_eq!(row[0][2..6], [image.as_str(), "m1", "Running", "Running"], "{ps}");
    }

    let inspected: Value = serde_json::from_str(&docker.must(&["service", "inspect", "web"], &daemon)).unwrap();
    assert_eq!(inspected[0]["ID"], json!(web_id));
    assert_eq!(inspected[0]["Spec"]["Name"], json!("web"));
    assert_eq!(inspected[0]["Spec"]["Mode"]["Replicated"]["Replicas"], json!(2));
    assert_eq!(inspected[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"], json!(["sleep", "3600"]));
    assert_eq!(inspected[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["StopGracePeriod"], json!(1_000_000_000u64));
    let missing = docker.run(&["service", "inspect", "nope"]).unwrap_err();
    assert!(missing.contains("no such service: nope"), "{missing}");

    // Scale, watching progress as the CLI does (tasks, nodes, the service) until it says converged.
    let scaled = docker.must(&["service", "scale", "web=3"], &daemon);
    assert!(converged(&scaled), "{scaled}");
    let ps = docker.must(&["service", "ps", "web", "--filter", "desired-state=running"], &daemon);
    assert_eq!(ps.lines().skip(1).filter(|l| l.contains(" Running ")).count(), 3, "{ps}");

    // A stale version is refused, as Swarm refuses it.
    let version = inspected[0]["Version"]["Index"].as_u64().unwrap();
    let (status, _, body) =
        http(&api, "POST", &format!("/v1.41/services/{web_id}/update?version={version}"), Some(&inspected[0]["Spec"]));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("update out of sequence"), "{body}");

    // A rolling update to another reference of the same local image.
    let updated = docker.must(&["service", "update", "--image", IMAGE, "web"], &daemon);
    assert!(converged(&updated), "{updated}");
    let inspected: Value = serde_json::from_str(&docker.must(&["service", "inspect", "web"], &daemon)).unwrap();
    assert_eq!(inspected[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"], json!(IMAGE));
    assert_eq!(inspected[0]["Spec"]["Mode"]["Replicated"]["Replicas"], json!(3), "the update kept the scale");
    assert_eq!(inspected[0]["UpdateStatus"]["State"], json!("completed"));
    let ps = docker.must(&["service", "ps", "web", "--filter", "desired-state=running"], &daemon);
    assert_eq!(ps.lines().skip(1).filter(|l| l.contains(IMAGE) && l.contains(" Running ")).count(), 3, "{ps}");

    // Rollback: the server applies the previous spec it keeps.
    let rolled = docker.must(&["service", "rollback", "web"], &daemon);
    assert!(rolled.contains("rollback: manually requested rollback") && converged(&rolled), "{rolled}");
    let inspected: Value = serde_json::from_str(&docker.must(&["service", "inspect", "web"], &daemon)).unwrap();
    assert_eq!(inspected[0]["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"], json!(image));
    assert_eq!(inspected[0]["UpdateStatus"]["State"], json!("rollback_completed"));

    // `service create` without -d follows the tasks until they run and stay up.
    let followed = docker
        .must(&["service", "create", "--name", "web2", "--stop-grace-period", "1s", &image, "sleep", "3600"], &daemon);
    assert!(followed.contains("overall progress: 1 out of 1 tasks"), "{followed}");
    assert!(converged(&followed), "{followed}");

    // Networks.
    let net = docker.must(&["network", "create", "-d", "overlay", "x"], &daemon);
    assert_eq!(net.trim().len(), 25, "{net}");
    let networks = docker.must(&["network", "ls"], &daemon);
    assert_eq!(header(&networks), ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]);
    assert_eq!(rows(&networks, "x")[0][1..], ["x", "overlay", "swarm"], "{networks}");
    assert_eq!(docker.must(&["network", "rm", "x"], &daemon).trim(), "x");
    assert!(rows(&docker.must(&["network", "ls"], &daemon), "x").is_empty());
    let bridge = docker.run(&["network", "create", "y"]).unwrap_err();
    assert!(bridge.contains("shoal serves swarm-scoped overlay networks only"), "{bridge}");

    // A stack: all client-side in the CLI (networks and services by label, created by name); its
    // two tasks bring up their network's bridge at once on this node, and neither may be rejected.
    let compose = api_dir.path().join("compose.yml");
    std::fs::write(&compose, STACK).unwrap();
    let deployed = docker.must(&["stack", "deploy", "-c", compose.to_str().unwrap(), "app"], &daemon);
    assert!(
        deployed.contains("Creating network app_back") && deployed.contains("Creating service app_api"),
        "{deployed}"
    );
    let stack = wait_for(Duration::from_secs(60), "app_api running 2/2 in `docker stack services app`", || {
        let table = docker.run(&["stack", "services", "app"]).ok()?;
        (rows(&table, "app_api").pop()?.get(3) == Some(&"2/2")).then_some(table)
    });
    assert_eq!(header(&stack), ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]);
    let stacks = docker.must(&["stack", "ls"], &daemon);
    // The 20.10 CLI adds an ORCHESTRATOR column (Swarm).
    assert_eq!(header(&stacks)[..2], ["NAME", "SERVICES"]);
    let row: Vec<&str> = stacks.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(row[..2], ["app", "1"], "{stacks}");
    let ps = docker.must(&["stack", "ps", "app", "--no-trunc"], &daemon);
    assert_eq!(ps.lines().skip(1).filter(|l| l.contains(" Running ")).count(), 2, "{ps}");
    assert!(!ps.contains("Rejected"), "no task of the stack was rejected:\n{ps}");
    let removed = docker.must(&["stack", "rm", "app"], &daemon);
    assert!(removed.contains("Removing service app_api") && removed.contains("Removing network app_back"), "{removed}");

    // Raw requests: headers, version checks, docker-py's lowercase keys and list filters.
    let (status, headers, body) = http(&api, "HEAD", "/_ping", None);
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(header_value(&headers, "api-version"), Some("1.41"));
    assert_eq!(header_value(&headers, "ostype"), Some("linux"));
    assert_eq!(header_value(&headers, "swarm"), Some("active/manager"));
    let (status, _, body) = http(&api, "GET", "/v1.99/version", None);
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"message": "client version 1.99 is too new. Maximum supported API version is 1.41"})
    );
    let py_spec = json!({
        "Name": "pyweb",
        "TaskTemplate": {"ContainerSpec": {"Image": image, "Command": ["sleep", "3600"], "StopGracePeriod": 1_000_000_000u64}},
        "Mode": {"replicated": {"Replicas": 2}},
    });
    let (status, _, body) = http(&api, "POST", "/services/create", Some(&py_spec));
    assert_eq!(status, 201, "{body}");
    let filters = "%7B%22service%22%3A%5B%22pyweb%22%5D%2C%22desired-state%22%3A%5B%22running%22%5D%7D";
    wait_for(Duration::from_secs(60), "pyweb's 2 tasks running, by list-style filters", || {
        let (status, _, body) = http(&api, "GET", &format!("/tasks?filters={filters}"), None);
        let tasks: Vec<Value> = serde_json::from_str(&body).ok()?;
        (status == 200 && tasks.len() == 2 && tasks.iter().all(|t| t["Status"]["State"] == "running")).then_some(())
    });

    // Engine routes shoal does not serve say so.
    let containers = docker.run(&["ps"]).unwrap_err();
    assert!(containers.contains("is not served by shoal"), "{containers}");
    let (status, _, body) = http(&api, "GET", "/v1.41/containers/0123abcd/json", None);
    assert_eq!((status, body.as_str()), (404, r#"{"message":"No such container: 0123abcd"}"#));

    let removed = docker.must(&["service", "rm", "web", "web2", "pyweb"], &daemon);
    assert_eq!(removed.lines().collect::<Vec<_>>(), ["web", "web2", "pyweb"]);
    let listed = docker.must(&["service", "ls"], &daemon);
    assert_eq!(listed.lines().count(), 1, "only the header is left: {listed}");
    // Nodes: `node update` sends the whole spec with its version; promote of a manager is the CLI's no-op.
    docker.must(&["node", "update", "--availability", "drain", "--label-add", "zone=a", "m1"], &daemon);
    let inspected: Value = serde_json::from_str(&docker.must(&["node", "inspect", "self"], &daemon)).unwrap();
    assert_eq!(inspected[0]["Spec"]["Availability"], json!("drain"));
    assert_eq!(inspected[0]["Spec"]["Labels"], json!({"zone": "a"}));
    docker.must(&["node", "update", "--availability", "active", "--label-rm", "zone", "m1"], &daemon);
    let nodes = docker.must(&["node", "ls"], &daemon);
    assert!(nodes.lines().nth(1).unwrap_or_default().contains(" Active "), "{nodes}");
    let inspected: Value = serde_json::from_str(&docker.must(&["node", "inspect", "m1"], &daemon)).unwrap();
    let labels = &inspected[0]["Spec"]["Labels"];
    assert!(labels.is_null() || *labels == json!({}), "the label is gone: {labels}");
    let promoted = docker.must(&["node", "promote", "m1"], &daemon);
    assert_eq!(promoted.trim(), format!("Node {node_id} is already a manager."));
    let last = docker.run(&["node", "demote", "m1"]).unwrap_err();
    assert!(last.contains("Error response from daemon: attempting to demote the last manager of the swarm"), "{last}");

    wait_for(Duration::from_secs(60), "the services' tasks gone", || {
        let (_, _, body) =
            http(&api, "GET", "/tasks?filters=%7B%22desired-state%22%3A%7B%22running%22%3Atrue%7D%7D", None);
        (serde_json::from_str::<Vec<Value>>(&body).ok()?.is_empty()).then_some(())
    });
}
