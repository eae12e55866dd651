//! Linearizability of the control API: the strongest thing a client can ask of shoal's store, and
//! what Swarm's raft-backed store promises — every request takes effect at one instant between
//! when it was sent and when it was answered, in one order every client agrees on.
//!
//! - [`history`] records every control call of a simulated run (client, manager, request, sent,
//!   answered, answer), the CLI's steps and the control workload's alike;
//! - [`store_model`] is the sequential model of what those calls touch (services, nodes, networks)
//!   and splits a history per object;
//! - [`wgl`] is the search (Wing & Gong with memoization) for an order that explains every answer.
//!
//! The scenario runner checks every run's history at its end (`always: linearizable` names it; it
//! runs whether named or not). A scenario's own steps are few, so a scenario with
//! `control_workload: true` (every generated fuzz case) also runs Jepsen's register workload on the
//! control API: a client sends reads (`service ls`, `network ls`, `node ls`) and writes of a node
//! label to each host in turn, 4 calls a second, all through the run, faults included.

pub mod history;
pub mod store_model;
pub mod wgl;

pub use history::{Answer, ControlCall, ControlHistory};
pub use store_model::{check, NotLinearizable, Summary};

/// Search steps per object before the check gives up on it (reported in the trace as
/// `linearizability.checked` … `inconclusive`, neither pass nor fail): about a second in a debug
/// build.
pub const BUDGET_PER_OBJECT: u64 = 200_000;

#[cfg(test)]
mod tests {
    use shoal_core::api::{Availability, ServiceMode, ServiceSpec};
    use shoal_core::control::{ControlError, ControlRequest, ControlResponse, ControlResult, ServiceView};

    use super::history::{Answer, ControlHistory};
    use super::*;

    fn view(id: &str, name: &str, replicas: u64) -> ServiceView {
        let mut spec = ServiceSpec::new(name, "nginx:1.25");
        spec.mode = ServiceMode::Replicated { replicas };
        let service = shoal_core::api::Service {
            id: id.into(),
            meta: Default::default(),
            endpoint_ports: vec![],
            spec,
            previous_spec: None,
            spec_version: 1,
            update_status: None,
        };
        ServiceView { service, running: 0, desired: replicas }
    }

    fn create(name: &str, replicas: u64) -> ControlRequest {
        let mut spec = ServiceSpec::new(name, "nginx:1.25");
        spec.mode = ServiceMode::Replicated { replicas };
        ControlRequest::ServiceCreate { spec }
    }

    fn list(views: Vec<ServiceView>) -> ControlResult {
        Ok(ControlResponse::Services(views))
    }

    /// A history written as the run would record it: `(client, manager, request)` sent, then answered.
    struct Script {
        history: ControlHistory,
        ms: u64,
    }

    impl Script {
        fn new() -> Script {
            Script { history: ControlHistory::default(), ms: 1_000 }
        }
        fn send(&mut self, client: &str, manager: &str, request: ControlRequest) -> history::CallId {
            self.ms += 10;
            self.history.invoke(client, manager, &request, self.ms)
        }
        fn answer(&mut self, call: history::CallId, result: ControlResult) {
            self.ms += 10;
            self.history.answer(call, Answer::of(&result), self.ms);
        }
        fn call(&mut self, client: &str, manager: &str, request: ControlRequest, result: ControlResult) {
            let id = self.send(client, manager, request);
            self.answer(id, result);
        }
        fn check(&self) -> Result<Summary, NotLinearizable> {
            check(&self.history.calls(), 1_000, BUDGET_PER_OBJECT)
        }
    }

    /// The known-bad history: manager-1 led, was cut off, manager-2 was elected and took a write;
    /// a read sent to manager-1 afterwards, answered from its own store without confirming it
    /// still leads, misses the acknowledged write.
    #[test]
    fn a_stale_read_from_a_deposed_leader_is_flagged() {
        let mut s = Script::new();
        s.call("cli", "manager-1:2377", create("web", 2), Ok(ControlResponse::Created { id: "w1".into() }));
        s.call("reader", "manager-1:2377", ControlRequest::ServiceList, list(vec![view("w1", "web", 2)]));
        // manager-1 is cut off; manager-2 leads and scales web to 5.
        let scale = ControlRequest::ServiceScale { service: "web".into(), replicas: 5 };
        s.call("cli", "manager-2:2377", scale, Ok(ControlResponse::Done));
        s.call("reader", "manager-2:2377", ControlRequest::ServiceList, list(vec![view("w1", "web", 5)]));
        // The deposed leader still answers with 2 replicas.
        s.call("reader", "manager-1:2377", ControlRequest::ServiceList, list(vec![view("w1", "web", 2)]));
        let err = s.check().unwrap_err();
        assert_eq!(err.object, "service web");
        let text = err.to_string();
        assert!(text.contains("reader -> manager-1:2377: service ls"), "{text}");
        assert!(text.contains("web (w1, 2 replicas, nginx:1.25)"), "{text}");
        assert!(text.contains("after which it is present (id w1, 5 replicas, image nginx:1.25)"), "{text}");

        // A service created through the new leader, missing from the deposed one's answer.
        let mut s = Script::new();
        s.call("cli", "manager-2:2377", create("api", 1), Ok(ControlResponse::Created { id: "a1".into() }));
        s.call("reader", "manager-1:2377", ControlRequest::ServiceList, list(vec![]));
        assert!(s.check().unwrap_err().to_string().starts_with("linearizable: service api: "));
    }

