//! `service logs`: resolves the service (or one task) and hands its tasks to
//! the dispatcher's log broker, which streams the lines the agents send.

use std::pin::Pin;

use futures::Stream;
use shoal_api::pb::{LogMessage, ServiceLogsRequest, Task};
use tonic::Status;

use super::resolve::{find_service, find_task};
use crate::cache::ViewCache;
use crate::dispatcher::DispatcherApi;

/// The stream of a `service logs` call.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogMessage, Status>> + Send>>;

/// Subscribes to the logs of the service's tasks, or of the one task asked for.
pub fn service_logs(
    cache: &ViewCache,
    dispatcher: &DispatcherApi,
    req: ServiceLogsRequest,
) -> Result<LogStream, Status> {
    let view = cache.current();
    // One task's lines, or (following) every task the service ever runs.
    let (tasks, service_ids): (Vec<Task>, Vec<String>) = if req.task.is_empty() {
        let service = find_service(&view, &req.service)?;
        (
            view.tasks_of(&service.id).map(|t| Task::clone(t)).collect(),
            vec![service.id],
        )
    } else {
        (vec![find_task(&view, &req.task)?], Vec::new())
    };
    drop(view);
    let stream =
        dispatcher
            .log_broker()
            .subscribe(&tasks, service_ids, req.follow, req.tail, req.since_ns);
    Ok(Box::pin(stream))
}
