//! Every deployable stack file of `core/tests/compose/` (real files users deploy with `docker stack
//! deploy`, kept byte for byte) deployed by `shoal stack deploy` on real daemons with the Docker
//! executor: one manager and two workers on 127.0.0.161–163, one worker labelled `pcidss=yes` as
//! atsea-shop's payment gateway requires.
//!
//! The files name images from Docker Hub, which a test may not pull. Each `image:` is swapped for a
//! stand-in made here from the local test image (`docker commit`, nothing pulled): it ignores the
//! command it is given, serves HTTP on port 3000 with busybox's httpd (swarmprom's health check
//! fetches `http://localhost:3000` with curl; the stand-in's `curl` is busybox wget, so the check
//! passes only because something answers), and stops at once on SIGTERM. Everything else is the
//! file as published: secrets (external, created first, as Docker requires), configs from files
//! beside the compose file, named volumes, bind mounts of host paths, networks, published ports in
//! both modes, global services, constraints, resources, YAML anchors.
//!
//! For each file: every service converges (dogvscat's consul only where the engine can make its
//! volume: it asks the `local` driver for a `size`, which needs quota support from the filesystem;
//! where there is none the task fails with the engine's own error, as it does under Swarm); secrets and configs are files in the containers with the values given; named
//! volumes exist (scoped to the stack) and are mounted; deploying the same file again updates in
//! place (no task replaced); `stack rm` removes the services and their containers.
//!
//! All of it twice: once with `shoal stack deploy|rm`, once with Docker's own CLI (`docker stack
//! deploy --resolve-image never`, `docker stack rm`) on the manager's Engine API socket.
//!
//! `docker-cli-full-example.yml` is docker/cli's loader fixture, not a stack: `stack deploy` refuses
//! it as Docker does (tested in `core/tests/stack_compose.rs`).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{json_lines, require_docker, wait_for, CleanupBridges, DaemonProc};

/// The stand-in for every image the files name.
const STANDIN: &str = "shoal-test/standin:latest";

/// The stand-in's entrypoint: whatever command the service gives is ignored.
const STANDIN_ENTRYPOINT: &str = "#!/bin/sh
mkdir -p /tmp/www && echo ok > /tmp/www/index.html
httpd -p 3000 -h /tmp/www 2>/dev/null
trap 'exit 0' TERM INT
while :; do sleep 1; done
";

/// `curl [flags] URL` as health checks use it: fetch URL, fail if it does not answer.
const STANDIN_CURL: &str = "#!/bin/sh
for url; do :; done
exec wget -q -O /dev/null \"$url\"
";

fn docker(args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker").args(args).output().expect("run docker");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).to_string())
    }
}

fn must_docker(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("docker {}: {e}", args.join(" ")))
}

