//! The dispatcher session: opens it, heartbeats while connected, passes each
//! assignment set on, and reconnects with backoff when the session breaks.

use std::sync::Arc;
use std::time::Duration;

use shoal_api::pb::dispatcher_client::DispatcherClient;
use shoal_api::pb::{HeartbeatRequest, NodeDescription, SessionRequest, Task};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::config::{AgentConfig, NodeDirective};

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// Reconnect and retry delay: jittered, growing from 100-200ms by doubling
/// up to 2.5-5s (or a lower cap), reset after a success.
///
/// Each delay is drawn between half its nominal value and the nominal value
/// (200ms, 400ms, ... up to the cap), so many nodes that lost the same
/// manager spread their reconnects and none ever waits longer than the cap.
/// The delays come from `backon`'s exponential backoff with jitter (which
/// adds up to one delay again), built from half the nominal values.
#[derive(Debug)]
pub(crate) struct Backoff {
    delays: backon::ExponentialBackoff,
    /// The longest wait, in `BACKOFF_START..=BACKOFF_MAX`.
    cap: Duration,
    /// Delays taken since the last reset, to resume the progression when the
    /// cap changes.
    taken: u32,
}

// === impl Backoff ===

impl Backoff {
    pub(crate) fn new() -> Self {
        Self {
            delays: jittered_delays(BACKOFF_MAX),
            cap: BACKOFF_MAX,
            taken: 0,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.delays = jittered_delays(self.cap);
        self.taken = 0;
    }

    /// Never waits longer than `max` (at least the first delay).
    pub(crate) fn cap(&mut self, max: Duration) {
        let cap = max.clamp(BACKOFF_START, BACKOFF_MAX);
        if cap == self.cap {
            return;
        }
        self.cap = cap;
        self.delays = jittered_delays(cap);
        for _ in 0..self.taken {
            self.delays.next();
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        self.taken = self.taken.saturating_add(1);
        // The iterator never ends (no limit on times or total delay); `min`
        // guards against float rounding in the jitter.
        self.delays.next().unwrap_or(self.cap).min(self.cap)
    }

    /// Sleeps for the next delay; false if `shutdown` fired meanwhile.
    pub(crate) async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// Half the nominal delays, doubling up to half of `cap`; the jitter adds up
/// to as much again.
fn jittered_delays(cap: Duration) -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(BACKOFF_START / 2)
        .with_max_delay(cap / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// This host's CPUs in Docker's NanoCPUs (1e9 per CPU).
fn host_nano_cpus() -> i64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as i64 * 1_000_000_000
}

/// This host's memory (MemTotal), 0 if unknown.
fn host_memory_bytes() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// The request that opens this node's session.
pub(crate) fn session_request(config: &AgentConfig) -> SessionRequest {
    SessionRequest {
        node_id: config.node_id.clone(),
        description: Some(NodeDescription {
            hostname: config.hostname.clone(),
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            nano_cpus: host_nano_cpus(),
            memory_bytes: host_memory_bytes(),
        }),
        addr: config.addr.clone(),
    }
}

/// Keeps a session open until `shutdown`. Publishes the current session id
/// (None while disconnected) and every assignment set received.
pub(crate) async fn run_session(
    client: DispatcherClient<Channel>,
    config: Arc<AgentConfig>,
    session_id: watch::Sender<Option<String>>,
    assignments: watch::Sender<Option<Vec<Task>>>,
    directives: watch::Sender<Option<NodeDirective>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new();
    // The period the managers asked for: a new leader calls a node Down if
    // it has not opened a session within a few periods, so reconnecting must
    // never wait longer than one.
    let mut period = DEFAULT_HEARTBEAT;
    let mut failures = FailureLog::default();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let channels = SessionOutputs {
            session_id: &session_id,
            assignments: &assignments,
            directives: &directives,
        };
        let result = one_session(&client, &config, &channels, &mut period, &shutdown).await;
        let was_connected = session_id.borrow().is_some();
        match result {
            Ok(()) => backoff.reset(),
            Err(status) => {
                failures.failed(was_connected, &status);
            }
        }
        backoff.cap(period);
        session_id.send_replace(None);
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
}

/// Logs a session failure at warn once per failure episode (from the first
/// failure until a session delivers a message again), at debug after that:
/// a node that cannot reach its manager, or whose messages cannot be read,
/// says so without flooding the log every few seconds.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    /// A failure was logged at warn and no session has worked since.
    in_episode: bool,
}

// === impl FailureLog ===

impl FailureLog {
    /// Records one failure; returns whether it was logged at warn.
    pub(crate) fn failed(&mut self, was_connected: bool, status: &tonic::Status) -> bool {
        if was_connected {
            self.in_episode = false;
        }
        if self.in_episode {
            tracing::debug!(error = %status, "dispatcher session failed again; retrying");
            return false;
        }
        self.in_episode = true;
        tracing::warn!(
            error = %status,
            "dispatcher session failed; retrying with backoff (further failures are logged at debug until it works)"
        );
        true
    }
}

/// Where a session's messages go.
struct SessionOutputs<'a> {
    session_id: &'a watch::Sender<Option<String>>,
    assignments: &'a watch::Sender<Option<Vec<Task>>>,
    directives: &'a watch::Sender<Option<NodeDirective>>,
}

/// One session until it breaks; `period` follows the heartbeat period the
/// managers ask for (and is kept for the next session).
async fn one_session(
    client: &DispatcherClient<Channel>,
    config: &AgentConfig,
    out: &SessionOutputs<'_>,
    period: &mut Duration,
    shutdown: &CancellationToken,
) -> Result<(), tonic::Status> {
    let mut client = client
        .clone()
        .max_decoding_message_size(shoal_api::MAX_MESSAGE_BYTES);
    let open = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = client.session(session_request(config)) => r?,
    };
    let mut stream = open.into_inner();
    let mut current: Option<String> = None;
    let mut heartbeat = tokio::time::interval(*period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.reset();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            msg = stream.message() => {
                let Some(msg) = msg? else {
                    return Err(tonic::Status::unavailable("session stream ended"));
                };
                let p = match msg.heartbeat_period_ms {
                    0 => DEFAULT_HEARTBEAT,
                    ms => Duration::from_millis(ms),
                };
                if p != *period {
                    *period = p;
                    heartbeat = tokio::time::interval(p);
                    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    heartbeat.reset();
                }
                if current.as_deref() != Some(msg.session_id.as_str()) {
                    current = Some(msg.session_id.clone());
                    out.session_id.send_replace(current.clone());
                }
                let directive = NodeDirective {
                    role: msg.role(),
                    raft_member: msg.raft_member,
                    managers: msg.managers.clone(),
                };
                out.directives.send_if_modified(|d| {
                    let changed = d.as_ref() != Some(&directive);
                    *d = Some(directive);
                    changed
                });
                out.assignments.send_replace(Some(msg.tasks));
            }
            _ = heartbeat.tick() => {
                let Some(id) = current.clone() else { continue };
                let req = HeartbeatRequest { session_id: id, node_id: config.node_id.clone() };
                // A manager that stopped answering ends the session.
                let limit = (*period * 2).max(Duration::from_secs(2));
                let resp = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    r = tokio::time::timeout(limit, client.heartbeat(req)) => match r {
                        Ok(r) => r?,
                        Err(_) => return Err(tonic::Status::deadline_exceeded("heartbeat timed out")),
                    },
                };
                let p = resp.into_inner().period_ms;
                if p > 0 && Duration::from_millis(p) != *period {
                    *period = Duration::from_millis(p);
                    heartbeat = tokio::time::interval(*period);
                    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    heartbeat.reset();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds of the `n`th delay (from 0) under `cap`: half the nominal
    /// delay to the nominal delay.
    fn bounds(n: u32, cap: Duration) -> (Duration, Duration) {
        let nominal = (BACKOFF_START * 2u32.pow(n.min(10))).min(cap);
        (nominal / 2, nominal)
    }

    #[test]
    fn backoff_doubles_to_five_seconds_with_jitter() {
        for _ in 0..50 {
            let mut b = Backoff::new();
            for n in 0..8 {
                let (low, high) = bounds(n, BACKOFF_MAX);
                let d = b.next_delay();
                assert!(
                    low <= d && d <= high,
                    "delay {n}: {d:?} not in {low:?}..={high:?}"
                );
            }
            b.reset();
            let d = b.next_delay();
            assert!(d <= BACKOFF_START, "after reset: {d:?}");
        }
    }

    #[test]
    fn backoff_is_jittered() {
        let mut b = Backoff::new();
        let firsts: std::collections::HashSet<_> = (0..20)
            .map(|_| {
                b.reset();
                b.next_delay()
            })
            .collect();
        assert!(firsts.len() > 1, "20 first delays all equal: {firsts:?}");
    }

    #[test]
    fn backoff_never_exceeds_its_cap() {
        for _ in 0..50 {
            let mut b = Backoff::new();
            b.cap(Duration::from_millis(500));
            for n in 0..20 {
                let (low, high) = bounds(n, Duration::from_millis(500));
                let d = b.next_delay();
                assert!(
                    low <= d && d <= high,
                    "delay {n}: {d:?} not in {low:?}..={high:?}"
                );
            }
            // A cap below the first delay keeps the first delay.
            b.cap(Duration::from_millis(50));
            assert!(b.next_delay() <= BACKOFF_START);
            // Raising the cap resumes the progression where it was.
            b.cap(BACKOFF_MAX);
            let (low, high) = bounds(21, BACKOFF_MAX);
            let d = b.next_delay();
            assert!(low <= d && d <= high, "{d:?} not in {low:?}..={high:?}");
        }
    }

    #[test]
    fn a_failure_episode_warns_once() {
        let mut log = FailureLog::default();
        let err = tonic::Status::out_of_range("message too large");
        let warned: Vec<bool> = (0..4).map(|_| log.failed(false, &err)).collect();
        assert_eq!(warned, [true, false, false, false]);
        // A session that worked, then broke: a new episode.
        assert!(log.failed(true, &err));
        assert!(!log.failed(false, &err));
    }
}
