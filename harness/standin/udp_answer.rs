//! `udp-answer PORT…`: the UDP side of the harness's serving stand-in image (`crate::images`). It
//! answers every datagram on each port with the container's hostname and a newline, as the
//! simulator's containers answer a datagram with their name; the harness maps the hostname (the
//! container's short id) back to the container's name. Built statically by the harness's build
//! script (busybox has no UDP server), and copied into the stand-in image.

use std::net::UdpSocket;

fn main() {
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_string();
    let answer = format!("{hostname}\n");
    let mut servers = Vec::new();
    for port in std::env::args().skip(1) {
        let Ok(port) = port.parse::<u16>() else {
            eprintln!("udp-answer: {port:?} is not a port number");
            std::process::exit(2);
        };
        let socket = match UdpSocket::bind(("0.0.0.0", port)) {
            Ok(socket) => socket,
            Err(err) => {
                eprintln!("udp-answer: cannot bind UDP port {port}: {err}");
                std::process::exit(1);
            }
        };
        let answer = answer.clone();
        servers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            loop {
                if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(answer.as_bytes(), peer);
                }
            }
        }));
    }
    for server in servers {
        let _ = server.join();
    }
}
