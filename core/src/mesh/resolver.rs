//! The mesh resolver (DESIGN §8): answers DNS queries that containers send to their bridge's
//! gateway, from the endpoint table and for the network the query arrived on, with TTL 0 so no
//! answer outlives the table. `<service>` (or its stack alias) → this node's VIP for it
//! (`dnsrr`: the ready tasks' addresses); `tasks.<service>` → the ready tasks' addresses. A task
//! on another node is answered with this node's *alias* of it (an address its proxy listens on and
//! tunnels to exactly that task), since no container reaches another node's bridge. A service that
//! shares no network with the asker is unknown. Other names are forwarded.

use std::net::Ipv4Addr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;

use super::table::{MeshEndpoint, MeshService, MeshTable};
use crate::api::EndpointMode;

/// What to do with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The reply to send back.
    Answer(Vec<u8>),
    /// Not a swarm name: ask the upstream resolvers.
    Forward,
    /// Not a DNS message at all: drop it.
    Drop,
}

/// The addresses `name` resolves to on network `network_id`, or `None` when it is no swarm name
/// there, as `addresses` says this node reaches services and tasks on this network.
/// How this node answers for services and tasks on one network.
pub trait Addresses {
    /// This node's VIP of a service.
    fn vip(&self, service_id: &str) -> Option<Ipv4Addr>;
    /// The address a container on this node reaches a task at (its own address on the network
    /// when the task is on this node, this node's alias of it otherwise).
    fn task(&self, endpoint: &MeshEndpoint) -> Option<Ipv4Addr>;
}

pub fn lookup(table: &MeshTable, network_id: &str, name: &str, addresses: &dyn Addresses) -> Option<Vec<Ipv4Addr>> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let (tasks_only, service_name) = match name.strip_prefix("tasks.") {
        Some(rest) => (true, rest.to_string()),
        None => (false, name),
    };
    let service = table.services.values().find(|s| {
        let named = |a: &String| a.eq_ignore_ascii_case(&service_name);
        s.networks.iter().any(|n| n == network_id)
            && (s.name.eq_ignore_ascii_case(&service_name)
                || s.aliases.iter().any(named)
                || s.network_aliases.get(network_id).is_some_and(|names| names.iter().any(named)))
    })?;
    if !tasks_only && service.endpoint_mode == EndpointMode::Vip {
        return Some(addresses.vip(&service.id).into_iter().collect());
    }
    Some(task_addresses(service, network_id, addresses))
}

fn task_addresses(service: &MeshService, network_id: &str, addresses: &dyn Addresses) -> Vec<Ipv4Addr> {
    service
        .endpoints
        .iter()
        .filter(|e| e.addresses.contains_key(network_id))
        .filter_map(|e| addresses.task(e))
        .collect()
}

