//! Property tests of CIDR text: any text is parsed or refused without panic,
//! and what `Display` prints reads back.

use proptest::prelude::*;

use super::*;

proptest! {
    #[test]
    fn any_cidr_text_parses_or_is_refused(text in "[0-9.]{0,16}/?[0-9]{0,3}|.{0,24}") {
        if let Ok(c) = text.parse::<Ipv4Cidr>() {
            prop_assert!(c.prefix <= 32);
            prop_assert_eq!(c.to_string().parse::<Ipv4Cidr>().unwrap(), c);
            let _ = c.network();
            let _ = c.nth_host(1);
        }
    }

    #[test]
    fn printed_cidrs_read_back(addr in any::<u32>(), prefix in 0u8..=32, n in any::<u32>()) {
        let c = Ipv4Cidr::new(Ipv4Addr::from(addr), prefix).unwrap();
        prop_assert_eq!(c.to_string().parse::<Ipv4Cidr>().unwrap(), c);
        if let Some(host) = c.nth_host(n) {
            prop_assert_eq!(c.with_addr(host).network(), c.network());
        }
    }
}
