//! What a new connection costs on each leg of the mesh, with the real arm of the mesh seam
//! (`RealMeshNet`) on loopback: a TCP connection to a local echo server (the proxy's leg to a task on
//! its own node), a plain tunnel to a peer daemon, and a mutual-TLS tunnel (the daemon's: both sides
//! present swarm certificates). Each iteration opens one, sends 64 bytes, reads them back, and closes
//! it, as a proxied request without keep-alive does. Tunnels are streams on one connection per peer
//! (`shoal::mesh_mux`), dialled (and, under TLS, handshaken) by the first iteration only: this is the
//! steady cost of a new client connection crossing nodes. Tunnel listeners are at 127.0.0.71,
//! diallers at 127.0.0.72.
//!
//! `cargo bench -p shoal --bench mesh_tunnel`

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shoal::mesh_net::RealMeshNet;
use shoal::net::Security;
use shoal::tls::{ClusterCa, TlsConfig};
use shoal_core::env::mesh::MeshNet;
use shoal_core::env::MeshStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PAYLOAD: [u8; 64] = [7; 64];

/// Echo 64 bytes back on `stream`, then close it.
async fn echo(mut stream: MeshStream) {
    let mut buf = [0u8; 64];
    if stream.read_exact(&mut buf).await.is_ok() {
        let _ = stream.write_all(&buf).await;
        let _ = stream.shutdown().await;
    }
}

/// One request/response on a fresh stream.
async fn round_trip(mut stream: MeshStream) {
    stream.write_all(&PAYLOAD).await.expect("send");
    let mut buf = [0u8; 64];
    stream.read_exact(&mut buf).await.expect("echo");
}

/// A tunnel listener on `server` that echoes every tunnel.
async fn serve_tunnels(server: RealMeshNet) {
    let mut tunnels = server.listen_tunnels().await.expect("listen for tunnels");
    tokio::spawn(async move {
        while let Ok(incoming) = tunnels.accept().await {
            tokio::spawn(echo(incoming.stream));
        }
    });
}

fn bench_mesh_tunnel(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("mesh_new_connection_64b_echo");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    let timeout = Duration::from_secs(5);

    // The proxy's leg to a local task: plain TCP.
    let local = RealMeshNet::new("127.0.0.72:0", Security::Plain);
    rt.block_on(async {
        let mut listener = local.listen_tcp("127.0.0.71:23901").await.expect("listen");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(echo(stream));
            }
        });
    });
    group.bench_function("tcp_to_local_task", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = tokio::time::Instant::now();
                for _ in 0..iters {
                    round_trip(local.connect_tcp("127.0.0.71:23901", timeout).await.unwrap()).await;
                }
                start.elapsed()
            })
        })
    });

    // A tunnel to a peer daemon without TLS (tests only).
    let plain_server = RealMeshNet::new("127.0.0.71:23902", Security::Plain);
    let plain_client = RealMeshNet::new("127.0.0.72:23902", Security::Plain);
    rt.block_on(serve_tunnels(plain_server));
    group.bench_function("plain_tunnel", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = tokio::time::Instant::now();
                for _ in 0..iters {
                    round_trip(plain_client.open_tunnel("127.0.0.71:23902", timeout).await.unwrap()).await;
                }
                start.elapsed()
            })
        })
    });

    // The daemon's tunnel: mutual TLS with swarm certificates.
    let ca = ClusterCa::generate().unwrap();
    let tls = |id: &str| Security::Tls(Arc::new(TlsConfig::new(ca.cert_pem(), &ca.issue(id).unwrap()).unwrap()));
    let tls_server = RealMeshNet::new("127.0.0.71:23903", tls("node-a"));
    let tls_client = RealMeshNet::new("127.0.0.72:23903", tls("node-b"));
    rt.block_on(serve_tunnels(tls_server));
    group.bench_function("mutual_tls_tunnel", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = tokio::time::Instant::now();
                for _ in 0..iters {
                    round_trip(tls_client.open_tunnel("127.0.0.71:23903", timeout).await.unwrap()).await;
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_mesh_tunnel);
criterion_main!(benches);
