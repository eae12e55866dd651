//! Image pulls end to end, against a real registry the test starts on loopback: Debian's
//! `docker-registry` (Docker Distribution 2.8) on 127.0.0.1 with htpasswd auth, the local test
//! image pushed to it with `docker push` and then untagged, so the only copy by that name is in the
//! registry. Two `shoal daemon`s (127.0.0.150–151) with the Docker executor and the default pull
//! policy (pull when missing), driven by the CLI with a `DOCKER_CONFIG` of the test's own:
//!
//! - `service create --with-registry-auth`: the first node pulls with the client's credentials and
//!   the task runs; the image is untagged again and a second replica pulls it on the other node
//!   (each pull seen in the registry's access log, sent by shoal);
//! - wrong credentials, no credentials, and a tag the registry does not have: the task is rejected
//!   with Docker's error, in `service ps` and in `service create`'s progress display; right
//!   credentials given later with `service update --with-registry-auth` let the next task run;
//! - the password is never printed by `service inspect`/`ls`/`ps` and never in the daemons' logs or
//!   `events.jsonl`.
//!
//! Fails, not skips, without Docker, the test image, `docker-registry` or `htpasswd` (`.ci/run`
//! installs them). Nothing outside 127.0.0.0/8 is contacted.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::{
    free_port, json_lines, require_docker, running_by_node, wait_for, CleanupContainers, DaemonProc, CLI_DEADLINE,
};

use shoal_testimage::TEST_IMAGE;
const USER: &str = "shoal-puller";

/// A `docker-registry serve` child on 127.0.0.1, stopped by pid when dropped.
struct Registry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: String,
}

