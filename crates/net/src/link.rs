//! Links in the current network namespace: the ingress bridge, a link's MAC, deletion, inspection.
//!
//! Each public operation opens its own rtnetlink socket in the calling thread's namespace and
//! drives the connection only for the duration of the call (no background task is left
//! behind, and it works on any tokio runtime flavour).

use std::future::Future;
use std::io;
use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec};

use crate::cidr::Ipv4Cidr;
use crate::error::{netlink_errno, NetError};
use crate::mac::{format_mac, mac_for_ip};

/// What [`link_state`] reports about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// Interface index in the current namespace.
    pub index: u32,
    /// Whether the link is administratively up (`IFF_UP`).
    pub up: bool,
    /// Link kind (`bridge`, `veth`, ...); `None` for devices without one (physical, `lo`).
    pub kind: Option<String>,
    /// IPv4 addresses assigned to the link.
    pub ipv4: Vec<Ipv4Cidr>,
    /// Hardware address, if the link has a 6-byte one (`lo` has all zeros).
    pub mac: Option<[u8; 6]>,
    /// MTU, if the kernel reported one.
    pub mtu: Option<u32>,
}

/// Create the bridge `name` if absent, bring it up and make sure it has `gateway`
/// (e.g. `10.255.0.1/16`, the node's own address in the ingress subnet) and the MAC
/// [`mac_for_ip`]`(gateway.addr)`. Idempotent: an existing bridge, address or MAC is fine.
pub async fn ensure_bridge(name: &str, gateway: Ipv4Cidr) -> Result<(), NetError> {
    validate_link_name(name)?;
    let op = &format!("ensure bridge {name}");
    with_netlink(op, |handle| async move {
        let link = match find_link(&handle, name)
            .await
            .map_err(|e| NetError::netlink(op, e))?
        {
            Some(link) => link,
            None => {
                let add = handle
                    .link()
                    .add(LinkBridge::new(name).build())
                    .execute()
                    .await;
                match add {
                    Ok(()) => tracing::debug!(bridge = name, "created bridge"),
                    // Someone else created it between our lookup and add.
                    Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(NetError::netlink(format!("create bridge {name}"), e)),
                }
                find_link(&handle, name)
                    .await
                    .map_err(|e| NetError::netlink(op, e))?
                    .ok_or_else(|| NetError::LinkNotFound {
                        op: op.to_string(),
                        link: name.to_string(),
                    })?
            }
        };
        match link_kind(&link) {
            Some(kind) if kind == "bridge" => {}
            kind => {
                return Err(NetError::NotABridge {
                    link: name.to_string(),
                    kind: kind.unwrap_or_else(|| "none".to_string()),
                })
            }
        }
        let index = link.header.index;
        set_mac_if_needed(&handle, &link, name, mac_for_ip(gateway.addr)).await?;
        if !link.header.flags.contains(LinkFlags::Up) {
            set_up(&handle, index, name).await?;
        }
        add_address(&handle, index, name, gateway, true).await
    })
    .await
}

/// Delete the link `name` (for a veth, its peer goes with it). Idempotent: absent is `Ok`.
pub async fn delete_link(name: &str) -> Result<(), NetError> {
    let op = &format!("delete link {name}");
    with_netlink(op, |handle| async move {
        let Some(link) = find_link(&handle, name)
            .await
            .map_err(|e| NetError::netlink(op, e))?
        else {
            return Ok(());
        };
        match handle.link().del(link.header.index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(NetError::netlink(op, e)),
        }
    })
    .await
}

/// Index, up flag, kind, IPv4 addresses, MAC and MTU of the link `name`; `None` if there is no such
/// link in the current namespace.
pub async fn link_state(name: &str) -> Result<Option<LinkState>, NetError> {
    let op = &format!("get link {name}");
    with_netlink(op, |handle| async move {
        let Some(link) = find_link(&handle, name)
            .await
            .map_err(|e| NetError::netlink(op, e))?
        else {
            return Ok(None);
        };
        let index = link.header.index;
        let ipv4 = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_filter_map(|msg| async move {
                let prefix = msg.header.prefix_len;
                // Only the kernel's dump filter is by index on strict sockets; filter again.
                if msg.header.index != index {
                    return Ok(None);
                }
                Ok(msg.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Local(IpAddr::V4(addr))
                    | AddressAttribute::Address(IpAddr::V4(addr)) => Some(Ipv4Cidr {
                        addr: *addr,
                        prefix,
                    }),
                    _ => None,
                }))
            })
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| NetError::netlink(format!("get addresses of link {name}"), e))?;
        Ok(Some(LinkState {
            index,
            up: link.header.flags.contains(LinkFlags::Up),
            kind: link_kind(&link),
            ipv4,
            mac: link_mac(&link),
            mtu: link_mtu(&link),
        }))
    })
    .await
}

