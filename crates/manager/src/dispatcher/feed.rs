//! The discovery feed: for each service its published ports and the task
//! endpoints the mesh may route to, derived from the store and versioned by
//! store revision. Subscribers get a snapshot, then deltas; one that resumes
//! from a revision still covered by the retained deltas gets only what it
//! missed, otherwise a fresh snapshot.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::Stream;
use shoal_api::pb::{
    feed_message, FeedMessage, NodeState, OverlayNode, OverlayPeers, RouteEndpoint, RoutePort,
    RoutingDelta, RoutingSnapshot, ServiceRoute,
};
use shoal_api::state::is_terminal;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::cache::ViewCache;
use crate::orchestrator::task_state;
use crate::state::ClusterView;
use crate::ManagerError;

/// How many deltas are kept for resuming subscribers.
const RETAINED_DELTAS: usize = 4096;

/// The feed's current state and its recent history.
#[derive(Default)]
struct FeedState {
    revision: u64,
    routes: BTreeMap<String, ServiceRoute>,
    overlay: OverlayPeers,
    /// (revision, delta) in increasing revision order.
    deltas: VecDeque<(u64, RoutingDelta)>,
    /// Deltas at or below this revision are gone: older subscribers need a snapshot.
    horizon: u64,
    /// The revision of the last delta sent.
    published: u64,
    /// Subscribers must reach at least this revision even if no route
    /// changes (see [`Feed::publish_at_least`]).
    wanted: u64,
}

/// Builds and serves the feed. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    cache: ViewCache,
    changes: watch::Receiver<u64>,
    state: Arc<Mutex<FeedState>>,
    live: broadcast::Sender<Arc<FeedMessage>>,
    shutdown: CancellationToken,
}

/// Routes for every service that publishes ports, in ingress or host mode;
/// every node gets every task endpoint, and the mesh of a node keeps those on
/// itself for a host-mode port.
pub fn build_routes(view: &ClusterView) -> BTreeMap<String, ServiceRoute> {
    let mut routes = BTreeMap::new();
    let no_labels = Default::default();
    for service in view.services.values() {
        let labels = service.spec.as_ref().map_or(&no_labels, |s| &s.labels);
        let ports: Vec<RoutePort> = service
            .endpoint
            .iter()
            .flat_map(|e| e.ports.iter())
            .map(|p| RoutePort {
                published_port: p.published_port,
                target_port: p.target_port,
                protocol: if p.protocol.is_empty() {
                    "tcp".into()
                } else {
                    p.protocol.clone()
                },
                proxy_protocol: crate::spec::proxy::effective(labels, p),
                publish_mode: route_publish_mode(&p.publish_mode).into(),
            })
            .collect();
        if ports.is_empty() {
            continue;
        }
        let mut endpoints: Vec<RouteEndpoint> = view
            .tasks_of(&service.id)
            // Running, and healthy if it has a health check: a task that is
            // starting or unhealthy takes no traffic.
            .filter(|t| crate::orchestrator::routable(t))
            // A Down node's tasks are unreachable: withdraw them at once.
            .filter(|t| !node_down(view, &t.node_id))
            .filter(|t| !t.status.as_ref().is_some_and(|s| s.ports.is_empty()))
            .map(|t| RouteEndpoint {
                task_id: t.id.clone(),
                task_name: shoal_api::task_name(t),
                slot: t.slot,
                node_id: t.node_id.clone(),
                node_name: view
                    .nodes
                    .get(&t.node_id)
                    .and_then(|n| n.description.as_ref())
                    .map(|d| d.hostname.clone())
                    .unwrap_or_else(|| t.node_id.clone()),
                ports: t
                    .status
                    .as_ref()
                    .map(|s| s.ports.clone())
                    .unwrap_or_default(),
                draining: !crate::orchestrator::is_live(t),
            })
            .collect();
        endpoints.sort_by(|a, b| {
            (a.slot, &a.node_id, &a.task_id).cmp(&(b.slot, &b.node_id, &b.task_id))
        });
        let name = service
            .spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        routes.insert(
            service.id.clone(),
            ServiceRoute {
                service_id: service.id.clone(),
                service_name: name,
                ports,
                endpoints,
            },
        );
    }
    routes
}

/// A port's publish mode in the feed: `host` (served only by the nodes
/// running a task of the service, each to its own tasks) or `ingress`.
fn route_publish_mode(mode: &str) -> &'static str {
    if mode == "host" {
        "host"
    } else {
        "ingress"
    }
}

fn node_down(view: &ClusterView, node_id: &str) -> bool {
    view.nodes.get(node_id).is_none_or(|n| {
        n.status
            .as_ref()
            .is_some_and(|s| s.state() == NodeState::Down)
    })
}

