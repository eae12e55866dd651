//! Published ports across services (swarmkit's port allocator and `checkPortConflicts`): an ingress
//! port published as 0 gets the lowest free port of the dynamic range 30000–32767 (and keeps it
//! across updates); a published port another service already holds is refused with Swarm's message.
//! Host-mode ports may repeat across services (each task binds on its own node), except over an
//! ingress port, which every node publishes.

use std::collections::BTreeMap;

use super::api::ControlError;
use crate::api::{PortConfig, PublishMode, Service};

/// swarmkit's `dynamicPortStart`..=`dynamicPortEnd`.
pub const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// The ports a service holds: what was allocated, or what its spec asks for.
fn held(service: &Service) -> &[PortConfig] {
    if service.endpoint_ports.is_empty() {
        &service.spec.ports
    } else {
        &service.endpoint_ports
    }
}

/// The endpoint ports of service `service_id` (new or updated) asking for `requested`, given the
/// other services and, on an update, the ports it held before.
pub fn allocate<'a>(
    others: impl Iterator<Item = &'a Service>,
    service_id: &str,
    requested: &[PortConfig],
    previous: &[PortConfig],
) -> Result<Vec<PortConfig>, ControlError> {
    // (protocol, port) → (mode, service name, service id) of the other services.
    let mut taken: BTreeMap<(String, u16), (PublishMode, String, String)> = BTreeMap::new();
    for service in others.filter(|s| s.id != service_id) {
        for port in held(service).iter().filter(|p| p.published_port != 0) {
            let holder = (port.publish_mode, service.spec.name.clone(), service.id.clone());
            // An ingress holder wins over a host one: it blocks more.
            let key = (port.protocol.clone(), port.published_port);
            if port.publish_mode == PublishMode::Ingress || !taken.contains_key(&key) {
                taken.insert(key, holder);
            }
        }
    }
    for port in requested.iter().filter(|p| p.published_port != 0) {
        let Some((mode, name, id)) = taken.get(&(port.protocol.clone(), port.published_port)) else { continue };
        let as_what = match mode {
            PublishMode::Ingress => "an ingress port",
            PublishMode::Host if port.publish_mode == PublishMode::Ingress => "a host-published port",
            PublishMode::Host => continue,
        };
        return Err(ControlError::InvalidArgument(format!(
            "port '{}' is already in use by service '{name}' ({id}) as {as_what}",
            port.published_port
        )));
    }
    let mut ports = requested.to_vec();
    for i in 0..ports.len() {
        let port = &ports[i];
        if port.published_port != 0 || port.publish_mode != PublishMode::Ingress {
            continue;
        }
        // Keep what this target was given before, if nobody took it since.
        let kept = previous
            .iter()
            .find(|p| {
                p.target_port == port.target_port
                    && p.protocol == port.protocol
                    && p.publish_mode == PublishMode::Ingress
                    && DYNAMIC_PORTS.contains(&p.published_port)
            })
            .map(|p| p.published_port);
        let free = |candidate: u16, ports: &[PortConfig]| {
            !taken.contains_key(&(port.protocol.clone(), candidate))
                && !ports.iter().any(|p| p.protocol == port.protocol && p.published_port == candidate)
        };
        let chosen = kept
            .filter(|k| free(*k, &ports))
            .or_else(|| DYNAMIC_PORTS.into_iter().find(|candidate| free(*candidate, &ports)))
            .ok_or_else(|| {
                ControlError::FailedPrecondition(format!(
                    "no free port left in the dynamic range {}-{} to publish {}/{}",
                    DYNAMIC_PORTS.start(),
                    DYNAMIC_PORTS.end(),
                    port.target_port,
                    port.protocol
                ))
            })?;
        ports[i].published_port = chosen;
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ServiceSpec;

    fn port(target: u16, published: u16, mode: PublishMode) -> PortConfig {
        PortConfig { protocol: "tcp".into(), target_port: target, published_port: published, publish_mode: mode }
    }

    fn service(id: &str, ports: Vec<PortConfig>) -> Service {
        let mut spec = ServiceSpec::new(id, "nginx");
        spec.ports = ports.clone();
        Service {
            id: id.into(),
            meta: Default::default(),
            spec,
            previous_spec: None,
            spec_version: 1,
            update_status: None,
            job_status: None,
            endpoint_ports: ports,
        }
    }

    #[test]
    fn dynamic_ports_and_conflicts_as_swarm_allocates_them() {
        let web = service("web", vec![port(80, 8080, PublishMode::Ingress), port(6379, 30000, PublishMode::Ingress)]);
        let agent = service("agent", vec![port(9100, 9100, PublishMode::Host)]);
        let others = [web, agent];
        let ask =
            |requested: Vec<PortConfig>, previous: &[PortConfig]| allocate(others.iter(), "new", &requested, previous);
        // 0 → the lowest free dynamic port (30000 is taken).
        let got = ask(vec![port(6379, 0, PublishMode::Ingress), port(5432, 0, PublishMode::Ingress)], &[]).unwrap();
        assert_eq!(got.iter().map(|p| p.published_port).collect::<Vec<_>>(), [30001, 30002]);
        // An update keeps what it had.
        let kept = ask(vec![port(6379, 0, PublishMode::Ingress)], &[port(6379, 31000, PublishMode::Ingress)]).unwrap();
        assert_eq!(kept[0].published_port, 31000);
        // Host mode with 0 stays 0: the node picks.
        assert_eq!(ask(vec![port(53, 0, PublishMode::Host)], &[]).unwrap()[0].published_port, 0);
        // Conflicts, in Swarm's words.
        let err = ask(vec![port(81, 8080, PublishMode::Ingress)], &[]).unwrap_err().to_string();
        assert_eq!(err, "port '8080' is already in use by service 'web' (web) as an ingress port");
        let err = ask(vec![port(81, 9100, PublishMode::Ingress)], &[]).unwrap_err().to_string();
        assert_eq!(err, "port '9100' is already in use by service 'agent' (agent) as a host-published port");
        let err = ask(vec![port(81, 8080, PublishMode::Host)], &[]).unwrap_err().to_string();
        assert!(err.ends_with("as an ingress port"), "{err}");
        assert!(ask(vec![port(9100, 9100, PublishMode::Host)], &[]).is_ok(), "host ports may repeat");
        // A service does not conflict with itself.
        assert!(allocate(others.iter(), "web", &[port(80, 8080, PublishMode::Ingress)], &[]).is_ok());
    }
}
