//! Objects already in the store that are out of bounds (written before the
//! bounds of [`crate::spec::bounds`] existed, or by a bug): absurd replicas,
//! a spec or task too large to send. They must not crash or wedge a node:
//! the orchestrators leave such a service alone, and the messages sent to
//! agents and clients leave such an object out, so the rest is served. Each
//! is logged once per process, with its id and what is wrong; the user can
//! still `service rm` it, or fix it with `service update`.

use std::collections::BTreeSet;
use std::sync::Mutex;

use shoal_api::codec;
use shoal_api::pb::{Service, ServiceSpec, Task};

use crate::spec::bounds::{MAX_REPLICAS, MAX_SPEC_BYTES};

/// A stored object larger than this is left out of every message: a service
/// holds two specs (current and previous), a task one, plus their status.
pub const MAX_OBJECT_BYTES: usize = 2 * MAX_SPEC_BYTES + 64 * 1024;

/// What is wrong with a stored service, if anything the orchestrators cannot
/// act on: replicas or max-concurrent above [`MAX_REPLICAS`] (a node would
/// allocate a task per replica), or a spec above [`MAX_SPEC_BYTES`] (every
/// task carries it to its node).
pub fn service_problem(service: &Service) -> Option<String> {
    let spec = service.spec.as_ref()?;
    if spec.replicas > MAX_REPLICAS {
        return Some(format!(
            "replicas {} is more than the maximum {MAX_REPLICAS}",
            spec.replicas
        ));
    }
    if spec.max_concurrent > MAX_REPLICAS {
        return Some(format!(
            "max_concurrent {} is more than the maximum {MAX_REPLICAS}",
            spec.max_concurrent
        ));
    }
    let size = codec::encoded_len(spec);
    if size > MAX_SPEC_BYTES {
        return Some(format!(
            "its spec is {size} bytes, more than the maximum {MAX_SPEC_BYTES}"
        ));
    }
    None
}

/// Whether the orchestrators may act on `service`; logs it once if not.
pub fn runnable(service: &Service) -> bool {
    match service_problem(service) {
        None => true,
        Some(problem) => {
            let _logged = warn_once(
                "service",
                &service.id,
                &format!(
                    "{problem}; it is left alone: fix it with shoal service update, or remove it"
                ),
            );
            false
        }
    }
}

/// Whether a service may be sent in a message; logs it once if not.
pub fn service_fits(service: &Service) -> bool {
    fits("service", &service.id, codec::encoded_len(service))
}

/// Whether a task may be sent in a message; logs it once if not.
pub fn task_fits(task: &Task) -> bool {
    fits("task", &task.id, codec::encoded_len(task))
}

fn fits(kind: &str, id: &str, size: usize) -> bool {
    if size <= MAX_OBJECT_BYTES {
        return true;
    }
    let _logged = warn_once(
        kind,
        id,
        &format!("it is {size} bytes, more than the maximum {MAX_OBJECT_BYTES}; it is left out of what this manager sends"),
    );
    false
}

/// What a list answer (`service ls`, `service ps`) may carry: a margin
/// under the transport limit.
pub const LIST_BUDGET_BYTES: usize = shoal_api::MAX_MESSAGE_BYTES - 1024 * 1024;

/// The parts of a spec a list shows (name, mode, replicas, image, ports,
/// policies), without labels, env, command and placement: what makes a spec
/// large.
pub fn slim_spec(spec: &mut ServiceSpec) {
    spec.labels.clear();
    spec.env.clear();
    spec.command.clear();
    spec.workdir.clear();
    spec.placement = None;
    spec.health = None;
}

/// Keeps a list answer under `budget` bytes: past it, each object's specs
/// are slimmed ([`slim_spec`]) and a service's previous spec is left out;
/// `inspect` still shows them whole. Logged once per list kind.
pub fn fit_list<T>(
    kind: &str,
    items: &mut [T],
    budget: usize,
    size: impl Fn(&T) -> usize,
    slim: impl Fn(&mut T),
) {
    let total: usize = items.iter().map(&size).sum();
    if total <= budget {
        return;
    }
    items.iter_mut().for_each(slim);
    let _logged = warn_once(
        "list",
        kind,
        &format!("the answer would be {total} bytes, more than {budget}; specs are shown slimmed (use inspect)"),
    );
}

/// Logs a problem with a stored object the first time this process sees it;
/// returns whether it logged.
pub fn warn_once(kind: &str, id: &str, problem: &str) -> bool {
    static SEEN: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
    let first = SEEN
        .lock()
        .map(|mut seen| seen.insert((id.to_string(), problem.to_string())))
        .unwrap_or(false);
    if first {
        tracing::warn!(%kind, %id, "stored {kind} {id} is out of bounds: {problem}");
    }
    first
}

#[cfg(test)]
mod tests;