/// Where every overlay address lives: each node's bridge address and every
/// live task address, mapped to the node's underlay address.
pub fn build_overlay(view: &ClusterView) -> OverlayPeers {
    let nodes = view
        .nodes
        .values()
        .filter_map(|n| {
            let s = n.status.as_ref()?;
            Some(OverlayNode {
                node_id: n.id.clone(),
                underlay_addr: s.addr.clone(),
                ingress_address: s.ingress_address.clone(),
            })
        })
        .collect();
    let task_nodes = view
        .tasks
        .values()
        .filter(|t| !t.node_id.is_empty() && !is_terminal(task_state(t)))
        .filter_map(|t| {
            let ip = t
                .ingress_address
                .split('/')
                .next()
                .filter(|ip| !ip.is_empty())?;
            Some((ip.to_string(), t.node_id.clone()))
        })
        .collect();
    OverlayPeers { nodes, task_nodes }
}

/// What changed between two route maps.
pub fn diff(
    old: &BTreeMap<String, ServiceRoute>,
    new: &BTreeMap<String, ServiceRoute>,
) -> RoutingDelta {
    RoutingDelta {
        upserts: new
            .iter()
            .filter(|(id, r)| old.get(*id) != Some(r))
            .map(|(_, r)| r.clone())
            .collect(),
        removed_service_ids: old
            .keys()
            .filter(|id| !new.contains_key(*id))
            .cloned()
            .collect(),
        overlay: None,
    }
}

impl Feed {
    pub fn new(
        cache: ViewCache,
        changes: watch::Receiver<u64>,
        shutdown: CancellationToken,
    ) -> Self {
        let (live, _) = broadcast::channel(1024);
        let revision = *changes.borrow();
        Self {
            cache,
            changes,
            state: Arc::new(Mutex::new(FeedState {
                revision,
                horizon: revision,
                ..Default::default()
            })),
            live,
            shutdown,
        }
    }

    /// Recomputes routes on every store change and publishes deltas.
    pub async fn run(&self) -> Result<(), ManagerError> {
        let mut changes = self.changes.clone();
        loop {
            {
                // Not held across the wait: the cache would copy a view still held.
                let (revision, view) = self.cache.current_with_revision();
                self.advance(revision, build_routes(&view), build_overlay(&view));
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                r = changes.changed() => if r.is_err() { return Ok(()) },
            }
        }
    }

    fn advance(
        &self,
        revision: u64,
        routes: BTreeMap<String, ServiceRoute>,
        overlay: OverlayPeers,
    ) {
        let mut st = self.state.lock().expect("feed lock");
        let mut delta = diff(&st.routes, &routes);
        st.routes = routes;
        if st.overlay != overlay {
            delta.overlay = Some(overlay.clone());
            st.overlay = overlay;
        }
        if revision > st.revision {
            st.revision = revision;
        }
        let wanted = st.wanted > st.published && st.revision >= st.wanted;
        if delta.upserts.is_empty()
            && delta.removed_service_ids.is_empty()
            && delta.overlay.is_none()
            && !wanted
        {
            return;
        }
        Self::publish(&mut st, &self.live, delta);
    }

    /// Makes subscribers reach `revision` (once the feed has been built that
    /// far), with an empty delta if no route changed since. The withdrawal
    /// confirmer waits for every node to apply the revision at which a task
    /// left: when that write changed no route (its service was removed, say),
    /// nothing else would carry the revision to the nodes.
    pub fn publish_at_least(&self, revision: u64) {
        let mut st = self.state.lock().expect("feed lock");
        st.wanted = st.wanted.max(revision);
        if st.published < revision && st.revision >= revision {
            Self::publish(&mut st, &self.live, RoutingDelta::default());
        }
    }

    /// Records `delta` at the feed's revision and sends it to live subscribers.
    fn publish(
        st: &mut FeedState,
        live: &broadcast::Sender<Arc<FeedMessage>>,
        delta: RoutingDelta,
    ) {
        let revision = st.revision;
        st.published = revision;
        st.deltas.push_back((revision, delta.clone()));
        while st.deltas.len() > RETAINED_DELTAS {
            if let Some((r, _)) = st.deltas.pop_front() {
                st.horizon = r;
            }
        }
        let _ = live.send(Arc::new(FeedMessage {
            revision,
            body: Some(feed_message::Body::Delta(delta)),
        }));
    }

    fn snapshot(st: &FeedState) -> FeedMessage {
        FeedMessage {
            revision: st.revision,
            body: Some(feed_message::Body::Snapshot(RoutingSnapshot {
                services: st.routes.values().cloned().collect(),
                overlay: Some(st.overlay.clone()),
            })),
        }
    }