/// Answer one query (the bytes of a DNS message) for network `network_id`.
pub fn resolve(table: &MeshTable, network_id: &str, query: &[u8], addresses: &dyn Addresses) -> Resolution {
    let Ok(request) = Message::from_vec(query) else {
        // A reply needs at least the id; without one there is nobody to answer.
        if query.len() < 2 {
            return Resolution::Drop;
        }
        let mut reply = Message::new();
        reply.set_id(u16::from_be_bytes([query[0], query[1]]));
        reply.set_message_type(MessageType::Response);
        reply.set_response_code(ResponseCode::FormErr);
        return reply.to_bytes().map(Resolution::Answer).unwrap_or(Resolution::Drop);
    };
    if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query {
        return Resolution::Drop;
    }
    let Some(query) = request.queries().first().cloned() else { return Resolution::Drop };
    let name = query.name().to_utf8();
    let single_label = name.trim_end_matches('.').split('.').count() == 1;
    let mut reply = Message::new();
    reply.set_id(request.id());
    reply.set_message_type(MessageType::Response);
    reply.set_op_code(OpCode::Query);
    reply.set_recursion_desired(request.recursion_desired());
    reply.set_recursion_available(true);
    reply.add_query(query.clone());
    match lookup(table, network_id, &name, addresses) {
        Some(addresses) => {
            reply.set_authoritative(true);
            if query.query_type() == RecordType::A {
                for ip in addresses {
                    reply.add_answer(Record::from_rdata(query.name().clone(), 0, RData::A(A(ip))));
                }
            }
        }
        // A bare name that is no service here is nobody's: no upstream knows it either.
        None if single_label => {
            reply.set_response_code(ResponseCode::NXDomain);
        }
        None => return Resolution::Forward,
    }
    reply.to_bytes().map(Resolution::Answer).unwrap_or(Resolution::Drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::table::{MeshEndpoint, MeshService};
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use std::collections::BTreeMap;

    fn table() -> MeshTable {
        let endpoint = |task: &str, ip: &str| MeshEndpoint {
            task_id: task.into(),
            node_id: "n1".into(),
            addresses: [("net-a".to_string(), ip.to_string())].into_iter().collect(),
            ports: vec![("tcp".into(), 80)],
        };
        let service = |id: &str, name: &str, mode: EndpointMode, network: &str| MeshService {
            id: id.into(),
            name: name.into(),
            aliases: vec![],
            network_aliases: BTreeMap::new(),
            ports: vec![],
            endpoint_mode: mode,
            networks: vec![network.into()],
            endpoints: vec![endpoint(&format!("{id}-t1"), "10.9.0.130"), endpoint(&format!("{id}-t2"), "10.9.0.131")],
        };
        let mut services = BTreeMap::new();
        services.insert("s-web".into(), service("s-web", "web", EndpointMode::Vip, "net-a"));
        services.insert("s-db".into(), service("s-db", "db", EndpointMode::Dnsrr, "net-a"));
        services.insert("s-other".into(), service("s-other", "other", EndpointMode::Vip, "net-b"));
        services.get_mut("s-web").unwrap().aliases.push("front".into());
        // A compose alias on net-a only; on net-b it is nobody.
        services.get_mut("s-web").unwrap().network_aliases.insert("net-a".into(), vec!["www".into()]);
        services.get_mut("s-other").unwrap().network_aliases.insert("net-a".into(), vec!["elsewhere".into()]);
        // One task of db runs on another node.
        services.get_mut("s-db").unwrap().endpoints[1].node_id = "n2".into();
        MeshTable { services, ..MeshTable::default() }
    }

    /// Node n1's view: a VIP for web; tasks on n1 at their own address, others by an alias.
    struct Node1;

    impl Addresses for Node1 {
        fn vip(&self, service: &str) -> Option<Ipv4Addr> {
            (service == "s-web").then(|| "10.9.0.64".parse().unwrap())
        }
        fn task(&self, endpoint: &MeshEndpoint) -> Option<Ipv4Addr> {
            if endpoint.node_id == "n1" {
                endpoint.addresses.get("net-a")?.parse().ok()
            } else {
                Some("10.9.0.2".parse().unwrap())
            }
        }
    }

    fn ask(name: &str) -> Message {
        let mut q = Message::new();
        q.set_id(7);
        q.set_recursion_desired(true);
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        match resolve(&table(), "net-a", &q.to_bytes().unwrap(), &Node1) {
            Resolution::Answer(bytes) => Message::from_vec(&bytes).unwrap(),
            other => panic!("{name}: {other:?}"),
        }
    }

    fn addresses(reply: &Message) -> Vec<String> {
        reply.answers().iter().map(|r| r.data().to_string()).collect()
    }

    #[test]
    fn names_resolve_per_network_and_mode() {
        assert_eq!(addresses(&ask("web.")), ["10.9.0.64"]);
        assert_eq!(addresses(&ask("front")), ["10.9.0.64"]);
        assert_eq!(addresses(&ask("www")), ["10.9.0.64"]);
        // An alias on a network the service is not on names nothing.
        assert_eq!(ask("elsewhere").response_code(), ResponseCode::NXDomain);
        assert_eq!(addresses(&ask("tasks.web")), ["10.9.0.130", "10.9.0.131"]);
        // A task on another node is answered with this node's alias of it.
        assert_eq!(addresses(&ask("db")), ["10.9.0.130", "10.9.0.2"]);
        let reply = ask("web");
        assert_eq!(reply.id(), 7);
        assert!(reply.answers().iter().all(|r| r.ttl() == 0));
        // A service on another network is unknown here.
        assert_eq!(ask("other").response_code(), ResponseCode::NXDomain);
    }

    #[test]
    fn other_names_are_forwarded_and_garbage_is_not_answered() {
        let mut q = Message::new();
        q.add_query(Query::query(Name::from_ascii("example.org.").unwrap(), RecordType::A));
        assert_eq!(resolve(&table(), "net-a", &q.to_bytes().unwrap(), &Node1), Resolution::Forward);
        assert_eq!(resolve(&table(), "net-a", &[1], &Node1), Resolution::Drop);
        match resolve(&table(), "net-a", &[0, 9, 0xff, 0xff, 0xff], &Node1) {
            Resolution::Answer(bytes) => {
                let reply = Message::from_vec(&bytes).unwrap();
                assert_eq!((reply.id(), reply.response_code()), (9, ResponseCode::FormErr));
            }
            other => panic!("{other:?}"),
        }
    }
}
