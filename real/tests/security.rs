//! Security of a running swarm: real `shoal daemon` processes on loopback addresses (127.0.0.5x) with
//! the process executor, attacked the ways Swarm's own tests and threat model name — a wrong token, a
//! token of another swarm, a rotated token, a certificate from another CA, a worker's certificate used
//! on manager-only channels (and on another node's logs), a certificate renewal for a removed node,
//! an expired certificate, a node speaking for another, a removed node's certificate, garbled
//! frames. Each must be refused with an error that says why, and the swarm must work afterwards.
//!
//! The attacks that need a certificate use the files a daemon keeps in its data dir
//! (`certificates/`), exactly what an attacker who stole a node's disk would hold.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shoal::bootstrap::{RenewReply, RenewRequest};
use shoal::net::{
    read_frame, write_frame, Frame, Security, TcpConfig, TcpTransport, KIND_ERROR, KIND_REQUEST, PREFACE,
};
use shoal::tls::{ca_digest, cert_info, ClusterCa, NodeCert, TlsConfig};
use shoal_core::api::NodeRole;
use shoal_core::control::{ControlRequest, ControlResult};
use shoal_core::dispatcher::{DispatcherError, DispatcherRequest, DispatcherResponse, HeartbeatRequest};
use shoal_core::env::TransportError;
use shoal_core::logs::{LogsReply, LogsRequest};
use shoal_core::raft::{RaftRequest, RaftResponse};
use shoal_core::rpc::{self, CallError, Channel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{free_port, json_lines, wait_for, DaemonProc};

const CALL: Duration = Duration::from_secs(5);

impl DaemonProc {
    /// A process-executor daemon whose CLI calls run without a deadline.
    fn spawn_process(hostname: &str, ip: &str) -> DaemonProc {
        DaemonProc::spawn_with(hostname, ip, "process", None)
    }

    fn certs(&self) -> PathBuf {
        self.dir.path().join("data/certificates")
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.certs().join("ca.pem")).expect("ca.pem")
    }

    fn node_cert(&self) -> NodeCert {
        NodeCert {
            cert_pem: std::fs::read_to_string(self.certs().join("node.pem")).expect("node.pem"),
            key_pem: open_key(&self.dir.path().join("data/node/dek.json"), &self.certs().join("node-key.pem")),
        }
    }

    fn node_id(&self) -> String {
        let identity = std::fs::read(self.dir.path().join("data/node/node.json")).expect("node.json");
        let identity: serde_json::Value = serde_json::from_slice(&identity).expect("node.json is JSON");
        identity["node_id"].as_str().expect("node id").to_string()
    }

    fn init(&self) -> String {
        let init = self.must(&["swarm", "init", "--advertise-addr", &self.addr, "--dispatcher-heartbeat", "1s"]);
        assert!(init.starts_with("Swarm initialized"), "{init}");
        self.must(&["swarm", "join-token", "-q", "worker"]).trim().to_string()
    }

    fn join(&self, token: &str, manager: &DaemonProc) -> Result<String, String> {
        self.shoal(&["swarm", "join", "--token", token, "--advertise-addr", &self.addr, &manager.addr])
    }
}

fn transport_as(ip: &str, ca_pem: &str, node: &NodeCert) -> TcpTransport {
    let tls = TlsConfig::new(ca_pem, node).expect("TLS config from the node's files");
    let addr = format!("{ip}:{}", free_port(ip));
    TcpTransport::with_config(TcpConfig { security: Security::Tls(Arc::new(tls)), ..TcpConfig::new(addr) })
}

fn refusal(err: CallError) -> String {
    match err {
        CallError::BadRequest { reason, .. } => reason,
        other => panic!("expected the manager to refuse the request, got {other:?}"),
    }
}

fn assert_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    let actual = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode();
    assert_eq!(actual & 0o777, mode, "{}", path.display());
}

