//! Prometheus families of the mesh and the per-task / per-port handles resolved from them.
//!
//! Handles are resolved once, when a table entry is built, and shared (`Arc`) by every
//! entry and connection that refers to the same label set. A series is removed from its
//! family when the last handle to it is dropped: that is, once the task (or port) has
//! left the routing table *and* its last in-flight connection has finished, so the bytes
//! of a draining task stay visible until it is done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Label names of the per-task families.
const TASK_LABELS: [&str; 4] = ["service", "task", "slot", "node"];
/// Label names of the per-task UDP families: the task's, and `protocol`
/// (always `udp`), so a query can join them with the TCP ones.
const UDP_TASK_LABELS: [&str; 5] = ["service", "task", "slot", "node", "protocol"];
/// Label names of the per-port families.
const PORT_LABELS: [&str; 2] = ["service", "port"];

/// Connect latencies on a LAN or loopback are well under a millisecond; the
/// upper buckets catch SYN retransmits up to the connect timeout.
const CONNECT_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
];

/// The metric families registered by one [`crate::Mesh`].
pub(crate) struct MeshMetrics {
    connections: IntCounterVec,
    active: IntGaugeVec,
    bytes_from_client: IntCounterVec,
    bytes_to_client: IntCounterVec,
    connect_errors: IntCounterVec,
    connect_duration: HistogramVec,
    port_accepted: IntCounterVec,
    port_refused: IntCounterVec,
    udp_datagrams_from_client: IntCounterVec,
    udp_datagrams_to_client: IntCounterVec,
    udp_bytes_from_client: IntCounterVec,
    udp_bytes_to_client: IntCounterVec,
    udp_flows: IntCounterVec,
    udp_active_flows: IntGaugeVec,
    /// Failed accepts on any published port, by reason (see
    /// [`crate::accept_errors::AcceptErrors`]).
    pub(crate) accept_errors: IntCounterVec,
    /// Label sets with live handles, so that an entry rebuilt while an older
    /// handle is still held (by a connection) shares that handle instead of
    /// racing its removal.
    live: Mutex<LiveSeries>,
}

#[derive(Default)]
struct LiveSeries {
    tasks: HashMap<[String; 4], Weak<TaskMetrics>>,
    udp_tasks: HashMap<[String; 4], Weak<UdpTaskMetrics>>,
    ports: HashMap<[String; 2], Weak<PortMetrics>>,
}

/// Handles of one task's series (labels service, task, slot, node).
pub(crate) struct TaskMetrics {
    pub(crate) connections: IntCounter,
    pub(crate) active: IntGauge,
    pub(crate) bytes_from_client: IntCounter,
    pub(crate) bytes_to_client: IntCounter,
    pub(crate) connect_errors: IntCounter,
    pub(crate) connect_duration: Histogram,
    labels: [String; 4],
    families: Arc<MeshMetrics>,
}

/// Handles of one task's UDP series (labels service, task, slot, node and
/// protocol="udp"); resolved only for services that publish a UDP port.
pub(crate) struct UdpTaskMetrics {
    pub(crate) datagrams_from_client: IntCounter,
    pub(crate) datagrams_to_client: IntCounter,
    pub(crate) bytes_from_client: IntCounter,
    pub(crate) bytes_to_client: IntCounter,
    /// Flows pinned to the task.
    pub(crate) flows: IntCounter,
    /// Flows pinned to the task and not yet forgotten.
    pub(crate) active_flows: IntGauge,
    labels: [String; 5],
    families: Arc<MeshMetrics>,
}

/// Handles of one published port's series (labels service, port).
pub(crate) struct PortMetrics {
    pub(crate) accepted: IntCounter,
    pub(crate) refused: IntCounter,
    labels: [String; 2],
    families: Arc<MeshMetrics>,
}

// === impl MeshMetrics ===

