//! Typed access to the store: key layout, decoding, and [`ClusterView`], the
//! in-memory picture every reconciler reads.
//!
//! Key layout (values are protobuf-encoded `shoal.v1` objects):
//! - `cluster` → `Cluster`
//! - `services/<id>` → `Service`
//! - `tasks/<id>` → `Task`
//! - `nodes/<id>` → `Node`
//! - `index/service-names/<name>` → service id (uniqueness of names)
//! - `index/ingress-ports/<port>` → service id (uniqueness of published ports)
//! - `index/node-allocations` → the highest Raft id given; every join and
//!   promotion compares and bumps it (unique Raft ids and node addresses)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use shoal_api::codec;
use shoal_api::pb::{Cluster, Node, Service, Task};
use shoal_store::{Compare, EventKind, KeyValue, Op, Store, Txn, WatchEvent};

pub const CLUSTER_KEY: &str = "cluster";
pub const SERVICES: &str = "services/";
pub const TASKS: &str = "tasks/";
pub const NODES: &str = "nodes/";
pub const SERVICE_NAMES: &str = "index/service-names/";
pub const INGRESS_PORTS: &str = "index/ingress-ports/";
pub const NODE_ALLOCATIONS: &str = "index/node-allocations";

pub fn service_key(id: &str) -> String {
    format!("{SERVICES}{id}")
}
pub fn task_key(id: &str) -> String {
    format!("{TASKS}{id}")
}
pub fn node_key(id: &str) -> String {
    format!("{NODES}{id}")
}
pub fn service_name_key(name: &str) -> String {
    format!("{SERVICE_NAMES}{name}")
}
/// The index entry of a published port: `<port>` for TCP (the key stored
/// before UDP was routed, so existing stores stay valid), `<port>/udp` for
/// UDP, so one number may be taken once per protocol.
pub fn ingress_port_key(port: u32, protocol: &str) -> String {
    match protocol {
        "udp" => format!("{INGRESS_PORTS}{port}/udp"),
        _ => format!("{INGRESS_PORTS}{port}"),
    }
}

/// Objects that carry a [`shoal_api::pb::Meta`] whose version mirrors the
/// store's mod revision.
pub trait Versioned: Sized + Default {
    fn decode_kv(kv: &KeyValue) -> Option<Self>;
    fn version(&self) -> u64;
    fn meta_mut(&mut self) -> &mut Option<shoal_api::pb::Meta>;
    fn encode(&self) -> Vec<u8>;
}

macro_rules! versioned {
    ($t:ty) => {
        impl Versioned for $t {
            fn decode_kv(kv: &KeyValue) -> Option<Self> {
                match codec::decode::<$t>(&kv.value) {
                    Ok(mut obj) => {
                        let meta = obj.meta.get_or_insert_with(Default::default);
                        meta.version = kv.mod_revision;
                        Some(obj)
                    }
                    Err(err) => {
                        tracing::error!(key = %kv.key, %err, "undecodable object in store");
                        None
                    }
                }
            }
            fn version(&self) -> u64 {
                self.meta.as_ref().map(|m| m.version).unwrap_or(0)
            }
            fn meta_mut(&mut self) -> &mut Option<shoal_api::pb::Meta> {
                &mut self.meta
            }
            fn encode(&self) -> Vec<u8> {
                codec::encode(self)
            }
        }
    };
}
versioned!(Service);
versioned!(Task);
versioned!(Node);
versioned!(Cluster);

pub fn get<T: Versioned>(store: &Store, key: &str) -> Option<T> {
    store.get(key).and_then(|kv| T::decode_kv(&kv))
}

pub fn list<T: Versioned>(store: &Store, prefix: &str) -> Vec<T> {
    store.list(prefix).iter().filter_map(T::decode_kv).collect()
}

/// Everything the reconcilers look at, read in one pass.
///
/// Every object sits behind an [`Arc`]: cloning the view copies pointers,
/// not objects, and a writer that changes one object
/// ([`Arc::make_mut`]) copies that object only. The view cache and a
/// reconcile pass's working copy share every object neither changed.
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    pub cluster: Arc<Cluster>,
    pub services: BTreeMap<String, Arc<Service>>,
    /// Every task by id. Once [`ClusterView::tasks_of`] has been called, add
    /// and remove tasks with [`ClusterView::insert_task`] and
    /// [`ClusterView::remove_task`], which keep its index.
    pub tasks: BTreeMap<String, Arc<Task>>,
    pub nodes: BTreeMap<String, Arc<Node>>,
    /// service id → ids of its tasks, built by the first `tasks_of` (the
    /// orchestrators ask per service: a scan of every task each time would
    /// be O(services × tasks) per pass).
    pub(crate) by_service: OnceLock<Arc<BTreeMap<String, BTreeSet<String>>>>,
}

