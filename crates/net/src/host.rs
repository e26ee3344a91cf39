//! What the host's own network uses in the current namespace: the networks of
//! its IPv4 addresses and the destinations of its IPv4 routes, so an address
//! pool ([`crate::free_subnet`]) never hands out a subnet the host reaches
//! something through.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::RouteMessageBuilder;

use crate::cidr::Ipv4Cidr;
use crate::error::NetError;
use crate::link::{find_link, with_netlink};

/// The IPv4 networks the current namespace uses: the network of every
/// address and every route destination (default routes excluded: they cover
/// everything and take nothing), leaving out the links named in `ignore`
/// (shoald's own bridge and VXLAN device, left from an earlier run).
/// Loopback (127.0.0.0/8) is included like any other network.
pub async fn host_subnets(ignore: &[&str]) -> Result<Vec<Ipv4Cidr>, NetError> {
    let op = "list the host's addresses and routes";
    with_netlink(op, |handle| async move {
        let mut ignored = BTreeSet::new();
        for name in ignore {
            if let Some(link) = find_link(&handle, name)
                .await
                .map_err(|e| NetError::netlink(op, e))?
            {
                ignored.insert(link.header.index);
            }
        }
        let mut subnets = BTreeSet::new();
        let mut addresses = handle.address().get().execute();
        while let Some(msg) = addresses
            .try_next()
            .await
            .map_err(|e| NetError::netlink(op, e))?
        {
            if ignored.contains(&msg.header.index) {
                continue;
            }
            let prefix = msg.header.prefix_len;
            for attr in &msg.attributes {
                if let AddressAttribute::Local(IpAddr::V4(addr))
                | AddressAttribute::Address(IpAddr::V4(addr)) = attr
                {
                    if let Some(c) = Ipv4Cidr::new(*addr, prefix) {
                        subnets.insert(c.network());
                    }
                }
            }
        }
        let mut routes = handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(msg) = routes
            .try_next()
            .await
            .map_err(|e| NetError::netlink(op, e))?
        {
            let prefix = msg.header.destination_prefix_length;
            let oif = msg.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            if prefix == 0 || oif.is_some_and(|i| ignored.contains(&i)) {
                continue;
            }
            let dst = msg.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
                _ => None,
            });
            if let Some(c) = dst.and_then(|d| Ipv4Cidr::new(d, prefix)) {
                subnets.insert(c.network());
            }
        }
        Ok(subnets.into_iter().collect())
    })
    .await
}
