//! The epoll data path's threads: one OS thread per core, each driving its own
//! single-threaded tokio runtime (its own epoll and timers).
//!
//! Every published port has one listening socket per worker (a SO_REUSEPORT
//! group, so the kernel spreads new connections over the workers), and a
//! connection lives its whole life on the worker that accepted it: no work
//! stealing moves it between threads, so its two sockets stay in one core's
//! cache, and each worker handles every event of one `epoll_wait` before it
//! sleeps again. Measured against tokio's multi-thread scheduler in
//! `bench/README.md` (keepalive: median +18% requests per second over 28
//! paired rounds, less CPU per request). The control side (the [`crate::Mesh`] handle) runs wherever its
//! caller does and only spawns accept loops onto the workers.

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The mesh's worker threads. Dropping it lets each thread exit once every
/// connection it carries has ended.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    exit: CancellationToken,
    connections: TaskTracker,
}

impl Workers {
    /// Starts `count` worker threads. A worker thread ends once [`Workers`]
    /// is dropped and every task in `connections` has ended.
    pub(crate) fn start(count: NonZeroUsize, connections: &TaskTracker) -> io::Result<Self> {
        let mut workers = Self {
            handles: Vec::with_capacity(count.get()),
            exit: CancellationToken::new(),
            connections: connections.clone(),
        };
        for i in 0..count.get() {
            // On error, dropping `workers` stops the threads already started.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (exit, connections) = (workers.exit.clone(), connections.clone());
            std::thread::Builder::new()
                .name(format!("shoal-mesh-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        exit.cancelled().await;
                        connections.wait().await;
                    });
                })?;
            workers.handles.push(handle);
        }
        Ok(workers)
    }

    /// How many workers there are.
    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// Tasks alive on each worker: its accept loops and connections.
    #[cfg(test)]
    pub(crate) fn tasks_per_worker(&self) -> Vec<usize> {
        self.handles
            .iter()
            .map(|h| h.metrics().num_alive_tasks())
            .collect()
    }

    /// Runs `future` on worker `index`.
    pub(crate) fn spawn<F>(&self, index: usize, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[index].spawn(future)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.connections.close();
        self.exit.cancel();
    }
}

/// The default worker count: one per core this process may run on.
pub(crate) fn default_count() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}
