//! Scheduler throughput: placements per second for one batched pass over every pending task, at
//! 100, 1,000 and 10,000 nodes with ten tasks per node (10 services), plus a full orchestrator pass
//! (create the slots and place them) for a 10,000-replica service on 1,000 nodes.
//!
//! `cargo bench -p shoal-benches --bench scheduler` (add `-- --quick` for a short run).

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoal_core::api::*;
use shoal_core::store::StoreState;

fn node(i: usize) -> Node {
    let mut labels = Labels::new();
    labels.insert("zone".into(), format!("z{}", i % 3));
    Node {
        id: format!("node{i:06}"),
        meta: Meta::default(),
        spec: NodeSpec { desired_role: NodeRole::Worker, availability: Availability::Active, labels },
        description: NodeDescription {
            data_addr: String::new(),
            hostname: format!("host{i}"),
            resources: Resources { nano_cpus: 16_000_000_000, memory_bytes: 64 << 30 },
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

fn service(i: usize, replicas: u64) -> Service {
    let mut spec = ServiceSpec::new(format!("svc{i}"), "nginx:1.25");
    spec.mode = ServiceMode::Replicated { replicas };
    // A realistic mix: reservations on every service, constraints and spread on some.
    spec.task.resources.reservations = ResourceAmount { nano_cpus: 100_000_000, memory_bytes: 256 << 20 };
    if i % 3 == 1 {
        spec.task.placement.constraints = vec!["node.role==worker".into()];
    }
    if i % 3 == 2 {
        spec.task.placement.preferences = vec!["spread=node.labels.zone".into()];
    }
    Service {
        id: format!("service{i:03}"),
        meta: Meta::default(),
        spec,
        previous_spec: None,
        spec_version: 1,
        update_status: None,
        endpoint_ports: Vec::new(),
        job_status: None,
    }
}

/// `nodes` nodes, ten services, `tasks` pending tasks spread over the services.
fn cluster(nodes: usize, tasks: usize) -> StoreState {
    let mut state = StoreState::default();
    for i in 0..nodes {
        let n = node(i);
        state.nodes.insert(n.id.clone(), n);
    }
    let per_service = tasks / 10;
    for i in 0..10 {
        let s = service(i, per_service as u64);
        for slot in 1..=per_service as u64 {
            let t = Task {
                id: format!("{}-{slot:07}", s.id),
                service_id: s.id.clone(),
                service_name: s.spec.name.clone(),
                slot,
                spec_version: 1,
                spec: s.spec.task.clone(),
                desired_state: TaskState::Running,
                status: TaskStatus { state: TaskState::Pending, ..TaskStatus::default() },
                ..Task::default()
            };
            state.tasks.insert(t.id.clone(), t);
        }
        state.services.insert(s.id.clone(), s);
    }
    state
}

fn bench_schedule(c: &mut Criterion) {
    let mut group = c.benchmark_group("schedule");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for (nodes, tasks) in [(100, 1_000), (1_000, 10_000), (10_000, 100_000)] {
        let state = cluster(nodes, tasks);
        group.throughput(Throughput::Elements(tasks as u64));
        group.bench_with_input(BenchmarkId::new("placements", format!("{nodes}n_{tasks}t")), &state, |b, state| {
            b.iter(|| {
                let decisions = shoal_core::scheduler::schedule(&state.nodes, &state.services, state.tasks.values(), 0);
                assert_eq!(decisions.len(), tasks);
                black_box(decisions)
            })
        });
    }
    group.finish();
}

fn bench_reconcile(c: &mut Criterion) {
    let mut group = c.benchmark_group("reconcile");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    let mut state = StoreState::default();
    for i in 0..1_000 {
        let n = node(i);
        state.nodes.insert(n.id.clone(), n);
    }
    let s = service(0, 10_000);
    state.services.insert(s.id.clone(), s);
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("create_and_place_10k_tasks_1000n", |b| {
        b.iter(|| {
            let r = shoal_core::orchestrator::reconcile(&state, 1_000_000);
            assert_eq!(r.actions.len(), 10_000);
            black_box(r)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_schedule, bench_reconcile);
criterion_main!(benches);
