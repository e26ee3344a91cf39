//! Watches: a bounded in-memory event history for resuming, plus a broadcast channel
//! for live events.
//!
//! The [`WatchHub`] lives inside the state lock; applies publish while holding it for
//! writing and watchers subscribe while holding it (at least) for reading, so a watch
//! sees every event after its starting revision exactly once.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::error::StoreError;
use crate::types::WatchEvent;

/// Broadcast capacity bound: a watcher this many events behind the live stream is dropped
/// with [`StoreError::Lagged`].
const MAX_LIVE_BUFFER: usize = 16 * 1024;
const MIN_LIVE_BUFFER: usize = 1024;

/// What the live channel carries.
#[derive(Clone, Debug)]
pub(crate) enum Live {
    Event(Arc<WatchEvent>),
    /// State was replaced wholesale (snapshot install): watchers must resync.
    Reset,
}

/// Event history and live fan-out.
pub(crate) struct WatchHub {
    /// Most recent events, oldest first, at most `capacity` long.
    history: VecDeque<Arc<WatchEvent>>,
    capacity: usize,
    /// Every event with revision > `floor` is in `history`; older ones may be gone.
    floor: u64,
    tx: broadcast::Sender<Live>,
}

// === impl WatchHub ===

impl WatchHub {
    /// A hub with no history; events after `floor` will be recorded.
    pub(crate) fn new(capacity: usize, floor: u64) -> Self {
        let (tx, _) = broadcast::channel(capacity.clamp(MIN_LIVE_BUFFER, MAX_LIVE_BUFFER));
        Self {
            history: VecDeque::new(),
            capacity,
            floor,
            tx,
        }
    }

    /// Records and broadcasts one event. Must be called in revision order.
    pub(crate) fn publish(&mut self, event: WatchEvent) {
        let event = Arc::new(event);
        if self.capacity == 0 {
            self.floor = event.revision;
        } else {
            if self.history.len() == self.capacity {
                if let Some(old) = self.history.pop_front() {
                    // Events of `old.revision` may remain, but only those > floor count.
                    self.floor = old.revision;
                }
            }
            self.history.push_back(event.clone());
        }
        // No receivers is fine.
        let _ = self.tx.send(Live::Event(event));
    }

    /// Forgets history after the state was replaced; live watchers get `Lagged`.
    pub(crate) fn reset(&mut self, floor: u64) {
        self.history.clear();
        self.floor = floor;
        let _ = self.tx.send(Live::Reset);
    }

    /// Ends every watch: their `next()` returns `None` once drained.
    pub(crate) fn close(&mut self) {
        let (tx, _) = broadcast::channel(1);
        self.tx = tx;
    }

    /// Watch of events with revision > `from` under `prefix`.
    pub(crate) fn watch(&self, prefix: &str, from: u64) -> Result<Watch, StoreError> {
        if from < self.floor {
            return Err(StoreError::Compacted {
                requested: from,
                oldest: self.floor,
            });
        }
        let backlog = self
            .history
            .iter()
            .filter(|e| e.revision > from && e.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        Ok(Watch {
            prefix: prefix.to_owned(),
            backlog,
            rx: Some(self.tx.subscribe()),
        })
    }

    /// Every recorded event with revision > `from`, oldest first.
    pub(crate) fn since(&self, from: u64) -> Result<Vec<Arc<WatchEvent>>, StoreError> {
        if from < self.floor {
            return Err(StoreError::Compacted {
                requested: from,
                oldest: self.floor,
            });
        }
        let start = self.history.partition_point(|e| e.revision <= from);
        Ok(self.history.range(start..).cloned().collect())
    }

    /// Watch of live events only (everything published after this call).
    pub(crate) fn watch_live(&self, prefix: &str) -> Watch {
        Watch {
            prefix: prefix.to_owned(),
            backlog: VecDeque::new(),
            rx: Some(self.tx.subscribe()),
        }
    }
}

/// A stream of [`WatchEvent`]s under one key prefix, in revision order, without gaps or
/// duplicates. Ends with `Some(Err(StoreError::Lagged))` then `None` if the consumer
/// falls too far behind (or the store state was replaced by a snapshot), and with `None`
/// when the store shuts down.
///
/// The live buffer (up to 16384 events) is shared by all prefixes, so a watcher that
/// stops polling lags after that many events *in the whole store*, even if few match
/// its prefix.
pub struct Watch {
    prefix: String,
    /// Replayed history, already filtered.
    backlog: VecDeque<Arc<WatchEvent>>,
    /// Live events; `None` once the watch has ended.
    rx: Option<broadcast::Receiver<Live>>,
}

// === impl Watch ===

impl Watch {
    /// The next event, `Some(Err(Lagged))` once if dropped for lagging, then `None`.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        if let Some(event) = self.backlog.pop_front() {
            return Some(Ok((*event).clone()));
        }
        let rx = self.rx.as_mut()?;
        loop {
            match rx.recv().await {
                Ok(Live::Event(event)) => {
                    if event.kv.key.starts_with(&self.prefix) {
                        return Some(Ok((*event).clone()));
                    }
                }
                Ok(Live::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.rx = None;
                    return Some(Err(StoreError::Lagged));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.rx = None;
                    return None;
                }
            }
        }
    }

    /// The prefix this watch filters on.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// This watch as a `futures::Stream`.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<WatchEvent, StoreError>> + Send {
        futures::stream::unfold(
            self,
            |mut w| async move { w.next().await.map(|item| (item, w)) },
        )
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("prefix", &self.prefix)
            .field("backlog", &self.backlog.len())
            .field("ended", &self.rx.is_none())
            .finish()
    }
}
