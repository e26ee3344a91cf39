//! The thin async loop around the sans-IO cores: on store changes (and once
//! a second, for timers), take the current
//! [`ClusterView`](crate::state::ClusterView) from the
//! [`ViewCache`], run orchestrator → allocator → scheduler → reaper on a copy
//! (pointers to the cached objects; a pass copies only the objects it
//! changes), and write what changed as one transaction guarded by version
//! compares. A conflicting write (an agent's status update raced us) is simply retried
//! from a fresh view. Passes start at most every [`MIN_PASS_INTERVAL`]: under
//! a stream of status reports one pass covers many changes (as swarmkit's
//! scheduler debounces its commits).

use std::sync::Arc;
use std::time::Duration;

use shoal_api::codec;
use shoal_store::{Compare, Op, Store, StoreError, Txn};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cache::ViewCache;
use crate::orchestrator::{self, Changes};
use crate::state;
use crate::{allocator, reaper, scheduler, ManagerError};

/// The least time between the starts of two passes.
pub const MIN_PASS_INTERVAL: Duration = Duration::from_millis(50);

/// Runs until `shutdown`; only acts while this node leads the Raft group.
pub async fn run(
    store: Store,
    cache: ViewCache,
    mut changes: watch::Receiver<u64>,
    shutdown: CancellationToken,
) -> Result<(), ManagerError> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_pass = tokio::time::Instant::now() - MIN_PASS_INTERVAL;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = changes.changed() => if r.is_err() { return Ok(()) },
            _ = tick.tick() => {}
        }
        if !store.is_leader() {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(last_pass + MIN_PASS_INTERVAL) => {}
        }
        last_pass = tokio::time::Instant::now();
        for _ in 0..5 {
            match reconcile_once(&store, &cache).await {
                Ok(_) => break,
                Err(StoreError::ConditionFailed { .. }) => continue,
                Err(StoreError::NotLeader { .. }) => break,
                Err(err) => {
                    tracing::warn!(%err, "reconcile write failed");
                    break;
                }
            }
        }
    }
}

/// One pass. Returns whether anything was written.
pub async fn reconcile_once(store: &Store, cache: &ViewCache) -> Result<bool, StoreError> {
    let mut view = (*cache.current()).clone();
    if view.cluster.id.is_empty() {
        return Ok(false);
    }
    let now = shoal_api::now_ms();
    let mut changes = Changes::default();
    orchestrator::reconcile(&mut view, &mut changes, now);
    allocator::allocate_tasks(&mut view, &mut changes, now);
    scheduler::schedule(&mut view, &mut changes, now);
    reaper::reap(&mut view, &mut changes);
    if changes.is_empty() {
        return Ok(false);
    }
    let mut txn = Txn::default();
    for id in &changes.dirty {
        let Some(task) = view.tasks.get_mut(id).map(Arc::make_mut) else {
            continue;
        };
        let key = state::task_key(id);
        let version = task.meta.as_ref().map(|m| m.version).unwrap_or(0);
        state::touch_meta(&mut task.meta);
        txn.compares.push(Compare::Version {
            key: key.clone(),
            version,
        });
        txn.ops.push(Op::Put {
            key,
            value: codec::encode(&*task),
        });
    }
    for id in &changes.services {
        let Some(service) = view.services.get_mut(id).map(Arc::make_mut) else {
            continue;
        };
        let key = state::service_key(id);
        let version = service.meta.as_ref().map(|m| m.version).unwrap_or(0);
        state::touch_meta(&mut service.meta);
        txn.compares.push(Compare::Version {
            key: key.clone(),
            version,
        });
        txn.ops.push(Op::Put {
            key,
            value: codec::encode(&*service),
        });
    }
    for (id, version) in &changes.deleted {
        let key = state::task_key(id);
        txn.compares.push(Compare::Version {
            key: key.clone(),
            version: *version,
        });
        txn.ops.push(Op::Delete { key });
    }
    drop(view);
    store.write(txn).await?;
    Ok(true)
}
