//! Property tests of the ingress subnet text: any text is parsed or refused
//! without panic, and a parsed subnet is its own network.

use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;

proptest! {
    #[test]
    fn any_subnet_text_parses_or_is_refused(text in "[0-9.]{0,16}/?[0-9]{0,3}|.{0,24}") {
        if let Some((net, len)) = parse_subnet(&text) {
            prop_assert!(len <= 30);
            let _ = gateway(&text);
            prop_assert_eq!(parse_subnet(&format!("{net}/{len}")), Some((net, len)));
        }
    }

    #[test]
    fn a_printed_subnet_reads_back(addr in any::<u32>(), len in 0u8..=30) {
        let (net, got) = parse_subnet(&format!("{}/{len}", Ipv4Addr::from(addr))).unwrap();
        prop_assert_eq!(got, len);
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        prop_assert_eq!(u32::from(net), addr & mask);
    }
}
