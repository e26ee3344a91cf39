//! The UDP backends: one process answering every datagram with itself, on
//! three loopback ports (one blocking thread each), the same for every
//! target so that only the proxy in between differs.

use std::net::{SocketAddr, UdpSocket};

use anyhow::Context;

/// Serves `listen` addresses until killed.
pub fn run(listen: &[SocketAddr]) -> anyhow::Result<()> {
    let mut threads = Vec::new();
    for &addr in listen {
        let socket = UdpSocket::bind(addr).with_context(|| format!("bind udp {addr}"))?;
        threads.push(std::thread::spawn(move || serve(&socket)));
    }
    println!("udp echo on {listen:?}");
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn serve(socket: &UdpSocket) {
    let mut buf = [0u8; 65_535];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let _ = socket.send_to(&buf[..n], from);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("udp echo: {e}");
                return;
            }
        }
    }
}