/// Build the stand-in image from the local test image (no builder, no registry).
fn build_standin() {
    let scratch = tempfile::tempdir().unwrap();
    let (entry, curl) = (scratch.path().join("standin"), scratch.path().join("curl"));
    std::fs::write(&entry, STANDIN_ENTRYPOINT).unwrap();
    std::fs::write(&curl, STANDIN_CURL).unwrap();
    // `docker cp` keeps the host file's mode.
    std::fs::set_permissions(&curl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let name = format!("shoal-standin-build-{}", std::process::id());
    let _ = docker(&["rm", "-f", &name]);
    must_docker(&["create", "--name", &name, "shoal-test/busybox:latest", "true"]);
    must_docker(&["cp", entry.to_str().unwrap(), &format!("{name}:/standin")]);
    must_docker(&["cp", curl.to_str().unwrap(), &format!("{name}:/bin/curl")]);
    // The previous run's stand-in goes first, so runs do not pile up untagged images.
    let _ = docker(&["rmi", STANDIN]);
    must_docker(&[
        "commit",
        "--change",
        "ENTRYPOINT [\"/bin/sh\", \"/standin\"]",
        "--change",
        "CMD []",
        &name,
        STANDIN,
    ]);
    must_docker(&["rm", "-f", &name]);
}

/// The file with every `image:` value replaced by the stand-in's.
fn with_standin_images(text: &str) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            match trimmed.strip_prefix("image:") {
                Some(_) => format!("{}image: {STANDIN}", &line[..line.len() - trimmed.len()]),
                None => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Copy the example into `dir` with the stand-in images; returns the path.
fn place(dir: &Path, file: &str) -> String {
    let text = std::fs::read_to_string(format!("{}/../core/tests/compose/{file}", env!("CARGO_MANIFEST_DIR")))
        .expect("the compose example");
    let path = dir.join(file);
    std::fs::write(&path, with_standin_images(&text)).unwrap();
    path.to_str().unwrap().to_string()
}

/// `service ls` rows of the stack: name → (running, desired).
fn replicas(manager: &DaemonProc, stack: &str) -> BTreeMap<String, (u64, u64)> {
    let out = manager.shoal(&["stack", "services", stack, "--format", "{{.Name}} {{.Replicas}}"]).unwrap_or_default();
    out.lines()
        .filter_map(|line| {
            let (name, counts) = line.split_once(' ')?;
            let (running, desired) = counts.split_whitespace().next()?.split_once('/')?;
            Some((name.to_string(), (running.parse().ok()?, desired.parse().ok()?)))
        })
        .collect()
}

/// Wait until each of the stack's `expected` services runs all it should (global: one per node
/// that meets its constraints), except those in `failing`.
fn wait_converged(manager: &DaemonProc, stack: &str, expected: &[(&str, u64)], failing: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let rows = replicas(manager, stack);
        let done = expected.iter().all(|(name, want)| {
            let full = format!("{stack}_{name}");
            match rows.get(&full) {
                Some(&(running, desired)) if failing.contains(name) => desired == *want && running < desired,
                Some(&(running, desired)) => running == *want && desired == *want,
                None => false,
            }
        });
        if done && rows.len() == expected.len() {
            return;
        }
        if std::time::Instant::now() > deadline {
            let ps = manager.shoal(&["stack", "ps", "--no-trunc", stack]).unwrap_or_else(|e| e);
            panic!("stack {stack} did not converge within 180 s: {rows:?}\n{ps}\n{}", manager.log());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The id of one running container of `service` (full name) on the engine.
fn container_of(service: &str) -> String {
    let label = format!("label={}={service}", shoal_core::env::executor::LABEL_SERVICE_NAME);
    wait_for(Duration::from_secs(30), &format!("a container of {service}"), || {
        let ids = docker(&["ps", "-q", "--filter", &label]).ok()?;
        ids.lines().next().map(str::to_string)
    })
}

fn exec(container: &str, script: &str) -> String {
    must_docker(&["exec", container, "sh", "-c", script])
}

/// The ids of the stack's tasks desired running, but for the services in `failing` (whose tasks
/// come and go), to see that a redeploy replaces none.
fn running_tasks(manager: &DaemonProc, stack: &str, failing: &[&str]) -> Vec<String> {
    let out = manager.must(&["stack", "ps", stack, "--format", "json", "-f", "desired-state=running"]);
    let failing: Vec<String> = failing.iter().map(|name| format!("{stack}_{name}.")).collect();
    let mut ids: Vec<String> = json_lines(&out)
        .iter()
        .filter(|t| !failing.iter().any(|f| t["Name"].as_str().is_some_and(|n| n.starts_with(f.as_str()))))
        .filter_map(|t| t["ID"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// Who sends `stack deploy|rm`: the `shoal` CLI, or Docker's own CLI on the daemon's Engine API
/// socket (`docker stack deploy` is client-side: it creates the networks, secrets, configs and
/// services through the API one by one). Everything else the test asks goes through `shoal`.
struct Deployer<'a> {
    manager: &'a DaemonProc,
    /// The API socket and a `DOCKER_CONFIG` of the test's own, for the docker CLI.
    docker: Option<(std::path::PathBuf, tempfile::TempDir)>,
}

impl Deployer<'_> {
    fn stack(&self, args: &[&str]) -> Result<String, String> {
        let Some((socket, config)) = &self.docker else {
            let mut shoal = vec!["stack"];
            shoal.extend_from_slice(args);
            return self.manager.shoal_within(&shoal, Duration::from_secs(60));
        };
        let mut words = vec!["stack"];
        words.extend_from_slice(args);
        if args.first() == Some(&"deploy") {
            // The stand-in is local; nothing is looked up on a registry.
            words.extend_from_slice(&["--resolve-image", "never"]);
        }
        let output = Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", socket.display()))
            .env("DOCKER_CONFIG", config.path())
            .args(&words)
            .output()
            .expect("run docker");
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        if output.status.success() {
            Ok(stdout.to_string())
        } else {
            Err(format!("{stderr}{stdout}"))
        }
    }

    fn must_stack(&self, args: &[&str]) -> String {
        self.stack(args).unwrap_or_else(|e| panic!("stack {}: {e}\n{}", args.join(" "), self.manager.log()))
    }
}

/// Deploy `file` as `stack`, wait for `expected`, redeploy (nothing replaced), hand the stack to
/// `check`, then remove it and wait for its containers to go.
fn deploy_and_check(
    via: &Deployer,
    dir: &Path,
    file: &str,
    stack: &str,
    expected: &[(&str, u64)],
    failing: &[&str],
    check: impl FnOnce(),
) {
    let manager = via.manager;
    let path = place(dir, file);
    let out = via.must_stack(&["deploy", "-c", &path, stack]);
    assert!(out.contains(&format!("Creating service {stack}_")), "{file}: {out}");
    wait_converged(manager, stack, expected, failing);
    let before = running_tasks(manager, stack, failing);
    let again = via.must_stack(&["deploy", "-c", &path, stack]);
    assert!(again.contains(&format!("Updating service {stack}_")), "{file} again: {again}");
    std::thread::sleep(Duration::from_secs(3));
    wait_converged(manager, stack, expected, failing);
    assert_eq!(running_tasks(manager, stack, failing), before, "{file}: a redeploy of the same file replaces no task");
    check();
    via.must_stack(&["rm", stack]);
    let prefix = format!("label={}", shoal_core::env::executor::LABEL_SERVICE_NAME);
    wait_for(Duration::from_secs(60), &format!("stack {stack}'s containers to go"), || {
        let rows =
            docker(&["ps", "-a", "--filter", &prefix, "--format", "{{.Label \"com.shoal.service.name\"}}"]).ok()?;
        (!rows.lines().any(|s| s.starts_with(&format!("{stack}_")))).then_some(())
    });
}

/// Removes what the stacks left on the engine, however the test ends: containers and named volumes
/// (the bridges go with [`CleanupBridges`]). Declared before the daemons, so it runs after they have
/// stopped and nothing restarts what it removes.
struct Cleanup {
    /// Stack name prefixes (`cx` for `cxvote`, `cxprom`, …).
    stacks: Vec<&'static str>,
}

impl Cleanup {
    fn owns(&self, name: &str) -> bool {
        self.stacks.iter().any(|prefix| {
            name.strip_prefix(prefix)
                .and_then(|rest| rest.split_once('_'))
                .is_some_and(|(stack, _)| ["vote", "v17", "prom", "shop", "dog", "pit"].contains(&stack))
        })
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let label = format!("label={}", shoal_core::env::executor::LABEL_SERVICE_NAME);
        let format = "{{.ID}} {{.Label \"com.shoal.service.name\"}}";
        if let Ok(rows) = docker(&["ps", "-a", "--filter", &label, "--format", format]) {
            for row in rows.lines() {
                if let Some((id, service)) = row.split_once(' ') {
                    if self.owns(service) {
                        let _ = docker(&["rm", "-f", id]);
                    }
                }
            }
        }
        if let Ok(volumes) = docker(&["volume", "ls", "-q"]) {
            for volume in volumes.lines().filter(|v| self.owns(v)) {
                let _ = docker(&["volume", "rm", "-f", volume]);
            }
        }
    }
}

/// Deploy every example through `via`, as stacks named `<p>vote`, `<p>v17`, `<p>prom`, `<p>shop`,
/// `<p>dog` and `<p>pit`.
fn deploy_every_example(via: &Deployer, dir: &Path, p: &str) {
    let manager = via.manager;

    // voting-app: replicas, short ports, networks without a driver, a named volume.
    deploy_and_check(
        via,
        dir,
        "voting-app.yml",
        &format!("{p}vote"),
        &[("redis", 1), ("db", 1), ("vote", 2), ("result", 1), ("worker", 2)],
        &[],
        || {
            must_docker(&["volume", "inspect", &format!("{p}vote_db-data")]);
            let db = container_of(&format!("{p}vote_db"));
            let mounts =
                must_docker(&["inspect", "--format", "{{range .Mounts}}{{.Name}}:{{.Destination}} {{end}}", &db]);
            assert!(mounts.contains(&format!("{p}vote_db-data:/var/lib/postgresql/data")), "{mounts}");
        },
    );

    // voting-app (2017): constraints on the manager's role, update/restart policies, a random port.
    deploy_and_check(
        via,
        dir,
        "voting-app-2017.yml",
        &format!("{p}v17"),
        &[("redis", 1), ("db", 1), ("vote", 2), ("result", 1), ("worker", 1), ("visualizer", 1)],
        &[],
        || {
            let db = container_of(&format!("{p}v17_db"));
            let node = must_docker(&["inspect", "--format", "{{index .Config.Labels \"com.shoal.node.id\"}}", &db]);
            let manager_id = manager.must(&["node", "inspect", "--format", "{{.ID}}", "self"]);
            assert_eq!(node.trim(), manager_id.trim(), "db is constrained to the manager");
        },
    );

    // swarmprom: configs from files beside the compose file, global services, a health check,
    // volumes, a template in env. The config files are the project's; any content will do here.
    let caddy =
        "# dockerd-exporter Caddyfile (compose example test)\n:9323 {\n  proxy / {$DOCKER_GWBRIDGE_IP}:9323\n}\n";
    for (path, text) in [
        ("caddy/Caddyfile", ":9090 {\n  basicauth / {$ADMIN_USER} {$ADMIN_PASSWORD}\n}\n"),
        ("dockerd-exporter/Caddyfile", caddy),
        ("prometheus/rules/swarm_node.rules.yml", "groups: []\n"),
        ("prometheus/rules/swarm_task.rules.yml", "groups: []\n"),
    ] {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    deploy_and_check(
        via,
        dir,
        "swarmprom.yml",
        &format!("{p}prom"),
        &[
            ("dockerd-exporter", 3),
            ("cadvisor", 3),
            ("grafana", 1),
            ("alertmanager", 1),
            ("unsee", 1),
            ("node-exporter", 3),
            ("prometheus", 1),
            ("caddy", 1),
        ],
        &[],
        || {
            let exporter = container_of(&format!("{p}prom_dockerd-exporter"));
            assert_eq!(exec(&exporter, "cat /etc/caddy/Caddyfile"), caddy, "the config's content at its target");
            let node_exporter = container_of(&format!("{p}prom_node-exporter"));
            let env = exec(&node_exporter, "echo $NODE_ID");
            assert_eq!(env.trim().len(), 25, "{{{{.Node.ID}}}} expanded to a node id: {env:?}");
            must_docker(&["volume", "inspect", &format!("{p}prom_prometheus")]);
            let caddy_task = container_of(&format!("{p}prom_caddy"));
            let health = must_docker(&["inspect", "--format", "{{.State.Health.Status}}", &caddy_task]);
            assert_eq!(health.trim(), "healthy", "caddy's health check passes");
        },
    );

    // atsea-shop: external secrets (created first, as Docker requires), an encrypted overlay,
    // constraints on a node label.
    let secrets = [
        ("postgres_password", "pg-pass-e2e"),
        ("staging_token", "staging-token-e2e"),
        ("revprox_key", "revprox-key-e2e"),
        ("revprox_cert", "revprox-cert-e2e"),
    ];
    let missing = via.stack(&["deploy", "-c", &place(dir, "atsea-shop.yml"), &format!("{p}shop")]).unwrap_err();
    assert!(
        missing.contains("secret not found: "),
        "Docker refuses a stack whose external secrets are missing: {missing}"
    );
    for (name, value) in secrets {
        let file = dir.join(name);
        std::fs::write(&file, value).unwrap();
        manager.must(&["secret", "create", name, file.to_str().unwrap()]);
    }
    deploy_and_check(
        via,
        dir,
        "atsea-shop.yml",
        &format!("{p}shop"),
        &[("reverse_proxy", 1), ("database", 1), ("appserver", 2), ("visualizer", 1), ("payment_gateway", 1)],
        &[],
        || {
            let gateway = container_of(&format!("{p}shop_payment_gateway"));
            assert_eq!(exec(&gateway, "cat /run/secrets/payment_token"), "staging-token-e2e");
            assert_eq!(exec(&gateway, "stat -c %a /run/secrets/payment_token").trim(), "444");
            let node =
                must_docker(&["inspect", "--format", "{{index .Config.Labels \"com.shoal.node.id\"}}", &gateway]);
            let labelled = manager.must(&["node", "inspect", "--format", "{{.ID}}", "cx-w2"]);
            assert_eq!(node.trim(), labelled.trim(), "the gateway runs on the pcidss node");
            let database = container_of(&format!("{p}shop_database"));
            assert_eq!(exec(&database, "cat /run/secrets/postgres_password"), "pg-pass-e2e");
            let proxy = container_of(&format!("{p}shop_reverse_proxy"));
            assert_eq!(exec(&proxy, "cat /run/secrets/revprox_cert"), "revprox-cert-e2e");
        },
    );
    for (name, _) in secrets {
        manager.must(&["secret", "rm", name]);
    }

    // dogvscat: YAML anchors and merges, host-mode and ingress ports, a network with a fixed name.
    // consul's volume asks the local driver for a `size`: the engine makes it only on a filesystem
    // with quota support. Ask the engine directly first; the task must do as the engine does.
    let probe = format!("{p}-size-probe-{}", std::process::id());
    let quota_error = docker(&["volume", "create", "--driver", "local", "--opt", "size=1", &probe]).err();
    let _ = docker(&["volume", "rm", "-f", &probe]);
    let consul_fails: &[&str] = if quota_error.is_some() { &["consul"] } else { &[] };
    deploy_and_check(
        via,
        dir,
        "dogvscat-proxy-global.yml",
        &format!("{p}dog"),
        &[("traefik-init", 1), ("traefik", 3), ("consul", 1), ("dockersocket", 1)],
        consul_fails,
        || {
            if let Some(engine_error) = &quota_error {
                let ps =
                    manager.must(&["service", "ps", "--no-trunc", "--format", "{{.Error}}", &format!("{p}dog_consul")]);
                let words = engine_error.trim().rsplit(": ").next().unwrap_or_default();
                assert!(ps.contains(words), "consul fails with the engine's words ({words:?}): {ps}");
            }
            // `logging: options: max-size` without a driver: the engine's default driver, capped.
            let traefik = container_of(&format!("{p}dog_traefik"));
            let log = must_docker(&["inspect", "--format", "{{json .HostConfig.LogConfig}}", &traefik]);
            assert!(log.contains("\"max-size\":\"1m\""), "the anchor's logging options reach the engine: {log}");
            let networks = manager.must(&["network", "ls", "--format", "{{.Name}}"]);
            assert!(networks.lines().any(|n| n == "proxy"), "the network keeps its fixed name: {networks}");
        },
    );

    // swarmpit: resources, deploy labels as a map, volumes with an explicit driver.
    deploy_and_check(
        via,
        dir,
        "swarmpit.yml",
        &format!("{p}pit"),
        &[("app", 1), ("db", 1), ("influxdb", 1), ("agent", 3)],
        &[],
        || {
            must_docker(&["volume", "inspect", &format!("{p}pit_db-data")]);
            must_docker(&["volume", "inspect", &format!("{p}pit_influx-data")]);
            let labels =
                manager.must(&["service", "inspect", "--format", "{{json .Spec.Labels}}", &format!("{p}pit_agent")]);
            assert!(labels.contains("\"swarmpit.agent\":\"true\""), "{labels}");
        },
    );
}

#[test]
fn every_compose_example_deploys_on_the_docker_engine() {
    require_docker();
    build_standin();
    // Declared first, so dropped last: bridges after the containers attached to them.
    let bridges = CleanupBridges::default();
    let _cleanup = Cleanup { stacks: vec!["cx", "dx"] };
    let (manager, api, _api_dir) = DaemonProc::spawn_with_api("cx-m", "127.0.0.161");
    let worker1 = DaemonProc::spawn("cx-w1", "127.0.0.162", "docker");
    let worker2 = DaemonProc::spawn("cx-w2", "127.0.0.163", "docker");
    manager.swarm_init();
    let token = manager.must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
    worker1.swarm_join(&token, &manager.addr, "worker");
    worker2.swarm_join(&token, &manager.addr, "worker");
    wait_for(Duration::from_secs(30), "3 ready nodes", || {
        let nodes = json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?);
        (nodes.len() == 3 && nodes.iter().all(|n| n["Status"] == "Ready")).then_some(())
    });
    for node in [&manager, &worker1, &worker2] {
        let id = manager.must(&["node", "inspect", "--format", "{{.ID}}", &node.hostname]);
        bridges.add(&id);
    }
    manager.must(&["node", "update", "--label-add", "pcidss=yes", "cx-w2"]);
    let dir = tempfile::tempdir().unwrap();
    deploy_every_example(&Deployer { manager: &manager, docker: None }, dir.path(), "cx");
    let docker_cli = Deployer { manager: &manager, docker: Some((api, tempfile::tempdir().unwrap())) };
    deploy_every_example(&docker_cli, dir.path(), "dx");
    drop(worker2);
    drop(worker1);
}
