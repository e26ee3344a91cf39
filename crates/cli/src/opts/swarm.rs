//! Swarm and node values: `swarm join`'s address and token role,
//! `node update`'s role, availability and labels.

use anyhow::{anyhow, bail};
use shoal_api::pb::{NodeAvailability, NodeRole};

use super::invalid;

/// The positional `worker|manager` of `swarm join-token`.
pub fn parse_join_role(value: &str) -> anyhow::Result<NodeRole> {
    match value {
        "worker" => Ok(NodeRole::Worker),
        "manager" => Ok(NodeRole::Manager),
        _ => bail!("invalid argument {value:?}: role must be \"worker\" or \"manager\""),
    }
}

/// `node update --role worker|manager`.
pub fn parse_node_role(value: &str) -> anyhow::Result<NodeRole> {
    crate::names::parse_role(value)
        .ok_or_else(|| invalid(value, "--role", "must be worker or manager"))
}

/// `node update --availability active|pause|drain`.
pub fn parse_availability(value: &str) -> anyhow::Result<NodeAvailability> {
    crate::names::parse_availability(value)
        .ok_or_else(|| invalid(value, "--availability", "must be active, pause or drain"))
}

/// `node update --label-add KEY=VALUE`.
pub fn parse_label_add(value: &str) -> anyhow::Result<(String, String)> {
    match value.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(invalid(value, "--label-add", "expected KEY=VALUE")),
    }
}

/// The port `swarm join` dials when `HOST:PORT` has no port.
pub const DEFAULT_SWARM_PORT: u16 = 2377;

/// `swarm join HOST[:PORT]`: `host:port`, with port 2377 when omitted
/// (IPv6 literals in brackets, or bare without a port).
pub fn parse_remote_addr(value: &str) -> anyhow::Result<String> {
    let bad = |why: &str| anyhow!("invalid remote address {value:?}: {why}");
    let port_ok = |p: &str| p.parse::<u16>().is_ok_and(|p| p > 0);
    if value.is_empty() {
        return Err(bad("expected HOST:PORT"));
    }
    let ipv6 = |h: &str| h.parse::<std::net::Ipv6Addr>().is_ok();
    if let Some(rest) = value.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, "")) if ipv6(h) => Ok(format!("[{h}]:{DEFAULT_SWARM_PORT}")),
            Some((h, p)) if ipv6(h) && p.strip_prefix(':').is_some_and(port_ok) => {
                Ok(value.to_string())
            }
            _ => Err(bad("expected [IPv6]:PORT")),
        };
    }
    match value.matches(':').count() {
        0 => Ok(format!("{value}:{DEFAULT_SWARM_PORT}")),
        1 => match value.split_once(':') {
            Some((h, p)) if !h.is_empty() && port_ok(p) => Ok(value.to_string()),
            _ => Err(bad("the port must be a number from 1 to 65535")),
        },
        _ if ipv6(value) => Ok(format!("[{value}]:{DEFAULT_SWARM_PORT}")),
        _ => Err(bad(
            "expected HOST:PORT, or [IPv6]:PORT for an IPv6 address",
        )),
    }
}
