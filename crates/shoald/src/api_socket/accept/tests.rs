use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::ExponentialBuilder;

use super::{AcceptLoop, Acceptor, ApiConnection, RefillOnClose, Reserve};

/// Fails with `errno` for its first `failures` accepts, then accepts.
struct Scripted {
    failures: VecDeque<i32>,
    calls: Arc<AtomicUsize>,
}

impl Acceptor for Scripted {
    type Conn = ();

    async fn accept(&mut self) -> io::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.failures.pop_front() {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }
}

/// Backoff for the tests: short, so they run on real time.
const TEST_BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(1))
    .with_max_delay(Duration::from_millis(10))
    .without_max_times();

#[tokio::test]
async fn out_of_descriptors_spends_the_reserve_then_backs_off_instead_of_spinning() {
    let calls = Arc::new(AtomicUsize::new(0));
    let acceptor = Scripted {
        failures: std::iter::repeat_n(libc::EMFILE, 100_000).collect(),
        calls: calls.clone(),
    };
    let mut accept_loop = AcceptLoop::new(acceptor, Reserve::new(2), TEST_BACKOFF);
    assert_eq!(accept_loop.reserve.held(), 2);
    let next = tokio::time::timeout(Duration::from_millis(300), accept_loop.next()).await;
    assert!(next.is_err(), "still failing after 300 ms");
    let calls = calls.load(Ordering::SeqCst);
    // Two immediate retries (one per reserved descriptor), then waits
    // growing to 10 ms: about 35 accepts in 300 ms, not a spinning core's
    // hundreds of thousands.
    assert!((10..=80).contains(&calls), "{calls} accepts");
    assert_eq!(accept_loop.reserve.held(), 0);
}

#[tokio::test]
async fn a_freed_reserve_descriptor_lets_the_next_accept_through_at_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let acceptor = Scripted {
        failures: VecDeque::from([libc::EMFILE]),
        calls: calls.clone(),
    };
    // A backoff this long would time the test out: none may be taken.
    let slow = ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(60))
        .without_max_times();
    let mut accept_loop = AcceptLoop::new(acceptor, Reserve::new(2), slow);
    tokio::time::timeout(Duration::from_secs(5), accept_loop.next())
        .await
        .expect("accepted without waiting");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(accept_loop.reserve.held(), 2, "refilled after the accept");
}

#[tokio::test]
async fn other_accept_errors_back_off_and_recover() {
    let calls = Arc::new(AtomicUsize::new(0));
    let acceptor = Scripted {
        failures: VecDeque::from([libc::ECONNABORTED, libc::EINVAL, libc::EINVAL]),
        calls: calls.clone(),
    };
    let mut accept_loop = AcceptLoop::new(acceptor, Reserve::new(2), TEST_BACKOFF);
    accept_loop.next().await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(
        accept_loop.reserve.held(),
        2,
        "the reserve is only for EMFILE"
    );
}

#[tokio::test]
async fn a_closed_connection_puts_its_place_back_in_the_reserve() {
    let reserve = Reserve::new(2);
    assert!(reserve.release_one() && reserve.release_one());
    assert!(!reserve.release_one(), "spent");
    let (stream, _peer) = tokio::net::UnixStream::pair().unwrap();
    let connection = ApiConnection {
        stream,
        _refill: RefillOnClose(reserve.clone()),
    };
    assert_eq!(reserve.held(), 0);
    drop(connection);
    assert_eq!(reserve.held(), 2);
}
