//! The endpoint table: what every node's proxy and resolver route from (DESIGN §8).
//!
//! A pure view of the replicated store — services with their published ports and networks, and
//! each service's *endpoints*: the tasks that should run, do run on a node that is not down, and
//! were reported ready by their agent. The leader's dispatcher computes it and serves it to every
//! node; equal tables have equal digests, so a node re-fetches only when the content changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{EndpointMode, NodeState, PortConfig, PublishMode, TaskState};
use crate::store::StoreState;

/// The label Docker's `stack deploy` puts on a stack's services and networks.
pub const STACK_LABEL: &str = "com.docker.stack.namespace";

/// One ready task of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshEndpoint {
    pub task_id: String,
    pub node_id: String,
    /// The task's address on each of its networks (network id → IP; `""` = its node's network).
    pub addresses: BTreeMap<String, String>,
    pub ports: Vec<(String, u16)>,
}

impl MeshEndpoint {
    /// An address the task's own node reaches it at (any of its networks will do).
    pub fn local_address(&self) -> Option<&str> {
        self.addresses.values().next().map(String::as_str)
    }
}

/// A service as the data plane sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshService {
    pub id: String,
    pub name: String,
    /// The names the service answers to besides `name` (in a stack: its name without the prefix).
    pub aliases: Vec<String>,
    /// Names it answers to on one network only (network id → names; compose `aliases`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub network_aliases: BTreeMap<String, Vec<String>>,
    /// Published ports after allocation.
    pub ports: Vec<PortConfig>,
    pub endpoint_mode: EndpointMode,
    /// The user's networks (ids); the ingress network is not among them.
    pub networks: Vec<String>,
    /// Ready tasks, by task id.
    pub endpoints: Vec<MeshEndpoint>,
}

impl MeshService {
    /// The TCP ports a VIP of the service forwards: published targets and what the tasks serve.
    pub fn vip_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .ports
            .iter()
            .filter(|p| p.protocol == "tcp")
            .map(|p| p.target_port)
            .chain(self.endpoints.iter().flat_map(|e| e.ports.iter().filter(|(proto, _)| proto == "tcp").map(|p| p.1)))
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Ingress-published ports: `(protocol, published, target)`.
    pub fn ingress_ports(&self) -> impl Iterator<Item = &PortConfig> {
        self.ports.iter().filter(|p| p.publish_mode == PublishMode::Ingress && p.published_port != 0)
    }
}

/// A network and its leases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshNetwork {
    pub id: String,
    pub name: String,
    pub ingress: bool,
    pub network: crate::api::Network,
}

/// The whole table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshTable {
    /// By service id.
    pub services: BTreeMap<String, MeshService>,
    /// By network id.
    pub networks: BTreeMap<String, MeshNetwork>,
    /// The data address of each node that hosts an endpoint. Only those: a node joining or
    /// leaving must not change every node's table (a thousand joins would make every node fetch
    /// the table a thousand times).
    pub nodes: BTreeMap<String, String>,
}

impl MeshTable {
    /// The table as of `state`.
    pub fn from_state(state: &StoreState) -> MeshTable {
        let up = |node_id: &str| state.nodes.get(node_id).filter(|n| n.status.state != NodeState::Down);
        let mut nodes: BTreeMap<String, String> = BTreeMap::new();
        let mut services: BTreeMap<String, MeshService> = BTreeMap::new();
        for service in state.services.values() {
            let networks: Vec<String> = service
                .spec
                .task
                .networks
                .iter()
                .filter_map(|key| {
                    state.networks.values().find(|n| &n.id == key || &n.name == key).map(|n| n.id.clone())
                })
                .collect();
            let mut aliases = Vec::new();
            if let Some(stack) = service.spec.labels.get(STACK_LABEL) {
                if let Some(short) = service.spec.name.strip_prefix(&format!("{stack}_")) {
                    aliases.push(short.to_string());
                }
            }
            let network_aliases = service
                .spec
                .network_aliases
                .iter()
                .filter_map(|(key, names)| {
                    state
                        .networks
                        .values()
                        .find(|n| &n.id == key || &n.name == key)
                        .map(|n| (n.id.clone(), names.clone()))
                })
                .collect();
            services.insert(
                service.id.clone(),
                MeshService {
                    id: service.id.clone(),
                    name: service.spec.name.clone(),
                    aliases,
                    network_aliases,
                    ports: service.endpoint_ports.clone(),
                    endpoint_mode: service.spec.endpoint_mode,
                    networks,
                    endpoints: Vec::new(),
                },
            );
        }
        for task in state.tasks.values() {
            if task.desired_state != TaskState::Running || task.status.state != TaskState::Running {
                continue;
            }
            let Some(endpoint) = task.status.endpoint.as_ref().filter(|e| e.ready) else { continue };
            let Some(node) = up(&task.node_id) else { continue };
            nodes.insert(node.id.clone(), node.description.data_addr.clone());
            if let Some(service) = services.get_mut(&task.service_id) {
                service.endpoints.push(MeshEndpoint {
                    task_id: task.id.clone(),
                    node_id: task.node_id.clone(),
                    addresses: endpoint.addresses.clone(),
                    ports: endpoint.ports.clone(),
                });
            }
        }
        let networks = state
            .networks
            .values()
            .map(|n| {
                (
                    n.id.clone(),
                    MeshNetwork { id: n.id.clone(), name: n.name.clone(), ingress: n.ingress, network: n.clone() },
                )
            })
            .collect();
        MeshTable { services, networks, nodes }
    }

    /// A digest of the content (FNV-1a over its JSON): equal tables, equal digests.
    pub fn digest(&self) -> u64 {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            hash = (hash ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        // 0 means "nothing applied yet" on the wire.
        hash.max(1)
    }

    /// Whether `task_id` is in the rotation of any service.
    pub fn routes_to(&self, task_id: &str) -> bool {
        self.services.values().any(|s| s.endpoints.iter().any(|e| e.task_id == task_id))
    }

    /// The endpoint of `task_id` if it is ready on `node_id`.
    pub fn local_endpoint(&self, node_id: &str, service_id: &str, task_id: &str) -> Option<&MeshEndpoint> {
        self.services.get(service_id)?.endpoints.iter().find(|e| e.task_id == task_id && e.node_id == node_id)
    }

    /// The ingress network, if the swarm has one.
    pub fn ingress_network(&self) -> Option<&MeshNetwork> {
        self.networks.values().find(|n| n.ingress)
    }
}
