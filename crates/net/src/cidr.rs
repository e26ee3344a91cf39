//! IPv4 address plus prefix length ("10.255.0.1/16").

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 interface address with its prefix length, e.g. `10.255.0.7/16`.
///
/// `addr` may be any address inside the network (an interface address), not only the
/// network address; [`Ipv4Cidr::network`] masks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    /// The address itself (host bits kept).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

/// Why a string is not an `a.b.c.d/len` CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv4 CIDR {input:?}: {reason}")]
pub struct CidrParseError {
    /// The rejected input.
    pub input: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

// === impl Ipv4Cidr ===

impl Ipv4Cidr {
    /// A CIDR from an address and a prefix length; `None` when `prefix > 32`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Self { addr, prefix })
    }

    /// The netmask, e.g. `255.255.0.0` for a /16.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask_bits())
    }

    /// The network this address belongs to (host bits cleared, same prefix).
    pub fn network(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(self.addr) & self.mask_bits()),
            prefix: self.prefix,
        }
    }

    /// The broadcast address of the network.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask_bits())
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask_bits() == u32::from(self.addr) & self.mask_bits()
    }

    /// The `n`-th host address of the network (`nth_host(1)` of `10.255.0.0/16` is
    /// `10.255.0.1`). `None` for the network address (0), the broadcast address and beyond;
    /// /31 and /32 networks have no reserved addresses.
    pub fn nth_host(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix.min(32)));
        let (first, end) = if self.prefix >= 31 {
            (0, size)
        } else {
            (1, size - 1)
        };
        let n64 = u64::from(n);
        if n64 < first || n64 >= end {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.network().addr) + n))
    }

    /// The same prefix with another address (e.g. a task address in the gateway's network).
    pub fn with_addr(&self, addr: Ipv4Addr) -> Ipv4Cidr {
        Ipv4Cidr {
            addr,
            prefix: self.prefix,
        }
    }

    fn mask_bits(&self) -> u32 {
        match self.prefix.min(32) {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p)),
        }
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| CidrParseError {
            input: s.to_string(),
            reason,
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(|| err("missing /prefix"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err("bad IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| err("bad prefix length"))?;
        Ipv4Cidr::new(addr, prefix).ok_or_else(|| err("prefix length above 32"))
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_display_round_trip() {
        let c = cidr("10.255.0.1/16");
        assert_eq!(c.addr, Ipv4Addr::new(10, 255, 0, 1));
        assert_eq!(c.prefix, 16);
        assert_eq!(c.to_string(), "10.255.0.1/16");
    }

    #[test]
    fn parse_rejects_malformed_input() {
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "10.0.0/8",
            "10.0.0.1/x",
            "/8",
            "",
        ] {
            let e = bad.parse::<Ipv4Cidr>().unwrap_err();
            assert_eq!(e.input, bad);
        }
    }

    #[test]
    fn network_mask_broadcast() {
        let c = cidr("10.255.3.7/16");
        assert_eq!(c.network(), cidr("10.255.0.0/16"));
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 255, 255, 255));
        assert_eq!(cidr("0.0.0.0/0").netmask(), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn contains_checks_the_network_part_only() {
        let c = cidr("10.255.0.1/16");
        assert!(c.contains(Ipv4Addr::new(10, 255, 200, 9)));
        assert!(!c.contains(Ipv4Addr::new(10, 254, 0, 1)));
        assert!(cidr("0.0.0.0/0").contains(Ipv4Addr::new(8, 8, 8, 8)));
        assert!(!cidr("10.0.0.1/32").contains(Ipv4Addr::new(10, 0, 0, 2)));
    }

    #[test]
    fn nth_host_skips_network_and_broadcast() {
        let c = cidr("10.77.9.9/24");
        assert_eq!(c.nth_host(0), None);
        assert_eq!(c.nth_host(1), Some(Ipv4Addr::new(10, 77, 9, 1)));
        assert_eq!(c.nth_host(254), Some(Ipv4Addr::new(10, 77, 9, 254)));
        assert_eq!(c.nth_host(255), None);
        assert_eq!(
            cidr("10.0.0.0/31").nth_host(0),
            Some(Ipv4Addr::new(10, 0, 0, 0))
        );
        assert_eq!(cidr("10.0.0.5/32").nth_host(1), None);
        assert_eq!(
            cidr("0.0.0.0/0").nth_host(u32::MAX - 1),
            Some(Ipv4Addr::new(255, 255, 255, 254))
        );
    }
}
