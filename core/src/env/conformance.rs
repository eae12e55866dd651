//! One conformance suite per instance seam: each body runs against the simulator's arm (in
//! `shoal-sim`'s tests) and against the daemon's arm (in `shoal`'s tests), so the two worlds cannot
//! drift apart. Each function panics with a message naming the broken promise.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::executor::{ContainerSpec, ContainerState, LABEL_TASK_ID};
use super::transport::Peer;
use super::{Disk, DiskError, Executor, ExecutorError, Handler, Transport, TransportError};

struct Echo;

#[async_trait]
impl Handler for Echo {
    async fn handle(&self, _peer: Peer, request: Vec<u8>) -> Vec<u8> {
        if request == b"hang" {
            crate::env::sleep(Duration::from_secs(3600)).await;
        }
        let mut reply = b"echo:".to_vec();
        reply.extend_from_slice(&request);
        reply
    }
}

/// `server` listens at `server_addr`; `client` calls it. `dead_addr` is an address nobody serves.
pub async fn transport(server: Arc<dyn Transport>, server_addr: &str, client: Arc<dyn Transport>, dead_addr: &str) {
    server.serve(Arc::new(Echo)).await.expect("serve must succeed on a free address");
    let second = Duration::from_secs(5);

    let reply = client.call(server_addr, b"ping".to_vec(), second).await.expect("a call to a live peer must answer");
    assert_eq!(reply, b"echo:ping", "the reply must be the handler's bytes, unchanged");

    // Frames of every size keep their boundaries, including empty and large ones.
    for size in [0usize, 1, 4096, 1 << 20] {
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let reply = client.call(server_addr, body.clone(), second).await.expect("large frames must pass");
        assert_eq!(&reply[5..], &body[..], "a {size}-byte frame must arrive intact");
    }

    // Concurrent calls on one transport each get their own reply.
    let mut handles = Vec::new();
    for i in 0..8u8 {
        let client = client.clone();
        let addr = server_addr.to_string();
        handles.push(crate::env::spawn(async move { client.call(&addr, vec![i], second).await }));
    }
    for (i, handle) in handles.into_iter().enumerate() {
        let reply = handle.await.expect("task").expect("concurrent call");
        assert_eq!(reply, [b'e', b'c', b'h', b'o', b':', i as u8], "reply {i} must match its request");
    }

    // A peer that does not answer in time gives a timeout, not a hang.
    let started = crate::env::now();
    let err = client.call(server_addr, b"hang".to_vec(), Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "a silent peer must time out, got {err:?}");
    assert!(crate::env::now() - started < Duration::from_secs(3), "the deadline must be honoured");

    // The connection survives a timed-out call.
    let reply = client.call(server_addr, b"again".to_vec(), second).await.expect("call after a timeout");
    assert_eq!(reply, b"echo:again");

    // Nobody home: a clear error within the deadline.
    let err = client.call(dead_addr, b"ping".to_vec(), Duration::from_secs(2)).await.unwrap_err();
    assert!(
        matches!(err, TransportError::Unreachable { .. } | TransportError::Timeout { .. }),
        "a dead address must be unreachable, got {err:?}"
    );
}

/// The disk promises: reads see appends, atomic writes replace, names are checked, lists are sorted.
pub async fn disk(disk: Arc<dyn Disk>) {
    assert_eq!(disk.read("raft/log").await.unwrap(), None, "a fresh disk has no files");
    disk.append("raft/log", b"one,").await.unwrap();
    disk.append("raft/log", b"two,").await.unwrap();
    assert_eq!(disk.read("raft/log").await.unwrap().as_deref(), Some(&b"one,two,"[..]), "reads see appends");
    disk.sync("raft/log").await.unwrap();
    disk.append("raft/log", b"three").await.unwrap();
    assert_eq!(disk.read("raft/log").await.unwrap().as_deref(), Some(&b"one,two,three"[..]));

    disk.write_atomic("raft/vote", b"v1").await.unwrap();
    disk.write_atomic("raft/vote", b"v2-longer").await.unwrap();
    assert_eq!(disk.read("raft/vote").await.unwrap().as_deref(), Some(&b"v2-longer"[..]), "atomic write replaces");
    disk.write_atomic("identity", b"node").await.unwrap();

    assert_eq!(disk.list().await.unwrap(), vec!["identity", "raft/log", "raft/vote"], "list is sorted");
    disk.remove("raft/vote").await.unwrap();
    disk.remove("raft/vote").await.expect("removing a missing file is not an error");
    assert_eq!(disk.read("raft/vote").await.unwrap(), None);

    for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b"] {
        let err = disk.read(bad).await.unwrap_err();
        assert!(matches!(err, DiskError::InvalidName { .. }), "{bad:?} must be refused, got {err:?}");
        assert!(disk.write_atomic(bad, b"x").await.is_err(), "{bad:?} must not be writable");
    }

    // One daemon per data dir: a second claim fails at once naming the holder, and the files stay.
    let first = disk.claim("first daemon").expect("a free data dir can be claimed");
    match disk.claim("second daemon") {
        Err(err @ DiskError::InUse { .. }) => {
            assert!(err.to_string().contains("in use by another shoal daemon"), "{err}")
        }
        other => panic!("a claimed data dir must refuse a second claim, got {other:?}"),
    }
    assert_eq!(disk.read("identity").await.unwrap().as_deref(), Some(&b"node"[..]), "a refused claim touches nothing");
    drop(first);
    let again = disk.claim("third daemon").expect("a dropped claim frees the data dir");
    drop(again);
}

