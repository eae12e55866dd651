use std::collections::BTreeMap;

use proptest::prelude::*;

use super::testkit::*;
use super::*;
use crate::api::*;

fn run(state: &StoreState) -> Vec<Decision> {
    schedule(&state.nodes, &state.services, state.tasks.values(), 1_000_000)
}

fn placements(decisions: &[Decision]) -> BTreeMap<String, String> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Assign { task_id, node_id } => Some((task_id.clone(), node_id.clone())),
            _ => None,
        })
        .collect()
}

fn errors(decisions: &[Decision]) -> Vec<String> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Unschedulable { err, .. } => Some(err.clone()),
            _ => None,
        })
        .collect()
}

fn per_node(decisions: &[Decision]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in placements(decisions).values() {
        *m.entry(n.clone()).or_default() += 1;
    }
    m
}

#[test]
fn constraints_parse_and_match() {
    let c = parse_constraints(&["node.labels.zone == east".into(), "node.role!=manager".into()]).unwrap();
    assert_eq!(
        c[0],
        Constraint { attribute: NodeAttribute::NodeLabel("zone".into()), equal: true, value: "east".into() }
    );
    assert!(!c[1].equal);
    let east = labelled("n1", &[("zone", "EAST")]);
    assert!(node_matches(&c, &east), "values compare case-insensitively, as swarmkit's EqualFold");
    let mut mgr = east.clone();
    mgr.role = NodeRole::Manager;
    assert!(!node_matches(&c, &mgr));
    // A missing label reads as empty: `!=` matches, `==` does not.
    let bare = node("n2");
    assert!(!node_matches(&c, &bare));
    assert!(node_matches(&parse_constraints(&["node.labels.zone!=east".into()]).unwrap(), &bare));
    for (expr, want) in [
        ("node.id=n1", "constraint expected one operator from ==, !="),
        ("node.colour==red", "constraint key 'node.colour' is not supported"),
        ("9node==x", "key '9node' is invalid"),
        ("node.hostname==a;b", "value 'a;b' is invalid"),
        ("node.labels.==x", "constraint key 'node.labels.' is not supported"),
    ] {
        let err = parse_constraints(&[expr.to_string()]).unwrap_err().to_string();
        assert!(err.starts_with(want), "{expr}: {err}");
    }
    let all = parse_constraints(&[
        "node.id==n1".into(),
        "node.hostname==host-n1".into(),
        "node.platform.os==linux".into(),
        "node.platform.arch==x86_64".into(),
        "engine.labels.disk!=ssd".into(),
    ])
    .unwrap();
    assert!(node_matches(&all, &node("n1")));
    assert!(parse_preferences(&["spread=node.labels.zone".into()]).is_ok());
    assert!(parse_preferences(&["spread=node.role".into()]).is_err());
    assert!(parse_preferences(&["binpack=node.labels.zone".into()]).is_err());
}

#[test]
fn spreads_by_service_then_total() {
    let web = service("web", 4);
    let other = service("other", 1);
    // n1 already runs `other`, so with equal `web` counts n2/n3 go first.
    let state = state_with(
        vec![node("n1"), node("n2"), node("n3")],
        vec![web.clone(), other.clone()],
        vec![
            task("o1", &other, 1, "n1", TaskState::Running),
            pending("t1", &web, 1),
            pending("t2", &web, 2),
            pending("t3", &web, 3),
            pending("t4", &web, 4),
        ],
    );
    let d = run(&state);
    let p = placements(&d);
    assert_eq!(p["t1"], "n2");
    assert_eq!(p["t2"], "n3");
    assert_eq!(p["t3"], "n1");
    assert_eq!(p["t4"], "n2", "ties broken by total tasks, then node id");
    assert_eq!(per_node(&d).values().copied().max(), Some(2));
}

/// compose `depends_on`: a service's tasks wait until every service it depends on (that exists) has
/// a running task, saying so; then they are placed as usual.
#[test]
fn tasks_wait_for_the_services_they_depend_on() {
    let db = service("db", 1);
    let cache = service("cache", 1);
    let mut web = service("web", 2);
    web.spec.depends_on = vec!["db".into(), "cache".into(), "gone".into()];
    let nodes = vec![node("n1"), node("n2")];
    let waiting = state_with(
        nodes.clone(),
        vec![db.clone(), cache.clone(), web.clone()],
        vec![
            pending("d1", &db, 1),
            task("c1", &cache, 1, "n1", TaskState::Running),
            pending("w1", &web, 1),
            pending("w2", &web, 2),
        ],
    );
    let d = run(&waiting);
    assert!(placements(&d).contains_key("d1"), "the dependency itself is placed");
    assert!(!placements(&d).contains_key("w1") && !placements(&d).contains_key("w2"));
    assert_eq!(errors(&d), ["waiting for db to start (depends_on)", "waiting for db to start (depends_on)"]);
    // db runs (a dependency that no service has, `gone`, is not waited for): web is placed.
    let ready = state_with(
        nodes,
        vec![db.clone(), cache.clone(), web.clone()],
        vec![
            task("d1", &db, 1, "n2", TaskState::Running),
            task("c1", &cache, 1, "n1", TaskState::Running),
            pending("w1", &web, 1),
            pending("w2", &web, 2),
        ],
    );
    assert_eq!(placements(&run(&ready)).len(), 2);
}

