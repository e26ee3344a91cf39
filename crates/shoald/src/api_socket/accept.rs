//! The API socket's accept loop, which outlives descriptor exhaustion.
//!
//! When the process runs out of descriptors (a flood of mesh connections),
//! accept(2) fails with EMFILE, and tonic's server stops on such an error.
//! [`incoming`] never yields one: it closes one of a few descriptors held
//! in [`Reserve`] and accepts again at once, and when the reserve is spent
//! it retries with backoff (warning at most once a minute) instead of
//! spinning. A connection that closes reopens its place in the reserve
//! straight away, before the mesh's next accept can take it.

use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::{Connected, UdsConnectInfo};

/// Descriptors held back for the API socket's accepts at exhaustion.
const RESERVED_DESCRIPTORS: usize = 8;

/// Waits between failed accepts: from 10 ms, doubling up to 1 s, for as
/// long as accepts fail. Without jitter: one loop per process, with no
/// others to spread out from.
const BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(10))
    .with_max_delay(Duration::from_secs(1))
    .with_factor(2.0)
    .without_max_times();

/// Failed accepts are reported at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The connections `listener` accepts, for tonic's `serve_with_incoming`:
/// never an error (see the module docs), so the server never stops on one.
pub fn incoming(listener: UnixListener) -> impl Stream<Item = io::Result<ApiConnection>> + Send {
    let accept_loop = AcceptLoop::new(listener, Reserve::new(RESERVED_DESCRIPTORS), BACKOFF);
    futures::stream::unfold(accept_loop, |mut accept_loop| async move {
        let stream = accept_loop.next().await;
        let connection = ApiConnection {
            stream,
            _refill: RefillOnClose(accept_loop.reserve.clone()),
        };
        Some((Ok(connection), accept_loop))
    })
}

/// Open `/dev/null`s, each closed to make room for one accept at EMFILE.
pub struct Reserve {
    files: Mutex<Vec<File>>,
    /// How many descriptors the reserve should hold.
    target: usize,
}

// === impl Reserve ===

impl Reserve {
    pub fn new(target: usize) -> Arc<Reserve> {
        let reserve = Arc::new(Reserve {
            files: Mutex::new(Vec::with_capacity(target)),
            target,
        });
        reserve.refill();
        reserve
    }

    /// Closes one reserved descriptor; false when none is left.
    fn release_one(&self) -> bool {
        self.files.lock().expect("reserve lock").pop().is_some()
    }

    /// Reopens reserved descriptors up to the target, as far as the
    /// process limit allows.
    fn refill(&self) {
        let mut files = self.files.lock().expect("reserve lock");
        while files.len() < self.target {
            match File::open("/dev/null") {
                Ok(f) => files.push(f),
                Err(_) => break,
            }
        }
    }

    /// Descriptors held now.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.files.lock().expect("reserve lock").len()
    }
}

/// What [`AcceptLoop`] accepts from: a Unix listener, or a fake in tests.
pub trait Acceptor: Send + 'static {
    type Conn: Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl Acceptor for UnixListener {
    type Conn = UnixStream;

    async fn accept(&mut self) -> io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// Accepts, retrying failures (see the module docs).
pub struct AcceptLoop<A> {
    acceptor: A,
    reserve: Arc<Reserve>,
    /// The waits between failed accepts, started afresh for each connection.
    backoff: ExponentialBuilder,
    /// Failed accepts since the last warning.
    unreported: u64,
    /// When the last warning was logged.
    last_warning: Option<Instant>,
}

// === impl AcceptLoop ===

impl<A: Acceptor> AcceptLoop<A> {
    pub fn new(acceptor: A, reserve: Arc<Reserve>, backoff: ExponentialBuilder) -> Self {
        AcceptLoop {
            acceptor,
            reserve,
            backoff,
            unreported: 0,
            last_warning: None,
        }
    }

    /// The next connection; retries failed accepts.
    pub async fn next(&mut self) -> A::Conn {
        let mut waits = self.backoff.build();
        loop {
            match self.acceptor.accept().await {
                Ok(conn) => {
                    self.reserve.refill();
                    return conn;
                }
                Err(err) if out_of_descriptors(&err) && self.reserve.release_one() => {
                    tracing::debug!(
                        "API socket: out of descriptors, accepting with a reserved one"
                    );
                }
                Err(err) => {
                    self.report(&err);
                    // The builder sets no limit on attempts: there is always a wait.
                    let wait = waits.next().unwrap_or(Duration::from_secs(1));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn report(&mut self, err: &io::Error) {
        self.unreported += 1;
        if self
            .last_warning
            .is_some_and(|at| at.elapsed() < WARN_EVERY)
        {
            return;
        }
        tracing::warn!(
            %err,
            failures = self.unreported,
            "API socket: accept failed; retrying with backoff (reported at most once a minute)"
        );
        self.unreported = 0;
        self.last_warning = Some(Instant::now());
    }
}

fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// One accepted API connection. Fields drop in order: the stream closes,
/// then its descriptor's place goes back to the reserve.
pub struct ApiConnection {
    stream: UnixStream,
    _refill: RefillOnClose,
}

struct RefillOnClose(Arc<Reserve>);

impl Drop for RefillOnClose {
    fn drop(&mut self) {
        self.0.refill();
    }
}

// === impl ApiConnection ===

impl Connected for ApiConnection {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> UdsConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for ApiConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ApiConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
