//! The name servers a host resolves through (`nameserver` lines of
//! `resolv.conf(5)`), so an address pool never takes the route to one.

use std::net::Ipv4Addr;

/// The IPv4 `nameserver` addresses of a `resolv.conf` text, in order.
/// Comments (`#`, `;`), other keywords, IPv6 servers and malformed lines are
/// skipped, as the resolver itself skips them.
pub fn nameservers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // `nameserver 10.0.0.53%eth0` is not IPv4-with-zone; skip it too.
            words.next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn reads_ipv4_name_servers_and_skips_the_rest() {
        let text = "# generated\nsearch example.com\nnameserver 10.255.255.53\n\
                    nameserver ::1\n;nameserver 1.1.1.1\n  nameserver   192.0.2.9  # office\n\
                    nameserver\nnameserver bogus\noptions ndots:2\n";
        assert_eq!(
            nameservers(text),
            vec![Ipv4Addr::new(10, 255, 255, 53), Ipv4Addr::new(192, 0, 2, 9)]
        );
    }

    proptest! {
        #[test]
        fn any_text_parses_without_panicking(text in ".{0,400}") {
            let _ = nameservers(&text);
        }

        #[test]
        fn printed_servers_read_back(servers in prop::collection::vec(any::<u32>(), 0..5)) {
            let servers: Vec<Ipv4Addr> = servers.into_iter().map(Ipv4Addr::from).collect();
            let text: String = servers.iter().map(|s| format!("nameserver {s}\n")).collect();
            prop_assert_eq!(nameservers(&text), servers);
        }
    }
}
