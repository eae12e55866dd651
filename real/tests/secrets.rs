//! Secrets and configs end to end on the Docker engine: real `shoal daemon`s (two managers, one
//! worker, 127.0.0.130–132) driven by the `shoal` CLI as a user would.
//!
//! - `secret create` / `config create` from files; `secret ls` in Docker's columns; `inspect` shows a
//!   config's data (base64) and never a secret's.
//! - A service with `--secret source=…,uid=,gid=,mode=0400` and `--config …,mode=0440`: inside the
//!   container (`shoal-test/busybox:latest`) the files are at `/run/secrets/<target>` and the
//!   config's target, with that owner and mode (`stat -c`), hold the values, and are read-only.
//! - On the host the values live only on the tmpfs under `/dev/shm/shoal-files/`, and go when the
//!   service does; no file of any daemon's data dir (raft log, snapshots, events, daemon log)
//!   holds a secret's value, as written or base64.
//! - The second manager got the key when it joined: it seals a secret itself.
//! - `secret rm` of one in use is refused naming the service; `stack deploy` creates a file-backed
//!   secret and refuses a missing external one in Docker's words; `stack rm` removes it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{json_lines, require_docker, wait_for, CleanupContainers, DaemonProc};

/// Values unique to this run (a run killed half-way may leave its tmpfs files for a minute).
fn secret() -> String {
    format!("e2e-secret-value-5b8d-{}", std::process::id())
}
fn stack_secret() -> String {
    format!("e2e-stack-secret-c41e-{}", std::process::id())
}
fn docker_secret() -> String {
    format!("e2e-docker-cli-secret-77aa-{}", std::process::id())
}
const CONFIG: &str = "listen 8080 # e2e config";

/// Every file under `dir` whose bytes contain `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// The forms a value could be written in: as is, and base64.
fn forms(value: &str) -> Vec<Vec<u8>> {
    vec![value.as_bytes().to_vec(), shoal_core::secrets::encode(value.as_bytes()).into_bytes()]
}

