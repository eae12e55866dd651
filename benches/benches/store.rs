//! Store apply throughput: service creates committed into a store that already holds N services
//! (and grows as the benchmark runs). Every create checks that the name is free, so this is the
//! figure the name index exists for: without it each create scans every service.
//!
//! `cargo bench -p shoal-benches --bench store`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoal_core::api::{Meta, Service, ServiceSpec};
use shoal_core::store::{Action, Object, Proposal, Store};

fn service(n: u64) -> Service {
    Service {
        id: format!("svc-{n:012}"),
        meta: Meta::default(),
        spec: ServiceSpec::new(format!("web-{n}"), "nginx:1.25"),
        previous_spec: None,
        spec_version: 1,
        update_status: None,
        endpoint_ports: Vec::new(),
        job_status: None,
    }
}

fn create(n: u64) -> Proposal {
    Proposal { actions: vec![Action::Create(Object::Service(service(n)))], stamp_ms: n }
}

/// A store holding `n` services.
fn filled(n: u64) -> Store {
    let store = Store::new();
    for i in 0..n {
        store.apply(&create(i)).expect("distinct names");
    }
    store
}

fn creates_into_growing_store(c: &mut Criterion) {
    let mut group = c.benchmark_group("store/create_service");
    group.throughput(Throughput::Elements(1));
    for size in [1_000u64, 10_000, 50_000] {
        let store = filled(size);
        let mut next = size;
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                next += 1;
                black_box(store.apply(&create(next)).expect("distinct names"))
            })
        });
    }
    group.finish();
}

/// Building a store of 20,000 services from empty, one create per commit.
fn fill_from_empty(c: &mut Criterion) {
    let mut group = c.benchmark_group("store/fill");
    group.sample_size(10);
    let size = 20_000u64;
    group.throughput(Throughput::Elements(size));
    group.bench_function(BenchmarkId::from_parameter(size), |b| b.iter(|| black_box(filled(size)).version()));
    group.finish();
}

criterion_group!(benches, creates_into_growing_store, fill_from_empty);
criterion_main!(benches);
