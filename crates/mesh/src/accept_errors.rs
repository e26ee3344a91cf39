//! What both data paths do when an accept fails ([`AcceptErrors`],
//! [`accept_backoff`]): an accept that fails for want of a descriptor leaves
//! the connection queued, so the next one would fail at once too. The
//! listener waits (5 ms, doubling up to 1 s) instead of spinning, one warning
//! is logged per episode, every failure is counted, and accepting resumes by
//! itself once descriptors free.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use crate::clock::Clock;

/// The wait after a first failed accept; it doubles with each further
/// consecutive failure of the same listener, up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest wait between two failing accepts: how long the mesh may take
/// to notice that descriptors are free again.
pub(crate) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How many distinct waits the backoff has (5 ms to 640 ms, then 1 s).
pub(crate) const ACCEPT_BACKOFF_STEPS: usize = 9;
/// A successful accept ends an episode of failing accepts once none has
/// failed for this long.
const EPISODE_QUIET: Duration = Duration::from_secs(1);
/// A failure this long after the previous one starts a new episode (and
/// logs again) even if no accept succeeded in between.
const EPISODE_GAP: Duration = Duration::from_secs(60);

/// Why an accept (or a backend socket) could not get a descriptor: the
/// `reason` label of `shoal_mesh_accept_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorReason {
    /// EMFILE (this process's open-file limit) or ENFILE (the system's).
    Descriptors,
    /// ENOBUFS or ENOMEM.
    Memory,
    Other,
}

/// Counts failed accepts by reason and logs one warning per episode of them
/// (not one per accept): a listener that fails keeps retrying, waiting
/// [`accept_backoff`] in between, and each retry would fail the same way
/// until descriptors or memory free.
pub(crate) struct AcceptErrors {
    /// `shoal_mesh_accept_errors_total`, by [`ErrorReason`] in its order.
    counters: [prometheus::IntCounter; 3],
    /// An episode of failing accepts is on: logged, not yet over.
    failing: AtomicBool,
    /// When the latest accept failed, on `clock`.
    last_failure: AtomicU64,
    clock: Clock,
}

// === impl ErrorReason ===

impl ErrorReason {
    pub(crate) fn of(err: &io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => Self::Descriptors,
            Some(libc::ENOBUFS | libc::ENOMEM) => Self::Memory,
            _ => Self::Other,
        }
    }

    /// This process or host ran out of something: every other endpoint would
    /// fail the same way, and none of them is at fault.
    pub(crate) fn is_local_exhaustion(err: &io::Error) -> bool {
        Self::of(err) != Self::Other
    }

    fn label(self) -> &'static str {
        match self {
            Self::Descriptors => "descriptors",
            Self::Memory => "memory",
            Self::Other => "other",
        }
    }
}

// === impl AcceptErrors ===

impl AcceptErrors {
    pub(crate) fn new(family: &prometheus::IntCounterVec, clock: Clock) -> Self {
        let counter = |reason: ErrorReason| family.with_label_values(&[reason.label()]);
        Self {
            counters: [
                counter(ErrorReason::Descriptors),
                counter(ErrorReason::Memory),
                counter(ErrorReason::Other),
            ],
            failing: AtomicBool::new(false),
            last_failure: AtomicU64::new(0),
            clock,
        }
    }

    /// Books a failed accept on `port`: counts it, and logs it if it starts
    /// an episode.
    pub(crate) fn failed(&self, port: u16, err: &io::Error) {
        let reason = ErrorReason::of(err);
        self.counters[reason as usize].inc();
        let now = self.clock.now();
        let previous = self.last_failure.swap(now, Ordering::Relaxed);
        let ongoing = self.failing.swap(true, Ordering::Relaxed);
        if ongoing && now.saturating_sub(previous) < nanos(EPISODE_GAP) {
            return;
        }
        match reason {
            ErrorReason::Descriptors if err.raw_os_error() == Some(libc::EMFILE) => {
                let limit = open_file_limit();
                warn!(
                    port,
                    error = %err,
                    "the mesh cannot accept: this process has reached its open-file limit \
                     (RLIMIT_NOFILE {limit}); it retries, backing off up to {ACCEPT_BACKOFF_MAX:?}, \
                     until descriptors free (counted in \
                     shoal_mesh_accept_errors_total{{reason=\"descriptors\"}})"
                );
            }
            ErrorReason::Descriptors => warn!(
                port,
                error = %err,
                "the mesh cannot accept: the system has run out of file descriptors \
                 (fs.file-max); it retries, backing off up to {ACCEPT_BACKOFF_MAX:?}, until \
                 descriptors free (counted in shoal_mesh_accept_errors_total{{reason=\"descriptors\"}})"
            ),
            ErrorReason::Memory => warn!(
                port,
                error = %err,
                "the mesh cannot accept: out of socket memory; it retries, backing off up to \
                 {ACCEPT_BACKOFF_MAX:?} (counted in shoal_mesh_accept_errors_total{{reason=\"memory\"}})"
            ),
            ErrorReason::Other => warn!(
                port,
                error = %err,
                "accept failed; retrying, backing off up to {ACCEPT_BACKOFF_MAX:?} \
                 (counted in shoal_mesh_accept_errors_total{{reason=\"other\"}})"
            ),
        }
    }

    /// Books a successful accept: it ends an episode of failures once none
    /// has failed for a second. Costs one relaxed load outside an episode.
    pub(crate) fn succeeded(&self) {
        if !self.failing.load(Ordering::Relaxed) {
            return;
        }
        let quiet = self
            .clock
            .now()
            .saturating_sub(self.last_failure.load(Ordering::Relaxed));
        if quiet >= nanos(EPISODE_QUIET) && self.failing.swap(false, Ordering::Relaxed) {
            info!("the mesh accepts again");
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How long a listener waits before it accepts again after `failures`
/// consecutive failed accepts (at least 1): 5 ms, doubling, at most 1 s.
pub(crate) fn accept_backoff(failures: u32) -> Duration {
    let doublings = failures
        .saturating_sub(1)
        .min(ACCEPT_BACKOFF_STEPS as u32 - 1);
    ACCEPT_BACKOFF_MIN
        .saturating_mul(1 << doublings)
        .min(ACCEPT_BACKOFF_MAX)
}

/// This process's soft open-file limit, for the log line.
#[allow(unsafe_code)] // getrlimit(2): std and socket2 have no wrapper
fn open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc == 0 {
        limit.rlim_cur
    } else {
        0
    }
}
