//! [`FlowTable`], the sans-IO core of UDP forwarding: which task each client
//! flow is pinned to, when a pin is stale, when a flow is forgotten.
//!
//! A flow is a client address (IP and port) on one published port. Its first
//! datagram pins it to a task; every later datagram goes to the same task
//! while that task stays in the routing table for the port (a draining task
//! keeps its flows: it only takes no new ones) and has not refused a datagram
//! (ICMP port unreachable: the task is gone). Otherwise the pin is dropped
//! and the datagram pins the flow anew, so a flow never sends into a black
//! hole for longer than one datagram. A flow idle, both ways, for the idle
//! timeout is forgotten. The table does no IO: the backend handle `B` is the
//! caller's (a connected socket and its reply loop), and it is dropped when
//! the flow is forgotten or re-pinned.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The flows of one published UDP port served by one socket, by client.
pub(crate) struct FlowTable<B> {
    flows: HashMap<SocketAddr, Flow<B>>,
    /// The most flows kept at once; a new flow beyond it is refused.
    capacity: usize,
    /// Nanoseconds of silence after which a flow is forgotten.
    idle_timeout: u64,
}

/// A client flow pinned to one task.
pub(crate) struct Flow<B> {
    /// The task the flow is pinned to.
    pub(crate) task_id: Arc<str>,
    /// Where the task receives the flow's datagrams.
    pub(crate) backend_addr: SocketAddr,
    /// Activity shared with the reply side.
    pub(crate) state: Arc<FlowState>,
    /// The caller's handle: dropped when the flow is forgotten or re-pinned.
    pub(crate) backend: B,
}

/// What the two directions of a flow record for the table.
#[derive(Debug, Default)]
pub(crate) struct FlowState {
    /// When a datagram last went either way, on the mesh's clock.
    last_active: AtomicU64,
    /// The task refused a datagram: the pin is stale.
    refused: AtomicBool,
}

/// The table is full: a new flow was not pinned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TableFull;

// === impl FlowState ===

impl FlowState {
    pub(crate) fn new(now: u64) -> Self {
        Self {
            last_active: AtomicU64::new(now),
            refused: AtomicBool::new(false),
        }
    }

    /// Records a datagram at `now`, either way.
    pub(crate) fn touch(&self, now: u64) {
        self.last_active.store(now, Ordering::Relaxed);
    }

    /// Records that the task refused a datagram.
    pub(crate) fn refuse(&self) {
        self.refused.store(true, Ordering::Relaxed);
    }

    fn is_refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    fn idle_since(&self) -> u64 {
        self.last_active.load(Ordering::Relaxed)
    }
}

// === impl FlowTable ===

impl<B> FlowTable<B> {
    /// A table of at most `capacity` flows forgotten after `idle_timeout`
    /// nanoseconds of silence.
    pub(crate) fn new(capacity: usize, idle_timeout: u64) -> Self {
        Self {
            flows: HashMap::new(),
            capacity,
            idle_timeout,
        }
    }

    /// The flow of `client`, if it is pinned to a task that is still
    /// routed; `routed(task, addr)` says whether the task still receives
    /// the port at `addr`. A stale pin (task withdrawn, or it refused a
    /// datagram) is dropped, and `None` returned: the caller pins anew.
    /// A flow found is touched at `now`.
    pub(crate) fn lookup(
        &mut self,
        client: SocketAddr,
        now: u64,
        routed: impl FnOnce(&Arc<str>, SocketAddr) -> bool,
    ) -> Option<&Flow<B>> {
        let flow = self.flows.get(&client)?;
        if flow.state.is_refused() || !routed(&flow.task_id, flow.backend_addr) {
            self.flows.remove(&client);
            return None;
        }
        flow.state.touch(now);
        self.flows.get(&client)
    }

    /// The flow of `client`, as it is (see [`Self::lookup`]).
    pub(crate) fn get(&self, client: SocketAddr) -> Option<&Flow<B>> {
        self.flows.get(&client)
    }

    /// Pins `client` to a new flow. When the table is full, idle flows are
    /// forgotten first; if none is, the flow is refused.
    pub(crate) fn insert(
        &mut self,
        client: SocketAddr,
        flow: Flow<B>,
        now: u64,
    ) -> Result<&Flow<B>, TableFull> {
        if self.flows.len() >= self.capacity && !self.flows.contains_key(&client) {
            self.expire(now);
            if self.flows.len() >= self.capacity {
                return Err(TableFull);
            }
        }
        self.flows.insert(client, flow);
        Ok(&self.flows[&client])
    }

    /// Forgets the flows idle for the timeout at `now`; returns how many.
    pub(crate) fn expire(&mut self, now: u64) -> usize {
        let before = self.flows.len();
        let timeout = self.idle_timeout;
        self.flows
            .retain(|_, f| now.saturating_sub(f.state.idle_since()) < timeout);
        before - self.flows.len()
    }

    /// How many flows are pinned.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }
}

#[cfg(test)]
mod tests;
