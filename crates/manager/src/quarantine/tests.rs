//! A store that already holds absurd or oversized objects: the orchestrators
//! leave them alone and serve the rest.

use std::sync::Arc;

use shoal_api::pb::{
    Cluster, Node, NodeSpec, NodeState, NodeStatus, Service, ServiceMode, ServiceSpec, TaskState,
};

use super::*;
use crate::orchestrator::{self, task_state, Changes};
use crate::state::ClusterView;
use crate::{allocator, scheduler};

fn service(id: &str, mode: ServiceMode, replicas: u64) -> Service {
    Service {
        id: id.into(),
        spec: Some(ServiceSpec {
            name: id.into(),
            image: "shoal/echo".into(),
            mode: mode as i32,
            replicas,
            ..Default::default()
        }),
        spec_version: 1,
        ..Default::default()
    }
}

fn view(services: Vec<Service>) -> ClusterView {
    let node = Node {
        id: "n1".into(),
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            state: NodeState::Ready as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    ClusterView {
        cluster: Arc::new(Cluster {
            id: "c".into(),
            ingress_subnet: "10.255.0.0/16".into(),
            task_history_limit: 5,
            ..Default::default()
        }),
        services: services
            .into_iter()
            .map(|s| (s.id.clone(), Arc::new(s)))
            .collect(),
        nodes: [("n1".to_string(), Arc::new(node))].into(),
        ..Default::default()
    }
}

fn huge(mut s: Service) -> Service {
    let spec = s.spec.as_mut().unwrap();
    for i in 0..15 {
        spec.labels.insert(format!("l{i}"), "x".repeat(100_000));
    }
    s
}

#[test]
fn absurd_and_oversized_services_are_left_alone_and_the_rest_is_served() {
    let mut v = view(vec![
        service("absurd", ServiceMode::Replicated, u64::MAX),
        service("absurd-job", ServiceMode::ReplicatedJob, u64::MAX),
        huge(service("huge", ServiceMode::Replicated, 3)),
        huge(service("huge-global", ServiceMode::Global, 0)),
        service("web", ServiceMode::Replicated, 2),
        service("agent", ServiceMode::Global, 0),
    ]);
    for _ in 0..3 {
        let mut changes = Changes::default();
        orchestrator::reconcile(&mut v, &mut changes, 1_000);
        allocator::allocate_tasks(&mut v, &mut changes, 1_000);
        scheduler::schedule(&mut v, &mut changes, 1_000);
        assert!(changes.services.is_empty());
    }
    let of = |id: &str| v.tasks.values().filter(|t| t.service_id == id).count();
    assert_eq!((of("web"), of("agent")), (2, 1), "the rest is served");
    for bad in ["absurd", "absurd-job", "huge", "huge-global"] {
        assert_eq!(of(bad), 0, "{bad} is left alone");
        assert!(service_problem(&v.services[bad]).is_some());
    }
    assert!(v
        .tasks
        .values()
        .all(|t| task_state(t) == TaskState::Assigned));
}

#[test]
fn objects_over_the_size_bound_do_not_fit_a_message() {
    assert!(service_fits(&service("web", ServiceMode::Replicated, 1)));
    assert!(!service_fits(&huge(service(
        "huge",
        ServiceMode::Replicated,
        1
    ))));
    let big = huge(service("huge", ServiceMode::Replicated, 1));
    let task = orchestrator::new_task(&big, 1, "n1", 0, 0);
    assert!(!task_fits(&task));
}

/// The same through a real store and the reconcile loop's pass: a store that
/// already holds the absurd service is served as if it were not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_holding_an_absurd_service_still_runs_the_rest() {
    use crate::cache::ViewCache;
    use crate::reconciler::reconcile_once;
    use crate::state;
    use shoal_store::Txn;

    let dir = tempfile::tempdir().unwrap();
    let store = crate::test_support::leading_store(dir.path(), 1000).await;
    let mut web = service("web", ServiceMode::Replicated, 2);
    web.endpoint = Some(shoal_api::pb::ServiceEndpoint {
        ports: vec![shoal_api::pb::PortConfig {
            target_port: 80,
            published_port: 8080,
            ..Default::default()
        }],
    });
    let v = view(vec![
        service("absurd", ServiceMode::Replicated, u64::MAX),
        huge(service("huge", ServiceMode::Replicated, 3)),
        web,
    ]);
    let mut txn = Txn::new().put(state::CLUSTER_KEY, codec::encode(&*v.cluster));
    for n in v.nodes.values() {
        txn = txn.put(state::node_key(&n.id), codec::encode(&**n));
    }
    for s in v.services.values() {
        txn = txn.put(state::service_key(&s.id), codec::encode(&**s));
    }
    store.write(txn).await.unwrap();
    let cache = ViewCache::new(store.clone());
    for _ in 0..3 {
        reconcile_once(&store, &cache).await.unwrap();
    }
    let view = cache.current();
    let of = |id: &str| view.tasks.values().filter(|t| t.service_id == id).count();
    assert_eq!((of("web"), of("absurd"), of("huge")), (2, 0, 0));
    // What the feed publishes is built for the rest as well.
    let routes = crate::dispatcher::feed::build_routes(&view);
    assert!(routes.contains_key("web"));
}

#[test]
fn each_problem_is_logged_once() {
    assert!(warn_once("service", "once-a", "replicas 1 is odd"));
    assert!(!warn_once("service", "once-a", "replicas 1 is odd"));
    assert!(warn_once("service", "once-a", "another problem"));
    assert!(warn_once("service", "once-b", "replicas 1 is odd"));
}

#[test]
fn a_list_over_its_budget_shows_slimmed_specs() {
    let big = huge(service("huge", ServiceMode::Replicated, 1));
    let tasks: Vec<_> = (0..3)
        .map(|slot| orchestrator::new_task(&big, slot, "n1", 0, 0))
        .collect();
    let size = |t: &shoal_api::pb::Task| codec::encoded_len(t);
    let slim = |t: &mut shoal_api::pb::Task| t.spec.iter_mut().for_each(slim_spec);
    let mut under = tasks.clone();
    fit_list("tasks-test", &mut under, usize::MAX, size, slim);
    assert_eq!(under, tasks, "under the budget nothing changes");
    let mut over = tasks.clone();
    fit_list("tasks-test", &mut over, 1_000_000, size, slim);
    assert!(over.iter().map(size).sum::<usize>() < 1_000_000);
    let spec = over[0].spec.as_ref().unwrap();
    assert_eq!(
        (spec.name.as_str(), spec.image.as_str()),
        ("huge", "shoal/echo")
    );
    assert!(spec.labels.is_empty());
}
