//! The simulator's data plane beyond the shared mesh conformance suite: what crashes, cuts, link
//! delays and bridges do to service traffic, and how simulated containers serve and stop.
#![cfg(madsim)]

use std::io::ErrorKind;
use std::time::Duration;

use shoal_core::env::{BridgeSpec, ContainerSpec, ContainerState, Executor, MeshError, PortBinding};
use shoal_sim::executor::{Behavior, SimExecutor};
use shoal_sim::mesh_net::{Owner, SimMeshNet, SimStream};
use shoal_sim::net::{LinkPolicy, SimNet};
use shoal_sim::serve::local_spawner;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn hosts(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// One request line out, one answer line back.
async fn ask(stream: &mut SimStream) -> std::io::Result<String> {
    stream.write_all(b"GET\n").await?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte).await? {
            0 => return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed before the answer")),
            _ if byte[0] == b'\n' => return Ok(String::from_utf8_lossy(&answer).into_owned()),
            _ => answer.push(byte[0]),
        }
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[madsim::test]
async fn a_crashed_host_resets_its_connections_and_refuses_new_ones() {
    let mesh = SimMeshNet::new(SimNet::new());
    let mut listener = mesh.listen(Owner::daemon("worker-1"), "worker-1:8080").unwrap();
    let mut client = mesh.dial(&Owner::daemon("manager-1"), "worker-1:8080", SECOND).await.unwrap();
    let (mut server, peer) = listener.accept_stream().await.unwrap();
    assert!(peer.starts_with("manager-1:"), "{peer}");
    client.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 2];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hi");

    mesh.host_down("worker-1");
    let err = client.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "an open stream to a crashed host is reset");
    assert_eq!(client.write(b"x").await.unwrap_err().kind(), ErrorKind::ConnectionReset);
    let err = mesh.dial(&Owner::daemon("manager-1"), "worker-1:8080", SECOND).await.unwrap_err();
    assert!(matches!(err, MeshError::Refused { .. }), "a crashed host refuses: {err:?}");
    assert!(listener.accept_stream().await.is_err(), "the crashed host's listener is closed");
}

#[madsim::test]
async fn a_dropped_listener_refuses_and_a_dropped_stream_ends_its_peer() {
    let mesh = SimMeshNet::new(SimNet::new());
    let mut listener = mesh.listen(Owner::daemon("worker-1"), "0.0.0.0:80").unwrap();
    // A wildcard listener answers for the host's own name.
    let mut client = mesh.dial(&Owner::daemon("worker-2"), "worker-1:80", SECOND).await.unwrap();
    let (server, _) = listener.accept_stream().await.unwrap();
    drop(server);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "the peer of a dropped stream reads EOF");
    assert_eq!(client.write(b"x").await.unwrap_err().kind(), ErrorKind::BrokenPipe);
    drop(listener);
    let err = mesh.dial(&Owner::daemon("worker-2"), "worker-1:80", SECOND).await.unwrap_err();
    assert!(matches!(err, MeshError::Refused { .. }), "{err:?}");
}

#[madsim::test]
async fn a_cut_link_holds_bytes_until_it_heals_and_dials_across_it_time_out() {
    let net = SimNet::new();
    let mesh = SimMeshNet::new(net.clone());
    let mut listener = mesh.listen(Owner::daemon("worker-1"), "worker-1:8080").unwrap();
    let mut client = mesh.dial(&Owner::daemon("manager-1"), "worker-1:8080", SECOND).await.unwrap();
    let (mut server, _) = listener.accept_stream().await.unwrap();
    net.partition(&hosts(&["manager-1"]), &hosts(&["worker-1"]));
    client.write_all(b"held").await.unwrap();
    let mut buf = [0u8; 4];
    let waited = shoal_core::env::timeout(Duration::from_secs(2), server.read_exact(&mut buf)).await;
    assert!(waited.is_err(), "nothing crosses a cut link");
    let started = shoal_core::env::now();
    let err = mesh.dial(&Owner::daemon("manager-1"), "worker-1:8080", Duration::from_millis(1500)).await.unwrap_err();
    assert!(matches!(err, MeshError::Timeout { .. }), "a dial across a cut is silence until the deadline: {err:?}");
    assert!(shoal_core::env::now() - started >= Duration::from_millis(1500));
    net.heal();
    shoal_core::env::timeout(Duration::from_secs(2), server.read_exact(&mut buf))
        .await
        .expect("after the heal")
        .unwrap();
    assert_eq!(&buf, b"held", "the held bytes arrive once the link heals");
}

