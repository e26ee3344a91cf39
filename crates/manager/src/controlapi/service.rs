//! `service create|inspect|ls|update|rollback|rm`: spec validation, the
//! published ports a service holds, and the service's store writes (the
//! service, its name index and its published-port index in one transaction).

use std::collections::BTreeSet;

use shoal_api::codec;
use shoal_api::pb::{
    CreateServiceRequest, GetServiceRequest, ListServicesResponse, Meta, RemoveServiceRequest,
    RemoveServiceResponse, Service, ServiceEndpoint, ServiceListEntry, ServiceResponse,
    ServiceSpec, UpdateServiceRequest, UpdateState, UpdateStatus,
};
use shoal_store::{Compare, Op, Store, StoreError, Txn};
use tonic::Status;

use super::resolve::{find_service, store_status};
use crate::allocator::ports::{self, PortError};
use crate::cache::ViewCache;
use crate::state::{self, ClusterView};
use crate::{orchestrator, quarantine, spec};

/// `service create`: a new service with its name and published ports
/// reserved in the same write.
pub async fn create(
    store: &Store,
    cache: &ViewCache,
    req: CreateServiceRequest,
) -> Result<ServiceResponse, Status> {
    let mut spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
    spec::normalize(&mut spec);
    spec::validate(&spec).map_err(Status::invalid_argument)?;
    let id = shoal_api::id::new_id();
    let endpoint = {
        let view = cache.current();
        if view
            .services
            .values()
            .any(|s| s.spec.as_ref().is_some_and(|sp| sp.name == spec.name))
        {
            return Err(Status::already_exists(format!(
                "service {} already exists: choose another --name, or remove it first with shoal service rm {}",
                spec.name, spec.name
            )));
        }
        allocate_endpoint(&view, &id, &spec, None)?
    };
    let now = shoal_api::now_ms();
    let mut service = Service {
        id: id.clone(),
        meta: Some(Meta {
            version: 0,
            created_at_ms: now,
            updated_at_ms: now,
        }),
        spec: Some(spec.clone()),
        previous_spec: None,
        endpoint: Some(endpoint.clone()),
        spec_version: 1,
        update_status: None,
        job_status: None,
    };
    orchestrator::jobs::start_iteration(&mut service, now);
    let mut txn = Txn::default();
    txn.compares.push(Compare::Version {
        key: state::service_key(&id),
        version: 0,
    });
    txn.compares.push(Compare::Version {
        key: state::service_name_key(&spec.name),
        version: 0,
    });
    txn.ops.push(Op::Put {
        key: state::service_name_key(&spec.name),
        value: id.clone().into_bytes(),
    });
    for p in &endpoint.ports {
        txn.compares.push(Compare::Version {
            key: state::ingress_port_key(p.published_port, &p.protocol),
            version: 0,
        });
        txn.ops.push(Op::Put {
            key: state::ingress_port_key(p.published_port, &p.protocol),
            value: id.clone().into_bytes(),
        });
    }
    service_ops(&mut txn, &service);
    let rev = store.write(txn).await.map_err(|e| match e {
        StoreError::ConditionFailed { key } => {
            Status::already_exists(format!("{key} was taken by a concurrent request; retry"))
        }
        other => store_status(other),
    })?;
    service.meta.get_or_insert_with(Default::default).version = rev;
    tracing::info!(service = %spec.name, %id, "service created");
    Ok(ServiceResponse {
        service: Some(service),
    })
}

/// `service inspect`.
pub fn get(cache: &ViewCache, req: GetServiceRequest) -> Result<ServiceResponse, Status> {
    let service = find_service(&cache.current(), &req.service)?;
    Ok(ServiceResponse {
        service: Some(service),
    })
}

