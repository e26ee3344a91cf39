use proptest::prelude::*;

use super::*;

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

#[test]
fn advertise_addr_takes_an_ip_an_ip_with_the_swarm_port_or_an_interface() {
    assert_eq!(
        parse_advertise_addr("192.0.2.10", 2377),
        Ok(Ipv4Addr::new(192, 0, 2, 10))
    );
    assert_eq!(
        parse_advertise_addr("192.0.2.10:2377", 2377),
        Ok(Ipv4Addr::new(192, 0, 2, 10))
    );
    assert_eq!(parse_advertise_addr("lo", 2377), Ok(Ipv4Addr::LOCALHOST));
}

#[test]
fn a_bad_advertise_addr_is_one_line_naming_the_flag_and_the_fix() {
    for bad in [
        "bogus addr!",
        "0.0.0.0",
        "::1",
        "192.0.2.10:80",
        "nosuchif0",
        "",
        "1.2.3.4.5",
    ] {
        let err = parse_advertise_addr(bad, 2377).unwrap_err();
        assert!(err.starts_with("--advertise-addr"), "{bad}: {err}");
        assert!(
            !err.contains('\n') && !err.contains("restart"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn pools_default_to_dockers() {
    let p = AddressPools::parse(&[], 0).unwrap();
    assert_eq!(p.pools, vec![cidr("10.0.0.0/8")]);
    assert_eq!(p.subnet_size, 24);
}

#[test]
fn bad_pools_are_refused_with_the_flag_named() {
    let cases: &[(&[&str], u32, &str)] = &[
        (
            &["10.0.0.0"],
            0,
            "--default-addr-pool \"10.0.0.0\": not an IPv4 CIDR",
        ),
        (
            &["10.0.0.1/8"],
            0,
            "host bits are set; use the network address 10.0.0.0/8",
        ),
        (&["224.0.0.0/8"], 0, "not a private unicast range"),
        (&["0.0.0.0/0"], 0, "not a private unicast range"),
        (
            &["10.0.0.0/16"],
            8,
            "--default-addr-pool-mask-length 8: must be from 16",
        ),
        (&["10.0.0.0/8"], 31, "--default-addr-pool-mask-length 31"),
    ];
    for (pools, mask, want) in cases {
        let pools: Vec<String> = pools.iter().map(|s| s.to_string()).collect();
        let err = AddressPools::parse(&pools, *mask).unwrap_err();
        assert!(err.contains(want), "{pools:?}/{mask}: {err}");
    }
    let many: Vec<String> = (0..33).map(|i| format!("10.{i}.0.0/16")).collect();
    assert!(AddressPools::parse(&many, 0)
        .unwrap_err()
        .contains("at most 32"));
}

#[test]
fn ingress_skips_what_the_host_uses_and_says_so_when_nothing_is_left() {
    let pools = AddressPools::parse(&["10.0.0.0/8".into()], 0).unwrap();
    let taken = [cidr("10.0.5.0/24"), cidr("10.1.255.53/32")];
    assert_eq!(
        choose_ingress_subnet(&pools, &taken),
        Ok(cidr("10.2.0.0/16"))
    );
    let small = AddressPools::parse(&["10.0.5.0/24".into()], 24).unwrap();
    let err = choose_ingress_subnet(&small, &taken).unwrap_err();
    assert!(
        err.starts_with("--default-addr-pool 10.0.5.0/24: no free /24 left"),
        "{err}"
    );
    assert!(ingress_conflict(cidr("10.0.0.0/16"), &taken)
        .unwrap()
        .contains("10.0.5.0/24"));
    assert_eq!(ingress_conflict(cidr("10.9.0.0/16"), &taken), None);
}

proptest! {
    #[test]
    fn any_advertise_addr_parses_or_is_refused_in_one_line(s in ".{0,40}") {
        if let Err(e) = parse_advertise_addr(&s, 2377) {
            prop_assert!(e.starts_with("--advertise-addr"));
        }
    }

    #[test]
    fn any_pool_list_parses_or_is_refused_and_what_parses_prints_back(
        pools in prop::collection::vec(".{0,24}|[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}/[0-9]{1,2}", 0..4),
        mask in 0u32..40,
    ) {
        if let Ok(p) = AddressPools::parse(&pools, mask) {
            let again = AddressPools::parse(&p.to_strings(), u32::from(p.subnet_size));
            prop_assert_eq!(again, Ok(p));
        }
    }
}