#[test]
fn explains_why_nothing_fits() {
    let mut web = service("web", 1);
    web.spec.task.resources.reservations.memory_bytes = 6 << 30;
    let mut down = node("n1");
    down.status.state = NodeState::Down;
    let mut drained = node("n2");
    drained.spec.availability = Availability::Drain;
    let mut small = node("n3");
    small.description.resources.memory_bytes = 1 << 30;
    let state = state_with(vec![down, drained, small], vec![web.clone()], vec![pending("t1", &web, 1)]);
    assert_eq!(
        errors(&run(&state)),
        vec!["no suitable node (2 nodes not available for new tasks; insufficient resources on 1 node)"]
    );
    // No nodes at all: the bare words.
    let empty = state_with(vec![], vec![web.clone()], vec![pending("t1", &web, 1)]);
    assert_eq!(errors(&run(&empty)), vec!["no suitable node"]);
    // The error is written once, and not again while it stays the same.
    let actions = schedule_state(&state, 5);
    assert_eq!(actions.len(), 1);
    let mut again = state.clone();
    if let Action::Update(Object::Task(t)) = &actions[0] {
        assert_eq!(t.status.state, TaskState::Pending);
        again.tasks.insert(t.id.clone(), t.clone());
    }
    assert!(schedule_state(&again, 6).is_empty());
}

#[test]
fn resources_count_reservations_of_tasks_already_placed_and_placed_in_this_pass() {
    let mut web = service("web", 5);
    web.spec.task.resources.reservations.memory_bytes = 3 << 30; // two per 8 GiB node
    let tasks = vec![
        task("r1", &web, 1, "n1", TaskState::Running),
        task("old", &web, 9, "n2", TaskState::Failed), // terminal: reserves nothing
        pending("t2", &web, 2),
        pending("t3", &web, 3),
        pending("t4", &web, 4),
        pending("t5", &web, 5),
    ];
    let state = state_with(vec![node("n1"), node("n2")], vec![web], tasks);
    let d = run(&state);
    assert_eq!(per_node(&d), BTreeMap::from([("n1".to_string(), 1), ("n2".to_string(), 2)]));
    assert_eq!(errors(&d), vec!["no suitable node (insufficient resources on 2 nodes)"; 1]);
}

#[test]
fn constraints_and_platform_filter_nodes() {
    let mut web = service("web", 3);
    web.spec.task.placement.constraints = vec!["node.labels.tier==front".into()];
    let state = state_with(
        vec![labelled("n1", &[("tier", "front")]), node("n2"), node("n3"), node("n4")],
        vec![web.clone()],
        vec![pending("t1", &web, 1), pending("t2", &web, 2)],
    );
    let d = run(&state);
    assert_eq!(per_node(&d), BTreeMap::from([("n1".to_string(), 2)]));

    let mut arm = service("arm", 1);
    arm.spec.task.placement.platforms = vec!["linux/arm64".into()];
    let mut pi = node("pi");
    pi.description.arch = "aarch64".into();
    let state = state_with(vec![node("n1"), pi], vec![arm.clone()], vec![pending("a1", &arm, 1)]);
    assert_eq!(placements(&run(&state))["a1"], "pi");
    let state = state_with(vec![node("n1"), node("n2"), node("n3")], vec![arm.clone()], vec![pending("a1", &arm, 1)]);
    assert_eq!(errors(&run(&state)), vec!["no suitable node (unsupported platform on 3 nodes)"]);

    let mut nowhere = service("nowhere", 1);
    nowhere.spec.task.placement.constraints = vec!["node.labels.tier==back".into()];
    let state =
        state_with(vec![node("n1"), node("n2"), node("n3")], vec![nowhere.clone()], vec![pending("x", &nowhere, 1)]);
    assert_eq!(errors(&run(&state)), vec!["no suitable node (scheduling constraints not satisfied on 3 nodes)"]);
}