/// `service ls`: every service with its task counts, by name, within the
/// list budget.
pub fn list(cache: &ViewCache) -> ListServicesResponse {
    let view = cache.current();
    let mut services: Vec<ServiceListEntry> = view
        .services
        .values()
        .filter(|s| quarantine::service_fits(s))
        .map(|s| {
            let (running, desired, completed) = orchestrator::service_counts(&view, s);
            ServiceListEntry {
                service: Some(Service::clone(s)),
                running_tasks: running,
                desired_tasks: desired,
                completed_tasks: completed,
            }
        })
        .collect();
    services.sort_by(|a, b| {
        let name = |e: &ServiceListEntry| {
            e.service
                .as_ref()
                .and_then(|s| s.spec.as_ref())
                .map(|s| s.name.clone())
        };
        name(a).cmp(&name(b))
    });
    quarantine::fit_list(
        "services",
        &mut services,
        quarantine::LIST_BUDGET_BYTES,
        |e| codec::encoded_len(e) + 8,
        |e| {
            if let Some(s) = e.service.as_mut() {
                s.previous_spec = None;
                s.spec.iter_mut().for_each(quarantine::slim_spec);
            }
        },
    );
    ListServicesResponse { services }
}

/// `service update` (and `service rollback`, which is an update with
/// `rollback` set).
pub async fn update(
    store: &Store,
    cache: &ViewCache,
    req: UpdateServiceRequest,
) -> Result<ServiceResponse, Status> {
    let view = cache.current();
    let current = find_service(&view, &req.service)?;
    if req.rollback {
        drop(view);
        return rollback(store, cache, current).await;
    }
    let mut spec = req
        .spec
        .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
    let version = current.meta.as_ref().map(|m| m.version).unwrap_or(0);
    if req.version != 0 && req.version != version {
        return Err(Status::aborted(format!(
            "update out of sequence: service {} changed since version {}; retry",
            req.service, req.version
        )));
    }
    let old_spec = current.spec.clone().unwrap_or_default();
    if spec.name != old_spec.name {
        return Err(Status::invalid_argument(
            "name: renaming a service is not supported",
        ));
    }
    if spec.mode != old_spec.mode {
        return Err(Status::invalid_argument(
            "mode: the mode of a service cannot be changed; remove and create it again",
        ));
    }
    spec::normalize(&mut spec);
    spec::validate(&spec).map_err(Status::invalid_argument)?;
    if spec == old_spec {
        return Ok(ServiceResponse {
            service: Some(current),
        });
    }
    let endpoint = allocate_endpoint(&view, &current.id, &spec, current.endpoint.as_ref())?;
    drop(view);
    let mut service = current.clone();
    if spec::task_template_changed(&old_spec, &spec) {
        service.spec_version += 1;
        service.update_status = Some(UpdateStatus {
            state: UpdateState::Updating as i32,
            started_at_ms: shoal_api::now_ms(),
            completed_at_ms: 0,
            message: "update in progress".into(),
        });
    }
    service.previous_spec = Some(old_spec);
    service.spec = Some(spec);
    service.endpoint = Some(endpoint);
    orchestrator::jobs::spec_changed(&mut service, shoal_api::now_ms());
    state::touch_meta(&mut service.meta);
    let txn = service_write(&service, version, current.endpoint.as_ref());
    let rev = store.write(txn).await.map_err(store_status)?;
    service.meta.get_or_insert_with(Default::default).version = rev;
    Ok(ServiceResponse {
        service: Some(service),
    })
}

