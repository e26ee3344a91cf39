//! Choosing a subnet from address pools that overlaps nothing the host uses
//! (`swarm init --default-addr-pool`). Sans-IO: the host's subnets come from
//! [`crate::host_subnets`] and [`crate::nameservers`].

use std::net::Ipv4Addr;

use crate::cidr::Ipv4Cidr;

/// Whether two networks share an address.
pub fn overlaps(a: Ipv4Cidr, b: Ipv4Cidr) -> bool {
    let (a_start, a_end) = range(a);
    let (b_start, b_end) = range(b);
    a_start <= b_end && b_start <= a_end
}

/// First and last address of a network, as integers (u64, so /0 fits).
fn range(c: Ipv4Cidr) -> (u64, u64) {
    let start = u64::from(u32::from(c.network().addr));
    (
        start,
        start + (1u64 << (32 - u32::from(c.prefix.min(32)))) - 1,
    )
}

/// The first subnet of `prefix` bits inside one of `pools` (tried in order)
/// that overlaps none of `taken`. A pool smaller than `prefix` offers itself
/// whole. Runs in O(pools × taken) however large the pools are: a candidate
/// that overlaps a taken network jumps past it.
pub fn free_subnet(pools: &[Ipv4Cidr], prefix: u8, taken: &[Ipv4Cidr]) -> Option<Ipv4Cidr> {
    let mut taken: Vec<(u64, u64)> = taken.iter().map(|t| range(*t)).collect();
    taken.sort_unstable();
    for pool in pools {
        let pool = pool.network();
        let prefix = prefix.clamp(pool.prefix, 32);
        let (pool_start, pool_end) = range(pool);
        let size = 1u64 << (32 - u32::from(prefix));
        let mut start = pool_start;
        while start + size - 1 <= pool_end {
            let end = start + size - 1;
            match taken.iter().find(|(s, e)| *s <= end && start <= *e) {
                None => {
                    let addr = Ipv4Addr::from(u32::try_from(start).ok()?);
                    return Ipv4Cidr::new(addr, prefix);
                }
                // The next aligned candidate after the taken network.
                Some((_, taken_end)) => start = (taken_end / size + 1) * size,
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_subnet_of_the_pool_when_nothing_is_taken() {
        let got = free_subnet(&[cidr("10.0.0.0/8")], 16, &[]);
        assert_eq!(got, Some(cidr("10.0.0.0/16")));
    }

    #[test]
    fn skips_host_addresses_routes_and_name_servers() {
        let taken = [
            cidr("10.0.3.0/24"),    // a route
            cidr("10.1.255.53/32"), // a name server
            cidr("10.2.0.7/8"),     // an address whose network covers all of 10/8...
        ];
        assert_eq!(free_subnet(&[cidr("10.0.0.0/8")], 16, &taken), None);
        let taken = &taken[..2];
        assert_eq!(
            free_subnet(&[cidr("10.0.0.0/8")], 16, taken),
            Some(cidr("10.2.0.0/16"))
        );
    }

    #[test]
    fn the_resolver_of_this_workplace_is_left_alone() {
        // 10.255.255.53 served DNS on a machine where the old fixed
        // 10.255.0.0/16 ingress took it away.
        let taken = [cidr("10.255.255.53/32")];
        let got = free_subnet(&[cidr("10.255.0.0/16")], 16, &taken);
        assert_eq!(got, None);
        let got = free_subnet(&[cidr("10.254.0.0/15")], 16, &taken);
        assert_eq!(got, Some(cidr("10.254.0.0/16")));
    }

    #[test]
    fn later_pools_are_tried_in_order_and_small_pools_offer_themselves() {
        let pools = [cidr("192.168.7.0/24"), cidr("172.30.0.0/16")];
        let taken = [cidr("192.168.7.128/25")];
        assert_eq!(free_subnet(&pools, 16, &taken), Some(cidr("172.30.0.0/16")));
        assert_eq!(free_subnet(&pools, 16, &[]), Some(cidr("192.168.7.0/24")));
    }

    #[test]
    fn a_huge_pool_with_tiny_subnets_answers_at_once() {
        let taken: Vec<Ipv4Cidr> = (0..200)
            .map(|i| Ipv4Cidr::new(Ipv4Addr::new(10, i, 0, 0), 16).unwrap())
            .collect();
        let got = free_subnet(&[cidr("10.0.0.0/8")], 30, &taken);
        assert_eq!(got, Some(cidr("10.200.0.0/30")));
    }

    proptest! {
        #[test]
        fn what_is_chosen_lies_in_a_pool_and_overlaps_nothing_taken(
            pools in prop::collection::vec((any::<u32>(), 0u8..=32), 0..4),
            taken in prop::collection::vec((any::<u32>(), 0u8..=32), 0..12),
            prefix in 0u8..=32,
        ) {
            let pools: Vec<Ipv4Cidr> = pools.into_iter()
                .map(|(a, p)| Ipv4Cidr::new(Ipv4Addr::from(a), p).unwrap()).collect();
            let taken: Vec<Ipv4Cidr> = taken.into_iter()
                .map(|(a, p)| Ipv4Cidr::new(Ipv4Addr::from(a), p).unwrap()).collect();
            if let Some(got) = free_subnet(&pools, prefix, &taken) {
                prop_assert_eq!(got, got.network());
                let (gs, ge) = range(got);
                let inside = pools.iter().map(|p| range(*p)).any(|(ps, pe)| ps <= gs && ge <= pe);
                prop_assert!(inside, "{} is in no pool", got);
                prop_assert!(!taken.iter().any(|t| overlaps(*t, got)));
            }
        }
    }
}