/// Set the hardware address of the link `name` (e.g. a bridge to `mac_for_ip(node_ip)`).
/// Idempotent: an equal address is left alone.
pub async fn set_link_mac(name: &str, mac: [u8; 6]) -> Result<(), NetError> {
    let op = &format!("set mac {} on link {name}", format_mac(&mac));
    with_netlink(op, |handle| async move {
        let link = find_link(&handle, name)
            .await
            .map_err(|e| NetError::netlink(op, e))?
            .ok_or_else(|| NetError::LinkNotFound {
                op: op.to_string(),
                link: name.to_string(),
            })?;
        set_mac_if_needed(&handle, &link, name, mac).await
    })
    .await
}

// === crate-internal netlink helpers ===

/// Open an rtnetlink socket in the calling thread's namespace and run `work` with its handle,
/// driving the connection until `work` finishes.
pub(crate) async fn with_netlink<T, F, Fut>(op: &str, work: F) -> Result<T, NetError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, NetError>>,
{
    let (connection, handle, _) = rtnetlink::new_connection()
        .map_err(|e| NetError::os(format!("{op}: open rtnetlink socket"), e))?;
    tokio::select! {
        result = work(handle) => result,
        () = connection => Err(NetError::Netlink {
            op: op.to_string(),
            source: io::Error::other("rtnetlink connection closed"),
        }),
    }
}

/// The link called `name`, or `None` (ENODEV).
pub(crate) async fn find_link(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Like [`find_link`], but a missing link is an error for `op`.
pub(crate) async fn require_link(handle: &Handle, op: &str, name: &str) -> Result<u32, NetError> {
    find_link(handle, name)
        .await
        .map_err(|e| NetError::netlink(op, e))?
        .map(|link| link.header.index)
        .ok_or_else(|| NetError::LinkNotFound {
            op: op.to_string(),
            link: name.to_string(),
        })
}

/// `ip link set dev <name> up`.
pub(crate) async fn set_up(handle: &Handle, index: u32, name: &str) -> Result<(), NetError> {
    handle
        .link()
        .change(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("set link {name} up"), e))
}

/// `ip addr add <cidr> dev <name>`; with `exist_ok`, an identical address already there is fine.
pub(crate) async fn add_address(
    handle: &Handle,
    index: u32,
    name: &str,
    cidr: Ipv4Cidr,
    exist_ok: bool,
) -> Result<(), NetError> {
    match handle
        .address()
        .add(index, IpAddr::V4(cidr.addr), cidr.prefix)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if exist_ok && netlink_errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(NetError::netlink(
            format!("add address {cidr} to link {name}"),
            e,
        )),
    }
}

/// The link's 6-byte hardware address.
pub(crate) fn link_mac(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Address(addr) => <[u8; 6]>::try_from(addr.as_slice()).ok(),
        _ => None,
    })
}

/// The link's MTU.
pub(crate) fn link_mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

pub(crate) fn link_kind(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|info| match info {
            LinkInfo::Kind(kind) => Some(kind.to_string()),
            _ => None,
        }),
        _ => None,
    })
}

/// Reject names the kernel would refuse (`IFNAMSIZ` is 16 including the NUL).
pub(crate) fn validate_link_name(name: &str) -> Result<(), NetError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > 15 {
        "longer than 15 bytes"
    } else if name == "." || name == ".." {
        "reserved"
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        "contains '/', ':', whitespace or NUL"
    } else {
        return Ok(());
    };
    Err(NetError::InvalidLinkName {
        name: name.to_string(),
        reason,
    })
}

/// Set `link`'s address to `mac` unless it already is.
pub(crate) async fn set_mac_if_needed(
    handle: &Handle,
    link: &netlink_packet_route::link::LinkMessage,
    name: &str,
    mac: [u8; 6],
) -> Result<(), NetError> {
    let current = link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Address(addr) => Some(addr.as_slice()),
        _ => None,
    });
    if current == Some(&mac[..]) {
        return Ok(());
    }
    handle
        .link()
        .change(
            LinkUnspec::new_with_index(link.header.index)
                .address(mac.to_vec())
                .build(),
        )
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("set mac {} on link {name}", format_mac(&mac)), e))
}