#[test]
fn a_swarm_refuses_strangers_impostors_and_removed_nodes() {
    let ip = |n: u8| format!("127.0.0.{}", 50 + n);
    let manager = DaemonProc::spawn_process("sec-m", &ip(1));
    let worker = DaemonProc::spawn_process("sec-w1", &ip(2));
    let doomed = DaemonProc::spawn_process("sec-w2", &ip(3));
    let stranger = DaemonProc::spawn_process("sec-other", &ip(4));
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");

    // `swarm init` made a CA; the token carries its real digest; keys are the owner's alone.
    let token = manager.init();
    let ca_pem = manager.ca_pem();
    let digest = ca_digest(&ca_pem).expect("the CA certificate parses");
    assert!(token.starts_with(&format!("SWMTKN-1-{digest}-")), "{token} does not carry the CA digest {digest}");
    assert_mode(&manager.certs().join("ca-key.pem"), 0o600);
    assert_mode(&manager.certs().join("node-key.pem"), 0o600);
    assert_mode(&manager.dir.path().join("data"), 0o700);

    // A malformed token, and a well-formed one with a secret the swarm never issued.
    let err = worker.join("foobaz", &manager).unwrap_err();
    assert!(err.contains("invalid join token"), "{err}");
    let forged = format!("{}{}", &token[..token.len() - 25], "a".repeat(25));
    let err = worker.join(&forged, &manager).unwrap_err();
    assert!(err.contains("A valid join token is necessary to join this cluster"), "{err}");
    assert_eq!(worker.must(&["info"]), " Swarm: inactive\n", "a refused join leaves the daemon inactive");

    // Another swarm's token: the joining node sees the manager's CA is not the token's, and stops
    // before it sends anything but the handshake.
    // (That other swarm is made with a shorter certificate validity; Swarm's minimum is an hour.)
    let short = ["swarm", "init", "--advertise-addr", &stranger.addr, "--cert-expiry"];
    let err = stranger.shoal(&[&short[..], &["30m"]].concat()).unwrap_err();
    assert!(err.contains("minimum certificate expiry time is: 1h0m0s"), "{err}");
    assert_eq!(stranger.must(&["info"]), " Swarm: inactive\n", "a refused init leaves nothing behind");
    assert!(stranger.must(&[&short[..], &["48h"]].concat()).starts_with("Swarm initialized"));
    let other_token = stranger.must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
    let info = cert_info(&stranger.node_cert().cert_pem).expect("a node certificate");
    assert_eq!(info.not_after - info.not_before, 49 * 3600, "48 h, backdated one: {info:?}");
    assert!(stranger.must(&["info"]).contains("   Expiry Duration: 2 days\n"));
    let other_digest = ca_digest(&stranger.ca_pem()).unwrap();
    let err = worker.join(&other_token, &manager).unwrap_err();
    assert!(err.contains(&format!("remote CA does not match fingerprint. Expected: {other_digest}")), "{err}");

    // Rotation: the old worker token is refused, the new one admits.
    let rotated = manager.must(&["swarm", "join-token", "--rotate", "worker"]);
    assert!(rotated.starts_with("Successfully rotated worker join token."), "{rotated}");
    let new_token = manager.must(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
    assert_ne!(new_token, token);
    let err = worker.join(&token, &manager).unwrap_err();
    assert!(err.contains("A valid join token is necessary to join this cluster"), "{err}");
    assert_eq!(worker.join(&new_token, &manager).unwrap(), "This node joined a swarm as a worker.\n");
    assert_eq!(doomed.join(&new_token, &manager).unwrap(), "This node joined a swarm as a worker.\n");
    // An attacker copies the second worker's certificate and key (used once the node is removed).
    let stolen = doomed.dir.path().join("stolen");
    std::fs::create_dir_all(&stolen).unwrap();
    for file in ["node.pem", "node-key.pem"] {
        std::fs::copy(doomed.certs().join(file), stolen.join(file)).unwrap();
    }
    std::fs::copy(doomed.dir.path().join("data/node/dek.json"), stolen.join("dek.json")).unwrap();
    assert!(!worker.certs().join("ca-key.pem").exists(), "a worker never holds the CA key");
    assert_mode(&worker.certs().join("node-key.pem"), 0o600);
    assert_eq!(worker.ca_pem(), ca_pem);
    wait_for(Duration::from_secs(30), "3 ready nodes", || {
        let nodes = json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?);
        (nodes.len() == 3 && nodes.iter().all(|n| n["Status"] == "Ready")).then_some(())
    });

    let worker_id = worker.node_id();
    let doomed_id = doomed.node_id();
    runtime.block_on(async {
        // A worker's certificate on the manager-only channels.
        let as_worker = transport_as(&ip(2), &ca_pem, &worker.node_cert());
        let err =
            rpc::call::<_, ControlResult>(&as_worker, &manager.addr, Channel::Control, &ControlRequest::Info, CALL)
                .await
                .unwrap_err();
        let reason = refusal(err);
        assert!(reason.contains(&format!("permission denied: node {worker_id} is a worker")), "{reason}");
        assert!(reason.contains("only managers may send Control requests"), "{reason}");
        let propose = RaftRequest::Propose { actions: vec![] };
        let err =
            rpc::call::<_, RaftResponse>(&as_worker, &manager.addr, Channel::Raft, &propose, CALL).await.unwrap_err();
        assert!(refusal(err).contains("only managers may send Raft requests"));

        // A node speaks only for itself on the dispatcher.
        let heartbeat = DispatcherRequest::Heartbeat(HeartbeatRequest {
            node_id: doomed_id.clone(),
            session_id: "s".into(),
            tls_info: None,
        });
        let err = rpc::call::<_, Result<DispatcherResponse, DispatcherError>>(
            &as_worker,
            &manager.addr,
            Channel::Dispatcher,
            &heartbeat,
            CALL,
        )
        .await
        .unwrap_err();
        let reason = refusal(err);
        assert!(reason.contains(&format!("node {worker_id} cannot speak for node {doomed_id}")), "{reason}");

        // Logs: only managers read a node's containers, on a manager (by its store) and on a worker
        // (by the manager ids its heartbeats brought).
        let logs = LogsRequest { service_id: "any".into(), task_ids: vec![], selection: Default::default() };
        let err = rpc::call::<_, LogsReply>(&as_worker, &manager.addr, Channel::Logs, &logs, CALL).await.unwrap_err();
        let reason = refusal(err);
        assert!(reason.contains(&format!("node {worker_id} is a worker; only managers may read")), "{reason}");
        let err = rpc::call::<_, LogsReply>(&as_worker, &doomed.addr, Channel::Logs, &logs, CALL).await.unwrap_err();
        let reason = refusal(err);
        assert!(reason.contains(&format!("node {worker_id} is not a manager this node knows of")), "{reason}");
        let as_manager = transport_as(&ip(1), &ca_pem, &manager.node_cert());
        let answer = rpc::call::<_, LogsReply>(&as_manager, &doomed.addr, Channel::Logs, &logs, CALL).await;
        assert_eq!(answer, Ok(Ok(vec![])), "a worker serves its (empty) logs to a manager");

        // Renewal: a member gets a certificate for its own id and role only, from a manager only.
        let key = rcgen::KeyPair::generate().expect("a key");
        let renew = RenewRequest { public_key: key.public_key_raw().to_vec() };
        let reply: RenewReply =
            rpc::call(&as_worker, &manager.addr, Channel::Certificates, &renew, CALL).await.expect("an answer");
        let renewed = cert_info(&reply.expect("a renewed certificate").cert_pem).expect("a node certificate");
        assert_eq!((renewed.node_id.as_str(), renewed.role), (worker_id.as_str(), Some(NodeRole::Worker)));
        let garbled = RenewRequest { public_key: b"garbage".to_vec() };
        let reply: RenewReply =
            rpc::call(&as_worker, &manager.addr, Channel::Certificates, &garbled, CALL).await.expect("an answer");
        assert!(reply.unwrap_err().contains("invalid public key"));
        let err = rpc::call::<_, RenewReply>(&as_manager, &doomed.addr, Channel::Certificates, &renew, CALL)
            .await
            .unwrap_err();
        assert!(refusal(err).contains("only managers renew certificates"));

        // A certificate from another CA is refused in the handshake, whichever CA the dialler trusts.
        let foreign = stranger.node_cert();
        for trusted in [ca_pem.clone(), stranger.ca_pem()] {
            let impostor = transport_as(&ip(4), &trusted, &foreign);
            let err =
                rpc::call::<_, ControlResult>(&impostor, &manager.addr, Channel::Control, &ControlRequest::Info, CALL)
                    .await
                    .unwrap_err();
            assert!(
                matches!(&err, CallError::Transport(TransportError::Refused { reason, .. })
                    if reason.contains("handshake failed") || reason.contains("the peer refused the TLS session")),
                "a foreign certificate must fail the handshake: {err}"
            );
        }

        garbled_frames(&manager.addr, &ca_pem, &worker.node_cert(), &ip(2)).await;
    });

    // A removed node's certificate no longer gets anything. (Its daemon learns it was removed and
    // goes inactive, as Docker's does.)
    doomed.shoal(&["swarm", "leave", "--force"]).ok();
    wait_for(Duration::from_secs(30), "the node that left to be down", || {
        let nodes = json_lines(&manager.shoal(&["node", "ls", "--format", "json"]).ok()?);
        nodes.iter().any(|n| n["Hostname"] == doomed.hostname.as_str() && n["Status"] == "Down").then_some(())
    });
    let stolen = doomed_cert_copy(&doomed);
    manager.must(&["node", "rm", &doomed.hostname]);
    runtime.block_on(async {
        let as_removed = transport_as(&ip(3), &ca_pem, &stolen);
        let err =
            rpc::call::<_, ControlResult>(&as_removed, &manager.addr, Channel::Control, &ControlRequest::Info, CALL)
                .await
                .unwrap_err();
        let reason = refusal(err);
        assert!(reason.contains(&format!("node {doomed_id} is not a member of this swarm")), "{reason}");
        let key = rcgen::KeyPair::generate().expect("a key");
        let renew = RenewRequest { public_key: key.public_key_raw().to_vec() };
        let err = rpc::call::<_, RenewReply>(&as_removed, &manager.addr, Channel::Certificates, &renew, CALL)
            .await
            .unwrap_err();
        assert!(refusal(err).contains("its certificate is not renewed"));
        let heartbeat = DispatcherRequest::Heartbeat(HeartbeatRequest {
            node_id: doomed_id.clone(),
            session_id: "s".into(),
            tls_info: None,
        });
        let answer: Result<DispatcherResponse, DispatcherError> =
            rpc::call(&as_removed, &manager.addr, Channel::Dispatcher, &heartbeat, CALL).await.expect("an answer");
        assert_eq!(answer.unwrap_err(), DispatcherError::UnknownNode);
    });

    // Nothing was lost: the swarm still runs a service on its two nodes.
    let created = manager.must(&[
        "service",
        "create",
        "--name",
        "sec-web",
        "--replicas",
        "2",
        "process",
        "sh",
        "-c",
        "echo hello; while kill -0 $PPID 2>/dev/null; do sleep 1; done",
    ]);
    assert!(created.ends_with("verify: Service converged\n"), "{created}");
    let nodes = json_lines(&manager.must(&["node", "ls", "--format", "json"]));
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(nodes.iter().all(|n| n["Status"] == "Ready"), "{nodes:?}");
    // The manager reads the logs on both nodes over mutual TLS (one task each, spread).
    wait_for(Duration::from_secs(30), "a line from each node", || {
        let logs = manager.shoal(&["service", "logs", "sec-web"]).ok()?;
        [&manager, &worker].iter().all(|node| logs.contains(&format!("@{}    | hello", node.hostname))).then_some(())
    });
    manager.must(&["service", "rm", "sec-web"]);

    // A node whose certificate expired while its daemon was stopped does not start: Swarm's message
    // says what to do, and doing it (leave, join again) works. The expired certificate is made with
    // the CA key from the manager's data dir, over the worker's own key.
    let mut worker = worker;
    assert!(worker.terminate(Duration::from_secs(30)), "the worker daemon did not stop on SIGTERM");
    let ca = ClusterCa::from_pem(
        &ca_pem,
        &open_key(&manager.dir.path().join("data/node/dek.json"), &manager.certs().join("ca-key.pem")),
    )
    .expect("the cluster CA");
    let key = rcgen::KeyPair::from_pem(&worker.node_cert().key_pem).expect("the worker's key");
    let at = |secs| time::OffsetDateTime::now_utc() - time::Duration::seconds(secs);
    let expired = ca
        .issue_for_key_between(&worker_id, NodeRole::Worker, key.public_key_raw(), at(7200), at(60))
        .expect("an expired certificate");
    std::fs::write(worker.certs().join("node.pem"), expired).unwrap();
    worker.start();
    // The daemon answers while it is still resuming ("Swarm: pending"); wait until it has settled.
    let info = wait_for(Duration::from_secs(30), "the worker's resume to settle", || {
        let info = worker.must(&["info"]);
        (!info.contains(" Swarm: pending\n")).then_some(info)
    });
    assert!(info.contains(" Swarm: error\n"), "{info}");
    assert!(
        info.contains("  Error: Swarm certificates have expired. To replace them, leave the swarm and join again."),
        "{info}"
    );
    assert_eq!(worker.must(&["swarm", "leave"]), "Node left the swarm.\n");
    assert_eq!(worker.join(&new_token, &manager).unwrap(), "This node joined a swarm as a worker.\n");
}