#[test]
fn host_ports_and_max_replicas() {
    let mut web = service("web", 3);
    web.spec.ports = vec![PortConfig {
        protocol: "tcp".into(),
        target_port: 80,
        published_port: 8080,
        publish_mode: PublishMode::Host,
    }];
    let state = state_with(
        vec![node("n1"), node("n2")],
        vec![web.clone()],
        vec![pending("t1", &web, 1), pending("t2", &web, 2), pending("t3", &web, 3)],
    );
    let d = run(&state);
    assert_eq!(per_node(&d), BTreeMap::from([("n1".to_string(), 1), ("n2".to_string(), 1)]));
    assert_eq!(errors(&d), vec!["no suitable node (host-mode port already in use on 2 nodes)"]);

    let mut capped = service("capped", 5);
    capped.spec.task.placement.max_replicas_per_node = 2;
    let tasks = (1..=5).map(|i| pending(&format!("c{i}"), &capped, i)).collect();
    let state = state_with(vec![node("n1"), node("n2")], vec![capped], tasks);
    let d = run(&state);
    assert_eq!(per_node(&d), BTreeMap::from([("n1".to_string(), 2), ("n2".to_string(), 2)]));
    assert_eq!(errors(&d), vec!["no suitable node (max replicas per node limit exceed)"]);
}

#[test]
fn spread_preference_evens_out_label_values_first() {
    let mut web = service("web", 6);
    web.spec.task.placement.preferences = vec!["spread=node.labels.zone".into()];
    // Zone a has 3 nodes, zone b 1: without the preference b would get 1 of 6; with it, 3.
    let nodes = vec![
        labelled("a1", &[("zone", "a")]),
        labelled("a2", &[("zone", "a")]),
        labelled("a3", &[("zone", "a")]),
        labelled("b1", &[("zone", "b")]),
    ];
    let tasks = (1..=6).map(|i| pending(&format!("t{i}"), &web, i)).collect();
    let state = state_with(nodes, vec![web], tasks);
    let d = run(&state);
    let p = per_node(&d);
    assert_eq!(p["b1"], 3);
    assert_eq!(p["a1"] + p["a2"] + p["a3"], 3);
    assert_eq!(p.values().filter(|&&n| n == 1).count(), 3);
}

#[test]
fn nodes_with_recent_failures_rank_last() {
    let web = service("web", 1);
    let mut tasks: Vec<Task> = (0..5)
        .map(|i| {
            let mut t = task(&format!("f{i}"), &web, 1, "n1", TaskState::Failed);
            t.status.timestamp_ms = 999_000;
            t
        })
        .collect();
    // n2 is busier, yet n1 has failed the service five times in the last five minutes.
    let other = service("other", 2);
    tasks.push(task("o1", &other, 1, "n2", TaskState::Running));
    tasks.push(task("o2", &other, 2, "n2", TaskState::Running));
    tasks.push(pending("t1", &web, 1));
    let state = state_with(vec![node("n1"), node("n2")], vec![web, other], tasks);
    assert_eq!(placements(&run(&state))["t1"], "n2");
}

#[test]
fn preassigned_global_tasks_are_checked_on_their_node() {
    let mut g = global("g");
    g.spec.task.resources.reservations.memory_bytes = 1 << 30;
    let mut small = node("n2");
    small.description.resources.memory_bytes = 512 << 20;
    let state = state_with(
        vec![node("n1"), small],
        vec![g.clone()],
        vec![task("g1", &g, 0, "n1", TaskState::Pending), task("g2", &g, 0, "n2", TaskState::Pending)],
    );
    let d = run(&state);
    assert_eq!(placements(&d)["g1"], "n1");
    assert_eq!(errors(&d), vec!["no suitable node (insufficient resources on 1 node)"]);
}

#[test]
fn desired_shutdown_and_non_pending_tasks_are_left_alone() {
    let web = service("web", 1);
    let mut t = pending("t1", &web, 1);
    t.desired_state = TaskState::Shutdown;
    let state = state_with(vec![node("n1")], vec![web.clone()], vec![t, task("t2", &web, 2, "", TaskState::New)]);
    assert!(run(&state).is_empty());
}