/// What an executor arm needs to run the suite: a local image and commands in its vocabulary.
pub struct ExecutorFixture {
    pub image: String,
    /// Runs until stopped.
    pub run_forever: Vec<String>,
    /// Exits by itself with code 3.
    pub exit_3: Vec<String>,
    /// An image that is neither local nor pullable (the arm under test must not try to pull it
    /// from anywhere but loopback).
    pub missing_image: String,
    /// A prefix for container names, unique per test run.
    pub name_prefix: String,
}

/// The container lifecycle the agent relies on.
pub async fn executor(executor: Arc<dyn Executor>, fixture: ExecutorFixture) {
    executor.prepare_image(&fixture.image, None).await.expect("a local image is ready without a pull");
    let err = executor.prepare_image(&fixture.missing_image, None).await.unwrap_err();
    assert!(matches!(err, ExecutorError::ImageUnavailable { .. }), "a missing image must be refused, got {err:?}");

    let task_label = format!("{}-task", fixture.name_prefix);
    let spec = |suffix: &str, command: &[String]| ContainerSpec {
        name: format!("{}-{suffix}", fixture.name_prefix),
        image: fixture.image.clone(),
        command: command.to_vec(),
        env: vec!["SHOAL_TEST=1".into()],
        labels: [(LABEL_TASK_ID.to_string(), task_label.clone())].into_iter().collect(),
        ..ContainerSpec::default()
    };

    // A container that exits by itself reports its code.
    let exits = executor.create(&spec("exits", &fixture.exit_3)).await.expect("create");
    assert_eq!(executor.inspect(&exits).await.unwrap().state, ContainerState::Created);
    executor.start(&exits).await.expect("start");
    assert_eq!(executor.wait(&exits).await.expect("wait"), 3, "the exit code must come back");
    assert_eq!(executor.inspect(&exits).await.unwrap().state, ContainerState::Exited { code: 3 });

    // A long-running container runs until stopped, and is found by its labels.
    let runs = executor.create(&spec("runs", &fixture.run_forever)).await.expect("create");
    executor.start(&runs).await.expect("start");
    assert_eq!(executor.inspect(&runs).await.unwrap().state, ContainerState::Running);
    let listed = executor.list(&[(LABEL_TASK_ID.to_string(), task_label.clone())]).await.unwrap();
    let mut ids: Vec<_> = listed.iter().map(|c| c.id.clone()).collect();
    let mut expected = vec![exits.clone(), runs.clone()];
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected, "list by label must find exactly our containers");
    executor.stop(&runs, Duration::from_secs(2)).await.expect("stop");
    assert!(
        matches!(executor.inspect(&runs).await.unwrap().state, ContainerState::Exited { .. }),
        "a stopped container has exited"
    );

    for id in [&exits, &runs] {
        executor.remove(id).await.expect("remove");
        let err = executor.inspect(id).await.unwrap_err();
        assert!(matches!(err, ExecutorError::NoSuchContainer { .. }), "a removed container is gone, got {err:?}");
    }
    assert!(executor.list(&[(LABEL_TASK_ID.to_string(), task_label)]).await.unwrap().is_empty());
}

