//! `inspect`: Docker-shaped JSON for services, tasks and nodes, their
//! `-f/--format` templates, `--pretty`, and the top-level `shoal inspect`.
//!
//! # Layout
//! - `shapes`: the JSON objects, field for field as Docker's API writes them.
//! - `pretty`: `service inspect --pretty` and `node inspect --pretty`.
//! - this file: looking objects up and printing them (JSON or a template);
//!   the template engine is [`crate::template`], enum names [`crate::names`].

use anyhow::bail;
use serde::Serialize;
use shoal_api::pb;

use crate::client::{self, DaemonError, Host};

mod pretty;
mod shapes;
#[cfg(test)]
mod tests;

pub use crate::names::{availability_name, node_state_name, runtime_name};
#[cfg(test)]
pub use pretty::bytes_size;
pub use pretty::{node_pretty, service_pretty};
pub use shapes::{node_json, service_json, task_json, NodeJson, ServiceJson, TaskJson};

/// `shoal inspect ID...`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Format output using a Go template, e.g. '{{.Status.ContainerStatus.PID}}'.
    #[arg(short, long)]
    format: Option<String>,
    /// Task, service or node IDs (or names).
    #[arg(required = true)]
    ids: Vec<String>,
}

/// Looks each argument up as a task, then a service, then a node.
pub async fn run(host: &Host, args: InspectArgs) -> anyhow::Result<()> {
    let mut c = client::connect(host).await?;
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for id in &args.ids {
        if let Ok(r) = c.get_task(pb::GetTaskRequest { task: id.clone() }).await {
            if let Some(t) = r.into_inner().task {
                found.push(Object::Task(task_json(&t)));
                continue;
            }
        }
        match c
            .get_service(pb::GetServiceRequest {
                service: id.clone(),
            })
            .await
        {
            Ok(r) => {
                if let Some(s) = r.into_inner().service {
                    found.push(Object::Service(service_json(&s)));
                    continue;
                }
            }
            Err(s) if !is_not_found(&s) => return Err(DaemonError(s).into()),
            Err(_) => {}
        }
        match c.get_node(pb::GetNodeRequest { node: id.clone() }).await {
            Ok(r) => match r.into_inner().node {
                Some(n) => found.push(Object::Node(node_json(&n))),
                None => missing.push(id.clone()),
            },
            Err(s) if !is_not_found(&s) => return Err(DaemonError(s).into()),
            Err(_) => missing.push(id.clone()),
        }
    }
    print_values(&found, args.format.as_deref())?;
    if !missing.is_empty() {
        bail!("Error: No such object: {}", missing.join(", "));
    }
    Ok(())
}

/// Whether a status means "no such object" rather than a real failure.
pub fn is_not_found(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::NotFound | tonic::Code::InvalidArgument
    )
}

/// Anything `inspect` can print, keeping Docker's field order.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Object {
    /// `docker inspect TASK`.
    Task(TaskJson),
    /// `docker service inspect`.
    Service(ServiceJson),
    /// `docker node inspect`.
    Node(NodeJson),
}

/// Prints inspect results: a JSON array, or one template line per object.
pub fn print_values(values: &[Object], format: Option<&str>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match format {
        Some(tmpl) => {
            let template = crate::template::Template::parse(tmpl)?;
            for v in values {
                let data = crate::template::data::from_json(&serde_json::to_value(v)?);
                writeln!(out, "{}", template.render(&data)?)?;
            }
        }
        None => writeln!(out, "{}", to_docker_json(values))?,
    }
    Ok(())
}

/// Pretty JSON with Docker's 4-space indent.
pub fn to_docker_json<T: Serialize + ?Sized>(v: &T) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    // Serializing a Value into memory cannot fail.
    v.serialize(&mut ser).expect("serialize JSON value");
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}
