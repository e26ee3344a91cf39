//! The UDP load generator: `flows` connected sockets, each a closed loop of
//! one request datagram and its reply (a reply that does not come within
//! [`LOSS_TIMEOUT`] counts as lost and the flow sends the next one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::UdpSocket;

/// How long a flow waits for a reply before counting the datagram lost.
pub const LOSS_TIMEOUT: Duration = Duration::from_millis(200);

/// What one load run saw.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub sent: u64,
    pub received: u64,
    /// Round trips in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl LoadResult {
    /// The `q` quantile (0..=1) of the round trips, in microseconds.
    pub fn quantile_us(&self, q: f64) -> Option<u32> {
        let n = self.latencies_us.len();
        (n > 0).then(|| self.latencies_us[((n - 1) as f64 * q).round() as usize])
    }

    /// Datagrams sent without a reply, as a fraction.
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.sent.saturating_sub(self.received) as f64 / self.sent as f64
        }
    }
}

/// Runs `flows` flows of `payload`-byte datagrams against `target` for `duration`.
pub fn run(
    target: SocketAddr,
    flows: usize,
    payload: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("build the load runtime")?;
    rt.block_on(async move {
        let deadline = Instant::now() + duration;
        let body: Arc<[u8]> = vec![b'u'; payload].into();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..flows {
            let socket = UdpSocket::bind("127.0.0.1:0")
                .await
                .context("bind a load socket")?;
            socket
                .connect(target)
                .await
                .with_context(|| format!("connect to {target}"))?;
            tasks.spawn(flow(socket, body.clone(), deadline));
        }
        let mut total = LoadResult::default();
        while let Some(r) = tasks.join_next().await {
            let r = r.context("a load flow panicked")?;
            total.sent += r.sent;
            total.received += r.received;
            total.latencies_us.extend(r.latencies_us);
        }
        total.latencies_us.sort_unstable();
        Ok(total)
    })
}

async fn flow(socket: UdpSocket, body: Arc<[u8]>, deadline: Instant) -> LoadResult {
    let mut r = LoadResult::default();
    let mut buf = vec![0u8; 65_535];
    while Instant::now() < deadline {
        let start = Instant::now();
        if socket.send(&body).await.is_err() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        r.sent += 1;
        // A late reply to an earlier datagram is drained, not counted twice.
        if let Ok(Ok(n)) = tokio::time::timeout(LOSS_TIMEOUT, socket.recv(&mut buf)).await {
            if n == body.len() {
                r.received += 1;
                r.latencies_us
                    .push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_loss() {
        let r = LoadResult {
            sent: 10,
            received: 8,
            latencies_us: (1..=8).collect(),
        };
        assert_eq!(r.quantile_us(0.0), Some(1));
        assert_eq!(r.quantile_us(1.0), Some(8));
        assert!((r.loss() - 0.2).abs() < 1e-9);
        assert_eq!(LoadResult::default().quantile_us(0.5), None);
        assert_eq!(LoadResult::default().loss(), 0.0);
    }

    #[test]
    fn a_flow_round_trips_through_an_echo() {
        let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        });
        let r = run(addr, 4, 64, Duration::from_millis(300)).unwrap();
        assert!(r.received > 0 && r.received <= r.sent, "{r:?}");
    }
}