#[madsim::test]
async fn every_write_takes_the_links_delay() {
    let net = SimNet::new();
    net.set_link(
        "manager-1",
        "worker-1",
        LinkPolicy { delay_min: Duration::from_millis(100), delay_max: Duration::from_millis(100), loss: 0.0 },
    );
    let mesh = SimMeshNet::new(net);
    let mut listener = mesh.listen(Owner::daemon("worker-1"), "worker-1:8080").unwrap();
    let started = shoal_core::env::now();
    let mut client = mesh.dial(&Owner::daemon("manager-1"), "worker-1:8080", SECOND).await.unwrap();
    let took = shoal_core::env::now() - started;
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(201),
        "a dial is one round trip: {took:?}"
    );
    let (mut server, _) = listener.accept_stream().await.unwrap();
    let sent = shoal_core::env::now();
    client.write_all(b"one").await.unwrap();
    let mut buf = [0u8; 3];
    server.read_exact(&mut buf).await.unwrap();
    let took = shoal_core::env::now() - sent;
    assert!(took >= Duration::from_millis(100) && took < Duration::from_millis(101), "{took:?}");
}

#[madsim::test]
async fn a_bridge_address_is_reachable_only_from_its_host() {
    let mesh = SimMeshNet::new(SimNet::new());
    let _container = mesh.listen(Owner::container("worker-1", "c1"), "10.0.1.130:80").unwrap();
    assert!(mesh.dial(&Owner::daemon("worker-1"), "10.0.1.130:80", SECOND).await.is_ok());
    let err = mesh.dial(&Owner::daemon("manager-1"), "10.0.1.130:80", SECOND).await.unwrap_err();
    assert!(matches!(&err, MeshError::Refused { reason, .. } if reason == "no route to host"), "{err:?}");
}

fn bridge(name: &str, subnet: &str, gateway: &str, range: &str) -> BridgeSpec {
    BridgeSpec {
        network_id: format!("{name}-id"),
        name: name.into(),
        device: "sh0".into(),
        subnet: subnet.into(),
        gateway: gateway.into(),
        ip_range: range.into(),
        ..BridgeSpec::default()
    }
}

fn spec(name: &str, image: &str, networks: Vec<BridgeSpec>) -> ContainerSpec {
    ContainerSpec { name: name.into(), image: image.into(), networks, ..ContainerSpec::default() }
}

async fn started(executor: &SimExecutor, spec: ContainerSpec) -> String {
    executor.prepare_image(&spec.image, None).await.unwrap();
    let id = executor.create(&spec).await.unwrap();
    executor.start(&id).await.unwrap();
    id
}

#[madsim::test]
async fn containers_get_bridge_addresses_serve_their_ports_and_drain_on_stop() {
    let mesh = SimMeshNet::new(SimNet::new());
    let executor = SimExecutor::with_mesh("worker-1", mesh.clone(), local_spawner());
    let net = bridge("shoal-app-w1", "10.0.1.0/24", "10.0.1.1", "10.0.1.128/25");
    executor.ensure_network(&net).await.unwrap();
    assert_eq!(executor.exposed_ports("nginx:1.25").await.unwrap(), vec![("tcp".to_string(), 80)]);
    let one = started(&executor, spec("web.1.t1", "nginx:1.25", vec![net.clone()])).await;
    let two = started(&executor, spec("web.2.t2", "nginx:1.25", vec![net.clone()])).await;
    let address = |id: String| {
        let executor = executor.clone();
        async move { executor.inspect(&id).await.unwrap().addresses["shoal-app-w1"].clone() }
    };
    assert_eq!(address(one.clone()).await, "10.0.1.128", "the lowest address of the range");
    assert_eq!(address(two.clone()).await, "10.0.1.129");

    let node = Owner::daemon("worker-1");
    let mut conn = mesh.dial(&node, "10.0.1.128:80", SECOND).await.unwrap();
    assert_eq!(ask(&mut conn).await.unwrap(), "web.1.t1");
    assert_eq!(ask(&mut conn).await.unwrap(), "web.1.t1", "the connection is kept for more requests");

    // SIGTERM: the idle connection is closed, the container exits well within its grace.
    let began = shoal_core::env::now();
    executor.stop(&one, Duration::from_secs(10)).await.unwrap();
    assert!(shoal_core::env::now() - began < SECOND, "an idle connection does not hold the stop");
    assert_eq!(executor.inspect(&one).await.unwrap().state, ContainerState::Exited { code: 143 });
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.unwrap();
    let err = mesh.dial(&node, "10.0.1.128:80", SECOND).await.unwrap_err();
    assert!(matches!(err, MeshError::Refused { .. }), "a stopped container's port is closed: {err:?}");
    let mut other = mesh.dial(&node, "10.0.1.129:80", SECOND).await.unwrap();
    assert_eq!(ask(&mut other).await.unwrap(), "web.2.t2");

    // The bridge stays while a container is attached; an overlapping one is refused.
    let err = executor.remove_network("shoal-app-w1").await.unwrap_err().to_string();
    assert!(err.contains("has active endpoints"), "{err}");
    let err = executor.ensure_network(&bridge("shoal-other-w1", "10.0.1.0/25", "10.0.1.1", "10.0.1.64/26")).await;
    assert!(err.unwrap_err().to_string().contains("Pool overlaps with other one on this address space"));
}

