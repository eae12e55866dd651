//! Secrets and configs in the simulator.
//!
//! - `scenarios/t82_secrets_configs.yaml`, run as a user runs it (`shoal-sim child … --trace-dir`):
//!   the values reach only the nodes whose tasks use them (the dispatcher's `secrets.sent` and the
//!   runner's `task.files` events name the nodes), and no secret value appears anywhere in the trace,
//!   neither as written nor base64-encoded.
//! - In process: the file a task gets holds the value with the mode asked for; no other node's
//!   executor got anything; the replicated store (what raft logs and snapshots) never holds the value.
#![cfg(madsim)]

use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_core::api::{parse_file_reference, FileKind, SecretSpec, ServiceSpec};
use shoal_core::control::{ControlRequest, ControlResponse, FileData};
use shoal_sim::cluster::{ClusterShape, SimCluster};

mod common;

const SCENARIO_SECRETS: [&str; 2] = ["s3cr3t-sim-value-7f1c", "stack-secret-value-93ab"];

fn scenario() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/t82_secrets_configs.yaml")
}

/// The ways a value could leak into text: as written, base64 (as payloads carry it), and JSON's
/// array of bytes.
fn leaks(value: &str) -> Vec<String> {
    vec![
        value.to_string(),
        shoal_core::secrets::encode(value.as_bytes()),
        serde_json::to_string(&value.as_bytes().to_vec()).unwrap().trim_matches(['[', ']']).to_string(),
    ]
}

#[test]
fn scenario_secrets_reach_only_their_nodes_and_never_the_trace() {
    let dir = std::env::temp_dir().join(format!("shoal-secrets-trace-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_shoal-sim"))
        .arg("child")
        .arg(scenario())
        .args(["--seed", "1", "--trace-dir"])
        .arg(&dir)
        .output()
        .expect("run shoal-sim");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result = stdout.lines().find_map(|l| l.strip_prefix("SHOAL-SIM-RESULT ")).expect("a result line");
    let result: serde_json::Value = serde_json::from_str(result).unwrap();
    assert_eq!(result["result"], "ok", "{result}");
    let trace = std::fs::read_to_string(dir.join("t82_secrets_configs-seed1.jsonl")).expect("trace written");
    let _ = std::fs::remove_dir_all(&dir);

    for value in SCENARIO_SECRETS {
        for form in leaks(value) {
            assert!(!trace.contains(&form), "the trace holds secret {value:?} as {form:?}");
        }
    }
    let events: Vec<serde_json::Value> = trace.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let of_kind = |kind: &'static str| events.iter().filter(move |e| e["kind"] == kind);
    // Who got which file: worker-1 the service's, worker-2 the stack's, nobody else anything.
    let mut mounted: Vec<(String, String)> = of_kind("task.files")
        .flat_map(|e| {
            let node = e["node"].as_str().unwrap_or_default().to_string();
            e["fields"]["paths"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |p| (node.clone(), p.as_str().unwrap_or_default().to_string()))
        })
        .collect();
    mounted.sort();
    mounted.dedup();
    assert_eq!(
        mounted,
        [
            ("worker-1".to_string(), "/etc/app.conf".to_string()),
            ("worker-1".to_string(), "/run/secrets/db/password".to_string()),
            ("worker-2".to_string(), "/etc/site.conf".to_string()),
            ("worker-2".to_string(), "/run/secrets/site_key".to_string()),
        ]
    );
    let mut sent_to: Vec<&str> = of_kind("secrets.sent").filter_map(|e| e["fields"]["hostname"].as_str()).collect();
    sent_to.sort();
    sent_to.dedup();
    assert_eq!(sent_to, ["worker-1", "worker-2"], "values go only with the assignments of the nodes that use them");
}