    /// The known-good concurrent history: clients' calls overlap, a write's effect shows to a read
    /// that overlaps it or not, a lost write may apply late or never, refusals agree with the state.
    #[test]
    fn a_concurrent_history_that_a_store_can_produce_passes() {
        let mut s = Script::new();
        let web = s.send("cli", "manager-1:2377", create("web", 2));
        // Two reads overlapping the create: one sees it, the other (linearized earlier) does not.
        let before = s.send("reader", "manager-2:2377", ControlRequest::ServiceList);
        let after = s.send("reader-2", "manager-3:2377", ControlRequest::ServiceList);
        s.answer(after, list(vec![view("w1", "web", 2)]));
        s.answer(before, list(vec![]));
        s.answer(web, Ok(ControlResponse::Created { id: "w1".into() }));
        // A create of the same name is refused; a scale and a read overlap.
        s.call(
            "cli-2",
            "manager-2:2377",
            create("web", 1),
            Err(ControlError::Conflict("name conflicts with an existing object: service web already exists".into())),
        );
        let scale = s.send("cli", "manager-1:2377", ControlRequest::ServiceScale { service: "w1".into(), replicas: 4 });
        let read = s.send("reader", "manager-3:2377", ControlRequest::ServiceInspect { service: "web".into() });
        s.answer(read, Ok(ControlResponse::Service(Box::new(view("w1", "web", 4)))));
        s.answer(scale, Ok(ControlResponse::Done));
        // A remove whose answer was lost: reads may see web for a while, then not.
        let rm = s.send("cli", "manager-1:2377", ControlRequest::ServiceRemove { service: "web".into() });
        s.call("reader", "manager-2:2377", ControlRequest::ServiceList, list(vec![view("w1", "web", 4)]));
        s.call("reader", "manager-3:2377", ControlRequest::ServiceList, list(vec![]));
        s.answer(rm, Err(ControlError::Unavailable("the proposal may or may not have been committed".into())));
        s.call(
            "cli",
            "manager-2:2377",
            ControlRequest::ServiceScale { service: "web".into(), replicas: 1 },
            Err(ControlError::NotFound("service web not found".into())),
        );
        // A network and a node: created, drained, read back.
        s.call(
            "cli",
            "manager-1:2377",
            ControlRequest::NetworkCreate {
                name: "net1".into(),
                driver: "overlay".into(),
                attachable: false,
                labels: Default::default(),
                subnet: String::new(),
                ingress: false,
            },
            Ok(ControlResponse::Created { id: "n1".into() }),
        );
        s.call(
            "reader",
            "manager-3:2377",
            ControlRequest::NetworkList,
            Ok(ControlResponse::Networks(vec![shoal_core::api::Network {
                id: "n1".into(),
                meta: Default::default(),
                name: "net1".into(),
                driver: "overlay".into(),
                subnet: "10.1.0.0/16".into(),
                attachable: false,
                ingress: false,
                labels: Default::default(),
                leases: Default::default(),
            }])),
        );
        let drain = ControlRequest::NodeUpdate {
            node: "worker-1".into(),
            availability: Some(Availability::Drain),
            label_add: Default::default(),
            label_rm: vec![],
        };
        s.call("cli", "manager-1:2377", drain, Ok(ControlResponse::Done));
        // Requests the model does not cover change nothing it checks.
        s.call("cli", "manager-1:2377", ControlRequest::Info, Err(ControlError::NoLeader));
        let summary = s.check().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(summary.objects, 3, "{summary:?}");
        assert!(summary.inconclusive.is_empty());
    }