#[madsim::test]
async fn a_request_still_running_when_the_grace_ends_is_reset() {
    let mesh = SimMeshNet::new(SimNet::new());
    let executor = SimExecutor::with_mesh("worker-1", mesh.clone(), local_spawner());
    executor.set_behavior(
        "slow:1",
        Behavior {
            answer_delay: Duration::from_secs(30),
            exposes: Some(vec![("tcp".into(), 80)]),
            ..Behavior::default()
        },
    );
    let id = started(&executor, spec("slow.1.t1", "slow:1", Vec::new())).await;
    assert_eq!(executor.inspect(&id).await.unwrap().addresses["host"], "worker-1", "host networking");
    let mut conn = mesh.dial(&Owner::daemon("worker-1"), "worker-1:80", SECOND).await.unwrap();
    let asked = shoal_core::env::spawn(async move { ask(&mut conn).await });
    madsim::time::sleep(Duration::from_millis(100)).await;
    executor.stop(&id, Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        executor.inspect(&id).await.unwrap().state,
        ContainerState::Exited { code: 137 },
        "killed after the grace"
    );
    let err = asked.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
}

#[madsim::test]
async fn a_taken_host_port_fails_the_start_in_dockers_words() {
    let mesh = SimMeshNet::new(SimNet::new());
    let executor = SimExecutor::with_mesh("worker-1", mesh.clone(), local_spawner());
    let binding = PortBinding { protocol: "tcp".into(), target: 80, host_ip: String::new(), published: 8080 };
    let with_port =
        |name: &str| ContainerSpec { port_bindings: vec![binding.clone()], ..spec(name, "nginx:1.25", Vec::new()) };
    let first = started(&executor, with_port("web.1.a")).await;
    let mut conn = mesh.dial(&Owner::daemon("manager-1"), "worker-1:8080", SECOND).await.unwrap();
    assert_eq!(ask(&mut conn).await.unwrap(), "web.1.a", "the published port reaches the container");
    let second = executor.create(&with_port("web.2.b")).await.unwrap();
    let err = executor.start(&second).await.unwrap_err().to_string();
    assert!(err.contains("Bind for 0.0.0.0:8080 failed: port is already allocated"), "{err}");
    assert_eq!(executor.inspect(&second).await.unwrap().state, ContainerState::Created);
    executor.stop(&first, SECOND).await.unwrap();
    executor.start(&second).await.expect("the port is free once the first container stopped");
}

#[madsim::test]
async fn a_bridged_container_shares_no_ports_with_its_host() {
    let mesh = SimMeshNet::new(SimNet::new());
    let executor = SimExecutor::with_mesh("worker-1", mesh.clone(), local_spawner());
    let net = bridge("shoal-app-w1", "10.0.1.0/24", "10.0.1.1", "10.0.1.128/25");
    executor.ensure_network(&net).await.unwrap();
    // A host-networked nginx holds 0.0.0.0:80 first; a bridged one still serves its own port 80.
    let host = started(&executor, spec("other.1.h", "nginx:1.25", Vec::new())).await;
    let bridged = started(&executor, spec("web.1.b", "nginx:1.25", vec![net])).await;
    let node = Owner::daemon("worker-1");
    let mut conn = mesh.dial(&node, "10.0.1.128:80", SECOND).await.unwrap();
    assert_eq!(ask(&mut conn).await.unwrap(), "web.1.b");
    let mut conn = mesh.dial(&node, "worker-1:80", SECOND).await.unwrap();
    assert_eq!(ask(&mut conn).await.unwrap(), "other.1.h");
    // In the host's namespace a wildcard port clashes with the same port on a host address.
    let err = mesh.listen(Owner::daemon("worker-1"), "worker-1:80").err();
    assert!(matches!(err, Some(MeshError::Listen { .. })), "{err:?}");
    let _ = (host, bridged);
}
