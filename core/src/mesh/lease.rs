//! Address arithmetic of the overlay networks (DESIGN §8): each node leases its own part of a
//! network's subnet; within a lease the first address is the node's gateway on its bridge, the
//! next quarter are its service VIPs, and the upper half is where containers get addresses.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::api::{Network, Task, TaskState};
use crate::env::BridgeSpec;
use crate::store::{Action, Object, StoreState};

/// Why a subnet cannot be used or split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("invalid subnet {0:?}: expected an IPv4 CIDR such as 10.20.0.0/16")]
    Invalid(String),
    #[error("subnet {0} is too small: a swarm network needs at least a /26 (four leases of 16 addresses)")]
    TooSmall(String),
    #[error("no free lease left in {subnet} for another node ({leases} leased)")]
    Exhausted { subnet: String, leases: usize },
}

/// Parse a subnet as the user wrote it (the network address itself, `10.20.0.0/16`).
pub fn parse_subnet(subnet: &str) -> Result<Ipv4Net, LeaseError> {
    let net: Ipv4Net = subnet.parse().map_err(|_| LeaseError::Invalid(subnet.to_string()))?;
    if net.network() != net.addr() {
        return Err(LeaseError::Invalid(subnet.to_string()));
    }
    if net.prefix_len() > 26 {
        return Err(LeaseError::TooSmall(subnet.to_string()));
    }
    Ok(net)
}

/// The prefix length of one node's lease in a subnet of `prefix`: at least 512 leases where the
/// subnet allows it while a lease keeps at least 64 container addresses (a /16 gives 512 /25s; a
/// /14 gives 1,024 /24s), else a quarter of the subnet.
pub fn lease_prefix(prefix: u8) -> u8 {
    if prefix + 9 <= 25 {
        (prefix + 9).max(24)
    } else if prefix <= 23 {
        25
    } else {
        prefix + 2
    }
}

/// Whether two subnets share an address.
pub fn overlaps(a: &str, b: &str) -> bool {
    match (a.parse::<Ipv4Net>(), b.parse::<Ipv4Net>()) {
        (Ok(a), Ok(b)) => a.contains(&b.network()) || b.contains(&a.network()),
        _ => false,
    }
}

/// The lowest lease of `subnet` not in `taken`.
pub fn next_lease(subnet: &str, taken: &BTreeMap<String, String>) -> Result<String, LeaseError> {
    let net = parse_subnet(subnet)?;
    let leases = net.subnets(lease_prefix(net.prefix_len())).map_err(|_| LeaseError::TooSmall(subnet.to_string()))?;
    for lease in leases {
        let text = lease.to_string();
        if !taken.values().any(|t| t == &text) {
            return Ok(text);
        }
    }
    Err(LeaseError::Exhausted { subnet: subnet.to_string(), leases: taken.len() })
}

/// One node's lease, cut into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub net: Ipv4Net,
}

impl Lease {
    pub fn parse(cidr: &str) -> Option<Lease> {
        cidr.parse::<Ipv4Net>().ok().map(|net| Lease { net })
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.net.prefix_len())
    }

    fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net.network()) + n)
    }

    /// The node's own address on its bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        self.nth(1)
    }

    /// The addresses the node gives its services' VIPs: the second quarter of the lease.
    pub fn vips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let quarter = self.size() / 4;
        (quarter..2 * quarter).map(|n| self.nth(n))
    }

    /// The addresses the node gives its aliases of tasks on other nodes: the first quarter of the
    /// lease after the network address and the gateway.
    pub fn aliases(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (2..self.size() / 4).map(|n| self.nth(n))
    }

    /// The containers' range: the upper half.
    pub fn ip_range(&self) -> String {
        Ipv4Net::new(self.nth(self.size() / 2), self.net.prefix_len() + 1).map(|n| n.to_string()).unwrap_or_default()
    }
}