fn find_file(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

#[test]
fn secret_and_config_files_in_a_docker_container() {
    require_docker();
    let (value, stack_value) = (secret(), stack_secret());
    let (value, stack_value) = (value.as_str(), stack_value.as_str());
    let _cleanup = CleanupContainers("sec-web");
    let _cleanup_stack = CleanupContainers("sst_web");
    let manager = DaemonProc::spawn("sec-m1", "127.0.0.130", "docker");
    let manager2 = DaemonProc::spawn("sec-m2", "127.0.0.131", "docker");
    let worker = DaemonProc::spawn("sec-w", "127.0.0.132", "docker");
    manager.swarm_init();
    let manager_token = manager.must(&["swarm", "join-token", "-q", "manager"]).trim().to_string();
    manager2.swarm_join(&manager_token, &manager.addr, "manager");
    let token = manager.must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
    worker.swarm_join(&token, &manager.addr, "worker");
    wait_for(Duration::from_secs(30), "3 ready nodes", || {
        let nodes = json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?);
        (nodes.len() == 3 && nodes.iter().all(|n| n["Status"] == "Ready")).then_some(())
    });

    let files = tempfile::tempdir().unwrap();
    let secret_file = files.path().join("db_pw.txt");
    std::fs::write(&secret_file, value).unwrap();
    let config_file = files.path().join("app.conf");
    std::fs::write(&config_file, CONFIG).unwrap();
    let (secret_path, config_path) = (secret_file.to_str().unwrap(), config_file.to_str().unwrap());

    let id = manager.must(&["secret", "create", "--label", "team=db", "db_pw", secret_path]);
    assert_eq!(id.trim().len(), 25, "secret create prints the id: {id}");
    let err = manager.shoal(&["secret", "create", "db_pw", secret_path]).unwrap_err();
    assert!(err.contains("secret db_pw already exists"), "{err}");
    let err = manager.shoal(&["secret", "create", "--template-driver", "jinja", "other", secret_path]).unwrap_err();
    assert!(err.contains("unsupported template driver \"jinja\""), "{err}");
    manager.must(&["config", "create", "app_conf", config_path]);
    // A golang template, expanded on the node for each task.
    let template_file = files.path().join("tmpl.conf");
    std::fs::write(&template_file, "{{.Service.Name}} on {{.Node.Hostname}}").unwrap();
    manager.must(&["config", "create", "--template-driver", "golang", "tconf", template_file.to_str().unwrap()]);
    // The second manager was handed the key when it joined: it seals a value itself.
    manager2.must(&["secret", "create", "made_on_m2", secret_path]);
    // Each manager keeps it encrypted with its own data key (DESIGN §6c): compare what opens.
    let key = |d: &DaemonProc| {
        let path = find_file(d.dir.path(), "secrets.key").expect("a key file");
        let dek = std::fs::read(path.with_file_name("dek.json")).expect("dek.json");
        let dek = shoal_core::autolock::plain_dek(&dek).expect("a plain data key");
        shoal_core::autolock::open_file(&dek, "secrets.key", &std::fs::read(&path).unwrap()).expect("the key opens")
    };
    assert_eq!(key(&manager), key(&manager2), "one swarm, one key");
    assert!(find_file(worker.dir.path(), "secrets.key").is_none(), "workers never hold the key");

    let ls = manager.must(&["secret", "ls"]);
    let header = ls.lines().next().unwrap_or_default();
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(columns, ["ID", "NAME", "DRIVER", "CREATED", "UPDATED"], "{ls}");
    assert!(ls.lines().any(|l| l.starts_with(id.trim()) && l.contains(" db_pw ")), "{ls}");
    let labelled = manager.must(&["secret", "ls", "--filter", "label=team=db", "--format", "{{.Name}}"]);
    assert_eq!(labelled, "db_pw\n");
    assert_eq!(manager.must(&["secret", "ls", "-f", "name=made", "--format", "{{.Name}}"]), "made_on_m2\n");
    let config_ls = manager.must(&["config", "ls"]);
    assert_eq!(
        config_ls.lines().next().unwrap_or_default().split_whitespace().collect::<Vec<_>>(),
        ["ID", "NAME", "CREATED", "UPDATED"]
    );
    let inspected = manager.must(&["secret", "inspect", "db_pw"]);
    assert!(inspected.contains("\"Name\": \"db_pw\"") && inspected.contains("\"team\": \"db\""), "{inspected}");
    assert!(!inspected.contains("Data") && !inspected.contains(value), "{inspected}");
    let config_data = manager.must(&["config", "inspect", "--format", "{{.Spec.Data}}", "app_conf"]);
    assert_eq!(config_data.trim(), shoal_core::secrets::encode(CONFIG.as_bytes()));
    let pretty = manager.must(&["config", "inspect", "--pretty", "app_conf"]);
    assert!(pretty.contains(&format!("Data:\n{CONFIG}")), "{pretty}");
    let err = manager.shoal(&["secret", "inspect", "nosuch"]).unwrap_err();
    assert!(err.contains("No such secret: nosuch"), "{err}");

    // The task prints what it sees, then sleeps.
    let script = "stat -c 'secret %a %u %g' /run/secrets/db_pw; echo \"value $(cat /run/secrets/db_pw)\"; \
                  stat -c 'config %a %u %g' /etc/app.conf; echo \"config $(cat /etc/app.conf)\"; \
                  echo \"tmpl $(cat /tmpl.conf)\"; \
                  (echo x > /run/secrets/db_pw) 2>/dev/null && echo writable || echo read-only; \
                  echo done; exec sleep 600";
    let constraint = format!("node.hostname=={}", worker.hostname);
    let created = manager.create_service(&[
        "--name",
        "sec-web",
        "--constraint",
        &constraint,
        "--stop-grace-period",
        "1s",
        "--secret",
        "source=db_pw,target=db_pw,uid=33,gid=44,mode=0400",
        "--config",
        "source=app_conf,target=/etc/app.conf,mode=0440",
        "--config",
        "source=tconf,target=/tmpl.conf",
        "shoal-test/busybox:latest",
        "sh",
        "-c",
        script,
    ]);
    assert!(created.ends_with("verify: Service converged\n"), "{created}\n{}", worker.log());
    let logs = wait_for(Duration::from_secs(30), "the task's report", || {
        let logs = manager.shoal(&["service", "logs", "--raw", "sec-web"]).ok()?;
        logs.contains("done").then_some(logs)
    });
    let lines: Vec<&str> = logs.lines().map(str::trim).collect();
    let expanded = format!("tmpl sec-web on {}", worker.hostname);
    for want in [
        "secret 400 33 44",
        &format!("value {value}"),
        "config 440 0 0",
        &format!("config {CONFIG}"),
        &expanded,
        "read-only",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in the task's output:\n{logs}");
    }
    let pretty = manager.must(&["service", "inspect", "--pretty", "sec-web"]);
    assert!(pretty.contains("Configs:\n Target:\t/etc/app.conf\n  Source:\tapp_conf"), "{pretty}");
    assert!(pretty.contains("Secrets:\n Target:\tdb_pw\n  Source:\tdb_pw"), "{pretty}");

    // On the host: only the tmpfs holds the value, on the worker's side.
    let tmpfs = shoal::task_files::default_root();
    assert_eq!(files_holding(&tmpfs, value.as_bytes()).len(), 1, "one file on the tmpfs under {}", tmpfs.display());
    for daemon in [&manager, &manager2, &worker] {
        for form in forms(value) {
            let leaked = files_holding(daemon.dir.path(), &form);
            assert!(leaked.is_empty(), "{}'s data dir holds the secret: {leaked:?}", daemon.hostname);
        }
    }

    let err = manager.shoal(&["secret", "rm", "db_pw"]).unwrap_err();
    assert!(err.contains("secret 'db_pw' is in use by the following service: sec-web"), "{err}");
    let err = manager.shoal(&["config", "rm", "app_conf"]).unwrap_err();
    assert!(err.contains("config 'app_conf' is in use by the following service: sec-web"), "{err}");
    let err = manager
        .shoal_within(
            &["service", "create", "--name", "nope", "--secret", "missing", "shoal-test/busybox:latest"],
            Duration::from_secs(30),
        )
        .unwrap_err();
    assert!(err.contains("secret not found: missing"), "{err}");

    // A stack: a file secret relative to the compose file, and a missing external one refused.
    std::fs::write(files.path().join("site_key.txt"), stack_value).unwrap();
    let compose = files.path().join("stack.yml");
    std::fs::write(
        &compose,
        "version: \"3.8\"\nservices:\n  web:\n    image: shoal-test/busybox:latest\n    command: [\"sleep\", \"600\"]\n    \
         secrets: [site_key]\nsecrets:\n  site_key:\n    file: ./site_key.txt\n",
    )
    .unwrap();
    let missing = files.path().join("missing.yml");
    std::fs::write(
        &missing,
        "version: \"3.8\"\nservices:\n  web:\n    image: shoal-test/busybox:latest\n    secrets: [gone]\nsecrets:\n  gone:\n    external: true\n",
    )
    .unwrap();
    let err = manager.shoal(&["stack", "deploy", "-c", missing.to_str().unwrap(), "bad"]).unwrap_err();
    assert!(err.contains("service web: secret not found: gone"), "{err}");
    let deployed = manager.must(&["stack", "deploy", "-c", compose.to_str().unwrap(), "sst"]);
    let deployed: Vec<&str> = deployed.lines().collect();
    assert_eq!(deployed, ["Creating secret sst_site_key", "Creating network sst_default", "Creating service sst_web"]);
    let removed = manager.must(&["stack", "rm", "sst"]);
    let removed: Vec<&str> = removed.lines().collect();
    assert_eq!(removed, ["Removing service sst_web", "Removing secret sst_site_key", "Removing network sst_default"]);

    // Once the service is gone, so are its files; then the secret may go too.
    manager.must(&["service", "rm", "sec-web"]);
    wait_for(Duration::from_secs(60), "the task's files removed from the tmpfs", || {
        files_holding(&tmpfs, value.as_bytes()).is_empty().then_some(())
    });
    wait_for(Duration::from_secs(30), "secret rm once unused", || manager.shoal(&["secret", "rm", "db_pw"]).ok());
    for daemon in [&manager, &manager2, &worker] {
        for value in [value, stack_value] {
            for form in forms(value) {
                let leaked = files_holding(daemon.dir.path(), &form);
                assert!(leaked.is_empty(), "{}'s data dir holds a secret: {leaked:?}", daemon.hostname);
            }
        }
    }
}

