//! The node objects the dispatcher writes: registered (Ready) when a
//! session opens, Down when its heartbeats stop. Each write is built from
//! the current view and retried on conflict.

use shoal_api::codec;
use shoal_api::pb::{Meta, Node, NodeSpec, NodeState, NodeStatus, SessionRequest};
use shoal_store::{Store, StoreError, Txn};

use crate::cache::ViewCache;
use crate::state;

/// Marks `nodes` Down in one write (50 agents that vanish at once are
/// one Raft write, not 50), retrying on conflict from a fresh view.
pub async fn mark_down(cache: &ViewCache, nodes: &[String]) -> Result<(), StoreError> {
    cache
        .write_from_view(|view| {
            let mut txn = Txn::default();
            for id in nodes {
                let Some(mut node) = view.nodes.get(id).map(|n| Node::clone(n)) else {
                    continue;
                };
                let s = node.status.get_or_insert_with(Default::default);
                if s.state() == NodeState::Down {
                    continue;
                }
                s.state = NodeState::Down as i32;
                s.message = "heartbeat failure".into();
                state::guarded_put(&mut txn, state::node_key(id), &mut node);
            }
            txn
        })
        .await
        .map(|_| ())
}

/// Read-modify-write of a node with retries on conflict.
async fn update_node(cache: &ViewCache, id: &str, f: impl Fn(&mut Node)) -> Result<(), StoreError> {
    cache
        .write_from_view(|view| {
            let mut txn = Txn::default();
            if let Some(mut node) = view.nodes.get(id).map(|n| Node::clone(n)) {
                let before = node.clone();
                f(&mut node);
                if node != before {
                    state::guarded_put(&mut txn, state::node_key(id), &mut node);
                }
            }
            txn
        })
        .await
        .map(|_| ())
}

/// Creates or refreshes the node record of a connecting agent.
pub async fn register_node(
    store: &Store,
    cache: &ViewCache,
    req: &SessionRequest,
) -> Result<(), StoreError> {
    let key = state::node_key(&req.node_id);
    if state::get::<Node>(store, &key).is_none() {
        let now = shoal_api::now_ms();
        let node = Node {
            id: req.node_id.clone(),
            meta: Some(Meta {
                version: 0,
                created_at_ms: now,
                updated_at_ms: now,
            }),
            spec: Some(NodeSpec::default()),
            description: req.description.clone(),
            status: Some(NodeStatus {
                state: NodeState::Ready as i32,
                addr: req.addr.clone(),
                ..Default::default()
            }),
            manager_status: None,
        };
        let txn = Txn::new()
            .when_absent(key.clone())
            .put(key, codec::encode(&node));
        match store.write(txn).await {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let (desc, addr) = (req.description.clone(), req.addr.clone());
    update_node(cache, &req.node_id, move |n| {
        if desc.is_some() {
            n.description = desc.clone();
        }
        let s = n.status.get_or_insert_with(Default::default);
        s.state = NodeState::Ready as i32;
        s.message.clear();
        if !addr.is_empty() {
            s.addr = addr.clone();
        }
    })
    .await
}
