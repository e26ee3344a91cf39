//! `-p/--publish` (and `--publish-add`): Docker's short and long port forms.

use shoal_api::pb::PortConfig;

use super::invalid;

const PUBLISH: &str = "-p, --publish";

/// Parses one `-p/--publish` value into one or more port configs.
///
/// Short form: `[PUBLISHED:]TARGET[/PROTOCOL]`, either side may be a range
/// (`8080-8081:80-81`); long form:
/// `published=8081,target=80,protocol=tcp,mode=ingress,proxy-protocol=v2`
/// (`proxy-protocol` alone means v2).
/// A missing published port is 0: the manager allocates one.
pub fn parse_publish(value: &str) -> anyhow::Result<Vec<PortConfig>> {
    parse_publish_flag(value, PUBLISH)
}

/// [`parse_publish`] for another flag (`--publish-add`), named in errors.
pub fn parse_publish_flag(value: &str, flag: &str) -> anyhow::Result<Vec<PortConfig>> {
    let bad = |why: String| invalid(value, flag, why);
    if value.contains('=') {
        return parse_publish_long(value).map(|p| vec![p]).map_err(bad);
    }
    let (ports, proto) = match value.split_once('/') {
        Some((p, proto)) => (p, proto),
        None => (value, "tcp"),
    };
    let proto = parse_protocol(proto).map_err(&bad)?;
    let parts: Vec<&str> = ports.split(':').collect();
    let (published, target) = match parts.as_slice() {
        [target] => (None, *target),
        [published, target] => (Some(*published), *target),
        [_ip, ..] => {
            return Err(bad(
                "binding to a host IP is not supported; use PUBLISHED:TARGET".into(),
            ))
        }
        [] => unreachable!("split yields at least one part"),
    };
    let targets = parse_range(target, "target").map_err(&bad)?;
    let published = match published {
        Some(p) if !p.is_empty() => Some(parse_range(p, "published").map_err(&bad)?),
        _ => None,
    };
    if let Some(published) = &published {
        let last = published[0] as usize + targets.len() - 1;
        if published.len() == 1 && last > 65535 {
            return Err(bad(format!(
                "published ports {}-{last} for target range {target} go past 65535",
                published[0]
            )));
        }
        if published.len() != targets.len() && published.len() != 1 {
            return Err(bad(format!(
                "published range {} and target range {} differ in size",
                ports.split(':').next().unwrap_or_default(),
                target
            )));
        }
    }
    Ok(targets
        .iter()
        .enumerate()
        .map(|(i, &t)| PortConfig {
            name: String::new(),
            protocol: proto.to_string(),
            target_port: t,
            published_port: match &published {
                Some(p) if p.len() == 1 && targets.len() > 1 => p[0] + i as u32,
                Some(p) => p[i],
                None => 0,
            },
            publish_mode: "ingress".into(),
            proxy_protocol: String::new(),
        })
        .collect())
}

fn parse_publish_long(value: &str) -> Result<PortConfig, String> {
    let mut port = PortConfig {
        name: String::new(),
        protocol: "tcp".into(),
        target_port: 0,
        published_port: 0,
        publish_mode: "ingress".into(),
        proxy_protocol: String::new(),
    };
    let mut have_target = false;
    for field in value.split(',') {
        // A bare `proxy-protocol` asks for the default version, v2.
        let (k, v) = match field.split_once('=') {
            Some(kv) => kv,
            None if field.trim().eq_ignore_ascii_case("proxy-protocol") => (field, "v2"),
            None => return Err(format!("invalid field {field:?}: expected KEY=VALUE")),
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "published" => port.published_port = parse_port(v, "published")?,
            "target" => {
                port.target_port = parse_port(v, "target")?;
                have_target = true;
            }
            "protocol" => port.protocol = parse_protocol(v)?.to_string(),
            "mode" => match v {
                "ingress" | "host" => port.publish_mode = v.to_string(),
                _ => {
                    return Err(format!(
                        "invalid publish mode {v:?}: must be ingress or host"
                    ))
                }
            },
            "name" => port.name = v.to_string(),
            "proxy-protocol" => port.proxy_protocol = parse_proxy_protocol(v)?.to_string(),
            other => {
                return Err(format!(
                "invalid field key {other:?}: expected published, target, protocol, mode, name or proxy-protocol"
            ))
            }
        }
    }
    if !have_target {
        return Err("missing mandatory field \"target\"".into());
    }
    if !port.proxy_protocol.is_empty() && port.protocol != "tcp" {
        return Err(format!(
            "proxy-protocol is for tcp ports only: a {} port has no standard PROXY header; remove proxy-protocol",
            port.protocol
        ));
    }
    Ok(port)
}

/// The `proxy-protocol` key: the PROXY protocol version the task is sent.
pub fn parse_proxy_protocol(v: &str) -> Result<&'static str, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "v1" => Ok("v1"),
        "v2" => Ok("v2"),
        _ => Err(format!(
            "invalid proxy-protocol {v:?}: must be v1 or v2 (the PROXY protocol version sent to the task)"
        )),
    }
}

fn parse_protocol(p: &str) -> Result<&'static str, String> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" => Ok("tcp"),
        "udp" => Ok("udp"),
        _ => Err(format!("invalid protocol {p:?}: must be tcp or udp")),
    }
}

fn parse_port(s: &str, what: &str) -> Result<u32, String> {
    match s.trim().parse::<u64>() {
        Ok(n @ 1..=65535) => Ok(n as u32),
        _ => Err(format!(
            "{what} port {s:?} must be a number from 1 to 65535"
        )),
    }
}

fn parse_range(s: &str, what: &str) -> Result<Vec<u32>, String> {
    match s.split_once('-') {
        // `-1` is a (negative) port, not a range with no start.
        Some((a, b)) if !a.trim().is_empty() => {
            let (a, b) = (parse_port(a, what)?, parse_port(b, what)?);
            if b < a {
                return Err(format!("{what} port range {s} ends before it starts"));
            }
            Ok((a..=b).collect())
        }
        _ => Ok(vec![parse_port(s, what)?]),
    }
}

#[cfg(test)]
mod proxy_tests;