/// Health checks, for arms that run them (not plain processes): a container without a check has no
/// health; one is `starting` until its first check (an interval after the start); one whose check
/// passes is then `healthy`; one whose check fails turns `unhealthy` after `retries` failures; `NONE`
/// switches the check off. Uses the fixture's image and
/// `run_forever`; the checks are `CMD-SHELL exit 0` / `exit 1`.
pub async fn executor_health(executor: Arc<dyn Executor>, fixture: ExecutorFixture) {
    use super::executor::Health;
    use crate::api::HealthConfig;
    executor.prepare_image(&fixture.image, None).await.expect("a local image is ready without a pull");
    let check = |line: &str| HealthConfig {
        test: vec!["CMD-SHELL".into(), line.into()],
        interval_ms: 200,
        timeout_ms: 2_000,
        retries: 2,
        start_period_ms: 0,
    };
    let cases = [
        ("hc-none", None, None),
        ("hc-off", Some(HealthConfig::none()), None),
        ("hc-pass", Some(check("exit 0")), Some(Health::Healthy)),
        ("hc-fail", Some(check("exit 1")), Some(Health::Unhealthy)),
        // The first check runs one interval after the start: a minute away, so starting throughout.
        ("hc-slow", Some(HealthConfig { interval_ms: 60_000, ..check("exit 0") }), Some(Health::Starting)),
    ];
    let mut made = Vec::new();
    for (suffix, healthcheck, _) in &cases {
        let spec = ContainerSpec {
            name: format!("{}-{suffix}", fixture.name_prefix),
            image: fixture.image.clone(),
            command: fixture.run_forever.clone(),
            labels: [(LABEL_TASK_ID.to_string(), format!("{}-task", fixture.name_prefix))].into_iter().collect(),
            healthcheck: healthcheck.clone(),
            ..ContainerSpec::default()
        };
        let id = executor.create(&spec).await.expect("create");
        executor.start(&id).await.expect("start");
        made.push(id);
    }
    for ((suffix, _, want), id) in cases.iter().zip(&made) {
        let Some(want) = want else { continue };
        let mut seen = None;
        for _ in 0..100 {
            seen = executor.inspect(id).await.expect("inspect").health;
            if seen == Some(*want) {
                break;
            }
            crate::env::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, Some(*want), "{suffix}: health within 10 s");
    }
    for ((suffix, _, want), id) in cases.iter().zip(&made) {
        let now = executor.inspect(id).await.expect("inspect").health;
        assert_eq!(now, *want, "{suffix}: still");
    }
    for id in &made {
        executor.remove(id).await.expect("remove");
    }
}

/// Where the mesh suite listens and dials. Every address is `ip:port` in the arm's own world.
#[derive(Debug, Clone)]
pub struct MeshFixture {
    /// A free TCP port on the server node's address.
    pub listen_addr: String,
    /// A second free TCP port there (for concurrent listeners).
    pub listen_addr_2: String,
    /// A TCP address where nothing listens (connections are refused).
    pub dead_addr: String,
    /// A free UDP port on the server node's address, and one on the client node's.
    pub udp_addr: String,
    pub client_udp_addr: String,
    /// The server node's data address (where its tunnel listener binds).
    pub server_data_addr: String,
    /// The data address of a node that does not run (tunnels there fail).
    pub dead_data_addr: String,
    /// The identity the server must see on the client's tunnels (`None` where the world has none).
    pub client_identity: Option<String>,
}

/// Write `data` on `stream` and flush it.
async fn send_all(stream: &mut super::MeshStream, data: &[u8], what: &str) {
    use tokio::io::AsyncWriteExt;
    stream.write_all(data).await.unwrap_or_else(|e| panic!("{what}: write failed: {e}"));
    stream.flush().await.unwrap_or_else(|e| panic!("{what}: flush failed: {e}"));
}

/// Read exactly `len` bytes from `stream`, within 10 s.
async fn receive(stream: &mut super::MeshStream, len: usize, what: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; len];
    match crate::env::timeout(Duration::from_secs(10), stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) => buf,
        Ok(Err(e)) => panic!("{what}: read of {len} bytes failed: {e}"),
        Err(_) => panic!("{what}: {len} bytes did not arrive within 10 s"),
    }
}

/// Read until end of stream, within 10 s: what arrived.
async fn receive_to_end(stream: &mut super::MeshStream, what: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    match crate::env::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await {
        Ok(Ok(_)) => buf,
        Ok(Err(e)) => panic!("{what}: reading to the end failed: {e}"),
        Err(_) => panic!("{what}: no end of stream within 10 s (a shutdown must reach the other side)"),
    }
}

