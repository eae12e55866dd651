//! `swarm ca --rotate` end to end (DESIGN §6b): real `shoal daemon` processes on 127.0.0.111–114 with
//! the process executor. A three-node swarm (two managers, one worker) rotates its root CA while a
//! service runs: the CLI shows the nodes converging and prints the new root; the service's tasks
//! run throughout (same tasks, never replaced); every node ends up trusting the new root alone and
//! stays `Ready`; the join tokens carry the new digest, so a node joining with a fresh token gets in
//! and the old token is refused with Swarm's "remote CA does not match fingerprint"; a restarted
//! node comes back under its renewed certificate.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use shoal::tls::{bundle_digests, ca_digest};

use common::{json_lines, wait_for, DaemonProc};

const TASK: &[&str] = &["process", "sh", "-c", "echo started; while kill -0 $PPID 2>/dev/null; do sleep 1; done"];

fn ip(n: u8) -> String {
    format!("127.0.0.{}", 110 + n)
}

fn ca_pem(node: &DaemonProc) -> String {
    std::fs::read_to_string(node.dir.path().join("data/certificates/ca.pem")).expect("ca.pem")
}

/// (task id, node) of every task of `service` and whether it is running.
fn tasks(manager: &DaemonProc, service: &str) -> Vec<(String, String, bool)> {
    json_lines(&manager.must(&["service", "ps", service, "--no-trunc", "--format", "json"]))
        .iter()
        .map(|row| {
            (
                row["ID"].as_str().unwrap_or_default().to_string(),
                row["Node"].as_str().unwrap_or_default().to_string(),
                row["CurrentState"].as_str().unwrap_or_default().starts_with("Running"),
            )
        })
        .collect()
}

fn all_ready(manager: &DaemonProc, count: usize) -> Option<()> {
    let nodes = json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?);
    (nodes.len() == count && nodes.iter().all(|n| n["Status"] == "Ready")).then_some(())
}

#[test]
fn a_root_rotation_renews_every_node_while_tasks_keep_running() {
    let m1 = DaemonProc::spawn_with("car-m1", &ip(1), "process", None);
    let m2 = DaemonProc::spawn_with("car-m2", &ip(2), "process", None);
    let mut w1 = DaemonProc::spawn_with("car-w1", &ip(3), "process", None);
    let w2 = DaemonProc::spawn_with("car-w2", &ip(4), "process", None);
    m1.swarm_init();
    let manager_token = m1.must(&["swarm", "join-token", "-q", "manager"]).trim().to_string();
    let old_token = m1.must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
    m2.swarm_join(&manager_token, &m1.addr, "manager");
    w1.swarm_join(&old_token, &m1.addr, "worker");
    wait_for(Duration::from_secs(30), "three nodes ready", || all_ready(&m1, 3));

    let old_root = ca_pem(&m1);
    let old_digest = ca_digest(&old_root).expect("the root parses");
    assert_eq!(m1.must(&["swarm", "ca"]).trim(), old_root.trim(), "`swarm ca` prints the root certificate");
    let err = m1.shoal(&["swarm", "ca", "--cert-expiry", "48h"]).unwrap_err();
    assert!(err.contains("`--cert-expiry` flag requires the `--rotate` flag to update the CA"), "{err}");
    let err =
        m1.shoal(&["swarm", "ca", "--rotate", "--external-ca", "protocol=cfssl,url=https://ca.example"]).unwrap_err();
    assert!(err.contains("`--external-ca` is not supported"), "{err}");

    let mut create = vec!["--name", "car-web", "--replicas", "3"];
    create.extend_from_slice(TASK);
    m1.create_service(&create);
    wait_for(Duration::from_secs(60), "three tasks running", || {
        let t = tasks(&m1, "car-web");
        (t.len() == 3 && t.iter().all(|(_, _, running)| *running)).then_some(())
    });
    let before: BTreeSet<(String, String)> =
        tasks(&m1, "car-web").into_iter().map(|(id, node, _)| (id, node)).collect();

    // The rotation, watched to the end as Docker's CLI does.
    let output = m1
        .shoal_within(&["swarm", "ca", "--rotate"], Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("swarm ca --rotate: {e}\n--- m1 ---\n{}\n--- w1 ---\n{}", m1.log(), w1.log()));
    assert!(output.contains("  rotated TLS certificates:  ["), "{output}");
    assert!(output.contains("] 3/3 nodes\n  rotated CA certificates:   ["), "{output}");
    let new_root = output[output.find("-----BEGIN CERTIFICATE-----").expect("the new root is printed")..].to_string();
    let new_digest = ca_digest(&new_root).expect("the new root parses");
    assert_ne!(new_digest, old_digest);
    assert!(output.contains(&format!("desired root digest: {new_digest}")), "{output}");
    assert_eq!(m2.must(&["swarm", "ca"]).trim(), new_root.trim(), "every manager shows the new root");

    // Every node trusts the new root alone now, and kept talking: all Ready.
    for node in [&m1, &m2, &w1] {
        assert_eq!(bundle_digests(&ca_pem(node)), vec![new_digest.clone()], "{}'s trust", node.hostname);
    }
    wait_for(Duration::from_secs(10), "three nodes ready after the rotation", || all_ready(&m1, 3));
    let tls = m1.must(&["node", "ls", "--format", "{{.Hostname}} {{.TLSStatus}}"]);
    assert_eq!(tls, "car-m1 Ready\ncar-m2 Ready\ncar-w1 Ready\n", "every node holds what the swarm wants");

    // The tasks ran throughout: the same ones, none replaced.
    let after = tasks(&m1, "car-web");
    assert_eq!(after.len(), 3, "no task was replaced: {after:?}");
    assert!(after.iter().all(|(_, _, running)| *running), "{after:?}");
    let after: BTreeSet<(String, String)> = after.into_iter().map(|(id, node, _)| (id, node)).collect();
    assert_eq!(after, before);

    // Join tokens carry the new digest; the old one is refused for its digest.
    let new_token = m1.must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
    assert!(new_token.starts_with(&format!("SWMTKN-1-{new_digest}-")), "{new_token}");
    let refused = w2
        .shoal(&["swarm", "join", "--token", &old_token, "--advertise-addr", &w2.addr, &m1.addr])
        .expect_err("the old token names a root the swarm no longer has");
    assert!(refused.contains(&format!("remote CA does not match fingerprint. Expected: {old_digest}")), "{refused}");
    w2.swarm_join(&new_token, &m2.addr, "worker");
    wait_for(Duration::from_secs(30), "four nodes ready", || all_ready(&m1, 4));
    assert_eq!(bundle_digests(&ca_pem(&w2)), vec![new_digest.clone()]);

    // A node restarted after the rotation comes back under its renewed certificate.
    assert!(w1.terminate(Duration::from_secs(10)), "w1 stops on SIGTERM");
    w1.start();
    wait_for(Duration::from_secs(30), "w1 ready again", || {
        let nodes = json_lines(&m1.shoal(&["node", "ls", "--format", "json"]).ok()?);
        let w1 = nodes.iter().find(|n| n["Hostname"] == "car-w1")?;
        (w1["Status"] == "Ready").then_some(())
    });
    assert!(!w1.log().contains("certificate verify failed"), "{}", w1.log());
}
