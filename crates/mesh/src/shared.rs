//! [`Shared`], the runtime state every accept loop and connection of both
//! data paths reads.

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept_errors::AcceptErrors;
use crate::clock::Clock;
use crate::config::MeshConfig;
use crate::forward::Held;
use crate::table::RoutingTable;

/// What accept loops and connections share; deliberately not the listener set,
/// so that dropping the last [`crate::Mesh`] handle can stop them.
pub(crate) struct Shared {
    /// The settings the mesh was created with.
    pub(crate) config: MeshConfig,
    /// What the mesh routes; connections load it without a lock.
    pub(crate) table: ArcSwap<RoutingTable>,
    /// Time base of ejection deadlines and accept-error episodes.
    pub(crate) clock: Clock,
    /// Tracks every connection task, for the shutdown drain.
    pub(crate) connections: TaskTracker,
    /// Cancelled when the shutdown grace period is over: open connections close.
    pub(crate) abort: CancellationToken,
    /// Copy buffers and pipes held by connections (counted in tests only).
    pub(crate) held: Held,
    /// Counts and logs failed accepts of every listener of both data paths.
    pub(crate) accept_errors: AcceptErrors,
}
