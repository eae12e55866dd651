//! Builders for scheduler and orchestrator tests: nodes, services and tasks with Swarm's defaults.

use crate::api::*;
use crate::store::StoreState;

pub fn node(id: &str) -> Node {
    Node {
        id: id.to_string(),
        meta: Meta::default(),
        spec: NodeSpec { desired_role: NodeRole::Worker, availability: Availability::Active, labels: Labels::new() },
        description: NodeDescription {
            data_addr: String::new(),
            hostname: format!("host-{id}"),
            resources: Resources { nano_cpus: 4_000_000_000, memory_bytes: 8 << 30 },
            os: "linux".into(),
            arch: "x86_64".into(),
            engine_version: "27.0".into(),
            engine_labels: Labels::new(),
            tls_info: None,
        },
        status: NodeStatus { state: NodeState::Ready, message: String::new(), addr: String::new() },
        role: NodeRole::Worker,
        manager_status: None,
    }
}

pub fn labelled(id: &str, labels: &[(&str, &str)]) -> Node {
    let mut n = node(id);
    for (k, v) in labels {
        n.spec.labels.insert(k.to_string(), v.to_string());
    }
    n
}

pub fn service(id: &str, replicas: u64) -> Service {
    let mut spec = ServiceSpec::new(id, "nginx:1.25");
    spec.mode = ServiceMode::Replicated { replicas };
    Service {
        id: id.to_string(),
        meta: Meta::default(),
        spec,
        previous_spec: None,
        spec_version: 1,
        update_status: None,
        endpoint_ports: Vec::new(),
        job_status: None,
    }
}

pub fn global(id: &str) -> Service {
    let mut s = service(id, 0);
    s.spec.mode = ServiceMode::Global;
    s
}

/// A task of `service` in `slot`, in `state`, on `node_id` ("" = unplaced).
pub fn task(id: &str, service: &Service, slot: u64, node_id: &str, state: TaskState) -> Task {
    Task {
        id: id.to_string(),
        service_id: service.id.clone(),
        service_name: service.spec.name.clone(),
        slot,
        node_id: node_id.to_string(),
        spec_version: service.spec_version,
        spec: service.spec.task.clone(),
        desired_state: TaskState::Running,
        status: TaskStatus { state, ..TaskStatus::default() },
        ..Task::default()
    }
}

pub fn pending(id: &str, service: &Service, slot: u64) -> Task {
    task(id, service, slot, "", TaskState::Pending)
}

pub fn state_with(nodes: Vec<Node>, services: Vec<Service>, tasks: Vec<Task>) -> StoreState {
    let mut s = StoreState::default();
    for n in nodes {
        s.nodes.insert(n.id.clone(), n);
    }
    for sv in services {
        s.services.insert(sv.id.clone(), sv);
    }
    for t in tasks {
        s.tasks.insert(t.id.clone(), t);
    }
    s
}
