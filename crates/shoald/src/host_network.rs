//! What a node may take of its host's network: the advertise address it is
//! given at `swarm init` / `swarm join`, an ingress subnet from the address
//! pools that overlaps none of the host's addresses, routes and name servers,
//! and the links it removes again on `swarm leave` and at exit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use shoal_manager::allocator::{DEFAULT_ADDR_POOL, DEFAULT_SUBNET_SIZE, INGRESS_PREFIX};
use shoal_net::Ipv4Cidr;

/// Where the host's resolver configuration lives (`ip netns exec` binds
/// `/etc/netns/<ns>/resolv.conf` over it, so a test namespace has its own).
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// At most this many `--default-addr-pool` entries.
pub const MAX_ADDR_POOLS: usize = 32;

/// The address an `--advertise-addr` value names: an IP (`192.0.2.10`), an
/// IP with this node's swarm port (`192.0.2.10:2377`) or a network interface
/// of this host (`eth0`, its first IPv4 address), as Docker takes it.
pub fn parse_advertise_addr(value: &str, listen_port: u16) -> Result<Ipv4Addr, String> {
    let hint = "give this node's IPv4 address or interface, e.g. --advertise-addr 192.0.2.10 or --advertise-addr eth0";
    let value = value.trim();
    let ip = if let Ok(ip) = value.parse::<IpAddr>() {
        ip
    } else if let Ok(sa) = value.parse::<SocketAddr>() {
        if sa.port() != listen_port {
            return Err(format!(
                "--advertise-addr {value:?}: this node serves other nodes on port {listen_port} (--listen-addr); leave the port out or use {listen_port}"
            ));
        }
        sa.ip()
    } else if is_interface_name(value) {
        return interface_ipv4(value).ok_or_else(|| {
            format!("--advertise-addr {value:?}: no network interface of this host has that name and an IPv4 address; {hint}")
        });
    } else {
        return Err(format!(
            "--advertise-addr {value:?}: not an IP address or a network interface; {hint}"
        ));
    };
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() => Err(
            format!("--advertise-addr {value:?}: other nodes cannot reach this node there; {hint}"),
        ),
        IpAddr::V4(v4) => Ok(v4),
        IpAddr::V6(_) => Err(format!(
            "--advertise-addr {value:?}: the overlay runs over IPv4 only; {hint}"
        )),
    }
}

/// A Linux interface name: 1-15 characters, no `/`, whitespace or `:`.
fn is_interface_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

fn interface_ipv4(name: &str) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.interface_name == name)
        .find_map(|a| Some(a.address?.as_sockaddr_in()?.ip()))
}

/// `--default-addr-pool` and `--default-addr-pool-mask-length`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressPools {
    /// The pools, in the order subnets are taken from them.
    pub pools: Vec<Ipv4Cidr>,
    /// Prefix length of each network's subnet.
    pub subnet_size: u8,
}

impl AddressPools {
    /// Docker's rules: pools are IPv4 unicast CIDRs, the mask length is at
    /// least every pool's prefix and at most 29. Empty / 0 take Docker's
    /// defaults (10.0.0.0/8, 24).
    pub fn parse(pools: &[String], mask_length: u32) -> Result<AddressPools, String> {
        if pools.len() > MAX_ADDR_POOLS {
            return Err(format!(
                "--default-addr-pool: {} pools given; give at most {MAX_ADDR_POOLS}",
                pools.len()
            ));
        }
        let defaults = [DEFAULT_ADDR_POOL.to_string()];
        let pools = if pools.is_empty() {
            &defaults[..]
        } else {
            pools
        };
        let mut parsed = Vec::with_capacity(pools.len());
        for p in pools {
            let c: Ipv4Cidr = p.trim().parse().map_err(|_| {
                format!("--default-addr-pool {p:?}: not an IPv4 CIDR; use the form 10.0.0.0/8")
            })?;
            if c != c.network() {
                return Err(format!(
                    "--default-addr-pool {p:?}: host bits are set; use the network address {}",
                    c.network()
                ));
            }
            if c.addr.is_multicast()
                || c.addr.is_loopback()
                || c.addr.octets()[0] >= 224
                || c.prefix < 8
            {
                return Err(format!(
                    "--default-addr-pool {p:?}: not a private unicast range of at most a /8; use e.g. 10.0.0.0/8 or 172.16.0.0/12"
                ));
            }
            parsed.push(c);
        }
        let size = if mask_length == 0 {
            DEFAULT_SUBNET_SIZE
        } else {
            mask_length
        };
        let widest = parsed.iter().map(|c| c.prefix).max().unwrap_or(8);
        if size > 29 || size < u32::from(widest) {
            return Err(format!(
                "--default-addr-pool-mask-length {size}: must be from {widest} (the pools' prefix length) to 29"
            ));
        }
        Ok(AddressPools {
            pools: parsed,
            subnet_size: size as u8,
        })
    }

    /// The pools as the cluster object stores them.
    pub fn to_strings(&self) -> Vec<String> {
        self.pools.iter().map(|c| c.to_string()).collect()
    }
}

/// The networks this host uses in shoald's namespace: its addresses' and
/// routes' networks (apart from shoald's own `ignore` links) and a /32 per
/// name server.
pub async fn host_networks(ignore: &[&str]) -> anyhow::Result<Vec<Ipv4Cidr>> {
    let mut taken = shoal_net::host_subnets(ignore).await?;
    let resolv = std::fs::read_to_string(RESOLV_CONF).unwrap_or_default();
    taken.extend(
        shoal_net::nameservers(&resolv)
            .into_iter()
            .filter_map(|ip| Ipv4Cidr::new(ip, 32)),
    );
    Ok(taken)
}

/// The ingress subnet for a new cluster: the first [`INGRESS_PREFIX`] (or a
/// smaller pool whole) that overlaps nothing in `taken`.
pub fn choose_ingress_subnet(pools: &AddressPools, taken: &[Ipv4Cidr]) -> Result<Ipv4Cidr, String> {
    shoal_net::free_subnet(&pools.pools, INGRESS_PREFIX, taken).ok_or_else(|| {
        let list: Vec<String> = pools.to_strings();
        // A pool smaller than the ingress prefix offers itself whole.
        let size = pools
            .pools
            .iter()
            .map(|p| p.prefix.max(INGRESS_PREFIX))
            .min()
            .unwrap_or(INGRESS_PREFIX);
        format!(
            "--default-addr-pool {}: no free /{size} left for the ingress network: each overlaps an address, route or name server of this host; give a range this host does not use, e.g. --default-addr-pool 172.30.0.0/16",
            list.join(",")
        )
    })
}

/// Why `subnet` cannot be this host's ingress network, if it overlaps one
/// of the host's networks.
pub fn ingress_conflict(subnet: Ipv4Cidr, taken: &[Ipv4Cidr]) -> Option<String> {
    taken
        .iter()
        .find(|t| shoal_net::overlaps(**t, subnet))
        .map(|t| {
            format!(
                "the swarm's ingress subnet {subnet} overlaps {t}, which this host uses (an address, route or name server); this node cannot join without taking it"
            )
        })
}

/// Removes shoald's own links (the ingress bridge, with its route, and the
/// VXLAN device); absent ones are fine.
pub async fn remove_links(bridge: &str, vxlan: &str) {
    for link in [vxlan, bridge] {
        match shoal_net::delete_link(link).await {
            Ok(()) => tracing::info!(link, "removed"),
            Err(e) => tracing::warn!("remove link {link}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