/// A private key as the daemon keeps it: encrypted with the node's data key (in plain in
/// `dek.json` while autolock is off), DESIGN §6c.
fn open_key(dek_json: &Path, key: &Path) -> String {
    let dek = shoal_core::autolock::plain_dek(&std::fs::read(dek_json).expect("dek.json")).expect("a plain data key");
    let name = key.file_name().unwrap().to_str().unwrap();
    let bytes = std::fs::read(key).expect("the key file");
    assert!(shoal_core::autolock::is_sealed_file(&bytes), "{} is kept encrypted", key.display());
    String::from_utf8(shoal_core::autolock::open_file(&dek, name, &bytes).expect("the key opens")).unwrap()
}

/// The copy of a node's certificate and key taken while it was a member (`swarm leave` erases them).
fn doomed_cert_copy(doomed: &DaemonProc) -> NodeCert {
    let saved = doomed.dir.path().join("stolen");
    NodeCert {
        cert_pem: std::fs::read_to_string(saved.join("node.pem")).expect("saved node.pem"),
        key_pem: open_key(&saved.join("dek.json"), &saved.join("node-key.pem")),
    }
}

/// Frames that break the protocol get an error naming the problem, on a connection the listener then
/// drops; the manager keeps serving.
async fn garbled_frames(addr: &str, ca_pem: &str, node: &NodeCert, ip: &str) {
    // Not TLS at all.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(CALL, tcp.read_to_end(&mut buf)).await.expect("the manager hangs up");
    assert!(read.is_err() || !buf.starts_with(PREFACE), "no shoal frames for a non-TLS client");

    // TLS with a member's certificate, then an unknown frame kind.
    let tls = TlsConfig::new(ca_pem, node).unwrap();
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    let tcp = tcp.connect(addr.parse().unwrap()).await.unwrap();
    let mut stream = tls.connect(tcp).await.expect("a member's handshake");
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&[0, 0, 0, 9, 9, 0, 0, 0, 0, 0, 0, 0, 1]).await.unwrap();
    stream.flush().await.unwrap();
    let frame = tokio::time::timeout(CALL, read_frame(&mut stream, 1 << 20)).await.expect("an answer").unwrap();
    assert_eq!((frame.kind, frame.id), (KIND_ERROR, 0));
    assert_eq!(String::from_utf8_lossy(&frame.body), "unknown frame kind 9");

    // A well-formed frame whose body is not a request: refused for that request only.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stream = tls.connect(tcp).await.expect("a member's handshake");
    stream.write_all(PREFACE).await.unwrap();
    let mut body = vec![Channel::Dispatcher as u8];
    body.extend_from_slice(b"{not json");
    write_frame(&mut stream, &Frame { kind: KIND_REQUEST, id: 5, body }).await.unwrap();
    stream.flush().await.unwrap();
    let frame = tokio::time::timeout(CALL, read_frame(&mut stream, 1 << 20)).await.expect("an answer").unwrap();
    assert_eq!(frame.id, 5);
    let text = String::from_utf8_lossy(&frame.body);
    assert!(text.contains("garbled request"), "{text}");
}