/// Network updates that lease each task's node a part of each of the task's networks where it has
/// none yet (the scheduler's placements carry them in the same proposal). A subnet that is full
/// leaves the task without a lease: its runner rejects it with the reason.
pub fn lease_actions<'a>(state: &StoreState, tasks: impl Iterator<Item = &'a Task>) -> Vec<Action> {
    let mut networks: BTreeMap<String, Network> = BTreeMap::new();
    // Leases of nodes no longer in the swarm go back to the pool first.
    let reclaim = |network: &Network, networks: &mut BTreeMap<String, Network>| {
        if network.leases.keys().any(|node| !state.nodes.contains_key(node)) {
            let network = networks.entry(network.id.clone()).or_insert_with(|| network.clone());
            network.leases.retain(|node, _| state.nodes.contains_key(node));
        }
    };
    let mut tasks = tasks.filter(|t| t.status.state == TaskState::Assigned && !t.node_id.is_empty()).peekable();
    if tasks.peek().is_some() {
        for network in state.networks.values() {
            reclaim(network, &mut networks);
        }
    }
    for task in tasks {
        for network_id in &task.networks {
            let Some(stored) = state.networks.get(network_id) else { continue };
            let network = networks.entry(network_id.clone()).or_insert_with(|| stored.clone());
            if network.leases.contains_key(&task.node_id) {
                continue;
            }
            if let Ok(lease) = next_lease(&network.subnet, &network.leases) {
                network.leases.insert(task.node_id.clone(), lease);
            }
        }
    }
    networks
        .into_values()
        .filter(|n| state.networks.get(&n.id) != Some(n))
        .map(|n| Action::Update(Object::Network(n)))
        .collect()
}

/// The label that marks a bridge as shoal's and names its node (for cleanup on leave).
pub const LABEL_BRIDGE_NODE: &str = "com.shoal.node.id";
/// The label naming the swarm network a bridge belongs to.
pub const LABEL_BRIDGE_NETWORK: &str = "com.shoal.network.id";

/// The bridge of `network` on `node_id`, or `None` while the node has no lease of it.
pub fn bridge_for(network: &Network, node_id: &str) -> Option<BridgeSpec> {
    let lease = Lease::parse(network.leases.get(node_id)?)?;
    let short = |id: &str, n: usize| id.chars().take(n).collect::<String>();
    Some(BridgeSpec {
        network_id: network.id.clone(),
        name: format!("shoal-{}-{}", network.name, short(node_id, 12)),
        device: format!("sh{}{}", short(&network.id, 8), short(node_id, 4)),
        subnet: lease.net.to_string(),
        gateway: lease.gateway().to_string(),
        ip_range: lease.ip_range(),
        aliases: Vec::new(),
        labels: [
            (LABEL_BRIDGE_NODE.to_string(), node_id.to_string()),
            (LABEL_BRIDGE_NETWORK.to_string(), network.id.clone()),
        ]
        .into_iter()
        .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_split_the_subnet_and_never_repeat() {
        let mut taken = BTreeMap::new();
        let first = next_lease("10.20.0.0/16", &taken).unwrap();
        assert_eq!(first, "10.20.0.0/25");
        taken.insert("a".into(), first);
        assert_eq!(next_lease("10.20.0.0/16", &taken).unwrap(), "10.20.0.128/25");
        // 512 nodes fit a /16; a /14 gives /24s.
        assert_eq!(lease_prefix(16), 25);
        assert_eq!(lease_prefix(14), 24);
        assert_eq!(lease_prefix(8), 24);
        // A /24 is cut in quarters.
        let mut small = BTreeMap::new();
        for i in 0..4 {
            let lease = next_lease("10.0.0.0/24", &small).unwrap();
            small.insert(format!("n{i}"), lease);
        }
        assert_eq!(small["n3"], "10.0.0.192/26");
        assert!(matches!(next_lease("10.0.0.0/24", &small), Err(LeaseError::Exhausted { .. })));
    }

    #[test]
    fn a_lease_has_a_gateway_vips_and_a_container_range() {
        let lease = Lease::parse("10.20.3.0/24").unwrap();
        assert_eq!(lease.gateway().to_string(), "10.20.3.1");
        assert_eq!(lease.vips().next().unwrap().to_string(), "10.20.3.64");
        assert_eq!(lease.vips().last().unwrap().to_string(), "10.20.3.127");
        assert_eq!(lease.ip_range(), "10.20.3.128/25");
    }

    #[test]
    fn bad_subnets_are_refused_with_the_reason() {
        assert!(matches!(parse_subnet("10.20.0.1/16"), Err(LeaseError::Invalid(_))));
        assert!(matches!(parse_subnet("banana"), Err(LeaseError::Invalid(_))));
        assert!(matches!(parse_subnet("10.0.0.0/28"), Err(LeaseError::TooSmall(_))));
        assert!(overlaps("10.0.0.0/16", "10.0.3.0/24"));
        assert!(!overlaps("10.0.0.0/16", "10.1.0.0/16"));
    }
}
