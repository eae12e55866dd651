//! The core's conformance suites run against the real arms of the seams, plus what only the real
//! transport can get wrong: garbage, oversized frames and peers that vanish mid-call.
//!
//! Needs loopback addresses beyond 127.0.0.1 (Linux routes all of 127/8 to `lo`) and, for the Docker
//! arm, a running engine; the image `shoal-test/busybox:latest` is built from busybox-static when
//! the engine lacks it (`shoal_testimage`). Without them the Docker test fails, on purpose, saying
//! what is missing.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shoal::disk::FileDisk;
use shoal::docker::{DockerExecutor, DockerOptions, PullPolicy};
use shoal::mesh_net::RealMeshNet;
use shoal::net::{Frame, Security, TcpConfig, TcpTransport, KIND_ERROR, KIND_REPLY, KIND_REQUEST, PREFACE};
use shoal::process::{ProcessExecutor, PROCESS_IMAGE};
use shoal::tls::{ClusterCa, NodeCert, TlsConfig};
use shoal_core::env::conformance::{self, ExecutorFixture, MeshFixture};
use shoal_core::env::executor::LABEL_TASK_ID;
use shoal_core::env::mesh::MeshNet;
use shoal_core::env::transport::Peer;
use shoal_core::env::{Executor, Handler, LogsQuery, MeshError, Transport, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use shoal_testimage::TEST_IMAGE;

/// A port on `ip` that was free a moment ago (bound, then released).
fn free_addr(ip: &str) -> String {
    let listener = StdListener::bind((ip, 0)).expect("bind a loopback address");
    listener.local_addr().expect("local addr").to_string()
}

/// A prefix unique to this test process, for container names.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

struct Echo;

#[async_trait]
impl Handler for Echo {
    async fn handle(&self, peer: Peer, request: Vec<u8>) -> Vec<u8> {
        match &request[..] {
            b"who" => peer.addr.into_bytes(),
            b"id" => peer.identity.unwrap_or_else(|| "none".into()).into_bytes(),
            b"slow" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                request
            }
            b"panic" => panic!("the handler panics on purpose"),
            _ if request.starts_with(b"big:") => {
                let size = std::str::from_utf8(&request[4..]).ok().and_then(|n| n.parse().ok()).unwrap_or(0);
                vec![7; size]
            }
            _ => request,
        }
    }
}

/// A served transport on a fresh 127.0.0.2 port, and a client transport on 127.0.0.3.
async fn pair() -> (TcpTransport, String, TcpTransport) {
    let server_addr = free_addr("127.0.0.2");
    let server = TcpTransport::new(server_addr.clone());
    server.serve(Arc::new(Echo)).await.expect("serve");
    let client = TcpTransport::new(free_addr("127.0.0.3"));
    (server, server_addr, client)
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn transport_conformance() {
    let server_addr = free_addr("127.0.0.2");
    let server = Arc::new(TcpTransport::new(server_addr.clone()));
    let client = Arc::new(TcpTransport::new(free_addr("127.0.0.3")));
    // A port that was free a moment ago and that nobody serves: connection refused.
    let dead_addr = free_addr("127.0.0.4");
    conformance::transport(server, &server_addr, client, &dead_addr).await;
}

#[tokio::test]
async fn calls_come_from_the_clients_own_address() {
    let (_server, server_addr, client) = pair().await;
    let who = client.call(&server_addr, b"who".to_vec(), SECOND).await.unwrap();
    let who: SocketAddr = String::from_utf8(who).unwrap().parse().unwrap();
    assert_eq!(who.ip().to_string(), "127.0.0.3", "outgoing connections bind the node's own IP");
}

#[tokio::test]
async fn refused_connection_is_unreachable() {
    let client = TcpTransport::new(free_addr("127.0.0.3"));
    let err = client.call(&free_addr("127.0.0.4"), b"x".to_vec(), SECOND).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "got {err:?}");
}

/// Send the preface (optionally) and raw bytes, then read what the server says before it hangs up.
async fn raw_exchange(server_addr: &str, preface: bool, bytes: &[u8]) -> Vec<u8> {
    let mut raw = TcpStream::connect(server_addr).await.unwrap();
    if preface {
        raw.write_all(PREFACE).await.unwrap();
    }
    raw.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer))
        .await
        .expect("the server must hang up on a garbled connection")
        .unwrap();
    answer
}

/// The error frame with id 0 the server sends before dropping a connection.
fn error_frame(answer: &[u8]) -> String {
    let frame = parse_frame(answer);
    assert_eq!(frame.kind, KIND_ERROR, "the server explains why it hangs up");
    assert_eq!(frame.id, 0, "a connection-level error has id 0");
    String::from_utf8(frame.body).unwrap()
}

