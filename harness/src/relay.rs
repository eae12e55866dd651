//! Slow links without `tc netem` (this kernel has no `sch_netem`): every TCP connection from one
//! node's address to another's goes through a userland relay of the harness that holds each chunk
//! of bytes back by the link's delay, both ways.
//!
//! How a connection reaches the relay, with nothing changed in the daemons (they advertise and dial
//! their own addresses as always, and their mutual TLS runs end to end — the relay forwards bytes
//! only): for each ordered pair of nodes (A, B), a `nat OUTPUT` rule rewrites the destination of a
//! new TCP connection from A's address to B's address to the relay's port *on B's address*
//! (`-j DNAT --to-destination B:<relay port>`). The relay reads the original destination back
//! (`SO_ORIGINAL_DST`) and dials it from A's address, its socket marked (`SO_MARK`) so that the
//! rule lets it through. Source and destination addresses stay the nodes' own on both legs, so the
//! partition and loss rules of [`crate::netfault`] (`-s A -d B` on INPUT) cut the relayed legs as
//! they cut direct ones, and a partitioned peer's SYN goes unanswered rather than being accepted by
//! the relay.
//!
//! The rules only catch new connections, so a run whose scenario has link delays puts the relays
//! in place before its daemons start (with no delay), and a `link … delay` step then changes the
//! delay of connections already open, as netem would. A chunk read at `t` is written at
//! `t + d`, `d` drawn uniformly from the link's `[min, max]`, never before the chunk ahead of it
//! (bytes stay in order). `heal` sets every delay back to zero. Needs root (the nat rules, SO_MARK).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The mark on the relay's own outgoing sockets, which the nat rules let pass.
pub const MARK: u32 = 0x5ea1;

/// A link's delay each way, `[min, max]`.
pub type Delay = (Duration, Duration);

/// Delays by (from address, to address); absent = none.
type Table = Arc<Mutex<BTreeMap<(Ipv4Addr, Ipv4Addr), Delay>>>;

/// The relays of one run: a listener on every node's address, the nat rules to them, the delays.
pub struct Relays {
    delays: Table,
    tasks: Vec<JoinHandle<()>>,
}

fn iptables_nat(args: &[String]) -> Result<(), String> {
    let output = std::process::Command::new("iptables")
        .args(["-w", "-t", "nat"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|err| format!("cannot run iptables: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("iptables -t nat {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

impl Relays {
    /// Listen on every address of `ips` and send every TCP connection between two of them through
    /// there; the rules carry `comment` (removed with the run's other rules,
    /// [`crate::netfault::remove_rules`]).
    pub async fn start(ips: &[Ipv4Addr], comment: &str) -> Result<Relays, String> {
        if !crate::netfault::have_root() {
            return Err("link delays need root: the relays are reached through iptables nat rules".into());
        }
        let delays: Table = Arc::default();
        let mut relays = Relays { delays: delays.clone(), tasks: Vec::new() };
        let mut ports = BTreeMap::new();
        for ip in ips {
            let listener = TcpListener::bind((*ip, 0)).await.map_err(|e| format!("relay on {ip}: {e}"))?;
            let port = listener.local_addr().map_err(|e| format!("relay on {ip}: {e}"))?.port();
            ports.insert(*ip, port);
            relays.tasks.push(tokio::spawn(accept_loop(listener, delays.clone())));
        }
        for a in ips {
            for b in ips.iter().filter(|b| *b != a) {
                let args: Vec<String> = [
                    "-I",
                    "OUTPUT",
                    "-p",
                    "tcp",
                    "-s",
                    &a.to_string(),
                    "-d",
                    &b.to_string(),
                    "-m",
                    "mark",
                    "!",
                    "--mark",
                    &format!("{MARK:#x}"),
                    "-m",
                    "comment",
                    "--comment",
                    comment,
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &format!("{b}:{}", ports[b]),
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                iptables_nat(&args)?;
            }
        }
        Ok(relays)
    }

    /// Delay the link between `a` and `b`, both ways (connections already open included).
    pub fn set_delay(&self, a: Ipv4Addr, b: Ipv4Addr, delay: Delay) {
        let mut table = self.delays.lock().expect("delays lock");
        table.insert((a, b), delay);
        table.insert((b, a), delay);
    }

    /// No delay on any link.
    pub fn clear(&self) {
        self.delays.lock().expect("delays lock").clear();
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The destination a connection had before the nat rule sent it here.
fn original_destination(stream: &TcpStream) -> std::io::Result<SocketAddrV4> {
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: getsockopt on an open socket with a buffer of the size it is told.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            &mut addr as *mut libc::sockaddr_in as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)), u16::from_be(addr.sin_port)))
}

async fn accept_loop(listener: TcpListener, delays: Table) {
    while let Ok((inbound, peer)) = listener.accept().await {
        let delays = delays.clone();
        tokio::spawn(async move {
            let SocketAddr::V4(peer) = peer else { return };
            let Ok(target) = original_destination(&inbound) else { return };
            let Ok(outbound) = dial(*peer.ip(), target).await else { return };
            let (from, to) = (*peer.ip(), *target.ip());
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            tokio::join!(
                pump(in_read, out_write, delays.clone(), (from, to)),
                pump(out_read, in_write, delays, (to, from)),
            );
        });
    }
}

/// Dial `target` from `source`, marked so the nat rules leave it alone.
async fn dial(source: Ipv4Addr, target: SocketAddrV4) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    let mark = MARK;
    // SAFETY: setsockopt on an open socket with a value of the size it is told.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            &mark as *const u32 as *const libc::c_void,
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    tokio::time::timeout(Duration::from_secs(10), socket.connect(SocketAddr::V4(target)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "relay dial timed out"))?
}

/// Copy one direction of a connection, each chunk held back by the link's delay at the time it
/// was read; the end of the stream is passed on after the last chunk.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delays: Table,
    link: (Ipv4Addr, Ipv4Addr),
) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let delay = delays.lock().expect("delays lock").get(&link).copied();
                    let at = Instant::now() + delay.map(draw).unwrap_or_default();
                    if chunks.send((at, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// A delay drawn uniformly from `[min, max]`.
fn draw((min, max): Delay) -> Duration {
    if max <= min {
        return min;
    }
    rand::thread_rng().gen_range(min..=max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_drawn_within_the_links_bounds() {
        let (min, max) = (Duration::from_millis(20), Duration::from_millis(40));
        for _ in 0..100 {
            let d = draw((min, max));
            assert!(d >= min && d <= max, "{d:?}");
        }
        assert_eq!(draw((max, min)), max, "a reversed range is its lower end");
    }
}