    #[test]
    fn a_refusal_that_names_the_object_missing_contradicts_an_acknowledged_create() {
        let mut s = Script::new();
        s.call("cli", "manager-1:2377", create("web", 1), Ok(ControlResponse::Created { id: "w1".into() }));
        s.call(
            "cli",
            "manager-2:2377",
            ControlRequest::ServiceRemove { service: "web".into() },
            Err(ControlError::NotFound("service web not found".into())),
        );
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("service rm web") && err.contains("refused: service web not found"), "{err}");
        // A network the create names being missing says nothing about the service.
        let mut s = Script::new();
        s.call(
            "cli",
            "manager-1:2377",
            create("web", 1),
            Err(ControlError::NotFound("network front not found".into())),
        );
        s.call("reader", "manager-1:2377", ControlRequest::ServiceList, list(vec![]));
        assert!(s.check().is_ok());
    }

    /// A create answered "no leader" may still be committed later (the entry the deposed leader
    /// appended survives): reads may miss it before and after that answer, then see it.
    #[test]
    fn a_write_refused_for_want_of_a_leader_may_still_take_effect_later() {
        let mut s = Script::new();
        let no_leader = Err(ControlError::NoLeader);
        let create = s.send("cli", "manager-1:2377", create("web", 1));
        s.call("reader", "manager-2:2377", ControlRequest::ServiceList, list(vec![]));
        s.answer(create, no_leader);
        s.call("reader", "manager-2:2377", ControlRequest::ServiceList, list(vec![]));
        s.call("reader", "manager-3:2377", ControlRequest::ServiceList, list(vec![view("w1", "web", 1)]));
        assert!(s.check().is_ok(), "{:?}", s.check());
        s.call("reader", "manager-3:2377", ControlRequest::ServiceList, list(vec![]));
        assert!(s.check().is_err(), "once seen, it stays");
    }

    #[test]
    fn a_service_that_may_roll_back_keeps_only_presence_checked() {
        let mut s = Script::new();
        let mut spec = ServiceSpec::new("web", "nginx:1.25");
        spec.update_config.failure_action = shoal_core::api::FailureAction::Rollback;
        s.call(
            "cli",
            "manager-1:2377",
            ControlRequest::ServiceCreate { spec },
            Ok(ControlResponse::Created { id: "w1".into() }),
        );
        // Rolled back by the orchestrator: a different spec shows, with no request for it.
        s.call("reader", "manager-1:2377", ControlRequest::ServiceList, list(vec![view("w1", "web", 3)]));
        assert!(s.check().is_ok());
        s.call("reader", "manager-1:2377", ControlRequest::ServiceList, list(vec![]));
        assert!(s.check().is_err(), "presence is still checked");
    }

    #[test]
    fn a_node_known_to_exist_does_not_vanish_without_node_rm() {
        let node = |availability| shoal_core::control::NodeView {
            node: shoal_core::api::Node {
                id: "n-w1".into(),
                meta: Default::default(),
                spec: shoal_core::api::NodeSpec {
                    desired_role: shoal_core::api::NodeRole::Worker,
                    availability,
                    labels: Default::default(),
                },
                description: shoal_core::api::NodeDescription { hostname: "worker-1".into(), ..Default::default() },
                status: Default::default(),
                role: shoal_core::api::NodeRole::Worker,
                manager_status: None,
            },
            leader: false,
            reachability: String::new(),
        };
        let mut s = Script::new();
        s.call("reader", "manager-1:2377", ControlRequest::NodeList, Ok(ControlResponse::Nodes(vec![])));
        s.call(
            "reader",
            "manager-1:2377",
            ControlRequest::NodeList,
            Ok(ControlResponse::Nodes(vec![node(Availability::Active)])),
        );
        let drain = ControlRequest::NodeUpdate {
            node: "worker-1".into(),
            availability: Some(Availability::Drain),
            label_add: Default::default(),
            label_rm: vec![],
        };
        s.call("cli", "manager-2:2377", drain, Ok(ControlResponse::Done));
        s.call(
            "reader",
            "manager-3:2377",
            ControlRequest::NodeList,
            Ok(ControlResponse::Nodes(vec![node(Availability::Drain)])),
        );
        assert!(s.check().is_ok());
        // A stale manager still shows it active.
        s.call(
            "reader",
            "manager-1:2377",
            ControlRequest::NodeList,
            Ok(ControlResponse::Nodes(vec![node(Availability::Active)])),
        );
        let err = s.check().unwrap_err();
        assert_eq!(err.object, "node n-w1");
    }
}
