//! What only the Engine API shows, in its JSON shapes: `/version`, `/info` (with its `Swarm`
//! block), `/swarm` and tasks. Services, nodes and networks are the `shoal … inspect` shapes
//! ([`crate::cli::inspect`]).

use serde_json::{json, Value};
use std::collections::BTreeMap;

use shoal_core::api::{ClusterSpec, Network, Node, Task};
use shoal_core::control::{ClusterInfo, NodeView};

use super::{API_VERSION, MIN_API_VERSION};
use crate::cli::inspect::{nanos, object, task_template, time};
use crate::local_api::SwarmStatus;

/// shoal's version, as the engine's `Version` (the platform name says it is shoal).
const VERSION: &str = env!("CARGO_PKG_VERSION");

use crate::format::go_arch as arch;

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The `Server` header: Docker's shape, `Docker/<version> (<os>)`.
pub fn server_header() -> String {
    format!("Docker/{VERSION}-shoal (linux)")
}

/// `GET /version` (`types.Version`).
pub fn version() -> Value {
    let kernel = kernel_version();
    json!({
        "Platform": {"Name": format!("shoal {VERSION}")},
        "Components": [{
            "Name": "Engine",
            "Version": VERSION,
            "Details": {
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "Os": "linux",
                "Arch": arch(),
                "KernelVersion": kernel,
                "Experimental": "false",
                "GitCommit": "",
                "GoVersion": "n/a (shoal is written in Rust)",
            },
        }],
        "Version": VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "n/a (shoal is written in Rust)",
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": kernel,
        "Experimental": false,
    })
}

/// A cluster's settings as Docker's `swarm.Spec`.
fn cluster_spec(spec: &ClusterSpec) -> Value {
    json!({
        "Name": spec.name,
        "Labels": {},
        "Orchestration": {"TaskHistoryRetentionLimit": spec.task_history_retention_limit},
        "Raft": {
            "SnapshotInterval": spec.snapshot_interval,
            "KeepOldSnapshots": 0,
            "LogEntriesForSlowFollowers": 500,
            "ElectionTick": spec.election_tick,
            "HeartbeatTick": spec.heartbeat_tick,
        },
        "Dispatcher": {"HeartbeatPeriod": nanos(spec.heartbeat_period_ms)},
        "CAConfig": {"NodeCertExpiry": nanos(spec.node_cert_expiry_ms)},
        "TaskDefaults": {},
        "EncryptionConfig": {"AutoLockManagers": spec.autolock_managers},
    })
}

/// `swarm.ClusterInfo`: what `/swarm` and `/info`'s `Swarm.Cluster` share.
fn cluster(info: &ClusterInfo) -> Value {
    json!({
        "ID": info.cluster_id,
        "Version": {"Index": info.meta.version},
        "CreatedAt": time(info.meta.created_at_ms),
        "UpdatedAt": time(info.meta.updated_at_ms),
        "Spec": cluster_spec(&info.spec),
        "TLSInfo": {},
        "RootRotationInProgress": info.root_rotation_in_progress,
        // shoal's networks take /16s of 10.0.0.0/8 (DESIGN §3).
        "DefaultAddrPool": ["10.0.0.0/8"],
        "SubnetSize": 16,
        "DataPathPort": 4789,
    })
}

/// `GET /swarm`: the cluster with its join tokens.
pub fn swarm(info: &ClusterInfo, worker_token: &str, manager_token: &str, root_ca_pem: &str) -> Value {
    let mut value = cluster(info);
    value["JoinTokens"] = json!({"Worker": worker_token, "Manager": manager_token});
    value["TLSInfo"] = tls_info(root_ca_pem);
    value
}

/// `swarm.TLSInfo` of the root CA: its PEM, and its raw DER subject and public key in base64, as
/// Docker's `/swarm` gives them (`docker swarm ca` without `--rotate` prints the PEM). A PEM that
/// does not parse gives the PEM alone.
pub fn tls_info(root_ca_pem: &str) -> Value {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let parsed = x509_parser::pem::parse_x509_pem(root_ca_pem.as_bytes()).ok().and_then(|(_, pem)| {
        let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).ok()?;
        Some((b64(cert.tbs_certificate.subject.as_raw()), b64(cert.tbs_certificate.subject_pki.raw)))
    });
    let (subject, public_key) = parsed.unwrap_or_default();
    json!({"TrustRoot": root_ca_pem, "CertIssuerSubject": subject, "CertIssuerPublicKey": public_key})
}

