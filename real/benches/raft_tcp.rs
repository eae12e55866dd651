//! Raft commit throughput over real TCP: three managers (`shoal_core::raft::Replica`) in one process,
//! each on its own `real::net::TcpTransport` (plain TCP, no TLS) at 127.0.0.61–63 on loopback.
//!
//! Two disks: `MemDisk` (in memory, so the figure is raft + framing + loopback TCP, no fsync) and
//! `FileDisk` in a temp directory (every log append is fsynced, as the daemon does).
//!
//! `cargo bench -p shoal --bench raft_tcp`

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shoal::disk::FileDisk;
use shoal::net::TcpTransport;
use shoal_core::env::{Disk, MemDisk};
use shoal_core::raft::testing::three_managers;
use shoal_core::raft::Replica;
use shoal_core::store::Proposer;

/// Three replicas on TCP at 127.0.0.61–63:`port`, the first one leading; `disk(i)` gives each its disk.
async fn cluster(port: u16, disk: impl Fn(u64) -> Arc<dyn Disk>) -> Vec<Replica> {
    three_managers(|id| format!("127.0.0.{}:{port}", 60 + id), |addr| Arc::new(TcpTransport::new(addr)), disk).await
}

fn bench_cluster(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, replicas: &[Replica]) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    let leader = &replicas[0];

    group.bench_function("commit_sequential_on_leader", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = tokio::time::Instant::now();
                for _ in 0..iters {
                    leader.propose(shoal_core::raft::testing::next_churn_write()).await.unwrap();
                }
                start.elapsed()
            })
        })
    });

    const WRITERS: u64 = 32;
    group.bench_function("commit_32_concurrent_writers", |b| {
        b.iter_custom(|iters| {
            rt.block_on(shoal_core::raft::testing::time_concurrent_churn(leader.clone(), WRITERS, iters))
        })
    });
    group.finish();
}

fn bench_raft_tcp(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let mem = rt.block_on(cluster(23771, |_| Arc::new(MemDisk::new())));
    bench_cluster(c, &rt, "raft_tcp_3_managers_memdisk", &mem);

    let dir = tempfile::tempdir().unwrap();
    let disks: Vec<Arc<dyn Disk>> = (1..=3u64)
        .map(|id| {
            let disk = rt.block_on(FileDisk::open(dir.path().join(format!("m{id}")))).unwrap();
            Arc::new(disk) as Arc<dyn Disk>
        })
        .collect();
    let file = rt.block_on(cluster(23772, |id| disks[id as usize - 1].clone()));
    bench_cluster(c, &rt, "raft_tcp_3_managers_filedisk", &file);
}

criterion_group!(benches, bench_raft_tcp);
criterion_main!(benches);