fn parse_frame(answer: &[u8]) -> Frame {
    assert!(answer.len() >= 13, "expected an error frame, got {answer:?}");
    let len = u32::from_be_bytes(answer[..4].try_into().unwrap()) as usize;
    assert_eq!(answer.len(), 4 + len, "exactly one frame, then the close");
    Frame { kind: answer[4], id: u64::from_be_bytes(answer[5..13].try_into().unwrap()), body: answer[13..].to_vec() }
}

#[tokio::test]
async fn garbled_frames_get_a_clear_error_and_the_server_keeps_serving() {
    let (server, server_addr, client) = pair().await;

    // Not a shoal peer at all.
    let reason = error_frame(&raw_exchange(&server_addr, false, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await);
    assert!(reason.contains("bad preface"), "{reason}");

    // A frame too short to hold its header.
    let reason = error_frame(&raw_exchange(&server_addr, true, &[0, 0, 0, 2, 0xde, 0xad]).await);
    assert!(reason.contains("shorter than its 9-byte header"), "{reason}");

    // A frame kind a dialler must not send.
    let mut reply_kind = 9u32.to_be_bytes().to_vec();
    reply_kind.push(KIND_REPLY);
    reply_kind.extend_from_slice(&1u64.to_be_bytes());
    let reason = error_frame(&raw_exchange(&server_addr, true, &reply_kind).await);
    assert!(reason.contains("unexpected frame kind"), "{reason}");

    assert!(server.recent_errors().len() >= 3, "the server records what it refused: {:?}", server.recent_errors());
    let reply = client.call(&server_addr, b"still here".to_vec(), SECOND).await.expect("others are still served");
    assert_eq!(reply, b"still here");
}

#[tokio::test]
async fn oversized_length_prefix_is_refused() {
    let (server, server_addr, client) = pair().await;
    // 4 GiB - 1 announced: refused on the length alone, before any allocation.
    let reason = error_frame(&raw_exchange(&server_addr, true, &u32::MAX.to_be_bytes()).await);
    assert!(reason.contains("exceeds the limit"), "{reason}");
    assert!(server.recent_errors().iter().any(|e| e.reason.contains("exceeds the limit")));

    // A client refuses to send what the limit forbids, without touching the connection.
    let small =
        TcpTransport::with_config(TcpConfig { max_frame_bytes: 1024, ..TcpConfig::new(free_addr("127.0.0.3")) });
    let err = small.call(&server_addr, vec![0; 1025], SECOND).await.unwrap_err();
    assert!(matches!(err, TransportError::Frame { .. }), "got {err:?}");
    assert_eq!(client.call(&server_addr, b"ok".to_vec(), SECOND).await.unwrap(), b"ok");
}

#[tokio::test]
async fn a_reply_over_the_limit_fails_the_call_clearly() {
    let (_server, server_addr, _) = pair().await;
    let strict =
        TcpTransport::with_config(TcpConfig { max_frame_bytes: 1024, ..TcpConfig::new(free_addr("127.0.0.3")) });
    assert_eq!(strict.call(&server_addr, b"big:1024".to_vec(), SECOND).await.unwrap().len(), 1024);
    let err = strict.call(&server_addr, b"big:2048".to_vec(), SECOND).await.unwrap_err();
    match err {
        TransportError::Frame { reason, .. } => {
            assert!(reason.contains("exceeds the limit"), "{reason}")
        }
        other => panic!("a reply over the limit is a frame error, got {other:?}"),
    }
    // The broken connection was dropped; the next call gets a fresh one.
    assert_eq!(strict.call(&server_addr, b"small".to_vec(), SECOND).await.unwrap(), b"small");
}

#[tokio::test]
async fn a_peer_vanishing_mid_call_gives_closed() {
    // A raw listener that reads the request, then drops the connection without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let vanisher = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let _ = socket.read(&mut buf).await;
        drop(socket);
        drop(listener);
    });
    let client = TcpTransport::new(free_addr("127.0.0.3"));
    let err = client.call(&addr, b"hello".to_vec(), Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, TransportError::Closed { .. }), "got {err:?}");
    vanisher.await.unwrap();
    // The listener is gone too: the next call redials and finds nobody.
    let err = client.call(&addr, b"hello".to_vec(), Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "got {err:?}");
}

