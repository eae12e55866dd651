//! Raft commit throughput: a 3-manager cluster on real tokio, over the in-process transport and an
//! in-memory disk (`shoal_core::raft::testing`), so the figure is the cost of openraft, our log
//! record encoding, the state machine and the RPC layer — not of a network or fsync.
//!
//! `cargo bench -p shoal-benches --bench raft`

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shoal_core::raft::testing::{three_managers, LocalNet, MemDisk};
use shoal_core::raft::Replica;
use shoal_core::store::Proposer;

async fn cluster() -> Vec<Replica> {
    let net = LocalNet::new();
    three_managers(|id| format!("10.0.0.{id}:2377"), |addr| Arc::new(net.transport(addr)), |_| Arc::new(MemDisk::new()))
        .await
}

fn bench_raft(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let replicas = rt.block_on(cluster());
    let mut group = c.benchmark_group("raft_3_managers");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));

    group.bench_function("commit_sequential_on_leader", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = tokio::time::Instant::now();
                for _ in 0..iters {
                    replicas[0].propose(shoal_core::raft::testing::next_churn_write()).await.unwrap();
                }
                start.elapsed()
            })
        })
    });

    group.bench_function("commit_sequential_forwarded_by_follower", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = tokio::time::Instant::now();
                for _ in 0..iters {
                    replicas[1].propose(shoal_core::raft::testing::next_churn_write()).await.unwrap();
                }
                start.elapsed()
            })
        })
    });

    const WRITERS: u64 = 32;
    group.bench_function("commit_32_concurrent_writers", |b| {
        b.iter_custom(|iters| {
            rt.block_on(shoal_core::raft::testing::time_concurrent_churn(replicas[0].clone(), WRITERS, iters))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_raft);
criterion_main!(benches);
