//! Shoal's wire and storage types, generated from `proto/shoal/v1`.
//!
//! This is the only crate that sees prost: everything else uses the generated
//! types through [`pb`] and encodes or decodes them with [`codec`]. The small
//! helpers beside them (IDs, state names, the task naming rule) are shared by
//! the manager, the agent and the CLI so they agree on what users see.
//!
//! # Layout
//! - [`pb`]: generated messages, clients and servers.
//! - [`codec`]: protobuf encode/decode for store values.
//! - [`id`]: Docker-style 25-character object IDs.
//! - [`state`]: task-state order, names and predicates.
#![forbid(unsafe_code)]

pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("shoal.v1");
}

pub mod codec;
pub mod id;
pub mod state;

/// The name Docker gives a task: `<service>.<slot>.<task id>` for replicated
/// services, `<service>.<node id>.<task id>` for global ones (slot 0).
pub fn task_name(task: &pb::Task) -> String {
    if task.slot > 0 {
        format!("{}.{}.{}", task.service_name, task.slot, task.id)
    } else {
        format!("{}.{}.{}", task.service_name, task.node_id, task.id)
    }
}

/// The largest gRPC message a Shoal client or server takes (tonic's default
/// is 4 MiB): a node's assignment set or a `service ls` answer can exceed
/// 4 MiB with many tasks of large specs. Every single object is bounded far
/// below this (a service spec at 512 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Milliseconds since the Unix epoch, the time unit of every stored timestamp.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The workload `shoal/echo` and `shoal/timecheck` resolve to, and the tag.
pub fn builtin_image(image: &str) -> Option<(&'static str, &str)> {
    let (repo, tag) = split_image(image);
    match repo {
        "shoal/echo" => Some(("echo", tag)),
        "shoal/timecheck" => Some(("timecheck", tag)),
        _ => None,
    }
}

/// `repo[:tag]` → (repo, tag), tag defaulting to `latest`.
pub fn split_image(image: &str) -> (&str, &str) {
    // A ':' after the last '/' is a tag; one before it is a registry port.
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags() {
        assert_eq!(split_image("shoal/echo"), ("shoal/echo", "latest"));
        assert_eq!(split_image("shoal/echo:2"), ("shoal/echo", "2"));
        assert_eq!(split_image("reg:5000/x"), ("reg:5000/x", "latest"));
        assert_eq!(
            builtin_image("shoal/timecheck:1.0"),
            Some(("timecheck", "1.0"))
        );
        assert_eq!(builtin_image("nginx"), None);
    }
}