impl Registry {
    fn start(password: &str) -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let htpasswd = run(Command::new("htpasswd").args(["-Bbn", USER, password]), "htpasswd (apache2-utils)");
        std::fs::write(dir.path().join("htpasswd"), htpasswd.stdout).expect("write htpasswd");
        let addr = format!("127.0.0.1:{}", free_port("127.0.0.1"));
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
             http:\n  addr: {addr}\n  secret: shoal-test\nauth:\n  htpasswd:\n    realm: shoal-test\n    path: {htpasswd}\n",
            root = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("write the registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("this test needs Debian's docker-registry (installed by .ci/run): {e}"));
        let registry = Registry { child: Some(child), dir, addr };
        wait_for(Duration::from_secs(20), "the registry to listen", || TcpStream::connect(&registry.addr).ok());
        registry
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Manifest requests for `busybox:TAG` that the engine made for shoal (it passes its client's
    /// user agent on: `UpstreamClient(shoal/…)`): each pull makes at least one.
    fn shoal_pulls(&self, tag: &str) -> usize {
        let path = format!("/v2/busybox/manifests/{tag} ");
        self.log().lines().filter(|l| l.contains(&path) && l.contains("UpstreamClient(shoal/")).count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            for _ in 0..50 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Untags the image names the test made, however it ends (the image itself stays: it is the test
/// image's, under its own name).
struct LocalTags(Vec<String>);

impl Drop for LocalTags {
    fn drop(&mut self) {
        for tag in &self.0 {
            let _ = Command::new("docker").args(["rmi", tag]).output();
        }
    }
}

fn run(command: &mut Command, what: &str) -> Output {
    let output = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

/// `docker --config DIR …`, so the test never touches the user's own Docker config.
fn docker(config: &Path, args: &[&str]) -> Output {
    run(Command::new("docker").arg("--config").arg(config).args(args), &format!("docker {}", args.join(" ")))
}

fn image_present(image: &str) -> bool {
    Command::new("docker").args(["image", "inspect", image]).output().is_ok_and(|o| o.status.success())
}

/// A Docker client config dir whose `auths` entry for `registry` says `user:password`.
fn docker_config(registry: &str, password: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let auth = STANDARD.encode(format!("{USER}:{password}"));
    let config = serde_json::json!({ "auths": { registry: { "auth": auth } } });
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("write config.json");
    dir
}

/// The tasks of `service` as `service ps --no-trunc --format json` shows them.
fn tasks(manager: &DaemonProc, service: &str) -> Vec<serde_json::Value> {
    json_lines(&manager.shoal(&["service", "ps", service, "--no-trunc", "--format", "json"]).unwrap_or_default())
}

/// Wait until a task of `service` is rejected with `error` in `service ps`.
fn wait_rejected(manager: &DaemonProc, service: &str, error: &str) {
    let quoted = serde_json::Value::String(format!("\"{error}\""));
    wait_for(Duration::from_secs(60), &format!("a task of {service} rejected with {error:?}"), || {
        let tasks = tasks(manager, service);
        tasks
            .iter()
            .any(|t| t["CurrentState"].as_str().unwrap_or_default().starts_with("Rejected") && t["Error"] == quoted)
            .then_some(())
    });
}

/// `service create` without `-d`, given `within` to show its progress; it must not converge. Returns
/// what it printed.
fn create_failing(manager: &DaemonProc, args: &[&str], within: Duration) -> String {
    let mut create = vec!["service", "create"];
    create.extend_from_slice(args);
    match manager.shoal_within(&create, within) {
        Ok(out) => panic!("`shoal {}` converged, but its task cannot pull: {out}", create.join(" ")),
        Err(progress) => progress,
    }
}

fn data_file(daemon: &DaemonProc, name: &str) -> PathBuf {
    daemon.dir.path().join("data").join(name)
}

#[test]
fn images_are_pulled_from_a_loopback_registry_with_the_clients_credentials() {
    require_docker();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    // Unique, so finding it anywhere is a leak and nothing else.
    let password = format!("pw-{}-{nanos}-?>~", std::process::id());
    let registry = Registry::start(&password);
    let reg = registry.addr.clone();
    let good = docker_config(&reg, &password);
    let wrong = docker_config(&reg, "not-the-password");
    let no_credentials = tempfile::tempdir().expect("temp dir");

    // The test image, pushed under two names, then untagged here: only the registry has them.
    let (ok_image, denied_image, missing_image) =
        (format!("{reg}/busybox:ok"), format!("{reg}/busybox:denied"), format!("{reg}/busybox:missing"));
    let _tags = LocalTags(vec![ok_image.clone(), denied_image.clone()]);
    for image in [&ok_image, &denied_image] {
        docker(good.path(), &["tag", TEST_IMAGE, image]);
        docker(good.path(), &["push", image]);
        docker(good.path(), &["rmi", image]);
        assert!(!image_present(image), "{image} must be missing locally before shoal pulls it");
    }

    let _containers = ["reg-ok", "reg-denied", "reg-anonymous", "reg-missing"].map(CleanupContainers);
    // The daemons' defaults: pull when missing.
    let mut manager = DaemonProc::spawn_args("reg-m", "127.0.0.150", "docker", &[], Some(CLI_DEADLINE));
    let worker = DaemonProc::spawn_args("reg-w", "127.0.0.151", "docker", &[], Some(CLI_DEADLINE));
    manager.swarm_init();
    let token = manager.must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
    worker.swarm_join(&token, &manager.addr, "worker");
    let set_config = |manager: &mut DaemonProc, dir: &Path| {
        manager.cli_env = vec![("DOCKER_CONFIG".into(), dir.display().to_string())];
    };

    // 1. With the client's credentials: one node pulls and runs the task.
    set_config(&mut manager, good.path());
    let created = manager.create_service(&[
        "--name",
        "reg-ok",
        "--with-registry-auth",
        "--no-resolve-image",
        "--replicas-max-per-node",
        "1",
        "--stop-grace-period",
        "1s",
        &ok_image,
        "sleep",
        "600",
    ]);
    assert!(created.contains("verify: Service converged"), "{created}\n{}", manager.log());
    assert!(image_present(&ok_image), "the node pulled {ok_image}");
    let first_pulls = registry.shoal_pulls("ok");
    assert!(first_pulls >= 1, "the registry saw shoal's pull:\n{}", registry.log());
    let first = running_by_node(&manager, "reg-ok").expect("service ps");
    assert_eq!(first.values().sum::<usize>(), 1, "{first:?}");

    // The image goes again (the task keeps running on its image id); a second replica must land on
    // the other node (one per node), which pulls it in its turn.
    docker(good.path(), &["rmi", &ok_image]);
    assert!(!image_present(&ok_image));
    manager.must(&["service", "scale", "reg-ok=2"]);
    wait_for(Duration::from_secs(90), "reg-ok running on both nodes", || {
        let counts = running_by_node(&manager, "reg-ok")?;
        (counts.get("reg-m") == Some(&1) && counts.get("reg-w") == Some(&1)).then_some(())
    });
    assert!(image_present(&ok_image), "the second node pulled {ok_image}");
    assert!(registry.shoal_pulls("ok") > first_pulls, "a second pull reached the registry:\n{}", registry.log());

    // The credentials are in no answer.
    let basic = STANDARD.encode(format!("{USER}:{password}"));
    for args in [
        &["service", "inspect", "reg-ok"][..],
        &["service", "inspect", "--pretty", "reg-ok"],
        &["service", "ls", "--format", "json"],
        &["service", "ps", "reg-ok", "--no-trunc", "--format", "json"],
        &["service", "inspect", "--format", "{{json .Spec}}", "reg-ok"],
    ] {
        let out = manager.must(args);
        assert!(
            !out.contains(&password) && !out.contains(&basic),
            "`shoal {}` shows the credentials: {out}",
            args.join(" ")
        );
    }

    // 2. Wrong credentials: Docker's error, in the progress display and in `service ps`.
    set_config(&mut manager, wrong.path());
    let progress = create_failing(
        &manager,
        &["--name", "reg-denied", "--with-registry-auth", "--stop-grace-period", "1s", &denied_image, "sleep", "600"],
        Duration::from_secs(20),
    );
    assert!(progress.contains("1/1: unauthorized: authentication required"), "{progress}");
    wait_rejected(&manager, "reg-denied", "unauthorized: authentication required");
    let table = manager.must(&["service", "ps", "reg-denied", "--no-trunc"]);
    assert!(table.contains("\"unauthorized: authentication required\""), "{table}");
    assert!(!image_present(&denied_image));

    // No credentials at all (no --with-registry-auth): the engine's words for an anonymous pull.
    set_config(&mut manager, no_credentials.path());
    manager.must(&["service", "create", "-d", "--name", "reg-anonymous", &denied_image, "sleep", "600"]);
    let anonymous = format!("Head \"http://{reg}/v2/busybox/manifests/denied\": no basic auth credentials");
    wait_rejected(&manager, "reg-anonymous", &anonymous);
    manager.must(&["service", "rm", "reg-anonymous"]);

    // The right credentials, given later, are what the next task pulls with.
    set_config(&mut manager, good.path());
    manager
        .shoal_within(&["service", "update", "--with-registry-auth", "reg-denied"], Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("service update --with-registry-auth: {e}\n{}", manager.log()));
    wait_for(Duration::from_secs(60), "reg-denied running with the right credentials", || {
        (running_by_node(&manager, "reg-denied")?.values().sum::<usize>() == 1).then_some(())
    });
    assert!(image_present(&denied_image));

    // 3. A tag the registry does not have: Swarm's "No such image".
    let progress = create_failing(
        &manager,
        &["--name", "reg-missing", "--with-registry-auth", &missing_image, "sleep", "600"],
        Duration::from_secs(20),
    );
    let no_such = format!("No such image: {missing_image}");
    assert!(progress.contains(&format!("1/1: {no_such}")), "{progress}");
    wait_rejected(&manager, "reg-missing", &no_such);
    let table = manager.must(&["service", "ps", "reg-missing"]);
    assert!(table.contains("\"No such image: 127.0.0.1:"), "the ERROR column, truncated as Docker's: {table}");

    // 4. Nothing the daemons wrote holds the password.
    for daemon in [&manager, &worker] {
        let events = std::fs::read_to_string(data_file(daemon, "events.jsonl")).expect("events.jsonl");
        if daemon.hostname == manager.hostname {
            assert!(events.contains("task.state"), "the leader's trace has the tasks' states");
        }
        for (what, text) in [("events.jsonl", events), ("the daemon log", daemon.log())] {
            assert!(
                !text.contains(&password) && !text.contains(&basic),
                "{what} of {} holds the credentials",
                daemon.hostname
            );
        }
    }
    for service in ["reg-ok", "reg-denied", "reg-missing"] {
        manager.must(&["service", "rm", service]);
    }
}