    /// A subscriber stream starting after `from_revision` (0 = snapshot).
    pub fn subscribe(
        &self,
        from_revision: u64,
    ) -> impl Stream<Item = Result<FeedMessage, Status>> + Send + 'static {
        let (tx, rx) = mpsc::channel::<Result<FeedMessage, Status>>(64);
        let (first, mut live) = {
            let st = self.state.lock().expect("feed lock");
            let live = self.live.subscribe();
            let first: Vec<FeedMessage> = if from_revision != 0
                && from_revision >= st.horizon
                && from_revision <= st.revision
            {
                st.deltas
                    .iter()
                    .filter(|(r, _)| *r > from_revision)
                    .map(|(r, d)| FeedMessage {
                        revision: *r,
                        body: Some(feed_message::Body::Delta(d.clone())),
                    })
                    .collect()
            } else {
                vec![Self::snapshot(&st)]
            };
            (first, live)
        };
        let state = self.state.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            for m in first {
                sent = sent.max(m.revision);
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
            loop {
                let msg = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    m = live.recv() => m,
                };
                let out = match msg {
                    Ok(m) if m.revision <= sent => continue,
                    Ok(m) => (*m).clone(),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        Self::snapshot(&state.lock().expect("feed lock"))
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                sent = out.revision;
                if tx.send(Ok(out)).await.is_err() {
                    return;
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_store::Store;

    fn route(id: &str, endpoints: usize) -> ServiceRoute {
        ServiceRoute {
            service_id: id.into(),
            service_name: id.into(),
            ports: vec![],
            endpoints: (0..endpoints)
                .map(|i| RouteEndpoint {
                    task_id: format!("t{i}"),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn host_mode_ports_are_routed_with_their_mode() {
        use shoal_api::pb::{PortConfig, Service, ServiceEndpoint, ServiceSpec};

        let port = |published: u32, mode: &str| PortConfig {
            protocol: "tcp".into(),
            target_port: 80,
            published_port: published,
            publish_mode: mode.into(),
            ..Default::default()
        };
        let mut view = ClusterView::default();
        view.services.insert(
            "web".into(),
            Arc::new(Service {
                id: "web".into(),
                spec: Some(ServiceSpec {
                    name: "web".into(),
                    ..Default::default()
                }),
                endpoint: Some(ServiceEndpoint {
                    ports: vec![port(8080, "host"), port(9090, "ingress"), port(9091, "")],
                }),
                ..Default::default()
            }),
        );
        let routes = build_routes(&view);
        let modes: Vec<(u32, &str)> = routes["web"]
            .ports
            .iter()
            .map(|p| (p.published_port, p.publish_mode.as_str()))
            .collect();
        assert_eq!(
            modes,
            vec![(8080, "host"), (9090, "ingress"), (9091, "ingress")]
        );
    }

    #[test]
    fn diff_lists_only_changed_services() {
        let old = BTreeMap::from([
            ("a".to_string(), route("a", 1)),
            ("b".to_string(), route("b", 1)),
        ]);
        let new = BTreeMap::from([
            ("a".to_string(), route("a", 2)),
            ("c".to_string(), route("c", 1)),
        ]);
        let d = diff(&old, &new);
        let ids: Vec<&str> = d.upserts.iter().map(|r| r.service_id.as_str()).collect();
        assert_eq!(ids, vec!["a", "c"]);
        assert_eq!(d.removed_service_ids, vec!["b".to_string()]);
        assert!(diff(&new, &new).upserts.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revision_the_confirmer_waits_for_reaches_subscribers_without_route_changes() {
        use tokio_stream::StreamExt;

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(shoal_store::StoreConfig::new(dir.path(), 1))
            .await
            .unwrap();
        let (_tx, changes) = watch::channel(0);
        let feed = Feed::new(
            ViewCache::new(store.clone()),
            changes,
            CancellationToken::new(),
        );
        let routes = BTreeMap::from([("a".to_string(), route("a", 1))]);
        feed.advance(5, routes.clone(), OverlayPeers::default());
        let mut sub = Box::pin(feed.subscribe(5));
        async fn next(
            sub: &mut (impl Stream<Item = Result<FeedMessage, Status>> + Unpin),
        ) -> FeedMessage {
            tokio::time::timeout(std::time::Duration::from_secs(5), sub.next())
                .await
                .expect("a feed message")
                .unwrap()
                .unwrap()
        }

        // Nothing changed in the routes: no message...
        feed.advance(7, routes.clone(), OverlayPeers::default());
        // ...until a revision is wanted: then an empty delta carries it.
        feed.publish_at_least(7);
        let msg: FeedMessage = next(&mut sub).await;
        assert_eq!(msg.revision, 7);
        assert_eq!(
            msg.body,
            Some(feed_message::Body::Delta(RoutingDelta::default()))
        );
        // Wanted before the feed got there: sent when it does.
        feed.publish_at_least(9);
        feed.advance(9, routes, OverlayPeers::default());
        assert_eq!(next(&mut sub).await.revision, 9);
        // Already sent: nothing more.
        feed.publish_at_least(9);
        feed.advance(10, BTreeMap::new(), OverlayPeers::default());
        let msg = next(&mut sub).await;
        assert_eq!(msg.revision, 10, "the next message is the next change");
        store.shutdown().await.unwrap();
    }
}
