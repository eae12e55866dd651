//! What a simulated container's process does on its ports: a tiny request/response protocol.
//!
//! On each TCP port it reads request lines and answers each with the container's name (shoal names a
//! task's container `<service>.<slot>.<task id>`) and a newline, keeping the connection open for
//! more requests until the client closes it (keep-alive). On each UDP port it answers every datagram
//! with the same name.
//!
//! Each answer takes the image's service time ([`crate::executor::Behavior::answer_delay`], none by
//! default). Stopping follows what HTTP servers do on SIGTERM (Go's `Server.Shutdown`, nginx's
//! graceful quit): stop accepting, answer a request already begun, close every connection once it is
//! idle, and exit when none is left; the executor kills what is still open when the stop grace ends
//! (the connections are then reset). Images marked `exits-on-sigterm` die at once instead, as many
//! processes do, resetting whatever was open: only draining before the stop saves those requests.

use std::sync::Arc;
use std::time::Duration;

use shoal_core::env::mesh::DatagramSocket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::mesh_net::{SimListener, SimStream, SimUdpSocket};

/// A serving process's phase, as signals move it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// SIGTERM: stop accepting, close connections once idle.
    Terminating,
}

/// Runs a future as one of a container's processes (on the host's container runtime, so a daemon
/// restart does not kill it).
pub type Spawner = Arc<
    dyn Fn(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> tokio::task::JoinHandle<()>
        + Send
        + Sync,
>;

/// A spawner on the current node.
pub fn local_spawner() -> Spawner {
    Arc::new(shoal_core::env::spawn)
}

/// The container's open connections: each handler holds a clone; the count is `strong_count - 1`.
pub type Tracker = Arc<()>;

/// Serve `name` on `listener` until SIGTERM (then stop accepting); each connection in its own task.
pub async fn accept_loop(
    mut listener: SimListener,
    name: String,
    answer_delay: Duration,
    mut phase: watch::Receiver<Phase>,
    tracker: Tracker,
    spawner: Spawner,
) {
    loop {
        if *phase.borrow_and_update() != Phase::Running {
            return;
        }
        tokio::select! {
            biased;
            changed = phase.changed() => if changed.is_err() { return },
            accepted = listener.accept_stream() => match accepted {
                Ok((stream, _peer)) => {
                    let handler = connection(stream, name.clone(), answer_delay, phase.clone(), tracker.clone());
                    spawner(Box::pin(handler));
                }
                Err(_) => return,
            },
        }
    }
}

/// One keep-alive connection: answer each request line with `name`, close when idle after SIGTERM.
async fn connection(
    mut stream: SimStream,
    name: String,
    answer_delay: Duration,
    mut phase: watch::Receiver<Phase>,
    _tracker: Tracker,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let idle = pending.is_empty();
        if idle && *phase.borrow_and_update() != Phase::Running {
            let _ = stream.shutdown().await;
            return;
        }
        let read = tokio::select! {
            biased;
            changed = phase.changed(), if idle => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            read = stream.read(&mut buf) => read,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            pending.drain(..=end);
            if !answer_delay.is_zero() {
                shoal_core::env::sleep(answer_delay).await;
            }
            let answer = format!("{name}\n");
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

/// Answer every datagram on `socket` with `name` until SIGTERM.
pub async fn udp_loop(socket: SimUdpSocket, name: String, mut phase: watch::Receiver<Phase>) {
    let mut buf = [0u8; 1500];
    loop {
        if *phase.borrow_and_update() != Phase::Running {
            return;
        }
        tokio::select! {
            biased;
            changed = phase.changed() => if changed.is_err() { return },
            received = socket.recv_from(&mut buf) => match received {
                Ok((_, from)) => { let _ = socket.send_to(format!("{name}\n").as_bytes(), &from).await; }
                Err(_) => return,
            },
        }
    }
}

/// How long a stopping container waits between looks at its open connections.
pub const DRAIN_POLL: Duration = Duration::from_millis(10);
