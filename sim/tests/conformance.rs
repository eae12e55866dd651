//! The seams' conformance suite against the simulator's arms. Runs on real tokio in `cargo test`
//! and on madsim's virtual runtime in `cargo sim`: the simulated parts must keep the same promises
//! as the real ones.

use std::sync::Arc;

use shoal_core::env::conformance::{self, ExecutorFixture};
use shoal_sim::disk::SimDisk;
use shoal_sim::executor::SimExecutor;
use shoal_sim::net::SimNet;

#[tokio::test]
async fn sim_transport_conforms() {
    let net = SimNet::new();
    let server = Arc::new(net.transport("manager-1:2377"));
    let client = Arc::new(net.transport("worker-1:2377"));
    conformance::transport(server, "manager-1:2377", client, "worker-9:2377").await;
}

#[tokio::test]
async fn sim_disk_conforms() {
    conformance::disk(Arc::new(SimDisk::new())).await;
}

#[tokio::test]
async fn sim_executor_conforms() {
    let executor = SimExecutor::new("worker-1");
    executor.mark_unavailable("no-such-image:0");
    let fixture = ExecutorFixture {
        image: "busybox:sim".into(),
        run_forever: vec!["sleep".into(), "3600".into()],
        exit_3: vec!["sh".into(), "-c".into(), "exit 3".into()],
        missing_image: "no-such-image:0".into(),
        name_prefix: "conformance".into(),
    };
    conformance::executor(Arc::new(executor), fixture).await;
}

#[tokio::test]
async fn sim_executor_health_conforms() {
    let fixture = ExecutorFixture {
        image: "busybox:sim".into(),
        run_forever: vec!["sleep".into(), "3600".into()],
        exit_3: vec!["sh".into(), "-c".into(), "exit 3".into()],
        missing_image: "no-such-image:0".into(),
        name_prefix: "health".into(),
    };
    conformance::executor_health(Arc::new(SimExecutor::new("worker-1")), fixture).await;
}

#[tokio::test]
async fn sim_disk_crash_keeps_only_synced_bytes() {
    use shoal_core::env::Disk;
    let disk = SimDisk::new();
    disk.append("log", b"synced").await.unwrap();
    disk.sync("log").await.unwrap();
    disk.append("log", b"-lost").await.unwrap();
    disk.append("never-synced", b"gone").await.unwrap();
    disk.write_atomic("vote", b"v").await.unwrap();
    assert_eq!(disk.crash(false), 9);
    assert_eq!(disk.read("log").await.unwrap().as_deref(), Some(&b"synced"[..]));
    assert_eq!(disk.read("never-synced").await.unwrap(), None);
    assert_eq!(disk.read("vote").await.unwrap().as_deref(), Some(&b"v"[..]));
}

/// An echo server on `manager-1:2377` and the transport of a client on `worker-1`.
async fn echo_server_and_client(net: &SimNet) -> shoal_sim::net::SimTransport {
    use shoal_core::env::Transport;
    struct Echo;
    #[async_trait::async_trait]
    impl shoal_core::env::Handler for Echo {
        async fn handle(&self, _: shoal_core::env::transport::Peer, r: Vec<u8>) -> Vec<u8> {
            r
        }
    }
    net.transport("manager-1:2377").serve(Arc::new(Echo)).await.unwrap();
    net.transport("worker-1:2377")
}

fn hosts(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn sim_partition_is_silence_and_heal_restores() {
    use shoal_core::env::{Transport, TransportError};
    use std::time::Duration;
    let net = SimNet::new();
    let client = echo_server_and_client(&net).await;
    // One way: requests get through, replies do not.
    net.cut_one_way(&hosts(&["manager-1"]), &hosts(&["worker-1"]));
    let err = client.call("manager-1:2377", b"x".to_vec(), Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err:?}");
    net.heal();
    net.partition(&hosts(&["manager-1"]), &hosts(&["worker-1"]));
    assert!(client.call("manager-1:2377", b"x".to_vec(), Duration::from_millis(200)).await.is_err());
    net.heal();
    assert_eq!(client.call("manager-1:2377", b"x".to_vec(), Duration::from_secs(1)).await.unwrap(), b"x");
}

/// The real transport's calls ride one TCP connection per peer: a request sent into a short cut
/// is retransmitted (200 ms, then 400 ms, …) and arrives once the link heals, within the caller's
/// deadline; a lost message costs a retransmission, not the whole deadline.
#[tokio::test]
async fn sim_call_across_a_short_cut_arrives_after_the_heal() {
    use shoal_core::env::{runtime, Transport};
    use shoal_sim::net::LinkPolicy;
    use std::time::Duration;
    let net = SimNet::new();
    let client = echo_server_and_client(&net).await;
    net.partition(&hosts(&["manager-1"]), &hosts(&["worker-1"]));
    let healer = net.clone();
    runtime::spawn(async move {
        runtime::sleep(Duration::from_millis(500)).await;
        healer.heal();
    });
    let start = runtime::now();
    assert_eq!(client.call("manager-1:2377", b"x".to_vec(), Duration::from_secs(15)).await.unwrap(), b"x");
    let took = runtime::now().saturating_duration_since(start);
    // Tries at 0, 200 and 600 ms: the third is the first after the heal.
    assert!(took >= Duration::from_millis(600), "arrived before the heal: {took:?}");
    if cfg!(madsim) {
        assert!(
            took < Duration::from_millis(700),
            "virtual time: the first retransmission after the heal, not {took:?}"
        );
    }
    // A quarter of all messages lost: each is retransmitted until it gets through.
    net.set_default_link(LinkPolicy { loss: 0.25, ..LinkPolicy::default() });
    for _ in 0..5 {
        assert_eq!(client.call("manager-1:2377", b"y".to_vec(), Duration::from_secs(60)).await.unwrap(), b"y");
    }
}

#[tokio::test]
async fn sim_mesh_conforms() {
    use shoal_core::env::conformance::MeshFixture;
    use shoal_sim::mesh_net::SimMeshNet;
    let mesh = SimMeshNet::new(SimNet::new());
    let fixture = MeshFixture {
        listen_addr: "manager-1:8080".into(),
        listen_addr_2: "manager-1:8081".into(),
        dead_addr: "manager-1:9".into(),
        udp_addr: "manager-1:5353".into(),
        client_udp_addr: "worker-1:5353".into(),
        server_data_addr: "manager-1:4789".into(),
        dead_data_addr: "worker-9:4789".into(),
        // Simulated peers are not authenticated.
        client_identity: None,
    };
    conformance::mesh(Arc::new(mesh.node("manager-1")), Arc::new(mesh.node("worker-1")), fixture).await;
}
