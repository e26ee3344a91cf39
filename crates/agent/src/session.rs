//! The dispatcher session: opens it, heartbeats while connected, passes each
//! assignment set on, and reconnects with backoff when the session breaks.

use std::sync::Arc;
use std::time::Duration;

use shoal_api::pb::dispatcher_client::DispatcherClient;
use shoal_api::pb::{HeartbeatRequest, NodeDescription, SessionRequest, Task};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{AgentConfig, NodeDirective};

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// Reconnect delay: 200ms doubling up to 5s (or a lower cap), reset after a
/// success.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

// === impl Backoff ===

impl Backoff {
    pub(crate) fn new() -> Self {
        Self {
            next: BACKOFF_START,
            max: BACKOFF_MAX,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    /// Never waits longer than `max` (at least the first delay).
    pub(crate) fn cap(&mut self, max: Duration) {
        self.max = max.clamp(BACKOFF_START, BACKOFF_MAX);
        self.next = self.next.min(self.max);
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
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

    #[test]
    fn backoff_doubles_to_five_seconds() {
        let mut b = Backoff::new();
        let delays: Vec<_> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(200));
    }

    #[test]
    fn backoff_never_exceeds_its_cap() {
        let mut b = Backoff::new();
        b.cap(Duration::from_millis(500));
        let delays: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [200, 400, 500, 500]);
        // A cap below the first delay keeps the first delay.
        b.cap(Duration::from_millis(50));
        assert_eq!(b.next_delay(), Duration::from_millis(200));
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