impl MeshMetrics {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Arc<Self>> {
        fn counter(
            registry: &Registry,
            name: &str,
            help: &str,
            labels: &[&str],
        ) -> prometheus::Result<IntCounterVec> {
            let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(vec.clone()))?;
            Ok(vec)
        }
        let active = IntGaugeVec::new(
            Opts::new(
                "shoal_mesh_task_active_connections",
                "Client connections currently forwarded to the task",
            ),
            &TASK_LABELS,
        )?;
        registry.register(Box::new(active.clone()))?;
        let connect_duration = HistogramVec::new(
            HistogramOpts::new(
                "shoal_mesh_task_connect_duration_seconds",
                "Time to establish a successful backend connection to the task",
            )
            .buckets(CONNECT_BUCKETS.to_vec()),
            &TASK_LABELS,
        )?;
        registry.register(Box::new(connect_duration.clone()))?;
        let udp_active_flows = IntGaugeVec::new(
            Opts::new(
                "shoal_mesh_task_udp_active_flows",
                "UDP client flows currently pinned to the task",
            ),
            &UDP_TASK_LABELS,
        )?;
        registry.register(Box::new(udp_active_flows.clone()))?;
        Ok(Arc::new(Self {
            connections: counter(
                registry,
                "shoal_mesh_task_connections_total",
                "Backend connections successfully established to the task",
                &TASK_LABELS,
            )?,
            active,
            bytes_from_client: counter(
                registry,
                "shoal_mesh_task_bytes_from_client_total",
                "Bytes forwarded from clients to the task",
                &TASK_LABELS,
            )?,
            bytes_to_client: counter(
                registry,
                "shoal_mesh_task_bytes_to_client_total",
                "Bytes forwarded from the task to clients",
                &TASK_LABELS,
            )?,
            connect_errors: counter(
                registry,
                "shoal_mesh_task_connect_errors_total",
                "Backend connection attempts to the task that failed or timed out",
                &TASK_LABELS,
            )?,
            connect_duration,
            port_accepted: counter(
                registry,
                "shoal_mesh_port_accepted_total",
                "Client connections accepted on the published port",
                &PORT_LABELS,
            )?,
            port_refused: counter(
                registry,
                "shoal_mesh_port_refused_total",
                "Client connections closed because no endpoint of the service could be reached",
                &PORT_LABELS,
            )?,
            udp_datagrams_from_client: counter(
                registry,
                "shoal_mesh_task_udp_datagrams_from_client_total",
                "UDP datagrams forwarded from clients to the task",
                &UDP_TASK_LABELS,
            )?,
            udp_datagrams_to_client: counter(
                registry,
                "shoal_mesh_task_udp_datagrams_to_client_total",
                "UDP datagrams forwarded from the task to clients",
                &UDP_TASK_LABELS,
            )?,
            udp_bytes_from_client: counter(
                registry,
                "shoal_mesh_task_udp_bytes_from_client_total",
                "UDP payload bytes forwarded from clients to the task",
                &UDP_TASK_LABELS,
            )?,
            udp_bytes_to_client: counter(
                registry,
                "shoal_mesh_task_udp_bytes_to_client_total",
                "UDP payload bytes forwarded from the task to clients",
                &UDP_TASK_LABELS,
            )?,
            udp_flows: counter(
                registry,
                "shoal_mesh_task_udp_flows_total",
                "UDP client flows pinned to the task",
                &UDP_TASK_LABELS,
            )?,
            udp_active_flows,
            accept_errors: counter(
                registry,
                "shoal_mesh_accept_errors_total",
                "Accepts on published ports that failed, by reason: descriptors (the open-file \
                 limit was reached), memory (socket buffers or kernel memory ran out) or other; \
                 the mesh waits a little after each before it accepts again",
                &["reason"],
            )?,
            live: Mutex::new(LiveSeries::default()),
        }))
    }

    /// The handles of one task, shared with any entry still holding them.
    pub(crate) fn task(
        self: &Arc<Self>,
        service: &str,
        task: &str,
        slot: u64,
        node: &str,
    ) -> Arc<TaskMetrics> {
        let labels = [
            service.to_owned(),
            task.to_owned(),
            slot.to_string(),
            node.to_owned(),
        ];
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = live.tasks.get(&labels).and_then(Weak::upgrade) {
            return m;
        }
        let m = Arc::new(TaskMetrics {
            connections: self.connections.with_label_values(&labels),
            active: self.active.with_label_values(&labels),
            bytes_from_client: self.bytes_from_client.with_label_values(&labels),
            bytes_to_client: self.bytes_to_client.with_label_values(&labels),
            connect_errors: self.connect_errors.with_label_values(&labels),
            connect_duration: self.connect_duration.with_label_values(&labels),
            labels: labels.clone(),
            families: self.clone(),
        });
        live.tasks.insert(labels, Arc::downgrade(&m));
        m
    }

    /// The UDP handles of one task, shared with any entry or flow still
    /// holding them.
    pub(crate) fn udp_task(
        self: &Arc<Self>,
        service: &str,
        task: &str,
        slot: u64,
        node: &str,
    ) -> Arc<UdpTaskMetrics> {
        let key = [
            service.to_owned(),
            task.to_owned(),
            slot.to_string(),
            node.to_owned(),
        ];
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = live.udp_tasks.get(&key).and_then(Weak::upgrade) {
            return m;
        }
        let [service, task, slot, node] = key.clone();
        let labels = [service, task, slot, node, "udp".to_owned()];
        let m = Arc::new(UdpTaskMetrics {
            datagrams_from_client: self.udp_datagrams_from_client.with_label_values(&labels),
            datagrams_to_client: self.udp_datagrams_to_client.with_label_values(&labels),
            bytes_from_client: self.udp_bytes_from_client.with_label_values(&labels),
            bytes_to_client: self.udp_bytes_to_client.with_label_values(&labels),
            flows: self.udp_flows.with_label_values(&labels),
            active_flows: self.udp_active_flows.with_label_values(&labels),
            labels,
            families: self.clone(),
        });
        live.udp_tasks.insert(key, Arc::downgrade(&m));
        m
    }

    /// The handles of one published port, shared with any entry still holding them.
    pub(crate) fn port(self: &Arc<Self>, service: &str, port: u16) -> Arc<PortMetrics> {
        let labels = [service.to_owned(), port.to_string()];
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = live.ports.get(&labels).and_then(Weak::upgrade) {
            return m;
        }
        let m = Arc::new(PortMetrics {
            accepted: self.port_accepted.with_label_values(&labels),
            refused: self.port_refused.with_label_values(&labels),
            labels: labels.clone(),
            families: self.clone(),
        });
        live.ports.insert(labels, Arc::downgrade(&m));
        m
    }
}

