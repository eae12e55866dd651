//! The slow-link relays for real (root: iptables nat rules, SO_MARK): a connection from one
//! loopback address to another goes through the relay with nothing changed at either end, a delay
//! set on the link holds back the bytes of connections already open, a cut between the two
//! addresses cuts the relayed connection as it cuts a direct one, and removing the run's rules
//! leaves none behind.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use shoal_harness::netfault;
use shoal_harness::relay::Relays;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 86, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 86, 2);

async fn connect(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.into(), 0))?;
    tokio::time::timeout(Duration::from_secs(2), socket.connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// One byte there and back.
async fn round_trip(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    stream.write_all(b"x").await.unwrap();
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await.unwrap();
    started.elapsed()
}

fn our_rules(comment: &str) -> Vec<String> {
    let mut rules = Vec::new();
    for (table, chain) in [("filter", "INPUT"), ("nat", "OUTPUT")] {
        let out = std::process::Command::new("iptables").args(["-w", "-t", table, "-S", chain]).output().unwrap();
        rules.extend(String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(comment)).map(str::to_string));
    }
    rules
}

#[tokio::test]
async fn relayed_links_delay_and_cut_open_connections() {
    assert!(netfault::have_root(), "the relays need root (CI runs as root)");
    let comment = format!("shoal-run-relaytest{}", std::process::id());
    let relays = Relays::start(&[A, B], &comment).await.expect("relays start");
    // An echo server on B that says who connected to it.
    let server = TcpListener::bind((B, 0)).await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = server.accept().await {
            tokio::spawn(async move {
                let _ = stream.write_all(format!("{}\n", peer.ip()).as_bytes()).await;
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let result = async {
        let mut stream = connect(A, addr).await.expect("A reaches B through the relay");
        // The server sees A's address: the relay dials from it.
        let mut hello = [0u8; 11];
        stream.read_exact(&mut hello).await.unwrap();
        assert_eq!(&hello, b"127.0.86.1\n", "the server sees A's address: {:?}", String::from_utf8_lossy(&hello));
        // Nothing changed for the dialer either: it is connected to the address it dialled.
        assert_eq!(stream.peer_addr().unwrap(), addr);
        let fast = round_trip(&mut stream).await;
        relays.set_delay(A, B, (Duration::from_millis(150), Duration::from_millis(150)));
        let slow = round_trip(&mut stream).await;
        assert!(
            slow >= Duration::from_millis(300),
            "150 ms each way on an open connection: {slow:?} (before: {fast:?})"
        );
        relays.clear();
        // A cut between the addresses cuts the relayed connection too.
        netfault::drop_rule(&comment, &A.to_string(), &B.to_string(), None).unwrap();
        stream.write_all(b"y").await.unwrap();
        let mut byte = [0u8; 1];
        let cut = tokio::time::timeout(Duration::from_millis(800), stream.read_exact(&mut byte)).await;
        assert!(cut.is_err(), "a byte crossed the cut: {cut:?}");
        assert!(connect(A, addr).await.is_err(), "a new connection crossed the cut");
        netfault::remove_filter_rules(&comment).unwrap();
        let mut stream = connect(A, addr).await.expect("healed");
        let mut hello = [0u8; 11];
        stream.read_exact(&mut hello).await.unwrap();
        round_trip(&mut stream).await;
    };
    let outcome = tokio::time::timeout(Duration::from_secs(30), result).await;
    drop(relays);
    netfault::remove_rules(&comment).unwrap();
    assert_eq!(our_rules(&comment), Vec::<String>::new(), "rules left behind");
    outcome.expect("the test did not finish in 30 s");
}