#[madsim::test]
async fn a_task_gets_the_value_with_its_mode_and_the_store_only_a_sealed_one() {
    let cluster = SimCluster::start(ClusterShape { managers: 1, workers: 2 }).await.expect("cluster starts");
    let value = "in-process-secret-42";
    let create = ControlRequest::SecretCreate {
        spec: SecretSpec { name: "pw".into(), ..Default::default() },
        data: FileData(shoal_core::secrets::encode(value.as_bytes())),
    };
    cluster.control(create).await.expect("secret create");
    // A config made with `--template-driver golang` is expanded for each task on its node.
    let template = ControlRequest::ConfigCreate {
        spec: SecretSpec { name: "tmpl".into(), templating: "golang".into(), ..Default::default() },
        data: FileData(shoal_core::secrets::encode(b"svc={{.Service.Name}} node={{.Node.Hostname}}")),
    };
    cluster.control(template).await.expect("config create");
    let mut spec = ServiceSpec::new("app", "nginx:1.25");
    spec.task.configs.push(parse_file_reference(FileKind::Config, "tmpl").unwrap());
    spec.task.placement.constraints.push("node.hostname==worker-2".into());
    spec.task.secrets.push(parse_file_reference(FileKind::Secret, "source=pw,uid=33,gid=44,mode=0400").unwrap());
    cluster.control(ControlRequest::ServiceCreate { spec }).await.expect("service create");
    common::wait_until(&cluster, "app", "the task runs", 30, |c| common::running(c, "app").len() == 1).await;

    let executors = cluster.executors();
    let mut files = executors["worker-2"].files();
    assert_eq!(files.len(), 2, "{files:?}");
    files.sort_by(|a, b| a.1.path.cmp(&b.1.path));
    assert_eq!((files[1].1.path.as_str(), files[1].1.data.as_slice()), ("/tmpl", &b"svc=app node=worker-2"[..]));
    let file = &files[0].1;
    assert_eq!((file.path.as_str(), file.uid, file.gid, file.mode), ("/run/secrets/pw", 33, 44, 0o400));
    assert_eq!(file.data, value.as_bytes());
    for (host, executor) in &executors {
        if host != "worker-2" {
            assert!(executor.files().is_empty(), "{host} got files it runs no task for");
        }
    }
    // The store (what raft replicates and snapshots) holds the value sealed only.
    let state = cluster.store_of_leader().expect("a leader");
    let stored = serde_json::to_string(&state).unwrap();
    for form in leaks(value) {
        assert!(!stored.contains(&form), "the store holds the value as {form:?}");
    }
    // No answer carries it, nor even its sealed form.
    match cluster.control(ControlRequest::SecretInspect { secret: "pw".into() }).await {
        Ok(ControlResponse::Secret(secret)) => {
            assert_eq!(secret.spec.name, "pw");
            assert_eq!(secret.sealed, Default::default(), "inspect shows no sealed value");
        }
        other => panic!("secret inspect: {other:?}"),
    }
    match cluster.control(ControlRequest::SecretRemove { secret: "pw".into() }).await {
        Err(err) => assert_eq!(err.to_string(), "secret 'pw' is in use by the following service: app"),
        Ok(other) => panic!("removed while in use: {other:?}"),
    }
}

/// `POST /secrets|configs/{id}/update` (what `docker stack deploy` sends for a secret or config that
/// exists): labels change at the version read; the same value sent again is accepted; a new value,
/// name or template driver is refused in swarmkit's words; an old version is out of sequence.
#[madsim::test]
async fn secret_and_config_updates_change_labels_only() {
    let cluster = SimCluster::start(ClusterShape { managers: 1, workers: 1 }).await.expect("cluster starts");
    let data = |text: &str| FileData(shoal_core::secrets::encode(text.as_bytes()));
    let spec = |name: &str, label: &str| SecretSpec {
        name: name.into(),
        labels: [("team".to_string(), label.to_string())].into_iter().collect(),
        ..Default::default()
    };
    let create = ControlRequest::ConfigCreate { spec: spec("conf", "a"), data: data("v1") };
    cluster.control(create).await.expect("config create");
    let create = ControlRequest::SecretCreate { spec: spec("pw", "a"), data: data("s1") };
    cluster.control(create).await.expect("secret create");
    let config_version = |c: &SimCluster| {
        let state = c.store_of_leader().expect("a leader");
        state.configs.values().next().map(|c| (c.meta.version, c.spec.labels["team"].clone())).unwrap()
    };
    let (version, _) = config_version(&cluster);

    let update = |version: u64, spec: SecretSpec, data: Option<FileData>| ControlRequest::ConfigUpdate {
        config: "conf".into(),
        version,
        spec,
        data,
    };
    cluster.control(update(version, spec("conf", "b"), Some(data("v1")))).await.expect("same value, new label");
    let (newer, label) = config_version(&cluster);
    assert!(newer > version && label == "b", "the label changed: {newer} {label}");
    let err = cluster.control(update(newer, spec("conf", "c"), Some(data("v2")))).await.unwrap_err();
    assert_eq!(err.to_string(), "only updates to Labels are allowed");
    let err = cluster.control(update(newer, spec("renamed", "c"), None)).await.unwrap_err();
    assert_eq!(err.to_string(), "only updates to Labels are allowed");
    let err = cluster.control(update(version, spec("conf", "c"), None)).await.unwrap_err();
    assert!(err.to_string().contains("update out of sequence"), "{err}");
    assert_eq!(config_version(&cluster), (newer, "b".to_string()), "nothing refused changed anything");

    let secret_version = cluster.store_of_leader().unwrap().secrets.values().next().unwrap().meta.version;
    let update_secret = |data: &str| ControlRequest::SecretUpdate {
        secret: "pw".into(),
        version: secret_version,
        spec: spec("pw", "z"),
        data: Some(FileData(shoal_core::secrets::encode(data.as_bytes()))),
    };
    let err = cluster.control(update_secret("s2")).await.unwrap_err();
    assert_eq!(err.to_string(), "only updates to Labels are allowed");
    cluster.control(update_secret("s1")).await.expect("the value it holds, new labels");
    let state = cluster.store_of_leader().unwrap();
    assert_eq!(state.secrets.values().next().unwrap().spec.labels["team"], "z");
}
