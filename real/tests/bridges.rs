//! The Docker executor's bridges (DESIGN §8) against the real engine: a bridge network per
//! (network, node) with the node's lease as its IPAM, containers attached to one or more bridges
//! with an address from the lease's range, the mesh resolver as DNS, `mode=host` ports bound on a
//! node address; an attached bridge cannot be removed; a taken host port fails the start clearly.
//!
//! Needs a running engine (`shoal-test/busybox:latest` is built from busybox-static when missing), and root. The
//! subnets are 10.213.64.0/24 and 10.213.65.0/24, which no interface of the test machines uses;
//! the only traffic is from this host to the bridges the test made and to 127.0.0.16.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal::docker::{DockerExecutor, DockerOptions, PullPolicy};
use shoal_core::env::executor::{LABEL_NODE_ID, LABEL_TASK_ID};
use shoal_core::env::{BridgeSpec, ContainerSpec, ContainerState, Executor, ExecutorError, PortBinding};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use shoal_testimage::TEST_IMAGE;
/// Serves its own hostname over HTTP on port 80.
const SERVE_HOSTNAME: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}

async fn docker() -> Arc<DockerExecutor> {
    // Never pull: the test image is local, and nothing is looked up on a registry.
    let docker = DockerExecutor::connect(DockerOptions { pull: PullPolicy::Never })
        .await
        .expect("this test needs a running Docker engine (.ci/run starts one)");
    shoal_testimage::require();
    docker.prepare_image(TEST_IMAGE, None).await.expect("the engine finds the test image shoal_testimage ensured");
    Arc::new(docker)
}

/// A bridge of this test: `third` picks 10.213.<third>.0/24, its lower half for the gateway and
/// VIPs, its upper half for containers.
fn bridge(owner: &str, third: u8, device_suffix: &str) -> BridgeSpec {
    BridgeSpec {
        network_id: format!("net{third}"),
        name: format!("{owner}-{third}"),
        device: format!("shtb{}{device_suffix}", std::process::id() % 10_000),
        subnet: format!("10.213.{third}.0/24"),
        gateway: format!("10.213.{third}.1"),
        ip_range: format!("10.213.{third}.128/25"),
        aliases: vec![format!("alias{third}")],
        labels: [(LABEL_NODE_ID.to_string(), owner.to_string())].into_iter().collect(),
    }
}