/// Docker's own CLI against shoal's Engine API socket (127.0.0.133): `docker secret create|ls|
/// inspect|rm`, `docker config inspect`, and `docker service create --secret --config` whose task
/// reads both files.
#[test]
fn the_docker_cli_manages_secrets_and_configs() {
    require_docker();
    let value = docker_secret();
    let value = value.as_str();
    let _cleanup = CleanupContainers("dsec");
    let api_dir = tempfile::tempdir().unwrap();
    let api = api_dir.path().join("docker.sock");
    let daemon = DaemonProc::spawn_args(
        "dsec-m",
        "127.0.0.133",
        "docker",
        &["--pull", "never", "--api-socket", api.to_str().unwrap()],
        Some(common::CLI_DEADLINE),
    );
    daemon.swarm_init();
    let config_dir = tempfile::tempdir().unwrap();
    let docker = |args: &[&str]| -> Result<String, String> {
        let output = std::process::Command::new("timeout")
            .arg("120")
            .arg("docker")
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", api.display()))
            .env("DOCKER_CONFIG", config_dir.path())
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_API_VERSION")
            .output()
            .expect("run the docker CLI");
        let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
        if output.status.success() {
            Ok(text(&output.stdout))
        } else {
            Err(format!("stderr: {} stdout: {}", text(&output.stderr), text(&output.stdout)))
        }
    };
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("pw"), value).unwrap();
    std::fs::write(files.path().join("conf"), CONFIG).unwrap();
    let id = docker(&["secret", "create", "--label", "k=v", "pw", files.path().join("pw").to_str().unwrap()]).unwrap();
    assert_eq!(id.trim().len(), 25, "{id}");
    docker(&["config", "create", "conf", files.path().join("conf").to_str().unwrap()]).unwrap();
    let ls = docker(&["secret", "ls", "--format", "{{.Name}} {{.Labels}}"]).unwrap();
    assert_eq!(ls.trim(), "pw k=v");
    let inspected = docker(&["secret", "inspect", "pw"]).unwrap();
    assert!(inspected.contains("\"Name\": \"pw\"") && !inspected.contains(value), "{inspected}");
    let data = docker(&["config", "inspect", "--format", "{{json .Spec.Data}}", "conf"]).unwrap();
    assert_eq!(data.trim(), format!("\"{}\"", shoal_core::secrets::encode(CONFIG.as_bytes())));
    let err = docker(&["secret", "inspect", "nosuch"]).unwrap_err();
    assert!(err.contains("nosuch"), "{err}");

    let created = docker(&[
        "service",
        "create",
        "-d",
        "--name",
        "dsec",
        "--stop-grace-period",
        "1s",
        "--secret",
        "source=pw,mode=0400",
        "--config",
        "source=conf,target=/etc/conf",
        "shoal-test/busybox:latest",
        "sh",
        "-c",
        "stat -c 'secret %a' /run/secrets/pw; echo \"value $(cat /run/secrets/pw)\"; echo \"conf $(cat /etc/conf)\"; exec sleep 600",
    ])
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    assert_eq!(created.trim().len(), 25, "{created}");
    let logs = wait_for(Duration::from_secs(60), "the task's report", || {
        let logs = daemon.shoal(&["service", "logs", "--raw", "dsec"]).ok()?;
        logs.contains("conf ").then_some(logs)
    });
    let lines: Vec<&str> = logs.lines().map(str::trim).collect();
    for want in ["secret 400", &format!("value {value}"), &format!("conf {CONFIG}")] {
        assert!(lines.contains(&want), "missing {want:?}:\n{logs}");
    }
    let err = docker(&["secret", "rm", "pw"]).unwrap_err();
    assert!(err.contains("secret 'pw' is in use by the following service: dsec"), "{err}");
    docker(&["service", "rm", "dsec"]).unwrap();
    let tmpfs = shoal::task_files::default_root();
    wait_for(Duration::from_secs(60), "the task's files removed from the tmpfs", || {
        files_holding(&tmpfs, value.as_bytes()).is_empty().then_some(())
    });
    wait_for(Duration::from_secs(30), "secret rm once unused", || docker(&["secret", "rm", "pw"]).ok());
    assert_eq!(docker(&["secret", "ls", "-q"]).unwrap().trim(), "");
}
