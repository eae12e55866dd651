//! The Engine API's JSON read back into shoal's types: what [`crate::cli::inspect`] and
//! [`crate::engine_api::encode`] write, so the CLI's renderers (which work on shoal's types) print
//! what they printed before. Specs go through the same decoder the server uses for what clients send
//! ([`crate::engine_api::decode::service_spec`]), so one pair of functions defines each shape.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use shoal_core::api::{
    Availability, ClusterSpec, JobStatus, ManagerStatus, Meta, Network, Node, NodeDescription, NodeRole, NodeSpec,
    NodeState, NodeStatus, NodeTlsInfo, PortConfig, Resources, Service, ServiceSpec, Task, TaskEndpoint, TaskState,
    TaskStatus, UpdateState, UpdateStatus,
};
use shoal_core::control::{ClusterInfo, NodeView, ServiceView};

use crate::engine_api::decode::{self, DecodeError};
use crate::local_api::SwarmStatus;

type Result<T> = std::result::Result<T, DecodeError>;

fn obj(value: &Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

fn s(value: &Value, key: &str) -> String {
    value.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn u(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn b(value: &Value, key: &str) -> bool {
    value.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn labels(value: &Value, key: &str) -> BTreeMap<String, String> {
    decode::labels(&obj(value), key).unwrap_or_default()
}

/// Go's RFC 3339 time as Unix milliseconds; the zero time (or none) is 0.
pub fn time_ms(value: &Value) -> u64 {
    value
        .as_str()
        .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
        .map(|t| t.timestamp_millis())
        .filter(|ms| *ms > 0)
        .map_or(0, |ms| ms as u64)
}

fn meta(value: &Value) -> Meta {
    Meta {
        version: value["Version"]["Index"].as_u64().unwrap_or(0),
        created_at_ms: time_ms(&value["CreatedAt"]),
        updated_at_ms: time_ms(&value["UpdatedAt"]),
    }
}

fn spec(value: &Value) -> Result<ServiceSpec> {
    let body = serde_json::to_vec(value).map_err(|e| DecodeError(e.to_string()))?;
    decode::service_spec(&body)
}

fn ports(value: &Value) -> Result<Vec<PortConfig>> {
    let mut out = Vec::new();
    for port in value.as_array().into_iter().flatten() {
        out.push(decode::port_config(&obj(port))?);
    }
    Ok(out)
}

/// A service as `GET /services/{id}` (and `/services?status=true`) shows it.
pub fn service_view(value: &Value) -> Result<ServiceView> {
    let update_status = value.get("UpdateStatus").filter(|v| v.is_object()).map(|status| UpdateStatus {
        state: serde_json::from_value(status["State"].clone()).unwrap_or(UpdateState::Updating),
        started_at_ms: time_ms(&status["StartedAt"]),
        completed_at_ms: time_ms(&status["CompletedAt"]),
        message: s(status, "Message"),
        spec_version: 0,
    });
    let job_status = value.get("JobStatus").filter(|v| v.is_object()).map(|job| JobStatus {
        iteration: job["JobIteration"]["Index"].as_u64().unwrap_or(0),
        last_execution_ms: time_ms(&job["LastExecution"]),
    });
    let previous_spec = match value.get("PreviousSpec").filter(|v| v.is_object()) {
        Some(previous) => Some(spec(previous)?),
        None => None,
    };
    let status = &value["ServiceStatus"];
    let service = Service {
        id: s(value, "ID"),
        meta: meta(value),
        spec: spec(&value["Spec"])?,
        previous_spec,
        // A job's current iteration is the service version its tasks run (`jobs::iteration`); other
        // services' versions are not in Docker's shapes, and nothing the CLI shows needs them.
        spec_version: job_status.as_ref().map_or(0, |job| job.iteration),
        update_status,
        endpoint_ports: ports(&value["Endpoint"]["Ports"])?,
        job_status,
    };
    Ok(ServiceView {
        service,
        running: u(status, "RunningTasks"),
        desired: u(status, "DesiredTasks"),
        completed: u(status, "CompletedTasks"),
    })
}

fn task_state(text: &str) -> TaskState {
    serde_json::from_value(Value::String(text.to_string())).unwrap_or(TaskState::New)
}

/// A task as `GET /tasks` shows it. `service_names` (by service id) fill in its name, which Docker's
/// `swarm.Task` does not carry (the `docker` CLI looks the services up too).
pub fn task(value: &Value, service_names: &BTreeMap<String, String>) -> Result<Task> {
    let status = &value["Status"];
    let container = &status["ContainerStatus"];
    let template = serde_json::json!({"Name": "", "TaskTemplate": value["Spec"]});
    let mut networks = Vec::new();
    let mut addresses = BTreeMap::new();
    for attachment in value["NetworksAttachments"].as_array().into_iter().flatten() {
        let id = s(&attachment["Network"], "ID");
        if let Some(address) = attachment["Addresses"].as_array().and_then(|a| a.first()).and_then(Value::as_str) {
            addresses.insert(id.clone(), address.split('/').next().unwrap_or(address).to_string());
        }
        networks.push(id);
    }
    let service_id = s(value, "ServiceID");
    Ok(Task {
        id: s(value, "ID"),
        meta: meta(value),
        service_name: service_names.get(&service_id).cloned().unwrap_or_default(),
        service_id,
        slot: u(value, "Slot"),
        node_id: s(value, "NodeID"),
        spec_version: value["JobIteration"]["Index"].as_u64().unwrap_or(0),
        spec: spec(&template)?.task,
        desired_state: task_state(&s(value, "DesiredState")),
        status: TaskStatus {
            state: task_state(&s(status, "State")),
            message: s(status, "Message"),
            err: s(status, "Err"),
            timestamp_ms: time_ms(&status["Timestamp"]),
            container_id: s(container, "ContainerID"),
            exit_code: container.get("ExitCode").and_then(Value::as_i64),
            started_at_ms: 0,
            endpoint: (!addresses.is_empty()).then(|| TaskEndpoint { addresses, ..Default::default() }),
        },
        networks,
        ..Task::default()
    })
}

/// `Status.State` of a node.
fn node_state(text: &str) -> NodeState {
    match text {
        "ready" => NodeState::Ready,
        "down" => NodeState::Down,
        "disconnected" => NodeState::Disconnected,
        _ => NodeState::Unknown,
    }
}

/// A node as `GET /nodes/{id}` shows it.
pub fn node_view(value: &Value) -> Result<NodeView> {
    let spec = &value["Spec"];
    let description = &value["Description"];
    let status = &value["Status"];
    let manager = value.get("ManagerStatus").filter(|m| m.is_object());
    let role = if s(spec, "Role") == "manager" { NodeRole::Manager } else { NodeRole::Worker };
    let availability = match s(spec, "Availability").as_str() {
        "pause" => Availability::Pause,
        "drain" => Availability::Drain,
        _ => Availability::Active,
    };
    let tls = &description["TLSInfo"];
    let tls_info = tls.is_object().then(|| NodeTlsInfo {
        trust_roots: tls["ShoalTrustRoots"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect(),
        cert_issuer: s(tls, "ShoalCertIssuer"),
    });
    let node = Node {
        id: s(value, "ID"),
        meta: meta(value),
        spec: NodeSpec { desired_role: role, availability, labels: labels(spec, "Labels") },
        description: NodeDescription {
            hostname: s(description, "Hostname"),
            resources: Resources {
                nano_cpus: u(&description["Resources"], "NanoCPUs"),
                memory_bytes: u(&description["Resources"], "MemoryBytes"),
            },
            os: s(&description["Platform"], "OS"),
            arch: s(&description["Platform"], "Architecture"),
            engine_version: s(&description["Engine"], "EngineVersion"),
            engine_labels: labels(&description["Engine"], "Labels"),
            data_addr: String::new(),
            tls_info,
        },
        status: NodeStatus {
            state: node_state(&s(status, "State")),
            message: s(status, "Message"),
            addr: s(status, "Addr"),
        },
        role: if manager.is_some() { NodeRole::Manager } else { NodeRole::Worker },
        manager_status: manager.map(|m| ManagerStatus { raft_id: 0, addr: s(m, "Addr") }),
    };
    let reachability = match manager {
        Some(m) => match s(m, "Reachability").as_str() {
            "unknown" => String::new(),
            other => other.to_string(),
        },
        None => String::new(),
    };
    Ok(NodeView { node, leader: manager.is_some_and(|m| b(m, "Leader")), reachability })
}

/// A network as `GET /networks/{id}` shows it.
pub fn network(value: &Value) -> Network {
    let subnet = value["IPAM"]["Config"].as_array().and_then(|c| c.first()).map(|c| s(c, "Subnet")).unwrap_or_default();
    Network {
        id: s(value, "Id"),
        meta: Meta { version: 0, created_at_ms: time_ms(&value["Created"]), updated_at_ms: 0 },
        name: s(value, "Name"),
        driver: s(value, "Driver"),
        subnet,
        attachable: b(value, "Attachable"),
        ingress: b(value, "Ingress"),
        labels: labels(value, "Labels"),
        leases: BTreeMap::new(),
    }
}

/// `/info`'s `Swarm` block as the node's standing, with the daemon's version.
pub fn swarm_status(info: &Value) -> SwarmStatus {
    let swarm = &info["Swarm"];
    SwarmStatus {
        state: match s(swarm, "LocalNodeState").as_str() {
            "" => "inactive".to_string(),
            other => other.to_string(),
        },
        node_id: s(swarm, "NodeID"),
        node_addr: s(swarm, "NodeAddr"),
        error: s(swarm, "Error"),
        version: s(info, "ServerVersion"),
    }
}

/// The cluster as `/info`'s `Swarm` block shows it to a manager; `None` on a worker or outside a swarm.
pub fn cluster_info(info: &Value) -> Option<ClusterInfo> {
    let swarm = &info["Swarm"];
    if !b(swarm, "ControlAvailable") {
        return None;
    }
    let cluster = &swarm["Cluster"];
    let spec = &cluster["Spec"];
    let ns_to_ms = |v: &Value| v.as_u64().unwrap_or(0) / 1_000_000;
    let node_id = s(swarm, "NodeID");
    let managers: Vec<&Value> = swarm["RemoteManagers"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let own = managers.iter().find(|m| s(m, "NodeID") == node_id).map(|m| s(m, "Addr"));
    let defaults = ClusterSpec::default();
    Some(ClusterInfo {
        node_addr: own.unwrap_or_else(|| s(swarm, "NodeAddr")),
        node_id,
        is_manager: true,
        cluster_id: s(cluster, "ID"),
        managers: u(swarm, "Managers"),
        nodes: u(swarm, "Nodes"),
        spec: ClusterSpec {
            name: s(spec, "Name"),
            task_history_retention_limit: u(&spec["Orchestration"], "TaskHistoryRetentionLimit"),
            heartbeat_period_ms: ns_to_ms(&spec["Dispatcher"]["HeartbeatPeriod"]),
            snapshot_interval: u(&spec["Raft"], "SnapshotInterval"),
            election_tick: u(&spec["Raft"], "ElectionTick"),
            heartbeat_tick: u(&spec["Raft"], "HeartbeatTick"),
            node_cert_expiry_ms: ns_to_ms(&spec["CAConfig"]["NodeCertExpiry"]),
            autolock_managers: b(&spec["EncryptionConfig"], "AutoLockManagers"),
            ..defaults
        },
        manager_addrs: managers.iter().map(|m| s(m, "Addr")).collect(),
        leader_addr: None,
        meta: meta(cluster),
        root_rotation_in_progress: b(cluster, "RootRotationInProgress"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::api::{JobStatus, NodeRole, PortConfig, PublishMode, RestartBackoff, ServiceMode, TaskSpec};

    use crate::cli::inspect;

    fn meta(version: u64) -> Meta {
        Meta { version, created_at_ms: 1_700_000_000_123, updated_at_ms: 1_700_000_001_456 }
    }

    #[test]
    fn a_service_reads_back_as_inspect_showed_it() {
        let mut spec = ServiceSpec::new("web", "shoal-test/busybox:latest");
        spec.mode = ServiceMode::ReplicatedJob { max_concurrent: 2, total_completions: 5 };
        spec.task.restart_policy.backoff = RestartBackoff::Exponential;
        spec.depends_on = vec!["db".into()];
        spec.labels.insert("Owner.Case".into(), "kept".into());
        let mut previous = spec.clone();
        previous.task.image = "old:1".into();
        let port = PortConfig {
            protocol: "tcp".into(),
            target_port: 80,
            published_port: 30001,
            publish_mode: PublishMode::Ingress,
        };
        let service = Service {
            id: "s1".into(),
            meta: meta(7),
            spec,
            previous_spec: Some(previous),
            spec_version: 3,
            update_status: Some(UpdateStatus {
                state: UpdateState::RollbackCompleted,
                started_at_ms: 1_700_000_000_500,
                completed_at_ms: 1_700_000_002_000,
                message: "rollback completed".into(),
                spec_version: 0,
            }),
            endpoint_ports: vec![port],
            job_status: Some(JobStatus { iteration: 3, last_execution_ms: 1_700_000_000_900 }),
        };
        let view = ServiceView { service, running: 2, desired: 2, completed: 1 };
        let mut shown = inspect::service(&view);
        shown["ServiceStatus"] = serde_json::json!({"RunningTasks": 2, "DesiredTasks": 2, "CompletedTasks": 1});
        assert_eq!(service_view(&shown).unwrap(), view);
    }

    #[test]
    fn a_node_reads_back_with_its_manager_status() {
        let view = NodeView {
            node: Node {
                id: "n1".into(),
                meta: meta(4),
                spec: NodeSpec {
                    desired_role: NodeRole::Manager,
                    availability: Availability::Drain,
                    labels: [("zone".to_string(), "a".to_string())].into(),
                },
                description: NodeDescription {
                    hostname: "m1".into(),
                    resources: Resources { nano_cpus: 2_000_000_000, memory_bytes: 1 << 30 },
                    os: "linux".into(),
                    arch: "x86_64".into(),
                    engine_version: "shoal".into(),
                    engine_labels: Default::default(),
                    data_addr: String::new(),
                    tls_info: None,
                },
                status: NodeStatus { state: NodeState::Ready, message: String::new(), addr: "127.0.0.1".into() },
                role: NodeRole::Manager,
                manager_status: Some(ManagerStatus { raft_id: 0, addr: "127.0.0.1:2377".into() }),
            },
            leader: true,
            reachability: "reachable".into(),
        };
        assert_eq!(node_view(&inspect::node(&view)).unwrap(), view);
    }

    #[test]
    fn a_task_reads_back_with_its_service_name_and_addresses() {
        let network = Network {
            id: "net1".into(),
            meta: meta(1),
            name: "back".into(),
            driver: "overlay".into(),
            subnet: "10.1.0.0/16".into(),
            attachable: false,
            ingress: false,
            labels: Default::default(),
            leases: Default::default(),
        };
        let task = Task {
            id: "t1".into(),
            meta: meta(3),
            service_id: "s1".into(),
            service_name: "web".into(),
            slot: 2,
            node_id: "n1".into(),
            spec: TaskSpec {
                image: "shoal-test/busybox:latest".into(),
                networks: vec!["net1".into()],
                ..Default::default()
            },
            spec_version: 4,
            desired_state: TaskState::Running,
            status: TaskStatus {
                state: TaskState::Failed,
                message: "started".into(),
                err: "task: non-zero exit (1)".into(),
                timestamp_ms: 1_700_000_003_000,
                container_id: "c1".into(),
                exit_code: Some(1),
                started_at_ms: 0,
                endpoint: Some(TaskEndpoint {
                    addresses: [("net1".to_string(), "10.1.0.5".to_string())].into(),
                    ..Default::default()
                }),
            },
            networks: vec!["net1".into()],
            ..Task::default()
        };
        let shown = crate::engine_api::encode::task(&task, &[("net1".to_string(), network)].into());
        let names = [("s1".to_string(), "web".to_string())].into();
        let read = super::task(&shown, &names).unwrap();
        assert_eq!(read, task);
        assert_eq!(read.name(), "web.2");
    }
}