/// `GET /info` (`system.Info`): this host, and the swarm as this node sees it.
pub fn info(
    hostname: &str,
    status: &SwarmStatus,
    cluster_info: Option<&ClusterInfo>,
    node: Option<&NodeView>,
) -> Value {
    let node: Option<&Node> = node.map(|v| &v.node);
    let cpus = node.map(|n| n.description.resources.nano_cpus / 1_000_000_000).unwrap_or(0);
    let cpus = if cpus == 0 { std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1) } else { cpus };
    let swarm = match cluster_info {
        Some(info) => object(vec![
            ("NodeID", json!(info.node_id)),
            ("NodeAddr", json!(host_of(&info.node_addr))),
            ("LocalNodeState", json!("active")),
            ("ControlAvailable", json!(info.is_manager)),
            ("Error", json!(status.error)),
            (
                "RemoteManagers",
                // The node's own entry carries its id, as Swarm's does (clients find this manager's
                // address by it: `swarm join-token` prints it).
                Value::Array(
                    info.manager_addrs
                        .iter()
                        .map(|addr| {
                            let id = if *addr == info.node_addr { info.node_id.as_str() } else { "" };
                            json!({"NodeID": id, "Addr": addr})
                        })
                        .collect(),
                ),
            ),
            ("Nodes", json!(info.nodes)),
            ("Managers", json!(info.managers)),
            ("Cluster", cluster(info)),
        ]),
        None => json!({
            "NodeID": status.node_id,
            "NodeAddr": host_of(&status.node_addr),
            "LocalNodeState": if status.state.is_empty() { "inactive" } else { status.state.as_str() },
            "ControlAvailable": false,
            "Error": status.error,
            "RemoteManagers": null,
        }),
    };
    json!({
        "ID": cluster_info.map(|i| i.node_id.as_str()).unwrap_or(""),
        "Containers": 0,
        "ContainersRunning": 0,
        "ContainersPaused": 0,
        "ContainersStopped": 0,
        "Images": 0,
        "Driver": "",
        "Name": hostname,
        "ServerVersion": VERSION,
        "OperatingSystem": format!("shoal {VERSION}"),
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "KernelVersion": kernel_version(),
        "NCPU": cpus,
        "MemTotal": node.map(|n| n.description.resources.memory_bytes).unwrap_or(0),
        "Labels": [],
        "ExperimentalBuild": false,
        "Swarm": swarm,
        "Warnings": null,
    })
}

/// `10.0.0.1:2377` → `10.0.0.1` (Docker shows node addresses without the port).
fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// A network as `swarm.Network` (the shape inside a task's `NetworksAttachments`, which is not
/// the engine's `/networks` shape).
fn swarm_network(network: &Network) -> Value {
    let configs = if network.subnet.is_empty() { json!([]) } else { json!([{"Subnet": network.subnet}]) };
    json!({
        "ID": network.id,
        "Version": {"Index": network.meta.version},
        "CreatedAt": time(network.meta.created_at_ms),
        "UpdatedAt": time(network.meta.updated_at_ms),
        "Spec": {
            "Name": network.name,
            "Labels": network.labels,
            "DriverConfiguration": {"Name": network.driver},
            "Scope": "swarm",
            "Attachable": network.attachable,
            "Ingress": network.ingress,
        },
        "DriverState": {"Name": network.driver},
        "IPAMOptions": {"Driver": {"Name": "default"}, "Configs": configs},
    })
}

/// A task's `NetworksAttachments`: each network it is attached to, with its address there in CIDR
/// form once the agent reported one (`Addresses` is empty before).
fn networks_attachments(task: &Task, networks: &BTreeMap<String, Network>) -> Value {
    let addresses = task.status.endpoint.as_ref().map(|e| &e.addresses);
    let attachments: Vec<Value> = task
        .networks
        .iter()
        .filter_map(|id| networks.get(id))
        .map(|network| {
            let prefix = network.subnet.split_once('/').map(|(_, bits)| bits).unwrap_or("32");
            let address = addresses.and_then(|a| a.get(&network.id)).map(|ip| format!("{ip}/{prefix}"));
            json!({"Network": swarm_network(network), "Addresses": address.into_iter().collect::<Vec<_>>()})
        })
        .collect();
    if attachments.is_empty() {
        Value::Null
    } else {
        Value::Array(attachments)
    }
}

/// One task as `swarm.Task`; `networks` (by id) fill in its `NetworksAttachments`.
pub fn task(task: &Task, networks: &BTreeMap<String, Network>) -> Value {
    let status = &task.status;
    let container_status = object(vec![
        ("ContainerID", json!(status.container_id)),
        ("ExitCode", status.exit_code.map(|c| json!(c)).unwrap_or(Value::Null)),
    ]);
    let mut value = object(vec![
        ("ID", json!(task.id)),
        ("Version", json!({"Index": task.meta.version})),
        ("CreatedAt", time(task.meta.created_at_ms)),
        ("UpdatedAt", time(task.meta.updated_at_ms)),
        ("Spec", task_template(&task.spec, &Default::default())),
        ("ServiceID", json!(task.service_id)),
        ("Slot", if task.slot == 0 { Value::Null } else { json!(task.slot) }),
        ("NodeID", json!(task.node_id)),
        (
            "Status",
            object(vec![
                ("Timestamp", time(status.timestamp_ms)),
                ("State", json!(status.state.as_str())),
                ("Message", json!(status.message)),
                ("Err", json!(status.err)),
                ("ContainerStatus", container_status),
                ("PortStatus", json!({})),
            ]),
        ),
        ("DesiredState", json!(task.desired_state.as_str())),
        ("NetworksAttachments", networks_attachments(task, networks)),
        // Docker's `JobIteration` (the service version the task was made from, which a job's
        // `JobStatus.JobIteration` names): shown for every task, as shoal's tasks all carry it.
        ("JobIteration", if task.spec_version == 0 { Value::Null } else { json!({"Index": task.spec_version}) }),
    ]);
    value["Labels"] = json!({});
    value
}