/// Half-close the write side.
async fn shutdown_write(stream: &mut super::MeshStream, what: &str) {
    use tokio::io::AsyncWriteExt;
    stream.shutdown().await.unwrap_or_else(|e| panic!("{what}: shutdown failed: {e}"));
}

fn payload(size: usize, seed: u8) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// The mesh promises the proxy, the tunnel acceptor and the probe rely on: listen, accept and dial
/// with data both ways and half-close; a taken port and a closed port refused at once; UDP both
/// ways; tunnels carrying the dialler's identity, large payloads and half-close; a dead peer failing
/// within the deadline. `server` and `client` are two nodes of one world.
pub async fn mesh(server: Arc<dyn super::MeshNet>, client: Arc<dyn super::MeshNet>, fixture: MeshFixture) {
    use super::MeshError;
    let second = Duration::from_secs(5);

    // Listen, connect, talk both ways, half-close both ways.
    let mut listener = server.listen_tcp(&fixture.listen_addr).await.expect("listen on a free port must succeed");
    let taken = server.listen_tcp(&fixture.listen_addr).await.err();
    assert!(
        matches!(taken, Some(MeshError::Listen { .. })),
        "a second listener on {} must be refused as taken, got {taken:?}",
        fixture.listen_addr
    );
    let dialled = {
        let client = client.clone();
        let addr = fixture.listen_addr.clone();
        crate::env::spawn(async move { client.connect_tcp(&addr, Duration::from_secs(5)).await })
    };
    let (mut accepted, from) = crate::env::timeout(second, listener.accept())
        .await
        .expect("a connection must be accepted within 5 s")
        .expect("accept");
    assert!(!from.is_empty(), "accept names the client's address");
    let mut dialled = dialled.await.expect("task").expect("connect to a listening port must succeed");
    send_all(&mut dialled, b"ping", "client → server").await;
    assert_eq!(receive(&mut accepted, 4, "client → server").await, b"ping");
    send_all(&mut accepted, b"pong!", "server → client").await;
    assert_eq!(receive(&mut dialled, 5, "server → client").await, b"pong!");
    shutdown_write(&mut dialled, "client").await;
    assert_eq!(receive_to_end(&mut accepted, "server after the client's shutdown").await, b"");
    // The other direction still works after one side's half-close (HTTP/1.0 clients rely on it).
    send_all(&mut accepted, b"late reply", "server after half-close").await;
    shutdown_write(&mut accepted, "server").await;
    assert_eq!(receive_to_end(&mut dialled, "client after both shutdowns").await, b"late reply");

    // Eight connections at once, each with its own bytes, on a second listener.
    let mut second_listener = server.listen_tcp(&fixture.listen_addr_2).await.expect("a second port");
    let echo = crate::env::spawn(async move {
        let mut served = Vec::new();
        for _ in 0..8 {
            let (mut stream, _) = second_listener.accept().await.expect("accept");
            served.push(crate::env::spawn(async move {
                let request = receive(&mut stream, 64 << 10, "echo").await;
                send_all(&mut stream, &request, "echo").await;
            }));
        }
        for task in served {
            task.await.expect("echo task");
        }
        second_listener
    });
    let mut callers = Vec::new();
    for i in 0..8u8 {
        let client = client.clone();
        let addr = fixture.listen_addr_2.clone();
        callers.push(crate::env::spawn(async move {
            let mut stream = client.connect_tcp(&addr, Duration::from_secs(5)).await.expect("concurrent connect");
            let body = payload(64 << 10, i);
            send_all(&mut stream, &body, "concurrent").await;
            assert_eq!(receive(&mut stream, body.len(), "concurrent").await, body, "connection {i} got its own bytes");
        }));
    }
    for caller in callers {
        caller.await.expect("a concurrent connection failed");
    }
    let second_listener = echo.await.expect("echo server");

    // A closed port: refused at once, so the proxy can try the next backend.
    drop(second_listener);
    let err = client.connect_tcp(&fixture.listen_addr_2, second).await.err();
    assert!(matches!(err, Some(MeshError::Refused { .. })), "a dropped listener's port must refuse, got {err:?}");
    let err = client.connect_tcp(&fixture.dead_addr, second).await.err();
    assert!(matches!(err, Some(MeshError::Refused { .. })), "a port nobody listens on must refuse, got {err:?}");
    drop(listener);
    let err = client.connect_tcp(&fixture.listen_addr, second).await.err();
    assert!(matches!(err, Some(MeshError::Refused { .. })), "a dropped listener frees its port, got {err:?}");
    let again = server.listen_tcp(&fixture.listen_addr).await;
    assert!(again.is_ok(), "a port is free again once its listener is dropped: {:?}", again.err());
    drop(again);

    // UDP, both ways.
    let udp_server = server.bind_udp(&fixture.udp_addr).await.expect("bind a free UDP port");
    let taken = server.bind_udp(&fixture.udp_addr).await.err();
    assert!(matches!(taken, Some(MeshError::Listen { .. })), "a bound UDP port must be refused, got {taken:?}");
    let udp_client = client.bind_udp(&fixture.client_udp_addr).await.expect("bind the client's UDP port");
    udp_client.send_to(b"ping", &fixture.udp_addr).await.expect("send a datagram");
    let mut buf = [0u8; 64];
    let (len, from) = crate::env::timeout(second, udp_server.recv_from(&mut buf))
        .await
        .expect("a datagram must arrive within 5 s")
        .expect("recv");
    assert_eq!(&buf[..len], b"ping");
    assert_eq!(from, fixture.client_udp_addr, "a datagram names its sender's address");
    udp_server.send_to(b"pong", &from).await.expect("reply to the sender");
    let (len, from) = crate::env::timeout(second, udp_client.recv_from(&mut buf))
        .await
        .expect("the reply must arrive within 5 s")
        .expect("recv");
    assert_eq!((&buf[..len], from.as_str()), (&b"pong"[..], fixture.udp_addr.as_str()));

    // Tunnels: the dialler's identity, data both ways, a large payload, half-close.
    let mut tunnels = server.listen_tunnels().await.expect("listen for tunnels on the data address");
    let opened = {
        let client = client.clone();
        let addr = fixture.server_data_addr.clone();
        crate::env::spawn(async move {
            let mut stream = client.open_tunnel(&addr, Duration::from_secs(5)).await.expect("open a tunnel");
            // The first frame goes out before the listener has to answer anything.
            send_all(&mut stream, b"hello", "tunnel").await;
            stream
        })
    };
    let mut incoming = crate::env::timeout(Duration::from_secs(10), tunnels.accept())
        .await
        .expect("a tunnel must arrive within 10 s")
        .expect("accept a tunnel");
    assert_eq!(incoming.peer_identity, fixture.client_identity, "the tunnel names the dialling node");
    assert!(!incoming.peer_addr.is_empty(), "the tunnel names the dialler's address");
    let mut opened = opened.await.expect("task");
    assert_eq!(receive(&mut incoming.stream, 5, "tunnel client → server").await, b"hello");
    let big = payload(1 << 20, 7);
    let upload = {
        let big = big.clone();
        crate::env::spawn(async move {
            send_all(&mut opened, &big, "tunnel upload").await;
            shutdown_write(&mut opened, "tunnel client").await;
            opened
        })
    };
    let received = receive_to_end(&mut incoming.stream, "tunnel server after the client's shutdown").await;
    assert!(received == big, "1 MiB through a tunnel arrives intact ({} bytes arrived)", received.len());
    let mut opened = upload.await.expect("upload");
    send_all(&mut incoming.stream, b"done", "tunnel server → client").await;
    shutdown_write(&mut incoming.stream, "tunnel server").await;
    assert_eq!(receive_to_end(&mut opened, "tunnel client after both shutdowns").await, b"done");

    // A peer that does not run: the tunnel fails within its deadline.
    let started = crate::env::now();
    let err = client.open_tunnel(&fixture.dead_data_addr, Duration::from_secs(2)).await.err();
    assert!(
        matches!(err, Some(MeshError::Refused { .. } | MeshError::Timeout { .. })),
        "a tunnel to a node that does not run must fail, got {err:?}"
    );
    assert!(crate::env::now() - started < Duration::from_secs(4), "the tunnel deadline must be honoured");

    // Dropping the tunnel listener closes the data port. Opening may still succeed where tunnels
    // share a connection (the open is local until the first frame); then the tunnel ends at once.
    drop(tunnels);
    match client.open_tunnel(&fixture.server_data_addr, Duration::from_secs(2)).await {
        Err(_) => {}
        Ok(mut stream) => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = stream.write_all(b"anyone?").await;
            let mut buf = [0u8; 1];
            let read = crate::env::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            assert!(
                matches!(read, Ok(Ok(0) | Err(_))),
                "a tunnel to a closed data port must fail or end at once, got {read:?}"
            );
        }
    }
}