#[tokio::test]
async fn a_server_shutting_down_mid_call_then_coming_back() {
    let (server, server_addr, client) = pair().await;
    let client = Arc::new(client);
    let slow = {
        let (client, addr) = (client.clone(), server_addr.clone());
        tokio::spawn(async move { client.call(&addr, b"slow".to_vec(), Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.shutdown();
    let err = slow.await.unwrap().unwrap_err();
    assert!(matches!(err, TransportError::Closed { .. }), "got {err:?}");
    let err = client.call(&server_addr, b"x".to_vec(), SECOND).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "got {err:?}");

    // A new server on the same address: the client reconnects by itself.
    let again = TcpTransport::new(server_addr.clone());
    again.serve(Arc::new(Echo)).await.expect("rebind the same address");
    assert_eq!(client.call(&server_addr, b"back".to_vec(), SECOND).await.unwrap(), b"back");
}

#[tokio::test]
async fn a_panicking_handler_fails_only_its_call() {
    let (_server, server_addr, client) = pair().await;
    let err = client.call(&server_addr, b"panic".to_vec(), SECOND).await.unwrap_err();
    assert!(matches!(err, TransportError::Refused { .. }), "got {err:?}");
    assert_eq!(client.call(&server_addr, b"fine".to_vec(), SECOND).await.unwrap(), b"fine");
}

#[tokio::test]
async fn a_raw_request_gets_its_reply() {
    // The wire format as documented: preface, then length | kind | id | body.
    let (_server, server_addr, _) = pair().await;
    let mut raw = TcpStream::connect(&server_addr).await.unwrap();
    let mut frame = PREFACE.to_vec();
    frame.extend_from_slice(&(9u32 + 2).to_be_bytes());
    frame.push(KIND_REQUEST);
    frame.extend_from_slice(&42u64.to_be_bytes());
    frame.extend_from_slice(b"hi");
    raw.write_all(&frame).await.unwrap();
    let mut answer = [0u8; 15];
    raw.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer[..4], &11u32.to_be_bytes());
    assert_eq!(answer[4], KIND_REPLY);
    assert_eq!(&answer[5..13], &42u64.to_be_bytes());
    assert_eq!(&answer[13..], b"hi");
}

/// A transport on `addr` speaking mutual TLS with `node`'s certificate, trusting `ca_pem`.
fn tls_transport(addr: &str, ca_pem: &str, node: &NodeCert) -> TcpTransport {
    let tls = TlsConfig::new(ca_pem, node).expect("TLS config");
    TcpTransport::with_config(TcpConfig { security: Security::Tls(Arc::new(tls)), ..TcpConfig::new(addr) })
}

#[tokio::test]
async fn tls_transport_conformance_and_identity() {
    let ca = ClusterCa::generate().unwrap();
    let server_addr = free_addr("127.0.0.2");
    let server = Arc::new(tls_transport(&server_addr, ca.cert_pem(), &ca.issue("manager-1").unwrap()));
    let client = Arc::new(tls_transport(&free_addr("127.0.0.3"), ca.cert_pem(), &ca.issue("worker-7").unwrap()));
    conformance::transport(server, &server_addr, client.clone(), &free_addr("127.0.0.4")).await;

    // The suite served its own handler; ours tells who called.
    let server_addr = free_addr("127.0.0.2");
    let server = tls_transport(&server_addr, ca.cert_pem(), &ca.issue("manager-2").unwrap());
    server.serve(Arc::new(Echo)).await.unwrap();
    let id = client.call(&server_addr, b"id".to_vec(), SECOND).await.unwrap();
    assert_eq!(id, b"worker-7", "the listener learns the dialler's node id from its certificate");
}

#[tokio::test]
async fn tls_refuses_peers_of_another_cluster() {
    let ca = ClusterCa::generate().unwrap();
    let other = ClusterCa::generate().unwrap();
    assert_ne!(ca.digest(), other.digest());
    let server_addr = free_addr("127.0.0.2");
    let server = tls_transport(&server_addr, ca.cert_pem(), &ca.issue("manager-1").unwrap());
    server.serve(Arc::new(Echo)).await.unwrap();

    // A node of another cluster: it does not trust our server's certificate.
    let stranger = tls_transport(&free_addr("127.0.0.3"), other.cert_pem(), &other.issue("intruder").unwrap());
    let err = stranger.call(&server_addr, b"id".to_vec(), SECOND).await.unwrap_err();
    assert!(matches!(err, TransportError::Refused { .. }), "got {err:?}");

    // Trusting our CA is not enough: its own certificate must come from our CA too.
    let impostor = tls_transport(&free_addr("127.0.0.3"), ca.cert_pem(), &other.issue("impostor").unwrap());
    let err = impostor.call(&server_addr, b"id".to_vec(), SECOND).await.unwrap_err();
    assert!(
        matches!(err, TransportError::Refused { .. } | TransportError::Closed { .. }),
        "a client certificate from another CA must be refused, got {err:?}"
    );
    // And plain TCP does not get through either.
    let plain = TcpTransport::new(free_addr("127.0.0.3"));
    let err = plain.call(&server_addr, b"id".to_vec(), SECOND).await.unwrap_err();
    assert!(!matches!(err, TransportError::Timeout { .. }), "plain TCP to a TLS listener fails fast, got {err:?}");

    let errors = server.recent_errors();
    assert!(errors.iter().filter(|e| e.reason.contains("handshake failed")).count() >= 2, "{errors:?}");
    let member = tls_transport(&free_addr("127.0.0.3"), ca.cert_pem(), &ca.issue("worker-1").unwrap());
    assert_eq!(member.call(&server_addr, b"id".to_vec(), SECOND).await.unwrap(), b"worker-1");
}

#[tokio::test]
async fn disk_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let disk = FileDisk::open(dir.path().join("data")).await.expect("open the data dir");
    conformance::disk(Arc::new(disk)).await;
    assert!(dir.path().join("data/raft/log").is_file(), "names map to paths below the data dir");
}

/// Run the executor suite, then remove whatever it left behind even if it failed.
async fn executor_suite(executor: Arc<dyn Executor>, fixture: ExecutorFixture) {
    let label = (LABEL_TASK_ID.to_string(), format!("{}-task", fixture.name_prefix));
    let suite = tokio::spawn(conformance::executor(executor.clone(), fixture));
    let result = suite.await;
    for leftover in executor.list(&[label]).await.unwrap_or_default() {
        let _ = executor.remove(&leftover.id).await;
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn docker_executor_conformance() {
    // Never pull: the suite's missing image must be refused here, not looked up on a registry.
    let docker = DockerExecutor::connect(DockerOptions { pull: PullPolicy::Never }).await.unwrap_or_else(|e| {
        panic!(
            "this test needs a running Docker engine (run .ci/run, which starts dockerd if none \
             answers and builds {TEST_IMAGE}): {e}"
        )
    });
    shoal_testimage::require();
    if let Err(e) = docker.prepare_image(TEST_IMAGE, None).await {
        panic!("the engine does not find {TEST_IMAGE}, which shoal_testimage just ensured: {e}");
    }
    let fixture = ExecutorFixture {
        image: TEST_IMAGE.into(),
        run_forever: vec!["sleep".into(), "3600".into()],
        exit_3: vec!["sh".into(), "-c".into(), "exit 3".into()],
        missing_image: "shoal-test/never-built:none".into(),
        name_prefix: unique("shoal-conformance"),
    };
    executor_suite(Arc::new(docker), fixture).await;
}

#[tokio::test]
async fn docker_executor_health_conformance() {
    let docker = DockerExecutor::connect(DockerOptions { pull: PullPolicy::Never })
        .await
        .expect("a running Docker engine (.ci/run)");
    shoal_testimage::require();
    let fixture = ExecutorFixture {
        image: TEST_IMAGE.into(),
        run_forever: vec!["sleep".into(), "3600".into()],
        exit_3: vec!["sh".into(), "-c".into(), "exit 3".into()],
        missing_image: "shoal-test/never-built:none".into(),
        name_prefix: unique("shoal-health"),
    };
    let executor: Arc<dyn Executor> = Arc::new(docker);
    let label = (LABEL_TASK_ID.to_string(), format!("{}-task", fixture.name_prefix));
    let result = tokio::spawn(conformance::executor_health(executor.clone(), fixture)).await;
    for leftover in executor.list(&[label]).await.unwrap_or_default() {
        let _ = executor.remove(&leftover.id).await;
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn docker_logs_env_workdir_user_and_host_network() {
    let docker = DockerExecutor::connect(DockerOptions { pull: PullPolicy::Never })
        .await
        .expect("a running Docker engine (.ci/run)");
    shoal_testimage::require();
    let name = unique("shoal-logs");
    let spec = shoal_core::env::ContainerSpec {
        name: name.clone(),
        image: TEST_IMAGE.into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "echo one; echo $SHOAL_GREETING-$(pwd)-$(id -u); echo three >&2".into(),
        ],
        env: vec!["SHOAL_GREETING=two".into()],
        labels: [(LABEL_TASK_ID.to_string(), name.clone())].into_iter().collect(),
        memory_limit_bytes: Some(64 << 20),
        nano_cpus: Some(500_000_000),
        workdir: "/tmp".into(),
        user: "65534:65534".into(),
        ..Default::default()
    };
    let id = docker.create(&spec).await.expect("create");
    let result = async {
        docker.start(&id).await?;
        let code = docker.wait(&id).await?;
        let all = docker.logs(&id, &LogsQuery::default()).await?;
        let logs = docker.logs(&id, &LogsQuery { tail: Some(2), after_ns: None }).await?;
        let after_first = docker.logs(&id, &LogsQuery { after_ns: Some(all[0].time_ns), tail: None }).await?;
        let inspect = docker
            .docker()
            .inspect_container(&id, None)
            .await
            .map_err(|e| shoal_core::env::ExecutorError::Runtime(e.to_string()))?;
        Ok::<_, shoal_core::env::ExecutorError>((code, all, logs, after_first, inspect))
    }
    .await;
    docker.remove(&id).await.expect("remove");
    let (code, all, logs, after_first, inspect) = result.expect("run the container");
    assert_eq!(code, 0);
    let mut texts: Vec<&str> = all.iter().map(|l| l.text.as_str()).collect();
    texts.sort();
    assert_eq!(
        texts,
        ["one", "three", "two-/tmp-65534"],
        "stdout and stderr, stamps stripped, in the workdir as the user: {all:?}"
    );
    assert!(all.iter().all(|l| l.stderr == (l.text == "three")), "each line's stream: {all:?}");
    assert!(all.windows(2).all(|w| w[0].time_ns <= w[1].time_ns) && all[0].time_ns > 0, "{all:?}");
    assert_eq!(logs, all[1..], "tail bounds the lines");
    assert!(after_first.iter().all(|l| l.time_ns > all[0].time_ns), "a cursor skips what was seen");
    let host = inspect.host_config.unwrap_or_default();
    assert_eq!(host.network_mode.as_deref(), Some("host"), "containers use host networking");
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.nano_cpus, Some(500_000_000));
}

#[tokio::test]
async fn process_executor_conformance() {
    let fixture = ExecutorFixture {
        image: PROCESS_IMAGE.into(),
        run_forever: vec!["sleep".into(), "3600".into()],
        exit_3: vec!["sh".into(), "-c".into(), "exit 3".into()],
        missing_image: "/nonexistent/shoal-program".into(),
        name_prefix: unique("shoal-process"),
    };
    executor_suite(Arc::new(ProcessExecutor::new()), fixture).await;
}

/// The mesh fixture for a server node on `server_ip` and a client node on `client_ip` (each test
/// its own addresses, so tests running at once never meet on a recycled port).
fn mesh_fixture(
    server_ip: &str,
    client_ip: &str,
    server_data_addr: &str,
    client_identity: Option<&str>,
) -> MeshFixture {
    let udp = |ip: &str| {
        let socket = std::net::UdpSocket::bind((ip, 0)).expect("bind a loopback UDP port");
        socket.local_addr().expect("local addr").to_string()
    };
    MeshFixture {
        listen_addr: free_addr(server_ip),
        listen_addr_2: free_addr(server_ip),
        dead_addr: free_addr(server_ip),
        udp_addr: udp(server_ip),
        client_udp_addr: udp(client_ip),
        server_data_addr: server_data_addr.to_string(),
        dead_data_addr: free_addr(client_ip),
        client_identity: client_identity.map(str::to_string),
    }
}

#[tokio::test]
async fn mesh_conformance_plain() {
    let server_data = free_addr("127.0.0.5");
    let server = Arc::new(RealMeshNet::new(server_data.clone(), Security::Plain));
    let client = Arc::new(RealMeshNet::new(free_addr("127.0.0.6"), Security::Plain));
    conformance::mesh(server, client, mesh_fixture("127.0.0.5", "127.0.0.6", &server_data, None)).await;
}

#[tokio::test]
async fn mesh_conformance_tls_names_the_dialling_node() {
    let ca = ClusterCa::generate().unwrap();
    let tls = |id: &str| Security::Tls(Arc::new(TlsConfig::new(ca.cert_pem(), &ca.issue(id).unwrap()).unwrap()));
    let server_data = free_addr("127.0.0.8");
    let server = Arc::new(RealMeshNet::new(server_data.clone(), tls("node-a")));
    let client = Arc::new(RealMeshNet::new(free_addr("127.0.0.9"), tls("node-b")));
    conformance::mesh(server, client, mesh_fixture("127.0.0.8", "127.0.0.9", &server_data, Some("node-b"))).await;
}

#[tokio::test]
async fn tunnels_leave_from_the_data_address() {
    let server_data = free_addr("127.0.0.10");
    let server = RealMeshNet::new(server_data.clone(), Security::Plain);
    let client = RealMeshNet::new("127.0.0.11:4789", Security::Plain);
    let mut tunnels = server.listen_tunnels().await.unwrap();
    let mut stream = client.open_tunnel(&server_data, SECOND).await.unwrap();
    // The peer learns of a tunnel with its first frame.
    stream.write_all(b"x").await.unwrap();
    let incoming = tokio::time::timeout(Duration::from_secs(5), tunnels.accept()).await.unwrap().unwrap();
    let from: SocketAddr = incoming.peer_addr.parse().unwrap();
    assert_eq!(from.ip().to_string(), "127.0.0.11", "a peer sees the node's own address as the source");
}

#[tokio::test]
async fn tunnels_without_a_certificate_of_the_swarm_are_refused() {
    let ca = ClusterCa::generate().unwrap();
    let other = ClusterCa::generate().unwrap();
    let server_data = free_addr("127.0.0.12");
    let server_tls = TlsConfig::new(ca.cert_pem(), &ca.issue("node-a").unwrap()).unwrap();
    let server = RealMeshNet::new(server_data.clone(), Security::Tls(Arc::new(server_tls)));
    let mut tunnels = server.listen_tunnels().await.expect("listen for tunnels");

    // A node of another swarm: it does not trust our certificate, nor we its.
    let stranger_tls = TlsConfig::new(other.cert_pem(), &other.issue("intruder").unwrap()).unwrap();
    let stranger = RealMeshNet::new(free_addr("127.0.0.13"), Security::Tls(Arc::new(stranger_tls)));
    let err = stranger.open_tunnel(&server_data, SECOND).await.err();
    assert!(matches!(err, Some(MeshError::Refused { .. })), "got {err:?}");

    // Plain TCP to a TLS data port, and a client that presents no certificate at all (a joining
    // node's bootstrap security): both dropped before the core sees them.
    let plain = RealMeshNet::new(free_addr("127.0.0.13"), Security::Plain);
    let mut stream = plain.open_tunnel(&server_data, SECOND).await.expect("plain TCP connects");
    stream.write_all(b"hello").await.unwrap();
    let join = shoal::tls::JoinTls::new(&ca.digest()).unwrap();
    let anonymous = RealMeshNet::new(free_addr("127.0.0.13"), Security::Join(Arc::new(join)));
    if let Ok(mut stream) = anonymous.open_tunnel(&server_data, SECOND).await {
        // TLS 1.3: the client finishes first; the listener's refusal arrives on the first read.
        let _ = stream.write_all(b"hello").await;
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        assert!(!matches!(read, Ok(Ok(1))), "an anonymous tunnel must get no data");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.recent_tunnel_errors().len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let errors = server.recent_tunnel_errors();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("certificate of a node of this swarm is required")), "{errors:?}");

    // A member still gets through, with its identity.
    let member_tls = TlsConfig::new(ca.cert_pem(), &ca.issue("node-c").unwrap()).unwrap();
    let member = RealMeshNet::new(free_addr("127.0.0.13"), Security::Tls(Arc::new(member_tls)));
    let mut stream = member.open_tunnel(&server_data, SECOND).await.expect("a member's tunnel");
    stream.write_all(b"x").await.unwrap();
    let incoming = tokio::time::timeout(Duration::from_secs(5), tunnels.accept()).await.unwrap().unwrap();
    assert_eq!(incoming.peer_identity.as_deref(), Some("node-c"));
}

/// Reads the verdict-sized answer a test server writes on every tunnel it accepts.
async fn echo_one_byte(stream: &mut shoal_core::env::mesh::MeshStream, byte: u8) -> u8 {
    stream.write_all(&[byte]).await.unwrap();
    let mut buf = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf)).await.expect("an answer").unwrap();
    buf[0]
}