/// `service rollback`: the previous spec comes back (and the current one
/// becomes the previous, as in swarmkit), rolled out with the rollback config.
async fn rollback(
    store: &Store,
    cache: &ViewCache,
    current: Service,
) -> Result<ServiceResponse, Status> {
    let name = current
        .spec
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let Some(previous) = current.previous_spec.clone() else {
        return Err(Status::failed_precondition(format!(
            "service {name} has no previous spec: there is nothing to roll back to"
        )));
    };
    let version = current.meta.as_ref().map(|m| m.version).unwrap_or(0);
    let mut service = current.clone();
    let endpoint = allocate_endpoint(
        &cache.current(),
        &current.id,
        &previous,
        current.endpoint.as_ref(),
    )?;
    service.previous_spec = current.spec.clone();
    service.spec = Some(previous);
    service.endpoint = Some(endpoint);
    service.spec_version += 1;
    service.update_status = Some(UpdateStatus {
        state: UpdateState::RollbackStarted as i32,
        started_at_ms: shoal_api::now_ms(),
        completed_at_ms: 0,
        message: "manually requested rollback".into(),
    });
    orchestrator::jobs::spec_changed(&mut service, shoal_api::now_ms());
    state::touch_meta(&mut service.meta);
    let txn = service_write(&service, version, current.endpoint.as_ref());
    let rev = store.write(txn).await.map_err(store_status)?;
    service.meta.get_or_insert_with(Default::default).version = rev;
    tracing::info!(service = %name, "rollback requested");
    Ok(ServiceResponse {
        service: Some(service),
    })
}

/// `service rm`: the service, its name and its published ports go in one
/// write; the orchestrator then shuts its tasks down.
pub async fn remove(
    store: &Store,
    cache: &ViewCache,
    req: RemoveServiceRequest,
) -> Result<RemoveServiceResponse, Status> {
    let service = find_service(&cache.current(), &req.service)?;
    let version = service.meta.as_ref().map(|m| m.version).unwrap_or(0);
    let name = service
        .spec
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let mut txn = Txn::default();
    txn.compares.push(Compare::Version {
        key: state::service_key(&service.id),
        version,
    });
    txn.ops.push(Op::Delete {
        key: state::service_key(&service.id),
    });
    txn.ops.push(Op::Delete {
        key: state::service_name_key(&name),
    });
    for p in service.endpoint.iter().flat_map(|e| e.ports.iter()) {
        txn.ops.push(Op::Delete {
            key: state::ingress_port_key(p.published_port, &p.protocol),
        });
    }
    store.write(txn).await.map_err(store_status)?;
    tracing::info!(service = %name, "service removed");
    Ok(RemoveServiceResponse { id: service.id })
}

/// The endpoint the allocator gives `spec`, or why it cannot have its ports.
fn allocate_endpoint(
    view: &ClusterView,
    service_id: &str,
    spec: &ServiceSpec,
    current: Option<&ServiceEndpoint>,
) -> Result<ServiceEndpoint, Status> {
    ports::allocate_endpoint(view, service_id, spec, current, ports::local_port_in_use).map_err(
        |e| match e {
            PortError::Exhausted => Status::resource_exhausted(e.to_string()),
            _ => Status::already_exists(e.to_string()),
        },
    )
}

/// The write of a changed service read at `version`: the service itself and
/// the published-port index moved from `before` to its new endpoint (taken
/// ports must be free, released ones are freed).
fn service_write(service: &Service, version: u64, before: Option<&ServiceEndpoint>) -> Txn {
    let ports = |e: Option<&ServiceEndpoint>| -> BTreeSet<String> {
        e.iter()
            .flat_map(|e| e.ports.iter())
            .map(|p| state::ingress_port_key(p.published_port, &p.protocol))
            .collect()
    };
    let (old, new) = (ports(before), ports(service.endpoint.as_ref()));
    let mut txn = Txn::default();
    txn.compares.push(Compare::Version {
        key: state::service_key(&service.id),
        version,
    });
    for p in old.difference(&new) {
        txn.ops.push(Op::Delete { key: p.clone() });
    }
    for p in new.difference(&old) {
        txn.compares.push(Compare::Version {
            key: p.clone(),
            version: 0,
        });
        txn.ops.push(Op::Put {
            key: p.clone(),
            value: service.id.clone().into_bytes(),
        });
    }
    service_ops(&mut txn, service);
    txn
}

fn service_ops(txn: &mut Txn, service: &Service) {
    txn.ops.push(Op::Put {
        key: state::service_key(&service.id),
        value: codec::encode(service),
    });
}
