//! The shape of a service: `--replicas`, `--mode`, `--runtime`, `scale`
//! arguments, and the random name of a service created without `--name`.

use anyhow::{anyhow, bail};
use shoal_api::pb::{Runtime, ServiceMode};

use super::invalid;

/// `--replicas`: a non-negative integer.
pub fn parse_replicas(value: &str) -> anyhow::Result<u64> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(value, "--replicas", "must be a non-negative integer"))
}

/// `--mode replicated|global|replicated-job|global-job`.
pub fn parse_mode(value: &str) -> anyhow::Result<ServiceMode> {
    match value {
        "replicated" => Ok(ServiceMode::Replicated),
        "global" => Ok(ServiceMode::Global),
        "replicated-job" => Ok(ServiceMode::ReplicatedJob),
        "global-job" => Ok(ServiceMode::GlobalJob),
        _ => Err(invalid(
            value,
            "--mode",
            "must be replicated, global, replicated-job or global-job",
        )),
    }
}

/// Whether a spec's mode runs tasks to completion (replicated-job, global-job).
pub fn is_job(mode: i32) -> bool {
    mode == ServiceMode::ReplicatedJob as i32 || mode == ServiceMode::GlobalJob as i32
}

/// Whether a spec's mode runs one task per node (global, global-job).
pub fn is_per_node(mode: i32) -> bool {
    mode == ServiceMode::Global as i32 || mode == ServiceMode::GlobalJob as i32
}

/// Docker's text for `--replicas` (and `scale`) on a per-node mode.
pub const REPLICAS_MODES: &str = "replicated or replicated-job mode";

/// `--runtime`, defaulting by image: builtin workloads need no runtime flag,
/// anything else needs `--runtime process` and a command.
pub fn resolve_runtime(
    runtime: Option<&str>,
    image: &str,
    command: &[String],
) -> anyhow::Result<Runtime> {
    let builtin = shoal_api::builtin_image(image).is_some();
    let runtime = match runtime {
        None if builtin => Runtime::Builtin,
        None => bail!(
            "image {image:?} needs a container runtime, which this node does not have yet; \
             run a command with --runtime process"
        ),
        Some("builtin") if builtin => Runtime::Builtin,
        Some("builtin") => bail!(
            "image {image:?} is not a builtin workload (shoal/echo, shoal/timecheck); \
             run a command with --runtime process"
        ),
        Some("process") => Runtime::Process,
        Some(other) => return Err(invalid(other, "--runtime", "must be builtin or process")),
    };
    if runtime == Runtime::Process && command.is_empty() {
        bail!(
            "--runtime process needs a command: \
             shoal service create --runtime process IMAGE COMMAND [ARG...]"
        );
    }
    Ok(runtime)
}

/// `service scale SERVICE=REPLICAS`.
pub fn parse_scale(arg: &str) -> anyhow::Result<(String, u64)> {
    let Some((name, n)) = arg.split_once('=') else {
        bail!("invalid scale specifier {arg:?}: expected SERVICE=REPLICAS");
    };
    if name.is_empty() {
        bail!("invalid scale specifier {arg:?}: expected SERVICE=REPLICAS");
    }
    let n = n
        .parse()
        .map_err(|_| anyhow!("invalid replicas value {arg}: must be a non-negative integer"))?;
    Ok((name.to_string(), n))
}

/// A Docker-like random service name (`blissful_kirch`) for `create` without `--name`.
pub fn random_name() -> String {
    const LEFT: &[&str] = &[
        "admiring", "blissful", "brave", "busy", "clever", "eager", "elastic", "focused",
        "gallant", "happy", "jolly", "keen", "lucid", "modest", "nifty", "quirky", "serene",
        "sharp", "stoic", "vibrant", "wizardly", "zen",
    ];
    const RIGHT: &[&str] = &[
        "albattani",
        "bell",
        "curie",
        "darwin",
        "euler",
        "fermi",
        "goodall",
        "hopper",
        "kirch",
        "lovelace",
        "meitner",
        "noether",
        "pasteur",
        "ritchie",
        "shannon",
        "tesla",
        "thompson",
        "turing",
        "wozniak",
        "yalow",
    ];
    let id = shoal_api::id::new_id();
    let seed = id.bytes().fold(0usize, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(b as usize)
    });
    format!(
        "{}_{}",
        LEFT[seed % LEFT.len()],
        RIGHT[(seed / LEFT.len()) % RIGHT.len()]
    )
}
