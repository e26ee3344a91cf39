//! The `proxy-protocol` key of `--publish`.

use proptest::prelude::*;

use super::{parse_proxy_protocol, parse_publish};

fn one(v: &str) -> shoal_api::pb::PortConfig {
    let mut ports = parse_publish(v).unwrap();
    assert_eq!(ports.len(), 1);
    ports.remove(0)
}

#[test]
fn proxy_protocol_takes_v1_or_v2_and_alone_means_v2() {
    assert_eq!(
        one("published=8080,target=80,proxy-protocol=v1").proxy_protocol,
        "v1"
    );
    assert_eq!(
        one("published=8080,target=80,proxy-protocol=V2").proxy_protocol,
        "v2"
    );
    assert_eq!(
        one("published=8080,target=80,proxy-protocol").proxy_protocol,
        "v2"
    );
    assert_eq!(one("published=8080,target=80").proxy_protocol, "");
    assert_eq!(one("8080:80").proxy_protocol, "");
}

#[test]
fn proxy_protocol_v3_and_udp_are_refused_in_one_line() {
    let err = |v: &str| parse_publish(v).unwrap_err().to_string();
    let v3 = err("published=8080,target=80,proxy-protocol=v3");
    assert!(
        v3.contains("invalid proxy-protocol \"v3\": must be v1 or v2"),
        "{v3}"
    );
    assert!(!v3.contains('\n'), "{v3}");
    let udp = err("published=53,target=53,protocol=udp,proxy-protocol=v2");
    assert!(
        udp.contains("proxy-protocol is for tcp ports only"),
        "{udp}"
    );
}

proptest! {
    /// Exactly v1 and v2 (any case, any surrounding blanks) are accepted,
    /// and what is stored is their lowercase name.
    #[test]
    fn proxy_protocol_parser_accepts_only_v1_and_v2(v in "[ vV0-9a-z]{0,6}|.{0,8}") {
        match parse_proxy_protocol(&v) {
            Ok(version) => {
                prop_assert!(["v1", "v2"].contains(&version));
                prop_assert_eq!(v.trim().to_ascii_lowercase(), version);
            }
            Err(e) => prop_assert!(e.starts_with("invalid proxy-protocol")),
        }
        let _ = parse_publish(&format!("target=80,proxy-protocol={v}"));
    }
}
