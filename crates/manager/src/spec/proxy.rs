//! The PROXY protocol setting of published ports: per port
//! (`--publish ...,proxy-protocol=v2`, stored as `PortConfig.proxy_protocol`)
//! or for every TCP port of a service by the label
//! [`PROXY_PROTOCOL_LABEL`], which a compose file or any API client can set.
//! A port's own setting wins over the label.

use std::collections::HashMap;

use shoal_api::pb::{PortConfig, ServiceSpec};

/// The service label that asks for a PROXY protocol header (`v1` or `v2`)
/// on every TCP port of the service that does not set its own.
pub const PROXY_PROTOCOL_LABEL: &str = "com.shoal.mesh.proxy-protocol";

/// Checks each port's `proxy_protocol` and the label.
pub fn validate(spec: &ServiceSpec) -> Result<(), String> {
    for p in &spec.ports {
        match p.proxy_protocol.as_str() {
            "" => {}
            "v1" | "v2" => {
                if !matches!(p.protocol.as_str(), "" | "tcp") {
                    return Err(format!(
                        "ports: proxy-protocol is for tcp ports only: {}/{} has no standard PROXY header; remove proxy-protocol",
                        p.target_port, p.protocol
                    ));
                }
            }
            other => {
                return Err(format!(
                    "ports: invalid proxy-protocol {other:?}: use v1 or v2"
                ))
            }
        }
    }
    match spec.labels.get(PROXY_PROTOCOL_LABEL).map(String::as_str) {
        None | Some("v1" | "v2") => Ok(()),
        Some(other) => Err(format!(
            "labels: invalid {PROXY_PROTOCOL_LABEL}={other:?}: use v1 or v2"
        )),
    }
}

/// The PROXY protocol version `port` sends: its own, else the label's for a
/// TCP port, else none ("").
pub fn effective(labels: &HashMap<String, String>, port: &PortConfig) -> String {
    if !port.proxy_protocol.is_empty() {
        return port.proxy_protocol.clone();
    }
    if !matches!(port.protocol.as_str(), "" | "tcp") {
        return String::new();
    }
    match labels.get(PROXY_PROTOCOL_LABEL).map(String::as_str) {
        Some(v @ ("v1" | "v2")) => v.to_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(protocol: &str, proxy: &str) -> PortConfig {
        PortConfig {
            protocol: protocol.into(),
            target_port: 80,
            published_port: 8080,
            publish_mode: "ingress".into(),
            proxy_protocol: proxy.into(),
            ..Default::default()
        }
    }

    fn spec(ports: Vec<PortConfig>, label: Option<&str>) -> ServiceSpec {
        let mut spec = ServiceSpec {
            ports,
            ..Default::default()
        };
        if let Some(v) = label {
            spec.labels.insert(PROXY_PROTOCOL_LABEL.into(), v.into());
        }
        spec
    }

    #[test]
    fn ports_and_label_take_v1_or_v2_only() {
        assert!(validate(&spec(vec![port("tcp", "v1"), port("tcp", "")], Some("v2"))).is_ok());
        let err = validate(&spec(vec![port("tcp", "v3")], None)).unwrap_err();
        assert_eq!(err, "ports: invalid proxy-protocol \"v3\": use v1 or v2");
        let err = validate(&spec(vec![], Some("v3"))).unwrap_err();
        assert_eq!(
            err,
            "labels: invalid com.shoal.mesh.proxy-protocol=\"v3\": use v1 or v2"
        );
        let err = validate(&spec(vec![port("udp", "v2")], None)).unwrap_err();
        assert!(
            err.contains("proxy-protocol is for tcp ports only"),
            "{err}"
        );
    }

    #[test]
    fn a_ports_own_setting_wins_and_the_label_covers_tcp_ports() {
        let labels = spec(vec![], Some("v1")).labels;
        assert_eq!(effective(&labels, &port("tcp", "v2")), "v2");
        assert_eq!(effective(&labels, &port("tcp", "")), "v1");
        assert_eq!(effective(&labels, &port("", "")), "v1");
        assert_eq!(effective(&labels, &port("udp", "")), "");
        assert_eq!(effective(&HashMap::new(), &port("tcp", "")), "");
    }
}