#[test]
fn batch_of_100k_tasks_on_10k_nodes() {
    let services: Vec<Service> = (0..10).map(|i| service(&format!("s{i}"), 10_000)).collect();
    let nodes: Vec<Node> = (0..10_000).map(|i| node(&format!("n{i:05}"))).collect();
    let mut tasks = Vec::new();
    for s in &services {
        for slot in 1..=10_000 {
            tasks.push(pending(&format!("{}-{slot:05}", s.id), s, slot));
        }
    }
    let state = state_with(nodes, services, tasks);
    let d = run(&state);
    assert_eq!(d.len(), 100_000);
    let counts = per_node(&d);
    assert_eq!(counts.len(), 10_000);
    assert!(counts.values().all(|&c| c == 10), "every node gets exactly 10 tasks");
    // Each service is spread one per node.
    let p = placements(&d);
    let mut per_service_node: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (t, n) in &p {
        *per_service_node.entry((t[..2].to_string(), n.clone())).or_default() += 1;
    }
    assert!(per_service_node.values().all(|&c| c == 1));
}

#[test]
fn scheduling_is_deterministic() {
    let web = service("web", 50);
    let nodes: Vec<Node> = (0..7).map(|i| node(&format!("n{i}"))).collect();
    let tasks = (1..=50).map(|i| pending(&format!("t{i:02}"), &web, i)).collect();
    let state = state_with(nodes, vec![web], tasks);
    assert_eq!(run(&state), run(&state.clone()));
}

prop_compose! {
    fn arb_node(i: usize)(
        ready in prop::bool::weighted(0.8),
        availability in prop::sample::select(vec![Availability::Active, Availability::Active, Availability::Pause, Availability::Drain]),
        zone in prop::sample::select(vec!["a", "b", "c"]),
        mem_gib in 1u64..8,
        arm in prop::bool::weighted(0.2),
    ) -> Node {
        let mut n = labelled(&format!("n{i:02}"), &[("zone", zone)]);
        if !ready { n.status.state = NodeState::Down; }
        n.spec.availability = availability;
        n.description.resources.memory_bytes = mem_gib << 30;
        if arm { n.description.arch = "arm64".into(); }
        n
    }
}

prop_compose! {
    fn arb_service(i: usize)(
        replicas in 1u64..12,
        mem_gib in 0u64..4,
        constraint in prop::sample::select(vec!["", "node.labels.zone==a", "node.labels.zone!=b"]),
        max_per_node in 0u64..3,
        host_port in prop::bool::weighted(0.3),
        amd64_only in prop::bool::weighted(0.2),
        spread in prop::bool::weighted(0.3),
    ) -> Service {
        let mut s = service(&format!("s{i}"), replicas);
        s.spec.task.resources.reservations.memory_bytes = mem_gib << 30;
        if !constraint.is_empty() { s.spec.task.placement.constraints = vec![constraint.to_string()]; }
        s.spec.task.placement.max_replicas_per_node = max_per_node;
        if host_port {
            s.spec.ports = vec![PortConfig { protocol: "tcp".into(), target_port: 80, published_port: 9000 + i as u16 % 2, publish_mode: PublishMode::Host }];
        }
        if amd64_only { s.spec.task.placement.platforms = vec!["linux/amd64".into()]; }
        if spread { s.spec.task.placement.preferences = vec!["spread=node.labels.zone".into()]; }
        s
    }
}

fn arb_cluster() -> impl Strategy<Value = StoreState> {
    let nodes = (1usize..12).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>());
    let services = (1usize..5).prop_flat_map(|n| (0..n).map(arb_service).collect::<Vec<_>>());
    (nodes, services).prop_map(|(nodes, services)| {
        let mut tasks = Vec::new();
        for s in &services {
            let ServiceMode::Replicated { replicas } = s.spec.mode else {
                continue;
            };
            for slot in 1..=replicas {
                tasks.push(pending(&format!("{}-{slot:02}", s.id), s, slot));
            }
        }
        state_with(nodes, services, tasks)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Whatever the cluster, a placement never breaks a filter: checked by replaying the decisions
    /// onto fresh node infos and running every filter on the chosen node before charging the task.
    #[test]
    fn placements_never_violate_a_filter(state in arb_cluster()) {
        let decisions = run(&state);
        let (mut infos, index) = node_infos(&state.nodes, &state.services, state.tasks.values(), 1_000_000);
        for d in &decisions {
            if let Decision::Assign { task_id, node_id } = d {
                let task = &state.tasks[task_id];
                let req = TaskRequirements::new(task, state.services.get(&task.service_id));
                let pipeline = Pipeline::new(&req);
                let info = &mut infos[index[node_id.as_str()]];
                prop_assert!(pipeline.check(&req, info), "{task_id} on {node_id} fails filter {:?}", pipeline.first_failure(&req, info));
                info.add_task(&req, true);
            }
        }
        // Every pending task got a decision, and an unplaced one carries a reason.
        prop_assert_eq!(decisions.len(), state.tasks.len());
        for e in errors(&decisions) {
            prop_assert!(e.starts_with("no suitable node"));
        }
    }
}