impl ClusterView {
    /// Decodes the whole store at one revision. The manager's components read
    /// the view cache instead, which decodes only what changed.
    pub fn load(store: &Store) -> Self {
        Self::from_kvs(&store.list_at("").1)
    }

    /// The view of these stored keys (keys outside the view are skipped).
    pub fn from_kvs(kvs: &[KeyValue]) -> Self {
        let mut view = Self::default();
        for kv in kvs {
            view.upsert(kv);
        }
        view
    }

    /// Applies one store change.
    pub fn apply(&mut self, event: &WatchEvent) {
        match event.kind {
            EventKind::Put => self.upsert(&event.kv),
            EventKind::Delete => {
                let key = event.kv.key.as_str();
                if key == CLUSTER_KEY {
                    self.cluster = Arc::default();
                } else if let Some(id) = key.strip_prefix(SERVICES) {
                    self.services.remove(id);
                } else if let Some(id) = key.strip_prefix(TASKS) {
                    self.remove_task(id);
                } else if let Some(id) = key.strip_prefix(NODES) {
                    self.nodes.remove(id);
                }
            }
        }
    }

    /// Puts the object stored at `kv` into the view (other keys are not part of it).
    pub fn upsert(&mut self, kv: &KeyValue) {
        let key = kv.key.as_str();
        if key == CLUSTER_KEY {
            if let Some(c) = Cluster::decode_kv(kv) {
                self.cluster = Arc::new(c);
            }
        } else if key.starts_with(SERVICES) {
            if let Some(s) = Service::decode_kv(kv) {
                self.services.insert(s.id.clone(), Arc::new(s));
            }
        } else if key.starts_with(TASKS) {
            if let Some(t) = Task::decode_kv(kv) {
                self.insert_task(t);
            }
        } else if key.starts_with(NODES) {
            if let Some(n) = Node::decode_kv(kv) {
                self.nodes.insert(n.id.clone(), Arc::new(n));
            }
        }
    }

    /// The tasks of one service, in id order.
    pub fn tasks_of<'a>(&'a self, service_id: &'a str) -> impl Iterator<Item = &'a Arc<Task>> + 'a {
        let index = self.by_service.get_or_init(|| {
            let mut index: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for t in self.tasks.values() {
                index
                    .entry(t.service_id.clone())
                    .or_default()
                    .insert(t.id.clone());
            }
            Arc::new(index)
        });
        index
            .get(service_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// Adds (or replaces) a task.
    pub fn insert_task(&mut self, task: impl Into<Arc<Task>>) {
        let task: Arc<Task> = task.into();
        if self
            .tasks
            .get(&task.id)
            .is_some_and(|old| old.service_id != task.service_id)
        {
            self.remove_task(&task.id.clone());
        }
        if let Some(index) = self.by_service.get_mut() {
            Arc::make_mut(index)
                .entry(task.service_id.clone())
                .or_default()
                .insert(task.id.clone());
        }
        self.tasks.insert(task.id.clone(), task);
    }

    /// Removes a task.
    pub fn remove_task(&mut self, id: &str) -> Option<Arc<Task>> {
        let task = self.tasks.remove(id)?;
        if let Some(index) = self.by_service.get_mut() {
            let index = Arc::make_mut(index);
            if let Some(ids) = index.get_mut(&task.service_id) {
                ids.remove(id);
                if ids.is_empty() {
                    index.remove(&task.service_id);
                }
            }
        }
        Some(task)
    }
}

/// Attaches a fresh Meta (timestamps) for a write; the version stays as read
/// so the caller can use it as the compare value.
/// Adds to `txn` a put of `obj` under `key`, guarded by the version `obj`
/// was read at (0: the key must not exist), with its meta stamped as updated.
pub fn guarded_put<T: Versioned>(txn: &mut Txn, key: String, obj: &mut T) {
    let version = obj.version();
    touch_meta(obj.meta_mut());
    txn.compares.push(Compare::Version {
        key: key.clone(),
        version,
    });
    txn.ops.push(Op::Put {
        key,
        value: obj.encode(),
    });
}

pub fn touch_meta(meta: &mut Option<shoal_api::pb::Meta>) {
    let now = shoal_api::now_ms();
    let m = meta.get_or_insert_with(Default::default);
    if m.created_at_ms == 0 {
        m.created_at_ms = now;
    }
    m.updated_at_ms = now;
}
