//! `service logs`: resolves the service and hands its tasks to the
//! dispatcher's log broker, which streams the lines the agents send.

use std::pin::Pin;

use futures::Stream;
use shoal_api::pb::{LogMessage, ServiceLogsRequest, Task};
use tonic::Status;

use super::resolve::find_service;
use crate::cache::ViewCache;
use crate::dispatcher::DispatcherApi;

/// The stream of a `service logs` call.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogMessage, Status>> + Send>>;

/// Subscribes to the logs of the service's tasks.
pub fn service_logs(
    cache: &ViewCache,
    dispatcher: &DispatcherApi,
    req: ServiceLogsRequest,
) -> Result<LogStream, Status> {
    let view = cache.current();
    let service = find_service(&view, &req.service)?;
    let tasks: Vec<Task> = view.tasks_of(&service.id).map(|t| Task::clone(t)).collect();
    let stream = dispatcher.log_broker().subscribe(
        &tasks,
        vec![service.id.clone()],
        req.follow,
        req.tail,
        req.since_ms,
    );
    Ok(Box::pin(stream))
}