// === impl TaskMetrics ===

impl Drop for TaskMetrics {
    fn drop(&mut self) {
        let f = &self.families;
        let mut live = f.live.lock().unwrap_or_else(PoisonError::into_inner);
        // A newer handle for the same labels may have been created between our
        // strong count reaching zero and this lock: then the series is still in use.
        if live
            .tasks
            .get(&self.labels)
            .is_some_and(|w| w.strong_count() > 0)
        {
            return;
        }
        live.tasks.remove(&self.labels);
        let l = &self.labels;
        let _ = f.connections.remove_label_values(l);
        let _ = f.active.remove_label_values(l);
        let _ = f.bytes_from_client.remove_label_values(l);
        let _ = f.bytes_to_client.remove_label_values(l);
        let _ = f.connect_errors.remove_label_values(l);
        let _ = f.connect_duration.remove_label_values(l);
    }
}

// === impl UdpTaskMetrics ===

impl Drop for UdpTaskMetrics {
    fn drop(&mut self) {
        let f = &self.families;
        let mut live = f.live.lock().unwrap_or_else(PoisonError::into_inner);
        let [service, task, slot, node, _] = self.labels.clone();
        let key = [service, task, slot, node];
        if live
            .udp_tasks
            .get(&key)
            .is_some_and(|w| w.strong_count() > 0)
        {
            return;
        }
        live.udp_tasks.remove(&key);
        let l = &self.labels;
        let _ = f.udp_datagrams_from_client.remove_label_values(l);
        let _ = f.udp_datagrams_to_client.remove_label_values(l);
        let _ = f.udp_bytes_from_client.remove_label_values(l);
        let _ = f.udp_bytes_to_client.remove_label_values(l);
        let _ = f.udp_flows.remove_label_values(l);
        let _ = f.udp_active_flows.remove_label_values(l);
    }
}

// === impl PortMetrics ===

impl Drop for PortMetrics {
    fn drop(&mut self) {
        let f = &self.families;
        let mut live = f.live.lock().unwrap_or_else(PoisonError::into_inner);
        if live
            .ports
            .get(&self.labels)
            .is_some_and(|w| w.strong_count() > 0)
        {
            return;
        }
        live.ports.remove(&self.labels);
        let _ = f.port_accepted.remove_label_values(&self.labels);
        let _ = f.port_refused.remove_label_values(&self.labels);
    }
}