/// Peer addresses of the tunnels an echo server accepted; aborting the task closes its listener.
type EchoServer = (Arc<std::sync::Mutex<Vec<String>>>, tokio::task::JoinHandle<()>);

/// Accepts tunnels and echoes every byte back, recording each tunnel's peer address.
fn spawn_echo(mut tunnels: Box<dyn shoal_core::env::mesh::TunnelListener>) -> EchoServer {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let server = tokio::spawn(async move {
        while let Ok(tunnel) = tunnels.accept().await {
            record.lock().unwrap().push(tunnel.peer_addr.clone());
            tokio::spawn(async move {
                let mut stream = tunnel.stream;
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (seen, server)
}

#[tokio::test]
async fn tunnels_to_one_peer_share_one_connection() {
    let ca = ClusterCa::generate().unwrap();
    let tls = |id: &str| Security::Tls(Arc::new(TlsConfig::new(ca.cert_pem(), &ca.issue(id).unwrap()).unwrap()));
    let server_data = free_addr("127.0.0.17");
    let server = RealMeshNet::new(server_data.clone(), tls("node-a"));
    let (seen, _server) = spawn_echo(server.listen_tunnels().await.unwrap());
    let client = Arc::new(RealMeshNet::new(free_addr("127.0.0.18"), tls("node-b")));

    // Concurrent first tunnels share one dial; later ones reuse the connection.
    let mut opening = tokio::task::JoinSet::new();
    for byte in 0..16u8 {
        let (client, server_data) = (client.clone(), server_data.clone());
        opening.spawn(async move {
            let mut stream = client.open_tunnel(&server_data, SECOND).await.expect("a tunnel");
            assert_eq!(echo_one_byte(&mut stream, byte).await, byte, "each tunnel carries its own bytes");
        });
    }
    while let Some(done) = opening.join_next().await {
        done.unwrap();
    }
    for byte in 16..32u8 {
        let mut stream = client.open_tunnel(&server_data, SECOND).await.expect("a tunnel");
        assert_eq!(echo_one_byte(&mut stream, byte).await, byte);
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 32, "every tunnel reached the peer");
    assert!(seen.iter().all(|addr| *addr == seen[0]), "all tunnels rode one connection: {seen:?}");
}

#[tokio::test]
async fn a_restarted_peer_gets_a_fresh_connection() {
    let server_data = free_addr("127.0.0.17");
    let server = RealMeshNet::new(server_data.clone(), Security::Plain);
    let client = RealMeshNet::new(free_addr("127.0.0.18"), Security::Plain);
    let (_, first_life) = spawn_echo(server.listen_tunnels().await.unwrap());
    let mut stream = client.open_tunnel(&server_data, SECOND).await.unwrap();
    assert_eq!(echo_one_byte(&mut stream, 1).await, 1);
    drop(stream);

    // The peer's daemon restarts: its listener and every connection it served go away.
    first_life.abort();
    let _ = first_life.await;
    let restarted = RealMeshNet::new(server_data.clone(), Security::Plain);
    let mut relisten = None;
    for _ in 0..100 {
        // The old listener closes once its aborted task is dropped by the runtime.
        if let Ok(listener) = restarted.listen_tunnels().await {
            relisten = Some(listener);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, _second_life) = spawn_echo(relisten.expect("the data port is free again"));
    // A tunnel opened on the dead connection fails (the proxy tries the next backend); within a few
    // tries tunnels flow on a fresh one.
    let mut answered = None;
    for attempt in 0..20 {
        if let Ok(mut stream) = client.open_tunnel(&server_data, SECOND).await {
            let mut buf = [0u8; 1];
            if stream.write_all(&[7]).await.is_ok()
                && matches!(tokio::time::timeout(SECOND, stream.read_exact(&mut buf)).await, Ok(Ok(_)))
            {
                answered = Some(attempt);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered.is_some(), "no tunnel reached the restarted peer");
}

/// Forwards bytes one way until either side closes; drops them while `dark` is set.
async fn relay_pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dark: Option<Arc<std::sync::atomic::AtomicBool>>,
) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let swallowed = dark.as_ref().is_some_and(|dark| dark.load(std::sync::atomic::Ordering::SeqCst));
        if !swallowed && to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

#[tokio::test]
async fn a_silent_connection_is_dropped_for_a_fresh_one() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let server_data = free_addr("127.0.0.17");
    let server = RealMeshNet::new(server_data.clone(), Security::Plain);
    let _server = spawn_echo(server.listen_tunnels().await.unwrap());

    // A relay between the nodes that can swallow every byte of the connections it already has,
    // like a link that went dark; new connections it forwards normally.
    let relay = tokio::net::TcpListener::bind("127.0.0.19:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap().to_string();
    let dark = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(AtomicUsize::new(0));
    let (relay_dark, relay_connections, upstream) = (dark.clone(), connections.clone(), server_data.clone());
    tokio::spawn(async move {
        while let Ok((downstream, _)) = relay.accept().await {
            relay_connections.fetch_add(1, Ordering::SeqCst);
            let upstream = TcpStream::connect(&upstream).await.unwrap();
            // A connection made while the link is up can go dark later; one made after stays lit.
            let can_go_dark = (!relay_dark.load(Ordering::SeqCst)).then(|| relay_dark.clone());
            let (down_read, down_write) = downstream.into_split();
            let (up_read, up_write) = upstream.into_split();
            tokio::spawn(relay_pump(down_read, up_write, can_go_dark.clone()));
            tokio::spawn(relay_pump(up_read, down_write, can_go_dark));
        }
    });

    let client = RealMeshNet::new(free_addr("127.0.0.18"), Security::Plain);
    let mut stream = client.open_tunnel(&relay_addr, SECOND).await.unwrap();
    assert_eq!(echo_one_byte(&mut stream, 1).await, 1);
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    dark.store(true, Ordering::SeqCst);
    // The next tunnel opens on the dark connection and hears nothing.
    let mut lost = client.open_tunnel(&relay_addr, SECOND).await.unwrap();
    lost.write_all(&[2]).await.unwrap();
    let mut buf = [0u8; 1];
    assert!(tokio::time::timeout(Duration::from_millis(500), lost.read_exact(&mut buf)).await.is_err());
    // Once it has kept a tunnel waiting past the limit, new tunnels dial afresh and are answered.
    tokio::time::sleep(shoal::mesh_mux::SILENT_PEER + Duration::from_millis(200)).await;
    let mut fresh = client.open_tunnel(&relay_addr, SECOND).await.unwrap();
    assert_eq!(echo_one_byte(&mut fresh, 3).await, 3);
    assert_eq!(connections.load(Ordering::SeqCst), 2, "a second connection replaced the silent one");
}

#[tokio::test]
async fn listen_errors_say_why() {
    let mesh = RealMeshNet::new(free_addr("127.0.0.14"), Security::Plain);
    let addr = free_addr("127.0.0.14");
    let _held = std::net::TcpListener::bind(&addr).unwrap();
    match mesh.listen_tcp(&addr).await.err() {
        Some(MeshError::Listen { addr: at, reason }) => {
            assert_eq!(at, addr);
            assert!(
                reason.contains("port is already allocated") && reason.contains("address already in use"),
                "{reason}"
            );
        }
        other => panic!("a taken port must be refused, got {other:?}"),
    }
    // TEST-NET-3, not an address of this host: listening there fails without sending anything.
    match mesh.listen_tcp("203.0.113.9:8080").await.err() {
        Some(MeshError::Listen { reason, .. }) => assert!(reason.contains("not an address of this host"), "{reason}"),
        other => panic!("a foreign address must be refused, got {other:?}"),
    }
    match mesh.listen_tcp("web:80").await.err() {
        Some(MeshError::Listen { reason, .. }) => assert!(reason.contains("not an ip:port"), "{reason}"),
        other => panic!("a malformed address must be refused, got {other:?}"),
    }
    let eacces = std::io::Error::from_raw_os_error(libc::EACCES);
    assert!(shoal::mesh_net::bind_error_reason(&eacces).contains("ports below 1024 need root"));
}

/// A Linux bridge made by the test, deleted when dropped.
struct TestBridge(String);

impl TestBridge {
    fn new() -> TestBridge {
        let name = format!("shtest{}", std::process::id() % 100_000);
        let status = std::process::Command::new("ip").args(["link", "add", &name, "type", "bridge"]).status();
        assert!(status.is_ok_and(|s| s.success()), "this test needs root and iproute2 to make the bridge {name}");
        TestBridge(name)
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

#[tokio::test]
async fn local_addresses_on_a_bridge_come_and_go() {
    use shoal::mesh_net::netlink::host_addresses;
    let bridge = TestBridge::new();
    let mesh = RealMeshNet::new(free_addr("127.0.0.15"), Security::Plain);
    let vip: std::net::IpAddr = "10.213.7.9".parse().unwrap();
    assert!(host_addresses(&bridge.0).await.unwrap().is_empty());
    mesh.add_local_address(&bridge.0, "10.213.7.9").await.expect("add a VIP");
    mesh.add_local_address(&bridge.0, "10.213.7.9").await.expect("adding it again is not an error");
    assert_eq!(host_addresses(&bridge.0).await.unwrap(), vec![vip]);
    // The address is this host's now: the proxy can listen on it.
    let listener = mesh.listen_tcp("10.213.7.9:8080").await;
    assert!(listener.is_ok(), "listen on the VIP: {:?}", listener.err());
    drop(listener);
    mesh.remove_local_address(&bridge.0, "10.213.7.9").await.expect("remove the VIP");
    mesh.remove_local_address(&bridge.0, "10.213.7.9").await.expect("removing it again is not an error");
    assert!(host_addresses(&bridge.0).await.unwrap().is_empty());

    let err = mesh.add_local_address("shnosuchbr0", "10.213.7.9").await.unwrap_err();
    assert!(err.to_string().contains("no network device named \"shnosuchbr0\""), "{err}");
    mesh.remove_local_address("shnosuchbr0", "10.213.7.9").await.expect("a gone bridge has no addresses");
    let err = mesh.add_local_address(&bridge.0, "not-an-ip").await.unwrap_err();
    assert!(err.to_string().contains("is not an IP address"), "{err}");
}

#[tokio::test]
async fn processes_learn_the_node_address_from_the_daemon() {
    let executor = ProcessExecutor::new();
    executor.set_base_env(vec!["SHOAL_NODE_IP=127.0.0.21".into(), "SHOAL_TASK_IP=127.0.0.21".into()]);
    let spec = shoal_core::env::ContainerSpec {
        name: unique("shoal-env"),
        image: PROCESS_IMAGE.into(),
        command: vec!["sh".into(), "-c".into(), "echo $SHOAL_NODE_IP $SHOAL_TASK_IP".into()],
        // The task's own env wins over the daemon's.
        env: vec!["SHOAL_TASK_IP=own".into()],
        ..Default::default()
    };
    let id = executor.create(&spec).await.unwrap();
    executor.start(&id).await.unwrap();
    assert_eq!(executor.wait(&id).await.unwrap(), 0);
    let lines = executor.logs(&id, &LogsQuery::default()).await.unwrap();
    executor.remove(&id).await.unwrap();
    assert_eq!(lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["127.0.0.21 own"]);
}