/// Removes what the test made (containers by task label, then its networks), however it ends.
struct Cleanup {
    docker: Arc<DockerExecutor>,
    owner: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (docker, owner) = (self.docker.clone(), self.owner.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async {
                for container in docker.list(&[(LABEL_TASK_ID.to_string(), owner.clone())]).await.unwrap_or_default() {
                    let _ = docker.remove(&container.id).await;
                }
                for name in docker.list_networks(&[(LABEL_NODE_ID.to_string(), owner)]).await.unwrap_or_default() {
                    let _ = docker.remove_network(&name).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

fn container(owner: &str, name: &str, networks: Vec<BridgeSpec>, command: &str) -> ContainerSpec {
    ContainerSpec {
        name: format!("{owner}-{name}"),
        image: TEST_IMAGE.into(),
        command: vec!["sh".into(), "-c".into(), command.into()],
        labels: [(LABEL_TASK_ID.to_string(), owner.to_string())].into_iter().collect(),
        dns: networks.first().map(|b| vec![b.gateway.clone()]).unwrap_or_default(),
        networks,
        ..Default::default()
    }
}

/// `GET /` on `addr`, retried until it answers (the server may still be starting): the body.
async fn http_get(addr: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n").await?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(response)) if response.starts_with("HTTP/1.") => {
                return response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
            }
            other if std::time::Instant::now() > deadline => panic!("GET http://{addr}/ never answered: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test]
async fn containers_on_bridges_get_lease_addresses_dns_and_host_ports() {
    let docker = docker().await;
    let owner = unique("shoal-bridges");
    let _cleanup = Cleanup { docker: docker.clone(), owner: owner.clone() };
    let first = bridge(&owner, 64, "a");
    let second = bridge(&owner, 65, "b");

    docker.ensure_network(&first).await.expect("create the first bridge");
    docker.ensure_network(&first).await.expect("an existing matching bridge is fine");
    docker.ensure_network(&second).await.expect("create the second bridge");
    let wrong = BridgeSpec { subnet: "10.213.66.0/24".into(), gateway: "10.213.66.1".into(), ..first.clone() };
    let err = docker.ensure_network(&wrong).await.unwrap_err().to_string();
    assert!(err.contains("exists with another configuration") && err.contains("subnet"), "{err}");
    let mut names = vec![first.name.clone(), second.name.clone()];
    names.sort();
    assert_eq!(docker.list_networks(&[(LABEL_NODE_ID.to_string(), owner.clone())]).await.unwrap(), names);

    // A server on both bridges, with port 80 also bound on 127.0.0.16.
    let host_port = {
        let listener = std::net::TcpListener::bind("127.0.0.16:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut spec = container(&owner, "web", vec![first.clone(), second.clone()], SERVE_HOSTNAME);
    spec.port_bindings =
        vec![PortBinding { protocol: "tcp".into(), target: 80, host_ip: "127.0.0.16".into(), published: host_port }];
    let id = docker.create(&spec).await.expect("create a container on two bridges");
    docker.start(&id).await.expect("start");
    let summary = docker.inspect(&id).await.unwrap();
    assert_eq!(summary.state, ContainerState::Running);
    assert_eq!(
        summary.addresses.keys().cloned().collect::<Vec<_>>(),
        names,
        "inspect reports an address on each bridge, keyed by the Docker network's name"
    );
    for (bridge, ip) in [(&first, &summary.addresses[&first.name]), (&second, &summary.addresses[&second.name])] {
        let ip: std::net::Ipv4Addr = ip.parse().unwrap();
        let range: ipnet::Ipv4Net = bridge.ip_range.parse().unwrap();
        assert!(range.contains(&ip), "{ip} must come from the lease's range {}", bridge.ip_range);
    }

    // The page is the container's hostname, through the host port and straight on its bridge address.
    let hostname = http_get(&format!("127.0.0.16:{host_port}")).await;
    assert_eq!(hostname.trim(), &id[..12], "the host port reaches this container");
    let direct = http_get(&format!("{}:80", summary.addresses[&first.name])).await;
    assert_eq!(direct, hostname);

    let inspected = docker.docker().inspect_container(&id, None).await.unwrap();
    let host_config = inspected.host_config.unwrap_or_default();
    assert_eq!(host_config.dns, Some(vec![first.gateway.clone()]), "the resolver on the first bridge's gateway");
    assert_eq!(host_config.network_mode.as_deref(), Some(first.name.as_str()), "not host networking");
    let endpoints = inspected.network_settings.and_then(|n| n.networks).unwrap_or_default();
    let aliases: BTreeMap<String, Vec<String>> =
        endpoints.iter().map(|(name, e)| (name.clone(), e.aliases.clone().unwrap_or_default())).collect();
    assert!(aliases[&first.name].contains(&"alias64".to_string()), "{aliases:?}");
    assert!(aliases[&second.name].contains(&"alias65".to_string()), "{aliases:?}");

    // A bridge with a container attached cannot go; once the container is gone it can.
    let err = docker.remove_network(&first.name).await.unwrap_err().to_string();
    assert!(err.contains("error while removing network") && err.contains(&first.name), "{err}");
    docker.remove(&id).await.unwrap();
    docker.remove_network(&first.name).await.expect("remove an unused bridge");
    docker.remove_network(&first.name).await.expect("removing it again is not an error");
    docker.remove_network(&second.name).await.unwrap();
    assert!(docker.list_networks(&[(LABEL_NODE_ID.to_string(), owner.clone())]).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_taken_host_port_fails_the_start_with_dockers_words() {
    let docker = docker().await;
    let owner = unique("shoal-taken");
    let _cleanup = Cleanup { docker: docker.clone(), owner: owner.clone() };
    let lease = bridge(&owner, 67, "c");
    docker.ensure_network(&lease).await.unwrap();
    let held = std::net::TcpListener::bind("127.0.0.16:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let mut spec = container(&owner, "web", vec![lease], SERVE_HOSTNAME);
    spec.port_bindings =
        vec![PortBinding { protocol: "tcp".into(), target: 80, host_ip: "127.0.0.16".into(), published: port }];
    let id = docker.create(&spec).await.expect("create");
    let err = docker.start(&id).await.unwrap_err().to_string();
    assert!(err.contains("address already in use") || err.contains("port is already allocated"), "{err}");
    assert!(err.contains(&format!("127.0.0.16:{port}")), "the error names the address: {err}");
}

#[tokio::test]
async fn exposed_ports_come_from_the_image() {
    let docker = docker().await;
    assert_eq!(docker.exposed_ports(TEST_IMAGE).await.unwrap(), vec![], "the test image exposes nothing");
    // An image exposing 8080/tcp and 53/udp, committed from the test image (nothing is pulled).
    let owner = unique("shoal-exposed");
    let _cleanup = Cleanup { docker: docker.clone(), owner: owner.clone() };
    let id = docker.create(&container(&owner, "base", vec![], "true")).await.unwrap();
    let repo = format!("shoal-test/exposed-{}", std::process::id());
    let commit = bollard::image::CommitContainerOptions {
        container: id.clone(),
        repo: repo.clone(),
        tag: "latest".into(),
        changes: Some("EXPOSE 8080 53/udp".into()),
        ..Default::default()
    };
    docker.docker().commit_container(commit, bollard::container::Config::<String>::default()).await.unwrap();
    let image = format!("{repo}:latest");
    let ports = docker.exposed_ports(&image).await;
    let _ = docker.docker().remove_image(&image, None, None).await;
    assert_eq!(ports.unwrap(), vec![("tcp".to_string(), 8080), ("udp".to_string(), 53)]);
    let err = docker.exposed_ports("shoal-test/never-built:none").await.unwrap_err();
    assert!(matches!(err, ExecutorError::ImageUnavailable { .. }), "{err:?}");
}
